/*
 * Private to the two halves of the TLS layer: tls_config.c compiles Envoy's
 * TLS protos into these contexts, tls.c runs the handshakes on them (and
 * holds their references). Nothing else includes this header; the rest of
 * the data plane sees the contexts as opaque (tls.h).
 */
#ifndef LEGATE_DP_TLS_PRIV_H
#define LEGATE_DP_TLS_PRIV_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "dataplane/config.h"
#include "dataplane/tls.h"

#define MAX_CERTS 16

/* A SAN matcher from match_typed_subject_alt_names. */
struct san_matcher {
    int type; /* GEN_DNS, GEN_URI, GEN_EMAIL, GEN_IPADD, or -1 for any */
    struct dp_string_matcher m;
};

struct verify_cfg {
    uint64_t id;              /* unique per validation context built (verified-chain cache) */
    time_t crl_until;         /* the earliest nextUpdate of its CRLs, or 0 */
    X509_STORE *store;        /* trusted CAs and CRLs; NULL: the chain is not verified, pins decide */
    struct san_matcher *sans;
    size_t n_sans;
    int accept_untrusted;
    int allow_expired;
    int depth;
    unsigned char (*spki)[32]; /* verify_certificate_spki (sha256 of SPKI) */
    size_t n_spki;
    unsigned char (*hash)[32]; /* verify_certificate_hash (sha256 of DER) */
    size_t n_hash;
};

struct cert_ctx {
    SSL_CTX *ctx;
    char **names; /* DNS SANs (or CN) of its certificate, lowercase */
    size_t n_names;
};

struct dp_tls_server {
    int refs;
    struct cert_ctx certs[MAX_CERTS];
    size_t n_certs;
    struct verify_cfg v;
    int require_client_cert;
    int verify_mode;
    int min_version;
    int max_version;
    unsigned char *alpn; /* wire format */
    size_t alpn_len;
};

struct dp_tls_client {
    int refs;
    SSL_CTX *ctx;
    char *sni;
    struct verify_cfg v;
    pthread_mutex_t sess_lock;
    SSL_SESSION *session; /* last session, for resumption */
};


/* ---- tls.c: the handshake's OpenSSL callbacks, installed by tls_config.c -- */

/** SSL_CTX_set_verify: records the first failure and its reason in the
 *  SSL's state, checks the leaf's SANs and pins (accept_untrusted lets the
 *  handshake through and leaves the verdict to the filters). */
int dp_tls_verify_cb(int preverify, X509_STORE_CTX *xs);
/** SSL_CTX_set_cert_verify_callback: a chain verified recently under the
 *  same validation context is taken as verified, else X509_verify_cert. */
int dp_tls_cert_verify_cb(X509_STORE_CTX *xs, void *arg);
/** SSL_CTX_set_client_hello_cb: asks the listener (dp_tls_select_cb) which
 *  server context the SNI and ALPN select, and moves the SSL to it. */
int dp_tls_client_hello_cb(SSL *ssl, int *al, void *arg);
/** SSL_CTX_set_alpn_select_cb: the first of the server context's protocols
 *  (arg: the dp_tls_server) that the client also offers. */
int dp_tls_alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg);
/** SSL_CTX_sess_set_new_cb on client contexts: keeps the last session for
 *  resumption (takes OpenSSL's reference: returns 1). */
int dp_tls_new_session_cb(SSL *ssl, SSL_SESSION *sess);

/** An ASN1_TIME as a time_t, or 0 when absent or unreadable. */
time_t dp_tls_asn1_time(const ASN1_TIME *t);

#endif
