/*
 * The C side of `make bench`: loops over the core's entry points, called
 * straight from C.  bench/run.lua loads this library through FFI and times
 * one call of rp_bench_run(which, n) against its LuaJIT loops, run after run,
 * in one process: this host's speed drifts by tens of percent over seconds,
 * and only interleaved runs keep a ratio such as (b)/(a) honest.
 *
 * (a), the floor, is BENCH_UNSIGN: rp_unsign on "sid.sig", i.e. HMAC-SHA256
 * with a precomputed key state, base64 and a constant-time compare.
 */
#include <string.h>

#include "../csrc/passport.h"

enum {
    BENCH_UNSIGN = 1,
    BENCH_HMAC,        /* rp_hmac_b64 alone */
    BENCH_COOKIE_GET,  /* find + URL-decode */
    BENCH_EXPRESS_SID, /* (b) without LuaJIT and FFI */
    BENCH_SESSION      /* rp_session_parse on the record set last */
};

static struct {
    const char *hdr, *name, *json;
    size_t hdr_len, name_len, json_len;
    rp_key key;
    unsigned char value[8192]; /* the cookie value, "s:sid.sig" */
    size_t value_len;
    unsigned char out[8192];
} B;

/* The strings must outlive the benchmark (run.lua keeps them). */
RP_API int rp_bench_setup(const char *hdr, size_t hdr_len, const char *name,
                          size_t name_len, const char *secret, size_t secret_len)
{
    B.hdr = hdr;
    B.hdr_len = hdr_len;
    B.name = name;
    B.name_len = name_len;
    if (rp_key_init(&B.key, RP_ALG_SHA256, (const unsigned char *)secret,
                    secret_len) != RP_OK ||
        rp_cookie_get(hdr, hdr_len, name, name_len, B.value, sizeof(B.value),
                      &B.value_len) != RP_OK ||
        B.value_len < 2 + 44 || memcmp(B.value, "s:", 2) != 0)
        return -1;
    return 0;
}

RP_API void rp_bench_json(const char *json, size_t len)
{
    B.json = json;
    B.json_len = len;
}

/* n calls of one entry point; returns the last result, negative when the
 * fixture does not verify (so a broken setup is never timed as fast). */
RP_API int rp_bench_run(int which, long n)
{
    const unsigned char *val = B.value + 2;
    size_t val_len = B.value_len - 2, len = 0;
    char sig[64];
    rp_session s;
    int rc = -1;

    for (long i = 0; i < n; i++) {
        switch (which) {
        case BENCH_UNSIGN:
            rc = rp_unsign(val, val_len, &B.key, 1, &len);
            break;
        case BENCH_HMAC:
            rc = rp_hmac_b64(&B.key, val, val_len - 44, 0, sig, sizeof(sig));
            break;
        case BENCH_COOKIE_GET:
            rc = rp_cookie_get(B.hdr, B.hdr_len, B.name, B.name_len, B.out,
                               sizeof(B.out), &len);
            break;
        case BENCH_EXPRESS_SID:
            rc = rp_express_sid(B.hdr, B.hdr_len, B.name, B.name_len, &B.key,
                                1, B.out, sizeof(B.out), &len);
            break;
        case BENCH_SESSION:
            rc = rp_session_parse(B.json, B.json_len, 64, &s);
            break;
        default:
            return -1;
        }
    }
    return rc;
}
