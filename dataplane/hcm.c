/*
 * The downstream HTTP connection manager: TLS-to-codec setup, the HTTP/1.1
 * server codec (http-parser) and the HTTP/2 server codec (nghttp2). The
 * stream logic (routing, filters, upstream) is in stream.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dataplane/listener.h"
#include "dataplane/stream.h"
#include "dataplane/tls.h"
#include "dataplane/worker.h"
#include "dataplane/xfcc.h"
#include "xds/log.h"

#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN 24
#define HANDSHAKE_TIMEOUT 10.0

enum { H1_EV_NONE = 0, H1_EV_HEADERS, H1_EV_BODY, H1_EV_COMPLETE };

static void hcm_on_connected(struct dp_conn *c);
static void hcm_on_read(struct dp_conn *c);
static void hcm_on_drained(struct dp_conn *c);
static void hcm_on_close(struct dp_conn *c, enum dp_conn_close_reason why);
static void hcm_on_timeout(struct dp_conn *c);
static void h2_flush(struct dp_hcm *h);
static void h1_process(struct dp_hcm *h);
static void arm_idle(struct dp_hcm *h);

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
    ev_timer_stop(h->w->loop, &h->drain_timer);
    if (h->ngh2)
        nghttp2_session_del(h->ngh2);
    dp_buf_release(&h->h1_hdr);
    dp_conn_free(&h->conn);
    dp_arena_reset(&h->conn_arena);
    dp_worker_snap_unpin(h->w, h->snap);
    /* The memory goes after this loop iteration: callers up the stack (the
     * connection's own callback) may still look at h->conn. */
    dp_worker_defer(h->w, &h->defer, hcm_reap);
}

static void reset_all_streams(struct dp_hcm *h)
{
    while (h->streams) {
        struct dp_stream *s = h->streams;
        dp_stream_downstream_reset(s);
        if (h->streams == s) /* not freed by the reset: free it here */
            dp_stream_free(s);
    }
    h->h1_cur = NULL;
}

void dp_hcm_destroy(struct dp_hcm *h)
{
    dp_conn_close(&h->conn, DP_CONN_CLOSE_LOCAL);
    reset_all_streams(h);
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
    reset_all_streams(h);
    free_hcm(h);
}

/* Closes after what is queued has been written. */
static void close_graceful(struct dp_hcm *h)
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
    if (!h->h2 && h->h1_cur && !(h->h1_cur->flags & DP_STREAM_F_REQ_HEADERS_DONE)) {
        /* Slowloris: the request head did not arrive in time. */
        struct dp_stream *s = h->h1_cur;
        s->flags |= DP_STREAM_F_CLOSE_AFTER;
        dp_stream_set_response_flag(s, "DPE");
        dp_stream_send_local_reply(s, 408, "text/plain", "request header timeout\n", 23);
        return;
    }
    if (h->n_streams == 0) {
        LG_T("hcm", "C%llu: idle timeout", (unsigned long long)h->id);
        if (h->h2) {
            nghttp2_submit_goaway(h->ngh2, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(h->ngh2),
                                  NGHTTP2_NO_ERROR, NULL, 0);
            h2_flush(h);
        }
        close_graceful(h);
        return;
    }
    arm_idle(h);
}

static void arm_idle(struct dp_hcm *h)
{
    if (h->cfg == NULL)
        return;
    if (!h->h2 && h->h1_cur == NULL && h->n_streams == 0) {
        dp_conn_set_timeout(&h->conn, h->cfg->idle_timeout);
    } else if (h->h2) {
        dp_conn_set_timeout(&h->conn, h->n_streams ? 0 : h->cfg->idle_timeout);
    }
}

/* ---- codec selection --------------------------------------------------- */

static int h2_start(struct dp_hcm *h);

static void start_codec(struct dp_hcm *h, const char *alpn)
{
    enum dp_codec_type codec = h->cfg ? h->cfg->codec : DP_CODEC_AUTO;
    dp_conn_set_timeout(&h->conn, 0);
    if (codec == DP_CODEC_HTTP2 || (alpn && strcmp(alpn, "h2") == 0)) {
        if (h2_start(h) < 0)
            dp_hcm_destroy(h);
        return;
    }
    if (codec == DP_CODEC_AUTO && alpn == NULL) {
        h->detect = 1; /* decided on the first bytes */
    }
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
    if (h->cfg)
        dp_conn_set_timeout(&h->conn, h->cfg->request_headers_timeout);
}

static void hcm_on_connected(struct dp_conn *c)
{
    struct dp_hcm *h = c->owner;
    char alpn_buf[32];
    const char *alpn = NULL;

    if (c->ssl) {
        if (h->chain == NULL || h->cfg == NULL) {
            dp_hcm_destroy(h);
            return;
        }
        dp_tls_peer_identity(c->ssl, &h->peer, &h->conn_arena,
                             (h->cfg->xfcc_fields & (DP_XFCC_F_CERT | DP_XFCC_F_CHAIN)) != 0);
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
            if (h2_start(h) < 0) {
                dp_hcm_destroy(h);
                return;
            }
        } else {
            if (c->flags & DP_CONN_F_EOF)
                dp_hcm_destroy(h);
            return; /* need more bytes */
        }
    }
    if (h->h2) {
        size_t n = dp_buf_size(&c->in);
        if (n > 0) {
            h->ngh2_busy = 1;
            ssize_t r = nghttp2_session_mem_recv(h->ngh2, dp_buf_head(&c->in), n);
            h->ngh2_busy = 0;
            if (r < 0) {
                /* NGHTTP2_ERR_FLOODED: PING/SETTINGS floods, bounded by
                 * nghttp2's outbound-ack limit set in h2_start. */
                LG_D("hcm", "C%llu: HTTP/2 protocol error: %s", (unsigned long long)h->id,
                     nghttp2_strerror((int)r));
                dp_buf_consume(&c->in, n);
                h2_flush(h); /* send the GOAWAY nghttp2 queued */
                close_graceful(h);
                return;
            }
            dp_buf_consume(&c->in, n);
        }
        h2_flush(h);
        if (!dp_conn_closed(c) && ((c->flags & DP_CONN_F_EOF) || h->h2_abusive)) {
            reset_all_streams(h);
            close_graceful(h);
        }
        return;
    }
    h1_process(h);
}

