/*
 * Upstream connection pools, per worker per endpoint: the requests waiting
 * for a connection, the connections (connect, TLS origination with the
 * cluster's context, idle keep-alive connections reused, the one
 * multiplexed connection of an HTTP/2 cluster up to max_concurrent_streams),
 * and what happens when a connection connects, fails, times out or closes.
 * What a connection says is its client codec's business (uc->codec).
 */
#include "dataplane/upstream_int.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/stream.h"
#include "dataplane/tls.h"
#include "xds/log.h"

static void uc_on_connected(struct dp_conn *c);
static void uc_on_read(struct dp_conn *c);
static void uc_on_drained(struct dp_conn *c);
static void uc_on_close(struct dp_conn *c, enum dp_conn_close_reason why);
static void uc_on_timeout(struct dp_conn *c);

static const struct dp_conn_handler uc_handler = {
    .on_connected = uc_on_connected,
    .on_read = uc_on_read,
    .on_drained = uc_on_drained,
    .on_close = uc_on_close,
    .on_timeout = uc_on_timeout,
};

/* ---- pools ------------------------------------------------------------------ */

struct dp_pool *dp_pool_new(struct dp_cluster_rt *rt, const struct dp_endpoint *ep)
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
        /* (cur is only ever set on a connection that is not multiplexed,
         * n_streams only on one that is). A raw TCP connection is never
         * idle: it lives on when its host leaves, as in Envoy, until the
         * cluster goes (dp_upstream_tcp_close_rt). */
        if (uc->cur == NULL && uc->n_streams == 0 && uc->codec != &dp_tcp_client_codec)
            dp_uconn_destroy(uc);
        uc = next;
    }
}

void dp_pool_retire(struct dp_cluster_rt *rt, struct dp_pool *p)
{
    (void)rt;
    while (p->wait_head)
        dp_ureq_fail(p->wait_head, 503, "UH", "no healthy upstream");
    /* Not marked retired until the idle connections are gone, so that
     * closing them does not free the pool under us. */
    pool_close_idle(p);
    p->retired = 1;
    /* Freed now, or by the last busy connection when it goes. */
    dp_pool_maybe_free(p);
}

void dp_pool_maybe_free(struct dp_pool *p)
{
    if (p->retired && p->n_conns == 0 && p->wait_head == NULL) {
        free(p->addr_str);
        free(p);
    }
}

/* ---- the wait queue ----------------------------------------------------------- */

void dp_pool_wait_remove(struct dp_pool *p, struct dp_upstream_req *u)
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

void dp_pool_wait_push(struct dp_pool *p, struct dp_upstream_req *u)
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
        dp_pool_wait_remove(p, u);
    return u;
}

/* ---- connections ---------------------------------------------------------------- */

static struct dp_uconn *uc_new(struct dp_pool *p)
{
    return dp_uconn_new(p, p->wait_head->s->hcm->w);
}

struct dp_uconn *dp_uconn_new(struct dp_pool *p, struct dp_worker *w)
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
    uc->codec = dp_client_codec_for(cfg);
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
    if (p->mux == uc)
        p->mux = NULL;
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
void dp_uconn_free(struct dp_uconn *uc)
{
    struct dp_pool *p = uc->pool;
    uc_unlink(uc);
    uc->codec->destroy(uc);
    dp_conn_free(&uc->conn);
    dp_worker_defer(uc->w, &uc->defer, uc_reap);
    dp_pool_maybe_free(p);
}

void dp_uconn_destroy(struct dp_uconn *uc)
{
    dp_conn_close(&uc->conn, DP_CONN_CLOSE_LOCAL);
    if (uc->cur) {
        struct dp_upstream_req *u = uc->cur;
        uc->cur = NULL;
        u->uc = NULL;
        dp_ureq_fail(u, 503, "UC", UPSTREAM_RESET_BODY "connection termination");
    }
    while (uc->reqs) {
        struct dp_upstream_req *u = uc->reqs;
        uc->codec->detach(uc, u);
        dp_ureq_fail(u, 503, "UC", UPSTREAM_RESET_BODY "connection termination");
    }
    dp_uconn_free(uc);
}

void dp_uconn_make_idle(struct dp_uconn *uc)
{
    struct dp_pool *p = uc->pool;
    const struct dp_cluster *cfg = p->rt->cfg;
    if (p->retired || (cfg->max_requests_per_connection &&
                       uc->served >= cfg->max_requests_per_connection)) {
        dp_uconn_destroy(uc);
        return;
    }
    uc->idle = 1;
    dp_conn_set_timeout(&uc->conn, cfg->idle_timeout);
    dp_pool_dispatch(p);
}

