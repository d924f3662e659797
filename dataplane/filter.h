/*
 * The HTTP filter API (v2). A filter author includes this header only.
 *
 * A filter is a `static const struct dp_filter_ops` registered by its Envoy
 * extension name in filters/registry.c. Its config is built once from the
 * typed_config (config_new), shared read-only by every worker, and freed
 * with the listener that uses it. Per stream, the connection manager calls
 * the request hooks in filter order and the response hooks in reverse
 * order, as Envoy's decoder and encoder filters and HAProxy's flt_ops. Each
 * hook gets the filter's own config, the most specific per-route config
 * (the route's typed_per_filter_config entry, else its virtual host's, else
 * NULL) and its per-stream context (ctx_size bytes, zeroed, freed with the
 * stream). After the last filter the connection manager routes the request
 * (its terminal step: envoy.filters.http.router marks the end of the list).
 *
 * See docs/internals/filter-api.md.
 */
#ifndef LEGATE_DP_FILTER_H
#define LEGATE_DP_FILTER_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "dataplane/buf.h"
#include "dataplane/http.h"
#include "dataplane/matcher.h" /* string matchers, for configs: dp_string_matcher_build() */

struct dp_stream;

enum dp_filter_status {
    /** Go on to the next filter. */
    DP_FILTER_CONTINUE = 0,
    /** The filter answered (dp_stream_send_local_reply) or reset the
     *  stream: nothing after it runs in this direction. */
    DP_FILTER_STOP = 1,
    /** Pause here: later filters (and the upstream, or the client) get
     *  nothing until the filter calls dp_filter_continue() for this
     *  direction. Body bytes that arrive meanwhile are held by the
     *  connection manager, and their sender is slowed (flow control) once
     *  the buffer limit is held; this filter's data hook is not called for
     *  them. */
    DP_FILTER_STOP_ITERATION = 2,
    /** From a headers or data hook: hold the body and call this filter's
     *  data hook again for each chunk that arrives (dp_filter_buffered()
     *  has everything held so far), until it returns DP_FILTER_CONTINUE or
     *  calls dp_filter_continue(). More than the buffer limit held is
     *  answered 413 (request) or 500 (response), as Envoy does. */
    DP_FILTER_STOP_AND_BUFFER = 3,
};

/** Which way a hook or dp_filter_continue() works. */
enum dp_filter_dir {
    DP_FILTER_REQUEST = 0,  /* client -> upstream (Envoy: decoding) */
    DP_FILTER_RESPONSE = 1, /* upstream -> client (Envoy: encoding) */
};

/** What every hook gets besides the stream. */
struct dp_filter_call {
    const void *cfg;       /* the filter's config (config_new) */
    const void *route_cfg; /* the most specific per-route config, or NULL */
    void *ctx;             /* per-stream context, or NULL when ctx_size is 0 */
};

/** What a filter can know about the downstream connection's TLS peer. */
struct dp_peer_identity {
    int tls;                 /* the connection is TLS */
    int presented;           /* the client sent a certificate */
    int verified;            /* it chained to a trusted CA, was in date, not
                                revoked, and matched the SAN matchers */
    long verify_error;       /* X509_V_ERR_* of the first failure, or 0 */
    const char *verify_reason; /* "untrusted chain", "expired", ... or NULL */
    const char *subject;     /* RFC 2253, NUL-terminated, or NULL */
    const char *issuer;
    const char *serial;      /* hex */
    const char *fingerprint; /* sha256, hex */
    const char *const *uri_sans;
    size_t n_uri_sans;
    const char *const *dns_sans;
    size_t n_dns_sans;
    const char *const *email_sans;
    size_t n_email_sans;
    const char *cert_pem;    /* URL-unescaped PEM of the leaf, or NULL; only
                                when the listener's XFCC forwards Cert or Chain */
    const char *chain_pem;   /* the same, for the whole chain */
    const char *tls_version; /* "TLSv1.3" */
};

struct dp_filter_ops {
    /** Envoy extension name, e.g. "envoy.filters.http.router". */
    const char *name;
    /** Type of typed_config (NULL: the filter takes none). */
    const ProtobufCMessageDescriptor *config_type;
    /** Builds the shared config from the unpacked typed_config (NULL when
     *  the filter takes none, or none was given). Returns the config, or
     *  NULL with a reason in err (the caller prefixes the field path). A
     *  filter whose config may legitimately be empty returns a non-NULL
     *  sentinel. */
    void *(*config_new)(const ProtobufCMessage *msg, char *err, size_t errlen);
    void (*config_free)(void *cfg);
    /** Type of typed_per_filter_config entries (NULL: no per-route config). */
    const ProtobufCMessageDescriptor *route_config_type;
    void *(*route_config_new)(const ProtobufCMessage *msg, char *err, size_t errlen);
    /** Frees what route_config_new built (NULL: config_free does). */
    void (*route_config_free)(void *route_cfg);
    /** Bytes of per-stream context. */
    size_t ctx_size;
    /** 1: the filter is the terminal marker (the router); no hook runs. */
    int terminal;

