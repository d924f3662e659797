#include "registry.h"

#include <stdio.h>
#include <string.h>

#include "filters/connection_limit/connection_limit.h"
#include "filters/mtls/mtls.h"

static const struct dp_filter_ops *const filters[] = {
    &dp_router_filter,
    &dp_mtls_filter,
};

/* One more, registered by a program before it starts (tests). */
static const struct dp_filter_ops *extra;

void dp_filter_register(const struct dp_filter_ops *ops)
{
    extra = ops;
}

const struct dp_filter_ops *dp_filter_lookup(const char *name)
{
    for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++)
        if (strcmp(filters[i]->name, name) == 0)
            return filters[i];
    if (extra && strcmp(extra->name, name) == 0)
        return extra;
    return NULL;
}

const struct dp_filter_ops *dp_filter_lookup_by_type(const char *type_name)
{
    for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++)
        if (filters[i]->config_type && strcmp(filters[i]->config_type->name, type_name) == 0)
            return filters[i];
    if (extra && extra->config_type && strcmp(extra->config_type->name, type_name) == 0)
        return extra;
    return NULL;
}

/* Network filters that may come before the connection manager. */
static const struct dp_net_filter_ops *const net_filters[] = {
    &dp_connection_limit_filter,
};
#define N_NET_FILTERS (sizeof(net_filters) / sizeof(net_filters[0]))
static const struct dp_net_filter_ops *net_extra;

void dp_net_filter_register(const struct dp_net_filter_ops *ops)
{
    net_extra = ops;
}

const struct dp_net_filter_ops *dp_net_filter_lookup(const char *name)
{
    for (size_t i = 0; i < N_NET_FILTERS; i++)
        if (strcmp(net_filters[i]->name, name) == 0)
            return net_filters[i];
    if (net_extra && strcmp(net_extra->name, name) == 0)
        return net_extra;
    return NULL;
}

const struct dp_net_filter_ops *dp_net_filter_lookup_by_type(const char *type_name)
{
    for (size_t i = 0; i < N_NET_FILTERS; i++)
        if (net_filters[i]->config_type && strcmp(net_filters[i]->config_type->name, type_name) == 0)
            return net_filters[i];
    /* The extra one only by name: a test filter's config type (a wrapper
     * like StringValue) says nothing about which filter it is. */
    return NULL;
}

const char *dp_net_filter_names(char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < N_NET_FILTERS && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", net_filters[i]->name);
    if (net_extra && off < len)
        snprintf(buf + off, len - off, ", %s", net_extra->name);
    return buf;
}
