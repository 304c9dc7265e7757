-- Engine.IO sessions that outlive a request and whose requests land on any
-- worker: the state they share in a lua_shared_dict, the wake-ups between
-- workers, and the host timer that runs each worker's polling sessions.
--
-- Why this shape: a session's Socket.IO state is Lua closures (handlers,
-- ack callbacks, rooms), which cannot move between workers, and nginx
-- cannot route a request by sid.  So a session lives in one worker, its
-- home (the worker that answered its handshake), and the requests that
-- land elsewhere meet it in the dict:
--
--   m<sid>  "<home worker id>:<home pid>:<hash of the browser session>"
--   s<sid>  the transport's state: "p" polling, "u" upgrading, "w" upgraded
--           to a WebSocket, "c" closed (the close packet waits for a GET)
--   i<sid>  the inbox, packets for the home, and I<sid> its bytes
--   o<sid>  the outbox, packets for the client, and O<sid> its bytes
--   g<sid>  the request that takes the outbox (a pending GET, or the
--           upgraded WebSocket); P<sid> a POST, r<sid> an upgrade
--   w<wid>  a worker's wake list: "i<sid>" / "o<sid>" for its waiters
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
local find = string.find
local next = next
local pairs = pairs
local sub = string.sub
local setmetatable = setmetatable
local tonumber = tonumber

local _M = { _VERSION = "0.1.0", TICK = 0.005 }

-- This worker's side.
local waiters = {}  -- "i<sid>" / "o<sid>" -> the semaphore a thread waits on
local homes = {}    -- sid -> the session object this worker is home to
local tables = {}   -- dict name -> Table, whose wake lists the host pops
local starts, n_starts = {}, 0 -- { fn, arg } the host starts as threads
local host_sema, host_on

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

local function pop_wakes(t, wid)
    local dict, list = t.dict, "w" .. wid
    for _ = 1, 100000 do
        local key = dict:lpop(list)
        if not key then return end
        local sema = waiters[key]
        if sema and sema:count() <= 0 then sema:post(1) end
    end
end

local function host_loop(premature)
    if premature then host_on = false return end
    local wid, pid = worker_id(), worker_pid()
    local alive_at, stop_at = 0, nil
    while true do
        if n_starts > 0 then
            local list, n = starts, n_starts
            starts, n_starts = {}, 0
            for i = 1, n do
                local ok, err = spawn(list[i][1], list[i][2])
                if not ok then host.log("err", "passport: engine.io: cannot start a session: " .. err) end
            end
        end
        local t_now = now()
        for _, t in pairs(tables) do
            pop_wakes(t, wid)
            if t_now >= alive_at then t.dict:set("h" .. wid, pid, 5) end
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
        -- a wake list matters only to a worker with waiters: without any,
        -- the host rests (a new waiter wakes it) but for the liveness key
        host_sema:wait(next(waiters) ~= nil and _M.TICK or 0.5)
    end
    host_on = false
end

local function start_host()
    if host_on then return true end
    host_sema = host_sema or semaphore.new(0)
    local ok, err = timer_at(0, host_loop)
    if not ok then return nil, err end
    host_on = true
    return true
end

-- sessions.ensure_host(): this worker's host runs (its wake list is popped).
_M.ensure_host = start_host

-- sessions.run(fn, arg): fn(arg) in a light thread of the host timer, so
-- that a session outlives the request that opened it.
function _M.run(fn, arg)
    local ok, err = start_host()
    if not ok then return nil, err end
    n_starts = n_starts + 1
    starts[n_starts] = { fn, arg }
    if host_sema:count() < 0 then host_sema:post(1) end
    return true
end

function _M.add_home(s) homes[s.id] = s end
function _M.remove_home(s) if homes[s.id] == s then homes[s.id] = nil end end
function _M.home_count()
    local n = 0
    for _ in pairs(homes) do n = n + 1 end
    return n
end

---------------------------------------------------------------------------
-- Waiting and waking.

-- sessions.wait(key, timeout): waits until key is woken or timeout (s)
-- passes; true when woken.
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
    if wid == worker_id() then
        local sema = waiters[key]
        if sema and sema:count() <= 0 then sema:post(1) end
        return
    end
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

-- t:touch(sid, ttl): every key of the session lives ttl more seconds.
function Table:touch(sid, ttl)
    local dict = self.dict
    for i = 1, #KEYS do
        local k = KEYS[i]
        if k ~= "P" then dict:expire(k .. sid, ttl) end
    end
end

-- t:remove(sid): the session is gone from the dict.
function Table:remove(sid)
    local dict = self.dict
    for i = 1, #KEYS do dict:delete(KEYS[i] .. sid) end
end

return _M
