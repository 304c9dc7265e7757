-- Engine.IO v4, the transport layer under Socket.IO, on the socket core.
-- WebSocket transport: `GET <path>/?EIO=4&transport=websocket` is checked
-- as npm engine.io checks it, authorized, answered 101 plus the open
-- packet; then one Engine.IO packet per WebSocket message ("4" + text, or
-- a binary message as is), a ping ("2") every ping_interval and the socket
-- closed when its pong ("3") is not back within ping_timeout.
--
-- HTTP long-polling (engineio/polling.lua), when a lua_shared_dict holds
-- the sessions: the handshake GET answers the open packet with
-- "upgrades":["websocket"], GETs and POSTs of the session follow on any
-- worker, and a WebSocket with its sid upgrades it (engineio/upgrade.lua).
--
-- A transport is what accept() opens; the layers above (socketio.lua, or an
-- application through serve()) see only a socket that recv()s and sends
-- messages, and run their loop with eio:run(), in the request (WebSocket)
-- or in the worker's host timer (a polling session outlives its requests).
--
--   local eio = passport.engineio { auth = auth, ping_interval = 25000 }
--   eio:on("connection", function(socket)
--       socket:on("message", function(data, binary) socket:send(data, binary) end)
--       socket:on("close", function(reason) end)
--   end)
--   -- content_by_lua_block { eio:serve() }
local frame = require "resty.passport.ws.frame"
local ffi_core = require "resty.passport.ffi"
local nginx = require "resty.passport.nginx"
local socket = require "resty.passport.ws.socket"
local websocket = require "resty.passport.websocket"
local sessions = require "resty.passport.engineio.sessions"
local polling = require "resty.passport.engineio.polling"
local upgrade_run = require("resty.passport.engineio.upgrade").run
local host = require "resty.passport.host"

local encode = frame.encode
local handshake_input = nginx.handshake_input
local count = nginx.count
local http_error = nginx.respond_error
local refusal = nginx.refusal
local reject = nginx.reject
local accept_upgrade = websocket.accept_upgrade
local switching = websocket.switching
local random_id = ffi_core.random_id
local open = socket.open
local ngx = ngx
local byte = string.byte
local error = error
local get_method = ngx.req.get_method
local md5 = ngx.md5
local worker_id = ngx.worker.id
local ipairs = ipairs
local pairs = pairs
local pcall = pcall
local setmetatable = setmetatable
local sub = string.sub
local tostring = tostring
local type = type

local TEXT, BINARY = frame.TEXT, frame.BINARY

local _M = { _VERSION = "0.1.0", PROTOCOL = 4 }

-- engine.io's error codes and messages (Server.errors, errorMessages).
local UNKNOWN_TRANSPORT, UNKNOWN_SID, BAD_HANDSHAKE_METHOD = 0, 1, 2
local BAD_REQUEST, UNSUPPORTED_PROTOCOL_VERSION = 3, 5
local MESSAGES = {
    [0] = "Transport unknown", "Session ID unknown", "Bad handshake method",
    "Bad request", "Forbidden", "Unsupported protocol version",
}

---------------------------------------------------------------------------
-- Options.  Engine.IO's are in milliseconds, as in npm engine.io; the
-- core's (seconds) are derived from them.

local DEFAULTS = {
    ping_interval = 25000, ping_timeout = 20000, max_payload = 1000000,
    upgrade_timeout = 10000,
}
local DICT = "passport_eio"
local ENGINE = {
    auth = "table", ping_interval = "number", ping_timeout = "number",
    max_payload = "number", upgrade_timeout = "number",
    transports = "table", dict = "string", node = "string",
    -- the socket core's, passed through
    max_queue = "number", max_queue_bytes = "number", send_timeout = "number",
    close_timeout = "number", max_fragments = "number",
}
local PASSED = { "max_queue", "max_queue_bytes", "send_timeout", "close_timeout", "max_fragments" }

local function argerr(fname, msg)
    error("bad argument #1 to '" .. fname .. "' (" .. msg .. ")", 4)
end

local function check(opts, fname, extra)
    if type(opts) ~= "table" then
        argerr(fname, "table expected, got " .. type(opts))
    end
    for k, v in pairs(opts) do
        local want = ENGINE[k] or extra and extra[k]
        if not want then argerr(fname, "unknown option '" .. tostring(k) .. "'") end
        if want ~= "any" and type(v) ~= want then
            argerr(fname, "option '" .. k .. "': " .. want .. " expected, got " .. type(v))
        end
    end
    local auth = opts.auth
    if type(auth) ~= "table" or type(auth.verify) ~= "function" then
        argerr(fname, "option 'auth': an authorize object expected, from passport.authorize{...}")
    end
    for name in pairs(DEFAULTS) do
        local v = opts[name]
        if v ~= nil and (v <= 0 or v ~= v or v % 1 ~= 0) then
            argerr(fname, "option '" .. name .. "': positive integer expected")
        end
    end
