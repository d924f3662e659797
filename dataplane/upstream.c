/*
 * Upstream connections: pools per worker per endpoint, load balancing,
 * the HTTP/1.1 client codec (http-parser) and the HTTP/2 client codec
 * (nghttp2), with the cluster's TLS context.
 */
#include "upstream.h"

#include <arpa/inet.h>

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>
#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>

#include "dataplane/stream.h"
#include "dataplane/tls.h"
#include "xds/log.h"

#define UPSTREAM_RESET_BODY "upstream connect error or disconnect/reset before headers. reset reason: "

struct dp_uconn;

struct dp_pool {
    struct dp_cluster_rt *rt;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *addr_str;
    struct dp_uconn *conns;    /* every connection of the pool */
    struct dp_uconn *h2;       /* the multiplexed connection (HTTP/2 clusters) */
    struct dp_upstream_req *wait_head;
    struct dp_upstream_req *wait_tail;
    unsigned n_wait;
    unsigned n_conns;
    unsigned n_connecting;
    unsigned active;           /* requests in flight, for least-request */
    dp_stat_t st_rq_active;    /* cluster.<name>.<endpoint>.rq_active, for /clusters */
    int retired;
    struct dp_pool *next_retired;
};

enum { UH1_EV_NONE = 0, UH1_EV_HEADERS, UH1_EV_INFO, UH1_EV_BODY, UH1_EV_COMPLETE };

struct dp_uconn {
    struct dp_conn conn;
    dp_stat_t st_active;          /* the cluster gauge it counts in, until unlinked */
    struct dp_defer defer;
    struct dp_worker *w;
    struct dp_pool *pool;
    struct dp_uconn *next;
    struct dp_uconn *prev;
    int h2;
    int raw;                      /* a terminated CONNECT's TCP connection: no HTTP */
    int tunnel;                   /* HTTP/1: past a 101 (or 2xx to CONNECT): raw bytes */
    int idle;
    int goaway;
    unsigned served;
    /* HTTP/1 */
    struct dp_upstream_req *cur;
    http_parser parser;
    int ev;
    const uint8_t *body;
    size_t body_len;
    struct dp_buf hdr;
    size_t name_len;
    int last_was_value;
    /* HTTP/2 */
    nghttp2_session *ngh2;
    int ngh2_busy;                /* inside nghttp2_session_mem_recv/mem_send */
    int ngh2_again;               /* ... and a flush was asked for meanwhile */
    unsigned n_streams;
    struct dp_upstream_req *reqs; /* requests on this HTTP/2 connection */
};

#define UREQ_F_HEAD_SENT 0x01
#define UREQ_F_REQ_DONE 0x02  /* the whole request went out */
#define UREQ_F_RESP_STARTED 0x04
#define UREQ_F_RESP_DONE 0x08
#define UREQ_F_CHUNKED 0x10
#define UREQ_F_PAUSED 0x20
#define UREQ_F_DEFERRED 0x40
#define UREQ_F_WAITING 0x80
#define UREQ_F_UPGRADE 0x100 /* the request asked for an upgrade: the connection is not reused */
#define UREQ_F_NO_REPLAY 0x200 /* HTTP/2: more was sent than `sent` keeps */
#define UREQ_F_RETRIED 0x400   /* HTTP/2: sent again after the upstream refused it unprocessed */

struct dp_upstream_req {
    struct dp_stream *s;
    struct dp_pool *pool;
    struct dp_uconn *uc;
    struct dp_upstream_req *next; /* wait queue, or the HTTP/2 connection's list */
    struct dp_upstream_req *prev;
    int32_t h2_id;
    uint32_t flags; /* UREQ_F_* */
    size_t unconsumed; /* HTTP/2 response bytes not yet acknowledged */
    /* HTTP/2: what the request body sent so far was, while it fits the
     * buffer limit, to send it again on a stream the upstream refused
     * without processing it (REFUSED_STREAM, or above a GOAWAY's last
     * stream); replay: how many bytes at the front of s->req_body are such a
     * copy (the client's window was reopened for them once already). */
    struct dp_buf sent;
    size_t replay;
};

