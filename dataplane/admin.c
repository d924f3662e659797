#include "admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dataplane/admin_status.h"
#include "dataplane/config_build.h"
#include "dataplane/config_dump.h"
#include "dataplane/dynamic.h"
#include "dataplane/server.h"
#include "envoy/admin/v3/server_info.pb-c.h"
#include "dataplane/stats.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "xds/datasource.h"
#include "xds/httpd.h"
#include "xds/json.h"
#include "xds/log.h"
#include "xds/registry.h"
#include "xds/version.h"

#define ADMIN_TIMEOUT 10.0

struct dp_admin {
    struct ev_loop *loop;
    struct dp_admin_source src;
    int fd;
    ev_io io;
    ev_timer pause; /* accepting again after running out of descriptors */
    time_t started;
    struct aconn *conns;
};

struct aconn {
    struct aconn *next, *prev;
    struct dp_admin *a;
    ev_io io;
    int events; /* what io waits for: EV_READ or EV_WRITE */
    ev_timer timer;
    struct xds_httpd_conn h;
};

/* One request per connection, no bodies kept (POSTs carry their argument
 * in the query). */
static const struct xds_httpd_opts httpd_opts = {
    .url_max = 1023,
    .body_max = 0,
    .in_max = 65536,
    .keep_alive = 0,
};

/* ---- certificates ----------------------------------------------------------- */

static void asn1_time(struct xds_sb *b, const char *key, const ASN1_TIME *t)
{
    struct tm tm;
    char buf[64] = "";
    if (ASN1_TIME_to_tm(t, &tm) == 1)
        strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    xds_sb_addf(b, ",\"%s\":", key);
    xds_sb_str(b, buf);
}

static void cert_json(struct xds_sb *b, X509 *x)
{
    char *subj = X509_NAME_oneline(X509_get_subject_name(x), NULL, 0);
    xds_sb_add(b, "{\"subject\":", 11);
    xds_sb_str(b, subj ? subj : "");
    OPENSSL_free(subj);
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    xds_sb_add(b, ",\"serial_number\":", 17);
    xds_sb_str(b, hex ? hex : "");
    OPENSSL_free(hex);
    BN_free(bn);
    xds_sb_add(b, ",\"subject_alt_names\":[", 22);
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        const char *kind = NULL;
        char val[256] = "";
        if (gn->type == GEN_DNS || gn->type == GEN_URI || gn->type == GEN_EMAIL) {
            kind = gn->type == GEN_DNS ? "dns" : gn->type == GEN_URI ? "uri" : "email";
            const ASN1_IA5STRING *s = gn->d.ia5;
            snprintf(val, sizeof(val), "%.*s", s->length, (const char *)s->data);
        } else if (gn->type == GEN_IPADD) {
            kind = "ip_address";
            if (gn->d.ip->length == 4)
                inet_ntop(AF_INET, gn->d.ip->data, val, sizeof(val));
            else if (gn->d.ip->length == 16)
                inet_ntop(AF_INET6, gn->d.ip->data, val, sizeof(val));
        }
        if (kind == NULL)
            continue;
        xds_sb_addf(b, "%s{\"%s\":", b->p[b->len - 1] == '[' ? "" : ",", kind);
        xds_sb_str(b, val);
        xds_sb_add(b, "}", 1);
    }
    GENERAL_NAMES_free(names);
    xds_sb_add(b, "]", 1);
    asn1_time(b, "valid_from", X509_get0_notBefore(x));
    asn1_time(b, "expiration_time", X509_get0_notAfter(x));
    int days = 0, secs = 0;
    ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x));
    xds_sb_addf(b, ",\"days_until_expiration\":%d}", days);
}

/* Every certificate in a PEM DataSource, as a JSON array. */
static void pem_json(struct xds_sb *b, const Envoy__Config__Core__V3__DataSource *ds)
{
    char *pem = NULL;
    size_t len = 0;
    char err[256];
    xds_sb_add(b, "[", 1);
    if (ds && xds_datasource_read(ds, &pem, &len, err, sizeof(err)) == 0) {
        BIO *bio = BIO_new_mem_buf(pem, (int)len);
        X509 *x;
        int first = 1;
        while (bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
            if (!first)
                xds_sb_add(b, ",", 1);
            first = 0;
            cert_json(b, x);
            X509_free(x);
        }
        BIO_free(bio);
        free(pem);
    }
    xds_sb_add(b, "]", 1);
}

