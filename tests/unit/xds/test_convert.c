/* Unit tests for the generic YAML/JSON -> protobuf-c converter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "convert_test.pb-c.h"
#include "envoy/config/core/v3/address.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "xds/convert.h"
#include "xds/json.h"

static char err[512];

static Legate__Test__AllKinds *conv_ok(const char *text)
{
    ProtobufCMessage *m = NULL;
    int rc = xds_convert_text(text, strlen(text), &legate__test__all_kinds__descriptor, &m, err,
                              sizeof(err));
    if (rc != 0)
        fail_msg("conversion failed: %s", err);
    assert_non_null(m);
    return (Legate__Test__AllKinds *)m;
}

/* Converts text expecting failure; returns the error message. */
static const char *conv_err(const char *text)
{
    ProtobufCMessage *m = NULL;
    int rc = xds_convert_text(text, strlen(text), &legate__test__all_kinds__descriptor, &m, err,
                              sizeof(err));
    assert_int_equal(rc, -1);
    assert_null(m);
    return err;
}

static void done(Legate__Test__AllKinds *m)
{
    protobuf_c_message_free_unpacked(&m->base, NULL);
}

static void test_scalars_yaml(void **state)
{
    Legate__Test__AllKinds *m = conv_ok("i32: -5\n"
                                        "si32: -2147483648\n"
                                        "sf32: 7\n"
                                        "u32: 4294967295\n"
                                        "f32: 9\n"
                                        "i64: -9223372036854775808\n"
                                        "si64: \"-12\"\n"
                                        "sf64: 13\n"
                                        "u64: 18446744073709551615\n"
                                        "f64: \"14\"\n"
                                        "flt: 1.5\n"
                                        "dbl: -2.25e3\n"
                                        "flag: true\n"
                                        "str: hello world\n"
                                        "raw: aGVsbG8=\n"
                                        "color: GREEN\n");
    assert_int_equal(m->i32, -5);
    assert_int_equal(m->si32, INT32_MIN);
    assert_int_equal(m->sf32, 7);
    assert_true(m->u32 == UINT32_MAX);
    assert_int_equal(m->f32, 9);
    assert_true(m->i64 == INT64_MIN);
    assert_true(m->si64 == -12);
    assert_true(m->sf64 == 13);
    assert_true(m->u64 == UINT64_MAX);
    assert_true(m->f64 == 14);
    assert_true(m->flt == 1.5f);
    assert_true(m->dbl == -2250.0);
    assert_true(m->flag);
    assert_string_equal(m->str, "hello world");
    assert_int_equal(m->raw.len, 5);
    assert_memory_equal(m->raw.data, "hello", 5);
    assert_int_equal(m->color, LEGATE__TEST__ALL_KINDS__COLOR__GREEN);
    done(m);
}

static void test_json_names_and_camel_case(void **state)
{
    Legate__Test__AllKinds *m = conv_ok("{\"innerMap\": {\"a\": {\"name\": \"x\", \"n\": 1}},"
                                        " \"choiceA\": \"picked\", \"i32\": 3,"
                                        " \"raw\": \"aGk\", \"colors\": [\"RED\", 2]}");
    assert_int_equal(m->n_inner_map, 1);
    assert_string_equal(m->inner_map[0]->key, "a");
    assert_string_equal(m->inner_map[0]->value->name, "x");
    assert_int_equal(m->choice_case, LEGATE__TEST__ALL_KINDS__CHOICE_CHOICE_A);
    assert_string_equal(m->choice_a, "picked");
    assert_int_equal(m->raw.len, 2); /* unpadded base64 */
    assert_memory_equal(m->raw.data, "hi", 2);
    assert_int_equal(m->n_colors, 2);
    assert_int_equal(m->colors[0], LEGATE__TEST__ALL_KINDS__COLOR__RED);
    assert_int_equal(m->colors[1], LEGATE__TEST__ALL_KINDS__COLOR__GREEN);
    done(m);
}

/* Enum names in any case, as Envoy reads them (its examples write
 * "type: strict_dns"). */
static void test_enum_case_insensitive(void **state)
{
    (void)state;
    Legate__Test__AllKinds *m = conv_ok("color: green\ncolors: [Red, gReEn]\n");
    assert_int_equal(m->color, LEGATE__TEST__ALL_KINDS__COLOR__GREEN);
    assert_int_equal(m->n_colors, 2);
    assert_int_equal(m->colors[0], LEGATE__TEST__ALL_KINDS__COLOR__RED);
    assert_int_equal(m->colors[1], LEGATE__TEST__ALL_KINDS__COLOR__GREEN);
    done(m);
}

