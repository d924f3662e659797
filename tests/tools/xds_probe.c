/*
 * xds-probe: a minimal ADS client for tests. It opens one
 * StreamAggregatedResources stream, subscribes to one type, and prints a
 * line per response:
 *   version=<v> nonce=<n> resources=<name1>,<name2>
 * acknowledging each as Envoy does (or rejecting it with --nack).
 *
 *   xds-probe --server HOST:PORT --node ID --type lds|rds|cds|eds|sds
 *             [--cluster NAME] [--names a,b] [--count N] [--nack DETAIL]
 *             [--timeout SECONDS] [--dump DIR]
 *             [--ca FILE [--cert FILE --key FILE] [--sni NAME]]
 * --dump writes each resource received, serialized, to DIR/<name>.pb.
 * --cluster sets the node's cluster. --ca connects over TLS, verifying the
 * server against FILE (as NAME with --sni); --cert/--key add a client
 * certificate (mTLS).
 *
 * Exit status: 0 after N responses (the last ACK/NACK delivered and the
 * stream closed cleanly), 2 if they did not all arrive within the timeout
 * (10 s by default), 1 on any other error.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"

#define ADS_METHOD "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define TYPE_PREFIX "type.googleapis.com/"

static const struct {
    const char *flag, *url, *key;
    const ProtobufCMessageDescriptor *desc;
} types[] = {
    {"lds", TYPE_PREFIX "envoy.config.listener.v3.Listener", "name",
     &envoy__config__listener__v3__listener__descriptor},
    {"rds", TYPE_PREFIX "envoy.config.route.v3.RouteConfiguration", "name",
     &envoy__config__route__v3__route_configuration__descriptor},
    {"cds", TYPE_PREFIX "envoy.config.cluster.v3.Cluster", "name",
     &envoy__config__cluster__v3__cluster__descriptor},
    {"eds", TYPE_PREFIX "envoy.config.endpoint.v3.ClusterLoadAssignment", "cluster_name",
     &envoy__config__endpoint__v3__cluster_load_assignment__descriptor},
    {"sds", TYPE_PREFIX "envoy.extensions.transport_sockets.tls.v3.Secret", "name",
     &envoy__extensions__transport_sockets__tls__v3__secret__descriptor},
};

/* Completion-queue tags. */
enum { TAG_STATUS = 1, TAG_SEND, TAG_RECV, TAG_CLOSE };

struct probe {
    grpc_completion_queue *cq;
    grpc_call *call;
    int outstanding; /* batches in flight */
    int send_busy;
    grpc_byte_buffer *send_bb;
    grpc_byte_buffer *recv_bb;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status;
    grpc_slice status_details;
    int status_done;
};

