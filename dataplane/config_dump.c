#include "config_dump.h"

#include <ctype.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/admin/v3/config_dump.pb-c.h"
#include "envoy/admin/v3/config_dump_shared.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "xds/json.h"
#include "xds/registry.h"

/* ---- notes ----------------------------------------------------------------------------- */

double dp_dump_wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct dp_dump_note *note_get_or_add(struct dp_dump_notes *n, int type, const char *name)
{
    size_t i;
    if (strmap_get(&n->t[type].idx, name, &i))
        return &n->t[type].v[i];
    if (n->t[type].n == n->t[type].cap) {
        size_t cap = n->t[type].cap ? n->t[type].cap * 2 : 16;
        struct dp_dump_note *v = realloc(n->t[type].v, cap * sizeof(*v));
        if (v == NULL)
            abort();
        n->t[type].v = v;
        n->t[type].cap = cap;
    }
    struct dp_dump_note *e = &n->t[type].v[n->t[type].n];
    *e = (struct dp_dump_note){.name = strdup(name)};
    if (e->name == NULL)
        abort();
    strmap_put(&n->t[type].idx, name, n->t[type].n++);
    return e;
}

static void note_clear_error(struct dp_dump_note *e)
{
    free(e->err_details);
    free(e->err_version);
    e->err_details = e->err_version = NULL;
    e->err_at = 0;
}

void dp_dump_notes_published(struct dp_dump_notes *n, int type, const struct xds_table *tab, double now)
{
    for (size_t i = 0; i < n->t[type].n; i++)
        n->t[type].v[i].in_table = 0;
    for (size_t i = 0; i < tab->n; i++) {
        struct dp_dump_note *e = note_get_or_add(n, type, tab->v[i].name);
        if (e->updated == 0 || e->hash != tab->v[i].hash) {
            e->hash = tab->v[i].hash;
            e->updated = now;
        }
        e->in_table = 1;
    }
    /* Names gone are forgotten, but a rejected new one keeps its error. */
    size_t k = 0;
    strmap_clear(&n->t[type].idx);
    for (size_t i = 0; i < n->t[type].n; i++) {
        struct dp_dump_note *e = &n->t[type].v[i];
        if (!e->in_table && e->err_details == NULL) {
            free(e->name);
            continue;
        }
        if (!e->in_table)
            e->updated = 0;
        n->t[type].v[k] = *e;
        strmap_put(&n->t[type].idx, e->name, k++);
    }
    n->t[type].n = k;
}

void dp_dump_notes_nack(struct dp_dump_notes *n, int type, const char *name, const char *version,
                        const char *details, double now)
{
    struct dp_dump_note *e = note_get_or_add(n, type, name);
    note_clear_error(e);
    e->err_details = strdup(details ? details : "");
    e->err_version = strdup(version ? version : "");
    if (e->err_details == NULL || e->err_version == NULL)
        abort();
    e->err_at = now;
}

void dp_dump_notes_ack(struct dp_dump_notes *n, int type)
{
    for (size_t i = 0; i < n->t[type].n; i++)
        note_clear_error(&n->t[type].v[i]);
}

const struct dp_dump_note *dp_dump_notes_get(const struct dp_dump_notes *n, int type, const char *name)
{
    size_t i;
    return strmap_get(&n->t[type].idx, name, &i) ? &n->t[type].v[i] : NULL;
}

void dp_dump_notes_free(struct dp_dump_notes *n)
{
    for (int type = 0; type < XDS_T_N; type++) {
        for (size_t i = 0; i < n->t[type].n; i++) {
            note_clear_error(&n->t[type].v[i]);
            free(n->t[type].v[i].name);
        }
        free(n->t[type].v);
        strmap_free(&n->t[type].idx);
    }
    memset(n, 0, sizeof(*n));
}

/* ---- query strings --------------------------------------------------------------------- */

static int hexval(int c)
{
    return isdigit(c) ? c - '0' : isxdigit(c) ? (tolower(c) - 'a' + 10) : -1;
}

