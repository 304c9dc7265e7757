-- Socket.IO v5 packets (what npm socket.io-parser 4.2.7 reads and writes):
-- a decoder that mirrors its Decoder, message by message, and encoders for
-- the packets a server sends.  Pure Lua on top of lua-cjson; no ngx.
--
-- A packet is { type = 0..4, nsp = "/name", id = n or nil, data = v or nil }.
-- Binary data is a parser.binary(s) value; a packet that holds some travels
-- as a BINARY_EVENT / BINARY_ACK text message with placeholders followed by
-- one binary message per attachment, and is reported as EVENT / ACK.
--
-- The decoder refuses a few messages that socket.io-parser accepts (see
-- decode_string): they come from its use of Number() on single characters,
-- and spec/compat/sio_parser_diff_spec.lua lists them all.
local cjson = require "cjson.safe"

local byte = string.byte
local concat = table.concat
local error = error
local find = string.find
local floor = math.floor
local format = string.format
local getmetatable = getmetatable
local huge = math.huge
local next = next
local rawget = rawget
local setmetatable = setmetatable
local sub = string.sub
local tonumber = tonumber
local type = type

local _M = {
    _VERSION = "0.1.0",
    CONNECT = 0, DISCONNECT = 1, EVENT = 2, ACK = 3, CONNECT_ERROR = 4,
    BINARY_EVENT = 5, BINARY_ACK = 6,
}

local EVENT, ACK = 2, 3

