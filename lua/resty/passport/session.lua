-- Session records as connect-redis stores them: one C pass reads the few
-- fields the gateway needs; only passport.user is handed to cjson, and only
-- when it is an object, an array or an escaped string.
local ffi = require "ffi"
local cjson = require "cjson.safe"
local core = require "resty.passport.ffi"

local C = core.C
local reasons = core.reasons
local band = require("bit").band
local ffi_new = ffi.new
local json_decode = cjson.new().decode
local char = string.char
local concat = table.concat
local error = error
local find = string.find
local floor = math.floor
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
local F_USER_BADUTF8 = C.RP_SF_USER_BADUTF8
local T_NUMBER = C.RP_JSON_NUMBER
local T_STRING = C.RP_JSON_STRING
local T_TRUE = C.RP_JSON_TRUE
local E_NOTOBJECT = C.RP_ENOTOBJECT

local info = ffi_new("rp_session")

local REPLACEMENT = "\239\191\189" -- U+FFFD
local bad = ffi_new("size_t[2]") -- rp_utf8_scan's offset and length

-- node-redis decodes a record as UTF-8 before JSON.parse, replacing each
-- maximal invalid subsequence with U+FFFD (the WHATWG decoder's rule): the
-- C scan finds them one at a time.
local function sanitize_utf8(s)
    local p = ffi.cast("const unsigned char *", s)
    local out, n, at, len = {}, 0, 0, #s
    while C.rp_utf8_scan(p + at, len - at, bad, bad + 1) ~= 0 do
        local off = at + tonumber(bad[0])
        n = n + 1
        out[n] = sub(s, at + 1, off) .. REPLACEMENT
        at = off + tonumber(bad[1])
    end
    if n == 0 then return s end
    out[n + 1] = sub(s, at + 1)
    return concat(out)
end

local function utf8_char(cp)
    if cp < 0x80 then return char(cp) end
    if cp < 0x800 then return char(0xC0 + floor(cp / 64), 0x80 + cp % 64) end
    if cp < 0x10000 then
        return char(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
    end
    return char(0xF0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64,
                0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
end

local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f",
                  n = "\n", r = "\r", t = "\t" }

-- A JSON string body (validated by the C scanner) to bytes.  JS strings may
-- hold lone surrogates ("\ud800"), which cjson refuses: they become their
-- 3-byte (WTF-8) form, and surrogate pairs become one 4-byte character.
local function unescape(body)
    local out, n, i = {}, 0, 1
    while true do
        local j = find(body, "\\", i, true)
        if not j then break end
        n = n + 1
        out[n] = sub(body, i, j - 1)
        local e = sub(body, j + 1, j + 1)
        if e == "u" then
            local cp = tonumber(sub(body, j + 2, j + 5), 16)
            i = j + 6
            if cp >= 0xD800 and cp <= 0xDBFF and sub(body, i, i + 1) == "\\u" then
                local lo = tonumber(sub(body, i + 2, i + 5), 16)
                if lo >= 0xDC00 and lo <= 0xDFFF then
                    cp = 0x10000 + (cp - 0xD800) * 1024 + (lo - 0xDC00)
                    i = i + 6
                end
            end
            out[n] = out[n] .. utf8_char(cp)
        else
            out[n] = out[n] .. ESCAPES[e]
            i = j + 2
        end
    end
    out[n + 1] = sub(body, i)
    return concat(out)
end

local function user_value(json, off, len, typ, escaped, badutf8)
    local raw = sub(json, off + 1, off + len)
    if typ == T_NUMBER then
        return tonumber(raw)
    elseif typ == T_TRUE then
        return true
    end
    -- The C scan knows: no string.find with a pattern (not compiled by
    -- LuaJIT 2.1) and no Lua pass over valid UTF-8 on the hot path.
    if badutf8 then
        raw = sanitize_utf8(raw)
    end
    if typ == T_STRING then
        raw = sub(raw, 2, -2)
        return escaped and unescape(raw) or raw
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
                                     band(flags, F_USER_ESCAPED) ~= 0,
                                     band(flags, F_USER_BADUTF8) ~= 0)
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

-- The one rule for "is this record a logged-in session at now_ms?": the
-- handshake and revalidation both ask it, so they give one verdict.
-- store_record: a record express-session wrote, which always has a cookie
-- object; without one Express fails the request (its loader throws), so
-- the record is unreadable, not anonymous.  A passed cookie.expires counts
-- only with check_expires (the store option): connect-redis, and so
-- Express, trusts the key's TTL alone.
--   true | false, "unreadable" | false, "expired"
--   | false, "logged out", "no_passport" | "no_user"
function _M.logged_in(s, now_ms, check_expires, store_record)
    if store_record and not s.has_cookie then
        return false, "unreadable"
    end
    if check_expires and s.expires and now_ms and s.expires <= now_ms then
        return false, "expired"
    end
    if not s.passport then
        return false, "logged out", "no_passport"
    end
    if not s.user_ok then
        return false, "logged out", "no_user"
    end
    return true
end

return _M