struct certs_walk {
    struct xds_sb *b;
    int n;
    char source[512];            /* where the certificates being walked come from */
    /* What to do with each certificate DataSource found. */
    void (*entry)(struct certs_walk *w, const char *kind, const Envoy__Config__Core__V3__DataSource *ds);
    int warn_days;
    int min_days;                /* expiry check: the soonest, in days */
};

static void cert_entry(struct certs_walk *w, const char *kind, const Envoy__Config__Core__V3__DataSource *ds)
{
    if (w->n++)
        xds_sb_add(w->b, ",", 1);
    xds_sb_add(w->b, "{", 1);
    xds_sb_add(w->b, "\"source\":", 9);
    xds_sb_str(w->b, w->source);
    xds_sb_addf(w->b, ",\"%s\":", kind);
    pem_json(w->b, ds);
    xds_sb_add(w->b, "}", 1);
}

/* Walks any message for TlsCertificate and CertificateValidationContext. */
static void certs_in(struct certs_walk *w, const ProtobufCMessage *m, int depth)
{
    if (depth > 32)
        return;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (d == &envoy__extensions__transport_sockets__tls__v3__tls_certificate__descriptor) {
        w->entry(w, "cert_chain",
                 ((const Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate *)m)->certificate_chain);
        return;
    }
    if (d == &envoy__extensions__transport_sockets__tls__v3__certificate_validation_context__descriptor) {
        const Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *v =
            (const Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *)m;
        if (v->trusted_ca)
            w->entry(w, "ca_cert", v->trusted_ca);
        return;
    }
    if (d == &google__protobuf__any__descriptor) {
        const Google__Protobuf__Any *any = (const Google__Protobuf__Any *)m;
        const ProtobufCMessageDescriptor *inner = xds_registry_lookup(any->type_url);
        ProtobufCMessage *u = inner ? protobuf_c_message_unpack(inner, NULL, any->value.len, any->value.data)
                                    : NULL;
        if (u) {
            certs_in(w, u, depth + 1);
            protobuf_c_message_free_unpacked(u, NULL);
        }
        return;
    }
    const char *base = (const char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++)
                certs_in(w, v[k], depth + 1);
        } else {
            const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)(base + f->offset);
            if (sub)
                certs_in(w, sub, depth + 1);
        }
    }
}

static void secret_cb(void *arg, const char *name, const char *version,
                      const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s)
{
    struct certs_walk *w = arg;
    snprintf(w->source, sizeof(w->source), "sds:%s (version %s)", name, version);
    certs_in(w, &s->base, 0);
}

/* Every certificate configured (static listeners, clusters, secrets,
 * bootstrap extensions) or received over SDS. */
static void walk_all(const struct dp_admin_source *src, struct certs_walk *w)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = src->bs->static_resources;
    for (size_t i = 0; sr && i < sr->n_listeners; i++) {
        snprintf(w->source, sizeof(w->source), "static listener %s", sr->listeners[i]->name);
        certs_in(w, &sr->listeners[i]->base, 0);
    }
    for (size_t i = 0; sr && i < sr->n_clusters; i++) {
        snprintf(w->source, sizeof(w->source), "static cluster %s", sr->clusters[i]->name);
        certs_in(w, &sr->clusters[i]->base, 0);
    }
    for (size_t i = 0; sr && i < sr->n_secrets; i++) {
        snprintf(w->source, sizeof(w->source), "static secret %s", sr->secrets[i]->name);
        certs_in(w, &sr->secrets[i]->base, 0);
    }
    for (size_t i = 0; i < src->bs->n_bootstrap_extensions; i++) {
        snprintf(w->source, sizeof(w->source), "bootstrap extension %s", src->bs->bootstrap_extensions[i]->name);
        certs_in(w, &src->bs->bootstrap_extensions[i]->base, 0);
    }
    struct dp_dyn *d = src->dyn(src->ud);
    if (d)
        dp_dyn_each_secret(d, secret_cb, w);
}

