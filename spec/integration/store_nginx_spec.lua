-- The Redis store inside a real nginx (cosockets, keepalive pool) against
-- real redis-servers; every server here is started and stopped by the spec.
local socket = require "socket"
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local proc = require "support.proc"

local now = socket.gettime

local function fill(template, vars)
    return (template:gsub("%$(%w+)", function(k)
        return vars[k] and tostring(vars[k])
    end))
end

-- Shared by both nginx instances: a page that answers with a store's
-- verdict (200 + the record, 404 when missing, 503 + the error).
local HELPERS = [[
        function SERVE(v, err)
            if err then
                ngx.status = 503
                ngx.say(err)
            elseif v == nil then
                ngx.status = 404
                ngx.say("missing")
            else
                ngx.print(v)
            end
        end

        -- c light threads doing n gets of one sid between them
        function MANY(store, sid, n, c)
            local ok, errs, last = 0, 0, nil
            local threads = {}
            for i = 1, c do
                local mine = math.floor(n / c) + (i <= n % c and 1 or 0)
                threads[i] = ngx.thread.spawn(function()
                    for _ = 1, mine do
                        local v, err = store:get(sid)
                        if v then ok = ok + 1 else errs = errs + 1; last = err end
                    end
                end)
            end
            for i = 1, c do ngx.thread.wait(threads[i]) end
            ngx.say(ok, " ", errs, " ", last or "")
        end
]]

local MAIN_HTTP = [[
    lua_shared_dict results 1m;
    lua_shared_dict sessions 1m;
    init_by_lua_block {
]] .. HELPERS .. [[
        local redis = require "resty.passport.store.redis"
        STORES = {
            a = redis.new { port = $a, read_timeout = 300,
                            connect_timeout = 300 },
            a_db3 = redis.new { port = $a, db = 3 },
            a_unix = redis.new { path = "$sock" },
            a_small = redis.new { port = $a, max_value_size = 10 },
            a_check = redis.new { port = $a, check_expires = true },
            a_cache = redis.new { port = $a, cache_ttl = 300, pool = "cached" },
            a_hiredis = (function()
                -- host.in_nginx is the test seam: read by new() to pick
                -- the transport (hiredis blocks the worker: tests only)
                local host = require "resty.passport.host"
                host.in_nginx = false
                local s = redis.new { port = $a }
                host.in_nginx = true
                return s
            end)(),
            b_ok = redis.new { port = $b, password = "s3cret" },
            b_ok2 = redis.new { port = $b, password = "s3cret" },
            b_bad = redis.new { port = $b, password = "wrong" },
            b_none = redis.new { port = $b },
            b_acl = redis.new { port = $b, username = "app",
                                password = "app-pw" },
            d = redis.new { port = $d, connect_timeout = 300,
                            read_timeout = 300 },
        }
        -- the custom store example
        local shdict = require "resty.passport.store.shdict"
        STORES.sh_plain = shdict.new { dict = "sessions", prefix = "op:" }
        STORES.sh_cache = shdict.new { dict = "sessions", prefix = "rt:",
                                       ttl = 300, backend = STORES.a }
        STORES.sh_down = shdict.new { dict = "sessions", prefix = "dn:",
                                      backend = STORES.d }
        local _, misuse = pcall(shdict.new, { dict = "nope" })
        SHDICT_MISUSE = misuse
        AUTH_SH = require("resty.passport").authorize {
            secret = "sekrit", store = STORES.sh_cache,
        }

        local v, err = STORES.a:get("abc")
        INIT_RESULT = tostring(v) .. "|" .. tostring(err)
    }
    init_worker_by_lua_block {
        local v, err = STORES.a:get("abc")
        ngx.shared.results:set("init_worker", tostring(v) .. "|" .. tostring(err))
    }
]]