end

-- The open packet's JSON without its sid: npm engine.io's key order.
local function open_suffix(o, upgrades)
    return '","upgrades":' .. upgrades .. ',"pingInterval":' .. o.ping_interval
           .. ',"pingTimeout":' .. o.ping_timeout .. ',"maxPayload":' .. o.max_payload .. '}'
end

-- transports: which of "polling" and "websocket" (default both when the
-- dict is declared, else the WebSocket alone); the dict's table or nil.
local function transports_of(opts, fname)
    local name = opts.dict or DICT
    local list = opts.transports
    local poll = true
    if list then
        local ws
        poll = false
        for _, t in ipairs(list) do
            if t == "websocket" then ws = true
            elseif t == "polling" then poll = true
            else argerr(fname, "option 'transports': \"polling\" or \"websocket\" expected") end
        end
        if not ws then argerr(fname, "option 'transports': \"websocket\" is required") end
    end
    if not poll then return nil end
    local tbl, err = sessions.open(name)
    if not tbl then
        if list or opts.dict then
            argerr(fname, "option 'transports': polling needs lua_shared_dict " .. name
                   .. " (" .. err .. ")")
        end
        return nil
    end
    return tbl
end

---------------------------------------------------------------------------
-- The wire: Engine.IO packets in WebSocket messages.

-- What a text message from the client is: "4" a message (returned to
-- recv), "3" the pong, "1" close; "0", "5" and "6" mean nothing on a
-- WebSocket-only session.  A ping ("2": the client never pings in v4) or
-- an unknown type closes the socket, as engine.io does.
local function on_message(s, msg, typ)
    if typ == "binary" then return msg, typ end
    local t = byte(msg, 1)
    if t == 52 then     -- "4"
        return sub(msg, 2), "text"
    elseif t == 51 then -- "3"
        s:pong()
    elseif t == 49 then -- "1"
        s.reason = "transport close"
        s:close()
    elseif t ~= 48 and t ~= 53 and t ~= 54 then
        s.reason = t == 50 and "transport error" or "parse error"
        s:close()
    end
    return nil
end

local function encode_message(data, binary)
    if binary then return encode(BINARY, data) end
    return encode(TEXT, "4" .. data)
end

local PING = encode(TEXT, "2")

-- The server closing a socket: engine.io's reason, "forced close", unless
-- a more precise one was set first.
local function close(s, code, reason)
    if s.state == "open" and not s.reason then s.reason = "forced close" end
    return s.core_close(s, code, reason)
end

local function new_class(name, register, methods)
    local class = socket.class {
        name = name,
        encode = encode_message,
        ping = PING,
        message = on_message,
        heartbeat = true,
        register = register,
        -- engine.io closes its WebSocket with ws's close(): no status code
        silent_close = true,
    }
    class.core_close = class.close
    class.close = close
    for k, f in pairs(methods or {}) do class[k] = f end
    return class
end

---------------------------------------------------------------------------
-- The request.

-- engine.io's verify() and handshake() for a request without a session:
-- nil, or the error code.  upgrade: the request asks for one.
local function check_request(var, method, transport, upgrade)
    if method ~= "GET" then return BAD_HANDSHAKE_METHOD end
    if transport == "websocket" and not upgrade then return BAD_REQUEST end
    if var.arg_EIO ~= "4" then return UNSUPPORTED_PROTOCOL_VERSION end
    return nil
end

-- The refusal engine.io gives: a WebSocket upgrade gets a bare 400 with the
-- message as text/html; any other request a JSON {code, message}.
local function refuse_request(code, upgrade, server)
    local msg = MESSAGES[code]
    host.log("info", "passport: engine.io request refused: " .. msg)
    ngx.status = 400
    local header = ngx.header
    header["Cache-Control"] = "no-store"
    if server and not upgrade then polling.cors(server, header) end
    local body
    if upgrade then
        header["Content-Type"] = "text/html"
        body = msg
    else
        header["Content-Type"] = "application/json"
        body = '{"code":' .. code .. ',"message":"' .. msg .. '"}'
    end
    header["Content-Length"] = #body
    ngx.print(body)
    return ngx.exit(400)
end

local function error_json(code)
    return '{"code":' .. code .. ',"message":"' .. MESSAGES[code] .. '"}'
end

---------------------------------------------------------------------------
-- The server.

