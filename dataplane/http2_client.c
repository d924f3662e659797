/*
 * The HTTP/2 client codec: one nghttp2 client session per connection,
 * many requests on it as streams (up to the cluster's
 * max_concurrent_streams, which the pool enforces), the cluster's window
 * and HPACK settings, flow control by hand (a paused stream's DATA is
 * acknowledged when the stream resumes), request trailers after the body,
 * and a stream the upstream refused unprocessed sent again once (h2c_retry).
 */
#include "dataplane/upstream_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "dataplane/stream.h"
#include "xds/log.h"

static void h2c_flush(struct dp_uconn *uc);

/* ---- requests on the connection ------------------------------------------------- */

static void h2c_attach(struct dp_uconn *uc, struct dp_upstream_req *u)
{
    u->uc = uc;
    u->prev = NULL;
    u->next = uc->reqs;
    if (uc->reqs)
        uc->reqs->prev = u;
    uc->reqs = u;
    uc->n_streams++;
}

static void h2c_detach(struct dp_uconn *uc, struct dp_upstream_req *u)
{
    if (u->prev)
        u->prev->next = u->next;
    else if (uc->reqs == u)
        uc->reqs = u->next;
    if (u->next)
        u->next->prev = u->prev;
    u->next = u->prev = NULL;
    u->uc = NULL;
    uc->n_streams--;
    if (uc->ngh2)
        nghttp2_session_set_stream_user_data(uc->ngh2, u->h2_id, NULL);
}

/* ---- the request ------------------------------------------------------------------ */

/* The request trailers, after the last DATA frame. */
static int h2c_submit_trailers(nghttp2_session *session, struct dp_upstream_req *u)
{
    struct dp_stream *s = u->s;
    nghttp2_nv *nva = dp_arena_alloc(&s->arena, s->req_trailers.n * sizeof(*nva));
    if (nva == NULL)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < s->req_trailers.n; i++) {
        const struct dp_header *h = &s->req_trailers.v[i];
        if (dp_client_is_hop(h->name))
            continue;
        nva[k++] = (nghttp2_nv){(uint8_t *)h->name.p, (uint8_t *)h->value.p, h->name.n, h->value.n,
                                NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
    }
    if (k == 0)
        return -1;
    return nghttp2_submit_trailer(session, u->h2_id, nva, k) == 0 ? 0 : -1;
}

static ssize_t h2c_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                           uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    struct dp_upstream_req *u = source->ptr;
    struct dp_stream *s = u->s;
    if (s == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t avail = dp_buf_size(&s->req_body);
    size_t n = avail < length ? avail : length;
    if (n) {
        memcpy(buf, dp_buf_head(&s->req_body), n);
        if (!(u->flags & (UREQ_F_NO_REPLAY | UREQ_F_RETRIED))) {
            if (dp_buf_size(&u->sent) + n > u->pool->rt->cfg->per_connection_buffer_limit ||
                dp_buf_append(&u->sent, buf, n) < 0) {
                dp_buf_release(&u->sent);
                u->flags |= UREQ_F_NO_REPLAY;
            }
        }
        dp_buf_consume(&s->req_body, n);
        size_t again = n < u->replay ? n : u->replay;
        u->replay -= again;
        if (n > again)
            dp_hcm_consumed(s, n - again);
        dp_stream_upstream_drained(s);
    }
    if (dp_buf_size(&s->req_body) == 0 && (s->flags & DP_STREAM_F_REQ_COMPLETE)) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        u->flags |= UREQ_F_REQ_DONE;
        if (s->req_trailers.n && h2c_submit_trailers(session, u) == 0)
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        return (ssize_t)n;
    }
    if (n == 0) {
        u->flags |= UREQ_F_DEFERRED;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static int h2c_submit(struct dp_uconn *uc, struct dp_upstream_req *u)
{
    struct dp_stream *s = u->s;
    const struct dp_request_head *r = &s->req;
    size_t cap = r->headers.n + 5;
    nghttp2_nv *nva = dp_arena_alloc(&s->arena, cap * sizeof(*nva));
    if (nva == NULL)
        return -1;
    size_t k = 0;
    /* The upstream's transport (Envoy's match_upstream), unless the HCM
     * overwrites the scheme (scheme_header_transformation). */
    struct dp_str scheme = s->cfg && s->cfg->scheme_overwrite ? r->scheme
                           : uc->conn.ssl                   ? DP_STR_LIT("https")
                                                            : DP_STR_LIT("http");
#define NV(n, nl, v, vl) \
    nva[k++] = (nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), (nl), (vl), NGHTTP2_NV_FLAG_NO_COPY_NAME}
    NV(":method", 7, r->method.p, r->method.n);
    NV(":scheme", 7, scheme.p, scheme.n);
    NV(":authority", 10, r->authority.p, r->authority.n);
    NV(":path", 5, r->path.p, r->path.n);
    for (size_t i = 0; i < r->headers.n; i++) {
        const struct dp_header *h = &r->headers.v[i];
        /* te is only ever "trailers" by now (stream.c): gRPC needs it. */
        if (dp_client_is_hop(h->name) && !dp_str_eq(h->name, DP_STR_LIT("content-length")) &&
            !dp_str_eq(h->name, DP_STR_LIT("te")))
            continue;
        NV(h->name.p, h->name.n, h->value.p, h->value.n);
    }
#undef NV
    int has_body = !(s->flags & DP_STREAM_F_REQ_COMPLETE) || dp_buf_size(&s->req_body) > 0 ||
                   s->req_trailers.n > 0;
    nghttp2_data_provider prd = {.source.ptr = u, .read_callback = h2c_read_cb};
    int32_t id = nghttp2_submit_request(uc->ngh2, NULL, nva, k, has_body ? &prd : NULL, u);
    if (id < 0)
        return -1;
    u->h2_id = id;
    h2c_attach(uc, u);
    u->flags |= UREQ_F_HEAD_SENT;
    if (!has_body)
        u->flags |= UREQ_F_REQ_DONE;
    uc->served++;
    return 0;
}

