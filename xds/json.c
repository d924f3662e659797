#include "json.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "xds/registry.h"

void xds_sb_add(struct xds_sb *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            abort();
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void xds_sb_addf(struct xds_sb *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(tmp)) {
        xds_sb_add(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (big == NULL)
        abort();
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    xds_sb_add(b, big, (size_t)n);
    free(big);
}

size_t xds_path_push(struct xds_path *p, const char *fmt, ...)
{
    size_t mark = p->len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p->s + p->len, sizeof(p->s) - p->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        p->len += (size_t)n < sizeof(p->s) - p->len ? (size_t)n : sizeof(p->s) - p->len - 1;
    return mark;
}

void xds_path_pop(struct xds_path *p, size_t mark)
{
    p->len = mark;
    p->s[mark] = '\0';
}

void xds_sb_str(struct xds_sb *b, const char *s)
{
    xds_sb_add(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        /* the run of characters that need no escape, in one copy */
        const unsigned char *q = p;
        while (*q >= 0x20 && *q != '"' && *q != '\\')
            q++;
        if (q != p) {
            xds_sb_add(b, (const char *)p, (size_t)(q - p));
            p = q - 1;
            continue;
        }
        switch (*p) {
        case '"':
            xds_sb_add(b, "\\\"", 2);
            break;
        case '\\':
            xds_sb_add(b, "\\\\", 2);
            break;
        case '\n':
            xds_sb_add(b, "\\n", 2);
            break;
        case '\r':
            xds_sb_add(b, "\\r", 2);
            break;
        case '\t':
            xds_sb_add(b, "\\t", 2);
            break;
        default:
            if (*p < 0x20)
                xds_sb_addf(b, "\\u%04x", *p);
            else
                xds_sb_add(b, (const char *)p, 1);
        }
    }
    xds_sb_add(b, "\"", 1);
}

void xds_sb_base64(struct xds_sb *b, const uint8_t *p, size_t n)
{
    xds_sb_add(b, "\"", 1);
    while (n) {
        /* EVP_EncodeBlock writes 4 characters per 3 bytes and a NUL. */
        unsigned char out[4 * 768 / 3 + 1];
        size_t k = n < 768 ? n : 768;
        int w = EVP_EncodeBlock(out, p, (int)k);
        xds_sb_add(b, (const char *)out, (size_t)w);
        p += k;
        n -= k;
    }
    xds_sb_add(b, "\"", 1);
}

/* Fields whose content is secret, by "message.field". */
static int redacted(const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f)
{
    static const char *const secret[] = {
        "envoy.extensions.transport_sockets.tls.v3.TlsCertificate.private_key",
        "envoy.extensions.transport_sockets.tls.v3.TlsCertificate.password",
        "envoy.extensions.transport_sockets.tls.v3.TlsSessionTicketKeys.keys",
        "envoy.extensions.transport_sockets.tls.v3.GenericSecret.secret",
    };
    char full[256];
    snprintf(full, sizeof(full), "%s.%s", d->name, f->name);
    for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++)
        if (strcmp(full, secret[i]) == 0)
            return 1;
    return 0;
}

/* One write: where it goes, how (XDS_JSON_*), and the indentation level. */
struct out {
    struct xds_sb *b;
    unsigned flags;
    int indent;
    int sensitive; /* inside a secret field (XDS_JSON_REDACT_NESTED) */
    const struct xds_json_mask *mask; /* the fields of the message being written to keep; NULL: all */
};

/* The child of mask naming field, or NULL when the mask drops it. */
static const struct xds_json_mask *mask_child(const struct xds_json_mask *mask, const char *field)
{
    for (size_t i = 0; i < mask->n_sub; i++)
        if (strcmp(mask->sub[i].name, field) == 0)
            return &mask->sub[i];
    return NULL;
}

#define SB_LIT(b, lit) xds_sb_add((b), (lit), sizeof(lit) - 1)

/* Before a field or an element: a new line at the current depth, with
 * XDS_JSON_INDENT; nothing without. */
static void newline(struct out *o)
{
    static const char spaces[] = "\n                                                                ";
    if (!(o->flags & XDS_JSON_INDENT))
        return;
    size_t n = (size_t)o->indent * 2;
    xds_sb_add(o->b, spaces, 1);
    for (; n > sizeof(spaces) - 2; n -= sizeof(spaces) - 2)
        xds_sb_add(o->b, spaces + 1, sizeof(spaces) - 2);
    xds_sb_add(o->b, spaces + 1, n);
}

/* "name": with XDS_JSON_INDENT's space after the colon. */
static void key(struct out *o, const char *name)
{
    xds_sb_str(o->b, name);
    if (o->flags & XDS_JSON_INDENT)
        SB_LIT(o->b, ": ");
    else
        SB_LIT(o->b, ":");
}

static void message(struct out *o, const ProtobufCMessage *m);
static void fields_one(struct out *o, const char *base, const ProtobufCMessageDescriptor *d,
                       const ProtobufCFieldDescriptor *f, int first);

static void value(struct out *o, const ProtobufCFieldDescriptor *f, const void *p)
{
    struct xds_sb *b = o->b;
    int exact = (o->flags & XDS_JSON_EXACT) != 0;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        xds_sb_addf(b, "%" PRId32, *(const int32_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        xds_sb_addf(b, "%" PRIu32, *(const uint32_t *)p);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        xds_sb_addf(b, "\"%" PRId64 "\"", *(const int64_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        xds_sb_addf(b, "\"%" PRIu64 "\"", *(const uint64_t *)p);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        /* %.9g and %.17g read back to the same bits; %g is for people. */
        xds_sb_addf(b, exact ? "%.9g" : "%g", (double)*(const float *)p);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        xds_sb_addf(b, exact ? "%.17g" : "%g", *(const double *)p);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        xds_sb_addf(b, "%s", *(const protobuf_c_boolean *)p ? "true" : "false");
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *ev =
            protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)p);
        if (ev)
            xds_sb_str(b, ev->name);
        else
            xds_sb_addf(b, "%d", *(const int *)p);
        break;
    }
    case PROTOBUF_C_TYPE_STRING:
        xds_sb_str(b, o->sensitive ? "[redacted]" : *(char *const *)p);
        break;
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *bd = p;
        if (o->sensitive)
            xds_sb_base64(b, (const uint8_t *)"[redacted]", 10);
        else
            xds_sb_base64(b, bd->data, bd->len);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(const ProtobufCMessage *const *)p;
        if (m)
            message(o, m);
        else
            SB_LIT(b, "null");
        break;
    }
    }
}

