/*
 * Cluster and ClusterLoadAssignment -> struct dp_cluster and struct
 * dp_endpoint_set: discovery type, load balancing, circuit breakers,
 * upstream protocol options, endpoints and upstream TLS.
 */
#include "config_build_priv.h"

#include "envoy/config/core/v3/protocol.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"
#include "xds/registry.h"

#define HTTP_OPTIONS_EXT "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
#define DEFAULT_CIRCUIT 1024

void dp_endpoint_set_ref(struct dp_endpoint_set *s)
{
    __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
}

void dp_endpoint_set_unref(struct dp_endpoint_set *s)
{
    if (s == NULL || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i].addr_str);
        free(s->v[i].hostname);
    }
    free(s->v);
    free(s);
}

static int healthy(int status)
{
    return status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNKNOWN ||
           status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY ||
           status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__DEGRADED;
}

/* Walks a CLA: calls fn for each endpoint with its socket address. */
static int each_endpoint(const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *cla,
                         int (*fn)(void *ud, const Envoy__Config__Core__V3__SocketAddress *sa,
                                   uint32_t weight, int health, const char *path, struct xds_cfgerr *e),
                         void *ud, const char *prefix, struct xds_cfgerr *e)
{
    char path[200];
    for (size_t i = 0; i < cla->n_endpoints; i++) {
        const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *lle = cla->endpoints[i];
        for (size_t j = 0; j < lle->n_lb_endpoints; j++) {
            const Envoy__Config__Endpoint__V3__LbEndpoint *le = lle->lb_endpoints[j];
            snprintf(path, sizeof(path), "%sendpoints[%zu].lb_endpoints[%zu]", prefix, i, j);
            if (le->host_identifier_case !=
                ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT)
                return xds_cfg_fail(e, "%s.endpoint: required field is missing", path);
            char apath[240];
            snprintf(apath, sizeof(apath), "%s.endpoint.address", path);
            const Envoy__Config__Core__V3__SocketAddress *sa = NULL;
            if (dp_build_socket_address(le->endpoint->address, apath, &sa, e) < 0)
                return -1;
            if (fn(ud, sa, u32v(le->load_balancing_weight, 1), le->health_status, apath, e) < 0)
                return -1;
        }
    }
    return 0;
}

struct ep_acc {
    struct dp_endpoint_set *set;
    size_t cap;
    struct dp_cluster *dns; /* collecting DNS targets instead */
    size_t dns_cap;
};

static int add_ip_endpoint(void *ud, const Envoy__Config__Core__V3__SocketAddress *sa,
                           uint32_t weight, int health, const char *path, struct xds_cfgerr *e)
{
    struct ep_acc *acc = ud;
    struct dp_endpoint_set *s = acc->set;
    if (s->n == acc->cap) {
        size_t nc = acc->cap ? acc->cap * 2 : 8;
        struct dp_endpoint *nv = realloc(s->v, nc * sizeof(*nv));
        if (nv == NULL)
            return xds_cfg_fail(e, "out of memory");
        s->v = nv;
        acc->cap = nc;
    }
    struct dp_endpoint *ep = &s->v[s->n];
    memset(ep, 0, sizeof(*ep));
    if (dp_sockaddr_parse(sa->address, sa->port_value, &ep->addr, &ep->addrlen) < 0)
        return xds_cfg_fail(e, "%s.socket_address.address: \"%s\" is not an IP address", path, sa->address);
    ep->addr_str = dp_build_format_addr(sa->address, sa->port_value);
    ep->weight = weight ? weight : 1;
    ep->healthy = healthy(health);
    s->n++;
    return ep->addr_str ? 0 : xds_cfg_fail(e, "out of memory");
}

struct dp_endpoint_set *dp_endpoints_build(
    const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *cla, char *err, size_t errlen)
{
    struct xds_cfgerr e = {err, errlen};
    struct ep_acc acc = {0};
    acc.set = calloc(1, sizeof(*acc.set));
    if (acc.set == NULL) {
        xds_cfg_fail(&e, "out of memory");
        return NULL;
    }
    acc.set->refs = 1;
    if (cla && each_endpoint(cla, add_ip_endpoint, &acc, "", &e) < 0) {
        dp_endpoint_set_unref(acc.set);
        return NULL;
    }
    return acc.set;
}