static void hcm_on_drained(struct dp_conn *c)
{
    struct dp_hcm *h = c->owner;
    if (h->h2) {
        h2_flush(h);
        /* A stream whose upstream was paused is resumed when its buffer
         * drains, which the flush above may have done; a stream that no
         * read callback reaches any more must not stay parked. */
        size_t half = h->listener->per_connection_buffer_limit / 2;
        while (!dp_conn_closed(c)) {
            /* Resuming one may end (and free) others: look again each time. */
            struct dp_stream *s = h->streams;
            while (s && !((s->flags & DP_STREAM_F_UPSTREAM_PAUSED) && dp_buf_size(&s->resp_body) < half))
                s = s->next;
            if (s == NULL)
                break;
            dp_stream_downstream_drained(s);
        }
        return;
    }
    /* HTTP/1: the upstream may have been paused by our full output. */
    if (h->h1_cur && (h->h1_cur->flags & DP_STREAM_F_UPSTREAM_PAUSED))
        dp_stream_downstream_drained(h->h1_cur);
}

static void h2_drain_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct dp_hcm *h = t->data;
    h->goaway_final = 1;
    nghttp2_submit_goaway(h->ngh2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->ngh2),
                          NGHTTP2_NO_ERROR, NULL, 0);
    h2_flush(h);
    if (h->n_streams == 0)
        close_graceful(h);
}

void dp_hcm_drain(struct dp_hcm *h)
{
    if (h->draining)
        return;
    h->draining = 1;
    if (h->h2 && h->ngh2) {
        /* Two GOAWAYs, as RFC 9113 6.8 and Envoy do: first a notice (last
         * stream 2^31-1) so the client stops opening streams, then, after
         * drain_timeout, the final one. A request the client sent before it
         * saw the notice is still served, not refused. */
        nghttp2_submit_shutdown_notice(h->ngh2);
        h2_flush(h);
        ev_timer_init(&h->drain_timer, h2_drain_timer_cb, h->cfg ? h->cfg->drain_timeout : 5.0, 0.);
        h->drain_timer.data = h;
        ev_timer_start(h->w->loop, &h->drain_timer);
        return;
    }
    /* HTTP/1.1 has no GOAWAY: closing an idle keep-alive connection races
     * with a request the client may be sending on it right now, and that
     * request would be lost. Like Envoy, answer the next request with
     * "connection: close" instead, and close an idle connection only after
     * the drain timeout. */
    if (h->h1_cur == NULL)
        dp_conn_set_timeout(&h->conn, h->cfg ? h->cfg->drain_timeout : 5.0);
    else
        h->h1_cur->flags |= DP_STREAM_F_CLOSE_AFTER;
}

/* ---- HTTP/1.1 server codec -------------------------------------------- */

static int h1_hdr_commit(struct dp_hcm *h)
{
    struct dp_stream *s = h->h1_cur;
    /* Chunked trailers: kept with enable_trailers, as Envoy, else dropped. */
    struct dp_headers *into = (h->parser.flags & F_TRAILING) ? &s->req_trailers : &s->req.headers;
    size_t total = dp_buf_size(&h->h1_hdr);
    if (!h->h1_last_was_value) /* a name without a value: the URL, or nothing */
        return 0;
    const char *p = (const char *)dp_buf_head(&h->h1_hdr);
    struct dp_str name = {p, h->h1_name_len};
    struct dp_str value = {p + h->h1_name_len, total - h->h1_name_len};
    /* RFC 9110: a field name is a token, a value has no control
     * characters but HTAB. http-parser is lenient about both, and a proxy
     * that forwards what its upstream may read differently invites request
     * smuggling. */
    if (name.n == 0)
        return -1;
    for (size_t i = 0; i < name.n; i++)
        if (!dp_http_tchar[(unsigned char)name.p[i]])
            return -1;
    for (size_t i = 0; i < value.n; i++) {
        unsigned char c = (unsigned char)value.p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return -1;
    }
    /* Optional whitespace is already trimmed by http-parser. */
    int rc = 0;
    if (into == &s->req.headers || (h->cfg && h->cfg->h1_enable_trailers))
        rc = dp_headers_add(into, &s->arena, name, value);
    dp_buf_reset(&h->h1_hdr); /* released when the head is complete */
    h->h1_name_len = 0;
    h->h1_last_was_value = 0;
    return rc;
}

static int h1_count(struct dp_hcm *h, size_t len)
{
    h->h1_header_bytes += len;
    if (h->cfg && h->h1_header_bytes > (size_t)h->cfg->max_request_headers_kb * 1024)
        return -1;
    return 0;
}

static int h1_on_message_begin(http_parser *p)
{
    struct dp_hcm *h = p->data;
    if (h->h1_cur == NULL) {
        h->h1_cur = dp_stream_new(h, 0);
        if (h->h1_cur == NULL)
            return -1;
    }
    h->h1_header_bytes = 0;
    h->h1_name_len = 0;
    h->h1_last_was_value = 0;
    dp_buf_release(&h->h1_hdr);
    return 0;
}

static int h1_on_url(http_parser *p, const char *at, size_t len)
{
    struct dp_hcm *h = p->data;
    if (h1_count(h, len) < 0)
        return -1;
    return dp_buf_append(&h->h1_hdr, at, len);
}

static int h1_take_url(struct dp_hcm *h)
{
    struct dp_stream *s = h->h1_cur;
    if (s->req.path.p != NULL)
        return 0;
    size_t n = dp_buf_size(&h->h1_hdr);
    char *u = dp_arena_strndup(&s->arena, (const char *)dp_buf_head(&h->h1_hdr), n);
    if (u == NULL)
        return -1;
    s->req.path = (struct dp_str){u, n};
    dp_buf_reset(&h->h1_hdr);
    return 0;
}

static int h1_on_header_field(http_parser *p, const char *at, size_t len)
{
    struct dp_hcm *h = p->data;
    if (h1_count(h, len) < 0)
        return -1;
    if (h1_take_url(h) < 0)
        return -1;
    if (h->h1_last_was_value) {
        if (h1_hdr_commit(h) < 0)
            return -1;
        if (h->cfg && h->h1_cur->req.headers.n >= h->cfg->max_headers_count) {
            h->h1_header_bytes = SIZE_MAX / 2; /* reported as 431 */
            return -1;
        }
    }
    h->h1_name_len += len;
    return dp_buf_append(&h->h1_hdr, at, len);
}

static int h1_on_header_value(http_parser *p, const char *at, size_t len)
{
    struct dp_hcm *h = p->data;
    if (h1_count(h, len) < 0)
        return -1;
    h->h1_last_was_value = 1;
    return dp_buf_append(&h->h1_hdr, at, len);
}

static int h1_on_headers_complete(http_parser *p)
{
    struct dp_hcm *h = p->data;
    struct dp_stream *s = h->h1_cur;
    if (h1_take_url(h) < 0 || h1_hdr_commit(h) < 0)
        return -1;
    dp_buf_release(&h->h1_hdr);
    if (h->cfg && s->req.headers.n > h->cfg->max_headers_count) {
        h->h1_header_bytes = SIZE_MAX / 2;
        return -1;
    }
    h->h1_event = H1_EV_HEADERS;
    http_parser_pause(p, 1);
    return 0;
}

