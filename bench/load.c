/*
 * legate-load: the benchmark load generator.
 *
 * Closed-loop HTTP/1.1 and HTTP/2 client over TCP or TLS (mTLS if asked).
 * Each thread runs its own libev loop over its share of the connections; an
 * h1 connection keeps one request in flight (keep-alive), an h2 connection
 * keeps -m streams in flight. A request is re-issued as soon as its response
 * is complete. Only responses that complete inside the measurement window
 * (after the warm-up) are counted; latencies go into a per-thread log-linear
 * histogram (hdr.h) merged at the end.
 *
 * The hot path does no allocation for h1: the request bytes are built once,
 * one read buffer per thread is reused by every connection, timeouts are
 * found by one sweep timer per thread instead of a timer per request.
 * For h2, nghttp2 allocates its stream state; we submit a pre-built nv array.
 *
 * The last line of output is the machine-readable RESULT line (see usage()).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <http_parser.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench/hdr.h"
#include "dataplane/tls_ec.h"

#define READ_BUF (64 * 1024)
#define SCRATCH (64 * 1024)
#define RAMP_IN_FLIGHT 200 /* connects + handshakes in flight, whole process */
#define MAX_HEADERS 64
#define HIST_MAX_US (3600ull * 1000000ull)
#define ERRMSG_LEN 200

enum proto { P_H1, P_H2 };

enum errkind { E_CONNECT, E_TLS, E_STATUS, E_RESET, E_TIMEOUT, E_KINDS };
static const char *const err_names[E_KINDS] = {"connect", "tls", "status", "reset", "timeout"};

/* Options; set once by main() before any thread starts, read-only after. */
static struct {
    enum proto proto;
    int conns;
    int streams;
    int threads;
    double duration;
    double warmup;
    double timeout;
    double hold; /* > 0: idle mode */
    bool new_conn;
    bool tls;
    const char *cert, *key, *cacert, *sni;
    const char *url;
    char *host;      /* without IPv6 brackets */
    char *authority; /* host[:port] as written in the URL */
    char *path;
    char port[8];
    size_t body_size;
    int nhdr;
    char *hdr_name[MAX_HEADERS];
    char *hdr_value[MAX_HEADERS];
    struct sockaddr_storage addr;
    socklen_t addrlen;
} o = {
    .proto = P_H1, .conns = 10, .streams = 1, .threads = 1,
    .duration = 10, .warmup = 1, .timeout = 5,
};

/* Built once in main(). */
static SSL_CTX *ssl_ctx;
static char *h1_req;
static size_t h1_req_len;
static nghttp2_nv h2_nv[MAX_HEADERS + 8];
static size_t h2_nvlen;
static uint8_t *body;
static nghttp2_session_callbacks *h2_cbs;
static uint64_t t_origin, t_measure_start, t_measure_end; /* CLOCK_MONOTONIC ns */

/* Hold mode: workers report here once every connection is settled. */
static pthread_mutex_t hold_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_cv = PTHREAD_COND_INITIALIZER;
static int hold_workers_settled;
static int hold_established;

enum cstate { CS_IDLE, CS_CONNECTING, CS_HANDSHAKE, CS_OPEN };

#define CF_RAMP 0x01       /* counted in worker->connecting */
#define CF_SETTLED 0x02    /* hold mode: its one request is done or failed */
#define CF_GOAWAY 0x04     /* h2: GOAWAY received, no new streams */
#define CF_CLOSE 0x08      /* h2: close once the input is processed */
#define CF_RWANTW 0x10     /* TLS read waits for writability */
#define CF_TLSERR 0x20     /* last read failed with a TLS error (alert) */
#define CF_H1DONE 0x40     /* h1: parser completed a response */
#define CF_KEEPALIVE 0x80  /* h1: that response allows another request */
#define CF_DELETING 0x100  /* h2: session being deleted, ignore callbacks */

struct h2slot {
    struct h2slot *next_free;
    uint64_t start;
    size_t body_off;
    int32_t id;
    int status;
    bool in_use;
    bool got_end;
    bool timed_out;
};

struct worker;

struct conn {
    struct worker *w;
    ev_io io;
    ev_timer retry;
    int fd;
    int events;
    enum cstate state;
    unsigned flags; /* CF_* */
    SSL *ssl;
    uint64_t phase_start; /* connect() start */
    uint64_t req_start;   /* h1: request write start */
    size_t wpos;          /* h1: request bytes written */
    int outstanding;      /* requests in flight */
    int status;           /* h1: status of the response being parsed */
    uint32_t nresp;       /* responses on this connection */
    double backoff;
    http_parser parser;
    nghttp2_session *h2;
    struct h2slot *slots;
    struct h2slot *free_slots;
    uint8_t *wb; /* h2: bytes that could not be written yet */
    size_t wb_off, wb_len, wb_cap;
};

struct worker {
    int id;
    pthread_t thread;
    struct ev_loop *loop;
    struct conn *conns;
    int nconns;
    int next_start;
    int connecting;
    int max_connecting;
    bool in_ramp;
    bool stopping;
    ev_timer end_timer;
    ev_timer sweep_timer;
    ev_async stop_async;
    struct lb_hdr hist;
    uint64_t ok;
    uint64_t errs[E_KINDS];
    uint64_t bytes_in;
    uint64_t opened;      /* TCP connections attempted */
    uint64_t established; /* connections that became usable */
    int settled;          /* hold mode */
    int held;             /* hold mode: got their response */
    int hold_closed;      /* hold mode: closed by the peer while held */
    char errmsg[E_KINDS][ERRMSG_LEN];
    uint8_t rbuf[READ_BUF];
    uint8_t scratch[SCRATCH];
};

