-- The gateway holds the WebSocket: passport.websocket(auth, opts) in
-- content_by_lua authorizes the handshake, answers 101 and returns a socket
-- (RFC 6455, version 13; frames parsed and encoded in C).
--
--   local socket = passport.websocket(auth, { protocols = { "chat" } })
--   if not socket then return end        -- the HTTP error was sent
--   socket:send("hello")
--   while true do
--       local msg, typ = socket:recv()   -- "text" | "binary"
--       if not msg then break end        -- nil, err, code, reason
--   end
--
-- Writes go through a bounded per-socket queue drained by a light thread of
-- the owning request, so any request or timer of this worker may send to
-- any socket (cosockets cannot cross requests).  A slow consumer fills its
-- own queue and is closed (1008); nobody else waits for it.
local ffi = require "ffi"
local core = require "resty.passport.core"
local frame = require "resty.passport.frame"
local registry = require "resty.passport.registry"
local host = require "resty.passport.host"
local authorize = require "resty.passport.authorize"
local semaphore = require "ngx.semaphore"

local C = core.C
local reasons = core.reasons
local ffi_new = ffi.new
local ffi_string = ffi.string
local accept_key = frame.accept_key
local close_payload = frame.close_payload
local parse_close = frame.parse_close
local close_code_for = frame.close_code_for
local utf8_valid = frame.utf8_valid
local ngx = ngx
local ngx_var = ngx.var
local req_socket = ngx.req.socket
local http_version = ngx.req.http_version
local get_method = ngx.req.get_method
local spawn = ngx.thread.spawn
local now = ngx.now
local worker_pid = ngx.worker.pid
local concat = table.concat
local error = error
local floor = math.floor
local find = string.find
local gmatch = string.gmatch
local ipairs = ipairs
local lower = string.lower
local pairs = pairs
local setmetatable = setmetatable
local sub = string.sub
local tostring = tostring
local tonumber = tonumber
local type = type

local _M = { _VERSION = "0.1.0" }
local socket_mt = {}
socket_mt.__index = socket_mt
_M.socket_mt = socket_mt

local DEFAULTS = {
    max_message_size = 1048576, -- bytes, after reassembly (close 1009)
    ping_interval = 30,         -- s of silence before we ping
    idle_timeout = 75,          -- s of silence before we close (1001)
    send_timeout = 10,          -- s a write may block before we give up
    close_timeout = 2,          -- s we wait for the peer's close reply
    max_queue = 1024,           -- frames waiting to be written
    max_queue_bytes = 4194304,  -- bytes waiting to be written
}

local KNOWN = {
    protocols = "table", max_message_size = "number", ping_interval = "number",
    idle_timeout = "number", send_timeout = "number", close_timeout = "number",
    max_queue = "number", max_queue_bytes = "number",
}

-- Close codes we use.
local CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_POLICY = 1000, 1001, 1008
_M.CLOSE_SESSION_ENDED = 4401

local hdr = ffi_new("rp_ws_frame")
local PING -- an empty ping frame, encoded on first use

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

-- Normalized options are interned by value: a content handler that writes
-- its options as a table literal makes a new table per request, and each
-- socket would otherwise keep its own copy.
local interned = setmetatable({}, { __mode = "v" })
local NUMERIC = { "max_message_size", "ping_interval", "idle_timeout", "send_timeout",
                  "close_timeout", "max_queue", "max_queue_bytes" }

