/*
 * Internal: HTTP streams. Filters use dataplane/filter.h instead; the
 * downstream connection and its codecs are in dataplane/hcm.h.
 *
 * A stream is one request/response exchange on a downstream connection.
 * The codec (HTTP/1.1 or HTTP/2) creates it when a request starts, fills
 * the request head, and feeds it body bytes; the stream runs the filter
 * chain, whose last filter (the router) starts an upstream request; the
 * upstream side feeds the response back through dp_stream_upstream_*; the
 * codec writes it out (the dp_hcm_* entry points of hcm.h). Bytes in
 * flight are bounded by the buffer limit in each direction: over the
 * limit, the side producing them is paused.
 */
#ifndef LEGATE_DP_STREAM_H
#define LEGATE_DP_STREAM_H

#include <stdint.h>

#include <ev.h>

#include "dataplane/arena.h"
#include "dataplane/buf.h"
#include "dataplane/config.h"
#include "dataplane/filter.h"
#include "dataplane/hcm.h" /* streams and their users reach the connection through s->hcm */
#include "dataplane/http.h"
#include "dataplane/worker.h"

struct dp_worker;
struct dp_worker_snap;
struct dp_upstream_req;
struct dp_hcm;

#define DP_STREAM_F_REQ_HEADERS_DONE 0x0001 /* request head complete and processed */
#define DP_STREAM_F_REQ_COMPLETE 0x0002     /* request end_stream seen */
#define DP_STREAM_F_RESP_HEADERS_SENT 0x0004 /* response head handed to the codec */
#define DP_STREAM_F_RESP_COMPLETE 0x0008     /* response end handed to the codec */
#define DP_STREAM_F_LOCAL_REPLY 0x0010
#define DP_STREAM_F_RESET 0x0020             /* reset by either side */
#define DP_STREAM_F_UPSTREAM_PAUSED 0x0040   /* we paused the upstream's reads */
#define DP_STREAM_F_DOWNSTREAM_PAUSED 0x0080 /* we paused the request body */
#define DP_STREAM_F_EXPECT_CONTINUE 0x0100
#define DP_STREAM_F_CLOSE_AFTER 0x0200       /* HTTP/1: close the connection after */
#define DP_STREAM_F_RESP_CHUNKED 0x0400      /* HTTP/1: response framed chunked */
#define DP_STREAM_F_HEAD 0x0800              /* HEAD request: no response body */
#define DP_STREAM_F_DEFERRED 0x1000          /* HTTP/2: data provider deferred */
#define DP_STREAM_F_DONE 0x2000              /* finished, awaiting free */
#define DP_STREAM_F_REQ_NO_BODY 0x4000       /* HTTP/1: the head says there is no body */
#define DP_STREAM_F_GRPC 0x8000              /* content-type application/grpc[+...]: gRPC replies */
#define DP_STREAM_F_CONTINUE_SENT 0x10000    /* a 100 went to the client */
#define DP_STREAM_F_UPGRADE 0x20000          /* an upgrade (s->upgrade) or CONNECT was requested */
#define DP_STREAM_F_TUNNEL 0x40000           /* the upgrade was accepted: bodies are raw bytes */
#define DP_STREAM_F_CONNECT 0x80000          /* CONNECT (HTTP/1.1, or HTTP/2 without :protocol) */
#define DP_STREAM_F_H2_EXT_CONNECT 0x100000  /* HTTP/2 extended CONNECT (RFC 8441) */
#define DP_STREAM_F_TUNNEL_TCP 0x200000      /* CONNECT terminated here: raw TCP to the cluster */

/* Where a direction's filter iteration stands (dataplane/filter_chain.c).
 * Positions count in the direction's order: request 0..n-1, response
 * n-1..0 over the filters whose request hooks ran. */
struct dp_filter_iter {
    struct dp_buf hold;          /* body held while a filter stops */
    uint32_t stop;               /* position of the filter that stopped */
    uint8_t mode;                /* 0, DP_FILTER_STOP_ITERATION or DP_FILTER_STOP_AND_BUFFER */
    uint8_t headers_pending;     /* the head waits at stop */
    uint8_t headers_end;         /* ... and had end_stream */
    uint8_t end_pending;         /* the body's end arrived while stopped */
    uint8_t trailers_pending;    /* trailers arrived while stopped */
    uint8_t paused;              /* the sender was paused for the hold */
};