    /* Hooks; any may be NULL (the filter is skipped for that event). A hook
     * returns a dp_filter_status; the response hooks of a local reply run
     * too, and their STOP_* statuses are ignored there. */

    /** The request head is complete (end_stream: no body follows). The
     *  filter may read and edit it (dp_stream_request). */
    enum dp_filter_status (*on_request_headers)(struct dp_stream *s, const struct dp_filter_call *c,
                                                int end_stream);
    /** A chunk of the request body (n may be 0 with end_stream). */
    enum dp_filter_status (*on_request_data)(struct dp_stream *s, const struct dp_filter_call *c,
                                             const uint8_t *p, size_t n, int end_stream);
    /** The request ends with trailers (dp_stream_request_trailers). */
    enum dp_filter_status (*on_request_trailers)(struct dp_stream *s, const struct dp_filter_call *c);
    /** The response head (upstream or local reply) before it goes to the
     *  client; edit dp_stream_response(s)->headers. */
    enum dp_filter_status (*on_response_headers)(struct dp_stream *s, const struct dp_filter_call *c,
                                                 int end_stream);
    enum dp_filter_status (*on_response_data)(struct dp_stream *s, const struct dp_filter_call *c,
                                              const uint8_t *p, size_t n, int end_stream);
    enum dp_filter_status (*on_response_trailers)(struct dp_stream *s, const struct dp_filter_call *c);
    /** The stream ends (complete, reset or failed). Release ctx resources.
     *  Only for filters whose on_request_headers ran (or would have). */
    void (*on_destroy)(struct dp_stream *s, const struct dp_filter_call *c);
};

/* ---- what a filter may call ------------------------------------------ */

/** The request head; the filter may edit headers through it. */
struct dp_request_head *dp_stream_request(struct dp_stream *s);
/** The response head (valid from on_response_headers on). */
struct dp_response_head *dp_stream_response(struct dp_stream *s);
/** The request and response trailers (empty until they arrive). */
struct dp_headers *dp_stream_request_trailers(struct dp_stream *s);
struct dp_headers *dp_stream_response_trailers(struct dp_stream *s);
/** The body held for this direction while a filter stops (STOP_* above):
 *  what filters before the stopped one have seen and later ones have not.
 *  Read-only. */
const struct dp_buf *dp_filter_buffered(struct dp_stream *s, enum dp_filter_dir dir);
/** Resumes a direction that a filter stopped with STOP_ITERATION or
 *  STOP_AND_BUFFER: the filters after it run for what was held (head, body
 *  as one chunk, trailers). Call it from a later event (a timer, another
 *  connection), or from the stopped filter's own data hook. */
void dp_filter_continue(struct dp_stream *s, enum dp_filter_dir dir);

/** The name of the route the request matched (NULL: none, or unnamed),
 *  and of the cluster it goes to (NULL when it goes to none). */
const char *dp_stream_route_name(const struct dp_stream *s);
const char *dp_stream_cluster_name(const struct dp_stream *s);
/** The stream's id in the logs ("S<id>"), and its connection's ("C<id>"). */
uint64_t dp_stream_id(const struct dp_stream *s);
uint64_t dp_stream_connection_id(const struct dp_stream *s);
/** 1 for a gRPC request (content-type application/grpc...): local replies
 *  become gRPC statuses. */
int dp_stream_is_grpc(const struct dp_stream *s);
/** The stream's arena: allocations live as long as the stream. */
struct dp_arena *dp_stream_arena(struct dp_stream *s);
/** The downstream peer's TLS identity (never NULL; tls == 0 on plaintext). */
const struct dp_peer_identity *dp_stream_peer(struct dp_stream *s);

/** Answers the request locally: status, an optional content type and body.
 *  The filter then returns DP_FILTER_STOP. Response filters still run. */
void dp_stream_send_local_reply(struct dp_stream *s, int status, const char *content_type,
                                const char *body, size_t body_len);

/** Adds an Envoy-style response flag to the stream's access log record
 *  ("UH", "UF", "URX", ...). */
void dp_stream_set_response_flag(struct dp_stream *s, const char *flag);

#endif
