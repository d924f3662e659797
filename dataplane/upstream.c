/*
 * Upstream requests: what the stream calls (dataplane/upstream.h). A
 * request gets a pool from its cluster's load balancer (cluster.c), waits
 * there for a connection (pool.c), and is then carried by that connection's
 * client codec (http1_client.c, http2_client.c), which feeds the response
 * back to the stream.
 */
#include "dataplane/upstream_int.h"

#include <stdlib.h>

#include "dataplane/stream.h"

/* ---- requests ------------------------------------------------------------------ */

/* Detaches u from everything and frees it. The stream is not told. */
void dp_ureq_free(struct dp_upstream_req *u)
{
    struct dp_pool *p = u->pool;
    dp_pool_wait_remove(p, u);
    if (u->s && u->s->up == u)
        u->s->up = NULL;
    p->active--;
    dp_stat_add(p->st_rq_active, -1);
    p->rt->active_requests--;
    dp_buf_release(&u->sent);
    free(u);
    dp_pool_maybe_free(p);
}

void dp_ureq_fail(struct dp_upstream_req *u, int status, const char *flag, const char *body)
{
    struct dp_stream *s = u->s;
    /* (a multiplexed connection never has a cur; its requests are
     * detached by whoever fails them) */
    if (u->uc && u->uc->cur == u)
        u->uc->cur = NULL;
    dp_ureq_free(u);
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
    struct dp_pool *p = cfg->type == DP_CLUSTER_ORIGINAL_DST
                            ? dp_cluster_pick_original_dst(rt, s->hcm->orig_dst)
                            : dp_cluster_pick(w, rt);
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
            dp_ureq_free(u);
            dp_stream_upstream_failed(s, 503, "UO", UPSTREAM_RESET_BODY "overflow");
            return -1;
        }
        struct dp_uconn *uc = dp_uconn_new(p, w);
        if (uc == NULL) {
            dp_ureq_fail(u, 503, "UF", UPSTREAM_RESET_BODY "connection failure");
            return -1;
        }
        /* Raw bytes whatever the cluster's protocol: the HTTP/1 codec's
         * tunnel path relays them (an HTTP/2 cluster's codec would start a
         * session on the TCP connection). */
        uc->codec = &dp_http1_client_codec;
        uc->raw = 1;
        uc->tunnel = 1;
        uc->cur = u;
        u->uc = uc;
        u->flags |= UREQ_F_UPGRADE;
        return 0;
    }
    if (!dp_client_codec_for(cfg)->upgrades && dp_stream_wants_upgrade(s)) {
        dp_ureq_free(u);
        dp_stream_upstream_failed(s, 503, "UPE",
                                  "upgrades and CONNECT to an HTTP/2 cluster are not supported");
        return -1;
    }
    if (rt->pending_requests >= cfg->max_pending_requests && p->n_conns >= cfg->max_connections) {
        dp_stat_add(cfg->st.rq_pending_overflow, 1);
        dp_ureq_free(u);
        dp_stream_upstream_failed(s, 503, "UO", UPSTREAM_RESET_BODY "overflow");
        return -1;
    }
    dp_pool_wait_push(p, u);
    dp_pool_dispatch(p);
    return 0;
}

const char *dp_upstream_host(const struct dp_upstream_req *u)
{
    return u->pool->addr_str;
}

/* ---- the stream's calls ----------------------------------------------------------- */

void dp_upstream_kick(struct dp_upstream_req *u)
{
    struct dp_uconn *uc = u->uc;
    if (uc == NULL || !(u->flags & UREQ_F_HEAD_SENT))
        return; /* still waiting for a connection: the body waits in the stream */
    uc->codec->kick(uc, u);
}

void dp_upstream_cancel(struct dp_upstream_req *u)
{
    struct dp_uconn *uc = u->uc;
    u->s->up = NULL;
    u->s = NULL;
    if (uc == NULL) {
        dp_ureq_free(u);
        return;
    }
    uc->codec->cancel(uc, u);
}

void dp_upstream_pause(struct dp_upstream_req *u)
{
    u->flags |= UREQ_F_PAUSED;
    if (u->uc && u->uc->codec->pause)
        u->uc->codec->pause(u->uc, u);
}

void dp_upstream_resume(struct dp_upstream_req *u)
{
    if (!(u->flags & UREQ_F_PAUSED))
        return;
    u->flags &= ~UREQ_F_PAUSED;
    struct dp_uconn *uc = u->uc;
    if (uc == NULL)
        return;
    uc->codec->resume(uc, u);
}

