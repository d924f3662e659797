#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "xds/convert.h"
#include "xds/json.h"

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

/* ---- the file ------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

int cp_store_write(const char *path, const cp_cc_t *cc, char *err, size_t errlen)
{
    struct xds_sb out = {0};
    char tmp[4096], dirbuf[4096];
    int fd = -1, rc = -1;

    /* YAML takes a comment; a .json file stays plain JSON. */
    if (!ends_with(path, ".json")) {
        time_t now = time(NULL);
        struct tm tm;
        char when[32];
        gmtime_r(&now, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        xds_sb_addf(&out,
                    "# legate.control.v1.ControlConfig, written by legate-control's management API "
                    "at %s.\n# It may hold private keys: keep it 0600. Edits are picked up.\n",
                    when);
    }
    /* Nothing redacted (the file is the store), in the form xds/convert.c
     * reads back to the same message. */
    xds_json_write(&out, &cc->base, XDS_JSON_INDENT | XDS_JSON_EXACT);
    SB_LIT(&out, "\n");

    snprintf(dirbuf, sizeof(dirbuf), "%s", path);
    const char *dir = dirname(dirbuf);
    snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path);
    /* mkstemp makes it 0600. */
    if ((fd = mkstemp(tmp)) < 0) {
        snprintf(err, errlen, "%s: cannot create a temporary file: %s", path, strerror(errno));
        goto out;
    }
    for (size_t off = 0; off < out.len;) {
        ssize_t n = write(fd, out.p + off, out.len - off);
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
    if (out.p)
        explicit_bzero(out.p, out.len);
    free(out.p);
    return rc;
}
