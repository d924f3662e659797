#include "accesslog.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dataplane/buf.h"
#include "dataplane/stream.h"
#include "dataplane/worker.h"
#include "envoy/extensions/access_loggers/file/v3/file.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "xds/datasource.h"
#include "xds/json.h"
#include "xds/log.h"

#define FLUSH_BYTES (64 * 1024)
#define FLUSH_SECONDS 0.1

/* Envoy's default format. */
static const char default_format[] =
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% "
    "%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "
    "\"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" "
    "\"%UPSTREAM_HOST%\"\n";

enum op {
    OP_LITERAL,
    OP_START_TIME,
    OP_REQ,
    OP_RESP,
    OP_RESPONSE_CODE,
    OP_RESPONSE_FLAGS,
    OP_DURATION,
    OP_BYTES_RECEIVED,
    OP_BYTES_SENT,
    OP_PROTOCOL,
    OP_UPSTREAM_HOST,
    OP_UPSTREAM_CLUSTER,
    OP_ROUTE_NAME,
    OP_DOWNSTREAM_REMOTE_ADDRESS,
    OP_DOWNSTREAM_LOCAL_ADDRESS,
    OP_DOWNSTREAM_PEER_SUBJECT,
    OP_DOWNSTREAM_PEER_ISSUER,
    OP_DOWNSTREAM_PEER_URI_SAN,
    OP_DOWNSTREAM_PEER_DNS_SAN,
    OP_DOWNSTREAM_PEER_SERIAL,
    OP_DOWNSTREAM_PEER_FINGERPRINT_256,
    OP_DOWNSTREAM_TLS_VERSION,
    OP_REQUEST_ID,
    OP_LOCAL_REPLY_BODY,
};

static const struct {
    const char *name;
    enum op op;
    int arg; /* 1: takes (ARG) */
    int numeric;
} ops[] = {
    {"START_TIME", OP_START_TIME, 2, 0},
    {"REQ", OP_REQ, 1, 0},
    {"RESP", OP_RESP, 1, 0},
    {"RESPONSE_CODE", OP_RESPONSE_CODE, 0, 1},
    {"RESPONSE_FLAGS", OP_RESPONSE_FLAGS, 0, 0},
    {"DURATION", OP_DURATION, 0, 1},
    {"BYTES_RECEIVED", OP_BYTES_RECEIVED, 0, 1},
    {"BYTES_SENT", OP_BYTES_SENT, 0, 1},
    {"PROTOCOL", OP_PROTOCOL, 0, 0},
    {"UPSTREAM_HOST", OP_UPSTREAM_HOST, 0, 0},
    {"UPSTREAM_CLUSTER", OP_UPSTREAM_CLUSTER, 0, 0},
    {"ROUTE_NAME", OP_ROUTE_NAME, 0, 0},
    {"DOWNSTREAM_REMOTE_ADDRESS", OP_DOWNSTREAM_REMOTE_ADDRESS, 0, 0},
    {"DOWNSTREAM_LOCAL_ADDRESS", OP_DOWNSTREAM_LOCAL_ADDRESS, 0, 0},
    {"DOWNSTREAM_PEER_SUBJECT", OP_DOWNSTREAM_PEER_SUBJECT, 0, 0},
    {"DOWNSTREAM_PEER_ISSUER", OP_DOWNSTREAM_PEER_ISSUER, 0, 0},
    {"DOWNSTREAM_PEER_URI_SAN", OP_DOWNSTREAM_PEER_URI_SAN, 0, 0},
    {"DOWNSTREAM_PEER_DNS_SAN", OP_DOWNSTREAM_PEER_DNS_SAN, 0, 0},
    {"DOWNSTREAM_PEER_SERIAL", OP_DOWNSTREAM_PEER_SERIAL, 0, 0},
    {"DOWNSTREAM_PEER_FINGERPRINT_256", OP_DOWNSTREAM_PEER_FINGERPRINT_256, 0, 0},
    {"DOWNSTREAM_TLS_VERSION", OP_DOWNSTREAM_TLS_VERSION, 0, 0},
    {"STREAM_ID", OP_REQUEST_ID, 0, 0},
    {"LOCAL_REPLY_BODY", OP_LOCAL_REPLY_BODY, 0, 0},
};

