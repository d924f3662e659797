/*
 * The downstream HTTP connection manager: accept, TLS-to-codec setup, the
 * connection's timeouts and close, and the entry points streams call,
 * dispatched to the server codec (http1_server.c, http2_server.c) through
 * h->codec. The stream logic (routing, filters, upstream) is in stream.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dataplane/hcm.h"
#include "dataplane/listener.h"
#include "dataplane/overload.h"
#include "dataplane/stream.h"
#include "dataplane/tls.h"
#include "dataplane/worker.h"
#include "dataplane/xfcc.h"
#include "filters/tcp_proxy/tcp_proxy.h"
#include "xds/log.h"

#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN 24
#define HANDSHAKE_TIMEOUT 10.0

static void hcm_on_connected(struct dp_conn *c);
static void hcm_on_read(struct dp_conn *c);
static void hcm_on_drained(struct dp_conn *c);
static void hcm_on_close(struct dp_conn *c, enum dp_conn_close_reason why);
static void hcm_on_timeout(struct dp_conn *c);

static int hcm_on_queued(struct dp_conn *c, const uint8_t *p, size_t n);

static const struct dp_conn_handler hcm_handler = {
    .on_connected = hcm_on_connected,
    .on_read = hcm_on_read,
    .on_drained = hcm_on_drained,
    .on_close = hcm_on_close,
    .on_timeout = hcm_on_timeout,
};

/* The same, for a chain with network filters that watch writes. */
static const struct dp_conn_handler hcm_handler_tapped = {
    .on_connected = hcm_on_connected,
    .on_read = hcm_on_read,
    .on_drained = hcm_on_drained,
    .on_close = hcm_on_close,
    .on_timeout = hcm_on_timeout,
    .on_queued = hcm_on_queued,
};

static void addr_fmt(const struct sockaddr_storage *ss, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        port = ntohs(s4->sin_port);
        snprintf(out, outlen, "%s:%u", ip, port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        port = ntohs(s6->sin6_port);
        snprintf(out, outlen, "[%s]:%u", ip, port);
    } else {
        snprintf(out, outlen, "?");
    }
}

/* "ip:port" in the connection's arena ("?" when unknown). */
static const char *addr_str(struct dp_hcm *h, const struct sockaddr_storage *ss)
{
    char buf[64] = "?";
    addr_fmt(ss, buf, sizeof(buf));
    const char *s = dp_arena_strndup(&h->conn_arena, buf, strlen(buf));
    return s ? s : "?";
}

/* ---- lifecycle ------------------------------------------------------- */

/* Until its codec starts (during the TLS handshake) a connection is
 * treated as an HTTP/1 one with no request: nothing to write or free, and
 * a drain closes it at the drain timeout. */
static const struct dp_server_codec *codec_of(const struct dp_hcm *h)
{
    return h->codec ? h->codec : &dp_http1_server_codec;
}

/* ---- network filters -------------------------------------------------- */

/* The connection manager is the terminal network filter of its chain: the
 * filters before it (connection_limit, ...) run through h->net. */

static void hcm_terminal_read(struct dp_hcm *h);

static void net_deliver(void *owner)
{
    struct dp_hcm *h = owner;
    if (!dp_conn_closed(&h->conn))
        hcm_terminal_read(h);
}

static void net_close(void *owner)
{
    dp_hcm_destroy(owner);
}

static const struct dp_net_owner_ops hcm_net_owner = {
    .deliver = net_deliver,
    .close = net_close,
};

/* Starts the chain's network filters once the chain is known: 0 when the
 * connection may go on, -1 when a filter closes it (connection_limit over
 * its limit, as Envoy's filter does). */
