/*
 * Cookie header lookup, byte for byte what Node computes.
 *
 * rp_cookie_get follows npm `cookie` 0.7 parse() (express-session 1.19),
 * rp_cookies_get follows npm `cookies` 0.9 get() (cookie-session 2).  Node
 * reads header bytes as latin1, so a raw byte >= 0x80 is one character; we
 * hand values back as the UTF-8 of the string Node would hold.
 */
#include <string.h>

#include "internal.h"

static int is_ws(unsigned char c) { return c == ' ' || c == '\t'; }

static const char *find(const char *p, const char *end, char c)
{
    return p < end ? memchr(p, c, (size_t)(end - p)) : NULL;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Writes latin1 bytes as UTF-8. */
static size_t put_latin1(unsigned char *out, const unsigned char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x80) {
            out[o++] = s[i];
        } else {
            out[o++] = (unsigned char)(0xC0 | (s[i] >> 6));
            out[o++] = (unsigned char)(0x80 | (s[i] & 0x3F));
        }
    }
    return o;
}

/* The byte of a "%XX" escape at i, or -1. */
static int pct_byte(const unsigned char *s, size_t n, size_t i)
{
    if (n < 3 || i > n - 3 || s[i] != '%') return -1;
    int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
    return (h < 0 || l < 0) ? -1 : h << 4 | l;
}

/* ECMAScript decodeURIComponent; returns the length written or -1 where JS
 * throws URIError (bad escape, invalid or non-shortest UTF-8, surrogate). */
static long uri_decode(unsigned char *out, const unsigned char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '%') {
            /* The whole run up to the next escape at once: signed values
             * are mostly plain ASCII with a few "%3A"/"%2B"/"%2F". */
            const unsigned char *pct = memchr(s + i, '%', n - i);
            size_t run = (pct ? (size_t)(pct - s) : n) - i;
            o += put_latin1(out + o, s + i, run);
            i += run;
            continue;
        }
        int b = pct_byte(s, n, i);
        if (b < 0) return -1;
        i += 3;
        if (b < 0x80) { out[o++] = (unsigned char)b; continue; }

        int extra;
        uint32_t cp, min;
        if ((b & 0xE0) == 0xC0) { extra = 1; cp = b & 0x1F; min = 0x80; }
        else if ((b & 0xF0) == 0xE0) { extra = 2; cp = b & 0x0F; min = 0x800; }
        else if ((b & 0xF8) == 0xF0) { extra = 3; cp = b & 0x07; min = 0x10000; }
        else return -1;

        unsigned char seq[4];
        seq[0] = (unsigned char)b;
        for (int k = 1; k <= extra; k++) {
            int c = pct_byte(s, n, i);
            if (c < 0 || (c & 0xC0) != 0x80) return -1;
            seq[k] = (unsigned char)c;
            cp = cp << 6 | (uint32_t)(c & 0x3F);
            i += 3;
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return -1;
        memcpy(out + o, seq, (size_t)extra + 1);
        o += (size_t)extra + 1;
    }
    return (long)o;
}

int rp_cookie_get(const char *hdr, size_t hdr_len, const char *name,
                  size_t name_len, unsigned char *out, size_t cap,
                  size_t *out_len)
{
    const char *end = hdr + hdr_len, *idx = hdr, *eq = NULL;

    if (hdr == NULL || name == NULL || out == NULL || out_len == NULL)
        return RP_EARG;
    /* `cookie` stores pairs in a plain object: "__proto__" never lands. */
    if (name_len == 9 && memcmp(name, "__proto__", 9) == 0) return RP_ENOTFOUND;
    if (hdr_len < 2) return RP_ENOTFOUND;

    while (idx < end) {
        /* The next '=' is remembered: pairs without one are skipped by
         * backtracking, and rescanning would make long headers quadratic. */
        if (eq == NULL || eq < idx) {
            eq = find(idx, end, '=');
            if (eq == NULL) break;
        }
        const char *semi = find(idx, end, ';');
        if (semi == NULL) {
            semi = end;
        } else if (eq > semi) {
            const char *p = eq;
            while (p > idx && p[-1] != ';') p--;
            idx = p;
            continue;
        }

        const char *ks = idx, *ke = eq;
        while (ks < eq && is_ws((unsigned char)*ks)) ks++;
        while (ke > ks && is_ws((unsigned char)ke[-1])) ke--;

        if ((size_t)(ke - ks) == name_len && memcmp(ks, name, name_len) == 0) {
            const unsigned char *vs = (const unsigned char *)eq + 1;
            const unsigned char *ve = (const unsigned char *)semi;
            while (vs < ve && is_ws(*vs)) vs++;
            while (ve > vs && is_ws(ve[-1])) ve--;
            if (ve > vs && *vs == '"' && ve[-1] == '"') {
                vs++;
                ve--;
                if (ve < vs) ve = vs;
            }
            size_t n = (size_t)(ve - vs);
            if (cap < 2 * n) return RP_ETOOBIG;
            long dn = memchr(vs, '%', n) ? uri_decode(out, vs, n) : -1;
            *out_len = dn >= 0 ? (size_t)dn : put_latin1(out, vs, n);
            return RP_OK;
        }
        idx = semi + 1;
    }
    return RP_ENOTFOUND;
}

int rp_cookies_get(const char *hdr, size_t hdr_len, const char *name,
                   size_t name_len, const char **val, size_t *val_len)
{
    const char *end = hdr + hdr_len, *p = hdr;

    if (hdr == NULL || name == NULL || val == NULL || val_len == NULL)
        return RP_EARG;

    /* /(?:^|;) *NAME=([^;]*)/: candidates start at 0 and after each ';'. */
    for (;;) {
        const char *q = p;
        while (q < end && *q == ' ') q++;
        if ((size_t)(end - q) > name_len && memcmp(q, name, name_len) == 0 &&
            q[name_len] == '=') {
            const char *vs = q + name_len + 1;
            const char *ve = find(vs, end, ';');
            if (ve == NULL) ve = end;
            if (ve > vs && *vs == '"') {
                /* value.slice(1, -1): drops the last character, whatever it is */
                vs++;
                ve = ve - 1 < vs ? vs : ve - 1;
            }
            *val = vs;
            *val_len = (size_t)(ve - vs);
            return RP_OK;
        }
        const char *semi = find(p, end, ';');
        if (semi == NULL) return RP_ENOTFOUND;
        p = semi + 1;
    }
}