static int h1_on_body(http_parser *p, const char *at, size_t len)
{
    struct dp_hcm *h = p->data;
    h->h1_event = H1_EV_BODY;
    h->h1_body = (const uint8_t *)at;
    h->h1_body_len = len;
    http_parser_pause(p, 1);
    return 0;
}

static int h1_on_message_complete(http_parser *p)
{
    struct dp_hcm *h = p->data;
    if ((p->flags & F_TRAILING) && h1_hdr_commit(h) < 0) /* the last trailer */
        return -1;
    h->h1_event = H1_EV_COMPLETE;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings h1_settings = {
    .on_message_begin = h1_on_message_begin,
    .on_url = h1_on_url,
    .on_header_field = h1_on_header_field,
    .on_header_value = h1_on_header_value,
    .on_headers_complete = h1_on_headers_complete,
    .on_body = h1_on_body,
    .on_message_complete = h1_on_message_complete,
};

/* Fills the request head from what http-parser learnt. Returns 0, or an
 * HTTP status to answer with. */
static int h1_finish_head(struct dp_hcm *h, struct dp_stream *s)
{
    http_parser *p = &h->parser;
    const char *m = http_method_str((enum http_method)p->method);
    s->req.method = (struct dp_str){m, strlen(m)};
    s->req.version = (p->http_major == 1 && p->http_minor == 0) ? DP_HTTP_10 : DP_HTTP_11;
    s->req.scheme = h->conn.ssl ? DP_STR_LIT("https") : DP_STR_LIT("http");
    if (p->flags & F_CHUNKED)
        s->req.content_length = -1;
    else if (p->content_length != ULLONG_MAX && p->content_length != 0)
        s->req.content_length = (int64_t)p->content_length;
    else
        s->req.content_length = http_body_is_final(p) ? 0 : -1;

    /* Smuggling guard: both framings, or several different Content-Length. */
    const struct dp_header *te = dp_headers_get(&s->req.headers, DP_STR_LIT("transfer-encoding"));
    size_t n_cl = 0;
    struct dp_str cl = {0};
    for (size_t i = 0; i < s->req.headers.n; i++) {
        if (dp_str_eq(s->req.headers.v[i].name, DP_STR_LIT("content-length"))) {
            if (n_cl && !dp_str_eq(cl, s->req.headers.v[i].value))
                return 400;
            cl = s->req.headers.v[i].value;
            n_cl++;
        }
    }
    if (te && n_cl)
        return 400;
    if (te && !(p->flags & F_CHUNKED))
        return 501; /* a transfer coding other than chunked */

    const struct dp_header *host = dp_headers_get(&s->req.headers, DP_STR_LIT("host"));
    if (host) {
        s->req.authority = host->value;
        dp_headers_remove(&s->req.headers, DP_STR_LIT("host"));
    } else if (s->req.version == DP_HTTP_11 && !(s->req.path.n && s->req.path.p[0] != '/') &&
               p->method != HTTP_CONNECT) {
        return 400;
    }
    if (p->method == HTTP_CONNECT) {
        /* authority-form (RFC 9112 3.2.3): the target is host:port */
        if (s->req.path.n == 0 || s->req.path.p[0] == '/')
            return 400;
        s->req.authority = s->req.path;
    } else if (s->req.path.n && s->req.path.p[0] != '/' && !(s->req.path.n == 1 && s->req.path.p[0] == '*')) {
        /* absolute-form: take the authority and path from the URL */
        struct http_parser_url u;
        http_parser_url_init(&u);
        if (http_parser_parse_url(s->req.path.p, s->req.path.n, 0, &u) != 0 ||
            !(u.field_set & (1 << UF_HOST)))
            return 400;
        if (!host)
            s->req.authority = (struct dp_str){s->req.path.p + u.field_data[UF_HOST].off,
                                               u.field_data[UF_HOST].len};
        if (u.field_set & (1 << UF_PATH)) {
            size_t off = u.field_data[UF_PATH].off;
            s->req.path = (struct dp_str){s->req.path.p + off, s->req.path.n - off};
        } else {
            s->req.path = DP_STR_LIT("/");
        }
    }
    if (!http_should_keep_alive(p) || h->draining)
        s->flags |= DP_STREAM_F_CLOSE_AFTER;
    if (p->method == HTTP_HEAD)
        s->flags |= DP_STREAM_F_HEAD;
    if (p->method == HTTP_CONNECT) {
        s->flags |= DP_STREAM_F_UPGRADE | DP_STREAM_F_CONNECT;
        s->upgrade = DP_STR_LIT("connect");
        s->req.path = (struct dp_str){0};
    } else if (p->upgrade) {
        /* Connection: upgrade with an Upgrade: the first protocol named
         * (RFC 9110 7.8) is the one routes enable. */
        const struct dp_header *up = dp_headers_get(&s->req.headers, DP_STR_LIT("upgrade"));
        if (up && up->value.n) {
            size_t n = 0;
            while (n < up->value.n && up->value.p[n] != ',' && up->value.p[n] != ' ' && up->value.p[n] != '\t')
                n++;
            s->upgrade = (struct dp_str){up->value.p, n};
            s->flags |= DP_STREAM_F_UPGRADE;
        }
    }
    if (s->flags & DP_STREAM_F_UPGRADE)
        h->conn.flags |= DP_CONN_F_HALF_OPEN; /* the client's EOF half-closes the tunnel */
    return 0;
}

static void h1_protocol_error(struct dp_hcm *h, int status, const char *body)
{
    struct dp_stream *s = h->h1_cur;
    if (s == NULL) {
        s = h->h1_cur = dp_stream_new(h, 0);
        if (s == NULL) {
            dp_hcm_destroy(h);
            return;
        }
    }
    if (s->flags & DP_STREAM_F_RESP_HEADERS_SENT) {
        dp_hcm_destroy(h);
        return;
    }
    if (s->req.method.p == NULL)
        s->req.method = DP_STR_LIT("GET");
    s->req.version = DP_HTTP_11;
    s->flags |= DP_STREAM_F_CLOSE_AFTER | DP_STREAM_F_REQ_COMPLETE;
    dp_stream_set_response_flag(s, "DPE");
    dp_conn_pause_read(&h->conn);
    dp_stream_send_local_reply(s, status, "text/plain", body, strlen(body));
}

/* Obsolete line folding (a header line starting with SP or HTAB) is
 * rejected (RFC 9112 5.2): http-parser would join the lines, an upstream
 * might not. Scans the request head once, across reads, up to its end. */
static int h1_obs_fold(struct dp_hcm *h, const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && h->h1_fold != H1_FOLD_DONE) {
        if (h->h1_fold == H1_FOLD_IN) {
            /* Only what follows a line feed matters: skip to the next one. */
            const char *lf = memchr(p + i, '\n', n - i);
            if (lf == NULL)
                return 0;
            i = (size_t)(lf - p) + 1;
            h->h1_fold = H1_FOLD_LF;
            continue;
        }
        char c = p[i++];
        if (h->h1_fold == H1_FOLD_LF) {
            if (c == ' ' || c == '\t')
                return 1;
            h->h1_fold = c == '\r' ? H1_FOLD_LF_CR : c == '\n' ? H1_FOLD_DONE : H1_FOLD_IN;
        } else { /* H1_FOLD_LF_CR */
            h->h1_fold = c == '\n' ? H1_FOLD_DONE : H1_FOLD_IN;
        }
    }
    return 0;
}

