-- common.lua: loaded by every case script. Reads the ids file given after
-- "--" on wrk's command line (one id a line, or "id<TAB>etag") in each
-- thread's init, and seeds the random numbers.
ids, etags = {}, {}

function load_ids(args)
  local file = args[1]
  if not file then error("usage: wrk ... -s CASE.lua URL -- IDS_FILE") end
  for line in io.lines(file) do
    local id, etag = line:match("^([^\t]+)\t(.+)$")
    if id then
      ids[#ids + 1], etags[#ids + 1] = id, etag
    elseif line ~= "" then
      ids[#ids + 1] = line
    end
  end
  if #ids == 0 then error("no ids in " .. file) end
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end