static char *certs_json(struct dp_admin *a)
{
    struct xds_sb b = {0};
    struct certs_walk w = {.b = &b, .entry = cert_entry};
    xds_sb_add(&b, "{\"certificates\":[", 17);
    walk_all(&a->src, &w);
    xds_sb_add(&b, "]}\n", 3);
    return b.p;
}

static void expiry_entry(struct certs_walk *w, const char *kind, const Envoy__Config__Core__V3__DataSource *ds)
{
    char *pem = NULL;
    size_t len = 0;
    char err[256];
    if (ds == NULL || xds_datasource_read(ds, &pem, &len, err, sizeof(err)) < 0)
        return;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509 *x;
    while (bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        int days = 0, secs = 0;
        ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x));
        if (days < w->min_days)
            w->min_days = days;
        if (days < w->warn_days) {
            char *subj = X509_NAME_oneline(X509_get_subject_name(x), NULL, 0);
            if (days < 0 || (days == 0 && secs < 0))
                LG_W("certs", "%s: %s %s EXPIRED %d day(s) ago", w->source,
                     strcmp(kind, "ca_cert") == 0 ? "CA certificate" : "certificate", subj ? subj : "?", -days);
            else
                LG_W("certs", "%s: %s %s expires in %d day(s)", w->source,
                     strcmp(kind, "ca_cert") == 0 ? "CA certificate" : "certificate", subj ? subj : "?", days);
            OPENSSL_free(subj);
        }
        X509_free(x);
    }
    BIO_free(bio);
    free(pem);
}

int dp_admin_check_expiry(const struct dp_admin_source *src, int warn_days)
{
    struct certs_walk w = {.entry = expiry_entry, .warn_days = warn_days, .min_days = 1 << 30};
    walk_all(src, &w);
    return w.min_days;
}

/* ---- requests ---------------------------------------------------------------- */

static void conn_close(struct aconn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ev_io_stop(c->a->loop, &c->io);
    ev_timer_stop(c->a->loop, &c->timer);
    close(c->h.fd);
    xds_httpd_free(&c->h);
    free(c);
}

/* Queues the response; body (malloc'd, or NULL) is freed. */
static void respond(struct aconn *c, int status, const char *ctype, char *body)
{
    xds_httpd_respond(&c->h, status, ctype,
                      "cache-control: no-cache, max-age=0\r\nx-content-type-options: nosniff\r\n", body,
                      body ? strlen(body) : 0);
    free(body);
}

static char *xstrdup_body(const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        abort();
    return d;
}

/* Envoy's ServerInfo (api/envoy/admin/v3/server_info.proto), every
 * primitive field written as Envoy's admin does. */
