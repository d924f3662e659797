/*
 * Streams: request sanitising, routing, the HTTP filter chain, local
 * replies, and the glue between the downstream codec and the upstream.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/accesslog.h"
#include "dataplane/local_reply.h"
#include "dataplane/overload.h"
#include "dataplane/route.h"
#include "dataplane/router.h"
#include "dataplane/stream.h"
#include "dataplane/upstream.h"
#include "dataplane/worker.h"
#include "dataplane/xfcc.h"
#include "xds/log.h"

#define SERVER_NAME "legate"

static void route_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents);
static void guard_cb(struct ev_loop *loop, ev_timer *t, int revents);

/* When the guard must look again: the sooner of the idle deadline and the
 * request deadline (while the request is incomplete); 0 for never. */
static double guard_next(struct dp_stream *s, ev_tstamp now)
{
    double next = 0;
    if (s->cfg && s->cfg->stream_idle_timeout > 0)
        next = s->last_activity + s->cfg->stream_idle_timeout - now;
    if (s->cfg && s->cfg->request_timeout > 0 && !(s->flags & DP_STREAM_F_REQ_COMPLETE)) {
        double r = s->start + s->cfg->request_timeout - now;
        if (next <= 0 || r < next)
            next = r;
    }
    if (s->stream_deadline > 0) {
        double d = s->stream_deadline - now;
        if (next <= 0 || d < next)
            next = d > 0 ? d : 0.001;
    }
    return next;
}

static void guard_arm(struct dp_stream *s, ev_tstamp now)
{
    double next = guard_next(s, now);
    if (next == 0 && !(s->cfg && (s->cfg->stream_idle_timeout > 0 || s->cfg->request_timeout > 0)) &&
        s->stream_deadline <= 0)
        return;
    ev_timer_stop(s->hcm->w->loop, &s->guard);
    ev_timer_set(&s->guard, next > 0.001 ? next : 0.001, 0.);
    ev_timer_start(s->hcm->w->loop, &s->guard);
}

/* Activity on the stream pushes the idle deadline; the timer itself is only
 * moved when it fires (no timer work per event). */
static inline void touch(struct dp_stream *s)
{
    s->last_activity = ev_now(s->hcm->w->loop);
}

/* ---- the filter API ------------------------------------------------------ */

struct dp_request_head *dp_stream_request(struct dp_stream *s)
{
    return &s->req;
}

struct dp_response_head *dp_stream_response(struct dp_stream *s)
{
    return &s->resp;
}

struct dp_arena *dp_stream_arena(struct dp_stream *s)
{
    return &s->arena;
}

const struct dp_peer_identity *dp_stream_peer(struct dp_stream *s)
{
    return &s->hcm->peer;
}

struct dp_headers *dp_stream_request_trailers(struct dp_stream *s)
{
    return &s->req_trailers;
}

struct dp_headers *dp_stream_response_trailers(struct dp_stream *s)
{
    return &s->resp_trailers;
}

const char *dp_stream_route_name(const struct dp_stream *s)
{
    return s->route && s->route->name && s->route->name[0] ? s->route->name : NULL;
}

const char *dp_stream_cluster_name(const struct dp_stream *s)
{
    return s->route && s->route->action == DP_ROUTE_CLUSTER ? s->route->cluster : NULL;
}

uint64_t dp_stream_id(const struct dp_stream *s)
{
    return s->id;
}

uint64_t dp_stream_connection_id(const struct dp_stream *s)
{
    return s->hcm->id;
}

int dp_stream_is_grpc(const struct dp_stream *s)
{
    return (s->flags & DP_STREAM_F_GRPC) != 0;
}

struct dp_filter_call dp_stream_filter_call(struct dp_stream *s, size_t i)
{
    const struct dp_route *r = s->route;
    return (struct dp_filter_call){
        .cfg = s->cfg->filters[i].cfg,
        .route_cfg = r && i < r->n_filter_cfg ? r->filter_cfg[i] : NULL,
        .ctx = s->filter_ctx ? s->filter_ctx[i] : NULL,
    };
}

void dp_stream_set_response_flag(struct dp_stream *s, const char *flag)
{
    size_t n = strlen(s->response_flags);
    if (n && n + 1 < sizeof(s->response_flags))
        s->response_flags[n++] = ',';
    snprintf(s->response_flags + n, sizeof(s->response_flags) - n, "%s", flag);
}

/* ---- lifecycle ------------------------------------------------------------ */

struct dp_stream *dp_stream_new(struct dp_hcm *h, int32_t h2_id)
{
    struct dp_stream *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->hcm = h;
    s->h2_id = h2_id;
    s->id = ++h->w->next_stream_id;
    s->cfg = h->cfg;
    s->snap = h->snap;
    dp_worker_snap_pin(s->snap);
    s->req.content_length = -1;
    s->resp.content_length = -1;
    s->start = ev_now(h->w->loop);
    ev_init(&s->timer, route_timeout_cb);
    s->timer.data = s;
    s->last_activity = s->start;
    ev_init(&s->guard, guard_cb);
    s->guard.data = s;
    guard_arm(s, s->start);
    s->next = h->streams;
    if (h->streams)
        h->streams->prev = s;
    h->streams = s;
    h->n_streams++;
    return s;
}

static void run_destroy_filters(struct dp_stream *s)
{
    if (s->filter_ctx == NULL || s->cfg == NULL)
        return;
    for (size_t i = 0; i < s->filters_started && i < s->cfg->n_filters; i++) {
        const struct dp_http_filter *f = &s->cfg->filters[i];
        if (f->ops->on_destroy) {
            struct dp_filter_call c = dp_stream_filter_call(s, i);
            f->ops->on_destroy(s, &c);
        }
    }
    s->filters_started = 0;
}