static int add_dns_target(void *ud, const Envoy__Config__Core__V3__SocketAddress *sa,
                          uint32_t weight, int health, const char *path, struct xds_cfgerr *e)
{
    struct ep_acc *acc = ud;
    struct dp_cluster *c = acc->dns;
    if (c->n_dns == acc->dns_cap) {
        size_t nc = acc->dns_cap ? acc->dns_cap * 2 : 4;
        struct dp_dns_target *nv = realloc(c->dns, nc * sizeof(*nv));
        if (nv == NULL)
            return xds_cfg_fail(e, "out of memory");
        c->dns = nv;
        acc->dns_cap = nc;
    }
    c->dns[c->n_dns].host = xstrdup(sa->address);
    c->dns[c->n_dns].port = (uint16_t)sa->port_value;
    c->dns[c->n_dns].weight = weight ? weight : 1;
    c->n_dns++;
    return 0;
}

static void cluster_free(struct dp_cluster *c)
{
    free(c->name);
    free(c->eds_service_name);
    for (size_t i = 0; i < c->n_dns; i++)
        free(c->dns[i].host);
    free(c->dns);
    if (c->tls)
        dp_tls_client_unref(c->tls);
    if (c->endpoints)
        dp_endpoint_set_unref(c->endpoints);
    free(c);
}

