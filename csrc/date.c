/* Date.parse for ECMAScript's date time string format (what express-session
 * writes through JSON.stringify: "2026-11-23T10:00:00.000Z"). */
#include "internal.h"

static int digits(const char *s, size_t len, size_t *i, int n, int *v)
{
    int x = 0;
    for (int k = 0; k < n; k++) {
        if (*i >= len || s[*i] < '0' || s[*i] > '9') return 0;
        x = x * 10 + (s[(*i)++] - '0');
    }
    *v = x;
    return 1;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int64_t y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dm[m - 1];
}

int rp_parse_date(const char *s, size_t len, double *ms)
{
    size_t i = 0;
    int64_t year;
    int y, mon = 1, day = 1, hh = 0, mm = 0, ss = 0, msec = 0, off = 0;

    if (s == NULL || ms == NULL) return RP_EARG;
    if (len > 0 && (s[0] == '+' || s[0] == '-')) {
        int neg = s[0] == '-';
        i = 1;
        if (!digits(s, len, &i, 6, &y)) return RP_EARG;
        if (neg && y == 0) return RP_EARG; /* "-000000" is not a year */
        year = neg ? -y : y;
    } else {
        if (!digits(s, len, &i, 4, &y)) return RP_EARG;
        year = y;
    }
    if (i < len && s[i] == '-') {
        i++;
        if (!digits(s, len, &i, 2, &mon)) return RP_EARG;
        if (i < len && s[i] == '-') {
            i++;
            if (!digits(s, len, &i, 2, &day)) return RP_EARG;
        }
    }
    if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon))
        return RP_EARG;

    if (i < len && s[i] == 'T') {
        i++;
        if (!digits(s, len, &i, 2, &hh) || i >= len || s[i++] != ':' ||
            !digits(s, len, &i, 2, &mm))
            return RP_EARG;
        if (i < len && s[i] == ':') {
            i++;
            if (!digits(s, len, &i, 2, &ss)) return RP_EARG;
            if (i < len && s[i] == '.') {
                int frac = 0, n = 0;
                i++;
                /* Digits past the third only refine below a millisecond. */
                while (i < len && s[i] >= '0' && s[i] <= '9') {
                    if (n < 3) frac = frac * 10 + (s[i] - '0');
                    n++;
                    i++;
                }
                if (n == 0) return RP_EARG;
                while (n < 3) { frac *= 10; n++; }
                msec = frac;
            }
        }
        if (i < len && s[i] == 'Z') {
            i++;
        } else if (i < len && (s[i] == '+' || s[i] == '-')) {
            int sign = s[i++] == '-' ? -1 : 1, oh, om;
            if (!digits(s, len, &i, 2, &oh) || i >= len || s[i++] != ':' ||
                !digits(s, len, &i, 2, &om) || oh > 23 || om > 59)
                return RP_EARG;
            off = sign * (oh * 60 + om);
        }
        /* Without an offset ES reads local time; a gateway runs in UTC. */
        if (hh > 24 || mm > 59 || ss > 59 ||
            (hh == 24 && (mm != 0 || ss != 0 || msec != 0)))
            return RP_EARG;
    }
    if (i != len) return RP_EARG;

    double t = (double)days_from_civil(year, mon, day) * 86400000.0 +
               ((double)hh * 3600 + mm * 60 + ss - off * 60.0) * 1000.0 + msec;
    if (t > 8.64e15 || t < -8.64e15) return RP_EARG;
    *ms = t;
    return RP_OK;
}
