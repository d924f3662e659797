#include "dynamic.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/config_build.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "xds/deps.h"
#include "xds/state.h"
#include "xds/strmap.h"
#include "xds/ads.h"
#include "xds/datasource.h"
#include "xds/json.h"
#include "xds/unsupported.h"
#include "xds/log.h"
#include "xds/registry.h"
#include "xds/version.h"

/* Envoy's default initial_fetch_timeout. */
#define INITIAL_FETCH_TIMEOUT 15.0
#define ERR_MAX 4096

enum { T_CDS, T_EDS, T_LDS, T_RDS, T_SDS, T_N };

static const char *const type_urls[T_N] = {
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "type.googleapis.com/envoy.config.listener.v3.Listener",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
};
static const char *const type_names[T_N] = {"cluster", "endpoints", "listener", "route configuration",
                                            "secret"};
static const char *const type_short[T_N] = {"CDS", "EDS", "LDS", "RDS", "SDS"};
/* Stat scopes, Envoy's where Envoy has one per type. */
static const char *const type_stat_scope[T_N] = {"cluster_manager.cds", "cluster_manager.eds",
                                                 "listener_manager.lds", "rds", "sds"};

/* The version as a number for the version gauge: its value when it is one,
 * else a hash (as Envoy does). */
static int64_t version_number(const char *v)
{
    char *end;
    long long n = strtoll(v, &end, 10);
    if (*v && *end == '\0' && n >= 0)
        return n;
    uint64_t h = 14695981039346656037ull;
    for (; *v; v++) {
        h ^= (uint8_t)*v;
        h *= 1099511628211ull;
    }
    return (int64_t)(h & ((1ull << 53) - 1));
}

/* A listener or cluster as built from its resource and references. */
struct built {
    char *name;
    uint64_t hash;               /* of the resource; plus its references' */
    void *obj;                   /* struct dp_listener * or struct dp_cluster * */
};

struct dp_dyn {
    const xds_bootstrap_t *bs;
    const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *default_tls;
    struct dp_dyn_host host;
    struct xds_ads *ads;
    pthread_mutex_t lock;        /* state below vs. admin readers */
    struct xds_type_state t[T_N]; /* published: what admin readers see */
    /* What the ADS thread builds from: &t[type].res, or for the type of a
     * state-of-the-world response being applied, the new set (private until
     * it is published). */
    const struct xds_table *work[T_N];
    struct built *bl;            /* installed listeners */
    size_t n_bl;
    struct built *bc;            /* installed clusters */
    size_t n_bc;
    struct strmap bl_idx, bc_idx; /* name -> index in bl, bc */
    int ready;
    double fetch_timeout;        /* initial_fetch_timeout */
    int allow_expired;           /* accept expired certificates over SDS */
    struct {
        dp_stat_t connected, update_success[T_N], update_rejected[T_N], version[T_N];
    } st;
    Envoy__Config__Core__V3__Node node;
};

/* ---- small helpers ----------------------------------------------------- */

static char *xstrdup0(const char *s)
{
    char *d = strdup(s ? s : "");
    if (d == NULL)
        abort();
    return d;
}

/* Appends "; "-separated messages. */
struct errs {
    char buf[ERR_MAX];
    size_t len;
    int n;
};

__attribute__((format(printf, 2, 3))) static void err_add(struct errs *e, const char *fmt, ...)
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

static const char *res_name(int type, const ProtobufCMessage *m)
{
    switch (type) {
    case T_LDS:
        return ((const Envoy__Config__Listener__V3__Listener *)m)->name;
    case T_RDS:
        return ((const Envoy__Config__Route__V3__RouteConfiguration *)m)->name;
    case T_CDS:
        return ((const Envoy__Config__Cluster__V3__Cluster *)m)->name;
    case T_EDS:
        return ((const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *)m)->cluster_name;
    case T_SDS:
        return ((const Envoy__Extensions__TransportSockets__Tls__V3__Secret *)m)->name;
    }
    return "";
}

/* A secret whose certificate chain starts with an expired certificate:
 * returns -1 with the reason. Serving it would fail every handshake. */
static int secret_expired(const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s, char *err, size_t errlen)
{
    if (s->type_case != ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE ||
        s->tls_certificate == NULL || s->tls_certificate->certificate_chain == NULL)
        return 0;
    char *pem = NULL;
    size_t len = 0;
    char e[256];
    if (xds_datasource_read(s->tls_certificate->certificate_chain, &pem, &len, e, sizeof(e)) < 0)
        return 0; /* the TLS context build reports it */
    int rc = 0;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    if (x && X509_cmp_current_time(X509_get0_notAfter(x)) < 0) {
        char when[64] = "?";
        struct tm tm;
        if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(err, errlen, "tls_certificate.certificate_chain: the certificate expired at %s "
                              "(start legate with --allow-expired-certificates to accept it)", when);
        rc = -1;
    }
    X509_free(x);
    BIO_free(bio);
    free(pem);
    return rc;
}

/* ---- building ---------------------------------------------------------------- */

static const Envoy__Extensions__TransportSockets__Tls__V3__Secret *lookup_secret(void *ud, const char *name)
{
    struct dp_dyn *d = ud;
    struct xds_res *r = xds_table_find(&d->t[T_SDS].res, name);
    if (r)
        return (const Envoy__Extensions__TransportSockets__Tls__V3__Secret *)r->msg;
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = d->bs->static_resources;
    for (size_t i = 0; sr && i < sr->n_secrets; i++)
        if (strcmp(sr->secrets[i]->name, name) == 0)
            return sr->secrets[i];
    return NULL;
}

static const Envoy__Config__Route__V3__RouteConfiguration *lookup_route(void *ud, const char *name)
{
    struct dp_dyn *d = ud;
    struct xds_res *r = xds_table_find(&d->t[T_RDS].res, name);
    return r ? (const Envoy__Config__Route__V3__RouteConfiguration *)r->msg : NULL;
}