static void stream_reap(struct dp_defer *d)
{
    free((char *)d - offsetof(struct dp_stream, defer));
}

void dp_stream_free(struct dp_stream *s)
{
    struct dp_hcm *h = s->hcm;
    if (s->cfg && s->req.method.n > 0)
        for (size_t i = 0; i < s->cfg->n_access_logs; i++)
            dp_access_log_write(s->cfg->access_logs[i], s);
    if (s->cfg && (s->flags & DP_STREAM_F_RESP_HEADERS_SENT)) {
        dp_stat_add(s->cfg->st.rq_total, 1);
        dp_stat_observe_ms(s->cfg->st.rq_time, (ev_now(h->w->loop) - s->start) * 1000.0);
    }
    if (s->up)
        dp_upstream_cancel(s->up);
    run_destroy_filters(s);
    ev_timer_stop(h->w->loop, &s->timer);
    ev_timer_stop(h->w->loop, &s->guard);
    if (s->prev)
        s->prev->next = s->next;
    else
        h->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    h->n_streams--;
    dp_buf_release(&s->req_body);
    h->resp_held -= dp_buf_size(&s->resp_body);
    dp_buf_release(&s->resp_body);
    dp_fc_free(s);
    dp_arena_reset(&s->arena);
    dp_worker_snap_unpin(h->w, s->snap);
    /* A hook or codec up the stack (the filter chain runner, after a local
     * reply that ended an HTTP/1 exchange) may still look at the stream:
     * it reads DONE; the memory goes after this loop iteration. */
    s->flags |= DP_STREAM_F_DONE;
    s->cfg = NULL;
    s->filter_ctx = NULL;
    s->route = NULL;
    dp_worker_defer(h->w, &s->defer, stream_reap);
}

void dp_stream_downstream_reset(struct dp_stream *s)
{
    s->flags |= DP_STREAM_F_RESET | DP_STREAM_F_DONE;
    if (s->up)
        dp_upstream_cancel(s->up);
    ev_timer_stop(s->hcm->w->loop, &s->timer);
    ev_timer_stop(s->hcm->w->loop, &s->guard);
}

/* ---- responses -------------------------------------------------------------- */

static void apply_mutations(struct dp_headers *hs, struct dp_arena *a,
                            const struct dp_header_mutation *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (m[i].append)
            dp_headers_add(hs, a, m[i].name, m[i].value);
        else
            dp_headers_set(hs, a, m[i].name, m[i].value);
    }
}

static void remove_names(struct dp_headers *hs, char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dp_headers_remove(hs, (struct dp_str){names[i], strlen(names[i])});
}

/* name: "its value, v", or "v" when it has none. */
static int append_to_list(struct dp_headers *hs, struct dp_arena *a, struct dp_str name, const char *v)
{
    const struct dp_header *h = dp_headers_get(hs, name);
    size_t vn = strlen(v);
    if (h == NULL)
        return dp_headers_add(hs, a, name, (struct dp_str){v, vn});
    size_t n = h->value.n + 2 + vn;
    char *p = dp_arena_alloc(a, n + 1);
    if (p == NULL)
        return -1;
    memcpy(p, h->value.p, h->value.n);
    memcpy(p + h->value.n, ", ", 2);
    memcpy(p + h->value.n + 2, v, vn + 1);
    dp_headers_remove(hs, name);
    return dp_headers_add_ref(hs, a, name, (struct dp_str){p, n});
}

/* Response headers: route/vhost/table mutations, server, request id, then
 * the response filters in reverse order. */
static void prepare_response(struct dp_stream *s)
{
    struct dp_headers *hs = &s->resp.headers;
    const struct dp_hcm_cfg *cfg = s->cfg;

    if (s->route) {
        remove_names(hs, s->route->resp_remove, s->route->n_resp_remove);
        apply_mutations(hs, &s->arena, s->route->resp_add, s->route->n_resp_add);
    }
    if (s->vhost)
        apply_mutations(hs, &s->arena, s->vhost->resp_add, s->vhost->n_resp_add);
    if (cfg && cfg->routes) {
        remove_names(hs, cfg->routes->resp_remove, cfg->routes->n_resp_remove);
        apply_mutations(hs, &s->arena, cfg->routes->resp_add, cfg->routes->n_resp_add);
    }
    const char *server = cfg && cfg->server_name ? cfg->server_name : SERVER_NAME;
    int server_mode = cfg ? cfg->server_header : DP_SERVER_OVERWRITE;
    if (server_mode == DP_SERVER_OVERWRITE ||
        (server_mode == DP_SERVER_APPEND_IF_ABSENT && !dp_headers_get(hs, DP_STR_LIT("server"))))
        dp_headers_set(hs, &s->arena, DP_STR_LIT("server"), (struct dp_str){server, strlen(server)});
    if (cfg && cfg->via)
        append_to_list(hs, &s->arena, DP_STR_LIT("via"), cfg->via);
    if (cfg && cfg->always_set_request_id_in_response && s->request_id[0])
        dp_headers_set(hs, &s->arena, DP_STR_LIT("x-request-id"),
                       (struct dp_str){s->request_id, strlen(s->request_id)});
}

/* A local reply's head goes through the response filters' head hooks
 * (they may edit it); it cannot be held or replaced, so their statuses are
 * not acted on. */
