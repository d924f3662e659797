/* One response from decoding to the ACK or NACK (xds/response.c), with no
 * server: the client is offline and the requests it builds are caught. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "xds/convert.h"
#include "xds/response.h"

/* The requests the client built, and what the owner saw. */
struct seen {
    int requests;
    char type_url[128];
    char version[64];
    char nonce[64];
    int has_error;
    int error_code;
    char error[2048];
    int applied, reported, published;
    size_t ignored;     /* b->n_ignored, as the owner counts it */
    char ignored0[128]; /* b->ignored[0] */
    const char *reject; /* the owner refuses this name */
};

static void on_request(void *ud, const Envoy__Service__Discovery__V3__DiscoveryRequest *req)
{
    struct seen *s = ud;
    s->requests++;
    snprintf(s->type_url, sizeof(s->type_url), "%s", req->type_url);
    snprintf(s->version, sizeof(s->version), "%s", req->version_info);
    snprintf(s->nonce, sizeof(s->nonce), "%s", req->response_nonce);
    s->has_error = req->error_detail != NULL;
    s->error_code = req->error_detail ? req->error_detail->code : 0;
    snprintf(s->error, sizeof(s->error), "%s", req->error_detail ? req->error_detail->message : "");
}

/* The owner: keeps every resource it is given (as dynamic.c's state of
 * the world does), except the one it is told to refuse. */
static void fake_apply(void *ud, struct xds_batch *b)
{
    struct seen *s = ud;
    s->applied++;
    for (size_t i = 0; i < b->n; i++) {
        if (b->msgs[i] == NULL)
            continue;
        const char *name = xds_resource_name(b->type, b->msgs[i]);
        if (s->reject && strcmp(name, s->reject) == 0) {
            xds_errs_add(&b->errs, "%s \"%s\": refused by the owner", xds_type_names[b->type], name);
            continue;
        }
        struct xds_res r = {strdup(name), strdup(b->version), b->msgs[i], b->hashes[i]};
        xds_table_append(&b->nt, &r); /* a reused message is lent */
        b->msgs[i] = NULL;
    }
}

static void fake_applied(void *ud, const struct xds_batch *b,
                         const Envoy__Service__Discovery__V3__DiscoveryResponse *resp, double began)
{
    (void)resp;
    (void)began;
    struct seen *s = ud;
    s->reported++;
    s->ignored = b->n_ignored;
    snprintf(s->ignored0, sizeof(s->ignored0), "%s", b->n_ignored ? b->ignored[0] : "");
}

static void fake_published(void *ud)
{
    ((struct seen *)ud)->published++;
}

static const struct xds_response_ops ops = {fake_apply, fake_applied, fake_published};

struct fixture {
    Envoy__Config__Core__V3__Node node;
    Envoy__Config__Bootstrap__V3__Bootstrap__DynamicResources dr;
    xds_bootstrap_t bs;
    struct xds_client c;
    pthread_mutex_t lock;
    struct seen seen;
};

static struct fixture *fixture_new(void)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->node = (Envoy__Config__Core__V3__Node)ENVOY__CONFIG__CORE__V3__NODE__INIT;
    f->node.id = "node-1";
    f->dr = (Envoy__Config__Bootstrap__V3__Bootstrap__DynamicResources)
        ENVOY__CONFIG__BOOTSTRAP__V3__BOOTSTRAP__DYNAMIC_RESOURCES__INIT;
    f->bs = (xds_bootstrap_t)ENVOY__CONFIG__BOOTSTRAP__V3__BOOTSTRAP__INIT;
    f->bs.node = &f->node;
    f->bs.dynamic_resources = &f->dr;
    xds_client_init(&f->c, &f->bs);
    f->c.on_request = on_request;
    f->c.on_request_ud = &f->seen;
    pthread_mutex_init(&f->lock, NULL);
    return f;
}

