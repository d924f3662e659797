/*
 * One buffer type for every byte stream in the data plane.
 *
 * Invariants: 0 <= off <= len <= cap. Bytes [off, len) are unread data;
 * [len, cap) is free space. Readers consume by advancing off; writers append
 * at len. When a reader has consumed everything, off and len return to 0.
 * Storage is a DP_BUF_BLOCK block from the per-thread block pool (malloc
 * only past that size), and goes back there when the buffer is released
 * (dp_buf_release), which consuming everything does: an idle connection
 * holds no buffer memory at all.
 */
#ifndef LEGATE_DP_BUF_H
#define LEGATE_DP_BUF_H

#include <stddef.h>
#include <stdint.h>

#define DP_BUF_BLOCK 16384

struct dp_buf {
    uint8_t *data;
    size_t off;
    size_t len;
    size_t cap;
};

static inline size_t dp_buf_size(const struct dp_buf *b)
{
    return b->len - b->off;
}

static inline uint8_t *dp_buf_head(const struct dp_buf *b)
{
    return b->data + b->off;
}

/** Makes room for at least n more bytes at the tail. Returns a pointer to
 *  the free space (at least n bytes), or NULL on allocation failure. */
uint8_t *dp_buf_reserve(struct dp_buf *b, size_t n);

/** Marks n bytes written at the tail (after dp_buf_reserve). */
static inline void dp_buf_commit(struct dp_buf *b, size_t n)
{
    b->len += n;
}

/** Appends n bytes. Returns 0, or -1 on allocation failure. */
int dp_buf_append_slow(struct dp_buf *b, const void *p, size_t n);
static inline int dp_buf_append(struct dp_buf *b, const void *p, size_t n)
{
    /* Most appends are a few bytes into a block with room: no call. */
    if (b->cap - b->len >= n) {
        if (n)
            __builtin_memcpy(b->data + b->len, p, n);
        b->len += n;
        return 0;
    }
    return dp_buf_append_slow(b, p, n);
}

/** Writes v in decimal at out (room for 20 digits), no NUL; returns the
 *  number of digits. */
static inline size_t dp_fmt_u64(char *out, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    __builtin_memcpy(out, tmp + i, sizeof(tmp) - i);
    return sizeof(tmp) - i;
}

/** Appends v in decimal. Returns 0, or -1 on allocation failure. */
int dp_buf_append_dec(struct dp_buf *b, uint64_t v);

/** Appends v in lowercase hexadecimal, without leading zeros. */
int dp_buf_append_hex(struct dp_buf *b, uint64_t v);

/** Appends a formatted string. Returns 0, or -1 on failure. */
int dp_buf_appendf(struct dp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Drops n bytes from the head. Releases the storage when it becomes empty. */
void dp_buf_consume(struct dp_buf *b, size_t n);

/** Empties the buffer but keeps its storage for the next bytes. */
static inline void dp_buf_reset(struct dp_buf *b)
{
    b->off = b->len = 0;
}

/** Returns the storage to the thread's cache; the buffer becomes empty. */
void dp_buf_release(struct dp_buf *b);

/** A block of exactly DP_BUF_BLOCK bytes from the calling thread's pool,
 *  or NULL. Any thread may give it back with dp_block_put. */
void *dp_block_get(void);
void dp_block_put(void *p);

/** Gives back to the kernel the pages of pooled blocks that no thread used
 *  since the previous call, beyond keep blocks kept warm in this thread.
 *  Call it periodically (a worker does, once a second). Returns how many
 *  blocks were given back. */
size_t dp_buf_trim(size_t keep);

/** At thread exit: hands this thread's free blocks to the shared pool. */
void dp_buf_cache_free(void);

#endif
