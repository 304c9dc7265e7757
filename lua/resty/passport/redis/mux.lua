-- Redis requests pipelined over connections the worker owns (nginx only):
-- a request hands its command bytes and its reader to a per-worker queue
-- and waits on a semaphore; a lane (a timer's light thread with one
-- connection) sends everything queued in one send, reads the replies in
-- order with each request's reader and posts each requester's semaphore.
--
--   local client = mux.new(conn)        -- conn: redis/conn.lua's
--   client:request(bytes, reader [, again])  --> as conn:request
--   client:command("PUBLISH", ch, msg)       --> as conn:command
--
-- Why: a cosocket allocates from its request's pool (the receive buffer,
-- the parsed address, chain buffers), which nginx frees only when the
-- request ends, and a WebSocket handshake request lives as long as its
-- socket.  A semaphore comes from the worker's semaphore blocks instead,
-- and a lane's cosocket from its timer's pool, freed when the lane ends.
--
-- The same answers as conn:request: reply | nil, err, kind, the same
-- messages, AUTH/SELECT on a fresh connection, an error reply leaving the
-- stream in step, a connection closed on any I/O or protocol error, and
-- one more try of the requests that failed before any reply byte on a
-- used connection (one the server closed while idle).  What sharing a
-- connection changes:
--   * an I/O error (a read timeout) fails every request in flight on that
--     connection, not only the slow one;
--   * after a refused reply (protocol error, a value over max_bulk) the
--     requests behind it are unread: those sent with `again` (session
--     reads) go out once more on a new connection, the others fail;
--   * read_timeout bounds a request end to end (plus connect_timeout
--     while no lane holds a connection): then its requester gives up with
--     "timeout" (kind "io") whatever the lane is doing; on the direct path
--     it bounds each read, and a reply that keeps trickling in may take
--     longer.
-- A phase where a request may not wait on a semaphore (init_worker, log,
-- header_filter, ssl_*) takes conn:request's direct path; so does a
-- request when no lane runs and no timer can be had.
--
-- Queues are per worker and per (pool name, timeouts): stores with the
-- same address, db and credentials share their lanes.  At most
-- MAX_WAITING requests wait per queue ("redis: too many requests
-- waiting" past that) and MAX_LANES lanes serve it: a second one starts
-- only while the first is busy, and work goes to an idle lane with a
-- connection first.  A lane waits keepalive_timeout for work, then closes
-- its connection and ends (a later request starts one again); a worker
-- that exits ends its lanes once their queue is empty.
local host = require "resty.passport.host"
local conn = require "resty.passport.redis.conn"

local error = error
local floor = math.floor
local pcall = pcall
local setmetatable = setmetatable
local tostring = tostring

local ngx = ngx -- nil in plain LuaJIT
local in_nginx = host.in_nginx
local phase = host.phase
local semaphore = in_nginx and require "ngx.semaphore"
local exiting = in_nginx and ngx.worker.exiting
local now = in_nginx and ngx.now
local timer_at = in_nginx and ngx.timer.at

local open = conn.open
local read_prelude = conn.read_prelude
local STALE = conn.STALE

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }

-- Phases where lua-nginx-module lets a request wait on a semaphore.
local WAITS = { rewrite = true, access = true, content = true, timer = true }

local MAX_LANES = 2       -- connections per queue: a slow reply on one
                          -- does not hold up what the other can send
local MAX_BATCH = 256     -- requests per send
-- Connections one lane opens before another timer takes over: a timer's
-- pool keeps what each connect allocated (Redis down under load).
local MAX_CONNECTS = 16
local SPARE = 64          -- semaphores kept for reuse, per queue
local TICK = 1000         -- ms: an idle lane checks ngx.worker.exiting()

-- Requests queued or in flight, per queue (read per request: a spec
-- lowers it).
_M.MAX_WAITING = 10000
_M.MAX_LANES = MAX_LANES

