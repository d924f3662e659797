#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>

/* How much one readiness event may read before yielding to other
 * connections on the loop. */
#define READ_BUDGET (4 * DP_BUF_BLOCK)
#define DEFAULT_READ_LIMIT (1024 * 1024)
#define LINGER_SECONDS 2.0
/* A peer that keeps sending after we closed (a flood after a GOAWAY) gets
 * this much discarded, then an RST: what it sends after our close cannot
 * matter to it, and reading gigabytes for it costs a worker. */
#define LINGER_MAX_BYTES (256 * 1024)
/* Sealing stops here and sends first, so a congested socket leaves the rest
 * in c->out, where the owner's flow control sees it. */
#define WIRE_MAX (4 * DP_BUF_BLOCK)
/* One TLS record's worth per SSL_write, so WIRE_MAX is checked between
 * records. */
#define SEAL_CHUNK 16384

#define DP_CONN_F_LINGER 0x400     /* write side shut, discarding input */
#define DP_CONN_F_PENDING 0x800    /* an internal close awaits delivery */
#define DP_CONN_F_RDRAINED 0x2000  /* the last socket read came back short */
#define DP_CONN_F_NOTIFIED 0x4000  /* graceful close: close_notify sealed */
#define DP_CONN_F_WR_DONE 0x20000  /* the FIN of dp_conn_shutdown_write is out */
#define DP_CONN_F_TAP_CLOSE 0x80000 /* on_queued asked to close */
#define DP_CONN_F_READ_AGAIN 0x100000 /* do_read stopped at its budget with TLS bytes buffered */

static void io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void finish_graceful(struct dp_conn *c);

/* ---- the send queue: one per worker thread ----------------------------
 * Connections with sealed bytes wait here until the loop has run every
 * callback of this iteration; then each gets one send. */
struct sendq {
    struct ev_loop *loop;
    ev_prepare w;
    struct dp_conn *head;
    unsigned n;
};
/* Each queued connection holds its sealed bytes (a buffer block) until the
 * queue runs: past this many, connections send at once, so that a storm
 * (10,000 request timeouts firing together) does not hold a block each. */
#define SQ_MAX 128
static _Thread_local struct sendq sq;

static void sq_remove(struct dp_conn *c)
{
    if (c->sq_prev == NULL)
        return;
    *c->sq_prev = c->sq_next;
    if (c->sq_next)
        c->sq_next->sq_prev = c->sq_prev;
    c->sq_next = NULL;
    c->sq_prev = NULL;
    sq.n--;
}

static void sq_run(struct ev_loop *loop, ev_prepare *w, int revents);

/* Returns 0, or -1 when the queue is full or belongs to another loop (the
 * caller then sends at once). */
static int sq_add(struct dp_conn *c)
{
    if (c->sq_prev)
        return 0;
    if (sq.n >= SQ_MAX)
        return -1;
    /* The watcher is active while connections are queued (and while the
     * queue runs). */
    if (ev_is_active(&sq.w)) {
        if (sq.loop != c->loop)
            return -1;
    } else {
        sq.loop = c->loop;
        ev_prepare_init(&sq.w, sq_run);
        ev_prepare_start(sq.loop, &sq.w);
    }
    c->sq_next = sq.head;
    if (sq.head)
        sq.head->sq_prev = &c->sq_next;
    c->sq_prev = &sq.head;
    sq.head = c;
    sq.n++;
    return 0;
}

/* ---- a BIO between OpenSSL and the connection's buffers ---------------
 * Reads go to the socket (and note a short read: the socket is empty);
 * writes land in c->wire and never block, so OpenSSL never sees a partial
 * write. */
static int send_wire(struct dp_conn *c);

static int cbio_write(BIO *b, const char *p, int n)
{
    struct dp_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (n <= 0)
        return 0;
    if (dp_buf_append(&c->wire, p, (size_t)n) < 0)
        return -1;
    return n; /* whoever called into OpenSSL sends or queues it */
}

static int cbio_read(BIO *b, char *p, int n)
{
    struct dp_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (n <= 0)
        return 0;
    for (;;) {
        errno = 0;
        ssize_t r = read(c->fd, p, (size_t)n);
        if (r > 0) {
            if (r < n)
                c->flags |= DP_CONN_F_RDRAINED;
            else
                c->flags &= ~DP_CONN_F_RDRAINED;
            return (int)r;
        }
        if (r == 0) {
            /* Told apart from a failed read by BIO_eof, as the socket BIO
             * does: OpenSSL names an EOF without close_notify. */
            BIO_set_flags(b, BIO_FLAGS_IN_EOF);
            c->flags |= DP_CONN_F_RDRAINED;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->flags |= DP_CONN_F_RDRAINED;
            BIO_set_retry_read(b);
        }
        return -1;
    }
}

