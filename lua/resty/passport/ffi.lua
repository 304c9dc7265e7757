-- The C core: its FFI declarations (a copy of csrc/passport.h), the shared
-- library, found once by walking package.cpath and loaded by full path (so
-- neither LD_LIBRARY_PATH nor an install into the system is needed), the
-- output buffer the wrappers share, and the error codes by name.
local ffi = require "ffi"

local ffi_load = ffi.load
local ffi_new = ffi.new
local gmatch = string.gmatch
local gsub = string.gsub
local io_open = io.open
local sub = string.sub

local _M = { _VERSION = "0.1.0" }

ffi.cdef [[
enum {
    RP_OK = 0, RP_ENOTFOUND = -1, RP_EEMPTY = -2, RP_ENOTSIGNED = -3,
    RP_EBADSIG = -4, RP_ETOOBIG = -5, RP_EJSON = -6, RP_EDEPTH = -7,
    RP_ENOTOBJECT = -8, RP_EARG = -9, RP_ENOSIG = -10
};
enum { RP_ALG_SHA256 = 1, RP_ALG_SHA1 = 2 };
typedef struct rp_key { uint64_t opaque[32]; } rp_key;
int rp_key_init(rp_key *key, int alg, const unsigned char *secret,
                size_t secret_len);
int rp_hmac_b64(const rp_key *key, const unsigned char *msg, size_t msg_len,
                int url, char *out, size_t cap);
int rp_cookie_get(const char *hdr, size_t hdr_len, const char *name,
                  size_t name_len, unsigned char *out, size_t cap,
                  size_t *out_len);
int rp_unsign(const unsigned char *val, size_t val_len, const rp_key *keys,
              int nkeys, size_t *sid_len);
int rp_express_sid(const char *hdr, size_t hdr_len, const char *name,
                   size_t name_len, const rp_key *keys, int nkeys,
                   unsigned char *out, size_t cap, size_t *sid_len);
int rp_cookies_get(const char *hdr, size_t hdr_len, const char *name,
                   size_t name_len, const char **val, size_t *val_len);
int rp_keygrip_session(const char *hdr, size_t hdr_len, const char *name,
                       size_t name_len, const rp_key *keys, int nkeys,
                       unsigned char *out, size_t cap, size_t *out_len);
int rp_base64_decode(const char *in, size_t in_len, unsigned char *out,
                     size_t cap);
int rp_base64_encode(const unsigned char *in, size_t len, char *out,
                     size_t cap);
enum {
    RP_JSON_NONE = 0, RP_JSON_NULL, RP_JSON_FALSE, RP_JSON_TRUE,
    RP_JSON_NUMBER, RP_JSON_STRING, RP_JSON_OBJECT, RP_JSON_ARRAY
};
enum {
    RP_SF_COOKIE = 1, RP_SF_EXPIRES = 2, RP_SF_EXPIRES_INVALID = 4,
    RP_SF_MAXAGE = 8, RP_SF_PASSPORT = 16, RP_SF_USER = 32,
    RP_SF_USER_OK = 64, RP_SF_USER_ESCAPED = 128,
    RP_SF_USER_BADUTF8 = 256
};
typedef struct rp_session {
    double expires_ms;
    double original_max_age;
    uint32_t flags;
    int32_t user_type;
    uint32_t user_off;
    uint32_t user_len;
    uint32_t err_off;
} rp_session;
int rp_session_parse(const char *json, size_t len, int max_depth,
                     rp_session *out);
int rp_parse_date(const char *s, size_t len, double *ms);
const char *rp_version(void);
int rp_random_id(char *out, size_t len);
int rp_key_slot(const char *key, size_t len);
]]

-- UTF-8 and WebSocket frames (RFC 6455): the last sections of passport.h.
ffi.cdef [[
enum {
    RP_EPROTO = -11, RP_EBIGFRAME = -12, RP_EUTF8 = -13, RP_ERSV = -14,
    RP_EOPCODE = -15, RP_ECONTROL = -16, RP_ELENGTH = -17, RP_EUNMASKED = -18
};
enum { RP_UTF8_INCOMPLETE = 1 };
int rp_utf8_validate(const unsigned char *s, size_t len, uint32_t *state);
int rp_utf8_scan(const unsigned char *s, size_t len, size_t *bad_off,
                 size_t *bad_len);
enum {
    RP_WS_CONT = 0x0, RP_WS_TEXT = 0x1, RP_WS_BINARY = 0x2,
    RP_WS_CLOSE = 0x8, RP_WS_PING = 0x9, RP_WS_PONG = 0xA
};
int rp_ws_accept(const char *key, size_t key_len, char *out);
typedef struct rp_ws_frame {
    uint64_t payload_len;
    uint32_t header_len;
    uint8_t fin;
    uint8_t rsv;
    uint8_t opcode;
    uint8_t masked;
    unsigned char mask[4];
} rp_ws_frame;
int rp_ws_parse_header(const unsigned char *buf, size_t len,
                       int require_mask, unsigned rsv_allowed,
                       uint64_t max_len, rp_ws_frame *out);
void rp_ws_unmask(unsigned char *data, size_t len, const unsigned char key[4],
                  uint64_t offset);
int rp_ws_header(unsigned char *out, int fin, int opcode, uint64_t len,
                 const unsigned char *mask);
int rp_ws_close_code_ok(int code);
int rp_ws_close_parse(const unsigned char *payload, size_t len, int *code);
]]

