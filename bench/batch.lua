-- wrk: POST /api/v1/payments/batch, BENCH_BATCH payments per request (default 100), realistic
-- bodies (bench/payments.lua); BENCH_FRESH_EVERY=N gives one payment in N a never-seen email.
package.path = (os.getenv("BENCH_DIR") or "bench") .. "/?.lua;" .. package.path
local P = require("payments")
local reqs, i = {}, 0
local key = os.getenv("BENCH_KEY") or ""
local per = tonumber(os.getenv("BENCH_BATCH") or "100")
local fresh = tonumber(os.getenv("BENCH_FRESH_EVERY") or "0")

function init(args)
  local headers = {["Content-Type"] = "application/json", ["X-API-Key"] = key}
  local n = fresh > 0 and 400 or 60
  for k = 1, n do reqs[k] = wrk.format("POST", "/api/v1/payments/batch", headers, P.batch(per, fresh)) end
end

function request()
  i = i % #reqs + 1
  return reqs[i]
end

function done(summary, latency, requests)
  io.write(string.format("non_2xx=%d\n", summary.errors.status))
end
