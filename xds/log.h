/*
 * Logging shared by legate and legate-control. One line per event on stderr:
 *   [2026-11-23T10:00:00.123Z][info][xds] message
 * The level check happens in the macro, before any argument is evaluated or
 * formatted, so a disabled debug line costs one load and one compare.
 * Never pass key material or secret contents to these macros.
 */
#ifndef LEGATE_LOG_H
#define LEGATE_LOG_H

#include <stdarg.h>

enum lg_level {
    LG_TRACE = 0,
    LG_DEBUG,
    LG_INFO,
    LG_WARN,
    LG_ERROR,
    LG_CRITICAL,
    LG_OFF,
};

extern int lg_current_level;

/** Parses an Envoy level name (trace, debug, info, warning/warn, error,
 *  critical, off). Returns the level, or -1 if the name is unknown. */
int lg_level_parse(const char *name);
/** Name of a level ("info"). */
const char *lg_level_name(int level);
void lg_set_level(int level);

void lg_write(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define LG(level, comp, ...)                                                   \
    do {                                                                       \
        if ((level) >= lg_current_level)                                       \
            lg_write((level), (comp), __VA_ARGS__);                            \
    } while (0)

#define LG_T(comp, ...) LG(LG_TRACE, comp, __VA_ARGS__)
#define LG_D(comp, ...) LG(LG_DEBUG, comp, __VA_ARGS__)
#define LG_I(comp, ...) LG(LG_INFO, comp, __VA_ARGS__)
#define LG_W(comp, ...) LG(LG_WARN, comp, __VA_ARGS__)
#define LG_E(comp, ...) LG(LG_ERROR, comp, __VA_ARGS__)

#endif
