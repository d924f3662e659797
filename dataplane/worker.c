#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dataplane/accesslog.h"
#include "dataplane/overload.h"
#include "dataplane/arena.h"
#include "dataplane/buf.h"
#include "dataplane/listener.h"
#include "dataplane/stats.h"
#include "dataplane/hcm.h"
#include "dataplane/upstream.h"
#include "xds/log.h"

/* How many connections one accept event may take before yielding. */
#define ACCEPT_BATCH 64
/* Out of descriptors: how long accepting pauses when even the reserve
 * does not help, and how often the condition is reported. */
#define NOFD_PAUSE 0.1
#define NOFD_LOG_EVERY 10.0
/* One descriptor kept in reserve, process-wide, for out_of_fds. Once a
 * worker ran out, every worker accepts under spare_lock (nofd is set) until
 * descriptors are free again: the reserve, freed for a moment, would
 * otherwise go to another worker's accept. */
static pthread_mutex_t spare_lock = PTHREAD_MUTEX_INITIALIZER;
static int spare_fd = -1;
static int nofd; /* atomic */

/* spare_lock held. */
static void spare_refill(void)
{
    if (spare_fd < 0)
        spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void retire(struct dp_worker *w, struct dp_worker_snap *ws)
{
    ws->retired = 1;
    if (ws->users == 0) {
        dp_snapshot_unref(ws->snap);
        free(ws);
        return;
    }
    ws->next = w->retired;
    w->retired = ws;
}

void dp_worker_snap_unpin(struct dp_worker *w, struct dp_worker_snap *ws)
{
    if (--ws->users > 0 || !ws->retired)
        return;
    struct dp_worker_snap **pp = &w->retired;
    while (*pp && *pp != ws)
        pp = &(*pp)->next;
    if (*pp)
        *pp = ws->next;
    dp_snapshot_unref(ws->snap);
    free(ws);
}

static void accept_pause_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct dp_worker *w = t->data;
    pthread_mutex_lock(&spare_lock);
    spare_refill();
    pthread_mutex_unlock(&spare_lock);
    if (w->listeners_closed || __atomic_load_n(&w->stop, __ATOMIC_ACQUIRE))
        return;
    for (size_t i = 0; i < w->n_listeners; i++)
        ev_io_start(loop, &w->listeners[i].io);
}

/* accept() failed for want of a descriptor (or of memory): the connection
 * stays in the backlog and the socket stays readable, so returning to the
 * loop would spin on it. Accept it on the reserve and close it at once: the
 * client sees a closed connection instead of a hang. When even that fails,
 * stop accepting for NOFD_PAUSE. spare_lock held. Returns 1 when a
 * connection was refused (the caller may accept the next), else 0. */
static int out_of_fds(struct dp_worker *w, struct dp_worker_listener *wl, int err)
{
    int refused = 0, empty = 0;
    __atomic_store_n(&nofd, 1, __ATOMIC_RELEASE);
    if ((err == EMFILE || err == ENFILE) && spare_fd >= 0) {
        close(spare_fd);
        spare_fd = -1;
        int fd = accept4(wl->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            close(fd);
            refused = 1;
        } else {
            empty = errno == EAGAIN || errno == EWOULDBLOCK;
        }
        spare_refill();
    }
    w->nofd_refused += (unsigned)refused;
    ev_tstamp now = ev_now(w->loop);
    if (w->nofd_logged == 0 || now - w->nofd_logged >= NOFD_LOG_EVERY) {
        LG_W("worker", "listener %s: accept: %s: closing new connections at once (%u since the last report)",
             wl->l->name, strerror(err), w->nofd_refused);
        w->nofd_logged = now;
        w->nofd_refused = 0;
    }
    if (refused || empty)
        return refused;
    for (size_t i = 0; i < w->n_listeners; i++)
        ev_io_stop(w->loop, &w->listeners[i].io);
    if (!ev_is_active(&w->accept_pause)) {
        ev_timer_set(&w->accept_pause, NOFD_PAUSE, 0.);
        ev_timer_start(w->loop, &w->accept_pause);
    }
    return 0;
}

/* stop_accepting_connections: the listeners rest (the kernel's backlog
 * holds new connections) and look again after OVERLOAD_PAUSE. */
