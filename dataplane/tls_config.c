/*
 * TLS contexts compiled from Envoy's TLS protos, on OpenSSL 3: a
 * DownstreamTlsContext or UpstreamTlsContext and the SDS secrets it names
 * become a dp_tls_server (one SSL_CTX per distinct certificate name set, so
 * a handshake can be given the certificate its SNI asks for) or a
 * dp_tls_client: certificates and keys, validation contexts (trusted CAs,
 * CRLs, SAN matchers, pins; the combined SDS + default one), TLS parameters
 * (versions, cipher suites, curves, signature algorithms), ALPN, session
 * resumption and ticket keys. Every rejection names the field. The
 * handshakes that run on these contexts are in tls.c.
 */
#include "tls_priv.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "dataplane/http.h"
#include "dataplane/matcher.h"
#include "xds/datasource.h"
#include "xds/cfgerr.h"

static const char *ossl_reason(void)
{
    static _Thread_local char buf[256];
    unsigned long e = ERR_peek_last_error();
    if (e == 0)
        return "unknown OpenSSL error";
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    /* "error:0A00018F:SSL routines::ee key too small" -> the reason part */
    const char *r = strrchr(buf, ':');
    return r && r[1] ? r + 1 : buf;
}

/* ---- reading PEM ------------------------------------------------------------ */

static int read_ds(const Envoy__Config__Core__V3__DataSource *ds, char **out, size_t *len,
                   const char *path, struct xds_cfgerr *e)
{
    char msg[300];
    if (xds_datasource_read(ds, out, len, msg, sizeof(msg)) < 0)
        return xds_cfg_fail(e, "%s.%s", path, msg);
    return 0;
}

static STACK_OF(X509) *pem_certs(const char *pem, size_t len)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x;
    if (b == NULL || sk == NULL) {
        BIO_free(b);
        sk_X509_free(sk);
        return NULL;
    }
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
        sk_X509_push(sk, x);
    ERR_clear_error(); /* the end of the input reads as an error */
    BIO_free(b);
    if (sk_X509_num(sk) == 0) {
        sk_X509_free(sk);
        return NULL;
    }
    return sk;
}

/* The certificate's DNS SANs, or its CN when it has none. */
static size_t cert_names(X509 *x, char ***out)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    size_t n = 0;
    char **v = NULL;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_DNS)
            continue;
        char **nv = realloc(v, (n + 1) * sizeof(char *));
        if (nv == NULL)
            break;
        v = nv;
        v[n] = strndup((const char *)g->d.dNSName->data, (size_t)g->d.dNSName->length);
        for (char *p = v[n]; p && *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p + 32);
        if (v[n])
            n++;
    }
    GENERAL_NAMES_free(gens);
    if (n == 0) {
        char cn[256];
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn)) > 0) {
            v = malloc(sizeof(char *));
            if (v && (v[0] = strdup(cn)) != NULL)
                n = 1;
        }
    }
    *out = v;
    return n;
}

static int key_password_cb(char *buf, int size, int rwflag, void *u)
{
    const char *pw = u;
    if (pw == NULL)
        return 0;
    int n = (int)strlen(pw);
    if (n > size)
        n = size;
    memcpy(buf, pw, (size_t)n);
    return n;
}

