/*
 * The network filter API. A network filter author includes this header only.
 *
 * A listener's filter chain is a list of network filters ending in a
 * terminal one, as in Envoy: `filter_chains[].filters[]`. The terminal
 * filter owns the byte stream and speaks its protocol:
 * envoy.filters.network.http_connection_manager (dataplane/hcm.c) or
 * envoy.filters.network.tcp_proxy (filters/tcp_proxy/), both internal to the
 * data plane. The filters before it see the connection and its
 * bytes on their way: they may close the connection, or hold the bytes read
 * until they let them go on. connection_limit (filters/connection_limit/)
 * is one.
 *
 * A network filter is a `static const struct dp_net_filter_ops` registered
 * by its Envoy extension name in filters/registry.c. Its config is built
 * once from the typed_config (config_new), shared read-only by every
 * worker, and freed with the listener that uses it. Per connection the
 * data plane calls, in filter order:
 *   on_new_connection  once the connection's filter chain is known (at
 *                      accept; for a TLS listener with several chains, when
 *                      the ClientHello chose one);
 *   on_data            for each run of bytes read from the client, before
 *                      the terminal filter parses them;
 *   on_write           for each run of bytes about to be sent to the client;
 *   on_close           once, when the connection ends, for every filter
 *                      whose on_new_connection ran (release ctx resources).
 * Each hook gets the filter's config and its per-connection context
 * (ctx_size bytes, zeroed, freed with the connection).
 *
 * Filters observe bytes; they do not rewrite them (no filter needs it yet).
 * Everything runs on the connection's worker thread; a filter's config is
 * shared by every worker, so mutable state in it must be atomic.
 *
 * See docs/internals/filter-api.md.
 */
#ifndef LEGATE_DP_NETFILTER_H
#define LEGATE_DP_NETFILTER_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "dataplane/stats.h"

struct dp_net_session;

enum dp_net_status {
    /** Go on to the next filter. */
    DP_NET_CONTINUE = 0,
    /** From on_data: hold these bytes (and what follows) here; later
     *  filters and the terminal get nothing, and reading stops, until the
     *  filter calls dp_net_continue_reading(). From other hooks: as
     *  CONTINUE. */
    DP_NET_STOP_ITERATION = 1,
    /** Close the connection now (without sending what is queued); nothing
     *  after this filter runs. */
    DP_NET_CLOSE = 2,
};

/** What every hook gets. */
struct dp_net_call {
    const void *cfg;             /* the filter's config (config_new) */
    void *ctx;                   /* per-connection context, or NULL when ctx_size is 0 */
    struct dp_net_session *session;
};

/** What a network filter can know about its connection. */
struct dp_net_conn_info {
    uint64_t id;                 /* "C<id>" in the logs */
    const char *remote;          /* "address:port" of the client */
    const char *local;           /* the address it connected to (the original
                                    destination when redirected) */
    const char *listener;        /* the listener's name */
    const char *filter_chain;    /* the chain's name, or NULL */
    int tls;                     /* the connection is TLS */
};

struct dp_net_filter_ops {
    /** Envoy extension name, e.g. "envoy.filters.network.connection_limit". */
    const char *name;
    /** Type of typed_config (NULL: the filter takes none). */
    const ProtobufCMessageDescriptor *config_type;
    /** Builds the shared config from the unpacked typed_config. Returns the
     *  config, or NULL with a reason in err (the caller prefixes the field
     *  path, e.g. "filter_chains[0].filters[0].typed_config"; start the
     *  reason with the field it concerns: "max_connections: required").
     *  *disabled set to 1 means the config is valid and switches the filter
     *  off: it is left out of the chain (NULL returned, err untouched). */
    void *(*config_new)(const ProtobufCMessage *msg, int *disabled, char *err, size_t errlen);
    void (*config_free)(void *cfg);
    /** Bytes of per-connection context. */
    size_t ctx_size;

    /* Hooks; any may be NULL. */
    enum dp_net_status (*on_new_connection)(const struct dp_net_call *c);
    /** n bytes read from the client (end_stream: it sent EOF after them). */
    enum dp_net_status (*on_data)(const struct dp_net_call *c, const uint8_t *p, size_t n, int end_stream);
    /** n bytes about to be sent to the client. Only CONTINUE and CLOSE. */
    enum dp_net_status (*on_write)(const struct dp_net_call *c, const uint8_t *p, size_t n);
    void (*on_close)(const struct dp_net_call *c);
};

/* ---- what a network filter may call ------------------------------------ */

/** The connection the call is about. */
const struct dp_net_conn_info *dp_net_conn(const struct dp_net_call *c);
/** Lets bytes held by this filter's DP_NET_STOP_ITERATION go on to the
 *  filters after it and the terminal, and reading resume. Call it from a
 *  later event on the connection's worker (a timer, another connection). */
void dp_net_continue_reading(const struct dp_net_call *c);
/** Closes the connection (as DP_NET_CLOSE) from a later event. */
void dp_net_close(const struct dp_net_call *c);

typedef void (*dp_net_timer_cb)(const struct dp_net_call *c);
/** Calls cb(c) once, seconds from now, on the connection's worker: the
 *  later event from which a filter continues or closes. One timer per
 *  filter and connection: arming it again moves it. It never fires after
 *  the connection ended. Returns 0, or -1 when the connection has ended. */
int dp_net_timer(const struct dp_net_call *c, double seconds, dp_net_timer_cb cb);

#endif
