-- passport.socketio's authorize(), in the gateway: find and verify the
-- session cookie, load the session, check passport.user, deserialize it and
-- let the operator's success/fail callbacks decide.
local cjson = require "cjson.safe"
local cookie = require "resty.passport.cookie"
local session = require "resty.passport.session"
local host = require "resty.passport.host"

local express_sid = cookie.express_sid
local session_cookie = cookie.session_cookie
local unsign = cookie.unsign
local decode_session = session.decode
local logged_in = session.logged_in
local now_ms = host.now_ms
local json_decode = cjson.decode
local error = error
local ipairs = ipairs
local lower = string.lower
local pcall = pcall
local rawget = rawget
local rawset = rawset
local setmetatable = setmetatable
local tostring = tostring
local type = type

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }

-- The messages passport.socketio gives, which clients and logs match on.
local MSG = {
    no_session = "No session found",
    store = "Error in session store:\n",
    no_passport = "Passport was not initialized",
    no_user = "User not authorized through passport. (User Property not found)",
    user_not_found = "User not found",
    origin = "Origin not allowed",
    refused = "handshake unauthorized",
    timeout = "accept was not called in time",
    pending = "the callback returned without calling accept",
}
_M.messages = MSG

local DEFAULT_HEADERS = { user = "X-Passport-User", logged_in = "X-Passport-Logged-In" }

-- data.session is decoded from the record only when a callback reads it.
local data_mt = {
    __index = function(t, k)
        if k == "session" then
            local record = rawget(t, "_record")
            local s = record and json_decode(record)
            rawset(t, "session", s)
            return s
        elseif k == "headers" or k == "query" then
            local get = rawget(t, k == "headers" and "_get_headers" or "_get_query")
            local v = get and get()
            rawset(t, k, v)
            return v
        end
    end,
}

local function argerr(name, expected, got)
    error("bad option '" .. name .. "' to 'authorize' (" .. expected
          .. " expected, got " .. type(got) .. ")", 3)
end

local function opt_function(opts, name)
    local f = opts[name]
    if f ~= nil and type(f) ~= "function" then argerr(name, "function", f) end
    return f
end

-- class_mt: the metatable of the object returned (nginx.lua adds access()
-- to the methods here); defaults to the host-neutral one.
function _M.new(opts, class_mt)
    if type(opts) ~= "table" then
        error("bad argument #1 to 'authorize' (table expected, got "
              .. type(opts) .. ")", 2)
    end
    local format = opts.format or "express"
    if format ~= "express" and format ~= "cookie-session" then
        error("bad option 'format' to 'authorize' (\"express\" or "
              .. "\"cookie-session\" expected)", 2)
    end
    local express = format == "express"

    local key = opts.key or (express and "connect.sid" or "session")
    if type(key) ~= "string" or key == "" then argerr("key", "non-empty string", key) end
    if opts.secret == nil then
        error("option 'secret' to 'authorize' is required (the app's session secret, "
              .. "or a list of them, newest first)", 2)
    end
    local ok, ring = pcall(cookie.keyring, opts.secret, express and "sha256" or "sha1")
    if not ok then
        error("bad option 'secret' to 'authorize': " .. tostring(ring):gsub("^.-: ", ""), 2)
    end

    local store = opts.store
    if express then
        if type(store) ~= "table" or type(store.get) ~= "function" then
            error("option 'store' to 'authorize' must be a store: a table with a "
                  .. "get(self, sid) method, e.g. passport.redis{...}", 2)
        end
    elseif store ~= nil then
        error("option 'store' to 'authorize' is not used with format "
              .. "\"cookie-session\": the session is in the cookie", 2)
    end

    local origins
    if opts.origins ~= nil then
        if type(opts.origins) ~= "table" then argerr("origins", "list of strings", opts.origins) end
        origins = {}
        for _, o in ipairs(opts.origins) do
            if type(o) ~= "string" then argerr("origins", "list of strings", o) end
            origins[lower(o)] = true
        end
    end

    local query_key = opts.query_key
    if query_key == false then query_key = nil end
    if query_key ~= nil and (type(query_key) ~= "string" or query_key == "") then
        argerr("query_key", "non-empty string or false", query_key)
    end

    local timeout = opts.accept_timeout or 5
    if type(timeout) ~= "number" or timeout <= 0 then
        argerr("accept_timeout", "positive number (seconds)", timeout)
    end
    local max_header = opts.max_header_size or cookie.max_header_size
    if type(max_header) ~= "number" or max_header < 1 then
        argerr("max_header_size", "positive number", max_header)
    end

    local headers = opts.headers
    if headers == nil then headers = DEFAULT_HEADERS end
    if headers ~= false and type(headers) ~= "table" then
        argerr("headers", "table or false", headers)
    end

    return setmetatable({
        format = format,
        express = express,
        key = key,
        ring = ring,
        store = store,
        success = opt_function(opts, "success"),
        fail = opt_function(opts, "fail"),
        deserialize_user = opt_function(opts, "deserialize_user"),
        origins = origins,
        query_key = query_key,
        query_var = query_key and "arg_" .. query_key,
        accept_timeout = timeout,
        max_header_size = max_header,
        identity_headers = headers or nil,
    }, class_mt or mt)
