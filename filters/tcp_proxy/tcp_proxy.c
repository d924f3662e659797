/*
 * envoy.filters.network.tcp_proxy at run time (tcp_proxy.h): one session
 * per client connection, relaying bytes between the connection manager's
 * downstream connection (h->conn) and a raw upstream connection of the
 * cluster (dp_upstream_tcp_open, dataplane/tcp_upstream.c).
 *
 * Both directions are the same small pump over struct dp_conn: what was
 * read on one side is queued on the other; when the other side's unsent
 * bytes reach its buffer limit (the listener's or the cluster's
 * per_connection_buffer_limit_bytes), reading the first side stops until
 * the other drains. A side's EOF, once everything before it went across,
 * becomes the other side's shutdown(SHUT_WR) (a TLS close_notify first);
 * when both sides have sent theirs the session ends. Until the upstream is
 * connected, the client's bytes wait, unread beyond the first read.
 */
#include <stdlib.h>
#include <string.h>

#include "dataplane/hcm.h"
#include "dataplane/upstream.h"
#include "dataplane/worker.h"
#include "filters/tcp_proxy/tcp_proxy.h"
#include "xds/log.h"

struct tp_session {
    struct dp_hcm *h;
    const struct dp_tcp_proxy_cfg *cfg;
    const struct dp_tcp_proxy_cluster *cluster;
    struct dp_uconn *up;          /* NULL before, between attempts and after */
    uint32_t attempts;
    uint32_t up_limit;            /* the cluster's per_connection_buffer_limit */
    ev_timer max_duration;
    ev_timer retry;               /* the next connect attempt, from the loop */
    unsigned connected : 1;       /* the upstream is (or was) up */
    unsigned fin_up : 1;          /* the client's EOF went upstream */
    unsigned fin_down : 1;        /* the upstream's EOF went to the client */
    unsigned down_paused : 1;     /* client reads paused: upstream full */
    unsigned up_paused : 1;       /* upstream reads paused: client full */
    unsigned ended : 1;
};

static const struct dp_tcp_upstream_ops up_ops;

static struct tp_session *session_of(struct dp_hcm *h)
{
    return h->term;
}

static unsigned long long cid(const struct tp_session *t)
{
    return (unsigned long long)t->h->id;
}

/* Ends the session: the client connection closes (after what is queued to
 * it when graceful), and so does the upstream (the same). */
static void finish(struct tp_session *t, int graceful)
{
    if (t->ended)
        return;
    t->ended = 1;
    if (t->up) {
        struct dp_uconn *up = t->up;
        t->up = NULL;
        dp_upstream_tcp_close(up, graceful);
    }
    if (graceful)
        dp_hcm_close_graceful(t->h);
    else
        dp_hcm_destroy(t->h);
}

/* Moves src->in to dst->out; src's EOF, once all before it is across,
 * becomes dst's FIN. down: src is the client. */
static void pump(struct tp_session *t, struct dp_conn *src, struct dp_conn *dst, int down)
{
    size_t limit = down ? t->up_limit : t->h->listener->per_connection_buffer_limit;
    size_t n = dp_buf_size(&src->in);
    if (n) {
        if (dp_buf_append(&dst->out, dp_buf_head(&src->in), n) < 0) {
            finish(t, 0);
            return;
        }
        dp_buf_consume(&src->in, n);
        dp_stat_add(down ? t->cfg->st.rx_bytes : t->cfg->st.tx_bytes, (int64_t)n);
        dp_conn_flush(dst);
        if (t->cfg->idle_timeout > 0)
            dp_conn_set_timeout(&t->h->conn, t->cfg->idle_timeout);
        if (dp_conn_closed(dst))
            return; /* its on_close ends the session */
    }
    if (dp_conn_unsent(dst) >= limit) {
        /* The other side is full: stop reading this one until it drains. */
        dp_conn_pause_read(src);
        dst->flags |= DP_CONN_F_WANT_DRAIN;
        if (down) {
            if (!t->down_paused)
                dp_stat_add(t->cfg->st.paused_reading, 1);
            t->down_paused = 1;
        } else {
            t->up_paused = 1;
        }
    }
    if ((src->flags & DP_CONN_F_EOF) && dp_buf_size(&src->in) == 0) {
        if (down && !t->fin_up) {
            t->fin_up = 1;
            LG_T("tcp_proxy", "C%llu: client sent EOF: shutting the upstream's write side", cid(t));
            dp_conn_shutdown_write(dst);
        } else if (!down && !t->fin_down) {
            t->fin_down = 1;
            LG_T("tcp_proxy", "C%llu: upstream sent EOF: shutting the client's write side", cid(t));
            dp_conn_shutdown_write(dst);
        }
        if (t->fin_up && t->fin_down)
            finish(t, 1); /* both sides are done */
    }
}

