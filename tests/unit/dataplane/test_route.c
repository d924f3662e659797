/* Route tables: compiling from RouteConfiguration (YAML through the shared
 * converter) and matching requests the way Envoy does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "dataplane/route.h"
#include "xds/convert.h"

static char err[512];

static struct dp_route_table *build(const char *yaml)
{
    ProtobufCMessage *m;
    if (xds_convert_text(yaml, strlen(yaml), &envoy__config__route__v3__route_configuration__descriptor,
                         &m, err, sizeof(err)) != 0)
        fail_msg("convert: %s", err);
    struct dp_route_table *t = dp_route_table_build((void *)m, NULL, 0, err, sizeof(err));
    protobuf_c_message_free_unpacked(m, NULL);
    return t;
}

static const struct dp_route *find(const struct dp_route_table *t, const char *host, const char *path,
                                   const char *hname, const char *hval, const struct dp_virtual_host **vh)
{
    static struct dp_header hdr;
    struct dp_request_head req = {
        .method = DP_STR_LIT("GET"),
        .scheme = DP_STR_LIT("https"),
        .authority = {host, strlen(host)},
        .path = {path, strlen(path)},
    };
    if (hname) {
        hdr.name = (struct dp_str){hname, strlen(hname)};
        hdr.value = (struct dp_str){hval, strlen(hval)};
        req.headers.v = &hdr;
        req.headers.n = 1;
    }
    const struct dp_virtual_host *dummy;
    return dp_route_find(t, &req, vh ? vh : &dummy);
}

static const char *routes_yaml =
    "virtual_hosts:\n"
    "- name: exact\n"
    "  domains: [api.example.com]\n"
    "  routes:\n"
    "  - match: {prefix: /v1/, headers: [{name: x-env, exact_match: canary}]}\n"
    "    route: {cluster: canary}\n"
    "  - match: {prefix: /v1/}\n"
    "    route: {cluster: v1, prefix_rewrite: /, timeout: 2s}\n"
    "  - match: {path: /health}\n"
    "    direct_response: {status: 200, body: {inline_string: ok}}\n"
    "  - match: {safe_regex: {regex: '/users/[0-9]+'}}\n"
    "    route: {cluster: users}\n"
    "  - match: {prefix: /old}\n"
    "    redirect: {path_redirect: /new, response_code: PERMANENT_REDIRECT}\n"
    "- name: suffix\n"
    "  domains: ['*.example.com']\n"
    "  routes: [{match: {prefix: /}, route: {cluster: wild}}]\n"
    "- name: longer-suffix\n"
    "  domains: ['*.shop.example.com']\n"
    "  routes: [{match: {prefix: /}, route: {cluster: shop}}]\n"
    "- name: prefix\n"
    "  domains: ['internal.*']\n"
    "  routes: [{match: {prefix: /}, route: {cluster: internal}}]\n"
    "- name: any\n"
    "  domains: ['*']\n"
    "  routes: [{match: {prefix: /, case_sensitive: false, headers: [{name: ':method', exact_match: GET}]}, route: {cluster: fallback}}]\n";

static void test_vhost_order(void **state)
{
    struct dp_route_table *t = build(routes_yaml);
    assert_non_null(t);
    const struct dp_virtual_host *vh;
    assert_non_null(find(t, "api.example.com", "/v1/x", NULL, NULL, &vh));
    assert_string_equal(vh->name, "exact");
    assert_non_null(find(t, "API.example.com:8443", "/v1/x", NULL, NULL, &vh));
    assert_string_equal(vh->name, "exact"); /* case-insensitive, port stripped */
    find(t, "x.shop.example.com", "/", NULL, NULL, &vh);
    assert_string_equal(vh->name, "longer-suffix");
    find(t, "www.example.com", "/", NULL, NULL, &vh);
    assert_string_equal(vh->name, "suffix");
    find(t, "internal.corp", "/", NULL, NULL, &vh);
    assert_string_equal(vh->name, "prefix");
    find(t, "example.org", "/", NULL, NULL, &vh);
    assert_string_equal(vh->name, "any");
    dp_route_table_unref(t);
}

static void test_route_matching(void **state)
{
    struct dp_route_table *t = build(routes_yaml);
    const struct dp_route *r = find(t, "api.example.com", "/v1/items?x=1", "x-env", "canary", NULL);
    assert_string_equal(r->cluster, "canary");
    r = find(t, "api.example.com", "/v1/items", "x-env", "prod", NULL);
    assert_string_equal(r->cluster, "v1");
    assert_string_equal(r->prefix_rewrite, "/");
    assert_true(r->timeout == 2.0);
    r = find(t, "api.example.com", "/health?probe=1", NULL, NULL, NULL);
    assert_int_equal(r->action, DP_ROUTE_DIRECT_RESPONSE);
    assert_int_equal(r->direct_status, 200);
    assert_memory_equal(r->direct_body, "ok", 2);
    assert_null(find(t, "api.example.com", "/healthz", NULL, NULL, NULL));
    r = find(t, "api.example.com", "/users/42", NULL, NULL, NULL);
    assert_string_equal(r->cluster, "users");
    assert_true(r->timeout == 15.0); /* Envoy's default */
    assert_null(find(t, "api.example.com", "/users/abc", NULL, NULL, NULL));
    r = find(t, "api.example.com", "/old/page", NULL, NULL, NULL);
    assert_int_equal(r->action, DP_ROUTE_REDIRECT);
    assert_int_equal(r->direct_status, 308);
    assert_string_equal(r->redirect_path, "/new");
    r = find(t, "other", "/ANYTHING", NULL, NULL, NULL);
    assert_string_equal(r->cluster, "fallback");
    dp_route_table_unref(t);
}