end

local function failure(message, is_error, status, reason)
    return { message = message, is_error = is_error, status = status, reason = reason }
end

local function message_of(err)
    if type(err) == "table" and err.message ~= nil then
        return tostring(err.message)
    end
    return tostring(err)
end

-- express_sid's reasons that mean "the request carries no cookie of that
-- name at all": only then may the signed query value stand in for it.  A
-- cookie that came and failed (stale after a rotation, tampered) must not
-- be replaced by a value from a link, which could log a victim into
-- someone else's session.
local NO_COOKIE = { ["no cookie header"] = true, ["cookie not found"] = true }

-- The session id from the cookie or, when none came, a signed query value.
local function find_sid(self, cookie_header, query_value)
    local sid, reason = express_sid(cookie_header, self.key, self.ring, self.max_header_size)
    if not sid and query_value and NO_COOKIE[reason] then
        sid, reason = unsign(query_value, self.ring)
    end
    if sid == "" then
        return nil, "empty session id"
    end
    return sid, reason
end

-- auth:session_key(cookie_header[, query_value]) --> what names the
-- browser's session, verified but not looked up: the express-session id,
-- or (cookie-session) the serialized passport user of the signed cookie;
-- "" when the request carries none.  Engine.IO's later requests of one
-- session must bring the same key as its handshake.
function _M.session_key(self, cookie_header, query_value)
    if self.express then
        return find_sid(self, cookie_header, query_value) or ""
    end
    local body = session_cookie(cookie_header, self.key, self.ring, self.max_header_size)
    local s = body and decode_session(body)
    local user = s and s.user
    if user == nil then return "" end
    if type(user) == "table" then return "t:" .. (cjson.encode(user) or "") end
    return type(user) .. ":" .. tostring(user)
end

-- Loads and reads the session: returns the decoded record info or a failure.
local function load(self, data, cookie_header, query_value)
    if not self.express then
        local body, reason = session_cookie(cookie_header, self.key, self.ring,
                                            self.max_header_size)
        if not body then
            return nil, failure(MSG.no_session, false, 401, reason)
        end
        local s, err = decode_session(body)
        if not s then
            if err == "JSON is not an object" then
                return nil, failure(MSG.no_passport, false, 401)
            end
            return nil, failure(MSG.no_session, false, 401, "session cookie: " .. err)
        end
        data._record = body
        return s
    end

    local sid, reason = find_sid(self, cookie_header, query_value)
    if not sid then
        return nil, failure(MSG.no_session, false, 401, reason)
    end
    data.session_id = sid
    local store = self.store
    local ok, json, err = pcall(store.get, store, sid)
    if not ok then
        err, json = json, nil
    end
    if json == nil then
        if err ~= nil then
            return nil, failure(MSG.store .. message_of(err), true, 503)
        end
        return nil, failure(MSG.no_session, false, 401, "no record in the store")
    end
    if type(json) ~= "string" then
        return nil, failure(MSG.store .. "store returned a " .. type(json)
                            .. ", not a JSON string", true, 503)
    end
    local s, derr = decode_session(json)
    if not s then
        return nil, failure(MSG.store .. "bad session record: " .. derr, true, 503)
    end
    data._record = json
    return s
end

-- Steps 3-4 from a decoded record: the logged-in rule, then
-- deserialize_user.  Returns nil or a failure; sets data.serialized_user
-- and data.user.
local function from_record(self, data, s)
    local check_expires = self.store and self.store.check_expires
    local live, why, detail = logged_in(s, check_expires and now_ms() or nil, check_expires,
                                        self.express)
    if not live then
        if why == "unreadable" then
            -- Express's session loader throws on such a record
            return failure(MSG.store .. "session record has no cookie", true, 503)
        elseif why == "expired" then
            return failure(MSG.no_session, false, 401, "session expired")
        end
        -- passport >= 0.6 leaves anonymous sessions without the key.
        return failure(detail == "no_passport" and MSG.no_passport or MSG.no_user, false, 401)
    end
    data.serialized_user = s.user
    local user = s.user
    local deserialize = self.deserialize_user
    if deserialize then
        local ok, u, err = pcall(deserialize, s.user, data)
        if not ok then
            return failure(message_of(u), true, 503)
        end
        user = u
        if not user then
            if err ~= nil then
                return failure(message_of(err), true, 503)
            end
            return failure(MSG.user_not_found, false, 401)
        end
    end
    if type(user) == "table" then
        user.logged_in = true
    else
        user = { value = user, logged_in = true }
    end
    data.user = user
    return nil
