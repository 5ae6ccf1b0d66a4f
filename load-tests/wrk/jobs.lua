-- wrk -t1 -c32 -d10s -s load-tests/wrk/jobs.lua http://127.0.0.1:8080/jobs/submit
-- POSTs a small JSON job with TOKEN from the environment; every answer should be 202.
local token = os.getenv("TOKEN") or error("set TOKEN (siger token -c conf --sub wrk --roles user)")
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/json"

local counter = 0
function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, string.format('{"kind":"render","frame":%d}', counter))
end

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "status.lua")