/* Loads one TlsCertificate into ctx. names gets the certificate's names. */
static int load_certificate(SSL_CTX *ctx, const Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate *tc,
                            const char *path, char ***names, size_t *n_names, struct xds_cfgerr *e)
{
    char *chain = NULL, *key = NULL, *pw = NULL;
    size_t chain_len, key_len, pw_len;
    int rc = -1;
    char sub[300];
    STACK_OF(X509) *certs = NULL;
    EVP_PKEY *pkey = NULL;

    if (tc->pkcs12)
        return xds_cfg_fail(e, "%s.pkcs12: not supported (use certificate_chain and private_key)", path);
    if (tc->private_key_provider)
        return xds_cfg_fail(e, "%s.private_key_provider: not supported", path);
    if (tc->watched_directory)
        return xds_cfg_fail(e, "%s.watched_directory: not supported (rotate through SDS)", path);
    if (tc->ocsp_staple)
        return xds_cfg_fail(e, "%s.ocsp_staple: not supported", path);
    if (tc->certificate_chain == NULL)
        return xds_cfg_fail(e, "%s.certificate_chain: required field is missing", path);
    if (tc->private_key == NULL)
        return xds_cfg_fail(e, "%s.private_key: required field is missing", path);
    snprintf(sub, sizeof(sub), "%s.certificate_chain", path);
    if (read_ds(tc->certificate_chain, &chain, &chain_len, sub, e) < 0)
        goto out;
    snprintf(sub, sizeof(sub), "%s.private_key", path);
    if (read_ds(tc->private_key, &key, &key_len, sub, e) < 0)
        goto out;
    if (tc->password) {
        snprintf(sub, sizeof(sub), "%s.password", path);
        if (read_ds(tc->password, &pw, &pw_len, sub, e) < 0)
            goto out;
    }
    certs = pem_certs(chain, chain_len);
    if (certs == NULL) {
        xds_cfg_fail(e, "%s.certificate_chain: no PEM certificate found", path);
        goto out;
    }
    BIO *kb = BIO_new_mem_buf(key, (int)key_len);
    pkey = kb ? PEM_read_bio_PrivateKey(kb, NULL, key_password_cb, pw) : NULL;
    BIO_free(kb);
    if (pkey == NULL) {
        ERR_clear_error();
        xds_cfg_fail(e, "%s.private_key: not a PEM private key%s", path, pw ? " (or a wrong password)" : "");
        goto out;
    }
    X509 *leaf = sk_X509_value(certs, 0);
    if (X509_check_private_key(leaf, pkey) != 1) {
        ERR_clear_error();
        xds_cfg_fail(e, "%s.private_key: does not match the first certificate of certificate_chain", path);
        goto out;
    }
    STACK_OF(X509) *extra = sk_X509_new_null();
    for (int i = 1; extra && i < sk_X509_num(certs); i++)
        sk_X509_push(extra, sk_X509_value(certs, i));
    /* override=1: several key types (RSA + ECDSA) may share one context. */
    if (SSL_CTX_use_cert_and_key(ctx, leaf, pkey, extra, 1) != 1) {
        sk_X509_free(extra);
        xds_cfg_fail(e, "%s: %s", path, ossl_reason());
        goto out;
    }
    sk_X509_free(extra);
    if (names)
        *n_names = cert_names(leaf, names);
    rc = 0;
out:
    if (key) {
        OPENSSL_cleanse(key, key_len);
        free(key);
    }
    if (pw) {
        OPENSSL_cleanse(pw, pw_len);
        free(pw);
    }
    free(chain);
    EVP_PKEY_free(pkey);
    sk_X509_pop_free(certs, X509_free);
    return rc;
}

/* ---- verification ------------------------------------------------------------- */

