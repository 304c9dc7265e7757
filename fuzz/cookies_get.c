/* rp_cookies_get: npm `cookies` 0.9 raw lookup (cookie-session).
 * Input: fuzz.h's named layout (name length byte, name, header). */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    named n;
    if (!split_named(data, size, &n)) return 0;

    const char *hdr = (const char *)n.hdr, *val = NULL;
    size_t len = 0;
    int rc = rp_cookies_get(hdr, n.hdr_len, (const char *)n.name, n.name_len,
                            &val, &len);
    CHECK(rc == RP_OK || rc == RP_ENOTFOUND);
    if (rc == RP_OK) {
        /* A slice of the header... */
        CHECK(val >= hdr && val <= hdr + n.hdr_len);
        CHECK(len <= (size_t)(hdr + n.hdr_len - val));
        /* ...of [^;]* ... */
        CHECK(memchr(val, ';', len) == NULL);
        /* ...right after "name=" or "name=\"". */
        size_t back = val > hdr && val[-1] == '"' ? 2 : 1;
        CHECK((size_t)(val - hdr) >= back + n.name_len);
        CHECK(val[-(long)back] == '=');
        CHECK(memcmp(val - back - n.name_len, n.name, n.name_len) == 0);
    }
    free_named(&n);
    return 0;
}
