-- wrk script: POST a browser batch of N events per request to /e, each event with its own id.
-- Usage: wrk -s bench/collect.lua URL -- <round-id> <site-key> <events per batch>
local counter = 0
local prefix = "r"
local batch = 1
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  prefix = (args[1] or "r") .. "-" .. tostring(tid or 0)
  batch = tonumber(args[3] or "1")
  wrk.method = "POST"
  wrk.path = "/e?k=" .. (args[2] or "pk")
  wrk.headers["Content-Type"] = "text/plain"
  wrk.headers["Origin"] = "https://acme.example"
  wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
end

function request()
  local events = {}
  for i = 1, batch do
    counter = counter + 1
    events[i] = '{"event_name":"view_content","event_id":"' .. prefix .. '-' .. counter .. '",'
      .. '"url":"https://acme.example/p/' .. counter .. '?utm_source=bench"}'
  end
  return wrk.format(nil, nil, nil, '{"e":[' .. table.concat(events, ",") .. ']}')
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
