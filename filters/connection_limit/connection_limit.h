/*
 * envoy.filters.network.connection_limit: a filter chain holds at most
 * max_connections client connections at once; one over it is closed at
 * once and counted, as Envoy's filter does (without its optional delay).
 */
#ifndef LEGATE_FILTERS_CONNECTION_LIMIT_H
#define LEGATE_FILTERS_CONNECTION_LIMIT_H

#include "dataplane/netfilter.h"

/* Shared by every worker: the count is atomic. */
struct dp_connection_limit_cfg {
    uint64_t max;                    /* max_connections */
    uint64_t active;                 /* atomic: connections of this chain now */
    dp_stat_t st_active, st_limited; /* connection_limit.<stat_prefix>.* */
};

extern const struct dp_net_filter_ops dp_connection_limit_filter;

void *dp_connection_limit_config_new(const ProtobufCMessage *msg, int *disabled, char *err, size_t errlen);
void dp_connection_limit_config_free(void *cfg);

#endif
