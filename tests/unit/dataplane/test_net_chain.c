/* The network filter chain runner (dataplane/net_chain.c) without sockets:
 * start order and close, only fresh bytes to the data hooks, hold and
 * continue (bytes leave conn->in and come back), EOF kept while held,
 * write hooks, on_close in reverse order once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dataplane/net_chain.c"

/* conn.c is not linked: reading is a flag here. */
void dp_conn_pause_read(struct dp_conn *c)
{
    c->flags |= DP_CONN_F_PAUSED;
}

void dp_conn_resume_read(struct dp_conn *c)
{
    c->flags &= ~DP_CONN_F_PAUSED;
}

/* What the filters did, in order: "<filter><event>" tokens. */
static char events[512];
static void ev(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t off = strlen(events);
    vsnprintf(events + off, sizeof(events) - off, fmt, ap);
    va_end(ap);
}

struct fcfg {
    char name;
    int close_on_new;  /* on_new_connection returns CLOSE */
    int hold;          /* on_data: STOP_ITERATION the first time */
    const char *bad;   /* on_data/on_write: CLOSE when seen */
};

struct fctx {
    size_t rx, tx;
    int held_once;
};

static enum dp_net_status f_new(const struct dp_net_call *c)
{
    const struct fcfg *cfg = c->cfg;
    ev("%cN ", cfg->name);
    return cfg->close_on_new ? DP_NET_CLOSE : DP_NET_CONTINUE;
}

static enum dp_net_status f_data(const struct dp_net_call *c, const uint8_t *p, size_t n, int eof)
{
    const struct fcfg *cfg = c->cfg;
    struct fctx *x = c->ctx;
    x->rx += n;
    ev("%cD%zu%s ", cfg->name, n, eof ? "e" : "");
    if (cfg->bad && memmem(p, n, cfg->bad, strlen(cfg->bad)))
        return DP_NET_CLOSE;
    if (cfg->hold && !x->held_once) {
        x->held_once = 1;
        return DP_NET_STOP_ITERATION;
    }
    return DP_NET_CONTINUE;
}

static enum dp_net_status f_write(const struct dp_net_call *c, const uint8_t *p, size_t n)
{
    const struct fcfg *cfg = c->cfg;
    struct fctx *x = c->ctx;
    x->tx += n;
    ev("%cW%zu ", cfg->name, n);
    if (cfg->bad && memmem(p, n, cfg->bad, strlen(cfg->bad)))
        return DP_NET_CLOSE;
    return DP_NET_CONTINUE;
}

static void f_close(const struct dp_net_call *c)
{
    const struct fcfg *cfg = c->cfg;
    ev("%cC ", cfg->name);
}

static const struct dp_net_filter_ops fops = {
    .name = "test.filter",
    .ctx_size = sizeof(struct fctx),
    .on_new_connection = f_new,
    .on_data = f_data,
    .on_write = f_write,
    .on_close = f_close,
};

static const struct dp_net_filter_ops quiet_ops = {
    .name = "test.quiet", /* no hooks at all */
};

static int delivered, closed;
static void o_deliver(void *owner)
{
    (void)owner;
    delivered++;
}
static void o_close(void *owner)
{
    (void)owner;
    closed++;
}
static const struct dp_net_owner_ops owner = {.deliver = o_deliver, .close = o_close};

struct fixture {
    struct dp_conn conn;
    struct dp_arena arena;
    struct dp_net_session ns;
};

static void reset(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    events[0] = '\0';
    delivered = closed = 0;
}

/* As conn.c's read does: bytes appended to conn->in and counted. */
static void peer_sends(struct dp_conn *c, const char *s)
{
    size_t n = strlen(s);
    assert_int_equal(dp_buf_append(&c->in, s, n), 0);
    c->bytes_read += n;
}

static void done(struct fixture *f)
{
    dp_net_session_end(&f->ns);
    dp_buf_release(&f->conn.in);
    dp_arena_reset(&f->arena);
}

static const struct dp_net_conn_info info = {.id = 7, .remote = "127.0.0.1:1", .listener = "l"};

static void start_close_and_reverse_on_close(void **state)
{
    (void)state;
    struct fixture f;
    reset(&f);
    struct fcfg a = {.name = 'a'}, b = {.name = 'b', .close_on_new = 1}, c = {.name = 'c'};
    struct dp_net_filter_inst fl[] = {{&fops, &a}, {&fops, &b}, {&fops, &c}};
    assert_int_equal(dp_net_session_start(&f.ns, fl, 3, &f.conn, &f.arena, &info, &owner, NULL), -1);
    assert_string_equal(events, "aN bN ");
    /* c never started: no on_close for it; once only. */
    dp_net_session_end(&f.ns);
    dp_net_session_end(&f.ns);
    assert_string_equal(events, "aN bN bC aC ");
    assert_int_equal(dp_net_conn(&f.ns.calls[0])->id, 7);
    done(&f);
}

