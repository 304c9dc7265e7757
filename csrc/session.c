/*
 * One validating pass over a session record (the JSON connect-redis stores)
 * that picks out what the gateway needs: cookie.expires,
 * cookie.originalMaxAge and passport.user.  Full JSON.parse rules apply, so
 * a record the Node app could not load is rejected here too; the last
 * duplicate key wins, as in JSON.parse.  Recursion is bounded by max_depth.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define DEPTH_CAP 512

/* Which object we are inside decides which keys matter. */
enum scope { SC_OTHER, SC_TOP, SC_COOKIE, SC_PASSPORT };

/* A key we look for; decoded escapes included ("pass\u0070ort"). */
enum key { K_NONE, K_COOKIE, K_PASSPORT, K_EXPIRES, K_MAXAGE, K_USER };

typedef struct parser {
    const unsigned char *s;
    size_t n, i;
    int max_depth;
    rp_session *out;
} parser;

typedef struct value {
    int type;
    size_t start, end;
    int escaped; /* strings: holds a backslash escape */
    int truthy;  /* JS truthiness */
} value;

static void ws(parser *p)
{
    while (p->i < p->n) {
        unsigned char c = p->s[p->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->i++;
    }
}

static int hex4(const unsigned char *s, unsigned *v)
{
    unsigned x = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char c = s[k];
        x <<= 4;
        if (c >= '0' && c <= '9') x |= c - '0';
        else if (c >= 'a' && c <= 'f') x |= c - 'a' + 10u;
        else if (c >= 'A' && c <= 'F') x |= c - 'A' + 10u;
        else return 0;
    }
    *v = x;
    return 1;
}

/* Scans a string starting at the opening quote.  When key is not NULL the
 * decoded text is matched against the keys we care about. */
static int string(parser *p, value *v, enum key *key)
{
    char kb[16];
    size_t kn = 0;
    int kover = 0;

    v->type = RP_JSON_STRING;
    v->start = p->i++;
    v->escaped = 0;
    for (;;) {
        /* Most bytes of a record are plain string text: skip them in a
         * tight loop (the keys we match still take the slow path). */
        if (key == NULL)
            while (p->i < p->n && p->s[p->i] >= 0x20 && p->s[p->i] != '"' &&
                   p->s[p->i] != '\\')
                p->i++;
        if (p->i >= p->n) return RP_EJSON;
        unsigned char c = p->s[p->i++];
        unsigned ch = c;
        if (c == '"') break;
        if (c < 0x20) return RP_EJSON;
        if (c == '\\') {
            if (p->i >= p->n) return RP_EJSON;
            v->escaped = 1;
            switch (p->s[p->i++]) {
            case '"': ch = '"'; break;
            case '\\': ch = '\\'; break;
            case '/': ch = '/'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            case 't': ch = '\t'; break;
            case 'u':
                if (p->n - p->i < 4 || !hex4(p->s + p->i, &ch)) return RP_EJSON;
                p->i += 4;
                break;
            default: return RP_EJSON;
            }
        }
        if (key) {
            /* Our keys are ASCII: anything else cannot match one. */
            if (ch >= 0x80 || kn == sizeof(kb)) kover = 1;
            else kb[kn++] = (char)ch;
        }
    }
    v->end = p->i;
    v->truthy = v->end - v->start > 2;
    if (key) {
        *key = K_NONE;
        if (kover) return RP_OK;
#define IS(lit) (kn == sizeof(lit) - 1 && memcmp(kb, lit, kn) == 0)
        if (IS("cookie")) *key = K_COOKIE;
        else if (IS("passport")) *key = K_PASSPORT;
        else if (IS("expires")) *key = K_EXPIRES;
        else if (IS("originalMaxAge")) *key = K_MAXAGE;
        else if (IS("user")) *key = K_USER;
#undef IS
    }
    return RP_OK;
}

static int is_digit(const parser *p)
{
    return p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9';
}

static int number(parser *p, value *v)
{
    v->type = RP_JSON_NUMBER;
    v->start = p->i;
    if (p->s[p->i] == '-') p->i++;
    if (!is_digit(p)) return RP_EJSON;
    if (p->s[p->i] == '0') p->i++;
    else while (is_digit(p)) p->i++;
    if (p->i < p->n && p->s[p->i] == '.') {
        p->i++;
        if (!is_digit(p)) return RP_EJSON;
        while (is_digit(p)) p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
        if (!is_digit(p)) return RP_EJSON;
        while (is_digit(p)) p->i++;
    }
    v->end = p->i;
    return RP_OK;
}