enum build_result { B_OK, B_WARMING, B_ERROR };

static int static_secret(void *ud, const char *name)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr =
        ((struct dp_dyn *)ud)->bs->static_resources;
    for (size_t i = 0; sr && i < sr->n_secrets; i++)
        if (strcmp(sr->secrets[i]->name, name) == 0)
            return 1;
    return 0;
}

/* Whether every reference has arrived; the hash of what was referenced is
 * mixed into *h so a reference that changes makes a new object. */
static int refs_present(struct dp_dyn *d, const struct xds_refs *rf, const char *eds, uint64_t *h,
                        char *missing, size_t mlen)
{
    struct xds_deps_src src = {&d->t[T_RDS], &d->t[T_EDS], &d->t[T_SDS], static_secret, d};
    return xds_deps_ready(&src, rf, eds, h, missing, mlen);
}

static struct dp_build_ctx build_ctx(struct dp_dyn *d)
{
    struct dp_build_ctx ctx = {
        .secrets = {.fn = lookup_secret, .ud = d},
        .route_lookup = lookup_route,
        .route_ud = d,
        .default_upstream_tls = d->default_tls,
        .dynamic = 1,
    };
    return ctx;
}

/* The installed listener (T_LDS) or cluster (T_CDS) called name. */
static struct built *built_find(struct dp_dyn *d, int type, const char *name)
{
    size_t i;
    if (type == T_LDS)
        return strmap_get(&d->bl_idx, name, &i) ? &d->bl[i] : NULL;
    return strmap_get(&d->bc_idx, name, &i) ? &d->bc[i] : NULL;
}

/* Builds listener resource r. On B_OK, *out is the new object (or the
 * installed one when nothing changed: *out == cur->obj). */
static enum build_result build_listener(struct dp_dyn *d, struct xds_res *r, void **out, uint64_t *hash,
                                        char *err, size_t errlen)
{
    const Envoy__Config__Listener__V3__Listener *pl = (const Envoy__Config__Listener__V3__Listener *)r->msg;
    struct xds_refs rf = {0};
    xds_refs_collect(r->msg, &rf);
    uint64_t h = r->hash;
    char missing[300];
    int present = refs_present(d, &rf, NULL, &h, missing, sizeof(missing));
    xds_refs_free(&rf);
    *hash = h;
    if (!present) {
        snprintf(err, errlen, "waiting for %s", missing);
        return B_WARMING;
    }
    struct built *cur = built_find(d, T_LDS, r->name);
    if (cur && cur->hash == h) {
        *out = cur->obj;
        return B_OK;
    }
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = d->bs->static_resources;
    for (size_t i = 0; sr && i < sr->n_listeners; i++)
        if (strcmp(sr->listeners[i]->name, pl->name) == 0) {
            snprintf(err, errlen, "name: a static listener is already called \"%s\"", pl->name);
            return B_ERROR;
        }
    struct dp_build_ctx ctx = build_ctx(d);
    char msg[1024];
    struct dp_listener *l = dp_listener_build(pl, &ctx, msg, sizeof(msg));
    if (l == NULL) {
        snprintf(err, errlen, "%s", msg);
        return B_ERROR;
    }
    /* The resource itself, not its secrets: connections accepted under the
     * old version drain only when the listener resource changed. */
    l->hash = r->hash;
    if (d->host.listen_prepare(d->host.ud, l, msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "address: %s", msg);
        dp_listener_unref(l);
        return B_ERROR;
    }
    *out = l;
    return B_OK;
}

static enum build_result build_cluster(struct dp_dyn *d, struct xds_res *r, void **out, uint64_t *hash,
                                       char *err, size_t errlen)
{
    const Envoy__Config__Cluster__V3__Cluster *pc = (const Envoy__Config__Cluster__V3__Cluster *)r->msg;
    struct xds_refs rf = {0};
    xds_refs_collect(r->msg, &rf);
    const char *eds = xds_cluster_eds_name(pc);
    uint64_t h = r->hash;
    char missing[300];
    int present = refs_present(d, &rf, eds, &h, missing, sizeof(missing));
    xds_refs_free(&rf);
    *hash = h;
    if (!present) {
        snprintf(err, errlen, "waiting for %s", missing);
        return B_WARMING;
    }
    struct built *cur = built_find(d, T_CDS, r->name);
    if (cur && cur->hash == h) {
        *out = cur->obj;
        return B_OK;
    }
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = d->bs->static_resources;
    for (size_t i = 0; sr && i < sr->n_clusters; i++)
        if (strcmp(sr->clusters[i]->name, pc->name) == 0) {
            snprintf(err, errlen, "name: a static cluster is already called \"%s\"", pc->name);
            return B_ERROR;
        }
    struct xds_res *cla = eds ? xds_table_find(&d->t[T_EDS].res, eds) : NULL;
    struct dp_build_ctx ctx = build_ctx(d);
    char msg[1024];
    struct dp_cluster *c = dp_cluster_build(
        pc, cla ? (const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *)cla->msg : NULL, &ctx, msg,
        sizeof(msg));
    if (c == NULL) {
        snprintf(err, errlen, "%s", msg);
        return B_ERROR;
    }
    c->hash = h;
    *out = c;
    return B_OK;
}

static void obj_unref(int type, void *obj)
{
    if (type == T_LDS)
        dp_listener_unref(obj);
    else
        dp_cluster_unref(obj);
}

static void built_free(int type, struct built *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        obj_unref(type, v[i].obj);
    }
    free(v);
}

