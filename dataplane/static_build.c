/*
 * The bootstrap's static_resources built into listeners and clusters, with
 * the data-plane-wide default upstream client certificate
 * (legate.config.v1.DefaultUpstreamTls bootstrap extension).
 */
#include "config_build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xds/cfgerr.h"
#include "xds/registry.h"

static const Envoy__Extensions__TransportSockets__Tls__V3__Secret *static_secret(void *ud,
                                                                              const char *name)
{
    const xds_bootstrap_t *bs = ud;
    if (bs->static_resources == NULL)
        return NULL;
    for (size_t i = 0; i < bs->static_resources->n_secrets; i++)
        if (strcmp(bs->static_resources->secrets[i]->name, name) == 0)
            return bs->static_resources->secrets[i];
    return NULL;
}

/* The legate.config.v1.DefaultUpstreamTls bootstrap extension, if any. */
static int default_upstream_tls(const xds_bootstrap_t *bs, Legate__Config__V1__DefaultUpstreamTls **out,
                                char *err, size_t errlen)
{
    struct xds_cfgerr e = {err, errlen};
    *out = NULL;
    for (size_t i = 0; i < bs->n_bootstrap_extensions; i++) {
        const Envoy__Config__Core__V3__TypedExtensionConfig *x = bs->bootstrap_extensions[i];
        const char *tn = x->typed_config ? xds_type_url_name(x->typed_config->type_url) : "";
        if (strcmp(tn, legate__config__v1__default_upstream_tls__descriptor.name) != 0)
            return xds_cfg_fail(&e, "bootstrap_extensions[%zu]: unsupported extension \"%s\" (%s)", i,
                                x->name, tn[0] ? tn : "no typed_config");
        if (*out)
            return xds_cfg_fail(&e, "bootstrap_extensions[%zu]: a second DefaultUpstreamTls", i);
        *out = legate__config__v1__default_upstream_tls__unpack(NULL, x->typed_config->value.len,
                                                                x->typed_config->value.data);
        if (*out == NULL)
            return xds_cfg_fail(&e, "bootstrap_extensions[%zu].typed_config: cannot decode", i);
    }
    return 0;
}

void dp_static_config_free(struct dp_static_config *sc)
{
    for (size_t i = 0; i < sc->n_listeners; i++)
        dp_listener_unref(sc->listeners[i]);
    for (size_t i = 0; i < sc->n_clusters; i++)
        dp_cluster_unref(sc->clusters[i]);
    free(sc->listeners);
    free(sc->clusters);
    memset(sc, 0, sizeof(*sc));
}

int dp_cluster_cmp_name(const void *a, const void *b)
{
    const struct dp_cluster *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

int dp_static_build(const xds_bootstrap_t *bs, struct dp_static_config *sc,
                    Legate__Config__V1__DefaultUpstreamTls **dut_out, char *err, size_t errlen)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = bs->static_resources;
    Legate__Config__V1__DefaultUpstreamTls *dut = NULL;
    struct xds_cfgerr e = {err, errlen};
    char msg[1024];
    memset(sc, 0, sizeof(*sc));
    if (default_upstream_tls(bs, &dut, err, errlen) < 0)
        return -1;
    struct dp_build_ctx ctx = {
        .secrets = {.fn = static_secret, .ud = (void *)bs},
        .default_upstream_tls = dut ? dut->common_tls_context : NULL,
        .dynamic = bs->dynamic_resources != NULL,
    };
    int rc = -1;
    if (sr == NULL) {
        rc = 0;
        goto out;
    }
    sc->listeners = calloc(sr->n_listeners + 1, sizeof(*sc->listeners));
    sc->clusters = calloc(sr->n_clusters + 1, sizeof(*sc->clusters));
    if (sc->listeners == NULL || sc->clusters == NULL) {
        xds_cfg_fail(&e, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < sr->n_clusters; i++) {
        struct dp_cluster *c = dp_cluster_build(sr->clusters[i], NULL, &ctx, msg, sizeof(msg));
        if (c == NULL) {
            xds_cfg_fail(&e, "static_resources.clusters[%zu].%s", i, msg);
            goto out;
        }
        sc->clusters[sc->n_clusters++] = c;
    }
    qsort(sc->clusters, sc->n_clusters, sizeof(*sc->clusters), dp_cluster_cmp_name);
    for (size_t i = 0; i < sr->n_listeners; i++) {
        struct dp_listener *l = dp_listener_build(sr->listeners[i], &ctx, msg, sizeof(msg));
        if (l == NULL) {
            xds_cfg_fail(&e, "static_resources.listeners[%zu].%s", i, msg);
            goto out;
        }
        for (size_t j = 0; j < sc->n_listeners; j++) {
            if (sc->listeners[j]->addrlen == l->addrlen &&
                memcmp(&sc->listeners[j]->addr, &l->addr, l->addrlen) == 0) {
                xds_cfg_fail(&e, "static_resources.listeners[%zu].address: %s is already used by listener \"%s\"",
                             i, l->addr_str, sc->listeners[j]->name);
                dp_listener_unref(l);
                goto out;
            }
        }
        sc->listeners[sc->n_listeners++] = l;
    }
    rc = 0;
out:
    if (rc == 0 && dut_out) {
        *dut_out = dut;
        dut = NULL;
    }
    if (dut)
        legate__config__v1__default_upstream_tls__free_unpacked(dut, NULL);
    if (rc < 0)
        dp_static_config_free(sc);
    return rc;
}
