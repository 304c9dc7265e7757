-- The gateway holding the WebSockets, as a cluster: two nginx instances
-- (two gateway nodes) with two workers each, one redis-server, a real
-- Express app (express-session + connect-redis + passport-local) for login
-- and logout, and real npm `ws` clients.  emit crosses workers and nodes,
-- named filters reach only their users, filter_sockets_by_user and
-- sockets_of answer for their worker, and a logout in the app closes that
-- user's sockets (4401) within a second while the others stay.
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local node = require "support.node_app"
local ws_clients = require "support.ws_clients"
local socket = require "socket"
local cjson = require "cjson"

local SECRET = "cluster spec secret"

-- One gateway node; logout is the init_worker option as Lua source, and
-- store_opts more passport.redis options (Lua source, e.g. "check_expires = true").
local function gateway(name, redis_port, logout, store_opts)
    return nginx_server.start {
        workers = 2,
        http = ([[
    init_by_lua_block {
        local passport = require "resty.passport"
        -- the app's users, as its deserializeUser sees them
        local USERS = { [0] = { "zero", "user" }, [1] = { "ann", "admin" }, [2] = { "bob", "user" } }
        store = passport.redis { port = %d, %s }
        auth = passport.authorize { secret = %q, store = store,
            deserialize_user = function(id)
                local u = USERS[id]
                return u and { id = id, username = u[1], role = u[2] }
            end }
    }
    init_worker_by_lua_block {
        require("resty.passport").init_worker {
            store = store,
            filters = { admins = function(user) return user.role == "admin" end },
            logout = %s,
            socketio_emitter = { key = "socket.io" },
        }
    }
]]):format(redis_port, store_opts or "", SECRET, logout),
        server = ([[
        location = /ws {
            content_by_lua_block {
                local passport = require "resty.passport"
                local cjson = require "cjson"
                local s = passport.websocket(auth)
                if not s then return end
                s:send(cjson.encode { hello = s.user.username, pid = ngx.worker.pid(),
                                      node = %q, id = s.id })
                while true do
                    local m = s:recv()
                    if not m then break end
                    if m == "who" then
                        local out = {}
                        for _, x in ipairs(passport.filter_sockets_by_user(
                                function(u) return u.role == "admin" end)) do
                            out[#out + 1] = x.user.username
                        end
                        s:send(cjson.encode { who = out, pid = ngx.worker.pid() })
                    elseif m == "mine" then
                        s:send(cjson.encode { mine = #passport.sockets_of(s.data.serialized_user),
                                              pid = ngx.worker.pid() })
                    end
                end
            }
        }
        location = /emit {
            content_by_lua_block {
                local passport = require "resty.passport"
                local a = ngx.req.get_uri_args()
                local n, err
                if a.filter then
                    n, err = passport.emit { filter = a.filter, data = a.data }
                else
                    n, err = passport.emit { user = tonumber(a.user), data = a.data }
                end
                ngx.print(n or ("error: " .. tostring(err)))
            }
        }
]]):format(name),
    }
end


local function messages(st)
    local out = {}
    for _, m in ipairs(st.messages) do out[#out + 1] = m.data end
    return out
end

local function has(st, data)
    for _, m in ipairs(st.messages) do
        if m.data == data then return true end
    end
    return false
end

describe("sockets across workers and gateway nodes", function()
    local redis, app, a, b, clients
    local cookies = {}

    setup(function()
        redis = redis_server.start { config = { "notify-keyspace-events Kgx$" } }
        app = node.start_app { REDIS_PORT = redis.port, SECRET = SECRET }
        a = gateway("A", redis.port, "{}")
        b = gateway("B", redis.port, "{}")
        a:wait_subscribers(4)
        clients = ws_clients.start()
        cookies.ann = node.login(app.port, "ann", "pw1")
        cookies.bob = node.login(app.port, "bob", "pw2")
        cookies.zero = node.login(app.port, "zero", "pw0")
        local plan = { { "ann", a }, { "bob1", a }, { "bob2", a }, { "zero", b }, { "bob3", b } }
        for _, p in ipairs(plan) do
            local user = p[1]:gsub("%d$", "")
            clients:open(p[1], "ws://127.0.0.1:" .. p[2].port .. "/ws", cookies[user])
        end
        for _, p in ipairs(plan) do
            assert(clients:wait(p[1], function(s) return #s.messages >= 1 end),
                   p[1] .. " got no greeting")
        end
    end)

    teardown(function()
        if clients then clients:stop() end
        for _, x in ipairs { a, b } do
            if x then
                assert.is_nil(x:error_log():match("exited on signal"))
                x:stop()
            end
        end
        if app then app:stop() end
        if redis then redis:stop() end
    end)

    local function greeting(id)
        return cjson.decode(clients:state(id).messages[1].data)
    end

    it("greets each socket as its user, on the node it connected to", function()
        assert.same({ "ann", "A" }, { greeting("ann").hello, greeting("ann").node })
        assert.same({ "bob", "A" }, { greeting("bob1").hello, greeting("bob1").node })
        assert.same({ "zero", "B" }, { greeting("zero").hello, greeting("zero").node })
        assert.same({ "bob", "B" }, { greeting("bob3").hello, greeting("bob3").node })
    end)

    it("emit to a user issued on node B reaches that user's sockets on both nodes only", function()
        local _, n = b:get("/emit?user=2&data=for-bob")
        assert.equal("4", n) -- every worker of both nodes got the message
        for _, id in ipairs { "bob1", "bob2", "bob3" } do
            assert.truthy(clients:wait(id, function(s) return has(s, "for-bob") end, 2), id)
        end
        socket.sleep(0.2)
        assert.is_false(has(clients:state("ann"), "for-bob"))
        assert.is_false(has(clients:state("zero"), "for-bob"))
    end)

    it("emit to a user keeps 1 and \"1\" apart as passport does", function()
        local _, n = a:get("/emit?user=1&data=for-ann")
        assert.equal("4", n)
        assert.truthy(clients:wait("ann", function(s) return has(s, "for-ann") end, 2))
        for _, id in ipairs { "bob1", "zero" } do
            assert.is_false(has(clients:state(id), "for-ann"))
        end
    end)

    it("socket.io's Redis emitter reaches plain WebSockets as the JSON [event, args...]", function()
        local input = cjson.encode { redis_port = redis.port, calls = {
            { chain = { { "to", "user:2" }, { "emit", "notice", "for bob", { n = 1 } } } },
            { chain = { { "except", "user:2" }, { "emit", "all", "but bob" } } },
            -- binary arguments have no JSON: not sent to plain WebSockets
            { chain = { { "to", "user:2" }, { "emit", "bin", { ["$bin"] = "AAE=" } } } },
            { chain = { { "of", "/admin" }, { "emit", "other", "namespace" } } },
        } }
        local file = os.tmpname()
        local f = assert(io.open(file, "w"))
        f:write(input)
        f:close()
        local out = io.popen("cd " .. nginx_server.root .. " && node spec/support/app/emitter.js < " .. file):read("*a")
        os.remove(file)
        assert.matches('"receivers"', out)
        for _, id in ipairs { "bob1", "bob2", "bob3" } do
            assert.truthy(clients:wait(id, function(st) return has(st, '["notice","for bob",{"n":1}]') end, 2), id)
        end
        for _, id in ipairs { "ann", "zero" } do
            assert.truthy(clients:wait(id, function(st) return has(st, '["all","but bob"]') end, 2), id)
        end
        socket.sleep(0.3)
        for _, id in ipairs { "ann", "bob1", "bob2", "bob3", "zero" } do
            for _, m in ipairs(clients:state(id).messages) do
                assert.is_nil(m.data:match('^%["bin"'), id)
                assert.is_nil(m.data:match('^%["other"'), id)
            end
        end
        assert.is_false(has(clients:state("bob1"), '["all","but bob"]'))
        assert.is_false(has(clients:state("ann"), '["notice","for bob",{"n":1}]'))
    end)

    it("emit to a named filter reaches only matching users", function()
        local _, n = a:get("/emit?filter=admins&data=admins-only")
        assert.equal("4", n)
        assert.truthy(clients:wait("ann", function(s) return has(s, "admins-only") end, 2))
        socket.sleep(0.2)
        for _, id in ipairs { "bob1", "bob2", "bob3", "zero" } do
            assert.is_false(has(clients:state(id), "admins-only"), id)
        end
    end)

    it("filter_sockets_by_user and sockets_of answer for their own worker", function()
        local pid = {}
        for _, id in ipairs { "ann", "bob1", "bob2", "bob3", "zero" } do
            pid[id] = greeting(id).node .. greeting(id).pid
        end
        for _, id in ipairs { "ann", "bob1", "bob3", "zero" } do
            local before = #clients:state(id).messages
            clients:send(id, "who")
            local st = assert(clients:wait(id, function(s) return #s.messages > before end))
            local who = cjson.decode(st.messages[#st.messages].data).who
            local want = pid.ann == pid[id] and { "ann" } or {}
            assert.same(want, who, id)

            before = #st.messages
            clients:send(id, "mine")
            st = assert(clients:wait(id, function(s) return #s.messages > before end))
            local mine = cjson.decode(st.messages[#st.messages].data).mine
            local user = id:gsub("%d$", "")
            local same = 0
            for other, p in pairs(pid) do
                if other:gsub("%d$", "") == user and p == pid[id] then same = same + 1 end
            end
            assert.equal(same, mine, id)
        end
    end)

    it("a logout in the Express app closes that user's sockets within 1 s with 4401", function()
        local t0 = socket.gettime()
        local status = node.request(app.port, "POST", "/logout", { headers = { cookie = cookies.bob } })
        assert.equal(200, status)
        for _, id in ipairs { "bob1", "bob2", "bob3" } do
            local st = assert(clients:wait(id, function(s) return s.close ~= nil end, 3), id)
            assert.equal(4401, st.close.code, id)
            assert.equal("session ended", st.close.reason)
            assert.is_true(st.close.at / 1000 - t0 < 1.0, id .. " closed after "
                           .. (st.close.at / 1000 - t0) .. " s")
        end
        -- the others stay, and still receive
        local _, n = b:get("/emit?user=1&data=still-here")
        assert.equal("4", n)
        assert.truthy(clients:wait("ann", function(s) return has(s, "still-here") end, 2))
        assert.is_nil(clients:state("zero").close)
        assert.is_true(clients:state("zero").open)
    end)

    it("a session that expires in Redis closes its sockets", function()
        local _, who = node.request(app.port, "GET", "/whoami", { headers = { cookie = cookies.zero } })
        redis:call("PEXPIRE", "sess:" .. who.session_id, 200)
        local st = assert(clients:wait("zero", function(s) return s.close ~= nil end, 3))
        assert.equal(4401, st.close.code)
        assert.is_true(clients:state("ann").open, cjson.encode(messages(clients:state("ann"))))
    end)
end)

describe("logout without keyspace notifications", function()
    local redis, app, gw, clients

    setup(function()
        redis = redis_server.start {} -- notify-keyspace-events "" (the default)
        app = node.start_app { REDIS_PORT = redis.port, SECRET = SECRET }
        gw = gateway("R", redis.port, "{ revalidate_interval = 0.3 }")
        gw:wait_subscribers(2)
        clients = ws_clients.start()
    end)

    teardown(function()
        if clients then clients:stop() end
        if gw then gw:stop() end
        if app then app:stop() end
        if redis then redis:stop() end
    end)

    it("is seen by periodic revalidation, and says so in the log", function()
        local ann = node.login(app.port, "ann", "pw1")
        local bob = node.login(app.port, "bob", "pw2")
        clients:open("ann", "ws://127.0.0.1:" .. gw.port .. "/ws", ann)
        clients:open("bob", "ws://127.0.0.1:" .. gw.port .. "/ws", bob)
        assert(clients:wait("ann", function(s) return #s.messages >= 1 end))
        assert(clients:wait("bob", function(s) return #s.messages >= 1 end))
        local t0 = socket.gettime()
        node.request(app.port, "POST", "/logout", { headers = { cookie = bob } })
        local st = assert(clients:wait("bob", function(s) return s.close ~= nil end, 3))
        assert.equal(4401, st.close.code)
        assert.is_true(st.close.at / 1000 - t0 < 1.0)
        socket.sleep(0.5) -- more revalidation rounds: ann stays
        assert.is_true(clients:state("ann").open)
        assert.truthy(gw:error_log():match("keyspace notifications are off"))
    end)
end)

-- A record whose cookie.expires has passed while its Redis key lives: the
-- handshake and logout's revalidation must give one verdict (session.logged_in
-- with the store's check_expires).  connect-redis trusts the key's TTL, so
-- Express, and the gateway by default, admit it; check_expires refuses it.
describe("the handshake and revalidation agree on a passed cookie.expires", function()
    local redis, clients
    local gateways = {}
    local EXPIRED = '{"cookie":{"originalMaxAge":3600000,"expires":"2000-01-01T00:00:00.000Z"},'
                    .. '"passport":{"user":%d}}'
    local LIVE = '{"cookie":{"originalMaxAge":3600000,"expires":"2099-01-01T00:00:00.000Z"},'
                 .. '"passport":{"user":%d}}'

    local function cookie_for(sid)
        return "connect.sid=" .. require("resty.passport.cookie").sign(sid, SECRET)
    end

    -- Rewrites a session in place: the key keeps its TTL, and the keyspace
    -- `set` event makes the gateway re-check the session's sockets.
    local function rewrite(sid, record)
        assert.equal("OK", redis:call("SET", "sess:" .. sid, record, "KEEPTTL"))
    end

    setup(function()
        redis = redis_server.start { config = { "notify-keyspace-events Kgx$" } }
        for sid, record in pairs { exp1 = EXPIRED:format(1), ctl1 = LIVE:format(2),
                                   exp2 = EXPIRED:format(1), live2 = LIVE:format(2) } do
            assert.equal("OK", redis:call("SET", "sess:" .. sid, record, "EX", "3600"))
        end
        gateways.off = gateway("off", redis.port, "{}")
        gateways.on = gateway("on", redis.port, "{}", "check_expires = true")
        gateways.off:wait_subscribers(4)
        clients = ws_clients.start()
    end)

    teardown(function()
        if clients then clients:stop() end
        for _, gw in pairs(gateways) do gw:stop() end
        if redis then redis:stop() end
    end)

    it("check_expires off: admitted, and a re-check keeps it open", function()
        local url = "ws://127.0.0.1:" .. gateways.off.port .. "/ws"
        clients:open("exp1", url, cookie_for("exp1"))
        clients:open("ctl1", url, cookie_for("ctl1"))
        for _, id in ipairs { "exp1", "ctl1" } do
            assert(clients:wait(id, function(s) return #s.messages >= 1 end), id .. " not admitted")
        end
        assert.equal("ann", cjson.decode(clients:state("exp1").messages[1].data).hello)
        rewrite("exp1", EXPIRED:format(1))
        -- a control session rewritten after it, logged out: its re-check closes it
        rewrite("ctl1", '{"cookie":{"originalMaxAge":3600000},"passport":{}}')
        local ctl = assert(clients:wait("ctl1", function(s) return s.close ~= nil end, 3))
        assert.equal(4401, ctl.close.code)
        socket.sleep(0.3)
        local st = clients:state("exp1")
        assert.is_nil(st.close, st.close and cjson.encode(st.close))
        clients:send("exp1", "mine")
        assert(clients:wait("exp1", function(s) return #s.messages >= 2 end), "exp1 stopped answering")
    end)

    it("check_expires on: refused with \"No session found\", and a re-check closes it", function()
        local url = "ws://127.0.0.1:" .. gateways.on.port .. "/ws"
        clients:open("exp2", url, cookie_for("exp2"))
        local st = assert(clients:wait("exp2", function(s) return s.close ~= nil end, 3))
        assert.equal(401, st.status)
        assert.equal("No session found", cjson.decode(st.error).error)
        clients:open("live2", url, cookie_for("live2"))
        assert(clients:wait("live2", function(s) return #s.messages >= 1 end), "live2 not admitted")
        rewrite("live2", EXPIRED:format(2))
        st = assert(clients:wait("live2", function(s) return s.close ~= nil end, 3))
        assert.same({ 4401, "session ended" }, { st.close.code, st.close.reason })
    end)
end)