static void uc_on_connected(struct dp_conn *c);
static struct dp_uconn *uc_new_on(struct dp_pool *p, struct dp_worker *w);
static void uc_on_read(struct dp_conn *c);
static void uc_on_drained(struct dp_conn *c);
static void uc_on_close(struct dp_conn *c, enum dp_conn_close_reason why);
static void uc_on_timeout(struct dp_conn *c);
static void pool_dispatch(struct dp_pool *p);
static void h1_push_body(struct dp_uconn *uc, struct dp_upstream_req *u);
static void h2c_flush(struct dp_uconn *uc);
static int h2c_submit(struct dp_uconn *uc, struct dp_upstream_req *u);
static void uc_destroy(struct dp_uconn *uc);
static void h2c_detach(struct dp_uconn *uc, struct dp_upstream_req *u);
static void pool_maybe_free(struct dp_pool *p);

static const struct dp_conn_handler uc_handler = {
    .on_connected = uc_on_connected,
    .on_read = uc_on_read,
    .on_drained = uc_on_drained,
    .on_close = uc_on_close,
    .on_timeout = uc_on_timeout,
};

/* ---- pools and cluster state ----------------------------------------------- */

static struct dp_pool *pool_new(struct dp_cluster_rt *rt, const struct dp_endpoint *ep)
{
    struct dp_pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->rt = rt;
    memcpy(&p->addr, &ep->addr, ep->addrlen);
    p->addrlen = ep->addrlen;
    p->addr_str = strdup(ep->addr_str);
    if (p->addr_str == NULL) {
        free(p);
        return NULL;
    }
    /* Registered once per endpoint name (a lock, but only when a worker
     * first talks to an endpoint). */
    char name[96];
    snprintf(name, sizeof(name), "endpoint.%s.rq_active", ep->addr_str);
    p->st_rq_active = dp_stat_register(DP_STAT_GAUGE, "cluster", rt->name, name);
    return p;
}

static void pool_close_idle(struct dp_pool *p)
{
    struct dp_uconn *uc = p->conns;
    while (uc) {
        struct dp_uconn *next = uc->next;
        if ((!uc->h2 && uc->cur == NULL) || (uc->h2 && uc->n_streams == 0))
            uc_destroy(uc);
        uc = next;
    }
}

static void fail_req(struct dp_upstream_req *u, int status, const char *flag, const char *body);

static void pool_retire(struct dp_cluster_rt *rt, struct dp_pool *p)
{
    (void)rt;
    while (p->wait_head)
        fail_req(p->wait_head, 503, "UH", "no healthy upstream");
    /* Not marked retired until the idle connections are gone, so that
     * closing them does not free the pool under us. */
    pool_close_idle(p);
    p->retired = 1;
    /* Freed now, or by the last busy connection when it goes. */
    pool_maybe_free(p);
}

static void pool_maybe_free(struct dp_pool *p)
{
    if (p->retired && p->n_conns == 0 && p->wait_head == NULL) {
        free(p->addr_str);
        free(p);
    }
}

static void set_endpoints(struct dp_cluster_rt *rt, struct dp_endpoint_set *eps)
{
    if (eps == NULL) {
        for (size_t i = 0; i < rt->n_od_pools; i++)
            pool_retire(rt, rt->od_pools[i]);
        free(rt->od_pools);
        rt->od_pools = NULL;
        rt->n_od_pools = 0;
    }
    struct dp_pool **np = NULL;
    size_t n = eps ? eps->n : 0;
    if (n) {
        np = calloc(n, sizeof(*np));
        if (np == NULL)
            return; /* keep the old set */
    }
    /* Pools of endpoints that remain are kept, with their connections. */
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < rt->n_pools; j++) {
            if (rt->pools[j] && strcmp(rt->pools[j]->addr_str, eps->v[i].addr_str) == 0) {
                np[i] = rt->pools[j];
                rt->pools[j] = NULL;
                break;
            }
        }
    }
    for (size_t j = 0; j < rt->n_pools; j++)
        if (rt->pools[j])
            pool_retire(rt, rt->pools[j]);
    free(rt->pools);
    rt->pools = np;
    rt->n_pools = n;
    if (eps)
        dp_endpoint_set_ref(eps);
    if (rt->endpoints)
        dp_endpoint_set_unref(rt->endpoints);
    rt->endpoints = eps;
}

struct dp_cluster_rt *dp_cluster_rt_new(struct dp_worker *w, struct dp_cluster *cfg)
{
    struct dp_cluster_rt *rt = calloc(1, sizeof(*rt));
    if (rt == NULL)
        return NULL;
    rt->name = strdup(cfg->name);
    if (rt->name == NULL) {
        free(rt);
        return NULL;
    }
    rt->cfg = cfg;
    rt->rr_next = dp_worker_rand(w);
    set_endpoints(rt, cfg->endpoints);
    return rt;
}

