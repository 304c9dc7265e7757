-- Engine.IO sessions that outlive a request and whose requests land on any
-- worker: the state they share in a lua_shared_dict, the wake-ups between
-- workers, and the host timer that runs each worker's polling sessions.
--
-- Why this shape: a session's Socket.IO state is Lua closures (handlers,
-- ack callbacks, rooms), which cannot move between workers, and nginx
-- cannot route a request by sid.  So a session lives in one worker, its
-- home (the worker that answered its handshake), where the host timer's
-- runners run its handlers, and the requests that land elsewhere meet it
-- in the dict:
--
--   m<sid>  "<home worker id>:<home pid>:<hash of the browser session>"
--   s<sid>  the transport's state: "p" polling, "u" upgrading, "w" upgraded
--           to a WebSocket, "c" closed (the close packet waits for a GET)
--   i<sid>  the inbox, packets for the home, and I<sid> its bytes
--   o<sid>  the outbox, packets for the client, and O<sid> its bytes
--   g<sid>  the request that takes the outbox (a pending GET, or the
--           upgraded WebSocket); P<sid> a POST, r<sid> an upgrade
--   w<wid>  a worker's wake list: "i<sid>" for a home, "o<sid>" / "u<sid>"
--           for a GET / an upgraded WebSocket
--   h<wid>  the pid of the worker alive under that id
--
-- Packets are kept as Engine.IO text packets ("4hello", "2", "1"), a
-- binary message as "b" and its bytes.  Every key has a TTL the home
-- refreshes on each ping, so a session whose worker died goes away by
-- itself; h<wid> tells requests at once that the home is gone.
--
-- Wake-ups: a waiter of this worker is posted directly; another worker's
-- is put on its wake list, which its host timer pops every TICK seconds.
local semaphore = require "ngx.semaphore"
local host = require "resty.passport.host"

local ngx = ngx
local shared = ngx.shared
local exiting = ngx.worker.exiting
local worker_id = ngx.worker.id
local worker_pid = ngx.worker.pid
local spawn = ngx.thread.spawn
local timer_at = ngx.timer.at
local now = ngx.now
local byte = string.byte
local find = string.find
local next = next
local pairs = pairs
local sub = string.sub
local setmetatable = setmetatable
local tonumber = tonumber
local tostring = tostring

local _M = { _VERSION = "0.1.0", TICK = 0.005 }

-- This worker's side.
local waiters = {}  -- "o<sid>" / "u<sid>" -> the semaphore a request waits on
local homes = {}    -- sid -> the session object this worker is home to
local tables = {}   -- dict name -> Table, whose wake lists the host pops
local host_sema, host_on

-- The runners: light threads of the host timer that run sessions' work
-- (s:process()), a session at a time each.  A session has no thread of its
-- own (the timer's request would keep every thread it ever spawned until
-- it ends); runners are made as work waits and none is idle, up to
-- MAX_RUNNERS, and kept.
local ready, r_head, r_tail = {}, 1, 0
local runners, idle, stopping = 0, 0, false
local runner_sema = semaphore.new(0)
_M.MAX_RUNNERS = 256

local Table = {}
Table.__index = Table

-- sessions.open(dict_name) --> the table kept in that dict, or nil, err.
function _M.open(name)
    local t = tables[name]
    if t then return t end
    local dict = shared[name]
    if not dict then return nil, "no lua_shared_dict " .. name end
    t = setmetatable({ dict = dict, name = name }, Table)
    tables[name] = t
    return t
end

---------------------------------------------------------------------------
-- The host: one timer per worker.

-- The worker goes away: its sessions close, and every waiter wakes to see
-- it (they wait long, with no timer of their own).
local function close_homes()
    for _, s in pairs(homes) do s:close(1001) end
    for _, sema in pairs(waiters) do
        if sema:count() <= 0 then sema:post(1) end
    end
end

-- sessions.schedule(s): s has work (messages, its heartbeat, its end); a
-- runner calls s:process().  Any context of the worker may call it.
local function schedule(s)
    if s.queued then return end
    s.queued = true
    r_tail = r_tail + 1
    ready[r_tail] = s
    if idle > 0 then
        if runner_sema:count() <= 0 then runner_sema:post(1) end
    elseif host_sema and host_sema:count() < 0 then
        host_sema:post(1) -- the host makes a runner
    end
end
_M.schedule = schedule

local function runner()
    while true do
        local s
        if r_head <= r_tail then
            s = ready[r_head]
            ready[r_head] = nil
            r_head = r_head + 1
            -- emptied: the queue starts over (its table stays small)
            if r_head > r_tail then r_head, r_tail = 1, 0 end
        end
        if s then
            s.queued = false
            -- a session whose runner waits in a handler is that runner's:
            -- it takes the new work before it lets go (no yield between
            -- its last look and letting go)
            if not s.running then
                s.running = true
                local ok, err = pcall(s.process, s)
                s.running = false
                if not ok then
                    host.log("err", "passport: engine.io: session " .. tostring(s.id) .. ": " .. tostring(err))
                end
            end
        elseif stopping then
            return
        else
            idle = idle + 1
            runner_sema:wait(60)
            idle = idle - 1
        end
    end
