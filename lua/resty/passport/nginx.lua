-- The nginx side of a handshake: what authorize needs from the request
-- (Cookie, Origin, the signed query value, lazy headers and query), the
-- access phase with its identity headers, and the HTTP answer to a refusal.
-- authorize.lua stays free of ngx; this module adds access() to its
-- objects.  Nothing here touches ngx at load time, so plain LuaJIT (specs,
-- tools) can load it and use auth:check().
local cjson = require "cjson.safe"
local authorize = require "resty.passport.authorize"
local host = require "resty.passport.host"

local error = error
local pairs = pairs
local rawget = rawget
local setmetatable = setmetatable
local type = type

local ngx = ngx -- luacheck: ignore 211 (nil outside nginx)

local _M = { _VERSION = "0.1.0" }

-- The objects passport.authorize returns: authorize's methods + access().
local methods = setmetatable({}, { __index = authorize })
local class_mt = { __index = methods }

function _M.authorize(opts)
    return authorize.new(opts, class_mt)
end

-- cookie_header, origin, query_value, get_headers, get_query: the inputs
-- of auth:verify for this request.  Headers and query are getters, read
-- from nginx only when a callback asks for data.headers / data.query.
function _M.handshake_input(auth)
    local var = ngx.var
    local query_value
    local query_var = auth.query_var
    if query_var then
        query_value = var[query_var]
        if query_value then query_value = ngx.unescape_uri(query_value) end
    end
    local req = ngx.req
    return var.http_cookie, var.http_origin, query_value, req.get_headers, req.get_uri_args
end
local handshake_input = _M.handshake_input

-- The HTTP answer to a refused handshake: status, {"error": message}.
function _M.respond_error(status, msg, extra)
    ngx.status = status
    local header = ngx.header
    header["Content-Type"] = "application/json"
    header["Cache-Control"] = "no-store"
    if extra then
        for k, v in pairs(extra) do header[k] = v end
    end
    local body = cjson.encode({ error = msg })
    header["Content-Length"] = #body
    ngx.print(body)
    return ngx.exit(status)
end
local respond_error = _M.respond_error

-- Logs a verify() failure (no secrets, no cookie values) and answers it:
-- 401 no or invalid session, 403 policy or Origin, 503 store error.
function _M.reject(msg, is_error, data)
    local status = data.status or (is_error and 503 or 401)
    local why = data.reason and " [" .. data.reason .. "]" or ""
    host.log(is_error and "err" or "info", "passport: rejected (" .. status .. "): "
             .. msg:gsub("\n", " ") .. why)
    return respond_error(status, msg)
end
local reject = _M.reject

local function set_identity(names, data)
    local set_header = ngx.req.set_header
    if names.logged_in then
        set_header(names.logged_in, data.user.logged_in and "true" or "false")
    end
    if names.user and data.user.logged_in then
        local json, err = cjson.encode(data.user)
        if json then
            set_header(names.user, json)
        else
            host.log("warn", "passport: user not sent upstream: " .. err)
        end
    end
end

-- nginx access phase, in front of proxy_pass to a socket.io or WebSocket
-- upstream.  Accept: ngx.ctx.passport = data and identity headers for the
-- upstream.  Reject: 401, 403 or 503 with {"error": message}.
function methods.access(self)
    if type(self) ~= "table" or rawget(self, "ring") == nil then
        error("use auth:access(), not auth.access()", 2)
    end
    local names = self.identity_headers
    if names then
        -- Whatever the client sent under these names must not reach the app.
        local clear = ngx.req.clear_header
        for _, name in pairs(names) do clear(name) end
    end
    local ok, msg, is_error, data = self:verify(handshake_input(self))
    if ok then
        ngx.ctx.passport = msg
        if names then set_identity(names, msg) end
        return true
    end
    return reject(msg, is_error, data)
end

return _M
