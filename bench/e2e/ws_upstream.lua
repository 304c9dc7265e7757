-- bench-e2e's trivial WebSocket upstream (content_by_lua_file): completes
-- the RFC 6455 handshake, sends one text message (the "welcome": "hello "
-- plus the X-Passport-User header the guard set, or "anonymous"), then reads
-- frames until the client closes: ping -> pong, close -> close.  It does no
-- auth and keeps no state, so the guard and no-auth rows differ only by what
-- the gateway does in front of it.
local frame = require "resty.passport.frame"

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

local byte = string.byte
local band = bit.band
while true do
    local h, err = sock:receive(2)
    if not h then
        if err == "timeout" then goto continue end
        break
    end
    do
        local b1, b2 = byte(h, 1, 2)
        local opcode, len = band(b1, 0x0f), band(b2, 0x7f)
        if len == 126 then
            local x = sock:receive(2)
            if not x then break end
            local hi, lo = byte(x, 1, 2)
            len = hi * 256 + lo
        elseif len == 127 then
            break -- never sent by the load generator
        end
        local mask = sock:receive(4)
        local payload = len > 0 and sock:receive(len) or ""
        if not mask or not payload then break end
        payload = frame.unmask(payload, mask)
        if opcode == 0x9 then
            sock:send(frame.encode("pong", payload))
        elseif opcode == 0x8 then
            sock:send(frame.encode("close", payload:sub(1, 2)))
            break
        end
    end
    ::continue::
end
