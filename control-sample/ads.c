#include "ads.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "pem.h"
#include "reqlog.h"
#include "watch.h"
#include "xds/convert.h"
#include "xds/hash.h"
#include "xds/log.h"

/* Appends a string literal. */
#define SB_LIT(b, lit) xds_sb_add((b), (lit), sizeof(lit) - 1)

#define ADS_METHOD "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"

/* What a completion-queue tag stands for. */
enum tag_kind {
    TAG_NEW_CALL,
    TAG_META,
    TAG_RECV,
    TAG_SEND,
    TAG_CLOSE,
    TAG_STATUS,
    TAG_SHUTDOWN,
};

struct stream;

struct tag {
    enum tag_kind kind;
    struct stream *s; /* NULL for TAG_NEW_CALL and TAG_SHUTDOWN */
};

/* One type URL's state on one stream. */
struct sub {
    int active;            /* a request for this type has been seen */
    char **names;          /* subscribed names, sorted, unique */
    size_t n_names;
    uint64_t sent_version; /* config version the stream is current with; 0: none */
    uint64_t last_response; /* config version of the last response actually sent */
    uint64_t sent_hash;    /* hash of the resources last sent */
    char nonce[24];        /* nonce of the last response; "" before any */
    char acked[24];        /* version_info of the last ACK of our latest response */
    uint64_t nack_version; /* the version last NACKed; 0: none */
    char *nack_detail;     /* its error_detail message */
    time_t nack_at;
};

/* A response waiting for the stream's one SEND_MESSAGE slot. */
struct qmsg {
    struct qmsg *next;
    grpc_byte_buffer *bb;
    enum cp_type type;
};

struct stream {
    struct stream *prev, *next;
    struct cp_ads *ads;
    grpc_call *call;
    uint64_t id;
    char *peer;
    char *peer_cn;      /* the client certificate's CN (mTLS), else NULL */
    char *node_id;      /* from the first request that has a node */
    char *node_cluster;
    time_t opened;
    struct tag t_meta, t_recv, t_send, t_close, t_status;
    int pending;        /* batches started and not yet completed */
    grpc_byte_buffer *recv_bb;
    grpc_byte_buffer *sending; /* the SEND_MESSAGE in flight */
    struct qmsg *q_head;
    int cancelled;      /* RECV_CLOSE_ON_SERVER's answer */
    unsigned flags;     /* S_F_* */
    grpc_status_code status;
    const char *status_msg;
    uint64_t nonce_seq;
    struct sub subs[CP_NTYPES];
};

#define S_F_RECV_DONE 0x1 /* no more requests will be read */
#define S_F_BROKEN 0x2    /* the call is dead: nothing more can be sent */
#define S_F_STATUS 0x4    /* status sent (or skipped): the stream is ending */

/* The xDS port's certificate, re-read by gRPC's certificate config fetcher,
 * which gRPC calls on its own threads at each new connection. */
struct tls_source {
    pthread_mutex_t lock;
    char *paths[3];  /* cert, key, client CA (NULL: no mTLS) */
    struct cp_watch watch;
    int loaded;      /* a config was handed to gRPC */
};

struct cp_ads {
    grpc_server *server;
    struct tls_source *tls;
    grpc_completion_queue *cq;
    struct cp_config *cfg;
    FILE *reqlog;
    /* The one outstanding grpc_server_request_call. */
    grpc_call *new_call;
    grpc_call_details details;
    grpc_metadata_array md;
    struct tag t_new;
    int new_pending;
    struct tag t_shutdown;
    int shutting_down;
    int shutdown_done;
    struct stream *streams;
    uint64_t next_id;
};

static const char *node_of(const struct stream *s)
{
    return s->node_id ? s->node_id : "";
}

static const char *cluster_of(const struct stream *s)
{
    return s->node_cluster ? s->node_cluster : "";
}

/* ---- batches ------------------------------------------------------------ */