struct token {
    enum op op;
    char *text;     /* literal, header name (lower case), or strftime format */
    char *alt;      /* REQ(A?B): B */
    size_t max_len; /* :N, 0 for none */
    int numeric;
};

struct format {
    struct token *t;
    size_t n;
};

/* One log file, shared by every access log naming the same path; lives
 * until exit (workers may hold lines for it). */
struct alog_file {
    struct alog_file *next;
    char *path;
    int fd;
    struct dp_buf pending; /* under writer.lock */
};

struct dp_subst {
    struct format text;     /* used when n_json == 0 */
    char **json_keys;
    struct format *json_vals;
    size_t n_json;
    char *content_type;     /* SubstitutionFormatString.content_type, or NULL */
    int raw;                /* a body, not a log line: no control-character cleaning */
};

struct dp_access_log {
    struct alog_file *file;
    struct dp_subst *fmt;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    int started, stop, dirty;
    struct alog_file *files;
} writer = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* ---- the writer thread ------------------------------------------------------ */

static void write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* a full disk loses lines, never a worker */
        }
        p += w;
        n -= (size_t)w;
    }
}

static void drain_files(void)
{
    /* Called with the lock held; writes without it. */
    for (struct alog_file *f = writer.files; f; f = f->next) {
        if (dp_buf_size(&f->pending) == 0)
            continue;
        struct dp_buf b = f->pending;
        memset(&f->pending, 0, sizeof(f->pending));
        pthread_mutex_unlock(&writer.lock);
        write_all(f->fd, dp_buf_head(&b), dp_buf_size(&b));
        dp_buf_release(&b);
        pthread_mutex_lock(&writer.lock);
    }
}

static void *writer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&writer.lock);
    while (!writer.stop) {
        while (!writer.dirty && !writer.stop)
            pthread_cond_wait(&writer.cond, &writer.lock);
        writer.dirty = 0;
        drain_files();
    }
    drain_files();
    pthread_mutex_unlock(&writer.lock);
    dp_buf_cache_free(); /* the blocks this thread released */
    return NULL;
}

static struct alog_file *file_open(const char *path, char *err, size_t errlen)
{
    pthread_mutex_lock(&writer.lock);
    for (struct alog_file *f = writer.files; f; f = f->next)
        if (strcmp(f->path, path) == 0) {
            pthread_mutex_unlock(&writer.lock);
            return f;
        }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "path: %s: %s", path, strerror(errno));
        pthread_mutex_unlock(&writer.lock);
        return NULL;
    }
    struct alog_file *f = calloc(1, sizeof(*f));
    if (f == NULL || (f->path = strdup(path)) == NULL) {
        free(f);
        close(fd);
        snprintf(err, errlen, "out of memory");
        pthread_mutex_unlock(&writer.lock);
        return NULL;
    }
    f->fd = fd;
    f->next = writer.files;
    writer.files = f;
    if (!writer.started && pthread_create(&writer.thread, NULL, writer_main, NULL) == 0)
        writer.started = 1;
    pthread_mutex_unlock(&writer.lock);
    return f;
}

void dp_access_log_shutdown(void)
{
    pthread_mutex_lock(&writer.lock);
    writer.stop = 1;
    pthread_cond_signal(&writer.cond);
    int started = writer.started;
    pthread_mutex_unlock(&writer.lock);
    if (started)
        pthread_join(writer.thread, NULL);
    writer.started = 0;
    while (writer.files) {
        struct alog_file *f = writer.files;
        writer.files = f->next;
        if (dp_buf_size(&f->pending))
            write_all(f->fd, dp_buf_head(&f->pending), dp_buf_size(&f->pending));
        dp_buf_release(&f->pending);
        close(f->fd);
        free(f->path);
        free(f);
    }
    writer.stop = 0;
}