static void h1_process(struct dp_hcm *h)
{
    struct dp_conn *c = &h->conn;

    while (!dp_conn_closed(c) && !(c->flags & DP_CONN_F_CLOSING) && dp_buf_size(&c->in) > 0) {
        /* One request at a time: pipelined requests wait in c->in. */
        if (h->h1_cur && (h->h1_cur->flags & DP_STREAM_F_REQ_COMPLETE)) {
            dp_conn_pause_read(c);
            return;
        }
        if (h->h1_cur && (h->h1_cur->flags & DP_STREAM_F_DOWNSTREAM_PAUSED))
            return;
        if (h->h1_cur && h->h1_tunnel) {
            /* After an upgrade or CONNECT head, what follows is the tunnel's
             * (http-parser is done with this connection). */
            struct dp_stream *s = h->h1_cur;
            size_t n = dp_buf_size(&c->in);
            dp_stream_request_data(s, dp_buf_head(&c->in), n, 0);
            if (!dp_conn_closed(c))
                dp_buf_consume(&c->in, n);
            continue;
        }
        const char *data = (const char *)dp_buf_head(&c->in);
        size_t len = dp_buf_size(&c->in);
        h->h1_event = H1_EV_NONE;
        if (h1_obs_fold(h, data, len)) {
            dp_buf_consume(&c->in, dp_buf_size(&c->in));
            h1_protocol_error(h, 400, "malformed HTTP request\n");
            return;
        }
        size_t n = http_parser_execute(&h->parser, &h1_settings, data, len);
        enum http_errno err = HTTP_PARSER_ERRNO(&h->parser);
        if (err == HPE_PAUSED) {
            http_parser_pause(&h->parser, 0);
        } else if (err != HPE_OK) {
            int too_big = err == HPE_HEADER_OVERFLOW ||
                          ((err == HPE_CB_header_field || err == HPE_CB_header_value ||
                            err == HPE_CB_url || err == HPE_CB_headers_complete) &&
                           h->cfg && h->h1_header_bytes > (size_t)h->cfg->max_request_headers_kb * 1024);
            dp_buf_consume(&c->in, dp_buf_size(&c->in));
            if (too_big)
                h1_protocol_error(h, 431, "request headers too large\n");
            else
                h1_protocol_error(h, 400, "malformed HTTP request\n");
            return;
        }
        struct dp_stream *s = h->h1_cur;
        switch (h->h1_event) {
        case H1_EV_HEADERS: {
            dp_buf_consume(&c->in, n);
            int st = h1_finish_head(h, s);
            if (st) {
                dp_buf_consume(&c->in, dp_buf_size(&c->in));
                h1_protocol_error(h, st, st == 501 ? "unsupported transfer encoding\n"
                                                   : "malformed HTTP request\n");
                return;
            }
            dp_conn_set_timeout(c, 0);
            /* Neither Content-Length nor chunked coding (RFC 9112 6.3), or
             * Content-Length: 0: no body, so the upstream request can go
             * out whole, without chunked coding. The end itself still
             * comes with message-complete. http-parser reports an absent
             * length as ULLONG_MAX; upgrades and CONNECT carry what follows. */
            if (!(h->parser.flags & F_CHUNKED) && !h->parser.upgrade &&
                (h->parser.content_length == 0 || h->parser.content_length == ULLONG_MAX))
                s->flags |= DP_STREAM_F_REQ_NO_BODY;
            dp_stream_request_headers(s, 0);
            break;
        }
        case H1_EV_BODY:
            /* The body bytes are still in c->in: hand them over first. */
            dp_stream_request_data(s, h->h1_body, h->h1_body_len, 0);
            if (!dp_conn_closed(c))
                dp_buf_consume(&c->in, n);
            break;
        case H1_EV_COMPLETE:
            dp_buf_consume(&c->in, n);
            if (s->flags & DP_STREAM_F_UPGRADE) {
                h->h1_tunnel = 1; /* the head is done; the rest is the tunnel's */
                break;
            }
            dp_stream_request_data(s, NULL, 0, 1);
            break;
        default:
            dp_buf_consume(&c->in, n);
            if (n == 0)
                return;
            break;
        }
    }
    if (!dp_conn_closed(c) && (c->flags & DP_CONN_F_EOF)) {
        /* The client half-closed: finish the current response, then close. */
        if (h->h1_cur == NULL) {
            dp_hcm_destroy(h);
            return;
        }
        struct dp_stream *s = h->h1_cur;
        if (h->h1_tunnel || (s->flags & DP_STREAM_F_UPGRADE)) {
            /* A tunnel's half-close goes on to the upstream; the other
             * direction runs until the upstream ends it. */
            s->flags |= DP_STREAM_F_CLOSE_AFTER;
            if (!(s->flags & DP_STREAM_F_REQ_COMPLETE))
                dp_stream_request_data(s, NULL, 0, 1);
            return;
        }
        if (!(h->h1_cur->flags & DP_STREAM_F_REQ_COMPLETE)) {
            /* EOF in the middle of a request: http-parser may complete a
             * close-delimited message; anything else is an abort. */
            http_parser_execute(&h->parser, &h1_settings, NULL, 0);
            if (h->h1_event == H1_EV_COMPLETE) {
                dp_stream_request_data(h->h1_cur, NULL, 0, 1);
            } else {
                dp_hcm_destroy(h);
                return;
            }
        }
        /* The request's end may have finished an answered stream (freed). */
        if (h->h1_cur)
            h->h1_cur->flags |= DP_STREAM_F_CLOSE_AFTER;
    }
}

/* Framing and hop-by-hop fields, which the codec writes itself. */
static int skip_response_header(struct dp_str name)
{
    return dp_http_is_hop_field(name) || dp_str_eq(name, DP_STR_LIT("trailer"));
}

static int bodyless_status(int status)
{
    return (status >= 100 && status < 200) || status == 204 || status == 304;
}

