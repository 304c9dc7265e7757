/*
 * The signed-cookie verifiers: express-session's "s:<sid>.<sig>"
 * (cookie-signature, HMAC-SHA256) and cookie-session's "<name>.sig"
 * companion cookie (keygrip, HMAC-SHA1), on the primitives of hmac.c.
 * Every key is tried in order, each compare in constant time.
 */
#include <string.h>

#include "internal.h"

/* Unpadded base64 of a SHA-256 digest (express) and of a SHA-1 one (keygrip). */
#define EXPRESS_SIG_LEN 43
#define KEYGRIP_SIG_LEN 27

/* Finishes run and compares its digest, base64 written, with the sig_len
 * bytes at sig (which must be that digest's base64 length). */
static int sig_matches(rp_hmac_run *run, const rp_key *key, int url,
                       const unsigned char *sig, size_t sig_len)
{
    unsigned char md[RP_MD_MAX];
    char expect[(RP_MD_MAX * 4 + 2) / 3];

    size_t n = rp_hmac_end(run, key, md);
    rp_b64_encode(md, n, url, expect);
    return rp_ct_equal((const unsigned char *)expect, sig, sig_len);
}

int rp_unsign(const unsigned char *val, size_t val_len, const rp_key *keys,
              int nkeys, size_t *sid_len)
{
    const unsigned char *dot = NULL;

    if (keys == NULL || nkeys <= 0 || sid_len == NULL) return RP_EARG;
    for (size_t i = val_len; i > 0; i--) {
        if (val[i - 1] == '.') { dot = val + i - 1; break; }
    }
    if (dot == NULL) return RP_EBADSIG;

    size_t n = (size_t)(dot - val);
    if (val_len - n - 1 != EXPRESS_SIG_LEN) return RP_EBADSIG;

    for (int k = 0; k < nkeys; k++) {
        rp_hmac_run run;

        if (rp_key_alg(&keys[k]) != RP_ALG_SHA256) return RP_EARG;
        rp_hmac_begin(&run, &keys[k]);
        rp_hmac_feed(&run, &keys[k], val, n);
        if (sig_matches(&run, &keys[k], 0, dot + 1, EXPRESS_SIG_LEN)) {
            *sid_len = n;
            return k;
        }
    }
    return RP_EBADSIG;
}

int rp_express_sid(const char *hdr, size_t hdr_len, const char *name,
                   size_t name_len, const rp_key *keys, int nkeys,
                   unsigned char *out, size_t cap, size_t *sid_len)
{
    size_t len = 0;
    int rc = rp_cookie_get(hdr, hdr_len, name, name_len, out, cap, &len);

    if (rc < 0) return rc;
    if (len == 0) return RP_EEMPTY;
    if (len < 2 || out[0] != 's' || out[1] != ':') return RP_ENOTSIGNED;
    rc = rp_unsign(out + 2, len - 2, keys, nkeys, sid_len);
    if (rc >= 0) memmove(out, out + 2, *sid_len);
    return rc;
}

int rp_keygrip_session(const char *hdr, size_t hdr_len, const char *name,
                       size_t name_len, const rp_key *keys, int nkeys,
                       unsigned char *out, size_t cap, size_t *out_len)
{
    char signame[256];
    const char *val, *sig;
    size_t val_len, sig_len;
    int rc, found = RP_EBADSIG;

    if (keys == NULL || nkeys <= 0 || out_len == NULL) return RP_EARG;
    if (name_len + 4 > sizeof(signame)) return RP_EARG;

    rc = rp_cookies_get(hdr, hdr_len, name, name_len, &val, &val_len);
    if (rc < 0) return rc;
    if (val_len == 0) return RP_EEMPTY;

    memcpy(signame, name, name_len);
    memcpy(signame + name_len, ".sig", 4);
    rc = rp_cookies_get(hdr, hdr_len, signame, name_len + 4, &sig, &sig_len);
    if (rc < 0 || sig_len == 0) return RP_ENOSIG;
    if (sig_len != KEYGRIP_SIG_LEN) return RP_EBADSIG;

    for (int k = 0; k < nkeys && found < 0; k++) {
        rp_hmac_run run;

        if (rp_key_alg(&keys[k]) != RP_ALG_SHA1) return RP_EARG;
        rp_hmac_begin(&run, &keys[k]);
        rp_hmac_feed(&run, &keys[k], name, name_len);
        rp_hmac_feed(&run, &keys[k], "=", 1);
        rp_hmac_feed_latin1(&run, &keys[k], (const unsigned char *)val, val_len);
        if (sig_matches(&run, &keys[k], 1, (const unsigned char *)sig,
                        KEYGRIP_SIG_LEN))
            found = k;
    }
    if (found < 0) return found;

    rc = rp_base64_decode(val, val_len, out, cap);
    if (rc < 0) return rc;
    *out_len = (size_t)rc;
    return found;
}
