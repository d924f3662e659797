/* legate.filters.http.mtls: its configs (legate.filters.http.mtls.v1.Mtls and
 * MtlsPerRoute), with a reason naming the field for every rejection. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filters/mtls/mtls.h"
#include "legate/filters/http/mtls/v1/mtls.pb-c.h"
#include "xds/cfgerr.h"

typedef Envoy__Extensions__TransportSockets__Tls__V3__SubjectAltNameMatcher SanMatcherPb;
typedef Envoy__Type__Matcher__V3__StringMatcher StringMatcherPb;
typedef Legate__Filters__Http__Mtls__V1__Mtls MtlsPb;
typedef Legate__Filters__Http__Mtls__V1__Consumer ConsumerPb;

/* ---- distinguished names -------------------------------------------------------- */

int dp_mtls_dn_parse(const char *s, struct dp_mtls_dn *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        if (*p == ',' || *p == '+')
            cap++;
    struct dp_str t, v;
    const char *p = s;
    int rc;
    while ((rc = dp_mtls_ava_next(&p, &t, &v)) == 1) {
        if (out->v == NULL && (out->v = calloc(cap, sizeof(*out->v))) == NULL)
            goto oom;
        struct dp_mtls_ava *a = &out->v[out->n];
        a->type = strndup(t.p, t.n);
        a->value = strndup(v.p, v.n);
        if (a->type == NULL || a->value == NULL) {
            free(a->type);
            free(a->value);
            goto oom;
        }
        out->n++;
    }
    if (rc < 0 || out->n == 0) {
        dp_mtls_dn_free(out);
        snprintf(err, errlen,
                 "expected one attribute (\"CN=client\") or a whole RFC 2253 name "
                 "(\"CN=client,O=example\"), got \"%s\"",
                 s);
        return -1;
    }
    return 0;
oom:
    dp_mtls_dn_free(out);
    snprintf(err, errlen, "out of memory");
    return -1;
}

void dp_mtls_dn_free(struct dp_mtls_dn *dn)
{
    for (size_t i = 0; i < dn->n; i++) {
        free(dn->v[i].type);
        free(dn->v[i].value);
    }
    free(dn->v);
    memset(dn, 0, sizeof(*dn));
}

static int build_dns(struct dp_mtls_dn **out, size_t *n_out, char **in, size_t n, const char *path,
                     struct xds_cfgerr *e)
{
    if (n == 0)
        return 0;
    *out = calloc(n, sizeof(**out));
    if (*out == NULL)
        return xds_cfg_fail(e, "out of memory");
    for (size_t i = 0; i < n; i++) {
        char msg[256];
        if (dp_mtls_dn_parse(in[i], &(*out)[i], msg, sizeof(msg)) < 0)
            return xds_cfg_fail(e, "%s[%zu]: %s", path, i, msg);
        (*n_out)++;
    }
    return 0;
}

static void free_dns(struct dp_mtls_dn *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dp_mtls_dn_free(&v[i]);
    free(v);
}

/* ---- SAN matchers ------------------------------------------------------------------ */

static int build_sans(struct dp_mtls_san **out, size_t *n_out, SanMatcherPb **in, size_t n,
                      const char *path, struct xds_cfgerr *e)
{
    if (n == 0)
        return 0;
    *out = calloc(n, sizeof(**out));
    if (*out == NULL)
        return xds_cfg_fail(e, "out of memory");
    for (size_t i = 0; i < n; i++) {
        struct dp_mtls_san *m = &(*out)[i];
        switch (in[i]->san_type) {
        case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__DNS:
            m->type = DP_MTLS_SAN_DNS;
            break;
        case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI:
            m->type = DP_MTLS_SAN_URI;
            break;
        case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__EMAIL:
            m->type = DP_MTLS_SAN_EMAIL;
            break;
        case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__SAN_TYPE_UNSPECIFIED:
            return xds_cfg_fail(e, "%s[%zu].san_type: required (DNS, URI or EMAIL)", path, i);
        default:
            /* The peer identity the data plane hands to filters carries the
             * DNS, URI and email SANs only. */
            return xds_cfg_fail(e, "%s[%zu].san_type: only DNS, URI and EMAIL are supported here", path, i);
        }
        char sub[300];
        snprintf(sub, sizeof(sub), "%s[%zu].matcher", path, i);
        if (dp_string_matcher_build(&m->m, in[i]->matcher, sub, e->err, e->errlen) < 0)
            return -1;
        (*n_out)++;
    }
    return 0;
}

static void free_sans(struct dp_mtls_san *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dp_string_matcher_free(&v[i].m);
    free(v);
}

/* ---- consumers -------------------------------------------------------------------- */

/* What goes into a request header: no control characters (CR/LF would split
 * the header; NUL would cut it). */
static int header_safe(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return 0;
    return 1;
}

static char *opt_strdup(const char *s, int *oom)
{
    if (s == NULL || s[0] == '\0')
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *oom = 1;
    return d;
}

