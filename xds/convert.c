#include "convert.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <yaml.h>

#include "registry.h"

/* Walk state: the YAML document, the path of the node being converted (for
 * error messages), and where the one error message goes. */
struct conv {
    yaml_document_t *doc;
    char path[1024];
    size_t plen;
    char *err;
    size_t errlen;
    int depth;        /* messages being filled, nested */
    size_t nodes;     /* messages filled so far */
    size_t max_nodes; /* see MAX_EXPANSION */
};

#define MAX_DURATION_SECONDS INT64_C(315576000000)

/* YAML aliases make a document a graph, not a tree: an alias inside its own
 * anchor would recurse until the stack overflows, and aliases of aliases
 * ("billion laughs") multiply the work. Real configs are far from both: the
 * messages filled may number MAX_EXPANSION times the document's nodes, plus
 * MIN_BUDGET. */
#define MAX_DEPTH 100
#define MAX_EXPANSION 10
#define MIN_BUDGET 10000

static int set_field(struct conv *c, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                     yaml_node_t *n);
static int fill_message(struct conv *c, yaml_node_t *n, ProtobufCMessage *msg, int skip_at_type);

static int fail(struct conv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct conv *c, const char *fmt, ...)
{
    int n = 0;
    va_list ap;

    if (c->errlen == 0)
        return -1;
    if (c->plen > 0)
        n = snprintf(c->err, c->errlen, "%s: ", c->path);
    if (n < 0 || (size_t)n >= c->errlen)
        return -1;
    va_start(ap, fmt);
    vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static size_t path_push(struct conv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static size_t path_push(struct conv *c, const char *fmt, ...)
{
    size_t mark = c->plen;
    va_list ap;

    if (c->plen < sizeof(c->path) - 1) {
        va_start(ap, fmt);
        int n = vsnprintf(c->path + c->plen, sizeof(c->path) - c->plen, fmt, ap);
        va_end(ap);
        if (n > 0)
            c->plen += (size_t)n;
        if (c->plen >= sizeof(c->path))
            c->plen = sizeof(c->path) - 1;
    }
    return mark;
}

static void path_pop(struct conv *c, size_t mark)
{
    c->plen = mark;
    c->path[mark] = '\0';
}

static size_t path_push_field(struct conv *c, const char *name)
{
    return path_push(c, c->plen ? ".%s" : "%s", name);
}

static const char *node_kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE:
        return "an object";
    case YAML_SEQUENCE_NODE:
        return "a list";
    default:
        return "a scalar";
    }
}

static const char *scalar(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static int is_plain(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static int is_null(const yaml_node_t *n)
{
    if (!is_plain(n))
        return 0;
    const char *s = scalar(n);
    return s[0] == '\0' || strcmp(s, "null") == 0 || strcmp(s, "~") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

static int need_scalar(struct conv *c, const yaml_node_t *n, const char *what)
{
    if (n->type != YAML_SCALAR_NODE)
        return fail(c, "expected %s, got %s", what, node_kind(n));
    return 0;
}

/* Field names: the .proto name, or its proto3 JSON name (lowerCamelCase). */
static int json_name_equals(const char *proto_name, const char *key)
{
    const char *p = proto_name, *k = key;
    int upper = 0;

    for (; *p; p++) {
        if (*p == '_') {
            upper = 1;
            continue;
        }
        char want = upper ? (char)toupper((unsigned char)*p) : *p;
        upper = 0;
        if (*k++ != want)
            return 0;
    }
    return *k == '\0';
}

static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *d,
                                                  const char *key)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);
    if (f)
        return f;
    for (unsigned i = 0; i < d->n_fields; i++)
        if (json_name_equals(d->fields[i].name, key))
            return &d->fields[i];
    return NULL;
}

static int is_map_entry(const ProtobufCMessageDescriptor *d)
{
    size_t sl = strlen(d->short_name);
    return d->n_fields == 2 && d->fields[0].id == 1 && strcmp(d->fields[0].name, "key") == 0 &&
           d->fields[1].id == 2 && strcmp(d->fields[1].name, "value") == 0 && sl > 5 &&
           strcmp(d->short_name + sl - 5, "Entry") == 0;
}

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    }
    return 0;
}