void dp_cluster_rt_update(struct dp_worker *w, struct dp_cluster_rt *rt, struct dp_cluster *cfg)
{
    int same_transport = rt->cfg->tls == cfg->tls && rt->cfg->http2 == cfg->http2;
    rt->cfg = cfg;
    if (!same_transport) {
        /* Connections made with the old TLS context or protocol must not
         * take new requests: retire every pool. */
        set_endpoints(rt, NULL);
    }
    if (rt->endpoints != cfg->endpoints)
        set_endpoints(rt, cfg->endpoints);
}

void dp_cluster_rt_retire(struct dp_worker *w, struct dp_cluster_rt *rt)
{
    set_endpoints(rt, NULL);
    free(rt->name);
    free(rt);
}

void dp_cluster_rt_destroy(struct dp_worker *w, struct dp_cluster_rt *rt)
{
    dp_cluster_rt_retire(w, rt);
}

void dp_upstream_worker_cleanup(struct dp_worker *w)
{
    (void)w;
}

/* ---- load balancing ---------------------------------------------------------- */

static struct dp_pool *pick(struct dp_worker *w, struct dp_cluster_rt *rt)
{
    struct dp_endpoint_set *eps = rt->endpoints;
    size_t n = eps ? eps->n : 0;
    size_t idx = SIZE_MAX;
    if (n == 0)
        return NULL;
    switch (rt->cfg->lb) {
    case DP_LB_LEAST_REQUEST: {
        uint32_t k = rt->cfg->least_request_choices ? rt->cfg->least_request_choices : 2;
        unsigned best = UINT_MAX;
        for (uint32_t i = 0; i < k; i++) {
            size_t c = dp_worker_rand(w) % n;
            if (!eps->v[c].healthy)
                continue;
            unsigned a = rt->pools[c] ? rt->pools[c]->active : 0;
            if (a < best) {
                best = a;
                idx = c;
            }
        }
        break;
    }
    case DP_LB_RANDOM:
        idx = dp_worker_rand(w) % n;
        if (!eps->v[idx].healthy)
            idx = SIZE_MAX;
        break;
    case DP_LB_ROUND_ROBIN:
        break;
    }
    if (idx == SIZE_MAX) {
        for (size_t i = 0; i < n; i++) {
            size_t c = (rt->rr_next++) % n;
            if (eps->v[c].healthy) {
                idx = c;
                break;
            }
        }
    }
    if (idx == SIZE_MAX)
        return NULL;
    if (rt->pools[idx] == NULL)
        rt->pools[idx] = pool_new(rt, &eps->v[idx]);
    return rt->pools[idx];
}

/* ORIGINAL_DST: the pool of the address the downstream connection was
 * headed to (created on first use; at most MAX_OD_POOLS per worker). */
#define MAX_OD_POOLS 1024

static struct dp_pool *pick_original_dst(struct dp_cluster_rt *rt, const struct dp_orig_dst *od)
{
    if (od == NULL || od->len == 0)
        return NULL;
    for (size_t i = 0; i < rt->n_od_pools; i++)
        if (rt->od_pools[i]->addrlen == od->len && memcmp(&rt->od_pools[i]->addr, &od->addr, od->len) == 0)
            return rt->od_pools[i];
    if (rt->n_od_pools >= MAX_OD_POOLS)
        return NULL;
    struct dp_pool **nv = realloc(rt->od_pools, (rt->n_od_pools + 1) * sizeof(*nv));
    if (nv == NULL)
        return NULL;
    rt->od_pools = nv;
    char host[INET6_ADDRSTRLEN] = "?", str[INET6_ADDRSTRLEN + 16];
    unsigned port = 0;
    if (od->addr.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&od->addr;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
        snprintf(str, sizeof(str), "%s:%u", host, port);
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&od->addr;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
        snprintf(str, sizeof(str), "[%s]:%u", host, port);
    }
    struct dp_endpoint ep = {.addrlen = od->len, .addr_str = str, .weight = 1, .healthy = 1};
    memcpy(&ep.addr, &od->addr, od->len);
    struct dp_pool *p = pool_new(rt, &ep);
    if (p)
        rt->od_pools[rt->n_od_pools++] = p;
    return p;
}

/* ---- requests ------------------------------------------------------------------ */