/* ---- per worker ---------------------------------------------------------------- */

void dp_access_log_flush(struct dp_worker *w)
{
    if (w->n_alog == 0)
        return;
    pthread_mutex_lock(&writer.lock);
    for (size_t i = 0; i < w->n_alog; i++) {
        struct dp_buf *b = &w->alog[i].buf;
        if (dp_buf_size(b) == 0)
            continue;
        dp_buf_append(&w->alog[i].file->pending, dp_buf_head(b), dp_buf_size(b));
        dp_buf_consume(b, dp_buf_size(b));
        writer.dirty = 1;
    }
    if (writer.dirty)
        pthread_cond_signal(&writer.cond);
    pthread_mutex_unlock(&writer.lock);
    for (size_t i = 0; i < w->n_alog; i++)
        dp_buf_release(&w->alog[i].buf);
}

static void flush_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    dp_access_log_flush(t->data);
}

static struct dp_buf *worker_buf(struct dp_worker *w, struct alog_file *f)
{
    for (size_t i = 0; i < w->n_alog; i++)
        if (w->alog[i].file == f)
            return &w->alog[i].buf;
    if (w->n_alog == DP_WORKER_MAX_ALOG)
        return NULL;
    w->alog[w->n_alog].file = f;
    memset(&w->alog[w->n_alog].buf, 0, sizeof(w->alog[w->n_alog].buf));
    return &w->alog[w->n_alog++].buf;
}

/* ---- formats --------------------------------------------------------------------- */

static void format_free(struct format *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->t[i].text);
        free(f->t[i].alt);
    }
    free(f->t);
    memset(f, 0, sizeof(*f));
}

static struct token *add_token(struct format *f)
{
    struct token *nt = realloc(f->t, (f->n + 1) * sizeof(*nt));
    if (nt == NULL)
        abort();
    f->t = nt;
    memset(&f->t[f->n], 0, sizeof(*f->t));
    return &f->t[f->n++];
}

static char *dupn(const char *p, size_t n)
{
    char *d = strndup(p, n);
    if (d == NULL)
        abort();
    return d;
}

