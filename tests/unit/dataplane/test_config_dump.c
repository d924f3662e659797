/* The Envoy-shaped /config_dump (dataplane/config_dump.c): query strings,
 * per-resource notes (last_updated, error_state), the dumps' shape and
 * order, ?resource= / ?mask= / ?name_regex= and their errors, secrets
 * redacted in place, maps as JSON objects. Envoy's own decoder reads the
 * same output in tests/integration/admin_envoy.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dataplane/config_dump.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "xds/convert.h"

static const char bootstrap_yaml[] =
    "node: { id: n1 }\n"
    "static_resources:\n"
    "  secrets:\n"
    "  - name: inline-cert\n"
    "    tls_certificate:\n"
    "      certificate_chain: { inline_string: \"CERT\" }\n"
    "      private_key: { inline_string: \"-----BEGIN PRIVATE KEY-----SECRET\" }\n"
    "  listeners:\n"
    "  - name: web\n"
    "    address: { socket_address: { address: 127.0.0.1, port_value: 8080 } }\n"
    "    filter_chains:\n"
    "    - filters:\n"
    "      - name: envoy.filters.network.http_connection_manager\n"
    "        typed_config:\n"
    "          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
    "          stat_prefix: web\n"
    "          route_config: { name: inline-routes, virtual_hosts: [{ name: all, domains: [\"*\"] }] }\n"
    "          http_filters: [{ name: envoy.filters.http.router, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]\n"
    "  clusters:\n"
    "  - name: backend\n"
    "    connect_timeout: 1s\n"
    "    typed_extension_protocol_options:\n"
    "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
    "        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
    "        explicit_http_config: { http2_protocol_options: {} }\n"
    "    load_assignment:\n"
    "      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9000 } } } }] }]\n";

static xds_bootstrap_t *bootstrap(void)
{
    ProtobufCMessage *m = NULL;
    char err[512];
    int rc = xds_convert_text(bootstrap_yaml, sizeof(bootstrap_yaml) - 1,
                              &envoy__config__bootstrap__v3__bootstrap__descriptor, &m, err, sizeof(err));
    if (rc < 0)
        fail_msg("%s", err);
    return (xds_bootstrap_t *)m;
}

/* The dump as query selects; status and body (freed by the caller). */
static int dump(const xds_bootstrap_t *bs, const struct dp_dump_view *v, const char *query, char **body)
{
    const char *ctype = NULL;
    int status = dp_config_dump_envoy(bs, 1700000000, v, query, body, &ctype);
    assert_non_null(*body);
    assert_string_equal(ctype, status == 200 ? "application/json" : "text/plain");
    return status;
}

/* Positions of needles in hay, which must come in that order. */
static void in_order(const char *hay, const char *const *needles, size_t n)
{
    const char *at = hay;
    for (size_t i = 0; i < n; i++) {
        const char *p = strstr(at, needles[i]);
        if (p == NULL)
            fail_msg("\"%s\" missing or out of order in:\n%s", needles[i], hay);
        at = p + strlen(needles[i]);
    }
}

static void test_query_param(void **state)
{
    (void)state;
    char v[64];
    assert_int_equal(dp_query_param("resource=x&mask=cluster.name%2Clast_updated", "mask", v, sizeof(v)), 1);
    assert_string_equal(v, "cluster.name,last_updated");
    assert_int_equal(dp_query_param("name_regex=a+b%2a", "name_regex", v, sizeof(v)), 1);
    assert_string_equal(v, "a b*");
    assert_int_equal(dp_query_param("include_eds&x=1", "include_eds", v, sizeof(v)), 1);
    assert_string_equal(v, "");
    assert_int_equal(dp_query_param("resourcex=1", "resource", v, sizeof(v)), 0);
    assert_int_equal(dp_query_param(NULL, "resource", v, sizeof(v)), 0);
    assert_int_equal(dp_query_param("a=%zz%4", "a", v, sizeof(v)), 1);
    assert_string_equal(v, "%zz%4"); /* broken escapes stay as they are */
    assert_int_equal(dp_query_param("a=0123456789", "a", v, 5), 1);
    assert_string_equal(v, "0123"); /* cut, never overflowed */
}