static int start_batch(struct stream *s, const grpc_op *ops, size_t n, struct tag *t)
{
    grpc_call_error e = grpc_call_start_batch(s->call, ops, n, t, NULL);
    if (e != GRPC_CALL_OK) {
        LG_E("control", "stream %" PRIu64 ": grpc_call_start_batch: error %d", s->id, (int)e);
        s->flags |= S_F_BROKEN;
        return -1;
    }
    s->pending++;
    return 0;
}

static void start_recv(struct stream *s)
{
    grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
    op.data.recv_message.recv_message = &s->recv_bb;
    if (start_batch(s, &op, 1, &s->t_recv) < 0)
        s->flags |= S_F_RECV_DONE;
}

static void drop_queue(struct stream *s)
{
    while (s->q_head) {
        struct qmsg *q = s->q_head;
        s->q_head = q->next;
        grpc_byte_buffer_destroy(q->bb);
        free(q);
    }
}

static void pump(struct stream *s)
{
    if (s->sending || s->q_head == NULL || (s->flags & S_F_BROKEN))
        return;
    struct qmsg *q = s->q_head;
    s->q_head = q->next;
    s->sending = q->bb;
    free(q);
    grpc_op op = {.op = GRPC_OP_SEND_MESSAGE};
    op.data.send_message.send_message = s->sending;
    if (start_batch(s, &op, 1, &s->t_send) < 0) {
        grpc_byte_buffer_destroy(s->sending);
        s->sending = NULL;
    }
}

static void free_stream(struct stream *s)
{
    struct cp_ads *a = s->ads;

    LG_I("control", "stream %" PRIu64 " closed (node \"%s\", peer %s)", s->id, node_of(s),
         s->peer ? s->peer : "?");
    if (s->prev)
        s->prev->next = s->next;
    else
        a->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    drop_queue(s);
    if (s->recv_bb)
        grpc_byte_buffer_destroy(s->recv_bb);
    if (s->sending)
        grpc_byte_buffer_destroy(s->sending);
    grpc_call_unref(s->call);
    for (int t = 0; t < CP_NTYPES; t++) {
        for (size_t i = 0; i < s->subs[t].n_names; i++)
            free(s->subs[t].names[i]);
        free(s->subs[t].names);
        free(s->subs[t].nack_detail);
    }
    if (s->peer)
        gpr_free(s->peer);
    free(s->node_id);
    free(s->node_cluster);
    free(s->peer_cn);
    free(s);
}

/* Ends the stream once the client is done (or gone) and every queued
 * response is out; frees it once gRPC holds no batch of it. */
static void maybe_finish(struct stream *s)
{
    if (!(s->flags & S_F_STATUS) && (s->flags & (S_F_RECV_DONE | S_F_BROKEN))) {
        if (s->flags & S_F_BROKEN)
            drop_queue(s);
        if (s->sending == NULL && s->q_head == NULL) {
            s->flags |= S_F_STATUS;
            if (!(s->flags & S_F_BROKEN)) {
                grpc_slice details = grpc_slice_from_static_string(s->status_msg);
                grpc_op op = {.op = GRPC_OP_SEND_STATUS_FROM_SERVER};
                op.data.send_status_from_server.status = s->status;
                op.data.send_status_from_server.status_details = &details;
                start_batch(s, &op, 1, &s->t_status);
            }
        }
    }
    if ((s->flags & S_F_STATUS) && s->pending == 0)
        free_stream(s);
}

/* ---- responses ---------------------------------------------------------- */

/* The resources of type t that s subscribes to, as its node sees them:
 * all of them for wildcard types, else the subscribed names that exist.
 * *sel is malloc'd (NULL when out of memory). */
static size_t select_resources(const struct cp_config *cfg, const struct stream *s,
                               const struct sub *sub, enum cp_type t,
                               const struct cp_resource ***sel)
{
    if (cp_types[t].wildcard)
        return cp_config_select(cfg, node_of(s), cluster_of(s), t, NULL, 0, sel);
    return cp_config_select(cfg, node_of(s), cluster_of(s), t, sub->names, sub->n_names, sel);
}

