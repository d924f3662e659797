/*
 * A log-linear latency histogram in the manner of HdrHistogram.
 *
 * Values fall in power-of-two buckets, each split into 1024 linear
 * sub-buckets (2048 for the first), so a recorded value is kept to within
 * 1/1024 of itself: three significant digits. Values 0..2047 are exact.
 * Recording is an index computation and an increment; no allocation.
 * One histogram per thread; lb_hdr_merge() adds them up at the end.
 */
#ifndef LEGATE_BENCH_HDR_H
#define LEGATE_BENCH_HDR_H

#include <stddef.h>
#include <stdint.h>

#define LB_HDR_SUB_BITS 11 /* 2048 sub-buckets: three significant digits */

struct lb_hdr {
    uint64_t *counts;
    uint32_t ncounts;
    uint64_t highest; /* larger values are recorded as this one */
    uint64_t total;
    uint64_t min;     /* exact; UINT64_MAX while empty */
    uint64_t max;     /* exact */
};

/** Index of the counter that holds v. */
static inline uint32_t lb_hdr_index(uint64_t v)
{
    /* Number of significant bits, at least LB_HDR_SUB_BITS. */
    unsigned bits = 64u - (unsigned)__builtin_clzll(v | ((1u << LB_HDR_SUB_BITS) - 1));
    unsigned bucket = bits - LB_HDR_SUB_BITS;
    return (uint32_t)(bucket << (LB_HDR_SUB_BITS - 1)) + (uint32_t)(v >> bucket);
}

/** Prepares an empty histogram for values 0..highest. Returns 0, or -1 if
 *  out of memory. */
int lb_hdr_init(struct lb_hdr *h, uint64_t highest);

/** Frees the counters; h can be initialised again. */
void lb_hdr_free(struct lb_hdr *h);

/** Records one value. */
static inline void lb_hdr_record(struct lb_hdr *h, uint64_t v)
{
    if (v > h->highest)
        v = h->highest;
    h->counts[lb_hdr_index(v)]++;
    h->total++;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

/** Adds src's counts to dst; both must have been made with the same highest. */
void lb_hdr_merge(struct lb_hdr *dst, const struct lb_hdr *src);

/** The value at percentile p (0..100): the highest value equivalent to the
 *  counter holding the ceil(p% * total)-th smallest recording, capped at the
 *  exact maximum. 0 when the histogram is empty. */
uint64_t lb_hdr_percentile(const struct lb_hdr *h, double p);

/** Lowest and highest value that share counter idx. */
void lb_hdr_range(uint32_t idx, uint64_t *lo, uint64_t *hi);

#endif
