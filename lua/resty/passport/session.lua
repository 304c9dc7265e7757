-- Session records as connect-redis stores them: one C pass reads the few
-- fields the gateway needs; only passport.user is handed to cjson, and only
-- when it is an object, an array or an escaped string.
local ffi = require "ffi"
local cjson = require "cjson.safe"
local core = require "resty.passport.core"

local C = core.C
local reasons = core.reasons
local band = require("bit").band
local ffi_new = ffi.new
local json_decode = cjson.new().decode
local error = error
local sub = string.sub
local tonumber = tonumber
local type = type

local _M = {
    _VERSION = "0.1.0",
    max_depth = 64,   -- nesting allowed in a record
    max_size = 1048576, -- bytes allowed in a record
}

local F_COOKIE = C.RP_SF_COOKIE
local F_EXPIRES = C.RP_SF_EXPIRES
local F_EXPIRES_INVALID = C.RP_SF_EXPIRES_INVALID
local F_MAXAGE = C.RP_SF_MAXAGE
local F_PASSPORT = C.RP_SF_PASSPORT
local F_USER = C.RP_SF_USER
local F_USER_OK = C.RP_SF_USER_OK
local F_USER_ESCAPED = C.RP_SF_USER_ESCAPED
local T_NUMBER = C.RP_JSON_NUMBER
local T_STRING = C.RP_JSON_STRING
local T_TRUE = C.RP_JSON_TRUE
local E_NOTOBJECT = C.RP_ENOTOBJECT

local info = ffi_new("rp_session")

local function user_value(json, off, len, typ, escaped)
    local raw = sub(json, off + 1, off + len)
    if typ == T_NUMBER then
        return tonumber(raw)
    elseif typ == T_STRING and not escaped then
        return sub(raw, 2, -2)
    elseif typ == T_TRUE then
        return true
    end
    return json_decode(raw)
end

-- Reads a session record.  Returns a table
--   { expires = ms|nil, expired = bool, expires_invalid = bool,
--     original_max_age = n|nil, has_cookie = bool,
--     passport = bool (passport initialized: session.passport is truthy),
--     user_present = bool (passport.user exists),
--     user_ok = bool (passport 0.7 would deserialize it),
--     user = the decoded passport.user when user_ok }
-- or nil and a reason for a record the Node app could not load either.
function _M.decode(json, now_ms, max_depth)
    if type(json) ~= "string" then
        error("bad argument #1 to 'decode' (string expected, got "
              .. type(json) .. ")", 2)
    end
    if now_ms ~= nil and type(now_ms) ~= "number" then
        error("bad argument #2 to 'decode' (number expected, got "
              .. type(now_ms) .. ")", 2)
    end
    if #json > _M.max_size then
        return nil, "session record too large"
    end
    local rc = C.rp_session_parse(json, #json, max_depth or _M.max_depth, info)
    if rc == E_NOTOBJECT then
        return nil, reasons[rc]
    elseif rc ~= 0 then
        return nil, reasons[rc] .. " at byte " .. tonumber(info.err_off)
    end
    local flags = info.flags
    local s = {
        has_cookie = band(flags, F_COOKIE) ~= 0,
        passport = band(flags, F_PASSPORT) ~= 0,
        user_present = band(flags, F_USER) ~= 0,
        user_ok = band(flags, F_USER_OK) ~= 0,
        expires_invalid = band(flags, F_EXPIRES_INVALID) ~= 0,
        expired = false,
    }
    if band(flags, F_EXPIRES) ~= 0 then
        local ms = info.expires_ms
        s.expires = ms
        s.expired = now_ms ~= nil and ms <= now_ms
    end
    if band(flags, F_MAXAGE) ~= 0 then
        s.original_max_age = info.original_max_age
    end
    if s.user_ok then
        local user, err = user_value(json, info.user_off, info.user_len,
                                     info.user_type,
                                     band(flags, F_USER_ESCAPED) ~= 0)
        if user == nil then
            return nil, "passport.user: " .. (err or "undecodable")
        end
        s.user = user
    end
    return s
end

-- ISO 8601 as Date.parse reads it: milliseconds since the epoch, or nil.
local ms_out = ffi_new("double[1]")
function _M.parse_date(s)
    if type(s) ~= "string" then
        error("bad argument #1 to 'parse_date' (string expected)", 2)
    end
    if C.rp_parse_date(s, #s, ms_out) ~= 0 then
        return nil, "invalid date"
    end
    return ms_out[0]
end

return _M
