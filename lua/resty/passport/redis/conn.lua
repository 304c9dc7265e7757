-- Connections to one Redis server: the settings (checked once), and inside
-- nginx connect, the AUTH/SELECT prelude, the keepalive pool, one retry on
-- a stale pooled connection, and a connection of its own for a subscriber.
--
--   local c, name, why = conn.new(opts, max_bulk)  -- nil, option, why
--   c:command("MGET", k1, k2)       --> reply | nil, err
--   c:request(bytes, reader)        --> reply | nil, err, kind
--   c:raw(read_timeout)             --> sock | nil, err
--
-- A conn is a plain table of settings: sockets live only inside one call,
-- never in the conn (redis/mux.lua's lanes hold theirs, opened with
-- conn.open and conn.read_prelude).  AUTH and SELECT go out only on a
-- fresh connection, pipelined with its first command.  A connection that saw an I/O or
-- protocol error is closed, never pooled; a reply, an error reply
-- (WRONGTYPE) included, leaves the stream in step and the connection goes
-- back to the pool.  Replies are resty.passport.redis.resp's.
local host = require "resty.passport.host"
local resp = require "resty.passport.redis.resp"

local byte = string.byte
local concat = table.concat
local error = error
local floor = math.floor
local format = string.format
local gsub = string.gsub
local io_open = io.open
local ipairs = ipairs
local pairs = pairs
local pcall = pcall
local require = require
local setmetatable = setmetatable
local tostring = tostring
local type = type

local ngx = ngx -- nil in plain LuaJIT
local tcp = host.in_nginx and ngx.socket.tcp
local phase = host.phase
local COSOCKET = host.COSOCKET
local encode = resp.encode

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }

-- The options a conn takes, and their types.
_M.OPTIONS = {
    host = "string", port = "number", path = "string",
    username = "string", password = "string", db = "number",
    connect_timeout = "number", read_timeout = "number",
    pool_size = "number", backlog = "number", keepalive_timeout = "number",
    pool = "string",
}

local DEFAULTS = {
    host = "127.0.0.1",
    port = 6379,
    db = 0,
    connect_timeout = 1000,    -- ms
    read_timeout = 1000,       -- ms, also bounds sends
    pool_size = 30,            -- idle connections kept per worker and pool
    keepalive_timeout = 60000, -- ms a pooled connection may idle
}

-- Integer options and their least value; backlog only when given.
local INTEGERS = {
    { "db", 0 }, { "connect_timeout", 1 }, { "read_timeout", 1 },
    { "pool_size", 1 }, { "backlog", 0 }, { "keepalive_timeout", 0 },
}

-- Errors that mean "a pooled connection the server had already closed".
local STALE = {
    closed = true, ["broken pipe"] = true,
    ["connection reset by peer"] = true,
}
_M.STALE = STALE

-- AUTH and SELECT answer +OK or an error; ROLE an array or an error.
local PRELUDE_REPLY = resp.reader(0, nil, resp.accept("+-"))
local ROLE_REPLY = resp.reader(512, nil, resp.accept("*-"))

-- Why v is not an integer >= min, or nil when it is.
function _M.check_int(v, min)
    if v ~= floor(v) or v < min then
        return (min == 0 and "non-negative" or "positive")
               .. " integer expected, got " .. tostring(v)
    end
end

-- Pools by credential set, this process's: credentials -> a random token.
local tokens = {}

-- OpenSSL's RAND_bytes (nginx links libcrypto): n bytes, or nil.
local function rand_bytes(n)
    local ffi = require "ffi"
    pcall(ffi.cdef, "int RAND_bytes(unsigned char *buf, int num);")
    local buf = ffi.new("unsigned char[?]", n)
    local ok, rc = pcall(function() return ffi.C.RAND_bytes(buf, n) end)
    return ok and rc == 1 and ffi.string(buf, n) or nil
end