-- key -> queue.  A queue made in init_by_lua is copied into every worker
-- empty, with no lane: lanes start in the worker, on demand.
local queues = {}

local function queue_of(c)
    local key = c.pool_opts.pool .. "\0" .. c.connect_timeout .. "\0"
                .. c.read_timeout .. "\0" .. c.keepalive_timeout
    local q = queues[key]
    if not q then
        -- q[head..tail]: waiting requests (given-up ones are skipped);
        -- pending: requests neither answered nor given up; lanes: running
        -- or about to (starting); idle: lanes waiting for work, the most
        -- recent last; woken: lanes taken off it and posted, not yet
        -- running; connected: lanes holding a connection; spare:
        -- semaphores fit for reuse.
        q = { conn = c, head = 1, tail = 0, pending = 0, lanes = 0,
              starting = 0, woken = 0, connected = 0, idle = {}, spare = {},
              nspare = 0 }
        queues[key] = q
    end
    return q
end

-- c: a conn (redis/conn.lua) made inside nginx.
function _M.new(c)
    if not in_nginx then
        error("redis multiplexing needs nginx", 2)
    end
    return setmetatable({ conn = c, reader = c.reader, addr = c.addr,
                          q = queue_of(c) }, mt)
end

---------------------------------------------------------------------------
-- The queue.

-- Drops given-up requests at the head; true when a live one is left.
local function has_work(q)
    local head, tail = q.head, q.tail
    while head <= tail and q[head].done do
        q[head] = nil
        head = head + 1
    end
    if head > tail then
        q.head, q.tail = 1, 0
        return false
    end
    q.head = head
    return true
end

local function pop(q)
    if not has_work(q) then
        return nil
    end
    local head = q.head
    local e = q[head]
    q[head] = nil
    if head == q.tail then
        q.head, q.tail = 1, 0
    else
        q.head = head + 1
    end
    return e
end

-- Hands a request its answer (unless its requester gave up).
local function deliver(q, e, v, err, kind)
    if not e.done then
        e.done = true
        e.v, e.err, e.kind = v, err, kind
        q.pending = q.pending - 1
        e.sema:post(1)
    end
end

local function fail_queued(q, err, kind)
    local e = pop(q)
    while e do
        deliver(q, e, nil, err, kind)
        e = pop(q)
    end
end

---------------------------------------------------------------------------
-- Lanes.

local lane_main -- below

-- Gets a lane to look at the queue: the one that went idle last (one
-- with a connection first), else a new one unless one is on its way or
-- there are MAX_LANES.  true, or nil and why no timer could be had.
local function kick(q)
    local idle = q.idle
    local n = #idle
    if n > 0 then
        local k = n
        while k > 1 and not idle[k].sock do k = k - 1 end
        if not idle[k].sock then k = n end
        local lane = idle[k]
        idle[k] = idle[n]
        idle[n] = nil
        q.woken = q.woken + 1
        lane.sema:post(1)
        return true
    end
    if q.starting > 0 or q.woken > 0 or q.lanes >= MAX_LANES then
        return true
    end
    local ok, err = timer_at(0, lane_main, q)
    if not ok then
        return nil, err
    end
    q.lanes = q.lanes + 1
    q.starting = q.starting + 1
    return true
end

local function close(q, lane)
    lane.sock:close()
    lane.sock = nil
    q.connected = q.connected - 1
end

-- The batch's requests from..n, unanswered after the connection broke:
-- each goes out once more (at the head of the queue, in order) if it may
-- (again: only those sent with `again`), else fails with err, kind.
local function resend(q, lane, from, err, kind, again)
    local batch, n = lane.batch, lane.n
    local head = q.head
    for i = n, from, -1 do
        local e = batch[i]
        if e.retried or (again and not e.again) then
            deliver(q, e, nil, err, kind)
        elseif not e.done then
            e.retried = true
            head = head - 1
            q[head] = e
        end
    end
    q.head = head
