/*
 * TLS connections on OpenSSL 3: the SSL objects made from the contexts that
 * tls_config.c compiles, and what runs per handshake.
 *
 * An SSL starts on the listener's first server context; the ClientHello
 * callback asks the listener which server context the connection's SNI/ALPN
 * selects, then moves the SSL to it (the certificate its SNI asks for, the
 * verification settings). The verify callbacks check the peer's chain
 * (verified chains are remembered per worker), SANs and pins; a client
 * context keeps its last session for resumption; after the handshake the
 * peer's identity is read for the filters and XFCC. The contexts'
 * references live here too: the last one is often dropped by an SSL.
 */
#include "tls_priv.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

/* What we remember per SSL. */
struct ssl_state {
    struct dp_tls_server *server; /* chosen (referenced) */
    struct dp_tls_client *client; /* referenced */
    dp_tls_select_cb select;
    void *select_arg;
    const struct verify_cfg *v;
    long verify_error;         /* first failure */
    const char *verify_reason;
    int san_checked;
    char *peer_subject;        /* the leaf's subject, kept when its verification failed */
};

static int ssl_idx = -1;
static EVP_MD *sha256; /* fetched once: EVP_sha256() is looked up at each use */

static void state_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    struct ssl_state *st = ptr;
    if (st == NULL)
        return;
    if (st->server)
        dp_tls_server_unref(st->server);
    if (st->client)
        dp_tls_client_unref(st->client);
    free(st->peer_subject);
    free(st);
}

static void init_once(void)
{
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
    dp_tls_builtin_ec_keys();
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    ssl_idx = SSL_get_ex_new_index(0, "legate", NULL, NULL, state_free);
}

int dp_tls_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, init_once);
    return ssl_idx >= 0 ? 0 : -1;
}

static struct ssl_state *state_of(SSL *ssl)
{
    return SSL_get_ex_data(ssl, ssl_idx);
}

static struct ssl_state *state_new(SSL *ssl)
{
    struct ssl_state *st = calloc(1, sizeof(*st));
    if (st == NULL || SSL_set_ex_data(ssl, ssl_idx, st) != 1) {
        free(st);
        return NULL;
    }
    return st;
}

/* ---- verification ------------------------------------------------------------- */

static void verify_cfg_free(struct verify_cfg *v)
{
    if (v->store)
        X509_STORE_free(v->store);
    for (size_t i = 0; i < v->n_sans; i++)
        dp_string_matcher_free(&v->sans[i].m);
    free(v->sans);
    free(v->spki);
    free(v->hash);
    memset(v, 0, sizeof(*v));
}

/* An ASN1_TIME as a time_t, or 0 when absent or unreadable. */
time_t dp_tls_asn1_time(const ASN1_TIME *t)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return timegm(&tm);
}

static const char *reason_for(long err)
{
    switch (err) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return "expired";
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return "not yet valid";
    case X509_V_ERR_CRL_HAS_EXPIRED:
    case X509_V_ERR_CRL_NOT_YET_VALID:
    case X509_V_ERR_UNABLE_TO_GET_CRL:
        return "CRL missing or out of date";
    case X509_V_ERR_PATH_LENGTH_EXCEEDED:
        return "path length exceeded";
    case X509_V_ERR_INVALID_PURPOSE:
        return "wrong key usage";
    case X509_V_ERR_PERMITTED_VIOLATION:
    case X509_V_ERR_EXCLUDED_VIOLATION:
        return "name constraints violated";
    case X509_V_ERR_CERT_REVOKED:
        return "revoked";
    case X509_V_ERR_SUBJECT_ISSUER_MISMATCH:
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_APPLICATION_VERIFICATION:
        return "SAN not allowed";
    default:
        return "untrusted chain";
    }
}

