/*
 * The compiled, immutable configuration the workers run on.
 *
 * Everything here is built once from the protobuf resources (static
 * bootstrap or xDS) on the main/xDS thread, then only read. Objects that
 * xDS can replace one at a time (listeners, clusters, route tables, TLS
 * contexts) are reference counted with atomics; the counts move when a
 * snapshot is built or dropped, never per request: a worker pins a whole
 * snapshot once and streams pin the worker's pin (see worker.h).
 */
#ifndef LEGATE_DP_CONFIG_H
#define LEGATE_DP_CONFIG_H

#include "dataplane/stats.h"

#include <netinet/in.h>
#include <regex.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "dataplane/http.h"
#include "dataplane/matcher.h"

struct dp_tls_server;
struct dp_tls_client;
struct dp_filter_ops;

/* ---- routes ----------------------------------------------------------- */

struct dp_header_matcher {
    struct dp_str name; /* lowercase; ":method", ":path", ... for pseudo-headers */
    struct dp_string_matcher m;
    int invert;
    int present;        /* for DP_MATCH_PRESENT: must the header be present? */
    int missing_as_empty; /* treat_missing_header_as_empty */
};

enum dp_route_action_kind {
    DP_ROUTE_CLUSTER,
    DP_ROUTE_DIRECT_RESPONSE,
    DP_ROUTE_REDIRECT,
};

struct dp_header_mutation {
    struct dp_str name;
    struct dp_str value;
    int append; /* append vs overwrite */
};

/* An upgrade_configs entry (the connection manager's, or a route's). */
struct dp_upgrade_cfg {
    char *type;            /* lowercase: "websocket", "connect", ... */
    int enabled;
    int terminate_connect; /* route: connect_config set: CONNECT ends here, raw TCP upstream */
};

struct dp_route {
    char *name;
    /* match */
    enum dp_match_kind path_kind; /* EXACT (path), PREFIX (prefix), REGEX (safe_regex) */
    char *path;
    size_t path_len;
    regex_t path_re;
    int has_path_re;
    int case_insensitive;
    struct dp_header_matcher *headers;
    size_t n_headers;
    int grpc;                   /* match.grpc: content-type application/grpc only */
    int connect_match;          /* match.connect_matcher: CONNECT requests only */
    /* action */
    enum dp_route_action_kind action;
    char *cluster;              /* DP_ROUTE_CLUSTER */
    int cluster_not_found;      /* the status when the cluster does not exist (503) */
    double timeout;             /* seconds; 0 disables; default 15 */
    double idle_timeout;
    double max_stream_duration; /* max_stream_duration.max_stream_duration; 0 unset */
    double grpc_timeout_max;    /* ...grpc_timeout_header_max; -1 unset, 0 no cap */
    double grpc_timeout_offset; /* ...grpc_timeout_header_offset */
    int has_max_stream_duration;
    struct dp_upgrade_cfg *upgrades; /* overrides the connection manager's, per type */
    size_t n_upgrades;
    char *prefix_rewrite;       /* NULL when unset */
    char *host_rewrite;
    int direct_status;          /* DP_ROUTE_DIRECT_RESPONSE / REDIRECT */
    char *direct_body;
    size_t direct_body_len;
    char *redirect_scheme;      /* DP_ROUTE_REDIRECT: NULL keeps the request's */
    char *redirect_host;
    char *redirect_path;
    int redirect_strip_query;
    struct dp_header_mutation *req_add;
    size_t n_req_add;
    char **req_remove;
    size_t n_req_remove;
    struct dp_header_mutation *resp_add;
    size_t n_resp_add;
    char **resp_remove;
    size_t n_resp_remove;
    /* per-route filter configs: parallel to the HCM's filter list, NULL
     * where the route does not override */
    void **filter_cfg;
    size_t n_filter_cfg;
};

struct dp_virtual_host {
    char *name;
    char **domains; /* lowercase; "*", "*.suffix", "prefix.*" or exact */
    size_t n_domains;
    struct dp_route *routes;
    size_t n_routes;
    struct dp_header_mutation *req_add;
    size_t n_req_add;
    struct dp_header_mutation *resp_add;
    size_t n_resp_add;
};

struct dp_route_table {
    int refs; /* atomic */
    char *name;
    struct dp_virtual_host *vhosts;
    size_t n_vhosts;
    struct dp_header_mutation *resp_add;
    size_t n_resp_add;
    char **resp_remove;
    size_t n_resp_remove;
};

/* ---- HTTP connection manager ------------------------------------------ */

enum dp_codec_type {
    DP_CODEC_AUTO = 0,
    DP_CODEC_HTTP1 = 1,
    DP_CODEC_HTTP2 = 2,
};

enum dp_xfcc_mode {
    DP_XFCC_SANITIZE = 0,
    DP_XFCC_FORWARD_ONLY,
    DP_XFCC_APPEND_FORWARD,
    DP_XFCC_SANITIZE_SET,
    DP_XFCC_ALWAYS_FORWARD_ONLY,
};

