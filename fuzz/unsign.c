/* rp_unsign and rp_express_sid (cookie-signature / express-session) with a
 * fixed ring of two HMAC-SHA256 keys.  The whole input is used three ways:
 * as a signed value "sid.sig", as a Cookie header, and as a session id to
 * sign and verify back. */
#include "fuzz.h"

#define SIG 43
static const char NAME[] = "connect.sid";

/* The value as given must verify only if it is sid "." HMAC(sid). */
static void check_unsign(const unsigned char *val, size_t n, const rp_key *ring)
{
    size_t sid_len = (size_t)-1;
    int rc = rp_unsign(val, n, ring, 2, &sid_len);
    CHECK(rc == RP_EBADSIG || rc == 0 || rc == 1);
    if (rc < 0) return;
    CHECK(sid_len + 1 + SIG == n && val[sid_len] == '.');
    char sig[SIG];
    CHECK(rp_hmac_b64(&ring[rc], val, sid_len, 0, sig, sizeof(sig)) == SIG);
    CHECK(memcmp(sig, val + sid_len + 1, SIG) == 0);
}

/* rp_express_sid must agree with rp_cookie_get followed by rp_unsign. */
static void check_express(const unsigned char *hdr, size_t n, const rp_key *ring)
{
    size_t cap = 2 * n, len = 0, sid_len = 0;
    unsigned char *v = malloc(cap ? cap : 1), *out = malloc(cap ? cap : 1);
    CHECK(v != NULL && out != NULL);
    int rc = rp_express_sid((const char *)hdr, n, NAME, sizeof(NAME) - 1, ring,
                            2, out, cap, &sid_len);
    int get = rp_cookie_get((const char *)hdr, n, NAME, sizeof(NAME) - 1, v,
                            cap, &len);
    if (get < 0) {
        CHECK(rc == get);
    } else if (len == 0) {
        CHECK(rc == RP_EEMPTY);
    } else if (len < 2 || v[0] != 's' || v[1] != ':') {
        CHECK(rc == RP_ENOTSIGNED);
    } else {
        size_t sl = 0;
        CHECK(rc == rp_unsign(v + 2, len - 2, ring, 2, &sl));
        if (rc >= 0) CHECK(sl == sid_len && memcmp(out, v + 2, sl) == 0);
    }
    free(v);
    free(out);
}

/* Signing any sid with key k and verifying gives k back; one changed
 * signature character never verifies. */
static void check_round_trip(const uint8_t *data, size_t size, const rp_key *ring)
{
    int k = size % 2 ? 1 : 0;
    size_t n = size + 1 + SIG;
    unsigned char *val = malloc(n);
    size_t sid_len = 0;
    CHECK(val != NULL);
    if (size) memcpy(val, data, size);
    val[size] = '.';
    CHECK(rp_hmac_b64(&ring[k], data, size, 0, (char *)val + size + 1, SIG) == SIG);
    CHECK(rp_unsign(val, n, ring, 2, &sid_len) == k && sid_len == size);

    size_t at = size + 1 + (size ? data[0] % SIG : 0);
    val[at] = val[at] == 'A' ? 'B' : 'A';
    CHECK(rp_unsign(val, n, ring, 2, &sid_len) == RP_EBADSIG);
    free(val);
}

/* The same through a header: a sid of cookie-safe characters, "s:" sent as
 * "s%3A" (what Set-Cookie writes), among other cookies. */
static void check_header_round_trip(const uint8_t *data, size_t size,
                                    const rp_key *ring)
{
    static const char safe[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t sn = size > 256 ? 256 : size;
    unsigned char sid[256], sig[SIG], out[2048];
    char hdr[1024];
    size_t sid_len = 0;
    for (size_t i = 0; i < sn; i++) sid[i] = (unsigned char)safe[data[i] % 64];
    CHECK(rp_hmac_b64(&ring[0], sid, sn, 0, (char *)sig, SIG) == SIG);
    int hn = snprintf(hdr, sizeof(hdr), "a=b; %s=s%%3A%.*s.%.*s; c=d", NAME,
                      (int)sn, (const char *)sid, SIG, (const char *)sig);
    CHECK(hn > 0 && (size_t)hn < sizeof(hdr));
    /* '+' and '/' in the signature stay raw: Node's decoding keeps them. */
    int rc = rp_express_sid(hdr, (size_t)hn, NAME, sizeof(NAME) - 1, ring, 2,
                            out, sizeof(out), &sid_len);
    if (sn == 0) {
        /* "s:" + "." + sig: an empty sid is still a valid signature. */
        CHECK(rc == 0 && sid_len == 0);
    } else {
        CHECK(rc == 0 && sid_len == sn && memcmp(out, sid, sn) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const rp_key *ring = key_ring(RP_ALG_SHA256);
    unsigned char *buf = dup_exact(data, size);
    check_unsign(buf, size, ring);
    check_express(buf, size, ring);
    check_round_trip(data, size, ring);
    check_header_round_trip(data, size, ring);
    free(buf);
    return 0;
}
