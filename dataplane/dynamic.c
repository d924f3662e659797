#include "dynamic.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/config_build.h"
#include "dataplane/config_dump.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "xds/unsupported.h"
#include "xds/cfgerr.h"
#include "xds/client.h"
#include "xds/deps.h"
#include "xds/state.h"
#include "xds/strmap.h"
#include "xds/ads.h"
#include "xds/datasource.h"
#include "xds/json.h"
#include "xds/registry.h"
#include "xds/response.h"
#include "xds/log.h"
#include "xds/version.h"

/* Stat scopes, Envoy's where Envoy has one per type. */
static const char *const type_stat_scope[XDS_T_N] = {"cluster_manager.cds", "cluster_manager.eds",
                                                 "listener_manager.lds", "rds", "sds"};

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
    /* Only the ADS thread writes what follows; the lock is taken when it
     * changes what admin readers see (c.t[] tables, versions and
     * subscriptions, bl/bc, ready), never for nonces or per-stream flags. */
    pthread_mutex_t lock;
    struct xds_client c;
    /* What the ADS thread builds from: &c.t[type].res, or for the type of a
     * state-of-the-world response being applied, the new set (private until
     * it is published). */
    const struct xds_table *work[XDS_T_N];
    struct built *bl;            /* installed listeners */
    size_t n_bl;
    struct built *bc;            /* installed clusters */
    size_t n_bc;
    struct strmap bl_idx, bc_idx; /* name -> index in bl, bc */
    int ready;
    int allow_expired;           /* accept expired certificates over SDS */
    struct dp_dump_notes notes;  /* /config_dump: last_updated and NACKs per resource (under lock) */
    struct {
        dp_stat_t connected, update_success[XDS_T_N], update_rejected[XDS_T_N], version[XDS_T_N];
        dp_stat_t ignored_fields;
    } st;
};

/* ---- small helpers ----------------------------------------------------- */

