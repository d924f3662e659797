/*
 * Clusters at run time, per worker: the endpoint table with a pool per
 * endpoint (kept across updates for endpoints that remain), and the load
 * balancer that picks one of them for a request (round robin, random, least
 * request; ORIGINAL_DST: the downstream connection's own destination).
 */
#include "dataplane/upstream_int.h"

#include <arpa/inet.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/stream.h"

/* ---- cluster state ---------------------------------------------------------- */

static void set_endpoints(struct dp_cluster_rt *rt, struct dp_endpoint_set *eps)
{
    if (eps == NULL) {
        for (size_t i = 0; i < rt->n_od_pools; i++)
            dp_pool_retire(rt, rt->od_pools[i]);
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
            dp_pool_retire(rt, rt->pools[j]);
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
    /* Raw TCP connections outlive their pool's retirement, not rt. */
    dp_upstream_tcp_close_rt(rt);
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

struct dp_pool *dp_cluster_pick(struct dp_worker *w, struct dp_cluster_rt *rt)
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
        rt->pools[idx] = dp_pool_new(rt, &eps->v[idx]);
    return rt->pools[idx];
}

/* ORIGINAL_DST: the pool of the address the downstream connection was
 * headed to (created on first use; at most MAX_OD_POOLS per worker). */
#define MAX_OD_POOLS 1024

struct dp_pool *dp_cluster_pick_original_dst(struct dp_cluster_rt *rt, const struct dp_orig_dst *od)
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
    struct dp_pool *p = dp_pool_new(rt, &ep);
    if (p)
        rt->od_pools[rt->n_od_pools++] = p;
    return p;
}
