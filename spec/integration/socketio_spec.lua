-- The gateway's socket.io mode (passport.socketio: Engine.IO v4 over
-- WebSocket + Socket.IO v5) against the reference it must agree with: a
-- Node socket.io 4.8 server authorizing with the real npm passport.socketio
-- over connect-redis sessions (spec/support/app/sio_reference.js), running
-- the same test application as the gateway (spec/support/sio_app.lua).
--
-- Every case runs the same client scenario against both servers -- a real
-- socket.io-client 4.8 (spec/support/app/sio_client.js) or a byte-level
-- client (spec/support/ws_raw.lua) -- checks the reference's outcome, then
-- requires the gateway's to be the same.  One real redis-server holds the
-- sessions for both; the gateway runs 2 workers.  Heartbeats are short
-- (pingInterval 300 ms, pingTimeout 200 ms), connectTimeout is 1 s and the
-- default ack timeout 700 ms, in both servers (SETTINGS in
-- spec/support/sio_specs.lua, whose helpers these specs share).
--
-- When the gateway cannot serve socket.io (no resty.passport.socketio yet),
-- the reference half of each case still runs and is checked, and then the
-- case fails with the reason: nothing is skipped.
local redis_server = require "support.redis_server"
local ws = require "support.ws_raw"
local sio = require "support.sio_specs"
local cookie = require "resty.passport.cookie"
local socket = require "socket"
local cjson = require "cjson"

local SECRET = "socketio spec secret"
local EIO_PATH = "/socket.io/?EIO=4&transport=websocket"

