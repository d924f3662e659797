/*
 * envoy.filters.network.http_connection_manager -> struct dp_hcm_cfg: its
 * options, the HTTP filter chain (through the filters' factories) and the
 * route table (inline or by RDS name).
 */
#include "config_build_priv.h"

#include "dataplane/accesslog.h"
#include "dataplane/local_reply.h"
#include "dataplane/route.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "filters/registry.h"
#include "xds/registry.h"

void dp_hcm_cfg_free(struct dp_hcm_cfg *h)
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
    free(h->scheme_overwrite);
    dp_local_reply_free(h->local_reply);
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
    const char *path, struct xds_cfgerr *e)
{
    if (pm->n_http_filters == 0)
        return xds_cfg_fail(e, "%s.http_filters: at least the router (envoy.filters.http.router) is required",
                    path);
    h->filters = calloc(pm->n_http_filters, sizeof(*h->filters));
    if (h->filters == NULL)
        return xds_cfg_fail(e, "out of memory");
    for (size_t i = 0; i < pm->n_http_filters; i++) {
        const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter *pf =
            pm->http_filters[i];
        const struct dp_filter_ops *ops = dp_filter_lookup(pf->name);
        const Google__Protobuf__Any *tc =
            pf->config_type_case ==
                    ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG
                ? pf->typed_config
                : NULL;
        if (ops == NULL && tc)
            ops = dp_filter_lookup_by_type(xds_type_url_name(tc->type_url));
        if (ops == NULL) {
            if (pf->is_optional)
                continue;
            if (tc)
                return xds_cfg_fail(e, "%s.http_filters[%zu].typed_config: HTTP filter type \"%s\" (\"%s\") is not "
                                       "supported",
                                    path, i, tc->type_url, pf->name);
            return xds_cfg_fail(e, "%s.http_filters[%zu].name: unknown HTTP filter \"%s\"", path, i, pf->name);
        }
        if (pf->disabled)
            continue;
        ProtobufCMessage *msg = NULL;
        if (tc) {
            char sub[300];
            snprintf(sub, sizeof(sub), "%s.http_filters[%zu].typed_config", path, i);
            if (ops->config_type == NULL)
                return xds_cfg_fail(e, "%s: the filter %s takes no configuration", sub, ops->name);
            msg = dp_build_unpack_any(tc, ops->config_type, sub, e);
            if (msg == NULL)
                return -1;
        }
        char ferr[256];
        void *cfg = ops->config_new(msg, ferr, sizeof(ferr));
        if (msg)
            protobuf_c_message_free_unpacked(msg, NULL);
        if (cfg == NULL)
            return xds_cfg_fail(e, "%s.http_filters[%zu].typed_config: %s", path, i, ferr);
        struct dp_http_filter *f = &h->filters[h->n_filters++];
        f->ops = ops;
        f->cfg = cfg;
        f->name = xstrdup(pf->name);
    }
    if (h->n_filters == 0 || h->filters[h->n_filters - 1].ops != &dp_router_filter)
        return xds_cfg_fail(e, "%s.http_filters: the last HTTP filter must be envoy.filters.http.router", path);
    for (size_t i = 0; i + 1 < h->n_filters; i++)
        if (h->filters[i].ops == &dp_router_filter)
            return xds_cfg_fail(e, "%s.http_filters[%zu]: envoy.filters.http.router must be the last filter",
                        path, i);
    return 0;
}