static int conn_h1_send(struct conn *c);
static void conn_start(struct conn *c);
static void ramp(struct worker *w);

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fatal(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("legate-load: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    /* Other threads are running their loops: leave without atexit work. */
    _exit(1);
}

static bool in_window(const struct worker *w, uint64_t t)
{
    return o.hold > 0 || (t >= t_measure_start && t < t_measure_end);
}

/* Counts n errors of one kind (if inside the window) and keeps the first
 * message of each kind for the summary. */
static void count_err(struct worker *w, enum errkind kind, unsigned n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void count_err(struct worker *w, enum errkind kind, unsigned n, const char *fmt, ...)
{
    if (!w->errmsg[kind][0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->errmsg[kind], ERRMSG_LEN, fmt, ap);
        va_end(ap);
    }
    if (in_window(w, now_ns()))
        w->errs[kind] += n;
}

/* A response completed at end; start is the latency origin. */
static void record(struct worker *w, uint64_t start, uint64_t end, int status)
{
    if (!in_window(w, end))
        return;
    if (status >= 400) {
        if (!w->errmsg[E_STATUS][0])
            snprintf(w->errmsg[E_STATUS], ERRMSG_LEN, "HTTP status %d", status);
        w->errs[E_STATUS]++;
        return;
    }
    w->ok++;
    lb_hdr_record(&w->hist, (end - start) / 1000);
}

/* Describes the last TLS failure and empties the thread's error queue. */
static const char *tls_reason(struct conn *c, int sslerr, char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (o.cacert && c->ssl && SSL_get_verify_result(c->ssl) != X509_V_OK) {
        snprintf(buf, len, "certificate verify failed: %s",
                 X509_verify_cert_error_string(SSL_get_verify_result(c->ssl)));
    } else if (e) {
        ERR_error_string_n(e, buf, len);
    } else if (sslerr == SSL_ERROR_SYSCALL) {
        snprintf(buf, len, "%s", errno ? strerror(errno) : "connection closed");
    } else if (sslerr == SSL_ERROR_ZERO_RETURN) {
        snprintf(buf, len, "connection closed");
    } else {
        snprintf(buf, len, "SSL error %d", sslerr);
    }
    ERR_clear_error();
    return buf;
}

/* ---- connection plumbing ------------------------------------------------ */

static void conn_watch(struct conn *c, int events)
{
    if (c->events == events)
        return;
    if (c->events)
        ev_io_stop(c->w->loop, &c->io);
    c->events = events;
    if (events) {
        ev_io_set(&c->io, c->fd, events);
        ev_io_start(c->w->loop, &c->io);
    }
}

static void slots_reset(struct conn *c)
{
    c->free_slots = NULL;
    for (int i = o.streams - 1; i >= 0; i--) {
        c->slots[i].in_use = false;
        c->slots[i].next_free = c->free_slots;
        c->free_slots = &c->slots[i];
    }
}

/* Releases the socket and protocol state; c can be started again. */
static void conn_teardown(struct conn *c)
{
    conn_watch(c, 0);
    if (c->h2) {
        c->flags |= CF_DELETING;
        nghttp2_session_del(c->h2);
        c->h2 = NULL;
        slots_reset(c);
    }
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->state = CS_IDLE;
    c->outstanding = 0;
    c->wb_off = c->wb_len = 0;
    c->flags &= CF_SETTLED | CF_RAMP;
}

static void hold_settle(struct conn *c, bool ok)
{
    struct worker *w = c->w;
    if (c->flags & CF_SETTLED)
        return;
    c->flags |= CF_SETTLED;
    w->settled++;
    if (ok)
        w->held++;
    if (w->settled == w->nconns) {
        pthread_mutex_lock(&hold_mu);
        hold_workers_settled++;
        hold_established += w->held;
        pthread_cond_signal(&hold_cv);
        pthread_mutex_unlock(&hold_mu);
    }
}

/* After a teardown: decides whether and when the connection comes back. */
static void conn_after_close(struct conn *c, bool failed)
{
    struct worker *w = c->w;

    if (c->flags & CF_RAMP) {
        c->flags &= ~CF_RAMP;
        w->connecting--;
        ramp(w);
    }
    if (w->stopping)
        return;
    if (o.hold > 0) {
        if (c->flags & CF_SETTLED)
            w->hold_closed++;
        else
            hold_settle(c, false);
        return;
    }
    if (failed && c->nresp == 0) {
        /* Not a single response on it: the server refuses us; do not spin. */
        ev_timer_set(&c->retry, c->backoff, 0);
        ev_timer_start(w->loop, &c->retry);
        c->backoff = c->backoff * 2 > 1.0 ? 1.0 : c->backoff * 2;
        return;
    }
    c->backoff = 0.01;
    conn_start(c);
}

/* The connection failed: counts n errors of kind, then reconnects. */
static void conn_error(struct conn *c, enum errkind kind, unsigned n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void conn_error(struct conn *c, enum errkind kind, unsigned n, const char *fmt, ...)
{
    struct worker *w = c->w;
    if (!w->stopping && n > 0) {
        char msg[ERRMSG_LEN];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        count_err(w, kind, n, "%s", msg);
    }
    conn_teardown(c);
    conn_after_close(c, true);
}

/* The connection ended without a failed request: reconnect at once. */
static void conn_closed(struct conn *c)
{
    conn_teardown(c);
    conn_after_close(c, false);
}

/* The peer closed or broke the connection while we read. */
static void conn_lost(struct conn *c, const char *why)
{
    if (c->outstanding == 0 || (c->flags & CF_GOAWAY)) {
        conn_closed(c);
    } else if ((c->flags & CF_TLSERR) && c->nresp == 0) {
        /* TLS 1.3: a refused client certificate shows up at the first read. */
        conn_error(c, E_TLS, 1, "TLS: %s", why);
    } else {
        conn_error(c, E_RESET, (unsigned)c->outstanding, "connection lost: %s", why);
    }
}

static void retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct conn *c = t->data;
    if (!c->w->stopping)
        conn_start(c);
}

/* Returns bytes read, 0 if it would block, -1 on EOF or error (*why set). */
static ssize_t conn_read(struct conn *c, void *buf, size_t len, const char **why)
{
    static __thread char reason[ERRMSG_LEN];

    if (c->ssl) {
        size_t n;
        c->flags &= ~CF_RWANTW;
        if (SSL_read_ex(c->ssl, buf, len, &n))
            return (ssize_t)n;
        int e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_WANT_READ)
            return 0;
        if (e == SSL_ERROR_WANT_WRITE) {
            c->flags |= CF_RWANTW;
            return 0;
        }
        if (e == SSL_ERROR_SSL)
            c->flags |= CF_TLSERR;
        *why = tls_reason(c, e, reason, sizeof(reason));
        return -1;
    }
    ssize_t n = recv(c->fd, buf, len, 0);
    if (n > 0)
        return n;
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    *why = n == 0 ? "connection closed" : strerror(errno);
    return -1;
}

/* Writes up to len bytes; *done is how many (0 if it would block). Returns 0,
 * or -1 on error with *why set: a count and an error never share one value. */
static int conn_write(struct conn *c, const void *buf, size_t len, size_t *done, const char **why)
{
    static __thread char reason[ERRMSG_LEN];

    *done = 0;
    if (c->ssl) {
        if (SSL_write_ex(c->ssl, buf, len, done))
            return 0;
        int e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
            return 0;
        *why = tls_reason(c, e, reason, sizeof(reason));
        return -1;
    }
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0) {
        *done = (size_t)n;
        return 0;
    }
    if (errno == EAGAIN || errno == EINTR)
        return 0;
    *why = strerror(errno);
    return -1;
}

/* ---- HTTP/1.1 ----------------------------------------------------------- */

static int h1_on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;
    c->status = p->status_code;
    return 0;
}

