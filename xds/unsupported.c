#include "unsupported.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/core/v3/config_source.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "json.h"
#include "registry.h"
#include "unknown.h"

enum when {
    U_SET,      /* any value but the default (a BoolValue: true) */
    U_FALSE,    /* a BoolValue set to false */
    U_NOT_ALLOW /* an enum other than 0 and other than allow */
};

struct rule {
    const char *msg;   /* full message name */
    const char *field; /* field name */
    enum when when;
    int allow;
    const char *why; /* the message: "not supported" when NULL */
};

#define HCM "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
#define H2 "envoy.config.core.v3.Http2ProtocolOptions"

/* Fields that the protos keep (so that they decode and can be refused) and
 * that legate does not implement. Fields left out of this list are either
 * implemented, refused where they are read, or do not change what a
 * request gets (metadata, stats names, locality, drain type). */
static const struct rule rules[] = {
    {HCM, "xff_num_trusted_hops", U_SET, 0, NULL},
    {HCM, "add_user_agent", U_SET, 0, NULL},
    {HCM, "strip_any_host_port", U_SET, 0, NULL},
    {"envoy.config.core.v3.Http1ProtocolOptions", "allow_absolute_url", U_FALSE, 0,
     "legate always accepts absolute URLs"},
    {"envoy.config.core.v3.Http1ProtocolOptions", "accept_http_10", U_SET, 0, NULL},
    {"envoy.config.core.v3.Http1ProtocolOptions", "default_host_for_http_10", U_SET, 0, NULL},
    {H2, "max_outbound_frames", U_SET, 0, "not supported (nghttp2's own flood limits apply)"},
    {H2, "max_outbound_control_frames", U_SET, 0, "not supported (nghttp2's own flood limits apply)"},
    {H2, "max_consecutive_inbound_frames_with_empty_payload", U_SET, 0,
     "not supported (nghttp2's own flood limits apply)"},
    {H2, "max_inbound_priority_frames_per_stream", U_SET, 0,
     "not supported (nghttp2's own flood limits apply)"},
    {H2, "max_inbound_window_update_frames_per_data_frame_sent", U_SET, 0,
     "not supported (nghttp2's own flood limits apply)"},
    {H2, "stream_error_on_invalid_http_messaging", U_SET, 0, NULL},
    {H2, "override_stream_error_on_invalid_http_message", U_SET, 0, NULL},
    {H2, "connection_keepalive", U_SET, 0, "HTTP/2 PING keepalive is not supported"},
    {"envoy.config.core.v3.HttpProtocolOptions", "max_connection_duration", U_SET, 0, NULL},
    {"envoy.config.core.v3.HttpProtocolOptions", "headers_with_underscores_action", U_SET, 0,
     "only ALLOW is supported"},
    {"envoy.config.core.v3.UpstreamHttpProtocolOptions", "auto_sni", U_SET, 0,
     "not supported (set the UpstreamTlsContext's sni)"},
    {"envoy.config.core.v3.UpstreamHttpProtocolOptions", "auto_san_validation", U_SET, 0,
     "not supported (use the validation context's SAN matchers)"},
    {"envoy.config.cluster.v3.Cluster.OriginalDstLbConfig", "use_http_header", U_SET, 0, NULL},
    {"envoy.config.route.v3.RouteConfiguration", "internal_only_headers", U_SET, 0, NULL},
    {"envoy.config.route.v3.RetryPolicy", "retry_on", U_SET, 0, "retries are not supported"},
    {"envoy.config.route.v3.RetryPolicy", "num_retries", U_SET, 0, "retries are not supported"},
    {"envoy.config.route.v3.RetryPolicy", "per_try_timeout", U_SET, 0, "retries are not supported"},
    {"envoy.config.route.v3.RedirectAction", "port_redirect", U_SET, 0, NULL},
    {"envoy.config.listener.v3.Listener", "continue_on_listener_filters_timeout", U_SET, 0,
     "not supported (a connection that times out in the listener filters is closed)"},
    {"envoy.config.listener.v3.Listener", "enable_reuse_port", U_FALSE, 0,
     "legate's workers always share the port with SO_REUSEPORT"},
    {"envoy.config.listener.v3.FilterChain", "transport_socket_connect_timeout", U_SET, 0, NULL},
    {"envoy.config.core.v3.GrpcService", "initial_metadata", U_SET, 0, NULL},
    {"envoy.config.core.v3.SubstitutionFormatString", "omit_empty_values", U_SET, 0, NULL},
    {"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", "require_sni", U_SET, 0, NULL},
    /* Once refused where the builders read them (listener, HCM and cluster builders), same texts. */
    {"envoy.config.listener.v3.Listener", "additional_addresses", U_SET, 0, NULL},
    {"envoy.config.listener.v3.Listener", "transparent", U_SET, 0, NULL},
    {"envoy.config.listener.v3.Listener", "bind_to_port", U_FALSE, 0, "false is not supported"},
    {"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter", "config_discovery", U_SET, 0,
     NULL},
    {"envoy.config.cluster.v3.Cluster", "cluster_type", U_SET, 0, "custom cluster types are not supported"},
    {"envoy.config.endpoint.v3.LocalityLbEndpoints", "priority", U_SET, 0, "only priority 0 is supported"},
    {"envoy.config.core.v3.SocketAddress", "protocol", U_NOT_ALLOW, 0, "only TCP is supported"},
    {"envoy.config.core.v3.SocketAddress", "resolver_name", U_SET, 0, "custom resolvers are not supported"},
};

