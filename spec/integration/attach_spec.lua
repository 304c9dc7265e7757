-- passport.attach: a WebSocket that an existing handler made itself with
-- lua-resty-websocket's server API (spec/support/fake_resty_websocket.lua:
-- the same API over the raw request socket, not the project's socket core)
-- joins the registry.  Two gateway nodes (nginx, two workers each), one
-- redis-server with keyspace events, the real Express app for login and
-- logout, byte-level clients (ws_raw).  emit from the other node reaches
-- the handler's socket, sockets_of and filter_sockets_by_user see it, a
-- logout closes it (4401) and ends the handler, a vanished client and a
-- handler cut short leave the registry, a client that stops reading fills
-- only its own bounded queue, and misuse raises for the caller.
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local node = require "support.node_app"
local ws = require "support.ws_raw"
local socket = require "socket"
local cjson = require "cjson"

local SECRET = "attach spec secret"

local function gateway(name, redis_port)
    return nginx_server.start {
        workers = 2,
        -- a small send buffer: a client that stops reading blocks the
        -- writer after ~200 KB instead of after megabytes
        listen = "sndbuf=65536",
        http = ([[
    lua_shared_dict spec 1m;
    lua_socket_log_errors off; # the handlers' read timeouts
    init_by_lua_block {
        local passport = require "resty.passport"
        local USERS = { [0] = { "zero", "user" }, [1] = { "ann", "admin" }, [2] = { "bob", "user" } }
        NODE = %q
        ENTRIES = {} -- tag -> entry, this worker's, for the reports below
        store = passport.redis { port = %d }
        auth = passport.authorize { secret = %q, store = store,
            deserialize_user = function(id)
                local u = USERS[id]
                return u and { id = id, username = u[1], role = u[2] }
            end }
    }
    init_worker_by_lua_block {
        local passport = require "resty.passport"
        local cjson = require "cjson"
        passport.init_worker {
            store = store,
            filters = { admins = function(user) return user.role == "admin" end },
        }
        -- what this worker's registry holds (sockets_of 0, 1, 2 and the
        -- admins by filter_sockets_by_user), and each entry's queue
        ngx.timer.every(0.05, function(premature)
            if premature then return end
            local spec = ngx.shared.spec
            local n = {}
            for id = 0, 2 do n[#n + 1] = #passport.sockets_of(id) end
            n[#n + 1] = #passport.filter_sockets_by_user(function(u) return u.role == "admin" end)
            spec:set("count:" .. ngx.worker.id(), table.concat(n, ","))
            for tag, s in pairs(ENTRIES) do
                local queued = s.q_tail - s.q_head + 1
                s.max_seen = math.max(s.max_seen or 0, queued)
                -- s.writing: since when a write has been blocked
                if s.writing and ngx.now() - s.writing > 0.2 then s.blocked = true end
                spec:set("entry:" .. tag, cjson.encode { state = s.state, queued = queued,
                                                          max_seen = s.max_seen, bytes = s.q_bytes,
                                                          blocked = s.blocked or false })
            end
        end)
    }
]]):format(name, redis_port, SECRET),
        server = [[
        location = /attached {
            access_by_lua_block { auth:access() }
            content_by_lua_block {
                -- a handler written for lua-resty-websocket, as its README
                -- shows one, and the line that attaches its socket
                local passport = require "resty.passport"
                local server = require "support.fake_resty_websocket"
                local cjson = require "cjson"
                local spec = ngx.shared.spec
                local args = ngx.req.get_uri_args()
                local tag = args.tag
                local wb, err = server:new { timeout = 1000, max_payload_len = 1048576 }
                if not wb then
                    ngx.log(ngx.ERR, "failed to new websocket: ", err)
                    return ngx.exit(444)
                end
                local s = passport.attach(wb, ngx.ctx.passport, { max_queue = tonumber(args.q) })
                ENTRIES[tag] = s
                local detached = false
                wb:send_text(cjson.encode { hello = s.user.username, id = s.id, node = NODE,
                                            pid = ngx.worker.pid() })
                while true do
                    local data, typ, rerr = wb:recv_frame()
                    if not data then
                        if not string.find(rerr, "timeout", 1, true) then
                            spec:set("end:" .. tag, "error: " .. rerr)
                            if args.exit then return ngx.exit(444) end
                            return
                        end
                        -- a keepalive, as such handlers do: through the
                        -- entry while attached (a direct write could race
                        -- its writer), directly once detached.  It fails
                        -- once the socket is closed or has failed.
                        local ok, perr
                        if detached then ok, perr = wb:send_ping() else ok, perr = s:send_ping() end
                        if not ok then
                            spec:set("end:" .. tag, "ping: " .. perr)
                            return
                        end
                    elseif typ == "close" then
                        spec:set("end:" .. tag, "close " .. tostring(rerr) .. " " .. data)
                        wb:send_close(1000, "bye") -- "already closed" after ours
                        return
                    elseif typ == "ping" then
                        s:send_pong(data)
                    elseif typ == "text" then
                        if data == "mine" then
                            s:send(cjson.encode { mine = #passport.sockets_of(s.data.serialized_user) })
                        elseif data == "close-me" then
                            s:close(4000, "asked")
                        elseif data == "detach" then
                            s:detach()
                            detached = true
                            wb:send_text("detached " .. s.state)
                        else
                            s:send("echo " .. data)
                        end
                    end
                end
            }
        }
        location = /emit {
            content_by_lua_block {
                local passport = require "resty.passport"
                local a = ngx.req.get_uri_args()
                local data = a.data or string.rep("x", tonumber(a.size) or 1)
                local n, err
                for _ = 1, tonumber(a.n) or 1 do
                    if a.event then
                        n, err = passport.emit { user = tonumber(a.user), event = a.event,
                                                 args = { data, { n = 1 } } }
                    elseif a.filter then
                        n, err = passport.emit { filter = a.filter, data = data }
                    else
                        n, err = passport.emit { user = tonumber(a.user), data = data,
                                                 binary = a.binary == "1" }
                    end
                    if not n then break end
                end
                ngx.print(n or ("error: " .. tostring(err)))
            }
        }
        location = /counts {
            content_by_lua_block {
                local sum = { 0, 0, 0, 0 }
                for w = 0, ngx.worker.count() - 1 do
                    local i = 0
                    for x in (ngx.shared.spec:get("count:" .. w) or ""):gmatch("%d+") do
                        i = i + 1
                        sum[i] = sum[i] + tonumber(x)
                    end
                end
                ngx.print(table.concat(sum, ","))
            }
        }
        location = /get {
            content_by_lua_block { ngx.print(tostring(ngx.shared.spec:get(ngx.var.arg_key))) }
        }
        location = /misuse {
            access_by_lua_block { auth:access() }
            content_by_lua_block {
                local passport = require "resty.passport"
                local cjson = require "cjson"
                local data = ngx.ctx.passport
                -- an object with lua-resty-websocket's methods that notes
                -- what the writer sends
                local sent = {}
                local function object()
                    local o = {}
                    function o.send_text(_, s) sent[#sent + 1] = "text " .. s return #s + 2 end
                    function o.send_binary(_, s) sent[#sent + 1] = "binary " .. #s return #s + 2 end
                    function o.send_close(_, code, msg)
                        sent[#sent + 1] = "close " .. tostring(code) .. " " .. tostring(msg)
                        return 4
                    end
                    function o.recv_frame() return nil, nil, "not here" end
                    return o
                end
                local out = {}
                local function try(name, f)
                    local ok, err = pcall(f)
                    out[name] = ok and "no error" or err
                end
                -- (each call kept out of tail position, so that the error
                -- names this chunk's line)
                try("no object", function() local s = passport.attach(nil, data) return s end)
                try("not a websocket", function()
                    local s = passport.attach({ send_text = print }, data) return s end)
                try("no data", function() local s = passport.attach(object(), nil) return s end)
                try("bad data", function() local s = passport.attach(object(), { user = 2 }) return s end)
                local _, _, _, refused = auth:check { headers = {} }
                try("refused data", function() local s = passport.attach(object(), refused) return s end)
                try("bad option", function()
                    local s = passport.attach(object(), data, { max_queue = 0 }) return s end)
                try("unknown option", function()
                    local s = passport.attach(object(), data, { ping_interval = 1 }) return s end)
                local user = data.serialized_user
                local before = #passport.sockets_of(user)
                local o = object()
                local s = passport.attach(o, data)
                out.registered = #passport.sockets_of(user) - before
                try("twice", function() local s2 = passport.attach(o, data) return s2 end)
                try("send a number", function() s:send(1) end)
                try("bad close code", function() s:close(999) end)
                assert(s:send("one"))
                assert(s:send("\0\1", true))
                ngx.sleep(0.01)
                out.sent = table.concat(sent, "|")
                sent = {}
                s:detach()
                out.detached = { s.state, #passport.sockets_of(user) - before, select(2, s:send("late")) }
                local again = passport.attach(o, data)
                again:close(4000, "bye")
                out.close_again = again:close()
                ngx.sleep(0.01)
                out.sent_again = table.concat(sent, "|")
                ngx.timer.at(0, function()
                    local ok, err = pcall(function() local x = passport.attach(object(), data) return x end)
                    out.timer = ok and "no error" or err
                end)
                ngx.sleep(0.05)
                -- left attached: the handler returns without closing it
                out.left = passport.attach(object(), data).id
                ngx.print(cjson.encode(out))
            }
        }
]],
    }
end


local function wait_for(fn, timeout)
    local deadline = socket.gettime() + (timeout or 3)
    repeat
        local v = fn()
        if v then return v end
        socket.sleep(0.02)
    until socket.gettime() > deadline
    return nil
end

-- sockets_of(0), sockets_of(1), sockets_of(2), admins: summed over a
-- node's workers.
local function counts(gw)
    local _, body = gw:get("/counts")
    local out = {}
    for x in body:gmatch("%d+") do out[#out + 1] = tonumber(x) end
    return out
end

local function get(gw, key)
    local _, body = gw:get("/get?key=" .. key)
    if body == "nil" then return nil end
    return body
end

describe("passport.attach: a lua-resty-websocket handler's socket in the registry", function()
    local redis, app, a, b
    local cookies = {}
    local clients = {}

    -- A client of the handler on gw: the client and its greeting.
    local function open(gw, cookie, tag, query)
        local c, status = ws.connect(gw.port, "/attached?tag=" .. tag .. (query or ""), { Cookie = cookie })
        assert(c, "no upgrade: " .. tostring(status))
        clients[#clients + 1] = c
        local f = assert(c:read_frame(2))
        return c, cjson.decode(f.payload)
    end

    -- The next data frame (the handlers' keepalive pings skipped).
    local function text(c, timeout)
        local deadline = socket.gettime() + (timeout or 2)
        while true do
            local f, err = c:read_frame(math.max(deadline - socket.gettime(), 0.001))
            if not f then return nil, err end
            if f.opcode ~= 0x9 then return f.payload, f.opcode end
        end
    end

    setup(function()
        redis = redis_server.start { config = { "notify-keyspace-events Kgx$" } }
        app = node.start_app { REDIS_PORT = redis.port, SECRET = SECRET }
        a = gateway("A", redis.port)
        b = gateway("B", redis.port)
        a:wait_subscribers(4)
        cookies.ann = node.login(app.port, "ann", "pw1")
        cookies.bob = node.login(app.port, "bob", "pw2")
        cookies.zero = node.login(app.port, "zero", "pw0")
    end)

    teardown(function()
        for _, c in ipairs(clients) do c:close() end
        for _, gw in ipairs { a, b } do
            if gw then
                gw:assert_clean_log()
                assert.is_nil(gw:error_log():match("exited on signal"))
                gw:stop()
            end
        end
        if app then app:stop() end
        if redis then redis:stop() end
    end)

    local bob1, ann1

    it("receives emit published on the other node: text, binary, events; other users do not", function()
        local hello
        bob1, hello = open(a, cookies.bob, "bob1")
        assert.same({ "bob", "A" }, { hello.hello, hello.node })
        ann1 = open(a, cookies.ann, "ann1")
        local _, n = b:get("/emit?user=2&data=for-bob")
        assert.equal("4", n) -- every worker of both nodes got it
        assert.same({ "for-bob", 0x1 }, { text(bob1) })
        b:get("/emit?user=2&data=raw&binary=1")
        assert.same({ "raw", 0x2 }, { text(bob1) })
        b:get("/emit?user=2&event=notice&data=x")
        assert.same({ '["notice","x",{"n":1}]', 0x1 }, { text(bob1) })
        local _, err = text(ann1, 0.3)
        assert.equal("timeout", err)
        -- a named filter reaches it too
        a:get("/emit?filter=admins&data=admins-only")
        assert.equal("admins-only", (text(ann1)))
        _, err = text(bob1, 0.2)
        assert.equal("timeout", err)
        -- the handler's own loop goes on: its replies go through the queue
        bob1:send_frame("text", "hi")
        assert.equal("echo hi", (text(bob1)))
    end)

    it("is seen by sockets_of and filter_sockets_by_user on its worker", function()
        assert(wait_for(function() return counts(a)[3] == 1 end), "sockets_of(2)")
        assert.same({ 0, 1, 1, 1 }, counts(a))
        assert.same({ 0, 0, 0, 0 }, counts(b))
        bob1:send_frame("text", "mine")
        assert.same({ mine = 1 }, cjson.decode((text(bob1))))
    end)

    it("is closed by a logout in the Express app (4401), and the handler's loop ends", function()
        local status = node.request(app.port, "POST", "/logout", { headers = { cookie = cookies.bob } })
        assert.equal(200, status)
        local code, reason = bob1:read_close(3)
        assert.same({ 4401, "session ended" }, { code, reason })
        -- out of the registry as soon as it is closed
        assert(wait_for(function() return counts(a)[3] == 0 end, 1), "still in sockets_of")
        -- the client answers; the handler sees it, returns, and its request
        -- ends (the writer ended after the close frame)
        bob1:send_close(4401)
        assert.is_true(bob1:wait_eof(2))
        assert.equal("close 4401 ", get(a, "end:bob1"))
        assert.same({ 0, 1, 0, 1 }, counts(a))
    end)

    it("ends with a close from the client or from s:close(), and can be detached", function()
        -- the client closes: the handler answers itself and returns; the
        -- writer sees its handler gone within a second
        local z = open(a, cookies.zero, "zero1")
        assert(wait_for(function() return counts(a)[1] == 1 end, 1))
        z:send_close(1000, "done")
        local code, reason = z:read_close(2)
        assert.same({ 1000, "bye" }, { code, reason })
        local t0 = socket.gettime()
        assert.is_true(z:wait_eof(2.5))
        assert.is_true(socket.gettime() - t0 < 1.6)
        assert.equal("close 1000 done", get(a, "end:zero1"))
        assert(wait_for(function() return counts(a)[1] == 0 end, 1))
        -- the handler closes through the entry
        z = open(a, cookies.zero, "zero2")
        z:send_frame("text", "close-me")
        code, reason = z:read_close(2)
        assert.same({ 4000, "asked" }, { code, reason })
        assert(wait_for(function() return counts(a)[1] == 0 end, 1))
        z:send_close(4000)
        assert.is_true(z:wait_eof(2))
        -- detached: the handler keeps the socket, emit no longer reaches it
        z = open(a, cookies.zero, "zero3")
        z:send_frame("text", "detach")
        assert.equal("detached closed", (text(z)))
        assert(wait_for(function() return counts(a)[1] == 0 end, 1))
        b:get("/emit?user=0&data=gone")
        local _, err = text(z, 0.3)
        assert.equal("timeout", err)
        z:send_frame("text", "still there")
        assert.is_nil(text(z, 0.3)) -- s:send on a detached entry: nothing
        z:send_close(1000)
        code, reason = z:read_close(2)
        assert.same({ 1000, "bye" }, { code, reason })
    end)

    it("leaves the registry when its client vanishes, whether the handler returns or exits", function()
        local base = counts(a)[2]
        local v1 = open(a, cookies.ann, "vanish1")
        local v2 = open(a, cookies.ann, "vanish2", "&exit=1")
        assert(wait_for(function() return counts(a)[2] == base + 2 end, 1))
        v1:close()
        v2:close()
        -- the handler that returns: its writer sees it; the one that calls
        -- ngx.exit(444) has its writer killed: the sweep sees that
        assert(wait_for(function() return counts(a)[2] == base end, 2.5), "still registered")
        assert.matches("^error: .*closed", get(a, "end:vanish1"))
        assert.matches("^error: .*closed", get(a, "end:vanish2"))
        -- and the others still receive
        b:get("/emit?user=1&data=after-vanish")
        assert.equal("after-vanish", (text(ann1)))
        a:assert_clean_log()
    end)

    it("a client that stops reading fills only its own bounded queue, and is closed", function()
        local zero = node.login(app.port, "zero", "pw0")
        -- max_queue 8; the client never reads
        open(a, zero, "slow", "&q=8")
        assert(wait_for(function() return counts(a)[1] == 1 end, 1))
        -- one emit at a time from the other node, so that the queue fills
        -- because the writer is stuck, not because of a burst
        local emits, slowest = 0, 0
        local entry
        repeat
            local t0 = socket.gettime()
            local _, n = b:get("/emit?user=0&size=100000")
            slowest = math.max(slowest, socket.gettime() - t0)
            assert.equal("4", n)
            emits = emits + 1
            socket.sleep(0.06)
            entry = cjson.decode(get(a, "entry:slow") or "{}")
        until entry.state ~= "open" or emits == 60
        assert.is_true(slowest < 0.5, "an emit took " .. slowest .. " s")
        assert.is_true(entry.blocked, "the writer never blocked")
        assert.is_true(emits > 8, "closed after " .. emits .. " emits")
        -- the overflow closed it (1008): out of the registry, queue bounded
        assert.is_true(entry.state ~= "open", "still open after " .. emits .. " emits")
        assert.is_true(entry.max_seen <= 8, "queued " .. entry.max_seen)
        assert(wait_for(function() return counts(a)[1] == 0 end, 1), "still registered")
        -- delivery goes on for everyone else meanwhile
        local t0 = socket.gettime()
        b:get("/emit?user=1&data=not-held-up")
        assert.equal("not-held-up", (text(ann1, 1)))
        assert.is_true(socket.gettime() - t0 < 1)
        -- the handler's keepalive finds the entry closed and its loop ends;
        -- the blocked write times out (the object's 1 s timeout)
        local ended = wait_for(function() return get(a, "end:slow") end, 4)
        assert(ended, "the handler did not end")
        assert.equal("ping: closed", ended)
        -- and the writer has ended with it, the entry emptied
        assert(wait_for(function()
            entry = cjson.decode(get(a, "entry:slow"))
            return entry.state == "closed"
        end, 2), "the entry is " .. tostring(entry.state))
        assert.same({ 0, 0 }, { entry.queued, entry.bytes })
    end)

    it("raises on misuse, for the caller; a handler that returns without closing ends its request", function()
        local before = counts(a)[1]
        local t0 = socket.gettime()
        local status, body = a:get("/misuse", { Cookie = cookies.zero })
        local took = socket.gettime() - t0
        assert.equal(200, status)
        local out = cjson.decode(body)
        local at = "^content_by_lua%(nginx%.conf:%d+%):%d+: "
        assert.matches(at .. "bad argument #1 to 'attach' %(a resty.websocket.server object expected, got nil%)",
                       out["no object"])
        assert.matches(at .. "bad argument #1 to 'attach' %(.*no send_binary method%)", out["not a websocket"])
        assert.matches(at .. "bad argument #2 to 'attach' %(authorize's data expected: ngx.ctx.passport",
                       out["no data"])
        assert.matches(at .. "bad argument #2 to 'attach' %(authorize's data expected", out["bad data"])
        assert.matches(at .. "bad argument #2 to 'attach' %(the data of a refused handshake%)",
                       out["refused data"])
        assert.matches(at .. "bad option 'max_queue' to 'attach' %(positive number expected%)", out["bad option"])
        assert.matches(at .. "bad argument #3 to 'attach' %(unknown option 'ping_interval'%)",
                       out["unknown option"])
        assert.matches(at .. "bad argument #1 to 'attach' %(attached already", out.twice)
        assert.matches(at .. "bad argument #1 to 'send' %(string expected, got number%)", out["send a number"])
        assert.matches(at .. "bad argument #1 to 'close' %(valid close code expected%)", out["bad close code"])
        assert.matches("passport.attach must be called in the request that made the WebSocket, not in timer",
                       out.timer)
        assert.equal(1, out.registered)
        -- the writer, in the handler's request, sent what was queued
        assert.equal("text one|binary 2", out.sent)
        assert.same({ "closed", 0, "closed" }, out.detached)
        assert.equal("close 4000 bye", out.sent_again)
        assert.is_false(out.close_again)
        -- one entry was left attached: the writer saw the handler return
        -- (within its one-second look) and the request ended
        assert.is_true(took > 0.5 and took < 2.5, "the request took " .. took .. " s")
        assert(wait_for(function() return counts(a)[1] == before end, 1))
    end)
end)
