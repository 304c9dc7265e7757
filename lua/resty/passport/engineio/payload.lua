-- Engine.IO v4 payloads, the body of an HTTP long-polling request or
-- response: packets joined by the record separator (0x1E), each its type
-- character and data, a binary message as "b" and its base64 (what npm
-- engine.io-parser's encodePayload and decodePayload do).
--
--   payload.decode(body)   --> { {type = "4", data = "hi"}, {type = "4",
--                         --      data = <bytes>, binary = true}, ... }
--                         --  | packets, "parser error"
--   payload.encode(list)   --> body
--   payload.packet(type, data, binary) --> one packet's text
--
-- No I/O: the polling transport reads and writes the bodies.
local core = require "resty.passport.ffi"

local C = core.C
local get_buf = core.get_buf
local ffi_string = require("ffi").string
local byte = string.byte
local concat = table.concat
local error = error
local find = string.find
local sub = string.sub
local type = type

local _M = { _VERSION = "0.1.0", SEPARATOR = "\30" }

local B = 98 -- "b"
-- The packet types ("0" open ... "6" noop).
local ZERO, SIX = 48, 54

-- Node's Buffer.from(s, "base64"): either alphabet, other characters
-- skipped, stops at the first "=".
local function from_base64(s)
    local cap = #s / 4 * 3 + 3
    local out = get_buf(cap)
    local n = C.rp_base64_decode(s, #s, out, cap)
    return ffi_string(out, n)
end

local function to_base64(s)
    local cap = (#s + 2) / 3 * 4 + 4
    local out = get_buf(cap)
    local n = C.rp_base64_encode(s, #s, out, cap)
    if n < 0 then return nil end
    return ffi_string(out, n)
end

_M.from_base64 = from_base64
_M.to_base64 = to_base64

-- One packet's text, or nil (not a packet: engine.io-parser's error).
local function decode_packet(s)
    local t = byte(s, 1)
    if t == B then
        return { type = "4", data = from_base64(sub(s, 2)), binary = true }
    end
    if not t or t < ZERO or t > SIX then return nil end
    if #s == 1 then return { type = sub(s, 1, 1) } end
    return { type = sub(s, 1, 1), data = sub(s, 2) }
end
_M.decode_packet = decode_packet

-- The packets of a body.  At the first piece that is no packet the list so
-- far comes back with "parser error" (engine.io delivers those, then
-- closes the session).  An empty body is one bad piece, as for
-- engine.io-parser.
function _M.decode(body)
    if type(body) ~= "string" then
        error("bad argument #1 to 'decode' (string expected, got " .. type(body) .. ")", 2)
    end
    local out, n, i = {}, 0, 1
    while true do
        local j = find(body, "\30", i, true)
        local p = decode_packet(sub(body, i, (j or 0) - 1))
        if not p then return out, "parser error" end
        n = n + 1
        out[n] = p
        if not j then return out end
        i = j + 1
    end
end

-- One packet's text: type ("0".."6") and data, or a binary message.
function _M.packet(typ, data, binary)
    if binary then
        if type(data) ~= "string" then
            error("bad argument #2 to 'packet' (string expected, got " .. type(data) .. ")", 2)
        end
        return "b" .. to_base64(data)
    end
    local t = type(typ) == "string" and #typ == 1 and byte(typ)
    if not t or t < ZERO or t > SIX then
        error("bad argument #1 to 'packet' (a packet type \"0\" to \"6\" expected)", 2)
    end
    if data == nil then return typ end
    if type(data) ~= "string" then
        error("bad argument #2 to 'packet' (string expected, got " .. type(data) .. ")", 2)
    end
    if find(data, "\30", 1, true) then
        -- text data cannot hold the separator; engine.io-client's own
        -- packets never do (JSON escapes it)
        error("bad argument #2 to 'packet' (text holds the record separator)", 2)
    end
    return typ .. data
end
local packet = _M.packet

-- A body from a list of { type, data, binary } packets.
function _M.encode(list)
    local parts = {}
    for i = 1, #list do
        local p = list[i]
        parts[i] = packet(p.type or "4", p.data, p.binary)
    end
    return concat(parts, "\30")
end


return _M
