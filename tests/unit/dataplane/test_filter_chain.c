/* The HTTP filter chain runner (dataplane/filter_chain.c) against the
 * contract of dataplane/filter.h and docs/internals/filter-api.md: order in
 * both directions, CONTINUE, STOP, STOP_ITERATION resumed by
 * dp_filter_continue, STOP_AND_BUFFER and its overflow answers, trailers,
 * and the per-route config each hook gets beside its own.
 *
 * No network: the stream is a zeroed struct dp_stream with a connection
 * manager config of three recording filters and the router marker. What
 * the runner hands on (to the upstream, to the client) and the flow control
 * it asks for are caught by linking with --wrap (see CMakeLists.txt), which
 * keeps the real stream.c's dp_stream_filter_call, where per-route config is
 * chosen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/route.h"
#include "dataplane/stream.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "xds/convert.h"

/* ---- a log of what happened, in order ------------------------------------------ */

static char trace[4096];

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
    size_t n = strlen(trace);
    if (n)
        trace[n++] = ' ';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(trace + n, sizeof(trace) - n, fmt, ap);
    va_end(ap);
}

/* ---- what the runner calls outside itself (linked with --wrap) --------------------- */

void __wrap_dp_stream_terminal(struct dp_stream *s, int end_stream);
void __wrap_dp_stream_forward_request_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream);
void __wrap_dp_stream_forward_request_trailers(struct dp_stream *s);
void __wrap_dp_stream_forward_response_headers(struct dp_stream *s, int end_stream);
void __wrap_dp_stream_forward_response_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream);
void __wrap_dp_stream_forward_response_trailers(struct dp_stream *s);
void __wrap_dp_stream_send_local_reply(struct dp_stream *s, int status, const char *content_type,
                                       const char *body, size_t body_len);
void __wrap_dp_hcm_reset_stream(struct dp_stream *s);
void __wrap_dp_hcm_pause_request(struct dp_stream *s);
void __wrap_dp_hcm_resume_request(struct dp_stream *s);
void __wrap_dp_stream_downstream_drained(struct dp_stream *s);
void __wrap_dp_upstream_pause(struct dp_upstream_req *u);

void __wrap_dp_stream_terminal(struct dp_stream *s, int end_stream)
{
    logf_("UP:head%s", end_stream ? "$" : "");
}

void __wrap_dp_stream_forward_request_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream)
{
    logf_("UP:%.*s%s", (int)n, (const char *)p, end_stream ? "$" : "");
}

void __wrap_dp_stream_forward_request_trailers(struct dp_stream *s)
{
    logf_("UP:trailers");
}

void __wrap_dp_stream_forward_response_headers(struct dp_stream *s, int end_stream)
{
    logf_("DOWN:head%s", end_stream ? "$" : "");
}

void __wrap_dp_stream_forward_response_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream)
{
    logf_("DOWN:%.*s%s", (int)n, (const char *)p, end_stream ? "$" : "");
}

void __wrap_dp_stream_forward_response_trailers(struct dp_stream *s)
{
    logf_("DOWN:trailers");
}

/* As the real one does for the runner: the stream is answered. (The real
 * one also runs the response filters of the local reply.) */
void __wrap_dp_stream_send_local_reply(struct dp_stream *s, int status, const char *content_type,
                                       const char *body, size_t body_len)
{
    logf_("REPLY:%d", status);
    s->flags |= DP_STREAM_F_LOCAL_REPLY;
}

void __wrap_dp_hcm_reset_stream(struct dp_stream *s)
{
    logf_("RESET");
    s->flags |= DP_STREAM_F_RESET | DP_STREAM_F_DONE;
}

void __wrap_dp_hcm_pause_request(struct dp_stream *s)
{
    logf_("PAUSE-CLIENT");
}

void __wrap_dp_hcm_resume_request(struct dp_stream *s)
{
    logf_("RESUME-CLIENT");
}

