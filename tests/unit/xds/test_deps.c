/* Dependency tracking (xds/deps.c): LDS -> RDS/SDS, CDS -> EDS/SDS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "xds/convert.h"
#include "xds/deps.h"

static const char listener_yaml[] =
    "name: https\n"
    "address: {socket_address: {address: 127.0.0.1, port_value: 8443}}\n"
    "filter_chains:\n"
    "- filters:\n"
    "  - name: envoy.filters.network.http_connection_manager\n"
    "    typed_config:\n"
    "      '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
    "      stat_prefix: https\n"
    "      rds: {route_config_name: routes, config_source: {ads: {}}}\n"
    "  transport_socket:\n"
    "    name: envoy.transport_sockets.tls\n"
    "    typed_config:\n"
    "      '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n"
    "      common_tls_context:\n"
    "        tls_certificate_sds_secret_configs:\n"
    "        - {name: server-cert, sds_config: {ads: {}}}\n"
    "        - {name: not-over-sds}\n"
    "        validation_context_sds_secret_config: {name: client-ca, sds_config: {ads: {}}}\n";

static ProtobufCMessage *conv(const char *yaml, const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *m = NULL;
    char err[512];
    if (xds_convert_text(yaml, strlen(yaml), desc, &m, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    return m;
}

static ProtobufCMessage *cluster(const char *yaml)
{
    return conv(yaml, &envoy__config__cluster__v3__cluster__descriptor);
}

static ProtobufCMessage *secret(const char *name)
{
    char yaml[128];
    snprintf(yaml, sizeof(yaml), "name: %s\n", name);
    return conv(yaml, &envoy__extensions__transport_sockets__tls__v3__secret__descriptor);
}

static void test_listener_refs(void **state)
{
    (void)state;
    ProtobufCMessage *l = conv(listener_yaml, &envoy__config__listener__v3__listener__descriptor);
    struct xds_refs rf = {0};
    xds_refs_collect(l, &rf);
    assert_int_equal(rf.rds.n, 1);
    assert_string_equal(rf.rds.v[0], "routes");
    assert_int_equal(rf.sds.n, 2); /* the one without sds_config is inline/static */
    assert_string_equal(rf.sds.v[0], "server-cert");
    assert_string_equal(rf.sds.v[1], "client-ca");
    xds_refs_free(&rf);
    protobuf_c_message_free_unpacked(l, NULL);
}

static void test_cluster_eds_name(void **state)
{
    (void)state;
    ProtobufCMessage *a = cluster("name: a\ntype: EDS\neds_cluster_config: {eds_config: {ads: {}}, service_name: svc}\n");
    ProtobufCMessage *b = cluster("name: b\ntype: EDS\neds_cluster_config: {eds_config: {ads: {}}}\n");
    ProtobufCMessage *c = cluster("name: c\ntype: STATIC\n");
    assert_string_equal(xds_cluster_eds_name((Envoy__Config__Cluster__V3__Cluster *)a), "svc");
    assert_string_equal(xds_cluster_eds_name((Envoy__Config__Cluster__V3__Cluster *)b), "b");
    assert_null(xds_cluster_eds_name((Envoy__Config__Cluster__V3__Cluster *)c));
    protobuf_c_message_free_unpacked(a, NULL);
    protobuf_c_message_free_unpacked(b, NULL);
    protobuf_c_message_free_unpacked(c, NULL);
}