static void test_notes(void **state)
{
    (void)state;
    struct dp_dump_notes n = {0};
    struct xds_table t = {0};
    struct xds_res old;
    xds_table_set(&t, "a", "1", NULL, 11, &old);
    xds_table_set(&t, "b", "1", NULL, 22, &old);
    dp_dump_notes_published(&n, XDS_LDS, &t, 100);
    assert_true(dp_dump_notes_get(&n, XDS_LDS, "a")->updated == 100);
    /* the same bytes again: last_updated stays; new bytes: it moves */
    xds_table_set(&t, "b", "2", NULL, 23, &old);
    xds_res_clear(&old);
    dp_dump_notes_published(&n, XDS_LDS, &t, 200);
    assert_true(dp_dump_notes_get(&n, XDS_LDS, "a")->updated == 100);
    assert_true(dp_dump_notes_get(&n, XDS_LDS, "b")->updated == 200);
    /* a NACK naming a (in the table) and c (new, refused) */
    dp_dump_notes_nack(&n, XDS_LDS, "a", "3", "listener \"a\": bad", 300);
    dp_dump_notes_nack(&n, XDS_LDS, "c", "3", "listener \"c\": worse", 300);
    dp_dump_notes_published(&n, XDS_LDS, &t, 300);
    const struct dp_dump_note *c = dp_dump_notes_get(&n, XDS_LDS, "c");
    assert_non_null(c);
    assert_false(c->in_table);
    assert_string_equal(c->err_details, "listener \"c\": worse");
    assert_string_equal(dp_dump_notes_get(&n, XDS_LDS, "a")->err_version, "3");
    assert_null(dp_dump_notes_get(&n, XDS_CDS, "a"));
    /* an ACK clears the errors; the refused name is then forgotten */
    dp_dump_notes_ack(&n, XDS_LDS);
    assert_null(dp_dump_notes_get(&n, XDS_LDS, "a")->err_details);
    dp_dump_notes_published(&n, XDS_LDS, &t, 400);
    assert_null(dp_dump_notes_get(&n, XDS_LDS, "c"));
    assert_non_null(dp_dump_notes_get(&n, XDS_LDS, "b"));
    xds_table_take(&t, "b", NULL);
    dp_dump_notes_published(&n, XDS_LDS, &t, 500);
    assert_null(dp_dump_notes_get(&n, XDS_LDS, "b"));
    dp_dump_notes_free(&n);
    xds_table_free(&t);
}

static void test_static_dump(void **state)
{
    (void)state;
    xds_bootstrap_t *bs = bootstrap();
    char *body = NULL;
    assert_int_equal(dump(bs, NULL, NULL, &body), 200);
    static const char *const order[] = {
        "\"@type\": \"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump\"",
        "\"last_updated\": \"2023-11-14T22:13:20Z\"",
        "\"@type\": \"type.googleapis.com/envoy.admin.v3.ClustersConfigDump\"",
        "\"static_clusters\"",
        "\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\"",
        "\"@type\": \"type.googleapis.com/envoy.admin.v3.ListenersConfigDump\"",
        "\"static_listeners\"",
        "\"@type\": \"type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump\"",
        "\"@type\": \"type.googleapis.com/envoy.admin.v3.RoutesConfigDump\"",
        "\"static_route_configs\"",
        "\"name\": \"inline-routes\"",
        "\"@type\": \"type.googleapis.com/envoy.admin.v3.SecretsConfigDump\"",
        "\"static_secrets\"",
        "\"name\": \"inline-cert\"",
    };
    in_order(body, order, sizeof(order) / sizeof(order[0]));
    /* no endpoints without ?include_eds; maps as objects; keys in place */
    assert_null(strstr(body, "EndpointsConfigDump"));
    assert_non_null(strstr(body, "\"typed_extension_protocol_options\": {\n"));
    assert_non_null(strstr(body, "\"private_key\": {\n"));
    assert_non_null(strstr(body, "\"inline_string\": \"[redacted]\""));
    assert_null(strstr(body, "SECRET"));
    assert_null(strstr(body, "\"version_info\""));
    free(body);

    assert_int_equal(dump(bs, NULL, "include_eds", &body), 200);
    static const char *const eds[] = {"ClustersConfigDump", "EndpointsConfigDump", "\"static_endpoint_configs\"",
                                      "\"cluster_name\": \"backend\"", "\"port_value\": 9000",
                                      "ListenersConfigDump"};
    in_order(body, eds, sizeof(eds) / sizeof(eds[0]));
    free(body);
    protobuf_c_message_free_unpacked(&bs->base, NULL);
}

