#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "pem.h"
#include "xds/convert.h"
#include "xds/datasource.h"
#include "xds/json.h"

#define TYPE_PREFIX "type.googleapis.com/"

const struct cp_type_info cp_types[CP_NTYPES] = {
    [CP_LDS] = {TYPE_PREFIX "envoy.config.listener.v3.Listener", "Listener", 1, "listeners",
                "name", &envoy__config__listener__v3__listener__descriptor},
    [CP_RDS] = {TYPE_PREFIX "envoy.config.route.v3.RouteConfiguration", "RouteConfiguration", 0,
                "routes", "name", &envoy__config__route__v3__route_configuration__descriptor},
    [CP_CDS] = {TYPE_PREFIX "envoy.config.cluster.v3.Cluster", "Cluster", 1, "clusters", "name",
                &envoy__config__cluster__v3__cluster__descriptor},
    [CP_EDS] = {TYPE_PREFIX "envoy.config.endpoint.v3.ClusterLoadAssignment",
                "ClusterLoadAssignment", 0, "endpoints", "cluster_name",
                &envoy__config__endpoint__v3__cluster_load_assignment__descriptor},
    [CP_SDS] = {TYPE_PREFIX "envoy.extensions.transport_sockets.tls.v3.Secret", "Secret", 0,
                "secrets", "name", &envoy__extensions__transport_sockets__tls__v3__secret__descriptor},
};

int cp_type_from_url(const char *url)
{
    for (int t = 0; t < CP_NTYPES; t++)
        if (strcmp(url, cp_types[t].url) == 0)
            return t;
    return -1;
}

static int verr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int verr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* The repeated message field named field of m: its count and array. */
static size_t list_of(const ProtobufCMessage *m, const char *field, ProtobufCMessage *const **arr)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, field);
    *arr = *(ProtobufCMessage *const **)((const char *)m + f->offset);
    return *(const size_t *)((const char *)m + f->quantifier_offset);
}

/* ---- secrets: file DataSources become inline_bytes ---------------------- */

struct walk {
    struct xds_path path;
    char *err;
    size_t errlen;
    int collect;  /* only list the files (the message is not changed) */
    char **files; /* collect: what was found, unique */
    size_t n_files;
};


static int collect_file(struct walk *w, const char *name)
{
    for (size_t i = 0; i < w->n_files; i++)
        if (strcmp(w->files[i], name) == 0)
            return 0;
    char **v = realloc(w->files, (w->n_files + 1) * sizeof(*v));
    if (v == NULL)
        return -1;
    w->files = v;
    if ((v[w->n_files] = strdup(name)) == NULL)
        return -1;
    w->n_files++;
    return 0;
}

static int inline_file(struct walk *w, Envoy__Config__Core__V3__DataSource *ds)
{
    if (ds->specifier_case != ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME)
        return 0;
    if (w->collect)
        return collect_file(w, ds->filename);
    size_t len;
    char *data = xds_read_file(ds->filename, &len);
    if (data == NULL)
        return verr(w->err, w->errlen, "%s.filename: %s: %s", w->path.s, ds->filename,
                    strerror(errno));
    /* filename and inline_bytes share the oneof's storage. */
    free(ds->filename);
    ds->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES;
    ds->inline_bytes.data = (uint8_t *)data;
    ds->inline_bytes.len = len;
    return 0;
}

static int walk_message(struct walk *w, ProtobufCMessage *m);

static int walk_child(struct walk *w, ProtobufCMessage *child)
{
    if (child->descriptor == &envoy__config__core__v3__data_source__descriptor)
        return inline_file(w, (Envoy__Config__Core__V3__DataSource *)child);
    if (child->descriptor == &google__protobuf__any__descriptor)
        return 0; /* already packed; nothing of ours inside */
    return walk_message(w, child);
}

/* Visits every set message field below m, depth first. */
static int walk_message(struct walk *w, ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    char *base = (char *)m;

    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(size_t *)(base + f->quantifier_offset);
            ProtobufCMessage **arr = *(ProtobufCMessage ***)(base + f->offset);
            for (size_t j = 0; j < n; j++) {
                size_t mark = xds_path_push(&w->path, ".%s[%zu]", f->name, j);
                if (walk_child(w, arr[j]) < 0)
                    return -1;
                xds_path_pop(&w->path, mark);
            }
        } else {
            ProtobufCMessage *child = *(ProtobufCMessage **)(base + f->offset);
            if (child == NULL)
                continue;
            size_t mark = xds_path_push(&w->path, ".%s", f->name);
            if (walk_child(w, child) < 0)
                return -1;
            xds_path_pop(&w->path, mark);
        }
    }
    return 0;
}

