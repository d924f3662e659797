/*
 * Dependency tracking, as Envoy follows references: LDS -> RDS and SDS
 * names, CDS -> EDS and SDS names. Pure: it reads resource tables
 * (xds/state.h) and messages, and changes nothing but what it returns.
 *
 * - what a listener or cluster needs: xds_refs_collect (+ xds_cluster_eds_name);
 * - what to subscribe to: xds_deps_wanted, over every listener and cluster;
 * - whether it is warming, and which dependents must be rebuilt when a
 *   resource changes: xds_deps_ready mixes the hash of every resource it
 *   refers to into the dependent's own, so a dependent whose references
 *   changed gets a new hash (and is built anew) while the others keep
 *   theirs (and the object built from them).
 */
#ifndef LEGATE_XDS_DEPS_H
#define LEGATE_XDS_DEPS_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "xds/state.h"

/* The RDS names (HttpConnectionManager.rds.route_config_name) and SDS
 * names (SdsSecretConfig with an sds_config) a resource refers to. */
struct xds_refs {
    struct xds_names rds, sds;
};

/* Adds m's references to r: a descriptor-driven walk that unpacks Any. */
void xds_refs_collect(const ProtobufCMessage *m, struct xds_refs *r);
void xds_refs_free(struct xds_refs *r);

/* The EDS service name of an EDS cluster (eds_cluster_config.service_name,
 * or the cluster's name); NULL for other kinds. */
const char *xds_cluster_eds_name(const Envoy__Config__Cluster__V3__Cluster *c);

/* The names RDS, EDS and SDS must subscribe to for the listeners in lds and
 * the clusters in cds (added to the three sets, unsorted). */
void xds_deps_wanted(const struct xds_table *lds, const struct xds_table *cds, struct xds_names *rds,
                     struct xds_names *eds, struct xds_names *sds);

/* Where references are looked up. */
struct xds_deps_src {
    const struct xds_type_state *rds, *eds, *sds;
    /* 1 when a secret called name exists outside SDS (static_resources). */
    int (*static_secret)(void *ud, const char *name);
    void *ud;
};

/* 1 when every reference in rf, and the endpoints eds (may be NULL; given
 * up on counts as there), has arrived; else 0 with the first one missing
 * described in missing ("secret \"server-cert\""). The hash of each
 * referenced resource is mixed into *h. */
int xds_deps_ready(const struct xds_deps_src *src, const struct xds_refs *rf, const char *eds, uint64_t *h,
                   char *missing, size_t mlen);

#endif