void dp_pool_dispatch(struct dp_pool *p)
{
    const struct dp_cluster *cfg = p->rt->cfg;
    if (dp_client_codec_for(cfg)->multiplexed) {
        if (p->mux && (p->mux->conn.flags & DP_CONN_F_ESTABLISHED) && !p->mux->goaway) {
            /* max_concurrent_streams: the rest wait for a stream to end. */
            while (p->wait_head && p->mux->n_streams < cfg->h2_max_concurrent_streams) {
                struct dp_upstream_req *u = wait_pop(p);
                if (p->mux->codec->start(p->mux, u) < 0)
                    dp_ureq_fail(u, 503, "UC", UPSTREAM_RESET_BODY "connection termination");
            }
            p->mux->codec->flush(p->mux);
            return;
        }
        if (p->wait_head && (p->mux == NULL || p->mux->goaway)) {
            struct dp_uconn *uc = uc_new(p);
            if (uc == NULL) {
                while (p->wait_head)
                    dp_ureq_fail(p->wait_head, 503, "UF", UPSTREAM_RESET_BODY "connection failure");
                return;
            }
            p->mux = uc;
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
            if (idle->codec->start(idle, u) < 0)
                dp_ureq_fail(u, 503, "UC", UPSTREAM_RESET_BODY "connection termination");
            continue;
        }
        /* One new connection per waiting request not already covered. */
        if (p->n_connecting >= p->n_wait)
            return;
        if (p->rt->active_connections >= cfg->max_connections)
            return; /* the request waits (pending) */
        if (uc_new(p) == NULL) {
            dp_ureq_fail(p->wait_head, 503, "UF", UPSTREAM_RESET_BODY "connection failure");
        }
    }
}

static void uc_on_connected(struct dp_conn *c)
{
    struct dp_uconn *uc = c->owner;
    struct dp_pool *p = uc->pool;
    if (p->n_connecting)
        p->n_connecting--;
    dp_conn_set_timeout(c, 0);
    LG_T("upstream", "cluster %s: connected to %s", p->rt->name, p->addr_str);
    uc->codec->on_connected(uc);
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

void dp_uconn_fail_all(struct dp_uconn *uc, enum dp_conn_close_reason why)
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
        dp_ureq_fail(u, 503, flag, body);
    }
    while (uc->reqs) {
        struct dp_upstream_req *u = uc->reqs;
        uc->codec->detach(uc, u);
        dp_ureq_fail(u, 503, flag, body);
    }
    /* A raw TCP connection (tcp_upstream.c) was nobody else's: the
     * requests waiting in the pool get their own from the dispatch that
     * follows its close. */
    if (!before_connect || uc->codec == &dp_tcp_client_codec)
        return;
    /* Waiting requests lose the connection they were waiting for. */
    unsigned others = p->n_connecting - (counted ? 1u : 0u);
    if (uc->codec->multiplexed) {
        if (p->mux == uc)
            p->mux = NULL;
        while (p->wait_head)
            dp_ureq_fail(p->wait_head, 503, flag, body);
    } else {
        while (p->wait_head && p->n_wait > others)
            dp_ureq_fail(p->wait_head, 503, flag, body);
    }
}

static void uc_on_read(struct dp_conn *c)
{
    struct dp_uconn *uc = c->owner;
    uc->codec->on_read(uc);
}

static void uc_on_drained(struct dp_conn *c)
{
    struct dp_uconn *uc = c->owner;
    uc->codec->on_drained(uc);
}

static void uc_on_close(struct dp_conn *c, enum dp_conn_close_reason why)
{
    struct dp_uconn *uc = c->owner;
    struct dp_pool *p = uc->pool;
    if (uc->codec->on_close)
        uc->codec->on_close(uc, why);
    dp_uconn_fail_all(uc, why);
    dp_uconn_free(uc);
    dp_pool_dispatch(p);
}

static void uc_on_timeout(struct dp_conn *c)
{
    struct dp_uconn *uc = c->owner;
    struct dp_pool *p = uc->pool;
    if (!(c->flags & DP_CONN_F_ESTABLISHED) || (c->flags & DP_CONN_F_HANDSHAKE)) {
        dp_conn_close(c, DP_CONN_CLOSE_TIMEOUT);
        dp_uconn_fail_all(uc, DP_CONN_CLOSE_TIMEOUT);
        dp_uconn_free(uc);
        dp_pool_dispatch(p);
        return;
    }
    /* idle timeout */
    dp_uconn_destroy(uc);
}