static uint64_t selection_hash(const struct cp_resource *const *sel, size_t n)
{
    uint64_t h = XDS_FNV_INIT;
    h = xds_fnv(&n, sizeof(n), h);
    for (size_t i = 0; i < n; i++) {
        h = xds_fnv(sel[i]->name, strlen(sel[i]->name) + 1, h);
        h = xds_fnv(&sel[i]->len, sizeof(sel[i]->len), h);
        h = xds_fnv(sel[i]->data, sel[i]->len, h);
    }
    return h;
}

static void enqueue(struct stream *s, enum cp_type t, grpc_byte_buffer *bb)
{
    /* A response not yet handed to gRPC is superseded by a newer one of its
     * type: the client never saw its nonce. Keeps the queue bounded. */
    for (struct qmsg *q = s->q_head; q; q = q->next) {
        if (q->type == t) {
            grpc_byte_buffer_destroy(q->bb);
            q->bb = bb;
            return;
        }
    }
    struct qmsg *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        LG_E("control", "stream %" PRIu64 ": out of memory", s->id);
        grpc_byte_buffer_destroy(bb);
        return;
    }
    q->bb = bb;
    q->type = t;
    struct qmsg **tail = &s->q_head;
    while (*tail)
        tail = &(*tail)->next;
    *tail = q;
    pump(s);
}

static void respond(struct stream *s, enum cp_type t)
{
    const struct cp_config *cfg = s->ads->cfg;
    struct sub *sub = &s->subs[t];
    const struct cp_resource **sel;
    Google__Protobuf__Any *anys = NULL;
    Google__Protobuf__Any **ptrs = NULL;
    char version[24], nonce[24];

    if (s->flags & (S_F_RECV_DONE | S_F_BROKEN | S_F_STATUS))
        return;
    size_t n = select_resources(cfg, s, sub, t, &sel);
    if (sel == NULL || (anys = calloc(n ? n : 1, sizeof(*anys))) == NULL ||
        (ptrs = calloc(n ? n : 1, sizeof(*ptrs))) == NULL) {
        LG_E("control", "stream %" PRIu64 ": out of memory", s->id);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
        any.type_url = (char *)cp_types[t].url;
        any.value.data = sel[i]->data;
        any.value.len = sel[i]->len;
        anys[i] = any;
        ptrs[i] = &anys[i];
    }
    snprintf(version, sizeof(version), "%" PRIu64, cfg->version);
    snprintf(nonce, sizeof(nonce), "%" PRIu64, ++s->nonce_seq);

    Envoy__Service__Discovery__V3__DiscoveryResponse resp =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    resp.version_info = version;
    resp.type_url = (char *)cp_types[t].url;
    resp.nonce = nonce;
    resp.n_resources = n;
    resp.resources = ptrs;

    size_t len = protobuf_c_message_get_packed_size(&resp.base);
    grpc_slice slice = grpc_slice_malloc(len);
    protobuf_c_message_pack(&resp.base, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);

    memcpy(sub->nonce, nonce, sizeof(nonce));
    sub->sent_version = cfg->version;
    sub->last_response = cfg->version;
    sub->sent_hash = selection_hash(sel, n);
    LG_D("control", "stream %" PRIu64 ": sent %s version %s nonce %s resources %zu to node \"%s\"",
         s->id, cp_types[t].short_name, version, nonce, n, node_of(s));
    enqueue(s, t, bb);
done:
    free(ptrs);
    free(anys);
    free(sel);
}

/* ---- requests ----------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Makes names the subscription of sub. Returns 1 if it changed, 0 if not,
 * -1 when out of memory (the old subscription stays). */
static int set_names(struct sub *sub, char *const *names, size_t n)
{
    char **v = calloc(n ? n : 1, sizeof(*v));
    size_t m = 0;

    if (v == NULL)
        return -1;
    if (n)
        memcpy(v, names, n * sizeof(*v));
    qsort(v, n, sizeof(*v), cmp_str);
    for (size_t i = 0; i < n; i++)
        if (m == 0 || strcmp(v[m - 1], v[i]) != 0)
            v[m++] = v[i];
    if (m == sub->n_names) {
        size_t i = 0;
        while (i < m && strcmp(v[i], sub->names[i]) == 0)
            i++;
        if (i == m) {
            free(v);
            return 0;
        }
    }
    for (size_t i = 0; i < m; i++) {
        if ((v[i] = strdup(v[i])) == NULL) {
            while (i > 0)
                free(v[--i]);
            free(v);
            return -1;
        }
    }
    for (size_t i = 0; i < sub->n_names; i++)
        free(sub->names[i]);
    free(sub->names);
    sub->names = v;
    sub->n_names = m;
    return 1;
}

