/*
 * The ADS transport: one gRPC bidirectional stream of DiscoveryRequest /
 * DiscoveryResponse to the control plane, on the gRPC core C API, driven by
 * one thread of its own (every gRPC batch is issued from it).
 *
 * The thread reconnects with jittered exponential backoff when the stream
 * fails. The owner's callbacks (struct xds_ads_ops) all run on that thread;
 * xds_ads_send may only be called from them.
 */
#ifndef LEGATE_XDS_ADS_H
#define LEGATE_XDS_ADS_H

#include "envoy/service/discovery/v3/discovery.pb-c.h"

struct xds_ads;

struct xds_ads_config {
    const char *target;          /* "127.0.0.1:18000" or "[::1]:18000" */
    const char *authority;       /* :authority, or NULL for the target */
    /* TLS to the control plane when root_pem is set; client certificate
     * when cert_pem/key_pem are too. NUL-terminated PEM. */
    const char *root_pem;
    const char *cert_pem;
    const char *key_pem;
    const char *sni;             /* server name to verify, or NULL */
    double backoff_base;         /* seconds; default 0.5 */
    double backoff_max;          /* seconds; default 30 */
};

struct xds_ads_ops {
    /** A new stream is open: send the initial requests. */
    void (*stream_up)(void *ud, struct xds_ads *a);
    /** A response arrived (r is freed after the call). */
    void (*response)(void *ud, struct xds_ads *a,
                     const Envoy__Service__Discovery__V3__DiscoveryResponse *r);
    /** The stream ended; a new one follows after the backoff. */
    void (*stream_down)(void *ud, struct xds_ads *a, const char *why);
    /** Called at least every `returned` seconds (timers of the owner). */
    double (*tick)(void *ud, struct xds_ads *a);
};

/** Starts the thread. Copies cfg. Returns NULL on failure. */
struct xds_ads *xds_ads_start(const struct xds_ads_config *cfg, const struct xds_ads_ops *ops,
                              void *ud);

/** Queues a request on the current stream (from an ops callback only).
 *  Returns 0, or -1 when no stream is up (the request is dropped: the
 *  owner re-sends its state from stream_up). */
int xds_ads_send(struct xds_ads *a, const Envoy__Service__Discovery__V3__DiscoveryRequest *req);

/** Stops the thread (any thread but the ADS one), waits for it, frees. */
void xds_ads_stop(struct xds_ads *a);

/** Seconds of a monotonic clock, for the owner's timers. */
double xds_now(void);

#endif
