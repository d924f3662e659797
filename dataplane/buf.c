#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Blocks of exactly DP_BUF_BLOCK bytes (buffers, and stream arenas) come
 * from slabs mapped once and never unmapped, not from malloc: 16 KiB blocks
 * interleaved with malloc's small objects fragment its heaps, so that a
 * second storm of 10,000 connections touched pages the first had left free.
 * A released block goes onto its thread's free list and is the next one
 * handed out (LIFO: its pages are warm). Larger buffers (a big header
 * block, a buffered body) use malloc.
 * Pages of blocks that stayed on the free list through a whole trim
 * interval go back to the kernel (dp_buf_trim), all but the first page,
 * which holds the free-list link.
 * Under AddressSanitizer every block is malloc'd, so that it sees their
 * misuse (a use after release) as it would any other. */
#if defined(__SANITIZE_ADDRESS__)
#define BLOCKS_FROM_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BLOCKS_FROM_MALLOC 1
#endif
#endif

#define SLAB_BLOCKS 64 /* 1 MiB mapped at a time */
#define PAGE 4096
/* A thread keeps at most this many free blocks (64 MiB); the rest go to a
 * shared pool (one lock, off the request path) where threads that release
 * more than they take (the access log writer) leave them for the others. */
#define LOCAL_MAX 4096

#ifndef BLOCKS_FROM_MALLOC
#include <pthread.h>
#include <sys/mman.h>

struct free_block {
    struct free_block *next;
};

struct blist {
    struct free_block *head;
    size_t n;         /* blocks on the list */
    size_t n_trimmed; /* of those, the bottom ones whose pages were given back */
    size_t n_low;     /* fewest on the list since the last trim */
};

static _Thread_local struct blist local;
static _Thread_local uint8_t *slab_next; /* uncarved part of this thread's slab */
static _Thread_local size_t slab_left;
static struct blist shared;
static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;

static void *pop(struct blist *l)
{
    struct free_block *b = l->head;
    if (b == NULL)
        return NULL;
    l->head = b->next;
    l->n--;
    if (l->n_trimmed > l->n)
        l->n_trimmed = l->n; /* that one was given back: its pages fault in again */
    if (l->n_low > l->n)
        l->n_low = l->n;
    return b;
}

static void push(struct blist *l, void *p)
{
    struct free_block *b = p;
    b->next = l->head;
    l->head = b;
    l->n++;
}

/* Gives back the pages of the blocks at the bottom of l that were not
 * touched since the last trim, beyond keep. */
static size_t trim(struct blist *l, size_t keep)
{
    size_t released = 0;
    size_t cold = l->n_low > keep ? l->n_low - keep : 0;
    if (cold > l->n_trimmed) {
        struct free_block *b = l->head;
        for (size_t i = 0; i < l->n - cold; i++)
            b = b->next;
        for (size_t i = 0; i < cold - l->n_trimmed; i++) {
            madvise((uint8_t *)b + PAGE, DP_BUF_BLOCK - PAGE, MADV_DONTNEED);
            b = b->next;
            released++;
        }
        l->n_trimmed = cold;
    }
    l->n_low = l->n;
    return released;
}

static void *carve(void)
{
    if (slab_left == 0) {
        void *m = mmap(NULL, (size_t)SLAB_BLOCKS * DP_BUF_BLOCK, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
        slab_next = m;
        slab_left = SLAB_BLOCKS;
    }
    void *b = slab_next;
    slab_next += DP_BUF_BLOCK;
    slab_left--;
    return b;
}
#endif

void *dp_block_get(void)
{
#ifdef BLOCKS_FROM_MALLOC
    return malloc(DP_BUF_BLOCK);
#else
    void *b = pop(&local);
    if (b)
        return b;
    pthread_mutex_lock(&shared_lock);
    b = pop(&shared);
    pthread_mutex_unlock(&shared_lock);
    return b ? b : carve();
#endif
}

void dp_block_put(void *p)
{
    if (p == NULL)
        return;
#ifdef BLOCKS_FROM_MALLOC
    free(p);
#else
    if (local.n < LOCAL_MAX) {
        push(&local, p);
        return;
    }
    pthread_mutex_lock(&shared_lock);
    push(&shared, p);
    pthread_mutex_unlock(&shared_lock);
#endif
}

size_t dp_buf_trim(size_t keep)
{
#ifdef BLOCKS_FROM_MALLOC
    (void)keep;
    return 0;
#else
    size_t released = trim(&local, keep);
    if (pthread_mutex_trylock(&shared_lock) == 0) {
        released += trim(&shared, 0);
        pthread_mutex_unlock(&shared_lock);
    }
    return released;
#endif
}

static uint8_t *block_get(size_t want, size_t *cap)
{
    if (want <= DP_BUF_BLOCK) {
        *cap = DP_BUF_BLOCK;
        return dp_block_get();
    }
    *cap = want;
    return malloc(want);
}

static void block_put(uint8_t *p, size_t cap)
{
    if (p == NULL)
        return;
    if (cap == DP_BUF_BLOCK)
        dp_block_put(p);
    else
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

int dp_buf_append_slow(struct dp_buf *b, const void *p, size_t n)
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

int dp_buf_append_dec(struct dp_buf *b, uint64_t v)
{
    char tmp[20];
    return dp_buf_append(b, tmp, dp_fmt_u64(tmp, v));
}

int dp_buf_append_hex(struct dp_buf *b, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[16];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = digits[v & 15];
        v >>= 4;
    } while (v);
    return dp_buf_append(b, tmp + i, sizeof(tmp) - i);
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

void dp_buf_cache_free(void)
{
#ifndef BLOCKS_FROM_MALLOC
    /* Slabs stay mapped (other threads may hold blocks carved here): this
     * thread's free blocks go to the shared pool. */
    void *b;
    pthread_mutex_lock(&shared_lock);
    while ((b = pop(&local)) != NULL)
        push(&shared, b);
    pthread_mutex_unlock(&shared_lock);
    local.n_trimmed = local.n_low = 0;
#endif
}
