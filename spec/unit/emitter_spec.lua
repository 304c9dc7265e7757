-- The socket.io emitter's receiving side (lua/resty/passport/emitter.lua),
-- in plain LuaJIT: messages made with lua-messagepack as
-- @socket.io/redis-emitter 5 makes them ([uid, packet, opts], JSON
-- requests), delivered to sockets in the registry; and the bad ones,
-- dropped with one log line per kind.  spec/integration/socketio_emitter_spec.lua
-- runs the real npm emitter against real gateways and socket.io.
local emitter = require "resty.passport.emitter"
local registry = require "resty.passport.registry"
local host = require "resty.passport.host"
local cjson = require "cjson"

-- A MessagePack writer of our own (the emitter loads a private copy of the
-- library, so this one's settings stay here).
local mp = dofile(package.searchpath("MessagePack", package.path))

-- lua-messagepack writes every Lua string as "str"; socket.io's Buffers
-- travel as "bin": raw bytes for a bin 8 of s.
local function bin8(s) return "\xC4" .. string.char(#s) .. s end

-- [uid, { type = 2, data = data, nsp = nsp }, { rooms, except, flags }],
-- with data given as already-encoded MessagePack items (so bin and nil can
-- be in it).
local function broadcast(nsp, items, rooms, except, flags)
    local function array(list)
        local out = { string.char(0x90 + #list) }
        for _, x in ipairs(list) do out[#out + 1] = x end
        return table.concat(out)
    end
    local strs = {}
    for i, r in ipairs(rooms or {}) do strs[i] = mp.pack(r) end
    local ex = {}
    for i, r in ipairs(except or {}) do ex[i] = mp.pack(r) end
    local opts = "\x83" .. mp.pack("rooms") .. array(strs) .. mp.pack("except") .. array(ex)
                 .. mp.pack("flags") .. mp.pack(flags or {})
    local packet = "\x83" .. mp.pack("type") .. mp.pack(2) .. mp.pack("data") .. array(items)
                   .. mp.pack("nsp") .. mp.pack(nsp)
    return array { mp.pack("emitter"), packet, opts }
end

local function item(v) return mp.pack(v) end
local NIL = "\xC0"

-- A socket.io socket (a wire with event()) or a plain WebSocket.
local made = {}
local function socket(id, opts)
    opts = opts or {}
    local s = { id = id, nsp = opts.nsp, got = {}, closed = false, _key = opts.key }
    if opts.plain then
        s.nsp = nil
        s.wire = { encode = function(text) return "T:" .. text end }
    else
        s.nsp = s.nsp or "/"
        s.wire = { event = function(packet, atts)
            return "E:" .. packet .. (atts and "|" .. #atts .. ":" .. table.concat(atts, ",") or "")
        end }
        function s.disconnect(self, close) self.closed = close and "close" or "nsp" end
    end
    function s.send_frame(self, bytes) self.got[#self.got + 1] = bytes return true end
    function s.close(self) self.closed = "close" end
    if opts.busy then function s.writable() return false end end
    if opts.writable then function s.writable() return true end end
    registry.add(s)
    made[#made + 1] = s
    return s
end

local logged
local real_log = host.log

describe("emitter", function()
    local pmessage

    setup(function()
        local patterns = emitter.configure { key = "socket.io" }
        assert.same({ "socket.io#*", "socket.io-request#*" }, patterns)
        pmessage = function(channel, payload)
            return emitter.on_pmessage("socket.io#*", channel, payload)
        end
    end)

    before_each(function()
        logged = {}
        host.log = function(level, msg) logged[#logged + 1] = level .. " " .. msg end
    end)

    after_each(function()
        host.log = real_log
        for _, s in ipairs(made) do registry.remove(s) end
        made = {}
    end)

    it("checks its options at configuration time", function()
        for _, bad in ipairs { "x", { key = "" }, { key = "a*" }, { key = 1 }, { nope = 1 },
                               { user_room = "" } } do
            assert.has_error(function() emitter.configure(bad) end)
        end
        assert.same({ "myapp#*", "myapp-request#*" }, emitter.configure { key = "myapp" })
        emitter.configure { key = "socket.io" }
    end)

    it("delivers a broadcast to its namespace, by room, by id and by user, except some", function()
        local a = socket("A", { key = "n1" })
        local b = socket("B", { key = "n2" })
        local admin = socket("C", { key = "n1", nsp = "/admin" })
        registry.join(b, "club")
        assert.is_true(pmessage("socket.io#/#", broadcast("/", { item("hi"), item(1) })))
        local packet = '2["hi",1]'
        assert.same({ "E:" .. packet }, a.got)
        assert.same({ "E:" .. packet }, b.got)
        assert.same({}, admin.got)
        pmessage("socket.io#/#club#", broadcast("/", { item("c") }, { "club" }))
        assert.same({ "E:2[\"c\"]" }, { b.got[2] })
        assert.is_nil(a.got[2])
        pmessage("socket.io#/#user:1#", broadcast("/", { item("u") }, { "user:1" }))
        assert.equal('E:2["u"]', a.got[2])
        assert.is_nil(b.got[3])
        pmessage("socket.io#/#B#", broadcast("/", { item("me") }, { "B" }))
        assert.equal('E:2["me"]', b.got[3])
        pmessage("socket.io#/#", broadcast("/", { item("not 1") }, {}, { "user:1" }))
        assert.is_nil(a.got[3])
        assert.equal('E:2["not 1"]', b.got[4])
        pmessage("socket.io#/admin#", broadcast("/admin", { item("adm") }))
        assert.same({ 'E:2/admin,["adm"]' }, admin.got)
    end)

    it("takes the operator's user room prefix for the user rooms", function()
        local a = socket("A", { key = "n1" })
        emitter.configure { key = "socket.io", user_room = "u-" }
        pmessage("socket.io#/#u-1#", broadcast("/", { item("mine") }, { "u-1" }))
        emitter.configure { key = "socket.io" }
        pmessage("socket.io#/#u-1#", broadcast("/", { item("not a user room now") }, { "u-1" }))
        assert.same({ 'E:2["mine"]' }, a.got)
    end)

    it("keeps nulls and makes binary attachments; a plain WebSocket gets the JSON", function()
        local s = socket("S")
        local plain = socket("P", { plain = true })
        -- an empty array stays [] and an empty map {}; numbers exact
        pmessage("socket.io#/#", broadcast("/", { item("n"), NIL, item({ 1, 2 }), "\x90", "\x80",
                                                  item(0.1 + 0.2) }))
        assert.same({ 'E:2["n",null,[1,2],[],{},0.30000000000000004]' }, s.got)
        assert.same({ 'T:["n",null,[1,2],[],{},0.30000000000000004]' }, plain.got)
        pmessage("socket.io#/#", broadcast("/", { item("b"), bin8("\0\1\2") }))
        assert.equal('E:51-["b",{"_placeholder":true,"num":0}]|1:\0\1\2', s.got[2])
        -- no JSON for binary: the plain WebSocket is skipped
        assert.is_nil(plain.got[2])
    end)

    it("skips sockets that cannot take a volatile message now", function()
        local busy = socket("X", { busy = true })
        local free = socket("Y", { writable = true })
        pmessage("socket.io#/#", broadcast("/", { item("v") }, {}, {}, { volatile = true }))
        assert.same({}, busy.got)
        assert.same({ 'E:2["v"]' }, free.got)
        pmessage("socket.io#/#", broadcast("/", { item("w") }))
        assert.same({ 'E:2["w"]' }, busy.got)
    end)

    it("joins, leaves and disconnects on requests", function()
        local a = socket("A", { key = "n1" })
        local b = socket("B", { key = "n2" })
        local req = function(t) return emitter.on_pmessage("socket.io-request#*", "socket.io-request#/#",
                                                           cjson.encode(t)) end
        assert.is_true(req { type = 2, opts = { rooms = { "user:1" }, except = {} }, rooms = { "vip" } })
        assert.equal(1, #registry.of_room("/", "vip"))
        req { type = 3, opts = { rooms = {}, except = {} }, rooms = { "vip" } }
        assert.equal(0, #registry.of_room("/", "vip"))
        req { type = 4, opts = { rooms = {}, except = { "user:2" } }, close = true }
        assert.equal("close", a.closed)
        assert.is_false(b.closed)
        req { type = 4, opts = { rooms = { "B" }, except = {} }, close = false }
        assert.equal("nsp", b.closed)
        -- serverSideEmit and the requests that want answers: not ours
        assert.is_true(req { type = 6, data = { "x" } })
        assert.same({}, logged)
    end)

    it("drops bad messages with one log line per kind, and goes on", function()
        local s = socket("S")
        local bad = {
            "garbage\xC1",                                  -- no MessagePack
            broadcast("/", { item("x") }):sub(1, -3),      -- truncated
            mp.pack({ "emitter", "not a packet" }),         -- shape
            mp.pack({ "emitter", { type = 2, data = { 1 }, nsp = "/" }, {} }), -- no event name
            mp.pack({ "emitter", { type = 2, data = { "e" }, nsp = "/" }, { rooms = { 1 } } }),
        }
        -- nested 40 deep
        local deep = item("leaf")
        for _ = 1, 40 do deep = "\x91" .. deep end
        bad[#bad + 1] = broadcast("/", { item("deep"), deep })
        -- an array that says it holds 4 billion items
        bad[#bad + 1] = "\x93" .. mp.pack("emitter") .. "\xDD\xFF\xFF\xFF\xFF"
        for _, msg in ipairs(bad) do
            assert.is_true(pmessage("socket.io#/#", msg))
            assert.is_true(pmessage("socket.io#/#", msg))
        end
        assert.same({}, s.got)
        -- one line per kind, not per message
        local kinds = {}
        for _, line in ipairs(logged) do
            local kind = line:match("dropped %(([^)]+)%)")
            assert(kind, line)
            assert.is_nil(kinds[kind], "logged twice: " .. kind)
            kinds[kind] = true
        end
        assert.truthy(kinds["not MessagePack"])
        assert.truthy(kinds.depth)
        -- requests too
        assert.is_true(emitter.on_pmessage("socket.io-request#*", "socket.io-request#/#", "{not json"))
        -- and the next good message is delivered
        pmessage("socket.io#/#", broadcast("/", { item("ok") }))
        assert.same({ 'E:2["ok"]' }, s.got)
        -- other channels are not the emitter's
        assert.is_false(emitter.on_pmessage("__keyspace@0__:sess:*", "__keyspace@0__:sess:x", "set"))
    end)
end)