#define OVERLOAD_PAUSE 0.25
static void overload_pause_accept(struct dp_worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++)
        ev_io_stop(w->loop, &w->listeners[i].io);
    if (!ev_is_active(&w->accept_pause)) {
        ev_timer_set(&w->accept_pause, OVERLOAD_PAUSE, 0.);
        ev_timer_start(w->loop, &w->accept_pause);
    }
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct dp_worker_listener *wl = io->data;
    struct dp_worker *w = wl->w;
    int locked = 0;

    if (dp_overload_active(DP_OL_STOP_CONNECTIONS)) {
        overload_pause_accept(w);
        return;
    }

    for (int i = 0; i < ACCEPT_BATCH; i++) {
        if (!locked && __atomic_load_n(&nofd, __ATOMIC_ACQUIRE)) {
            pthread_mutex_lock(&spare_lock);
            locked = 1;
        }
        int fd = accept4(wl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECONNABORTED)
                break;
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                if (!locked) {
                    pthread_mutex_lock(&spare_lock);
                    locked = 1;
                }
                if (out_of_fds(w, wl, err))
                    continue;
                break;
            }
            LG_E("worker", "listener %s: accept: %s", wl->l->name, strerror(err));
            break;
        }
        if (locked) {
            /* Descriptors are free again once the reserve is back. */
            spare_refill();
            if (spare_fd >= 0)
                __atomic_store_n(&nofd, 0, __ATOMIC_RELEASE);
            pthread_mutex_unlock(&spare_lock);
            locked = 0;
        }
        if (!dp_overload_conn_allowed()) {
            /* reject_incoming_connections, or the global connection limit */
            dp_stat_add(wl->l->st.cx_global_overflow, 1);
            close(fd);
            continue;
        }
        if (wl->l->connection_limit &&
            (uint64_t)__atomic_load_n(&wl->l->cx_open, __ATOMIC_RELAXED) >= wl->l->connection_limit) {
            dp_stat_add(wl->l->st.cx_overflow, 1); /* runtime connection_limit */
            close(fd);
            continue;
        }
        dp_listener_accept(w, w->cur, wl->l, fd);
    }
    if (locked)
        pthread_mutex_unlock(&spare_lock);
}

static struct dp_worker_listener *find_wl(struct dp_worker *w, const struct dp_listen_set *set)
{
    for (size_t i = 0; i < w->n_listeners; i++)
        if (w->listeners[i].set == set)
            return &w->listeners[i];
    return NULL;
}