int dp_query_param(const char *query, const char *key, char *out, size_t outlen)
{
    size_t klen = strlen(key);
    for (const char *p = query; p && *p;) {
        const char *end = p + strcspn(p, "&");
        if (strncmp(p, key, klen) == 0 && (p[klen] == '=' || p + klen == end)) {
            const char *v = p + klen + (p[klen] == '=');
            size_t o = 0;
            for (; v < end && out && o + 1 < outlen; v++) {
                int hi, lo;
                if (*v == '%' && v + 2 < end && (hi = hexval(v[1])) >= 0 && (lo = hexval(v[2])) >= 0) {
                    out[o++] = (char)(hi * 16 + lo);
                    v += 2;
                } else {
                    out[o++] = *v == '+' ? ' ' : *v;
                }
            }
            if (out && outlen)
                out[o] = '\0';
            return 1;
        }
        p = *end ? end + 1 : end;
    }
    if (out && outlen)
        out[0] = '\0';
    return 0;
}

/* ---- building the dump -------------------------------------------------------------------- */

/* Everything a dump allocates, freed at once. The dump's messages point
 * into the bootstrap and the xDS tables (never changed): only what is made
 * here is freed. */
struct pool {
    void **v;
    size_t n, cap;
};

static void *palloc(struct pool *p, size_t size)
{
    void *m = calloc(1, size ? size : 1);
    if (m == NULL)
        abort();
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        void **v = realloc(p->v, cap * sizeof(*v));
        if (v == NULL)
            abort();
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = m;
    return m;
}

static void pool_free(struct pool *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->v[i]);
    free(p->v);
}

struct ctx {
    struct pool pool;
    const xds_bootstrap_t *bs;
    const struct dp_dump_view *v; /* NULL: static configuration only */
    double started;
    regex_t re;
    int re_on;                   /* ?name_regex= given */
};

static int name_ok(const struct ctx *c, const char *name)
{
    return !c->re_on || regexec(&c->re, name ? name : "", 0, NULL, 0) == 0;
}

static ProtobufCMessage *mnew(struct ctx *c, const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = palloc(&c->pool, d->sizeof_message);
    d->message_init(m);
    return m;
}

static const ProtobufCFieldDescriptor *field(const ProtobufCMessage *m, const char *name)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
    if (f == NULL)
        abort(); /* a field of config_dump.proto this file names wrongly */
    return f;
}

/* Sets a string or message field (singular) to p, which outlives the dump. */
static void mset(ProtobufCMessage *m, const char *name, const void *p)
{
    if (p)
        *(const void **)((char *)m + field(m, name)->offset) = p;
}

/* Appends message e to a repeated message field. */
static void madd(struct ctx *c, ProtobufCMessage *m, const char *name, const ProtobufCMessage *e)
{
    const ProtobufCFieldDescriptor *f = field(m, name);
    size_t *n = (size_t *)((char *)m + f->quantifier_offset);
    const ProtobufCMessage ***arr = (const ProtobufCMessage ***)((char *)m + f->offset);
    if ((*n & (*n - 1)) == 0) { /* 0 or a power of two: full */
        const ProtobufCMessage **v = palloc(&c->pool, (*n ? *n * 2 : 1) * sizeof(*v));
        if (*n)
            memcpy(v, *arr, *n * sizeof(*v));
        *arr = v;
    }
    (*arr)[(*n)++] = e;
}

/* m packed in an Any, as Envoy's dump holds each resource. */
static Google__Protobuf__Any *pack(struct ctx *c, const ProtobufCMessage *m)
{
    Google__Protobuf__Any *a = (Google__Protobuf__Any *)mnew(c, &google__protobuf__any__descriptor);
    size_t ul = strlen(m->descriptor->name) + 21;
    a->type_url = palloc(&c->pool, ul);
    snprintf(a->type_url, ul, "type.googleapis.com/%s", m->descriptor->name);
    a->value.len = protobuf_c_message_get_packed_size(m);
    a->value.data = palloc(&c->pool, a->value.len);
    protobuf_c_message_pack(m, a->value.data);
    return a;
}

static Google__Protobuf__Timestamp *stamp(struct ctx *c, double t)
{
    if (t <= 0)
        return NULL;
    Google__Protobuf__Timestamp *ts =
        (Google__Protobuf__Timestamp *)mnew(c, &google__protobuf__timestamp__descriptor);
    ts->seconds = (int64_t)t;
    ts->nanos = (int32_t)((t - (double)ts->seconds) * 1e9);
    if (ts->nanos < 0 || ts->nanos > 999999999)
        ts->nanos = 0;
    return ts;
}

