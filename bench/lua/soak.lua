-- Mixed traffic for the soak: streaming and non-streaming chat over several models, then a
-- drain phase of health checks, so that no metered request is in flight when wrk stops.
-- BENCH_MODELS: comma-separated models; BENCH_AUTH: the bearer key;
-- BENCH_DRAIN_AT: unix time after which only BENCH_HEALTH_PATH is requested.

local auth = os.getenv("BENCH_AUTH") or ""
local drain_at = tonumber(os.getenv("BENCH_DRAIN_AT"))
local health_path = os.getenv("BENCH_HEALTH_PATH") or "/healthz"
local threads = {}
local bodies = {}
local n = 0
chat_ok, chat_failed, stream_unfinished, health = 0, 0, 0, 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for model in string.gmatch(os.getenv("BENCH_MODELS"), "[^,]+") do
    local base = '{"model":"' .. model .. '","max_tokens":64,' ..
                 '"messages":[{"role":"user","content":"A short soak test reply, please."}]'
    table.insert(bodies, base .. "}")
    table.insert(bodies, base .. ',"stream":true,"stream_options":{"include_usage":true}}')
  end
end

function request()
  if os.time() >= drain_at then
    return wrk.format("GET", health_path, {}, nil)
  end
  n = n + 1
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. auth}
  return wrk.format("POST", "/v1/chat/completions", headers, bodies[(n % #bodies) + 1])
end

function response(status, headers, body)
  local is_chat = string.find(body, '"chat.completion', 1, true)
  local is_error = string.find(body, '"error"', 1, true)
  if is_chat and not is_error and status >= 200 and status < 300 then
    chat_ok = chat_ok + 1
    if string.find(body, "data:", 1, true) and not string.find(body, "[DONE]", 1, true) then
      stream_unfinished = stream_unfinished + 1
    end
  elseif is_chat or is_error or status >= 300 then
    chat_failed = chat_failed + 1
  else
    health = health + 1
  end
end

done = function(summary, latency, requests)
  local ok, failed, unfinished, checks = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    ok = ok + t:get("chat_ok")
    failed = failed + t:get("chat_failed")
    unfinished = unfinished + t:get("stream_unfinished")
    checks = checks + t:get("health")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d},' ..
    '"chat_ok":%d,"chat_failed":%d,"stream_unfinished":%d,"health_checks":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), ok, failed, unfinished, checks))
end
