-- GET /api/v1/rulesets/{id}/resolve?user_id=<prefix><n>, n uniform in 1..ID_SPACE.
dofile(os.getenv("BENCH_DIR") .. "/common.lua")

local path, prefix, space
local headers = {}

function init(args)
   common_init()
   path = "/api/v1/rulesets/" .. os.getenv("RULESET_ID") .. "/resolve?user_id="
   prefix = os.getenv("ID_PREFIX")
   space = tonumber(os.getenv("ID_SPACE"))
   headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
end

function request()
   return wrk.format("GET", path .. prefix .. math.random(1, space), headers)
end
