#include "config_build.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/accesslog.h"
#include "dataplane/net_chain.h"
#include "dataplane/route.h"
#include "envoy/config/core/v3/protocol.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"
#include "filters/registry.h"
#include "xds/registry.h"

#define HCM_NAME "envoy.filters.network.http_connection_manager"
#define TLS_SOCKET "envoy.transport_sockets.tls"
#define RAW_SOCKET "envoy.transport_sockets.raw_buffer"
#define HTTP_OPTIONS_EXT "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

#define DEFAULT_BUFFER_LIMIT (1024 * 1024)
#define DEFAULT_CIRCUIT 1024

struct berr {
    char *err;
    size_t errlen;
};

static int fail(struct berr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct berr *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err, e->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static char *xstrdup(const char *s)
{
    return strdup(s ? s : "");
}

static double dur(const Google__Protobuf__Duration *d, double dflt)
{
    return d ? (double)d->seconds + (double)d->nanos / 1e9 : dflt;
}

static uint32_t u32v(const Google__Protobuf__UInt32Value *v, uint32_t dflt)
{
    return v ? v->value : dflt;
}

/* Unpacks an Any that must hold a want. */
static ProtobufCMessage *unpack_any(const Google__Protobuf__Any *a,
                                    const ProtobufCMessageDescriptor *want, const char *path,
                                    struct berr *e)
{
    if (a == NULL) {
        fail(e, "%s: required field is missing", path);
        return NULL;
    }
    const char *tn = xds_type_url_name(a->type_url);
    if (strcmp(tn, want->name) != 0) {
        fail(e, "%s: expected type %s, got %s", path, want->name, a->type_url);
        return NULL;
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(want, NULL, a->value.len, a->value.data);
    if (m == NULL)
        fail(e, "%s: cannot decode %s", path, want->name);
    return m;
}

int dp_sockaddr_parse(const char *ip, unsigned port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (port > 65535)
        return -1;
    if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *len = sizeof(*s4);
        return 0;
    }
    if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*s6);
        return 0;
    }
    return -1;
}

static char *format_addr(const char *ip, unsigned port)
{
    char buf[128];
    if (strchr(ip, ':'))
        snprintf(buf, sizeof(buf), "[%s]:%u", ip, port);
    else
        snprintf(buf, sizeof(buf), "%s:%u", ip, port);
    return strdup(buf);
}

static int socket_address(const Envoy__Config__Core__V3__Address *a, const char *path,
                          const Envoy__Config__Core__V3__SocketAddress **out, struct berr *e)
{
    if (a == NULL)
        return fail(e, "%s: required field is missing", path);
    if (a->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS)
        return fail(e, "%s: only socket_address is supported", path);
    const Envoy__Config__Core__V3__SocketAddress *sa = a->socket_address;
    if (sa->address[0] == '\0')
        return fail(e, "%s.socket_address.address: required field is missing", path);
    if (sa->port_specifier_case != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE)
        return fail(e, "%s.socket_address.port_value: required field is missing", path);
    if (sa->port_value > 65535)
        return fail(e, "%s.socket_address.port_value: %u is not a port number", path, sa->port_value);
    if (sa->protocol != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__TCP)
        return fail(e, "%s.socket_address.protocol: only TCP is supported", path);
    if (sa->resolver_name[0])
        return fail(e, "%s.socket_address.resolver_name: custom resolvers are not supported", path);
    *out = sa;
    return 0;
}

/* ---- HTTP connection manager ------------------------------------------------- */

static void hcm_free(struct dp_hcm_cfg *h)
{
    if (h == NULL)
        return;
    free(h->stat_prefix);
    for (size_t i = 0; i < h->n_access_logs; i++)
        dp_access_log_free(h->access_logs[i]);
    free(h->access_logs);
    free(h->rds_name);
    free(h->server_name);
    free(h->via);
    for (size_t i = 0; i < h->n_upgrades; i++)
        free(h->upgrades[i].type);
    free(h->upgrades);
    if (h->routes)
        dp_route_table_unref(h->routes);
    for (size_t i = 0; i < h->n_filters; i++) {
        if (h->filters[i].cfg && h->filters[i].ops->config_free)
            h->filters[i].ops->config_free(h->filters[i].cfg);
        free(h->filters[i].name);
    }
    free(h->filters);
    free(h);
}

