/*
 * Config errors. A rejected config says where and why, as one line:
 * "filter_chains[0].filters[0].typed_config.stat_prefix: required field is
 * missing"; each caller up the tree prefixes the path it knows
 * ("static_resources.listeners[2]." or the xDS resource name). Every
 * builder writes them the same way, through xds_cfg_fail.
 */
#ifndef LEGATE_XDS_CFGERR_H
#define LEGATE_XDS_CFGERR_H

#include <stddef.h>

/* Where a builder writes its error: the caller's buffer. */
struct xds_cfgerr {
    char *err;
    size_t errlen;
};

/**
 * Formats "path.to.field: reason" (fmt, printf-style) into e's buffer,
 * cut to fit and always terminated. Returns -1, so that a rejection reads
 * `return xds_cfg_fail(e, "%s.port: %u is not a port number", path, port);`.
 */
__attribute__((format(printf, 2, 3))) int xds_cfg_fail(struct xds_cfgerr *e, const char *fmt, ...);

#endif
