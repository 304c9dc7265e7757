-- One subscriber per Redis Cluster master (nginx only): a node sends the
-- keyspace events of the keys it owns and no others, so logout and the
-- coherent cache listen to every master, and follow the slot map as
-- masters come and go (a reshard onto a new node, a replica promoted).
--
--   masters.start(store, {
--       prepare = function(conn) return patterns, confirmed end,
--       on_pmessage = function(pattern, channel, payload) end,
--       on_up = function(confirmed) end,   -- every master's is up
--       on_down = function() end,          -- one of them is not
--       max_message_size = n,
--   })
--
-- on_up runs when the last master's subscription is confirmed, on_down
-- when one ends or a new master appears: a coherent cache is on only
-- while it hears every master.  The slot map is re-read every second in
-- the watcher's timer when it has aged past discovery_ttl (requests read
-- it again sooner on MOVED and connection errors).
local host = require "resty.passport.host"
local pubsub = require "resty.passport.redis.pubsub"

local pairs = pairs
local pcall = pcall
local tostring = tostring

local ngx = ngx -- nil in plain LuaJIT
local now = host.in_nginx and ngx.now
local exiting = host.in_nginx and ngx.worker.exiting
local timer_every = host.in_nginx and ngx.timer.every
local timer_at = host.in_nginx and ngx.timer.at

local _M = { _VERSION = "0.1.0" }

local WATCH_EVERY = 1 -- s

-- Every master's subscription confirmed (and at least one master)?
local function all_up(w)
    local n = 0
    for _, s in pairs(w.subs) do
        if not s.confirmed then return false end
        n = n + 1
    end
    return n > 0
end

local function recompute(w)
    local live = all_up(w)
    if live == w.live then return end
    w.live = live
    local fn = live and w.opts.on_up or w.opts.on_down
    local ok, err = pcall(fn, live or nil)
    if not ok then host.log("err", "passport: cluster subscriber hook raised: " .. tostring(err)) end
end

local function add(w, addr)
    local e, err = w.router:node(addr)
    if not e then
        host.log("warn", "passport: cannot watch " .. addr .. ": " .. tostring(err))
        return
    end
    local s = { confirmed = false }
    local opts = w.opts
    s.sub = pubsub.new(w.store, {
        conn = e.conn,
        max_message_size = opts.max_message_size,
        prepare = function() return opts.prepare(e.conn) end,
        on_pmessage = opts.on_pmessage,
        on_up = function(confirmed)
            s.confirmed = confirmed and true or false
            w.store.watched[addr] = s.confirmed or nil
            recompute(w)
        end,
        on_down = function()
            s.confirmed = false
            w.store.watched[addr] = nil
            recompute(w)
        end,
    })
    local ok
    ok, err = s.sub:start()
    if not ok then
        host.log("err", "passport: cannot start the subscriber of " .. addr .. ": " .. tostring(err))
        return
    end
    w.subs[addr] = s
end

-- Brings the subscribers in line with the masters of the map.
local function sync(w)
    local router = w.router
    if not router.slots or now() >= (router.expires or 0) then
        local ok, err = router:refresh()
        if not ok and not router.slots then
            host.log("warn", "passport: " .. tostring(err))
            return
        end
    end
    if router.version == w.version then return end
    w.version = router.version
    local want = {}
    for _, addr in pairs(router:masters()) do
        want[addr] = true
        if not w.subs[addr] then add(w, addr) end
    end
    for addr, s in pairs(w.subs) do
        if not want[addr] then
            s.sub:stop()
            w.subs[addr] = nil
            w.store.watched[addr] = nil
        end
    end
    recompute(w)
end

local function tick(premature, w)
    if premature or exiting() then return end
    local ok, err = pcall(sync, w)
    if not ok then host.log("err", "passport: cluster watch failed: " .. tostring(err)) end
end

-- store: a Cluster store (store.router).  true, or nil and the timer's
-- error.
function _M.start(store, opts)
    local w = { store = store, router = store.router, opts = opts, subs = {},
                version = -1, live = false }
    local ok, err = timer_at(0, tick, w)
    if ok then ok, err = timer_every(WATCH_EVERY, tick, w) end
    if not ok then return nil, err end
    _M.current = w
    return true
end

-- For status: each master's address and whether its subscription is
-- confirmed.
function _M.state()
    local w = _M.current
    if not w then return nil end
    local out = {}
    for addr, s in pairs(w.subs) do out[addr] = s.confirmed end
    return out
end

return _M
