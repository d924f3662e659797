/* The bootstrap's layered_runtime (runtime.h). */
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xds/cfgerr.h"
#include "xds/log.h"

#define GLOBAL_MAX "overload.global_downstream_max_connections"
#define LISTENER_PREFIX "envoy.resource_limits.listener."
#define LISTENER_SUFFIX ".connection_limit"

static const struct dp_runtime *installed;

static int is_feature_flag(const char *key)
{
    static const char *const prefixes[] = {"envoy.reloadable_features.", "envoy.restart_features.",
                                           "envoy.deprecated_features", "re2.max_program_size."};
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (strncmp(key, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    return 0;
}

/* A non-negative whole number (a runtime number is a double). */
static int count_value(const Google__Protobuf__Value *v, double max, uint64_t *out)
{
    if (v->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE)
        return -1;
    double d = v->number_value;
    if (!(d >= 0) || d > max || (double)(uint64_t)d != d)
        return -1;
    *out = (uint64_t)d;
    return 0;
}

static int set_listener_limit(struct dp_runtime *rt, const char *name, size_t n, uint64_t limit)
{
    for (size_t i = 0; i < rt->n_listener_limits; i++)
        if (strlen(rt->listener_limits[i].listener) == n && strncmp(rt->listener_limits[i].listener, name, n) == 0) {
            rt->listener_limits[i].limit = limit; /* a later layer wins */
            return 0;
        }
    struct dp_runtime_limit *nv = realloc(rt->listener_limits, (rt->n_listener_limits + 1) * sizeof(*nv));
    if (nv == NULL)
        return -1;
    rt->listener_limits = nv;
    nv[rt->n_listener_limits].listener = strndup(name, n);
    if (nv[rt->n_listener_limits].listener == NULL)
        return -1;
    nv[rt->n_listener_limits++].limit = limit;
    return 0;
}

static int apply_key(struct dp_runtime *rt, const char *key, const Google__Protobuf__Value *v, const char *path,
                     struct xds_cfgerr *e)
{
    uint64_t n;
    size_t kl = strlen(key), pl = strlen(LISTENER_PREFIX), sl = strlen(LISTENER_SUFFIX);
    if (strcmp(key, GLOBAL_MAX) == 0) {
        if (count_value(v, 9.2e18, &n) < 0)
            return xds_cfg_fail(e, "%s[\"%s\"]: must be a whole number >= 0", path, key);
        rt->global_max_connections = (int64_t)n;
        return 0;
    }
    if (kl > pl + sl && strncmp(key, LISTENER_PREFIX, pl) == 0 && strcmp(key + kl - sl, LISTENER_SUFFIX) == 0) {
        if (count_value(v, 9.2e18, &n) < 0)
            return xds_cfg_fail(e, "%s[\"%s\"]: must be a whole number >= 0", path, key);
        if (set_listener_limit(rt, key + pl, kl - pl - sl, n) < 0)
            return xds_cfg_fail(e, "out of memory");
        return 0;
    }
    if (is_feature_flag(key)) {
        LG_I("runtime", "%s[\"%s\"]: an Envoy feature flag, which legate has no switch for: no effect", path, key);
        return 0;
    }
    return xds_cfg_fail(e, "%s[\"%s\"]: runtime key not used by legate (it honours %s and %s<listener name>%s; "
                        "Envoy feature flags are accepted without effect)", path, key, GLOBAL_MAX, LISTENER_PREFIX,
                        LISTENER_SUFFIX);
}

/* Walks a Struct, nested objects as dotted keys (Envoy's rule). */
static int walk(struct dp_runtime *rt, const Google__Protobuf__Struct *st, const char *prefix, const char *path,
                struct xds_cfgerr *e)
{
    for (size_t i = 0; i < st->n_fields; i++) {
        const Google__Protobuf__Struct__FieldsEntry *f = st->fields[i];
        char key[512];
        if (snprintf(key, sizeof(key), "%s%s%s", prefix, prefix[0] ? "." : "", f->key) >= (int)sizeof(key))
            return xds_cfg_fail(e, "%s: runtime key longer than %zu bytes", path, sizeof(key) - 1);
        if (f->value && f->value->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE) {
            if (walk(rt, f->value->struct_value, key, path, e) < 0)
                return -1;
            continue;
        }
        if (f->value == NULL)
            continue;
        if (apply_key(rt, key, f->value, path, e) < 0)
            return -1;
    }
    return 0;
}

int dp_runtime_build(const Envoy__Config__Bootstrap__V3__LayeredRuntime *lr, struct dp_runtime *rt, char *err,
                     size_t errlen)
{
    struct xds_cfgerr e = {err, errlen};
    memset(rt, 0, sizeof(*rt));
    for (size_t i = 0; lr && i < lr->n_layers; i++) {
        const Envoy__Config__Bootstrap__V3__RuntimeLayer *l = lr->layers[i];
        char path[96];
        switch (l->layer_specifier_case) {
        case ENVOY__CONFIG__BOOTSTRAP__V3__RUNTIME_LAYER__LAYER_SPECIFIER_STATIC_LAYER:
            snprintf(path, sizeof(path), "layered_runtime.layers[%zu].static_layer", i);
            if (walk(rt, l->static_layer, "", path, &e) < 0)
                goto fail;
            break;
        case ENVOY__CONFIG__BOOTSTRAP__V3__RUNTIME_LAYER__LAYER_SPECIFIER_ADMIN_LAYER:
            break; /* runtime changes through the admin: legate has none to make */
        case ENVOY__CONFIG__BOOTSTRAP__V3__RUNTIME_LAYER__LAYER_SPECIFIER_DISK_LAYER:
            xds_cfg_fail(&e, "layered_runtime.layers[%zu].disk_layer: not supported by legate (use a static_layer)", i);
            goto fail;
        case ENVOY__CONFIG__BOOTSTRAP__V3__RUNTIME_LAYER__LAYER_SPECIFIER_RTDS_LAYER:
            xds_cfg_fail(&e, "layered_runtime.layers[%zu].rtds_layer: not supported by legate (use a static_layer)", i);
            goto fail;
        default:
            xds_cfg_fail(&e, "layered_runtime.layers[%zu]: one of static_layer, admin_layer is required", i);
            goto fail;
        }
    }
    return 0;
fail:
    dp_runtime_free(rt);
    return -1;
}

void dp_runtime_free(struct dp_runtime *rt)
{
    for (size_t i = 0; i < rt->n_listener_limits; i++)
        free(rt->listener_limits[i].listener);
    free(rt->listener_limits);
    memset(rt, 0, sizeof(*rt));
}

void dp_runtime_install(const struct dp_runtime *rt)
{
    installed = rt;
}

uint64_t dp_runtime_listener_limit(const char *listener_name)
{
    for (size_t i = 0; installed && i < installed->n_listener_limits; i++)
        if (strcmp(installed->listener_limits[i].listener, listener_name) == 0)
            return installed->listener_limits[i].limit;
    return 0;
}
