/*
 * The HTTP/1.1 client codec: one request at a time per connection. The
 * request head is written out (chunked when its length is not known, with
 * the trailers when the cluster enables them), the body follows as the
 * stream provides it, and http-parser reads the response (1xx heads,
 * chunked trailers, close-delimited bodies). A 101 (or a 2xx to CONNECT)
 * turns the connection into a tunnel of raw bytes; so does a CONNECT that
 * ends here (uc->raw).
 */
#include "dataplane/upstream_int.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>
#include <openssl/evp.h>

#include "dataplane/stream.h"
#include "xds/log.h"

static void h1_push_body(struct dp_uconn *uc, struct dp_upstream_req *u);

/* ---- the request ------------------------------------------------------------------ */

static int h1_send_head(struct dp_uconn *uc, struct dp_upstream_req *u)
{
    struct dp_stream *s = u->s;
    struct dp_buf *out = &uc->conn.out;
    const struct dp_request_head *r = &s->req;

    uc->cur = u;
    /* The first read of a response is one block; later ones as much as the
     * stream may take then (dp_stream_read_ahead, after each read). */
    uc->conn.read_limit = DP_BUF_BLOCK;
    u->uc = uc;
    uc->served++;
    http_parser_init(&uc->parser, HTTP_RESPONSE);
    uc->parser.data = uc;

    int upgrade = dp_stream_wants_upgrade(s);
    if (upgrade && (s->flags & DP_STREAM_F_CONNECT)) {
        dp_buf_append(out, "CONNECT ", 8); /* authority-form */
        dp_buf_append(out, r->authority.p, r->authority.n);
    } else {
        dp_buf_append(out, r->method.p, r->method.n);
        dp_buf_append(out, " ", 1);
        dp_buf_append(out, r->path.p, r->path.n);
    }
    dp_buf_append(out, " HTTP/1.1\r\n", 11);
    dp_http_append_field(out, DP_STR_LIT("host"), r->authority);
    for (size_t i = 0; i < r->headers.n; i++) {
        const struct dp_header *h = &r->headers.v[i];
        if (dp_client_is_hop(h->name))
            continue;
        dp_http_append_field(out, h->name, h->value);
    }
    if (upgrade) {
        /* The upgrade head; what follows it is the tunnel's, unframed. */
        u->flags |= UREQ_F_UPGRADE;
        if (!(s->flags & DP_STREAM_F_CONNECT)) {
            dp_buf_append(out, "connection: upgrade\r\nupgrade: ", 30);
            dp_buf_append(out, s->upgrade.p, s->upgrade.n);
            dp_buf_append(out, "\r\n", 2);
            /* RFC 8441 has no Sec-WebSocket-Key; an HTTP/1.1 server needs
             * one (RFC 6455 4.1). Its Accept is dropped on the way back. */
            if ((s->flags & DP_STREAM_F_H2_EXT_CONNECT) && dp_str_ieq_lit(s->upgrade, "websocket") &&
                !dp_headers_get(&r->headers, DP_STR_LIT("sec-websocket-key"))) {
                unsigned char key[16];
                char b64[32];
                for (int i = 0; i < 16; i += 4) {
                    uint32_t v = dp_worker_rand(s->hcm->w);
                    memcpy(key + i, &v, 4);
                }
                int n = EVP_EncodeBlock((unsigned char *)b64, key, 16);
                dp_http_append_field(out, DP_STR_LIT("sec-websocket-key"), (struct dp_str){b64, (size_t)n});
            }
        }
        dp_buf_append(out, "\r\n", 2);
        u->flags |= UREQ_F_HEAD_SENT;
        h1_push_body(uc, u);
        return 0;
    }
    if (r->content_length >= 0) {
        if (r->content_length > 0 || dp_str_eq(r->method, DP_STR_LIT("POST")) ||
            dp_str_eq(r->method, DP_STR_LIT("PUT")) || dp_str_eq(r->method, DP_STR_LIT("PATCH"))) {
            dp_buf_append(out, "content-length: ", 16);
            dp_buf_append_dec(out, (uint64_t)r->content_length);
            dp_buf_append(out, "\r\n", 2);
        }
    } else if (((s->flags & DP_STREAM_F_REQ_COMPLETE) && dp_buf_size(&s->req_body) == 0) ||
               (s->flags & DP_STREAM_F_REQ_NO_BODY)) {
        /* HTTP/2 request without body and without content-length, or an
         * HTTP/1.1 one whose head says it has none */
        if (dp_str_eq(r->method, DP_STR_LIT("POST")) || dp_str_eq(r->method, DP_STR_LIT("PUT")) ||
            dp_str_eq(r->method, DP_STR_LIT("PATCH")))
            dp_buf_append(out, "content-length: 0\r\n", 19);
    } else if ((s->flags & DP_STREAM_F_REQ_COMPLETE) &&
               !(s->req_trailers.n && uc->pool->rt->cfg->h1_enable_trailers)) {
        dp_buf_append(out, "content-length: ", 16);
        dp_buf_append_dec(out, dp_buf_size(&s->req_body));
        dp_buf_append(out, "\r\n", 2);
    } else {
        dp_buf_append(out, "transfer-encoding: chunked\r\n", 28);
        u->flags |= UREQ_F_CHUNKED;
    }
    dp_buf_append(out, "\r\n", 2);
    u->flags |= UREQ_F_HEAD_SENT;
    h1_push_body(uc, u);
    return 0;
}

