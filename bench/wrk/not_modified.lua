-- not_modified.lua: GET /api/users/<id> with If-None-Match: <its ETag>,
-- from a file of "id<TAB>etag" lines; every answer must be a 304, and
-- done() prints how many were not.
dofile((debug.getinfo(1, "S").source:sub(2):match("^(.*/)") or "./") .. "common.lua")

local headers = {}
local threads = {}
got304, other = 0, 0

function setup(thread) threads[#threads + 1] = thread end

function init(args)
  load_ids(args)
  for i = 1, #ids do
    if not etags[i] then error("line " .. i .. " of " .. args[1] .. " has no ETag") end
  end
end

function request()
  local i = math.random(#ids)
  headers["If-None-Match"] = etags[i]
  return wrk.format("GET", "/api/users/" .. ids[i], headers)
end

function response(status, hdrs, body)
  if status == 304 then got304 = got304 + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local a, b = 0, 0
  for _, t in ipairs(threads) do
    a, b = a + t:get("got304"), b + t:get("other")
  end
  io.write(string.format("Status 304 responses: %d\nStatus other than 304: %d\n", a, b))
end
