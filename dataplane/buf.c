#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Blocks of exactly DP_BUF_BLOCK bytes are recycled per thread; larger ones
 * (a big header block, a buffered body) go back to malloc. */
#define CACHE_MAX 256

static _Thread_local void *cache[CACHE_MAX];
static _Thread_local size_t cache_n;

static uint8_t *block_get(size_t want, size_t *cap)
{
    if (want <= DP_BUF_BLOCK) {
        *cap = DP_BUF_BLOCK;
        if (cache_n > 0)
            return cache[--cache_n];
        return malloc(DP_BUF_BLOCK);
    }
    *cap = want;
    return malloc(want);
}

static void block_put(uint8_t *p, size_t cap)
{
    if (p == NULL)
        return;
    if (cap == DP_BUF_BLOCK && cache_n < CACHE_MAX) {
        cache[cache_n++] = p;
        return;
    }
    free(p);
}

uint8_t *dp_buf_reserve(struct dp_buf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return b->data + b->len;
    size_t used = b->len - b->off;
    if (b->data && b->cap - used >= n) {
        memmove(b->data, b->data + b->off, used);
        b->off = 0;
        b->len = used;
        return b->data + b->len;
    }
    size_t want = used + n;
    if (want > DP_BUF_BLOCK) {
        size_t c = b->cap > DP_BUF_BLOCK ? b->cap : DP_BUF_BLOCK;
        while (c < want)
            c *= 2;
        want = c;
    }
    size_t cap;
    uint8_t *nd = block_get(want, &cap);
    if (nd == NULL)
        return NULL;
    if (used)
        memcpy(nd, b->data + b->off, used);
    block_put(b->data, b->cap);
    b->data = nd;
    b->cap = cap;
    b->off = 0;
    b->len = used;
    return b->data + b->len;
}

int dp_buf_append(struct dp_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    uint8_t *dst = dp_buf_reserve(b, n);
    if (dst == NULL)
        return -1;
    memcpy(dst, p, n);
    b->len += n;
    return 0;
}

int dp_buf_appendf(struct dp_buf *b, const char *fmt, ...)
{
    va_list ap;
    size_t room = 256;
    for (;;) {
        uint8_t *dst = dp_buf_reserve(b, room);
        if (dst == NULL)
            return -1;
        va_start(ap, fmt);
        int n = vsnprintf((char *)dst, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return -1;
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return 0;
        }
        room = (size_t)n + 1;
    }
}

void dp_buf_consume(struct dp_buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        dp_buf_release(b);
}

void dp_buf_release(struct dp_buf *b)
{
    block_put(b->data, b->cap);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

void dp_buf_cache_drain(void)
{
    while (cache_n > 0)
        free(cache[--cache_n]);
}

void dp_buf_cache_free(void)
{
    while (cache_n > 0)
        free(cache[--cache_n]);
}
