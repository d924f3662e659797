/*
 * A non-blocking stream socket with optional TLS, driven by one worker's
 * libev loop. Used for downstream (accepted) and upstream (connected)
 * connections alike.
 *
 * Reading: while not paused, bytes are read into conn->in and the handler's
 * on_read is called; the handler consumes what it can from conn->in.
 * Writing: the owner appends to conn->out and calls dp_conn_flush(); the
 * connection seals it (TLS records, or the plaintext bytes as they are) into
 * conn->wire at once, so that conn->out is empty again on return unless the
 * socket is congested. What was sealed goes to the socket once per loop
 * iteration, before the loop next waits (an ev_prepare), so that a response
 * head and its body, or the responses of many HTTP/2 streams, leave in one
 * send. When the socket does not take everything, the connection watches
 * for writability and calls on_drained once conn->out is empty again.
 * Reading: a read that returns less than it asked for means the socket is
 * empty, so the read loop stops there instead of asking again for EAGAIN
 * (the loop is level-triggered: more bytes wake it again).
 * Closing: dp_conn_close() flushes nothing; dp_conn_close_graceful() sends
 * what is in conn->out (and a TLS close_notify) first. In both cases the
 * handler's on_close is called exactly once, from the loop, never from
 * inside a dp_conn_* call made by the owner.
 */
#ifndef LEGATE_DP_CONN_H
#define LEGATE_DP_CONN_H

#include <stdint.h>
#include <sys/socket.h>

#include <ev.h>
#include <openssl/ssl.h>

#include "dataplane/buf.h"

struct dp_conn;

enum dp_conn_close_reason {
    DP_CONN_CLOSE_LOCAL = 0,     /* the owner closed it */
    DP_CONN_CLOSE_EOF,           /* the peer closed cleanly */
    DP_CONN_CLOSE_RESET,         /* read/write error, RST */
    DP_CONN_CLOSE_TLS_ERROR,     /* handshake or record error */
    DP_CONN_CLOSE_CONNECT_FAIL,  /* upstream connect() failed */
    DP_CONN_CLOSE_TIMEOUT,       /* the connection's timer fired */
    DP_CONN_CLOSE_NOMEM,
};

struct dp_conn_handler {
    /** TCP (and TLS, if any) established. */
    void (*on_connected)(struct dp_conn *c);
    /** New bytes in c->in. */
    void (*on_read)(struct dp_conn *c);
    /** The socket took more after refusing some, and c->out is empty:
     *  called on each such writable event (dp_conn_unsent may still be
     *  above zero), never from inside a dp_conn_* call. Also once c->out
     *  is empty after the owner set DP_CONN_F_WANT_DRAIN (it stopped
     *  producing at its limit), however the bytes left: a socket that takes
     *  everything at once gives no writable event. */
    void (*on_drained)(struct dp_conn *c);
    /** The connection is gone; the owner must not touch c afterwards except
     *  to free it with dp_conn_free(). */
    void (*on_close)(struct dp_conn *c, enum dp_conn_close_reason why);
    /** The connection's timer fired (dp_conn_set_timeout). */
    void (*on_timeout)(struct dp_conn *c);
    /** Optional: the n bytes at p (the tail of c->out) were queued since the
     *  last call and are about to be sealed (network filters' write hooks).
     *  Returns 0, or -1 to close the connection (reason LOCAL). */
    int (*on_queued)(struct dp_conn *c, const uint8_t *p, size_t n);
};

struct dp_conn {
    int fd;
    SSL *ssl; /* NULL for plaintext */
    struct ev_loop *loop;
    ev_io io;
    ev_timer timer;
    struct dp_conn *sq_next, **sq_prev; /* in this thread's send queue */
    struct dp_buf in;
    struct dp_buf out;  /* queued by the owner, not yet sealed */
    struct dp_buf wire; /* sealed bytes (ciphertext under TLS) not yet sent */
    const struct dp_conn_handler *h;
    void *owner;
    uint32_t read_limit; /* stop reading when in holds this many bytes (0: default) */
    uint32_t flags; /* DP_CONN_F_* */
    enum dp_conn_close_reason close_reason;
    unsigned long tls_error; /* ERR_get_error() of the failure, if any */
    int sys_errno;
    uint64_t bytes_read;
    uint64_t bytes_written;
    ev_tstamp deadline; /* dp_conn_set_timeout's, or 0; the timer may fire earlier and re-arm */
    uint64_t queued_seen; /* with h->on_queued: bytes_written + size(out) it has seen */
    uint64_t linger_from; /* bytes_read when a lingering close began */
};

