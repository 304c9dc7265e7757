-- RFC 6455 frames (C core through FFI): the handshake's accept key, header
-- parsing and encoding, unmasking, UTF-8 validation and close payloads, and
-- the opcodes and close codes by name.  Pure functions on strings; the
-- socket core (ws/socket.lua) is built on top of them.
--
-- "Not enough bytes yet" is said one way: nil, "need", n (n more bytes).
local ffi = require "ffi"
local bit = require "bit"
local core = require "resty.passport.ffi"

local C = core.C
local reasons = core.reasons
local ffi_copy = ffi.copy
local ffi_new = ffi.new
local ffi_string = ffi.string
local band = bit.band
local char = string.char
local error = error
local floor = math.floor
local rshift = bit.rshift
local setmetatable = setmetatable
local tonumber = tonumber
local type = type

local _M = {
    _VERSION = "0.1.0",
    -- Opcodes by name, for encode and for reading header.opcode.
    CONTINUATION = 0x0, TEXT = 0x1, BINARY = 0x2,
    CLOSE = 0x8, PING = 0x9, PONG = 0xA,
    -- Close codes by name (RFC 6455 7.4.1).  NO_STATUS and ABNORMAL are
    -- never sent: they report an empty close payload and a vanished peer.
    CLOSE_NORMAL = 1000, CLOSE_GOING_AWAY = 1001, CLOSE_PROTOCOL_ERROR = 1002,
    CLOSE_NO_STATUS = 1005, CLOSE_ABNORMAL = 1006, CLOSE_INVALID_DATA = 1007,
    CLOSE_POLICY = 1008, CLOSE_TOO_BIG = 1009,
}

-- Largest payload length a Lua number holds exactly: the default maximum.
local MAX_EXACT = 2 ^ 53 - 1

local opcodes = {
    continuation = _M.CONTINUATION, text = _M.TEXT, binary = _M.BINARY,
    close = _M.CLOSE, ping = _M.PING, pong = _M.PONG,
}

local accept_buf = ffi_new("char[28]")
local hdr = ffi_new("rp_ws_frame")
local code_out = ffi_new("int[1]")
local state_one = ffi_new("uint32_t[1]")

local get_buf = core.get_buf

-- What a peer's bad text is called, cut off or not (recv's err, for 1007).
_M.INVALID_UTF8 = reasons[C.RP_EUTF8]
local INCOMPLETE = "incomplete UTF-8 sequence"

-- A failed header parse (rc < 0): its reason.
local function header_error(rc)
    return reasons[rc] or "error " .. rc
end

-- The close code for a parse error, for the close frame we answer with.
local function close_code_for(err)
    if err == reasons[C.RP_EBIGFRAME] then
        return _M.CLOSE_TOO_BIG
    elseif err == reasons[C.RP_EUTF8] or err == INCOMPLETE then
        return _M.CLOSE_INVALID_DATA
    end
    return _M.CLOSE_PROTOCOL_ERROR
end
_M.close_code_for = close_code_for

