/*
 * loadgen: a WebSocket / socket.io load generator for bench-e2e,
 * bench-sockets and the fault specs (spec/integration/fault_*_spec.lua).
 *
 * One thread, one epoll loop, non-blocking sockets.  Every connection sends
 * an RFC 6455 upgrade request with a Cookie header (cookies read from a file,
 * one per line, used round-robin), checks the 101 and its
 * Sec-WebSocket-Accept, and then waits for the "welcome":
 *   plain WebSocket (default): the first text or binary message;
 *   socket.io (-s): the engine.io open packet "0{...}", then "40" is sent
 *     (namespace connect), the "40{...}" ack, then the first "42[...]" event.
 * The handshake latency of a connection is connect() start -> welcome
 * (in rate mode: its scheduled start -> welcome).
 *   socket.io over Engine.IO long-polling first (-u or -l): see below.
 * A rejection is an HTTP 401/403 answer to the upgrade, or a socket.io
 * CONNECT_ERROR packet "44{...}" (how io.use() middleware refuses); with -x
 * also a connection the server closes before any byte of its answer (how
 * engine.io's io.engine.use() middleware refuses a WebSocket upgrade: its
 * res.end() destroys the socket).
 *
 * Modes:
 *   -m connect  keep -c handshakes in flight for -d seconds (or -n in all);
 *               each connection closes (close frame, FIN) after its welcome.
 *               Reports authorized conn/s and latency percentiles.
 *   -m reject   the same loop with forged cookies: reports rejected/s.
 *   -m rate     an open loop: -R handshakes per second for -d seconds (or -n
 *               in all), connection i started at t_start + i / R whatever
 *               the others are doing.  Latency is measured from that
 *               scheduled time, not from the actual connect(), so a slow
 *               server (or a busy load generator) shows up in it instead of
 *               silently lowering the offered rate (no coordinated
 *               omission).  -c caps the connections in handshake at once
 *               (default 5000); a start held back by the cap or by the
 *               loop is "late" (> 1 ms behind its schedule: counted, and
 *               the worst lateness reported).  Reports p50/p90/p99/max from
 *               the schedule, svc_p50/svc_p99 from the actual connect(),
 *               late, failed (every error kind; a failed handshake is in
 *               no percentile, so read failed beside them) and the
 *               achieved rate.
 *               Authorized and rejected handshakes are told apart as in
 *               connect mode, so forged cookies work too.
 *   -m hold     open -N connections (at most -c in handshake at once),
 *               print {"event":"up",...} when all are up, then keep them
 *               open, answering pings, for -t seconds or until SIGTERM/SIGINT.
 *               SIGUSR1 (or -E with -W) fires an emit (again after each
 *               report, for several rounds): an HTTP GET of -E on
 *               -Q port; the answer's body (or -e) is how many messages to
 *               expect on the held connections; prints {"event":"emit",...}.
 *               SIGUSR2 fires the same kind of emit through a second
 *               trigger, an HTTP GET of -G on -g port (another process,
 *               e.g. bench-sockets' socket.io Redis emitter publisher),
 *               timed and reported the same way.
 *   -m script   the fault specs' driver: -f holds one "<path>\t<Cookie value>"
 *               line per connection (no tab: a path, no Cookie header); each
 *               of -r rounds runs every line once, -c at a time, and prints
 *               "<round> <index> <status> <seen>" per line, in line order:
 *                 status  the HTTP status; 0 = connect or I/O failure;
 *                         -1 = timed out
 *                 seen    the X-Seen-User response header, or with -a frame
 *                         and hframe the first message's payload; "-" when
 *                         absent, spaces and newlines as '_'
 *               -a says what a connection does once the response head is in:
 *                 close   reset at once (the default)
 *                 hold    keep an upgraded (101) socket until the round is
 *                         done, then reset them all at once; the next round
 *                         connects them all again: a reconnect storm
 *                 half    on a 101, send the first 16 bytes of a 100-byte
 *                         masked text frame, then reset
 *                 frame   on a 101, wait for the first message, then reset
 *                 hframe  frame, then hold
 *               Every socket is closed with a reset (SO_LINGER 0): no
 *               TIME_WAIT, however many rounds of thousands.
 *
 * Engine.IO long-polling (-u, -l; socket.io, so -s is implied): -P is then
 * the Engine.IO path and query without a transport (default
 * "/socket.io/?EIO=4"); loadgen adds "&transport=polling&t=<random>" (and
 * "&sid=<sid>").  A client's polling requests go one after another on one
 * HTTP/1.1 keep-alive connection, its cookie on every request:
 *   GET (handshake) -> 200 "0{"sid":...}"; POST "40" -> "ok"; GET -> the
 *   packets ("40{...}", often "42[...]" with it, joined by 0x1E); a ping
 *   "2" in a GET's answer is answered by a POST "3" before the next GET.
 *   -u  "upgrade from polling", socket.io-client's default: once "40{...}"
 *       is in, the polling connection closes and a WebSocket opens with
 *       "&transport=websocket&sid=<sid>": "2probe" -> "3probe", then "5"
 *       (no GET is pending, so no noop is waited for).  The welcome is the
 *       first "42[...]" (by either transport) once "5" is sent; in connect
 *       and rate modes the WebSocket then closes as without -u, in hold
 *       mode it is held (pings answered, emits counted).
 *   -l  polling only (transports: ["polling"]): the welcome is the first
 *       "42[...]"; connect and rate modes then POST "1" (close) and close
 *       the connection; hold mode keeps one GET pending per client, counts
 *       "42" packets for emits and answers pings by POST "3".
 *   A 401/403 to the handshake GET, or "44{...}" in a GET's answer, is a
 *   rejection.  An HTTP 400 whose body says "Session ID unknown" (to a
 *   polling request or to the upgrade) is counted as err_unknown_sid.  The
 *   done line adds "poll", "polls" (GETs answered), "pongs" (POST "3"s) and,
 *   per kind, what ended held clients (drop_<kind>).
 *
 * Failures (refused, reset, EOF, timeouts, protocol errors, unexpected HTTP
 * status) are counted per kind; no connection waits past -T ms, and the
 * whole run has a hard deadline, so it never hangs.  The final report is one
 * JSON line on stdout; CPU time is the process's own (getrusage).
 *
 * usage: loadgen -p PORT -f COOKIES [-m connect|reject|rate|hold|script] [-s] [-u | -l]
 *        [-R PER_SEC] [-P PATH] [-c CONC] [-d SEC] [-n COUNT] [-N HOLD] [-t SEC] [-T MS]
 *        [-o ORIGIN] [-E PATH] [-Q PORT] [-G PATH] [-g PORT] [-e COUNT] [-W SEC]
 *        [-b NADDR] [-H HOST] [-a close|hold|half|frame|hframe] [-r ROUNDS] [-x] [-v]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define RBUF 4096
#define MAX_EVENTS 256

enum mode { M_CONNECT, M_REJECT, M_HOLD, M_SCRIPT, M_RATE };

/* Script mode: what a connection does once the response head is in. */
enum action { A_CLOSE, A_HOLD, A_HALF, A_FRAME, A_HFRAME };