static void h2c_flush(struct dp_uconn *uc)
{
    struct dp_conn *c = &uc->conn;
    if (uc->ngh2 == NULL || dp_conn_closed(c))
        return;
    /* Never from inside this session's own callbacks (see h2_flush). */
    if (uc->ngh2_busy) {
        uc->ngh2_again = 1;
        return;
    }
    size_t limit = uc->pool->rt->cfg->per_connection_buffer_limit;
    for (;;) {
        ssize_t n = 1;
        uc->ngh2_busy = 1;
        uc->ngh2_again = 0;
        while (dp_buf_size(&c->out) < limit) {
            const uint8_t *data;
            n = nghttp2_session_mem_send(uc->ngh2, &data);
            if (n == 0 && uc->ngh2_again) {
                uc->ngh2_again = 0;
                continue;
            }
            if (n <= 0)
                break;
            dp_buf_append(&c->out, data, (size_t)n);
        }
        uc->ngh2_busy = 0;
        if (n > 0)
            c->flags |= DP_CONN_F_WANT_DRAIN; /* stopped at the limit: more when this is out */
        dp_conn_flush(c);
        /* As h2_flush: a socket that took everything calls nobody back. */
        if (n <= 0 || dp_conn_closed(c) || dp_buf_size(&c->out) > 0 || (c->flags & DP_CONN_F_WBLOCKED))
            break;
    }
    if (!dp_conn_closed(c) && uc->goaway && uc->n_streams == 0) {
        struct dp_pool *p = uc->pool;
        dp_uconn_destroy(uc);
        dp_pool_dispatch(p);
    }
}

static int h2c_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                         void *user_data)
{
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct dp_upstream_req *u = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (u == NULL || u->s == NULL)
        return 0;
    struct dp_stream *s = u->s;
    if (u->flags & UREQ_F_RESP_STARTED) {
        /* Trailers. A HEADERS frame that follows a 1xx is the final head,
         * not trailers (RFC 9113 8.1): RESP_STARTED tells them apart. */
        return dp_headers_add(&s->resp_trailers, &s->arena, (struct dp_str){(const char *)name, namelen},
                              (struct dp_str){(const char *)value, valuelen}) < 0
                   ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
                   : 0;
    }
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        char tmp[4] = {0};
        memcpy(tmp, value, valuelen < 3 ? valuelen : 3);
        s->resp.status = atoi(tmp);
        s->resp.headers.n = 0;
        s->resp.content_length = -1;
        return 0;
    }
    if (namelen && name[0] == ':')
        return 0;
    if (namelen == 14 && memcmp(name, "content-length", 14) == 0) {
        char tmp[24] = {0};
        memcpy(tmp, value, valuelen < 23 ? valuelen : 23);
        s->resp.content_length = strtoll(tmp, NULL, 10);
        return 0;
    }
    return dp_headers_add(&s->resp.headers, &s->arena, (struct dp_str){(const char *)name, namelen},
                          (struct dp_str){(const char *)value, valuelen}) < 0
               ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
               : 0;
}

