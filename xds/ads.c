#include "ads.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xds/log.h"

#define ADS_METHOD "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
/* The longest the thread sleeps in the completion queue: bounds how long
 * xds_ads_stop waits. */
#define MAX_WAIT 0.1

enum tag_kind { TAG_SEND_MD, TAG_RECV, TAG_SEND, TAG_STATUS };

struct stream;

struct tag {
    enum tag_kind kind;
    struct stream *s;
};

struct sendq {
    struct sendq *next;
    grpc_byte_buffer *bb;
};

struct stream {
    grpc_call *call;
    struct tag t_send_md, t_recv, t_send, t_status;
    int pending;                 /* batches not completed yet */
    int ended;                   /* status received or cancelled */
    int got_response;
    grpc_metadata_array md;
    grpc_metadata_array trailing;
    grpc_byte_buffer *recv_bb;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
    struct sendq *q_head, *q_tail;
    int sending;
};

struct xds_ads {
    struct xds_ads_config cfg;
    char *target, *authority, *root_pem, *cert_pem, *key_pem, *sni;
    const struct xds_ads_ops *ops;
    void *ud;
    pthread_t thread;
    int stop; /* atomic */
    grpc_completion_queue *cq;
    grpc_channel *channel;
    struct stream *cur;          /* the live stream, or NULL */
    struct stream *dying;        /* cancelled, waiting for its batches */
    double reconnect_at;         /* when cur == NULL */
    unsigned attempt;
    unsigned rand_state;
};

double xds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Jittered exponential backoff: the n-th wait is uniform in [d/2, d] with
 * d = min(base * 2^n, max). */
static double backoff(struct xds_ads *a)
{
    double d = a->cfg.backoff_base;
    for (unsigned i = 0; i < a->attempt && d < a->cfg.backoff_max; i++)
        d *= 2;
    if (d > a->cfg.backoff_max)
        d = a->cfg.backoff_max;
    a->attempt++;
    a->rand_state = a->rand_state * 1103515245u + 12345u;
    double r = (double)((a->rand_state >> 8) & 0xffff) / 65535.0;
    return d / 2 + r * d / 2;
}

static grpc_channel *make_channel(struct xds_ads *a)
{
    grpc_channel_credentials *creds;
    if (a->root_pem) {
        grpc_ssl_pem_key_cert_pair pair = {a->key_pem, a->cert_pem};
        creds = grpc_ssl_credentials_create(a->root_pem, a->cert_pem ? &pair : NULL, NULL, NULL);
    } else {
        creds = grpc_insecure_credentials_create();
    }
    grpc_arg args[3];
    size_t n = 0;
    if (a->sni) {
        args[n].type = GRPC_ARG_STRING;
        args[n].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        args[n].value.string = a->sni;
        n++;
    }
    if (a->authority) {
        args[n].type = GRPC_ARG_STRING;
        args[n].key = (char *)GRPC_ARG_DEFAULT_AUTHORITY;
        args[n].value.string = a->authority;
        n++;
    }
    /* Reconnection is ours (with our backoff); keep gRPC's short. */
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[n].value.integer = 1000;
    n++;
    grpc_channel_args ca = {n, args};
    grpc_channel *ch = grpc_channel_create(a->target, creds, &ca);
    grpc_channel_credentials_release(creds);
    return ch;
}

static int start_batch(struct stream *s, const grpc_op *ops, size_t n, struct tag *t)
{
    grpc_call_error e = grpc_call_start_batch(s->call, ops, n, t, NULL);
    if (e != GRPC_CALL_OK) {
        LG_E("xds", "grpc_call_start_batch: error %d", (int)e);
        return -1;
    }
    s->pending++;
    return 0;
}

static int post_recv(struct stream *s)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->recv_bb;
    return start_batch(s, &op, 1, &s->t_recv);
}

static void post_send(struct stream *s)
{
    if (s->sending || s->q_head == NULL || s->ended)
        return;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = s->q_head->bb;
    if (start_batch(s, &op, 1, &s->t_send) == 0)
        s->sending = 1;
}

static void stream_free(struct stream *s)
{
    while (s->q_head) {
        struct sendq *q = s->q_head;
        s->q_head = q->next;
        grpc_byte_buffer_destroy(q->bb);
        free(q);
    }
    if (s->recv_bb)
        grpc_byte_buffer_destroy(s->recv_bb);
    grpc_metadata_array_destroy(&s->md);
    grpc_metadata_array_destroy(&s->trailing);
    grpc_slice_unref(s->details);
    if (s->error_string)
        gpr_free((void *)s->error_string);
    if (s->call)
        grpc_call_unref(s->call);
    free(s);
}

