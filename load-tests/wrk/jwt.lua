-- wrk -t1 -c64 -d10s -s load-tests/wrk/jwt.lua http://127.0.0.1:8080/api/items
-- TOKEN comes from the environment (mint one with `siger token`).
local token = os.getenv("TOKEN") or error("set TOKEN (siger token -c conf --sub wrk --roles user)")
wrk.headers["Authorization"] = "Bearer " .. token
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "status.lua")
