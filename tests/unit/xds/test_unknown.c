/* The fields legate's trimmed protos lack (xds/unknown.c) and the walk that
 * finds them in a resource and its typed configs (xds/unsupported.c): the
 * generated table, and resources encoded by hand with fields that decode
 * as protobuf-c unknown fields. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "xds/registry.h"
#include "xds/unknown.h"
#include "xds/unsupported.h"

#define HCM "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
#define HCM_URL "type.googleapis.com/" HCM

/* m packed, then the bytes of fields its descriptor does not have: a
 * message as Envoy's full protos would encode it (fields may come in any
 * order on the wire). malloc'd into out. */
static void pack_with(const ProtobufCMessage *m, const uint8_t *extra, size_t n, ProtobufCBinaryData *out)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    out->data = malloc(len + n + 1);
    assert_non_null(out->data);
    protobuf_c_message_pack(m, out->data);
    if (n)
        memcpy(out->data + len, extra, n);
    out->len = len + n;
}

static ProtobufCMessage *unpack(const ProtobufCMessageDescriptor *d, ProtobufCBinaryData b)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, b.len, b.data);
    assert_non_null(m);
    free(b.data);
    return m;
}

/* A Cluster "x" (STATIC) with extra bytes after it, decoded. */
static ProtobufCMessage *cluster_with(const uint8_t *extra, size_t n)
{
    Envoy__Config__Cluster__V3__Cluster c = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT;
    c.name = "x";
    ProtobufCBinaryData b;
    pack_with(&c.base, extra, n, &b);
    return unpack(&envoy__config__cluster__v3__cluster__descriptor, b);
}

/* What the ignored callback was told. */
struct told {
    int n;
    char path[4][300];
    char field[4][64];
};

static void on_ignored(void *ud, const char *path, const char *msg, const char *field, const char *why)
{
    struct told *t = ud;
    assert_non_null(msg);
    assert_non_null(why);
    if (t->n < 4) {
        snprintf(t->path[t->n], sizeof(t->path[0]), "%s", path);
        snprintf(t->field[t->n], sizeof(t->field[0]), "%s", field);
    }
    t->n++;
}

static void test_table(void **state)
{
    (void)state;
    assert_true(xds_n_envoy_fields > 200);
    /* sorted (bsearch), no duplicates */
    for (size_t i = 1; i < xds_n_envoy_fields; i++) {
        int c = strcmp(xds_envoy_fields[i - 1].msg, xds_envoy_fields[i].msg);
        assert_true(c < 0 || (c == 0 && xds_envoy_fields[i - 1].number < xds_envoy_fields[i].number));
    }
    assert_string_equal(xds_envoy_field_name("envoy.config.cluster.v3.Cluster", 43), "transport_socket_matches");
    assert_string_equal(xds_envoy_field_name("envoy.config.cluster.v3.Cluster", 27), "common_lb_config");
    assert_string_equal(xds_envoy_field_name("envoy.config.cluster.v3.Cluster", 21), "upstream_bind_config");
    assert_string_equal(xds_envoy_field_name(HCM, 7), "tracing");
    assert_string_equal(xds_envoy_field_name(HCM, 36), "request_id_extension");
    assert_null(xds_envoy_field_name("envoy.config.cluster.v3.Cluster", 1)); /* name: legate has it */
    assert_null(xds_envoy_field_name("envoy.config.cluster.v3.Cluster", 999));
    assert_null(xds_envoy_field_name("no.such.Message", 1));
    /* every ignorable field is one of Envoy's that legate lacks */
    assert_int_equal(xds_unknown_unresolved(), 0);
    const char *msg, *field, *why;
    assert_true(xds_unknown_ignorable_at(0, &msg, &field, &why));
    assert_non_null(xds_unknown_ignorable(HCM, "tracing"));
    assert_null(xds_unknown_ignorable("envoy.config.cluster.v3.Cluster", "transport_socket_matches"));
}

/* The table names only fields that legate's compiled protos lack: a row
 * whose number the descriptor has means the table is stale (regenerate it). */