static void fixture_free(struct fixture *f)
{
    xds_client_free(&f->c);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

/* A resource packed as it travels: an Any of type_url. */
static Google__Protobuf__Any *pack_yaml(const char *type_url, const ProtobufCMessageDescriptor *desc,
                                        const char *yaml)
{
    ProtobufCMessage *m = NULL;
    char err[512];
    if (xds_convert_text(yaml, strlen(yaml), desc, &m, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    Google__Protobuf__Any *a = calloc(1, sizeof(*a));
    assert_non_null(a);
    google__protobuf__any__init(a);
    a->type_url = strdup(type_url);
    a->value.len = protobuf_c_message_get_packed_size(m);
    a->value.data = malloc(a->value.len + 1);
    protobuf_c_message_pack(m, a->value.data);
    protobuf_c_message_free_unpacked(m, NULL);
    return a;
}

static Google__Protobuf__Any *cluster(const char *yaml)
{
    return pack_yaml(xds_type_urls[XDS_CDS], &envoy__config__cluster__v3__cluster__descriptor, yaml);
}

static Google__Protobuf__Any *raw_any(const char *type_url, const char *bytes)
{
    Google__Protobuf__Any *a = calloc(1, sizeof(*a));
    assert_non_null(a);
    google__protobuf__any__init(a);
    a->type_url = strdup(type_url);
    a->value.len = strlen(bytes);
    a->value.data = (uint8_t *)strdup(bytes);
    return a;
}

static void respond(struct fixture *f, const char *type_url, const char *version, const char *nonce,
                    Google__Protobuf__Any **res, size_t n)
{
    Envoy__Service__Discovery__V3__DiscoveryResponse resp = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    resp.type_url = (char *)type_url;
    resp.version_info = (char *)version;
    resp.nonce = (char *)nonce;
    resp.resources = res;
    resp.n_resources = n;
    xds_client_handle_response(&f->c, &f->lock, &ops, &f->seen, &resp);
    for (size_t i = 0; i < n; i++)
        google__protobuf__any__free_unpacked(res[i], NULL);
}

static const char c1[] = "name: c1\ntype: EDS\n";
static const char c2[] = "name: c2\ntype: EDS\n";

static void test_ack(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    Google__Protobuf__Any *res[] = {cluster(c1), cluster(c2)};
    respond(f, xds_type_urls[XDS_CDS], "1", "n1", res, 2);
    assert_int_equal(f->seen.applied, 1);
    assert_int_equal(f->seen.reported, 1);
    assert_int_equal(f->seen.published, 1);
    /* the ACK, and then the EDS subscription the clusters need */
    assert_int_equal(f->seen.requests, 2);
    assert_string_equal(f->seen.type_url, xds_type_urls[XDS_EDS]);
    assert_int_equal(f->c.t[XDS_EDS].subs.n, 2);
    assert_string_equal(f->c.t[XDS_CDS].version, "1");
    assert_string_equal(f->c.t[XDS_CDS].nonce, "n1");
    assert_int_equal(f->c.t[XDS_CDS].res.n, 2);
    assert_non_null(xds_table_find(&f->c.t[XDS_CDS].res, "c1"));
    fixture_free(f);
}

static void test_ack_request(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    Google__Protobuf__Any *res[] = {cluster("name: c1\n")}; /* STATIC: no EDS */
    respond(f, xds_type_urls[XDS_CDS], "7", "n7", res, 1);
    assert_int_equal(f->seen.requests, 1);
    assert_string_equal(f->seen.type_url, xds_type_urls[XDS_CDS]);
    assert_string_equal(f->seen.version, "7");
    assert_string_equal(f->seen.nonce, "n7");
    assert_false(f->seen.has_error);
    fixture_free(f);
}

/* Every check the client makes on its own, in one NACK; the previous
 * version stays, the good resource is applied. */
static void test_nack_checks(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    Google__Protobuf__Any *first[] = {cluster("name: c0\n")};
    respond(f, xds_type_urls[XDS_CDS], "1", "n1", first, 1);
    f->seen.requests = 0;
    Google__Protobuf__Any *res[] = {
        raw_any(xds_type_urls[XDS_LDS], ""),
        raw_any(xds_type_urls[XDS_CDS], "\xff\xff\xff"),
        cluster("type: STATIC\n"),
        cluster("name: c1\n"),
        cluster("name: c1\nconnect_timeout: 2s\n"),
    };
    respond(f, xds_type_urls[XDS_CDS], "2", "n2", res, 5);
    assert_int_equal(f->seen.requests, 1);
    assert_string_equal(f->seen.version, "1"); /* the version held */
    assert_string_equal(f->seen.nonce, "n2");  /* the response answered */
    assert_true(f->seen.has_error);
    assert_int_equal(f->seen.error_code, 3); /* INVALID_ARGUMENT */
    assert_string_equal(f->seen.error,
                        "resources[0]: type type.googleapis.com/envoy.config.listener.v3.Listener in a "
                        "response of type type.googleapis.com/envoy.config.cluster.v3.Cluster; "
                        "resources[1]: not a valid envoy.config.cluster.v3.Cluster; "
                        "resources[2]: cluster without a name; "
                        "resources[4]: cluster \"c1\" appears twice");
    assert_string_equal(f->c.t[XDS_CDS].version, "1");
    assert_string_equal(f->c.t[XDS_CDS].nonce, "n2");
    /* state of the world: c1 (the good one) replaces c0 */
    assert_int_equal(f->c.t[XDS_CDS].res.n, 1);
    assert_non_null(xds_table_find(&f->c.t[XDS_CDS].res, "c1"));
    fixture_free(f);
}

/* A field legate refuses (xds/unsupported.c): the resource is refused whole
 * and the owner never sees it. */
static void test_nack_unsupported(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    Google__Protobuf__Any *res[] = {
        pack_yaml(xds_type_urls[XDS_LDS], &envoy__config__listener__v3__listener__descriptor,
                  "name: l1\nenable_reuse_port: false\n"),
    };
    respond(f, xds_type_urls[XDS_LDS], "1", "n1", res, 1);
    assert_int_equal(f->seen.applied, 1);
    assert_int_equal(f->c.t[XDS_LDS].res.n, 0);
    assert_true(f->seen.has_error);
    assert_string_equal(f->seen.version, "");
    assert_string_equal(f->seen.error,
                        "listener \"l1\": enable_reuse_port: legate's workers always share the port "
                        "with SO_REUSEPORT");
    fixture_free(f);
}

/* a with the bytes of fields that legate's protos lack appended, as
 * Envoy's full protos encode them. */
static Google__Protobuf__Any *with_extra(Google__Protobuf__Any *a, const void *bytes, size_t n)
{
    a->value.data = realloc(a->value.data, a->value.len + n);
    assert_non_null(a->value.data);
    memcpy(a->value.data + a->value.len, bytes, n);
    a->value.len += n;
    return a;
}

/* A field legate's protos lack and that changes traffic (xds/unknown.c):
 * NACKed by path like a refused one; the good resource beside it is
 * applied. One that cannot change traffic is accepted and handed to the
 * owner to count. */
static void test_unknown_fields(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    Google__Protobuf__Any *res[] = {
        with_extra(cluster("name: x\n"), "\xda\x02\x00", 3),     /* transport_socket_matches */
        with_extra(cluster("name: y\n"), "\x8a\x03\x00", 3),     /* track_cluster_stats (field 49) */
        cluster("name: z\n"),
    };
    respond(f, xds_type_urls[XDS_CDS], "1", "n1", res, 3);
    assert_true(f->seen.has_error);
    assert_string_equal(f->seen.error, "cluster \"x\": transport_socket_matches: not supported");
    assert_int_equal(f->c.t[XDS_CDS].res.n, 2);
    assert_null(xds_table_find(&f->c.t[XDS_CDS].res, "x"));
    assert_non_null(xds_table_find(&f->c.t[XDS_CDS].res, "y"));
    assert_int_equal(f->seen.ignored, 1);
    assert_string_equal(f->seen.ignored0, "Cluster.track_cluster_stats");
    fixture_free(f);
}

/* What the owner rejects is NACKed as well. */
static void test_nack_owner(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    f->seen.reject = "c2";
    Google__Protobuf__Any *res[] = {cluster("name: c1\n"), cluster("name: c2\n")};
    respond(f, xds_type_urls[XDS_CDS], "3", "n3", res, 2);
    assert_true(f->seen.has_error);
    assert_string_equal(f->seen.error, "cluster \"c2\": refused by the owner");
    assert_null(f->c.t[XDS_CDS].version);
    assert_int_equal(f->c.t[XDS_CDS].res.n, 1);
    fixture_free(f);
}

/* A type legate does not subscribe to: nothing is applied or sent. */
static void test_unknown_type(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    Google__Protobuf__Any *res[] = {raw_any("type.googleapis.com/foo.Bar", "")};
    respond(f, "type.googleapis.com/foo.Bar", "1", "n1", res, 1);
    assert_int_equal(f->seen.applied, 0);
    assert_int_equal(f->seen.requests, 0);
    fixture_free(f);
}

/* A state-of-the-world resource sent again byte for byte is not decoded
 * again: the published message is taken over. */
static void test_sotw_reuse(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    Google__Protobuf__Any *a[] = {cluster("name: c1\n")};
    respond(f, xds_type_urls[XDS_CDS], "1", "n1", a, 1);
    const ProtobufCMessage *m1 = xds_table_find(&f->c.t[XDS_CDS].res, "c1")->msg;
    Google__Protobuf__Any *b[] = {cluster("name: c1\n"), cluster("name: c2\n")};
    respond(f, xds_type_urls[XDS_CDS], "2", "n2", b, 2);
    assert_ptr_equal(xds_table_find(&f->c.t[XDS_CDS].res, "c1")->msg, m1);
    assert_string_equal(f->c.t[XDS_CDS].version, "2");
    assert_false(f->seen.has_error);
    fixture_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ack),
        cmocka_unit_test(test_ack_request),
        cmocka_unit_test(test_nack_checks),
        cmocka_unit_test(test_nack_unsupported),
        cmocka_unit_test(test_nack_owner),
        cmocka_unit_test(test_unknown_fields),
        cmocka_unit_test(test_unknown_type),
        cmocka_unit_test(test_sotw_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
