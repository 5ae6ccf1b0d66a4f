-- Shared by the wrk scripts here: counts responses by status in each thread and prints the
-- totals when the run ends (every answer should be the expected status).
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