/*
 * Rebuilds every listener (type T_LDS) or cluster (T_CDS) from the current
 * resources. A resource that fails to build is reported in errs and its
 * previously installed version, if any, is kept, as is the installed
 * version of one that is warming. Failed names are added to failed.
 * Returns the new table; *changed says whether it differs from the
 * installed one.
 */
static struct built *rebuild(struct dp_dyn *d, int type, size_t *n_out, int *changed, struct errs *errs,
                             struct xds_names *failed)
{
    const struct xds_table *t = d->work[type];
    size_t n_cur = type == T_LDS ? d->n_bl : d->n_bc;
    struct built *nv = calloc(t->n + n_cur + 1, sizeof(*nv));
    size_t n = 0;
    if (nv == NULL)
        abort();
    *changed = 0;
    for (size_t i = 0; i < t->n; i++) {
        struct xds_res *r = &t->v[i];
        void *obj = NULL;
        uint64_t h = 0;
        char err[1200];
        enum build_result br = type == T_LDS ? build_listener(d, r, &obj, &h, err, sizeof(err))
                                             : build_cluster(d, r, &obj, &h, err, sizeof(err));
        struct built *old = built_find(d, type, r->name);
        if (br == B_OK) {
            if (old && old->obj == obj) {
                nv[n] = (struct built){xstrdup0(r->name), old->hash, obj};
            } else {
                nv[n] = (struct built){xstrdup0(r->name), h, obj};
                *changed = 1;
                obj = NULL;
            }
            if (obj) {
                if (type == T_LDS)
                    dp_listener_ref(obj);
                else
                    dp_cluster_ref(obj);
            }
            n++;
            continue;
        }
        if (br == B_ERROR) {
            err_add(errs, "%s \"%s\": %s", type_names[type], r->name, err);
            xds_names_add(failed, r->name);
        } else {
            LG_D("xds", "%s \"%s\" is warming: %s", type_names[type], r->name, err);
        }
        if (old) {
            nv[n] = (struct built){xstrdup0(old->name), old->hash, old->obj};
            if (type == T_LDS)
                dp_listener_ref(old->obj);
            else
                dp_cluster_ref(old->obj);
            n++;
        }
    }
    if (!*changed) {
        /* Names in nv are unique and each was installed: a removal shows as
         * fewer entries. */
        size_t kept = 0;
        for (size_t i = 0; i < n; i++)
            kept += built_find(d, type, nv[i].name) != NULL;
        if (kept != n_cur)
            *changed = 1;
    }
    *n_out = n;
    return nv;
}

static void install(struct dp_dyn *d, struct built *bl, size_t n_bl, struct built *bc, size_t n_bc)
{
    struct dp_listener **ls = calloc(n_bl + 1, sizeof(*ls));
    struct dp_cluster **cs = calloc(n_bc + 1, sizeof(*cs));
    if (ls == NULL || cs == NULL)
        abort();
    for (size_t i = 0; i < n_bl; i++)
        ls[i] = bl[i].obj;
    for (size_t i = 0; i < n_bc; i++)
        cs[i] = bc[i].obj;
    d->host.install(d->host.ud, ls, n_bl, cs, n_bc);
    free(ls);
    free(cs);
    pthread_mutex_lock(&d->lock);
    built_free(T_LDS, d->bl, d->n_bl);
    built_free(T_CDS, d->bc, d->n_bc);
    d->bl = bl;
    d->n_bl = n_bl;
    d->bc = bc;
    d->n_bc = n_bc;
    strmap_clear(&d->bl_idx);
    for (size_t i = 0; i < n_bl; i++)
        strmap_put(&d->bl_idx, bl[i].name, i);
    strmap_clear(&d->bc_idx);
    for (size_t i = 0; i < n_bc; i++)
        strmap_put(&d->bc_idx, bc[i].name, i);
    pthread_mutex_unlock(&d->lock);
}

/* ---- subscriptions ----------------------------------------------------------- */

static void send_request(struct dp_dyn *d, int type, const char *error)
{
    struct xds_type_state *t = &d->t[type];
    Envoy__Service__Discovery__V3__DiscoveryRequest req = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    req.type_url = (char *)type_urls[type];
    req.version_info = t->version ? t->version : "";
    req.response_nonce = t->nonce ? t->nonce : "";
    if (type != T_LDS && type != T_CDS) {
        req.n_resource_names = t->subs.n;
        req.resource_names = t->subs.v;
    }
    if (!t->node_sent) {
        req.node = &d->node;
        t->node_sent = 1;
    }
    if (error) {
        st.code = 3; /* INVALID_ARGUMENT */
        st.message = (char *)error;
        req.error_detail = &st;
    }
    if (t->started == 0)
        t->started = xds_now();
    LG_D("xds", "%s request: version \"%s\", nonce \"%s\", %zu name(s)%s", type_short[type],
         req.version_info, req.response_nonce, req.n_resource_names, error ? " (NACK)" : "");
    struct xds_ads *a = __atomic_load_n(&d->ads, __ATOMIC_ACQUIRE);
    if (a) /* NULL for dp_dyn_new_offline */
        xds_ads_send(a, &req);
}

/* Recomputes what RDS, EDS and SDS must subscribe to from the listeners and
 * clusters we have; sends a request for each type whose names changed. */
/* What RDS, EDS and SDS must subscribe to, from the listeners and clusters
 * being built (d->work); no lock needed (this thread alone changes them). */
static void wanted(struct dp_dyn *d, struct xds_names want[T_N])
{
    xds_deps_wanted(d->work[T_LDS], d->work[T_CDS], &want[T_RDS], &want[T_EDS], &want[T_SDS]);
}

/* Makes want the subscriptions (d->lock held); the types whose names
 * changed (and are not empty) are flagged in resend: their requests go
 * out once the lock is released (send_resubscribed). */
