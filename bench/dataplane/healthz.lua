-- GET /healthz: the baseline, a trivial view of the same server. The URL wrk is
-- given is requested as is (no request() function: wrk's static fast path).
dofile(os.getenv("BENCH_DIR") .. "/common.lua")

function init(args)
   common_init()
end