/* The types protobuf-c stores in 8 bytes. */
static int is_wide(ProtobufCType t)
{
    return t == PROTOBUF_C_TYPE_INT64 || t == PROTOBUF_C_TYPE_UINT64 || t == PROTOBUF_C_TYPE_SINT64 ||
           t == PROTOBUF_C_TYPE_FIXED64 || t == PROTOBUF_C_TYPE_SFIXED64 || t == PROTOBUF_C_TYPE_DOUBLE;
}

static int is_default(const ProtobufCFieldDescriptor *f, const void *p)
{
    if (is_wide(f->type))
        return *(const uint64_t *)p == 0;
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return s == NULL || s[0] == '\0';
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(const void *const *)p == NULL;
    case PROTOBUF_C_TYPE_BOOL:
        return *(const protobuf_c_boolean *)p == 0;
    default:
        return *(const uint32_t *)p == 0;
    }
}

static size_t elem_size(const ProtobufCFieldDescriptor *f)
{
    if (is_wide(f->type))
        return 8;
    switch (f->type) {
    case PROTOBUF_C_TYPE_MESSAGE:
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    default:
        return 4;
    }
}

/* seconds/nanos as "1.5s" or "-0.25s", exactly. */
static void duration_exact(struct xds_sb *b, int64_t sec, int32_t nanos)
{
    const char *sign = sec < 0 || nanos < 0 ? "-" : "";
    uint64_t s = sec < 0 ? (uint64_t)0 - (uint64_t)sec : (uint64_t)sec;
    int32_t n = nanos < 0 ? -nanos : nanos;
    if (n == 0) {
        xds_sb_addf(b, "\"%s%" PRIu64 "s\"", sign, s);
        return;
    }
    char frac[16];
    snprintf(frac, sizeof(frac), "%09" PRId32, n);
    for (size_t l = strlen(frac); l > 1 && frac[l - 1] == '0'; l--)
        frac[l - 1] = '\0';
    xds_sb_addf(b, "\"%s%" PRIu64 ".%ss\"", sign, s, frac);
}

static int64_t field_i64(const ProtobufCMessage *m, const char *name)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
    return *(const int64_t *)((const char *)m + f->offset);
}

static int32_t field_i32(const ProtobufCMessage *m, const char *name)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
    return *(const int32_t *)((const char *)m + f->offset);
}

/* A wrapper (BoolValue, UInt32Value, ...): one field, written bare. */
static int is_wrapper(const ProtobufCMessageDescriptor *d)
{
    return strncmp(d->name, "google.protobuf.", 16) == 0 && strstr(d->name, "Value") && d->n_fields == 1 &&
           strcmp(d->name, "google.protobuf.Value") != 0 && strcmp(d->name, "google.protobuf.ListValue") != 0;
}

/* Timestamp is written as RFC 3339 only with XDS_JSON_EXACT. */
static int is_timestamp(const ProtobufCMessageDescriptor *d)
{
    return strcmp(d->name, "google.protobuf.Timestamp") == 0;
}