static void usage(void)
{
    fprintf(stderr, "usage: xds-probe --server HOST:PORT --node ID --type lds|rds|cds|eds|sds\n"
                    "                 [--cluster NAME] [--names a,b] [--count N] [--nack DETAIL]\n"
                    "                 [--timeout S] [--dump DIR]\n"
                    "                 [--ca FILE [--cert FILE --key FILE] [--sni NAME]]\n");
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (f == NULL) {
        perror(path);
        return NULL;
    }
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *p = realloc(buf, cap);
            if (p == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = p;
        }
        size_t n = fread(buf + len, 1, 4096, f);
        len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

static grpc_byte_buffer *pack_message(const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(len);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

static int start(struct probe *p, const grpc_op *ops, size_t n, long tag)
{
    grpc_call_error e = grpc_call_start_batch(p->call, ops, n, (void *)tag, NULL);
    if (e != GRPC_CALL_OK) {
        fprintf(stderr, "xds-probe: grpc_call_start_batch: error %d\n", (int)e);
        return -1;
    }
    p->outstanding++;
    return 0;
}

static const char *node_cluster = "";

static int send_request(struct probe *p, int first, const char *node, const char *url,
                        char **names, size_t n_names, const char *version, const char *nonce,
                        const char *nack)
{
    Envoy__Service__Discovery__V3__DiscoveryRequest req =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    Envoy__Config__Core__V3__Node nd = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    grpc_op ops[2];
    size_t n = 0;

    if (first) {
        nd.id = (char *)node;
        nd.cluster = (char *)node_cluster;
        req.node = &nd;
    }
    req.type_url = (char *)url;
    req.resource_names = names;
    req.n_resource_names = n_names;
    req.version_info = (char *)version;
    req.response_nonce = (char *)nonce;
    if (nack) {
        st.code = 3; /* INVALID_ARGUMENT, as Envoy sends */
        st.message = (char *)nack;
        req.error_detail = &st;
    }
    memset(ops, 0, sizeof(ops));
    if (first)
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = p->send_bb = pack_message(&req.base);
    p->send_busy = 1;
    return start(p, ops, n, TAG_SEND);
}

static int start_recv(struct probe *p, int first)
{
    grpc_op ops[2];
    size_t n = 0;

    memset(ops, 0, sizeof(ops));
    if (first) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &p->initial_md;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &p->recv_bb;
    return start(p, ops, n, TAG_RECV);
}

static const char *dump_dir;

static int dump(const char *name, const ProtobufCBinaryData *value)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s.pb", dump_dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(value->data, 1, value->len, f) != value->len) {
        fprintf(stderr, "xds-probe: %s: cannot write\n", path);
        if (f)
            fclose(f);
        return -1;
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* Prints one response's line. Returns 0, or -1 if it does not decode. */
static int print_response(const Envoy__Service__Discovery__V3__DiscoveryResponse *r, int t)
{
    printf("version=%s nonce=%s resources=", r->version_info, r->nonce);
    for (size_t i = 0; i < r->n_resources; i++) {
        const Google__Protobuf__Any *any = r->resources[i];
        ProtobufCMessage *m = protobuf_c_message_unpack(types[t].desc, NULL, any->value.len,
                                                        any->value.data);
        if (m == NULL || strcmp(any->type_url, types[t].url) != 0) {
            fprintf(stderr, "xds-probe: resource %zu is not a %s\n", i, types[t].url);
            if (m)
                protobuf_c_message_free_unpacked(m, NULL);
            return -1;
        }
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(types[t].desc, types[t].key);
        const char *name = *(char **)((char *)m + f->offset);
        printf("%s%s", i ? "," : "", name);
        int rc = dump_dir ? dump(name, &any->value) : 0;
        protobuf_c_message_free_unpacked(m, NULL);
        if (rc < 0)
            return -1;
    }
    printf("\n");
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    const char *server = NULL, *node = NULL, *type = NULL, *names_arg = NULL, *nack = NULL;
    const char *ca = NULL, *cert = NULL, *key = NULL, *sni = NULL;
    long count = 1, timeout_s = 10;
    static const struct option longopts[] = {
        {"server", required_argument, NULL, 's'}, {"node", required_argument, NULL, 'n'},
        {"type", required_argument, NULL, 't'},   {"names", required_argument, NULL, 'N'},
        {"count", required_argument, NULL, 'c'},  {"nack", required_argument, NULL, 'k'},
        {"timeout", required_argument, NULL, 'T'}, {"dump", required_argument, NULL, 'd'},
        {"cluster", required_argument, NULL, 'C'}, {"ca", required_argument, NULL, 'A'},
        {"cert", required_argument, NULL, 'E'},    {"key", required_argument, NULL, 'K'},
        {"sni", required_argument, NULL, 'S'},
        {NULL, 0, NULL, 0},
    };
    int ch, t = -1;

    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 's': server = optarg; break;
        case 'n': node = optarg; break;
        case 't': type = optarg; break;
        case 'N': names_arg = optarg; break;
        case 'c': count = strtol(optarg, NULL, 10); break;
        case 'k': nack = optarg; break;
        case 'T': timeout_s = strtol(optarg, NULL, 10); break;
        case 'd': dump_dir = optarg; break;
        case 'C': node_cluster = optarg; break;
        case 'A': ca = optarg; break;
        case 'E': cert = optarg; break;
        case 'K': key = optarg; break;
        case 'S': sni = optarg; break;
        default: usage(); return 1;
        }
    }
    for (size_t i = 0; type && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(type, types[i].flag) == 0)
            t = (int)i;
    if (server == NULL || node == NULL || t < 0 || count < 1 || timeout_s < 1 || optind < argc ||
        (!cert != !key) || ((cert || sni) && !ca)) {
        usage();
        return 1;
    }

    /* --names a,b */
    char *names_buf = names_arg ? strdup(names_arg) : NULL;
    char *names[64];
    size_t n_names = 0;
    for (char *save = NULL, *tok = names_buf ? strtok_r(names_buf, ",", &save) : NULL;
         tok && n_names < 64; tok = strtok_r(NULL, ",", &save))
        names[n_names++] = tok;

    grpc_init();
    struct probe p = {.status = GRPC_STATUS_UNKNOWN};
    grpc_metadata_array_init(&p.initial_md);
    grpc_metadata_array_init(&p.trailing_md);
    p.cq = grpc_completion_queue_create_for_next(NULL);
    grpc_channel_credentials *creds;
    char *ca_pem = NULL, *cert_pem = NULL, *key_pem = NULL;
    if (ca) {
        ca_pem = slurp(ca);
        cert_pem = cert ? slurp(cert) : NULL;
        key_pem = key ? slurp(key) : NULL;
        if (ca_pem == NULL || (cert && (cert_pem == NULL || key_pem == NULL))) {
            free(ca_pem);
            free(cert_pem);
            free(key_pem);
            free(names_buf);
            grpc_completion_queue_destroy(p.cq);
            grpc_shutdown();
            return 1;
        }
        grpc_ssl_pem_key_cert_pair pair = {key_pem, cert_pem};
        creds = grpc_ssl_credentials_create(ca_pem, cert ? &pair : NULL, NULL, NULL);
    } else {
        creds = grpc_insecure_credentials_create();
    }
    grpc_arg arg = {.type = GRPC_ARG_STRING,
                    .key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                    .value.string = (char *)sni};
    grpc_channel_args args = {.num_args = sni ? 1 : 0, .args = &arg};
    grpc_channel *ch_ = grpc_channel_create(server, creds, &args);
    grpc_channel_credentials_release(creds);
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_seconds(timeout_s, GPR_TIMESPAN));
    p.call = grpc_channel_create_call(ch_, NULL, GRPC_PROPAGATE_DEFAULTS, p.cq,
                                      grpc_slice_from_static_string(ADS_METHOD), NULL, deadline,
                                      NULL);

    int rc = 1, received = 0, closing = 0, ack_pending = 0;
    char last_acked[64] = "", ack_version[64] = "", ack_nonce[64] = "";

    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &p.trailing_md;
    op.data.recv_status_on_client.status = &p.status;
    op.data.recv_status_on_client.status_details = &p.status_details;
    if (start(&p, &op, 1, TAG_STATUS) < 0 ||
        send_request(&p, 1, node, types[t].url, names, n_names, "", "", NULL) < 0 ||
        start_recv(&p, 1) < 0)
        goto out;

    /* The call's deadline ends it at the timeout; the queue's is a backstop. */
    gpr_timespec backstop = gpr_time_add(deadline, gpr_time_from_seconds(2, GPR_TIMESPAN));
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(p.cq, backstop, NULL);
        if (ev.type != GRPC_OP_COMPLETE) {
            fprintf(stderr, "xds-probe: timed out after %lds with %d of %ld responses\n",
                    timeout_s, received, count);
            rc = 2;
            break;
        }
        p.outstanding--;
        long tag = (long)ev.tag;
        if (tag == TAG_STATUS) {
            p.status_done = 1;
            if (closing && p.status == GRPC_STATUS_OK) {
                rc = 0;
            } else if (p.status == GRPC_STATUS_DEADLINE_EXCEEDED) {
                fprintf(stderr, "xds-probe: timed out after %lds with %d of %ld responses\n",
                        timeout_s, received, count);
                rc = 2;
            } else {
                char *d = grpc_slice_to_c_string(p.status_details);
                fprintf(stderr, "xds-probe: stream ended with status %d: %s\n", (int)p.status, d);
                gpr_free(d);
                rc = 1;
            }
            break;
        } else if (tag == TAG_SEND) {
            grpc_byte_buffer_destroy(p.send_bb);
            p.send_bb = NULL;
            p.send_busy = 0;
            if (!ev.success)
                continue; /* the status says why */
            if (ack_pending) {
                ack_pending = 0;
                if (send_request(&p, 0, node, types[t].url, names, n_names, ack_version, ack_nonce,
                                 nack) < 0)
                    break;
            } else if (received >= count && !closing) {
                /* The last ACK is out: half-close; the server answers with
                 * its status once it has read everything before. */
                closing = 1;
                memset(&op, 0, sizeof(op));
                op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
                if (start(&p, &op, 1, TAG_CLOSE) < 0)
                    break;
            }
        } else if (tag == TAG_RECV) {
            grpc_byte_buffer *bb = p.recv_bb;
            p.recv_bb = NULL;
            if (bb == NULL)
                continue; /* the stream is over; the status follows */
            grpc_byte_buffer_reader rd;
            grpc_byte_buffer_reader_init(&rd, bb);
            grpc_slice sl = grpc_byte_buffer_reader_readall(&rd);
            grpc_byte_buffer_reader_destroy(&rd);
            grpc_byte_buffer_destroy(bb);
            Envoy__Service__Discovery__V3__DiscoveryResponse *resp =
                envoy__service__discovery__v3__discovery_response__unpack(
                    NULL, GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl));
            grpc_slice_unref(sl);
            if (resp == NULL) {
                fprintf(stderr, "xds-probe: not a DiscoveryResponse\n");
                break;
            }
            int bad = print_response(resp, t) < 0;
            received++;
            /* Envoy's ACK echoes the version it accepted; its NACK repeats
             * the last version it did accept. */
            if (!nack && !bad)
                snprintf(last_acked, sizeof(last_acked), "%s", resp->version_info);
            snprintf(ack_version, sizeof(ack_version), "%s", last_acked);
            snprintf(ack_nonce, sizeof(ack_nonce), "%s", resp->nonce);
            envoy__service__discovery__v3__discovery_response__free_unpacked(resp, NULL);
            if (bad)
                break;
            if (p.send_busy) {
                ack_pending = 1;
            } else if (send_request(&p, 0, node, types[t].url, names, n_names, ack_version,
                                    ack_nonce, nack) < 0) {
                break;
            }
            if (received < count && start_recv(&p, 0) < 0)
                break;
        }
    }

out:
    /* Hand every batch back before destroying anything. */
    grpc_call_cancel(p.call, NULL);
    while (p.outstanding > 0) {
        grpc_event ev = grpc_completion_queue_next(p.cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        p.outstanding--;
        if ((long)ev.tag == TAG_STATUS)
            p.status_done = 1;
    }
    if (p.send_bb)
        grpc_byte_buffer_destroy(p.send_bb);
    if (p.recv_bb)
        grpc_byte_buffer_destroy(p.recv_bb);
    if (p.status_done)
        grpc_slice_unref(p.status_details);
    grpc_metadata_array_destroy(&p.initial_md);
    grpc_metadata_array_destroy(&p.trailing_md);
    grpc_call_unref(p.call);
    grpc_channel_destroy(ch_);
    grpc_completion_queue_shutdown(p.cq);
    while (grpc_completion_queue_next(p.cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(p.cq);
    grpc_shutdown();
    free(names_buf);
    free(ca_pem);
    free(cert_pem);
    free(key_pem);
    return rc;
}