static int h1_on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    c->flags |= CF_H1DONE;
    if (http_should_keep_alive(p))
        c->flags |= CF_KEEPALIVE;
    else
        c->flags &= ~CF_KEEPALIVE;
    /* One request in flight: nothing may follow this response. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings h1_settings = {
    .on_headers_complete = h1_on_headers_complete,
    .on_message_complete = h1_on_message_complete,
};

/* Writes what is left of the request. Returns 0, or -1 if c was closed. */
static int h1_write(struct conn *c)
{
    const char *why;
    while (c->wpos < h1_req_len) {
        size_t n;
        if (conn_write(c, h1_req + c->wpos, h1_req_len - c->wpos, &n, &why) < 0) {
            conn_error(c, E_RESET, 1, "write: %s", why);
            return -1;
        }
        if (n == 0) {
            conn_watch(c, EV_READ | EV_WRITE);
            return 0;
        }
        c->wpos += n;
    }
    conn_watch(c, (c->flags & CF_RWANTW) ? EV_READ | EV_WRITE : EV_READ);
    return 0;
}

static int conn_h1_send(struct conn *c)
{
    c->req_start = now_ns();
    c->wpos = 0;
    c->outstanding = 1;
    c->status = 0;
    return h1_write(c);
}

/* The parser completed a response. Returns 0 if c goes on reading (a new
 * request was sent or it is held idle), -1 if c was closed or restarted. */
static int h1_complete(struct conn *c)
{
    struct worker *w = c->w;
    uint64_t t = now_ns();

    c->flags &= ~CF_H1DONE;
    c->outstanding = 0;
    c->nresp++;
    record(w, o.new_conn ? c->phase_start : c->req_start, t, c->status);
    http_parser_pause(&c->parser, 0);
    if (o.hold > 0) {
        hold_settle(c, c->status < 400);
        if (c->flags & CF_KEEPALIVE)
            return 0;
        conn_closed(c);
        return -1;
    }
    if (w->stopping)
        return 0;
    if (o.new_conn || !(c->flags & CF_KEEPALIVE)) {
        conn_closed(c);
        return -1;
    }
    return conn_h1_send(c);
}

static void h1_read(struct conn *c)
{
    struct worker *w = c->w;
    const char *why = NULL;

    for (;;) {
        ssize_t n = conn_read(c, w->rbuf, sizeof(w->rbuf), &why);
        if (n == 0)
            break;
        if (n < 0) {
            if (c->outstanding) {
                /* A response delimited by the end of the connection. */
                http_parser_execute(&c->parser, &h1_settings, NULL, 0);
                if (c->flags & CF_H1DONE) {
                    c->flags &= ~CF_KEEPALIVE;
                    h1_complete(c);
                    return;
                }
            }
            conn_lost(c, why);
            return;
        }
        w->bytes_in += (uint64_t)n;
        size_t used = http_parser_execute(&c->parser, &h1_settings, (const char *)w->rbuf,
                                          (size_t)n);
        if (c->flags & CF_H1DONE) {
            if (h1_complete(c) < 0)
                return;
            /* The response is complete and the next request was just sent:
             * unless TLS holds more records, the socket is empty, so skip
             * the read that would only return EAGAIN. */
            if (!c->ssl || !SSL_has_pending(c->ssl))
                break;
            continue;
        }
        if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK || used != (size_t)n) {
            conn_error(c, E_RESET, c->outstanding ? 1 : 0, "bad HTTP/1.1 response: %s",
                       http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
            return;
        }
        if (!c->outstanding) {
            conn_error(c, E_RESET, 0, "unsolicited data");
            return;
        }
    }
    if (c->state == CS_OPEN) {
        int ev = EV_READ;
        if ((c->flags & CF_RWANTW) || (c->outstanding && c->wpos < h1_req_len))
            ev |= EV_WRITE;
        conn_watch(c, ev);
    }
}

static void h1_io(struct conn *c, int revents)
{
    if (c->outstanding && c->wpos < h1_req_len && h1_write(c) < 0)
        return;
    if ((revents & EV_READ) || (c->flags & CF_RWANTW))
        h1_read(c);
}

/* ---- HTTP/2 ------------------------------------------------------------- */

static struct h2slot *slot_of(nghttp2_session *s, int32_t id)
{
    return nghttp2_session_get_stream_user_data(s, id);
}

static ssize_t h2_body_read(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *src,
                            void *user_data)
{
    struct h2slot *s = slot_of(session, stream_id);
    size_t left = s ? o.body_size - s->body_off : 0;
    size_t n = left < length ? left : length;
    memcpy(buf, body, n);
    if (s)
        s->body_off += n;
    if (n == left)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static const nghttp2_data_provider h2_body_prd = {.read_callback = h2_body_read};

static void h2_submit(struct conn *c)
{
    struct h2slot *s = c->free_slots;
    if (!s)
        return;
    c->free_slots = s->next_free;
    s->start = now_ns();
    s->status = 0;
    s->got_end = false;
    s->timed_out = false;
    s->body_off = 0;
    int32_t id = nghttp2_submit_request(c->h2, NULL, h2_nv, h2_nvlen,
                                        o.body_size ? &h2_body_prd : NULL, s);
    if (id < 0) {
        s->next_free = c->free_slots;
        c->free_slots = s;
        return;
    }
    s->id = id;
    s->in_use = true;
    c->outstanding++;
}

static int h2_on_header(nghttp2_session *session, const nghttp2_frame *frame,
                        const uint8_t *name, size_t namelen, const uint8_t *value,
                        size_t valuelen, uint8_t flags, void *user_data)
{
    if (frame->hd.type != NGHTTP2_HEADERS || namelen != 7 || memcmp(name, ":status", 7) != 0)
        return 0;
    struct h2slot *s = slot_of(session, frame->hd.stream_id);
    if (s && valuelen == 3)
        s->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
    return 0;
}

static int h2_on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame,
                            void *user_data)
{
    struct conn *c = user_data;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA:
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            struct h2slot *s = slot_of(session, frame->hd.stream_id);
            if (s)
                s->got_end = true;
        }
        break;
    case NGHTTP2_GOAWAY:
        c->flags |= CF_GOAWAY;
        break;
    default:
        break;
    }
    return 0;
}

static int h2_before_frame_send(nghttp2_session *session, const nghttp2_frame *frame,
                                void *user_data)
{
    /* Latency counts from the moment the request goes out, not from when it
     * was queued (it may wait for the peer's MAX_CONCURRENT_STREAMS). */
    if (frame->hd.type == NGHTTP2_HEADERS && !o.new_conn) {
        struct h2slot *s = slot_of(session, frame->hd.stream_id);
        if (s)
            s->start = now_ns();
    }
    return 0;
}

static int h2_on_stream_close(nghttp2_session *session, int32_t stream_id,
                              uint32_t error_code, void *user_data)
{
    struct conn *c = user_data;
    struct worker *w = c->w;

    if (c->flags & CF_DELETING)
        return 0;
    struct h2slot *s = slot_of(session, stream_id);
    if (!s)
        return 0;
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    c->outstanding--;
    bool ok = false;
    if (s->timed_out) {
        /* counted when it timed out */
    } else if (s->got_end) {
        c->nresp++;
        record(w, o.new_conn ? c->phase_start : s->start, now_ns(), s->status);
        ok = s->status < 400;
    } else if (error_code == NGHTTP2_REFUSED_STREAM || (c->flags & CF_GOAWAY)) {
        /* The server did not process it; it is simply sent again. */
    } else if (!w->stopping) {
        count_err(w, E_RESET, 1, "stream reset by the server: %s",
                  nghttp2_http2_strerror(error_code));
    }
    s->in_use = false;
    s->next_free = c->free_slots;
    c->free_slots = s;
    if (o.hold > 0) {
        hold_settle(c, ok);
        return 0;
    }
    if (o.new_conn) {
        c->flags |= CF_CLOSE;
        return 0;
    }
    if (!w->stopping && !(c->flags & CF_GOAWAY))
        h2_submit(c);
    return 0;
}