static int san_ok(const struct verify_cfg *v, X509 *x)
{
    if (v->n_sans == 0)
        return 1;
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int ok = 0;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && !ok; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        char buf[INET6_ADDRSTRLEN];
        const char *s = NULL;
        size_t n = 0;
        switch (g->type) {
        case GEN_DNS:
        case GEN_URI:
        case GEN_EMAIL:
            s = (const char *)g->d.ia5->data;
            n = (size_t)g->d.ia5->length;
            break;
        case GEN_IPADD:
            if (g->d.iPAddress->length == 4)
                inet_ntop(AF_INET, g->d.iPAddress->data, buf, sizeof(buf));
            else if (g->d.iPAddress->length == 16)
                inet_ntop(AF_INET6, g->d.iPAddress->data, buf, sizeof(buf));
            else
                continue;
            s = buf;
            n = strlen(buf);
            break;
        default:
            continue;
        }
        for (size_t j = 0; j < v->n_sans && !ok; j++) {
            if (v->sans[j].type != -1 && v->sans[j].type != g->type)
                continue;
            if (g->type == GEN_DNS && v->sans[j].m.kind == DP_MATCH_EXACT && n > 2 && s[0] == '*' &&
                s[1] == '.') {
                /* a wildcard certificate DNS SAN matches one label */
                const char *want = v->sans[j].m.value;
                const char *dot = strchr(want, '.');
                if (dot && strlen(dot) == n - 1 && strncasecmp(dot, s + 1, n - 1) == 0) {
                    ok = 1;
                    break;
                }
            }
            ok = dp_string_match(&v->sans[j].m, s, n);
        }
    }
    GENERAL_NAMES_free(gens);
    return ok;
}

static int pin_ok(const struct verify_cfg *v, X509 *x)
{
    if (v->n_spki == 0 && v->n_hash == 0)
        return 1;
    unsigned char md[32];
    unsigned int mdlen;
    if (v->n_hash && X509_digest(x, EVP_sha256(), md, &mdlen) == 1)
        for (size_t i = 0; i < v->n_hash; i++)
            if (memcmp(md, v->hash[i], 32) == 0)
                return 1;
    if (v->n_spki) {
        unsigned char *der = NULL;
        int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
        if (n > 0) {
            EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
            OPENSSL_free(der);
            for (size_t i = 0; i < v->n_spki; i++)
                if (memcmp(md, v->spki[i], 32) == 0)
                    return 1;
        }
    }
    return 0;
}

/* ---- verified chains, remembered -------------------------------------------- */

/* Verifying the peer's chain is about a fifth of a full mTLS handshake (the
 * CA's ECDSA signature on the leaf, one more per intermediate), and a peer
 * comes back with the same certificate connection after connection. So a
 * worker remembers, for at most VCACHE_TTL seconds, the chains that
 * verified: the same bytes under the same validation context verify the
 * same way until something in them expires. The key is the SHA-256 of the
 * presented certificates' DER and the context's id (a new CA, CRL or SAN
 * matcher is a new context). Only successes are kept, never past the
 * notAfter of a certificate of the chain or a CRL's nextUpdate; a failure
 * is always verified in full, to be explained. One table per thread: no
 * lock. */
#define VCACHE_SLOTS 256
#define VCACHE_TTL 60

struct vcache_slot {
    uint64_t cfg;
    time_t until;
    unsigned char key[32];
};

static _Thread_local struct vcache_slot vcache[VCACHE_SLOTS];

static int chain_key(X509 *leaf, STACK_OF(X509) *presented, unsigned char key[32])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n;
    int ok = 0;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    if (m == NULL || sha256 == NULL || EVP_DigestInit_ex(m, sha256, NULL) != 1)
        goto done;
    /* The leaf, then the rest of what the peer sent (OpenSSL's list
     * starts with the leaf too). */
    for (int i = -1; i < (presented ? sk_X509_num(presented) : 0); i++) {
        X509 *x = i < 0 ? leaf : sk_X509_value(presented, i);
        if (i >= 0 && x == leaf)
            continue;
        if (X509_digest(x, sha256, d, &n) != 1 || EVP_DigestUpdate(m, d, n) != 1)
            goto done;
    }
    ok = EVP_DigestFinal_ex(m, key, &n) == 1 && n == 32;
done:
    EVP_MD_CTX_free(m);
    return ok;
}

/* Until when a chain that just verified may be taken as verified. */
static time_t chain_until(X509_STORE_CTX *xs, const struct verify_cfg *v, time_t now)
{
    time_t until = now + VCACHE_TTL;
    if (v->crl_until && v->crl_until < until)
        until = v->crl_until;
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(xs);
    for (int i = 0; i < sk_X509_num(chain); i++) {
        time_t na = dp_tls_asn1_time(X509_get0_notAfter(sk_X509_value(chain, i)));
        if (na == 0)
            return 0;
        if (na < until)
            until = na;
    }
    return until;
}

