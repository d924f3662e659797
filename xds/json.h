/*
 * Protobuf-c messages to JSON, for /config_dump: proto field names
 * (snake_case), enums by name, Any as {"@type": ..., fields}, Duration as
 * "1.5s", wrappers as bare values, bytes as base64. Private keys and other
 * secrets are replaced by "[redacted]".
 */
#ifndef LEGATE_XDS_JSON_H
#define LEGATE_XDS_JSON_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/* A growable string. */
struct xds_sb {
    char *p;
    size_t len, cap;
};

void xds_sb_add(struct xds_sb *b, const char *s, size_t n);
void xds_sb_addf(struct xds_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Appends s as a JSON string literal (quotes and escapes). */
void xds_sb_str(struct xds_sb *b, const char *s);

/** Appends m as a JSON object. */
void xds_json_message(struct xds_sb *b, const ProtobufCMessage *m);

#endif
