/* legate-control's config: unique names, and what a node is served. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "control-sample/config.h"
#include "xds/convert.h"

static int build(const char *yaml, struct cp_config **cfg, char *err, size_t errlen)
{
    ProtobufCMessage *m = NULL;
    char msg[512];
    if (xds_convert_text(yaml, strlen(yaml), &legate__control__v1__control_config__descriptor, &m,
                         msg, sizeof(msg)) < 0)
        fail_msg("convert: %s", msg);
    int rc = cp_config_build((Legate__Control__V1__ControlConfig *)m, cfg, err, errlen);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

static void expect_error(const char *yaml, const char *want)
{
    struct cp_config *cfg = NULL;
    char err[512] = "";
    assert_int_equal(build(yaml, &cfg, err, sizeof(err)), -1);
    assert_null(cfg);
    assert_string_equal(err, want);
}

static void test_duplicate_names(void **state)
{
    (void)state;
    expect_error("clusters: [{ name: a }, { name: b }, { name: a }]",
                 "clusters[2].name: \"a\" is already used by clusters[0]");
    /* the first index that repeats a name, and the first holder of it */
    expect_error("clusters: [{ name: x }, { name: y }, { name: y }, { name: x }, { name: y }]",
                 "clusters[2].name: \"y\" is already used by clusters[1]");
    expect_error("clusters: [{ name: x }, { name: y }, { name: z }, { name: x }, { name: y }]",
                 "clusters[3].name: \"x\" is already used by clusters[0]");
    /* a missing name before the duplicate is reported first */
    expect_error("endpoints: [{ cluster_name: a }, { }, { cluster_name: a }]",
                 "endpoints[1].cluster_name: a name is required");
    expect_error("nodes: [{ node_id: n, clusters: [{ name: q }, { name: q }] }]",
                 "nodes[0].clusters[1].name: \"q\" is already used by clusters[0]");
    /* the same name in two lists, or in the global list and a scope, is fine */
    struct cp_config *cfg = NULL;
    char err[256];
    assert_int_equal(build("clusters: [{ name: a }]\nendpoints: [{ cluster_name: a }]\n"
                           "nodes: [{ node_id: n, clusters: [{ name: a }] }]",
                           &cfg, err, sizeof(err)),
                     0);
    cp_config_free(cfg);
}

static const char *names_of(const struct cp_resource **sel, size_t n, char *buf, size_t len)
{
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++)
        snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", i ? " " : "", sel[i]->name);
    return buf;
}

static void test_select(void **state)
{
    (void)state;
    /* 2,000 global clusters, two scopes for node "n": the first replaces
     * c7 and adds z, the second replaces z again */
    char *yaml = malloc(200000);
    size_t off = (size_t)sprintf(yaml, "clusters:\n");
    for (int i = 1999; i >= 0; i--)
        off += (size_t)sprintf(yaml + off, "- { name: c%d }\n", i);
    sprintf(yaml + off, "nodes:\n"
                        "- { node_id: n, clusters: [{ name: c7, type: STATIC }, { name: z }] }\n"
                        "- { node_id: n, clusters: [{ name: z, type: STRICT_DNS }] }\n");
    struct cp_config *cfg = NULL;
    char err[256], buf[256];
    assert_int_equal(build(yaml, &cfg, err, sizeof(err)), 0);
    free(yaml);

    const struct cp_resource **sel = NULL;
    size_t n = cp_config_select(cfg, "other", "", CP_CDS, NULL, 0, &sel);
    assert_int_equal(n, 2000);
    assert_string_equal(sel[0]->name, "c1999"); /* config order */
    assert_string_equal(sel[1999]->name, "c0");
    free(sel);

    n = cp_config_select(cfg, "n", "", CP_CDS, NULL, 0, &sel);
    assert_int_equal(n, 2001);
    assert_string_equal(sel[1999 - 7]->name, "c7");
    assert_ptr_equal(sel[1999 - 7], &cfg->scopes[0].rs.res[CP_CDS][0]);
    assert_string_equal(sel[2000]->name, "z");
    assert_ptr_equal(sel[2000], &cfg->scopes[1].rs.res[CP_CDS][0]);
    free(sel);

    char *want[] = {"z", "c7", "missing", "c1999", "c0", "c7"};
    n = cp_config_select(cfg, "other", "", CP_CDS, want, 6, &sel);
    assert_string_equal(names_of(sel, n, buf, sizeof(buf)), "c7 c1999 c0 c7");
    assert_ptr_equal(sel[0], cp_config_find(cfg, CP_CDS, "c7"));
    free(sel);
    n = cp_config_select(cfg, "n", "", CP_CDS, want, 6, &sel);
    assert_string_equal(names_of(sel, n, buf, sizeof(buf)), "z c7 c1999 c0 c7");
    assert_ptr_equal(sel[0], &cfg->scopes[1].rs.res[CP_CDS][0]);
    assert_ptr_equal(sel[1], &cfg->scopes[0].rs.res[CP_CDS][0]);
    free(sel);

    /* a type with no resources at all */
    n = cp_config_select(cfg, "n", "", CP_EDS, want, 6, &sel);
    assert_int_equal(n, 0);
    assert_non_null(sel);
    free(sel);

    assert_null(cp_config_find(cfg, CP_CDS, "z")); /* global ones only */
    assert_null(cp_config_find(cfg, CP_EDS, "c0"));
    assert_string_equal(cp_config_find(cfg, CP_CDS, "c1234")->name, "c1234");
    cp_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duplicate_names),
        cmocka_unit_test(test_select),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
