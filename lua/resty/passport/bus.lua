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
-- Wire format of a published message (version 1):
--   "1" kind len ":" key type data
--   kind: "u" (key = a user key) or "f" (key = a filter name);
--   type: "t" (text) or "b" (binary).
local cjson = require "cjson.safe"
local frame = require "resty.passport.ws.frame"
local pubsub = require "resty.passport.redis.pubsub"
local registry = require "resty.passport.registry"
local logout = require "resty.passport.logout"
local host = require "resty.passport.host"

local byte = string.byte
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

---------------------------------------------------------------------------
-- Delivery on this worker.

-- The sockets a message is for: by user key, or by a named filter.
local function recipients(kind, key)
    if kind == "u" then
        return registry.of_key(key)
    elseif kind ~= "f" then
        return nil
    end
    local fn = conf.filters[key]
    if not fn then
        host.log("warn", "passport: emit to filter '" .. key .. "', which this worker does not have")
        return nil
    end
    local ok, res = pcall(registry.filter, fn)
    if not ok then
        host.log("err", "passport: filter '" .. key .. "' raised: " .. tostring(res))
        return nil
    end
    return res
end

-- Delivers one published message; returns how many sockets got it.
local function deliver(msg)
    if byte(msg, 1) ~= 49 then return 0 end -- "1"
    local colon = find(msg, ":", 3, true)
    local len = colon and tonumber(sub(msg, 3, colon - 1))
    if not len then return 0 end
    local sockets = recipients(sub(msg, 2, 2), sub(msg, colon + 1, colon + len))
    if not sockets or sockets[1] == nil then return 0 end
    local binary = sub(msg, colon + len + 1, colon + len + 1) == "b"
    local data = sub(msg, colon + len + 2)
    local encoded = {} -- wire -> bytes: once per protocol, not per socket
    local n = 0
    for i = 1, #sockets do
        local s = sockets[i]
        local wire = s.wire
        local bytes = encoded[wire]
        if not bytes then
            bytes = wire.encode(data, binary)
            encoded[wire] = bytes
        end
        if s:send_frame(bytes) then n = n + 1 end
    end
    return n
end

local function on_message(_, payload)
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

-- The subscriber: emit's channel, and logout's keyspace patterns.
local function subscriber(store, channel, max, lo)
    return pubsub.new(store, {
        channels = { channel },
        max_message_size = max,
        on_message = on_message,
        prepare = lo and logout.prepare or nil,
        on_pmessage = lo and logout.on_event or nil,
        on_up = lo and logout.on_up or nil,
        on_down = lo and logout.on_down or nil,
        on_exit = close_all,
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
    if lo then logout.start(store, lo) end
    local ok, err = subscriber(store, channel, max, lo):start()
    if not ok then
        error("cannot start the passport subscriber: " .. tostring(err), 2)
    end
    return true
end

-- passport.emit{ user = <passport.user>, data = ... } or
-- passport.emit{ filter = "<name>", data = ... }; binary = true for a
-- binary message; a table data is sent as JSON text.  Returns the number
-- of workers (all nodes) that received it, or nil and an error.
function _M.emit(msg)
    if not conf then
        error("passport.emit needs passport.init_worker{...} in init_worker_by_lua", 2)
    end
    if type(msg) ~= "table" then
        error("bad argument #1 to 'emit' (table expected, got " .. type(msg) .. ")", 2)
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
    local kind, key
    if msg.filter ~= nil then
        if msg.user ~= nil then error("bad argument #1 to 'emit' (give user or filter, not both)", 2) end
        if type(msg.filter) ~= "string" or not conf.filters[msg.filter] then
            error("bad field 'filter' to 'emit' (a filter registered in init_worker expected, got "
                  .. tostring(msg.filter) .. ")", 2)
        end
        kind, key = "f", msg.filter
    else
        key = registry.key_of(msg.user)
        if key == nil then
            error("bad field 'user' to 'emit' (a passport.user value expected)", 2)
        end
        kind = "u"
    end
    if #data > conf.max_message_size then
        return nil, "message of " .. #data .. " bytes exceeds max_message_size"
    end
    local payload = "1" .. kind .. #key .. ":" .. key .. (binary and "b" or "t") .. data
    return conf.store:command("PUBLISH", conf.channel, payload)
end

return _M
