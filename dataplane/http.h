/*
 * HTTP message heads shared by the HTTP/1.1 and HTTP/2 codecs, the filter
 * chain and the router. Header names are stored lowercase (HTTP/2 requires
 * it; HTTP/1 names are lowercased on parse) so lookups compare bytes.
 * Strings are not NUL-terminated unless noted; they live in the stream's
 * arena (struct dp_arena) and die with it.
 */
#ifndef LEGATE_DP_HTTP_H
#define LEGATE_DP_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "dataplane/arena.h"

struct dp_str {
    const char *p;
    size_t n;
};

#define DP_STR_LIT(s) ((struct dp_str){(s), sizeof(s) - 1})

struct dp_header {
    struct dp_str name;  /* lowercase */
    struct dp_str value;
};

struct dp_headers {
    struct dp_header *v;
    size_t n;
    size_t cap;
};

enum dp_http_version {
    DP_HTTP_10 = 10,
    DP_HTTP_11 = 11,
    DP_HTTP_2 = 20,
};

struct dp_request_head {
    struct dp_str method;
    struct dp_str scheme;    /* "http" or "https" */
    struct dp_str authority; /* :authority, or Host for HTTP/1 */
    struct dp_str path;      /* path and query, as received */
    struct dp_headers headers; /* regular headers only, no pseudo-headers, no Host */
    int64_t content_length;  /* -1 when unknown (chunked, or HTTP/2 without it) */
    enum dp_http_version version;
};

struct dp_response_head {
    int status;
    struct dp_headers headers;
    int64_t content_length; /* -1 when unknown */
};

static inline int dp_str_eq(struct dp_str a, struct dp_str b)
{
    return a.n == b.n && (a.n == 0 || __builtin_memcmp(a.p, b.p, a.n) == 0);
}

/** Case-insensitive comparison of a with the NUL-terminated lowercase s. */
int dp_str_ieq_lit(struct dp_str a, const char *s);

/** Returns the first header named name (lowercase), or NULL. */
const struct dp_header *dp_headers_get(const struct dp_headers *h, struct dp_str name);

/** Appends a header; name and value are copied into the arena (the name is
 *  lowercased). Returns 0, or -1 on allocation failure. */
int dp_headers_add(struct dp_headers *h, struct dp_arena *a, struct dp_str name, struct dp_str value);

/** Appends a header without copying: both strings must outlive the headers. */
int dp_headers_add_ref(struct dp_headers *h, struct dp_arena *a, struct dp_str name,
                       struct dp_str value);

/** Removes every header named name. Returns how many were removed. */
size_t dp_headers_remove(struct dp_headers *h, struct dp_str name);

/** Removes, in one pass, every header for which drop(header, arg) is true.
 *  Returns how many were removed. */
size_t dp_headers_remove_if(struct dp_headers *h, int (*drop)(const struct dp_header *, void *), void *arg);

/** Replaces all headers named name by one with value (copied). */
int dp_headers_set(struct dp_headers *h, struct dp_arena *a, struct dp_str name, struct dp_str value);

/** True for the connection-level fields that the codecs write themselves
 *  and never copy from a message: connection, keep-alive,
 *  proxy-connection, transfer-encoding, upgrade, te and content-length
 *  (name in lowercase). */
static inline int dp_http_is_hop_field(struct dp_str n)
{
    switch (n.n) {
    case 2:
        return n.p[0] == 't' && n.p[1] == 'e';
    case 7:
        return __builtin_memcmp(n.p, "upgrade", 7) == 0;
    case 10:
        return __builtin_memcmp(n.p, "connection", 10) == 0 || __builtin_memcmp(n.p, "keep-alive", 10) == 0;
    case 14:
        return __builtin_memcmp(n.p, "content-length", 14) == 0;
    case 16:
        return __builtin_memcmp(n.p, "proxy-connection", 16) == 0;
    case 17:
        return __builtin_memcmp(n.p, "transfer-encoding", 17) == 0;
    default:
        return 0;
    }
}

/** True for a gRPC content type, as Envoy decides: "application/grpc",
 *  alone or followed by '+' or ';' (not grpc-web). */
int dp_http_is_grpc_content_type(struct dp_str v);

/** 1 when the comma-separated list v holds the token t (lowercase;
 *  compared case-insensitively, parameters after ';' ignored). */
int dp_http_list_has_token(struct dp_str v, const char *t);

/** gRPC's status code for an HTTP status, as gRPC's
 *  doc/http-grpc-status-mapping.md and Envoy map them. */
int dp_grpc_status_of_http(int http_status);

/** A grpc-timeout value (1-8 digits and a unit H M S m u n) in seconds, or
 *  -1 when malformed. */
double dp_grpc_timeout_parse(struct dp_str v);

/** Reason phrase for a status code ("Not Found"), "Unknown" if none. */
const char *dp_http_reason(int status);

struct dp_buf;

/** The value of a hex digit (either case), or -1. */
int dp_hex_digit(int c);

/** 1 for the characters of a token (RFC 9110 5.6.2: a field name). */
extern const uint8_t dp_http_tchar[256];

/** Appends "name: value\r\n" to out. Returns 0, or -1 on allocation failure. */
int dp_http_append_field(struct dp_buf *out, struct dp_str name, struct dp_str value);

/** Appends the HTTP/1.1 status line ("HTTP/1.1 200 OK\r\n") for status
 *  (100-999). Returns 0, or -1 on allocation failure. */
int dp_http_append_status_line(struct dp_buf *out, int status);

/**
 * The request path as Envoy's normalize_path and merge_slashes make it,
 * written to out (room for n bytes; it never grows). With normalize,
 * RFC 3986: percent-encoded unreserved characters are decoded, other
 * escapes get upper-case hex (so %2F stays an escaped slash), a backslash
 * becomes a slash, and "." and ".." segments are removed (never above the
 * root). Then with merge, runs of slashes become one. The query and
 * fragment are copied as they are; a path that does not start with '/' (the
 * asterisk form) is copied unchanged. Returns the length, or -1 when an
 * escape is not '%' and two hex digits.
 */
long dp_http_normalize_path(const char *in, size_t n, char *out, int normalize, int merge);

/**
 * Envoy's path_with_escaped_slashes_action unescaping, in place on p[0..n):
 * in the path part (before '?' or '#'), %2F and %2f become '/', %5C and
 * %5c become '\' (which normalize_path then turns into '/'). Returns the
 * new length; *found is set to 1 when anything was unescaped, else 0.
 */
size_t dp_http_unescape_slashes(char *p, size_t n, int *found);

#endif
