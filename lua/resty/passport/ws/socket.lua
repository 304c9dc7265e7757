-- The socket core every protocol on a WebSocket sits on (plain WebSocket
-- now, Engine.IO next): the raw connection of a content handler, a bounded
-- send queue drained by a writer light thread, a frame reader that
-- survives partial reads and timeouts, fragment reassembly, UTF-8 checks,
-- pings for an idle peer, the close handshake, and the registry entry.
--
-- The seam: the core reads and writes whole messages; a protocol (a
-- "wire", shared by all its sockets) says what a message means and how an
-- outgoing one is encoded.
--
--   local class = socket.class {
--       name = "websocket",                        -- for log lines
--       encode = function(data, binary) ... end,   --> bytes for the queue
--       ping = bytes,                              -- the keepalive
--       message = function(s, msg, typ) ... end,   -- optional: --> msg, typ
--                                                  --    for recv(), or nil
--       heartbeat = true,   -- optional: ping every ping_interval whatever
--                           -- the traffic, close when no s:pong() came
--                           -- within ping_timeout (Engine.IO's rule)
--       register = false,   -- optional: the registry holds what the
--                           -- protocol builds on the socket, not the socket
--       silent_close = true, -- optional: close() without a code sends a
--   }                        -- close frame without a status (as npm ws does)
--   local s = socket.open(class, opts, data, head[, subprotocol])
--
-- A socket's metatable is its class, so it pays no field for its protocol:
-- s.wire is the protocol, read through the metatable.  A protocol may add
-- methods to its class.
--
-- Writes go through the queue, so any request or timer of this worker may
-- send to any socket (cosockets cannot cross requests).  A slow consumer
-- fills its own queue and is closed (1008); nobody else waits for it.
local frame = require "resty.passport.ws.frame"
local registry = require "resty.passport.registry"
local host = require "resty.passport.host"
local semaphore = require "ngx.semaphore"

local client_header = frame.client_header
local close_args_error = frame.close_args_error
local close_payload = frame.close_payload
local encode = frame.encode
local parse_close = frame.parse_close
local send_args_error = frame.send_args_error
local unmask = frame.unmask
local utf8_valid = frame.utf8_valid
local new_utf8 = frame.utf8
local ngx = ngx
local req_socket = ngx.req.socket
local spawn = ngx.thread.spawn
local now = ngx.now
local worker_pid = ngx.worker.pid
local concat = table.concat
local error = error
local floor = math.floor
local pairs = pairs
local setmetatable = setmetatable
local sub = string.sub
local tostring = tostring
local type = type

local CONTINUATION, TEXT = frame.CONTINUATION, frame.TEXT
local CLOSE, PING, PONG = frame.CLOSE, frame.PING, frame.PONG
local CLOSE_NORMAL, CLOSE_GOING_AWAY = frame.CLOSE_NORMAL, frame.CLOSE_GOING_AWAY
local CLOSE_PROTOCOL_ERROR, CLOSE_POLICY = frame.CLOSE_PROTOCOL_ERROR, frame.CLOSE_POLICY
local CLOSE_INVALID_DATA, CLOSE_NO_STATUS = frame.CLOSE_INVALID_DATA, frame.CLOSE_NO_STATUS
local CLOSE_TOO_BIG = frame.CLOSE_TOO_BIG
local CLOSE_ABNORMAL = frame.CLOSE_ABNORMAL
local INVALID_UTF8 = frame.INVALID_UTF8

local _M = { _VERSION = "0.1.0" }

---------------------------------------------------------------------------
-- Options, checked and interned by value: a content handler that writes
-- its options as a table literal makes a new table per request, and each
-- socket would otherwise keep its own copy.

local DEFAULTS = {
    max_message_size = 1048576, -- bytes, after reassembly (close 1009)
    max_fragments = 1024,       -- frames per message (close 1009)
    ping_interval = 30,         -- s of silence before we ping
    idle_timeout = 75,          -- s of silence before we close (1001)
    send_timeout = 10,          -- s a write may block before we give up
    close_timeout = 2,          -- s we wait for the peer's close reply
    max_queue = 1024,           -- frames waiting to be written
    max_queue_bytes = 4194304,  -- bytes waiting to be written
    ping_timeout = 20,          -- s for a pong, for a protocol with a heartbeat
}
local NUMERIC = { "max_message_size", "max_fragments", "ping_interval", "idle_timeout",
                  "send_timeout", "close_timeout", "max_queue", "max_queue_bytes",
                  "ping_timeout" }

-- What each continuation frame counts toward max_message_size besides its
-- payload: the least a client frame takes on the wire (2 header bytes and
-- the mask), so that a peer cannot send empty fragments for free.
local FRAGMENT_COST = 6

local interned = setmetatable({}, { __mode = "v" })
local NONE = {}

local function check_option(fname, k, v, want)
    if not want then
        error("bad argument #2 to '" .. fname .. "' (unknown option '" .. tostring(k) .. "')", 4)
    end
    if type(v) ~= want then
        error("bad option '" .. k .. "' to '" .. fname .. "' (" .. want .. " expected, got "
              .. type(v) .. ")", 4)
    end
    if want == "number" and (v < 0 or v ~= v) then
        error("bad option '" .. k .. "' to '" .. fname .. "' (non-negative number expected)", 4)
    end
end

-- socket.options(opts, fname, extra) --> the core's options, shared by
-- every socket given the same values.  extra: the protocol's own options
-- (name -> type), checked here and left to the protocol.  Misuse raises
-- for the caller of fname.
function _M.options(opts, fname, extra)
    if opts == nil then opts = NONE end
    if type(opts) ~= "table" then
        error("bad argument #2 to '" .. fname .. "' (table expected, got " .. type(opts) .. ")", 3)
    end
    for k, v in pairs(opts) do
        check_option(fname, k, v, DEFAULTS[k] and "number" or extra and extra[k])
    end
    local mf = opts.max_fragments
    if mf ~= nil and (mf < 1 or mf % 1 ~= 0) then
        error("bad option 'max_fragments' to '" .. fname .. "' (positive integer expected)", 3)
    end
    local key = {}
    for i = 1, #NUMERIC do
        local v = opts[NUMERIC[i]]
        if v == nil then v = DEFAULTS[NUMERIC[i]] end
        key[i] = v
    end
    local id = concat(key, ",")
    local o = interned[id]
    if not o then
        o = {}
        for i = 1, #NUMERIC do o[NUMERIC[i]] = key[i] end
        interned[id] = o
    end
    return o
end

---------------------------------------------------------------------------
-- Writing: the queue and its light thread.

-- Wakes the writer if it waits (a negative count: a thread waiting, and
-- only the writer waits on it; no flag on the socket for that).
local function wake_writer(self)
    local sema = self.sema
    if sema:count() < 0 then sema:post(1) end
end

local function push(self, bytes)
    local t = self.q_tail + 1
    self.q_tail = t
    self.queue[t] = bytes
    self.q_bytes = self.q_bytes + #bytes
    wake_writer(self)
end

local function enqueue(self, bytes)
    local n = self.q_tail - self.q_head + 1
    if n >= self.opts.max_queue or self.q_bytes + #bytes > self.opts.max_queue_bytes then
        return false
    end
    push(self, bytes)
    return true
end

-- Writes what is queued, all of it in one send (a socket.io connect's
-- CONNECT and first event are one write, not two); false once the socket
-- is done writing.
local function drain(self)
    local sock, queue = self.sock, self.queue
    while self.q_head <= self.q_tail do
        local close_frame = self.close_frame -- set while a send yields
        local h, t = self.q_head, self.q_tail
        local out, bytes, closing
        if h == t then
            out = queue[h]
            queue[h] = nil
            bytes = #out
            closing = out == close_frame
        else
            out, bytes = {}, 0
            for i = h, t do
                local b = queue[i]
                queue[i] = nil
                out[i - h + 1] = b
                bytes = bytes + #b
                if b == close_frame then
                    closing, t = true, i
                    break
                end
            end
        end
        self.q_head = t + 1
        self.q_bytes = self.q_bytes - bytes
        local ok, err = sock:send(out)
        if not ok then
            self.write_err = err
            self.state = "closed"
            registry.remove(self)
            return false
        end
        if closing then
            return false
        end
    end
    return self.state ~= "closed"
end

-- The heartbeat of a protocol that has one: a ping every ping_interval
-- whatever else is sent, and the socket closed when the pong is not back
-- within ping_timeout.  self.beat is the time of the next ping while none
-- is out, minus the pong's deadline while one is (one field for both).
local begin_close

local function heartbeat_writer(self)
    local opts = self.opts
    local interval, timeout = opts.ping_interval, opts.ping_timeout
    self.beat = now() + interval
    while drain(self) do
        local beat = self.beat
        local wait = (beat < 0 and -beat or beat) - now()
        local woken = self.sema:wait(wait > 0.001 and wait or 0.001)
        if not woken and self.state == "open" then
            beat = self.beat
            local t = now() + 0.001
            if beat < 0 and t >= -beat then
                self.recv_err = "ping timeout"
                begin_close(self, not self.wire.silent_close and CLOSE_NORMAL or nil, nil, false)
            elseif beat > 0 and t >= beat then
                enqueue(self, self.wire.ping)
                self.beat = -(t + timeout)
            end
        end
    end
end

-- The writer also keeps the connection alive: when it has had nothing to
-- do for ping_interval and the peer has been silent as long, it pings.
-- (Pinging from here, not from a read timeout, keeps idle sockets free of
-- timer wakeups on the read side and of "read timed out" log lines.)
local function writer(self)
    if self.wire.heartbeat then return heartbeat_writer(self) end
    local interval = self.opts.ping_interval
    local wait = interval > 0 and interval or 300
    while drain(self) do
        local woken = self.sema:wait(wait)
        if not woken and interval > 0 and self.state == "open"
           and now() + 0.01 - self.last_seen >= interval then
            enqueue(self, self.wire.ping)
        end
    end
end

-- Starts the close handshake: our close frame goes after what is queued,
-- the socket leaves the registry at once.
function begin_close(self, code, reason, flush)
    if self.state ~= "open" then return false end
    self.state = "closing"
    self.close_code = code
    registry.remove(self)
    if not flush then
        -- drop what is waiting: a socket closed for its queue must not wait
        -- for that queue
        for i = self.q_head, self.q_tail do self.queue[i] = nil end
        self.q_head, self.q_tail, self.q_bytes = 1, 0, 0
    end
    self.close_frame = encode(CLOSE, close_payload(code, reason))
    -- the next read waits close_timeout for the peer's close frame (a read
    -- already blocked keeps its idle_timeout); no I/O, so any context may
    local ct = self.opts.close_timeout * 1000
    self.sock:settimeouts(ct, ct, ct)
    push(self, self.close_frame) -- past the limits: the close frame always gets in
    return true
