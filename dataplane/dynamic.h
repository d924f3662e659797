/*
 * Dynamic configuration: the xDS state of the world (LDS, RDS, CDS, EDS,
 * SDS over one ADS stream) compiled into listeners and clusters.
 *
 * The xDS client underneath lives in xds/: the stream (ads.c), the protocol
 * (client.c), one response from decoding to the ACK or NACK (response.c),
 * per-type state (state.c) and references (deps.c).
 *
 * Everything here runs on the ADS thread (xds/ads.c): the client decodes a
 * response and checks its resources one by one; here the listeners and
 * clusters that depend on what changed are rebuilt and the result is handed
 * to the server (host), which publishes a new snapshot; only then the
 * client ACKs the response -- or NACKs it with the previous version and an
 * error_detail naming the resource and the field. References are followed
 * like Envoy does: LDS -> RDS and SDS names,
 * CDS -> EDS and SDS names; a listener or cluster whose references have not
 * arrived yet is warming and is not installed (its previous version, if
 * any, keeps serving).
 */
#ifndef LEGATE_DP_DYNAMIC_H
#define LEGATE_DP_DYNAMIC_H

#include <stddef.h>

#include "dataplane/config.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "xds/bootstrap.h"

/* What the server provides. Both calls come from the ADS thread. */
struct dp_dyn_host {
    /** Makes sure l's address has listening sockets (opening them now, so
     *  that a bind error can be reported). 0, or -1 with the reason. */
    int (*listen_prepare)(void *ud, const struct dp_listener *l, char *err, size_t errlen);
    /** Replaces the dynamic listeners and clusters (the host takes its own
     *  references) and publishes a snapshot. */
    void (*install)(void *ud, struct dp_listener *const *ls, size_t nl, struct dp_cluster *const *cs,
                    size_t nc);
    void *ud;
};

struct dp_dyn;

/**
 * Starts the ADS client described by bs->dynamic_resources. default_tls is
 * the data-plane-wide default upstream client certificate (or NULL) and
 * must outlive the client. An SDS secret whose certificate has expired is
 * NACKed unless allow_expired. Returns NULL with a reason in err.
 */
struct dp_dyn *dp_dyn_start(const xds_bootstrap_t *bs,
                            const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *default_tls,
                            int allow_expired, const struct dp_dyn_host *host, char *err, size_t errlen);
void dp_dyn_stop(struct dp_dyn *d);

/**
 * For tests and fuzzing (tests/fuzz/fuzz_xds.c): the same state as
 * dp_dyn_start, with no ADS client. bs needs a node and dynamic_resources
 * (its ads_config is not used). Responses come from dp_dyn_apply; the
 * requests a live client would send (ACK, NACK, new subscriptions) are
 * built, logged and dropped. Free with dp_dyn_stop. NULL when out of memory.
 */
struct dp_dyn *dp_dyn_new_offline(const xds_bootstrap_t *bs,
                                  const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *default_tls,
                                  int allow_expired, const struct dp_dyn_host *host);

/** Handles resp exactly as one that arrived on the ADS stream: decoding and
 *  validating its resources, rebuilding and installing (through the host)
 *  what depends on them, subscriptions and readiness. */
void dp_dyn_apply(struct dp_dyn *d, const Envoy__Service__Discovery__V3__DiscoveryResponse *resp);

/** 1 once the initial LDS and CDS responses and everything they reference
 *  have been applied (or given up on after the initial fetch timeout). */
int dp_dyn_ready(struct dp_dyn *d);

/** JSON of the applied dynamic resources with their versions, private keys
 *  redacted (malloc'd; the caller frees). */
char *dp_dyn_config_dump(struct dp_dyn *d);

struct dp_dump_view;
/** Calls fn (with the lock held: keep it short, no xDS calls) with the
 *  applied resources, versions, subscriptions and per-resource notes, for
 *  the Envoy-shaped /config_dump (dataplane/config_dump.h). */
void dp_dyn_dump_view(struct dp_dyn *d, void (*fn)(void *arg, const struct dp_dump_view *v), void *arg);

/** The applied secrets, for /certs: calls fn for each TLS certificate. */
void dp_dyn_each_secret(struct dp_dyn *d,
                        void (*fn)(void *arg, const char *name, const char *version,
                                   const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s),
                        void *arg);

#endif
