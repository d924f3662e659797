/*
 * TLS contexts built from Envoy's DownstreamTlsContext / UpstreamTlsContext
 * (tls_config.c), and what the rest of the data plane asks of a TLS
 * connection (tls.c: SSL objects, handshakes, peer identity).
 *
 * Contexts are immutable once built and shared by every worker (an SSL_CTX
 * may be used from several threads to create SSL objects). They are
 * reference counted: a listener or cluster holds a reference, and so does
 * every SSL made from them (through ex_data), so a context replaced by a
 * secret rotation lives exactly as long as the connections that use it.
 */
#ifndef LEGATE_DP_TLS_H
#define LEGATE_DP_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "dataplane/arena.h"
#include "dataplane/filter.h"
#include "dataplane/tls_ec.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"

struct dp_tls_server;
struct dp_tls_client;

/** Resolves SDS secret names (tls_certificate_sds_secret_configs,
 *  validation_context_sds_secret_config) to Secret resources. fn returns
 *  NULL when the secret is unknown. */
struct dp_secret_lookup {
    const Envoy__Extensions__TransportSockets__Tls__V3__Secret *(*fn)(void *ud, const char *name);
    void *ud;
};

/** Process-wide setup (ex_data indexes). Call once before anything else. */
int dp_tls_init(void);

/**
 * Builds a server context. alpn: the protocols the connection manager can
 * speak, in preference order ("h2", "http/1.1"), used when the context's own
 * alpn_protocols is empty. Returns NULL with "field: reason" in err (field
 * paths relative to the DownstreamTlsContext, e.g.
 * "common_tls_context.tls_certificates[0].private_key: ...").
 */
struct dp_tls_server *dp_tls_server_new(
    const Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext *cfg,
    const char *const *alpn, size_t n_alpn, const struct dp_secret_lookup *secrets, char *err,
    size_t errlen);
void dp_tls_server_ref(struct dp_tls_server *s);
void dp_tls_server_unref(struct dp_tls_server *s);

/**
 * Chooses the server context for a handshake from what the ClientHello
 * says. sni is NULL when the client sent none; alpn is the client's list.
 * Returns the context to use (borrowed), or NULL to refuse the handshake.
 */
typedef struct dp_tls_server *(*dp_tls_select_cb)(void *arg, const char *sni,
                                                  const char *const *alpn, size_t n_alpn);

/**
 * Creates an SSL for an accepted connection. The handshake's ClientHello
 * calls select(arg, ...) and then switches to the chosen context (its
 * certificates, chosen among several by SNI, its verification settings,
 * its ALPN list). arg must outlive the handshake. Returns NULL on failure.
 */
SSL *dp_tls_server_new_ssl(struct dp_tls_server *initial, dp_tls_select_cb select, void *arg);

/** The server context an SSL ended up with (after the ClientHello). */
struct dp_tls_server *dp_tls_ssl_server(SSL *ssl);

/**
 * Builds a client context for a cluster. default_cert, when not NULL, is
 * the data-plane-wide default upstream client certificate (from the
 * legate.config.v1.DefaultUpstreamTls bootstrap extension); it is used only
 * when cfg has no certificate of its own. http2: offer ALPN "h2" (else
 * "http/1.1"). Returns NULL with "field: reason" in err.
 */
struct dp_tls_client *dp_tls_client_new(
    const Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext *cfg,
    const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *default_cert,
    int http2, const struct dp_secret_lookup *secrets, char *err, size_t errlen);
void dp_tls_client_ref(struct dp_tls_client *c);
void dp_tls_client_unref(struct dp_tls_client *c);

/** Creates an SSL for an upstream connection (SNI, verification, ALPN and
 *  the client certificate set). Returns NULL on failure. */
SSL *dp_tls_client_new_ssl(struct dp_tls_client *c);

/**
 * After a handshake: fills id with the peer's identity (strings in arena).
 * For a server-side SSL that is the client certificate and whether it was
 * verified (with the reason when not); for a client-side SSL the upstream's.
 * cert_pem and chain_pem only when pem is set: about 2 KiB a connection
 * that only XFCC's Cert and Chain fields read.
 */
void dp_tls_peer_identity(SSL *ssl, struct dp_peer_identity *id, struct dp_arena *arena, int pem);

/** The part of dp_tls_peer_identity that reads the certificate itself:
 *  fills subject, issuer, serial, fingerprint, the URI/DNS/email SANs and
 *  cert_pem from x (strings in arena) and leaves the other fields alone.
 *  Exported for tests/fuzz/fuzz_xfcc.c. */
void dp_tls_cert_identity(X509 *x, struct dp_peer_identity *id, struct dp_arena *arena);

/** A short reason for a failed handshake on ssl, using the verification
 *  result when there is one ("certificate verify failed: unable to get local
 *  issuer certificate", "no client certificate", "SAN not allowed"). */
const char *dp_tls_failure_reason(SSL *ssl, unsigned long err);

enum dp_tls_fail {
    DP_TLS_FAIL_OTHER = 0,   /* protocol error, no shared cipher, ... */
    DP_TLS_FAIL_NO_CERT,     /* a client certificate was required and none sent */
    DP_TLS_FAIL_VERIFY,      /* the peer's chain did not verify */
    DP_TLS_FAIL_SAN,         /* it verified but its SAN is not allowed */
};

/** The subject of the certificate the peer presented, kept when its
 *  verification failed (for the log line of the failed handshake), or
 *  NULL. */
const char *dp_tls_peer_subject_seen(SSL *ssl);

/** Why a handshake on ssl failed, for the ssl.fail_* stats. */
enum dp_tls_fail dp_tls_failure_kind(SSL *ssl, unsigned long err);

/** The negotiated ALPN protocol ("h2", "http/1.1") or NULL. */
const char *dp_tls_alpn(SSL *ssl, char *buf, size_t buflen);

#endif
