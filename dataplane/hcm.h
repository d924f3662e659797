/*
 * Internal: the downstream HTTP connection manager. Filters use
 * dataplane/filter.h instead.
 *
 * A struct dp_hcm is one accepted downstream connection. hcm.c owns its
 * life (accept, TLS, timeouts, close) and picks its server codec (by ALPN,
 * codec_type, or the HTTP/2 preface on plaintext); the codec (HTTP/1.1 in
 * http1_server.c, HTTP/2 in http2_server.c) parses requests into streams
 * (stream.h) and writes their responses. Streams reach the codec only
 * through the dp_hcm_* entry points below, which dispatch through
 * h->codec: neither hcm.c nor stream.c asks which protocol a connection
 * speaks.
 */
#ifndef LEGATE_DP_HCM_H
#define LEGATE_DP_HCM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <ev.h>
#include <http_parser.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include "dataplane/arena.h"
#include "dataplane/buf.h"
#include "dataplane/config.h"
#include "dataplane/conn.h"
#include "dataplane/filter.h"
#include "dataplane/h1_chunk.h"
#include "dataplane/http.h"
#include "dataplane/net_chain.h"
#include "dataplane/worker.h"

struct dp_hcm;
struct dp_stream;
struct dp_worker;
struct dp_worker_snap;

/* Where a redirected connection was headed. */
struct dp_orig_dst {
    struct sockaddr_storage addr;
    socklen_t len;
};

/* A server codec: what the connection manager and the streams ask of the
 * protocol a connection speaks. The stream-side operations are called by
 * the dp_hcm_* entry points after their protocol-independent part (stats,
 * DP_STREAM_F_* bookkeeping, the checks written above each entry point);
 * an operation left NULL has nothing to do for that protocol. A terminal
 * network filter other than the connection manager (tcp_proxy,
 * filters/tcp_proxy/) is a codec too, with the connection operations only:
 * it has no streams, and keeps its state in h->term. */
struct dp_server_codec {
    /** Takes over the connection (h->codec points at this codec after it
     *  succeeds). Returns 0, or -1 when it cannot: the caller destroys h. */
    int (*start)(struct dp_hcm *h);
    /** Bytes arrived in h->conn.in, or the peer's EOF: parse, feed streams.
     *  May close or destroy h. */
    void (*on_read)(struct dp_hcm *h);
    /** h->conn.out drained: write more, resume upstreams paused on it. */
    void (*on_drained)(struct dp_hcm *h);
    /** The connection timer fired on an established connection. Returns 1
     *  when the codec took care of it (h may be gone), 0 for the connection
     *  manager's idle handling. NULL: always 0. */
    int (*on_timeout)(struct dp_hcm *h);
    /** The connection closes for idleness: tell the client first. */
    void (*idle_close)(struct dp_hcm *h);
    /** Re-arms the connection timer for idleness while streams are open.
     *  NULL: the codec sets the timer itself per request. */
    void (*arm_idle)(struct dp_hcm *h);
    /** Graceful close began (h->draining is already set). */
    void (*drain)(struct dp_hcm *h);
    /** All streams were reset and freed: drop references to them. */
    void (*streams_reset)(struct dp_hcm *h);
    /** Releases the codec's state (the connection is being freed). */
    void (*destroy)(struct dp_hcm *h);

    /* Per stream: see the dp_hcm_* entry point of the same name. */
    void (*send_headers)(struct dp_stream *s, int end_stream);
    void (*send_data)(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream);
    void (*send_trailers)(struct dp_stream *s);
    int (*send_informational)(struct dp_stream *s);
    void (*stream_done)(struct dp_stream *s);
    void (*reset_stream)(struct dp_stream *s);
    size_t (*pending_out)(struct dp_stream *s);
    void (*pause_request)(struct dp_stream *s);
    void (*resume_request)(struct dp_stream *s);
    void (*consumed)(struct dp_stream *s, size_t n);
};

/** HTTP/1.1 (http-parser): http1_server.c. */
extern const struct dp_server_codec dp_http1_server_codec;
/** HTTP/2 (nghttp2): http2_server.c. */
extern const struct dp_server_codec dp_http2_server_codec;

