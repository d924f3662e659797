/*
 * The connection manager's terminal step (Envoy's router): internal to the
 * data plane; filters never call it.
 */
#ifndef LEGATE_DP_ROUTER_H
#define LEGATE_DP_ROUTER_H

struct dp_stream;

/** Answers, redirects or forwards s (its head passed every filter) as its
 *  route says; a stream with no route gets 404. */
void dp_router_route(struct dp_stream *s);

#endif
