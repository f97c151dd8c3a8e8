-- Realistic payment bodies for the ingest benchmark (wrk scripts and the body files).
--
-- A fixed population, so identifiers repeat the way they do in real traffic: CUSTOMERS customers,
-- each with an email, one or two cards, a device and an IP shared with a few others; merchants,
-- amounts, countries vary. Deterministic (own PRNG), so every run sends the same traffic.
-- fresh_every > 0 gives every fresh_every-th payment a never-seen email (a digest cache miss).
local M = {}

M.CUSTOMERS = tonumber(os.getenv("BENCH_CUSTOMERS") or "500")
local seed = 12345
local function rnd(n) -- 1..n
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed % n + 1
end

local COUNTRIES = {"DE", "FR", "NL", "ES", "IT", "GB", "US", "PL", "SE", "AT"}
local METHODS = {"card", "card", "card", "wallet", "bank_transfer"}
local CARDS = {"visa", "mastercard", "amex"}
local fresh_counter = 0

-- Body of one payment (JSON text, ~450 bytes, four personal identifiers).
function M.payment(fresh_every)
  local c = rnd(M.CUSTOMERS)
  local card = c * 2 + rnd(2) -- one or two cards per customer: ~1.2 x CUSTOMERS distinct
  local country = COUNTRIES[(c % #COUNTRIES) + 1]
  local email = string.format("customer%d@example.com", c)
  if fresh_every and fresh_every > 0 and rnd(fresh_every) == 1 then
    fresh_counter = fresh_counter + 1
    email = string.format("fresh%d.%d@example.org", fresh_counter, rnd(1000000000))
  end
  return string.format(
    '{"user_id":"user-%d","merchant_id":"merchant-%d","amount":"%d.%02d","currency":"EUR",' ..
    '"payment_method":"%s","transaction_type":"purchase","card_type":"%s","card_last_four":"%04d",' ..
    '"card_fingerprint":"fp_%08x","ip_address":"198.51.%d.%d","email":"%s",' ..
    '"device_info":{"device_id":"dev-%06d","os":"ios","browser":"safari"},' ..
    '"country":"%s","billing_country":"%s","shipping_country":"%s"}',
    c, rnd(200), rnd(900) + 5, rnd(100) - 1, METHODS[rnd(#METHODS)], CARDS[rnd(#CARDS)],
    card % 10000, card * 2654435761 % 4294967296, (c % 60) + 100, (c * 7) % 250 + 1, email,
    math.floor(c * 0.8), country, country, country)
end

function M.batch(n, fresh_every)
  local items = {}
  for i = 1, n do items[i] = M.payment(fresh_every) end
  return "[" .. table.concat(items, ",") .. "]"
end

return M