/* Compiles a format string; -1 with the reason. */
static int compile(struct format *f, const char *s, char *err, size_t errlen)
{
    const char *p = s;
    while (*p) {
        const char *pc = strchr(p, '%');
        if (pc == NULL || pc[1] == '\0') {
            add_token(f)->text = dupn(p, strlen(p));
            break;
        }
        if (pc > p)
            add_token(f)->text = dupn(p, (size_t)(pc - p));
        if (pc[1] == '%') { /* "%%" is a literal percent */
            add_token(f)->text = dupn("%", 1);
            p = pc + 2;
            continue;
        }
        const char *q = pc + 1;
        size_t nl = strspn(q, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789");
        size_t k;
        for (k = 0; k < sizeof(ops) / sizeof(ops[0]); k++)
            if (strlen(ops[k].name) == nl && strncmp(ops[k].name, q, nl) == 0)
                break;
        if (k == sizeof(ops) / sizeof(ops[0]) || nl == 0) {
            snprintf(err, errlen, "unknown command operator \"%%%.*s\" at offset %zu", (int)(nl ? nl : 1), q,
                     (size_t)(pc - s));
            return -1;
        }
        struct token *t = add_token(f);
        t->op = ops[k].op;
        t->numeric = ops[k].numeric;
        q += nl;
        if (*q == '(') {
            const char *close = strchr(q, ')');
            if (ops[k].arg == 0 || close == NULL) {
                snprintf(err, errlen, "%%%s%s", ops[k].name, close ? " takes no argument" : ": missing ')'");
                return -1;
            }
            char *arg = dupn(q + 1, (size_t)(close - q - 1));
            if (t->op == OP_REQ || t->op == OP_RESP) {
                char *alt = strchr(arg, '?');
                if (alt) {
                    *alt = '\0';
                    t->alt = dupn(alt + 1, strlen(alt + 1));
                    for (char *c = t->alt; *c; c++)
                        *c = (char)tolower((unsigned char)*c);
                }
                for (char *c = arg; *c; c++)
                    *c = (char)tolower((unsigned char)*c);
            }
            t->text = arg;
            q = close + 1;
        } else if (ops[k].arg == 1) {
            snprintf(err, errlen, "%%%s needs an argument, like %%%s(user-agent)%%", ops[k].name, ops[k].name);
            return -1;
        }
        if (*q != '%') {
            snprintf(err, errlen, "%%%s: missing the closing '%%'", ops[k].name);
            return -1;
        }
        q++;
        if (*q == ':' && isdigit((unsigned char)q[1])) {
            t->max_len = strtoul(q + 1, (char **)&q, 10);
        }
        p = q;
    }
    return 0;
}

/* ---- values ---------------------------------------------------------------------- */

static int header_value(const struct dp_request_head *rq, const struct dp_headers *hs, const char *name,
                        struct dp_str *out)
{
    if (rq && name[0] == ':') {
        if (strcmp(name, ":method") == 0)
            *out = rq->method;
        else if (strcmp(name, ":path") == 0)
            *out = rq->path;
        else if (strcmp(name, ":authority") == 0)
            *out = rq->authority;
        else if (strcmp(name, ":scheme") == 0)
            *out = rq->scheme;
        else
            return 0;
        return out->n > 0;
    }
    const struct dp_header *h = dp_headers_get(hs, (struct dp_str){name, strlen(name)});
    if (h == NULL)
        return 0;
    *out = h->value;
    return 1;
}

static const char *joined(const char *const *v, size_t n, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && off + 1 < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "," : "", v[i]);
    return n ? buf : NULL;
}

