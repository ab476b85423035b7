-- list100.lua: GET /api/users?limit=100&after=<random id>.
dofile((debug.getinfo(1, "S").source:sub(2):match("^(.*/)") or "./") .. "common.lua")

function init(args) load_ids(args) end

function request()
  return wrk.format("GET", "/api/users?limit=100&after=" .. ids[math.random(#ids)])
end