static void test_table_matches_protos(void **state)
{
    (void)state;
    size_t checked = 0;
    for (size_t i = 0; i < xds_n_envoy_fields; i++) {
        const ProtobufCMessageDescriptor *d = xds_registry_lookup(xds_envoy_fields[i].msg);
        if (d == NULL)
            continue;
        checked++;
        if (protobuf_c_message_descriptor_get_field(d, xds_envoy_fields[i].number) != NULL)
            fail_msg("%s field %u (%s) is in legate's protos: regenerate xds/unknown_fields.c",
                     xds_envoy_fields[i].msg, xds_envoy_fields[i].number, xds_envoy_fields[i].name);
    }
    assert_true(checked > 200);
}

/* Istio's mTLS per endpoint: refused by name, never ACKed without it. */
static void test_cluster_refused(void **state)
{
    (void)state;
    static const struct {
        uint8_t bytes[8];
        size_t n;
        const char *err;
    } cases[] = {
        /* field 43, length-delimited (tag 346): one TransportSocketMatch {name: "a"} */
        {{0xda, 0x02, 0x03, 0x0a, 0x01, 'a'}, 6, "transport_socket_matches: not supported"},
        /* field 27 (tag 218): an empty CommonLbConfig */
        {{0xda, 0x01, 0x00}, 3, "common_lb_config: not supported"},
        /* field 21 (tag 170): an empty BindConfig */
        {{0xaa, 0x01, 0x00}, 3, "upstream_bind_config: not supported"},
        /* field 999, varint 1: not in Envoy's protos either */
        {{0xb8, 0x3e, 0x01}, 3, "field number 999 of envoy.config.cluster.v3.Cluster is unknown"},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        ProtobufCMessage *m = cluster_with(cases[k].bytes, cases[k].n);
        assert_int_equal(m->n_unknown_fields, 1);
        char err[600] = "";
        struct told t = {0};
        assert_int_equal(xds_check_resource(m, "", on_ignored, &t, err, sizeof(err)), -1);
        assert_string_equal(err, cases[k].err);
        assert_int_equal(t.n, 0);
        /* the bootstrap's check refuses it too */
        assert_int_equal(xds_check_unsupported(m, "static_resources.clusters[0]", err, sizeof(err)), -1);
        assert_non_null(strstr(err, "static_resources.clusters[0]"));
        protobuf_c_message_free_unpacked(m, NULL);
    }
}

/* A Listener whose HCM (an Any) carries extra bytes, decoded. */
static ProtobufCMessage *listener_with_hcm(const uint8_t *extra, size_t n)
{
    Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager h =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__INIT;
    h.stat_prefix = "ingress";
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    any.type_url = HCM_URL;
    pack_with(&h.base, extra, n, &any.value);
    Envoy__Config__Listener__V3__Filter f = ENVOY__CONFIG__LISTENER__V3__FILTER__INIT;
    f.name = "envoy.filters.network.http_connection_manager";
    f.config_type_case = ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG;
    f.typed_config = &any;
    Envoy__Config__Listener__V3__Filter *fs[] = {&f};
    Envoy__Config__Listener__V3__FilterChain fc = ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN__INIT;
    fc.filters = fs;
    fc.n_filters = 1;
    Envoy__Config__Listener__V3__FilterChain *fcs[] = {&fc};
    Envoy__Config__Listener__V3__Listener l = ENVOY__CONFIG__LISTENER__V3__LISTENER__INIT;
    l.name = "l";
    l.filter_chains = fcs;
    l.n_filter_chains = 1;
    ProtobufCBinaryData b;
    pack_with(&l.base, NULL, 0, &b);
    free(any.value.data);
    return unpack(&envoy__config__listener__v3__listener__descriptor, b);
}

/* tracing and request_id_extension cannot change traffic: accepted, each
 * told once with its path inside the typed config. */
