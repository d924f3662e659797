/*
 * Envoy's /clusters and /listeners: the text form ("name::address",
 * "cluster::host::stat::value" lines) and ?format=json (envoy.admin.v3.Clusters,
 * envoy.admin.v3.Listeners), from the listeners and clusters in force.
 * legate's own JSON stays at /legate/clusters and /legate/listeners.
 */
#ifndef LEGATE_DP_ADMIN_STATUS_H
#define LEGATE_DP_ADMIN_STATUS_H

#include "dataplane/admin.h"
#include "dataplane/config.h"

/** /clusters (json 0: Envoy's text lines; 1: Clusters JSON). malloc'd. */
char *dp_admin_clusters_envoy(const struct dp_admin_source *src, int json);
/** /listeners (json 0: "name::address" lines; 1: Listeners JSON). malloc'd. */
char *dp_admin_listeners_envoy(const struct dp_admin_source *src, int json);

#endif
