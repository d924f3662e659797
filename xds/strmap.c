#include "xds/strmap.h"

#include <stdlib.h>
#include <string.h>

#include "xds/hash.h"

static uint64_t str_hash(const char *s)
{
    uint64_t h = xds_fnv_str(s, XDS_FNV_INIT);
    return h ^ (h >> 29);
}

static struct strmap_ent *probe(const struct strmap *m, const char *key, uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct strmap_ent *e = &m->e[i];
        if (e->key == NULL || (e->hash == h && strcmp(e->key, key) == 0))
            return e;
    }
}

static void grow(struct strmap *m)
{
    struct strmap old = *m;
    m->cap = old.cap ? old.cap * 2 : 16;
    m->e = calloc(m->cap, sizeof(*m->e));
    if (m->e == NULL)
        abort();
    for (size_t i = 0; i < old.cap; i++)
        if (old.e[i].key)
            *probe(m, old.e[i].key, old.e[i].hash) = old.e[i];
    free(old.e);
}

void strmap_put(struct strmap *m, const char *key, size_t val)
{
    if ((m->n + 1) * 2 > m->cap)
        grow(m);
    uint64_t h = str_hash(key);
    struct strmap_ent *e = probe(m, key, h);
    if (e->key == NULL) {
        e->key = strdup(key);
        if (e->key == NULL)
            abort();
        e->hash = h;
        m->n++;
    }
    e->val = val;
}

/* key's entry (its value copied to *val when val is not NULL), or NULL. */
static struct strmap_ent *find(const struct strmap *m, const char *key, size_t *val)
{
    if (m->n == 0)
        return NULL;
    struct strmap_ent *e = probe(m, key, str_hash(key));
    if (e->key == NULL)
        return NULL;
    if (val)
        *val = e->val;
    return e;
}

int strmap_get(const struct strmap *m, const char *key, size_t *val)
{
    return find(m, key, val) != NULL;
}

int strmap_del(struct strmap *m, const char *key, size_t *val)
{
    struct strmap_ent *e = find(m, key, val);
    if (e == NULL)
        return 0;
    free(e->key);
    e->key = NULL;
    m->n--;
    /* Backward shift: an entry after the hole moves into it unless its home
     * slot lies cyclically in (hole, entry]. */
    size_t mask = m->cap - 1, hole = (size_t)(e - m->e);
    for (size_t i = (hole + 1) & mask; m->e[i].key; i = (i + 1) & mask) {
        size_t home = m->e[i].hash & mask;
        if (((i - home) & mask) >= ((i - hole) & mask)) {
            m->e[hole] = m->e[i];
            m->e[i].key = NULL;
            hole = i;
        }
    }
    return 1;
}

void strmap_clear(struct strmap *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        free(m->e[i].key);
        m->e[i].key = NULL;
    }
    m->n = 0;
}

void strmap_free(struct strmap *m)
{
    strmap_clear(m);
    free(m->e);
    memset(m, 0, sizeof(*m));
}
