#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "xds/convert.h"
#include "xds/json.h"
#include "xds/registry.h"

#define SB_LIT(b, lit) xds_sb_add((b), (lit), sizeof(lit) - 1)

int cp_store_read(const char *path, cp_cc_t **out, char *err, size_t errlen)
{
    char msg[1024];
    ProtobufCMessage *m;

    *out = NULL;
    if (xds_convert_file(path, &legate__control__v1__control_config__descriptor, &m, msg,
                         sizeof(msg)) < 0) {
        /* File-level errors already carry the path. */
        if (strncmp(msg, path, strlen(path)) == 0)
            snprintf(err, errlen, "%s", msg);
        else
            snprintf(err, errlen, "%s: %s", path, msg);
        return -1;
    }
    *out = (cp_cc_t *)m;
    return 0;
}

cp_cc_t *cp_store_clone(const cp_cc_t *cc)
{
    size_t len = protobuf_c_message_get_packed_size(&cc->base);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return NULL;
    protobuf_c_message_pack(&cc->base, buf);
    cp_cc_t *copy = legate__control__v1__control_config__unpack(NULL, len, buf);
    /* The packed form holds whatever keys the file holds inline. */
    explicit_bzero(buf, len);
    free(buf);
    return copy;
}

void cp_store_free(cp_cc_t *cc)
{
    if (cc)
        protobuf_c_message_free_unpacked(&cc->base, NULL);
}

/* The global list of type t: its count and array, in place. */
static void list_of(const cp_cc_t *cc, enum cp_type t, size_t **n, ProtobufCMessage ****arr)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(cc->base.descriptor, cp_types[t].field);
    *n = (size_t *)((char *)cc + f->quantifier_offset);
    *arr = (ProtobufCMessage ***)((char *)cc + f->offset);
}

const char *cp_store_name(const ProtobufCMessage *m, enum cp_type t)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, cp_types[t].key);
    return *(char *const *)((const char *)m + f->offset);
}

static ssize_t index_of(const cp_cc_t *cc, enum cp_type t, const char *name)
{
    size_t *n;
    ProtobufCMessage ***arr;
    list_of(cc, t, &n, &arr);
    for (size_t i = 0; i < *n; i++)
        if (strcmp(cp_store_name((*arr)[i], t), name) == 0)
            return (ssize_t)i;
    return -1;
}

ProtobufCMessage *cp_store_find(const cp_cc_t *cc, enum cp_type t, const char *name)
{
    size_t *n;
    ProtobufCMessage ***arr;
    list_of(cc, t, &n, &arr);
    ssize_t i = index_of(cc, t, name);
    return i < 0 ? NULL : (*arr)[i];
}

int cp_store_put(cp_cc_t *cc, enum cp_type t, ProtobufCMessage *m)
{
    size_t *n;
    ProtobufCMessage ***arr;
    list_of(cc, t, &n, &arr);
    ssize_t i = index_of(cc, t, cp_store_name(m, t));
    if (i >= 0) {
        protobuf_c_message_free_unpacked((*arr)[i], NULL);
        (*arr)[i] = m;
        return 0;
    }
    /* protobuf-c frees repeated fields with free(): realloc is its match. */
    ProtobufCMessage **v = realloc(*arr, (*n + 1) * sizeof(*v));
    if (v == NULL) {
        protobuf_c_message_free_unpacked(m, NULL);
        return -1;
    }
    v[(*n)++] = m;
    *arr = v;
    return 1;
}

int cp_store_delete(cp_cc_t *cc, enum cp_type t, const char *name)
{
    size_t *n;
    ProtobufCMessage ***arr;
    list_of(cc, t, &n, &arr);
    ssize_t i = index_of(cc, t, name);
    if (i < 0)
        return -1;
    protobuf_c_message_free_unpacked((*arr)[i], NULL);
    memmove(&(*arr)[i], &(*arr)[i + 1], (*n - (size_t)i - 1) * sizeof(**arr));
    (*n)--;
    return 0;
}