/* ---- secrets: checks ------------------------------------------------------ */

/* The bytes of an inline DataSource (files are inlined by now), or NULL
 * with the reason in err. *buf is what to free. */
static int ds_bytes(const Envoy__Config__Core__V3__DataSource *ds, char **buf, size_t *len,
                    char *err, size_t errlen)
{
    *buf = NULL;
    return xds_datasource_read(ds, buf, len, err, errlen);
}

static void free_key(char *p, size_t len)
{
    if (p)
        explicit_bzero(p, len);
    free(p);
}

/* Certificates and keys of one secret must load: a bad one is refused here,
 * naming the field, rather than NACKed by every data plane. Expiry is left
 * to the data plane (it may be told to accept expired certificates). */
static int check_secret(const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s,
                        const char *path, char *err, size_t errlen)
{
    char msg[256];
    char *chain = NULL, *key = NULL, *ca = NULL;
    size_t clen = 0, klen = 0, calen = 0;
    int rc = 0;

    if (s->type_case == ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE) {
        const Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate *tc = s->tls_certificate;
        if (tc->certificate_chain) {
            if (ds_bytes(tc->certificate_chain, &chain, &clen, msg, sizeof(msg)) < 0 ||
                cp_pem_check_certs(chain, clen, msg, sizeof(msg)) < 0) {
                rc = verr(err, errlen, "%s.tls_certificate.certificate_chain: %s", path, msg);
                goto out;
            }
        }
        /* A password-protected key is the data plane's to open. */
        if (tc->private_key && tc->certificate_chain && tc->password == NULL) {
            if (ds_bytes(tc->private_key, &key, &klen, msg, sizeof(msg)) < 0 ||
                cp_pem_check_key(key, klen, chain, clen, "certificate_chain", msg, sizeof(msg)) <
                    0) {
                rc = verr(err, errlen, "%s.tls_certificate.private_key: %s", path, msg);
                goto out;
            }
        }
    } else if (s->type_case ==
                   ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT &&
               s->validation_context->trusted_ca) {
        if (ds_bytes(s->validation_context->trusted_ca, &ca, &calen, msg, sizeof(msg)) < 0 ||
            cp_pem_check_certs(ca, calen, msg, sizeof(msg)) < 0)
            rc = verr(err, errlen, "%s.validation_context.trusted_ca: %s", path, msg);
    }
out:
    free(chain);
    free_key(key, klen);
    free(ca);
    return rc;
}

/* ---- packing ------------------------------------------------------------- */

static const char *resource_name(const ProtobufCMessage *m, const char *key)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, key);
    if (f == NULL || f->type != PROTOBUF_C_TYPE_STRING)
        return NULL;
    return *(char *const *)((const char *)m + f->offset);
}

static int pack_one(struct cp_resource *r, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    if ((r->data = malloc(len ? len : 1)) == NULL)
        return -1;
    r->len = protobuf_c_message_pack(m, r->data);
    return 0;
}

/* A secret with its files read, checked, then packed. */
static int pack_secret(struct cp_resource *r, const ProtobufCMessage *m, const char *path,
                       char *err, size_t errlen)
{
    struct cp_resource tmp = {0};
    if (pack_one(&tmp, m) < 0)
        return verr(err, errlen, "out of memory");
    ProtobufCMessage *copy = protobuf_c_message_unpack(m->descriptor, NULL, tmp.len, tmp.data);
    free(tmp.data);
    if (copy == NULL)
        return verr(err, errlen, "out of memory");
    struct walk w = {.err = err, .errlen = errlen};
    xds_path_push(&w.path, "%s", path);
    int rc = walk_message(&w, copy);
    if (rc == 0)
        rc = check_secret((const Envoy__Extensions__TransportSockets__Tls__V3__Secret *)copy,
                          path, err, errlen);
    if (rc == 0 && pack_one(r, copy) < 0)
        rc = verr(err, errlen, "out of memory");
    protobuf_c_message_free_unpacked(copy, NULL);
    return rc;
}