end

-- A key woken: a home's inbox ("i<sid>") schedules the session, anything
-- else posts the request that waits for it.
local function deliver(key)
    if byte(key, 1) == 105 then -- "i"
        local s = homes[sub(key, 2)]
        if s then schedule(s) end
        return
    end
    local sema = waiters[key]
    if sema and sema:count() <= 0 then sema:post(1) end
end

local function pop_wakes(t, wid)
    local dict, list = t.dict, "w" .. wid
    for _ = 1, 100000 do
        local key = dict:lpop(list)
        if not key then return end
        deliver(key)
    end
end

local function host_loop()
    local wid, pid = worker_id(), worker_pid()
    local alive_at, stop_at = 0, nil
    while true do
        local t_now = now()
        for _, t in pairs(tables) do
            pop_wakes(t, wid)
            if t_now >= alive_at then t.dict:set("h" .. wid, pid, 5) end
        end
        if r_head <= r_tail and idle == 0 and runners < _M.MAX_RUNNERS then
            local ok, err = spawn(runner)
            if ok then
                runners = runners + 1
            else
                host.log("err", "passport: engine.io: cannot start a runner: " .. err)
            end
        end
        if t_now >= alive_at then alive_at = t_now + 1 end
        if stop_at then
            -- the worker goes away: its sessions were closed; wakes are
            -- still delivered a little while, for the requests draining them
            if t_now >= stop_at then break end
        elseif exiting() then
            close_homes()
            stop_at = t_now + 1
        end
        -- a wake list matters only to a worker with waiters or sessions:
        -- without any, the host rests (a new one wakes it) but for the
        -- liveness key
        local busy = next(waiters) ~= nil or next(homes) ~= nil
        host_sema:wait((busy or r_head <= r_tail) and _M.TICK or 0.5)
    end
    -- the runners finish what is queued, then end with the timer
    stopping = true
    if runners > 0 then runner_sema:post(runners) end
end

local start_host

-- The host's timer; should its loop ever raise, a new one takes over (the
-- sessions' liveness key depends on it).
local function host_main(premature)
    if premature then host_on = false return end
    local ok, err = pcall(host_loop)
    host_on = false
    if not ok then
        host.log("err", "passport: engine.io: the host timer raised: " .. tostring(err))
        if not exiting() then start_host() end
    end
end

function start_host()
    if host_on then return true end
    host_sema = host_sema or semaphore.new(0)
    local ok, err = timer_at(0, host_main)
    if not ok then return nil, err end
    host_on = true
    return true
end

-- sessions.ensure_host(): this worker's host runs (its wake list is
-- popped, its runners made).
_M.ensure_host = start_host

function _M.add_home(s)
    homes[s.id] = s
    -- the host may rest: from now on it must read the wake list
    if host_sema and host_sema:count() < 0 then host_sema:post(1) end
end
function _M.remove_home(s) if homes[s.id] == s then homes[s.id] = nil end end
function _M.home_count()
    local n = 0
    for _ in pairs(homes) do n = n + 1 end
    return n
end

---------------------------------------------------------------------------
-- Waiting and waking.

local function waiter(key)
    local sema = waiters[key]
    if not sema then
        sema = semaphore.new(0)
        waiters[key] = sema
        -- the host may rest: from now on it must read the wake list
        if host_sema and host_sema:count() < 0 then host_sema:post(1) end
    end
    return sema
end

-- sessions.wait(key, timeout): waits until key is woken or timeout (s)
-- passes; true when woken.
function _M.wait(key, timeout)
    local ok = waiter(key):wait(timeout)
    return ok
end

-- Wakes key's waiter of this worker, if one waits.
function _M.wait_wake(key)
    local sema = waiters[key]
    if sema and sema:count() <= 0 then sema:post(1) end
end

-- The waiter of key has gone: later wakes for it fall on nobody.
function _M.unwait(key) waiters[key] = nil end

