#include "pem.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

/* An encrypted key must fail, not prompt on the terminal. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    return 0;
}

static int has_private_key(const char *pem, size_t len)
{
    return memmem(pem, len, "PRIVATE KEY-----", 16) != NULL;
}

/* The first certificate of pem, or NULL. */
static X509 *first_cert(const char *pem, size_t len)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, no_password, NULL) : NULL;
    BIO_free(bio);
    ERR_clear_error();
    return x;
}

int cp_pem_check_certs(const char *pem, size_t len, char *err, size_t errlen)
{
    int n = 0;

    if (len > (size_t)1 << 24) {
        snprintf(err, errlen, "too large");
        return -1;
    }
    if (has_private_key(pem, len)) {
        snprintf(err, errlen, "holds a private key (certificates only here)");
        return -1;
    }
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    ERR_clear_error();
    for (;;) {
        X509 *x = PEM_read_bio_X509(bio, NULL, no_password, NULL);
        if (x == NULL)
            break;
        X509_free(x);
        n++;
    }
    unsigned long e = ERR_peek_last_error();
    BIO_free(bio);
    ERR_clear_error();
    /* Running out of input ends every bundle; anything else is damage. */
    if (e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
        snprintf(err, errlen, "certificate %d does not parse as PEM", n + 1);
        return -1;
    }
    if (n == 0) {
        snprintf(err, errlen, "no PEM certificate found");
        return -1;
    }
    return n;
}

int cp_pem_check_key(const char *key, size_t klen, const char *chain, size_t clen,
                     const char *what, char *err, size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(key, (int)klen);
    EVP_PKEY *pk = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL) : NULL;
    BIO_free(bio);
    ERR_clear_error();
    if (pk == NULL) {
        snprintf(err, errlen, "not a PEM private key (or an encrypted one)");
        return -1;
    }
    X509 *x = first_cert(chain, clen);
    int ok = x && X509_check_private_key(x, pk) == 1;
    ERR_clear_error();
    X509_free(x);
    EVP_PKEY_free(pk);
    if (!ok) {
        snprintf(err, errlen, "does not match the first certificate of %s", what);
        return -1;
    }
    return 0;
}

static void fmt_time(const ASN1_TIME *t, char *buf, size_t len)
{
    struct tm tm;
    buf[0] = '\0';
    if (ASN1_TIME_to_tm(t, &tm) == 1)
        strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int cp_pem_check_validity(const char *pem, size_t len, char *err, size_t errlen)
{
    X509 *x = first_cert(pem, len);
    char when[64];
    int rc = 0;

    if (x == NULL) {
        snprintf(err, errlen, "no PEM certificate found");
        return -1;
    }
    if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0) {
        fmt_time(X509_get0_notAfter(x), when, sizeof(when));
        snprintf(err, errlen, "the certificate expired at %s", when);
        rc = -1;
    } else if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0) {
        fmt_time(X509_get0_notBefore(x), when, sizeof(when));
        snprintf(err, errlen, "the certificate is not valid before %s", when);
        rc = -1;
    }
    X509_free(x);
    return rc;
}

static void time_field(struct xds_sb *b, const char *key, const ASN1_TIME *t)
{
    char buf[64];
    fmt_time(t, buf, sizeof(buf));
    xds_sb_addf(b, ",\"%s\":", key);
    xds_sb_str(b, buf);
}

static void name_field(struct xds_sb *b, const char *key, const X509_NAME *n)
{
    char *s = X509_NAME_oneline(n, NULL, 0);
    xds_sb_addf(b, "\"%s\":", key);
    xds_sb_str(b, s ? s : "");
    OPENSSL_free(s);
}

static void sans(struct xds_sb *b, X509 *x)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int first = 1;

    xds_sb_add(b, ",\"subject_alt_names\":[", 22);
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        char val[300] = "";
        if (gn->type == GEN_DNS || gn->type == GEN_URI || gn->type == GEN_EMAIL) {
            const ASN1_IA5STRING *s = gn->d.ia5;
            snprintf(val, sizeof(val), "%s:%.*s",
                     gn->type == GEN_DNS ? "DNS" : gn->type == GEN_URI ? "URI" : "email",
                     s->length, (const char *)s->data);
        } else if (gn->type == GEN_IPADD) {
            char ip[INET6_ADDRSTRLEN] = "?";
            if (gn->d.ip->length == 4)
                inet_ntop(AF_INET, gn->d.ip->data, ip, sizeof(ip));
            else if (gn->d.ip->length == 16)
                inet_ntop(AF_INET6, gn->d.ip->data, ip, sizeof(ip));
            snprintf(val, sizeof(val), "IP:%s", ip);
        } else {
            continue;
        }
        if (!first)
            xds_sb_add(b, ",", 1);
        first = 0;
        xds_sb_str(b, val);
    }
    GENERAL_NAMES_free(names);
    xds_sb_add(b, "]", 1);
}

void cp_pem_info_json(struct xds_sb *b, const char *pem, size_t len)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509 *x;
    int first = 1;

    xds_sb_add(b, "[", 1);
    while (bio && (x = PEM_read_bio_X509(bio, NULL, no_password, NULL)) != NULL) {
        xds_sb_add(b, first ? "{" : ",{", first ? 1 : 2);
        first = 0;
        name_field(b, "subject", X509_get_subject_name(x));
        xds_sb_add(b, ",", 1);
        name_field(b, "issuer", X509_get_issuer_name(x));
        sans(b, x);
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
        char *hex = bn ? BN_bn2hex(bn) : NULL;
        xds_sb_add(b, ",\"serial\":", 10);
        xds_sb_str(b, hex ? hex : "");
        OPENSSL_free(hex);
        BN_free(bn);
        time_field(b, "not_before", X509_get0_notBefore(x));
        time_field(b, "not_after", X509_get0_notAfter(x));
        int days = 0, secs = 0;
        ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x));
        xds_sb_addf(b, ",\"days_until_expiry\":%d}", days);
        X509_free(x);
    }
    BIO_free(bio);
    ERR_clear_error();
    xds_sb_add(b, "]", 1);
}
