/*
 * The C side of `make bench`: (a) the floor, HMAC-SHA256 verification with a
 * precomputed key state (rp_unsign on "sid.sig"), plus the core's entry
 * points called straight from C, so the driver can split (b) into C work and
 * FFI/Lua overhead.  Linked against build/librestypassport.so, the same
 * library LuaJIT loads.
 *
 * usage: floor HEADER NAME SECRET RECORD...
 * prints one "key ns_per_op cpu_share" line per measurement (median of RUNS
 * runs; cpu_share is CPU time / wall time of the runs, 1 on a quiet machine).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../csrc/passport.h"

#define RUNS 9
#define RUN_NS 150e6 /* each timed run lasts about this long */

static double clock_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Every benchmark body: one call, its result checked so a broken fixture
 * fails loudly instead of timing an early error return. */
typedef int (*body_fn)(void *ctx);

static double measure(const char *what, body_fn body, void *ctx)
{
    double t[RUNS];
    long n = 1000;

    /* Warm-up and calibration: grow n until a run takes ~30 ms. */
    for (;;) {
        double t0 = now_ns();
        for (long i = 0; i < n; i++)
            if (body(ctx) < 0) {
                fprintf(stderr, "floor: %s failed\n", what);
                exit(1);
            }
        double dt = now_ns() - t0;
        if (dt > 30e6) {
            n = (long)((double)n * RUN_NS / dt) + 1;
            break;
        }
        n *= 4;
    }
    /* CPU time over wall time: below 1 when other work took the CPU. */
    double wall = 0, c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    for (int r = 0; r < RUNS; r++) {
        double t0 = now_ns();
        for (long i = 0; i < n; i++) body(ctx);
        double dt = now_ns() - t0;
        wall += dt;
        t[r] = dt / (double)n;
    }
    double share = (clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0) / wall;
    qsort(t, RUNS, sizeof(t[0]), cmp);
    printf("%s %.1f %.2f\n", what, t[RUNS / 2], share);
    return t[RUNS / 2];
}

typedef struct ctx {
    const char *hdr, *name;
    size_t hdr_len, name_len;
    rp_key key;
    const unsigned char *val; /* "sid.sig", after "s:" */
    size_t val_len;
    unsigned char out[8192];
    const char *json;
    size_t json_len;
} ctx;

static int unsign_body(void *p)
{
    ctx *c = p;
    size_t sid_len;
    return rp_unsign(c->val, c->val_len, &c->key, 1, &sid_len);
}

static int hmac_body(void *p)
{
    ctx *c = p;
    char sig[64];
    return rp_hmac_b64(&c->key, c->val, c->val_len - 44, 0, sig, sizeof(sig));
}

static int cookie_get_body(void *p)
{
    ctx *c = p;
    size_t n;
    return rp_cookie_get(c->hdr, c->hdr_len, c->name, c->name_len, c->out,
                         sizeof(c->out), &n);
}

static int express_sid_body(void *p)
{
    ctx *c = p;
    size_t n;
    return rp_express_sid(c->hdr, c->hdr_len, c->name, c->name_len, &c->key,
                          1, c->out, sizeof(c->out), &n);
}

static int session_body(void *p)
{
    ctx *c = p;
    rp_session s;
    return rp_session_parse(c->json, c->json_len, 64, &s);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    static char buf[1 << 20];
    if (f == NULL) {
        perror(path);
        exit(1);
    }
    *len = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    char *s = malloc(*len ? *len : 1);
    if (s == NULL) exit(1);
    memcpy(s, buf, *len);
    return s;
}

int main(int argc, char **argv)
{
    static ctx c;
    static unsigned char value[8192];
    size_t value_len;

    if (argc < 4) {
        fprintf(stderr, "usage: floor HEADER NAME SECRET RECORD...\n");
        return 2;
    }
    c.hdr = argv[1];
    c.hdr_len = strlen(argv[1]);
    c.name = argv[2];
    c.name_len = strlen(argv[2]);
    if (rp_key_init(&c.key, RP_ALG_SHA256, (const unsigned char *)argv[3],
                    strlen(argv[3])) != RP_OK ||
        rp_cookie_get(c.hdr, c.hdr_len, c.name, c.name_len, value,
                      sizeof(value), &value_len) != RP_OK ||
        value_len < 2 + 44 || memcmp(value, "s:", 2) != 0) {
        fprintf(stderr, "floor: no signed cookie %s in the header\n", c.name);
        return 1;
    }
    c.val = value + 2;
    c.val_len = value_len - 2;

    measure("unsign", unsign_body, &c); /* (a) */
    measure("hmac_b64", hmac_body, &c);
    measure("cookie_get", cookie_get_body, &c);
    measure("express_sid", express_sid_body, &c);
    for (int i = 4; i < argc; i++) {
        char what[64];
        c.json = slurp(argv[i], &c.json_len);
        snprintf(what, sizeof(what), "session_parse:%zu", c.json_len);
        measure(what, session_body, &c);
    }
    return 0;
}