#define N_RULES (sizeof(rules) / sizeof(rules[0]))

/* The rules' message and field descriptors, resolved once: a walk then
 * compares pointers (10,000 clusters are walked in milliseconds). */
static const ProtobufCMessageDescriptor *rule_desc[N_RULES];
static const ProtobufCFieldDescriptor *rule_field[N_RULES];
static pthread_once_t rules_once = PTHREAD_ONCE_INIT;

static void resolve_rules(void)
{
    for (size_t k = 0; k < N_RULES; k++) {
        rule_desc[k] = xds_registry_lookup(rules[k].msg);
        rule_field[k] = rule_desc[k] ? protobuf_c_message_descriptor_get_field_by_name(rule_desc[k], rules[k].field)
                                     : NULL;
    }
}

size_t xds_unsupported_unresolved(void)
{
    size_t n = 0;
    pthread_once(&rules_once, resolve_rules);
    for (size_t k = 0; k < N_RULES; k++)
        n += rule_field[k] == NULL;
    return n;
}

struct walk {
    char *err;
    size_t errlen;
    struct xds_path path;
    xds_ignored_cb ignored;
    void *ud;
};

static const void *field_ptr(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    return (const char *)m + f->offset;
}

static size_t quantity(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    return *(const size_t *)((const char *)m + f->quantifier_offset);
}

/* Whether a singular field holds a value (proto3: not the default). */
static int is_set(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    const void *p = field_ptr(m, f);
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        return *(const uint32_t *)((const char *)m + f->quantifier_offset) == f->id;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset &&
        f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING)
        return *(const protobuf_c_boolean *)((const char *)m + f->quantifier_offset);
    switch (f->type) {
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(const ProtobufCMessage *const *)p != NULL;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)p;
        return s != NULL && s[0] != '\0';
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len != 0;
    case PROTOBUF_C_TYPE_BOOL:
        return *(const protobuf_c_boolean *)p != 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return *(const uint64_t *)p != 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)p != 0;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)p != 0;
    default: /* 32-bit integers and enums */
        return *(const uint32_t *)p != 0;
    }
}

/* For a rule's field that is set: whether its value is one the rule refuses. */
static int refused(const struct rule *r, const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return quantity(m, f) > 0;
    if (!is_set(m, f))
        return 0;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE && f->descriptor == &google__protobuf__bool_value__descriptor) {
        const Google__Protobuf__BoolValue *b = *(Google__Protobuf__BoolValue *const *)field_ptr(m, f);
        return r->when == U_FALSE ? !b->value : b->value;
    }
    if (r->when == U_NOT_ALLOW)
        return *(const int *)field_ptr(m, f) != r->allow;
    return r->when == U_SET;
}

static int walk_message(struct walk *w, const ProtobufCMessage *m, int depth);

static int walk_value(struct walk *w, const ProtobufCMessage *v, int depth)
{
    if (v->descriptor != &google__protobuf__any__descriptor)
        return walk_message(w, v, depth + 1);
    const Google__Protobuf__Any *any = (const Google__Protobuf__Any *)v;
    const ProtobufCMessageDescriptor *d = any->type_url ? xds_registry_lookup(any->type_url) : NULL;
    if (d == NULL) /* an unknown type is refused where it is used, by name */
        return 0;
    ProtobufCMessage *u = protobuf_c_message_unpack(d, NULL, any->value.len, any->value.data);
    if (u == NULL) /* likewise: "not a valid ..." where it is used */
        return 0;
    int rc = walk_message(w, u, depth + 1);
    protobuf_c_message_free_unpacked(u, NULL);
    return rc;
}

/* A map's entries ("key" and "value" fields) show as name["key"]. */
static const char *map_key(const ProtobufCMessage *e)
{
    const ProtobufCMessageDescriptor *d = e->descriptor;
    if (d->n_fields != 2 || strcmp(d->fields[0].name, "key") != 0 ||
        d->fields[0].type != PROTOBUF_C_TYPE_STRING || strcmp(d->fields[1].name, "value") != 0)
        return NULL;
    return *(const char *const *)field_ptr(e, &d->fields[0]);
}

