/*
 * Certificates with EC keys parsed without OpenSSL 3.0's decoder framework
 * (dataplane/tls_ec.c). Shared by the data plane and the bench's load
 * generator; needs nothing but OpenSSL.
 */
#ifndef LEGATE_DP_TLS_EC_H
#define LEGATE_DP_TLS_EC_H

/** On OpenSSL 3.0 and 3.1: makes certificates with EC keys parse through
 *  OpenSSL's built-in EC method instead of its decoder framework (about a
 *  fifth of a full mTLS handshake). Process-wide; call once, before the
 *  first handshake. Returns 1 when it did, 0 when it did not apply. */
int dp_tls_builtin_ec_keys(void);

#endif