static int build_verify(struct verify_cfg *v,
                        const Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *vc,
                        const char *path, struct xds_cfgerr *e)
{
    char sub[300];
    char *pem = NULL;
    size_t len;

    if (vc->ca_certificate_provider_instance)
        return xds_cfg_fail(e, "%s.ca_certificate_provider_instance: not supported", path);
    if (vc->watched_directory)
        return xds_cfg_fail(e, "%s.watched_directory: not supported (rotate through SDS)", path);
    if (vc->require_signed_certificate_timestamp && vc->require_signed_certificate_timestamp->value)
        return xds_cfg_fail(e, "%s.require_signed_certificate_timestamp: not supported", path);
    if (vc->custom_validator_config)
        return xds_cfg_fail(e, "%s.custom_validator_config: not supported", path);
    v->allow_expired = vc->allow_expired_certificate;
    switch (vc->trust_chain_verification) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__TRUST_CHAIN_VERIFICATION__VERIFY_TRUST_CHAIN:
        break;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__TRUST_CHAIN_VERIFICATION__ACCEPT_UNTRUSTED:
        v->accept_untrusted = 1;
        break;
    default:
        return xds_cfg_fail(e, "%s.trust_chain_verification: unknown value", path);
    }
    v->depth = vc->max_verify_depth ? (int)vc->max_verify_depth->value : 100;

    if (vc->trusted_ca) {
        snprintf(sub, sizeof(sub), "%s.trusted_ca", path);
        if (read_ds(vc->trusted_ca, &pem, &len, sub, e) < 0)
            return -1;
        STACK_OF(X509) *cas = pem_certs(pem, len);
        free(pem);
        pem = NULL;
        if (cas == NULL)
            return xds_cfg_fail(e, "%s.trusted_ca: no PEM certificate found", path);
        v->store = X509_STORE_new();
        for (int i = 0; v->store && i < sk_X509_num(cas); i++)
            X509_STORE_add_cert(v->store, sk_X509_value(cas, i));
        sk_X509_pop_free(cas, X509_free);
        if (v->store == NULL)
            return xds_cfg_fail(e, "out of memory");
    }
    if (vc->crl) {
        if (v->store == NULL)
            return xds_cfg_fail(e, "%s.crl: needs trusted_ca", path);
        snprintf(sub, sizeof(sub), "%s.crl", path);
        if (read_ds(vc->crl, &pem, &len, sub, e) < 0)
            return -1;
        BIO *b = BIO_new_mem_buf(pem, (int)len);
        X509_CRL *crl;
        int n = 0;
        while (b && (crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL)) != NULL) {
            time_t next = dp_tls_asn1_time(X509_CRL_get0_nextUpdate(crl));
            if (next && (v->crl_until == 0 || next < v->crl_until))
                v->crl_until = next;
            X509_STORE_add_crl(v->store, crl);
            X509_CRL_free(crl);
            n++;
        }
        ERR_clear_error();
        BIO_free(b);
        free(pem);
        if (n == 0)
            return xds_cfg_fail(e, "%s.crl: no PEM CRL found", path);
        X509_STORE_set_flags(v->store, X509_V_FLAG_CRL_CHECK |
                                           (vc->only_verify_leaf_cert_crl ? 0 : X509_V_FLAG_CRL_CHECK_ALL));
    }
    size_t n_sans = vc->n_match_typed_subject_alt_names + vc->n_match_subject_alt_names;
    if (n_sans) {
        v->sans = calloc(n_sans, sizeof(*v->sans));
        if (v->sans == NULL)
            return xds_cfg_fail(e, "out of memory");
    }
    for (size_t i = 0; i < vc->n_match_typed_subject_alt_names; i++) {
        const Envoy__Extensions__TransportSockets__Tls__V3__SubjectAltNameMatcher *sm =
            vc->match_typed_subject_alt_names[i];
        struct san_matcher *m = &v->sans[v->n_sans];
        switch (sm->san_type) {
        case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__DNS:
            m->type = GEN_DNS;
            break;
        case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI:
            m->type = GEN_URI;
            break;
        case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__EMAIL:
            m->type = GEN_EMAIL;
            break;
        case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__IP_ADDRESS:
            m->type = GEN_IPADD;
            break;
        default:
            return xds_cfg_fail(e, "%s.match_typed_subject_alt_names[%zu].san_type: DNS, URI, EMAIL or "
                           "IP_ADDRESS is required",
                        path, i);
        }
        snprintf(sub, sizeof(sub), "%s.match_typed_subject_alt_names[%zu].matcher", path, i);
        if (dp_string_matcher_build(&m->m, sm->matcher, sub, e->err, e->errlen) < 0)
            return -1;
        v->n_sans++;
    }
    for (size_t i = 0; i < vc->n_match_subject_alt_names; i++) {
        struct san_matcher *m = &v->sans[v->n_sans];
        m->type = -1;
        snprintf(sub, sizeof(sub), "%s.match_subject_alt_names[%zu]", path, i);
        if (dp_string_matcher_build(&m->m, vc->match_subject_alt_names[i], sub, e->err, e->errlen) < 0)
            return -1;
        v->n_sans++;
    }
    if (vc->n_verify_certificate_spki) {
        v->spki = calloc(vc->n_verify_certificate_spki, 32);
        if (v->spki == NULL)
            return xds_cfg_fail(e, "out of memory");
        for (size_t i = 0; i < vc->n_verify_certificate_spki; i++) {
            /* 32 bytes are 44 base64 characters, the last one '='
             * (and the length bounds what EVP_DecodeBlock writes). */
            const char *b64 = vc->verify_certificate_spki[i];
            unsigned char buf[48];
            int n = strlen(b64) == 44 && b64[43] == '=' && b64[42] != '='
                        ? EVP_DecodeBlock(buf, (const unsigned char *)b64, 44)
                        : -1;
            if (n != 33)
                return xds_cfg_fail(e, "%s.verify_certificate_spki[%zu]: expected a base64 SHA-256 hash", path, i);
            memcpy(v->spki[i], buf, 32);
            v->n_spki++;
        }
    }
    if (vc->n_verify_certificate_hash) {
        v->hash = calloc(vc->n_verify_certificate_hash, 32);
        if (v->hash == NULL)
            return xds_cfg_fail(e, "out of memory");
        for (size_t i = 0; i < vc->n_verify_certificate_hash; i++) {
            const char *h = vc->verify_certificate_hash[i];
            size_t k = 0;
            for (const char *p = h; *p; p++) {
                if (*p == ':')
                    continue;
                int d = dp_hex_digit((unsigned char)*p);
                if (d < 0 || k == 64) {
                    k = 0;
                    break;
                }
                if (k % 2 == 0)
                    v->hash[i][k / 2] = (unsigned char)(d << 4);
                else
                    v->hash[i][k / 2] |= (unsigned char)d;
                k++;
            }
            if (k != 64)
                return xds_cfg_fail(e, "%s.verify_certificate_hash[%zu]: expected a hex SHA-256 hash", path, i);
            v->n_hash++;
        }
    }
    static uint64_t next_id;
    v->id = __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED);
    if (v->store == NULL && !v->accept_untrusted && v->n_spki == 0 && v->n_hash == 0)
        return xds_cfg_fail(e, "%s.trusted_ca: required unless verify_certificate_spki or verify_certificate_hash pins the "
                       "certificate",
                    path);
    return 0;
}

/* ---- contexts -------------------------------------------------------------------- */

static int map_version(int v, int dflt)
{
    switch (v) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_0:
        return TLS1_VERSION;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_1:
        return TLS1_1_VERSION;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_2:
        return TLS1_2_VERSION;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_3:
        return TLS1_3_VERSION;
    default:
        return dflt;
    }
}