static const struct dp_dump_note *note(const struct ctx *c, int type, const char *name)
{
    return c->v ? dp_dump_notes_get(c->v->notes, type, name) : NULL;
}

static double updated(const struct ctx *c, int type, const char *name)
{
    const struct dp_dump_note *e = note(c, type, name);
    return e ? e->updated : 0;
}

/* Envoy's UpdateFailureState for the last NACK naming the resource, or NULL.
 * failed_configuration stays empty: legate keeps no rejected resource
 * (Envoy's proto allows that). */
static ProtobufCMessage *error_state(struct ctx *c, const struct dp_dump_note *e)
{
    if (e == NULL || e->err_details == NULL)
        return NULL;
    ProtobufCMessage *m = mnew(c, &envoy__admin__v3__update_failure_state__descriptor);
    mset(m, "last_update_attempt", stamp(c, e->err_at));
    mset(m, "details", e->err_details);
    mset(m, "version_info", e->err_version);
    return m;
}

static const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *statics(const struct ctx *c)
{
    return c->bs->static_resources;
}

/* The bootstrap's static resources of one xDS type (v[0..n)), each an
 * entry of type ed in m's repeated field: the resource packed in any_field,
 * last_updated the start, and its name in "name" when named. */
static void add_static(struct ctx *c, ProtobufCMessage *m, const char *field, const ProtobufCMessageDescriptor *ed,
                       const char *any_field, int type, void *const *v, size_t n, int named)
{
    for (size_t i = 0; i < n; i++) {
        const ProtobufCMessage *r = v[i];
        const char *name = xds_resource_name(type, r);
        if (!name_ok(c, name))
            continue;
        ProtobufCMessage *e = mnew(c, ed);
        if (named)
            mset(e, "name", name);
        mset(e, any_field, pack(c, r));
        mset(e, "last_updated", stamp(c, c->started));
        madd(c, m, field, e);
    }
}

/* An accepted xDS resource as Envoy's Dynamic* entry of type ed: its
 * version, the resource packed in any_field, last_updated, error_state, and
 * its name when named. */
static ProtobufCMessage *dynamic_entry(struct ctx *c, const ProtobufCMessageDescriptor *ed, const char *any_field,
                                       int type, const struct dp_dump_res *r, int named)
{
    ProtobufCMessage *e = mnew(c, ed);
    if (named)
        mset(e, "name", r->name);
    mset(e, "version_info", r->version);
    mset(e, any_field, pack(c, r->msg));
    mset(e, "last_updated", stamp(c, updated(c, type, r->name)));
    mset(e, "error_state", error_state(c, note(c, type, r->name)));
    return e;
}

static ProtobufCMessage *bootstrap_dump(struct ctx *c)
{
    ProtobufCMessage *m = mnew(c, &envoy__admin__v3__bootstrap_config_dump__descriptor);
    mset(m, "bootstrap", c->bs);
    mset(m, "last_updated", stamp(c, c->started));
    return m;
}

static ProtobufCMessage *clusters_dump(struct ctx *c)
{
    ProtobufCMessage *m = mnew(c, &envoy__admin__v3__clusters_config_dump__descriptor);
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = statics(c);
    if (sr)
        add_static(c, m, "static_clusters", &envoy__admin__v3__clusters_config_dump__static_cluster__descriptor,
                   "cluster", XDS_CDS, (void *const *)sr->clusters, sr->n_clusters, 0);
    if (c->v == NULL)
        return m;
    mset(m, "version_info", c->v->t[XDS_CDS].version);
    for (size_t i = 0; i < c->v->t[XDS_CDS].n; i++) {
        const struct dp_dump_res *r = &c->v->t[XDS_CDS].v[i];
        if (name_ok(c, r->name))
            madd(c, m, r->warming ? "dynamic_warming_clusters" : "dynamic_active_clusters",
                 dynamic_entry(c, &envoy__admin__v3__clusters_config_dump__dynamic_cluster__descriptor, "cluster",
                               XDS_CDS, r, 0));
    }
    return m;
}

/* A cluster's inline endpoints as Envoy dumps them: named after the cluster
 * when they carry no name. */
