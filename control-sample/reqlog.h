/*
 * --log-requests: every DiscoveryRequest received, one JSON object a line,
 * flushed as it is written, for tests and for watching a client by hand:
 *   {"node":"edge-1","type_url":"...","version_info":"1","response_nonce":"3",
 *    "resource_names":["a","b"],"error_detail":""}
 */
#ifndef LEGATE_CONTROL_REQLOG_H
#define LEGATE_CONTROL_REQLOG_H

#include <stdio.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"

/** Appends req as one line to f. node is the stream's node id (a request
 *  need not carry the node again); error_detail is the NACK message or "". */
void cp_reqlog_write(FILE *f, const char *node,
                     const Envoy__Service__Discovery__V3__DiscoveryRequest *req);

#endif