-- Sec-WebSocket-Accept for a Sec-WebSocket-Key, or nil and a reason.
function _M.accept_key(key)
    if type(key) ~= "string" then
        return nil, "invalid Sec-WebSocket-Key"
    end
    if C.rp_ws_accept(key, #key, accept_buf) ~= 0 then
        return nil, "invalid Sec-WebSocket-Key"
    end
    return ffi_string(accept_buf, 28)
end

-- The header at the start of str: a table, or nil, "need", n when n more
-- bytes are needed, or nil and a reason (core.reasons).  require_mask: true
-- for frames from a client.  max_len: largest payload accepted (default
-- 2^53 - 1).  rsv_allowed: reserved bits an extension uses (RSV1 = 4).
function _M.parse_header(str, require_mask, max_len, rsv_allowed)
    if type(str) ~= "string" then
        error("bad argument #1 to 'parse_header' (string expected, got "
              .. type(str) .. ")", 2)
    end
    if max_len == nil then
        max_len = MAX_EXACT
    elseif type(max_len) ~= "number" or max_len < 0 or max_len > MAX_EXACT
           or max_len ~= floor(max_len) then
        error("bad argument #3 to 'parse_header' (integer 0 to 2^53-1 "
              .. "expected)", 2)
    end
    local rc = C.rp_ws_parse_header(str, #str, require_mask and 1 or 0,
                                    rsv_allowed or 0, max_len, hdr)
    if rc > 0 then
        return nil, "need", rc
    elseif rc < 0 then
        return nil, header_error(rc)
    end
    local masked = hdr.masked ~= 0
    return {
        fin = hdr.fin ~= 0,
        rsv = hdr.rsv,
        opcode = hdr.opcode,
        masked = masked,
        mask = masked and ffi_string(hdr.mask, 4) or nil,
        payload_len = tonumber(hdr.payload_len),
        header_len = hdr.header_len,
    }
end

-- The header of a client (masked) frame at the start of str, for a read
-- loop: no table, no argument checks (max_len is the caller's own limit).
-- Returns opcode, fin, payload_len, mask, header_len; or nil, "need", n;
-- or nil, reason, close_code.
function _M.client_header(str, max_len)
    local rc = C.rp_ws_parse_header(str, #str, 1, 0, max_len, hdr)
    if rc > 0 then
        return nil, "need", rc
    elseif rc < 0 then
        local why = header_error(rc)
        return nil, why, close_code_for(why)
    end
    return hdr.opcode, hdr.fin ~= 0, tonumber(hdr.payload_len),
           ffi_string(hdr.mask, 4), hdr.header_len
end

local function check_key(key, fname, argn)
    if type(key) ~= "string" or #key ~= 4 then
        error("bad argument #" .. argn .. " to '" .. fname .. "' (4-byte "
              .. "string expected)", 3)
    end
end

-- str XORed with the 4-byte key; offset is str's position in the payload
-- (default 0), for payloads that arrive in pieces.
function _M.unmask(str, key, offset)
    if type(str) ~= "string" then
        error("bad argument #1 to 'unmask' (string expected, got "
              .. type(str) .. ")", 2)
    end
    check_key(key, "unmask", 2)
    if offset ~= nil and (type(offset) ~= "number" or offset < 0) then
        error("bad argument #3 to 'unmask' (non-negative number expected)", 2)
    end
    local n = #str
    local b = get_buf(n)
    ffi_copy(b, str, n)
    C.rp_ws_unmask(b, n, key, offset or 0)
    return ffi_string(b, n)
end

-- One whole frame: opcode (number or name), payload (default ""), fin
-- (default true), mask (4-byte string for client frames, nil for server).
function _M.encode(opcode, payload, fin, mask)
    if type(opcode) == "string" then
        opcode = opcodes[opcode]
    end
    if type(opcode) ~= "number" or opcode < 0 or opcode > 15 then
        error("bad argument #1 to 'encode' (opcode expected)", 2)
    end
    payload = payload or ""
    if type(payload) ~= "string" then
        error("bad argument #2 to 'encode' (string expected, got "
              .. type(payload) .. ")", 2)
    end
    if mask ~= nil then
        check_key(mask, "encode", 4)
    end
    local n = #payload
    local b = get_buf(14 + n)
    local hl = C.rp_ws_header(b, fin == false and 0 or 1, opcode, n, mask)
    if hl < 0 then
        error("bad argument to 'encode' (unknown opcode, or a control frame "
              .. "fragmented or over 125 bytes)", 2)
    end
    ffi_copy(b + hl, payload, n)
    if mask then
        C.rp_ws_unmask(b + hl, n, mask, 0)
    end
    return ffi_string(b, hl + n)
end

-- Whole-string UTF-8 check: true, or nil and a reason.
function _M.utf8_valid(str)
    if type(str) ~= "string" then
        error("bad argument #1 to 'utf8_valid' (string expected, got "
              .. type(str) .. ")", 2)
    end
    state_one[0] = 0
    local rc = C.rp_utf8_validate(str, #str, state_one)
    if rc == 0 then
        return true
    elseif rc > 0 then
        return nil, INCOMPLETE
    end
    return nil, reasons[rc]
end

-- A validator for a message that arrives in fragments:
--   local v = frame.utf8(); v:feed(a); v:feed(b); v:finish()
-- feed returns true, or nil and a reason once the bytes cannot be UTF-8;
-- finish returns true when the message ends on a character boundary.
local validator = {}
local validator_mt = { __index = validator }

function _M.utf8()
    return setmetatable({ state = ffi_new("uint32_t[1]") }, validator_mt)
end

function validator:feed(str)
    if type(str) ~= "string" then
        error("bad argument #1 to 'feed' (string expected, got "
              .. type(str) .. ")", 2)
    end
    local rc = C.rp_utf8_validate(str, #str, self.state)
    if rc < 0 then
        return nil, reasons[rc]
    end
    return true
end

function validator:finish()
    if self.state[0] ~= 0 then
        -- invalid stays invalid; an open sequence is incomplete
        if self.state[0] == 0xFFFFFFFF then
            return nil, reasons[C.RP_EUTF8]
        end
        return nil, INCOMPLETE
    end
    return true
end

function validator:reset()
    self.state[0] = 0
end

-- A close frame's payload: code and reason (code 1005 and "" when empty),
-- or nil and a reason.
function _M.parse_close(payload)
    if type(payload) ~= "string" then
        error("bad argument #1 to 'parse_close' (string expected, got "
              .. type(payload) .. ")", 2)
    end
    local rc = C.rp_ws_close_parse(payload, #payload, code_out)
    if rc ~= 0 then
        return nil, rc == C.RP_EPROTO and "invalid close payload"
                    or reasons[rc]
    end
    return code_out[0], payload:sub(3)
end

-- Whether code may be sent in a close frame.
local function close_code_ok(code)
    return type(code) == "number" and C.rp_ws_close_code_ok(code) ~= 0
end
_M.close_code_ok = close_code_ok

-- The argument checks of a socket's send(data[, binary]) and close([code[,
-- reason]]) (ws/socket.lua's, and attach.lua's entries): nil when the
-- arguments are good, else the "bad argument ..." message to raise.
function _M.send_args_error(data, binary)
    if type(data) ~= "string" then
        return "bad argument #1 to 'send' (string expected, got " .. type(data) .. ")"
    end
    if not binary and not _M.utf8_valid(data) then
        return "bad argument #1 to 'send' (text must be UTF-8; pass binary = true)"
    end
end

function _M.close_args_error(code, reason)
    if code ~= nil and not close_code_ok(code) then
        return "bad argument #1 to 'close' (valid close code expected)"
    end
    if reason ~= nil and (type(reason) ~= "string" or #reason > 123) then
        return "bad argument #2 to 'close' (string of at most 123 bytes expected)"
    end
end

-- A close frame's payload for code (nil: empty) and reason (UTF-8, at most
-- 123 bytes).
function _M.close_payload(code, reason)
    if code == nil then
        if reason ~= nil and reason ~= "" then
            error("bad argument #2 to 'close_payload' (a reason needs a "
                  .. "code)", 2)
        end
        return ""
    end
    if not close_code_ok(code) then
        error("bad argument #1 to 'close_payload' (valid close code "
              .. "expected)", 2)
    end
    reason = reason or ""
    if type(reason) ~= "string" or #reason > 123 or not _M.utf8_valid(reason)
    then
        error("bad argument #2 to 'close_payload' (UTF-8 string of at most "
              .. "123 bytes expected)", 2)
    end
    return char(rshift(code, 8), band(code, 0xFF)) .. reason
end

return _M
