/*
 * x-forwarded-client-cert, as Envoy defines it: forward_client_cert_details
 * decides what happens to a client-sent header, set_current_client_cert_details
 * which fields of the current client certificate are added.
 *   By=<our URI SAN>;Hash=<sha256 of the client cert>;Cert="<url-encoded PEM>";
 *   Chain="<url-encoded PEM chain>";Subject="<RFC 2253 subject>";URI=<uri SAN>;DNS=<dns SAN>
 * Elements for several hops are separated by ','.
 */
#ifndef LEGATE_DP_XFCC_H
#define LEGATE_DP_XFCC_H

#include <stddef.h>

#include "dataplane/config.h"
#include "dataplane/filter.h"

struct dp_stream;
struct dp_buf;

/** Applies the mode to the stream's request headers. Returns 0, -1 on
 *  allocation failure. */
int dp_xfcc_apply(struct dp_stream *s, enum dp_xfcc_mode mode, unsigned fields);

/** Formats the element for the current connection into out (appended).
 *  by: our own certificate's URI SAN or NULL. Returns 0 or -1. */
int dp_xfcc_format(struct dp_buf *out, const struct dp_peer_identity *id, const char *by,
                   unsigned fields);

#endif