static void local_reply_filters(struct dp_stream *s, int end)
{
    const struct dp_hcm_cfg *cfg = s->cfg;
    if (cfg == NULL || s->filter_ctx == NULL)
        return;
    for (size_t i = s->filters_started < cfg->n_filters ? s->filters_started : cfg->n_filters; i-- > 0;) {
        const struct dp_http_filter *f = &cfg->filters[i];
        if (f->ops->on_response_headers) {
            struct dp_filter_call c = dp_stream_filter_call(s, i);
            (void)f->ops->on_response_headers(s, &c, end);
        }
    }
}

/* A local reply to a gRPC request: trailers-only (one HEADERS frame with
 * :status 200, grpc-status and grpc-message), as Envoy sends. The message
 * is the body's text, percent-encoded as gRPC requires. */
static void grpc_local_reply(struct dp_stream *s, int status, const char *body, size_t body_len)
{
    struct dp_arena *a = &s->arena;
    char *code = dp_arena_alloc(a, 4);
    char *msg = dp_arena_alloc(a, body_len * 3 + 1);
    s->resp.status = 200;
    s->resp.content_length = -1;
    if (code == NULL || msg == NULL)
        return;
    int g = dp_grpc_status_of_http(status);
    size_t k = 0;
    if (g >= 10)
        code[k++] = (char)('0' + g / 10);
    code[k++] = (char)('0' + g % 10);
    code[k] = '\0';
    while (body_len && (body[body_len - 1] == '\n' || body[body_len - 1] == '\r'))
        body_len--;
    static const char hex[] = "0123456789ABCDEF";
    size_t m = 0;
    for (size_t i = 0; i < body_len; i++) {
        unsigned char c = (unsigned char)body[i];
        if (c >= 0x20 && c <= 0x7e && c != '%') {
            msg[m++] = (char)c;
        } else {
            msg[m++] = '%';
            msg[m++] = hex[c >> 4];
            msg[m++] = hex[c & 15];
        }
    }
    msg[m] = '\0';
    dp_headers_set(&s->resp.headers, a, DP_STR_LIT("content-type"), DP_STR_LIT("application/grpc"));
    dp_headers_add_ref(&s->resp.headers, a, DP_STR_LIT("grpc-status"), (struct dp_str){code, k});
    if (m)
        dp_headers_add_ref(&s->resp.headers, a, DP_STR_LIT("grpc-message"), (struct dp_str){msg, m});
}

void dp_stream_send_local_reply(struct dp_stream *s, int status, const char *content_type,
                                const char *body, size_t body_len)
{
    if (s->flags & (DP_STREAM_F_RESP_HEADERS_SENT | DP_STREAM_F_DONE))
        return;
    if (s->up)
        dp_upstream_cancel(s->up);
    ev_timer_stop(s->hcm->w->loop, &s->timer);
    s->flags |= DP_STREAM_F_LOCAL_REPLY;
    s->flags &= ~DP_STREAM_F_TUNNEL;
    if (s->cfg && s->cfg->local_reply) {
        const struct dp_header_mutation *add;
        size_t n_add;
        dp_local_reply_apply(s->cfg->local_reply, s, &status, &content_type, &body, &body_len, &add, &n_add);
        apply_mutations(&s->resp.headers, &s->arena, add, n_add);
    }
    if ((s->flags & DP_STREAM_F_GRPC) && status >= 300) {
        s->resp.status = status; /* for the access log until prepare_response */
        grpc_local_reply(s, status, body ? body : "", body ? body_len : 0);
        prepare_response(s);
        local_reply_filters(s, 1);
        LG_D("stream", "C%llu S%llu: local gRPC reply for %d%s%s", (unsigned long long)s->hcm->id,
             (unsigned long long)s->id, status, s->response_flags[0] ? " " : "", s->response_flags);
        dp_hcm_send_headers(s, 1);
        return;
    }
    s->resp.status = status;
    /* s->resp.headers may hold headers the caller added (a Location). */
    s->resp.content_length = (int64_t)body_len;
    if (content_type && body_len)
        dp_headers_add_ref(&s->resp.headers, &s->arena, DP_STR_LIT("content-type"),
                           (struct dp_str){content_type, strlen(content_type)});
    prepare_response(s);
    local_reply_filters(s, body_len == 0 || (s->flags & DP_STREAM_F_HEAD));
    LG_D("stream", "C%llu S%llu: local reply %d%s%s", (unsigned long long)s->hcm->id,
         (unsigned long long)s->id, status, s->response_flags[0] ? " " : "", s->response_flags);
    /* A request body still coming is read and dropped (HTTP/1 keeps the
     * connection once the request ends; HTTP/2 resets nothing). A HEAD
     * response ends with its head (which still says how long the body would
     * be): the stream may be gone once it is out. */
    if (body_len == 0 || (s->flags & DP_STREAM_F_HEAD)) {
        dp_hcm_send_headers(s, 1);
        return;
    }
    s->bytes_sent += body_len;
    dp_hcm_send_headers(s, 0);
    dp_hcm_send_data(s, (const uint8_t *)body, body_len, 1);
}

/* ---- request processing ------------------------------------------------- */

/* Connection-level request fields (RFC 9110 7.6.1), and Expect, which is
 * answered here unless proxy_100_continue. TE is put back as "trailers"
 * by sanitize_request when the client listed it. */
static int request_hop(const struct dp_header *h, void *arg)
{
    const struct dp_hcm_cfg *cfg = arg;
    struct dp_str n = h->name;
    if (dp_str_eq(n, DP_STR_LIT("expect")))
        return !cfg->proxy_100_continue;
    return (dp_http_is_hop_field(n) && !dp_str_eq(n, DP_STR_LIT("content-length"))) ||
           dp_str_eq(n, DP_STR_LIT("http2-settings"));
}

