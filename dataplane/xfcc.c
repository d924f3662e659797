#include "xfcc.h"

#include <string.h>

#include <openssl/x509v3.h>

#include "dataplane/buf.h"
#include "dataplane/stream.h"

static int needs_quotes(const char *v)
{
    return strpbrk(v, ",;=\"") != NULL;
}

/* What an element cannot carry is left out rather than sent broken: a
 * control character (an IA5String SAN may hold CR LF, which would end the
 * header and inject others on the way upstream) and, in a quoted value, a
 * final backslash (the closing quote would read as an escaped one, and the
 * fields after it as part of the value). */
static int value_ok(const char *v, int always)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++, n++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return 0;
    return !(n > 0 && v[n - 1] == '\\' && (always || needs_quotes(v)));
}

/* Envoy's rule: a value with ',', ';' or '=' is double-quoted, and a '"' in
 * it becomes '\"'. Nothing else is escaped: a backslash stays one backslash,
 * so an RFC 2253 subject's own escapes ("O=Acme\, Inc.") arrive as written. */
static int append_quoted(struct dp_buf *out, const char *v, int always)
{
    if (!always && !needs_quotes(v))
        return dp_buf_append(out, v, strlen(v));
    if (dp_buf_append(out, "\"", 1) < 0)
        return -1;
    for (const char *p = v; *p; p++) {
        if (*p == '"' && dp_buf_append(out, "\\", 1) < 0)
            return -1;
        if (dp_buf_append(out, p, 1) < 0)
            return -1;
    }
    return dp_buf_append(out, "\"", 1);
}

/* URL-encodes PEM as Envoy does (RFC 3986 unreserved characters kept). */
static int append_urlenc(struct dp_buf *out, const char *v)
{
    static const char hex[] = "0123456789ABCDEF";
    if (dp_buf_append(out, "\"", 1) < 0)
        return -1;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            if (dp_buf_append(out, p, 1) < 0)
                return -1;
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            if (dp_buf_append(out, e, 3) < 0)
                return -1;
        }
    }
    return dp_buf_append(out, "\"", 1);
}

static int kv(struct dp_buf *out, int *first, const char *key)
{
    if (!*first && dp_buf_append(out, ";", 1) < 0)
        return -1;
    *first = 0;
    return dp_buf_appendf(out, "%s=", key);
}

/* One element; by: every URI SAN of our own certificate, each its own By=. */
static int format_element(struct dp_buf *out, const struct dp_peer_identity *id,
                          const char **by, size_t n_by, unsigned fields)
{
    int first = 1;
    for (size_t i = 0; i < n_by; i++)
        if (value_ok(by[i], 0) && (kv(out, &first, "By") < 0 || append_quoted(out, by[i], 0) < 0))
            return -1;
    if (id->fingerprint && (kv(out, &first, "Hash") < 0 ||
                            dp_buf_append(out, id->fingerprint, strlen(id->fingerprint)) < 0))
        return -1;
    if ((fields & DP_XFCC_F_CERT) && id->cert_pem &&
        (kv(out, &first, "Cert") < 0 || append_urlenc(out, id->cert_pem) < 0))
        return -1;
    if ((fields & DP_XFCC_F_CHAIN) && id->chain_pem &&
        (kv(out, &first, "Chain") < 0 || append_urlenc(out, id->chain_pem) < 0))
        return -1;
    if ((fields & DP_XFCC_F_SUBJECT) && id->subject && value_ok(id->subject, 1) &&
        (kv(out, &first, "Subject") < 0 || append_quoted(out, id->subject, 1) < 0))
        return -1;
    if (fields & DP_XFCC_F_URI)
        for (size_t i = 0; i < id->n_uri_sans; i++)
            if (value_ok(id->uri_sans[i], 0) &&
                (kv(out, &first, "URI") < 0 || append_quoted(out, id->uri_sans[i], 0) < 0))
                return -1;
    if (fields & DP_XFCC_F_DNS)
        for (size_t i = 0; i < id->n_dns_sans; i++)
            if (value_ok(id->dns_sans[i], 0) &&
                (kv(out, &first, "DNS") < 0 || append_quoted(out, id->dns_sans[i], 0) < 0))
                return -1;
    return 0;
}

