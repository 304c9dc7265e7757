/* base64 the way Node and cookie-signature write and read it. */
#include <limits.h>

#include "internal.h"

static const char std_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t rp_b64_encode(const unsigned char *in, size_t len, int url, char *out)
{
    const char *a = url ? url_alpha : std_alpha;
    size_t o = 0, i = 0;

    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        out[o++] = a[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
    }
    return o;
}

int rp_base64_encode(const unsigned char *in, size_t len, char *out,
                     size_t cap)
{
    size_t need, o;

    if (len > (size_t)INT_MAX / 4 * 3)
        return RP_ETOOBIG;
    need = (len + 2) / 3 * 4;
    if (need > cap)
        return RP_ETOOBIG;
    o = rp_b64_encode(in, len, 0, out);
    while (o % 4 != 0)
        out[o++] = '=';
    return (int)o;
}

/* 0..63 for either alphabet, 64 for '=', 255 for anything else. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    if (c == '=') return 64;
    return 255;
}

int rp_base64_decode(const char *in, size_t in_len, unsigned char *out,
                     size_t cap)
{
    uint32_t acc = 0;
    int have = 0;
    size_t o = 0;

    if (cap < in_len / 4 * 3 + 3) return RP_ETOOBIG;

    for (size_t i = 0; i < in_len; i++) {
        int v = b64_value((unsigned char)in[i]);
        if (v == 64) break;
        if (v == 255) continue;
        acc = acc << 6 | (uint32_t)v;
        if (++have == 4) {
            out[o++] = (unsigned char)(acc >> 16);
            out[o++] = (unsigned char)(acc >> 8);
            out[o++] = (unsigned char)acc;
            acc = 0;
            have = 0;
        }
    }
    /* A lone trailing character carries no whole byte and is dropped. */
    if (have == 2) {
        out[o++] = (unsigned char)(acc >> 4);
    } else if (have == 3) {
        out[o++] = (unsigned char)(acc >> 10);
        out[o++] = (unsigned char)(acc >> 2);
    }
    return (int)o;
}
