-- Plain WebSocket, one protocol on the socket core: passport.websocket(auth,
-- opts) in content_by_lua checks the RFC 6455 upgrade (version 13),
-- authorizes it with auth, answers 101 and returns the socket.  A message
-- is one text or binary WebSocket message, as is.
--
--   local socket = passport.websocket(auth, { protocols = { "chat" } })
--   if not socket then return end        -- the HTTP error was sent
--   socket:send("hello")
--   while true do
--       local msg, typ = socket:recv()   -- "text" | "binary"
--       if not msg then break end        -- nil, err, code, reason
--   end
local frame = require "resty.passport.ws.frame"
local nginx = require "resty.passport.nginx"
local socket = require "resty.passport.ws.socket"
local host = require "resty.passport.host"

local accept_key = frame.accept_key
local encode = frame.encode
local handshake_input = nginx.handshake_input
local count = nginx.count
local http_error = nginx.respond_error
local reject = nginx.reject
local new_options = socket.options
local open = socket.open
local ngx = ngx
local ngx_var = ngx.var
local http_version = ngx.req.http_version
local get_method = ngx.req.get_method
local concat = table.concat
local error = error
local find = string.find
local gmatch = string.gmatch
local ipairs = ipairs
local lower = string.lower
local setmetatable = setmetatable
local type = type

local TEXT, BINARY, PING = frame.TEXT, frame.BINARY, frame.PING

local _M = { _VERSION = "0.1.0" }

-- The protocol: one shared object for every plain WebSocket.
local class = socket.class {
    name = "websocket",
    encode = function(data, binary)
        return encode(binary and BINARY or TEXT, data)
    end,
    ping = encode(PING, ""),
}

---------------------------------------------------------------------------
-- lua-resty-websocket's server API (resty.websocket.server), so that a
-- handler written for it runs on passport.websocket(auth) by changing the
-- line that makes the socket.  Its conventions: recv_frame() --> data,
-- typ, err; the send_* methods --> bytes, or nil and err.  Whole messages
-- come back ("text" or "binary"; fragments are joined), pings are
-- answered here and pongs taken here (neither comes back), a close comes
-- back as reason, "close", code; every send goes through the socket's
-- queue, so other requests may send too.

local PONG = frame.PONG
local utf8_valid = frame.utf8_valid

local function sent(ok, err, n)
    if ok then return n end
    return nil, err
end

