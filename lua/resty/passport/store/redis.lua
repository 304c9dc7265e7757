-- The session store connect-redis writes: GET <prefix><sid> returns the
-- session record as JSON, and the key's TTL is its expiry.
--
--   local store = require("resty.passport.store.redis").new { port = 6379 }
--   local json, err = store:get(sid)  -- json | nil (no such key) | nil, err
--
-- Two transports behind one API, chosen when the store is created:
--
-- * inside nginx, cosockets (ngx.socket.tcp) with a keepalive pool.  AUTH
--   and SELECT go out only on a fresh connection (pipelined with its first
--   GET); a connection that saw an I/O or protocol error is closed, never
--   pooled.  An -ERR reply (WRONGTYPE) leaves the stream in step, so that
--   connection does go back to the pool.  A store is a plain table of
--   settings: the sockets live only inside one get() call.
--
-- * outside nginx (plain LuaJIT), hiredis's blocking client through
--   librestypassport_redis.so (csrc/redis_sync.c), one connection per store,
--   with the same timeouts and messages.
--
-- RESP is read in Lua in nginx (receive("*l") then receive(n + 2)), not
-- with hiredis's redisReader through FFI.  A GET reply is one line and at
-- most one bulk string, so the Lua reader is two calls that copy out of
-- the cosocket buffer; redisReader needs receiveany + feed + get-reply +
-- free, and reading its redisReply from Lua ties the code to one hiredis
-- ABI.  Measured with bench/store_bench.sh, which serves both side by side
-- from one nginx worker (200-byte record, wrk -c10..100, a shared 2-core
-- VM): 19-48k gets/s depending on the machine's load, the two always within
-- run-to-run noise of each other (Lua/FFI 0.83-1.18 per run, medians
-- 0.98-1.13).  Equal speed, so the simpler one, which keeps libhiredis out
-- of nginx, wins.
local ffi = require "ffi"
local resp_codec = require "resty.passport.resp"

local byte = string.byte
local concat = table.concat
local error = error
local ffi_new = ffi.new
local ffi_string = ffi.string
local floor = math.floor
local pairs = pairs
local pcall = pcall
local setmetatable = setmetatable
local sub = string.sub
local tonumber = tonumber
local tostring = tostring
local type = type

local ngx = ngx -- nil in plain LuaJIT
local IN_NGINX = type(ngx) == "table" and type(ngx.get_phase) == "function"
                 and type(ngx.socket) == "table"
local get_phase = IN_NGINX and ngx.get_phase
local tcp = IN_NGINX and ngx.socket.tcp
local ngx_now = IN_NGINX and ngx.now

local _M = {
    _VERSION = "0.1.0",
    -- Tests may flip this to drive the hiredis transport from inside nginx
    -- (never do it in production: it blocks the worker).
    _in_nginx = IN_NGINX,
}
local mt = { __index = _M }

-- Phases where lua-nginx-module allows cosockets.
local COSOCKET_PHASES = {
    rewrite = true, server_rewrite = true, access = true, content = true,
    timer = true, ssl_cert = true, ssl_session_fetch = true,
    ssl_client_hello = true, preread = true,
}

local DEFAULTS = {
    host = "127.0.0.1",
    port = 6379,
    db = 0,
    prefix = "sess:",
    connect_timeout = 1000,   -- ms
    read_timeout = 1000,      -- ms, also bounds sends
    pool_size = 30,           -- idle connections kept per worker and pool
    keepalive_timeout = 60000, -- ms a pooled connection may idle
    max_value_size = 1048576, -- bytes; longer records are an error
    cache_size = 1024,        -- entries in the per-worker cache
}

local KNOWN = {
    host = "string", port = "number", path = "string", username = "string",
    password = "string", db = "number", prefix = "string",
    connect_timeout = "number", read_timeout = "number",
    pool_size = "number", backlog = "number", keepalive_timeout = "number",
    pool = "string", check_expires = "boolean", cache_ttl = "number",
    cache_size = "number", max_value_size = "number",
    cache_coherent = "boolean",
}

---------------------------------------------------------------------------
-- Clock for check_expires (ms since the epoch).

local now_ms
if IN_NGINX then
    now_ms = function() return ngx_now() * 1000 end