static void wait_remove(struct dp_pool *p, struct dp_upstream_req *u)
{
    if (!(u->flags & UREQ_F_WAITING))
        return;
    if (u->prev)
        u->prev->next = u->next;
    else
        p->wait_head = u->next;
    if (u->next)
        u->next->prev = u->prev;
    else
        p->wait_tail = u->prev;
    u->next = u->prev = NULL;
    u->flags &= ~UREQ_F_WAITING;
    p->n_wait--;
    p->rt->pending_requests--;
}

static void wait_push(struct dp_pool *p, struct dp_upstream_req *u)
{
    u->flags |= UREQ_F_WAITING;
    u->prev = p->wait_tail;
    u->next = NULL;
    if (p->wait_tail)
        p->wait_tail->next = u;
    else
        p->wait_head = u;
    p->wait_tail = u;
    p->n_wait++;
    p->rt->pending_requests++;
}

static struct dp_upstream_req *wait_pop(struct dp_pool *p)
{
    struct dp_upstream_req *u = p->wait_head;
    if (u)
        wait_remove(p, u);
    return u;
}

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

/* Detaches u from everything and frees it. The stream is not told. */
static void req_free(struct dp_upstream_req *u)
{
    struct dp_pool *p = u->pool;
    wait_remove(p, u);
    if (u->s && u->s->up == u)
        u->s->up = NULL;
    p->active--;
    dp_stat_add(p->st_rq_active, -1);
    p->rt->active_requests--;
    dp_buf_release(&u->sent);
    free(u);
    pool_maybe_free(p);
}

static void fail_req(struct dp_upstream_req *u, int status, const char *flag, const char *body)
{
    struct dp_stream *s = u->s;
    if (u->uc && !u->uc->h2 && u->uc->cur == u)
        u->uc->cur = NULL;
    req_free(u);
    if (s)
        dp_stream_upstream_failed(s, status, flag, body);
}

int dp_upstream_start(struct dp_stream *s, struct dp_cluster_rt *rt)
{
    struct dp_worker *w = s->hcm->w;
    const struct dp_cluster *cfg = rt->cfg;

    if (rt->active_requests >= cfg->max_requests) {
        dp_stream_upstream_failed(s, 503, "UO", UPSTREAM_RESET_BODY "overflow");
        return -1;
    }
    struct dp_pool *p = cfg->type == DP_CLUSTER_ORIGINAL_DST ? pick_original_dst(rt, s->hcm->orig_dst)
                                                             : pick(w, rt);
    if (p == NULL) {
        dp_stream_upstream_failed(s, 503, "UH", "no healthy upstream");
        return -1;
    }
    struct dp_upstream_req *u = calloc(1, sizeof(*u));
    if (u == NULL) {
        dp_stream_upstream_failed(s, 503, "UO", UPSTREAM_RESET_BODY "overflow");
        return -1;
    }
    u->s = s;
    u->pool = p;
    s->up = u;
    s->up_st = cfg->st;
    dp_stat_add(cfg->st.rq_total, 1);
    s->upstream_host = p->addr_str;
    p->active++;
    dp_stat_add(p->st_rq_active, 1);
    rt->active_requests++;
    if (s->flags & DP_STREAM_F_TUNNEL_TCP) {
        /* A CONNECT that ends here: one TCP (or TLS) connection of its own,
         * bytes relayed as they are, never pooled. */
        if (rt->active_connections >= cfg->max_connections) {
            req_free(u);
            dp_stream_upstream_failed(s, 503, "UO", UPSTREAM_RESET_BODY "overflow");
            return -1;
        }
        struct dp_uconn *uc = uc_new_on(p, w);
        if (uc == NULL) {
            fail_req(u, 503, "UF", UPSTREAM_RESET_BODY "connection failure");
            return -1;
        }
        uc->raw = 1;
        uc->tunnel = 1;
        uc->cur = u;
        u->uc = uc;
        u->flags |= UREQ_F_UPGRADE;
        return 0;
    }
    if (cfg->http2 && dp_stream_wants_upgrade(s)) {
        req_free(u);
        dp_stream_upstream_failed(s, 503, "UPE",
                                  "upgrades and CONNECT to an HTTP/2 cluster are not supported");
        return -1;
    }
    if (rt->pending_requests >= cfg->max_pending_requests && p->n_conns >= cfg->max_connections) {
        dp_stat_add(cfg->st.rq_pending_overflow, 1);
        req_free(u);
        dp_stream_upstream_failed(s, 503, "UO", UPSTREAM_RESET_BODY "overflow");
        return -1;
    }
    wait_push(p, u);
    pool_dispatch(p);
    return 0;
}

