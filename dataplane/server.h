/*
 * The data plane process: workers, listeners, the admin interface.
 */
#ifndef LEGATE_DP_SERVER_H
#define LEGATE_DP_SERVER_H

#include <stddef.h>

#include "xds/bootstrap.h"

struct dp_options {
    const char *config_path;
    int log_level;
    int concurrency;
    double drain_time_s;
    int cert_warn_days;             /* warn about certificates expiring sooner */
    int allow_expired_certificates; /* accept expired ones over SDS */
    int argc;
    char **argv;
};

/** Everything --mode validate checks beyond the bootstrap itself: builds the
 *  whole static configuration (TLS contexts, routes, clusters) without
 *  opening a socket. Returns 0, or -1 with "path: reason" in err. */
int dp_server_check(const xds_bootstrap_t *bs, char *err, size_t errlen);

/** Runs the data plane until shutdown. Returns 0 on a clean exit. */
int dp_server_run(const struct dp_options *opt, const xds_bootstrap_t *bs);

#endif
