/*
 * Arbitrary bytes as a client certificate (DER, else PEM, possibly a PEM
 * chain) -> the identity the TLS layer gives filters (dp_tls_cert_identity:
 * subject, issuer, serial, fingerprint, SANs, PEM) -> x-forwarded-client-cert
 * formatting (dataplane/xfcc.c) and the mTLS filter's SAN and subject
 * matchers and decisions (filters/mtls/).
 *
 * Besides crashes, leaks and undefined behaviour, it checks what must hold
 * for any certificate:
 *  - every SAN in the identity is, byte for byte, a SAN of the certificate
 *    (a matcher never sees a different name than the certificate holds);
 *  - the XFCC element is a valid header value (no control characters but
 *    HTAB) with the structure Envoy's parsers expect (quotes balanced);
 *  - an exact matcher made from each SAN matches the identity, and a
 *    subject pattern made from the certificate's own subject matches it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "dataplane/arena.h"
#include "dataplane/buf.h"
#include "dataplane/tls.h"
#include "dataplane/xfcc.h"
#include "filters/mtls/mtls.h"
#include "legate/filters/http/mtls/v1/mtls.pb-c.h"
#include "xds/convert.h"
#include "xds/log.h"

/* Matchers of every kind over every SAN type, subjects and issuers, and
 * consumers: what dp_mtls_decide walks. */
static const char *const configs[] = {
    "require_certificate: true\n"
    "allowed_sans:\n"
    "- {san_type: URI, matcher: {prefix: 'spiffe://example.org/'}}\n"
    "- {san_type: DNS, matcher: {exact: 'api.example.com'}}\n"
    "- {san_type: DNS, matcher: {suffix: '.internal', ignore_case: true}}\n"
    "- {san_type: EMAIL, matcher: {contains: '@example'}}\n"
    "- {san_type: URI, matcher: {safe_regex: {regex: 'spiffe://[a-z.]+/ns/[^/]+/sa/.*'}}}\n"
    "allowed_subjects: ['O=legate test', 'CN=client,O=legate test', 'CN=a\\, b']\n"
    "allowed_issuers: ['CN=legate test client CA,O=legate test']\n"
    "consumers:\n"
    "- {username: client, id: c-1, sans: [{san_type: URI, matcher: {exact: 'spiffe://example.org/ns/default/sa/client'}}]}\n"
    "- {username: ops, custom_id: ext-2, subjects: ['CN=ops', 'OU=ops+CN=x']}\n"
    "- {username: mail, sans: [{san_type: EMAIL, matcher: {exact: 'a@example.com'}}]}\n"
    "anonymous: guest\n",
    "consumers:\n"
    "- {username: any-dns, sans: [{san_type: DNS, matcher: {exact: 'x.example.com'}}]}\n"
    "- {username: quoted, subjects: ['CN=\"quoted\"']}\n",
};
#define N_CONFIGS (sizeof(configs) / sizeof(configs[0]))
static struct dp_mtls_cfg *cfgs[N_CONFIGS];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[512];
    lg_set_level(LG_OFF);
    for (size_t i = 0; i < N_CONFIGS; i++) {
        ProtobufCMessage *m;
        if (xds_convert_text(configs[i], strlen(configs[i]), &legate__filters__http__mtls__v1__mtls__descriptor,
                             &m, err, sizeof(err)) != 0) {
            fprintf(stderr, "config %zu: %s\n", i, err);
            abort();
        }
        cfgs[i] = dp_mtls_config_new(m, err, sizeof(err));
        protobuf_c_message_free_unpacked(m, NULL);
        if (cfgs[i] == NULL) {
            fprintf(stderr, "config %zu: %s\n", i, err);
            abort();
        }
    }
    return 0;
}

static void check(int ok, const char *what, const char *detail)
{
    if (ok)
        return;
    fprintf(stderr, "fuzz_xfcc: %s: %s\n", what, detail ? detail : "(null)");
    abort();
}

/* s is one of the certificate's SANs of that type, byte for byte. */
static int cert_has_san(const GENERAL_NAMES *gens, int type, const char *s)
{
    size_t n = strlen(s);
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == type && (size_t)g->d.ia5->length == n && memcmp(g->d.ia5->data, s, n) == 0)
            return 1;
    }
    return 0;
}

