/* dp_string_matcher_build: the one builder from envoy.type.matcher.v3.
 * StringMatcher that route header matchers, TLS SAN matchers and the mTLS
 * filter share (every kind, ignore_case, and each refusal's text). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "dataplane/matcher.h"
#include "envoy/type/matcher/v3/regex.pb-c.h"
#include "envoy/type/matcher/v3/string.pb-c.h"

typedef Envoy__Type__Matcher__V3__StringMatcher StringMatcherPb;

static char err[512];

static int match(const struct dp_string_matcher *m, const char *s)
{
    return dp_string_match(m, s, strlen(s));
}

static StringMatcherPb pb(int which, const char *v, Envoy__Type__Matcher__V3__RegexMatcher *re,
                          int ignore_case)
{
    StringMatcherPb sm = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__INIT;
    sm.match_pattern_case = (Envoy__Type__Matcher__V3__StringMatcher__MatchPatternCase)which;
    sm.ignore_case = ignore_case;
    switch (which) {
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT:
        sm.exact = (char *)v;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX:
        sm.prefix = (char *)v;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX:
        sm.suffix = (char *)v;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS:
        sm.contains = (char *)v;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX:
        sm.safe_regex = re;
        break;
    default:
        break;
    }
    return sm;
}

/* Each kind, with and without ignore_case: what must match and what must not. */
static const struct {
    int which;
    const char *value; /* the regex for SAFE_REGEX */
    int ignore_case;
    const char *yes[3];
    const char *no[3];
} cases[] = {
    {ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT, "api.example.org", 0,
     {"api.example.org"}, {"API.example.org", "api.example.org.evil", "api.example.or"}},
    {ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT, "Api.Example.org", 1,
     {"API.EXAMPLE.ORG", "api.example.org"}, {"api.example.org.evil"}},
    {ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX, "spiffe://a/", 0,
     {"spiffe://a/ns/x", "spiffe://a/"}, {"spiffe://b/ns/x", "spiffe:", "SPIFFE://a/x"}},
    {ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX, "Spiffe://A/", 1,
     {"spiffe://a/x", "SPIFFE://A/"}, {"spiffe://b/x"}},
    {ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX, ".example.org", 0,
     {"a.example.org"}, {"a.example.org.evil", "example.org", "a.EXAMPLE.org"}},
    {ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX, ".Example.org", 1,
     {"a.EXAMPLE.org", "b.example.ORG"}, {"example.org"}},
    {ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS, "/ns/", 0,
     {"spiffe://a/ns/x", "/ns/"}, {"spiffe://a/NS/x", "ns"}},
    {ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS, "/NS/", 1,
     {"spiffe://a/ns/x"}, {"spiffe://a/nsx"}},
    {ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX, "spiffe://[a-z.]+/ns/[a-z]+", 0,
     {"spiffe://example.org/ns/prod"},
     {"spiffe://example.org/ns/prod/extra" /* anchored */, "xspiffe://example.org/ns/prod",
      "spiffe://example.org/ns/PROD"}},
    {ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX, "spiffe://[a-z.]+/ns/[a-z]+", 1,
     {"SPIFFE://Example.org/ns/PROD"}, {"spiffe://example.org/ns/prod/extra"}},
};

static void test_kinds(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Envoy__Type__Matcher__V3__RegexMatcher re = ENVOY__TYPE__MATCHER__V3__REGEX_MATCHER__INIT;
        re.regex = (char *)cases[i].value;
        StringMatcherPb sm = pb(cases[i].which, cases[i].value, &re, cases[i].ignore_case);
        struct dp_string_matcher m;
        if (dp_string_matcher_build(&m, &sm, "m", err, sizeof(err)) != 0)
            fail_msg("case %zu: %s", i, err);
        for (size_t j = 0; j < 3; j++) {
            if (cases[i].yes[j] && !match(&m, cases[i].yes[j]))
                fail_msg("case %zu: \"%s\" should match", i, cases[i].yes[j]);
            if (cases[i].no[j] && match(&m, cases[i].no[j]))
                fail_msg("case %zu: \"%s\" should not match", i, cases[i].no[j]);
        }
        dp_string_matcher_free(&m);
    }
}

/* A failed build leaves nothing to free: dp_string_matcher_free on it is a
 * no-op (what the callers' cleanup paths do). */
static void expect_refusal(const StringMatcherPb *sm, const char *want)
{
    struct dp_string_matcher m;
    memset(&m, 0x5a, sizeof(m)); /* the builder overwrites whatever was there */
    assert_int_equal(dp_string_matcher_build(&m, sm, "allowed_sans[0].matcher", err, sizeof(err)), -1);
    assert_string_equal(err, want);
    dp_string_matcher_free(&m);
}

static void test_refusals(void **state)
{
    Envoy__Type__Matcher__V3__RegexMatcher re = ENVOY__TYPE__MATCHER__V3__REGEX_MATCHER__INIT;
    StringMatcherPb sm;

    expect_refusal(NULL, "allowed_sans[0].matcher: required");
    sm = pb(0, NULL, NULL, 1); /* ignore_case alone */
    expect_refusal(&sm, "allowed_sans[0].matcher: one of exact, prefix, suffix, contains or safe_regex "
                        "is required");
    sm = pb(ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX, NULL, NULL, 0);
    expect_refusal(&sm, "allowed_sans[0].matcher.safe_regex.regex: required");
    re.regex = "";
    sm = pb(ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX, NULL, &re, 0);
    expect_refusal(&sm, "allowed_sans[0].matcher.safe_regex.regex: required");

    /* the middle is the C library's own words */
    struct dp_string_matcher m;
    re.regex = "a(";
    sm = pb(ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX, NULL, &re, 0);
    assert_int_equal(dp_string_matcher_build(&m, &sm, "m", err, sizeof(err)), -1);
    assert_true(strncmp(err, "m: invalid regex \"a(\": ", 23) == 0);
    assert_non_null(strstr(err, " (legate uses POSIX extended regular expressions)"));
    dp_string_matcher_free(&m);
}

/* Envoy's StringMatcher.custom (field 8, an extension matcher) is not in
 * legate's proto: it decodes as an unknown field and is refused by name. */
static void test_custom_refused(void **state)
{
    /* field 8, length-delimited, an empty TypedExtensionConfig */
    static const uint8_t wire[] = {0x42, 0x00};
    StringMatcherPb *sm = envoy__type__matcher__v3__string_matcher__unpack(NULL, sizeof(wire), wire);
    assert_non_null(sm);
    expect_refusal(sm, "allowed_sans[0].matcher.custom: not supported (exact, prefix, suffix, contains "
                       "or safe_regex)");
    envoy__type__matcher__v3__string_matcher__free_unpacked(sm, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kinds),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_custom_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
