-- Session gets per second through the Redis store inside nginx (one
-- worker, wrk against a location that only does store:get) against
-- `redis-benchmark -t get` with one connection and no pipelining, on the
-- same machine and the same Redis, printed as a ratio.  Run by
-- bench/store_bench.sh (`make bench-store`).
--
-- Also printed, for context: the same location with wrk on 1 connection
-- (latency-bound, like redis-benchmark -c 1), an nginx location that does
-- no store work at all (the HTTP ceiling), and the store's GET with
-- hiredis's redisReader through FFI instead of the Lua RESP reader
-- (bench/store_resp_ffi.lua): the measurement behind that choice.
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"

local DURATION = tonumber(os.getenv("BENCH_SECONDS") or "5")
local CONNS = tonumber(os.getenv("BENCH_CONNECTIONS") or "50")

local function sh(cmd)
    local p = assert(io.popen(cmd .. " 2>&1"))
    local out = p:read("*a")
    p:close()
    return out
end

-- A record as connect-redis writes it for a logged-in user (~200 bytes).
local SID = "wbhj9M7ClsYbqr8kJfdgV5ZUm2PT_xQA"
local RECORD = '{"cookie":{"originalMaxAge":86400000,"expires":'
               .. '"2099-01-01T00:00:00.000Z","secure":true,"httpOnly":true,'
               .. '"domain":"example.com","path":"/","sameSite":"lax"},'
               .. '"passport":{"user":"64b7f0c2a1d3e4f5a6b7c8d9"}}'

local function wrk(port, path, conns)
    local out = sh(("wrk -t1 -c%d -d%ds --latency http://127.0.0.1:%d%s")
                   :format(conns, DURATION, port, path))
    local rps = tonumber(out:match("Requests/sec:%s*([%d%.]+)"))
    local p50 = out:match("50%%%s+(%S+)")
    local bad = out:match("Non%-2xx or 3xx responses: (%d+)")
    if not rps then
        error("wrk failed:\n" .. out)
    end
    if bad then
        error(path .. ": " .. bad .. " failed responses\n" .. out)
    end
    return rps, p50
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

    local rb = sh(("redis-benchmark -h 127.0.0.1 -p %d -t get -c 1 -P 1 "
                   .. "-n 200000 -q"):format(redis.port))
    local rb_rps = tonumber(rb:match("GET: ([%d%.]+) requests per second"))
    if not rb_rps then
        error("redis-benchmark failed:\n" .. rb)
    end

    local noop = wrk(nginx.port, "/noop", CONNS)
    local get, get_p50 = wrk(nginx.port, "/get", CONNS)
    local ffi_rps = wrk(nginx.port, "/ffi", CONNS)
    local get1, get1_p50 = wrk(nginx.port, "/get", 1)

    print(("store bench: %s, 1 nginx worker, wrk -t1 -c%d -d%ds, "
           .. "%d-byte record, %d cores")
          :format(sh("uname -m"):gsub("%s+$", ""), CONNS, DURATION, #RECORD,
                  tonumber(sh("nproc")) or 0))
    print(("  redis-benchmark -t get -c 1 -P 1       %10.0f gets/s")
          :format(rb_rps))
    print(("  nginx, no store (HTTP ceiling)         %10.0f req/s")
          :format(noop))
    print(("  nginx store:get, Lua RESP (the store)  %10.0f gets/s  p50 %s")
          :format(get, get_p50))
    print(("  nginx get, hiredis redisReader (FFI)   %10.0f gets/s")
          :format(ffi_rps))
    print(("  nginx store:get, wrk -c1               %10.0f gets/s  p50 %s")
          :format(get1, get1_p50))
    print(("  ratio store:get / redis-benchmark      %10.2f  (target >= 0.50)")
          :format(get / rb_rps))
    print(("  ratio at 1 connection each             %10.2f")
          :format(get1 / rb_rps))
    print(("  Lua RESP / FFI redisReader             %10.2f")
          :format(get / ffi_rps))
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
