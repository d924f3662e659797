#include "log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int lg_current_level = LG_INFO;

static const char *const level_names[] = {
    [LG_TRACE] = "trace", [LG_DEBUG] = "debug", [LG_INFO] = "info",
    [LG_WARN] = "warning", [LG_ERROR] = "error", [LG_CRITICAL] = "critical",
    [LG_OFF] = "off",
};

int lg_level_parse(const char *name)
{
    if (strcmp(name, "warn") == 0)
        return LG_WARN;
    for (int i = LG_TRACE; i <= LG_OFF; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

const char *lg_level_name(int level)
{
    if (level < LG_TRACE || level > LG_OFF)
        return "?";
    return level_names[level];
}

void lg_set_level(int level)
{
    __atomic_store_n(&lg_current_level, level, __ATOMIC_RELAXED);
}

void lg_write(int level, const char *component, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    int n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof(line), "[%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ][%s][%s] ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                 tm.tm_sec, ts.tv_nsec / 1000000, lg_level_name(level), component);
    if (n < 0 || (size_t)n >= sizeof(line))
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    /* One write per line: lines from several threads never interleave. */
    fwrite(line, 1, len, stderr);
}
