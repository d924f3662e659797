/*
 * The data plane process: builds the static snapshot, opens the listening
 * sockets, runs the workers, resolves STRICT_DNS clusters, and shuts down
 * gracefully on SIGTERM/SIGINT.
 */
#include "server.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "dataplane/arena.h"
#include "dataplane/buf.h"
#include "dataplane/config_build.h"
#include "dataplane/accesslog.h"
#include "dataplane/admin.h"
#include "dataplane/dynamic.h"
#include "dataplane/overload.h"
#include "dataplane/runtime.h"
#include "dataplane/stats.h"
#include "dataplane/tls.h"
#include "dataplane/worker.h"
#include "legate/config/v1/upstream_tls.pb-c.h"
#include "xds/json.h"
#include "xds/log.h"
#include "xds/registry.h"

/* Resolves a STRICT_DNS cluster's targets with a blocking getaddrinfo: at
 * startup, or on the DNS refresh thread. */
static struct dp_endpoint_set *resolve(const struct dp_cluster *c)
{
    struct dp_endpoint_set *s = calloc(1, sizeof(*s));
    size_t cap = 0;
    if (s == NULL)
        return NULL;
    s->refs = 1;
    /* dns_lookup_family: V4_ONLY and V6_ONLY ask for that family alone,
     * V4_PREFERRED takes the IPv4 addresses when there are any; AUTO and
     * ALL take every address (Envoy's AUTO prefers IPv6 instead: legate
     * does not drop the IPv4 ones). */
    enum dp_dns_family fam = c->dns_family;
    for (size_t i = 0; i < c->n_dns; i++) {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
        hints.ai_family = fam == DP_DNS_V4_ONLY ? AF_INET : fam == DP_DNS_V6_ONLY ? AF_INET6 : AF_UNSPEC;
        char port[8];
        snprintf(port, sizeof(port), "%u", c->dns[i].port);
        int rc = getaddrinfo(c->dns[i].host, port, &hints, &res);
        if (rc != 0) {
            LG_W("dns", "cluster %s: cannot resolve %s: %s", c->name, c->dns[i].host, gai_strerror(rc));
            continue;
        }
        int only4 = 0;
        if (fam == DP_DNS_V4_PREFERRED)
            for (struct addrinfo *ai = res; ai && !only4; ai = ai->ai_next)
                only4 = ai->ai_family == AF_INET;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
            if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
                continue;
            if (only4 && ai->ai_family != AF_INET)
                continue;
            if (s->n == cap) {
                cap = cap ? cap * 2 : 4;
                struct dp_endpoint *nv = realloc(s->v, cap * sizeof(*nv));
                if (nv == NULL)
                    break;
                s->v = nv;
            }
            struct dp_endpoint *ep = &s->v[s->n];
            memset(ep, 0, sizeof(*ep));
            memcpy(&ep->addr, ai->ai_addr, ai->ai_addrlen);
            ep->addrlen = ai->ai_addrlen;
            char host[NI_MAXHOST];
            getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), NULL, 0, NI_NUMERICHOST);
            char buf[NI_MAXHOST + 16];
            snprintf(buf, sizeof(buf), ai->ai_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host,
                     c->dns[i].port);
            int dup = 0;
            for (size_t k = 0; k < s->n; k++)
                if (strcmp(s->v[k].addr_str, buf) == 0)
                    dup = 1;
            if (dup)
                continue;
            ep->addr_str = strdup(buf);
            ep->hostname = strdup(c->dns[i].host);
            ep->weight = c->dns[i].weight;
            ep->healthy = 1;
            s->n++;
        }
        freeaddrinfo(res);
    }
    /* LOGICAL_DNS: the first address (getaddrinfo's order, RFC 6724). */
    if (c->logical_dns)
        while (s->n > 1) {
            s->n--;
            free(s->v[s->n].addr_str);
            free(s->v[s->n].hostname);
        }
    return s;
}

int dp_server_check(const xds_bootstrap_t *bs, char *err, size_t errlen)
{
    struct dp_static_config sc;
    if (dp_tls_init() < 0) {
        snprintf(err, errlen, "cannot initialise TLS");
        return -1;
    }
    struct dp_overload *ol = NULL;
    int rc = dp_overload_build(bs->overload_manager, &ol, err, errlen);
    dp_overload_free(ol);
    if (rc < 0)
        return -1;
    struct dp_runtime rt;
    if (dp_runtime_build(bs->layered_runtime, &rt, err, errlen) < 0)
        return -1;
    dp_runtime_free(&rt);
    rc = dp_static_build(bs, &sc, NULL, err, errlen);
    if (rc == 0)
        dp_static_config_free(&sc);
    dp_access_log_shutdown();
    return rc;
}

/* ---- listening sockets ------------------------------------------------------ */