static ProtobufCMessage *new_message(const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = malloc(d->sizeof_message);
    if (m)
        d->message_init(m);
    return m;
}

/* ---- scalars ---------------------------------------------------------- */

static int parse_int(struct conv *c, const yaml_node_t *n, int64_t lo, int64_t hi, int64_t *out,
                     const char *type)
{
    if (need_scalar(c, n, "an integer") < 0)
        return -1;
    const char *s = scalar(n);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || isspace((unsigned char)*s))
        return fail(c, "expected an integer, got \"%s\"", s);
    if (errno == ERANGE || v < lo || v > hi)
        return fail(c, "%s is out of range for %s", s, type);
    *out = v;
    return 0;
}

static int parse_uint64(struct conv *c, const yaml_node_t *n, uint64_t *out)
{
    if (need_scalar(c, n, "an integer") < 0)
        return -1;
    const char *s = scalar(n);
    char *end;
    if (!isdigit((unsigned char)s[0]))
        return fail(c, "expected a non-negative integer, got \"%s\"", s);
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0')
        return fail(c, "expected a non-negative integer, got \"%s\"", s);
    if (errno == ERANGE)
        return fail(c, "%s is out of range for uint64", s);
    *out = v;
    return 0;
}

static int parse_double(struct conv *c, const yaml_node_t *n, double *out)
{
    if (need_scalar(c, n, "a number") < 0)
        return -1;
    const char *s = scalar(n);
    if (strcmp(s, "NaN") == 0) {
        *out = NAN;
        return 0;
    }
    if (strcmp(s, "Infinity") == 0 || strcmp(s, "-Infinity") == 0) {
        *out = s[0] == '-' ? -INFINITY : INFINITY;
        return 0;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || isspace((unsigned char)*s) || isnan(v) || isinf(v))
        return fail(c, "expected a number, got \"%s\"", s);
    *out = v;
    return 0;
}

static int parse_bool(struct conv *c, const yaml_node_t *n, protobuf_c_boolean *out)
{
    if (need_scalar(c, n, "true or false") < 0)
        return -1;
    const char *s = scalar(n);
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0)
        *out = 1;
    else if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0)
        *out = 0;
    else
        return fail(c, "expected true or false, got \"%s\"", s);
    return 0;
}

static int parse_enum(struct conv *c, const yaml_node_t *n, const ProtobufCEnumDescriptor *ed,
                      int32_t *out)
{
    if (need_scalar(c, n, "an enum value name") < 0)
        return -1;
    const char *s = scalar(n);
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value_by_name(ed, s);
    if (v == NULL) { /* Envoy parses enum names in any case ("type: strict_dns") */
        char up[128];
        size_t i = 0;
        for (; s[i] && i < sizeof(up) - 1; i++)
            up[i] = (char)toupper((unsigned char)s[i]);
        up[i] = '\0';
        v = s[i] ? NULL : protobuf_c_enum_descriptor_get_value_by_name(ed, up);
    }
    if (v == NULL && (isdigit((unsigned char)s[0]) || s[0] == '-')) {
        char *end;
        long num = strtol(s, &end, 10);
        if (*end == '\0' && num >= INT32_MIN && num <= INT32_MAX)
            v = protobuf_c_enum_descriptor_get_value(ed, (int)num);
    }
    if (v == NULL) {
        char names[512];
        size_t used = 0;
        names[0] = '\0';
        for (unsigned i = 0; i < ed->n_values && used < sizeof(names) - 1; i++) {
            int w = snprintf(names + used, sizeof(names) - used, "%s%s", i ? ", " : "",
                             ed->values[i].name);
            if (w < 0)
                break;
            used += (size_t)w;
        }
        return fail(c, "unknown value \"%s\" for enum %s (expected one of %s)", s, ed->name,
                    names);
    }
    *out = v->value;
    return 0;
}