void dp_cluster_ref(struct dp_cluster *c)
{
    __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

void dp_cluster_unref(struct dp_cluster *c)
{
    if (c && __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
        cluster_free(c);
}

/* An HTTP/2 cluster's Http2ProtocolOptions, as Envoy reads them upstream. */
static int cluster_h2_options(struct dp_cluster *c, const Envoy__Config__Core__V3__Http2ProtocolOptions *o,
                              const char *path, struct xds_cfgerr *e)
{
    c->http2 = 1;
    if (o == NULL)
        return 0;
    c->h2_max_concurrent_streams = u32v(o->max_concurrent_streams, c->h2_max_concurrent_streams);
    c->h2_hpack_table_size = u32v(o->hpack_table_size, 4096);
    c->h2_initial_stream_window = u32v(o->initial_stream_window_size, c->h2_initial_stream_window);
    c->h2_initial_connection_window = u32v(o->initial_connection_window_size, c->h2_initial_connection_window);
    if (c->h2_max_concurrent_streams == 0)
        return xds_cfg_fail(e, "%s.max_concurrent_streams: must be at least 1", path);
    if (c->h2_initial_stream_window < 65535 || c->h2_initial_stream_window > 0x7fffffffu ||
        c->h2_initial_connection_window < 65535 || c->h2_initial_connection_window > 0x7fffffffu)
        return xds_cfg_fail(e, "%s: window sizes must be between 65535 and 2147483647", path);
    return 0;
}

static int cluster_protocol(struct dp_cluster *c, const Envoy__Config__Cluster__V3__Cluster *pc,
                            struct xds_cfgerr *e)
{
    if (pc->http2_protocol_options &&
        cluster_h2_options(c, pc->http2_protocol_options, "http2_protocol_options", e) < 0)
        return -1;
    for (size_t i = 0; i < pc->n_typed_extension_protocol_options; i++) {
        const char *key = pc->typed_extension_protocol_options[i]->key;
        const Google__Protobuf__Any *a = pc->typed_extension_protocol_options[i]->value;
        char path[200];
        snprintf(path, sizeof(path), "typed_extension_protocol_options[\"%s\"]", key);
        if (strcmp(key, HTTP_OPTIONS_EXT) != 0)
            return xds_cfg_fail(e, "%s: unsupported extension (only %s)", path, HTTP_OPTIONS_EXT);
        Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions *o = (void *)dp_build_unpack_any(
            a, &envoy__extensions__upstreams__http__v3__http_protocol_options__descriptor, path, e);
        if (o == NULL)
            return -1;
        int rc = 0;
        switch (o->upstream_protocol_options_case) {
        case ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_EXPLICIT_HTTP_CONFIG: {
            const Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions__ExplicitHttpConfig *x =
                o->explicit_http_config;
            if (x->protocol_config_case ==
                ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP2_PROTOCOL_OPTIONS) {
                char sub[300];
                snprintf(sub, sizeof(sub), "%s.explicit_http_config.http2_protocol_options", path);
                rc = cluster_h2_options(c, x->http2_protocol_options, sub, e);
            } else if (x->protocol_config_case ==
                       ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP_PROTOCOL_OPTIONS) {
                c->http2 = 0;
                c->h1_enable_trailers =
                    x->http_protocol_options && x->http_protocol_options->enable_trailers;
            } else {
                rc = xds_cfg_fail(e, "%s.explicit_http_config: one of http_protocol_options or "
                             "http2_protocol_options is required",
                          path);
            }
            break;
        }
        case ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS__NOT_SET:
            break;
        default:
            rc = xds_cfg_fail(e, "%s: only explicit_http_config is supported", path);
            break;
        }
        if (rc == 0 && o->common_http_protocol_options && o->common_http_protocol_options->max_stream_duration)
            rc = xds_cfg_fail(e, "%s.common_http_protocol_options.max_stream_duration: not supported on clusters "
                         "(set it on the connection manager or the route)", path);
        if (rc == 0 && o->common_http_protocol_options) {
            c->idle_timeout = dur(o->common_http_protocol_options->idle_timeout, c->idle_timeout);
            if (o->common_http_protocol_options->max_requests_per_connection)
                c->max_requests_per_connection =
                    o->common_http_protocol_options->max_requests_per_connection->value;
        }
        protobuf_c_message_free_unpacked(&o->base, NULL);
        if (rc < 0)
            return -1;
    }
    return 0;
}

struct dp_cluster *dp_cluster_build(const Envoy__Config__Cluster__V3__Cluster *pc,
                                    const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *cla,
                                    const struct dp_build_ctx *ctx, char *err, size_t errlen)
{
    struct xds_cfgerr e = {err, errlen};
    struct dp_cluster *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        xds_cfg_fail(&e, "out of memory");
        return NULL;
    }
    c->refs = 1;
    c->name = xstrdup(pc->name);
    c->st.cx_total = dp_stat_register(DP_STAT_COUNTER, "cluster", c->name, "upstream_cx_total");
    c->st.cx_active = dp_stat_register(DP_STAT_GAUGE, "cluster", c->name, "upstream_cx_active");
    c->st.cx_connect_fail = dp_stat_register(DP_STAT_COUNTER, "cluster", c->name, "upstream_cx_connect_fail");
    c->st.cx_connect_timeout = dp_stat_register(DP_STAT_COUNTER, "cluster", c->name, "upstream_cx_connect_timeout");
    c->st.rq_total = dp_stat_register(DP_STAT_COUNTER, "cluster", c->name, "upstream_rq_total");
    for (int k = 0; k < 5; k++) {
        char n[32];
        snprintf(n, sizeof(n), "upstream_rq_%dxx", k + 1);
        c->st.rq_xx[k] = dp_stat_register(DP_STAT_COUNTER, "cluster", c->name, n);
    }
    c->st.rq_time = dp_stat_register(DP_STAT_HISTOGRAM, "cluster", c->name, "upstream_rq_time");
    c->st.rq_timeout = dp_stat_register(DP_STAT_COUNTER, "cluster", c->name, "upstream_rq_timeout");
    c->st.rq_pending_overflow = dp_stat_register(DP_STAT_COUNTER, "cluster", c->name, "upstream_rq_pending_overflow");
    c->connect_timeout = dur(pc->connect_timeout, 5);
    if (c->connect_timeout <= 0) {
        xds_cfg_fail(&e, "connect_timeout: must be positive");
        goto bad;
    }
    c->idle_timeout = 3600;
    c->h2_max_concurrent_streams = 0x7fffffffu; /* Envoy's upstream default */
    c->h2_hpack_table_size = 4096;
    c->h2_initial_stream_window = 1u << 20;
    c->h2_initial_connection_window = 16u << 20;
    c->per_connection_buffer_limit = u32v(pc->per_connection_buffer_limit_bytes, DEFAULT_BUFFER_LIMIT);
    if (c->per_connection_buffer_limit < 1024) {
        xds_cfg_fail(&e, "per_connection_buffer_limit_bytes: must be at least 1024");
        goto bad;
    }
    c->max_requests_per_connection = u32v(pc->max_requests_per_connection, 0);
    c->dns_refresh_rate = dur(pc->dns_refresh_rate, 5);
    switch (pc->dns_lookup_family) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__AUTO:
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__ALL:
        c->dns_family = DP_DNS_ALL;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V4_ONLY:
        c->dns_family = DP_DNS_V4_ONLY;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V6_ONLY:
        c->dns_family = DP_DNS_V6_ONLY;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V4_PREFERRED:
        c->dns_family = DP_DNS_V4_PREFERRED;
        break;
    default:
        xds_cfg_fail(&e, "dns_lookup_family: unknown value %d", (int)pc->dns_lookup_family);
        goto bad;
    }
    c->max_connections = c->max_pending_requests = c->max_requests = DEFAULT_CIRCUIT;
    switch (pc->type) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC:
        c->type = DP_CLUSTER_STATIC;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STRICT_DNS:
        c->type = DP_CLUSTER_STRICT_DNS;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__LOGICAL_DNS:
        /* STRICT_DNS's resolution, keeping the first address only: new
         * connections go to what the name resolves to first now (a name
         * behind a load balancer or a CDN), as Envoy's LOGICAL_DNS does. */
        c->type = DP_CLUSTER_STRICT_DNS;
        c->logical_dns = 1;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS:
        c->type = DP_CLUSTER_EDS;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__ORIGINAL_DST:
        c->type = DP_CLUSTER_ORIGINAL_DST;
        if (pc->lb_policy != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED) {
            xds_cfg_fail(&e, "lb_policy: an ORIGINAL_DST cluster needs CLUSTER_PROVIDED");
            goto bad;
        }
        if (pc->load_assignment) {
            xds_cfg_fail(&e, "load_assignment: an ORIGINAL_DST cluster takes its endpoint from each connection");
            goto bad;
        }
        break;
    default:
        xds_cfg_fail(&e, "type: only STATIC, STRICT_DNS, LOGICAL_DNS, EDS and ORIGINAL_DST are supported");
        goto bad;
    }
    switch (pc->lb_policy) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN:
        c->lb = DP_LB_ROUND_ROBIN;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST:
        c->lb = DP_LB_LEAST_REQUEST;
        c->least_request_choices =
            pc->least_request_lb_config ? u32v(pc->least_request_lb_config->choice_count, 2) : 2;
        if (c->least_request_choices < 2) {
            xds_cfg_fail(&e, "least_request_lb_config.choice_count: must be at least 2");
            goto bad;
        }
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM:
        c->lb = DP_LB_RANDOM;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED:
        if (c->type == DP_CLUSTER_ORIGINAL_DST)
            break;
        xds_cfg_fail(&e, "lb_policy: CLUSTER_PROVIDED is for ORIGINAL_DST clusters");
        goto bad;
    default:
        xds_cfg_fail(&e, "lb_policy: only ROUND_ROBIN, LEAST_REQUEST and RANDOM are supported");
        goto bad;
    }
    if (pc->circuit_breakers) {
        for (size_t i = 0; i < pc->circuit_breakers->n_thresholds; i++) {
            const Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds *t =
                pc->circuit_breakers->thresholds[i];
            if (t->priority != ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__DEFAULT)
                continue; /* only the default priority is used */
            c->max_connections = u32v(t->max_connections, DEFAULT_CIRCUIT);
            c->max_pending_requests = u32v(t->max_pending_requests, DEFAULT_CIRCUIT);
            c->max_requests = u32v(t->max_requests, DEFAULT_CIRCUIT);
        }
    }
    if (cluster_protocol(c, pc, &e) < 0)
        goto bad;

    if (c->type == DP_CLUSTER_EDS) {
        const Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig *ec = pc->eds_cluster_config;
        if (!ctx->dynamic) {
            xds_cfg_fail(&e, "type: EDS needs dynamic_resources (ADS)");
            goto bad;
        }
        if (ec && ec->eds_config && ec->eds_config->config_source_specifier_case !=
                                        ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS) {
            xds_cfg_fail(&e, "eds_cluster_config.eds_config: only \"ads: {}\" is supported");
            goto bad;
        }
        c->eds_service_name = xstrdup(ec && ec->service_name[0] ? ec->service_name : pc->name);
        if (cla) {
            char eerr[256];
            c->endpoints = dp_endpoints_build(cla, eerr, sizeof(eerr));
            if (c->endpoints == NULL) {
                xds_cfg_fail(&e, "endpoints of \"%s\": %s", c->eds_service_name, eerr);
                goto bad;
            }
        }
    } else if (c->type == DP_CLUSTER_STATIC) {
        if (pc->load_assignment == NULL) {
            xds_cfg_fail(&e, "load_assignment: required for a STATIC cluster");
            goto bad;
        }
        struct ep_acc acc = {0};
        acc.set = calloc(1, sizeof(*acc.set));
        if (acc.set == NULL) {
            xds_cfg_fail(&e, "out of memory");
            goto bad;
        }
        acc.set->refs = 1;
        c->endpoints = acc.set;
        if (each_endpoint(pc->load_assignment, add_ip_endpoint, &acc, "load_assignment.", &e) < 0)
            goto bad;
    } else if (c->type == DP_CLUSTER_ORIGINAL_DST) {
        /* no endpoints: each request goes where its connection was headed */
    } else {
        if (pc->load_assignment == NULL) {
            xds_cfg_fail(&e, "load_assignment: required for a %s cluster", c->logical_dns ? "LOGICAL_DNS" : "STRICT_DNS");
            goto bad;
        }
        struct ep_acc acc = {.dns = c};
        if (each_endpoint(pc->load_assignment, add_dns_target, &acc, "load_assignment.", &e) < 0)
            goto bad;
        if (c->logical_dns && c->n_dns != 1) {
            xds_cfg_fail(&e, "load_assignment: a LOGICAL_DNS cluster takes exactly one endpoint, got %zu", c->n_dns);
            goto bad;
        }
        /* Endpoints arrive with the first resolution (server.c). */
    }

    if (pc->transport_socket) {
        const Envoy__Config__Core__V3__TransportSocket *ts = pc->transport_socket;
        const Google__Protobuf__Any *tc = ts->typed_config;
        int raw = (strcmp(ts->name, RAW_SOCKET) == 0 && tc == NULL) ||
                  (tc && strcmp(xds_type_url_name(tc->type_url),
                                "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer") == 0);
        if (!raw) {
            if (strcmp(ts->name, TLS_SOCKET) != 0 && tc == NULL) {
                xds_cfg_fail(&e, "transport_socket.name: only %s and %s are supported, got \"%s\"",
                     TLS_SOCKET, RAW_SOCKET, ts->name);
                goto bad;
            }
            ProtobufCMessage *msg = dp_build_unpack_any(
                tc, &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor,
                "transport_socket.typed_config", &e);
            if (msg == NULL)
                goto bad;
            char terr[512];
            c->tls = dp_tls_client_new((void *)msg, ctx->default_upstream_tls, c->http2,
                                       &ctx->secrets, terr, sizeof(terr));
            protobuf_c_message_free_unpacked(msg, NULL);
            if (c->tls == NULL) {
                xds_cfg_fail(&e, "transport_socket.typed_config.%s", terr);
                goto bad;
            }
        }
    }
    return c;
bad:
    cluster_free(c);
    return NULL;
}

struct dp_cluster *dp_cluster_with_endpoints(const struct dp_cluster *c, struct dp_endpoint_set *eps)
{
    struct dp_cluster *n = malloc(sizeof(*n));
    if (n == NULL)
        return NULL;
    memcpy(n, c, sizeof(*n));
    n->refs = 1;
    n->name = xstrdup(c->name);
    n->eds_service_name = c->eds_service_name ? xstrdup(c->eds_service_name) : NULL;
    n->dns = NULL;
    if (c->n_dns) {
        n->dns = calloc(c->n_dns, sizeof(*n->dns));
        for (size_t i = 0; n->dns && i < c->n_dns; i++) {
            n->dns[i] = c->dns[i];
            n->dns[i].host = xstrdup(c->dns[i].host);
        }
    }
    if (n->tls)
        dp_tls_client_ref(n->tls);
    n->endpoints = eps;
    if (eps)
        dp_endpoint_set_ref(eps);
    if (n->name == NULL || (c->n_dns && n->dns == NULL)) {
        cluster_free(n);
        return NULL;
    }
    return n;
}