end

local function fail(q, lane, from, err, kind)
    local batch = lane.batch
    for i = from, lane.n do
        deliver(q, batch[i], nil, err, kind)
    end
end

local function clear(t, n)
    for i = 1, n do t[i] = nil end
end

-- One batch over lane.sock: everything queued (up to MAX_BATCH) in one
-- send, then each reply read with its request's reader.
local function exchange(q, lane)
    local c, sock = q.conn, lane.sock
    local batch, out = lane.batch, lane.out
    local n, k = 0, 0
    local prelude = lane.prelude
    if prelude then
        k = 1
        out[1] = prelude
    end
    while n < MAX_BATCH do
        local e = pop(q)
        if not e then break end
        n = n + 1
        batch[n] = e
        k = k + 1
        out[k] = e.bytes
    end
    lane.n = n
    if n == 0 then
        clear(out, k)
        return
    end
    local ok, err = sock:send(out)
    clear(out, k)
    if not ok then
        close(q, lane)
        if lane.used and STALE[err] then
            resend(q, lane, 1, err, "send")
        else
            fail(q, lane, 1, err, "send")
        end
    elseif prelude then
        ok, err = read_prelude(c, sock) -- closes sock on a failure
        if ok then
            lane.prelude = nil
        else
            lane.sock = nil
            q.connected = q.connected - 1
            fail(q, lane, 1, err, "setup")
        end
    end
    if lane.sock then
        for i = 1, n do
            local e = batch[i]
            local v, rerr, kind, begun = e.reader:read(sock)
            if v == nil then
                close(q, lane)
                if i == 1 and kind == "io" and not begun and lane.used
                   and STALE[rerr] then
                    resend(q, lane, 1, rerr, kind)
                else
                    deliver(q, e, nil, rerr, kind)
                    if kind == "protocol" then
                        -- the replies behind it are unread, not lost
                        resend(q, lane, i + 1, "closed after a refused "
                               .. "reply (" .. rerr .. ")", "io", true)
                    else
                        fail(q, lane, i + 1, rerr, kind)
                    end
                end
                break
            end
            deliver(q, e, v)
        end
        if lane.sock then
            lane.used = true
        end
    end
    clear(batch, n)
    lane.n = 0
end

