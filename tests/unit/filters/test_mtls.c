/* legate.filters.http.mtls: config rejections (each names its field), SAN
 * and subject matching, the verdicts and their JSON bodies, the per-route
 * override through a real route table, and XFCC formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "dataplane/buf.h"
#include "dataplane/route.h"
#include "dataplane/xfcc.h"
#include "filters/mtls/mtls.h"
#include "legate/filters/http/mtls/v1/mtls.pb-c.h"
#include "xds/convert.h"

static char err[512];

static struct dp_mtls_cfg *cfg_from(const char *yaml)
{
    ProtobufCMessage *m;
    if (xds_convert_text(yaml, strlen(yaml), &legate__filters__http__mtls__v1__mtls__descriptor, &m,
                         err, sizeof(err)) != 0)
        fail_msg("convert: %s", err);
    err[0] = '\0';
    struct dp_mtls_cfg *c = dp_mtls_config_new(m, err, sizeof(err));
    protobuf_c_message_free_unpacked(m, NULL);
    return c;
}

static void expect_reject(const char *yaml, const char *want)
{
    struct dp_mtls_cfg *c = cfg_from(yaml);
    if (c != NULL) {
        dp_mtls_config_free(c);
        fail_msg("accepted: %s", yaml);
    }
    assert_string_equal(err, want);
}

/* ---- config -------------------------------------------------------------------- */

static void test_config_defaults(void **state)
{
    struct dp_mtls_cfg *c = dp_mtls_config_new(NULL, err, sizeof(err));
    assert_non_null(c);
    assert_int_equal(c->kind, DP_MTLS_CFG_FILTER);
    assert_int_equal(c->require, 0);
    assert_null(c->anonymous);
    dp_mtls_config_free(c);

    c = cfg_from("require_certificate: true\n"
                 "allowed_sans: [{san_type: URI, matcher: {prefix: 'spiffe://example.org/'}}]\n"
                 "allowed_subjects: ['O=legate test']\n"
                 "allowed_issuers: ['CN=legate test client CA,O=legate test']\n"
                 "consumers:\n"
                 "- {username: client, id: c-1, sans: [{san_type: URI, matcher: {exact: 'spiffe://x/client'}}]}\n"
                 "- {username: other, custom_id: ext-2, subjects: ['CN=other']}\n"
                 "anonymous: guest\n");
    assert_non_null(c);
    assert_int_equal(c->require, 1);
    assert_int_equal(c->n_sans, 1);
    assert_int_equal(c->n_subjects, 1);
    assert_int_equal(c->n_issuers, 1);
    assert_int_equal(c->issuers[0].n, 2);
    assert_string_equal(c->issuers[0].v[0].type, "CN");
    assert_string_equal(c->issuers[0].v[0].value, "legate test client CA");
    assert_int_equal(c->n_consumers, 2);
    assert_string_equal(c->consumers[0].id, "c-1");
    assert_null(c->consumers[0].custom_id);
    assert_null(c->consumers[1].id);
    assert_string_equal(c->consumers[1].custom_id, "ext-2");
    assert_string_equal(c->anonymous, "guest");
    dp_mtls_config_free(c);
}

