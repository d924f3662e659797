/*
 * String matchers (envoy.type.matcher.v3.StringMatcher and the header and
 * path matchers of routes), compiled once on the config path and matched on
 * the request path. The type and dp_string_match() are in config.h, beside
 * the route types that embed it; the builder from the protobuf message and
 * dp_string_matcher_free() are part of the filter API (filter.h).
 */
#ifndef LEGATE_DP_MATCHER_H
#define LEGATE_DP_MATCHER_H

#include <stddef.h>

#include "dataplane/config.h"
#include "dataplane/filter.h"

/** Compiles one pattern of the given kind into *m (which it overwrites).
 *  DP_MATCH_REGEX: a POSIX extended regular expression anchored to the
 *  whole input; DP_MATCH_PRESENT: value unused. Returns 0, or -1 with a
 *  reason (no field path) in err and *m holding nothing to free. */
int dp_string_matcher_init(struct dp_string_matcher *m, enum dp_match_kind kind, const char *value,
                           int ignore_case, char *err, size_t errlen);

#endif
