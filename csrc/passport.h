/*
 * lua-resty-passport C core: the FFI contract.
 *
 * lua/resty/passport/ffi.lua mirrors the declarations below; keep the two
 * in step (spec/unit/cdefs_spec.lua checks that every function is there).
 *
 * Rules for every function here: no I/O, no allocation, no global state.
 * Inputs carry explicit lengths and need not be NUL-terminated; outputs go to
 * buffers the caller owns, with their capacity passed in.  Errors are the
 * negative RP_E* codes; success is 0 or, for verification, the index of the
 * key that verified.
 */
#ifndef RESTY_PASSPORT_H
#define RESTY_PASSPORT_H

#include <stddef.h>
#include <stdint.h>

#define RP_API __attribute__((visibility("default")))

#define RP_VERSION "0.1.0"

enum {
    RP_OK = 0,
    RP_ENOTFOUND = -1,  /* no cookie of that name */
    RP_EEMPTY = -2,     /* the cookie is there but its value is empty */
    RP_ENOTSIGNED = -3, /* express value without the "s:" prefix */
    RP_EBADSIG = -4,    /* no key verifies the signature */
    RP_ETOOBIG = -5,    /* output buffer too small */
    RP_EJSON = -6,      /* malformed or truncated JSON */
    RP_EDEPTH = -7,     /* JSON nested deeper than allowed */
    RP_ENOTOBJECT = -8, /* JSON top level is not an object */
    RP_EARG = -9,       /* bad argument (unknown algorithm, empty key) */
    RP_ENOSIG = -10,    /* cookie-session: the ".sig" cookie is missing */
    /* WebSocket frames (RFC 6455): each maps to a close code, see below */
    RP_EPROTO = -11,     /* close payload of 1 byte, or a bad close code */
    RP_EBIGFRAME = -12,  /* payload longer than the caller's maximum (1009) */
    RP_EUTF8 = -13,      /* text or close reason not valid UTF-8 (1007) */
    RP_ERSV = -14,       /* reserved bit set with no extension for it */
    RP_EOPCODE = -15,    /* opcode 3-7 or 11-15 */
    RP_ECONTROL = -16,   /* control frame fragmented or over 125 bytes */
    RP_ELENGTH = -17,    /* non-minimal length, or 64-bit length top bit set */
    RP_EUNMASKED = -18   /* client frame without a mask */
};

/* ---- keys: a secret's HMAC state, precomputed once ---------------------- */

enum { RP_ALG_SHA256 = 1, RP_ALG_SHA1 = 2 };

/* Opaque to callers; the size is checked against the real state at compile
 * time.  Allocate with ffi.new and keep it alive as long as it is used. */
typedef struct rp_key {
    uint64_t opaque[32];
} rp_key;

RP_API int rp_key_init(rp_key *key, int alg, const unsigned char *secret,
                       size_t secret_len);

/* HMAC(key, msg) as unpadded base64 into out (43 chars for SHA-256, 27 for
 * SHA-1; cap must hold that).  url != 0 selects the URL-safe alphabet.
 * Returns the number of characters written or RP_ETOOBIG. */
RP_API int rp_hmac_b64(const rp_key *key, const unsigned char *msg,
                       size_t msg_len, int url, char *out, size_t cap);

/* ---- Cookie header, as npm `cookie` 0.7 (express-session 1.19) ---------- */

/* Finds the first cookie called name, trims it, strips surrounding quotes
 * and URL-decodes it when it holds a '%' (keeping it raw when decoding
 * fails).  Header bytes are read as latin1, like Node does, and the value is
 * written as UTF-8: out needs 2 * hdr_len bytes at most. */
RP_API int rp_cookie_get(const char *hdr, size_t hdr_len, const char *name,
                         size_t name_len, unsigned char *out, size_t cap,
                         size_t *out_len);

/* express-session / cookie-signature: val is the text after "s:".  Returns
 * the index of the first key whose "sid.<base64 HMAC-SHA256>" equals val
 * exactly (compared in constant time), with *sid_len set; or RP_EBADSIG. */
RP_API int rp_unsign(const unsigned char *val, size_t val_len,
                     const rp_key *keys, int nkeys, size_t *sid_len);

/* The hot path in one call: rp_cookie_get + the "s:" check + rp_unsign.
 * On success out holds the session id (UTF-8, *sid_len bytes) and the
 * return value is the index of the verifying key. */