static struct dp_listen_set *open_listen_set(const struct dp_listener *l, int n, char *err,
                                             size_t errlen)
{
    struct dp_listen_set *ls = calloc(1, sizeof(*ls));
    if (ls == NULL)
        return NULL;
    ls->refs = 1;
    ls->key = strdup(l->addr_str);
    ls->fds = malloc((size_t)n * sizeof(int));
    ls->n = n;
    if (ls->key == NULL || ls->fds == NULL) {
        free(ls->key);
        free(ls->fds);
        free(ls);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        ls->fds[i] = -1;
    for (int i = 0; i < n; i++) {
        int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd < 0)
            goto fail;
        ls->fds[i] = fd;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
            goto fail;
        if (l->addr.ss_family == AF_INET6) {
            int v6only = !l->ipv4_compat;
            if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) < 0)
                goto fail;
        }
        if (l->freebind && setsockopt(fd, l->addr.ss_family == AF_INET6 ? IPPROTO_IPV6 : IPPROTO_IP,
                                      l->addr.ss_family == AF_INET6 ? IPV6_FREEBIND : IP_FREEBIND, &one,
                                      sizeof(one)) < 0)
            goto fail;
        if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) < 0)
            goto fail;
        if (listen(fd, 1024) < 0)
            goto fail;
    }
    return ls;
fail:
    snprintf(err, errlen, "listener \"%s\": cannot listen on %s: %s", l->name, l->addr_str,
             strerror(errno));
    dp_listen_set_unref(ls);
    return NULL;
}

/* ---- the process -------------------------------------------------------------- */

struct lset {
    char *key;                            /* "ip:port" */
    struct dp_listen_set *set;
};

struct dns_job {
    struct server *sv;
    pthread_t thread;
    size_t n;
    struct dp_cluster **clusters;         /* referenced */
    struct dp_endpoint_set **results;     /* filled by the thread */
};

struct server {
    const struct dp_options *opt;
    struct ev_loop *loop;
    struct dp_worker *workers;
    int n_workers;
    /* The config owner's state: written by the main thread (DNS) and the
     * ADS thread (xDS), read by the admin; never touched by workers, which
     * only see published snapshots. */
    pthread_mutex_t cfg_lock;
    struct dp_static_config sc;
    struct dp_static_config dyn;             /* from xDS */
    struct lset *lsets;                   /* listening sockets by address */
    size_t n_lsets;
    Legate__Config__V1__DefaultUpstreamTls *dut;
    struct dp_dyn *xds;
    struct dp_admin *admin;
    struct dp_admin_source admin_src;
    struct dp_overload *overload;         /* bootstrap overload_manager (NULL: none) */
    struct dp_runtime runtime;            /* bootstrap layered_runtime */
    int health_failed;                    /* atomic: POST /healthcheck/fail */
    dp_stat_t st_days_to_expiry;
    ev_timer expiry_timer;                /* certificate expiry warnings */
    ev_async expiry_async;                /* ... also after each xDS install */
    uint64_t version;
    ev_signal sigterm, sigint, sighup;
    ev_timer dns_timer;
    ev_async dns_done;
    struct dns_job *dns_job;              /* refresh in flight */
    ev_timer drain_timer;
    int draining;
};

static struct lset *lset_find(struct server *sv, const char *key)
{
    for (size_t i = 0; i < sv->n_lsets; i++)
        if (strcmp(sv->lsets[i].key, key) == 0)
            return &sv->lsets[i];
    return NULL;
}

static struct dp_snapshot *make_snapshot(struct server *sv)
{
    struct dp_snapshot *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->refs = 1;
    s->version = ++sv->version;
    size_t nl = sv->sc.n_listeners + sv->dyn.n_listeners;
    size_t nc = sv->sc.n_clusters + sv->dyn.n_clusters;
    s->listeners = calloc(nl + 1, sizeof(*s->listeners));
    s->listen_sets = calloc(nl + 1, sizeof(*s->listen_sets));
    s->clusters = calloc(nc + 1, sizeof(*s->clusters));
    if (s->listeners == NULL || s->listen_sets == NULL || s->clusters == NULL) {
        free(s->listeners);
        free(s->listen_sets);
        free(s->clusters);
        free(s);
        return NULL;
    }
    for (size_t i = 0; i < nl; i++) {
        struct dp_listener *l = i < sv->sc.n_listeners ? sv->sc.listeners[i]
                                                       : sv->dyn.listeners[i - sv->sc.n_listeners];
        struct lset *ls = lset_find(sv, l->addr_str);
        if (ls == NULL) /* cannot happen: listen_prepare opened it */
            continue;
        s->listeners[s->n_listeners] = l;
        dp_listener_ref(l);
        s->listen_sets[s->n_listeners] = ls->set;
        __atomic_add_fetch(&ls->set->refs, 1, __ATOMIC_RELAXED);
        s->n_listeners++;
    }
    for (size_t i = 0; i < nc; i++) {
        struct dp_cluster *c = i < sv->sc.n_clusters ? sv->sc.clusters[i]
                                                     : sv->dyn.clusters[i - sv->sc.n_clusters];
        s->clusters[s->n_clusters++] = c;
        dp_cluster_ref(c);
    }
    qsort(s->clusters, s->n_clusters, sizeof(*s->clusters), dp_cluster_cmp_name);
    return s;
}

