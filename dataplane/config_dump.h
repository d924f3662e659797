/*
 * /config_dump in Envoy's shape: an envoy.admin.v3.ConfigDump whose configs
 * are, in Envoy's order, BootstrapConfigDump, ClustersConfigDump,
 * EndpointsConfigDump (with ?include_eds), ListenersConfigDump,
 * ScopedRoutesConfigDump, RoutesConfigDump and SecretsConfigDump, with
 * Envoy's ?resource=, ?mask=, ?name_regex= and ?include_eds. Secrets are
 * redacted as Envoy's admin redacts fields marked sensitive.
 *
 * The xDS tables keep neither when a resource last changed nor which
 * resource a NACK was about: struct dp_dump_notes keeps both, per type and
 * name, for the dump (last_updated, error_state).
 */
#ifndef LEGATE_DP_CONFIG_DUMP_H
#define LEGATE_DP_CONFIG_DUMP_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "xds/bootstrap.h"
#include "xds/client.h"
#include "xds/state.h"
#include "xds/strmap.h"

/* What the dump knows of one xDS resource name beyond the table. */
struct dp_dump_note {
    char *name;
    uint64_t hash;               /* of the version last_updated is about */
    double updated;              /* wall clock when that version was accepted; 0: never */
    int in_table;                /* accepted and held */
    /* The last NACK that named the resource, cleared by the next ACK of its
     * type (details NULL: none). */
    char *err_details, *err_version;
    double err_at;
};

struct dp_dump_notes {
    struct {
        struct dp_dump_note *v;
        size_t n, cap;
        struct strmap idx;       /* name -> index in v */
    } t[XDS_T_N];
};

/** After tab (the resources of type now accepted) is published: a resource
 *  new or changed (by hash) gets last_updated = now; notes of names gone
 *  are dropped unless they carry an error. */
void dp_dump_notes_published(struct dp_dump_notes *n, int type, const struct xds_table *tab, double now);
/** A NACK of type named name: details and the rejected version. */
void dp_dump_notes_nack(struct dp_dump_notes *n, int type, const char *name, const char *version,
                        const char *details, double now);
/** An ACK of type: every error of that type is cleared (as Envoy's
 *  error_state is, "cleared after the next successful update"). */
void dp_dump_notes_ack(struct dp_dump_notes *n, int type);
/** The note of name, or NULL. */
const struct dp_dump_note *dp_dump_notes_get(const struct dp_dump_notes *n, int type, const char *name);
void dp_dump_notes_free(struct dp_dump_notes *n);
/** The wall clock in seconds (what last_updated shows). */
double dp_dump_wall_now(void);

/* One accepted xDS resource as the dump sees it. */
struct dp_dump_res {
    const char *name, *version;
    const ProtobufCMessage *msg;
    int warming;                 /* listener or cluster not installed (waits for a reference) */
};

/* The dynamic state, valid while the callback that receives it runs
 * (dp_dyn_dump_view holds the lock meanwhile). */
struct dp_dump_view {
    struct {
        const char *version;     /* last accepted version_info, or NULL */
        const struct dp_dump_res *v;
        size_t n;
        const struct xds_names *subs; /* RDS, EDS, SDS: the names subscribed */
    } t[XDS_T_N];
    const struct dp_dump_notes *notes;
};

/**
 * The Envoy-shaped dump of bs (loaded at started) and view (NULL without
 * dynamic resources), as query (the request's query string, or NULL)
 * selects. Returns the HTTP status: 200 with a JSON body, or Envoy's 400
 * (a mask no config takes, a ?resource= field that is not repeated, a bad
 * name_regex) or 404 (no config has that ?resource= field) with a text
 * one. *body is malloc'd, *ctype static.
 */
int dp_config_dump_envoy(const xds_bootstrap_t *bs, time_t started, const struct dp_dump_view *view,
                         const char *query, char **body, const char **ctype);

/** The value of key in query ("a=1&b=2"), percent-decoded into out; 1 when
 *  key is there (with or without a value), else 0. */
int dp_query_param(const char *query, const char *key, char *out, size_t outlen);

#endif