/* OpenSSL's verification step (SSL_CTX_set_cert_verify_callback): the
 * remembered answer, or X509_verify_cert. */
int dp_tls_cert_verify_cb(X509_STORE_CTX *xs, void *arg)
{
    (void)arg;
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct ssl_state *st = ssl ? state_of(ssl) : NULL;
    const struct verify_cfg *v = st ? st->v : NULL;
    X509 *leaf = X509_STORE_CTX_get0_cert(xs);
    struct vcache_slot *slot = NULL;
    unsigned char key[32];
    time_t now = time(NULL);
    if (v && v->id && leaf && chain_key(leaf, X509_STORE_CTX_get0_untrusted(xs), key)) {
        slot = &vcache[(key[0] | (unsigned)key[1] << 8) % VCACHE_SLOTS];
        if (slot->cfg == v->id && slot->until > now && memcmp(slot->key, key, sizeof(key)) == 0)
            return 1; /* the context's error stays X509_V_OK */
    }
    int ok = X509_verify_cert(xs);
    if (ok == 1 && slot && st->verify_error == 0 && X509_STORE_CTX_get_error(xs) == X509_V_OK) {
        time_t until = chain_until(xs, v, now);
        if (until > now) {
            slot->cfg = v->id;
            slot->until = until;
            memcpy(slot->key, key, sizeof(key));
        }
    }
    return ok;
}

int dp_tls_verify_cb(int preverify, X509_STORE_CTX *xs)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct ssl_state *st = ssl ? state_of(ssl) : NULL;
    if (st == NULL || st->v == NULL)
        return preverify;
    const struct verify_cfg *v = st->v;
    int depth = X509_STORE_CTX_get_error_depth(xs);
    if (!preverify && v->store == NULL) {
        /* No trusted_ca: as in Envoy, the chain is not verified; the
         * certificate must match a pin (build_verify requires one). */
        X509_STORE_CTX_set_error(xs, X509_V_OK);
        preverify = 1;
    }
    if (!preverify) {
        long err = X509_STORE_CTX_get_error(xs);
        if (v->allow_expired && (err == X509_V_ERR_CERT_HAS_EXPIRED)) {
            X509_STORE_CTX_set_error(xs, X509_V_OK);
            preverify = 1;
        } else if (st->verify_error == 0) {
            st->verify_error = err;
            st->verify_reason = reason_for(err);
        }
    }
    if (depth == 0 && !st->san_checked) {
        st->san_checked = 1;
        X509 *leaf = X509_STORE_CTX_get_current_cert(xs);
        int san = san_ok(v, leaf), pin = san && pin_ok(v, leaf);
        if (!san || !pin) {
            if (st->verify_error == 0) {
                st->verify_error = X509_V_ERR_APPLICATION_VERIFICATION;
                st->verify_reason = san ? "certificate not pinned" : "SAN not allowed";
            }
            X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
            preverify = 0;
        }
    }
    if (!preverify && st->peer_subject == NULL) {
        /* For the log line of the failed handshake: only refused
         * certificates pay for it, and it is never key material. */
        X509 *leaf = X509_STORE_CTX_get0_cert(xs);
        char subject[256];
        if (leaf && X509_NAME_oneline(X509_get_subject_name(leaf), subject, sizeof(subject)))
            st->peer_subject = strdup(subject);
    }
    if (!preverify && v->accept_untrusted)
        return 1;
    return preverify;
}

int dp_tls_alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    struct ssl_state *st = state_of(ssl);
    struct dp_tls_server *s = st && st->server ? st->server : arg;
    if (s == NULL || s->alpn_len == 0)
        return SSL_TLSEXT_ERR_NOACK;
    /* Server preference: the first of ours the client also offers. */
    if (SSL_select_next_proto((unsigned char **)out, outlen, s->alpn, (unsigned int)s->alpn_len, in,
                              inlen) == OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_NOACK;
}

/* Parses the ClientHello's server_name extension. */
static int hello_sni(SSL *ssl, char *out, size_t outlen)
{
    const unsigned char *p;
    size_t len;
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) || len < 5)
        return 0;
    size_t list = ((size_t)p[0] << 8) | p[1];
    if (list + 2 != len || p[2] != TLSEXT_NAMETYPE_host_name)
        return 0;
    size_t n = ((size_t)p[3] << 8) | p[4];
    if (n + 5 > len || n == 0 || n >= outlen)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[5 + i];
        if (c == 0)
            return 0;
        out[i] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
    out[n] = '\0';
    return 1;
}