/* Resource names are unique within a list: with 10,000 clusters, checking
 * that pair by pair, or looking names up one by one, is 10^8 string
 * comparisons per change. Lists are sorted by name once instead. */
struct named {
    const char *name;
    size_t i;
};

static int cmp_named(const void *a, const void *b)
{
    const struct named *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

static int cmp_res_name(const void *a, const void *b)
{
    const struct cp_resource *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static int cmp_key_res(const void *key, const void *elem)
{
    const struct cp_resource *const *r = elem;
    return strcmp(key, (*r)->name);
}

static const struct cp_resource *lookup(const struct cp_resource *const *by_name, size_t n,
                                        const char *name)
{
    const struct cp_resource *const *r =
        n ? bsearch(name, by_name, n, sizeof(*by_name), cmp_key_res) : NULL;
    return r ? *r : NULL;
}

/* The first name of arr[] used before (the smallest i with a j < i of the
 * same name, and that j), as the pairwise check would find it. Names may be
 * NULL or empty (reported elsewhere). Returns 0 when none, -1 when out of
 * memory. */
static int first_duplicate(ProtobufCMessage *const *arr, size_t n, const char *key, size_t *dup_i,
                           size_t *dup_j)
{
    struct named *v = malloc((n ? n : 1) * sizeof(*v));
    size_t m = 0;
    int found = 0;
    if (v == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *name = resource_name(arr[i], key);
        if (name && name[0])
            v[m++] = (struct named){name, i};
    }
    qsort(v, m, sizeof(*v), cmp_named);
    for (size_t k = 1; k < m; k++) {
        /* v[k - 1] starts a run of one name, or continues it */
        if (strcmp(v[k - 1].name, v[k].name) != 0)
            continue;
        size_t first = k - 1;
        while (first > 0 && strcmp(v[first - 1].name, v[k].name) == 0)
            first--;
        if (!found || v[k].i < *dup_i) {
            *dup_i = v[k].i;
            *dup_j = v[first].i;
            found = 1;
        }
        while (k + 1 < m && strcmp(v[k + 1].name, v[k].name) == 0)
            k++;
    }
    free(v);
    return found;
}

/* Packs the list of type t of m (a ControlConfig or a NodeScope) into rs;
 * prefix ("" or "nodes[1].") starts each path in a message. */
static int pack_type(struct cp_rset *rs, enum cp_type t, const ProtobufCMessage *m,
                     const char *prefix, char *err, size_t errlen)
{
    const char *field = cp_types[t].field, *key = cp_types[t].key;
    ProtobufCMessage *const *arr;
    size_t n = list_of(m, field, &arr);

    if (n == 0)
        return 0;
    size_t dup_i = 0, dup_j = 0;
    int dup = first_duplicate(arr, n, key, &dup_i, &dup_j);
    if (dup < 0 || (rs->res[t] = calloc(n, sizeof(*rs->res[t]))) == NULL ||
        (rs->by_name[t] = calloc(n, sizeof(*rs->by_name[t]))) == NULL)
        return verr(err, errlen, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const char *name = resource_name(arr[i], key);
        if (name == NULL || name[0] == '\0')
            return verr(err, errlen, "%s%s[%zu].%s: a name is required", prefix, field, i, key);
        if (dup && i == dup_i)
            return verr(err, errlen, "%s%s[%zu].%s: \"%s\" is already used by %s[%zu]", prefix,
                        field, i, key, name, field, dup_j);
        struct cp_resource *r = &rs->res[t][i];
        rs->n[t] = i + 1;
        if ((r->name = strdup(name)) == NULL)
            return verr(err, errlen, "out of memory");
        if (t == CP_SDS) {
            char path[128];
            snprintf(path, sizeof(path), "%s%s[%zu]", prefix, field, i);
            if (pack_secret(r, arr[i], path, err, errlen) < 0)
                return -1;
        } else if (pack_one(r, arr[i]) < 0) {
            return verr(err, errlen, "out of memory");
        }
        rs->by_name[t][i] = r;
    }
    qsort(rs->by_name[t], n, sizeof(*rs->by_name[t]), cmp_res_name);
    return 0;
}

int cp_config_build(const Legate__Control__V1__ControlConfig *cc, struct cp_config **out,
                    char *err, size_t errlen)
{
    struct cp_config *cfg = calloc(1, sizeof(*cfg));

    *out = NULL;
    if (cfg == NULL)
        return verr(err, errlen, "out of memory");
    for (int t = 0; t < CP_NTYPES; t++)
        if (pack_type(&cfg->global, (enum cp_type)t, &cc->base, "", err, errlen) < 0)
            goto fail;
    if (cc->n_nodes && (cfg->scopes = calloc(cc->n_nodes, sizeof(*cfg->scopes))) == NULL) {
        verr(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < cc->n_nodes; i++) {
        const Legate__Control__V1__NodeScope *ns = cc->nodes[i];
        struct cp_scope *sc = &cfg->scopes[i];
        char prefix[32];
        cfg->n_scopes = i + 1;
        if (ns->node_id[0] == '\0' && ns->node_cluster[0] == '\0') {
            verr(err, errlen, "nodes[%zu]: node_id or node_cluster is required", i);
            goto fail;
        }
        if ((sc->node_id = strdup(ns->node_id)) == NULL ||
            (sc->node_cluster = strdup(ns->node_cluster)) == NULL) {
            verr(err, errlen, "out of memory");
            goto fail;
        }
        snprintf(prefix, sizeof(prefix), "nodes[%zu].", i);
        for (int t = 0; t < CP_NTYPES; t++)
            if (pack_type(&sc->rs, (enum cp_type)t, &ns->base, prefix, err, errlen) < 0)
                goto fail;
    }
    *out = cfg;
    return 0;
fail:
    cp_config_free(cfg);
    return -1;
}

int cp_config_load(const char *path, struct cp_config **out, char *err, size_t errlen)
{
    char msg[1024];
    ProtobufCMessage *m;

    *out = NULL;
    if (xds_convert_file(path, &legate__control__v1__control_config__descriptor, &m, msg,
                         sizeof(msg)) < 0) {
        /* File-level errors already carry the path. */
        if (strncmp(msg, path, strlen(path)) == 0)
            return verr(err, errlen, "%s", msg);
        return verr(err, errlen, "%s: %s", path, msg);
    }
    int rc = cp_config_build((Legate__Control__V1__ControlConfig *)m, out, msg, sizeof(msg));
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc < 0)
        return verr(err, errlen, "%s: %s", path, msg);
    return 0;
}

static void free_rset(struct cp_rset *rs)
{
    for (int t = 0; t < CP_NTYPES; t++) {
        for (size_t i = 0; i < rs->n[t]; i++) {
            free(rs->res[t][i].name);
            /* Secrets' packed bytes hold key material. */
            if (t == CP_SDS && rs->res[t][i].data)
                explicit_bzero(rs->res[t][i].data, rs->res[t][i].len);
            free(rs->res[t][i].data);
        }
        free(rs->res[t]);
        free(rs->by_name[t]);
    }
}

void cp_config_free(struct cp_config *cfg)
{
    if (cfg == NULL)
        return;
    free_rset(&cfg->global);
    for (size_t i = 0; i < cfg->n_scopes; i++) {
        free(cfg->scopes[i].node_id);
        free(cfg->scopes[i].node_cluster);
        free_rset(&cfg->scopes[i].rs);
    }
    free(cfg->scopes);
    free(cfg);
}

static int rset_equal(const struct cp_rset *a, const struct cp_rset *b)
{
    for (int t = 0; t < CP_NTYPES; t++) {
        if (a->n[t] != b->n[t])
            return 0;
        for (size_t i = 0; i < a->n[t]; i++) {
            const struct cp_resource *x = &a->res[t][i], *y = &b->res[t][i];
            if (strcmp(x->name, y->name) != 0 || x->len != y->len ||
                memcmp(x->data, y->data, x->len) != 0)
                return 0;
        }
    }
    return 1;
}

int cp_config_equal(const struct cp_config *a, const struct cp_config *b)
{
    if (!rset_equal(&a->global, &b->global) || a->n_scopes != b->n_scopes)
        return 0;
    for (size_t i = 0; i < a->n_scopes; i++) {
        const struct cp_scope *x = &a->scopes[i], *y = &b->scopes[i];
        if (strcmp(x->node_id, y->node_id) != 0 || strcmp(x->node_cluster, y->node_cluster) != 0 ||
            !rset_equal(&x->rs, &y->rs))
            return 0;
    }
    return 1;
}

static int scope_matches(const struct cp_scope *sc, const char *id, const char *cluster)
{
    return (sc->node_id[0] == '\0' || strcmp(sc->node_id, id) == 0) &&
           (sc->node_cluster[0] == '\0' || strcmp(sc->node_cluster, cluster) == 0);
}

size_t cp_config_select(const struct cp_config *cfg, const char *node_id, const char *node_cluster,
                        enum cp_type t, char *const *names, size_t n_names,
                        const struct cp_resource ***sel)
{
    size_t cap = cfg->global.n[t], n = 0;
    for (size_t i = 0; i < cfg->n_scopes; i++)
        if (scope_matches(&cfg->scopes[i], node_id, node_cluster))
            cap += cfg->scopes[i].rs.n[t];

    const struct cp_resource **all = calloc(cap ? cap : 1, sizeof(*all));
    *sel = NULL;
    if (all == NULL)
        return 0;
    const struct cp_rset *g = &cfg->global;
    for (size_t i = 0; i < g->n[t]; i++)
        all[n++] = &g->res[t][i];
    int overlaid = 0;
    for (size_t i = 0; i < cfg->n_scopes; i++) {
        const struct cp_scope *sc = &cfg->scopes[i];
        if (!scope_matches(sc, node_id, node_cluster))
            continue;
        for (size_t j = 0; j < sc->rs.n[t]; j++) {
            const struct cp_resource *r = &sc->rs.res[t][j];
            /* a global one of that name: replaced in place */
            const struct cp_resource *gr = lookup(g->by_name[t], g->n[t], r->name);
            size_t k = gr ? (size_t)(gr - g->res[t]) : g->n[t];
            if (gr == NULL) /* else one a scope added (few): after the global ones */
                while (k < n && strcmp(all[k]->name, r->name) != 0)
                    k++;
            all[k] = r;
            if (k == n)
                n++;
            overlaid = 1;
        }
    }
    if (names == NULL) {
        *sel = all;
        return n;
    }
    const struct cp_resource **v = calloc(n_names ? n_names : 1, sizeof(*v));
    const struct cp_resource *const *idx = g->by_name[t];
    const struct cp_resource **sorted = NULL;
    size_t m = 0;
    if (v != NULL && overlaid) {
        /* scopes changed the list: index this node's own */
        if ((sorted = malloc((n ? n : 1) * sizeof(*sorted))) != NULL) {
            memcpy(sorted, all, n * sizeof(*sorted));
            qsort(sorted, n, sizeof(*sorted), cmp_res_name);
        }
        idx = sorted;
    }
    if (v == NULL || (overlaid && sorted == NULL)) {
        free(v);
        free(all);
        return 0;
    }
    for (size_t i = 0; i < n_names; i++) {
        const struct cp_resource *r = idx ? lookup(idx, n, names[i]) : NULL;
        if (r)
            v[m++] = r;
    }
    free(sorted);
    free(all);
    *sel = v;
    return m;
}

const struct cp_resource *cp_config_find(const struct cp_config *cfg, enum cp_type t,
                                         const char *name)
{
    return lookup(cfg->global.by_name[t], cfg->global.n[t], name);
}

/* ---- files ---------------------------------------------------------------- */

static int collect_list(struct walk *w, const ProtobufCMessage *m)
{
    ProtobufCMessage *const *arr;
    size_t n = list_of(m, cp_types[CP_SDS].field, &arr);
    for (size_t i = 0; i < n; i++)
        if (walk_message(w, arr[i]) < 0)
            return -1;
    return 0;
}

int cp_config_files(const Legate__Control__V1__ControlConfig *cc, char ***out, size_t *n)
{
    /* In collect mode the walk only reads: the casts drop no promise. */
    struct walk w = {.collect = 1};
    char err[8];
    w.err = err;
    w.errlen = sizeof(err);
    int rc = collect_list(&w, &cc->base);
    for (size_t i = 0; rc == 0 && i < cc->n_nodes; i++)
        rc = collect_list(&w, &cc->nodes[i]->base);
    if (rc < 0) {
        cp_config_files_free(w.files, w.n_files);
        *out = NULL;
        *n = 0;
        return -1;
    }
    *out = w.files;
    *n = w.n_files;
    return 0;
}

void cp_config_files_free(char **files, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(files[i]);
    free(files);
}