-- Registers key's waiter before its condition is checked, so that a wake
-- that comes in between is kept (the semaphore's count).
function _M.watch(key)
    waiter(key)
end

-- t:wake(wid, key): the waiter of key on worker wid.
function Table:wake(wid, key)
    if wid == worker_id() then return deliver(key) end
    self.dict:rpush("w" .. wid, key)
end

-- The outbox's taker, g<sid>: "<worker id><letter>", the letter naming
-- its waiter ("o" a GET, "u" an upgraded WebSocket), so that a GET and a
-- WebSocket of one worker never share a semaphore.
function Table:take_outbox(sid, letter, ttl, replace)
    local value = worker_id() .. letter
    if replace then return self.dict:set("g" .. sid, value, ttl) end
    return (self.dict:add("g" .. sid, value, ttl))
end

-- Wakes the outbox's taker, if any.
function Table:wake_taker(sid)
    local g = self.dict:get("g" .. sid)
    if g then self:wake(tonumber(sub(g, 1, -2)), sub(g, -1) .. sid) end
end

---------------------------------------------------------------------------
-- Sessions.

local KEYS = { "m", "s", "i", "I", "o", "O", "g", "P", "r" }

-- t:create(sid, key_hash, ttl): this worker is the session's home.
function Table:create(sid, key_hash, ttl)
    local dict, wid, pid = self.dict, worker_id(), worker_pid()
    dict:set("h" .. wid, pid, 5)
    local ok, err = dict:safe_add("m" .. sid, wid .. ":" .. pid .. ":" .. key_hash, ttl)
    if not ok then return nil, err end
    ok, err = dict:safe_set("s" .. sid, "p", ttl)
    if not ok then
        dict:delete("m" .. sid)
        return nil, err
    end
    return true
end

-- t:lookup(sid) --> state, home worker id, key hash; nil when the session
-- is unknown or its home is gone.
function Table:lookup(sid)
    local dict = self.dict
    local meta = dict:get("m" .. sid)
    if not meta then return nil end
    local a = find(meta, ":", 1, true)
    local b = a and find(meta, ":", a + 1, true)
    if not b then return nil end
    local wid = tonumber(sub(meta, 1, a - 1))
    if dict:get("h" .. wid) ~= tonumber(sub(meta, a + 1, b - 1)) then return nil end
    local state = dict:get("s" .. sid)
    if not state then return nil end
    return state, wid, sub(meta, b + 1)
end

function Table:state(sid) return self.dict:get("s" .. sid) end

function Table:set_state(sid, state)
    return self.dict:replace("s" .. sid, state)
end

-- t:lock(kind, sid, value, ttl) --> true, or false when held already.
function Table:lock(kind, sid, value, ttl)
    return (self.dict:add(kind .. sid, value, ttl))
end

function Table:unlock(kind, sid) self.dict:delete(kind .. sid) end

function Table:get(kind, sid) return self.dict:get(kind .. sid) end

function Table:set(kind, sid, value, ttl) return self.dict:set(kind .. sid, value, ttl) end

-- t:push(box, sid, items, n, max_n, max_bytes, ttl) --> true, or nil and
-- "overflow" (nothing pushed) or the dict's error.  box: "i" or "o".
function Table:push(box, sid, items, n, max_n, max_bytes, ttl)
    local dict = self.dict
    local list, counter = box .. sid, (box == "i" and "I" or "O") .. sid
    local bytes = 0
    for i = 1, n do bytes = bytes + #items[i] end
    local total, err = dict:incr(counter, bytes, 0, ttl)
    if not total then return nil, err end
    if total > max_bytes or (dict:llen(list) or 0) + n > max_n then
        dict:incr(counter, -bytes)
        return nil, "overflow"
    end
    for i = 1, n do
        local len
        len, err = dict:rpush(list, items[i])
        if not len then return nil, err end
        if len == 1 then dict:expire(list, ttl) end
    end
    return true
end

-- t:pop(box, sid) --> the next item, or nil.
function Table:pop(box, sid)
    local dict = self.dict
    local item = dict:lpop(box .. sid)
    if item then dict:incr((box == "i" and "I" or "O") .. sid, -#item) end
    return item
end

-- An item that ends a GET's payload: what follows goes in the next one.
_M.BARRIER = "-"

-- t:pop_all(box, sid, max_bytes) --> the items (at least one when any
-- waits, then up to max_bytes or a barrier), their count.
function Table:pop_all(box, sid, max_bytes)
    local dict = self.dict
    local list = box .. sid
    local out, n, bytes = {}, 0, 0
    while true do
        local item = dict:lpop(list)
        if not item then break end
        bytes = bytes + #item
        if item == "-" then
            if n > 0 then break end
        else
            n = n + 1
            out[n] = item
            if bytes >= max_bytes then break end
        end
    end
    if bytes > 0 then dict:incr((box == "i" and "I" or "O") .. sid, -bytes) end
    return out, n
end

function Table:llen(box, sid) return self.dict:llen(box .. sid) or 0 end

-- t:clear(box, sid): what waits in the box is dropped.
function Table:clear(box, sid)
    local dict = self.dict
    dict:delete(box .. sid)
    dict:delete((box == "i" and "I" or "O") .. sid)
end

-- t:touch(sid, ttl): every key of the session lives ttl more seconds.
function Table:touch(sid, ttl)
    local dict = self.dict
    for i = 1, #KEYS do dict:expire(KEYS[i] .. sid, ttl) end
end

-- t:remove(sid): the session is gone from the dict.
function Table:remove(sid)
    local dict = self.dict
    for i = 1, #KEYS do dict:delete(KEYS[i] .. sid) end
end

return _M