static int parse_base64(struct conv *c, const yaml_node_t *n, ProtobufCBinaryData *out)
{
    if (need_scalar(c, n, "a base64 string") < 0)
        return -1;
    const char *s = scalar(n);
    size_t len = strlen(s);
    char *norm = malloc(len + 4);
    if (norm == NULL)
        return fail(c, "out of memory");
    /* Accept the URL-safe alphabet and missing padding, as proto3 JSON does. */
    size_t j = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch == '-')
            ch = '+';
        else if (ch == '_')
            ch = '/';
        else if (ch == '\n' || ch == '\r' || ch == ' ')
            continue;
        norm[j++] = ch;
    }
    while (j % 4)
        norm[j++] = '=';
    norm[j] = '\0';
    size_t pad = 0;
    if (j >= 1 && norm[j - 1] == '=')
        pad++;
    if (j >= 2 && norm[j - 2] == '=')
        pad++;
    uint8_t *buf = malloc(j / 4 * 3 + 1);
    if (buf == NULL) {
        free(norm);
        return fail(c, "out of memory");
    }
    int w = j ? EVP_DecodeBlock(buf, (const unsigned char *)norm, (int)j) : 0;
    free(norm);
    if (w < 0 || (size_t)w < pad) {
        free(buf);
        return fail(c, "expected base64 data");
    }
    out->data = buf;
    out->len = (size_t)w - pad;
    return 0;
}

static int parse_duration_str(const char *s, int64_t *sec, int32_t *nanos)
{
    const char *p = s;
    int neg = 0;
    int64_t secs = 0;
    int32_t ns = 0;

    if (*p == '-') {
        neg = 1;
        p++;
    }
    if (!isdigit((unsigned char)*p))
        return -1;
    while (isdigit((unsigned char)*p)) {
        secs = secs * 10 + (*p++ - '0');
        if (secs > MAX_DURATION_SECONDS)
            return -1;
    }
    if (*p == '.') {
        int digits = 0;
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        while (isdigit((unsigned char)*p)) {
            if (digits == 9)
                return -1;
            ns = ns * 10 + (*p++ - '0');
            digits++;
        }
        while (digits++ < 9)
            ns *= 10;
    }
    if (p[0] != 's' || p[1] != '\0')
        return -1;
    *sec = neg ? -secs : secs;
    *nanos = neg ? -ns : ns;
    return 0;
}

/* RFC 3339: 2026-11-23T10:00:00[.frac](Z|+hh:mm|-hh:mm) */
static int parse_timestamp_str(const char *s, int64_t *sec, int32_t *nanos)
{
    struct tm tm;
    int consumed = 0;
    memset(&tm, 0, sizeof(tm));
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &consumed) != 6 ||
        consumed != 19)
        return -1;
    const char *p = s + consumed;
    int32_t ns = 0;
    if (*p == '.') {
        int digits = 0;
        p++;
        while (isdigit((unsigned char)*p)) {
            if (digits == 9)
                return -1;
            ns = ns * 10 + (*p++ - '0');
            digits++;
        }
        if (digits == 0)
            return -1;
        while (digits++ < 9)
            ns *= 10;
    }
    int offset = 0;
    if (*p == 'Z' && p[1] == '\0') {
        /* UTC */
    } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
        int hh = (p[1] - '0') * 10 + (p[2] - '0'), mm = (p[4] - '0') * 10 + (p[5] - '0');
        offset = (hh * 60 + mm) * 60 * (*p == '-' ? -1 : 1);
    } else {
        return -1;
    }
    if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
        tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *sec = (int64_t)timegm(&tm) - offset;
    *nanos = ns;
    return 0;
}

/* ---- well-known types ------------------------------------------------- */

enum wkt {
    WKT_NONE = 0,
    WKT_ANY,
    WKT_DURATION,
    WKT_TIMESTAMP,
    WKT_WRAPPER,
    WKT_STRUCT,
    WKT_VALUE,
    WKT_LIST,
};