/* Closes listening sockets no listener uses any more (workers still
 * holding an older snapshot keep theirs open until they let go). */
static void lsets_gc(struct server *sv)
{
    for (size_t i = 0; i < sv->n_lsets;) {
        int used = 0;
        for (size_t k = 0; k < sv->sc.n_listeners && !used; k++)
            used = strcmp(sv->sc.listeners[k]->addr_str, sv->lsets[i].key) == 0;
        for (size_t k = 0; k < sv->dyn.n_listeners && !used; k++)
            used = strcmp(sv->dyn.listeners[k]->addr_str, sv->lsets[i].key) == 0;
        if (used) {
            i++;
            continue;
        }
        LG_I("server", "closing listening sockets on %s", sv->lsets[i].key);
        dp_listen_set_unref(sv->lsets[i].set);
        free(sv->lsets[i].key);
        sv->lsets[i] = sv->lsets[--sv->n_lsets];
    }
}

/* Called with cfg_lock held. */
static void publish(struct server *sv)
{
    if (sv->draining)
        return;
    struct dp_snapshot *snap = make_snapshot(sv);
    if (snap == NULL) {
        LG_E("server", "out of memory building a config snapshot");
        return;
    }
    for (int i = 0; i < sv->n_workers; i++) {
        dp_snapshot_ref(snap);
        dp_worker_post_snapshot(&sv->workers[i], snap);
    }
    dp_snapshot_unref(snap);
}

/* Installs a fresh resolution of the cluster in *slot; returns 1 when the
 * endpoints changed. Takes eps. */
static int apply_dns(struct dp_cluster **slot, struct dp_endpoint_set *eps)
{
    struct dp_cluster *c = *slot;
    int same = c->endpoints && c->endpoints->n == eps->n;
    for (size_t k = 0; same && k < eps->n; k++)
        same = strcmp(c->endpoints->v[k].addr_str, eps->v[k].addr_str) == 0;
    if (same) {
        dp_endpoint_set_unref(eps);
        return 0;
    }
    struct dp_cluster *nc = dp_cluster_with_endpoints(c, eps);
    dp_endpoint_set_unref(eps);
    if (nc == NULL)
        return 0;
    LG_I("dns", "cluster %s: %zu endpoint(s)", c->name, nc->endpoints->n);
    *slot = nc;
    dp_cluster_unref(c);
    return 1;
}

/* First resolution, before the workers start: blocking is fine here. */
static void resolve_all_now(struct server *sv)
{
    for (size_t i = 0; i < sv->sc.n_clusters; i++) {
        if (sv->sc.clusters[i]->type != DP_CLUSTER_STRICT_DNS)
            continue;
        struct dp_endpoint_set *eps = resolve(sv->sc.clusters[i]);
        if (eps)
            apply_dns(&sv->sc.clusters[i], eps);
    }
}

/* Where cluster c sits now, static or dynamic, or NULL. */
static struct dp_cluster **cluster_slot(struct server *sv, const struct dp_cluster *c)
{
    for (size_t i = 0; i < sv->sc.n_clusters; i++)
        if (sv->sc.clusters[i] == c)
            return &sv->sc.clusters[i];
    for (size_t i = 0; i < sv->dyn.n_clusters; i++)
        if (sv->dyn.clusters[i] == c)
            return &sv->dyn.clusters[i];
    return NULL;
}

/* Refreshes run getaddrinfo on a short-lived thread so that no event loop,
 * not even the main one, ever waits for DNS. */
static void *dns_thread(void *arg)
{
    struct dns_job *job = arg;
    for (size_t i = 0; i < job->n; i++)
        job->results[i] = resolve(job->clusters[i]);
    ev_async_send(job->sv->loop, &job->sv->dns_done);
    return NULL;
}

static void dns_job_free(struct dns_job *job)
{
    for (size_t i = 0; i < job->n; i++) {
        dp_cluster_unref(job->clusters[i]);
        if (job->results[i])
            dp_endpoint_set_unref(job->results[i]);
    }
    free(job->clusters);
    free(job->results);
    free(job);
}

static void dns_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct server *sv = t->data;
    if (sv->dns_job)
        return; /* the previous refresh is still running */
    struct dns_job *job = calloc(1, sizeof(*job));
    if (job == NULL)
        return;
    job->sv = sv;
    pthread_mutex_lock(&sv->cfg_lock);
    size_t total = sv->sc.n_clusters + sv->dyn.n_clusters;
    job->clusters = calloc(total + 1, sizeof(*job->clusters));
    job->results = calloc(total + 1, sizeof(*job->results));
    for (size_t i = 0; job->clusters && job->results && i < total; i++) {
        struct dp_cluster *c = i < sv->sc.n_clusters ? sv->sc.clusters[i]
                                                     : sv->dyn.clusters[i - sv->sc.n_clusters];
        if (c->type == DP_CLUSTER_STRICT_DNS) {
            job->clusters[job->n++] = c;
            dp_cluster_ref(c);
        }
    }
    pthread_mutex_unlock(&sv->cfg_lock);
    if (job->clusters == NULL || job->results == NULL || job->n == 0 ||
        pthread_create(&job->thread, NULL, dns_thread, job) != 0) {
        dns_job_free(job);
        return;
    }
    sv->dns_job = job;
}

