-- wrk -t1 -c32 -d10s -s load-tests/wrk/jobs.lua http://127.0.0.1:8080/jobs/submit
-- POSTs a small JSON job; reports status counts (every answer should be 202).
local token = os.getenv("TOKEN") or error("set TOKEN (siger token -c conf --sub wrk --roles user)")
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/json"

local counter = 0
function request()
  counter = counter + 1
  local body = string.format('{"kind":"render","frame":%d}', counter)
  return wrk.format(nil, nil, nil, body)
end

-- Status counts live in each thread's Lua state; done() gathers them.
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

codes = {}
function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("codes") or {}) do total[code] = (total[code] or 0) + n end
  end
  for code, n in pairs(total) do io.write(string.format("status %d: %d\n", code, n)) end
end
