#include "bootstrap.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"
#include "unsupported.h"

static int verr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int verr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

static int check_socket_address(const Envoy__Config__Core__V3__Address *a, const char *path,
                                char *err, size_t errlen)
{
    if (a == NULL)
        return verr(err, errlen, "%s: required field is missing", path);
    if (a->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS)
        return verr(err, errlen, "%s: only socket_address is supported", path);
    const Envoy__Config__Core__V3__SocketAddress *sa = a->socket_address;
    if (sa->address[0] == '\0')
        return verr(err, errlen, "%s.socket_address.address: required field is missing", path);
    if (sa->port_specifier_case != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE)
        return verr(err, errlen, "%s.socket_address.port_value: required field is missing", path);
    if (sa->port_value > 65535)
        return verr(err, errlen, "%s.socket_address.port_value: %u is not a port number", path,
                    sa->port_value);
    if (sa->protocol != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__TCP)
        return verr(err, errlen, "%s.socket_address.protocol: only TCP is supported", path);
    return 0;
}

static int is_ads(const Envoy__Config__Core__V3__ConfigSource *cs)
{
    return cs && cs->config_source_specifier_case ==
                     ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS;
}

static int check_static(const xds_bootstrap_t *bs, char *err, size_t errlen)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = bs->static_resources;
    char path[128];

    if (sr == NULL)
        return 0;
    for (size_t i = 0; i < sr->n_listeners; i++) {
        const Envoy__Config__Listener__V3__Listener *l = sr->listeners[i];
        if (l->name[0] == '\0')
            return verr(err, errlen, "static_resources.listeners[%zu].name: required field is missing", i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(sr->listeners[j]->name, l->name) == 0)
                return verr(err, errlen,
                            "static_resources.listeners[%zu].name: duplicate listener name \"%s\"",
                            i, l->name);
        snprintf(path, sizeof(path), "static_resources.listeners[%zu].address", i);
        if (check_socket_address(l->address, path, err, errlen) < 0)
            return -1;
        if (l->n_filter_chains == 0 && l->default_filter_chain == NULL)
            return verr(err, errlen,
                        "static_resources.listeners[%zu].filter_chains: a listener needs at least "
                        "one filter chain or a default_filter_chain",
                        i);
    }
    for (size_t i = 0; i < sr->n_clusters; i++) {
        const Envoy__Config__Cluster__V3__Cluster *c = sr->clusters[i];
        if (c->name[0] == '\0')
            return verr(err, errlen, "static_resources.clusters[%zu].name: required field is missing", i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(sr->clusters[j]->name, c->name) == 0)
                return verr(err, errlen,
                            "static_resources.clusters[%zu].name: duplicate cluster name \"%s\"", i,
                            c->name);
    }
    for (size_t i = 0; i < sr->n_secrets; i++) {
        const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s = sr->secrets[i];
        if (s->name[0] == '\0')
            return verr(err, errlen, "static_resources.secrets[%zu].name: required field is missing", i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(sr->secrets[j]->name, s->name) == 0)
                return verr(err, errlen,
                            "static_resources.secrets[%zu].name: duplicate secret name \"%s\"", i,
                            s->name);
    }
    return 0;
}

static const Envoy__Config__Cluster__V3__Cluster *find_static_cluster(const xds_bootstrap_t *bs,
                                                                      const char *name)
{
    if (bs->static_resources == NULL)
        return NULL;
    for (size_t i = 0; i < bs->static_resources->n_clusters; i++)
        if (strcmp(bs->static_resources->clusters[i]->name, name) == 0)
            return bs->static_resources->clusters[i];
    return NULL;
}