const char *dp_upstream_host(const struct dp_upstream_req *u)
{
    return u->pool->addr_str;
}

/* ---- connections ---------------------------------------------------------------- */

static struct dp_uconn *uc_new(struct dp_pool *p)
{
    return uc_new_on(p, p->wait_head->s->hcm->w);
}

static struct dp_uconn *uc_new_on(struct dp_pool *p, struct dp_worker *w)
{
    const struct dp_cluster *cfg = p->rt->cfg;
    struct dp_uconn *uc = calloc(1, sizeof(*uc));
    if (uc == NULL)
        return NULL;
    SSL *ssl = NULL;
    if (cfg->tls) {
        ssl = dp_tls_client_new_ssl(cfg->tls);
        if (ssl == NULL) {
            free(uc);
            return NULL;
        }
    }
    uc->pool = p;
    uc->w = w;
    uc->h2 = cfg->http2;
    uc->next = p->conns;
    if (p->conns)
        p->conns->prev = uc;
    p->conns = uc;
    p->n_conns++;
    p->n_connecting++;
    p->rt->active_connections++;
    uc->st_active = cfg->st.cx_active;
    dp_stat_add(cfg->st.cx_total, 1);
    dp_stat_add(cfg->st.cx_active, 1);
    dp_conn_connect(&uc->conn, w->loop, (struct sockaddr *)&p->addr, p->addrlen, ssl, &uc_handler, uc);
    uc->conn.read_limit = cfg->per_connection_buffer_limit;
    dp_conn_set_timeout(&uc->conn, cfg->connect_timeout);
    LG_T("upstream", "cluster %s: connecting to %s", p->rt->name, p->addr_str);
    return uc;
}

static void uc_unlink(struct dp_uconn *uc)
{
    struct dp_pool *p = uc->pool;
    if (uc->prev)
        uc->prev->next = uc->next;
    else if (p->conns == uc)
        p->conns = uc->next;
    if (uc->next)
        uc->next->prev = uc->prev;
    uc->next = uc->prev = NULL;
    if (p->h2 == uc)
        p->h2 = NULL;
    if (!(uc->conn.flags & DP_CONN_F_ESTABLISHED) && p->n_connecting)
        p->n_connecting--;
    p->n_conns--;
    p->rt->active_connections--;
    dp_stat_add(uc->st_active, -1);
    uc->st_active = 0;
}

static void uc_reap(struct dp_defer *d)
{
    free((char *)d - offsetof(struct dp_uconn, defer));
}

/* Frees the connection; requests on it must have been detached. The memory
 * itself goes after this loop iteration (see dp_worker_defer). */
static void uc_free(struct dp_uconn *uc)
{
    struct dp_pool *p = uc->pool;
    uc_unlink(uc);
    if (uc->ngh2)
        nghttp2_session_del(uc->ngh2);
    dp_buf_release(&uc->hdr);
    dp_conn_free(&uc->conn);
    dp_worker_defer(uc->w, &uc->defer, uc_reap);
    pool_maybe_free(p);
}

static void uc_destroy(struct dp_uconn *uc)
{
    dp_conn_close(&uc->conn, DP_CONN_CLOSE_LOCAL);
    if (uc->cur) {
        struct dp_upstream_req *u = uc->cur;
        uc->cur = NULL;
        u->uc = NULL;
        fail_req(u, 503, "UC", UPSTREAM_RESET_BODY "connection termination");
    }
    while (uc->reqs) {
        struct dp_upstream_req *u = uc->reqs;
        h2c_detach(uc, u);
        fail_req(u, 503, "UC", UPSTREAM_RESET_BODY "connection termination");
    }
    uc_free(uc);
}

static void uc_make_idle(struct dp_uconn *uc)
{
    struct dp_pool *p = uc->pool;
    const struct dp_cluster *cfg = p->rt->cfg;
    if (p->retired || (cfg->max_requests_per_connection &&
                       uc->served >= cfg->max_requests_per_connection)) {
        uc_destroy(uc);
        return;
    }
    uc->idle = 1;
    dp_conn_set_timeout(&uc->conn, cfg->idle_timeout);
    pool_dispatch(p);
}

static void h1_send_head(struct dp_uconn *uc, struct dp_upstream_req *u);

