-- wrk: POST /api/v1/payments with realistic bodies (bench/payments.lua) and an API key (BENCH_KEY).
package.path = (os.getenv("BENCH_DIR") or "bench") .. "/?.lua;" .. package.path
local P = require("payments")
local reqs, i = {}, 0
local key = os.getenv("BENCH_KEY") or ""

function init(args)
  local headers = {["Content-Type"] = "application/json", ["X-API-Key"] = key}
  local out = os.getenv("BENCH_WRITE_BODIES") -- the same bodies, one per line, for openloop
  local f = out and io.open(out, "w")
  for n = 1, 2000 do
    local body = P.payment(0)
    reqs[n] = wrk.format("POST", "/api/v1/payments", headers, body)
    if f then f:write(body, "\n") end
  end
  if f then f:close() end
end

function request()
  i = i % #reqs + 1
  return reqs[i]
end

function done(summary, latency, requests)
  io.write(string.format("non_2xx=%d\n", summary.errors.status))
end