static void h1_send_headers(struct dp_stream *s, int end_stream)
{
    struct dp_hcm *h = s->hcm;
    struct dp_buf *out = &h->conn.out;
    int status = s->resp.status;

    if (h->draining)
        s->flags |= DP_STREAM_F_CLOSE_AFTER;
    /* An upstream answering before the request finished: the rest of the
     * request cannot be delivered, so the connection is not reused. (A local
     * reply reads and drops the rest instead.) */
    if (!(s->flags & (DP_STREAM_F_REQ_COMPLETE | DP_STREAM_F_LOCAL_REPLY)))
        s->flags |= DP_STREAM_F_CLOSE_AFTER;

    /* An upgrade request that did not become a tunnel leaves the
     * connection in an unknown state: it is not reused. A tunnel never
     * returns to HTTP either. */
    if (s->flags & DP_STREAM_F_UPGRADE)
        s->flags |= DP_STREAM_F_CLOSE_AFTER;

    dp_http_append_status_line(out, status);
    for (size_t i = 0; i < s->resp.headers.n; i++) {
        const struct dp_header *hd = &s->resp.headers.v[i];
        if (skip_response_header(hd->name))
            continue;
        dp_http_append_field(out, hd->name, hd->value);
    }
    if (s->flags & DP_STREAM_F_TUNNEL) {
        /* 101 Switching Protocols, or 2xx to CONNECT: no framing, the body
         * is the tunnel's bytes until either side closes. */
        if (status == 101) {
            dp_buf_append(out, "connection: upgrade\r\nupgrade: ", 30);
            dp_buf_append(out, s->upgrade.p, s->upgrade.n);
            dp_buf_append(out, "\r\n\r\n", 4);
        } else {
            dp_buf_append(out, "\r\n", 2);
        }
        return;
    }
    if (!bodyless_status(status)) {
        if (s->resp.content_length >= 0) {
            dp_buf_append(out, "content-length: ", 16);
            dp_buf_append_dec(out, (uint64_t)s->resp.content_length);
            dp_buf_append(out, "\r\n", 2);
        } else if (end_stream) {
            if (!(s->flags & DP_STREAM_F_HEAD))
                dp_buf_append(out, "content-length: 0\r\n", 19);
        } else if (s->req.version == DP_HTTP_11) {
            dp_buf_append(out, "transfer-encoding: chunked\r\n", 28);
            s->flags |= DP_STREAM_F_RESP_CHUNKED;
        } else {
            s->flags |= DP_STREAM_F_CLOSE_AFTER; /* close-delimited for HTTP/1.0 */
        }
    }
    if (s->flags & DP_STREAM_F_CLOSE_AFTER)
        dp_buf_append(out, "connection: close\r\n", 19);
    else if (s->req.version == DP_HTTP_10)
        dp_buf_append(out, "connection: keep-alive\r\n", 24);
    dp_buf_append(out, "\r\n", 2);
}

/* The last chunk, with the response trailers when enable_trailers lets
 * them through (an HTTP/1.1 response can carry them only when chunked). */
static void h1_last_chunk(struct dp_stream *s, struct dp_buf *out)
{
    dp_buf_append(out, "0\r\n", 3);
    if (s->cfg && s->cfg->h1_enable_trailers)
        for (size_t i = 0; i < s->resp_trailers.n; i++) {
            const struct dp_header *hd = &s->resp_trailers.v[i];
            if (!skip_response_header(hd->name))
                dp_http_append_field(out, hd->name, hd->value);
        }
    dp_buf_append(out, "\r\n", 2);
}

static void h1_send_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream)
{
    struct dp_buf *out = &s->hcm->conn.out;
    if (s->flags & DP_STREAM_F_HEAD)
        return;
    if (s->flags & DP_STREAM_F_RESP_CHUNKED) {
        if (n) {
            dp_buf_append_hex(out, n);
            dp_buf_append(out, "\r\n", 2);
            dp_buf_append(out, p, n);
            dp_buf_append(out, "\r\n", 2);
        }
        if (end_stream)
            h1_last_chunk(s, out);
    } else if (n) {
        dp_buf_append(out, p, n);
    }
}

/* An informational head for an HTTP/1.1 client (not HTTP/1.0, RFC 9110
 * 15.2): status line and fields, no framing. */
static int h1_send_informational(struct dp_stream *s)
{
    struct dp_buf *out = &s->hcm->conn.out;
    if (s->req.version != DP_HTTP_11)
        return 0;
    dp_http_append_status_line(out, s->resp.status);
    for (size_t i = 0; i < s->resp.headers.n; i++) {
        const struct dp_header *hd = &s->resp.headers.v[i];
        if (!skip_response_header(hd->name))
            dp_http_append_field(out, hd->name, hd->value);
    }
    dp_buf_append(out, "\r\n", 2);
    dp_conn_flush(&s->hcm->conn);
    return 1;
}

/* The response is complete: next request, or close. */
static void h1_response_done(struct dp_hcm *h, struct dp_stream *s)
{
    int close_after = (s->flags & DP_STREAM_F_CLOSE_AFTER) != 0;
    if (!(s->flags & DP_STREAM_F_REQ_COMPLETE))
        close_after = 1;
    h->h1_cur = NULL;
    h->h1_tunnel = 0;
    dp_stream_free(s);
    if (close_after || h->draining) {
        close_graceful(h);
        return;
    }
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
    h->h1_fold = H1_FOLD_IN;
    dp_conn_set_timeout(&h->conn, h->cfg->idle_timeout);
    if (dp_buf_size(&h->conn.in) > 0)
        dp_conn_set_timeout(&h->conn, h->cfg->request_headers_timeout);
    dp_conn_resume_read(&h->conn);
}

/* ---- HTTP/2 server codec ----------------------------------------------- */

/* Header fields as nghttp2 name/value pairs in the stream's arena, without
 * the codec's own fields; n_extra slots are left free at the front.
 * Returns the count, or -1. */
static ssize_t h2_nva(struct dp_stream *s, const struct dp_headers *hs, size_t n_extra, nghttp2_nv **out)
{
    nghttp2_nv *nva = dp_arena_alloc(&s->arena, (hs->n + n_extra + 1) * sizeof(*nva));
    if (nva == NULL)
        return -1;
    size_t k = n_extra;
    for (size_t i = 0; i < hs->n; i++) {
        const struct dp_header *hd = &hs->v[i];
        if (skip_response_header(hd->name) || (hd->name.n && hd->name.p[0] == ':'))
            continue;
        nva[k++] = (nghttp2_nv){(uint8_t *)hd->name.p, (uint8_t *)hd->value.p, hd->name.n, hd->value.n,
                                NGHTTP2_NV_FLAG_NO_COPY_NAME};
    }
    *out = nva;
    return (ssize_t)k;
}

static int h2_submit_trailers(struct dp_stream *s)
{
    nghttp2_nv *nva;
    ssize_t k = h2_nva(s, &s->resp_trailers, 0, &nva);
    if (k <= 0)
        return -1;
    return nghttp2_submit_trailer(s->hcm->ngh2, s->h2_id, nva, (size_t)k) == 0 ? 0 : -1;
}

