-- The gateway side of the socket.io specs: the test application on
-- passport.socketio (the gateway's socket.io mode), the same application
-- as the Node reference spec/support/app/sio_reference.js.  Keep the two in
-- step: the specs run one client scenario against both and compare.
--
--   init_by_lua:        require("support.sio_app").configure { redis_port = ..., secret = ...,
--                           ping_interval = ..., ping_timeout = ..., connect_timeout = ...,
--                           ack_timeout = ..., origins = { ... } | nil, filters = true,
--                           transports = nil | { ... }, node = nil | "a", max_payload = 1e6,
--                           send_timeout = nil | s, emitter_key = nil | "socket.io" }
--   http:               lua_shared_dict passport_eio 10m;   -- polling (the client's default)
--   init_worker_by_lua: require("support.sio_app").init_worker()   -- emit/logout subscriber
--   location /socket.io/ { content_by_lua_block { require("support.sio_app").io:serve() } }
--   location = /log   { content_by_lua_block { require("support.sio_app").log_handler() } }
--   location = /emit  { content_by_lua_block { require("support.sio_app").emit_handler() } }
--   location = /probe { content_by_lua_block { require("support.sio_app").probe() } }
--   location = /who   { content_by_lua_block { require("support.sio_app").who_handler() } }
--
-- The application (namespaces "/" and "/admin"):
--   on connection   emit "hello" { user, nsp, auth }   (auth: the CONNECT payload)
--   "echo" ...args  ack(...args) when the client asked for an ack, else emit "echo" ...args
--   "ask" { args, timeout }   emit_with_ack "question" ...args (timeout ms, default the
--                   io's ack_timeout), then emit "answer" ("ok" | the error, ...reply)
--   "binary"        emit "bin" <00 01 02 ff>, { nested = "héllo" bytes, empty = <> }
--   "join" room     join it, ack("joined", room) when asked   "leave" room: the same
--   "bye"           socket:disconnect()       "bye-all": socket:disconnect(true)
--   "disconnect"    (reason) logged
-- Policies: the io's auth (passport.authorize with the Origin allow-list) on
-- every namespace; "/admin" adds an authorize object whose success lets in
-- role "admin" only ("forbidden"), then a plain middleware refusing a
-- CONNECT whose auth has block = true ("blocked").
--
-- What happened server-side, per client tag (the CONNECT payload's tag),
-- is kept in lua_shared_dict sio_log: GET /log?tag= returns a JSON list like
-- ["connect /", "ack /admin ok", "disconnect / ping timeout"].
local cjson = require "cjson.safe"

local ngx = ngx
local select = select
local tostring = tostring
local type = type
local unpack = unpack

local M = {}

local conf = {}

-- The app's users, as its deserializeUser sees them (sio_reference.js has the same).
local USERS = {
    [0] = { id = 0, username = "zero", role = "user" },
    [1] = { id = 1, username = "ann", role = "admin" },
    [2] = { id = 2, username = "bob", role = "user" },
    [3] = { id = 3, username = "cat", role = "admin" },
}

local function deserialize_user(id)
    local u = type(id) == "number" and USERS[id]
    if not u then return nil end
    return { id = u.id, username = u.username, role = u.role }
end

function M.configure(c)
    conf = c
end

local function passport()
    return require "resty.passport"
end

local store
function M.store()
    if not store then
        store = passport().redis { host = "127.0.0.1", port = conf.redis_port, prefix = "sess:" }
    end
    return store
end

function M.init_worker()
    return passport().init_worker {
        store = M.store(),
        filters = { admins = function(user) return type(user) == "table" and user.role == "admin" end },
        logout = {},
        -- socket.io's Redis emitter channels (issue #16), when configured
        socketio_emitter = conf.emitter_key and { key = conf.emitter_key } or nil,
    }
end

---------------------------------------------------------------------------
-- The server-side log, per tag, shared by the workers.

local function log(tag, entry)
    if tag == nil or tag == cjson.null then return end
    local dict = ngx.shared.sio_log
    if not dict then return end
    local key = tostring(tag)
    local n = dict:incr("n:" .. key, 1, 0)
    dict:set(key .. ":" .. n, entry)
end

function M.log_of(tag)
    local dict = ngx.shared.sio_log
    local out = setmetatable({}, cjson.array_mt)
    local n = dict and dict:get("n:" .. tag) or 0
    for i = 1, n do
        out[#out + 1] = dict:get(tag .. ":" .. i)
    end
    return out
end

function M.log_handler()
    ngx.header["Content-Type"] = "application/json"
    ngx.print(cjson.encode(M.log_of(ngx.var.arg_tag or "")))
end

---------------------------------------------------------------------------
-- The application.

local function app(socket)
    local p = passport()
    local nsp = socket.nsp
    local auth = socket.handshake and socket.handshake.auth or {}
    local tag = type(auth) == "table" and auth.tag or nil
    log(tag, "connect " .. nsp)
    socket:on("disconnect", function(reason)
        log(tag, "disconnect " .. nsp .. " " .. tostring(reason))
    end)
    socket:emit("hello", { user = socket.user, nsp = nsp, auth = auth })

    socket:on("echo", function(...)
        local n = select("#", ...)
        local args = { ... }
        if n > 0 and type(args[n]) == "function" then
            args[n](unpack(args, 1, n - 1))
        else
            socket:emit("echo", unpack(args, 1, n))
        end
    end)

    socket:on("ask", function(opts)
        if type(opts) ~= "table" then opts = {} end
        local args = type(opts.args) == "table" and opts.args or {}
        local n = #args
        local target = socket
        if type(opts.timeout) == "number" then target = socket:timeout(opts.timeout) end
        args[n + 1] = function(err, ...)
            local verdict = err and tostring(err) or "ok"
            log(tag, "ack " .. nsp .. " " .. verdict)
            socket:emit("answer", verdict, ...)
        end
        target:emit_with_ack("question", unpack(args, 1, n + 1))
    end)

    socket:on("binary", function()
        socket:emit("bin", p.binary("\0\1\2\255"),
                    { nested = p.binary("h\195\169llo"), empty = p.binary("") })
    end)

    socket:on("join", function(room, ack)
        socket:join(tostring(room))
        if type(ack) == "function" then ack("joined", room) end
    end)

    socket:on("leave", function(room, ack)
        socket:leave(tostring(room))
        if type(ack) == "function" then ack("left", room) end
    end)

    socket:on("bye", function() socket:disconnect() end)
    socket:on("bye-all", function() socket:disconnect(true) end)
end

local function build()
    local p = passport()
    local base = {
        secret = conf.secret,
        store = M.store(),
        deserialize_user = deserialize_user,
        origins = conf.origins,
    }
    local auth = p.authorize(base)
    local admin_opts = {}
    for k, v in pairs(base) do admin_opts[k] = v end
    admin_opts.success = function(data, accept)
        if type(data.user) == "table" and data.user.role == "admin" then
            accept()
        else
            accept("forbidden")
        end
    end
    local admin_only = p.authorize(admin_opts)

    local io = p.socketio {
        auth = auth,
        ping_interval = conf.ping_interval,
        ping_timeout = conf.ping_timeout,
        connect_timeout = conf.connect_timeout,
        ack_timeout = conf.ack_timeout,
        max_payload = conf.max_payload or 1e6,
        transports = conf.transports,
        node = conf.node,
        send_timeout = conf.send_timeout,
    }
    io:of("/"):on("connection", app)
    local admin = io:of("/admin")
    admin:use(admin_only)
    admin:use(function(socket, next)
        local a = socket.handshake and socket.handshake.auth
        if type(a) == "table" and a.block then
            next("blocked")
        else
            next()
        end
    end)
    admin:on("connection", app)
    return io
end

-- Whether this worker can build the io: "ok", or the error (a spec asks
-- this first, so that a missing socket.io mode fails with its reason).
function M.probe()
    local ok, err = pcall(function() return M.io end)
    ngx.print(ok and "ok" or tostring(err))
end

---------------------------------------------------------------------------
-- emit from an HTTP request (any worker, any node):
--   /emit?user=<number>|room=<name>|filter=<name>[&namespace=/admin]&event=&data=
-- prints what passport.emit returned, or "error: <err>".

function M.emit_handler()
    local a = ngx.req.get_uri_args()
    local msg = { namespace = a.namespace or "/", event = a.event or "notice", args = { a.data } }
    if a.user then
        msg.user = tonumber(a.user) or a.user
    elseif a.room then
        msg.room = a.room
    elseif a.filter then
        msg.filter = a.filter
    end
    local ok, n, err = pcall(passport().emit, msg)
    if not ok then
        err, n = n, nil
    end
    ngx.print(n ~= nil and tostring(n) or ("error: " .. tostring(err)))
end

-- This worker's sockets, as passport.filter_sockets_by_user and
-- passport.sockets_of see them: /who?user=<number> prints
-- { pid, all, admins, of, nsps = { "/" = n, "/admin" = n } } as JSON.
function M.who_handler()
    local p = passport()
    local all = p.filter_sockets_by_user(function() return true end)
    local admins = p.filter_sockets_by_user(function(user)
        return type(user) == "table" and user.role == "admin"
    end)
    local nsps = {}
    for _, s in ipairs(all) do
        local name = s.nsp or "?"
        nsps[name] = (nsps[name] or 0) + 1
    end
    local user = tonumber(ngx.var.arg_user or "")
    ngx.print(cjson.encode { pid = ngx.worker.pid(), all = #all, admins = #admins,
                             of = user and #p.sockets_of(user) or 0, nsps = nsps })
end

-- io: built on first use, once per worker.
return setmetatable(M, {
    __index = function(t, k)
        if k == "io" then
            local io = build()
            rawset(t, "io", io)
            return io
        end
    end,
})
