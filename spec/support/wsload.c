/*
 * wsload: many WebSocket handshakes at once, for the fault and abuse specs
 * (spec/integration/fault_*_spec.lua).  One thread, epoll, non-blocking
 * sockets: thousands of connections in flight from one process, which
 * LuaSocket's select() (FD_SETSIZE 1024) cannot do.
 *
 *   wsload -p PORT [-c CONCURRENCY] [-t TIMEOUT_S] [-m MODE] [-r ROUNDS] < requests
 *
 * requests: one line per connection, "<path>\t<Cookie header value>" (the
 * value may be empty: no Cookie header).  Each line is sent as an RFC 6455
 * upgrade request (GET, Upgrade: websocket, Sec-WebSocket-Key/Version).
 *
 * MODE, what a client does once the response head is in:
 *   close  close at once, with RST (SO_LINGER 0), so no TIME_WAIT (default)
 *   hold   keep every upgraded (101) socket open until the whole round is
 *          done, then close them all at once (RST); the next round connects
 *          them all again: a reconnect storm
 *   half   on a 101, send the first half of a masked text frame, then vanish
 *   frame  on a 101, read the first frame the server sends and report its
 *          payload (terminate mode, where the gateway itself talks)
 *   hframe as hold, reading the first frame before holding
 *
 * Output, one line per request and round: "<round> <index> <status> <seen>"
 *   status  the HTTP status; 0 = connect or I/O failure; -1 = timed out
 *   seen    the X-Seen-User response header (frame modes: the first frame's
 *           payload), "-" when absent.  Spaces become '_'.
 * A summary goes to stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum mode { M_CLOSE, M_HOLD, M_HALF, M_FRAME, M_HFRAME };
enum state { S_IDLE, S_CONNECTING, S_SENDING, S_HEAD, S_FRAME, S_HELD, S_DONE };

#define BUF 16384
#define SEEN 256

typedef struct conn {
    int fd, idx;
    enum state st;
    size_t sent, len;
    double deadline;
    int status;
    char seen[SEEN];
    char buf[BUF];
} conn;

static char **reqs;
static size_t *req_len;
static int nreq;
static enum mode mode = M_CLOSE;
static struct sockaddr_in addr;
static double timeout_s = 10;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *m)
{
    perror(m);
    exit(2);
}

static void rst_close(int fd)
{
    struct linger l = { 1, 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd);
}

static void read_requests(void)
{
    size_t cap = 1024;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t n;
    reqs = malloc(cap * sizeof(*reqs));
    req_len = malloc(cap * sizeof(*req_len));
    while ((n = getline(&line, &lcap, stdin)) > 0) {
        if (line[n - 1] == '\n') line[--n] = '\0';
        char *tab = strchr(line, '\t');
        const char *path = line, *cookie = "";
        if (tab) {
            *tab = '\0';
            cookie = tab + 1;
        }
        size_t sz = strlen(path) + strlen(cookie) + 512;
        char *r = malloc(sz);
        int k = snprintf(r, sz,
                         "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Sec-WebSocket-Version: 13\r\n%s%s%s\r\n",
                         path, *cookie ? "Cookie: " : "", cookie,
                         *cookie ? "\r\n" : "");
        if ((size_t)nreq == cap) {
            cap *= 2;
            reqs = realloc(reqs, cap * sizeof(*reqs));
            req_len = realloc(req_len, cap * sizeof(*req_len));
        }
        reqs[nreq] = r;
        req_len[nreq++] = (size_t)k;
    }
    free(line);
}

static int start(conn *c, int ep)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->fd = fd;
    c->sent = c->len = 0;
    c->status = 0;
    strcpy(c->seen, "-");
    c->deadline = now() + timeout_s;
    int rc = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
    if (rc < 0 && errno != EINPROGRESS) {
        close(fd);
        c->fd = -1;
        return -1;
    }
    c->st = S_CONNECTING;
    struct epoll_event ev = { .events = EPOLLOUT | EPOLLIN, .data.ptr = c };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    return 0;
}

static void finish(conn *c, int ep, int status, int *active, int *done)
{
    if (c->st == S_DONE || c->st == S_HELD) return; /* already counted */
    if (c->status == 0) c->status = status;
    if (c->fd >= 0) epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    if ((mode == M_HOLD || mode == M_HFRAME) && c->status == 101 && c->fd >= 0) {
        c->st = S_HELD; /* closed with the others at the end of the round */
    } else {
        if (c->fd >= 0) rst_close(c->fd);
        c->fd = -1;
        c->st = S_DONE;
    }
    (*active)--;
    (*done)++;
}

