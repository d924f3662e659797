#include "registry.h"

#include <string.h>

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
