/* rp_ws_*: frame headers, unmasking, encoding and UTF-8 validation. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *in = dup_exact(data, size);
    rp_ws_frame f;

    /* Byte 0 picks the options, so both sides and limits get explored. */
    int require_mask = size > 0 && (data[0] & 1);
    unsigned rsv_allowed = size > 0 ? (data[0] >> 1) & 7u : 0;
    uint64_t max_len = size > 0 && (data[0] & 0x10) ? 125 : UINT64_MAX;

    int rc = rp_ws_parse_header(in, size, require_mask, rsv_allowed, max_len,
                                &f);
    if (rc == RP_OK) {
        CHECK(f.header_len >= 2 && f.header_len <= 14 && f.header_len <= size);
        size_t ext = f.payload_len < 126 ? 0 : f.payload_len <= 0xFFFF ? 2 : 8;
        CHECK(f.header_len == 2 + ext + (f.masked ? 4u : 0u));
        CHECK(f.payload_len <= max_len && (f.payload_len >> 63) == 0);
        CHECK((f.rsv & ~rsv_allowed) == 0);
        CHECK(!require_mask || f.masked);
        if (f.opcode >= 8) CHECK(f.fin && f.payload_len <= 125);

        /* Writing the header back gives the same bytes (they are minimal). */
        unsigned char h[14];
        int hl = rp_ws_header(h, f.fin, f.opcode, f.payload_len,
                              f.masked ? f.mask : NULL);
        CHECK(hl == (int)f.header_len);
        h[0] = (unsigned char)(h[0] | f.rsv << 4);
        CHECK(memcmp(h, in, (size_t)hl) == 0);

        /* Any prefix asks for exactly the bytes that are missing. */
        for (size_t n = 0; n < f.header_len; n++) {
            rp_ws_frame g;
            int more = rp_ws_parse_header(in, n, require_mask, rsv_allowed,
                                          max_len, &g);
            CHECK(more > 0 && (size_t)more <= f.header_len - n);
        }
    } else if (rc > 0) {
        CHECK(rc <= 14 && size < 14);
    } else {
        CHECK(rc >= RP_EUNMASKED && rc <= RP_EPROTO && rc != RP_EUTF8 &&
              rc != RP_EPROTO);
    }

    /* Unmasking twice is the identity, also in two pieces at any offset. */
    if (size >= 5) {
        unsigned char key[4];
        memcpy(key, data + 1, 4);
        size_t n = size - 5, cut = n ? data[0] % (n + 1) : 0;
        unsigned char *p = dup_exact(data + 5, n);
        rp_ws_unmask(p, cut, key, 0);
        rp_ws_unmask(p + cut, n - cut, key, cut);
        for (size_t i = 0; i < n; i++) CHECK(p[i] == (data[5 + i] ^ key[i & 3]));
        rp_ws_unmask(p, n, key, 0);
        CHECK(n == 0 || memcmp(p, data + 5, n) == 0);
        free(p);
    }

    /* encode -> parse round trip, the payload being the input. */
    if (size >= 1) {
        int op = data[0] & 15;
        int fin = (data[0] >> 4) & 1;
        const unsigned char *mask = size >= 5 && (data[0] & 0x20) ? data + 1 : NULL;
        unsigned char h[14];
        int hl = rp_ws_header(h, fin, op, size, mask);
        int bad_op = (op >= 3 && op <= 7) || op >= 11;
        if (bad_op || (op >= 8 && (!fin || size > 125))) {
            CHECK(hl == RP_EARG);
        } else {
            CHECK(hl >= 2 && hl <= 14);
            unsigned char *fr = malloc((size_t)hl + size);
            CHECK(fr != NULL);
            memcpy(fr, h, (size_t)hl);
            memcpy(fr + hl, data, size);
            rp_ws_frame g;
            CHECK(rp_ws_parse_header(fr, (size_t)hl + size, mask != NULL, 0,
                                     size, &g) == RP_OK);
            CHECK(g.header_len == (uint32_t)hl && g.payload_len == size);
            CHECK(g.opcode == op && g.fin == fin && g.rsv == 0);
            CHECK(g.masked == (mask != NULL));
            if (mask) CHECK(memcmp(g.mask, mask, 4) == 0);
            if (size > 0)
                CHECK(rp_ws_parse_header(fr, (size_t)hl + size, 0, 0,
                                         size - 1, &g) == RP_EBIGFRAME);
            free(fr);
        }
    }

    /* UTF-8: one shot agrees with the reference, and so do random splits. */
    uint32_t st = 0;
    int whole = rp_utf8_validate(in, size, &st);
    CHECK(whole == RP_OK || whole == RP_EUTF8 || whole == RP_UTF8_INCOMPLETE);
    CHECK((whole == RP_OK) == utf8_valid(in, size));
    CHECK((whole == RP_OK) == (st == 0));
    if (size > 0) {
        /* Split points from the data itself: deterministic per input. */
        uint32_t s2 = 0;
        int r = RP_OK;
        size_t pos = 0, step = 1 + data[size - 1] % 7;
        while (pos < size && r != RP_EUTF8) {
            size_t n = step < size - pos ? step : size - pos;
            r = rp_utf8_validate(in + pos, n, &s2);
            pos += n;
            step = 1 + (step * 5 + 3) % 11;
        }
        CHECK(r == whole);
    }

    /* Close payloads: valid ones have a sendable code and a UTF-8 reason. */
    int code = 0;
    int crc = rp_ws_close_parse(in, size, &code);
    if (crc == RP_OK) {
        CHECK(size == 0 ? code == 1005 : rp_ws_close_code_ok(code) == 1);
        CHECK(size <= 2 || utf8_valid(in + 2, size - 2));
        CHECK(size != 1 && size <= 125);
    } else {
        CHECK(crc == RP_EPROTO || crc == RP_EUTF8);
    }

    free(in);
    return 0;
}