/* Moves request body from the stream to the connection, within limits. */
static void h1_push_body(struct dp_uconn *uc, struct dp_upstream_req *u)
{
    struct dp_stream *s = u->s;
    struct dp_buf *out = &uc->conn.out;
    size_t limit = uc->pool->rt->cfg->per_connection_buffer_limit;
    size_t moved = 0;

    if (s == NULL || (u->flags & UREQ_F_REQ_DONE))
        return;
    while (dp_buf_size(&s->req_body) > 0 && dp_buf_size(out) < limit) {
        size_t n = dp_buf_size(&s->req_body);
        if (n > limit - dp_buf_size(out))
            n = limit - dp_buf_size(out);
        if (u->flags & UREQ_F_CHUNKED) {
            dp_buf_append_hex(out, n);
            dp_buf_append(out, "\r\n", 2);
        }
        dp_buf_append(out, dp_buf_head(&s->req_body), n);
        if (u->flags & UREQ_F_CHUNKED)
            dp_buf_append(out, "\r\n", 2);
        dp_buf_consume(&s->req_body, n);
        moved += n;
    }
    if (dp_buf_size(&s->req_body) > 0)
        uc->conn.flags |= DP_CONN_F_WANT_DRAIN; /* more when this is out */
    if ((s->flags & DP_STREAM_F_REQ_COMPLETE) && dp_buf_size(&s->req_body) == 0) {
        if (u->flags & UREQ_F_CHUNKED) {
            /* The last chunk, with the trailers if the cluster enables them. */
            dp_buf_append(out, "0\r\n", 3);
            if (uc->pool->rt->cfg->h1_enable_trailers)
                for (size_t i = 0; i < s->req_trailers.n; i++)
                    if (!dp_client_is_hop(s->req_trailers.v[i].name))
                        dp_http_append_field(out, s->req_trailers.v[i].name, s->req_trailers.v[i].value);
            dp_buf_append(out, "\r\n", 2);
        }
        u->flags |= UREQ_F_REQ_DONE;
        if (u->flags & UREQ_F_UPGRADE) {
            dp_conn_shutdown_write(&uc->conn); /* the client half-closed the tunnel */
            if (dp_conn_closed(&uc->conn))
                return;
        }
    }
    dp_conn_flush(&uc->conn);
    if (moved) {
        dp_hcm_consumed(s, moved);
        dp_stream_upstream_drained(s);
    }
}

/* The field in uc->hdr goes to the response head, or after the body
 * (chunked trailers) to the trailers when the cluster enables them. */
static int uh1_commit(struct dp_uconn *uc, struct dp_stream *s)
{
    const char *b = (const char *)dp_buf_head(&uc->hdr);
    size_t total = dp_buf_size(&uc->hdr);
    int rc = 0;
    if (!(uc->parser.flags & F_TRAILING))
        rc = dp_headers_add(&s->resp.headers, &s->arena, (struct dp_str){b, uc->name_len},
                            (struct dp_str){b + uc->name_len, total - uc->name_len});
    else if (uc->pool->rt->cfg->h1_enable_trailers)
        rc = dp_headers_add(&s->resp_trailers, &s->arena, (struct dp_str){b, uc->name_len},
                            (struct dp_str){b + uc->name_len, total - uc->name_len});
    dp_buf_reset(&uc->hdr); /* released when the head is complete */
    uc->name_len = 0;
    uc->last_was_value = 0;
    return rc;
}