static void test_config_rejections(void **state)
{
    expect_reject("consumers:\n"
                  "- {username: a, sans: [{san_type: DNS, matcher: {exact: a}}]}\n"
                  "- {id: x, sans: [{san_type: DNS, matcher: {exact: b}}]}\n",
                  "consumers[1].username: required");
    expect_reject("allowed_sans: [{matcher: {exact: a}}]",
                  "allowed_sans[0].san_type: required (DNS, URI or EMAIL)");
    expect_reject("allowed_sans: [{san_type: URI, matcher: {exact: a}}, {san_type: IP_ADDRESS, matcher: {exact: 127.0.0.1}}]",
                  "allowed_sans[1].san_type: only DNS, URI and EMAIL are supported here");
    expect_reject("allowed_sans: [{san_type: URI}]", "allowed_sans[0].matcher: required");
    expect_reject("allowed_sans: [{san_type: URI, matcher: {ignore_case: true}}]",
                  "allowed_sans[0].matcher: one of exact, prefix, suffix, contains or safe_regex is required");
    /* the regex error's middle is the C library's own words */
    assert_null(cfg_from("allowed_sans: [{san_type: URI, matcher: {safe_regex: {regex: 'a('}}}]"));
    assert_true(strncmp(err, "allowed_sans[0].matcher: invalid regex \"a(\": ", 40) == 0);
    expect_reject("allowed_subjects: ['CN=a', 'client']",
                  "allowed_subjects[1]: expected one attribute (\"CN=client\") or a whole RFC 2253 "
                  "name (\"CN=client,O=example\"), got \"client\"");
    expect_reject("allowed_issuers: ['CN=a,,O=b']",
                  "allowed_issuers[0]: expected one attribute (\"CN=client\") or a whole RFC 2253 "
                  "name (\"CN=client,O=example\"), got \"CN=a,,O=b\"");
    expect_reject("allowed_subjects: ['=x']",
                  "allowed_subjects[0]: expected one attribute (\"CN=client\") or a whole RFC 2253 "
                  "name (\"CN=client,O=example\"), got \"=x\"");
    expect_reject("consumers: [{username: a}]",
                  "consumers[0]: sans or subjects is required (what identifies the consumer)");
    expect_reject("consumers: [{username: a, sans: [{san_type: EMAIL}]}]",
                  "consumers[0].sans[0].matcher: required");
    expect_reject("consumers: [{username: a, subjects: [nope]}]",
                  "consumers[0].subjects[0]: expected one attribute (\"CN=client\") or a whole RFC "
                  "2253 name (\"CN=client,O=example\"), got \"nope\"");
    expect_reject("consumers: [{username: a, subjects: ['CN=a']}, {username: a, subjects: ['CN=b']}]",
                  "consumers[1].username: \"a\" is already consumers[0]");
    expect_reject("consumers: [{username: a, id: \"x\\r\\nx-admin: 1\", subjects: ['CN=a']}]",
                  "consumers[0].id: control characters are not allowed in a header value");
    expect_reject("anonymous: \"guest\\n\"",
                  "anonymous: control characters are not allowed in a header value");
}

static void test_route_config(void **state)
{
    Legate__Filters__Http__Mtls__V1__MtlsPerRoute pr = LEGATE__FILTERS__HTTP__MTLS__V1__MTLS_PER_ROUTE__INIT;
    Google__Protobuf__BoolValue no = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
    struct dp_mtls_route_cfg *rc = dp_mtls_route_config_new(&pr.base, err, sizeof(err));
    assert_non_null(rc);
    assert_int_equal(rc->kind, DP_MTLS_CFG_ROUTE);
    assert_int_equal(rc->require, -1);
    assert_int_equal(rc->disabled, 0);
    dp_mtls_config_free(rc);
    pr.require_certificate = &no;
    rc = dp_mtls_route_config_new(&pr.base, err, sizeof(err));
    assert_int_equal(rc->require, 0);
    dp_mtls_config_free(rc);
    pr.disabled = 1;
    assert_null(dp_mtls_route_config_new(&pr.base, err, sizeof(err)));
    assert_string_equal(err, "require_certificate: has no effect when disabled is true");
}

