/*
 * legate.test.sample_net: a network filter written from
 * docs/internals/filter-api.md alone; it includes dataplane/netfilter.h and
 * nothing else of the data plane.
 *
 * Config (typed_config): google.protobuf.StringValue, a label. Stats, all
 * counters: sample_net.<label>.connections, .rx_bytes (read from clients),
 * .tx_bytes (sent to them), .held. Behaviour:
 *   - the first bytes of every connection are held for 50 ms
 *     (DP_NET_STOP_ITERATION, then dp_net_continue_reading from a
 *     dp_net_timer), then go on unchanged;
 *   - a connection that sends "sample-net-close" is closed (DP_NET_CLOSE).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/netfilter.h"
#include "google/protobuf/wrappers.pb-c.h"

#define CLOSE_WORD "sample-net-close"

struct sample_net_cfg {
    dp_stat_t connections, rx, tx, held;
};

struct sample_net_ctx {
    int held;
};

static void *sn_config_new(const ProtobufCMessage *msg, int *disabled, char *err, size_t errlen)
{
    (void)disabled;
    const Google__Protobuf__StringValue *v = (const Google__Protobuf__StringValue *)msg;
    if (v == NULL || v->value == NULL || v->value[0] == '\0') {
        snprintf(err, errlen, "value: a label is required");
        return NULL;
    }
    struct sample_net_cfg *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->connections = dp_stat_register(DP_STAT_COUNTER, "sample_net", v->value, "connections");
    c->rx = dp_stat_register(DP_STAT_COUNTER, "sample_net", v->value, "rx_bytes");
    c->tx = dp_stat_register(DP_STAT_COUNTER, "sample_net", v->value, "tx_bytes");
    c->held = dp_stat_register(DP_STAT_COUNTER, "sample_net", v->value, "held");
    return c;
}

static void sn_config_free(void *cfg)
{
    free(cfg);
}

static enum dp_net_status sn_on_new_connection(const struct dp_net_call *c)
{
    const struct sample_net_cfg *cfg = c->cfg;
    dp_stat_add(cfg->connections, 1);
    return DP_NET_CONTINUE;
}

static void sn_release(const struct dp_net_call *c)
{
    dp_net_continue_reading(c);
}

static enum dp_net_status sn_on_data(const struct dp_net_call *c, const uint8_t *p, size_t n, int end_stream)
{
    (void)end_stream;
    const struct sample_net_cfg *cfg = c->cfg;
    struct sample_net_ctx *x = c->ctx;
    dp_stat_add(cfg->rx, (int64_t)n);
    if (n && memmem(p, n, CLOSE_WORD, sizeof(CLOSE_WORD) - 1))
        return DP_NET_CLOSE;
    if (!x->held && n) {
        x->held = 1;
        dp_stat_add(cfg->held, 1);
        if (dp_net_timer(c, 0.05, sn_release) == 0)
            return DP_NET_STOP_ITERATION;
    }
    return DP_NET_CONTINUE;
}

static enum dp_net_status sn_on_write(const struct dp_net_call *c, const uint8_t *p, size_t n)
{
    (void)p;
    const struct sample_net_cfg *cfg = c->cfg;
    dp_stat_add(cfg->tx, (int64_t)n);
    return DP_NET_CONTINUE;
}

const struct dp_net_filter_ops dp_sample_net_filter = {
    .name = "legate.test.sample_net",
    .config_type = &google__protobuf__string_value__descriptor,
    .config_new = sn_config_new,
    .config_free = sn_config_free,
    .ctx_size = sizeof(struct sample_net_ctx),
    .on_new_connection = sn_on_new_connection,
    .on_data = sn_on_data,
    .on_write = sn_on_write,
};
