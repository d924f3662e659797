/*
 * Statistics with Envoy's names ("cluster.backend.upstream_rq_total").
 *
 * A stat is registered by name on the config path (a lock there) and gets a
 * handle: its first slot in a flat space of 64-bit slots. Every worker
 * thread writes only its own block of slots, with plain loads and stores
 * (single writer, no atomic read-modify-write, no lock on the request
 * path); the admin sums the blocks when asked. Threads that are not workers
 * (main, xDS, DNS) share one block updated with atomic adds.
 *
 * Histograms take DP_HIST_SLOTS slots: count, sum (microseconds), then one
 * counter per bucket of dp_hist_bounds (milliseconds, Envoy's defaults)
 * and one for the rest.
 */
#ifndef LEGATE_DP_STATS_H
#define LEGATE_DP_STATS_H

#include <stdint.h>

enum dp_stat_kind {
    DP_STAT_COUNTER = 0,
    DP_STAT_GAUGE,
    DP_STAT_HISTOGRAM,
};

#define DP_HIST_BUCKETS 19
#define DP_HIST_SLOTS (2 + DP_HIST_BUCKETS + 1)

/** A stat handle (0: none; operations on it do nothing). */
typedef uint32_t dp_stat_t;

/**
 * Registers "<scope>.<tag>.<name>" (or "<scope>.<name>" when tag is NULL),
 * or returns the handle it already has. The tag becomes a Prometheus label
 * (listener_address, envoy_http_conn_manager_prefix, envoy_cluster_name,
 * secret_name by scope). Thread-safe; not for the request path.
 */
dp_stat_t dp_stat_register(enum dp_stat_kind kind, const char *scope, const char *tag, const char *name);

/** Called by each worker thread once before it counts anything. */
void dp_stats_thread_attach(int worker_index);

/** Adds to a counter or gauge (gauges may go down). */
void dp_stat_add(dp_stat_t st, int64_t delta);
/** Sets a gauge (for threads that are not workers). */
void dp_stat_set(dp_stat_t st, int64_t value);
/** Records a duration in milliseconds into a histogram. */
void dp_stat_observe_ms(dp_stat_t st, double ms);

/** The sum over every block (a counter or gauge). */
int64_t dp_stat_value(dp_stat_t st);

/** "name: value" lines, sorted by name; histograms with count, sum and
 *  P50/P90/P99 estimates. malloc'd. */
char *dp_stats_text(const char *filter);
/** The Prometheus text exposition format (version 0.0.4). malloc'd. */
char *dp_stats_prometheus(void);

#endif
