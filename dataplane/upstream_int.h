/*
 * Internal to the upstream side (upstream.c, cluster.c, pool.c and the client
 * codecs http1_client.c, http2_client.c): the pool, connection and request
 * types and the calls between those files. The rest of the data plane uses
 * dataplane/upstream.h.
 *
 * Who owns what: a cluster's runtime (cluster.c) has a pool per endpoint; a
 * pool (pool.c) has the connections to that endpoint and the requests
 * waiting for one; a request (upstream.c) belongs to its pool and, once
 * given to a connection, is on that connection (uc->cur, or uc->reqs when
 * the connection is multiplexed). The pool asks nothing of a connection's
 * protocol: it calls the connection's client codec (struct dp_client_codec).
 */
#ifndef LEGATE_DP_UPSTREAM_INT_H
#define LEGATE_DP_UPSTREAM_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <http_parser.h>
#include <nghttp2/nghttp2.h>

#include "dataplane/buf.h"
#include "dataplane/config.h"
#include "dataplane/conn.h"
#include "dataplane/http.h"
#include "dataplane/stats.h"
#include "dataplane/upstream.h"
#include "dataplane/worker.h"

#define UPSTREAM_RESET_BODY "upstream connect error or disconnect/reset before headers. reset reason: "

struct dp_uconn;
struct dp_client_codec;
struct dp_orig_dst;

struct dp_pool {
    struct dp_cluster_rt *rt;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *addr_str;
    struct dp_uconn *conns;    /* every connection of the pool */
    struct dp_uconn *mux;      /* the multiplexed connection (HTTP/2 clusters) */
    struct dp_upstream_req *wait_head;
    struct dp_upstream_req *wait_tail;
    unsigned n_wait;
    unsigned n_conns;
    unsigned n_connecting;
    unsigned active;           /* requests in flight, for least-request */
    dp_stat_t st_rq_active;    /* cluster.<name>.<endpoint>.rq_active, for /clusters */
    int retired;
    struct dp_pool *next_retired;
};

enum { UH1_EV_NONE = 0, UH1_EV_HEADERS, UH1_EV_INFO, UH1_EV_BODY, UH1_EV_COMPLETE };

struct dp_uconn {
    struct dp_conn conn;
    dp_stat_t st_active;          /* the cluster gauge it counts in, until unlinked */
    struct dp_defer defer;
    struct dp_worker *w;
    struct dp_pool *pool;
    struct dp_uconn *next;
    struct dp_uconn *prev;
    const struct dp_client_codec *codec;
    int raw;                      /* a terminated CONNECT's TCP connection: no HTTP */
    int tunnel;                   /* HTTP/1: past a 101 (or 2xx to CONNECT): raw bytes */
    /* A network terminal's raw connection (tcp_upstream.c); NULL ops: none,
     * or its owner let go. */
    const struct dp_tcp_upstream_ops *tcp_ops;
    void *tcp_owner;
    struct dp_uconn *tcp_next, *tcp_prev; /* the worker's raw connections */
    int idle;
    int goaway;
    unsigned served;
    /* The requests on it: one at a time (cur), or many on a multiplexed
     * connection (reqs, n_streams). */
    struct dp_upstream_req *cur;
    unsigned n_streams;
    struct dp_upstream_req *reqs; /* requests on this HTTP/2 connection */
    /* HTTP/1 (http1_client.c) */
    http_parser parser;
    int ev;
    const uint8_t *body;
    size_t body_len;
    struct dp_buf hdr;
    size_t name_len;
    int last_was_value;
    /* HTTP/2 (http2_client.c) */
    nghttp2_session *ngh2;
    int ngh2_busy;                /* inside nghttp2_session_mem_recv/mem_send */
    int ngh2_again;               /* ... and a flush was asked for meanwhile */
};