enum state {
    S_CONNECTING,   /* connect() in progress */
    S_HTTP,         /* request sent (maybe partly), reading the response head */
    S_WS,           /* upgraded, waiting for the welcome */
    S_HELD,         /* welcome seen, kept open (hold mode) */
    S_CLOSING       /* close frame sent, draining until EOF */
};

enum sio_state { SIO_OPEN, SIO_ACK, SIO_EVENT };

/* -u / -l: the polling request in flight on a client's HTTP connection. */
enum poll_step {
    P_OPEN,         /* the handshake GET */
    P_CONNECT,      /* POST "40" */
    P_GET,          /* a GET for packets */
    P_PONG,         /* POST "3" */
    P_CLOSE         /* POST "1" (-l, connect and rate modes) */
};

/* Engine.IO long-polling: none, -u (then the upgrade), -l (polling only). */
enum poll_mode { POLL_NONE, POLL_UPGRADE, POLL_ONLY };

/* E_SID (an HTTP 400 "Session ID unknown") is reported with -u / -l only. */
enum err_kind { E_REFUSED, E_RESET, E_TIMEOUT, E_EOF, E_PROTO, E_HTTP, E_CONNECT, E_SID, E_NKINDS };
static const char *const err_names[E_NKINDS] = {
    "refused", "reset", "timeout", "eof", "protocol", "http_status", "connect", "unknown_sid"
};

struct conn {
    struct conn *prev, *next;   /* the list of live connections */
    int fd;
    enum state state;
    enum sio_state sio;
    double t0;                  /* connect() start (rate mode: its scheduled start), seconds */
    double t_act;               /* the actual connect() start */
    double deadline;
    char *wbuf;                 /* pending output */
    size_t wlen, woff, wcap;
    size_t rlen;                /* bytes in rbuf */
    uint64_t skip;              /* payload bytes still to discard */
    int skip_counts;            /* the skipped frame is a data message */
    size_t line;                /* script mode: the line it runs */
    const char *cookie;         /* its Cookie value (-u / -l: every request's) */
    long src;                   /* -b: its source address index */
    /* -u / -l */
    enum poll_step step;
    unsigned poll : 1;          /* fd is the polling HTTP connection */
    unsigned connecting : 1;    /* a new fd's connect() is in progress */
    unsigned upg : 1;           /* fd is the WebSocket upgrading the session */
    unsigned upgraded : 1;      /* "5" sent */
    unsigned got_event : 1;     /* the first "42" is in */
    unsigned pong_due : 1;      /* a ping came by polling: POST "3" first */
    char sid[64];
    char rbuf[RBUF];
};

/* Script mode: one per line, printed at the end of each round. */
#define SEEN 256
struct result {
    int status;
    char seen[SEEN];
};

/* options */
static enum mode mode = M_CONNECT;
static const char *host = "127.0.0.1";
static int port, emit_port, emit2_port;
static const char *path = NULL;
static const char *origin = NULL;
static const char *emit_path = NULL;
static const char *emit2_path = NULL; /* the SIGUSR2 trigger (-G, -g) */
static int sio;
static enum poll_mode poll_mode = POLL_NONE;
static int concurrency = 50;
static int conc_given;
static double rate;             /* rate mode: handshakes started per second */
static double duration = 0;
static long count_limit = 0;
static long hold_n = 0;
static double hold_time = 0;
static double timeout_s = 10.0;
static long emit_expected = -1;
static double emit_wait = -1;
static int naddr = 1;
static int close_rejects;
static enum action action = A_CLOSE;
static int rounds = 1;

/* cookies */
static char **cookies;
static size_t ncookies, next_cookie;

/* script mode: the cookie file's lines are the script */
static struct result *results;
static size_t script_next;

/* stats */
static long started, ok, rejected, rej_http, rej_sio, rej_close, errors, dropped, held;
static long errs[E_NKINDS];
static long drops[E_NKINDS];    /* -u / -l: what ended held clients */
static long polls, pongs;       /* -u / -l: GETs answered, POST "3"s */
static uint32_t *lat_us, *rej_us, *svc_us;
static size_t nlat, caplat, nrej, caprej, nsvc, capsvc;
/* rate mode: starts more than LATE_S behind their schedule */
#define LATE_S 0.001
static long late, max_in_flight;
static double late_max;
static double t_start, t_last_done;
static int in_handshake;  /* connections not yet welcomed/rejected/failed */
static long live;

/* emit */
static long emit_seen;
static long emit_target = -1;
static double emit_t0, emit_first, emit_last;
static int emit_state; /* 0 idle, 1 waiting for messages, 2 done */

static volatile sig_atomic_t got_stop, got_usr1, got_usr2;

static struct conn *head;
static int ep;
static char ws_key[25];
static char ws_accept[29];
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static int verbose;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t xorshift(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void die(const char *msg)
{
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(2);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q)
        die("out of memory");
    return q;
}

static void push_lat(uint32_t **arr, size_t *n, size_t *cap, double seconds)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 4096;
        *arr = xrealloc(*arr, *cap * sizeof **arr);
    }
    double us = seconds * 1e6;
    (*arr)[(*n)++] = us > 4e9 ? UINT32_MAX : (uint32_t)us;
}

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64(const unsigned char *in, size_t n, char *out)
{
    size_t i, o = 0;
    for (i = 0; i + 2 < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64chars[v >> 18 & 63];
        out[o++] = b64chars[v >> 12 & 63];
        out[o++] = b64chars[v >> 6 & 63];
        out[o++] = b64chars[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = b64chars[v >> 18 & 63];
        out[o++] = b64chars[v >> 12 & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = b64chars[v >> 18 & 63];
        out[o++] = b64chars[v >> 12 & 63];
        out[o++] = b64chars[v >> 6 & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
}

/* One Sec-WebSocket-Key for the run (servers treat it as opaque) and the
 * Sec-WebSocket-Accept every 101 must carry for it. */
static void make_key(void)
{
    unsigned char raw[16], digest[SHA_DIGEST_LENGTH];
    char buf[64];
    for (int i = 0; i < 16; i++)
        raw[i] = (unsigned char)xorshift();
    b64(raw, 16, ws_key);
    snprintf(buf, sizeof buf, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", ws_key);
    SHA1((const unsigned char *)buf, strlen(buf), digest);
    b64(digest, SHA_DIGEST_LENGTH, ws_accept);
}

static void read_cookies(const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        perror(file);
        exit(2);
    }
    char *line = NULL;
    size_t cap = 0, capc = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0)
            continue;
        if (ncookies == capc) {
            capc = capc ? capc * 2 : 1024;
            cookies = xrealloc(cookies, capc * sizeof *cookies);
        }
        cookies[ncookies++] = strdup(line);
    }
    free(line);
    fclose(f);
    if (ncookies == 0)
        die("no cookies in the cookie file");
}

static void raise_nofile(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)need;
    if (rl.rlim_cur >= want)
        return;
    if (rl.rlim_max < want) {
        struct rlimit up = { want, want };
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)   /* root: raise the hard limit */
            return;
        want = rl.rlim_max;
    }
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || (long)want < need)
        fprintf(stderr, "loadgen: warning: RLIMIT_NOFILE %lu < %ld needed\n",
                (unsigned long)want, need);
}

