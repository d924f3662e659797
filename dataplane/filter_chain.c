/*
 * The HTTP filter chain runner: iteration over the connection manager's
 * filters for each part of a message (head, body chunks, trailers), in
 * both directions, with the statuses of dataplane/filter.h. What passes
 * every filter goes to the stream's forward_* functions (stream.c); what a
 * filter stops is held in the direction's dp_filter_iter until it resumes.
 *
 * A stopped direction at position k: parts that arrive still run through
 * the filters before k, then wait at k (a STOP_AND_BUFFER filter sees each
 * body chunk, the others nothing) until the filter continues; then the
 * filters after k get the head, the held body as one chunk and the
 * trailers, in that order, and may stop again.
 */
#include <string.h>

#include "dataplane/stream.h"
#include "dataplane/upstream.h"
#include "xds/log.h"

/* The filters that take part in dir, and the index of position pos. The
 * terminal marker (the router) is never one of them. */
static size_t n_pos(const struct dp_stream *s, enum dp_filter_dir dir)
{
    const struct dp_hcm_cfg *cfg = s->cfg;
    if (cfg == NULL || s->filter_ctx == NULL)
        return 0;
    size_t n = dir == DP_FILTER_REQUEST ? cfg->n_filters : s->filters_started;
    if (n > cfg->n_filters)
        n = cfg->n_filters;
    while (n && cfg->filters[n - 1].ops->terminal)
        n--;
    return n;
}

static size_t index_of(const struct dp_stream *s, enum dp_filter_dir dir, size_t pos)
{
    return dir == DP_FILTER_REQUEST ? pos : n_pos(s, dir) - 1 - pos;
}

/* The stream was answered, reset or finished by a hook: stop iterating. */
static int aborted(const struct dp_stream *s, enum dp_filter_dir dir)
{
    if (s->flags & DP_STREAM_F_DONE)
        return 1;
    if (dir == DP_FILTER_REQUEST)
        return (s->flags & (DP_STREAM_F_LOCAL_REPLY | DP_STREAM_F_RESP_HEADERS_SENT)) != 0;
    return (s->flags & DP_STREAM_F_RESP_COMPLETE) != 0;
}

int dp_fc_active(const struct dp_stream *s, enum dp_filter_dir dir)
{
    if (s->iter[dir].mode)
        return 1;
    size_t n = n_pos(s, dir);
    for (size_t pos = 0; pos < n; pos++) {
        const struct dp_filter_ops *ops = s->cfg->filters[index_of(s, dir, pos)].ops;
        if (dir == DP_FILTER_REQUEST ? ops->on_request_data != NULL : ops->on_response_data != NULL)
            return 1;
    }
    return 0;
}

/* ---- what passes the last filter ------------------------------------------------ */

static void pass_headers(struct dp_stream *s, enum dp_filter_dir dir, int end)
{
    if (dir == DP_FILTER_REQUEST)
        dp_stream_terminal(s, end);
    else
        dp_stream_forward_response_headers(s, end);
}

static void pass_data(struct dp_stream *s, enum dp_filter_dir dir, const uint8_t *p, size_t n, int end)
{
    if (dir == DP_FILTER_REQUEST)
        dp_stream_forward_request_data(s, p, n, end);
    else
        dp_stream_forward_response_data(s, p, n, end);
}

static void pass_trailers(struct dp_stream *s, enum dp_filter_dir dir)
{
    if (dir == DP_FILTER_REQUEST)
        dp_stream_forward_request_trailers(s);
    else
        dp_stream_forward_response_trailers(s);
}

/* ---- holding ---------------------------------------------------------------------- */

static void stop_at(struct dp_filter_iter *it, size_t pos, enum dp_filter_status st)
{
    it->stop = (uint32_t)pos;
    it->mode = (uint8_t)st;
}

/* Keeps a chunk while the direction is stopped. Over the buffer limit, a
 * buffering filter gets Envoy's answer (413 for a request body, 500 for a
 * response one); otherwise the sender is paused until the filter resumes. */
static int hold(struct dp_stream *s, enum dp_filter_dir dir, const uint8_t *p, size_t n, int end)
{
    struct dp_filter_iter *it = &s->iter[dir];
    if (end)
        it->end_pending = 1;
    if (n && dp_buf_append(&it->hold, p, n) < 0) {
        dp_stream_send_local_reply(s, 500, "text/plain", "out of memory\n", 14);
        return -1;
    }
    size_t limit = s->hcm->listener->per_connection_buffer_limit;
    if (dp_buf_size(&it->hold) <= limit)
        return 0;
    if (it->mode == DP_FILTER_STOP_AND_BUFFER) {
        LG_D("filter", "C%llu S%llu: %s body over the buffer limit (%zu bytes) while a filter buffers",
             (unsigned long long)s->hcm->id, (unsigned long long)s->id,
             dir == DP_FILTER_REQUEST ? "request" : "response", (size_t)limit);
        if (dir == DP_FILTER_REQUEST && !(s->flags & DP_STREAM_F_RESP_HEADERS_SENT)) {
            s->flags |= DP_STREAM_F_CLOSE_AFTER;
            dp_stream_send_local_reply(s, 413, "text/plain", "payload too large\n", 18);
        } else if (!(s->flags & DP_STREAM_F_RESP_HEADERS_SENT)) {
            s->resp.headers.n = 0;
            dp_stream_send_local_reply(s, 500, "text/plain", "response body too large\n", 24);
        } else {
            dp_hcm_reset_stream(s);
        }
        return -1;
    }
    if (!it->paused) {
        it->paused = 1;
        if (dir == DP_FILTER_REQUEST) {
            dp_hcm_pause_request(s);
        } else if (s->up) {
            s->flags |= DP_STREAM_F_UPSTREAM_PAUSED;
            dp_upstream_pause(s->up);
        }
    }
    return 0;
}

