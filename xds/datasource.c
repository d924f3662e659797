#include "datasource.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"

static char *dup_bytes(const void *p, size_t n)
{
    char *b = malloc(n + 1);
    if (b) {
        if (n)
            memcpy(b, p, n);
        b[n] = '\0';
    }
    return b;
}

int xds_datasource_read(const Envoy__Config__Core__V3__DataSource *ds, char **out, size_t *len,
                        char *err, size_t errlen)
{
    *out = NULL;
    *len = 0;
    if (ds == NULL) {
        snprintf(err, errlen, "no data source set");
        return -1;
    }
    switch (ds->specifier_case) {
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME:
        *out = xds_read_file(ds->filename, len);
        if (*out == NULL) {
            snprintf(err, errlen, "filename: %s: %s", ds->filename, strerror(errno));
            return -1;
        }
        return 0;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES:
        *out = dup_bytes(ds->inline_bytes.data, ds->inline_bytes.len);
        *len = ds->inline_bytes.len;
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING:
        *len = strlen(ds->inline_string);
        *out = dup_bytes(ds->inline_string, *len);
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_ENVIRONMENT_VARIABLE: {
        const char *v = getenv(ds->environment_variable);
        if (v == NULL) {
            snprintf(err, errlen, "environment_variable: %s is not set", ds->environment_variable);
            return -1;
        }
        *len = strlen(v);
        *out = dup_bytes(v, *len);
        break;
    }
    default:
        snprintf(err, errlen, "no data source set");
        return -1;
    }
    if (*out == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}
