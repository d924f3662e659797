/*
 * The network filter chain runner: see net_chain.h and netfilter.h.
 */
#include "dataplane/net_chain.h"

#include <string.h>

#include "dataplane/arena.h"
#include "dataplane/conn.h"

int dp_net_session_start(struct dp_net_session *ns, const struct dp_net_filter_inst *filters, size_t n,
                         struct dp_conn *conn, struct dp_arena *arena, const struct dp_net_conn_info *info,
                         const struct dp_net_owner_ops *owner_ops, void *owner)
{
    if (ns->n || n == 0)
        return 0; /* started already (TLS: at the ClientHello), or nothing to run */
    ns->calls = dp_arena_alloc(arena, n * sizeof(*ns->calls));
    ns->timers = dp_arena_alloc(arena, n * sizeof(*ns->timers));
    if (ns->calls == NULL || ns->timers == NULL)
        return -1;
    memset(ns->calls, 0, n * sizeof(*ns->calls));
    memset(ns->timers, 0, n * sizeof(*ns->timers));
    ns->filters = filters;
    ns->n = n;
    ns->conn = conn;
    ns->info = *info;
    ns->owner_ops = owner_ops;
    ns->owner = owner;
    /* Bytes already read belong to the chain from here on. */
    ns->in_seen = conn->bytes_read - dp_buf_size(&conn->in);
    for (size_t i = 0; i < n; i++) {
        struct dp_net_call *c = &ns->calls[i];
        c->cfg = filters[i].cfg;
        c->session = ns;
        if (filters[i].ops->ctx_size) {
            c->ctx = dp_arena_alloc(arena, filters[i].ops->ctx_size);
            if (c->ctx == NULL)
                return -1;
            memset(c->ctx, 0, filters[i].ops->ctx_size);
        }
        if (filters[i].ops->on_data)
            ns->has_data = 1;
        if (filters[i].ops->on_write)
            ns->has_write = 1;
    }
    for (size_t i = 0; i < n; i++) {
        ns->started = i + 1;
        if (filters[i].ops->on_new_connection &&
            filters[i].ops->on_new_connection(&ns->calls[i]) == DP_NET_CLOSE)
            return -1;
    }
    return 0;
}

/* Runs filters [from, n) over p/n. Returns 1 (all went on), 0 (held by the
 * filter now in ns->held) or -1 (close). */
static int run_data(struct dp_net_session *ns, size_t from, const uint8_t *p, size_t len, int eof)
{
    for (size_t i = from; i < ns->n; i++) {
        const struct dp_net_filter_ops *ops = ns->filters[i].ops;
        if (ops->on_data == NULL)
            continue;
        enum dp_net_status st = ops->on_data(&ns->calls[i], p, len, eof);
        if (st == DP_NET_CLOSE)
            return -1;
        if (st == DP_NET_STOP_ITERATION) {
            ns->held = i + 1;
            return 0;
        }
    }
    return 1;
}

int dp_net_session_read(struct dp_net_session *ns)
{
    struct dp_conn *c = ns->conn;
    if (ns->held)
        return 0; /* reading is paused; what was buffered before waits too */
    size_t fresh = (size_t)(c->bytes_read - ns->in_seen);
    int eof = (c->flags & DP_CONN_F_EOF) && !ns->eof_seen;
    if (fresh == 0 && !eof)
        return 1;
    ns->in_seen = c->bytes_read;
    if (eof)
        ns->eof_seen = 1;
    const uint8_t *p = fresh ? c->in.data + c->in.len - fresh : NULL;
    int r = run_data(ns, 0, p, fresh, eof);
    if (r != 0)
        return r;
    /* Held: the bytes leave conn->in so the terminal cannot parse them
     * before the filter lets them go, whatever else wakes it. */
    if (dp_buf_append(&ns->hold, p, fresh) < 0)
        return -1;
    c->in.len -= fresh;
    if (c->in.len == c->in.off)
        c->in.off = c->in.len = 0;
    ns->hold_eof = (unsigned)eof;
    if (eof && !(c->flags & DP_CONN_F_HALF_OPEN)) {
        c->flags |= DP_CONN_F_HALF_OPEN; /* the client's EOF must not close us yet */
        ns->half_open_set = 1;
    }
    dp_conn_pause_read(c);
    return 0;
}

void dp_net_continue_reading(const struct dp_net_call *call)
{
    struct dp_net_session *ns = call->session;
    size_t i = (size_t)(call - ns->calls);
    if (ns->ended || ns->held != i + 1)
        return;
    ns->held = 0;
    size_t n = dp_buf_size(&ns->hold);
    int r = run_data(ns, i + 1, n ? dp_buf_head(&ns->hold) : NULL, n, ns->hold_eof);
    if (r < 0) {
        ns->owner_ops->close(ns->owner);
        return;
    }
    if (r == 0)
        return; /* a later filter holds them now */
    struct dp_conn *c = ns->conn;
    if (n && dp_buf_append(&c->in, dp_buf_head(&ns->hold), n) < 0) {
        ns->owner_ops->close(ns->owner);
        return;
    }
    dp_buf_release(&ns->hold);
    if (ns->half_open_set) {
        c->flags &= ~DP_CONN_F_HALF_OPEN;
        ns->half_open_set = 0;
    }
    dp_conn_resume_read(c);
    ns->owner_ops->deliver(ns->owner);
}

void dp_net_close(const struct dp_net_call *call)
{
    struct dp_net_session *ns = call->session;
    if (!ns->ended)
        ns->owner_ops->close(ns->owner);
}

const struct dp_net_conn_info *dp_net_conn(const struct dp_net_call *call)
{
    return &call->session->info;
}

int dp_net_session_write(struct dp_net_session *ns, const uint8_t *tail, size_t n)
{
    if (ns->ended)
        return 0;
    for (size_t i = 0; i < ns->n; i++) {
        const struct dp_net_filter_ops *ops = ns->filters[i].ops;
        if (ops->on_write && ops->on_write(&ns->calls[i], tail, n) == DP_NET_CLOSE)
            return -1;
    }
    return 0;
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct dp_net_timer *nt = (struct dp_net_timer *)t;
    nt->cb(nt->call);
}

int dp_net_timer(const struct dp_net_call *call, double seconds, dp_net_timer_cb cb)
{
    struct dp_net_session *ns = call->session;
    if (ns->ended)
        return -1;
    struct dp_net_timer *nt = &ns->timers[call - ns->calls];
    if (nt->cb)
        ev_timer_stop(ns->conn->loop, &nt->t);
    nt->cb = cb;
    nt->call = call;
    ev_timer_init(&nt->t, timer_cb, seconds > 0 ? seconds : 0., 0.);
    ev_timer_start(ns->conn->loop, &nt->t);
    return 0;
}

void dp_net_session_end(struct dp_net_session *ns)
{
    if (ns->ended || ns->n == 0)
        return;
    ns->ended = 1;
    for (size_t i = 0; i < ns->n; i++)
        if (ns->timers[i].cb)
            ev_timer_stop(ns->conn->loop, &ns->timers[i].t);
    for (size_t i = ns->started; i-- > 0;)
        if (ns->filters[i].ops->on_close)
            ns->filters[i].ops->on_close(&ns->calls[i]);
    dp_buf_release(&ns->hold);
}