#define UREQ_F_HEAD_SENT 0x01
#define UREQ_F_REQ_DONE 0x02  /* the whole request went out */
#define UREQ_F_RESP_STARTED 0x04
#define UREQ_F_RESP_DONE 0x08
#define UREQ_F_CHUNKED 0x10
#define UREQ_F_PAUSED 0x20
#define UREQ_F_DEFERRED 0x40
#define UREQ_F_WAITING 0x80
#define UREQ_F_UPGRADE 0x100 /* the request asked for an upgrade: the connection is not reused */
#define UREQ_F_NO_REPLAY 0x200 /* HTTP/2: more was sent than `sent` keeps */
#define UREQ_F_RETRIED 0x400   /* HTTP/2: sent again after the upstream refused it unprocessed */

struct dp_upstream_req {
    struct dp_stream *s;
    struct dp_pool *pool;
    struct dp_uconn *uc;
    struct dp_upstream_req *next; /* wait queue, or the HTTP/2 connection's list */
    struct dp_upstream_req *prev;
    int32_t h2_id;
    uint32_t flags; /* UREQ_F_* */
    size_t unconsumed; /* HTTP/2 response bytes not yet acknowledged */
    /* HTTP/2: what the request body sent so far was, while it fits the
     * buffer limit, to send it again on a stream the upstream refused
     * without processing it (REFUSED_STREAM, or above a GOAWAY's last
     * stream); replay: how many bytes at the front of s->req_body are such a
     * copy (the client's window was reopened for them once already). */
    struct dp_buf sent;
    size_t replay;
};

/*
 * A client codec: what the pool and the stream's calls need from the
 * protocol a connection speaks. Each connection has one (uc->codec), chosen
 * from its cluster when it is made (dp_client_codec_for). Hooks marked
 * "may be NULL" are not called when NULL.
 */
struct dp_client_codec {
    /** Many requests share one connection (pool->mux, uc->reqs, up to the
     *  cluster's max_concurrent_streams); otherwise a connection carries one
     *  request at a time (uc->cur) and the pool keeps it idle in between. */
    int multiplexed;
    /** Can carry an upgrade or a CONNECT tunnel. */
    int upgrades;
    /** TCP and TLS are up; the pool's accounting is done. Starts the
     *  session; the codec gives the connection requests (dp_pool_dispatch)
     *  or makes it idle. */
    void (*on_connected)(struct dp_uconn *uc);
    /** New bytes in uc->conn.in. */
    void (*on_read)(struct dp_uconn *uc);
    /** uc->conn.out was sent (see dp_conn_handler.on_drained): more. */
    void (*on_drained)(struct dp_uconn *uc);
    /** The connection closed for why; called before its requests fail, so
     *  that a response the close completes ends well. May be NULL. */
    void (*on_close)(struct dp_uconn *uc, enum dp_conn_close_reason why);
    /** Puts u (off the wait queue) on uc: its head, and what body there is.
     *  Returns 0, or -1 when it could not (u is not on uc; the caller fails
     *  it). A multiplexed codec only queues: flush sends. */
    int (*start)(struct dp_uconn *uc, struct dp_upstream_req *u);
    /** Multiplexed codecs: sends what start() and the session queued. */
    void (*flush)(struct dp_uconn *uc);
    /** More request body is in u->s->req_body, or the request is complete. */
    void (*kick)(struct dp_uconn *uc, struct dp_upstream_req *u);
    /** The downstream went away (u->s is already NULL): ends u on uc and
     *  frees it (dp_ureq_free); the connection may go too. */
    void (*cancel)(struct dp_uconn *uc, struct dp_upstream_req *u);
    /** Downstream back-pressure on u's response (UREQ_F_PAUSED is set
     *  already). May be NULL. */
    void (*pause)(struct dp_uconn *uc, struct dp_upstream_req *u);
    /** The pause is over (UREQ_F_PAUSED is cleared already). */
    void (*resume)(struct dp_uconn *uc, struct dp_upstream_req *u);
    /** Multiplexed codecs: takes u off uc->reqs (u->uc becomes NULL). */
    void (*detach)(struct dp_uconn *uc, struct dp_upstream_req *u);
    /** Frees the codec's state of uc, which is being freed. */
    void (*destroy)(struct dp_uconn *uc);
};