static Google__Protobuf__Any *cla_of(struct ctx *c, const Envoy__Config__Cluster__V3__Cluster *cl)
{
    Envoy__Config__Endpoint__V3__ClusterLoadAssignment copy = *cl->load_assignment;
    if (copy.cluster_name == NULL || copy.cluster_name[0] == '\0')
        copy.cluster_name = cl->name;
    if (!name_ok(c, copy.cluster_name))
        return NULL;
    return pack(c, &copy.base);
}

static ProtobufCMessage *endpoints_dump(struct ctx *c)
{
    ProtobufCMessage *m = mnew(c, &envoy__admin__v3__endpoints_config_dump__descriptor);
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = statics(c);
    for (size_t i = 0; sr && i < sr->n_clusters; i++) {
        Google__Protobuf__Any *a = sr->clusters[i]->load_assignment ? cla_of(c, sr->clusters[i]) : NULL;
        if (a == NULL)
            continue;
        ProtobufCMessage *e =
            mnew(c, &envoy__admin__v3__endpoints_config_dump__static_endpoint_config__descriptor);
        mset(e, "endpoint_config", a);
        mset(e, "last_updated", stamp(c, c->started));
        madd(c, m, "static_endpoint_configs", e);
    }
    if (c->v == NULL)
        return m;
    /* Clusters from CDS with their endpoints inline, then EDS. */
    for (size_t i = 0; i < c->v->t[XDS_CDS].n; i++) {
        const struct dp_dump_res *r = &c->v->t[XDS_CDS].v[i];
        const Envoy__Config__Cluster__V3__Cluster *cl = (const Envoy__Config__Cluster__V3__Cluster *)r->msg;
        Google__Protobuf__Any *a = cl->load_assignment ? cla_of(c, cl) : NULL;
        if (a == NULL)
            continue;
        ProtobufCMessage *e =
            mnew(c, &envoy__admin__v3__endpoints_config_dump__dynamic_endpoint_config__descriptor);
        mset(e, "version_info", r->version);
        mset(e, "endpoint_config", a);
        mset(e, "last_updated", stamp(c, updated(c, XDS_CDS, r->name)));
        madd(c, m, "dynamic_endpoint_configs", e);
    }
    for (size_t i = 0; i < c->v->t[XDS_EDS].n; i++) {
        const struct dp_dump_res *r = &c->v->t[XDS_EDS].v[i];
        if (name_ok(c, r->name))
            madd(c, m, "dynamic_endpoint_configs",
                 dynamic_entry(c, &envoy__admin__v3__endpoints_config_dump__dynamic_endpoint_config__descriptor,
                               "endpoint_config", XDS_EDS, r, 0));
    }
    return m;
}

static ProtobufCMessage *listeners_dump(struct ctx *c)
{
    ProtobufCMessage *m = mnew(c, &envoy__admin__v3__listeners_config_dump__descriptor);
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = statics(c);
    if (sr)
        add_static(c, m, "static_listeners", &envoy__admin__v3__listeners_config_dump__static_listener__descriptor,
                   "listener", XDS_LDS, (void *const *)sr->listeners, sr->n_listeners, 0);
    if (c->v == NULL)
        return m;
    mset(m, "version_info", c->v->t[XDS_LDS].version);
    for (size_t i = 0; i < c->v->t[XDS_LDS].n; i++) {
        const struct dp_dump_res *r = &c->v->t[XDS_LDS].v[i];
        if (!name_ok(c, r->name))
            continue;
        ProtobufCMessage *st =
            mnew(c, &envoy__admin__v3__listeners_config_dump__dynamic_listener_state__descriptor);
        mset(st, "version_info", r->version);
        mset(st, "listener", pack(c, r->msg));
        mset(st, "last_updated", stamp(c, updated(c, XDS_LDS, r->name)));
        ProtobufCMessage *e = mnew(c, &envoy__admin__v3__listeners_config_dump__dynamic_listener__descriptor);
        mset(e, "name", r->name);
        mset(e, r->warming ? "warming_state" : "active_state", st);
        mset(e, "error_state", error_state(c, note(c, XDS_LDS, r->name)));
        madd(c, m, "dynamic_listeners", e);
    }
    /* A listener refused when it was new: Envoy lists it with its error
     * alone. */
    const struct dp_dump_notes *n = c->v->notes;
    for (size_t i = 0; i < n->t[XDS_LDS].n; i++) {
        const struct dp_dump_note *en = &n->t[XDS_LDS].v[i];
        if (en->in_table || en->err_details == NULL || !name_ok(c, en->name))
            continue;
        ProtobufCMessage *e = mnew(c, &envoy__admin__v3__listeners_config_dump__dynamic_listener__descriptor);
        mset(e, "name", en->name);
        mset(e, "error_state", error_state(c, en));
        madd(c, m, "dynamic_listeners", e);
    }
    return m;
}