static long cbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num, (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_EOF: return BIO_test_flags(b, BIO_FLAGS_IN_EOF) != 0;
    default: return 0;
    }
}

static BIO_METHOD *cbio_method;
static pthread_once_t cbio_once = PTHREAD_ONCE_INIT;

static void cbio_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "legate conn");
    if (m == NULL || BIO_meth_set_write(m, cbio_write) != 1 || BIO_meth_set_read(m, cbio_read) != 1 ||
        BIO_meth_set_ctrl(m, cbio_ctrl) != 1) {
        BIO_meth_free(m);
        return;
    }
    cbio_method = m;
}

/* Puts the connection's BIO under ssl. Returns 0, or -1 (no memory). */
static int attach_bio(struct dp_conn *c)
{
    pthread_once(&cbio_once, cbio_init);
    BIO *b = cbio_method ? BIO_new(cbio_method) : NULL;
    if (b == NULL)
        return -1;
    BIO_set_data(b, c);
    BIO_set_init(b, 1);
    SSL_set_bio(c->ssl, b, b);
    /* Records are read as many as the socket has, in one read. */
    SSL_set_read_ahead(c->ssl, 1);
    return 0;
}

/* SSL_get_error needs an empty error queue before each call; clearing an
 * empty one walks all its slots, so look first. */
static inline void clear_errors(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void common_init(struct dp_conn *c, struct ev_loop *loop, int fd, SSL *ssl,
                        const struct dp_conn_handler *h, void *owner)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->ssl = ssl;
    c->loop = loop;
    c->h = h;
    c->owner = owner;
    ev_io_init(&c->io, io_cb, fd, 0);
    c->io.data = c;
    ev_init(&c->timer, timer_cb);
    c->timer.data = c;
}

static void update_watch(struct dp_conn *c)
{
    int ev = 0;

    if (c->flags & DP_CONN_F_CLOSED)
        return;
    if (c->flags & DP_CONN_F_CONNECTING) {
        ev = EV_WRITE;
    } else {
        if (!(c->flags & DP_CONN_F_PAUSED) || (c->flags & (DP_CONN_F_HANDSHAKE | DP_CONN_F_LINGER)) ||
            (c->flags & DP_CONN_F_WRITE_WANTS_READ))
            ev |= EV_READ;
        /* Queued bytes wait for the send queue, not for writability. */
        if (c->flags & (DP_CONN_F_WBLOCKED | DP_CONN_F_READ_WANTS_WRITE))
            ev |= EV_WRITE;
    }
    if (c->flags & DP_CONN_F_EOF)
        ev &= ~EV_READ;
    if (ev == (c->io.events & (EV_READ | EV_WRITE)) && ev_is_active(&c->io))
        return;
    ev_io_stop(c->loop, &c->io);
    ev_io_set(&c->io, c->fd, ev);
    if (ev)
        ev_io_start(c->loop, &c->io);
}

static void close_fd(struct dp_conn *c)
{
    /* What was sealed would have been sent by now without the send queue: a
     * TLS alert explaining a failed handshake, the response before an
     * abortive close. One try, no waiting. */
    if (dp_buf_size(&c->wire) > 0 && c->fd >= 0 && !(c->flags & (DP_CONN_F_WBLOCKED | DP_CONN_F_CONNECTING)))
        send_wire(c);
    ev_io_stop(c->loop, &c->io);
    ev_timer_stop(c->loop, &c->timer);
    sq_remove(c);
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->flags |= DP_CONN_F_CLOSED;
    dp_buf_release(&c->in);
    dp_buf_release(&c->out);
    dp_buf_release(&c->wire);
}

/* A failure found inside a call the owner made (a flush): close now, deliver
 * on_close from the loop so the owner never sees it re-entrantly. */
static void fail_later(struct dp_conn *c, enum dp_conn_close_reason why)
{
    if (c->flags & DP_CONN_F_CLOSED)
        return;
    c->close_reason = why;
    close_fd(c);
    c->flags |= DP_CONN_F_PENDING;
    ev_feed_event(c->loop, &c->io, EV_CUSTOM);
}

/* A failure found in our own callback: deliver on_close now. */
static void fail_now(struct dp_conn *c, enum dp_conn_close_reason why)
{
    if (c->flags & DP_CONN_F_CLOSED)
        return;
    c->close_reason = why;
    close_fd(c);
    c->h->on_close(c, why);
}

