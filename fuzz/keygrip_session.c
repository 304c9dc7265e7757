/* rp_keygrip_session (cookie-session + keygrip, HMAC-SHA1) with a fixed ring
 * of two keys.  The input is used as a Cookie header, and as a session
 * payload to encode, sign, and read back. */
#include "fuzz.h"

#define SIG 27
static const char NAME[] = "session";

static void check_header(const unsigned char *hdr, size_t n, const rp_key *ring)
{
    size_t cap = n + 8, len = (size_t)-1; /* what cookie.lua passes */
    unsigned char *out = malloc(cap);
    CHECK(out != NULL);
    int rc = rp_keygrip_session((const char *)hdr, n, NAME, sizeof(NAME) - 1,
                                ring, 2, out, cap, &len);
    CHECK(rc == 0 || rc == 1 || rc == RP_ENOTFOUND || rc == RP_EEMPTY ||
          rc == RP_ENOSIG || rc == RP_EBADSIG);
    if (rc >= 0) {
        const char *val;
        size_t val_len;
        CHECK(rp_cookies_get((const char *)hdr, n, NAME, sizeof(NAME) - 1,
                             &val, &val_len) == RP_OK);
        CHECK(len <= val_len / 4 * 3 + 2);
    }
    free(out);
}

/* Node's Buffer#toString("base64"): standard alphabet, '=' padded. */
static size_t b64_padded(const uint8_t *in, size_t n, char *out)
{
    size_t o = rp_b64_encode(in, n, 0, out);
    while (o % 4) out[o++] = '=';
    return o;
}

static void check_round_trip(const uint8_t *data, size_t size, const rp_key *ring)
{
    size_t sn = size > 1024 ? 1024 : size;
    char val[1400], msg[1500], sig[SIG + 1], hdr[1500];
    unsigned char out[1500];
    size_t len = 0;
    int k = size % 2 ? 1 : 0;

    if (sn == 0) return; /* an empty value is RP_EEMPTY, checked above */
    size_t vn = b64_padded(data, sn, val);
    int mn = snprintf(msg, sizeof(msg), "%s=%.*s", NAME, (int)vn, val);
    CHECK(mn > 0 && (size_t)mn < sizeof(msg));
    CHECK(rp_hmac_b64(&ring[k], (const unsigned char *)msg, (size_t)mn, 1, sig,
                      sizeof(sig)) == SIG);
    int hn = snprintf(hdr, sizeof(hdr), "%s=%.*s; %s.sig=%.*s", NAME, (int)vn,
                      val, NAME, SIG, sig);
    CHECK(hn > 0 && (size_t)hn < sizeof(hdr));
    int rc = rp_keygrip_session(hdr, (size_t)hn, NAME, sizeof(NAME) - 1, ring,
                                2, out, sizeof(out), &len);
    CHECK(rc == k && len == sn && memcmp(out, data, sn) == 0);

    /* One changed signature character never verifies. */
    char *p = hdr + hn - SIG + data[0] % SIG;
    *p = *p == 'A' ? 'B' : 'A';
    rc = rp_keygrip_session(hdr, (size_t)hn, NAME, sizeof(NAME) - 1, ring, 2,
                            out, sizeof(out), &len);
    CHECK(rc == RP_EBADSIG);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const rp_key *ring = key_ring(RP_ALG_SHA1);
    unsigned char *buf = dup_exact(data, size);
    check_header(buf, size, ring);
    check_round_trip(data, size, ring);
    free(buf);
    return 0;
}
