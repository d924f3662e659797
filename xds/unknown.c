#include "unknown.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HCM "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

struct ignorable {
    const char *msg;
    const char *field;
    const char *why;
};

/* Observability only: none of these changes which upstream a request
 * reaches, what it carries, or how a connection is secured or limited.
 * Everything that Envoy has and legate lacks is refused unless it is here;
 * keep the list short (docs/resources.md names each one). */
static const struct ignorable ignorable[] = {
    {HCM, "tracing", "legate does not trace"},
    {HCM, "request_id_extension",
     "legate's x-request-id is a UUID4, as Envoy's default extension makes it; trace-reason packing "
     "needs tracing"},
    {HCM, "access_log_flush_interval", "legate writes an access log line when the stream ends"},
    {HCM, "flush_access_log_on_new_request", "legate writes an access log line when the stream ends"},
    {HCM, "access_log_options", "legate writes an access log line when the stream ends"},
    {"envoy.config.listener.v3.Listener", "access_log", "listener access logs are not written"},
    {"envoy.config.route.v3.Route", "decorator", "tracing span name; legate does not trace"},
    {"envoy.config.route.v3.Route", "tracing", "legate does not trace"},
    {"envoy.config.route.v3.Route", "stat_prefix", "per-route statistics are not kept"},
    {"envoy.config.route.v3.VirtualHost", "virtual_clusters", "virtual cluster statistics are not kept"},
    {"envoy.config.route.v3.VirtualHost", "metadata", "no legate filter reads route metadata"},
    {"envoy.config.route.v3.RouteConfiguration", "metadata", "no legate filter reads route metadata"},
    {"envoy.config.endpoint.v3.LocalityLbEndpoints", "metadata", "no legate load balancer reads metadata"},
    {"envoy.config.core.v3.Metadata", "typed_filter_metadata", "no legate filter reads metadata"},
    {"envoy.config.cluster.v3.Cluster", "track_timeout_budgets", "statistics that legate does not keep"},
    {"envoy.config.cluster.v3.Cluster", "track_cluster_stats", "statistics that legate does not keep"},
    {"envoy.extensions.filters.http.router.v3.Router", "suppress_grpc_request_failure_code_stats",
     "statistics that legate does not keep"},
    {"envoy.extensions.filters.http.router.v3.Router", "upstream_log_options",
     "legate writes no upstream access log"},
    {"envoy.service.discovery.v3.DiscoveryResponse", "control_plane", "an identifier for logs"},
};

#define N_IGNORABLE (sizeof(ignorable) / sizeof(ignorable[0]))

static int cmp_field(const void *key, const void *elem)
{
    const struct xds_envoy_field *k = key, *e = elem;
    int c = strcmp(k->msg, e->msg);
    if (c)
        return c;
    return k->number < e->number ? -1 : k->number > e->number;
}

const char *xds_envoy_field_name(const char *msg, uint32_t number)
{
    struct xds_envoy_field k = {msg, number, NULL};
    const struct xds_envoy_field *f =
        bsearch(&k, xds_envoy_fields, xds_n_envoy_fields, sizeof(xds_envoy_fields[0]), cmp_field);
    return f ? f->name : NULL;
}

const char *xds_unknown_ignorable(const char *msg, const char *field)
{
    for (size_t k = 0; k < N_IGNORABLE; k++)
        if (strcmp(ignorable[k].msg, msg) == 0 && strcmp(ignorable[k].field, field) == 0)
            return ignorable[k].why;
    return NULL;
}

int xds_unknown_ignorable_at(size_t k, const char **msg, const char **field, const char **why)
{
    if (k >= N_IGNORABLE)
        return 0;
    *msg = ignorable[k].msg;
    *field = ignorable[k].field;
    *why = ignorable[k].why;
    return 1;
}

size_t xds_unknown_unresolved(void)
{
    size_t n = 0;
    for (size_t k = 0; k < N_IGNORABLE; k++) {
        int found = 0;
        for (size_t i = 0; i < xds_n_envoy_fields && !found; i++)
            found = strcmp(xds_envoy_fields[i].msg, ignorable[k].msg) == 0 &&
                    strcmp(xds_envoy_fields[i].name, ignorable[k].field) == 0;
        n += !found;
    }
    return n;
}

int xds_unknown_check(const ProtobufCMessage *m, const char *path, xds_ignored_cb cb, void *ud, char *err,
                      size_t errlen)
{
    const char *msg = m->descriptor->name;
    const char *sep = path && path[0] ? "." : "";
    if (path == NULL)
        path = "";
    /* refused first: a refused resource reports nothing as ignored */
    for (unsigned i = 0; i < m->n_unknown_fields; i++) {
        uint32_t tag = m->unknown_fields[i].tag;
        const char *name = xds_envoy_field_name(msg, tag);
        if (name == NULL) {
            snprintf(err, errlen, "%s%sfield number %u of %s is unknown", path, path[0] ? ": " : "", tag, msg);
            return -1;
        }
        if (xds_unknown_ignorable(msg, name) == NULL) {
            snprintf(err, errlen, "%s%s%s: not supported", path, sep, name);
            return -1;
        }
    }
    for (unsigned i = 0; cb && i < m->n_unknown_fields; i++) {
        uint32_t tag = m->unknown_fields[i].tag;
        int seen = 0; /* a repeated field comes once per element: told once */
        for (unsigned j = 0; j < i && !seen; j++)
            seen = m->unknown_fields[j].tag == tag;
        if (seen)
            continue;
        const char *name = xds_envoy_field_name(msg, tag);
        char p[600];
        snprintf(p, sizeof(p), "%s%s%s", path, sep, name);
        cb(ud, p, msg, name, xds_unknown_ignorable(msg, name));
    }
    return 0;
}
