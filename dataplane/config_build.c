/*
 * What every config builder uses: Any unpacking and socket addresses.
 * The builders themselves: hcm_build.c, listener_build.c, cluster_build.c.
 */
#include "config_build_priv.h"

#include <arpa/inet.h>

#include "xds/registry.h"

ProtobufCMessage *dp_build_unpack_any(const Google__Protobuf__Any *a, const ProtobufCMessageDescriptor *want,
                                      const char *path, struct xds_cfgerr *e)
{
    if (a == NULL) {
        xds_cfg_fail(e, "%s: required field is missing", path);
        return NULL;
    }
    const char *tn = xds_type_url_name(a->type_url);
    if (strcmp(tn, want->name) != 0) {
        xds_cfg_fail(e, "%s: expected type %s, got %s", path, want->name, a->type_url);
        return NULL;
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(want, NULL, a->value.len, a->value.data);
    if (m == NULL)
        xds_cfg_fail(e, "%s: cannot decode %s", path, want->name);
    return m;
}

int dp_sockaddr_parse(const char *ip, unsigned port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (port > 65535)
        return -1;
    if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *len = sizeof(*s4);
        return 0;
    }
    if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*s6);
        return 0;
    }
    return -1;
}

char *dp_build_format_addr(const char *ip, unsigned port)
{
    char buf[128];
    if (strchr(ip, ':'))
        snprintf(buf, sizeof(buf), "[%s]:%u", ip, port);
    else
        snprintf(buf, sizeof(buf), "%s:%u", ip, port);
    return strdup(buf);
}

int dp_build_socket_address(const Envoy__Config__Core__V3__Address *a, const char *path,
                            const Envoy__Config__Core__V3__SocketAddress **out, struct xds_cfgerr *e)
{
    if (a == NULL)
        return xds_cfg_fail(e, "%s: required field is missing", path);
    if (a->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS)
        return xds_cfg_fail(e, "%s: only socket_address is supported", path);
    const Envoy__Config__Core__V3__SocketAddress *sa = a->socket_address;
    if (sa->address[0] == '\0')
        return xds_cfg_fail(e, "%s.socket_address.address: required field is missing", path);
    if (sa->port_specifier_case != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE)
        return xds_cfg_fail(e, "%s.socket_address.port_value: required field is missing", path);
    if (sa->port_value > 65535)
        return xds_cfg_fail(e, "%s.socket_address.port_value: %u is not a port number", path, sa->port_value);
    /* protocol and resolver_name: xds/unsupported.c */
    *out = sa;
    return 0;
}