extern const struct dp_client_codec dp_http1_client_codec;
extern const struct dp_client_codec dp_http2_client_codec;
/** Raw bytes for a network terminal (tcp_upstream.c). */
extern const struct dp_client_codec dp_tcp_client_codec;

/** The codec of the connections a cluster makes. */
static inline const struct dp_client_codec *dp_client_codec_for(const struct dp_cluster *cfg)
{
    return cfg->http2 ? &dp_http2_client_codec : &dp_http1_client_codec;
}

/** Fields the client codecs write themselves (host from :authority). */
static inline int dp_client_is_hop(struct dp_str n)
{
    return dp_http_is_hop_field(n) || dp_str_eq(n, DP_STR_LIT("host"));
}

/* ---- cluster.c: load balancing ---- */

/** The pool of the endpoint the cluster's load balancer chooses (made on
 *  first use), or NULL when no endpoint is healthy. */
struct dp_pool *dp_cluster_pick(struct dp_worker *w, struct dp_cluster_rt *rt);
/** ORIGINAL_DST: the pool of the address od was headed to (made on first
 *  use), or NULL (no address, too many, no memory). */
struct dp_pool *dp_cluster_pick_original_dst(struct dp_cluster_rt *rt, const struct dp_orig_dst *od);

/* ---- pool.c: pools and their connections ---- */

/** A pool for ep in rt (the caller keeps it in rt->pools or rt->od_pools);
 *  NULL without memory. */
struct dp_pool *dp_pool_new(struct dp_cluster_rt *rt, const struct dp_endpoint *ep);
/** The endpoint left rt: waiting requests fail, idle connections close, the
 *  pool is freed once its busy connections are gone (dp_pool_maybe_free). */
void dp_pool_retire(struct dp_cluster_rt *rt, struct dp_pool *p);
/** Frees a retired pool that has no connection and no waiting request. */
void dp_pool_maybe_free(struct dp_pool *p);
/** Queues u for a connection of p (counted as a pending request). */
void dp_pool_wait_push(struct dp_pool *p, struct dp_upstream_req *u);
/** Takes u off p's wait queue if it is on it. */
void dp_pool_wait_remove(struct dp_pool *p, struct dp_upstream_req *u);
/** Gives waiting requests to connections, opening new ones as allowed. */
void dp_pool_dispatch(struct dp_pool *p);

/** A new connection of p, connecting on w's loop with the cluster's TLS
 *  context and codec; NULL when it could not start. */
struct dp_uconn *dp_uconn_new(struct dp_pool *p, struct dp_worker *w);
/** Closes uc now: its requests fail (503 UC) and it is freed. */
void dp_uconn_destroy(struct dp_uconn *uc);
/** Frees the connection (closed already); requests on it must have been
 *  detached. The memory itself goes after this loop iteration. */
void dp_uconn_free(struct dp_uconn *uc);
/** uc finished a request and may take another: idle in the pool (with the
 *  idle timeout), or closed when the pool is retired or the connection has
 *  served max_requests_per_connection. */
void dp_uconn_make_idle(struct dp_uconn *uc);
/** The connection failed for why: its requests fail with the matching
 *  flag and body; before it was connected, the requests waiting for it too. */
void dp_uconn_fail_all(struct dp_uconn *uc, enum dp_conn_close_reason why);

/* ---- tcp_upstream.c ---- */

/** Closes the worker's raw TCP connections to rt, in its pools and in the
 *  retired pools they keep alive (the cluster is going, and rt with it);
 *  their owners hear it. */
void dp_upstream_tcp_close_rt(struct dp_cluster_rt *rt);

/* ---- upstream.c: requests ---- */

/** Detaches u from everything and frees it. The stream is not told. */
void dp_ureq_free(struct dp_upstream_req *u);
/** Frees u and answers its stream (if any) locally with status. */
void dp_ureq_fail(struct dp_upstream_req *u, int status, const char *flag, const char *body);

#endif
