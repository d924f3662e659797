#include "mgmt.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "pem.h"
#include "xds/convert.h"
#include "xds/datasource.h"
#include "xds/httpd.h"
#include "xds/json.h"
#include "xds/log.h"

#define SB_LIT(b, lit) xds_sb_add((b), (lit), sizeof(lit) - 1)

#define MAX_CONNS 64
#define BODY_MAX ((size_t)4 << 20)
#define IDLE_SECONDS 30

typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret secret_t;
typedef Envoy__Config__Core__V3__DataSource ds_t;

struct hconn {
    struct xds_httpd_conn h; /* the request (url, method, body) and the response */
    time_t last;             /* monotonic seconds of the last activity */
    char auth[XDS_HTTPD_VALUE_CAP];
    int has_auth;            /* an Authorization header came, fitting or not */
};

struct cp_mgmt {
    int fd;
    char *token;
    struct cp_ctl *ctl;
    struct hconn *conns[MAX_CONNS];
    size_t n;
};

static time_t now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

/* ---- responses ---------------------------------------------------------- */

static void conn_close(struct cp_mgmt *m, struct hconn *c)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->conns[i] == c) {
            m->conns[i] = m->conns[--m->n];
            break;
        }
    }
    close(c->h.fd);
    xds_httpd_free(&c->h);
    explicit_bzero(c->auth, sizeof(c->auth));
    free(c);
}

/* Queues the response; body is JSON. */
static void respond(struct hconn *c, int status, const char *extra_headers, struct xds_sb *body)
{
    const char *p = body->p ? body->p : "";

    /* The last line of defence: no response carries a private key, whatever
     * a handler put together. */
    if (strstr(p, "PRIVATE KEY") != NULL) {
        LG_E("mgmt", "a response would have carried key material; withheld (status %d)", status);
        explicit_bzero(body->p, body->len);
        body->len = 0;
        SB_LIT(body, "{\"error\":\"internal error: response withheld\"}");
        status = 500;
        p = body->p;
    }
    char headers[256];
    struct xds_sb r = {0};
    snprintf(headers, sizeof(headers), "Cache-Control: no-store\r\n%s", extra_headers ? extra_headers : "");
    xds_sb_add(&r, p, strlen(p));
    SB_LIT(&r, "\n");
    xds_httpd_respond(&c->h, status, "application/json", headers, r.p, r.len);
    free(r.p);
}

