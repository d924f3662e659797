/*
 * legate-control's config: the resources it serves, loaded from a
 * legate.control.v1.ControlConfig (YAML or JSON file, or a message the
 * management API edited) and packed once into their wire form, so a
 * response is assembled without re-encoding anything.
 */
#ifndef LEGATE_CONTROL_CONFIG_H
#define LEGATE_CONTROL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "legate/control/v1/control.pb-c.h"

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
    const char *field;      /* the list in ControlConfig and NodeScope: "listeners" */
    const char *key;        /* the field that names a resource: "name" */
    const ProtobufCMessageDescriptor *desc;
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

/** Resources by type, in config order, with an index by name. */
struct cp_rset {
    struct cp_resource *res[CP_NTYPES];
    size_t n[CP_NTYPES];
    const struct cp_resource **by_name[CP_NTYPES]; /* sorted by name; names are unique */
};

/** A NodeScope: resources for the nodes it matches. */
struct cp_scope {
    char *node_id;      /* "" matches any */
    char *node_cluster; /* "" matches any */
    struct cp_rset rs;
};

/** An immutable snapshot of everything served. */
struct cp_config {
    uint64_t version; /* the generation, set by the caller; "1" at start */
    struct cp_rset global;
    struct cp_scope *scopes;
    size_t n_scopes;
};

/**
 * Packs cc into a new config (version 0; the caller numbers it). cc is not
 * changed: secrets' DataSources that name a file are read now and served
 * inline, and every certificate and key of a secret is checked (PEM parses,
 * the key matches the certificate). Returns 0 and *out (free with
 * cp_config_free), or -1 with a one-line message in err that names the
 * field: "secrets[0].tls_certificate.private_key.filename: x.key: No such
 * file or directory". File contents never appear in a message.
 */
int cp_config_build(const Legate__Control__V1__ControlConfig *cc, struct cp_config **out,
                    char *err, size_t errlen);

/** Reads path and builds it: like cp_config_build, every message starting
 *  with path ("c.yaml: listeners[0].name: a name is required"). */
int cp_config_load(const char *path, struct cp_config **out, char *err, size_t errlen);

void cp_config_free(struct cp_config *cfg);

/** 1 if a and b serve the same resources to every node (versions aside). */
int cp_config_equal(const struct cp_config *a, const struct cp_config *b);

/**
 * The resources of type t that a node (id, cluster: "" when unknown) gets:
 * the global ones overlaid by every matching scope in order. With names ==
 * NULL all of them (wildcard), else those of names that exist, in the order
 * of names. Returns the count and *sel (malloc'd, NULL when out of memory;
 * its entries point into cfg).
 */
size_t cp_config_select(const struct cp_config *cfg, const char *node_id, const char *node_cluster,
                        enum cp_type t, char *const *names, size_t n_names,
                        const struct cp_resource ***sel);

/** The global resource of type t named name, or NULL. */
const struct cp_resource *cp_config_find(const struct cp_config *cfg, enum cp_type t,
                                         const char *name);

/**
 * The files that cc's secrets name (global and scoped), each once, in
 * order. Returns the count and *out (malloc'd array of malloc'd strings;
 * free with cp_config_files_free), or -1 when out of memory.
 */
int cp_config_files(const Legate__Control__V1__ControlConfig *cc, char ***out, size_t *n);
void cp_config_files_free(char **files, size_t n);

#endif
