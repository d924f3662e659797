#include "xds/state.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *xstrdup0(const char *s)
{
    char *d = strdup(s ? s : "");
    if (d == NULL)
        abort();
    return d;
}

uint64_t xds_any_hash(const Google__Protobuf__Any *any)
{
    uint64_t h = xds_fnv(any->value.data, any->value.len, XDS_FNV_INIT);
    return xds_fnv(&any->value.len, sizeof(any->value.len), h);
}

void xds_set_str(char **field, const char *s)
{
    free(*field);
    *field = xstrdup0(s);
}

/* ---- names ----------------------------------------------------------------- */

int xds_names_index(const struct xds_names *n, const char *s, size_t *at)
{
    return strmap_get(&n->set, s, at);
}

int xds_names_has(const struct xds_names *n, const char *s)
{
    return xds_names_index(n, s, NULL);
}

void xds_names_add(struct xds_names *n, const char *s)
{
    if (s == NULL || s[0] == '\0' || xds_names_has(n, s))
        return;
    if (n->n == n->cap) {
        n->cap = n->cap ? n->cap * 2 : 8;
        n->v = realloc(n->v, n->cap * sizeof(*n->v));
        if (n->v == NULL)
            abort();
    }
    n->v[n->n] = xstrdup0(s);
    strmap_put(&n->set, s, n->n);
    n->n++;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void xds_names_sort(struct xds_names *n)
{
    if (n->n < 2)
        return;
    qsort(n->v, n->n, sizeof(*n->v), cmp_str);
    for (size_t i = 0; i < n->n; i++)
        strmap_put(&n->set, n->v[i], i);
}

int xds_names_equal(const struct xds_names *a, const struct xds_names *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return 0;
    return 1;
}

void xds_names_free(struct xds_names *n)
{
    for (size_t i = 0; i < n->n; i++)
        free(n->v[i]);
    free(n->v);
    strmap_free(&n->set);
    memset(n, 0, sizeof(*n));
}

/* ---- tables ------------------------------------------------------------------ */

void xds_res_clear(struct xds_res *r)
{
    free(r->name);
    free(r->version);
    if (r->msg)
        protobuf_c_message_free_unpacked(r->msg, NULL);
    memset(r, 0, sizeof(*r));
}

struct xds_res *xds_table_find(const struct xds_table *t, const char *name)
{
    size_t i;
    return strmap_get(&t->idx, name, &i) ? &t->v[i] : NULL;
}

void xds_table_append(struct xds_table *t, const struct xds_res *r)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 8;
        t->v = realloc(t->v, t->cap * sizeof(*t->v));
        if (t->v == NULL)
            abort();
    }
    t->v[t->n] = *r;
    strmap_put(&t->idx, r->name, t->n);
    t->n++;
}

struct xds_res *xds_table_set(struct xds_table *t, const char *name, const char *version,
                              ProtobufCMessage *msg, uint64_t hash, struct xds_res *old)
{
    struct xds_res nr = {xstrdup0(name), xstrdup0(version), msg, hash};
    struct xds_res *slot = xds_table_find(t, name);
    memset(old, 0, sizeof(*old));
    if (slot) {
        *old = *slot;
        *slot = nr;
        return slot;
    }
    xds_table_append(t, &nr);
    return &t->v[t->n - 1];
}

/* Re-indexes v[from ..). */
static void reindex(struct xds_table *t, size_t from)
{
    for (size_t i = from; i < t->n; i++)
        strmap_put(&t->idx, t->v[i].name, i);
}

int xds_table_take(struct xds_table *t, const char *name, struct xds_res *out)
{
    size_t i;
    if (!strmap_del(&t->idx, name, &i))
        return 0;
    if (out)
        *out = t->v[i];
    else
        xds_res_clear(&t->v[i]);
    memmove(&t->v[i], &t->v[i + 1], (t->n - i - 1) * sizeof(*t->v));
    t->n--;
    reindex(t, i);
    return 1;
}

int xds_table_retain(struct xds_table *t, const struct xds_names *keep)
{
    size_t kept = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (xds_names_has(keep, t->v[i].name)) {
            t->v[kept++] = t->v[i];
        } else {
            strmap_del(&t->idx, t->v[i].name, NULL);
            xds_res_clear(&t->v[i]);
        }
    }
    if (kept == t->n)
        return 0;
    t->n = kept;
    reindex(t, 0);
    return 1;
}

