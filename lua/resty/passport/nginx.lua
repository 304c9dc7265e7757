-- The nginx side of a handshake: what authorize needs from the request
-- (Cookie, Origin, the signed query value, lazy headers and query), the
-- access phase with its identity headers, and the HTTP answer to a refusal.
-- authorize.lua stays free of ngx; this module adds access() to its
-- objects.  Nothing here touches ngx at load time, so plain LuaJIT (specs,
-- tools) can load it and use auth:check().
local cjson = require "cjson.safe"
local authorize = require "resty.passport.authorize"
local host = require "resty.passport.host"
local metrics = require "resty.passport.metrics"

local concat = table.concat
local error = error
local find = string.find
local floor = math.floor
local format = string.format
local gsub = string.gsub
local lower = string.lower
local next = next
local pairs = pairs
local rawget = rawget
local setmetatable = setmetatable
local tostring = tostring
local type = type
local json_encode = cjson.encode
local json_null = cjson.null

local ngx = ngx -- luacheck: ignore 211 (nil outside nginx)

local _M = { _VERSION = "0.1.0" }

---------------------------------------------------------------------------
-- Handshakes counted (passport_handshakes_total): by mode, outcome and a
-- reason from a short fixed list, never the message itself (a fail
-- callback may say anything).

local MSG = authorize.messages
local REASON = {
    [MSG.no_session] = "no_session", [MSG.no_passport] = "no_passport",
    [MSG.no_user] = "no_user", [MSG.user_not_found] = "user_not_found",
    [MSG.origin] = "origin", [MSG.timeout] = "accept_timeout",
    [MSG.pending] = "callback_pending", [MSG.refused] = "refused",
}
local hs_keys = {} -- mode -> outcome -> reason -> the metric's key

local function hs_key(mode, outcome, reason)
    local by_outcome = hs_keys[mode]
    if not by_outcome then
        by_outcome = {}
        hs_keys[mode] = by_outcome
    end
    local by_reason = by_outcome[outcome]
    if not by_reason then
        by_reason = {}
        by_outcome[outcome] = by_reason
    end
    local k = by_reason[reason]
    if not k then
        k = metrics.key("passport_handshakes_total",
                        { mode = mode, outcome = outcome, reason = reason })
        by_reason[reason] = k
    end
    return k
end

-- One verdict of mode ("guard", "terminate", "engineio", "socketio"):
-- verify's ok, message and is_error.
function _M.count(mode, ok, msg, is_error)
    if not metrics.enabled() then return end
    if ok then
        return metrics.add(hs_key(mode, "accepted", "none"))
    end
    local reason = REASON[msg]
    if not reason then
        if is_error then
            reason = find(msg, MSG.store, 1, true) == 1 and "store_error" or "error"
        else
            reason = "policy" -- a fail callback's own message
        end
    end
    return metrics.add(hs_key(mode, is_error and "error" or "refused", reason))
end
local count = _M.count

-- log_by_lua: a handshake that limit_req or limit_conn refused never
-- reached Lua; the log phase sees it.
function _M.count_rate_limited(mode)
    if not metrics.enabled() then return end
    local var = ngx.var
    if var.limit_req_status == "REJECTED" or var.limit_conn_status == "REJECTED" then
        metrics.add(hs_key(mode, "refused", "rate_limited"))
    end
end

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

-- What a client may read of an error (is_error): the messages written
-- here, never the details (a Redis address, a Lua chunk and line, a
-- deserialize_user error), which go to the error log and to fail().
local PUBLIC = {}
for _, m in pairs(authorize.messages) do PUBLIC[m] = true end
local STORE_ERROR = "Error in session store"

-- Logs a verify() failure (no secrets, no cookie values) and answers it:
-- 401 no or invalid session, 403 policy or Origin, 503 store error.
-- refusal(msg, is_error, data) --> the HTTP status and what the client
-- may read, once logged: for an answer in another form than reject's (a
-- Socket.IO CONNECT_ERROR).
function _M.refusal(msg, is_error, data)
    local status = data.status or (is_error and 503 or 401)
    local why = data.reason and " [" .. data.reason .. "]" or ""
    host.log(is_error and "err" or "info", "passport: rejected (" .. status .. "): "
             .. gsub(msg, "\n", " ") .. why)
    if is_error and not PUBLIC[msg] then
        msg = status == 503 and STORE_ERROR or authorize.messages.refused
    end
    return status, msg
end
local refusal = _M.refusal

function _M.reject(msg, is_error, data)
    return respond_error(refusal(msg, is_error, data))
end
local reject = _M.reject

