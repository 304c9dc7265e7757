-- A real nginx with the Lua module for specs: a temp prefix, a free port,
-- master + workers, daemonized, stopped by pid.
--
--   local ngx_server = require "support.nginx_server"
--   local nginx = ngx_server.start {
--       workers = 2,           -- worker_processes (default 1)
--       worker_connections = 16384, -- per worker (default 4096)
--       main = "...",          -- main-context directives
--       http = "...",          -- http-context directives (init_by_lua_block...)
--       server = "...",        -- inside the server { listen 127.0.0.1:<port>; }
--       listen = "reuseport",  -- more parameters of that listen (default none;
--                              -- reuseport spreads connections over the workers)
--       log_level = "info",    -- error_log level (default "info")
--   }
--   nginx.port, nginx.prefix, nginx.pid
--   nginx:get("/path", { ["X-H"] = "v" })  --> status, body, headers
--   local c = nginx:send("/slow")  ... nginx:receive(c)  -- concurrent requests
--   nginx:error_log()  -- the error log's text so far
--   nginx:assert_clean_log()  -- no crash, no Lua error in it
--   nginx:wait_subscribers(n [, path])  -- until an emit through path (default
--                      "/emit?user=999&data=ping", answering the number of
--                      workers reached) reaches n subscribers; raises after 10 s
--   nginx:stop()       -- QUIT (graceful), KILL after 5 s; removes the prefix
--
-- The conf points lua_package_path at the repository's lua/ and spec/
-- (absolute paths) and lua_package_cpath at build/, so specs load exactly
-- what `make` built.  Any "{{port}}" in main/http/server is replaced by the
-- port.  The nginx binary and module directory can be overridden with
-- NGINX and NGINX_MODULES in the environment.
local socket = require "socket"
local proc = require "support.proc"

local M = {}

M.nginx = os.getenv("NGINX") or "nginx"
M.modules = os.getenv("NGINX_MODULES") or "/usr/lib/nginx/modules"

local running = {} -- pid -> true, for the exit hook

local sh = proc.sh
local free_port = proc.free_port
M.free_port = free_port

-- The repository root: this file is <root>/spec/support/nginx_server.lua.
local function root()
    local src = debug.getinfo(1, "S").source:sub(2)
    local dir = src:match("^(.*)/spec/support/[^/]+$") or "."
    if dir:sub(1, 1) ~= "/" then
        local pwd = sh("pwd"):gsub("%s+$", "")
        dir = dir == "." and pwd or pwd .. "/" .. dir
    end
    return dir
end
M.root = root()

local read_file = proc.read_file

local TEMPLATE = [[
load_module {{modules}}/ndk_http_module.so;
load_module {{modules}}/ngx_http_lua_module.so;
{{user}}
worker_processes {{workers}};
daemon on;
master_process on;
pid {{prefix}}/nginx.pid;
error_log {{prefix}}/error.log {{log_level}};
events { worker_connections {{worker_connections}}; }
{{main}}
http {
    access_log off;
    client_body_temp_path {{prefix}}/client_body;
    proxy_temp_path {{prefix}}/proxy;
    fastcgi_temp_path {{prefix}}/fastcgi;
    uwsgi_temp_path {{prefix}}/uwsgi;
    scgi_temp_path {{prefix}}/scgi;
    lua_package_path "{{root}}/lua/?.lua;{{root}}/lua/?/init.lua;{{root}}/spec/?.lua;;";
    lua_package_cpath "{{root}}/build/?.so;;";
{{http}}
    server {
        listen 127.0.0.1:{{port}}{{listen}};
{{server}}
    }
}
]]

local Server = {}
Server.__index = Server

function Server:wait_subscribers(n, path)
    local deadline = socket.gettime() + 10
    while socket.gettime() < deadline do
        local _, body = self:get(path or "/emit?user=999&data=ping")
        if tonumber(body) == n then return true end
        socket.sleep(0.05)
    end
    error("subscribers did not come up")
end

function Server:error_log()
    return read_file(self.prefix .. "/error.log") or ""
end

-- Sends a request and returns the socket (HTTP/1.0, Connection: close).
-- Fails the spec when the error log shows a crash or a Lua error.
function Server:assert_clean_log()
    local log = self:error_log()
    for _, bad in ipairs { "%[alert%]", "%[crit%]", "%[emerg%]",
                           "runtime error", "entry thread aborted" } do
        assert(not log:match(bad), "error log has " .. bad .. ":\n" .. log)
    end