struct dp_stream {
    struct dp_hcm *hcm;
    struct dp_defer defer;       /* its memory goes after the loop iteration that freed it */
    struct dp_stream *next;      /* in hcm->streams */
    struct dp_stream *prev;
    int32_t h2_id;               /* HTTP/2 stream id; 0 for HTTP/1 */
    uint64_t id;                 /* for logs */
    uint32_t flags;              /* DP_STREAM_F_* */
    struct dp_arena arena;
    struct dp_request_head req;
    struct dp_response_head resp;
    struct dp_headers req_trailers;  /* HTTP/2 trailers, or HTTP/1.1 chunked ones */
    struct dp_headers resp_trailers; /* the same, from the upstream */
    struct dp_str upgrade;       /* the requested upgrade, lowercase ("websocket", "connect") */
    double stream_deadline;      /* max_stream_duration's absolute deadline, or 0 */
    struct dp_buf req_body;      /* request bytes not yet taken by upstream */
    struct dp_buf resp_body;     /* HTTP/2: response bytes not yet framed */
    const struct dp_hcm_cfg *cfg;
    const struct dp_route *route;
    const struct dp_virtual_host *vhost;
    struct dp_worker_snap *snap; /* pinned for the stream's life */
    struct dp_upstream_req *up;
    void **filter_ctx;           /* per filter, ctx_size bytes */
    size_t filters_started;      /* how many filters saw on_request_headers */
    struct dp_filter_iter iter[2]; /* per direction (enum dp_filter_dir): filter_chain.c */
    ev_timer timer;              /* route timeout */
    ev_timer guard;              /* request_timeout and stream_idle_timeout */
    ev_tstamp last_activity;
    ev_tstamp start;
    uint64_t bytes_received;
    uint64_t bytes_sent;
    char response_flags[32];
    struct dp_str local_body;    /* a local reply's body, for %LOCAL_REPLY_BODY% */
    const char *upstream_host;
    char request_id[40];
    struct dp_cluster_stats up_st;  /* the cluster's stats, once routed (handles only) */
};

/* ---- called by the codecs --------------------------------------------- */

struct dp_stream *dp_stream_new(struct dp_hcm *h, int32_t h2_id);
/** Request head complete: sanitise, route, run filters. */
void dp_stream_request_headers(struct dp_stream *s, int end_stream);
/** Request body bytes (possibly empty with end_stream). */
void dp_stream_request_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream);
/** The request ends with trailers (in s->req_trailers). */
void dp_stream_request_end_trailers(struct dp_stream *s);
/** The downstream reset the stream or the connection went away. */
void dp_stream_downstream_reset(struct dp_stream *s);
/** Codec finished writing the response and the request is complete. */
void dp_stream_free(struct dp_stream *s);

/* ---- the filter chain (filter_chain.c) --------------------------------- */

/** Run a request head / body chunk / trailers, or a response one, through
 *  the filters; what passes all of them goes on (the terminal step and the
 *  upstream for requests, the codec for responses). */
void dp_fc_request_headers(struct dp_stream *s, int end_stream);
void dp_fc_request_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream);
void dp_fc_request_trailers(struct dp_stream *s);
void dp_fc_response_headers(struct dp_stream *s, int end_stream);
void dp_fc_response_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream);
void dp_fc_response_trailers(struct dp_stream *s);
/** 1 when body hooks or a stop may hold data for dir (else the fast path). */
int dp_fc_active(const struct dp_stream *s, enum dp_filter_dir dir);
/** Releases what the iteration holds. */
void dp_fc_free(struct dp_stream *s);

/* What passed the filters (stream.c). */
void dp_stream_terminal(struct dp_stream *s, int end_stream);
void dp_stream_forward_request_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream);
void dp_stream_forward_request_trailers(struct dp_stream *s);
void dp_stream_forward_response_headers(struct dp_stream *s, int end_stream);
void dp_stream_forward_response_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream);
void dp_stream_forward_response_trailers(struct dp_stream *s);
/** The filter call for filter i of the connection manager. */
struct dp_filter_call dp_stream_filter_call(struct dp_stream *s, size_t i);

/* ---- called by the upstream side -------------------------------------- */

void dp_stream_upstream_headers(struct dp_stream *s, int end_stream);
void dp_stream_upstream_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream);
/** The response ends with trailers (in s->resp_trailers). */
void dp_stream_upstream_trailers(struct dp_stream *s);
/** An informational (1xx other than 101) response head is in s->resp:
 *  forwarded to the client when it can take it, then s->resp is cleared
 *  for the final head. */
void dp_stream_upstream_informational(struct dp_stream *s);
/** True when the upstream should see an upgrade: the codec writes the
 *  upgrade head (HTTP/1.1 Upgrade, or CONNECT). */
int dp_stream_wants_upgrade(const struct dp_stream *s);
/** The upstream failed. Before the response started: a local reply with
 *  status and body; after: the downstream stream is reset. */
void dp_stream_upstream_failed(struct dp_stream *s, int status, const char *flag,
                               const char *body);
/** The upstream took request bytes from s->req_body; if the downstream was
 *  paused and there is room again, it is resumed. */
void dp_stream_upstream_drained(struct dp_stream *s);
/** How much of s's response an upstream reader may read in one go: the
 *  buffer limit, or one buffer block while s's client connection holds
 *  over half its budget (a client that reads none of many streams then
 *  costs a block per stream, not a read's worth). */
size_t dp_stream_read_ahead(const struct dp_stream *s);
/** Whether a stream whose upstream is paused may take more response now:
 *  it holds under half the buffer limit, and nothing at all while the
 *  connection's streams together hold over half of it; no filter holds
 *  the response. The codec's resume scans use this, as
 *  dp_stream_downstream_drained does. */
int dp_stream_may_resume(struct dp_stream *s);
/** The downstream took response bytes; resume the upstream if paused. */
void dp_stream_downstream_drained(struct dp_stream *s);

#endif
