/*
 * DiscoveryResponse bytes through the data plane's xDS handling
 * (dataplane/dynamic.c): decoding and validation of each resource,
 * references between them (LDS -> RDS/SDS, CDS -> EDS/SDS), building
 * listeners, route tables, clusters, endpoints and TLS contexts
 * (config_build.c, route.c, tls.c, the filters' config factories), warming,
 * NACKs, and what the host gets installed. State carries over between the
 * responses of one input and starts afresh with the next input.
 *
 * Input: one or more protobuf-encoded DiscoveryResponses separated by
 * SEPARATOR (a response whose bytes do not decode is skipped, as the ADS
 * transport would drop it).
 *
 * --allow-expired-certificates is on for inputs of odd length, so that both
 * sides of the SDS expiry check run.
 *
 * The fake host opens nothing; what it is given to install is checked the
 * way a worker would use it: every listener's filter chains matched, every
 * route table asked for a few requests.
 *
 * Resources may name files (DataSource.filename, access log paths): inputs
 * that mention device or kernel files, or an access logger (which would
 * create files), are skipped so that a run never blocks on /dev/stdin,
 * reads /dev/zero for ever or writes outside its directory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/config.h"
#include "dataplane/config_dump.h"
#include "dataplane/dynamic.h"
#include "dataplane/listener.h"
#include "dataplane/route.h"
#include "dataplane/tls.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "xds/convert.h"
#include "xds/log.h"

#define SEPARATOR "--xds--"

/* A static listener, cluster and secret that dynamic resources may collide
 * with or refer to. */
static const char bootstrap_yaml[] =
    "node: { id: fuzz, cluster: fuzz }\n"
    "dynamic_resources:\n"
    "  ads_config: { api_type: GRPC, transport_api_version: V3,\n"
    "                grpc_services: [{ envoy_grpc: { cluster_name: xds } }] }\n"
    "  lds_config: { ads: {}, resource_api_version: V3, initial_fetch_timeout: 5s }\n"
    "  cds_config: { ads: {}, resource_api_version: V3 }\n"
    "static_resources:\n"
    "  listeners:\n"
    "  - name: static\n"
    "    address: { socket_address: { address: 127.0.0.1, port_value: 9901 } }\n"
    "    filter_chains:\n"
    "    - filters:\n"
    "      - name: envoy.filters.network.http_connection_manager\n"
    "        typed_config:\n"
    "          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
    "          stat_prefix: static\n"
    "          route_config: { virtual_hosts: [{ name: all, domains: ['*'], routes: [{ match: { prefix: / }, direct_response: { status: 200 } }] }] }\n"
    "          http_filters: [{ name: envoy.filters.http.router, typed_config: { '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]\n"
    "  clusters:\n"
    "  - name: xds\n"
    "    type: STATIC\n"
    "    load_assignment:\n"
    "      cluster_name: xds\n"
    "      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 18000 } } } }] }]\n"
    "  secrets:\n"
    "  - name: static-ca\n"
    "    validation_context: { trusted_ca: { inline_string: 'not a certificate' } }\n";

static xds_bootstrap_t *bs;

static int host_listen_prepare(void *ud, const struct dp_listener *l, char *err, size_t errlen)
{
    /* One address that "cannot be opened", for the NACK path. */
    if (l->addr.ss_family == AF_INET && ((const struct sockaddr_in *)&l->addr)->sin_port == htons(1)) {
        snprintf(err, errlen, "listener \"%s\": cannot listen on %s: Permission denied", l->name, l->addr_str);
        return -1;
    }
    return 0;
}

