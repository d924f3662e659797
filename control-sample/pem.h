/*
 * PEM checks and summaries for certificates and keys, with OpenSSL. Used on
 * secrets from the config file, on PUT /secrets and on the xDS port's own
 * certificate. No function here puts key material into a message.
 */
#ifndef LEGATE_CONTROL_PEM_H
#define LEGATE_CONTROL_PEM_H

#include <stddef.h>

#include "xds/json.h"

/**
 * Checks that pem holds one or more PEM certificates, every one of which
 * parses, and no private key. Returns the number of certificates, or -1
 * with a reason in err ("no PEM certificate found", "certificate 2 does not
 * parse", "holds a private key").
 */
int cp_pem_check_certs(const char *pem, size_t len, char *err, size_t errlen);

/**
 * Checks that key is one unencrypted PEM private key that belongs to the
 * first certificate of chain (already checked). Returns 0, or -1 with "not
 * a PEM private key" or "does not match the first certificate of <what>".
 */
int cp_pem_check_key(const char *key, size_t klen, const char *chain, size_t clen,
                     const char *what, char *err, size_t errlen);

/**
 * Checks that the first certificate of pem is valid now. Returns 0, or -1
 * with "the certificate expired at 2026-01-01T00:00:00Z" (or "is not valid
 * before ...").
 */
int cp_pem_check_validity(const char *pem, size_t len, char *err, size_t errlen);

/**
 * Appends a JSON array with one object per certificate in pem: subject,
 * issuer, subject_alt_names, serial, not_before, not_after,
 * days_until_expiry. Nothing is appended but "[]" if pem holds none.
 */
void cp_pem_info_json(struct xds_sb *b, const char *pem, size_t len);

#endif
