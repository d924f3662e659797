/* envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy -> struct
 * dp_tcp_proxy_cfg. Every TcpProxy field that changes what the proxy does
 * and that legate does not implement is refused by name: a connection
 * proxied without it would not be the one the config asked for. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "filters/tcp_proxy/tcp_proxy.h"

typedef Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy TcpProxy;
typedef Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster__ClusterWeight ClusterWeight;

static void *fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void *fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return NULL;
}

static double seconds(const Google__Protobuf__Duration *d)
{
    return (double)d->seconds + (double)d->nanos / 1e9;
}

/* A field newer than legate's copy of the proto: it may change meaning, so
 * it is refused by its number (DESIGN.md: classify every field). */
static int unknown_field(const ProtobufCMessage *m, const char *path, char *err, size_t errlen)
{
    if (m == NULL || m->n_unknown_fields == 0)
        return 0;
    snprintf(err, errlen, "%sfield number %u: unknown to legate (newer than its TcpProxy proto), refused", path,
             m->unknown_fields[0].tag);
    return -1;
}

/* The fields legate refuses, with why. */
static const char *refused(const TcpProxy *tp)
{
    if (tp->on_demand)
        return "on_demand: not supported (on-demand cluster discovery)";
    if (tp->metadata_match)
        return "metadata_match: not supported (legate has no subset load balancer)";
    if (tp->downstream_idle_timeout)
        return "downstream_idle_timeout: not supported (use idle_timeout)";
    if (tp->upstream_idle_timeout)
        return "upstream_idle_timeout: not supported (use idle_timeout)";
    if (tp->n_access_log)
        return "access_log: not supported for tcp_proxy (legate's file access log formats HTTP streams)";
    if (tp->access_log_flush_interval)
        return "access_log_flush_interval: not supported (no tcp_proxy access log)";
    if (tp->flush_access_log_on_connected)
        return "flush_access_log_on_connected: not supported (no tcp_proxy access log)";
    if (tp->access_log_options)
        return "access_log_options: not supported (no tcp_proxy access log)";
    if (tp->backoff_options)
        return "backoff_options: not supported (connect attempts are retried at once)";
    if (tp->n_hash_policy)
        return "hash_policy: not supported (legate has no hash-based load balancer)";
    if (tp->tunneling_config)
        return "tunneling_config: not supported (TCP over HTTP CONNECT)";
    if (tp->max_downstream_connection_duration_jitter_percentage)
        return "max_downstream_connection_duration_jitter_percentage: not supported";
    if (tp->n_proxy_protocol_tlvs)
        return "proxy_protocol_tlvs: not supported (no PROXY protocol upstream transport socket)";
    return NULL;
}

