-- wrk script of `npm run bench` (Connect over HTTP/1.1), started by bench/load.ts as
--   wrk -t C -c C -d <cap> -s bench/wrk-load.lua http://host:port
-- with its settings in BENCH_* environment variables. One connection per wrk thread, so each
-- thread's request() and response() strictly alternate and a call's latency is the time between
-- them (clock_gettime through LuaJIT's FFI, CLOCK_REALTIME so the bench can line it up with its
-- own samples). Thread t of T sends calls t, t+T, t+2T, … below BENCH_REQUESTS; call i is for user
-- i mod BENCH_USERS. A thread stops once it has its answers and appends a line to BENCH_DONE_FILE,
-- so the bench knows when every call is answered and stops wrk (SIGINT) instead of waiting for -d.
-- done() writes every call to BENCH_LOG_FILE: "<start µs since the epoch> <latency µs> <class>
-- <seq or HTTP status>", class a (200), s (429 resource_exhausted: sold out) or e (anything else).
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(0, ts)
  return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

local kind = os.getenv("BENCH_KIND")
local path = os.getenv("BENCH_PATH")
local coupon = os.getenv("BENCH_COUPON") or ""
local token = os.getenv("BENCH_TOKEN") or ""
local prefix = os.getenv("BENCH_USER_PREFIX") or "u"
local users = tonumber(os.getenv("BENCH_USERS"))
local requests = tonumber(os.getenv("BENCH_REQUESTS"))
local nthreads = tonumber(os.getenv("BENCH_THREADS"))
local doneFile = os.getenv("BENCH_DONE_FILE")
local logFile = os.getenv("BENCH_LOG_FILE")

-- main state: number the threads, and collect their logs at the end.
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

-- thread state
local got, quota, t0 = 0, 0, 0
calls = {} -- global: done() reads it with thread:get
local headers = { ["Content-Type"] = "application/json" }
if kind == "issue" then headers["Authorization"] = "Bearer " .. token end

function init(args)
  quota = 0
  if id < requests then quota = math.floor((requests - 1 - id) / nthreads) + 1 end
end

function request()
  -- The index follows the answers, not the calls to request(): wrk calls it once more at start to
  -- inspect the request, and again after a reconnect, for a call that was never answered.
  local i = id + got * nthreads
  local body = "{}"
  if kind == "issue" then
    body = '{"couponId":"' .. coupon .. '","userId":"' .. prefix .. (i % users) .. '"}'
  end
  t0 = now_us()
  return wrk.format("POST", path, headers, body)
end

function response(status, _, body)
  local t1 = now_us()
  local cls, detail = "e", tostring(status)
  if status == 200 then
    cls = "a"
    if kind == "issue" then detail = string.match(body, '"seq":"(%d+)"') or "-" end
  elseif status == 429 and string.find(body, "resource_exhausted", 1, true) then
    cls, detail = "s", "-"
  end
  calls[#calls + 1] = string.format("%.0f %.0f %s %s", t0, t1 - t0, cls, detail)
  got = got + 1
  if got >= quota then
    local f = io.open(doneFile, "a")
    f:write(id .. "\n")
    f:close()
    wrk.thread:stop()
  end
end

function done(summary, latency, _)
  local f = io.open(logFile, "w")
  for _, thread in ipairs(threads) do
    local lines = thread:get("calls")
    for _, line in ipairs(lines) do f:write(line, "\n") end
  end
  f:close()
  local e = summary.errors
  io.write(string.format('BENCH-WRK {"durationUs":%d,"requests":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"latencyUs":{"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
