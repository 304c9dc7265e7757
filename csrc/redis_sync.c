/*
 * A blocking Redis client over hiredis's synchronous API, for use outside
 * nginx.  See redis_sync.h for the contract.  Written against the part of
 * hiredis that 0.14 and 1.x share: redisConnectWithTimeout,
 * redisConnectUnixWithTimeout, redisSetTimeout, redisCommandArgv and the
 * redisReply fields type/str/len.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "redis_sync.h"

struct rp_redis {
    redisContext *c;
    redisReply *last; /* the reply rp_redis_get handed out */
    char err[256];
};

/* ---- SIGPIPE: block it around each call, swallow the one we caused ----- */

typedef struct sigpipe_guard {
    sigset_t old;
    int was_pending;
} sigpipe_guard;

static void sigpipe_block(sigpipe_guard *g)
{
    sigset_t set, pending;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &g->old);
    sigemptyset(&pending);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE) == 1;
}

static void sigpipe_unblock(const sigpipe_guard *g)
{
    int saved = errno;

    if (!g->was_pending) {
        sigset_t set, pending;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        sigemptyset(&pending);
        sigpending(&pending);
        if (sigismember(&pending, SIGPIPE) == 1) {
            const struct timespec zero = { 0, 0 };
            while (sigtimedwait(&set, NULL, &zero) == -1 && errno == EINTR) {
            }
        }
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
    errno = saved;
}

/* ---- errors ------------------------------------------------------------- */

static void set_err(rp_redis *r, const char *msg, size_t len)
{
    if (len >= sizeof(r->err)) len = sizeof(r->err) - 1;
    memcpy(r->err, msg, len);
    r->err[len] = '\0';
    /* "Connection refused" -> "connection refused", like cosockets say. */
    if (r->err[0] >= 'A' && r->err[0] <= 'Z' && r->err[1] >= 'a' &&
        r->err[1] <= 'z')
        r->err[0] = (char)(r->err[0] - 'A' + 'a');
}

static void set_errs(rp_redis *r, const char *msg)
{
    set_err(r, msg, strlen(msg));
}

static void drop_context(rp_redis *r)
{
    if (r->c) {
        redisFree(r->c);
        r->c = NULL;
    }
}

/* The context failed: keep its message, close it, classify. */
static int context_error(rp_redis *r, int saved_errno)
{
    int timeout = 0;
    redisContext *c = r->c;

#ifdef REDIS_ERR_TIMEOUT /* hiredis >= 1.0 says so itself */
    if (c->err == REDIS_ERR_TIMEOUT) timeout = 1;
#endif
    /* hiredis 0.14: a read past SO_RCVTIMEO fails with EAGAIN, a connect
     * past its timeout with ETIMEDOUT, both reported as REDIS_ERR_IO. */
    if (c->err == REDIS_ERR_IO &&
        (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK ||
         saved_errno == ETIMEDOUT))
        timeout = 1;

    if (timeout) {
        set_errs(r, "timeout");
    } else if (c->err == REDIS_ERR_OOM) {
        set_errs(r, "out of memory");
    } else {
        set_errs(r, c->errstr[0] ? c->errstr : "I/O error");
    }
    int oom = c->err == REDIS_ERR_OOM;
    drop_context(r);
    if (timeout) return RP_REDIS_ETIMEOUT;
    return oom ? RP_REDIS_ENOMEM : RP_REDIS_EIO;
}

static struct timeval to_tv(int ms)
{
    struct timeval tv;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    return tv;
}

/* Runs one command; on success *out holds the reply (caller frees). */
static int command(rp_redis *r, int argc, const char **argv,
                   const size_t *argvlen, redisReply **out)
{
    sigpipe_guard g;
    void *reply;
    int saved;

    *out = NULL;
    if (!r->c) {
        set_errs(r, "not connected");
        return RP_REDIS_ENOTCONN;
    }
    sigpipe_block(&g);
    errno = 0;
    reply = redisCommandArgv(r->c, argc, argv, argvlen);
    saved = errno;
    sigpipe_unblock(&g);
    if (reply == NULL) return context_error(r, saved);
    *out = reply;
    return RP_REDIS_OK;
}

/* A command whose only good answer is +OK. */
static int command_ok(rp_redis *r, int argc, const char **argv,
                      const size_t *argvlen)
{
    redisReply *reply;
    int rc = command(r, argc, argv, argvlen, &reply);

    if (rc != RP_REDIS_OK) return rc;
    if (reply->type == REDIS_REPLY_STATUS) {
        rc = RP_REDIS_OK;
    } else if (reply->type == REDIS_REPLY_ERROR) {
        set_err(r, reply->str, reply->len);
        rc = RP_REDIS_EREPLY;
    } else {
        set_errs(r, "unexpected reply type");
        rc = RP_REDIS_ETYPE;
    }
    freeReplyObject(reply);
    return rc;
}

/* ---- API ---------------------------------------------------------------- */

RP_REDIS_API rp_redis *rp_redis_new(void)
{
    return calloc(1, sizeof(rp_redis));
}

RP_REDIS_API void rp_redis_release(rp_redis *r)
{
    if (r && r->last) {
        freeReplyObject(r->last);
        r->last = NULL;
    }
}

RP_REDIS_API void rp_redis_close(rp_redis *r)
{
    if (!r) return;
    rp_redis_release(r);
    drop_context(r);
}

RP_REDIS_API void rp_redis_free(rp_redis *r)
{
    if (!r) return;
    rp_redis_close(r);
    free(r);
}

RP_REDIS_API int rp_redis_connected(const rp_redis *r)
{
    return r && r->c ? 1 : 0;
}

RP_REDIS_API const char *rp_redis_errstr(const rp_redis *r)
{
    return r ? r->err : "no handle";
}

RP_REDIS_API int rp_redis_connect(rp_redis *r, const char *host, int port,
                                  const char *path, int timeout_ms)
{
    sigpipe_guard g;
    int saved;

    if (!r) return RP_REDIS_EARG;
    r->err[0] = '\0';
    rp_redis_close(r);
    if (timeout_ms <= 0 || (!path && (!host || port <= 0 || port > 65535))) {
        set_errs(r, "bad argument");
        return RP_REDIS_EARG;
    }
    sigpipe_block(&g);
    errno = 0;
    if (path)
        r->c = redisConnectUnixWithTimeout(path, to_tv(timeout_ms));
    else
        r->c = redisConnectWithTimeout(host, port, to_tv(timeout_ms));
    saved = errno;
    sigpipe_unblock(&g);
    if (!r->c) {
        set_errs(r, "out of memory");
        return RP_REDIS_ENOMEM;
    }
    if (r->c->err) return context_error(r, saved);
    return RP_REDIS_OK;
}

RP_REDIS_API int rp_redis_set_timeout(rp_redis *r, int timeout_ms)
{
    if (!r || timeout_ms <= 0) return RP_REDIS_EARG;
    if (!r->c) {
        set_errs(r, "not connected");
        return RP_REDIS_ENOTCONN;
    }
    if (redisSetTimeout(r->c, to_tv(timeout_ms)) != REDIS_OK)
        return context_error(r, errno);
    return RP_REDIS_OK;
}

RP_REDIS_API int rp_redis_auth(rp_redis *r, const char *user, size_t user_len,
                               const char *pass, size_t pass_len)
{
    const char *argv[3];
    size_t argvlen[3];
    int argc = 0;

    if (!r || !pass) return RP_REDIS_EARG;
    argv[argc] = "AUTH";
    argvlen[argc++] = 4;
    if (user) {
        argv[argc] = user;
        argvlen[argc++] = user_len;
    }
    argv[argc] = pass;
    argvlen[argc++] = pass_len;
    return command_ok(r, argc, argv, argvlen);
}

RP_REDIS_API int rp_redis_select(rp_redis *r, int db)
{
    char num[16];
    const char *argv[2] = { "SELECT", num };
    size_t argvlen[2] = { 6, 0 };
    int n;

    if (!r || db < 0) return RP_REDIS_EARG;
    n = snprintf(num, sizeof(num), "%d", db);
    if (n <= 0 || (size_t)n >= sizeof(num)) return RP_REDIS_EARG;
    argvlen[1] = (size_t)n;
    return command_ok(r, 2, argv, argvlen);
}

RP_REDIS_API int rp_redis_get(rp_redis *r, const char *key, size_t key_len,
                              size_t max_len, const char **val,
                              size_t *val_len)
{
    const char *argv[2] = { "GET", key };
    size_t argvlen[2] = { 3, key_len };
    redisReply *reply;
    int rc;

    if (!r || !key || !val || !val_len) return RP_REDIS_EARG;
    rp_redis_release(r);
    *val = NULL;
    *val_len = 0;
    rc = command(r, 2, argv, argvlen, &reply);
    if (rc != RP_REDIS_OK) return rc;

    switch (reply->type) {
    case REDIS_REPLY_STRING:
        if (reply->len > max_len) {
            char msg[96];
            *val_len = reply->len;
            snprintf(msg, sizeof(msg), "value of %zu bytes exceeds %zu",
                     reply->len, max_len);
            set_errs(r, msg);
            rc = RP_REDIS_ETOOBIG;
            break;
        }
        r->last = reply;
        *val = reply->str;
        *val_len = reply->len;
        return RP_REDIS_OK;
    case REDIS_REPLY_NIL:
        rc = RP_REDIS_NIL;
        break;
    case REDIS_REPLY_ERROR:
        set_err(r, reply->str, reply->len);
        rc = RP_REDIS_EREPLY;
        break;
    default:
        set_errs(r, "unexpected reply type");
        rc = RP_REDIS_ETYPE;
        break;
    }
    freeReplyObject(reply);
    return rc;
}
