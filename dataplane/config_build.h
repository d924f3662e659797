/*
 * Compiling Envoy v3 resources (protobuf-c structs, from the bootstrap or
 * from xDS) into the immutable runtime config (config.h). Every rejection
 * names the field: "filter_chains[0].filters[0].typed_config.http_filters[1]
 * .name: unknown HTTP filter \"envoy.filters.http.lua\"". The caller
 * prefixes the resource ("static_resources.listeners[2]" or the xDS
 * resource name).
 */
#ifndef LEGATE_DP_CONFIG_BUILD_H
#define LEGATE_DP_CONFIG_BUILD_H

#include <stddef.h>

#include "dataplane/config.h"
#include "dataplane/tls.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/common.pb-c.h"
#include "legate/config/v1/upstream_tls.pb-c.h"
#include "xds/bootstrap.h"

/* What resources refer to by name. */
struct dp_build_ctx {
    struct dp_secret_lookup secrets;
    /** RDS: the RouteConfiguration named name, or NULL when unknown. */
    const Envoy__Config__Route__V3__RouteConfiguration *(*route_lookup)(void *ud, const char *name);
    void *route_ud;
    /** The data-plane-wide default upstream client certificate, or NULL. */
    const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *default_upstream_tls;
    /** Dynamic resources are allowed (rds, eds configs). */
    int dynamic;
};

struct dp_listener *dp_listener_build(const Envoy__Config__Listener__V3__Listener *l,
                                      const struct dp_build_ctx *ctx, char *err, size_t errlen);

/** Builds a cluster. For EDS clusters, cla (may be NULL) gives the
 *  endpoints; for STATIC and STRICT_DNS the cluster's load_assignment does. */
struct dp_cluster *dp_cluster_build(const Envoy__Config__Cluster__V3__Cluster *c,
                                    const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *cla,
                                    const struct dp_build_ctx *ctx, char *err, size_t errlen);

/** Builds an endpoint set from a ClusterLoadAssignment (IP addresses only;
 *  STRICT_DNS clusters resolve names themselves). */
struct dp_endpoint_set *dp_endpoints_build(
    const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *cla, char *err, size_t errlen);

/** A copy of c with another endpoint set (EDS update, DNS refresh); shares
 *  everything else with c. */
struct dp_cluster *dp_cluster_with_endpoints(const struct dp_cluster *c, struct dp_endpoint_set *eps);

/** Parses "1.2.3.4" / "::1" with port into a sockaddr. Returns 0 or -1. */
int dp_sockaddr_parse(const char *ip, unsigned port, struct sockaddr_storage *ss, socklen_t *len);

/* The static resources of a bootstrap, built (static_build.c). */
struct dp_static_config {
    struct dp_listener **listeners;
    size_t n_listeners;
    struct dp_cluster **clusters; /* sorted by name */
    size_t n_clusters;
};

/** Builds bs->static_resources into sc (no socket is opened). *dut_out
 *  (when not NULL) receives the default upstream TLS extension, which
 *  dynamic clusters use too (the caller frees it). Returns 0, or -1 with
 *  "static_resources.clusters[2].field: reason" in err and sc empty. */
int dp_static_build(const xds_bootstrap_t *bs, struct dp_static_config *sc,
                    Legate__Config__V1__DefaultUpstreamTls **dut_out, char *err, size_t errlen);
/** Drops sc's references and empties it. */
void dp_static_config_free(struct dp_static_config *sc);

/** qsort/bsearch order of struct dp_cluster * by name. */
int dp_cluster_cmp_name(const void *a, const void *b);

#endif