static int walk_message(struct walk *w, const ProtobufCMessage *m, int depth)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (depth > 64)
        return 0;
    /* the fields legate's protos lack (protobuf-c kept them) */
    if (m->n_unknown_fields && xds_unknown_check(m, w->path.s, w->ignored, w->ud, w->err, w->errlen) < 0)
        return -1;
    if (d == &envoy__config__core__v3__config_source__descriptor) {
        /* RDS, EDS and SDS come over the ADS stream, whatever else a
         * ConfigSource names */
        const Envoy__Config__Core__V3__ConfigSource *cs = (const Envoy__Config__Core__V3__ConfigSource *)m;
        if (cs->config_source_specifier_case != ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER__NOT_SET &&
            cs->config_source_specifier_case != ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS &&
            cs->config_source_specifier_case != ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_SELF) {
            snprintf(w->err, w->errlen, "%s: only \"ads: {}\" (or \"self: {}\") is supported", w->path.s);
            return -1;
        }
    }
    size_t mine[N_RULES], n_mine = 0; /* the rules about this message */
    for (size_t k = 0; k < N_RULES; k++)
        if (rule_desc[k] == d)
            mine[n_mine++] = k;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        for (size_t r = 0; r < n_mine; r++) {
            size_t k = mine[r];
            if (rule_field[k] != f || !refused(&rules[k], m, f))
                continue;
            size_t mark = xds_path_push(&w->path, "%s%s", w->path.len ? "." : "", f->name);
            snprintf(w->err, w->errlen, "%s: %s", w->path.s, rules[k].why ? rules[k].why : "not supported");
            xds_path_pop(&w->path, mark);
            return -1;
        }
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = quantity(m, f);
            const ProtobufCMessage *const *v = *(const ProtobufCMessage *const *const *)field_ptr(m, f);
            for (size_t j = 0; j < n; j++) {
                const char *key = map_key(v[j]);
                size_t mark = key ? xds_path_push(&w->path, "%s%s[\"%s\"]", w->path.len ? "." : "", f->name, key)
                                  : xds_path_push(&w->path, "%s%s[%zu]", w->path.len ? "." : "", f->name, j);
                const ProtobufCMessage *e = v[j];
                if (key) { /* the value, under the entry's name */
                    e = *(const ProtobufCMessage *const *)field_ptr(v[j], &v[j]->descriptor->fields[1]);
                    if (v[j]->descriptor->fields[1].type != PROTOBUF_C_TYPE_MESSAGE)
                        e = NULL;
                }
                int rc = e ? walk_value(w, e, depth) : 0;
                xds_path_pop(&w->path, mark);
                if (rc < 0)
                    return -1;
            }
        } else if (is_set(m, f)) {
            const ProtobufCMessage *v = *(const ProtobufCMessage *const *)field_ptr(m, f);
            size_t mark = xds_path_push(&w->path, "%s%s", w->path.len ? "." : "", f->name);
            int rc = walk_value(w, v, depth);
            xds_path_pop(&w->path, mark);
            if (rc < 0)
                return -1;
        }
    }
    return 0;
}

int xds_check_resource(const ProtobufCMessage *m, const char *prefix, xds_ignored_cb ignored, void *ud, char *err,
                       size_t errlen)
{
    struct walk w = {.err = err, .errlen = errlen, .ignored = ignored, .ud = ud};
    pthread_once(&rules_once, resolve_rules);
    if (prefix && prefix[0])
        xds_path_push(&w.path, "%s", prefix);
    return walk_message(&w, m, 0);
}

int xds_check_unsupported(const ProtobufCMessage *m, const char *prefix, char *err, size_t errlen)
{
    return xds_check_resource(m, prefix, NULL, NULL, err, errlen);
}

struct ignored_json {
    struct xds_sb *b;
    size_t n;
};

static void add_ignored(void *ud, const char *path, const char *msg, const char *field, const char *why)
{
    (void)msg;
    (void)field;
    (void)why;
    struct ignored_json *j = ud;
    xds_sb_add(j->b, j->n ? "," : "", j->n ? 1 : 0);
    xds_sb_str(j->b, path);
    j->n++;
}

size_t xds_ignored_fields_json(const ProtobufCMessage *m, struct xds_sb *b)
{
    struct xds_sb items = {0};
    struct ignored_json j = {&items, 0};
    char err[600];
    /* an installed resource passed this walk; should it fail, nothing is
     * listed rather than half */
    if (xds_check_resource(m, "", add_ignored, &j, err, sizeof(err)) < 0)
        j.n = 0;
    xds_sb_add(b, "[", 1);
    if (j.n)
        xds_sb_add(b, items.p, items.len);
    xds_sb_add(b, "]", 1);
    free(items.p);
    return j.n;
}
