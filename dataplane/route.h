/*
 * Route tables: compiled from envoy.config.route.v3.RouteConfiguration
 * (route_build.c), and matched per request (route.c: virtual host by
 * authority, then the first route whose path and header matchers all match).
 */
#ifndef LEGATE_DP_ROUTE_H
#define LEGATE_DP_ROUTE_H

#include <stddef.h>

#include "dataplane/config.h"
#include "dataplane/http.h"
#include "dataplane/matcher.h"
#include "envoy/config/route/v3/route.pb-c.h"

struct dp_http_filter;

/**
 * Compiles a route configuration. filters/n_filters: the HTTP filters of
 * the connection manager that will use it, for typed_per_filter_config
 * (an override for a filter that is not in the chain is an error, as in
 * Envoy). Returns the table (one reference), or NULL with "path: reason" in
 * err, path relative to the RouteConfiguration ("virtual_hosts[0].routes[2]
 * .match: ...").
 */
struct dp_route_table *dp_route_table_build(const Envoy__Config__Route__V3__RouteConfiguration *rc,
                                            const struct dp_http_filter *filters, size_t n_filters,
                                            char *err, size_t errlen);

/** A malloc'd lowercase copy of an upgrade_type, or NULL when it is empty,
 *  not a token, or memory ran out. */
char *dp_upgrade_type_dup(const char *type);

/** The upgrade config for type (case-insensitive): the route's, else the
 *  connection manager's (either may be NULL), else NULL, as Envoy chooses. */
const struct dp_upgrade_cfg *dp_upgrade_find(const struct dp_route *r, const struct dp_hcm_cfg *h,
                                             struct dp_str type);

/** Finds the route for a request. *vh_out gets the virtual host (or NULL
 *  when no virtual host matches the authority). Returns NULL for no route. */
struct xds_cfgerr;
/** A HeaderMatcher compiled into hm (routes, access-log and local-reply
 *  filters). 0, or -1 with "path...: reason" in e. */
int dp_header_matcher_build(struct dp_header_matcher *hm, const Envoy__Config__Route__V3__HeaderMatcher *pm,
                            const char *path, struct xds_cfgerr *e);
void dp_header_matcher_free(struct dp_header_matcher *hm);
/** headers_to_add (HeaderValueOption list) compiled; 0, or -1 with
 *  "path[i]...: reason" in e (*out may hold a part: free it). */
int dp_header_mutations_build(struct dp_header_mutation **out, size_t *n_out,
                              Envoy__Config__Core__V3__HeaderValueOption **opts, size_t n, const char *path,
                              struct xds_cfgerr *e);
void dp_header_mutations_free(struct dp_header_mutation *m, size_t n);
/** Whether the request matches hm (pseudo-headers by their names; invert
 *  and treat_missing_header_as_empty applied). */
int dp_header_matcher_match(const struct dp_header_matcher *hm, const struct dp_request_head *req);

const struct dp_route *dp_route_find(const struct dp_route_table *t,
                                     const struct dp_request_head *req,
                                     const struct dp_virtual_host **vh_out);

#endif