RP_API int rp_express_sid(const char *hdr, size_t hdr_len, const char *name,
                          size_t name_len, const rp_key *keys, int nkeys,
                          unsigned char *out, size_t cap, size_t *sid_len);

/* ---- cookie-session / keygrip (npm `cookies` 0.9 parsing) --------------- */

/* The `cookies` package's lookup: the first "; *name=" match, the raw text up
 * to the next ';', one leading and one trailing character dropped when it
 * starts with a quote.  No decoding.  Points into hdr. */
RP_API int rp_cookies_get(const char *hdr, size_t hdr_len, const char *name,
                          size_t name_len, const char **val, size_t *val_len);

/* cookie-session: verifies name.sig (HMAC of "name=<value>" under one of
 * the keys, URL-safe base64) and base64-decodes the value into out (needs
 * value length * 3 / 4 + 3 bytes).  Returns the verifying key's index. */
RP_API int rp_keygrip_session(const char *hdr, size_t hdr_len,
                              const char *name, size_t name_len,
                              const rp_key *keys, int nkeys,
                              unsigned char *out, size_t cap,
                              size_t *out_len);

/* Node's Buffer.from(s, "base64"): both alphabets, other characters
 * skipped, stops at the first '='.  Returns the length written. */
RP_API int rp_base64_decode(const char *in, size_t in_len,
                            unsigned char *out, size_t cap);

/* Node's Buffer#toString("base64"): the standard alphabet, padded.  Returns
 * the length written, or RP_ETOOBIG when cap cannot hold it. */
RP_API int rp_base64_encode(const unsigned char *in, size_t len, char *out,
                            size_t cap);

/* ---- session record (connect-redis JSON) -------------------------------- */

enum {
    RP_JSON_NONE = 0,
    RP_JSON_NULL,
    RP_JSON_FALSE,
    RP_JSON_TRUE,
    RP_JSON_NUMBER,
    RP_JSON_STRING,
    RP_JSON_OBJECT,
    RP_JSON_ARRAY
};

enum {
    RP_SF_COOKIE = 1 << 0,          /* "cookie" is an object */
    RP_SF_EXPIRES = 1 << 1,         /* cookie.expires parsed into expires_ms */
    RP_SF_EXPIRES_INVALID = 1 << 2, /* cookie.expires is a string, not a date */
    RP_SF_MAXAGE = 1 << 3,          /* cookie.originalMaxAge is a number */
    RP_SF_PASSPORT = 1 << 4,        /* "passport" is truthy (JS rules) */
    RP_SF_USER = 1 << 5,            /* passport.user exists */
    RP_SF_USER_OK = 1 << 6,         /* passport 0.7 would deserialize it */
    RP_SF_USER_ESCAPED = 1 << 7,    /* user is a string with escapes */
    RP_SF_USER_BADUTF8 = 1 << 8     /* user's bytes are not valid UTF-8 */
};

typedef struct rp_session {
    double expires_ms;
    double original_max_age;
    uint32_t flags;
    int32_t user_type; /* RP_JSON_* */
    uint32_t user_off; /* passport.user as a raw JSON slice of the input */
    uint32_t user_len;
    uint32_t err_off; /* where parsing failed */
} rp_session;

/* Validates the whole record (JSON.parse rules) and reads the fields above;
 * the last duplicate key wins, as in JSON.parse.  max_depth bounds nesting. */
RP_API int rp_session_parse(const char *json, size_t len, int max_depth,
                            rp_session *out);

/* ES Date.parse for the ISO 8601 forms JSON.stringify writes (and the other
 * ISO forms ES specifies).  Returns RP_OK or RP_EARG. */
RP_API int rp_parse_date(const char *s, size_t len, double *ms);

RP_API const char *rp_version(void);

/* len (1..1024) random characters of the URL-safe base64 alphabet, 6 bits of
 * OpenSSL's CSPRNG each.  Returns len, or RP_EARG (bad length, no entropy). */
RP_API int rp_random_id(char *out, size_t len);

/* The Redis Cluster slot of a key (0..16383): CRC16/XMODEM mod 16384 of the
 * key, or of its hash tag (the bytes between the first '{' and the first
 * '}' after it, when there are any), as CLUSTER KEYSLOT answers. */
RP_API int rp_key_slot(const char *key, size_t len);

