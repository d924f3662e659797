/*
 * Protobuf-c messages to JSON, the one writer for the data plane's
 * /config_dump, legate-control's management API and legate-control's
 * config file: proto field names (snake_case), fields left at their default
 * omitted, enums by name, 64-bit integers as strings, Any as
 * {"@type": ..., fields}, Duration as "1.5s", wrappers as bare values,
 * Struct/ListValue/Value as plain JSON, bytes as base64. Flags choose
 * whether secrets are redacted, and between a compact form for people and
 * an exact, indented one that xds/convert.c reads back unchanged.
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

/** How xds_json_write writes a message (or'ed together). */
enum {
    /** Secrets are written as "[redacted]": TlsCertificate.private_key and
     *  .password, TlsSessionTicketKeys.keys, GenericSecret.secret (which is
     *  how HMAC and other shared secrets travel). For anything a person or
     *  another program reads; off only for a file that must keep them. */
    XDS_JSON_REDACT = 1u << 0,
    /** A field or an element a line, two spaces a level, "key": value
     *  (Struct, ListValue and Value stay on one line). */
    XDS_JSON_INDENT = 1u << 1,
    /** Values that read back to the same message: floats with %.9g and
     *  doubles with %.17g (not %g), Duration exactly ("-3.000000001s"),
     *  Timestamp as RFC 3339, and an Any holding a well-known type as
     *  {"@type": ..., "value": its JSON form}, the proto3 mapping. */
    XDS_JSON_EXACT = 1u << 2,
    /** With XDS_JSON_REDACT: a secret field keeps its shape and every
     *  string and bytes value inside it becomes "[redacted]" (bytes: its
     *  base64), as Envoy's admin redacts fields marked sensitive, so that
     *  Envoy's own protos still read it ("private_key": {"inline_string":
     *  "[redacted]"}, not "private_key": "[redacted]"). */
    XDS_JSON_REDACT_NESTED = 1u << 3,
    /** Scalars, strings, enums and repeated fields written even when they
     *  hold their default (0, "", the first enum value, []): protobuf's
     *  always_print_primitive_fields, what Envoy's /server_info does.
     *  Unset messages and oneof members stay out. */
    XDS_JSON_DEFAULTS = 1u << 4,
};

/** Appends m as a JSON object (or as its well-known JSON form), as flags
 *  (XDS_JSON_*) say. */
void xds_json_write(struct xds_sb *b, const ProtobufCMessage *m, unsigned flags);

/** A field mask as a tree (google.protobuf.FieldMask's paths, split on
 *  '.'): a node keeps the fields named by its children; a child without
 *  children keeps that field whole. Inside an Any the mask applies to the
 *  message it holds. */
struct xds_json_mask {
    char *name;
    struct xds_json_mask *sub;
    size_t n_sub;
};

/** xds_json_write with only the fields mask keeps (mask NULL: all). */
void xds_json_write_masked(struct xds_sb *b, const ProtobufCMessage *m, unsigned flags,
                           const struct xds_json_mask *mask);

/** xds_json_write(b, m, XDS_JSON_REDACT): compact, secrets redacted; the
 *  form of /config_dump and of the management API's answers. */
void xds_json_message(struct xds_sb *b, const ProtobufCMessage *m);

#endif