static enum wkt wkt_of(const ProtobufCMessageDescriptor *d)
{
    const char *n = d->name;
    if (strncmp(n, "google.protobuf.", 16) != 0)
        return WKT_NONE;
    n += 16;
    if (strcmp(n, "Any") == 0)
        return WKT_ANY;
    if (strcmp(n, "Duration") == 0)
        return WKT_DURATION;
    if (strcmp(n, "Timestamp") == 0)
        return WKT_TIMESTAMP;
    if (strcmp(n, "Struct") == 0)
        return WKT_STRUCT;
    if (strcmp(n, "Value") == 0)
        return WKT_VALUE;
    if (strcmp(n, "ListValue") == 0)
        return WKT_LIST;
    size_t l = strlen(n);
    if (l > 5 && strcmp(n + l - 5, "Value") == 0)
        return WKT_WRAPPER; /* DoubleValue, UInt32Value, BoolValue, ... */
    return WKT_NONE;
}

static int set_seconds_nanos(ProtobufCMessage *msg, int64_t sec, int32_t nanos)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    const ProtobufCFieldDescriptor *fs = protobuf_c_message_descriptor_get_field_by_name(d, "seconds");
    const ProtobufCFieldDescriptor *fn = protobuf_c_message_descriptor_get_field_by_name(d, "nanos");
    if (fs == NULL || fn == NULL)
        return -1;
    *(int64_t *)((char *)msg + fs->offset) = sec;
    *(int32_t *)((char *)msg + fn->offset) = nanos;
    return 0;
}

static int fill_any(struct conv *c, yaml_node_t *n, ProtobufCMessage *any)
{
    const char *url = NULL;
    yaml_node_t *value_node = NULL;

    if (n->type != YAML_MAPPING_NODE)
        return fail(c, "expected an object with \"@type\", got %s", node_kind(n));
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        if (k && k->type == YAML_SCALAR_NODE) {
            if (strcmp(scalar(k), "@type") == 0) {
                yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
                if (v == NULL || v->type != YAML_SCALAR_NODE)
                    return fail(c, "\"@type\" must be a string");
                url = scalar(v);
            } else if (strcmp(scalar(k), "value") == 0) {
                value_node = yaml_document_get_node(c->doc, p->value);
            }
        }
    }
    if (url == NULL)
        return fail(c, "missing \"@type\" in google.protobuf.Any");
    if (strchr(url, '/') == NULL)
        return fail(c, "invalid type URL \"%s\" in \"@type\" (expected type.googleapis.com/<message>)",
                    url);
    const ProtobufCMessageDescriptor *inner_d = xds_registry_lookup(url);
    if (inner_d == NULL)
        return fail(c, "unknown type URL \"%s\" in \"@type\"", url);

    ProtobufCMessage *inner = new_message(inner_d);
    if (inner == NULL)
        return fail(c, "out of memory");
    int rc;
    if (wkt_of(inner_d) != WKT_NONE) {
        if (value_node == NULL)
            rc = fail(c, "missing \"value\" for %s in google.protobuf.Any", inner_d->name);
        else {
            size_t mark = path_push_field(c, "value");
            rc = fill_message(c, value_node, inner, 0);
            if (rc == 0)
                path_pop(c, mark);
        }
    } else {
        rc = fill_message(c, n, inner, 1);
    }
    if (rc < 0) {
        protobuf_c_message_free_unpacked(inner, NULL);
        return -1;
    }

    size_t sz = protobuf_c_message_get_packed_size(inner);
    uint8_t *buf = malloc(sz ? sz : 1);
    char *url_copy = strdup(url);
    if (buf == NULL || url_copy == NULL) {
        free(buf);
        free(url_copy);
        protobuf_c_message_free_unpacked(inner, NULL);
        return fail(c, "out of memory");
    }
    protobuf_c_message_pack(inner, buf);
    protobuf_c_message_free_unpacked(inner, NULL);

    const ProtobufCFieldDescriptor *ft =
        protobuf_c_message_descriptor_get_field_by_name(any->descriptor, "type_url");
    const ProtobufCFieldDescriptor *fv =
        protobuf_c_message_descriptor_get_field_by_name(any->descriptor, "value");
    *(char **)((char *)any + ft->offset) = url_copy;
    ProtobufCBinaryData *bd = (ProtobufCBinaryData *)((char *)any + fv->offset);
    bd->data = buf;
    bd->len = sz;
    return 0;
}