static int build_consumer(struct dp_mtls_consumer *c, const ConsumerPb *pc, size_t i,
                          struct xds_cfgerr *e)
{
    char path[64];
    snprintf(path, sizeof(path), "consumers[%zu]", i);
    if (pc->username[0] == '\0')
        return xds_cfg_fail(e, "%s.username: required", path);
    const char *const fields[] = {"username", "id", "custom_id"};
    const char *const vals[] = {pc->username, pc->id, pc->custom_id};
    for (size_t k = 0; k < 3; k++)
        if (!header_safe(vals[k]))
            return xds_cfg_fail(e, "%s.%s: control characters are not allowed in a header value", path,
                        fields[k]);
    if (pc->n_sans == 0 && pc->n_subjects == 0)
        return xds_cfg_fail(e, "%s: sans or subjects is required (what identifies the consumer)", path);
    int oom = 0;
    c->username = opt_strdup(pc->username, &oom);
    c->id = opt_strdup(pc->id, &oom);
    c->custom_id = opt_strdup(pc->custom_id, &oom);
    if (oom)
        return xds_cfg_fail(e, "out of memory");
    char sub[96];
    snprintf(sub, sizeof(sub), "%s.sans", path);
    if (build_sans(&c->sans, &c->n_sans, pc->sans, pc->n_sans, sub, e) < 0)
        return -1;
    snprintf(sub, sizeof(sub), "%s.subjects", path);
    return build_dns(&c->subjects, &c->n_subjects, pc->subjects, pc->n_subjects, sub, e);
}

static void free_consumer(struct dp_mtls_consumer *c)
{
    free(c->username);
    free(c->id);
    free(c->custom_id);
    free_sans(c->sans, c->n_sans);
    free_dns(c->subjects, c->n_subjects);
}

/* ---- the configs ---------------------------------------------------------------------- */

void *dp_mtls_config_new(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    struct xds_cfgerr e = {err, errlen};
    const MtlsPb *pm = (const MtlsPb *)msg;
    struct dp_mtls_cfg *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        xds_cfg_fail(&e, "out of memory");
        return NULL;
    }
    cfg->kind = DP_MTLS_CFG_FILTER;
    if (pm == NULL)
        return cfg;
    cfg->require = pm->require_certificate;
    if (build_sans(&cfg->sans, &cfg->n_sans, pm->allowed_sans, pm->n_allowed_sans, "allowed_sans",
                   &e) < 0 ||
        build_dns(&cfg->subjects, &cfg->n_subjects, pm->allowed_subjects, pm->n_allowed_subjects,
                  "allowed_subjects", &e) < 0 ||
        build_dns(&cfg->issuers, &cfg->n_issuers, pm->allowed_issuers, pm->n_allowed_issuers,
                  "allowed_issuers", &e) < 0)
        goto fail;
    if (pm->n_consumers) {
        cfg->consumers = calloc(pm->n_consumers, sizeof(*cfg->consumers));
        if (cfg->consumers == NULL) {
            xds_cfg_fail(&e, "out of memory");
            goto fail;
        }
    }
    for (size_t i = 0; i < pm->n_consumers; i++) {
        /* counted first: a half-built consumer is freed with the rest */
        cfg->n_consumers++;
        if (build_consumer(&cfg->consumers[i], pm->consumers[i], i, &e) < 0)
            goto fail;
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->consumers[j].username, cfg->consumers[i].username) == 0) {
                xds_cfg_fail(&e, "consumers[%zu].username: \"%s\" is already consumers[%zu]", i,
                     cfg->consumers[i].username, j);
                goto fail;
            }
    }
    if (!header_safe(pm->anonymous)) {
        xds_cfg_fail(&e, "anonymous: control characters are not allowed in a header value");
        goto fail;
    }
    int oom = 0;
    cfg->anonymous = opt_strdup(pm->anonymous, &oom);
    if (oom) {
        xds_cfg_fail(&e, "out of memory");
        goto fail;
    }
    return cfg;
fail:
    dp_mtls_config_free(cfg);
    return NULL;
}

void *dp_mtls_route_config_new(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    const Legate__Filters__Http__Mtls__V1__MtlsPerRoute *pr =
        (const Legate__Filters__Http__Mtls__V1__MtlsPerRoute *)msg;
    if (pr && pr->disabled && pr->require_certificate) {
        snprintf(err, errlen, "require_certificate: has no effect when disabled is true");
        return NULL;
    }
    struct dp_mtls_route_cfg *rc = calloc(1, sizeof(*rc));
    if (rc == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rc->kind = DP_MTLS_CFG_ROUTE;
    rc->require = -1;
    if (pr) {
        rc->disabled = pr->disabled;
        if (pr->require_certificate)
            rc->require = pr->require_certificate->value ? 1 : 0;
    }
    return rc;
}

void dp_mtls_config_free(void *p)
{
    if (p == NULL)
        return;
    if (*(const int *)p == DP_MTLS_CFG_ROUTE) {
        free(p);
        return;
    }
    struct dp_mtls_cfg *cfg = p;
    free_sans(cfg->sans, cfg->n_sans);
    free_dns(cfg->subjects, cfg->n_subjects);
    free_dns(cfg->issuers, cfg->n_issuers);
    for (size_t i = 0; i < cfg->n_consumers; i++)
        free_consumer(&cfg->consumers[i]);
    free(cfg->consumers);
    free(cfg->anonymous);
    free(cfg);
}