/* ---- output buffer ---- */

static void wappend(struct conn *c, const void *p, size_t n)
{
    if (c->wlen + n > c->wcap) {
        size_t cap = c->wcap ? c->wcap : 256;
        while (cap < c->wlen + n)
            cap *= 2;
        c->wbuf = xrealloc(c->wbuf, cap);
        c->wcap = cap;
    }
    memcpy(c->wbuf + c->wlen, p, n);
    c->wlen += n;
}

/* A masked client frame (payloads here are short). */
static void wframe(struct conn *c, unsigned opcode, const void *payload, size_t n)
{
    unsigned char h[14];
    size_t hl = 2;
    h[0] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        h[1] = (unsigned char)(0x80 | n);
    } else {
        h[1] = 0x80 | 126;
        h[2] = (unsigned char)(n >> 8);
        h[3] = (unsigned char)n;
        hl = 4;
    }
    uint32_t m = (uint32_t)xorshift();
    unsigned char *mask = h + hl;
    memcpy(mask, &m, 4);
    hl += 4;
    wappend(c, h, hl);
    const unsigned char *p = payload;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)(p[i] ^ mask[i & 3]);
        wappend(c, &b, 1);
    }
}

/* ---- connection life ---- */

static void unlink_conn(struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        head = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

static void destroy(struct conn *c)
{
    unlink_conn(c);
    if (mode == M_SCRIPT) {
        struct linger l = { 1, 0 };
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    if (c->fd >= 0)
        close(c->fd);
    free(c->wbuf);
    free(c);
    live--;
}

static int in_phase(const struct conn *c)
{
    return c->state == S_CONNECTING || c->state == S_HTTP || c->state == S_WS;
}

static void fail(struct conn *c, enum err_kind k)
{
    if (in_phase(c)) {
        if (mode == M_SCRIPT) /* an upgraded socket that fails keeps its 101 */
            results[c->line].status = k == E_TIMEOUT ? -1 : c->state == S_WS ? 101 : 0;
        in_handshake--;
        errors++;
        errs[k]++;
        if (verbose)
            fprintf(stderr, "loadgen: %s\n", err_names[k]);
    } else if (c->state == S_HELD) {
        held--;
        dropped++;
        drops[k]++;
        if (verbose)
            fprintf(stderr, "loadgen: held connection lost: %s\n", err_names[k]);
    }
    destroy(c);
}

static int flush_out(struct conn *c)
{
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return 0;
            fail(c, errno == ECONNREFUSED ? E_REFUSED : E_RESET);
            return -1;
        }
        c->woff += (size_t)n;
    }
    c->wlen = c->woff = 0;
    return 0;
}

/* Welcome (or rejection) reached: the handshake is over. */
static void finish_handshake(struct conn *c, int accepted, int via_sio)
{
    double t = now();
    in_handshake--;
    t_last_done = t;
    if (accepted) {
        ok++;
        push_lat(&lat_us, &nlat, &caplat, t - c->t0);
        if (mode == M_RATE)
            push_lat(&svc_us, &nsvc, &capsvc, t - c->t_act);
    } else {
        rejected++;
        if (via_sio == 1)
            rej_sio++;
        else if (via_sio == 2)
            rej_close++;
        else
            rej_http++;
        push_lat(&rej_us, &nrej, &caprej, t - c->t0);
    }
}

/* Close frame + FIN, then drain until the server's EOF (bounded). */
static int start_close(struct conn *c)
{
    static const unsigned char code[2] = { 0x03, 0xE8 }; /* 1000 */
    c->state = S_CLOSING;
    c->deadline = now() + 2.0;
    wframe(c, 0x8, code, 2);
    if (flush_out(c) < 0)
        return -1;
    shutdown(c->fd, SHUT_WR);
    return 0;
}

static void wstr(struct conn *c, const char *s)
{
    wappend(c, s, strlen(s));
}

/* The upgrade request: the next cookie of the file on -P's path, or in
 * script mode the path and cookie of line c->line. */
static void poll_query(char *out, size_t size, const struct conn *c, const char *transport);

static void write_request(struct conn *c)
{
    const char *p = path ? path : (sio ? "/socket.io/?EIO=4&transport=websocket" : "/ws");
    const char *cookie;
    size_t plen = strlen(p);
    char hosthdr[64], upath[512];

    if (mode == M_SCRIPT) {
        const char *tab = strchr(cookies[c->line], '\t');
        p = cookies[c->line];
        plen = tab ? (size_t)(tab - p) : strlen(p);
        cookie = tab ? tab + 1 : "";
    } else {
        if (!c->cookie)
            c->cookie = cookies[next_cookie++ % ncookies];
        cookie = c->cookie;
    }
    if (c->upg) {
        /* -u: the session's WebSocket */
        poll_query(upath, sizeof upath, c, "websocket");
        p = upath;
        plen = strlen(p);
    }
    snprintf(hosthdr, sizeof hosthdr, "%s:%d", host, port);
    wstr(c, "GET ");
    wappend(c, p, plen);
    wstr(c, " HTTP/1.1\r\nHost: ");
    wstr(c, hosthdr);
    wstr(c, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
    wstr(c, ws_key);
    wstr(c, "\r\nSec-WebSocket-Version: 13\r\n");
    if (*cookie) {
        wstr(c, "Cookie: ");
        wstr(c, cookie);
        wstr(c, "\r\n");
    }
    if (origin) {
        wstr(c, "Origin: ");
        wstr(c, origin);
        wstr(c, "\r\n");
    }
    wstr(c, "\r\n");
}

/* A non-blocking TCP socket; with -b, bound to source address src % naddr. */
static int new_socket(long src)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (naddr > 1) {
        /* spread over 127.0.0.1..n: more 4-tuples for many short connections */
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(0x7F000001u + (uint32_t)(src % naddr));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        bind(fd, (struct sockaddr *)&sa, sizeof sa);
    }
    return fd;
}

/* c->fd into the loop, connect() started: 0, or connect()'s errno. */
static int connect_fd(struct conn *c)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &sa.sin_addr);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                              .data.ptr = c };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl");
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS)
        return errno;
    return 0;
}

static void write_poll(struct conn *c, enum poll_step step, const char *body);