static int uh1_on_header_field(http_parser *p, const char *at, size_t len)
{
    struct dp_uconn *uc = p->data;
    struct dp_stream *s = uc->cur ? uc->cur->s : NULL;
    if (uc->last_was_value && s && uh1_commit(uc, s) < 0)
        return -1;
    uc->name_len += len;
    return dp_buf_append(&uc->hdr, at, len);
}

static int uh1_on_header_value(http_parser *p, const char *at, size_t len)
{
    struct dp_uconn *uc = p->data;
    uc->last_was_value = 1;
    return dp_buf_append(&uc->hdr, at, len);
}

static int uh1_on_message_begin(http_parser *p)
{
    struct dp_uconn *uc = p->data;
    struct dp_stream *s = uc->cur ? uc->cur->s : NULL;
    dp_buf_release(&uc->hdr);
    uc->name_len = 0;
    uc->last_was_value = 0;
    if (s)
        s->resp.headers.n = 0;
    return 0;
}

static int uh1_on_headers_complete(http_parser *p)
{
    struct dp_uconn *uc = p->data;
    struct dp_stream *s = uc->cur ? uc->cur->s : NULL;
    if (uc->last_was_value && s && uh1_commit(uc, s) < 0)
        return -1;
    dp_buf_release(&uc->hdr);
    uc->name_len = 0;
    uc->last_was_value = 0;
    if (s && (uc->cur->flags & UREQ_F_UPGRADE) &&
        (p->status_code == 101 || ((s->flags & DP_STREAM_F_CONNECT) && p->status_code / 100 == 2))) {
        /* Switching protocols (or CONNECT established): the parser stops
         * after this head (2 = upgrade, no body) and the rest of the
         * connection is the tunnel's. No pause: execute returns past the
         * head's last byte. */
        uc->tunnel = 1;
        uc->ev = UH1_EV_HEADERS;
        return 2;
    }
    if (p->status_code >= 100 && p->status_code < 200) {
        uc->ev = UH1_EV_INFO; /* an interim head; its message ends at once */
        http_parser_pause(p, 1);
        return 0;
    }
    uc->ev = UH1_EV_HEADERS;
    http_parser_pause(p, 1);
    return (s && (s->flags & DP_STREAM_F_HEAD)) ? 1 : 0;
}

static int uh1_on_body(http_parser *p, const char *at, size_t len)
{
    struct dp_uconn *uc = p->data;
    uc->ev = UH1_EV_BODY;
    uc->body = (const uint8_t *)at;
    uc->body_len = len;
    http_parser_pause(p, 1);
    return 0;
}