void __wrap_dp_stream_downstream_drained(struct dp_stream *s)
{
    logf_("RESUME-UPSTREAM");
}

void __wrap_dp_upstream_pause(struct dp_upstream_req *u)
{
    logf_("PAUSE-UPSTREAM");
}

/* ---- recording filters ---------------------------------------------------------- */

enum hook { H_REQ_HEAD, H_REQ_DATA, H_REQ_TRAILERS, H_RESP_HEAD, H_RESP_DATA, H_RESP_TRAILERS, N_HOOKS };

/* A filter's config: its index and what each hook returns (a script of
 * statuses, one per call; the fourth is repeated after). */
struct fcfg {
    int idx;
    enum dp_filter_status script[N_HOOKS][4];
    int calls[N_HOOKS];
    int reply; /* with DP_FILTER_STOP: the local reply's status */
    int continue_in_data; /* the request data hook calls dp_filter_continue and returns CONTINUE */
    const void *seen_cfg;       /* what the last request head hook got */
    const void *seen_route_cfg;
    char seen_buffered[256];    /* dp_filter_buffered in the last data hook */
};

static enum dp_filter_status step(struct dp_stream *s, const struct dp_filter_call *c, enum hook h)
{
    struct fcfg *f = (struct fcfg *)c->cfg;
    int k = f->calls[h] < 3 ? f->calls[h] : 3;
    enum dp_filter_status st = f->script[h][k]; /* unset entries: CONTINUE */
    f->calls[h]++;
    if (st == DP_FILTER_STOP)
        __wrap_dp_stream_send_local_reply(s, f->reply ? f->reply : 403, "text/plain", "no\n", 3);
    return st;
}

static enum dp_filter_status req_head(struct dp_stream *s, const struct dp_filter_call *c, int end)
{
    struct fcfg *f = (struct fcfg *)c->cfg;
    f->seen_cfg = c->cfg;
    f->seen_route_cfg = c->route_cfg;
    logf_("qh%d%s", f->idx, end ? "$" : "");
    return step(s, c, H_REQ_HEAD);
}

static void note_data(struct dp_stream *s, struct fcfg *f, enum dp_filter_dir dir, const char *tag,
                      const uint8_t *p, size_t n, int end)
{
    const struct dp_buf *b = dp_filter_buffered(s, dir);
    snprintf(f->seen_buffered, sizeof(f->seen_buffered), "%.*s", (int)dp_buf_size(b),
             (const char *)dp_buf_head(b));
    logf_("%s%d:%.*s%s", tag, f->idx, (int)n, (const char *)p, end ? "$" : "");
}

static enum dp_filter_status req_data(struct dp_stream *s, const struct dp_filter_call *c, const uint8_t *p,
                                      size_t n, int end)
{
    struct fcfg *f = (struct fcfg *)c->cfg;
    note_data(s, f, DP_FILTER_REQUEST, "qd", p, n, end);
    if (f->continue_in_data && end) {
        f->calls[H_REQ_DATA]++;
        dp_filter_continue(s, DP_FILTER_REQUEST);
        return DP_FILTER_CONTINUE;
    }
    return step(s, c, H_REQ_DATA);
}

static enum dp_filter_status req_trailers(struct dp_stream *s, const struct dp_filter_call *c)
{
    logf_("qt%d", ((struct fcfg *)c->cfg)->idx);
    return step(s, c, H_REQ_TRAILERS);
}

static enum dp_filter_status resp_head(struct dp_stream *s, const struct dp_filter_call *c, int end)
{
    logf_("rh%d%s", ((struct fcfg *)c->cfg)->idx, end ? "$" : "");
    return step(s, c, H_RESP_HEAD);
}

static enum dp_filter_status resp_data(struct dp_stream *s, const struct dp_filter_call *c, const uint8_t *p,
                                       size_t n, int end)
{
    note_data(s, (struct fcfg *)c->cfg, DP_FILTER_RESPONSE, "rd", p, n, end);
    return step(s, c, H_RESP_DATA);
}