static void test_resource_and_mask(void **state)
{
    (void)state;
    xds_bootstrap_t *bs = bootstrap();
    char *body = NULL;
    assert_int_equal(dump(bs, NULL, "resource=static_clusters&mask=cluster.name,last_updated", &body), 200);
    assert_string_equal(body, "{\n"
                              "  \"configs\": [\n"
                              "    {\n"
                              "      \"@type\": \"type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster\",\n"
                              "      \"cluster\": {\n"
                              "        \"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\",\n"
                              "        \"name\": \"backend\"\n"
                              "      },\n"
                              "      \"last_updated\": \"2023-11-14T22:13:20Z\"\n"
                              "    }\n"
                              "  ]\n"
                              "}\n");
    free(body);
    /* a mask alone: each dump it fits, trimmed; a path through an Any
     * fits none outside ?resource= */
    assert_int_equal(dump(bs, NULL, "mask=bootstrap.node", &body), 200);
    assert_non_null(strstr(body, "\"id\": \"n1\""));
    assert_null(strstr(body, "static_resources"));
    assert_null(strstr(body, "ClustersConfigDump"));
    free(body);
    assert_int_equal(dump(bs, NULL, "mask=static_secrets", &body), 200);
    assert_non_null(strstr(body, "\"inline_string\": \"[redacted]\""));
    assert_null(strstr(body, "SECRET"));
    free(body);
    assert_int_equal(dump(bs, NULL, "mask=static_clusters.cluster", &body), 400);
    assert_string_equal(body, "FieldMask static_clusters.cluster could not be successfully applied to any configs.\n");
    free(body);
    assert_int_equal(dump(bs, NULL, "resource=static_listeners&mask=listener.nope", &body), 400);
    assert_string_equal(body, "FieldMask listener.nope could not be successfully used.\n");
    free(body);
    assert_int_equal(dump(bs, NULL, "resource=bootstrap", &body), 400);
    assert_string_equal(body, "bootstrap is not a repeated field. Use ?mask=bootstrap to get only this field\n");
    free(body);
    assert_int_equal(dump(bs, NULL, "resource=dynamic_endpoint_configs", &body), 404);
    free(body); /* only with ?include_eds */
    assert_int_equal(dump(bs, NULL, "resource=dynamic_endpoint_configs&include_eds", &body), 200);
    assert_string_equal(body, "{}\n");
    free(body);
    /* whole-name matches */
    assert_int_equal(dump(bs, NULL, "resource=static_clusters&name_regex=back", &body), 200);
    assert_string_equal(body, "{}\n");
    free(body);
    assert_int_equal(dump(bs, NULL, "resource=static_clusters&name_regex=back.*", &body), 200);
    assert_non_null(strstr(body, "\"name\": \"backend\""));
    free(body);
    assert_int_equal(dump(bs, NULL, "name_regex=%5B", &body), 400);
    assert_non_null(strstr(body, "Error while parsing name_regex from ["));
    free(body);
    protobuf_c_message_free_unpacked(&bs->base, NULL);
}

static void test_dynamic_view(void **state)
{
    (void)state;
    xds_bootstrap_t *bs = bootstrap();
    Envoy__Config__Listener__V3__Listener l1 = ENVOY__CONFIG__LISTENER__V3__LISTENER__INIT,
                                          l2 = ENVOY__CONFIG__LISTENER__V3__LISTENER__INIT;
    l1.name = "live";
    l2.name = "cold";
    struct dp_dump_res lds[] = {{"live", "7", &l1.base, 0}, {"cold", "7", &l2.base, 1}};
    struct dp_dump_notes n = {0};
    struct xds_table t = {0};
    struct xds_res old;
    xds_table_set(&t, "live", "7", NULL, 1, &old);
    xds_table_set(&t, "cold", "7", NULL, 2, &old);
    dp_dump_notes_published(&n, XDS_LDS, &t, 1700000100.5);
    dp_dump_notes_nack(&n, XDS_LDS, "live", "8", "listener \"live\": no", 1700000200);
    dp_dump_notes_nack(&n, XDS_LDS, "new", "8", "listener \"new\": never", 1700000200);
    struct xds_names subs = {0};
    xds_names_add(&subs, "wanted");
    struct dp_dump_view v = {.notes = &n};
    v.t[XDS_LDS].version = "7";
    v.t[XDS_LDS].v = lds;
    v.t[XDS_LDS].n = 2;
    v.t[XDS_SDS].subs = &subs;
    char *body = NULL;
    assert_int_equal(dump(bs, &v, "resource=dynamic_listeners", &body), 200);
    static const char *const want[] = {
        "\"name\": \"live\"", "\"active_state\"", "\"version_info\": \"7\"", "\"name\": \"live\"",
        "\"last_updated\": \"2023-11-14T22:15:00.500000000Z\"", "\"error_state\"",
        "\"last_update_attempt\": \"2023-11-14T22:16:40Z\"", "\"details\": \"listener \\\"live\\\": no\"",
        "\"version_info\": \"8\"", "\"name\": \"cold\"", "\"warming_state\"", "\"name\": \"new\"",
        "\"error_state\"", "\"details\": \"listener \\\"new\\\": never\""};
    in_order(body, want, sizeof(want) / sizeof(want[0]));
    free(body);
    assert_int_equal(dump(bs, &v, "resource=dynamic_warming_secrets", &body), 200);
    assert_non_null(strstr(body, "\"name\": \"wanted\""));
    free(body);
    assert_int_equal(dump(bs, &v, "mask=version_info", &body), 200);
    assert_non_null(strstr(body, "ListenersConfigDump\",\n      \"version_info\": \"7\""));
    free(body);
    xds_names_free(&subs);
    xds_table_free(&t);
    dp_dump_notes_free(&n);
    protobuf_c_message_free_unpacked(&bs->base, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_param),
        cmocka_unit_test(test_notes),
        cmocka_unit_test(test_static_dump),
        cmocka_unit_test(test_resource_and_mask),
        cmocka_unit_test(test_dynamic_view),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