static void handle_request(struct stream *s, const uint8_t *data, size_t len)
{
    struct cp_ads *a = s->ads;
    Envoy__Service__Discovery__V3__DiscoveryRequest *req =
        envoy__service__discovery__v3__discovery_request__unpack(NULL, len, data);

    if (req == NULL) {
        LG_W("control", "stream %" PRIu64 ": not a DiscoveryRequest (%zu bytes), closing", s->id,
             len);
        s->status = GRPC_STATUS_INVALID_ARGUMENT;
        s->status_msg = "not a valid envoy.service.discovery.v3.DiscoveryRequest";
        s->flags |= S_F_RECV_DONE;
        return;
    }
    if (s->node_id == NULL && req->node && req->node->id[0]) {
        s->node_id = strdup(req->node->id);
        s->node_cluster = strdup(req->node->cluster);
        LG_I("control", "stream %" PRIu64 " opened by node \"%s\" (cluster \"%s\", peer %s%s%s)",
             s->id, node_of(s), s->node_cluster ? s->node_cluster : "", s->peer ? s->peer : "?",
             s->peer_cn ? ", client certificate CN=" : "", s->peer_cn ? s->peer_cn : "");
    }
    if (a->reqlog)
        cp_reqlog_write(a->reqlog, node_of(s), req);

    int t = cp_type_from_url(req->type_url);
    if (t < 0) {
        LG_W("control", "stream %" PRIu64 ": node \"%s\" asked for type \"%s\", which is not served",
             s->id, node_of(s), req->type_url);
        goto done;
    }
    struct sub *sub = &s->subs[t];
    int latest = req->response_nonce[0] && strcmp(req->response_nonce, sub->nonce) == 0;

    if (req->error_detail) {
        char v[24] = "?";
        if (latest) {
            snprintf(v, sizeof(v), "%" PRIu64, sub->sent_version);
            free(sub->nack_detail);
            /* Kept for GET /nodes; a data plane's message, so bounded. */
            sub->nack_detail = strndup(req->error_detail->message, 4096);
            sub->nack_version = sub->sent_version;
            sub->nack_at = time(NULL);
        }
        LG_W("control", "NACK from node %s for %s version %s: %s", node_of(s),
             cp_types[t].short_name, v, req->error_detail->message);
        goto done;
    }
    if (latest)
        snprintf(sub->acked, sizeof(sub->acked), "%s", req->version_info);
    /* A nonce on a type never answered here cannot be ours (a client back
     * from another server): treat it as the first request. */
    if (req->response_nonce[0] && !latest && sub->active) {
        LG_D("control", "stream %" PRIu64 ": stale %s request (nonce %s, latest %s) ignored", s->id,
             cp_types[t].short_name, req->response_nonce, sub->nonce);
        goto done;
    }
    int first = !sub->active;
    int changed = set_names(sub, req->resource_names, req->n_resource_names);
    if (changed < 0)
        LG_E("control", "stream %" PRIu64 ": out of memory", s->id);
    sub->active = 1;
    if (first || changed > 0 || sub->sent_version != a->cfg->version)
        respond(s, (enum cp_type)t);
done:
    envoy__service__discovery__v3__discovery_request__free_unpacked(req, NULL);
}

/* ---- events ------------------------------------------------------------- */

static void request_call(struct cp_ads *a)
{
    grpc_call_details_init(&a->details);
    grpc_metadata_array_init(&a->md);
    a->new_call = NULL;
    grpc_call_error e =
        grpc_server_request_call(a->server, &a->new_call, &a->details, &a->md, a->cq, a->cq,
                                 &a->t_new);
    if (e != GRPC_CALL_OK) {
        LG_E("control", "grpc_server_request_call: error %d", (int)e);
        grpc_call_details_destroy(&a->details);
        grpc_metadata_array_destroy(&a->md);
        return;
    }
    a->new_pending = 1;
}

