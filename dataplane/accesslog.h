/*
 * Envoy's file access log (envoy.access_loggers.file) for the HTTP
 * connection manager: a text format with command operators, or a JSON
 * object whose values are format strings.
 *
 * A worker formats the line when a stream ends and appends it to a buffer of
 * its own; every 100 ms (or when the buffer passes 64 KiB) the buffer is
 * handed to one writer thread that does the write(2) calls. A slow disk
 * never blocks a worker; the handover takes a lock, once per flush, not per
 * request.
 */
#ifndef LEGATE_DP_ACCESSLOG_H
#define LEGATE_DP_ACCESSLOG_H

#include <stddef.h>

#include "envoy/config/accesslog/v3/accesslog.pb-c.h"
#include "envoy/config/core/v3/substitution_format_string.pb-c.h"

struct dp_access_log;
struct dp_buf;
struct dp_stream;
struct dp_subst;
struct dp_worker;

/** A SubstitutionFormatString (text_format, text_format_source or
 *  json_format with string values) and its content_type, with the access
 *  log's command operators and %LOCAL_REPLY_BODY%; sf NULL: the text
 *  format dflt. raw: a body (values as they are), else a log line (control
 *  characters in values become '?'). NULL with "path...: reason" in err. */
struct dp_subst *dp_subst_new(const Envoy__Config__Core__V3__SubstitutionFormatString *sf, const char *dflt,
                              int raw, const char *path, char *err, size_t errlen);
void dp_subst_free(struct dp_subst *f);
/** Appends f rendered for s to b (JSON: one object and a newline). */
void dp_subst_render(const struct dp_subst *f, struct dp_stream *s, struct dp_buf *b);
/** content_type, or text/plain (text) / application/json (JSON). */
const char *dp_subst_content_type(const struct dp_subst *f);

/** Builds one access_log entry; NULL with "field: reason" in err. */
struct dp_access_log *dp_access_log_new(const Envoy__Config__Accesslog__V3__AccessLog *al, char *err,
                                        size_t errlen);
void dp_access_log_free(struct dp_access_log *l);

/** Formats the finished stream s and queues the line (worker thread). */
void dp_access_log_write(const struct dp_access_log *l, struct dp_stream *s);

/** Hands the calling worker's buffered lines to the writer (its timer). */
void dp_access_log_flush(struct dp_worker *w);

/** Writes everything still buffered and stops the writer (at exit). */
void dp_access_log_shutdown(void);

#endif
