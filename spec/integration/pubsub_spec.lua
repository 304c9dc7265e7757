-- The subscriber (redis/pubsub.lua) and the connection it runs on
-- (redis/conn.lua's raw connection, AUTH and SELECT done) inside a real
-- nginx, against a real redis-server with a password: what it delivers,
-- which callbacks it calls when, and how it survives errors, a killed
-- connection, a refused AUTH and a reload.
local socket = require "socket"
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"

local now = socket.gettime

local HTTP = [[
    lua_shared_dict ev 1m;
    init_by_lua_block {
        local redis = require "resty.passport.store.redis"
        STORE = redis.new { port = %d, password = "pw", db = 2 }
        BAD = redis.new { port = %d, password = "wrong" }
    }
    init_worker_by_lua_block {
        local pubsub = require "resty.passport.redis.pubsub"
        local ev = ngx.shared.ev
        local function add(s) ev:rpush("log", s) end
        local prepares = 0
        local sub = pubsub.new(STORE, {
            channels = { "c1", "c2" },
            max_message_size = 100,
            prepare = function()
                prepares = prepares + 1
                add("prepare " .. prepares)
                if prepares == 2 then error("boom in prepare") end
                -- it may use the store's pooled connections
                return { "p:*" }, STORE:command("PING") == "PONG"
            end,
            on_message = function(ch, payload)
                if payload == "raise" then error("boom in on_message") end
                add("message " .. ch .. " " .. payload)
            end,
            on_pmessage = function(pat, ch, payload)
                add("pmessage " .. pat .. " " .. ch .. " " .. payload)
            end,
            on_up = function(confirmed) add("up " .. tostring(confirmed)) end,
            on_down = function(was_up, why)
                add("down " .. tostring(was_up) .. " " .. tostring(why))
            end,
            on_exit = function() add("exit " .. ngx.worker.pid()) end,
        })
        assert(sub:start())
        assert(pubsub.new(BAD, {
            channels = { "x" },
            on_down = function(was_up, why)
                ev:set("bad", tostring(was_up) .. " " .. tostring(why))
            end,
        }):start())
    }
]]

local SERVER = [[
        location = /_pid { return 200 $pid; }
        location = /events {
            content_by_lua_block {
                local ev = ngx.shared.ev
                while true do
                    local s = ev:lpop("log")
                    if not s then break end
                    ngx.say(s)
                end
            }
        }
        location = /bad { content_by_lua_block { ngx.print(ngx.shared.ev:get("bad")) } }
]]

describe("redis pubsub inside nginx", function()
    local redis, nginx
    local seen = {}

    -- Waits until an event matching pattern arrives; returns it.
    local function await(pattern, limit)
        local t0 = now()
        repeat
            local _, body = nginx:get("/events")
            for s in body:gmatch("[^\n]+") do seen[#seen + 1] = s end
            for i, s in ipairs(seen) do
                if s:match(pattern) then
                    table.remove(seen, i)
                    return s
                end
            end
            socket.sleep(0.01)
        until now() - t0 > (limit or 3)
        error("no event " .. pattern .. " among:\n" .. table.concat(seen, "\n"))
    end

    setup(function()
        redis = redis_server.start { password = "pw" }
        nginx = nginx_server.start {
            workers = 1,
            http = HTTP:format(redis.port, redis.port),
            server = SERVER,
        }
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if redis then redis:stop() end
    end)

    it("subscribes after AUTH and SELECT, and says when it is up", function()
        await("^prepare 1$")
        assert.equal("up true", await("^up "))
        local list = assert(redis:call("CLIENT", "LIST", "TYPE", "pubsub"))
        assert.matches("db=2 ", list)
        assert.matches("sub=2 psub=1", list)
    end)

    it("delivers messages and pattern messages", function()
        assert.equal(1, redis:call("PUBLISH", "c1", "hello"))
        assert.equal(1, redis:call("PUBLISH", "c2", "a b"))
        assert.equal(1, redis:call("PUBLISH", "p:7", "pat"))
        await("^message c1 hello$")
        await("^message c2 a b$")
        await("^pmessage p:%* p:7 pat$")
    end)

    it("logs a raising callback and goes on", function()
        redis:call("PUBLISH", "c1", "raise")
        redis:call("PUBLISH", "c1", "after")
        await("^message c1 after$")
        assert.matches("passport: subscriber on_message raised: .*boom in on_message",
                       nginx:error_log())
    end)

    it("drops a message over max_message_size and stays subscribed; reconnects after a raising prepare",
       function()
        redis:call("PUBLISH", "c1", ("x"):rep(200))
        redis:call("PUBLISH", "c1", ("y"):rep(300))
        redis:call("PUBLISH", "c1", "next")
        -- the next message comes on the same connection: no reconnect
        await("^message c1 next$")
        for _, s in ipairs(seen) do assert.is_nil(s:match("^down"), s) end
        local log = nginx:error_log()
        assert.matches("passport: subscriber dropped a message of 200 bytes on c1: over max_message_size "
                       .. "%(100%)", log)
        -- one line, not one per message
        assert.is_nil(log:match("dropped a message of 300"))
        -- a reconnect runs prepare again, which raises the second time
        assert.equal(1, redis:call("CLIENT", "KILL", "TYPE", "pubsub"))
        await("^down true closed$")
        await("^prepare 2$")
        assert.matches("^down false prepare raised: .*boom in prepare", await("^down false"))
        await("^prepare 3$")
        assert.equal("up true", await("^up "))
        redis:call("PUBLISH", "c1", "back")
        await("^message c1 back$")
    end)

    it("reconnects when Redis drops the connection", function()
        assert.equal(1, redis:call("CLIENT", "KILL", "TYPE", "pubsub"))
        await("^down true closed$")
        assert.equal("up true", await("^up ", 8))
        redis:call("PUBLISH", "c2", "again")
        await("^message c2 again$")
    end)

    it("reports a refused AUTH on every attempt", function()
        local _, bad = nginx:get("/bad")
        assert.matches("^false redis: AUTH failed: WRONGPASS", bad)
    end)

    it("ends at once on a reload (QUIT wakes the reader), and a new worker subscribes", function()
        local _, old = nginx:get("/_pid")
        local t0 = now()
        os.execute("kill -HUP " .. nginx.pid)
        await("^exit " .. old .. "$", 5)
        assert.is_true(now() - t0 < 5, now() - t0)
        assert.equal("up true", await("^up ", 5))
        local _, new = nginx:get("/_pid")
        assert.are_not.equal(old, new)
    end)

    it("left no crash and no Lua error in the log", function()
        nginx:assert_clean_log()
    end)
end)
