/* The buffer type, its block pool (reuse, trimming idle pages) and the
 * arena's small first block. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "dataplane/arena.h"
#include "dataplane/buf.h"

/* Under AddressSanitizer blocks come from malloc (buf.c): no pool to test. */
#if defined(__SANITIZE_ADDRESS__)
#define POOLED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOLED 0
#endif
#endif
#ifndef POOLED
#define POOLED 1
#endif

#define N 300
#define KEEP 256

static int resident(const void *p, size_t len)
{
    long pg = sysconf(_SC_PAGESIZE);
    unsigned char vec[8];
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(pg - 1);
    size_t pages = (len + ((uintptr_t)p - a) + (size_t)pg - 1) / (size_t)pg;
    assert_true(pages <= sizeof(vec));
    assert_int_equal(mincore((void *)a, pages * (size_t)pg, vec), 0);
    int n = 0;
    for (size_t i = 0; i < pages; i++)
        n += vec[i] & 1;
    return n;
}

static void test_buffer_append_consume(void **state)
{
    (void)state;
    struct dp_buf b = {0};
    assert_int_equal(dp_buf_append(&b, "hello ", 6), 0);
    assert_int_equal(dp_buf_appendf(&b, "%s %d", "world", 42), 0);
    assert_int_equal(dp_buf_size(&b), 14);
    assert_memory_equal(dp_buf_head(&b), "hello world 42", 14);
    assert_int_equal(b.cap, DP_BUF_BLOCK);
    dp_buf_consume(&b, 6);
    assert_memory_equal(dp_buf_head(&b), "world 42", 8);
    dp_buf_consume(&b, 8);
    assert_null(b.data); /* consuming everything releases the block */
    /* Past one block: a larger buffer, the bytes kept in order. */
    char big[DP_BUF_BLOCK + 100];
    memset(big, 'x', sizeof(big));
    big[sizeof(big) - 1] = 'y';
    assert_int_equal(dp_buf_append(&b, "a", 1), 0);
    assert_int_equal(dp_buf_append(&b, big, sizeof(big)), 0);
    assert_true(b.cap > DP_BUF_BLOCK);
    assert_int_equal(dp_buf_size(&b), sizeof(big) + 1);
    assert_int_equal(dp_buf_head(&b)[0], 'a');
    assert_int_equal(dp_buf_head(&b)[sizeof(big)], 'y');
    dp_buf_release(&b);
    assert_int_equal(dp_buf_size(&b), 0);
}

static void test_block_reuse(void **state)
{
    (void)state;
    void *a = dp_block_get();
    assert_non_null(a);
    memset(a, 0xab, DP_BUF_BLOCK);
    dp_block_put(a);
    void *b = dp_block_get();
    assert_non_null(b);
    if (POOLED)
        assert_ptr_equal(a, b); /* the last one released comes back first */
    memset(b, 0xcd, DP_BUF_BLOCK);
    dp_block_put(b);
}

static void test_trim_gives_back_idle_pages(void **state)
{
    (void)state;
    static void *blk[N];
    for (int i = 0; i < N; i++) {
        blk[i] = dp_block_get();
        assert_non_null(blk[i]);
        memset(blk[i], i & 0xff, DP_BUF_BLOCK);
    }
    for (int i = 0; i < N; i++)
        dp_block_put(blk[i]); /* blk[0] at the bottom of the free list */
    dp_buf_trim(KEEP);        /* starts the interval: nothing was idle through one yet */
    size_t got = dp_buf_trim(KEEP);
    if (!POOLED) {
        assert_int_equal(got, 0);
        return;
    }
    /* Idle through a whole interval: all but KEEP (and the test's own
     * blocks from earlier tests, which are warmer) are given back. */
    assert_true(got >= N - KEEP);
    assert_int_equal(dp_buf_trim(KEEP), 0); /* not twice */
    long pg = sysconf(_SC_PAGESIZE);
    /* The bottom block keeps its first page (the free-list link) only. */
    assert_int_equal(resident((char *)blk[0] + pg, DP_BUF_BLOCK - (size_t)pg), 0);
    assert_int_equal(resident(blk[0], 1), 1);
    /* The top block, the next one handed out, stays warm. */
    assert_int_equal(resident(blk[N - 1], DP_BUF_BLOCK), DP_BUF_BLOCK / (size_t)pg);
    /* Given-back blocks work as before once handed out again. */
    for (int i = N - 1; i >= 0; i--) {
        void *p = dp_block_get();
        assert_ptr_equal(p, blk[i]);
        memset(p, 0x5a, DP_BUF_BLOCK);
    }
    assert_int_equal(((unsigned char *)blk[0])[DP_BUF_BLOCK - 1], 0x5a);
    for (int i = 0; i < N; i++)
        dp_block_put(blk[i]);
    /* Taken and given back within the interval: not idle, kept. */
    dp_buf_trim(KEEP);
    void *p = dp_block_get();
    dp_block_put(p);
    assert_int_equal(dp_buf_trim(N), 0);
}

static void test_arena_small_first_block(void **state)
{
    (void)state;
    struct dp_arena a = {0};
    a.first_size = 1024;
    char *s = dp_arena_strndup(&a, "spiffe://example.org/client", 27);
    assert_string_equal(s, "spiffe://example.org/client");
    void *p = dp_arena_alloc(&a, 100);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % _Alignof(max_align_t), 0);
    /* Strings are packed: the next one starts right after the NUL. */
    char *s2 = dp_arena_strndup(&a, "x", 1);
    char *s3 = dp_arena_strndup(&a, "yz", 2);
    assert_ptr_equal(s3, s2 + 2);
    void *p2 = dp_arena_alloc(&a, 8);
    assert_int_equal((uintptr_t)p2 % _Alignof(max_align_t), 0);
    /* More than the small block holds: another small malloc'd block of
     * just that size (a connection's arena never takes a 16 KiB pool
     * block), then more small blocks. */
    char *q = dp_arena_alloc(&a, 4000);
    assert_non_null(q);
    memset(q, 1, 4000);
    assert_int_equal((size_t)(a.end - a.cur), 0);
    char *t = dp_arena_alloc(&a, 10);
    assert_non_null(t);
    assert_true((size_t)(a.end - t) <= 1024);
    /* Bigger than a pool block: a block of its own. */
    char *r = dp_arena_alloc(&a, 3 * DP_BUF_BLOCK);
    assert_non_null(r);
    memset(r, 2, 3 * DP_BUF_BLOCK);
    /* The one size a reset would take for a pool block. */
    char *u = dp_arena_alloc(&a, DP_BUF_BLOCK - 16);
    assert_non_null(u);
    memset(u, 3, DP_BUF_BLOCK - 16);
    assert_string_equal(s, "spiffe://example.org/client");
    dp_arena_reset(&a);
    assert_null(a.head);
    /* ... and that malloc'd block went back to malloc, not to the pool. */
    void *blk = dp_block_get();
    assert_ptr_not_equal(blk, u - 16);
    dp_block_put(blk);
    assert_int_equal(a.first_size, 1024); /* kept for reuse */
    assert_string_equal(dp_arena_strndup(&a, "again", 5), "again");
    dp_arena_reset(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buffer_append_consume),
        cmocka_unit_test(test_block_reuse),
        cmocka_unit_test(test_trim_gives_back_idle_pages),
        cmocka_unit_test(test_arena_small_first_block),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    dp_buf_cache_free();
    return rc;
}
