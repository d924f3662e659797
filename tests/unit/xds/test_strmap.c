/* The name map behind the xDS state and the stats registry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "xds/strmap.h"

static void test_put_get_replace(void **state)
{
    (void)state;
    struct strmap m = {0};
    size_t v = 99;
    assert_false(strmap_get(&m, "a", &v)); /* empty, never allocated */
    strmap_put(&m, "a", 1);
    strmap_put(&m, "b", 2);
    assert_true(strmap_get(&m, "a", &v));
    assert_int_equal(v, 1);
    assert_true(strmap_get(&m, "b", &v));
    assert_int_equal(v, 2);
    assert_false(strmap_get(&m, "c", NULL));
    strmap_put(&m, "a", 7); /* replaces */
    assert_true(strmap_get(&m, "a", &v));
    assert_int_equal(v, 7);
    assert_int_equal(m.n, 2);
    strmap_free(&m);
}

static void test_keys_are_copied(void **state)
{
    (void)state;
    struct strmap m = {0};
    char key[8] = "cluster";
    strmap_put(&m, key, 5);
    key[0] = 'X';
    assert_true(strmap_get(&m, "cluster", NULL));
    assert_false(strmap_get(&m, key, NULL));
    strmap_free(&m);
}

static void test_many_and_clear(void **state)
{
    (void)state;
    struct strmap m = {0};
    char k[32];
    for (size_t i = 0; i < 20000; i++) {
        snprintf(k, sizeof(k), "c%zu", i);
        strmap_put(&m, k, i);
    }
    assert_int_equal(m.n, 20000);
    assert_true(m.cap >= 2 * m.n);
    for (size_t i = 0; i < 20000; i += 7) {
        size_t v;
        snprintf(k, sizeof(k), "c%zu", i);
        assert_true(strmap_get(&m, k, &v));
        assert_int_equal(v, i);
    }
    assert_false(strmap_get(&m, "c20000", NULL));
    assert_false(strmap_get(&m, "", NULL));
    size_t cap = m.cap;
    strmap_clear(&m);
    assert_int_equal(m.n, 0);
    assert_int_equal(m.cap, cap); /* memory kept */
    assert_false(strmap_get(&m, "c1", NULL));
    strmap_put(&m, "c1", 3);
    assert_true(strmap_get(&m, "c1", NULL));
    strmap_free(&m);
    assert_null(m.e);
}

/* Removal keeps every other key reachable, whatever the probe runs. */
static void test_del(void **state)
{
    (void)state;
    struct strmap m = {0};
    char k[32];
    size_t v;
    assert_false(strmap_del(&m, "a", NULL)); /* empty, never allocated */
    for (size_t i = 0; i < 5000; i++) {
        snprintf(k, sizeof(k), "r%zu", i);
        strmap_put(&m, k, i);
    }
    for (size_t i = 0; i < 5000; i += 3) {
        snprintf(k, sizeof(k), "r%zu", i);
        assert_true(strmap_del(&m, k, &v));
        assert_int_equal(v, i);
        assert_false(strmap_del(&m, k, NULL));
    }
    assert_int_equal(m.n, 5000 - 1667);
    for (size_t i = 0; i < 5000; i++) {
        snprintf(k, sizeof(k), "r%zu", i);
        int there = strmap_get(&m, k, &v);
        assert_int_equal(there, i % 3 != 0);
        if (there)
            assert_int_equal(v, i);
    }
    strmap_put(&m, "r0", 9); /* back again */
    assert_true(strmap_get(&m, "r0", &v));
    assert_int_equal(v, 9);
    strmap_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_replace),
        cmocka_unit_test(test_keys_are_copied),
        cmocka_unit_test(test_many_and_clear),
        cmocka_unit_test(test_del),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