/* sched: the scheduled start (rate mode), or 0 for now. */
static int start_conn(double sched)
{
    size_t line = 0;

    if (mode == M_SCRIPT) {
        line = script_next++;
        results[line].status = 0;
        strcpy(results[line].seen, "-");
    }
    int fd = new_socket(started);
    if (fd < 0) {
        errors++;
        errs[E_CONNECT]++;
        return -1;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        die("out of memory");
    c->fd = fd;
    c->src = started;
    c->line = line;
    c->t_act = now();
    c->t0 = sched > 0 ? sched : c->t_act;
    c->deadline = c->t_act + timeout_s;
    c->state = S_CONNECTING;
    c->next = head;
    if (head)
        head->prev = c;
    head = c;
    live++;
    started++;
    in_handshake++;
    if (in_handshake > max_in_flight)
        max_in_flight = in_handshake;

    if (poll_mode) {
        c->poll = 1;
        write_poll(c, P_OPEN, NULL);
    } else {
        write_request(c);
    }

    int err = connect_fd(c);
    if (err) {
        fail(c, err == ECONNREFUSED ? E_REFUSED : E_CONNECT);
        return -1;
    }
    return 0;
}

/* ---- Engine.IO long-polling (-u, -l) ---- */

static const char *const step_names[] = { "handshake GET", "POST 40", "GET", "POST 3", "POST 1" };

/* The Engine.IO path of c's requests: "<-P>&transport=<transport>", a
 * polling request's "&t=<random>" (engine.io-client's cache buster), and
 * "&sid=<sid>" once known. */
static void poll_query(char *out, size_t size, const struct conn *c, const char *transport)
{
    static const char tchars[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *base = path ? path : "/socket.io/?EIO=4";
    size_t bl = strlen(base);
    const char *sep = !strchr(base, '?') ? "?"
                      : (base[bl - 1] == '?' || base[bl - 1] == '&') ? "" : "&";
    char t[12] = "";
    if (strcmp(transport, "polling") == 0) {
        memcpy(t, "&t=", 3);
        uint64_t r = xorshift();
        for (int i = 0; i < 8; i++)
            t[3 + i] = tchars[(r >> (6 * i)) & 63];
        t[11] = '\0';
    }
    snprintf(out, size, "%s%stransport=%s%s%s%s", base, sep, transport, t,
             c->sid[0] ? "&sid=" : "", c->sid);
}

/* A polling request: GET, or POST of body. */
static void write_poll(struct conn *c, enum poll_step step, const char *body)
{
    char q[512], line[128];
    c->step = step;
    if (!c->cookie)
        c->cookie = cookies[next_cookie++ % ncookies];
    poll_query(q, sizeof q, c, "polling");
    wstr(c, body ? "POST " : "GET ");
    wstr(c, q);
    snprintf(line, sizeof line, " HTTP/1.1\r\nHost: %s:%d\r\n", host, port);
    wstr(c, line);
    if (*c->cookie) {
        wstr(c, "Cookie: ");
        wstr(c, c->cookie);
        wstr(c, "\r\n");
    }
    if (origin) {
        wstr(c, "Origin: ");
        wstr(c, origin);
        wstr(c, "\r\n");
    }
    if (body) {
        snprintf(line, sizeof line, "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: %zu\r\n",
                 strlen(body));
        wstr(c, line);
    }
    wstr(c, "\r\n");
    if (body)
        wstr(c, body);
}

/* c goes on over a new connection (what was pending on the old one is
 * dropped): 0, or -1 if c was freed. */
static int new_connection(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->rlen = c->wlen = c->woff = 0;
    c->skip = 0;
    int fd = new_socket(c->src);
    if (fd < 0) {
        fail(c, E_CONNECT);
        return -1;
    }
    c->fd = fd;
    c->connecting = 1;
    int err = connect_fd(c);
    if (err) {
        fail(c, err == ECONNREFUSED ? E_REFUSED : E_CONNECT);
        return -1;
    }
    return 0;
}

/* The next polling request, on a new connection if the server closes this
 * one: -1 if c was freed, 1 if its fd changed, else 0. */
static int poll_request(struct conn *c, enum poll_step step, const char *body, int reconnect)
{
    if (reconnect) {
        if (new_connection(c) < 0)
            return -1;
        write_poll(c, step, body);
        return 1;
    }
    write_poll(c, step, body);
    return flush_out(c);
}

/* -u: the polling connection closes, the session's WebSocket opens: 1, or
 * -1 if c was freed. */
static int start_upgrade(struct conn *c)
{
    c->poll = 0;
    c->upg = 1;
    if (new_connection(c) < 0)
        return -1;
    c->state = S_CONNECTING;
    write_request(c);
    return 1;
}

/* One packet of a GET's answer: -1 if c was freed. */
static int poll_packet(struct conn *c, const char *p, size_t n)
{
    if (n == 0)
        return 0;
    switch (p[0]) {
    case '2':                                   /* ping */
        c->pong_due = 1;
        return 0;
    case '1':                                   /* close */
        fail(c, E_EOF);
        return -1;
    case '4':
        if (n < 2)
            return 0;
        if (p[1] == '0') {
            if (c->sio == SIO_ACK)
                c->sio = SIO_EVENT;
        } else if (p[1] == '4') {               /* CONNECT_ERROR */
            if (!in_phase(c)) {
                fail(c, E_PROTO);
                return -1;
            }
            finish_handshake(c, 0, 1);
            destroy(c);
            return -1;
        } else if (p[1] == '2') {
            if (c->state != S_HELD) {
                c->got_event = 1;
            } else if (emit_state == 1) {
                double t = now();
                if (emit_seen++ == 0)
                    emit_first = t;
                emit_last = t;
            }
        }
        return 0;
    default:                                    /* noop, message, ... */
        return 0;
    }
}

/* What follows an answer: a pong, the upgrade, the welcome, or the next
 * GET.  -1 if c was freed, 1 if its fd changed, else 0. */
static int poll_next(struct conn *c, int reconnect)
{
    if (c->pong_due) {
        c->pong_due = 0;
        pongs++;
        return poll_request(c, P_PONG, "3", reconnect);
    }
    if (in_phase(c)) {
        if (poll_mode == POLL_UPGRADE && c->sio == SIO_EVENT)
            return start_upgrade(c);
        if (poll_mode == POLL_ONLY && c->got_event) {
            finish_handshake(c, 1, 0);
            if (mode == M_HOLD) {
                c->state = S_HELD;
                held++;
            } else {
                /* socket.io-client's close over polling: POST "1" */
                c->state = S_CLOSING;
                c->deadline = now() + 2.0;
                return poll_request(c, P_CLOSE, "1", reconnect);
            }
        }
    }
    return poll_request(c, P_GET, NULL, reconnect);
}

/* A chunked body (n bytes at p) into out: the bytes it took, 0 if it is
 * not all in, -1 if malformed. */
static long dechunk(const char *p, size_t n, char *out, size_t cap, size_t *outlen)
{
    size_t i = 0, o = 0;
    for (;;) {
        const char *eol = memmem(p + i, n - i, "\r\n", 2);
        if (!eol)
            return 0;
        char *endp;
        unsigned long sz = strtoul(p + i, &endp, 16);
        if (endp == p + i)
            return -1;
        i = (size_t)(eol - p) + 2;
        if (sz == 0) {
            if (n - i < 2)
                return 0;
            if (memcmp(p + i, "\r\n", 2) != 0)
                return -1;
            *outlen = o;
            return (long)(i + 2);
        }
        if (n - i < sz + 2)
            return 0;
        if (o + sz > cap)
            return -1;
        memcpy(out + o, p + i, sz);
        o += sz;
        i += sz + 2;
    }
}

/* A polling answer in rbuf: -1 if c was freed, 1 if its fd changed, else 0. */
static int on_poll(struct conn *c)
{
    static char body[RBUF];
    char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    if (!end) {
        if (c->rlen == RBUF) {
            fail(c, E_PROTO);
            return -1;
        }
        return 0;
    }
    size_t hlen = (size_t)(end - c->rbuf) + 4, blen = 0, used;
    if (c->rlen < 12 || memcmp(c->rbuf, "HTTP/1.", 7) != 0) {
        fail(c, E_PROTO);
        return -1;
    }
    int status = atoi(c->rbuf + 9);
    *end = '\0';
    const char *cl = strcasestr(c->rbuf, "\r\ncontent-length:");
    int chunked = strcasestr(c->rbuf, "\r\ntransfer-encoding: chunked") != NULL;
    int closes = strcasestr(c->rbuf, "\r\nconnection: close") != NULL || c->rbuf[7] == '0';
    long clen = cl ? atol(cl + 17) : -1;
    *end = '\r';
    if (cl) {
        if (clen < 0 || hlen + (size_t)clen > RBUF) {
            fail(c, E_PROTO);
            return -1;
        }
        if (c->rlen < hlen + (size_t)clen)
            return 0;
        blen = (size_t)clen;
        memcpy(body, c->rbuf + hlen, blen);
        used = hlen + blen;
    } else if (chunked) {
        long r = dechunk(c->rbuf + hlen, c->rlen - hlen, body, sizeof body, &blen);
        if (r < 0 || (r == 0 && c->rlen == RBUF)) {
            fail(c, E_PROTO);
            return -1;
        }
        if (r == 0)
            return 0;
        used = hlen + (size_t)r;
    } else if (status == 200) {
        fail(c, E_PROTO);                       /* an answer with no length */
        return -1;
    } else {
        blen = c->rlen - hlen;
        memcpy(body, c->rbuf + hlen, blen);
        used = c->rlen;
        closes = 1;
    }
    memmove(c->rbuf, c->rbuf + used, c->rlen - used);
    c->rlen -= used;

    if (status != 200) {
        if ((status == 401 || status == 403) && c->step == P_OPEN) {
            finish_handshake(c, 0, 0);
            destroy(c);
            return -1;
        }
        if (verbose)
            fprintf(stderr, "loadgen: HTTP %d to %s: %.*s\n", status, step_names[c->step],
                    (int)(blen > 200 ? 200 : blen), body);
        fail(c, status == 400 && memmem(body, blen, "Session ID unknown", 18) ? E_SID : E_HTTP);
        return -1;
    }
    switch (c->step) {
    case P_OPEN: {
        const char *s = blen > 0 && body[0] == '0' ? memmem(body, blen, "\"sid\":\"", 7) : NULL;
        const char *e = s ? memchr(s + 7, '"', blen - (size_t)(s + 7 - body)) : NULL;
        if (!e || e - (s + 7) < 1 || (size_t)(e - (s + 7)) >= sizeof c->sid) {
            fail(c, E_PROTO);
            return -1;
        }
        memcpy(c->sid, s + 7, (size_t)(e - (s + 7)));
        c->sid[e - (s + 7)] = '\0';
        c->sio = SIO_ACK;
        return poll_request(c, P_CONNECT, "40", closes);
    }
    case P_CONNECT:
    case P_PONG:
        if (blen != 2 || memcmp(body, "ok", 2) != 0) {
            fail(c, E_PROTO);
            return -1;
        }
        return poll_next(c, closes);
    case P_CLOSE:
        destroy(c);
        return -1;
    case P_GET:
        polls++;
        for (size_t i = 0;;) {
            const char *sep = memchr(body + i, 0x1E, blen - i);
            size_t len = sep ? (size_t)(sep - (body + i)) : blen - i;
            if (poll_packet(c, body + i, len) < 0)
                return -1;
            if (!sep)
                break;
            i += len + 1;
        }
        return poll_next(c, closes);
    }
    return 0;
}

/* ---- script mode ---- */

static int on_frames(struct conn *c);

/* What a line saw: n bytes of p, spaces and newlines as '_', "-" if none. */
static void set_seen(struct result *r, const char *p, size_t n)
{
    if (n >= SEEN)
        n = SEEN - 1;
    for (size_t i = 0; i < n; i++)
        r->seen[i] = (p[i] == ' ' || p[i] == '\n' || p[i] == '\r') ? '_' : p[i];
    r->seen[n] = '\0';
    if (n == 0)
        strcpy(r->seen, "-");
}

/* The X-Seen-User header of the response head [start, end). */
static void seen_header(struct result *r, const char *start, const char *end)
{
    for (const char *p = start; p < end;) {
        const char *eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
        if (!eol)
            break;
        if ((size_t)(eol - p) > 12 && strncasecmp(p, "x-seen-user:", 12) == 0) {
            const char *v = p + 12;
            while (*v == ' ')
                v++;
            set_seen(r, v, (size_t)(eol - v));
        }
        p = eol + 2;
    }
}

/* A 101 in, -a close, hold or half: returns -1 if c was freed. */
static int script_upgraded(struct conn *c)
{
    finish_handshake(c, 1, 0);
    if (action == A_HOLD) {
        c->state = S_HELD;
        held++;
        return on_frames(c);
    }
    if (action == A_HALF) {
        /* the first 16 bytes of a 100-byte masked text frame */
        unsigned char f[16] = { 0x81, 0x80 | 100, 1, 2, 3, 4 };
        memset(f + 6, 'x', 10);
        (void)send(c->fd, f, sizeof f, MSG_NOSIGNAL);
    }
    destroy(c);
    return -1;
}

/* The round is over: every socket still open is reset at once (a
 * reconnect storm's drop), and each line's result printed. */
static void end_round(int round)
{
    while (head)
        destroy(head);
    held = 0;
    for (size_t i = 0; i < ncookies; i++)
        printf("%d %zu %d %s\n", round, i, results[i].status, results[i].seen);
    fflush(stdout);
}

/* A data message on an upgraded connection: returns -1 if c was freed. */
static int on_message(struct conn *c, const char *p, size_t n)
{
    if (c->state == S_HELD || c->state == S_CLOSING) {
        if (sio && n == 1 && p[0] == '2') {          /* engine.io ping */
            wframe(c, 0x1, "3", 1);
            return flush_out(c);
        }
        if (c->state == S_HELD && emit_state == 1 && (!sio || (n >= 2 && p[0] == '4' && p[1] == '2'))) {
            double t = now();
            if (emit_seen++ == 0)
                emit_first = t;
            emit_last = t;
        }
        return 0;
    }
    /* S_WS: the handshake's messages */
    if (!sio) {
        if (mode == M_SCRIPT)
            set_seen(&results[c->line], p, n);
        finish_handshake(c, 1, 0);
        goto welcomed;
    }
    if (n == 1 && p[0] == '2') {
        wframe(c, 0x1, "3", 1);
        return flush_out(c);
    }
    if (c->upg) {
        /* -u: the probe, then "5"; the welcome is the first event once
         * upgraded (it often came by polling already) */
        if (!c->upgraded && n == 6 && memcmp(p, "3probe", 6) == 0) {
            c->upgraded = 1;
            wframe(c, 0x1, "5", 1);
            if (flush_out(c) < 0)
                return -1;
            if (!c->got_event)
                return 0;
            finish_handshake(c, 1, 0);
            goto welcomed;
        }
        if (n >= 2 && p[0] == '4' && p[1] == '2') {
            c->got_event = 1;
            if (!c->upgraded)
                return 0;
            finish_handshake(c, 1, 0);
            goto welcomed;
        }
        if (n >= 2 && p[0] == '4' && p[1] == '4') {
            finish_handshake(c, 0, 1);
            return start_close(c);
        }
        return 0; /* a noop, ...: ignore */
    }
    switch (c->sio) {
    case SIO_OPEN:
        if (n < 1 || p[0] != '0') {
            fail(c, E_PROTO);
            return -1;
        }
        c->sio = SIO_ACK;
        wframe(c, 0x1, "40", 2);
        return flush_out(c);
    case SIO_ACK:
        if (n >= 2 && p[0] == '4' && p[1] == '0') {
            c->sio = SIO_EVENT;
            return 0;
        }
        if (n >= 2 && p[0] == '4' && p[1] == '4') {   /* CONNECT_ERROR */
            finish_handshake(c, 0, 1);
            if (start_close(c) < 0)
                return -1;
            return 0;
        }
        fail(c, E_PROTO);
        return -1;
    case SIO_EVENT:
        if (n >= 2 && p[0] == '4' && p[1] == '2') {
            finish_handshake(c, 1, 0);
            goto welcomed;
        }
        if (n >= 2 && p[0] == '4' && p[1] == '4') {
            finish_handshake(c, 0, 1);
            return start_close(c);
        }
        return 0; /* other packets: ignore */
    }
    return 0;
welcomed:
    if (mode == M_HOLD || (mode == M_SCRIPT && action == A_HFRAME)) {
        c->state = S_HELD;
        held++;
        return 0;
    }
    if (mode == M_SCRIPT) {
        destroy(c);
        return -1;
    }
    return start_close(c);
}

/* Frames in rbuf (server frames: unmasked).  Returns -1 if c was freed. */
static int on_frames(struct conn *c)
{
    size_t off = 0;
    for (;;) {
        if (c->skip) {
            size_t take = c->rlen - off;
            if (take > c->skip)
                take = (size_t)c->skip;
            off += take;
            c->skip -= take;
            if (c->skip)
                break;
            if (c->skip_counts && on_message(c, "", 0) < 0)
                return -1;
            continue;
        }
        size_t avail = c->rlen - off;
        const unsigned char *h = (const unsigned char *)c->rbuf + off;
        if (avail < 2)
            break;
        unsigned opcode = h[0] & 0x0F;
        int masked = h[1] & 0x80;
        uint64_t len = h[1] & 0x7F;
        size_t hl = 2;
        if (len == 126) {
            if (avail < 4)
                break;
            len = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (len == 127) {
            if (avail < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | h[2 + i];
            hl = 10;
        }
        if (masked)
            hl += 4;
        if (avail < hl)
            break;
        if (len > RBUF - hl) {
            /* too big to keep: discard it, count it as a message */
            off += hl;
            c->skip = len;
            c->skip_counts = opcode == 1 || opcode == 2;
            continue;
        }
        if (avail < hl + len)
            break;
        char *payload = c->rbuf + off + hl;
        if (masked) {
            const unsigned char *m = h + hl - 4;
            for (uint64_t i = 0; i < len; i++)
                payload[i] = (char)(payload[i] ^ m[i & 3]);
        }
        off += hl + (size_t)len;
        switch (opcode) {
        case 0x1: case 0x2:
            if (on_message(c, payload, (size_t)len) < 0)
                return -1;
            break;
        case 0x9:                                   /* ping -> pong */
            wframe(c, 0xA, payload, (size_t)len);
            if (flush_out(c) < 0)
                return -1;
            break;
        case 0x8:                                   /* close */
            if (c->state == S_CLOSING)
                break;
            if (c->state == S_WS) {
                fail(c, E_EOF);
                return -1;
            }
            if (c->state == S_HELD) {
                held--;
                dropped++;
            }
            c->state = S_CLOSING;   /* reply, then wait for EOF */
            c->deadline = now() + 2.0;
            wframe(c, 0x8, payload, len >= 2 ? 2 : 0);
            if (flush_out(c) < 0)
                return -1;
            break;
        default:                                    /* pong, continuation */
            break;
        }
    }
    if (off > 0) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
    return 0;
}

/* The response head in rbuf: returns -1 if c was freed. */
static int on_http(struct conn *c)
{
    char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    if (!end) {
        if (c->rlen == RBUF) {
            fail(c, E_PROTO);
            return -1;
        }
        return 0;
    }
    size_t hlen = (size_t)(end - c->rbuf) + 4;
    int status = 0;
    if (c->rlen < 12 || memcmp(c->rbuf, "HTTP/1.", 7) != 0) {
        fail(c, E_PROTO);
        return -1;
    }
    status = atoi(c->rbuf + 9);
    if (mode == M_SCRIPT) {
        results[c->line].status = status;
        seen_header(&results[c->line], c->rbuf, end);
        if (status != 101) {
            finish_handshake(c, 0, 0);
            destroy(c);
            return -1;
        }
    }
    if (status == 401 || status == 403) {
        finish_handshake(c, 0, 0);
        destroy(c);
        return -1;
    }
    if (status != 101) {
        if (verbose)
            fprintf(stderr, "loadgen: HTTP %d\n", status);
        fail(c, c->upg && status == 400 && memmem(end, c->rlen - hlen + 4, "Session ID unknown", 18)
                ? E_SID : E_HTTP);
        return -1;
    }
    /* the accept key must match ours */
    *end = '\0';
    const char *a = strcasestr(c->rbuf, "\r\nSec-WebSocket-Accept:");
    if (!a) {
        fail(c, E_PROTO);
        return -1;
    }
    a += 23;
    while (*a == ' ' || *a == '\t')
        a++;
    if (strncmp(a, ws_accept, 28) != 0) {
        fail(c, E_PROTO);
        return -1;
    }
    memmove(c->rbuf, c->rbuf + hlen, c->rlen - hlen);
    c->rlen -= hlen;
    if (mode == M_SCRIPT && action != A_FRAME && action != A_HFRAME)
        return script_upgraded(c);
    c->state = S_WS;
    if (c->upg) {
        wframe(c, 0x1, "2probe", 6);
        if (flush_out(c) < 0)
            return -1;
    } else {
        c->sio = SIO_OPEN;
    }
    return on_frames(c);
}

static void on_event(struct conn *c, uint32_t events)
{
    if (c->state == S_CONNECTING || c->connecting) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            fail(c, err == ECONNREFUSED ? E_REFUSED : err == ETIMEDOUT ? E_TIMEOUT : E_CONNECT);
            return;
        }
        c->connecting = 0;
        if (c->state == S_CONNECTING)
            c->state = S_HTTP;
    }
    if (c->wlen && flush_out(c) < 0)
        return;
    if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        return;
    for (;;) {
        if (c->rlen == RBUF && c->state != S_HTTP && !c->poll) {
            /* a full buffer with no complete frame cannot happen (big frames
             * are skipped), but never spin */
            fail(c, E_PROTO);
            return;
        }
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, RBUF - c->rlen, 0);
        if (n > 0) {
            c->rlen += (size_t)n;
            int r = c->poll ? on_poll(c) : c->state == S_HTTP ? on_http(c) : on_frames(c);
            if (r != 0)     /* c freed, or its fd replaced (-u / -l) */
                return;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            if (close_rejects && c->state == S_HTTP && c->rlen == 0 && (c->poll ? c->step == P_OPEN : !c->upg)) {
                finish_handshake(c, 0, 2);
                destroy(c);
                return;
            }
        }
        if (n == 0) {
            if (c->state == S_CLOSING)
                destroy(c);
            else
                fail(c, E_EOF);
            return;
        }
        if (errno == EAGAIN || errno == EINTR)
            return;
        if (c->state == S_CLOSING)
            destroy(c);
        else
            fail(c, errno == ECONNREFUSED ? E_REFUSED : E_RESET);
        return;
    }
}

static void check_deadlines(double t)
{
    struct conn *c = head, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->state == S_HELD || t < c->deadline)
            continue;
        if (c->state == S_CLOSING)
            destroy(c);
        else
            fail(c, E_TIMEOUT);
    }
}