-- n random bytes as hex: from /dev/urandom, else (a chroot without it)
-- from OpenSSL; nil, err when neither is there.
local function random_hex(n)
    local f, err = io_open("/dev/urandom", "rb")
    local bytes = f and f:read(n)
    if f then f:close() end
    if not (bytes and #bytes == n) then
        bytes = rand_bytes(n)
        if not bytes then
            return nil, "no random source for pool names (/dev/urandom: "
                        .. tostring(err or "short read")
                        .. "; no RAND_bytes)"
        end
    end
    return (gsub(bytes, ".", function(c) return format("%02x", byte(c)) end))
end

-- The token naming the pools of one credential set: the same set gets the
-- same token (its connections are reused), another set another one.  Not
-- derived from the password: lua-nginx-module logs pool names at debug
-- level, and an unsalted hash of a password is as good as the password to
-- anyone with a wordlist.  Random rather than a counter, so no other code
-- in the worker can name the same pool, by chance or on purpose, and hand
-- us a connection authenticated as someone else.
local function token_of(self)
    local user, pass = self.username or "", self.password
    local key = pass and #user .. ":" .. user .. pass or "" -- unambiguous
    local t = tokens[key]
    if not t then
        local err
        t, err = random_hex(16)
        if not t then
            return nil, err
        end
        tokens[key] = t
    end
    return t
end

-- The pool a connection goes back to.  Connections in a pool were
-- authenticated and SELECTed for one (address, db, credential set): the
-- name says which, the credentials by their token.
local function pool_of(self)
    local pool = self.pool
    if not pool then
        local t, err = token_of(self)
        if not t then
            return nil, err
        end
        pool = "passport:" .. self.addr .. ":" .. self.db .. ":" .. t
    end
    return {
        pool = pool,
        pool_size = self.pool_size,
        -- lua-nginx-module's connect queue, passed through when asked
        -- for.  Not a default: in 0.10.x a queued connect can find its
        -- connection taken by a newer connect() and open one more
        -- (openresty/openresty#768), so it does not cap connections,
        -- and it fails gets outright once the queue is full.
        backlog = self.backlog,
    }
end

-- opts: the OPTIONS above (types already checked by the caller; other
-- keys are ignored; expect_master = true adds ROLE to the prelude: a
-- fresh connection to a server that is not a master fails); max_bulk bounds the bulk strings of command replies
-- (self.reader reads them).
-- Returns a conn, or nil, the option at fault and why.
function _M.new(opts, max_bulk)
    local self = { reader = resp.reader(max_bulk) }
    for k, v in pairs(DEFAULTS) do self[k] = v end
    for k in pairs(_M.OPTIONS) do
        if opts[k] ~= nil then self[k] = opts[k] end
    end
    if opts.path then
        if opts.host or opts.port then
            return nil, "path", "give either path or host/port"
        end
        self.host, self.port = nil, nil
        self.addr = "unix:" .. opts.path
        self.unix = self.addr
    else
        if self.host == "" then return nil, "host", "empty" end
        local why = _M.check_int(self.port, 1)
        if why then return nil, "port", why end
        if self.port > 65535 then return nil, "port", "out of range" end
        self.addr = self.host .. ":" .. self.port
    end
    for _, int in ipairs(INTEGERS) do
        local name = int[1]
        local why = self[name] ~= nil and _M.check_int(self[name], int[2])
        if why then return nil, name, why end
    end
    if opts.username and not opts.password then
        return nil, "username", "needs a password"
    end

    local prelude, names = {}, {}
    if self.password then
        prelude[1] = self.username
                     and encode("AUTH", self.username, self.password)
                     or encode("AUTH", self.password)
        names[1] = "AUTH"
    end
    if self.db ~= 0 then
        prelude[#prelude + 1] = encode("SELECT", self.db)
        names[#names + 1] = "SELECT"
    end
    if opts.expect_master then
        -- a discovered master (Sentinel): every fresh connection checks it
        -- still is one, since a demoted server still answers reads
        prelude[#prelude + 1] = encode("ROLE")
        names[#names + 1] = "ROLE"
    end
    self.prelude = prelude[1] and concat(prelude) or nil
    self.prelude_names = names
    if host.in_nginx then
        local err
        self.pool_opts, err = pool_of(self)
        if not self.pool_opts then
            error("redis: " .. err, 3)
        end
    end
    return setmetatable(self, mt)
end

local function wrong_phase()
    return "redis: cosockets are not available in the " .. tostring(phase())
           .. " phase (use rewrite, access, content or a timer)"
end

-- A connected socket, from the pool opts name (none: the default pool,
-- which nothing here keeps connections in), or nil, err.
local function open(self, opts, read_timeout)
    local sock, err = tcp()
    if not sock then
        return nil, "redis: " .. err
    end
    sock:settimeouts(self.connect_timeout, self.read_timeout, read_timeout)
    local ok
    -- no trailing nil: connect() counts its arguments
    if self.unix then
        if opts then
            ok, err = sock:connect(self.unix, opts)
        else
            ok, err = sock:connect(self.unix)
        end
    elseif opts then
        ok, err = sock:connect(self.host, self.port, opts)
    else
        ok, err = sock:connect(self.host, self.port)
    end
    if not ok then
        sock:close()
        return nil, "redis: connect to " .. self.addr .. " failed: " .. err
    end
    return sock
end
_M.open = open

-- Reads the prelude's replies (already sent); closes sock on a failure.
local function read_prelude(self, sock)
    local names = self.prelude_names
    for i = 1, #names do
        local name = names[i]
        local v, err
        if name == "ROLE" then
            v, err = ROLE_REPLY:read(sock)
            if type(v) == "table" and not v.err and v[1] ~= "master" then
                sock:close()
                return nil, "redis: " .. self.addr .. " is a "
                            .. tostring(v[1]) .. ", not the master"
            end
            if v and not v.err then v = "OK" end
        else
            v, err = PRELUDE_REPLY:read(sock)
        end
        if v == nil or type(v) == "table" then
            sock:close()
            return nil, "redis: " .. name .. " failed: "
                        .. (v and v.err or err)
        end
    end
    return true
end
_M.read_prelude = read_prelude

-- One attempt of request(); the 4th result says the failure came from a
-- pooled connection that was dead before we used it.
local function exchange(self, bytes, reader)
    local sock, err = open(self, self.pool_opts, self.read_timeout)
    if not sock then
        return nil, err, "setup"
    end
    local fresh = sock:getreusedtimes() == 0
    local ok
    if fresh and self.prelude then
        ok, err = sock:send { self.prelude, bytes }
    else
        ok, err = sock:send(bytes)
    end
    if not ok then
        sock:close()
        return nil, err, "send", not fresh and STALE[err]
    end
    if fresh and self.prelude then
        ok, err = read_prelude(self, sock)
        if not ok then
            return nil, err, "setup"
        end
    end
    local v, kind, begun
    v, err, kind, begun = reader:read(sock)
    if v == nil then
        sock:close()
        return nil, err, kind,
               kind == "io" and not begun and not fresh and STALE[err]
    end
    sock:setkeepalive(self.keepalive_timeout)
    return v
end

-- Sends bytes (a string or a table of strings, as sock:send takes them)
-- over a pooled connection and reads one reply with reader (a resp
-- reader, or anything whose read(sock) answers the same: a pipeline's
-- reader reads each of its replies and returns them as one).  Returns the
-- reply, or nil, err, kind: kind "setup" when err is the whole message
-- (phase, connect, AUTH/SELECT), else "send", "io" or "protocol" and err
-- is the socket's or the parser's.  A pooled connection that the server
-- had closed meanwhile (a restart, an idle timeout) fails before any reply
-- byte: then the request goes once more on a fresh connection.
function _M.request(self, bytes, reader)
    if not COSOCKET[phase()] then
        return nil, wrong_phase(), "setup"
    end
    local v, err, kind, stale = exchange(self, bytes, reader)
    if stale then
        v, err, kind = exchange(self, bytes, reader)
    end
    return v, err, kind
end

-- One command: its reply, or nil and "redis: <NAME> failed: ..." (an
-- error reply, or what broke the connection).  Through self:request, so
-- that redis/mux.lua's client shares it.
function _M.command(self, ...)
    local name = ...
    local v, err, kind = self:request(encode(...), self.reader)
    if v == nil then
        if kind == "setup" then
            return nil, err
        end
        return nil, "redis: " .. name .. " failed: " .. err
    end
    if type(v) == "table" and v.err then
        return nil, "redis: " .. name .. " failed: " .. v.err
    end
    return v
end

-- A connection of its own, never pooled, with the prelude done: for a
-- subscriber, whose reads wait up to read_timeout ms.  sock | nil, err.
function _M.raw(self, read_timeout)
    if not COSOCKET[phase()] then
        return nil, wrong_phase()
    end
    local sock, err = open(self, nil, read_timeout)
    if not sock then
        return nil, err
    end
    if self.prelude then
        local ok
        ok, err = sock:send(self.prelude)
        if not ok then
            sock:close()
            return nil, "redis: send to " .. self.addr .. " failed: " .. err
        end
        ok, err = read_prelude(self, sock)
        if not ok then
            return nil, err
        end
    end
    return sock
end

return _M
