/*
 * envoy.filters.network.tcp_proxy: a terminal network filter. A filter
 * chain that ends in it relays the bytes of each client connection (plain,
 * or TLS ended by the chain's transport socket) to a connection of its own
 * to a host of the cluster (the cluster's load balancer and transport
 * socket), both ways, with half-close and back-pressure, until both sides
 * are done or the idle timeout fires.
 *
 * Unlike the filters before it (dataplane/netfilter.h), a terminal owns the
 * connection's bytes, as the HTTP connection manager does: it is built by
 * the listener builder (dataplane/listener_build.c) and runs as the
 * connection's codec (struct dp_server_codec, dataplane/hcm.h), without the
 * per-stream operations. config.c builds the config, tcp_proxy.c runs it.
 */
#ifndef LEGATE_FILTERS_TCP_PROXY_H
#define LEGATE_FILTERS_TCP_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "dataplane/stats.h"

#define DP_TCP_PROXY_NAME "envoy.filters.network.tcp_proxy"
#define DP_TCP_PROXY_TYPE "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

struct dp_server_codec;

/* cluster, or one of weighted_clusters. */
struct dp_tcp_proxy_cluster {
    char *name;
    uint32_t weight;
};

/* Shared read-only by every worker; freed with the listener. */
struct dp_tcp_proxy_cfg {
    char *stat_prefix;
    struct dp_tcp_proxy_cluster *clusters; /* one (cluster) or the weighted ones */
    size_t n_clusters;
    uint64_t total_weight;
    double idle_timeout;                   /* seconds; 0: none (default 3600) */
    double max_duration;                   /* max_downstream_connection_duration; 0: none */
    uint32_t max_connect_attempts;         /* default 1 */
    struct {                               /* tcp.<stat_prefix>.* */
        dp_stat_t cx_total, cx_no_route, rx_bytes, tx_bytes;
        dp_stat_t paused_reading, resumed_reading, idle_timeout, flush_total;
        dp_stat_t attempts_exceeded, max_duration_reached;
    } st;
};

/** Builds the config from the unpacked TcpProxy. Returns it, or NULL with
 *  "field: reason" in err (the caller prefixes the path). */
struct dp_tcp_proxy_cfg *dp_tcp_proxy_config_new(const ProtobufCMessage *msg, char *err, size_t errlen);
void dp_tcp_proxy_config_free(struct dp_tcp_proxy_cfg *cfg);

/** The cluster a new connection goes to: weighted_clusters by weight, r a
 *  random number. */
const struct dp_tcp_proxy_cluster *dp_tcp_proxy_pick(const struct dp_tcp_proxy_cfg *cfg, uint32_t r);

/** The terminal: the connection manager (dataplane/hcm.c) starts it in
 *  place of an HTTP codec on a connection whose chain has chain->tcp_proxy. */
extern const struct dp_server_codec dp_tcp_proxy_codec;

#endif