static void strip_hop_by_hop(struct dp_request_head *req, const struct dp_hcm_cfg *cfg, struct dp_arena *a)
{
    /* Tokens named in Connection are hop-by-hop too. */
    const struct dp_header *conn = dp_headers_get(&req->headers, DP_STR_LIT("connection"));
    if (conn) {
        const char *p = conn->value.p, *end = p + conn->value.n;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ',' || *p == '\t'))
                p++;
            const char *t = p;
            while (p < end && *p != ',' && *p != ' ' && *p != '\t')
                p++;
            if (p > t) {
                char name[64];
                size_t n = (size_t)(p - t);
                if (n < sizeof(name)) {
                    for (size_t i = 0; i < n; i++)
                        name[i] = (char)((t[i] >= 'A' && t[i] <= 'Z') ? t[i] + 32 : t[i]);
                    /* never strip what routing or framing depends on */
                    struct dp_str nm = {name, n};
                    if (!dp_str_eq(nm, DP_STR_LIT("content-length")) &&
                        !dp_str_eq(nm, DP_STR_LIT("x-forwarded-for")))
                        dp_headers_remove(&req->headers, nm);
                }
            }
        }
    }
    int te_trailers = 0;
    for (size_t i = 0; i < req->headers.n; i++)
        if (dp_str_eq(req->headers.v[i].name, DP_STR_LIT("te")) && dp_http_list_has_token(req->headers.v[i].value, "trailers"))
            te_trailers = 1;
    dp_headers_remove_if(&req->headers, request_hop, (void *)cfg);
    /* The one hop-by-hop value that goes on: gRPC servers require it. */
    if (te_trailers)
        dp_headers_add_ref(&req->headers, a, DP_STR_LIT("te"), DP_STR_LIT("trailers"));
}

/* Writes the low `digits` hex digits of v; returns the end. */
static char *put_hex(char *o, uint32_t v, int digits)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--)
        *o++ = hex[(v >> (4 * i)) & 15];
    return o;
}

static void gen_request_id(struct dp_stream *s)
{
    struct dp_worker *w = s->hcm->w;
    uint32_t r[4];
    for (int i = 0; i < 4; i++)
        r[i] = dp_worker_rand(w);
    r[1] = (r[1] & 0xffff0fffu) | 0x00004000u; /* version 4 */
    r[2] = (r[2] & 0x3fffffffu) | 0x80000000u; /* variant */
    /* 8-4-4-4-12 hex digits; by hand, snprintf was a visible cost per request. */
    char *o = s->request_id;
    o = put_hex(o, r[0], 8);
    *o++ = '-';
    o = put_hex(o, r[1] >> 16, 4);
    *o++ = '-';
    o = put_hex(o, r[1] & 0xffff, 4);
    *o++ = '-';
    o = put_hex(o, r[2] >> 16, 4);
    *o++ = '-';
    o = put_hex(o, r[2] & 0xffff, 4);
    o = put_hex(o, r[3], 8);
    *o = '\0';
}

static void remote_ip(const char *remote, char *ip, size_t iplen)
{
    /* "1.2.3.4:5" or "[::1]:5" -> the address alone */
    const char *p = remote;
    size_t n;
    if (*p == '[') {
        p++;
        const char *e = strchr(p, ']');
        n = e ? (size_t)(e - p) : strlen(p);
    } else {
        const char *e = strrchr(p, ':');
        n = e ? (size_t)(e - p) : strlen(p);
    }
    if (n >= iplen)
        n = iplen - 1;
    memcpy(ip, p, n);
    ip[n] = '\0';
}

static int sanitize_request(struct dp_stream *s)
{
    struct dp_request_head *req = &s->req;
    const struct dp_hcm_cfg *cfg = s->cfg;
    struct dp_arena *a = &s->arena;

    const struct dp_header *exp = dp_headers_get(&req->headers, DP_STR_LIT("expect"));
    if (exp && dp_str_ieq_lit(exp->value, "100-continue") && req->version != DP_HTTP_10)
        s->flags |= DP_STREAM_F_EXPECT_CONTINUE;
    const struct dp_header *ct = dp_headers_get(&req->headers, DP_STR_LIT("content-type"));
    if (ct && dp_http_is_grpc_content_type(ct->value))
        s->flags |= DP_STREAM_F_GRPC;
    strip_hop_by_hop(req, cfg, a);

    /* scheme_header_transformation: the request's :scheme, as filters and
     * an HTTP/2 upstream see it (x-forwarded-proto stays the connection's) */
    if (cfg->scheme_overwrite)
        req->scheme = (struct dp_str){cfg->scheme_overwrite, strlen(cfg->scheme_overwrite)};

    /* x-forwarded-proto */
    struct dp_str scheme = s->hcm->conn.ssl ? DP_STR_LIT("https") : DP_STR_LIT("http");
    if (cfg->use_remote_address || !dp_headers_get(&req->headers, DP_STR_LIT("x-forwarded-proto")))
        dp_headers_set(&req->headers, a, DP_STR_LIT("x-forwarded-proto"), scheme);

    /* x-forwarded-for: append the peer's address */
    if (!cfg->skip_xff_append) {
        char ip[64];
        remote_ip(s->hcm->remote, ip, sizeof(ip));
        if (append_to_list(&req->headers, a, DP_STR_LIT("x-forwarded-for"), ip) < 0)
            return -1;
    }
    if (cfg->via && append_to_list(&req->headers, a, DP_STR_LIT("via"), cfg->via) < 0)
        return -1;

    /* x-request-id */
    if (cfg->generate_request_id) {
        const struct dp_header *rid = dp_headers_get(&req->headers, DP_STR_LIT("x-request-id"));
        int keep = rid && rid->value.n > 0 && rid->value.n < sizeof(s->request_id) &&
                   (!cfg->use_remote_address || cfg->preserve_external_request_id);
        if (keep) {
            memcpy(s->request_id, rid->value.p, rid->value.n);
            s->request_id[rid->value.n] = '\0';
        } else {
            gen_request_id(s);
            dp_headers_set(&req->headers, a, DP_STR_LIT("x-request-id"),
                           (struct dp_str){s->request_id, strlen(s->request_id)});
        }
    }

    /* x-forwarded-client-cert, never trusted blindly */
    return dp_xfcc_apply(s, cfg->xfcc, cfg->xfcc_fields);
}