static void record_tls_error(struct dp_conn *c)
{
    unsigned long e, last = 0;
    while ((e = ERR_get_error()) != 0)
        last = e;
    c->tls_error = last;
}

static void established(struct dp_conn *c)
{
    c->flags |= DP_CONN_F_ESTABLISHED;
    if (c->h->on_connected)
        c->h->on_connected(c);
}

/* Returns 0 when the handshake is finished or still in progress, -1 when the
 * connection was closed. */
static int do_handshake(struct dp_conn *c)
{
    clear_errors();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->flags &= ~(DP_CONN_F_HANDSHAKE | DP_CONN_F_READ_WANTS_WRITE);
        established(c);
        return (c->flags & DP_CONN_F_CLOSED) ? -1 : 0;
    }
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        c->flags &= ~DP_CONN_F_READ_WANTS_WRITE;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        c->flags |= DP_CONN_F_READ_WANTS_WRITE;
        return 0;
    case SSL_ERROR_SYSCALL:
        c->sys_errno = errno;
        record_tls_error(c);
        fail_now(c, c->tls_error ? DP_CONN_CLOSE_TLS_ERROR : DP_CONN_CLOSE_RESET);
        return -1;
    default:
        record_tls_error(c);
        fail_now(c, DP_CONN_CLOSE_TLS_ERROR);
        return -1;
    }
}

/* Returns 0, or -1 when the connection was closed (on_close delivered). */
static int do_read(struct dp_conn *c)
{
    size_t got = 0;
    size_t limit = c->read_limit ? c->read_limit : DEFAULT_READ_LIMIT;
    int eof = 0;

    c->flags &= ~(DP_CONN_F_READ_WANTS_WRITE | DP_CONN_F_RDRAINED | DP_CONN_F_READ_AGAIN);
    while (got < READ_BUDGET && dp_buf_size(&c->in) < limit) {
        uint8_t *dst = dp_buf_reserve(&c->in, DP_BUF_BLOCK);
        if (dst == NULL) {
            fail_now(c, DP_CONN_CLOSE_NOMEM);
            return -1;
        }
        size_t room = c->in.cap - c->in.len;
        ssize_t n;
        int drained;
        if (c->ssl) {
            clear_errors();
            int r = SSL_read(c->ssl, dst, room > INT32_MAX ? INT32_MAX : (int)room);
            if (r > 0) {
                n = r;
                drained = (c->flags & DP_CONN_F_RDRAINED) && !SSL_has_pending(c->ssl);
            } else {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ)
                    break;
                if (e == SSL_ERROR_WANT_WRITE) {
                    c->flags |= DP_CONN_F_READ_WANTS_WRITE;
                    break;
                }
                if (e == SSL_ERROR_ZERO_RETURN) {
                    eof = 1;
                    break;
                }
                if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0) {
                    eof = 1; /* EOF without close_notify */
                    break;
                }
                c->sys_errno = errno;
                record_tls_error(c);
                if (got)
                    c->h->on_read(c);
                fail_now(c, c->tls_error ? DP_CONN_CLOSE_TLS_ERROR : DP_CONN_CLOSE_RESET);
                return -1;
            }
        } else {
            n = read(c->fd, dst, room);
            if (n == 0) {
                eof = 1;
                break;
            }
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                if (errno == EINTR)
                    continue;
                c->sys_errno = errno;
                if (got)
                    c->h->on_read(c);
                fail_now(c, DP_CONN_CLOSE_RESET);
                return -1;
            }
            drained = (size_t)n < room;
        }
        dp_buf_commit(&c->in, (size_t)n);
        got += (size_t)n;
        c->bytes_read += (uint64_t)n;
        /* The socket had less than we asked for: it is empty now, and the
         * level-triggered loop tells us when it is not. */
        if (drained)
            break;
    }
    /* Stopped by the budget or the limit, not by an empty socket: with
     * read-ahead, OpenSSL may hold records it already took from the socket,
     * and an empty socket announces nothing (an upload's last records sat
     * there until the client gave up). io_cb reads again from the loop. */
    if (c->ssl && got > 0 && (got >= READ_BUDGET || dp_buf_size(&c->in) >= limit) && SSL_has_pending(c->ssl))
        c->flags |= DP_CONN_F_READ_AGAIN;
    if (c->flags & DP_CONN_F_LINGER) {
        dp_buf_release(&c->in);
        if (eof || c->bytes_read - c->linger_from > LINGER_MAX_BYTES) {
            fail_now(c, DP_CONN_CLOSE_LOCAL);
            return -1;
        }
        return 0;
    }
    if (eof)
        c->flags |= DP_CONN_F_EOF;
    /* Also when nothing new arrived but input is waiting: the owner paused
     * with bytes left (a pipelined request) and resumed. */
    if (got || eof || dp_buf_size(&c->in) > 0)
        c->h->on_read(c);
    if (c->flags & DP_CONN_F_CLOSED)
        return -1;
    /* An idle connection keeps no input buffer (the last read reserved one
     * that got nothing). */
    if (dp_buf_size(&c->in) == 0)
        dp_buf_release(&c->in);
    /* The owner saw the EOF in on_read and did not close: keep writing what
     * it queued (a response), then close. */
    if (eof && !(c->flags & (DP_CONN_F_CLOSING | DP_CONN_F_HALF_OPEN))) {
        if (dp_buf_size(&c->out) + dp_buf_size(&c->wire) == 0) {
            fail_now(c, DP_CONN_CLOSE_EOF);
            return -1;
        }
        c->flags |= DP_CONN_F_CLOSING; /* io_cb finishes it when all is out */
    }
    return 0;
}

