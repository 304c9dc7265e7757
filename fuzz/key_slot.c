/* rp_key_slot against the hash-tag rule worked out here the slow way:
 * always a slot (0..16383); a key with a non-empty tag hashes exactly like
 * the tag alone, and what follows the tag changes nothing; without a tag
 * the last byte counts.  The CRC itself is checked against CLUSTER KEYSLOT
 * in spec/unit/slot_spec.lua. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *key = (char *)dup_exact(data, size);

    int s = rp_key_slot(key, size);
    CHECK(s >= 0 && s < 16384);
    CHECK(rp_key_slot(key, size) == s); /* no state between calls */

    /* Redis's rule: the first '{', then the first '}' after it, and at
     * least one byte between them. */
    size_t open = 0, close = 0;
    while (open < size && key[open] != '{') open++;
    if (open < size) {
        close = open + 1;
        while (close < size && key[close] != '}') close++;
    }
    int tagged = open < size && close < size && close > open + 1;

    if (tagged) {
        size_t tlen = close - open - 1;
        char *tag = (char *)dup_exact(data + open + 1, tlen);
        CHECK(rp_key_slot(tag, tlen) == s);
        /* cutting the key just after the tag's '}' keeps the slot */
        CHECK(rp_key_slot(key, close + 1) == s);
        free(tag);
    } else if (size > 0) {
        /* No tag: every byte counts.  CRC16 is linear, so flipping the low
         * bit of the last byte XORs the CRC with the table's entry for 1,
         * 0x1021, all of it within the 14 bits a slot keeps.  Braces are
         * left alone: one could make or unmake a tag. */
        unsigned char last = (unsigned char)key[size - 1];
        unsigned char other = (unsigned char)(last ^ 0x01);
        if (last != '}' && other != '}' && last != '{' && other != '{') {
            key[size - 1] = (char)other;
            CHECK(rp_key_slot(key, size) == (s ^ 0x1021));
        }
    }

    CHECK(rp_key_slot(NULL, 0) == 0);
    CHECK(rp_key_slot(NULL, 1) == RP_EARG);
    free(key);
    return 0;
}