local function check_opts(opts)
    if opts == nil then opts = {} end
    if type(opts) ~= "table" then
        error("bad argument #2 to 'websocket' (table expected, got " .. type(opts) .. ")", 3)
    end
    for k, v in pairs(opts) do
        local want = KNOWN[k]
        if not want then
            error("bad argument #2 to 'websocket' (unknown option '" .. tostring(k) .. "')", 3)
        end
        if type(v) ~= want then
            error("bad option '" .. k .. "' to 'websocket' (" .. want .. " expected, got "
                  .. type(v) .. ")", 3)
        end
        if want == "number" and (v < 0 or v ~= v) then
            error("bad option '" .. k .. "' to 'websocket' (non-negative number expected)", 3)
        end
    end
    local key = {}
    for i = 1, #NUMERIC do
        local k = NUMERIC[i]
        local v = opts[k]
        if v == nil then v = DEFAULTS[k] end
        key[i] = v
    end
    if opts.protocols then
        for _, p in ipairs(opts.protocols) do
            if type(p) ~= "string" or p == "" or find(p, "[,%s]") then
                error("bad option 'protocols' to 'websocket' (list of tokens expected)", 3)
            end
            key[#key + 1] = p
        end
    end
    local id = concat(key, ",")
    local o = interned[id]
    if o then return o end
    o = {}
    for i, k in ipairs(NUMERIC) do o[k] = key[i] end
    if opts.protocols then
        local rank = {}
        for i, p in ipairs(opts.protocols) do
            if not rank[p] then rank[p] = i end
        end
        o.protocol_rank = rank
    end
    interned[id] = o
    return o
end

---------------------------------------------------------------------------
-- The handshake.

local http_error = authorize.respond_error

local function has_token(value, token)
    if not value then return false end
    for t in gmatch(lower(value), "[^,%s]+") do
        if t == token then return true end
    end
    return false
end

-- The first of the server's protocols (in its order) that the client
-- offered; nil when none or when the server has no list.
local function pick_protocol(rank, offered)
    if not rank or not offered then return nil end
    local best, best_rank
    for p in gmatch(offered, "[^,%s]+") do
        local r = rank[p]
        if r and (not best_rank or r < best_rank) then
            best, best_rank = p, r
        end
    end
    return best
end

-- Returns nil or status, message[, headers] for a request that is not a
-- valid version-13 upgrade.  Checked before the session: no Redis round
-- trip for a request that cannot become a WebSocket.
local function bad_upgrade(var)
    if get_method() ~= "GET" then
        return 405, "WebSocket handshake must be a GET"
    end
    if http_version() ~= 1.1 then
        return 400, "WebSocket needs HTTP/1.1"
    end
    if not has_token(var.http_upgrade, "websocket") then
        return 426, "Upgrade: websocket expected", { Upgrade = "websocket" }
    end
    if not has_token(var.http_connection, "upgrade") then
        return 400, "Connection: Upgrade expected"
    end
    if var.http_sec_websocket_version ~= "13" then
        return 426, "unsupported Sec-WebSocket-Version", { ["Sec-WebSocket-Version"] = "13" }
    end
    return nil
end

---------------------------------------------------------------------------
-- Writing: the queue and its light thread.

local function enqueue(self, bytes)
    local n = self.q_tail - self.q_head + 1
    if n >= self.opts.max_queue or self.q_bytes + #bytes > self.opts.max_queue_bytes then
        return false
    end
    local t = self.q_tail + 1
    self.q_tail = t
    self.queue[t] = bytes
    self.q_bytes = self.q_bytes + #bytes
    if self.w_waiting then
        self.w_waiting = nil
        self.sema:post(1)
    end
    return true
end

-- The writer also keeps the connection alive: when it has had nothing to
-- do for ping_interval and the peer has been silent as long, it pings.
-- (Pinging from here, not from a read timeout, keeps idle sockets free of
-- timer wakeups on the read side and of "read timed out" log lines.)
local function writer(self)
    local sock = self.sock
    local queue = self.queue
    local interval = self.opts.ping_interval
    local wait = interval > 0 and interval or 300
    while true do
        while self.q_head <= self.q_tail do
            local h = self.q_head
            local bytes = queue[h]
            queue[h] = nil
            self.q_head = h + 1
            self.q_bytes = self.q_bytes - #bytes
            local ok, err = sock:send(bytes)
            if not ok then
                self.write_err = err
                self.state = "closed"
                registry.remove(self)
                return
            end
            if bytes == self.close_frame then
                return
            end
        end
        if self.state == "closed" then return end
        self.w_waiting = true
        local woken = self.sema:wait(wait)
        self.w_waiting = nil
        if not woken and interval > 0 and self.state == "open"
           and now() + 0.01 - self.last_seen >= interval then
            enqueue(self, PING)
        end
    end
end

-- One whole server frame (not masked): frame.encode, shared with bus.lua.
local encode = frame.encode
_M.encode = encode

-- Starts the close handshake: our close frame goes after what is queued,
-- the socket leaves the registry at once.
local function begin_close(self, code, reason, flush)
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
    local payload = code and close_payload(code, reason) or ""
    self.close_frame = encode(0x8, payload)
    -- the next read waits close_timeout for the peer's close frame (a read
    -- already blocked keeps its idle_timeout); no I/O, so any context may
    local ct = self.opts.close_timeout * 1000
    self.sock:settimeouts(ct, ct, ct)
    -- bypass the limits: the close frame always gets in
    local t = self.q_tail + 1
    self.q_tail = t
    self.queue[t] = self.close_frame
    if self.w_waiting then
        self.w_waiting = nil
        self.sema:post(1)
    end
    return true
end

-- A frame already encoded (emit encodes once for every recipient).
function socket_mt.send_frame(self, bytes)
    if self.state ~= "open" then
        return nil, "closed"
    end
    if not enqueue(self, bytes) then
        begin_close(self, CLOSE_POLICY, "send queue overflow")
        return nil, "send queue overflow"
    end
    return true
end

