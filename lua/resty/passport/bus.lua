-- Reaching sockets on every worker and every gateway node: Redis pub/sub.
-- init_worker starts this worker's subscriber (redis/pubsub.lua), which
-- delivers what passport.emit publishes to this worker's sockets, and
-- wires logout (logout.lua) to it.  Transport-neutral: a socket of any
-- protocol is reached through the registry, and a message is encoded once
-- per protocol by that protocol (s.wire.encode).
--
-- Delivery is at most once: a worker whose subscriber is reconnecting
-- misses what is published meanwhile; nothing is stored or retried.
--
-- Wire format of a published message:
--   version 1, a message:  "1" kind len ":" key type data
--     type: "t" (text) or "b" (binary)
--   version 2, an event:   "2" kind len ":" key len ":" nsp n ":"
--                          (len ":" attachment){n} packet
--     packet: the Socket.IO EVENT packet, encoded once by the publisher
--   kind: "u" (key = a user key), "f" (a filter name) or "r" (a room).
-- A message reaches the sockets of namespace "/" (a plain WebSocket is
-- there); a Socket.IO socket receives it as the event "message".  An
-- event reaches the sockets of its namespace; a plain WebSocket receives
-- it as the JSON text [event, args...] (not when it has binary args).
local cjson = require "cjson.safe"
local frame = require "resty.passport.ws.frame"
local parser = require "resty.passport.socketio.parser"
local pubsub = require "resty.passport.redis.pubsub"
local masters = require "resty.passport.redis.masters"
local registry = require "resty.passport.registry"
local logout = require "resty.passport.logout"
local emitter = require "resty.passport.emitter"
local host = require "resty.passport.host"
local metrics = require "resty.passport.metrics"

local byte = string.byte
local concat = table.concat
local error = error
local find = string.find
local pairs = pairs
local pcall = pcall
local sub = string.sub
local tonumber = tonumber
local tostring = tostring
local type = type
local utf8_valid = frame.utf8_valid

local _M = { _VERSION = "0.1.0" }

local conf -- set by init_worker

local enabled = metrics.enabled
local madd = metrics.add
local K_PUBLISHED = metrics.key("passport_emits_published_total")
local K_RECEIVED = metrics.key("passport_emits_received_total")
local K_DELIVERED = metrics.key("passport_emit_deliveries_total")
local K_DROPPED = {
    ["send queue overflow"] = metrics.key("passport_emit_drops_total", { reason = "queue_full" }),
    closed = metrics.key("passport_emit_drops_total", { reason = "closed" }),
}

---------------------------------------------------------------------------
-- Delivery on this worker.

-- The sockets of namespace nsp a message is for: by user key, by a named
-- filter, or by room.
local function recipients(kind, key, nsp)
    if kind == "u" then
        return registry.of_key(key, nsp)
    elseif kind == "r" then
        return registry.of_room(nsp, key)
    elseif kind ~= "f" then
        return nil
    end
    local fn = conf.filters[key]
    if not fn then
        host.log("warn", "passport: emit to filter '" .. key .. "', which this worker does not have")
        return nil
    end
    local ok, res = pcall(registry.filter, fn, nsp)
    if not ok then
        host.log("err", "passport: filter '" .. key .. "' raised: " .. tostring(res))
        return nil
    end
    return res
end

-- Sends to each socket what its protocol makes of the message, encoded
-- once per protocol (and namespace), not per socket.  encode(wire) -->
-- bytes or nil (nothing for that protocol).
local function send_all(sockets, encode)
    local encoded = {}
    local n, dropped = 0, nil
    for i = 1, #sockets do
        local s = sockets[i]
        local wire = s.wire
        local bytes = encoded[wire]
        if bytes == nil then
            bytes = encode(wire) or false
            encoded[wire] = bytes
        end
        if bytes then
            local ok, err = s:send_frame(bytes)
            if ok then
                n = n + 1
            else
                dropped = dropped or {}
                dropped[err] = (dropped[err] or 0) + 1
            end
        end
    end
    if enabled() then
        if n > 0 then madd(K_DELIVERED, n) end
        if dropped then
            for err, c in pairs(dropped) do madd(K_DROPPED[err] or K_DROPPED.closed, c) end
        end
    end
    return n
end

-- "<len>:<bytes>" at i: the bytes and the index after them, or nil.
local function field(msg, i)
    local colon = find(msg, ":", i, true)
    local len = colon and tonumber(sub(msg, i, colon - 1))
    if not len or len < 0 or colon + len > #msg then return nil end
    return sub(msg, colon + 1, colon + len), colon + len + 1
end

local function deliver_message(msg)
    local key, i = field(msg, 3)
    if not key then return 0 end
    local sockets = recipients(sub(msg, 2, 2), key, "/")
    if not sockets or sockets[1] == nil then return 0 end
    local binary = sub(msg, i, i) == "b"
    local data = sub(msg, i + 1)
    return send_all(sockets, function(wire) return wire.encode(data, binary) end)