/* The downstream HTTP connection. */
struct dp_hcm {
    struct dp_conn conn;
    struct dp_defer defer;
    struct dp_worker *w;
    struct dp_worker_snap *snap;          /* pinned for the connection's life */
    const struct dp_listener *listener;
    const struct dp_filter_chain *chain;
    struct dp_net_session net;   /* the chain's network filters before this one */
    const struct dp_hcm_cfg *cfg;
    const struct dp_server_codec *codec;  /* NULL until the codec starts */
    void *term;                           /* a terminal other than HTTP: its state (tcp_proxy) */
    uint64_t id;
    int h2;                               /* HTTP/2 chosen (for logs; dispatch goes through codec) */
    int draining;
    int goaway_final;                     /* HTTP/2: the last GOAWAY is out */
    uint32_t h2_streams_total;            /* HTTP/2: streams opened by the client */
    uint32_t h2_premature_resets;         /* ... and reset by it before their response ended */
    int h2_abusive;                       /* rapid reset detected: close */
    ev_timer drain_timer;                 /* HTTP/2: notice -> final GOAWAY */
    struct dp_stream *streams;            /* active streams */
    size_t n_streams;
    size_t resp_held;                     /* HTTP/2: the streams' resp_body bytes together */
    int detect;                           /* plaintext AUTO: sniffing the h2 preface */
    /* HTTP/1 */
    http_parser parser;
    int h1_event;                         /* H1_EV_* recorded by a parser callback */
    int h1_tunnel;                        /* past an upgrade head: c->in is tunnel bytes */
    const uint8_t *h1_body;
    size_t h1_body_len;
    struct dp_stream *h1_cur;             /* stream being parsed or answered */
    struct dp_buf h1_hdr;                 /* partial header name/value */
    size_t h1_name_len;
    int h1_last_was_value;
    size_t h1_header_bytes;
    enum { H1_FOLD_IN = 0, H1_FOLD_LF, H1_FOLD_LF_CR, H1_FOLD_DONE } h1_fold; /* head scan */
    struct dp_h1_chunk h1_chunk;          /* a chunked request body's framing (h1_chunk.h) */
    size_t h1_chunk_ahead;                /* bytes at c->in's head it has seen, http-parser not */
    /* HTTP/2 */
    nghttp2_session *ngh2;
    int ngh2_busy;                        /* inside nghttp2_session_mem_recv/mem_send */
    int ngh2_again;                       /* ... and a flush was asked for meanwhile */
    /* What the connection keeps for its life, in conn_arena: a few hundred
     * bytes in one small malloc'd block (an idle connection's memory) */
    struct dp_arena conn_arena;
    struct dp_peer_identity peer;         /* TLS peer */
    struct dp_str xfcc_elem;              /* this peer's XFCC element, made once */
    unsigned xfcc_elem_fields;            /* ... with these DP_XFCC_F_* */
    const struct dp_orig_dst *orig_dst;   /* NULL: not redirected */
    const char *remote;                   /* "ip:port" */
    const char *local;
    struct dp_hcm *next_in_worker;
    struct dp_hcm *prev_in_worker;
};

/* ---- codec entry points, called by streams (hcm.c) --------------------- */

/** Writes the response head. */
void dp_hcm_send_headers(struct dp_stream *s, int end_stream);
/** Writes the response trailers (s->resp_trailers) and ends the response;
 *  a codec that cannot carry them drops them. */
void dp_hcm_send_trailers(struct dp_stream *s);
/** Writes the informational head in s->resp (status 1xx) if the client can
 *  take one. Returns 1 when sent. */
int dp_hcm_send_informational(struct dp_stream *s);
/** Writes body bytes (copied). */
void dp_hcm_send_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream);
/** Resets the stream downstream (HTTP/1: closes the connection). */
void dp_hcm_reset_stream(struct dp_stream *s);
/** Bytes queued towards the downstream for this stream. */
size_t dp_hcm_pending_out(struct dp_stream *s);
/** Lets the downstream send more request body (after a pause). */
void dp_hcm_resume_request(struct dp_stream *s);
/** Stops taking request body from the downstream until
 *  dp_hcm_resume_request (HTTP/1: stops reading the connection; HTTP/2:
 *  the stream's window is not reopened meanwhile). */
void dp_hcm_pause_request(struct dp_stream *s);
/** HTTP/2 flow control: n request-body bytes left our hands (reopens the
 *  client's window). No-op for HTTP/1. */
void dp_hcm_consumed(struct dp_stream *s, size_t n);
/** The stream is complete on both sides: HTTP/1 moves to the next request. */
void dp_hcm_stream_done(struct dp_stream *s);

/* ---- the connection (listener.c, worker.c) ----------------------------- */

/** Starts serving an accepted connection on the worker. With fc NULL the
 *  connection is TLS and its chain is chosen during the ClientHello. The
 *  connection pins snap for its life. */
void dp_hcm_accept(struct dp_worker *w, struct dp_worker_snap *snap, const struct dp_listener *l,
                   const struct dp_filter_chain *fc, int fd, SSL *ssl);
/** The same for a connection an iptables REDIRECT sent here: od is where
 *  it was headed (the downstream local address, and the destination of
 *  ORIGINAL_DST clusters). */
void dp_hcm_accept_redirected(struct dp_worker *w, struct dp_worker_snap *snap, const struct dp_listener *l,
                              const struct dp_filter_chain *fc, int fd, SSL *ssl, const struct dp_orig_dst *od);

/** Closes the connection now, resetting its streams (shutdown). h is
 *  freed after the current loop iteration. */
void dp_hcm_destroy(struct dp_hcm *h);

/** Begin graceful close: HTTP/1 Connection: close, HTTP/2 GOAWAY. */
void dp_hcm_drain(struct dp_hcm *h);

/* ---- for the codecs (hcm.c) -------------------------------------------- */

/** Closes after what is queued has been written. */
void dp_hcm_close_graceful(struct dp_hcm *h);
/** Resets and frees every stream of the connection (it is going away). */
void dp_hcm_reset_streams(struct dp_hcm *h);

/** Framing and hop-by-hop fields, which the codec writes itself: 1 when a
 *  response field must not be copied to the wire. */
static inline int dp_hcm_skip_response_header(struct dp_str name)
{
    return dp_http_is_hop_field(name) || dp_str_eq(name, DP_STR_LIT("trailer"));
}

/** 1 when a response with this status has no body (RFC 9110 6.4.1). */
static inline int dp_hcm_bodyless_status(int status)
{
    return (status >= 100 && status < 200) || status == 204 || status == 304;
}

#endif