static int apply_params(SSL_CTX *ctx, const Envoy__Extensions__TransportSockets__Tls__V3__TlsParameters *p,
                        int *minv, int *maxv, const char *path, struct xds_cfgerr *e)
{
    *minv = TLS1_2_VERSION;
    *maxv = TLS1_3_VERSION;
    if (p) {
        *minv = map_version(p->tls_minimum_protocol_version, TLS1_2_VERSION);
        *maxv = map_version(p->tls_maximum_protocol_version, TLS1_3_VERSION);
        if (*minv > *maxv)
            return xds_cfg_fail(e, "%s.tls_params: tls_minimum_protocol_version is above tls_maximum_protocol_version",
                        path);
    }
    SSL_CTX_set_min_proto_version(ctx, *minv);
    SSL_CTX_set_max_proto_version(ctx, *maxv);
    if (p && p->n_cipher_suites) {
        char tls12[2048] = "", tls13[1024] = "";
        for (size_t i = 0; i < p->n_cipher_suites; i++) {
            const char *c = p->cipher_suites[i];
            char *dst = strncmp(c, "TLS_", 4) == 0 ? tls13 : tls12;
            size_t cap = dst == tls13 ? sizeof(tls13) : sizeof(tls12);
            /* Envoy allows "[A|B]" equal-preference groups: take them as a list. */
            char one[256];
            snprintf(one, sizeof(one), "%s", c);
            for (char *q = one; *q; q++)
                if (*q == '[' || *q == ']')
                    *q = ' ';
                else if (*q == '|')
                    *q = ':';
            if (dst[0])
                strncat(dst, ":", cap - strlen(dst) - 1);
            strncat(dst, one, cap - strlen(dst) - 1);
            SSL_CTX *probe = SSL_CTX_new(TLS_method());
            int ok = probe && (dst == tls13 ? SSL_CTX_set_ciphersuites(probe, one)
                                            : SSL_CTX_set_cipher_list(probe, one));
            SSL_CTX_free(probe);
            if (!ok) {
                ERR_clear_error();
                return xds_cfg_fail(e, "%s.tls_params.cipher_suites[%zu]: unknown cipher suite \"%s\"", path, i, c);
            }
        }
        if (tls12[0] && SSL_CTX_set_cipher_list(ctx, tls12) != 1)
            return xds_cfg_fail(e, "%s.tls_params.cipher_suites: %s", path, ossl_reason());
        if (tls13[0] && SSL_CTX_set_ciphersuites(ctx, tls13) != 1)
            return xds_cfg_fail(e, "%s.tls_params.cipher_suites: %s", path, ossl_reason());
    }
    if (p && p->n_ecdh_curves) {
        char list[512] = "";
        for (size_t i = 0; i < p->n_ecdh_curves; i++) {
            if (list[0])
                strncat(list, ":", sizeof(list) - strlen(list) - 1);
            strncat(list, p->ecdh_curves[i], sizeof(list) - strlen(list) - 1);
        }
        if (SSL_CTX_set1_groups_list(ctx, list) != 1) {
            ERR_clear_error();
            return xds_cfg_fail(e, "%s.tls_params.ecdh_curves: unknown curve in \"%s\"", path, list);
        }
    }
    if (p && p->n_signature_algorithms) {
        char list[512] = "";
        for (size_t i = 0; i < p->n_signature_algorithms; i++) {
            if (list[0])
                strncat(list, ":", sizeof(list) - strlen(list) - 1);
            strncat(list, p->signature_algorithms[i], sizeof(list) - strlen(list) - 1);
        }
        if (SSL_CTX_set1_sigalgs_list(ctx, list) != 1) {
            ERR_clear_error();
            return xds_cfg_fail(e, "%s.tls_params.signature_algorithms: unknown algorithm in \"%s\"", path, list);
        }
    }
    return 0;
}

/* Sessions a listener's context keeps for resumption (each holds the
 * client's certificate): about 4 KiB each. */
#define SESSION_CACHE_SIZE 4096

static SSL_CTX *new_ctx(int server)
{
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 (server ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0));
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Envoy's (BoringSSL's) TLS 1.3 order, AES-128-GCM first, where
     * OpenSSL puts AES-256-GCM first: cheaper records and a SHA-256 key
     * schedule. tls_params.cipher_suites replaces it. */
    SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
    return ctx;
}

static const Envoy__Extensions__TransportSockets__Tls__V3__Secret *
lookup_secret(const struct dp_secret_lookup *secrets, const char *name, const char *path, struct xds_cfgerr *e)
{
    const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s =
        secrets && secrets->fn ? secrets->fn(secrets->ud, name) : NULL;
    if (s == NULL)
        xds_cfg_fail(e, "%s: secret \"%s\" not found", path, name);
    return s;
}

