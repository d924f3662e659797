/*
 * The bootstrap's layered_runtime: the runtime keys legate honours.
 *
 * Envoy's runtime is a free-form key/value store read by name all over its
 * code; legate has only a few switches of that kind, so a layer is read
 * once at startup (later layers override earlier ones, nested objects are
 * dotted keys as in Envoy) and every key is either honoured, an Envoy
 * feature flag (envoy.reloadable_features.*, envoy.restart_features.*,
 * envoy.deprecated_features*, re2.max_program_size.*: logged, no effect, as
 * legate has none of those switches), or refused naming the key.
 *
 * Honoured:
 *  - overload.global_downstream_max_connections: the global connection
 *    limit, when the overload manager sets none (Envoy's deprecated form);
 *  - envoy.resource_limits.listener.<listener name>.connection_limit: the
 *    listener's active connections at most; over it a new connection is
 *    closed at accept (listener.<address>.downstream_cx_overflow).
 * admin_layer is accepted (legate has no /runtime_modify); disk_layer and
 * rtds_layer are refused.
 */
#ifndef LEGATE_DP_RUNTIME_H
#define LEGATE_DP_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"

struct dp_runtime_limit {
    char *listener;
    uint64_t limit;
};

struct dp_runtime {
    int64_t global_max_connections; /* 0: not set */
    struct dp_runtime_limit *listener_limits;
    size_t n_listener_limits;
};

/** Reads lr (may be NULL) into rt. 0, or -1 with
 *  "layered_runtime.layers[0].static_layer: runtime key \"x\" ..." in err. */
int dp_runtime_build(const Envoy__Config__Bootstrap__V3__LayeredRuntime *lr, struct dp_runtime *rt, char *err,
                     size_t errlen);
void dp_runtime_free(struct dp_runtime *rt);

/** Makes rt the process's runtime (before the workers start; rt must
 *  outlive them). NULL: none. */
void dp_runtime_install(const struct dp_runtime *rt);
/** envoy.resource_limits.listener.<name>.connection_limit, or 0. */
uint64_t dp_runtime_listener_limit(const char *listener_name);

#endif