/* The override through the route table, as the connection manager builds it. */
static void test_route_table(void **state)
{
    struct dp_mtls_cfg *c = cfg_from("require_certificate: true");
    struct dp_http_filter filters[] = {
        {.ops = &dp_mtls_filter, .name = "legate.filters.http.mtls", .cfg = c},
    };
    const char *yaml =
        "virtual_hosts:\n"
        "- name: all\n"
        "  domains: ['*']\n"
        "  typed_per_filter_config:\n"
        "    legate.filters.http.mtls: {'@type': type.googleapis.com/legate.filters.http.mtls.v1.MtlsPerRoute, disabled: true}\n"
        "  routes:\n"
        "  - match: {prefix: /public}\n"
        "    route: {cluster: c}\n"
        "    typed_per_filter_config:\n"
        "      legate.filters.http.mtls: {'@type': type.googleapis.com/legate.filters.http.mtls.v1.MtlsPerRoute, require_certificate: false}\n"
        "  - match: {prefix: /}\n"
        "    route: {cluster: c}\n";
    ProtobufCMessage *m;
    assert_int_equal(xds_convert_text(yaml, strlen(yaml),
                                      &envoy__config__route__v3__route_configuration__descriptor, &m,
                                      err, sizeof(err)),
                     0);
    struct dp_route_table *t = dp_route_table_build((void *)m, filters, 1, err, sizeof(err));
    protobuf_c_message_free_unpacked(m, NULL);
    assert_non_null(t);
    const struct dp_route *r = &t->vhosts[0].routes[0];
    const struct dp_mtls_route_cfg *rc = r->filter_cfg[0];
    assert_int_equal(rc->kind, DP_MTLS_CFG_ROUTE);
    assert_int_equal(rc->require, 0);
    assert_int_equal(rc->disabled, 0); /* the route's own override wins over the vhost's */
    rc = t->vhosts[0].routes[1].filter_cfg[0];
    assert_int_equal(rc->disabled, 1);
    dp_route_table_unref(t);

    yaml = "virtual_hosts:\n"
           "- name: all\n"
           "  domains: ['*']\n"
           "  routes:\n"
           "  - match: {prefix: /}\n"
           "    route: {cluster: c}\n"
           "    typed_per_filter_config:\n"
           "      legate.filters.http.mtls: {'@type': type.googleapis.com/legate.filters.http.mtls.v1.MtlsPerRoute, disabled: true, require_certificate: true}\n";
    assert_int_equal(xds_convert_text(yaml, strlen(yaml),
                                      &envoy__config__route__v3__route_configuration__descriptor, &m,
                                      err, sizeof(err)),
                     0);
    t = dp_route_table_build((void *)m, filters, 1, err, sizeof(err));
    protobuf_c_message_free_unpacked(m, NULL);
    assert_null(t);
    assert_string_equal(err, "virtual_hosts[0].routes[0].typed_per_filter_config[\"legate.filters.http.mtls\"]: "
                             "require_certificate: has no effect when disabled is true");
    dp_mtls_config_free(c);
}

/* ---- matching -------------------------------------------------------------------- */

static const char *const uris[] = {"spiffe://example.org/ns/default/sa/client"};
static const char *const dnss[] = {"client.example.org", "*.svc.example.org"};
static const char *const emails[] = {"client@example.org"};

static struct dp_peer_identity verified_id(void)
{
    return (struct dp_peer_identity){
        .tls = 1,
        .presented = 1,
        .verified = 1,
        .subject = "CN=client,O=legate test",
        .issuer = "CN=legate test client CA,O=legate test",
        .uri_sans = uris,
        .n_uri_sans = 1,
        .dns_sans = dnss,
        .n_dns_sans = 2,
        .email_sans = emails,
        .n_email_sans = 1,
    };
}

static int sans_match(const char *yaml)
{
    struct dp_mtls_cfg *c = cfg_from(yaml);
    if (c == NULL)
        fail_msg("rejected: %s: %s", yaml, err);
    struct dp_peer_identity id = verified_id();
    int ok = dp_mtls_san_match(c->sans, c->n_sans, &id);
    dp_mtls_config_free(c);
    return ok;
}