-- socket:send(data[, binary]): queues a text (default) or binary message.
-- Returns true, or nil and "closed" / "send queue overflow" (the socket is
-- then being closed with 1008).
function socket_mt.send(self, data, binary)
    if type(data) ~= "string" then
        error("bad argument #1 to 'send' (string expected, got " .. type(data) .. ")", 2)
    end
    if not binary then
        if not utf8_valid(data) then
            error("bad argument #1 to 'send' (text must be UTF-8; pass binary = true)", 2)
        end
    end
    return socket_mt.send_frame(self, encode(binary and 0x2 or 0x1, data))
end

-- socket:close([code[, reason]]): starts the close handshake (default
-- 1000).  Any context may call it; the owner's recv() then returns nil.
function socket_mt.close(self, code, reason)
    if code ~= nil and (type(code) ~= "number" or C.rp_ws_close_code_ok(code) == 0) then
        error("bad argument #1 to 'close' (valid close code expected)", 2)
    end
    if reason ~= nil and (type(reason) ~= "string" or #reason > 123) then
        error("bad argument #2 to 'close' (string of at most 123 bytes expected)", 2)
    end
    return begin_close(self, code or CLOSE_NORMAL, reason, true)
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

-- A protocol failure: close with the code for it and report.
local function fail(self, code, err)
    begin_close(self, code, nil, false)
    self.recv_err = err
    return nil, err
end

local finish

-- A protocol failure: close with its code and stop reading (nothing after
-- a bad frame can be trusted).
local function abort(self, code, err)
    fail(self, code, err)
    finish(self)
end

function finish(self)
    -- the peer is gone or done: nothing more is read or written
    self.state = "closed"
    registry.remove(self)
    if self.w_waiting then
        self.w_waiting = nil
        self.sema:post(1)
    end
end


-- One frame: opcode, fin, payload; or nil, err.
local function read_frame(self, max_len)
    local head, err = read(self, 2)
    if not head then return nil, err end
    local rc = C.rp_ws_parse_header(head, 2, 1, 0, max_len, hdr)
    if rc > 0 then
        local more
        more, err = read(self, rc)
        if not more then
            self.partial = head .. (self.partial or "")
            return nil, err
        end
        head = head .. more
        rc = C.rp_ws_parse_header(head, #head, 1, 0, max_len, hdr)
    end
    if rc < 0 then
        local why = reasons[rc] or "protocol error"
        return nil, why, close_code_for(why)
    end
    local n = tonumber(hdr.payload_len)
    local opcode, fin = hdr.opcode, hdr.fin ~= 0
    local mask = ffi_string(hdr.mask, 4)
    local payload = ""
    if n > 0 then
        -- what follows the header must not be mistaken for a new frame if a
        -- timeout splits it: keep the header with the partial payload
        local body
        body, err = read(self, n)
        if not body then
            self.partial = head .. (self.partial or "")
            return nil, err
        end
        payload = frame.unmask(body, mask)
    end
    return opcode, fin, payload
end

-- socket:recv() --> message, "text" | "binary"
--               --> nil, err, code, reason once the socket is closed
-- Answers pings, reassembles fragments, validates UTF-8, pings an idle
-- peer and closes a silent one.
function socket_mt.recv(self)
    local opts = self.opts
    while true do
        if self.state == "closed" then
            return nil, self.recv_err or "closed", self.close_code, self.close_reason
        end
        local max = opts.max_message_size - (self.frag_len or 0)
        local opcode, fin, payload = read_frame(self, max)
        if not opcode then
            local err = fin
            if err == "timeout" then
                -- reads time out only after idle_timeout (or close_timeout
                -- once closing): the peer is gone or will not answer
                if self.state == "open" then
                    if opts.idle_timeout > 0
                       and now() + 0.01 - self.last_seen >= opts.idle_timeout then
                        abort(self, CLOSE_GOING_AWAY, "idle timeout")
                    end
                else
                    finish(self)
                end
            elseif payload then -- a protocol error with its close code
                self.recv_err = err
                if self.state == "open" then
                    begin_close(self, payload, nil, false)
                end
                -- nothing after a bad frame can be trusted: stop reading
                finish(self)
            else
                -- the peer vanished (closed, reset)
                self.recv_err = self.recv_err or err
                if not self.close_code then self.close_code = 1006 end
                finish(self)
            end
        else
            self.last_seen = now()
            if opcode >= 0x8 then
                if opcode == 0x9 then -- ping
                    if self.state == "open" then enqueue(self, encode(0xA, payload)) end
                elseif opcode == 0x8 then
                    local code, reason = parse_close(payload)
                    if not code then
                        abort(self, 1002, reason)
                    else
                        self.close_reason = reason
                        if self.state == "open" then
                            -- echo the peer's code (RFC 6455 5.5.1)
                            begin_close(self, code ~= 1005 and code or nil, nil, true)
                            self.close_code = code
                        elseif not self.close_code then
                            self.close_code = code
                        end
                        finish(self)
                    end
                end
            elseif self.state ~= "open" then
                -- data after our close frame is read and dropped (RFC 6455 1.4)
                self.frags = nil
            elseif opcode == 0x0 then
                local frags = self.frags
                if not frags then
                    abort(self, 1002, "continuation without a message")
                else
                    frags[#frags + 1] = payload
                    self.frag_len = self.frag_len + #payload
                    if self.frag_text then
                        if C.rp_utf8_validate(payload, #payload, self.frag_state) < 0 then
                            abort(self, 1007, reasons[C.RP_EUTF8])
                        end
                    end
                    if fin and self.state == "open" then
                        local msg = concat(frags)
                        local text = self.frag_text
                        self.frags, self.frag_len = nil, nil
                        if text and self.frag_state[0] ~= 0 then
                            abort(self, 1007, reasons[C.RP_EUTF8])
                        else
                            return msg, text and "text" or "binary"
                        end
                    end
                end
            elseif self.frags then
                abort(self, 1002, "new message inside a fragmented one")
            else
                local text = opcode == 0x1
                if fin then
                    if text then
                        if not utf8_valid(payload) then
                            abort(self, 1007, reasons[C.RP_EUTF8])
                        else
                            return payload, "text"
                        end
                    else
                        return payload, "binary"
                    end
                else
                    self.frags = { payload }
                    self.frag_len = #payload
                    self.frag_text = text
                    if text then
                        local st = self.frag_state
                        if not st then
                            st = ffi_new("uint32_t[1]")
                            self.frag_state = st
                        end
                        st[0] = 0
                        if C.rp_utf8_validate(payload, #payload, st) < 0 then
                            abort(self, 1007, reasons[C.RP_EUTF8])
                        end
                    end
                end
            end
        end
    end
end

---------------------------------------------------------------------------
-- passport.websocket(auth, opts)

function _M.serve(auth, opts)
    if type(auth) ~= "table" or type(auth.verify) ~= "function" then
        error("bad argument #1 to 'websocket' (an authorize object expected, from "
              .. "passport.authorize{...})", 2)
    end
    opts = check_opts(opts)
    local var = ngx_var
    local status, msg, extra = bad_upgrade(var)
    if status then
        host.log("info", "passport: websocket handshake refused (" .. status .. "): " .. msg)
        return http_error(status, msg, extra)
    end
    local accept = accept_key(var.http_sec_websocket_key)
    if not accept then
        return http_error(400, "invalid Sec-WebSocket-Key")
    end

    local query_value
    if auth.query_var then
        query_value = var[auth.query_var]
        if query_value then query_value = ngx.unescape_uri(query_value) end
    end
    local ok, res, is_error, data = auth:verify(var.http_cookie, var.http_origin, query_value,
                                                nil, nil, ngx.req.get_headers,
                                                ngx.req.get_uri_args)
    if not ok then
        return authorize.reject(res, is_error, data)
    end
    data = res

    local protocol = pick_protocol(opts.protocol_rank, var.http_sec_websocket_protocol)
    local sock, err = req_socket(true)
    if not sock then
        host.log("err", "passport: websocket: no raw socket: " .. tostring(err))
        return ngx.exit(500)
    end
    local head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 .. "Connection: Upgrade\r\nSec-WebSocket-Accept: " .. accept .. "\r\n"
                 .. (protocol and "Sec-WebSocket-Protocol: " .. protocol .. "\r\n" or "")
                 .. "\r\n"
    local idle = opts.idle_timeout > 0 and opts.idle_timeout or 3600
    sock:settimeouts(opts.send_timeout * 1000, opts.send_timeout * 1000, idle * 1000)
    local sent
    sent, err = sock:send(head)
    if not sent then
        host.log("info", "passport: websocket: client gone during the handshake: " .. err)
        return ngx.exit(ngx.OK)
    end

    if not PING then PING = encode(0x9, "") end
    -- at most 16 fields at rest (one hash part of 16 slots per socket)
    local self = setmetatable({
        id = next_id(),
        user = data.user,
        data = data,
        opts = opts,
        sock = sock,
        state = "open",
        queue = {}, q_head = 1, q_tail = 0, q_bytes = 0,
        sema = semaphore.new(0),
        last_seen = now(),
        _key = registry.key_of(data.serialized_user),
        _sid = data.session_id,
    }, socket_mt)
    if protocol then self.protocol = protocol end
    local thread
    thread, err = spawn(writer, self)
    if not thread then
        host.log("err", "passport: websocket: cannot start the writer: " .. err)
        return ngx.exit(500)
    end
    registry.add(self)
    return self
end

return _M
