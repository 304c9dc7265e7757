-- The gateway's socket.io mode as a cluster: two gateway nodes (two nginx
-- instances, two workers each) on one redis-server, real socket.io-client
-- 4.8 clients of several users spread over both (spec/support/app/
-- sio_client.js, all in one node process), the test application of
-- spec/support/sio_app.lua.  passport.emit issued on node A -- to a user,
-- to a room joined through an event, to the automatic user:/session:
-- rooms, to a named filter, to a namespace -- reaches exactly the sockets
-- it names on both nodes and no others; deleting a session's key in Redis
-- (a logout) disconnects that session's socket.io sockets with
-- "io server disconnect", the client does not reconnect, and the others
-- stay connected.
--
-- Gateway only: there is no socket.io reference for emits issued from
-- another node.  A gateway that cannot serve socket.io fails every case.
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local sio = require "support.sio_specs"
local socket = require "socket"
local cjson = require "cjson"

local SECRET = "socketio cluster spec secret"

local function gateway(redis_port)
    return nginx_server.start {
        workers = 2,
        http = ([[
    lua_shared_dict sio_log 1m;
    init_by_lua_block {
        require("support.sio_app").configure { redis_port = %d, secret = %q }
    }
    init_worker_by_lua_block { require("support.sio_app").init_worker() }
]]):format(redis_port, SECRET),
        server = [[
        location /socket.io/ { content_by_lua_block { require("support.sio_app").io:serve() } }
        location = /emit { content_by_lua_block { require("support.sio_app").emit_handler() } }
        location = /probe { content_by_lua_block { require("support.sio_app").probe() } }
        location = /who { content_by_lua_block { require("support.sio_app").who_handler() } }
]],
    }
end

