/*
 * The HTTP/1.1 server codec (http-parser): one request at a time per
 * connection (pipelined ones wait in the input), request heads checked
 * against smuggling, responses framed by Content-Length, chunked coding or
 * close. The connection's life is hcm.c's; the stream logic is stream.c's.
 */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "dataplane/hcm.h"
#include "dataplane/stream.h"

enum { H1_EV_NONE = 0, H1_EV_HEADERS, H1_EV_BODY, H1_EV_COMPLETE };

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
/* A Host value (or an absolute-form target's authority): reg-name or IP
 * literal, and an optional port (RFC 3986 3.2.2-3.2.3), nothing else. */
static int valid_authority(struct dp_str a)
{
    if (a.n == 0)
        return 0;
    for (size_t i = 0; i < a.n; i++) {
        unsigned char c = (unsigned char)a.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c != 0 && strchr("-._~!$&'()*+,;=%:[]", c))))
            return 0;
    }
    return 1;
}

static struct dp_str trim_ows(struct dp_str v)
{
    while (v.n && (v.p[0] == ' ' || v.p[0] == '\t')) {
        v.p++;
        v.n--;
    }
    while (v.n && (v.p[v.n - 1] == ' ' || v.p[v.n - 1] == '\t'))
        v.n--;
    return v;
}

static size_t count_headers(const struct dp_headers *hs, struct dp_str name)
{
    size_t n = 0;
    for (size_t i = 0; i < hs->n; i++)
        n += dp_str_eq(hs->v[i].name, name);
    return n;
}

/* Returns 0, or the status of a malformed head with a short reason in *why
 * (NULL: the generic one). */
static int h1_finish_head(struct dp_hcm *h, struct dp_stream *s, const char **why)
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

    /* The request target: visible ASCII only, and no fragment (RFC 9112
     * 3.2; nginx and Envoy refuse the rest). http-parser lets TAB, form
     * feed and bytes from 0x80 through, and a fragment would stop
     * normalization and reach the upstream. */
    for (size_t i = 0; i < s->req.path.n; i++) {
        unsigned char c = (unsigned char)s->req.path.p[i];
        if (c <= 0x20 || c >= 0x7f) {
            *why = "invalid character in the request target\n";
            return 400;
        }
        if (c == '#') {
            *why = "fragment in the request target\n";
            return 400;
        }
    }

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
    if (te && s->req.version == DP_HTTP_10) {
        /* RFC 9112 6.1: faulty framing, whatever it says */
        *why = "transfer-encoding in an HTTP/1.0 request\n";
        return 400;
    }
    if (te && (count_headers(&s->req.headers, DP_STR_LIT("transfer-encoding")) > 1 ||
               !dp_str_ieq_lit(trim_ows(te->value), "chunked"))) {
        if (!dp_http_list_has_token(te->value, "chunked") &&
            count_headers(&s->req.headers, DP_STR_LIT("transfer-encoding")) == 1)
            return 501; /* a transfer coding other than chunked */
        /* "identity, chunked", "chunked, chunked", two headers: chunked must
         * be the one coding, once (Envoy and nginx refuse the rest). */
        *why = "transfer-encoding must be chunked alone\n";
        return 400;
    }

    const struct dp_header *host = dp_headers_get(&s->req.headers, DP_STR_LIT("host"));
    if (host && count_headers(&s->req.headers, DP_STR_LIT("host")) > 1) {
        *why = "more than one Host header\n"; /* RFC 9112 3.2 */
        return 400;
    }
    if (host && !valid_authority(host->value)) {
        *why = "invalid Host header\n";
        return 400;
    }
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
        if (u.field_set & (1 << UF_USERINFO)) {
            *why = "userinfo in the request target\n";
            return 400;
        }
        /* The target's authority wins over Host (RFC 9112 3.2.2): from the
         * host (with its brackets, for an IP literal) to the port's end. */
        const char *a = memchr(s->req.path.p, '/', s->req.path.n);
        if (a == NULL || (size_t)(a - s->req.path.p) + 2 > s->req.path.n || a[1] != '/')
            return 400;
        a += 2;
        size_t an = 0, rest = s->req.path.n - (size_t)(a - s->req.path.p);
        while (an < rest && a[an] != '/' && a[an] != '?')
            an++;
        s->req.authority = (struct dp_str){a, an};
        if (!valid_authority(s->req.authority)) {
            *why = "invalid authority in the request target\n";
            return 400;
        }
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
    if (h->cfg)
        dp_stat_add(h->cfg->st.cx_protocol_error, 1);
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

/* A chunked request body's framing is checked (h1_chunk.c) before
 * http-parser reads it, as far as it has arrived, and not in step with it:
 * a body that is all in c->in is refused before its head goes upstream.
 * (http-parser's chunk callbacks could tell where chunks start, but not
 * what its lenient build skipped over on the way.) Returns 1 after the
 * 400. */
