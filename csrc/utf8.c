/*
 * UTF-8 as RFC 3629 defines it: shortest forms only, no surrogates, nothing
 * past U+10FFFF.  One decoder serves the frame codec (text frames and close
 * reasons, checked piece by piece), the session scan (is passport.user
 * valid?) and rp_utf8_scan (where the WHATWG decoder puts its U+FFFD).
 */
#include <string.h>

#include "internal.h"

/*
 * State: 0 on a character boundary; otherwise the continuation bytes still
 * needed (bits 0-1), the bytes of the sequence taken so far (bits 2-3) and
 * the range allowed for the next one (lo in bits 8-15, hi in bits 16-23).
 * Only the first continuation byte has a range narrower than 80..BF: that is
 * where overlongs (E0, F0), surrogates (ED) and code points past U+10FFFF
 * (F4) are excluded (RFC 3629 section 4).
 */
#define U8_BAD 0xFFFFFFFFu
#define U8_STATE(need, seen, lo, hi)                                        \
    ((uint32_t)(need) | (uint32_t)(seen) << 2 | (uint32_t)(lo) << 8 |       \
     (uint32_t)(hi) << 16)
#define U8_NEED(st) ((st) & 3u)
#define U8_SEEN(st) (((st) >> 2) & 3u)

/* The state after a lead byte, or 0 for a byte no character starts with
 * (80..BF stray, C0 C1 overlong, F5..FF past U+10FFFF). */
static uint32_t lead(unsigned c)
{
    if (c >= 0xC2 && c <= 0xDF) return U8_STATE(1, 1, 0x80, 0xBF);
    if (c == 0xE0) return U8_STATE(2, 1, 0xA0, 0xBF);
    if (c == 0xED) return U8_STATE(2, 1, 0x80, 0x9F);
    if (c >= 0xE1 && c <= 0xEF) return U8_STATE(2, 1, 0x80, 0xBF);
    if (c == 0xF0) return U8_STATE(3, 1, 0x90, 0xBF);
    if (c >= 0xF1 && c <= 0xF3) return U8_STATE(3, 1, 0x80, 0xBF);
    if (c == 0xF4) return U8_STATE(3, 1, 0x80, 0x8F);
    return 0;
}

/* Takes bytes of s from *state on while they keep the text valid.  Returns
 * how many it took: len, or the index of the first byte that cannot follow
 * (*state is then the state just before that byte). */
static size_t advance(const unsigned char *s, size_t len, uint32_t *state)
{
    uint32_t st = *state;
    size_t i = 0;

    while (i < len) {
        if (st == 0) {
            /* ASCII runs are the common case: 8 bytes per step. */
            while (i + 8 <= len) {
                uint64_t w;
                memcpy(&w, s + i, 8);
                if (w & 0x8080808080808080ull) break;
                i += 8;
            }
            if (i == len) break;
            if (s[i] < 0x80) {
                i++;
                continue;
            }
            if ((st = lead(s[i])) == 0) break;
            i++;
        } else {
            unsigned c = s[i];
            if (c < ((st >> 8) & 0xFF) || c > ((st >> 16) & 0xFF)) break;
            i++;
            uint32_t need = U8_NEED(st) - 1;
            st = need ? U8_STATE(need, U8_SEEN(st) + 1, 0x80, 0xBF) : 0;
        }
    }
    *state = st;
    return i;
}

int rp_utf8_validate(const unsigned char *s, size_t len, uint32_t *state)
{
    if (state == NULL || (s == NULL && len > 0)) return RP_EARG;
    if (*state == U8_BAD) return RP_EUTF8;
    if (advance(s, len, state) < len) {
        *state = U8_BAD;
        return RP_EUTF8;
    }
    return *state ? RP_UTF8_INCOMPLETE : RP_OK;
}

int rp_utf8_scan(const unsigned char *s, size_t len, size_t *bad_off,
                 size_t *bad_len)
{
    uint32_t st = 0;

    if ((s == NULL && len > 0) || bad_off == NULL || bad_len == NULL)
        return RP_EARG;
    size_t i = advance(s, len, &st);
    if (i == len && st == 0) return RP_OK;
    /* The bytes of the sequence taken before it broke (or was cut off by
     * the end) are one subpart; a byte that starts nothing is one alone. */
    size_t seen = U8_SEEN(st);
    *bad_off = i - seen;
    *bad_len = seen ? seen : 1;
    return RP_EUTF8;
}