-- Event names a peer may not use (socket.io-parser's RESERVED_EVENTS).
local RESERVED = {
    connect = true, connect_error = true, disconnect = true,
    disconnecting = true, newListener = true, removeListener = true,
}

local null = cjson.null

-- Largest integer a double holds exactly: ids and plain integers up to it.
local MAX_EXACT = 2 ^ 53

-- Binary values.  LuaJIT (Lua 5.1 semantics) ignores __len on tables, so
-- #b is 0 there: use #b.data.
local Binary = {
    __tostring = function(b) return b.data end,
    __len = function(b) return #b.data end,
}
_M.Binary = Binary

function _M.binary(s)
    if type(s) ~= "string" then
        error("bad argument #1 to 'binary' (string expected, got " .. type(s) .. ")", 2)
    end
    return setmetatable({ data = s }, Binary)
end

function _M.is_binary(v)
    return getmetatable(v) == Binary
end

-- parser.array(t): t is sent as a JSON array even when empty (a Lua table
-- cannot tell [] from {}; what decodes MessagePack or JSON arrays marks
-- them so).
local Array = { __name = "socket.io array" }
_M.Array = Array

function _M.array(t)
    return setmetatable(t, Array)
end

---------------------------------------------------------------------------
-- Encoding
---------------------------------------------------------------------------

-- JSON.  lua-cjson 2.1.0 prints numbers with %.14g and takes no precision
-- above 14, which rounds some doubles (2^53, 0.1 + 0.2).  So cjson encodes
-- a table whole only when every number in it survives %.14g; put() below
-- writes the others, and every table holding a Binary, itself: integers up
-- to 2^53 as integers, other numbers with the fewest of 14 to 17 digits
-- that read back exactly (0.1, 0.30000000000000004), so JS gets the same
-- double.  Both follow cjson's rules for tables: an array when the keys
-- are exactly 1..n (holes within cjson's sparseness limit become null),
-- else an object with string or number keys; so an empty table is {},
-- unless marked an array (parser.array).
-- Strings go through cjson, which writes "/" as "\/" (valid JSON).
local enc = cjson.new()
enc.encode_invalid_numbers(false)    -- NaN and inf: an error, not "nan"
enc.encode_max_depth(1000)           -- also put()'s limit
enc.encode_sparse_array(false, 2, 10)
local c_encode = enc.encode

local MAX_ENC_DEPTH = 1000
local FMT = { "%.14g", "%.15g", "%.16g", "%.17g" }
local FMT14 = FMT[1]
local BAD_NUMBER = "Cannot serialise number: must not be NaN or Inf"

local function number_json(n)
    if n ~= n or n == huge or n == -huge then
        return nil, BAD_NUMBER
    end
    if n % 1 == 0 and n >= -MAX_EXACT and n <= MAX_EXACT then
        return format("%d", n)
    end
    for i = 1, 3 do
        local s = format(FMT[i], n)
        if tonumber(s) == n then
            return s
        end
    end
    return format(FMT[4], n)
end

-- Whether t needs put(): it holds a Binary, a number %.14g would round, or
-- is nested deeper than cjson would go (put() then says so).
local function needs_put(t, depth)
    local mt = getmetatable(t)
    if depth > MAX_ENC_DEPTH or mt == Binary or (mt == Array and next(t) == nil) then
        return true
    end
    for _, v in next, t do
        local tv = type(v)
        if tv == "table" then
            if needs_put(v, depth + 1) then
                return true
            end
        elseif tv == "number" then
            if not (v % 1 == 0 and v > -1e14 and v < 1e14)
               and tonumber(format(FMT14, v)) ~= v then
                return true
            end
        end
    end
    return false
end

local put

-- A table into buf (see put).
local function put_table(t, buf, nb, depth, st)
    if depth > MAX_ENC_DEPTH then
        return nil, "Cannot serialise, excessive nesting (" .. depth .. ")"
    end
    if getmetatable(t) == Binary then
        if not st.binary_ok then
            return nil, "binary data is only sent in EVENT and ACK packets"
        end
        local atts = st.atts
        if not atts then
            atts = {}
            st.atts = atts
        end
        local num = #atts
        atts[num + 1] = t.data
        nb = nb + 1
        buf[nb] = '{"_placeholder":true,"num":' .. num .. "}"
        return nb
    end
    if next(t) == nil and getmetatable(t) == Array then
        nb = nb + 1
        buf[nb] = "[]"
        return nb
    end
    -- cjson's array test: every key an integer >= 1, not too sparse
    local max, items = 0, 0
    for k in next, t do
        if type(k) == "number" and k >= 1 and k % 1 == 0 then
            if k > max then max = k end
            items = items + 1
        else
            max = -1
            break
        end
    end
    if max > 10 and max > items * 2 then
        return nil, "Cannot serialise table: excessively sparse array"
    end
    local err
    nb = nb + 1
    if max > 0 then
        buf[nb] = "["
        for i = 1, max do
            if i > 1 then
                nb = nb + 1
                buf[nb] = ","
            end
            nb, err = put(rawget(t, i), buf, nb, depth + 1, st)
            if not nb then
                return nil, err
            end
        end
        nb = nb + 1
        buf[nb] = "]"
        return nb
    end
    buf[nb] = "{"
    local first = true
    for k, v in next, t do
        local tk = type(k)
        local key
        if tk == "string" then
            key = c_encode(k)
        elseif tk == "number" then
            -- as cjson writes a number key
            if k == huge or k == -huge then
                return nil, BAD_NUMBER
            end
            key = '"' .. format(FMT14, k) .. '"'
        else
            return nil, "Cannot serialise " .. tk .. ": table key must be a number or string"
        end
        nb = nb + 1
        buf[nb] = first and key .. ":" or "," .. key .. ":"
        first = false
        nb, err = put(v, buf, nb, depth + 1, st)
        if not nb then
            return nil, err
        end
    end
    nb = nb + 1
    buf[nb] = "}"
    return nb
end

-- The JSON of v appended to buf after buf[nb]: the new nb, or nil, err.
-- st.atts collects Binary data (st.binary_ok allows them).
function put(v, buf, nb, depth, st)
    local tv = type(v)
    local s, err
    if tv == "string" then
        s = c_encode(v)
    elseif tv == "number" then
        s, err = number_json(v)
        if not s then
            return nil, err
        end
    elseif tv == "table" then
        return put_table(v, buf, nb, depth, st)
    elseif tv == "boolean" then
        s = v and "true" or "false"
    elseif v == nil or v == null then
        s = "null"
    else
        return nil, "Cannot serialise " .. tv .. ": type not supported"
    end
    nb = nb + 1
    buf[nb] = s
    return nb
end

-- One value's JSON (a table with no Binary and only %.14g-safe numbers goes
-- to cjson whole), or nil, err.  A table needing put() writes to a buffer
-- of its own; st may be nil when no Binary is allowed.
local function value_json(v, st)
    local tv = type(v)
    if tv == "string" then
        return c_encode(v)
    elseif tv == "number" then
        return number_json(v)
    elseif tv == "table" then
        if not needs_put(v, 1) then
            return c_encode(v)
        end
        st = st or { binary_ok = false }
        local buf = {}
        local nb, err = put_table(v, buf, 0, 1, st)
        if not nb then
            return nil, err
        end
        return concat(buf, "", 1, nb)
    elseif tv == "boolean" then
        return v and "true" or "false"
    elseif v == nil or v == null then
        return "null"
    end
    return nil, "Cannot serialise " .. tv .. ": type not supported"
end

local function check_nsp(nsp, fname)
    if nsp == nil or nsp == "/" then
        return ""
    end
    -- a ',' would end the namespace early when the packet is read back
    if type(nsp) ~= "string" or byte(nsp, 1) ~= 47 or find(nsp, ",", 2, true) then
        error("bad argument #1 to '" .. fname .. "' (namespace expected: a string "
              .. "starting with '/', without ',')", 3)
    end
    return nsp .. ","
end

local function check_id(id, fname, argn, required)
    if id == nil and not required then
        return ""
    end
    if type(id) ~= "number" or id < 0 or id > MAX_EXACT or id % 1 ~= 0 then
        error("bad argument #" .. argn .. " to '" .. fname .. "' (integer 0 to 2^53 expected, got "
              .. (type(id) == "number" and format(FMT[4], id) or type(id)) .. ")", 3)
    end
    return format("%d", id)
end

-- "2", or "5<n>-" when there are attachments (socket.io's encodeAsString).
local function head(typ, atts, nsp_part, id_part)
    if atts then
        return (typ + 3) .. #atts .. "-" .. nsp_part .. id_part
    end
    return typ .. nsp_part .. id_part
end

-- str, attachments (nil or a list of strings) for
-- packet = { type = 0..4, nsp = "/" (default), id = n or nil, data = v or nil };
-- or nil, err when data cannot be JSON.  EVENT and ACK packets holding
-- Binary values become BINARY_EVENT and BINARY_ACK (the caller's tables are
-- not changed).  Like socket.io's encoder, it does not check that data
-- suits the type (the peer's decoder does).
function _M.encode(packet)
    if type(packet) ~= "table" then
        error("bad argument #1 to 'encode' (table expected, got " .. type(packet) .. ")", 2)
    end
    local typ = packet.type
    if type(typ) ~= "number" or typ < 0 or typ > 4 or typ % 1 ~= 0 then
        error("bad argument #1 to 'encode' (packet.type 0 to 4 expected)", 2)
    end
    local nsp = packet.nsp
    if nsp ~= nil and nsp ~= "/" and (type(nsp) ~= "string" or byte(nsp, 1) ~= 47
                                      or find(nsp, ",", 2, true)) then
        error("bad argument #1 to 'encode' (packet.nsp: a string starting with '/', "
              .. "without ',' expected)", 2)
    end
    local nsp_part = (nsp == nil or nsp == "/") and "" or nsp .. ","
    local id = packet.id
    if id ~= nil and (type(id) ~= "number" or id < 0 or id > MAX_EXACT or id % 1 ~= 0) then
        error("bad argument #1 to 'encode' (packet.id: integer 0 to 2^53 expected)", 2)
    end
    local id_part = id and format("%d", id) or ""
    local data = packet.data
    -- like socket.io, no payload for a null one
    if data == nil or data == null then
        return typ .. nsp_part .. id_part
    end
    local list = typ == EVENT or typ == ACK
    -- an EVENT's or ACK's data is a list, even an empty one (cjson would
    -- write {}, which the peer refuses)
    if list and type(data) == "table" and next(data) == nil and getmetatable(data) ~= Binary then
        return typ .. nsp_part .. id_part .. "[]"
    end
    local st = { binary_ok = list }
    local json, err = value_json(data, st)
    if not json then
        return nil, err
    end
    local atts = st.atts
    return head(typ, atts, nsp_part, id_part) .. json, atts
end

-- [first, args[1..n]] for encode_event / encode_ack: nil holes are null.
local function encode_list(typ, nsp_part, id_part, first, n, args)
    local buf = { false, "[" }
    local nb = 2
    local st, err
    if first ~= nil then
        nb = 3
        buf[3], err = value_json(first)
        if not buf[3] then
            return nil, err
        end
    end
    for i = 1, n do
        local v = args[i]
        if nb > 2 then
            nb = nb + 1
            buf[nb] = ","
        end
        if type(v) == "table" and needs_put(v, 2) then
            st = st or { binary_ok = true }
            nb, err = put_table(v, buf, nb, 2, st)
            if not nb then
                return nil, err
            end
        elseif type(v) == "table" then
            nb = nb + 1
            buf[nb], err = c_encode(v)
            if not buf[nb] then
                return nil, err
            end
        else
            nb = nb + 1
            buf[nb], err = value_json(v)
            if not buf[nb] then
                return nil, err
            end
        end
    end
    nb = nb + 1
    buf[nb] = "]"
    local atts = st and st.atts
    buf[1] = head(typ, atts, nsp_part, id_part)
    return concat(buf, "", 1, nb), atts
end

local function check_args(n, args, fname, argn)
    if type(n) ~= "number" or n < 0 or n % 1 ~= 0 or n == huge then
        error("bad argument #" .. argn .. " to '" .. fname .. "' (non-negative integer expected, got "
              .. (type(n) == "number" and format(FMT[4], n) or type(n)) .. ")", 3)
    end
    if type(args) ~= "table" and not (args == nil and n == 0) then
        error("bad argument #" .. argn + 1 .. " to '" .. fname .. "' (table expected, got "
              .. type(args) .. ")", 3)
    end
end

-- The EVENT packet [event, args[1..n]] (BINARY_EVENT when args hold Binary
-- values): str, attachments; or nil, err.  nsp nil means "/", id nil none.
function _M.encode_event(nsp, id, event, n, args)
    local nsp_part = check_nsp(nsp, "encode_event")
    local id_part = check_id(id, "encode_event", 2)
    local te = type(event)
    if te ~= "string" and te ~= "number" then
        error("bad argument #3 to 'encode_event' (string or number expected, got " .. te .. ")", 2)
    end
    -- the peer's decoder would refuse the packet
    if RESERVED[event] then
        error("bad argument #3 to 'encode_event' (\"" .. event .. "\" is a reserved event name)", 2)
    end
    check_args(n, args, "encode_event", 4)
    return encode_list(EVENT, nsp_part, id_part, event, n, args)
end

-- The ACK packet [args[1..n]] for id (BINARY_ACK when args hold Binary
-- values): str, attachments; or nil, err.
function _M.encode_ack(nsp, id, n, args)
    local nsp_part = check_nsp(nsp, "encode_ack")
    local id_part = check_id(id, "encode_ack", 2, true)
    check_args(n, args, "encode_ack", 3)
    return encode_list(ACK, nsp_part, id_part, nil, n, args)
end

---------------------------------------------------------------------------
-- Decoding
---------------------------------------------------------------------------

-- One decoding instance per max_depth: JSON.parse takes neither NaN,
-- Infinity nor hex numbers, and the depth is our bound (JSON.parse has none).
local decoders = {}

local function json_decoder(depth)
    local d = decoders[depth]
    if not d then
        local inst = cjson.new()
        inst.decode_invalid_numbers(false)
        inst.decode_max_depth(depth)
        d = inst.decode
        decoders[depth] = d
    end
    return d
end

-- JSON.parse is stricter than cjson in three ways, checked only when the
-- text has a '.' or a control byte at all: a '.' needs a digit on both
-- sides ("5.", "-.5" and "1.e3" pass strtod), strings hold no raw control
-- characters, and nothing follows a NUL (cjson stops reading there).
local function strict_json(s)
    local i = 1
    while true do
        local p = find(s, '[%z\1-\31".]', i)
        if not p then
            return true
        end
        local c = byte(s, p)
        if c == 34 then
            local j = p + 1
            while true do
                local q = find(s, '[%z\1-\31"\\]', j)
                if not q then
                    return false
                end
                local d = byte(s, q)
                if d == 92 then
                    j = q + 2
                elseif d == 34 then
                    i = q + 1
                    break
                else
                    return false
                end
            end
        elseif c == 46 then
            local a, b = byte(s, p - 1), byte(s, p + 1)
            if not (a and b and a >= 48 and a <= 57 and b >= 48 and b <= 57) then
                return false
            end
            i = p + 1
        elseif c == 9 or c == 10 or c == 13 then
            i = p + 1
        else
            return false
        end
    end
end

-- isPayloadValid, given the decoded value and the first byte of its text
-- (cjson gives a table for both [] and {}).
local function payload_valid(typ, v, c)
    if typ == 0 then
        return c == 123                               -- an object
    elseif typ == 4 then
        return c == 123 or c == 34                    -- an object or a string
    elseif typ == 2 or typ == 5 then
        if c ~= 91 then return false end              -- an array ...
        local ev = v[1]                               -- ... led by an event name
        local te = type(ev)
        return te == "number" or (te == "string" and not RESERVED[ev])
    end
    return c == 91                                    -- ACK: an array
end

-- socket.io-parser's decodeString: packet, attachments (a count, for binary
-- types) or nil, err.  It reads some characters with Number(), so that
-- whitespace counts as 0 and as a digit; we do not follow it there:
--   * the type is one ASCII digit ("" and " " are CONNECT to socket.io);
--   * an attachment count is 1 to 6 ASCII digits (socket.io takes any
--     Number() string: " 1", "1e0", "0x1", "+1");
--   * an ack id is 1 to 15 ASCII digits (socket.io also counts whitespace
--     as digits, giving 0 or NaN, and takes more digits, rounded);
--   * so a payload may not start with whitespace (to socket.io that is id);
--   * JSON nested deeper than max_depth is an invalid payload;
--   * a placeholder num must be an integer (see reconstruct);
--   * lone UTF-16 surrogate escapes ("\ud800") are refused by cjson.
local function decode_string(self, s)
    local typ = byte(s, 1)
    if not typ or typ < 48 or typ > 57 then
        return nil, "unknown packet type NaN"
    end
    typ = typ - 48
    if typ > 6 then
        return nil, "unknown packet type " .. typ
    end
    local i = 2
    local count
    if typ == 5 or typ == 6 then
        local _, e = find(s, "^[0-9]*", 2)
        if byte(s, e + 1) ~= 45 or e == 1 then        -- '-'
            return nil, "Illegal attachments"
        end
        if e > 7 then
            return nil, "too many attachments"
        end
        count = tonumber(sub(s, 2, e))
        if count < 1 then
            return nil, "Illegal attachments"
        elseif count > self._max_attachments then
            return nil, "too many attachments"
        end
        i = e + 2
    end
    local len = #s
    local nsp = "/"
    if byte(s, i) == 47 then                          -- '/'
        local comma = find(s, ",", i + 1, true)
        if comma then
            nsp = sub(s, i, comma - 1)
            i = comma + 1
        else
            nsp = sub(s, i)
            i = len + 1
        end
    end
    local id
    local _, e = find(s, "^[0-9]+", i)
    if e then
        -- more digits would not make an exact double
        if e - i >= 15 then
            return nil, "invalid ack id"
        end
        id = tonumber(sub(s, i, e))
        i = e + 1
    end
    local data
    if i <= len then
        local c = byte(s, i)
        if typ == 1 or c == 32 or c == 9 or c == 10 or c == 13 then
            return nil, "invalid payload"
        end
        local text = sub(s, i)
        data = self._decode(text)
        if data == nil or not payload_valid(typ, data, c)
           or (find(text, "[%z\1-\31.]") and not strict_json(text)) then
            return nil, "invalid payload"
        end
    end
    return { type = typ, nsp = nsp, id = id, data = data }, count
end

-- Placeholders in v replaced by their attachments (in place: v is ours),
-- one Binary per attachment however often it is named: true, or nil and an
-- error.  socket.io-parser gives undefined for a num that is a number but
-- no integer; we refuse it.
local function reconstruct(v, bufs, bins)
    for k, x in next, v do
        if type(x) == "table" then
            if x._placeholder == true then
                local num = x.num
                if type(num) ~= "number" or num < 0 or num >= #bufs or num % 1 ~= 0 then
                    return nil, "illegal attachments"
                end
                num = num + 1
                local b = bins[num]
                if not b then
                    b = setmetatable({ data = bufs[num] }, Binary)
                    bins[num] = b
                end
                v[k] = b
            elseif not reconstruct(x, bufs, bins) then
                return nil, "illegal attachments"
            end
        end
    end
    return true
end

local Decoder = {}
local decoder_mt = { __index = Decoder }

-- A decoder for one connection: parser.decoder{ max_attachments = 10,
-- max_depth = 32 } (both optional).
function _M.decoder(opts)
    local max_att, max_depth = 10, 32
    if opts ~= nil then
        if type(opts) ~= "table" then
            error("bad argument #1 to 'decoder' (table expected, got " .. type(opts) .. ")", 2)
        end
        local v = opts.max_attachments
        if v ~= nil then
            if type(v) ~= "number" or v < 0 or v ~= floor(v) or v == huge then
                error("bad option 'max_attachments' to 'decoder' (non-negative integer expected)", 2)
            end
            max_att = v
        end
        v = opts.max_depth
        if v ~= nil then
            -- cjson and reconstruct() recurse once per level
            if type(v) ~= "number" or v < 1 or v > 1000 or v ~= floor(v) then
                error("bad option 'max_depth' to 'decoder' (integer 1 to 1000 expected)", 2)
            end
            max_depth = v
        end
    end
    return setmetatable({
        _max_attachments = max_att,
        _decode = json_decoder(max_depth),
        _packet = nil,       -- a binary packet waiting for attachments
        _count = 0,          -- how many it waits for
        _bufs = nil,         -- the ones received
    }, decoder_mt)
end

-- Drops a binary packet still waiting for attachments.
function Decoder:reset()
    self._packet = nil
    self._count = 0
    self._bufs = nil
end

-- One Engine.IO message (is_binary: it came as binary): the packet when one
-- is complete, nil while a binary packet waits for attachments, or nil and
-- an error (socket.io-parser's message; the decoder is then reset).
function Decoder:add(msg, is_binary)
    if type(msg) ~= "string" then
        error("bad argument #1 to 'add' (string expected, got " .. type(msg) .. ")", 2)
    end
    local p = self._packet
    if is_binary then
        if not p then
            return nil, "got binary data when not reconstructing a packet"
        end
        local bufs = self._bufs
        bufs[#bufs + 1] = msg
        if #bufs < self._count then
            return nil
        end
        self:reset()
        local data = p.data
        if type(data) == "table" then
            local ok, err = reconstruct(data, bufs, {})
            if not ok then
                return nil, err
            end
        end
        return p
    end
    if p then
        self:reset()
        return nil, "got plaintext data when reconstructing a packet"
    end
    local packet, count = decode_string(self, msg)
    if not packet then
        return nil, count
    end
    if count then
        packet.type = packet.type - 3                 -- reported as EVENT / ACK
        self._packet = packet
        self._count = count
        self._bufs = {}
        return nil
    end
    return packet
end

return _M
