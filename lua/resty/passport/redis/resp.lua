-- RESP2, the one grammar for every Redis reply this library reads: one
-- incremental parser after hiredis's read.c (bytes in, replies out, no
-- I/O), the same parser driven from an nginx cosocket, and the encoder.
--
--   resp.encode("PUBLISH", ch, msg)  --> the command's bytes
--
--   local p = resp.parser(max_bulk [, what [, accept]])  -- one per stream
--   p:feed(bytes)                    -- bytes as they arrive, any split
--   p:get()     --> reply | nil (more bytes needed) | nil, err
--   p:idle()    --> true between replies, with no byte waiting
--
--   local r = resp.reader(max_bulk [, what [, accept]])  -- share freely
--   r:read(sock)  --> reply | nil, err, "io", begun | nil, err, "protocol"
--
-- A reply is one of:
--   string        a status (+OK) or a bulk string
--   number        an integer
--   false         null: a null bulk string or array, also inside an array
--   { err = msg } an error reply, msg without its "-"; the stream is still
--                 in step (at the top or inside an array alike)
--   table         an array of replies, 1..n
-- nil, err means bytes that are not RESP or break a limit: the parser, or
-- the connection read, is done.
--
-- max_bulk bounds bulk strings ("value of N bytes exceeds <what> (max)",
-- what = "the limit" unless given).  accept, from resp.accept("$-"), lists
-- the reply types a caller takes: any other gives "unexpected reply" (a
-- protocol error) as soon as its first line is seen, before its bytes.
--
-- r:read hands the parser what it asks for: a line from receive(), a bulk
-- string and its CRLF from receive(n + 2), copied once out of the cosocket
-- buffer.  A GET's reply is those two calls, and a reader keeps no state
-- between replies, so one made up front serves every request with no
-- allocation unless the reply is an array (the measurement behind reading
-- this way is at the top of store/redis.lua).  begun: the error came after
-- the reply's first line.  receive() ends a line at a bare LF too and
-- drops CRs (nginx's "*l"); p:get does not, which only a server that is
-- not Redis can tell apart.
local byte = string.byte
local concat = table.concat
local find = string.find
local floor = math.floor
local select = select
local setmetatable = setmetatable
local sub = string.sub
local tonumber = tonumber
local tostring = tostring

local _M = { _VERSION = "0.1.0" }

-- Nested arrays deeper than this are refused (no reply we send asks for
-- more than two levels).
local MAX_DEPTH = 4
-- The largest array accepted: MGET batches and pushes are far smaller.
local MAX_ARRAY = 65536
-- The longest header line ($, *, :) waited for; status and error lines
-- may be as long as a bulk string.
local MAX_LINE = 64

local PROTOCOL = "protocol error"
local UNEXPECTED = "unexpected reply"

local Reader = {}
local reader_mt = { __index = Reader }
local Parser = {}
local parser_mt = { __index = Parser }

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

-- The set of reply types in types ("$-": bulk strings and errors), for
-- the accept of a reader or parser.
function _M.accept(types)
    local set = {}
    for i = 1, #types do set[byte(types, i)] = true end
    return set
end

function _M.reader(max_bulk, what, accept)
    return setmetatable({ max = max_bulk, what = what or "the limit",
                          accept = accept }, reader_mt)
end

-- skip_oversize (the subscriber's): a bulk string over max_bulk is not an
-- error but the value { oversize = n }, its bytes read and dropped, and
-- the stream goes on.
function _M.parser(max_bulk, what, accept, skip_oversize)
    return setmetatable({ max = max_bulk, what = what or "the limit",
                          accept = accept, buf = "", pos = 1,
                          skip_oversize = skip_oversize }, parser_mt)
end

-- The core, shared by both drivers.  cfg: a reader or parser (max, what,
-- accept); st: the arrays open, nil until the first one:
-- { depth = d, [d] = the array at depth d, want = { [d] = its length } }.

-- A value is complete: it is the reply, or one more element of the
-- innermost open array (which may complete that array, and so on up).
-- Returns the reply, or nil while an array still waits for elements.
local function complete(st, v)
    local d = st and st.depth or 0
    while d > 0 do
        local t = st[d]
        local k = #t + 1
        t[k] = v
        if k < st.want[d] then
            return nil
        end
        st[d] = nil
        d = d - 1
        st.depth = d
        v = t
    end
    return v
end

local function open_array(st, n)
    if n > MAX_ARRAY or (st and st.depth or 0) >= MAX_DEPTH then
        return nil, PROTOCOL
    end
    if n == 0 then
        return complete(st, {}), nil, nil, st
    end
    if not st then
        st = { depth = 0, want = {} }
    end
    local d = st.depth + 1
    st.depth = d
    st[d] = {}
    st.want[d] = n
    return nil, nil, nil, st
end

-- One line, s[i..j] without its CRLF.  Returns v, err, need, st:
--   v            a complete reply
--   nil, err     not RESP (or over a limit)
--   nil, nil, n  a bulk string of n bytes (and its CRLF) is next
--   nil          more lines to come (an array is open)
-- and always st, the open arrays (new when this line opened the first).
local function line(cfg, st, s, i, j)
    local c = byte(s, i)
    local accept = cfg.accept
    if accept and not accept[c] and not (st and st.depth > 0) then
        return nil, UNEXPECTED
    end
    if c == 36 or c == 42 then -- '$' '*'
        local n = tonumber(sub(s, i + 1, j))
        if not n or n < -1 or n ~= floor(n) then
            return nil, PROTOCOL
        end
        if n == -1 then
            return complete(st, false), nil, nil, st
        end
        if c == 42 then
            return open_array(st, n)
        end
        if n > cfg.max then
            if cfg.skip_oversize then
                -- its bytes are skipped; in its place, { oversize = n }
                return complete(st, { oversize = n }), nil, -n, st
            end
            return nil, "value of " .. n .. " bytes exceeds " .. cfg.what
                        .. " (" .. cfg.max .. ")"
        end
        return nil, nil, n, st
    elseif c == 58 then -- ':'
        local n = tonumber(sub(s, i + 1, j))
        if not n then
            return nil, PROTOCOL
        end
        return complete(st, n), nil, nil, st
    elseif c == 43 then -- '+'
        return complete(st, sub(s, i + 1, j)), nil, nil, st
    elseif c == 45 then -- '-'
        return complete(st, { err = sub(s, i + 1, j) }), nil, nil, st
    end
    return nil, PROTOCOL
end

-- s[i..i+n-1] is a bulk string of n bytes, followed by its CRLF.
local function bulk(st, s, i, n)
    if byte(s, i + n) ~= 13 or byte(s, i + n + 1) ~= 10 then
        -- the length lied: the stream is out of step
        return nil, PROTOCOL
    end
    if not st then -- the reply itself (a GET's): one call less
        return sub(s, i, i + n - 1)
    end
    return complete(st, sub(s, i, i + n - 1))
end

function Parser.feed(self, data)
    local buf, pos = self.buf, self.pos
    if pos > #buf then
        self.buf = data
    else
        self.buf = sub(buf, pos) .. data
    end
    self.pos = 1
end

-- The waiting bytes (buf[pos..]) are too many for a line: a header line
-- ($, *, :) is short, a status or error line at most max_bulk.
local function line_too_long(self, buf, pos)
    local left = #buf - pos
    if left <= MAX_LINE then
        return false
    end
    local c = byte(buf, pos)
    return (c ~= 43 and c ~= 45) or left > self.max + 2
end

function Parser.get(self)
    local buf = self.buf
    while true do
        local pos, n = self.pos, self.need
        local v, err
        local skip = self.skip
        if skip then
            -- an oversize bulk string's bytes: dropped as they come
            local have = #buf - pos + 1
            if have < skip then
                self.skip = skip - have
                self.buf, self.pos = "", 1
                return nil
            end
            self.skip = nil
            self.pos = pos + skip
            pos = self.pos
        end
        if n then
            if #buf < pos + n + 1 then
                return nil
            end
            self.pos = pos + n + 2
            self.need = nil
            v, err = bulk(self.st, buf, pos, n)
        else
            local eol = find(buf, "\r\n", pos, true)
            if not eol then
                if line_too_long(self, buf, pos) then
                    return nil, PROTOCOL
                end
                return nil
            end
            self.pos = eol + 2
            v, err, self.need, self.st = line(self, self.st, buf, pos, eol - 1)
            local need = self.need
            if need and need < 0 then
                self.need, self.skip = nil, -need + 2
            end
        end
        if v ~= nil or err then
            return v, err
        end
    end
end

-- True when no reply has been begun and no byte is waiting.
function Parser.idle(self)
    local st = self.st
    return self.need == nil and not (st and st.depth > 0)
           and self.pos > #self.buf
end

-- The awaited bulk string of n bytes and its CRLF, off the socket:
-- v | nil, err ("protocol error") | nil, err, "io".
local function receive_bulk(sock, st, n)
    local data, err = sock:receive(n + 2)
    if not data then
        return nil, err, "io"
    end
    return bulk(st, data, 1, n)
end

-- The rest of a reply whose first line opened an array.
local function read_array(self, sock, st)
    local v, err, kind, need
    repeat
        if need then
            v, err, kind = receive_bulk(sock, st, need)
            need = nil
        else
            local data
            data, err = sock:receive()
            if not data then
                return nil, err, "io", true
            end
            v, err, need, st = line(self, st, data, 1, #data)
        end
    until v ~= nil or err
    if v == nil then
        return nil, err, kind or "protocol", kind and true
    end
    return v
end

-- No loop for a reply that is not an array (a GET's: two calls, straight
-- through), so that it stays one trace for the JIT.
function Reader.read(self, sock)
    local data, err = sock:receive()
    if not data then
        return nil, err, "io", false
    end
    local v, need, st, kind
    v, err, need, st = line(self, nil, data, 1, #data)
    if need then
        v, err, kind = receive_bulk(sock, nil, need)
    elseif st then
        return read_array(self, sock, st)
    end
    if v == nil then
        return nil, err, kind or "protocol", kind and true
    end
    return v
end

return _M
