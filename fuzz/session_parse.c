/* rp_session_parse: a connect-redis session record (JSON.parse rules). */
#include "fuzz.h"

static int same(const rp_session *a, const rp_session *b)
{
    return a->flags == b->flags && a->user_type == b->user_type &&
           a->user_off == b->user_off && a->user_len == b->user_len &&
           (a->expires_ms == b->expires_ms ||
            (a->expires_ms != a->expires_ms && b->expires_ms != b->expires_ms)) &&
           (a->original_max_age == b->original_max_age ||
            (a->original_max_age != a->original_max_age &&
             b->original_max_age != b->original_max_age));
}

static void check_user(const unsigned char *s, const rp_session *o)
{
    unsigned char first = s[o->user_off], last = s[o->user_off + o->user_len - 1];
    switch (o->user_type) {
    case RP_JSON_STRING: CHECK(first == '"' && last == '"' && o->user_len >= 2); break;
    case RP_JSON_OBJECT: CHECK(first == '{' && last == '}'); break;
    case RP_JSON_ARRAY: CHECK(first == '[' && last == ']'); break;
    case RP_JSON_NUMBER: CHECK(first == '-' || (first >= '0' && first <= '9')); break;
    case RP_JSON_NULL: CHECK(o->user_len == 4 && memcmp(s + o->user_off, "null", 4) == 0); break;
    case RP_JSON_TRUE: CHECK(o->user_len == 4 && memcmp(s + o->user_off, "true", 4) == 0); break;
    case RP_JSON_FALSE: CHECK(o->user_len == 5 && memcmp(s + o->user_off, "false", 5) == 0); break;
    default: CHECK(0 && "user_type out of range");
    }
    /* JS truthiness as passport 0.7 applies it (`su || su === 0`). */
    if (o->user_type == RP_JSON_NULL || o->user_type == RP_JSON_FALSE)
        CHECK(!(o->flags & RP_SF_USER_OK));
    if (o->user_type == RP_JSON_OBJECT || o->user_type == RP_JSON_ARRAY ||
        o->user_type == RP_JSON_TRUE || o->user_type == RP_JSON_NUMBER)
        CHECK(o->flags & RP_SF_USER_OK);
    if (o->user_type == RP_JSON_STRING)
        CHECK(!!(o->flags & RP_SF_USER_OK) == (o->user_len > 2));
    if (o->flags & RP_SF_USER_ESCAPED)
        CHECK(o->user_type == RP_JSON_STRING &&
              memchr(s + o->user_off, '\\', o->user_len) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *s = dup_exact(data, size);
    rp_session o, o2;
    int rc = rp_session_parse((const char *)s, size, 64, &o);

    CHECK(rc == RP_OK || rc == RP_EJSON || rc == RP_EDEPTH || rc == RP_ENOTOBJECT);
    if (rc != RP_OK) {
        /* A failure leaves nothing half-read behind. */
        CHECK(o.err_off <= size && o.flags == 0 && o.user_len == 0 &&
              o.user_off == 0 && o.user_type == RP_JSON_NONE);
    } else {
        uint32_t f = o.flags;
        CHECK((uint64_t)o.user_off + o.user_len <= size);
        CHECK(!!(f & RP_SF_USER) == (o.user_type != RP_JSON_NONE));
        CHECK(!(f & RP_SF_USER_OK) || (f & RP_SF_USER));
        CHECK(!(f & RP_SF_USER) || (f & RP_SF_PASSPORT)); /* an object is truthy */
        CHECK(!(f & (RP_SF_EXPIRES | RP_SF_EXPIRES_INVALID | RP_SF_MAXAGE)) ||
              (f & RP_SF_COOKIE));
        CHECK(!((f & RP_SF_EXPIRES) && (f & RP_SF_EXPIRES_INVALID)));
        if (f & RP_SF_EXPIRES)
            CHECK(o.expires_ms >= -8.64e15 && o.expires_ms <= 8.64e15 &&
                  o.expires_ms == (double)(int64_t)o.expires_ms);
        if (f & RP_SF_USER) {
            CHECK(o.user_len > 0);
            check_user(s, &o);
        } else {
            CHECK(o.user_off == 0 && o.user_len == 0);
        }
        /* A complete object loses its closing brace: never valid. */
        if (size > 0 && s[size - 1] == '}')
            CHECK(rp_session_parse((const char *)s, size - 1, 64, &o2) != RP_OK);
    }

    /* A deeper limit never rejects what a shallower one accepts, and reads
     * the same fields. */
    int rc2 = rp_session_parse((const char *)s, size, 512, &o2);
    if (rc == RP_OK) CHECK(rc2 == RP_OK && same(&o, &o2));
    if (rc == RP_EJSON || rc == RP_ENOTOBJECT) CHECK(rc2 == rc);
    free(s);
    return 0;
}