static ssize_t h2_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                          uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    struct dp_stream *s = source->ptr;
    size_t avail = dp_buf_size(&s->resp_body);
    size_t n = avail < length ? avail : length;
    if (n) {
        memcpy(buf, dp_buf_head(&s->resp_body), n);
        dp_buf_consume(&s->resp_body, n);
        if (s->flags & DP_STREAM_F_UPSTREAM_PAUSED)
            dp_stream_downstream_drained(s);
    }
    if (dp_buf_size(&s->resp_body) == 0 && (s->flags & DP_STREAM_F_RESP_COMPLETE)) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (s->resp_trailers.n) {
            int rv = h2_submit_trailers(s);
            LG_T("h2", "C%llu S%llu: end of body, trailers (%zu) submitted: %d", (unsigned long long)s->hcm->id,
                 (unsigned long long)s->id, s->resp_trailers.n, rv);
            if (rv == 0)
                *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
        return (ssize_t)n;
    }
    if (n == 0) {
        s->flags |= DP_STREAM_F_DEFERRED;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static int h2_on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct dp_hcm *h = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (h->goaway_final) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    struct dp_stream *s = dp_stream_new(h, frame->hd.stream_id);
    if (s == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    h->h2_streams_total++;
    s->req.version = DP_HTTP_2;
    s->req.content_length = -1;
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s);
    dp_conn_set_timeout(&h->conn, 0);
    return 0;
}

static int h2_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *user_data)
{
    struct dp_hcm *h = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct dp_stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s == NULL)
        return 0;
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        /* Trailers (nghttp2 has refused pseudo-headers in them). */
        if (h->cfg && s->req_trailers.n >= h->cfg->max_headers_count) {
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_REFUSED_STREAM);
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        return dp_headers_add(&s->req_trailers, &s->arena, (struct dp_str){(const char *)name, namelen},
                              (struct dp_str){(const char *)value, valuelen}) < 0
                   ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
                   : 0;
    }
    struct dp_str n = {(const char *)name, namelen};
    char *v = dp_arena_strndup(&s->arena, (const char *)value, valuelen);
    if (v == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    struct dp_str vs = {v, valuelen};
    h->h1_header_bytes = 0;
    if (namelen > 0 && name[0] == ':') {
        if (dp_str_eq(n, DP_STR_LIT(":method")))
            s->req.method = vs;
        else if (dp_str_eq(n, DP_STR_LIT(":scheme")))
            s->req.scheme = vs;
        else if (dp_str_eq(n, DP_STR_LIT(":authority")))
            s->req.authority = vs;
        else if (dp_str_eq(n, DP_STR_LIT(":path")))
            s->req.path = vs;
        else if (dp_str_eq(n, DP_STR_LIT(":protocol"))) /* RFC 8441, only after our SETTINGS allowed it */
            s->upgrade = vs;
        return 0;
    }
    if (dp_str_eq(n, DP_STR_LIT("host"))) {
        if (s->req.authority.p == NULL)
            s->req.authority = vs;
        return 0;
    }
    if (h->cfg && s->req.headers.n >= h->cfg->max_headers_count) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    char *nm = dp_arena_strndup(&s->arena, (const char *)name, namelen);
    if (nm == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (dp_headers_add_ref(&s->req.headers, &s->arena, (struct dp_str){nm, namelen}, vs) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (dp_str_eq(n, DP_STR_LIT("content-length"))) {
        char *end;
        long long cl = strtoll(v, &end, 10);
        if (*end == '\0' && cl >= 0)
            s->req.content_length = cl;
    }
    return 0;
}

/* HTTP/2 rapid reset (CVE-2023-44487): a client that opens streams and
 * resets them at once makes us do work for nothing. As Envoy does, after
 * PREMATURE_RESET_MIN streams a connection where more than half of them
 * were reset before their response ended is closed. */
#define PREMATURE_RESET_MIN 100

static int h2_on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data);
static int h2_trace_frame(struct dp_hcm *h, const nghttp2_frame *f, const char *dir);

static void h2_count_reset(struct dp_hcm *h, int32_t stream_id)
{
    struct dp_stream *s = nghttp2_session_get_stream_user_data(h->ngh2, stream_id);
    if (s == NULL || (s->flags & DP_STREAM_F_RESP_COMPLETE))
        return;
    h->h2_premature_resets++;
    if (h->h2_streams_total >= PREMATURE_RESET_MIN && h->h2_premature_resets * 2 > h->h2_streams_total &&
        !h->goaway_final) {
        LG_W("hcm", "C%llu: %u of %u streams reset by %s before their response: closing (rapid reset)",
             (unsigned long long)h->id, h->h2_premature_resets, h->h2_streams_total, h->remote);
        h->goaway_final = 1;
        h->draining = 1;
        h->h2_abusive = 1; /* closed once this read is handled */
        nghttp2_submit_goaway(h->ngh2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->ngh2),
                              NGHTTP2_ENHANCE_YOUR_CALM, NULL, 0);
    }
}

static int h2_on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    if (lg_current_level <= LG_TRACE)
        h2_trace_frame(user_data, frame, "received");
    if (frame->hd.type == NGHTTP2_RST_STREAM)
        h2_count_reset(user_data, frame->hd.stream_id);
    if (frame->hd.stream_id == 0)
        return 0;
    struct dp_stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s == NULL || (s->flags & DP_STREAM_F_DONE))
        return 0;
    int end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            if (s->req.method.p && dp_str_eq(s->req.method, DP_STR_LIT("CONNECT"))) {
                /* nghttp2 checked the pseudo-headers (RFC 9113 8.5, RFC
                 * 8441 4); legate takes CONNECT with allow_connect, as
                 * Envoy. Extended CONNECT goes on as the upgrade it
                 * names (a GET with Upgrade to an HTTP/1.1 upstream). */
                if (!s->cfg || !s->cfg->h2_allow_connect) {
                    s->flags |= DP_STREAM_F_REQ_COMPLETE;
                    dp_stream_set_response_flag(s, "DPE");
                    dp_stream_send_local_reply(s, 403, "text/plain", "CONNECT is not allowed\n", 23);
                    return 0;
                }
                s->flags |= DP_STREAM_F_UPGRADE;
                if (s->upgrade.n) {
                    s->flags |= DP_STREAM_F_H2_EXT_CONNECT;
                    s->req.method = DP_STR_LIT("GET");
                } else {
                    s->flags |= DP_STREAM_F_CONNECT;
                    s->upgrade = DP_STR_LIT("connect");
                    s->req.path = (struct dp_str){"", 0};
                }
            }
            if (s->req.method.p == NULL || s->req.path.p == NULL) {
                s->flags |= DP_STREAM_F_REQ_COMPLETE;
                dp_stream_send_local_reply(s, 400, "text/plain", "malformed HTTP/2 request\n", 25);
                return 0;
            }
            if (s->req.scheme.p == NULL)
                s->req.scheme = s->hcm->conn.ssl ? DP_STR_LIT("https") : DP_STR_LIT("http");
            if (dp_str_eq(s->req.method, DP_STR_LIT("HEAD")))
                s->flags |= DP_STREAM_F_HEAD;
            if (end)
                s->req.content_length = 0;
            dp_stream_request_headers(s, end);
        } else if (end) {
            dp_stream_request_end_trailers(s); /* trailers end the request */
        }
        break;
    case NGHTTP2_DATA:
        if (end)
            dp_stream_request_data(s, NULL, 0, 1);
        break;
    default:
        break;
    }
    return 0;
}

