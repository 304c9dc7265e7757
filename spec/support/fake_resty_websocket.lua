-- A stand-in for lua-resty-websocket's server (resty.websocket.server),
-- which Debian does not package: the same constructor, methods, fields and
-- return conventions, over the request's raw socket, for specs of handlers
-- written for it (passport.attach).  It does the RFC 6455 handshake and
-- reads and writes frames itself; only the frame codec's encoder and
-- unmasker come from the project (ws/frame.lua), never its socket core.
--
--   local server = require "support.fake_resty_websocket"
--   local wb, err = server:new { timeout = 5000, max_payload_len = 65535 }
--   local data, typ, err = wb:recv_frame()
--       -- one frame, not a message: "text" | "binary" | "continuation"
--       -- (err "again" while fin is unset) | "ping" | "pong" | "close"
--       -- (data the reason, err the code; nil for an empty close)
--       -- nil, nil, err on failure ("...: timeout" is retryable, anything
--       -- else sets wb.fatal)
--   wb:send_text(s), send_binary(s), send_ping(s), send_pong(s),
--   send_close(code, msg)   --> bytes written | nil, err (sets wb.fatal)
--   wb:set_timeout(ms)
local frame = require "resty.passport.ws.frame"
local bit = require "bit"

local band, bor, lshift, rshift = bit.band, bit.bor, bit.lshift, bit.rshift
local byte, char, sub = string.byte, string.char, string.sub
local find, lower = string.find, string.lower
local concat = table.concat
local random = math.random
local setmetatable = setmetatable
local tostring = tostring
local type = type

local _M = { _VERSION = "0.10-fake" }
local mt = { __index = _M }

local GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

local types = {
    [0x0] = "continuation", [0x1] = "text", [0x2] = "binary",
    [0x8] = "close", [0x9] = "ping", [0xa] = "pong",
}

local function first(v)
    if type(v) == "table" then return v[1] end
    return v
end

-- server:new(opts): checks the upgrade request, answers 101 and takes the
-- raw socket; nil and an error when the request is no WebSocket upgrade.
function _M.new(_, opts)
    if ngx.headers_sent then
        return nil, "response header already sent"
    end
    ngx.req.read_body()
    if ngx.req.http_version() ~= 1.1 then
        return nil, "bad http version"
    end
    local headers = ngx.req.get_headers()
    local val = first(headers.upgrade)
    if not val or lower(val) ~= "websocket" then
        return nil, "bad \"upgrade\" request header: " .. tostring(val)
    end
    val = headers.connection
    if type(val) == "table" then val = concat(val, ",") end
    if not val or not find(lower(val), "upgrade", 1, true) then
        return nil, "bad \"connection\" request header"
    end
    local key = first(headers["sec-websocket-key"])
    if not key then
        return nil, "bad \"sec-websocket-key\" request header"
    end
    if first(headers["sec-websocket-version"]) ~= "13" then
        return nil, "bad \"sec-websock-version\" request header"
    end
    local protocols = first(headers["sec-websocket-protocol"])
    if protocols then ngx.header["Sec-WebSocket-Protocol"] = protocols end
    ngx.header["Upgrade"] = "websocket"
    ngx.header["Sec-WebSocket-Accept"] = ngx.encode_base64(ngx.sha1_bin(key .. GUID))
    ngx.header["Content-Type"] = nil
    ngx.status = 101
    local ok, err = ngx.send_headers()
    if not ok then
        return nil, "failed to send response header: " .. (err or "unknown")
    end
    ok, err = ngx.flush(true)
    if not ok then
        return nil, "failed to flush response header: " .. (err or "unknown")
    end
    local sock
    sock, err = ngx.req.socket(true)
    if not sock then
        return nil, err
    end
    opts = opts or {}
    if opts.timeout then sock:settimeout(opts.timeout) end
    return setmetatable({
        sock = sock,
        max_payload_len = opts.max_payload_len or 65535,
        send_masked = opts.send_masked,
    }, mt)
end