/* The value of t for stream s: 1 and (p, n), or 0 for none ("-"). */
static int value(const struct token *t, struct dp_stream *s, char *tmp, size_t tmplen, const char **p, size_t *n)
{
    struct dp_hcm *h = s->hcm;
    const char *v = NULL;
    struct dp_str str;
    switch (t->op) {
    case OP_LITERAL:
        v = t->text;
        break;
    case OP_LOCAL_REPLY_BODY:
        if (s->local_body.p == NULL)
            return 0;
        *p = s->local_body.p;
        *n = s->local_body.n;
        return 1;
    case OP_START_TIME: {
        double st = s->start;
        time_t sec = (time_t)st;
        struct tm tm;
        gmtime_r(&sec, &tm);
        if (t->text && t->text[0]) {
            strftime(tmp, tmplen, t->text, &tm);
        } else {
            size_t k = strftime(tmp, tmplen, "%Y-%m-%dT%H:%M:%S", &tm);
            snprintf(tmp + k, tmplen - k, ".%03dZ", (int)((st - (double)sec) * 1000));
        }
        v = tmp;
        break;
    }
    case OP_REQ:
    case OP_RESP: {
        const struct dp_request_head *rq = t->op == OP_REQ ? &s->req : NULL;
        const struct dp_headers *hs = t->op == OP_REQ ? &s->req.headers : &s->resp.headers;
        if (header_value(rq, hs, t->text, &str) || (t->alt && header_value(rq, hs, t->alt, &str))) {
            *p = str.p;
            *n = str.n;
            if (t->max_len && *n > t->max_len)
                *n = t->max_len;
            return 1;
        }
        return 0;
    }
    case OP_RESPONSE_CODE:
        snprintf(tmp, tmplen, "%d", s->resp.status);
        v = tmp;
        break;
    case OP_RESPONSE_FLAGS:
        v = s->response_flags[0] ? s->response_flags : NULL;
        break;
    case OP_DURATION:
        snprintf(tmp, tmplen, "%lld", (long long)((ev_now(h->w->loop) - s->start) * 1000));
        v = tmp;
        break;
    case OP_BYTES_RECEIVED:
        snprintf(tmp, tmplen, "%llu", (unsigned long long)s->bytes_received);
        v = tmp;
        break;
    case OP_BYTES_SENT:
        snprintf(tmp, tmplen, "%llu", (unsigned long long)s->bytes_sent);
        v = tmp;
        break;
    case OP_PROTOCOL:
        v = s->req.version == DP_HTTP_2 ? "HTTP/2" : s->req.version == DP_HTTP_10 ? "HTTP/1.0" : "HTTP/1.1";
        break;
    case OP_UPSTREAM_HOST:
        v = s->upstream_host;
        break;
    case OP_UPSTREAM_CLUSTER:
        v = s->route && s->route->cluster ? s->route->cluster : NULL;
        break;
    case OP_ROUTE_NAME:
        v = s->route && s->route->name && s->route->name[0] ? s->route->name : NULL;
        break;
    case OP_DOWNSTREAM_REMOTE_ADDRESS:
        v = h->remote;
        break;
    case OP_DOWNSTREAM_LOCAL_ADDRESS:
        v = h->local;
        break;
    case OP_DOWNSTREAM_PEER_SUBJECT:
        v = h->peer.subject;
        break;
    case OP_DOWNSTREAM_PEER_ISSUER:
        v = h->peer.issuer;
        break;
    case OP_DOWNSTREAM_PEER_URI_SAN:
        v = joined(h->peer.uri_sans, h->peer.n_uri_sans, tmp, tmplen);
        break;
    case OP_DOWNSTREAM_PEER_DNS_SAN:
        v = joined(h->peer.dns_sans, h->peer.n_dns_sans, tmp, tmplen);
        break;
    case OP_DOWNSTREAM_PEER_SERIAL:
        v = h->peer.serial;
        break;
    case OP_DOWNSTREAM_PEER_FINGERPRINT_256:
        v = h->peer.fingerprint;
        break;
    case OP_DOWNSTREAM_TLS_VERSION:
        v = h->peer.tls ? h->peer.tls_version : NULL;
        break;
    case OP_REQUEST_ID:
        snprintf(tmp, tmplen, "%llu", (unsigned long long)s->id);
        v = tmp;
        break;
    }
    if (v == NULL || v[0] == '\0')
        return 0;
    *p = v;
    *n = strlen(v);
    if (t->max_len && *n > t->max_len)
        *n = t->max_len;
    return 1;
}

/* Header values come from the client: keep the log one line per request. */
static void append_clean(struct dp_buf *b, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if ((unsigned char)c < 0x20 || c == 0x7f)
            c = '?';
        dp_buf_append(b, &c, 1);
    }
}

/* raw: values as they are (a local reply's body); else control characters
 * become '?', so that a header cannot forge a log line. */
static void render_text(const struct format *f, struct dp_stream *s, struct dp_buf *b, int raw)
{
    char tmp[512];
    for (size_t i = 0; i < f->n; i++) {
        const char *p;
        size_t n;
        if (f->t[i].op == OP_LITERAL)
            dp_buf_append(b, f->t[i].text, strlen(f->t[i].text));
        else if (value(&f->t[i], s, tmp, sizeof(tmp), &p, &n))
            raw ? (void)dp_buf_append(b, p, n) : append_clean(b, p, n);
        else
            dp_buf_append(b, "-", 1);
    }
}

