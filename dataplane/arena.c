#include "arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

struct dp_arena_block {
    struct dp_arena_block *next;
    size_t size;
    alignas(max_align_t) char data[];
};

/* Standard blocks are the buffers' pool blocks (DP_BUF_BLOCK, header
 * included); a bigger allocation gets a malloc'd block of its own. */
#define STD_SIZE (DP_BUF_BLOCK - sizeof(struct dp_arena_block))

/* n bytes at cur aligned to align (a power of two), from a new block when
 * the current one has no room. */
static void *alloc(struct dp_arena *a, size_t n, size_t align)
{
    char *p = a->cur ? (char *)(((uintptr_t)a->cur + align - 1) & ~(uintptr_t)(align - 1)) : NULL;
    if (p == NULL || p > a->end || (size_t)(a->end - p) < n) {
        struct dp_arena_block *b;
        if (a->first_size > sizeof(*b)) {
            /* A small arena (a connection's): every block is malloc'd
             * and as small as it can be, never a pool block. */
            size_t sz = n <= a->first_size - sizeof(*b) ? a->first_size : sizeof(*b) + n;
            if (sz - sizeof(*b) == STD_SIZE)
                sz++; /* dp_arena_reset takes that size for a pool block */
            b = malloc(sz);
            if (b == NULL)
                return NULL;
            b->size = sz - sizeof(*b);
        } else if (n <= STD_SIZE) {
            b = dp_block_get();
            if (b == NULL)
                return NULL;
            b->size = STD_SIZE;
        } else {
            b = malloc(sizeof(*b) + n);
            if (b == NULL)
                return NULL;
            b->size = n;
        }
        b->next = a->head;
        a->head = b;
        a->end = b->data + b->size;
        p = b->data;
    }
    a->cur = p + n;
    return p;
}

void *dp_arena_alloc(struct dp_arena *a, size_t n)
{
    return alloc(a, n, alignof(max_align_t));
}

char *dp_arena_strndup(struct dp_arena *a, const char *s, size_t n)
{
    char *p = alloc(a, n + 1, 1); /* characters need no alignment */
    if (p) {
        if (n)
            memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

void dp_arena_reset(struct dp_arena *a)
{
    struct dp_arena_block *b = a->head;
    while (b) {
        struct dp_arena_block *next = b->next;
        if (b->size == STD_SIZE)
            dp_block_put(b);
        else
            free(b);
        b = next;
    }
    a->head = NULL;
    a->cur = a->end = NULL;
}
