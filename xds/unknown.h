/*
 * The fields of Envoy's v3 API that legate's trimmed protos lack. protobuf-c
 * keeps such a field as an unknown field (number and bytes) instead of
 * dropping it; here every one found in a decoded message is named from a
 * table generated from Envoy's protos (xds/unknown_fields.c, made by
 * scripts/gen-unknown-fields.py) and classified:
 *
 *  - ignorable: observability only (tracing, access-log timing, stats
 *    names, metadata): it cannot change what a request gets. Accepted,
 *    reported to the caller (a warning, a counter, config_dump).
 *  - everything else is refused: "transport_socket_matches: not supported";
 *    a number that Envoy's protos (as generated) do not have either:
 *    "field number 99 of envoy.config.cluster.v3.Cluster is unknown".
 *
 * Nothing that legate's protos lack is ever dropped unannounced.
 * docs/resources.md lists the ignorable fields.
 */
#ifndef LEGATE_XDS_UNKNOWN_H
#define LEGATE_XDS_UNKNOWN_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* One field that Envoy has and legate's protos lack. */
struct xds_envoy_field {
    const char *msg; /* full message name */
    uint32_t number;
    const char *name;
};

/* The generated table, sorted by message then number (unknown_fields.c). */
extern const struct xds_envoy_field xds_envoy_fields[];
extern const size_t xds_n_envoy_fields;

/** Envoy's name for field number of message msg (a full name) when
 *  legate's protos lack it, else NULL. */
const char *xds_envoy_field_name(const char *msg, uint32_t number);

/** Why msg.field may be accepted and ignored (a static string), or NULL
 *  when a message that sets it must be refused. */
const char *xds_unknown_ignorable(const char *msg, const char *field);

/** The ignorable fields, for the docs and tests: (msg, field, why) of the
 *  k-th, or 0 once k is past the end. */
int xds_unknown_ignorable_at(size_t k, const char **msg, const char **field, const char **why);

/** Told about an ignored field: its path ("filter_chains[0].filters[0].
 *  typed_config.tracing"), its message's full name, its name, and why it
 *  cannot change traffic. */
typedef void (*xds_ignored_cb)(void *ud, const char *path, const char *msg, const char *field, const char *why);

/**
 * Checks m's own unknown fields (not its sub-messages': the caller walks
 * those, see xds/unsupported.h). path is m's path ("" at the top). Returns
 * 0 when there are none or each is ignorable (each told to cb once per
 * field name, when cb is not NULL), or -1 with "path.field: not supported"
 * or "path: field number N of Msg is unknown" in err.
 */
int xds_unknown_check(const ProtobufCMessage *m, const char *path, xds_ignored_cb cb, void *ud, char *err,
                      size_t errlen);

/** The rows of the ignorable list whose field is not in the generated
 *  table (a typo, or a field legate's protos gained): 0 in a correct build. */
size_t xds_unknown_unresolved(void);

#endif
