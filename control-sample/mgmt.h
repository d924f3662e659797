/*
 * The management API: HTTP/1.1 with JSON in and out, served from the main
 * loop (no thread of its own), for reading and changing what legate-control
 * serves the way Kong's and APISIX's admin APIs do:
 *
 *   GET    /secrets                 certificate summaries, never key material
 *   GET    /secrets/{name}
 *   PUT    /secrets/{name}          {"cert": PEM, "key": PEM} or {"ca": PEM}
 *   DELETE /secrets/{name}
 *   GET    /listeners|routes|clusters|endpoints[/{name}]   Envoy v3 JSON
 *   PUT    /listeners|routes|clusters|endpoints/{name}
 *   DELETE /listeners|routes|clusters|endpoints/{name}
 *   GET    /nodes                   connected data planes, ACKs and NACKs
 *
 * Every change is validated, written to the config file, then served as the
 * next version (cp_ctl_commit). With a token every request needs
 * "Authorization: Bearer TOKEN".
 */
#ifndef LEGATE_CONTROL_MGMT_H
#define LEGATE_CONTROL_MGMT_H

#include <poll.h>
#include <stddef.h>

#include "ctl.h"

struct cp_mgmt;

/**
 * Listens on "HOST:PORT" ("[::1]:18001" for IPv6). token may be NULL only
 * on a loopback address. ctl is borrowed. Returns 0 and *out, or -1 with a
 * message in err.
 */
int cp_mgmt_start(const char *listen, const char *token, struct cp_ctl *ctl,
                  struct cp_mgmt **out, char *err, size_t errlen);

/** Fills fds (at most max) with what the API waits for. Returns the count. */
size_t cp_mgmt_fds(struct cp_mgmt *m, struct pollfd *fds, size_t max);

/** Handles what poll(2) reported on the fds cp_mgmt_fds filled, and closes
 *  idle connections. */
void cp_mgmt_run(struct cp_mgmt *m, const struct pollfd *fds, size_t n);

/** Closes the listener and every connection. */
void cp_mgmt_stop(struct cp_mgmt *m);

#endif
