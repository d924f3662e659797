#include "stats.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xds/strmap.h"
#include "xds/json.h"

#define CHUNK 4096
#define MAX_CHUNKS 512      /* 2M slots */
#define MAX_BLOCKS 258      /* the shared block + up to 256 workers (+1 spare) */

static const double bounds[DP_HIST_BUCKETS] = {0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000,
                                              10000, 30000, 60000, 300000, 600000, 1800000, 3600000};

struct block {
    int64_t *chunks[MAX_CHUNKS]; /* installed once, never moved */
    int used;
};

struct entry {
    enum dp_stat_kind kind;
    char *full;                  /* scope.tag.name */
    char *scope, *tag, *name;
    dp_stat_t slot;
};

static struct block blocks[MAX_BLOCKS]; /* [0]: threads that are not workers */
static _Thread_local struct block *mine;
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *entries;
static size_t n_entries, cap_entries;
static struct strmap by_name;   /* full name -> index in entries */
static uint32_t next_slot = 1; /* slot 0 is "none" */

static char *dupe(const char *s)
{
    char *d = strdup(s ? s : "");
    if (d == NULL)
        abort();
    return d;
}

dp_stat_t dp_stat_register(enum dp_stat_kind kind, const char *scope, const char *tag, const char *name)
{
    char full[512];
    if (tag && tag[0])
        snprintf(full, sizeof(full), "%s.%s.%s", scope, tag, name);
    else
        snprintf(full, sizeof(full), "%s.%s", scope, name);
    pthread_mutex_lock(&reg_lock);
    size_t i;
    if (strmap_get(&by_name, full, &i)) {
        dp_stat_t s = entries[i].slot;
        pthread_mutex_unlock(&reg_lock);
        return s;
    }
    uint32_t need = kind == DP_STAT_HISTOGRAM ? DP_HIST_SLOTS : 1;
    if (next_slot + need >= (uint32_t)CHUNK * MAX_CHUNKS) {
        pthread_mutex_unlock(&reg_lock);
        return 0;
    }
    if (n_entries == cap_entries) {
        cap_entries = cap_entries ? cap_entries * 2 : 256;
        entries = realloc(entries, cap_entries * sizeof(*entries));
        if (entries == NULL)
            abort();
    }
    /* A histogram never straddles two chunks. */
    if (next_slot / CHUNK != (next_slot + need - 1) / CHUNK)
        next_slot = (next_slot / CHUNK + 1) * CHUNK;
    struct entry *e = &entries[n_entries++];
    e->kind = kind;
    e->full = dupe(full);
    e->scope = dupe(scope);
    e->tag = tag && tag[0] ? dupe(tag) : NULL;
    e->name = dupe(name);
    e->slot = next_slot;
    next_slot += need;
    strmap_put(&by_name, full, n_entries - 1);
    pthread_mutex_unlock(&reg_lock);
    return e->slot;
}

void dp_stats_thread_attach(int worker_index)
{
    if (worker_index + 1 >= MAX_BLOCKS)
        return;
    mine = &blocks[worker_index + 1];
    __atomic_store_n(&mine->used, 1, __ATOMIC_RELEASE);
}

/* The slot's address in block b, allocating its chunk (owner thread, or
 * anyone for the shared block: a compare-and-swap installs it). */
static int64_t *slot_of(struct block *b, dp_stat_t st)
{
    uint32_t c = st / CHUNK;
    int64_t *chunk = __atomic_load_n(&b->chunks[c], __ATOMIC_ACQUIRE);
    if (chunk == NULL) {
        int64_t *fresh = calloc(CHUNK, sizeof(int64_t));
        if (fresh == NULL)
            return NULL;
        int64_t *expected = NULL;
        if (__atomic_compare_exchange_n(&b->chunks[c], &expected, fresh, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            chunk = fresh;
        } else {
            free(fresh);
            chunk = expected;
        }
    }
    return &chunk[st % CHUNK];
}

void dp_stat_add(dp_stat_t st, int64_t delta)
{
    if (st == 0)
        return;
    if (mine) {
        int64_t *p = slot_of(mine, st);
        if (p) /* single writer: a plain load and store, no locked instruction */
            __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + delta, __ATOMIC_RELAXED);
        return;
    }
    int64_t *p = slot_of(&blocks[0], st);
    if (p)
        __atomic_add_fetch(p, delta, __ATOMIC_RELAXED);
}

