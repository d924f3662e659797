/*
 * The one YAML/JSON -> protobuf-c converter, driven by message descriptors.
 * It serves the bootstrap, static resources, the sample control plane's
 * config and its management API alike, so static and dynamic config end up
 * in the same generated structs.
 *
 * Accepted input follows the proto3 JSON mapping (YAML being a superset):
 *  - field names as in the .proto (snake_case) or their JSON names
 *    (lowerCamelCase);
 *  - enums by name (or number); 64-bit integers as numbers or strings;
 *    bytes as base64;
 *  - google.protobuf.Any as an object with "@type" and the message's fields
 *    (or "value" for well-known types);
 *  - Duration as "1s" / "0.25s" / "-3.000000001s"; Timestamp as RFC 3339;
 *    wrappers as bare values; Struct/Value/ListValue as arbitrary JSON;
 *  - map fields as objects; null leaves a field unset.
 * Unknown field names are errors: a bootstrap field legate does not know is
 * never silently dropped.
 */
#ifndef LEGATE_XDS_CONVERT_H
#define LEGATE_XDS_CONVERT_H

#include <stddef.h>
#include <protobuf-c/protobuf-c.h>

/**
 * Parses YAML or JSON text into a new message of type desc.
 * On success returns 0 and stores the message in *out; the caller frees it
 * with protobuf_c_message_free_unpacked(*out, NULL).
 * On failure returns -1, stores nothing, and writes a one-line message that
 * starts with the path of the offending field into err
 * ("static_resources.clusters[0].connect_timeout: expected a duration like
 * \"5s\", got \"fast\"").
 */
int xds_convert_text(const char *text, size_t len, const ProtobufCMessageDescriptor *desc,
                     ProtobufCMessage **out, char *err, size_t errlen);

/** Like xds_convert_text, reading the whole file at path. Errors that are
 *  about the file itself (missing, unreadable) name the path. */
int xds_convert_file(const char *path, const ProtobufCMessageDescriptor *desc,
                     ProtobufCMessage **out, char *err, size_t errlen);

/** Reads a whole file into a NUL-terminated malloc'd buffer. Returns NULL
 *  and sets errno on failure. *len_out (optional) gets the length. */
char *xds_read_file(const char *path, size_t *len_out);

#endif