static int check_dynamic(const xds_bootstrap_t *bs, char *err, size_t errlen)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap__DynamicResources *dr = bs->dynamic_resources;

    if (dr == NULL)
        return 0;
    if (bs->node == NULL || bs->node->id[0] == '\0')
        return verr(err, errlen, "node.id: required when dynamic_resources is set");
    if (dr->lds_config && !is_ads(dr->lds_config))
        return verr(err, errlen, "dynamic_resources.lds_config: only \"ads: {}\" is supported");
    if (dr->cds_config && !is_ads(dr->cds_config))
        return verr(err, errlen, "dynamic_resources.cds_config: only \"ads: {}\" is supported");
    if ((dr->lds_config || dr->cds_config) && dr->ads_config == NULL)
        return verr(err, errlen, "dynamic_resources.ads_config: required when lds_config or "
                                 "cds_config use ads");
    const Envoy__Config__Core__V3__ApiConfigSource *ads = dr->ads_config;
    if (ads == NULL)
        return 0;
    if (ads->api_type != ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__GRPC)
        return verr(err, errlen, "dynamic_resources.ads_config.api_type: only GRPC is supported");
    if (ads->transport_api_version != ENVOY__CONFIG__CORE__V3__API_VERSION__V3)
        return verr(err, errlen, "dynamic_resources.ads_config.transport_api_version: must be V3");
    if (ads->n_grpc_services != 1)
        return verr(err, errlen,
                    "dynamic_resources.ads_config.grpc_services: exactly one entry is required");
    const Envoy__Config__Core__V3__GrpcService *gs = ads->grpc_services[0];
    if (gs->target_specifier_case !=
        ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__TARGET_SPECIFIER_ENVOY_GRPC)
        return verr(err, errlen, "dynamic_resources.ads_config.grpc_services[0]: only envoy_grpc "
                                 "is supported");
    const char *cname = gs->envoy_grpc->cluster_name;
    if (cname[0] == '\0')
        return verr(err, errlen, "dynamic_resources.ads_config.grpc_services[0].envoy_grpc."
                                 "cluster_name: required field is missing");
    if (find_static_cluster(bs, cname) == NULL)
        return verr(err, errlen,
                    "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name: "
                    "\"%s\" is not a static cluster",
                    cname);
    return 0;
}

int xds_bootstrap_check(const xds_bootstrap_t *bs, char *err, size_t errlen)
{
    if (bs->admin && bs->admin->address &&
        check_socket_address(bs->admin->address, "admin.address", err, errlen) < 0)
        return -1;
    if (check_static(bs, err, errlen) < 0)
        return -1;
    if (check_dynamic(bs, err, errlen) < 0)
        return -1;
    return xds_check_unsupported(&bs->base, "", err, errlen);
}

/* ${NAME} and ${NAME:-default} from the environment, so that one ConfigMap
 * serves every pod (POD_NAME, POD_NAMESPACE, ... from the downward API).
 * Returns the expanded text (malloc'd) or NULL with the line at fault. */
static char *expand_env(const char *in, size_t len, size_t *outlen, char *err, size_t errlen)
{
    size_t cap = len + 64, n = 0, line = 1;
    char *out = malloc(cap);
    if (out == NULL) {
        verr(err, errlen, "out of memory");
        return NULL;
    }
    int comment = 0; /* this line is a YAML comment: nothing to expand */
    size_t line_start = 0;
    for (size_t i = 0; i < len;) {
        if (in[i] == '\n') {
            line++;
            line_start = i + 1;
            comment = 0;
        } else if (in[i] == '#' && !comment) {
            /* a comment when only blanks come before it on the line */
            size_t k = line_start;
            while (k < i && (in[k] == ' ' || in[k] == '\t'))
                k++;
            comment = k == i;
        }
        if (comment || !(in[i] == '$' && i + 1 < len && in[i + 1] == '{')) {
            if (n + 1 >= cap && (out = realloc(out, cap *= 2)) == NULL)
                return NULL;
            out[n++] = in[i++];
            continue;
        }
        size_t j = i + 2, name_start = j;
        while (j < len && (in[j] == '_' || (in[j] >= 'A' && in[j] <= 'Z') || (in[j] >= 'a' && in[j] <= 'z') ||
                           (j > name_start && in[j] >= '0' && in[j] <= '9')))
            j++;
        size_t name_len = j - name_start;
        const char *dflt = NULL;
        size_t dflt_len = 0;
        if (j + 1 < len && in[j] == ':' && in[j + 1] == '-') {
            dflt = in + j + 2;
            j += 2;
            while (j < len && in[j] != '}' && in[j] != '\n')
                j++;
            dflt_len = (size_t)(in + j - dflt);
        }
        if (name_len == 0 || j >= len || in[j] != '}') {
            free(out);
            verr(err, errlen, "line %zu: malformed ${...}: expected ${NAME} or ${NAME:-default}", line);
            return NULL;
        }
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)(name_len < sizeof(name) - 1 ? name_len : sizeof(name) - 1),
                 in + name_start);
        const char *v = getenv(name);
        size_t vlen;
        if (v == NULL && dflt == NULL) {
            free(out);
            verr(err, errlen, "line %zu: environment variable %s is not set (use ${%s:-default} for a default)",
                 line, name, name);
            return NULL;
        }
        if (v == NULL) {
            v = dflt;
            vlen = dflt_len;
        } else {
            vlen = strlen(v);
        }
        while (n + vlen + 1 >= cap)
            if ((out = realloc(out, cap *= 2)) == NULL)
                return NULL;
        memcpy(out + n, v, vlen);
        n += vlen;
        i = j + 1;
    }
    out[n] = '\0';
    *outlen = n;
    return out;
}

