/* envoy.filters.network.tcp_proxy's config: defaults, cluster and
 * weighted_clusters, every refused field named, a field newer than legate's
 * proto refused by number, and the weighted pick. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "filters/tcp_proxy/tcp_proxy.h"
#include "xds/convert.h"

static char err[512];

static struct dp_tcp_proxy_cfg *cfg_from(const char *yaml)
{
    ProtobufCMessage *m;
    if (xds_convert_text(yaml, strlen(yaml), &envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor,
                         &m, err, sizeof(err)) != 0)
        fail_msg("convert: %s", err);
    err[0] = '\0';
    struct dp_tcp_proxy_cfg *c = dp_tcp_proxy_config_new(m, err, sizeof(err));
    protobuf_c_message_free_unpacked(m, NULL);
    return c;
}

static void expect_reject(const char *yaml, const char *want)
{
    struct dp_tcp_proxy_cfg *c = cfg_from(yaml);
    if (c != NULL) {
        dp_tcp_proxy_config_free(c);
        fail_msg("accepted: %s", yaml);
    }
    assert_string_equal(err, want);
}

static void test_defaults(void **state)
{
    (void)state;
    struct dp_tcp_proxy_cfg *c = cfg_from("stat_prefix: edge\ncluster: backend\n");
    assert_non_null(c);
    assert_string_equal(c->stat_prefix, "edge");
    assert_int_equal(c->n_clusters, 1);
    assert_string_equal(c->clusters[0].name, "backend");
    assert_true(c->idle_timeout == 3600); /* Envoy's default: 1 h */
    assert_true(c->max_duration == 0);
    assert_int_equal(c->max_connect_attempts, 1);
    dp_tcp_proxy_config_free(c);

    c = cfg_from("stat_prefix: edge\ncluster: backend\nidle_timeout: 0s\nmax_connect_attempts: 3\n"
                 "max_downstream_connection_duration: 1.5s\n");
    assert_non_null(c);
    assert_true(c->idle_timeout == 0); /* 0 disables it */
    assert_true(c->max_duration == 1.5);
    assert_int_equal(c->max_connect_attempts, 3);
    dp_tcp_proxy_config_free(c);
}

static void test_weighted(void **state)
{
    (void)state;
    struct dp_tcp_proxy_cfg *c =
        cfg_from("stat_prefix: w\nweighted_clusters: {clusters: [{name: a, weight: 1}, {name: b, weight: 3}]}\n");
    assert_non_null(c);
    assert_int_equal(c->n_clusters, 2);
    assert_int_equal(c->total_weight, 4);
    /* r % 4: 0 -> a; 1, 2, 3 -> b */
    assert_string_equal(dp_tcp_proxy_pick(c, 0)->name, "a");
    assert_string_equal(dp_tcp_proxy_pick(c, 1)->name, "b");
    assert_string_equal(dp_tcp_proxy_pick(c, 3)->name, "b");
    assert_string_equal(dp_tcp_proxy_pick(c, 4)->name, "a");
    unsigned n[2] = {0, 0};
    for (uint32_t r = 0; r < 4000; r++)
        n[dp_tcp_proxy_pick(c, r * 2654435761u)->name[0] - 'a']++;
    assert_true(n[0] > 800 && n[0] < 1200);
    dp_tcp_proxy_config_free(c);
}