static void use_routes(const struct dp_route_table *t)
{
    static const struct {
        const char *authority, *path;
    } reqs[] = {{"example.com", "/"}, {"api.example.org:8080", "/api/v1/x?y=1"}, {"", ""}, {"*", "*"}};
    struct dp_header hv[] = {{DP_STR_LIT("x-env"), DP_STR_LIT("canary")},
                             {DP_STR_LIT("content-type"), DP_STR_LIT("application/grpc")}};
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        struct dp_request_head req = {
            .method = DP_STR_LIT("GET"),
            .scheme = DP_STR_LIT("http"),
            .authority = {reqs[i].authority, strlen(reqs[i].authority)},
            .path = {reqs[i].path, strlen(reqs[i].path)},
            .headers = {.v = hv, .n = 2, .cap = 2},
            .content_length = -1,
            .version = DP_HTTP_11,
        };
        const struct dp_virtual_host *vh;
        const struct dp_route *r = dp_route_find(t, &req, &vh);
        if (r && r->action == DP_ROUTE_CLUSTER && r->cluster == NULL)
            abort();
    }
}

static void host_install(void *ud, struct dp_listener *const *ls, size_t nl, struct dp_cluster *const *cs,
                         size_t nc)
{
    static const char *const alpn[] = {"h2", "http/1.1"};
    for (size_t i = 0; i < nl; i++) {
        const struct dp_listener *l = ls[i];
        dp_listener_match(l, 443, "www.example.com", "tls", alpn, 2);
        dp_listener_match(l, 80, NULL, "raw_buffer", NULL, 0);
        for (size_t k = 0; k < l->n_chains; k++)
            if (l->chains[k].hcm && l->chains[k].hcm->routes)
                use_routes(l->chains[k].hcm->routes);
    }
    for (size_t i = 0; i < nc; i++)
        if (cs[i]->name == NULL || (cs[i]->endpoints && cs[i]->endpoints->n && cs[i]->endpoints->v == NULL))
            abort();
}

static const struct dp_dyn_host host = {
    .listen_prepare = host_listen_prepare,
    .install = host_install,
};

int LLVMFuzzerInitialize(int *argc, char ***argv);
/* /config_dump in Envoy's shape, with a mask and a resource, over what the
 * responses left. */
static void envoy_dump(void *arg, const struct dp_dump_view *v)
{
    static const char *const queries[] = {"include_eds", "resource=dynamic_listeners&mask=name,error_state",
                                          "mask=version_info,dynamic_active_clusters"};
    for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
        char *body = NULL;
        const char *ctype;
        dp_config_dump_envoy(arg, 0, v, queries[i], &body, &ctype);
        free(body);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[1024];
    const char *lvl = getenv("LEGATE_FUZZ_LOG");
    lg_set_level(lvl ? lg_level_parse(lvl) : LG_OFF);
    if (dp_tls_init() < 0)
        abort();
    ProtobufCMessage *m;
    if (xds_convert_text(bootstrap_yaml, sizeof(bootstrap_yaml) - 1, &envoy__config__bootstrap__v3__bootstrap__descriptor,
                         &m, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_xds: bootstrap: %s\n", err);
        abort();
    }
    bs = (xds_bootstrap_t *)m;
    return 0;
}

static int mentions(const uint8_t *data, size_t size, const char *s)
{
    return memmem(data, size, s, strlen(s)) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (mentions(data, size, "/dev/") || mentions(data, size, "/proc/") || mentions(data, size, "/sys/") ||
        mentions(data, size, "AccessLog"))
        return 0;
    struct dp_dyn *d = dp_dyn_new_offline(bs, NULL, size & 1, &host);
    if (d == NULL)
        return 0;
    const uint8_t *p = data, *end = data + size;
    while (p <= end) {
        const uint8_t *sep = memmem(p, (size_t)(end - p), SEPARATOR, strlen(SEPARATOR));
        const uint8_t *stop = sep ? sep : end;
        Envoy__Service__Discovery__V3__DiscoveryResponse *r =
            envoy__service__discovery__v3__discovery_response__unpack(NULL, (size_t)(stop - p), p);
        if (r) {
            dp_dyn_apply(d, r);
            envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);
        }
        if (sep == NULL)
            break;
        p = sep + strlen(SEPARATOR);
    }
    dp_dyn_ready(d);
    free(dp_dyn_config_dump(d));
    dp_dyn_dump_view(d, envoy_dump, (void *)bs);
    dp_dyn_stop(d);
    return 0;
}
