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

/* One accepted resource. */
struct res {
    char *name;
    char *version;               /* version_info of the response that brought it */
    ProtobufCMessage *msg;
    uint64_t hash;               /* of its bytes */
};

struct names {
    char **v;
    size_t n, cap;
    struct strmap set;           /* of v, once there are more than a few */
};

struct tstate {
    struct res *v;
    size_t n, cap;
    struct strmap idx;           /* name -> slot in v, for v[0 .. idx_upto) */
    size_t idx_upto;
    int idx_dirty;               /* slots moved: rebuild idx before use */
    char *version;               /* last accepted version_info */
    char *nonce;                 /* last nonce seen */
    struct names subs;           /* RDS, EDS, SDS: names asked for */
    double *since;               /* parallel to subs: when first asked for */
    int *gave_up;                /* parallel to subs: 0 waiting, 1 given up (initial fetch
                                    timeout), 2 arrived in time (never looked at again) */
    int node_sent;               /* on this stream */
    int got_first;               /* a first response arrived (ever) */
    double started;              /* first request (ever) */
    int timed_out;               /* LDS/CDS: initial fetch gave up */
};

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
    struct tstate t[T_N];
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

static uint64_t fnv(const uint8_t *p, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* A resource's hash: of its bytes as they came (what a control plane sends
 * again unchanged hashes the same, and needs no decoding to tell). */
static uint64_t bytes_hash(const Google__Protobuf__Any *any)
{
    uint64_t h = fnv(any->value.data, any->value.len, 14695981039346656037ull);
    return fnv((const uint8_t *)&any->value.len, sizeof(any->value.len), h);
}

/* Resources by hash, to find those a state-of-the-world response sends
 * again unchanged. Open addressing; slots hold index + 1 (0: empty). */
struct by_hash {
    uint64_t *k;
    size_t *v;
    size_t mask;
};

static void by_hash_init(struct by_hash *m, const struct tstate *t)
{
    size_t cap = 16;
    while (cap < t->n * 2)
        cap *= 2;
    m->k = calloc(cap, sizeof(*m->k));
    m->v = calloc(cap, sizeof(*m->v));
    if (m->k == NULL || m->v == NULL)
        abort();
    m->mask = cap - 1;
    for (size_t i = 0; i < t->n; i++) {
        if (t->v[i].msg == NULL)
            continue;
        size_t j = t->v[i].hash & m->mask;
        while (m->v[j])
            j = (j + 1) & m->mask;
        m->k[j] = t->v[i].hash;
        m->v[j] = i + 1;
    }
}

/* The index of an unclaimed resource with hash h, which is then claimed
 * (a duplicate in the response decodes on its own and is refused by name). */
static int by_hash_take(struct by_hash *m, uint64_t h, size_t *at)
{
    for (size_t j = h & m->mask; m->v[j]; j = (j + 1) & m->mask) {
        if (m->k[j] == h && m->v[j] != SIZE_MAX) {
            *at = m->v[j] - 1;
            m->v[j] = SIZE_MAX; /* claimed; keeps the probe chain */
            return 1;
        }
    }
    return 0;
}

static void by_hash_free(struct by_hash *m)
{
    free(m->k);
    free(m->v);
}

#define NAMES_LINEAR 8

/* Where s is in n->v. */
static int names_index(struct names *n, const char *s, size_t *at)
{
    if (n->n <= NAMES_LINEAR) {
        for (size_t i = 0; i < n->n; i++)
            if (strcmp(n->v[i], s) == 0) {
                *at = i;
                return 1;
            }
        return 0;
    }
    /* The set grows with v (names_add), goes with it (names_free) and is
     * emptied when v is reordered. */
    if (n->set.n != n->n) {
        strmap_clear(&n->set);
        for (size_t i = 0; i < n->n; i++)
            strmap_put(&n->set, n->v[i], i);
    }
    return strmap_get(&n->set, s, at);
}