static enum dp_filter_status resp_trailers(struct dp_stream *s, const struct dp_filter_call *c)
{
    logf_("rt%d", ((struct fcfg *)c->cfg)->idx);
    return step(s, c, H_RESP_TRAILERS);
}

static void *route_cfg_new(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    const Envoy__Config__Core__V3__DataSource *ds = (const Envoy__Config__Core__V3__DataSource *)msg;
    return strdup(ds->inline_string ? ds->inline_string : "");
}

static const struct dp_filter_ops rec_ops = {
    .name = "test.recorder",
    .route_config_type = &envoy__config__core__v3__data_source__descriptor,
    .route_config_new = route_cfg_new,
    .route_config_free = free,
    .on_request_headers = req_head,
    .on_request_data = req_data,
    .on_request_trailers = req_trailers,
    .on_response_headers = resp_head,
    .on_response_data = resp_data,
    .on_response_trailers = resp_trailers,
};

/* The same without data hooks: a STOP_AND_BUFFER from its head hook waits
 * for the whole body. */
static const struct dp_filter_ops head_only_ops = {
    .name = "test.head_only",
    .on_request_headers = req_head,
    .on_response_headers = resp_head,
};

static const struct dp_filter_ops router_ops = {.name = "envoy.filters.http.router", .terminal = 1};

/* ---- a stream ---------------------------------------------------------------------- */

#define N_REC 3

struct fixture {
    struct fcfg f[N_REC];
    struct dp_http_filter filters[N_REC + 1];
    struct dp_hcm_cfg cfg;
    struct dp_listener listener;
    struct dp_hcm hcm;
    void *ctx[N_REC + 1];
    struct dp_stream s;
};

static struct fixture *fx_new(uint32_t buffer_limit)
{
    struct fixture *x = calloc(1, sizeof(*x));
    assert_non_null(x);
    static char *names[N_REC] = {"test.f0", "test.f1", "test.f2"};
    for (int i = 0; i < N_REC; i++) {
        x->f[i].idx = i;
        x->filters[i] = (struct dp_http_filter){.ops = &rec_ops, .name = names[i], .cfg = &x->f[i]};
    }
    x->filters[N_REC] = (struct dp_http_filter){.ops = &router_ops, .name = "envoy.filters.http.router"};
    x->cfg.filters = x->filters;
    x->cfg.n_filters = N_REC + 1;
    x->listener.per_connection_buffer_limit = buffer_limit;
    x->hcm.listener = &x->listener;
    x->s.hcm = &x->hcm;
    x->s.cfg = &x->cfg;
    x->s.filter_ctx = x->ctx;
    trace[0] = '\0';
    return x;
}

static void fx_free(struct fixture *x)
{
    dp_fc_free(&x->s);
    free(x);
}

#define SEND_REQ(x, str, end) dp_fc_request_data(&(x)->s, (const uint8_t *)(str), strlen(str), (end))
#define SEND_RESP(x, str, end) dp_fc_response_data(&(x)->s, (const uint8_t *)(str), strlen(str), (end))

/* ---- order and CONTINUE --------------------------------------------------------- */

static void test_order_both_directions(void **state)
{
    struct fixture *x = fx_new(1 << 20);
    dp_fc_request_headers(&x->s, 0);
    SEND_REQ(x, "ab", 0);
    SEND_REQ(x, "c", 1);
    assert_string_equal(trace, "qh0 qh1 qh2 UP:head qd0:ab qd1:ab qd2:ab UP:ab qd0:c$ qd1:c$ qd2:c$ UP:c$");
    /* Every request head hook ran, the router marker included. */
    assert_int_equal(x->s.filters_started, N_REC + 1);

    trace[0] = '\0';
    dp_fc_response_headers(&x->s, 0);
    SEND_RESP(x, "xy", 0);
    dp_fc_response_trailers(&x->s);
    assert_string_equal(trace, "rh2 rh1 rh0 DOWN:head rd2:xy rd1:xy rd0:xy DOWN:xy rt2 rt1 rt0 DOWN:trailers");
    fx_free(x);
}