static void render_json(const struct dp_subst *l, struct dp_stream *s, struct dp_buf *b)
{
    struct xds_sb sb = {0};
    char tmp[512];
    xds_sb_add(&sb, "{", 1);
    for (size_t i = 0; i < l->n_json; i++) {
        const struct format *f = &l->json_vals[i];
        if (i)
            xds_sb_add(&sb, ",", 1);
        xds_sb_str(&sb, l->json_keys[i]);
        xds_sb_add(&sb, ":", 1);
        const char *p;
        size_t n;
        if (f->n == 1 && f->t[0].op != OP_LITERAL) {
            /* A lone operator keeps its type: numbers stay numbers, a
             * missing value is null. */
            if (!value(&f->t[0], s, tmp, sizeof(tmp), &p, &n)) {
                xds_sb_add(&sb, "null", 4);
            } else if (f->t[0].numeric) {
                xds_sb_add(&sb, p, n);
            } else {
                char *v = dupn(p, n);
                xds_sb_str(&sb, v);
                free(v);
            }
            continue;
        }
        struct dp_buf tb = {0};
        render_text(f, s, &tb, 1); /* JSON escapes it */
        dp_buf_append(&tb, "", 1);
        xds_sb_str(&sb, (const char *)dp_buf_head(&tb));
        dp_buf_release(&tb);
    }
    xds_sb_add(&sb, "}\n", 2);
    dp_buf_append(b, sb.p, sb.len);
    free(sb.p);
}

void dp_access_log_write(const struct dp_access_log *l, struct dp_stream *s)
{
    struct dp_worker *w = s->hcm->w;
    struct dp_buf *b = worker_buf(w, l->file);
    struct dp_buf direct = {0};
    if (b == NULL)
        b = &direct; /* more files than slots: hand over at once */
    dp_subst_render(l->fmt, s, b);
    if (b == &direct) {
        pthread_mutex_lock(&writer.lock);
        dp_buf_append(&l->file->pending, dp_buf_head(b), dp_buf_size(b));
        writer.dirty = 1;
        pthread_cond_signal(&writer.cond);
        pthread_mutex_unlock(&writer.lock);
        dp_buf_release(b);
        return;
    }
    if (dp_buf_size(b) >= FLUSH_BYTES) {
        dp_access_log_flush(w);
    } else if (!ev_is_active(&w->alog_timer)) {
        ev_timer_init(&w->alog_timer, flush_timer_cb, FLUSH_SECONDS, 0.);
        w->alog_timer.data = w;
        ev_timer_start(w->loop, &w->alog_timer);
    }
}

/* ---- config ------------------------------------------------------------------------ */

void dp_subst_render(const struct dp_subst *f, struct dp_stream *s, struct dp_buf *b)
{
    if (f->n_json)
        render_json(f, s, b);
    else
        render_text(&f->text, s, b, f->raw);
}

const char *dp_subst_content_type(const struct dp_subst *f)
{
    if (f->content_type)
        return f->content_type;
    return f->n_json ? "application/json" : "text/plain";
}

void dp_subst_free(struct dp_subst *f)
{
    if (f == NULL)
        return;
    format_free(&f->text);
    for (size_t i = 0; i < f->n_json; i++) {
        free(f->json_keys[i]);
        format_free(&f->json_vals[i]);
    }
    free(f->json_keys);
    free(f->json_vals);
    free(f->content_type);
    free(f);
}

