/*
 * envoy.filters.http.router: the terminal entry of an http_filters list.
 * It has no hooks: the connection manager routes a request that passed
 * every filter before it (dataplane/router.c). Its config (router.proto)
 * is parsed and checked in config.c.
 */
#include "dataplane/filter.h"
#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "filters/registry.h"
#include "filters/router/router.h"

const struct dp_filter_ops dp_router_filter = {
    .name = "envoy.filters.http.router",
    .config_type = &envoy__extensions__filters__http__router__v3__router__descriptor,
    .config_new = dp_router_config_new,
    .config_free = dp_router_config_free,
    .terminal = 1,
};
