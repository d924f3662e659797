/*
 * A per-stream (or per-connection) bump allocator. Allocations are never
 * freed one by one; dp_arena_reset() frees everything at once when the
 * stream ends. Blocks come from the buffers' block pool (dataplane/buf.h)
 * when small.
 */
#ifndef LEGATE_DP_ARENA_H
#define LEGATE_DP_ARENA_H

#include <stddef.h>

struct dp_arena_block;

struct dp_arena {
    struct dp_arena_block *head;
    char *cur;
    char *end;
    size_t first_size; /* 0, or a small arena's block size: its blocks are
                          malloc'd, first_size bytes or, for a bigger
                          allocation, just what it needs; never pool blocks */
};

/** Returns n bytes aligned for any type, or NULL on allocation failure. */
void *dp_arena_alloc(struct dp_arena *a, size_t n);

/** Copies n bytes (plus a NUL terminator) into the arena, unaligned. */
char *dp_arena_strndup(struct dp_arena *a, const char *s, size_t n);

/** Frees every block. The arena can be used again afterwards. */
void dp_arena_reset(struct dp_arena *a);

#endif