/* Route configurations inline in listener l's HTTP connection managers:
 * Envoy's static_route_configs, whether the listener is static or not. */
static void inline_routes(struct ctx *c, ProtobufCMessage *m, const Envoy__Config__Listener__V3__Listener *l,
                          double when)
{
    for (size_t i = 0; i <= l->n_filter_chains; i++) {
        const Envoy__Config__Listener__V3__FilterChain *fc =
            i < l->n_filter_chains ? l->filter_chains[i] : l->default_filter_chain;
        for (size_t k = 0; fc && k < fc->n_filters; k++) {
            const Envoy__Config__Listener__V3__Filter *f = fc->filters[k];
            if (f->config_type_case != ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG ||
                f->typed_config == NULL ||
                xds_registry_lookup(f->typed_config->type_url) !=
                    &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor)
                continue;
            Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager *h =
                envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__unpack(
                    NULL, f->typed_config->value.len, f->typed_config->value.data);
            if (h &&
                h->route_specifier_case ==
                    ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG &&
                h->route_config && name_ok(c, h->route_config->name)) {
                ProtobufCMessage *e =
                    mnew(c, &envoy__admin__v3__routes_config_dump__static_route_config__descriptor);
                mset(e, "route_config", pack(c, &h->route_config->base));
                mset(e, "last_updated", stamp(c, when));
                madd(c, m, "static_route_configs", e);
            }
            if (h)
                envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__free_unpacked(
                    h, NULL);
        }
    }
}

static ProtobufCMessage *routes_dump(struct ctx *c)
{
    ProtobufCMessage *m = mnew(c, &envoy__admin__v3__routes_config_dump__descriptor);
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = statics(c);
    for (size_t i = 0; sr && i < sr->n_listeners; i++)
        inline_routes(c, m, sr->listeners[i], c->started);
    if (c->v == NULL)
        return m;
    for (size_t i = 0; i < c->v->t[XDS_LDS].n; i++) {
        const struct dp_dump_res *r = &c->v->t[XDS_LDS].v[i];
        inline_routes(c, m, (const Envoy__Config__Listener__V3__Listener *)r->msg, updated(c, XDS_LDS, r->name));
    }
    for (size_t i = 0; i < c->v->t[XDS_RDS].n; i++) {
        const struct dp_dump_res *r = &c->v->t[XDS_RDS].v[i];
        if (name_ok(c, r->name))
            madd(c, m, "dynamic_route_configs",
                 dynamic_entry(c, &envoy__admin__v3__routes_config_dump__dynamic_route_config__descriptor,
                               "route_config", XDS_RDS, r, 0));
    }
    return m;
}

static ProtobufCMessage *secrets_dump(struct ctx *c)
{
    ProtobufCMessage *m = mnew(c, &envoy__admin__v3__secrets_config_dump__descriptor);
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = statics(c);
    if (sr)
        add_static(c, m, "static_secrets", &envoy__admin__v3__secrets_config_dump__static_secret__descriptor,
                   "secret", XDS_SDS, (void *const *)sr->secrets, sr->n_secrets, 1);
    if (c->v == NULL)
        return m;
    for (size_t i = 0; i < c->v->t[XDS_SDS].n; i++) {
        const struct dp_dump_res *r = &c->v->t[XDS_SDS].v[i];
        if (name_ok(c, r->name))
            madd(c, m, "dynamic_active_secrets",
                 dynamic_entry(c, &envoy__admin__v3__secrets_config_dump__dynamic_secret__descriptor, "secret",
                               XDS_SDS, r, 1));
    }
    /* Asked for and not (yet) here: Envoy's warming secrets, by name. */
    const struct xds_names *subs = c->v->t[XDS_SDS].subs;
    for (size_t i = 0; subs && i < subs->n; i++) {
        const char *name = subs->v[i];
        int have = 0;
        for (size_t k = 0; k < c->v->t[XDS_SDS].n && !have; k++)
            have = strcmp(c->v->t[XDS_SDS].v[k].name, name) == 0;
        if (have || !name_ok(c, name))
            continue;
        ProtobufCMessage *e = mnew(c, &envoy__admin__v3__secrets_config_dump__dynamic_secret__descriptor);
        mset(e, "name", name);
        mset(e, "error_state", error_state(c, note(c, XDS_SDS, name)));
        madd(c, m, "dynamic_warming_secrets", e);
    }
    return m;
}

