/*
 * Bytes as YAML or JSON (libyaml reads both) through the one YAML/JSON ->
 * protobuf-c converter (xds/convert.c), into every message type it is
 * used for: the bootstrap, each xDS resource type, legate-control's config
 * file and management API bodies, and the unit tests' message with every
 * field kind. What converts is then
 *  - packed, unpacked and packed again: the bytes must be equal (a message
 *    the converter builds is a well-formed protobuf-c message);
 *  - written as JSON by xds/json.c (what /config_dump serves);
 *  - for the bootstrap, checked by xds_bootstrap_check;
 * and freed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert_test.pb-c.h"
#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "legate/control/v1/control.pb-c.h"
#include "xds/bootstrap.h"
#include "xds/convert.h"
#include "xds/json.h"

static const ProtobufCMessageDescriptor *const types[] = {
    &envoy__config__bootstrap__v3__bootstrap__descriptor,
    &envoy__config__listener__v3__listener__descriptor,
    &envoy__config__cluster__v3__cluster__descriptor,
    &envoy__config__route__v3__route_configuration__descriptor,
    &envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
    &envoy__extensions__transport_sockets__tls__v3__secret__descriptor,
    &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
    &legate__control__v1__control_config__descriptor,
    &legate__test__all_kinds__descriptor,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void roundtrip(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *a = malloc(n + 1), *b = NULL;
    if (a == NULL)
        return;
    if (protobuf_c_message_pack(m, a) != n)
        abort();
    ProtobufCMessage *u = protobuf_c_message_unpack(m->descriptor, NULL, n, a);
    if (u == NULL) {
        fprintf(stderr, "fuzz_convert: a converted %s does not unpack\n", m->descriptor->name);
        abort();
    }
    size_t n2 = protobuf_c_message_get_packed_size(u);
    b = malloc(n2 + 1);
    if (b && (n2 != n || protobuf_c_message_pack(u, b) != n || memcmp(a, b, n) != 0)) {
        fprintf(stderr, "fuzz_convert: %s changes through pack/unpack\n", m->descriptor->name);
        abort();
    }
    protobuf_c_message_free_unpacked(u, NULL);
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* LEGATE_FUZZ_VERBOSE=1: what each type made of the input (for seeds). */
    static int verbose = -1;
    if (verbose < 0)
        verbose = getenv("LEGATE_FUZZ_VERBOSE") != NULL;
    char err[1024];
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        ProtobufCMessage *m;
        int rc = xds_convert_text((const char *)data, size, types[i], &m, err, sizeof(err));
        if (verbose)
            fprintf(stderr, "%s: %s\n", types[i]->name, rc == 0 ? "ok" : err);
        if (rc != 0) {
            if (err[0] == '\0') {
                fprintf(stderr, "fuzz_convert: %s: an error without a message\n", types[i]->name);
                abort();
            }
            continue;
        }
        roundtrip(m);
        struct xds_sb sb = {0};
        xds_json_message(&sb, m);
        free(sb.p);
        if (types[i] == &envoy__config__bootstrap__v3__bootstrap__descriptor)
            xds_bootstrap_check((const xds_bootstrap_t *)m, err, sizeof(err));
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return 0;
}