/* Gathers the TlsCertificates of a CommonTlsContext (inline and SDS). */
static size_t collect_certs(const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *c,
                            const struct dp_secret_lookup *secrets,
                            const Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate **out,
                            char paths[][96], const char *prefix, struct xds_cfgerr *e, int *err)
{
    size_t n = 0;
    *err = 0;
    if (c->tls_certificate_provider_instance) {
        *err = xds_cfg_fail(e, "%scommon_tls_context.tls_certificate_provider_instance: not supported", prefix);
        return 0;
    }
    if (c->n_tls_certificates + c->n_tls_certificate_sds_secret_configs > MAX_CERTS) {
        *err = xds_cfg_fail(e, "%scommon_tls_context: at most %d certificates (tls_certificates and "
                       "tls_certificate_sds_secret_configs together), not %zu",
                    prefix, MAX_CERTS, c->n_tls_certificates + c->n_tls_certificate_sds_secret_configs);
        return 0;
    }
    for (size_t i = 0; i < c->n_tls_certificates && n < MAX_CERTS; i++) {
        snprintf(paths[n], 96, "%scommon_tls_context.tls_certificates[%zu]", prefix, i);
        out[n++] = c->tls_certificates[i];
    }
    for (size_t i = 0; i < c->n_tls_certificate_sds_secret_configs && n < MAX_CERTS; i++) {
        char p[128];
        const char *name = c->tls_certificate_sds_secret_configs[i]->name;
        snprintf(p, sizeof(p), "%scommon_tls_context.tls_certificate_sds_secret_configs[%zu]", prefix, i);
        const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s = lookup_secret(secrets, name, p, e);
        if (s == NULL) {
            *err = -1;
            return 0;
        }
        if (s->type_case != ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE) {
            *err = xds_cfg_fail(e, "%s: secret \"%s\" is not a tls_certificate", p, name);
            return 0;
        }
        snprintf(paths[n], 96, "secret \"%s\".tls_certificate", name);
        out[n++] = s->tls_certificate;
    }
    return n;
}

/* Envoy's combined_validation_context: the SDS validation context merged
 * over default_validation_context as protobuf's MergeFrom does -- repeated
 * fields concatenated (the SAN matchers of both apply), a field the SDS one
 * sets wins. A shallow merge into *out; the arrays it allocates are listed
 * in merge->arrays for merge_free. */
struct vc_merge {
    Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext vc;
    void *arrays[16];
    size_t n_arrays;
};

static void merge_free(struct vc_merge *m)
{
    for (size_t i = 0; i < m->n_arrays; i++)
        free(m->arrays[i]);
    m->n_arrays = 0;
}

static int merge_vc(struct vc_merge *m,
                    const Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *dflt,
                    const Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *sds)
{
    const ProtobufCMessageDescriptor *d = sds->base.descriptor;
    m->vc = *sds;
    char *out = (char *)&m->vc;
    const char *a = (const char *)dflt, *b = (const char *)sds;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t na = *(const size_t *)(a + f->quantifier_offset), nb = *(const size_t *)(b + f->quantifier_offset);
            if (na == 0)
                continue;
            size_t sz = f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING ? sizeof(void *) : 0;
            if (sz == 0 || m->n_arrays == sizeof(m->arrays) / sizeof(m->arrays[0]))
                return -1; /* no repeated scalars in this message */
            void **v = malloc((na + nb) * sizeof(void *));
            if (v == NULL)
                return -1;
            memcpy(v, *(void *const *)(a + f->offset), na * sizeof(void *));
            if (nb)
                memcpy(v + na, *(void *const *)(b + f->offset), nb * sizeof(void *));
            m->arrays[m->n_arrays++] = v;
            *(size_t *)(out + f->quantifier_offset) = na + nb;
            *(void **)(out + f->offset) = v;
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
            continue; /* none in this message */
        const char *pb = b + f->offset;
        int unset;
        switch (f->type) {
        case PROTOBUF_C_TYPE_MESSAGE:
            unset = *(void *const *)pb == NULL;
            break;
        case PROTOBUF_C_TYPE_STRING:
            unset = *(char *const *)pb == NULL || **(char *const *)pb == '\0';
            break;
        case PROTOBUF_C_TYPE_BOOL:
            unset = *(const protobuf_c_boolean *)pb == 0;
            break;
        case PROTOBUF_C_TYPE_BYTES:
            unset = ((const ProtobufCBinaryData *)pb)->len == 0;
            break;
        default:
            unset = *(const uint32_t *)pb == 0;
            break;
        }
        if (unset) {
            size_t sz = f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING ? sizeof(void *)
                        : f->type == PROTOBUF_C_TYPE_BYTES ? sizeof(ProtobufCBinaryData)
                        : f->type == PROTOBUF_C_TYPE_BOOL  ? sizeof(protobuf_c_boolean)
                        : (f->type == PROTOBUF_C_TYPE_INT64 || f->type == PROTOBUF_C_TYPE_UINT64 ||
                           f->type == PROTOBUF_C_TYPE_DOUBLE || f->type == PROTOBUF_C_TYPE_SINT64 ||
                           f->type == PROTOBUF_C_TYPE_FIXED64 || f->type == PROTOBUF_C_TYPE_SFIXED64)
                            ? 8
                            : 4;
            memcpy(out + f->offset, a + f->offset, sz);
        }
    }
    return 0;
}