/* Sends c->wire. Returns 0 (all sent, or the socket is full and
 * DP_CONN_F_WBLOCKED is set), or -1 on a socket error (c->sys_errno). */
static int send_wire(struct dp_conn *c)
{
    while (dp_buf_size(&c->wire) > 0) {
        ssize_t n = send(c->fd, dp_buf_head(&c->wire), dp_buf_size(&c->wire), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                c->flags |= DP_CONN_F_WBLOCKED;
                return 0;
            }
            c->sys_errno = errno;
            return -1;
        }
        dp_buf_consume(&c->wire, (size_t)n);
    }
    c->flags &= ~DP_CONN_F_WBLOCKED;
    return 0;
}

/* Moves c->out into c->wire, as TLS records or as plaintext, until c->out
 * is empty or c->wire reaches WIRE_MAX. Returns 0, or -1 on a TLS error. */
static int seal(struct dp_conn *c)
{
    if (c->h->on_queued) {
        uint64_t queued = c->bytes_written + dp_buf_size(&c->out);
        if (queued > c->queued_seen) {
            size_t n = (size_t)(queued - c->queued_seen);
            c->queued_seen = queued;
            if (c->h->on_queued(c, c->out.data + c->out.len - n, n) < 0) {
                c->flags |= DP_CONN_F_TAP_CLOSE;
                return -1;
            }
        }
    }
    if (c->ssl == NULL) {
        size_t n = dp_buf_size(&c->out);
        if (n == 0)
            return 0;
        if (dp_buf_size(&c->wire) == 0) {
            /* Hand the block over instead of copying it. */
            struct dp_buf t = c->wire;
            c->wire = c->out;
            c->out = t;
            dp_buf_release(&c->out);
        } else {
            size_t room = WIRE_MAX > dp_buf_size(&c->wire) ? WIRE_MAX - dp_buf_size(&c->wire) : 0;
            if (n > room)
                n = room;
            if (n == 0)
                return 0;
            if (dp_buf_append(&c->wire, dp_buf_head(&c->out), n) < 0)
                return -1;
            dp_buf_consume(&c->out, n);
        }
        c->bytes_written += (uint64_t)n;
        return 0;
    }
    c->flags &= ~DP_CONN_F_WRITE_WANTS_READ;
    while (dp_buf_size(&c->out) > 0 && dp_buf_size(&c->wire) < WIRE_MAX) {
        size_t len = dp_buf_size(&c->out);
        if (len > SEAL_CHUNK)
            len = SEAL_CHUNK;
        clear_errors();
        int r = SSL_write(c->ssl, dp_buf_head(&c->out), (int)len);
        if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ) {
                c->flags |= DP_CONN_F_WRITE_WANTS_READ;
                return 0;
            }
            /* The BIO never refuses a write, so WANT_WRITE is an error too. */
            c->sys_errno = errno;
            record_tls_error(c);
            return -1;
        }
        c->bytes_written += (uint64_t)r;
        dp_buf_consume(&c->out, (size_t)r);
    }
    return 0;
}

/* Seals and sends until c->out is empty or the socket refuses more.
 * Returns 0, or -1 on an error (c->sys_errno, c->tls_error), the
 * connection still open. */