static void test_san_matching(void **state)
{
    assert_true(sans_match("allowed_sans: [{san_type: URI, matcher: {exact: 'spiffe://example.org/ns/default/sa/client'}}]"));
    assert_true(sans_match("allowed_sans: [{san_type: URI, matcher: {prefix: 'spiffe://example.org/'}}]"));
    assert_false(sans_match("allowed_sans: [{san_type: URI, matcher: {prefix: 'spiffe://evil.org/'}}]"));
    /* the type counts: the DNS name is not a URI */
    assert_false(sans_match("allowed_sans: [{san_type: URI, matcher: {exact: client.example.org}}]"));
    assert_true(sans_match("allowed_sans: [{san_type: DNS, matcher: {exact: client.example.org}}]"));
    assert_true(sans_match("allowed_sans: [{san_type: DNS, matcher: {exact: CLIENT.example.org, ignore_case: true}}]"));
    assert_false(sans_match("allowed_sans: [{san_type: DNS, matcher: {exact: CLIENT.example.org}}]"));
    assert_true(sans_match("allowed_sans: [{san_type: EMAIL, matcher: {suffix: '@example.org'}}]"));
    assert_true(sans_match("allowed_sans: [{san_type: URI, matcher: {safe_regex: {regex: 'spiffe://example\\.org/ns/[a-z]+/sa/client'}}}]"));
    assert_false(sans_match("allowed_sans: [{san_type: URI, matcher: {safe_regex: {regex: 'ns/default'}}}]")); /* anchored */
    assert_true(sans_match("allowed_sans: [{san_type: URI, matcher: {contains: '/sa/'}}]"));
    /* any of the matchers */
    assert_true(sans_match("allowed_sans: [{san_type: DNS, matcher: {exact: nope}}, {san_type: EMAIL, matcher: {exact: client@example.org}}]"));
    /* a wildcard certificate SAN stands for exactly one label */
    assert_true(sans_match("allowed_sans: [{san_type: DNS, matcher: {exact: api.svc.example.org}}]"));
    assert_false(sans_match("allowed_sans: [{san_type: DNS, matcher: {exact: a.b.svc.example.org}}]"));
    assert_false(sans_match("allowed_sans: [{san_type: DNS, matcher: {exact: svc.example.org}}]"));
    /* no SANs at all */
    struct dp_mtls_cfg *c = cfg_from("allowed_sans: [{san_type: URI, matcher: {prefix: ''}}]");
    struct dp_peer_identity none = {.tls = 1, .presented = 1, .verified = 1};
    assert_false(dp_mtls_san_match(c->sans, c->n_sans, &none));
    dp_mtls_config_free(c);
}

static int dn(const char *pattern, const char *name)
{
    struct dp_mtls_dn p;
    if (dp_mtls_dn_parse(pattern, &p, err, sizeof(err)) < 0)
        fail_msg("parse %s: %s", pattern, err);
    int ok = dp_mtls_dn_match(&p, 1, name);
    dp_mtls_dn_free(&p);
    return ok;
}

static void test_dn_matching(void **state)
{
    const char *subj = "CN=client,O=legate test";
    assert_true(dn("CN=client", subj));
    assert_true(dn("O=legate test", subj));
    assert_true(dn("cn = client", subj)); /* type case and spaces around do not matter */
    assert_false(dn("CN=Client", subj));  /* values are compared exactly */
    assert_false(dn("CN=clien", subj));
    assert_false(dn("OU=client", subj));
    /* several attributes: the whole name, in order */
    assert_true(dn("CN=client,O=legate test", subj));
    assert_true(dn("CN=client, O=legate test", subj));
    assert_false(dn("O=legate test,CN=client", subj));
    assert_false(dn("CN=client,O=legate test,C=FR", subj));
    assert_false(dn("CN=client,O=legate", subj));
    assert_false(dn("CN=client", NULL));
    /* RFC 2253 escapes: an escaped comma is part of the value */
    assert_true(dn("O=Acme\\, Inc.", "CN=x,O=Acme\\, Inc."));
    assert_false(dn("O=Acme", "CN=x,O=Acme\\, Inc."));
    assert_true(dn("CN=x,O=Acme\\, Inc.", "CN=x,O=Acme\\, Inc."));
    /* multi-valued RDNs count attribute by attribute */
    assert_true(dn("UID=42", "CN=x+UID=42,O=y"));
    /* a value with '=' in it */
    assert_true(dn("CN=a=b", "CN=a=b,O=y"));
}

/* ---- verdicts ---------------------------------------------------------------------- */

static const char *const consumers_yaml =
    "allowed_sans: [{san_type: URI, matcher: {prefix: 'spiffe://example.org/'}}]\n"
    "consumers:\n"
    "- {username: nobody, sans: [{san_type: URI, matcher: {exact: 'spiffe://example.org/x'}}]}\n"
    "- {username: client-by-subject, subjects: ['CN=client'], sans: [{san_type: DNS, matcher: {exact: nope}}]}\n"
    "- {username: client, id: c-1, subjects: ['CN=client'], sans: [{san_type: URI, matcher: {suffix: /sa/client}}]}\n"
    "- {username: later, subjects: ['CN=client']}\n"
    "anonymous: guest\n";

