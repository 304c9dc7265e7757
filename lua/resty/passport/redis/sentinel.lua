-- The master of a Redis Sentinel group (nginx only): asked of the
-- sentinels with SENTINEL get-master-addr-by-name, confirmed with ROLE,
-- cached per worker for discovery_ttl seconds, and asked again at once
-- when a request to it fails (a connection error, READONLY, LOADING,
-- MASTERDOWN) or a fresh connection's ROLE says it is no longer the
-- master (conn.lua's expect_master).  Sessions are never read from a
-- replica: a logout on the master may not have reached it yet.
--
--   local r, name, why = sentinel.new(opts, settings, max_bulk, multiplex)
--   r:request(bytes, reader, again)  --> as conn:request, + the address
--   r:command("PUBLISH", ch, msg)    --> as conn:command
--   r:raw(read_timeout)              --> sock | nil, err (the subscriber)
--   r:address()                      --> "host:port" in use, or nil
--
-- A request that fails on the master it had goes once more on the master
-- discovered then, if that is another server (a read, or one that never
-- reached the server).  While no sentinel names a master that answers,
-- requests fail at once with the reason ("redis: no master for ...").
local conn = require "resty.passport.redis.conn"
local host = require "resty.passport.host"
local metrics = require "resty.passport.metrics"
local nodes = require "resty.passport.redis.nodes"
local resp = require "resty.passport.redis.resp"

local concat = table.concat
local find = string.find
local ipairs = ipairs
local pairs = pairs
local setmetatable = setmetatable
local tostring = tostring
local type = type

local ngx = ngx -- nil in plain LuaJIT
local now = host.in_nginx and ngx.now
local once = nodes.once
local reply_error = nodes.reply_error

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }

local DEFAULT_TTL = 5 -- s an answer is trusted without a failure

local K_FOUND = metrics.key("passport_redis_discoveries_total", { mode = "sentinel", outcome = "ok" })
local K_FAILED = metrics.key("passport_redis_discoveries_total", { mode = "sentinel", outcome = "error" })

-- Error replies that mean "this server is not a usable master now".
local NOT_MASTER = { "READONLY", "LOADING", "MASTERDOWN" }

-- A list of { host, port } or "host:port" --> list of "host:port", or
-- nil, why.
function _M.addresses(list)
    if type(list) ~= "table" or list[1] == nil then
        return nil, "non-empty list of { host, port } expected"
    end
    local out = {}
    for i, a in ipairs(list) do
        local addr = a
        if type(a) == "table" then
            addr = tostring(a[1] or a.host) .. ":" .. tostring(a[2] or a.port)
        end
        if type(addr) ~= "string" or not nodes.split(addr) then
            return nil, "entry " .. i .. " is not a { host, port }"
        end
        out[i] = addr
    end
    return out
end

-- opts: the store's options (sentinels, master_name, sentinel_username,
-- sentinel_password, discovery_ttl); settings: the data connections'
-- conn options, without an address.  Returns a router, or nil, the
-- option at fault and why.
function _M.new(opts, settings, max_bulk, multiplex)
    local addrs, why = _M.addresses(opts.sentinels)
    if not addrs then return nil, "sentinels", why end
    local name = opts.master_name
    if type(name) ~= "string" or name == "" then
        return nil, "master_name", "the Sentinel group's name expected"
    end
    local ttl = opts.discovery_ttl or DEFAULT_TTL
    if ttl <= 0 then return nil, "discovery_ttl", "positive number expected" end
    if opts.sentinel_username and not opts.sentinel_password then
        return nil, "sentinel_username", "needs a sentinel_password"
    end
    local sentinels = {}
    for i, addr in ipairs(addrs) do
        local h, p = nodes.split(addr)
        local c, bad, whyc = conn.new({
            host = h, port = p,
            username = opts.sentinel_username, password = opts.sentinel_password,
            connect_timeout = settings.connect_timeout,
            read_timeout = settings.read_timeout,
            pool_size = 4,
        }, 4096)
        if not c then return nil, "sentinels", bad .. " " .. whyc end
        sentinels[i] = c
    end
    local data = {}
    for k, v in pairs(settings) do data[k] = v end
    data.expect_master = true
    return setmetatable({
        mode = "sentinel", name = name, sentinels = sentinels, ttl = ttl,
        set = nodes.new(data, max_bulk, multiplex), flight = {},
        next_sentinel = 1, expires = 0, db = settings.db or 0,
        reader = resp.reader(max_bulk),
        wait_s = ((settings.connect_timeout or 1000)
                  + (settings.read_timeout or 1000)) * 2 / 1000,
    }, mt), nil, nil