static int wb_append(struct conn *c, const uint8_t *p, size_t n)
{
    if (c->wb_len + n > c->wb_cap) {
        size_t cap = c->wb_cap ? c->wb_cap : SCRATCH;
        while (cap < c->wb_len + n)
            cap *= 2;
        uint8_t *nb = realloc(c->wb, cap);
        if (!nb)
            return -1;
        c->wb = nb;
        c->wb_cap = cap;
    }
    memcpy(c->wb + c->wb_len, p, n);
    c->wb_len += n;
    return 0;
}

/* Sends what nghttp2 has queued, gathering frames into one write. Returns 0
 * (all written, or the rest kept in c->wb), -1 on error (*why set). */
static int h2_flush(struct conn *c, const char **why)
{
    struct worker *w = c->w;

    for (;;) {
        if (c->wb_len > c->wb_off) {
            size_t n;
            if (conn_write(c, c->wb + c->wb_off, c->wb_len - c->wb_off, &n, why) < 0)
                return -1;
            c->wb_off += n;
            if (c->wb_off < c->wb_len)
                return 0;
            c->wb_off = c->wb_len = 0;
        }
        size_t used = 0;
        bool spilled = false;
        for (;;) {
            const uint8_t *data;
            ssize_t len = nghttp2_session_mem_send(c->h2, &data);
            if (len < 0) {
                *why = nghttp2_strerror((int)len);
                return -1;
            }
            if (len == 0)
                break;
            if (used + (size_t)len <= sizeof(w->scratch)) {
                memcpy(w->scratch + used, data, (size_t)len);
                used += (size_t)len;
                continue;
            }
            /* Too big for one gathered write: queue it all in c->wb. */
            if (wb_append(c, w->scratch, used) < 0 || wb_append(c, data, (size_t)len) < 0) {
                *why = "out of memory";
                return -1;
            }
            used = 0;
            spilled = true;
            break;
        }
        if (spilled)
            continue;
        if (used == 0)
            return 0;
        size_t n;
        if (conn_write(c, w->scratch, used, &n, why) < 0)
            return -1;
        if (n < used && wb_append(c, w->scratch + n, used - n) < 0) {
            *why = "out of memory";
            return -1;
        }
        if (n < used)
            return 0;
    }
}

/* Flushes, then closes c if the session is over or arms the watcher.
 * Returns 0, or -1 if c was closed. */
static int h2_after_io(struct conn *c)
{
    const char *why = NULL;

    if (c->flags & CF_CLOSE) {
        conn_closed(c);
        return -1;
    }
    if (h2_flush(c, &why) < 0) {
        conn_error(c, E_RESET, (unsigned)c->outstanding, "write: %s", why);
        return -1;
    }
    bool pending = c->wb_len > c->wb_off;
    if (!pending && !nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) {
        conn_lost(c, "HTTP/2 session ended");
        return -1;
    }
    conn_watch(c, EV_READ | (pending || (c->flags & CF_RWANTW) ? EV_WRITE : 0));
    return 0;
}

static void h2_io(struct conn *c, int revents)
{
    struct worker *w = c->w;

    if ((revents & EV_READ) || (c->flags & CF_RWANTW)) {
        for (;;) {
            const char *why = NULL;
            ssize_t n = conn_read(c, w->rbuf, sizeof(w->rbuf), &why);
            if (n == 0)
                break;
            if (n < 0) {
                conn_lost(c, why);
                return;
            }
            w->bytes_in += (uint64_t)n;
            ssize_t r = nghttp2_session_mem_recv(c->h2, w->rbuf, (size_t)n);
            if (r < 0) {
                conn_error(c, E_RESET, (unsigned)c->outstanding, "HTTP/2: %s",
                           nghttp2_strerror((int)r));
                return;
            }
            if (c->flags & CF_CLOSE)
                break;
        }
    }
    h2_after_io(c);
}

static int h2_open(struct conn *c)
{
    if (nghttp2_session_client_new(&c->h2, h2_cbs, c) != 0)
        return -1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (1u << 30) - 1},
    };
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0)
        return -1;
    nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, (1 << 30) - 1);
    int n = (o.hold > 0 || o.new_conn) ? 1 : o.streams;
    for (int i = 0; i < n; i++)
        h2_submit(c);
    return 0;
}

/* ---- connection setup --------------------------------------------------- */

static void conn_established(struct conn *c)
{
    struct worker *w = c->w;

    c->state = CS_OPEN;
    w->established++;
    c->backoff = 0.01;
    if (c->flags & CF_RAMP) {
        c->flags &= ~CF_RAMP;
        w->connecting--;
        ramp(w);
    }
    if (o.proto == P_H1) {
        http_parser_init(&c->parser, HTTP_RESPONSE);
        c->parser.data = c;
        conn_h1_send(c);
        return;
    }
    if (h2_open(c) < 0) {
        conn_error(c, E_CONNECT, 1, "HTTP/2 session: out of memory");
        return;
    }
    h2_after_io(c);
}

static void conn_handshake(struct conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        const unsigned char *alpn = NULL;
        unsigned alen = 0;
        SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
        if (o.proto == P_H2 && !(alen == 2 && memcmp(alpn, "h2", 2) == 0))
            fatal("-p h2: the server did not select h2 with ALPN (it selected %s%.*s%s)",
                  alen ? "\"" : "nothing", (int)alen, alen ? (const char *)alpn : "",
                  alen ? "\"" : "");
        if (o.proto == P_H1 && alen && !(alen == 8 && memcmp(alpn, "http/1.1", 8) == 0))
            fatal("-p h1: the server selected \"%.*s\" with ALPN instead of http/1.1",
                  (int)alen, (const char *)alpn);
        conn_established(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        conn_watch(c, EV_READ);
    } else if (e == SSL_ERROR_WANT_WRITE) {
        conn_watch(c, EV_WRITE);
    } else {
        if (ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL)
            fatal("-p %s: the server refused the ALPN protocol \"%s\" (alert "
                  "no_application_protocol)",
                  o.proto == P_H2 ? "h2" : "h1", o.proto == P_H2 ? "h2" : "http/1.1");
        char buf[ERRMSG_LEN];
        conn_error(c, E_TLS, 1, "TLS handshake: %s", tls_reason(c, e, buf, sizeof(buf)));
    }
}

static const char *sni_name(void)
{
    if (o.sni)
        return o.sni[0] ? o.sni : NULL;
    unsigned char tmp[16];
    if (inet_pton(AF_INET, o.host, tmp) == 1 || inet_pton(AF_INET6, o.host, tmp) == 1)
        return NULL;
    return o.host;
}