static size_t hello_alpn(SSL *ssl, char store[][32], const char **list, size_t max)
{
    const unsigned char *p;
    size_t len, n = 0;
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &p, &len) ||
        len < 2)
        return 0;
    size_t total = ((size_t)p[0] << 8) | p[1];
    if (total + 2 != len)
        return 0;
    size_t off = 2;
    while (off < len && n < max) {
        size_t l = p[off++];
        if (l == 0 || off + l > len)
            break;
        if (l < 32) {
            memcpy(store[n], p + off, l);
            store[n][l] = '\0';
            list[n] = store[n];
            n++;
        }
        off += l;
    }
    return n;
}

static int name_matches(const char *pattern, const char *host)
{
    if (pattern[0] == '*' && pattern[1] == '.') {
        const char *dot = strchr(host, '.');
        return dot && strcasecmp(dot, pattern + 1) == 0;
    }
    return strcasecmp(pattern, host) == 0;
}

static void apply_server(SSL *ssl, struct dp_tls_server *s, const char *sni)
{
    /* The certificate whose names match the SNI: exact first, then wildcard. */
    size_t pick = 0;
    int found = 0;
    for (int pass = 0; pass < 2 && !found && sni; pass++)
        for (size_t i = 0; i < s->n_certs && !found; i++)
            for (size_t j = 0; j < s->certs[i].n_names; j++) {
                const char *nm = s->certs[i].names[j];
                int wild = nm[0] == '*';
                if (wild != pass)
                    continue;
                if (name_matches(nm, sni)) {
                    pick = i;
                    found = 1;
                    break;
                }
            }
    if (SSL_get_SSL_CTX(ssl) != s->certs[pick].ctx)
        SSL_set_SSL_CTX(ssl, s->certs[pick].ctx);
    /* SSL_set_SSL_CTX moves the certificate only: the rest is per SSL. */
    SSL_set_verify(ssl, s->verify_mode, s->verify_mode ? dp_tls_verify_cb : NULL);
    SSL_set_verify_depth(ssl, s->v.depth ? s->v.depth : 100);
    if (s->v.store)
        SSL_set1_verify_cert_store(ssl, s->v.store);
    SSL_set_min_proto_version(ssl, s->min_version);
    SSL_set_max_proto_version(ssl, s->max_version);
    SSL_set_options(ssl, SSL_CTX_get_options(s->certs[pick].ctx));
}

int dp_tls_client_hello_cb(SSL *ssl, int *al, void *arg)
{
    struct ssl_state *st = state_of(ssl);
    char sni[256];
    char store[8][32];
    const char *alpn[8];
    if (st == NULL) {
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    if (st->server) /* a second ClientHello (HelloRetryRequest) keeps the choice */
        return SSL_CLIENT_HELLO_SUCCESS;
    int has_sni = hello_sni(ssl, sni, sizeof(sni));
    size_t n_alpn = hello_alpn(ssl, store, alpn, 8);
    struct dp_tls_server *s = st->select ? st->select(st->select_arg, has_sni ? sni : NULL, alpn, n_alpn)
                                         : NULL;
    if (s == NULL) {
        *al = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_CLIENT_HELLO_ERROR;
    }
    dp_tls_server_ref(s);
    st->server = s;
    st->v = s->verify_mode ? &s->v : NULL;
    apply_server(ssl, s, has_sni ? sni : NULL);
    return SSL_CLIENT_HELLO_SUCCESS;
}

static void server_free(struct dp_tls_server *s)
{
    for (size_t i = 0; i < s->n_certs; i++) {
        SSL_CTX_free(s->certs[i].ctx);
        for (size_t j = 0; j < s->certs[i].n_names; j++)
            free(s->certs[i].names[j]);
        free(s->certs[i].names);
    }
    verify_cfg_free(&s->v);
    free(s->alpn);
    free(s);
}

void dp_tls_server_ref(struct dp_tls_server *s)
{
    __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
}

void dp_tls_server_unref(struct dp_tls_server *s)
{
    if (s && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0)
        server_free(s);
}

SSL *dp_tls_server_new_ssl(struct dp_tls_server *initial, dp_tls_select_cb select, void *arg)
{
    if (initial == NULL || initial->n_certs == 0)
        return NULL;
    SSL *ssl = SSL_new(initial->certs[0].ctx);
    if (ssl == NULL)
        return NULL;
    struct ssl_state *st = state_new(ssl);
    if (st == NULL) {
        SSL_free(ssl);
        return NULL;
    }
    st->select = select;
    st->select_arg = arg;
    return ssl;
}

struct dp_tls_server *dp_tls_ssl_server(SSL *ssl)
{
    struct ssl_state *st = state_of(ssl);
    return st ? st->server : NULL;
}

/* ---- client -------------------------------------------------------------------------- */

int dp_tls_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct ssl_state *st = state_of(ssl);
    if (st == NULL || st->client == NULL)
        return 0;
    struct dp_tls_client *c = st->client;
    pthread_mutex_lock(&c->sess_lock);
    if (c->session)
        SSL_SESSION_free(c->session);
    c->session = sess; /* we keep the reference OpenSSL gives us */
    pthread_mutex_unlock(&c->sess_lock);
    return 1;
}

