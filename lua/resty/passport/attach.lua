-- A WebSocket that an existing handler made itself (lua-resty-websocket's
-- resty.websocket.server, or any object with its methods) joins this
-- worker's registry, so that emit (from any worker or node), sockets_of,
-- filter_sockets_by_user and logout reach it as they reach the gateway's
-- own sockets.  The handler keeps its object and its recv_frame() loop:
--
--   access_by_lua_block { auth:access() }            -- ngx.ctx.passport
--   content_by_lua_block {
--       local wb = require("resty.websocket.server"):new { timeout = 5000 }
--       if not wb then return ngx.exit(444) end
--       local s = passport.attach(wb, ngx.ctx.passport)
--       while true do
--           local data, typ, err = wb:recv_frame()
--           ...                                      -- as before
--       end
--   }
--
-- data is what authorize decided for this request: ngx.ctx.passport after
-- auth:access(), or the data of auth:check(req) / auth:verify(...) when
-- they return true.  Its serialized_user and session_id are what the
-- registry indexes (only when data.user.logged_in); its _auth and _record
-- let logout put a changed session to the policy again.
--
-- The entry s is the registry's socket: s.id, s.user, s.data (both
-- replaced when logout re-runs the policy), s.state ("open", "closing",
-- "closed"); s:send(data[, binary]), s:send_ping([data]),
-- s:send_pong([data]) (queued: true | nil, err), s:close([code[,
-- reason]]), s:detach(), s:writable().  While attached, the handler
-- should write through s too: a direct wb:send_* while the writer is
-- blocked on a slow client fails ("socket busy writing").
--
-- Sends that come from elsewhere (emit in the subscriber's timer, logout
-- in timers, other requests) cannot touch the object's cosocket: they go
-- into a bounded queue that a writer light thread of the handler's own
-- request drains with wb:send_text / send_binary / send_close.  A full
-- queue closes the socket (1008), as the core does: the sender never
-- waits.  A message that the object would refuse as too large (its
-- max_payload_len) is not queued: lua-resty-websocket marks a socket
-- fatal on any failed send.
--
-- The end of the handler, whichever way it comes, takes the entry out of
-- the registry and ends the writer, so that the request can finish:
--   * a close from us (s:close, logout, overflow): the writer sends the
--     close frame, then ends; the handler's next recv_frame() sees the
--     client's reply (or an error);
--   * a failed write, or wb.fatal (the handler's own reads and writes);
--   * the handler returned: the writer waits with a timeout (CHECK) and
--     looks at the handler's coroutine;
--   * the handler's request was cut short (ngx.exit, a Lua error): nginx
--     kills the writer without running any Lua, so a per-worker sweep
--     (and any later send) notices a writer that is no longer waiting on
--     its semaphore, or stuck in one write past send_timeout;
--   * s:detach(): the handler takes the socket back (no close frame).
local registry = require "resty.passport.registry"
local frame = require "resty.passport.ws.frame"
local host = require "resty.passport.host"
local semaphore = require "ngx.semaphore"

local close_args_error = frame.close_args_error
local send_args_error = frame.send_args_error
local ngx = ngx
local get_phase = ngx.get_phase
local now = ngx.now
local spawn = ngx.thread.spawn
local thread_wait = ngx.thread.wait
local timer_at = ngx.timer.at
local worker_pid = ngx.worker.pid
-- OpenResty's coroutine.status knows the request's light threads: "dead"
-- (or "zombie" for a finished light thread) once the handler has returned
local co_running = coroutine.running
local co_status = coroutine.status
local error = error
local floor = math.floor
local next = next
local pcall = pcall
local rawget = rawget
local setmetatable = setmetatable
local tostring = tostring
local type = type

local CLOSE_NORMAL, CLOSE_POLICY = frame.CLOSE_NORMAL, frame.CLOSE_POLICY

local _M = { _VERSION = "0.1.0" }

-- How often an idle writer looks whether its handler has returned (the
-- one end nothing announces), and how often the sweep runs.
local CHECK = 1
local SWEEP = 1

-- The core's defaults (ws/socket.lua), so that both kinds of socket
-- behave alike under load.
local DEFAULTS = { max_queue = 1024, max_queue_bytes = 4194304, send_timeout = 10 }

-- The object's methods the writer calls (recv_frame is the handler's).
local METHODS = { "send_text", "send_binary", "send_close" }