/* ---- masks ---------------------------------------------------------------------------------- */

/* Adds path ("a.b.c") to the mask tree root; a shorter path already there
 * keeps its field whole. */
static void mask_add(struct ctx *c, struct xds_json_mask *root, char *path)
{
    struct xds_json_mask *node = root;
    for (char *save = NULL, *seg = strtok_r(path, ".", &save); seg; seg = strtok_r(NULL, ".", &save)) {
        int last = save == NULL || *save == '\0';
        struct xds_json_mask *child = NULL;
        for (size_t i = 0; i < node->n_sub && !child; i++)
            if (strcmp(node->sub[i].name, seg) == 0)
                child = &node->sub[i];
        if (child && child->n_sub == 0)
            return; /* already whole */
        if (child == NULL) {
            if ((node->n_sub & (node->n_sub - 1)) == 0) {
                struct xds_json_mask *v = palloc(&c->pool, (node->n_sub ? node->n_sub * 2 : 1) * sizeof(*v));
                if (node->n_sub)
                    memcpy(v, node->sub, node->n_sub * sizeof(*v));
                node->sub = v;
            }
            child = &node->sub[node->n_sub++];
            *child = (struct xds_json_mask){.name = seg};
        }
        if (last) {
            child->n_sub = 0; /* whole */
            return;
        }
        node = child;
    }
}

/* Whether path names a field of d as Envoy's FieldMaskUtil reads it: every
 * step but the last a singular message field. */
static int path_ok(const ProtobufCMessageDescriptor *d, const char *path)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *save = NULL, *seg = strtok_r(buf, ".", &save); seg; seg = strtok_r(NULL, ".", &save)) {
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, seg);
        if (f == NULL)
            return 0;
        if (save == NULL || *save == '\0')
            return 1;
        if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED)
            return 0;
        d = f->descriptor;
    }
    return 0;
}

/* With ?resource=, a path may go on into the element's one Any (Envoy:
 * "cluster.name" for a DynamicCluster), checked against what it holds. */
static int resource_path_ok(const ProtobufCMessage *e, const char *path)
{
    size_t first = strcspn(path, ".");
    char seg[128];
    snprintf(seg, sizeof(seg), "%.*s", (int)first, path);
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(e->descriptor, seg);
    if (f && path[first] == '.' && f->type == PROTOBUF_C_TYPE_MESSAGE && f->label != PROTOBUF_C_LABEL_REPEATED &&
        f->descriptor == &google__protobuf__any__descriptor) {
        const Google__Protobuf__Any *a = *(const Google__Protobuf__Any *const *)((const char *)e + f->offset);
        const ProtobufCMessageDescriptor *inner = a ? xds_registry_lookup(a->type_url) : NULL;
        return a == NULL || (inner && path_ok(inner, path + first + 1));
    }
    return path_ok(e->descriptor, path);
}

/* Every comma-separated path of mask is path_ok for d (e NULL) or
 * resource_path_ok for e. */
static int mask_ok(const char *mask, const ProtobufCMessageDescriptor *d, const ProtobufCMessage *e)
{
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", mask);
    for (char *save = NULL, *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save))
        if (e ? !resource_path_ok(e, p) : !path_ok(d, p))
            return 0;
    return 1;
}

/* ---- the handler ----------------------------------------------------------------------------- */

__attribute__((format(printf, 4, 5))) static int fail(char **body, const char **ctype, int status,
                                                      const char *fmt, ...)
{
    struct xds_sb s = {0};
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    xds_sb_addf(&s, "%s\n", msg);
    *body = s.p;
    *ctype = "text/plain";
    return status;
}

