-- The gateway as one of the servers socket.io's Redis emitter publishes
-- to (npm @socket.io/redis-emitter 5, and the broadcasts of
-- @socket.io/redis-adapter 8 servers on the same key): what they publish on
-- Redis reaches this worker's sockets.  bus.lua subscribes to the
-- patterns and hands each message here.
--
--   <key>#<nsp>#[<room>#]  a broadcast: MessagePack [uid, packet, opts],
--                          packet { type = 2 (or 5), data = { event, args... },
--                          nsp }, opts { rooms, except, flags { volatile } }
--   <key>-request#<nsp>#   a request, JSON { type, opts { rooms, except },
--                          rooms | close }: 2 socketsJoin, 3 socketsLeave,
--                          4 disconnectSockets (6 serverSideEmit: no listener
--                          here; the rest ask for answers a gateway gives not)
--
-- Patterns, not channels: redis-adapter servers count the subscribers of
-- the request channel (PUBSUB NUMSUB, which counts no pattern) to know how
-- many answers to wait for, and the gateway answers none.
--
-- Rooms are socket.io's: a socket's own id, the rooms it joined, and
-- "user:<passport.user>" for every logged-in socket (user_room renames
-- that prefix), so that emitter.to("user:42") needs no server code.  A
-- plain WebSocket (terminate mode) is in namespace "/" and receives an
-- event as the JSON text [event, args...] (none with binary arguments).
--
-- Decoding is Debian's lua-messagepack, a private instance of it whose
-- "bin" and "nil" are told apart (socket.io needs both).  Messages are
-- bounded by the subscriber's max_message_size and by MAX_DEPTH; a bad one
-- is dropped and logged once per kind, and the subscriber goes on.
local cjson = require "cjson.safe"
local parser = require "resty.passport.socketio.parser"
local registry = require "resty.passport.registry"
local host = require "resty.passport.host"
local metrics = require "resty.passport.metrics"

local binary = parser.binary
local as_array = parser.array
local encode_event = parser.encode_event
local null = cjson.null
local json_decode = cjson.decode
local byte = string.byte
local error = error
local find = string.find
local next = next
local pairs = pairs
local pcall = pcall
local sub = string.sub
local tostring = tostring
local type = type

local _M = { _VERSION = "0.1.0" }

-- The same counters as emit's (bus.lua): a broadcast received, delivered
-- to sockets, or dropped.
local K_RECEIVED = metrics.key("passport_emits_received_total")
local K_DELIVERED = metrics.key("passport_emit_deliveries_total")
local K_DROP_FULL = metrics.key("passport_emit_drops_total", { reason = "queue_full" })
local K_DROP_CLOSED = metrics.key("passport_emit_drops_total", { reason = "closed" })

local MAX_DEPTH = 32
local MAX_ROOMS = 1000