struct dp_tcp_proxy_cfg *dp_tcp_proxy_config_new(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    const TcpProxy *tp = (const TcpProxy *)msg;
    if (unknown_field(msg, "", err, errlen) < 0)
        return NULL;
    if (tp->stat_prefix == NULL || tp->stat_prefix[0] == '\0')
        return fail(err, errlen, "stat_prefix: required");
    const char *why = refused(tp);
    if (why)
        return fail(err, errlen, "%s", why);
    const Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster *wc = NULL;
    switch (tp->cluster_specifier_case) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_CLUSTER:
        if (tp->cluster[0] == '\0')
            return fail(err, errlen, "cluster: must not be empty");
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS:
        wc = tp->weighted_clusters;
        if (unknown_field(&wc->base, "weighted_clusters.", err, errlen) < 0)
            return NULL;
        if (wc->n_clusters == 0)
            return fail(err, errlen, "weighted_clusters.clusters: at least one cluster is required");
        for (size_t i = 0; i < wc->n_clusters; i++) {
            const ClusterWeight *cw = wc->clusters[i];
            char path[64];
            snprintf(path, sizeof(path), "weighted_clusters.clusters[%zu].", i);
            if (unknown_field(&cw->base, path, err, errlen) < 0)
                return NULL;
            if (cw->name[0] == '\0')
                return fail(err, errlen, "%sname: required", path);
            if (cw->weight < 1)
                return fail(err, errlen, "%sweight: must be at least 1", path);
            if (cw->metadata_match)
                return fail(err, errlen, "%smetadata_match: not supported (legate has no subset load balancer)",
                            path);
        }
        break;
    default:
        return fail(err, errlen, "cluster: required (or weighted_clusters)");
    }
    double idle = 3600; /* Envoy's default */
    if (tp->idle_timeout) {
        idle = seconds(tp->idle_timeout);
        if (idle < 0)
            return fail(err, errlen, "idle_timeout: must not be negative");
    }
    double max_duration = 0;
    if (tp->max_downstream_connection_duration) {
        max_duration = seconds(tp->max_downstream_connection_duration);
        if (max_duration < 0.001)
            return fail(err, errlen, "max_downstream_connection_duration: must be at least 1ms");
    }
    uint32_t attempts = 1;
    if (tp->max_connect_attempts) {
        attempts = tp->max_connect_attempts->value;
        if (attempts < 1)
            return fail(err, errlen, "max_connect_attempts: must be at least 1");
    }

    struct dp_tcp_proxy_cfg *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return fail(err, errlen, "out of memory");
    size_t n = wc ? wc->n_clusters : 1;
    c->clusters = calloc(n, sizeof(*c->clusters));
    c->stat_prefix = strdup(tp->stat_prefix);
    if (c->clusters == NULL || c->stat_prefix == NULL) {
        dp_tcp_proxy_config_free(c);
        return fail(err, errlen, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        c->clusters[i].name = strdup(wc ? wc->clusters[i]->name : tp->cluster);
        c->clusters[i].weight = wc ? wc->clusters[i]->weight : 1;
        c->n_clusters = i + 1;
        c->total_weight += c->clusters[i].weight;
        if (c->clusters[i].name == NULL) {
            dp_tcp_proxy_config_free(c);
            return fail(err, errlen, "out of memory");
        }
    }
    c->idle_timeout = idle;
    c->max_duration = max_duration;
    c->max_connect_attempts = attempts;
    const char *p = tp->stat_prefix;
    c->st.cx_total = dp_stat_register(DP_STAT_COUNTER, "tcp", p, "downstream_cx_total");
    c->st.cx_no_route = dp_stat_register(DP_STAT_COUNTER, "tcp", p, "downstream_cx_no_route");
    c->st.rx_bytes = dp_stat_register(DP_STAT_COUNTER, "tcp", p, "downstream_cx_rx_bytes_total");
    c->st.tx_bytes = dp_stat_register(DP_STAT_COUNTER, "tcp", p, "downstream_cx_tx_bytes_total");
    c->st.paused_reading =
        dp_stat_register(DP_STAT_COUNTER, "tcp", p, "downstream_flow_control_paused_reading_total");
    c->st.resumed_reading =
        dp_stat_register(DP_STAT_COUNTER, "tcp", p, "downstream_flow_control_resumed_reading_total");
    c->st.idle_timeout = dp_stat_register(DP_STAT_COUNTER, "tcp", p, "idle_timeout");
    c->st.flush_total = dp_stat_register(DP_STAT_COUNTER, "tcp", p, "upstream_flush_total");
    c->st.attempts_exceeded = dp_stat_register(DP_STAT_COUNTER, "tcp", p, "upstream_connect_attempts_exceeded");
    c->st.max_duration_reached =
        dp_stat_register(DP_STAT_COUNTER, "tcp", p, "max_downstream_connection_duration");
    return c;
}

void dp_tcp_proxy_config_free(struct dp_tcp_proxy_cfg *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n_clusters; i++)
        free(c->clusters[i].name);
    free(c->clusters);
    free(c->stat_prefix);
    free(c);
}

const struct dp_tcp_proxy_cluster *dp_tcp_proxy_pick(const struct dp_tcp_proxy_cfg *cfg, uint32_t r)
{
    uint64_t x = r % cfg->total_weight;
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        if (x < cfg->clusters[i].weight)
            return &cfg->clusters[i];
        x -= cfg->clusters[i].weight;
    }
    return &cfg->clusters[cfg->n_clusters - 1];
}