/* A static listener without a name gets one, as Envoy gives it (a UUID
 * there): here its address, "0.0.0.0_8080", which is unique among
 * listeners and reads well in stats and logs (Envoy's front-proxy example
 * names none). A listener whose address is not a socket address keeps no
 * name, and check_static says which field is wrong. */
static int name_listeners(xds_bootstrap_t *bs)
{
    Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = bs->static_resources;
    for (size_t i = 0; sr && i < sr->n_listeners; i++) {
        Envoy__Config__Listener__V3__Listener *l = sr->listeners[i];
        if (l->name[0] != '\0' || l->address == NULL ||
            l->address->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS)
            continue;
        const Envoy__Config__Core__V3__SocketAddress *sa = l->address->socket_address;
        char name[300];
        snprintf(name, sizeof(name), "%s_%u", sa->address, sa->port_value);
        char *n = strdup(name);
        if (n == NULL)
            return -1;
        if (l->name != protobuf_c_empty_string)
            free(l->name);
        l->name = n;
    }
    return 0;
}

int xds_bootstrap_load(const char *path, xds_bootstrap_t **out, char *err, size_t errlen)
{
    ProtobufCMessage *msg = NULL;
    char msgbuf[1024];

    *out = NULL;
    if (ends_with(path, ".pb")) {
        size_t len;
        char *bytes = xds_read_file(path, &len);
        if (bytes == NULL)
            return verr(err, errlen, "%s: %s", path, strerror(errno));
        msg = protobuf_c_message_unpack(&envoy__config__bootstrap__v3__bootstrap__descriptor, NULL,
                                        len, (const uint8_t *)bytes);
        free(bytes);
        if (msg == NULL)
            return verr(err, errlen, "%s: not a valid binary envoy.config.bootstrap.v3.Bootstrap",
                        path);
    } else {
        size_t len, xlen;
        char *text = xds_read_file(path, &len);
        if (text == NULL)
            return verr(err, errlen, "%s: %s", path, strerror(errno));
        char *expanded = expand_env(text, len, &xlen, msgbuf, sizeof(msgbuf));
        free(text);
        if (expanded == NULL)
            return verr(err, errlen, "%s: %s", path, msgbuf);
        int rc = xds_convert_text(expanded, xlen, &envoy__config__bootstrap__v3__bootstrap__descriptor, &msg,
                                  msgbuf, sizeof(msgbuf));
        free(expanded);
        if (rc < 0)
            return verr(err, errlen, "%s: %s", path, msgbuf);
    }
    xds_bootstrap_t *bs = (xds_bootstrap_t *)msg;
    if (name_listeners(bs) < 0) {
        xds_bootstrap_free(bs);
        return verr(err, errlen, "%s: out of memory", path);
    }
    if (xds_bootstrap_check(bs, msgbuf, sizeof(msgbuf)) < 0) {
        xds_bootstrap_free(bs);
        return verr(err, errlen, "%s: %s", path, msgbuf);
    }
    *out = bs;
    return 0;
}

void xds_bootstrap_free(xds_bootstrap_t *bs)
{
    if (bs)
        protobuf_c_message_free_unpacked(&bs->base, NULL);
}
