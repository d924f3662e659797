/*
 * Raw TCP upstream connections for a network terminal (tcp_proxy): see
 * dataplane/upstream.h. A connection is a pool's struct dp_uconn like any
 * other (the pool connects it with the cluster's TLS context, times the
 * connect out, counts it in upstream_cx_* and max_connections, and closes
 * it when its host leaves the cluster), whose client codec passes every
 * event to its owner instead of speaking HTTP. It carries no request: the
 * pool never gives it one, nor keeps it idle.
 */
#include "dataplane/upstream_int.h"

#include "xds/log.h"

/* This worker's raw connections (pools and clusters are per worker): the
 * ones a retired pool keeps alive are not reachable from their cluster. */
static __thread struct dp_uconn *live;

static void live_unlink(struct dp_uconn *uc)
{
    if (uc->tcp_prev)
        uc->tcp_prev->tcp_next = uc->tcp_next;
    else if (live == uc)
        live = uc->tcp_next;
    if (uc->tcp_next)
        uc->tcp_next->tcp_prev = uc->tcp_prev;
    uc->tcp_next = uc->tcp_prev = NULL;
}

struct dp_uconn *dp_upstream_tcp_open(struct dp_worker *w, struct dp_cluster_rt *rt, const struct dp_orig_dst *od,
                                      const struct dp_tcp_upstream_ops *ops, void *owner, const char **err)
{
    const struct dp_cluster *cfg = rt->cfg;
    struct dp_pool *p = cfg->type == DP_CLUSTER_ORIGINAL_DST ? dp_cluster_pick_original_dst(rt, od)
                                                            : dp_cluster_pick(w, rt);
    if (p == NULL) {
        *err = "no healthy upstream";
        return NULL;
    }
    if (rt->active_connections >= cfg->max_connections) {
        *err = "overflow";
        return NULL;
    }
    struct dp_uconn *uc = dp_uconn_new(p, w);
    if (uc == NULL) {
        *err = "connection failure";
        return NULL;
    }
    uc->codec = &dp_tcp_client_codec;
    uc->raw = 1;
    uc->tcp_ops = ops;
    uc->tcp_owner = owner;
    uc->tcp_next = live;
    if (live)
        live->tcp_prev = uc;
    live = uc;
    /* The peer's FIN is the owner's to pass on (half-close), not a close. */
    uc->conn.flags |= DP_CONN_F_HALF_OPEN;
    return uc;
}

struct dp_conn *dp_upstream_tcp_conn(struct dp_uconn *uc)
{
    return &uc->conn;
}

const char *dp_upstream_tcp_host(const struct dp_uconn *uc)
{
    return uc->pool->addr_str;
}

void dp_upstream_tcp_close(struct dp_uconn *uc, int graceful)
{
    uc->tcp_ops = NULL;
    uc->tcp_owner = NULL;
    if (!graceful || dp_conn_closed(&uc->conn)) {
        dp_uconn_destroy(uc);
        return;
    }
    /* The pool frees it when the close is done (its on_close). */
    dp_conn_resume_read(&uc->conn);
    dp_conn_close_graceful(&uc->conn);
}

/* ---- the codec --------------------------------------------------------------- */

static void tcp_on_connected(struct dp_uconn *uc)
{
    /* HTTP requests of the same pool may have counted on this connection
     * while it connected: give them their own. */
    dp_pool_dispatch(uc->pool);
    if (uc->tcp_ops) {
        uc->tcp_ops->on_connected(uc->tcp_owner, &uc->conn);
        return;
    }
    dp_uconn_destroy(uc); /* let go of while connecting */
}

static void tcp_on_read(struct dp_uconn *uc)
{
    if (uc->tcp_ops) {
        uc->tcp_ops->on_read(uc->tcp_owner, &uc->conn);
        return;
    }
    /* Flushing after the owner went: what still comes is dropped. */
    dp_buf_consume(&uc->conn.in, dp_buf_size(&uc->conn.in));
    if (uc->conn.flags & DP_CONN_F_EOF)
        dp_conn_close_graceful(&uc->conn);
}

static void tcp_on_drained(struct dp_uconn *uc)
{
    if (uc->tcp_ops && uc->tcp_ops->on_drained)
        uc->tcp_ops->on_drained(uc->tcp_owner, &uc->conn);
}

static int tcp_start(struct dp_uconn *uc, struct dp_upstream_req *u)
{
    (void)uc;
    (void)u;
    return -1; /* never given a request */
}

static void tcp_kick(struct dp_uconn *uc, struct dp_upstream_req *u)
{
    (void)uc;
    (void)u;
}

static void tcp_cancel(struct dp_uconn *uc, struct dp_upstream_req *u)
{
    (void)uc;
    dp_ureq_free(u);
}

static void tcp_resume(struct dp_uconn *uc, struct dp_upstream_req *u)
{
    (void)uc;
    (void)u;
}

/* Every way a connection ends goes through here (the pool's close, its
 * connect timeout, dp_uconn_destroy): the owner hears it once. */
static void tcp_destroy(struct dp_uconn *uc)
{
    live_unlink(uc);
    const struct dp_tcp_upstream_ops *ops = uc->tcp_ops;
    if (ops == NULL)
        return;
    uc->tcp_ops = NULL;
    ops->on_close(uc->tcp_owner, uc->conn.close_reason, (uc->conn.flags & DP_CONN_F_ESTABLISHED) != 0);
}

const struct dp_client_codec dp_tcp_client_codec = {
    .multiplexed = 0,
    .upgrades = 0,
    .on_connected = tcp_on_connected,
    .on_read = tcp_on_read,
    .on_drained = tcp_on_drained,
    .on_close = NULL,
    .start = tcp_start,
    .flush = NULL,
    .kick = tcp_kick,
    .cancel = tcp_cancel,
    .pause = NULL,
    .resume = tcp_resume,
    .detach = NULL,
    .destroy = tcp_destroy,
};

void dp_upstream_tcp_close_rt(struct dp_cluster_rt *rt)
{
    /* Closing one may end its client connection, never another raw one;
     * still, start over after each. */
    for (;;) {
        struct dp_uconn *uc = live;
        while (uc && uc->pool->rt != rt)
            uc = uc->tcp_next;
        if (uc == NULL)
            return;
        dp_uconn_destroy(uc);
    }
}