static int open_stream(struct xds_ads *a)
{
    struct stream *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -1;
    s->t_send_md = (struct tag){TAG_SEND_MD, s};
    s->t_recv = (struct tag){TAG_RECV, s};
    s->t_send = (struct tag){TAG_SEND, s};
    s->t_status = (struct tag){TAG_STATUS, s};
    grpc_metadata_array_init(&s->md);
    grpc_metadata_array_init(&s->trailing);
    s->details = grpc_empty_slice();
    grpc_slice method = grpc_slice_from_static_string(ADS_METHOD);
    s->call = grpc_channel_create_call(a->channel, NULL, GRPC_PROPAGATE_DEFAULTS, a->cq, method, NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (s->call == NULL) {
        stream_free(s);
        return -1;
    }
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = 0;
    if (start_batch(s, ops, 1, &s->t_send_md) < 0)
        goto bad;
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &s->trailing;
    ops[0].data.recv_status_on_client.status = &s->status;
    ops[0].data.recv_status_on_client.status_details = &s->details;
    ops[0].data.recv_status_on_client.error_string = &s->error_string;
    if (start_batch(s, ops, 1, &s->t_status) < 0)
        goto bad;
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[0].data.recv_initial_metadata.recv_initial_metadata = &s->md;
    ops[1].op = GRPC_OP_RECV_MESSAGE;
    ops[1].data.recv_message.recv_message = &s->recv_bb;
    if (start_batch(s, ops, 2, &s->t_recv) < 0)
        goto bad;
    a->cur = s;
    LG_D("xds", "ADS stream to %s opening", a->target);
    a->ops->stream_up(a->ud, a);
    return 0;
bad:
    grpc_call_cancel(s->call, NULL);
    s->ended = 1;
    a->dying = s; /* freed when its batches complete */
    return -1;
}

int xds_ads_send(struct xds_ads *a, const Envoy__Service__Discovery__V3__DiscoveryRequest *req)
{
    struct stream *s = a->cur;
    if (s == NULL || s->ended)
        return -1;
    size_t len = envoy__service__discovery__v3__discovery_request__get_packed_size(req);
    grpc_slice sl = grpc_slice_malloc(len);
    envoy__service__discovery__v3__discovery_request__pack(req, GRPC_SLICE_START_PTR(sl));
    struct sendq *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        grpc_slice_unref(sl);
        return -1;
    }
    q->bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    if (s->q_tail)
        s->q_tail->next = q;
    else
        s->q_head = q;
    s->q_tail = q;
    post_send(s);
    return 0;
}

/* The stream is over (status, or a failure of ours): cancel what is left
 * and schedule the next attempt. */
static void stream_over(struct xds_ads *a, struct stream *s, const char *why)
{
    if (a->cur != s)
        return;
    a->cur = NULL;
    if (!s->ended) {
        s->ended = 1;
        grpc_call_cancel(s->call, NULL);
    }
    if (s->got_response)
        a->attempt = 0;
    double wait = backoff(a);
    a->reconnect_at = xds_now() + wait;
    LG_W("xds", "ADS stream to %s closed: %s; reconnecting in %.1f s", a->target, why, wait);
    a->ops->stream_down(a->ud, a, why);
    if (s->pending == 0)
        stream_free(s);
    else
        a->dying = s;
}

static void on_event(struct xds_ads *a, struct tag *t, int ok)
{
    struct stream *s = t->s;
    s->pending--;
    switch (t->kind) {
    case TAG_SEND_MD:
        break;
    case TAG_SEND: {
        s->sending = 0;
        struct sendq *q = s->q_head;
        if (q) {
            s->q_head = q->next;
            if (s->q_head == NULL)
                s->q_tail = NULL;
            grpc_byte_buffer_destroy(q->bb);
            free(q);
        }
        if (ok)
            post_send(s);
        break;
    }
    case TAG_RECV:
        if (!ok || s->recv_bb == NULL || s->ended) {
            if (s->recv_bb) {
                grpc_byte_buffer_destroy(s->recv_bb);
                s->recv_bb = NULL;
            }
            break; /* the status follows */
        } else {
            grpc_byte_buffer_reader rd;
            Envoy__Service__Discovery__V3__DiscoveryResponse *r = NULL;
            if (grpc_byte_buffer_reader_init(&rd, s->recv_bb)) {
                grpc_slice sl = grpc_byte_buffer_reader_readall(&rd);
                r = envoy__service__discovery__v3__discovery_response__unpack(
                    NULL, GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl));
                grpc_slice_unref(sl);
                grpc_byte_buffer_reader_destroy(&rd);
            }
            grpc_byte_buffer_destroy(s->recv_bb);
            s->recv_bb = NULL;
            if (r == NULL) {
                LG_E("xds", "ADS: a DiscoveryResponse that does not decode; closing the stream");
                stream_over(a, s, "undecodable DiscoveryResponse");
                break;
            }
            if (!s->got_response)
                LG_I("xds", "ADS stream to %s connected", a->target);
            s->got_response = 1;
            a->attempt = 0;
            a->ops->response(a->ud, a, r);
            envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);
            if (a->cur == s && post_recv(s) < 0)
                stream_over(a, s, "cannot read");
        }
        break;
    case TAG_STATUS: {
        char why[512];
        char *details = grpc_slice_to_c_string(s->details);
        snprintf(why, sizeof(why), "gRPC status %d%s%s", (int)s->status, details[0] ? ": " : "",
                 details);
        gpr_free(details);
        s->ended = 1;
        stream_over(a, s, why);
        break;
    }
    }
    if (a->dying == s && s->pending == 0) {
        a->dying = NULL;
        stream_free(s);
    }
}

