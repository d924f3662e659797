/* The xDS client's per-type state (xds/state.c), without any server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "xds/state.h"

static ProtobufCMessage *secret(const char *name)
{
    Envoy__Extensions__TransportSockets__Tls__V3__Secret s =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__INIT;
    s.name = (char *)name;
    uint8_t buf[256];
    size_t n = envoy__extensions__transport_sockets__tls__v3__secret__pack(&s, buf);
    return (ProtobufCMessage *)envoy__extensions__transport_sockets__tls__v3__secret__unpack(NULL, n, buf);
}

static void names_of(struct xds_names *n, const char *const *v)
{
    for (; *v; v++)
        xds_names_add(n, *v);
}

static void test_names(void **state)
{
    (void)state;
    struct xds_names a = {0}, b = {0};
    names_of(&a, (const char *const[]){"b", "a", "b", "", "c", NULL});
    xds_names_add(&a, NULL);
    assert_int_equal(a.n, 3); /* duplicates and empty names skipped */
    assert_string_equal(a.v[0], "b");
    size_t at;
    assert_true(xds_names_index(&a, "c", &at));
    assert_int_equal(at, 2);
    assert_false(xds_names_has(&a, "d"));
    xds_names_sort(&a);
    assert_string_equal(a.v[0], "a");
    assert_true(xds_names_index(&a, "c", &at));
    assert_int_equal(at, 2);
    names_of(&b, (const char *const[]){"a", "b", "c", NULL});
    assert_true(xds_names_equal(&a, &b));
    xds_names_add(&b, "d");
    assert_false(xds_names_equal(&a, &b));
    xds_names_free(&a);
    xds_names_free(&b);
    assert_int_equal(a.n, 0);
}

static void test_table_set_take_order(void **state)
{
    (void)state;
    struct xds_table t = {0};
    struct xds_res old;
    xds_table_set(&t, "a", "1", secret("a"), 11, &old);
    assert_null(old.name);
    xds_table_set(&t, "b", "1", secret("b"), 12, &old);
    xds_table_set(&t, "c", "1", secret("c"), 13, &old);
    struct xds_res *r = xds_table_set(&t, "b", "2", secret("b"), 22, &old);
    assert_string_equal(old.version, "1"); /* the replaced entry is the caller's */
    assert_int_equal(old.hash, 12);
    xds_res_clear(&old);
    assert_string_equal(r->version, "2");
    assert_int_equal(t.n, 3);
    assert_ptr_equal(xds_table_find(&t, "b"), &t.v[1]); /* replaced in place */

    struct xds_res out;
    assert_true(xds_table_take(&t, "a", &out));
    assert_string_equal(out.name, "a");
    xds_res_clear(&out);
    assert_false(xds_table_take(&t, "a", NULL));
    assert_int_equal(t.n, 2); /* order kept, index follows */
    assert_string_equal(t.v[0].name, "b");
    assert_ptr_equal(xds_table_find(&t, "c"), &t.v[1]);
    assert_null(xds_table_find(&t, "a"));
    xds_table_free(&t);
}

static void test_table_retain_and_by_hash(void **state)
{
    (void)state;
    struct xds_table t = {0};
    struct xds_res old;
    char name[16];
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof(name), "s%d", i);
        xds_table_set(&t, name, "v", secret(name), 1000 + (uint64_t)i, &old);
    }
    struct xds_names keep = {0};
    for (int i = 0; i < 40; i += 4) {
        snprintf(name, sizeof(name), "s%d", i);
        xds_names_add(&keep, name);
    }
    assert_true(xds_table_retain(&t, &keep));
    assert_false(xds_table_retain(&t, &keep));
    assert_int_equal(t.n, 10);
    assert_string_equal(t.v[1].name, "s4");
    assert_ptr_equal(xds_table_find(&t, "s36"), &t.v[9]);
    assert_null(xds_table_find(&t, "s5"));

    struct strmap by = {0};
    xds_table_by_hash(&t, &by);
    size_t at;
    assert_true(xds_by_hash_take(&by, 1008, &at));
    assert_int_equal(at, 2);
    assert_false(xds_by_hash_take(&by, 1008, &at)); /* claimed */
    assert_false(xds_by_hash_take(&by, 1005, &at)); /* forgotten */
    strmap_free(&by);
    xds_names_free(&keep);
    xds_table_free(&t);
}

/* A table built aside shares messages with the published one; publishing
 * it frees exactly the messages it no longer holds (ASan would tell). */