static const Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *
validation_of(const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *c,
              const struct dp_secret_lookup *secrets, char *path, size_t pathlen, const char *prefix,
              struct xds_cfgerr *e, int *err, struct vc_merge *merge)
{
    const Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *dflt = NULL;
    const Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig *sds = NULL;
    *err = 0;
    switch (c->validation_context_type_case) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT:
        snprintf(path, pathlen, "%scommon_tls_context.validation_context", prefix);
        return c->validation_context;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT_SDS_SECRET_CONFIG:
        sds = c->validation_context_sds_secret_config;
        break;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT: {
        const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext__CombinedCertificateValidationContext
            *cv = c->combined_validation_context;
        if (cv->default_validation_context && cv->validation_context_sds_secret_config)
            dflt = cv->default_validation_context; /* merged below, with the SDS one */
        else if (cv->default_validation_context) {
            snprintf(path, pathlen, "%scommon_tls_context.combined_validation_context.default_validation_context", prefix);
            return cv->default_validation_context;
        }
        sds = cv->validation_context_sds_secret_config;
        break;
    }
    default:
        return NULL;
    }
    if (sds == NULL)
        return NULL;
    char p[200];
    snprintf(p, sizeof(p), "%scommon_tls_context.validation_context_sds_secret_config", prefix);
    const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s = lookup_secret(secrets, sds->name, p, e);
    if (s == NULL) {
        *err = -1;
        return NULL;
    }
    if (s->type_case != ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT) {
        *err = xds_cfg_fail(e, "%s: secret \"%s\" is not a validation_context", p, sds->name);
        return NULL;
    }
    snprintf(path, pathlen, "secret \"%s\".validation_context", sds->name);
    if (dflt) {
        if (merge_vc(merge, dflt, s->validation_context) < 0) {
            merge_free(merge);
            *err = xds_cfg_fail(e, "%scommon_tls_context.combined_validation_context: cannot merge", prefix);
            return NULL;
        }
        snprintf(path, pathlen, "%scommon_tls_context.combined_validation_context (default + secret \"%s\")",
                 prefix, sds->name);
        return &merge->vc;
    }
    return s->validation_context;
}

static unsigned char *alpn_wire(char *const *protos, size_t n, const char *const *dflt, size_t n_dflt,
                                size_t *len)
{
    size_t total = 0;
    const char *const *list = n ? (const char *const *)protos : dflt;
    size_t cnt = n ? n : n_dflt;
    for (size_t i = 0; i < cnt; i++)
        total += 1 + strlen(list[i]);
    unsigned char *w = malloc(total ? total : 1);
    if (w == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < cnt; i++) {
        size_t l = strlen(list[i]);
        if (l == 0 || l > 255)
            continue;
        w[k++] = (unsigned char)l;
        memcpy(w + k, list[i], l);
        k += l;
    }
    *len = k;
    return w;
}

static int same_names(const struct cert_ctx *c, char **names, size_t n)
{
    if (c->n_names != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(c->names[i], names[i]) != 0)
            return 0;
    return 1;
}