static void test_nested_repeated_map(void **state)
{
    Legate__Test__AllKinds *m = conv_ok("inner: {name: a, n: 1}\n"
                                        "tags: [x, y, z]\n"
                                        "nums: [1, 2, 3]\n"
                                        "inners:\n"
                                        "- name: first\n"
                                        "- name: second\n"
                                        "  n: 2\n"
                                        "labels:\n"
                                        "  app: web\n"
                                        "  tier: \"1\"\n"
                                        "choice_b: {name: b}\n");
    assert_string_equal(m->inner->name, "a");
    assert_int_equal(m->inner->n, 1);
    assert_int_equal(m->n_tags, 3);
    assert_string_equal(m->tags[2], "z");
    assert_int_equal(m->n_nums, 3);
    assert_int_equal(m->nums[1], 2);
    assert_int_equal(m->n_inners, 2);
    assert_string_equal(m->inners[0]->name, "first");
    assert_int_equal(m->inners[1]->n, 2);
    assert_int_equal(m->n_labels, 2);
    assert_string_equal(m->labels[0]->key, "app");
    assert_string_equal(m->labels[0]->value, "web");
    assert_string_equal(m->labels[1]->value, "1");
    assert_int_equal(m->choice_case, LEGATE__TEST__ALL_KINDS__CHOICE_CHOICE_B);
    assert_string_equal(m->choice_b->name, "b");
    done(m);
}

static void test_null_leaves_unset(void **state)
{
    Legate__Test__AllKinds *m = conv_ok("inner: null\nstr: ~\ni32:\n");
    assert_null(m->inner);
    assert_string_equal(m->str, "");
    assert_int_equal(m->i32, 0);
    done(m);
}

static void test_any(void **state)
{
    Legate__Test__AllKinds *m =
        conv_ok("any:\n"
                "  '@type': type.googleapis.com/envoy.config.core.v3.SocketAddress\n"
                "  address: 127.0.0.1\n"
                "  port_value: 8443\n"
                "anys:\n"
                "- '@type': type.googleapis.com/google.protobuf.Duration\n"
                "  value: 2.5s\n");
    assert_string_equal(m->any->type_url,
                        "type.googleapis.com/envoy.config.core.v3.SocketAddress");
    Envoy__Config__Core__V3__SocketAddress *sa =
        envoy__config__core__v3__socket_address__unpack(NULL, m->any->value.len,
                                                         m->any->value.data);
    assert_non_null(sa);
    assert_string_equal(sa->address, "127.0.0.1");
    assert_int_equal(sa->port_value, 8443);
    envoy__config__core__v3__socket_address__free_unpacked(sa, NULL);

    assert_int_equal(m->n_anys, 1);
    Google__Protobuf__Duration *d = google__protobuf__duration__unpack(
        NULL, m->anys[0]->value.len, m->anys[0]->value.data);
    assert_non_null(d);
    assert_true(d->seconds == 2);
    assert_int_equal(d->nanos, 500000000);
    google__protobuf__duration__free_unpacked(d, NULL);
    done(m);
}

/* One object where a list of objects is expected is a list of one, as
 * Envoy's loader takes it; a scalar there is still an error. */
static void test_single_object_as_list(void **state)
{
    Legate__Test__AllKinds *m = conv_ok("anys: {'@type': type.googleapis.com/google.protobuf.Duration, value: 3s}\n");
    assert_int_equal(m->n_anys, 1);
    assert_string_equal(m->anys[0]->type_url, "type.googleapis.com/google.protobuf.Duration");
    done(m);
    assert_string_equal(conv_err("anys: 3"), "anys: expected a list, got a scalar");
}

/* "typed_config: {}" (Envoy: the extension named beside it, with its
 * defaults) leaves the Any unset; {address: x} without a type still fails. */
static void test_empty_any_is_absent(void **state)
{
    Legate__Test__AllKinds *m = conv_ok("any: {}\ni32: 3\n");
    assert_null(m->any);
    assert_int_equal(m->i32, 3);
    done(m);
    m = conv_ok("{\"any\": {}}");
    assert_null(m->any);
    done(m);
}