static void resubscribe(struct dp_dyn *d, struct xds_names want[T_N], int resend[T_N])
{
    double now = xds_now();
    for (int type = 0; type < T_N; type++) {
        resend[type] = 0;
        if (type == T_LDS || type == T_CDS)
            continue;
        resend[type] = xds_state_subscribe(&d->t[type], &want[type], now) && d->t[type].subs.n > 0;
    }
}

static void send_resubscribed(struct dp_dyn *d, const int resend[T_N])
{
    for (int type = 0; type < T_N; type++)
        if (resend[type])
            send_request(d, type, NULL);
}

/* ---- readiness ------------------------------------------------------------------ */

static void update_ready(struct dp_dyn *d)
{
    if (d->ready)
        return;
    for (int type = 0; type < T_N; type++) {
        struct xds_type_state *t = &d->t[type];
        if (type == T_LDS || type == T_CDS) {
            if (!t->got_first && !t->timed_out)
                return;
            continue;
        }
        if (!xds_state_complete(t))
            return;
    }
    /* Everything referenced is here: whatever still does not build is an
     * error that was NACKed, not something to wait for. */
    d->ready = 1;
    LG_I("xds", "initial configuration applied: %zu listener(s), %zu cluster(s)", d->n_bl, d->n_bc);
}

/* ---- responses ---------------------------------------------------------------------- */

static int type_of(const char *url)
{
    for (int i = 0; i < T_N; i++)
        if (strcmp(url, type_urls[i]) == 0)
            return i;
    return -1;
}

/* Rebuilds listeners and clusters and installs them if anything changed.
 * Errors are charged to the resources that failed (their names in
 * failed[T_CDS] and failed[T_LDS]). */
static void rebuild_and_install(struct dp_dyn *d, struct errs *errs, struct xds_names *failed)
{
    size_t n_bc, n_bl;
    int ch_c, ch_l;
    /* Routes name clusters, resolved per request: the order does not matter. */
    struct built *bc = rebuild(d, T_CDS, &n_bc, &ch_c, errs, &failed[T_CDS]);
    struct built *bl = rebuild(d, T_LDS, &n_bl, &ch_l, errs, &failed[T_LDS]);
    if (ch_c || ch_l) {
        install(d, bl, n_bl, bc, n_bc);
    } else {
        built_free(T_CDS, bc, n_bc);
        built_free(T_LDS, bl, n_bl);
    }
}

/*
 * A referenced resource (RDS, EDS, SDS) changed: try it; if a listener or
 * cluster that uses it fails to build with it, the caller puts the old one
 * back and the error is charged to this resource.
 */
/* Rebuilds with the resources as they are now and installs the result if
 * every listener and cluster built; else installs nothing, says why in
 * trial and returns -1. */
static int rebuild_all_or_nothing(struct dp_dyn *d, struct errs *trial)
{
    struct xds_names failed[T_N] = {{0}};
    size_t n_bc, n_bl;
    int ch_c, ch_l;
    struct built *bc = rebuild(d, T_CDS, &n_bc, &ch_c, trial, &failed[T_CDS]);
    struct built *bl = rebuild(d, T_LDS, &n_bl, &ch_l, trial, &failed[T_LDS]);
    int rc = failed[T_CDS].n || failed[T_LDS].n ? -1 : 0;
    xds_names_free(&failed[T_CDS]);
    xds_names_free(&failed[T_LDS]);
    if (rc == 0 && (ch_c || ch_l)) {
        install(d, bl, n_bl, bc, n_bc);
    } else {
        built_free(T_CDS, bc, n_bc);
        built_free(T_LDS, bl, n_bl);
    }
    return rc;
}

static int try_dependency(struct dp_dyn *d, int type, const char *name, struct errs *errs)
{
    struct errs trial = {0};
    if (rebuild_all_or_nothing(d, &trial) < 0) {
        err_add(errs, "%s \"%s\": rejected: %s", type_names[type], name, trial.buf);
        return -1;
    }
    return 0;
}

/*
 * Puts the (validated) resources msgs[0..n) of a named type in place and
 * rebuilds once. On success they are installed and msgs[] is emptied; on a
 * build failure everything is put back as it was and -1 is returned.
 */
static int apply_together(struct dp_dyn *d, int type, const char *version, ProtobufCMessage **msgs,
                          const uint64_t *hashes, size_t n)
{
    struct xds_table *t = &d->t[type].res;
    struct xds_res *olds = calloc(n + 1, sizeof(*olds));
    if (olds == NULL)
        abort();
    size_t staged = 0;
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < n; i++) {
        if (msgs[i] == NULL)
            continue;
        xds_table_set(t, res_name(type, msgs[i]), version, msgs[i], hashes[i], &olds[i]);
        staged++;
    }
    pthread_mutex_unlock(&d->lock);
    int rc = 0;
    if (staged > 0) {
        struct errs trial = {0};
        rc = rebuild_all_or_nothing(d, &trial);
    }
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < n; i++) {
        if (msgs[i] == NULL)
            continue;
        if (rc == 0) {
            xds_res_clear(&olds[i]);
            msgs[i] = NULL; /* the table has it */
            continue;
        }
        const char *name = res_name(type, msgs[i]);
        struct xds_res *slot = xds_table_find(t, name);
        slot->msg = NULL; /* msgs[i] stays the caller's */
        if (olds[i].name) {
            xds_res_clear(slot);
            *slot = olds[i];
        } else {
            xds_table_take(t, name, NULL);
        }
    }
    pthread_mutex_unlock(&d->lock);
    free(olds);
    return rc;
}

