-- The upgrade of a polling session to a WebSocket, on whatever worker the
-- WebSocket lands: "2probe" is answered "3probe", a pending GET gets a
-- noop ("6") every 100 ms so the client can pause polling, and "5" makes
-- this request the session's transport.  From then on it relays both
-- ways: the client's messages to the session's inbox, its outbox to the
-- client (the session stays in its home worker; closures cannot move).
local frame = require "resty.passport.ws.frame"
local socket = require "resty.passport.ws.socket"
local sessions = require "resty.passport.engineio.sessions"
local polling = require "resty.passport.engineio.polling"
local host = require "resty.passport.host"

local encode = frame.encode
local ngx = ngx
local now = ngx.now
local spawn = ngx.thread.spawn
local wait_thread = ngx.thread.wait
local byte = string.byte
local concat = table.concat
local sub = string.sub

local TEXT, BINARY = frame.TEXT, frame.BINARY
local PROBE_ANSWER = encode(TEXT, "3probe")
local HUGE = 2 ^ 52

local _M = { _VERSION = "0.1.0" }

-- The relay's socket: WebSocket messages as they are, no pings of its own
-- (the home's heartbeat runs through it), closed without a status code as
-- engine.io's ws does.
local class = socket.class {
    name = "engine.io",
    encode = function(data, binary) return encode(binary and BINARY or TEXT, data) end,
    ping = "",
    register = false,
    silent_close = true,
}

local function frames_of(items, n)
    local out, k = {}, 0
    for i = 1, n do
        local item = items[i]
        local t = byte(item, 1)
        if t == 98 then
            k = k + 1
            out[k] = encode(BINARY, sub(item, 2))
        elseif t ~= 54 and t ~= 49 and t ~= 45 then -- noop, barrier: for polling; "1" closes
            k = k + 1
            out[k] = encode(TEXT, item)
        end
    end
    return concat(out), items[n] == "1"
end

-- While upgrading: a noop for a pending GET every 100 ms (engine.io's
-- check); the upgrade gives up after upgrade_timeout.
local function upgrading(r)
    local tbl, sid = r.server.sessions, r.sid
    local give_up = now() + r.server.upgrade_timeout
    while not r.upgraded and r.ws.state == "open" do
        local state = tbl:state(sid)
        if state ~= "u" and state ~= "p" then
            -- the session ended meanwhile: engine.io closes the probe too
            r.ws:close()
            return
        end
        if now() >= give_up then
            host.log("info", "passport: engine.io: upgrade not completed in time")
            r.ws:close()
            return
        end
        if r.probed and tbl:get("g", sid) and tbl:llen("o", sid) == 0 then
            tbl:push("o", sid, { "6" }, 1, HUGE, HUGE, r.server.ttl)
            tbl:wake_taker(sid)
        end
        sessions.wait("u" .. sid, 0.1)
    end
end

-- Once upgraded: the outbox to the client.
local function pump(r)
    local tbl, sid, ws = r.server.sessions, r.sid, r.ws
    local key = "u" .. sid
    sessions.watch(key)
    upgrading(r)
    if not r.upgraded then
        sessions.unwait(key)
        return
    end
    while ws.state == "open" do
        local items, n = tbl:pop_all("o", sid, HUGE)
        if n > 0 then
            local bytes, closing = frames_of(items, n)
            if bytes ~= "" and not ws:send_frame(bytes) then break end
            if closing then
                r.closed_by_home = true
                ws:close()
                break
            end
        else
            -- woken by the home, or by run() once the WebSocket is done
            sessions.wait(key, 60)
        end
    end
    sessions.unwait(key)
end

-- The client's messages: the probe and the upgrade packet, then whatever
-- comes, to the session's inbox.
local function relay(r)
    local tbl, sid, ws, server = r.server.sessions, r.sid, r.ws, r.server
    local o = server.core
    local max_bytes = o.max_queue_bytes > 2 * server.max_payload and o.max_queue_bytes
                      or 2 * server.max_payload
    while true do
        local msg, typ = ws:recv()
        if not msg then break end
        if r.upgraded then
            local item = typ == "binary" and "b" .. msg or msg
            if not tbl:push("i", sid, { item }, 1, o.max_queue, max_bytes, server.ttl) then
                polling.tell(server, sid, r.home, "xtransport error")
                ws:close()
            end
            tbl:wake(r.home, "i" .. sid)
        elseif typ == "text" and msg == "2probe" and not r.probed then
            r.probed = true
            tbl:set_state(sid, "u")
            ws:send_frame(PROBE_ANSWER)
        elseif typ == "text" and msg == "5" and r.probed then
            if tbl:state(sid) ~= "u" then
                -- the session closed meanwhile
                ws:close()
            else
                -- from now on this request takes the outbox
                tbl:take_outbox(sid, "u", server.ttl, true)
                tbl:set_state(sid, "w")
                r.upgraded = true
                sessions.wait_wake("u" .. sid)
            end
        else
            -- engine.io: anything else during the upgrade ends the upgrade
            -- (the next recv() returns nil once the close handshake is done)
            ws:close()
        end
    end
end

-- upgrade.run(server, sid, home, head) in content_by_lua, once the request
-- is checked: the WebSocket for the session, until it closes.
function _M.run(server, sid, home, head)
    local tbl = server.sessions
    local ws = socket.open(class, server.relay_core, {}, head, nil, sid)
    local r = { server = server, sid = sid, home = home, ws = ws }
    sessions.ensure_host()
    local th, err = spawn(pump, r)
    if not th then
        host.log("err", "passport: engine.io: cannot start the relay: " .. err)
        ws:close()
    end
    relay(r)
    if ws.state == "open" then ws:close() end
    sessions.wait_wake("u" .. sid)
    if th then wait_thread(th) end
    if r.upgraded then
        if r.closed_by_home or tbl:state(sid) == "c" then
            tbl:remove(sid)
        else
            polling.tell(server, sid, home, "xtransport close")
        end
    else
        tbl:unlock("r", sid)
        if tbl:state(sid) == "u" then tbl:set_state(sid, "p") end
    end
end

return _M