static int build_http_filters(
    struct dp_hcm_cfg *h,
    const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager *pm,
    const char *path, struct berr *e)
{
    if (pm->n_http_filters == 0)
        return fail(e, "%s.http_filters: at least the router (envoy.filters.http.router) is required",
                    path);
    h->filters = calloc(pm->n_http_filters, sizeof(*h->filters));
    if (h->filters == NULL)
        return fail(e, "out of memory");
    for (size_t i = 0; i < pm->n_http_filters; i++) {
        const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter *pf =
            pm->http_filters[i];
        const struct dp_filter_ops *ops = dp_filter_lookup(pf->name);
        const Google__Protobuf__Any *tc =
            pf->config_type_case ==
                    ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG
                ? pf->typed_config
                : NULL;
        if (pf->config_type_case ==
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_CONFIG_DISCOVERY)
            return fail(e, "%s.http_filters[%zu].config_discovery: not supported", path, i);
        if (ops == NULL && tc)
            ops = dp_filter_lookup_by_type(xds_type_url_name(tc->type_url));
        if (ops == NULL) {
            if (pf->is_optional)
                continue;
            return fail(e, "%s.http_filters[%zu].name: unknown HTTP filter \"%s\"", path, i, pf->name);
        }
        if (pf->disabled)
            continue;
        ProtobufCMessage *msg = NULL;
        if (tc) {
            char sub[300];
            snprintf(sub, sizeof(sub), "%s.http_filters[%zu].typed_config", path, i);
            if (ops->config_type == NULL)
                return fail(e, "%s: the filter %s takes no configuration", sub, ops->name);
            msg = unpack_any(tc, ops->config_type, sub, e);
            if (msg == NULL)
                return -1;
        }
        char ferr[256];
        void *cfg = ops->config_new(msg, ferr, sizeof(ferr));
        if (msg)
            protobuf_c_message_free_unpacked(msg, NULL);
        if (cfg == NULL)
            return fail(e, "%s.http_filters[%zu].typed_config: %s", path, i, ferr);
        struct dp_http_filter *f = &h->filters[h->n_filters++];
        f->ops = ops;
        f->cfg = cfg;
        f->name = xstrdup(pf->name);
    }
    if (h->n_filters == 0 || h->filters[h->n_filters - 1].ops != &dp_router_filter)
        return fail(e, "%s.http_filters: the last HTTP filter must be envoy.filters.http.router", path);
    for (size_t i = 0; i + 1 < h->n_filters; i++)
        if (h->filters[i].ops == &dp_router_filter)
            return fail(e, "%s.http_filters[%zu]: envoy.filters.http.router must be the last filter",
                        path, i);
    return 0;
}

