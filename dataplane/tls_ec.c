/*
 * Certificates with EC keys parsed without OpenSSL 3.0's decoder framework.
 *
 * OpenSSL 3.0 decodes the public key of every certificate it parses (the
 * client certificate of each full handshake, the server certificate of
 * each upstream handshake) with OSSL_DECODER_CTX_new_for_pkey, which
 * builds every decoder chain of every provider under locks each time:
 * about 1.2 million instructions, 20% of a full mTLS handshake, for one
 * P-256 key (OpenSSL issues #17950 and #15199; 3.2 caches the chains).
 * Parsing takes OpenSSL's own EC method instead when an ENGINE provides
 * the EC key method, so legate registers one that provides exactly
 * OpenSSL's built-in method: the same code does the same mathematics
 * (ECDSA_do_verify, the constant-time P-256 implementation), without the
 * decoder search. The cost: EC keys made this way are "legacy" keys, and
 * EC operations that create a context by type go through the same
 * built-in method too. Other key types are untouched.
 *
 * The ENGINE API is deprecated in OpenSSL 3 (hence this file of its own);
 * builds without engines, and OpenSSL 3.2 and later, skip this.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/opensslv.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#ifndef OPENSSL_NO_ENGINE
#include <openssl/engine.h>
#endif

#include "dataplane/tls_ec.h"

#ifndef OPENSSL_NO_ENGINE
static int ec_pkey_meths(ENGINE *e, EVP_PKEY_METHOD **pmeth, const int **nids, int nid)
{
    static const int ec_nids[] = {EVP_PKEY_EC};
    (void)e;
    if (pmeth == NULL) {
        *nids = ec_nids;
        return 1;
    }
    *pmeth = nid == EVP_PKEY_EC ? (EVP_PKEY_METHOD *)EVP_PKEY_meth_find(EVP_PKEY_EC) : NULL;
    return *pmeth != NULL;
}
#endif

int dp_tls_builtin_ec_keys(void)
{
#ifdef OPENSSL_NO_ENGINE
    return 0;
#else
    if (OpenSSL_version_num() >= 0x30200000L)
        return 0; /* the decoder chains are cached there */
    if (EVP_PKEY_meth_find(EVP_PKEY_EC) == NULL)
        return 0;
    ENGINE *e = ENGINE_new();
    if (e == NULL)
        return 0;
    int ok = ENGINE_set_id(e, "legate-builtin-ec") == 1 &&
             ENGINE_set_name(e, "OpenSSL's built-in EC key method, for fast certificate parsing") == 1 &&
             ENGINE_set_pkey_meths(e, ec_pkey_meths) == 1 && ENGINE_init(e) == 1;
    if (ok) {
        ok = ENGINE_set_default_pkey_meths(e) == 1;
        ENGINE_finish(e); /* the default registration holds its own reference */
    }
    ENGINE_free(e);
    return ok ? 1 : 0;
#endif
}