-- Takes lane off the idle list; false when it was not on it.
local function unlist(idle, lane)
    for i = #idle, 1, -1 do
        if idle[i] == lane then
            idle[i] = idle[#idle]
            idle[#idle] = nil
            return true
        end
    end
    return false
end

-- Waits for work: true when some came, false after keepalive_timeout
-- without any (0: no limit) or once the worker is exiting.
local function wait_for_work(q, lane)
    local keep = q.conn.keepalive_timeout
    local deadline = now() * 1000 + keep
    local idle = q.idle
    while not exiting() do
        local ms = TICK
        if keep > 0 then
            -- whole ms, and done under 2: a wait of 0 ms returns at once
            -- without yielding, and ngx.now() moves only when the event
            -- loop runs, so the loop would never see the time pass
            ms = floor(deadline - now() * 1000)
            if ms < 2 then return false end
            if ms > TICK then ms = TICK end
        end
        idle[#idle + 1] = lane
        lane.sema:wait(ms / 1000)
        if not unlist(idle, lane) then -- kick took it off, and woke it
            q.woken = q.woken - 1
        end
        if has_work(q) then
            return true
        end
    end
    return false
end

-- A lane's life: connect when there is work, exchange batches, reconnect
-- after an error while work is waiting; ends when idle or after
-- MAX_CONNECTS connections (lane_main then starts another if needed).
local function run(q, lane)
    local c = q.conn
    local connects = 0
    while true do
        if not has_work(q) then
            -- idle, with or without a connection: a lane that ended here
            -- would be started again by the next request, and a timer's
            -- start and end cost more than its wait
            if not wait_for_work(q, lane) then
                break
            end
        elseif lane.sock then
            exchange(q, lane)
        elseif connects == MAX_CONNECTS then
            break
        else
            connects = connects + 1
            local sock, err = open(c, c.pool_opts, c.read_timeout)
            if sock then
                lane.sock = sock
                q.connected = q.connected + 1
                -- from the pool: used before, and no prelude
                lane.used = sock:getreusedtimes() > 0
                lane.prelude = not lane.used and c.prelude or nil
            else
                -- each of them would have failed to connect just the same
                fail_queued(q, err, "setup")
            end
        end
    end
    if lane.sock then
        close(q, lane)
    end
end

lane_main = function(_, q)
    q.starting = q.starting - 1
    local lane = { batch = {}, out = {}, n = 0 }
    local ok, err = pcall(function()
        lane.sema = assert(semaphore.new())
        run(q, lane)
    end)
    if not ok then
        host.log("err", "passport: redis lane: " .. tostring(err))
        if lane.sock then close(q, lane) end
        fail(q, lane, 1, "redis: " .. tostring(err), "setup")
        unlist(q.idle, lane)
    end
    q.lanes = q.lanes - 1
    if has_work(q) then -- left by MAX_CONNECTS, or come in just now
        local started
        started, err = kick(q)
        if not started and q.lanes == 0 then
            fail_queued(q, "redis: no timer for a Redis connection: "
                           .. tostring(err), "setup")
        end
    end
end

---------------------------------------------------------------------------
-- Requests.

local function take_sema(q)
    local n = q.nspare
    if n > 0 then
        local s = q.spare[n]
        q.spare[n] = nil
        q.nspare = n - 1
        return s
    end
    return semaphore.new()
end

-- Only a semaphore whose one post was taken by its wait is reused: one
-- given up on may still be posted, and its count would wake a later
-- requester early.
local function give_sema(q, s)
    local n = q.nspare
    if n < SPARE then
        n = n + 1
        q.spare[n] = s
        q.nspare = n
    end
end

-- conn:request's contract: bytes (a string or a table of strings, as
-- sock:send takes them) and a reader; the reply | nil, err, kind.  again:
-- the command may be sent once more after a refused reply ahead of it
-- broke the connection (a read; not a PUBLISH).
function _M.request(self, bytes, reader, again)
    if not WAITS[phase()] then
        return self.conn:request(bytes, reader)
    end
    local q = self.q
    if q.pending >= _M.MAX_WAITING then
        return nil, "redis: too many requests waiting", "setup"
    end
    local sema, err = take_sema(q)
    if not sema then
        return nil, "redis: " .. tostring(err), "setup"
    end
    local e = { bytes = bytes, reader = reader, sema = sema, again = again }
    local tail = q.tail + 1
    q[tail] = e
    q.tail = tail
    q.pending = q.pending + 1
    if not kick(q) and q.lanes == 0 then
        -- no lane, and no timer for one: this request goes on its own
        q[tail] = nil
        q.tail = tail - 1
        q.pending = q.pending - 1
        give_sema(q, sema)
        return self.conn:request(bytes, reader)
    end
    -- read_timeout bounds the request end to end, whatever is ahead of
    -- it; connect_timeout more while no lane holds a connection
    local c = self.conn
    local ms = c.read_timeout
    if q.connected == 0 then
        ms = ms + c.connect_timeout
    end
    local waited
    waited, err = sema:wait(ms / 1000)
    if e.done then -- answered, perhaps just as the wait timed out
        if waited then give_sema(q, sema) end
        return e.v, e.err, e.kind
    end
    -- given up: a lane skips it, or reads its reply and drops it
    e.done = true
    q.pending = q.pending - 1
    if err == "timeout" then
        return nil, "timeout", "io"
    end
    return nil, "redis: " .. tostring(err), "setup"
end

-- One command, as conn:command (never sent twice: see `again`).
_M.command = conn.command

return _M