end

-- One sentinel's answer, confirmed: the master's entry, or nil, why.
local function ask(self, s)
    local v, err = s:command("SENTINEL", "get-master-addr-by-name", self.name)
    if v == false then
        return nil, s.addr .. " knows no master named '" .. self.name .. "'"
    end
    if type(v) ~= "table" or type(v[1]) ~= "string" or type(v[2]) ~= "string" then
        return nil, s.addr .. ": " .. tostring(err or "unexpected reply")
    end
    local addr = v[1] .. ":" .. v[2]
    local e
    e, err = self.set:get(addr)
    if not e then return nil, s.addr .. ": " .. err end
    local role
    role, err = e.conn:command("ROLE")
    if type(role) == "table" and role[1] == "master" then
        return e
    end
    return nil, s.addr .. " names " .. addr .. ", "
                .. (type(role) == "table" and ("a " .. tostring(role[1]))
                    or tostring(err))
end

-- Asks the sentinels in turn, the one that answered last first.
local function discover(self)
    local list, n = self.sentinels, #self.sentinels
    local why = {}
    for i = 0, n - 1 do
        local k = (self.next_sentinel + i - 1) % n + 1
        local e, err = ask(self, list[k])
        if e then
            if self.current ~= e and self.master_addr then
                host.log("warn", "passport: redis: master '" .. self.name
                         .. "' is now " .. e.addr .. " (was " .. self.master_addr .. ")")
            end
            self.current, self.master_addr = e, e.addr
            self.expires = now() + self.ttl
            self.next_sentinel = k
            metrics.add(K_FOUND)
            return true
        end
        why[#why + 1] = err
    end
    metrics.add(K_FAILED)
    return nil, "redis: no master for '" .. self.name .. "': " .. concat(why, "; ")
end

-- The master's entry, or nil, err.
local function master(self)
    local e = self.current
    if e and now() < self.expires then return e end
    local ok, err = once(self.flight, self.wait_s, discover, self)
    if ok then return self.current end
    if e then
        -- only its life ran out, and no sentinel answers: keep it (a
        -- failure on it will end it)
        self.expires = now() + self.ttl
        host.log("warn", "passport: redis: keeping master " .. e.addr
                 .. ": rediscovery failed: " .. tostring(err))
        return e
    end
    return nil, err
end
_M.master = master

local function forget(self, e)
    if self.current == e then self.current = nil end
end

-- The error of a reply that says its server is not a usable master, or
-- nil (a pipeline's reply: its first one).
local function not_master(v)
    local err = reply_error(v)
    if not err then return nil end
    for i = 1, #NOT_MASTER do
        if find(err, NOT_MASTER[i], 1, true) == 1 then return err end
    end
end

-- One try on entry e: v, err, kind, and whether e is to be forgotten.
local function try(e, bytes, reader, again)
    local v, err, kind = e.client:request(bytes, reader, again)
    if v == nil then return v, err, kind, kind ~= "protocol" end
    return v, nil, nil, not_master(v) ~= nil
end

function _M.request(self, bytes, reader, again)
    local e, err = master(self)
    if not e then return nil, err, "setup" end
    local v, kind, bad
    v, err, kind, bad = try(e, bytes, reader, again)
    if not bad then return v, err, kind, e.addr end
    forget(self, e)
    -- a command that may have reached the server goes again only if it
    -- is a read
    if v == nil and kind ~= "setup" and not again then
        return v, err, kind, e.addr
    end
    local e2 = master(self)
    if not e2 or e2 == e then return v, err, kind, e.addr end
    v, err, kind, bad = try(e2, bytes, reader, again)
    if bad then forget(self, e2) end
    return v, err, kind, e2.addr
end

_M.command = conn.command

-- A connection of its own to the master (the subscriber's).
function _M.raw(self, read_timeout)
    local e, err = master(self)
    if not e then return nil, err end
    local sock
    sock, err = e.conn:raw(read_timeout)
    if not sock then forget(self, e) end
    return sock, err
end

function _M.address(self)
    local e = self.current
    return e and e.addr or nil
end

return _M
