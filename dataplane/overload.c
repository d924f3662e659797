/*
 * The overload manager: config checks, the main thread's refresh timer, and
 * the workers' side of reset_high_memory_stream. See overload.h.
 */
#include "overload.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataplane/buf.h"
#include "dataplane/config_build_priv.h"
#include "dataplane/hcm.h"
#include "dataplane/stats.h"
#include "dataplane/stream.h"
#include "dataplane/worker.h"
#include "envoy/extensions/resource_monitors/downstream_connections/v3/downstream_connections.pb-c.h"
#include "envoy/extensions/resource_monitors/fixed_heap/v3/fixed_heap.pb-c.h"
#include "xds/cfgerr.h"
#include "xds/log.h"
#include "xds/registry.h"

struct dp_overload_state dp_overload;

#define MON_HEAP "envoy.resource_monitors.fixed_heap"
#define MON_CONNS "envoy.resource_monitors.global_downstream_max_connections"
#define SHRINK_EVERY 10.0 /* s: ShrinkHeapConfig.timer_interval's default */
#define N_BUCKETS 8       /* BufferFactoryConfig: 8 power-of-two buckets */

static const char *const action_names[DP_OL_N_ACTIONS] = {
    [DP_OL_STOP_REQUESTS] = "envoy.overload_actions.stop_accepting_requests",
    [DP_OL_STOP_CONNECTIONS] = "envoy.overload_actions.stop_accepting_connections",
    [DP_OL_REJECT_CONNECTIONS] = "envoy.overload_actions.reject_incoming_connections",
    [DP_OL_SHRINK_HEAP] = "envoy.overload_actions.shrink_heap",
    [DP_OL_RESET_STREAMS] = "envoy.overload_actions.reset_high_memory_stream",
};

struct trigger {
    int scaled;
    double value;      /* threshold */
    double scaling, saturation;
};

struct action {
    int configured;
    struct trigger *triggers; /* all on the heap monitor (the only one that triggers) */
    size_t n_triggers;
    dp_stat_t st_active, st_scale;
};

struct dp_overload {
    double refresh;
    uint64_t max_heap;        /* fixed_heap (0: not configured) */
    int64_t max_connections;  /* global_downstream_max_connections (0: none) */
    unsigned min_account_log2; /* buffer_factory_config (0: not tracking) */
    struct action actions[DP_OL_N_ACTIONS];
    dp_stat_t st_heap_pressure, st_shrink_count;
    ev_timer timer;
    struct ev_loop *loop;
    struct dp_worker *workers;
    int n_workers;
    double last_shrink;
};

/* ---- config ------------------------------------------------------------------ */

static int build_monitor(struct dp_overload *o, const Envoy__Config__Overload__V3__ResourceMonitor *rm, size_t i,
                         struct xds_cfgerr *e)
{
    char path[96];
    snprintf(path, sizeof(path), "overload_manager.resource_monitors[%zu].typed_config", i);
    const char *tn = rm->typed_config ? xds_type_url_name(rm->typed_config->type_url) : "";
    if (strcmp(rm->name, MON_HEAP) == 0 ||
        strcmp(tn, envoy__extensions__resource_monitors__fixed_heap__v3__fixed_heap_config__descriptor.name) == 0) {
        ProtobufCMessage *m = dp_build_unpack_any(
            rm->typed_config, &envoy__extensions__resource_monitors__fixed_heap__v3__fixed_heap_config__descriptor,
            path, e);
        if (m == NULL)
            return -1;
        uint64_t max = ((Envoy__Extensions__ResourceMonitors__FixedHeap__V3__FixedHeapConfig *)m)->max_heap_size_bytes;
        protobuf_c_message_free_unpacked(m, NULL);
        if (max == 0)
            return xds_cfg_fail(e, "%s.max_heap_size_bytes: must be greater than 0", path);
        if (o->max_heap)
            return xds_cfg_fail(e, "overload_manager.resource_monitors[%zu]: a second %s", i, MON_HEAP);
        o->max_heap = max;
        return 0;
    }
    if (strcmp(rm->name, MON_CONNS) == 0 ||
        strcmp(tn, envoy__extensions__resource_monitors__downstream_connections__v3__downstream_connections_config__descriptor
                       .name) == 0) {
        ProtobufCMessage *m = dp_build_unpack_any(
            rm->typed_config,
            &envoy__extensions__resource_monitors__downstream_connections__v3__downstream_connections_config__descriptor,
            path, e);
        if (m == NULL)
            return -1;
        int64_t max = ((Envoy__Extensions__ResourceMonitors__DownstreamConnections__V3__DownstreamConnectionsConfig *)m)
                          ->max_active_downstream_connections;
        protobuf_c_message_free_unpacked(m, NULL);
        if (max <= 0)
            return xds_cfg_fail(e, "%s.max_active_downstream_connections: must be greater than 0", path);
        if (o->max_connections)
            return xds_cfg_fail(e, "overload_manager.resource_monitors[%zu]: a second %s", i, MON_CONNS);
        o->max_connections = max;
        return 0;
    }
    return xds_cfg_fail(e, "overload_manager.resource_monitors[%zu]: unsupported resource monitor \"%s\" (%s); "
                        "legate has %s and %s", i, rm->name, tn[0] ? tn : "no typed_config", MON_HEAP, MON_CONNS);
}

