-- POST /ofrep/v1/evaluate/flags (bulk) for one of the WARM users of etags.txt, with the
-- ETag it was last answered: what a polling OpenFeature web provider sends. Every answer
-- must be a 304 (anything else counts as a failure).
dofile(os.getenv("BENCH_DIR") .. "/common.lua")

local users, etags = {}, {}
local headers = {}

function init(args)
   common_init()
   for line in io.lines(os.getenv("ETAGS")) do
      local user, etag = line:match("^(%S+) (%S+)$")
      table.insert(users, user)
      table.insert(etags, etag)
   end
   headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
   headers["Content-Type"] = "application/json"
end

function request()
   local i = math.random(1, #users)
   headers["If-None-Match"] = etags[i]
   return wrk.format("POST", "/ofrep/v1/evaluate/flags", headers,
      '{"context": {"targetingKey": "' .. users[i] .. '"}}')
end

function response(status, headers, body)
   if status ~= 304 then
      non2xx = non2xx + 1
   end
end