static void test_request_trailers_forward(void **state)
{
    struct fixture *x = fx_new(1 << 20);
    dp_fc_request_headers(&x->s, 0);
    SEND_REQ(x, "b", 0);
    dp_fc_request_trailers(&x->s);
    assert_string_equal(trace, "qh0 qh1 qh2 UP:head qd0:b qd1:b qd2:b UP:b qt0 qt1 qt2 UP:trailers");
    fx_free(x);
}

static void test_head_only_end_stream(void **state)
{
    struct fixture *x = fx_new(1 << 20);
    dp_fc_request_headers(&x->s, 1);
    dp_fc_response_headers(&x->s, 1);
    assert_string_equal(trace, "qh0$ qh1$ qh2$ UP:head$ rh2$ rh1$ rh0$ DOWN:head$");
    fx_free(x);
}

/* ---- STOP ------------------------------------------------------------------------ */

static void test_stop_local_reply(void **state)
{
    struct fixture *x = fx_new(1 << 20);
    x->f[1].script[H_REQ_HEAD][0] = DP_FILTER_STOP;
    x->f[1].reply = 401;
    dp_fc_request_headers(&x->s, 0);
    /* Nothing after it: not f2, not the upstream. (Body that arrives later
     * is dropped by stream.c before the runner.) */
    assert_string_equal(trace, "qh0 qh1 REPLY:401");
    trace[0] = '\0';
    /* The response (the local reply's) runs back through the filters whose
     * request head hook ran: f1 and f0, not f2. */
    dp_fc_response_headers(&x->s, 1);
    assert_string_equal(trace, "rh1$ rh0$ DOWN:head$");
    fx_free(x);
}

static void test_stop_in_response(void **state)
{
    struct fixture *x = fx_new(1 << 20);
    dp_fc_request_headers(&x->s, 0);
    trace[0] = '\0';
    x->f[1].script[H_RESP_HEAD][0] = DP_FILTER_STOP;
    x->f[1].reply = 502;
    dp_fc_response_headers(&x->s, 0);
    /* Reverse order up to f1, which answered: f0 and the client get nothing. */
    assert_string_equal(trace, "rh2 rh1 REPLY:502");
    fx_free(x);
}

/* ---- STOP_ITERATION and dp_filter_continue ---------------------------------------- */

static void test_stop_iteration_then_continue(void **state)
{
    struct fixture *x = fx_new(1 << 20);
    x->f[1].script[H_REQ_HEAD][0] = DP_FILTER_STOP_ITERATION;
    dp_fc_request_headers(&x->s, 0);
    assert_string_equal(trace, "qh0 qh1");
    assert_true(dp_fc_active(&x->s, DP_FILTER_REQUEST));

    /* Body meanwhile: through the filters before f1, then held; f1's data
     * hook is not called for it. */
    trace[0] = '\0';
    SEND_REQ(x, "ab", 0);
    SEND_REQ(x, "cd", 1);
    assert_string_equal(trace, "qd0:ab qd0:cd$");
    assert_int_equal(dp_buf_size(dp_filter_buffered(&x->s, DP_FILTER_REQUEST)), 4);

    /* Resumed at the next filter: the head, then the held body as one chunk. */
    trace[0] = '\0';
    dp_filter_continue(&x->s, DP_FILTER_REQUEST);
    assert_string_equal(trace, "qh2 UP:head qd2:abcd$ UP:abcd$");
    assert_int_equal(dp_buf_size(dp_filter_buffered(&x->s, DP_FILTER_REQUEST)), 0);
    assert_int_equal(x->f[1].calls[H_REQ_DATA], 0);
    fx_free(x);
}