static void unpause(struct dp_stream *s, enum dp_filter_dir dir)
{
    struct dp_filter_iter *it = &s->iter[dir];
    if (!it->paused)
        return;
    it->paused = 0;
    if (dir == DP_FILTER_REQUEST)
        dp_hcm_resume_request(s);
    else
        dp_stream_downstream_drained(s);
}

/* ---- iteration --------------------------------------------------------------------- */

/* The head from position pos on. */
static void run_headers(struct dp_stream *s, enum dp_filter_dir dir, size_t pos, int end)
{
    struct dp_filter_iter *it = &s->iter[dir];
    size_t n = n_pos(s, dir);
    for (; pos < n; pos++) {
        size_t i = index_of(s, dir, pos);
        const struct dp_filter_ops *ops = s->cfg->filters[i].ops;
        enum dp_filter_status (*hook)(struct dp_stream *, const struct dp_filter_call *, int) =
            dir == DP_FILTER_REQUEST ? ops->on_request_headers : ops->on_response_headers;
        if (dir == DP_FILTER_REQUEST)
            s->filters_started = i + 1;
        if (hook == NULL)
            continue;
        struct dp_filter_call c = dp_stream_filter_call(s, i);
        enum dp_filter_status st = hook(s, &c, end);
        if (st == DP_FILTER_STOP || aborted(s, dir))
            return;
        if (st != DP_FILTER_CONTINUE) {
            stop_at(it, pos, st);
            it->headers_pending = 1;
            it->headers_end = (uint8_t)end;
            return;
        }
    }
    if (dir == DP_FILTER_REQUEST && s->cfg && s->filter_ctx)
        s->filters_started = s->cfg->n_filters; /* the terminal marker too */
    pass_headers(s, dir, end);
}

static void resume(struct dp_stream *s, enum dp_filter_dir dir);

/* A body chunk from position pos on. */
static void run_data(struct dp_stream *s, enum dp_filter_dir dir, size_t pos, const uint8_t *p, size_t n,
                     int end)
{
    struct dp_filter_iter *it = &s->iter[dir];
    size_t upto = it->mode ? it->stop : n_pos(s, dir);
    for (; pos < upto; pos++) {
        size_t i = index_of(s, dir, pos);
        const struct dp_filter_ops *ops = s->cfg->filters[i].ops;
        enum dp_filter_status (*hook)(struct dp_stream *, const struct dp_filter_call *, const uint8_t *, size_t,
                                      int) = dir == DP_FILTER_REQUEST ? ops->on_request_data : ops->on_response_data;
        if (hook == NULL)
            continue;
        struct dp_filter_call c = dp_stream_filter_call(s, i);
        enum dp_filter_status st = hook(s, &c, p, n, end);
        if (st == DP_FILTER_STOP || aborted(s, dir))
            return;
        if (st != DP_FILTER_CONTINUE) {
            stop_at(it, pos, st);
            hold(s, dir, p, n, end);
            return;
        }
    }
    if (!it->mode) {
        pass_data(s, dir, p, n, end);
        return;
    }
    /* Stopped at upto: the chunk waits there. */
    if (hold(s, dir, p, n, end) < 0 || it->mode != DP_FILTER_STOP_AND_BUFFER)
        return;
    size_t i = index_of(s, dir, it->stop);
    const struct dp_filter_ops *ops = s->cfg->filters[i].ops;
    enum dp_filter_status (*hook)(struct dp_stream *, const struct dp_filter_call *, const uint8_t *, size_t, int) =
        dir == DP_FILTER_REQUEST ? ops->on_request_data : ops->on_response_data;
    if (hook == NULL) {
        /* Buffering with no data hook: the whole body, then on. */
        if (it->end_pending && !it->trailers_pending)
            resume(s, dir);
        return;
    }
    struct dp_filter_call c = dp_stream_filter_call(s, i);
    enum dp_filter_status st = hook(s, &c, p, n, end);
    if (st == DP_FILTER_STOP || aborted(s, dir))
        return;
    if (st == DP_FILTER_CONTINUE)
        resume(s, dir);
    else
        it->mode = (uint8_t)st;
}