#define DP_XFCC_F_SUBJECT 0x01
#define DP_XFCC_F_URI 0x02
#define DP_XFCC_F_DNS 0x04
#define DP_XFCC_F_CERT 0x08
#define DP_XFCC_F_CHAIN 0x10

struct dp_http_filter {
    const struct dp_filter_ops *ops;
    char *name;
    void *cfg; /* built by ops->config_new */
};

/* server_header_transformation */
enum dp_server_header {
    DP_SERVER_OVERWRITE,
    DP_SERVER_APPEND_IF_ABSENT,
    DP_SERVER_PASS_THROUGH,
};

/* HttpConnectionManager.path_with_escaped_slashes_action (Envoy's values). */
enum dp_escaped_slashes {
    DP_SLASHES_KEEP = 0,           /* IMPLEMENTATION_SPECIFIC_DEFAULT, KEEP_UNCHANGED */
    DP_SLASHES_REJECT,             /* REJECT_REQUEST: 400 */
    DP_SLASHES_UNESCAPE_REDIRECT,  /* UNESCAPE_AND_REDIRECT: 307 to the unescaped path */
    DP_SLASHES_UNESCAPE_FORWARD,   /* UNESCAPE_AND_FORWARD */
};

struct dp_hcm_cfg {
    char *stat_prefix;
    struct {                        /* http.<stat_prefix>.* */
        dp_stat_t rq_total, rq_xx[5], rq_time;
        dp_stat_t rq_failed_path_normalization, rq_redirected_with_normalized_path;
        dp_stat_t cx_protocol_error; /* a malformed request: 400 and close */
        dp_stat_t rq_overload_close; /* 503: the overload manager stops requests */
    } st;
    struct dp_access_log **access_logs;
    size_t n_access_logs;
    enum dp_codec_type codec;
    char *rds_name;                 /* NULL with an inline route_config */
    struct dp_route_table *routes;  /* inline, or resolved RDS */
    struct dp_http_filter *filters; /* in order; the router is last */
    size_t n_filters;
    enum dp_xfcc_mode xfcc;
    unsigned xfcc_fields;           /* DP_XFCC_F_* */
    int use_remote_address;
    int skip_xff_append;
    int normalize_path;             /* RFC 3986 normalization of :path before routing */
    enum dp_server_header server_header;
    char *via;                      /* appended to requests and responses, or NULL */
    char *scheme_overwrite;         /* scheme_header_transformation.scheme_to_overwrite, or NULL */
    struct dp_local_reply *local_reply; /* local_reply_config, or NULL */
    int merge_slashes;
    enum dp_escaped_slashes escaped_slashes; /* path_with_escaped_slashes_action */
    int generate_request_id;
    int preserve_external_request_id;
    int always_set_request_id_in_response;
    char *server_name;              /* "server" header on local replies; default "legate" */
    uint32_t max_request_headers_kb;  /* default 60 */
    uint32_t max_headers_count;     /* default 100 */
    double request_headers_timeout; /* seconds; default 10 (slowloris) */
    double request_timeout;         /* whole request; 0 = off */
    double stream_idle_timeout;     /* default 300 */
    double idle_timeout;            /* connection idle; default 3600 */
    double drain_timeout;           /* default 5 */
    uint32_t h2_max_concurrent_streams; /* default 100 */
    uint32_t h2_hpack_table_size;       /* default 4096 */
    uint32_t h2_initial_stream_window;
    uint32_t h2_initial_connection_window;
    int proxy_100_continue;
    int h1_enable_trailers;         /* http_protocol_options.enable_trailers */
    int h2_allow_connect;           /* http2_protocol_options.allow_connect (RFC 8441) */
    double max_stream_duration;     /* common_http_protocol_options; 0 = off */
    struct dp_upgrade_cfg *upgrades; /* upgrade_configs */
    size_t n_upgrades;
};

/* ---- listeners -------------------------------------------------------- */

struct dp_net_filter_inst; /* dataplane/net_chain.h */
struct dp_tcp_proxy_cfg;   /* filters/tcp_proxy/tcp_proxy.h */

struct dp_filter_chain {
    char *name;
    /* filter_chain_match */
    uint32_t destination_port;  /* 0: any */
    char **server_names;        /* lowercase; exact or "*.suffix" */
    size_t n_server_names;
    char *transport_protocol;   /* NULL, "tls" or "raw_buffer" */
    char **application_protocols;
    size_t n_application_protocols;
    /* what it does */
    struct dp_tls_server *tls;  /* NULL: plaintext */
    /* the terminal network filter: one of */
    struct dp_hcm_cfg *hcm;     /* the HTTP connection manager */
    struct dp_tcp_proxy_cfg *tcp_proxy; /* tcp_proxy (filters/tcp_proxy/) */
    /* network filters before the terminal one */
    struct dp_net_filter_inst *net_filters;
    size_t n_net_filters;
};

