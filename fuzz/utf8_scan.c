/* rp_utf8_scan against rp_utf8_validate and fuzz.h's reference: they agree
 * on what is valid, every reported subpart is maximal (Unicode 3.9), and
 * repairing the input subpart by subpart, as session.lua does, ends in valid
 * UTF-8 and changes valid input not at all. */
#include "fuzz.h"

/* Bytes of a character a lead byte announces (fuzz.h's reading), 0 for none. */
static size_t seq_len(unsigned char c)
{
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 0;
}

/* 1 when the k bytes at p begin (or are) a valid character: some way of
 * completing them passes the reference.  The bytes after the second are
 * unconstrained, so only the second needs trying. */
static int starts_char(const unsigned char *p, size_t k)
{
    unsigned char buf[4];
    size_t n = seq_len(p[0]);

    if (n == 0 || k > n) return 0;
    memcpy(buf, p, k);
    for (unsigned b = 0x80; b <= 0xBF; b++) {
        if (k < 2) buf[1] = (unsigned char)b;
        for (size_t j = k > 2 ? k : 2; j < n; j++) buf[j] = 0x80;
        if (utf8_valid(buf, n)) return 1;
        if (k >= 2) break;
    }
    return 0;
}

static int state_of(const unsigned char *s, size_t n)
{
    uint32_t st = 0;
    return rp_utf8_validate(s, n, &st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *in = dup_exact(data, size);
    size_t off = 0, len = 0;

    int rc = rp_utf8_scan(in, size, &off, &len);
    CHECK(rc == RP_OK || rc == RP_EUTF8);
    CHECK((rc == RP_OK) == utf8_valid(in, size));
    CHECK((rc == RP_OK) == (state_of(in, size) == RP_OK));
    if (rc == RP_EUTF8) {
        const unsigned char *p = in + off;
        CHECK(off < size && len >= 1 && len <= 3 && len <= size - off);
        CHECK(utf8_valid(in, off)); /* it is the first */
        if (starts_char(p, 1)) {
            /* a character begun and not finished: as far as it goes */
            CHECK(starts_char(p, len) && len < seq_len(p[0]));
            CHECK(off + len == size || !starts_char(p, len + 1));
            CHECK(state_of(in, off + len) == RP_UTF8_INCOMPLETE);
            CHECK(off + len == size || state_of(in, off + len + 1) == RP_EUTF8);
        } else {
            CHECK(len == 1); /* a byte that starts nothing stands alone */
            CHECK(state_of(in, off + 1) == RP_EUTF8);
        }
    }

    /* The repair loop of session.lua: valid text, nothing left to repair. */
    unsigned char *out = malloc(size * 3 + 1);
    CHECK(out != NULL);
    size_t at = 0, n = 0, dropped = 0, reps = 0;
    while (rp_utf8_scan(in + at, size - at, &off, &len) == RP_EUTF8) {
        CHECK(len >= 1 && len <= 3 && off + len <= size - at);
        memcpy(out + n, in + at, off);
        n += off;
        dropped += len;
        reps++;
        memcpy(out + n, "\xEF\xBF\xBD", 3);
        n += 3;
        at += off + len;
    }
    memcpy(out + n, in + at, size - at);
    n += size - at;
    CHECK(utf8_valid(out, n) && rp_utf8_scan(out, n, &off, &len) == RP_OK);
    CHECK(rc == RP_EUTF8 || (n == size && memcmp(out, in, size) == 0));
    CHECK((reps > 0) == (rc == RP_EUTF8) && dropped <= size);
    free(out);
    free(in);
    return 0;
}
