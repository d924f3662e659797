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

void *dp_arena_alloc(struct dp_arena *a, size_t n)
{
    size_t align = alignof(max_align_t);
    n = (n + align - 1) & ~(align - 1);
    if (a->cur == NULL || (size_t)(a->end - a->cur) < n) {
        struct dp_arena_block *b;
        if (a->head == NULL && a->first_size > sizeof(*b) && n <= a->first_size - sizeof(*b)) {
            b = malloc(a->first_size);
            if (b == NULL)
                return NULL;
            b->size = a->first_size - sizeof(*b);
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
