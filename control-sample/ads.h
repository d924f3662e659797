/*
 * The ADS server: envoy.service.discovery.v3.AggregatedDiscoveryService,
 * state of the world, on the gRPC core C API.
 *
 * One thread owns everything here: it drives the completion queue through
 * cp_ads_poll() and issues every batch, so no call sees two threads (gRPC
 * core wants batches on a call externally synchronised).
 *
 * A stream sees the config as its node does (cp_config_select: the global
 * resources overlaid by the NodeScopes its node id and cluster match, as
 * sent in its first request). Per stream and type URL the server keeps the
 * subscribed names, the last version and the last nonce sent, and the last
 * ACK and NACK (for GET /nodes). A request is answered when it is the
 * first for its type, when its names differ from the subscription, or when
 * the stream lacks the current version; an ACK of the current version gets
 * no answer, a NACK is logged and not answered, and a request whose
 * response_nonce is not the latest sent for its type is stale and ignored.
 */
#ifndef LEGATE_CONTROL_ADS_H
#define LEGATE_CONTROL_ADS_H

#include <stdio.h>

#include "config.h"
#include "xds/json.h"

struct cp_ads;

/** How the ADS port listens. */
struct cp_ads_listen {
    const char *address; /* "127.0.0.1:18000" */
    /* TLS when cert_path is set: the server's chain and key (PEM files),
     * and with client_ca_path client certificates are required and
     * verified against it (mTLS). The files are read again whenever they
     * change (checked at each new connection); a set that does not load is
     * logged and the one before keeps serving. Copied. */
    const char *cert_path;
    const char *key_path;
    const char *client_ca_path;
};

/**
 * Initialises gRPC, binds the address and starts serving cfg, which the
 * server then owns. reqlog (optional, borrowed) receives every request (see
 * reqlog.h). Returns 0 and *out, or -1 with a message in err (cfg is then
 * freed too).
 */
int cp_ads_start(const struct cp_ads_listen *l, struct cp_config *cfg, FILE *reqlog,
                 struct cp_ads **out, char *err, size_t errlen);

/** Handles completion-queue events for up to timeout_ms milliseconds (at
 *  least one wait; returns early after the first event). */
void cp_ads_poll(struct cp_ads *ads, int timeout_ms);

/** The config being served (owned by the server). */
const struct cp_config *cp_ads_config(const struct cp_ads *ads);

/**
 * Serves cfg from now on (the server owns it and frees the old one) and
 * pushes it to every open stream: each subscribed type whose resources, as
 * that stream selects them, differ from what it was last sent gets a new
 * response; the others are simply marked current.
 */
void cp_ads_update(struct cp_ads *ads, struct cp_config *cfg);

/**
 * Appends a JSON array of the open streams: node id and cluster, peer, and
 * per type subscribed the names (for RDS, EDS, SDS), the version last sent,
 * the version last ACKed and the last NACK with its error_detail.
 */
void cp_ads_nodes_json(const struct cp_ads *ads, struct xds_sb *b);

/** Stops accepting, cancels every stream, waits for gRPC to hand back every
 *  call, frees everything and shuts gRPC down. */
void cp_ads_stop(struct cp_ads *ads);

#endif
