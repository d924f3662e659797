/* String matchers: compiling one (from a kind and a value, or from an
 * envoy.type.matcher.v3.StringMatcher) and matching a string against it. */
#include "matcher.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "envoy/type/matcher/v3/string.pb-c.h"

/* Envoy's StringMatcher.custom (an extension matcher), which legate's
 * trimmed proto leaves out: it then arrives as an unknown field. */
#define STRING_MATCHER_CUSTOM 8

int dp_string_matcher_init(struct dp_string_matcher *m, enum dp_match_kind kind, const char *value,
                           int ignore_case, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    m->kind = kind;
    m->ignore_case = ignore_case;
    if (kind == DP_MATCH_PRESENT)
        return 0;
    if (kind == DP_MATCH_REGEX) {
        size_t n = strlen(value);
        char *anchored = malloc(n + 5);
        if (anchored == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        snprintf(anchored, n + 5, "^(%s)$", value);
        int rc = regcomp(&m->re, anchored, REG_EXTENDED | REG_NOSUB | (ignore_case ? REG_ICASE : 0));
        free(anchored);
        if (rc != 0) {
            char buf[128];
            regerror(rc, &m->re, buf, sizeof(buf));
            snprintf(err, errlen, "invalid regex \"%s\": %s (legate uses POSIX extended regular expressions)",
                     value, buf);
            return -1;
        }
        m->has_re = 1;
        return 0;
    }
    m->value = strdup(value);
    if (m->value == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    m->len = strlen(value);
    if (ignore_case)
        for (size_t i = 0; i < m->len; i++)
            m->value[i] = (char)tolower((unsigned char)m->value[i]);
    return 0;
}

void dp_string_matcher_free(struct dp_string_matcher *m)
{
    if (m->has_re)
        regfree(&m->re);
    free(m->value);
    memset(m, 0, sizeof(*m));
}

static int ncmp(const char *a, const char *b, size_t n, int icase)
{
    return icase ? strncasecmp(a, b, n) : memcmp(a, b, n);
}

int dp_string_match(const struct dp_string_matcher *m, const char *s, size_t n)
{
    switch (m->kind) {
    case DP_MATCH_EXACT:
        return n == m->len && ncmp(s, m->value, n, m->ignore_case) == 0;
    case DP_MATCH_PREFIX:
        return n >= m->len && ncmp(s, m->value, m->len, m->ignore_case) == 0;
    case DP_MATCH_SUFFIX:
        return n >= m->len && ncmp(s + n - m->len, m->value, m->len, m->ignore_case) == 0;
    case DP_MATCH_CONTAINS:
        if (m->len == 0)
            return 1;
        for (size_t i = 0; i + m->len <= n; i++)
            if (ncmp(s + i, m->value, m->len, m->ignore_case) == 0)
                return 1;
        return 0;
    case DP_MATCH_REGEX: {
        char small[512];
        char *buf = n < sizeof(small) ? small : malloc(n + 1);
        if (buf == NULL)
            return 0;
        memcpy(buf, s, n);
        buf[n] = '\0';
        int rc = regexec(&m->re, buf, 0, NULL, 0) == 0;
        if (buf != small)
            free(buf);
        return rc;
    }
    case DP_MATCH_PRESENT:
        return 1;
    }
    return 0;
}

static int has_unknown_field(const ProtobufCMessage *m, uint32_t tag)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == tag)
            return 1;
    return 0;
}

int dp_string_matcher_build(struct dp_string_matcher *m,
                            const struct Envoy__Type__Matcher__V3__StringMatcher *sm, const char *path,
                            char *err, size_t errlen)
{
    enum dp_match_kind kind;
    const char *val;
    char msg[256];
    memset(m, 0, sizeof(*m));
    if (sm == NULL) {
        snprintf(err, errlen, "%s: required", path);
        return -1;
    }
    if (has_unknown_field(&sm->base, STRING_MATCHER_CUSTOM)) {
        snprintf(err, errlen, "%s.custom: not supported (exact, prefix, suffix, contains or safe_regex)",
                 path);
        return -1;
    }
    switch (sm->match_pattern_case) {
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT:
        kind = DP_MATCH_EXACT, val = sm->exact;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX:
        kind = DP_MATCH_PREFIX, val = sm->prefix;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX:
        kind = DP_MATCH_SUFFIX, val = sm->suffix;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS:
        kind = DP_MATCH_CONTAINS, val = sm->contains;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX:
        /* Envoy requires a non-empty regex (min_len 1). */
        if (sm->safe_regex == NULL || sm->safe_regex->regex[0] == '\0') {
            snprintf(err, errlen, "%s.safe_regex.regex: required", path);
            return -1;
        }
        kind = DP_MATCH_REGEX, val = sm->safe_regex->regex;
        break;
    default:
        snprintf(err, errlen, "%s: one of exact, prefix, suffix, contains or safe_regex is required",
                 path);
        return -1;
    }
    if (dp_string_matcher_init(m, kind, val, sm->ignore_case, msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "%s: %s", path, msg);
        return -1;
    }
    return 0;
}