struct dp_tls_server *dp_tls_server_new(
    const Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext *cfg,
    const char *const *alpn, size_t n_alpn, const struct dp_secret_lookup *secrets, char *err,
    size_t errlen)
{
    struct xds_cfgerr e = {err, errlen};
    const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *c = cfg->common_tls_context;
    const Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate *tcs[MAX_CERTS];
    char paths[MAX_CERTS][96];
    int bad;

    if (dp_tls_init() < 0) {
        xds_cfg_fail(&e, "TLS is not initialised");
        return NULL;
    }
    if (c == NULL) {
        xds_cfg_fail(&e, "common_tls_context: required field is missing");
        return NULL;
    }
    if (cfg->ocsp_staple_policy != 0) {
        xds_cfg_fail(&e, "ocsp_staple_policy: only LENIENT_STAPLING (the default) is supported");
        return NULL;
    }
    if (cfg->session_ticket_keys_sds_secret_config) {
        xds_cfg_fail(&e, "session_ticket_keys_sds_secret_config: not supported");
        return NULL;
    }
    struct dp_tls_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        xds_cfg_fail(&e, "out of memory");
        return NULL;
    }
    s->refs = 1;
    size_t n = collect_certs(c, secrets, tcs, paths, "", &e, &bad);
    if (bad)
        goto fail;
    if (n == 0) {
        xds_cfg_fail(&e, "common_tls_context.tls_certificates: a server needs a certificate");
        goto fail;
    }
    char vpath[200];
    struct vc_merge merge = {.n_arrays = 0};
    const Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *vc =
        validation_of(c, secrets, vpath, sizeof(vpath), "", &e, &bad, &merge);
    if (bad)
        goto fail;
    int vrc = vc ? build_verify(&s->v, vc, vpath, &e) : 0;
    merge_free(&merge);
    if (vrc < 0)
        goto fail;
    s->require_client_cert = cfg->require_client_certificate && cfg->require_client_certificate->value;
    if (s->require_client_cert && vc == NULL) {
        xds_cfg_fail(&e, "require_client_certificate: needs a validation context (trusted_ca)");
        goto fail;
    }
    s->verify_mode = vc ? SSL_VERIFY_PEER : SSL_VERIFY_NONE;
    if (s->require_client_cert)
        s->verify_mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    s->alpn = alpn_wire(c->alpn_protocols, c->n_alpn_protocols, alpn, n_alpn, &s->alpn_len);
    if (s->alpn == NULL) {
        xds_cfg_fail(&e, "out of memory");
        goto fail;
    }

    unsigned char sid_ctx[SSL_MAX_SID_CTX_LENGTH];
    RAND_bytes(sid_ctx, sizeof(sid_ctx));
    unsigned char tickets[80];
    int have_ticket_keys = 0;
    if (cfg->session_ticket_keys && cfg->session_ticket_keys->n_keys) {
        char *k;
        size_t kl;
        if (read_ds(cfg->session_ticket_keys->keys[0], &k, &kl, "session_ticket_keys.keys[0]", &e) < 0)
            goto fail;
        if (kl != 80) {
            OPENSSL_cleanse(k, kl);
            free(k);
            xds_cfg_fail(&e, "session_ticket_keys.keys[0]: must be exactly 80 bytes");
            goto fail;
        }
        memcpy(tickets, k, 80);
        OPENSSL_cleanse(k, kl);
        free(k);
        have_ticket_keys = 1;
    } else {
        RAND_bytes(tickets, sizeof(tickets)); /* shared by this listener's contexts */
    }

    for (size_t i = 0; i < n; i++) {
        char **names = NULL;
        size_t n_names = 0;
        SSL_CTX *tmp = new_ctx(1);
        if (tmp == NULL) {
            xds_cfg_fail(&e, "out of memory");
            goto fail;
        }
        if (load_certificate(tmp, tcs[i], paths[i], &names, &n_names, &e) < 0) {
            SSL_CTX_free(tmp);
            goto fail;
        }
        /* Same names as an existing context (an RSA + ECDSA pair): load the
         * certificate there too, OpenSSL picks by the client's algorithms. */
        size_t j;
        for (j = 0; j < s->n_certs; j++)
            if (same_names(&s->certs[j], names, n_names))
                break;
        if (j < s->n_certs) {
            SSL_CTX_free(tmp);
            for (size_t k = 0; k < n_names; k++)
                free(names[k]);
            free(names);
            if (load_certificate(s->certs[j].ctx, tcs[i], paths[i], NULL, NULL, &e) < 0)
                goto fail;
            continue;
        }
        struct cert_ctx *cc = &s->certs[s->n_certs++];
        cc->ctx = tmp;
        cc->names = names;
        cc->n_names = n_names;
        if (apply_params(tmp, c->tls_params, &s->min_version, &s->max_version, "common_tls_context", &e) < 0)
            goto fail;
        SSL_CTX_set_client_hello_cb(tmp, dp_tls_client_hello_cb, NULL);
        SSL_CTX_set_alpn_select_cb(tmp, dp_tls_alpn_select_cb, s);
        SSL_CTX_set_session_id_context(tmp, sid_ctx, sizeof(sid_ctx));
        SSL_CTX_set_verify(tmp, s->verify_mode, s->verify_mode ? dp_tls_verify_cb : NULL);
        SSL_CTX_set_cert_verify_callback(tmp, dp_tls_cert_verify_cb, NULL);
        if (s->v.store) {
            SSL_CTX_set1_verify_cert_store(tmp, s->v.store);
            /* The CA names sent in the CertificateRequest. */
            STACK_OF(X509_NAME) *names_ca = sk_X509_NAME_new_null();
            STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(s->v.store);
            for (int k = 0; names_ca && k < sk_X509_OBJECT_num(objs); k++) {
                X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, k));
                if (x)
                    sk_X509_NAME_push(names_ca, X509_NAME_dup(X509_get_subject_name(x)));
            }
            SSL_CTX_set0_CA_list(tmp, names_ca);
        }
        /* One TLS 1.3 ticket per full handshake, not OpenSSL's two. */
        SSL_CTX_set_num_tickets(tmp, 1);
        if (cfg->disable_stateless_session_resumption) {
            SSL_CTX_set_options(tmp, SSL_OP_NO_TICKET);
        } else if (!have_ticket_keys && !cfg->disable_stateful_session_resumption) {
            /* Keys of our own making live as long as this context, as the
             * session cache does, so a ticket that names a cached session
             * resumes exactly what a stateless one would, and costs far
             * less: OpenSSL 3 builds a stateless ticket by re-encoding and
             * re-parsing the session, client certificate included, about a
             * fifth of a full mTLS handshake. Configured
             * session_ticket_keys (shared by a fleet) keep them stateless. */
            SSL_CTX_set_options(tmp, SSL_OP_NO_TICKET);
            SSL_CTX_sess_set_cache_size(tmp, SESSION_CACHE_SIZE);
        } else {
            SSL_CTX_set_tlsext_ticket_keys(tmp, tickets, sizeof(tickets));
        }
        SSL_CTX_set_session_cache_mode(tmp, cfg->disable_stateful_session_resumption
                                                ? SSL_SESS_CACHE_OFF
                                                : SSL_SESS_CACHE_SERVER);
        if (cfg->session_timeout)
            SSL_CTX_set_timeout(tmp, (long)cfg->session_timeout->seconds);
    }
    OPENSSL_cleanse(tickets, sizeof(tickets));
    return s;