/* ---- JSON, nothing redacted ------------------------------------------------
 * The proto3 JSON mapping as xds/convert.c reads it back: proto field names,
 * enums by name, 64-bit integers as strings, bytes as base64, Any with
 * "@type" (and "value" for well-known types), Duration "1.5s", Timestamp
 * RFC 3339, wrappers as bare values, Struct/Value/ListValue as JSON. */

struct out {
    struct xds_sb b;
    int indent;
};

static void newline(struct out *o)
{
    static const char spaces[] = "\n                                                                ";
    size_t n = (size_t)o->indent * 2;
    xds_sb_add(&o->b, spaces, 1);
    for (; n > sizeof(spaces) - 2; n -= sizeof(spaces) - 2)
        xds_sb_add(&o->b, spaces + 1, sizeof(spaces) - 2);
    xds_sb_add(&o->b, spaces + 1, n);
}

static void message(struct out *o, const ProtobufCMessage *m);

static void scalar(struct out *o, const ProtobufCFieldDescriptor *f, const void *p)
{
    struct xds_sb *b = &o->b;
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
        xds_sb_addf(b, "%.9g", (double)*(const float *)p);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        xds_sb_addf(b, "%.17g", *(const double *)p);
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
            message(o, m);
        else
            SB_LIT(b, "null");
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

static size_t elem_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_MESSAGE:
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    default:
        return 4;
    }
}

/* seconds/nanos as "1.5s" or "-0.25s". */
static void duration(struct xds_sb *b, int64_t sec, int32_t nanos)
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

/* Well-known types with a JSON form of their own. Returns 1 if m was one. */
static int well_known(struct out *o, const ProtobufCMessage *m)
{
    const char *n = m->descriptor->name;
    if (strncmp(n, "google.protobuf.", 16) != 0)
        return 0;
    n += 16;
    if (strcmp(n, "Duration") == 0) {
        duration(&o->b, field_i64(m, "seconds"), field_i32(m, "nanos"));
        return 1;
    }
    if (strcmp(n, "Timestamp") == 0) {
        time_t t = (time_t)field_i64(m, "seconds");
        struct tm tm;
        char buf[64];
        gmtime_r(&t, &tm);
        strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
        int32_t ns = field_i32(m, "nanos");
        if (ns)
            xds_sb_addf(&o->b, "\"%s.%09" PRId32 "Z\"", buf, ns);
        else
            xds_sb_addf(&o->b, "\"%sZ\"", buf);
        return 1;
    }
    if (strcmp(n, "Struct") == 0 || strcmp(n, "ListValue") == 0 || strcmp(n, "Value") == 0) {
        /* Arbitrary JSON: xds/json.h writes it (nothing to redact in it). */
        xds_json_message(&o->b, m);
        return 1;
    }
    size_t l = strlen(n);
    if (l > 5 && strcmp(n + l - 5, "Value") == 0 && m->descriptor->n_fields == 1) {
        const ProtobufCFieldDescriptor *f = &m->descriptor->fields[0];
        scalar(o, f, (const char *)m + f->offset);
        return 1;
    }
    return 0;
}

static int is_well_known(const ProtobufCMessageDescriptor *d)
{
    const char *n = d->name;
    if (strncmp(n, "google.protobuf.", 16) != 0)
        return 0;
    n += 16;
    size_t l = strlen(n);
    return strcmp(n, "Duration") == 0 || strcmp(n, "Timestamp") == 0 ||
           strcmp(n, "Struct") == 0 || (l > 5 && strcmp(n + l - 5, "Value") == 0);
}