static int write_now(struct dp_conn *c)
{
    for (;;) {
        if (seal(c) < 0 || send_wire(c) < 0)
            return -1;
        if ((c->flags & (DP_CONN_F_WBLOCKED | DP_CONN_F_WRITE_WANTS_READ)) || dp_buf_size(&c->out) == 0)
            return 0;
    }
}

static enum dp_conn_close_reason write_error(const struct dp_conn *c)
{
    if (c->flags & DP_CONN_F_TAP_CLOSE)
        return DP_CONN_CLOSE_LOCAL;
    return c->tls_error ? DP_CONN_CLOSE_TLS_ERROR : DP_CONN_CLOSE_RESET;
}

/* What OpenSSL wrote while we called it for something else (a handshake
 * flight, an alert, a ticket) goes with the send queue. Returns 0, or -1
 * when the connection was closed. */
static int queue_wire(struct dp_conn *c)
{
    if (dp_buf_size(&c->wire) == 0 || (c->flags & (DP_CONN_F_WBLOCKED | DP_CONN_F_CLOSED)))
        return 0;
    if (sq_add(c) == 0)
        return 0;
    if (send_wire(c) < 0) {
        fail_now(c, DP_CONN_CLOSE_RESET);
        return -1;
    }
    return 0;
}

/* Everything queued before a graceful close is out: finish it. */
static int closing_ready(const struct dp_conn *c)
{
    return (c->flags & DP_CONN_F_CLOSING) && !(c->flags & (DP_CONN_F_LINGER | DP_CONN_F_WBLOCKED)) &&
           dp_buf_size(&c->out) == 0;
}

/* The send queue: runs before the loop waits, once every callback of the
 * iteration has had its say. What each connection's owner queued becomes
 * TLS records here (one per 16 KiB, not one per flush) and leaves in one
 * send. */
/* dp_conn_shutdown_write's FIN, once everything queued before it is out. */
static void maybe_shut_wr(struct dp_conn *c)
{
    if ((c->flags & (DP_CONN_F_SHUT_WR | DP_CONN_F_WR_DONE | DP_CONN_F_CLOSED | DP_CONN_F_CLOSING)) !=
            DP_CONN_F_SHUT_WR ||
        dp_buf_size(&c->out) > 0 || (c->flags & DP_CONN_F_WBLOCKED))
        return;
    if (c->ssl && !(c->flags & DP_CONN_F_NOTIFIED)) {
        c->flags |= DP_CONN_F_NOTIFIED;
        clear_errors();
        SSL_shutdown(c->ssl); /* our close_notify, sealed into c->wire */
    }
    if (send_wire(c) < 0 || (c->flags & DP_CONN_F_WBLOCKED))
        return; /* the rest goes with EV_WRITE, which calls here again */
    shutdown(c->fd, SHUT_WR);
    c->flags |= DP_CONN_F_WR_DONE;
}

static void sq_run(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    while (sq.head) {
        struct dp_conn *c = sq.head;
        sq_remove(c);
        if (c->flags & DP_CONN_F_CLOSED)
            continue;
        if (!(c->flags & DP_CONN_F_WBLOCKED) && write_now(c) < 0) {
            fail_now(c, write_error(c));
            continue;
        }
        if (closing_ready(c)) {
            finish_graceful(c);
            if (c->flags & DP_CONN_F_CLOSED)
                continue;
        }
        maybe_shut_wr(c);
        update_watch(c);
        if ((c->flags & DP_CONN_F_WANT_DRAIN) && dp_buf_size(&c->out) == 0 &&
            !(c->flags & (DP_CONN_F_WBLOCKED | DP_CONN_F_CLOSING)) && c->h->on_drained) {
            /* The owner waits for room and got it without a writable
             * event: tell it (it may queue more, and so this loop runs
             * again for it before the loop waits). */
            c->flags &= ~DP_CONN_F_WANT_DRAIN;
            c->h->on_drained(c);
        }
    }
    ev_prepare_stop(loop, w);
}

