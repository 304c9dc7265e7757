/* rp_cookie_get: npm `cookie` 0.7 lookup + URL-decoding, latin1 -> UTF-8.
 * Input: fuzz.h's named layout (name length byte, name, header). */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    named n;
    if (!split_named(data, size, &n)) return 0;

    /* The documented bound: 2 * header length, and not a byte more. */
    size_t cap = 2 * n.hdr_len, len = (size_t)-1;
    unsigned char *out = malloc(cap ? cap : 1);
    CHECK(out != NULL);
    int rc = rp_cookie_get((const char *)n.hdr, n.hdr_len, (const char *)n.name,
                           n.name_len, out, cap, &len);
    CHECK(rc == RP_OK || rc == RP_ENOTFOUND);
    if (rc == RP_OK) {
        CHECK(len <= cap);
        /* Node hands back a JS string: its UTF-8 is always well formed. */
        CHECK(utf8_valid(out, len));
        CHECK(contains(n.hdr, n.hdr_len, n.name, n.name_len));
    }
    /* Any smaller buffer (exactly allocated): the same bytes or ETOOBIG,
     * never a write past its end. */
    size_t cap2 = size > 1 ? (data[size - 1] * 7u + size) % (cap + 1) : 0;
    unsigned char *out2 = malloc(cap2 ? cap2 : 1);
    size_t len2 = (size_t)-1;
    CHECK(out2 != NULL);
    int rc2 = rp_cookie_get((const char *)n.hdr, n.hdr_len, (const char *)n.name,
                            n.name_len, out2, cap2, &len2);
    if (rc == RP_OK)
        CHECK(rc2 == RP_ETOOBIG ||
              (rc2 == RP_OK && len2 == len && memcmp(out, out2, len) == 0));
    else
        CHECK(rc2 == rc);
    free(out2);
    free(out);
    free_named(&n);
    return 0;
}
