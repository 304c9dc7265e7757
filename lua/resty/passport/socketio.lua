-- Socket.IO v5 on Engine.IO: namespaces, events, acknowledgements, binary
-- attachments and rooms, with Lua handlers in the gateway, so that the
-- socket.io-client of a passport.socketio app connects to nginx itself.
--
--   local sio = passport.socketio { auth = auth }
--   sio:of("/"):on("connection", function(socket)
--       socket:emit("hello", socket.user)
--       socket:on("chat", function(msg, ack) if ack then ack("ok") end end)
--   end)
--   sio:of("/admin"):use(function(socket, next) next(socket.user.admin and nil or "forbidden") end)
--   -- content_by_lua_block { sio:serve() }
--
-- One connection (an Engine.IO socket, read by the request that accepted
-- it) carries one Socket.IO socket per namespace it connected to.  Those
-- are what the registry holds, so emit, filter_sockets_by_user, rooms and
-- logout reach them whatever worker or node asks.  Handlers run in the
-- connection's request, one message at a time, and may use cosockets.
local cjson = require "cjson.safe"
local frame = require "resty.passport.ws.frame"
local parser = require "resty.passport.socketio.parser"
local deadlines = require "resty.passport.deadlines"
local engineio = require "resty.passport.engineio"
local registry = require "resty.passport.registry"
local ffi_core = require "resty.passport.ffi"
local host = require "resty.passport.host"

local random_id = ffi_core.random_id
local encode = frame.encode
local encode_event = parser.encode_event
local encode_ack = parser.encode_ack
local add_deadline = deadlines.add
local cancel_deadline = deadlines.cancel
local index_of = registry.index_of
local reason_of = engineio.reason
local concat = table.concat
local error = error
local byte = string.byte
local find = string.find
local next = next
local pairs = pairs
local pcall = pcall
local select = select
local setmetatable = setmetatable
local sort = table.sort
local tostring = tostring
local type = type
local unpack = unpack

local TEXT, BINARY = frame.TEXT, frame.BINARY
local CONNECT, DISCONNECT, EVENT = parser.CONNECT, parser.DISCONNECT, parser.EVENT
local ACK, CONNECT_ERROR = parser.ACK, parser.CONNECT_ERROR

local _M = { _VERSION = "0.1.0" }

