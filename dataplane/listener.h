/*
 * Accepting connections: filter chain matching (Envoy's filter_chain_match
 * on destination port, SNI, transport protocol and ALPN) and the
 * tls_inspector-like detection of TLS from a connection's first byte.
 */
#ifndef LEGATE_DP_LISTENER_H
#define LEGATE_DP_LISTENER_H

#include <stddef.h>
#include <stdint.h>

#include "dataplane/config.h"
#include "dataplane/worker.h"

/** Takes over an accepted fd: inspects it if needed, picks the filter chain
 *  (or closes the connection when none matches) and starts the connection
 *  manager. */
void dp_listener_accept(struct dp_worker *w, struct dp_worker_snap *ws, const struct dp_listener *l,
                        int fd);

/**
 * Envoy's filter chain selection. Criteria are applied in order
 * (destination port, server name, transport protocol, application
 * protocols); at each step the chains that name the value explicitly win
 * over the ones that leave the criterion empty, and a more specific server
 * name (exact, then the longest wildcard) wins over a less specific one.
 * sni may be NULL; transport is "tls" or "raw_buffer". Returns the chain,
 * the default chain when nothing matches, or NULL.
 */
const struct dp_filter_chain *dp_listener_match(const struct dp_listener *l, uint16_t dst_port,
                                                const char *sni, const char *transport,
                                                const char *const *alpn, size_t n_alpn);

/** The first TLS server context of the listener's chains: the one an SSL
 *  starts with before the ClientHello picks the real one. */
struct dp_tls_server *dp_listener_first_tls(const struct dp_listener *l);

/** Local port of a socket (host order), 0 if unknown. */
uint16_t dp_sock_local_port(int fd);

/** Lowercase-matches host against an Envoy server_names/domains entry:
 *  exact, "*.suffix" (at least one label before the suffix), or "*". */
int dp_name_match(const char *pattern, const char *host, size_t host_len);

#endif