static int names_has(struct names *n, const char *s)
{
    size_t at;
    return names_index(n, s, &at);
}

static void names_add(struct names *n, const char *s)
{
    if (s == NULL || s[0] == '\0' || names_has(n, s))
        return;
    if (n->n == n->cap) {
        n->cap = n->cap ? n->cap * 2 : 8;
        n->v = realloc(n->v, n->cap * sizeof(*n->v));
        if (n->v == NULL)
            abort();
    }
    n->v[n->n++] = xstrdup0(s);
    if (n->set.n == n->n - 1 && n->n > NAMES_LINEAR)
        strmap_put(&n->set, s, n->n - 1);
}

static void names_free(struct names *n)
{
    for (size_t i = 0; i < n->n; i++)
        free(n->v[i]);
    free(n->v);
    strmap_free(&n->set);
    memset(n, 0, sizeof(*n));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
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

/* The index is kept by the ADS thread only (admin readers walk v). */
static struct res *res_find(struct tstate *t, const char *name)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (t->idx_dirty || t->idx_upto > t->n) {
            strmap_clear(&t->idx);
            t->idx_upto = 0;
            t->idx_dirty = 0;
        }
        for (; t->idx_upto < t->n && t->v[t->idx_upto].name; t->idx_upto++)
            strmap_put(&t->idx, t->v[t->idx_upto].name, t->idx_upto);
        size_t i;
        if (!strmap_get(&t->idx, name, &i))
            return NULL;
        if (i < t->n && t->v[i].name && strcmp(t->v[i].name, name) == 0)
            return &t->v[i];
        t->idx_dirty = 1; /* a slot changed under the index: rebuild once */
    }
    return NULL;
}

static void res_clear(struct res *r)
{
    free(r->name);
    free(r->version);
    if (r->msg)
        protobuf_c_message_free_unpacked(r->msg, NULL);
    memset(r, 0, sizeof(*r));
}

static struct res *res_slot(struct tstate *t)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 8;
        t->v = realloc(t->v, t->cap * sizeof(*t->v));
        if (t->v == NULL)
            abort();
    }
    struct res *r = &t->v[t->n++];
    memset(r, 0, sizeof(*r));
    return r;
}

static void res_remove(struct tstate *t, struct res *r)
{
    res_clear(r);
    size_t i = (size_t)(r - t->v);
    memmove(&t->v[i], &t->v[i + 1], (t->n - i - 1) * sizeof(*t->v));
    t->n--;
    t->idx_dirty = 1;
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

/* ---- references ---------------------------------------------------------
 * A descriptor-driven walk over a resource, unpacking Any on the way, that
 * collects the RDS names (HttpConnectionManager.rds) and the SDS names
 * (SdsSecretConfig with an sds_config) it refers to. */

struct refs {
    struct names rds, sds;
};

static void walk(const ProtobufCMessage *m, struct refs *r, int depth);

static void walk_one(const ProtobufCMessage *m, struct refs *r, int depth)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (d == &google__protobuf__any__descriptor) {
        const Google__Protobuf__Any *any = (const Google__Protobuf__Any *)m;
        const ProtobufCMessageDescriptor *inner = xds_registry_lookup(any->type_url);
        if (inner == NULL)
            return;
        ProtobufCMessage *u = protobuf_c_message_unpack(inner, NULL, any->value.len, any->value.data);
        if (u) {
            walk(u, r, depth + 1);
            protobuf_c_message_free_unpacked(u, NULL);
        }
        return;
    }
    if (d == &envoy__extensions__transport_sockets__tls__v3__sds_secret_config__descriptor) {
        const Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig *s =
            (const Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig *)m;
        if (s->sds_config)
            names_add(&r->sds, s->name);
        return;
    }
    if (d == &envoy__extensions__filters__network__http_connection_manager__v3__rds__descriptor) {
        const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds *rds =
            (const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds *)m;
        names_add(&r->rds, rds->route_config_name);
        return;
    }
    walk(m, r, depth + 1);
}

