/*
 * legate.filters.http.mtls: decides per request, from the TLS layer's
 * verdict on the client certificate, whether the request goes on (with the
 * consumer it belongs to) or is answered 401/403 with a JSON reason.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "filters/mtls/mtls.h"
#include "filters/registry.h"
#include "legate/filters/http/mtls/v1/mtls.pb-c.h"

/* ---- names --------------------------------------------------------------------- */

static struct dp_str trim(const char *b, const char *e)
{
    while (b < e && *b == ' ')
        b++;
    /* a trailing space escaped as "\ " stays */
    while (e > b && e[-1] == ' ' && !(e - 1 > b && e[-2] == '\\'))
        e--;
    return (struct dp_str){b, (size_t)(e - b)};
}

int dp_mtls_ava_next(const char **pp, struct dp_str *type, struct dp_str *value)
{
    const char *p = *pp;
    if (p == NULL || *p == '\0')
        return 0;
    const char *start = p, *eq = NULL;
    while (*p && *p != ',' && *p != '+') {
        if (*p == '\\' && p[1]) {
            p += 2;
            continue;
        }
        if (*p == '=' && eq == NULL)
            eq = p;
        p++;
    }
    *pp = *p ? p + 1 : p;
    if (eq == NULL)
        return -1;
    *type = trim(start, eq);
    *value = trim(eq + 1, p);
    if (type->n == 0)
        return -1;
    for (size_t i = 0; i < type->n; i++) {
        char c = type->p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-'))
            return -1;
    }
    return 1;
}

static int ava_eq(const struct dp_mtls_ava *a, struct dp_str t, struct dp_str v)
{
    return strlen(a->type) == t.n && strncasecmp(a->type, t.p, t.n) == 0 &&
           strlen(a->value) == v.n && memcmp(a->value, v.p, v.n) == 0;
}

static int dn_match_one(const struct dp_mtls_dn *pat, const char *name)
{
    struct dp_str t, v;
    const char *p = name;
    size_t i = 0;
    int rc;
    if (pat->n == 1) {
        while ((rc = dp_mtls_ava_next(&p, &t, &v)) == 1)
            if (ava_eq(&pat->v[0], t, v))
                return 1;
        return 0;
    }
    while ((rc = dp_mtls_ava_next(&p, &t, &v)) == 1) {
        if (i >= pat->n || !ava_eq(&pat->v[i], t, v))
            return 0;
        i++;
    }
    return rc == 0 && i == pat->n;
}

int dp_mtls_dn_match(const struct dp_mtls_dn *pats, size_t n, const char *name)
{
    if (name == NULL)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (dn_match_one(&pats[i], name))
            return 1;
    return 0;
}

/* ---- SANs ------------------------------------------------------------------------ */

/* Envoy's DNS SAN rule: a certificate's "*.example.com" stands for exactly one
 * label, so it satisfies exact matcher "api.example.com" (not "a.b.example.com"). */
static int wildcard_ok(const struct dp_string_matcher *m, const char *san)
{
    if (m->kind != DP_MATCH_EXACT || san[0] != '*' || san[1] != '.')
        return 0;
    const char *dot = strchr(m->value, '.');
    return dot && dot != m->value && strcasecmp(dot, san + 1) == 0;
}

static int san_list_match(const struct dp_mtls_san *m, const char *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (v[i] == NULL)
            continue;
        if (dp_string_match(&m->m, v[i], strlen(v[i])))
            return 1;
        if (m->type == DP_MTLS_SAN_DNS && wildcard_ok(&m->m, v[i]))
            return 1;
    }
    return 0;
}

int dp_mtls_san_match(const struct dp_mtls_san *sans, size_t n, const struct dp_peer_identity *id)
{
    for (size_t i = 0; i < n; i++) {
        const struct dp_mtls_san *m = &sans[i];
        int ok = 0;
        switch (m->type) {
        case DP_MTLS_SAN_DNS:
            ok = san_list_match(m, id->dns_sans, id->n_dns_sans);
            break;
        case DP_MTLS_SAN_URI:
            ok = san_list_match(m, id->uri_sans, id->n_uri_sans);
            break;
        case DP_MTLS_SAN_EMAIL:
            ok = san_list_match(m, id->email_sans, id->n_email_sans);
            break;
        }
        if (ok)
            return 1;
    }
    return 0;
}

/* ---- the decision ---------------------------------------------------------------- */

static int allowed(const struct dp_mtls_cfg *cfg, const struct dp_peer_identity *id)
{
    if (cfg->n_sans && !dp_mtls_san_match(cfg->sans, cfg->n_sans, id))
        return 0;
    if (cfg->n_subjects && !dp_mtls_dn_match(cfg->subjects, cfg->n_subjects, id->subject))
        return 0;
    return cfg->n_issuers == 0 || dp_mtls_dn_match(cfg->issuers, cfg->n_issuers, id->issuer);
}

static const struct dp_mtls_consumer *find_consumer(const struct dp_mtls_cfg *cfg,
                                                    const struct dp_peer_identity *id)
{
    for (size_t i = 0; i < cfg->n_consumers; i++) {
        const struct dp_mtls_consumer *c = &cfg->consumers[i];
        if ((c->n_sans == 0 || dp_mtls_san_match(c->sans, c->n_sans, id)) &&
            (c->n_subjects == 0 || dp_mtls_dn_match(c->subjects, c->n_subjects, id->subject)))
            return c;
    }
    return NULL;
}