static void client_free(struct dp_tls_client *c)
{
    SSL_CTX_free(c->ctx);
    free(c->sni);
    verify_cfg_free(&c->v);
    if (c->session)
        SSL_SESSION_free(c->session);
    pthread_mutex_destroy(&c->sess_lock);
    free(c);
}

void dp_tls_client_ref(struct dp_tls_client *c)
{
    __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

void dp_tls_client_unref(struct dp_tls_client *c)
{
    if (c && __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
        client_free(c);
}

SSL *dp_tls_client_new_ssl(struct dp_tls_client *c)
{
    SSL *ssl = SSL_new(c->ctx);
    if (ssl == NULL)
        return NULL;
    struct ssl_state *st = state_new(ssl);
    if (st == NULL) {
        SSL_free(ssl);
        return NULL;
    }
    dp_tls_client_ref(c);
    st->client = c;
    st->v = c->v.id ? &c->v : NULL;
    if (c->sni)
        SSL_set_tlsext_host_name(ssl, c->sni);
    pthread_mutex_lock(&c->sess_lock);
    if (c->session)
        SSL_set_session(ssl, c->session);
    pthread_mutex_unlock(&c->sess_lock);
    return ssl;
}

/* ---- after the handshake ---------------------------------------------------------------- */

static const char *arena_bio(struct dp_arena *a, BIO *b)
{
    char *p;
    long n = BIO_get_mem_data(b, &p);
    return n >= 0 ? dp_arena_strndup(a, p, (size_t)n) : NULL;
}

static const char *name_str(X509_NAME *nm, struct dp_arena *a)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL)
        return NULL;
    X509_NAME_print_ex(b, nm, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    const char *s = arena_bio(a, b);
    BIO_free(b);
    return s;
}

static void add_san(const char ***v, size_t *n, const char *s, size_t len, struct dp_arena *a)
{
    /* A NUL inside the name would cut the C string short and make it
     * another name ("spiffe://a/client\0.evil" read as "spiffe://a/client"),
     * which matchers and XFCC would then trust: such a SAN is left out. */
    if (memchr(s, '\0', len) != NULL)
        return;
    const char **nv = dp_arena_alloc(a, (*n + 1) * sizeof(char *));
    if (nv == NULL)
        return;
    if (*n)
        memcpy(nv, *v, *n * sizeof(char *));
    nv[*n] = dp_arena_strndup(a, s, len);
    if (nv[*n] == NULL)
        return;
    *v = nv;
    (*n)++;
}

static void cert_identity(X509 *x, struct dp_peer_identity *id, struct dp_arena *a, int pem)
{
    id->subject = name_str(X509_get_subject_name(x), a);
    id->issuer = name_str(X509_get_issuer_name(x), a);
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    if (bn) {
        char *hex = BN_bn2hex(bn);
        if (hex) {
            id->serial = dp_arena_strndup(a, hex, strlen(hex));
            OPENSSL_free(hex);
        }
        BN_free(bn);
    }
    unsigned char md[32];
    unsigned int mdlen;
    if (X509_digest(x, sha256 ? sha256 : EVP_sha256(), md, &mdlen) == 1) {
        char *fp = dp_arena_alloc(a, 65);
        if (fp) {
            for (unsigned i = 0; i < 32; i++)
                snprintf(fp + 2 * i, 3, "%02x", md[i]);
            id->fingerprint = fp;
        }
    }
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        const ASN1_IA5STRING *s = g->d.ia5;
        if (g->type == GEN_URI)
            add_san((const char ***)&id->uri_sans, &id->n_uri_sans, (const char *)s->data, (size_t)s->length, a);
        else if (g->type == GEN_DNS)
            add_san((const char ***)&id->dns_sans, &id->n_dns_sans, (const char *)s->data, (size_t)s->length, a);
        else if (g->type == GEN_EMAIL)
            add_san((const char ***)&id->email_sans, &id->n_email_sans, (const char *)s->data, (size_t)s->length, a);
    }
    GENERAL_NAMES_free(gens);
    BIO *b = pem ? BIO_new(BIO_s_mem()) : NULL;
    if (b) {
        PEM_write_bio_X509(b, x);
        id->cert_pem = arena_bio(a, b);
        BIO_free(b);
    }
}

