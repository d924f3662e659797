/*
 * The network filter chain runner (API for filters: dataplane/netfilter.h).
 * A connection's owner (the terminal, dataplane/hcm.c) holds one session,
 * starts it when the filter chain is known, runs each read through it
 * before parsing, and ends it when the connection goes.
 */
#ifndef LEGATE_DP_NET_CHAIN_H
#define LEGATE_DP_NET_CHAIN_H

#include <ev.h>

#include "dataplane/buf.h"
#include "dataplane/netfilter.h"

struct dp_arena;
struct dp_conn;

/** One configured filter of a filter chain (config.h: dp_filter_chain). */
struct dp_net_filter_inst {
    const struct dp_net_filter_ops *ops;
    void *cfg;
};

/** What the session asks of the connection's owner. */
struct dp_net_owner_ops {
    /** Bytes a filter held are back in conn->in: parse them (as on_read). */
    void (*deliver)(void *owner);
    /** A filter closed the connection from a later event (dp_net_close). */
    void (*close)(void *owner);
};

/* A filter's timer (dp_net_timer). */
struct dp_net_timer {
    ev_timer t;
    dp_net_timer_cb cb;
    const struct dp_net_call *call;
};

struct dp_net_session {
    struct dp_net_call *calls;      /* one per filter: the hook's argument */
    struct dp_net_timer *timers;    /* one per filter, armed on demand */
    const struct dp_net_filter_inst *filters;
    size_t n;                       /* 0: no session (or no filters) */
    size_t started;                 /* filters whose on_new_connection ran */
    size_t held;                    /* 1 + index of the filter holding reads; 0: none */
    struct dp_conn *conn;
    uint64_t in_seen;               /* of conn->bytes_read, what the filters saw */
    struct dp_buf hold;             /* bytes held by filter held - 1 */
    unsigned eof_seen : 1;          /* on_data had end_stream */
    unsigned hold_eof : 1;          /* ... and it is in the held bytes */
    unsigned half_open_set : 1;     /* we set DP_CONN_F_HALF_OPEN to keep a held EOF */
    unsigned has_data : 1, has_write : 1, ended : 1;
    struct dp_net_conn_info info;
    const struct dp_net_owner_ops *owner_ops;
    void *owner;
};

/** Starts the chain's filters on a connection (on_new_connection in
 *  order). info is copied; its strings must live as long as the
 *  connection. Per-connection state comes from arena. Returns 0, or -1
 *  when a filter closes the connection (or on allocation failure): the
 *  owner closes it and still calls dp_net_session_end. */
int dp_net_session_start(struct dp_net_session *ns, const struct dp_net_filter_inst *filters, size_t n,
                         struct dp_conn *conn, struct dp_arena *arena, const struct dp_net_conn_info *info,
                         const struct dp_net_owner_ops *owner_ops, void *owner);

/** True when reads must go through dp_net_session_read. */
static inline int dp_net_session_reads(const struct dp_net_session *ns)
{
    return ns->has_data;
}

/** True when writes must go through dp_net_session_write. */
static inline int dp_net_session_writes(const struct dp_net_session *ns)
{
    return ns->has_write;
}

/** Runs what was read since the last call (the tail of conn->in, and the
 *  EOF) through the data hooks. Returns 1: the terminal parses conn->in
 *  now; 0: a filter holds the bytes (they left conn->in; reading paused);
 *  -1: close the connection. */
int dp_net_session_read(struct dp_net_session *ns);

/** Runs n bytes about to be sent to the client through the write hooks
 *  (the owner's dp_conn_handler.on_queued). Returns 0, or -1: close the
 *  connection. */
int dp_net_session_write(struct dp_net_session *ns, const uint8_t *tail, size_t n);

/** on_close for every started filter, in reverse order; idempotent. */
void dp_net_session_end(struct dp_net_session *ns);

#endif
