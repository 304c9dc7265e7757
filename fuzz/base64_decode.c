/* rp_base64_decode: Node's Buffer.from(s, "base64"); rp_base64_encode,
 * Node's toString("base64"), round-tripped through it. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exactly the documented capacity, so an overflow is an ASan report. */
    size_t cap = size / 4 * 3 + 3;
    unsigned char *in = dup_exact(data, size), *out = malloc(cap);
    CHECK(out != NULL);
    int rc = rp_base64_decode((const char *)in, size, out, cap);
    CHECK(rc >= 0 && (size_t)rc <= cap);

    /* Never more bytes than the alphabet characters before '=' carry. */
    size_t chars = 0;
    for (size_t i = 0; i < size && data[i] != '='; i++) {
        unsigned char c = data[i];
        chars += (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                 (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '-' ||
                 c == '_';
    }
    CHECK((size_t)rc == chars * 3 / 4);

    /* One byte short of the documented capacity is refused, not overrun. */
    if (cap > 0) CHECK(rp_base64_decode((const char *)in, size, out, cap - 1) ==
                       RP_ETOOBIG);

    /* Encoding any bytes in either alphabet decodes back to them. */
    for (int url = 0; url < 2; url++) {
        size_t en = (size * 4 + 2) / 3;
        char *enc = malloc(en + 3);
        unsigned char *dec = malloc(en / 4 * 3 + 3 + 3);
        CHECK(enc != NULL && dec != NULL);
        CHECK(rp_b64_encode(data, size, url, enc) == en);
        size_t pn = en;
        while (pn % 4) enc[pn++] = '='; /* padding is allowed too */
        int dn = rp_base64_decode(enc, url ? en : pn, dec, pn / 4 * 3 + 3);
        CHECK(dn >= 0 && (size_t)dn == size && memcmp(dec, data, size) == 0);
        free(enc);
        free(dec);
    }
    /* The public encoder: padded, exactly its size, refuses one byte less,
     * and decodes back. */
    {
        size_t need = (size + 2) / 3 * 4;
        char *enc = malloc(need + 1);
        unsigned char *dec = malloc(need / 4 * 3 + 3);
        CHECK(enc != NULL && dec != NULL);
        CHECK(rp_base64_encode(data, size, enc, need) == (int)need);
        if (need > 0) CHECK(rp_base64_encode(data, size, enc, need - 1) == RP_ETOOBIG);
        int dn = rp_base64_decode(enc, need, dec, need / 4 * 3 + 3);
        CHECK(dn >= 0 && (size_t)dn == size && memcmp(dec, data, size) == 0);
        free(enc);
        free(dec);
    }
    free(in);
    free(out);
    return 0;
}