static int fill_value(struct conv *c, yaml_node_t *n, ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    const char *field;

    if (n->type == YAML_MAPPING_NODE)
        field = "struct_value";
    else if (n->type == YAML_SEQUENCE_NODE)
        field = "list_value";
    else if (is_null(n))
        field = "null_value";
    else if (is_plain(n) && (strcmp(scalar(n), "true") == 0 || strcmp(scalar(n), "false") == 0))
        field = "bool_value";
    else {
        field = "string_value";
        if (is_plain(n)) {
            char *end;
            const char *s = scalar(n);
            strtod(s, &end);
            if (end != s && *end == '\0')
                field = "number_value";
        }
    }
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, field);
    if (f == NULL)
        return fail(c, "internal: %s has no field %s", d->name, field);
    if (strcmp(field, "null_value") == 0) {
        uint32_t *qc = (uint32_t *)((char *)msg + f->quantifier_offset);
        *qc = f->id;
        *(int32_t *)((char *)msg + f->offset) = 0;
        return 0;
    }
    return set_field(c, msg, f, n);
}

static int fill_wkt(struct conv *c, yaml_node_t *n, ProtobufCMessage *msg, enum wkt kind)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    int64_t sec;
    int32_t nanos;

    switch (kind) {
    case WKT_ANY:
        return fill_any(c, n, msg);
    case WKT_DURATION:
        if (n->type != YAML_SCALAR_NODE)
            return fail(c, "expected a duration like \"5s\", got %s", node_kind(n));
        if (parse_duration_str(scalar(n), &sec, &nanos) < 0)
            return fail(c, "expected a duration like \"5s\", got \"%s\"", scalar(n));
        return set_seconds_nanos(msg, sec, nanos);
    case WKT_TIMESTAMP:
        if (n->type != YAML_SCALAR_NODE)
            return fail(c, "expected an RFC 3339 timestamp, got %s", node_kind(n));
        if (parse_timestamp_str(scalar(n), &sec, &nanos) < 0)
            return fail(c, "expected an RFC 3339 timestamp like \"2026-01-01T00:00:00Z\", got \"%s\"",
                        scalar(n));
        return set_seconds_nanos(msg, sec, nanos);
    case WKT_WRAPPER:
        return set_field(c, msg, protobuf_c_message_descriptor_get_field_by_name(d, "value"), n);
    case WKT_STRUCT:
        if (n->type != YAML_MAPPING_NODE)
            return fail(c, "expected an object, got %s", node_kind(n));
        return set_field(c, msg, protobuf_c_message_descriptor_get_field_by_name(d, "fields"), n);
    case WKT_LIST:
        if (n->type != YAML_SEQUENCE_NODE)
            return fail(c, "expected a list, got %s", node_kind(n));
        return set_field(c, msg, protobuf_c_message_descriptor_get_field_by_name(d, "values"), n);
    case WKT_VALUE:
        return fill_value(c, n, msg);
    case WKT_NONE:
        break;
    }
    return fail(c, "internal: not a well-known type");
}

/* ---- fields ----------------------------------------------------------- */

/* Stores one value of field f, read from n, into slot (the struct member, or
 * one array element of a repeated field). The slot is zeroed beforehand. */