static void *ads_thread(void *arg)
{
    struct xds_ads *a = arg;
    a->reconnect_at = 0;
    for (;;) {
        if (__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE))
            break;
        double now = xds_now();
        if (a->cur == NULL && a->dying == NULL && now >= a->reconnect_at) {
            if (open_stream(a) < 0) {
                a->reconnect_at = now + backoff(a);
            }
        }
        double wait = a->ops->tick(a->ud, a);
        if (wait > MAX_WAIT || wait <= 0)
            wait = MAX_WAIT;
        if (a->cur == NULL && a->reconnect_at - now < wait && a->reconnect_at > now)
            wait = a->reconnect_at - now;
        gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                       gpr_time_from_millis((int64_t)(wait * 1000) + 1, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(a->cq, dl, NULL);
        if (ev.type == GRPC_OP_COMPLETE)
            on_event(a, ev.tag, ev.success);
        else if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
    }
    /* Cancel the live stream, let every batch complete, then tear down. */
    if (a->cur) {
        struct stream *s = a->cur;
        a->cur = NULL;
        s->ended = 1;
        grpc_call_cancel(s->call, NULL);
        if (a->dying == NULL)
            a->dying = s;
        else if (s->pending == 0)
            stream_free(s);
    }
    while (a->dying) {
        grpc_event ev = grpc_completion_queue_next(
            a->cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_seconds(5, GPR_TIMESPAN)),
            NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        struct tag *t = ev.tag;
        t->s->pending--;
        if (t->s->pending == 0 && t->s == a->dying) {
            a->dying = NULL;
            stream_free(t->s);
        }
    }
    return NULL;
}

struct xds_ads *xds_ads_start(const struct xds_ads_config *cfg, const struct xds_ads_ops *ops,
                              void *ud)
{
    struct xds_ads *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->cfg = *cfg;
    if (a->cfg.backoff_base <= 0)
        a->cfg.backoff_base = 0.5;
    if (a->cfg.backoff_max < a->cfg.backoff_base)
        a->cfg.backoff_max = a->cfg.backoff_base > 30 ? a->cfg.backoff_base : 30;
    a->target = dup_or_null(cfg->target);
    a->authority = dup_or_null(cfg->authority);
    a->root_pem = dup_or_null(cfg->root_pem);
    a->cert_pem = dup_or_null(cfg->cert_pem);
    a->key_pem = dup_or_null(cfg->key_pem);
    a->sni = dup_or_null(cfg->sni);
    a->ops = ops;
    a->ud = ud;
    a->rand_state = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)a;
    grpc_init();
    a->cq = grpc_completion_queue_create_for_next(NULL);
    a->channel = make_channel(a);
    if (a->channel == NULL || pthread_create(&a->thread, NULL, ads_thread, a) != 0) {
        if (a->channel)
            grpc_channel_destroy(a->channel);
        grpc_completion_queue_shutdown(a->cq);
        grpc_completion_queue_destroy(a->cq);
        grpc_shutdown();
        free(a->target);
        free(a);
        return NULL;
    }
    return a;
}

void xds_ads_stop(struct xds_ads *a)
{
    if (a == NULL)
        return;
    __atomic_store_n(&a->stop, 1, __ATOMIC_RELEASE);
    pthread_join(a->thread, NULL);
    grpc_channel_destroy(a->channel);
    grpc_completion_queue_shutdown(a->cq);
    while (grpc_completion_queue_next(a->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(a->cq);
    grpc_shutdown();
    free(a->target);
    free(a->authority);
    free(a->root_pem);
    free(a->cert_pem);
    if (a->key_pem) {
        memset(a->key_pem, 0, strlen(a->key_pem));
        free(a->key_pem);
    }
    free(a->sni);
    free(a);
}
