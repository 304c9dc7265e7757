/*
 * HMAC with precomputed key states (the verifiers built on it are in
 * verify.c), and the constant-time compare they use.
 *
 * The key state (SHA context after the ipad and opad blocks) is computed once
 * per secret and copied per call, so the hot path never re-derives a key and
 * never allocates.  That needs the low-level SHA API, which OpenSSL 3 marks
 * deprecated: its EVP replacement allocates on every context copy.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>
#include <string.h>

#include "internal.h"

typedef struct key_state {
    int alg;
    union {
        struct { SHA256_CTX inner, outer; } s256;
        struct { SHA_CTX inner, outer; } s1;
    } u;
} key_state;

_Static_assert(sizeof(key_state) <= sizeof(rp_key), "rp_key too small");
_Static_assert(sizeof(SHA256_CTX) <= sizeof(rp_hmac_run), "run too small");
_Static_assert(sizeof(SHA_CTX) <= sizeof(rp_hmac_run), "run too small");
_Static_assert(SHA256_DIGEST_LENGTH == RP_MD_MAX, "RP_MD_MAX");

#define BLOCK 64

static const key_state *ks(const rp_key *key) { return (const key_state *)key; }

int rp_key_init(rp_key *key, int alg, const unsigned char *secret,
                size_t secret_len)
{
    unsigned char k[BLOCK], pad[BLOCK];
    key_state *s = (key_state *)key;

    if (key == NULL || (alg != RP_ALG_SHA256 && alg != RP_ALG_SHA1) ||
        secret == NULL || secret_len == 0)
        return RP_EARG;

    memset(key, 0, sizeof(*key));
    memset(k, 0, sizeof(k));
    if (secret_len > BLOCK) {
        if (alg == RP_ALG_SHA256) SHA256(secret, secret_len, k);
        else SHA1(secret, secret_len, k);
    } else {
        memcpy(k, secret, secret_len);
    }

    s->alg = alg;
    for (int pass = 0; pass < 2; pass++) {
        unsigned char x = pass == 0 ? 0x36 : 0x5c;
        for (int i = 0; i < BLOCK; i++) pad[i] = k[i] ^ x;
        if (alg == RP_ALG_SHA256) {
            SHA256_CTX *c = pass == 0 ? &s->u.s256.inner : &s->u.s256.outer;
            SHA256_Init(c);
            SHA256_Update(c, pad, BLOCK);
        } else {
            SHA_CTX *c = pass == 0 ? &s->u.s1.inner : &s->u.s1.outer;
            SHA1_Init(c);
            SHA1_Update(c, pad, BLOCK);
        }
    }
    memset(k, 0, sizeof(k));
    memset(pad, 0, sizeof(pad));
    return RP_OK;
}

int rp_key_alg(const rp_key *key) { return ks(key)->alg; }

static size_t digest_len(const rp_key *key)
{
    return ks(key)->alg == RP_ALG_SHA256 ? SHA256_DIGEST_LENGTH
                                         : SHA_DIGEST_LENGTH;
}

void rp_hmac_begin(rp_hmac_run *run, const rp_key *key)
{
    const key_state *s = ks(key);
    if (s->alg == RP_ALG_SHA256) memcpy(run, &s->u.s256.inner, sizeof(SHA256_CTX));
    else memcpy(run, &s->u.s1.inner, sizeof(SHA_CTX));
}

void rp_hmac_feed(rp_hmac_run *run, const rp_key *key, const void *data,
                  size_t len)
{
    if (ks(key)->alg == RP_ALG_SHA256) SHA256_Update((SHA256_CTX *)run, data, len);
    else SHA1_Update((SHA_CTX *)run, data, len);
}

void rp_hmac_feed_latin1(rp_hmac_run *run, const rp_key *key,
                         const unsigned char *data, size_t len)
{
    unsigned char buf[256];
    size_t start = 0, n = 0;

    for (size_t i = 0; i < len; i++) {
        if (data[i] < 0x80) continue;
        /* Flush the ASCII run before the high byte, then its UTF-8 form. */
        if (i > start) rp_hmac_feed(run, key, data + start, i - start);
        buf[n++] = (unsigned char)(0xC0 | (data[i] >> 6));
        buf[n++] = (unsigned char)(0x80 | (data[i] & 0x3F));
        if (n == sizeof(buf) || i + 1 == len || data[i + 1] < 0x80) {
            rp_hmac_feed(run, key, buf, n);
            n = 0;
        }
        start = i + 1;
    }
    if (len > start) rp_hmac_feed(run, key, data + start, len - start);
}

size_t rp_hmac_end(rp_hmac_run *run, const rp_key *key, unsigned char *md)
{
    const key_state *s = ks(key);
    if (s->alg == RP_ALG_SHA256) {
        SHA256_CTX outer = s->u.s256.outer;
        SHA256_Final(md, (SHA256_CTX *)run);
        SHA256_Update(&outer, md, SHA256_DIGEST_LENGTH);
        SHA256_Final(md, &outer);
        return SHA256_DIGEST_LENGTH;
    }
    SHA_CTX outer = s->u.s1.outer;
    SHA1_Final(md, (SHA_CTX *)run);
    SHA1_Update(&outer, md, SHA_DIGEST_LENGTH);
    SHA1_Final(md, &outer);
    return SHA_DIGEST_LENGTH;
}

static size_t b64_len(size_t n) { return (n * 4 + 2) / 3; }

int rp_hmac_b64(const rp_key *key, const unsigned char *msg, size_t msg_len,
                int url, char *out, size_t cap)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    rp_hmac_run run;

    if (key == NULL || (ks(key)->alg != RP_ALG_SHA256 && ks(key)->alg != RP_ALG_SHA1))
        return RP_EARG;
    if (cap < b64_len(digest_len(key))) return RP_ETOOBIG;
    rp_hmac_begin(&run, key);
    rp_hmac_feed(&run, key, msg, msg_len);
    size_t n = rp_hmac_end(&run, key, md);
    return (int)rp_b64_encode(md, n, url, out);
}

int rp_ct_equal(const unsigned char *a, const unsigned char *b, size_t len)
{
    unsigned char d = 0;
    for (size_t i = 0; i < len; i++) d |= (unsigned char)(a[i] ^ b[i]);
    /* Map 0 to 1 and anything else to 0 without a data-dependent branch. */
    return (int)(1 & (((unsigned)d - 1) >> 8));
}