static int set_value(struct conv *c, const ProtobufCFieldDescriptor *f, yaml_node_t *n, void *slot)
{
    int64_t i64 = 0;
    uint64_t u64 = 0;
    double dbl = 0;

    if (is_null(n) && !(f->type == PROTOBUF_C_TYPE_MESSAGE &&
                        wkt_of(f->descriptor) == WKT_VALUE))
        return fail(c, "null is not allowed here");

    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (parse_int(c, n, INT32_MIN, INT32_MAX, &i64, "int32") < 0)
            return -1;
        *(int32_t *)slot = (int32_t)i64;
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (parse_int(c, n, 0, UINT32_MAX, &i64, "uint32") < 0)
            return -1;
        *(uint32_t *)slot = (uint32_t)i64;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (parse_int(c, n, INT64_MIN, INT64_MAX, &i64, "int64") < 0)
            return -1;
        *(int64_t *)slot = i64;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (parse_uint64(c, n, &u64) < 0)
            return -1;
        *(uint64_t *)slot = u64;
        return 0;
    case PROTOBUF_C_TYPE_FLOAT:
        if (parse_double(c, n, &dbl) < 0)
            return -1;
        *(float *)slot = (float)dbl;
        return 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        if (parse_double(c, n, &dbl) < 0)
            return -1;
        *(double *)slot = dbl;
        return 0;
    case PROTOBUF_C_TYPE_BOOL:
        return parse_bool(c, n, (protobuf_c_boolean *)slot);
    case PROTOBUF_C_TYPE_ENUM: {
        int32_t v;
        if (parse_enum(c, n, f->descriptor, &v) < 0)
            return -1;
        *(int32_t *)slot = v;
        return 0;
    }
    case PROTOBUF_C_TYPE_STRING: {
        if (need_scalar(c, n, "a string") < 0)
            return -1;
        char *s = strdup(scalar(n));
        if (s == NULL)
            return fail(c, "out of memory");
        *(char **)slot = s;
        return 0;
    }
    case PROTOBUF_C_TYPE_BYTES:
        return parse_base64(c, n, (ProtobufCBinaryData *)slot);
    case PROTOBUF_C_TYPE_MESSAGE: {
        ProtobufCMessage *sub = new_message(f->descriptor);
        if (sub == NULL)
            return fail(c, "out of memory");
        *(ProtobufCMessage **)slot = sub; /* owned by the parent from now on */
        return fill_message(c, n, sub, 0);
    }
    }
    return fail(c, "internal: unsupported field type %d", (int)f->type);
}

static int set_map(struct conv *c, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                   yaml_node_t *n)
{
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    size_t count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    size_t *qty = (size_t *)((char *)msg + f->quantifier_offset);
    ProtobufCMessage ***arr = (ProtobufCMessage ***)((char *)msg + f->offset);

    if (count == 0)
        return 0;
    *arr = calloc(count, sizeof(**arr));
    if (*arr == NULL)
        return fail(c, "out of memory");
    for (size_t i = 0; i < count; i++) {
        yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE)
            return fail(c, "map keys must be strings");
        for (size_t j = 0; j < i; j++) {
            yaml_node_t *pk = yaml_document_get_node(c->doc, n->data.mapping.pairs.start[j].key);
            if (strcmp(scalar(pk), scalar(k)) == 0)
                return fail(c, "duplicate key \"%s\"", scalar(k));
        }
        size_t mark = path_push(c, "[\"%s\"]", scalar(k));
        ProtobufCMessage *entry = new_message(ed);
        if (entry == NULL)
            return fail(c, "out of memory");
        (*arr)[i] = entry;
        *qty = i + 1;
        const ProtobufCFieldDescriptor *fk = &ed->fields[0], *fv = &ed->fields[1];
        if (set_value(c, fk, k, (char *)entry + fk->offset) < 0)
            return -1;
        if (!is_null(v) || (fv->type == PROTOBUF_C_TYPE_MESSAGE && wkt_of(fv->descriptor) == WKT_VALUE)) {
            if (set_value(c, fv, v, (char *)entry + fv->offset) < 0)
                return -1;
        }
        path_pop(c, mark);
    }
    return 0;
}