static int h2_on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                            const uint8_t *data, size_t len, void *user_data)
{
    struct dp_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (s == NULL || (s->flags & DP_STREAM_F_DONE)) {
        nghttp2_session_consume(session, stream_id, len);
        return 0;
    }
    dp_stream_request_data(s, data, len, 0);
    return 0;
}

static int h2_on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                              void *user_data)
{
    struct dp_hcm *h = user_data;
    struct dp_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (s == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    if (!(s->flags & DP_STREAM_F_RESP_COMPLETE) || error_code != NGHTTP2_NO_ERROR) {
        LG_D("hcm", "C%llu S%llu: stream %d closed (%s) before its response ended: flags 0x%x, "
             "%zu request bytes waiting, %zu response bytes waiting, upstream %s",
             (unsigned long long)h->id, (unsigned long long)s->id, stream_id, nghttp2_http2_strerror(error_code),
             s->flags, dp_buf_size(&s->req_body), dp_buf_size(&s->resp_body), s->up ? "attached" : "none");
        dp_stream_downstream_reset(s);
    }
    dp_stream_free(s);
    if (h->n_streams == 0) {
        if (h->goaway_final)
            close_graceful(h);
        else if (!h->draining)
            arm_idle(h);
    }
    return 0;
}

/* Trace level: every frame in and out of a client connection. */
static int h2_trace_frame(struct dp_hcm *h, const nghttp2_frame *f, const char *dir)
{
    LG_T("h2", "C%llu: %s frame type %u stream %d flags 0x%x length %zu", (unsigned long long)h->id, dir,
         f->hd.type, f->hd.stream_id, f->hd.flags, f->hd.length);
    if (f->hd.type == NGHTTP2_HEADERS && dir[0] == 's')
        for (size_t i = 0; i < f->headers.nvlen; i++)
            LG_T("h2", "C%llu:   %.*s: %.*s", (unsigned long long)h->id, (int)f->headers.nva[i].namelen,
                 (const char *)f->headers.nva[i].name, (int)f->headers.nva[i].valuelen,
                 (const char *)f->headers.nva[i].value);
    return 0;
}

static int h2_on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    return h2_trace_frame(user_data, frame, "sent");
}

static int h2_start(struct dp_hcm *h)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    const struct dp_hcm_cfg *cfg = h->cfg;

    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return -1;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, h2_on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2_on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2_on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_stream_close);
    if (lg_current_level <= LG_TRACE)
        nghttp2_session_callbacks_set_on_frame_send_callback(cbs, h2_on_frame_send);
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        return -1;
    }
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_send_header_block_length(opt, 256 * 1024);
    /* Bounded work per connection (rapid reset, SETTINGS/PING floods). */
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, cfg->h2_hpack_table_size);
    int rc = nghttp2_session_server_new2(&h->ngh2, cbs, h, opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    if (rc != 0)
        return -1;
    h->h2 = 1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg->h2_max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, cfg->h2_initial_stream_window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, cfg->max_request_headers_kb * 1024},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, cfg->h2_hpack_table_size},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
    };
    size_t niv = sizeof(iv) / sizeof(iv[0]) - (cfg->h2_allow_connect ? 0 : 1);
    nghttp2_submit_settings(h->ngh2, NGHTTP2_FLAG_NONE, iv, niv);
    if (cfg->h2_initial_connection_window > 65535)
        nghttp2_session_set_local_window_size(h->ngh2, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)cfg->h2_initial_connection_window);
    h2_flush(h);
    arm_idle(h);
    return 0;
}

static void h2_flush(struct dp_hcm *h)
{
    struct dp_conn *c = &h->conn;
    if (h->ngh2 == NULL || dp_conn_closed(c))
        return;
    /* nghttp2 must not be asked for output from inside its own callbacks
     * (a read callback that resumes an upstream that answers at once, a
     * request body consumed by the upstream while this session parses):
     * the call that is running goes round once more instead. */
    if (h->ngh2_busy) {
        h->ngh2_again = 1;
        return;
    }
    size_t limit = h->listener->per_connection_buffer_limit;
    for (;;) {
        ssize_t n = 1;
        h->ngh2_busy = 1;
        h->ngh2_again = 0;
        while (dp_buf_size(&c->out) < limit) {
            const uint8_t *data;
            n = nghttp2_session_mem_send(h->ngh2, &data);
            if (n < 0) {
                h->ngh2_busy = 0;
                dp_hcm_destroy(h);
                return;
            }
            if (n == 0) {
                if (!h->ngh2_again)
                    break;
                h->ngh2_again = 0; /* a callback queued more meanwhile */
                continue;
            }
            if (dp_buf_append(&c->out, data, (size_t)n) < 0) {
                h->ngh2_busy = 0;
                dp_hcm_destroy(h);
                return;
            }
        }
        h->ngh2_busy = 0;
        if (n != 0)
            c->flags |= DP_CONN_F_WANT_DRAIN; /* stopped at the limit: more when this is out */
        dp_conn_flush(c);
        if (dp_conn_closed(c))
            return;
        /* The socket took a full buffer at once: no writable event will
         * follow (on_drained), so ask nghttp2 for more now, or streams
         * whose upstream waits for this one to drain would stall. */
        if (n == 0 || dp_buf_size(&c->out) > 0 || (c->flags & DP_CONN_F_WBLOCKED))
            break;
    }
    if (!nghttp2_session_want_read(h->ngh2) && !nghttp2_session_want_write(h->ngh2) &&
        dp_conn_unsent(c) == 0)
        close_graceful(h);
}