static void test_hcm_ignored(void **state)
{
    (void)state;
    /* field 7 tracing (tag 58) twice, as a repeated or merged field may
     * come; field 36 request_id_extension (tag 290) */
    static const uint8_t extra[] = {0x3a, 0x00, 0x3a, 0x00, 0xa2, 0x02, 0x00};
    ProtobufCMessage *m = listener_with_hcm(extra, sizeof(extra));
    char err[600] = "";
    struct told t = {0};
    assert_int_equal(xds_check_resource(m, "", on_ignored, &t, err, sizeof(err)), 0);
    assert_int_equal(t.n, 2);
    assert_string_equal(t.path[0], "filter_chains[0].filters[0].typed_config.tracing");
    assert_string_equal(t.field[0], "tracing");
    assert_string_equal(t.path[1], "filter_chains[0].filters[0].typed_config.request_id_extension");
    /* without a callback: accepted all the same */
    assert_int_equal(xds_check_resource(m, "", NULL, NULL, err, sizeof(err)), 0);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* A field that changes traffic, inside a typed config: refused by path,
 * and the ignorable one beside it is not told. */
static void test_hcm_refused(void **state)
{
    (void)state;
    /* tracing, then field 25 internal_address_config (tag 202) */
    static const uint8_t extra[] = {0x3a, 0x00, 0xca, 0x01, 0x00};
    ProtobufCMessage *m = listener_with_hcm(extra, sizeof(extra));
    char err[600] = "";
    struct told t = {0};
    assert_int_equal(xds_check_resource(m, "", on_ignored, &t, err, sizeof(err)), -1);
    assert_string_equal(err, "filter_chains[0].filters[0].typed_config.internal_address_config: not supported");
    assert_int_equal(t.n, 0);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* What /config_dump lists for an accepted resource. */
static void test_ignored_json(void **state)
{
    (void)state;
    static const uint8_t extra[] = {0x3a, 0x00, 0xa2, 0x02, 0x00};
    ProtobufCMessage *m = listener_with_hcm(extra, sizeof(extra));
    struct xds_sb b = {0};
    assert_int_equal(xds_ignored_fields_json(m, &b), 2);
    xds_sb_add(&b, "", 1);
    assert_string_equal(b.p, "[\"filter_chains[0].filters[0].typed_config.tracing\","
                             "\"filter_chains[0].filters[0].typed_config.request_id_extension\"]");
    free(b.p);
    protobuf_c_message_free_unpacked(m, NULL);
    m = cluster_with(NULL, 0);
    b = (struct xds_sb){0};
    assert_int_equal(xds_ignored_fields_json(m, &b), 0);
    xds_sb_add(&b, "", 1);
    assert_string_equal(b.p, "[]");
    free(b.p);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* docs/resources.md lists every field that is accepted and ignored. */
static void test_docs_list_ignorable(void **state)
{
    (void)state;
    FILE *fp = fopen(SOURCE_DIR "/docs/resources.md", "r");
    assert_non_null(fp);
    static char doc[256 * 1024];
    size_t n = fread(doc, 1, sizeof(doc) - 1, fp);
    fclose(fp);
    doc[n] = '\0';
    const char *msg, *field, *why;
    for (size_t k = 0; xds_unknown_ignorable_at(k, &msg, &field, &why); k++) {
        char row[300];
        const char *dot = strrchr(msg, '.');
        snprintf(row, sizeof(row), "| `%s` | `%s` | %s |", dot + 1, field, why);
        if (strstr(doc, row) == NULL)
            fail_msg("docs/resources.md lacks the row: %s", row);
    }
}

/* The check on one message, as a caller that walks on its own uses it. */
static void test_check_one(void **state)
{
    (void)state;
    static const uint8_t tsm[] = {0xda, 0x02, 0x00};
    ProtobufCMessage *m = cluster_with(tsm, sizeof(tsm));
    char err[300];
    assert_int_equal(xds_unknown_check(m, "clusters[3]", NULL, NULL, err, sizeof(err)), -1);
    assert_string_equal(err, "clusters[3].transport_socket_matches: not supported");
    protobuf_c_message_free_unpacked(m, NULL);
    static const uint8_t odd[] = {0xb8, 0x3e, 0x01};
    m = cluster_with(odd, sizeof(odd));
    assert_int_equal(xds_unknown_check(m, "clusters[3]", NULL, NULL, err, sizeof(err)), -1);
    assert_string_equal(err, "clusters[3]: field number 999 of envoy.config.cluster.v3.Cluster is unknown");
    protobuf_c_message_free_unpacked(m, NULL);
    m = cluster_with(NULL, 0);
    assert_int_equal(xds_unknown_check(m, "", NULL, NULL, err, sizeof(err)), 0);
    protobuf_c_message_free_unpacked(m, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_table_matches_protos),
        cmocka_unit_test(test_cluster_refused),
        cmocka_unit_test(test_hcm_ignored),
        cmocka_unit_test(test_hcm_refused),
        cmocka_unit_test(test_check_one),
        cmocka_unit_test(test_ignored_json),
        cmocka_unit_test(test_docs_list_ignorable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
