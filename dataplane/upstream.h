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
#include "dataplane/conn.h"
#include "dataplane/worker.h"

struct dp_stream;
struct dp_upstream_req;
struct dp_uconn;
struct dp_orig_dst;

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

/* ---- raw TCP connections, for a network terminal (tcp_proxy) ------------
 * One connection of its own to a host of a cluster, with the cluster's
 * transport socket (its UpstreamTlsContext: mTLS with the cluster's client
 * certificate), counted in the cluster's upstream_cx_* stats and its
 * max_connections, never pooled. The owner reads conn->in, writes conn->out
 * and flushes, pauses and resumes it, as with any struct dp_conn; the
 * connection is half-open (the peer's EOF sets DP_CONN_F_EOF and leaves it
 * to the owner). Implemented in tcp_upstream.c. */

/** What the owner hears; each gets the owner pointer given to open. */
struct dp_tcp_upstream_ops {
    /** TCP (and TLS) is up. */
    void (*on_connected)(void *owner, struct dp_conn *c);
    /** New bytes in c->in, or the peer's EOF (c->flags & DP_CONN_F_EOF). */
    void (*on_read)(void *owner, struct dp_conn *c);
    /** c->out was sent after the socket refused some (dp_conn_handler). */
    void (*on_drained)(void *owner, struct dp_conn *c);
    /** The connection is gone; connected says whether on_connected ran
     *  (0: a connect failure or timeout, or the TLS handshake failed). The
     *  owner must not use it again. Not called after dp_upstream_tcp_close. */
    void (*on_close)(void *owner, enum dp_conn_close_reason why, int connected);
};

/** Opens a connection to the host rt's load balancer picks (ORIGINAL_DST:
 *  where od was headed). Returns it, or NULL with *err "no healthy
 *  upstream", "overflow" (max_connections) or "connection failure". */
struct dp_uconn *dp_upstream_tcp_open(struct dp_worker *w, struct dp_cluster_rt *rt, const struct dp_orig_dst *od,
                                      const struct dp_tcp_upstream_ops *ops, void *owner, const char **err);
/** The connection to read and write. */
struct dp_conn *dp_upstream_tcp_conn(struct dp_uconn *uc);
/** "ip:port" of its host. */
const char *dp_upstream_tcp_host(const struct dp_uconn *uc);
/** The owner lets go of uc: on_close is not called any more. graceful: what
 *  is queued is sent first (input still arriving is discarded); else it
 *  closes now. */
void dp_upstream_tcp_close(struct dp_uconn *uc, int graceful);

#endif
