/*
 * legate.test.sample: an HTTP filter written from docs/internals/filter-api.md
 * alone, to prove that the page and dataplane/filter.h are enough. It
 * includes filter.h and nothing else of the data plane.
 *
 * Config (typed_config): google.protobuf.StringValue, a label. Per-route
 * config (typed_per_filter_config): another StringValue. Behaviour:
 *   - every response gets "x-sample: cfg=<label>;route=<route label or
 *     none>;body=<request body bytes the filter saw>;trailers=<n>";
 *   - a request with "x-sample-buffer" is held until its whole body is in
 *     (DP_FILTER_STOP_AND_BUFFER); a body containing "forbidden" is then
 *     answered 403, any other goes on (as one chunk) with
 *     "x-sample-held: <bytes>" added to the request head, which waited;
 *   - request trailers get "x-sample-trailer: seen" added.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/filter.h"
#include "google/protobuf/wrappers.pb-c.h"

struct sample_cfg {
    char label[64];
};

struct sample_ctx {
    size_t body;      /* request body bytes seen by the data hook */
    int buffering;
    int trailers;     /* request trailer fields seen */
};

static void *sample_config_new(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    const Google__Protobuf__StringValue *v = (const Google__Protobuf__StringValue *)msg;
    static struct sample_cfg defaults = {"default"};
    if (v == NULL)
        return &defaults;
    if (v->value == NULL || strlen(v->value) >= sizeof(defaults.label)) {
        snprintf(err, errlen, "value: at most %zu characters", sizeof(defaults.label) - 1);
        return NULL;
    }
    struct sample_cfg *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    memcpy(c->label, v->value, strlen(v->value) + 1);
    return c;
}

static void sample_config_free(void *cfg)
{
    if (cfg && strcmp(((struct sample_cfg *)cfg)->label, "default") != 0)
        free(cfg);
}

static enum dp_filter_status sample_request_headers(struct dp_stream *s, const struct dp_filter_call *c,
                                                    int end_stream)
{
    struct sample_ctx *ctx = c->ctx;
    const struct dp_request_head *req = dp_stream_request(s);
    if (!end_stream && dp_headers_get(&req->headers, DP_STR_LIT("x-sample-buffer"))) {
        ctx->buffering = 1;
        return DP_FILTER_STOP_AND_BUFFER;
    }
    return DP_FILTER_CONTINUE;
}

static enum dp_filter_status sample_request_data(struct dp_stream *s, const struct dp_filter_call *c,
                                                 const uint8_t *p, size_t n, int end_stream)
{
    struct sample_ctx *ctx = c->ctx;
    ctx->body += n;
    if (!ctx->buffering)
        return DP_FILTER_CONTINUE;
    if (!end_stream)
        return DP_FILTER_STOP_AND_BUFFER;
    /* The whole body is held: look at it all at once. */
    const struct dp_buf *held = dp_filter_buffered(s, DP_FILTER_REQUEST);
    if (memmem(dp_buf_head(held), dp_buf_size(held), "forbidden", 9)) {
        dp_stream_send_local_reply(s, 403, "text/plain", "sample: forbidden body\n", 23);
        return DP_FILTER_STOP;
    }
    char *v = dp_arena_alloc(dp_stream_arena(s), 24);
    if (v == NULL)
        return DP_FILTER_CONTINUE;
    int k = snprintf(v, 24, "%zu", dp_buf_size(held));
    dp_headers_add_ref(&dp_stream_request(s)->headers, dp_stream_arena(s), DP_STR_LIT("x-sample-held"),
                       (struct dp_str){v, (size_t)k});
    ctx->buffering = 0;
    return DP_FILTER_CONTINUE;
}

static enum dp_filter_status sample_request_trailers(struct dp_stream *s, const struct dp_filter_call *c)
{
    struct sample_ctx *ctx = c->ctx;
    struct dp_headers *t = dp_stream_request_trailers(s);
    ctx->trailers = (int)t->n;
    dp_headers_add_ref(t, dp_stream_arena(s), DP_STR_LIT("x-sample-trailer"), DP_STR_LIT("seen"));
    return DP_FILTER_CONTINUE;
}

static enum dp_filter_status sample_response_headers(struct dp_stream *s, const struct dp_filter_call *c,
                                                     int end_stream)
{
    const struct sample_cfg *cfg = c->cfg;
    const struct sample_cfg *route = c->route_cfg;
    const struct sample_ctx *ctx = c->ctx;
    char *v = dp_arena_alloc(dp_stream_arena(s), 200);
    if (v == NULL)
        return DP_FILTER_CONTINUE;
    int k = snprintf(v, 200, "cfg=%s;route=%s;body=%zu;trailers=%d", cfg->label, route ? route->label : "none",
                     ctx->body, ctx->trailers);
    dp_headers_add_ref(&dp_stream_response(s)->headers, dp_stream_arena(s), DP_STR_LIT("x-sample"),
                       (struct dp_str){v, (size_t)k});
    return DP_FILTER_CONTINUE;
}

const struct dp_filter_ops dp_sample_filter = {
    .name = "legate.test.sample",
    .config_type = &google__protobuf__string_value__descriptor,
    .config_new = sample_config_new,
    .config_free = sample_config_free,
    .route_config_type = &google__protobuf__string_value__descriptor,
    .route_config_new = sample_config_new,
    .route_config_free = sample_config_free,
    .ctx_size = sizeof(struct sample_ctx),
    .on_request_headers = sample_request_headers,
    .on_request_data = sample_request_data,
    .on_request_trailers = sample_request_trailers,
    .on_response_headers = sample_response_headers,
};