static char *server_info(struct dp_admin *a)
{
    const char *st = a->src.state(a->src.ud);
    Envoy__Admin__V3__ServerInfo si = ENVOY__ADMIN__V3__SERVER_INFO__INIT;
    Envoy__Admin__V3__CommandLineOptions cl = ENVOY__ADMIN__V3__COMMAND_LINE_OPTIONS__INIT;
    Google__Protobuf__Duration up = GOOGLE__PROTOBUF__DURATION__INIT, drain = GOOGLE__PROTOBUF__DURATION__INIT;
    /* Envoy's version is "<commit>/<version>/<Clean|Modified>/<RELEASE|DEBUG>/<TLS library>". */
    char version[128];
    snprintf(version, sizeof(version), "legate/%s/Clean/RELEASE/OpenSSL", LEGATE_VERSION);
    si.version = version;
    /* Envoy reports a failed health check as DRAINING too. */
    si.state = strcmp(st, "LIVE") == 0               ? ENVOY__ADMIN__V3__SERVER_INFO__STATE__LIVE
               : strcmp(st, "PRE_INITIALIZING") == 0 ? ENVOY__ADMIN__V3__SERVER_INFO__STATE__PRE_INITIALIZING
                                                     : ENVOY__ADMIN__V3__SERVER_INFO__STATE__DRAINING;
    up.seconds = (int64_t)(time(NULL) - a->started);
    si.uptime_current_epoch = &up;
    si.uptime_all_epochs = &up; /* no hot restart: one epoch */
    si.hot_restart_version = "disabled";
    if (a->src.opt) {
        cl.concurrency = (uint32_t)a->src.opt->concurrency;
        cl.config_path = (char *)a->src.opt->config_path;
        drain.seconds = (int64_t)a->src.opt->drain_time_s;
        drain.nanos = (int32_t)((a->src.opt->drain_time_s - (double)drain.seconds) * 1e9);
        cl.drain_time = &drain;
    }
    cl.log_level = (char *)lg_level_name(lg_current_level);
    cl.mode = ENVOY__ADMIN__V3__COMMAND_LINE_OPTIONS__MODE__Serve;
    cl.disable_hot_restart = 1;
    si.command_line_options = &cl;
    si.node = a->src.bs->node;
    struct xds_sb b = {0};
    xds_json_write(&b, &si.base, XDS_JSON_REDACT | XDS_JSON_EXACT | XDS_JSON_INDENT | XDS_JSON_DEFAULTS);
    xds_sb_add(&b, "\n", 1);
    return b.p;
}

/* /config_dump in Envoy's shape, made while dp_dyn_dump_view holds the
 * dynamic state still. */
struct envoy_dump {
    struct dp_admin *a;
    const char *query;
    int status;
    const char *ctype;
    char *body;
};

static void envoy_dump_cb(void *arg, const struct dp_dump_view *v)
{
    struct envoy_dump *ed = arg;
    ed->status = dp_config_dump_envoy(ed->a->src.bs, ed->a->started, v, ed->query, &ed->body, &ed->ctype);
}

