-- Hardening, round 2, where the gateway holds the sockets (real nginx, real
-- redis-server, records written by the real connect-redis): a fragment
-- flood is closed with 1009 and leaves no memory behind; keyspace events
-- without `set` are not trusted; a changed record re-runs the whole
-- policy (a slow one holds up no other session), a record without its
-- cookie object closes its sockets; an anonymous socket is not indexed
-- under the user deserialize_user refused, nor under its session.
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local ws = require "support.ws_raw"
local fault = require "support.fault"
local frame = require "resty.passport.ws.frame"
local cookie = require "resty.passport.cookie"
local socket = require "socket"
local cjson = require "cjson"

local SECRET = "hardening terminate secret"

local function cookie_of(sid)
    return "connect.sid=" .. cookie.sign(sid, SECRET):gsub(":", "%%3A")
end

local function eventually(pred, timeout)
    local deadline = socket.gettime() + (timeout or 3)
    while socket.gettime() < deadline do
        if pred() then return true end
        socket.sleep(0.05)
    end
    return pred()
end

-- Rewrites a session's passport.user the way an app's save does (SET,
-- keeping the TTL), leaving the rest of the record as connect-redis wrote it.
local function rewrite_user(redis, sid, user_json)
    local raw = assert(redis:call("GET", "sess:" .. sid))
    local rec = cjson.decode(raw)
    rec.passport = user_json and { user = cjson.decode(user_json) } or nil
    assert(redis:call("SET", "sess:" .. sid, cjson.encode(rec), "KEEPTTL") == "OK")
end

