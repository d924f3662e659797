#include "xds/client.h"
#include "xds/hash.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "xds/cfgerr.h"
#include "xds/datasource.h"
#include "xds/log.h"
#include "xds/version.h"

/* Envoy's default initial_fetch_timeout. */
#define INITIAL_FETCH_TIMEOUT 15.0

const char *const xds_type_urls[XDS_T_N] = {
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "type.googleapis.com/envoy.config.listener.v3.Listener",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
};
const char *const xds_type_names[XDS_T_N] = {"cluster", "endpoints", "listener", "route configuration", "secret"};
const char *const xds_type_short[XDS_T_N] = {"CDS", "EDS", "LDS", "RDS", "SDS"};

int xds_type_of(const char *url)
{
    for (int i = 0; i < XDS_T_N; i++)
        if (strcmp(url, xds_type_urls[i]) == 0)
            return i;
    return -1;
}

int xds_type_wildcard(int type)
{
    return type == XDS_LDS || type == XDS_CDS;
}

const char *xds_resource_name(int type, const ProtobufCMessage *m)
{
    switch (type) {
    case XDS_LDS:
        return ((const Envoy__Config__Listener__V3__Listener *)m)->name;
    case XDS_RDS:
        return ((const Envoy__Config__Route__V3__RouteConfiguration *)m)->name;
    case XDS_CDS:
        return ((const Envoy__Config__Cluster__V3__Cluster *)m)->name;
    case XDS_EDS:
        return ((const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *)m)->cluster_name;
    case XDS_SDS:
        return ((const Envoy__Extensions__TransportSockets__Tls__V3__Secret *)m)->name;
    }
    return "";
}

void xds_errs_add(struct xds_errs *e, const char *fmt, ...)
{
    if (e->len + 3 >= sizeof(e->buf))
        return;
    if (e->n++)
        e->len += (size_t)snprintf(e->buf + e->len, sizeof(e->buf) - e->len, "; ");
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(e->buf + e->len, sizeof(e->buf) - e->len, fmt, ap);
    va_end(ap);
    if (w > 0)
        e->len += (size_t)w;
    if (e->len >= sizeof(e->buf))
        e->len = sizeof(e->buf) - 1;
}

int64_t xds_version_number(const char *v)
{
    char *end;
    long long n = strtoll(v, &end, 10);
    if (*v && *end == '\0' && n >= 0)
        return n;
    uint64_t h = xds_fnv_str(v, XDS_FNV_INIT);
    return (int64_t)(h & ((1ull << 53) - 1));
}

static double dur_s(const Google__Protobuf__Duration *d, double dflt)
{
    return d ? (double)d->seconds + (double)d->nanos / 1e9 : dflt;
}

void xds_client_init(struct xds_client *c, const xds_bootstrap_t *bs)
{
    memset(c, 0, sizeof(*c));
    for (int type = 0; type < XDS_T_N; type++)
        c->t[type].type_url = xds_type_urls[type];
    /* Envoy's default, or what lds_config (else cds_config) says; 0 means
     * wait for ever. */
    const Envoy__Config__Core__V3__ConfigSource *cs =
        bs->dynamic_resources->lds_config ? bs->dynamic_resources->lds_config : bs->dynamic_resources->cds_config;
    c->fetch_timeout = cs && cs->initial_fetch_timeout ? dur_s(cs->initial_fetch_timeout, INITIAL_FETCH_TIMEOUT)
                                                       : INITIAL_FETCH_TIMEOUT;
    if (c->fetch_timeout <= 0)
        c->fetch_timeout = 1e12;
    c->node = *bs->node;
    c->node.user_agent_name = "legate";
    c->node.user_agent_version_type_case =
        ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_VERSION;
    c->node.user_agent_version = LEGATE_VERSION;
}

void xds_client_free(struct xds_client *c)
{
    for (int type = 0; type < XDS_T_N; type++)
        xds_state_free(&c->t[type]);
}

/* ---- the ADS target ------------------------------------------------------- */