static void copy_seen(conn *c, const char *p, size_t n)
{
    if (n >= SEEN) n = SEEN - 1;
    for (size_t i = 0; i < n; i++)
        c->seen[i] = (p[i] == ' ' || p[i] == '\n' || p[i] == '\r') ? '_' : p[i];
    c->seen[n] = '\0';
    if (n == 0) strcpy(c->seen, "-");
}

/* The first frame in buf[from..len): 1 when complete (seen set). */
static int parse_frame(conn *c, size_t from)
{
    const unsigned char *b = (const unsigned char *)c->buf + from;
    size_t have = c->len - from, hl = 2;
    if (have < 2) return 0;
    uint64_t pl = b[1] & 0x7f;
    if (pl == 126) {
        hl = 4;
        if (have < hl) return 0;
        pl = (uint64_t)b[2] << 8 | b[3];
    } else if (pl == 127) {
        hl = 10;
        if (have < hl) return 0;
        pl = 0;
        for (int i = 0; i < 8; i++) pl = pl << 8 | b[2 + i];
    }
    if (b[1] & 0x80) hl += 4;
    if (pl > SEEN - 1) pl = SEEN - 1; /* enough to identify */
    if (have < hl + pl) return have >= BUF - from ? 1 : 0;
    copy_seen(c, (const char *)b + hl, (size_t)pl);
    return 1;
}

/* Looks at the response head; 1 when the request is finished. */
static int on_head(conn *c, size_t *body_at)
{
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return 0;
    *body_at = (size_t)(end - c->buf) + 4;
    c->status = 0;
    if (c->len > 12 && strncmp(c->buf, "HTTP/1.", 7) == 0)
        c->status = atoi(c->buf + 9);
    for (char *p = c->buf; p < end;) {
        char *eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
        if (!eol) break;
        if ((size_t)(eol - p) > 12 && strncasecmp(p, "x-seen-user:", 12) == 0) {
            char *v = p + 12;
            while (*v == ' ') v++;
            copy_seen(c, v, (size_t)(eol - v));
        }
        p = eol + 2;
    }
    return 1;
}

static void on_event(conn *c, int ep, uint32_t evs, int *active, int *done)
{
    if (c->st == S_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            finish(c, ep, 0, active, done);
            return;
        }
        c->st = S_SENDING;
    }
    if (c->st == S_SENDING && (evs & EPOLLOUT)) {
        while (c->sent < req_len[c->idx]) {
            ssize_t n = send(c->fd, reqs[c->idx] + c->sent,
                             req_len[c->idx] - c->sent, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN) return;
                finish(c, ep, 0, active, done);
                return;
            }
            c->sent += (size_t)n;
        }
        c->st = S_HEAD;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        return;
    }
    if (c->st != S_HEAD && c->st != S_FRAME) {
        if (evs & (EPOLLERR | EPOLLHUP)) finish(c, ep, 0, active, done);
        return;
    }
    for (;;) {
        if (c->len == BUF) {
            finish(c, ep, c->status ? c->status : 0, active, done);
            return;
        }
        ssize_t n = recv(c->fd, c->buf + c->len, BUF - c->len, 0);
        if (n < 0 && errno == EAGAIN) return;
        if (n <= 0) {
            /* closed: a head read so far still counts (a 401 with close) */
            size_t at;
            if (c->st == S_HEAD && on_head(c, &at)) {
                finish(c, ep, c->status, active, done);
            } else {
                int st = c->st == S_FRAME ? c->status : 0;
                c->status = 0;
                finish(c, ep, st, active, done);
            }
            return;
        }
        c->len += (size_t)n;
        size_t at = 0;
        if (c->st == S_HEAD) {
            if (!on_head(c, &at)) continue;
            if (c->status == 101 && mode == M_HALF) {
                /* a 100-byte masked text frame, of which 2 + 4 + 10 bytes */
                unsigned char f[16] = { 0x81, 0x80 | 100, 1, 2, 3, 4 };
                memset(f + 6, 'x', 10);
                (void)send(c->fd, f, sizeof(f), MSG_NOSIGNAL);
                finish(c, ep, 101, active, done);
                return;
            }
            if (c->status == 101 && (mode == M_FRAME || mode == M_HFRAME)) {
                memmove(c->buf, c->buf + at, c->len - at);
                c->len -= at;
                c->st = S_FRAME;
                if (parse_frame(c, 0)) {
                    finish(c, ep, 101, active, done);
                    return;
                }
                continue;
            }
            finish(c, ep, c->status, active, done);
            return;
        }
        if (parse_frame(c, 0)) {
            finish(c, ep, 101, active, done);
            return;
        }
    }
}

