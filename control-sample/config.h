/*
 * legate-control's config: the resources it serves, loaded from a
 * legate.control.v1.ControlConfig file (YAML or JSON) and packed once into
 * their wire form, so a response is assembled without re-encoding anything.
 */
#ifndef LEGATE_CONTROL_CONFIG_H
#define LEGATE_CONTROL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/** The xDS resource types legate-control serves, in the order the client
 *  usually needs them. */
enum cp_type {
    CP_LDS,
    CP_RDS,
    CP_CDS,
    CP_EDS,
    CP_SDS,
    CP_NTYPES,
};

struct cp_type_info {
    const char *url;        /* type.googleapis.com/envoy.config.listener.v3.Listener */
    const char *short_name; /* the message name: "Listener" */
    int wildcard;           /* state of the world ignores resource_names (LDS, CDS) */
};

extern const struct cp_type_info cp_types[CP_NTYPES];

/** The type whose URL is url, or -1 if legate-control does not serve it. */
int cp_type_from_url(const char *url);

/** One resource, packed (the value of its google.protobuf.Any). */
struct cp_resource {
    char *name;
    uint8_t *data;
    size_t len;
};

/** An immutable snapshot of everything served. */
struct cp_config {
    uint64_t version; /* the generation, set by the caller; "1" at start */
    struct cp_resource *res[CP_NTYPES];
    size_t n[CP_NTYPES];
};

/**
 * Loads path into a new config (version 0; the caller numbers it).
 * Secrets' DataSources that name a file are read now and served inline.
 * Returns 0 and *out (free with cp_config_free), or -1 with a one-line
 * message in err that starts with path and names the field:
 * "c.yaml: secrets[0].tls_certificate.private_key.filename: x.key: No such
 * file or directory". File contents never appear in a message.
 */
int cp_config_load(const char *path, struct cp_config **out, char *err, size_t errlen);

void cp_config_free(struct cp_config *cfg);

/** The resource of type t named name, or NULL. */
const struct cp_resource *cp_config_find(const struct cp_config *cfg, enum cp_type t,
                                         const char *name);

#endif