static int h2c_on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct dp_uconn *uc = user_data;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        LG_D("upstream", "cluster %s: %s: GOAWAY (%s, last stream %d, %u streams open)", uc->pool->rt->name,
             uc->pool->addr_str, nghttp2_http2_strerror(frame->goaway.error_code), frame->goaway.last_stream_id,
             uc->n_streams);
        uc->goaway = 1;
        return 0;
    }
    struct dp_upstream_req *u = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (u == NULL || u->s == NULL)
        return 0;
    struct dp_stream *s = u->s;
    int end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (frame->hd.type == NGHTTP2_HEADERS) {
        if (!(u->flags & UREQ_F_RESP_STARTED)) {
            if (s->resp.status >= 100 && s->resp.status < 200) {
                dp_stream_upstream_informational(s);
                return 0;
            }
            u->flags |= UREQ_F_RESP_STARTED;
            if (end)
                u->flags |= UREQ_F_RESP_DONE;
            dp_stream_upstream_headers(s, end);
        } else if (end && !(u->flags & UREQ_F_RESP_DONE)) {
            u->flags |= UREQ_F_RESP_DONE;
            dp_stream_upstream_trailers(s);
        }
    } else if (frame->hd.type == NGHTTP2_DATA && end && !(u->flags & UREQ_F_RESP_DONE)) {
        u->flags |= UREQ_F_RESP_DONE;
        dp_stream_upstream_data(s, NULL, 0, 1);
    }
    return 0;
}

static int h2c_on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                             const uint8_t *data, size_t len, void *user_data)
{
    struct dp_upstream_req *u = nghttp2_session_get_stream_user_data(session, stream_id);
    if (u == NULL || u->s == NULL) {
        nghttp2_session_consume(session, stream_id, len);
        return 0;
    }
    dp_stream_upstream_data(u->s, data, len, 0);
    /* u may be gone if the stream was reset meanwhile */
    u = nghttp2_session_get_stream_user_data(session, stream_id);
    if (u && (u->flags & UREQ_F_PAUSED)) {
        /* Only the stream's window stays closed: the connection's is
         * shared with every other stream on it, and a client that stops
         * reading one response must not stall the others' (an upstream
         * connection whose window paused streams held answered nobody). */
        nghttp2_session_consume_connection(session, len);
        u->unconsumed += len;
    } else {
        nghttp2_session_consume(session, stream_id, len);
    }
    return 0;
}

/* The upstream did not process u's stream (RFC 9113 8.7: REFUSED_STREAM,
 * or a GOAWAY below its id): send it again, once, on a connection that
 * takes streams, with the body sent so far put back in front of what is
 * still to come. The client never hears of it. 0, or -1 when it cannot be
 * (then the stream fails as before). */
static int h2c_retry(struct dp_upstream_req *u)
{
    struct dp_stream *s = u->s;
    struct dp_buf body = {0};
    if (dp_buf_append(&body, dp_buf_head(&u->sent), dp_buf_size(&u->sent)) < 0 ||
        dp_buf_append(&body, dp_buf_head(&s->req_body), dp_buf_size(&s->req_body)) < 0) {
        dp_buf_release(&body);
        return -1;
    }
    u->replay += dp_buf_size(&u->sent);
    dp_buf_release(&u->sent);
    dp_buf_release(&s->req_body);
    s->req_body = body;
    u->flags = UREQ_F_RETRIED;
    u->h2_id = 0;
    u->unconsumed = 0;
    LG_D("upstream", "cluster %s: %s: C%llu S%llu refused unprocessed: sent again", u->pool->rt->name,
         u->pool->addr_str, (unsigned long long)s->hcm->id, (unsigned long long)s->id);
    dp_pool_wait_push(u->pool, u);
    dp_pool_dispatch(u->pool);
    return 0;
}

static int h2c_on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                               void *user_data)
{
    struct dp_uconn *uc = user_data;
    struct dp_upstream_req *u = nghttp2_session_get_stream_user_data(session, stream_id);
    if (u == NULL)
        return 0;
    h2c_detach(uc, u);
    struct dp_stream *s = u->s;
    if (s && error_code == NGHTTP2_REFUSED_STREAM && !(u->flags & (UREQ_F_RESP_STARTED | UREQ_F_RETRIED |
                                                                    UREQ_F_NO_REPLAY | UREQ_F_UPGRADE)))
        if (h2c_retry(u) == 0)
            return 0;
    int done = (u->flags & UREQ_F_RESP_DONE) != 0;
    struct dp_pool *p = u->pool;
    dp_ureq_free(u);
    if (p->wait_head && uc->n_streams + 1 >= p->rt->cfg->h2_max_concurrent_streams)
        dp_pool_dispatch(p); /* a stream slot is free for one that waits */
    if (s && !done) {
        char body[128];
        snprintf(body, sizeof(body), UPSTREAM_RESET_BODY "remote reset (%s)",
                 nghttp2_http2_strerror(error_code));
        dp_stream_upstream_failed(s, 503, "UR", body);
    }
    return 0;
}

