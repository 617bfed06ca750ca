-- POST /api/v1/rulesets/{id}/execute with the order in input.json and
-- user_id <prefix><n>, n uniform in 1..ID_SPACE.
dofile(os.getenv("BENCH_DIR") .. "/common.lua")

local path, prefix, space, input
local headers = {}

function init(args)
   common_init()
   local dir = os.getenv("BENCH_DIR")
   path = "/api/v1/rulesets/" .. os.getenv("RULESET_ID") .. "/execute"
   prefix = os.getenv("ID_PREFIX")
   space = tonumber(os.getenv("ID_SPACE"))
   local file = assert(io.open(dir .. "/input.json", "r"))
   input = file:read("*a"):gsub("%s*\n%s*", " ")
   file:close()
   headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
   headers["Content-Type"] = "application/json"
end

function request()
   local body = '{"user_id": "' .. prefix .. math.random(1, space) .. '", "input": ' .. input .. "}"
   return wrk.format("POST", path, headers, body)
end
