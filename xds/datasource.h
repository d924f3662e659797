/*
 * envoy.config.core.v3.DataSource: bytes from a file, inline, or an
 * environment variable.
 */
#ifndef LEGATE_XDS_DATASOURCE_H
#define LEGATE_XDS_DATASOURCE_H

#include <stddef.h>

#include "envoy/config/core/v3/base.pb-c.h"

/**
 * Reads a DataSource into a new NUL-terminated malloc'd buffer (*out, with
 * its length in *len). Returns 0, or -1 with "field: reason" in err, e.g.
 * "filename: /etc/x.pem: No such file or directory". The contents never
 * appear in an error message: they may be private keys.
 */
int xds_datasource_read(const Envoy__Config__Core__V3__DataSource *ds, char **out, size_t *len,
                        char *err, size_t errlen);

#endif