static void test_stop_iteration_holds_trailers(void **state)
{
    struct fixture *x = fx_new(1 << 20);
    x->f[0].script[H_REQ_HEAD][0] = DP_FILTER_STOP_ITERATION;
    dp_fc_request_headers(&x->s, 0);
    SEND_REQ(x, "b", 0);
    dp_fc_request_trailers(&x->s);
    assert_string_equal(trace, "qh0");
    trace[0] = '\0';
    dp_filter_continue(&x->s, DP_FILTER_REQUEST);
    assert_string_equal(trace, "qh1 qh2 UP:head qd1:b qd2:b UP:b qt1 qt2 UP:trailers");
    fx_free(x);
}

static void test_stop_iteration_in_data(void **state)
{
    struct fixture *x = fx_new(1 << 20);
    x->f[1].script[H_REQ_DATA][0] = DP_FILTER_STOP_ITERATION;
    dp_fc_request_headers(&x->s, 0);
    trace[0] = '\0';
    SEND_REQ(x, "ab", 0);
    SEND_REQ(x, "cd", 1);
    /* f1 stopped on the first chunk: it is held there with the second. */
    assert_string_equal(trace, "qd0:ab qd1:ab qd0:cd$");
    trace[0] = '\0';
    dp_filter_continue(&x->s, DP_FILTER_REQUEST);
    assert_string_equal(trace, "qd2:abcd$ UP:abcd$");
    fx_free(x);
}

static void test_stop_iteration_over_limit_pauses(void **state)
{
    struct fixture *x = fx_new(4);
    x->f[1].script[H_REQ_HEAD][0] = DP_FILTER_STOP_ITERATION;
    dp_fc_request_headers(&x->s, 0);
    trace[0] = '\0';
    SEND_REQ(x, "abcdef", 0);
    /* Past the limit, the sender is slowed down, not refused. */
    assert_string_equal(trace, "qd0:abcdef PAUSE-CLIENT");
    trace[0] = '\0';
    dp_filter_continue(&x->s, DP_FILTER_REQUEST);
    assert_string_equal(trace, "qh2 UP:head RESUME-CLIENT qd2:abcdef UP:abcdef");
    fx_free(x);
}

static void test_continue_on_a_running_direction(void **state)
{
    struct fixture *x = fx_new(1 << 20);
    dp_fc_request_headers(&x->s, 0);
    trace[0] = '\0';
    dp_filter_continue(&x->s, DP_FILTER_REQUEST); /* nothing stopped: nothing happens */
    dp_filter_continue(&x->s, (enum dp_filter_dir)7);
    assert_string_equal(trace, "");
    fx_free(x);
}

static void test_response_stop_iteration(void **state)
{
    struct fixture *x = fx_new(1 << 20);
    dp_fc_request_headers(&x->s, 1);
    x->f[1].script[H_RESP_HEAD][0] = DP_FILTER_STOP_ITERATION;
    trace[0] = '\0';
    dp_fc_response_headers(&x->s, 0);
    SEND_RESP(x, "xy", 1);
    /* Reverse order: f2 ran, f1 stopped, the body runs through f2 only. */
    assert_string_equal(trace, "rh2 rh1 rd2:xy$");
    trace[0] = '\0';
    dp_filter_continue(&x->s, DP_FILTER_RESPONSE);
    assert_string_equal(trace, "rh0 DOWN:head rd0:xy$ DOWN:xy$");
    fx_free(x);
}

/* ---- STOP_AND_BUFFER ---------------------------------------------------------------- */

