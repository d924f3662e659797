/*
 * The admin listener (bootstrap admin.address): a small HTTP/1.1 server on
 * the main thread's loop, one request per connection. It must not be
 * exposed beyond the host: it tells the configuration and can stop legate.
 *
 *   GET /ready         200 "LIVE" once the initial configuration is applied,
 *                      503 "PRE_INITIALIZING" before, 503 "DRAINING" after SIGTERM
 *   GET /server_info   Envoy's envoy.admin.v3.ServerInfo (JSON): version, state,
 *                      uptime, command line options, node
 *   GET /legate/server_info  legate's own: version, state, uptime, argv, node
 *   GET /config_dump   Envoy's envoy.admin.v3.ConfigDump (JSON) with ?resource=,
 *                      ?mask=, ?name_regex=, ?include_eds (dataplane/config_dump.h)
 *   GET /legate/config_dump  legate's own: the bootstrap and per xDS type the
 *                      resources with versions, state, subscriptions, NACKs
 *   GET /certs         every certificate configured or received: subject,
 *                      SANs, serial, validity, days until expiry (JSON)
 *   GET /clusters, /listeners  Envoy's text, or ?format=json (dataplane/admin_status.h);
 *                      legate's JSON at /legate/clusters, /legate/listeners
 *   GET /stats, /stats/prometheus
 *   POST /logging?level=L, /healthcheck/fail, /healthcheck/ok,
 *        /drain_listeners, /quitquitquit
 */
#ifndef LEGATE_DP_ADMIN_H
#define LEGATE_DP_ADMIN_H

#include <ev.h>
#include <stddef.h>

#include "xds/bootstrap.h"

struct dp_dyn;
struct dp_options;
struct dp_cluster;
struct dp_listener;

/* What the admin reads; callbacks run on the main loop. */
struct dp_admin_source {
    const xds_bootstrap_t *bs;
    /** "LIVE", "PRE_INITIALIZING" or "DRAINING". */
    const char *(*state)(void *ud);
    /** The dynamic config, or NULL without xDS. */
    struct dp_dyn *(*dyn)(void *ud);
    /** legate's JSON of the clusters / listeners in force (malloc'd). */
    char *(*clusters_json)(void *ud);
    char *(*listeners_json)(void *ud);
    /** Calls fn for each cluster / listener in force, static ones first,
     *  with the configuration held (fn must not call back). */
    void (*each_cluster)(void *ud, void (*fn)(void *arg, const struct dp_cluster *c, int dynamic), void *arg);
    void (*each_listener)(void *ud, void (*fn)(void *arg, const struct dp_listener *l, int dynamic), void *arg);
    /** POST actions. */
    void (*drain_listeners)(void *ud);
    void (*quit)(void *ud);
    void (*set_health_failed)(void *ud, int failed);
    void *ud;
    int argc;
    char **argv;
    /** The command line as parsed (/server_info), or NULL. */
    const struct dp_options *opt;
};

struct dp_admin;

/** Opens the admin listener on bs->admin->address. NULL with err set. */
struct dp_admin *dp_admin_start(struct ev_loop *loop, const struct dp_admin_source *src, char *err,
                                size_t errlen);
void dp_admin_stop(struct dp_admin *a);

/** Logs a warning for each certificate in use (configured or received over
 *  SDS) that expires within warn_days or has expired; returns the days
 *  until the first one expires (a large number when there is none). */
int dp_admin_check_expiry(const struct dp_admin_source *src, int warn_days);

#endif