-- One frame off the socket, lua-resty-websocket's protocol.recv_frame.
local function read_frame(sock, max_payload_len, force_masking)
    local data, err = sock:receive(2)
    if not data then
        return nil, nil, "failed to receive the first 2 bytes: " .. err
    end
    local fst, snd = byte(data, 1, 2)
    local fin = band(fst, 0x80) ~= 0
    if band(fst, 0x70) ~= 0 then
        return nil, nil, "bad RSV1, RSV2, or RSV3 bits"
    end
    local opcode = band(fst, 0x0f)
    if opcode >= 0x3 and opcode <= 0x7 then
        return nil, nil, "reserved non-control frames"
    end
    if opcode >= 0xb and opcode <= 0xf then
        return nil, nil, "reserved control frames"
    end
    local mask = band(snd, 0x80) ~= 0
    if force_masking and not mask then
        return nil, nil, "frame unmasked"
    end
    local len = band(snd, 0x7f)
    if len == 126 then
        data, err = sock:receive(2)
        if not data then
            return nil, nil, "failed to receive the 2 byte payload length: " .. (err or "unknown")
        end
        len = bor(lshift(byte(data, 1), 8), byte(data, 2))
    elseif len == 127 then
        data, err = sock:receive(8)
        if not data then
            return nil, nil, "failed to receive the 8 byte payload length: " .. (err or "unknown")
        end
        local b1, b2, b3, b4, b5, b6, b7, b8 = byte(data, 1, 8)
        if b1 ~= 0 or b2 ~= 0 or b3 ~= 0 or b4 ~= 0 or band(b5, 0x80) ~= 0 then
            return nil, nil, "payload len too large"
        end
        len = bor(lshift(b5, 24), lshift(b6, 16), lshift(b7, 8), b8)
    end
    if band(opcode, 0x8) ~= 0 then
        if len > 125 then
            return nil, nil, "too long payload for control frame"
        end
        if not fin then
            return nil, nil, "fragmented control frame"
        end
    end
    if len > max_payload_len then
        return nil, nil, "exceeding max payload len"
    end
    local rest = mask and len + 4 or len
    if rest > 0 then
        data, err = sock:receive(rest)
        if not data then
            return nil, nil, "failed to read masking-len and payload: " .. (err or "unknown")
        end
    else
        data = ""
    end
    local payload = data
    if mask then
        payload = len > 0 and frame.unmask(sub(data, 5), sub(data, 1, 4)) or ""
    end
    if opcode == 0x8 then
        if len > 0 then
            if len < 2 then
                return nil, nil, "close frame with a body must carry a 2-byte status code"
            end
            return sub(payload, 3), "close", bor(lshift(byte(payload, 1), 8), byte(payload, 2))
        end
        return "", "close", nil
    end
    return payload, types[opcode], not fin and "again" or nil
end

function _M.recv_frame(self)
    if self.fatal then
        return nil, nil, "fatal error already happened"
    end
    local sock = self.sock
    if not sock then
        return nil, nil, "not initialized yet"
    end
    local data, typ, err = read_frame(sock, self.max_payload_len, true)
    if not data and not find(err, ": timeout", 1, true) then
        self.fatal = true
    end
    return data, typ, err
end

local function send_frame(self, fin, opcode, payload)
    if self.fatal then
        return nil, "fatal error already happened"
    end
    if self.closed then
        return nil, "already closed"
    end
    local sock = self.sock
    if not sock then
        return nil, "not initialized yet"
    end
    if not payload then
        payload = ""
    elseif type(payload) ~= "string" then
        payload = tostring(payload)
    end
    local bytes, err
    if #payload > self.max_payload_len then
        err = "payload too big"
    elseif band(opcode, 0x8) ~= 0 and #payload > 125 then
        err = "too much payload for control frame"
    else
        local mask = self.send_masked
            and char(random(0, 255), random(0, 255), random(0, 255), random(0, 255)) or nil
        bytes, err = sock:send(frame.encode(opcode, payload, fin, mask))
        if not bytes then err = "failed to send frame: " .. err end
    end
    if not bytes then
        self.fatal = true
    end
    return bytes, err
end
_M.send_frame = send_frame

function _M.send_text(self, data)
    return send_frame(self, true, 0x1, data)
end

function _M.send_binary(self, data)
    return send_frame(self, true, 0x2, data)
end

function _M.send_ping(self, data)
    return send_frame(self, true, 0x9, data)
end

function _M.send_pong(self, data)
    return send_frame(self, true, 0xa, data)
end

function _M.send_close(self, code, msg)
    local payload
    if code then
        payload = char(band(rshift(code, 8), 0xff), band(code, 0xff)) .. (msg or "")
    end
    local bytes, err = send_frame(self, true, 0x8, payload)
    if not bytes then
        self.fatal = true
    end
    self.closed = true
    return bytes, err
end

function _M.set_timeout(self, time)
    local sock = self.sock
    if not sock then
        return nil, nil, "not initialized yet"
    end
    return sock:settimeout(time)
end

return _M