void dp_stat_set(dp_stat_t st, int64_t value)
{
    if (st == 0)
        return;
    /* Gauges that are set live only in the shared block. */
    int64_t *p = slot_of(&blocks[0], st);
    if (p)
        __atomic_store_n(p, value, __ATOMIC_RELAXED);
}

void dp_stat_observe_ms(dp_stat_t st, double ms)
{
    if (st == 0)
        return;
    size_t b = 0;
    while (b < DP_HIST_BUCKETS && ms > bounds[b])
        b++;
    dp_stat_add(st, 1);
    dp_stat_add(st + 1, (int64_t)(ms * 1000));
    dp_stat_add(st + 2 + (dp_stat_t)b, 1);
}

int64_t dp_stat_value(dp_stat_t st)
{
    int64_t sum = 0;
    for (int i = 0; i < MAX_BLOCKS; i++) {
        if (i > 0 && !__atomic_load_n(&blocks[i].used, __ATOMIC_ACQUIRE))
            continue;
        int64_t *chunk = __atomic_load_n(&blocks[i].chunks[st / CHUNK], __ATOMIC_ACQUIRE);
        if (chunk)
            sum += __atomic_load_n(&chunk[st % CHUNK], __ATOMIC_RELAXED);
    }
    return sum;
}

/* ---- output ------------------------------------------------------------------ */

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const struct entry *)a)->full, ((const struct entry *)b)->full);
}

/* A sorted copy of the registry (names are never freed: safe to read). */
static struct entry *snapshot(size_t *n)
{
    pthread_mutex_lock(&reg_lock);
    struct entry *v = malloc((n_entries + 1) * sizeof(*v));
    if (v == NULL)
        abort();
    memcpy(v, entries, n_entries * sizeof(*v));
    *n = n_entries;
    pthread_mutex_unlock(&reg_lock);
    qsort(v, *n, sizeof(*v), cmp_entry);
    return v;
}

static double quantile(dp_stat_t st, double q)
{
    int64_t count = dp_stat_value(st);
    if (count <= 0)
        return 0;
    double want = q * (double)count, seen = 0;
    for (size_t b = 0; b <= DP_HIST_BUCKETS; b++) {
        double n = (double)dp_stat_value(st + 2 + (dp_stat_t)b);
        if (seen + n >= want && n > 0) {
            double lo = b ? bounds[b - 1] : 0, hi = b < DP_HIST_BUCKETS ? bounds[b] : bounds[b - 1] * 2;
            return lo + (hi - lo) * ((want - seen) / n);
        }
        seen += n;
    }
    return bounds[DP_HIST_BUCKETS - 1];
}

char *dp_stats_text(const char *filter)
{
    size_t n;
    struct entry *v = snapshot(&n);
    struct xds_sb b = {0};
    xds_sb_add(&b, "", 0);
    for (size_t i = 0; i < n; i++) {
        if (filter && filter[0] && strstr(v[i].full, filter) == NULL)
            continue;
        if (v[i].kind == DP_STAT_HISTOGRAM) {
            int64_t count = dp_stat_value(v[i].slot);
            xds_sb_addf(&b, "%s: count=%lld sum_ms=%.3f P50=%.3f P90=%.3f P99=%.3f\n", v[i].full, (long long)count,
                        (double)dp_stat_value(v[i].slot + 1) / 1000.0, quantile(v[i].slot, 0.5),
                        quantile(v[i].slot, 0.9), quantile(v[i].slot, 0.99));
        } else {
            xds_sb_addf(&b, "%s: %lld\n", v[i].full, (long long)dp_stat_value(v[i].slot));
        }
    }
    free(v);
    return b.p;
}

