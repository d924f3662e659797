/* Certificates with EC keys parsed through OpenSSL's built-in EC method
 * (dataplane/tls_ec.c): the keys they yield verify, sign-verify and derive
 * exactly as provider keys do, and other key types are untouched. Keys and
 * certificates are made here, with OpenSSL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "dataplane/tls.h"
#include "dataplane/tls_ec.h"

/* A self-signed certificate for key, DER-encoded. */
static int self_signed_der(EVP_PKEY *key, const EVP_MD *md, unsigned char **der)
{
    X509 *x = X509_new();
    assert_non_null(x);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)"legate ec test", -1, -1, 0);
    X509_set_issuer_name(x, nm);
    assert_int_equal(X509_set_pubkey(x, key), 1);
    assert_true(X509_sign(x, key, md) > 0);
    *der = NULL;
    int n = i2d_X509(x, der);
    assert_true(n > 0);
    X509_free(x);
    return n;
}

static X509 *parse(const unsigned char *der, int n)
{
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, n);
    assert_non_null(x);
    return x;
}

static void sign_verify(EVP_PKEY *priv, EVP_PKEY *pub)
{
    const unsigned char msg[] = "the client's CertificateVerify";
    unsigned char sig[128];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, priv), 1);
    assert_int_equal(EVP_DigestSign(m, sig, &siglen, msg, sizeof(msg)), 1);
    EVP_MD_CTX_free(m);
    m = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, pub), 1);
    assert_int_equal(EVP_DigestVerify(m, sig, siglen, msg, sizeof(msg)), 1);
    EVP_MD_CTX_free(m);
    sig[siglen / 2] ^= 1;
    m = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, pub), 1);
    assert_int_not_equal(EVP_DigestVerify(m, sig, siglen, msg, sizeof(msg)), 1);
    EVP_MD_CTX_free(m);
}

static size_t derive(EVP_PKEY *priv, EVP_PKEY *peer, unsigned char *out, size_t outlen)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(priv, NULL);
    assert_non_null(c);
    assert_int_equal(EVP_PKEY_derive_init(c), 1);
    assert_int_equal(EVP_PKEY_derive_set_peer(c, peer), 1);
    assert_int_equal(EVP_PKEY_derive(c, out, &outlen), 1);
    EVP_PKEY_CTX_free(c);
    return outlen;
}

static void ec_certificates_parse_to_working_builtin_keys(void **state)
{
    (void)state;
    EVP_PKEY *a = EVP_EC_gen("P-256"), *b = EVP_EC_gen("P-256");
    assert_non_null(a);
    assert_non_null(b);
    unsigned char *der_a, *der_b;
    int na = self_signed_der(a, EVP_sha256(), &der_a), nb = self_signed_der(b, EVP_sha256(), &der_b);

    X509 *before = parse(der_a, na);
    assert_non_null(EVP_PKEY_get0_provider(X509_get0_pubkey(before))); /* the decoder made it */

    int applies = OpenSSL_version_num() < 0x30200000L;
    assert_int_equal(dp_tls_builtin_ec_keys(), applies);

    X509 *xa = parse(der_a, na), *xb = parse(der_b, nb);
    EVP_PKEY *pa = X509_get0_pubkey(xa), *pb = X509_get0_pubkey(xb);
    assert_non_null(pa);
    if (applies)
        assert_null(EVP_PKEY_get0_provider(pa)); /* OpenSSL's built-in EC method made it */
    assert_int_equal(EVP_PKEY_get_bits(pa), 256);
    assert_int_equal(EVP_PKEY_eq(pa, a), 1);
    assert_int_equal(EVP_PKEY_eq(pa, b), 0);

    /* The certificate's own signature, and one made by the provider key. */
    assert_int_equal(X509_verify(xa, pa), 1);
    assert_int_equal(X509_verify(xa, pb), 0);
    sign_verify(a, pa);

    /* ECDH between provider keys and parsed keys agrees. */
    unsigned char s1[64], s2[64];
    size_t l1 = derive(a, pb, s1, sizeof(s1)), l2 = derive(b, pa, s2, sizeof(s2));
    assert_int_equal(l1, 32);
    assert_int_equal(l1, l2);
    assert_memory_equal(s1, s2, l1);

    /* Other key types are untouched. */
    EVP_PKEY *x = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    assert_non_null(x);
    assert_non_null(EVP_PKEY_get0_provider(x));
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(ed);
    unsigned char *der_ed;
    int ned = self_signed_der(ed, NULL, &der_ed); /* Ed25519 signs without a digest */
    X509 *xed = parse(der_ed, ned);
    assert_non_null(EVP_PKEY_get0_provider(X509_get0_pubkey(xed)));
    assert_int_equal(X509_verify(xed, X509_get0_pubkey(xed)), 1);

    X509_free(xed);
    OPENSSL_free(der_ed);
    EVP_PKEY_free(ed);
    EVP_PKEY_free(x);
    X509_free(before);
    X509_free(xa);
    X509_free(xb);
    OPENSSL_free(der_a);
    OPENSSL_free(der_b);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ec_certificates_parse_to_working_builtin_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