static void walk(const ProtobufCMessage *m, struct refs *r, int depth)
{
    if (depth > 32)
        return;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t which = *(const uint32_t *)(base + f->quantifier_offset);
            if (which != f->id)
                continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++)
                if (v[k])
                    walk_one(v[k], r, depth);
        } else {
            const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)(base + f->offset);
            if (sub)
                walk_one(sub, r, depth);
        }
    }
}

static void refs_free(struct refs *r)
{
    names_free(&r->rds);
    names_free(&r->sds);
}

static const char *eds_name(const Envoy__Config__Cluster__V3__Cluster *c)
{
    if (c->cluster_discovery_type_case != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE ||
        c->type != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS)
        return NULL;
    const Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig *ec = c->eds_cluster_config;
    return ec && ec->service_name[0] ? ec->service_name : c->name;
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
    struct res *r = res_find(&d->t[T_SDS], name);
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
    struct res *r = res_find(&d->t[T_RDS], name);
    return r ? (const Envoy__Config__Route__V3__RouteConfiguration *)r->msg : NULL;
}

enum build_result { B_OK, B_WARMING, B_ERROR };

/* Whether every reference has arrived; the hash of what was referenced is
 * mixed into *h so a reference that changes makes a new object. */
static int refs_present(struct dp_dyn *d, const struct refs *rf, const char *eds, uint64_t *h,
                        char *missing, size_t mlen)
{
    int ok = 1;
    missing[0] = '\0';
    for (size_t i = 0; i < rf->rds.n; i++) {
        struct res *r = res_find(&d->t[T_RDS], rf->rds.v[i]);
        if (r)
            *h = fnv((const uint8_t *)&r->hash, sizeof(r->hash), *h);
        else if (ok-- > 0)
            snprintf(missing, mlen, "route configuration \"%s\"", rf->rds.v[i]);
    }
    for (size_t i = 0; i < rf->sds.n; i++) {
        struct res *r = res_find(&d->t[T_SDS], rf->sds.v[i]);
        if (r)
            *h = fnv((const uint8_t *)&r->hash, sizeof(r->hash), *h);
        else if (lookup_secret(d, rf->sds.v[i]) == NULL && ok-- > 0)
            snprintf(missing, mlen, "secret \"%s\"", rf->sds.v[i]);
    }
    if (eds) {
        struct res *r = res_find(&d->t[T_EDS], eds);
        if (r) {
            *h = fnv((const uint8_t *)&r->hash, sizeof(r->hash), *h);
        } else {
            /* Given up on (initial fetch timeout): no endpoints. */
            size_t at;
            int gave_up = names_index(&d->t[T_EDS].subs, eds, &at) && d->t[T_EDS].gave_up[at];
            if (!gave_up && ok-- > 0)
                snprintf(missing, mlen, "endpoints \"%s\"", eds);
        }
    }
    return ok == 1;
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
static enum build_result build_listener(struct dp_dyn *d, struct res *r, void **out, uint64_t *hash,
                                        char *err, size_t errlen)
{
    const Envoy__Config__Listener__V3__Listener *pl = (const Envoy__Config__Listener__V3__Listener *)r->msg;
    struct refs rf = {0};
    walk(r->msg, &rf, 0);
    uint64_t h = r->hash;
    char missing[300];
    int present = refs_present(d, &rf, NULL, &h, missing, sizeof(missing));
    refs_free(&rf);
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

static enum build_result build_cluster(struct dp_dyn *d, struct res *r, void **out, uint64_t *hash,
                                       char *err, size_t errlen)
{
    const Envoy__Config__Cluster__V3__Cluster *pc = (const Envoy__Config__Cluster__V3__Cluster *)r->msg;
    struct refs rf = {0};
    walk(r->msg, &rf, 0);
    const char *eds = eds_name(pc);
    uint64_t h = r->hash;
    char missing[300];
    int present = refs_present(d, &rf, eds, &h, missing, sizeof(missing));
    refs_free(&rf);
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
    struct res *cla = eds ? res_find(&d->t[T_EDS], eds) : NULL;
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
                             struct names *failed)
{
    struct tstate *t = &d->t[type];
    size_t n_cur = type == T_LDS ? d->n_bl : d->n_bc;
    struct built *nv = calloc(t->n + n_cur + 1, sizeof(*nv));
    size_t n = 0;
    if (nv == NULL)
        abort();
    *changed = 0;
    for (size_t i = 0; i < t->n; i++) {
        struct res *r = &t->v[i];
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
            names_add(failed, r->name);
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
    struct tstate *t = &d->t[type];
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
static void resubscribe(struct dp_dyn *d)
{
    struct refs all = {0};
    struct names eds = {0};
    for (size_t i = 0; i < d->t[T_LDS].n; i++)
        walk(d->t[T_LDS].v[i].msg, &all, 0);
    for (size_t i = 0; i < d->t[T_CDS].n; i++) {
        walk(d->t[T_CDS].v[i].msg, &all, 0);
        names_add(&eds, eds_name((const Envoy__Config__Cluster__V3__Cluster *)d->t[T_CDS].v[i].msg));
    }
    struct names *want[T_N] = {NULL};
    want[T_RDS] = &all.rds;
    want[T_SDS] = &all.sds;
    want[T_EDS] = &eds;
    double now = xds_now();
    for (int type = 0; type < T_N; type++) {
        if (want[type] == NULL)
            continue;
        struct tstate *t = &d->t[type];
        struct names *w = want[type];
        if (w->n > 1) {
            qsort(w->v, w->n, sizeof(*w->v), cmp_str);
            strmap_clear(&w->set);
        }
        int same = w->n == t->subs.n;
        for (size_t i = 0; same && i < w->n; i++)
            same = strcmp(w->v[i], t->subs.v[i]) == 0;
        if (same)
            continue;
        double *since = calloc(w->n + 1, sizeof(*since));
        int *gave_up = calloc(w->n + 1, sizeof(*gave_up));
        if (since == NULL || gave_up == NULL)
            abort();
        struct strmap was = {0};
        for (size_t j = 0; j < t->subs.n; j++)
            strmap_put(&was, t->subs.v[j], j);
        for (size_t i = 0; i < w->n; i++) {
            size_t j;
            since[i] = now;
            if (strmap_get(&was, w->v[i], &j)) {
                since[i] = t->since[j];
                gave_up[i] = t->gave_up[j];
            }
        }
        strmap_free(&was);
        names_free(&t->subs);
        free(t->since);
        free(t->gave_up);
        t->subs = *w;
        memset(w, 0, sizeof(*w));
        t->since = since;
        t->gave_up = gave_up;
        /* Resources nobody refers to any more are forgotten. */
        size_t kept = 0;
        for (size_t i = 0; i < t->n; i++) {
            if (names_has(&t->subs, t->v[i].name))
                t->v[kept++] = t->v[i];
            else
                res_clear(&t->v[i]);
        }
        if (kept != t->n) {
            t->n = kept;
            t->idx_dirty = 1;
        }
        if (t->subs.n > 0)
            send_request(d, type, NULL);
    }
    refs_free(&all);
    names_free(&eds);
}

/* ---- readiness ------------------------------------------------------------------ */

static void update_ready(struct dp_dyn *d)
{
    if (d->ready)
        return;
    for (int type = 0; type < T_N; type++) {
        struct tstate *t = &d->t[type];
        if (type == T_LDS || type == T_CDS) {
            if (!t->got_first && !t->timed_out)
                return;
            continue;
        }
        for (size_t i = 0; i < t->subs.n; i++)
            if (!t->gave_up[i] && res_find(t, t->subs.v[i]) == NULL)
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
static void rebuild_and_install(struct dp_dyn *d, struct errs *errs, struct names *failed)
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
    struct names failed[T_N] = {{0}};
    size_t n_bc, n_bl;
    int ch_c, ch_l;
    struct built *bc = rebuild(d, T_CDS, &n_bc, &ch_c, trial, &failed[T_CDS]);
    struct built *bl = rebuild(d, T_LDS, &n_bl, &ch_l, trial, &failed[T_LDS]);
    int rc = failed[T_CDS].n || failed[T_LDS].n ? -1 : 0;
    names_free(&failed[T_CDS]);
    names_free(&failed[T_LDS]);
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
    struct tstate *t = &d->t[type];
    struct res *olds = calloc(n + 1, sizeof(*olds));
    if (olds == NULL)
        abort();
    size_t staged = 0;
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < n; i++) {
        if (msgs[i] == NULL)
            continue;
        const char *name = res_name(type, msgs[i]);
        struct res *slot = res_find(t, name);
        if (slot)
            olds[i] = *slot;
        else
            slot = res_slot(t);
        *slot = (struct res){xstrdup0(name), xstrdup0(version), msgs[i], hashes[i]};
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
            if (olds[i].name)
                res_clear(&olds[i]);
            msgs[i] = NULL; /* the table has it */
            continue;
        }
        struct res *slot = res_find(t, res_name(type, msgs[i]));
        slot->msg = NULL; /* msgs[i] stays the caller's */
        res_clear(slot);
        if (olds[i].name)
            *slot = olds[i];
        else
            res_remove(t, slot);
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
    struct tstate *t = &d->t[type];
    struct errs errs = {0};
    struct names refused = {0}; /* resources that set a field legate does not implement */
    const ProtobufCMessageDescriptor *desc = xds_registry_lookup(type_urls[type]);
    double began = xds_now();

    pthread_mutex_lock(&d->lock);
    free(t->nonce);
    t->nonce = xstrdup0(resp->nonce);
    t->got_first = 1;
    pthread_mutex_unlock(&d->lock);

    /* Decode everything first. A state-of-the-world response (LDS, CDS)
     * sends every resource each time: one sent again byte for byte takes
     * over the decoded message it had (reused[i]) instead of decoding. */
    size_t n = resp->n_resources;
    ProtobufCMessage **msgs = calloc(n + 1, sizeof(*msgs));
    uint64_t *hashes = calloc(n + 1, sizeof(*hashes));
    size_t *reused = calloc(n + 1, sizeof(*reused)); /* the table's index + 1, or 0 */
    struct strmap seen = {0};
    struct by_hash prev = {0};
    int sotw = type == T_LDS || type == T_CDS;
    if (msgs == NULL || hashes == NULL || reused == NULL)
        abort();
    /* This thread alone changes the tables: it reads them without the lock. */
    if (sotw)
        by_hash_init(&prev, t);
    for (size_t i = 0; i < n; i++) {
        const Google__Protobuf__Any *any = resp->resources[i];
        if (strcmp(any->type_url, type_urls[type]) != 0) {
            err_add(&errs, "resources[%zu]: type %s in a response of type %s", i, any->type_url,
                    type_urls[type]);
            continue;
        }
        hashes[i] = bytes_hash(any);
        size_t at;
        if (sotw && by_hash_take(&prev, hashes[i], &at)) {
            msgs[i] = t->v[at].msg; /* the table's entry gives it up below */
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
            names_add(&refused, name);
            protobuf_c_message_free_unpacked(msgs[i], NULL);
            msgs[i] = NULL;
            continue;
        }
        strmap_put(&seen, name, i);
    }
    strmap_free(&seen);
    by_hash_free(&prev);

    pthread_mutex_lock(&d->lock);
    /* Messages taken over leave their old entries (which stay, without a
     * message, until the old table is freed below). */
    for (size_t i = 0; i < n; i++)
        if (reused[i] && msgs[i] != NULL)
            t->v[reused[i] - 1].msg = NULL;
    if (type == T_LDS || type == T_CDS) {
        /* State of the world: the response is the whole set. Keep what was
         * there for names whose new version did not decode. */
        struct tstate nt = {0};
        for (size_t i = 0; i < n; i++) {
            if (msgs[i] == NULL)
                continue;
            struct res *r = res_slot(&nt);
            r->name = xstrdup0(res_name(type, msgs[i]));
            r->version = xstrdup0(resp->version_info);
            r->msg = msgs[i];
            r->hash = hashes[i];
            msgs[i] = NULL;
        }
        struct tstate old = {.v = t->v, .n = t->n, .cap = t->cap, .idx_dirty = 1};
        t->v = nt.v;
        t->n = nt.n;
        t->cap = nt.cap;
        t->idx_dirty = 1;
        for (size_t i = 0; i < refused.n; i++) {
            /* refused: what served under that name goes on serving */
            struct res *o = res_find(&old, refused.v[i]);
            if (o && o->msg) {
                *res_slot(t) = *o;
                memset(o, 0, sizeof(*o));
            }
        }
        pthread_mutex_unlock(&d->lock);
        /* Build; what fails keeps its installed version (rebuild does that). */
        struct names failed[T_N] = {{0}};
        rebuild_and_install(d, &errs, failed);
        /* A rejected resource: the table keeps the version that serves (the
         * old one), or nothing when it is new, so that references, dumps and
         * the next rebuild see what is installed. */
        pthread_mutex_lock(&d->lock);
        for (size_t i = 0; i < failed[type].n; i++) {
            struct res *r = res_find(t, failed[type].v[i]);
            struct res *o = res_find(&old, failed[type].v[i]);
            if (r == NULL)
                continue;
            if (o && o->msg == NULL)
                continue; /* r took over o's message: the same resource */
            if (o) {
                res_clear(r);
                *r = *o;
                memset(o, 0, sizeof(*o));
            } else {
                res_remove(t, r);
            }
        }
        for (size_t i = 0; i < old.n; i++)
            if (old.v[i].name)
                res_clear(&old.v[i]);
        free(old.v);
        strmap_free(&old.idx);
        pthread_mutex_unlock(&d->lock);
        names_free(&failed[T_CDS]);
        names_free(&failed[T_LDS]);
    } else {
        pthread_mutex_unlock(&d->lock);
        /* Each resource on its own first. */
        for (size_t i = 0; i < n; i++) {
            if (msgs[i] == NULL)
                continue;
            const char *name = res_name(type, msgs[i]);
            char eerr[300];
            int bad = 0;
            if (!names_has(&t->subs, name)) {
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
            struct res *slot = res_find(t, name);
            struct res old = {0};
            if (slot)
                old = *slot;
            else
                slot = res_slot(t);
            struct res nr = {xstrdup0(name), xstrdup0(resp->version_info), msgs[i], hashes[i]};
            *slot = nr;
            msgs[i] = NULL;
            pthread_mutex_unlock(&d->lock);
            if (try_dependency(d, type, name, &errs) < 0) {
                pthread_mutex_lock(&d->lock);
                slot = res_find(t, name);
                res_clear(slot);
                if (old.name)
                    *slot = old;
                else
                    res_remove(t, slot);
                pthread_mutex_unlock(&d->lock);
            } else if (old.name) {
                res_clear(&old);
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        if (msgs[i])
            protobuf_c_message_free_unpacked(msgs[i], NULL);
    free(msgs);
    free(hashes);
    free(reused);
    names_free(&refused);

    pthread_mutex_lock(&d->lock);
    if (errs.n == 0) {
        free(t->version);
        t->version = xstrdup0(resp->version_info);
    }
    pthread_mutex_unlock(&d->lock);
    if (errs.n) {
        dp_stat_add(d->st.update_rejected[type], 1);
        LG_W("xds", "%s version %s rejected: %s", type_short[type], resp->version_info, errs.buf);
        send_request(d, type, errs.buf);
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
        send_request(d, type, NULL);
    }
    pthread_mutex_lock(&d->lock);
    resubscribe(d);
    update_ready(d);
    pthread_mutex_unlock(&d->lock);
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
        struct tstate *t = &d->t[type];
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

static double on_tick(void *ud, struct xds_ads *a)
{
    struct dp_dyn *d = ud;
    (void)a;
    double now = xds_now();
    int changed = 0;
    pthread_mutex_lock(&d->lock);
    for (int type = 0; type < T_N; type++) {
        struct tstate *t = &d->t[type];
        if ((type == T_LDS || type == T_CDS) && !t->got_first && !t->timed_out && t->started > 0 &&
            now - t->started > d->fetch_timeout) {
            t->timed_out = 1;
            LG_W("xds", "no %s response within %g s (initial fetch timeout); going on without",
                 type_short[type], d->fetch_timeout);
            changed = 1;
        }
        /* Each subscription is looked up once, when its timeout is due: a
         * lookup per subscription per tick cost 2% of a core with 10,000
         * clusters. */
        for (size_t i = 0; i < t->subs.n; i++) {
            if (t->gave_up[i] || now - t->since[i] <= d->fetch_timeout)
                continue;
            if (res_find(t, t->subs.v[i]) != NULL) {
                t->gave_up[i] = 2;
            } else {
                t->gave_up[i] = 1;
                LG_W("xds", "%s \"%s\" not received within %g s (initial fetch timeout); what "
                            "needs it stays warming",
                     type_names[type], t->subs.v[i], d->fetch_timeout);
                changed = 1;
            }
        }
    }
    pthread_mutex_unlock(&d->lock);
    if (changed) {
        struct errs errs = {0};
        struct names failed[T_N] = {{0}};
        rebuild_and_install(d, &errs, failed); /* EDS given up: clusters with no endpoints */
        names_free(&failed[T_CDS]);
        names_free(&failed[T_LDS]);
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
    for (int type = 0; type < T_N; type++) {
        struct tstate *t = &d->t[type];
        for (size_t i = 0; i < t->n; i++)
            res_clear(&t->v[i]);
        free(t->v);
        free(t->version);
        free(t->nonce);
        names_free(&t->subs);
        free(t->since);
        free(t->gave_up);
        strmap_free(&t->idx);
    }
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
        struct tstate *t = &d->t[type];
        xds_sb_addf(&b, "%s\"%s\":{\"version_info\":", type ? "," : "", keys[type]);
        xds_sb_str(&b, t->version ? t->version : "");
        xds_sb_add(&b, ",\"resources\":[", 14);
        for (size_t i = 0; i < t->n; i++) {
            int warming = 0;
            if (type == T_LDS)
                warming = built_find(d, T_LDS, t->v[i].name) == NULL;
            else if (type == T_CDS)
                warming = built_find(d, T_CDS, t->v[i].name) == NULL;
            xds_sb_addf(&b, "%s{\"name\":", i ? "," : "");
            xds_sb_str(&b, t->v[i].name);
            xds_sb_add(&b, ",\"version_info\":", 16);
            xds_sb_str(&b, t->v[i].version);
            xds_sb_addf(&b, ",\"state\":\"%s\",\"resource\":", warming ? "warming" : "active");
            xds_json_message(&b, t->v[i].msg);
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
    struct tstate *t = &d->t[T_SDS];
    for (size_t i = 0; i < t->n; i++)
        fn(arg, t->v[i].name, t->v[i].version,
           (const Envoy__Extensions__TransportSockets__Tls__V3__Secret *)t->v[i].msg);
    pthread_mutex_unlock(&d->lock);
}
