#include "bench/hdr.h"

#include <math.h>
#include <stdlib.h>

int lb_hdr_init(struct lb_hdr *h, uint64_t highest)
{
    h->highest = highest;
    h->ncounts = lb_hdr_index(highest) + 1;
    h->counts = calloc(h->ncounts, sizeof(*h->counts));
    h->total = 0;
    h->min = UINT64_MAX;
    h->max = 0;
    return h->counts ? 0 : -1;
}

void lb_hdr_free(struct lb_hdr *h)
{
    free(h->counts);
    h->counts = NULL;
    h->ncounts = 0;
}

void lb_hdr_range(uint32_t idx, uint64_t *lo, uint64_t *hi)
{
    const uint32_t half = 1u << (LB_HDR_SUB_BITS - 1);

    if (idx < 2 * half) {
        *lo = *hi = idx;
        return;
    }
    unsigned bucket = (idx >> (LB_HDR_SUB_BITS - 1)) - 1;
    uint64_t sub = (idx & (half - 1)) + half;
    *lo = sub << bucket;
    *hi = *lo + (1ull << bucket) - 1;
}

void lb_hdr_merge(struct lb_hdr *dst, const struct lb_hdr *src)
{
    for (uint32_t i = 0; i < src->ncounts && i < dst->ncounts; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t lb_hdr_percentile(const struct lb_hdr *h, double p)
{
    if (h->total == 0)
        return 0;
    if (p >= 100.0)
        return h->max;
    uint64_t want = (uint64_t)ceil(p / 100.0 * (double)h->total);
    if (want < 1)
        want = 1;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < h->ncounts; i++) {
        seen += h->counts[i];
        if (seen >= want) {
            uint64_t lo, hi;
            lb_hdr_range(i, &lo, &hi);
            if (hi > h->max)
                hi = h->max;
            if (hi < h->min)
                hi = h->min;
            return hi;
        }
    }
    return h->max;
}