static void dns_done_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    struct server *sv = a->data;
    struct dns_job *job = sv->dns_job;
    if (job == NULL)
        return;
    pthread_join(job->thread, NULL);
    sv->dns_job = NULL;
    int changed = 0;
    pthread_mutex_lock(&sv->cfg_lock);
    for (size_t k = 0; k < job->n; k++) {
        /* Only if the cluster is still the one that was resolved. */
        struct dp_cluster **slot = cluster_slot(sv, job->clusters[k]);
        if (slot && job->results[k]) {
            changed |= apply_dns(slot, job->results[k]);
            job->results[k] = NULL;
        }
    }
    if (changed)
        publish(sv);
    pthread_mutex_unlock(&sv->cfg_lock);
    dns_job_free(job);
}

/* ---- the xDS host: called on the ADS thread --------------------------------------- */

static int host_listen_prepare(void *ud, const struct dp_listener *l, char *err, size_t errlen)
{
    struct server *sv = ud;
    int rc = 0;
    pthread_mutex_lock(&sv->cfg_lock);
    for (size_t i = 0; i < sv->sc.n_listeners; i++)
        if (strcmp(sv->sc.listeners[i]->addr_str, l->addr_str) == 0) {
            snprintf(err, errlen, "%s is already used by static listener \"%s\"", l->addr_str,
                     sv->sc.listeners[i]->name);
            rc = -1;
            goto out;
        }
    for (size_t i = 0; i < sv->dyn.n_listeners; i++)
        if (strcmp(sv->dyn.listeners[i]->addr_str, l->addr_str) == 0 &&
            strcmp(sv->dyn.listeners[i]->name, l->name) != 0) {
            snprintf(err, errlen, "%s is already used by listener \"%s\"", l->addr_str,
                     sv->dyn.listeners[i]->name);
            rc = -1;
            goto out;
        }
    if (lset_find(sv, l->addr_str) == NULL) {
        struct dp_listen_set *set = open_listen_set(l, sv->n_workers, err, errlen);
        struct lset *nv = realloc(sv->lsets, (sv->n_lsets + 1) * sizeof(*nv));
        if (set == NULL || nv == NULL) {
            if (set)
                dp_listen_set_unref(set);
            if (nv)
                sv->lsets = nv;
            rc = -1;
            goto out;
        }
        sv->lsets = nv;
        sv->lsets[sv->n_lsets].key = strdup(l->addr_str);
        sv->lsets[sv->n_lsets].set = set;
        sv->n_lsets++;
        LG_I("server", "listening on %s for listener %s", l->addr_str, l->name);
    }
out:
    pthread_mutex_unlock(&sv->cfg_lock);
    return rc;
}

/*
 * Who waits on cfg_lock (item 8, checked in server.c, worker.c, listener.c):
 * no worker and no accept path. Workers never take cfg_lock and never wait
 * for the ADS thread: they adopt snapshots posted with an atomic exchange
 * (dp_worker_post_snapshot) when their loop wakes, and accept on their own
 * sockets (worker.c's only lock is spare_lock, for running out of fds).
 * What does wait is the main thread's loop: the admin listener (/ready via
 * admin_state, /clusters, /listeners), SIGTERM/SIGINT and /quitquitquit
 * (begin_shutdown), and the STRICT_DNS refresh (dns_timer_cb, dns_done_cb).
 * A blocking getaddrinfo here used to run under cfg_lock: a slow resolver
 * (5 s per attempt) stalled the admin and the shutdown, never traffic. So
 * STRICT_DNS clusters are resolved before cfg_lock is taken; the lock is
 * held only to swap the tables and publish.
 */
