/*
 * The HTTP filter API. A filter author includes this header only.
 *
 * A filter is a `static const struct dp_filter_ops` registered by its Envoy
 * extension name in filters/registry.c. Its config is built once from the
 * typed_config (config_new), shared read-only by every worker, and freed
 * with the listener that uses it. Per stream, the connection manager calls
 * the hooks in filter order for the request and in reverse order for the
 * response, each with the filter's config (or the route's override from
 * typed_per_filter_config) and its per-stream context (ctx_size bytes,
 * zeroed, freed with the stream).
 *
 * See docs/internals/filter-api.md.
 */
#ifndef LEGATE_DP_FILTER_H
#define LEGATE_DP_FILTER_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "dataplane/http.h"

struct dp_stream;

enum dp_filter_status {
    /** Go on to the next filter. */
    DP_FILTER_CONTINUE = 0,
    /** Stop here. The filter MUST have either sent a local reply
     *  (dp_stream_send_local_reply) or taken over the stream (the router
     *  does: it forwards upstream and feeds the response back itself). */
    DP_FILTER_STOP = 1,
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
    /** Type of typed_per_filter_config entries (NULL: no per-route config). */
    const ProtobufCMessageDescriptor *route_config_type;
    void *(*route_config_new)(const ProtobufCMessage *msg, char *err, size_t errlen);
    void (*config_free)(void *cfg);
    /** Bytes of per-stream context. */
    size_t ctx_size;
    /** Request headers are complete. The filter may read and modify the
     *  request head (dp_stream_request). */
    enum dp_filter_status (*on_request_headers)(struct dp_stream *s, const void *cfg, void *ctx);
    /** Response headers are about to be sent downstream (upstream or local
     *  reply). The filter may modify them; the return value is ignored. */
    enum dp_filter_status (*on_response_headers)(struct dp_stream *s, const void *cfg, void *ctx);
    /** The stream ends (complete, reset or failed). Release ctx resources. */
    void (*on_destroy)(struct dp_stream *s, const void *cfg, void *ctx);
};

/* ---- what a filter may call ------------------------------------------ */

/** The request head; the filter may edit headers through it. */
struct dp_request_head *dp_stream_request(struct dp_stream *s);
/** The response head (valid in on_response_headers). */
struct dp_response_head *dp_stream_response(struct dp_stream *s);
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