local LOCATIONS = [[
        location = /ws {
            content_by_lua_block {
                local passport = require "resty.passport"
                local cjson = require "cjson"
                local opts = ngx.var.arg_frag and { max_fragments = tonumber(ngx.var.arg_frag),
                                                   max_message_size = 65536 } or nil
                local s = passport.websocket(auth, opts)
                if not s then return end
                s:send(cjson.encode { hello = s.user.logged_in and s.user.id or "anonymous" })
                while true do
                    local m = s:recv()
                    if not m then break end
                    if m == "me" then
                        s:send(cjson.encode { role = s.user.role, name = s.user.name })
                    else
                        s:send("got " .. #m)
                    end
                end
            }
        }
        location = /of {
            content_by_lua_block {
                ngx.print(#require("resty.passport").sockets_of(tonumber(ngx.var.arg_user)))
            }
        }
        location = /emit {
            content_by_lua_block {
                local n = require("resty.passport").emit { user = tonumber(ngx.var.arg_user),
                                                           data = ngx.var.arg_data }
                ngx.print(n or "error")
            }
        }
]]

local function gateway(redis, logout, store_opts)
    return nginx_server.start {
        workers = 1,
        http = ([[
    init_by_lua_block {
        local passport = require "resty.passport"
        store = passport.redis { port = %d %s }
        auth = passport.authorize { secret = %q, store = store, accept_timeout = 2,
            deserialize_user = function(u)
                if type(u) == "table" and u.banned then return nil end
                return u
            end,
            success = function(data, accept)
                if data.user.role == "slow" then return end -- never decides
                accept(nil, data.user.role ~= "blocked")
            end,
            -- permissive: a user deserialize_user refused comes in anonymous
            fail = function(data, message, is_error, accept)
                if message == "User not found" then accept() else accept(message) end
            end }
    }
    init_worker_by_lua_block {
        require("resty.passport").init_worker { store = store, logout = %s }
    }
]]):format(redis.port, store_opts or "", SECRET, logout or "{}"),
        server = LOCATIONS .. fault.TRIM_LOCATION,
    }
end

local function wait_subscribed(nginx)
    assert(eventually(function()
        local _, body = nginx:get("/emit?user=424242&data=x")
        return tonumber(body) == 1
    end, 10), "subscriber did not come up")
end

local function open(nginx, sid, query)
    local c, status = ws.connect(nginx.port, "/ws" .. (query or ""), { Cookie = cookie_of(sid) })
    assert.equal(101, status)
    local hello = c:read_frame(3)
    return c, cjson.decode(hello.payload)
end

local function worker_rss(nginx)
    fault.trim(nginx, nginx.port)
    local pid = fault.workers(nginx)[1]
    return fault.worker_state(pid, { listen = { nginx.port } }).rss
end

describe("hardening (terminate mode)", function()
    local redis, nginx

    setup(function()
        redis = redis_server.start { config = { "notify-keyspace-events Kgx$" } }
        nginx = gateway(redis)
        wait_subscribed(nginx)
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if redis then redis:stop() end
    end)

    it("closes a flood of empty continuation frames with 1009, and the memory comes back", function()
        redis:seed_connect_redis("flood", '{"id":3,"role":"user"}')
        -- warm the worker up with one flood, then measure against that
        local function flood(n, query)
            local c = open(nginx, "flood", query)
            c:send_frame(frame.TEXT, "a", false)
            local empty = frame.encode(frame.CONTINUATION, "", false, "abcd")
            local chunk = empty:rep(1000)
            for _ = 1, n / 1000 do
                if not c:send_raw(chunk) then break end
            end
            local code = c:read_close(5)
            c:close()
            return code
        end
        flood(2000)
        local base = worker_rss(nginx)
        for _ = 1, 5 do
            assert.equal(frame.CLOSE_TOO_BIG, flood(20000))
        end
        -- the per-fragment cost counts toward max_message_size too
        assert.equal(frame.CLOSE_TOO_BIG, flood(20000, "?frag=1000000"))
        local after = worker_rss(nginx)
        assert.is_true(after <= base * 1.05 + 256, ("RSS %d kB after, %d kB before"):format(after, base))
        -- a fragmented message within the limits still arrives whole
        local c = open(nginx, "flood")
        c:send_frame(frame.TEXT, "ab", false)
        for _ = 1, 100 do c:send_frame(frame.CONTINUATION, "", false) end
        c:send_frame(frame.CONTINUATION, "cd", true)
        assert.equal("got 4", c:read_frame(3).payload)
        c:close()
    end)

    it("re-runs the policy when the record changes but the user id stays", function()
        redis:seed_connect_redis("role", '{"id":5,"role":"admin","name":"Eve"}')
        local c, hello = open(nginx, "role")
        assert.equal(5, hello.hello)
        -- a change the policy still admits: the socket's user follows it
        rewrite_user(redis, "role", '{"id":5,"role":"user","name":"Eve 2"}')
        assert(eventually(function()
            c:send_frame(frame.TEXT, "me")
            local me = cjson.decode(c:read_frame(3).payload)
            return me.role == "user" and me.name == "Eve 2"
        end), "socket.user was not updated")
        -- a downgrade the policy refuses: closed as a logout is
        rewrite_user(redis, "role", '{"id":5,"role":"blocked","name":"Eve 2"}')
        local code = c:read_close(3)
        assert.equal(4401, code)
        c:close()
    end)

    it("runs a slow policy apart: another session's change is seen meanwhile", function()
        redis:seed_connect_redis("slow", '{"id":6,"role":"user"}')
        redis:seed_connect_redis("quick", '{"id":7,"role":"user","name":"Q"}')
        local slow = open(nginx, "slow")
        local quick = open(nginx, "quick")
        local t0 = socket.gettime()
        rewrite_user(redis, "slow", '{"id":6,"role":"slow"}') -- its success never calls accept
        rewrite_user(redis, "quick", '{"id":7,"role":"user","name":"Q2"}')
        assert(eventually(function()
            quick:send_frame(frame.TEXT, "me")
            return cjson.decode(quick:read_frame(3).payload).name == "Q2"
        end, 1.5), "the quick session waited for the slow one")
        assert.is_true(socket.gettime() - t0 < 1.5)
        -- the slow one is refused once accept_timeout (2 s) has passed
        assert.equal(4401, (slow:read_close(4)))
        assert.is_true(socket.gettime() - t0 > 1.8)
        slow:close()
        quick:close()
    end)

    it("closes the sockets of a record rewritten without its cookie object", function()
        redis:seed_connect_redis("nocookie", '{"id":9,"role":"user"}')
        local c = open(nginx, "nocookie")
        local rec = cjson.decode((assert(redis:call("GET", "sess:nocookie"))))
        rec.cookie = nil -- unreadable: Express fails every request for it
        assert(redis:call("SET", "sess:nocookie", cjson.encode(rec), "KEEPTTL") == "OK")
        assert.equal(4401, (c:read_close(3)))
        c:close()
    end)

    it("does not index an anonymous socket under the user deserialize_user refused", function()
        redis:seed_connect_redis("banned", '{"id":13,"banned":true}')
        local c, hello = open(nginx, "banned")
        assert.equal("anonymous", hello.hello)
        local _, n = nginx:get("/of?user=13")
        assert.equal("0", n)
        nginx:get("/emit?user=13&data=secret-for-13")
        local f = c:read_frame(0.5)
        assert.is_nil(f) -- nothing meant for user 13 reached it
        -- nor under its session: a change to the record (a `set` event) is
        -- not a logout of a login it never had, and it stays open
        rewrite_user(redis, "banned", '{"id":13,"banned":true,"note":"x"}')
        socket.sleep(0.3)
        c:send_frame(frame.TEXT, "ping?")
        assert.equal("got 5", assert(c:read_frame(2)).payload)
        c:close()
    end)

    it("left no crash and no Lua error in the log", function()
        nginx:assert_clean_log()
    end)
end)

describe("hardening (keyspace events without set)", function()
    local redis, nginx

    teardown(function()
        if nginx then nginx:stop() end
        if redis then redis:stop() end
    end)

    it("keeps the coherent cache off and revalidates, with one warning", function()
        redis = redis_server.start { config = { "notify-keyspace-events Kgx" } }
        nginx = gateway(redis, "{}", ", cache_ttl = 60000, cache_coherent = true")
        wait_subscribed(nginx)
        redis:seed_connect_redis("kgx", '{"id":8,"role":"admin"}')
        local c = open(nginx, "kgx")
        -- a second handshake would be a cache hit if the cache were live
        local c2 = open(nginx, "kgx")
        c2:close()
        -- rewritten to logged out (passport < 0.6 logout): no `set` event comes
        rewrite_user(redis, "kgx", nil)
        local code = c:read_close(4)
        assert.equal(4401, code) -- revalidation saw it
        c:close()
        local r, status = ws.connect(nginx.port, "/ws", { Cookie = cookie_of("kgx") })
        if r then r:close() end
        assert.equal(401, status) -- not served from a stale cache
        local log = nginx:error_log()
        local _, warnings = log:gsub("keyspace notifications", "")
        assert.equal(1, warnings)
    end)

    it("adds what is missing with configure = true, keeping what was there", function()
        if nginx then nginx:stop() end
        if redis then redis:stop() end
        redis = redis_server.start { config = { "notify-keyspace-events Kglx" } }
        nginx = gateway(redis, "{ configure = true }")
        wait_subscribed(nginx)
        local flags = redis:call("CONFIG", "GET", "notify-keyspace-events")[2]
        for ch in ("Kglx$"):gmatch(".") do
            assert.truthy(flags:find(ch, 1, true), ch .. " missing from " .. flags)
        end
    end)
end)