/* ---- UTF-8 (RFC 3629: shortest forms only, no surrogates, at most
 * U+10FFFF) -------------------------------------------------------------- */

/* Incremental validation.  *state starts at 0 and carries a sequence split
 * between calls.  Returns RP_OK when the bytes so far end on a character
 * boundary, RP_UTF8_INCOMPLETE when they end inside a sequence that may
 * still be completed, RP_EUTF8 otherwise (and the state stays invalid).  A
 * message is valid when its last piece returns RP_OK. */
enum { RP_UTF8_INCOMPLETE = 1 };
RP_API int rp_utf8_validate(const unsigned char *s, size_t len,
                            uint32_t *state);

/* The first maximal subpart of s that is not UTF-8 (Unicode 3.9: a sequence
 * cut short, or one byte that starts none), which a WHATWG decoder such as
 * Node's turns into one U+FFFD.  Returns RP_OK when s is valid; else
 * RP_EUTF8 with *bad_off and *bad_len (1 to 3) set.  Replacing that subpart
 * and scanning again after it repairs a string. */
RP_API int rp_utf8_scan(const unsigned char *s, size_t len, size_t *bad_off,
                        size_t *bad_len);

/* ---- WebSocket frames (RFC 6455) ---------------------------------------- */

enum {
    RP_WS_CONT = 0x0, RP_WS_TEXT = 0x1, RP_WS_BINARY = 0x2,
    RP_WS_CLOSE = 0x8, RP_WS_PING = 0x9, RP_WS_PONG = 0xA
};

/* Sec-WebSocket-Accept for a client's Sec-WebSocket-Key: base64(SHA-1(key
 * + GUID)), 28 characters into out (not NUL-terminated).  The key must be
 * 22 base64 characters and "==" (16 bytes), as npm `ws` checks; else RP_EARG. */
RP_API int rp_ws_accept(const char *key, size_t key_len, char *out);

typedef struct rp_ws_frame {
    uint64_t payload_len;
    uint32_t header_len; /* 2 to 14: the payload starts here */
    uint8_t fin;
    uint8_t rsv;    /* RSV1 << 2 | RSV2 << 1 | RSV3 */
    uint8_t opcode;
    uint8_t masked;
    unsigned char mask[4]; /* zeros when not masked */
} rp_ws_frame;

/* Parses a frame header from the first len bytes received.  Returns RP_OK
 * with *out filled, a positive n when n more bytes are needed before it can
 * decide, or an error: RP_ERSV (a reserved bit not in rsv_allowed, the same
 * bit layout as rsv), RP_EOPCODE, RP_ECONTROL, RP_ELENGTH, RP_EUNMASKED
 * (require_mask != 0, the server side) or RP_EBIGFRAME (over max_len).
 * Errors visible in the first two bytes are reported before asking for more,
 * so a peer cannot make us wait for the rest of a frame we will refuse. */
RP_API int rp_ws_parse_header(const unsigned char *buf, size_t len,
                              int require_mask, unsigned rsv_allowed,
                              uint64_t max_len, rp_ws_frame *out);

/* XORs data in place with key; offset is data's position in the payload,
 * so a payload that arrives in pieces is unmasked piece by piece. */
RP_API void rp_ws_unmask(unsigned char *data, size_t len,
                         const unsigned char key[4], uint64_t offset);

/* Writes a frame header into out (14 bytes at most); mask NULL for server
 * frames, else the 4 key bytes (the caller masks the payload).  Returns the
 * header length, or RP_EARG for an unknown opcode, a control frame that is
 * fragmented or over 125 bytes, or len >= 2^63. */
RP_API int rp_ws_header(unsigned char *out, int fin, int opcode, uint64_t len,
                        const unsigned char *mask);

/* 1 when code may travel in a close frame (RFC 6455 7.4 plus 1012-1014 from
 * the IANA registry, as npm `ws` accepts: 1000-1003,
 * 1007-1014, 3000-4999), else 0. */
RP_API int rp_ws_close_code_ok(int code);

/* Reads a close frame's payload: empty gives *code 1005 (no status, never
 * sent on the wire) and an empty reason; else a valid code and a UTF-8
 * reason at payload + 2.  RP_EPROTO for one byte, a bad code or over 125
 * bytes; RP_EUTF8 for a bad reason. */
RP_API int rp_ws_close_parse(const unsigned char *payload, size_t len,
                             int *code);

#endif