static const char *label_for(const char *scope)
{
    if (strcmp(scope, "listener") == 0)
        return "envoy_listener_address";
    if (strcmp(scope, "http") == 0)
        return "envoy_http_conn_manager_prefix";
    if (strcmp(scope, "cluster") == 0)
        return "envoy_cluster_name";
    if (strcmp(scope, "sds") == 0)
        return "envoy_secret_name";
    return "tag";
}

/* Prometheus metric names: [a-zA-Z_:][a-zA-Z0-9_:]* */
static void prom_name(char *out, size_t len, const struct entry *e)
{
    snprintf(out, len, "legate_%s_%s", e->scope, e->name);
    for (char *p = out; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_'))
            *p = '_';
}

static void prom_labels(struct xds_sb *b, const struct entry *e, const char *extra)
{
    if (e->tag == NULL && extra == NULL)
        return;
    xds_sb_add(b, "{", 1);
    if (e->tag) {
        xds_sb_addf(b, "%s=", label_for(e->scope));
        xds_sb_str(b, e->tag); /* JSON escaping is what the format asks for: \\ \" \n */
    }
    if (extra)
        xds_sb_addf(b, "%s%s", e->tag ? "," : "", extra);
    xds_sb_add(b, "}", 1);
}

/* Prometheus wants every sample of a family together: by scope and name,
 * then tag. */
static int cmp_family(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    int c = strcmp(x->scope, y->scope);
    if (c == 0)
        c = strcmp(x->name, y->name);
    if (c == 0)
        c = strcmp(x->tag ? x->tag : "", y->tag ? y->tag : "");
    return c;
}

char *dp_stats_prometheus(void)
{
    size_t n;
    struct entry *v = snapshot(&n);
    qsort(v, n, sizeof(*v), cmp_family);
    struct xds_sb b = {0};
    char name[600], prev[600] = "";
    xds_sb_add(&b, "", 0);
    for (size_t i = 0; i < n; i++) {
        const struct entry *e = &v[i];
        prom_name(name, sizeof(name), e);
        if (strcmp(name, prev) != 0) {
            const char *type = e->kind == DP_STAT_COUNTER ? "counter" : e->kind == DP_STAT_GAUGE ? "gauge" : "histogram";
            xds_sb_addf(&b, "# TYPE %s %s\n", name, type);
            snprintf(prev, sizeof(prev), "%s", name);
        }
        if (e->kind != DP_STAT_HISTOGRAM) {
            xds_sb_addf(&b, "%s", name);
            prom_labels(&b, e, NULL);
            xds_sb_addf(&b, " %lld\n", (long long)dp_stat_value(e->slot));
            continue;
        }
        int64_t cum = 0;
        for (size_t k = 0; k <= DP_HIST_BUCKETS; k++) {
            char le[64];
            cum += dp_stat_value(e->slot + 2 + (dp_stat_t)k);
            if (k < DP_HIST_BUCKETS)
                snprintf(le, sizeof(le), "le=\"%g\"", bounds[k]);
            else
                snprintf(le, sizeof(le), "le=\"+Inf\"");
            xds_sb_addf(&b, "%s_bucket", name);
            prom_labels(&b, e, le);
            xds_sb_addf(&b, " %lld\n", (long long)cum);
        }
        xds_sb_addf(&b, "%s_sum", name);
        prom_labels(&b, e, NULL);
        xds_sb_addf(&b, " %.3f\n", (double)dp_stat_value(e->slot + 1) / 1000.0);
        xds_sb_addf(&b, "%s_count", name);
        prom_labels(&b, e, NULL);
        xds_sb_addf(&b, " %lld\n", (long long)dp_stat_value(e->slot));
    }
    free(v);
    return b.p;
}
