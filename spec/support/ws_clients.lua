-- Many real npm `ws` clients held open for a spec (spec/support/app/
-- ws_clients.js), driven over its HTTP control API.
--
--   local clients = require("support.ws_clients").start()
--   clients:open("ann", "ws://127.0.0.1:" .. port .. "/ws", cookie)
--   local st = clients:wait("ann", function(s) return #s.messages > 0 end)
--   clients:state("ann") --> { open, status, messages = {{data, at}}, close = {code, reason, at} }
--   clients:stop()
local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"
local nginx_server = require "support.nginx_server"
local proc = require "support.proc"

local M = {}
local Clients = {}
Clients.__index = Clients

local q = proc.q

local function esc(s)
    return (tostring(s):gsub("[^%w%-_%.~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

function M.start()
    local self = setmetatable({ log = os.tmpname() }, Clients)
    self.pid = tonumber((proc.sh("cd " .. q(nginx_server.root)
        .. " && nohup node spec/support/app/ws_clients.js > " .. q(self.log) .. " 2>&1 & echo $!")))
    local deadline = socket.gettime() + 10
    while socket.gettime() < deadline do
        local f = io.open(self.log)
        local text = f and f:read("*a") or ""
        if f then f:close() end
        local port = text:match("listening (%d+)")
        if port then
            self.port = tonumber(port)
            return self
        end
        socket.sleep(0.05)
    end
    self:stop()
    error("ws_clients.js did not start")
end

-- JSON null becomes nil, so specs can test fields plainly.
local function denull(v)
    if type(v) ~= "table" then return v end
    for k, x in pairs(v) do
        if x == cjson.null then v[k] = nil else denull(x) end
    end
    return v
end
M.denull = denull

function Clients:call(method, path, args)
    local parts = {}
    for k, v in pairs(args or {}) do parts[#parts + 1] = k .. "=" .. esc(v) end
    local chunks = {}
    local _, status = http.request {
        url = "http://127.0.0.1:" .. self.port .. path .. "?" .. table.concat(parts, "&"),
        method = method, sink = ltn12.sink.table(chunks),
        headers = { ["content-length"] = "0" },
    }
    assert(status == 200, path .. ": " .. tostring(status) .. " " .. table.concat(chunks))
    return denull(cjson.decode(table.concat(chunks)))
end

function Clients:open(id, url, cookie, origin)
    return self:call("POST", "/open", { id = id, url = url, cookie = cookie or "", origin = origin })
end

function Clients:state(id)
    return self:call("GET", "/state", { id = id })
end

function Clients:send(id, data) return self:call("POST", "/send", { id = id, data = data }) end
function Clients:close(id, code) return self:call("POST", "/close", { id = id, code = code }) end
function Clients:drop(id) return self:call("POST", "/drop", { id = id }) end

-- Polls id's state until pred(state) is true; returns the state, or nil
-- and the last state after timeout seconds.
function Clients:wait(id, pred, timeout)
    local deadline = socket.gettime() + (timeout or 5)
    local st
    repeat
        st = self:state(id)
        if pred(st) then return st end
        socket.sleep(0.02)
    until socket.gettime() > deadline
    return nil, st
end

function Clients:stop()
    if self.pid then
        proc.sh("kill " .. self.pid)
        self.pid = nil
    end
    os.remove(self.log)
end

return M