/* The other side drained: resume the side it paused. */
static void resume(struct tp_session *t, int down)
{
    if (t->ended || t->up == NULL)
        return;
    struct dp_conn *uc = dp_upstream_tcp_conn(t->up);
    if (down && t->down_paused) {
        t->down_paused = 0;
        dp_stat_add(t->cfg->st.resumed_reading, 1);
        dp_conn_resume_read(&t->h->conn);
        pump(t, &t->h->conn, uc, 1);
    } else if (!down && t->up_paused) {
        t->up_paused = 0;
        dp_conn_resume_read(uc);
        pump(t, uc, &t->h->conn, 0);
    }
}

/* Opens the next connect attempt. Returns 0, or -1 when there is none to
 * make (no such cluster, no healthy host, overflow). */
static int connect_next(struct tp_session *t)
{
    struct dp_hcm *h = t->h;
    struct dp_cluster_rt *rt = dp_worker_cluster(h->w, t->cluster->name);
    if (rt == NULL) {
        dp_stat_add(t->cfg->st.cx_no_route, 1);
        LG_D("tcp_proxy", "C%llu: cluster \"%s\" does not exist: closing", cid(t), t->cluster->name);
        return -1;
    }
    const char *err = "?";
    t->attempts++;
    t->up = dp_upstream_tcp_open(h->w, rt, h->orig_dst, &up_ops, t, &err);
    if (t->up == NULL) {
        LG_D("tcp_proxy", "C%llu: cluster %s: %s: closing", cid(t), t->cluster->name, err);
        return -1;
    }
    t->up_limit = rt->cfg->per_connection_buffer_limit;
    LG_T("tcp_proxy", "C%llu: attempt %u to %s (cluster %s)", cid(t), t->attempts, dp_upstream_tcp_host(t->up),
         t->cluster->name);
    return 0;
}

/* ---- the upstream's events ---------------------------------------------- */

static void up_connected(void *owner, struct dp_conn *c)
{
    struct tp_session *t = owner;
    t->connected = 1;
    LG_D("tcp_proxy", "C%llu: connected to %s (cluster %s)", cid(t), dp_upstream_tcp_host(t->up), t->cluster->name);
    if (t->cfg->idle_timeout > 0)
        dp_conn_set_timeout(&t->h->conn, t->cfg->idle_timeout);
    dp_conn_resume_read(&t->h->conn);
    /* What the client sent while we connected. */
    pump(t, &t->h->conn, c, 1);
}

static void up_read(void *owner, struct dp_conn *c)
{
    struct tp_session *t = owner;
    if (!t->ended && !t->up_paused)
        pump(t, c, &t->h->conn, 0);
}

static void up_drained(void *owner, struct dp_conn *c)
{
    (void)c;
    resume(owner, 1);
}

static void up_closed(void *owner, enum dp_conn_close_reason why, int connected)
{
    struct tp_session *t = owner;
    t->up = NULL;
    if (t->ended)
        return;
    if (!connected) {
        LG_D("tcp_proxy", "C%llu: attempt %u failed: %s", cid(t), t->attempts, dp_conn_close_reason_str(why));
        if (t->attempts < t->cfg->max_connect_attempts) {
            /* From the loop, not from inside the pool's close (which may
             * be the cluster's update going through its pools). */
            ev_timer_set(&t->retry, 0., 0.);
            ev_timer_start(t->h->w->loop, &t->retry);
            return;
        }
        dp_stat_add(t->cfg->st.attempts_exceeded, 1);
        finish(t, 0);
        return;
    }
    /* Reset or failed after it was up: the client gets what was already
     * queued to it, then the close. */
    LG_D("tcp_proxy", "C%llu: upstream closed: %s", cid(t), dp_conn_close_reason_str(why));
    finish(t, 1);
}