static int in_unit(double v)
{
    return v >= 0.0 && v <= 1.0;
}

static int build_action(struct dp_overload *o, const Envoy__Config__Overload__V3__OverloadAction *oa, size_t i,
                        struct xds_cfgerr *e)
{
    int k = -1;
    for (int a = 0; a < DP_OL_N_ACTIONS; a++)
        if (strcmp(oa->name, action_names[a]) == 0)
            k = a;
    if (k < 0)
        return xds_cfg_fail(e, "overload_manager.actions[%zu].name: unsupported overload action \"%s\"; legate has "
                            "stop_accepting_requests, stop_accepting_connections, reject_incoming_connections, "
                            "shrink_heap and reset_high_memory_stream", i, oa->name);
    struct action *a = &o->actions[k];
    if (a->configured)
        return xds_cfg_fail(e, "overload_manager.actions[%zu]: %s configured twice", i, oa->name);
    if (oa->typed_config)
        return xds_cfg_fail(e, "overload_manager.actions[%zu].typed_config: not supported by legate", i);
    if (oa->n_triggers == 0)
        return xds_cfg_fail(e, "overload_manager.actions[%zu].triggers: at least one is required", i);
    a->configured = 1;
    a->triggers = calloc(oa->n_triggers, sizeof(*a->triggers));
    if (a->triggers == NULL)
        return xds_cfg_fail(e, "out of memory");
    for (size_t t = 0; t < oa->n_triggers; t++) {
        const Envoy__Config__Overload__V3__Trigger *tr = oa->triggers[t];
        struct trigger *x = &a->triggers[a->n_triggers++];
        if (strcmp(tr->name, MON_HEAP) != 0)
            return xds_cfg_fail(e, "overload_manager.actions[%zu].triggers[%zu].name: \"%s\" is not a resource "
                                "monitor that can trigger actions (legate's is %s)", i, t, tr->name, MON_HEAP);
        if (o->max_heap == 0)
            return xds_cfg_fail(e, "overload_manager.actions[%zu].triggers[%zu].name: no %s resource monitor is "
                                "configured", i, t, MON_HEAP);
        for (size_t u = 0; u < t; u++)
            if (strcmp(oa->triggers[u]->name, tr->name) == 0)
                return xds_cfg_fail(e, "overload_manager.actions[%zu].triggers[%zu]: a second trigger on %s", i, t,
                                    tr->name);
        if (tr->trigger_oneof_case == ENVOY__CONFIG__OVERLOAD__V3__TRIGGER__TRIGGER_ONEOF_THRESHOLD) {
            x->value = tr->threshold->value;
            if (!in_unit(x->value))
                return xds_cfg_fail(e, "overload_manager.actions[%zu].triggers[%zu].threshold.value: must be in "
                                    "[0, 1]", i, t);
        } else if (tr->trigger_oneof_case == ENVOY__CONFIG__OVERLOAD__V3__TRIGGER__TRIGGER_ONEOF_SCALED) {
            x->scaled = 1;
            x->scaling = tr->scaled->scaling_threshold;
            x->saturation = tr->scaled->saturation_threshold;
            if (!in_unit(x->scaling) || !in_unit(x->saturation) || x->scaling >= x->saturation)
                return xds_cfg_fail(e, "overload_manager.actions[%zu].triggers[%zu].scaled: scaling_threshold must "
                                    "be below saturation_threshold, both in [0, 1]", i, t);
        } else {
            return xds_cfg_fail(e, "overload_manager.actions[%zu].triggers[%zu]: threshold or scaled is required",
                                i, t);
        }
    }
    if (k == DP_OL_RESET_STREAMS && o->min_account_log2 == 0)
        return xds_cfg_fail(e, "overload_manager.actions[%zu]: %s needs "
                            "overload_manager.buffer_factory_config.minimum_account_to_track_power_of_two "
                            "(which streams are tracked)", i, oa->name);
    return 0;
}

