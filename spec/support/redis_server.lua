-- A real redis-server for specs: 127.0.0.1, a free port, a temp dir, no
-- persistence; stopped by pid.
--
--   local redis = require("support.redis_server").start {
--       password = "pw",                  -- requirepass (the default user)
--       users = { { name = "app", password = "pw2" } }, -- ACL users, all keys
--       unixsocket = true,                -- also listen on <dir>/redis.sock
--       config = { "tcp-backlog 4" },     -- extra redis.conf lines
--   }
--   redis.port, redis.host, redis.socket, redis.dir, redis.pid
--   redis:call("SET", "k", "v")   --> reply | nil, "ERR ..." (raw RESP over
--                                    lua-socket, independent of the store)
--   redis:kill()  -- SIGKILL, like a crash     redis:restart()  -- same port
--   redis:pause() / redis:resume()  -- SIGSTOP / SIGCONT: a frozen server
--   redis:stop()  -- SIGTERM, wait, SIGKILL after 5 s; removes the temp dir
--
-- Every server still running when the Lua state closes is killed, so a
-- failing spec does not leave one behind.
local socket = require "socket"
local proc = require "support.proc"
local resp = require "resty.passport.redis.resp"

local M = {}

local running = {} -- pid -> server, for the exit hook

local sh = proc.sh
local q = proc.q
local read_file = proc.read_file
M.free_port = proc.free_port

function M.tmpdir(tag)
    local out = sh("mktemp -d /tmp/passport-" .. (tag or "spec") .. ".XXXXXX")
    return (out:gsub("%s+$", ""))
end

