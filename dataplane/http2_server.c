/*
 * The HTTP/2 server codec (nghttp2): streams from HEADERS frames, request
 * bodies under flow control (a window reopens only as the upstream takes
 * the bytes), responses through data providers, the two-GOAWAY drain, and
 * the rapid-reset guard. The connection's life is hcm.c's; the stream
 * logic is stream.c's.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/hcm.h"
#include "dataplane/stream.h"
#include "xds/log.h"

static void h2_flush(struct dp_hcm *h);
static void h2_resume_paused(struct dp_hcm *h);
static void h2_arm_idle(struct dp_hcm *h);

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
        if (dp_hcm_skip_response_header(hd->name) || (hd->name.n && hd->name.p[0] == ':'))
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
        s->hcm->resp_held -= n;
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
    size_t held = dp_buf_size(&s->resp_body);
    dp_stream_free(s);
    if (held)
        h2_resume_paused(h);
    if (h->n_streams == 0) {
        if (h->goaway_final)
            dp_hcm_close_graceful(h);
        else if (!h->draining)
            h2_arm_idle(h);
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
    h->codec = &dp_http2_server_codec;
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
    h2_arm_idle(h);
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
        dp_hcm_close_graceful(h);
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
        if (dp_hcm_skip_response_header(hd->name))
            continue;
        nva[k++] = (nghttp2_nv){(uint8_t *)hd->name.p, (uint8_t *)hd->value.p, hd->name.n,
                                hd->value.n, NGHTTP2_NV_FLAG_NO_COPY_NAME};
    }
    if (s->resp.content_length >= 0 && !dp_hcm_bodyless_status(s->resp.status)) {
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

static void h2_drain_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct dp_hcm *h = t->data;
    h->goaway_final = 1;
    nghttp2_submit_goaway(h->ngh2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->ngh2),
                          NGHTTP2_NO_ERROR, NULL, 0);
    h2_flush(h);
    if (h->n_streams == 0)
        dp_hcm_close_graceful(h);
}

/* ---- the codec interface (hcm.h) --------------------------------------- */

static void h2_on_read(struct dp_hcm *h)
{
    struct dp_conn *c = &h->conn;
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
            dp_hcm_close_graceful(h);
            return;
        }
        dp_buf_consume(&c->in, n);
    }
    h2_flush(h);
    if (!dp_conn_closed(c) && ((c->flags & DP_CONN_F_EOF) || h->h2_abusive)) {
        dp_hcm_reset_streams(h);
        dp_hcm_close_graceful(h);
    }
}

/* Resumes the streams whose upstream was paused and that may take more
 * now (dp_stream_may_resume): after a drain of the connection, and after a
 * stream went away with the bytes it held (a client that reset its stalled
 * streams frees the connection's budget for the others, with no write to
 * wake anyone). */
static void h2_resume_paused(struct dp_hcm *h)
{
    struct dp_conn *c = &h->conn;
    while (!dp_conn_closed(c)) {
        /* Resuming one may end (and free) others: look again each time. */
        struct dp_stream *s = h->streams;
        while (s && !((s->flags & DP_STREAM_F_UPSTREAM_PAUSED) && dp_stream_may_resume(s)))
            s = s->next;
        if (s == NULL)
            break;
        dp_stream_downstream_drained(s);
    }
}

static void h2_on_drained(struct dp_hcm *h)
{
    h2_flush(h);
    /* A stream whose upstream was paused is resumed when its buffer
     * drains, which the flush above may have done; a stream that no
     * read callback reaches any more must not stay parked. */
    h2_resume_paused(h);
}

static void h2_idle_close(struct dp_hcm *h)
{
    nghttp2_submit_goaway(h->ngh2, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(h->ngh2),
                          NGHTTP2_NO_ERROR, NULL, 0);
    h2_flush(h);
}

static void h2_arm_idle(struct dp_hcm *h)
{
    if (h->cfg == NULL)
        return;
    dp_conn_set_timeout(&h->conn, h->n_streams ? 0 : h->cfg->idle_timeout);
}

