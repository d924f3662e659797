/*
 * Fields that legate's protos carry but legate does not implement, and
 * that change what Envoy would do when they are set (path normalisation,
 * retries, trusted XFF hops, HTTP/2 flood limits, ...). A resource that
 * sets one is refused with the field's path, never half-applied
 * (DESIGN.md: a field that changes meaning must lead to a NACK). The same
 * walk looks at the fields the protos lack (xds/unknown.h).
 */
#ifndef LEGATE_XDS_UNSUPPORTED_H
#define LEGATE_XDS_UNSUPPORTED_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "xds/json.h"
#include "xds/unknown.h"

/**
 * Walks m, its sub-messages and the typed configs (google.protobuf.Any)
 * inside it. Returns 0, or -1 with "prefix.path.to.field: reason" in err
 * for the first field set that legate does not implement (prefix may be
 * "": the path then starts with the field), or that legate's protos lack
 * and must refuse; those it may ignore pass unannounced (a bootstrap has
 * none: its converter refuses unknown names).
 */
int xds_check_unsupported(const ProtobufCMessage *m, const char *prefix, char *err, size_t errlen);

/**
 * xds_check_unsupported, and the fields legate's protos lack, in m and in
 * every message and typed config inside it (xds/unknown.h): a refused one
 * fails the check like a rule; an ignorable one is told to ignored (when
 * not NULL) with its path. The ignored ones told before a -1 are void.
 * This is the one place where a resource's unknown fields are looked at:
 * every xDS resource comes through it (xds/response.c).
 */
int xds_check_resource(const ProtobufCMessage *m, const char *prefix, xds_ignored_cb ignored, void *ud, char *err,
                       size_t errlen);

/**
 * For /config_dump: appends to b the paths of the fields that m (an
 * accepted resource) sets and that legate ignores because they cannot
 * change traffic, as a JSON array of strings ("[]" when none). Returns how
 * many.
 */
size_t xds_ignored_fields_json(const ProtobufCMessage *m, struct xds_sb *b);

/** The rules whose message or field legate's protos do not have (a typo
 *  would switch a rule off): 0 in a correct build. */
size_t xds_unsupported_unresolved(void);

#endif