-- Encodes a command as RESP (the gateway's own encoder).
local function encode(args)
    return resp.encode(unpack(args, 1, args.n or #args))
end
M.encode = encode

-- Reads one reply with the gateway's one RESP reader (it works over
-- LuaSocket too): string | number | table | nil (null) | false, err.
local reader = resp.reader(512 * 1024 * 1024)
local function read_reply(sock)
    local v, err = reader:read(sock)
    if v == nil then
        return false, err
    elseif v == false then
        return nil
    elseif type(v) == "table" then
        if v.err then return false, v.err end
        local n = #v
        for i = 1, n do
            if v[i] == false then v[i] = nil end
        end
    end
    return v
end
M.read_reply = read_reply

local Server = {}
Server.__index = Server

-- A raw connection, authenticated as the admin (the default user).
function Server:connect(timeout)
    local sock = socket.tcp()
    sock:settimeout(timeout or 5)
    local ok, err = sock:connect(self.host, self.port)
    if not ok then
        sock:close()
        return nil, err
    end
    if self.password then
        sock:send(encode { "AUTH", self.password })
        local r, aerr = read_reply(sock)
        if not r then
            sock:close()
            return nil, aerr
        end
    end
    return sock
end

-- One command over the admin connection (opened, and reopened, on demand).
-- Returns the reply, or nil/false and the error.
function Server:call(...)
    local args = { ... }
    for _ = 1, 2 do
        if not self.admin then
            local sock, err = self:connect()
            if not sock then
                return nil, err
            end
            self.admin = sock
        end
        local ok = self.admin:send(encode(args))
        if ok then
            local r, err = read_reply(self.admin)
            if r ~= false or (err ~= "closed" and err ~= "timeout") then
                if r == false then
                    return nil, err
                end
                return r
            end
        end
        self.admin:close()
        self.admin = nil
    end
    return nil, "closed"
end

-- Connected clients other than the admin connection (CLIENT LIST).
function Server:clients()
    local list = assert(self:call("CLIENT", "LIST"))
    local n = 0
    for line in list:gmatch("[^\n]+") do
        if not line:find("cmd=client", 1, true) then
            n = n + 1
        end
    end
    return n
end

-- INFO field as a number (e.g. "total_connections_received").
function Server:info(field)
    local info = assert(self:call("INFO", "all"))
    return tonumber(info:match(field .. ":(%d+)"))
end

-- Writes a session the way an Express app does: the real connect-redis
-- store's set() with an express-session Cookie, from npm packages found in
-- <repo>/node_modules (or $PASSPORT_NODE_MODULES).  Returns the raw value
-- and the key's TTL as Redis holds them, or nil and why it could not.
local SEED_JS = [=[
const [host, port, password, prefix, sid, user, maxAge] = process.argv.slice(2);
const session = require("express-session");
const cr = require("connect-redis");
const RedisStore = cr.RedisStore || cr.default || cr;
const { createClient } = require("redis");
(async () => {
  const client = createClient({ socket: { host, port: +port },
                                password: password || undefined });
  await client.connect();
  const store = new RedisStore({ client, prefix });
  const cookie = new session.Cookie({ maxAge: +maxAge, httpOnly: true, path: "/" });
  const sess = { cookie, passport: { user: JSON.parse(user) } };
  await new Promise((ok, ko) => store.set(sid, sess, (e) => (e ? ko(e) : ok())));
  const raw = await client.get(prefix + sid);
  const ttl = await client.ttl(prefix + sid);
  process.stdout.write(JSON.stringify({ raw, ttl }));
  process.exit(0);
})().catch((e) => { console.error(String(e)); process.exit(1); });
]=]

function M.node_modules()
    local dir = os.getenv("PASSPORT_NODE_MODULES")
    if not dir then
        local src = debug.getinfo(1, "S").source:sub(2)
        local root = src:match("^(.*)/spec/support/[^/]+$")
        dir = (root or ".") .. "/node_modules"
    end
    for _, pkg in ipairs { "connect-redis", "express-session", "redis" } do
        local f = io.open(dir .. "/" .. pkg .. "/package.json")
        if not f then
            return nil, "no " .. pkg .. " in " .. dir
        end
        f:close()
    end
    return dir
end

function Server:seed_connect_redis(sid, user_json, opts)
    opts = opts or {}
    local modules, why = M.node_modules()
    if not modules then
        return nil, why
    end
    local script = self.dir .. "/seed.js"
    local f = assert(io.open(script, "w"))
    f:write(SEED_JS)
    f:close()
    local out, ok = sh("NODE_PATH=" .. q(modules) .. " node " .. q(script)
                       .. " 127.0.0.1 " .. self.port .. " "
                       .. q(self.password or "") .. " "
                       .. q(opts.prefix or "sess:") .. " " .. q(sid) .. " "
                       .. q(user_json) .. " " .. (opts.max_age or 3600000))
    if not ok then
        error("connect-redis seeding failed: " .. out)
    end
    local res = require("cjson").decode(out)
    return res.raw, res.ttl
end

local function wait_ready(self, timeout)
    local deadline = socket.gettime() + (timeout or 5)
    while socket.gettime() < deadline do
        local sock = self:connect(0.5)
        if sock then
            sock:send(encode { "PING" })
            local r = read_reply(sock)
            sock:close()
            if r == "PONG" then
                return true
            end
        end
        socket.sleep(0.02)
    end
    return false
end

local function launch(self)
    local out, ok = sh("redis-server " .. self.dir .. "/redis.conf")
    if not ok then
        error("redis-server failed to start: " .. out)
    end
    if not wait_ready(self) then
        error("redis-server did not answer on port " .. self.port .. "\n"
              .. (read_file(self.dir .. "/redis.log") or ""))
    end
    self.pid = assert(tonumber(read_file(self.dir .. "/redis.pid")))
    running[self.pid] = self
end

function M.start(opts)
    opts = opts or {}
    local self = setmetatable({
        host = "127.0.0.1",
        port = opts.port or M.free_port(),
        password = opts.password,
        dir = M.tmpdir("redis"),
    }, Server)
    local conf = {
        "bind 127.0.0.1",
        "port " .. self.port,
        "dir " .. self.dir,
        "daemonize yes",
        "pidfile " .. self.dir .. "/redis.pid",
        "logfile " .. self.dir .. "/redis.log",
        "save ''",
        "appendonly no",
        "protected-mode no",
        "enable-debug-command yes",
    }
    if opts.unixsocket then
        self.socket = self.dir .. "/redis.sock"
        conf[#conf + 1] = "unixsocket " .. self.socket
        conf[#conf + 1] = "unixsocketperm 700"
    end
    if opts.password then
        conf[#conf + 1] = "requirepass " .. opts.password
    end
    for _, u in ipairs(opts.users or {}) do
        conf[#conf + 1] = "user " .. u.name .. " on >" .. u.password .. " "
                          .. (u.rules or "~* &* +@all")
    end
    for _, line in ipairs(opts.config or {}) do
        conf[#conf + 1] = line
    end
    local f = assert(io.open(self.dir .. "/redis.conf", "w"))
    f:write(table.concat(conf, "\n"), "\n")
    f:close()
    launch(self)
    return self
end

local function signal(self, sig)
    if self.pid then
        sh("kill -" .. sig .. " " .. self.pid)
    end
end

local wait_gone = proc.wait_gone

function Server:kill()
    if self.admin then
        self.admin:close()
        self.admin = nil
    end
    if self.pid then
        signal(self, "KILL")
        wait_gone(self.pid, 5)
        running[self.pid] = nil
        self.pid = nil
    end
end

function Server:restart()
    self:kill()
    launch(self)
end

function Server:pause() signal(self, "STOP") end
function Server:resume() signal(self, "CONT") end

function Server:stop()
    if self.admin then
        self.admin:close()
        self.admin = nil
    end
    if self.pid then
        signal(self, "CONT")
        signal(self, "TERM")
        if not wait_gone(self.pid, 5) then
            signal(self, "KILL")
            wait_gone(self.pid, 2)
        end
        running[self.pid] = nil
        self.pid = nil
    end
    if self.dir and self.dir:match("^/tmp/passport%-") then
        sh("rm -rf " .. self.dir)
        self.dir = nil
    end
end

-- Kill whatever is left when the Lua state closes (busted exits with
-- os.exit(code, true), which closes it).
M._guard = newproxy(true)
getmetatable(M._guard).__gc = function()
    for pid, server in pairs(running) do
        os.execute("kill -9 " .. pid .. " 2>/dev/null")
        if server.dir and server.dir:match("^/tmp/passport%-") then
            os.execute("rm -rf " .. server.dir)
        end
    end
end

return M