static const struct dp_tcp_upstream_ops up_ops = {
    .on_connected = up_connected,
    .on_read = up_read,
    .on_drained = up_drained,
    .on_close = up_closed,
};

/* ---- the client's side: the codec the connection manager runs ---------- */

static void max_duration_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct tp_session *t = w->data;
    dp_stat_add(t->cfg->st.max_duration_reached, 1);
    LG_D("tcp_proxy", "C%llu: max_downstream_connection_duration reached: closing", cid(t));
    finish(t, 0);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct tp_session *t = w->data;
    if (!t->ended && t->up == NULL && connect_next(t) < 0)
        finish(t, 0);
}

static int tp_start(struct dp_hcm *h)
{
    struct tp_session *t = dp_arena_alloc(&h->conn_arena, sizeof(*t));
    if (t == NULL)
        return -1;
    memset(t, 0, sizeof(*t));
    t->h = h;
    t->cfg = h->chain->tcp_proxy;
    h->term = t;
    h->codec = &dp_tcp_proxy_codec;
    dp_stat_add(t->cfg->st.cx_total, 1);
    /* The client's FIN is passed on, not taken for a close. */
    h->conn.flags |= DP_CONN_F_HALF_OPEN;
    dp_conn_pause_read(&h->conn); /* until the upstream is connected */
    dp_conn_set_timeout(&h->conn, 0);
    ev_timer_init(&t->retry, retry_cb, 0., 0.);
    t->retry.data = t;
    if (t->cfg->max_duration > 0) {
        ev_timer_init(&t->max_duration, max_duration_cb, t->cfg->max_duration, 0.);
        t->max_duration.data = t;
        ev_timer_start(h->w->loop, &t->max_duration);
    }
    t->cluster = dp_tcp_proxy_pick(t->cfg, dp_worker_rand(h->w));
    return connect_next(t);
}

static void tp_on_read(struct dp_hcm *h)
{
    struct tp_session *t = session_of(h);
    if (t->ended)
        return;
    if (t->up == NULL || !t->connected) {
        dp_conn_pause_read(&h->conn); /* the bytes wait in conn.in */
        return;
    }
    if (!t->down_paused)
        pump(t, &h->conn, dp_upstream_tcp_conn(t->up), 1);
}

static void tp_on_drained(struct dp_hcm *h)
{
    resume(session_of(h), 0);
}

static int tp_on_timeout(struct dp_hcm *h)
{
    struct tp_session *t = session_of(h);
    dp_stat_add(t->cfg->st.idle_timeout, 1);
    LG_D("tcp_proxy", "C%llu: idle timeout (%.3g s): closing", cid(t), t->cfg->idle_timeout);
    finish(t, 0);
    return 1;
}

static void tp_drain(struct dp_hcm *h)
{
    /* A byte stream has no point at which to stop it politely: it goes on
     * until it ends, or until the drain time is over (as Envoy). */
    h->draining = 1;
}

/* The client connection is being freed, however it ended. */
static void tp_destroy(struct dp_hcm *h)
{
    struct tp_session *t = session_of(h);
    if (t == NULL)
        return;
    h->term = NULL;
    ev_timer_stop(h->w->loop, &t->max_duration);
    ev_timer_stop(h->w->loop, &t->retry);
    if (t->up) {
        /* The upstream gets what the client sent before it went (Envoy's
         * FlushWrite). */
        struct dp_uconn *up = t->up;
        t->up = NULL;
        struct dp_conn *uc = dp_upstream_tcp_conn(up);
        if (t->connected && dp_buf_size(&uc->out) + dp_buf_size(&uc->wire) > 0)
            dp_stat_add(t->cfg->st.flush_total, 1);
        dp_upstream_tcp_close(up, t->connected);
    }
    t->ended = 1;
}

const struct dp_server_codec dp_tcp_proxy_codec = {
    .start = tp_start,
    .on_read = tp_on_read,
    .on_drained = tp_on_drained,
    .on_timeout = tp_on_timeout,
    .drain = tp_drain,
    .destroy = tp_destroy,
};