static void test_decide(void **state)
{
    struct dp_mtls_cfg *c = cfg_from(consumers_yaml);
    assert_non_null(c);
    const struct dp_mtls_consumer *who;
    struct dp_peer_identity id = verified_id();

    /* both kinds of matcher must agree; the first consumer that matches wins */
    assert_int_equal(dp_mtls_decide(c, 1, &id, &who), DP_MTLS_ALLOW);
    assert_non_null(who);
    assert_string_equal(who->username, "client");
    assert_string_equal(who->id, "c-1");

    struct dp_peer_identity plain = {0};
    assert_int_equal(dp_mtls_decide(c, 1, &plain, &who), DP_MTLS_NO_CERT);
    assert_int_equal(dp_mtls_decide(c, 0, &plain, &who), DP_MTLS_ANONYMOUS);
    assert_null(who);
    struct dp_peer_identity none = {.tls = 1, .verify_reason = "no certificate"};
    assert_int_equal(dp_mtls_decide(c, 1, &none, &who), DP_MTLS_NO_CERT);
    assert_int_equal(dp_mtls_decide(c, 0, &none, &who), DP_MTLS_ANONYMOUS);

    struct dp_peer_identity bad = verified_id();
    bad.verified = 0;
    bad.verify_reason = "revoked";
    assert_int_equal(dp_mtls_decide(c, 1, &bad, &who), DP_MTLS_UNVERIFIED);
    assert_null(who);
    /* not required: a certificate that failed is no identity, never a consumer */
    assert_int_equal(dp_mtls_decide(c, 0, &bad, &who), DP_MTLS_ANONYMOUS);
    assert_null(who);

    static const char *const evil[] = {"spiffe://evil.org/ns/x/sa/client"};
    struct dp_peer_identity other = verified_id();
    other.uri_sans = evil;
    assert_int_equal(dp_mtls_decide(c, 1, &other, &who), DP_MTLS_FORBIDDEN);
    assert_int_equal(dp_mtls_decide(c, 0, &other, &who), DP_MTLS_ANONYMOUS);
    assert_null(who);

    /* allowed, no consumer matches: allowed without consumer headers */
    static const char *const stranger[] = {"spiffe://example.org/ns/default/sa/stranger"};
    struct dp_peer_identity s2 = verified_id();
    s2.uri_sans = stranger;
    s2.subject = "CN=stranger,O=legate test";
    assert_int_equal(dp_mtls_decide(c, 1, &s2, &who), DP_MTLS_ALLOW);
    assert_null(who);
    dp_mtls_config_free(c);

    /* subjects and issuers */
    c = cfg_from("allowed_subjects: ['O=legate test']\n"
                 "allowed_issuers: ['CN=legate test client CA,O=legate test']\n");
    assert_int_equal(dp_mtls_decide(c, 1, &id, &who), DP_MTLS_ALLOW);
    struct dp_peer_identity other_ca = verified_id();
    other_ca.issuer = "CN=some other CA";
    assert_int_equal(dp_mtls_decide(c, 1, &other_ca, &who), DP_MTLS_FORBIDDEN);
    struct dp_peer_identity other_org = verified_id();
    other_org.subject = "CN=client,O=elsewhere";
    assert_int_equal(dp_mtls_decide(c, 1, &other_org, &who), DP_MTLS_FORBIDDEN);
    dp_mtls_config_free(c);
}