static struct dp_hcm_cfg *build_hcm(const Google__Protobuf__Any *tc, const struct dp_build_ctx *ctx,
                                    const char *path, struct berr *e)
{
    char sub[300];
    snprintf(sub, sizeof(sub), "%s.typed_config", path);
    Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager *pm =
        (void *)unpack_any(
            tc,
            &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
            sub, e);
    if (pm == NULL)
        return NULL;
    struct dp_hcm_cfg *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        fail(e, "out of memory");
        goto bad;
    }
    if (pm->stat_prefix[0] == '\0') {
        fail(e, "%s.stat_prefix: required field is missing", sub);
        goto bad;
    }
    h->stat_prefix = xstrdup(pm->stat_prefix);
    h->st.rq_total = dp_stat_register(DP_STAT_COUNTER, "http", h->stat_prefix, "downstream_rq_total");
    for (int k = 0; k < 5; k++) {
        char n[32];
        snprintf(n, sizeof(n), "downstream_rq_%dxx", k + 1);
        h->st.rq_xx[k] = dp_stat_register(DP_STAT_COUNTER, "http", h->stat_prefix, n);
    }
    h->st.rq_time = dp_stat_register(DP_STAT_HISTOGRAM, "http", h->stat_prefix, "downstream_rq_time");
    switch (pm->codec_type) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__AUTO:
        h->codec = DP_CODEC_AUTO;
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP1:
        h->codec = DP_CODEC_HTTP1;
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP2:
        h->codec = DP_CODEC_HTTP2;
        break;
    default:
        fail(e, "%s.codec_type: only AUTO, HTTP1 and HTTP2 are supported", sub);
        goto bad;
    }
    h->xfcc = (enum dp_xfcc_mode)pm->forward_client_cert_details;
    if ((int)pm->forward_client_cert_details > (int)DP_XFCC_ALWAYS_FORWARD_ONLY) {
        fail(e, "%s.forward_client_cert_details: unknown value", sub);
        goto bad;
    }
    if (pm->set_current_client_cert_details) {
        const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__SetCurrentClientCertDetails
            *sc = pm->set_current_client_cert_details;
        if (sc->subject && sc->subject->value)
            h->xfcc_fields |= DP_XFCC_F_SUBJECT;
        if (sc->uri)
            h->xfcc_fields |= DP_XFCC_F_URI;
        if (sc->dns)
            h->xfcc_fields |= DP_XFCC_F_DNS;
        if (sc->cert)
            h->xfcc_fields |= DP_XFCC_F_CERT;
        if (sc->chain)
            h->xfcc_fields |= DP_XFCC_F_CHAIN;
    }
    h->use_remote_address = pm->use_remote_address && pm->use_remote_address->value;
    h->skip_xff_append = pm->skip_xff_append;
    h->normalize_path = pm->normalize_path && pm->normalize_path->value;
    h->merge_slashes = pm->merge_slashes;
    switch (pm->server_header_transformation) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__SERVER_HEADER_TRANSFORMATION__OVERWRITE:
        h->server_header = DP_SERVER_OVERWRITE;
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__SERVER_HEADER_TRANSFORMATION__APPEND_IF_ABSENT:
        h->server_header = DP_SERVER_APPEND_IF_ABSENT;
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__SERVER_HEADER_TRANSFORMATION__PASS_THROUGH:
        h->server_header = DP_SERVER_PASS_THROUGH;
        break;
    default:
        fail(e, "%s.server_header_transformation: unknown value", sub);
        goto bad;
    }
    if (pm->via[0]) {
        for (const char *c = pm->via; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f) {
                fail(e, "%s.via: control characters are not allowed in a header value", sub);
                goto bad;
            }
        h->via = xstrdup(pm->via);
    }
    h->generate_request_id = pm->generate_request_id ? pm->generate_request_id->value : 1;
    h->preserve_external_request_id = pm->preserve_external_request_id;
    h->always_set_request_id_in_response = pm->always_set_request_id_in_response;
    h->server_name = pm->server_name[0] ? xstrdup(pm->server_name) : NULL;
    h->max_request_headers_kb = u32v(pm->max_request_headers_kb, 60);
    if (h->max_request_headers_kb == 0 || h->max_request_headers_kb > 8192) {
        fail(e, "%s.max_request_headers_kb: must be between 1 and 8192", sub);
        goto bad;
    }
    h->max_headers_count = 100;
    h->idle_timeout = 3600;
    if (pm->common_http_protocol_options) {
        h->max_headers_count = u32v(pm->common_http_protocol_options->max_headers_count, 100);
        h->idle_timeout = dur(pm->common_http_protocol_options->idle_timeout, 3600);
        h->max_stream_duration = dur(pm->common_http_protocol_options->max_stream_duration, 0);
    }
    /* Unlike Envoy (off by default), a request head must arrive within 10 s:
     * slowloris protection on by default. */
    h->request_headers_timeout = dur(pm->request_headers_timeout, 10);
    h->request_timeout = dur(pm->request_timeout, 0);
    h->stream_idle_timeout = dur(pm->stream_idle_timeout, 300);
    h->drain_timeout = dur(pm->drain_timeout, 5);
    h->h2_max_concurrent_streams = 100;
    h->h2_hpack_table_size = 4096;
    h->h2_initial_stream_window = 256 * 1024;
    h->h2_initial_connection_window = 1024 * 1024;
    if (pm->http2_protocol_options) {
        const Envoy__Config__Core__V3__Http2ProtocolOptions *o = pm->http2_protocol_options;
        h->h2_max_concurrent_streams = u32v(o->max_concurrent_streams, 100);
        h->h2_hpack_table_size = u32v(o->hpack_table_size, 4096);
        h->h2_initial_stream_window = u32v(o->initial_stream_window_size, 256 * 1024);
        h->h2_initial_connection_window = u32v(o->initial_connection_window_size, 1024 * 1024);
        h->h2_allow_connect = o->allow_connect;
        if (h->h2_initial_stream_window < 65535 || h->h2_initial_connection_window < 65535) {
            fail(e, "%s.http2_protocol_options: window sizes must be at least 65535", sub);
            goto bad;
        }
    }
    if (pm->n_access_log) {
        h->access_logs = calloc(pm->n_access_log, sizeof(*h->access_logs));
        if (h->access_logs == NULL) {
            fail(e, "out of memory");
            goto bad;
        }
        for (size_t i = 0; i < pm->n_access_log; i++) {
            char aerr[512];
            h->access_logs[i] = dp_access_log_new(pm->access_log[i], aerr, sizeof(aerr));
            if (h->access_logs[i] == NULL) {
                fail(e, "%s.access_log[%zu].%s", sub, i, aerr);
                goto bad;
            }
            h->n_access_logs = i + 1;
        }
    }
    if (pm->n_upgrade_configs) {
        h->upgrades = calloc(pm->n_upgrade_configs, sizeof(*h->upgrades));
        if (h->upgrades == NULL) {
            fail(e, "out of memory");
            goto bad;
        }
        for (size_t i = 0; i < pm->n_upgrade_configs; i++) {
            const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__UpgradeConfig
                *uc = pm->upgrade_configs[i];
            h->n_upgrades = i + 1;
            h->upgrades[i].type = dp_upgrade_type_dup(uc->upgrade_type);
            if (h->upgrades[i].type == NULL) {
                fail(e, "%s.upgrade_configs[%zu].upgrade_type: %s", sub, i,
                     uc->upgrade_type[0] ? "not a token" : "required field is missing");
                goto bad;
            }
            h->upgrades[i].enabled = uc->enabled ? uc->enabled->value : 1;
        }
    }
    h->proxy_100_continue = pm->proxy_100_continue;
    h->h1_enable_trailers = pm->http_protocol_options && pm->http_protocol_options->enable_trailers;
    if (build_http_filters(h, pm, sub, e) < 0)
        goto bad;

    switch (pm->route_specifier_case) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG: {
        char rerr[512];
        h->routes = dp_route_table_build(pm->route_config, h->filters, h->n_filters, rerr, sizeof(rerr));
        if (h->routes == NULL) {
            fail(e, "%s.route_config.%s", sub, rerr);
            goto bad;
        }
        break;
    }
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS: {
        const char *name = pm->rds->route_config_name;
        if (name[0] == '\0') {
            fail(e, "%s.rds.route_config_name: required field is missing", sub);
            goto bad;
        }
        if (!ctx->dynamic || ctx->route_lookup == NULL) {
            fail(e, "%s.rds: RDS needs dynamic_resources (ADS)", sub);
            goto bad;
        }
        h->rds_name = xstrdup(name);
        const Envoy__Config__Route__V3__RouteConfiguration *rc = ctx->route_lookup(ctx->route_ud, name);
        if (rc) {
            char rerr[512];
            h->routes = dp_route_table_build(rc, h->filters, h->n_filters, rerr, sizeof(rerr));
            if (h->routes == NULL) {
                fail(e, "route configuration \"%s\": %s", name, rerr);
                goto bad;
            }
        }
        break;
    }
    default:
        fail(e, "%s: one of route_config or rds is required", sub);
        goto bad;
    }
    protobuf_c_message_free_unpacked(&pm->base, NULL);
    return h;
