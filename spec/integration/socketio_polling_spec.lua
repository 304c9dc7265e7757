-- The gateway's Engine.IO HTTP long-polling and the upgrade from it to a
-- WebSocket (passport.socketio with lua_shared_dict passport_eio) against
-- the reference it must agree with: a Node socket.io 4.8 server with
-- transports polling and websocket, authorizing with the real npm
-- passport.socketio over connect-redis sessions (spec/support/app/
-- sio_reference.js), running the same test application as the gateway
-- (spec/support/sio_app.lua).  The WebSocket-only transport is
-- spec/integration/socketio_spec.lua's; this file has its structure.
--
-- Every case runs the same client scenario against both servers -- a real
-- socket.io-client 4.8 (spec/support/app/sio_client.js) with the client's
-- default transports (polling, then the upgrade) or polling alone, or raw
-- HTTP requests and a byte-level WebSocket (spec/support/ws_raw.lua) --
-- checks the reference's outcome, then requires the gateway's to be the
-- same.  A few cases are the gateway's alone (many connections in a row,
-- passport.emit and logout reaching a polling client): the reference has
-- nothing to compare with there.  One real redis-server holds the sessions
-- for both; the gateway runs 4 workers, so a session's requests land on
-- any of them.  Heartbeats are short (pingInterval 300 ms, pingTimeout
-- 200 ms), connectTimeout is 1 s and the default ack timeout 700 ms, in
-- both servers (SETTINGS in spec/support/sio_specs.lua).
--
-- The cases: the default transports (events, binary, acks both ways, over
-- polling and then over the upgraded WebSocket); polling alone (the same,
-- and the heartbeat); refusals; disconnects by either side and by ping
-- timeout, with the server-side log; CORS headers; Engine.IO's HTTP
-- answers byte for byte (sids aside); and, the gateway's alone, 500
-- connections in a row with no session lost between workers, passport.emit
-- and a logout reaching a polling client.
local redis_server = require "support.redis_server"
local ws = require "support.ws_raw"
local sio = require "support.sio_specs"
local cookie = require "resty.passport.cookie"
local socket = require "socket"
local cjson = require "cjson"

local SECRET = "socketio polling spec secret"
local GOOD_ORIGIN = sio.SETTINGS.ORIGINS
local EVIL_ORIGIN = "http://evil.example"
local POLL_PATH = "/socket.io/?EIO=4&transport=polling"
local WS_PATH = "/socket.io/?EIO=4&transport=websocket"
local WORKERS = 4

-- socket.io-client's own default, and polling alone.
local DEFAULT = { "polling", "websocket" }
local POLLING = { "polling" }

local BIN = { ["$bin"] = "AAEC/w==" } -- 00 01 02 ff