static int h2_submit_response(struct dp_stream *s, int end_stream)
{
    struct dp_hcm *h = s->hcm;
    size_t n = s->resp.headers.n + 2;
    nghttp2_nv *nva = dp_arena_alloc(&s->arena, n * sizeof(*nva));
    char *status = dp_arena_alloc(&s->arena, 3 + 20);
    if (nva == NULL || status == NULL)
        return -1;
    int st = s->resp.status % 1000;
    status[0] = (char)('0' + st / 100);
    status[1] = (char)('0' + st / 10 % 10);
    status[2] = (char)('0' + st % 10);
    char *clen = status + 3;
    size_t k = 0;
    nva[k++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE};
    for (size_t i = 0; i < s->resp.headers.n; i++) {
        const struct dp_header *hd = &s->resp.headers.v[i];
        if (skip_response_header(hd->name))
            continue;
        nva[k++] = (nghttp2_nv){(uint8_t *)hd->name.p, (uint8_t *)hd->value.p, hd->name.n,
                                hd->value.n, NGHTTP2_NV_FLAG_NO_COPY_NAME};
    }
    if (s->resp.content_length >= 0 && !bodyless_status(s->resp.status)) {
        size_t l = dp_fmt_u64(clen, (uint64_t)s->resp.content_length);
        nva[k++] = (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)clen, 14, l,
                                NGHTTP2_NV_FLAG_NONE};
    }
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = h2_read_cb};
    int rc = nghttp2_submit_response(h->ngh2, s->h2_id, nva, k, end_stream ? NULL : &prd);
    if (rc != 0)
        return -1;
    return 0;
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
    if (h->h2) {
        if (h2_submit_response(s, end_stream || (s->flags & DP_STREAM_F_HEAD)) < 0) {
            nghttp2_submit_rst_stream(h->ngh2, NGHTTP2_FLAG_NONE, s->h2_id, NGHTTP2_INTERNAL_ERROR);
        }
        h2_flush(h);
        return;
    }
    h1_send_headers(s, end_stream);
    dp_conn_flush(&h->conn);
    if (s->flags & DP_STREAM_F_RESP_COMPLETE)
        dp_hcm_stream_done(s);
}

void dp_hcm_send_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream)
{
    struct dp_hcm *h = s->hcm;
    if (s->flags & DP_STREAM_F_RESP_COMPLETE)
        return; /* HEAD, or already finished */
    if (end_stream)
        s->flags |= DP_STREAM_F_RESP_COMPLETE;
    if (h->h2) {
        if (n && !(s->flags & DP_STREAM_F_HEAD))
            dp_buf_append(&s->resp_body, p, n);
        if (s->flags & DP_STREAM_F_DEFERRED) {
            s->flags &= ~DP_STREAM_F_DEFERRED;
            nghttp2_session_resume_data(h->ngh2, s->h2_id);
        }
        h2_flush(h);
        return;
    }
    h1_send_data(s, p, n, end_stream);
    dp_conn_flush(&h->conn);
    if (end_stream && !dp_conn_closed(&h->conn))
        dp_hcm_stream_done(s);
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
    if (h->h2) {
        s->flags |= DP_STREAM_F_RESP_COMPLETE;
        if (s->flags & DP_STREAM_F_HEAD)
            return;
        if (s->flags & DP_STREAM_F_DEFERRED) {
            s->flags &= ~DP_STREAM_F_DEFERRED;
            nghttp2_session_resume_data(h->ngh2, s->h2_id);
        }
        h2_flush(h);
        return;
    }
    dp_hcm_send_data(s, NULL, 0, 1); /* h1_last_chunk writes them when it can */
}

int dp_hcm_send_informational(struct dp_stream *s)
{
    struct dp_hcm *h = s->hcm;
    if (s->flags & (DP_STREAM_F_RESP_HEADERS_SENT | DP_STREAM_F_DONE))
        return 0;
    if (!h->h2)
        return h1_send_informational(s);
    nghttp2_nv *nva;
    ssize_t k = h2_nva(s, &s->resp.headers, 1, &nva);
    char *status = dp_arena_alloc(&s->arena, 4);
    if (k < 0 || status == NULL)
        return 0;
    snprintf(status, 4, "%03d", s->resp.status % 1000);
    nva[0] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE};
    if (nghttp2_submit_headers(h->ngh2, NGHTTP2_FLAG_NONE, s->h2_id, NULL, nva, (size_t)k, NULL) < 0)
        return 0;
    h2_flush(h);
    return 1;
}

void dp_hcm_stream_done(struct dp_stream *s)
{
    struct dp_hcm *h = s->hcm;
    if (h->h2)
        return; /* nghttp2 closes the stream; h2_on_stream_close frees it */
    if (h->h1_cur != s)
        return;
    /* The response is out but the request is still arriving: keep parsing
     * (and dropping) it; the stream ends with the request. */
    if (!(s->flags & DP_STREAM_F_REQ_COMPLETE) && !(s->flags & DP_STREAM_F_CLOSE_AFTER) &&
        !dp_conn_closed(&h->conn))
        return;
    h1_response_done(h, s);
}

void dp_hcm_reset_stream(struct dp_stream *s)
{
    struct dp_hcm *h = s->hcm;
    s->flags |= DP_STREAM_F_RESET;
    if (h->h2) {
        nghttp2_submit_rst_stream(h->ngh2, NGHTTP2_FLAG_NONE, s->h2_id, NGHTTP2_INTERNAL_ERROR);
        h2_flush(h);
        return;
    }
    /* HTTP/1 has no stream reset: the connection goes. */
    dp_hcm_destroy(h);
}

size_t dp_hcm_pending_out(struct dp_stream *s)
{
    /* HTTP/2: what the stream holds. The connection's own buffer is bounded
     * by h2_flush (nghttp2 is not asked for more while it is full), and it
     * is shared: counting it here parked streams that nothing resumed. */
    if (s->hcm->h2)
        return dp_buf_size(&s->resp_body);
    return dp_conn_unsent(&s->hcm->conn);
}

void dp_hcm_pause_request(struct dp_stream *s)
{
    s->flags |= DP_STREAM_F_DOWNSTREAM_PAUSED;
    if (!s->hcm->h2)
        dp_conn_pause_read(&s->hcm->conn);
    /* HTTP/2: the window is simply not reopened (no consume) while paused. */
}

void dp_hcm_resume_request(struct dp_stream *s)
{
    struct dp_hcm *h = s->hcm;
    if (!(s->flags & DP_STREAM_F_DOWNSTREAM_PAUSED))
        return;
    s->flags &= ~DP_STREAM_F_DOWNSTREAM_PAUSED;
    if (!h->h2) {
        dp_conn_resume_read(&h->conn);
    }
}

/* HTTP/2 flow control: the stream's upstream took n bytes of request body. */
void dp_hcm_consumed(struct dp_stream *s, size_t n)
{
    struct dp_hcm *h = s->hcm;
    if (h->h2 && n && !(s->flags & DP_STREAM_F_DONE)) {
        nghttp2_session_consume(h->ngh2, s->h2_id, n);
        h2_flush(h);
    }
}
