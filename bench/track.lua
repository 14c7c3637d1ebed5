-- wrk script: POST one Create Event per request, each with its own idempotency key.
-- Usage: wrk -s bench/track.lua URL -- <round-id> <bearer-token> [purchase|view_content]
local counter = 0
local prefix = "r"
local token = "none"
local event = "purchase"
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  prefix = (args[1] or "r") .. "-" .. tostring(tid or 0)
  token = args[2] or token
  event = args[3] or event
  wrk.method = "POST"
  wrk.path = "/public-api/v1/events/track"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. token
end

function request()
  counter = counter + 1
  local id = prefix .. '-' .. counter
  local body
  if event == "view_content" then
    body = '{"event_name":"view_content","email":"visitor@bench.test",'
      .. '"url":"https://shop.example/products/' .. id .. '",'
      .. '"comet_source":"google","idempotency_key":"' .. id .. '"}'
  else
    body = '{"event_name":"purchase","email":"buyer@bench.test","amount":19.99,'
      .. '"order_id":"' .. id .. '",'
      .. '"url":"https://shop.example/checkout/thanks","comet_source":"google",'
      .. '"idempotency_key":"' .. id .. '"}'
  end
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, non2xx,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