/* The CN of the verified client certificate, or NULL (not mTLS). */
static char *peer_common_name(grpc_call *call)
{
    grpc_auth_context *ctx = grpc_call_auth_context(call);
    char *cn = NULL;
    if (ctx == NULL)
        return NULL;
    grpc_auth_property_iterator it =
        grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_CN_PROPERTY_NAME);
    const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
    if (p && p->value)
        cn = strndup(p->value, p->value_length);
    grpc_auth_context_release(ctx);
    return cn;
}

static void on_new_call(struct cp_ads *a, int ok)
{
    grpc_call *call = a->new_call;
    int ads_method = ok && grpc_slice_str_cmp(a->details.method, ADS_METHOD) == 0;
    char *method = ok && !ads_method ? grpc_slice_to_c_string(a->details.method) : NULL;

    a->new_pending = 0;
    a->new_call = NULL;
    grpc_call_details_destroy(&a->details);
    grpc_metadata_array_destroy(&a->md);
    if (!a->shutting_down)
        request_call(a);
    if (!ok)
        return;

    struct stream *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        LG_E("control", "out of memory: dropping a call");
        grpc_call_cancel(call, NULL);
        grpc_call_unref(call);
        gpr_free(method);
        return;
    }
    s->ads = a;
    s->call = call;
    s->id = ++a->next_id;
    s->peer = grpc_call_get_peer(call);
    s->opened = time(NULL);
    s->peer_cn = peer_common_name(call);
    s->status = GRPC_STATUS_OK;
    s->status_msg = "";
    s->t_meta = (struct tag){TAG_META, s};
    s->t_recv = (struct tag){TAG_RECV, s};
    s->t_send = (struct tag){TAG_SEND, s};
    s->t_close = (struct tag){TAG_CLOSE, s};
    s->t_status = (struct tag){TAG_STATUS, s};
    s->next = a->streams;
    if (a->streams)
        a->streams->prev = s;
    a->streams = s;
    LG_D("control", "stream %" PRIu64 ": call from %s", s->id, s->peer ? s->peer : "?");

    grpc_op op = {.op = GRPC_OP_SEND_INITIAL_METADATA};
    start_batch(s, &op, 1, &s->t_meta);
    op = (grpc_op){.op = GRPC_OP_RECV_CLOSE_ON_SERVER};
    op.data.recv_close_on_server.cancelled = &s->cancelled;
    start_batch(s, &op, 1, &s->t_close);

    if (!ads_method) {
        LG_W("control", "stream %" PRIu64 ": unknown method %s from %s", s->id,
             method ? method : "?", s->peer ? s->peer : "?");
        s->status = GRPC_STATUS_UNIMPLEMENTED;
        s->status_msg = "legate-control serves only StreamAggregatedResources";
        s->flags |= S_F_RECV_DONE;
    } else if (a->shutting_down) {
        grpc_call_cancel(call, NULL);
        s->flags |= S_F_RECV_DONE | S_F_BROKEN;
    } else {
        start_recv(s);
    }
    gpr_free(method);
    maybe_finish(s);
}

static void on_event(struct cp_ads *a, struct tag *t, int ok)
{
    struct stream *s = t->s;

    switch (t->kind) {
    case TAG_NEW_CALL:
        on_new_call(a, ok);
        return;
    case TAG_SHUTDOWN:
        a->shutdown_done = 1;
        return;
    case TAG_META:
        break;
    case TAG_RECV: {
        grpc_byte_buffer *bb = s->recv_bb;
        s->recv_bb = NULL;
        if (!ok || bb == NULL) {
            s->flags |= S_F_RECV_DONE; /* half-closed or gone */
        } else {
            grpc_byte_buffer_reader rd;
            if (grpc_byte_buffer_reader_init(&rd, bb)) {
                grpc_slice sl = grpc_byte_buffer_reader_readall(&rd);
                grpc_byte_buffer_reader_destroy(&rd);
                handle_request(s, GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl));
                grpc_slice_unref(sl);
            } else {
                s->flags |= S_F_RECV_DONE;
            }
            grpc_byte_buffer_destroy(bb);
            if (!(s->flags & (S_F_RECV_DONE | S_F_BROKEN)))
                start_recv(s);
        }
        break;
    }
    case TAG_SEND:
        grpc_byte_buffer_destroy(s->sending);
        s->sending = NULL;
        if (!ok)
            s->flags |= S_F_BROKEN;
        else
            pump(s);
        break;
    case TAG_CLOSE:
        if (s->cancelled)
            s->flags |= S_F_BROKEN;
        break;
    case TAG_STATUS:
        break;
    }
    s->pending--;
    maybe_finish(s);
}

