/* envoy.filters.network.connection_limit at run time: count the chain's
 * connections in on_new_connection, release in on_close. */
#include "filters/connection_limit/connection_limit.h"

#include "envoy/extensions/filters/network/connection_limit/v3/connection_limit.pb-c.h"
#include "xds/log.h"

struct conn_ctx {
    int counted; /* this connection holds one of the chain's places */
};

static enum dp_net_status cl_on_new_connection(const struct dp_net_call *c)
{
    struct dp_connection_limit_cfg *cfg = (struct dp_connection_limit_cfg *)c->cfg;
    struct conn_ctx *x = c->ctx;
    if (__atomic_add_fetch(&cfg->active, 1, __ATOMIC_RELAXED) > cfg->max) {
        __atomic_sub_fetch(&cfg->active, 1, __ATOMIC_RELAXED);
        dp_stat_add(cfg->st_limited, 1);
        const struct dp_net_conn_info *ci = dp_net_conn(c);
        LG_D("hcm", "C%llu: from %s: over the connection limit of filter chain %s: closed",
             (unsigned long long)ci->id, ci->remote, ci->filter_chain ? ci->filter_chain : "(unnamed)");
        return DP_NET_CLOSE;
    }
    dp_stat_add(cfg->st_active, 1);
    x->counted = 1;
    return DP_NET_CONTINUE;
}

static void cl_on_close(const struct dp_net_call *c)
{
    struct dp_connection_limit_cfg *cfg = (struct dp_connection_limit_cfg *)c->cfg;
    struct conn_ctx *x = c->ctx;
    if (!x->counted)
        return;
    __atomic_sub_fetch(&cfg->active, 1, __ATOMIC_RELAXED);
    dp_stat_add(cfg->st_active, -1);
    x->counted = 0;
}

const struct dp_net_filter_ops dp_connection_limit_filter = {
    .name = "envoy.filters.network.connection_limit",
    .config_type = &envoy__extensions__filters__network__connection_limit__v3__connection_limit__descriptor,
    .config_new = dp_connection_limit_config_new,
    .config_free = dp_connection_limit_config_free,
    .ctx_size = sizeof(struct conn_ctx),
    .on_new_connection = cl_on_new_connection,
    .on_close = cl_on_close,
};