static char *read_ds(const Envoy__Config__Core__V3__DataSource *ds, const char *field, char *err,
                     size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    char e[256];
    if (ds == NULL)
        return NULL;
    if (xds_datasource_read(ds, &buf, &len, e, sizeof(e)) < 0) {
        xds_cfg_fail(&(struct xds_cfgerr){err, errlen}, "%s: %s", field, e);
        return NULL;
    }
    char *s = realloc(buf, len + 1);
    if (s == NULL) {
        free(buf);
        return NULL;
    }
    s[len] = '\0';
    return s;
}

int xds_client_ads_config(const xds_bootstrap_t *bs, struct xds_ads_config *cfg, char *target, size_t tlen,
                          char *err, size_t errlen)
{
    const Envoy__Config__Core__V3__ApiConfigSource *ac = bs->dynamic_resources->ads_config;
    const Envoy__Config__Core__V3__GrpcService *gs = ac->grpc_services[0];
    const char *cname = gs->envoy_grpc->cluster_name;
    const Envoy__Config__Cluster__V3__Cluster *c = NULL;
    for (size_t i = 0; i < bs->static_resources->n_clusters; i++)
        if (strcmp(bs->static_resources->clusters[i]->name, cname) == 0)
            c = bs->static_resources->clusters[i];
    struct xds_cfgerr e = {err, errlen};
    const char *cpath = "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name";
    if (c == NULL || c->load_assignment == NULL || c->load_assignment->n_endpoints == 0 ||
        c->load_assignment->endpoints[0]->n_lb_endpoints == 0) {
        xds_cfg_fail(&e, "%s: cluster \"%s\" has no endpoint", cpath, cname);
        return -1;
    }
    const Envoy__Config__Endpoint__V3__LbEndpoint *lb = c->load_assignment->endpoints[0]->lb_endpoints[0];
    const Envoy__Config__Core__V3__SocketAddress *sa =
        lb->endpoint && lb->endpoint->address ? lb->endpoint->address->socket_address : NULL;
    if (sa == NULL) {
        xds_cfg_fail(&e, "%s: cluster \"%s\": its endpoint needs a socket_address", cpath, cname);
        return -1;
    }
    snprintf(target, tlen, strchr(sa->address, ':') ? "[%s]:%u" : "%s:%u", sa->address, sa->port_value);
    cfg->target = target;
    cfg->authority = gs->envoy_grpc->authority[0] ? gs->envoy_grpc->authority : NULL;
    const Envoy__Config__Core__V3__RetryPolicy *rp = gs->envoy_grpc->retry_policy;
    cfg->backoff_base = 0.5;
    cfg->backoff_max = 30;
    if (rp && rp->retry_back_off) {
        cfg->backoff_base = dur_s(rp->retry_back_off->base_interval, 0.5);
        cfg->backoff_max = dur_s(rp->retry_back_off->max_interval, cfg->backoff_base * 10);
    }
    if (c->transport_socket && c->transport_socket->typed_config) {
        const Google__Protobuf__Any *any = c->transport_socket->typed_config;
        Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext *u =
            envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__unpack(NULL, any->value.len,
                                                                                       any->value.data);
        if (u == NULL) {
            xds_cfg_fail(&e, "cluster \"%s\": transport_socket: not an UpstreamTlsContext", cname);
            return -1;
        }
        const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *ct = u->common_tls_context;
        int rc = 0;
        cfg->sni = u->sni[0] ? strdup(u->sni) : NULL;
        if (ct && ct->n_tls_certificates) {
            cfg->cert_pem = read_ds(ct->tls_certificates[0]->certificate_chain,
                                    "ads cluster tls_certificates[0].certificate_chain", err, errlen);
            cfg->key_pem = read_ds(ct->tls_certificates[0]->private_key,
                                   "ads cluster tls_certificates[0].private_key", err, errlen);
            if (cfg->cert_pem == NULL || cfg->key_pem == NULL)
                rc = -1;
        }
        if (ct && ct->validation_context_type_case ==
                      ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT &&
            ct->validation_context->trusted_ca) {
            cfg->root_pem = read_ds(ct->validation_context->trusted_ca,
                                    "ads cluster validation_context.trusted_ca", err, errlen);
            if (cfg->root_pem == NULL)
                rc = -1;
        } else if (rc == 0) {
            xds_cfg_fail(&e, "cluster \"%s\": TLS to the control plane needs validation_context.trusted_ca",
                     cname);
            rc = -1;
        }
        envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__free_unpacked(u, NULL);
        return rc;
    }
    return 0;
}

