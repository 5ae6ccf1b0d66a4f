-- wrk -t1 -c64 -d10s -s load-tests/wrk/jwt.lua http://127.0.0.1:8080/api/items
-- TOKEN comes from the environment (mint one with `siger token`).
local token = os.getenv("TOKEN") or error("set TOKEN (siger token -c conf --sub wrk --roles user)")
wrk.headers["Authorization"] = "Bearer " .. token

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
