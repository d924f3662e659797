#include "xds/deps.h"

#include <stdio.h>

#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "xds/registry.h"

static void walk(const ProtobufCMessage *m, struct xds_refs *r, int depth);

static void walk_one(const ProtobufCMessage *m, struct xds_refs *r, int depth)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (d == &google__protobuf__any__descriptor) {
        const Google__Protobuf__Any *any = (const Google__Protobuf__Any *)m;
        const ProtobufCMessageDescriptor *inner = xds_registry_lookup(any->type_url);
        if (inner == NULL)
            return;
        ProtobufCMessage *u = protobuf_c_message_unpack(inner, NULL, any->value.len, any->value.data);
        if (u) {
            walk(u, r, depth + 1);
            protobuf_c_message_free_unpacked(u, NULL);
        }
        return;
    }
    if (d == &envoy__extensions__transport_sockets__tls__v3__sds_secret_config__descriptor) {
        const Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig *s =
            (const Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig *)m;
        if (s->sds_config)
            xds_names_add(&r->sds, s->name);
        return;
    }
    if (d == &envoy__extensions__filters__network__http_connection_manager__v3__rds__descriptor) {
        const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds *rds =
            (const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds *)m;
        xds_names_add(&r->rds, rds->route_config_name);
        return;
    }
    walk(m, r, depth + 1);
}

static void walk(const ProtobufCMessage *m, struct xds_refs *r, int depth)
{
    if (depth > 32)
        return;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t which = *(const uint32_t *)(base + f->quantifier_offset);
            if (which != f->id)
                continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++)
                if (v[k])
                    walk_one(v[k], r, depth);
        } else {
            const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)(base + f->offset);
            if (sub)
                walk_one(sub, r, depth);
        }
    }
}

void xds_refs_collect(const ProtobufCMessage *m, struct xds_refs *r)
{
    if (m)
        walk(m, r, 0);
}

void xds_refs_free(struct xds_refs *r)
{
    xds_names_free(&r->rds);
    xds_names_free(&r->sds);
}

const char *xds_cluster_eds_name(const Envoy__Config__Cluster__V3__Cluster *c)
{
    if (c->cluster_discovery_type_case != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE ||
        c->type != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS)
        return NULL;
    const Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig *ec = c->eds_cluster_config;
    return ec && ec->service_name[0] ? ec->service_name : c->name;
}

void xds_deps_wanted(const struct xds_table *lds, const struct xds_table *cds, struct xds_names *rds,
                     struct xds_names *eds, struct xds_names *sds)
{
    struct xds_refs all = {*rds, *sds};
    for (size_t i = 0; i < lds->n; i++)
        xds_refs_collect(lds->v[i].msg, &all);
    for (size_t i = 0; i < cds->n; i++) {
        xds_refs_collect(cds->v[i].msg, &all);
        if (cds->v[i].msg)
            xds_names_add(eds, xds_cluster_eds_name((const Envoy__Config__Cluster__V3__Cluster *)cds->v[i].msg));
    }
    *rds = all.rds;
    *sds = all.sds;
}

static void mix(uint64_t *h, const struct xds_res *r)
{
    *h = xds_fnv(&r->hash, sizeof(r->hash), *h);
}

int xds_deps_ready(const struct xds_deps_src *src, const struct xds_refs *rf, const char *eds, uint64_t *h,
                   char *missing, size_t mlen)
{
    int ok = 1; /* 1, then counts down past each missing one; only the first is described */
    missing[0] = '\0';
    for (size_t i = 0; i < rf->rds.n; i++) {
        const struct xds_res *r = xds_table_find(&src->rds->res, rf->rds.v[i]);
        if (r)
            mix(h, r);
        else if (ok-- > 0)
            snprintf(missing, mlen, "route configuration \"%s\"", rf->rds.v[i]);
    }
    for (size_t i = 0; i < rf->sds.n; i++) {
        const struct xds_res *r = xds_table_find(&src->sds->res, rf->sds.v[i]);
        if (r)
            mix(h, r);
        else if (!(src->static_secret && src->static_secret(src->ud, rf->sds.v[i])) && ok-- > 0)
            snprintf(missing, mlen, "secret \"%s\"", rf->sds.v[i]);
    }
    if (eds) {
        const struct xds_res *r = xds_table_find(&src->eds->res, eds);
        if (r)
            mix(h, r);
        else if (!xds_state_gave_up(src->eds, eds) && ok-- > 0) /* given up on: no endpoints */
            snprintf(missing, mlen, "endpoints \"%s\"", eds);
    }
    return ok == 1;
}
