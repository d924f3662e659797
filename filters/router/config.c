/* envoy.filters.http.router: its config (envoy.extensions.filters.http.router.v3.Router). */
#include <stdio.h>
#include <stdlib.h>

#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "filters/router/router.h"

void *dp_router_config_new(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    struct dp_router_cfg *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const Envoy__Extensions__Filters__Http__Router__V3__Router *r =
        (const Envoy__Extensions__Filters__Http__Router__V3__Router *)msg;
    if (r) {
        cfg->suppress_envoy_headers = r->suppress_envoy_headers;
        if (r->n_upstream_log) {
            free(cfg);
            snprintf(err, errlen, "upstream_log: not supported");
            return NULL;
        }
    }
    return cfg;
}

void dp_router_config_free(void *cfg)
{
    free(cfg);
}
