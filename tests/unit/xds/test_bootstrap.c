/* Bootstrap loading: the shipped examples load with the fields we expect,
 * and bootstrap-level rules reject what they must. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "xds/bootstrap.h"
#include "xds/unsupported.h"
#include "xds/convert.h"

static char err[1024];

static xds_bootstrap_t *load_example(const char *name)
{
    char path[512];
    xds_bootstrap_t *bs;
    snprintf(path, sizeof(path), "%s/docs/examples/%s", SOURCE_DIR, name);
    if (xds_bootstrap_load(path, &bs, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    return bs;
}

static void *unpack_any(const Google__Protobuf__Any *any, const ProtobufCMessageDescriptor *d)
{
    assert_non_null(any);
    const char *slash = strrchr(any->type_url, '/');
    assert_non_null(slash);
    assert_string_equal(slash + 1, d->name);
    void *m = protobuf_c_message_unpack(d, NULL, any->value.len, any->value.data);
    assert_non_null(m);
    return m;
}

static void test_static_mtls_example(void **state)
{
    xds_bootstrap_t *bs = load_example("static-mtls.yaml");
    assert_string_equal(bs->node->id, "edge-1");
    assert_int_equal(bs->admin->address->socket_address->port_value, 9901);
    assert_int_equal(bs->static_resources->n_listeners, 1);
    Envoy__Config__Listener__V3__Listener *l = bs->static_resources->listeners[0];
    assert_string_equal(l->name, "https");
    assert_int_equal(l->address->socket_address->port_value, 8443);
    Envoy__Config__Listener__V3__FilterChain *fc = l->filter_chains[0];
    assert_string_equal(fc->transport_socket->name, "envoy.transport_sockets.tls");

    Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext *dtc = unpack_any(
        fc->transport_socket->typed_config,
        &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor);
    assert_non_null(dtc->require_client_certificate);
    assert_true(dtc->require_client_certificate->value);
    Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *ctc = dtc->common_tls_context;
    assert_int_equal(ctc->n_alpn_protocols, 2);
    assert_string_equal(ctc->alpn_protocols[0], "h2");
    assert_string_equal(ctc->tls_certificates[0]->certificate_chain->filename, "certs/server.pem");
    assert_int_equal(ctc->validation_context->n_match_typed_subject_alt_names, 1);
    assert_string_equal(ctc->validation_context->match_typed_subject_alt_names[0]->matcher->prefix,
                        "spiffe://example.org/");
    protobuf_c_message_free_unpacked(&dtc->base, NULL);

    Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager *hcm =
        unpack_any(fc->filters[0]->typed_config,
                   &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor);
    assert_string_equal(hcm->stat_prefix, "ingress_https");
    assert_int_equal(hcm->forward_client_cert_details,
                     ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__FORWARD_CLIENT_CERT_DETAILS__SANITIZE_SET);
    assert_true(hcm->set_current_client_cert_details->uri);
    assert_int_equal(hcm->route_config->n_virtual_hosts, 1);
    assert_int_equal(hcm->route_config->virtual_hosts[0]->n_routes, 2);
    assert_int_equal(hcm->route_config->virtual_hosts[0]->routes[0]->direct_response->status, 200);
    assert_string_equal(hcm->route_config->virtual_hosts[0]->routes[1]->route->cluster, "backend");
    assert_true(hcm->route_config->virtual_hosts[0]->routes[1]->route->timeout->seconds == 15);
    protobuf_c_message_free_unpacked(&hcm->base, NULL);

    Envoy__Config__Cluster__V3__Cluster *c = bs->static_resources->clusters[0];
    assert_string_equal(c->name, "backend");
    assert_int_equal(c->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC);
    assert_int_equal(c->connect_timeout->seconds, 1);
    Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext *utc = unpack_any(
        c->transport_socket->typed_config,
        &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor);
    assert_string_equal(utc->sni, "backend.internal");
    assert_string_equal(utc->common_tls_context->tls_certificates[0]->private_key->filename,
                        "certs/upstream-client.key");
    protobuf_c_message_free_unpacked(&utc->base, NULL);
    xds_bootstrap_free(bs);
}

static void test_ads_example(void **state)
{
    xds_bootstrap_t *bs = load_example("ads.yaml");
    assert_string_equal(bs->node->cluster, "demo");
    assert_int_equal(bs->node->metadata->n_fields, 2);
    assert_non_null(bs->dynamic_resources->ads_config);
    assert_string_equal(bs->dynamic_resources->ads_config->grpc_services[0]->envoy_grpc->cluster_name,
                        "xds_cluster");
    assert_int_equal(bs->static_resources->clusters[0]->n_typed_extension_protocol_options, 1);
    assert_string_equal(bs->static_resources->clusters[0]->typed_extension_protocol_options[0]->key,
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    xds_bootstrap_free(bs);
}

static void test_json_example_camel_case(void **state)
{
    xds_bootstrap_t *bs = load_example("sni-gateway.json");
    assert_int_equal(bs->static_resources->n_secrets, 3);
    assert_string_equal(bs->static_resources->secrets[2]->name, "partner-ca");
    Envoy__Config__Listener__V3__Listener *l = bs->static_resources->listeners[0];
    assert_int_equal(l->n_filter_chains, 2);
    assert_int_equal(l->filter_chains[0]->filter_chain_match->n_server_names, 2);
    assert_string_equal(l->filter_chains[0]->filter_chain_match->server_names[1],
                        "*.shop.example.com");
    xds_bootstrap_free(bs);
}

static int check_text(const char *yaml)
{
    ProtobufCMessage *m;
    if (xds_convert_text(yaml, strlen(yaml), &envoy__config__bootstrap__v3__bootstrap__descriptor, &m,
                         err, sizeof(err)) != 0)
        fail_msg("convert: %s", err);
    int rc = xds_bootstrap_check((xds_bootstrap_t *)m, err, sizeof(err));
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

static void test_check_rules(void **state)
{
    assert_int_equal(check_text("admin: {address: {socket_address: {address: 127.0.0.1}}}"), -1);
    assert_string_equal(err, "admin.address.socket_address.port_value: required field is missing");
    assert_int_equal(check_text("admin: {address: {pipe: {path: /tmp/a}}}"), -1);
    assert_string_equal(err, "admin.address: only socket_address is supported");
    assert_int_equal(check_text("admin: {address: {socket_address: {address: a, port_value: 70000}}}"), -1);
    assert_string_equal(err, "admin.address.socket_address.port_value: 70000 is not a port number");
    assert_int_equal(check_text("static_resources: {listeners: [{name: a, address: {socket_address: "
                                "{address: 0.0.0.0, port_value: 1}}}]}"),
                     -1);
    assert_string_equal(err, "static_resources.listeners[0].filter_chains: a listener needs at least "
                             "one filter chain or a default_filter_chain");
    assert_int_equal(check_text("node: {id: a}\ndynamic_resources: {lds_config: {path: /x}}"), -1);
    assert_string_equal(err, "dynamic_resources.lds_config: only \"ads: {}\" is supported");
    assert_int_equal(check_text("node: {id: a}\ndynamic_resources: {ads_config: {api_type: REST, "
                                "transport_api_version: V3}}"),
                     -1);
    assert_string_equal(err, "dynamic_resources.ads_config.api_type: only GRPC is supported");
    assert_int_equal(check_text("node: {id: a}\nstatic_resources: {secrets: [{name: s}, {name: s}]}"),
                     -1);
    assert_string_equal(err, "static_resources.secrets[1].name: duplicate secret name \"s\"");
    assert_int_equal(check_text("node: {id: a}"), 0);
}

/* A listener without a name is named after its address, as Envoy names
 * one (Envoy's front-proxy example has two such). */
