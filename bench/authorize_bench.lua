-- Guard-mode cost: requests per second through auth:access() against the
-- same nginx location without the access phase, in one run.  The gateway
-- (1 worker) proxies to a trivial upstream (a second nginx); the session is
-- a connect-redis style record in a real redis-server.  wrk drives both with
-- the same Cookie header.  usage: luajit bench/authorize_bench.lua [seconds]
package.path = "spec/?.lua;lua/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local cookie = require "resty.passport.cookie"

local SECONDS = tonumber(arg[1]) or 5
local SECRET = "bench secret"
local SID = "Xk2mN8pQ4rT6vW9yB1cE3fH5jL7nP0sU"
local RECORD = '{"cookie":{"originalMaxAge":86400000,"expires":"2030-01-01T00:00:00.000Z",'
    .. '"httpOnly":true,"path":"/"},"passport":{"user":{"id":42,"name":"bench"}}}'

local function wrk(port, path, header)
    local cmd = ("taskset -c 1 wrk -t1 -c50 -d%ds -H %q http://127.0.0.1:%d%s 2>&1")
        :format(SECONDS, "Cookie: " .. header, port, path)
    local p = assert(io.popen(cmd))
    local out = p:read("*a")
    p:close()
    local rps = tonumber(out:match("Requests/sec:%s*([%d%.]+)"))
    local non2xx = tonumber(out:match("Non%-2xx or 3xx responses: (%d+)")) or 0
    assert(rps, out)
    assert(non2xx == 0, "rejected requests in " .. path .. ":\n" .. out)
    return rps, out:match("Latency%s+(%S+)")
end

local redis = redis_server.start {}
local upstream, gateway
local ok, err = pcall(function()
    redis:call("SET", "sess:" .. SID, RECORD, "EX", "3600")
    upstream = nginx_server.start { server = 'location / { return 200 "ok"; }' }
    gateway = nginx_server.start {
        main = "worker_cpu_affinity 01;",
        http = ([[
    init_by_lua_block {
        local passport = require "resty.passport"
        auth = passport.authorize { secret = %q,
                                    store = passport.redis { port = %d, pool_size = 64 } }
    }
    upstream app { server 127.0.0.1:%d; keepalive 64; }
]]):format(SECRET, redis.port, upstream.port),
        server = [[
        location /noauth { proxy_pass http://app; proxy_http_version 1.1;
                           proxy_set_header Connection ""; }
        location /auth { access_by_lua_block { auth:access() }
                         proxy_pass http://app; proxy_http_version 1.1;
                         proxy_set_header Connection ""; }
]],
    }
    local header = "_ga=GA1.2.3; theme=dark; connect.sid="
        .. cookie.sign(SID, SECRET):gsub(":", "%%3A") .. "; lang=en"
    wrk(gateway.port, "/auth", header) -- warm up: pools, JIT
    local base, base_lat = wrk(gateway.port, "/noauth", header)
    local auth, auth_lat = wrk(gateway.port, "/auth", header)
    print(("%-34s %12s %10s"):format("guard mode (1 worker, wrk -c50)", "req/s", "latency"))
    print(("%-34s %12.0f %10s"):format("nginx proxy, no auth (floor)", base, base_lat))
    print(("%-34s %12.0f %10s"):format("nginx proxy + auth:access()", auth, auth_lat))
    print(("cost of the authorized path: %.2fx the unauthenticated one (target <= 1.25x)")
          :format(base / auth))
end)
if gateway then gateway:stop() end
if upstream then upstream:stop() end
redis:stop()
assert(ok, err)
