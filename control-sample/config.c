#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "legate/control/v1/control.pb-c.h"
#include "xds/convert.h"

#define TYPE_PREFIX "type.googleapis.com/"

const struct cp_type_info cp_types[CP_NTYPES] = {
    [CP_LDS] = {TYPE_PREFIX "envoy.config.listener.v3.Listener", "Listener", 1},
    [CP_RDS] = {TYPE_PREFIX "envoy.config.route.v3.RouteConfiguration", "RouteConfiguration", 0},
    [CP_CDS] = {TYPE_PREFIX "envoy.config.cluster.v3.Cluster", "Cluster", 1},
    [CP_EDS] = {TYPE_PREFIX "envoy.config.endpoint.v3.ClusterLoadAssignment",
                "ClusterLoadAssignment", 0},
    [CP_SDS] = {TYPE_PREFIX "envoy.extensions.transport_sockets.tls.v3.Secret", "Secret", 0},
};

/* Where each type lives in ControlConfig, and which field names it. */
static const struct {
    const char *field; /* ControlConfig field */
    const char *key;   /* the resource's name field */
} type_source[CP_NTYPES] = {
    [CP_LDS] = {"listeners", "name"},     [CP_RDS] = {"routes", "name"},
    [CP_CDS] = {"clusters", "name"},      [CP_EDS] = {"endpoints", "cluster_name"},
    [CP_SDS] = {"secrets", "name"},
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

/* ---- secrets: file DataSources become inline_bytes ---------------------- */

struct walk {
    char path[512];
    size_t len;
    char *err;
    size_t errlen;
};

static size_t path_push(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static size_t path_push(struct walk *w, const char *fmt, ...)
{
    size_t mark = w->len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(w->path + w->len, sizeof(w->path) - w->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        w->len += (size_t)n < sizeof(w->path) - w->len ? (size_t)n : sizeof(w->path) - w->len - 1;
    return mark;
}

static void path_pop(struct walk *w, size_t mark)
{
    w->len = mark;
    w->path[mark] = '\0';
}

static int inline_file(struct walk *w, Envoy__Config__Core__V3__DataSource *ds)
{
    if (ds->specifier_case != ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME)
        return 0;
    size_t len;
    char *data = xds_read_file(ds->filename, &len);
    if (data == NULL)
        return verr(w->err, w->errlen, "%s.filename: %s: %s", w->path, ds->filename,
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
                size_t mark = path_push(w, ".%s[%zu]", f->name, j);
                if (walk_child(w, arr[j]) < 0)
                    return -1;
                path_pop(w, mark);
            }
        } else {
            ProtobufCMessage *child = *(ProtobufCMessage **)(base + f->offset);
            if (child == NULL)
                continue;
            size_t mark = path_push(w, ".%s", f->name);
            if (walk_child(w, child) < 0)
                return -1;
            path_pop(w, mark);
        }
    }
    return 0;
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

static int pack_type(struct cp_config *cfg, enum cp_type t, const ProtobufCMessage *cc, char *err,
                     size_t errlen)
{
    const char *field = type_source[t].field, *key = type_source[t].key;
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(cc->descriptor, field);
    size_t n = *(const size_t *)((const char *)cc + f->quantifier_offset);
    ProtobufCMessage *const *arr = *(ProtobufCMessage *const **)((const char *)cc + f->offset);

    if (n == 0)
        return 0;
    if ((cfg->res[t] = calloc(n, sizeof(*cfg->res[t]))) == NULL)
        return verr(err, errlen, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const char *name = resource_name(arr[i], key);
        if (name == NULL || name[0] == '\0')
            return verr(err, errlen, "%s[%zu].%s: a name is required", field, i, key);
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->res[t][j].name, name) == 0)
                return verr(err, errlen, "%s[%zu].%s: \"%s\" is already used by %s[%zu]", field,
                            i, key, name, field, j);
        struct cp_resource *r = &cfg->res[t][i];
        size_t len = protobuf_c_message_get_packed_size(arr[i]);
        r->name = strdup(name);
        r->data = malloc(len ? len : 1);
        cfg->n[t] = i + 1;
        if (r->name == NULL || r->data == NULL)
            return verr(err, errlen, "out of memory");
        r->len = protobuf_c_message_pack(arr[i], r->data);
    }
    return 0;
}

int cp_config_load(const char *path, struct cp_config **out, char *err, size_t errlen)
{
    char msg[1024];
    ProtobufCMessage *m;
    struct cp_config *cfg = NULL;

    *out = NULL;
    if (xds_convert_file(path, &legate__control__v1__control_config__descriptor, &m, msg,
                         sizeof(msg)) < 0) {
        /* File-level errors already carry the path. */
        if (strncmp(msg, path, strlen(path)) == 0)
            return verr(err, errlen, "%s", msg);
        return verr(err, errlen, "%s: %s", path, msg);
    }
    Legate__Control__V1__ControlConfig *cc = (Legate__Control__V1__ControlConfig *)m;

    for (size_t i = 0; i < cc->n_secrets; i++) {
        struct walk w = {.err = msg, .errlen = sizeof(msg)};
        path_push(&w, "secrets[%zu]", i);
        if (walk_message(&w, &cc->secrets[i]->base) < 0)
            goto fail;
    }
    if ((cfg = calloc(1, sizeof(*cfg))) == NULL) {
        snprintf(msg, sizeof(msg), "out of memory");
        goto fail;
    }
    for (int t = 0; t < CP_NTYPES; t++)
        if (pack_type(cfg, (enum cp_type)t, m, msg, sizeof(msg)) < 0)
            goto fail;
    protobuf_c_message_free_unpacked(m, NULL);
    *out = cfg;
    return 0;

fail:
    cp_config_free(cfg);
    protobuf_c_message_free_unpacked(m, NULL);
    return verr(err, errlen, "%s: %s", path, msg);
}

void cp_config_free(struct cp_config *cfg)
{
    if (cfg == NULL)
        return;
    for (int t = 0; t < CP_NTYPES; t++) {
        for (size_t i = 0; i < cfg->n[t]; i++) {
            free(cfg->res[t][i].name);
            /* Secrets' packed bytes hold key material. */
            if (t == CP_SDS && cfg->res[t][i].data)
                explicit_bzero(cfg->res[t][i].data, cfg->res[t][i].len);
            free(cfg->res[t][i].data);
        }
        free(cfg->res[t]);
    }
    free(cfg);
}

const struct cp_resource *cp_config_find(const struct cp_config *cfg, enum cp_type t,
                                         const char *name)
{
    for (size_t i = 0; i < cfg->n[t]; i++)
        if (strcmp(cfg->res[t][i].name, name) == 0)
            return &cfg->res[t][i];
    return NULL;
}
