-- patch.lua: PATCH /api/users/<random id> {"full_name":"Bench <n>"}.
dofile((debug.getinfo(1, "S").source:sub(2):match("^(.*/)") or "./") .. "common.lua")

local n = 0
local headers = {["Content-Type"] = "application/json"}

function init(args) load_ids(args) end

function request()
  n = n + 1
  return wrk.format("PATCH", "/api/users/" .. ids[math.random(#ids)], headers,
    '{"full_name":"Bench ' .. n .. '"}')
end