static int set_repeated(struct conv *c, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                        yaml_node_t *n)
{
    if (f->type == PROTOBUF_C_TYPE_MESSAGE && is_map_entry(f->descriptor)) {
        if (n->type != YAML_MAPPING_NODE)
            return fail(c, "expected an object (a map), got %s", node_kind(n));
        return set_map(c, msg, f, n);
    }
    if (n->type == YAML_MAPPING_NODE && f->type == PROTOBUF_C_TYPE_MESSAGE) {
        /* One object where a list of them is expected: a list of one, as
         * Envoy's loader (protobuf's JSON parser) takes it; Envoy's
         * double-proxy example writes tls_certificates that way. */
        size_t *qty = (size_t *)((char *)msg + f->quantifier_offset);
        char **arr = (char **)((char *)msg + f->offset);
        *arr = calloc(1, elem_size(f->type));
        if (*arr == NULL)
            return fail(c, "out of memory");
        *qty = 1;
        size_t mark = path_push(c, "[0]");
        if (set_value(c, f, n, *arr) < 0)
            return -1;
        path_pop(c, mark);
        return 0;
    }
    if (n->type != YAML_SEQUENCE_NODE)
        return fail(c, "expected a list, got %s", node_kind(n));

    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    size_t esz = elem_size(f->type);
    size_t *qty = (size_t *)((char *)msg + f->quantifier_offset);
    char **arr = (char **)((char *)msg + f->offset);

    if (count == 0)
        return 0;
    *arr = calloc(count, esz);
    if (*arr == NULL)
        return fail(c, "out of memory");
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = yaml_document_get_node(c->doc, n->data.sequence.items.start[i]);
        size_t mark = path_push(c, "[%zu]", i);
        /* Count first: a half-built element is still freed with the message. */
        *qty = i + 1;
        if (item == NULL || set_value(c, f, item, *arr + i * esz) < 0)
            return -1;
        path_pop(c, mark);
    }
    return 0;
}

static int set_field(struct conv *c, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                     yaml_node_t *n)
{
    if (f == NULL)
        return fail(c, "internal: missing field descriptor");
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return set_repeated(c, msg, f, n);
    /* "typed_config: {}": no type and no value. Envoy then finds the
     * extension by the enclosing config's name and uses its defaults; so
     * do the builders when typed_config is absent, which is what this
     * leaves (double-proxy's "envoy.filters.listener.tls_inspector"). */
    if (f->type == PROTOBUF_C_TYPE_MESSAGE && wkt_of(f->descriptor) == WKT_ANY &&
        n->type == YAML_MAPPING_NODE && n->data.mapping.pairs.start == n->data.mapping.pairs.top)
        return 0;

    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *qc = (uint32_t *)((char *)msg + f->quantifier_offset);
        if (*qc != 0 && *qc != f->id) {
            const ProtobufCFieldDescriptor *other =
                protobuf_c_message_descriptor_get_field(msg->descriptor, *qc);
            return fail(c, "only one of \"%s\" and \"%s\" may be set", other ? other->name : "?",
                        f->name);
        }
        /* The union slot is still zero (no other member was set), so marking
         * the case first lets a half-built value be freed with the message. */
        *qc = f->id;
        return set_value(c, f, n, (char *)msg + f->offset);
    }
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset &&
        f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING)
        *(protobuf_c_boolean *)((char *)msg + f->quantifier_offset) = 1;
    return set_value(c, f, n, (char *)msg + f->offset);
}

static int fill_node(struct conv *c, yaml_node_t *n, ProtobufCMessage *msg, int skip_at_type);

static int fill_message(struct conv *c, yaml_node_t *n, ProtobufCMessage *msg, int skip_at_type)
{
    if (c->depth >= MAX_DEPTH)
        return fail(c, "nested more than %d levels deep (a YAML alias inside its own anchor?)", MAX_DEPTH);
    if (++c->nodes > c->max_nodes)
        return fail(c, "the document expands to more than %zu objects (YAML aliases?)", c->max_nodes);
    c->depth++;
    int rc = fill_node(c, n, msg, skip_at_type);
    c->depth--;
    return rc;
}

