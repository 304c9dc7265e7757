-- socket.io's own Redis emitter (npm @socket.io/redis-emitter 5 over the
-- npm redis 4 client, spec/support/app/emitter.js) pushing to the gateway's
-- socket.io sockets, and the same emitter calls, in the same run, pushing
-- to a Node socket.io 4.8 server with @socket.io/redis-adapter 8 on the
-- same redis-server (spec/support/app/sio_reference.js, REDIS_ADAPTER=1):
-- the gateway is a drop-in for that server.
--
-- Servers: one redis-server; on key "socket.io", the Node server and two
-- gateway nodes A and B (nginx, 2 workers each, sio_app.lua configured
-- with emitter_key = "socket.io" and its init_worker subscriber); on key
-- "myapp" (a custom prefix), a second Node server and a gateway node C.
-- Clients: real socket.io-client 4.8 (spec/support/app/sio_client.js, one
-- background process), the same users on every server: on key "socket.io"
-- ann (user 1, admin: also on "/admin"), bob (2, joins "blue"), cat (3,
-- admin, joins "blue") and zero (0), once on the Node server and twice on
-- each gateway node; on key "myapp" ann and bob, once on its Node server
-- and twice on C.  Each socket is in its own id's room, in the rooms it
-- joined and in "user:<id>" (the Node app joins it on connection; the
-- gateway does by itself).
--
-- The emitter calls go out in four phases (PHASES below), each ended by a
-- "sync" emit that every client waits for before the next phase: plain
-- broadcasts (to a user room, a custom room, except, of("/admin"), a
-- socket's own id, binary arguments and JSON types, volatile, compress,
-- several rooms at once, the custom key), socketsJoin then emits to the
-- joined rooms, socketsLeave then emits to the left rooms, and
-- disconnectSockets (close or not).  The Node half is checked first against
-- what socket.io says each socket gets (the got lists below); every gateway
-- client must then have got exactly what the same user's client on the
-- Node server got: same events, same arguments (as canonical JSON, so []
-- and {}, nulls and Buffers count), same order, same disconnects.
--
-- Then, gateway only (the Node servers are stopped first: a malformed
-- message makes the redis-adapter throw out of its Redis client), bad
-- messages published by hand -- garbage bytes, truncated MessagePack,
-- MessagePack of the wrong shape, data nested 500 deep, garbage on the
-- request channel, a message over the subscriber's max_message_size
-- (1 MiB) -- each followed at once by a good emitter message: each kind is
-- dropped with a log line ([warn] or [error], "passport" in it) in every
-- node's error log, and the next good message is delivered.
--
-- When the gateway cannot serve (socket.io or the emitter's subscriber
-- missing: every gateway worker must be subscribed, one PUBLISH reaching
-- the Node server and the 4 workers of A and B), the Node half still runs
-- and is checked, and every gateway case fails with the reason.
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local sio = require "support.sio_specs"
local proc = require "support.proc"
local hex = require "support.hex"
local cookie = require "resty.passport.cookie"
local socket = require "socket"
local cjson = require "cjson"

local SECRET = "socketio emitter spec secret"
local KEY, MYKEY = "socket.io", "myapp"
local WAIT = 4000 -- ms a client waits for a phase's sync