/* The emit trigger: a blocking HTTP/1.0 GET of trigger_path on
 * trigger_port (short, on loopback). */
static void fire_emit(const char *trigger_path, int trigger_port)
{
    char req[512];
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)(trigger_port ? trigger_port : port));
    inet_pton(AF_INET, host, &sa.sin_addr);
    struct timeval tv = { 10, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    emit_seen = 0;
    emit_state = 1;
    emit_t0 = now();
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        emit_state = 2;
        emit_target = 0;
        return;
    }
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", trigger_path, host);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) < 0) {
        close(fd);
        emit_state = 2;
        emit_target = 0;
        return;
    }
    char resp[4096];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof resp - 1 && (r = recv(fd, resp + got, sizeof resp - 1 - got, 0)) > 0)
        got += (size_t)r;
    resp[got] = '\0';
    close(fd);
    const char *body = strstr(resp, "\r\n\r\n");
    emit_target = emit_expected >= 0 ? emit_expected : body ? atol(body + 4) : 0;
}

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        got_usr1 = 1;
    else if (sig == SIGUSR2)
        got_usr2 = 1;
    else
        got_stop = 1;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(uint32_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i] / 1000.0;
}

static void print_emit(void)
{
    printf("{\"event\":\"emit\",\"expected\":%ld,\"received\":%ld,\"first_ms\":%.3f,\"last_ms\":%.3f}\n",
           emit_target, emit_seen,
           emit_seen ? (emit_first - emit_t0) * 1e3 : 0,
           emit_seen ? (emit_last - emit_t0) * 1e3 : 0);
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr,
        "usage: loadgen -p PORT -f COOKIES [-m connect|reject|rate|hold|script] [-s] [-u | -l]\n"
        "  [-R PER_SEC] [-P PATH] [-c CONC] [-d SEC] [-n COUNT] [-N HOLD] [-t SEC] [-T MS]\n"
        "  [-o ORIGIN] [-E PATH] [-Q PORT] [-G PATH] [-g PORT] [-e COUNT] [-W SEC]\n"
        "  [-b NADDR] [-H HOST] [-a close|hold|half|frame|hframe] [-r ROUNDS] [-x] [-v]\n"
        "(the modes and options are described at the top of bench/loadgen.c)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *cookie_file = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "p:f:m:sulR:P:c:d:n:N:t:T:o:E:Q:G:g:e:W:b:H:a:r:xv")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'f': cookie_file = optarg; break;
        case 'm':
            if (!strcmp(optarg, "connect")) mode = M_CONNECT;
            else if (!strcmp(optarg, "reject")) mode = M_REJECT;
            else if (!strcmp(optarg, "hold")) mode = M_HOLD;
            else if (!strcmp(optarg, "script")) mode = M_SCRIPT;
            else if (!strcmp(optarg, "rate")) mode = M_RATE;
            else usage();
            break;
        case 'a':
            if (!strcmp(optarg, "close")) action = A_CLOSE;
            else if (!strcmp(optarg, "hold")) action = A_HOLD;
            else if (!strcmp(optarg, "half")) action = A_HALF;
            else if (!strcmp(optarg, "frame")) action = A_FRAME;
            else if (!strcmp(optarg, "hframe")) action = A_HFRAME;
            else usage();
            break;
        case 'r': rounds = atoi(optarg); break;
        case 's': sio = 1; break;
        case 'u':
        case 'l':
            if (poll_mode != POLL_NONE)
                usage();
            poll_mode = opt == 'u' ? POLL_UPGRADE : POLL_ONLY;
            sio = 1;
            break;
        case 'P': path = optarg; break;
        case 'c': concurrency = atoi(optarg); conc_given = 1; break;
        case 'R': rate = atof(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'n': count_limit = atol(optarg); break;
        case 'N': hold_n = atol(optarg); break;
        case 't': hold_time = atof(optarg); break;
        case 'T': timeout_s = atof(optarg) / 1000.0; break;
        case 'o': origin = optarg; break;
        case 'E': emit_path = optarg; break;
        case 'Q': emit_port = atoi(optarg); break;
        case 'G': emit2_path = optarg; break;
        case 'g': emit2_port = atoi(optarg); break;
        case 'e': emit_expected = atol(optarg); break;
        case 'W': emit_wait = atof(optarg); break;
        case 'b': naddr = atoi(optarg); break;
        case 'H': host = optarg; break;
        case 'x': close_rejects = 1; break;
        case 'v': verbose = 1; break;
        default: usage();
        }
    }
    if (port <= 0 || !cookie_file || concurrency <= 0 || naddr < 1 || naddr > 250)
        usage();
    if (mode == M_HOLD && hold_n <= 0)
        die("hold mode needs -N");
    if (mode == M_SCRIPT && (sio || rounds < 1))
        usage();
    if (poll_mode && path && !*path)
        usage();
    if (mode == M_RATE) {
        if (!(rate > 0) || rate > 1e6)
            die("rate mode needs -R PER_SEC (0 < R <= 1e6)");
        if (!conc_given)
            concurrency = 5000;
        if (duration <= 0 && count_limit > 0)
            duration = (double)count_limit / rate;
    } else if (rate > 0) {
        usage();
    }
    if (mode != M_HOLD && mode != M_SCRIPT && duration <= 0 && count_limit <= 0)
        duration = 5;

    rng ^= (uint64_t)getpid() << 32 ^ (uint64_t)(now() * 1e9);
    make_key();
    read_cookies(cookie_file);
    if (mode == M_SCRIPT) {
        results = calloc(ncookies, sizeof *results);
        if (!results)
            die("out of memory");
    }
    raise_nofile((mode == M_HOLD ? hold_n : mode == M_SCRIPT ? (long)ncookies : 0)
                 + 2L * concurrency + 1024);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    /* rate mode: a timerfd (an event with a NULL pointer) wakes the loop at
     * the next scheduled start, to the microsecond, not epoll_wait's ms */
    int tfd = -1;
    double armed = 0;
    long sched_i = 0;
    if (mode == M_RATE) {
        prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
        tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (tfd < 0)
            die("timerfd_create");
        struct epoll_event tev = { .events = EPOLLIN, .data.ptr = NULL };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev) != 0)
            die("epoll_ctl timerfd");
    }

    struct epoll_event evs[MAX_EVENTS];
    t_start = now();
    double end_start = duration > 0 ? t_start + duration : 0;
    long attempts_max = hold_n + (hold_n / 10 > 100 ? hold_n / 10 : 100);
    /* script mode: bounded by every connection's own deadline */
    double hard_deadline = t_start + (duration > 0 ? duration : 0) + timeout_s + 10
                           + (mode == M_HOLD ? 3600.0 : mode == M_SCRIPT ? 1e9 : 0);
    double last_scan = t_start, up_at = 0, hold_end = 0, t_up = 0;
    int up_printed = 0, round = 1;

    for (;;) {
        double t = now();
        if (got_stop || t > hard_deadline)
            break;
        /* start new connections */
        if (mode == M_HOLD) {
            while (!up_printed && in_handshake < concurrency && held + in_handshake < hold_n
                   && started < attempts_max)
                start_conn(0);
            if (!up_printed && in_handshake == 0
                && (held >= hold_n || started >= attempts_max)) {
                up_printed = 1;
                up_at = now();
                t_up = up_at - t_start;
                printf("{\"event\":\"up\",\"held\":%ld,\"errors\":%ld,\"rejected\":%ld,\"up_s\":%.3f}\n",
                       held, errors, rejected, t_up);
                fflush(stdout);
                if (hold_time > 0)
                    hold_end = up_at + hold_time;
            }
            if (up_printed && hold_end > 0 && t >= hold_end)
                break;
            /* SIGUSR1 may fire again once the last emit is reported, so
             * one hold measures several rounds */
            if (up_printed && emit_path && emit_state != 1
                && (got_usr1 || (emit_state == 0 && emit_wait >= 0 && t >= up_at + emit_wait))) {
                got_usr1 = 0;
                fire_emit(emit_path, emit_port);
            } else if (up_printed && emit2_path && emit_state != 1 && got_usr2) {
                got_usr2 = 0;
                fire_emit(emit2_path, emit2_port);
            }
            if (emit_state == 1 && (emit_seen >= emit_target || now() - emit_t0 > 30)) {
                emit_state = 2;
                print_emit();
            }
        } else if (mode == M_SCRIPT) {
            while (in_handshake < concurrency && script_next < ncookies)
                start_conn(0);
            if (script_next == ncookies && in_handshake == 0) {
                end_round(round);
                if (++round > rounds)
                    break;
                script_next = 0;
                continue;
            }
        } else if (mode == M_RATE) {
            /* every start that is due, each timed from its own schedule */
            double due = 0;
            for (;;) {
                due = t_start + (double)sched_i / rate;
                if (due >= end_start || (count_limit > 0 && sched_i >= count_limit))
                    break;
                if (due > t || in_handshake >= concurrency)
                    break;
                double behind = now() - due;
                if (behind > LATE_S) {
                    late++;
                    if (behind > late_max)
                        late_max = behind;
                }
                sched_i++;
                start_conn(due);
            }
            int more = due < end_start && (count_limit == 0 || sched_i < count_limit);
            if (!more && in_handshake == 0)
                break;
            if (more && due > t && due != armed) {
                struct itimerspec its;
                memset(&its, 0, sizeof its);
                its.it_value.tv_sec = (time_t)due;
                its.it_value.tv_nsec = (long)((due - (double)(time_t)due) * 1e9);
                if (its.it_value.tv_nsec <= 0 && its.it_value.tv_sec == 0)
                    its.it_value.tv_nsec = 1;
                timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
                armed = due;
            }
        } else {
            while (in_handshake < concurrency
                   && (end_start == 0 || t < end_start)
                   && (count_limit == 0 || started < count_limit))
                start_conn(0);
            int more = (end_start == 0 || t < end_start)
                       && (count_limit == 0 || started < count_limit);
            if (!more && in_handshake == 0)
                break;
        }
        if (t - last_scan > 0.05) {
            check_deadlines(t);
            last_scan = t;
        }
        int n = epoll_wait(ep, evs, MAX_EVENTS, 20);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            if (!evs[i].data.ptr) {        /* the rate mode's timer */
                uint64_t expirations;
                if (read(tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
                    die("timerfd read");
                continue;
            }
            on_event(evs[i].data.ptr, evs[i].events);
        }
    }
    if (emit_state == 1) {
        emit_state = 2;
        print_emit();
    }

    double elapsed = (mode == M_HOLD ? t_up : (t_last_done > t_start ? t_last_done : now()) - t_start);
    if (elapsed <= 0)
        elapsed = 1e-9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6;
    double cs = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
    qsort(lat_us, nlat, sizeof *lat_us, cmp_u32);
    qsort(rej_us, nrej, sizeof *rej_us, cmp_u32);
    qsort(svc_us, nsvc, sizeof *svc_us, cmp_u32);

    static const char *mode_names[] = { "connect", "reject", "hold", "script", "rate" };
    printf("{\"event\":\"done\",\"mode\":\"%s\",\"sio\":%s,\"concurrency\":%d,\"elapsed_s\":%.3f,"
           "\"started\":%ld,\"ok\":%ld,\"rejected\":%ld,\"rejected_http\":%ld,\"rejected_sio\":%ld,"
           "\"rejected_close\":%ld,\"errors\":%ld,",
           mode_names[mode], sio ? "true" : "false", concurrency, elapsed,
           started, ok, rejected, rej_http, rej_sio, rej_close, errors);
    for (int k = 0; k < (poll_mode ? E_NKINDS : E_SID); k++)
        printf("\"err_%s\":%ld,", err_names[k], errs[k]);
    if (poll_mode) {
        printf("\"poll\":\"%s\",\"polls\":%ld,\"pongs\":%ld,",
               poll_mode == POLL_UPGRADE ? "upgrade" : "only", polls, pongs);
        for (int k = 0; k < E_NKINDS; k++)
            printf("\"drop_%s\":%ld,", err_names[k], drops[k]);
    }
    if (mode == M_RATE)
        printf("\"offered_per_s\":%.1f,\"late\":%ld,\"late_max_ms\":%.3f,\"failed\":%ld,"
               "\"max_in_flight\":%ld,\"svc_p50_ms\":%.3f,\"svc_p99_ms\":%.3f,",
               rate, late, late_max * 1e3, errors, max_in_flight,
               pct(svc_us, nsvc, 0.50), pct(svc_us, nsvc, 0.99));
    printf("\"conn_per_s\":%.1f,\"rejected_per_s\":%.1f,"
           "\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
           "\"rej_p50_ms\":%.3f,\"rej_p99_ms\":%.3f,"
           "\"held\":%ld,\"dropped\":%ld,\"up_s\":%.3f,"
           "\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f,\"cpu_s\":%.3f,\"maxrss_kb\":%ld}\n",
           (double)ok / elapsed, (double)rejected / elapsed,
           pct(lat_us, nlat, 0.50), pct(lat_us, nlat, 0.90), pct(lat_us, nlat, 0.99),
           nlat ? lat_us[nlat - 1] / 1000.0 : 0,
           pct(rej_us, nrej, 0.50), pct(rej_us, nrej, 0.99),
           held, dropped, t_up, cu, cs, cu + cs, ru.ru_maxrss);
    fflush(stdout);
    return 0;
}