/* The number's value as JS reads it (strtod: nginx and LuaJIT keep the C
 * locale).  Absurdly long numbers are read from their first 400 bytes. */
static double number_value(const parser *p, const value *v)
{
    char buf[401];
    size_t n = v->end - v->start;
    if (n >= sizeof(buf)) n = sizeof(buf) - 1;
    memcpy(buf, p->s + v->start, n);
    buf[n] = '\0';
    return strtod(buf, NULL);
}

static int literal(parser *p, value *v, const char *word, int type)
{
    size_t n = strlen(word);
    if (p->n - p->i < n || memcmp(p->s + p->i, word, n) != 0) return RP_EJSON;
    v->type = type;
    v->start = p->i;
    p->i += n;
    v->end = p->i;
    v->truthy = type == RP_JSON_TRUE;
    return RP_OK;
}

static int parse_value(parser *p, value *v, int depth, enum scope scope);

static void reset_cookie(rp_session *o)
{
    o->flags &= ~(uint32_t)(RP_SF_COOKIE | RP_SF_EXPIRES |
                            RP_SF_EXPIRES_INVALID | RP_SF_MAXAGE);
    o->expires_ms = 0;
    o->original_max_age = 0;
}

static void reset_user(rp_session *o)
{
    o->flags &= ~(uint32_t)(RP_SF_USER | RP_SF_USER_OK | RP_SF_USER_ESCAPED |
                            RP_SF_USER_BADUTF8);
    o->user_type = RP_JSON_NONE;
    o->user_off = o->user_len = 0;
}

/* Records a member whose key matters in this scope. */
static void member(parser *p, enum scope scope, enum key key, const value *v)
{
    rp_session *o = p->out;

    if (scope == SC_COOKIE && key == K_EXPIRES) {
        o->flags &= ~(uint32_t)(RP_SF_EXPIRES | RP_SF_EXPIRES_INVALID);
        if (v->type != RP_JSON_STRING) return;
        if (v->escaped) { /* decode the few bytes a date can hold */
            char buf[64];
            size_t n = 0;
            parser q = {p->s, v->end - 1, v->start + 1, 0, NULL};
            while (q.i < q.n && n < sizeof(buf)) {
                unsigned char c = q.s[q.i++];
                unsigned ch = c;
                if (c == '\\') {
                    c = q.s[q.i++];
                    if (c == 'u') { hex4(q.s + q.i, &ch); q.i += 4; }
                    else ch = c == '"' || c == '\\' || c == '/' ? c : 0x80;
                }
                buf[n++] = ch < 0x80 ? (char)ch : '\x7f';
            }
            if (q.i < q.n || rp_parse_date(buf, n, &o->expires_ms) != RP_OK)
                o->flags |= RP_SF_EXPIRES_INVALID;
            else
                o->flags |= RP_SF_EXPIRES;
        } else if (rp_parse_date((const char *)p->s + v->start + 1,
                                 v->end - v->start - 2, &o->expires_ms) == RP_OK) {
            o->flags |= RP_SF_EXPIRES;
        } else {
            o->flags |= RP_SF_EXPIRES_INVALID;
        }
    } else if (scope == SC_COOKIE && key == K_MAXAGE) {
        o->flags &= ~(uint32_t)RP_SF_MAXAGE;
        if (v->type == RP_JSON_NUMBER) {
            o->original_max_age = number_value(p, v);
            o->flags |= RP_SF_MAXAGE;
        }
    } else if (scope == SC_PASSPORT && key == K_USER) {
        /* passport 0.7 deserializes when `su || su === 0`: every number. */
        int ok = v->truthy || v->type == RP_JSON_NUMBER;
        o->flags |= RP_SF_USER | (ok ? RP_SF_USER_OK : 0) |
                    (v->escaped ? RP_SF_USER_ESCAPED : 0);
        /* node-redis decodes a record as UTF-8 first: Lua repairs the user
         * only when this says it must, without a pass of its own. */
        uint32_t st = 0;
        if (rp_utf8_validate(p->s + v->start, v->end - v->start, &st) != RP_OK)
            o->flags |= RP_SF_USER_BADUTF8;
        o->user_type = v->type;
        o->user_off = (uint32_t)v->start;
        o->user_len = (uint32_t)(v->end - v->start);
    }
}

