/*
 * The config as written: the ControlConfig message that the file holds and
 * the management API edits (secrets' file names kept, nothing packed), and
 * writing it back to the file atomically.
 */
#ifndef LEGATE_CONTROL_STORE_H
#define LEGATE_CONTROL_STORE_H

#include <stddef.h>

#include "config.h"

typedef Legate__Control__V1__ControlConfig cp_cc_t;

/** Parses path into *out (free with cp_store_free). Returns 0, or -1 with
 *  a message that starts with path and names the field. */
int cp_store_read(const char *path, cp_cc_t **out, char *err, size_t errlen);

/** A deep copy of cc, or NULL when out of memory. */
cp_cc_t *cp_store_clone(const cp_cc_t *cc);

void cp_store_free(cp_cc_t *cc);

/** The global resource of type t named name (NULL if none). */
ProtobufCMessage *cp_store_find(const cp_cc_t *cc, enum cp_type t, const char *name);

/** The name of resource m of type t (its name or cluster_name field). */
const char *cp_store_name(const ProtobufCMessage *m, enum cp_type t);

/** Adds m (owned from now on) to cc's global resources of type t, in place
 *  of the one with the same name if any. Returns 1 if added, 0 if it
 *  replaced one, -1 when out of memory (m is then freed). */
int cp_store_put(cp_cc_t *cc, enum cp_type t, ProtobufCMessage *m);

/** Removes the global resource of type t named name. Returns 0, or -1 if
 *  there is none. */
int cp_store_delete(cp_cc_t *cc, enum cp_type t, const char *name);

/**
 * Writes cc to path as JSON (YAML reads it too), nothing redacted: the file
 * is legate-control's own store and may hold keys, so it is made 0600. The
 * write is atomic: a temporary file in the same directory, fsync, rename,
 * fsync of the directory. Returns 0, or -1 with a message in err.
 */
int cp_store_write(const char *path, const cp_cc_t *cc, char *err, size_t errlen);

#endif