static void host_install(void *ud, struct dp_listener *const *ls, size_t nl, struct dp_cluster *const *cs,
                         size_t nc)
{
    struct server *sv = ud;
    struct dp_static_config nd = {0};
    nd.listeners = calloc(nl + 1, sizeof(*nd.listeners));
    nd.clusters = calloc(nc + 1, sizeof(*nd.clusters));
    struct dp_endpoint_set **eps = calloc(nc + 1, sizeof(*eps));
    if (nd.listeners == NULL || nd.clusters == NULL || eps == NULL) {
        LG_E("server", "out of memory installing a configuration");
        free(nd.listeners);
        free(nd.clusters);
        free(eps);
        return;
    }
    for (size_t i = 0; i < nl; i++) {
        dp_listener_ref(ls[i]);
        nd.listeners[nd.n_listeners++] = ls[i];
    }
    /* STRICT_DNS clusters without endpoints keep the addresses the previous
     * version resolved (only this thread replaces sv->dyn; the lock is for
     * the DNS refresh that may update them meanwhile) ... */
    pthread_mutex_lock(&sv->cfg_lock);
    for (size_t i = 0; i < nc; i++) {
        if (cs[i]->type != DP_CLUSTER_STRICT_DNS || cs[i]->endpoints)
            continue;
        for (size_t k = 0; k < sv->dyn.n_clusters && eps[i] == NULL; k++)
            if (strcmp(sv->dyn.clusters[k]->name, cs[i]->name) == 0 && sv->dyn.clusters[k]->endpoints) {
                eps[i] = sv->dyn.clusters[k]->endpoints;
                dp_endpoint_set_ref(eps[i]);
            }
    }
    pthread_mutex_unlock(&sv->cfg_lock);
    for (size_t i = 0; i < nc; i++) {
        struct dp_cluster *c = cs[i];
        dp_cluster_ref(c);
        if (c->type == DP_CLUSTER_STRICT_DNS && c->endpoints == NULL) {
            /* ... or are resolved now, off the lock (this is the ADS thread:
             * no event loop waits for it). */
            if (eps[i] == NULL)
                eps[i] = resolve(c);
            if (eps[i]) {
                struct dp_cluster *withe = dp_cluster_with_endpoints(c, eps[i]);
                dp_endpoint_set_unref(eps[i]);
                if (withe) {
                    dp_cluster_unref(c);
                    c = withe;
                }
            }
        }
        nd.clusters[nd.n_clusters++] = c;
    }
    free(eps);
    pthread_mutex_lock(&sv->cfg_lock);
    struct dp_static_config old = sv->dyn;
    sv->dyn = nd;
    publish(sv);
    lsets_gc(sv);
    pthread_mutex_unlock(&sv->cfg_lock);
    dp_static_config_free(&old);
    ev_async_send(sv->loop, &sv->expiry_async);
}

static void stop_now(struct server *sv)
{
    for (int i = 0; i < sv->n_workers; i++)
        dp_worker_request_stop(&sv->workers[i], 0);
    ev_break(sv->loop, EVBREAK_ALL);
}

static void drain_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct server *sv = t->data;
    LG_I("server", "drain time is over; stopping");
    stop_now(sv);
}

/* Stop accepting, drain every connection, exit when none is left (or after
 * the drain time). */
static void begin_shutdown(struct server *sv, const char *why)
{
    if (sv->draining) {
        LG_I("server", "%s again: stopping now", why);
        stop_now(sv);
        return;
    }
    pthread_mutex_lock(&sv->cfg_lock);
    sv->draining = 1;
    pthread_mutex_unlock(&sv->cfg_lock);
    LG_I("server", "%s: draining (up to %.0f s)", why, sv->opt->drain_time_s);
    for (int i = 0; i < sv->n_workers; i++)
        dp_worker_request_stop(&sv->workers[i], 1);
    ev_timer_set(&sv->drain_timer, sv->opt->drain_time_s, 0.);
    ev_timer_start(sv->loop, &sv->drain_timer);
    ev_timer_stop(sv->loop, &sv->dns_timer);
}

static void sigterm_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    begin_shutdown(w->data, w->signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static void sighup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    LG_I("server", "SIGHUP ignored: configuration changes come through xDS or a restart");
}

/* Workers end their loop once drained; the main loop watches for that. */
static void *join_thread(void *arg)
{
    struct server *sv = arg;
    for (int i = 0; i < sv->n_workers; i++)
        dp_worker_join(&sv->workers[i]);
    return NULL;
}

static ev_async all_done;

static void *join_and_wake(void *arg)
{
    struct server *sv = arg;
    join_thread(sv);
    ev_async_send(sv->loop, &all_done);
    return NULL;
}

static void all_done_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

static const char *admin_state(void *ud)
{
    struct server *sv = ud;
    pthread_mutex_lock(&sv->cfg_lock);
    int draining = sv->draining;
    pthread_mutex_unlock(&sv->cfg_lock);
    if (draining)
        return "DRAINING";
    if (__atomic_load_n(&sv->health_failed, __ATOMIC_RELAXED))
        return "HEALTH_CHECK_FAILED";
    if (sv->xds && !dp_dyn_ready(sv->xds))
        return "PRE_INITIALIZING";
    return "LIVE";
}

static struct dp_dyn *admin_dyn(void *ud)
{
    return ((struct server *)ud)->xds;
}

static void admin_quit(void *ud)
{
    begin_shutdown(ud, "POST /quitquitquit");
}

static void admin_drain_listeners(void *ud)
{
    struct server *sv = ud;
    LG_I("server", "POST /drain_listeners: listeners stop accepting, connections drain");
    for (int i = 0; i < sv->n_workers; i++)
        dp_worker_request_drain_listeners(&sv->workers[i]);
}

static void admin_health(void *ud, int failed)
{
    struct server *sv = ud;
    __atomic_store_n(&sv->health_failed, failed, __ATOMIC_RELAXED);
}