/* Answers Expect: 100-continue here (proxy_100_continue off), as Envoy
 * does, for HTTP/1.1 and HTTP/2 clients alike. */
static void send_100_continue(struct dp_stream *s)
{
    struct dp_response_head saved = s->resp;
    s->resp.status = 100;
    s->resp.headers = (struct dp_headers){0};
    if (dp_hcm_send_informational(s))
        s->flags |= DP_STREAM_F_CONTINUE_SENT;
    s->resp = saved;
}

static int run_request_filters(struct dp_stream *s)
{
    const struct dp_hcm_cfg *cfg = s->cfg;
    if (cfg->n_filters == 0)
        return 0;
    s->filter_ctx = dp_arena_alloc(&s->arena, cfg->n_filters * sizeof(void *));
    if (s->filter_ctx == NULL)
        return -1;
    for (size_t i = 0; i < cfg->n_filters; i++) {
        size_t sz = cfg->filters[i].ops->ctx_size;
        s->filter_ctx[i] = sz ? dp_arena_alloc(&s->arena, sz) : NULL;
        if (sz && s->filter_ctx[i] == NULL)
            return -1;
        if (sz)
            memset(s->filter_ctx[i], 0, sz);
    }
    return 0;
}

static double grpc_timeout_of(const struct dp_request_head *req)
{
    const struct dp_header *h = dp_headers_get(&req->headers, DP_STR_LIT("grpc-timeout"));
    return h ? dp_grpc_timeout_parse(h->value) : -1;
}

/* The route timeout of a request, as Envoy's router computes it: the
 * route's timeout, or for a gRPC request on a route with
 * grpc_timeout_header_max, the grpc-timeout header less the offset (0:
 * none), capped by the maximum unless that is 0. Tunnels and streams
 * are bounded by idle timeouts instead once established. */
static double route_timeout(struct dp_stream *s)
{
    const struct dp_route *r = s->route;
    if (!(s->flags & DP_STREAM_F_GRPC) || r->grpc_timeout_max < 0)
        return r->timeout;
    double t = grpc_timeout_of(&s->req);
    if (t < 0)
        t = 0;
    if (r->grpc_timeout_offset > 0 && t > r->grpc_timeout_offset)
        t -= r->grpc_timeout_offset;
    if (r->grpc_timeout_max > 0 && (t == 0 || t > r->grpc_timeout_max))
        t = r->grpc_timeout_max;
    return t;
}