static void test_stop_and_buffer(void **state)
{
    struct fixture *x = fx_new(1 << 20);
    x->f[1].script[H_REQ_HEAD][0] = DP_FILTER_STOP_AND_BUFFER;
    x->f[1].script[H_REQ_DATA][0] = DP_FILTER_STOP_AND_BUFFER;
    x->f[1].script[H_REQ_DATA][1] = DP_FILTER_CONTINUE;
    dp_fc_request_headers(&x->s, 0);
    SEND_REQ(x, "ab", 0);
    assert_string_equal(x->f[1].seen_buffered, "ab"); /* this chunk included */
    SEND_REQ(x, "cd", 1);
    assert_string_equal(x->f[1].seen_buffered, "abcd");
    /* f1's data hook saw each chunk; on its CONTINUE the rest got the head
     * and then the whole body as one chunk. */
    assert_string_equal(trace, "qh0 qh1 qd0:ab qd1:ab qd0:cd$ qd1:cd$ qh2 UP:head qd2:abcd$ UP:abcd$");
    fx_free(x);
}

static void test_stop_and_buffer_continue_from_data_hook(void **state)
{
    struct fixture *x = fx_new(1 << 20);
    x->f[0].script[H_REQ_HEAD][0] = DP_FILTER_STOP_AND_BUFFER;
    x->f[0].script[H_REQ_DATA][0] = DP_FILTER_STOP_AND_BUFFER;
    x->f[0].continue_in_data = 1;
    dp_fc_request_headers(&x->s, 0);
    SEND_REQ(x, "ab", 0);
    SEND_REQ(x, "c", 1);
    assert_string_equal(trace, "qh0 qd0:ab qd0:c$ qh1 qh2 UP:head qd1:abc$ qd2:abc$ UP:abc$");
    fx_free(x);
}

static void test_stop_and_buffer_without_data_hook(void **state)
{
    struct fixture *x = fx_new(1 << 20);
    x->filters[1].ops = &head_only_ops;
    x->f[1].script[H_REQ_HEAD][0] = DP_FILTER_STOP_AND_BUFFER;
    dp_fc_request_headers(&x->s, 0);
    SEND_REQ(x, "ab", 0);
    SEND_REQ(x, "cd", 1);
    /* Resumed at the end of the body. */
    assert_string_equal(trace, "qh0 qh1 qd0:ab qd0:cd$ qh2 UP:head qd2:abcd$ UP:abcd$");
    fx_free(x);
}

/* A request body that ends with trailers (gRPC's) ends the wait of a
 * buffering filter that has no data hook and stopped on the head: before the
 * fix in run_trailers the stream waited for ever ("qh0 qh1 qd0:ab qt0"). */
static void test_stop_and_buffer_trailers_end_it(void **state)
{
    struct fixture *x = fx_new(1 << 20);
    x->filters[1].ops = &head_only_ops;
    x->f[1].script[H_REQ_HEAD][0] = DP_FILTER_STOP_AND_BUFFER;
    dp_fc_request_headers(&x->s, 0);
    SEND_REQ(x, "ab", 0);
    dp_fc_request_trailers(&x->s);
    assert_string_equal(trace, "qh0 qh1 qd0:ab qt0 qh2 UP:head qd2:ab UP:ab qt2 UP:trailers");
    fx_free(x);
}

/* A buffering filter WITH a data hook: the trailers reach its trailer hook
 * (the end of its body, as Envoy's decodeTrailers on a
 * StopIterationAndBuffer filter); CONTINUE there lets everything on. Before,
 * the later filters and the upstream got the body and trailers without the
 * buffering filter seeing the end. */
static void test_stop_and_buffer_with_data_hook_sees_trailers(void **state)
{
    struct fixture *x = fx_new(1 << 20);
    x->f[1].script[H_REQ_HEAD][0] = DP_FILTER_STOP_AND_BUFFER;
    x->f[1].script[H_REQ_DATA][0] = DP_FILTER_STOP_AND_BUFFER;
    dp_fc_request_headers(&x->s, 0);
    SEND_REQ(x, "ab", 0);
    dp_fc_request_trailers(&x->s);
    assert_string_equal(trace, "qh0 qh1 qd0:ab qd1:ab qt0 qt1 qh2 UP:head qd2:ab UP:ab qt2 UP:trailers");
    assert_int_equal(x->f[1].calls[H_REQ_TRAILERS], 1); /* not again on the way on */
    fx_free(x);
}