int dp_overload_build(const Envoy__Config__Overload__V3__OverloadManager *m, struct dp_overload **out, char *err,
                      size_t errlen)
{
    struct xds_cfgerr e = {err, errlen};
    *out = NULL;
    if (m == NULL)
        return 0;
    struct dp_overload *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return xds_cfg_fail(&e, "out of memory");
    o->refresh = m->refresh_interval ? (double)m->refresh_interval->seconds + m->refresh_interval->nanos / 1e9 : 1.0;
    if (o->refresh <= 0) {
        xds_cfg_fail(&e, "overload_manager.refresh_interval: must be greater than 0");
        goto fail;
    }
    if (m->n_loadshed_points) {
        xds_cfg_fail(&e, "overload_manager.loadshed_points: not supported by legate");
        goto fail;
    }
    if (m->buffer_factory_config) {
        unsigned p = m->buffer_factory_config->minimum_account_to_track_power_of_two;
        if (p < 10 || p > 56) {
            xds_cfg_fail(&e, "overload_manager.buffer_factory_config.minimum_account_to_track_power_of_two: must "
                         "be in [10, 56]");
            goto fail;
        }
        o->min_account_log2 = p;
    }
    for (size_t i = 0; i < m->n_resource_monitors; i++)
        if (build_monitor(o, m->resource_monitors[i], i, &e) < 0)
            goto fail;
    for (size_t i = 0; i < m->n_actions; i++)
        if (build_action(o, m->actions[i], i, &e) < 0)
            goto fail;
    *out = o;
    return 0;
fail:
    dp_overload_free(o);
    return -1;
}

void dp_overload_free(struct dp_overload *o)
{
    if (o == NULL)
        return;
    if (o->loop)
        ev_timer_stop(o->loop, &o->timer);
    for (int a = 0; a < DP_OL_N_ACTIONS; a++)
        free(o->actions[a].triggers);
    for (int a = 0; a < DP_OL_N_ACTIONS; a++)
        __atomic_store_n(&dp_overload.active[a], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&dp_overload.reset_min_bytes, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&dp_overload.max_connections, 0, __ATOMIC_RELAXED);
    free(o);
}

/* ---- the main thread's refresh ----------------------------------------------- */

/* Private anonymous resident bytes: statm's resident less its shared
 * (file-backed and shared memory) pages. */
static uint64_t rss_anon(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0, shared = 0;
    if (f == NULL)
        return 0;
    int n = fscanf(f, "%lu %lu %lu", &size, &resident, &shared);
    fclose(f);
    if (n != 3 || resident < shared)
        return 0;
    return (uint64_t)(resident - shared) * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* An action's state: 0 (inactive) to 1 (saturated), the most of its triggers. */
static double action_state(const struct action *a, double pressure)
{
    double st = 0;
    for (size_t t = 0; t < a->n_triggers; t++) {
        const struct trigger *x = &a->triggers[t];
        double v;
        if (!x->scaled)
            v = pressure >= x->value ? 1.0 : 0.0;
        else if (pressure >= x->saturation)
            v = 1.0;
        else if (pressure > x->scaling)
            v = (pressure - x->scaling) / (x->saturation - x->scaling);
        else
            v = 0;
        if (v > st)
            st = v;
    }
    return st;
}

uint64_t dp_overload_reset_threshold(unsigned min_log2, double v)
{
    if (v <= 0)
        return 0;
    int top = (int)(v * N_BUCKETS + 0.999999);
    if (top > N_BUCKETS)
        top = N_BUCKETS;
    return (uint64_t)1 << (min_log2 + (unsigned)(N_BUCKETS - top));
}

static void refresh_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct dp_overload *o = t->data;
    double pressure = o->max_heap ? (double)rss_anon() / (double)o->max_heap : 0;
    dp_stat_set(o->st_heap_pressure, (int64_t)(pressure * 100));
    for (int k = 0; k < DP_OL_N_ACTIONS; k++) {
        struct action *a = &o->actions[k];
        if (!a->configured)
            continue;
        double st = action_state(a, pressure);
        int was = __atomic_load_n(&dp_overload.active[k], __ATOMIC_RELAXED);
        int now = k == DP_OL_RESET_STREAMS ? st > 0 : st >= 1.0;
        __atomic_store_n(&dp_overload.active[k], now, __ATOMIC_RELAXED);
        dp_stat_set(a->st_active, now);
        dp_stat_set(a->st_scale, (int64_t)(st * 100));
        if (now != was)
            LG_W("overload", "%s %s (heap pressure %.0f%%)", action_names[k], now ? "active" : "inactive",
                 pressure * 100);
    }
    if (dp_overload_active(DP_OL_SHRINK_HEAP) && ev_now(loop) - o->last_shrink >= SHRINK_EVERY) {
        o->last_shrink = ev_now(loop);
        malloc_trim(0);
        dp_stat_add(o->st_shrink_count, 1);
    }
    uint64_t min = 0;
    if (dp_overload_active(DP_OL_RESET_STREAMS))
        min = dp_overload_reset_threshold(o->min_account_log2, action_state(&o->actions[DP_OL_RESET_STREAMS], pressure));
    __atomic_store_n(&dp_overload.reset_min_bytes, min, __ATOMIC_RELAXED);
    if (min)
        for (int i = 0; i < o->n_workers; i++)
            dp_worker_wake(&o->workers[i]);
}

