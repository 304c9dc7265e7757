/* The reply handling we own in csrc/redis_sync.c (rp_redis_auth, _select,
 * _get, _release: reply types, lengths, max_len, error text, when the
 * connection is dropped) over hiredis's reader, against a "server" that
 * answers with the fuzzer's bytes.  The server is a unix socket in this
 * process: the input is written to the accepted end before any command is
 * sent, then that end is shut for writing, so hiredis reads exactly these
 * bytes and then EOF; nothing blocks.  (hiredis itself is Debian's build,
 * not instrumented: ASan/UBSan watch our code and every byte hiredis hands
 * it; coverage guides the fuzzer through our code only.)
 *
 * Byte 0: bit 0 AUTH first, bit 1 SELECT first, bits 2-3 max_len (0, 16,
 * 4096, 1 MiB), bit 7 a well-formed bulk reply built from the rest, whose
 * value GET must return exactly. */
#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz.h"
#include "redis_sync.h"

static int lfd = -1;
static char sock_path[108];

static void cleanup(void)
{
    if (sock_path[0]) unlink(sock_path);
}

static void listen_once(void)
{
    struct sockaddr_un a;
    if (lfd >= 0) return;
    snprintf(sock_path, sizeof(sock_path), "/tmp/rp-fuzz-redis-%d.sock",
             (int)getpid());
    unlink(sock_path);
    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, sock_path, strlen(sock_path) + 1);
    lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(lfd >= 0);
    CHECK(bind(lfd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CHECK(listen(lfd, 4) == 0);
    atexit(cleanup);
    signal(SIGPIPE, SIG_IGN);
}

static void write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        CHECK(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

static int known(int rc)
{
    return rc == RP_REDIS_OK || rc == RP_REDIS_NIL || rc == RP_REDIS_EIO ||
           rc == RP_REDIS_ETIMEOUT || rc == RP_REDIS_EREPLY ||
           rc == RP_REDIS_ETYPE || rc == RP_REDIS_ETOOBIG ||
           rc == RP_REDIS_ENOMEM || rc == RP_REDIS_ENOTCONN;
}

/* After any call: a known code, a bounded message, and the connection
 * state the header promises (closed after EIO/ETIMEOUT, open after a
 * reply-level error). */
static void check_call(rp_redis *r, int rc)
{
    CHECK(known(rc));
    const char *e = rp_redis_errstr(r);
    CHECK(e != NULL && memchr(e, '\0', 256) != NULL);
    if (rc == RP_REDIS_EIO || rc == RP_REDIS_ETIMEOUT)
        CHECK(!rp_redis_connected(r));
    if (rc == RP_REDIS_EREPLY || rc == RP_REDIS_ETYPE || rc == RP_REDIS_ETOOBIG)
        CHECK(rp_redis_connected(r));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t MAX[4] = { 0, 16, 4096, 1048576 };
    if (size < 1) return 0;
    listen_once();
    unsigned flags = data[0];
    size_t max_len = MAX[(flags >> 2) & 3];
    const unsigned char *body = data + 1;
    size_t n = size - 1;

    unsigned char *reply = NULL;
    size_t reply_len;
    if (flags & 0x80) {
        /* "$<n>\r\n<bytes>\r\n": GET must give back exactly the bytes */
        reply = malloc(n + 32);
        CHECK(reply != NULL);
        int h = snprintf((char *)reply, 32, "$%zu\r\n", n);
        if (n) memcpy(reply + h, body, n);
        memcpy(reply + h + n, "\r\n", 2);
        reply_len = (size_t)h + n + 2;
    } else {
        reply = dup_exact(body, n);
        reply_len = n;
    }

    rp_redis *r = rp_redis_new();
    CHECK(r != NULL);
    CHECK(rp_redis_connect(r, NULL, 0, sock_path, 1000) == RP_REDIS_OK);
    int s = accept(lfd, NULL, NULL);
    CHECK(s >= 0);
    write_all(s, reply, reply_len);
    CHECK(shutdown(s, SHUT_WR) == 0);
    CHECK(rp_redis_set_timeout(r, 1000) == RP_REDIS_OK);

    int rc;
    if (!(flags & 0x80)) {
        if (flags & 1) {
            rc = rp_redis_auth(r, (flags & 2) ? "user" : NULL, 4, "pw", 2);
            check_call(r, rc);
        }
        if ((flags & 2) && rp_redis_connected(r)) {
            rc = rp_redis_select(r, 3);
            check_call(r, rc);
        }
    }
    for (int i = 0; i < 2; i++) {
        const char *val = (const char *)1;
        size_t val_len = (size_t)-1;
        if (!rp_redis_connected(r)) {
            CHECK(rp_redis_get(r, "k", 1, max_len, &val, &val_len) ==
                  RP_REDIS_ENOTCONN);
            break;
        }
        rc = rp_redis_get(r, "sess:k", 6, max_len, &val, &val_len);
        check_call(r, rc);
        if (rc == RP_REDIS_OK) {
            CHECK(val != NULL && val_len <= max_len);
            /* every byte handed out is readable and came from the wire */
            CHECK(contains(reply, reply_len, (const unsigned char *)val, val_len));
            if ((flags & 0x80) && i == 0)
                CHECK(val_len == n && (n == 0 || memcmp(val, body, n) == 0));
            rp_redis_release(r);
        } else {
            CHECK(val == NULL);
            if (rc == RP_REDIS_ETOOBIG) CHECK(val_len > max_len);
            else CHECK(val_len == 0);
            if ((flags & 0x80) && i == 0)
                CHECK(rc == RP_REDIS_ETOOBIG && n > max_len);
        }
    }
    rp_redis_free(r);
    close(s);
    free(reply);
    return 0;
}
