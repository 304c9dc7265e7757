-- bench-e2e's trivial WebSocket upstream (content_by_lua_file): completes
-- the RFC 6455 handshake, sends one text message (the "welcome": "hello "
-- plus the X-Passport-User header the guard set, or "anonymous"), then reads
-- frames until the client closes: ping -> pong, close -> close.  It does no
-- auth and keeps no state, so the guard and no-auth rows differ only by what
-- the gateway does in front of it.
local frame = require "resty.passport.ws.frame"

local accept = frame.accept_key(ngx.var.http_sec_websocket_key)
if not accept or ngx.var.http_upgrade == nil then
    return ngx.exit(400)
end

ngx.header["Upgrade"] = "websocket"
ngx.header["Sec-WebSocket-Accept"] = accept
ngx.status = 101
ngx.send_headers()
ngx.flush(true)

local sock = ngx.req.socket(true)
if not sock then
    return ngx.exit(444)
end
sock:settimeouts(5000, 5000, 3600000)

local user = ngx.var.http_x_passport_user or "anonymous"
local ok = sock:send(frame.encode("text", "hello " .. user))
if not ok then
    return ngx.exit(444)
end

-- One frame's header: the table frame.parse_header gives, or nil.
local function read_header()
    local head, err = sock:receive(2)
    if not head then return nil, err end
    local h, why, more = frame.parse_header(head, true)
    if why == "need" then
        local rest = sock:receive(more)
        if not rest then return nil end
        h = frame.parse_header(head .. rest, true)
    end
    return h
end

while true do
    local h, err = read_header()
    if not h then
        if err == "timeout" then goto continue end
        break
    end
    do
        local payload = h.payload_len > 0 and sock:receive(h.payload_len) or ""
        if not payload then break end
        payload = frame.unmask(payload, h.mask)
        if h.opcode == frame.PING then
            sock:send(frame.encode("pong", payload))
        elseif h.opcode == frame.CLOSE then
            sock:send(frame.encode("close", payload:sub(1, 2)))
            break
        end
    end
    ::continue::
end