static int net_start(struct dp_hcm *h, const struct dp_filter_chain *fc)
{
    if (fc == NULL || fc->n_net_filters == 0)
        return 0;
    struct dp_net_conn_info ci = {
        .id = h->id,
        .remote = h->remote,
        .local = h->local,
        .listener = h->listener->name,
        .filter_chain = fc->name,
        .tls = fc->tls != NULL,
    };
    if (dp_net_session_start(&h->net, fc->net_filters, fc->n_net_filters, &h->conn, &h->conn_arena, &ci,
                             &hcm_net_owner, h) < 0)
        return -1;
    if (dp_net_session_writes(&h->net) && h->conn.h) {
        h->conn.queued_seen = h->conn.bytes_written + dp_buf_size(&h->conn.out);
        h->conn.h = &hcm_handler_tapped;
    }
    return 0;
}

static int hcm_on_queued(struct dp_conn *c, const uint8_t *p, size_t n)
{
    struct dp_hcm *h = c->owner;
    return dp_net_session_write(&h->net, p, n);
}

static const struct dp_conn_handler *conn_handler(const struct dp_hcm *h)
{
    return dp_net_session_writes(&h->net) ? &hcm_handler_tapped : &hcm_handler;
}

static struct dp_tls_server *select_chain(void *arg, const char *sni, const char *const *alpn,
                                          size_t n_alpn)
{
    struct dp_hcm *h = arg;
    const struct dp_filter_chain *fc =
        dp_listener_match(h->listener, dp_sock_local_port(h->conn.fd), sni, "tls", alpn, n_alpn);
    if (fc == NULL || fc->tls == NULL) {
        LG_D("hcm", "C%llu: no TLS filter chain for SNI \"%s\"", (unsigned long long)h->id,
             sni ? sni : "");
        return NULL;
    }
    if (net_start(h, fc) < 0)
        return NULL; /* the handshake fails: the connection closes */
    h->chain = fc;
    h->cfg = fc->hcm;
    return fc->tls;
}

void dp_hcm_accept(struct dp_worker *w, struct dp_worker_snap *snap, const struct dp_listener *l,
                   const struct dp_filter_chain *fc, int fd, SSL *ssl)
{
    dp_hcm_accept_redirected(w, snap, l, fc, fd, ssl, NULL);
}

void dp_hcm_accept_redirected(struct dp_worker *w, struct dp_worker_snap *snap, const struct dp_listener *l,
                              const struct dp_filter_chain *fc, int fd, SSL *ssl, const struct dp_orig_dst *od)
{
    struct dp_hcm *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        close(fd);
        return;
    }
    h->w = w;
    h->snap = snap;
    /* Addresses, the peer's identity and its XFCC element: about 400
     * bytes for a client certificate (a pool block would keep a page per
     * idle connection). */
    h->conn_arena.first_size = 512;
    dp_worker_snap_pin(snap);
    h->listener = l;
    h->chain = fc;
    h->cfg = fc ? fc->hcm : NULL;
    /* Ids are process-wide so log lines from different workers never share
     * one; one relaxed increment per accepted connection. */
    static uint64_t next_conn_id;
    h->id = __atomic_add_fetch(&next_conn_id, 1, __ATOMIC_RELAXED);

    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    h->remote = h->local = "?";
    if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0)
        h->remote = addr_str(h, &ss);
    len = sizeof(ss);
    if (od) {
        struct dp_orig_dst *o = dp_arena_alloc(&h->conn_arena, sizeof(*o));
        if (o) {
            *o = *od;
            h->orig_dst = o;
        }
        h->local = addr_str(h, &od->addr);
    } else if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
        h->local = addr_str(h, &ss);
    }

    h->next_in_worker = w->conns;
    if (w->conns)
        w->conns->prev_in_worker = h;
    w->conns = h;
    w->n_conns++;
    dp_overload_conn_add(1);
    __atomic_add_fetch(&((struct dp_listener *)l)->cx_open, 1, __ATOMIC_RELAXED);
    dp_stat_add(l->st.cx_total, 1);
    dp_stat_add(l->st.cx_active, 1);
    if (net_start(h, fc) < 0) {
        dp_conn_init_accepted(&h->conn, w->loop, fd, ssl, &hcm_handler, h);
        dp_hcm_destroy(h);
        return;
    }

    if (fc == NULL && ssl == NULL) {
        ssl = dp_tls_server_new_ssl(dp_listener_first_tls(l), select_chain, h);
        if (ssl == NULL) {
            LG_E("hcm", "C%llu: cannot create a TLS session", (unsigned long long)h->id);
            dp_conn_init_accepted(&h->conn, w->loop, fd, NULL, &hcm_handler, h);
            dp_hcm_destroy(h);
            return;
        }
    }
    h->conn.read_limit = 0;
    dp_conn_init_accepted(&h->conn, w->loop, fd, ssl, conn_handler(h), h);
    h->conn.read_limit = l->per_connection_buffer_limit;
    LG_T("hcm", "C%llu: accepted %s on %s (%s)", (unsigned long long)h->id, h->remote, l->name,
         ssl ? "tls" : "plaintext");
    if (ssl) {
        dp_conn_set_timeout(&h->conn, HANDSHAKE_TIMEOUT);
    } else {
        h->peer.tls = 0;
        hcm_on_connected(&h->conn);
    }
}

