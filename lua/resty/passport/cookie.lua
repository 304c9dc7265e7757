-- Cookie headers and signed cookie values, as express-session and
-- cookie-session read them (C core through FFI).
local ffi = require "ffi"
local lib = require "resty.passport.ffi"

local C = lib.C
local reasons = lib.reasons
local ffi_cast = ffi.cast
local ffi_new = ffi.new
local ffi_string = ffi.string
local concat = table.concat
local error = error
local getmetatable = getmetatable
local setmetatable = setmetatable
local sub = string.sub
local type = type

local _M = {
    _VERSION = "0.1.0",
    -- Longest Cookie header accepted (bytes, after joining several lines).
    max_header_size = 65536,
}

local SHA256, SHA1 = C.RP_ALG_SHA256, C.RP_ALG_SHA1
local len_out = ffi_new("size_t[1]")
local ptr_out = ffi_new("const char *[1]")
local sig_buf = ffi_new("char[64]")

local get_buf = lib.get_buf
local E_NOTSIGNED = lib.E.NOTSIGNED

local keyring_mt = {} -- what is_keyring recognises

local function is_keyring(v)
    return type(v) == "table" and getmetatable(v) == keyring_mt
end

-- Precomputes every secret's HMAC state once.  secrets: a string or a list
-- of strings, newest first (the first one signs, every one verifies).
local function keyring(secrets, alg, level)
    level = (level or 1) + 1
    if type(secrets) == "string" then
        secrets = { secrets }
    elseif type(secrets) ~= "table" or #secrets == 0 then
        error("secret must be a non-empty string or a non-empty list of "
              .. "strings", level)
    end
    local n = #secrets
    local keys = ffi_new("rp_key[?]", n)
    for i = 1, n do
        local s = secrets[i]
        if type(s) ~= "string" or s == "" then
            error("secret #" .. i .. " must be a non-empty string", level)
        end
        if C.rp_key_init(keys + (i - 1), alg, s, #s) ~= 0 then
            error("secret #" .. i .. " could not be prepared", level)
        end
    end
    return setmetatable({ keys = keys, n = n, alg = alg }, keyring_mt)
end

function _M.keyring(secrets, algorithm)
    local alg = SHA256
    if algorithm == "sha1" then
        alg = SHA1
    elseif algorithm ~= nil and algorithm ~= "sha256" then
        error("bad argument #2 to 'keyring' (\"sha256\" or \"sha1\" expected)", 2)
    end
    local ring = keyring(secrets, alg, 2) -- no tail call: error levels
    return ring
end

local function ring_of(secrets, alg, level)
    if is_keyring(secrets) then
        if secrets.alg ~= alg then
            error("keyring is for another algorithm", level + 1)
        end
        return secrets
    end
    -- Not a tail call: the error levels count this frame.
    local ring = keyring(secrets, alg, level + 1)
    return ring
end

-- The steps every header reader starts with: the cookie name checked, and
-- the header joined (several Cookie lines count as one, joined the way Node
-- joins them) and bounded.  fname names the public function in argument
-- errors, raised at its caller.  Returns the header, or nil and a reason.
local function read_header(fname, header, name, max_size)
    if type(name) ~= "string" or name == "" then
        error("bad argument #2 to '" .. fname .. "' (non-empty string "
              .. "expected)", 3)
    end
    if type(header) == "table" then
        header = concat(header, "; ")
    elseif header == nil then
        return nil, "no cookie header"
    elseif type(header) ~= "string" then
        error("bad argument #1 to '" .. fname .. "' (string, table or nil "
              .. "expected, got " .. type(header) .. ")", 3)
    end
    if #header > (max_size or _M.max_header_size) then
        return nil, "cookie header too large"
    end
    return header
end

-- What a C reader's rc means: the len_out bytes at out and, when verified,
-- the 1-based index of the secret that verified them; or nil and a reason.
local function outcome(rc, out, verified)
    if rc < 0 then
        return nil, reasons[rc]
    end
    if verified then
        return ffi_string(out, len_out[0]), rc + 1
    end
    return ffi_string(out, len_out[0])
end

-- The value of cookie `name` (URL-decoded), or nil and a reason.
function _M.get(header, name, max_size)
    local err
    header, err = read_header("get", header, name, max_size)
    if not header then
        return nil, err
    end
    local cap = 2 * #header
    local out = get_buf(cap)
    local rc = C.rp_cookie_get(header, #header, name, #name, out, cap, len_out)
    return outcome(rc, out)
end

-- The session id inside an express-session cookie value ("s:<sid>.<sig>"),
-- and the 1-based index of the secret that verified it; or nil and a reason.
function _M.unsign(value, secrets)
    if type(value) ~= "string" then
        error("bad argument #1 to 'unsign' (string expected, got "
              .. type(value) .. ")", 2)
    end
    local ring = ring_of(secrets, SHA256, 2)
    if sub(value, 1, 2) ~= "s:" then
        return nil, reasons[E_NOTSIGNED]
    end
    local p = ffi_cast("const unsigned char *", value) + 2
    local rc = C.rp_unsign(p, #value - 2, ring.keys, ring.n, len_out)
    return outcome(rc, p, true)
end

-- base64 HMAC of data under the first key; fname names the public caller
-- in argument errors.
local function mac(data, keys, alg, url, fname)
    if type(data) ~= "string" then
        error("bad argument #1 to '" .. fname .. "' (string expected, got "
              .. type(data) .. ")", 3)
    end
    local ring = ring_of(keys, alg, 3)
    return ffi_string(sig_buf, C.rp_hmac_b64(ring.keys, data, #data, url, sig_buf, 64))
end

-- The cookie value express-session sets for sid: "s:<sid>.<sig>" (before
-- the URL-encoding that Set-Cookie adds).  The first secret signs.
function _M.sign(sid, secrets)
    local sig = mac(sid, secrets, SHA256, 0, "sign")
    return "s:" .. sid .. "." .. sig
end

-- The hot path: the verified session id from a Cookie header.  ring comes
-- from keyring(); returns sid, secret index or nil, reason.
function _M.express_sid(header, name, ring, max_size)
    local err
    header, err = read_header("express_sid", header, name, max_size)
    if not header then
        return nil, err
    end
    local cap = 2 * #header
    local out = get_buf(cap)
    local rc = C.rp_express_sid(header, #header, name, #name, ring.keys,
                                ring.n, out, cap, len_out)
    return outcome(rc, out, true)
end

-- cookie-session: the session JSON carried by cookie `name`, verified by
-- `name.sig` against keys (keygrip, HMAC-SHA1); or nil and a reason.
function _M.session_cookie(header, name, keys, max_size)
    -- The keys first: a bad key list is misuse even without a header.
    local ring = ring_of(keys, SHA1, 2)
    local err
    header, err = read_header("session_cookie", header, name, max_size)
    if not header then
        return nil, err
    end
    local cap = #header + 8
    local out = get_buf(cap)
    local rc = C.rp_keygrip_session(header, #header, name, #name, ring.keys,
                                    ring.n, out, cap, len_out)
    return outcome(rc, out, true)
end

-- The `cookies` package's raw lookup (no decoding), as cookie-session sees it.
function _M.raw_get(header, name, max_size)
    local err
    header, err = read_header("raw_get", header, name, max_size)
    if not header then
        return nil, err
    end
    local rc = C.rp_cookies_get(header, #header, name, #name, ptr_out, len_out)
    return outcome(rc, ptr_out[0])
end

-- keygrip's sign(data) with the first key: URL-safe base64 HMAC-SHA1.
function _M.keygrip_sign(data, keys)
    local sig = mac(data, keys, SHA1, 1, "keygrip_sign") -- no tail call: error levels
    return sig
end

return _M
