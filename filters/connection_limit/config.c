/* envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit ->
 * struct dp_connection_limit_cfg. */
#include <stdio.h>
#include <stdlib.h>

#include "envoy/extensions/filters/network/connection_limit/v3/connection_limit.pb-c.h"
#include "filters/connection_limit/connection_limit.h"

void *dp_connection_limit_config_new(const ProtobufCMessage *msg, int *disabled, char *err, size_t errlen)
{
    const Envoy__Extensions__Filters__Network__ConnectionLimit__V3__ConnectionLimit *cl =
        (const Envoy__Extensions__Filters__Network__ConnectionLimit__V3__ConnectionLimit *)msg;
    if (cl == NULL || cl->stat_prefix == NULL || cl->stat_prefix[0] == '\0') {
        snprintf(err, errlen, "stat_prefix: required");
        return NULL;
    }
    if (cl->max_connections == NULL || cl->max_connections->value < 1) {
        snprintf(err, errlen, "max_connections: required, at least 1");
        return NULL;
    }
    if (cl->delay && (cl->delay->seconds || cl->delay->nanos)) {
        snprintf(err, errlen, "delay: not supported (legate closes a connection over the limit at once)");
        return NULL;
    }
    if (cl->runtime_enabled && cl->runtime_enabled->default_value && !cl->runtime_enabled->default_value->value) {
        *disabled = 1;
        return NULL;
    }
    struct dp_connection_limit_cfg *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->max = cl->max_connections->value;
    c->st_active = dp_stat_register(DP_STAT_GAUGE, "connection_limit", cl->stat_prefix, "active_connections");
    c->st_limited = dp_stat_register(DP_STAT_COUNTER, "connection_limit", cl->stat_prefix, "limited_connections");
    return c;
}

void dp_connection_limit_config_free(void *cfg)
{
    free(cfg);
}