static char *xstrdup0(const char *s)
{
    char *d = strdup(s ? s : "");
    if (d == NULL)
        abort();
    return d;
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
        xds_cfg_fail(&(struct xds_cfgerr){err, errlen},
                     "tls_certificate.certificate_chain: the certificate expired at %s "
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
    struct xds_res *r = xds_table_find(d->work[XDS_SDS], name);
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
    struct xds_res *r = xds_table_find(d->work[XDS_RDS], name);
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

/* The state of type as the ADS thread builds from it: the published one,
 * or a shallow copy (read only) with the table being applied. */
static const struct xds_type_state *working(struct dp_dyn *d, int type, struct xds_type_state *tmp)
{
    if (d->work[type] == &d->c.t[type].res)
        return &d->c.t[type];
    *tmp = d->c.t[type];
    tmp->res = *d->work[type];
    return tmp;
}

/* Whether every reference has arrived; the hash of what was referenced is
 * mixed into *h so a reference that changes makes a new object. */
static int refs_present(struct dp_dyn *d, const struct xds_refs *rf, const char *eds, uint64_t *h,
                        char *missing, size_t mlen)
{
    struct xds_type_state tmp[3];
    struct xds_deps_src src = {working(d, XDS_RDS, &tmp[0]), working(d, XDS_EDS, &tmp[1]),
                               working(d, XDS_SDS, &tmp[2]), static_secret, d};
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

/* The installed listener (XDS_LDS) or cluster (XDS_CDS) called name. */
static struct built *built_find(struct dp_dyn *d, int type, const char *name)
{
    size_t i;
    if (type == XDS_LDS)
        return strmap_get(&d->bl_idx, name, &i) ? &d->bl[i] : NULL;
    return strmap_get(&d->bc_idx, name, &i) ? &d->bc[i] : NULL;
}

/* A trial build's secret lookup: notes a secret that has not arrived. */
struct trial_secrets {
    struct dp_dyn *d;
    int missing;
};

static const Envoy__Extensions__TransportSockets__Tls__V3__Secret *trial_secret(void *ud, const char *name)
{
    struct trial_secrets *t = ud;
    const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s = lookup_secret(t->d, name);
    t->missing |= s == NULL;
    return s;
}

/* A listener waiting for references. When an LDS response is applied it
 * is built once without them (routes that have not arrived are left
 * out), so that what does not need them is checked now and NACKed on
 * the LDS, as Envoy does, rather than on the RDS that completes it. A
 * failure that may come from a missing secret proves nothing: it waits. */
static enum build_result listener_warming(struct dp_dyn *d, const Envoy__Config__Listener__V3__Listener *pl,
                                          const char *missing, char *err, size_t errlen)
{
    if (d->work[XDS_LDS] != &d->c.t[XDS_LDS].res) { /* an LDS response is being applied */
        struct trial_secrets ts = {d, 0};
        struct dp_build_ctx ctx = build_ctx(d);
        ctx.secrets = (struct dp_secret_lookup){.fn = trial_secret, .ud = &ts};
        char msg[1024];
        struct dp_listener *l = dp_listener_build(pl, &ctx, msg, sizeof(msg));
        if (l == NULL && !ts.missing) {
            snprintf(err, errlen, "%s", msg);
            return B_ERROR;
        }
        dp_listener_unref(l);
    }
    snprintf(err, errlen, "waiting for %s", missing);
    return B_WARMING;
}

/* Builds listener resource r. On B_OK, *out is the new object (or the
 * installed one when nothing changed: *out == cur->obj). */
static enum build_result build_listener(struct dp_dyn *d, struct xds_res *r, void **out, uint64_t *hash,
                                        char *err, size_t errlen)
{
    const Envoy__Config__Listener__V3__Listener *pl = (const Envoy__Config__Listener__V3__Listener *)r->msg;
    /* before any reference: it is the LDS resource's own error */
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = d->bs->static_resources;
    for (size_t i = 0; sr && i < sr->n_listeners; i++)
        if (strcmp(sr->listeners[i]->name, pl->name) == 0) {
            xds_cfg_fail(&(struct xds_cfgerr){err, errlen}, "name: a static listener is already called \"%s\"",
                         pl->name);
            return B_ERROR;
        }
    struct xds_refs rf = {0};
    xds_refs_collect(r->msg, &rf);
    uint64_t h = r->hash;
    char missing[300];
    int present = refs_present(d, &rf, NULL, &h, missing, sizeof(missing));
    xds_refs_free(&rf);
    *hash = h;
    if (!present)
        return listener_warming(d, pl, missing, err, errlen);
    struct built *cur = built_find(d, XDS_LDS, r->name);
    if (cur && cur->hash == h) {
        *out = cur->obj;
        return B_OK;
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
        xds_cfg_fail(&(struct xds_cfgerr){err, errlen}, "address: %s", msg);
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
    struct built *cur = built_find(d, XDS_CDS, r->name);
    if (cur && cur->hash == h) {
        *out = cur->obj;
        return B_OK;
    }
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = d->bs->static_resources;
    for (size_t i = 0; sr && i < sr->n_clusters; i++)
        if (strcmp(sr->clusters[i]->name, pc->name) == 0) {
            xds_cfg_fail(&(struct xds_cfgerr){err, errlen}, "name: a static cluster is already called \"%s\"",
                         pc->name);
            return B_ERROR;
        }
    struct xds_res *cla = eds ? xds_table_find(d->work[XDS_EDS], eds) : NULL;
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
    if (type == XDS_LDS)
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
 * Rebuilds every listener (type XDS_LDS) or cluster (XDS_CDS) from the current
 * resources. A resource that fails to build is reported in errs and its
 * previously installed version, if any, is kept, as is the installed
 * version of one that is warming. Failed names are added to failed.
 * Returns the new table; *changed says whether it differs from the
 * installed one.
 */
static struct built *rebuild(struct dp_dyn *d, int type, size_t *n_out, int *changed, struct xds_errs *errs,
                             struct xds_names *failed)
{
    const struct xds_table *t = d->work[type];
    size_t n_cur = type == XDS_LDS ? d->n_bl : d->n_bc;
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
        enum build_result br = type == XDS_LDS ? build_listener(d, r, &obj, &h, err, sizeof(err))
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
                if (type == XDS_LDS)
                    dp_listener_ref(obj);
                else
                    dp_cluster_ref(obj);
            }
            n++;
            continue;
        }
        if (br == B_ERROR) {
            xds_errs_add(errs, "%s \"%s\": %s", xds_type_names[type], r->name, err);
            xds_names_add(failed, r->name);
        } else {
            LG_D("xds", "%s \"%s\" is warming: %s", xds_type_names[type], r->name, err);
        }
        if (old) {
            nv[n] = (struct built){xstrdup0(old->name), old->hash, old->obj};
            if (type == XDS_LDS)
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
    built_free(XDS_LDS, d->bl, d->n_bl);
    built_free(XDS_CDS, d->bc, d->n_bc);
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

/* ---- readiness ------------------------------------------------------------------ */

static void update_ready(struct dp_dyn *d)
{
    if (d->ready)
        return;
    for (int type = 0; type < XDS_T_N; type++) {
        struct xds_type_state *t = &d->c.t[type];
        if (type == XDS_LDS || type == XDS_CDS) {
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

/* Rebuilds listeners and clusters and installs them if anything changed.
 * Errors are charged to the resources that failed (their names in
 * failed[XDS_CDS] and failed[XDS_LDS]). */
static void rebuild_and_install(struct dp_dyn *d, struct xds_errs *errs, struct xds_names *failed)
{
    size_t n_bc, n_bl;
    int ch_c, ch_l;
    /* Routes name clusters, resolved per request: the order does not matter. */
    struct built *bc = rebuild(d, XDS_CDS, &n_bc, &ch_c, errs, &failed[XDS_CDS]);
    struct built *bl = rebuild(d, XDS_LDS, &n_bl, &ch_l, errs, &failed[XDS_LDS]);
    if (ch_c || ch_l) {
        install(d, bl, n_bl, bc, n_bc);
    } else {
        built_free(XDS_CDS, bc, n_bc);
        built_free(XDS_LDS, bl, n_bl);
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
static int rebuild_all_or_nothing(struct dp_dyn *d, struct xds_errs *trial)
{
    struct xds_names failed[XDS_T_N] = {{0}};
    size_t n_bc, n_bl;
    int ch_c, ch_l;
    struct built *bc = rebuild(d, XDS_CDS, &n_bc, &ch_c, trial, &failed[XDS_CDS]);
    struct built *bl = rebuild(d, XDS_LDS, &n_bl, &ch_l, trial, &failed[XDS_LDS]);
    int rc = failed[XDS_CDS].n || failed[XDS_LDS].n ? -1 : 0;
    xds_names_free(&failed[XDS_CDS]);
    xds_names_free(&failed[XDS_LDS]);
    if (rc == 0 && (ch_c || ch_l)) {
        install(d, bl, n_bl, bc, n_bc);
    } else {
        built_free(XDS_CDS, bc, n_bc);
        built_free(XDS_LDS, bl, n_bl);
    }
    return rc;
}

static int try_dependency(struct dp_dyn *d, int type, const char *name, struct xds_errs *errs)
{
    struct xds_errs trial = {0};
    if (rebuild_all_or_nothing(d, &trial) < 0) {
        xds_errs_add(errs, "%s \"%s\": rejected: %s", xds_type_names[type], name, trial.buf);
        return -1;
    }
    return 0;
}

/*
 * Puts the (validated) resources msgs[0..n) of a named type in place and
 * rebuilds once. On success they are installed and msgs[] is emptied; on a
 * build failure everything is put back as it was and -1 is returned.
 */
static int apply_together(struct dp_dyn *d, int type, struct xds_table *t, const char *version,
                          ProtobufCMessage **msgs, const uint64_t *hashes, size_t n)
{
    struct xds_res *olds = calloc(n + 1, sizeof(*olds));
    if (olds == NULL)
        abort();
    size_t staged = 0;
    for (size_t i = 0; i < n; i++) {
        if (msgs[i] == NULL)
            continue;
        xds_table_set(t, xds_resource_name(type, msgs[i]), version, msgs[i], hashes[i], &olds[i]);
        staged++;
    }
    int rc = 0;
    if (staged > 0) {
        struct xds_errs trial = {0};
        rc = rebuild_all_or_nothing(d, &trial);
    }
    for (size_t i = 0; i < n; i++) {
        if (msgs[i] == NULL)
            continue;
        if (rc == 0) {
            olds[i].msg = NULL; /* lent by the published table, which frees it at the commit */
            xds_res_clear(&olds[i]);
            msgs[i] = NULL; /* the table has it */
            continue;
        }
        const char *name = xds_resource_name(type, msgs[i]);
        struct xds_res *slot = xds_table_find(t, name);
        slot->msg = NULL; /* msgs[i] stays the caller's */
        if (olds[i].name) {
            xds_res_clear(slot);
            *slot = olds[i];
        } else {
            xds_table_take(t, name, NULL);
        }
    }
    free(olds);
    return rc;
}

/*
 * State of the world (LDS, CDS): the response is the whole set. It is
 * built aside in b->nt while the published table stays as it was for admin
 * readers; the messages nt shares with it (sent again unchanged, or kept
 * because the new version was refused or failed) are lent: the published
 * entry gives them up when nt replaces it (commit).
 */
static void apply_sotw(struct dp_dyn *d, struct xds_batch *b)
{
    int type = b->type;
    struct xds_type_state *t = &d->c.t[type];
    const struct xds_table *cur = &t->res;
    for (size_t i = 0; i < b->n; i++) {
        if (b->msgs[i] == NULL)
            continue;
        struct xds_res r = {xstrdup0(xds_resource_name(type, b->msgs[i])), xstrdup0(b->version), b->msgs[i],
                            b->hashes[i]};
        xds_table_append(&b->nt, &r); /* a reused message is lent */
        b->msgs[i] = NULL;
    }
    for (size_t i = 0; i < b->refused.n; i++) {
        /* refused: what served under that name goes on serving (unless
         * the response also brought a good copy of that name) */
        const struct xds_res *o = xds_table_find(cur, b->refused.v[i]);
        if (o && o->msg && xds_table_find(&b->nt, b->refused.v[i]) == NULL) {
            struct xds_res r = xds_res_lend(o);
            xds_table_append(&b->nt, &r);
        }
    }
    /* Build; what fails keeps its installed version (rebuild does that). */
    struct xds_names failed[XDS_T_N] = {{0}};
    d->work[type] = &b->nt;
    rebuild_and_install(d, &b->errs, failed);
    d->work[type] = &t->res;
    /* A rejected resource: the table keeps the version that serves (the
     * old one), or nothing when it is new, so that references, dumps and
     * the next rebuild see what is installed. */
    for (size_t i = 0; i < failed[type].n; i++) {
        const char *name = failed[type].v[i];
        struct xds_res *r = xds_table_find(&b->nt, name);
        const struct xds_res *o = xds_table_find(cur, name);
        if (r == NULL)
            continue;
        if (o && o->msg == r->msg)
            continue; /* the same resource */
        /* r's message is its own: a lent one has the name it came with */
        if (o) {
            xds_res_clear(r);
            *r = xds_res_lend(o);
        } else {
            xds_table_take(&b->nt, name, NULL);
        }
    }
    xds_names_free(&failed[XDS_CDS]);
    xds_names_free(&failed[XDS_LDS]);
}

/* A named type (RDS, EDS, SDS): resources are checked one by one, then
 * put in place together with one rebuild. */
static void apply_named(struct dp_dyn *d, struct xds_batch *b)
{
    int type = b->type;
    struct xds_type_state *t = &d->c.t[type];
    /* Each resource on its own first. */
    for (size_t i = 0; i < b->n; i++) {
        if (b->msgs[i] == NULL)
            continue;
        const char *name = xds_resource_name(type, b->msgs[i]);
        char eerr[300];
        int bad = 0;
        if (!xds_names_has(&t->subs, name)) {
            LG_D("xds", "%s: ignoring \"%s\", not subscribed", xds_type_short[type], name);
            bad = 1;
        } else if (type == XDS_SDS && !d->allow_expired &&
                   secret_expired((const Envoy__Extensions__TransportSockets__Tls__V3__Secret *)b->msgs[i],
                                  eerr, sizeof(eerr)) < 0) {
            xds_errs_add(&b->errs, "secret \"%s\": %s", name, eerr);
            bad = 1;
        } else if (type == XDS_EDS) {
            struct dp_endpoint_set *eps = dp_endpoints_build(
                (const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *)b->msgs[i], eerr, sizeof(eerr));
            if (eps == NULL) {
                xds_errs_add(&b->errs, "endpoints \"%s\": %s", name, eerr);
                bad = 1;
            }
            dp_endpoint_set_unref(eps);
        }
        if (bad) {
            protobuf_c_message_free_unpacked(b->msgs[i], NULL);
            b->msgs[i] = NULL;
        }
    }
    /* Then all of them at once, with one rebuild of what uses them; one
     * by one only when that fails, to charge the error to the resource
     * that caused it. All of it in b->nt, a copy of the published table
     * that borrows its messages, published by the commit. */
    for (size_t i = 0; i < t->res.n; i++) {
        struct xds_res r = xds_res_lend(&t->res.v[i]);
        xds_table_append(&b->nt, &r);
    }
    d->work[type] = &b->nt;
    int together = apply_together(d, type, &b->nt, b->version, b->msgs, b->hashes, b->n) == 0;
    for (size_t i = 0; i < b->n && !together; i++) {
        if (b->msgs[i] == NULL)
            continue;
        const char *name = xds_resource_name(type, b->msgs[i]);
        struct xds_res old;
        xds_table_set(&b->nt, name, b->version, b->msgs[i], b->hashes[i], &old);
        b->msgs[i] = NULL;
        if (try_dependency(d, type, name, &b->errs) < 0) {
            struct xds_res *slot = xds_table_find(&b->nt, name);
            if (old.name) {
                xds_res_clear(slot);
                *slot = old;
            } else {
                xds_table_take(&b->nt, name, NULL);
            }
        } else {
            old.msg = NULL; /* lent: the commit frees it */
            xds_res_clear(&old);
        }
    }
    d->work[type] = &t->res;
}

/* For /config_dump's error_state: the part of a NACK's message about each
 * resource of resp it names ("listener \"x\": ..." up to the next
 * resource's part). */
static void note_errors(struct dp_dyn *d, const struct xds_batch *b,
                        const Envoy__Service__Discovery__V3__DiscoveryResponse *resp)
{
    int type = b->type;
    double now = dp_dump_wall_now();
    pthread_mutex_lock(&d->lock);
    if (b->errs.n == 0) {
        dp_dump_notes_ack(&d->notes, type);
        pthread_mutex_unlock(&d->lock);
        return;
    }
    const ProtobufCMessageDescriptor *desc = xds_registry_lookup(xds_type_urls[type]);
    for (size_t i = 0; desc && i < resp->n_resources; i++) {
        const Google__Protobuf__Any *any = resp->resources[i];
        if (strcmp(any->type_url, xds_type_urls[type]) != 0)
            continue;
        ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, any->value.len, any->value.data);
        if (m == NULL)
            continue;
        char head[600];
        snprintf(head, sizeof(head), "%s \"%s\": ", xds_type_names[type], xds_resource_name(type, m));
        const char *at = strstr(b->errs.buf, head);
        if (at) {
            /* up to the next "; <type> \"" or "; resources[" */
            size_t len = strlen(at);
            for (const char *p = strstr(at + 1, "; "); p; p = strstr(p + 2, "; ")) {
                int next = strncmp(p + 2, "resources[", 10) == 0;
                for (int t = 0; t < XDS_T_N && !next; t++)
                    next = strncmp(p + 2, xds_type_names[t], strlen(xds_type_names[t])) == 0 &&
                           strncmp(p + 2 + strlen(xds_type_names[t]), " \"", 2) == 0;
                if (next) {
                    len = (size_t)(p - at);
                    break;
                }
            }
            char *details = strndup(at, len);
            if (details == NULL)
                abort();
            dp_dump_notes_nack(&d->notes, type, xds_resource_name(type, m), b->version, details, now);
            free(details);
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    pthread_mutex_unlock(&d->lock);
}

static void report(void *ud, const struct xds_batch *b,
                   const Envoy__Service__Discovery__V3__DiscoveryResponse *resp, double began)
{
    struct dp_dyn *d = ud;
    int type = b->type;
    note_errors(d, b, resp);
    /* fields accepted and ignored (xds/unknown.h), warned about in decode */
    dp_stat_add(d->st.ignored_fields, (int64_t)b->n_ignored);
    for (size_t i = 0; i < b->n_ignored; i++)
        dp_stat_add(dp_stat_register(DP_STAT_COUNTER, "xds.ignored_field", NULL, b->ignored[i]), 1);
    if (b->errs.n) {
        dp_stat_add(d->st.update_rejected[type], 1);
        LG_W("xds", "%s version %s rejected: %s", xds_type_short[type], b->version, b->errs.buf);
    } else {
        dp_stat_add(d->st.update_success[type], 1);
        dp_stat_set(d->st.version[type], xds_version_number(b->version));
        if (type == XDS_SDS)
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
        LG_I("xds", "%s version %s applied (%zu resource(s)) in %.1f ms", xds_type_short[type], b->version,
             b->n, (xds_now() - began) * 1000);
    }
}

static void apply(void *ud, struct xds_batch *b)
{
    struct dp_dyn *d = ud;
    if (xds_type_wildcard(b->type))
        apply_sotw(d, b);
    else
        apply_named(d, b);
}

static void published(void *ud)
{
    struct dp_dyn *d = ud;
    double now = dp_dump_wall_now();
    for (int type = 0; type < XDS_T_N; type++)
        dp_dump_notes_published(&d->notes, type, &d->c.t[type].res, now);
    update_ready(d);
}

static const struct xds_response_ops response_ops = {
    .apply = apply,
    .applied = report,
    .published = published,
};

static void on_response(void *ud, struct xds_ads *a,
                        const Envoy__Service__Discovery__V3__DiscoveryResponse *resp)
{
    struct dp_dyn *d = ud;
    __atomic_store_n(&d->c.ads, a, __ATOMIC_RELEASE);
    dp_stat_set(d->st.connected, 1);
    xds_client_handle_response(&d->c, &d->lock, &response_ops, d, resp);
}

static void on_stream_up(void *ud, struct xds_ads *a)
{
    /* Nonces and node_sent are the ADS thread's alone: no lock. */
    xds_client_stream_up(&((struct dp_dyn *)ud)->c, a);
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
    /* Timeouts change what only this thread reads; readiness is published. */
    if (xds_client_expire(&d->c, xds_now())) {
        struct xds_errs errs = {0};
        struct xds_names failed[XDS_T_N] = {{0}};
        rebuild_and_install(d, &errs, failed); /* EDS given up: clusters with no endpoints */
        xds_names_free(&failed[XDS_CDS]);
        xds_names_free(&failed[XDS_LDS]);
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
    d->st.ignored_fields = dp_stat_register(DP_STAT_COUNTER, "xds", NULL, "ignored_fields");
    for (int type = 0; type < XDS_T_N; type++) {
        d->st.update_success[type] = dp_stat_register(DP_STAT_COUNTER, type_stat_scope[type], NULL, "update_success");
        d->st.update_rejected[type] = dp_stat_register(DP_STAT_COUNTER, type_stat_scope[type], NULL, "update_rejected");
        d->st.version[type] = dp_stat_register(DP_STAT_GAUGE, type_stat_scope[type], NULL, "version");
    }
    xds_client_init(&d->c, bs);
    for (int type = 0; type < XDS_T_N; type++)
        d->work[type] = &d->c.t[type].res;
    d->allow_expired = allow_expired;
    d->host = *host;
    pthread_mutex_init(&d->lock, NULL);
    return d;
}

void dp_dyn_apply(struct dp_dyn *d, const Envoy__Service__Discovery__V3__DiscoveryResponse *resp)
{
    on_response(d, __atomic_load_n(&d->c.ads, __ATOMIC_ACQUIRE), resp);
}

struct dp_dyn *dp_dyn_start(const xds_bootstrap_t *bs,
                            const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *default_tls,
                            int allow_expired, const struct dp_dyn_host *host, char *err, size_t errlen)
{
    struct xds_ads_config cfg = {0};
    char target[300];
    if (xds_client_ads_config(bs, &cfg, target, sizeof(target), err, errlen) < 0) {
        xds_client_ads_config_free(&cfg);
        return NULL;
    }
    struct dp_dyn *d = dp_dyn_new_offline(bs, default_tls, allow_expired, host);
    if (d == NULL) {
        xds_client_ads_config_free(&cfg);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    LG_I("xds", "ADS to %s (%s), node \"%s\"", cfg.target, cfg.root_pem ? "TLS" : "plaintext", d->c.node.id);
    struct xds_ads *ads = xds_ads_start(&cfg, &ads_ops, d);
    xds_client_ads_config_free(&cfg);
    __atomic_store_n(&d->c.ads, ads, __ATOMIC_RELEASE);
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
    xds_ads_stop(d->c.ads);
    xds_client_free(&d->c);
    built_free(XDS_LDS, d->bl, d->n_bl);
    built_free(XDS_CDS, d->bc, d->n_bc);
    strmap_free(&d->bl_idx);
    strmap_free(&d->bc_idx);
    dp_dump_notes_free(&d->notes);
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
    static const char *const keys[XDS_T_N] = {"clusters", "endpoints", "listeners", "route_configs", "secrets"};
    struct xds_sb b = {0};
    pthread_mutex_lock(&d->lock);
    xds_sb_add(&b, "{", 1);
    for (int type = 0; type < XDS_T_N; type++) {
        struct xds_type_state *t = &d->c.t[type];
        xds_sb_addf(&b, "%s\"%s\":{\"version_info\":", type ? "," : "", keys[type]);
        xds_sb_str(&b, t->version ? t->version : "");
        xds_sb_add(&b, ",\"resources\":[", 14);
        for (size_t i = 0; i < t->res.n; i++) {
            const struct xds_res *r = &t->res.v[i];
            int warming = 0;
            if (type == XDS_LDS)
                warming = built_find(d, XDS_LDS, r->name) == NULL;
            else if (type == XDS_CDS)
                warming = built_find(d, XDS_CDS, r->name) == NULL;
            xds_sb_addf(&b, "%s{\"name\":", i ? "," : "");
            xds_sb_str(&b, r->name);
            xds_sb_add(&b, ",\"version_info\":", 16);
            xds_sb_str(&b, r->version);
            xds_sb_addf(&b, ",\"state\":\"%s\",\"resource\":", warming ? "warming" : "active");
            xds_json_message(&b, r->msg);
            /* fields accepted and ignored (they cannot change traffic) */
            xds_sb_addf(&b, ",\"ignored_fields\":");
            xds_ignored_fields_json(r->msg, &b);
            xds_sb_add(&b, "}", 1);
        }
        xds_sb_add(&b, "]", 1);
        /* the last NACK of each resource it named, until the next ACK */
        size_t n_err = 0;
        for (size_t i = 0; i < d->notes.t[type].n; i++) {
            const struct dp_dump_note *e = &d->notes.t[type].v[i];
            if (e->err_details == NULL)
                continue;
            xds_sb_addf(&b, "%s{\"name\":", n_err++ ? "," : ",\"errors\":[");
            xds_sb_str(&b, e->name);
            xds_sb_add(&b, ",\"version_info\":", 16);
            xds_sb_str(&b, e->err_version);
            xds_sb_add(&b, ",\"details\":", 11);
            xds_sb_str(&b, e->err_details);
            xds_sb_addf(&b, ",\"last_update_attempt\":%.3f}", e->err_at);
        }
        if (n_err)
            xds_sb_add(&b, "]", 1);
        if (type != XDS_LDS && type != XDS_CDS) {
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

void dp_dyn_dump_view(struct dp_dyn *d, void (*fn)(void *arg, const struct dp_dump_view *v), void *arg)
{
    struct dp_dump_view v = {.notes = &d->notes};
    pthread_mutex_lock(&d->lock);
    for (int type = 0; type < XDS_T_N; type++) {
        const struct xds_type_state *t = &d->c.t[type];
        struct dp_dump_res *r = calloc(t->res.n + 1, sizeof(*r));
        if (r == NULL)
            abort();
        for (size_t i = 0; i < t->res.n; i++) {
            const struct xds_res *x = &t->res.v[i];
            r[i] = (struct dp_dump_res){x->name, x->version, x->msg,
                                        (type == XDS_LDS || type == XDS_CDS) && built_find(d, type, x->name) == NULL};
        }
        v.t[type].version = t->version;
        v.t[type].v = r;
        v.t[type].n = t->res.n;
        v.t[type].subs = &t->subs;
    }
    fn(arg, &v);
    pthread_mutex_unlock(&d->lock);
    for (int type = 0; type < XDS_T_N; type++)
        free((void *)v.t[type].v);
}

void dp_dyn_each_secret(struct dp_dyn *d,
                        void (*fn)(void *arg, const char *name, const char *version,
                                   const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s),
                        void *arg)
{
    pthread_mutex_lock(&d->lock);
    const struct xds_table *t = &d->c.t[XDS_SDS].res;
    for (size_t i = 0; i < t->n; i++)
        fn(arg, t->v[i].name, t->v[i].version,
           (const Envoy__Extensions__TransportSockets__Tls__V3__Secret *)t->v[i].msg);
    pthread_mutex_unlock(&d->lock);
}
