#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>

/* How much one readiness event may read before yielding to other
 * connections on the loop. */
#define READ_BUDGET (4 * DP_BUF_BLOCK)
#define DEFAULT_READ_LIMIT (1024 * 1024)
#define LINGER_SECONDS 2.0

#define DP_CONN_F_LINGER 0x400  /* write side shut, discarding input */
#define DP_CONN_F_PENDING 0x800 /* an internal close awaits delivery */

static void io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

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
        if (dp_buf_size(&c->out) > 0 || (c->flags & DP_CONN_F_READ_WANTS_WRITE))
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
    ev_io_stop(c->loop, &c->io);
    ev_timer_stop(c->loop, &c->timer);
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->flags |= DP_CONN_F_CLOSED;
    dp_buf_release(&c->in);
    dp_buf_release(&c->out);
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
    ERR_clear_error();
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

    c->flags &= ~DP_CONN_F_READ_WANTS_WRITE;
    while (got < READ_BUDGET && dp_buf_size(&c->in) < limit) {
        uint8_t *dst = dp_buf_reserve(&c->in, DP_BUF_BLOCK);
        if (dst == NULL) {
            fail_now(c, DP_CONN_CLOSE_NOMEM);
            return -1;
        }
        size_t room = c->in.cap - c->in.len;
        ssize_t n;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, dst, room > INT32_MAX ? INT32_MAX : (int)room);
            if (r > 0) {
                n = r;
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
        }
        dp_buf_commit(&c->in, (size_t)n);
        got += (size_t)n;
        c->bytes_read += (uint64_t)n;
    }
    if (c->flags & DP_CONN_F_LINGER) {
        dp_buf_release(&c->in);
        if (eof) {
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
    /* The owner saw the EOF in on_read and did not close: keep writing what
     * it queued (a response), then close. */
    if (eof && !(c->flags & DP_CONN_F_CLOSING)) {
        if (dp_buf_size(&c->out) == 0) {
            fail_now(c, DP_CONN_CLOSE_EOF);
            return -1;
        }
        c->flags |= DP_CONN_F_CLOSING;
    }
    return 0;
}

static void finish_graceful(struct dp_conn *c)
{
    if (c->ssl && (c->flags & DP_CONN_F_ESTABLISHED)) {
        ERR_clear_error();
        SSL_shutdown(c->ssl); /* one close_notify; we do not wait for the peer's */
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
    c->flags &= ~DP_CONN_F_PAUSED;
    ev_timer_stop(c->loop, &c->timer);
    ev_timer_set(&c->timer, LINGER_SECONDS, 0.);
    ev_timer_start(c->loop, &c->timer);
}

/* Returns 0, or -1 when the connection was closed. internal: called from our
 * own callback (errors delivered now) or from the owner (errors deferred). */
static int do_write(struct dp_conn *c, int internal)
{
    c->flags &= ~DP_CONN_F_WRITE_WANTS_READ;
    while (dp_buf_size(&c->out) > 0) {
        size_t len = dp_buf_size(&c->out);
        ssize_t n;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_write(c->ssl, dp_buf_head(&c->out), len > INT32_MAX ? INT32_MAX : (int)len);
            if (r > 0) {
                n = r;
            } else {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE)
                    break;
                if (e == SSL_ERROR_WANT_READ) {
                    c->flags |= DP_CONN_F_WRITE_WANTS_READ;
                    break;
                }
                c->sys_errno = errno;
                record_tls_error(c);
                if (internal)
                    fail_now(c, DP_CONN_CLOSE_RESET);
                else
                    fail_later(c, DP_CONN_CLOSE_RESET);
                return -1;
            }
        } else {
            n = send(c->fd, dp_buf_head(&c->out), len, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                if (errno == EINTR)
                    continue;
                c->sys_errno = errno;
                if (internal)
                    fail_now(c, DP_CONN_CLOSE_RESET);
                else
                    fail_later(c, DP_CONN_CLOSE_RESET);
                return -1;
            }
        }
        c->bytes_written += (uint64_t)n;
        dp_buf_consume(&c->out, (size_t)n);
    }
    return 0;
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
            if (do_handshake(c) < 0)
                return;
        } else {
            established(c);
            if (c->flags & DP_CONN_F_CLOSED)
                return;
        }
        update_watch(c);
        return;
    }

    if (c->flags & DP_CONN_F_HANDSHAKE) {
        if (do_handshake(c) < 0)
            return;
        if (c->flags & DP_CONN_F_HANDSHAKE) {
            update_watch(c);
            return;
        }
    }

    int want_read = (revents & EV_READ) && !(c->flags & DP_CONN_F_WRITE_WANTS_READ);
    int want_write = (revents & EV_WRITE) || ((revents & EV_READ) && (c->flags & DP_CONN_F_WRITE_WANTS_READ));
    if ((revents & EV_WRITE) && (c->flags & DP_CONN_F_READ_WANTS_WRITE))
        want_read = 1;

    if (want_write && dp_buf_size(&c->out) > 0) {
        if (do_write(c, 1) < 0)
            return;
        if (dp_buf_size(&c->out) == 0 && !(c->flags & DP_CONN_F_CLOSING) && c->h->on_drained) {
            c->h->on_drained(c);
            if (c->flags & DP_CONN_F_CLOSED)
                return;
        }
    }
    /* Everything queued before a graceful close is out (possibly written by
     * dp_conn_flush before this event): finish the close. */
    if ((c->flags & DP_CONN_F_CLOSING) && !(c->flags & DP_CONN_F_LINGER) &&
        dp_buf_size(&c->out) == 0) {
        finish_graceful(c);
        if (c->flags & DP_CONN_F_CLOSED)
            return;
    }
    if (want_read && (!(c->flags & DP_CONN_F_PAUSED) || (c->flags & DP_CONN_F_LINGER))) {
        if (do_read(c) < 0)
            return;
        if ((c->flags & DP_CONN_F_CLOSING) && !(c->flags & DP_CONN_F_LINGER) &&
            dp_buf_size(&c->out) == 0) {
            finish_graceful(c);
            if (c->flags & DP_CONN_F_CLOSED)
                return;
        }
    }
    update_watch(c);
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
        SSL_set_fd(ssl, fd);
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
        SSL_set_fd(ssl, fd);
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
    if (do_write(c, 0) < 0)
        return;
    if (dp_buf_size(&c->out) == 0 && (c->flags & DP_CONN_F_CLOSING) &&
        !(c->flags & DP_CONN_F_LINGER)) {
        /* Finish from the loop: on_close must not run inside this call. */
        ev_feed_event(c->loop, &c->io, EV_WRITE);
    }
    update_watch(c);
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
        ((c->ssl && SSL_pending(c->ssl) > 0) || dp_buf_size(&c->in) > 0))
        ev_feed_event(c->loop, &c->io, EV_READ);
}