static void finish_graceful(struct dp_conn *c)
{
    if (!(c->flags & DP_CONN_F_NOTIFIED)) {
        c->flags |= DP_CONN_F_NOTIFIED;
        if (c->ssl && (c->flags & DP_CONN_F_ESTABLISHED)) {
            clear_errors();
            SSL_shutdown(c->ssl); /* one close_notify; we do not wait for the peer's */
        }
    }
    /* What is sealed goes before the FIN. */
    if (send_wire(c) < 0) {
        fail_now(c, DP_CONN_CLOSE_LOCAL);
        return;
    }
    if (c->flags & DP_CONN_F_WBLOCKED) {
        update_watch(c);
        return;
    }
    if (c->flags & DP_CONN_F_EOF) {
        fail_now(c, DP_CONN_CLOSE_LOCAL);
        return;
    }
    /* Lingering close: shut our side and discard what the peer still sends,
     * so unread input does not turn our close into an RST that destroys the
     * response in flight. */
    shutdown(c->fd, SHUT_WR);
    c->flags |= DP_CONN_F_LINGER;
    c->linger_from = c->bytes_read;
    c->flags &= ~DP_CONN_F_PAUSED;
    ev_timer_stop(c->loop, &c->timer);
    ev_timer_set(&c->timer, LINGER_SECONDS, 0.);
    ev_timer_start(c->loop, &c->timer);
    update_watch(c);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct dp_conn *c = w->data;

    if (c->flags & DP_CONN_F_PENDING) {
        c->flags &= ~DP_CONN_F_PENDING;
        c->h->on_close(c, c->close_reason);
        return;
    }
    if (c->flags & DP_CONN_F_CLOSED)
        return;

    if (c->flags & DP_CONN_F_CONNECTING) {
        if (!(revents & EV_WRITE))
            return;
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            c->sys_errno = err;
            fail_now(c, DP_CONN_CLOSE_CONNECT_FAIL);
            return;
        }
        c->flags &= ~DP_CONN_F_CONNECTING;
        if (c->ssl) {
            c->flags |= DP_CONN_F_HANDSHAKE;
            if (do_handshake(c) < 0 || queue_wire(c) < 0)
                return;
        } else {
            established(c);
            if (c->flags & DP_CONN_F_CLOSED)
                return;
        }
        update_watch(c);
        return;
    }

    /* Sealed bytes the socket refused before. */
    int progressed = 0;
    if ((revents & EV_WRITE) && (c->flags & DP_CONN_F_WBLOCKED)) {
        if (send_wire(c) < 0) {
            fail_now(c, DP_CONN_CLOSE_RESET);
            return;
        }
        progressed = 1;
    }

    int want_read = (revents & EV_READ) && !(c->flags & DP_CONN_F_WRITE_WANTS_READ);
    int want_write = (revents & EV_WRITE) || ((revents & EV_READ) && (c->flags & DP_CONN_F_WRITE_WANTS_READ));
    if (c->flags & DP_CONN_F_HANDSHAKE) {
        if (do_handshake(c) < 0)
            return;
        if (c->flags & DP_CONN_F_HANDSHAKE) {
            if (queue_wire(c) == 0)
                update_watch(c);
            return;
        }
        /* Read-ahead may hold the first request, which came with the
         * handshake's last flight: no readiness event will announce it. */
        if (SSL_has_pending(c->ssl))
            want_read = 1;
        want_write = 1; /* what the owner queued meanwhile */
    }
    if ((revents & EV_WRITE) && (c->flags & DP_CONN_F_READ_WANTS_WRITE))
        want_read = 1;

    if (want_write && dp_buf_size(&c->out) > 0 && !(c->flags & DP_CONN_F_WBLOCKED)) {
        if (write_now(c) < 0) {
            fail_now(c, write_error(c));
            return;
        }
        progressed = 1;
    }
    if (progressed && dp_buf_size(&c->out) == 0 && !(c->flags & DP_CONN_F_CLOSING) && c->h->on_drained) {
        c->flags &= ~DP_CONN_F_WANT_DRAIN;
        c->h->on_drained(c);
        if (c->flags & DP_CONN_F_CLOSED)
            return;
    }
    if (progressed)
        maybe_shut_wr(c);
    /* Everything queued before a graceful close is out (possibly written by
     * dp_conn_flush before this event): finish the close. */
    if (closing_ready(c)) {
        finish_graceful(c);
        if (c->flags & DP_CONN_F_CLOSED)
            return;
    }
    if (want_read && (!(c->flags & DP_CONN_F_PAUSED) || (c->flags & DP_CONN_F_LINGER))) {
        if (do_read(c) < 0)
            return;
        if (closing_ready(c)) {
            finish_graceful(c);
            if (c->flags & DP_CONN_F_CLOSED)
                return;
        }
    }
    if (queue_wire(c) < 0)
        return;
    update_watch(c);
    /* After update_watch, which drops the pending events of a watcher it
     * restarts. A paused owner is fed by dp_conn_resume_read instead. */
    if ((c->flags & DP_CONN_F_READ_AGAIN) && !(c->flags & (DP_CONN_F_CLOSED | DP_CONN_F_PAUSED | DP_CONN_F_EOF))) {
        c->flags &= ~DP_CONN_F_READ_AGAIN;
        ev_feed_event(c->loop, &c->io, EV_READ);
    }
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct dp_conn *c = w->data;
    if (c->flags & DP_CONN_F_CLOSED)
        return;
    if (c->flags & DP_CONN_F_LINGER) {
        fail_now(c, DP_CONN_CLOSE_LOCAL);
        return;
    }
    if (c->deadline == 0)
        return; /* disarmed since it was started */
    ev_tstamp left = c->deadline - ev_now(loop);
    if (left > 0) { /* pushed back since it was started */
        ev_timer_set(&c->timer, left, 0.);
        ev_timer_start(loop, &c->timer);
        return;
    }
    c->deadline = 0;
    if (c->h->on_timeout)
        c->h->on_timeout(c);
    else
        fail_now(c, DP_CONN_CLOSE_TIMEOUT);
}

