-- The Redis store outside nginx (plain LuaJIT, hiredis's blocking client
-- through librestypassport_redis.so) against real redis-servers that this
-- spec starts and stops.
local socket = require "socket"
local redis_server = require "support.redis_server"
local redis = require "resty.passport.store.redis"

local now = socket.gettime

-- Runs f and returns its results and the seconds it took.
local function timed(f, ...)
    local t0 = now()
    local a, b = f(...)
    return a, b, now() - t0
end

-- connect-redis's record for a logged-in user, the shape its set() writes.
local function record(expires_iso, user)
    return '{"cookie":{"originalMaxAge":86400000,"expires":"' .. expires_iso
           .. '","secure":false,"httpOnly":true,"path":"/"},'
           .. '"passport":{"user":' .. (user or '"alice"') .. '}}'
end

describe("redis store outside nginx", function()
    local srv

    setup(function()
        srv = redis_server.start { unixsocket = true }
    end)

    teardown(function()
        if srv then srv:stop() end
    end)

    before_each(function()
        assert(srv:call("FLUSHALL"))
    end)

    describe("new()", function()
        local function misuse(opts)
            -- not a tail call, so the error's level names this file
            local ok, err = pcall(function()
                local store = redis.new(opts)
                return store
            end)
            assert.is_false(ok)
            return err
        end

        it("uses hiredis outside nginx", function()
            assert.equal("hiredis", redis.new().backend)
            assert.equal("string", type(redis._VERSION))
        end)

        it("rejects bad options at the caller's line", function()
            local err = misuse { port = "6379" }
            assert.matches("bad option 'port'.*number expected", err)
            assert.matches("store_redis_spec.lua:%d+:", err)
            err = misuse { port = 0 }
            assert.matches("bad option 'port'.*positive integer", err)
            assert.matches("store_redis_spec.lua:%d+:", err)
            assert.matches("unknown option 'timeout'", misuse { timeout = 5 })
            assert.matches("either path or host",
                           misuse { path = "/tmp/x.sock", port = 1 })
            assert.matches("needs a password", misuse { username = "u" })
            assert.matches("non%-negative", misuse { db = -1 })
            assert.matches("positive", misuse { read_timeout = 0 })
            assert.matches("needs nginx", misuse { cache_ttl = 200 })
            assert.matches("cache_coherent.*needs a cache_ttl", misuse { cache_coherent = true })
            assert.matches("table expected", misuse("localhost"))
        end)

        it("get() needs a store and a string", function()
            local store = redis.new { port = srv.port }
            local ok, err = pcall(store.get, "sid")
            assert.is_false(ok)
            assert.matches("store:get%(sid%)", err)
            ok, err = pcall(store.get, store, 42)
            assert.is_false(ok)
            assert.matches("string expected, got number", err)
        end)
    end)

    describe("get()", function()
        it("returns the record, nil for a missing key", function()
            local json = record("2099-01-01T00:00:00.000Z")
            srv:call("SET", "sess:abc", json)
            local store = redis.new { port = srv.port }
            assert.equal(json, store:get("abc"))
            local v, err = store:get("missing")
            assert.is_nil(v)
            assert.is_nil(err)
        end)

        it("reads key = prefix .. sid, the empty prefix included", function()
            srv:call("SET", "app:x", "with prefix")
            srv:call("SET", "x", "bare")
            assert.equal("with prefix",
                         redis.new { port = srv.port, prefix = "app:" }:get("x"))
            assert.equal("bare",
                         redis.new { port = srv.port, prefix = "" }:get("x"))
            assert.is_nil(redis.new { port = srv.port }:get("x"))
        end)

        it("returns garbage bytes exactly (binary safe)", function()
            local bytes = {}
            for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
            local garbage = table.concat(bytes) .. "\r\n$-1\r\n\0\255\254"
            srv:call("SET", "sess:g", garbage)
            local store = redis.new { port = srv.port }
            assert.equal(garbage, store:get("g"))
        end)

        it("reads a 1 MB value whole; past max_value_size it is an error",
           function()
            local big = string.rep("x", 1048576)
            srv:call("SET", "sess:big", big)
            srv:call("SET", "sess:big1", big .. "y")
            local store = redis.new { port = srv.port }
            assert.equal(big, store:get("big"))
            local v, err = store:get("big1")
            assert.is_nil(v)
            assert.matches("1048577 bytes exceeds 1048576", err)

            local small = redis.new { port = srv.port, max_value_size = 10 }
            srv:call("SET", "sess:s", "0123456789")
            assert.equal("0123456789", small:get("s"))
            v, err = small:get("big")
            assert.is_nil(v)
            assert.matches("exceeds 10", err)
            -- the same connection still serves
            assert.equal("0123456789", small:get("s"))
        end)

        it("reports WRONGTYPE and keeps serving", function()
            srv:call("HSET", "sess:h", "f", "v")
            srv:call("SET", "sess:ok", "fine")
            local store = redis.new { port = srv.port }
            local v, err = store:get("h")
            assert.is_nil(v)
            assert.matches("^redis: GET failed: WRONGTYPE", err)
            assert.equal("fine", store:get("ok"))
        end)

        it("selects a non-zero db on connect", function()
            srv:call("SELECT", 3)
            srv:call("SET", "sess:db", "in db 3")
            srv:call("SELECT", 0)
            assert.equal("in db 3", redis.new { port = srv.port, db = 3 }:get("db"))
            assert.is_nil(redis.new { port = srv.port }:get("db"))
            local v, err = redis.new { port = srv.port, db = 99 }:get("db")
            assert.is_nil(v)
            assert.matches("SELECT failed: .*out of range", err)
        end)

        it("connects over a unix socket", function()
            srv:call("SET", "sess:u", "over unix")
            local store = redis.new { path = srv.socket }
            assert.equal("over unix", store:get("u"))
            local v, err = redis.new { path = srv.dir .. "/nope.sock" }:get("u")
            assert.is_nil(v)
            assert.matches("connect to unix:.*nope.sock failed", err)
        end)
    end)

    describe("connect-redis compatibility", function()
        it("reads the record the real connect-redis set() wrote", function()
            local raw, ttl = srv:seed_connect_redis("Zm9v-bar_baz", '"alice"')
            if not raw then
                pending("npm packages missing: " .. tostring(ttl))
                return
            end
            assert.is_true(ttl > 3500 and ttl <= 3600)
            assert.equal(raw, redis.new { port = srv.port }:get("Zm9v-bar_baz"))
            assert.equal(raw, redis.new { port = srv.port, check_expires = true }
                                  :get("Zm9v-bar_baz"))
            -- connect-redis allows an empty prefix; so do we
            raw = srv:seed_connect_redis("bare", "0", { prefix = "" })
            assert.equal(raw, redis.new { port = srv.port, prefix = "" }
                                  :get("bare"))
        end)

        it("reads the same shape written with SET EX", function()
            local json = record("2099-01-01T00:00:00.000Z", "0")
            srv:call("SET", "sess:ex", json, "EX", 60)
            assert.equal(json, redis.new { port = srv.port }:get("ex"))
            -- the TTL is the expiry: once Redis drops the key, it is gone
            srv:call("PEXPIRE", "sess:ex", 1)
            socket.sleep(0.05)
            assert.is_nil(redis.new { port = srv.port }:get("ex"))
        end)
    end)

    describe("check_expires", function()
        it("treats a record whose cookie.expires has passed as missing",
           function()
            local live = record("2099-01-01T00:00:00.000Z")
            srv:call("SET", "sess:live", live)
            srv:call("SET", "sess:dead", record("2001-01-01T00:00:00.000Z"))
            srv:call("SET", "sess:nocookie", '{"passport":{"user":1}}')
            local plain = redis.new { port = srv.port }
            local strict = redis.new { port = srv.port, check_expires = true }
            -- connect-redis itself only trusts the TTL
            assert.is_string(plain:get("dead"))
            local v, err = strict:get("dead")
            assert.is_nil(v)
            assert.is_nil(err)
            assert.equal(live, strict:get("live"))
            assert.equal('{"passport":{"user":1}}', strict:get("nocookie"))
        end)

        it("expires with millisecond precision", function()
            -- 600 ms ahead, to the millisecond: a whole-second expiry
            -- could fall a millisecond after now and fail the first get
            local at = socket.gettime() + 0.6
            local secs = math.floor(at)
            local soon = os.date("!%Y-%m-%dT%H:%M:%S", secs)
                         .. string.format(".%03dZ", math.floor((at - secs) * 1000))
            srv:call("SET", "sess:soon", record(soon))
            local strict = redis.new { port = srv.port, check_expires = true }
            assert.is_string(strict:get("soon"))
            socket.sleep(at + 0.1 - socket.gettime())
            assert.is_nil(strict:get("soon"))
        end)

        it("rejects a record that is not JSON", function()
            srv:call("SET", "sess:bad", "\0\1garbage")
            local v, err = redis.new { port = srv.port, check_expires = true }
                :get("bad")
            assert.is_nil(v)
            assert.matches("bad session record", err)
        end)
    end)

    describe("faults", function()
        it("fails fast while Redis is down and recovers by itself", function()
            local port = redis_server.free_port()
            local store = redis.new { port = port, connect_timeout = 500 }
            local v, err, took = timed(store.get, store, "a")
            assert.is_nil(v)
            assert.matches("connect to 127.0.0.1:" .. port
                           .. " failed: connection refused", err)
            assert.is_true(took < 0.5)

            local late = redis_server.start { port = port }
            finally(function() late:stop() end)
            late:call("SET", "sess:a", "up")
            assert.equal("up", store:get("a"))

            -- killed mid-run: errors, then the same store reconnects
            late:kill()
            v, err, took = timed(store.get, store, "a")
            assert.is_nil(v)
            assert.matches("^redis: ", err)
            assert.is_true(took < 0.5)
            v, err = store:get("a")
            assert.is_nil(v)
            assert.matches("connection refused", err)
            late:restart()
            late:call("SET", "sess:a", "back")
            assert.equal("back", store:get("a"))
        end)

        it("retries once when a kept connection went stale", function()
            local r = redis_server.start {}
            finally(function() r:stop() end)
            r:call("SET", "sess:a", "1")
            local store = redis.new { port = r.port }
            assert.equal("1", store:get("a"))
            r:restart() -- the store's connection is now dead
            r:call("SET", "sess:a", "2")
            assert.equal("2", store:get("a"))
        end)

        it("times out a slow reply (DEBUG SLEEP) and recovers", function()
            srv:call("SET", "sess:s", "v")
            local store = redis.new { port = srv.port, read_timeout = 200 }
            assert.equal("v", store:get("s"))
            -- DEBUG SLEEP on a side connection, without waiting for it
            local side = assert(srv:connect())
            side:send(redis_server.encode { "DEBUG", "SLEEP", "0.8" })
            socket.sleep(0.05)
            local v, err, took = timed(store.get, store, "s")
            assert.is_nil(v)
            assert.equal("redis: GET failed: timeout", err)
            assert.is_true(took >= 0.19 and took < 0.6, took)
            assert.equal("OK", redis_server.read_reply(side))
            side:close()
            assert.equal("v", store:get("s"))
        end)

        it("times out against a frozen server (SIGSTOP), then recovers",
           function()
            srv:call("SET", "sess:f", "v")
            local store = redis.new { port = srv.port, read_timeout = 250 }
            assert.equal("v", store:get("f"))
            srv:pause()
            local v, err, took = timed(store.get, store, "f")
            srv:resume()
            assert.is_nil(v)
            assert.equal("redis: GET failed: timeout", err)
            assert.is_true(took >= 0.24 and took < 0.7, took)
            assert.equal("v", store:get("f"))
        end)

        it("bounds the connect with connect_timeout", function()
            -- a frozen server with a full accept queue drops SYNs
            local tiny = redis_server.start { config = { "tcp-backlog 1" } }
            finally(function() tiny:stop() end)
            tiny:call("SET", "sess:c", "v")
            tiny.admin:close()
            tiny.admin = nil
            local store = redis.new { port = tiny.port, connect_timeout = 300,
                                      read_timeout = 300 }
            tiny:pause()
            local hold = {}
            for i = 1, 4 do
                hold[i] = socket.tcp()
                hold[i]:settimeout(0.2)
                hold[i]:connect("127.0.0.1", tiny.port)
            end
            local v, err, took = timed(store.get, store, "c")
            tiny:resume()
            for _, c in ipairs(hold) do c:close() end
            assert.is_nil(v)
            assert.equal("redis: connect to 127.0.0.1:" .. tiny.port
                         .. " failed: timeout", err)
            assert.is_true(took >= 0.29 and took < 0.8, took)
            -- recovers once Redis has drained its accept queue
            local got
            for _ = 1, 20 do
                got = store:get("c")
                if got then break end
            end
            assert.equal("v", got)
        end)
    end)

    describe("AUTH", function()
        local sec

        setup(function()
            sec = redis_server.start {
                password = "s3cret",
                users = { { name = "app", password = "app-pw" } },
            }
            sec:call("SET", "sess:k", "authed")
        end)

        teardown(function()
            if sec then sec:stop() end
        end)

        it("authenticates with the right password", function()
            assert.equal("authed",
                         redis.new { port = sec.port, password = "s3cret" }
                             :get("k"))
        end)

        it("reports a wrong password and a missing one", function()
            local v, err = redis.new { port = sec.port, password = "nope" }
                :get("k")
            assert.is_nil(v)
            assert.matches("^redis: AUTH failed: WRONGPASS", err)
            v, err = redis.new { port = sec.port }:get("k")
            assert.is_nil(v)
            assert.matches("^redis: GET failed: NOAUTH", err)
        end)

        it("authenticates an ACL user", function()
            assert.equal("authed", redis.new {
                port = sec.port, username = "app", password = "app-pw",
            }:get("k"))
            local v, err = redis.new {
                port = sec.port, username = "app", password = "s3cret",
            }:get("k")
            assert.is_nil(v)
            assert.matches("WRONGPASS", err)
        end)
    end)
end)