static void hcm_reap(struct dp_defer *d)
{
    free((char *)d - offsetof(struct dp_hcm, defer));
}

static void free_hcm(struct dp_hcm *h)
{
    dp_net_session_end(&h->net);
    dp_stat_add(h->listener->st.cx_active, -1);
    dp_worker_conn_closed(h->w, h);
    codec_of(h)->destroy(h);
    dp_conn_free(&h->conn);
    dp_arena_reset(&h->conn_arena);
    dp_worker_snap_unpin(h->w, h->snap);
    /* The memory goes after this loop iteration: callers up the stack (the
     * connection's own callback) may still look at h->conn. */
    dp_worker_defer(h->w, &h->defer, hcm_reap);
}

void dp_hcm_reset_streams(struct dp_hcm *h)
{
    while (h->streams) {
        struct dp_stream *s = h->streams;
        dp_stream_downstream_reset(s);
        if (h->streams == s) /* not freed by the reset: free it here */
            dp_stream_free(s);
    }
    if (codec_of(h)->streams_reset)
        codec_of(h)->streams_reset(h);
}

void dp_hcm_destroy(struct dp_hcm *h)
{
    dp_conn_close(&h->conn, DP_CONN_CLOSE_LOCAL);
    dp_hcm_reset_streams(h);
    free_hcm(h);
}

static void hcm_on_close(struct dp_conn *c, enum dp_conn_close_reason why)
{
    struct dp_hcm *h = c->owner;
    if (why == DP_CONN_CLOSE_TLS_ERROR && !(c->flags & DP_CONN_F_ESTABLISHED)) {
        const char *reason = c->ssl ? dp_tls_failure_reason(c->ssl, c->tls_error) : "?";
        enum dp_tls_fail kind = c->ssl ? dp_tls_failure_kind(c->ssl, c->tls_error) : DP_TLS_FAIL_OTHER;
        dp_stat_add(kind == DP_TLS_FAIL_NO_CERT  ? h->listener->st.ssl_no_cert
                    : kind == DP_TLS_FAIL_SAN    ? h->listener->st.ssl_verify_san
                    : kind == DP_TLS_FAIL_VERIFY ? h->listener->st.ssl_verify_error
                                                 : h->listener->st.ssl_connection_error,
                    1);
        /* The peer's subject helps find the client; never key material. */
        const char *subject = c->ssl ? dp_tls_peer_subject_seen(c->ssl) : NULL;
        /* Refused certificates are worth an info line; a peer that went
         * away (a TCP health check, a scanner) is not. */
        LG(kind == DP_TLS_FAIL_OTHER ? LG_DEBUG : LG_INFO, "hcm",
           "C%llu: TLS handshake with %s on %s failed: %s; client certificate: %s",
                 (unsigned long long)h->id, h->remote, h->listener->name, reason, subject ? subject : "none");
    } else {
        LG_T("hcm", "C%llu: closed (%s)", (unsigned long long)h->id, dp_conn_close_reason_str(why));
    }
    dp_hcm_reset_streams(h);
    free_hcm(h);
}

void dp_hcm_close_graceful(struct dp_hcm *h)
{
    dp_conn_close_graceful(&h->conn);
}

