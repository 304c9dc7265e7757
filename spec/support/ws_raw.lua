-- A byte-level WebSocket client for specs (LuaSocket): the handshake with
-- any headers, then raw bytes out and parsed server frames in, so specs can
-- send what no well-behaved client would.
--
--   local ws = require "support.ws_raw"
--   local c, status, headers, body = ws.connect(port, "/ws", { Cookie = ck })
--   c:send_frame("text", "hi")            -- masked, fin
--   c:send_raw(bytes)                     -- anything at all
--   local f = c:read_frame(2)             -- { opcode, fin, payload } | nil, err
--   local code, reason = c:read_close(2)  -- skips data frames until a close
--   c:close()
local socket = require "socket"
local frame = require "resty.passport.ws.frame"

local M = {}
local Client = {}
Client.__index = Client

local function key()
    local b = {}
    for i = 1, 16 do b[i] = string.char(math.random(0, 255)) end
    -- base64 of 16 random bytes, by hand (no dependency on a base64 module)
    local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    local s = table.concat(b) .. "\0\0"
    local out = {}
    for i = 1, 18, 3 do
        local n = s:byte(i) * 65536 + s:byte(i + 1) * 256 + s:byte(i + 2)
        for j = 3, 0, -1 do
            local k = math.floor(n / 64 ^ j) % 64
            out[#out + 1] = alphabet:sub(k + 1, k + 1)
        end
    end
    return table.concat(out):sub(1, 22) .. "=="
end
M.key = key

-- Opens a TCP connection and sends the upgrade request.  Returns the client
-- and the response's status, headers (lower-case names) and body (when not
-- 101), or nil and an error.
function M.connect(port, path, headers, opts)
    opts = opts or {}
    local sock = socket.tcp()
    sock:settimeout(opts.timeout or 5)
    local ok, err = sock:connect("127.0.0.1", port)
    if not ok then return nil, err end
    local h = {
        Host = "127.0.0.1:" .. port, Upgrade = "websocket", Connection = "Upgrade",
        ["Sec-WebSocket-Version"] = "13", ["Sec-WebSocket-Key"] = key(),
    }
    for k, v in pairs(headers or {}) do h[k] = v or nil end
    if headers then
        for k, v in pairs(headers) do if v == false then h[k] = nil end end
    end
    local lines = { (opts.method or "GET") .. " " .. (path or "/") .. " HTTP/1.1" }
    for k, v in pairs(h) do lines[#lines + 1] = k .. ": " .. v end
    sock:send(table.concat(lines, "\r\n") .. "\r\n\r\n")
    local status_line, rerr = sock:receive("*l")
    if not status_line then sock:close() return nil, rerr end
    local status = tonumber(status_line:match("^HTTP/1%.1 (%d+)"))
    local rh = {}
    while true do
        local line = sock:receive("*l")
        if not line or line == "" then break end
        local k, v = line:match("^([^:]+):%s*(.*)$")
        if k then rh[k:lower()] = v end
    end
    local body
    if status ~= 101 then
        local n = tonumber(rh["content-length"] or "")
        body = n and sock:receive(n) or nil
        sock:close()
        return nil, status, rh, body
    end
    return setmetatable({ sock = sock, buf = "" }, Client), status, rh
end

function Client:send_raw(bytes)
    return self.sock:send(bytes)
end

function Client:send_frame(opcode, payload, fin, mask)
    local m = mask
    if m == nil then
        m = string.char(math.random(0, 255), math.random(0, 255),
                        math.random(0, 255), math.random(0, 255))
    elseif m == false then
        m = nil
    end
    return self.sock:send(frame.encode(opcode, payload or "", fin, m))
end

function Client:send_close(code, reason)
    return self:send_frame("close", code and frame.close_payload(code, reason) or "")
end

local function fill(self, n, deadline)
    while #self.buf < n do
        local left = deadline - socket.gettime()
        if left <= 0 then return nil, "timeout" end
        self.sock:settimeout(left)
        local data, err, part = self.sock:receive(n - #self.buf)
        if data then
            self.buf = self.buf .. data
        else
            if part and part ~= "" then self.buf = self.buf .. part end
            if err ~= "timeout" then return nil, err end
        end
    end
    return true
end

-- The next frame from the server: { opcode, fin, payload }, or nil and
-- "timeout" / "closed" / a parse error.
function Client:read_frame(timeout)
    local deadline = socket.gettime() + (timeout or 5)
    local ok, err = fill(self, 2, deadline)
    if not ok then return nil, err end
    while true do
        local h, why, more = frame.parse_header(self.buf, false)
        if h then
            ok, err = fill(self, h.header_len + h.payload_len, deadline)
            if not ok then return nil, err end
            local payload = self.buf:sub(h.header_len + 1, h.header_len + h.payload_len)
            self.buf = self.buf:sub(h.header_len + h.payload_len + 1)
            return { opcode = h.opcode, fin = h.fin, payload = payload }
        elseif why == "need" then
            ok, err = fill(self, #self.buf + more, deadline)
            if not ok then return nil, err end
        else
            return nil, why
        end
    end
end

-- Reads until a close frame: its code and reason (nil, err when the
-- connection ends without one).  Data frames before it are returned third.
function Client:read_close(timeout)
    local seen = {}
    while true do
        local f, err = self:read_frame(timeout)
        if not f then return nil, err, seen end
        if f.opcode == frame.CLOSE then
            local code, reason = frame.parse_close(f.payload)
            return code, reason, seen
        end
        seen[#seen + 1] = f
    end
end

-- true when the server has closed the TCP connection (reads EOF) within
-- timeout seconds.
function Client:wait_eof(timeout)
    local deadline = socket.gettime() + (timeout or 5)
    while socket.gettime() < deadline do
        self.sock:settimeout(deadline - socket.gettime())
        local data, err = self.sock:receive(1)
        if not data and err == "closed" then return true end
        if not data and err == "timeout" then return false end
    end
    return false
end

function Client:close()
    self.sock:close()
end

return M
