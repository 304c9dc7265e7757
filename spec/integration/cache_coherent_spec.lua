-- The coherent session cache (redis store, cache_coherent = true): repeat
-- handshakes are served from the worker's memory, and every change the app
-- makes to a session (logout, expiry, a new user) is seen at once, through
-- the keyspace subscription passport.init_worker holds.  Real nginx (one
-- worker: one cache), real redis-server, a real Express app for the logout.
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local node = require "support.node_app"
local socket = require "socket"
local cjson = require "cjson"

local SECRET = "coherent cache secret"
local now = socket.gettime

local function record(user)
    return cjson.encode { cookie = { originalMaxAge = 3600000, httpOnly = true, path = "/" },
                          passport = { user = user } }
end

describe("coherent session cache", function()
    local redis, app, nginx, port

    local function gets()
        local info = redis:call("INFO", "commandstats")
        return tonumber(info:match("cmdstat_get:calls=(%d+)")) or 0
    end

    local function get(store, sid)
        local status, body = nginx:get("/get?store=" .. store .. "&sid=" .. sid)
        assert.equal(200, status)
        return body
    end

    -- Polls until f() is true; returns the seconds it took (nil: never).
    local function within(limit, f)
        local t0 = now()
        repeat
            if f() then return now() - t0 end
            socket.sleep(0.005)
        until now() - t0 > limit
    end

    local function live()
        return get("live", "-") == "true"
    end

    setup(function()
        redis = redis_server.start { config = { "notify-keyspace-events Kgx$" } }
        port = redis.port
        app = node.start_app { REDIS_PORT = redis.port, SECRET = SECRET }
        nginx = nginx_server.start {
            workers = 1,
            http = ([[
    init_by_lua_block {
        local passport = require "resty.passport"
        stores = {
            coherent = passport.redis { port = %d, cache_ttl = 60000, cache_coherent = true },
            orphan = passport.redis { port = %d, cache_ttl = 60000, cache_coherent = true },
            ttl = passport.redis { port = %d, cache_ttl = 60000 },
        }
        auth = passport.authorize { secret = %q, store = stores.coherent }
    }
    init_worker_by_lua_block {
        require("resty.passport").init_worker { store = stores.coherent }
    }
]]):format(port, port, port, SECRET),
            server = [[
        location = /get {
            content_by_lua_block {
                local name = ngx.var.arg_store
                if name == "live" then return ngx.print(tostring(stores.coherent.cache_live)) end
                local json, err = stores[name]:get(ngx.var.arg_sid)
                ngx.print(json or (err and "error: " .. err) or "nil")
            }
        }
        location = /race {
            content_by_lua_block {
                -- a GET that Redis answers late, and an invalidation of its
                -- key that lands while it is in flight
                local store, sid = stores.coherent, ngx.var.arg_sid
                local t = ngx.thread.spawn(function() return store:get(sid) end)
                ngx.sleep(0.1)
                store:invalidate(sid)
                local _, json = ngx.thread.wait(t)
                ngx.print(tostring(json), " ", tostring(store.cache:get(sid)))
            }
        }
        location = /who {
            access_by_lua_block { auth:access() }
            content_by_lua_block { ngx.print(ngx.ctx.passport.serialized_user) }
        }
]],
        }
        assert(within(5, live), "the subscriber never made the cache live")
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if app then app:stop() end
        if redis then redis:stop() end
    end)

    it("serves repeat gets from the worker's memory", function()
        redis:call("SET", "sess:a", record(1))
        assert.equal(record(1), get("coherent", "a"))
        -- the SET's own keyspace event may land while that first get is in
        -- flight, and then (rightly) keeps its record out of the cache
        assert(within(1, function()
            local b = gets()
            get("coherent", "a")
            return gets() == b
        end), "the record was never cached")
        local before = gets()
        for _ = 1, 20 do assert.equal(record(1), get("coherent", "a")) end
        assert.equal(before, gets())
    end)

    it("sees a DEL, a new user and an expiry made in Redis at once", function()
        redis:call("SET", "sess:b", record(1))
        assert.equal(record(1), get("coherent", "b"))
        redis:call("SET", "sess:b", record(2))
        local took = within(1, function() return get("coherent", "b") == record(2) end)
        assert.is_truthy(took, "the new user was never seen")
        assert.is_true(took < 0.2, took)

        redis:call("DEL", "sess:b")
        took = within(1, function() return get("coherent", "b") == "nil" end)
        assert.is_truthy(took, "the DEL was never seen")
        assert.is_true(took < 0.2, took)

        redis:call("SET", "sess:c", record(3), "PX", "300")
        assert.equal(record(3), get("coherent", "c"))
        -- Redis's own active expiry runs 10 times a second
        took = within(2, function() return get("coherent", "c") == "nil" end)
        assert.is_truthy(took, "the expiry was never seen")
        assert.is_true(took < 0.6, took)
    end)

    it("while a plain cache_ttl cache keeps serving the deleted session", function()
        redis:call("SET", "sess:d", record(4))
        assert.equal(record(4), get("ttl", "d"))
        redis:call("DEL", "sess:d")
        socket.sleep(0.1)
        assert.equal(record(4), get("ttl", "d"))
    end)

    it("is not used by a coherent store no subscriber keeps true", function()
        redis:call("SET", "sess:e", record(5))
        local before = gets()
        for _ = 1, 5 do assert.equal(record(5), get("orphan", "e")) end
        assert.equal(before + 5, gets())
    end)

    it("does not keep a record read before an invalidation of its key", function()
        redis:call("SET", "sess:f", record(6))
        local side = assert(redis:connect())
        side:send(redis_server.encode { "DEBUG", "SLEEP", "0.3" })
        socket.sleep(0.05)
        local status, body = nginx:get("/race?sid=f")
        assert.equal("OK", redis_server.read_reply(side))
        side:close()
        assert.equal(200, status)
        assert.equal(record(6) .. " nil", body)
    end)

    it("refuses a handshake at once after a logout in the Express app", function()
        local cookie, who = node.login(app.port, "bob", "pw2")
        local status, body = nginx:get("/who", { Cookie = cookie })
        assert.equal(200, status)
        assert.equal(tostring(who.user.id), body)
        local before = gets()
        for _ = 1, 10 do assert.equal(200, (nginx:get("/who", { Cookie = cookie }))) end
        assert.equal(before, gets())

        node.request(app.port, "POST", "/logout", { headers = { cookie = cookie } })
        local took = within(1, function() return (nginx:get("/who", { Cookie = cookie })) == 401 end)
        assert.is_truthy(took, "still let in after the logout")
        assert.is_true(took < 0.2, took)
    end)

    it("starts over when Redis goes away: errors, never stale records", function()
        redis:call("SET", "sess:g", record(7))
        assert.equal(record(7), get("coherent", "g"))
        redis:kill()
        local took = within(2, function() return not live() end)
        assert.is_truthy(took, "the cache stayed live without its subscription")
        assert.matches("^error: redis: ", get("coherent", "g"))
        redis:restart()
        assert(within(8, live), "the cache never came back")
        -- the restarted Redis has no sessions: nothing old may be served
        assert.equal("nil", get("coherent", "g"))
        redis:call("SET", "sess:g", record(8))
        assert.equal(record(8), get("coherent", "g"))
    end)

    it("left no crash and no Lua error in the log", function()
        nginx:assert_clean_log()
    end)
end)
