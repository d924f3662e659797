#include "admin_status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/stats.h"
#include "envoy/admin/v3/clusters.pb-c.h"
#include "envoy/admin/v3/listeners.pb-c.h"
#include "envoy/admin/v3/metrics.pb-c.h"
#include "xds/json.h"

/* "127.0.0.1:9443" or "[::1]:9443" as Envoy's Address (host, port written
 * into hostbuf). */
static void socket_address(const char *addr_str, char *hostbuf, size_t hlen,
                           Envoy__Config__Core__V3__SocketAddress *sa, Envoy__Config__Core__V3__Address *a)
{
    const char *colon = strrchr(addr_str, ':');
    size_t n = colon ? (size_t)(colon - addr_str) : strlen(addr_str);
    if (n >= 2 && addr_str[0] == '[' && addr_str[n - 1] == ']') {
        addr_str++;
        n -= 2;
    }
    snprintf(hostbuf, hlen, "%.*s", (int)n, addr_str);
    sa->address = hostbuf;
    sa->port_specifier_case = ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE;
    sa->port_value = colon ? (uint32_t)strtoul(colon + 1, NULL, 10) : 0;
    a->address_case = ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS;
    a->socket_address = sa;
}

/* The requests in flight to endpoint e of cluster c (the one stat legate
 * keeps per endpoint). */
static long long endpoint_rq_active(const struct dp_cluster *c, const struct dp_endpoint *e)
{
    char st[300];
    snprintf(st, sizeof(st), "endpoint.%s.rq_active", e->addr_str);
    return (long long)dp_stat_value(dp_stat_register(DP_STAT_GAUGE, "cluster", c->name, st));
}

struct walk {
    struct xds_sb *b;
    int json;
    size_t n;
};

static void cluster_text(struct xds_sb *b, const struct dp_cluster *c, int dynamic)
{
    const char *n = c->name;
    xds_sb_addf(b, "%s::observability_name::%s\n", n, n);
    xds_sb_addf(b, "%s::default_priority::max_connections::%u\n", n, c->max_connections);
    xds_sb_addf(b, "%s::default_priority::max_pending_requests::%u\n", n, c->max_pending_requests);
    xds_sb_addf(b, "%s::default_priority::max_requests::%u\n", n, c->max_requests);
    xds_sb_addf(b, "%s::added_via_api::%s\n", n, dynamic ? "true" : "false");
    if (c->eds_service_name && c->eds_service_name[0])
        xds_sb_addf(b, "%s::eds_service_name::%s\n", n, c->eds_service_name);
    for (size_t i = 0; c->endpoints && i < c->endpoints->n; i++) {
        const struct dp_endpoint *e = &c->endpoints->v[i];
        const char *a = e->addr_str;
        xds_sb_addf(b, "%s::%s::rq_active::%lld\n", n, a, endpoint_rq_active(c, e));
        xds_sb_addf(b, "%s::%s::hostname::%s\n", n, a, e->hostname ? e->hostname : "");
        xds_sb_addf(b, "%s::%s::health_flags::%s\n", n, a, e->healthy ? "healthy" : "/failed_eds_health");
        xds_sb_addf(b, "%s::%s::weight::%u\n", n, a, e->weight);
        xds_sb_addf(b, "%s::%s::region::\n%s::%s::zone::\n%s::%s::sub_zone::\n", n, a, n, a, n, a);
        xds_sb_addf(b, "%s::%s::canary::false\n%s::%s::priority::0\n", n, a, n, a);
        xds_sb_addf(b, "%s::%s::success_rate::-1\n%s::%s::local_origin_success_rate::-1\n", n, a, n, a);
    }
}

