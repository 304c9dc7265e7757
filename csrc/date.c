/* Date.parse for ECMAScript's date time string format (what express-session
 * writes through JSON.stringify: "2026-11-23T10:00:00.000Z"). */
#include <string.h>

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

static int to_ms(int64_t year, int mon, int day, int hh, int mm, int ss,
                 int msec, int off, double *ms)
{
    double t = (double)days_from_civil(year, mon, day) * 86400000.0 +
               ((double)hh * 3600 + mm * 60 + ss - off * 60.0) * 1000.0 + msec;
    if (t > 8.64e15 || t < -8.64e15) return RP_EARG;
    *ms = t;
    return RP_OK;
}

/* ES's date time string format, with V8's leniency: 't', 'z' or a space,
 * and day numbers past the month's end rolling over (Feb 30 is Mar 2). */
static int iso(const char *s, size_t len, double *ms)
{
    size_t i = 0;
    int64_t year;
    int y, mon = 1, day = 1, hh = 0, mm = 0, ss = 0, msec = 0, off = 0;

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
    if (mon < 1 || mon > 12 || day < 1 || day > 31) return RP_EARG;

    if (i < len && (s[i] == 'T' || s[i] == 't' || s[i] == ' ')) {
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
        if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
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
    return to_ms(year, mon, day, hh, mm, ss, msec, off, ms);
}

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static int is_num(int c) { return c >= '0' && c <= '9'; }

/* Reads an unsigned number of up to 9 digits. */
static int number(const char *s, size_t len, size_t *i, int *v)
{
    int x = 0, n = 0;
    while (*i < len && is_num(s[*i]) && n < 9) { x = x * 10 + (s[(*i)++] - '0'); n++; }
    *v = x;
    return n;
}

/* The legacy forms V8's Date.parse falls back to, as far as dates are
 * written by programs: "Mon, 23 Nov 2026 10:00:00 GMT" (toUTCString),
 * "Mon Nov 23 2026 10:00:00 GMT+0000 (...)" (toString), "2026/11/23" and
 * "11/23/2026".  Without a zone the time is local, and a gateway runs in UTC. */
static int legacy(const char *s, size_t len, double *ms)
{
    static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
    int year = -1, mon = 0, day = 0, hh = 0, mm = 0, ss = 0, off = 0, tz = 0;
    size_t i = 0;

    while (i < len) {
        char c = s[i];
        if (c == ' ' || c == ',' || c == '\t') { i++; continue; }
        if (c == '(') { /* a comment, such as "(Coordinated Universal Time)" */
            while (i < len && s[i] != ')') i++;
            if (i == len) return RP_EARG;
            i++;
            continue;
        }
        if (is_alpha(c)) {
            size_t st = i;
            while (i < len && is_alpha(s[i])) i++;
            size_t n = i - st;
            char w[4] = {0};
            for (size_t k = 0; k < 3 && k < n; k++) w[k] = (char)lower(s[st + k]);
            if (n >= 3) {
                const char *m = strstr(months, w);
                if (m && (m - months) % 3 == 0) { mon = (int)(m - months) / 3 + 1; continue; }
                if (strstr("sunmontuewedthufrisat", w)) continue;
            }
            if ((n == 3 && (memcmp(w, "gmt", 3) == 0 || memcmp(w, "utc", 3) == 0)) ||
                (n == 2 && w[0] == 'u' && w[1] == 't') || (n == 1 && w[0] == 'z')) {
                tz = 1;
                continue;
            }
            return RP_EARG;
        }
        if ((c == '+' || c == '-') && (tz || hh || mm)) {
            int sign = c == '-' ? -1 : 1, v, n;
            i++;
            n = number(s, len, &i, &v);
            if (n == 4) off = sign * (v / 100 * 60 + v % 100);
            else if (n == 2 && i < len && s[i] == ':') {
                int m2;
                i++;
                if (number(s, len, &i, &m2) != 2) return RP_EARG;
                off = sign * (v * 60 + m2);
            } else return RP_EARG;
            tz = 1;
            continue;
        }
        if (!is_num(c)) return RP_EARG;
        int v;
        number(s, len, &i, &v);
        if (i < len && s[i] == ':') {
            hh = v;
            i++;
            if (number(s, len, &i, &mm) == 0) return RP_EARG;
            if (i < len && s[i] == ':') {
                i++;
                if (number(s, len, &i, &ss) == 0) return RP_EARG;
            }
            if (hh > 24 || mm > 59 || ss > 59) return RP_EARG;
        } else if (i < len && s[i] == '/') {
            int b, c3;
            i++;
            if (number(s, len, &i, &b) == 0 || i >= len || s[i++] != '/' ||
                number(s, len, &i, &c3) == 0)
                return RP_EARG;
            if (v >= 1000) { year = v; mon = b; day = c3; }
            else { mon = v; day = b; year = c3; }
        } else if (day == 0 && v >= 1 && v <= 31) {
            day = v;
        } else if (year < 0) {
            year = v;
        } else {
            return RP_EARG;
        }
    }
    if (year < 0 || mon < 1 || mon > 12 || day < 1 || day > 31) return RP_EARG;
    (void)tz;
    return to_ms(year, mon, day, hh, mm, ss, 0, off, ms);
}

int rp_parse_date(const char *s, size_t len, double *ms)
{
    if (s == NULL || ms == NULL) return RP_EARG;
    if (iso(s, len, ms) == RP_OK) return RP_OK;
    return legacy(s, len, ms);
}
