/*
 * The connection manager's terminal step, what Envoy's router filter does:
 * a request that passed every HTTP filter is answered directly, redirected,
 * or sent to its route's cluster (route-level rewrites and header
 * mutations applied here). envoy.filters.http.router in a filter list marks
 * where this happens (filters/router/).
 */
#include "dataplane/router.h"

#include <stdio.h>
#include <string.h>

#include "dataplane/stream.h"
#include "dataplane/upstream.h"
#include "dataplane/worker.h"

static void apply_request_mutations(struct dp_stream *s, const struct dp_header_mutation *m,
                                    size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (m[i].append)
            dp_headers_add(&s->req.headers, &s->arena, m[i].name, m[i].value);
        else
            dp_headers_set(&s->req.headers, &s->arena, m[i].name, m[i].value);
    }
}

static void redirect(struct dp_stream *s, const struct dp_route *r)
{
    const char *sch = r->redirect_scheme ? r->redirect_scheme : (s->hcm->conn.ssl ? "https" : "http");
    struct dp_str h = r->redirect_host ? (struct dp_str){r->redirect_host, strlen(r->redirect_host)}
                                       : s->req.authority;
    struct dp_str p = s->req.path;
    size_t pn = p.n;
    const char *q = memchr(p.p, '?', p.n);
    if (q && r->redirect_strip_query)
        pn = (size_t)(q - p.p);
    size_t cap = strlen(sch) + h.n + pn + 16 +
                 (r->redirect_path ? strlen(r->redirect_path) : 0) +
                 (r->prefix_rewrite ? strlen(r->prefix_rewrite) : 0);
    char *loc = dp_arena_alloc(&s->arena, cap);
    if (loc == NULL) {
        dp_stream_send_local_reply(s, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    int n;
    if (r->redirect_path)
        n = snprintf(loc, cap, "%s://%.*s%s", sch, (int)h.n, h.p, r->redirect_path);
    else if (r->prefix_rewrite && r->path_kind == DP_MATCH_PREFIX && pn >= r->path_len)
        n = snprintf(loc, cap, "%s://%.*s%s%.*s", sch, (int)h.n, h.p, r->prefix_rewrite,
                     (int)(pn - r->path_len), p.p + r->path_len);
    else
        n = snprintf(loc, cap, "%s://%.*s%.*s", sch, (int)h.n, h.p, (int)pn, p.p);
    dp_headers_add_ref(&s->resp.headers, &s->arena, DP_STR_LIT("location"),
                       (struct dp_str){loc, (size_t)n});
    dp_stream_send_local_reply(s, r->direct_status, NULL, NULL, 0);
}

void dp_router_route(struct dp_stream *s)
{
    const struct dp_route *r = s->route;
    if (r == NULL) {
        dp_stream_set_response_flag(s, "NR");
        dp_stream_send_local_reply(s, 404, "text/plain", "no route matched\n", 17);
        return;
    }
    switch (r->action) {
    case DP_ROUTE_DIRECT_RESPONSE:
        dp_stream_send_local_reply(s, r->direct_status, "text/plain", r->direct_body,
                                   r->direct_body_len);
        return;
    case DP_ROUTE_REDIRECT:
        redirect(s, r);
        return;
    case DP_ROUTE_CLUSTER:
        break;
    }
    struct dp_cluster_rt *rt = dp_worker_cluster(s->hcm->w, r->cluster);
    if (rt == NULL) {
        dp_stream_set_response_flag(s, "NC");
        dp_stream_send_local_reply(s, r->cluster_not_found ? r->cluster_not_found : 503, "text/plain",
                                   "cluster not found\n", 18);
        return;
    }
    /* Route-level request rewriting. */
    if (r->prefix_rewrite && r->path_kind == DP_MATCH_PREFIX && s->req.path.n >= r->path_len) {
        size_t pl = strlen(r->prefix_rewrite);
        size_t n = pl + s->req.path.n - r->path_len;
        char *np = dp_arena_alloc(&s->arena, n + 1);
        if (np) {
            memcpy(np, r->prefix_rewrite, pl);
            memcpy(np + pl, s->req.path.p + r->path_len, s->req.path.n - r->path_len);
            np[n] = '\0';
            if (n == 0)
                np = "/", n = 1;
            s->req.path = (struct dp_str){np, n};
        }
    }
    if (r->host_rewrite)
        s->req.authority = (struct dp_str){r->host_rewrite, strlen(r->host_rewrite)};
    for (size_t i = 0; i < r->n_req_remove; i++)
        dp_headers_remove(&s->req.headers, (struct dp_str){r->req_remove[i], strlen(r->req_remove[i])});
    apply_request_mutations(s, r->req_add, r->n_req_add);
    if (s->vhost)
        apply_request_mutations(s, s->vhost->req_add, s->vhost->n_req_add);
    dp_upstream_start(s, rt);
}