enum dp_mtls_verdict dp_mtls_decide(const struct dp_mtls_cfg *cfg, int require,
                                    const struct dp_peer_identity *id,
                                    const struct dp_mtls_consumer **consumer)
{
    *consumer = NULL;
    if (!id->tls || !id->presented)
        return require ? DP_MTLS_NO_CERT : DP_MTLS_ANONYMOUS;
    if (!id->verified)
        return require ? DP_MTLS_UNVERIFIED : DP_MTLS_ANONYMOUS;
    /* On a route that does not require a certificate, one that is not
     * allowed is no identity: the request goes on as anyone without one
     * would, never as a consumer. */
    if (!allowed(cfg, id))
        return require ? DP_MTLS_FORBIDDEN : DP_MTLS_ANONYMOUS;
    *consumer = find_consumer(cfg, id);
    return DP_MTLS_ALLOW;
}

const char *dp_mtls_reason(const struct dp_peer_identity *id)
{
    /* The TLS layer's words (dataplane/tls.c reason_for), passed on only when
     * they are one of the documented ones. */
    static const char *const known[] = {"untrusted chain", "expired", "not yet valid", "revoked",
                                        "SAN not allowed", "certificate not pinned"};
    if (id->verify_reason)
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            if (strcmp(id->verify_reason, known[i]) == 0)
                return known[i];
    return "untrusted chain";
}

size_t dp_mtls_reply_body(enum dp_mtls_verdict v, const struct dp_peer_identity *id, int *status,
                          char *buf, size_t buflen)
{
    int n;
    switch (v) {
    case DP_MTLS_NO_CERT:
        *status = 401;
        n = snprintf(buf, buflen, "{\"message\":\"No required TLS certificate was sent\"}");
        break;
    case DP_MTLS_UNVERIFIED:
        /* the reason is one of a fixed set: nothing in it needs escaping */
        *status = 401;
        n = snprintf(buf, buflen,
                     "{\"message\":\"TLS certificate failed verification\",\"reason\":\"%s\"}",
                     dp_mtls_reason(id));
        break;
    case DP_MTLS_FORBIDDEN:
        *status = 403;
        n = snprintf(buf, buflen, "{\"message\":\"TLS certificate is not authorized\"}");
        break;
    default:
        *status = 0;
        return 0;
    }
    return n > 0 && (size_t)n < buflen ? (size_t)n : 0;
}

/* ---- the filter -------------------------------------------------------------------- */

/* The verdict, kept for a debugger (nothing reads it back). */
struct mtls_ctx {
    enum dp_mtls_verdict verdict;
};

static const struct dp_str consumer_headers[] = {
    DP_STR_LIT("x-consumer-username"),
    DP_STR_LIT("x-consumer-id"),
    DP_STR_LIT("x-consumer-custom-id"),
    DP_STR_LIT("x-anonymous-consumer"),
};

static int set_header(struct dp_stream *s, size_t which, const char *v)
{
    struct dp_request_head *req = dp_stream_request(s);
    return dp_headers_add(&req->headers, dp_stream_arena(s), consumer_headers[which],
                          (struct dp_str){v, strlen(v)});
}

static enum dp_filter_status mtls_request(struct dp_stream *s, const struct dp_filter_call *call, int end_stream)
{
    struct mtls_ctx *ctx = call->ctx;
    struct dp_request_head *req = dp_stream_request(s);
    const struct dp_mtls_cfg *cfg = call->cfg;
    const struct dp_mtls_route_cfg *route = call->route_cfg;
    int require = cfg->require;

    /* What the client says about who it is never counts. */
    for (size_t i = 0; i < sizeof(consumer_headers) / sizeof(consumer_headers[0]); i++)
        dp_headers_remove(&req->headers, consumer_headers[i]);

    if (route) {
        if (route->disabled)
            return DP_FILTER_CONTINUE;
        if (route->require >= 0)
            require = route->require;
    }

    const struct dp_peer_identity *id = dp_stream_peer(s);
    const struct dp_mtls_consumer *c;
    ctx->verdict = dp_mtls_decide(cfg, require, id, &c);
    int rc = 0;
    switch (ctx->verdict) {
    case DP_MTLS_ALLOW:
        if (c) {
            rc |= set_header(s, 0, c->username);
            if (c->id)
                rc |= set_header(s, 1, c->id);
            if (c->custom_id)
                rc |= set_header(s, 2, c->custom_id);
        }
        break;
    case DP_MTLS_ANONYMOUS:
        if (cfg->anonymous) {
            rc |= set_header(s, 0, cfg->anonymous);
            rc |= set_header(s, 3, "true");
        }
        break;
    default: {
        char body[160];
        int status;
        size_t n = dp_mtls_reply_body(ctx->verdict, id, &status, body, sizeof(body));
        dp_stream_send_local_reply(s, status, "application/json", body, n);
        return DP_FILTER_STOP;
    }
    }
    if (rc) {
        dp_stream_send_local_reply(s, 500, "text/plain", "out of memory\n", 14);
        return DP_FILTER_STOP;
    }
    return DP_FILTER_CONTINUE;
}

const struct dp_filter_ops dp_mtls_filter = {
    .name = "legate.filters.http.mtls",
    .config_type = &legate__filters__http__mtls__v1__mtls__descriptor,
    .config_new = dp_mtls_config_new,
    .route_config_type = &legate__filters__http__mtls__v1__mtls_per_route__descriptor,
    .route_config_new = dp_mtls_route_config_new,
    .config_free = dp_mtls_config_free,
    .route_config_free = dp_mtls_config_free,
    .ctx_size = sizeof(struct mtls_ctx),
    .on_request_headers = mtls_request,
};