static int container(parser *p, value *v, int depth, enum scope scope)
{
    int is_obj = p->s[p->i] == '{';
    char close = is_obj ? '}' : ']';

    if (depth >= p->max_depth) return RP_EDEPTH;
    v->type = is_obj ? RP_JSON_OBJECT : RP_JSON_ARRAY;
    v->start = p->i++;
    v->truthy = 1;
    ws(p);
    if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
        v->end = p->i;
        return RP_OK;
    }
    for (;;) {
        enum key key = K_NONE;
        enum scope inner = SC_OTHER;
        value kv, mv;
        int rc;

        if (is_obj) {
            if (p->i >= p->n || p->s[p->i] != '"') return RP_EJSON;
            if ((rc = string(p, &kv, scope == SC_OTHER ? NULL : &key)) != RP_OK)
                return rc;
            ws(p);
            if (p->i >= p->n || p->s[p->i] != ':') return RP_EJSON;
            p->i++;
            ws(p);
            /* A repeated key replaces what the earlier one set. */
            if (scope == SC_TOP && key == K_COOKIE) {
                reset_cookie(p->out);
                inner = SC_COOKIE;
            } else if (scope == SC_TOP && key == K_PASSPORT) {
                p->out->flags &= ~(uint32_t)RP_SF_PASSPORT;
                reset_user(p->out);
                inner = SC_PASSPORT;
            } else if (scope == SC_PASSPORT && key == K_USER) {
                reset_user(p->out);
            }
        }
        if ((rc = parse_value(p, &mv, depth + 1, inner)) != RP_OK) return rc;
        if (mv.type == RP_JSON_NUMBER && scope == SC_TOP && key == K_PASSPORT)
            mv.truthy = number_value(p, &mv) != 0.0;
        if (is_obj && scope != SC_OTHER) {
            if (scope == SC_TOP && key == K_COOKIE && mv.type == RP_JSON_OBJECT)
                p->out->flags |= RP_SF_COOKIE;
            else if (scope == SC_TOP && key == K_PASSPORT && mv.truthy)
                p->out->flags |= RP_SF_PASSPORT;
            else
                member(p, scope, key, &mv);
        }
        ws(p);
        if (p->i >= p->n) return RP_EJSON;
        if (p->s[p->i] == ',') {
            p->i++;
            ws(p);
            continue;
        }
        if (p->s[p->i] != close) return RP_EJSON;
        p->i++;
        v->end = p->i;
        return RP_OK;
    }
}

static int parse_value(parser *p, value *v, int depth, enum scope scope)
{
    if (p->i >= p->n) return RP_EJSON;
    v->escaped = 0;
    v->truthy = 0;
    switch (p->s[p->i]) {
    case '{':
        return container(p, v, depth, scope == SC_OTHER ? SC_OTHER : scope);
    case '[':
        /* Inside an array no key is ours: "passport": [{"user": 1}] has no user. */
        return container(p, v, depth, SC_OTHER);
    case '"':
        return string(p, v, NULL);
    case 't':
        return literal(p, v, "true", RP_JSON_TRUE);
    case 'f':
        return literal(p, v, "false", RP_JSON_FALSE);
    case 'n':
        return literal(p, v, "null", RP_JSON_NULL);
    default:
        /* Truthiness (a strtod) only where it is read: see container(). */
        return number(p, v);
    }
}

int rp_session_parse(const char *json, size_t len, int max_depth,
                     rp_session *out)
{
    parser p;
    value v;
    int rc;

    if (json == NULL || out == NULL || max_depth < 1) return RP_EARG;
    if (len > UINT32_MAX) return RP_ETOOBIG;
    memset(out, 0, sizeof(*out));
    p.s = (const unsigned char *)json;
    p.n = len;
    p.i = 0;
    p.max_depth = max_depth > DEPTH_CAP ? DEPTH_CAP : max_depth;
    p.out = out;

    ws(&p);
    int top_obj = p.i < p.n && p.s[p.i] == '{';
    rc = parse_value(&p, &v, 0, top_obj ? SC_TOP : SC_OTHER);
    if (rc == RP_OK) {
        ws(&p);
        if (p.i != p.n) rc = RP_EJSON;
    }
    if (rc == RP_OK && !top_obj) rc = RP_ENOTOBJECT;
    if (rc != RP_OK) {
        uint32_t at = (uint32_t)p.i;
        memset(out, 0, sizeof(*out));
        out->err_off = at;
    }
    return rc;
}
