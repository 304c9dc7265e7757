-- Redis servers found at run time (Sentinel's master, Cluster's nodes):
-- one conn per address (and with multiplex one mux client), made from the
-- store's settings on first use and kept for the worker's life, so that
-- pools are keyed by the discovered address (conn.lua names them so).
-- And the one-at-a-time rule for discoveries: a worker runs one at a
-- time, the requests that need its answer wait for it (a semaphore, where
-- the phase allows), and a failed one is not tried again before a short
-- pause, so that a Redis that is down is not hammered by every request.
--
--   local set = nodes.new(settings, max_bulk, multiplex)
--   set:get("10.0.0.1:6379")   --> { addr, conn, client } | nil, err
--   nodes.split("host:port")   --> host, port | nil
--   local ok, err = nodes.once(state, fn, arg)  -- fn(arg) --> ok | nil, err
--   nodes.reply_error(v)       --> a reply's error message, or nil
local host = require "resty.passport.host"
local conn = require "resty.passport.redis.conn"
local mux = require "resty.passport.redis.mux"

local match = string.match
local pairs = pairs
local pcall = pcall
local setmetatable = setmetatable
local tonumber = tonumber
local tostring = tostring
local type = type

local ngx = ngx -- nil in plain LuaJIT
local semaphore = host.in_nginx and require "ngx.semaphore"
local now = host.in_nginx and ngx.now
local phase = host.phase

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }

-- The error message of a reply, or of a pipeline's first reply (the
-- cached GET + PTTL), or nil: what the routers look at to rediscover
-- (Sentinel) or follow a redirect (Cluster).
function _M.reply_error(v)
    if type(v) ~= "table" then return nil end
    local err = v.err
    if not err and type(v[1]) == "table" then err = v[1].err end
    if type(err) ~= "string" then return nil end
    return err
end

-- Addresses one set keeps: a cluster has a few dozen nodes at most, and a
-- sentinel that lies must not make a worker open pools without end.
local MAX_NODES = 128
-- A failed discovery is not tried again before this many seconds.
local RETRY_AFTER = 0.1
local WAITS = { rewrite = true, access = true, content = true, timer = true }

-- settings: conn options without host, port or path.
function _M.new(settings, max_bulk, multiplex)
    return setmetatable({ settings = settings, max_bulk = max_bulk,
                          multiplex = multiplex, by_addr = {}, n = 0 }, mt)
end

-- "host:port" (the host may hold colons: IPv6) --> host, port | nil.
function _M.split(addr)
    local h, p = match(addr, "^(.+):(%d+)$")
    p = tonumber(p)
    if not h or not p or p < 1 or p > 65535 then return nil end
    return h, p
end
local split = _M.split

function _M.get(self, addr)
    local e = self.by_addr[addr]
    if e then return e end
    if self.n >= MAX_NODES then
        return nil, "redis: more than " .. MAX_NODES .. " addresses seen"
    end
    local h, p = split(addr)
    if not h then
        return nil, "redis: bad address '" .. addr .. "'"
    end
    local opts = { host = h, port = p }
    for k, v in pairs(self.settings) do opts[k] = v end
    local c, name, why = conn.new(opts, self.max_bulk)
    if not c then
        return nil, "redis: " .. addr .. ": " .. name .. " " .. why
    end
    e = { addr = c.addr, conn = c, client = self.multiplex and mux.new(c) or c }
    self.by_addr[addr] = e
    self.n = self.n + 1
    return e
end

-- Runs fn(arg) unless one is running: then waits for it (at most wait_s)
-- and returns its result.  A failure is returned again, without a new
-- try, for RETRY_AFTER s.  state: a table kept by the caller.
function _M.once(state, wait_s, fn, arg)
    if state.busy then
        if not WAITS[phase()] then
            return nil, state.err or "redis: discovery in progress"
        end
        local sema = state.sema
        if not sema then
            sema = semaphore.new(0)
            state.sema = sema
        end
        state.waiting = (state.waiting or 0) + 1
        sema:wait(wait_s)
        state.waiting = state.waiting - 1
        if state.ok then return true end
        return nil, state.err or "redis: discovery timed out"
    end
    if state.err and now() < (state.retry_at or 0) then
        return nil, state.err
    end
    state.busy = true
    local ok, res, err = pcall(fn, arg)
    state.busy = false
    if not ok then
        res, err = nil, "redis: discovery raised: " .. tostring(res)
    end
    state.ok = res and true or false
    state.err = not res and err or nil
    if not res then state.retry_at = now() + RETRY_AFTER end
    local waiting = state.waiting
    if waiting and waiting > 0 and state.sema then
        state.sema:post(waiting)
    end
    return res, err
end

return _M
