#include "json.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void value(struct xds_sb *b, const ProtobufCFieldDescriptor *f, const void *p)
{
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
        xds_sb_addf(b, "%g", (double)*(const float *)p);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        xds_sb_addf(b, "%g", *(const double *)p);
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
        xds_sb_str(b, *(char *const *)p);
        break;
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *bd = p;
        xds_sb_base64(b, bd->data, bd->len);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(const ProtobufCMessage *const *)p;
        if (m)
            xds_json_message(b, m);
        else
            xds_sb_add(b, "null", 4);
        break;
    }
    }
}

static int is_default(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return s == NULL || s[0] == '\0';
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(const void *const *)p == NULL;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const uint64_t *)p == 0;
    case PROTOBUF_C_TYPE_BOOL:
        return *(const protobuf_c_boolean *)p == 0;
    default:
        return *(const uint32_t *)p == 0;
    }
}

static int special(struct xds_sb *b, const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (d == &google__protobuf__struct__descriptor) {
        const Google__Protobuf__Struct *st = (const Google__Protobuf__Struct *)m;
        xds_sb_add(b, "{", 1);
        for (size_t i = 0; i < st->n_fields; i++) {
            if (i)
                xds_sb_add(b, ",", 1);
            xds_sb_str(b, st->fields[i]->key);
            xds_sb_add(b, ":", 1);
            if (st->fields[i]->value)
                xds_json_message(b, &st->fields[i]->value->base);
            else
                xds_sb_add(b, "null", 4);
        }
        xds_sb_add(b, "}", 1);
        return 1;
    }
    if (d == &google__protobuf__list_value__descriptor) {
        const Google__Protobuf__ListValue *l = (const Google__Protobuf__ListValue *)m;
        xds_sb_add(b, "[", 1);
        for (size_t i = 0; i < l->n_values; i++) {
            if (i)
                xds_sb_add(b, ",", 1);
            xds_json_message(b, &l->values[i]->base);
        }
        xds_sb_add(b, "]", 1);
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
            xds_json_message(b, &v->struct_value->base);
            break;
        case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
            xds_json_message(b, &v->list_value->base);
            break;
        default:
            xds_sb_add(b, "null", 4);
        }
        return 1;
    }
    if (d == &google__protobuf__duration__descriptor) {
        const Google__Protobuf__Duration *du = (const Google__Protobuf__Duration *)m;
        xds_sb_addf(b, "\"%gs\"", (double)du->seconds + du->nanos / 1e9);
        return 1;
    }
    if (strncmp(d->name, "google.protobuf.", 16) == 0 && strstr(d->name, "Value") && d->n_fields == 1 &&
        strcmp(d->name, "google.protobuf.Value") != 0 && strcmp(d->name, "google.protobuf.ListValue") != 0) {
        value(b, &d->fields[0], (const char *)m + d->fields[0].offset);
        return 1;
    }
    return 0;
}

static void fields(struct xds_sb *b, const ProtobufCMessage *m, int first)
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
            if (*(const size_t *)(base + f->quantifier_offset) == 0)
                continue;
        } else if (is_default(f, p)) {
            continue;
        }
        if (!first)
            xds_sb_add(b, ",", 1);
        first = 0;
        xds_sb_str(b, f->name);
        xds_sb_add(b, ":", 1);
        if (redacted(d, f)) {
            xds_sb_str(b, "[redacted]");
            continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *arr = *(const char *const *)p;
            size_t sz = f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING ? sizeof(void *)
                        : f->type == PROTOBUF_C_TYPE_BYTES                                      ? sizeof(ProtobufCBinaryData)
                        : (f->type == PROTOBUF_C_TYPE_INT64 || f->type == PROTOBUF_C_TYPE_UINT64 ||
                           f->type == PROTOBUF_C_TYPE_SINT64 || f->type == PROTOBUF_C_TYPE_FIXED64 ||
                           f->type == PROTOBUF_C_TYPE_SFIXED64 || f->type == PROTOBUF_C_TYPE_DOUBLE)
                            ? 8
                        : f->type == PROTOBUF_C_TYPE_BOOL ? sizeof(protobuf_c_boolean)
                                                          : 4;
            xds_sb_add(b, "[", 1);
            for (size_t k = 0; k < n; k++) {
                if (k)
                    xds_sb_add(b, ",", 1);
                value(b, f, arr + k * sz);
            }
            xds_sb_add(b, "]", 1);
        } else {
            value(b, f, p);
        }
    }
}

void xds_json_message(struct xds_sb *b, const ProtobufCMessage *m)
{
    if (special(b, m))
        return;
    if (m->descriptor == &google__protobuf__any__descriptor) {
        const Google__Protobuf__Any *any = (const Google__Protobuf__Any *)m;
        const ProtobufCMessageDescriptor *inner = xds_registry_lookup(any->type_url);
        ProtobufCMessage *u = inner ? protobuf_c_message_unpack(inner, NULL, any->value.len, any->value.data)
                                    : NULL;
        xds_sb_add(b, "{\"@type\":", 9);
        xds_sb_str(b, any->type_url);
        if (u) {
            fields(b, u, 0);
            protobuf_c_message_free_unpacked(u, NULL);
        }
        xds_sb_add(b, "}", 1);
        return;
    }
    xds_sb_add(b, "{", 1);
    fields(b, m, 1);
    xds_sb_add(b, "}", 1);
}
