-- Session gets per second through the Redis store inside nginx (one
-- worker, wrk against a location that only does store:get) against
-- `redis-benchmark -t get` with one connection and no pipelining, on the
-- same machine and the same Redis, printed as a ratio.  Run by
-- bench/store_bench.sh (`make bench-store`).
--
-- Also printed, for context: the same location with wrk on 1 connection
-- (latency-bound, like redis-benchmark -c 1), an nginx location that does
-- no store work at all (the HTTP ceiling), and the store's GET with
-- hiredis's redisReader through FFI instead of the Lua RESP parser
-- (lua/resty/passport/redis/resp.lua; bench/store_resp_ffi.lua): the
-- measurement behind that choice.
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local common = require "common"

local DURATION = tonumber(os.getenv("BENCH_SECONDS") or "3")
local CONNS = tonumber(os.getenv("BENCH_CONNECTIONS") or "50")
-- Rounds alternate redis-benchmark and wrk, and the medians are printed:
-- on a shared 2-core machine the figures drift by 2x within a minute, and
-- a ratio of two runs taken a minute apart would measure the drift.
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "3")

local median, sh = common.median, common.sh

-- A record as connect-redis writes it for a logged-in user (~200 bytes).
local SID = "wbhj9M7ClsYbqr8kJfdgV5ZUm2PT_xQA"
local RECORD = '{"cookie":{"originalMaxAge":86400000,"expires":'
               .. '"2099-01-01T00:00:00.000Z","secure":true,"httpOnly":true,'
               .. '"domain":"example.com","path":"/","sameSite":"lax"},'
               .. '"passport":{"user":"64b7f0c2a1d3e4f5a6b7c8d9"}}'

local function wrk(port, path, conns)
    local rps, p50 = common.wrk { port = port, path = path, conns = conns, seconds = DURATION }
    return rps, ("%.2fms"):format(p50 or 0 / 0)
end

local redis = redis_server.start {}
local nginx
local ok, err = pcall(function()
    assert(redis:call("SET", "sess:" .. SID, RECORD))
    -- redis-benchmark's GET reads this key (no -r): the same record
    assert(redis:call("SET", "key:__rand_int__", RECORD))
    nginx = nginx_server.start {
        workers = 1,
        log_level = "warn",
        http = ([[
    init_by_lua_block {
        package.path = "%s/bench/?.lua;" .. package.path
        STORE = require("resty.passport.store.redis").new {
            port = %d, pool_size = 128,
        }
        FFI = require "store_resp_ffi"
    }
]]):format(nginx_server.root, redis.port),
        server = ([[
        location = /get {
            content_by_lua_block {
                local json, err = STORE:get("%s")
                if not json then ngx.status = 503 return ngx.say(err) end
                ngx.print(json)
            }
        }
        location = /ffi {
            content_by_lua_block {
                local json, err = FFI.get(%d, "sess:", "%s")
                if not json then ngx.status = 503 return ngx.say(err) end
                ngx.print(json)
            }
        }
        location = /noop {
            content_by_lua_block { ngx.print(%q) }
        }
]]):format(SID, redis.port, SID, RECORD),
    }
    local status, body = nginx:get("/get")
    assert(status == 200 and body == RECORD, "store: " .. tostring(body))
    status, body = nginx:get("/ffi")
    assert(status == 200 and body == RECORD, "ffi: " .. tostring(body))

    local function redis_benchmark()
        local out = sh(("redis-benchmark -h 127.0.0.1 -p %d -t get -c 1 "
                        .. "-P 1 -n 60000 -q"):format(redis.port))
        local rps = tonumber(out:match("GET: ([%d%.]+) requests per second"))
        if not rps then
            error("redis-benchmark failed:\n" .. out)
        end
        return rps
    end

    local rbs, gets, ffis, ratios, ffi_ratios = {}, {}, {}, {}, {}
    local get_p50
    for r = 1, ROUNDS do
        rbs[r] = redis_benchmark()
        gets[r], get_p50 = wrk(nginx.port, "/get", CONNS)
        ffis[r] = wrk(nginx.port, "/ffi", CONNS)
        ratios[r] = gets[r] / rbs[r]
        ffi_ratios[r] = gets[r] / ffis[r]
    end
    local rb_rps, get, ffi_rps = median(rbs), median(gets), median(ffis)
    local noop = wrk(nginx.port, "/noop", CONNS)
    local get1, get1_p50 = wrk(nginx.port, "/get", 1)
    local rb1 = redis_benchmark()

    local function list(t, fmt)
        local out = {}
        for i, v in ipairs(t) do out[i] = fmt:format(v) end
        return table.concat(out, " ")
    end
    print(("store bench: %s, %d cores, 1 nginx worker, wrk -t1 -c%d -d%ds, "
           .. "%d-byte record, median of %d rounds")
          :format(sh("uname -m"):gsub("%s+$", ""), tonumber(sh("nproc")) or 0,
                  CONNS, DURATION, #RECORD, ROUNDS))
    print(("  redis-benchmark -t get -c 1 -P 1       %8.0f gets/s   (%s)")
          :format(rb_rps, list(rbs, "%.0f")))
    print(("  nginx store:get, Lua RESP (the store)  %8.0f gets/s   (%s) "
           .. "p50 %s"):format(get, list(gets, "%.0f"), get_p50))
    print(("  nginx get, hiredis redisReader (FFI)   %8.0f gets/s   (%s)")
          :format(ffi_rps, list(ffis, "%.0f")))
    print(("  nginx, no store (HTTP ceiling)         %8.0f req/s")
          :format(noop))
    print(("  nginx store:get, wrk -c1               %8.0f gets/s   p50 %s; "
           .. "redis-benchmark then: %.0f"):format(get1, get1_p50, rb1))
    print(("  ratio store:get / redis-benchmark      %8.2f   (%s) target >= 0.50")
          :format(median(ratios), list(ratios, "%.2f")))
    print(("  ratio at 1 connection each             %8.2f")
          :format(get1 / rb1))
    print(("  Lua RESP / FFI redisReader             %8.2f   (%s)")
          :format(median(ffi_ratios), list(ffi_ratios, "%.2f")))
    local log = nginx:error_log()
    if log:match("%[error%]") or log:match("%[alert%]") then
        print("nginx error log:\n" .. log)
    end
end)
if nginx then nginx:stop() end
redis:stop()
if not ok then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
end