void xds_table_free(struct xds_table *t)
{
    for (size_t i = 0; i < t->n; i++)
        xds_res_clear(&t->v[i]);
    free(t->v);
    strmap_free(&t->idx);
    memset(t, 0, sizeof(*t));
}

struct xds_res xds_res_lend(const struct xds_res *r)
{
    return (struct xds_res){xstrdup0(r->name), xstrdup0(r->version), r->msg, r->hash};
}

void xds_table_replace(struct xds_table *t, struct xds_table *nt, struct xds_table *old)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct xds_res *e = xds_table_find(nt, t->v[i].name);
        if (e && e->msg == t->v[i].msg)
            t->v[i].msg = NULL;
    }
    *old = *t;
    *t = *nt;
    memset(nt, 0, sizeof(*nt));
}

static void hash_key(uint64_t h, char key[17])
{
    snprintf(key, 17, "%016" PRIx64, h);
}

void xds_table_by_hash(const struct xds_table *t, struct strmap *out)
{
    char key[17];
    for (size_t i = 0; i < t->n; i++) {
        if (t->v[i].msg == NULL)
            continue;
        hash_key(t->v[i].hash, key);
        if (!strmap_get(out, key, NULL)) /* equal bytes, equal name: cannot repeat */
            strmap_put(out, key, i);
    }
}

int xds_by_hash_take(struct strmap *m, uint64_t h, size_t *at)
{
    char key[17];
    hash_key(h, key);
    return strmap_del(m, key, at);
}

/* ---- per type ------------------------------------------------------------------ */

int xds_state_subscribe(struct xds_type_state *t, struct xds_names *want, double now)
{
    xds_names_sort(want);
    if (xds_names_equal(want, &t->subs)) {
        xds_names_free(want);
        return 0;
    }
    double *since = calloc(want->n + 1, sizeof(*since));
    int *gave_up = calloc(want->n + 1, sizeof(*gave_up));
    if (since == NULL || gave_up == NULL)
        abort();
    for (size_t i = 0; i < want->n; i++) {
        size_t j;
        since[i] = now;
        if (xds_names_index(&t->subs, want->v[i], &j)) {
            since[i] = t->since[j];
            gave_up[i] = t->gave_up[j];
        }
    }
    xds_names_free(&t->subs);
    free(t->since);
    free(t->gave_up);
    t->subs = *want;
    memset(want, 0, sizeof(*want));
    t->since = since;
    t->gave_up = gave_up;
    /* Resources nobody refers to any more are forgotten. */
    xds_table_retain(&t->res, &t->subs);
    return 1;
}

size_t xds_state_expire(struct xds_type_state *t, double now, double timeout,
                        void (*fn)(void *ud, const char *name), void *ud)
{
    size_t n = 0;
    /* Each subscription is looked up once, when its timeout is due: a
     * lookup per subscription per tick cost 2% of a core with 10,000
     * clusters. */
    for (size_t i = 0; i < t->subs.n; i++) {
        if (t->gave_up[i] != XDS_SUB_WAITING || now - t->since[i] <= timeout)
            continue;
        if (xds_table_find(&t->res, t->subs.v[i]) != NULL) {
            t->gave_up[i] = XDS_SUB_ARRIVED;
        } else {
            t->gave_up[i] = XDS_SUB_GAVE_UP;
            if (fn)
                fn(ud, t->subs.v[i]);
            n++;
        }
    }
    return n;
}

int xds_state_complete(const struct xds_type_state *t)
{
    for (size_t i = 0; i < t->subs.n; i++)
        if (t->gave_up[i] == XDS_SUB_WAITING && xds_table_find(&t->res, t->subs.v[i]) == NULL)
            return 0;
    return 1;
}

int xds_state_gave_up(const struct xds_type_state *t, const char *name)
{
    size_t at;
    return xds_names_index(&t->subs, name, &at) && t->gave_up[at] != XDS_SUB_WAITING;
}

void xds_state_free(struct xds_type_state *t)
{
    xds_table_free(&t->res);
    free(t->version);
    free(t->nonce);
    xds_names_free(&t->subs);
    free(t->since);
    free(t->gave_up);
    memset(t, 0, sizeof(*t));
}