end

-- The peer is gone or done: nothing more is read or written.
local function finish(self)
    self.state = "closed"
    registry.remove(self)
    wake_writer(self)
end

-- A protocol failure: close with its code and stop reading (nothing after
-- a bad frame can be trusted).  Returns nothing, for the reader's loop.
local function abort(self, code, err)
    begin_close(self, code, nil, false)
    self.recv_err = err
    finish(self)
end

---------------------------------------------------------------------------
-- Reading.

-- Reads exactly n bytes.  A read timeout returns nil, "timeout" with what
-- arrived kept in self.partial for the next call, so a ping can be sent
-- in between without losing stream position.
local function read(self, n)
    local sock = self.sock
    local have = self.partial
    if have then
        self.partial = nil
        if #have >= n then
            if #have > n then self.partial = sub(have, n + 1) end
            return sub(have, 1, n)
        end
        local more, err, part = sock:receive(n - #have)
        if not more then
            self.partial = have .. (part or "")
            return nil, err
        end
        return have .. more
    end
    local data, err, part = sock:receive(n)
    if not data then
        if part and part ~= "" then self.partial = part end
        return nil, err
    end
    return data
end

-- Reads the n bytes that follow head.  On a timeout, head goes back in
-- front of what arrived, so the next read starts the frame over.
local function read_after(self, head, n)
    local more, err = read(self, n)
    if not more then
        self.partial = head .. (self.partial or "")
    end
    return more, err
end

-- One frame: opcode, fin, payload; or nil, err[, close code].
local function read_frame(self, max_len)
    local head, err = read(self, 2)
    if not head then return nil, err end
    local opcode, fin, n, mask = client_header(head, max_len)
    if fin == "need" then
        local more
        more, err = read_after(self, head, n)
        if not more then return nil, err end
        head = head .. more
        opcode, fin, n, mask = client_header(head, max_len)
    end
    if not opcode then
        return nil, fin, n -- reason, close code
    end
    local payload = ""
    if n > 0 then
        -- what follows the header must not be mistaken for a new frame if a
        -- timeout splits it: the header stays with the partial payload
        local body
        body, err = read_after(self, head, n)
        if not body then return nil, err end
        payload = unmask(body, mask)
    end
    return opcode, fin, payload
end

-- What a failed read means: a silent peer, a protocol error (with its
-- close code), or a peer gone.
local function read_failed(self, err, code)
    if err == "timeout" then
        -- reads time out only after idle_timeout (or close_timeout once
        -- closing): the peer is gone or will not answer
        if self.state ~= "open" then
            finish(self)
        elseif self.opts.idle_timeout > 0
               and now() + 0.01 - self.last_seen >= self.opts.idle_timeout then
            abort(self, CLOSE_GOING_AWAY, "idle timeout")
        elseif self.recv_timeout then
            -- a caller's own read timeout (set_timeout): it hears of it
            return "timeout"
        end
    elseif code then
        abort(self, code, err)
    else
        -- the peer vanished (closed, reset)
        self.recv_err = self.recv_err or err
        if not self.close_code then self.close_code = CLOSE_ABNORMAL end
        finish(self)
    end
end

-- A control frame: pings are answered, pongs ignored, a close ends it.
local function control(self, opcode, payload)
    if opcode == PING then
        if self.state == "open" then enqueue(self, encode(PONG, payload)) end
    elseif opcode == CLOSE then
        local code, reason = parse_close(payload)
        if not code then
            return abort(self, CLOSE_PROTOCOL_ERROR, reason)
        end
        self.close_reason = reason
        if self.state == "open" then
            -- echo the peer's code (RFC 6455 5.5.1)
            begin_close(self, code ~= CLOSE_NO_STATUS and code or nil, nil, true)
            self.close_code = code
        elseif not self.close_code then
            self.close_code = code
        end
        finish(self)
    end
end

-- A fragmented message: self.frags, its payloads (an empty one takes no
-- slot, so a slot holds at least a byte and there are at most
-- max_fragments of them; a string.buffer measured 1.6 to 45 times slower
-- to reassemble with), self.frag_len, its payload so far plus
-- FRAGMENT_COST per continuation frame, and self.frag_n, its frames.  A
-- message that would need more than max_fragments frames is closed as soon
-- as that is certain.

-- A continuation frame: the whole message once fin, else nil.
local function continuation(self, fin, payload)
    local frags = self.frags
    if not frags then
        return abort(self, CLOSE_PROTOCOL_ERROR, "continuation without a message")
    end
    local n, opts = self.frag_n + 1, self.opts
    local len = self.frag_len + #payload + FRAGMENT_COST
    if len > opts.max_message_size then
        return abort(self, CLOSE_TOO_BIG, "message too large")
    elseif n >= opts.max_fragments and not fin then
        return abort(self, CLOSE_TOO_BIG, "too many fragments")
    end
    if payload ~= "" then frags[#frags + 1] = payload end
    self.frag_len, self.frag_n = len, n
    local utf8 = self.frag_utf8
    if utf8 and not utf8:feed(payload) then
        return abort(self, CLOSE_INVALID_DATA, INVALID_UTF8)
    end
    if not fin then return nil end
    self.frags, self.frag_len, self.frag_n, self.frag_utf8 = nil, nil, nil, nil
    if utf8 and not utf8:finish() then
        return abort(self, CLOSE_INVALID_DATA, INVALID_UTF8)
    end
    return concat(frags), utf8 and "text" or "binary"
end

-- A data frame: the whole message once it is complete, else nil.
local function data_frame(self, opcode, fin, payload)
    if self.state ~= "open" then
        -- data after our close frame is read and dropped (RFC 6455 1.4)
        self.frags, self.frag_len, self.frag_n, self.frag_utf8 = nil, nil, nil, nil
        return nil
    end
    if opcode == CONTINUATION then
        return continuation(self, fin, payload)
    elseif self.frags then
        return abort(self, CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
    end
    local text = opcode == TEXT
    if fin then
        if text and not utf8_valid(payload) then
            return abort(self, CLOSE_INVALID_DATA, INVALID_UTF8)
        end
        return payload, text and "text" or "binary"
    end
    if self.opts.max_fragments < 2 then
        return abort(self, CLOSE_TOO_BIG, "too many fragments")
    end
    self.frags, self.frag_len, self.frag_n = { payload }, #payload, 1
    if text then
        local utf8 = new_utf8()
        self.frag_utf8 = utf8
        if not utf8:feed(payload) then
            return abort(self, CLOSE_INVALID_DATA, INVALID_UTF8)
        end
    end
end

---------------------------------------------------------------------------
-- The methods every socket has.

local methods = {}

-- socket:recv() --> message, "text" | "binary" (or what the protocol makes
-- of it) | nil, err, code, reason once the socket is closed (or nil,
-- "timeout" after a set_timeout's wait, the socket still open).  Answers
-- pings, reassembles fragments, validates UTF-8 and closes a silent peer.
-- (One loop here, not a helper per message: an idle socket rests inside
-- this call chain, and each frame of it is coroutine stack it keeps.)
function methods.recv(self)
    while self.state ~= "closed" do
        local max = self.opts.max_message_size - (self.frag_len or 0)
        local opcode, fin, payload = read_frame(self, max)
        if not opcode then
            if read_failed(self, fin, payload) then return nil, "timeout" end
        else
            self.last_seen = now()
            if opcode >= CLOSE then
                control(self, opcode, payload)
            else
                local msg, typ = data_frame(self, opcode, fin, payload)
                local message = msg and self.wire.message
                if message then msg, typ = message(self, msg, typ) end
                if msg ~= nil then return msg, typ end
            end
        end
    end
    return nil, self.recv_err or "closed", self.close_code, self.close_reason
end

-- socket:send_frame(bytes): bytes already encoded by this socket's wire
-- (emit encodes once per protocol for every recipient).  Returns true, or
-- nil and "closed" / "send queue overflow" (the socket is then being
-- closed with 1008).
local function send_frame(self, bytes)
    if self.state ~= "open" then
        return nil, "closed"
    end
    if not enqueue(self, bytes) then
        begin_close(self, CLOSE_POLICY, "send queue overflow")
        return nil, "send queue overflow"
    end
    return true
end
methods.send_frame = send_frame

-- socket:send(data[, binary]): queues a text (default) or binary message.
function methods.send(self, data, binary)
    local bad = send_args_error(data, binary)
    if bad then error(bad, 2) end
    return send_frame(self, self.wire.encode(data, binary))
end

-- socket:close([code[, reason]]): starts the close handshake (default
-- 1000, or no status code for a silent_close protocol).  Any context may call it; the owner's recv() then returns nil.
function methods.close(self, code, reason)
    local bad = close_args_error(code, reason)
    if bad then error(bad, 2) end
    if code == nil and self.wire.silent_close then
        return begin_close(self, nil, nil, true)
    end
    return begin_close(self, code or CLOSE_NORMAL, reason, true)
end

-- socket:writable(): open with nothing waiting to be written (a volatile
-- message is for such sockets only).
function methods.writable(self)
    return self.state == "open" and self.q_head > self.q_tail
end

-- socket:pong(): the heartbeat's answer came (a protocol's message hook
-- calls it); the next ping is ping_interval from now.
function methods.pong(self)
    local beat = self.beat
    if beat and beat < 0 then self.beat = now() + self.opts.ping_interval end
end

-- socket.class(wire) --> the metatable of wire's sockets.
function _M.class(wire)
    if type(wire) ~= "table" or type(wire.encode) ~= "function" or type(wire.ping) ~= "string" then
        error("bad argument #1 to 'class' (a protocol with encode and ping expected)", 2)
    end
    local class = { wire = wire }
    for k, f in pairs(methods) do class[k] = f end
    class.__index = class
    return class
end

---------------------------------------------------------------------------
-- Opening.

-- Socket ids: unique per worker and, with the pid and start time, across
-- workers and nodes in practice.
local id_prefix
local id_seq = 0

local function next_id()
    if not id_prefix then
        id_prefix = ("%x.%x."):format(floor(now() * 1000), worker_pid())
    end
    id_seq = id_seq + 1
    return id_prefix .. id_seq
end

-- socket.open(class, opts, data, head[, subprotocol[, id]]) in content_by_lua,
-- once the protocol's handshake checks and auth have passed: takes the
-- request's connection, writes head (the handshake's answer) and returns
-- the socket.  data is what auth saw (data.user, data.serialized_user,
-- data.session_id); the registry indexes the socket under what
-- data.user.logged_in vouches for (registry.index_of).  When the
-- connection cannot be had, it ends the request (500, or quietly when the
-- client is gone) and does not return.
function _M.open(class, opts, data, head, subprotocol, id)
    local name = class.wire.name
    local sock, err = req_socket(true)
    if not sock then
        host.log("err", "passport: " .. name .. ": no raw socket: " .. tostring(err))
        return ngx.exit(500)
    end
    local idle = opts.idle_timeout > 0 and opts.idle_timeout or 3600
    sock:settimeouts(opts.send_timeout * 1000, opts.send_timeout * 1000, idle * 1000)
    local sent
    sent, err = sock:send(head)
    if not sent then
        host.log("info", "passport: " .. name .. ": client gone during the handshake: " .. err)
        return ngx.exit(ngx.OK)
    end
    -- at most 16 fields at rest (one hash part of 16 slots per socket):
    -- these 14, _slot (the registry's) and protocol when one was chosen
    local key, sid = registry.index_of(data)
    local self = setmetatable({
        id = id or next_id(),
        user = data.user,
        data = data,
        opts = opts,
        sock = sock,
        state = "open",
        queue = {}, q_head = 1, q_tail = 0, q_bytes = 0,
        sema = semaphore.new(0),
        last_seen = now(),
        _key = key,
        _sid = sid,
    }, class)
    if subprotocol then self.protocol = subprotocol end
    local thread
    thread, err = spawn(writer, self)
    if not thread then
        host.log("err", "passport: " .. name .. ": cannot start the writer: " .. err)
        return ngx.exit(500)
    end
    if class.wire.register ~= false then registry.add(self) end
    return self
end

return _M