static void conn_connected(struct conn *c)
{
    if (!o.tls) {
        conn_established(c);
        return;
    }
    c->ssl = SSL_new(ssl_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        char buf[ERRMSG_LEN];
        conn_error(c, E_TLS, 1, "SSL_new: %s", tls_reason(c, 0, buf, sizeof(buf)));
        return;
    }
    const char *sni = sni_name();
    if (sni) {
        SSL_set_tlsext_host_name(c->ssl, sni);
        if (o.cacert)
            SSL_set1_host(c->ssl, sni);
    }
    SSL_set_connect_state(c->ssl);
    c->state = CS_HANDSHAKE;
    conn_handshake(c);
}

static void conn_start(struct conn *c)
{
    struct worker *w = c->w;

    c->phase_start = now_ns();
    c->nresp = 0;
    c->flags &= CF_SETTLED | CF_RAMP;
    w->opened++;
    c->fd = socket(o.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        conn_error(c, E_CONNECT, 1, "socket: %s", strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (const struct sockaddr *)&o.addr, o.addrlen) == 0) {
        conn_connected(c);
        return;
    }
    if (errno != EINPROGRESS) {
        conn_error(c, E_CONNECT, 1, "connect: %s", strerror(errno));
        return;
    }
    c->state = CS_CONNECTING;
    conn_watch(c, EV_WRITE);
}

static void conn_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct conn *c = io->data;

    switch (c->state) {
    case CS_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err)
            conn_error(c, E_CONNECT, 1, "connect: %s", strerror(err));
        else
            conn_connected(c);
        break;
    }
    case CS_HANDSHAKE:
        conn_handshake(c);
        break;
    case CS_OPEN:
        if (o.proto == P_H1)
            h1_io(c, revents);
        else
            h2_io(c, revents);
        break;
    case CS_IDLE:
        break;
    }
}

/* ---- workers ------------------------------------------------------------ */

/* Starts initial connections while fewer than max_connecting are underway. */
static void ramp(struct worker *w)
{
    if (w->in_ramp)
        return; /* a failing conn_start() re-entered; the outer loop goes on */
    w->in_ramp = true;
    while (!w->stopping && w->connecting < w->max_connecting && w->next_start < w->nconns) {
        struct conn *c = &w->conns[w->next_start++];
        c->flags |= CF_RAMP;
        w->connecting++;
        conn_start(c);
    }
    w->in_ramp = false;
}

/* Finds requests, connects and handshakes older than the timeout. */
static void sweep_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = t->data;
    uint64_t now = now_ns();
    uint64_t limit = (uint64_t)(o.timeout * 1e9);

    for (int i = 0; i < w->nconns && !w->stopping; i++) {
        struct conn *c = &w->conns[i];
        switch (c->state) {
        case CS_CONNECTING:
            if (now - c->phase_start > limit)
                conn_error(c, E_CONNECT, 1, "connect: timed out after %gs", o.timeout);
            break;
        case CS_HANDSHAKE:
            if (now - c->phase_start > limit)
                conn_error(c, E_TLS, 1, "TLS handshake: timed out after %gs", o.timeout);
            break;
        case CS_OPEN:
            if (!c->outstanding)
                break;
            if (o.proto == P_H1) {
                uint64_t start = o.new_conn ? c->phase_start : c->req_start;
                if (now - start > limit) {
                    count_err(w, E_TIMEOUT, 1, "no response within %gs", o.timeout);
                    conn_teardown(c);
                    conn_after_close(c, false);
                }
                break;
            }
            bool cancelled = false;
            for (int k = 0; k < o.streams; k++) {
                struct h2slot *s = &c->slots[k];
                uint64_t start = o.new_conn ? c->phase_start : s->start;
                if (!s->in_use || s->timed_out || now - start <= limit)
                    continue;
                /* Cancel it; the slot comes back when nghttp2 closes it. */
                s->timed_out = true;
                count_err(w, E_TIMEOUT, 1, "no response within %gs", o.timeout);
                nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
                cancelled = true;
            }
            if (cancelled)
                h2_after_io(c);
            break;
        case CS_IDLE:
            break;
        }
    }
}

static void end_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = t->data;
    w->stopping = true;
    ev_break(loop, EVBREAK_ALL);
}

static void stop_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    struct worker *w = a->data;
    w->stopping = true;
    ev_break(loop, EVBREAK_ALL);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    ev_now_update(w->loop);
    if (o.hold <= 0) {
        uint64_t now = now_ns();
        double left = t_measure_end > now ? (double)(t_measure_end - now) / 1e9 : 0;
        ev_timer_init(&w->end_timer, end_cb, left, 0);
        w->end_timer.data = w;
        ev_timer_start(w->loop, &w->end_timer);
    }
    double every = o.timeout / 4 < 0.1 ? o.timeout / 4 : 0.1;
    ev_timer_init(&w->sweep_timer, sweep_cb, every, every);
    w->sweep_timer.data = w;
    ev_timer_start(w->loop, &w->sweep_timer);
    ev_async_init(&w->stop_async, stop_cb);
    w->stop_async.data = w;
    ev_async_start(w->loop, &w->stop_async);

    ramp(w);
    ev_run(w->loop, 0);

    w->stopping = true;
    for (int i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (ev_is_active(&c->retry))
            ev_timer_stop(w->loop, &c->retry);
        conn_teardown(c);
        free(c->wb);
        c->wb = NULL;
    }
    ERR_clear_error();
    return NULL;
}

static struct worker *worker_new(int id, int nconns, int max_connecting)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->id = id;
    w->nconns = nconns;
    w->max_connecting = max_connecting;
    w->loop = ev_loop_new(EVFLAG_AUTO);
    w->conns = calloc((size_t)nconns, sizeof(*w->conns));
    if (!w->loop || !w->conns || lb_hdr_init(&w->hist, HIST_MAX_US) < 0)
        return NULL;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &w->conns[i];
        c->w = w;
        c->fd = -1;
        c->backoff = 0.01;
        ev_init(&c->io, conn_io_cb);
        c->io.data = c;
        ev_init(&c->retry, retry_cb);
        c->retry.data = c;
        if (o.proto == P_H2) {
            c->slots = calloc((size_t)o.streams, sizeof(*c->slots));
            if (!c->slots)
                return NULL;
            slots_reset(c);
        }
    }
    return w;
}