/* ... and a trailer hook that pauses holds everything until the filter
 * continues. */
static void test_stop_and_buffer_trailers_hook_pauses(void **state)
{
    struct fixture *x = fx_new(1 << 20);
    x->f[1].script[H_REQ_HEAD][0] = DP_FILTER_STOP_AND_BUFFER;
    x->f[1].script[H_REQ_DATA][0] = DP_FILTER_STOP_AND_BUFFER;
    x->f[1].script[H_REQ_TRAILERS][0] = DP_FILTER_STOP_ITERATION;
    dp_fc_request_headers(&x->s, 0);
    SEND_REQ(x, "ab", 0);
    dp_fc_request_trailers(&x->s);
    assert_string_equal(trace, "qh0 qh1 qd0:ab qd1:ab qt0 qt1");
    trace[0] = '\0';
    dp_filter_continue(&x->s, DP_FILTER_REQUEST);
    assert_string_equal(trace, "qh2 UP:head qd2:ab UP:ab qt2 UP:trailers");
    fx_free(x);
}

static void test_stop_and_buffer_request_overflow_413(void **state)
{
    struct fixture *x = fx_new(4);
    x->f[1].script[H_REQ_HEAD][0] = DP_FILTER_STOP_AND_BUFFER;
    x->f[1].script[H_REQ_DATA][0] = DP_FILTER_STOP_AND_BUFFER;
    dp_fc_request_headers(&x->s, 0);
    SEND_REQ(x, "abc", 0);
    trace[0] = '\0';
    SEND_REQ(x, "de", 0);
    assert_string_equal(trace, "qd0:de REPLY:413");
    assert_true(x->s.flags & DP_STREAM_F_CLOSE_AFTER);
    assert_int_equal(x->f[1].calls[H_REQ_DATA], 1); /* not called for the chunk over the limit */
    fx_free(x);
}

static void test_stop_and_buffer_response_overflow_500(void **state)
{
    struct fixture *x = fx_new(4);
    dp_fc_request_headers(&x->s, 1);
    x->f[1].script[H_RESP_HEAD][0] = DP_FILTER_STOP_AND_BUFFER;
    x->f[1].script[H_RESP_DATA][0] = DP_FILTER_STOP_AND_BUFFER;
    trace[0] = '\0';
    dp_fc_response_headers(&x->s, 0);
    SEND_RESP(x, "abcdef", 0);
    assert_string_equal(trace, "rh2 rh1 rd2:abcdef REPLY:500");
    fx_free(x);
}

static void test_stop_and_buffer_response_overflow_after_head_resets(void **state)
{
    struct fixture *x = fx_new(4);
    dp_fc_request_headers(&x->s, 1);
    x->f[1].script[H_RESP_DATA][0] = DP_FILTER_STOP_AND_BUFFER;
    trace[0] = '\0';
    dp_fc_response_headers(&x->s, 0);
    x->s.flags |= DP_STREAM_F_RESP_HEADERS_SENT; /* the codec took the head */
    SEND_RESP(x, "ab", 0);
    SEND_RESP(x, "cdef", 0);
    /* Too late for a 500: the stream is reset. */
    assert_string_equal(trace, "rh2 rh1 rh0 DOWN:head rd2:ab rd1:ab rd2:cdef RESET");
    fx_free(x);
}

/* ---- per-route config --------------------------------------------------------------- */