static void no_filters_no_session(void **state)
{
    (void)state;
    struct fixture f;
    reset(&f);
    assert_int_equal(dp_net_session_start(&f.ns, NULL, 0, &f.conn, &f.arena, &info, &owner, NULL), 0);
    assert_false(dp_net_session_reads(&f.ns));
    assert_false(dp_net_session_writes(&f.ns));
    struct dp_net_filter_inst fl[] = {{&quiet_ops, NULL}};
    assert_int_equal(dp_net_session_start(&f.ns, fl, 1, &f.conn, &f.arena, &info, &owner, NULL), 0);
    assert_false(dp_net_session_reads(&f.ns)); /* no hook wants bytes: reads skip the runner */
    done(&f);
}

static void fresh_bytes_only(void **state)
{
    (void)state;
    struct fixture f;
    reset(&f);
    struct fcfg a = {.name = 'a'};
    struct dp_net_filter_inst fl[] = {{&fops, &a}};
    peer_sends(&f.conn, "xx"); /* read, not parsed, before the chain was known: the filters see it */
    assert_int_equal(dp_net_session_start(&f.ns, fl, 1, &f.conn, &f.arena, &info, &owner, NULL), 0);
    assert_true(dp_net_session_reads(&f.ns));
    peer_sends(&f.conn, "hello");
    assert_int_equal(dp_net_session_read(&f.ns), 1);
    /* The terminal parses 4 bytes and leaves 3; then 2 more arrive: only they are new. */
    dp_buf_consume(&f.conn.in, 4);
    peer_sends(&f.conn, "!!");
    assert_int_equal(dp_net_session_read(&f.ns), 1);
    /* Woken with nothing new (a resumed pipeline): no hook. */
    assert_int_equal(dp_net_session_read(&f.ns), 1);
    f.conn.flags |= DP_CONN_F_EOF;
    assert_int_equal(dp_net_session_read(&f.ns), 1);
    assert_int_equal(dp_net_session_read(&f.ns), 1); /* EOF reported once */
    assert_string_equal(events, "aN aD7 aD2 aD0e ");
    assert_int_equal(((struct fctx *)f.ns.calls[0].ctx)->rx, 9);
    done(&f);
}

static void hold_and_continue(void **state)
{
    (void)state;
    struct fixture f;
    reset(&f);
    struct fcfg a = {.name = 'a'}, b = {.name = 'b', .hold = 1}, c = {.name = 'c'};
    struct dp_net_filter_inst fl[] = {{&fops, &a}, {&fops, &b}, {&fops, &c}};
    assert_int_equal(dp_net_session_start(&f.ns, fl, 3, &f.conn, &f.arena, &info, &owner, NULL), 0);
    peer_sends(&f.conn, "GET / HTTP/1.1\r\n");
    assert_int_equal(dp_net_session_read(&f.ns), 0);
    /* Held: out of conn->in (nothing for the terminal to parse), reading paused. */
    assert_int_equal(dp_buf_size(&f.conn.in), 0);
    assert_true(f.conn.flags & DP_CONN_F_PAUSED);
    assert_int_equal(dp_net_session_read(&f.ns), 0); /* woken meanwhile: still held */
    /* Only the holder may let go. */
    dp_net_continue_reading(&f.ns.calls[0]);
    assert_int_equal(delivered, 0);
    dp_net_continue_reading(&f.ns.calls[1]);
    assert_int_equal(delivered, 1);
    assert_false(f.conn.flags & DP_CONN_F_PAUSED);
    assert_int_equal(dp_buf_size(&f.conn.in), 16);
    assert_memory_equal(dp_buf_head(&f.conn.in), "GET / HTTP/1.1\r\n", 16);
    assert_string_equal(events, "aN bN cN aD16 bD16 cD16 ");
    /* Later bytes flow straight through. */
    peer_sends(&f.conn, "\r\n");
    assert_int_equal(dp_net_session_read(&f.ns), 1);
    assert_int_equal(((struct fctx *)f.ns.calls[2].ctx)->rx, 18);
    done(&f);
}