/* The well-known types with a JSON form of their own, which an Any holds
 * under "value" with XDS_JSON_EXACT. */
static int is_well_known(const ProtobufCMessageDescriptor *d)
{
    return d == &google__protobuf__duration__descriptor || is_timestamp(d) ||
           d == &google__protobuf__struct__descriptor || d == &google__protobuf__list_value__descriptor ||
           d == &google__protobuf__value__descriptor || is_wrapper(d);
}

/* Writes m in its own JSON form if it is a well-known type. Returns 1 if
 * it was one. Struct, ListValue and Value are arbitrary JSON: one line,
 * whatever the flags. */
static int special(struct out *o, const ProtobufCMessage *m)
{
    struct xds_sb *b = o->b;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (d == &google__protobuf__struct__descriptor) {
        const Google__Protobuf__Struct *st = (const Google__Protobuf__Struct *)m;
        SB_LIT(b, "{");
        for (size_t i = 0; i < st->n_fields; i++) {
            if (i)
                SB_LIT(b, ",");
            xds_sb_str(b, st->fields[i]->key);
            SB_LIT(b, ":");
            if (st->fields[i]->value)
                message(o, &st->fields[i]->value->base);
            else
                SB_LIT(b, "null");
        }
        SB_LIT(b, "}");
        return 1;
    }
    if (d == &google__protobuf__list_value__descriptor) {
        const Google__Protobuf__ListValue *l = (const Google__Protobuf__ListValue *)m;
        SB_LIT(b, "[");
        for (size_t i = 0; i < l->n_values; i++) {
            if (i)
                SB_LIT(b, ",");
            message(o, &l->values[i]->base);
        }
        SB_LIT(b, "]");
        return 1;
    }
    if (d == &google__protobuf__value__descriptor) {
        const Google__Protobuf__Value *v = (const Google__Protobuf__Value *)m;
        switch (v->kind_case) {
        case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
            xds_sb_addf(b, "%.17g", v->number_value);
            break;
        case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
            xds_sb_str(b, v->string_value);
            break;
        case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
            xds_sb_addf(b, "%s", v->bool_value ? "true" : "false");
            break;
        case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
            message(o, &v->struct_value->base);
            break;
        case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
            message(o, &v->list_value->base);
            break;
        default:
            SB_LIT(b, "null");
        }
        return 1;
    }
    if (d == &google__protobuf__duration__descriptor) {
        const Google__Protobuf__Duration *du = (const Google__Protobuf__Duration *)m;
        if (o->flags & XDS_JSON_EXACT)
            duration_exact(b, du->seconds, du->nanos);
        else
            xds_sb_addf(b, "\"%gs\"", (double)du->seconds + du->nanos / 1e9);
        return 1;
    }
    if ((o->flags & XDS_JSON_EXACT) && is_timestamp(d)) {
        time_t t = (time_t)field_i64(m, "seconds");
        struct tm tm;
        char buf[64];
        gmtime_r(&t, &tm);
        strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
        int32_t ns = field_i32(m, "nanos");
        if (ns)
            xds_sb_addf(b, "\"%s.%09" PRId32 "Z\"", buf, ns);
        else
            xds_sb_addf(b, "\"%sZ\"", buf);
        return 1;
    }
    if (is_wrapper(d)) {
        value(o, &d->fields[0], (const char *)m + d->fields[0].offset);
        return 1;
    }
    return 0;
}

/* The fields of m that are set; first: nothing written yet in the
 * enclosing object. */
static void fields(struct out *o, const ProtobufCMessage *m, int first)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *p = base + f->offset;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
                continue;
        } else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            if (*(const size_t *)(base + f->quantifier_offset) == 0 && !(o->flags & XDS_JSON_DEFAULTS))
                continue;
        } else if (is_default(f, p) &&
                   (!(o->flags & XDS_JSON_DEFAULTS) || f->type == PROTOBUF_C_TYPE_MESSAGE)) {
            continue;
        }
        const struct xds_json_mask *outer = o->mask, *keep = NULL;
        if (outer && (keep = mask_child(outer, f->name)) == NULL)
            continue;
        /* a leaf of the mask keeps the field whole */
        o->mask = keep && keep->n_sub ? keep : NULL;
        fields_one(o, base, d, f, first);
        o->mask = outer;
        first = 0;
    }
}

/* protoc's map<K, V>: a repeated XxxEntry {key = 1; value = 2}. */
static int is_map_entry(const ProtobufCMessageDescriptor *d)
{
    size_t sl = strlen(d->short_name);
    return d->n_fields == 2 && d->fields[0].id == 1 && strcmp(d->fields[0].name, "key") == 0 &&
           d->fields[1].id == 2 && strcmp(d->fields[1].name, "value") == 0 && sl > 5 &&
           strcmp(d->short_name + sl - 5, "Entry") == 0;
}