void dp_tls_cert_identity(X509 *x, struct dp_peer_identity *id, struct dp_arena *a)
{
    cert_identity(x, id, a, 1);
}

void dp_tls_peer_identity(SSL *ssl, struct dp_peer_identity *id, struct dp_arena *a, int pem)
{
    memset(id, 0, sizeof(*id));
    id->tls = 1;
    id->tls_version = SSL_get_version(ssl);
    struct ssl_state *st = state_of(ssl);
    X509 *x = SSL_get1_peer_certificate(ssl);
    if (x == NULL) {
        id->verify_reason = "no certificate";
        return;
    }
    id->presented = 1;
    long vr = SSL_get_verify_result(ssl);
    id->verify_error = st && st->verify_error ? st->verify_error : vr;
    id->verified = id->verify_error == X509_V_OK && (st == NULL || st->v != NULL);
    if (!id->verified)
        id->verify_reason = st && st->verify_reason ? st->verify_reason
                            : st && st->v == NULL  ? "no validation context"
                                                   : reason_for(id->verify_error);
    cert_identity(x, id, a, pem);
    STACK_OF(X509) *chain = pem ? SSL_get_peer_cert_chain(ssl) : NULL;
    BIO *b;
    if (chain && (b = BIO_new(BIO_s_mem())) != NULL) {
        /* A server's peer chain excludes the leaf; the XFCC chain includes it. */
        if (SSL_is_server(ssl))
            PEM_write_bio_X509(b, x);
        for (int i = 0; i < sk_X509_num(chain); i++)
            PEM_write_bio_X509(b, sk_X509_value(chain, i));
        id->chain_pem = arena_bio(a, b);
        BIO_free(b);
    }
    X509_free(x);
}

const char *dp_tls_failure_reason(SSL *ssl, unsigned long err)
{
    static _Thread_local char buf[256];
    struct ssl_state *st = ssl ? state_of(ssl) : NULL;
    if (st && st->verify_error) {
        snprintf(buf, sizeof(buf), "certificate verify failed: %s (%s)",
                 X509_verify_cert_error_string(st->verify_error), st->verify_reason);
        return buf;
    }
    if (err == 0)
        return "connection closed during the handshake";
    if (ERR_GET_REASON(err) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
        return "no client certificate";
    ERR_error_string_n(err, buf, sizeof(buf));
    const char *r = strrchr(buf, ':');
    return r && r[1] ? r + 1 : buf;
}

const char *dp_tls_peer_subject_seen(SSL *ssl)
{
    struct ssl_state *st = ssl ? state_of(ssl) : NULL;
    return st ? st->peer_subject : NULL;
}

enum dp_tls_fail dp_tls_failure_kind(SSL *ssl, unsigned long err)
{
    struct ssl_state *st = ssl ? state_of(ssl) : NULL;
    if (st && st->verify_error == X509_V_ERR_APPLICATION_VERIFICATION)
        return DP_TLS_FAIL_SAN;
    if (st && st->verify_error)
        return DP_TLS_FAIL_VERIFY;
    if (err && ERR_GET_REASON(err) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
        return DP_TLS_FAIL_NO_CERT;
    return DP_TLS_FAIL_OTHER;
}

const char *dp_tls_alpn(SSL *ssl, char *buf, size_t buflen)
{
    const unsigned char *p;
    unsigned int n;
    SSL_get0_alpn_selected(ssl, &p, &n);
    if (n == 0 || n >= buflen)
        return NULL;
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}
