/* rp_parse_date: Date.parse for ES date-time strings and V8's legacy forms. */
#include <math.h>

#include "fuzz.h"

#define MAX_MS 8.64e15

typedef struct civil {
    int64_t y;
    int m, d, wd, hh, mi, ss, ms;
} civil;

/* A time value's UTC fields: civil_from_days (H. Hinnant), the inverse of
 * the parser's days_from_civil. */
static civil fields(int64_t t)
{
    civil c;
    int64_t days = t / 86400000, ms = t % 86400000;
    if (ms < 0) { ms += 86400000; days--; }
    int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    c.d = (int)(doy - (153 * mp + 2) / 5 + 1);
    c.m = (int)(mp < 10 ? mp + 3 : mp - 9);
    c.y = yoe + era * 400 + (c.m <= 2);
    c.wd = (int)(((days % 7) + 11) % 7); /* 1970-01-01 was a Thursday (4) */
    c.hh = (int)(ms / 3600000);
    c.mi = (int)(ms / 60000 % 60);
    c.ss = (int)(ms / 1000 % 60);
    c.ms = (int)(ms % 1000);
    return c;
}

/* Date.prototype.toISOString, for any time value in range. */
static int to_iso(int64_t t, char *out, size_t cap)
{
    civil c = fields(t);
    if (c.y >= 0 && c.y <= 9999)
        return snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (int)c.y,
                        c.m, c.d, c.hh, c.mi, c.ss, c.ms);
    return snprintf(out, cap, "%c%06d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                    c.y < 0 ? '-' : '+', (int)(c.y < 0 ? -c.y : c.y), c.m, c.d,
                    c.hh, c.mi, c.ss, c.ms);
}

static const char *const WD[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const MON[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* toUTCString (which = 0) and toString in UTC (which = 1), for 4-digit
 * years: both keep whole seconds. */
static int to_legacy(int64_t t, int which, char *out, size_t cap)
{
    civil c = fields(t);
    if (which == 0)
        return snprintf(out, cap, "%s, %02d %s %04d %02d:%02d:%02d GMT", WD[c.wd],
                        c.d, MON[c.m - 1], (int)c.y, c.hh, c.mi, c.ss);
    return snprintf(out, cap, "%s %s %02d %04d %02d:%02d:%02d GMT+0000 "
                    "(Coordinated Universal Time)", WD[c.wd], MON[c.m - 1], c.d,
                    (int)c.y, c.hh, c.mi, c.ss);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = (char *)dup_exact(data, size), iso[96];
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

        /* The legacy forms, where they are unambiguous (4-digit years). */
        int64_t y = fields(t).y;
        if (y >= 1000 && y <= 9999) {
            int64_t sec = t - ((t % 1000) + 1000) % 1000;
            for (int which = 0; which < 2; which++) {
                n = to_legacy(t, which, iso, sizeof(iso));
                CHECK(n > 0 && (size_t)n < sizeof(iso));
                back = NAN;
                CHECK(rp_parse_date(iso, (size_t)n, &back) == RP_OK);
                CHECK(back == (double)sec);
            }
        }
    }
    free(s);
    return 0;
}