int main(int argc, char **argv)
{
    int port = 0, conc = 100, rounds = 1, opt;
    while ((opt = getopt(argc, argv, "p:c:t:m:r:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'c': conc = atoi(optarg); break;
        case 't': timeout_s = atof(optarg); break;
        case 'r': rounds = atoi(optarg); break;
        case 'm':
            if (!strcmp(optarg, "close")) mode = M_CLOSE;
            else if (!strcmp(optarg, "hold")) mode = M_HOLD;
            else if (!strcmp(optarg, "half")) mode = M_HALF;
            else if (!strcmp(optarg, "frame")) mode = M_FRAME;
            else if (!strcmp(optarg, "hframe")) mode = M_HFRAME;
            else { fprintf(stderr, "bad mode\n"); return 2; }
            break;
        default: fprintf(stderr, "usage: see the source\n"); return 2;
        }
    }
    if (port <= 0) { fprintf(stderr, "-p PORT required\n"); return 2; }
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    read_requests();

    conn *cs = calloc((size_t)nreq, sizeof(conn));
    int ep = epoll_create1(0);
    if (!cs || ep < 0) die("setup");
    struct epoll_event *evs = malloc(1024 * sizeof(*evs));
    double t0 = now();
    long ok101 = 0, failed = 0, timedout = 0;

    for (int r = 1; r <= rounds; r++) {
        int next = 0, active = 0, done = 0;
        double last_scan = now();
        for (int i = 0; i < nreq; i++) {
            cs[i].idx = i;
            cs[i].fd = -1;
            cs[i].st = S_IDLE;
        }
        while (done < nreq) {
            while (active < conc && next < nreq) {
                conn *c = &cs[next++];
                active++;
                if (start(c, ep) < 0) {
                    c->status = 0;
                    strcpy(c->seen, "-");
                    active--;
                    done++;
                    c->st = S_DONE;
                }
            }
            int n = epoll_wait(ep, evs, 1024, 50);
            for (int i = 0; i < n; i++)
                on_event(evs[i].data.ptr, ep, evs[i].events, &active, &done);
            double t = now();
            if (t - last_scan > 0.1) {
                last_scan = t;
                for (int i = 0; i < next; i++) {
                    conn *c = &cs[i];
                    if (c->st != S_IDLE && c->st != S_DONE && c->st != S_HELD &&
                        t > c->deadline) {
                        c->status = -1;
                        finish(c, ep, -1, &active, &done);
                    }
                }
            }
        }
        for (int i = 0; i < nreq; i++) {
            conn *c = &cs[i];
            if (c->st == S_HELD) {
                rst_close(c->fd);
                c->fd = -1;
            }
            printf("%d %d %d %s\n", r, i, c->status, c->seen);
            if (c->status == 101) ok101++;
            else if (c->status == -1) timedout++;
            else if (c->status == 0) failed++;
        }
    }
    fprintf(stderr, "wsload: %d requests x %d rounds in %.2f s: %ld upgraded, "
            "%ld failed, %ld timed out\n", nreq, rounds, now() - t0, ok101,
            failed, timedout);
    return 0;
}