/* ---- setup -------------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs("usage: legate-load [options] URL\n"
          "  URL                https://HOST:PORT/path or http://HOST:PORT/path\n"
          "  -p h1|h2           protocol (default h1); over TLS negotiated with ALPN;\n"
          "                     h2 over http:// is prior-knowledge h2c\n"
          "  -c N               connections (default 10)\n"
          "  -m N               concurrent streams per h2 connection (default 1; h1: 1)\n"
          "  -d SECONDS         measured duration (default 10)\n"
          "  -w SECONDS         warm-up before measuring, not counted (default 1)\n"
          "  -t N               threads, each with its own event loop (default 1)\n"
          "  --new-conn         a new TCP+TLS connection per request, no TLS resumption;\n"
          "                     latency then counts from connect()\n"
          "  --hold SECONDS     open -c connections, one request each, print\n"
          "                     \"HOLDING n=<established>\", stay idle SECONDS, exit\n"
          "  --cert FILE        client certificate chain (PEM)\n"
          "  --key FILE         its private key (PEM; default: --cert FILE)\n"
          "  --cacert FILE      verify the server against these CAs, and its name against\n"
          "                     the SNI name when there is one (default: no verification)\n"
          "  --sni NAME         SNI (default: the URL host unless an IP literal)\n"
          "  -H \"name: value\"   extra request header, repeatable\n"
          "  --timeout SECONDS  per-request timeout, counted as err_timeout (default 5)\n"
          "  --body-size N      POST an N-byte body instead of GET\n"
          "The last line printed is:\n"
          "RESULT requests=N errors=N err_connect=N err_tls=N err_status=N err_reset=N\n"
          "       err_timeout=N rps=F p50_us=N p90_us=N p99_us=N p999_us=N max_us=N duration_s=F\n"
          "Exit status: 0 done, 1 no request succeeded, 2 bad usage.\n",
          f);
}

static void bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void bad_usage(const char *fmt, ...)
{
    va_list ap;
    fputs("legate-load: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n", stderr);
    usage(stderr);
    exit(2);
}

static long parse_int(const char *opt, const char *s, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        bad_usage("%s: expected an integer in %ld..%ld, got \"%s\"", opt, min, max, s);
    return v;
}

static double parse_secs(const char *opt, const char *s, double min)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < min || v > 1e7)
        bad_usage("%s: expected seconds >= %g, got \"%s\"", opt, min, s);
    return v;
}

static void parse_url(const char *url)
{
    const char *p;
    if (strncmp(url, "https://", 8) == 0) {
        o.tls = true;
        p = url + 8;
    } else if (strncmp(url, "http://", 7) == 0) {
        o.tls = false;
        p = url + 7;
    } else {
        bad_usage("URL must start with http:// or https://: \"%s\"", url);
    }
    size_t alen = strcspn(p, "/?#");
    if (alen == 0)
        bad_usage("URL has no host: \"%s\"", url);
    o.authority = strndup(p, alen);
    o.path = p[alen] == '/' ? strdup(p + alen) : NULL;
    if (!o.path) {
        /* "http://h?q" -> "/?q" */
        size_t n = strlen(p + alen);
        o.path = malloc(n + 2);
        if (o.path) {
            o.path[0] = '/';
            memcpy(o.path + 1, p + alen, n + 1);
        }
    }
    char *hash = o.path ? strchr(o.path, '#') : NULL;
    if (hash)
        *hash = '\0';

    const char *a = o.authority, *port = NULL;
    if (a[0] == '[') {
        const char *rb = strchr(a, ']');
        if (!rb || (rb[1] && rb[1] != ':'))
            bad_usage("bad IPv6 address in URL: \"%s\"", url);
        o.host = strndup(a + 1, (size_t)(rb - a - 1));
        if (rb[1] == ':')
            port = rb + 2;
    } else {
        const char *colon = strchr(a, ':');
        o.host = colon ? strndup(a, (size_t)(colon - a)) : strdup(a);
        if (colon)
            port = colon + 1;
    }
    if (!o.host || !o.path || !o.host[0])
        bad_usage("bad URL: \"%s\"", url);
    long pn = port ? parse_int("URL port", port, 1, 65535) : (o.tls ? 443 : 80);
    snprintf(o.port, sizeof(o.port), "%ld", pn);
}

static void add_header(const char *arg)
{
    const char *colon = strchr(arg, ':');
    if (!colon || colon == arg)
        bad_usage("-H: expected \"name: value\", got \"%s\"", arg);
    if (o.nhdr == MAX_HEADERS)
        bad_usage("-H: at most %d headers", MAX_HEADERS);
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    o.hdr_name[o.nhdr] = strndup(arg, (size_t)(colon - arg));
    o.hdr_value[o.nhdr] = strdup(v);
    if (!o.hdr_name[o.nhdr] || !o.hdr_value[o.nhdr])
        fatal("out of memory");
    o.nhdr++;
}

static bool has_header(const char *name)
{
    for (int i = 0; i < o.nhdr; i++)
        if (strcasecmp(o.hdr_name[i], name) == 0)
            return true;
    return false;
}

static void build_h1_request(void)
{
    size_t cap = 256 + strlen(o.path) + strlen(o.authority) + o.body_size;
    for (int i = 0; i < o.nhdr; i++)
        cap += strlen(o.hdr_name[i]) + strlen(o.hdr_value[i]) + 4;
    h1_req = malloc(cap);
    if (!h1_req)
        fatal("out of memory");
    size_t n = (size_t)snprintf(h1_req, cap, "%s %s HTTP/1.1\r\n", o.body_size ? "POST" : "GET",
                                o.path);
    if (!has_header("host"))
        n += (size_t)snprintf(h1_req + n, cap - n, "Host: %s\r\n", o.authority);
    if (!has_header("user-agent"))
        n += (size_t)snprintf(h1_req + n, cap - n, "User-Agent: legate-load\r\n");
    for (int i = 0; i < o.nhdr; i++)
        n += (size_t)snprintf(h1_req + n, cap - n, "%s: %s\r\n", o.hdr_name[i], o.hdr_value[i]);
    if (o.body_size)
        n += (size_t)snprintf(h1_req + n, cap - n, "Content-Length: %zu\r\n", o.body_size);
    if (o.new_conn)
        n += (size_t)snprintf(h1_req + n, cap - n, "Connection: close\r\n");
    n += (size_t)snprintf(h1_req + n, cap - n, "\r\n");
    if (o.body_size) {
        memcpy(h1_req + n, body, o.body_size);
        n += o.body_size;
    }
    h1_req_len = n;
}

static void nv_add(const char *name, const char *value)
{
    h2_nv[h2_nvlen++] = (nghttp2_nv){
        .name = (uint8_t *)(uintptr_t)name, .namelen = strlen(name),
        .value = (uint8_t *)(uintptr_t)value, .valuelen = strlen(value),
        .flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE,
    };
}