static void check_sans(X509 *x, const struct dp_peer_identity *id)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    static const struct {
        int gen;
        enum dp_mtls_san_type type;
    } kinds[] = {{GEN_URI, DP_MTLS_SAN_URI}, {GEN_DNS, DP_MTLS_SAN_DNS}, {GEN_EMAIL, DP_MTLS_SAN_EMAIL}};
    for (size_t k = 0; k < 3; k++) {
        const char *const *v = kinds[k].gen == GEN_URI   ? id->uri_sans
                               : kinds[k].gen == GEN_DNS ? id->dns_sans
                                                         : id->email_sans;
        size_t n = kinds[k].gen == GEN_URI   ? id->n_uri_sans
                   : kinds[k].gen == GEN_DNS ? id->n_dns_sans
                                             : id->n_email_sans;
        for (size_t i = 0; i < n; i++) {
            check(v[i] != NULL, "a NULL SAN in the identity", "");
            check(cert_has_san(gens, kinds[k].gen, v[i]), "the identity holds a SAN the certificate does not",
                  v[i]);
            struct dp_mtls_san m = {.type = kinds[k].type,
                                    .m = {.kind = DP_MATCH_EXACT, .value = (char *)v[i], .len = strlen(v[i])}};
            check(dp_mtls_san_match(&m, 1, id) == 1, "an exact matcher of its own SAN does not match", v[i]);
        }
    }
    GENERAL_NAMES_free(gens);
}

/* x-forwarded-client-cert: a valid field value whose quotes are balanced,
 * with \" the only escape (Envoy's rule, which xfcc.c follows). */
static void check_xfcc(const struct dp_peer_identity *id, const char *by)
{
    struct dp_buf b = {0};
    unsigned all = DP_XFCC_F_SUBJECT | DP_XFCC_F_URI | DP_XFCC_F_DNS | DP_XFCC_F_CERT | DP_XFCC_F_CHAIN;
    check(dp_xfcc_format(&b, id, by, all) == 0, "dp_xfcc_format failed", by);
    const unsigned char *p = dp_buf_head(&b);
    size_t n = dp_buf_size(&b);
    int quoted = 0;
    for (size_t i = 0; i < n; i++) {
        check(!((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f), "a control character in XFCC", id->subject);
        if (p[i] == '\\' && quoted && i + 1 < n && p[i + 1] == '"')
            i++;
        else if (p[i] == '"')
            quoted = !quoted;
    }
    check(!quoted, "an unbalanced quote in XFCC", id->subject);
    dp_buf_release(&b);
}

static void check_subject(const char *name)
{
    struct dp_mtls_dn dn;
    char err[256];
    if (name == NULL || dp_mtls_dn_parse(name, &dn, err, sizeof(err)) < 0)
        return;
    check(dp_mtls_dn_match(&dn, 1, name) == 1, "a subject pattern made from a name does not match it", name);
    dp_mtls_dn_free(&dn);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024)
        return 0;
    const unsigned char *p = data;
    X509 *x = d2i_X509(NULL, &p, (long)size);
    STACK_OF(X509) *chain = NULL;
    if (x == NULL) {
        BIO *bio = BIO_new_mem_buf(data, (int)size);
        x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
        X509 *more;
        while (x && (more = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
            if (chain == NULL)
                chain = sk_X509_new_null();
            if (chain == NULL || !sk_X509_push(chain, more))
                X509_free(more);
        }
        BIO_free(bio);
    }
    ERR_clear_error();
    if (x == NULL)
        return 0;

    struct dp_arena arena = {0};
    struct dp_peer_identity id = {.tls = 1, .presented = 1, .verified = 1, .tls_version = "TLSv1.3"};
    dp_tls_cert_identity(x, &id, &arena);
    if (chain) {
        /* As the server side builds it: the leaf, then the peer's chain. */
        BIO *b = BIO_new(BIO_s_mem());
        if (b) {
            PEM_write_bio_X509(b, x);
            for (int i = 0; i < sk_X509_num(chain); i++)
                PEM_write_bio_X509(b, sk_X509_value(chain, i));
            char *pem;
            long n = BIO_get_mem_data(b, &pem);
            id.chain_pem = n >= 0 ? dp_arena_strndup(&arena, pem, (size_t)n) : NULL;
            BIO_free(b);
        }
    }

    check_sans(x, &id);
    check_xfcc(&id, NULL);
    check_xfcc(&id, "spiffe://legate/ns/a,b;c=\"d\"");
    check_subject(id.subject);
    check_subject(id.issuer);

    for (size_t i = 0; i < N_CONFIGS; i++) {
        for (int verified = 0; verified < 2; verified++) {
            id.verified = verified;
            id.verify_reason = verified ? NULL : "expired";
            for (int require = 0; require < 2; require++) {
                const struct dp_mtls_consumer *c;
                enum dp_mtls_verdict v = dp_mtls_decide(cfgs[i], require, &id, &c);
                check(v == DP_MTLS_ALLOW || c == NULL, "a consumer without ALLOW", id.subject);
                check(verified || v != DP_MTLS_ALLOW, "an unverified certificate allowed", id.subject);
                char body[160];
                int status;
                size_t n = dp_mtls_reply_body(v, &id, &status, body, sizeof(body));
                check((v == DP_MTLS_ALLOW || v == DP_MTLS_ANONYMOUS) == (n == 0), "reply body", body);
            }
        }
    }

    dp_arena_reset(&arena);
    sk_X509_pop_free(chain, X509_free);
    X509_free(x);
    return 0;
}
