/*
 * RFC 6455 frames: the handshake's accept key, header parsing and writing,
 * unmasking and close payloads (text is checked by utf8.c).  The socket
 * loop lives in Lua; everything here is pure, so it can be fuzzed alone.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>
#include <string.h>

#include "internal.h"

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static int b64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '+' || c == '/';
}

int rp_ws_accept(const char *key, size_t key_len, char *out)
{
    unsigned char buf[24 + sizeof(ws_guid) - 1], md[SHA_DIGEST_LENGTH];

    /* 16 random bytes in base64 are 22 characters and "==" (RFC 6455 4.1). */
    if (key == NULL || out == NULL || key_len != 24 || key[22] != '=' ||
        key[23] != '=')
        return RP_EARG;
    for (size_t i = 0; i < 22; i++)
        if (!b64_char((unsigned char)key[i])) return RP_EARG;

    memcpy(buf, key, 24);
    memcpy(buf + 24, ws_guid, sizeof(ws_guid) - 1);
    SHA1(buf, sizeof(buf), md);
    /* 20 bytes: 27 characters unpadded, and one '=' of padding. */
    size_t n = rp_b64_encode(md, sizeof(md), 0, out);
    out[n] = '=';
    return RP_OK;
}

static int is_control(unsigned op) { return op >= 0x8; }

static int known_opcode(unsigned op)
{
    return op <= RP_WS_BINARY || (op >= RP_WS_CLOSE && op <= RP_WS_PONG);
}

int rp_ws_parse_header(const unsigned char *buf, size_t len, int require_mask,
                       unsigned rsv_allowed, uint64_t max_len,
                       rp_ws_frame *out)
{
    if (buf == NULL && len > 0) return RP_EARG;
    if (out == NULL) return RP_EARG;
    if (len < 2) return (int)(2 - len);

    unsigned b0 = buf[0], b1 = buf[1];
    unsigned fin = b0 >> 7, rsv = (b0 >> 4) & 7u, op = b0 & 15u;
    unsigned masked = b1 >> 7, len7 = b1 & 127u;

    /* Everything decidable from two bytes first. */
    if (rsv & ~rsv_allowed) return RP_ERSV;
    if (!known_opcode(op)) return RP_EOPCODE;
    if (is_control(op) && (!fin || len7 > 125)) return RP_ECONTROL;
    if (require_mask && !masked) return RP_EUNMASKED;

    size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    size_t hl = 2 + ext + (masked ? 4 : 0);
    if (len < 2 + ext) return (int)(hl - len);

    uint64_t plen = len7;
    if (ext == 2) {
        plen = (uint64_t)buf[2] << 8 | buf[3];
        if (plen < 126) return RP_ELENGTH; /* must have used the 7-bit form */
    } else if (ext == 8) {
        plen = 0;
        for (size_t i = 0; i < 8; i++) plen = plen << 8 | buf[2 + i];
        if (plen >> 63) return RP_ELENGTH; /* RFC 6455 5.2: MSB must be 0 */
        if (plen <= 0xFFFF) return RP_ELENGTH;
    }
    if (plen > max_len) return RP_EBIGFRAME;
    if (len < hl) return (int)(hl - len);

    out->payload_len = plen;
    out->header_len = (uint32_t)hl;
    out->fin = (uint8_t)fin;
    out->rsv = (uint8_t)rsv;
    out->opcode = (uint8_t)op;
    out->masked = (uint8_t)masked;
    if (masked) memcpy(out->mask, buf + 2 + ext, 4);
    else memset(out->mask, 0, 4);
    return RP_OK;
}

void rp_ws_unmask(unsigned char *data, size_t len, const unsigned char key[4],
                  uint64_t offset)
{
    unsigned char k[8];
    size_t i = 0;

    if (data == NULL || key == NULL) return;
    /* The key rotated to where this piece starts, twice over for 8 bytes. */
    for (int j = 0; j < 8; j++) k[j] = key[(offset + (uint64_t)j) & 3];

    /* memcpy keeps this free of alignment and aliasing trouble; compilers
     * turn each into a plain load or store. */
    uint64_t kw;
    memcpy(&kw, k, 8);
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, data + i, 8);
        w ^= kw;
        memcpy(data + i, &w, 8);
    }
    for (; i < len; i++) data[i] ^= k[i & 7];
}

int rp_ws_header(unsigned char *out, int fin, int opcode, uint64_t len,
                 const unsigned char *mask)
{
    if (out == NULL || opcode < 0 || opcode > 15 ||
        !known_opcode((unsigned)opcode) || len >> 63)
        return RP_EARG;
    if (is_control((unsigned)opcode) && (!fin || len > 125)) return RP_EARG;

    size_t n = 2;
    out[0] = (unsigned char)((fin ? 0x80 : 0) | opcode);
    unsigned char m = mask ? 0x80 : 0;
    if (len < 126) {
        out[1] = (unsigned char)(m | len);
    } else if (len <= 0xFFFF) {
        out[1] = (unsigned char)(m | 126);
        out[2] = (unsigned char)(len >> 8);
        out[3] = (unsigned char)len;
        n = 4;
    } else {
        out[1] = (unsigned char)(m | 127);
        for (int i = 0; i < 8; i++)
            out[2 + i] = (unsigned char)(len >> (56 - 8 * i));
        n = 10;
    }
    if (mask) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return (int)n;
}

int rp_ws_close_code_ok(int code)
{
    /* 1004-1006 and 1015 are reserved or only reported locally, never sent;
     * 1012-1014 (service restart, try again later, bad gateway) came later
     * through the IANA registry and are accepted, as npm `ws` and browsers
     * do; 1016-2999 are reserved for future RFCs. */
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

int rp_ws_close_parse(const unsigned char *payload, size_t len, int *code)
{
    if (code == NULL || (payload == NULL && len > 0)) return RP_EARG;
    if (len == 0) {
        *code = 1005;
        return RP_OK;
    }
    if (len == 1 || len > 125) return RP_EPROTO;
    int c = payload[0] << 8 | payload[1];
    if (!rp_ws_close_code_ok(c)) return RP_EPROTO;
    uint32_t st = 0;
    if (rp_utf8_validate(payload + 2, len - 2, &st) != RP_OK) return RP_EUTF8;
    *code = c;
    return RP_OK;
}
