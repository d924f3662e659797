/*
 * The overload manager (bootstrap overload_manager, Envoy's names): resource
 * monitors measured on the main thread every refresh_interval, and actions
 * the workers apply when their triggers fire.
 *
 * Monitors:
 *  - envoy.resource_monitors.fixed_heap: pressure = the process's private
 *    anonymous resident memory (RssAnon: what legate and its libraries
 *    allocated; glibc has no tcmalloc-style heap counter) / max_heap_size_bytes.
 *  - envoy.resource_monitors.global_downstream_max_connections: a hard limit
 *    on client connections over every listener and worker, enforced at
 *    accept (a connection over it is closed at once), as Envoy does; it is
 *    not a trigger for actions.
 * Actions (active when a trigger is saturated, unless said otherwise):
 *  - stop_accepting_requests: new requests are answered 503 "envoy overloaded";
 *  - stop_accepting_connections: listeners stop accepting (the backlog holds them);
 *  - reject_incoming_connections: new connections are accepted and closed;
 *  - shrink_heap: free memory goes back to the kernel (malloc_trim), at
 *    most every 10 s;
 *  - reset_high_memory_stream (scaled): streams holding the most buffered
 *    bytes are reset, the largest first as pressure rises (the buckets of
 *    buffer_factory_config).
 * Workers read the state with relaxed atomic loads: no lock on the request
 * path.
 */
#ifndef LEGATE_DP_OVERLOAD_H
#define LEGATE_DP_OVERLOAD_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "envoy/config/overload/v3/overload.pb-c.h"

struct dp_worker;
struct dp_hcm;
struct dp_overload;

enum dp_ol_action {
    DP_OL_STOP_REQUESTS = 0,
    DP_OL_STOP_CONNECTIONS,
    DP_OL_REJECT_CONNECTIONS,
    DP_OL_SHRINK_HEAP,
    DP_OL_RESET_STREAMS,
    DP_OL_N_ACTIONS
};

/* What the workers see. Written by the main thread (actions) and by the
 * workers (conns), always with atomics. */
struct dp_overload_state {
    int active[DP_OL_N_ACTIONS];
    uint64_t reset_min_bytes;  /* reset streams holding at least this much (0: none) */
    int64_t max_connections;   /* global_downstream_max_connections (0: none) */
    int64_t connections;       /* client connections now, every worker */
    uint32_t st_reset_count;   /* dp_stat_t: streams reset under memory pressure */
};
extern struct dp_overload_state dp_overload;

/** Checks and compiles a bootstrap's overload_manager (m may be NULL: no
 *  overload manager). Returns 0 with *out set (NULL for none), or -1 with
 *  "overload_manager.actions[1].triggers[0].threshold.value: ..." in err. */
int dp_overload_build(const Envoy__Config__Overload__V3__OverloadManager *m, struct dp_overload **out,
                      char *err, size_t errlen);

/** Starts measuring on loop (the main thread's); workers are woken when
 *  they have streams to reset. Sets the connection limit. */
void dp_overload_start(struct dp_overload *o, struct ev_loop *loop, struct dp_worker *workers, int n_workers);

/** Stops and frees (NULL is fine). */
void dp_overload_free(struct dp_overload *o);

static inline int dp_overload_active(enum dp_ol_action a)
{
    return __atomic_load_n(&dp_overload.active[a], __ATOMIC_RELAXED);
}

/** Whether a new client connection may be taken: 0 while
 *  reject_incoming_connections is active or the global connection limit
 *  is reached (the caller closes it). */
static inline int dp_overload_conn_allowed(void)
{
    int64_t max = __atomic_load_n(&dp_overload.max_connections, __ATOMIC_RELAXED);
    return !dp_overload_active(DP_OL_REJECT_CONNECTIONS) &&
           (max == 0 || __atomic_load_n(&dp_overload.connections, __ATOMIC_RELAXED) < max);
}

/** A client connection opened / closed (every worker counts into one). */
static inline void dp_overload_conn_add(int64_t d)
{
    __atomic_add_fetch(&dp_overload.connections, d, __ATOMIC_RELAXED);
}

/** reset_high_memory_stream at scale v (0..1): the fewest buffered bytes
 *  of a stream to reset. The top ceil(8 v) of the 8 buckets go (bucket b
 *  holds streams of [2^(min+b), 2^(min+b+1)) bytes, the last one everything
 *  above); at saturation every tracked stream (2^min). 0 for v <= 0. */
uint64_t dp_overload_reset_threshold(unsigned min_log2, double v);

/** Worker side: resets the streams of w's connections that hold at least
 *  dp_overload.reset_min_bytes of buffered request and response body.
 *  Returns how many. */
size_t dp_overload_reset_streams(struct dp_worker *w);

#endif