/* One ClusterStatus, written as JSON (every message on the stack). */
static void cluster_json(struct xds_sb *b, const struct dp_cluster *c, int dynamic)
{
    Envoy__Admin__V3__ClusterStatus cs = ENVOY__ADMIN__V3__CLUSTER_STATUS__INIT;
    cs.name = c->name;
    cs.added_via_api = dynamic;
    cs.observability_name = c->name;
    if (c->eds_service_name && c->eds_service_name[0])
        cs.eds_service_name = c->eds_service_name;
    Google__Protobuf__UInt32Value mc = GOOGLE__PROTOBUF__UINT32_VALUE__INIT,
                                  mp = GOOGLE__PROTOBUF__UINT32_VALUE__INIT,
                                  mr = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
    mc.value = c->max_connections;
    mp.value = c->max_pending_requests;
    mr.value = c->max_requests;
    Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds th =
        ENVOY__CONFIG__CLUSTER__V3__CIRCUIT_BREAKERS__THRESHOLDS__INIT;
    th.max_connections = &mc;
    th.max_pending_requests = &mp;
    th.max_requests = &mr;
    Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds *ths[] = {&th};
    Envoy__Config__Cluster__V3__CircuitBreakers cb = ENVOY__CONFIG__CLUSTER__V3__CIRCUIT_BREAKERS__INIT;
    cb.n_thresholds = 1;
    cb.thresholds = ths;
    cs.circuit_breakers = &cb;
    size_t n = c->endpoints ? c->endpoints->n : 0;
    struct host {
        Envoy__Admin__V3__HostStatus hs;
        Envoy__Config__Core__V3__Address a;
        Envoy__Config__Core__V3__SocketAddress sa;
        Envoy__Admin__V3__SimpleMetric rq_active;
        Envoy__Admin__V3__SimpleMetric *stats[1];
        Envoy__Admin__V3__HostHealthStatus health;
        char host[256];
    } *h = calloc(n + 1, sizeof(*h));
    Envoy__Admin__V3__HostStatus **hsv = calloc(n + 1, sizeof(*hsv));
    if (h == NULL || hsv == NULL)
        abort();
    for (size_t i = 0; i < n; i++) {
        const struct dp_endpoint *e = &c->endpoints->v[i];
        envoy__admin__v3__host_status__init(&h[i].hs);
        envoy__config__core__v3__address__init(&h[i].a);
        envoy__config__core__v3__socket_address__init(&h[i].sa);
        envoy__admin__v3__simple_metric__init(&h[i].rq_active);
        envoy__admin__v3__host_health_status__init(&h[i].health);
        socket_address(e->addr_str, h[i].host, sizeof(h[i].host), &h[i].sa, &h[i].a);
        h[i].rq_active.type = ENVOY__ADMIN__V3__SIMPLE_METRIC__TYPE__GAUGE;
        h[i].rq_active.name = "rq_active";
        h[i].rq_active.value = (uint64_t)endpoint_rq_active(c, e);
        h[i].stats[0] = &h[i].rq_active;
        h[i].health.eds_health_status =
            e->healthy ? ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY : ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNHEALTHY;
        h[i].hs.address = &h[i].a;
        h[i].hs.n_stats = 1;
        h[i].hs.stats = h[i].stats;
        h[i].hs.health_status = &h[i].health;
        h[i].hs.weight = e->weight;
        if (e->hostname)
            h[i].hs.hostname = e->hostname;
        hsv[i] = &h[i].hs;
    }
    cs.n_host_statuses = n;
    cs.host_statuses = hsv;
    xds_json_write(b, &cs.base, XDS_JSON_EXACT);
    free(hsv);
    free(h);
}

static void each_cluster(void *arg, const struct dp_cluster *c, int dynamic)
{
    struct walk *w = arg;
    if (!w->json) {
        cluster_text(w->b, c, dynamic);
        return;
    }
    if (w->n++)
        xds_sb_add(w->b, ",", 1);
    cluster_json(w->b, c, dynamic);
}

char *dp_admin_clusters_envoy(const struct dp_admin_source *src, int json)
{
    struct xds_sb b = {0};
    struct walk w = {&b, json, 0};
    /* Clusters {cluster_statuses: [...]}, assembled here so that each
     * ClusterStatus is written while the configuration is held. */
    if (json)
        xds_sb_addf(&b, "%s", "{\"cluster_statuses\":[");
    src->each_cluster(src->ud, each_cluster, &w);
    if (json)
        xds_sb_add(&b, "]}\n", 3);
    else if (b.p == NULL)
        xds_sb_add(&b, "", 0);
    return b.p;
}

static void each_listener(void *arg, const struct dp_listener *l, int dynamic)
{
    struct walk *w = arg;
    (void)dynamic;
    if (!w->json) {
        xds_sb_addf(w->b, "%s::%s\n", l->name, l->addr_str);
        return;
    }
    Envoy__Admin__V3__ListenerStatus ls = ENVOY__ADMIN__V3__LISTENER_STATUS__INIT;
    Envoy__Config__Core__V3__Address a = ENVOY__CONFIG__CORE__V3__ADDRESS__INIT;
    Envoy__Config__Core__V3__SocketAddress sa = ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__INIT;
    char host[256];
    socket_address(l->addr_str, host, sizeof(host), &sa, &a);
    ls.name = l->name;
    ls.local_address = &a;
    if (w->n++)
        xds_sb_add(w->b, ",", 1);
    xds_json_write(w->b, &ls.base, XDS_JSON_EXACT);
}

char *dp_admin_listeners_envoy(const struct dp_admin_source *src, int json)
{
    struct xds_sb b = {0};
    struct walk w = {&b, json, 0};
    if (json)
        xds_sb_addf(&b, "%s", "{\"listener_statuses\":[");
    src->each_listener(src->ud, each_listener, &w);
    if (json)
        xds_sb_add(&b, "]}\n", 3);
    else if (b.p == NULL)
        xds_sb_add(&b, "", 0);
    return b.p;
}
