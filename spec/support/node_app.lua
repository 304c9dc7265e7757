-- Runs the integration specs' Node side (spec/support/app/*.js) from the
-- repository's node_modules: the Express app as a server stopped by pid, and
-- the socket.io client as a one-shot command.
local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"
local nginx_server = require "support.nginx_server"
local proc = require "support.proc"

local M = {}
local ROOT = nginx_server.root

local q = proc.q

local function sh(cmd)
    return (proc.sh(cmd))
end

local App = {}
App.__index = App

-- env: REDIS_PORT, SECRET, PREFIX.  Waits for "listening" in the log.
function M.start_app(env)
    local self = setmetatable({ port = proc.free_port() }, App)
    self.log = os.tmpname()
    local vars = { "PORT=" .. self.port }
    for k, v in pairs(env or {}) do vars[#vars + 1] = k .. "=" .. q(v) end
    self.pid = tonumber(sh("cd " .. q(ROOT) .. " && " .. table.concat(vars, " ")
        .. " nohup node spec/support/app/server.js > " .. q(self.log) .. " 2>&1 & echo $!"))
    local deadline = socket.gettime() + 15
    while socket.gettime() < deadline do
        local f = io.open(self.log)
        local text = f and f:read("*a") or ""
        if f then f:close() end
        if text:match("listening %d+") then return self end
        if sh("kill -0 " .. self.pid .. " && echo up"):match("up") == nil then
            error("the Express app exited:\n" .. text)
        end
        socket.sleep(0.05)
    end
    self:stop()
    error("the Express app did not start")
end

function App:stop()
    if self.pid then
        sh("kill " .. self.pid)
        self.pid = nil
    end
    os.remove(self.log)
end

-- One HTTP request to the app (or any port): status, parsed JSON body, headers.
function M.request(port, method, path, opts)
    opts = opts or {}
    local chunks = {}
    local headers = opts.headers or {}
    local body = opts.body
    if body then
        headers["content-type"] = "application/x-www-form-urlencoded"
        headers["content-length"] = tostring(#body)
    end
    local _, status, rheaders = http.request {
        url = "http://127.0.0.1:" .. port .. path,
        method = method,
        headers = headers,
        source = body and ltn12.source.string(body) or nil,
        sink = ltn12.sink.table(chunks),
        redirect = false,
    }
    local text = table.concat(chunks)
    return status, cjson.decode(text ~= "" and text or "null"), rheaders or {}, text
end

-- Logs in through the app; returns the Cookie header value to send back.
function M.login(port, username, password)
    local status, body, headers = M.request(port, "POST", "/login",
        { body = "username=" .. username .. "&password=" .. password })
    assert(status == 200, "login failed: " .. tostring(status))
    local set = assert(headers["set-cookie"], "no Set-Cookie")
    return set:match("^([^;]+)"), body
end

-- Connects a real socket.io client; returns its JSON outcome.
function M.sio_connect(url, transport, cookie, origin)
    local out = sh("cd " .. q(ROOT) .. " && node spec/support/app/client.js " .. q(url) .. " "
                   .. transport .. " " .. q(cookie or "") .. " " .. q(origin or ""))
    local line = out:match("(%b{})%s*$")
    assert(line, "client said: " .. out)
    return cjson.decode(line)
end

return M
