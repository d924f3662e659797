/*
 * One DiscoveryResponse, from the wire to the ACK or NACK: the xDS
 * client's half of applying it. Here: the resources are decoded and
 * checked on their own (type, name, duplicates, fields legate refuses:
 * xds/unsupported.h, and fields legate's protos lack: xds/unknown.h,
 * refused by path or, when they cannot change traffic, announced with a
 * warning and listed in xds_batch.ignored); the owner compiles and installs them through
 * xds_response_ops (dataplane/dynamic.c); then one short critical section
 * publishes the new table, the nonce, the version (when nothing was
 * rejected) and the subscriptions that follow from it, and the response is
 * ACKed, or NACKed with the previous version and an error_detail that names
 * every rejected resource and field.
 *
 * Everything here runs on the ADS thread, which alone changes the tables:
 * it reads them without the lock; the lock is for admin readers.
 */
#ifndef LEGATE_XDS_RESPONSE_H
#define LEGATE_XDS_RESPONSE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "xds/client.h"
#include "xds/state.h"

/* One response being applied. */
struct xds_batch {
    int type;
    const char *version;         /* the response's version_info */
    size_t n;
    ProtobufCMessage **msgs;     /* decoded and valid, else NULL; NULL once taken */
    uint64_t *hashes;            /* of each resource's bytes */
    size_t *reused;              /* state of the world: the published table's index + 1
                                    of the message taken over, or 0 */
    struct xds_names refused;    /* set a field legate does not implement */
    char **ignored;              /* "Message.field" per ignorable field of an accepted
                                    resource (xds/unknown.h), for the owner's counters */
    size_t n_ignored;
    struct xds_errs errs;
    /* The new set, built aside until the commit; it shares (borrows) the
     * messages it keeps with the published table. */
    struct xds_table nt;
};

/* What the owner does with a response. All three are called on the ADS
 * thread, in this order, once per response. */
struct xds_response_ops {
    /** Compiles what b brings and installs it (one swap): puts the new set
     *  of b->type in b->nt (taking what it keeps out of b->msgs, which are
     *  decoded and checked), adds what it rejects to b->errs. What it
     *  leaves in b->msgs is freed with the batch: a message reused from the
     *  published table (b->reused[i] != 0, state of the world) is lent and
     *  must be taken into b->nt. */
    void (*apply)(void *ud, struct xds_batch *b);
    /** After apply, before the commit: stats and logs (began: xds_now()
     *  when the response was taken up). */
    void (*applied)(void *ud, const struct xds_batch *b,
                    const Envoy__Service__Discovery__V3__DiscoveryResponse *resp, double began);
    /** With the lock held, once the new table and the subscriptions are
     *  published (readiness). */
    void (*published)(void *ud);
};

/**
 * Handles resp as it arrived on c's stream: decodes it, lets ops apply it,
 * publishes the result under lock and sends the ACK or NACK (and the
 * subscriptions new references need) through xds_client_send. A response
 * of a type legate does not subscribe to is ignored (with a warning).
 */
void xds_client_handle_response(struct xds_client *c, pthread_mutex_t *lock, const struct xds_response_ops *ops,
                                void *ud, const Envoy__Service__Discovery__V3__DiscoveryResponse *resp);

#endif