/* ---- the xDS port's certificate ------------------------------------------ */

static void free_pem(char *p, size_t len)
{
    if (p)
        explicit_bzero(p, len);
    free(p);
}

/* Reads and checks the files; a new gRPC config, or NULL with err. */
static grpc_ssl_server_certificate_config *tls_read(const struct tls_source *t, char *err,
                                                    size_t errlen)
{
    static const char *const what[3] = {"--tls-cert", "--tls-key", "--tls-client-ca"};
    char *pem[3] = {NULL, NULL, NULL}, msg[256];
    size_t len[3] = {0, 0, 0};
    grpc_ssl_server_certificate_config *cfg = NULL;

    for (int i = 0; i < 3; i++) {
        if (t->paths[i] && (pem[i] = xds_read_file(t->paths[i], &len[i])) == NULL) {
            snprintf(err, errlen, "%s: %s: %s", what[i], t->paths[i], strerror(errno));
            goto out;
        }
    }
    if (cp_pem_check_certs(pem[0], len[0], msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "--tls-cert: %s: %s", t->paths[0], msg);
        goto out;
    }
    if (pem[2] && cp_pem_check_certs(pem[2], len[2], msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "--tls-client-ca: %s: %s", t->paths[2], msg);
        goto out;
    }
    if (cp_pem_check_key(pem[1], len[1], pem[0], len[0], "--tls-cert", msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "--tls-key: %s: %s", t->paths[1], msg);
        goto out;
    }
    grpc_ssl_pem_key_cert_pair pair = {pem[1], pem[0]};
    cfg = grpc_ssl_server_certificate_config_create(pem[2], &pair, 1);
out:
    for (int i = 0; i < 3; i++)
        free_pem(pem[i], len[i]);
    return cfg;
}