static void test_duration_forms(void **state)
{
    static const struct {
        const char *text;
        int64_t sec;
        int32_t nanos;
    } cases[] = {
        {"timeout: 1s", 1, 0},
        {"timeout: 0.25s", 0, 250000000},
        {"timeout: \"-1.5s\"", -1, -500000000},
        {"timeout: 3.000000001s", 3, 1},
        {"timeout: {seconds: 7, nanos: 9}", 7, 9},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Legate__Test__AllKinds *m = conv_ok(cases[i].text);
        assert_non_null(m->timeout);
        assert_true(m->timeout->seconds == cases[i].sec);
        assert_int_equal(m->timeout->nanos, cases[i].nanos);
        done(m);
    }
    assert_string_equal(conv_err("timeout: fast"),
                        "timeout: expected a duration like \"5s\", got \"fast\"");
    assert_string_equal(conv_err("timeout: 5"),
                        "timeout: expected a duration like \"5s\", got \"5\"");
    assert_string_equal(conv_err("timeout: 1.0000000001s"),
                        "timeout: expected a duration like \"5s\", got \"1.0000000001s\"");
    assert_string_equal(conv_err("timeout: [1s]"),
                        "timeout: expected a duration like \"5s\", got a list");
}

static void test_timestamp_wrappers_struct(void **state)
{
    Legate__Test__AllKinds *m = conv_ok("at: 2026-11-23T10:00:01.5Z\n"
                                        "limit: 42\n"
                                        "enabled: false\n"
                                        "label: text\n"
                                        "meta:\n"
                                        "  region: eu\n"
                                        "  replicas: 3\n"
                                        "  canary: true\n"
                                        "  nothing: null\n"
                                        "  list: [1, two]\n"
                                        "  nested: {a: {b: c}}\n");
    assert_true(m->at->seconds == 1795428001);
    assert_int_equal(m->at->nanos, 500000000);
    assert_non_null(m->limit);
    assert_int_equal(m->limit->value, 42);
    assert_non_null(m->enabled); /* set, even though false */
    assert_false(m->enabled->value);
    assert_string_equal(m->label->value, "text");
    Google__Protobuf__Struct *s = m->meta;
    assert_int_equal(s->n_fields, 6);
    assert_string_equal(s->fields[0]->key, "region");
    assert_int_equal(s->fields[0]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE);
    assert_string_equal(s->fields[0]->value->string_value, "eu");
    assert_int_equal(s->fields[1]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE);
    assert_true(s->fields[1]->value->number_value == 3.0);
    assert_int_equal(s->fields[2]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE);
    assert_true(s->fields[2]->value->bool_value);
    assert_int_equal(s->fields[3]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE);
    assert_int_equal(s->fields[4]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE);
    assert_int_equal(s->fields[4]->value->list_value->n_values, 2);
    assert_string_equal(s->fields[4]->value->list_value->values[1]->string_value, "two");
    assert_int_equal(s->fields[5]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE);
    assert_string_equal(
        s->fields[5]->value->struct_value->fields[0]->value->struct_value->fields[0]->value
            ->string_value,
        "c");
    done(m);
}

static void test_errors_name_the_path(void **state)
{
    assert_string_equal(conv_err("inners:\n- n: 1\n- n: x\n"),
                        "inners[1].n: expected an integer, got \"x\"");
    assert_string_equal(conv_err("inner: {nme: a}"),
                        "inner: unknown field \"nme\" in legate.test.Inner");
    assert_string_equal(conv_err("bogus: 1"), "unknown field \"bogus\" in legate.test.AllKinds");
    assert_string_equal(conv_err("u32: -1"), "u32: -1 is out of range for uint32");
    assert_string_equal(conv_err("i32: 2147483648"), "i32: 2147483648 is out of range for int32");
    assert_string_equal(conv_err("flag: yes"), "flag: expected true or false, got \"yes\"");
    assert_string_equal(conv_err("color: blue"),
                        "color: unknown value \"blue\" for enum legate.test.AllKinds.Color "
                        "(expected one of COLOR_UNSPECIFIED, RED, GREEN)");
    assert_string_equal(conv_err("color: BLUE"),
                        "color: unknown value \"BLUE\" for enum legate.test.AllKinds.Color "
                        "(expected one of COLOR_UNSPECIFIED, RED, GREEN)");
    assert_string_equal(conv_err("inner: 5"),
                        "inner: expected an object (legate.test.Inner), got a scalar \"5\"");
    assert_string_equal(conv_err("tags: x"), "tags: expected a list, got a scalar");
    assert_string_equal(conv_err("str: [a]"), "str: expected a string, got a list");
    assert_string_equal(conv_err("labels: [a]"), "labels: expected an object (a map), got a list");
    assert_string_equal(conv_err("labels: {a: [1]}"), "labels[\"a\"]: expected a string, got a list");
    assert_string_equal(conv_err("choice_a: x\nchoice_b: {name: y}\n"),
                        "choice_b: only one of \"choice_a\" and \"choice_b\" may be set");
    assert_string_equal(conv_err("i32: 1\ni32: 2\n"), "i32: field given twice");
    assert_string_equal(conv_err("tags: [a, null]"), "tags[1]: null is not allowed here");
    assert_string_equal(conv_err("dbl: abc"), "dbl: expected a number, got \"abc\"");
    assert_string_equal(conv_err("raw: '!!!'"), "raw: expected base64 data");
    assert_string_equal(conv_err("at: yesterday"),
                        "at: expected an RFC 3339 timestamp like \"2026-01-01T00:00:00Z\", got "
                        "\"yesterday\"");
}