struct dp_hcm_cfg *dp_hcm_cfg_build(const Google__Protobuf__Any *tc, const struct dp_build_ctx *ctx,
                                    const char *path, struct xds_cfgerr *e)
{
    char sub[300];
    snprintf(sub, sizeof(sub), "%s.typed_config", path);
    Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager *pm =
        (void *)dp_build_unpack_any(
            tc,
            &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
            sub, e);
    if (pm == NULL)
        return NULL;
    struct dp_hcm_cfg *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        xds_cfg_fail(e, "out of memory");
        goto bad;
    }
    if (pm->stat_prefix[0] == '\0') {
        xds_cfg_fail(e, "%s.stat_prefix: required field is missing", sub);
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
    h->st.cx_protocol_error = dp_stat_register(DP_STAT_COUNTER, "http", h->stat_prefix, "downstream_cx_protocol_error");
    h->st.rq_overload_close = dp_stat_register(DP_STAT_COUNTER, "http", h->stat_prefix, "downstream_rq_overload_close");
    h->st.rq_failed_path_normalization =
        dp_stat_register(DP_STAT_COUNTER, "http", h->stat_prefix, "downstream_rq_failed_path_normalization");
    h->st.rq_redirected_with_normalized_path =
        dp_stat_register(DP_STAT_COUNTER, "http", h->stat_prefix, "downstream_rq_redirected_with_normalized_path");
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
        xds_cfg_fail(e, "%s.codec_type: only AUTO, HTTP1 and HTTP2 are supported", sub);
        goto bad;
    }
    h->xfcc = (enum dp_xfcc_mode)pm->forward_client_cert_details;
    if ((int)pm->forward_client_cert_details > (int)DP_XFCC_ALWAYS_FORWARD_ONLY) {
        xds_cfg_fail(e, "%s.forward_client_cert_details: unknown value", sub);
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
    switch (pm->path_with_escaped_slashes_action) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__PATH_WITH_ESCAPED_SLASHES_ACTION__REJECT_REQUEST:
        h->escaped_slashes = DP_SLASHES_REJECT;
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__PATH_WITH_ESCAPED_SLASHES_ACTION__UNESCAPE_AND_REDIRECT:
        h->escaped_slashes = DP_SLASHES_UNESCAPE_REDIRECT;
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__PATH_WITH_ESCAPED_SLASHES_ACTION__UNESCAPE_AND_FORWARD:
        h->escaped_slashes = DP_SLASHES_UNESCAPE_FORWARD;
        break;
    default: /* IMPLEMENTATION_SPECIFIC_DEFAULT is KEEP_UNCHANGED in Envoy (without runtime overrides) */
        h->escaped_slashes = DP_SLASHES_KEEP;
        break;
    }
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
        xds_cfg_fail(e, "%s.server_header_transformation: unknown value", sub);
        goto bad;
    }
    if (pm->scheme_header_transformation &&
        pm->scheme_header_transformation->transformation_case ==
            ENVOY__CONFIG__CORE__V3__SCHEME_HEADER_TRANSFORMATION__TRANSFORMATION_SCHEME_TO_OVERWRITE) {
        const char *sch = pm->scheme_header_transformation->scheme_to_overwrite;
        if (strcmp(sch, "http") != 0 && strcmp(sch, "https") != 0) {
            xds_cfg_fail(e, "%s.scheme_header_transformation.scheme_to_overwrite: must be \"http\" or \"https\", got "
                         "\"%s\"", sub, sch);
            goto bad;
        }
        h->scheme_overwrite = xstrdup(sch);
    }
    if (pm->local_reply_config) {
        char lp[300];
        snprintf(lp, sizeof(lp), "%s.local_reply_config", sub);
        h->local_reply = dp_local_reply_build(pm->local_reply_config, lp, e);
        if (h->local_reply == NULL)
            goto bad;
    }
    /* match_upstream: an HTTP/2 upstream's :scheme follows its transport
     * already (legate's only behaviour without scheme_to_overwrite). */
    if (pm->via[0]) {
        for (const char *c = pm->via; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f) {
                xds_cfg_fail(e, "%s.via: control characters are not allowed in a header value", sub);
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
        xds_cfg_fail(e, "%s.max_request_headers_kb: must be between 1 and 8192", sub);
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
            xds_cfg_fail(e, "%s.http2_protocol_options: window sizes must be at least 65535", sub);
            goto bad;
        }
    }
    if (pm->n_access_log) {
        h->access_logs = calloc(pm->n_access_log, sizeof(*h->access_logs));
        if (h->access_logs == NULL) {
            xds_cfg_fail(e, "out of memory");
            goto bad;
        }
        for (size_t i = 0; i < pm->n_access_log; i++) {
            char aerr[512];
            h->access_logs[i] = dp_access_log_new(pm->access_log[i], aerr, sizeof(aerr));
            if (h->access_logs[i] == NULL) {
                xds_cfg_fail(e, "%s.access_log[%zu].%s", sub, i, aerr);
                goto bad;
            }
            h->n_access_logs = i + 1;
        }
    }
    if (pm->n_upgrade_configs) {
        h->upgrades = calloc(pm->n_upgrade_configs, sizeof(*h->upgrades));
        if (h->upgrades == NULL) {
            xds_cfg_fail(e, "out of memory");
            goto bad;
        }
        for (size_t i = 0; i < pm->n_upgrade_configs; i++) {
            const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__UpgradeConfig
                *uc = pm->upgrade_configs[i];
            h->n_upgrades = i + 1;
            h->upgrades[i].type = dp_upgrade_type_dup(uc->upgrade_type);
            if (h->upgrades[i].type == NULL) {
                xds_cfg_fail(e, "%s.upgrade_configs[%zu].upgrade_type: %s", sub, i,
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
            xds_cfg_fail(e, "%s.route_config.%s", sub, rerr);
            goto bad;
        }
        break;
    }
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS: {
        const char *name = pm->rds->route_config_name;
        if (name[0] == '\0') {
            xds_cfg_fail(e, "%s.rds.route_config_name: required field is missing", sub);
            goto bad;
        }
        if (!ctx->dynamic || ctx->route_lookup == NULL) {
            xds_cfg_fail(e, "%s.rds: RDS needs dynamic_resources (ADS)", sub);
            goto bad;
        }
        h->rds_name = xstrdup(name);
        const Envoy__Config__Route__V3__RouteConfiguration *rc = ctx->route_lookup(ctx->route_ud, name);
        if (rc) {
            char rerr[512];
            h->routes = dp_route_table_build(rc, h->filters, h->n_filters, rerr, sizeof(rerr));
            if (h->routes == NULL) {
                xds_cfg_fail(e, "route configuration \"%s\": %s", name, rerr);
                goto bad;
            }
        }
        break;
    }
    default:
        xds_cfg_fail(e, "%s: one of route_config or rds is required", sub);
        goto bad;
    }
    protobuf_c_message_free_unpacked(&pm->base, NULL);
    return h;
bad:
    dp_hcm_cfg_free(h);
    protobuf_c_message_free_unpacked(&pm->base, NULL);
    return NULL;
}
