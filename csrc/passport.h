/*
 * lua-resty-passport C core: the FFI contract.
 *
 * lua/resty/passport/cdefs.lua mirrors the declarations below; keep the two
 * in step (spec/unit/cdefs_spec.lua checks that they agree).
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
    RP_ENOSIG = -10     /* cookie-session: the ".sig" cookie is missing */
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
    RP_SF_USER_ESCAPED = 1 << 7     /* user is a string with escapes */
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

#endif