static int fill_node(struct conv *c, yaml_node_t *n, ProtobufCMessage *msg, int skip_at_type)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    enum wkt kind = wkt_of(d);

    if (kind != WKT_NONE && !(kind == WKT_WRAPPER && n->type == YAML_MAPPING_NODE) &&
        !((kind == WKT_DURATION || kind == WKT_TIMESTAMP) && n->type == YAML_MAPPING_NODE))
        return fill_wkt(c, n, msg, kind);

    if (n->type != YAML_MAPPING_NODE)
        return fail(c, "expected an object (%s), got %s \"%s\"", d->name, node_kind(n),
                    n->type == YAML_SCALAR_NODE ? scalar(n) : "");

    uint8_t seen_small[128];
    uint8_t *seen = seen_small;
    if (d->n_fields <= sizeof(seen_small))
        memset(seen_small, 0, sizeof(seen_small));
    else if ((seen = calloc(d->n_fields, 1)) == NULL)
        return fail(c, "out of memory");

    int rc = 0;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE) {
            rc = fail(c, "object keys must be strings");
            break;
        }
        const char *key = scalar(k);
        if (skip_at_type && strcmp(key, "@type") == 0)
            continue;
        const ProtobufCFieldDescriptor *f = find_field(d, key);
        if (f == NULL) {
            rc = fail(c, "unknown field \"%s\" in %s", key, d->name);
            break;
        }
        size_t idx = (size_t)(f - d->fields);
        size_t mark = path_push_field(c, f->name);
        if (seen[idx]) {
            rc = fail(c, "field given twice");
            break;
        }
        seen[idx] = 1;
        if (!is_null(v) && set_field(c, msg, f, v) < 0) {
            rc = -1;
            break;
        }
        path_pop(c, mark);
    }
    if (seen != seen_small)
        free(seen);
    return rc;
}

/* ---- entry points ------------------------------------------------------ */

int xds_convert_text(const char *text, size_t len, const ProtobufCMessageDescriptor *desc,
                     ProtobufCMessage **out, char *err, size_t errlen)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    struct conv c = {.doc = &doc, .err = err, .errlen = errlen};
    int rc = -1;

    *out = NULL;
    if (errlen)
        err[0] = '\0';
    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, errlen, "line %zu column %zu: %s%s%s", parser.problem_mark.line + 1,
                 parser.problem_mark.column + 1, parser.problem ? parser.problem : "syntax error",
                 parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return -1;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL || is_null(root)) {
        snprintf(err, errlen, "the document is empty");
        goto done;
    }
    ProtobufCMessage *msg = new_message(desc);
    if (msg == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    c.max_nodes = MIN_BUDGET + MAX_EXPANSION * (size_t)(doc.nodes.top - doc.nodes.start);
    if (fill_message(&c, root, msg, 0) < 0) {
        protobuf_c_message_free_unpacked(msg, NULL);
        goto done;
    }
    *out = msg;
    rc = 0;
done:
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

char *xds_read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;

    if (f == NULL)
        return NULL;
    for (;;) {
        if (cap - len < 4096) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *nbuf = realloc(buf, ncap + 1);
            if (nbuf == NULL) {
                free(buf);
                fclose(f);
                errno = ENOMEM;
                return NULL;
            }
            buf = nbuf;
            cap = ncap;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0) {
            if (ferror(f)) {
                int e = errno;
                free(buf);
                fclose(f);
                errno = e ? e : EIO;
                return NULL;
            }
            break;
        }
    }
    fclose(f);
    buf[len] = '\0';
    if (len_out)
        *len_out = len;
    return buf;
}

int xds_convert_file(const char *path, const ProtobufCMessageDescriptor *desc,
                     ProtobufCMessage **out, char *err, size_t errlen)
{
    size_t len;
    char *text = xds_read_file(path, &len);

    *out = NULL;
    if (text == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    int rc = xds_convert_text(text, len, desc, out, err, errlen);
    free(text);
    return rc;
}