static void test_route_config_resolution(void **state)
{
    struct fixture *x = fx_new(1 << 20);
    char err[512];
    const char *yaml =
        "virtual_hosts:\n"
        "- name: a\n"
        "  domains: [a.test]\n"
        "  typed_per_filter_config:\n"
        "    test.f1: {'@type': type.googleapis.com/envoy.config.core.v3.DataSource, inline_string: vhost}\n"
        "  routes:\n"
        "  - match: {prefix: /own}\n"
        "    direct_response: {status: 200}\n"
        "    typed_per_filter_config:\n"
        "      test.f1: {'@type': type.googleapis.com/envoy.config.core.v3.DataSource, inline_string: route}\n"
        "  - match: {prefix: /}\n"
        "    direct_response: {status: 200}\n"
        "- name: b\n"
        "  domains: ['*']\n"
        "  routes:\n"
        "  - match: {prefix: /}\n"
        "    direct_response: {status: 200}\n";
    ProtobufCMessage *m;
    assert_int_equal(xds_convert_text(yaml, strlen(yaml), &envoy__config__route__v3__route_configuration__descriptor,
                                      &m, err, sizeof(err)),
                     0);
    struct dp_route_table *t = dp_route_table_build((void *)m, x->filters, x->cfg.n_filters, err, sizeof(err));
    protobuf_c_message_free_unpacked(m, NULL);
    if (t == NULL)
        fail_msg("route table: %s", err);

    static const struct {
        const char *authority, *path, *want; /* want: f1's route_cfg, NULL for none */
    } cases[] = {
        {"a.test", "/own/x", "route"}, /* the route's own entry */
        {"a.test", "/other", "vhost"}, /* else its virtual host's */
        {"b.test", "/own/x", NULL},    /* else none */
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct dp_request_head req = {
            .method = DP_STR_LIT("GET"),
            .authority = {cases[k].authority, strlen(cases[k].authority)},
            .path = {cases[k].path, strlen(cases[k].path)},
        };
        const struct dp_virtual_host *vh;
        x->s.route = dp_route_find(t, &req, &vh);
        assert_non_null(x->s.route);
        x->s.vhost = vh;
        memset(x->s.iter, 0, sizeof(x->s.iter));
        dp_fc_request_headers(&x->s, 1);
        for (int i = 0; i < N_REC; i++) /* its own config, always */
            assert_ptr_equal(x->f[i].seen_cfg, &x->f[i]);
        assert_null(x->f[0].seen_route_cfg);
        assert_null(x->f[2].seen_route_cfg);
        if (cases[k].want == NULL)
            assert_null(x->f[1].seen_route_cfg);
        else
            assert_string_equal(x->f[1].seen_route_cfg, cases[k].want);
    }
    x->s.route = NULL;
    dp_route_table_unref(t);
    fx_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_both_directions),
        cmocka_unit_test(test_request_trailers_forward),
        cmocka_unit_test(test_head_only_end_stream),
        cmocka_unit_test(test_stop_local_reply),
        cmocka_unit_test(test_stop_in_response),
        cmocka_unit_test(test_stop_iteration_then_continue),
        cmocka_unit_test(test_stop_iteration_holds_trailers),
        cmocka_unit_test(test_stop_iteration_in_data),
        cmocka_unit_test(test_stop_iteration_over_limit_pauses),
        cmocka_unit_test(test_continue_on_a_running_direction),
        cmocka_unit_test(test_response_stop_iteration),
        cmocka_unit_test(test_stop_and_buffer),
        cmocka_unit_test(test_stop_and_buffer_continue_from_data_hook),
        cmocka_unit_test(test_stop_and_buffer_without_data_hook),
        cmocka_unit_test(test_stop_and_buffer_trailers_end_it),
        cmocka_unit_test(test_stop_and_buffer_with_data_hook_sees_trailers),
        cmocka_unit_test(test_stop_and_buffer_trailers_hook_pauses),
        cmocka_unit_test(test_stop_and_buffer_request_overflow_413),
        cmocka_unit_test(test_stop_and_buffer_response_overflow_500),
        cmocka_unit_test(test_stop_and_buffer_response_overflow_after_head_resets),
        cmocka_unit_test(test_route_config_resolution),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