local MAIN_SERVER = [[
        location = /ping { content_by_lua_block { ngx.say("pong") } }
        location = /get {
            content_by_lua_block {
                local store = STORES[ngx.var.arg_store or "a"]
                SERVE(store:get(ngx.unescape_uri(ngx.var.arg_sid)))
            }
        }
        location = /shset {
            content_by_lua_block {
                local a = ngx.var
                ngx.say(STORES[a.arg_store]:set(a.arg_sid, a.arg_v, 60000))
            }
        }
        location = /shdel {
            content_by_lua_block {
                ngx.say(STORES[ngx.var.arg_store]:delete(ngx.var.arg_sid))
            }
        }
        location = /auth {
            content_by_lua_block {
                local cookie = require "resty.passport.cookie"
                local value = cookie.sign(ngx.var.arg_sid, "sekrit")
                local ok, data = AUTH_SH:check {
                    headers = { cookie = "connect.sid=" .. ngx.escape_uri(value) },
                }
                ngx.print(tostring(ok), " ", ok and data.user.id or data)
            }
        }
        location = /pools {
            content_by_lua_block {
                for _, name in ipairs { "a", "a_db3", "a_cache", "b_ok", "b_ok2",
                                        "b_bad", "b_none", "b_acl" } do
                    ngx.say(name, " ", STORES[name].conn.pool_opts.pool)
                end
            }
        }
        location = /shdict_misuse { content_by_lua_block { ngx.print(SHDICT_MISUSE) } }
]] .. require("support.store_phases")

local POOL_HTTP = [[
    init_by_lua_block {
]] .. HELPERS .. [[
        local redis = require "resty.passport.store.redis"
        STORES = {
            pooled = redis.new { port = $c, pool_size = 4,
                                 max_value_size = 100, read_timeout = 200 },
        }
    }
]]

local POOL_SERVER = [[
        location = /many {
            content_by_lua_block {
                MANY(STORES[ngx.var.arg_store], ngx.var.arg_sid,
                     tonumber(ngx.var.arg_n), tonumber(ngx.var.arg_c))
            }
        }
]]

-- 'count' concurrent requests, each answered; returns the bodies.
local function concurrently(nginx, paths)
    local conns = {}
    for i, p in ipairs(paths) do conns[i] = nginx:send(p, nil, 30) end
    local bodies = {}
    for i, c in ipairs(conns) do
        local status, body = nginx:receive(c)
        assert.equal(200, status, body)
        bodies[i] = body
    end
    return bodies
end

-- { status, body } of a GET, for assert.same
local function sb(nginx, path)
    local status, body = nginx:get(path)
    return { status, body }
end

local function calls(srv, cmd)
    local info = assert(srv:call("INFO", "commandstats"))
    return tonumber(info:match("cmdstat_" .. cmd .. ":calls=(%d+)")) or 0
end