void dp_conn_init_accepted(struct dp_conn *c, struct ev_loop *loop, int fd, SSL *ssl,
                           const struct dp_conn_handler *h, void *owner)
{
    common_init(c, loop, fd, ssl, h, owner);
    c->flags |= DP_CONN_F_SERVER;
    set_nonblock(fd);
    set_nodelay(fd);
    if (ssl) {
        if (attach_bio(c) < 0) {
            fail_later(c, DP_CONN_CLOSE_NOMEM);
            return;
        }
        SSL_set_accept_state(ssl);
        c->flags |= DP_CONN_F_HANDSHAKE;
        update_watch(c);
    } else {
        c->flags |= DP_CONN_F_ESTABLISHED;
        update_watch(c);
    }
}

int dp_conn_connect(struct dp_conn *c, struct ev_loop *loop, const struct sockaddr *addr,
                    socklen_t addrlen, SSL *ssl, const struct dp_conn_handler *h, void *owner)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    common_init(c, loop, fd, ssl, h, owner);
    if (fd < 0) {
        c->sys_errno = errno;
        fail_later(c, DP_CONN_CLOSE_CONNECT_FAIL);
        return -1;
    }
    set_nodelay(fd);
    if (ssl) {
        if (attach_bio(c) < 0) {
            fail_later(c, DP_CONN_CLOSE_NOMEM);
            return 0;
        }
        SSL_set_connect_state(ssl);
    }
    if (connect(fd, addr, addrlen) < 0 && errno != EINPROGRESS) {
        c->sys_errno = errno;
        fail_later(c, DP_CONN_CLOSE_CONNECT_FAIL);
        return 0;
    }
    c->flags |= DP_CONN_F_CONNECTING;
    update_watch(c);
    return 0;
}

void dp_conn_flush(struct dp_conn *c)
{
    if (c->flags & (DP_CONN_F_CLOSED | DP_CONN_F_CONNECTING | DP_CONN_F_HANDSHAKE)) {
        if (!(c->flags & DP_CONN_F_CLOSED))
            update_watch(c);
        return;
    }
    /* Sealed and sent from the send queue, unless there is a lot already
     * (or the queue is full): then now, so the owner sees congestion. */
    if (!(c->flags & DP_CONN_F_WBLOCKED) &&
        (dp_buf_size(&c->out) + dp_buf_size(&c->wire) >= WIRE_MAX || sq_add(c) < 0) && write_now(c) < 0) {
        fail_later(c, write_error(c));
        return;
    }
    update_watch(c);
    /* Finish a graceful close from the loop: on_close must not run inside
     * this call. (A feed must follow update_watch: stopping a watcher drops
     * its pending events.) */
    if (closing_ready(c) && sq_add(c) < 0)
        ev_feed_event(c->loop, &c->io, EV_WRITE);
}

void dp_conn_pause_read(struct dp_conn *c)
{
    c->flags |= DP_CONN_F_PAUSED;
    update_watch(c);
}

void dp_conn_resume_read(struct dp_conn *c)
{
    if (!(c->flags & DP_CONN_F_PAUSED))
        return;
    c->flags &= ~DP_CONN_F_PAUSED;
    update_watch(c);
    /* TLS may hold decrypted bytes that no readiness event will announce,
     * and c->in may hold bytes the owner could not take before. */
    if (!(c->flags & DP_CONN_F_CLOSED) &&
        ((c->ssl && SSL_has_pending(c->ssl)) || dp_buf_size(&c->in) > 0))
        ev_feed_event(c->loop, &c->io, EV_READ);
}