describe("socket.io across workers and gateway nodes", function()
    local redis, a, b, clients, out, gw_err
    local t_logout
    local who = {} -- node -> { pid -> /who answer }, while everyone is connected
    local cookies = {}
    local emitted = {}

    -- Who connects where: name -> { user session, node, namespaces, room to join }.
    local PLAN = {
        { "ann1", "s-ann1", "A", admin = true },
        { "bob1", "s-bob1", "A", room = "blue" },
        { "zero", "s-zero", "A" },
        { "ann2", "s-ann2", "B" },
        { "bob2", "s-bob2", "B" },
        { "cat", "s-cat", "B", admin = true, room = "blue" },
    }
    local USER = { ["s-ann1"] = "1", ["s-ann2"] = "1", ["s-bob1"] = "2", ["s-bob2"] = "2",
                   ["s-zero"] = "0", ["s-cat"] = "3" }

    -- The emits issued on node A, in order: query string, and the data
    -- each carries (the expected recipients are below, per client).
    local EMITS = {
        { "user=2", "for-bob" },
        { "room=blue", "for-blue" },
        { "filter=admins", "for-admins" },
        { "user=0", "for-zero" },
        { "room=user%3A1", "room-user-1" },
        { "room=session%3As-ann2", "room-session" },
        { "user=1&namespace=%2Fadmin", "admin-ns" },
        { "filter=admins&namespace=%2Fadmin", "admins-admin-ns" },
        { "user=99", "nobody" },
    }

    setup(function()
        redis = redis_server.start { config = { "notify-keyspace-events Kgx$" } }
        for sid, user in pairs(USER) do
            assert(redis:seed_connect_redis(sid, user))
            cookies[sid] = "connect.sid=" .. require("resty.passport.cookie").sign(sid, SECRET)
        end
        a = gateway(redis.port)
        b = gateway(redis.port)
        for _, node in ipairs { a, b } do
            for _ = 1, 4 do
                local _, body = node:get("/probe")
                if body ~= "ok" then gw_err = "the gateway cannot serve socket.io: " .. tostring(body) end
            end
        end
        if gw_err then return end
        -- every worker of both nodes subscribed: an emit reaches 4
        local deadline = socket.gettime() + 10
        repeat
            local _, n = a:get("/emit?user=999&data=warmup")
            if n == "4" then break end
            socket.sleep(0.05)
        until socket.gettime() > deadline

        local dir = redis_server.tmpdir("sioclients")
        local list, marks = {}, {}
        for _, p in ipairs(PLAN) do
            local node = p[3] == "A" and a or b
            local steps = { { op = "open", expect = "hello" } }
            if p.admin then
                steps[#steps + 1] = { op = "open", s = "adm", nsp = "/admin", expect = "hello" }
            end
            if p.room then
                steps[#steps + 1] = { op = "emit", event = "join", args = { p.room }, ack = true }
            end
            marks[#marks + 1] = "ready-" .. p[1]
            steps[#steps + 1] = { op = "mark", file = dir .. "/ready-" .. p[1] }
            steps[#steps + 1] = { op = "gate", file = dir .. "/done", timeout = 20000 }
            list[#list + 1] = { name = p[1], url = "http://127.0.0.1:" .. node.port,
                                cookie = cookies[p[2]], reconnection = true, steps = steps,
                                deadline = 30000 }
        end
        clients = sio.start_clients(dir, list)
        clients.wait_marks(marks, 15)

        for _, e in ipairs(EMITS) do
            local _, n = a:get("/emit?" .. e[1] .. "&data=" .. e[2])
            emitted[#emitted + 1] = { e[2], n }
        end
        socket.sleep(0.5) -- deliveries
        -- each worker's own view: ask each node until both its workers answered
        for name, node in pairs { A = a, B = b } do
            who[name] = {}
            for _ = 1, 100 do
                local _, body = node:get("/who?user=2")
                local w = cjson.decode(body)
                who[name][w.pid] = w
                local n = 0
                for _ in pairs(who[name]) do n = n + 1 end
                if n == 2 then break end
            end
        end
        -- logout of bob's session on node B: its key deleted in Redis
        t_logout = socket.gettime()
        assert.equal(1, redis:call("DEL", "sess:s-bob2"))
        socket.sleep(1.2) -- long enough to see a reconnect, were there one
        clients.open_gate("done")
        out = {}
        for _, o in ipairs(clients.result(10)) do out[o.name] = o end
    end)

    teardown(function()
        if clients then clients.stop() end
        for _, node in ipairs { a, b } do
            if node then sio.stop_gateway(node, not gw_err, "a gateway's") end
        end
        if redis then redis:stop() end
    end)

    local function need_gateway()
        assert(not gw_err, gw_err)
        assert(out, "the clients did not run")
    end

    -- The notices a client's namespace socket got, sorted.
    local function notices(name, s)
        local list = {}
        local sock = out[name].sockets[s or "main"]
        for _, e in ipairs(sock and sock.events or {}) do
            if e.event == "notice" then list[#list + 1] = e.args[1] end
        end
        table.sort(list)
        return list
    end

    it("every client connected as its user, on its node", function()
        need_gateway()
        for _, p in ipairs(PLAN) do
            local o = out[p[1]]
            assert.is_nil(o.error, p[1] .. ": " .. tostring(o.error))
            local hello = o.sockets.main.events[1]
            assert.equal("hello", hello.event)
            assert.equal(tonumber(USER[p[2]]), hello.args[1].user.id, p[1])
            if p.room then assert.same({ "joined", p.room }, o.steps[p.admin and 3 or 2].ack) end
        end
    end)

    it("each emit reached every worker of both nodes", function()
        need_gateway()
        for _, e in ipairs(emitted) do
            assert.equal("4", e[2], e[1])
        end
    end)

    it("emits by user, room, automatic rooms, filter and namespace reach exactly their sockets", function()
        need_gateway()
        local want = {
            ann1 = { main = { "for-admins", "room-user-1" }, adm = { "admin-ns", "admins-admin-ns" } },
            bob1 = { main = { "for-blue", "for-bob" } },
            zero = { main = { "for-zero" } },
            ann2 = { main = { "for-admins", "room-session", "room-user-1" } },
            bob2 = { main = { "for-bob" } },
            cat = { main = { "for-admins", "for-blue" }, adm = { "admins-admin-ns" } },
        }
        local got = {}
        for _, p in ipairs(PLAN) do
            got[p[1]] = { main = notices(p[1]) }
            if p.admin then got[p[1]].adm = notices(p[1], "adm") end
        end
        assert.same(want, got)
    end)

    it("filter_sockets_by_user and sockets_of count namespace sockets, per worker", function()
        need_gateway()
        local want = {
            -- A: ann1 (admin) on "/" and "/admin", bob1, zero;
            -- B: ann2 (admin), bob2, cat (admin) on "/" and "/admin"
            A = { all = 4, admins = 2, of = 1, nsps = { ["/"] = 3, ["/admin"] = 1 } },
            B = { all = 4, admins = 3, of = 1, nsps = { ["/"] = 3, ["/admin"] = 1 } },
        }
        local got = {}
        for name, per_pid in pairs(who) do
            local n = 0
            local sum = { all = 0, admins = 0, of = 0, nsps = {} }
            for _, w in pairs(per_pid) do
                n = n + 1
                for _, k in ipairs { "all", "admins", "of" } do sum[k] = sum[k] + w[k] end
                for nsp, c in pairs(w.nsps) do sum.nsps[nsp] = (sum.nsps[nsp] or 0) + c end
            end
            assert.equal(2, n, "node " .. name .. ": not both workers answered")
            got[name] = sum
        end
        assert.same(want, got)
    end)

    it("a logout disconnects that session's socket (io server disconnect, no reconnect) and no other", function()
        need_gateway()
        local bob2 = out.bob2
        local d = bob2.sockets.main.disconnect
        assert(d, "bob2 was not disconnected")
        assert.equal("io server disconnect", d.reason)
        local after = d.t / 1000 - t_logout
        assert(after >= 0 and after < 1.0, "disconnected " .. after .. " s after the logout")
        assert.equal(0, bob2.engine.reconnect_attempts)
        assert.equal(1, bob2.sockets.main.connects)
        for _, p in ipairs(PLAN) do
            if p[1] ~= "bob2" then
                local o = out[p[1]]
                assert.is_nil(o.sockets.main.disconnect, p[1])
                assert.is_true(o.sockets.main.connected, p[1])
                assert.equal(1, o.sockets.main.connects, p[1])
                assert.equal(0, o.engine.reconnect_attempts, p[1])
                if p.admin then assert.is_true(o.sockets.adm.connected, p[1]) end
            end
        end
    end)
end)
