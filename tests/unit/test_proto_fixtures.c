/* Bytes encoded by protoc from the canonical Envoy v3 protos
 * (tests/fixtures/proto/regen.sh) decode with legate's trimmed protos, and
 * every field legate relies on comes through. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "xds/convert.h"

static ProtobufCMessage *load(const char *name, const ProtobufCMessageDescriptor *d)
{
    char path[512];
    size_t len;
    snprintf(path, sizeof(path), "%s/%s", FIXTURE_DIR, name);
    char *bytes = xds_read_file(path, &len);
    assert_non_null(bytes);
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, (const uint8_t *)bytes);
    free(bytes);
    assert_non_null(m);
    return m;
}

static void *unpack_any(const Google__Protobuf__Any *a, const ProtobufCMessageDescriptor *d)
{
    assert_non_null(a);
    char want[256];
    snprintf(want, sizeof(want), "type.googleapis.com/%s", d->name);
    assert_string_equal(a->type_url, want);
    void *m = protobuf_c_message_unpack(d, NULL, a->value.len, a->value.data);
    assert_non_null(m);
    return m;
}

static void test_bootstrap(void **state)
{
    Envoy__Config__Bootstrap__V3__Bootstrap *b =
        (void *)load("bootstrap.bin", &envoy__config__bootstrap__v3__bootstrap__descriptor);
    assert_string_equal(b->node->id, "edge-1");
    assert_string_equal(b->node->cluster, "edge");
    assert_string_equal(b->node->metadata->fields[0]->key, "team");
    assert_string_equal(b->node->metadata->fields[0]->value->string_value, "payments");
    assert_string_equal(b->node->locality->region, "eu-west");
    assert_string_equal(b->node->user_agent_name, "legate");
    assert_int_equal(b->admin->address->socket_address->port_value, 9901);

    Envoy__Config__Listener__V3__Listener *l = b->static_resources->listeners[0];
    assert_string_equal(l->name, "https");
    assert_string_equal(l->address->socket_address->address, "0.0.0.0");
    assert_int_equal(l->per_connection_buffer_limit_bytes->value, 65536);
    assert_int_equal(l->listener_filters_timeout->seconds, 5);
    Envoy__Config__Listener__V3__FilterChain *fc = l->filter_chains[0];
    assert_string_equal(fc->name, "shop");
    assert_int_equal(fc->filter_chain_match->destination_port->value, 8443);
    assert_int_equal(fc->filter_chain_match->n_server_names, 2);
    assert_string_equal(fc->filter_chain_match->server_names[1], "*.shop.example.com");
    assert_string_equal(fc->filter_chain_match->transport_protocol, "tls");
    assert_string_equal(fc->filter_chain_match->application_protocols[0], "h2");

    assert_string_equal(fc->transport_socket->name, "envoy.transport_sockets.tls");
    Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext *dtc = unpack_any(
        fc->transport_socket->typed_config,
        &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor);
    assert_true(dtc->require_client_certificate->value);
    assert_int_equal(dtc->session_timeout->seconds, 300);
    Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *c = dtc->common_tls_context;
    assert_int_equal(c->n_alpn_protocols, 2);
    assert_string_equal(c->alpn_protocols[1], "http/1.1");
    assert_int_equal(c->tls_params->tls_minimum_protocol_version,
                     ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_2);
    assert_int_equal(c->tls_params->tls_maximum_protocol_version,
                     ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_3);
    assert_string_equal(c->tls_params->cipher_suites[0], "ECDHE-ECDSA-AES128-GCM-SHA256");
    assert_string_equal(c->tls_certificates[0]->certificate_chain->filename, "/etc/legate/server.pem");
    assert_string_equal(c->tls_certificates[0]->private_key->filename, "/etc/legate/server.key");
    assert_string_equal(c->tls_certificate_sds_secret_configs[0]->name, "shop-cert");
    assert_int_equal(c->tls_certificate_sds_secret_configs[0]->sds_config->config_source_specifier_case,
                     ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS);
    Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *vc =
        c->validation_context;
    assert_non_null(strstr(vc->trusted_ca->inline_string, "BEGIN CERTIFICATE"));
    assert_string_equal(vc->crl->filename, "/etc/legate/crl.pem");
    assert_int_equal(vc->n_match_typed_subject_alt_names, 2);
    assert_int_equal(vc->match_typed_subject_alt_names[0]->san_type,
                     ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI);
    assert_string_equal(vc->match_typed_subject_alt_names[0]->matcher->prefix, "spiffe://example.org/");
    assert_string_equal(vc->match_typed_subject_alt_names[1]->matcher->safe_regex->regex,
                        "[a-z]+\\.example\\.org");
    assert_int_equal(vc->max_verify_depth->value, 3);
    assert_int_equal(vc->trust_chain_verification,
                     ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__TRUST_CHAIN_VERIFICATION__ACCEPT_UNTRUSTED);
    protobuf_c_message_free_unpacked(&dtc->base, NULL);

    Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager *hcm =
        unpack_any(fc->filters[0]->typed_config,
                   &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor);
    assert_string_equal(hcm->stat_prefix, "ingress_https");
    assert_int_equal(hcm->forward_client_cert_details,
                     ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__FORWARD_CLIENT_CERT_DETAILS__SANITIZE_SET);
    assert_true(hcm->set_current_client_cert_details->subject->value);
    assert_true(hcm->set_current_client_cert_details->uri);
    assert_true(hcm->set_current_client_cert_details->dns);
    assert_false(hcm->set_current_client_cert_details->cert);
    assert_int_equal(hcm->request_timeout->seconds, 30);
    assert_int_equal(hcm->max_request_headers_kb->value, 32);
    Envoy__Config__Route__V3__RouteConfiguration *rc = hcm->route_config;
    assert_string_equal(rc->name, "local");
    Envoy__Config__Route__V3__VirtualHost *vh = rc->virtual_hosts[0];
    assert_string_equal(vh->domains[0], "*");
    Envoy__Config__Route__V3__Route *r0 = vh->routes[0];
    assert_string_equal(r0->match->prefix, "/api/");
    assert_string_equal(r0->match->headers[0]->name, "x-env");
    assert_string_equal(r0->match->headers[0]->exact_match, "canary");
    assert_int_equal(r0->action_case, ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE);
    assert_string_equal(r0->route->cluster, "backend");
    assert_int_equal(r0->route->timeout->seconds, 15);
    assert_string_equal(r0->route->prefix_rewrite, "/");
    Envoy__Config__Route__V3__Route *r1 = vh->routes[1];
    assert_string_equal(r1->match->path, "/healthz");
    assert_int_equal(r1->direct_response->status, 200);
    assert_string_equal(r1->direct_response->body->inline_string, "ok\n");
    assert_string_equal(hcm->http_filters[0]->name, "envoy.filters.http.router");
    assert_string_equal(hcm->http_filters[0]->typed_config->type_url,
                        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router");
    protobuf_c_message_free_unpacked(&hcm->base, NULL);

    Envoy__Config__Cluster__V3__Cluster *cl = b->static_resources->clusters[0];
    assert_string_equal(cl->name, "backend");
    assert_int_equal(cl->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STRICT_DNS);
    assert_int_equal(cl->connect_timeout->seconds, 1);
    assert_int_equal(cl->connect_timeout->nanos, 500000000);
    assert_int_equal(cl->lb_policy, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST);
    assert_int_equal(cl->circuit_breakers->thresholds[0]->max_connections->value, 100);
    assert_int_equal(cl->circuit_breakers->thresholds[0]->max_requests->value, 200);
    Envoy__Config__Endpoint__V3__LbEndpoint *le = cl->load_assignment->endpoints[0]->lb_endpoints[0];
    assert_string_equal(le->endpoint->address->socket_address->address, "backend.internal");
    assert_int_equal(le->endpoint->address->socket_address->port_value, 9443);
    assert_int_equal(le->health_status, ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY);
    assert_int_equal(le->load_balancing_weight->value, 3);
    assert_string_equal(cl->typed_extension_protocol_options[0]->key,
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions *hpo =
        unpack_any(cl->typed_extension_protocol_options[0]->value,
                   &envoy__extensions__upstreams__http__v3__http_protocol_options__descriptor);
    assert_int_equal(hpo->explicit_http_config->protocol_config_case,
                     ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP2_PROTOCOL_OPTIONS);
    assert_int_equal(hpo->explicit_http_config->http2_protocol_options->max_concurrent_streams->value, 50);
    protobuf_c_message_free_unpacked(&hpo->base, NULL);
    Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext *utc = unpack_any(
        cl->transport_socket->typed_config,
        &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor);
    assert_string_equal(utc->sni, "backend.internal");
    assert_string_equal(utc->common_tls_context->tls_certificates[0]->certificate_chain->filename,
                        "/etc/legate/cluster.pem");
    protobuf_c_message_free_unpacked(&utc->base, NULL);
    assert_string_equal(b->static_resources->clusters[1]->eds_cluster_config->service_name, "xds-eds");

    assert_string_equal(b->static_resources->secrets[0]->name, "shop-cert");
    assert_string_equal(b->static_resources->secrets[0]->tls_certificate->private_key->filename,
                        "/etc/legate/shop.key");

    Envoy__Config__Bootstrap__V3__Bootstrap__DynamicResources *dr = b->dynamic_resources;
    assert_int_equal(dr->lds_config->config_source_specifier_case,
                     ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS);
    assert_int_equal(dr->cds_config->resource_api_version, ENVOY__CONFIG__CORE__V3__API_VERSION__V3);
    assert_int_equal(dr->ads_config->api_type,
                     ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__GRPC);
    assert_string_equal(dr->ads_config->grpc_services[0]->envoy_grpc->cluster_name, "xds");
    protobuf_c_message_free_unpacked(&b->base, NULL);
}

static void test_discovery_response(void **state)
{
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = (void *)load(
        "discovery_response.bin", &envoy__service__discovery__v3__discovery_response__descriptor);
    assert_string_equal(r->version_info, "v7");
    assert_string_equal(r->nonce, "n-42");
    assert_string_equal(r->type_url, "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment");
    assert_int_equal(r->n_resources, 2);
    Envoy__Config__Endpoint__V3__ClusterLoadAssignment *cla =
        unpack_any(r->resources[0], &envoy__config__endpoint__v3__cluster_load_assignment__descriptor);
    assert_string_equal(cla->cluster_name, "backend");
    assert_string_equal(cla->endpoints[0]->locality->region, "eu");
    assert_int_equal(cla->endpoints[0]->n_lb_endpoints, 2);
    assert_string_equal(cla->endpoints[0]->lb_endpoints[0]->endpoint->address->socket_address->address,
                        "10.0.0.1");
    assert_string_equal(cla->endpoints[0]->lb_endpoints[0]->endpoint->hostname, "b1");
    assert_int_equal(cla->endpoints[0]->lb_endpoints[0]->health_status,
                     ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNHEALTHY);
    assert_int_equal(cla->endpoints[0]->lb_endpoints[1]->endpoint->address->socket_address->port_value,
                     8080);
    protobuf_c_message_free_unpacked(&cla->base, NULL);
    Envoy__Extensions__TransportSockets__Tls__V3__Secret *s =
        unpack_any(r->resources[1], &envoy__extensions__transport_sockets__tls__v3__secret__descriptor);
    assert_string_equal(s->name, "client-ca");
    assert_int_equal(s->type_case,
                     ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT);
    assert_string_equal(s->validation_context->trusted_ca->filename, "/etc/legate/ca.pem");
    protobuf_c_message_free_unpacked(&s->base, NULL);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void test_discovery_request(void **state)
{
    Envoy__Service__Discovery__V3__DiscoveryRequest *r = (void *)load(
        "discovery_request.bin", &envoy__service__discovery__v3__discovery_request__descriptor);
    assert_string_equal(r->version_info, "v6");
    assert_string_equal(r->node->id, "sidecar-1");
    assert_int_equal(r->n_resource_names, 2);
    assert_string_equal(r->resource_names[1], "frontend");
    assert_string_equal(r->type_url, "type.googleapis.com/envoy.config.cluster.v3.Cluster");
    assert_string_equal(r->response_nonce, "n-41");
    assert_int_equal(r->error_detail->code, 3);
    assert_non_null(strstr(r->error_detail->message, "lb_policy"));
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bootstrap),
        cmocka_unit_test(test_discovery_response),
        cmocka_unit_test(test_discovery_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