static void hcm_on_timeout(struct dp_conn *c)
{
    struct dp_hcm *h = c->owner;
    if (!(c->flags & DP_CONN_F_ESTABLISHED)) {
        LG_D("hcm", "C%llu: TLS handshake timeout", (unsigned long long)h->id);
        dp_hcm_destroy(h);
        return;
    }
    const struct dp_server_codec *sc = codec_of(h);
    if (sc->on_timeout && sc->on_timeout(h))
        return; /* HTTP/1: the request head did not arrive in time */
    if (h->n_streams == 0) {
        LG_T("hcm", "C%llu: idle timeout", (unsigned long long)h->id);
        if (sc->idle_close)
            sc->idle_close(h);
        dp_hcm_close_graceful(h);
        return;
    }
    if (sc->arm_idle)
        sc->arm_idle(h);
}

/* ---- codec selection --------------------------------------------------- */

static void start_codec(struct dp_hcm *h, const char *alpn)
{
    enum dp_codec_type codec = h->cfg ? h->cfg->codec : DP_CODEC_AUTO;
    dp_conn_set_timeout(&h->conn, 0);
    if (h->chain && h->chain->tcp_proxy) {
        /* The chain's terminal is tcp_proxy: bytes, not HTTP. */
        if (dp_tcp_proxy_codec.start(h) < 0)
            dp_hcm_destroy(h);
        return;
    }
    if (codec == DP_CODEC_HTTP2 || (alpn && strcmp(alpn, "h2") == 0)) {
        if (dp_http2_server_codec.start(h) < 0)
            dp_hcm_destroy(h);
        return;
    }
    if (codec == DP_CODEC_AUTO && alpn == NULL) {
        h->detect = 1; /* decided on the first bytes */
    }
    dp_http1_server_codec.start(h);
}

static void hcm_on_connected(struct dp_conn *c)
{
    struct dp_hcm *h = c->owner;
    char alpn_buf[32];
    const char *alpn = NULL;

    if (c->ssl) {
        if (h->chain == NULL || (h->cfg == NULL && h->chain->tcp_proxy == NULL)) {
            dp_hcm_destroy(h);
            return;
        }
        dp_tls_peer_identity(c->ssl, &h->peer, &h->conn_arena,
                             h->cfg && (h->cfg->xfcc_fields & (DP_XFCC_F_CERT | DP_XFCC_F_CHAIN)) != 0);
        dp_stat_add(h->listener->st.ssl_handshake, 1);
        if (SSL_session_reused(c->ssl))
            dp_stat_add(h->listener->st.ssl_session_reused, 1);
        alpn = dp_tls_alpn(c->ssl, alpn_buf, sizeof(alpn_buf));
        LG_T("hcm", "C%llu: TLS established (%s, alpn %s, client cert %s)",
             (unsigned long long)h->id, h->peer.tls_version ? h->peer.tls_version : "?",
             alpn ? alpn : "none",
             h->peer.presented ? (h->peer.subject ? h->peer.subject : "?") : "none");
    }
    start_codec(h, alpn);
}

static void hcm_on_read(struct dp_conn *c)
{
    struct dp_hcm *h = c->owner;
    if (dp_net_session_reads(&h->net)) {
        int r = dp_net_session_read(&h->net);
        if (r < 0) {
            dp_hcm_destroy(h);
            return;
        }
        if (r == 0)
            return; /* a network filter holds the bytes */
    }
    hcm_terminal_read(h);
}

/* The connection manager's own read: parse what is in conn->in. */
static void hcm_terminal_read(struct dp_hcm *h)
{
    struct dp_conn *c = &h->conn;
    if (h->detect) {
        size_t n = dp_buf_size(&c->in);
        size_t m = n < H2_PREFACE_LEN ? n : H2_PREFACE_LEN;
        if (memcmp(dp_buf_head(&c->in), H2_PREFACE, m) != 0) {
            h->detect = 0; /* HTTP/1 */
        } else if (n >= H2_PREFACE_LEN) {
            h->detect = 0;
            if (dp_http2_server_codec.start(h) < 0) {
                dp_hcm_destroy(h);
                return;
            }
        } else {
            if (c->flags & DP_CONN_F_EOF)
                dp_hcm_destroy(h);
            return; /* need more bytes */
        }
    }
    h->codec->on_read(h);
}

