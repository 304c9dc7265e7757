-- The session store connect-redis writes: GET <prefix><sid> returns the
-- session record as JSON, and the key's TTL is its expiry.
--
--   local store = require("resty.passport.store.redis").new { port = 6379 }
--   local json, err = store:get(sid)  -- json | nil (no such key) | nil, err
--
-- This file is the store's options, its GET and its per-worker cache.  A
-- store is a plain table of its settings (the options, defaults filled
-- in) and store.conn, the connection settings (redis/conn.lua): sockets
-- live only inside one get() call.  Two transports behind one API, chosen
-- when the store is created (host.in_nginx):
--
-- * inside nginx, cosockets through store.conn: a keepalive pool, the
--   AUTH/SELECT prelude on fresh connections, one retry on a stale one.
--   With multiplex = true, requests go through store.client, the
--   worker's pipelined lanes (redis/mux.lua), and never open a cosocket
--   of their own: a request that lives for hours (a WebSocket handshake)
--   keeps no socket memory in its pool.
--
-- * outside nginx (plain LuaJIT), hiredis's blocking client through
--   librestypassport_redis.so (csrc/redis_sync.c), one connection per store,
--   with the same timeouts and messages.
--
-- RESP is read in Lua in nginx (redis/resp.lua's parser, fed by
-- receive("*l") then receive(n + 2)), not with hiredis's redisReader
-- through FFI.  A GET reply is one line and at most one bulk string, so
-- the Lua reader is two calls that copy out of the cosocket buffer;
-- redisReader needs receiveany + feed + get-reply + free, and reading its
-- redisReply from Lua ties the code to one hiredis ABI.  Measured with
-- bench/store_bench.sh, which serves both side by side from one nginx
-- worker (200-byte record, wrk -c10..100, a shared 2-core VM): 19-48k
-- gets/s depending on the machine's load, the two always within run-to-run
-- noise of each other (Lua/FFI 0.83-1.18 per run, medians 0.98-1.13).
-- Equal speed, so the simpler one, which keeps libhiredis out of nginx,
-- wins.
local ffi = require "ffi"
local host = require "resty.passport.host"
local metrics = require "resty.passport.metrics"
local conn = require "resty.passport.redis.conn"
local cluster = require "resty.passport.redis.cluster"
local sentinel = require "resty.passport.redis.sentinel"
local mux = require "resty.passport.redis.mux"
local resp = require "resty.passport.redis.resp"

local error = error
local ffi_new = ffi.new
local ffi_string = ffi.string
local huge = math.huge
local ipairs = ipairs
local pairs = pairs
local pcall = pcall
local setmetatable = setmetatable
local tostring = tostring
local type = type
local unpack = unpack

local now_ms = host.now_ms
local clock = host.clock
local find = string.find
local enabled = metrics.enabled
local add = metrics.add

-- Metrics: the keys, built once.
local K_HIT = metrics.key("passport_cache_lookups_total", { result = "hit" })
local K_MISS = metrics.key("passport_cache_lookups_total", { result = "miss" })
local K_INVALIDATED = metrics.key("passport_cache_invalidations_total")
local H_GET = metrics.histogram_key("passport_store_request_duration_seconds", { op = "get" })
local ERROR_KINDS = { "connect", "timeout", "io", "protocol", "reply", "too_big", "other" }
local K_ERROR = {}
for _, kind in ipairs(ERROR_KINDS) do
    K_ERROR[kind] = metrics.key("passport_store_errors_total", { kind = kind })
end

-- passport_store_errors_total's kind of an error message (the error
-- path only: string searches are fine there).
local function error_kind(err)
    local function has(s) return find(err, s, 1, true) ~= nil end
    if has("timeout") then return "timeout" end
    if has("connect to") or has("no master") or has("has no node") then return "connect" end
    if has("exceeds") then return "too_big" end
    if has("read from") or has("send to") then return "io" end
    if has("protocol") or has("bad session record") or has("unexpected") then return "protocol" end
    if has(" failed: ") then return "reply" end
    return "other"
end

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }

-- The store's own options (conn.OPTIONS are the connection's).
local KNOWN = {
    prefix = "string", check_expires = "boolean", cache_ttl = "number",
    cache_size = "number", max_value_size = "number",
    cache_coherent = "boolean", multiplex = "boolean",
    -- Sentinel (redis/sentinel.lua) or Cluster (redis/cluster.lua)
    sentinels = "table", master_name = "string", sentinel_username = "string",
    sentinel_password = "string", cluster = "table", discovery_ttl = "number",
}