bad:
    hcm_free(h);
    protobuf_c_message_free_unpacked(&pm->base, NULL);
    return NULL;
}

/* ---- listeners ------------------------------------------------------------------ */

static char **copy_lower(char **src, size_t n, struct berr *e)
{
    if (n == 0)
        return NULL;
    char **dst = calloc(n, sizeof(char *));
    if (dst == NULL) {
        fail(e, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        dst[i] = xstrdup(src[i]);
        for (char *p = dst[i]; p && *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p + 32);
    }
    return dst;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static void chain_free(struct dp_filter_chain *fc)
{
    free(fc->name);
    free_strv(fc->server_names, fc->n_server_names);
    free(fc->transport_protocol);
    free_strv(fc->application_protocols, fc->n_application_protocols);
    if (fc->tls)
        dp_tls_server_unref(fc->tls);
    hcm_free(fc->hcm);
    for (size_t i = 0; i < fc->n_net_filters; i++)
        if (fc->net_filters[i].ops->config_free)
            fc->net_filters[i].ops->config_free(fc->net_filters[i].cfg);
    free(fc->net_filters);
}

static int is_filter(const Envoy__Config__Listener__V3__Filter *f, const char *name, const char *type)
{
    if (f->typed_config)
        return strcmp(xds_type_url_name(f->typed_config->type_url), type) == 0;
    return strcmp(f->name, name) == 0;
}

/* A network filter before the connection manager (filters/registry.c's
 * network table): found by its typed_config's type, else by name. */
static int build_net_filter(struct dp_filter_chain *fc, const Envoy__Config__Listener__V3__Filter *f,
                            const char *path, struct berr *e)
{
    const struct dp_net_filter_ops *ops = NULL;
    if (f->typed_config)
        ops = dp_net_filter_lookup_by_type(xds_type_url_name(f->typed_config->type_url));
    if (ops == NULL)
        ops = dp_net_filter_lookup(f->name);
    if (ops == NULL) {
        char names[256];
        return fail(e, "%s.name: only %s may come before %s, got \"%s\"", path,
                    dp_net_filter_names(names, sizeof(names)), HCM_NAME, f->name);
    }
    char sub[300];
    snprintf(sub, sizeof(sub), "%s.typed_config", path);
    ProtobufCMessage *msg = NULL;
    if (ops->config_type) {
        msg = unpack_any(f->typed_config, ops->config_type, sub, e);
        if (msg == NULL)
            return -1;
    }
    char err[256] = "";
    int disabled = 0;
    void *cfg = ops->config_new(msg, &disabled, err, sizeof(err));
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    if (cfg == NULL && disabled)
        return 0; /* valid, and switched off (runtime_enabled false) */
    if (cfg == NULL)
        return fail(e, "%s.%s", sub, err);
    struct dp_net_filter_inst *v = realloc(fc->net_filters, (fc->n_net_filters + 1) * sizeof(*v));
    if (v == NULL) {
        if (ops->config_free)
            ops->config_free(cfg);
        return fail(e, "%s: out of memory", path);
    }
    fc->net_filters = v;
    v[fc->n_net_filters].ops = ops;
    v[fc->n_net_filters].cfg = cfg;
    fc->n_net_filters++;
    return 0;
}

static int build_chain(struct dp_filter_chain *fc, const Envoy__Config__Listener__V3__FilterChain *pc,
                       const struct dp_build_ctx *ctx, const char *path, struct berr *e)
{
    char sub[300];
    fc->name = xstrdup(pc->name);
    const Envoy__Config__Listener__V3__FilterChainMatch *m = pc->filter_chain_match;
    if (m) {
        if (m->n_prefix_ranges || m->n_source_prefix_ranges || m->n_direct_source_prefix_ranges ||
            m->n_source_ports || m->source_type)
            return fail(e, "%s.filter_chain_match: only destination_port, server_names, "
                           "transport_protocol and application_protocols are supported",
                        path);
        fc->destination_port = u32v(m->destination_port, 0);
        fc->server_names = copy_lower(m->server_names, m->n_server_names, e);
        fc->n_server_names = m->n_server_names;
        for (size_t i = 0; i < m->n_server_names; i++) {
            const char *sn = m->server_names[i];
            if (sn[0] == '\0' || (strchr(sn, '*') && !(sn[0] == '*' && sn[1] == '.' && !strchr(sn + 1, '*'))))
                return fail(e, "%s.filter_chain_match.server_names[%zu]: \"%s\" is not an exact name "
                               "or a \"*.suffix\" wildcard",
                            path, i, sn);
        }
        if (m->transport_protocol[0]) {
            if (strcmp(m->transport_protocol, "tls") != 0 &&
                strcmp(m->transport_protocol, "raw_buffer") != 0)
                return fail(e, "%s.filter_chain_match.transport_protocol: expected \"tls\" or "
                               "\"raw_buffer\", got \"%s\"",
                            path, m->transport_protocol);
            fc->transport_protocol = xstrdup(m->transport_protocol);
        }
        fc->application_protocols = copy_lower(m->application_protocols, m->n_application_protocols, e);
        fc->n_application_protocols = m->n_application_protocols;
    }
    if (pc->n_filters == 0)
        return fail(e, "%s.filters: %s is required", path, HCM_NAME);
    size_t last = pc->n_filters - 1;
    for (size_t i = 0; i < last; i++) {
        snprintf(sub, sizeof(sub), "%s.filters[%zu]", path, i);
        if (build_net_filter(fc, pc->filters[i], sub, e) < 0)
            return -1;
    }
    const Envoy__Config__Listener__V3__Filter *f = pc->filters[last];
    if (!is_filter(f, HCM_NAME,
                   "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"))
        return fail(e, "%s.filters[%zu].name: the last network filter must be %s, got \"%s\"", path, last,
                    HCM_NAME, f->name);
    snprintf(sub, sizeof(sub), "%s.filters[%zu]", path, last);
    fc->hcm = build_hcm(f->typed_config, ctx, sub, e);
    if (fc->hcm == NULL)
        return -1;

    if (pc->transport_socket) {
        const Envoy__Config__Core__V3__TransportSocket *ts = pc->transport_socket;
        const Google__Protobuf__Any *tc = ts->typed_config;
        if (strcmp(ts->name, RAW_SOCKET) == 0 && tc == NULL)
            return 0;
        if (tc && strcmp(xds_type_url_name(tc->type_url),
                         "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer") == 0)
            return 0;
        if (strcmp(ts->name, TLS_SOCKET) != 0 && tc == NULL)
            return fail(e, "%s.transport_socket.name: only %s and %s are supported, got \"%s\"", path,
                        TLS_SOCKET, RAW_SOCKET, ts->name);
        snprintf(sub, sizeof(sub), "%s.transport_socket.typed_config", path);
        ProtobufCMessage *msg = unpack_any(
            tc, &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor,
            sub, e);
        if (msg == NULL)
            return -1;
        static const char *const alpn_auto[] = {"h2", "http/1.1"};
        static const char *const alpn_h1[] = {"http/1.1"};
        static const char *const alpn_h2[] = {"h2"};
        const char *const *alpn = fc->hcm->codec == DP_CODEC_HTTP1   ? alpn_h1
                                  : fc->hcm->codec == DP_CODEC_HTTP2 ? alpn_h2
                                                                     : alpn_auto;
        size_t n_alpn = fc->hcm->codec == DP_CODEC_AUTO ? 2 : 1;
        char terr[512];
        fc->tls = dp_tls_server_new((void *)msg, alpn, n_alpn, &ctx->secrets, terr, sizeof(terr));
        protobuf_c_message_free_unpacked(msg, NULL);
        if (fc->tls == NULL)
            return fail(e, "%s.%s", sub, terr);
    }
    return 0;
}

static void listener_free(struct dp_listener *l)
{
    for (size_t i = 0; i < l->n_chains; i++)
        chain_free(&l->chains[i]);
    free(l->chains);
    if (l->default_chain) {
        chain_free(l->default_chain);
        free(l->default_chain);
    }
    free(l->name);
    free(l->addr_str);
    free(l);
}

void dp_listener_ref(struct dp_listener *l)
{
    __atomic_add_fetch(&l->refs, 1, __ATOMIC_RELAXED);
}

void dp_listener_unref(struct dp_listener *l)
{
    if (l && __atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL) == 0)
        listener_free(l);
}

struct dp_listener *dp_listener_build(const Envoy__Config__Listener__V3__Listener *pl,
                                      const struct dp_build_ctx *ctx, char *err, size_t errlen)
{
    struct berr e = {err, errlen};
    char path[64];
    struct dp_listener *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        fail(&e, "out of memory");
        return NULL;
    }
    l->refs = 1;
    l->name = xstrdup(pl->name);
    const Envoy__Config__Core__V3__SocketAddress *sa = NULL;
    if (socket_address(pl->address, "address", &sa, &e) < 0)
        goto bad;
    if (dp_sockaddr_parse(sa->address, sa->port_value, &l->addr, &l->addrlen) < 0) {
        fail(&e, "address.socket_address.address: \"%s\" is not an IP address", sa->address);
        goto bad;
    }
    l->addr_str = format_addr(sa->address, sa->port_value);
    l->freebind = pl->freebind && pl->freebind->value;
    l->ipv4_compat = sa->ipv4_compat;
    {
        /* Envoy's stat name for an address: ':' becomes '_' */
        char tag[80];
        snprintf(tag, sizeof(tag), "%s", l->addr_str);
        for (char *q = tag; *q; q++)
            if (*q == ':')
                *q = '_';
        l->st.cx_total = dp_stat_register(DP_STAT_COUNTER, "listener", tag, "downstream_cx_total");
        l->st.cx_active = dp_stat_register(DP_STAT_GAUGE, "listener", tag, "downstream_cx_active");
        l->st.ssl_handshake = dp_stat_register(DP_STAT_COUNTER, "listener", tag, "ssl.handshake");
        l->st.ssl_session_reused = dp_stat_register(DP_STAT_COUNTER, "listener", tag, "ssl.session_reused");
        l->st.ssl_no_cert = dp_stat_register(DP_STAT_COUNTER, "listener", tag, "ssl.fail_verify_no_cert");
        l->st.ssl_verify_error = dp_stat_register(DP_STAT_COUNTER, "listener", tag, "ssl.fail_verify_error");
        l->st.ssl_verify_san = dp_stat_register(DP_STAT_COUNTER, "listener", tag, "ssl.fail_verify_san");
        l->st.ssl_connection_error = dp_stat_register(DP_STAT_COUNTER, "listener", tag, "ssl.connection_error");
    }
    l->per_connection_buffer_limit = u32v(pl->per_connection_buffer_limit_bytes, DEFAULT_BUFFER_LIMIT);
    if (l->per_connection_buffer_limit < 1024) {
        fail(&e, "per_connection_buffer_limit_bytes: must be at least 1024");
        goto bad;
    }
    l->listener_filters_timeout = dur(pl->listener_filters_timeout, 15);
    if (pl->use_original_dst && pl->use_original_dst->value)
        l->use_original_dst = 1;
    if (pl->n_additional_addresses) {
        fail(&e, "additional_addresses: not supported");
        goto bad;
    }
    if (pl->transparent && pl->transparent->value) {
        fail(&e, "transparent: not supported");
        goto bad;
    }
    if (pl->bind_to_port && !pl->bind_to_port->value) {
        fail(&e, "bind_to_port: false is not supported");
        goto bad;
    }
    for (size_t i = 0; i < pl->n_listener_filters; i++) {
        const char *n = pl->listener_filters[i]->name;
        if (strcmp(n, "envoy.filters.listener.tls_inspector") == 0)
            continue; /* TLS is always detected from the first byte */
        if (strcmp(n, "envoy.filters.listener.original_dst") == 0) {
            l->original_dst = 1; /* SO_ORIGINAL_DST: where an iptables REDIRECT was headed */
            continue;
        }
        fail(&e, "listener_filters[%zu].name: unsupported listener filter \"%s\"", i, n);
        goto bad;
    }
    if (pl->n_filter_chains == 0 && pl->default_filter_chain == NULL) {
        fail(&e, "filter_chains: a listener needs at least one filter chain or a default_filter_chain");
        goto bad;
    }
    if (pl->n_filter_chains) {
        l->chains = calloc(pl->n_filter_chains, sizeof(*l->chains));
        if (l->chains == NULL) {
            fail(&e, "out of memory");
            goto bad;
        }
    }
    for (size_t i = 0; i < pl->n_filter_chains; i++) {
        snprintf(path, sizeof(path), "filter_chains[%zu]", i);
        l->n_chains = i + 1;
        if (build_chain(&l->chains[i], pl->filter_chains[i], ctx, path, &e) < 0)
            goto bad;
        const struct dp_filter_chain *fc = &l->chains[i];
        if (fc->n_server_names || fc->transport_protocol || fc->n_application_protocols)
            l->needs_inspection = 1;
        if (fc->n_server_names && fc->tls == NULL) {
            fail(&e, "%s.filter_chain_match.server_names: matching on SNI needs a TLS transport_socket",
                 path);
            goto bad;
        }
        /* Two chains with the same match would make the choice arbitrary. */
        for (size_t j = 0; j < i; j++) {
            const struct dp_filter_chain *o = &l->chains[j];
            int same = o->destination_port == fc->destination_port &&
                       o->n_server_names == fc->n_server_names &&
                       o->n_application_protocols == fc->n_application_protocols &&
                       ((o->transport_protocol == NULL && fc->transport_protocol == NULL) ||
                        (o->transport_protocol && fc->transport_protocol &&
                         strcmp(o->transport_protocol, fc->transport_protocol) == 0));
            for (size_t k = 0; same && k < fc->n_server_names; k++)
                same = strcmp(o->server_names[k], fc->server_names[k]) == 0;
            for (size_t k = 0; same && k < fc->n_application_protocols; k++)
                same = strcmp(o->application_protocols[k], fc->application_protocols[k]) == 0;
            if (same) {
                fail(&e, "%s.filter_chain_match: the same match as filter_chains[%zu]", path, j);
                goto bad;
            }
        }
    }
    if (pl->default_filter_chain) {
        l->default_chain = calloc(1, sizeof(*l->default_chain));
        if (l->default_chain == NULL) {
            fail(&e, "out of memory");
            goto bad;
        }
        if (build_chain(l->default_chain, pl->default_filter_chain, ctx, "default_filter_chain", &e) < 0)
            goto bad;
    }
    return l;
bad:
    listener_free(l);
    return NULL;
}