describe("redis store inside nginx", function()
    local a, b, d_port, nginx

    setup(function()
        a = redis_server.start { unixsocket = true }
        b = redis_server.start {
            password = "s3cret",
            users = { { name = "app", password = "app-pw" } },
        }
        d_port = redis_server.free_port()
        a:call("SET", "sess:abc", '{"cookie":{},"passport":{"user":"alice"}}')
        b:call("SET", "sess:k", "authed")
        local vars = { a = a.port, b = b.port, d = d_port, sock = a.socket }
        nginx = nginx_server.start {
            workers = 1,
            http = fill(MAIN_HTTP, vars),
            server = MAIN_SERVER,
        }
    end)

    teardown(function()
        if nginx then
            nginx:stop()
        end
        if a then a:stop() end
        if b then b:stop() end
    end)

    describe("contexts", function()
        local record = '{"cookie":{},"passport":{"user":"alice"}}'

        it("works in rewrite, access, content and timer", function()
            local status, body = nginx:get("/get?sid=abc")
            assert.equal(200, status)
            assert.equal(record, body)
            assert.same({ 200, "rewrite:" .. record }, sb(nginx, "/rewrite"))
            assert.same({ 200, "access:" .. record }, sb(nginx, "/access"))
            assert.same({ 200, "timer:" .. record }, sb(nginx, "/timer"))
        end)

        it("gives a clear error where cosockets are disabled", function()
            local _, body = nginx:get("/init")
            assert.matches("init:nil|redis: cosockets are not available in "
                           .. "the init phase", body, 1, true)
            assert.matches("init_worker:nil|redis: cosockets are not "
                           .. "available in the init_worker phase", body, 1,
                           true)
            local status, _, headers = nginx:get("/header_filter")
            assert.equal(200, status)
            assert.equal("nil|redis: cosockets are not available in the "
                         .. "header_filter phase (use rewrite, access, "
                         .. "content or a timer)", headers["x-result"])
            assert.equal(200, (nginx:get("/log")))
            local result
            for _ = 1, 50 do
                _, result = nginx:get("/logresult")
                if result ~= "nil\n" then break end
                socket.sleep(0.01)
            end
            assert.matches("^nil|redis: cosockets are not available in the "
                           .. "log phase", result)
        end)
    end)

    describe("records", function()
        it("404 for a missing key", function()
            assert.equal(404, (nginx:get("/get?sid=nope")))
        end)

        it("returns garbage bytes and a 1 MB value exactly", function()
            local bytes = {}
            for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
            local garbage = table.concat(bytes) .. "\r\n$-1\r\n\0"
            a:call("SET", "sess:g", garbage)
            local status, body = nginx:get("/get?sid=g")
            assert.equal(200, status)
            assert.equal(garbage, body)

            local big = string.rep("0123456789abcdef", 65536) -- 1 MiB
            a:call("SET", "sess:big", big)
            status, body = nginx:get("/get?sid=big")
            assert.equal(200, status)
            assert.equal(#big, #body)
            assert.is_true(big == body)
        end)

        it("refuses a value past max_value_size, then serves again", function()
            a:call("SET", "sess:ten", "0123456789")
            local status, body = nginx:get("/get?store=a_small&sid=big")
            assert.equal(503, status)
            assert.matches("1048576 bytes exceeds max_value_size %(10%)", body)
            assert.same({ 200, "0123456789" },
                        sb(nginx, "/get?store=a_small&sid=ten"))
        end)

        it("reports WRONGTYPE, then serves again", function()
            a:call("HSET", "sess:hash", "f", "v")
            local status, body = nginx:get("/get?sid=hash")
            assert.equal(503, status)
            assert.matches("^redis: GET failed: WRONGTYPE", body)
            assert.equal(200, (nginx:get("/get?sid=abc")))
        end)

        it("reads a non-zero db, over a unix socket", function()
            a:call("SELECT", 3)
            a:call("SET", "sess:db", "db three")
            a:call("SELECT", 0)
            a:call("SET", "sess:db", "db zero")
            assert.same({ 200, "db three" },
                        sb(nginx, "/get?store=a_db3&sid=db"))
            assert.same({ 200, "db zero" },
                        sb(nginx, "/get?store=a_unix&sid=db"))
            -- SELECT goes out on fresh connections only
            local before = calls(a, "select")
            for _ = 1, 20 do nginx:get("/get?store=a_db3&sid=db") end
            assert.equal(before, calls(a, "select"))
        end)

        it("honours check_expires", function()
            a:call("SET", "sess:old",
                   '{"cookie":{"expires":"2001-01-01T00:00:00.000Z"}}')
            assert.equal(200, (nginx:get("/get?store=a&sid=old")))
            assert.equal(404, (nginx:get("/get?store=a_check&sid=old")))
            assert.equal(200, (nginx:get("/get?store=a_check&sid=abc")))
        end)

        it("reads what connect-redis wrote (or its shape with SET EX)",
           function()
            local sid = "Xk3-_pQ9"
            local raw, ttl = a:seed_connect_redis(sid, '{"id":7}')
            if not raw then
                raw = '{"cookie":{"originalMaxAge":3600000,"expires":"'
                      .. os.date("!%Y-%m-%dT%H:%M:%S.000Z", os.time() + 3600)
                      .. '","httpOnly":true,"path":"/"},'
                      .. '"passport":{"user":{"id":7}}}'
                a:call("SET", "sess:" .. sid, raw, "EX", 3600)
                ttl = a:call("TTL", "sess:" .. sid)
            end
            assert.is_true(ttl > 0)
            assert.same({ 200, raw }, sb(nginx, "/get?sid=" .. sid))
            assert.same({ 200, raw },
                        sb(nginx, "/get?store=a_check&sid=" .. sid))
        end)

        it("caches for cache_ttl: a logout is seen that late", function()
            a:call("SET", "sess:c1", "v1")
            assert.same({ 200, "v1" }, sb(nginx, "/get?store=a_cache&sid=c1"))
            a:call("DEL", "sess:c1") -- the user logs out
            local t0 = now()
            assert.same({ 200, "v1" }, sb(nginx, "/get?store=a_cache&sid=c1"))
            -- without the cache the logout shows at once
            assert.equal(404, (nginx:get("/get?store=a&sid=c1")))
            socket.sleep(0.3 - (now() - t0) + 0.05)
            assert.equal(404, (nginx:get("/get?store=a_cache&sid=c1")))
        end)

        it("can be driven through hiredis in nginx (tests only)", function()
            assert.same({ 200, '{"cookie":{},"passport":{"user":"alice"}}' },
                        sb(nginx, "/get?store=a_hiredis&sid=abc"))
        end)
    end)

    describe("a custom store over ngx.shared (store/shdict.lua)", function()
        it("serves sessions an operator writes", function()
            assert.equal(404, (nginx:get("/get?store=sh_plain&sid=o1")))
            assert.same({ 200, "true\n" },
                        sb(nginx, "/shset?store=sh_plain&sid=o1&v=hello"))
            assert.same({ 200, "hello" }, sb(nginx, "/get?store=sh_plain&sid=o1"))
            nginx:get("/shdel?store=sh_plain&sid=o1")
            assert.equal(404, (nginx:get("/get?store=sh_plain&sid=o1")))
        end)

        it("caches Redis for every worker; delete() is a logout seen at once",
           function()
            a:call("SET", "sess:rt1", "r1")
            local before = calls(a, "get")
            assert.same({ 200, "r1" }, sb(nginx, "/get?store=sh_cache&sid=rt1"))
            assert.equal(before + 1, calls(a, "get"))
            assert.same({ 200, "r1" }, sb(nginx, "/get?store=sh_cache&sid=rt1"))
            assert.equal(before + 1, calls(a, "get"))
            a:call("DEL", "sess:rt1")
            assert.same({ 200, "r1" }, sb(nginx, "/get?store=sh_cache&sid=rt1"))
            nginx:get("/shdel?store=sh_cache&sid=rt1")
            assert.equal(404, (nginx:get("/get?store=sh_cache&sid=rt1")))
            -- a miss is not cached
            a:call("SET", "sess:rt1", "r2")
            assert.same({ 200, "r2" }, sb(nginx, "/get?store=sh_cache&sid=rt1"))
        end)

        it("passes the backend's errors on", function()
            local status, body = nginx:get("/get?store=sh_down&sid=x")
            assert.equal(503, status)
            assert.matches("connect to 127.0.0.1:" .. d_port
                           .. " failed: connection refused", body)
        end)

        it("is accepted by passport.authorize as its store", function()
            a:call("SET", "sess:rt2",
                   '{"cookie":{},"passport":{"user":{"id":9}}}')
            assert.same({ 200, "true 9" }, sb(nginx, "/auth?sid=rt2"))
            assert.matches("^false ", select(2, nginx:get("/auth?sid=none")))
        end)

        it("rejects a dict that does not exist", function()
            assert.matches("no lua_shared_dict nope",
                           select(2, nginx:get("/shdict_misuse")))
        end)
    end)

    describe("AUTH", function()
        it("authenticates once per connection", function()
            assert.same({ 200, "authed" }, sb(nginx, "/get?store=b_ok&sid=k"))
            local before = calls(b, "auth")
            for _ = 1, 20 do
                assert.equal(200, (nginx:get("/get?store=b_ok&sid=k")))
            end
            assert.equal(before, calls(b, "auth"))
        end)

        it("reports a wrong or missing password", function()
            local status, body = nginx:get("/get?store=b_bad&sid=k")
            assert.equal(503, status)
            assert.matches("^redis: AUTH failed: WRONGPASS", body)
            status, body = nginx:get("/get?store=b_none&sid=k")
            assert.equal(503, status)
            assert.matches("^redis: GET failed: NOAUTH", body)
        end)

        it("authenticates an ACL user", function()
            assert.same({ 200, "authed" },
                        sb(nginx, "/get?store=b_acl&sid=k"))
        end)

        it("names a pool by a random token per credential set, not by "
           .. "the password", function()
            local pools = {}
            for name, pool in select(2, nginx:get("/pools")):gmatch("(%S+) (%S+)") do
                pools[name] = pool
            end
            local function md5(s)
                return proc.sh("printf %s " .. proc.q(s) .. " | md5sum"):match("%x+")
            end
            for _, secret in ipairs { "s3cret", "wrong", "app-pw" } do
                for name, pool in pairs(pools) do
                    assert.is_nil(pool:find(secret, 1, true), name)
                    assert.is_nil(pool:find(md5(secret), 1, true), name)
                end
            end
            assert.matches("^passport:127%.0%.0%.1:" .. b.port .. ":0:"
                           .. ("%x"):rep(32) .. "$", pools.b_ok)
            assert.equal("cached", pools.a_cache) -- the pool option wins
            -- one pool per credential set: the same set shares it
            assert.equal(pools.b_ok, pools.b_ok2)
            assert.equal(pools.a:sub(-32), pools.a_db3:sub(-32))
            assert.not_equal(pools.a, pools.a_db3)
            local seen = {} -- another credential set, another pool
            for _, name in ipairs { "b_ok", "b_bad", "b_none", "b_acl" } do
                assert.is_nil(seen[pools[name]], name)
                seen[pools[name]] = true
            end
            -- and its connections, authenticated once
            assert.same({ 200, "authed" }, sb(nginx, "/get?store=b_ok&sid=k"))
            local before = calls(b, "auth")
            for _ = 1, 20 do
                assert.equal(200, (nginx:get("/get?store=b_ok2&sid=k")))
            end
            assert.equal(before, calls(b, "auth"))
        end)
    end)

    describe("faults", function()
        it("fails fast while Redis is down, recovers by itself after a "
           .. "restart, a crash and a freeze", function()
            local t0 = now()
            local status, body = nginx:get("/get?store=d&sid=x")
            assert.equal(503, status)
            assert.matches("connect to 127.0.0.1:" .. d_port
                           .. " failed: connection refused", body)
            assert.is_true(now() - t0 < 0.3)

            local d = redis_server.start { port = d_port }
            finally(function() d:stop() end)
            d:call("SET", "sess:x", "up")
            assert.same({ 200, "up" }, sb(nginx, "/get?store=d&sid=x"))

            d:kill()
            t0 = now()
            status, body = nginx:get("/get?store=d&sid=x")
            assert.equal(503, status)
            assert.matches("^redis: ", body)
            assert.is_true(now() - t0 < 0.3)

            d:restart()
            d:call("SET", "sess:x", "back")
            assert.same({ 200, "back" }, sb(nginx, "/get?store=d&sid=x"))

            d:pause()
            t0 = now()
            status, body = nginx:get("/get?store=d&sid=x")
            local took = now() - t0
            d:resume()
            assert.equal(503, status)
            assert.matches("timeout", body)
            assert.is_true(took >= 0.29 and took < 0.8, took)
            assert.same({ 200, "back" }, sb(nginx, "/get?store=d&sid=x"))
        end)

        it("times out a slow Redis while the worker serves others", function()
            -- one worker: everything below goes through the same event loop
            local side = assert(a:connect())
            side:send(redis_server.encode { "DEBUG", "SLEEP", "1" })
            socket.sleep(0.05)
            local t0 = now()
            local slow = nginx:send("/get?store=a&sid=abc")
            -- while that get waits on the sleeping Redis:
            assert.same({ 200, "pong\n" }, sb(nginx, "/ping"))
            assert.same({ 200, "authed" }, sb(nginx, "/get?store=b_ok&sid=k"))
            local others = now() - t0
            local status, body = nginx:receive(slow)
            local took = now() - t0
            assert.is_true(others < 0.2, others)
            assert.equal(503, status)
            assert.equal("redis: read from 127.0.0.1:" .. a.port
                         .. " failed: timeout\n", body)
            assert.is_true(took >= 0.29 and took < 0.8, took)
            assert.equal("OK", redis_server.read_reply(side))
            side:close()
            assert.equal(200, (nginx:get("/get?store=a&sid=abc")))
        end)

        it("left no crash and no Lua error in the log", function()
            nginx:assert_clean_log()
        end)
    end)
end)

describe("redis store pool inside nginx (2 workers, pool_size 4)", function()
    local c, nginx

    setup(function()
        c = redis_server.start {}
        c:call("SET", "sess:abc", '{"passport":{"user":1}}')
        c:call("HSET", "sess:hash", "f", "v")
        c:call("SET", "sess:big", string.rep("x", 1000))
        nginx = nginx_server.start {
            workers = 2,
            http = fill(POOL_HTTP, { c = c.port }),
            server = POOL_SERVER,
        }
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if c then c:stop() end
    end)

    -- Connected clients, once Redis has seen the closes nginx made (a
    -- Redis that just woke from DEBUG SLEEP may answer CLIENT LIST before
    -- it reads the FINs queued meanwhile): waits up to 1 s for <= limit.
    local function settled_clients(limit)
        local n
        for _ = 1, 50 do
            n = c:clients()
            if n <= limit then break end
            socket.sleep(0.02)
        end
        return n
    end

    local function opened_since(before)
        return c:info("total_connections_received") - before
    end

    -- n gets in requests of 2500, one request at a time, 4 light threads
    -- each: no worker ever runs more than pool_size gets at once.
    local function serial_load(sid, n, expect)
        for _ = 1, n / 2500 do
            local status, body = nginx:get("/many?store=pooled&sid=" .. sid
                                           .. "&n=2500&c=4")
            assert.equal(200, status)
            assert.matches(expect or "^2500 0 \n$", body)
        end
    end

    -- 8 concurrent requests of n/8 gets each, 8 light threads per request
    local function burst(sid, n)
        local paths = {}
        for i = 1, 8 do
            paths[i] = "/many?store=pooled&sid=" .. sid .. "&n=" .. n / 8
                       .. "&c=8"
        end
        return concurrently(nginx, paths)
    end

    it("10,000 gets open no more than pool_size connections per worker",
       function()
        local before = c:info("total_connections_received")
        serial_load("abc", 10000)
        local opened = opened_since(before)
        assert.is_true(opened >= 1 and opened <= 8, opened .. " opened")
        local n = settled_clients(8)
        assert.is_true(n <= 8, n .. " clients")
    end)

    it("64 gets at once: the pool still bounds what stays open", function()
        local before = c:info("total_connections_received")
        for _, body in ipairs(burst("abc", 10000)) do
            assert.equal("1250 0 \n", body)
        end
        -- more connections than the pool holds were needed at once; the
        -- extras were closed, not kept
        local opened = opened_since(before)
        assert.is_true(opened < 1000, opened .. " opened")
        local n = settled_clients(8)
        assert.is_true(n <= 8, n .. " clients")
    end)

    it("an -ERR reply keeps the connection, a refused value closes it",
       function()
        serial_load("abc", 2500) -- warm the pools
        local before = c:info("total_connections_received")
        serial_load("hash", 2500, "^0 2500 redis: GET failed: WRONGTYPE")
        assert.is_true(opened_since(before) <= 8)

        before = c:info("total_connections_received")
        local status, body = nginx:get("/many?store=pooled&sid=big&n=40&c=4")
        assert.equal(200, status)
        assert.matches("^0 40 .*exceeds max_value_size", body)
        -- each refusal closed its connection: 40 gets, ~40 connections
        assert.is_true(opened_since(before) >= 36, opened_since(before))
    end)

    it("leaks no connection after errors", function()
        burst("hash", 800)
        burst("big", 800)
        -- timeouts: Redis sleeps while gets are in flight
        local side = assert(c:connect())
        side:send(redis_server.encode { "DEBUG", "SLEEP", "0.4" })
        socket.sleep(0.05)
        for _, body in ipairs(burst("abc", 64)) do
            assert.matches("^%d+ [1-9]%d* redis: read from .* timeout", body)
        end
        assert.equal("OK", redis_server.read_reply(side))
        side:close()
        local n = settled_clients(8)
        assert.is_true(n <= 8, n .. " clients")

        -- and the pools work as before
        local before = c:info("total_connections_received")
        serial_load("abc", 10000)
        assert.is_true(opened_since(before) <= 8, opened_since(before))
        n = settled_clients(8)
        assert.is_true(n <= 8, n .. " clients")
    end)

    it("left no crash and no Lua error in the log", function()
        nginx:assert_clean_log()
    end)
end)
