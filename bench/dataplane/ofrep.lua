-- POST /ofrep/v1/evaluate/flags/<FLAG> with context.targetingKey <prefix><n>, n uniform
-- in 1..ID_SPACE: the same question as resolve.lua, through OFREP.
dofile(os.getenv("BENCH_DIR") .. "/common.lua")

local path, prefix, space
local headers = {}

function init(args)
   common_init()
   path = "/ofrep/v1/evaluate/flags/" .. os.getenv("FLAG")
   prefix = os.getenv("ID_PREFIX")
   space = tonumber(os.getenv("ID_SPACE"))
   headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
   headers["Content-Type"] = "application/json"
end

function request()
   local body = '{"context": {"targetingKey": "' .. prefix .. math.random(1, space) .. '"}}'
   return wrk.format("POST", path, headers, body)
end