---------------------------------------------------------------------------
-- Helpers: raw clients (the rest is spec/support/sio_specs.lua's).

local http_get, next_frame, parse, shape = sio.http_get, sio.next_frame, sio.parse, sio.shape

-- A WebSocket upgrade request whose answer is read raw.  A "101"
-- followed in-band by an HTTP response counts as that response: engine.io
-- checks EIO only after ws has completed the upgrade, so for EIO=3, EIO=5
-- or no EIO it writes "HTTP/1.1 400 Bad Request ... Unsupported protocol
-- version" into the upgraded stream and drops the connection; a plain 400
-- before upgrading is the same refusal.  Returns status, body, headers
-- (lower-case names).
local function upgrade_raw(port, path)
    local c = socket.tcp()
    c:settimeout(3)
    assert(c:connect("127.0.0.1", port))
    c:send("GET " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           .. "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
           .. "Sec-WebSocket-Key: " .. ws.key() .. "\r\n\r\n")
    local function head()
        local line = c:receive("*l")
        if not line then return nil end
        local h = {}
        while true do
            local l = c:receive("*l")
            if not l or l == "" then break end
            local k, v = l:match("^([^:]+):%s*(.*)$")
            if k then h[k:lower()] = v end
        end
        return tonumber(line:match("^HTTP/%d%.%d (%d+)")), h
    end
    local status, h = head()
    if status == 101 then
        c:settimeout(1)
        local s2, h2 = head()
        if s2 then status, h = s2, h2 end
    end
    local n = h and tonumber(h["content-length"] or "")
    local body = n and c:receive(n) or ""
    c:close()
    return status, body, h or {}
end

-- How raw connections end, watched together: for each, "close <code>" (a
-- close frame; code nil for an empty payload) or "eof", and after how many
-- seconds (from the call); "open" when it did not within timeout.  Pings
-- are answered meanwhile; data is skipped.
local function endings(conns, timeout)
    local t0 = socket.gettime()
    local how, after, left = {}, {}, #conns
    while left > 0 and socket.gettime() - t0 < timeout do
        for i, c in ipairs(conns) do
            if not how[i] then
                local f, err = next_frame(c, 0.01)
                if not f and err ~= "timeout" then
                    how[i] = err == "closed" and "eof" or err
                    after[i] = socket.gettime() - t0
                    left = left - 1
                end
            end
        end
    end
    for i = 1, #conns do
        if not how[i] then how[i], after[i] = "open", socket.gettime() - t0 end
    end
    return how, after
end

---------------------------------------------------------------------------

describe("socket.io: the gateway agrees with socket.io 4.8 + passport.socketio", function()
    local redis, ref, gw, gw_err
    local cookies = {}
    local servers = {}

    local cmp = sio.comparison(servers)
    local need_gateway, both, agree, on_both = cmp.need_gateway, cmp.both, cmp.agree, cmp.on_both
    local events, server_log, scenario, tag = sio.events, sio.server_log, sio.scenario, sio.tag

    local function ck(name)
        return cookies[name]
    end

    setup(function()
        redis = redis_server.start {}
        local seeds = { ann = "1", bob = "2", zero = "0", cat = "3", ghost = "99" }
        for name, user in pairs(seeds) do
            assert(redis:seed_connect_redis("sid-" .. name, user))
            cookies[name] = "connect.sid=" .. cookie.sign("sid-" .. name, SECRET)
        end
        -- an anonymous session (passport >= 0.6 leaves no "passport" key)
        -- and one whose passport has no user
        local rec = '{"cookie":{"originalMaxAge":3600000,"expires":"2099-01-01T00:00:00.000Z",'
                    .. '"httpOnly":true,"path":"/"}%s}'
        redis:call("SET", "sess:sid-anon", rec:format(""), "EX", "3600")
        redis:call("SET", "sess:sid-nouser", rec:format(',"passport":{}'), "EX", "3600")
        cookies.anon = "connect.sid=" .. cookie.sign("sid-anon", SECRET)
        cookies.nouser = "connect.sid=" .. cookie.sign("sid-nouser", SECRET)
        cookies.tampered = cookies.ann:sub(1, -3) .. (cookies.ann:sub(-2, -2) == "A" and "B" or "A")
                           .. cookies.ann:sub(-1)
        cookies.unsigned = "connect.sid=sid-ann"
        cookies.other_secret = "connect.sid=" .. cookie.sign("sid-ann", "not the secret")

        ref = sio.start_reference(redis.port, { SECRET = SECRET })
        gw, gw_err = sio.start_gateway(redis.port, { SECRET = SECRET }, { workers = 2 })
        cmp.set(ref, gw, gw_err)
    end)

    teardown(function()
        if gw then sio.stop_gateway(gw, not gw_err) end
        if ref then ref.stop() end
        if redis then redis:stop() end
    end)

    -----------------------------------------------------------------------
    describe("handshake and authorization", function()
        it("a valid cookie connects and the user is greeted, id 0 included", function()
            local ref_out, gw_out = both(function(srv)
                return {
                    scenario(srv, { cookie = ck("ann"), steps = {
                        { op = "open", auth = { tag = "greet", list = { 1, "a", true } } } } }),
                    scenario(srv, { cookie = ck("zero"), steps = { { op = "open" } } }),
                }
            end)
            local hello = events(ref_out[1], "main", "hello")
            assert.equal(1, #hello)
            assert.same({ { user = { id = 1, username = "ann", role = "admin", logged_in = true },
                            nsp = "/", auth = { tag = "greet", list = { 1, "a", true } } } },
                        hello[1].args)
            assert.is_true(ref_out[1].sockets.main.connected)
            assert.same({ id = 0, username = "zero", role = "user", logged_in = true },
                        events(ref_out[2], "main", "hello")[1].args[1].user)
            agree(ref_out, gw_out)
        end)

        it("refusals are CONNECT_ERROR with passport.socketio's messages", function()
            local cases = {
                { nil, nil, "No session found" },
                { "tampered", nil, "No session found" },
                { "unsigned", nil, "No session found" },
                { "other_secret", nil, "No session found" },
                { "anon", nil, "Passport was not initialized" },
                { "nouser", nil, "User not authorized through passport. (User Property not found)" },
                { "ghost", nil, "User not found" },
                { "ann", "http://evil.example", "Origin not allowed" },
                { "ann", "HTTP://GOOD.example", nil },
            }
            local ref_out, gw_out = both(function(srv)
                local l = {}
                for i, c in ipairs(cases) do
                    l[i] = scenario(srv, { cookie = c[1] and ck(c[1]) or nil, origin = c[2],
                                           steps = { { op = "open" } } })
                end
                return l
            end)
            for i, c in ipairs(cases) do
                local s = ref_out[i].sockets.main
                if c[3] then
                    assert.same({ message = c[3] }, s.connect_error, c[1])
                    assert.is_false(s.connected)
                    assert.equal(0, #s.events)
                else
                    assert.is_nil(s.connect_error)
                    assert.equal(1, #events(ref_out[i], "main", "hello"))
                end
            end
            agree(ref_out, gw_out)
        end)
    end)

    -----------------------------------------------------------------------
    describe("events and acks", function()
        it("go both ways, with binary arguments and binary acks", function()
            local BIN = { ["$bin"] = "AAEC/w==" } -- 00 01 02 ff
            local t = tag("ev")
            local ref_out, gw_out = both(function(srv)
                return scenario(srv, { cookie = ck("ann"), steps = {
                    { op = "open", auth = { tag = t } },
                    { op = "emit", event = "echo", args = { 1, "two", { three = { 3 } } }, ack = true },
                    { op = "emit", event = "echo", args = { "x", BIN, { deep = { BIN, { ["$bin"] = "" } } } },
                      ack = true },
                    { op = "emit", event = "echo", args = { "no ack", BIN } },
                    { op = "wait", event = "echo" },
                    { op = "emit", event = "binary" },
                    { op = "wait", event = "bin" },
                    -- the server asks, the client answers (with a binary)
                    { op = "answer", event = "question", reply = { "yes", BIN } },
                    { op = "emit", event = "ask", args = { { args = { 7, "q" }, timeout = 1000 } } },
                    { op = "wait", event = "answer" },
                } })
            end)
            local r = ref_out[1]
            assert.same({ 1, "two", { three = { 3 } } }, r.steps[2].ack)
            assert.same({ "x", BIN, { deep = { BIN, { ["$bin"] = "" } } } }, r.steps[3].ack)
            assert.same({ "no ack", BIN }, events(r, "main", "echo")[1].args)
            assert.same({ BIN, { nested = { ["$bin"] = "aMOpbGxv" }, empty = { ["$bin"] = "" } } },
                        events(r, "main", "bin")[1].args)
            local question = events(r, "main", "question")[1]
            assert.same({ 7, "q" }, question.args)
            assert.is_true(question.ack)
            assert.same({ "ok", "yes", BIN }, events(r, "main", "answer")[1].args)
            agree(ref_out, gw_out)
        end)

        it("a server emit_with_ack the client does not answer times out", function()
            local t = tag("ack")
            local tags = { ref = t, gw = t }
            local ref_out, gw_out = both(function(srv)
                return scenario(srv, { cookie = ck("ann"), steps = {
                    { op = "open", auth = { tag = tags[srv.name] } },
                    { op = "emit", event = "ask", args = { { args = { 1 }, timeout = 300 } } },
                    { op = "wait", event = "answer", timeout = 2000 },
                    -- no timeout given: the io's default (ack_timeout 700 ms)
                    { op = "emit", event = "ask", args = { { args = { 2 } } } },
                    { op = "wait", event = "answer", count = 2, timeout = 3000 },
                } })
            end)
            local function check(out)
                local q = events(out, "main", "question")
                local a = events(out, "main", "answer")
                assert.equal(2, #a)
                assert.same({ "operation has timed out" }, a[1].args)
                assert.same({ "operation has timed out" }, a[2].args)
                local d1, d2 = a[1].at - q[1].at, a[2].at - q[2].at
                assert(d1 >= 250 and d1 < 600, "first timed out after " .. d1 .. " ms, not 300")
                assert(d2 >= 600 and d2 < 1000, "second timed out after " .. d2 .. " ms, not 700")
            end
            check(ref_out[1])
            local want = { "connect /", "ack / operation has timed out", "ack / operation has timed out",
                           "disconnect / client namespace disconnect" }
            assert.same(want, server_log(servers.ref, tags.ref, 4))
            need_gateway()
            check(gw_out[1])
            agree(ref_out, gw_out)
            assert.same(want, server_log(servers.gw, tags.gw, 4))
        end)

        it("a pending server ack of a client that leaves ends as the reference's does", function()
            -- socket.io 4.8's server does not fail pending acks on disconnect:
            -- the timer runs out and the callback gets "operation has timed out".
            local t = tag("gone")
            local tags = { ref = t, gw = t }
            local ref_out, gw_out = both(function(srv)
                return scenario(srv, { cookie = ck("ann"), steps = {
                    { op = "open", auth = { tag = tags[srv.name] } },
                    { op = "emit", event = "ask", args = { { args = { 1 }, timeout = 400 } } },
                    { op = "wait", event = "question" },
                    { op = "disconnect" },
                } })
            end)
            assert.equal("io client disconnect", ref_out[1].sockets.main.disconnect.reason)
            local want = { "connect /", "disconnect / client namespace disconnect",
                           "ack / operation has timed out" }
            assert.same(want, server_log(servers.ref, tags.ref, 3))
            agree(ref_out, gw_out)
            assert.same(want, server_log(servers.gw, tags.gw, 3))
        end)
    end)

    -----------------------------------------------------------------------
    describe("namespaces", function()
        it("/ and /admin share one connection; /admin is for admins only", function()
            local ref_out, gw_out = both(function(srv)
                return {
                    -- an admin gets both
                    scenario(srv, { cookie = ck("ann"), steps = {
                        { op = "open" },
                        { op = "open", s = "adm", nsp = "/admin", auth = { k = "v" } },
                        { op = "emit", s = "adm", event = "echo", args = { "in admin" }, ack = true },
                        { op = "emit", event = "echo", args = { "in main" }, ack = true },
                    } }),
                    -- a plain user: refused on /admin, still connected on /
                    scenario(srv, { cookie = ck("bob"), steps = {
                        { op = "open" },
                        { op = "open", s = "adm", nsp = "/admin" },
                        { op = "emit", event = "echo", args = { "still here" }, ack = true },
                    } }),
                    -- the plain middleware after the policy
                    scenario(srv, { cookie = ck("ann"), steps = {
                        { op = "open" },
                        { op = "open", s = "adm", nsp = "/admin", auth = { block = true } },
                        { op = "emit", event = "echo", args = { 1 }, ack = true },
                    } }),
                    -- /admin alone, no "/" at all
                    scenario(srv, { cookie = ck("cat"), steps = { { op = "open", s = "adm", nsp = "/admin" } } }),
                    scenario(srv, { cookie = ck("bob"), steps = { { op = "open", s = "adm", nsp = "/admin" } } }),
                    scenario(srv, { steps = { { op = "open", s = "adm", nsp = "/admin" } } }),
                }
            end)
            local ann, bob, blocked, cat, bob_only, anon = unpack(ref_out)
            assert.equal("/admin", events(ann, "adm", "hello")[1].args[1].nsp)
            assert.same({ k = "v" }, events(ann, "adm", "hello")[1].args[1].auth)
            assert.same({ "in admin" }, ann.steps[3].ack)
            assert.same({ "in main" }, ann.steps[4].ack)
            assert.same({ message = "forbidden" }, bob.sockets.adm.connect_error)
            assert.same({ "still here" }, bob.steps[3].ack)
            assert.is_nil(bob.sockets.main.disconnect)
            assert.same({ message = "blocked" }, blocked.sockets.adm.connect_error)
            assert.same({ 1 }, blocked.steps[3].ack)
            assert.equal("cat", events(cat, "adm", "hello")[1].args[1].user.username)
            assert.same({ message = "forbidden" }, bob_only.sockets.adm.connect_error)
            assert.same({ message = "No session found" }, anon.sockets.adm.connect_error)
            agree(ref_out, gw_out)
        end)

        it("an unknown namespace is refused with \"Invalid namespace\"", function()
            local ref_out, gw_out = both(function(srv)
                return {
                    scenario(srv, { cookie = ck("ann"), steps = { { op = "open", s = "x", nsp = "/nope" } } }),
                    scenario(srv, { cookie = ck("ann"), steps = {
                        { op = "open" },
                        { op = "open", s = "x", nsp = "/nope" },
                        { op = "emit", event = "echo", args = { "alive" }, ack = true },
                    } }),
                }
            end)
            assert.same({ message = "Invalid namespace" }, ref_out[1].sockets.x.connect_error)
            assert.same({ message = "Invalid namespace" }, ref_out[2].sockets.x.connect_error)
            assert.same({ "alive" }, ref_out[2].steps[3].ack)
            agree(ref_out, gw_out)
        end)

        it("server disconnect: one namespace, or the whole connection", function()
            local t = { tag("bye"), tag("byeall") }
            local tags = { ref = t, gw = t }
            local ref_out, gw_out = both(function(srv)
                return {
                    scenario(srv, { cookie = ck("ann"), steps = {
                        { op = "open", auth = { tag = tags[srv.name][1] } },
                        { op = "open", s = "adm", nsp = "/admin" },
                        { op = "emit", event = "bye" },
                        { op = "wait", event = "disconnect" },
                        { op = "emit", s = "adm", event = "echo", args = { "adm lives" }, ack = true },
                    } }),
                    scenario(srv, { cookie = ck("ann"), steps = {
                        { op = "open", auth = { tag = tags[srv.name][2] } },
                        { op = "open", s = "adm", nsp = "/admin", auth = { tag = tags[srv.name][2] } },
                        { op = "emit", s = "adm", event = "bye-all" },
                        { op = "wait", event = "disconnect" },
                        { op = "wait", s = "adm", event = "disconnect" },
                        { op = "wait", event = "close" },
                    } }),
                }
            end)
            local one, all = ref_out[1], ref_out[2]
            assert.equal("io server disconnect", one.sockets.main.disconnect.reason)
            assert.is_nil(one.sockets.adm.disconnect) -- /admin lives on
            assert.same({ "adm lives" }, one.steps[5].ack)
            assert.equal("io server disconnect", all.sockets.main.disconnect.reason)
            assert.equal("io server disconnect", all.sockets.adm.disconnect.reason)
            assert.same({ "connect /", "disconnect / server namespace disconnect" },
                        server_log(servers.ref, tags.ref[1], 2))
            local log2 = server_log(servers.ref, tags.ref[2], 4)
            table.sort(log2)
            assert.same({ "connect /", "connect /admin", "disconnect / server namespace disconnect",
                          "disconnect /admin server namespace disconnect" }, log2)
            agree(ref_out, gw_out)
            for i = 1, 2 do
                local n = i == 1 and 2 or 4
                local a, b = server_log(servers.ref, tags.ref[i], n), server_log(servers.gw, tags.gw[i], n)
                table.sort(a)
                table.sort(b)
                assert.same(a, b)
            end
        end)
    end)

    -----------------------------------------------------------------------
    describe("heartbeat and timeouts", function()
        it("ping/pong keeps an idle client connected; one that stops answering is dropped", function()
            local t = tag("ping")
            local tags = { ref = t, gw = t }
            local ref_out, gw_out = both(function(srv)
                return {
                    scenario(srv, { cookie = ck("ann"), steps = {
                        { op = "open" },
                        { op = "sleep", ms = 1600 }, -- 8 pingTimeouts
                        { op = "emit", event = "echo", args = { "awake" }, ack = true },
                    } }),
                    scenario(srv, { cookie = ck("bob"), steps = {
                        { op = "open", auth = { tag = tags[srv.name] } },
                        { op = "sleep", ms = 400 },
                        { op = "stop_pong" },
                        { op = "wait", event = "disconnect", timeout = 3000 },
                    } }),
                }
            end)
            local function check(idle, mute)
                assert.is_nil(idle.sockets.main.disconnect)
                assert.same({ "awake" }, idle.steps[3].ack)
                assert(idle.engine.pings >= 4, "only " .. idle.engine.pings .. " pings in 1.6 s")
                local d = mute.sockets.main.disconnect
                assert(d, "the mute client was not dropped")
                assert.equal("transport close", d.reason)
                local after = d.at - mute.steps[3].at
                assert(after > 150 and after < 1000, "dropped " .. after .. " ms after the last pong")
                return after
            end
            local ref_after = check(ref_out[1], ref_out[2])
            assert.same({ "connect /", "disconnect / ping timeout" }, server_log(servers.ref, tags.ref, 2))
            need_gateway()
            local gw_after = check(gw_out[1], gw_out[2])
            assert(math.abs(ref_after - gw_after) < 350,
                   ("dropped after %d ms (gateway) vs %d ms (reference)"):format(gw_after, ref_after))
            agree(ref_out, gw_out)
            assert.same(server_log(servers.ref, tags.ref, 2), server_log(servers.gw, tags.gw, 2))
        end)

        it("connectTimeout closes a connection that never sends CONNECT", function()
            local conns = {}
            for _, which in ipairs { "ref", "gw" } do
                local srv = servers[which]
                if srv then
                    local c, status = ws.connect(srv.port, EIO_PATH, { Cookie = ck("ann") })
                    assert(c, which .. " handshake: " .. tostring(status))
                    local open = assert(next_frame(c, 2))
                    assert.equal("0", open.payload:sub(1, 1))
                    conns[#conns + 1] = c
                end
            end
            local how, after = endings(conns, 3)
            for _, c in ipairs(conns) do c:close() end
            assert.equal("close nil", how[1]) -- a close frame without a status code
            assert(after[1] > 0.8 and after[1] < 1.5, "closed after " .. after[1] .. " s")
            need_gateway()
            assert.equal(how[1], how[2])
            assert(after[2] > 0.8 and after[2] < 1.5, "gateway closed after " .. after[2] .. " s")
        end)
    end)

    -----------------------------------------------------------------------
    describe("on the wire (a raw client)", function()
        -- A raw client: the upgrade, the open packet; then "40<auth>" for
        -- each namespace given, and their answers (CONNECT + hello).
        local function raw(srv, who, headers)
            local h = { Cookie = who and ck(who) or nil }
            for k, v in pairs(headers or {}) do h[k] = v end
            local c, status = ws.connect(srv.port, EIO_PATH, h)
            assert(c, "handshake with " .. srv.name .. ": " .. tostring(status))
            local open = assert(next_frame(c, 2))
            return c, open.payload
        end

        -- Sends each packet (a string: a text frame; { bin = s }: a binary
        -- frame) and returns the parsed packets that came back, with how the
        -- connection ended ("open" when it did not).  It returns once n
        -- packets came (and 30 ms more passed without another), or the
        -- connection ended, or after wait seconds (default 2 with n, else 0.3).
        local function exchange(c, packets, n, wait)
            for _, p in ipairs(packets) do
                if type(p) == "table" then c:send_frame("binary", p.bin) else c:send_frame("text", p) end
            end
            local got = {}
            local deadline = socket.gettime() + (wait or (n and 2 or 0.3))
            while true do
                local left = deadline - socket.gettime()
                if n and #got >= n then left = math.min(left, 0.03) end
                local f, err = next_frame(c, math.max(left, 0.001))
                if not f then
                    return got, err == "timeout" and "open" or (err == "closed" and "eof" or err)
                end
                if f.opcode == 2 then
                    got[#got + 1] = { binary = f.payload }
                else
                    got[#got + 1] = shape(parse(f.payload))
                end
            end
        end

        it("the open packet", function()
            on_both(function(srv)
                local c, open = raw(srv, "ann")
                c:close()
                assert.equal("0", open:sub(1, 1))
                local o = cjson.decode(open:sub(2))
                assert.is_string(o.sid)
                assert(#o.sid > 0)
                assert.truthy(open:find('"upgrades":[]', 1, true), open)
                local keys = {}
                for k in pairs(o) do keys[#keys + 1] = k end
                table.sort(keys)
                assert.same({ "maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades" }, keys)
                assert.same({ 300, 200, 1000000 }, { o.pingInterval, o.pingTimeout, o.maxPayload })
                return keys
            end)
        end)

        it("CONNECT, CONNECT_ERROR, EVENT, ACK and binary packets", function()
            on_both(function(srv)
                local out = {}
                local c = raw(srv, "ann")
                out.connect = exchange(c, { "40", "40/admin," }, 4)
                out.event = exchange(c, { '42["echo",1,"a"]', '4212["echo",{"x":null}]',
                                          '42/admin,7["echo","adm"]' }, 3)
                out.binary_ack = exchange(c, { '451-3["echo",{"_placeholder":true,"num":0}]', { bin = "\1\2\3" } }, 2)
                out.binary_event = exchange(c, { '451-["echo",{"_placeholder":true,"num":0}]', { bin = "\255" } }, 2)
                out.question = exchange(c, { '42["ask",{"args":[5],"timeout":5000}]' }, 1)
                -- an ACK with an id nothing waits for is ignored
                out.answered = exchange(c, { '43999999["never matched"]' }, nil, 0.1)
                out.ended = select(2, exchange(c, {}, nil, 0.1))
                c:close()

                c = raw(srv, nil)
                out.refused = exchange(c, { '40{"a":1}' }, 1)
                c:close()
                c = raw(srv, "bob")
                out.admin_refused, out.admin_end = exchange(c, { "40/admin,", "40" }, 3)
                c:close()
                c = raw(srv, "ann")
                out.nope = exchange(c, { "40/nope," }, 1)
                c:close()

                local hello = { eio = "4", type = 2, nsp = "/", data = { "hello", {
                    user = { id = 1, username = "ann", role = "admin", logged_in = true }, nsp = "/", auth = {} } } }
                local admin_hello = { eio = "4", type = 2, nsp = "/admin", data = { "hello", {
                    user = { id = 1, username = "ann", role = "admin", logged_in = true },
                    nsp = "/admin", auth = {} } } }
                assert.same({ { eio = "4", type = 0, nsp = "/", data = { sid = "string" } }, hello,
                              { eio = "4", type = 0, nsp = "/admin", data = { sid = "string" } }, admin_hello },
                            out.connect)
                assert.same({ { eio = "4", type = 2, nsp = "/", data = { "echo", 1, "a" } },
                              { eio = "4", type = 3, nsp = "/", id = "number", data = { {} } },
                              { eio = "4", type = 3, nsp = "/admin", id = "number", data = { "adm" } } },
                            out.event)
                assert.same({ { eio = "4", type = 6, att = 1, nsp = "/", id = "number",
                                data = { { _placeholder = true, num = 0 } } }, { binary = "\1\2\3" } },
                            out.binary_ack)
                assert.same({ { eio = "4", type = 5, att = 1, nsp = "/",
                                data = { "echo", { _placeholder = true, num = 0 } } }, { binary = "\255" } },
                            out.binary_event)
                assert.same({ { eio = "4", type = 2, nsp = "/", id = "number", data = { "question", 5 } } },
                            out.question)
                assert.same({}, out.answered)
                assert.equal("open", out.ended)
                assert.same({ { eio = "4", type = 4, nsp = "/", data = { message = "No session found" } } },
                            out.refused)
                assert.same({ eio = "4", type = 4, nsp = "/admin", data = { message = "forbidden" } },
                            out.admin_refused[1])
                assert.same({ eio = "4", type = 0, nsp = "/", data = { sid = "string" } }, out.admin_refused[2])
                assert.equal("open", out.admin_end)
                assert.same({ { eio = "4", type = 4, nsp = "/nope", data = { message = "Invalid namespace" } } },
                            out.nope)
                return out
            end)
        end)

        it("the exact bytes of the acks and refusals", function()
            on_both(function(srv)
                local c = raw(srv, "ann")
                exchange(c, { "40" }, 2)
                c:send_frame("text", '4212["echo",1,"a"]')
                local ack = assert(next_frame(c, 2)).payload
                c:send_frame("text", '451-3["echo",{"_placeholder":true,"num":0}]')
                c:send_frame("binary", "\0")
                local back = assert(next_frame(c, 2)).payload
                local attachment = assert(next_frame(c, 2))
                c:close()
                c = raw(srv, nil)
                c:send_frame("text", "40")
                local refused = assert(next_frame(c, 2)).payload
                c:send_frame("text", "40/nope,")
                local nope = assert(next_frame(c, 2)).payload
                c:close()
                local out = { ack, back, attachment.opcode, attachment.payload, refused, nope }
                assert.same({ '4312[1,"a"]', '461-3[{"_placeholder":true,"num":0}]', 2, "\0",
                              '44{"message":"No session found"}', '44/nope,{"message":"Invalid namespace"}' },
                            out)
                return out
            end)
        end)

        it("malformed packets close the connection, and the server keeps serving", function()
            local MALFORMED = {
                { "unknown Socket.IO packet type", { "49" } },
                { "bad JSON", { '42["echo",' } },
                { "EVENT payload an object", { "42{}" } },
                { "EVENT payload an empty array", { "42[]" } },
                { "a reserved event name", { '42["disconnect"]' } },
                { "too many attachments", { '4511-["echo",{"_placeholder":true,"num":0}]' } },
                { "no attachment count", { '45-["echo"]' } },
                { "a binary frame nobody expects", { { bin = "\1\2" } } },
                { "a text frame while attachments are due", { '451-["echo",{"_placeholder":true,"num":0}]',
                                                             '42["echo",1]' } },
                { "CONNECT for a connected namespace", { "40" } },
                { "EVENT for a namespace not connected", { '42/admin,["echo",1]' } },
                { "CONNECT payload not an object", { "40/admin,[1]" } },
                { "ACK payload not an array", { '431{"a":1}' } },
                { "unknown Engine.IO packet type", { "9" } },
                { "an Engine.IO ping from the client", { "2" } },
            }
            local which = { servers.ref, servers.gw } -- both at once, to be quick
            local out = { ref = {}, gw = {} }
            for i, m in ipairs(MALFORMED) do
                local t = tag("bad")
                local conns = {}
                for j, srv in ipairs(which) do
                    conns[j] = raw(srv, "ann")
                    exchange(conns[j], { '40{"tag":"' .. t .. '"}' }, 2)
                end
                for _, c in ipairs(conns) do
                    for _, p in ipairs(m[2]) do
                        if type(p) == "table" then c:send_frame("binary", p.bin) else c:send_frame("text", p) end
                    end
                end
                local how = endings(conns, 1.5)
                for j, srv in ipairs(which) do
                    conns[j]:close()
                    -- the server-side reason, once the close is through
                    local log = server_log(srv, t, 2)
                    out[srv.name][i] = { m[1], how[j], log[2] }
                    -- and a fresh client is served
                    local fresh = raw(srv, "bob")
                    local got = exchange(fresh, { "40" }, 2)
                    fresh:close()
                    assert.same({ eio = "4", type = 0, nsp = "/", data = { sid = "string" } }, got[1],
                                srv.name .. ": after " .. m[1])
                end
            end
            for i, m in ipairs(MALFORMED) do
                assert(out.ref[i][2] ~= "open", "reference: " .. m[1] .. ": still open")
            end
            agree(out.ref, out.gw)
        end)

        it("Engine.IO refusals: the same status and body", function()
            local PLAIN = {
                "/socket.io/?EIO=4&transport=polling",
                "/socket.io/?EIO=4&transport=websocket",
                "/socket.io/?transport=websocket",
                "/socket.io/?EIO=4&transport=foo",
                "/socket.io/?EIO=4&transport=websocket&sid=nosuchsid",
                "/socket.io/",
            }
            local UPGRADE = {
                "/socket.io/?EIO=4&transport=polling",
                "/socket.io/?EIO=4&transport=foo",
                "/socket.io/?EIO=3&transport=websocket",
                "/socket.io/?transport=websocket",
                "/socket.io/?EIO=5&transport=websocket",
                "/socket.io/?EIO=4&transport=websocket&sid=nosuchsid",
            }
            on_both(function(srv)
                local out = {}
                for _, path in ipairs(PLAIN) do
                    local status, body, h = http_get(srv.port, path, { Cookie = ck("ann") })
                    out[#out + 1] = { "GET " .. path, status, (h["content-type"] or ""):lower(), body }
                end
                for _, path in ipairs(UPGRADE) do
                    local status, body, h = upgrade_raw(srv.port, path)
                    out[#out + 1] = { "upgrade " .. path, status, (h["content-type"] or ""):lower(), body }
                end
                local json = "application/json"
                assert.same({
                    { "GET " .. PLAIN[1], 400, json, '{"code":0,"message":"Transport unknown"}' },
                    { "GET " .. PLAIN[2], 400, json, '{"code":3,"message":"Bad request"}' },
                    { "GET " .. PLAIN[3], 400, json, '{"code":3,"message":"Bad request"}' },
                    { "GET " .. PLAIN[4], 400, json, '{"code":0,"message":"Transport unknown"}' },
                    { "GET " .. PLAIN[5], 400, json, '{"code":1,"message":"Session ID unknown"}' },
                    { "GET " .. PLAIN[6], 400, json, '{"code":0,"message":"Transport unknown"}' },
                    { "upgrade " .. UPGRADE[1], 400, "text/html", "Transport unknown" },
                    { "upgrade " .. UPGRADE[2], 400, "text/html", "Transport unknown" },
                    { "upgrade " .. UPGRADE[3], 400, "text/html", "Unsupported protocol version" },
                    { "upgrade " .. UPGRADE[4], 400, "text/html", "Unsupported protocol version" },
                    { "upgrade " .. UPGRADE[5], 400, "text/html", "Unsupported protocol version" },
                    { "upgrade " .. UPGRADE[6], 400, "text/html", "Session ID unknown" },
                }, out)
                return out
            end)
        end)
    end)
end)
