/* Helpers shared between the C files; hidden from the library's ABI. */
#ifndef RP_INTERNAL_H
#define RP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "passport.h"

#define RP_HIDDEN __attribute__((visibility("hidden")))

/* Constant-time equality of two equal-length byte strings. */
RP_HIDDEN int rp_ct_equal(const unsigned char *a, const unsigned char *b,
                          size_t len);

/* Unpadded base64 of len bytes into out; returns the length written. */
RP_HIDDEN size_t rp_b64_encode(const unsigned char *in, size_t len, int url,
                               char *out);

/* A key's algorithm (RP_ALG_*), and the longest digest of any (SHA-256). */
RP_HIDDEN int rp_key_alg(const rp_key *key);
#define RP_MD_MAX 32

/* Streaming HMAC on top of a precomputed key: init, feed, finish. */
typedef struct rp_hmac_run {
    uint64_t state[16];
} rp_hmac_run;
RP_HIDDEN void rp_hmac_begin(rp_hmac_run *run, const rp_key *key);
RP_HIDDEN void rp_hmac_feed(rp_hmac_run *run, const rp_key *key,
                            const void *data, size_t len);
/* Writes the digest (md holds RP_MD_MAX bytes); returns its length. */
RP_HIDDEN size_t rp_hmac_end(rp_hmac_run *run, const rp_key *key,
                             unsigned char *md);

/* Feeds bytes read as latin1 characters, UTF-8 encoded (what Node's
 * crypto does with a latin1 header string). */
RP_HIDDEN void rp_hmac_feed_latin1(rp_hmac_run *run, const rp_key *key,
                                   const unsigned char *data, size_t len);

#endif