static void test_missing_header_as_empty(void **state)
{
    (void)state;
    struct dp_route_table *t = build(
        "virtual_hosts:\n"
        "- name: all\n"
        "  domains: ['*']\n"
        "  routes:\n"
        "  - match: {prefix: /, headers: [{name: x-tenant, string_match: {exact: ''}, "
        "treat_missing_header_as_empty: true}]}\n"
        "    route: {cluster: no-tenant}\n"
        "  - match: {prefix: /, headers: [{name: x-tenant, string_match: {exact: ''}}]}\n"
        "    route: {cluster: empty-tenant}\n"
        "  - match: {prefix: /}\n"
        "    route: {cluster: tenant}\n");
    assert_non_null(t);
    /* missing: as if present and empty */
    assert_string_equal(find(t, "a", "/", NULL, NULL, NULL)->cluster, "no-tenant");
    assert_string_equal(find(t, "a", "/", "x-tenant", "", NULL)->cluster, "no-tenant");
    assert_string_equal(find(t, "a", "/", "x-tenant", "acme", NULL)->cluster, "tenant");
    dp_route_table_unref(t);
}

static void expect_error(const char *yaml, const char *want)
{
    struct dp_route_table *t = build(yaml);
    assert_null(t);
    assert_string_equal(err, want);
}

static void test_rejections(void **state)
{
    expect_error("virtual_hosts: [{name: a, routes: []}]",
                 "virtual_hosts[0].domains: at least one domain is required");
    expect_error("virtual_hosts: [{name: a, domains: ['a*b']}]",
                 "virtual_hosts[0].domains[0]: \"a*b\" is not a valid domain (exact, \"*.suffix\", "
                 "\"prefix.*\" or \"*\")");
    expect_error("virtual_hosts: [{name: a, domains: [x]}, {name: b, domains: [X]}]",
                 "virtual_hosts[1].domains[0]: \"X\" is already used by virtual host \"a\"");
    expect_error("virtual_hosts: [{name: a, domains: [x], routes: [{match: {prefix: /}}]}]",
                 "virtual_hosts[0].routes[0]: one of route, redirect or direct_response is required");
    expect_error("virtual_hosts: [{name: a, domains: [x], routes: [{route: {cluster: c}}]}]",
                 "virtual_hosts[0].routes[0].match: required field is missing");
    expect_error("virtual_hosts: [{name: a, domains: [x], routes: [{match: {prefix: /}, route: {cluster_header: x}}]}]",
                 "virtual_hosts[0].routes[0].route: only \"cluster\" is supported as the cluster specifier");
    expect_error("virtual_hosts: [{name: a, domains: [x], routes: [{match: {safe_regex: {regex: '('}}, route: {cluster: c}}]}]",
                 "virtual_hosts[0].routes[0].match.safe_regex: invalid regex \"(\": Unmatched ( or \\( "
                 "(legate uses POSIX extended regular expressions)");
    expect_error("virtual_hosts: [{name: a, domains: [x], routes: [{match: {prefix: /}, direct_response: {status: 99}}]}]",
                 "virtual_hosts[0].routes[0].direct_response.status: 99 is not an HTTP status between 200 and 599");
    expect_error("virtual_hosts: [{name: a, domains: [x], routes: [{match: {prefix: /}, direct_response: {status: 200, body: {filename: /nonexistent}}}]}]",
                 "virtual_hosts[0].routes[0].direct_response.body.filename: /nonexistent: No such file or directory");
    expect_error("virtual_hosts: [{name: a, domains: [x], routes: [{match: {prefix: /}, route: {cluster: c}, typed_per_filter_config: {envoy.filters.http.lua: {'@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}]}]",
                 "virtual_hosts[0].routes[0].typed_per_filter_config[\"envoy.filters.http.lua\"]: no HTTP filter of that name in the connection manager");
}

static void test_string_matchers(void **state)
{
    struct dp_string_matcher m;
    char e[128];
    assert_int_equal(dp_string_matcher_init(&m, DP_MATCH_SUFFIX, ".Example.org", 1, e, sizeof(e)), 0);
    assert_true(dp_string_match(&m, "a.EXAMPLE.org", 13));
    assert_false(dp_string_match(&m, "example.org", 11));
    dp_string_matcher_free(&m);
    assert_int_equal(dp_string_matcher_init(&m, DP_MATCH_CONTAINS, "ns/default", 0, e, sizeof(e)), 0);
    assert_true(dp_string_match(&m, "spiffe://x/ns/default/sa/y", 26));
    assert_false(dp_string_match(&m, "spiffe://x/ns/Default/sa/y", 26));
    dp_string_matcher_free(&m);
    assert_int_equal(dp_string_matcher_init(&m, DP_MATCH_REGEX, "spiffe://[a-z.]+/ns/[a-z]+", 0, e, sizeof(e)), 0);
    assert_true(dp_string_match(&m, "spiffe://example.org/ns/prod", 28));
    assert_false(dp_string_match(&m, "spiffe://example.org/ns/prod/extra", 34)); /* anchored */
    dp_string_matcher_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vhost_order),
        cmocka_unit_test(test_route_matching),
        cmocka_unit_test(test_missing_header_as_empty),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_string_matchers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
