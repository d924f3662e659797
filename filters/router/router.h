#ifndef LEGATE_FILTERS_ROUTER_H
#define LEGATE_FILTERS_ROUTER_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

struct dp_router_cfg {
    int suppress_envoy_headers;
};

void *dp_router_config_new(const ProtobufCMessage *msg, char *err, size_t errlen);
void dp_router_config_free(void *cfg);

#endif