#define DP_CONN_F_CONNECTING 0x01 /* TCP connect in progress */
#define DP_CONN_F_HANDSHAKE 0x02  /* TLS handshake in progress */
#define DP_CONN_F_PAUSED 0x04     /* owner asked not to read */
#define DP_CONN_F_CLOSING 0x08    /* graceful close: flush then close */
#define DP_CONN_F_CLOSED 0x10     /* fd closed, on_close pending or done */
#define DP_CONN_F_READ_WANTS_WRITE 0x20
#define DP_CONN_F_WRITE_WANTS_READ 0x40
#define DP_CONN_F_EOF 0x80        /* peer sent EOF / close_notify */
#define DP_CONN_F_SERVER 0x100    /* accepted (TLS server side) */
#define DP_CONN_F_ESTABLISHED 0x200
#define DP_CONN_F_WBLOCKED 0x1000 /* the socket refused sealed bytes: waiting for EV_WRITE */
#define DP_CONN_F_HALF_OPEN 0x8000 /* owner's: the peer's EOF does not close (tunnels) */
#define DP_CONN_F_SHUT_WR 0x10000  /* dp_conn_shutdown_write: our side ends once out */
#define DP_CONN_F_WANT_DRAIN 0x40000 /* owner's: it stopped at its limit; call on_drained once out */
/* 0x400, 0x800, 0x2000, 0x4000: private to conn.c */

/** Initialises c around an accepted fd (made non-blocking here). If ssl is
 *  not NULL the TLS server handshake starts and on_connected follows its
 *  success; a plaintext connection is established on return (no
 *  on_connected). */
void dp_conn_init_accepted(struct dp_conn *c, struct ev_loop *loop, int fd, SSL *ssl,
                           const struct dp_conn_handler *h, void *owner);

/** Starts a non-blocking connect to addr; with ssl, a TLS client handshake
 *  follows. Returns 0, or -1 when the socket could not even be created (the
 *  connection is then closed and on_close will be delivered). */
int dp_conn_connect(struct dp_conn *c, struct ev_loop *loop, const struct sockaddr *addr,
                    socklen_t addrlen, SSL *ssl, const struct dp_conn_handler *h, void *owner);

/** Writes as much of c->out as possible now; watches for the rest. */
void dp_conn_flush(struct dp_conn *c);

void dp_conn_pause_read(struct dp_conn *c);
void dp_conn_resume_read(struct dp_conn *c);

/** (Re)arms the connection's single timer; 0 disarms it. Cheap enough to
 *  call on every request: the timer is lazy (a later deadline only moves a
 *  number; the timer re-arms itself when it fires early). */
void dp_conn_set_timeout(struct dp_conn *c, double seconds);

/** Half-close: once what is queued is out, a TLS close_notify and a FIN
 *  end our direction; reading goes on. */
void dp_conn_shutdown_write(struct dp_conn *c);

void dp_conn_close(struct dp_conn *c, enum dp_conn_close_reason why);
void dp_conn_close_graceful(struct dp_conn *c);

/** Releases what the connection still holds (buffers, SSL). Call from or
 *  after on_close. */
void dp_conn_free(struct dp_conn *c);

/** Bytes the owner handed over that the socket has not taken, for flow
 *  control to compare with its limit: all that is queued or sealed while
 *  the socket refuses more (or TLS waits to read, or the handshake is not
 *  done), and nothing while the connection only waits for the send queue,
 *  which runs before the loop next waits. on_drained follows progress. */
static inline size_t dp_conn_unsent(const struct dp_conn *c)
{
    if (c->sq_prev && !(c->flags & (DP_CONN_F_WBLOCKED | DP_CONN_F_WRITE_WANTS_READ)))
        return 0;
    return dp_buf_size(&c->out) + dp_buf_size(&c->wire);
}

/** True once on_close has been scheduled or delivered. */
static inline int dp_conn_closed(const struct dp_conn *c)
{
    return (c->flags & DP_CONN_F_CLOSED) != 0;
}

/** At the end of a thread that ran connections (after its loop returned):
 *  sends what they sealed and takes them off this thread's send queue. */
void dp_conn_thread_done(void);

const char *dp_conn_close_reason_str(enum dp_conn_close_reason r);

#endif