static void hcm_on_drained(struct dp_conn *c)
{
    struct dp_hcm *h = c->owner;
    codec_of(h)->on_drained(h);
}

void dp_hcm_drain(struct dp_hcm *h)
{
    if (h->draining)
        return;
    codec_of(h)->drain(h);
}

/* ---- codec entry points used by streams ------------------------------- */

void dp_hcm_send_headers(struct dp_stream *s, int end_stream)
{
    struct dp_hcm *h = s->hcm;
    if (s->cfg && s->resp.status >= 100 && s->resp.status < 600)
        dp_stat_add(s->cfg->st.rq_xx[s->resp.status / 100 - 1], 1);
    s->flags |= DP_STREAM_F_RESP_HEADERS_SENT;
    if (end_stream || (s->flags & DP_STREAM_F_HEAD))
        s->flags |= DP_STREAM_F_RESP_COMPLETE;
    h->codec->send_headers(s, end_stream);
}

void dp_hcm_send_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream)
{
    struct dp_hcm *h = s->hcm;
    if (s->flags & DP_STREAM_F_RESP_COMPLETE)
        return; /* HEAD, or already finished */
    if (end_stream)
        s->flags |= DP_STREAM_F_RESP_COMPLETE;
    h->codec->send_data(s, p, n, end_stream);
}

void dp_hcm_send_trailers(struct dp_stream *s)
{
    struct dp_hcm *h = s->hcm;
    LG_T("h2", "C%llu S%llu: trailers to send (flags 0x%x, %zu body bytes waiting)", (unsigned long long)h->id,
         (unsigned long long)s->id, s->flags, dp_buf_size(&s->resp_body));
    if (s->flags & DP_STREAM_F_RESP_COMPLETE)
        return;
    if (!(s->flags & DP_STREAM_F_RESP_HEADERS_SENT)) {
        /* Nothing can precede trailers but a head; no head, no trailers. */
        dp_hcm_send_headers(s, 1);
        return;
    }
    h->codec->send_trailers(s);
}

int dp_hcm_send_informational(struct dp_stream *s)
{
    struct dp_hcm *h = s->hcm;
    if (s->flags & (DP_STREAM_F_RESP_HEADERS_SENT | DP_STREAM_F_DONE))
        return 0;
    return h->codec->send_informational(s);
}

void dp_hcm_stream_done(struct dp_stream *s)
{
    struct dp_hcm *h = s->hcm;
    if (h->codec->stream_done)
        h->codec->stream_done(s);
}

void dp_hcm_reset_stream(struct dp_stream *s)
{
    struct dp_hcm *h = s->hcm;
    s->flags |= DP_STREAM_F_RESET;
    h->codec->reset_stream(s);
}

size_t dp_hcm_pending_out(struct dp_stream *s)
{
    return s->hcm->codec->pending_out(s);
}

void dp_hcm_pause_request(struct dp_stream *s)
{
    s->flags |= DP_STREAM_F_DOWNSTREAM_PAUSED;
    if (s->hcm->codec->pause_request)
        s->hcm->codec->pause_request(s);
}

void dp_hcm_resume_request(struct dp_stream *s)
{
    struct dp_hcm *h = s->hcm;
    if (!(s->flags & DP_STREAM_F_DOWNSTREAM_PAUSED))
        return;
    s->flags &= ~DP_STREAM_F_DOWNSTREAM_PAUSED;
    if (h->codec->resume_request)
        h->codec->resume_request(s);
}

void dp_hcm_consumed(struct dp_stream *s, size_t n)
{
    struct dp_hcm *h = s->hcm;
    if (h->codec->consumed && n && !(s->flags & DP_STREAM_F_DONE))
        h->codec->consumed(s, n);
}