void dp_conn_set_timeout(struct dp_conn *c, double seconds)
{
    if (c->flags & (DP_CONN_F_CLOSED | DP_CONN_F_LINGER))
        return;
    ev_timer_stop(c->loop, &c->timer);
    if (seconds > 0) {
        ev_timer_set(&c->timer, seconds, 0.);
        ev_timer_start(c->loop, &c->timer);
    }
}

void dp_conn_close(struct dp_conn *c, enum dp_conn_close_reason why)
{
    if (c->flags & DP_CONN_F_CLOSED)
        return;
    c->close_reason = why;
    close_fd(c);
    /* The owner asked: no on_close for it, but drop a pending fed event. */
    ev_clear_pending(c->loop, &c->io);
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
    if (!(c->flags & DP_CONN_F_CLOSED) && dp_buf_size(&c->out) == 0)
        ev_feed_event(c->loop, &c->io, EV_WRITE);
}

void dp_conn_free(struct dp_conn *c)
{
    if (!(c->flags & DP_CONN_F_CLOSED))
        dp_conn_close(c, DP_CONN_CLOSE_LOCAL);
    ev_clear_pending(c->loop, &c->io);
    ev_clear_pending(c->loop, &c->timer);
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    dp_buf_release(&c->in);
    dp_buf_release(&c->out);
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