fail:
    dp_tls_server_unref(s);
    return NULL;
}

struct dp_tls_client *dp_tls_client_new(
    const Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext *cfg,
    const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *default_cert, int http2,
    const struct dp_secret_lookup *secrets, char *err, size_t errlen)
{
    struct xds_cfgerr e = {err, errlen};
    const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *c = cfg->common_tls_context;
    const Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate *tcs[MAX_CERTS];
    char paths[MAX_CERTS][96];
    int bad;

    if (dp_tls_init() < 0) {
        xds_cfg_fail(&e, "TLS is not initialised");
        return NULL;
    }
    if (cfg->allow_renegotiation) {
        xds_cfg_fail(&e, "allow_renegotiation: renegotiation is not supported");
        return NULL;
    }
    struct dp_tls_client *cl = calloc(1, sizeof(*cl));
    if (cl == NULL) {
        xds_cfg_fail(&e, "out of memory");
        return NULL;
    }
    cl->refs = 1;
    pthread_mutex_init(&cl->sess_lock, NULL);
    cl->ctx = new_ctx(0);
    if (cl->ctx == NULL) {
        xds_cfg_fail(&e, "out of memory");
        goto fail;
    }
    if (cfg->sni[0])
        cl->sni = strdup(cfg->sni);
    int minv, maxv;
    if (apply_params(cl->ctx, c ? c->tls_params : NULL, &minv, &maxv, "common_tls_context", &e) < 0)
        goto fail;
    size_t n = 0;
    if (c) {
        n = collect_certs(c, secrets, tcs, paths, "", &e, &bad);
        if (bad)
            goto fail;
    }
    if (n == 0 && default_cert) {
        n = collect_certs(default_cert, secrets, tcs, paths, "default upstream TLS ", &e, &bad);
        if (bad)
            goto fail;
    }
    if (n > 1) {
        xds_cfg_fail(&e, "common_tls_context.tls_certificates: a client presents one certificate");
        goto fail;
    }
    if (n == 1 && load_certificate(cl->ctx, tcs[0], paths[0], NULL, NULL, &e) < 0)
        goto fail;
    if (c) {
        char vpath[200];
        struct vc_merge merge = {.n_arrays = 0};
        const Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *vc =
            validation_of(c, secrets, vpath, sizeof(vpath), "", &e, &bad, &merge);
        if (bad)
            goto fail;
        if (vc) {
            int vrc = build_verify(&cl->v, vc, vpath, &e);
            merge_free(&merge);
            if (vrc < 0)
                goto fail;
            if (cl->v.store)
                SSL_CTX_set1_verify_cert_store(cl->ctx, cl->v.store);
            SSL_CTX_set_verify(cl->ctx, SSL_VERIFY_PEER, dp_tls_verify_cb);
            SSL_CTX_set_cert_verify_callback(cl->ctx, dp_tls_cert_verify_cb, NULL);
            SSL_CTX_set_verify_depth(cl->ctx, cl->v.depth);
        }
    }
    static const char *const h2[] = {"h2"}, *const h1[] = {"http/1.1"};
    size_t alen;
    unsigned char *aw = c && c->n_alpn_protocols
                            ? alpn_wire(c->alpn_protocols, c->n_alpn_protocols, NULL, 0, &alen)
                            : alpn_wire(NULL, 0, http2 ? h2 : h1, 1, &alen);
    if (aw == NULL) {
        xds_cfg_fail(&e, "out of memory");
        goto fail;
    }
    SSL_CTX_set_alpn_protos(cl->ctx, aw, (unsigned int)alen);
    free(aw);
    if (cfg->max_session_keys == NULL || cfg->max_session_keys->value > 0) {
        SSL_CTX_set_session_cache_mode(cl->ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(cl->ctx, dp_tls_new_session_cb);
    }
    return cl;
fail:
    dp_tls_client_unref(cl);
    return NULL;
}