static void respond_error(struct hconn *c, int status, const char *extra, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void respond_error(struct hconn *c, int status, const char *extra, const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct xds_sb b = {0};
    SB_LIT(&b, "{\"error\":");
    xds_sb_str(&b, msg);
    SB_LIT(&b, "}");
    respond(c, status, extra, &b);
    free(b.p);
}

/* ---- helpers ------------------------------------------------------------ */

static const struct {
    const char *path;
    enum cp_type t;
    const char *what; /* singular, for messages */
} collections[] = {
    {"listeners", CP_LDS, "listener"}, {"routes", CP_RDS, "route configuration"},
    {"clusters", CP_CDS, "cluster"},   {"endpoints", CP_EDS, "endpoint assignment"},
    {"secrets", CP_SDS, "secret"},
};

static int unhex(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes s in place. Returns -1 on a bad escape or a control
 * character (names end up in log lines). */
static int url_decode(char *s)
{
    char *o = s;
    for (const char *p = s; *p; p++) {
        if (*p == '%') {
            int hi = unhex((unsigned char)p[1]), lo = hi < 0 ? -1 : unhex((unsigned char)p[2]);
            if (hi < 0 || lo < 0)
                return -1;
            int ch = hi * 16 + lo;
            if (ch < 0x20 || ch == 0x7f)
                return -1;
            *o++ = (char)ch;
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return 0;
}

static void add_version(struct xds_sb *b, const struct cp_ctl *ctl)
{
    xds_sb_addf(b, "\"version\":\"%" PRIu64 "\"", cp_ctl_version(ctl));
}

/* ---- secrets -------------------------------------------------------------- */

static const char *ds_file(const ds_t *ds)
{
    return ds && ds->specifier_case == ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME
               ? ds->filename
               : NULL;
}

static void ds_pem_info(struct xds_sb *b, const ds_t *ds)
{
    char *pem = NULL, err[256];
    size_t len = 0;
    if (ds && xds_datasource_read(ds, &pem, &len, err, sizeof(err)) == 0) {
        cp_pem_info_json(b, pem, len);
    } else {
        SB_LIT(b, "[]");
    }
    free(pem);
}

static void file_field(struct xds_sb *b, int *first, const char *key, const ds_t *ds)
{
    const char *f = ds_file(ds);
    if (f == NULL)
        return;
    xds_sb_addf(b, "%s\"%s\":", *first ? "" : ",", key);
    *first = 0;
    xds_sb_str(b, f);
}

/* A secret as GET shows it: what it is and its certificates' summaries. The
 * contents come from what is served (files read), the file names from the
 * config as written. Never a key. */
static void secret_json(struct xds_sb *b, const struct cp_ctl *ctl, const char *name)
{
    const struct cp_resource *r = cp_config_find(cp_ads_config(ctl->ads), CP_SDS, name);
    const secret_t *w = (const secret_t *)cp_store_find(ctl->cc, CP_SDS, name);
    secret_t *s = r ? envoy__extensions__transport_sockets__tls__v3__secret__unpack(NULL, r->len,
                                                                                   r->data)
                    : NULL;

    SB_LIT(b, "{\"name\":");
    xds_sb_str(b, name);
    SB_LIT(b, ",\"type\":");
    if (s && s->type_case == ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE) {
        SB_LIT(b, "\"tls_certificate\",\"certificates\":");
        ds_pem_info(b, s->tls_certificate->certificate_chain);
    } else if (s && s->type_case ==
                        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT) {
        SB_LIT(b, "\"validation_context\",\"ca_certificates\":");
        ds_pem_info(b, s->validation_context->trusted_ca);
    } else if (s && s->type_case ==
                        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_SESSION_TICKET_KEYS) {
        SB_LIT(b, "\"session_ticket_keys\"");
    } else if (s && s->type_case ==
                        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_GENERIC_SECRET) {
        SB_LIT(b, "\"generic_secret\"");
    } else {
        SB_LIT(b, "\"unset\"");
    }
    SB_LIT(b, ",\"files\":{");
    int first = 1;
    if (w && w->type_case == ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE) {
        file_field(b, &first, "certificate_chain", w->tls_certificate->certificate_chain);
        file_field(b, &first, "private_key", w->tls_certificate->private_key);
    } else if (w && w->type_case ==
                        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT) {
        file_field(b, &first, "trusted_ca", w->validation_context->trusted_ca);
    }
    SB_LIT(b, "}}");
    if (s)
        protobuf_c_message_free_unpacked(&s->base, NULL);
}

static ds_t *inline_ds(const char *pem)
{
    ds_t *ds = malloc(sizeof(*ds));
    if (ds == NULL)
        return NULL;
    envoy__config__core__v3__data_source__init(ds);
    ds->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING;
    if ((ds->inline_string = strdup(pem)) == NULL) {
        free(ds);
        return NULL;
    }
    return ds;
}

static void free_msg(void *m)
{
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
}

/* A deep copy of m, or NULL. */
static ProtobufCMessage *clone_msg(const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return NULL;
    protobuf_c_message_pack(m, buf);
    ProtobufCMessage *c = protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
    explicit_bzero(buf, len);
    free(buf);
    return c;
}

/*
 * The secret a PUT makes: an existing one of the same kind keeps its other
 * fields (a validation context its SAN matchers, say) with the PEM swapped;
 * anything else is made anew. Returns NULL when out of memory.
 */
static secret_t *make_secret(const secret_t *old, const char *name,
                             const Legate__Control__V1__SecretBody *in)
{
    int is_ca = in->ca[0] != '\0';
    int want = is_ca ? ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT
                     : ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE;
    secret_t *s;

    if (old && (int)old->type_case == want) {
        s = (secret_t *)clone_msg(&old->base);
    } else {
        s = malloc(sizeof(*s));
        if (s == NULL)
            return NULL;
        envoy__extensions__transport_sockets__tls__v3__secret__init(s);
        if ((s->name = strdup(name)) == NULL) {
            free(s);
            return NULL;
        }
        s->type_case = want;
        if (is_ca) {
            s->validation_context = malloc(sizeof(*s->validation_context));
            if (s->validation_context)
                envoy__extensions__transport_sockets__tls__v3__certificate_validation_context__init(
                    s->validation_context);
        } else {
            s->tls_certificate = malloc(sizeof(*s->tls_certificate));
            if (s->tls_certificate)
                envoy__extensions__transport_sockets__tls__v3__tls_certificate__init(
                    s->tls_certificate);
        }
        /* Both pointers share the oneof: either may be tested. */
        if (s->tls_certificate == NULL) {
            free_msg(s);
            return NULL;
        }
    }
    if (s == NULL)
        return NULL;
    if (is_ca) {
        free_msg(s->validation_context->trusted_ca);
        s->validation_context->trusted_ca = inline_ds(in->ca);
        if (s->validation_context->trusted_ca == NULL)
            goto oom;
    } else {
        Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate *tc = s->tls_certificate;
        free_msg(tc->certificate_chain);
        free_msg(tc->private_key);
        /* The new key is plain PEM: nothing of the old one's form applies. */
        free_msg(tc->password);
        free_msg(tc->pkcs12);
        free_msg(tc->watched_directory);
        free_msg(tc->private_key_provider);
        tc->password = tc->pkcs12 = NULL;
        tc->watched_directory = NULL;
        tc->private_key_provider = NULL;
        tc->certificate_chain = inline_ds(in->cert);
        tc->private_key = inline_ds(in->key);
        if (tc->certificate_chain == NULL || tc->private_key == NULL)
            goto oom;
    }
    return s;
oom:
    free_msg(s);
    return NULL;
}

/* Checks a PUT /secrets body. Returns 0, or -1 with a message naming the
 * field at fault. */
static int check_secret_body(const Legate__Control__V1__SecretBody *in, char *err, size_t errlen)
{
    char msg[256];
    int cert = in->cert[0] != '\0', key = in->key[0] != '\0', ca = in->ca[0] != '\0';

    if (ca && (cert || key)) {
        snprintf(err, errlen, "give either \"cert\" and \"key\" (a certificate) or \"ca\" (a CA bundle), not both");
        return -1;
    }
    if (!ca && !cert && !key) {
        snprintf(err, errlen, "give \"cert\" and \"key\" (a certificate) or \"ca\" (a CA bundle)");
        return -1;
    }
    if (ca) {
        if (cp_pem_check_certs(in->ca, strlen(in->ca), msg, sizeof(msg)) < 0) {
            snprintf(err, errlen, "ca: %s", msg);
            return -1;
        }
        return 0;
    }
    if (!cert || !key) {
        snprintf(err, errlen, "%s: required with \"%s\"", cert ? "key" : "cert", cert ? "cert" : "key");
        return -1;
    }
    if (cp_pem_check_certs(in->cert, strlen(in->cert), msg, sizeof(msg)) < 0 ||
        cp_pem_check_validity(in->cert, strlen(in->cert), msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "cert: %s", msg);
        return -1;
    }
    if (cp_pem_check_key(in->key, strlen(in->key), in->cert, strlen(in->cert), "cert", msg,
                         sizeof(msg)) < 0) {
        snprintf(err, errlen, "key: %s", msg);
        return -1;
    }
    return 0;
}

/* ---- handlers ------------------------------------------------------------- */

static void commit_and_respond(struct cp_mgmt *m, struct hconn *c, cp_cc_t *next, int status,
                               const char *method, const char *coll, const char *name)
{
    char err[1024];
    uint64_t version;
    int rc = cp_ctl_commit(m->ctl, next, &version, err, sizeof(err));

    if (rc == CP_COMMIT_INVALID) {
        respond_error(c, 409, NULL, "%s", err);
        return;
    }
    if (rc < 0) {
        respond_error(c, 500, NULL, "not saved, nothing changed: %s", err);
        return;
    }
    LG_I("mgmt", "%s /%s/%s: serving version %" PRIu64, method, coll, name, version);
    struct xds_sb b = {0};
    SB_LIT(&b, "{\"name\":");
    xds_sb_str(&b, name);
    xds_sb_addf(&b, ",\"version\":\"%" PRIu64 "\"", version);
    if (strcmp(method, "DELETE") == 0)
        SB_LIT(&b, ",\"deleted\":true");
    SB_LIT(&b, "}");
    respond(c, status, NULL, &b);
    free(b.p);
}

static void put_secret(struct cp_mgmt *m, struct hconn *c, const char *name)
{
    char err[1024];
    ProtobufCMessage *msg;

    if (xds_convert_text(c->h.body.p ? c->h.body.p : "", c->h.body.len,
                         &legate__control__v1__secret_body__descriptor, &msg, err,
                         sizeof(err)) < 0) {
        respond_error(c, 400, NULL, "%s", err);
        return;
    }
    Legate__Control__V1__SecretBody *in = (Legate__Control__V1__SecretBody *)msg;
    if (check_secret_body(in, err, sizeof(err)) < 0) {
        respond_error(c, 400, NULL, "%s", err);
        goto out;
    }
    cp_cc_t *next = cp_store_clone(m->ctl->cc);
    const secret_t *old = next ? (const secret_t *)cp_store_find(next, CP_SDS, name) : NULL;
    secret_t *s = next ? make_secret(old, name, in) : NULL;
    int added = s ? cp_store_put(next, CP_SDS, &s->base) : -1;
    if (added < 0) {
        cp_store_free(next);
        respond_error(c, 500, NULL, "out of memory");
        goto out;
    }
    commit_and_respond(m, c, next, added ? 201 : 200, "PUT", "secrets", name);
out:
    /* The body held a key: wipe both copies. */
    if (in->key[0])
        explicit_bzero(in->key, strlen(in->key));
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void put_resource(struct cp_mgmt *m, struct hconn *c, int ci, const char *name)
{
    enum cp_type t = collections[ci].t;
    char err[1024];
    ProtobufCMessage *msg;

    if (xds_convert_text(c->h.body.p ? c->h.body.p : "", c->h.body.len, cp_types[t].desc, &msg, err,
                         sizeof(err)) < 0) {
        respond_error(c, 400, NULL, "%s", err);
        return;
    }
    const char *have = cp_store_name(msg, t);
    if (have[0] == '\0') {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, cp_types[t].key);
        char *dup = strdup(name);
        if (dup == NULL) {
            protobuf_c_message_free_unpacked(msg, NULL);
            respond_error(c, 500, NULL, "out of memory");
            return;
        }
        *(char **)((char *)msg + f->offset) = dup;
    } else if (strcmp(have, name) != 0) {
        respond_error(c, 400, NULL, "%s: \"%s\" differs from the name in the path (\"%s\")",
                      cp_types[t].key, have, name);
        protobuf_c_message_free_unpacked(msg, NULL);
        return;
    }
    cp_cc_t *next = cp_store_clone(m->ctl->cc);
    int added = next ? cp_store_put(next, t, msg) : -1;
    if (next == NULL)
        protobuf_c_message_free_unpacked(msg, NULL);
    if (added < 0) {
        cp_store_free(next);
        respond_error(c, 500, NULL, "out of memory");
        return;
    }
    commit_and_respond(m, c, next, added ? 201 : 200, "PUT", collections[ci].path, name);
}

static void delete_resource(struct cp_mgmt *m, struct hconn *c, int ci, const char *name)
{
    enum cp_type t = collections[ci].t;
    if (cp_store_find(m->ctl->cc, t, name) == NULL) {
        respond_error(c, 404, NULL, "no %s \"%s\"", collections[ci].what, name);
        return;
    }
    cp_cc_t *next = cp_store_clone(m->ctl->cc);
    if (next == NULL) {
        respond_error(c, 500, NULL, "out of memory");
        return;
    }
    cp_store_delete(next, t, name);
    commit_and_respond(m, c, next, 200, "DELETE", collections[ci].path, name);
}

static void get_one(struct cp_mgmt *m, struct hconn *c, int ci, const char *name)
{
    enum cp_type t = collections[ci].t;
    const ProtobufCMessage *r = cp_store_find(m->ctl->cc, t, name);
    struct xds_sb b = {0};

    if (r == NULL) {
        respond_error(c, 404, NULL, "no %s \"%s\"", collections[ci].what, name);
        return;
    }
    if (t == CP_SDS)
        secret_json(&b, m->ctl, name);
    else
        xds_json_write(&b, r, XDS_JSON_REDACT); /* private keys come out "[redacted]" */
    respond(c, 200, NULL, &b);
    free(b.p);
}

static void get_list(struct cp_mgmt *m, struct hconn *c, int ci)
{
    enum cp_type t = collections[ci].t;
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(
        m->ctl->cc->base.descriptor, cp_types[t].field);
    size_t n = *(const size_t *)((const char *)m->ctl->cc + f->quantifier_offset);
    ProtobufCMessage *const *arr = *(ProtobufCMessage *const **)((const char *)m->ctl->cc + f->offset);
    struct xds_sb b = {0};

    SB_LIT(&b, "{");
    add_version(&b, m->ctl);
    xds_sb_addf(&b, ",\"%s\":[", collections[ci].path);
    for (size_t i = 0; i < n; i++) {
        if (i)
            SB_LIT(&b, ",");
        if (t == CP_SDS)
            secret_json(&b, m->ctl, cp_store_name(arr[i], t));
        else
            xds_json_write(&b, arr[i], XDS_JSON_REDACT);
    }
    SB_LIT(&b, "]}");
    respond(c, 200, NULL, &b);
    free(b.p);
}

static void get_nodes(struct cp_mgmt *m, struct hconn *c)
{
    struct xds_sb b = {0};
    SB_LIT(&b, "{");
    add_version(&b, m->ctl);
    SB_LIT(&b, ",\"nodes\":");
    cp_ads_nodes_json(m->ctl->ads, &b);
    SB_LIT(&b, "}");
    respond(c, 200, NULL, &b);
    free(b.p);
}

static int authorized(const struct cp_mgmt *m, const struct hconn *c)
{
    if (m->token == NULL)
        return 1;
    if (!c->has_auth || strncmp(c->auth, "Bearer ", 7) != 0)
        return 0;
    const char *got = c->auth + 7;
    size_t a = strlen(got), b = strlen(m->token);
    return a == b && CRYPTO_memcmp(got, m->token, a) == 0;
}

static void dispatch(struct cp_mgmt *m, struct hconn *c)
{
    const char *method = http_method_str(c->h.method);
    char path[sizeof(c->h.url)];

    switch (xds_httpd_error(&c->h)) {
    case XDS_HTTPD_E_NONE:
        break;
    case XDS_HTTPD_E_URL:
        respond_error(c, 414, NULL, "the URL is too long");
        return;
    case XDS_HTTPD_E_BODY:
        respond_error(c, 413, NULL, "the body is larger than %zu bytes", BODY_MAX);
        return;
    default:
        /* 400 with the parser's words, a header section over its limit
         * included (431 would say it better; kept as it always answered). */
        respond_error(c, 400, NULL, "not an HTTP/1.1 request: %s", xds_httpd_error_text(&c->h));
        return;
    }
    if (!authorized(m, c)) {
        LG_W("mgmt", "%s %s: refused, no valid bearer token", method, c->h.url);
        respond_error(c, 401, "WWW-Authenticate: Bearer realm=\"legate-control\"\r\n",
                      "a valid \"Authorization: Bearer TOKEN\" header is required");
        return;
    }
    snprintf(path, sizeof(path), "%s", c->h.url);
    path[strcspn(path, "?#")] = '\0';
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        path[--len] = '\0';
    LG_D("mgmt", "%s %s", method, path);

    if (strcmp(path, "/nodes") == 0) {
        if (c->h.method != HTTP_GET)
            respond_error(c, 405, "Allow: GET\r\n", "%s is not allowed on /nodes", method);
        else
            get_nodes(m, c);
        return;
    }
    char *coll = path[0] == '/' ? path + 1 : path;
    char *name = strchr(coll, '/');
    if (name)
        *name++ = '\0';
    int ci = -1;
    for (size_t i = 0; i < sizeof(collections) / sizeof(collections[0]); i++)
        if (strcmp(coll, collections[i].path) == 0)
            ci = (int)i;
    if (ci < 0 || (name && strchr(name, '/'))) {
        respond_error(c, 404, NULL,
                      "no such endpoint; try /secrets /listeners /routes /clusters /endpoints "
                      "/nodes");
        return;
    }
    if (name && (url_decode(name) < 0 || name[0] == '\0')) {
        respond_error(c, 400, NULL, "the name in the path is not valid");
        return;
    }
    if (name == NULL) {
        if (c->h.method == HTTP_GET)
            get_list(m, c, ci);
        else
            respond_error(c, 405, "Allow: GET\r\n", "%s needs a name: /%s/{name}", method,
                          collections[ci].path);
        return;
    }
    switch (c->h.method) {
    case HTTP_GET:
        get_one(m, c, ci, name);
        break;
    case HTTP_PUT:
        if (collections[ci].t == CP_SDS)
            put_secret(m, c, name);
        else
            put_resource(m, c, ci, name);
        break;
    case HTTP_DELETE:
        delete_resource(m, c, ci, name);
        break;
    default:
        respond_error(c, 405, "Allow: GET, PUT, DELETE\r\n", "%s is not allowed here", method);
    }
}

/* ---- HTTP/1.1 ------------------------------------------------------------- */

static void on_begin(struct xds_httpd_conn *h)
{
    struct hconn *c = h->data;
    c->auth[0] = '\0';
    c->has_auth = 0;
}

static void on_header(struct xds_httpd_conn *h, const char *name, const char *value)
{
    struct hconn *c = h->data;
    if (strcasecmp(name, "authorization") != 0)
        return;
    /* One too long for the buffer is no token: refused, not truncated. */
    snprintf(c->auth, sizeof(c->auth), "%s", value ? value : "");
    c->has_auth = 1;
}

static const struct xds_httpd_opts httpd_opts = {
    .url_max = 2047,
    .body_max = BODY_MAX,
    .in_max = BODY_MAX + 65536,
    .keep_alive = 1,
    .on_begin = on_begin,
    .on_header = on_header,
};

/* Answers what has come in and writes what can go. */
static void serve(struct cp_mgmt *m, struct hconn *c)
{
    for (;;) {
        switch (xds_httpd_io(&c->h)) {
        case XDS_HTTPD_REQUEST:
            dispatch(m, c);
            continue;
        case XDS_HTTPD_CLOSE:
            conn_close(m, c);
            return;
        default:
            return;
        }
    }
}

static void on_accept(struct cp_mgmt *m)
{
    int fd = accept4(m->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    struct hconn *c = m->n < MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
    if (c == NULL) {
        close(fd);
        return;
    }
    xds_httpd_init(&c->h, fd, &httpd_opts, c);
    c->last = now_s();
    m->conns[m->n++] = c;
}

size_t cp_mgmt_fds(struct cp_mgmt *m, struct pollfd *fds, size_t max)
{
    size_t n = 0;
    if (max == 0)
        return 0;
    fds[n++] = (struct pollfd){.fd = m->fd, .events = m->n < MAX_CONNS ? POLLIN : 0};
    for (size_t i = 0; i < m->n && n < max; i++)
        fds[n++] = (struct pollfd){.fd = m->conns[i]->h.fd,
                                   .events = xds_httpd_want_write(&m->conns[i]->h) ? POLLOUT : POLLIN};
    return n;
}

void cp_mgmt_run(struct cp_mgmt *m, const struct pollfd *fds, size_t n)
{
    time_t now = now_s();
    for (size_t i = 0; i < n; i++) {
        if (fds[i].revents == 0)
            continue;
        if (fds[i].fd == m->fd) {
            on_accept(m);
            continue;
        }
        struct hconn *c = NULL;
        for (size_t k = 0; k < m->n && c == NULL; k++)
            if (m->conns[k]->h.fd == fds[i].fd)
                c = m->conns[k];
        if (c == NULL)
            continue;
        c->last = now;
        serve(m, c);
    }
    for (size_t i = m->n; i > 0; i--)
        if (now - m->conns[i - 1]->last > IDLE_SECONDS)
            conn_close(m, m->conns[i - 1]);
}

/* ---- start and stop ------------------------------------------------------- */

static int is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 0;
}

int cp_mgmt_start(const char *listen_on, const char *token, struct cp_ctl *ctl,
                  struct cp_mgmt **out, char *err, size_t errlen)
{
    char host[256];
    const char *port;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *ai = NULL;

    *out = NULL;
    if (listen_on[0] == '[') {
        const char *end = strchr(listen_on, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - listen_on - 1) >= sizeof(host))
            goto bad;
        snprintf(host, sizeof(host), "%.*s", (int)(end - listen_on - 1), listen_on + 1);
        port = end + 2;
    } else {
        const char *colon = strrchr(listen_on, ':');
        if (colon == NULL || (size_t)(colon - listen_on) >= sizeof(host))
            goto bad;
        snprintf(host, sizeof(host), "%.*s", (int)(colon - listen_on), listen_on);
        port = colon + 1;
    }
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    if (getaddrinfo(host, port, &hints, &ai) != 0 || ai == NULL)
        goto bad;
    if (!is_loopback(ai->ai_addr) && (token == NULL || token[0] == '\0')) {
        snprintf(err, errlen,
                 "--admin-listen %s is not a loopback address: --admin-token is required", listen_on);
        freeaddrinfo(ai);
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        snprintf(err, errlen, "--admin-listen %s: %s", listen_on, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct cp_mgmt *m = calloc(1, sizeof(*m));
    if (m == NULL || (token && (m->token = strdup(token)) == NULL)) {
        free(m);
        close(fd);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    m->fd = fd;
    m->ctl = ctl;
    LG_I("mgmt", "management API on http://%s%s", listen_on,
         token ? " (bearer token required)" : " (no token: loopback only)");
    *out = m;
    return 0;
bad:
    snprintf(err, errlen, "--admin-listen %s: expected IP:PORT, such as 127.0.0.1:18001", listen_on);
    if (ai)
        freeaddrinfo(ai);
    return -1;
}

void cp_mgmt_stop(struct cp_mgmt *m)
{
    if (m == NULL)
        return;
    while (m->n)
        conn_close(m, m->conns[0]);
    close(m->fd);
    if (m->token)
        explicit_bzero(m->token, strlen(m->token));
    free(m->token);
    free(m);
}
