/*
 * The one hash of the tree: FNV-1a, 64-bit. Used for xDS resource and
 * selection hashes (unchanged resources are recognised by it) and the
 * string map. Not for anything a peer could choose to collide with.
 */
#ifndef LEGATE_XDS_HASH_H
#define LEGATE_XDS_HASH_H

#include <stddef.h>
#include <stdint.h>

#define XDS_FNV_INIT 14695981039346656037ull

/** FNV-1a of p[0..n), continuing from h (XDS_FNV_INIT to start). */
static inline uint64_t xds_fnv(const void *p, size_t n, uint64_t h)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

/** The same over a NUL-terminated string (without the NUL). */
static inline uint64_t xds_fnv_str(const char *s, uint64_t h)
{
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ull;
    }
    return h;
}

#endif