-- The identity header's JSON.  cjson writes 14 significant digits, so two
-- users whose ids differ past the 14th would look the same to the app:
-- here a number goes out as JavaScript reads it, an integer up to 2^53
-- whole and any other double with the 17 digits that round-trip it.
local MAX_SAFE = 2 ^ 53
local MAX_DEPTH = 32

local encode_value

local function encode_number(v)
    if v ~= v or v == 1 / 0 or v == -1 / 0 then
        return nil, "not a finite number"
    end
    if v == floor(v) and v >= -MAX_SAFE and v <= MAX_SAFE then
        return format("%d", v)
    end
    return format("%.17g", v)
end

-- A table with keys 1..n only is an array (cjson's rule, without its
-- sparse-array heuristics: a hole makes it an object with string keys).
local function is_array(t)
    local n = #t
    if n == 0 then return false end
    local keys = 0
    for _ in next, t do keys = keys + 1 end
    return keys == n
end

local function encode_table(t, depth, out)
    if depth > MAX_DEPTH then return nil, "nested too deep" end
    local n = #out
    if is_array(t) then
        out[n + 1] = "["
        for i = 1, #t do
            if i > 1 then out[#out + 1] = "," end
            local ok, err = encode_value(t[i], depth + 1, out)
            if not ok then return nil, err end
        end
        out[#out + 1] = "]"
        return true
    end
    out[n + 1] = "{"
    for k, v in next, t do
        local tk = type(k)
        if tk ~= "string" and tk ~= "number" then return nil, "a " .. tk .. " key" end
        if #out > n + 1 then out[#out + 1] = "," end
        out[#out + 1] = json_encode(tostring(k))
        out[#out + 1] = ":"
        local ok, err = encode_value(v, depth + 1, out)
        if not ok then return nil, err end
    end
    out[#out + 1] = "}"
    return true
end

function encode_value(v, depth, out)
    local t = type(v)
    if t == "number" then
        local s, err = encode_number(v)
        if not s then return nil, err end
        out[#out + 1] = s
    elseif t == "string" or t == "boolean" or v == json_null then
        out[#out + 1] = json_encode(v)
    elseif t == "table" then
        return encode_table(v, depth, out)
    else
        return nil, "cannot encode a " .. t
    end
    return true
end

-- user --> its JSON for X-Passport-User | nil, err
function _M.identity_json(user)
    local out = {}
    local ok, err = encode_value(user, 1, out)
    if not ok then return nil, err end
    return concat(out)
end
local identity_json = _M.identity_json

local function set_identity(names, data)
    local set_header = ngx.req.set_header
    if names.logged_in then
        set_header(names.logged_in, data.user.logged_in and "true" or "false")
    end
    if names.user and data.user.logged_in then
        local json, err = identity_json(data.user)
        if json then
            set_header(names.user, json)
        else
            host.log("warn", "passport: user not sent upstream: " .. err)
        end
    end
end

-- The nginx variables that hold the identity headers, whatever their
-- spelling ($http_x_passport_user matches X-Passport-User and
-- X_Passport_User alike), and the names as compared below; made once per
-- authorize object.
local spelled = setmetatable({}, { __mode = "k" })

local function spellings(names)
    local sp = spelled[names]
    if not sp then
        sp = { vars = {}, wanted = {} }
        for _, name in pairs(names) do
            local dashed = gsub(lower(name), "_", "-")
            sp.vars[#sp.vars + 1] = "http_" .. gsub(dashed, "-", "_")
            sp.wanted[dashed] = true
        end
        spelled[names] = sp
    end
    return sp
end

-- Clears every request header that names an identity header, with "_"
-- read as "-": with underscores_in_headers on, X_Passport_User reaches the
-- upstream, and FastCGI, uwsgi, WSGI and Rack give the app both spellings
-- as one variable.  The common case (no such header) costs one variable
-- read per name.
local function clear_identity(names)
    local sp = spellings(names)
    local var, vars = ngx.var, sp.vars
    local sent = false
    for i = 1, #vars do
        if var[vars[i]] then sent = true break end
    end
    if not sent then return end
    local wanted, clear = sp.wanted, ngx.req.clear_header
    for h in pairs(ngx.req.get_headers(0, true)) do
        if wanted[gsub(lower(h), "_", "-")] then clear(h) end
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
        clear_identity(names)
    end
    local ok, msg, is_error, data = self:verify(handshake_input(self))
    count("guard", ok, msg, is_error)
    if ok then
        ngx.ctx.passport = msg
        if names then set_identity(names, msg) end
        return true
    end
    return reject(msg, is_error, data)
end

return _M