static void h2_drain(struct dp_hcm *h)
{
    /* Two GOAWAYs, as RFC 9113 6.8 and Envoy do: first a notice (last
     * stream 2^31-1) so the client stops opening streams, then, after
     * drain_timeout, the final one. A request the client sent before it
     * saw the notice is still served, not refused. */
    nghttp2_submit_shutdown_notice(h->ngh2);
    h2_flush(h);
    ev_timer_init(&h->drain_timer, h2_drain_timer_cb, h->cfg ? h->cfg->drain_timeout : 5.0, 0.);
    h->drain_timer.data = h;
    ev_timer_start(h->w->loop, &h->drain_timer);
}

static void h2_destroy(struct dp_hcm *h)
{
    ev_timer_stop(h->w->loop, &h->drain_timer);
    if (h->ngh2)
        nghttp2_session_del(h->ngh2);
}

static void h2_send_headers(struct dp_stream *s, int end_stream)
{
    struct dp_hcm *h = s->hcm;
    if (h2_submit_response(s, end_stream || (s->flags & DP_STREAM_F_HEAD)) < 0) {
        nghttp2_submit_rst_stream(h->ngh2, NGHTTP2_FLAG_NONE, s->h2_id, NGHTTP2_INTERNAL_ERROR);
    }
    h2_flush(h);
}

/* More of the response is in s (body bytes or its end): wake the data
 * provider if it had run dry (h2_read_cb deferred), and write. */
static void h2_resume_data(struct dp_stream *s)
{
    struct dp_hcm *h = s->hcm;
    if (s->flags & DP_STREAM_F_DEFERRED) {
        s->flags &= ~DP_STREAM_F_DEFERRED;
        nghttp2_session_resume_data(h->ngh2, s->h2_id);
    }
    h2_flush(h);
}

static void h2_send_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream)
{
    if (n && !(s->flags & DP_STREAM_F_HEAD) && dp_buf_append(&s->resp_body, p, n) == 0)
        s->hcm->resp_held += n;
    h2_resume_data(s);
}

static void h2_send_trailers(struct dp_stream *s)
{
    s->flags |= DP_STREAM_F_RESP_COMPLETE;
    if (s->flags & DP_STREAM_F_HEAD)
        return;
    h2_resume_data(s);
}

static int h2_send_informational(struct dp_stream *s)
{
    struct dp_hcm *h = s->hcm;
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

static void h2_reset_stream(struct dp_stream *s)
{
    struct dp_hcm *h = s->hcm;
    nghttp2_submit_rst_stream(h->ngh2, NGHTTP2_FLAG_NONE, s->h2_id, NGHTTP2_INTERNAL_ERROR);
    h2_flush(h);
}

static size_t h2_pending_out(struct dp_stream *s)
{
    /* HTTP/2: what the stream holds. The connection's own buffer is bounded
     * by h2_flush (nghttp2 is not asked for more while it is full), and it
     * is shared: counting it here parked streams that nothing resumed. */
    return dp_buf_size(&s->resp_body);
}

/* HTTP/2 flow control: the stream's upstream took n bytes of request body. */
static void h2_consumed(struct dp_stream *s, size_t n)
{
    struct dp_hcm *h = s->hcm;
    nghttp2_session_consume(h->ngh2, s->h2_id, n);
    h2_flush(h);
}

const struct dp_server_codec dp_http2_server_codec = {
    .start = h2_start,
    .on_read = h2_on_read,
    .on_drained = h2_on_drained,
    .idle_close = h2_idle_close,
    .arm_idle = h2_arm_idle,
    .drain = h2_drain,
    .destroy = h2_destroy,
    .send_headers = h2_send_headers,
    .send_data = h2_send_data,
    .send_trailers = h2_send_trailers,
    .send_informational = h2_send_informational,
    .reset_stream = h2_reset_stream,
    .pending_out = h2_pending_out,
    .consumed = h2_consumed,
    /* no stream_done: nghttp2 closes the stream, h2_on_stream_close frees
     * it; no pause/resume_request: while paused the stream's window is
     * simply not reopened (no consume) */
};