else
    local ok = pcall(ffi.typeof, "rp_redis_timeval")
    if not ok then
        ffi.cdef [[
        typedef struct rp_redis_timeval { long sec; long usec; } rp_redis_timeval;
        int gettimeofday(rp_redis_timeval *tv, void *tz);
        ]]
    end
    local tv = ffi_new("rp_redis_timeval")
    now_ms = function()
        ffi.C.gettimeofday(tv, nil)
        return tonumber(tv.sec) * 1000 + floor(tonumber(tv.usec) / 1000)
    end
end

---------------------------------------------------------------------------
-- hiredis transport (outside nginx), loaded on first use.

local R -- librestypassport_redis, once loaded
local val_out, len_out

local function load_hiredis()
    if R then return R end
    if not pcall(ffi.typeof, "rp_redis") then
        ffi.cdef [[
        typedef struct rp_redis rp_redis;
        rp_redis *rp_redis_new(void);
        void rp_redis_free(rp_redis *r);
        int rp_redis_connect(rp_redis *r, const char *host, int port,
                             const char *path, int timeout_ms);
        int rp_redis_set_timeout(rp_redis *r, int timeout_ms);
        int rp_redis_connected(const rp_redis *r);
        void rp_redis_close(rp_redis *r);
        int rp_redis_auth(rp_redis *r, const char *user, size_t user_len,
                          const char *pass, size_t pass_len);
        int rp_redis_select(rp_redis *r, int db);
        int rp_redis_get(rp_redis *r, const char *key, size_t key_len,
                         size_t max_len, const char **val, size_t *val_len);
        void rp_redis_release(rp_redis *r);
        const char *rp_redis_errstr(const rp_redis *r);
        ]]
    end
    local lib, where = require("resty.passport.core").load(
        "librestypassport_redis")
    if not lib then
        return nil, where
    end
    R = lib
    val_out = ffi_new("const char *[1]")
    len_out = ffi_new("size_t[1]")
    return R
end

-- Codes from csrc/redis_sync.h.
local H_OK, H_NIL, H_EIO = 0, 1, -1

local function hiredis_err(self, what)
    return "redis: " .. what .. " failed: "
           .. ffi_string(R.rp_redis_errstr(self._h))
end

