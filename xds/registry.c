#include "registry.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

extern const ProtobufCMessageDescriptor *const legate_proto_descriptors[];
extern const size_t legate_proto_descriptor_count;

static const ProtobufCMessageDescriptor **sorted;
static pthread_once_t sorted_once = PTHREAD_ONCE_INIT;

static int cmp_desc(const void *a, const void *b)
{
    const ProtobufCMessageDescriptor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static void build_sorted(void)
{
    size_t n = legate_proto_descriptor_count;
    sorted = malloc(n * sizeof(*sorted));
    if (sorted == NULL)
        abort(); /* boot time, a few KiB: nothing sensible to do without it */
    memcpy(sorted, legate_proto_descriptors, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), cmp_desc);
}

const char *xds_type_url_name(const char *type_url)
{
    const char *slash = strrchr(type_url, '/');
    return slash ? slash + 1 : type_url;
}

const ProtobufCMessageDescriptor *xds_registry_lookup(const char *type_url)
{
    const char *name = xds_type_url_name(type_url);
    size_t lo = 0, hi = legate_proto_descriptor_count;

    pthread_once(&sorted_once, build_sorted);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, sorted[mid]->name);
        if (c == 0)
            return sorted[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}