static void cluster_json(struct xds_sb *b, const struct dp_cluster *c, int dynamic)
{
    static const char *const types[] = {"STATIC", "STRICT_DNS", "EDS", "ORIGINAL_DST"};
    static const char *const lbs[] = {"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"};
    xds_sb_add(b, "{\"name\":", 8);
    xds_sb_str(b, c->name);
    xds_sb_addf(b, ",\"added_via_api\":%s,\"type\":\"%s\",\"lb_policy\":\"%s\",\"tls\":%s,\"http2\":%s",
                dynamic ? "true" : "false", c->logical_dns ? "LOGICAL_DNS" : types[c->type], lbs[c->lb], c->tls ? "true" : "false",
                c->http2 ? "true" : "false");
    xds_sb_addf(b, ",\"upstream_cx_active\":%lld,\"upstream_rq_total\":%lld,\"endpoints\":[",
                (long long)dp_stat_value(c->st.cx_active), (long long)dp_stat_value(c->st.rq_total));
    for (size_t i = 0; c->endpoints && i < c->endpoints->n; i++) {
        const struct dp_endpoint *e = &c->endpoints->v[i];
        xds_sb_addf(b, "%s{\"address\":", i ? "," : "");
        xds_sb_str(b, e->addr_str);
        char st[128];
        snprintf(st, sizeof(st), "endpoint.%s.rq_active", e->addr_str);
        dp_stat_t h = dp_stat_register(DP_STAT_GAUGE, "cluster", c->name, st);
        xds_sb_addf(b, ",\"weight\":%u,\"health\":\"%s\",\"rq_active\":%lld}", e->weight,
                    e->healthy ? "HEALTHY" : "UNHEALTHY", (long long)dp_stat_value(h));
    }
    xds_sb_add(b, "]}", 2);
}

static char *admin_clusters(void *ud)
{
    struct server *sv = ud;
    struct xds_sb b = {0};
    xds_sb_add(&b, "{\"clusters\":[", 13);
    pthread_mutex_lock(&sv->cfg_lock);
    for (size_t i = 0; i < sv->sc.n_clusters + sv->dyn.n_clusters; i++) {
        int dyn = i >= sv->sc.n_clusters;
        if (i)
            xds_sb_add(&b, ",", 1);
        cluster_json(&b, dyn ? sv->dyn.clusters[i - sv->sc.n_clusters] : sv->sc.clusters[i], dyn);
    }
    pthread_mutex_unlock(&sv->cfg_lock);
    xds_sb_add(&b, "]}\n", 3);
    return b.p;
}

static char *admin_listeners(void *ud)
{
    struct server *sv = ud;
    struct xds_sb b = {0};
    xds_sb_add(&b, "{\"listeners\":[", 14);
    pthread_mutex_lock(&sv->cfg_lock);
    for (size_t i = 0; i < sv->sc.n_listeners + sv->dyn.n_listeners; i++) {
        int dyn = i >= sv->sc.n_listeners;
        const struct dp_listener *l = dyn ? sv->dyn.listeners[i - sv->sc.n_listeners] : sv->sc.listeners[i];
        xds_sb_add(&b, i ? ",{\"name\":" : "{\"name\":", i ? 9 : 8);
        xds_sb_str(&b, l->name);
        xds_sb_add(&b, ",\"address\":", 11);
        xds_sb_str(&b, l->addr_str);
        xds_sb_addf(&b, ",\"added_via_api\":%s,\"filter_chains\":%zu,\"downstream_cx_active\":%lld}",
                    dyn ? "true" : "false", l->n_chains + (l->default_chain ? 1 : 0),
                    (long long)dp_stat_value(l->st.cx_active));
    }
    pthread_mutex_unlock(&sv->cfg_lock);
    xds_sb_add(&b, "]}\n", 3);
    return b.p;
}

static void admin_each_cluster(void *ud, void (*fn)(void *arg, const struct dp_cluster *c, int dynamic), void *arg)
{
    struct server *sv = ud;
    pthread_mutex_lock(&sv->cfg_lock);
    for (size_t i = 0; i < sv->sc.n_clusters; i++)
        fn(arg, sv->sc.clusters[i], 0);
    for (size_t i = 0; i < sv->dyn.n_clusters; i++)
        fn(arg, sv->dyn.clusters[i], 1);
    pthread_mutex_unlock(&sv->cfg_lock);
}

static void admin_each_listener(void *ud, void (*fn)(void *arg, const struct dp_listener *l, int dynamic),
                                void *arg)
{
    struct server *sv = ud;
    pthread_mutex_lock(&sv->cfg_lock);
    for (size_t i = 0; i < sv->sc.n_listeners; i++)
        fn(arg, sv->sc.listeners[i], 0);
    for (size_t i = 0; i < sv->dyn.n_listeners; i++)
        fn(arg, sv->dyn.listeners[i], 1);
    pthread_mutex_unlock(&sv->cfg_lock);
}

