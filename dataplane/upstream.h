/*
 * The upstream side: per-worker cluster state and load balancing
 * (cluster.c), connection pools with upstream TLS (pool.c: HTTP/1.1
 * keep-alive, HTTP/2 multiplexing), the requests (upstream.c) and the
 * client codecs (http1_client.c, http2_client.c); their shared internals are
 * in upstream_int.h. A stream's router starts an upstream request with
 * dp_upstream_start(); request body bytes flow from s->req_body (the stream
 * appends, then kicks); the response comes back through dp_stream_upstream_*.
 */
#ifndef LEGATE_DP_UPSTREAM_H
#define LEGATE_DP_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "dataplane/config.h"
#include "dataplane/worker.h"

struct dp_stream;
struct dp_upstream_req;

/** The worker's runtime state of cluster cfg (from the worker's current
 *  snapshot, until dp_cluster_rt_update gives the next); NULL without
 *  memory. */
struct dp_cluster_rt *dp_cluster_rt_new(struct dp_worker *w, struct dp_cluster *cfg);
/** A new version of the cluster: keeps pools of endpoints that remain. */
void dp_cluster_rt_update(struct dp_worker *w, struct dp_cluster_rt *rt, struct dp_cluster *cfg);
/** The cluster left the config: idle connections close now, busy ones when
 *  their requests end; the runtime state is freed after that. */
void dp_cluster_rt_retire(struct dp_worker *w, struct dp_cluster_rt *rt);
/** Shutdown: closes everything now. */
void dp_cluster_rt_destroy(struct dp_worker *w, struct dp_cluster_rt *rt);
/** Frees retired clusters and pools left at shutdown. */
void dp_upstream_worker_cleanup(struct dp_worker *w);

/**
 * Starts the upstream request of s (whose request head is final) on rt.
 * Returns 0 when the request is on its way (s->up set), or -1 when it could
 * not start; then the stream has already been answered locally (503 with
 * "no healthy upstream" or an overflow reason).
 */
int dp_upstream_start(struct dp_stream *s, struct dp_cluster_rt *rt);

/** More request body is in s->req_body, or the request is complete. */
void dp_upstream_kick(struct dp_upstream_req *u);

/** The downstream went away: abandon the request. s->up is cleared. */
void dp_upstream_cancel(struct dp_upstream_req *u);

/** Stop reading the response (downstream back-pressure). */
void dp_upstream_pause(struct dp_upstream_req *u);
/** Resume reading it after dp_upstream_pause; nothing otherwise. */
void dp_upstream_resume(struct dp_upstream_req *u);

/** "ip:port" of the endpoint chosen, for logs. */
const char *dp_upstream_host(const struct dp_upstream_req *u);

#endif