static void run_trailers(struct dp_stream *s, enum dp_filter_dir dir, size_t pos)
{
    struct dp_filter_iter *it = &s->iter[dir];
    size_t upto = it->mode ? it->stop : n_pos(s, dir);
    for (; pos < upto; pos++) {
        size_t i = index_of(s, dir, pos);
        const struct dp_filter_ops *ops = s->cfg->filters[i].ops;
        enum dp_filter_status (*hook)(struct dp_stream *, const struct dp_filter_call *) =
            dir == DP_FILTER_REQUEST ? ops->on_request_trailers : ops->on_response_trailers;
        if (hook == NULL)
            continue;
        struct dp_filter_call c = dp_stream_filter_call(s, i);
        enum dp_filter_status st = hook(s, &c);
        if (st == DP_FILTER_STOP || aborted(s, dir))
            return;
        if (st != DP_FILTER_CONTINUE) {
            stop_at(it, pos, DP_FILTER_STOP_ITERATION);
            it->trailers_pending = 1;
            it->end_pending = 1;
            return;
        }
    }
    if (it->mode) {
        it->trailers_pending = 1;
        it->end_pending = 1;
        if (it->mode != DP_FILTER_STOP_AND_BUFFER)
            return; /* STOP_ITERATION: everything waits for dp_filter_continue */
        /* A buffering filter waits for the end of the body: the trailers
         * are it. As Envoy's decodeTrailers on a StopIterationAndBuffer
         * filter, its trailers hook says whether it goes on (a filter
         * without one goes on: nothing else would resume it). */
        size_t i = index_of(s, dir, it->stop);
        const struct dp_filter_ops *ops = s->cfg->filters[i].ops;
        enum dp_filter_status (*hook)(struct dp_stream *, const struct dp_filter_call *) =
            dir == DP_FILTER_REQUEST ? ops->on_request_trailers : ops->on_response_trailers;
        enum dp_filter_status st = DP_FILTER_CONTINUE;
        if (hook) {
            struct dp_filter_call c = dp_stream_filter_call(s, i);
            st = hook(s, &c);
            if (st == DP_FILTER_STOP || aborted(s, dir))
                return;
        }
        if (st == DP_FILTER_CONTINUE)
            resume(s, dir);
        else
            it->mode = DP_FILTER_STOP_ITERATION; /* held whole: on at dp_filter_continue */
        return;
    }
    pass_trailers(s, dir);
}

/* The filter at it->stop continues: what waited there goes on. */
static void resume(struct dp_stream *s, enum dp_filter_dir dir)
{
    struct dp_filter_iter *it = &s->iter[dir];
    if (!it->mode)
        return;
    size_t pos = (size_t)it->stop + 1;
    it->mode = 0;
    if (it->headers_pending) {
        it->headers_pending = 0;
        int end = it->headers_end;
        run_headers(s, dir, pos, end);
        if (aborted(s, dir) || it->mode || end)
            return;
        /* The head went on; the body waits for nobody now, unless the
         * head stopped again (above). */
    }
    struct dp_buf body = it->hold;
    int end = it->end_pending && !it->trailers_pending;
    int trailers = it->trailers_pending;
    it->hold = (struct dp_buf){0};
    it->end_pending = 0;
    it->trailers_pending = 0;
    unpause(s, dir);
    if (dp_buf_size(&body) || end)
        run_data(s, dir, pos, dp_buf_head(&body), dp_buf_size(&body), end);
    dp_buf_release(&body);
    if (trailers && !aborted(s, dir)) {
        if (it->mode) { /* stopped again on the body: the trailers wait too */
            it->trailers_pending = 1;
            it->end_pending = 1;
            return;
        }
        run_trailers(s, dir, pos);
    }
}

/* ---- entry points ------------------------------------------------------------------ */

void dp_fc_request_headers(struct dp_stream *s, int end_stream)
{
    run_headers(s, DP_FILTER_REQUEST, 0, end_stream);
}

void dp_fc_request_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream)
{
    run_data(s, DP_FILTER_REQUEST, 0, p, n, end_stream);
}

void dp_fc_request_trailers(struct dp_stream *s)
{
    run_trailers(s, DP_FILTER_REQUEST, 0);
}

void dp_fc_response_headers(struct dp_stream *s, int end_stream)
{
    run_headers(s, DP_FILTER_RESPONSE, 0, end_stream);
}

void dp_fc_response_data(struct dp_stream *s, const uint8_t *p, size_t n, int end_stream)
{
    run_data(s, DP_FILTER_RESPONSE, 0, p, n, end_stream);
}

void dp_fc_response_trailers(struct dp_stream *s)
{
    run_trailers(s, DP_FILTER_RESPONSE, 0);
}

void dp_filter_continue(struct dp_stream *s, enum dp_filter_dir dir)
{
    if ((unsigned)dir > DP_FILTER_RESPONSE || aborted(s, dir))
        return;
    resume(s, dir);
}

const struct dp_buf *dp_filter_buffered(struct dp_stream *s, enum dp_filter_dir dir)
{
    return &s->iter[dir == DP_FILTER_RESPONSE].hold;
}

void dp_fc_free(struct dp_stream *s)
{
    dp_buf_release(&s->iter[0].hold);
    dp_buf_release(&s->iter[1].hold);
}