static void h2c_callbacks(nghttp2_session_callbacks *cbs)
{
    nghttp2_session_callbacks_set_on_header_callback(cbs, h2c_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2c_on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2c_on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2c_on_stream_close);
}


/* ---- the codec's hooks ---------------------------------------------------------- */

static void h2c_on_connected(struct dp_uconn *uc)
{
    struct dp_pool *p = uc->pool;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0) {
        dp_uconn_destroy(uc);
        return;
    }
    h2c_callbacks(cbs);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, p->rt->cfg->h2_hpack_table_size);
    int rc = nghttp2_session_client_new2(&uc->ngh2, cbs, uc, opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    if (rc != 0) {
        dp_uconn_destroy(uc);
        return;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, p->rt->cfg->h2_initial_stream_window},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, p->rt->cfg->h2_hpack_table_size},
    };
    nghttp2_submit_settings(uc->ngh2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(uc->ngh2, NGHTTP2_FLAG_NONE, 0,
                                          (int32_t)p->rt->cfg->h2_initial_connection_window);
    dp_pool_dispatch(p);
    h2c_flush(uc);
}

static void h2c_on_read(struct dp_uconn *uc)
{
    struct dp_conn *c = &uc->conn;
    size_t n = dp_buf_size(&c->in);
    if (n) {
        uc->ngh2_busy = 1;
        ssize_t r = nghttp2_session_mem_recv(uc->ngh2, dp_buf_head(&c->in), n);
        uc->ngh2_busy = 0;
        dp_buf_consume(&c->in, n);
        if (r < 0) {
            LG_D("upstream", "cluster %s: %s: HTTP/2 error: %s", uc->pool->rt->name,
                 uc->pool->addr_str, nghttp2_strerror((int)r));
            struct dp_pool *p = uc->pool;
            dp_conn_close(c, DP_CONN_CLOSE_LOCAL);
            dp_uconn_fail_all(uc, DP_CONN_CLOSE_RESET);
            dp_uconn_free(uc);
            dp_pool_dispatch(p);
            return;
        }
    }
    h2c_flush(uc);
    if (!dp_conn_closed(c) && !nghttp2_session_want_read(uc->ngh2) &&
        !nghttp2_session_want_write(uc->ngh2)) {
        /* nghttp2 ended the session itself (a GOAWAY for what the peer
         * sent): its streams would otherwise wait for the route timeout. */
        LG_D("upstream", "cluster %s: %s: HTTP/2 session ended by a protocol error",
             uc->pool->rt->name, uc->pool->addr_str);
        struct dp_pool *p = uc->pool;
        dp_conn_close(c, DP_CONN_CLOSE_LOCAL);
        dp_uconn_fail_all(uc, DP_CONN_CLOSE_RESET);
        dp_uconn_free(uc);
        dp_pool_dispatch(p);
    }
}

static void h2c_kick(struct dp_uconn *uc, struct dp_upstream_req *u)
{
    if (u->flags & UREQ_F_DEFERRED) {
        u->flags &= ~UREQ_F_DEFERRED;
        nghttp2_session_resume_data(uc->ngh2, u->h2_id);
    }
    h2c_flush(uc);
}

static void h2c_cancel(struct dp_uconn *uc, struct dp_upstream_req *u)
{
    nghttp2_submit_rst_stream(uc->ngh2, NGHTTP2_FLAG_NONE, u->h2_id, NGHTTP2_CANCEL);
    h2c_detach(uc, u);
    dp_ureq_free(u);
    h2c_flush(uc);
}

/* No pause: the DATA of a paused stream is acknowledged only when it
 * resumes (h2c_on_data_chunk), which closes its window. */
static void h2c_resume(struct dp_uconn *uc, struct dp_upstream_req *u)
{
    if (u->unconsumed) {
        nghttp2_session_consume_stream(uc->ngh2, u->h2_id, u->unconsumed);
        u->unconsumed = 0;
        h2c_flush(uc);
    }
}

static void h2c_destroy(struct dp_uconn *uc)
{
    if (uc->ngh2)
        nghttp2_session_del(uc->ngh2);
}

const struct dp_client_codec dp_http2_client_codec = {
    .multiplexed = 1,
    .upgrades = 0,
    .on_connected = h2c_on_connected,
    .on_read = h2c_on_read,
    .on_drained = h2c_flush,
    .on_close = NULL, /* no response ends with the connection: its streams fail */
    .start = h2c_submit,
    .flush = h2c_flush,
    .kick = h2c_kick,
    .cancel = h2c_cancel,
    .pause = NULL,
    .resume = h2c_resume,
    .detach = h2c_detach,
    .destroy = h2c_destroy,
};
