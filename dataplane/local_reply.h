/*
 * The HTTP connection manager's local_reply_config: how replies legate makes
 * itself (no route, no healthy upstream, timeouts, filters' denials) look.
 * Mappers are tried in order; the first whose filter matches may change the
 * status, the body and add headers; a body format (the mapper's
 * body_format_override, else body_format) then renders the body with the
 * access log's command operators, %LOCAL_REPLY_BODY% being the body so far.
 * Filters are Envoy's access-log filters: status_code_filter,
 * duration_filter, not_health_check_filter, header_filter,
 * response_flag_filter, and_filter and or_filter.
 */
#ifndef LEGATE_DP_LOCAL_REPLY_H
#define LEGATE_DP_LOCAL_REPLY_H

#include <stddef.h>

#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"

struct dp_header_mutation;
struct dp_local_reply;
struct dp_stream;
struct xds_cfgerr;

/** Compiles c; NULL with "path.mappers[1].filter...: reason" in e. */
struct dp_local_reply *dp_local_reply_build(
    const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__LocalReplyConfig *c, const char *path,
    struct xds_cfgerr *e);
void dp_local_reply_free(struct dp_local_reply *lr);

/** Maps s's local reply: *status, *content_type, *body and *len in, and
 *  out as the config says (a new body lives in s's arena); *add and *n_add
 *  the matching mapper's headers_to_add (none: 0). */
void dp_local_reply_apply(const struct dp_local_reply *lr, struct dp_stream *s, int *status,
                          const char **content_type, const char **body, size_t *len,
                          const struct dp_header_mutation **add, size_t *n_add);

#endif
