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

local SECONDS = tonumber(arg[1]) or 4
local ROUNDS = tonumber(arg[2]) or 3
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
    return rps
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
        local secret = %q
        auth = passport.authorize { secret = secret,
                                    store = passport.redis { port = %d, pool_size = 64 } }
        auth_cached = passport.authorize { secret = secret,
            store = passport.redis { port = %d, pool_size = 64, cache_ttl = 1000 } }
        local record = %q
        auth_local = passport.authorize { secret = secret,
            store = { get = function() return record end } }
    }
    upstream app { server 127.0.0.1:%d; keepalive 64; }
]]):format(SECRET, redis.port, redis.port, RECORD, upstream.port),
        server = [[
        location /noauth { proxy_pass http://app; proxy_http_version 1.1;
                           proxy_set_header Connection ""; }
        location /auth { access_by_lua_block { auth:access() }
                         proxy_pass http://app; proxy_http_version 1.1;
                         proxy_set_header Connection ""; }
        location = /breakdown { content_by_lua_block {
            -- Where the Lua time goes, per call, inside this nginx worker.
            local N = 20000
            local cookie = ngx.var.http_cookie
            local function time(f)
                ngx.update_time()
                local t = ngx.now()
                for _ = 1, N do f() end
                ngx.update_time()
                return (ngx.now() - t) / N * 1e9
            end
            local set, clear = ngx.req.set_header, ngx.req.clear_header
            ngx.say(("  in nginx, per call: verify (no store I/O) %.0f ns, "
                     .. "identity headers cleared + set %.0f ns"):format(
                time(function() auth_local:verify(cookie) end),
                time(function()
                    clear("X-Passport-User") clear("X-Passport-Logged-In")
                    set("X-Passport-User", '{"id":42}') set("X-Passport-Logged-In", "true")
                end)))
        } }
        location /cached { access_by_lua_block { auth_cached:access() }
                           proxy_pass http://app; proxy_http_version 1.1;
                           proxy_set_header Connection ""; }
]],
    }
    local header = "_ga=GA1.2.3; theme=dark; connect.sid="
        .. cookie.sign(SID, SECRET):gsub(":", "%%3A") .. "; lang=en"
    for _, path in ipairs { "/noauth", "/auth", "/cached" } do
        wrk(gateway.port, path, header) -- warm up: pools, caches, JIT
    end
    -- The machine is shared: alternate the three in rounds, report medians.
    local rows = { noauth = {}, auth = {}, cached = {} }
    for _ = 1, ROUNDS do
        for name, list in pairs(rows) do
            list[#list + 1] = wrk(gateway.port, "/" .. name, header)
        end
    end
    local function median(t)
        table.sort(t)
        return t[math.ceil(#t / 2)]
    end
    local base, auth, cached = median(rows.noauth), median(rows.auth), median(rows.cached)
    print(("guard mode: 1 nginx worker (cpu 0), wrk -t1 -c50 -d%ds (cpu 1), median of %d rounds")
          :format(SECONDS, ROUNDS))
    print(("  %-38s %10.0f req/s"):format("nginx proxy, no auth (floor)", base))
    print(("  %-38s %10.0f req/s"):format("nginx proxy + auth:access()", auth))
    print(("  %-38s %10.0f req/s"):format("  ... store with cache_ttl = 1000 ms", cached))
    local _, breakdown = gateway:get("/breakdown", { Cookie = header })
    io.write(breakdown)
    print(("cost of the authorized path: %.2fx the unauthenticated one, %.2fx with the "
           .. "per-worker cache (target <= 1.25x)"):format(base / auth, base / cached))
end)
if gateway then gateway:stop() end
if upstream then upstream:stop() end
redis:stop()
assert(ok, err)