static int cmp_rt(const void *a, const void *b)
{
    const struct dp_cluster_rt *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static void adopt_listeners(struct dp_worker *w, struct dp_snapshot *snap)
{
    struct dp_worker_listener *nl = calloc(snap->n_listeners ? snap->n_listeners : 1, sizeof(*nl));
    if (nl == NULL) {
        LG_E("worker", "out of memory adopting listeners");
        return;
    }
    for (size_t i = 0; i < snap->n_listeners; i++) {
        struct dp_worker_listener *old = find_wl(w, snap->listen_sets[i]);
        nl[i].w = w;
        nl[i].l = snap->listeners[i];
        nl[i].set = snap->listen_sets[i];
        nl[i].fd = snap->listen_sets[i]->fds[w->index];
        if (old) {
            nl[i].active_conns = old->active_conns;
            ev_io_stop(w->loop, &old->io);
            old->set = NULL; /* moved */
        }
        ev_io_init(&nl[i].io, accept_cb, nl[i].fd, EV_READ);
        nl[i].io.data = &nl[i];
        if (!w->listeners_closed)
            ev_io_start(w->loop, &nl[i].io);
    }
    for (size_t i = 0; i < w->n_listeners; i++)
        if (w->listeners[i].set)
            ev_io_stop(w->loop, &w->listeners[i].io);
    free(w->listeners);
    w->listeners = nl;
    w->n_listeners = snap->n_listeners;
}

static void adopt_clusters(struct dp_worker *w, struct dp_snapshot *snap)
{
    struct dp_cluster_rt **nc = calloc(snap->n_clusters ? snap->n_clusters : 1, sizeof(*nc));
    size_t n = 0;
    if (nc == NULL) {
        LG_E("worker", "out of memory adopting clusters");
        return;
    }
    /* Both tables are sorted by name: one merge walk pairs them. */
    size_t j = 0;
    for (size_t i = 0; i < snap->n_clusters; i++) {
        struct dp_cluster *cfg = snap->clusters[i];
        struct dp_cluster_rt *rt = NULL;
        while (j < w->n_clusters && strcmp(w->clusters[j]->name, cfg->name) < 0)
            j++;
        if (j < w->n_clusters && strcmp(w->clusters[j]->name, cfg->name) == 0)
            rt = w->clusters[j];
        if (rt) {
            /* Take it out of the old table so it is not retired below. */
            w->clusters[j++] = NULL;
            dp_cluster_rt_update(w, rt, cfg);
        } else {
            rt = dp_cluster_rt_new(w, cfg);
            if (rt == NULL) {
                LG_E("worker", "out of memory for cluster %s", cfg->name);
                continue;
            }
        }
        nc[n++] = rt;
    }
    for (size_t k = 0; k < w->n_clusters; k++)
        if (w->clusters[k])
            dp_cluster_rt_retire(w, w->clusters[k]);
    free(w->clusters);
    qsort(nc, n, sizeof(*nc), cmp_rt);
    w->clusters = nc;
    w->n_clusters = n;
}

static void adopt(struct dp_worker *w, struct dp_snapshot *snap)
{
    struct dp_worker_snap *ws = calloc(1, sizeof(*ws));
    if (ws == NULL) {
        LG_E("worker", "out of memory adopting snapshot %llu", (unsigned long long)snap->version);
        dp_snapshot_unref(snap);
        return;
    }
    ws->snap = snap;
    struct dp_worker_snap *old = w->cur;
    w->cur = ws;
    adopt_listeners(w, snap);
    adopt_clusters(w, snap);
    /* Connections of a listener that was removed or whose resource changed
     * drain: they finish what they are doing on the old config and close
     * (HTTP/1.1 after the current response, HTTP/2 with GOAWAY). A new
     * version that only differs by its secrets does not drain anything. */
    for (struct dp_hcm *h = w->conns, *next; h; h = next) {
        next = h->next_in_worker;
        int kept = 0;
        for (size_t i = 0; i < snap->n_listeners && !kept; i++)
            kept = strcmp(snap->listeners[i]->name, h->listener->name) == 0 &&
                   snap->listeners[i]->hash == h->listener->hash;
        if (!kept && !h->draining) {
            LG_D("worker", "C%llu: listener %s changed: draining", (unsigned long long)h->id,
                 h->listener->name);
            dp_hcm_drain(h);
        }
    }
    if (old)
        retire(w, old);
    LG_D("worker", "worker %d: config version %llu", w->index, (unsigned long long)snap->version);
}

static void drain_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct dp_worker *w = t->data;
    if (w->n_conns == 0) {
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    /* Once a second, say what the drain is waiting for. */
    if (++w->drain_ticks % 20 == 0)
        for (struct dp_hcm *h = w->conns; h; h = h->next_in_worker)
            LG_D("worker", "worker %d draining: C%llu from %s has %zu stream(s)%s", w->index,
                 (unsigned long long)h->id, h->remote, h->n_streams, h->h2 ? " (h2)" : "");
}

static void wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    struct dp_worker *w = a->data;
    struct dp_snapshot *snap = __atomic_exchange_n(&w->pending, NULL, __ATOMIC_ACQ_REL);
    if (snap)
        adopt(w, snap);
    if (__atomic_load_n(&w->drain_listeners, __ATOMIC_ACQUIRE) && !w->listeners_closed) {
        w->listeners_closed = 1;
        /* shutdown() takes a listening socket out of LISTEN: new
         * connections are refused instead of queueing unanswered. */
        for (size_t i = 0; i < w->n_listeners; i++) {
            ev_io_stop(loop, &w->listeners[i].io);
            shutdown(w->listeners[i].fd, SHUT_RD);
        }
        for (struct dp_hcm *h = w->conns, *next; h; h = next) {
            next = h->next_in_worker;
            dp_hcm_drain(h);
        }
    }
    if (__atomic_load_n(&dp_overload.reset_min_bytes, __ATOMIC_RELAXED))
        dp_overload_reset_streams(w);
    int stop = __atomic_load_n(&w->stop, __ATOMIC_ACQUIRE);
    if (stop == 2) {
        ev_break(loop, EVBREAK_ALL);
    } else if (stop == 1 && !ev_is_active(&w->drain_timer)) {
        for (size_t i = 0; i < w->n_listeners; i++)
            ev_io_stop(loop, &w->listeners[i].io);
        for (struct dp_hcm *h = w->conns, *next; h; h = next) {
            next = h->next_in_worker;
            dp_hcm_drain(h);
        }
        ev_timer_set(&w->drain_timer, 0.05, 0.05);
        ev_timer_start(loop, &w->drain_timer);
    }
}