static int h1_chunk_check(struct dp_hcm *h)
{
    struct dp_conn *c = &h->conn;
    size_t len = dp_buf_size(&c->in);
    const char *why;
    if (dp_h1_chunk_feed(&h->h1_chunk, dp_buf_head(&c->in) + h->h1_chunk_ahead, len - h->h1_chunk_ahead, &why) == 0) {
        h->h1_chunk_ahead = len;
        return 0;
    }
    dp_buf_consume(&c->in, len);
    h1_protocol_error(h, 400, why);
    return 1;
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
        if (h->h1_chunk.state != DP_H1_CHUNK_OFF && h1_chunk_check(h))
            return;
        size_t n = http_parser_execute(&h->parser, &h1_settings, data, len);
        enum http_errno err = HTTP_PARSER_ERRNO(&h->parser);
        if (h->h1_chunk.state != DP_H1_CHUNK_OFF)
            h->h1_chunk_ahead -= n; /* <= what the check saw */
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
            const char *why = NULL;
            int st = h1_finish_head(h, s, &why);
            if (st) {
                dp_buf_consume(&c->in, dp_buf_size(&c->in));
                h1_protocol_error(h, st, why                 ? why
                                         : st == 501 ? "unsupported transfer encoding\n"
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
            /* A chunked body follows (after CONNECT, tunnel bytes do). */
            if ((h->parser.flags & F_CHUNKED) && h->parser.method != HTTP_CONNECT) {
                dp_h1_chunk_start(&h->h1_chunk);
                /* Paused in on_headers_complete, http-parser has not yet
                 * consumed the head's last byte, its LF: c->in starts with
                 * it. (Its lenient build takes any byte after the CR there:
                 * the guard then sees that byte as the body's first.) */
                h->h1_chunk_ahead = dp_buf_size(&c->in) && *dp_buf_head(&c->in) == '\n';
                if (h1_chunk_check(h))
                    return;
            }
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
            h->h1_chunk.state = DP_H1_CHUNK_OFF;
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

static void h1_write_head(struct dp_stream *s, int end_stream)
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
        if (dp_hcm_skip_response_header(hd->name))
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
    if (!dp_hcm_bodyless_status(status)) {
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
            if (!dp_hcm_skip_response_header(hd->name))
                dp_http_append_field(out, hd->name, hd->value);
        }
    dp_buf_append(out, "\r\n", 2);
}

static void h1_write_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream)
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
        if (!dp_hcm_skip_response_header(hd->name))
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
        dp_hcm_close_graceful(h);
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

/* ---- the codec interface (hcm.h) --------------------------------------- */

static int h1_start(struct dp_hcm *h)
{
    h->codec = &dp_http1_server_codec;
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
    if (h->cfg)
        dp_conn_set_timeout(&h->conn, h->cfg->request_headers_timeout);
    return 0;
}

static void h1_on_drained(struct dp_hcm *h)
{
    /* HTTP/1: the upstream may have been paused by our full output. */
    if (h->h1_cur && (h->h1_cur->flags & DP_STREAM_F_UPSTREAM_PAUSED))
        dp_stream_downstream_drained(h->h1_cur);
}

static int h1_on_timeout(struct dp_hcm *h)
{
    if (h->h1_cur && !(h->h1_cur->flags & DP_STREAM_F_REQ_HEADERS_DONE)) {
        /* Slowloris: the request head did not arrive in time. */
        struct dp_stream *s = h->h1_cur;
        s->flags |= DP_STREAM_F_CLOSE_AFTER;
        dp_stream_set_response_flag(s, "DPE");
        dp_stream_send_local_reply(s, 408, "text/plain", "request header timeout\n", 23);
        return 1;
    }
    return 0;
}

static void h1_drain(struct dp_hcm *h)
{
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

static void h1_streams_reset(struct dp_hcm *h)
{
    h->h1_cur = NULL;
}

static void h1_destroy(struct dp_hcm *h)
{
    dp_buf_release(&h->h1_hdr);
}

static void h1_send_headers(struct dp_stream *s, int end_stream)
{
    struct dp_hcm *h = s->hcm;
    h1_write_head(s, end_stream);
    dp_conn_flush(&h->conn);
    if (s->flags & DP_STREAM_F_RESP_COMPLETE)
        dp_hcm_stream_done(s);
}

static void h1_send_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream)
{
    struct dp_hcm *h = s->hcm;
    h1_write_data(s, p, n, end_stream);
    dp_conn_flush(&h->conn);
    if (end_stream && !dp_conn_closed(&h->conn))
        dp_hcm_stream_done(s);
}

static void h1_send_trailers(struct dp_stream *s)
{
    dp_hcm_send_data(s, NULL, 0, 1); /* h1_last_chunk writes them when it can */
}

static void h1_stream_done(struct dp_stream *s)
{
    struct dp_hcm *h = s->hcm;
    if (h->h1_cur != s)
        return;
    /* The response is out but the request is still arriving: keep parsing
     * (and dropping) it; the stream ends with the request. */
    if (!(s->flags & DP_STREAM_F_REQ_COMPLETE) && !(s->flags & DP_STREAM_F_CLOSE_AFTER) &&
        !dp_conn_closed(&h->conn))
        return;
    h1_response_done(h, s);
}

static void h1_reset_stream(struct dp_stream *s)
{
    /* HTTP/1 has no stream reset: the connection goes. */
    dp_hcm_destroy(s->hcm);
}

static size_t h1_pending_out(struct dp_stream *s)
{
    return dp_conn_unsent(&s->hcm->conn);
}

static void h1_pause_request(struct dp_stream *s)
{
    dp_conn_pause_read(&s->hcm->conn);
}

static void h1_resume_request(struct dp_stream *s)
{
    dp_conn_resume_read(&s->hcm->conn);
}

const struct dp_server_codec dp_http1_server_codec = {
    .start = h1_start,
    .on_read = h1_process,
    .on_drained = h1_on_drained,
    .on_timeout = h1_on_timeout,
    .drain = h1_drain,
    .streams_reset = h1_streams_reset,
    .destroy = h1_destroy,
    .send_headers = h1_send_headers,
    .send_data = h1_send_data,
    .send_trailers = h1_send_trailers,
    .send_informational = h1_send_informational,
    .stream_done = h1_stream_done,
    .reset_stream = h1_reset_stream,
    .pending_out = h1_pending_out,
    .pause_request = h1_pause_request,
    .resume_request = h1_resume_request,
    /* no idle_close (HTTP/1 has nothing to say before closing), no
     * arm_idle (the timer is set per request), no consumed (TCP's window) */
};