/* Gives waiting requests to connections, opening new ones as allowed. */
static void pool_dispatch(struct dp_pool *p)
{
    const struct dp_cluster *cfg = p->rt->cfg;
    if (cfg->http2) {
        if (p->h2 && (p->h2->conn.flags & DP_CONN_F_ESTABLISHED) && !p->h2->goaway) {
            /* max_concurrent_streams: the rest wait for a stream to end. */
            while (p->wait_head && p->h2->n_streams < cfg->h2_max_concurrent_streams) {
                struct dp_upstream_req *u = wait_pop(p);
                if (h2c_submit(p->h2, u) < 0)
                    fail_req(u, 503, "UC", UPSTREAM_RESET_BODY "connection termination");
            }
            h2c_flush(p->h2);
            return;
        }
        if (p->wait_head && (p->h2 == NULL || p->h2->goaway)) {
            struct dp_uconn *uc = uc_new(p);
            if (uc == NULL) {
                while (p->wait_head)
                    fail_req(p->wait_head, 503, "UF", UPSTREAM_RESET_BODY "connection failure");
                return;
            }
            p->h2 = uc;
        }
        return;
    }
    while (p->wait_head) {
        struct dp_uconn *idle = NULL;
        for (struct dp_uconn *uc = p->conns; uc; uc = uc->next)
            if (uc->idle && !dp_conn_closed(&uc->conn)) {
                idle = uc;
                break;
            }
        if (idle) {
            struct dp_upstream_req *u = wait_pop(p);
            idle->idle = 0;
            dp_conn_set_timeout(&idle->conn, 0);
            h1_send_head(idle, u);
            continue;
        }
        /* One new connection per waiting request not already covered. */
        if (p->n_connecting >= p->n_wait)
            return;
        if (p->rt->active_connections >= cfg->max_connections)
            return; /* the request waits (pending) */
        if (uc_new(p) == NULL) {
            fail_req(p->wait_head, 503, "UF", UPSTREAM_RESET_BODY "connection failure");
        }
    }
}

static void h2c_callbacks(nghttp2_session_callbacks *cbs);