void xds_client_ads_config_free(struct xds_ads_config *cfg)
{
    free((char *)cfg->root_pem);
    free((char *)cfg->cert_pem);
    if (cfg->key_pem) {
        memset((char *)cfg->key_pem, 0, strlen(cfg->key_pem));
        free((char *)cfg->key_pem);
    }
    free((char *)cfg->sni);
}

/* ---- requests ------------------------------------------------------------- */

void xds_client_send(struct xds_client *c, int type, const char *error)
{
    struct xds_type_state *t = &c->t[type];
    Envoy__Service__Discovery__V3__DiscoveryRequest req = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    req.type_url = (char *)xds_type_urls[type];
    req.version_info = t->version ? t->version : "";
    req.response_nonce = t->nonce ? t->nonce : "";
    if (!xds_type_wildcard(type)) {
        req.n_resource_names = t->subs.n;
        req.resource_names = t->subs.v;
    }
    if (!t->node_sent) {
        req.node = &c->node;
        t->node_sent = 1;
    }
    if (error) {
        st.code = 3; /* INVALID_ARGUMENT */
        st.message = (char *)error;
        req.error_detail = &st;
    }
    if (t->started == 0)
        t->started = xds_now();
    LG_D("xds", "%s request: version \"%s\", nonce \"%s\", %zu name(s)%s", xds_type_short[type],
         req.version_info, req.response_nonce, req.n_resource_names, error ? " (NACK)" : "");
    if (c->on_request)
        c->on_request(c->on_request_ud, &req);
    struct xds_ads *a = __atomic_load_n(&c->ads, __ATOMIC_ACQUIRE);
    if (a) /* NULL offline */
        xds_ads_send(a, &req);
}

void xds_client_stream_up(struct xds_client *c, struct xds_ads *a)
{
    /* The thread may call us before xds_ads_start returned. */
    __atomic_store_n(&c->ads, a, __ATOMIC_RELEASE);
    /* Envoy's order: clusters first, then listeners; then the named
     * subscriptions we already have, with the versions we hold, so that a
     * restarted control plane knows what we have. The nonce belongs to the
     * old stream. */
    static const int order[XDS_T_N] = {XDS_CDS, XDS_EDS, XDS_LDS, XDS_RDS, XDS_SDS};
    for (int k = 0; k < XDS_T_N; k++) {
        int type = order[k];
        struct xds_type_state *t = &c->t[type];
        t->node_sent = 0;
        free(t->nonce);
        t->nonce = NULL;
        if (xds_type_wildcard(type) || t->subs.n > 0)
            xds_client_send(c, type, NULL);
    }
}

/* ---- initial fetch timeouts ------------------------------------------------- */

struct gave_up_log {
    const char *type_name;
    double timeout;
};

static void log_gave_up(void *ud, const char *name)
{
    const struct gave_up_log *lg = ud;
    LG_W("xds", "%s \"%s\" not received within %g s (initial fetch timeout); what "
                "needs it stays warming",
         lg->type_name, name, lg->timeout);
}

int xds_client_expire(struct xds_client *c, double now)
{
    int changed = 0;
    for (int type = 0; type < XDS_T_N; type++) {
        struct xds_type_state *t = &c->t[type];
        if (xds_type_wildcard(type) && !t->got_first && !t->timed_out && t->started > 0 &&
            now - t->started > c->fetch_timeout) {
            t->timed_out = 1;
            LG_W("xds", "no %s response within %g s (initial fetch timeout); going on without",
                 xds_type_short[type], c->fetch_timeout);
            changed = 1;
        }
        struct gave_up_log lg = {xds_type_names[type], c->fetch_timeout};
        if (xds_state_expire(t, now, c->fetch_timeout, log_gave_up, &lg) > 0)
            changed = 1;
    }
    return changed;
}