-- Event names socket.io keeps for itself (socket.io-parser's list).
local RESERVED = {
    connect = true, connect_error = true, disconnect = true, disconnecting = true,
    newListener = true, removeListener = true,
}

local DEFAULTS = {
    connect_timeout = 45000, ack_timeout = 10000, max_attachments = 10,
    max_pending_acks = 100,
}
local OPTIONS = {
    path = "string", connect_timeout = "number", ack_timeout = "number",
    max_attachments = "number", max_pending_acks = "number", refuse = "string",
}

local LOG = "passport: socket.io: "

---------------------------------------------------------------------------
-- Frames: one Socket.IO packet is a text message "4" + packet, then one
-- binary message per attachment.

local function frames(str, atts)
    local bytes = encode(TEXT, "4" .. str)
    if not atts or atts[1] == nil then return bytes end
    local out = { bytes }
    for i = 1, #atts do out[i + 1] = encode(BINARY, atts[i]) end
    return concat(out)
end

local function nsp_prefix(name)
    return name == "/" and "" or name .. ","
end

---------------------------------------------------------------------------
-- Sockets: one per connection and namespace.  A socket holds only what is
-- its own (id, client, data, the registry's fields, and handlers, acks and
-- rooms once used), so that at rest it fits a table of 8 fields; its
-- namespace, server and the shared empty handshake come from its class,
-- socket.user from socket.data, socket.conn from its client, and
-- socket.state ("open" or "closed") from whether its client still has it.
--
-- A client (one per connection) is { io, conn[, timer][, decoder] } and
-- its sockets by namespace name (names start with "/", fields do not).

local SLASH = 47

local function by_order(a, b) return a._n < b._n end

-- The client's sockets, as a list (safe to close them while walking it), in
-- the order they connected: socket.io disconnects them in that order.
local function sockets_of(client)
    local out, n = {}, 0
    for k, v in next, client do
        if byte(k, 1) == SLASH then
            n = n + 1
            out[n] = v
        end
    end
    if n > 1 then sort(out, by_order) end
    return out
end

local EMPTY_AUTH = setmetatable({}, {
    __newindex = function() error("socket.handshake.auth is read-only", 2) end,
})
local EMPTY_HANDSHAKE = setmetatable({ auth = EMPTY_AUTH }, {
    __newindex = function() error("socket.handshake is read-only", 2) end,
})

local Socket = {}

local function log_raise(what, err)
    host.log("err", LOG .. what .. " raised: " .. tostring(err))
end

-- Calls the handlers of event (a function, or a list of them).
local function fire(s, event, ...)
    local h = s.handlers
    h = h and h[event]
    if not h then return false end
    if type(h) == "function" then
        local ok, err = pcall(h, ...)
        if not ok then log_raise("handler of '" .. tostring(event) .. "'", err) end
        return true
    end
    for i = 1, #h do
        local ok, err = pcall(h[i], ...)
        if not ok then log_raise("handler of '" .. tostring(event) .. "'", err) end
    end
    return true
end

-- socket:on(event, fn): fn(args..., ack) for each event the client emits
-- (ack, a function, only when the client asked for one); "disconnect":
-- fn(reason).
function Socket.on(s, event, fn)
    if type(event) ~= "string" then
        error("bad argument #1 to 'on' (string expected, got " .. type(event) .. ")", 2)
    end
    if type(fn) ~= "function" then
        error("bad argument #2 to 'on' (function expected, got " .. type(fn) .. ")", 2)
    end
    local handlers = s.handlers
    if not handlers then
        handlers = {}
        s.handlers = handlers
    end
    local h = handlers[event]
    if h == nil then
        handlers[event] = fn
    elseif type(h) == "function" then
        handlers[event] = { h, fn }
    else
        h[#h + 1] = fn
    end
    return s
end

function Socket.send_frame(s, bytes)
    if s.state ~= "open" then return nil, "closed" end
    return s.conn:send_frame(bytes)
end

local function check_event(event, fname)
    if type(event) ~= "string" then
        error("bad argument #1 to '" .. fname .. "' (string expected, got " .. type(event) .. ")", 3)
    end
    if RESERVED[event] then
        error("bad argument #1 to '" .. fname .. "' (\"" .. event .. "\" is a reserved event name)", 3)
    end
end

-- socket:emit(event, ...) --> true, or nil and an error (closed, queue
-- overflow, an argument JSON cannot hold).
function Socket.emit(s, event, ...)
    check_event(event, "emit")
    local str, atts = encode_event(s.nsp, nil, event, select("#", ...), { ... })
    if not str then return nil, atts end
    return Socket.send_frame(s, frames(str, atts))
end

-- socket.io's send(): emit("message", ...).
function Socket.send(s, ...)
    return Socket.emit(s, "message", ...)
end

local function ack_expired(entry)
    local s, id = entry[1], entry[2]
    local acks = s.acks
    local pending = acks and acks[id]
    if pending ~= entry then return end
    acks[id] = nil
    s.n_acks = s.n_acks - 1
    local ok, err = pcall(entry[3], "operation has timed out")
    if not ok then log_raise("ack callback", err) end
end

local function emit_with_ack(s, timeout, fname, event, ...)
    check_event(event, fname)
    local n = select("#", ...)
    local cb = select(n, ...)
    if type(cb) ~= "function" then
        error("bad argument #" .. (n + 1) .. " to '" .. fname .. "' (a callback expected last)", 3)
    end
    if s.state ~= "open" then return nil, "closed" end
    if (s.n_acks or 0) >= s.io.max_pending_acks then
        return nil, "too many pending acks"
    end
    local id = (s.ack_id or -1) + 1
    local str, atts = encode_event(s.nsp, id, event, n - 1, { ... })
    if not str then return nil, atts end
    local ok, err = Socket.send_frame(s, frames(str, atts))
    if not ok then return nil, err end
    s.ack_id = id
    local acks = s.acks
    if not acks then
        acks = {}
        s.acks = acks
    end
    local entry = { s, id, cb }
    entry[4] = add_deadline(timeout / 1000, ack_expired, entry)
    acks[id] = entry
    s.n_acks = (s.n_acks or 0) + 1
    return true
end

-- socket:emit_with_ack(event, ..., fn): fn(nil, reply...) once the client
-- acknowledges, or fn("operation has timed out") after the ack_timeout
-- (also when the socket went first, as in socket.io 4.8).
function Socket.emit_with_ack(s, event, ...)
    return emit_with_ack(s, s.io.ack_timeout, "emit_with_ack", event, ...)
end

-- socket:timeout(ms):emit_with_ack(...): socket.io's socket.timeout(ms).
local Timed = {}
Timed.__index = Timed
function Timed.emit_with_ack(t, event, ...)
    return emit_with_ack(t.socket, t.ms, "emit_with_ack", event, ...)
end

function Socket.timeout(s, ms)
    if type(ms) ~= "number" or ms < 0 then
        error("bad argument #1 to 'timeout' (non-negative number of ms expected)", 2)
    end
    return setmetatable({ socket = s, ms = ms }, Timed)
end

-- socket:writable(): whether a volatile message would go out now.
function Socket.writable(s)
    local conn = s.conn
    return conn.state == "open" and conn:writable()
end

function Socket.join(s, room)
    registry.join(s, room)
    return s
end

function Socket.leave(s, room)
    registry.leave(s, room)
    return s
end

-- socket:rooms(): its own id's, its user's and its session's, the joined.
function Socket.get_rooms(s)
    local out = registry.rooms_of(s)
    out[#out + 1] = s.id
    return out
end

-- The socket is gone (either side, or the connection): out of the
-- registry and of its connection, "disconnect" fired.  Its pending acks
-- still time out, as socket.io 4.8's do.
local function on_close(s, reason)
    local client, nsp = s.client, s.nsp
    if client[nsp] ~= s then return end
    client[nsp] = nil
    registry.remove(s)
    fire(s, "disconnect", reason)
end

local function server_disconnect(s)
    s.conn:send_frame(encode(TEXT, "41" .. nsp_prefix(s.nsp)))
    on_close(s, "server namespace disconnect")
end

-- Every namespace of the connection gets its DISCONNECT, so that none of
-- them reconnects on its own, then the connection closes.
local function close_all(s, code, reason)
    local all = sockets_of(s.client)
    for i = 1, #all do server_disconnect(all[i]) end
    s.conn:close(code, reason)
end

-- socket:disconnect([close]): a DISCONNECT to the client for this
-- namespace; close = true closes the whole connection.
function Socket.disconnect(s, close)
    if s.state ~= "open" then return s end
    if close then
        close_all(s)
    else
        server_disconnect(s)
    end
    return s
end

-- socket:close(code, reason): what logout and a worker's exit call on any
-- registered socket.  A logout (any code but 1001) sends each namespace
-- of the connection a DISCONNECT, so the client stays away; a worker that
-- goes away (1001) only closes the connection, so the client reconnects,
-- to another worker, as socket.io's own clients do when a server stops.
function Socket.close(s, code, reason)
    if s.state ~= "open" then return false end
    if code == frame.CLOSE_GOING_AWAY then
        local all = sockets_of(s.client)
        for i = 1, #all do on_close(all[i], "server shutting down") end
        s.conn:close(code, reason)
    else
        close_all(s, code, reason)
    end
    return true
end

---------------------------------------------------------------------------
-- Namespaces.

local Namespace = {}
Namespace.__index = Namespace

-- The wire of a namespace's sockets, for bus.lua: a plain emit becomes the
-- "message" event; a published event is already a packet.
local function new_wire(name)
    return {
        name = "socket.io",
        nsp = name,
        encode = function(data, binary)
            local arg = binary and parser.binary(data) or data
            local str, atts = encode_event(name, nil, "message", 1, { arg })
            return str and frames(str, atts) or nil
        end,
        event = function(packet, atts)
            return frames(packet, atts)
        end,
    }
end

local function new_namespace(io, name)
    local class = { wire = new_wire(name), io = io, nsp = name, handshake = EMPTY_HANDSHAKE }
    for k, f in pairs(Socket) do class[k] = f end
    class.__index = function(s, k)
        if k == "user" then
            return rawget(s, "data").user
        elseif k == "conn" then
            return rawget(s, "client").conn
        elseif k == "state" then
            return rawget(s, "client")[name] == s and "open" or "closed"
        end
        return class[k]
    end
    return setmetatable({ io = io, name = name, class = class, middlewares = {} }, Namespace)
end

-- nsp:on("connection", fn): fn(socket) for each socket admitted.
function Namespace:on(event, fn)
    if event ~= "connection" and event ~= "connect" then
        error("bad argument #1 to 'on' (\"connection\" expected)", 2)
    end
    if type(fn) ~= "function" then
        error("bad argument #2 to 'on' (function expected, got " .. type(fn) .. ")", 2)
    end
    self.on_connection = fn
    return self
end

-- nsp:use(fn | auth): fn(socket, next) calls next() to admit, next(msg)
-- (or next{ message = msg, data = t }) to refuse with CONNECT_ERROR; an
-- authorize object's success/fail policy is run over the same session.
function Namespace:use(mw)
    local t = type(mw)
    if t ~= "function" and not (t == "table" and type(mw.reverify) == "function") then
        error("bad argument #1 to 'use' (function or authorize object expected)", 2)
    end
    self.middlewares[#self.middlewares + 1] = mw
    return self
end

-- An authorize object as middleware: its policy over the record the
-- handshake read.
local function run_policy(auth, s)
    local data = s.data
    if not data._record then
        return "No session found"
    end
    local ok, admitted, v = pcall(auth.reverify, auth, data, data._record)
    if not ok then
        log_raise("a namespace's policy", admitted)
        return "Error in session store"
    end
    if not admitted then return tostring(v) end
    s.user = v.user
    s.data = v
    return nil
end

-- Runs the namespace's middlewares: nil, or the refusal (a string or
-- { message, data }).
local function run_middlewares(nsp, s)
    local mws = nsp.middlewares
    for i = 1, #mws do
        local mw = mws[i]
        local refusal
        if type(mw) == "table" then
            refusal = run_policy(mw, s)
        else
            local called = false
            local ok, err = pcall(mw, s, function(e)
                called = true
                refusal = e
            end)
            if not ok then
                log_raise("middleware", err)
                refusal = "Internal error"
            elseif not called then
                host.log("err", LOG .. "a middleware of " .. nsp.name .. " returned without calling next")
                refusal = "Internal error"
            end
        end
        if refusal ~= nil and refusal ~= false then return refusal end
    end
    return nil
end

---------------------------------------------------------------------------
-- A connection: its Engine.IO socket, decoder and namespace sockets.

local function connect_error(client, name, refusal)
    local message, data = refusal, nil
    if type(refusal) == "table" then message, data = refusal.message, refusal.data end
    message = tostring(message)
    local json = data ~= nil and cjson.encode { message = message, data = data }
    -- data JSON cannot hold (a function, a sparse array): the message alone
    if not json then json = cjson.encode { message = message } end
    client.conn:send_frame(encode(TEXT, "44" .. nsp_prefix(name) .. json))
end

local function connect(client, name, auth_payload)
    local io = client.io
    local nsp = io.nsps[name]
    if not nsp then
        return connect_error(client, name, "Invalid namespace")
    end
    local conn = client.conn
    local data = conn.data
    if data.refused then
        return connect_error(client, name, data.refused)
    end
    local key, sid = index_of(data)
    local order = (client.n or 0) + 1
    client.n = order
    local s = setmetatable({
        id = random_id(20), client = client, data = data, _key = key, _sid = sid, _n = order,
    }, nsp.class)
    if auth_payload and next(auth_payload) ~= nil then
        s.handshake = { auth = auth_payload }
    end
    local refusal = run_middlewares(nsp, s)
    if refusal ~= nil then
        return connect_error(client, name, refusal)
    end
    if conn.state ~= "open" then return end
    if s.data ~= data then s._key, s._sid = index_of(s.data) end
    client[name] = s
    if client.timer then
        cancel_deadline(client.timer)
        client.timer = nil
    end
    conn:send_frame(encode(TEXT, "40" .. nsp_prefix(name) .. '{"sid":"' .. s.id .. '"}'))
    registry.add(s)
    local fn = nsp.on_connection
    if fn then
        local ok, err = pcall(fn, s)
        if not ok then log_raise("connection handler of " .. name, err) end
    end
end

-- An ack function for the client's event id: the first call answers.
local function new_ack(s, id)
    local sent = false
    return function(...)
        if sent then return nil, "already acknowledged" end
        sent = true
        if s.state ~= "open" then return nil, "closed" end
        local str, atts = encode_ack(s.nsp, id, select("#", ...), { ... })
        if not str then return nil, atts end
        return Socket.send_frame(s, frames(str, atts))
    end
end

local function on_event(s, packet)
    local args = packet.data
    local n = #args
    if packet.id then
        n = n + 1
        args[n] = new_ack(s, packet.id)
    end
    fire(s, args[1], unpack(args, 2, n))
end

local function on_ack(s, packet)
    local acks = s.acks
    local entry = acks and acks[packet.id]
    if not entry then return end -- late or unknown: socket.io ignores it
    acks[packet.id] = nil
    s.n_acks = s.n_acks - 1
    cancel_deadline(entry[4])
    local args = packet.data
    local ok, err = pcall(entry[3], nil, unpack(args, 1, #args))
    if not ok then log_raise("ack callback", err) end
end

local function close_conn(client, reason, err)
    host.log("info", LOG .. "connection closed: " .. reason .. (err and ": " .. err or ""))
    client.conn.reason = reason
    client.conn:close()
end

local function on_packet(client, packet)
    local name, typ = packet.nsp, packet.type
    local s = client[name]
    if typ == CONNECT and not s then
        return connect(client, name, packet.data)
    elseif not s or typ == CONNECT or typ == CONNECT_ERROR then
        -- as socket.io's client.ts: an invalid state ends the connection
        return close_conn(client, "forced close", "invalid state (packet type " .. typ .. ")")
    end
    if typ == EVENT then
        on_event(s, packet)
    elseif typ == ACK then
        on_ack(s, packet)
    elseif typ == DISCONNECT then
        on_close(s, "client namespace disconnect")
    end
end

-- Packets are decoded by the server's decoder, which holds nothing between
-- whole packets; a binary packet waiting for its attachments takes the
-- decoder along to its connection and the server makes a new one (so a
-- connection pays for a decoder only while it is receiving binary).
local function on_data(client, msg, typ)
    local dec = client.decoder
    local io = client.io
    local packet, err = (dec or io.decoder):add(msg, typ == "binary")
    if dec then
        if packet or err then client.decoder = nil end
    elseif not packet and not err then
        client.decoder = io.decoder
        io.decoder = parser.decoder { max_attachments = io.max_attachments }
    end
    if packet then return on_packet(client, packet) end
    -- socket.io's Client.onerror: the engine socket closes ("forced close")
    if err then return close_conn(client, "forced close", err) end
end

-- connect_timeout: a connection with no namespace yet is closed.
local function connect_expired(client)
    client.timer = nil
    if sockets_of(client)[1] == nil and client.conn.state == "open" then
        close_conn(client, "forced server close", "no namespace joined in connect_timeout")
    end
end

---------------------------------------------------------------------------
-- The server.

local IO = {}
IO.__index = IO

local function check(opts)
    for k in pairs(DEFAULTS) do
        local v = opts[k]
        if v ~= nil and (type(v) ~= "number" or v < 0 or v % 1 ~= 0) then
            error("bad argument #1 to 'socketio' (option '" .. k
                  .. "': non-negative integer expected)", 3)
        end
    end
    local refuse = opts.refuse
    if refuse ~= nil and refuse ~= "connect_error" and refuse ~= "http" then
        error("bad argument #1 to 'socketio' (option 'refuse': \"connect_error\" or \"http\" expected)", 3)
    end
end

function _M.new(opts)
    if type(opts) ~= "table" then
        error("bad argument #1 to 'socketio' (table expected, got " .. type(opts) .. ")", 2)
    end
    check(opts)
    local engine = engineio.new(opts, "socketio", OPTIONS, {}, false)
    engine.refuse_in_band = opts.refuse ~= "http"
    local io = setmetatable({ engine = engine, nsps = {} }, IO)
    for k, v in pairs(DEFAULTS) do io[k] = opts[k] or v end
    io.decoder = parser.decoder { max_attachments = io.max_attachments }
    io.nsps["/"] = new_namespace(io, "/")
    return io
end

-- io:of(name) --> the namespace, made on first use.
function IO:of(name)
    if type(name) ~= "string" or find(name, "^/[^,]*$") == nil then
        error("bad argument #1 to 'of' (a namespace name: \"/\" followed by no comma expected)", 2)
    end
    local nsp = self.nsps[name]
    if not nsp then
        nsp = new_namespace(self, name)
        self.nsps[name] = nsp
    end
    return nsp
end

-- The connection's packets, for engine:run(), until it closes.
local CONNECTION = {
    message = on_data,
    close = function(client)
        if client.timer then cancel_deadline(client.timer) end
        local reason = reason_of(client.conn)
        local all = sockets_of(client)
        for i = 1, #all do on_close(all[i], reason) end
    end,
}

-- io:serve() in content_by_lua: the connection, until it closes (a polling
-- one by its home worker's runners: its requests come and go).
function IO:serve()
    local engine = self.engine
    local conn = engine:accept()
    if not conn then return end
    local client = { io = self, conn = conn }
    client.timer = add_deadline(self.connect_timeout / 1000, connect_expired, client)
    return engine:run(conn, CONNECTION, client)
end

_M.binary = parser.binary
_M.is_binary = parser.is_binary

return _M
