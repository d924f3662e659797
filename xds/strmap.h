/*
 * A string -> index hash table (open addressing, linear probing) for the
 * xDS state: resource names to their slot, sets of subscribed names. Keys
 * are copied; values are whatever the owner indexes with. Removal shifts
 * the entries of the probe run back (no tombstones), so a table that sees
 * many removals does not slow down.
 */
#ifndef LEGATE_XDS_STRMAP_H
#define LEGATE_XDS_STRMAP_H

#include <stddef.h>
#include <stdint.h>

struct strmap {
    struct strmap_ent {
        char *key;     /* NULL: empty */
        uint64_t hash;
        size_t val;
    } *e;
    size_t cap;        /* 0 or a power of two */
    size_t n;
};

/* Sets key to val (replacing an existing value). Aborts on out of memory. */
void strmap_put(struct strmap *m, const char *key, size_t val);
/* 1 and *val when key is there, else 0. val may be NULL. */
int strmap_get(const struct strmap *m, const char *key, size_t *val);
/* Removes key; 1 and *val (val may be NULL) when it was there, else 0. */
int strmap_del(struct strmap *m, const char *key, size_t *val);
/* Empties the table, keeping its memory. */
void strmap_clear(struct strmap *m);
void strmap_free(struct strmap *m);

#endif