int dp_xfcc_format(struct dp_buf *out, const struct dp_peer_identity *id, const char *by,
                   unsigned fields)
{
    return format_element(out, id, by ? &by : NULL, by ? 1 : 0, fields);
}

/* The URI SANs of our own certificate on the connection (Envoy's By=, one
 * per SAN), in arena a. Returns how many. */
static size_t local_uris(SSL *ssl, struct dp_arena *a, const char ***out)
{
    X509 *x = ssl ? SSL_get_certificate(ssl) : NULL;
    *out = NULL;
    if (x == NULL)
        return 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int total = names ? sk_GENERAL_NAME_num(names) : 0;
    const char **v = total > 0 ? dp_arena_alloc(a, (size_t)total * sizeof(*v)) : NULL;
    size_t n = 0;
    for (int i = 0; v && i < total; i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        if (gn->type == GEN_URI) {
            const ASN1_IA5STRING *u = gn->d.uniformResourceIdentifier;
            v[n] = dp_arena_strndup(a, (const char *)u->data, (size_t)u->length);
            if (v[n])
                n++;
        }
    }
    GENERAL_NAMES_free(names);
    *out = v;
    return n;
}

/* The element is the same for every request of a connection (its peer and
 * our own certificate do not change): made on first use, kept in the
 * connection's arena. Returns NULL on failure. */
static const struct dp_str *conn_element(struct dp_hcm *h, unsigned fields)
{
    if (h->xfcc_elem.p && h->xfcc_elem_fields == fields)
        return &h->xfcc_elem;
    const char **by;
    size_t n_by = local_uris(h->conn.ssl, &h->conn_arena, &by);
    struct dp_buf b = {0};
    const struct dp_str *r = NULL;
    if (format_element(&b, &h->peer, by, n_by, fields) == 0) {
        char *v = dp_arena_strndup(&h->conn_arena, (const char *)dp_buf_head(&b), dp_buf_size(&b));
        if (v) {
            h->xfcc_elem = (struct dp_str){v, dp_buf_size(&b)};
            h->xfcc_elem_fields = fields;
            r = &h->xfcc_elem;
        }
    }
    dp_buf_release(&b);
    return r;
}

int dp_xfcc_apply(struct dp_stream *s, enum dp_xfcc_mode mode, unsigned fields)
{
    struct dp_headers *hs = &s->req.headers;
    const struct dp_peer_identity *id = &s->hcm->peer;
    int mtls = id->tls && id->presented && id->verified;
    static const struct dp_str name = {"x-forwarded-client-cert", 23};

    if (mode == DP_XFCC_ALWAYS_FORWARD_ONLY)
        return 0;
    if (!mtls || mode == DP_XFCC_SANITIZE) {
        dp_headers_remove(hs, name);
        return 0;
    }
    if (mode == DP_XFCC_FORWARD_ONLY)
        return 0;

    const struct dp_str *el = conn_element(s->hcm, fields);
    if (el == NULL)
        return -1;
    struct dp_str v = *el;
    if (mode == DP_XFCC_APPEND_FORWARD) {
        const struct dp_header *old = dp_headers_get(hs, name);
        if (old && old->value.n) {
            char *p = dp_arena_alloc(&s->arena, old->value.n + 1 + el->n);
            if (p == NULL)
                return -1;
            memcpy(p, old->value.p, old->value.n);
            p[old->value.n] = ',';
            memcpy(p + old->value.n + 1, el->p, el->n);
            v = (struct dp_str){p, old->value.n + 1 + el->n};
        }
    }
    dp_headers_remove(hs, name);
    return dp_headers_add_ref(hs, &s->arena, name, v);
}