static void test_wanted(void **state)
{
    (void)state;
    struct xds_table lds = {0}, cds = {0};
    struct xds_res old;
    xds_table_set(&lds, "https", "1", conv(listener_yaml, &envoy__config__listener__v3__listener__descriptor), 1,
                  &old);
    xds_table_set(&cds, "a", "1",
                  cluster("name: a\ntype: EDS\neds_cluster_config: {eds_config: {ads: {}}}\n"
                          "transport_socket:\n  name: envoy.transport_sockets.tls\n  typed_config:\n"
                          "    '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n"
                          "    common_tls_context:\n"
                          "      tls_certificate_sds_secret_configs: [{name: client-cert, sds_config: {ads: {}}}]\n"),
                  2, &old);
    xds_table_set(&cds, "c", "1", cluster("name: c\ntype: STATIC\n"), 3, &old);
    struct xds_names rds = {0}, eds = {0}, sds = {0};
    xds_deps_wanted(&lds, &cds, &rds, &eds, &sds);
    assert_int_equal(rds.n, 1);
    assert_int_equal(eds.n, 1);
    assert_string_equal(eds.v[0], "a");
    assert_int_equal(sds.n, 3);
    assert_true(xds_names_has(&sds, "client-cert"));
    assert_true(xds_names_has(&sds, "client-ca"));
    xds_names_free(&rds);
    xds_names_free(&eds);
    xds_names_free(&sds);
    xds_table_free(&lds);
    xds_table_free(&cds);
}

static int static_ok(void *ud, const char *name)
{
    (void)ud;
    return strcmp(name, "static-one") == 0;
}

static void test_ready_warming_and_hash(void **state)
{
    (void)state;
    struct xds_type_state rds = {0}, eds = {0}, sds = {0};
    struct xds_deps_src src = {&rds, &eds, &sds, static_ok, NULL};
    struct xds_refs rf = {0};
    struct xds_res old;
    xds_names_add(&rf.rds, "routes");
    xds_names_add(&rf.sds, "server-cert");
    xds_names_add(&rf.sds, "static-one");
    char missing[128];
    uint64_t h0 = 42, h = h0;
    assert_false(xds_deps_ready(&src, &rf, "svc", &h, missing, sizeof(missing)));
    assert_string_equal(missing, "route configuration \"routes\""); /* the first one missing */

    xds_table_set(&rds.res, "routes", "1", secret("routes"), 7, &old); /* any message will do */
    h = h0;
    assert_false(xds_deps_ready(&src, &rf, "svc", &h, missing, sizeof(missing)));
    assert_string_equal(missing, "secret \"server-cert\"");

    xds_table_set(&sds.res, "server-cert", "1", secret("server-cert"), 8, &old);
    h = h0;
    assert_false(xds_deps_ready(&src, &rf, "svc", &h, missing, sizeof(missing)));
    assert_string_equal(missing, "endpoints \"svc\"");

    /* Endpoints given up on (initial fetch timeout) count as there. */
    struct xds_names want = {0};
    xds_names_add(&want, "svc");
    xds_state_subscribe(&eds, &want, 0);
    xds_state_expire(&eds, 100, 1, NULL, NULL);
    h = h0;
    assert_true(xds_deps_ready(&src, &rf, "svc", &h, missing, sizeof(missing)));
    assert_string_equal(missing, "");
    uint64_t without_eds = h;

    xds_table_set(&eds.res, "svc", "1", secret("svc"), 9, &old);
    h = h0;
    assert_true(xds_deps_ready(&src, &rf, "svc", &h, missing, sizeof(missing)));
    uint64_t with_eds = h;
    assert_int_not_equal(with_eds, without_eds);

    /* A referenced resource that changes changes the dependent's hash; one
     * that does not leaves it alone. */
    xds_table_set(&sds.res, "server-cert", "2", secret("server-cert"), 80, &old);
    xds_res_clear(&old);
    h = h0;
    assert_true(xds_deps_ready(&src, &rf, "svc", &h, missing, sizeof(missing)));
    assert_int_not_equal(h, with_eds);
    xds_table_set(&sds.res, "server-cert", "3", secret("server-cert"), 8, &old);
    xds_res_clear(&old);
    h = h0;
    assert_true(xds_deps_ready(&src, &rf, "svc", &h, missing, sizeof(missing)));
    assert_int_equal(h, with_eds);

    xds_refs_free(&rf);
    xds_state_free(&rds);
    xds_state_free(&eds);
    xds_state_free(&sds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listener_refs),
        cmocka_unit_test(test_cluster_eds_name),
        cmocka_unit_test(test_wanted),
        cmocka_unit_test(test_ready_warming_and_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
