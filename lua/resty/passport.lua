-- lua-resty-passport: who is this WebSocket?  The entry point.
--
--   local passport = require "resty.passport"
--   local auth = passport.authorize { secret = ..., store = passport.redis { ... } }
--   auth:access()      -- nginx access phase
--   auth:check(req)    -- any host
--   passport.websocket(auth, opts)   -- content phase: the gateway holds it
--   passport.attach(wb, data)        -- content phase: the handler holds it
--   passport.socketio{ auth = auth }; io:of("/"):on("connection", fn); io:serve()
--   passport.init_worker{...}; passport.emit{...}
--   passport.filter_sockets_by_user(fn); passport.sockets_of(user)
local authorize = require "resty.passport.authorize"
local nginx = require "resty.passport.nginx"

local require = require

local _M = { _VERSION = "0.1.0" }

_M.messages = authorize.messages

function _M.authorize(opts)
    return nginx.authorize(opts)
end

-- A connect-redis compatible store (resty.passport.store.redis).
function _M.redis(opts)
    return require("resty.passport.store.redis").new(opts)
end

-- The socket layer needs nginx: loaded on first use, so that plain LuaJIT
-- (tools, specs, the rock's smoke test) can require this module.
local function lazy(name)
    local mod
    return function()
        if not mod then mod = require(name) end
        return mod
    end
end
local websocket = lazy "resty.passport.websocket"
local attach = lazy "resty.passport.attach"
local engineio = lazy "resty.passport.engineio"
local socketio = lazy "resty.passport.socketio"
local bus = lazy "resty.passport.bus"
local registry = lazy "resty.passport.registry"
local metrics = lazy "resty.passport.metrics"
local status = lazy "resty.passport.status"

-- content_by_lua: authorizes the handshake with auth and returns the
-- socket, or sends the HTTP error and returns nil.
function _M.websocket(auth, opts)
    return websocket().serve(auth, opts)
end

-- content_by_lua: a WebSocket the handler made itself (lua-resty-websocket's
-- resty.websocket.server) joins the registry for emit, sockets_of and
-- logout; data is authorize's (ngx.ctx.passport after auth:access()).
function _M.attach(wb, data, opts)
    return attach().attach(wb, data, opts)
end

-- A Socket.IO server (socket.io-client connects to nginx); io:serve() in
-- content_by_lua.
function _M.socketio(opts)
    return socketio().new(opts)
end

-- An Engine.IO server on its own (npm engine.io's sockets).
function _M.engineio(opts)
    return engineio().new(opts)
end

-- A binary value for Socket.IO (received ones are such values: v.data).
function _M.binary(s)
    return socketio().binary(s)
end

-- init_worker_by_lua: the subscriber for emit and logout.
function _M.init_worker(opts)
    return bus().init_worker(opts)
end

function _M.emit(msg)
    return bus().emit(msg)
end

-- This worker's sockets whose user fn(user, socket) accepts.
function _M.filter_sockets_by_user(fn)
    return registry().filter(fn)
end

-- This worker's sockets of one passport.user value (an index lookup).
function _M.sockets_of(user)
    return registry().of_user(user)
end

-- init_worker_by_lua: counters in opts.dict (a lua_shared_dict), and each
-- worker's status report there.
function _M.init_metrics(opts)
    if require("resty.passport.host").phase() ~= "init_worker" then
        error("passport.init_metrics must be called from init_worker_by_lua", 2)
    end
    metrics().configure(opts)
    status().start()
    return true
end

-- content_by_lua: Prometheus's text format (503 until init_metrics).
function _M.metrics()
    return metrics().serve()
end

-- content_by_lua: every worker's view as JSON; 200 healthy, else 503.
function _M.status()
    return status().serve()
end

-- log_by_lua of a handshake location behind limit_req / limit_conn: the
-- refusals they made counted as reason "rate_limited" of mode.
function _M.count_rate_limited(mode)
    return nginx.count_rate_limited(mode)
end

return _M