local Server = {}
Server.__index = Server

-- engineio.new(opts[, fname, extra, methods]): extra, the options of a
-- layer above (name -> type) checked here too; methods, added to its
-- sockets' class.  A layer above registers its own objects in the
-- registry, so its sockets are not (register = false).
function _M.new(opts, fname, extra, methods, register)
    fname = fname or "engineio"
    check(opts, fname, extra)
    local node = opts.node
    if node ~= nil and not node:find("^[%w_-]+$") or node and #node > 32 then
        argerr(fname, "option 'node': 1 to 32 letters, digits, '_' or '-' expected")
    end
    local o = {}
    for k, v in pairs(DEFAULTS) do o[k] = opts[k] or v end
    local core = {
        ping_interval = o.ping_interval / 1000,
        ping_timeout = o.ping_timeout / 1000,
        -- the reader's backstop; the heartbeat closes a silent peer first
        idle_timeout = (o.ping_interval + o.ping_timeout) / 1000 + 5,
        max_message_size = o.max_payload,
    }
    for _, k in pairs(PASSED) do core[k] = opts[k] end
    local tbl = transports_of(opts, fname)
    local relay = { ping_interval = 0, idle_timeout = core.idle_timeout,
                    max_message_size = core.max_message_size }
    for _, k in pairs(PASSED) do relay[k] = opts[k] end
    local errors = {}
    for code in pairs(MESSAGES) do errors[code] = error_json(code) end
    local self = setmetatable({
        auth = opts.auth,
        core = socket.options(core, fname),
        relay_core = socket.options(relay, fname),
        open_suffix = open_suffix(o, "[]"),
        polling_suffix = open_suffix(o, '["websocket"]'),
        sessions = tbl,
        node = node and node .. "." or "",
        errors = errors,
        -- a session's dict entries outlive its home by at most this (s)
        ttl = (o.ping_interval + o.ping_timeout) / 1000 + 2,
        close_ttl = o.ping_timeout / 1000 + 2,
        upgrade_timeout = o.upgrade_timeout / 1000,
        ping_interval = o.ping_interval,
        ping_timeout = o.ping_timeout,
        max_payload = o.max_payload,
        -- a layer above answers refusals itself (Socket.IO's CONNECT_ERROR)
        refuse_in_band = false,
        mode = fname, -- passport_handshakes_total's label
        handlers = {},
    }, Server)
    self.class = new_class("engine.io", register ~= false, methods or { on = _M.on })
    self.polling_class = polling.class(self.class.wire, methods or { on = _M.on },
                                       register ~= false)
    return self
end

-- A session id that says which node and worker hold the session, so that
-- a load balancer can send its polling requests there.
local function new_sid(self)
    local rand = random_id(20)
    if not rand then return nil end
    return self.node .. (worker_id() or 0) .. "." .. rand
end

-- The requests of an existing session: GET, POST, or a WebSocket that
-- upgrades it.  Answers them; nil.
local function existing(self, var, sid, method, transport, upgrade)
    local tbl = self.sessions
    local state, home, hash
    if tbl then state, home, hash = tbl:lookup(sid) end
    if state then
        local cookie_header, _, query_value = handshake_input(self.auth)
        local key = self.auth:session_key(cookie_header, query_value)
        if (key ~= "" and md5(key) or "") ~= hash then
            host.log("info", "passport: engine.io: a request for a session of another browser session")
            state = nil
        end
    end
    if not state or (state == "c" and method ~= "GET") then
        return refuse_request(UNKNOWN_SID, upgrade and transport == "websocket", self)
    end
    if var.arg_EIO ~= "4" then return refuse_request(BAD_REQUEST, upgrade, self) end
    if transport == "websocket" then
        if not upgrade then return refuse_request(BAD_REQUEST, false, self) end
        local accept = accept_upgrade(var, "engine.io")
        if not accept then return nil end
        local head = switching(accept)
        if state ~= "p" or not tbl:lock("r", sid, 1, self.ttl) then
            -- engine.io: a session upgrading or upgraded closes the newcomer
            local ws = socket.open(self.class, self.relay_core, {}, head, nil, sid)
            ws:close()
            while ws:recv() do end
            return nil
        end
        upgrade_run(self, sid, home, head)
        return nil
    end
    if state == "w" then return refuse_request(BAD_REQUEST, false, self) end
    if method == "GET" then return polling.get(self, sid, home) end
    if method == "POST" then
        if state == "c" then return refuse_request(UNKNOWN_SID, false, self) end
        return polling.post(self, sid, home)
    end
    return refuse_request(BAD_REQUEST, false, self)
end

-- eio:accept() in content_by_lua: the socket, or nil once the request
-- has been answered (a bad request, a refused handshake).  The socket's
-- data is what auth saw; when the server answers refusals in band, a
-- refused handshake is opened too, its data { refused = message }.
function Server:accept()
    local var = ngx.var
    local upgrade = var.http_upgrade ~= nil
    local transport, method = var.arg_transport, get_method()
    local tbl = self.sessions
    if tbl and method == "OPTIONS" and self.auth.origins then
        return polling.preflight(self)
    end
    if transport ~= "websocket" and (transport ~= "polling" or not tbl) then
        return refuse_request(UNKNOWN_TRANSPORT, upgrade, self)
    end
    local asked = var.arg_sid
    if asked then return existing(self, var, asked, method, transport, upgrade) end
    local code = check_request(var, method, transport, upgrade)
    if code then return refuse_request(code, upgrade and transport == "websocket", self) end
    local accept
    if transport == "websocket" then
        accept = accept_upgrade(var, "engine.io")
        if not accept then return nil end
    end
    local auth = self.auth
    local ok, data, is_error, refused = auth:verify(handshake_input(auth))
    count(self.mode, ok, data, is_error)
    if not ok then
        if not self.refuse_in_band then return reject(data, is_error, refused) end
        local _, public = refusal(data, is_error, refused)
        data = { refused = public }
    end
    local sid = new_sid(self)
    if not sid then
        host.log("err", "passport: engine.io: no random bytes for a session id")
        return http_error(500, "no session id")
    end
    if not accept then
        local cookie_header, _, query_value = handshake_input(auth)
        return polling.open(self, data, sid, auth:session_key(cookie_header, query_value))
    end
    local head = switching(accept)
                 .. encode(TEXT, '0{"sid":"' .. sid .. self.open_suffix)
    return open(self.class, self.core, data, head, nil, sid)
end

-- Why a socket's recv() ended, in engine.io's words.
function _M.reason(s)
    if s.recv_err == "ping timeout" then return "ping timeout" end
    return s.reason or "transport close"
end
local reason_of = _M.reason

-- eio:on("connection", fn): fn(socket) for each accepted socket.
function Server:on(event, fn)
    if event ~= "connection" then
        error("bad argument #1 to 'on' (\"connection\" expected)", 2)
    end
    if type(fn) ~= "function" then
        error("bad argument #2 to 'on' (function expected, got " .. type(fn) .. ")", 2)
    end
    self.handlers.connection = fn
    return self
end

local function call(what, fn, ...)
    local ok, err = pcall(fn, ...)
    if not ok then
        host.log("err", "passport: engine.io " .. what .. " handler raised: " .. tostring(err))
    end
end

-- eio:run(socket, handler, arg): the socket's messages to
-- handler.message(arg, msg, typ), then handler.close(arg) once it is over
-- (and handler.open(arg) first, when there is one).  For a WebSocket, the
-- loop runs in this request; a polling session outlives its requests, and
-- its home worker's runners call the handler.
function Server.run(_, s, handler, arg)
    if s.detached then
        local ok, err = polling.attach(s, handler, arg)
        if not ok then
            host.log("err", "passport: engine.io: cannot run a polling session: " .. err)
            s:close()
        end
        return
    end
    local on_open, message = handler.open, handler.message
    if on_open then on_open(arg) end
    while true do
        local msg, typ = s:recv()
        if not msg then break end
        message(arg, msg, typ)
    end
    handler.close(arg)
end

-- serve()'s handler: npm engine.io's events.
local EVENTS = {
    open = function(s)
        local fn = s.server_handlers.connection
        if fn then call("connection", fn, s) end
    end,
    message = function(s, msg, typ)
        local fn = s._on_message
        if fn then call("message", fn, msg, typ == "binary") end
    end,
    close = function(s)
        local fn = s._on_close
        if fn then call("close", fn, reason_of(s)) end
    end,
}

-- eio:serve() in content_by_lua: accepts, then runs the socket's handlers
-- until it closes (npm engine.io's event style; accept() and recv() are
-- the loop style).
function Server:serve()
    local s = self:accept()
    if not s then return end
    s.server_handlers = self.handlers
    return self:run(s, EVENTS, s)
end

-- The socket's own methods: on("message" | "close", fn).
function _M.on(s, event, fn)
    if type(fn) ~= "function" then
        error("bad argument #2 to 'on' (function expected, got " .. type(fn) .. ")", 2)
    end
    if event == "message" then
        s._on_message = fn
    elseif event == "close" then
        s._on_close = fn
    else
        error("bad argument #1 to 'on' (\"message\" or \"close\" expected)", 2)
    end
    return s
end

return _M
