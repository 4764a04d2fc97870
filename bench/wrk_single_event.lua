-- wrk script for bench/http.py: POST /v1/events with a fresh event_id on every request.
-- The token comes from the environment (AUDIT_LEDGER_BENCH_TOKEN); latency is wrk's own.
local token = os.getenv("AUDIT_LEDGER_BENCH_TOKEN")
local counter = 0

local function uuid4()
  local template = "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx"
  return (template:gsub("[xy]", function(c)
    local v = (c == "x") and math.random(0, 15) or math.random(8, 11)
    return string.format("%x", v)
  end))
end

function setup(thread)
  thread:set("seed", math.random(1, 2^30))
end

function init(args)
  math.randomseed(seed or os.time())
end

request = function()
  counter = counter + 1
  local body = string.format(
    '{"event_id":"%s","category":"financial_transactions","event_type":"payment_completed",'
      .. '"occurred_at":"2026-11-28T10:55:17.123456+07:00","correlation_id":"wrk-%d",'
      .. '"data":{"user_id":%d,"amount":"%d.00","payment_method":"qris","order_id":"ORD-%d"}}',
    uuid4(), counter, 100000 + counter % 5000, (counter % 997) * 1000, counter)
  return wrk.format("POST", "/v1/events", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end

response = function(status, headers, body)
  if status ~= 201 then
    io.stderr:write("unexpected status " .. status .. "\n")
  end
end
