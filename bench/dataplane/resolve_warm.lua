-- GET resolve for one of the WARM users of etags.txt (each already has its stored
-- assignment): resolve on the same contexts as ofrep_bulk304.lua.
dofile(os.getenv("BENCH_DIR") .. "/common.lua")

local users = {}
local path
local headers = {}

function init(args)
   common_init()
   for line in io.lines(os.getenv("ETAGS")) do
      table.insert(users, (line:match("^(%S+) ")))
   end
   path = "/api/v1/rulesets/" .. os.getenv("RULESET_ID") .. "/resolve?user_id="
   headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
end

function request()
   return wrk.format("GET", path .. users[math.random(1, #users)], headers)
end
