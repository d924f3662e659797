#include "xds/cfgerr.h"

#include <stdarg.h>
#include <stdio.h>

int xds_cfg_fail(struct xds_cfgerr *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err, e->errlen, fmt, ap);
    va_end(ap);
    return -1;
}