static void reap(struct dp_worker *w)
{
    while (w->deferred) {
        struct dp_defer *d = w->deferred;
        w->deferred = d->next;
        d->fn(d);
    }
}

static void reaper_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
    reap(p->data);
}

void dp_worker_defer(struct dp_worker *w, struct dp_defer *d, void (*fn)(struct dp_defer *d))
{
    d->fn = fn;
    d->next = w->deferred;
    w->deferred = d;
}

/* Buffer blocks idle for a whole interval go back to the kernel, beyond
 * what a worker keeps warm: after a storm of connections the memory is
 * returned instead of held at its peak. */
#define TRIM_SECONDS 1.0
#define TRIM_KEEP 256

static void trim_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    struct dp_worker *w = t->data;
    dp_buf_trim(TRIM_KEEP);
    /* malloc's free memory (bodies over a block, nghttp2's and OpenSSL's
     * buffers) stays in its heaps until trimmed: once after a burst, when
     * this worker's last client connection is gone. Not while busy: the
     * trim walks every arena. */
    if (w->n_conns > 0) {
        w->trim_pending = 1;
    } else if (w->trim_pending) {
        w->trim_pending = 0;
        malloc_trim(0);
    }
}

int dp_worker_init(struct dp_worker *w, int index)
{
    memset(w, 0, sizeof(*w));
    w->index = index;
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (w->loop == NULL)
        return -1;
    ev_async_init(&w->wake, wake_cb);
    w->wake.data = w;
    ev_async_start(w->loop, &w->wake);
    ev_init(&w->drain_timer, drain_timer_cb);
    w->drain_timer.data = w;
    ev_prepare_init(&w->reaper, reaper_cb);
    w->reaper.data = w;
    ev_prepare_start(w->loop, &w->reaper);
    ev_init(&w->accept_pause, accept_pause_cb);
    w->accept_pause.data = w;
    ev_timer_init(&w->trim_timer, trim_cb, TRIM_SECONDS, TRIM_SECONDS);
    w->trim_timer.data = w;
    ev_timer_start(w->loop, &w->trim_timer);
    pthread_mutex_lock(&spare_lock);
    spare_refill();
    pthread_mutex_unlock(&spare_lock);
    w->rand_state = (unsigned)(index * 2654435761u) ^ (unsigned)getpid();
    return 0;
}

static void *worker_main(void *arg)
{
    struct dp_worker *w = arg;
    dp_stats_thread_attach(w->index);
    ev_run(w->loop, 0);
    dp_conn_thread_done();
    dp_buf_cache_free();
    return NULL;
}