---------------------------------------------------------------------------
-- Who connects: per key, the users (persona name, session, user id,
-- "/admin" too, rooms joined through the app's "join" event) and what
-- each waits for in the last phase (disconnects).

local PERSONAS = {
    [KEY] = {
        { name = "ann", sid = "em-ann", user = 1, adm = true,
          last = { { op = "wait", event = "disconnect" }, { op = "wait", s = "adm", event = "disconnect" },
                   { op = "wait", event = "close" } } },
        { name = "bob", sid = "em-bob", user = 2, rooms = { "blue" },
          last = { { op = "wait", event = "disconnect" } } },
        { name = "cat", sid = "em-cat", user = 3, adm = true, rooms = { "blue" },
          last = { { op = "wait", event = "disconnect" }, { op = "wait", s = "adm", event = "sync", count = 4 } } },
        { name = "zero", sid = "em-zero", user = 0,
          last = { { op = "wait", event = "disconnect" } } },
    },
    [MYKEY] = {
        { name = "ann", sid = "em-ann", user = 1,
          last = { { op = "wait", event = "disconnect" } } },
        { name = "bob", sid = "em-bob", user = 2,
          last = { { op = "wait", event = "sync", count = 4 } } },
    },
}

-- How each persona's sockets end (the Node half is checked against this):
-- each socket's disconnect reason (false: still connected) and whether the
-- connection closed -- close = true closes it, and socket.io-client closes
-- it itself once the last socket of its Manager is disconnected.
local ENDS = {
    [KEY] = {
        ann = { main = "io server disconnect", adm = "io server disconnect", engine_closed = true },
        bob = { main = "io server disconnect", engine_closed = true },
        cat = { main = "io server disconnect", adm = false },
        zero = { main = "io server disconnect", engine_closed = true },
    },
    [MYKEY] = {
        ann = { main = "io server disconnect", engine_closed = true },
        bob = { main = false },
    },
}

---------------------------------------------------------------------------
-- The emitter calls.  got: the sockets socket.io delivers to, as
-- "<persona>" (its "/" socket) or "<persona>.adm", among the clients on
-- the call's key.

-- An emit of "notice" <label> after the chain's targeting.
local function notice(label, got, chain, key)
    local c = {}
    for i, m in ipairs(chain or {}) do c[i] = m end
    c[#c + 1] = { "emit", "notice", label }
    return { key = key or KEY, chain = c, label = label, event = "notice",
             json = '["' .. label .. '"]', got = got }
end

local function request(chain, key)
    return { key = key or KEY, chain = chain }
end

-- Every socket of a key's personas on a namespace ("main" or "adm").
local function everyone(key, s)
    local out = {}
    for _, p in ipairs(PERSONAS[key]) do
        if s == "main" then out[#out + 1] = p.name elseif p.adm then out[#out + 1] = p.name .. ".adm" end
    end
    return out
end

-- The "sync" that ends phase k: on both keys, both namespaces.
local function sync(k)
    local list = {}
    for _, key in ipairs { KEY, MYKEY } do
        list[#list + 1] = { key = key, chain = { { "emit", "sync", k } }, label = "sync", event = "sync",
                            json = "[" .. k .. "]", got = everyone(key, "main") }
        list[#list + 1] = { key = key, chain = { { "of", "/admin" }, { "emit", "sync", k } }, label = "sync",
                            event = "sync", json = "[" .. k .. "]", got = everyone(key, "adm") }
    end
    return list
end

local B64 = {
    bytes = "AAEC/w==", -- 00 01 02 ff
    hello = "aMOpbGxv", -- "héllo" in UTF-8
    abc = "YWJj",
}

local BIN_CALL = {
    key = KEY, label = "bin", event = "bin", got = { "ann" },
    chain = { { "to", "user:1" }, { "emit", "bin", { ["$bin"] = B64.bytes },
              { nested = { ["$bin"] = B64.hello }, empty = { ["$bin"] = "" }, text = "abc" },
              { ["$bin"] = B64.abc }, "abc" } },
    json = '[{"$bin":"AAEC/w=="},{"empty":{"$bin":""},"nested":{"$bin":"aMOpbGxv"},"text":"abc"},'
           .. '{"$bin":"YWJj"},"abc"]',
}

-- JSON values MessagePack tells apart and socket.io delivers as they are:
-- integers, negatives, doubles that %.14g would round, 2^53 - 1, booleans,
-- a null argument, "", UTF-8, [] and {}, a null inside a list, nesting.
local TYPES_ARGS = '1,-2,1.5,0.30000000000000004,9007199254740991,true,false,null,"","h\\u00e9llo",'
                   .. '[],{},[1,null,3],{"a":{"b":[1]}}'
local TYPES_CALL = {
    key = KEY, label = "types", event = "types", got = { "bob" },
    chain = '[["to","user:2"],["emit","types",' .. TYPES_ARGS .. ']]',
    json = '[1,-2,1.5,0.30000000000000004,9007199254740991,true,false,null,"","h\195\169llo",'
           .. '[],{},[1,null,3],{"a":{"b":[1]}}]',
}

local PHASES = {
    { -- 1: broadcasts (each socket's own id room is added in front, once the ids are known)
        notice("user-ann", { "ann" }, { { "to", "user:1" } }),
        notice("user-bob", { "bob" }, { { "to", "user:2" } }),
        notice("room-blue", { "bob", "cat" }, { { "to", "blue" } }),
        notice("blue-except-bob", { "cat" }, { { "to", "blue" }, { "except", "user:2" } }),
        notice("all-except-ann", { "bob", "cat", "zero" }, { { "except", "user:1" } }),
        notice("all-except-blue-zero", { "ann" }, { { "except", { "blue", "user:0" } } }),
        notice("ann-or-blue", { "ann", "bob", "cat" }, { { "to", { "user:1", "blue" } } }),
        notice("everyone", { "ann", "bob", "cat", "zero" }, {}),
        notice("admin-all", { "ann.adm", "cat.adm" }, { { "of", "/admin" } }),
        notice("admin-cat", { "cat.adm" }, { { "of", "/admin" }, { "to", "user:3" } }),
        notice("admin-except-cat", { "ann.adm" }, { { "of", "/admin" }, { "except", "user:3" } }),
        notice("nobody", {}, { { "to", "user:9" } }),
        BIN_CALL,
        TYPES_CALL,
        { key = KEY, label = "bare", event = "bare", json = "[]", got = { "ann" },
          chain = { { "to", "user:1" }, { "emit", "bare" } } },
        notice("compress-zero", { "zero" }, { { "compress", false }, { "to", "user:0" } }),
        notice("myapp-ann", { "ann" }, { { "to", "user:1" } }, MYKEY),
        notice("myapp-all", { "ann", "bob" }, {}, MYKEY),
    },
    { -- 2: socketsJoin, then emits to the joined rooms at once
        -- volatile first, while every transport is idle: socket.io drops a
        -- volatile packet for a socket whose transport is still writing the
        -- one before (as in a burst), which no spec can time
        notice("volatile-cat", { "cat" }, { { "volatile" }, { "to", "user:3" } }),
        request { { "to", "user:2" }, { "socketsJoin", "red" } },
        request { { "of", "/admin" }, { "socketsJoin", "staff" } },
        request { { "except", "user:3" }, { "socketsJoin", { "green", "teal" } } },
        notice("red-joined", { "bob" }, { { "to", "red" } }),
        notice("green-joined", { "ann", "bob", "zero" }, { { "to", "green" } }),
        notice("staff-joined", { "ann.adm", "cat.adm" }, { { "of", "/admin" }, { "to", "staff" } }),
        notice("staff-on-root", {}, { { "to", "staff" } }),
        request({ { "to", "user:2" }, { "socketsJoin", "mine" } }, MYKEY),
        notice("myapp-mine-joined", { "bob" }, { { "to", "mine" } }, MYKEY),
    },
    { -- 3: socketsLeave, then emits to the left rooms at once
        request { { "to", "user:2" }, { "socketsLeave", "red" } },
        notice("red-left", {}, { { "to", "red" } }),
        request { { "socketsLeave", "green" } },
        notice("green-left", {}, { { "to", "green" } }),
        notice("teal-kept", { "ann", "bob", "zero" }, { { "to", "teal" } }),
        request { { "of", "/admin" }, { "to", "user:1" }, { "socketsLeave", "staff" } },
        notice("staff-after-ann-left", { "cat.adm" }, { { "of", "/admin" }, { "to", "staff" } }),
        request({ { "socketsLeave", "mine" } }, MYKEY),
        notice("myapp-mine-left", {}, { { "to", "mine" } }, MYKEY),
    },
    { -- 4: disconnectSockets
        request { { "to", "user:1" }, { "disconnectSockets", true } },
        request { { "disconnectSockets" } },
        notice("root-after", {}, {}),
        notice("admin-after", { "cat.adm" }, { { "of", "/admin" } }),
        { key = KEY, chain = { { "of", "/admin" }, { "emit", "sync", 4 } }, label = "sync", event = "sync",
          json = "[4]", got = { "cat.adm" } },
        request({ { "to", "user:1" }, { "disconnectSockets" } }, MYKEY),
        { key = MYKEY, chain = { { "emit", "sync", 4 } }, label = "sync", event = "sync", json = "[4]",
          got = { "bob" } },
    },
}
for k = 1, 3 do
    for _, c in ipairs(sync(k)) do table.insert(PHASES[k], c) end
end

---------------------------------------------------------------------------
-- Helpers.

local function contains(list, x)
    for _, v in ipairs(list or {}) do
        if v == x then return true end
    end
    return false
end

local function set_of(list)
    local s = {}
    for _, v in ipairs(list) do s[v] = true end
    return s
end

-- Runs emitter.js: calls (the spec's annotations stripped) published in
-- order on one connection; its answer per call (publishes, receivers).
local function publish(redis_port, calls, dry)
    local wire = {}
    for i, c in ipairs(calls) do
        wire[i] = c.raw and { raw = c.raw } or { key = c.key, chain = c.chain }
    end
    local file = os.tmpname()
    local f = assert(io.open(file, "w"))
    f:write(cjson.encode { redis_port = redis_port, dry = dry or false, calls = wire })
    f:close()
    local out, ok = proc.sh("cd " .. proc.q(nginx_server.root) .. " && node spec/support/app/emitter.js < "
                            .. proc.q(file))
    os.remove(file)
    local last
    for line in out:gmatch("[^\n]+") do last = line end
    local dok, res = pcall(cjson.decode, last or "")
    assert(ok and dok and type(res) == "table", "emitter.js said:\n" .. out)
    for i, r in ipairs(res) do
        assert(r.error == nil, "emitter call " .. i .. " (" .. cjson.encode(wire[i]) .. "): " .. tostring(r.error))
    end
    return res
end

-- An event as compared: its label (a notice's first argument, else the
-- event's name), name and arguments as canonical JSON.
local function entry(label, event, json)
    return { label = label, event = event, json = json }
end

-- A list of entries, one a line; with other, "*" marks where they differ.
local function show(list, other)
    local lines = {}
    for i, e in ipairs(list) do
        local o = other and other[i]
        local mark = other and not (o and o.event == e.event and o.json == e.json) and "  * " or "    "
        lines[#lines + 1] = mark .. e.event .. " " .. tostring(e.json)
    end
    return #lines > 0 and table.concat(lines, "\n") or "    (none)"
end

local function same_list(a, b)
    if #a ~= #b then return false end
    for i = 1, #a do
        if a[i].event ~= b[i].event or a[i].json ~= b[i].json then return false end
    end
    return true
end

-- The entries of list whose label is in set (all when set is nil).
local function pick(list, set)
    if not set then return list end
    local out = {}
    for _, e in ipairs(list) do
        if set[e.label] then out[#out + 1] = e end
    end
    return out
end

-- What a client's socket s got, the greeting aside.
local function observed(out, s)
    local list = {}
    local sock = out and out.sockets and out.sockets[s]
    for _, e in ipairs(sock and sock.events or {}) do
        if e.event ~= "hello" then
            local label = e.event
            if e.event == "notice" and type(e.args) == "table" and type(e.args[1]) == "string" then
                label = e.args[1]
            end
            list[#list + 1] = entry(label, e.event, e.json)
        end
    end
    return list
end

---------------------------------------------------------------------------

describe("socket.io's Redis emitter: the gateway and a Node socket.io + redis-adapter server", function()
    local redis, ref, ref2
    local nodes = {} -- A, B, C: the gateway nodes
    local gw_err
    local cookies = {}
    local clients, dir
    local roster = {} -- the clients: { name, key, persona, server ("node" | "A1" ...), url }
    local out = {} -- name -> outcome
    local sent = {} -- phase -> list of { call, result }
    local probes = {} -- key -> { channel, bytes } of a valid broadcast to nobody
    local who = {} -- node -> worker pid -> { [nsp] = sockets }, once every client is ready

    local function want_receivers(key, with_node)
        local gw = key == KEY and 4 or 2 -- the workers of A and B, or of C
        return gw + (with_node and 1 or 0)
    end

    -- How many subscriptions a broadcast and a request on key reach now
    -- (PUBLISH's answers; both are harmless: a room and a request for nobody).
    local function receivers(key)
        local b = redis:call("PUBLISH", probes[key].channel, probes[key].bytes)
        local r = redis:call("PUBLISH", key .. "-request#/#",
                             '{"type":2,"opts":{"rooms":["__nobody__"],"except":[]},"rooms":["__probe__"]}')
        return tonumber(b) or -1, tonumber(r) or -1
    end

    local function wait_receivers(key, want, timeout)
        local deadline = socket.gettime() + timeout
        local b, r
        repeat
            b, r = receivers(key)
            if b >= want and r >= want then return true, b, r end
            socket.sleep(0.05)
        until socket.gettime() > deadline
        return false, b, r
    end

    local function log_tail(node, n)
        local lines = {}
        for line in node:error_log():gmatch("[^\n]+") do
            if line:match("%[warn%]") or line:match("%[error%]") or line:match("%[crit%]")
               or line:match("%[alert%]") or line:match("%[emerg%]") then
                lines[#lines + 1] = line
            end
        end
        return table.concat(lines, "\n", math.max(1, #lines - n + 1))
    end

    local function need_gateway()
        assert(not gw_err, "gateway half not run: " .. tostring(gw_err))
    end

    -- The clients on the Node servers (which = "node") or on the gateway
    -- nodes ("gw").
    local function clients_on(which)
        local list = {}
        for _, c in ipairs(roster) do
            if (which == "node") == (c.server == "node") then list[#list + 1] = c end
        end
        return list
    end

    local function sockets_of(p)
        return p.adm and { "main", "adm" } or { "main" }
    end

    -- What socket.io delivers to client c's socket s: the calls on its key
    -- whose got names it, in publishing order.
    local function expected(c, s)
        local list = {}
        local me = s == "adm" and c.persona.name .. ".adm" or c.persona.name
        for _, phase in ipairs(sent) do
            for _, x in ipairs(phase) do
                local call = x.call
                if call.label and call.key == c.key then
                    local hit
                    if call.only then
                        hit = call.only == c.name and call.sock == s
                    else
                        hit = contains(call.got, me)
                    end
                    if hit then list[#list + 1] = entry(call.label, call.event, call.json) end
                end
            end
        end
        return list
    end

    -- The Node server's client of the same user and key as c.
    local function counterpart(c)
        for _, o in ipairs(roster) do
            if o.server == "node" and o.key == c.key and o.persona.name == c.persona.name then return o end
        end
    end

    -- Every client on which's servers got the events labelled in labels
    -- (all when nil) exactly as socket.io says; the gateway's also exactly
    -- as the same user's client on the Node server.  All failures at once.
    local function check(which, labels, what)
        local set = labels and set_of(labels) or nil
        local bad = {}
        for _, c in ipairs(clients_on(which)) do
            local o = out[c.name]
            if o and o.error then bad[#bad + 1] = c.name .. ": the client failed: " .. tostring(o.error) end
            for _, s in ipairs(sockets_of(c.persona)) do
                local want = pick(expected(c, s), set)
                local got = pick(observed(o, s), set)
                local ref_got = which == "gw" and pick(observed(out[counterpart(c).name], s), set)
                if not same_list(want, got) then
                    bad[#bad + 1] = ("%s (%s, key %s): socket.io delivers%s\n%s\n  but it got\n%s")
                        :format(c.name, s == "adm" and "/admin" or "/", c.key,
                                ref_got and same_list(ref_got, want) and " (and the Node server did)" or "",
                                show(want), show(got, want))
                elseif ref_got and not same_list(ref_got, got) then
                    bad[#bad + 1] = ("%s (%s): the Node server's client got\n%s\n  but this one got\n%s")
                        :format(c.name, s == "adm" and "/admin" or "/", show(ref_got), show(got, ref_got))
                end
            end
        end
        assert(#bad == 0, (which == "node" and "the Node server: " or "the gateway: ") .. what .. ":\n"
               .. table.concat(bad, "\n"))
    end

    -- The Node half, then (failing with the reason when it cannot run) the
    -- gateway's.
    local function on_both(labels, what)
        check("node", labels, what)
        need_gateway()
        check("gw", labels, what)
    end

    setup(function()
        -- keyspace events on: the gateway's logout watch then needs no polling
        redis = redis_server.start { config = { "notify-keyspace-events Kgx$" } }
        for _, p in ipairs(PERSONAS[KEY]) do
            assert(redis:seed_connect_redis(p.sid, tostring(p.user)))
            cookies[p.sid] = "connect.sid=" .. cookie.sign(p.sid, SECRET)
        end
        -- a broadcast to a room nobody is in, as the emitter encodes it, per key
        for _, key in ipairs { KEY, MYKEY } do
            local res = publish(redis.port, { { key = key, chain = { { "to", "__nobody__" }, { "emit", "probe" } } } },
                                true)
            local p = res[1].publishes[1]
            probes[key] = { channel = p.channel, bytes = hex.decode(p.hex) }
        end

        -- the Node servers
        ref = sio.start_reference(redis.port, { SECRET = SECRET, REDIS_ADAPTER = 1, ADAPTER_KEY = KEY })
        ref2 = sio.start_reference(redis.port, { SECRET = SECRET, REDIS_ADAPTER = 1, ADAPTER_KEY = MYKEY })
        local deadline = socket.gettime() + 10
        while true do
            local r = redis:call("PUBSUB", "NUMSUB", KEY .. "-request#/#", KEY .. "-request#/admin#",
                                 MYKEY .. "-request#/#", MYKEY .. "-request#/admin#")
            if r[2] >= 1 and r[4] >= 1 and r[6] >= 1 and r[8] >= 1 then break end
            assert(socket.gettime() < deadline, "the Node servers' redis-adapters did not subscribe")
            socket.sleep(0.05)
        end

        -- the gateway nodes
        local server = [[
        location = /who { content_by_lua_block { require("support.sio_app").who_handler() } }
]]
        for _, n in ipairs { { "A", KEY }, { "B", KEY }, { "C", MYKEY } } do
            local gw, err = sio.start_gateway(redis.port, { SECRET = SECRET },
                { workers = 2, init_worker = true, configure = { emitter_key = n[2] }, server = server,
                  listen = "reuseport" })
            nodes[n[1]] = gw
            if err and not gw_err then gw_err = "node " .. n[1] .. ": " .. err end
        end
        if not gw_err then
            for _, key in ipairs { KEY, MYKEY } do
                local want = want_receivers(key, true)
                local ok, b, r = wait_receivers(key, want, 8)
                if not ok then
                    gw_err = ("the gateway nodes on key %q did not subscribe to the emitter's channels: a broadcast "
                              .. "reached %d subscriptions and a request %d, want %d each (the Node server and "
                              .. "each gateway worker); node %s's error log ends:\n%s")
                        :format(key, b, r, want, key == KEY and "A" or "C",
                                log_tail(key == KEY and nodes.A or nodes.C, 8))
                    break
                end
            end
        end

        -- the clients
        dir = redis_server.tmpdir("sioemitter")
        local where = {
            [KEY] = { { "node", ref }, { "A1", nodes.A }, { "A2", nodes.A }, { "B1", nodes.B }, { "B2", nodes.B } },
            [MYKEY] = { { "node", ref2 }, { "C1", nodes.C }, { "C2", nodes.C } },
        }
        local list = {}
        for _, key in ipairs { KEY, MYKEY } do
            for _, w in ipairs(where[key]) do
                if w[1] == "node" or not gw_err then
                    for _, p in ipairs(PERSONAS[key]) do
                        local c = { name = (key == MYKEY and "myapp-" or "") .. p.name .. "@" .. w[1],
                                    key = key, persona = p, server = w[1],
                                    url = "http://127.0.0.1:" .. w[2].port }
                        roster[#roster + 1] = c
                        local steps = { { op = "open", expect = "hello" } }
                        if p.adm then
                            steps[#steps + 1] = { op = "open", s = "adm", nsp = "/admin", expect = "hello" }
                        end
                        for _, room in ipairs(p.rooms or {}) do
                            steps[#steps + 1] = { op = "emit", event = "join", args = { room }, ack = true }
                        end
                        steps[#steps + 1] = { op = "mark", file = dir .. "/ready-" .. c.name, ids = true }
                        for k = 1, 3 do
                            steps[#steps + 1] = { op = "wait", event = "sync", count = k, timeout = WAIT }
                            if p.adm then
                                steps[#steps + 1] = { op = "wait", s = "adm", event = "sync", count = k,
                                                      timeout = WAIT }
                            end
                            steps[#steps + 1] = { op = "mark", file = dir .. "/p" .. k .. "-" .. c.name }
                        end
                        for _, st in ipairs(p.last) do
                            local copy = { timeout = WAIT }
                            for kk, v in pairs(st) do copy[kk] = v end
                            steps[#steps + 1] = copy
                        end
                        steps[#steps + 1] = { op = "sleep", ms = 300 } -- anything stray
                        list[#list + 1] = { name = c.name, url = c.url, cookie = cookies[p.sid], json = true,
                                            steps = steps, deadline = 60000 }
                    end
                end
            end
        end
        clients = sio.start_clients(dir, list)
        local function marks(prefix)
            local names = {}
            for _, c in ipairs(roster) do names[#names + 1] = prefix .. c.name end
            clients.wait_marks(names, 20)
        end
        marks("ready-")

        -- each gateway worker's sockets (GET /who until both workers answered)
        if not gw_err then
            for name, node in pairs(nodes) do
                who[name] = {}
                for _ = 1, 200 do
                    local _, body = node:get("/who")
                    local ok, w = pcall(cjson.decode, body or "")
                    if ok and type(w) == "table" and w.pid then who[name][tostring(w.pid)] = w.nsps end
                    local n = 0
                    for _ in pairs(who[name]) do n = n + 1 end
                    if n == 2 then break end
                end
            end
        end

        -- each socket's own id room: one call per socket, first in phase 1
        local own = {}
        for _, c in ipairs(roster) do
            local ids
            for _ = 1, 50 do
                local ok, v = pcall(cjson.decode, proc.read_file(dir .. "/ready-" .. c.name) or "")
                if ok and type(v) == "table" then ids = v break end
                socket.sleep(0.02)
            end
            ids = ids or {}
            if type(ids.main) == "string" then
                own[#own + 1] = { key = c.key, chain = { { "to", ids.main }, { "emit", "notice", "own-id" } },
                                  label = "own-id", event = "notice", json = '["own-id"]', only = c.name,
                                  sock = "main" }
            end
            if type(ids.adm) == "string" then
                own[#own + 1] = { key = c.key, chain = { { "of", "/admin" }, { "to", ids.adm },
                                                         { "emit", "notice", "own-id-adm" } },
                                  label = "own-id-adm", event = "notice", json = '["own-id-adm"]', only = c.name,
                                  sock = "adm" }
            end
        end
        for i = #own, 1, -1 do table.insert(PHASES[1], 1, own[i]) end

        for k, phase in ipairs(PHASES) do
            local res = publish(redis.port, phase)
            sent[k] = {}
            for i, call in ipairs(phase) do sent[k][i] = { call = call, result = res[i] } end
            if k < #PHASES then marks("p" .. k .. "-") end
        end
        for _, o in ipairs(clients.result(30)) do out[o.name] = o end

        -- EMITTER_SPEC_DUMP=<file>: what each client got and where each call
        -- was published, as JSON lines, for a look by hand
        local dump = os.getenv("EMITTER_SPEC_DUMP")
        if dump then
            local f = assert(io.open(dump, "w"))
            f:write(cjson.encode { who = who }, "\n")
            for k, phase in ipairs(sent) do
                for _, x in ipairs(phase) do
                    local chain = x.call.chain
                    f:write(cjson.encode { phase = k, key = x.call.key,
                                           chain = type(chain) == "string" and chain or cjson.encode(chain),
                                           publishes = x.result.publishes }, "\n")
                end
            end
            for _, c in ipairs(roster) do
                local o = out[c.name]
                local rec = { client = c.name, error = o.error, sockets = {}, closes = {} }
                for _, sname in ipairs(sockets_of(c.persona)) do
                    local sk = o.sockets[sname] or {}
                    local evs = {}
                    for _, e in ipairs(observed(o, sname)) do evs[#evs + 1] = e.event .. " " .. tostring(e.json) end
                    rec.sockets[sname] = { events = evs, disconnect = sk.disconnect and sk.disconnect.reason or false }
                end
                for _, cl in ipairs(o.engine.closes) do rec.closes[#rec.closes + 1] = cl.reason end
                f:write(cjson.encode(rec), "\n")
            end
            f:close()
        end
    end)

    teardown(function()
        if clients then clients.stop() end
        if ref then ref.stop() end
        if ref2 then ref2.stop() end
        for _, name in ipairs { "A", "B", "C" } do
            if nodes[name] then sio.stop_gateway(nodes[name], not gw_err, "node " .. name .. "'s") end
        end
        if redis then redis:stop() end
    end)

    it("every client connected as its user and joined its rooms", function()
        local bad = {}
        for _, which in ipairs { "node", "gw" } do
            for _, c in ipairs(clients_on(which)) do
                local o = out[c.name]
                local hello = o and o.sockets.main and o.sockets.main.events[1]
                if not (hello and hello.event == "hello" and hello.args[1].user.id == c.persona.user) then
                    bad[#bad + 1] = c.name .. ": no greeting as user " .. c.persona.user .. ": "
                                    .. cjson.encode(o and o.sockets or {})
                end
                if c.persona.adm and not (o.sockets.adm and o.sockets.adm.connects == 1) then
                    bad[#bad + 1] = c.name .. ": not connected to /admin"
                end
                for i, room in ipairs(c.persona.rooms or {}) do
                    local st = o.steps[(c.persona.adm and 2 or 1) + i]
                    if not (st and st.ack and st.ack[1] == "joined" and st.ack[2] == room) then
                        bad[#bad + 1] = c.name .. ": did not join " .. room
                    end
                end
            end
            assert(#bad == 0, table.concat(bad, "\n"))
            if which == "node" then need_gateway() end
        end
    end)

    -- (reuseport spreads the connections over a node's workers: that both
    -- workers of A or of B hold some is all but certain with 8 connections each)
    it("the gateway nodes hold every client's sockets, over both workers of a node", function()
        need_gateway()
        local want = { A = { ["/"] = 8, ["/admin"] = 4 }, B = { ["/"] = 8, ["/admin"] = 4 }, C = { ["/"] = 4 } }
        local got, spread, both_used = {}, {}, false
        for name, per_pid in pairs(who) do
            local sum, parts, used = {}, {}, 0
            for pid, nsps in pairs(per_pid) do
                local any = false
                for nsp, n in pairs(nsps) do
                    sum[nsp] = (sum[nsp] or 0) + n
                    any = any or n > 0
                end
                if any then used = used + 1 end
                parts[#parts + 1] = pid .. " " .. cjson.encode(nsps)
            end
            table.sort(parts)
            got[name], spread[name] = sum, table.concat(parts, ", ")
            assert.equal(2, #parts, "node " .. name .. ": not both workers answered /who")
            if name ~= "C" and used == 2 then both_used = true end
        end
        assert.same(want, got, "per worker: " .. cjson.encode(spread))
        assert(both_used, "neither A nor B has sockets on both workers: " .. cjson.encode(spread))
    end)

    it("the Node server delivers every emitter call as socket.io says (the baseline)", function()
        check("node", nil, "all events")
    end)

    it("to(user room): user:<id> holds every socket of that user, on every node and worker", function()
        on_both({ "user-ann", "user-bob", "nobody", "volatile-cat", "compress-zero" }, "to(user:<id>)")
    end)

    it("to(custom room) after the clients joined it through the app, one delivery per socket for several rooms",
       function()
        on_both({ "room-blue", "ann-or-blue" }, "to(room)")
    end)

    it("except(room), with to() or alone, by user room and by joined room", function()
        on_both({ "blue-except-bob", "all-except-ann", "all-except-blue-zero", "admin-except-cat" }, "except")
    end)

    it("emit() to everyone, and of('/admin') to that namespace only", function()
        on_both({ "everyone", "admin-all", "admin-cat", "admin-except-cat", "staff-on-root" }, "namespaces")
    end)

    it("to(socket id): each socket is in its own id's room", function()
        on_both({ "own-id", "own-id-adm" }, "to(socket.id)")
    end)

    it("binary arguments (Buffers, nested, empty) arrive as binary, and JSON values as socket.io sends them",
       function()
        on_both({ "bin", "types", "bare" }, "binary and JSON arguments")
    end)

    it("socketsJoin, then an emit to the joined room at once", function()
        on_both({ "red-joined", "green-joined", "staff-joined", "staff-on-root", "myapp-mine-joined" }, "socketsJoin")
    end)

    it("socketsLeave, then an emit to the left room reaches nobody; other rooms stay", function()
        on_both({ "red-left", "green-left", "teal-kept", "staff-after-ann-left", "myapp-mine-left" },
                "socketsLeave")
    end)

    it("disconnectSockets: io server disconnect; close = true closes the connection; /admin stays otherwise",
       function()
        local function verify(which)
            local bad = {}
            for _, c in ipairs(clients_on(which)) do
                local o = out[c.name]
                local want = ENDS[c.key][c.persona.name]
                for _, s in ipairs(sockets_of(c.persona)) do
                    local d = o.sockets[s] and o.sockets[s].disconnect
                    local got = d and d.reason or false
                    if got ~= want[s] then
                        bad[#bad + 1] = ("%s (%s): disconnect %s, want %s"):format(c.name, s, tostring(got),
                                                                                   tostring(want[s]))
                    end
                    if which == "gw" then
                        local r = out[counterpart(c).name].sockets[s].disconnect
                        if (r and r.reason or false) ~= got then
                            bad[#bad + 1] = c.name .. " (" .. s .. "): the Node server's client saw "
                                            .. tostring(r and r.reason) .. ", this one " .. tostring(got)
                        end
                    end
                end
                local closes = {}
                for _, cl in ipairs(o.engine.closes) do closes[#closes + 1] = cl.reason end
                if (#closes > 0) ~= (want.engine_closed == true) then
                    bad[#bad + 1] = c.name .. ": engine closes " .. cjson.encode(closes) .. ", want "
                                    .. (want.engine_closed and "one" or "none")
                end
                if which == "gw" then
                    local rc = {}
                    for _, cl in ipairs(out[counterpart(c).name].engine.closes) do rc[#rc + 1] = cl.reason end
                    if table.concat(rc, ",") ~= table.concat(closes, ",") then
                        bad[#bad + 1] = c.name .. ": engine closes " .. table.concat(closes, ",")
                                        .. ", the Node server's client " .. table.concat(rc, ",")
                    end
                end
                if o.engine.reconnect_attempts ~= 0 then bad[#bad + 1] = c.name .. ": reconnected" end
            end
            assert(#bad == 0, (which == "node" and "the Node server" or "the gateway") .. ":\n"
                   .. table.concat(bad, "\n"))
        end
        verify("node")
        check("node", { "root-after", "admin-after" }, "after disconnectSockets")
        need_gateway()
        verify("gw")
        check("gw", { "root-after", "admin-after" }, "after disconnectSockets")
    end)

    it("a custom key prefix: calls on key myapp reach only the servers on myapp, and the others only theirs",
       function()
        local mine = {}
        for _, phase in ipairs(sent) do
            for _, x in ipairs(phase) do
                if x.call.key == MYKEY and x.call.label then mine[#mine + 1] = x.call.label end
            end
        end
        local function only_mine(which)
            for _, c in ipairs(clients_on(which)) do
                for _, s in ipairs(sockets_of(c.persona)) do
                    for _, e in ipairs(observed(out[c.name], s)) do
                        local theirs = e.label:match("^myapp%-") ~= nil
                        assert(theirs == (c.key == MYKEY) or e.label == "sync" or e.label:match("^own%-id"),
                               c.name .. " got " .. e.label .. ", published on the other key")
                    end
                end
            end
        end
        check("node", mine, "key myapp")
        only_mine("node")
        need_gateway()
        check("gw", mine, "key myapp")
        only_mine("gw")
    end)

    it("every gateway client got exactly what the same user's client on the Node server got, in order", function()
        check("node", nil, "all events")
        need_gateway()
        check("gw", nil, "all events")
    end)

    it("each emitter message reached the Node server and every worker of the gateway nodes on its key", function()
        local bad = {}
        for k, phase in ipairs(sent) do
            for i, x in ipairs(phase) do
                for _, p in ipairs(x.result.publishes) do
                    local want = want_receivers(x.call.key, true)
                    if p.receivers < 1 or (not gw_err and p.receivers ~= want) then
                        bad[#bad + 1] = ("phase %d call %d: %s reached %d, want %d"):format(k, i, p.channel,
                                                                                             p.receivers, want)
                    end
                end
            end
        end
        assert(#bad == 0, table.concat(bad, "\n"))
        need_gateway()
    end)

    ---------------------------------------------------------------------------
    describe("malformed and oversize messages published by hand", function()
        local bout = {} -- name -> outcome
        local groups = {} -- name -> { logs = { A = {...}, B = {...} }, up_before = bool }
        local bnames = {}
        local bclients

        local USER1 = KEY .. "#/#user:1#"
        local function good(n)
            return notice("good-" .. n, nil, { { "to", "user:1" } })
        end
        local function raw(r) return { raw = r } end
        local function packet(data, opts)
            return { "emitter", { type = 2, data = data, nsp = "/" }, opts }
        end
        local GROUPS = {
            { name = "undecodable", calls = {
                raw { channel = KEY .. "#/#", b64 = "wf8AZ2FyYmFnZQ==" }, -- c1 ff 00 "garbage"
                raw { channel = USER1, msgpack = packet({ "notice", "truncated" }, { rooms = { "user:1" } }),
                      truncate = 20 },
                good(1) } },
            { name = "wrong shape", calls = {
                raw { channel = KEY .. "#/#", msgpack = { a = 1 } },
                raw { channel = KEY .. "#/#", msgpack = 42 },
                raw { channel = USER1, msgpack = packet("not a list", { rooms = { "user:1" } }) },
                raw { channel = KEY .. "#/#",
                      msgpack = packet({ "notice", "rooms-not-a-list" }, { rooms = "user:1" }) },
                good(2) } },
            { name = "too deep", calls = {
                raw { channel = USER1, msgpack = packet({ "notice", { ["$deep"] = 500 } }, { rooms = { "user:1" } }) },
                good(3) } },
            { name = "request garbage", calls = {
                raw { channel = KEY .. "-request#/#", text = "{not json" },
                raw { channel = KEY .. "-request#/#", text = "[1,2,3]" },
                raw { channel = KEY .. "-request#/#",
                      text = '{"type":2,"opts":{"rooms":["user:1"],"except":[]},"rooms":"not-a-list"}' },
                request { { "to", "user:1" }, { "socketsJoin", "after-garbage" } },
                notice("good-4", nil, { { "to", "after-garbage" } }) } },
            { name = "oversize", calls = {
                notice("oversize", nil, {}), -- replaced below: 1.5 MiB of argument
                good(5) } },
            { name = "after", calls = { good(6) } },
        }
        GROUPS[5].calls[1].chain = { { "to", "user:1" }, { "emit", "notice", { ["$repeat"] = "x", n = 1572864 } } }

        local function new_lines(node, from)
            local lines = {}
            for line in node:error_log():sub(from + 1):gmatch("[^\n]+") do
                if (line:match("%[warn%]") or line:match("%[error%]")) and line:match("passport") then
                    lines[#lines + 1] = line
                end
            end
            return lines
        end

        setup(function()
            -- the redis-adapter throws out of its Redis client on these
            if ref then ref.stop() ref = nil end
            if ref2 then ref2.stop() ref2 = nil end
            if gw_err then return end
            local bdir = redis_server.tmpdir("sioemitterbad")
            local list = {}
            for _, n in ipairs { "A1", "A2", "B1", "B2" } do
                local name = "ann@" .. n
                bnames[#bnames + 1] = name
                list[#list + 1] = { name = name, url = "http://127.0.0.1:" .. nodes[n:sub(1, 1)].port,
                                    cookie = cookies["em-ann"], json = true, deadline = 60000, steps = {
                                        { op = "open", expect = "hello" },
                                        { op = "mark", file = bdir .. "/ready-" .. name },
                                        { op = "gate", file = bdir .. "/done", timeout = 40000 },
                                        { op = "sleep", ms = 300 } } }
            end
            bclients = sio.start_clients(bdir, list)
            local marks = {}
            for _, n in ipairs(bnames) do marks[#marks + 1] = "ready-" .. n end
            bclients.wait_marks(marks, 10)
            for _, g in ipairs(GROUPS) do
                local rec = { logs = {} }
                groups[g.name] = rec
                rec.up_before = wait_receivers(KEY, want_receivers(KEY, false), 5)
                local from = { A = #nodes.A:error_log(), B = #nodes.B:error_log() }
                rec.result = publish(redis.port, g.calls)
                if g.name ~= "after" then
                    local deadline = socket.gettime() + 3
                    repeat
                        socket.sleep(0.05)
                        rec.logs.A, rec.logs.B = new_lines(nodes.A, from.A), new_lines(nodes.B, from.B)
                    until (#rec.logs.A > 0 and #rec.logs.B > 0) or socket.gettime() > deadline
                end
            end
            socket.sleep(0.5)
            bclients.open_gate("done")
            for _, o in ipairs(bclients.result(15)) do bout[o.name] = o end
            local dump = os.getenv("EMITTER_SPEC_DUMP")
            if dump then
                local f = assert(io.open(dump, "a"))
                for _, g in ipairs(GROUPS) do
                    f:write(cjson.encode { group = g.name, logs = groups[g.name].logs,
                                          subscribed_before = groups[g.name].up_before }, "\n")
                end
                for _, name in ipairs(bnames) do
                    local evs = {}
                    for _, e in ipairs(observed(bout[name], "main")) do evs[#evs + 1] = e.json end
                    f:write(cjson.encode { client = name, events = evs }, "\n")
                end
                f:close()
            end
        end)

        teardown(function()
            if bclients then bclients.stop() end
        end)

        -- Every client got good-1 .. good-<upto> (those in want when given),
        -- and nothing else.
        local function got_goods(want_labels)
            local want = {}
            for _, l in ipairs(want_labels) do want[#want + 1] = entry(l, "notice", '["' .. l .. '"]') end
            local bad = {}
            for _, name in ipairs(bnames) do
                local o = bout[name]
                local got = observed(o, "main")
                local relevant = set_of(want_labels)
                local seen = {}
                for _, e in ipairs(got) do
                    if relevant[e.label] then seen[#seen + 1] = e end
                end
                if not same_list(want, seen) then
                    bad[#bad + 1] = name .. " got\n" .. show(got)
                end
            end
            return bad
        end

        local function dropped_and_logged(gname, goods)
            need_gateway()
            local g = groups[gname]
            local bad = got_goods(goods)
            if #bad > 0 then
                table.insert(bad, 1, table.concat(goods, ", ") .. ", published right after the bad message(s), "
                                     .. "did not arrive everywhere:")
            end
            for _, n in ipairs { "A", "B" } do
                if #g.logs[n] == 0 then
                    bad[#bad + 1] = "node " .. n .. "'s error log has no new [warn]/[error] passport line; "
                                    .. "it ends:\n" .. log_tail(nodes[n], 5)
                end
            end
            if #bad > 0 then
                for _, n in ipairs { "A", "B" } do
                    bad[#bad + 1] = "node " .. n .. " logged meanwhile:\n    " .. table.concat(g.logs[n], "\n    ")
                end
            end
            assert(#bad == 0, gname .. ":\n" .. table.concat(bad, "\n"))
        end

        it("garbage bytes and truncated MessagePack: dropped, logged, and the next message delivered", function()
            dropped_and_logged("undecodable", { "good-1" })
        end)

        it("MessagePack of the wrong shape: dropped, logged, and the next message delivered", function()
            dropped_and_logged("wrong shape", { "good-2" })
        end)

        it("arguments nested 500 deep: dropped, logged, and the next message delivered", function()
            dropped_and_logged("too deep", { "good-3" })
        end)

        it("garbage on the request channel: dropped, logged, and the next request and message work", function()
            dropped_and_logged("request garbage", { "good-4" })
        end)

        it("a message over max_message_size (1.5 MiB): dropped, logged, and the one published right after delivered",
           function()
            need_gateway()
            local size = groups.oversize.result[1].publishes[1].bytes
            assert(size > 1048576, "the oversize message has " .. size .. " bytes")
            dropped_and_logged("oversize", { "good-5" })
        end)

        -- (good-5, right after the oversize message, is the case above's)
        it("the subscriber goes on: every client got the good messages, in order, and nothing else", function()
            need_gateway()
            assert(groups.after.up_before, "the gateway's subscribers were not all back on the emitter's channels")
            local want = {}
            for _, i in ipairs { 1, 2, 3, 4, 6 } do
                want[#want + 1] = entry("good-" .. i, "notice", '["good-' .. i .. '"]')
            end
            local bad = {}
            for _, name in ipairs(bnames) do
                local got = {}
                for _, e in ipairs(observed(bout[name], "main")) do
                    if e.label ~= "good-5" then got[#got + 1] = e end
                end
                if not same_list(want, got) then bad[#bad + 1] = name .. " got\n" .. show(got, want) end
            end
            assert(#bad == 0, table.concat(bad, "\n"))
        end)
    end)
end)
