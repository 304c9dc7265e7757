-- Engine.IO's HTTP long-polling transport, for sessions whose requests
-- land on any worker (engineio/sessions.lua holds what they share).
--
-- The session itself (the object the layer above writes to with
-- send_frame and close, and hears from through a handler) lives in its
-- home worker; a GET takes its outbox, a POST fills its inbox, from
-- whatever worker, and the home's runners (sessions.schedule) hand its
-- messages to the handler.  It takes what the WebSocket core's sockets
-- take (WebSocket frames), so Socket.IO cannot tell them apart.
local bit = require "bit"
local frame = require "resty.passport.ws.frame"
local payload = require "resty.passport.engineio.payload"
local sessions = require "resty.passport.engineio.sessions"
local deadlines = require "resty.passport.deadlines"
local registry = require "resty.passport.registry"
local host = require "resty.passport.host"

local band = bit.band
local ngx = ngx
local md5 = ngx.md5
local now = ngx.now
local exiting = ngx.worker.exiting
local byte = string.byte
local concat = table.concat
local lower = string.lower
local pairs = pairs
local pcall = pcall
local rawget = rawget
local setmetatable = setmetatable
local sub = string.sub
local tonumber = tonumber
local tostring = tostring

local BINARY = frame.BINARY
local to_base64 = payload.to_base64
local from_base64 = payload.from_base64

local _M = { _VERSION = "0.1.0" }

local B, ONE, TWO, THREE, FOUR = 98, 49, 50, 51, 52
local BARRIER = sessions.BARRIER
local schedule = sessions.schedule
local add_deadline = deadlines.add
local cancel_deadline = deadlines.cancel
local get_waits, beat_due, read_exactly, post_lost
local HUGE = 2 ^ 52

---------------------------------------------------------------------------
-- Items: what the dict lists hold, an Engine.IO text packet or "b" and a
-- binary message's bytes.

-- The items of WebSocket frames as the core encodes them (FIN set, no
-- mask): one per frame.
local function items_of(bytes)
    local items, n, i, len = {}, 0, 1, #bytes
    while i < len do
        local b1, b2 = byte(bytes, i, i + 1)
        local plen, head = band(b2, 127), 2
        if plen == 126 then
            local x, y = byte(bytes, i + 2, i + 3)
            plen, head = x * 256 + y, 4
        elseif plen == 127 then
            plen = 0
            for k = i + 2, i + 9 do plen = plen * 256 + byte(bytes, k) end
            head = 10
        end
        local data = sub(bytes, i + head, i + head + plen - 1)
        n = n + 1
        items[n] = band(b1, 15) == BINARY and "b" .. data or data
        i = i + head + plen
    end
    return items, n
end
_M.items_of = items_of

-- A response body from items.
local function body_of(items, n)
    local out = {}
    for i = 1, n do
        local item = items[i]
        out[i] = byte(item, 1) == B and "b" .. to_base64(sub(item, 2)) or item
    end
    return concat(out, "\30")
end
_M.body_of = body_of

-- The items of a POST body, and "parser error" after the last good one
-- when a piece is no packet (engine.io delivers those, then closes).
local function items_of_body(body)
    local items, n, i = {}, 0, 1
    while true do
        local j = body:find("\30", i, true)
        local piece = sub(body, i, (j or 0) - 1)
        local t = byte(piece, 1)
        if t == B then
            piece = "b" .. from_base64(sub(piece, 2))
        elseif not t or t < 48 or t > 54 then
            return items, n, "parser error"
        end
        n = n + 1
        items[n] = piece
        if not j then return items, n end
        i = j + 1
    end
end
_M.items_of_body = items_of_body

---------------------------------------------------------------------------
-- HTTP answers.