end

function Server:send(path, headers, timeout)
    local c = socket.tcp()
    c:settimeout(timeout or 10)
    assert(c:connect("127.0.0.1", self.port))
    local req = { "GET " .. path .. " HTTP/1.0\r\nHost: localhost\r\n" }
    for k, v in pairs(headers or {}) do
        req[#req + 1] = k .. ": " .. v .. "\r\n"
    end
    req[#req + 1] = "\r\n"
    assert(c:send(table.concat(req)))
    return c
end

-- Reads the whole response: status, body, headers (lower-case names).
function Server.receive(_, c)
    local raw, err, partial = c:receive("*a")
    c:close()
    raw = raw or partial
    if not raw or raw == "" then
        return nil, err
    end
    local head, body = raw:match("^(.-)\r\n\r\n(.*)$")
    if not head then
        return nil, "bad response: " .. raw
    end
    local status = tonumber(head:match("^HTTP/%d%.%d (%d+)"))
    local headers = {}
    for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do
        headers[k:lower()] = v
    end
    return status, body, headers
end

function Server:get(path, headers, timeout)
    return self:receive(self:send(path, headers, timeout))
end

local alive = proc.alive

function M.start(opts)
    opts = opts or {}
    local prefix = sh("mktemp -d /tmp/passport-nginx.XXXXXX"):gsub("%s+$", "")
    local self = setmetatable({
        port = opts.port or free_port(),
        prefix = prefix,
    }, Server)
    local vars = {
        modules = M.modules,
        -- As root, nginx would run the workers as nobody, who cannot reach
        -- a 0700 temp dir or unix socket.
        user = sh("id -u"):match("^0%s") and "user root root;" or "",
        workers = tostring(opts.workers or 1),
        worker_connections = tostring(opts.worker_connections or 4096),
        prefix = prefix,
        log_level = opts.log_level or "info",
        main = opts.main or "",
        http = opts.http or "",
        server = opts.server or "",
        listen = opts.listen and " " .. opts.listen or "",
        root = M.root,
        port = tostring(self.port),
    }
    -- Two passes: the template's own fields, then {{port}} inside the
    -- caller's snippets.
    local conf = TEMPLATE:gsub("{{([%w_]+)}}", function(k) return vars[k] end)
    conf = conf:gsub("{{port}}", vars.port)
    local f = assert(io.open(prefix .. "/nginx.conf", "w"))
    f:write(conf)
    f:close()
    self.conf = conf

    local out, ok = sh(M.nginx .. " -p " .. prefix .. " -c " .. prefix
                       .. "/nginx.conf -e " .. prefix .. "/error.log")
    if not ok then
        local log = self:error_log()
        sh("rm -rf " .. prefix)
        error("nginx failed to start:\n" .. out .. "\n" .. log)
    end

    local deadline = socket.gettime() + 10
    while socket.gettime() < deadline do
        local pid = tonumber(read_file(prefix .. "/nginx.pid") or "")
        if pid and not self.pid then
            self.pid = pid
            running[pid] = prefix
        end
        local c = socket.tcp()
        c:settimeout(0.2)
        local connected = c:connect("127.0.0.1", self.port)
        c:close()
        if connected and self.pid then
            return self
        end
        socket.sleep(0.02)
    end
    local log = self:error_log()
    self:stop()
    error("nginx did not come up on port " .. vars.port .. "\n" .. log)
end

-- Graceful stop (QUIT), KILL after 5 s; the prefix is removed unless
-- keep is true (to read logs afterwards).
function Server:stop(keep)
    if self.pid then
        local pid = self.pid
        sh("kill -QUIT " .. pid)
        local deadline = socket.gettime() + 5
        while alive(pid) and socket.gettime() < deadline do
            socket.sleep(0.02)
        end
        if alive(pid) then
            -- the workers first: once the master is gone they are orphans
            sh("pkill -KILL -P " .. pid)
            sh("kill -KILL " .. pid)
        end
        running[pid] = nil
        self.pid = nil
    end
    if not keep and self.prefix and self.prefix:match("^/tmp/passport%-") then
        sh("rm -rf " .. self.prefix)
    end
end

M._guard = newproxy(true)
getmetatable(M._guard).__gc = function()
    for pid, prefix in pairs(running) do
        os.execute("pkill -KILL -P " .. pid .. " 2>/dev/null; kill -KILL "
                   .. pid .. " 2>/dev/null; rm -rf " .. prefix)
    end
end

return M
