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
#include <stdint.h>

/* A growable string. */
struct xds_sb {
    char *p;
    size_t len, cap;
};

void xds_sb_add(struct xds_sb *b, const char *s, size_t n);
void xds_sb_addf(struct xds_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Appends s as a JSON string literal (quotes and escapes). */
void xds_sb_str(struct xds_sb *b, const char *s);
/** Appends p[0..n) as a quoted base64 JSON string (OpenSSL's encoder). */
void xds_sb_base64(struct xds_sb *b, const uint8_t *p, size_t n);

/** A field path built while walking a message ("a.b[2].c"): push returns
 *  the length to pop back to. Truncated, never overflowed. */
struct xds_path {
    char s[512];
    size_t len;
};
size_t xds_path_push(struct xds_path *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void xds_path_pop(struct xds_path *p, size_t mark);

/** Appends m as a JSON object. */
void xds_json_message(struct xds_sb *b, const ProtobufCMessage *m);

#endif
