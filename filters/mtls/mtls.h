/*
 * legate.filters.http.mtls: application-level client certificate checks
 * (Kong's mtls-auth). config.c builds the immutable configs from
 * legate.filters.http.mtls.v1.{Mtls,MtlsPerRoute}; mtls.c is the runtime.
 * The matching and the decision are plain functions of a config and a
 * struct dp_peer_identity, exported for the unit tests.
 *
 * See docs/filters/mtls.md.
 */
#ifndef LEGATE_FILTERS_MTLS_H
#define LEGATE_FILTERS_MTLS_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "dataplane/config.h"
#include "dataplane/filter.h"

/* What a config pointer handed to the hooks is: the filter's own, or a
 * route's override (typed_per_filter_config replaces the pointer). */
#define DP_MTLS_CFG_FILTER 0x6d746c73 /* "mtls" */
#define DP_MTLS_CFG_ROUTE 0x6d74726f  /* "mtro" */

enum dp_mtls_san_type {
    DP_MTLS_SAN_DNS = 1,
    DP_MTLS_SAN_URI,
    DP_MTLS_SAN_EMAIL,
};

/** A SubjectAltNameMatcher. */
struct dp_mtls_san {
    enum dp_mtls_san_type type;
    struct dp_string_matcher m;
};

/** One "type=value" of a distinguished name, as RFC 2253 prints it (value
 *  escapes kept as written, surrounding spaces dropped). */
struct dp_mtls_ava {
    char *type;
    char *value;
};

/** A subject/issuer pattern: one attribute matches a name that contains it;
 *  several must equal the whole name, in order. */
struct dp_mtls_dn {
    struct dp_mtls_ava *v;
    size_t n;
};

struct dp_mtls_consumer {
    char *username;
    char *id;        /* NULL when not set */
    char *custom_id; /* NULL when not set */
    struct dp_mtls_san *sans;
    size_t n_sans;
    struct dp_mtls_dn *subjects;
    size_t n_subjects;
};

/** The filter's config (one per connection manager). */
struct dp_mtls_cfg {
    int kind; /* DP_MTLS_CFG_FILTER */
    int require;
    struct dp_mtls_san *sans;
    size_t n_sans;
    struct dp_mtls_dn *subjects;
    size_t n_subjects;
    struct dp_mtls_dn *issuers;
    size_t n_issuers;
    struct dp_mtls_consumer *consumers;
    size_t n_consumers;
    char *anonymous; /* NULL when not set */
};

/** A route's override (MtlsPerRoute). */
struct dp_mtls_route_cfg {
    int kind;     /* DP_MTLS_CFG_ROUTE */
    int disabled;
    int require;  /* 1, 0, or -1: the filter's policy */
};

enum dp_mtls_verdict {
    /** Allowed; *consumer (may be NULL) names who it is. */
    DP_MTLS_ALLOW = 0,
    /** Not required and no usable certificate: go on, as the anonymous
     *  consumer when the config has one. */
    DP_MTLS_ANONYMOUS,
    /** 401: required, none presented. */
    DP_MTLS_NO_CERT,
    /** 401: presented, did not verify (dp_mtls_reason says why). */
    DP_MTLS_UNVERIFIED,
    /** 403: verified, not allowed by allowed_sans/subjects/issuers. */
    DP_MTLS_FORBIDDEN,
};

/* ---- config (config.c) ------------------------------------------------- */

/** Builds a struct dp_mtls_cfg from a legate.filters.http.mtls.v1.Mtls (NULL:
 *  the defaults). Returns NULL with "field: reason" in err. */
void *dp_mtls_config_new(const ProtobufCMessage *msg, char *err, size_t errlen);
/** Builds a struct dp_mtls_route_cfg from an MtlsPerRoute. */
void *dp_mtls_route_config_new(const ProtobufCMessage *msg, char *err, size_t errlen);
/** Frees either kind. */
void dp_mtls_config_free(void *cfg);

/** Iterates the attributes of an RFC 2253 name ("CN=client,O=example"):
 *  start with *p at the name. Returns 1 with the next attribute's type and
 *  value (spans into the name, escapes kept, surrounding spaces dropped), 0
 *  at the end, -1 on a component that is not "type=value". */
int dp_mtls_ava_next(const char **p, struct dp_str *type, struct dp_str *value);

/** Parses a subject/issuer pattern into out (malloc'd; free with
 *  dp_mtls_dn_free). Returns 0, or -1 with a reason in err. */
int dp_mtls_dn_parse(const char *s, struct dp_mtls_dn *out, char *err, size_t errlen);
void dp_mtls_dn_free(struct dp_mtls_dn *dn);

/* ---- matching and deciding (mtls.c) ------------------------------------ */

/** 1 when one of the n matchers matches one of id's SANs (a wildcard DNS SAN
 *  "*.example.com" satisfies an exact matcher of one label under it). */
int dp_mtls_san_match(const struct dp_mtls_san *sans, size_t n, const struct dp_peer_identity *id);

/** 1 when name (RFC 2253, as dp_peer_identity has it) matches one of the n
 *  patterns. A NULL name matches nothing. */
int dp_mtls_dn_match(const struct dp_mtls_dn *pats, size_t n, const char *name);

/** The verdict for a request. require: the effective policy (the route's
 *  override or cfg->require). *consumer is set for DP_MTLS_ALLOW (NULL when
 *  no consumer matched) and NULL otherwise. */
enum dp_mtls_verdict dp_mtls_decide(const struct dp_mtls_cfg *cfg, int require,
                                    const struct dp_peer_identity *id,
                                    const struct dp_mtls_consumer **consumer);

/** The reason of a DP_MTLS_UNVERIFIED verdict, one of "untrusted chain",
 *  "expired", "not yet valid", "revoked", "SAN not allowed", "certificate
 *  not pinned" (a static string). */
const char *dp_mtls_reason(const struct dp_peer_identity *id);

/** Writes the JSON body of the local reply for verdict v (401/403) into
 *  buf, NUL-terminated. Returns its length, or 0 for a verdict that has no
 *  reply. *status gets the HTTP status. */
size_t dp_mtls_reply_body(enum dp_mtls_verdict v, const struct dp_peer_identity *id, int *status,
                          char *buf, size_t buflen);

extern const struct dp_filter_ops dp_mtls_filter;

#endif