---------------------------------------------------------------------------
-- Helpers (the most are spec/support/sio_specs.lua's).

local http_req, http_get, next_frame = sio.http_req, sio.http_get, sio.next_frame
local parse, shape, count = sio.parse, sio.shape, sio.count
local run_clients, start_clients = sio.run_clients, sio.start_clients

-- A polling payload: its packets (separated by 0x1e), each shaped.
local function packets_of(body)
    local list = {}
    for p in (body .. "\30"):gmatch("([^\30]*)\30") do list[#list + 1] = shape(parse(p)) end
    return list
end

---------------------------------------------------------------------------

describe("socket.io over long-polling: the gateway agrees with socket.io 4.8 + passport.socketio", function()
    local redis, ref, gw, gw_err
    local cookies = {}
    local servers = {}

    -- Not compared besides the timing: which transport a step ran over
    -- (checked where it is certain).
    local cmp = sio.comparison(servers, { via = true })
    local need_gateway, both, agree, on_both = cmp.need_gateway, cmp.both, cmp.agree, cmp.on_both
    local events, server_log, tag = sio.events, sio.server_log, sio.tag

    -- A scenario for srv over the given transports (sio.scenario's).
    local function scenario(srv, transports, fields)
        fields.transports = transports
        return sio.scenario(srv, fields)
    end

    local function ck(name)
        return cookies[name]
    end

    setup(function()
        redis = redis_server.start { config = { "notify-keyspace-events Kgx$" } }
        local seeds = { ann = "1", bob = "2", cat = "3", out = "2" }
        for name, user in pairs(seeds) do
            assert(redis:seed_connect_redis("sid-" .. name, user))
            cookies[name] = "connect.sid=" .. cookie.sign("sid-" .. name, SECRET)
        end
        cookies.tampered = cookies.ann:sub(1, -3) .. (cookies.ann:sub(-2, -2) == "A" and "B" or "A")
                           .. cookies.ann:sub(-1)

        ref = sio.start_reference(redis.port, { SECRET = SECRET, TRANSPORTS = "polling,websocket" })
        gw, gw_err = sio.start_gateway(redis.port, { SECRET = SECRET }, {
            workers = WORKERS,
            log_level = "info",
            http = [[
    lua_shared_dict passport_eio 10m;
    init_worker_by_lua_block { require("support.sio_app").init_worker() }
]],
            server = [[
        location = /emit { content_by_lua_block { require("support.sio_app").emit_handler() } }
]],
        })
        cmp.set(ref, gw, gw_err)
    end)

    teardown(function()
        if gw then sio.stop_gateway(gw, not gw_err) end
        if ref then ref.stop() end
        if redis then redis:stop() end
    end)

    local ANN = { id = 1, username = "ann", role = "admin", logged_in = true }

    -----------------------------------------------------------------------
    describe("the client's default: polling, then the upgrade", function()
        it("connects as the user; events and acks go both ways before the upgrade and after it", function()
            local t = tag("up")
            local ref_out, gw_out = both(function(srv)
                return {
                    -- the upgrade held back 700 ms: the first exchange is surely over polling
                    scenario(srv, DEFAULT, { cookie = ck("ann"), upgrade_delay = 700, steps = {
                        { op = "open", auth = { tag = t }, via = true },
                        { op = "emit", event = "echo", args = { 1, "two", { three = { 3 } } }, ack = true,
                          via = true },
                        { op = "emit", event = "echo", args = { "x", BIN, { deep = { BIN, { ["$bin"] = "" } } } },
                          ack = true, via = true },
                        { op = "emit", event = "binary", via = true },
                        { op = "wait", event = "bin" },
                        { op = "answer", event = "question", reply = { "yes", BIN } },
                        { op = "emit", event = "ask", args = { { args = { 7, "q" }, timeout = 1000 } }, via = true },
                        { op = "wait", event = "answer" },
                        { op = "wait_upgrade", timeout = 3000, via = true },
                        -- and the same over the WebSocket
                        { op = "emit", event = "echo", args = { 1, "two", { three = { 3 } } }, ack = true,
                          via = true },
                        { op = "emit", event = "echo", args = { "x", BIN, { deep = { BIN, { ["$bin"] = "" } } } },
                          ack = true, via = true },
                        { op = "emit", event = "binary", via = true },
                        { op = "wait", event = "bin", count = 2 },
                        { op = "emit", event = "ask", args = { { args = { 8 }, timeout = 1000 } }, via = true },
                        { op = "wait", event = "answer", count = 2 },
                        { op = "disconnect" },
                        { op = "sleep", ms = 100 },
                    } }),
                    -- as the client does it by itself: emits right away, the upgrade when it comes
                    scenario(srv, DEFAULT, { cookie = ck("bob"), steps = {
                        { op = "open", wait = false },
                        { op = "emit", event = "echo", args = { "early", BIN }, ack = true, wait = false },
                        { op = "wait", event = "connect" },
                        { op = "wait", event = "hello" },
                        { op = "emit", event = "echo", args = { "soon" }, ack = true },
                        { op = "wait_upgrade", timeout = 3000 },
                        { op = "emit", event = "echo", args = { "late", BIN }, ack = true },
                    } }),
                }
            end)
            local function check(out, who)
                local a, b = out[1], out[2]
                assert.is_nil(a.error, who .. ": " .. tostring(a.error))
                assert.is_nil(b.error, who .. ": " .. tostring(b.error))
                assert.same({ { user = ANN, nsp = "/", auth = { tag = t } } }, events(a, "main", "hello")[1].args)
                assert.equal(1, a.sockets.main.connects)
                assert.equal("io client disconnect", a.sockets.main.disconnect.reason)
                for _, i in ipairs { 2, 10 } do
                    assert.same({ 1, "two", { three = { 3 } } }, a.steps[i].ack, who .. " step " .. i)
                    assert.same({ "x", BIN, { deep = { BIN, { ["$bin"] = "" } } } }, a.steps[i + 1].ack,
                                who .. " step " .. (i + 1))
                end
                local bins = events(a, "main", "bin")
                assert.equal(2, #bins, who)
                for i = 1, 2 do
                    assert.same({ BIN, { nested = { ["$bin"] = "aMOpbGxv" }, empty = { ["$bin"] = "" } } },
                                bins[i].args)
                end
                local q = events(a, "main", "question")
                assert.same({ 7, "q" }, q[1].args)
                assert.same({ 8 }, q[2].args)
                assert.is_true(q[1].ack)
                local answers = events(a, "main", "answer")
                assert.same({ "ok", "yes", BIN }, answers[1].args, who)
                assert.same({ "ok", "yes", BIN }, answers[2].args, who)
                -- over polling until the upgrade, then over the WebSocket
                local via = {}
                for _, i in ipairs { 2, 3, 4, 7, 9, 10, 11, 12, 14 } do via[#via + 1] = a.steps[i].via end
                assert.same({ "polling", "polling", "polling", "polling", "polling",
                              "websocket", "websocket", "websocket", "websocket" }, via, who)
                assert.is_true(a.steps[9].ok, who .. ": no upgrade")
                assert.equal("websocket", a.engine.transport, who)
                assert.equal(1, a.engine.upgrades, who)
                assert.is_nil(a.engine.upgrade_errors, who)

                assert.equal("bob", events(b, "main", "hello")[1].args[1].user.username)
                assert.same({ "early", BIN }, b.steps[2].ack, who)
                assert.same({ "soon" }, b.steps[5].ack, who)
                assert.is_true(b.steps[6].ok, who .. ": no upgrade")
                assert.same({ "late", BIN }, b.steps[7].ack, who)
                assert.equal("websocket", b.engine.transport, who)
                assert.equal(1, b.engine.upgrades, who)
                assert.equal(0, b.engine.reconnect_attempts, who)
                assert.same({}, b.engine.closes, who)
            end
            check(ref_out, "reference")
            local want = { "connect /", "ack / ok", "ack / ok", "disconnect / client namespace disconnect" }
            assert.same(want, server_log(servers.ref, t, 4))
            need_gateway()
            check(gw_out, "gateway")
            agree(ref_out, gw_out)
            assert.same(want, server_log(servers.gw, t, 4))
        end)
    end)

    -----------------------------------------------------------------------
    describe("polling alone", function()
        it("the same exchange, no upgrade, and the heartbeat goes on", function()
            local ref_out, gw_out = both(function(srv)
                return scenario(srv, POLLING, { cookie = ck("ann"), steps = {
                    { op = "open" },
                    { op = "emit", event = "echo", args = { 1, "two", { three = { 3 } } }, ack = true },
                    { op = "emit", event = "echo", args = { "x", BIN, { deep = { BIN, { ["$bin"] = "" } } } },
                      ack = true },
                    { op = "emit", event = "echo", args = { "no ack", BIN } },
                    { op = "wait", event = "echo" },
                    { op = "emit", event = "binary" },
                    { op = "wait", event = "bin" },
                    { op = "answer", event = "question", reply = { "yes", BIN } },
                    { op = "emit", event = "ask", args = { { args = { 7, "q" }, timeout = 1000 } } },
                    { op = "wait", event = "answer" },
                    { op = "sleep", ms = 1000, via = true },
                    { op = "emit", event = "echo", args = { "awake" }, ack = true, via = true },
                } })
            end)
            local function check(r, who)
                assert.is_nil(r.error, who .. ": " .. tostring(r.error))
                assert.same({ user = ANN, nsp = "/", auth = {} }, events(r, "main", "hello")[1].args[1])
                assert.same({ 1, "two", { three = { 3 } } }, r.steps[2].ack, who)
                assert.same({ "x", BIN, { deep = { BIN, { ["$bin"] = "" } } } }, r.steps[3].ack, who)
                assert.same({ "no ack", BIN }, events(r, "main", "echo")[1].args, who)
                assert.same({ BIN, { nested = { ["$bin"] = "aMOpbGxv" }, empty = { ["$bin"] = "" } } },
                            events(r, "main", "bin")[1].args, who)
                assert.same({ "ok", "yes", BIN }, events(r, "main", "answer")[1].args, who)
                assert.same({ "awake" }, r.steps[12].ack, who)
                assert.equal("polling", r.steps[12].via, who)
                assert.equal("polling", r.engine.transport, who)
                assert.equal(0, r.engine.upgrades, who)
                assert.is_nil(r.sockets.main.disconnect, who)
                assert.same({}, r.engine.closes, who)
                -- pings over the 1 s sleep (pingInterval 300 ms)
                local grew = r.steps[12].pings - r.steps[11].pings
                assert(grew >= 2, who .. ": " .. grew .. " pings in 1 s")
            end
            check(ref_out[1], "reference")
            need_gateway()
            check(gw_out[1], "gateway")
            agree(ref_out, gw_out)
        end)
    end)

    -----------------------------------------------------------------------
    describe("refusals over polling", function()
        it("are the same CONNECT_ERRORs as the reference's", function()
            local cases = {
                { nil, nil, "No session found" },
                { "tampered", nil, "No session found" },
                { "ann", EVIL_ORIGIN, "Origin not allowed" },
                { "ann", GOOD_ORIGIN, nil },
            }
            local ref_out, gw_out = both(function(srv)
                local l = {}
                for _, transports in ipairs { POLLING, DEFAULT } do
                    -- a connected client with the default transports ends upgraded
                    local up = transports == DEFAULT and { op = "wait_upgrade" } or { op = "sleep", ms = 0 }
                    for _, c in ipairs(cases) do
                        l[#l + 1] = scenario(srv, transports, { cookie = c[1] and ck(c[1]) or nil, origin = c[2],
                                                                steps = { { op = "open" }, not c[3] and up or nil } })
                    end
                    -- /admin for a non-admin; "/" still served on the same connection
                    l[#l + 1] = scenario(srv, transports, { cookie = ck("bob"), steps = {
                        { op = "open" },
                        { op = "open", s = "adm", nsp = "/admin" },
                        { op = "emit", event = "echo", args = { "still here" }, ack = true },
                        up,
                    } })
                    -- and for an admin, both
                    l[#l + 1] = scenario(srv, transports, { cookie = ck("cat"), steps = {
                        { op = "open" },
                        { op = "open", s = "adm", nsp = "/admin" },
                        { op = "emit", s = "adm", event = "echo", args = { "in admin" }, ack = true },
                        up,
                    } })
                end
                return l
            end)
            local per = #cases + 2
            for k = 0, 1 do
                for i, c in ipairs(cases) do
                    local o = ref_out[k * per + i]
                    local s = o.sockets.main
                    if c[3] then
                        assert.same({ message = c[3] }, s.connect_error, tostring(c[1]))
                        assert.is_false(s.connected)
                        assert.equal(0, #s.events)
                    else
                        assert.is_nil(s.connect_error)
                        assert.equal(1, #events(o, "main", "hello"))
                    end
                end
                local bob, cat = ref_out[k * per + #cases + 1], ref_out[k * per + #cases + 2]
                assert.same({ message = "forbidden" }, bob.sockets.adm.connect_error)
                assert.same({ "still here" }, bob.steps[3].ack)
                assert.is_nil(bob.sockets.main.disconnect)
                assert.equal("/admin", events(cat, "adm", "hello")[1].args[1].nsp)
                assert.same({ "in admin" }, cat.steps[3].ack)
                if k == 1 then
                    assert.equal("websocket", bob.engine.transport)
                    assert.equal("websocket", cat.engine.transport)
                end
            end
            -- A refused client closes its engine at once (no namespace is
            -- left): whether its upgrade probe was through by then is timing,
            -- not compared.  Its connect_error and closes are.
            for _, out in ipairs { ref_out, gw_out or {} } do
                for k = 0, 1 do
                    for i, c in ipairs(cases) do
                        local e = out[k * per + i] and out[k * per + i].engine
                        if c[3] and e then e.transport, e.upgrades, e.upgrade_errors = nil, nil, nil end
                    end
                end
            end
            agree(ref_out, gw_out)
        end)
    end)

    -----------------------------------------------------------------------
    describe("disconnects over polling", function()
        it("server disconnect (one namespace, the whole connection) and client disconnect", function()
            local t = { tag("bye"), tag("byeall"), tag("client"), tag("close") }
            local ref_out, gw_out = both(function(srv)
                return {
                    scenario(srv, POLLING, { cookie = ck("ann"), steps = {
                        { op = "open", auth = { tag = t[1] } },
                        { op = "open", s = "adm", nsp = "/admin" },
                        { op = "emit", event = "bye" },
                        { op = "wait", event = "disconnect" },
                        { op = "emit", s = "adm", event = "echo", args = { "adm lives" }, ack = true },
                    } }),
                    scenario(srv, POLLING, { cookie = ck("ann"), steps = {
                        { op = "open", auth = { tag = t[2] } },
                        { op = "open", s = "adm", nsp = "/admin", auth = { tag = t[2] } },
                        { op = "emit", s = "adm", event = "bye-all" },
                        { op = "wait", event = "disconnect" },
                        { op = "wait", s = "adm", event = "disconnect" },
                        { op = "wait", event = "close" },
                    } }),
                    scenario(srv, POLLING, { cookie = ck("bob"), steps = {
                        { op = "open", auth = { tag = t[3] } },
                        { op = "disconnect" },
                        { op = "sleep", ms = 100 },
                    } }),
                    scenario(srv, POLLING, { cookie = ck("bob"), steps = {
                        { op = "open", auth = { tag = t[4] } },
                        { op = "close" },
                        { op = "wait", event = "disconnect" },
                        { op = "sleep", ms = 100 },
                    } }),
                }
            end)
            local one, all, client, closed = unpack(ref_out)
            assert.equal("io server disconnect", one.sockets.main.disconnect.reason)
            assert.is_nil(one.sockets.adm.disconnect) -- /admin lives on
            assert.same({ "adm lives" }, one.steps[5].ack)
            assert.equal("io server disconnect", all.sockets.main.disconnect.reason)
            assert.equal("io server disconnect", all.sockets.adm.disconnect.reason)
            assert.is_true(all.steps[6].ok)
            assert.equal("io client disconnect", client.sockets.main.disconnect.reason)
            assert.is_true(closed.steps[3].ok)
            assert.equal("forced close", closed.sockets.main.disconnect.reason)
            local want = {
                { "connect /", "disconnect / server namespace disconnect" },
                { "connect /", "connect /admin", "disconnect / server namespace disconnect",
                  "disconnect /admin server namespace disconnect" },
                { "connect /", "disconnect / client namespace disconnect" },
                { "connect /", "disconnect / transport close" },
            }
            local logs = { ref = {}, gw = {} }
            for i = 1, #t do
                local l = server_log(servers.ref, t[i], #want[i])
                table.sort(l)
                assert.same(want[i], l, t[i])
                logs.ref[i] = l
            end
            need_gateway()
            for i = 1, #t do
                local l = server_log(servers.gw, t[i], #logs.ref[i])
                table.sort(l)
                logs.gw[i] = l
            end
            -- both told at once: the clients' outcomes and the server logs
            agree({ clients = ref_out, logs = logs.ref }, { clients = gw_out, logs = logs.gw })
        end)

        it("a client that stops answering pings is dropped with the reference's reasons", function()
            local t = tag("ping")
            local tags = { ref = t, gw = t }
            local ref_out, gw_out = both(function(srv)
                return scenario(srv, POLLING, { cookie = ck("bob"), steps = {
                    { op = "open", auth = { tag = tags[srv.name] } },
                    { op = "sleep", ms = 400 },
                    { op = "stop_pong" },
                    { op = "wait", event = "disconnect", timeout = 3000 },
                } })
            end)
            local function check(mute, who)
                local d = mute.sockets.main.disconnect
                assert(d, who .. ": the mute client was not dropped")
                local after = d.at - mute.steps[3].at
                assert(after > 150 and after < 1500, who .. ": dropped " .. after .. " ms after the last pong")
                return after
            end
            local ref_after = check(ref_out[1], "reference")
            local ref_log = server_log(servers.ref, tags.ref, 2)
            assert.same({ "connect /", "disconnect / ping timeout" }, ref_log)
            need_gateway()
            local gw_after = check(gw_out[1], "gateway")
            agree(ref_out, gw_out)
            assert.same(ref_log, server_log(servers.gw, tags.gw, 2))
            assert(math.abs(ref_after - gw_after) < 400,
                   ("dropped after %d ms (gateway) vs %d ms (reference)"):format(gw_after, ref_after))
        end)
    end)

    -----------------------------------------------------------------------
    describe("CORS (raw HTTP)", function()
        it("the handshake, a refusal and the preflight carry the reference's CORS headers", function()
            local CORS = { "access-control-allow-origin", "access-control-allow-credentials",
                           "access-control-allow-methods", "access-control-allow-headers",
                           "access-control-expose-headers", "access-control-max-age", "vary" }
            local function pick(status, h)
                local o = { status = status }
                for _, k in ipairs(CORS) do o[k] = h[k] end
                return o
            end
            local preflight = { ["Access-Control-Request-Method"] = "POST",
                                ["Access-Control-Request-Headers"] = "content-type" }
            on_both(function(srv)
                local out = {}
                for _, origin in ipairs { GOOD_ORIGIN, EVIL_ORIGIN } do
                    local o = {}
                    local status, _, h = http_get(srv.port, POLL_PATH, { Cookie = ck("ann"), Origin = origin })
                    o.handshake = pick(status, h)
                    local pre = { Origin = origin }
                    for k, v in pairs(preflight) do pre[k] = v end
                    status, _, h = http_req(srv.port, "OPTIONS", POLL_PATH, pre)
                    o.preflight = pick(status, h)
                    status, _, h = http_get(srv.port, POLL_PATH .. "&sid=nosuchsid",
                                            { Cookie = ck("ann"), Origin = origin })
                    o.unknown_sid = pick(status, h)
                    out[origin] = o
                end
                local good, evil = out[GOOD_ORIGIN], out[EVIL_ORIGIN]
                assert.equal(200, good.handshake.status)
                assert.equal(GOOD_ORIGIN, good.handshake["access-control-allow-origin"])
                assert.equal("true", good.handshake["access-control-allow-credentials"])
                assert.equal(200, evil.handshake.status)
                assert.is_nil(evil.handshake["access-control-allow-origin"])
                assert.equal(204, good.preflight.status)
                assert.equal(GOOD_ORIGIN, good.preflight["access-control-allow-origin"])
                assert.equal("true", good.preflight["access-control-allow-credentials"])
                assert.equal("content-type", good.preflight["access-control-allow-headers"])
                assert.truthy(good.preflight["access-control-allow-methods"]:find("POST", 1, true))
                assert.equal(204, evil.preflight.status)
                assert.is_nil(evil.preflight["access-control-allow-origin"])
                assert.equal(400, good.unknown_sid.status)
                assert.equal(GOOD_ORIGIN, good.unknown_sid["access-control-allow-origin"])
                assert.is_nil(evil.unknown_sid["access-control-allow-origin"])
                return out
            end)
        end)
    end)

    -----------------------------------------------------------------------
    describe("Engine.IO over HTTP (raw requests)", function()
        -- The handshake: the sid and the whole answer.
        local function handshake(srv)
            local status, body, h = http_get(srv.port, POLL_PATH, { Cookie = ck("ann") })
            assert.equal(200, status, srv.name .. ": " .. body)
            local sid = assert(body:match('^0{"sid":"([^"]+)"'), body)
            return sid, status, body, h
        end

        local function poll(srv, method, sid, body, transport)
            local path = "/socket.io/?EIO=4&transport=" .. (transport or "polling") .. "&sid=" .. sid
            local status, rbody, h = http_req(srv.port, method, path,
                                              { Cookie = ck("ann"), ["Content-Type"] = body and "text/plain" or nil },
                                              body)
            return { status, (h["content-type"] or ""):lower(), rbody }
        end

        it("the handshake, CONNECT by POST and its answer by GET, and the refusals", function()
            on_both(function(srv)
                local out = {}
                local sid, status, body, h = handshake(srv)
                local at = body:find(sid, 1, true)
                out.handshake = { status, (h["content-type"] or ""):lower(),
                                  body:sub(1, at - 1) .. "<sid>" .. body:sub(at + #sid) }
                out.post = poll(srv, "POST", sid, "40")
                -- CONNECT's answer and the greeting: in one GET, or two when
                -- the first was answered as soon as CONNECT's answer was there
                local got = poll(srv, "GET", sid)
                local first = got[3]:match("^[^\30]*"):gsub('^40{"sid":"[^"]+"}$', '40{"sid":"<sid>"}')
                out.get = { got[1], got[2], packets_of(got[3]), first = first }
                if #out.get[3] == 1 then
                    local more = poll(srv, "GET", sid)
                    assert.same({ 200, "text/plain; charset=utf-8" }, { more[1], more[2] }, srv.name)
                    for _, p in ipairs(packets_of(more[3])) do out.get[3][#out.get[3] + 1] = p end
                end
                out.unknown_get = poll(srv, "GET", "nosuchsid")
                out.unknown_post = poll(srv, "POST", "nosuchsid", "40")
                out.websocket_no_upgrade = poll(srv, "GET", sid, nil, "websocket")

                local ping, pong = sio.SETTINGS.PING_INTERVAL, sio.SETTINGS.PING_TIMEOUT
                assert.same({ 200, "text/plain; charset=utf-8",
                              '0{"sid":"<sid>","upgrades":["websocket"],"pingInterval":' .. ping
                              .. ',"pingTimeout":' .. pong .. ',"maxPayload":1000000}' }, out.handshake)
                assert.same({ 200, "text/html", "ok" }, out.post)
                assert.same({ 200, "text/plain; charset=utf-8" }, { out.get[1], out.get[2] }, srv.name)
                assert.equal('40{"sid":"<sid>"}', out.get.first, srv.name)
                assert.same({ { eio = "4", type = 0, nsp = "/", data = { sid = "string" } },
                              { eio = "4", type = 2, nsp = "/", data = { "hello",
                                { user = ANN, nsp = "/", auth = {} } } } }, out.get[3], srv.name)
                local json = "application/json"
                assert.same({ 400, json, '{"code":1,"message":"Session ID unknown"}' }, out.unknown_get)
                assert.same({ 400, json, '{"code":1,"message":"Session ID unknown"}' }, out.unknown_post)
                assert.same({ 400, json, '{"code":3,"message":"Bad request"}' }, out.websocket_no_upgrade)
                return out
            end)
        end)

        it("after a raw upgrade, the polling transport is refused", function()
            on_both(function(srv)
                local out = {}
                local sid = handshake(srv)
                local c, status = ws.connect(srv.port, WS_PATH .. "&sid=" .. sid, { Cookie = ck("ann") })
                assert(c, srv.name .. ": the upgrade: " .. tostring(status))
                c:send_frame("text", "2probe")
                local f, err = next_frame(c, 2)
                out.probe = f and f.payload or err
                c:send_frame("text", "5")
                -- the upgraded session works: CONNECT over the WebSocket
                c:send_frame("text", "40")
                local got = {}
                for i = 1, 2 do
                    f, err = next_frame(c, 2)
                    got[i] = f and shape(parse(f.payload)) or err
                end
                out.connect = got
                out.get = poll(srv, "GET", sid)
                out.post = poll(srv, "POST", sid, "42[\"echo\",1]")
                -- and the WebSocket still does
                c:send_frame("text", '421["echo","after"]')
                f, err = next_frame(c, 2)
                out.ack = f and f.payload or err
                c:close()
                assert.equal("3probe", out.probe)
                assert.same({ eio = "4", type = 0, nsp = "/", data = { sid = "string" } }, out.connect[1])
                assert.equal("hello", out.connect[2].data[1])
                local bad = { 400, "application/json", '{"code":3,"message":"Bad request"}' }
                assert.same(bad, out.get)
                assert.same(bad, out.post)
                assert.equal('431["after"]', out.ack)
                return out
            end)
        end)
    end)

    -----------------------------------------------------------------------
    describe("the gateway alone", function()
        it("500 connections in a row (10 at a time) all connect and upgrade, no session lost", function()
            need_gateway()
            local before = gw:error_log()
            local who = { "ann", "bob", "cat" }
            local list = {}
            for i = 1, 10 do
                list[i] = scenario(servers.gw, DEFAULT, { name = "c" .. i, cookie = ck(who[i % 3 + 1]), ["repeat"] = 50,
                                                          steps = {
                    { op = "open" },
                    { op = "emit", event = "echo", args = { i }, ack = true },
                    { op = "wait_upgrade", timeout = 3000 },
                    { op = "emit", event = "echo", args = { "ws", i }, ack = true },
                    { op = "disconnect" },
                } })
            end
            local t0 = socket.gettime()
            local out = run_clients(list)
            local took = socket.gettime() - t0
            socket.sleep(0.3) -- any straggling request
            local log = gw:error_log():sub(#before + 1)
            local bad, n = {}, 0
            for i, o in ipairs(out) do
                assert.equal(50, #o.runs, "c" .. i)
                for j, r in ipairs(o.runs) do
                    n = n + 1
                    local why
                    local hello = r.sockets.main and events(r, "main", "hello")[1]
                    if r.error then
                        why = r.error
                    elseif not hello or hello.args[1].user.username ~= who[i % 3 + 1] then
                        why = "no hello: " .. cjson.encode(r.sockets)
                    elseif not (r.steps[2].ack and r.steps[2].ack[1] == i) then
                        why = "echo before the upgrade: " .. cjson.encode(r.steps[2])
                    elseif not r.steps[3].ok or r.engine.upgrades ~= 1 or r.engine.transport ~= "websocket" then
                        why = "no upgrade: " .. cjson.encode(r.engine)
                    elseif not (r.steps[4].ack and r.steps[4].ack[2] == i) then
                        why = "echo after the upgrade: " .. cjson.encode(r.steps[4])
                    elseif r.sockets.main.connects ~= 1 or #r.engine.closes > 0 or r.engine.upgrade_errors then
                        why = "unsteady: " .. cjson.encode(r.engine)
                    end
                    if why then bad[#bad + 1] = ("c%d run %d: %s"):format(i, j, why) end
                end
            end
            assert.equal(500, n)
            local unknown = count(log, "engine.io request refused: Session ID unknown")
            local refused = {}
            for line in log:gmatch("[^\n]*engine%.io request refused[^\n]*") do
                if #refused < 10 then refused[#refused + 1] = line end
            end
            assert(#bad == 0, #bad .. " of 500 connections failed (in " .. ("%.1f"):format(took) .. " s):\n"
                              .. table.concat(bad, "\n", 1, math.min(#bad, 20)) .. "\nrefusals logged:\n"
                              .. table.concat(refused, "\n"))
            assert(unknown == 0, unknown .. " 'Session ID unknown' refusals in the error log:\n"
                                 .. table.concat(refused, "\n"))
        end)

        it("passport.emit reaches a polling client", function()
            need_gateway()
            -- every worker subscribed: an emit reaches all of them
            local deadline = socket.gettime() + 10
            local _, n
            repeat
                _, n = http_get(gw.port, "/emit?user=999&data=warmup")
                if n == tostring(WORKERS) then break end
                socket.sleep(0.05)
            until socket.gettime() > deadline
            assert.equal(tostring(WORKERS), n)
            local out = run_clients { scenario(servers.gw, POLLING, { cookie = ck("cat"), steps = {
                { op = "open" },
                { op = "http", url = servers.gw.url .. "/emit?user=3&event=notice&data=hi" },
                { op = "wait", event = "notice" },
                { op = "http", url = servers.gw.url .. "/emit?user=3&event=notice&data=again" },
                { op = "wait", event = "notice", count = 2 },
            } }) }
            local r = out[1]
            assert.is_nil(r.error, r.error)
            assert.same({ 200, tostring(WORKERS) }, { r.steps[2].status, r.steps[2].body })
            assert.is_true(r.steps[3].ok, "the notice did not arrive")
            local got = {}
            for _, e in ipairs(events(r, "main", "notice")) do got[#got + 1] = e.args end
            assert.same({ { "hi" }, { "again" } }, got)
            assert.equal("polling", r.engine.transport)
            assert.equal(0, r.engine.upgrades)
        end)

        it("a logout disconnects a polling client (io server disconnect, no reconnect)", function()
            need_gateway()
            local dir = redis_server.tmpdir("siopoll")
            local clients = start_clients(dir, { scenario(servers.gw, POLLING, {
                cookie = ck("out"), reconnection = true, steps = {
                    { op = "open" },
                    { op = "mark", file = dir .. "/ready" },
                    { op = "wait", event = "disconnect", timeout = 5000 },
                    { op = "sleep", ms = 600 }, -- long enough to see a reconnect, were there one
                } }) })
            local ok, err = pcall(function()
                clients.wait_mark("ready", 10)
                local t_logout = socket.gettime()
                assert.equal(1, redis:call("DEL", "sess:sid-out"))
                local r = clients.result(10)[1]
                assert.is_nil(r.error, r.error)
                assert.equal("bob", events(r, "main", "hello")[1].args[1].user.username)
                local d = r.sockets.main.disconnect
                assert(d, "not disconnected by the logout")
                assert.equal("io server disconnect", d.reason)
                local after = d.t / 1000 - t_logout
                assert(after >= 0 and after < 1.0, "disconnected " .. after .. " s after the logout")
                assert.equal(0, r.engine.reconnect_attempts)
                assert.equal(1, r.sockets.main.connects)
                assert.equal("polling", r.engine.transport)
            end)
            clients.stop()
            assert(ok, err)
        end)
    end)
end)
