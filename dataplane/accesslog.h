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

struct dp_access_log;
struct dp_stream;
struct dp_worker;

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