local function hiredis_connect(self)
    local h = self._h
    if R.rp_redis_connect(h, self.host, self.port or 0, self.path,
                          self.connect_timeout) ~= H_OK then
        return nil, hiredis_err(self, "connect to " .. self.addr)
    end
    if R.rp_redis_set_timeout(h, self.read_timeout) ~= H_OK then
        R.rp_redis_close(h)
        return nil, hiredis_err(self, "setting the timeout on " .. self.addr)
    end
    local pass = self.password
    if pass then
        local user = self.username
        if R.rp_redis_auth(h, user, user and #user or 0, pass, #pass)
           ~= H_OK then
            local err = hiredis_err(self, "AUTH")
            R.rp_redis_close(h)
            return nil, err
        end
    end
    if self.db ~= 0 and R.rp_redis_select(h, self.db) ~= H_OK then
        local err = hiredis_err(self, "SELECT")
        R.rp_redis_close(h)
        return nil, err
    end
    return true
end

local function fetch_hiredis(self, sid)
    local h = self._h
    local reused = R.rp_redis_connected(h) ~= 0
    for _ = 1, 2 do
        if not reused then
            local ok, err = hiredis_connect(self)
            if not ok then
                return nil, err
            end
        end
        local key = self.prefix .. sid
        local rc = R.rp_redis_get(h, key, #key, self.max_value_size,
                                  val_out, len_out)
        if rc == H_OK then
            local json = ffi_string(val_out[0], len_out[0])
            R.rp_redis_release(h)
            return json
        elseif rc == H_NIL then
            return nil
        end
        -- A kept connection the server closed meanwhile (a restart, an
        -- idle timeout) fails on first use: GET is idempotent, so one more
        -- try on a fresh connection.  Never after a timeout.
        if not (reused and rc == H_EIO) then
            return nil, hiredis_err(self, "GET")
        end
        reused = false
    end
end

---------------------------------------------------------------------------
-- cosocket transport (inside nginx).

-- Errors that mean "a pooled connection the server had already closed".
local STALE = {
    closed = true, ["broken pipe"] = true,
    ["connection reset by peer"] = true,
}

-- The GET command in pieces: sock:send copies a table into its own buffer
-- before it can yield, so one table serves every call.
local get_cmd = { "*2\r\n$3\r\nGET\r\n$", 0, "\r\n", "", "", "\r\n" }

local function fail(sock, what, err)
    sock:close()
    return nil, "redis: " .. what .. " failed: " .. err
end

-- Reads one status reply (+OK) of the fresh-connection prelude.
local function read_status(sock, what)
    local line, err = sock:receive()
    if not line then
        return fail(sock, what, err)
    end
    if byte(line) ~= 43 then -- '+'
        if byte(line) == 45 then -- '-'
            return fail(sock, what, sub(line, 2))
        end
        return fail(sock, what, "unexpected reply")
    end
    return true
end

-- One GET over one connection.  Returns json | nil, err, stale where
-- stale says the connection was dead before we used it.
local function exchange(self, sock, sid, fresh)
    get_cmd[2] = #self.prefix + #sid
    get_cmd[4] = self.prefix
    get_cmd[5] = sid
    local ok, err
    if fresh and self.prelude then
        ok, err = sock:send { self.prelude, get_cmd }
    else
        ok, err = sock:send(get_cmd)
    end
    if not ok then
        local _, msg = fail(sock, "send to " .. self.addr, err)
        return nil, msg, STALE[err]
    end
    if fresh then
        if self.password then
            ok, err = read_status(sock, "AUTH")
            if not ok then
                return nil, err
            end
        end
        if self.db ~= 0 then
            ok, err = read_status(sock, "SELECT")
            if not ok then
                return nil, err
            end
        end
    end

    local line
    line, err = sock:receive()
    if not line then
        local _, msg = fail(sock, "read from " .. self.addr, err)
        return nil, msg, STALE[err]
    end
    local c = byte(line)
    if c == 36 then -- '$' bulk string
        local n = tonumber(sub(line, 2))
        if not n or n < -1 or n ~= floor(n) then
            return fail(sock, "GET", "protocol error")
        end
        if n == -1 then
            sock:setkeepalive(self.keepalive_timeout)
            return nil
        end
        if n > self.max_value_size then
            -- the value is still on the wire: this connection cannot be
            -- reused without reading it, so it is closed
            return fail(sock, "GET", "value of " .. n .. " bytes exceeds "
                        .. "max_value_size (" .. self.max_value_size .. ")")
        end
        local data
        data, err = sock:receive(n + 2)
        if not data then
            return fail(sock, "read from " .. self.addr, err)
        end
        if byte(data, n + 1) ~= 13 or byte(data, n + 2) ~= 10 then
            -- the length lied: the stream is out of step, never reuse it
            return fail(sock, "GET", "protocol error")
        end
        sock:setkeepalive(self.keepalive_timeout)
        return sub(data, 1, n)
    elseif c == 45 then -- '-' an error reply: the stream is still in step
        sock:setkeepalive(self.keepalive_timeout)
        return nil, "redis: GET failed: " .. sub(line, 2)
    end
    return fail(sock, "GET", "unexpected reply")
end

local function cosocket_phase()
    local phase = get_phase()
    if not COSOCKET_PHASES[phase] then
        return nil, "redis: cosockets are not available in the " .. phase
               .. " phase (use rewrite, access, content or a timer)"
    end
    return true
end

-- A connection from the pool (or a new one); fresh is true when it still
-- needs the AUTH/SELECT prelude.
local function connect(self)
    local sock, err = tcp()
    if not sock then
        return nil, "redis: " .. err
    end
    sock:settimeouts(self.connect_timeout, self.read_timeout,
                     self.read_timeout)
    local ok
    if self.path then
        ok, err = sock:connect(self.unix, self.pool_opts)
    else
        ok, err = sock:connect(self.host, self.port, self.pool_opts)
    end
    if not ok then
        sock:close()
        return nil, "redis: connect to " .. self.addr .. " failed: " .. err
    end
    return sock, sock:getreusedtimes() == 0
end

local function fetch_cosocket(self, sid)
    local ok, err = cosocket_phase()
    if not ok then
        return nil, err
    end
    for attempt = 1, 2 do
        local sock, fresh = connect(self)
        if not sock then
            return nil, fresh
        end
        local json, stale
        json, err, stale = exchange(self, sock, sid, fresh)
        if not (stale and not fresh and attempt == 1) then
            return json, err
        end
    end
end

---------------------------------------------------------------------------
-- The store.

local resp = resp_codec.encode

-- level 3: the caller of new() (bad <- new <- caller)
local function bad(name, msg, level)
    error("bad option '" .. name .. "' to 'redis.new' (" .. msg .. ")",
          level or 3)
end

local function positive_int(opts, name, min)
    local v = opts[name]
    if v ~= floor(v) or v < (min or 1) then
        bad(name, (min == 0 and "non-negative" or "positive")
            .. " integer expected, got " .. tostring(v), 4)
    end
end

function _M.new(opts)
    if opts == nil then
        opts = {}
    elseif type(opts) ~= "table" then
        error("bad argument #1 to 'redis.new' (table expected, got "
              .. type(opts) .. ")", 2)
    end
    for k, v in pairs(opts) do
        local want = KNOWN[k]
        if not want then
            error("bad argument #1 to 'redis.new' (unknown option '"
                  .. tostring(k) .. "')", 2)
        end
        if type(v) ~= want then
            bad(k, want .. " expected, got " .. type(v))
        end
    end

    local self = { cache_epoch = 0, invalidations = 0 }
    for k, v in pairs(DEFAULTS) do self[k] = v end
    for k, v in pairs(opts) do self[k] = v end

    if opts.path then
        if opts.host or opts.port then
            bad("path", "give either path or host/port")
        end
        self.host, self.port = nil, nil
        self.addr = "unix:" .. opts.path
        self.unix = self.addr
    else
        if self.host == "" then bad("host", "empty") end
        positive_int(self, "port")
        if self.port > 65535 then
            bad("port", "out of range")
        end
        self.addr = self.host .. ":" .. self.port
    end
    positive_int(self, "db", 0)
    positive_int(self, "connect_timeout")
    positive_int(self, "read_timeout")
    positive_int(self, "pool_size")
    if self.backlog then
        positive_int(self, "backlog", 0)
    end
    positive_int(self, "keepalive_timeout", 0)
    positive_int(self, "max_value_size", 0)
    positive_int(self, "cache_size")
    if opts.username and not opts.password then
        bad("username", "needs a password")
    end
    if opts.cache_ttl then
        if opts.cache_ttl < 0 then bad("cache_ttl", "negative") end
        if opts.cache_ttl == 0 then self.cache_ttl = nil end
    end
    if opts.cache_coherent and not self.cache_ttl then
        bad("cache_coherent", "needs a cache_ttl")
    end

    if _M._in_nginx then
        self.backend = "cosocket"
        local prelude = {}
        if self.password then
            prelude[1] = self.username
                         and resp("AUTH", self.username, self.password)
                         or resp("AUTH", self.password)
        end
        if self.db ~= 0 then
            prelude[#prelude + 1] = resp("SELECT", self.db)
        end
        self.prelude = prelude[1] and concat(prelude) or nil
        -- Connections in a pool were authenticated and SELECTed for one
        -- (address, db, user, password): the name says which.
        self.pool_opts = {
            pool = self.pool or ("passport:" .. self.addr .. ":" .. self.db
                                 .. ":" .. (self.username or "") .. ":"
                                 .. (self.password and ngx.md5(self.password)
                                     or "")),
            pool_size = self.pool_size,
            -- lua-nginx-module's connect queue, passed through when asked
            -- for.  Not a default: in 0.10.x a queued connect can find its
            -- connection taken by a newer connect() and open one more
            -- (openresty/openresty#768), so it does not cap connections,
            -- and it fails gets outright once the queue is full.
            backlog = self.backlog,
        }
        self._fetch = fetch_cosocket
        if self.cache_ttl then
            local lrucache = require "resty.lrucache"
            self.cache = lrucache.new(self.cache_size)
            if self.cache_coherent then
                -- off until passport.init_worker's subscriber holds the
                -- keyspace subscription that keeps it true (set_coherent)
                self.cache_live = false
            end
        end
    else
        if opts.cache_ttl and opts.cache_ttl > 0 then
            bad("cache_ttl", "the per-worker cache needs nginx")
        end
        local lib, err = load_hiredis()
        if not lib then
            error(err, 2)
        end
        self.backend = "hiredis"
        local h = R.rp_redis_new()
        if h == nil then
            error("out of memory", 2)
        end
        self._h = ffi.gc(h, R.rp_redis_free)
        self._fetch = fetch_hiredis
    end
    if self.check_expires then
        self.session = require "resty.passport.session"
    end
    return setmetatable(self, mt)
end

-- Recent invalidations remembered, so that a GET answered before an
-- invalidation but read after it is not cached.
local RECENT = 1024

-- May a record fetched since (epoch, invalidations) be cached?  Not when
-- the cache started over meanwhile, nor when its key was invalidated after
-- the fetch began (or too many keys were to be sure).
local function fresh_enough(self, sid, epoch, invalidations)
    if self.cache_epoch ~= epoch or self.cache_live == false then
        return false
    end
    local since = self.invalidations - invalidations
    if since == 0 then return true end
    if since >= RECENT then return false end
    local n = self.recent:get(sid)
    return not (n and n > invalidations)
end

-- json, or nil when there is no such session, or nil and an error.
function _M.get(self, sid)
    if type(self) ~= "table" or self._fetch == nil then
        error("bad argument #1 to 'get' (store expected; call store:get(sid))",
              2)
    end
    if type(sid) ~= "string" then
        error("bad argument #2 to 'get' (string expected, got " .. type(sid)
              .. ")", 2)
    end
    local cache = self.cache
    local epoch, invalidations
    if cache then
        if self.cache_live == false then
            cache = nil -- coherent, and nothing would tell us of a change
        else
            local json = cache:get(sid)
            if json then
                return json
            end
            epoch, invalidations = self.cache_epoch, self.invalidations
        end
    end

    local json, err = self._fetch(self, sid)
    if not json then
        return nil, err
    end

    local ttl = self.cache_ttl
    if self.check_expires then
        local now = now_ms()
        local s, derr = self.session.decode(json, now)
        if not s then
            return nil, "redis: bad session record: " .. derr
        end
        if s.expired then
            return nil
        end
        if ttl and s.expires and s.expires - now < ttl then
            ttl = s.expires - now
        end
    end
    if cache and fresh_enough(self, sid, epoch, invalidations) then
        cache:set(sid, json, ttl / 1000)
    end
    return json
end

-- Drops one cached session in this worker: the subscriber calls it for
-- every keyspace event on the session's key; an app may call it too.
function _M.invalidate(self, sid)
    local cache = self.cache
    if not cache then return end
    cache:delete(sid)
    local n = self.invalidations + 1
    self.invalidations = n
    local recent = self.recent
    if not recent then
        recent = require("resty.lrucache").new(RECENT)
        self.recent = recent
    end
    recent:set(sid, n)
end

-- Coherent caches: the subscriber says when its keyspace subscription
-- starts (true) and ends (false).  Either way the cache starts over, since
-- events may have been missed in between.
function _M.set_coherent(self, live)
    local cache = self.cache
    if not cache or self.cache_live == nil then return end
    cache:flush_all()
    self.cache_epoch = self.cache_epoch + 1
    self.cache_live = live and true or false
end

-- One command over a pooled connection (nginx only): the reply as
-- resty.passport.resp reads it, or nil and an error.  For PUBLISH, MGET
-- and CONFIG from the socket layer; sessions are read with get().
function _M.command(self, ...)
    if type(self) ~= "table" or self._fetch == nil then
        error("bad argument #1 to 'command' (store expected)", 2)
    end
    if self.backend ~= "cosocket" then
        error("store:command needs nginx cosockets", 2)
    end
    local ok, err = cosocket_phase()
    if not ok then
        return nil, err
    end
    local name = ...
    local cmd = resp_codec.encode(...)
    for attempt = 1, 2 do
        local sock, fresh = connect(self)
        if not sock then
            return nil, fresh
        end
        if fresh and self.prelude then
            ok, err = sock:send { self.prelude, cmd }
        else
            ok, err = sock:send(cmd)
        end
        if ok and fresh then
            if self.password then
                ok, err = read_status(sock, "AUTH")
                if not ok then return nil, err end
            end
            if self.db ~= 0 then
                ok, err = read_status(sock, "SELECT")
                if not ok then return nil, err end
            end
        end
        local v, kind
        if ok then
            v, err, kind = resp_codec.read(sock, self.max_value_size)
        else
            kind = "io"
        end
        if v ~= nil or kind == "reply" then
            sock:setkeepalive(self.keepalive_timeout)
            if v == nil then
                return nil, "redis: " .. name .. " failed: " .. err
            end
            return v
        end
        sock:close()
        -- a pooled connection the server had closed: once more, fresh
        if not (STALE[err] and not fresh and attempt == 1) then
            return nil, "redis: " .. name .. " failed: " .. err
        end
    end
end

-- Closes the hiredis connection (outside nginx); a no-op in nginx, where
-- connections live in the pool.
function _M.close(self)
    if self._h then
        R.rp_redis_close(self._h)
    end
end

return _M