static void test_unnamed_listener(void **state)
{
    (void)state;
    char path[] = "/tmp/legate-test-bootstrap-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *yaml = "static_resources:\n  listeners:\n"
                       "  - address: {socket_address: {address: 0.0.0.0, port_value: 8080}}\n"
                       "    filter_chains: [{filters: []}]\n"
                       "  - name: named\n"
                       "    address: {socket_address: {address: 0.0.0.0, port_value: 8443}}\n"
                       "    filter_chains: [{filters: []}]\n";
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    xds_bootstrap_t *bs = NULL;
    int rc = xds_bootstrap_load(path, &bs, err, sizeof(err));
    unlink(path);
    if (rc != 0)
        fail_msg("%s", err);
    assert_string_equal(bs->static_resources->listeners[0]->name, "0.0.0.0_8080");
    assert_string_equal(bs->static_resources->listeners[1]->name, "named");
    xds_bootstrap_free(bs);
}

static void test_unsupported_fields(void **state)
{
    (void)state;
#define HCM_AT "static_resources: {listeners: [{name: l, address: {socket_address: {address: 127.0.0.1, " \
               "port_value: 1}}, filter_chains: [{filters: [{name: h, typed_config: {\"@type\": " \
               "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
               "HttpConnectionManager, stat_prefix: s, "
#define HCM_PATH "static_resources.listeners[0].filter_chains[0].filters[0].typed_config."
    assert_int_equal(xds_unsupported_unresolved(), 0); /* every rule names a real field */
    /* a BoolValue: false is Envoy's default, true is refused */
    assert_int_equal(check_text(HCM_AT "add_user_agent: false}}]}]}]}"), 0);
    assert_int_equal(check_text(HCM_AT "add_user_agent: true}}]}]}]}"), -1);
    assert_string_equal(err, HCM_PATH "add_user_agent: not supported");
    /* a scalar */
    assert_int_equal(check_text(HCM_AT "xff_num_trusted_hops: 0}}]}]}]}"), 0);
    assert_int_equal(check_text(HCM_AT "xff_num_trusted_hops: 2}}]}]}]}"), -1);
    assert_string_equal(err, HCM_PATH "xff_num_trusted_hops: not supported");
    assert_int_equal(check_text(HCM_AT "normalize_path: true, merge_slashes: true}}]}]}]}"), 0);
    /* every path_with_escaped_slashes_action is honoured now */
    assert_int_equal(check_text(HCM_AT "path_with_escaped_slashes_action: KEEP_UNCHANGED}}]}]}]}"), 0);
    assert_int_equal(check_text(HCM_AT "path_with_escaped_slashes_action: REJECT_REQUEST}}]}]}]}"), 0);
    assert_int_equal(check_text(HCM_AT "path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT}}]}]}]}"), 0);
    /* an enum: the value legate behaves as is accepted, another refused */
#define PROTO_AT(p) "static_resources: {listeners: [{name: l, address: {socket_address: {address: 127.0.0.1, " \
                   "port_value: 1, protocol: " p "}}, filter_chains: [{filters: [{name: h, typed_config: {\"@type\": " \
                   "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
                   "HttpConnectionManager, stat_prefix: s}}]}]}]}"
    if (check_text(PROTO_AT("TCP")) != 0)
        fail_msg("protocol: TCP refused: %s", err);
    assert_int_equal(check_text(PROTO_AT("UDP")), -1);
    assert_string_equal(err, "static_resources.listeners[0].address.socket_address.protocol: only TCP is supported");
    /* deeper, and inside a repeated field */
    assert_int_equal(check_text(HCM_AT "http2_protocol_options: {max_concurrent_streams: 10, "
                                       "connection_keepalive: {interval: 1s, timeout: 1s}}}}]}]}]}"),
                     -1);
    assert_string_equal(err, HCM_PATH "http2_protocol_options.connection_keepalive: HTTP/2 PING keepalive "
                                      "is not supported");
    assert_int_equal(check_text(HCM_AT "route_config: {virtual_hosts: [{name: a, domains: [a]}, {name: b, "
                                       "domains: [b], routes: [{match: {prefix: /}, route: {cluster: c, "
                                       "retry_policy: {num_retries: 2}}}]}]}}}]}]}]}"),
                     -1);
    assert_string_equal(err, HCM_PATH "route_config.virtual_hosts[1].routes[0].route.retry_policy.num_retries: "
                                      "retries are not supported");
    /* a map entry shows under its key */
    assert_int_equal(
        check_text("static_resources: {clusters: [{name: c, typed_extension_protocol_options: "
                   "{envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {\"@type\": "
                   "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, "
                   "explicit_http_config: {http2_protocol_options: {max_outbound_frames: 10}}}}}]}"),
        -1);
    assert_string_equal(err, "static_resources.clusters[0].typed_extension_protocol_options[\"envoy."
                             "extensions.upstreams.http.v3.HttpProtocolOptions\"].explicit_http_config."
                             "http2_protocol_options.max_outbound_frames: not supported (nghttp2's own "
                             "flood limits apply)");
    /* a ConfigSource other than ADS, wherever it is */
    assert_int_equal(check_text(HCM_AT "rds: {route_config_name: r, config_source: {ads: {}}}}}]}]}]}"), 0);
    assert_int_equal(check_text(HCM_AT "rds: {route_config_name: r, config_source: {self: {}}}}}]}]}]}"), 0);
    assert_int_equal(check_text(HCM_AT "rds: {route_config_name: r, config_source: {path: /x}}}}]}]}]}"), -1);
    assert_string_equal(err, HCM_PATH "rds.config_source: only \"ads: {}\" (or \"self: {}\") is supported");
    /* a BoolValue whose default is true: false is refused */
    assert_int_equal(check_text("static_resources: {listeners: [{name: l, enable_reuse_port: true, address: "
                                "{socket_address: {address: 127.0.0.1, port_value: 1}}, filter_chains: "
                                "[{filters: [{name: x}]}]}]}"),
                     0);
    assert_int_equal(check_text("static_resources: {listeners: [{name: l, enable_reuse_port: false, address: "
                                "{socket_address: {address: 127.0.0.1, port_value: 1}}, filter_chains: "
                                "[{filters: [{name: x}]}]}]}"),
                     -1);
    assert_string_equal(err, "static_resources.listeners[0].enable_reuse_port: legate's workers always "
                             "share the port with SO_REUSEPORT");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_static_mtls_example),
        cmocka_unit_test(test_ads_example),
        cmocka_unit_test(test_json_example_camel_case),
        cmocka_unit_test(test_check_rules),
        cmocka_unit_test(test_unsupported_fields),
        cmocka_unit_test(test_unnamed_listener),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