static void handle(struct aconn *c, const char *method, const char *path)
{
    struct dp_admin *a = c->a;
    char p[1024];
    snprintf(p, sizeof(p), "%s", path);
    char *q = strchr(p, '?');
    if (q)
        *q = '\0'; /* q + 1: the query */
    LG_D("admin", "%s %s", method, path);
    static const char *const posts[] = {"/logging", "/healthcheck/fail", "/healthcheck/ok", "/drain_listeners",
                                        "/quitquitquit"};
    int is_post = strcmp(method, "POST") == 0;
    int mutating = 0;
    for (size_t i = 0; i < sizeof(posts) / sizeof(posts[0]); i++)
        mutating |= strcmp(p, posts[i]) == 0;
    if (mutating != is_post || (!is_post && strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)) {
        respond(c, 405, "text/plain",
                xstrdup_body(mutating ? "this endpoint changes state: use POST\n" : "use GET\n"));
        return;
    }
    if (strcmp(p, "/logging") == 0) {
        const char *lv = q ? strstr(q + 1, "level=") : NULL;
        int level = lv ? lg_level_parse(lv + 6) : -1;
        if (level < 0) {
            respond(c, 400, "text/plain",
                    xstrdup_body("usage: POST /logging?level=trace|debug|info|warning|error|critical|off\n"));
            return;
        }
        lg_set_level(level);
        LG_I("admin", "log level set to %s", lg_level_name(level));
        char body[64];
        snprintf(body, sizeof(body), "level: %s\n", lg_level_name(level));
        respond(c, 200, "text/plain", xstrdup_body(body));
        return;
    }
    if (strcmp(p, "/healthcheck/fail") == 0 || strcmp(p, "/healthcheck/ok") == 0) {
        int failed = strcmp(p, "/healthcheck/fail") == 0;
        a->src.set_health_failed(a->src.ud, failed);
        LG_I("admin", "health check %s", failed ? "failing: /ready answers 503" : "passing again");
        respond(c, 200, "text/plain", xstrdup_body("OK\n"));
        return;
    }
    if (strcmp(p, "/drain_listeners") == 0) {
        a->src.drain_listeners(a->src.ud);
        respond(c, 200, "text/plain", xstrdup_body("OK\n"));
        return;
    }
    if (strcmp(p, "/quitquitquit") == 0) {
        respond(c, 200, "text/plain", xstrdup_body("OK\n"));
        a->src.quit(a->src.ud);
        return;
    }
    if (strcmp(p, "/stats") == 0) {
        const char *f = q ? strstr(q + 1, "filter=") : NULL;
        char filt[256] = "";
        if (f)
            snprintf(filt, sizeof(filt), "%.*s", (int)strcspn(f + 7, "&"), f + 7);
        respond(c, 200, "text/plain", dp_stats_text(filt));
        return;
    }
    if (strcmp(p, "/stats/prometheus") == 0) {
        respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", dp_stats_prometheus());
        return;
    }
    if (strcmp(p, "/clusters") == 0 || strcmp(p, "/listeners") == 0) {
        /* Envoy's: text, or ?format=json */
        char fmt[16];
        int json = dp_query_param(q ? q + 1 : NULL, "format", fmt, sizeof(fmt)) && strcmp(fmt, "json") == 0;
        char *body = p[1] == 'c' ? dp_admin_clusters_envoy(&a->src, json) : dp_admin_listeners_envoy(&a->src, json);
        respond(c, 200, json ? "application/json" : "text/plain", body);
        return;
    }
    if (strcmp(p, "/legate/clusters") == 0) {
        respond(c, 200, "application/json", a->src.clusters_json(a->src.ud));
        return;
    }
    if (strcmp(p, "/legate/listeners") == 0) {
        respond(c, 200, "application/json", a->src.listeners_json(a->src.ud));
        return;
    }
    if (strcmp(p, "/ready") == 0) {
        const char *st = a->src.state(a->src.ud);
        char body[64];
        snprintf(body, sizeof(body), "%s\n", st);
        respond(c, strcmp(st, "LIVE") == 0 ? 200 : 503, "text/plain", xstrdup_body(body));
    } else if (strcmp(p, "/server_info") == 0) {
        respond(c, 200, "application/json", server_info(a));
    } else if (strcmp(p, "/legate/server_info") == 0) {
        struct xds_sb b = {0};
        xds_sb_addf(&b, "{\"version\":\"%s\",\"state\":", LEGATE_VERSION);
        xds_sb_str(&b, a->src.state(a->src.ud));
        xds_sb_addf(&b, ",\"uptime_seconds\":%lld,\"command_line\":[", (long long)(time(NULL) - a->started));
        for (int i = 0; i < a->src.argc; i++) {
            if (i)
                xds_sb_add(&b, ",", 1);
            xds_sb_str(&b, a->src.argv[i]);
        }
        xds_sb_add(&b, "],\"node\":", 9);
        if (a->src.bs->node)
            xds_json_write(&b, &a->src.bs->node->base, XDS_JSON_REDACT);
        else
            xds_sb_add(&b, "null", 4);
        xds_sb_add(&b, "}\n", 2);
        respond(c, 200, "application/json", b.p);
    } else if (strcmp(p, "/config_dump") == 0) {
        struct envoy_dump ed = {a, q ? q + 1 : NULL, 500, NULL, NULL};
        struct dp_dyn *d = a->src.dyn(a->src.ud);
        if (d)
            dp_dyn_dump_view(d, envoy_dump_cb, &ed);
        else
            envoy_dump_cb(&ed, NULL);
        respond(c, ed.status, ed.ctype, ed.body);
    } else if (strcmp(p, "/legate/config_dump") == 0) {
        struct xds_sb b = {0};
        xds_sb_add(&b, "{\"bootstrap\":", 13);
        xds_json_write(&b, &a->src.bs->base, XDS_JSON_REDACT); /* the bootstrap may hold keys inline */
        xds_sb_add(&b, ",\"dynamic\":", 11);
        struct dp_dyn *d = a->src.dyn(a->src.ud);
        char *dj = d ? dp_dyn_config_dump(d) : NULL;
        if (dj) {
            xds_sb_add(&b, dj, strlen(dj));
            free(dj);
        } else {
            xds_sb_add(&b, "null", 4);
        }
        xds_sb_add(&b, "}\n", 2);
        respond(c, 200, "application/json", b.p);
    } else if (strcmp(p, "/certs") == 0) {
        respond(c, 200, "application/json", certs_json(a));
    } else {
        respond(c, 404, "text/plain",
                xstrdup_body("not found; GET /ready /server_info /legate/server_info /config_dump /legate/config_dump "
                             "/certs /stats /stats/prometheus /clusters /listeners /legate/clusters "
                             "/legate/listeners; POST /logging?level= /healthcheck/fail /healthcheck/ok "
                             "/drain_listeners /quitquitquit\n"));
    }
}