static grpc_ssl_certificate_config_reload_status tls_fetch(void *user_data,
                                                           grpc_ssl_server_certificate_config **config)
{
    struct tls_source *t = user_data;
    grpc_ssl_certificate_config_reload_status rc = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    char err[512];

    pthread_mutex_lock(&t->lock);
    const char *changed = cp_watch_poll(&t->watch);
    if (!t->loaded || changed) {
        grpc_ssl_server_certificate_config *cfg = tls_read(t, err, sizeof(err));
        if (cfg) {
            if (t->loaded)
                LG_I("control", "xDS port: %s changed: new connections get the new certificate",
                     changed);
            *config = cfg;
            t->loaded = 1;
            rc = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
        } else if (t->loaded) {
            LG_E("control", "xDS port: %s changed but does not load, keeping the certificate "
                            "in use: %s", changed, err);
        } else {
            LG_E("control", "xDS port: %s", err);
            rc = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

static void tls_free(struct tls_source *t)
{
    if (t == NULL)
        return;
    pthread_mutex_destroy(&t->lock);
    for (int i = 0; i < 3; i++)
        free(t->paths[i]);
    cp_watch_free(&t->watch);
    free(t);
}

static struct tls_source *tls_new(const struct cp_ads_listen *l)
{
    struct tls_source *t = calloc(1, sizeof(*t));
    const char *src[3] = {l->cert_path, l->key_path, l->client_ca_path};
    size_t n = 0;

    if (t == NULL)
        return NULL;
    pthread_mutex_init(&t->lock, NULL);
    for (int i = 0; i < 3; i++) {
        if (src[i] && (t->paths[n++] = strdup(src[i])) == NULL) {
            tls_free(t);
            return NULL;
        }
    }
    /* cert and key always, the client CA last: paths[0..n) are set. */
    if (cp_watch_set(&t->watch, t->paths, n) < 0) {
        tls_free(t);
        return NULL;
    }
    return t;
}

/* ---- the server --------------------------------------------------------- */

int cp_ads_start(const struct cp_ads_listen *l, struct cp_config *cfg, FILE *reqlog,
                 struct cp_ads **out, char *err, size_t errlen)
{
    const char *listen = l->address;
    struct cp_ads *a = calloc(1, sizeof(*a));

    *out = NULL;
    if (a == NULL) {
        cp_config_free(cfg);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    grpc_init();
    a->cfg = cfg;
    a->reqlog = reqlog;
    a->t_new = (struct tag){TAG_NEW_CALL, NULL};
    a->t_shutdown = (struct tag){TAG_SHUTDOWN, NULL};
    a->cq = grpc_completion_queue_create_for_next(NULL);
    /* No SO_REUSEPORT: a second control plane on the same port must fail
     * to start rather than share the data planes with the first. */
    grpc_arg no_reuse = {.type = GRPC_ARG_INTEGER,
                         .key = (char *)GRPC_ARG_ALLOW_REUSEPORT,
                         .value.integer = 0};
    grpc_channel_args sargs = {.num_args = 1, .args = &no_reuse};
    a->server = grpc_server_create(&sargs, NULL);
    grpc_server_register_completion_queue(a->server, a->cq, NULL);
    grpc_server_credentials *creds;
    if (l->cert_path) {
        /* Like grpc_ssl_server_credentials_create_ex, with the files read
         * through a fetcher so that renewed ones are picked up. */
        if ((a->tls = tls_new(l)) == NULL) {
            snprintf(err, errlen, "out of memory");
            grpc_server_start(a->server);
            cp_ads_stop(a);
            return -1;
        }
        grpc_ssl_server_credentials_options *opts =
            grpc_ssl_server_credentials_create_options_using_config_fetcher(
                l->client_ca_path ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                  : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
                tls_fetch, a->tls);
        creds = grpc_ssl_server_credentials_create_with_options(opts);
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    int port = grpc_server_add_http2_port(a->server, listen, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        snprintf(err, errlen, "--listen %s: cannot bind", listen);
        /* A server that never started still needs the shutdown handshake. */
        grpc_server_start(a->server);
        cp_ads_stop(a);
        return -1;
    }
    grpc_server_start(a->server);
    request_call(a);
    LG_I("control", "serving ADS on %s (%s), version %" PRIu64, listen,
         l->cert_path ? (l->client_ca_path ? "mTLS" : "TLS") : "plaintext", cfg->version);
    *out = a;
    return 0;
}

void cp_ads_poll(struct cp_ads *a, int timeout_ms)
{
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(a->cq, deadline, NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            return;
        on_event(a, ev.tag, ev.success);
        /* Drain what is ready without waiting again. */
        deadline = gpr_time_0(GPR_CLOCK_MONOTONIC);
    }
}

const struct cp_config *cp_ads_config(const struct cp_ads *a)
{
    return a->cfg;
}

void cp_ads_update(struct cp_ads *a, struct cp_config *cfg)
{
    struct cp_config *old = a->cfg;

    a->cfg = cfg;
    for (struct stream *s = a->streams; s; s = s->next) {
        for (int t = 0; t < CP_NTYPES; t++) {
            struct sub *sub = &s->subs[t];
            if (!sub->active || sub->sent_version == cfg->version)
                continue;
            const struct cp_resource **sel;
            size_t n = select_resources(cfg, s, sub, (enum cp_type)t, &sel);
            int same = sel && sub->sent_version != 0 && selection_hash(sel, n) == sub->sent_hash;
            free(sel);
            if (same)
                sub->sent_version = cfg->version;
            else
                respond(s, (enum cp_type)t);
        }
    }
    cp_config_free(old);
}

static void json_time(struct xds_sb *b, time_t t)
{
    struct tm tm;
    char buf[32];
    gmtime_r(&t, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    xds_sb_str(b, buf);
}

void cp_ads_nodes_json(const struct cp_ads *a, struct xds_sb *b)
{
    static const char *const keys[CP_NTYPES] = {
        [CP_LDS] = "listeners", [CP_RDS] = "routes", [CP_CDS] = "clusters",
        [CP_EDS] = "endpoints", [CP_SDS] = "secrets",
    };
    int first = 1;

    SB_LIT(b, "[");
    /* Oldest first: streams are pushed at the head. */
    const struct stream *last = a->streams;
    while (last && last->next)
        last = last->next;
    for (const struct stream *s = last; s; s = s->prev) {
        int any = 0;
        for (int t = 0; t < CP_NTYPES; t++)
            any |= s->subs[t].active;
        /* Ending, or not a data plane yet (no request seen). */
        if ((s->flags & S_F_STATUS) || !any)
            continue;
        if (!first)
            SB_LIT(b, ",");
        first = 0;
        SB_LIT(b, "{\"node_id\":");
        xds_sb_str(b, node_of(s));
        SB_LIT(b, ",\"node_cluster\":");
        xds_sb_str(b, cluster_of(s));
        SB_LIT(b, ",\"peer\":");
        xds_sb_str(b, s->peer ? s->peer : "");
        if (s->peer_cn) {
            SB_LIT(b, ",\"client_certificate_cn\":");
            xds_sb_str(b, s->peer_cn);
        }
        xds_sb_addf(b, ",\"stream\":%" PRIu64 ",\"connected_at\":", s->id);
        json_time(b, s->opened);
        SB_LIT(b, ",\"types\":{");
        int tfirst = 1;
        for (int t = 0; t < CP_NTYPES; t++) {
            const struct sub *sub = &s->subs[t];
            if (!sub->active)
                continue;
            xds_sb_addf(b, "%s\"%s\":{\"type_url\":", tfirst ? "" : ",", keys[t]);
            tfirst = 0;
            xds_sb_str(b, cp_types[t].url);
            if (!cp_types[t].wildcard) {
                SB_LIT(b, ",\"names\":[");
                for (size_t i = 0; i < sub->n_names; i++) {
                    if (i)
                        SB_LIT(b, ",");
                    xds_sb_str(b, sub->names[i]);
                }
                SB_LIT(b, "]");
            }
            xds_sb_addf(b,
                        ",\"current_version\":\"%" PRIu64 "\",\"sent_version\":\"%" PRIu64
                        "\",\"acked_version\":",
                        sub->sent_version, sub->last_response);
            xds_sb_str(b, sub->acked);
            SB_LIT(b, ",\"last_nack\":");
            if (sub->nack_detail) {
                xds_sb_addf(b, "{\"version\":\"%" PRIu64 "\",\"error_detail\":", sub->nack_version);
                xds_sb_str(b, sub->nack_detail);
                SB_LIT(b, ",\"at\":");
                json_time(b, sub->nack_at);
                SB_LIT(b, "}");
            } else {
                SB_LIT(b, "null");
            }
            SB_LIT(b, "}");
        }
        SB_LIT(b, "}}");
    }
    SB_LIT(b, "]");
}

void cp_ads_stop(struct cp_ads *a)
{
    a->shutting_down = 1;
    grpc_server_shutdown_and_notify(a->server, a->cq, &a->t_shutdown);
    grpc_server_cancel_all_calls(a->server);
    gpr_timespec give_up = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                        gpr_time_from_seconds(10, GPR_TIMESPAN));
    while (!a->shutdown_done || a->streams || a->new_pending) {
        if (gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), give_up) > 0) {
            LG_E("control", "shutdown: gRPC still holds calls after 10s");
            break;
        }
        cp_ads_poll(a, 100);
    }
    grpc_server_destroy(a->server);
    grpc_completion_queue_shutdown(a->cq);
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(a->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE)
            on_event(a, ev.tag, ev.success);
    }
    grpc_completion_queue_destroy(a->cq);
    cp_config_free(a->cfg);
    grpc_shutdown();
    /* Only now can no handshake call tls_fetch any more. */
    tls_free(a->tls);
    free(a);
}