static void test_rejects(void **state)
{
    (void)state;
    expect_reject("cluster: x\n", "stat_prefix: required");
    expect_reject("stat_prefix: x\n", "cluster: required (or weighted_clusters)");
    expect_reject("stat_prefix: x\ncluster: ''\n", "cluster: must not be empty");
    expect_reject("stat_prefix: x\nweighted_clusters: {}\n",
                  "weighted_clusters.clusters: at least one cluster is required");
    expect_reject("stat_prefix: x\nweighted_clusters: {clusters: [{name: a, weight: 1}, {weight: 2}]}\n",
                  "weighted_clusters.clusters[1].name: required");
    expect_reject("stat_prefix: x\nweighted_clusters: {clusters: [{name: a}]}\n",
                  "weighted_clusters.clusters[0].weight: must be at least 1");
    expect_reject("stat_prefix: x\nweighted_clusters: {clusters: [{name: a, weight: 1, metadata_match: {}}]}\n",
                  "weighted_clusters.clusters[0].metadata_match: not supported (legate has no subset load balancer)");
    expect_reject("stat_prefix: x\ncluster: c\nidle_timeout: -1s\n", "idle_timeout: must not be negative");
    expect_reject("stat_prefix: x\ncluster: c\nmax_connect_attempts: 0\n", "max_connect_attempts: must be at least 1");
    expect_reject("stat_prefix: x\ncluster: c\nmax_downstream_connection_duration: 0s\n",
                  "max_downstream_connection_duration: must be at least 1ms");
    /* Each field legate does not implement, by name. */
    static const struct {
        const char *yaml, *field;
    } refused[] = {
        {"on_demand: {}", "on_demand"},
        {"metadata_match: {}", "metadata_match"},
        {"downstream_idle_timeout: 1s", "downstream_idle_timeout"},
        {"upstream_idle_timeout: 1s", "upstream_idle_timeout"},
        {"access_log: [{name: envoy.access_loggers.file}]", "access_log"},
        {"access_log_flush_interval: 1s", "access_log_flush_interval"},
        {"flush_access_log_on_connected: true", "flush_access_log_on_connected"},
        {"access_log_options: {}", "access_log_options"},
        {"backoff_options: {base_interval: 1s}", "backoff_options"},
        {"hash_policy: [{source_ip: {}}]", "hash_policy"},
        {"tunneling_config: {hostname: 'h:443'}", "tunneling_config"},
        {"max_downstream_connection_duration_jitter_percentage: {value: 10}",
         "max_downstream_connection_duration_jitter_percentage"},
        {"proxy_protocol_tlvs: [{type: 240, value: 'YQ=='}]", "proxy_protocol_tlvs"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        char yaml[256], want[128];
        snprintf(yaml, sizeof(yaml), "stat_prefix: x\ncluster: c\n%s\n", refused[i].yaml);
        struct dp_tcp_proxy_cfg *c = cfg_from(yaml);
        if (c) {
            dp_tcp_proxy_config_free(c);
            fail_msg("accepted: %s", yaml);
        }
        snprintf(want, sizeof(want), "%s: not supported", refused[i].field);
        if (strncmp(err, want, strlen(want)) != 0)
            fail_msg("%s: got \"%s\"", refused[i].field, err);
    }
}

/* A TcpProxy from a newer Envoy, with a field legate's proto lacks. */
static void test_unknown_field(void **state)
{
    (void)state;
    Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy tp =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__INIT;
    tp.stat_prefix = "x";
    tp.cluster_specifier_case = ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_CLUSTER;
    tp.cluster = "c";
    size_t n = protobuf_c_message_get_packed_size(&tp.base);
    uint8_t *buf = malloc(n + 3);
    assert_non_null(buf);
    protobuf_c_message_pack(&tp.base, buf);
    /* field 99, varint 1: tag (99 << 3) = 792 = 0x98 0x06 */
    buf[n] = 0x98;
    buf[n + 1] = 0x06;
    buf[n + 2] = 0x01;
    ProtobufCMessage *m =
        protobuf_c_message_unpack(&envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor, NULL,
                                  n + 3, buf);
    free(buf);
    assert_non_null(m);
    struct dp_tcp_proxy_cfg *c = dp_tcp_proxy_config_new(m, err, sizeof(err));
    protobuf_c_message_free_unpacked(m, NULL);
    assert_null(c);
    assert_string_equal(err, "field number 99: unknown to legate (newer than its TcpProxy proto), refused");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_weighted),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_unknown_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