end

local function deliver_event(msg)
    local key, i = field(msg, 3)
    local nsp
    if key then nsp, i = field(msg, i) end
    local colon = nsp and find(msg, ":", i, true)
    local natt = colon and tonumber(sub(msg, i, colon - 1))
    if not natt then return 0 end
    i = colon + 1
    local atts = {}
    for k = 1, natt do
        atts[k], i = field(msg, i)
        if not atts[k] then return 0 end
    end
    local packet = sub(msg, i)
    local sockets = recipients(sub(msg, 2, 2), key, nsp)
    if not sockets or sockets[1] == nil then return 0 end
    return send_all(sockets, function(wire)
        if wire.event then return wire.event(packet, atts) end
        -- a plain WebSocket: the JSON [event, args...], after the packet's
        -- type ("2") and namespace
        if natt > 0 then return nil end
        local json = sub(packet, nsp == "/" and 2 or #nsp + 3)
        return wire.encode(json, false)
    end)
end

-- Delivers one published message; returns how many sockets got it.
local function deliver(msg)
    local version = byte(msg, 1)
    if version == 49 then return deliver_message(msg) end -- "1"
    if version == 50 then return deliver_event(msg) end   -- "2"
    return 0
end

local function on_message(_, payload)
    if enabled() then madd(K_RECEIVED) end
    local ok, err = pcall(deliver, payload)
    if not ok then host.log("err", "passport: delivery failed: " .. tostring(err)) end
end

-- The worker is exiting (reload, stop): its sockets go away.
local function close_all()
    for _, s in pairs(registry.all()) do
        s:close(frame.CLOSE_GOING_AWAY, "going away")
    end
end

---------------------------------------------------------------------------
-- The API.

local function argerr(name, msg)
    error("bad option '" .. name .. "' to 'init_worker' (" .. msg .. ")", 3)
end

-- What is wrong with the filters option, or nil.
local function bad_filters(filters)
    if type(filters) ~= "table" then return "table of functions expected" end
    for name, fn in pairs(filters) do
        if type(name) ~= "string" or type(fn) ~= "function" then
            return "table of name = function expected"
        end
    end
end

-- The subscriber: emit's channel, logout's keyspace patterns and the
-- socket.io emitter's (em: its patterns, when configured).  In a Redis
-- Cluster the keyspace patterns are left to one subscriber per master
-- (redis/masters.lua) and this one sits on any node: a PUBLISH reaches
-- every node's subscribers.
local function subscriber(store, channel, max, lo, em)
    if store.keyed then lo = false end
    local prepare, on_pmessage
    if em then
        prepare = function()
            local patterns, confirmed
            if lo then patterns, confirmed = logout.prepare() end
            patterns = patterns or {}
            for i = 1, #em do patterns[#patterns + 1] = em[i] end
            return patterns, confirmed
        end
        on_pmessage = function(pattern, channel_, payload)
            if emitter.on_pmessage(pattern, channel_, payload) then return end
            if lo then logout.on_event(pattern, channel_, payload) end
        end
    elseif lo then
        prepare, on_pmessage = logout.prepare, logout.on_event
    end
    return pubsub.new(store, {
        channels = { channel },
        max_message_size = max,
        on_message = on_message,
        prepare = prepare,
        on_pmessage = on_pmessage,
        on_up = lo and logout.on_up or nil,
        on_down = lo and logout.on_down or nil,
        on_exit = close_all,
        report_up = true,
    })
end

function _M.init_worker(opts)
    if type(opts) ~= "table" then
        error("bad argument #1 to 'init_worker' (table expected, got " .. type(opts) .. ")", 2)
    end
    local store = opts.store
    if type(store) ~= "table" or type(store.command) ~= "function" or not store.prefix then
        argerr("store", "a passport.redis{...} store expected")
    end
    local channel = opts.channel or "passport:emit"
    if type(channel) ~= "string" or channel == "" then argerr("channel", "non-empty string expected") end
    local filters = opts.filters or {}
    local bad = bad_filters(filters)
    if bad then argerr("filters", bad) end
    if opts.user_key ~= nil then
        if type(opts.user_key) ~= "string" then argerr("user_key", "string expected") end
        registry.configure { user_key = opts.user_key }
    end
    local lo, why = logout.options(opts.logout)
    if lo == nil then argerr("logout", why) end
    local max = opts.max_message_size or 1048576
    if type(max) ~= "number" or max < 1 then argerr("max_message_size", "positive number expected") end
    conf = { store = store, channel = channel, filters = filters, max_message_size = max }
    local phase = host.phase()
    if phase ~= "init_worker" and phase ~= "timer" then
        error("passport.init_worker must be called from init_worker_by_lua", 2)
    end
    local em = opts.socketio_emitter ~= nil and emitter.configure(opts.socketio_emitter) or nil
    if lo then logout.start(store, lo) end
    local subscription = subscriber(store, channel, max, lo, em)
    conf.subscriber = subscription
    local ok, err = subscription:start()
    if ok and lo and store.keyed then
        ok, err = masters.start(store, {
            prepare = logout.prepare, on_pmessage = logout.on_event,
            on_up = logout.on_up, on_down = logout.on_down, max_message_size = max,
        })
    end
    if not ok then
        error("cannot start the passport subscriber: " .. tostring(err), 2)
    end
    return true
end

-- This worker's view, for passport.status(): nil before init_worker.
function _M.state()
    if not conf then return nil end
    local store = conf.store
    local live = store.cache_live
    return {
        subscriber = conf.subscriber.up and "up" or "down",
        cache = store.cache and (live == nil and "ttl" or live and "coherent" or "off") or "none",
        redis = store:address(),
        masters = store.keyed and masters.state() or nil,
    }
end

-- The target of an emit: kind and key ("u" user key, "f" filter, "r"
-- room).  Misuse raises for emit's caller.
local function target(msg)
    local given = (msg.user ~= nil and 1 or 0) + (msg.filter ~= nil and 1 or 0)
                  + (msg.room ~= nil and 1 or 0)
    if given ~= 1 then
        error("bad argument #1 to 'emit' (give one of user, room or filter)", 3)
    end
    if msg.filter ~= nil then
        if type(msg.filter) ~= "string" or not conf.filters[msg.filter] then
            error("bad field 'filter' to 'emit' (a filter registered in init_worker expected, got "
                  .. tostring(msg.filter) .. ")", 3)
        end
        return "f", msg.filter
    elseif msg.room ~= nil then
        if type(msg.room) ~= "string" then
            error("bad field 'room' to 'emit' (string expected, got " .. type(msg.room) .. ")", 3)
        end
        return "r", msg.room
    end
    local key = registry.key_of(msg.user)
    if key == nil then
        error("bad field 'user' to 'emit' (a passport.user value expected)", 3)
    end
    return "u", key
end

local function publish(payload)
    if #payload > conf.max_message_size then
        return nil, "message of " .. #payload .. " bytes exceeds max_message_size"
    end
    local n, err = conf.store:command("PUBLISH", conf.channel, payload)
    if n and enabled() then madd(K_PUBLISHED) end
    return n, err
end

-- An event: the packet encoded here, once for every recipient everywhere.
local function emit_event(msg, kind, key)
    local event, args, nsp = msg.event, msg.args or {}, msg.namespace or "/"
    if type(event) ~= "string" then
        error("bad field 'event' to 'emit' (string expected, got " .. type(event) .. ")", 3)
    end
    if type(args) ~= "table" then
        error("bad field 'args' to 'emit' (table expected, got " .. type(args) .. ")", 3)
    end
    if type(nsp) ~= "string" or not find(nsp, "^/[^,]*$") then
        error("bad field 'namespace' to 'emit' (a namespace name expected)", 3)
    end
    local packet, atts = parser.encode_event(nsp, nil, event, args.n or #args, args)
    if not packet then
        error("bad field 'args' to 'emit' (" .. tostring(atts) .. ")", 3)
    end
    atts = atts or {}
    local parts = { "2", kind, #key, ":", key, #nsp, ":", nsp, #atts, ":" }
    for i = 1, #atts do
        parts[#parts + 1] = #atts[i] .. ":" .. atts[i]
    end
    parts[#parts + 1] = packet
    return publish(concat(parts))
end

-- passport.emit{ user = <passport.user> | room = "name" | filter = "name",
--   data = ..., binary = true }   a message (a table data goes as JSON);
-- passport.emit{ user | room | filter, namespace = "/", event = "name",
--   args = { ... } }              a Socket.IO event.
-- Returns the number of workers (all nodes) that received it, or nil and
-- an error.
function _M.emit(msg)
    if not conf then
        error("passport.emit needs passport.init_worker{...} in init_worker_by_lua", 2)
    end
    if type(msg) ~= "table" then
        error("bad argument #1 to 'emit' (table expected, got " .. type(msg) .. ")", 2)
    end
    local kind, key = target(msg)
    if msg.event ~= nil then
        if msg.data ~= nil then
            error("bad argument #1 to 'emit' (give data or event, not both)", 2)
        end
        return emit_event(msg, kind, key)
    end
    local data = msg.data
    if type(data) == "table" then
        local json, err = cjson.encode(data)
        if not json then error("bad field 'data' to 'emit' (" .. err .. ")", 2) end
        data = json
    elseif type(data) ~= "string" then
        error("bad field 'data' to 'emit' (string or table expected, got " .. type(data) .. ")", 2)
    end
    local binary = msg.binary == true
    if not binary and not utf8_valid(data) then
        error("bad field 'data' to 'emit' (text must be UTF-8; set binary = true)", 2)
    end
    return publish("1" .. kind .. #key .. ":" .. key .. (binary and "b" or "t") .. data)
end

return _M
