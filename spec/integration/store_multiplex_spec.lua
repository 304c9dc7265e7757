-- The Redis store with multiplex = true (redis/mux.lua) inside a real
-- nginx, against real redis-servers and the fake one: a request's commands
-- are pipelined over the worker's own connections, so the request opens no
-- cosocket, with the answers, messages and timeouts of the direct path.
-- Every server here is started and stopped by the spec.  Reports go to
-- stderr (stdout is busted's JSON).
local socket = require "socket"
local cjson = require "cjson"
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local fake_redis = require "support.fake_redis"
local fault = require "support.fault"
local proc = require "support.proc"
local cookie = require "resty.passport.cookie"

local now = socket.gettime
local function say(s) io.stderr:write(tostring(s), "\n") end

local function fill(template, vars)
    return (template:gsub("%$(%w+)", function(k)
        return vars[k] and tostring(vars[k])
    end))
end

local function bulk(s) return "$" .. #s .. "\r\n" .. s .. "\r\n" end

local function calls(srv, cmd)
    local info = assert(srv:call("INFO", "commandstats"))
    return tonumber(info:match("cmdstat_" .. cmd .. ":calls=(%d+)")) or 0
end

-- CPU seconds (user + system) a process has used.
local function cpu_s(pid)
    local stat = proc.read_file("/proc/" .. pid .. "/stat") or ""
    local f = {}
    for x in stat:gsub("^.-%) ", ""):gmatch("%S+") do f[#f + 1] = x end
    return (tonumber(f[12]) + tonumber(f[13])) / 100
end

-- { status, body } of a GET, for assert.same
local function sb(nginx, path)
    local status, body = nginx:get(path)
    return { status, body }
end

local RECORD = '{"cookie":{},"passport":{"user":"alice"}}'
local DRIPPED = ("d"):rep(40) -- 46 bytes on the wire, 20 ms each

local MAIN_HTTP = [[
    lua_shared_dict results 1m;
    init_by_lua_block {
        -- Every cosocket this worker opens, by the phase that opened it
        -- (wrapped before the store is loaded: conn.lua keeps the function).
        local tcp = ngx.socket.tcp
        SOCKETS = {}
        ngx.socket.tcp = function()
            local p = ngx.get_phase()
            SOCKETS[p] = (SOCKETS[p] or 0) + 1
            return tcp()
        end

        local redis = require "resty.passport.store.redis"
        local function mux(opts)
            opts.multiplex = true
            return redis.new(opts)
        end
        STORES = {
            a = mux { port = $a, connect_timeout = 300, read_timeout = 300 },
            a_direct = redis.new { port = $a },
            a_db3 = mux { port = $a, db = 3 },
            a_unix = mux { path = "$sock" },
            a_small = mux { port = $a, max_value_size = 10 },
            a_cache = mux { port = $a, cache_ttl = 300, pool = "cached" },
            coh = mux { port = $a, cache_ttl = 60000, cache_coherent = true },
            b_ok = mux { port = $b, password = "s3cret" },
            b_bad = mux { port = $b, password = "wrong" },
            b_none = mux { port = $b },
            b_acl = mux { port = $b, username = "app", password = "app-pw" },
            d = mux { port = $d, connect_timeout = 300, read_timeout = 300 },
            k = mux { port = $k, keepalive_timeout = 1000 },
            fake = mux { port = $fake, connect_timeout = 100,
                         read_timeout = 400 },
        }
        local v, err = STORES.a:get("abc")
        INIT_RESULT = tostring(v) .. "|" .. tostring(err)
    }
    init_worker_by_lua_block {
        local v, err = STORES.a:get("abc")
        ngx.shared.results:set("init_worker", tostring(v) .. "|" .. tostring(err))
        -- the coherent cache's subscriber: its CONFIG GET goes through
        -- the lanes, from the subscriber's timer
        require("resty.passport").init_worker { store = STORES.coh }
    }
]]

local MAIN_SERVER = [[
        location = /get {
            content_by_lua_block {
                local v, err = STORES[ngx.var.arg_store or "a"]:get(ngx.var.arg_sid)
                if err then
                    ngx.status = 503
                    ngx.say(err)
                elseif v == nil then
                    ngx.status = 404
                    ngx.say("missing")
                else
                    ngx.print(v)
                end
            }
        }
        # the sids of arg_sids got at once, one light thread each (they
        # queue in this order): "sid=value" or "sid!error", by line; "~x"
        # is the command ECHO x instead
        location = /batch {
            content_by_lua_block {
                local store = STORES[ngx.var.arg_store or "a"]
                local sids, threads, out = {}, {}, {}
                for sid in ngx.var.arg_sids:gmatch("[^,]+") do sids[#sids + 1] = sid end
                for i, sid in ipairs(sids) do
                    threads[i] = ngx.thread.spawn(function()
                        if sid:sub(1, 1) == "~" then
                            return store:command("ECHO", sid:sub(2))
                        end
                        return store:get(sid)
                    end)
                end
                for i, sid in ipairs(sids) do
                    local _, v, err = ngx.thread.wait(threads[i])
                    out[i] = err and sid .. "!" .. err or sid .. "=" .. tostring(v)
                end
                ngx.print(table.concat(out, "\n"))
            }
        }
        location = /command {
            content_by_lua_block {
                local v, err = STORES.a:command("ECHO", ngx.var.arg_v)
                ngx.print(tostring(v), "|", tostring(err))
            }
        }
        location = /sockets {
            content_by_lua_block {
                if ngx.var.arg_reset then SOCKETS = {} end
                ngx.print(require("cjson").encode(SOCKETS))
            }
        }
        location = /live {
            content_by_lua_block { ngx.print(tostring(STORES.coh.cache_live)) }
        }
        location = /max_waiting {
            content_by_lua_block {
                require("resty.passport.redis.mux").MAX_WAITING = tonumber(ngx.var.arg_n)
                ngx.print("ok")
            }
        }
]] .. require("support.store_phases")

describe("multiplexed redis store inside nginx (1 worker)", function()
    local a, b, k, fake, d_port, nginx

    setup(function()
        a = redis_server.start { unixsocket = true,
                                 config = { "notify-keyspace-events Kgx$" } }
        b = redis_server.start {
            password = "s3cret",
            users = { { name = "app", password = "app-pw" } },
        }
        k = redis_server.start {}
        d_port = redis_server.free_port()
        fake = fake_redis.start { cases = {
            good = { bytes = bulk("fine") },
            bad = { bytes = "!oops\r\n" },
            cut = { bytes = "$300\r\n" .. RECORD, after = "close" },
            hang = { bytes = "", after = "hang" },
            drip = { bytes = bulk(DRIPPED), after = "drip" },
        } }
        a:call("SET", "sess:abc", RECORD)
        b:call("SET", "sess:k", "authed")
        k:call("SET", "sess:k", "kept")
        nginx = nginx_server.start {
            workers = 1,
            http = fill(MAIN_HTTP, { a = a.port, b = b.port, d = d_port,
                                     k = k.port, fake = fake.port,
                                     sock = a.socket }),
            server = MAIN_SERVER,
        }
    end)

    teardown(function()
        if nginx then nginx:stop() end
        for _, srv in ipairs { a, b, k, fake } do srv:stop() end
    end)

    describe("requests", function()
        it("reads existing and missing keys, in rewrite, access, content and timer",
           function()
            assert.same({ 200, RECORD }, sb(nginx, "/get?sid=abc"))
            assert.equal(404, (nginx:get("/get?sid=nope")))
            assert.same({ 200, "rewrite:" .. RECORD }, sb(nginx, "/rewrite"))
            assert.same({ 200, "access:" .. RECORD }, sb(nginx, "/access"))
            assert.same({ 200, "timer:" .. RECORD }, sb(nginx, "/timer"))
            assert.same({ 200, "hi|nil" }, sb(nginx, "/command?v=hi"))
        end)

        it("opens no cosocket in the request: the worker's lanes do (timer)",
           function()
            nginx:get("/sockets?reset=1")
            for _ = 1, 10 do
                assert.equal(200, (nginx:get("/get?sid=abc")))
                assert.equal(200, (nginx:get("/access")))
            end
            local seen = cjson.decode((select(2, nginx:get("/sockets"))))
            assert.is_nil(seen.content)
            assert.is_nil(seen.access)
            -- the direct path, for contrast: one cosocket per request
            for _ = 1, 5 do
                assert.equal(200, (nginx:get("/get?store=a_direct&sid=abc")))
            end
            seen = cjson.decode((select(2, nginx:get("/sockets"))))
            assert.equal(5, seen.content)
        end)

        it("pipelines: 200 gets at once from one worker, each its own answer, "
           .. "over one connection", function()
            local sids, want = {}, {}
            for i = 1, 200 do
                local sid = "p" .. i
                if i % 7 ~= 0 then
                    a:call("SET", "sess:" .. sid, "value " .. i)
                    want[i] = sid .. "=value " .. i
                else
                    want[i] = sid .. "=nil" -- missing
                end
                sids[i] = sid
            end
            local before = a:info("total_connections_received")
            local status, body = nginx:get("/batch?sids=" .. table.concat(sids, ","))
            assert.equal(200, status)
            assert.equal(table.concat(want, "\n"), body)
            assert.is_true(a:info("total_connections_received") - before <= 1)
        end)

        it("falls back to the direct path where a request may not wait",
           function()
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

        it("reports WRONGTYPE and stays in step on the same connection",
           function()
            a:call("HSET", "sess:hash", "f", "v")
            nginx:get("/get?sid=abc")
            local before = a:info("total_connections_received")
            local status, body = nginx:get("/get?sid=hash")
            assert.equal(503, status)
            assert.matches("^redis: GET failed: WRONGTYPE", body)
            local _, batch = nginx:get("/batch?sids=abc,hash,abc")
            assert.equal("abc=" .. RECORD .. "\nhash!redis: GET failed: WRONGTYPE "
                         .. "Operation against a key holding the wrong kind of value"
                         .. "\nabc=" .. RECORD, batch)
            assert.equal(before, a:info("total_connections_received"))
        end)

        it("returns a 1 MB value exactly; refuses one past max_value_size, "
           .. "and the gets behind it in the batch are sent again", function()
            local big = string.rep("0123456789abcdef", 65536)
            a:call("SET", "sess:big", big)
            local status, body = nginx:get("/get?sid=big")
            assert.equal(200, status)
            assert.is_true(big == body)
            a:call("SET", "sess:ten", "0123456789")
            status, body = nginx:get("/get?store=a_small&sid=big")
            assert.equal(503, status)
            assert.matches("1048576 bytes exceeds max_value_size %(10%)", body)
            local _, batch = nginx:get("/batch?store=a_small&sids=ten,ten,big,ten,nope,ten")
            assert.equal(table.concat({
                "ten=0123456789", "ten=0123456789",
                "big!redis: GET failed: value of 1048576 bytes exceeds max_value_size (10)",
                "ten=0123456789", "nope=nil", "ten=0123456789" }, "\n"), batch)
        end)

        it("reads a non-zero db and over a unix socket; SELECT once per connection",
           function()
            a:call("SELECT", 3)
            a:call("SET", "sess:db", "db three")
            a:call("SELECT", 0)
            a:call("SET", "sess:db", "db zero")
            assert.same({ 200, "db three" }, sb(nginx, "/get?store=a_db3&sid=db"))
            assert.same({ 200, "db zero" }, sb(nginx, "/get?store=a_unix&sid=db"))
            local before = calls(a, "select")
            for _ = 1, 20 do nginx:get("/get?store=a_db3&sid=db") end
            assert.equal(before, calls(a, "select"))
        end)

        it("the cached store pipelines GET and PTTL; a copy dies with its key",
           function()
            a:call("SET", "sess:c1", "v1")
            local gets, pttls = calls(a, "get"), calls(a, "pttl")
            assert.same({ 200, "v1" }, sb(nginx, "/get?store=a_cache&sid=c1"))
            assert.equal(gets + 1, calls(a, "get"))
            assert.equal(pttls + 1, calls(a, "pttl"))
            a:call("DEL", "sess:c1") -- a logout: seen only when the copy goes
            assert.same({ 200, "v1" }, sb(nginx, "/get?store=a_cache&sid=c1"))
            assert.equal(gets + 1, calls(a, "get"))
            socket.sleep(0.35)
            assert.equal(404, (nginx:get("/get?store=a_cache&sid=c1")))

            a:call("SET", "sess:c2", "v2", "PX", 150) -- shorter than cache_ttl
            assert.same({ 200, "v2" }, sb(nginx, "/get?store=a_cache&sid=c2"))
            socket.sleep(0.2)
            assert.equal(404, (nginx:get("/get?store=a_cache&sid=c2")))
            -- and many at once, pipelined in pairs
            local sids, want = {}, {}
            for i = 1, 50 do
                a:call("SET", "sess:cc" .. i, "c" .. i)
                sids[i], want[i] = "cc" .. i, "cc" .. i .. "=c" .. i
            end
            local _, body = nginx:get("/batch?store=a_cache&sids=" .. table.concat(sids, ","))
            assert.equal(table.concat(want, "\n"), body)
        end)
    end)

    describe("the coherent cache", function()
        -- Polls f() until true: the seconds it took, or nil after limit.
        local function within(limit, f)
            local t0 = now()
            repeat
                if f() then return now() - t0 end
                socket.sleep(0.005)
            until now() - t0 > limit
        end

        it("goes live (CONFIG GET through the lanes), caches, and sees a DEL at once",
           function()
            assert(within(5, function()
                return select(2, nginx:get("/live")) == "true"
            end), "the subscriber never made the cache live")
            a:call("SET", "sess:co", "v1")
            assert.same({ 200, "v1" }, sb(nginx, "/get?store=coh&sid=co"))
            assert(within(1, function()
                local before = calls(a, "get")
                nginx:get("/get?store=coh&sid=co")
                return calls(a, "get") == before
            end), "the record was never cached")
            a:call("DEL", "sess:co")
            local took = within(1, function()
                return nginx:get("/get?store=coh&sid=co") == 404
            end)
            assert.is_truthy(took, "the DEL was never seen")
            assert.is_true(took < 0.2, took)
        end)
    end)

    describe("AUTH", function()
        it("authenticates once per connection, an ACL user too", function()
            assert.same({ 200, "authed" }, sb(nginx, "/get?store=b_ok&sid=k"))
            local before = calls(b, "auth")
            for _ = 1, 20 do
                assert.equal(200, (nginx:get("/get?store=b_ok&sid=k")))
            end
            assert.equal(before, calls(b, "auth"))
            assert.same({ 200, "authed" }, sb(nginx, "/get?store=b_acl&sid=k"))
        end)

        it("reports a wrong or missing password", function()
            local status, body = nginx:get("/get?store=b_bad&sid=k")
            assert.equal(503, status)
            assert.matches("^redis: AUTH failed: WRONGPASS", body)
            -- every request of a batch gets the prelude's failure
            local _, batch = nginx:get("/batch?store=b_bad&sids=k,k,k")
            for line in batch:gmatch("[^\n]+") do
                assert.matches("^k!redis: AUTH failed: WRONGPASS", line)
            end
            status, body = nginx:get("/get?store=b_none&sid=k")
            assert.equal(503, status)
            assert.matches("^redis: GET failed: NOAUTH", body)
        end)
    end)

    describe("faults", function()
        it("Redis down: 503 within connect_timeout, every request of the batch",
           function()
            local t0 = now()
            local status, body = nginx:get("/get?store=d&sid=x")
            assert.equal(503, status)
            assert.equal("redis: connect to 127.0.0.1:" .. d_port
                         .. " failed: connection refused\n", body)
            assert.is_true(now() - t0 < 0.3)
            local _, batch = nginx:get("/batch?store=d&sids=x,y")
            assert.equal("x!redis: connect to 127.0.0.1:" .. d_port
                         .. " failed: connection refused\ny!redis: connect to 127.0.0.1:"
                         .. d_port .. " failed: connection refused", batch)
        end)

        it("Redis restarted, killed, frozen: a stale connection is retried, "
           .. "a frozen one fails within read_timeout, and it recovers", function()
            local d = redis_server.start { port = d_port }
            finally(function() d:stop() end)
            d:call("SET", "sess:x", "up")
            assert.same({ 200, "up" }, sb(nginx, "/get?store=d&sid=x"))

            -- the lane's connection dies with the server: the next get
            -- finds it closed before any reply byte and goes again, on one
            -- new connection
            assert.equal("OK", d:call("SAVE"))
            d:restart()
            local opened = d:info("total_connections_received")
            assert.same({ 200, "up" }, sb(nginx, "/get?store=d&sid=x"))
            assert.equal(opened + 1, d:info("total_connections_received"))

            d:kill()
            local t0 = now()
            local status, body = nginx:get("/get?store=d&sid=x")
            assert.equal(503, status)
            assert.matches("^redis: ", body)
            assert.is_true(now() - t0 < 0.3)
            d:restart()
            d:call("SET", "sess:x", "back")
            assert.same({ 200, "back" }, sb(nginx, "/get?store=d&sid=x"))

            d:pause()
            t0 = now()
            local slow = {}
            for i = 1, 6 do slow[i] = nginx:send("/get?store=d&sid=x") end
            -- a request that needs no Redis is not held up meanwhile
            local t1 = now()
            assert.same({ 200, RECORD }, sb(nginx, "/get?sid=abc"))
            local others = now() - t1
            for i = 1, 6 do
                status, body = nginx:receive(slow[i])
                assert.equal(503, status)
                assert.equal("redis: read from 127.0.0.1:" .. d_port
                             .. " failed: timeout\n", body)
            end
            local took = now() - t0
            d:resume()
            say(("[multiplex] frozen Redis: 6 gets failed in %.3f s "
                 .. "(read_timeout 0.3 s); another store answered in %.3f s")
                :format(took, others))
            assert.is_true(others < 0.2, others)
            assert.is_true(took >= 0.29 and took < 0.8, took)
            assert.same({ 200, "back" }, sb(nginx, "/get?store=d&sid=x"))
        end)

        it("bounds the queue: past MAX_WAITING, 'too many requests waiting'",
           function()
            local d = redis_server.start { port = d_port }
            finally(function()
                d:resume()
                d:stop()
                nginx:get("/max_waiting?n=10000")
            end)
            d:call("SET", "sess:x", "up")
            assert.same({ 200, "up" }, sb(nginx, "/get?store=d&sid=x"))
            nginx:get("/max_waiting?n=20")
            d:pause()
            local sids = {}
            for i = 1, 30 do sids[i] = "x" end
            local _, body = nginx:get("/batch?store=d&sids=" .. table.concat(sids, ","))
            local tally = {}
            for line in body:gmatch("[^\n]+") do tally[line] = (tally[line] or 0) + 1 end
            assert.same({
                ["x!redis: read from 127.0.0.1:" .. d_port .. " failed: timeout"] = 20,
                ["x!redis: too many requests waiting"] = 10,
            }, tally)
        end)

        it("a garbage reply fails its request; the next ones succeed", function()
            assert.same({ 200, "fine" }, sb(nginx, "/get?store=fake&sid=good"))
            local status, body = nginx:get("/get?store=fake&sid=bad")
            assert.equal(503, status)
            assert.equal("redis: GET failed: unexpected reply\n", body)
            assert.same({ 200, "fine" }, sb(nginx, "/get?store=fake&sid=good"))
            -- in one batch: the gets behind it go out again, a command
            -- (not known to be safe to repeat) fails
            local _, batch = nginx:get("/batch?store=fake&sids=good,bad,good,~x,nope,good")
            assert.equal("good=fine\nbad!redis: GET failed: unexpected reply\n"
                         .. "good=fine\n~x!redis: ECHO failed: closed after a refused reply "
                         .. "(unexpected reply)\nnope=nil\ngood=fine", batch)
            assert.same({ 200, "~y=OK" }, sb(nginx, "/batch?store=fake&sids=~y"))
            -- cut short, then closed
            status, body = nginx:get("/get?store=fake&sid=cut")
            assert.equal(503, status)
            assert.equal("redis: read from 127.0.0.1:" .. fake.port
                         .. " failed: closed\n", body)
            assert.same({ 200, "fine" }, sb(nginx, "/get?store=fake&sid=good"))
            -- no reply at all: read_timeout (0.4 s), then a new connection
            local t0 = now()
            status, body = nginx:get("/get?store=fake&sid=hang")
            local took = now() - t0
            assert.equal(503, status)
            assert.equal("redis: read from 127.0.0.1:" .. fake.port
                         .. " failed: timeout\n", body)
            assert.is_true(took >= 0.39 and took < 0.9, took)
            assert.same({ 200, "fine" }, sb(nginx, "/get?store=fake&sid=good"))
        end)

        it("read_timeout bounds a request end to end; a semaphore given up "
           .. "on is never reused", function()
            assert.same({ 200, "fine" }, sb(nginx, "/get?store=fake&sid=good"))
            -- a reply dripped a byte every 20 ms (~0.9 s): each read makes
            -- progress, so only the requester's own bound ends it (a lane
            -- is connected: read_timeout, 0.4 s)
            local t0 = now()
            local status, body = nginx:get("/get?store=fake&sid=drip")
            local took = now() - t0
            assert.equal(503, status)
            assert.equal("redis: read from 127.0.0.1:" .. fake.port
                         .. " failed: timeout\n", body)
            assert.is_true(took >= 0.39 and took < 0.9, took)
            -- the other lane serves meanwhile
            assert.same({ 200, "fine" }, sb(nginx, "/get?store=fake&sid=good"))
            -- the dripped reply completes (~1 s): the lane posts the given-up
            -- semaphore; a reused one would wake a later request at once
            socket.sleep(1.2)
            for _ = 1, 20 do
                assert.same({ 200, "fine" }, sb(nginx, "/get?store=fake&sid=good"))
                assert.equal(404, (nginx:get("/get?store=fake&sid=none")))
            end
        end)

        it("a lane ends after keepalive_timeout idle and starts again on demand",
           function()
            local before = k:info("total_connections_received")
            assert.same({ 200, "kept" }, sb(nginx, "/get?store=k&sid=k"))
            assert.same({ 200, "kept" }, sb(nginx, "/get?store=k&sid=k"))
            assert.equal(before + 1, k:info("total_connections_received"))
            local gone
            for _ = 1, 50 do
                socket.sleep(0.1)
                if k:clients() == 0 then gone = true break end
            end
            assert.is_true(gone, "the idle lane kept its connection")
            -- and the worker sits idle once it ended (no busy loop)
            local pid = fault.workers(nginx)[1]
            local cpu = cpu_s(pid)
            socket.sleep(1)
            assert.is_true(cpu_s(pid) - cpu < 0.2, "the worker kept running")
            assert.same({ 200, "kept" }, sb(nginx, "/get?store=k&sid=k"))
            assert.equal(before + 2, k:info("total_connections_received"))
        end)

        it("left no crash and no Lua error in the log", function()
            nginx:assert_clean_log()
            assert.is_nil(nginx:error_log():find("redis lane", 1, true))
        end)
    end)
end)

describe("multiplexed handshakes from 2 workers", function()
    local redis, nginx, lport
    local SECRET = "multiplex handshakes"
    local USERS = 50

    setup(function()
        redis = redis_server.start {}
        for i = 1, USERS do
            redis:call("SET", "sess:hs" .. i,
                       '{"cookie":{"originalMaxAge":3600000},"passport":{"user":"u' .. i .. '"}}')
        end
        lport = nginx_server.free_port()
        nginx = nginx_server.start {
            workers = 2,
            http = ([[
    init_by_lua_block {
        local passport = require "resty.passport"
        auth = passport.authorize { secret = %q,
            store = passport.redis { port = %d, multiplex = true } }
    }
]]):format(SECRET, redis.port),
            server = ([[
        listen 127.0.0.1:%d reuseport;
        location = /_pid { return 200 $pid; }
        location = /ws {
            content_by_lua_block {
                local s = require("resty.passport").websocket(auth, { idle_timeout = 30 })
                if not s then return end
                s:send(s.user.value .. "@" .. ngx.worker.pid())
                while s:recv() do end
            }
        }
]]):format(lport),
        }
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if redis then redis:stop() end
    end)

    it("2,000 handshakes, 200 at a time: each user greeted as itself, "
       .. "over at most 2 connections per worker", function()
        local lines, expect = {}, {}
        for i = 1, 2000 do
            local u = i % USERS + 1
            local signed = cookie.sign("hs" .. u, SECRET):gsub(":", "%%3A")
            if i % 10 == 0 then -- a forged one now and then
                lines[i] = "/ws\tconnect.sid=" .. cookie.sign("hs" .. u, "wrong"):gsub(":", "%%3A")
                expect[i] = false
            else
                lines[i] = "/ws\tconnect.sid=" .. signed
                expect[i] = "u" .. u
            end
        end
        local before = redis:info("total_connections_received")
        local rounds, summary = fault.load(lport, lines, { conc = 200, action = "frame" })
        local pids = {}
        for i, r in ipairs(rounds[1]) do
            if expect[i] then
                local user, pid = r.seen:match("^(.-)@(%d+)$")
                assert(r.status == 101 and user == expect[i], "#" .. i .. " got "
                       .. r.status .. " " .. r.seen .. ", not " .. expect[i])
                pids[pid] = true
            else
                assert.equal(401, r.status)
            end
        end
        local workers = 0
        for _ in pairs(pids) do workers = workers + 1 end
        local opened = redis:info("total_connections_received") - before
        local clients = redis:clients()
        say(("[multiplex] %s; %d workers answered; %d Redis connections opened, %d open")
            :format(summary, workers, opened, clients))
        assert.equal(2, workers)
        assert.is_true(opened <= 4, opened .. " opened")
        assert.is_true(clients <= 4, clients .. " clients")
    end)

    it("left no crash and no Lua error in the log", function()
        nginx:assert_clean_log()
    end)

    it("stops gracefully at once: idle lanes end when the worker exits", function()
        local t0 = now()
        nginx:stop()
        nginx = nil
        local took = now() - t0
        assert.is_true(took < 3, took)
    end)
end)

describe("multiplexed store and memory per held WebSocket", function()
    -- bench-sockets' setup (bench/sockets/run.lua): one worker with the
    -- directives recommended for holding sockets, N authorized idle
    -- WebSockets held by the load generator, RSS per connection after a
    -- full GC.  The same gateway with multiplex = true, and with no Redis
    -- round trip at all (a store answering from memory), for the floor.
    -- Each gateway first serves 400 handshakes (closed at once), so that
    -- what is paid once (JIT traces, the semaphore block, lanes) is not
    -- counted per connection.
    local N = 2000
    local SECRET = "multiplex memory"
    local redis, cookies, lines

    setup(function()
        redis = redis_server.start {}
        local cmds = {}
        lines = {}
        for i = 0, N - 1 do
            cmds[#cmds + 1] = redis_server.encode { "SET", "sess:m" .. i,
                '{"cookie":{"originalMaxAge":86400000},"passport":{"user":' .. i .. '}}' }
            lines[#lines + 1] = "connect.sid=" .. cookie.sign("m" .. i, SECRET):gsub(
                "[^%w%-_%.~]", function(ch) return ("%%%02X"):format(ch:byte()) end)
        end
        local f = assert(io.open(redis.dir .. "/seed.resp", "wb"))
        f:write(table.concat(cmds))
        f:close()
        proc.sh(("redis-cli -p %d --pipe < %s/seed.resp"):format(redis.port, redis.dir))
        cookies = redis.dir .. "/cookies"
        f = assert(io.open(cookies, "w"))
        f:write(table.concat(lines, "\n"), "\n")
        f:close()
    end)

    teardown(function()
        if redis then redis:stop() end
    end)

    local function rss_kb(pid)
        local status = proc.read_file("/proc/" .. pid .. "/status") or ""
        return tonumber(status:match("VmRSS:%s*(%d+)"))
    end

    -- kB of worker RSS per held socket, the store built by store_lua
    local function per_socket(store_lua)
        local nginx = nginx_server.start {
            workers = 1,
            worker_connections = N + 1024,
            main = "worker_rlimit_nofile " .. (N + 4096) .. ";",
            log_level = "warn",
            http = [[
    lua_socket_buffer_size 1k; request_pool_size 1k; client_header_buffer_size 512;
    init_by_lua_block {
        local passport = require "resty.passport"
        auth = passport.authorize { secret = "]] .. SECRET .. [[", store = ]] .. store_lua .. [[ }
    }
]],
            server = [[
        location = /ws {
            content_by_lua_block {
                local s = require("resty.passport").websocket(auth)
                if not s then return end
                s:send("welcome")
                while s:recv() do end
            }
        }
        location = /gc {
            content_by_lua_block { collectgarbage() collectgarbage() ngx.print("ok") }
        }
]],
        }
        local ok, res = pcall(function()
            local pid = fault.workers(nginx)[1]
            local warm = {}
            for i = 1, 400 do warm[i] = "/ws\t" .. lines[i] end
            fault.load(nginx.port, warm, { conc = 100, action = "frame" })
            socket.sleep(0.3)
            nginx:get("/gc")
            local rss0 = rss_kb(pid)
            local p = assert(io.popen(("echo $$; exec %s -p %d -P /ws -f %s -m hold -N %d -c 100 "
                                       .. "-T 60000 -b 8"):format(fault.loadgen_bin(), nginx.port,
                                                                  cookies, N)))
            local gen = tonumber(p:read("*l"))
            local up = cjson.decode(p:read("*l") or "null")
            local held = up and up.held
            if held == N then
                socket.sleep(1)
                nginx:get("/gc")
            end
            local rss1 = rss_kb(pid)
            proc.sh("kill -TERM " .. gen)
            p:read("*a")
            p:close()
            assert(held == N, "hold: " .. cjson.encode(up or {}))
            return { rss0 = rss0, rss1 = rss1, per = (rss1 - rss0) / N }
        end)
        nginx:stop()
        assert(ok, res)
        return res
    end

    it("a held socket no longer pays for the Redis round trip", function()
        local port = redis.port
        local direct = per_socket(("passport.redis { port = %d }"):format(port))
        local mux = per_socket(("passport.redis { port = %d, multiplex = true }"):format(port))
        local floor = per_socket([[{ get = function(_, sid)
            return '{"cookie":{"originalMaxAge":86400000},"passport":{"user":' .. sid:sub(2) .. '}}'
        end }]])
        for _, r in ipairs { { "direct", direct }, { "multiplex", mux }, { "no Redis", floor } } do
            say(("[multiplex] %d held WebSockets, %-9s RSS %d -> %d kB: %.2f kB/conn")
                :format(N, r[1], r[2].rss0, r[2].rss1, r[2].per))
        end
        say(("[multiplex] saved %.2f kB per held socket (the floor is %.2f below direct)")
            :format(direct.per - mux.per, direct.per - floor.per))
        assert.is_true(direct.per - mux.per >= 0.3,
                       ("direct %.2f kB/conn, multiplex %.2f"):format(direct.per, mux.per))
    end)
end)