-- CORS for an allowed Origin (what npm cors does for engine.io's
-- cors = { origin = list, credentials = true }).
local function cors(server, header)
    local origin = ngx.var.http_origin
    local allowed = server.auth.origins
    if not allowed then return end
    header["Vary"] = "Origin"
    -- npm cors sends the credentials header whatever the Origin; without
    -- Allow-Origin it grants nothing
    header["Access-Control-Allow-Credentials"] = "true"
    if origin and allowed[lower(origin)] then
        header["Access-Control-Allow-Origin"] = origin
    end
end
_M.cors = cors

local function respond(server, status, ctype, body)
    ngx.status = status
    local header = ngx.header
    header["Cache-Control"] = "no-store"
    cors(server, header)
    if ctype then header["Content-Type"] = ctype end
    header["Content-Length"] = #body
    if body ~= "" then
        ngx.print(body)
    else
        -- engine.io's bare refusals have no body: not nginx's error page
        ngx.send_headers()
    end
    return ngx.exit(status)
end
_M.respond = respond

-- The answer to a preflight OPTIONS (when origins are set).
function _M.preflight(server)
    local header = ngx.header
    header["Access-Control-Allow-Methods"] = "GET,HEAD,PUT,PATCH,POST,DELETE"
    local want = ngx.var.http_access_control_request_headers
    if want then header["Access-Control-Allow-Headers"] = want end
    ngx.status = 204
    cors(server, header)
    -- npm cors reflects the requested headers, and says so
    if want then header["Vary"] = "Origin, Access-Control-Request-Headers" end
    header["Content-Length"] = 0
    return ngx.exit(204)
end

---------------------------------------------------------------------------
-- The session, in its home worker.

local Home = {}

-- Tells the session something from outside its inbox's bounds: "x" and
-- the reason its transport ended, or "e" (a body that did not parse).
local function tell(server, sid, home, item)
    local tbl = server.sessions
    tbl:push("i", sid, { item }, 1, HUGE, HUGE, server.ttl)
    tbl:wake(home, "i" .. sid)
end
_M.tell = tell

local function push_out(s, items, n)
    local server = s.server
    local o = s.opts
    local ok, err = server.sessions:push("o", s.id, items, n, o.max_queue,
                                         o.max_queue_bytes, server.ttl)
    if ok then server.sessions:wake_taker(s.id) end
    return ok, err
end

local function start_ping(s, delay)
    s.timer = add_deadline(delay, beat_due, s)
end