-- Queue items: { kind, payload[, close code] }.  One item per message is
-- shared by every recipient of an emit on this worker (bus.lua encodes
-- once per wire), so nothing is copied per socket.
local TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 3, 4, 5
local SENDER = { [PING] = "send_ping", [PONG] = "send_pong" }

-- The "wire" bus.lua and emitter.lua encode through: a plain WebSocket
-- (messages as text or binary, events as the JSON [event, args...]), so
-- its name is "websocket" (the sockets gauge counts it there); attached
-- tells it from the core's.
local wire = {
    name = "websocket",
    attached = true,
    encode = function(data, binary)
        return { binary and BINARY or TEXT, data }
    end,
}

local Entry = { wire = wire }
Entry.__index = Entry

local attached = {}                             -- entry -> true (the sweep's)
local by_wb = setmetatable({}, { __mode = "k" }) -- wb -> its entry

---------------------------------------------------------------------------
-- The queue and its end.

-- Wakes the writer when it waits (only it waits on the semaphore: a
-- negative count).  posted tells the sweep that a count back at 0 is this
-- wake-up on its way, not a writer gone.
local function wake(s)
    local sema = s.sema
    if sema:count() < 0 then
        s.posted = true
        sema:post(1)
    end
end

-- A writer that was waiting and is no longer (nginx killed it with its
-- request): a live one waiting keeps the count at -1, or at 0 while a
-- post is on its way.
local function writer_gone(s)
    if not s.waiting then return false end
    local n = s.sema:count()
    return n > 0 or (n == 0 and not s.posted)
end

local function drop_queue(s)
    local queue = s.queue
    for i = s.q_head, s.q_tail do queue[i] = nil end
    s.q_head, s.q_tail, s.q_bytes = 1, 0, 0
end

local function push(s, item)
    local t = s.q_tail + 1
    s.q_tail = t
    s.queue[t] = item
    s.q_bytes = s.q_bytes + #item[2]
    wake(s)
end

-- The entry is done: out of the registry, nothing more written; the
-- writer, if alive, ends at its next look.
local function finish(s, why)
    if s.state ~= "closed" and why then
        host.log("info", "passport: attached socket " .. s.id .. ": " .. why)
    end
    s.state = "closed"
    registry.remove(s)
    attached[s] = nil
    drop_queue(s)
    wake(s)
end

-- Our close: the entry leaves the registry at once; the close frame goes
-- after what is queued (flush) or instead of it, past the limits.
local function begin_close(s, code, reason, flush)
    if s.state ~= "open" then return false end
    s.state = "closing"
    registry.remove(s)
    if not flush then drop_queue(s) end
    push(s, { CLOSE, reason or "", code })
    return true
end

---------------------------------------------------------------------------
-- The writer, a light thread of the handler's request.

local function write(wb, item)
    local kind = item[1]
    if kind == TEXT then return wb:send_text(item[2]) end
    if kind == BINARY then return wb:send_binary(item[2]) end
    if kind == CLOSE then return wb:send_close(item[3], item[2]) end
    return wb[SENDER[kind]](wb, item[2])
end

-- The handler's coroutine has returned.
local function ended(co)
    local st = co_status(co)
    return st == "dead" or st == "zombie"
end

local function writer(s)
    local wb, queue = s.wb, s.queue
    while s.state ~= "closed" do
        local h = s.q_head
        if h <= s.q_tail then
            local item = queue[h]
            queue[h] = nil
            s.q_head = h + 1
            s.q_bytes = s.q_bytes - #item[2]
            s.writing = now()
            -- a foreign object may raise: the entry must end all the same
            local ok, sent, err = pcall(write, wb, item)
            s.writing = nil
            if not ok or not sent then
                return finish(s, "send failed: " .. tostring(ok and err or sent))
            end
            if item[1] == CLOSE then
                -- nothing may follow a close frame; the handler reads the reply
                return finish(s)
            end
        elseif wb.fatal or ended(s.owner) then
            return finish(s)
        else
            s.waiting = true
            s.sema:wait(CHECK)
            s.waiting, s.posted = false, false
        end
    end
end

---------------------------------------------------------------------------
-- The sweep: entries whose writer nginx killed with its request.  One
-- timer per worker, running while there are entries.

local sweeping = false
local sweep

local function start_sweep()
    if sweeping then return end
    local ok, err = timer_at(SWEEP, sweep)
    if ok then
        sweeping = true
    else
        host.log("warn", "passport: attach: cannot start the sweep: " .. tostring(err))
    end
end

function sweep(premature)
    sweeping = false
    if premature then return end
    local t = now()
    for s in next, attached do
        if writer_gone(s) then
            finish(s, "its request ended")
        elseif s.writing and t - s.writing > s.opts.send_timeout then
            finish(s, "a write blocked for more than send_timeout")
        elseif s.wb.fatal then
            finish(s, "fatal error")
        end
    end
    if next(attached) then start_sweep() end
end

---------------------------------------------------------------------------
-- The entry's methods: what bus.lua, logout.lua and emitter.lua call on a
-- registry socket, and the handler's own.

-- s:send_frame(item): an item encoded by wire.encode.  Returns true, or
-- nil and "closed" / "send queue overflow" (then the socket is closing
-- with 1008) / "message too large" (the object's max_payload_len).
local function send_frame(s, item)
    if s.state ~= "open" then return nil, "closed" end
    if writer_gone(s) then
        finish(s, "its request ended")
        return nil, "closed"
    end
    local len = #item[2]
    local max = s.max_payload
    if max and len > max then return nil, "message too large" end
    local opts = s.opts
    if s.q_tail - s.q_head + 1 >= opts.max_queue or s.q_bytes + len > opts.max_queue_bytes then
        begin_close(s, CLOSE_POLICY, "send queue overflow", false)
        return nil, "send queue overflow"
    end
    push(s, item)
    return true
end
Entry.send_frame = send_frame

-- s:send(data[, binary]): queues a text (default, UTF-8) or binary
-- message.  Any request or timer of this worker may call it; the handler
-- too, so that its writes never race the writer's.
function Entry.send(s, data, binary)
    local bad = send_args_error(data, binary)
    if bad then error(bad, 2) end
    return send_frame(s, { binary and BINARY or TEXT, data })
end

-- s:send_ping([data]), s:send_pong([data]): control frames through the
-- queue too, so that a handler that writes only through its entry never
-- races the writer (a direct write while the writer is blocked on a slow
-- client fails with "socket busy writing", which lua-resty-websocket
-- treats as fatal).
local function control(s, kind, data, name)
    if data == nil then data = "" end
    if type(data) ~= "string" or #data > 125 then
        error("bad argument #1 to '" .. name .. "' (string of at most 125 bytes expected)", 3)
    end
    if type(s.wb[name]) ~= "function" then
        error("the attached object has no " .. name .. " method", 3)
    end
    return send_frame(s, { kind, data })
end

function Entry.send_ping(s, data)
    return control(s, PING, data, "send_ping")
end

function Entry.send_pong(s, data)
    return control(s, PONG, data, "send_pong")
end

-- s:close([code[, reason]]): default 1000.  The entry leaves the registry
-- at once; the writer sends the close frame after what is queued.  Any
-- context may call it.  false when already closing or closed.
function Entry.close(s, code, reason)
    local bad = close_args_error(code, reason)
    if bad then error(bad, 2) end
    return begin_close(s, code or CLOSE_NORMAL, reason, true)
end

-- s:writable(): open with nothing waiting (emitter.lua's volatile rule).
function Entry.writable(s)
    return s.state == "open" and s.q_head > s.q_tail
end

-- s:detach(): the entry leaves the registry and its writer stops, what is
-- queued is dropped, and the WebSocket stays open for the handler.
-- Called by the handler (the coroutine that attached), it returns once
-- the writer has ended (at most one write later), so that the handler
-- may write to the object directly without racing it.
function Entry.detach(s)
    finish(s)
    local thread = s.thread
    if thread and co_running() == s.owner then
        s.thread = nil
        thread_wait(thread)
    end
    return true
end

---------------------------------------------------------------------------
-- passport.attach(wb, data[, opts])

local interned = setmetatable({}, { __mode = "v" })

-- The options, checked, with the defaults; one table per set of values.
local function options(opts)
    if opts == nil then return DEFAULTS end
    if type(opts) ~= "table" then
        error("bad argument #3 to 'attach' (table expected, got " .. type(opts) .. ")", 3)
    end
    for k, v in next, opts do
        if DEFAULTS[k] == nil then
            error("bad argument #3 to 'attach' (unknown option '" .. tostring(k) .. "')", 3)
        end
        if type(v) ~= "number" or v ~= v or v <= 0 then
            error("bad option '" .. k .. "' to 'attach' (positive number expected)", 3)
        end
    end
    local q, qb, st = opts.max_queue or DEFAULTS.max_queue,
        opts.max_queue_bytes or DEFAULTS.max_queue_bytes, opts.send_timeout or DEFAULTS.send_timeout
    local id = q .. "," .. qb .. "," .. st
    local o = interned[id]
    if not o then
        o = { max_queue = q, max_queue_bytes = qb, send_timeout = st }
        interned[id] = o
    end
    return o
end

local function check_wb(wb)
    if type(wb) ~= "table" then
        error("bad argument #1 to 'attach' (a resty.websocket.server object expected, got "
              .. type(wb) .. ")", 3)
    end
    for i = 1, #METHODS do
        if type(wb[METHODS[i]]) ~= "function" then
            error("bad argument #1 to 'attach' (a resty.websocket.server object expected: no "
                  .. METHODS[i] .. " method)", 3)
        end
    end
    if wb.wire ~= nil and type(wb.send_frame) == "function" then
        error("bad argument #1 to 'attach' (a passport socket is in the registry already)", 3)
    end
    local prev = by_wb[wb]
    if prev and prev.state ~= "closed" then
        error("bad argument #1 to 'attach' (attached already: use the entry it returned)", 3)
    end
end

local function check_data(data)
    if type(data) ~= "table" or type(rawget(data, "user")) ~= "table" then
        error("bad argument #2 to 'attach' (authorize's data expected: ngx.ctx.passport after "
              .. "auth:access(), or auth:check()'s second result; got " .. type(data) .. ")", 3)
    end
    if rawget(data, "status") ~= nil then
        error("bad argument #2 to 'attach' (the data of a refused handshake)", 3)
    end
end

-- Entry ids: unique per node in practice (time and pid, as the core's),
-- and apart from the core's by their "a".
local id_prefix
local id_seq = 0

local function next_id()
    if not id_prefix then
        id_prefix = ("%x.%x.a"):format(floor(now() * 1000), worker_pid())
    end
    id_seq = id_seq + 1
    return id_prefix .. id_seq
end

local PHASES = { rewrite = true, access = true, content = true }

-- passport.attach(wb, data[, opts]) --> the entry, or nil and an error
-- when the object has already failed or the writer cannot start.  In the
-- request that made wb (its writer must live there).  opts: max_queue,
-- max_queue_bytes, send_timeout (the core's defaults).  Misuse raises.
function _M.attach(wb, data, opts)
    check_wb(wb)
    check_data(data)
    local o = options(opts)
    local phase = get_phase()
    if not PHASES[phase] then
        error("passport.attach must be called in the request that made the WebSocket, not in "
              .. tostring(phase), 2)
    end
    if wb.fatal then return nil, "the WebSocket has failed already" end
    local max = wb.max_payload_len
    local key, sid = registry.index_of(data)
    local s = setmetatable({
        id = next_id(),
        user = data.user,
        data = data,
        wb = wb,
        opts = o,
        state = "open",
        queue = {}, q_head = 1, q_tail = 0, q_bytes = 0,
        sema = semaphore.new(0),
        owner = co_running(),
        max_payload = type(max) == "number" and max or nil,
        _key = key,
        _sid = sid,
    }, Entry)
    local thread, err = spawn(writer, s)
    if not thread then
        s.state = "closed"
        return nil, "cannot start the writer: " .. tostring(err)
    end
    s.thread = thread
    by_wb[wb] = s
    -- the writer ran until its first wait: it may have found wb failed
    if s.state == "open" then
        attached[s] = true
        registry.add(s)
        start_sweep()
    end
    return s
end

return _M
