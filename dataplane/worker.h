/*
 * Workers: one thread and one libev loop each. A worker owns its listening
 * sockets (SO_REUSEPORT, one per listener per worker), the connections it
 * accepted, and its upstream connection pools. Nothing a worker touches on
 * the request path is shared with another worker, so nothing is locked.
 *
 * Config reaches a worker as a snapshot (struct dp_snapshot): the builder
 * thread publishes it with dp_worker_post_snapshot() (an atomic exchange and
 * ev_async_send); the worker adopts it between events. The worker pins each
 * snapshot it has adopted with a dp_worker_snap whose `users` count is
 * plain (worker-local): connections and streams bump it, and when a retired
 * snapshot's users reach zero the worker drops its one atomic reference.
 */
#ifndef LEGATE_DP_WORKER_H
#define LEGATE_DP_WORKER_H

#include <pthread.h>
#include <stdint.h>

#include <ev.h>

#include "dataplane/buf.h"

#include "dataplane/config.h"

struct dp_hcm;
struct dp_pool;

/* Objects freed after the current loop iteration: a connection may end
 * inside one of its own callbacks, and the callers up the stack still look
 * at it. Embed this in the object. */
struct dp_defer {
    struct dp_defer *next;
    void (*fn)(struct dp_defer *d);
};

/* Listening sockets of one listener address, one per worker. Owned by the
 * server; shared read-only with workers. */
struct dp_listen_set {
    int refs; /* atomic */
    char *key;  /* "ip:port" */
    int *fds;
    int n;
};

/* An immutable configuration snapshot. */
struct dp_snapshot {
    int refs; /* atomic */
    uint64_t version;
    struct dp_listener **listeners;
    struct dp_listen_set **listen_sets; /* parallel to listeners */
    size_t n_listeners;
    struct dp_cluster **clusters;       /* sorted by name */
    size_t n_clusters;
};

struct dp_worker_snap {
    struct dp_snapshot *snap;
    unsigned users;   /* connections + streams pinning it (worker-local) */
    int retired;      /* a newer snapshot is current */
    struct dp_worker_snap *next;
};

/* One listening socket being watched by a worker. */
struct dp_worker_listener {
    struct dp_worker *w;
    const struct dp_listener *l; /* from the current snapshot */
    struct dp_listen_set *set;
    int fd;
    ev_io io;
    int active_conns;
};

/* A connection whose first bytes are being inspected (tls_inspector). */
struct dp_pending_conn;

/* Per-worker state of one cluster: load balancer position and pools. */
struct dp_cluster_rt {
    char *name;
    const struct dp_cluster *cfg;       /* from the current snapshot */
    struct dp_endpoint_set *endpoints;  /* pinned while pools refer to it */
    uint32_t rr_next;
    struct dp_pool **pools;             /* per endpoint, parallel to endpoints->v */
    size_t n_pools;
    struct dp_pool **od_pools;          /* ORIGINAL_DST: one per destination seen */
    size_t n_od_pools;
    uint32_t active_requests;
    uint32_t pending_requests;
    uint32_t active_connections;
};

#define DP_WORKER_MAX_ALOG 8
struct alog_file;

struct dp_worker {
    int index;
    pthread_t thread;
    struct ev_loop *loop;
    ev_async wake;
    struct dp_snapshot *pending;        /* atomic exchange slot */
    int stop;                           /* atomic: 1 drain, 2 stop now */
    int drain_listeners;                /* atomic: stop accepting, drain, keep running */
    /* Access log lines waiting for the writer thread, per log file. */
    struct {
        struct alog_file *file;
        struct dp_buf buf;
    } alog[DP_WORKER_MAX_ALOG];
    size_t n_alog;
    ev_timer alog_timer;
    int listeners_closed;               /* worker-local: drain_listeners done */
    struct dp_worker_snap *cur;
    struct dp_worker_snap *retired;     /* older snapshots still in use */
    struct dp_worker_listener *listeners;
    size_t n_listeners;
    struct dp_cluster_rt **clusters;    /* sorted by name */
    size_t n_clusters;
    struct dp_hcm *conns;               /* downstream connections */
    size_t n_conns;
    int trim_pending;                   /* connections came and went since malloc_trim */
    uint64_t next_stream_id;
    unsigned int rand_state;
    ev_timer drain_timer;
    unsigned drain_ticks;
    ev_prepare reaper;
    struct dp_defer *deferred;
    /* Out of file descriptors (see out_of_fds in worker.c): a pause when
     * even the reserve does not help, and a rate-limited report. */
    ev_timer accept_pause;
    ev_timer trim_timer; /* gives idle pool blocks' pages back */
    ev_tstamp nofd_logged;
    unsigned nofd_refused;
};

/** Calls d->fn(d) once the current loop iteration's callbacks are done. */
void dp_worker_defer(struct dp_worker *w, struct dp_defer *d, void (*fn)(struct dp_defer *d));

/** Creates the worker's loop. Returns 0 or -1. */
int dp_worker_init(struct dp_worker *w, int index);
/** Starts the thread. */
int dp_worker_start(struct dp_worker *w);
/** Hands a new snapshot to the worker (takes one reference). Any thread. */
void dp_worker_post_snapshot(struct dp_worker *w, struct dp_snapshot *snap);
/** Asks the worker to stop: graceful (drain) or now. Any thread. */
void dp_worker_request_stop(struct dp_worker *w, int graceful);
/** Stops accepting on every listener and drains the connections, but keeps
 *  the worker running (POST /drain_listeners). Any thread. */
void dp_worker_request_drain_listeners(struct dp_worker *w);
/** Wakes w to look at the overload state (streams to reset). Any thread. */
void dp_worker_wake(struct dp_worker *w);
void dp_worker_join(struct dp_worker *w);
void dp_worker_destroy(struct dp_worker *w);

/** Pins/unpins a worker snapshot (worker thread only). */
static inline void dp_worker_snap_pin(struct dp_worker_snap *ws)
{
    ws->users++;
}
void dp_worker_snap_unpin(struct dp_worker *w, struct dp_worker_snap *ws);

/** The worker's runtime state for a cluster of the current snapshot, or
 *  NULL when the cluster does not exist. */
struct dp_cluster_rt *dp_worker_cluster(struct dp_worker *w, const char *name);

/** Called by the connection manager when a downstream connection ends. */
void dp_worker_conn_closed(struct dp_worker *w, struct dp_hcm *h);

void dp_snapshot_ref(struct dp_snapshot *s);
void dp_snapshot_unref(struct dp_snapshot *s);
void dp_listen_set_unref(struct dp_listen_set *ls);

/** A worker-local pseudo-random number. */
uint32_t dp_worker_rand(struct dp_worker *w);

#endif