void dp_conn_set_timeout(struct dp_conn *c, double seconds)
{
    if (c->flags & (DP_CONN_F_CLOSED | DP_CONN_F_LINGER))
        return;
    /* Requests re-arm the idle timeout all the time; moving a deadline
     * later costs no timer-heap operation: the timer, due earlier, finds
     * the new deadline when it fires and re-arms for the rest. */
    if (seconds <= 0) {
        c->deadline = 0;
        return;
    }
    ev_tstamp now = ev_now(c->loop);
    c->deadline = now + seconds;
    if (ev_is_active(&c->timer)) {
        if (ev_timer_remaining(c->loop, &c->timer) <= seconds)
            return;
        ev_timer_stop(c->loop, &c->timer);
    }
    ev_timer_set(&c->timer, seconds, 0.);
    ev_timer_start(c->loop, &c->timer);
}

void dp_conn_close(struct dp_conn *c, enum dp_conn_close_reason why)
{
    if (c->flags & DP_CONN_F_CLOSED)
        return;
    c->close_reason = why;
    /* What the owner flushed would have been on its way already without the
     * send queue: seal it, and close_fd tries to send it. */
    if (dp_buf_size(&c->out) > 0 && c->fd >= 0 &&
        !(c->flags & (DP_CONN_F_WBLOCKED | DP_CONN_F_CONNECTING | DP_CONN_F_HANDSHAKE))) {
        unsigned long tls_error = c->tls_error;
        int sys_errno = c->sys_errno;
        seal(c);
        c->tls_error = tls_error;
        c->sys_errno = sys_errno;
    }
    close_fd(c);
    /* The owner asked: no on_close for it, but drop a pending fed event. */
    ev_clear_pending(c->loop, &c->io);
}

void dp_conn_shutdown_write(struct dp_conn *c)
{
    if (c->flags & (DP_CONN_F_CLOSED | DP_CONN_F_CLOSING | DP_CONN_F_SHUT_WR))
        return;
    c->flags |= DP_CONN_F_SHUT_WR;
    if (c->flags & (DP_CONN_F_CONNECTING | DP_CONN_F_HANDSHAKE))
        return; /* after the handshake, with the first flush */
    dp_conn_flush(c);
    maybe_shut_wr(c);
}

void dp_conn_close_graceful(struct dp_conn *c)
{
    if (c->flags & (DP_CONN_F_CLOSED | DP_CONN_F_CLOSING))
        return;
    c->flags |= DP_CONN_F_CLOSING | DP_CONN_F_PAUSED;
    if (c->flags & (DP_CONN_F_CONNECTING | DP_CONN_F_HANDSHAKE)) {
        fail_later(c, DP_CONN_CLOSE_LOCAL);
        return;
    }
    dp_conn_flush(c);
}

void dp_conn_free(struct dp_conn *c)
{
    if (!(c->flags & DP_CONN_F_CLOSED))
        dp_conn_close(c, DP_CONN_CLOSE_LOCAL);
    ev_clear_pending(c->loop, &c->io);
    ev_clear_pending(c->loop, &c->timer);
    if (c->ssl) {
        /* SSL_free drops the session from the cache unless a close_notify
         * went out: keep it for resumption when the connection ended
         * without a TLS failure (as nginx does). */
        if ((c->flags & DP_CONN_F_ESTABLISHED) && c->close_reason != DP_CONN_CLOSE_TLS_ERROR)
            SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    dp_buf_release(&c->in);
    dp_buf_release(&c->out);
    dp_buf_release(&c->wire);
}

void dp_conn_thread_done(void)
{
    while (sq.head) {
        struct dp_conn *c = sq.head;
        sq_remove(c);
        if (!(c->flags & (DP_CONN_F_CLOSED | DP_CONN_F_WBLOCKED)))
            send_wire(c);
    }
    if (ev_is_active(&sq.w))
        ev_prepare_stop(sq.loop, &sq.w);
}

const char *dp_conn_close_reason_str(enum dp_conn_close_reason r)
{
    switch (r) {
    case DP_CONN_CLOSE_LOCAL: return "local close";
    case DP_CONN_CLOSE_EOF: return "peer closed";
    case DP_CONN_CLOSE_RESET: return "connection reset";
    case DP_CONN_CLOSE_TLS_ERROR: return "TLS error";
    case DP_CONN_CLOSE_CONNECT_FAIL: return "connection failure";
    case DP_CONN_CLOSE_TIMEOUT: return "timeout";
    case DP_CONN_CLOSE_NOMEM: return "out of memory";
    }
    return "?";
}
