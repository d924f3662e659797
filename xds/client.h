/*
 * The xDS client's protocol side, on top of the ADS transport (xds/ads.c):
 * the five resource types, the per-type state (xds/state.h), the node, the
 * requests (subscriptions, ACK with the version and nonce held, NACK with
 * the previous version and an error_detail), what a new stream re-sends,
 * the initial fetch timeouts, and the ADS target and credentials taken from
 * the bootstrap.
 *
 * A response is handled by xds/response.c; what the resources turn into
 * (listeners, clusters) is the owner's business (dataplane/dynamic.c). Everything here runs on the ADS thread;
 * the owner publishes what admin readers may see.
 */
#ifndef LEGATE_XDS_CLIENT_H
#define LEGATE_XDS_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "xds/ads.h"
#include "xds/bootstrap.h"
#include "xds/state.h"

enum xds_type { XDS_CDS, XDS_EDS, XDS_LDS, XDS_RDS, XDS_SDS, XDS_T_N };

extern const char *const xds_type_urls[XDS_T_N];
/* "cluster", "endpoints", "listener", "route configuration", "secret" */
extern const char *const xds_type_names[XDS_T_N];
/* "CDS", ... */
extern const char *const xds_type_short[XDS_T_N];

/* The type of a type URL, or -1. */
int xds_type_of(const char *url);
/* LDS and CDS: wildcard subscriptions, state of the world in full. */
int xds_type_wildcard(int type);

/* The name of a decoded resource of type (a ClusterLoadAssignment's
 * cluster_name, the others' name). */
const char *xds_resource_name(int type, const ProtobufCMessage *m);

/* What a NACK says: "; "-separated messages, cut at the buffer's end. */
struct xds_errs {
    char buf[4096];
    size_t len;
    int n;
};
__attribute__((format(printf, 2, 3))) void xds_errs_add(struct xds_errs *e, const char *fmt, ...);

/* The version as a number for the version gauge: its value when it is one,
 * else a hash (as Envoy does). */
int64_t xds_version_number(const char *v);

struct xds_client {
    struct xds_ads *ads;         /* atomic; NULL when offline */
    Envoy__Config__Core__V3__Node node;
    struct xds_type_state t[XDS_T_N];
    double fetch_timeout;        /* initial_fetch_timeout, seconds */
    /* When set, sees every request xds_client_send builds, offline too
     * (tests: the ACK or NACK a response led to). */
    void (*on_request)(void *ud, const Envoy__Service__Discovery__V3__DiscoveryRequest *req);
    void *on_request_ud;
};

/* Node (with legate's user agent) and initial fetch timeout from bs. */
void xds_client_init(struct xds_client *c, const xds_bootstrap_t *bs);
void xds_client_free(struct xds_client *c);

/* The ADS target, backoff and credentials from the static cluster that
 * bs->dynamic_resources->ads_config names. 0, or -1 with err. Free the
 * strings with xds_client_ads_config_free, either way. */
int xds_client_ads_config(const xds_bootstrap_t *bs, struct xds_ads_config *cfg, char *target, size_t tlen,
                          char *err, size_t errlen);
void xds_client_ads_config_free(struct xds_ads_config *cfg);

/* The request of type with the version and nonce held: an ACK (or a new
 * subscription) when error is NULL, else a NACK saying error. The node goes
 * with the first request of each type on a stream. Dropped when offline. */
void xds_client_send(struct xds_client *c, int type, const char *error);

/* A new stream a: forgets the nonces and re-sends, in Envoy's order
 * (clusters first, then listeners), every subscription with the versions
 * held, so that a restarted control plane knows what we have. */
void xds_client_stream_up(struct xds_client *c, struct xds_ads *a);

/* Initial fetch timeouts due at now: wildcard types with no response, and
 * subscribed names that have not arrived, are given up on (with a
 * warning). 1 when anything was. */
int xds_client_expire(struct xds_client *c, double now);

#endif