-- An output buffer of n bytes for one C call, as lua-resty-core's
-- get_string_buf: one small buffer shared by every wrapper (nothing yields
-- between the C call that fills it and the ffi.string that copies it out),
-- and a temporary one for anything larger, which the GC takes back once the
-- caller drops it, so one big message does not pin memory for the worker's
-- life.  16 KiB: a Cookie header's worst case (2 bytes out per byte in)
-- up to 8 KiB.
local BUF_SIZE = 16384
local buf = ffi_new("unsigned char[?]", BUF_SIZE)

function _M.get_buf(n)
    if n > BUF_SIZE then
        return ffi_new("unsigned char[?]", n)
    end
    return buf
end

-- len (at most 1024) random URL-safe characters (ids nobody can guess), or
-- nil.  Drawn from a batch of 1024 made by one call: OpenSSL checks its
-- pid on every RAND_bytes, and a socket.io connection needs two ids.
-- Called only by the socket layers in a worker, never in init_by_lua, so
-- no batch exists in the master to be inherited by every worker.
local RANDOM_BATCH = 1024
local random_batch, random_pos = "", 1

function _M.random_id(len)
    if random_pos + len - 1 > #random_batch then
        local out = _M.get_buf(RANDOM_BATCH)
        if _M.C.rp_random_id(out, RANDOM_BATCH) ~= RANDOM_BATCH then return nil end
        random_batch, random_pos = ffi.string(out, RANDOM_BATCH), 1
    end
    local id = sub(random_batch, random_pos, random_pos + len - 1)
    random_pos = random_pos + len
    return id
end

-- Where the library was found, for error messages and tests.
_M.path = nil

-- Walks package.cpath the way require does and ffi.loads the first match.
function _M.load(name)
    local tried = {}
    for pattern in gmatch(package.cpath, "[^;]+") do
        local path = gsub(pattern, "%?", name)
        local f = io_open(path, "rb")
        if f then
            f:close()
            return ffi_load(path), path
        end
        tried[#tried + 1] = path
    end
    return nil, "could not find " .. name .. ".so in package.cpath:\n\t"
        .. table.concat(tried, "\n\t")
end

local C, where = _M.load("librestypassport")
if not C then
    error(where, 2)
end
_M.C = C
_M.path = where

-- The error codes by name (E.NOTFOUND is C.RP_ENOTFOUND), and one message
-- per code (reasons[E.NOTFOUND]), shared by every wrapper.
local MESSAGES = {
    NOTFOUND = "cookie not found",
    EMPTY = "cookie is empty",
    NOTSIGNED = "cookie is not signed",
    BADSIG = "signature mismatch",
    TOOBIG = "value too large",
    JSON = "malformed JSON",
    DEPTH = "JSON nested too deep",
    NOTOBJECT = "JSON is not an object",
    ARG = "invalid argument",
    NOSIG = "signature cookie not found",
    -- WebSocket frames
    PROTO = "protocol error",
    BIGFRAME = "frame too large",
    UTF8 = "invalid UTF-8",
    RSV = "reserved bits set",
    OPCODE = "unknown opcode",
    CONTROL = "invalid control frame",
    LENGTH = "invalid payload length",
    UNMASKED = "client frame not masked",
}
_M.E, _M.reasons = {}, {}
for name, message in pairs(MESSAGES) do
    local code = C["RP_E" .. name]
    _M.E[name] = code
    _M.reasons[code] = message
end

if ffi.string(C.rp_version()) ~= _M._VERSION then
    error("librestypassport.so at " .. where .. " is version "
          .. ffi.string(C.rp_version()) .. ", the Lua modules are "
          .. _M._VERSION, 2)
end

return _M
