-- RESP2 over an nginx cosocket, for the commands beyond the store's GET:
-- PUBLISH, MGET, CONFIG, and the pushes a subscriber reads.
--
--   resp.encode("PUBLISH", ch, msg)      --> the command's bytes
--   resp.read(sock, max_bulk)            --> value | nil, err, kind
--
-- A value is a string (status or bulk), a number (integer), a table
-- (array; null elements are ngx.null-free: false) or false (null bulk or
-- array).  An error reply gives nil, message, "reply": the stream is still
-- in step.  Anything else gives nil, message, "io" or "protocol": the
-- connection must be closed.
local byte = string.byte
local concat = table.concat
local find = string.find
local floor = math.floor
local select = select
local sub = string.sub
local tonumber = tonumber
local tostring = tostring

local _M = { _VERSION = "0.1.0" }

-- Nested arrays deeper than this are refused (no reply we send asks for
-- more than two levels).
local MAX_DEPTH = 4
-- The largest array accepted: MGET batches and pushes are far smaller.
local MAX_ARRAY = 65536

function _M.encode(...)
    local n = select("#", ...)
    local parts = { "*", n, "\r\n" }
    for i = 1, n do
        local s = tostring((select(i, ...)))
        parts[#parts + 1] = "$"
        parts[#parts + 1] = #s
        parts[#parts + 1] = "\r\n"
        parts[#parts + 1] = s
        parts[#parts + 1] = "\r\n"
    end
    return concat(parts)
end

local function read(sock, max_bulk, depth)
    local line, err = sock:receive()
    if not line then
        return nil, err, "io"
    end
    local c = byte(line)
    if c == 36 then -- '$'
        local n = tonumber(sub(line, 2))
        if not n or n < -1 or n ~= floor(n) then
            return nil, "protocol error", "protocol"
        end
        if n == -1 then
            return false
        end
        if n > max_bulk then
            return nil, "value of " .. n .. " bytes exceeds the limit ("
                   .. max_bulk .. ")", "protocol"
        end
        local data
        data, err = sock:receive(n + 2)
        if not data then
            return nil, err, "io"
        end
        if byte(data, n + 1) ~= 13 or byte(data, n + 2) ~= 10 then
            return nil, "protocol error", "protocol"
        end
        return sub(data, 1, n)
    elseif c == 42 then -- '*'
        local n = tonumber(sub(line, 2))
        if not n or n < -1 or n ~= floor(n) or n > MAX_ARRAY
           or depth >= MAX_DEPTH then
            return nil, "protocol error", "protocol"
        end
        if n == -1 then
            return false
        end
        local t = {}
        for i = 1, n do
            local v, e, kind = read(sock, max_bulk, depth + 1)
            if v == nil then
                if kind == "reply" then
                    v = false -- an error inside an array (EXEC): absent
                else
                    return nil, e, kind
                end
            end
            t[i] = v
        end
        return t
    elseif c == 58 then -- ':'
        local n = tonumber(sub(line, 2))
        if not n then
            return nil, "protocol error", "protocol"
        end
        return n
    elseif c == 43 then -- '+'
        return sub(line, 2)
    elseif c == 45 then -- '-'
        return nil, sub(line, 2), "reply"
    end
    return nil, "protocol error", "protocol"
end

-- The same grammar over a string buffer, for a reader that must survive
-- read timeouts without losing its place (the subscriber):
--   value, next_pos | nil when buf ends inside the reply | nil, err
local function parse(buf, pos, max_bulk, depth)
    local eol = find(buf, "\r\n", pos, true)
    if not eol then
        if #buf - pos > 64 then
            return nil, "protocol error"
        end
        return nil
    end
    local c = byte(buf, pos)
    local line = sub(buf, pos + 1, eol - 1)
    pos = eol + 2
    if c == 36 then -- '$'
        local n = tonumber(line)
        if not n or n < -1 or n ~= floor(n) then
            return nil, "protocol error"
        end
        if n == -1 then
            return false, pos
        end
        if n > max_bulk then
            return nil, "value of " .. n .. " bytes exceeds the limit (" .. max_bulk .. ")"
        end
        if #buf < pos + n + 1 then
            return nil
        end
        if byte(buf, pos + n) ~= 13 or byte(buf, pos + n + 1) ~= 10 then
            return nil, "protocol error"
        end
        return sub(buf, pos, pos + n - 1), pos + n + 2
    elseif c == 42 then -- '*'
        local n = tonumber(line)
        if not n or n < -1 or n ~= floor(n) or n > MAX_ARRAY or depth >= MAX_DEPTH then
            return nil, "protocol error"
        end
        if n == -1 then
            return false, pos
        end
        local t = {}
        for i = 1, n do
            local v, p2 = parse(buf, pos, max_bulk, depth + 1)
            if v == nil then
                return nil, p2
            end
            t[i] = v
            pos = p2
        end
        return t, pos
    elseif c == 58 then -- ':'
        local n = tonumber(line)
        if not n then return nil, "protocol error" end
        return n, pos
    elseif c == 43 or c == 45 then -- '+' '-': a status or an error reply
        return (c == 45 and "-" or "") .. line, pos
    end
    return nil, "protocol error"
end

-- value, next_pos; nil when more bytes are needed; nil, err when the bytes
-- cannot be RESP.  Error replies come back as strings starting with "-".
function _M.parse(buf, pos, max_bulk)
    return parse(buf, pos or 1, max_bulk, 0)
end

function _M.read(sock, max_bulk)
    return read(sock, max_bulk, 0)
end

return _M
