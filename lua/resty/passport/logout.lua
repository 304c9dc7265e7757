-- Logout: the sockets of a session that ends are closed (4401 "session
-- ended"); other sessions' sockets stay.  Two ways to see it, chosen per
-- subscriber connection: Redis keyspace events on the session prefix
-- (del, expired, evicted, rename_from: ended; set: re-checked), or, where
-- the server does not send them all, re-reading the open sessions every
-- revalidate_interval.  A record's verdict is session.logged_in, the
-- handshake's own rule, with the store's check_expires; a record that
-- changed but kept its user goes through the socket's whole authorize
-- policy again (auth:reverify), which closes the socket or updates it.
--
-- It also keeps the store's coherent cache true: each keyspace event drops
-- its key, and the cache is live only while the subscription is confirmed.
--
-- The hooks of bus.lua's subscriber (redis/pubsub.lua):
--   prepare = logout.prepare, on_pmessage = logout.on_event,
--   on_up = logout.on_up, on_down = logout.on_down
local registry = require "resty.passport.registry"
local session = require "resty.passport.session"
local host = require "resty.passport.host"
local metrics = require "resty.passport.metrics"

local ngx = ngx
local decode = session.decode
local logged_in = session.logged_in
local now_ms = host.now_ms
local find = string.find
local gmatch = string.gmatch
local gsub = string.gsub
local math_min = math.min
local pcall = pcall
local sub = string.sub
local timer_at = ngx.timer.at
local index_of = registry.index_of
local update_index = registry.update
local timer_every = ngx.timer.every
local tostring = tostring
local type = type

local _M = { _VERSION = "0.1.0" }

-- Close code and reason for the sockets of an ended session.
local CLOSE_SESSION_ENDED, ENDED_REASON = 4401, "session ended"
local ENDED = { del = true, expired = true, evicted = true, rename_from = true }
local MGET_BATCH = 100
-- Timers that re-run policies at once (each call bounded by its authorize
-- object's accept_timeout).
local MAX_RUNNERS = 8

-- This worker's: the store, the options, the keyspace channel prefix.
local store, conf, ks_prefix

-- logout.options(v) --> the normalized options of init_worker's `logout`,
-- false when it is off, or nil and what is wrong with them.
function _M.options(v)
    if v == false then return false end
    if v == nil then v = {} end
    if type(v) ~= "table" then return nil, "table or false expected" end
    local iv = v.revalidate_interval
    if iv ~= nil and iv ~= false and (type(iv) ~= "number" or iv <= 0) then
        return nil, "revalidate_interval: positive number of seconds or false expected"
    end
    if v.events ~= nil and type(v.events) ~= "boolean" then
        return nil, "events: boolean expected"
    end
    return {
        events = v.events,
        configure = v.configure == true,
        revalidate_set = iv ~= nil,
        revalidate_interval = iv == nil and 1 or (iv or nil),
    }
end

-- logout.start(store, options): this worker watches store's sessions.
function _M.start(s, options)
    store, conf = s, options
    ks_prefix = "__keyspace@" .. s.db .. "__:" .. s.prefix
end

---------------------------------------------------------------------------
-- Closing.

local K_CLOSES = metrics.key("passport_logout_closes_total")

-- Closes a socket whose session ended (or changed hands).
local function end_socket(s)
    if s.state == "open" and metrics.enabled() then metrics.add(K_CLOSES) end
    s:close(CLOSE_SESSION_ENDED, ENDED_REASON)
end

local function session_ended(sid, why)
    local socks = registry.of_sid(sid)
    for i = 1, #socks do
        end_socket(socks[i])
    end
    if socks[1] then
        host.log("info", "passport: " .. #socks .. " socket(s) closed: session " .. why)
    end
end

---------------------------------------------------------------------------
-- The policy again, for a socket whose record changed but kept its user:
-- a queue that runner timers drain, apart from revalidation, so that a
-- slow or raising policy holds up no other session's logout.  A socket is
-- in the queue once and its policy runs once at a time, so verdicts land
-- in the order the records were read; a change that comes while its
-- policy runs is seen right after.

local queue, q_first, q_last = {}, 1, 0
local pending = {}    -- socket -> the newest record its policy must see
local running = {}    -- socket -> the record its policy is seeing now
local runners = 0

-- The verdict of pcall(auth.reverify, ...): admitted (true, true, data),
-- the socket follows the new data, its user and index entries; refused
-- (true, false, message) or raising (false, err), it is closed.
local function apply(s, ok, admitted, v)
    if s.state ~= "open" then return end
    if ok and admitted then
        s.user = v.user
        s.data = v
        return update_index(s, index_of(v))
    end
    end_socket(s)
    if ok then
        host.log("info", "passport: socket closed: its changed session was refused: " .. tostring(v))
    else
        host.log("err", "passport: re-running the policy raised: " .. tostring(v))
    end
end

local function rerun(s)
    local json = pending[s]
    while json do
        pending[s] = nil
        if s.state ~= "open" then return end
        local data = s.data
        if json ~= data._record then
            running[s] = json
            local auth = data._auth
            apply(s, pcall(auth.reverify, auth, data, json))
        end
        json = pending[s]
    end
end

local function run_queue(premature)
    while not premature and q_first <= q_last do
        local s = queue[q_first]
        queue[q_first] = nil
        q_first = q_first + 1
        local ok, err = pcall(rerun, s)
        running[s] = nil
        pending[s] = nil
        if not ok then host.log("err", "passport: policy re-run failed: " .. tostring(err)) end
    end
    if q_first > q_last then q_first, q_last = 1, 0 end
    runners = runners - 1
end

local function enqueue(s, json)
    local now_seeing, queued = running[s], pending[s]
    -- a revalidation while the policy is at work on this very record: the
    -- verdict to come is the one wanted (starting over would never end for
    -- a policy slower than revalidate_interval)
    if now_seeing == json and queued == nil then return end
    pending[s] = json
    if now_seeing or queued then return end
    q_last = q_last + 1
    queue[q_last] = s
    if runners < MAX_RUNNERS then
        local ok, err = timer_at(0, run_queue)
        if ok then
            runners = runners + 1
        else
            host.log("err", "passport: cannot re-run a policy now: " .. tostring(err))
        end
    end
end

---------------------------------------------------------------------------
-- Revalidation.

-- One record read back (json: false when the key is gone): a session that
-- is no longer logged in, or is now another user's, closes its sockets; a
-- record that differs from the one a socket's policy saw is put to that
-- policy again.  (A record without a cookie object is unreadable: Express
-- fails every request for it.)
local function check(sid, json, now)
    if type(json) == "table" then
        return -- this key's node failed (a cluster): close nothing
    end
    if not json then
        return session_ended(sid, "gone")
    end
    local s = decode(json)
    local ok, why = false, "logged out"
    if s then ok, why = logged_in(s, now, store.check_expires, true) end
    if not ok then
        return session_ended(sid, why)
    end
    local key = registry.key_of(s.user)
    local socks = registry.of_sid(sid)
    for i = 1, #socks do
        local sock = socks[i]
        local data = sock.data
        if sock._key ~= key then
            end_socket(sock)
        elseif data._record ~= json and data._auth then
            enqueue(sock, json)
        end
    end
end

-- Checks the sessions of sids against the store.  A store error closes
-- nothing.
local function revalidate(sids)
    local prefix = store.prefix
    for first = 1, #sids, MGET_BATCH do
        local keys, batch = {}, {}
        for i = first, math_min(first + MGET_BATCH - 1, #sids) do
            batch[#batch + 1] = sids[i]
            keys[#keys + 1] = prefix .. sids[i]
        end
        local vals, err = store:mget(keys)
        if type(vals) ~= "table" then
            host.log("warn", "passport: revalidation skipped: " .. tostring(err or "bad reply"))
            return
        end
        local now = now_ms()
        for i = 1, #batch do check(batch[i], vals[i], now) end
    end
end

local function revalidate_safely(sids)
    local ok, err = pcall(revalidate, sids)
    if not ok then host.log("err", "passport: revalidation failed: " .. tostring(err)) end
end

local revalidating = false
local function revalidate_all(premature)
    if premature or revalidating then return end
    revalidating = true
    revalidate_safely(registry.sids())
    revalidating = false
end

local function revalidate_one(premature, sid)
    if premature then return end
    revalidate_safely({ sid })
end

local periodic_started = false
local function start_periodic()
    local interval = conf.revalidate_interval
    if periodic_started or not interval then return end
    local ok, err = timer_every(interval, revalidate_all)
    if ok then
        periodic_started = true
    else
        host.log("err", "passport: cannot start revalidation: " .. err)
    end
end

---------------------------------------------------------------------------
-- The subscriber's hooks.

local function has(flags, c)
    return find(flags, c, 1, true) ~= nil
end

-- true when the server sends the keyspace events logout needs: K, and del
-- and rename (g), expired (x) and set ($), or all of them (A).  Without
-- `set` a session the app rewrites (logged out without regeneration,
-- another user, a new role) would go unseen, and a cache trusting the
-- events would keep serving the old record.
local function events_usable(flags)
    if type(flags) ~= "string" or not has(flags, "K") then return false end
    return has(flags, "A") or (has(flags, "g") and has(flags, "x") and has(flags, "$"))
end

-- The flags configure turns on (e: evicted, seen as ended), those already
-- there kept.
local function missing_flags(flags)
    local add = has(flags, "K") and "" or "K"
    if not has(flags, "A") then
        for c in gmatch("gx$e", ".") do
            if not has(flags, c) then add = add .. c end
        end
    end
    return add
end

-- The notify-keyspace-events flags of the server c talks to (a cluster
-- node's conn; else the store's server), completed when configure asks
-- for it.
local function keyspace_flags(c)
    local reply, err = c:command("CONFIG", "GET", "notify-keyspace-events")
    local flags = type(reply) == "table" and reply[2] or nil
    if type(flags) ~= "string" then flags = nil end
    if flags and conf.configure and not events_usable(flags) then
        local ok
        local want = flags .. missing_flags(flags)
        ok, err = c:command("CONFIG", "SET", "notify-keyspace-events", want)
        if ok then flags = want end
    end
    return flags, err
end

-- Before each subscriber connection: keyspace events or revalidation.
-- Returns the patterns to PSUBSCRIBE (or nil) and whether the server said
-- it sends the events (a coherent cache trusts nothing less).  c: the
-- cluster node the subscriber is on (nil: the store's server).
function _M.prepare(c)
    local patterns = { "__keyspace@" .. store.db .. "__:"
                       .. gsub(store.prefix, "[%*%?%[%]\\]", "\\%0") .. "*" }
    if conf.events == false then
        start_periodic()
        return nil
    end
    local flags, err = keyspace_flags(c or store)
    if events_usable(flags) then
        if conf.revalidate_set then start_periodic() end
        return patterns, true
    end
    if not conf.warned then
        conf.warned = true
        host.log("warn", "passport: Redis keyspace notifications are off or incomplete "
                 .. "(notify-keyspace-events \"" .. tostring(flags or err)
                 .. "\"; logout needs K and A, or K, g, x and $): logout is seen by "
                 .. "revalidating every " .. tostring(conf.revalidate_interval)
                 .. " s instead, and a coherent cache stays off")
    end
    start_periodic()
    -- none at all: nothing would arrive; some (or unknown): del and expired
    -- close sockets sooner, though nothing trusts them
    if flags and not has(flags, "K") then return nil end
    return patterns
end

-- A keyspace event on a session key.
function _M.on_event(_, channel, event)
    if type(channel) ~= "string" or sub(channel, 1, #ks_prefix) ~= ks_prefix then return end
    local sid = sub(channel, #ks_prefix + 1)
    -- any change to the key: a cached copy is stale
    if store.cache then store:invalidate(sid) end
    if ENDED[event] and not (event == "del" and store.keyed) then
        session_ended(sid, event == "expired" and "expired" or "ended")
    elseif (event == "set" or event == "del" or event == "restore")
           and registry.of_sid(sid)[1] then
        -- rewritten: maybe logged out or another user; check off-loop.
        -- In a cluster, a del may be MIGRATE moving the key to another
        -- node (and restore its arrival there): read it back to know
        timer_at(0, revalidate_one, sid)
    end
end

-- The subscription is up; confirmed: the keyspace events will come.
-- After a reconnect (a Redis restart, a Sentinel failover), the events
-- of the gap are lost: the open sessions are read back once.
local was_down = false
function _M.on_up(confirmed)
    if confirmed and store.set_coherent then store:set_coherent(true) end
    if was_down then
        was_down = false
        local ok, err = timer_at(0, revalidate_all)
        if not ok then host.log("err", "passport: cannot revalidate after a reconnect: " .. tostring(err)) end
    end
end

-- The subscription is down: events may be missed from now on.
function _M.on_down(was_up)
    if store.set_coherent then store:set_coherent(false) end
    if was_up ~= false then was_down = true end
end

return _M