static int uh1_on_message_complete(http_parser *p)
{
    struct dp_uconn *uc = p->data;
    if (uc->tunnel || (p->status_code >= 100 && p->status_code < 200))
        return 0;
    if ((p->flags & F_TRAILING) && uc->last_was_value && uc->cur && uc->cur->s &&
        uh1_commit(uc, uc->cur->s) < 0)
        return -1;
    uc->ev = UH1_EV_COMPLETE;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings uh1_settings = {
    .on_message_begin = uh1_on_message_begin,
    .on_header_field = uh1_on_header_field,
    .on_header_value = uh1_on_header_value,
    .on_headers_complete = uh1_on_headers_complete,
    .on_body = uh1_on_body,
    .on_message_complete = uh1_on_message_complete,
};

static void uh1_response_done(struct dp_uconn *uc)
{
    struct dp_upstream_req *u = uc->cur;
    int keep = http_should_keep_alive(&uc->parser) && (u->flags & UREQ_F_REQ_DONE) &&
               !(u->flags & UREQ_F_UPGRADE);
    struct dp_stream *s = u->s;
    uc->cur = NULL;
    u->uc = NULL;
    u->flags |= UREQ_F_RESP_DONE;
    dp_ureq_free(u);
    if (s) {
        if (s->resp_trailers.n)
            dp_stream_upstream_trailers(s);
        else
            dp_stream_upstream_data(s, NULL, 0, 1);
    }
    if (dp_conn_closed(&uc->conn))
        return;
    if (keep && dp_buf_size(&uc->conn.in) == 0)
        dp_uconn_make_idle(uc);
    else
        dp_uconn_destroy(uc);
}

static void uc_read_h1(struct dp_uconn *uc)
{
    struct dp_conn *c = &uc->conn;
    while (!dp_conn_closed(c) && dp_buf_size(&c->in) > 0) {
        if (uc->cur == NULL) {
            /* Bytes from an idle connection: the upstream is broken. */
            dp_uconn_destroy(uc);
            return;
        }
        if (uc->cur->flags & UREQ_F_PAUSED)
            return;
        if (uc->tunnel) {
            struct dp_upstream_req *u = uc->cur;
            size_t n = dp_buf_size(&c->in);
            if (u->s == NULL || !(u->flags & UREQ_F_RESP_STARTED))
                return;
            dp_stream_upstream_data(u->s, dp_buf_head(&c->in), n, 0);
            if (!dp_conn_closed(c))
                dp_buf_consume(&c->in, n);
            continue;
        }
        uc->ev = UH1_EV_NONE;
        const char *data = (const char *)dp_buf_head(&c->in);
        size_t len = dp_buf_size(&c->in);
        size_t n = http_parser_execute(&uc->parser, &uh1_settings, data, len);
        enum http_errno err = HTTP_PARSER_ERRNO(&uc->parser);
        if (err == HPE_PAUSED) {
            http_parser_pause(&uc->parser, 0);
        } else if (err != HPE_OK) {
            struct dp_upstream_req *u = uc->cur;
            LG_D("upstream", "cluster %s: %s: invalid HTTP response: %s", uc->pool->rt->name,
                 uc->pool->addr_str, http_errno_description(err));
            uc->cur = NULL;
            u->uc = NULL;
            dp_conn_close(c, DP_CONN_CLOSE_LOCAL);
            dp_ureq_fail(u, 502, "UPE", "upstream protocol error");
            dp_uconn_free(uc);
            return;
        }
        struct dp_upstream_req *u = uc->cur;
        struct dp_stream *s = u->s;
        switch (uc->ev) {
        case UH1_EV_HEADERS: {
            dp_buf_consume(&c->in, n);
            u->flags |= UREQ_F_RESP_STARTED;
            s->resp.status = uc->parser.status_code;
            s->resp.content_length = -1;
            int has_len = uc->parser.content_length != ULLONG_MAX &&
                          !(uc->parser.flags & F_CHUNKED);
            const struct dp_header *cl = dp_headers_get(&s->resp.headers, DP_STR_LIT("content-length"));
            if (cl && !(uc->parser.flags & F_CHUNKED)) {
                char tmp[24];
                size_t k = cl->value.n < sizeof(tmp) - 1 ? cl->value.n : sizeof(tmp) - 1;
                memcpy(tmp, cl->value.p, k);
                tmp[k] = '\0';
                s->resp.content_length = strtoll(tmp, NULL, 10);
            }
            int st = s->resp.status;
            int end = !uc->tunnel && ((s->flags & DP_STREAM_F_HEAD) || st == 204 || st == 304 ||
                                      (has_len && uc->parser.content_length == 0));
            dp_stream_upstream_headers(s, end);
            if (end && uc->cur == u) {
                /* No body follows: finish the message in the parser. */
                u->flags |= UREQ_F_RESP_DONE;
            }
            break;
        }
        case UH1_EV_INFO:
            dp_buf_consume(&c->in, n);
            s->resp.status = uc->parser.status_code;
            dp_stream_upstream_informational(s);
            break;
        case UH1_EV_BODY:
            dp_stream_upstream_data(s, uc->body, uc->body_len, 0);
            if (!dp_conn_closed(c))
                dp_buf_consume(&c->in, n);
            break;
        case UH1_EV_COMPLETE:
            dp_buf_consume(&c->in, n);
            if (u->flags & UREQ_F_RESP_DONE) {
                /* end already signalled with the headers */
                int keep = http_should_keep_alive(&uc->parser) && (u->flags & UREQ_F_REQ_DONE) &&
                           !(u->flags & UREQ_F_UPGRADE);
                uc->cur = NULL;
                u->uc = NULL;
                dp_ureq_free(u);
                if (keep && dp_buf_size(&c->in) == 0)
                    dp_uconn_make_idle(uc);
                else
                    dp_uconn_destroy(uc);
                return;
            }
            uh1_response_done(uc);
            return;
        default:
            dp_buf_consume(&c->in, n);
            if (n == 0)
                return;
        }
    }
    if (!dp_conn_closed(c) && uc->cur && uc->cur->s)
        c->read_limit = (uint32_t)dp_stream_read_ahead(uc->cur->s);
}

/* ---- the codec's hooks ---------------------------------------------------------- */

static void h1_on_connected(struct dp_uconn *uc)
{
    struct dp_conn *c = &uc->conn;
    struct dp_pool *p = uc->pool;
    if (uc->raw) {
        struct dp_upstream_req *u = uc->cur;
        if (u == NULL || u->s == NULL) {
            dp_uconn_destroy(uc);
            return;
        }
        u->flags |= UREQ_F_HEAD_SENT | UREQ_F_RESP_STARTED;
        u->s->resp.status = 200;
        u->s->resp.content_length = -1;
        dp_stream_upstream_headers(u->s, 0);
        if (uc->cur == u && u->s)
            h1_push_body(uc, u);
        return;
    }
    uc->idle = 1;
    dp_pool_dispatch(p);
    if (!dp_conn_closed(c) && uc->idle && uc->cur == NULL)
        dp_conn_set_timeout(c, p->rt->cfg->idle_timeout);
}

static void h1_on_drained(struct dp_uconn *uc)
{
    if (uc->cur)
        h1_push_body(uc, uc->cur);
}

static void h1_on_close(struct dp_uconn *uc, enum dp_conn_close_reason why)
{
    if (uc->cur && why == DP_CONN_CLOSE_EOF && uc->tunnel && (uc->cur->flags & UREQ_F_RESP_STARTED)) {
        /* The upstream ended the tunnel: so does the stream. */
        struct dp_upstream_req *u = uc->cur;
        struct dp_stream *s = u->s;
        uc->cur = NULL;
        u->uc = NULL;
        dp_ureq_free(u);
        if (s)
            dp_stream_upstream_data(s, NULL, 0, 1);
    } else if (uc->cur && why == DP_CONN_CLOSE_EOF && (uc->cur->flags & UREQ_F_RESP_STARTED)) {
        /* A close-delimited response ends here: a zero-length execute
         * tells http-parser of the EOF, and it calls on_message_complete. */
        struct dp_upstream_req *u = uc->cur;
        uc->ev = UH1_EV_NONE;
        http_parser_execute(&uc->parser, &uh1_settings, NULL, 0);
        if (uc->ev == UH1_EV_COMPLETE && u->s) {
            uc->cur = NULL;
            struct dp_stream *s = u->s;
            dp_ureq_free(u);
            dp_stream_upstream_data(s, NULL, 0, 1);
        }
    }
}

static void h1_cancel(struct dp_uconn *uc, struct dp_upstream_req *u)
{
    /* HTTP/1: the response in flight cannot be skipped; the connection goes. */
    uc->cur = NULL;
    u->uc = NULL;
    dp_ureq_free(u);
    dp_uconn_destroy(uc);
}

static void h1_pause(struct dp_uconn *uc, struct dp_upstream_req *u)
{
    (void)u;
    dp_conn_pause_read(&uc->conn);
}

static void h1_resume(struct dp_uconn *uc, struct dp_upstream_req *u)
{
    if (u->s)
        uc->conn.read_limit = (uint32_t)dp_stream_read_ahead(u->s);
    dp_conn_resume_read(&uc->conn);
}

static void h1_destroy(struct dp_uconn *uc)
{
    dp_buf_release(&uc->hdr);
}

const struct dp_client_codec dp_http1_client_codec = {
    .multiplexed = 0,
    .upgrades = 1,
    .on_connected = h1_on_connected,
    .on_read = uc_read_h1,
    .on_drained = h1_on_drained,
    .on_close = h1_on_close,
    .start = h1_send_head,
    .flush = NULL, /* start() writes at once */
    .kick = h1_push_body,
    .cancel = h1_cancel,
    .pause = h1_pause,
    .resume = h1_resume,
    .detach = NULL, /* one request at a time: uc->cur */
    .destroy = h1_destroy,
};