struct dp_subst *dp_subst_new(const Envoy__Config__Core__V3__SubstitutionFormatString *sf, const char *dflt,
                              int raw, const char *path, char *err, size_t errlen)
{
    struct dp_subst *l = calloc(1, sizeof(*l));
    char e[300];
    if (l == NULL)
        abort();
    l->raw = raw;
    if (sf && sf->content_type[0])
        l->content_type = dupn(sf->content_type, strlen(sf->content_type));
    if (sf && sf->format_case == ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_JSON_FORMAT) {
        const Google__Protobuf__Struct *js = sf->json_format;
        l->json_keys = calloc(js->n_fields + 1, sizeof(*l->json_keys));
        l->json_vals = calloc(js->n_fields + 1, sizeof(*l->json_vals));
        if (l->json_keys == NULL || l->json_vals == NULL)
            abort();
        for (size_t i = 0; i < js->n_fields; i++) {
            const Google__Protobuf__Value *v = js->fields[i]->value;
            if (v == NULL || v->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE) {
                snprintf(err, errlen, "%s.json_format.%s: only string values (format strings) are supported", path,
                         js->fields[i]->key);
                goto bad;
            }
            l->json_keys[i] = dupn(js->fields[i]->key, strlen(js->fields[i]->key));
            l->n_json = i + 1;
            if (compile(&l->json_vals[i], v->string_value, e, sizeof(e)) < 0) {
                snprintf(err, errlen, "%s.json_format.%s: %s", path, js->fields[i]->key, e);
                goto bad;
            }
        }
        return l;
    }
    const char *fmt = dflt;
    char *owned = NULL;
    if (sf && sf->format_case == ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_TEXT_FORMAT) {
        fmt = sf->text_format;
    } else if (sf && sf->format_case == ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_TEXT_FORMAT_SOURCE) {
        size_t len;
        if (xds_datasource_read(sf->text_format_source, &owned, &len, e, sizeof(e)) < 0) {
            snprintf(err, errlen, "%s.text_format_source: %s", path, e);
            goto bad;
        }
        char *z = realloc(owned, len + 1);
        if (z == NULL)
            abort();
        z[len] = '\0';
        fmt = owned = z;
    }
    int rc = compile(&l->text, fmt, e, sizeof(e));
    free(owned);
    if (rc < 0) {
        snprintf(err, errlen, "%s: %s", path, e);
        goto bad;
    }
    return l;
bad:
    dp_subst_free(l);
    return NULL;
}

void dp_access_log_free(struct dp_access_log *l)
{
    if (l == NULL)
        return;
    dp_subst_free(l->fmt);
    free(l);
}

struct dp_access_log *dp_access_log_new(const Envoy__Config__Accesslog__V3__AccessLog *al, char *err,
                                        size_t errlen)
{
    if (al->config_type_case != ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG__CONFIG_TYPE_TYPED_CONFIG ||
        al->typed_config == NULL) {
        snprintf(err, errlen, "typed_config: required (an envoy.extensions.access_loggers.file.v3.FileAccessLog)");
        return NULL;
    }
    const Google__Protobuf__Any *any = al->typed_config;
    if (strcmp(any->type_url, "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog") != 0) {
        snprintf(err, errlen, "typed_config: only envoy.access_loggers.file (FileAccessLog) is supported, got %s",
                 any->type_url);
        return NULL;
    }
    Envoy__Extensions__AccessLoggers__File__V3__FileAccessLog *fa =
        envoy__extensions__access_loggers__file__v3__file_access_log__unpack(NULL, any->value.len, any->value.data);
    if (fa == NULL) {
        snprintf(err, errlen, "typed_config: not a valid FileAccessLog");
        return NULL;
    }
    struct dp_access_log *l = calloc(1, sizeof(*l));
    char e[300];
    if (l == NULL)
        abort();
    if (fa->path[0] == '\0') {
        snprintf(err, errlen, "typed_config.path: required");
        goto bad;
    }
    const Envoy__Config__Core__V3__SubstitutionFormatString *sf =
        fa->access_log_format_case ==
                ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_LOG_FORMAT
            ? fa->log_format
            : NULL;
    l->fmt = dp_subst_new(sf, default_format, 0, "typed_config.log_format", err, errlen);
    if (l->fmt == NULL)
        goto bad;
    l->file = file_open(fa->path, e, sizeof(e));
    if (l->file == NULL) {
        snprintf(err, errlen, "typed_config.%s", e);
        goto bad;
    }
    envoy__extensions__access_loggers__file__v3__file_access_log__free_unpacked(fa, NULL);
    return l;
bad:
    envoy__extensions__access_loggers__file__v3__file_access_log__free_unpacked(fa, NULL);
    dp_access_log_free(l);
    return NULL;
}