void dp_stream_request_headers(struct dp_stream *s, int end_stream)
{
    struct dp_hcm *h = s->hcm;

    s->flags |= DP_STREAM_F_REQ_HEADERS_DONE;
    if (end_stream)
        s->flags |= DP_STREAM_F_REQ_COMPLETE;
    if (s->cfg == NULL) {
        dp_stream_send_local_reply(s, 500, "text/plain", "no connection manager\n", 22);
        return;
    }
    if (dp_overload_active(DP_OL_STOP_REQUESTS)) {
        /* Envoy's answer, flag and counter for stop_accepting_requests */
        dp_stream_set_response_flag(s, "OM");
        dp_stat_add(s->cfg->st.rq_overload_close, 1);
        dp_stream_send_local_reply(s, 503, "text/plain", "envoy overloaded", 16);
        return;
    }
    if (s->req.authority.n == 0 && s->req.version == DP_HTTP_2) {
        dp_stream_set_response_flag(s, "DPE");
        dp_stream_send_local_reply(s, 400, "text/plain", "missing :authority\n", 19);
        return;
    }
    if (sanitize_request(s) < 0) {
        dp_stream_send_local_reply(s, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    int redirect = 0;
    if ((s->cfg->normalize_path || s->cfg->merge_slashes || s->cfg->escaped_slashes) && s->req.path.n) {
        /* before routing and filters, and what goes upstream (as in Envoy:
         * escaped slashes first, then normalize_path, then merge_slashes) */
        char *p = dp_arena_alloc(&s->arena, 2 * (s->req.path.n + 1));
        if (p == NULL) {
            dp_stream_send_local_reply(s, 500, "text/plain", "out of memory\n", 14);
            return;
        }
        char *u = p + s->req.path.n + 1;
        size_t un = s->req.path.n;
        memcpy(u, s->req.path.p, un);
        if (s->cfg->escaped_slashes) {
            int found;
            un = dp_http_unescape_slashes(u, un, &found);
            if (found && s->cfg->escaped_slashes == DP_SLASHES_REJECT) {
                dp_stat_add(s->cfg->st.rq_failed_path_normalization, 1);
                dp_stream_set_response_flag(s, "DPE");
                dp_stream_send_local_reply(s, 400, "text/plain", "escaped slashes in path\n", 24);
                return;
            }
            redirect = found && s->cfg->escaped_slashes == DP_SLASHES_UNESCAPE_REDIRECT;
        }
        long n = (long)un;
        if (s->cfg->normalize_path || s->cfg->merge_slashes)
            n = dp_http_normalize_path(u, un, p, s->cfg->normalize_path, s->cfg->merge_slashes);
        else
            memcpy(p, u, un);
        if (n < 0) {
            dp_stat_add(s->cfg->st.rq_failed_path_normalization, 1);
            dp_stream_set_response_flag(s, "DPE");
            dp_stream_send_local_reply(s, 400, "text/plain", "invalid path\n", 13);
            return;
        }
        p[n] = '\0';
        s->req.path = (struct dp_str){p, (size_t)n};
    }
    if (redirect) {
        /* UNESCAPE_AND_REDIRECT: the client asks again with plain slashes, so
         * that it and every hop after it agree on the path (a gRPC client
         * cannot follow: INTERNAL, as Envoy answers). */
        dp_stat_add(s->cfg->st.rq_redirected_with_normalized_path, 1);
        if (s->flags & DP_STREAM_F_GRPC) {
            dp_stream_send_local_reply(s, 400, "text/plain", "escaped slashes in path\n", 24);
            return;
        }
        dp_headers_add_ref(&s->resp.headers, &s->arena, DP_STR_LIT("location"), s->req.path);
        dp_stream_send_local_reply(s, 307, NULL, NULL, 0);
        return;
    }
    LG_T("stream", "C%llu S%llu: %.*s %.*s%.*s", (unsigned long long)h->id,
         (unsigned long long)s->id, (int)s->req.method.n, s->req.method.p,
         (int)s->req.authority.n, s->req.authority.p, (int)s->req.path.n, s->req.path.p);

    s->route = s->cfg->routes ? dp_route_find(s->cfg->routes, &s->req, &s->vhost) : NULL;
    if (s->flags & DP_STREAM_F_UPGRADE) {
        /* As Envoy: an upgrade the route (or else the connection manager)
         * does not enable is refused, not forwarded without its Upgrade. */
        const struct dp_upgrade_cfg *u = s->route ? dp_upgrade_find(s->route, s->cfg, s->upgrade) : NULL;
        if (s->route && s->route->action == DP_ROUTE_CLUSTER && (u == NULL || !u->enabled)) {
            dp_stream_set_response_flag(s, "UPE");
            s->flags |= DP_STREAM_F_CLOSE_AFTER;
            dp_stream_send_local_reply(s, 403, NULL, NULL, 0);
            return;
        }
        if (u && u->terminate_connect && (s->flags & DP_STREAM_F_CONNECT))
            s->flags |= DP_STREAM_F_TUNNEL_TCP;
    }
    if (s->route && s->route->action == DP_ROUTE_CLUSTER) {
        double timeout = route_timeout(s);
        if (timeout > 0) {
            ev_timer_set(&s->timer, timeout, 0.);
            ev_timer_start(h->w->loop, &s->timer);
        }
        double msd = s->route->has_max_stream_duration ? s->route->max_stream_duration : s->cfg->max_stream_duration;
        if (msd > 0) {
            s->stream_deadline = s->start + msd;
            guard_arm(s, ev_now(h->w->loop));
        }
    } else if (s->cfg->max_stream_duration > 0) {
        s->stream_deadline = s->start + s->cfg->max_stream_duration;
        guard_arm(s, ev_now(h->w->loop));
    }
    if ((s->flags & DP_STREAM_F_EXPECT_CONTINUE) && !s->cfg->proxy_100_continue)
        send_100_continue(s);
    if (run_request_filters(s) < 0) {
        dp_stream_send_local_reply(s, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    dp_fc_request_headers(s, end_stream);
}

/* The request head passed every filter: the connection manager's terminal
 * step routes it (router.c), as Envoy's router filter would. */
void dp_stream_terminal(struct dp_stream *s, int end_stream)
{
    (void)end_stream;
    const struct dp_hcm_cfg *cfg = s->cfg;
    if (cfg->n_filters && cfg->filters[cfg->n_filters - 1].ops->terminal) {
        dp_router_route(s);
        return;
    }
    /* No router configured (the config builder requires one). */
    if (s->route == NULL) {
        dp_stream_set_response_flag(s, "NR");
        dp_stream_send_local_reply(s, 404, "text/plain", "no route matched\n", 17);
        return;
    }
    dp_stream_send_local_reply(s, 500, "text/plain", "no router filter\n", 17);
}

void dp_stream_request_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream)
{
    if (s->flags & DP_STREAM_F_DONE)
        return;
    touch(s);
    s->bytes_received += n;
    if (s->flags & (DP_STREAM_F_LOCAL_REPLY | DP_STREAM_F_RESP_COMPLETE)) {
        if (end_stream)
            s->flags |= DP_STREAM_F_REQ_COMPLETE;
        /* Answered already: the body is read and dropped. */
        dp_hcm_consumed(s, n);
        if (end_stream && (s->flags & DP_STREAM_F_RESP_COMPLETE))
            dp_hcm_stream_done(s);
        return;
    }
    if (!(s->flags & DP_STREAM_F_TUNNEL) && dp_fc_active(s, DP_FILTER_REQUEST)) {
        dp_fc_request_data(s, p, n, end_stream);
        return;
    }
    dp_stream_forward_request_data(s, p, n, end_stream);
}

/* Request body that passed the filters: for the upstream. */
void dp_stream_forward_request_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream)
{
    if (end_stream)
        s->flags |= DP_STREAM_F_REQ_COMPLETE;
    if (n && dp_buf_append(&s->req_body, p, n) < 0) {
        dp_stream_send_local_reply(s, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    if (dp_buf_size(&s->req_body) >= s->hcm->listener->per_connection_buffer_limit)
        dp_hcm_pause_request(s);
    if (s->up)
        dp_upstream_kick(s->up);
}

void dp_stream_request_end_trailers(struct dp_stream *s)
{
    if (s->flags & DP_STREAM_F_DONE)
        return;
    touch(s);
    if (s->flags & (DP_STREAM_F_LOCAL_REPLY | DP_STREAM_F_RESP_COMPLETE)) {
        dp_stream_request_data(s, NULL, 0, 1);
        return;
    }
    dp_fc_request_trailers(s);
}

/* Trailers are forwarded where the upstream codec can carry them (HTTP/2,
 * or HTTP/1.1 chunked with enable_trailers); the request ends either way. */
void dp_stream_forward_request_trailers(struct dp_stream *s)
{
    dp_stream_forward_request_data(s, NULL, 0, 1);
}

int dp_stream_wants_upgrade(const struct dp_stream *s)
{
    return (s->flags & (DP_STREAM_F_UPGRADE | DP_STREAM_F_TUNNEL_TCP)) == DP_STREAM_F_UPGRADE;
}

void dp_stream_upstream_drained(struct dp_stream *s)
{
    if ((s->flags & DP_STREAM_F_DOWNSTREAM_PAUSED) &&
        dp_buf_size(&s->req_body) < s->hcm->listener->per_connection_buffer_limit / 2)
        dp_hcm_resume_request(s);
}

/* The response bytes legate holds for a client are bounded per connection,
 * not only per stream: per_connection_buffer_limit for the stream, and once
 * the connection's streams hold that much together (HTTP/2), one chunk
 * each. A stream whose client reads keeps moving (its chunk drains, it
 * resumes and takes the next); a client that opens many streams and reads
 * none (a zero window) costs the limit plus a chunk per stream, not the
 * limit per stream. */
static int resp_over(struct dp_stream *s)
{
    size_t limit = s->hcm->listener->per_connection_buffer_limit;
    size_t mine = dp_hcm_pending_out(s);
    return mine >= limit || (mine > 0 && s->hcm->resp_held >= limit);
}

size_t dp_stream_read_ahead(const struct dp_stream *s)
{
    size_t limit = s->hcm->listener->per_connection_buffer_limit;
    return s->hcm->resp_held >= limit / 2 ? DP_BUF_BLOCK : limit;
}

int dp_stream_may_resume(struct dp_stream *s)
{
    if (s->iter[DP_FILTER_RESPONSE].paused) /* a filter holds the response: it resumes */
        return 0;
    size_t half = s->hcm->listener->per_connection_buffer_limit / 2;
    size_t mine = dp_hcm_pending_out(s);
    return mine < half && (mine == 0 || s->hcm->resp_held < half);
}

void dp_stream_downstream_drained(struct dp_stream *s)
{
    if ((s->flags & DP_STREAM_F_UPSTREAM_PAUSED) && dp_stream_may_resume(s)) {
        s->flags &= ~DP_STREAM_F_UPSTREAM_PAUSED;
        if (s->up)
            dp_upstream_resume(s->up);
    }
}

/* ---- from the upstream ---------------------------------------------------- */

/* Connection-level response fields; TE and Content-Length stay (the codecs
 * frame the response themselves). */
static int response_hop(const struct dp_header *h, void *arg)
{
    (void)arg;
    return dp_http_is_hop_field(h->name) && !dp_str_eq(h->name, DP_STR_LIT("te")) &&
           !dp_str_eq(h->name, DP_STR_LIT("content-length"));
}

static void strip_response_hop_by_hop(struct dp_response_head *r)
{
    dp_headers_remove_if(&r->headers, response_hop, NULL);
}

/* The upstream accepted an upgrade (101, or 2xx to a CONNECT): from now on
 * both bodies are raw bytes, bounded by the idle timeouts, not the route
 * timeout. An HTTP/2 client asked with CONNECT and gets 200 (RFC 8441). */
static void accept_tunnel(struct dp_stream *s)
{
    s->flags |= DP_STREAM_F_TUNNEL;
    ev_timer_stop(s->hcm->w->loop, &s->timer);
    if (s->req.version == DP_HTTP_2) {
        s->resp.status = 200;
        dp_headers_remove(&s->resp.headers, DP_STR_LIT("sec-websocket-accept"));
    }
}

void dp_stream_upstream_informational(struct dp_stream *s)
{
    if (s->flags & (DP_STREAM_F_DONE | DP_STREAM_F_RESP_HEADERS_SENT))
        return;
    touch(s);
    strip_response_hop_by_hop(&s->resp);
    /* A 100 goes to a client that asked for it, once; with
     * proxy_100_continue off legate sent its own already. */
    int fwd = 1;
    if (s->resp.status == 100)
        fwd = (s->flags & DP_STREAM_F_EXPECT_CONTINUE) && !(s->flags & DP_STREAM_F_CONTINUE_SENT);
    if (fwd && dp_hcm_send_informational(s) && s->resp.status == 100)
        s->flags |= DP_STREAM_F_CONTINUE_SENT;
    s->resp.status = 0;
    s->resp.headers.n = 0;
    s->resp.content_length = -1;
}

void dp_stream_upstream_headers(struct dp_stream *s, int end_stream)
{
    if (s->flags & (DP_STREAM_F_DONE | DP_STREAM_F_RESP_HEADERS_SENT))
        return;
    touch(s);
    if ((s->flags & DP_STREAM_F_UPGRADE) && !end_stream &&
        (s->resp.status == 101 || ((s->flags & DP_STREAM_F_CONNECT) && s->resp.status / 100 == 2)))
        accept_tunnel(s);
    if (s->resp.status >= 100 && s->resp.status < 600)
        dp_stat_add(s->up_st.rq_xx[s->resp.status / 100 - 1], 1);
    if (end_stream)
        dp_stat_observe_ms(s->up_st.rq_time, (ev_now(s->hcm->w->loop) - s->start) * 1000.0);
    strip_response_hop_by_hop(&s->resp);
    prepare_response(s);
    if (end_stream)
        ev_timer_stop(s->hcm->w->loop, &s->timer);
    dp_fc_response_headers(s, end_stream);
}

void dp_stream_forward_response_headers(struct dp_stream *s, int end_stream)
{
    dp_hcm_send_headers(s, end_stream);
}

void dp_stream_upstream_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream)
{
    if (s->flags & DP_STREAM_F_DONE)
        return;
    touch(s);
    s->bytes_sent += n;
    if (end_stream) {
        ev_timer_stop(s->hcm->w->loop, &s->timer);
        dp_stat_observe_ms(s->up_st.rq_time, (ev_now(s->hcm->w->loop) - s->start) * 1000.0);
    }
    if (!(s->flags & DP_STREAM_F_TUNNEL) && dp_fc_active(s, DP_FILTER_RESPONSE)) {
        dp_fc_response_data(s, p, n, end_stream);
        return;
    }
    dp_stream_forward_response_data(s, p, n, end_stream);
}

void dp_stream_forward_response_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream)
{
    dp_hcm_send_data(s, p, n, end_stream);
    if (!end_stream && !(s->flags & DP_STREAM_F_DONE) && s->up && resp_over(s)) {
        s->flags |= DP_STREAM_F_UPSTREAM_PAUSED;
        dp_upstream_pause(s->up);
    }
}

void dp_stream_upstream_trailers(struct dp_stream *s)
{
    if (s->flags & DP_STREAM_F_DONE)
        return;
    touch(s);
    ev_timer_stop(s->hcm->w->loop, &s->timer);
    dp_stat_observe_ms(s->up_st.rq_time, (ev_now(s->hcm->w->loop) - s->start) * 1000.0);
    dp_fc_response_trailers(s);
}

void dp_stream_forward_response_trailers(struct dp_stream *s)
{
    dp_hcm_send_trailers(s);
}

void dp_stream_upstream_failed(struct dp_stream *s, int status, const char *flag, const char *body)
{
    s->up = NULL;
    if (s->flags & DP_STREAM_F_DONE)
        return;
    if (flag)
        dp_stream_set_response_flag(s, flag);
    if (s->flags & DP_STREAM_F_RESP_HEADERS_SENT) {
        if (!(s->flags & DP_STREAM_F_RESP_COMPLETE))
            dp_hcm_reset_stream(s);
        return;
    }
    s->resp.headers.n = 0; /* whatever a failed upstream response left */
    dp_stream_send_local_reply(s, status, "text/plain", body, strlen(body));
}

static void guard_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct dp_stream *s = t->data;
    if (s->flags & DP_STREAM_F_DONE)
        return;
    ev_tstamp now = ev_now(loop);
    int idle = s->cfg->stream_idle_timeout > 0 && now - s->last_activity >= s->cfg->stream_idle_timeout;
    int req = s->cfg->request_timeout > 0 && !(s->flags & DP_STREAM_F_REQ_COMPLETE) &&
              now - s->start >= s->cfg->request_timeout;
    int dur = s->stream_deadline > 0 && now >= s->stream_deadline;
    if (!idle && !req && !dur) {
        guard_arm(s, now);
        return;
    }
    LG_D("stream", "C%llu S%llu: %s", (unsigned long long)s->hcm->id, (unsigned long long)s->id,
         dur ? "max stream duration" : req ? "request timeout" : "stream idle timeout");
    if (dur)
        dp_stream_set_response_flag(s, "DT");
    if (s->up) {
        dp_upstream_cancel(s->up);
        s->up = NULL;
    }
    ev_timer_stop(loop, &s->timer);
    if (s->flags & DP_STREAM_F_RESP_HEADERS_SENT) {
        dp_hcm_reset_stream(s);
        return;
    }
    s->flags |= DP_STREAM_F_CLOSE_AFTER;
    s->resp.headers.n = 0;
    if (dur)
        dp_stream_send_local_reply(s, 408, "text/plain", "downstream duration timeout\n", 28);
    else if (req)
        dp_stream_send_local_reply(s, 408, "text/plain", "request timeout\n", 16);
    else
        dp_stream_send_local_reply(s, 408, "text/plain", "stream timeout\n", 15);
}

static void route_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct dp_stream *s = t->data;
    LG_D("stream", "C%llu S%llu: upstream request timeout", (unsigned long long)s->hcm->id,
         (unsigned long long)s->id);
    if (s->up) {
        struct dp_upstream_req *u = s->up;
        dp_upstream_cancel(u);
    }
    dp_stat_add(s->up_st.rq_timeout, 1);
    dp_stream_upstream_failed(s, 504, "UT", "upstream request timeout");
}