static void test_reasons_and_bodies(void **state)
{
    struct dp_peer_identity id = {.tls = 1, .presented = 1};
    const char *known[] = {"untrusted chain", "expired",         "not yet valid",
                           "revoked",         "SAN not allowed", "certificate not pinned"};
    for (size_t i = 0; i < 6; i++) {
        id.verify_reason = known[i];
        assert_string_equal(dp_mtls_reason(&id), known[i]);
    }
    id.verify_reason = "no validation context";
    assert_string_equal(dp_mtls_reason(&id), "untrusted chain");
    id.verify_reason = NULL;
    assert_string_equal(dp_mtls_reason(&id), "untrusted chain");

    char buf[256];
    int status;
    size_t n = dp_mtls_reply_body(DP_MTLS_NO_CERT, &id, &status, buf, sizeof(buf));
    assert_int_equal(status, 401);
    assert_string_equal(buf, "{\"message\":\"No required TLS certificate was sent\"}");
    assert_int_equal(n, strlen(buf));
    id.verify_reason = "expired";
    dp_mtls_reply_body(DP_MTLS_UNVERIFIED, &id, &status, buf, sizeof(buf));
    assert_int_equal(status, 401);
    assert_string_equal(buf, "{\"message\":\"TLS certificate failed verification\",\"reason\":\"expired\"}");
    dp_mtls_reply_body(DP_MTLS_FORBIDDEN, &id, &status, buf, sizeof(buf));
    assert_int_equal(status, 403);
    assert_string_equal(buf, "{\"message\":\"TLS certificate is not authorized\"}");
    assert_int_equal(dp_mtls_reply_body(DP_MTLS_ALLOW, &id, &status, buf, sizeof(buf)), 0);
    /* too small a buffer: nothing rather than a cut body */
    assert_int_equal(dp_mtls_reply_body(DP_MTLS_FORBIDDEN, &id, &status, buf, 10), 0);
}

/* ---- XFCC ------------------------------------------------------------------------------ */

static char *xfcc(const struct dp_peer_identity *id, const char *by, unsigned fields)
{
    static char out[2048];
    struct dp_buf b = {0};
    assert_int_equal(dp_xfcc_format(&b, id, by, fields), 0);
    snprintf(out, sizeof(out), "%.*s", (int)dp_buf_size(&b), (const char *)dp_buf_head(&b));
    dp_buf_release(&b);
    return out;
}

static void test_xfcc(void **state)
{
    struct dp_peer_identity id = verified_id();
    id.fingerprint = "ab01";
    unsigned all = DP_XFCC_F_SUBJECT | DP_XFCC_F_URI | DP_XFCC_F_DNS;
    assert_string_equal(xfcc(&id, "spiffe://legate/gw", all),
                        "By=spiffe://legate/gw;Hash=ab01;Subject=\"CN=client,O=legate test\";"
                        "URI=spiffe://example.org/ns/default/sa/client;DNS=client.example.org;"
                        "DNS=*.svc.example.org");
    assert_string_equal(xfcc(&id, NULL, DP_XFCC_F_URI),
                        "Hash=ab01;URI=spiffe://example.org/ns/default/sa/client");
    /* Envoy's escaping: ',', ';' or '=' in a value quote it, '"' becomes \",
     * and nothing else is escaped (RFC 2253's own backslashes stay as they are) */
    static const char *const odd_uri[] = {"spiffe://x/a;b=c"};
    struct dp_peer_identity odd = {
        .tls = 1, .presented = 1, .verified = 1,
        .fingerprint = "ff",
        .subject = "CN=say \\\"hi\\\",O=Acme\\, Inc.",
        .uri_sans = odd_uri, .n_uri_sans = 1,
    };
    assert_string_equal(xfcc(&odd, "spiffe://a,b", DP_XFCC_F_SUBJECT | DP_XFCC_F_URI),
                        "By=\"spiffe://a,b\";Hash=ff;Subject=\"CN=say \\\\\"hi\\\\\",O=Acme\\, Inc.\";"
                        "URI=\"spiffe://x/a;b=c\"");
    /* Cert: URL-encoded PEM, quoted; RFC 3986 unreserved characters kept */
    struct dp_peer_identity pem = {.tls = 1, .presented = 1, .verified = 1,
                                   .cert_pem = "-----BEGIN CERTIFICATE-----\nAb+/=\n"};
    assert_string_equal(xfcc(&pem, NULL, DP_XFCC_F_CERT),
                        "Cert=\"-----BEGIN%20CERTIFICATE-----%0AAb%2B%2F%3D%0A\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_rejections),
        cmocka_unit_test(test_route_config),
        cmocka_unit_test(test_route_table),
        cmocka_unit_test(test_san_matching),
        cmocka_unit_test(test_dn_matching),
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_reasons_and_bodies),
        cmocka_unit_test(test_xfcc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
