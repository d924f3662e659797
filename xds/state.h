/*
 * The xDS client's per-type state, pure data with no I/O: per type URL the
 * accepted version_info, the last nonce, the subscribed names (with when
 * each was first asked for and whether its initial fetch was given up on)
 * and the resource table, name -> (version, hash of its bytes, decoded
 * message). Every name index is a struct strmap (xds/strmap.h).
 *
 * Nothing here locks: the owner (the ADS thread) serialises changes and
 * decides what readers may see.
 */
#ifndef LEGATE_XDS_STATE_H
#define LEGATE_XDS_STATE_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "google/protobuf/any.pb-c.h"
#include "xds/strmap.h"

#include "xds/hash.h"
/* A resource's hash: of its bytes as they came (what a control plane sends
 * again unchanged hashes the same, and needs no decoding to tell). */
uint64_t xds_any_hash(const Google__Protobuf__Any *any);

/* ---- sets of names, in insertion order ---------------------------------- */

struct xds_names {
    char **v;
    size_t n, cap;
    struct strmap set;           /* v[i] -> i */
};

/* Adds s (copied) unless it is NULL, empty or there already. */
void xds_names_add(struct xds_names *n, const char *s);
/* 1 and *at (may be NULL) when s is in n. */
int xds_names_index(const struct xds_names *n, const char *s, size_t *at);
int xds_names_has(const struct xds_names *n, const char *s);
/* Sorts v (strcmp order). */
void xds_names_sort(struct xds_names *n);
int xds_names_equal(const struct xds_names *a, const struct xds_names *b);
void xds_names_free(struct xds_names *n);

/* ---- resource tables ----------------------------------------------------- */

/* One accepted resource. */
struct xds_res {
    char *name;
    char *version;               /* version_info of the response that brought it */
    ProtobufCMessage *msg;       /* owned */
    uint64_t hash;               /* of its bytes */
};

/* Resources in the order they were added; pointers into v last until the
 * next change. */
struct xds_table {
    struct xds_res *v;
    size_t n, cap;
    struct strmap idx;           /* name -> index in v */
};

struct xds_res *xds_table_find(const struct xds_table *t, const char *name);
/* Puts (name, version, msg, hash) in name's slot, appending one when name
 * is new; the entry takes msg. What the slot held goes to *old (owned by
 * the caller; zeroed when the name is new). Returns the slot. */
struct xds_res *xds_table_set(struct xds_table *t, const char *name, const char *version,
                              ProtobufCMessage *msg, uint64_t hash, struct xds_res *old);
/* Appends r as it is (the table takes its strings and message); r->name
 * must not be in t. */
void xds_table_append(struct xds_table *t, const struct xds_res *r);
/* Removes name; what it held goes to *out (owned by the caller) when out
 * is not NULL, else it is freed. 1 when name was there. Keeps the order. */
int xds_table_take(struct xds_table *t, const char *name, struct xds_res *out);
/* Keeps only the resources whose name is in keep; 1 when any went. */
int xds_table_retain(struct xds_table *t, const struct xds_names *keep);
void xds_table_free(struct xds_table *t);
void xds_res_clear(struct xds_res *r);

/* A table can be built aside from the one readers see, sharing its
 * messages: a copy of r whose message stays r's (lent). */
struct xds_res xds_res_lend(const struct xds_res *r);
/* Publishes nt as *t (nt is emptied): each entry of the old table whose
 * message nt holds under the same name gives it up; the old table goes to
 * *old, for the caller to free after releasing its lock. O(n), no decoding. */
void xds_table_replace(struct xds_table *t, struct xds_table *nt, struct xds_table *old);

/* Resources by hash, to find those a state-of-the-world response sends
 * again unchanged: a strmap keyed by the hash's hex digits. */
void xds_table_by_hash(const struct xds_table *t, struct strmap *out);
/* The index of an unclaimed resource with hash h, which is then claimed
 * (a duplicate in the response decodes on its own and is refused by name). */
int xds_by_hash_take(struct strmap *m, uint64_t h, size_t *at);

/* ---- per type ----------------------------------------------------------- */

enum xds_sub_state { XDS_SUB_WAITING, XDS_SUB_GAVE_UP, XDS_SUB_ARRIVED };

struct xds_type_state {
    const char *type_url;
    struct xds_table res;
    char *version;               /* last accepted version_info, or NULL */
    char *nonce;                 /* last nonce seen, or NULL */
    struct xds_names subs;       /* named types: names asked for, sorted */
    double *since;               /* parallel to subs: when first asked for */
    int *gave_up;                /* parallel to subs: enum xds_sub_state; ARRIVED is
                                    never looked at again */
    int node_sent;               /* on this stream */
    int got_first;               /* a first response arrived (ever) */
    double started;              /* first request (ever) */
    int timed_out;               /* wildcard types: initial fetch gave up */
};

/* Replaces a string field (s may be NULL: ""). */
void xds_set_str(char **field, const char *s);

/* Makes want (sorted, taken: emptied) the subscription of t when it
 * differs; names kept keep their since/gave_up, new ones start at now;
 * resources no longer subscribed are forgotten. 1 when it changed. */
int xds_state_subscribe(struct xds_type_state *t, struct xds_names *want, double now);

/* Subscriptions whose initial fetch is due at now: those that arrived are
 * marked so, the others given up on (fn(ud, name) for each, fn may be
 * NULL). Each is looked at once. Returns how many were given up on. */
size_t xds_state_expire(struct xds_type_state *t, double now, double timeout,
                        void (*fn)(void *ud, const char *name), void *ud);

/* 1 when every subscribed name has arrived or been given up on. */
int xds_state_complete(const struct xds_type_state *t);

/* 1 when name is subscribed and no longer waited for (given up on, or
 * found at its due time). */
int xds_state_gave_up(const struct xds_type_state *t, const char *name);

void xds_state_free(struct xds_type_state *t);

#endif