end

-- Steps 1-4: everything up to the policy.  Returns nil or a failure.
local function identify(self, data, cookie_header, origin, query_value)
    if self.origins and origin ~= nil and not self.origins[lower(origin)] then
        return failure(MSG.origin, false, 403)
    end
    local s, fail = load(self, data, cookie_header, query_value)
    if not s then
        return fail
    end
    return from_record(self, data, s)
end

-- The callback runs through host.run, which may wait for an accept called
-- later.  Kept apart from decide(): a function that creates closures cannot
-- be compiled on its early-return paths (LuaJIT NYI: UCLO).
local function run_callback(self, callback, data, fail)
    return host.run(function(finish)
        local function accept(err, allowed)
            finish({ err = err, allowed = allowed })
        end
        if fail then
            callback(data, fail.message, fail.is_error, accept)
        else
            callback(data, accept)
        end
    end, self.accept_timeout)
end

-- Step 5: the operator's callback decides, once.
local function decide(self, data, fail)
    -- not "fail and self.fail or self.success": without a fail callback,
    -- a refused handshake must not reach success
    local callback
    if fail then callback = self.fail else callback = self.success end
    if not callback then
        if fail then return false, fail end
        return true
    end
    local r = run_callback(self, callback, data, fail)

    local which = fail and "fail" or "success"
    if r.thrown then
        host.log("err", "passport: " .. which .. " callback raised: " .. r.thrown)
        return false, failure(r.thrown, true, 500)
    elseif r.timeout then
        host.log("err", "passport: " .. which .. " callback did not call accept within "
                 .. self.accept_timeout .. " s")
        return false, failure(MSG.timeout, true, 500)
    elseif r.pending then
        return false, failure(MSG.pending, true, 500)
    elseif r.err ~= nil then
        local f = fail or failure(nil, false, 403)
        return false, failure(message_of(r.err), f.is_error, f.status, f.reason)
    elseif r.allowed == false then
        return false, fail or failure(MSG.refused, false, 403)
    end
    return true
end

-- The whole handshake.  headers and query are tables (check) or getters
-- (nginx, where they are read only when a callback asks for them).
function _M.verify(self, cookie_header, origin, query_value, headers, query)
    local hget = type(headers) == "function"
    local qget = type(query) == "function"
    local data = setmetatable({
        user = { logged_in = false },
        headers = not hget and headers or nil,
        query = not qget and query or nil,
        _get_headers = hget and headers or nil,
        _get_query = qget and query or nil,
        _auth = self,
    }, data_mt)
    local fail = identify(self, data, cookie_header, origin, query_value)
    local ok, f = decide(self, data, fail)
    if ok then
        return true, data
    end
    data.status = f.status
    data.reason = f.reason
    return false, f.message, f.is_error, data
end

-- The policy again, for a socket admitted earlier whose record changed
-- (revalidation): the record's rule, deserialize_user and success/fail,
-- exactly as at the handshake.  data is the handshake's (its session_id,
-- and the headers and query if a callback read them then: the request is
-- gone, nothing more can be read from it).  json: the record now in the
-- store.  Returns true, new_data | false, message, is_error, new_data.
function _M.reverify(self, data, json)
    local fresh = setmetatable({
        user = { logged_in = false },
        session_id = data.session_id,
        headers = rawget(data, "headers") or {},
        query = rawget(data, "query") or {},
        _auth = self,
    }, data_mt)
    local s, err = decode_session(json)
    local fail
    if not s then
        fail = failure(MSG.store .. "bad session record: " .. err, true, 503)
    else
        fresh._record = json
        fail = from_record(self, fresh, s)
    end
    local ok, f = decide(self, fresh, fail)
    if ok then
        return true, fresh
    end
    return false, f.message, f.is_error, fresh
end

local function header(headers, name)
    local v = headers[name]
    if v == nil then v = headers[lower(name)] end
    return v
end

-- Any host: req = { headers = {...}, query = {...} }.
-- Returns true, data | false, message, is_error, data.
function _M.check(self, req)
    if type(self) ~= "table" or rawget(self, "ring") == nil then
        error("use auth:check(req), not auth.check(req)", 2)
    end
    if type(req) ~= "table" then
        error("bad argument #1 to 'check' (table expected, got " .. type(req) .. ")", 2)
    end
    local headers = req.headers or {}
    local query = req.query or {}
    local cookie_header = header(headers, "Cookie")
    local origin = header(headers, "Origin")
    local query_value = self.query_key and query[self.query_key]
    if type(query_value) ~= "string" then query_value = nil end
    return self:verify(cookie_header, origin, query_value, headers, query)
end

return _M