int dp_config_dump_envoy(const xds_bootstrap_t *bs, time_t started, const struct dp_dump_view *view,
                         const char *query, char **body, const char **ctype)
{
    char resource[256], mask[1024], regex[512];
    struct ctx c = {.bs = bs, .v = view, .started = (double)started};
    int has_resource = dp_query_param(query, "resource", resource, sizeof(resource)) && resource[0];
    int has_mask = dp_query_param(query, "mask", mask, sizeof(mask)) && mask[0];
    int include_eds = dp_query_param(query, "include_eds", NULL, 0);
    if (dp_query_param(query, "name_regex", regex, sizeof(regex)) && regex[0]) {
        /* Envoy matches the whole name (RE2); here POSIX extended. */
        char anchored[sizeof(regex) + 8];
        snprintf(anchored, sizeof(anchored), "^(%s)$", regex);
        int rc = regcomp(&c.re, anchored, REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char why[200];
            regerror(rc, &c.re, why, sizeof(why));
            return fail(body, ctype, 400, "Error while parsing name_regex from %s: %s", regex, why);
        }
        c.re_on = 1;
    }
    /* Envoy's order. */
    ProtobufCMessage *dumps[7];
    size_t nd = 0;
    dumps[nd++] = bootstrap_dump(&c);
    dumps[nd++] = clusters_dump(&c);
    if (include_eds)
        dumps[nd++] = endpoints_dump(&c);
    dumps[nd++] = listeners_dump(&c);
    dumps[nd++] = mnew(&c, &envoy__admin__v3__scoped_routes_config_dump__descriptor);
    dumps[nd++] = routes_dump(&c);
    dumps[nd++] = secrets_dump(&c);

    Envoy__Admin__V3__ConfigDump cd = ENVOY__ADMIN__V3__CONFIG_DUMP__INIT;
    int status = 200;
    if (has_resource) {
        size_t i = 0;
        const ProtobufCFieldDescriptor *f = NULL;
        for (; i < nd && f == NULL; i++)
            f = protobuf_c_message_descriptor_get_field_by_name(dumps[i]->descriptor, resource);
        if (f == NULL) {
            status = fail(body, ctype, 404, "%s not found in config dump", resource);
            goto out;
        }
        if (f->label != PROTOBUF_C_LABEL_REPEATED) {
            status = fail(body, ctype, 400, "%s is not a repeated field. Use ?mask=%s to get only this field",
                          resource, resource);
            goto out;
        }
        const ProtobufCMessage *d = dumps[i - 1];
        size_t n = *(const size_t *)((const char *)d + f->quantifier_offset);
        const ProtobufCMessage *const *v = *(const ProtobufCMessage *const *const *)((const char *)d + f->offset);
        for (size_t k = 0; k < n; k++) {
            if (has_mask && !mask_ok(mask, NULL, v[k])) {
                status = fail(body, ctype, 400, "FieldMask %s could not be successfully used.", mask);
                goto out;
            }
            madd(&c, &cd.base, "configs", &pack(&c, v[k])->base);
        }
    } else {
        for (size_t i = 0; i < nd; i++)
            if (!has_mask || mask_ok(mask, dumps[i]->descriptor, NULL))
                madd(&c, &cd.base, "configs", &pack(&c, dumps[i])->base);
        if (has_mask && cd.n_configs == 0) {
            status = fail(body, ctype, 400, "FieldMask %s could not be successfully applied to any configs.",
                          mask);
            goto out;
        }
    }
    /* The mask applies inside each config. */
    struct xds_json_mask user = {0}, configs = {.name = "configs"}, root = {.sub = &configs, .n_sub = 1};
    if (has_mask) {
        for (char *save = NULL, *p = strtok_r(mask, ",", &save); p; p = strtok_r(NULL, ",", &save))
            mask_add(&c, &user, p);
        configs.sub = user.sub;
        configs.n_sub = user.n_sub;
    }
    struct xds_sb s = {0};
    xds_json_write_masked(&s, &cd.base, XDS_JSON_REDACT | XDS_JSON_REDACT_NESTED | XDS_JSON_EXACT | XDS_JSON_INDENT,
                          has_mask ? &root : NULL);
    xds_sb_add(&s, "\n", 1);
    *body = s.p;
    *ctype = "application/json";
out:
    if (c.re_on)
        regfree(&c.re);
    pool_free(&c.pool);
    return status;
}