int dp_worker_start(struct dp_worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void dp_worker_post_snapshot(struct dp_worker *w, struct dp_snapshot *snap)
{
    struct dp_snapshot *old = __atomic_exchange_n(&w->pending, snap, __ATOMIC_ACQ_REL);
    if (old)
        dp_snapshot_unref(old); /* superseded before the worker took it */
    ev_async_send(w->loop, &w->wake);
}

void dp_worker_request_stop(struct dp_worker *w, int graceful)
{
    int v = graceful ? 1 : 2;
    int cur = __atomic_load_n(&w->stop, __ATOMIC_ACQUIRE);
    if (cur < v)
        __atomic_store_n(&w->stop, v, __ATOMIC_RELEASE);
    ev_async_send(w->loop, &w->wake);
}

void dp_worker_request_drain_listeners(struct dp_worker *w)
{
    __atomic_store_n(&w->drain_listeners, 1, __ATOMIC_RELEASE);
    ev_async_send(w->loop, &w->wake);
}

void dp_worker_join(struct dp_worker *w)
{
    pthread_join(w->thread, NULL);
}

void dp_worker_destroy(struct dp_worker *w)
{
    /* Runs after the thread ended: tear down in the worker's loop context. */
    while (w->conns) {
        struct dp_hcm *h = w->conns;
        dp_hcm_destroy(h);
    }
    for (size_t i = 0; i < w->n_listeners; i++)
        ev_io_stop(w->loop, &w->listeners[i].io);
    free(w->listeners);
    w->listeners = NULL;
    for (size_t j = 0; j < w->n_clusters; j++)
        dp_cluster_rt_destroy(w, w->clusters[j]);
    free(w->clusters);
    w->clusters = NULL;
    dp_upstream_worker_cleanup(w);
    reap(w);
    if (w->cur) {
        dp_snapshot_unref(w->cur->snap);
        free(w->cur);
        w->cur = NULL;
    }
    while (w->retired) {
        struct dp_worker_snap *ws = w->retired;
        w->retired = ws->next;
        dp_snapshot_unref(ws->snap);
        free(ws);
    }
    struct dp_snapshot *p = __atomic_exchange_n(&w->pending, NULL, __ATOMIC_ACQ_REL);
    if (p)
        dp_snapshot_unref(p);
    ev_timer_stop(w->loop, &w->alog_timer);
    dp_access_log_flush(w);
    ev_async_stop(w->loop, &w->wake);
    ev_timer_stop(w->loop, &w->drain_timer);
    ev_timer_stop(w->loop, &w->accept_pause);
    ev_timer_stop(w->loop, &w->trim_timer);
    pthread_mutex_lock(&spare_lock);
    if (spare_fd >= 0)
        close(spare_fd);
    spare_fd = -1;
    pthread_mutex_unlock(&spare_lock);
    ev_prepare_stop(w->loop, &w->reaper);
    ev_loop_destroy(w->loop);
    w->loop = NULL;
}

struct dp_cluster_rt *dp_worker_cluster(struct dp_worker *w, const char *name)
{
    size_t lo = 0, hi = w->n_clusters;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (w->clusters[mid] == NULL) { /* mid-adoption hole: linear fallback */
            for (size_t i = 0; i < w->n_clusters; i++)
                if (w->clusters[i] && strcmp(w->clusters[i]->name, name) == 0)
                    return w->clusters[i];
            return NULL;
        }
        int c = strcmp(name, w->clusters[mid]->name);
        if (c == 0)
            return w->clusters[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

void dp_worker_conn_closed(struct dp_worker *w, struct dp_hcm *h)
{
    if (h->prev_in_worker)
        h->prev_in_worker->next_in_worker = h->next_in_worker;
    else if (w->conns == h)
        w->conns = h->next_in_worker;
    if (h->next_in_worker)
        h->next_in_worker->prev_in_worker = h->prev_in_worker;
    h->next_in_worker = h->prev_in_worker = NULL;
    w->n_conns--;
    dp_overload_conn_add(-1);
    __atomic_sub_fetch(&((struct dp_listener *)h->listener)->cx_open, 1, __ATOMIC_RELAXED);
}

void dp_worker_wake(struct dp_worker *w)
{
    ev_async_send(w->loop, &w->wake);
}

uint32_t dp_worker_rand(struct dp_worker *w)
{
    /* xorshift32: worker-local, no locks, good enough for load balancing. */
    unsigned x = w->rand_state ? w->rand_state : 2463534242u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    w->rand_state = x;
    return x;
}

void dp_snapshot_ref(struct dp_snapshot *s)
{
    __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
}

void dp_listen_set_unref(struct dp_listen_set *ls)
{
    if (ls == NULL || __atomic_sub_fetch(&ls->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (int i = 0; i < ls->n; i++)
        if (ls->fds[i] >= 0)
            close(ls->fds[i]);
    free(ls->fds);
    free(ls->key);
    free(ls);
}

void dp_snapshot_unref(struct dp_snapshot *s)
{
    if (s == NULL || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t i = 0; i < s->n_listeners; i++) {
        dp_listener_unref(s->listeners[i]);
        dp_listen_set_unref(s->listen_sets[i]);
    }
    for (size_t i = 0; i < s->n_clusters; i++)
        dp_cluster_unref(s->clusters[i]);
    free(s->listeners);
    free(s->listen_sets);
    free(s->clusters);
    free(s);
}
