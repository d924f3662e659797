/*
 * Listener -> struct dp_listener: the address, the listener filters and
 * each filter chain (match, its network filters before the terminal one,
 * the terminal: the connection manager or tcp_proxy, downstream TLS).
 */
#include "config_build_priv.h"

#include "dataplane/net_chain.h"
#include "dataplane/runtime.h"
#include "filters/registry.h"
#include "filters/tcp_proxy/tcp_proxy.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "xds/registry.h"

#define HCM_NAME "envoy.filters.network.http_connection_manager"

static char **copy_lower(char **src, size_t n, struct xds_cfgerr *e)
{
    if (n == 0)
        return NULL;
    char **dst = calloc(n, sizeof(char *));
    if (dst == NULL) {
        xds_cfg_fail(e, "out of memory");
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
    dp_hcm_cfg_free(fc->hcm);
    dp_tcp_proxy_config_free(fc->tcp_proxy);
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
                            const char *path, struct xds_cfgerr *e)
{
    const struct dp_net_filter_ops *ops = NULL;
    if (f->typed_config)
        ops = dp_net_filter_lookup_by_type(xds_type_url_name(f->typed_config->type_url));
    if (ops == NULL)
        ops = dp_net_filter_lookup(f->name);
    if (ops == NULL) {
        char names[256];
        dp_net_filter_names(names, sizeof(names));
        if (f->typed_config) /* the type decides (Envoy ignores the name then): it is named first */
            return xds_cfg_fail(e, "%s.typed_config: network filter type \"%s\" is not supported; only %s may "
                                   "come before %s or %s",
                                path, f->typed_config->type_url, names, HCM_NAME, DP_TCP_PROXY_NAME);
        return xds_cfg_fail(e, "%s.name: only %s may come before %s or %s, got \"%s\"", path, names, HCM_NAME,
                            DP_TCP_PROXY_NAME, f->name);
    }
    char sub[300];
    snprintf(sub, sizeof(sub), "%s.typed_config", path);
    ProtobufCMessage *msg = NULL;
    if (ops->config_type) {
        msg = dp_build_unpack_any(f->typed_config, ops->config_type, sub, e);
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
        return xds_cfg_fail(e, "%s.%s", sub, err);
    struct dp_net_filter_inst *v = realloc(fc->net_filters, (fc->n_net_filters + 1) * sizeof(*v));
    if (v == NULL) {
        if (ops->config_free)
            ops->config_free(cfg);
        return xds_cfg_fail(e, "%s: out of memory", path);
    }
    fc->net_filters = v;
    v[fc->n_net_filters].ops = ops;
    v[fc->n_net_filters].cfg = cfg;
    fc->n_net_filters++;
    return 0;
}

static int is_terminal(const Envoy__Config__Listener__V3__Filter *f)
{
    return is_filter(f, HCM_NAME,
                     "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager") ||
           is_filter(f, DP_TCP_PROXY_NAME, DP_TCP_PROXY_TYPE);
}

/* The chain's last filter: the connection manager or tcp_proxy. */
static int build_terminal(struct dp_filter_chain *fc, const Envoy__Config__Listener__V3__Filter *f,
                          const struct dp_build_ctx *ctx, const char *path, size_t last, struct xds_cfgerr *e)
{
    char sub[300];
    snprintf(sub, sizeof(sub), "%s.filters[%zu]", path, last);
    if (is_filter(f, DP_TCP_PROXY_NAME, DP_TCP_PROXY_TYPE)) {
        char tsub[320];
        snprintf(tsub, sizeof(tsub), "%s.typed_config", sub);
        ProtobufCMessage *msg = dp_build_unpack_any(
            f->typed_config, &envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor, tsub, e);
        if (msg == NULL)
            return -1;
        char err[256] = "";
        fc->tcp_proxy = dp_tcp_proxy_config_new(msg, err, sizeof(err));
        protobuf_c_message_free_unpacked(msg, NULL);
        if (fc->tcp_proxy == NULL)
            return xds_cfg_fail(e, "%s.%s", tsub, err);
        return 0;
    }
    if (!is_filter(f, HCM_NAME,
                   "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager")) {
        /* by its type, never by a name that may well say "http_connection_manager" */
        const struct dp_net_filter_ops *other =
            f->typed_config ? dp_net_filter_lookup_by_type(xds_type_url_name(f->typed_config->type_url)) : NULL;
        if (other)
            return xds_cfg_fail(e, "%s.typed_config: the last network filter must be a terminal one, %s or %s, "
                                   "got %s (%s)",
                                sub, HCM_NAME, DP_TCP_PROXY_NAME, other->name, f->typed_config->type_url);
        if (f->typed_config)
            return xds_cfg_fail(e, "%s.typed_config: network filter type \"%s\" is not supported; the last network "
                                   "filter must be a terminal one, %s or %s",
                                sub, f->typed_config->type_url, HCM_NAME, DP_TCP_PROXY_NAME);
        return xds_cfg_fail(e, "%s.name: the last network filter must be a terminal one, %s or %s, got \"%s\"",
                            sub, HCM_NAME, DP_TCP_PROXY_NAME, f->name);
    }
    fc->hcm = dp_hcm_cfg_build(f->typed_config, ctx, sub, e);
    return fc->hcm ? 0 : -1;
}

static int build_chain(struct dp_filter_chain *fc, const Envoy__Config__Listener__V3__FilterChain *pc,
                       const struct dp_build_ctx *ctx, const char *path, struct xds_cfgerr *e)
{
    char sub[300];
    fc->name = xstrdup(pc->name);
    const Envoy__Config__Listener__V3__FilterChainMatch *m = pc->filter_chain_match;
    if (m) {
        if (m->n_prefix_ranges || m->n_source_prefix_ranges || m->n_direct_source_prefix_ranges ||
            m->n_source_ports || m->source_type)
            return xds_cfg_fail(e, "%s.filter_chain_match: only destination_port, server_names, "
                           "transport_protocol and application_protocols are supported",
                        path);
        fc->destination_port = u32v(m->destination_port, 0);
        fc->server_names = copy_lower(m->server_names, m->n_server_names, e);
        fc->n_server_names = m->n_server_names;
        for (size_t i = 0; i < m->n_server_names; i++) {
            const char *sn = m->server_names[i];
            if (sn[0] == '\0' || (strchr(sn, '*') && !(sn[0] == '*' && sn[1] == '.' && !strchr(sn + 1, '*'))))
                return xds_cfg_fail(e, "%s.filter_chain_match.server_names[%zu]: \"%s\" is not an exact name "
                               "or a \"*.suffix\" wildcard",
                            path, i, sn);
        }
        if (m->transport_protocol[0]) {
            if (strcmp(m->transport_protocol, "tls") != 0 &&
                strcmp(m->transport_protocol, "raw_buffer") != 0)
                return xds_cfg_fail(e, "%s.filter_chain_match.transport_protocol: expected \"tls\" or "
                               "\"raw_buffer\", got \"%s\"",
                            path, m->transport_protocol);
            fc->transport_protocol = xstrdup(m->transport_protocol);
        }
        fc->application_protocols = copy_lower(m->application_protocols, m->n_application_protocols, e);
        fc->n_application_protocols = m->n_application_protocols;
    }
    if (pc->n_filters == 0)
        return xds_cfg_fail(e, "%s.filters: a terminal filter (%s or %s) is required", path, HCM_NAME,
                            DP_TCP_PROXY_NAME);
    size_t last = pc->n_filters - 1;
    for (size_t i = 0; i < last; i++) {
        snprintf(sub, sizeof(sub), "%s.filters[%zu]", path, i);
        if (is_terminal(pc->filters[i]))
            return xds_cfg_fail(e, "%s.name: %s is a terminal filter: it must be the last one", sub,
                                pc->filters[i]->name);
        if (build_net_filter(fc, pc->filters[i], sub, e) < 0)
            return -1;
    }
    if (build_terminal(fc, pc->filters[last], ctx, path, last, e) < 0)
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
            return xds_cfg_fail(e, "%s.transport_socket.name: only %s and %s are supported, got \"%s\"", path,
                        TLS_SOCKET, RAW_SOCKET, ts->name);
        snprintf(sub, sizeof(sub), "%s.transport_socket.typed_config", path);
        ProtobufCMessage *msg = dp_build_unpack_any(
            tc, &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor,
            sub, e);
        if (msg == NULL)
            return -1;
        static const char *const alpn_auto[] = {"h2", "http/1.1"};
        static const char *const alpn_h1[] = {"http/1.1"};
        static const char *const alpn_h2[] = {"h2"};
        const char *const *alpn = NULL;
        size_t n_alpn = 0; /* tcp_proxy: bytes of any protocol, no ALPN of ours */
        if (fc->hcm) {
            alpn = fc->hcm->codec == DP_CODEC_HTTP1 ? alpn_h1 : fc->hcm->codec == DP_CODEC_HTTP2 ? alpn_h2 : alpn_auto;
            n_alpn = fc->hcm->codec == DP_CODEC_AUTO ? 2 : 1;
        }
        char terr[512];
        fc->tls = dp_tls_server_new((void *)msg, alpn, n_alpn, &ctx->secrets, terr, sizeof(terr));
        protobuf_c_message_free_unpacked(msg, NULL);
        if (fc->tls == NULL)
            return xds_cfg_fail(e, "%s.%s", sub, terr);
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
    struct xds_cfgerr e = {err, errlen};
    char path[64];
    struct dp_listener *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        xds_cfg_fail(&e, "out of memory");
        return NULL;
    }
    l->refs = 1;
    l->name = xstrdup(pl->name);
    const Envoy__Config__Core__V3__SocketAddress *sa = NULL;
    if (dp_build_socket_address(pl->address, "address", &sa, &e) < 0)
        goto bad;
    if (dp_sockaddr_parse(sa->address, sa->port_value, &l->addr, &l->addrlen) < 0) {
        xds_cfg_fail(&e, "address.socket_address.address: \"%s\" is not an IP address", sa->address);
        goto bad;
    }
    l->addr_str = dp_build_format_addr(sa->address, sa->port_value);
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
        l->st.cx_global_overflow = dp_stat_register(DP_STAT_COUNTER, "listener", tag, "downstream_global_cx_overflow");
        l->st.cx_overflow = dp_stat_register(DP_STAT_COUNTER, "listener", tag, "downstream_cx_overflow");
        l->st.ssl_handshake = dp_stat_register(DP_STAT_COUNTER, "listener", tag, "ssl.handshake");
        l->st.ssl_session_reused = dp_stat_register(DP_STAT_COUNTER, "listener", tag, "ssl.session_reused");
        l->st.ssl_no_cert = dp_stat_register(DP_STAT_COUNTER, "listener", tag, "ssl.fail_verify_no_cert");
        l->st.ssl_verify_error = dp_stat_register(DP_STAT_COUNTER, "listener", tag, "ssl.fail_verify_error");
        l->st.ssl_verify_san = dp_stat_register(DP_STAT_COUNTER, "listener", tag, "ssl.fail_verify_san");
        l->st.ssl_connection_error = dp_stat_register(DP_STAT_COUNTER, "listener", tag, "ssl.connection_error");
    }
    l->per_connection_buffer_limit = u32v(pl->per_connection_buffer_limit_bytes, DEFAULT_BUFFER_LIMIT);
    l->connection_limit = dp_runtime_listener_limit(l->name);
    if (l->per_connection_buffer_limit < 1024) {
        xds_cfg_fail(&e, "per_connection_buffer_limit_bytes: must be at least 1024");
        goto bad;
    }
    l->listener_filters_timeout = dur(pl->listener_filters_timeout, 15);
    if (pl->use_original_dst && pl->use_original_dst->value)
        l->use_original_dst = 1;
    for (size_t i = 0; i < pl->n_listener_filters; i++) {
        const char *n = pl->listener_filters[i]->name;
        if (strcmp(n, "envoy.filters.listener.tls_inspector") == 0)
            continue; /* TLS is always detected from the first byte */
        if (strcmp(n, "envoy.filters.listener.original_dst") == 0) {
            l->original_dst = 1; /* SO_ORIGINAL_DST: where an iptables REDIRECT was headed */
            continue;
        }
        xds_cfg_fail(&e, "listener_filters[%zu].name: unsupported listener filter \"%s\"", i, n);
        goto bad;
    }
    if (pl->n_filter_chains == 0 && pl->default_filter_chain == NULL) {
        xds_cfg_fail(&e, "filter_chains: a listener needs at least one filter chain or a default_filter_chain");
        goto bad;
    }
    if (pl->n_filter_chains) {
        l->chains = calloc(pl->n_filter_chains, sizeof(*l->chains));
        if (l->chains == NULL) {
            xds_cfg_fail(&e, "out of memory");
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
            xds_cfg_fail(&e, "%s.filter_chain_match.server_names: matching on SNI needs a TLS transport_socket",
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
                xds_cfg_fail(&e, "%s.filter_chain_match: the same match as filter_chains[%zu]", path, j);
                goto bad;
            }
        }
    }
    if (pl->default_filter_chain) {
        l->default_chain = calloc(1, sizeof(*l->default_chain));
        if (l->default_chain == NULL) {
            xds_cfg_fail(&e, "out of memory");
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