local DEFAULTS = {
    prefix = "sess:",
    max_value_size = 1048576, -- bytes; longer records are an error
    cache_size = 1024,        -- entries in the per-worker cache
}

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
    local lib, where = require("resty.passport.ffi").load(
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
    local h, c = self._h, self.conn
    if R.rp_redis_connect(h, c.host, c.port or 0, c.path,
                          c.connect_timeout) ~= H_OK then
        return nil, hiredis_err(self, "connect to " .. c.addr)
    end
    if R.rp_redis_set_timeout(h, c.read_timeout) ~= H_OK then
        R.rp_redis_close(h)
        return nil, hiredis_err(self, "setting the timeout on " .. c.addr)
    end
    local pass = c.password
    if pass then
        local user = c.username
        if R.rp_redis_auth(h, user, user and #user or 0, pass, #pass)
           ~= H_OK then
            local err = hiredis_err(self, "AUTH")
            R.rp_redis_close(h)
            return nil, err
        end
    end
    if c.db ~= 0 and R.rp_redis_select(h, c.db) ~= H_OK then
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

local GET_REPLY = resp.accept("$-") -- a bulk string, a null or an error
local PTTL_REPLY = resp.reader(0, nil, resp.accept(":-"))
local WHERE = { send = "send to ", io = "read from " }

-- The message for a request to addr that got no reply.
local function failed(addr, err, kind)
    if kind == "setup" then
        return err
    end
    local where = WHERE[kind]
    if where then
        return "redis: " .. where .. addr .. " failed: " .. err
    end
    return "redis: GET failed: " .. err
end

-- A GET's reply as get() returns it: json | nil (no such key) | nil, err.
local function get_result(v)
    if v == false then
        return nil
    end
    if type(v) == "table" then
        return nil, "redis: GET failed: " .. v.err
    end
    return v
end

-- json | nil (no such key) | nil, err.  The command is built per call:
-- conn:request may send it again after a yield.  c: the conn, the
-- multiplexed client, or a Sentinel or Cluster router (the key: Cluster
-- routes by it; the 4th result: the address that failed); a read may go
-- out again (the `true`: mux.lua).
local function fetch_cosocket(self, sid)
    local prefix, c = self.prefix, self.client
    local v, err, kind, addr = c:request(
        { "*2\r\n$3\r\nGET\r\n$", #prefix + #sid, "\r\n", prefix, sid, "\r\n" },
        self.get_reader, true, self.keyed and prefix .. sid)
    if v == nil then
        return nil, failed(addr or c.addr, err, kind)
    end
    return get_result(v)
end

-- A cached store's reader: the GET's reply, then the PTTL's, as
-- { reply, pttl }.  An error after the GET's reply is never a stale
-- connection's (begun).
local TwoReplies = {}
local two_replies_mt = { __index = TwoReplies }

function TwoReplies.read(self, sock)
    local v, err, kind, begun = self.get:read(sock)
    if v == nil then
        return nil, err, kind, begun
    end
    local ms
    ms, err, kind = PTTL_REPLY:read(sock)
    if ms == nil then
        return nil, err, kind, true
    end
    return { v, ms }
end

-- For a cached store: GET and PTTL pipelined, one round trip.  Returns
-- json, nil, and the ms a copy of it may be cached (math.huge: the key
-- has no expiry; 0: do not cache), or what fetch_cosocket returns.
local function fetch_pttl(self, sid)
    local prefix, c = self.prefix, self.client
    local n = #prefix + #sid
    local t0 = now_ms()
    local v, err, kind, addr = c:request(
        { "*2\r\n$3\r\nGET\r\n$", n, "\r\n", prefix, sid,
          "\r\n*2\r\n$4\r\nPTTL\r\n$", n, "\r\n", prefix, sid, "\r\n" },
        self.two_readers, true, self.keyed and prefix .. sid)
    if v == nil then
        return nil, failed(addr or c.addr, err, kind)
    end
    local json, ms = v[1], v[2]
    if self.keyed and cluster.redirect_of(json) then
        -- ASK: the key is being migrated.  ASKING covers one command: the
        -- GET alone, and nothing cached until the move is over
        local one
        one, err = fetch_cosocket(self, sid)
        return one, err, 0
    end
    json, err = get_result(json)
    if not json then
        return nil, err
    end
    if type(ms) == "table" then
        -- e.g. an ACL user denied PTTL: serve, but cache nothing
        if not self.pttl_warned then
            self.pttl_warned = true
            host.log("warn", "passport: redis: PTTL failed, so nothing is "
                             .. "cached (cache_ttl): " .. ms.err)
        end
        return json, nil, 0
    end
    if ms == -1 then
        return json, nil, huge, addr
    end
    -- -2: the key went between the GET and the PTTL.  Else the key's life
    -- left, counted from before the request was sent, so that the copy
    -- dies no later than the key however long the reply took.
    return json, nil, ms < 0 and 0 or ms - (now_ms() - t0), addr
end

---------------------------------------------------------------------------
-- The store.

-- level 3: the caller of new() (bad <- new <- caller)
local function bad(name, msg, level)
    error("bad option '" .. name .. "' to 'redis.new' (" .. msg .. ")",
          level or 3)
end

-- Type-checks opts: each a store or a connection option of its type.
local function check_types(opts)
    for k, v in pairs(opts) do
        local want = KNOWN[k] or conn.OPTIONS[k]
        if not want then
            error("bad argument #1 to 'redis.new' (unknown option '"
                  .. tostring(k) .. "')", 3)
        end
        if type(v) ~= want then
            error("bad option '" .. k .. "' to 'redis.new' (" .. want
                  .. " expected, got " .. type(v) .. ")", 3)
        end
    end
end

-- The cache's options (level 4: check_cache <- new <- caller).
local function check_cache(self, opts)
    if opts.cache_ttl then
        if opts.cache_ttl < 0 then bad("cache_ttl", "negative", 4) end
        if opts.cache_ttl == 0 then self.cache_ttl = nil end
    end
    if opts.cache_coherent and not self.cache_ttl then
        bad("cache_coherent", "needs a cache_ttl", 4)
    end
end

local function use_cosockets(self)
    self.backend = "cosocket"
    if self.router then
        self.client = self.router
    else
        self.client = self.multiplex and mux.new(self.conn) or self.conn
    end
    self._fetch = fetch_cosocket
    self.get_reader = resp.reader(self.max_value_size, "max_value_size",
                                  GET_REPLY)
    if self.cache_ttl then
        local lrucache = require "resty.lrucache"
        self.cache = lrucache.new(self.cache_size)
        self.two_readers = setmetatable({ get = self.get_reader, commands = 2 },
                                        two_replies_mt)
        if self.cache_coherent then
            -- off until passport.init_worker's subscriber holds the
            -- keyspace subscription that keeps it true (set_coherent)
            self.cache_live = false
        end
    end
end

local function use_hiredis(self)
    local lib, err = load_hiredis()
    if not lib then
        return nil, err
    end
    self.backend = "hiredis"
    local h = R.rp_redis_new()
    if h == nil then
        return nil, "out of memory"
    end
    self._h = ffi.gc(h, R.rp_redis_free)
    self._fetch = fetch_hiredis
    return true
end

-- Sentinel or Cluster: a router takes the conn's place (its settings, no
-- address); level 4: use_router <- new <- caller.
local function use_router(self, opts)
    local mode = opts.sentinels and "sentinels" or opts.cluster and "cluster"
    if not mode then
        for _, k in ipairs { "master_name", "sentinel_username", "sentinel_password",
                             "discovery_ttl" } do
            if opts[k] ~= nil then bad(k, "needs sentinels or cluster", 4) end
        end
        return
    end
    if opts.sentinels and opts.cluster then
        bad("cluster", "give sentinels or cluster, not both", 4)
    end
    for _, k in ipairs { "host", "port", "path" } do
        if opts[k] ~= nil then bad(k, "the address comes from " .. mode, 4) end
    end
    if not host.in_nginx then
        bad(mode, "needs nginx: outside nginx the hiredis client talks to one server", 4)
    end
    local settings = {}
    for k in pairs(conn.OPTIONS) do settings[k] = self.conn[k] end
    settings.host, settings.port, settings.path, settings.pool = nil, nil, nil, nil
    local impl = mode == "sentinels" and sentinel or cluster
    local r, name, why = impl.new(opts, settings, self.max_value_size, self.multiplex)
    if not r then bad(name, why, 4) end
    self.router, self.conn, self.addr = r, r, nil
    self.keyed = mode == "cluster"
    -- Cluster: masters whose keyspace subscription is confirmed (set by
    -- redis/masters.lua), for the coherent cache
    self.watched = {}
end

function _M.new(opts)
    if opts == nil then
        opts = {}
    elseif type(opts) ~= "table" then
        error("bad argument #1 to 'redis.new' (table expected, got "
              .. type(opts) .. ")", 2)
    end
    check_types(opts)

    local self = { cache_epoch = 0, invalidations = 0 }
    for k, v in pairs(DEFAULTS) do self[k] = v end
    for k, v in pairs(opts) do self[k] = v end
    local c, name, why = conn.new(opts, self.max_value_size)
    if not c then bad(name, why) end
    for k in pairs(conn.OPTIONS) do self[k] = c[k] end
    self.addr = c.addr
    self.conn = c
    use_router(self, opts)

    why = conn.check_int(self.max_value_size, 0)
    if why then bad("max_value_size", why) end
    why = conn.check_int(self.cache_size, 1)
    if why then bad("cache_size", why) end
    check_cache(self, opts)

    if host.in_nginx then
        use_cosockets(self)
    else
        if opts.cache_ttl and opts.cache_ttl > 0 then
            bad("cache_ttl", "the per-worker cache needs nginx")
        end
        local ok, err = use_hiredis(self)
        if not ok then
            error(err, 2)
        end
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
            if enabled() then add(K_MISS) end
        else
            local json = cache:get(sid)
            if json then
                if enabled() then add(K_HIT) end
                return json
            end
            if enabled() then add(K_MISS) end
            epoch, invalidations = self.cache_epoch, self.invalidations
        end
    end

    -- Uncached, one GET: the handshake's hot path.  Cached, the key's
    -- PTTL too, so that a cached copy never outlives the key.
    local json, err, ttl, from
    local t0 = enabled() and clock()
    if cache then
        json, err, ttl, from = fetch_pttl(self, sid)
    else
        json, err = self._fetch(self, sid)
    end
    if t0 then
        metrics.observe(H_GET, clock() - t0)
        if err then add(K_ERROR[error_kind(err)]) end
    end
    if not json then
        return nil, err
    end

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
    if cache then
        -- a cluster: the key's master must be one whose keyspace events
        -- this worker hears (a slot just moved to a new master, before
        -- redis/masters.lua has subscribed to it: no copy)
        if self.keyed and self.cache_live ~= nil and not self.watched[from] then
            ttl = 0
        end
        if self.cache_ttl < ttl then
            ttl = self.cache_ttl
        end
        if ttl > 0 and fresh_enough(self, sid, epoch, invalidations) then
            cache:set(sid, json, ttl / 1000)
        end
    end
    return json
end

-- Drops one cached session in this worker: the subscriber calls it for
-- every keyspace event on the session's key; an app may call it too.
function _M.invalidate(self, sid)
    local cache = self.cache
    if not cache then return end
    cache:delete(sid)
    if enabled() then add(K_INVALIDATED) end
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
    if enabled() then
        metrics.set_gauge(metrics.key("passport_cache_coherent", { worker = ngx.worker.id() }),
                          live and 1 or 0)
    end
end

-- One command over a pooled (or, multiplex, the worker's) connection
-- (nginx only): the reply as redis/resp.lua reads it, or nil and an
-- error.  For PUBLISH, MGET and CONFIG from the socket layer; sessions
-- are read with get().
function _M.command(self, ...)
    if type(self) ~= "table" or self._fetch == nil then
        error("bad argument #1 to 'command' (store expected)", 2)
    end
    if self.backend ~= "cosocket" then
        error("store:command needs nginx cosockets", 2)
    end
    return self.client:command(...)
end

-- The values of keys (full keys, prefix included), as MGET answers them:
-- a list of json | false, or nil, err.  Cluster: GETs pipelined per node
-- (an MGET may not span slots), and a key whose node failed is
-- { err = why } in its place (the others are still answered).
function _M.mget(self, keys)
    if self.keyed then
        return self.router:get_many(keys, self.get_reader)
    end
    return self:command("MGET", unpack(keys))
end

-- The Redis server in use: "host:port" (Sentinel: the master discovered;
-- Cluster: the masters, comma-separated), nil before the first discovery.
function _M.address(self)
    if self.router then return self.router:address() end
    return self.addr
end

-- Closes the hiredis connection (outside nginx); a no-op in nginx, where
-- connections live in the pool.
function _M.close(self)
    if self._h then
        R.rp_redis_close(self._h)
    end
end

return _M