static void check_expiry(struct server *sv)
{
    int days = dp_admin_check_expiry(&sv->admin_src, sv->opt->cert_warn_days);
    if (days < (1 << 30))
        dp_stat_set(sv->st_days_to_expiry, days);
}

static void expiry_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    check_expiry(t->data);
}

static void expiry_async_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    check_expiry(a->data);
}

int dp_server_run(const struct dp_options *opt, const xds_bootstrap_t *bs)
{
    struct server sv = {.opt = opt};
    char err[1024];
    int rc = -1;

    signal(SIGPIPE, SIG_IGN);
    if (dp_tls_init() < 0) {
        LG_E("server", "cannot initialise TLS");
        return -1;
    }
    pthread_mutex_init(&sv.cfg_lock, NULL);
    if (dp_overload_build(bs->overload_manager, &sv.overload, err, sizeof(err)) < 0) {
        LG_E("server", "%s", err);
        return -1;
    }
    if (dp_runtime_build(bs->layered_runtime, &sv.runtime, err, sizeof(err)) < 0) {
        LG_E("server", "%s", err);
        dp_overload_free(sv.overload);
        return -1;
    }
    dp_runtime_install(&sv.runtime); /* before any listener is built */
    if (dp_static_build(bs, &sv.sc, &sv.dut, err, sizeof(err)) < 0) {
        LG_E("server", "%s", err);
        goto out;
    }
    resolve_all_now(&sv);
    sv.n_workers = opt->concurrency;
    sv.workers = calloc((size_t)sv.n_workers, sizeof(*sv.workers));
    sv.lsets = calloc(sv.sc.n_listeners + 1, sizeof(*sv.lsets));
    if (sv.lsets == NULL || sv.workers == NULL) {
        LG_E("server", "out of memory");
        goto out;
    }
    for (size_t i = 0; i < sv.sc.n_listeners; i++) {
        struct dp_listen_set *set = open_listen_set(sv.sc.listeners[i], sv.n_workers, err, sizeof(err));
        if (set == NULL) {
            LG_E("server", "%s", err);
            goto out;
        }
        sv.lsets[sv.n_lsets].key = strdup(sv.sc.listeners[i]->addr_str);
        sv.lsets[sv.n_lsets++].set = set;
    }
    sv.loop = ev_default_loop(EVFLAG_AUTO);
    struct dp_admin_source src = {
        .bs = bs,
        .state = admin_state,
        .dyn = admin_dyn,
        .clusters_json = admin_clusters,
        .listeners_json = admin_listeners,
        .each_cluster = admin_each_cluster,
        .each_listener = admin_each_listener,
        .drain_listeners = admin_drain_listeners,
        .quit = admin_quit,
        .set_health_failed = admin_health,
        .ud = &sv,
        .argc = opt->argc,
        .argv = opt->argv,
        .opt = opt,
    };
    sv.admin_src = src;
    sv.st_days_to_expiry = dp_stat_register(DP_STAT_GAUGE, "server", NULL, "days_until_first_cert_expiring");
    /* Certificate expiry: at start, hourly, and after each xDS update. */
    ev_timer_init(&sv.expiry_timer, expiry_timer_cb, 0., 3600.);
    sv.expiry_timer.data = &sv;
    ev_timer_start(sv.loop, &sv.expiry_timer);
    ev_async_init(&sv.expiry_async, expiry_async_cb);
    sv.expiry_async.data = &sv;
    ev_async_start(sv.loop, &sv.expiry_async);
    for (int i = 0; i < sv.n_workers; i++) {
        if (dp_worker_init(&sv.workers[i], i) < 0) {
            LG_E("server", "cannot create worker %d", i);
            sv.n_workers = i;
            goto out;
        }
    }
    pthread_mutex_lock(&sv.cfg_lock);
    publish(&sv);
    pthread_mutex_unlock(&sv.cfg_lock);
    for (int i = 0; i < sv.n_workers; i++)
        if (dp_worker_start(&sv.workers[i]) < 0) {
            LG_E("server", "cannot start worker %d", i);
            goto out;
        }
    if (bs->dynamic_resources && bs->dynamic_resources->ads_config) {
        static const struct dp_dyn_host host_ops = {
            .listen_prepare = host_listen_prepare,
            .install = host_install,
        };
        struct dp_dyn_host host = host_ops;
        host.ud = &sv;
        sv.xds = dp_dyn_start(bs, sv.dut ? sv.dut->common_tls_context : NULL, opt->allow_expired_certificates,
                              &host, err, sizeof(err));
        if (sv.xds == NULL) {
            LG_E("server", "%s", err);
            for (int i = 0; i < sv.n_workers; i++)
                dp_worker_request_stop(&sv.workers[i], 0);
            for (int i = 0; i < sv.n_workers; i++)
                dp_worker_join(&sv.workers[i]);
            goto out;
        }
    }
    if (bs->admin && bs->admin->address) {
        sv.admin = dp_admin_start(sv.loop, &sv.admin_src, err, sizeof(err));
        if (sv.admin == NULL) {
            LG_E("server", "%s", err);
            dp_dyn_stop(sv.xds);
            sv.xds = NULL;
            for (int i = 0; i < sv.n_workers; i++)
                dp_worker_request_stop(&sv.workers[i], 0);
            for (int i = 0; i < sv.n_workers; i++)
                dp_worker_join(&sv.workers[i]);
            goto out;
        }
    }
    dp_overload_start(sv.overload, sv.loop, sv.workers, sv.n_workers);
    if (sv.runtime.global_max_connections && __atomic_load_n(&dp_overload.max_connections, __ATOMIC_RELAXED) == 0)
        __atomic_store_n(&dp_overload.max_connections, sv.runtime.global_max_connections, __ATOMIC_RELAXED);
    for (size_t i = 0; i < sv.sc.n_listeners; i++)
        LG_I("server", "listener %s on %s", sv.sc.listeners[i]->name, sv.sc.listeners[i]->addr_str);
    LG_I("server", "legate started: %d worker(s), %zu listener(s), %zu cluster(s)", sv.n_workers,
         sv.sc.n_listeners, sv.sc.n_clusters);

    ev_signal_init(&sv.sigterm, sigterm_cb, SIGTERM);
    ev_signal_init(&sv.sigint, sigterm_cb, SIGINT);
    ev_signal_init(&sv.sighup, sighup_cb, SIGHUP);
    sv.sigterm.data = sv.sigint.data = sv.sighup.data = &sv;
    ev_signal_start(sv.loop, &sv.sigterm);
    ev_signal_start(sv.loop, &sv.sigint);
    ev_signal_start(sv.loop, &sv.sighup);
    ev_init(&sv.drain_timer, drain_timer_cb);
    sv.drain_timer.data = &sv;
    ev_init(&sv.dns_timer, dns_timer_cb);
    sv.dns_timer.data = &sv;
    ev_async_init(&sv.dns_done, dns_done_cb);
    sv.dns_done.data = &sv;
    ev_async_start(sv.loop, &sv.dns_done);
    double refresh = 0;
    for (size_t i = 0; i < sv.sc.n_clusters; i++)
        if (sv.sc.clusters[i]->type == DP_CLUSTER_STRICT_DNS &&
            (refresh == 0 || sv.sc.clusters[i]->dns_refresh_rate < refresh))
            refresh = sv.sc.clusters[i]->dns_refresh_rate;
    if (refresh > 0) {
        ev_timer_set(&sv.dns_timer, refresh, refresh);
        ev_timer_start(sv.loop, &sv.dns_timer);
    }
    ev_async_init(&all_done, all_done_cb);
    ev_async_start(sv.loop, &all_done);
    pthread_t joiner;
    pthread_create(&joiner, NULL, join_and_wake, &sv);

    ev_run(sv.loop, 0);

    /* Either every worker finished draining, or the drain time ran out. */
    dp_admin_stop(sv.admin);
    sv.admin = NULL;
    dp_dyn_stop(sv.xds);
    sv.xds = NULL;
    stop_now(&sv);
    pthread_join(joiner, NULL);
    dp_overload_free(sv.overload); /* the workers are gone */
    sv.overload = NULL;
    if (sv.dns_job) {
        pthread_join(sv.dns_job->thread, NULL);
        dns_job_free(sv.dns_job);
        sv.dns_job = NULL;
    }
    rc = 0;
    LG_I("server", "legate stopped");
out:
    dp_overload_free(sv.overload);
    dp_runtime_install(NULL);
    dp_runtime_free(&sv.runtime);
    for (int i = 0; i < sv.n_workers; i++)
        dp_worker_destroy(&sv.workers[i]);
    free(sv.workers);
    for (size_t i = 0; i < sv.n_lsets; i++) {
        dp_listen_set_unref(sv.lsets[i].set);
        free(sv.lsets[i].key);
    }
    free(sv.lsets);
    dp_static_config_free(&sv.sc);
    dp_static_config_free(&sv.dyn);
    dp_access_log_shutdown(); /* after the workers flushed theirs */
    if (sv.dut)
        legate__config__v1__default_upstream_tls__free_unpacked(sv.dut, NULL);
    pthread_mutex_destroy(&sv.cfg_lock);
    /* dp_worker_destroy ran here, on this thread: its blocks landed in this
     * thread's caches. */
    dp_buf_cache_free();
    if (sv.loop) {
        ev_signal_stop(sv.loop, &sv.sigterm);
        ev_signal_stop(sv.loop, &sv.sigint);
        ev_signal_stop(sv.loop, &sv.sighup);
        ev_timer_stop(sv.loop, &sv.dns_timer);
        ev_async_stop(sv.loop, &sv.dns_done);
        ev_timer_stop(sv.loop, &sv.expiry_timer);
        ev_async_stop(sv.loop, &sv.expiry_async);
        ev_timer_stop(sv.loop, &sv.drain_timer);
        ev_async_stop(sv.loop, &all_done);
    }
    return rc;
}
