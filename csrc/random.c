/*
 * Unguessable ids (Engine.IO and Socket.IO session ids): OpenSSL's CSPRNG,
 * written as URL-safe base64 so an id is safe in a query string.
 */
#include <openssl/rand.h>

#include "internal.h"

static const char ALPHABET[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int rp_random_id(char *out, size_t len)
{
    unsigned char raw[1024];

    if (out == NULL || len == 0 || len > sizeof(raw))
        return RP_EARG;
    if (RAND_bytes(raw, (int)len) != 1)
        return RP_EARG;
    for (size_t i = 0; i < len; i++)
        out[i] = ALPHABET[raw[i] & 63];
    return (int)len;
}
