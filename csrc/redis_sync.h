/*
 * librestypassport_redis: a small blocking Redis client for use OUTSIDE
 * nginx (plain LuaJIT: tools, tests, other hosts), over hiredis's
 * synchronous API.  Inside nginx the store speaks RESP over cosockets and
 * never loads this library.
 *
 * lua/resty/passport/store/redis.lua mirrors these declarations in its
 * ffi.cdef; keep the two in step.  Lua never sees a hiredis structure: the
 * wrapper hides redisContext and redisReply, so the same Lua code runs
 * against hiredis 0.14 and 1.x.
 *
 * One handle is one connection at most.  Calls return 0 (or RP_REDIS_NIL)
 * on success and a negative RP_REDIS_E* code on failure, with a message in
 * rp_redis_errstr().  After RP_REDIS_EIO or RP_REDIS_ETIMEOUT the
 * connection has been closed (the stream can no longer be trusted);
 * rp_redis_connect() opens a new one on the same handle.  RP_REDIS_EREPLY
 * (an -ERR reply such as WRONGTYPE), RP_REDIS_ETYPE and RP_REDIS_ETOOBIG
 * leave it open: hiredis read the whole reply, so the stream is in step.
 *
 * SIGPIPE: a write to a connection the server has closed raises SIGPIPE,
 * which kills a plain LuaJIT process.  Every call blocks SIGPIPE in the
 * calling thread while it runs and discards one it caused, so the process's
 * signal dispositions are left alone.
 */
#ifndef RESTY_PASSPORT_REDIS_SYNC_H
#define RESTY_PASSPORT_REDIS_SYNC_H

#include <stddef.h>

#define RP_REDIS_API __attribute__((visibility("default")))

enum {
    RP_REDIS_OK = 0,
    RP_REDIS_NIL = 1,        /* GET: the key does not exist */
    RP_REDIS_EIO = -1,       /* connect/read/write failed; closed */
    RP_REDIS_ETIMEOUT = -2,  /* connect or read timed out; closed */
    RP_REDIS_EREPLY = -3,    /* the server answered with an error */
    RP_REDIS_ETYPE = -4,     /* a reply of an unexpected type */
    RP_REDIS_ETOOBIG = -5,   /* the value is longer than max_len */
    RP_REDIS_ENOMEM = -6,    /* out of memory */
    RP_REDIS_EARG = -7,      /* bad argument */
    RP_REDIS_ENOTCONN = -8   /* no connection on this handle */
};

typedef struct rp_redis rp_redis;

/* A handle with no connection, or NULL when out of memory. */
RP_REDIS_API rp_redis *rp_redis_new(void);

/* Closes the connection, if any, and frees the handle. NULL is a no-op. */
RP_REDIS_API void rp_redis_free(rp_redis *r);

/* Connects over TCP to host:port, or to the unix socket path when path is
 * not NULL.  timeout_ms bounds the connect (> 0).  An open connection is
 * closed first. */
RP_REDIS_API int rp_redis_connect(rp_redis *r, const char *host, int port,
                                  const char *path, int timeout_ms);

/* Bounds every later read and write (> 0 ms). */
RP_REDIS_API int rp_redis_set_timeout(rp_redis *r, int timeout_ms);

RP_REDIS_API int rp_redis_connected(const rp_redis *r);
RP_REDIS_API void rp_redis_close(rp_redis *r);

/* AUTH password, or AUTH username password (Redis 6 ACL) when user is not
 * NULL.  Lengths are explicit; neither string needs a NUL. */
RP_REDIS_API int rp_redis_auth(rp_redis *r, const char *user, size_t user_len,
                               const char *pass, size_t pass_len);

RP_REDIS_API int rp_redis_select(rp_redis *r, int db);

/* GET key.  Returns RP_REDIS_OK with *val / *val_len pointing at the value
 * (binary safe, valid until the next call on r or rp_redis_release),
 * RP_REDIS_NIL when the key does not exist, or an error.  A value longer
 * than max_len gives RP_REDIS_ETOOBIG with *val_len set to its length. */
RP_REDIS_API int rp_redis_get(rp_redis *r, const char *key, size_t key_len,
                              size_t max_len, const char **val,
                              size_t *val_len);

/* Frees the value the last rp_redis_get returned. */
RP_REDIS_API void rp_redis_release(rp_redis *r);

/* The message of the last error on r ("" when none). */
RP_REDIS_API const char *rp_redis_errstr(const rp_redis *r);

#endif