struct dp_listener {
    int refs; /* atomic */
    char *name;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *addr_str;             /* "0.0.0.0:8443" for logs and stats */
    struct dp_filter_chain *chains;
    size_t n_chains;
    struct dp_filter_chain *default_chain; /* NULL when none */
    int needs_inspection;       /* some chain matches on SNI/ALPN/transport */
    uint32_t per_connection_buffer_limit; /* default 1 MiB */
    double listener_filters_timeout;      /* default 15 */
    uint64_t hash;              /* of the source proto; unchanged -> same object */
    int original_dst;           /* envoy.filters.listener.original_dst */
    int use_original_dst;       /* hand connections to the listener of their original destination */
    int freebind;               /* IP_FREEBIND: bind to an address not (yet) on the host */
    int ipv4_compat;            /* an IPv6 address that takes IPv4 connections too */
    struct {                    /* listener.<address>.* */
        dp_stat_t cx_total, cx_active, ssl_handshake, ssl_session_reused, ssl_no_cert, ssl_verify_error,
            ssl_verify_san, ssl_connection_error;
        dp_stat_t cx_global_overflow; /* closed at accept: the overload manager's connection limit */
        dp_stat_t cx_overflow;        /* closed at accept: connection_limit (runtime) */
    } st;
    uint64_t connection_limit;  /* runtime envoy.resource_limits.listener.<name>.connection_limit (0: none) */
    int64_t cx_open;            /* atomic: its connections now, every worker (written through a cast) */
};

/* ---- clusters --------------------------------------------------------- */

enum dp_lb_policy {
    DP_LB_ROUND_ROBIN = 0,
    DP_LB_LEAST_REQUEST,
    DP_LB_RANDOM,
};

enum dp_cluster_type {
    DP_CLUSTER_STATIC = 0,
    DP_CLUSTER_STRICT_DNS,
    DP_CLUSTER_EDS,
    DP_CLUSTER_ORIGINAL_DST,    /* the downstream connection's original destination */
};

struct dp_endpoint {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *addr_str;     /* "127.0.0.1:9443" */
    char *hostname;     /* for STRICT_DNS: the name it came from */
    uint32_t weight;
    int healthy;
};

struct dp_endpoint_set {
    int refs; /* atomic */
    struct dp_endpoint *v;
    size_t n;
};

struct dp_dns_target {
    char *host;
    uint16_t port;
    uint32_t weight;
};

/* cluster.<name>.* */
struct dp_cluster_stats {
    dp_stat_t cx_total, cx_active, cx_connect_fail, cx_connect_timeout, rq_total, rq_xx[5], rq_time, rq_timeout,
        rq_pending_overflow;
};

/* STRICT_DNS: which addresses of a name (Cluster.dns_lookup_family). */
enum dp_dns_family {
    DP_DNS_ALL,          /* AUTO, ALL: every address */
    DP_DNS_V4_ONLY,
    DP_DNS_V6_ONLY,
    DP_DNS_V4_PREFERRED, /* the IPv4 ones if there are any, else the IPv6 ones */
};

struct dp_cluster {
    int refs; /* atomic */
    char *name;
    enum dp_cluster_type type;
    enum dp_lb_policy lb;
    uint32_t least_request_choices; /* default 2 */
    double connect_timeout;         /* default 5 s */
    int http2;                      /* upstream speaks HTTP/2 */
    uint32_t h2_hpack_table_size; /* default 4096 */
    uint32_t h2_max_concurrent_streams; /* streams per connection; more wait */
    uint32_t h2_initial_stream_window;  /* default 1 MiB */
    uint32_t h2_initial_connection_window; /* default 16 MiB */
    int h1_enable_trailers;         /* http_protocol_options.enable_trailers */
    struct dp_tls_client *tls;      /* NULL: plaintext */
    char *eds_service_name;         /* EDS: name to subscribe to */
    struct dp_dns_target *dns;      /* STRICT_DNS: what to resolve */
    int logical_dns;                /* LOGICAL_DNS: one name, its first address */
    size_t n_dns;
    double dns_refresh_rate;        /* default 5 s */
    enum dp_dns_family dns_family;  /* dns_lookup_family */
    struct dp_endpoint_set *endpoints; /* NULL until known (EDS, DNS) */
    uint32_t per_connection_buffer_limit;
    uint32_t max_connections;       /* circuit breakers; default 1024 each */
    uint32_t max_pending_requests;
    uint32_t max_requests;
    uint32_t max_requests_per_connection; /* 0: unlimited */
    double idle_timeout;            /* upstream connection idle; default 3600 */
    uint64_t hash;
    struct dp_cluster_stats st;
};

/* ---- lifetime --------------------------------------------------------- */

void dp_route_table_ref(struct dp_route_table *t);
void dp_route_table_unref(struct dp_route_table *t);
void dp_listener_ref(struct dp_listener *l);
void dp_listener_unref(struct dp_listener *l);
void dp_cluster_ref(struct dp_cluster *c);
void dp_cluster_unref(struct dp_cluster *c);
void dp_endpoint_set_ref(struct dp_endpoint_set *e);
void dp_endpoint_set_unref(struct dp_endpoint_set *e);

#endif