static void test_any_errors(void **state)
{
    assert_string_equal(conv_err("any: {address: x}"),
                        "any: missing \"@type\" in google.protobuf.Any");
    assert_string_equal(conv_err("any: {'@type': type.googleapis.com/envoy.Nope}"),
                        "any: unknown type URL \"type.googleapis.com/envoy.Nope\" in \"@type\"");
    assert_string_equal(conv_err("any: {'@type': Nope}"),
                        "any: invalid type URL \"Nope\" in \"@type\" (expected "
                        "type.googleapis.com/<message>)");
    assert_string_equal(
        conv_err("anys:\n- '@type': type.googleapis.com/envoy.config.core.v3.SocketAddress\n"
                 "  port_value: http\n"),
        "anys[0].port_value: expected an integer, got \"http\"");
    assert_string_equal(conv_err("any: {'@type': type.googleapis.com/google.protobuf.Duration}"),
                        "any: missing \"value\" for google.protobuf.Duration in google.protobuf.Any");
}

static void test_document_errors(void **state)
{
    assert_string_equal(conv_err(""), "the document is empty");
    assert_string_equal(conv_err("[1, 2]"),
                        "expected an object (legate.test.AllKinds), got a list \"\"");
    const char *e = conv_err("inner: {name: a\ntags: [");
    assert_non_null(strstr(e, "line "));
    assert_non_null(strstr(e, "column "));
}

static void test_file_errors(void **state)
{
    ProtobufCMessage *m;
    assert_int_equal(xds_convert_file("/nonexistent/legate.yaml", &legate__test__all_kinds__descriptor,
                                      &m, err, sizeof(err)),
                     -1);
    assert_string_equal(err, "/nonexistent/legate.yaml: No such file or directory");
}

static void test_json_string_escapes(void **state)
{
    (void)state;
    struct xds_sb b = {0};
    xds_sb_str(&b, "plain, then \"quoted\" \\ and\ttab\nline\r\x01\x1f end \xc3\xa9");
    assert_string_equal(b.p, "\"plain, then \\\"quoted\\\" \\\\ and\\ttab\\nline\\r\\u0001\\u001f end \xc3\xa9\"");
    b.len = 0;
    xds_sb_str(&b, "");
    assert_string_equal(b.p, "\"\"");
    b.len = 0;
    xds_sb_str(&b, "\"");
    assert_string_equal(b.p, "\"\\\"\"");
    free(b.p);
}

static void test_json_base64(void **state)
{
    (void)state;
    struct xds_sb b = {0};
    xds_sb_base64(&b, (const uint8_t *)"", 0);
    assert_string_equal(b.p, "\"\"");
    b.len = 0;
    xds_sb_base64(&b, (const uint8_t *)"f", 1);
    assert_string_equal(b.p, "\"Zg==\"");
    b.len = 0;
    xds_sb_base64(&b, (const uint8_t *)"foobar", 6);
    assert_string_equal(b.p, "\"Zm9vYmFy\"");
    /* Longer than one encoder chunk (768 bytes): no padding in between. */
    uint8_t big[2000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7);
    b.len = 0;
    xds_sb_base64(&b, big, sizeof(big));
    assert_int_equal(b.len, 2 + (sizeof(big) + 2) / 3 * 4);
    assert_null(memchr(b.p, '=', b.len - 3));
    free(b.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_base64),
        cmocka_unit_test(test_scalars_yaml),
        cmocka_unit_test(test_json_names_and_camel_case),
        cmocka_unit_test(test_enum_case_insensitive),
        cmocka_unit_test(test_nested_repeated_map),
        cmocka_unit_test(test_null_leaves_unset),
        cmocka_unit_test(test_any),
        cmocka_unit_test(test_empty_any_is_absent),
        cmocka_unit_test(test_single_object_as_list),
        cmocka_unit_test(test_duration_forms),
        cmocka_unit_test(test_timestamp_wrappers_struct),
        cmocka_unit_test(test_errors_name_the_path),
        cmocka_unit_test(test_any_errors),
        cmocka_unit_test(test_document_errors),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_json_string_escapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
