/*
 * Loading and checking the Envoy v3 bootstrap (YAML, JSON or binary proto).
 */
#ifndef LEGATE_XDS_BOOTSTRAP_H
#define LEGATE_XDS_BOOTSTRAP_H

#include <stddef.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"

typedef Envoy__Config__Bootstrap__V3__Bootstrap xds_bootstrap_t;

/**
 * Reads the bootstrap at path: ".json", ".yaml" and ".yml" go through the
 * YAML/JSON converter, ".pb" is binary protobuf; anything else is tried as
 * YAML. Then checks what the bootstrap itself must get right (see
 * xds_bootstrap_check). Returns 0 and *out (free with xds_bootstrap_free), or
 * -1 with a one-line message in err naming the file and the field.
 */
int xds_bootstrap_load(const char *path, xds_bootstrap_t **out, char *err, size_t errlen);

/**
 * Checks the bootstrap-level rules: admin address, unique listener and
 * cluster names, required fields of static resources, and that
 * dynamic_resources points at ADS over an envoy_grpc cluster that exists
 * statically. Returns 0, or -1 with "path: reason" in err.
 */
int xds_bootstrap_check(const xds_bootstrap_t *bs, char *err, size_t errlen);

void xds_bootstrap_free(xds_bootstrap_t *bs);

#endif