/* ---- clusters ---------------------------------------------------------------------- */

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
                                   uint32_t weight, int health, const char *path, struct berr *e),
                         void *ud, const char *prefix, struct berr *e)
{
    char path[200];
    for (size_t i = 0; i < cla->n_endpoints; i++) {
        const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *lle = cla->endpoints[i];
        if (lle->priority != 0)
            return fail(e, "%sendpoints[%zu].priority: only priority 0 is supported", prefix, i);
        for (size_t j = 0; j < lle->n_lb_endpoints; j++) {
            const Envoy__Config__Endpoint__V3__LbEndpoint *le = lle->lb_endpoints[j];
            snprintf(path, sizeof(path), "%sendpoints[%zu].lb_endpoints[%zu]", prefix, i, j);
            if (le->host_identifier_case !=
                ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT)
                return fail(e, "%s.endpoint: required field is missing", path);
            char apath[240];
            snprintf(apath, sizeof(apath), "%s.endpoint.address", path);
            const Envoy__Config__Core__V3__SocketAddress *sa = NULL;
            if (socket_address(le->endpoint->address, apath, &sa, e) < 0)
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
                           uint32_t weight, int health, const char *path, struct berr *e)
{
    struct ep_acc *acc = ud;
    struct dp_endpoint_set *s = acc->set;
    if (s->n == acc->cap) {
        size_t nc = acc->cap ? acc->cap * 2 : 8;
        struct dp_endpoint *nv = realloc(s->v, nc * sizeof(*nv));
        if (nv == NULL)
            return fail(e, "out of memory");
        s->v = nv;
        acc->cap = nc;
    }
    struct dp_endpoint *ep = &s->v[s->n];
    memset(ep, 0, sizeof(*ep));
    if (dp_sockaddr_parse(sa->address, sa->port_value, &ep->addr, &ep->addrlen) < 0)
        return fail(e, "%s.socket_address.address: \"%s\" is not an IP address", path, sa->address);
    ep->addr_str = format_addr(sa->address, sa->port_value);
    ep->weight = weight ? weight : 1;
    ep->healthy = healthy(health);
    s->n++;
    return ep->addr_str ? 0 : fail(e, "out of memory");
}

struct dp_endpoint_set *dp_endpoints_build(
    const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *cla, char *err, size_t errlen)
{
    struct berr e = {err, errlen};
    struct ep_acc acc = {0};
    acc.set = calloc(1, sizeof(*acc.set));
    if (acc.set == NULL) {
        fail(&e, "out of memory");
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
                          uint32_t weight, int health, const char *path, struct berr *e)
{
    struct ep_acc *acc = ud;
    struct dp_cluster *c = acc->dns;
    if (c->n_dns == acc->dns_cap) {
        size_t nc = acc->dns_cap ? acc->dns_cap * 2 : 4;
        struct dp_dns_target *nv = realloc(c->dns, nc * sizeof(*nv));
        if (nv == NULL)
            return fail(e, "out of memory");
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
                              const char *path, struct berr *e)
{
    c->http2 = 1;
    if (o == NULL)
        return 0;
    c->h2_max_concurrent_streams = u32v(o->max_concurrent_streams, c->h2_max_concurrent_streams);
    c->h2_hpack_table_size = u32v(o->hpack_table_size, 4096);
    c->h2_initial_stream_window = u32v(o->initial_stream_window_size, c->h2_initial_stream_window);
    c->h2_initial_connection_window = u32v(o->initial_connection_window_size, c->h2_initial_connection_window);
    if (c->h2_max_concurrent_streams == 0)
        return fail(e, "%s.max_concurrent_streams: must be at least 1", path);
    if (c->h2_initial_stream_window < 65535 || c->h2_initial_stream_window > 0x7fffffffu ||
        c->h2_initial_connection_window < 65535 || c->h2_initial_connection_window > 0x7fffffffu)
        return fail(e, "%s: window sizes must be between 65535 and 2147483647", path);
    return 0;
}

static int cluster_protocol(struct dp_cluster *c, const Envoy__Config__Cluster__V3__Cluster *pc,
                            struct berr *e)
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
            return fail(e, "%s: unsupported extension (only %s)", path, HTTP_OPTIONS_EXT);
        Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions *o = (void *)unpack_any(
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
                rc = fail(e, "%s.explicit_http_config: one of http_protocol_options or "
                             "http2_protocol_options is required",
                          path);
            }
            break;
        }
        case ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS__NOT_SET:
            break;
        default:
            rc = fail(e, "%s: only explicit_http_config is supported", path);
            break;
        }
        if (rc == 0 && o->common_http_protocol_options && o->common_http_protocol_options->max_stream_duration)
            rc = fail(e, "%s.common_http_protocol_options.max_stream_duration: not supported on clusters "
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
    struct berr e = {err, errlen};
    struct dp_cluster *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        fail(&e, "out of memory");
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
        fail(&e, "connect_timeout: must be positive");
        goto bad;
    }
    c->idle_timeout = 3600;
    c->h2_max_concurrent_streams = 0x7fffffffu; /* Envoy's upstream default */
    c->h2_hpack_table_size = 4096;
    c->h2_initial_stream_window = 1u << 20;
    c->h2_initial_connection_window = 16u << 20;
    c->per_connection_buffer_limit = u32v(pc->per_connection_buffer_limit_bytes, DEFAULT_BUFFER_LIMIT);
    if (c->per_connection_buffer_limit < 1024) {
        fail(&e, "per_connection_buffer_limit_bytes: must be at least 1024");
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
        fail(&e, "dns_lookup_family: unknown value %d", (int)pc->dns_lookup_family);
        goto bad;
    }
    c->max_connections = c->max_pending_requests = c->max_requests = DEFAULT_CIRCUIT;
    if (pc->cluster_discovery_type_case ==
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_CLUSTER_TYPE) {
        fail(&e, "cluster_type: custom cluster types are not supported");
        goto bad;
    }
    switch (pc->type) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC:
        c->type = DP_CLUSTER_STATIC;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STRICT_DNS:
        c->type = DP_CLUSTER_STRICT_DNS;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS:
        c->type = DP_CLUSTER_EDS;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__ORIGINAL_DST:
        c->type = DP_CLUSTER_ORIGINAL_DST;
        if (pc->lb_policy != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED) {
            fail(&e, "lb_policy: an ORIGINAL_DST cluster needs CLUSTER_PROVIDED");
            goto bad;
        }
        if (pc->load_assignment) {
            fail(&e, "load_assignment: an ORIGINAL_DST cluster takes its endpoint from each connection");
            goto bad;
        }
        break;
    default:
        fail(&e, "type: only STATIC, STRICT_DNS, EDS and ORIGINAL_DST are supported");
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
            fail(&e, "least_request_lb_config.choice_count: must be at least 2");
            goto bad;
        }
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM:
        c->lb = DP_LB_RANDOM;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED:
        if (c->type == DP_CLUSTER_ORIGINAL_DST)
            break;
        fail(&e, "lb_policy: CLUSTER_PROVIDED is for ORIGINAL_DST clusters");
        goto bad;
    default:
        fail(&e, "lb_policy: only ROUND_ROBIN, LEAST_REQUEST and RANDOM are supported");
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
            fail(&e, "type: EDS needs dynamic_resources (ADS)");
            goto bad;
        }
        if (ec && ec->eds_config && ec->eds_config->config_source_specifier_case !=
                                        ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS) {
            fail(&e, "eds_cluster_config.eds_config: only \"ads: {}\" is supported");
            goto bad;
        }
        c->eds_service_name = xstrdup(ec && ec->service_name[0] ? ec->service_name : pc->name);
        if (cla) {
            char eerr[256];
            c->endpoints = dp_endpoints_build(cla, eerr, sizeof(eerr));
            if (c->endpoints == NULL) {
                fail(&e, "endpoints of \"%s\": %s", c->eds_service_name, eerr);
                goto bad;
            }
        }
    } else if (c->type == DP_CLUSTER_STATIC) {
        if (pc->load_assignment == NULL) {
            fail(&e, "load_assignment: required for a STATIC cluster");
            goto bad;
        }
        struct ep_acc acc = {0};
        acc.set = calloc(1, sizeof(*acc.set));
        if (acc.set == NULL) {
            fail(&e, "out of memory");
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
            fail(&e, "load_assignment: required for a STRICT_DNS cluster");
            goto bad;
        }
        struct ep_acc acc = {.dns = c};
        if (each_endpoint(pc->load_assignment, add_dns_target, &acc, "load_assignment.", &e) < 0)
            goto bad;
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
                fail(&e, "transport_socket.name: only %s and %s are supported, got \"%s\"",
                     TLS_SOCKET, RAW_SOCKET, ts->name);
                goto bad;
            }
            ProtobufCMessage *msg = unpack_any(
                tc, &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor,
                "transport_socket.typed_config", &e);
            if (msg == NULL)
                goto bad;
            char terr[512];
            c->tls = dp_tls_client_new((void *)msg, ctx->default_upstream_tls, c->http2,
                                       &ctx->secrets, terr, sizeof(terr));
            protobuf_c_message_free_unpacked(msg, NULL);
            if (c->tls == NULL) {
                fail(&e, "transport_socket.typed_config.%s", terr);
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