static void test_lend_and_replace(void **state)
{
    (void)state;
    struct xds_table pub = {0}, nt = {0}, old;
    struct xds_res o;
    xds_table_set(&pub, "a", "1", secret("a"), 1, &o);
    xds_table_set(&pub, "b", "1", secret("b"), 2, &o);
    xds_table_set(&pub, "c", "1", secret("c"), 3, &o);
    struct xds_res r = xds_res_lend(&pub.v[0]); /* "a" kept */
    xds_table_append(&nt, &r);
    assert_ptr_equal(nt.v[0].msg, pub.v[0].msg);
    xds_table_set(&nt, "b", "2", secret("b"), 20, &o); /* "b" replaced, "c" dropped */
    assert_null(o.name);
    ProtobufCMessage *a = pub.v[0].msg;
    xds_table_replace(&pub, &nt, &old);
    assert_int_equal(nt.n, 0);
    assert_int_equal(pub.n, 2);
    assert_ptr_equal(xds_table_find(&pub, "a")->msg, a);
    assert_string_equal(xds_table_find(&pub, "b")->version, "2");
    assert_null(old.v[0].msg); /* given up */
    assert_non_null(old.v[1].msg);
    xds_table_free(&old);
    xds_table_free(&pub);
}

static void test_hash(void **state)
{
    (void)state;
    Google__Protobuf__Any a = GOOGLE__PROTOBUF__ANY__INIT, b = GOOGLE__PROTOBUF__ANY__INIT;
    uint8_t x[] = {1, 2, 3}, y[] = {1, 2, 4};
    a.value.data = x;
    a.value.len = sizeof(x);
    b.value.data = y;
    b.value.len = sizeof(y);
    assert_int_not_equal(xds_any_hash(&a), xds_any_hash(&b));
    b.value.data = x;
    assert_int_equal(xds_any_hash(&a), xds_any_hash(&b));
    b.value.len = 2;
    assert_int_not_equal(xds_any_hash(&a), xds_any_hash(&b));
}

static int n_logged;
static void logged(void *ud, const char *name)
{
    (void)ud;
    (void)name;
    n_logged++;
}

static void test_subscribe_and_expire(void **state)
{
    (void)state;
    struct xds_type_state t = {0};
    struct xds_names want = {0};
    struct xds_res old;
    names_of(&want, (const char *const[]){"b", "a", NULL});
    assert_true(xds_state_subscribe(&t, &want, 10.0));
    assert_int_equal(want.n, 0); /* taken */
    assert_string_equal(t.subs.v[0], "a");
    assert_false(xds_state_complete(&t));
    xds_table_set(&t.res, "a", "1", secret("a"), 1, &old);
    assert_false(xds_state_complete(&t));

    names_of(&want, (const char *const[]){"a", "b", NULL});
    assert_false(xds_state_subscribe(&t, &want, 11.0)); /* same set */

    /* Due at 15: "a" is there, "b" is given up on, each once. */
    n_logged = 0;
    assert_int_equal(xds_state_expire(&t, 14.0, 5.0, logged, NULL), 0);
    assert_int_equal(xds_state_expire(&t, 15.5, 5.0, logged, NULL), 1);
    assert_int_equal(xds_state_expire(&t, 16.0, 5.0, logged, NULL), 0);
    assert_int_equal(n_logged, 1);
    assert_int_equal(t.gave_up[0], XDS_SUB_ARRIVED);
    assert_int_equal(t.gave_up[1], XDS_SUB_GAVE_UP);
    assert_true(xds_state_gave_up(&t, "b"));
    assert_false(xds_state_gave_up(&t, "z"));
    assert_true(xds_state_complete(&t));

    /* "b" stays (with what it had), "c" is new, "a" and its resource go. */
    names_of(&want, (const char *const[]){"c", "b", NULL});
    assert_true(xds_state_subscribe(&t, &want, 20.0));
    assert_int_equal(t.subs.n, 2);
    assert_int_equal(t.gave_up[0], XDS_SUB_GAVE_UP);
    assert_true(t.since[0] == 10.0);
    assert_true(t.since[1] == 20.0);
    assert_int_equal(t.res.n, 0);
    assert_false(xds_state_complete(&t));

    xds_set_str(&t.version, "7");
    xds_set_str(&t.nonce, NULL);
    assert_string_equal(t.nonce, "");
    xds_state_free(&t);
    assert_null(t.version);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_table_set_take_order),
        cmocka_unit_test(test_table_retain_and_by_hash),
        cmocka_unit_test(test_lend_and_replace),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_subscribe_and_expire),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
