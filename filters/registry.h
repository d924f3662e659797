/*
 * The HTTP filters legate knows, by Envoy extension name, in one ordered
 * table (filters/registry.c). No linker-section magic.
 */
#ifndef LEGATE_FILTERS_REGISTRY_H
#define LEGATE_FILTERS_REGISTRY_H

#include "dataplane/filter.h"
#include "dataplane/netfilter.h"

/** Adds one filter beyond the table, for a program that links its own
 *  (tests/filters/sample); call it before any config is loaded. */
void dp_filter_register(const struct dp_filter_ops *ops);

/** Returns the filter registered under name, or NULL. */
const struct dp_filter_ops *dp_filter_lookup(const char *name);

/** Returns the filter whose config type is the message full name (the part
 *  of a type URL after the '/'), or NULL. */
const struct dp_filter_ops *dp_filter_lookup_by_type(const char *type_name);

/** Adds one network filter beyond the table, for a program that links its
 *  own (tests/filters/sample); call it before any config is loaded. */
void dp_net_filter_register(const struct dp_net_filter_ops *ops);

/** The network filter registered under name, or NULL (terminal filters,
 *  the connection manager and tcp_proxy, are not in this table: the
 *  listener builder knows them). */
const struct dp_net_filter_ops *dp_net_filter_lookup(const char *name);
/** The network filter whose config type is the message full name. */
const struct dp_net_filter_ops *dp_net_filter_lookup_by_type(const char *type_name);
/** Writes the network filters' names, ", "-separated, into buf (for
 *  error messages); returns buf. */
const char *dp_net_filter_names(char *buf, size_t len);

/** The router: terminal filter of every chain. */
extern const struct dp_filter_ops dp_router_filter;

#endif