/* A map as the proto3 JSON mapping writes it: an object whose keys are the
 * map's keys (numbers and booleans as strings), which xds/convert.c reads
 * back. */
static void map(struct out *o, const ProtobufCMessage *const *v, size_t n)
{
    SB_LIT(o->b, "{");
    o->indent++;
    for (size_t k = 0; k < n; k++) {
        const ProtobufCMessageDescriptor *ed = v[k]->descriptor;
        const char *e = (const char *)v[k];
        if (k)
            SB_LIT(o->b, ",");
        newline(o);
        if (ed->fields[0].type == PROTOBUF_C_TYPE_STRING) {
            key(o, *(char *const *)(e + ed->fields[0].offset));
        } else {
            struct xds_sb ks = {0};
            struct out ko = {.b = &ks};
            value(&ko, &ed->fields[0], e + ed->fields[0].offset);
            /* bools and numbers: quoted; 64-bit ones already are */
            if (ks.p && ks.p[0] == '"')
                xds_sb_add(o->b, ks.p, ks.len);
            else
                xds_sb_addf(o->b, "\"%s\"", ks.p ? ks.p : "");
            SB_LIT(o->b, ":");
            if (o->flags & XDS_JSON_INDENT)
                SB_LIT(o->b, " ");
            free(ks.p);
        }
        value(o, &ed->fields[1], e + ed->fields[1].offset);
    }
    o->indent--;
    if (n)
        newline(o);
    SB_LIT(o->b, "}");
}

/* Writes field f of the message at base, of type d; first: nothing
 * written yet in the enclosing object. */
static void fields_one(struct out *o, const char *base, const ProtobufCMessageDescriptor *d,
                       const ProtobufCFieldDescriptor *f, int first)
{
    const void *p = base + f->offset;
    if (!first)
        SB_LIT(o->b, ",");
    newline(o);
    key(o, f->name);
    int secret = (o->flags & XDS_JSON_REDACT) && redacted(d, f);
    if (secret && !(o->flags & XDS_JSON_REDACT_NESTED)) {
        xds_sb_str(o->b, "[redacted]");
        return;
    }
    o->sensitive += secret;
    if (f->label != PROTOBUF_C_LABEL_REPEATED) {
        value(o, f, p);
        o->sensitive -= secret;
        return;
    }
    size_t n = *(const size_t *)(base + f->quantifier_offset);
    const char *arr = *(const char *const *)p;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE && is_map_entry(f->descriptor)) {
        map(o, (const ProtobufCMessage *const *)arr, n);
        o->sensitive -= secret;
        return;
    }
    size_t sz = elem_size(f);
    SB_LIT(o->b, "[");
    o->indent++;
    for (size_t k = 0; k < n; k++) {
        if (k)
            SB_LIT(o->b, ",");
        newline(o);
        value(o, f, arr + k * sz);
    }
    o->indent--;
    newline(o);
    SB_LIT(o->b, "]");
    o->sensitive -= secret;
}

static void message(struct out *o, const ProtobufCMessage *m)
{
    if (special(o, m))
        return;
    SB_LIT(o->b, "{");
    o->indent++;
    size_t before = o->b->len;
    if (m->descriptor == &google__protobuf__any__descriptor) {
        const Google__Protobuf__Any *any = (const Google__Protobuf__Any *)m;
        const ProtobufCMessageDescriptor *inner = xds_registry_lookup(any->type_url);
        ProtobufCMessage *u = inner ? protobuf_c_message_unpack(inner, NULL, any->value.len, any->value.data)
                                    : NULL;
        newline(o);
        key(o, "@type");
        xds_sb_str(o->b, any->type_url);
        if (u && (o->flags & XDS_JSON_EXACT) && is_well_known(inner)) {
            /* The proto3 mapping: a well-known type's own form under "value". */
            SB_LIT(o->b, ",");
            newline(o);
            key(o, "value");
            special(o, u);
        } else if (u) {
            fields(o, u, 0);
        }
        if (u)
            protobuf_c_message_free_unpacked(u, NULL);
    } else {
        fields(o, m, 1);
    }
    o->indent--;
    if (o->b->len != before)
        newline(o);
    SB_LIT(o->b, "}");
}

void xds_json_write(struct xds_sb *b, const ProtobufCMessage *m, unsigned flags)
{
    struct out o = {.b = b, .flags = flags};
    message(&o, m);
}

void xds_json_write_masked(struct xds_sb *b, const ProtobufCMessage *m, unsigned flags,
                           const struct xds_json_mask *mask)
{
    struct out o = {.b = b, .flags = flags, .mask = mask};
    message(&o, m);
}

void xds_json_message(struct xds_sb *b, const ProtobufCMessage *m)
{
    xds_json_write(b, m, XDS_JSON_REDACT);
}