void dp_overload_start(struct dp_overload *o, struct ev_loop *loop, struct dp_worker *workers, int n_workers)
{
    if (o == NULL)
        return;
    __atomic_store_n(&dp_overload.max_connections, o->max_connections, __ATOMIC_RELAXED);
    o->loop = loop;
    o->workers = workers;
    o->n_workers = n_workers;
    o->last_shrink = -SHRINK_EVERY;
    if (o->max_heap)
        o->st_heap_pressure = dp_stat_register(DP_STAT_GAUGE, "overload", NULL, MON_HEAP ".pressure");
    for (int k = 0; k < DP_OL_N_ACTIONS; k++) {
        struct action *a = &o->actions[k];
        if (!a->configured)
            continue;
        char name[128];
        snprintf(name, sizeof(name), "%s.active", action_names[k]);
        a->st_active = dp_stat_register(DP_STAT_GAUGE, "overload", NULL, name);
        snprintf(name, sizeof(name), "%s.scale_percent", action_names[k]);
        a->st_scale = dp_stat_register(DP_STAT_GAUGE, "overload", NULL, name);
    }
    if (o->actions[DP_OL_RESET_STREAMS].configured)
        dp_overload.st_reset_count = dp_stat_register(DP_STAT_COUNTER, "overload", NULL,
                                                      "envoy.overload_actions.reset_high_memory_stream.count");
    if (o->actions[DP_OL_SHRINK_HEAP].configured)
        o->st_shrink_count = dp_stat_register(DP_STAT_COUNTER, "overload", NULL,
                                              "envoy.overload_actions.shrink_heap.shrink_count");
    if (o->max_heap == 0)
        return; /* nothing to measure: the connection limit works at accept */
    ev_timer_init(&o->timer, refresh_cb, 0., o->refresh);
    o->timer.data = o;
    ev_timer_start(loop, &o->timer);
}

/* ---- the workers' side ------------------------------------------------------- */

/* The first stream of w's that holds at least min buffered bytes and is
 * not reset yet, or NULL. */
static struct dp_stream *heavy_stream(struct dp_worker *w, uint64_t min)
{
    for (struct dp_hcm *h = w->conns; h; h = h->next_in_worker)
        for (struct dp_stream *s = h->streams; s; s = s->next)
            if (!(s->flags & (DP_STREAM_F_DONE | DP_STREAM_F_RESET)) &&
                dp_buf_size(&s->req_body) + dp_buf_size(&s->resp_body) >= min)
                return s;
    return NULL;
}

size_t dp_overload_reset_streams(struct dp_worker *w)
{
    uint64_t min = __atomic_load_n(&dp_overload.reset_min_bytes, __ATOMIC_RELAXED);
    size_t n = 0;
    if (min == 0)
        return 0;
    /* A reset may end other streams or the connection at once (HTTP/1: the
     * connection closes): look again from the start after each. */
    struct dp_stream *s;
    while ((s = heavy_stream(w, min)) != NULL) {
        LG_D("overload", "C%llu S%llu: reset: %zu buffered bytes under memory pressure",
             (unsigned long long)s->hcm->id, (unsigned long long)s->id,
             dp_buf_size(&s->req_body) + dp_buf_size(&s->resp_body));
        dp_stream_set_response_flag(s, "OM");
        dp_stat_add(dp_overload.st_reset_count, 1);
        dp_hcm_reset_stream(s);
        n++;
    }
    return n;
}
