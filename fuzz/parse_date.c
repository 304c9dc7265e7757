/* rp_parse_date: Date.parse for ES date-time strings and V8's legacy forms. */
#include <math.h>

#include "fuzz.h"

#define MAX_MS 8.64e15

/* Date.prototype.toISOString, for any time value in range. */
static int to_iso(int64_t t, char *out, size_t cap)
{
    int64_t days = t / 86400000, ms = t % 86400000;
    if (ms < 0) { ms += 86400000; days--; }
    /* civil_from_days (H. Hinnant), the inverse of the parser's helper. */
    int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153, d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9, y = yoe + era * 400 + (m <= 2);
    int hh = (int)(ms / 3600000), mi = (int)(ms / 60000 % 60),
        ss = (int)(ms / 1000 % 60), mss = (int)(ms % 1000);
    if (y >= 0 && y <= 9999)
        return snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (int)y,
                        (int)m, (int)d, hh, mi, ss, mss);
    return snprintf(out, cap, "%c%06d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                    y < 0 ? '-' : '+', (int)(y < 0 ? -y : y), (int)m, (int)d, hh,
                    mi, ss, mss);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = (char *)dup_exact(data, size), iso[64];
    double ms = NAN;

    int rc = rp_parse_date(s, size, &ms);
    CHECK(rc == RP_OK || rc == RP_EARG);
    if (rc == RP_OK) {
        /* A time value: whole milliseconds within +-8.64e15. */
        CHECK(ms >= -MAX_MS && ms <= MAX_MS && ms == floor(ms));
        /* Every accepted date names a year: at least four characters. */
        CHECK(size >= 4);
    }

    /* Any time value, written as toISOString writes it, reads back. */
    if (size >= 8) {
        int64_t raw;
        memcpy(&raw, data, 8);
        int64_t t = raw % ((int64_t)MAX_MS + 1);
        int n = to_iso(t, iso, sizeof(iso));
        CHECK(n > 0 && (size_t)n < sizeof(iso));
        double back = NAN;
        CHECK(rp_parse_date(iso, (size_t)n, &back) == RP_OK);
        CHECK(back == (double)t);
    }
    free(s);
    return 0;
}