-- wb:recv_frame() --> data, "text" | "binary" | "close", err (the close
-- code) | nil, nil, "timeout" (set_timeout's wait passed) | nil, nil, err
function class.recv_frame(self)
    local msg, typ, code, reason = self:recv()
    if msg then return msg, typ end
    if typ == "timeout" then return nil, nil, "timeout" end
    if code and code ~= frame.CLOSE_ABNORMAL then return reason or "", "close", code end
    return nil, nil, typ
end

function class.send_text(self, data)
    if type(data) ~= "string" then return nil, "string expected" end
    if not utf8_valid(data) then return nil, "text must be UTF-8 (send_binary sends bytes)" end
    local ok, err = self:send(data)
    return sent(ok, err, #data)
end

function class.send_binary(self, data)
    if type(data) ~= "string" then return nil, "string expected" end
    local ok, err = self:send(data, true)
    return sent(ok, err, #data)
end

function class.send_ping(self, data)
    data = data or ""
    if #data > 125 then return nil, "too long a ping payload" end
    local ok, err = self:send_frame(encode(PING, data))
    return sent(ok, err, #data)
end

function class.send_pong(self, data)
    data = data or ""
    if #data > 125 then return nil, "too long a pong payload" end
    local ok, err = self:send_frame(encode(PONG, data))
    return sent(ok, err, #data)
end

-- wb:send_close([code[, msg]]): 1 (a close already begun, by either side,
-- is no error: the handshake is under way).
function class.send_close(self, code, msg)
    if self.state ~= "open" then return 1 end
    self:close(code, msg)
    return 1
end

-- wb:set_timeout(ms): recv_frame() waits at most ms, then returns nil,
-- nil, "timeout" (the socket stays open; its idle_timeout still closes a
-- silent peer).
function class.set_timeout(self, ms)
    if type(ms) ~= "number" or ms <= 0 then
        error("bad argument #1 to 'set_timeout' (positive number of ms expected)", 2)
    end
    self.recv_timeout = ms
    local send = self.opts.send_timeout * 1000
    self.sock:settimeouts(send, send, ms)
end

-- Our own option beside the core's.
local OPTIONS = { protocols = "table" }

---------------------------------------------------------------------------
-- Subprotocols.

-- The rank of each of the server's subprotocols, interned by value (as the
-- core's options are); nil without a list.
local ranks = setmetatable({}, { __mode = "v" })

local function protocol_rank(protocols)
    if not protocols then return nil end
    for _, p in ipairs(protocols) do
        if type(p) ~= "string" or p == "" or find(p, "[,%s]") then
            error("bad option 'protocols' to 'websocket' (list of tokens expected)", 3)
        end
    end
    local id = concat(protocols, ",")
    local rank = ranks[id]
    if not rank then
        rank = {}
        for i, p in ipairs(protocols) do
            if not rank[p] then rank[p] = i end
        end
        ranks[id] = rank
    end
    return rank
end

-- The first of the server's protocols (in its order) that the client
-- offered; nil when none or when the server has no list.
local function pick_protocol(rank, offered)
    if not rank or not offered then return nil end
    local best, best_rank
    for p in gmatch(offered, "[^,%s]+") do
        local r = rank[p]
        if r and (not best_rank or r < best_rank) then
            best, best_rank = p, r
        end
    end
    return best
end

---------------------------------------------------------------------------
-- The upgrade.

local function has_token(value, token)
    if not value then return false end
    for t in gmatch(lower(value), "[^,%s]+") do
        if t == token then return true end
    end
    return false
end

-- Returns nil or status, message[, headers] for a request that is not a
-- valid version-13 upgrade.  Checked before the session: no Redis round
-- trip for a request that cannot become a WebSocket.
local function bad_upgrade(var)
    if get_method() ~= "GET" then
        return 405, "WebSocket handshake must be a GET"
    end
    if http_version() ~= 1.1 then
        return 400, "WebSocket needs HTTP/1.1"
    end
    if not has_token(var.http_upgrade, "websocket") then
        return 426, "Upgrade: websocket expected", { Upgrade = "websocket" }
    end
    if not has_token(var.http_connection, "upgrade") then
        return 400, "Connection: Upgrade expected"
    end
    if var.http_sec_websocket_version ~= "13" then
        return 426, "unsupported Sec-WebSocket-Version", { ["Sec-WebSocket-Version"] = "13" }
    end
    return nil
end

-- The 101 answer.
local function switching(accept, protocol)
    return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
           .. "Connection: Upgrade\r\nSec-WebSocket-Accept: " .. accept .. "\r\n"
           .. (protocol and "Sec-WebSocket-Protocol: " .. protocol .. "\r\n" or "")
           .. "\r\n"
end

-- The Sec-WebSocket-Accept of a valid version-13 upgrade, or nil once the
-- HTTP refusal has been sent; name says whose handshake, for the log.
-- Checked before the session: no Redis round trip for a request that
-- cannot become a WebSocket.
local function accept_upgrade(var, name)
    local status, msg, extra = bad_upgrade(var)
    if status then
        host.log("info", "passport: " .. name .. " handshake refused (" .. status .. "): " .. msg)
        return http_error(status, msg, extra)
    end
    local accept = accept_key(var.http_sec_websocket_key)
    if not accept then
        return http_error(400, "invalid Sec-WebSocket-Key")
    end
    return accept
end

-- For the protocols that upgrade the same way (Engine.IO).
_M.accept_upgrade = accept_upgrade
_M.switching = switching

---------------------------------------------------------------------------
-- passport.websocket(auth, opts)

function _M.serve(auth, opts)
    if type(auth) ~= "table" or type(auth.verify) ~= "function" then
        error("bad argument #1 to 'websocket' (an authorize object expected, from "
              .. "passport.authorize{...})", 2)
    end
    local options = new_options(opts, "websocket", OPTIONS)
    local rank = protocol_rank(opts and opts.protocols)
    local var = ngx_var
    local accept = accept_upgrade(var, "websocket")
    if not accept then return nil end
    local ok, data, is_error, refused = auth:verify(handshake_input(auth))
    count("terminate", ok, data, is_error)
    if not ok then
        return reject(data, is_error, refused)
    end
    local protocol = pick_protocol(rank, var.http_sec_websocket_protocol)
    return open(class, options, data, switching(accept, protocol), protocol)
end

return _M