static void held_eof_keeps_connection(void **state)
{
    (void)state;
    struct fixture f;
    reset(&f);
    struct fcfg a = {.name = 'a', .hold = 1};
    struct dp_net_filter_inst fl[] = {{&fops, &a}};
    assert_int_equal(dp_net_session_start(&f.ns, fl, 1, &f.conn, &f.arena, &info, &owner, NULL), 0);
    peer_sends(&f.conn, "bye");
    f.conn.flags |= DP_CONN_F_EOF;
    assert_int_equal(dp_net_session_read(&f.ns), 0);
    /* The client's EOF must not close the connection under held bytes. */
    assert_true(f.conn.flags & DP_CONN_F_HALF_OPEN);
    dp_net_continue_reading(&f.ns.calls[0]);
    assert_false(f.conn.flags & DP_CONN_F_HALF_OPEN);
    assert_int_equal(delivered, 1);
    assert_int_equal(dp_buf_size(&f.conn.in), 3);
    done(&f);
}

static void close_from_data_and_write(void **state)
{
    (void)state;
    struct fixture f;
    reset(&f);
    struct fcfg a = {.name = 'a', .bad = "QUIT"}, b = {.name = 'b'};
    struct dp_net_filter_inst fl[] = {{&fops, &a}, {&fops, &b}};
    assert_int_equal(dp_net_session_start(&f.ns, fl, 2, &f.conn, &f.arena, &info, &owner, NULL), 0);
    assert_true(dp_net_session_writes(&f.ns));
    assert_int_equal(dp_net_session_write(&f.ns, (const uint8_t *)"HTTP/1.1 200", 12), 0);
    assert_int_equal(dp_net_session_write(&f.ns, (const uint8_t *)"QUIT", 4), -1);
    peer_sends(&f.conn, "xQUITx");
    assert_int_equal(dp_net_session_read(&f.ns), -1);
    assert_string_equal(events, "aN bN aW12 bW12 aW4 aD6 ");
    dp_net_session_end(&f.ns);
    /* After the end, late writes (a close's flush) reach no filter. */
    assert_int_equal(dp_net_session_write(&f.ns, (const uint8_t *)"QUIT", 4), 0);
    done(&f);
}

static void continue_then_close(void **state)
{
    (void)state;
    struct fixture f;
    reset(&f);
    /* a holds; when it lets go, b sees "QUIT" and closes: the owner closes. */
    struct fcfg a = {.name = 'a', .hold = 1}, b = {.name = 'b', .bad = "QUIT"};
    struct dp_net_filter_inst fl[] = {{&fops, &a}, {&fops, &b}};
    assert_int_equal(dp_net_session_start(&f.ns, fl, 2, &f.conn, &f.arena, &info, &owner, NULL), 0);
    peer_sends(&f.conn, "QUIT");
    assert_int_equal(dp_net_session_read(&f.ns), 0);
    dp_net_continue_reading(&f.ns.calls[0]);
    assert_int_equal(closed, 1);
    assert_int_equal(delivered, 0);
    /* dp_net_close from a later event asks the owner too; not after the end. */
    dp_net_close(&f.ns.calls[1]);
    assert_int_equal(closed, 2);
    dp_net_session_end(&f.ns);
    dp_net_close(&f.ns.calls[1]);
    assert_int_equal(closed, 2);
    done(&f);
}

static int fired;
static void on_timer(const struct dp_net_call *c)
{
    fired++;
    dp_net_continue_reading(c);
}

static void timer_continues_and_dies_with_the_connection(void **state)
{
    (void)state;
    struct fixture f;
    reset(&f);
    fired = 0;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    f.conn.loop = loop;
    struct fcfg a = {.name = 'a', .hold = 1};
    struct dp_net_filter_inst fl[] = {{&fops, &a}};
    assert_int_equal(dp_net_session_start(&f.ns, fl, 1, &f.conn, &f.arena, &info, &owner, NULL), 0);
    peer_sends(&f.conn, "abc");
    assert_int_equal(dp_net_session_read(&f.ns), 0);
    assert_int_equal(dp_net_timer(&f.ns.calls[0], 0.001, on_timer), 0);
    ev_run(loop, 0); /* returns once the one-shot timer has fired */
    assert_int_equal(fired, 1);
    assert_int_equal(delivered, 1);
    assert_int_equal(dp_buf_size(&f.conn.in), 3);
    /* Armed, then the connection ends: it never fires. */
    assert_int_equal(dp_net_timer(&f.ns.calls[0], 0.001, on_timer), 0);
    dp_net_session_end(&f.ns);
    ev_run(loop, 0);
    assert_int_equal(fired, 1);
    assert_int_equal(dp_net_timer(&f.ns.calls[0], 0.001, on_timer), -1);
    done(&f);
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(start_close_and_reverse_on_close),
        cmocka_unit_test(no_filters_no_session),
        cmocka_unit_test(fresh_bytes_only),
        cmocka_unit_test(hold_and_continue),
        cmocka_unit_test(held_eof_keeps_connection),
        cmocka_unit_test(close_from_data_and_write),
        cmocka_unit_test(continue_then_close),
        cmocka_unit_test(timer_continues_and_dies_with_the_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