/* The fields of m, each on its own line; first: nothing written yet in the
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
            if (*(const size_t *)(base + f->quantifier_offset) == 0)
                continue;
        } else if (is_default(f, p)) {
            continue;
        }
        if (!first)
            SB_LIT(&o->b, ",");
        first = 0;
        newline(o);
        xds_sb_str(&o->b, f->name);
        SB_LIT(&o->b, ": ");
        if (f->label != PROTOBUF_C_LABEL_REPEATED) {
            scalar(o, f, p);
            continue;
        }
        size_t n = *(const size_t *)(base + f->quantifier_offset);
        const char *arr = *(const char *const *)p;
        size_t sz = elem_size(f);
        SB_LIT(&o->b, "[");
        o->indent++;
        for (size_t k = 0; k < n; k++) {
            if (k)
                SB_LIT(&o->b, ",");
            newline(o);
            scalar(o, f, arr + k * sz);
        }
        o->indent--;
        newline(o);
        SB_LIT(&o->b, "]");
    }
}

static void message(struct out *o, const ProtobufCMessage *m)
{
    if (well_known(o, m))
        return;
    SB_LIT(&o->b, "{");
    o->indent++;
    int empty = 1;
    if (m->descriptor == &google__protobuf__any__descriptor) {
        const Google__Protobuf__Any *any = (const Google__Protobuf__Any *)m;
        const ProtobufCMessageDescriptor *inner = xds_registry_lookup(any->type_url);
        ProtobufCMessage *u =
            inner ? protobuf_c_message_unpack(inner, NULL, any->value.len, any->value.data) : NULL;
        newline(o);
        SB_LIT(&o->b, "\"@type\": ");
        xds_sb_str(&o->b, any->type_url);
        if (u && is_well_known(inner)) {
            SB_LIT(&o->b, ",");
            newline(o);
            SB_LIT(&o->b, "\"value\": ");
            well_known(o, u);
        } else if (u) {
            fields(o, u, 0);
        }
        if (u)
            protobuf_c_message_free_unpacked(u, NULL);
        empty = 0;
    } else {
        size_t before = o->b.len;
        fields(o, m, 1);
        empty = o->b.len == before;
    }
    o->indent--;
    if (!empty)
        newline(o);
    SB_LIT(&o->b, "}");
}

/* ---- the file ------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

int cp_store_write(const char *path, const cp_cc_t *cc, char *err, size_t errlen)
{
    struct out o = {0};
    char tmp[4096], dirbuf[4096];
    int fd = -1, rc = -1;

    /* YAML takes a comment; a .json file stays plain JSON. */
    if (!ends_with(path, ".json")) {
        time_t now = time(NULL);
        struct tm tm;
        char when[32];
        gmtime_r(&now, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        xds_sb_addf(&o.b,
                    "# legate.control.v1.ControlConfig, written by legate-control's management API "
                    "at %s.\n# It may hold private keys: keep it 0600. Edits are picked up.\n",
                    when);
    }
    message(&o, &cc->base);
    SB_LIT(&o.b, "\n");

    snprintf(dirbuf, sizeof(dirbuf), "%s", path);
    const char *dir = dirname(dirbuf);
    snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path);
    /* mkstemp makes it 0600. */
    if ((fd = mkstemp(tmp)) < 0) {
        snprintf(err, errlen, "%s: cannot create a temporary file: %s", path, strerror(errno));
        goto out;
    }
    for (size_t off = 0; off < o.b.len;) {
        ssize_t n = write(fd, o.b.p + off, o.b.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "%s: write: %s", tmp, strerror(errno));
            goto out;
        }
        off += (size_t)n;
    }
    if (fsync(fd) < 0) {
        snprintf(err, errlen, "%s: fsync: %s", tmp, strerror(errno));
        goto out;
    }
    if (close(fd) < 0) {
        fd = -1;
        snprintf(err, errlen, "%s: close: %s", tmp, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        snprintf(err, errlen, "%s: rename: %s", path, strerror(errno));
        goto out;
    }
    tmp[0] = '\0';
    /* The rename itself must reach the disk too. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (rc < 0 && tmp[0])
        unlink(tmp);
    if (o.b.p)
        explicit_bzero(o.b.p, o.b.len);
    free(o.b.p);
    return rc;
}
