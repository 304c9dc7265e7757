/*
 * Shared by the libFuzzer targets: an invariant check that crashes (so
 * libFuzzer saves the input), input splitting, and the fixed key rings.
 */
#ifndef RP_FUZZ_H
#define RP_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "passport.h"

#define CHECK(c)                                                            \
    do {                                                                    \
        if (!(c)) {                                                         \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #c, __FILE__, \
                    __LINE__);                                              \
            abort();                                                        \
        }                                                                   \
    } while (0)

/* A heap copy of exactly n bytes, so ASan flags any read past the end. */
static inline unsigned char *dup_exact(const uint8_t *p, size_t n)
{
    unsigned char *d = malloc(n ? n : 1);
    CHECK(d != NULL);
    if (n) memcpy(d, p, n);
    return d;
}

/* Inputs that carry a cookie name: byte 0 is its length (mod 32), then the
 * name, then the header. */
typedef struct named {
    unsigned char *name, *hdr;
    size_t name_len, hdr_len;
} named;

static inline int split_named(const uint8_t *data, size_t size, named *n)
{
    if (size < 1) return 0;
    size_t nl = data[0] % 32u;
    if (nl > size - 1) nl = size - 1;
    n->name_len = nl;
    n->name = dup_exact(data + 1, nl);
    n->hdr_len = size - 1 - nl;
    n->hdr = dup_exact(data + 1 + nl, n->hdr_len);
    return 1;
}

static inline void free_named(named *n)
{
    free(n->name);
    free(n->hdr);
}

static inline int contains(const unsigned char *h, size_t hn,
                           const unsigned char *x, size_t xn)
{
    if (xn == 0) return 1;
    for (size_t i = 0; i + xn <= hn; i++)
        if (memcmp(h + i, x, xn) == 0) return 1;
    return 0;
}

/* Well-formed UTF-8: shortest forms, no surrogates, at most U+10FFFF. */
static inline int utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t k;
        uint32_t cp, min;
        if (c < 0x80) { i++; continue; }
        if ((c & 0xE0) == 0xC0) { k = 1; cp = c & 0x1Fu; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { k = 2; cp = c & 0x0Fu; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { k = 3; cp = c & 0x07u; min = 0x10000; }
        else return 0;
        if (n - i <= k) return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

/* Two secrets, newest first, as a rotated deployment has them. */
static inline const rp_key *key_ring(int alg)
{
    static rp_key k256[2], k1[2];
    static int ready;
    static const char *secrets[2] = {"keyboard cat", "retired secret \xc3\xa9"};
    if (!ready) {
        for (int i = 0; i < 2; i++) {
            const unsigned char *s = (const unsigned char *)secrets[i];
            CHECK(rp_key_init(&k256[i], RP_ALG_SHA256, s, strlen(secrets[i])) == 0);
            CHECK(rp_key_init(&k1[i], RP_ALG_SHA1, s, strlen(secrets[i])) == 0);
        }
        ready = 1;
    }
    return alg == RP_ALG_SHA256 ? k256 : k1;
}

#endif