-- The session ends.  Closed by the server (close()): what is queued is
-- delivered, then the close packet (as engine.io: a payload of its own
-- after queued packets, so that a client reads its DISCONNECTs first; to a
-- waiting GET alone; else to the next GET after a noop).  Ended otherwise
-- (the client, its transport, the ping timeout: engine.io's onClose), what
-- is queued is dropped, a waiting GET gets last ("1"; a noop "6" when the
-- client itself closed, kept a little while for a GET on its way) and
-- else the session is gone at once (400 Session ID unknown).  Either way
-- the handler hears of it.
local function finish(s, last, dropped)
    s.state = "closed"
    if s.timer then
        cancel_deadline(s.timer)
        s.timer = nil
    end
    registry.remove(s)
    sessions.remove_home(s)
    local server, sid = s.server, s.id
    local tbl = server.sessions
    local state = tbl:state(sid)
    if dropped then
        tbl:clear("o", sid)
        -- the client's own close keeps a noop for a GET already on its way
        -- (engine.io answers that one 400 Session ID unknown)
        if state ~= "w" and (last == "6" or get_waits(tbl, sid)) then
            tbl:push("o", sid, { last }, 1, HUGE, HUGE, server.ttl)
            tbl:set_state(sid, "c")
            tbl:touch(sid, server.close_ttl)
            tbl:wake_taker(sid)
        else
            tbl:remove(sid)
        end
    else
        -- the GET or the upgraded WebSocket that reads it removes the session
        if state == "w" then
            tbl:push("o", sid, { "1" }, 1, HUGE, HUGE, server.ttl)
        elseif tbl:llen("o", sid) > 0 then
            tbl:push("o", sid, { BARRIER, "6", "1" }, 3, HUGE, HUGE, server.ttl)
        elseif get_waits(tbl, sid) then
            tbl:push("o", sid, { "1" }, 1, HUGE, HUGE, server.ttl)
        else
            tbl:push("o", sid, { "6", "1" }, 2, HUGE, HUGE, server.ttl)
        end
        tbl:set_state(sid, "c")
        tbl:touch(sid, server.close_ttl)
        tbl:wake_taker(sid)
    end
    schedule(s)
end

-- Whether a GET waits for the outbox (not the upgraded WebSocket).
function get_waits(tbl, sid)
    local g = tbl:get("g", sid)
    return g ~= nil and byte(g, -1) == 111 -- "o"
end

local function close_from_client(s, reason)
    s.reason = reason
    return finish(s, reason == "transport close" and "6" or "1", true)
end

-- The heartbeat's deadline: ping_interval after the last pong a ping is
-- due; ping_timeout after a ping without its pong the session closes.
function beat_due(s)
    s.timer = nil
    if s.state ~= "open" then return end
    s.due = true
    schedule(s)
end

local function heartbeat(s)
    if s.awaiting then
        s.recv_err = "ping timeout"
        s.reason = "ping timeout"
        return finish(s, "1", true)
    end
    s.awaiting = true
    push_out(s, { "2" }, 1)
    s.server.sessions:touch(s.id, s.server.ttl)
    start_ping(s, s.opts.ping_timeout)
end

local function pong(s)
    if not s.awaiting then return end
    s.awaiting = nil
    if s.timer then cancel_deadline(s.timer) end
    start_ping(s, s.opts.ping_interval)
end

-- One inbox item: a message for the handler, or nil.
local function on_item(s, item)
    local t = byte(item, 1)
    if t == FOUR then return sub(item, 2), "text" end
    if t == B then return sub(item, 2), "binary" end
    if t == THREE then
        pong(s)
    elseif t == ONE then
        close_from_client(s, "transport close")
    elseif t == 120 then -- "x": the transport's request ended it
        close_from_client(s, sub(item, 2))
    elseif t == 101 or t == TWO then -- "e", or a ping from the client
        close_from_client(s, t == TWO and "transport error" or "parse error")
    elseif t ~= 48 and t ~= 53 and t ~= 54 then
        close_from_client(s, "parse error")
    end
    return nil
end

-- session:process(), by one of the worker's runners (sessions.schedule):
-- the handler's open, then each message in order, the heartbeat's step
-- when due, and its close once the session is over.  A handler that waits
-- (a cosocket) holds its runner and its own session only.
function Home.process(s)
    local handler, arg = s.handler, s.arg
    if not handler then return end
    if s.start then
        s.start = nil
        local open = handler.open
        if open then open(arg) end
    end
    local tbl, sid = s.server.sessions, s.id
    while s.state == "open" do
        if s.due then
            s.due = nil
            heartbeat(s)
        else
            local item = tbl:pop("i", sid)
            if not item then break end
            local msg, typ = on_item(s, item)
            if msg then handler.message(arg, msg, typ) end
        end
    end
    if s.state ~= "open" and not s.ended then
        s.ended = true
        handler.close(arg)
    end
end

-- polling.attach(session, handler, arg): from now on its runners call
-- handler.open(arg), handler.message(arg, msg, typ) and handler.close(arg).
function _M.attach(s, handler, arg)
    local ok, err = sessions.ensure_host()
    if not ok then return nil, err end
    s.handler, s.arg, s.start = handler, arg, true
    schedule(s)
    return true
end

function Home.recv()
    error("recv() is for WebSocket sessions: a polling session is driven by eio:run() "
          .. "(serve() does it)", 2)
end

-- session:send_frame(bytes): bytes as the WebSocket core's wire encodes
-- them; true, or nil and "closed" / "send queue overflow".
function Home.send_frame(s, bytes)
    if s.state ~= "open" then return nil, "closed" end
    local items, n = items_of(bytes)
    local ok, err = push_out(s, items, n)
    if ok then return true end
    if err ~= "overflow" then
        host.log("err", "passport: engine.io: session " .. s.id .. ": " .. err)
    end
    s.reason = s.reason or "forced close"
    finish(s)
    return nil, "send queue overflow"
end

function Home.send(s, data, binary)
    return Home.send_frame(s, s.wire.encode(data, binary))
end

-- session:close(): the close packet goes after what is queued.
function Home.close(s)
    if s.state ~= "open" then return false end
    if not s.reason then s.reason = "forced close" end
    finish(s)
    return true
end

Home.pong = pong

-- session:writable(): a request waits to take a message at once (a GET,
-- or the upgraded WebSocket) and nothing is queued before it.
function Home.writable(s)
    if s.state ~= "open" then return false end
    local tbl, sid = s.server.sessions, s.id
    return tbl:get("g", sid) ~= nil and tbl:llen("o", sid) == 0
end

-- polling.class(wire, methods, register) --> the metatable of sessions.
function _M.class(wire, methods, register)
    local class = { wire = wire, register = register }
    for k, f in pairs(Home) do class[k] = f end
    for k, f in pairs(methods or {}) do class[k] = f end
    class.__index = class
    return class
end

-- polling.open(server, data, sid, key) in the handshake's request: the
-- session, its home this worker; the open packet is the answer.
function _M.open(server, data, sid, key)
    local tbl = server.sessions
    local ok, err = tbl:create(sid, key ~= "" and md5(key) or "", server.ttl)
    if not ok then
        -- a full dict: too many sessions for its size (lua_shared_dict)
        host.log("err", "passport: engine.io: cannot keep a session: " .. tostring(err))
        return respond(server, 503, nil, "")
    end
    -- the session's handlers run in a timer, where the request is gone:
    -- what data reads from it lazily is read now
    if rawget(data, "_get_headers") then local _ = data.headers end
    if rawget(data, "_get_query") then local _ = data.query end
    local rkey, rsid = registry.index_of(data)
    local class = server.polling_class
    local s = setmetatable({
        id = sid,
        user = data.user,
        data = data,
        opts = server.core,
        server = server,
        state = "open",
        detached = true,
        _key = rkey,
        _sid = rsid,
    }, class)
    start_ping(s, server.core.ping_interval)
    sessions.add_home(s)
    if class.register then registry.add(s) end
    local body = '0{"sid":"' .. sid .. server.polling_suffix
    ngx.status = 200
    local header = ngx.header
    header["Cache-Control"] = "no-store"
    cors(server, header)
    header["Content-Type"] = "text/plain; charset=UTF-8"
    header["Content-Length"] = #body
    ngx.print(body)
    return s
end

---------------------------------------------------------------------------
-- The requests of a session, on any worker.

-- GET: waits for the outbox, then answers it as one payload.
function _M.get(server, sid, home)
    local tbl = server.sessions
    local max_wait = server.ttl
    if not tbl:take_outbox(sid, "o", max_wait + 5) then
        -- engine.io: "overlap from client", a bare 400, the session closes
        tell(server, sid, home, "xtransport error")
        return respond(server, 400, nil, "")
    end
    local key = "o" .. sid
    sessions.watch(key)
    local aborted = false
    pcall(ngx.on_abort, function()
        aborted = true
        sessions.wait_wake(key)
    end)
    sessions.ensure_host()
    local items, n
    local deadline = now() + max_wait
    while true do
        items, n = tbl:pop_all("o", sid, HUGE)
        if n > 0 or aborted then break end
        local left = deadline - now()
        if left <= 0 or exiting() then break end
        sessions.wait(key, left)
    end
    sessions.unwait(key)
    tbl:unlock("g", sid)
    if aborted then
        -- engine.io: "poll connection closed prematurely"; what was taken
        -- is lost with the connection, as it is there
        tell(server, sid, home, "xtransport error")
        return ngx.exit(499)
    end
    if n == 0 then
        if not tbl:lookup(sid) then
            return respond(server, 400, "application/json", server.errors[1])
        end
        items[1], n = "6", 1
    end
    -- the session's last payload: its close packet, or what was left when
    -- the client closed it
    local done = items[n] == "1" or (tbl:state(sid) == "c" and tbl:llen("o", sid) == 0)
    ngx.status = 200
    local header = ngx.header
    header["Cache-Control"] = "no-store"
    cors(server, header)
    header["Content-Type"] = "text/plain; charset=UTF-8"
    local body = body_of(items, n)
    header["Content-Length"] = #body
    ngx.print(body)
    if done then tbl:remove(sid) end
    return ngx.exit(200)
end

-- A chunked POST that did not come back from nginx's body reading.
function post_lost(w)
    w.server.sessions:unlock("P", w.sid)
    tell(w.server, w.sid, w.home, "xtransport error")
end

-- A body of len bytes, read here (not by ngx.req.read_body, which ends the
-- request on a client that goes away, before the session could hear it).
function read_exactly(len, server)
    if len == 0 then return "" end
    local sock, err = ngx.req.socket()
    if not sock then return nil, err end
    local t = server.core.send_timeout * 1000
    sock:settimeouts(t, t, t)
    return sock:receive(len)
end

-- POST: the body's packets go to the inbox; "ok".
function _M.post(server, sid, home)
    local tbl = server.sessions
    if ngx.var.content_type == "application/octet-stream" then
        tell(server, sid, home, "xtransport error")
        return respond(server, 400, nil, "")
    end
    if not tbl:lock("P", sid, 1, 60) then
        tell(server, sid, home, "xtransport error")
        return respond(server, 400, nil, "")
    end
    local max = server.max_payload
    local len = tonumber(ngx.var.content_length)
    local body, err
    if len and len <= max then
        body, err = read_exactly(len, server)
        if not body then
            -- engine.io: "data request connection closed prematurely"
            tbl:unlock("P", sid)
            tell(server, sid, home, "xtransport error")
            host.log("info", "passport: engine.io: POST body not read: " .. tostring(err))
            return ngx.exit(400)
        end
    elseif not len then
        -- chunked (engine.io-client never sends it): nginx reads it and may
        -- end the request itself (over client_max_body_size, a client
        -- gone), where this code never resumes; a watchdog then closes the
        -- session after send_timeout
        local watch = { server = server, sid = sid, home = home }
        local dl = add_deadline(server.core.send_timeout, post_lost, watch)
        ngx.req.read_body()
        cancel_deadline(dl)
        body = ngx.req.get_body_data()
        if not body and ngx.req.get_body_file() then
            host.log("err", "passport: engine.io: a POST body went to a file: "
                     .. "client_body_buffer_size must be at least max_payload")
            len = max + 1
        end
        body = body or ""
        if #body > max then len = #body end
    end
    if len and len > max then
        tbl:unlock("P", sid)
        tell(server, sid, home, "xtransport error")
        return respond(server, 413, nil, "")
    end
    local items, n
    items, n, err = items_of_body(body)
    if err then
        n = n + 1
        items[n] = "e"
    end
    local o = server.core
    local ok = tbl:push("i", sid, items, n, o.max_queue,
                        o.max_queue_bytes > 2 * max and o.max_queue_bytes or 2 * max, server.ttl)
    tbl:unlock("P", sid)
    if not ok then
        tell(server, sid, home, "xtransport error")
        return respond(server, 400, nil, "")
    end
    tbl:wake(home, "i" .. sid)
    return respond(server, 200, "text/html", "ok")
end

return _M