static void on_response(void *ud, struct xds_ads *a,
                        const Envoy__Service__Discovery__V3__DiscoveryResponse *resp)
{
    struct dp_dyn *d = ud;
    __atomic_store_n(&d->ads, a, __ATOMIC_RELEASE);
    dp_stat_set(d->st.connected, 1);
    int type = type_of(resp->type_url);
    if (type < 0) {
        LG_W("xds", "ignoring a response of type %s, which legate does not subscribe to", resp->type_url);
        return;
    }
    struct xds_type_state *t = &d->t[type];
    struct errs errs = {0};
    struct xds_names refused = {0}; /* resources that set a field legate does not implement */
    const ProtobufCMessageDescriptor *desc = xds_registry_lookup(type_urls[type]);
    double began = xds_now();

    /* Decode everything first. A state-of-the-world response (LDS, CDS)
     * sends every resource each time: one sent again byte for byte takes
     * over the decoded message it had (reused[i]) instead of decoding. */
    size_t n = resp->n_resources;
    ProtobufCMessage **msgs = calloc(n + 1, sizeof(*msgs));
    uint64_t *hashes = calloc(n + 1, sizeof(*hashes));
    size_t *reused = calloc(n + 1, sizeof(*reused)); /* the table's index + 1, or 0 */
    struct strmap seen = {0};
    struct strmap prev = {0};
    int sotw = type == T_LDS || type == T_CDS;
    if (msgs == NULL || hashes == NULL || reused == NULL)
        abort();
    /* This thread alone changes the tables: it reads them without the lock. */
    if (sotw)
        xds_table_by_hash(&t->res, &prev);
    for (size_t i = 0; i < n; i++) {
        const Google__Protobuf__Any *any = resp->resources[i];
        if (strcmp(any->type_url, type_urls[type]) != 0) {
            err_add(&errs, "resources[%zu]: type %s in a response of type %s", i, any->type_url,
                    type_urls[type]);
            continue;
        }
        hashes[i] = xds_any_hash(any);
        size_t at;
        if (sotw && xds_by_hash_take(&prev, hashes[i], &at)) {
            msgs[i] = t->res.v[at].msg; /* the table's entry gives it up below */
            reused[i] = at + 1;
        } else {
            msgs[i] = protobuf_c_message_unpack(desc, NULL, any->value.len, any->value.data);
        }
        if (msgs[i] == NULL) {
            err_add(&errs, "resources[%zu]: not a valid %s", i, xds_type_url_name(type_urls[type]));
            continue;
        }
        const char *name = res_name(type, msgs[i]);
        if (name[0] == '\0') {
            err_add(&errs, "resources[%zu]: %s without a name", i, type_names[type]);
            if (!reused[i])
                protobuf_c_message_free_unpacked(msgs[i], NULL);
            msgs[i] = NULL;
            continue;
        }
        if (strmap_get(&seen, name, NULL)) {
            err_add(&errs, "resources[%zu]: %s \"%s\" appears twice", i, type_names[type], name);
            if (!reused[i])
                protobuf_c_message_free_unpacked(msgs[i], NULL);
            msgs[i] = NULL;
            continue;
        }
        char uerr[600];
        if (!reused[i] && xds_check_unsupported(msgs[i], "", uerr, sizeof(uerr)) < 0) {
            /* refused whole: the last good version of it stays */
            err_add(&errs, "%s \"%s\": %s", type_names[type], name, uerr);
            xds_names_add(&refused, name);
            protobuf_c_message_free_unpacked(msgs[i], NULL);
            msgs[i] = NULL;
            continue;
        }
        strmap_put(&seen, name, i);
    }
    strmap_free(&seen);
    strmap_free(&prev);

    /* State of the world (LDS, CDS): the response is the whole set. It is
     * built aside in nt while the published table stays as it was for
     * admin readers; the messages nt shares with it (sent again unchanged,
     * or kept because the new version was refused or failed) are lent:
     * the published entry gives them up when nt replaces it (commit). */
    struct xds_table nt = {0};
    size_t *lent = NULL, n_lent = 0; /* indices in t->res */
    if (sotw) {
        const struct xds_table *cur = &t->res;
        lent = calloc(cur->n + 1, sizeof(*lent));
        if (lent == NULL)
            abort();
        for (size_t i = 0; i < n; i++) {
            if (msgs[i] == NULL)
                continue;
            struct xds_res r = {xstrdup0(res_name(type, msgs[i])), xstrdup0(resp->version_info), msgs[i],
                                hashes[i]};
            xds_table_append(&nt, &r);
            if (reused[i])
                lent[n_lent++] = reused[i] - 1;
            msgs[i] = NULL;
        }
        for (size_t i = 0; i < refused.n; i++) {
            /* refused: what served under that name goes on serving (unless
             * the response also brought a good copy of that name) */
            const struct xds_res *o = xds_table_find(cur, refused.v[i]);
            if (o && o->msg && xds_table_find(&nt, refused.v[i]) == NULL) {
                struct xds_res r = {xstrdup0(o->name), xstrdup0(o->version), o->msg, o->hash};
                xds_table_append(&nt, &r);
                lent[n_lent++] = (size_t)(o - cur->v);
            }
        }
        /* Build; what fails keeps its installed version (rebuild does that). */
        struct xds_names failed[T_N] = {{0}};
        d->work[type] = &nt;
        rebuild_and_install(d, &errs, failed);
        d->work[type] = &t->res;
        /* A rejected resource: the table keeps the version that serves (the
         * old one), or nothing when it is new, so that references, dumps and
         * the next rebuild see what is installed. */
        for (size_t i = 0; i < failed[type].n; i++) {
            const char *name = failed[type].v[i];
            struct xds_res *r = xds_table_find(&nt, name);
            const struct xds_res *o = xds_table_find(cur, name);
            if (r == NULL)
                continue;
            if (o && o->msg == r->msg)
                continue; /* the same resource */
            /* r's message is its own: one lent has the name it came with */
            if (o) {
                xds_res_clear(r);
                *r = (struct xds_res){xstrdup0(o->name), xstrdup0(o->version), o->msg, o->hash};
                lent[n_lent++] = (size_t)(o - cur->v);
            } else {
                xds_table_take(&nt, name, NULL);
            }
        }
        xds_names_free(&failed[T_CDS]);
        xds_names_free(&failed[T_LDS]);
    } else {
        /* Each resource on its own first. */
        for (size_t i = 0; i < n; i++) {
            if (msgs[i] == NULL)
                continue;
            const char *name = res_name(type, msgs[i]);
            char eerr[300];
            int bad = 0;
            if (!xds_names_has(&t->subs, name)) {
                LG_D("xds", "%s: ignoring \"%s\", not subscribed", type_short[type], name);
                bad = 1;
            } else if (type == T_SDS && !d->allow_expired &&
                       secret_expired((const Envoy__Extensions__TransportSockets__Tls__V3__Secret *)msgs[i],
                                      eerr, sizeof(eerr)) < 0) {
                err_add(&errs, "secret \"%s\": %s", name, eerr);
                bad = 1;
            } else if (type == T_EDS) {
                struct dp_endpoint_set *eps = dp_endpoints_build(
                    (const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *)msgs[i], eerr, sizeof(eerr));
                if (eps == NULL) {
                    err_add(&errs, "endpoints \"%s\": %s", name, eerr);
                    bad = 1;
                }
                dp_endpoint_set_unref(eps);
            }
            if (bad) {
                protobuf_c_message_free_unpacked(msgs[i], NULL);
                msgs[i] = NULL;
            }
        }
        /* Then all of them at once, with one rebuild of what uses them; one
         * by one only when that fails, to charge the error to the resource
         * that caused it. */
        int together = apply_together(d, type, resp->version_info, msgs, hashes, n) == 0;
        for (size_t i = 0; i < n && !together; i++) {
            if (msgs[i] == NULL)
                continue;
            const char *name = res_name(type, msgs[i]);
            pthread_mutex_lock(&d->lock);
            struct xds_res old;
            xds_table_set(&t->res, name, resp->version_info, msgs[i], hashes[i], &old);
            msgs[i] = NULL;
            pthread_mutex_unlock(&d->lock);
            if (try_dependency(d, type, name, &errs) < 0) {
                pthread_mutex_lock(&d->lock);
                struct xds_res *slot = xds_table_find(&t->res, name);
                if (old.name) {
                    xds_res_clear(slot);
                    *slot = old;
                } else {
                    xds_table_take(&t->res, name, NULL);
                }
                pthread_mutex_unlock(&d->lock);
            } else {
                xds_res_clear(&old);
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        if (msgs[i])
            protobuf_c_message_free_unpacked(msgs[i], NULL);
    free(msgs);
    free(hashes);
    free(reused);
    xds_names_free(&refused);

    if (errs.n) {
        dp_stat_add(d->st.update_rejected[type], 1);
        LG_W("xds", "%s version %s rejected: %s", type_short[type], resp->version_info, errs.buf);
    } else {
        dp_stat_add(d->st.update_success[type], 1);
        dp_stat_set(d->st.version[type], version_number(resp->version_info));
        if (type == T_SDS)
            for (size_t i = 0; i < resp->n_resources; i++) {
                /* per secret: sds.<name>.update_success */
                const Google__Protobuf__Any *any = resp->resources[i];
                Envoy__Extensions__TransportSockets__Tls__V3__Secret *sec =
                    envoy__extensions__transport_sockets__tls__v3__secret__unpack(NULL, any->value.len,
                                                                                  any->value.data);
                if (sec) {
                    dp_stat_add(dp_stat_register(DP_STAT_COUNTER, "sds", sec->name, "update_success"), 1);
                    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(sec, NULL);
                }
            }
        LG_I("xds", "%s version %s applied (%zu resource(s)) in %.1f ms", type_short[type], resp->version_info,
             n, (xds_now() - began) * 1000);
    }

    /* Commit: one short critical section publishes the new set, the
     * nonce, the accepted version and the subscriptions (computed before). */
    struct xds_names want[T_N] = {{0}};
    int resend[T_N];
    if (sotw)
        d->work[type] = &nt;
    wanted(d, want);
    d->work[type] = &t->res;
    struct xds_table old = {0};
    pthread_mutex_lock(&d->lock);
    if (sotw) {
        for (size_t k = 0; k < n_lent; k++)
            t->res.v[lent[k]].msg = NULL;
        old = t->res;
        t->res = nt;
    }
    xds_set_str(&t->nonce, resp->nonce);
    t->got_first = 1;
    if (errs.n == 0)
        xds_set_str(&t->version, resp->version_info);
    resubscribe(d, want, resend);
    update_ready(d);
    pthread_mutex_unlock(&d->lock);
    xds_table_free(&old);
    free(lent);
    for (int k = 0; k < T_N; k++)
        xds_names_free(&want[k]);

    /* ACK or NACK, then what the new references need. */
    send_request(d, type, errs.n ? errs.buf : NULL);
    send_resubscribed(d, resend);
}

static void on_stream_up(void *ud, struct xds_ads *a)
{
    struct dp_dyn *d = ud;
    /* The thread may call us before xds_ads_start returned to dp_dyn_start. */
    __atomic_store_n(&d->ads, a, __ATOMIC_RELEASE);
    pthread_mutex_lock(&d->lock);
    /* Envoy's order: clusters first, then listeners; then the named
     * subscriptions we already have, with the versions we hold, so that a
     * restarted control plane knows what we have. The nonce belongs to the
     * old stream. */
    static const int order[T_N] = {T_CDS, T_EDS, T_LDS, T_RDS, T_SDS};
    for (int k = 0; k < T_N; k++) {
        int type = order[k];
        struct xds_type_state *t = &d->t[type];
        t->node_sent = 0;
        free(t->nonce);
        t->nonce = NULL;
        if (type == T_LDS || type == T_CDS || t->subs.n > 0)
            send_request(d, type, NULL);
    }
    pthread_mutex_unlock(&d->lock);
}

static void on_stream_down(void *ud, struct xds_ads *a, const char *why)
{
    struct dp_dyn *d = ud;
    (void)a;
    (void)why;
    dp_stat_set(d->st.connected, 0);
    /* Keep serving everything we have. */
}

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

static double on_tick(void *ud, struct xds_ads *a)
{
    struct dp_dyn *d = ud;
    (void)a;
    double now = xds_now();
    int changed = 0;
    pthread_mutex_lock(&d->lock);
    for (int type = 0; type < T_N; type++) {
        struct xds_type_state *t = &d->t[type];
        if ((type == T_LDS || type == T_CDS) && !t->got_first && !t->timed_out && t->started > 0 &&
            now - t->started > d->fetch_timeout) {
            t->timed_out = 1;
            LG_W("xds", "no %s response within %g s (initial fetch timeout); going on without",
                 type_short[type], d->fetch_timeout);
            changed = 1;
        }
        struct gave_up_log lg = {type_names[type], d->fetch_timeout};
        if (xds_state_expire(t, now, d->fetch_timeout, log_gave_up, &lg) > 0)
            changed = 1;
    }
    pthread_mutex_unlock(&d->lock);
    if (changed) {
        struct errs errs = {0};
        struct xds_names failed[T_N] = {{0}};
        rebuild_and_install(d, &errs, failed); /* EDS given up: clusters with no endpoints */
        xds_names_free(&failed[T_CDS]);
        xds_names_free(&failed[T_LDS]);
        pthread_mutex_lock(&d->lock);
        update_ready(d);
        pthread_mutex_unlock(&d->lock);
    }
    return 0.1;
}

static const struct xds_ads_ops ads_ops = {
    .stream_up = on_stream_up,
    .response = on_response,
    .stream_down = on_stream_down,
    .tick = on_tick,
};

/* ---- start and stop ------------------------------------------------------------------ */

static double dur_s(const Google__Protobuf__Duration *d, double dflt)
{
    return d ? (double)d->seconds + (double)d->nanos / 1e9 : dflt;
}

static char *read_ds(const Envoy__Config__Core__V3__DataSource *ds, const char *field, char *err,
                     size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    char e[256];
    if (ds == NULL)
        return NULL;
    if (xds_datasource_read(ds, &buf, &len, e, sizeof(e)) < 0) {
        snprintf(err, errlen, "%s: %s", field, e);
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

/* The ADS target and credentials from the static cluster the bootstrap
 * names. */
static int ads_config(const xds_bootstrap_t *bs, struct xds_ads_config *cfg, char *target, size_t tlen,
                      char *err, size_t errlen)
{
    const Envoy__Config__Core__V3__ApiConfigSource *ac = bs->dynamic_resources->ads_config;
    const Envoy__Config__Core__V3__GrpcService *gs = ac->grpc_services[0];
    const char *cname = gs->envoy_grpc->cluster_name;
    const Envoy__Config__Cluster__V3__Cluster *c = NULL;
    for (size_t i = 0; i < bs->static_resources->n_clusters; i++)
        if (strcmp(bs->static_resources->clusters[i]->name, cname) == 0)
            c = bs->static_resources->clusters[i];
    const char *cpath = "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name";
    if (c == NULL || c->load_assignment == NULL || c->load_assignment->n_endpoints == 0 ||
        c->load_assignment->endpoints[0]->n_lb_endpoints == 0) {
        snprintf(err, errlen, "%s: cluster \"%s\" has no endpoint", cpath, cname);
        return -1;
    }
    const Envoy__Config__Endpoint__V3__LbEndpoint *lb = c->load_assignment->endpoints[0]->lb_endpoints[0];
    const Envoy__Config__Core__V3__SocketAddress *sa =
        lb->endpoint && lb->endpoint->address ? lb->endpoint->address->socket_address : NULL;
    if (sa == NULL) {
        snprintf(err, errlen, "%s: cluster \"%s\": its endpoint needs a socket_address", cpath, cname);
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
            snprintf(err, errlen, "cluster \"%s\": transport_socket: not an UpstreamTlsContext", cname);
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
            snprintf(err, errlen, "cluster \"%s\": TLS to the control plane needs validation_context.trusted_ca",
                     cname);
            rc = -1;
        }
        envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__free_unpacked(u, NULL);
        return rc;
    }
    return 0;
}

static void free_cfg_secrets(struct xds_ads_config *cfg)
{
    free((char *)cfg->root_pem);
    free((char *)cfg->cert_pem);
    if (cfg->key_pem) {
        memset((char *)cfg->key_pem, 0, strlen(cfg->key_pem));
        free((char *)cfg->key_pem);
    }
    free((char *)cfg->sni);
}

struct dp_dyn *dp_dyn_new_offline(const xds_bootstrap_t *bs,
                                  const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *default_tls,
                                  int allow_expired, const struct dp_dyn_host *host)
{
    struct dp_dyn *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    d->bs = bs;
    d->default_tls = default_tls;
    d->st.connected = dp_stat_register(DP_STAT_GAUGE, "control_plane", NULL, "connected_state");
    for (int type = 0; type < T_N; type++) {
        d->st.update_success[type] = dp_stat_register(DP_STAT_COUNTER, type_stat_scope[type], NULL, "update_success");
        d->st.update_rejected[type] = dp_stat_register(DP_STAT_COUNTER, type_stat_scope[type], NULL, "update_rejected");
        d->st.version[type] = dp_stat_register(DP_STAT_GAUGE, type_stat_scope[type], NULL, "version");
    }
    for (int type = 0; type < T_N; type++) {
        d->t[type].type_url = type_urls[type];
        d->work[type] = &d->t[type].res;
    }
    d->allow_expired = allow_expired;
    d->host = *host;
    pthread_mutex_init(&d->lock, NULL);
    /* Envoy's default, or what lds_config (else cds_config) says; 0 means
     * wait for ever. */
    const Envoy__Config__Core__V3__ConfigSource *cs =
        bs->dynamic_resources->lds_config ? bs->dynamic_resources->lds_config : bs->dynamic_resources->cds_config;
    d->fetch_timeout = cs && cs->initial_fetch_timeout ? dur_s(cs->initial_fetch_timeout, INITIAL_FETCH_TIMEOUT)
                                                       : INITIAL_FETCH_TIMEOUT;
    if (d->fetch_timeout <= 0)
        d->fetch_timeout = 1e12;
    d->node = *bs->node;
    d->node.user_agent_name = "legate";
    d->node.user_agent_version_type_case =
        ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_VERSION;
    d->node.user_agent_version = LEGATE_VERSION;
    return d;
}

void dp_dyn_apply(struct dp_dyn *d, const Envoy__Service__Discovery__V3__DiscoveryResponse *resp)
{
    on_response(d, __atomic_load_n(&d->ads, __ATOMIC_ACQUIRE), resp);
}

struct dp_dyn *dp_dyn_start(const xds_bootstrap_t *bs,
                            const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *default_tls,
                            int allow_expired, const struct dp_dyn_host *host, char *err, size_t errlen)
{
    struct xds_ads_config cfg = {0};
    char target[300];
    if (ads_config(bs, &cfg, target, sizeof(target), err, errlen) < 0) {
        free_cfg_secrets(&cfg);
        return NULL;
    }
    struct dp_dyn *d = dp_dyn_new_offline(bs, default_tls, allow_expired, host);
    if (d == NULL) {
        free_cfg_secrets(&cfg);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    LG_I("xds", "ADS to %s (%s), node \"%s\"", cfg.target, cfg.root_pem ? "TLS" : "plaintext", d->node.id);
    struct xds_ads *ads = xds_ads_start(&cfg, &ads_ops, d);
    free_cfg_secrets(&cfg);
    __atomic_store_n(&d->ads, ads, __ATOMIC_RELEASE);
    if (ads == NULL) {
        snprintf(err, errlen, "cannot start the ADS client");
        pthread_mutex_destroy(&d->lock);
        free(d);
        return NULL;
    }
    return d;
}

void dp_dyn_stop(struct dp_dyn *d)
{
    if (d == NULL)
        return;
    xds_ads_stop(d->ads);
    for (int type = 0; type < T_N; type++)
        xds_state_free(&d->t[type]);
    built_free(T_LDS, d->bl, d->n_bl);
    built_free(T_CDS, d->bc, d->n_bc);
    strmap_free(&d->bl_idx);
    strmap_free(&d->bc_idx);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

int dp_dyn_ready(struct dp_dyn *d)
{
    pthread_mutex_lock(&d->lock);
    int r = d->ready;
    pthread_mutex_unlock(&d->lock);
    return r;
}

/* ---- admin views ------------------------------------------------------------------------- */

char *dp_dyn_config_dump(struct dp_dyn *d)
{
    static const char *const keys[T_N] = {"clusters", "endpoints", "listeners", "route_configs", "secrets"};
    struct xds_sb b = {0};
    pthread_mutex_lock(&d->lock);
    xds_sb_add(&b, "{", 1);
    for (int type = 0; type < T_N; type++) {
        struct xds_type_state *t = &d->t[type];
        xds_sb_addf(&b, "%s\"%s\":{\"version_info\":", type ? "," : "", keys[type]);
        xds_sb_str(&b, t->version ? t->version : "");
        xds_sb_add(&b, ",\"resources\":[", 14);
        for (size_t i = 0; i < t->res.n; i++) {
            const struct xds_res *r = &t->res.v[i];
            int warming = 0;
            if (type == T_LDS)
                warming = built_find(d, T_LDS, r->name) == NULL;
            else if (type == T_CDS)
                warming = built_find(d, T_CDS, r->name) == NULL;
            xds_sb_addf(&b, "%s{\"name\":", i ? "," : "");
            xds_sb_str(&b, r->name);
            xds_sb_add(&b, ",\"version_info\":", 16);
            xds_sb_str(&b, r->version);
            xds_sb_addf(&b, ",\"state\":\"%s\",\"resource\":", warming ? "warming" : "active");
            xds_json_message(&b, r->msg);
            xds_sb_add(&b, "}", 1);
        }
        xds_sb_add(&b, "]", 1);
        if (type != T_LDS && type != T_CDS) {
            xds_sb_add(&b, ",\"subscribed\":[", 15);
            for (size_t i = 0; i < t->subs.n; i++) {
                if (i)
                    xds_sb_add(&b, ",", 1);
                xds_sb_str(&b, t->subs.v[i]);
            }
            xds_sb_add(&b, "]", 1);
        }
        xds_sb_add(&b, "}", 1);
    }
    xds_sb_add(&b, "}", 1);
    pthread_mutex_unlock(&d->lock);
    return b.p;
}

void dp_dyn_each_secret(struct dp_dyn *d,
                        void (*fn)(void *arg, const char *name, const char *version,
                                   const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s),
                        void *arg)
{
    pthread_mutex_lock(&d->lock);
    const struct xds_table *t = &d->t[T_SDS].res;
    for (size_t i = 0; i < t->n; i++)
        fn(arg, t->v[i].name, t->v[i].version,
           (const Envoy__Extensions__TransportSockets__Tls__V3__Secret *)t->v[i].msg);
    pthread_mutex_unlock(&d->lock);
}
