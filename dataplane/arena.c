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

/* Small blocks share the buffer cache's block size so they recycle. */
static _Thread_local struct dp_arena_block *free_blocks;
static _Thread_local size_t free_count;
#define FREE_MAX 256

void *dp_arena_alloc(struct dp_arena *a, size_t n)
{
    size_t align = alignof(max_align_t);
    n = (n + align - 1) & ~(align - 1);
    if (a->cur == NULL || (size_t)(a->end - a->cur) < n) {
        size_t size = DP_BUF_BLOCK - sizeof(struct dp_arena_block);
        struct dp_arena_block *b;
        if (n <= size && free_blocks != NULL) {
            b = free_blocks;
            free_blocks = b->next;
            free_count--;
        } else {
            if (n > size)
                size = n;
            b = malloc(sizeof(*b) + size);
            if (b == NULL)
                return NULL;
            b->size = size;
        }
        b->next = a->head;
        a->head = b;
        a->cur = b->data;
        a->end = b->data + b->size;
    }
    void *p = a->cur;
    a->cur += n;
    return p;
}

char *dp_arena_strndup(struct dp_arena *a, const char *s, size_t n)
{
    char *p = dp_arena_alloc(a, n + 1);
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
    size_t std = DP_BUF_BLOCK - sizeof(struct dp_arena_block);
    while (b) {
        struct dp_arena_block *next = b->next;
        if (b->size == std && free_count < FREE_MAX) {
            b->next = free_blocks;
            free_blocks = b;
            free_count++;
        } else {
            free(b);
        }
        b = next;
    }
    a->head = NULL;
    a->cur = a->end = NULL;
}

void dp_arena_cache_free(void)
{
    while (free_blocks) {
        struct dp_arena_block *b = free_blocks;
        free_blocks = b->next;
        free(b);
    }
    free_count = 0;
}
