/*
 * String matchers (envoy.type.matcher.v3.StringMatcher, and the header and
 * path matchers of routes): compiled once on the config path, matched on
 * the request path. Part of the filter API: filter.h includes this header,
 * so a filter's config can take a StringMatcher and read like the routes'
 * and the TLS SAN matchers' (one builder, one set of error texts).
 */
#ifndef LEGATE_DP_MATCHER_H
#define LEGATE_DP_MATCHER_H

#include <regex.h>
#include <stddef.h>

struct Envoy__Type__Matcher__V3__StringMatcher;

enum dp_match_kind {
    DP_MATCH_EXACT,
    DP_MATCH_PREFIX,
    DP_MATCH_SUFFIX,
    DP_MATCH_CONTAINS,
    DP_MATCH_REGEX,
    DP_MATCH_PRESENT, /* header matchers only */
};

struct dp_string_matcher {
    enum dp_match_kind kind;
    int ignore_case;
    char *value;   /* NUL-terminated; lowercased when ignore_case */
    size_t len;
    regex_t re;    /* DP_MATCH_REGEX: POSIX ERE, anchored to the whole input */
    int has_re;
};

/** Returns 1 when s (n bytes, not necessarily NUL-terminated) matches. */
int dp_string_match(const struct dp_string_matcher *m, const char *s, size_t n);

/** Compiles an envoy.type.matcher.v3.StringMatcher into *m (which it
 *  overwrites): exact, prefix, suffix, contains, or safe_regex as a POSIX
 *  extended regular expression anchored to the whole input; ignore_case.
 *  path names the message in the caller's config ("allowed_sans[0].matcher").
 *  sm may be NULL (the field is unset). Returns 0, or -1 with "path...:
 *  reason" in err (no matcher, no pattern, an empty regex, one that does
 *  not compile, Envoy's custom extension matcher) and *m holding nothing to
 *  free. */
int dp_string_matcher_build(struct dp_string_matcher *m,
                            const struct Envoy__Type__Matcher__V3__StringMatcher *sm, const char *path,
                            char *err, size_t errlen);

/** Compiles one pattern of the given kind into *m (which it overwrites), for
 *  matchers that are not a StringMatcher message (route paths, the older
 *  header matcher fields). DP_MATCH_PRESENT: value unused. Returns 0, or -1
 *  with a reason (no field path) in err and *m holding nothing to free. */
int dp_string_matcher_init(struct dp_string_matcher *m, enum dp_match_kind kind, const char *value,
                           int ignore_case, char *err, size_t errlen);

/** Frees what a matcher holds (not m itself) and zeroes it; safe on a
 *  zeroed matcher and on one whose build failed. */
void dp_string_matcher_free(struct dp_string_matcher *m);

#endif