static void build_h2_request(void)
{
    static const char *const hop[] = {"connection", "keep-alive", "proxy-connection",
                                      "transfer-encoding", "upgrade", "te", "host"};
    static char clen[32];
    const char *authority = o.authority;

    for (int i = 0; i < o.nhdr; i++)
        if (strcasecmp(o.hdr_name[i], "host") == 0)
            authority = o.hdr_value[i];
    nv_add(":method", o.body_size ? "POST" : "GET");
    nv_add(":scheme", o.tls ? "https" : "http");
    nv_add(":authority", authority);
    nv_add(":path", o.path);
    if (!has_header("user-agent"))
        nv_add("user-agent", "legate-load");
    for (int i = 0; i < o.nhdr; i++) {
        bool skip = false;
        for (size_t k = 0; k < sizeof(hop) / sizeof(hop[0]); k++)
            if (strcasecmp(o.hdr_name[i], hop[k]) == 0)
                skip = true;
        if (skip)
            continue;
        for (char *p = o.hdr_name[i]; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        nv_add(o.hdr_name[i], o.hdr_value[i]);
    }
    if (o.body_size) {
        snprintf(clen, sizeof(clen), "%zu", o.body_size);
        nv_add("content-length", clen);
    }

    nghttp2_session_callbacks_new(&h2_cbs);
    if (!h2_cbs)
        fatal("out of memory");
    nghttp2_session_callbacks_set_on_header_callback(h2_cbs, h2_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(h2_cbs, h2_on_frame_recv);
    nghttp2_session_callbacks_set_before_frame_send_callback(h2_cbs, h2_before_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(h2_cbs, h2_on_stream_close);
}

static void setup_tls(void)
{
    /* Full handshakes (--new-conn) cost the client as much as the proxy:
     * parse the proxy's certificate without OpenSSL 3.0's decoder search,
     * as legate does, so that the load generator runs out of CPU last. */
    dp_tls_builtin_ec_keys();
    ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!ssl_ctx)
        fatal("SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Keep the record buffers while measuring; idle connections in --hold
     * give them back, so that 10000 of them fit. */
    if (o.hold > 0)
        SSL_CTX_set_mode(ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
    else
        SSL_CTX_clear_mode(ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ssl_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Without read-ahead every record costs two read(2)s: header, then body. */
    SSL_CTX_set_read_ahead(ssl_ctx, 1);
    if (o.new_conn) {
        SSL_CTX_set_options(ssl_ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_session_cache_mode(ssl_ctx, SSL_SESS_CACHE_OFF);
    }
    static const unsigned char alpn_h2[] = "\x02h2", alpn_h1[] = "\x08http/1.1";
    if (o.proto == P_H2)
        SSL_CTX_set_alpn_protos(ssl_ctx, alpn_h2, sizeof(alpn_h2) - 1);
    else
        SSL_CTX_set_alpn_protos(ssl_ctx, alpn_h1, sizeof(alpn_h1) - 1);

    char err[256];
    if (o.cert) {
        const char *key = o.key ? o.key : o.cert;
        if (SSL_CTX_use_certificate_chain_file(ssl_ctx, o.cert) != 1) {
            ERR_error_string_n(ERR_get_error(), err, sizeof(err));
            bad_usage("--cert %s: %s", o.cert, err);
        }
        if (SSL_CTX_use_PrivateKey_file(ssl_ctx, key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ssl_ctx) != 1) {
            ERR_error_string_n(ERR_get_error(), err, sizeof(err));
            bad_usage("--key %s: %s", key, err);
        }
    }
    if (o.cacert) {
        if (SSL_CTX_load_verify_locations(ssl_ctx, o.cacert, NULL) != 1) {
            ERR_error_string_n(ERR_get_error(), err, sizeof(err));
            bad_usage("--cacert %s: %s", o.cacert, err);
        }
        SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);
    }
    ERR_clear_error();
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (rlim_t)o.conns + 64 > rl.rlim_cur)
        fprintf(stderr, "legate-load: warning: -c %d but only %llu file descriptors\n", o.conns,
                (unsigned long long)rl.rlim_cur);
}

static void resolve(void)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int r = getaddrinfo(o.host, o.port, &hints, &res);
    if (r != 0)
        fatal("%s: %s", o.host, gai_strerror(r));
    memcpy(&o.addr, res->ai_addr, res->ai_addrlen);
    o.addrlen = res->ai_addrlen;
    freeaddrinfo(res);
}

static void sleep_until(uint64_t t)
{
    for (uint64_t now = now_ns(); now < t; now = now_ns()) {
        uint64_t d = t - now;
        struct timespec ts = {(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
        nanosleep(&ts, NULL);
    }
}

int main(int argc, char **argv)
{
    enum { OPT_NEW_CONN = 256, OPT_HOLD, OPT_CERT, OPT_KEY, OPT_CACERT, OPT_SNI, OPT_TIMEOUT,
           OPT_BODY, OPT_HELP };
    static const struct option longopts[] = {
        {"new-conn", no_argument, NULL, OPT_NEW_CONN},
        {"hold", required_argument, NULL, OPT_HOLD},
        {"cert", required_argument, NULL, OPT_CERT},
        {"key", required_argument, NULL, OPT_KEY},
        {"cacert", required_argument, NULL, OPT_CACERT},
        {"sni", required_argument, NULL, OPT_SNI},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"body-size", required_argument, NULL, OPT_BODY},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "p:c:m:d:w:t:H:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'p':
            if (strcmp(optarg, "h1") == 0)
                o.proto = P_H1;
            else if (strcmp(optarg, "h2") == 0)
                o.proto = P_H2;
            else
                bad_usage("-p: expected h1 or h2, got \"%s\"", optarg);
            break;
        case 'c': o.conns = (int)parse_int("-c", optarg, 1, 1000000); break;
        case 'm': o.streams = (int)parse_int("-m", optarg, 1, 100000); break;
        case 'd': o.duration = parse_secs("-d", optarg, 0.001); break;
        case 'w': o.warmup = parse_secs("-w", optarg, 0); break;
        case 't': o.threads = (int)parse_int("-t", optarg, 1, 1024); break;
        case 'H': add_header(optarg); break;
        case OPT_NEW_CONN: o.new_conn = true; break;
        case OPT_HOLD: o.hold = parse_secs("--hold", optarg, 0.001); break;
        case OPT_CERT: o.cert = optarg; break;
        case OPT_KEY: o.key = optarg; break;
        case OPT_CACERT: o.cacert = optarg; break;
        case OPT_SNI: o.sni = optarg; break;
        case OPT_TIMEOUT: o.timeout = parse_secs("--timeout", optarg, 0.001); break;
        case OPT_BODY:
            o.body_size = (size_t)parse_int("--body-size", optarg, 0, 1L << 30);
            break;
        case 'h':
        case OPT_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1)
        bad_usage(optind >= argc ? "missing URL" : "one URL expected");
    o.url = argv[optind];
    parse_url(o.url);
    if (o.key && !o.cert)
        bad_usage("--key needs --cert");
    if ((o.cert || o.cacert || o.sni) && !o.tls)
        bad_usage("--cert, --cacert and --sni need an https:// URL");
    if (o.hold > 0 && o.new_conn)
        bad_usage("--hold and --new-conn exclude each other");
    if (o.proto == P_H1 || o.new_conn)
        o.streams = 1;
    if (o.threads > o.conns)
        o.threads = o.conns;

    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    resolve();
    if (o.body_size) {
        body = malloc(o.body_size);
        if (!body)
            fatal("out of memory");
        memset(body, 'x', o.body_size);
    }
    if (o.proto == P_H1)
        build_h1_request();
    else
        build_h2_request();
    if (o.tls)
        setup_tls();

    struct worker **ws = calloc((size_t)o.threads, sizeof(*ws));
    int ramp_each = RAMP_IN_FLIGHT / o.threads > 0 ? RAMP_IN_FLIGHT / o.threads : 1;
    for (int i = 0; i < o.threads; i++) {
        int n = o.conns / o.threads + (i < o.conns % o.threads ? 1 : 0);
        if (!ws || !(ws[i] = worker_new(i, n, ramp_each)))
            fatal("out of memory");
    }

    t_origin = now_ns();
    t_measure_start = t_origin + (uint64_t)(o.warmup * 1e9);
    t_measure_end = t_measure_start + (uint64_t)(o.duration * 1e9);
    for (int i = 0; i < o.threads; i++)
        if (pthread_create(&ws[i]->thread, NULL, worker_main, ws[i]) != 0)
            fatal("pthread_create: %s", strerror(errno));

    int held = 0;
    if (o.hold > 0) {
        /* Every connection settles within two timeouts of its start (connect
         * plus handshake, then the request); starts are ramped. */
        double bound = (o.conns / RAMP_IN_FLIGHT + 2) * (2 * o.timeout + 0.5);
        uint64_t deadline = now_ns() + (uint64_t)(bound * 1e9);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)bound + 1;
        pthread_mutex_lock(&hold_mu);
        while (hold_workers_settled < o.threads && now_ns() < deadline)
            if (pthread_cond_timedwait(&hold_cv, &hold_mu, &ts) == ETIMEDOUT)
                break;
        held = hold_established;
        bool all = hold_workers_settled == o.threads;
        pthread_mutex_unlock(&hold_mu);
        if (!all)
            fprintf(stderr, "legate-load: not every connection settled within %.0fs\n", bound);
        printf("HOLDING n=%d\n", held);
        fflush(stdout);
        t_measure_start = now_ns();
        sleep_until(t_measure_start + (uint64_t)(o.hold * 1e9));
        t_measure_end = now_ns();
        for (int i = 0; i < o.threads; i++)
            ev_async_send(ws[i]->loop, &ws[i]->stop_async);
    }
    for (int i = 0; i < o.threads; i++)
        pthread_join(ws[i]->thread, NULL);

    /* ---- report ---- */
    struct lb_hdr hist;
    if (lb_hdr_init(&hist, HIST_MAX_US) < 0)
        fatal("out of memory");
    uint64_t ok = 0, errs[E_KINDS] = {0}, bytes = 0, opened = 0, established = 0;
    int hold_closed = 0;
    for (int i = 0; i < o.threads; i++) {
        struct worker *w = ws[i];
        lb_hdr_merge(&hist, &w->hist);
        ok += w->ok;
        bytes += w->bytes_in;
        opened += w->opened;
        established += w->established;
        hold_closed += w->hold_closed;
        for (int k = 0; k < E_KINDS; k++)
            errs[k] += w->errs[k];
    }
    uint64_t nerr = 0;
    for (int k = 0; k < E_KINDS; k++)
        nerr += errs[k];
    double dur = o.hold > 0 ? (double)(t_measure_end - t_measure_start) / 1e9 : o.duration;
    double rps = o.hold > 0 ? 0 : (double)ok / dur;

    printf("legate-load %s %s: %d connection(s), %d thread(s)%s\n", o.proto == P_H1 ? "h1" : "h2",
           o.url, o.conns, o.threads, o.new_conn ? ", a new connection per request" : "");
    if (o.proto == P_H2 && !o.new_conn)
        printf("  streams/conn: %d\n", o.streams);
    if (o.hold > 0)
        printf("  held:        %d of %d connections idle for %.3fs, %d closed by the server\n",
               held, o.conns, dur, hold_closed);
    else
        printf("  window:      %.3fs after %.3fs warm-up\n", dur, o.warmup);
    printf("  requests:    %llu ok, %llu errors (connect %llu, tls %llu, status %llu, reset %llu, "
           "timeout %llu)\n",
           (unsigned long long)ok, (unsigned long long)nerr, (unsigned long long)errs[E_CONNECT],
           (unsigned long long)errs[E_TLS], (unsigned long long)errs[E_STATUS],
           (unsigned long long)errs[E_RESET], (unsigned long long)errs[E_TIMEOUT]);
    if (o.hold <= 0)
        printf("  throughput:  %.1f req/s, %.2f MB/s in (whole run)\n", rps,
               (double)bytes / 1e6 / (o.warmup + o.duration));
    printf("  latency us:  min %llu  p50 %llu  p90 %llu  p99 %llu  p99.9 %llu  max %llu\n",
           (unsigned long long)(hist.total ? hist.min : 0),
           (unsigned long long)lb_hdr_percentile(&hist, 50),
           (unsigned long long)lb_hdr_percentile(&hist, 90),
           (unsigned long long)lb_hdr_percentile(&hist, 99),
           (unsigned long long)lb_hdr_percentile(&hist, 99.9), (unsigned long long)hist.max);
    printf("  connections: %llu opened, %llu established\n", (unsigned long long)opened,
           (unsigned long long)established);
    for (int k = 0; k < E_KINDS; k++) {
        for (int i = 0; i < o.threads; i++) {
            if (ws[i]->errmsg[k][0]) {
                printf("  first %s error: %s\n", err_names[k], ws[i]->errmsg[k]);
                break;
            }
        }
    }
    printf("RESULT requests=%llu errors=%llu err_connect=%llu err_tls=%llu err_status=%llu "
           "err_reset=%llu err_timeout=%llu rps=%.2f p50_us=%llu p90_us=%llu p99_us=%llu "
           "p999_us=%llu max_us=%llu duration_s=%.3f\n",
           (unsigned long long)ok, (unsigned long long)nerr, (unsigned long long)errs[E_CONNECT],
           (unsigned long long)errs[E_TLS], (unsigned long long)errs[E_STATUS],
           (unsigned long long)errs[E_RESET], (unsigned long long)errs[E_TIMEOUT], rps,
           (unsigned long long)lb_hdr_percentile(&hist, 50),
           (unsigned long long)lb_hdr_percentile(&hist, 90),
           (unsigned long long)lb_hdr_percentile(&hist, 99),
           (unsigned long long)lb_hdr_percentile(&hist, 99.9), (unsigned long long)hist.max, dur);
    fflush(stdout);

    for (int i = 0; i < o.threads; i++) {
        lb_hdr_free(&ws[i]->hist);
        for (int k = 0; k < ws[i]->nconns; k++)
            free(ws[i]->conns[k].slots);
        free(ws[i]->conns);
        ev_loop_destroy(ws[i]->loop);
        free(ws[i]);
    }
    free(ws);
    lb_hdr_free(&hist);
    if (h2_cbs)
        nghttp2_session_callbacks_del(h2_cbs);
    SSL_CTX_free(ssl_ctx);
    return (o.hold > 0 ? held : (int)(ok > 0)) > 0 ? 0 : 1;
}
