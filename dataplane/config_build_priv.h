/*
 * What the config builders share (config_build.c, hcm_build.c,
 * listener_build.c, cluster_build.c); not for other callers: they use
 * config_build.h.
 */
#ifndef LEGATE_DP_CONFIG_BUILD_PRIV_H
#define LEGATE_DP_CONFIG_BUILD_PRIV_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/config_build.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "xds/cfgerr.h"

#define TLS_SOCKET "envoy.transport_sockets.tls"
#define RAW_SOCKET "envoy.transport_sockets.raw_buffer"

#define DEFAULT_BUFFER_LIMIT (1024 * 1024)

static inline char *xstrdup(const char *s)
{
    return strdup(s ? s : "");
}

static inline double dur(const Google__Protobuf__Duration *d, double dflt)
{
    return d ? (double)d->seconds + (double)d->nanos / 1e9 : dflt;
}

static inline uint32_t u32v(const Google__Protobuf__UInt32Value *v, uint32_t dflt)
{
    return v ? v->value : dflt;
}

/** Unpacks an Any that must hold a want; NULL with "path: reason" in e. */
ProtobufCMessage *dp_build_unpack_any(const Google__Protobuf__Any *a, const ProtobufCMessageDescriptor *want,
                                      const char *path, struct xds_cfgerr *e);

/** "1.2.3.4:80" or "[::1]:80" (malloc'd; NULL when out of memory). */
char *dp_build_format_addr(const char *ip, unsigned port);

/** Checks that a is a TCP socket address with an address and a port;
 *  *out is its socket_address. 0, or -1 with "path...: reason" in e. */
int dp_build_socket_address(const Envoy__Config__Core__V3__Address *a, const char *path,
                            const Envoy__Config__Core__V3__SocketAddress **out, struct xds_cfgerr *e);

/** The HttpConnectionManager in tc (path names tc's field): NULL with the
 *  reason in e. Free with dp_hcm_cfg_free. */
struct dp_hcm_cfg *dp_hcm_cfg_build(const Google__Protobuf__Any *tc, const struct dp_build_ctx *ctx,
                                    const char *path, struct xds_cfgerr *e);
void dp_hcm_cfg_free(struct dp_hcm_cfg *h);

#endif