---------------------------------------------------------------------------
-- MessagePack: lua-messagepack, loaded afresh so that the changes below
-- touch no other user of it.  Its decoder makes strings of "bin" and nil of
-- "nil"; socket.io needs a Buffer and a null, so those two decoders are
-- wrapped (they are upvalues of the library's unpack_cursor).

local function load_msgpack()
    local path = package.searchpath("MessagePack", package.path)
    if not path then return nil, "lua-messagepack (MessagePack.lua) not found" end
    local chunk, err = loadfile(path)
    if not chunk then return nil, err end
    local mp = chunk()
    local unpackers
    for i = 1, 64 do
        local name, value = debug.getupvalue(mp.unpack_cursor, i)
        if not name then break end
        if name == "unpackers" then unpackers = value break end
    end
    if type(unpackers) ~= "table" then
        return nil, "this lua-messagepack has no unpackers table to adapt"
    end
    for code = 0xC4, 0xC6 do -- bin 8, 16, 32
        local raw = unpackers[code]
        unpackers[code] = function(c) return binary(raw(c)) end
    end
    unpackers[0xC0] = function() return null end
    -- an empty array stays one ([] where a Lua table would say {})
    local function mark(raw)
        return function(c, val)
            local t = raw(c, val)
            if t[1] == nil then as_array(t) end
            return t
        end
    end
    for code = 0x90, 0x9F do unpackers[code] = mark(unpackers[code]) end -- fixarray
    unpackers[0xDC] = mark(unpackers[0xDC])
    unpackers[0xDD] = mark(unpackers[0xDD])
    return mp
end

local mp, mp_err

---------------------------------------------------------------------------
-- Logging a bad message once per kind per worker.

local warned = {}

local function drop(kind, detail)
    if not warned[kind] then
        warned[kind] = true
        host.log("warn", "passport: emitter message dropped (" .. kind .. "): " .. tostring(detail)
                 .. " (further ones of this kind are dropped without a log line)")
    end
    return 0
end

-- Whether v nests no deeper than MAX_DEPTH (tables only; binary values
-- are tables with a data field and nothing under it).
local function shallow(v, depth)
    if type(v) ~= "table" then return true end
    if depth > MAX_DEPTH then return false end
    for _, x in next, v do
        if not shallow(x, depth + 1) then return false end
    end
    return true
end

-- A list of room names, or nil.
local function rooms_of(v)
    if v == nil or v == null then return {} end
    if type(v) ~= "table" then return nil end
    local n = #v
    if n > MAX_ROOMS then return nil end
    for i = 1, n do
        if type(v[i]) ~= "string" then return nil end
    end
    return v
end

---------------------------------------------------------------------------
-- The sockets an operation is for.

local conf -- { key, broadcast = key .. "#", request = key .. "-request#", user_room }

local function room_sockets(nsp, room)
    local prefix = conf.user_room
    if prefix and sub(room, 1, #prefix) == prefix then
        room = "user:" .. sub(room, #prefix + 1)
    end
    return registry.of_room(nsp, room)
end

local function everyone() return true end

-- The sockets of namespace nsp in any of rooms (every one when rooms is
-- empty) and in none of except, each once.
local function targets(nsp, rooms, except)
    local out, n = {}, 0
    local seen = {}
    if except[1] ~= nil then
        for i = 1, #except do
            local list = room_sockets(nsp, except[i])
            for j = 1, #list do seen[list[j]] = true end
        end
    end
    if rooms[1] == nil then
        local all = registry.filter(everyone, nsp)
        for i = 1, #all do
            local s = all[i]
            if not seen[s] then
                n = n + 1
                out[n] = s
            end
        end
        return out
    end
    for i = 1, #rooms do
        local list = room_sockets(nsp, rooms[i])
        for j = 1, #list do
            local s = list[j]
            if not seen[s] then
                seen[s] = true
                n = n + 1
                out[n] = s
            end
        end
    end
    return out
end

---------------------------------------------------------------------------
-- Broadcasts.

local function broadcast(payload)
    if not mp then
        if mp_err then return drop("no decoder", mp_err) end
        mp, mp_err = load_msgpack()
        if not mp then return drop("no decoder", mp_err) end
    end
    local ok, msg = pcall(mp.unpack, payload)
    if not ok then return drop("not MessagePack", msg) end
    if type(msg) ~= "table" or type(msg[2]) ~= "table" then
        return drop("shape", "not [uid, packet, opts]")
    end
    local packet, opts = msg[2], msg[3]
    if opts == nil or opts == null then opts = {} end
    local data = packet.data
    if (packet.type ~= 2 and packet.type ~= 5) or type(data) ~= "table" or type(data[1]) ~= "string"
       or type(opts) ~= "table" then
        return drop("shape", "not an EVENT packet with an event name")
    end
    local nsp = packet.nsp
    if nsp == nil or nsp == null then nsp = "/" end
    if type(nsp) ~= "string" then return drop("shape", "namespace not a string") end
    if not shallow(data, 1) then return drop("depth", "data nested deeper than " .. MAX_DEPTH) end
    local rooms, except = rooms_of(opts.rooms), rooms_of(opts.except)
    if not rooms or not except then return drop("shape", "rooms or except not a list of names") end
    local flags = type(opts.flags) == "table" and opts.flags or {}
    local sockets = targets(nsp, rooms, except)
    if sockets[1] == nil then return 0 end
    local n_args = #data - 1
    local args = {}
    for i = 1, n_args do args[i] = data[i + 1] end
    local str, atts = encode_event(nsp, nil, data[1], n_args, args)
    if not str then return drop("encoding", atts) end
    local encoded, sent = {}, 0
    for i = 1, #sockets do
        local s = sockets[i]
        if not (flags.volatile and s.writable and not s:writable()) then
            local wire = s.wire
            local bytes = encoded[wire]
            if bytes == nil then
                if wire.event then
                    bytes = wire.event(str, atts)
                else
                    -- a plain WebSocket: the packet's JSON [event, args...]
                    -- after its type ("2"); only "/" has them
                    bytes = atts == nil and wire.encode(sub(str, 2), false) or false
                end
                encoded[wire] = bytes
            end
            if bytes then
                local queued, err = s:send_frame(bytes)
                if queued then
                    sent = sent + 1
                elseif metrics.enabled() then
                    metrics.add(err == "closed" and K_DROP_CLOSED or K_DROP_FULL)
                end
            end
        end
    end
    if sent > 0 and metrics.enabled() then metrics.add(K_DELIVERED, sent) end
    return sent
end

---------------------------------------------------------------------------
-- Requests.

local JOIN, LEAVE, DISCONNECT, SERVER_SIDE_EMIT = 2, 3, 4, 6

local function request(nsp, payload)
    local req = json_decode(payload)
    if type(req) ~= "table" then return drop("request not JSON", sub(payload, 1, 40)) end
    local t = req.type
    if t ~= JOIN and t ~= LEAVE and t ~= DISCONNECT then
        if t ~= SERVER_SIDE_EMIT and type(t) ~= "number" then
            return drop("request shape", "no request type")
        end
        return 0 -- another server's business (or an answer nobody here waits for)
    end
    local opts = type(req.opts) == "table" and req.opts or {}
    local rooms, except = rooms_of(opts.rooms), rooms_of(opts.except)
    if not rooms or not except then return drop("request shape", "rooms or except not a list") end
    local sockets = targets(nsp, rooms, except)
    if t == DISCONNECT then
        local close = req.close == true
        for i = 1, #sockets do
            local s = sockets[i]
            if s.disconnect then s:disconnect(close) else s:close() end
        end
        return #sockets
    end
    local names = rooms_of(req.rooms)
    if not names then return drop("request shape", "rooms to join or leave not a list") end
    local change = t == JOIN and registry.join or registry.leave
    for i = 1, #sockets do
        for j = 1, #names do change(sockets[i], names[j]) end
    end
    return #sockets
end

---------------------------------------------------------------------------
-- The API, for bus.lua.

-- emitter.configure(opts): opts = { key = "socket.io", user_room = "user:" }
-- (init_worker's socketio_emitter option); the patterns to subscribe to.
-- Misuse raises for init_worker's caller.
function _M.configure(opts)
    if type(opts) ~= "table" then
        error("bad option 'socketio_emitter' to 'init_worker' (table expected)", 3)
    end
    local key = opts.key or "socket.io"
    if type(key) ~= "string" or key == "" or find(key, "[%*%?%[%]\\]") then
        error("bad option 'socketio_emitter' to 'init_worker' (key: a non-empty string without "
              .. "*, ?, [, ] or \\ expected)", 3)
    end
    local user_room = opts.user_room
    if user_room ~= nil and (type(user_room) ~= "string" or user_room == "") then
        error("bad option 'socketio_emitter' to 'init_worker' (user_room: a room name prefix expected)", 3)
    end
    for k in pairs(opts) do
        if k ~= "key" and k ~= "user_room" then
            error("bad option 'socketio_emitter' to 'init_worker' (unknown field '" .. tostring(k) .. "')", 3)
        end
    end
    if not mp then
        mp, mp_err = load_msgpack()
        if not mp then error("socketio_emitter needs lua-messagepack: " .. tostring(mp_err), 3) end
    end
    conf = { key = key, broadcast = key .. "#", request = key .. "-request#",
             user_room = user_room ~= "user:" and user_room or nil }
    return { conf.broadcast .. "*", conf.request .. "*" }
end

-- emitter.on_pmessage(pattern, channel, payload): true when the message
-- was the emitter's (delivered or dropped), false when not its channel.
function _M.on_pmessage(_, channel, payload)
    if not conf then return false end
    local b, r = conf.broadcast, conf.request
    if sub(channel, 1, #b) == b then
        if metrics.enabled() then metrics.add(K_RECEIVED) end
        local ok, err = pcall(broadcast, payload)
        if not ok then drop("delivery", err) end
        return true
    elseif sub(channel, 1, #r) == r then
        -- the namespace: between the prefix and the final "#"
        local nsp = sub(channel, #r + 1, -2)
        if byte(channel, -1) ~= 35 or nsp == "" then return true end
        local ok, err = pcall(request, nsp, payload)
        if not ok then drop("request", err) end
        return true
    end
    return false
end

return _M