static void uc_on_connected(struct dp_conn *c)
{
    struct dp_uconn *uc = c->owner;
    struct dp_pool *p = uc->pool;
    if (p->n_connecting)
        p->n_connecting--;
    dp_conn_set_timeout(c, 0);
    LG_T("upstream", "cluster %s: connected to %s", p->rt->name, p->addr_str);
    if (uc->h2) {
        nghttp2_session_callbacks *cbs;
        nghttp2_option *opt;
        if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0) {
            uc_destroy(uc);
            return;
        }
        h2c_callbacks(cbs);
        nghttp2_option_set_no_auto_window_update(opt, 1);
        nghttp2_option_set_max_deflate_dynamic_table_size(opt, p->rt->cfg->h2_hpack_table_size);
        int rc = nghttp2_session_client_new2(&uc->ngh2, cbs, uc, opt);
        nghttp2_session_callbacks_del(cbs);
        nghttp2_option_del(opt);
        if (rc != 0) {
            uc_destroy(uc);
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
        pool_dispatch(p);
        h2c_flush(uc);
        return;
    }
    if (uc->raw) {
        struct dp_upstream_req *u = uc->cur;
        if (u == NULL || u->s == NULL) {
            uc_destroy(uc);
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
    pool_dispatch(p);
    if (!dp_conn_closed(c) && uc->idle && uc->cur == NULL)
        dp_conn_set_timeout(c, p->rt->cfg->idle_timeout);
}

static const char *reset_reason(struct dp_uconn *uc, enum dp_conn_close_reason why, char *buf,
                                size_t len)
{
    switch (why) {
    case DP_CONN_CLOSE_CONNECT_FAIL:
        return "connection failure";
    case DP_CONN_CLOSE_TIMEOUT:
        return "connection timeout";
    case DP_CONN_CLOSE_TLS_ERROR:
        snprintf(buf, len, "connection failure, transport failure reason: TLS error: %s",
                 uc->conn.ssl ? dp_tls_failure_reason(uc->conn.ssl, uc->conn.tls_error) : "?");
        return buf;
    default:
        return "connection termination";
    }
}

static void uc_fail_all(struct dp_uconn *uc, enum dp_conn_close_reason why)
{
    struct dp_pool *p = uc->pool;
    char rbuf[512], body[700];
    /* A connection is counted in n_connecting until on_connected ran. */
    int counted = !(uc->conn.flags & DP_CONN_F_ESTABLISHED);
    int before_connect = counted || (uc->conn.flags & DP_CONN_F_HANDSHAKE);
    const char *reason = reset_reason(uc, why, rbuf, sizeof(rbuf));
    snprintf(body, sizeof(body), UPSTREAM_RESET_BODY "%s", reason);
    const char *flag = before_connect ? "UF" : "UC";
    if (before_connect) {
        LG_D("upstream", "cluster %s: %s: %s", p->rt->name, p->addr_str, reason);
        dp_stat_add(why == DP_CONN_CLOSE_TIMEOUT ? p->rt->cfg->st.cx_connect_timeout : p->rt->cfg->st.cx_connect_fail, 1);
    }

    if (uc->cur) {
        struct dp_upstream_req *u = uc->cur;
        uc->cur = NULL;
        u->uc = NULL;
        fail_req(u, 503, flag, body);
    }
    while (uc->reqs) {
        struct dp_upstream_req *u = uc->reqs;
        h2c_detach(uc, u);
        fail_req(u, 503, flag, body);
    }
    if (!before_connect)
        return;
    /* Waiting requests lose the connection they were waiting for. */
    unsigned others = p->n_connecting - (counted ? 1u : 0u);
    if (uc->h2) {
        if (p->h2 == uc)
            p->h2 = NULL;
        while (p->wait_head)
            fail_req(p->wait_head, 503, flag, body);
    } else {
        while (p->wait_head && p->n_wait > others)
            fail_req(p->wait_head, 503, flag, body);
    }
}

static const http_parser_settings uh1_settings;

static void uc_on_close(struct dp_conn *c, enum dp_conn_close_reason why)
{
    struct dp_uconn *uc = c->owner;
    struct dp_pool *p = uc->pool;
    if (uc->cur && why == DP_CONN_CLOSE_EOF && uc->tunnel && (uc->cur->flags & UREQ_F_RESP_STARTED)) {
        /* The upstream ended the tunnel: so does the stream. */
        struct dp_upstream_req *u = uc->cur;
        struct dp_stream *s = u->s;
        uc->cur = NULL;
        u->uc = NULL;
        req_free(u);
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
            req_free(u);
            dp_stream_upstream_data(s, NULL, 0, 1);
        }
    }
    uc_fail_all(uc, why);
    uc_free(uc);
    pool_dispatch(p);
}

static void uc_on_timeout(struct dp_conn *c)
{
    struct dp_uconn *uc = c->owner;
    struct dp_pool *p = uc->pool;
    if (!(c->flags & DP_CONN_F_ESTABLISHED) || (c->flags & DP_CONN_F_HANDSHAKE)) {
        dp_conn_close(c, DP_CONN_CLOSE_TIMEOUT);
        uc_fail_all(uc, DP_CONN_CLOSE_TIMEOUT);
        uc_free(uc);
        pool_dispatch(p);
        return;
    }
    /* idle timeout */
    uc_destroy(uc);
}

/* ---- HTTP/1.1 client ----------------------------------------------------------- */

/* Fields the client codecs write themselves (host from :authority). */
static int is_hop(struct dp_str n)
{
    return dp_http_is_hop_field(n) || dp_str_eq(n, DP_STR_LIT("host"));
}

static void h1_send_head(struct dp_uconn *uc, struct dp_upstream_req *u)
{
    struct dp_stream *s = u->s;
    struct dp_buf *out = &uc->conn.out;
    const struct dp_request_head *r = &s->req;

    uc->cur = u;
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
        if (is_hop(h->name))
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
        return;
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
                    if (!is_hop(s->req_trailers.v[i].name))
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
    req_free(u);
    if (s) {
        if (s->resp_trailers.n)
            dp_stream_upstream_trailers(s);
        else
            dp_stream_upstream_data(s, NULL, 0, 1);
    }
    if (dp_conn_closed(&uc->conn))
        return;
    if (keep && dp_buf_size(&uc->conn.in) == 0)
        uc_make_idle(uc);
    else
        uc_destroy(uc);
}

static void uc_read_h1(struct dp_uconn *uc)
{
    struct dp_conn *c = &uc->conn;
    while (!dp_conn_closed(c) && dp_buf_size(&c->in) > 0) {
        if (uc->cur == NULL) {
            /* Bytes from an idle connection: the upstream is broken. */
            uc_destroy(uc);
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
            fail_req(u, 502, "UPE", "upstream protocol error");
            uc_free(uc);
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
                req_free(u);
                if (keep && dp_buf_size(&c->in) == 0)
                    uc_make_idle(uc);
                else
                    uc_destroy(uc);
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
}

static void uc_on_read(struct dp_conn *c)
{
    struct dp_uconn *uc = c->owner;
    if (uc->h2) {
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
                uc_fail_all(uc, DP_CONN_CLOSE_RESET);
                uc_free(uc);
                pool_dispatch(p);
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
            uc_fail_all(uc, DP_CONN_CLOSE_RESET);
            uc_free(uc);
            pool_dispatch(p);
        }
        return;
    }
    uc_read_h1(uc);
}

static void uc_on_drained(struct dp_conn *c)
{
    struct dp_uconn *uc = c->owner;
    if (uc->h2) {
        h2c_flush(uc);
        return;
    }
    if (uc->cur)
        h1_push_body(uc, uc->cur);
}

/* ---- the stream's calls ----------------------------------------------------------- */

void dp_upstream_kick(struct dp_upstream_req *u)
{
    struct dp_uconn *uc = u->uc;
    if (uc == NULL || !(u->flags & UREQ_F_HEAD_SENT))
        return; /* still waiting for a connection: the body waits in the stream */
    if (uc->h2) {
        if (u->flags & UREQ_F_DEFERRED) {
            u->flags &= ~UREQ_F_DEFERRED;
            nghttp2_session_resume_data(uc->ngh2, u->h2_id);
        }
        h2c_flush(uc);
        return;
    }
    h1_push_body(uc, u);
}

void dp_upstream_cancel(struct dp_upstream_req *u)
{
    struct dp_uconn *uc = u->uc;
    u->s->up = NULL;
    u->s = NULL;
    if (uc == NULL) {
        req_free(u);
        return;
    }
    if (uc->h2) {
        nghttp2_submit_rst_stream(uc->ngh2, NGHTTP2_FLAG_NONE, u->h2_id, NGHTTP2_CANCEL);
        h2c_detach(uc, u);
        req_free(u);
        h2c_flush(uc);
        return;
    }
    /* HTTP/1: the response in flight cannot be skipped; the connection goes. */
    uc->cur = NULL;
    u->uc = NULL;
    req_free(u);
    uc_destroy(uc);
}

void dp_upstream_pause(struct dp_upstream_req *u)
{
    u->flags |= UREQ_F_PAUSED;
    if (u->uc && !u->uc->h2)
        dp_conn_pause_read(&u->uc->conn);
}

void dp_upstream_resume(struct dp_upstream_req *u)
{
    if (!(u->flags & UREQ_F_PAUSED))
        return;
    u->flags &= ~UREQ_F_PAUSED;
    struct dp_uconn *uc = u->uc;
    if (uc == NULL)
        return;
    if (uc->h2) {
        if (u->unconsumed) {
            nghttp2_session_consume(uc->ngh2, u->h2_id, u->unconsumed);
            u->unconsumed = 0;
            h2c_flush(uc);
        }
        return;
    }
    dp_conn_resume_read(&uc->conn);
}

/* ---- HTTP/2 client --------------------------------------------------------------- */

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
        if (is_hop(h->name))
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
    struct dp_str scheme = uc->conn.ssl ? DP_STR_LIT("https") : DP_STR_LIT("http");
#define NV(n, nl, v, vl) \
    nva[k++] = (nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), (nl), (vl), NGHTTP2_NV_FLAG_NO_COPY_NAME}
    NV(":method", 7, r->method.p, r->method.n);
    NV(":scheme", 7, scheme.p, scheme.n);
    NV(":authority", 10, r->authority.p, r->authority.n);
    NV(":path", 5, r->path.p, r->path.n);
    for (size_t i = 0; i < r->headers.n; i++) {
        const struct dp_header *h = &r->headers.v[i];
        /* te is only ever "trailers" by now (stream.c): gRPC needs it. */
        if (is_hop(h->name) && !dp_str_eq(h->name, DP_STR_LIT("content-length")) &&
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
        uc_destroy(uc);
        pool_dispatch(p);
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
    if (u && (u->flags & UREQ_F_PAUSED))
        u->unconsumed += len;
    else
        nghttp2_session_consume(session, stream_id, len);
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
    wait_push(u->pool, u);
    pool_dispatch(u->pool);
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
    req_free(u);
    if (p->wait_head && uc->n_streams + 1 >= p->rt->cfg->h2_max_concurrent_streams)
        pool_dispatch(p); /* a stream slot is free for one that waits */
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

