-- get_one.lua: GET /api/users/<random id>.
dofile((debug.getinfo(1, "S").source:sub(2):match("^(.*/)") or "./") .. "common.lua")

function init(args) load_ids(args) end

function request()
  return wrk.format("GET", "/api/users/" .. ids[math.random(#ids)])
end