static void conn_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct aconn *c = w->data;
    for (;;) {
        int ev = xds_httpd_io(&c->h);
        if (ev == XDS_HTTPD_CLOSE) {
            conn_close(c);
            return;
        }
        if (ev != XDS_HTTPD_REQUEST)
            break;
        /* Every bad request is a 400 here (the admin has always answered
         * so), whatever xds_httpd_error_status would say. */
        if (xds_httpd_error(&c->h) != XDS_HTTPD_E_NONE)
            respond(c, 400, "text/plain", xstrdup_body("bad request\n"));
        else
            handle(c, http_method_str(c->h.method), c->h.url);
    }
    int events = xds_httpd_want_write(&c->h) ? EV_WRITE : EV_READ;
    if (events != c->events) {
        ev_io_stop(loop, &c->io);
        ev_io_set(&c->io, c->h.fd, events);
        ev_io_start(loop, &c->io);
        c->events = events;
    }
}

static void conn_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    conn_close(t->data);
}

static void pause_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct dp_admin *a = t->data;
    ev_io_start(loop, &a->io);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct dp_admin *a = w->data;
    int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* The connection stays in the backlog and the socket readable:
             * retrying at once would spin. */
            LG_D("admin", "accept: %s: trying again in 0.5 s", strerror(errno));
            ev_io_stop(loop, &a->io);
            ev_timer_set(&a->pause, 0.5, 0.);
            ev_timer_start(loop, &a->pause);
        }
        return;
    }
    struct aconn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return;
    }
    c->a = a;
    xds_httpd_init(&c->h, fd, &httpd_opts, c);
    c->next = a->conns;
    if (a->conns)
        a->conns->prev = c;
    a->conns = c;
    ev_io_init(&c->io, conn_io, fd, EV_READ);
    c->events = EV_READ;
    c->io.data = c;
    ev_io_start(loop, &c->io);
    ev_timer_init(&c->timer, conn_timeout, ADMIN_TIMEOUT, 0.);
    c->timer.data = c;
    ev_timer_start(loop, &c->timer);
}

struct dp_admin *dp_admin_start(struct ev_loop *loop, const struct dp_admin_source *src, char *err,
                                size_t errlen)
{
    const Envoy__Config__Core__V3__SocketAddress *sa = src->bs->admin->address->socket_address;
    struct sockaddr_storage ss;
    socklen_t sl;
    if (dp_sockaddr_parse(sa->address, sa->port_value, &ss, &sl) < 0) {
        snprintf(err, errlen, "admin.address: \"%s\" is not an IP address", sa->address);
        return NULL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 64) < 0) {
        snprintf(err, errlen, "admin.address: cannot listen on %s:%u: %s", sa->address, sa->port_value,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    struct dp_admin *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        close(fd);
        return NULL;
    }
    a->loop = loop;
    a->src = *src;
    a->fd = fd;
    a->started = time(NULL);
    ev_io_init(&a->io, accept_cb, fd, EV_READ);
    a->io.data = a;
    ev_io_start(loop, &a->io);
    ev_init(&a->pause, pause_cb);
    a->pause.data = a;
    LG_I("admin", "admin listener on %s:%u (keep it private: it shows the configuration)", sa->address,
         sa->port_value);
    return a;
}

void dp_admin_stop(struct dp_admin *a)
{
    if (a == NULL)
        return;
    ev_io_stop(a->loop, &a->io);
    ev_timer_stop(a->loop, &a->pause);
    close(a->fd);
    while (a->conns)
        conn_close(a->conns);
    free(a);
}
