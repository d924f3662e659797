/* HTTP message heads: header storage (lowercased names), removal, the
 * hop-by-hop classification and the HTTP/1.1 serialisation helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dataplane/arena.h"
#include "dataplane/buf.h"
#include "dataplane/http.h"

static struct dp_str S(const char *s)
{
    return (struct dp_str){s, strlen(s)};
}

static void lowercases_names_and_keeps_values(void **state)
{
    (void)state;
    struct dp_arena a = {0};
    struct dp_headers h = {0};
    /* Longer than 8 bytes (the word-at-a-time path) and shorter; bytes
     * beside 'A'..'Z' ('@', '[', 0xc1, 0xda) must not change. */
    const char *in[] = {"X-Forwarded-For", "Content-TYPE", "TE", "AZaz@[`{-_09", "\xc1\xda\xc1\xda\xc1\xda\xc1\xdaQ"};
    const char *want[] = {"x-forwarded-for", "content-type", "te", "azaz@[`{-_09", "\xc1\xda\xc1\xda\xc1\xda\xc1\xdaq"};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(dp_headers_add(&h, &a, S(in[i]), S("Mixed Case Value")), 0);
    assert_int_equal(h.n, 5);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(h.v[i].name.n, strlen(want[i]));
        assert_memory_equal(h.v[i].name.p, want[i], strlen(want[i]));
        assert_string_equal(h.v[i].name.p, want[i]); /* NUL-terminated */
        assert_string_equal(h.v[i].value.p, "Mixed Case Value");
    }
    /* Every printable ASCII byte, in names of each length up to 40. */
    char name[41], lower[41];
    for (size_t len = 0; len <= 40; len++) {
        for (size_t i = 0; i < len; i++) {
            name[i] = (char)(33 + (i * 7 + len) % 94);
            lower[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
        }
        struct dp_headers g = {0};
        assert_int_equal(dp_headers_add(&g, &a, (struct dp_str){name, len}, S("")), 0);
        assert_memory_equal(g.v[0].name.p, lower, len);
        assert_int_equal(g.v[0].value.n, 0);
    }
    dp_arena_reset(&a);
}

static int drop_x(const struct dp_header *h, void *arg)
{
    (void)arg;
    return h->name.n > 0 && h->name.p[0] == 'x';
}

static void removes_in_one_pass(void **state)
{
    (void)state;
    struct dp_arena a = {0};
    struct dp_headers h = {0};
    const char *names[] = {"x-a", "host", "x-b", "x-c", "accept", "x-d"};
    for (size_t i = 0; i < 6; i++)
        dp_headers_add(&h, &a, S(names[i]), S(names[i]));
    assert_int_equal(dp_headers_remove_if(&h, drop_x, NULL), 4);
    assert_int_equal(h.n, 2);
    assert_string_equal(h.v[0].name.p, "host");
    assert_string_equal(h.v[1].name.p, "accept");
    assert_int_equal(dp_headers_remove_if(&h, drop_x, NULL), 0);
    assert_int_equal(dp_headers_remove(&h, S("host")), 1);
    assert_null(dp_headers_get(&h, S("host")));
    assert_non_null(dp_headers_get(&h, S("accept")));
    dp_arena_reset(&a);
}

static void classifies_hop_fields(void **state)
{
    (void)state;
    const char *hop[] = {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                         "upgrade", "te", "content-length"};
    const char *not_hop[] = {"host", "t", "tE", "content-type", "connectio", "connections",
                             "upgrade-insecure-requests", "keep-alivE", "trailer", ""};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        assert_true(dp_http_is_hop_field(S(hop[i])));
    for (size_t i = 0; i < sizeof(not_hop) / sizeof(not_hop[0]); i++)
        assert_false(dp_http_is_hop_field(S(not_hop[i])));
}

static void token_characters(void **state)
{
    (void)state;
    const char *tchar = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (int c = 0; c < 256; c++)
        assert_int_equal(dp_http_tchar[c], c != 0 && strchr(tchar, c) != NULL);
}

static void serialises_fields_numbers_and_status_lines(void **state)
{
    (void)state;
    struct dp_buf b = {0};
    assert_int_equal(dp_http_append_status_line(&b, 200), 0);
    assert_int_equal(dp_http_append_status_line(&b, 503), 0);
    assert_int_equal(dp_http_append_status_line(&b, 799), 0);
    assert_int_equal(dp_http_append_field(&b, S("x-a"), S("1, 2")), 0);
    assert_int_equal(dp_http_append_field(&b, S("x-empty"), S("")), 0);
    uint64_t dec[] = {0, 7, 10, 4096, 18446744073709551615ull};
    for (size_t i = 0; i < 5; i++) {
        dp_buf_append_dec(&b, dec[i]);
        dp_buf_append(&b, " ", 1);
    }
    uint64_t hex[] = {0, 15, 16, 0x4000, 0xffffffffffffffffull};
    for (size_t i = 0; i < 5; i++) {
        dp_buf_append_hex(&b, hex[i]);
        dp_buf_append(&b, " ", 1);
    }
    const char *want = "HTTP/1.1 200 OK\r\n"
                       "HTTP/1.1 503 Service Unavailable\r\n"
                       "HTTP/1.1 799 Unknown\r\n"
                       "x-a: 1, 2\r\n"
                       "x-empty: \r\n"
                       "0 7 10 4096 18446744073709551615 "
                       "0 f 10 4000 ffffffffffffffff ";
    assert_int_equal(dp_buf_size(&b), strlen(want));
    assert_memory_equal(dp_buf_head(&b), want, strlen(want));
    dp_buf_release(&b);
}

static void appends_across_blocks(void **state)
{
    (void)state;
    /* The inline append's fast path, then its slow path at a block edge. */
    struct dp_buf b = {0};
    char chunk[1000];
    for (size_t i = 0; i < sizeof(chunk); i++)
        chunk[i] = (char)('a' + i % 26);
    for (int i = 0; i < 40; i++)
        assert_int_equal(dp_buf_append(&b, chunk, sizeof(chunk)), 0);
    assert_int_equal(dp_buf_size(&b), 40 * sizeof(chunk));
    for (int i = 0; i < 40; i++)
        assert_memory_equal(dp_buf_head(&b) + i * sizeof(chunk), chunk, sizeof(chunk));
    dp_buf_reset(&b);
    assert_int_equal(dp_buf_size(&b), 0);
    assert_non_null(b.data); /* kept for the next bytes */
    dp_buf_release(&b);
    assert_null(b.data);
}

static const char *norm(const char *in, int normalize, int merge)
{
    static char out[256];
    long n = dp_http_normalize_path(in, strlen(in), out, normalize, merge);
    if (n < 0)
        return "(invalid)";
    assert_true((size_t)n <= strlen(in));
    out[n] = '\0';
    return out;
}

static void normalizes_paths(void **state)
{
    (void)state;
    /* RFC 3986 5.2.4's examples, and the root as the floor */
    assert_string_equal(norm("/a/b/c/./../../g", 1, 0), "/a/g");
    assert_string_equal(norm("/mid/content=5/../6", 1, 0), "/mid/6");
    assert_string_equal(norm("/public/../admin", 1, 0), "/admin");
    assert_string_equal(norm("/../../etc/passwd", 1, 0), "/etc/passwd");
    assert_string_equal(norm("/a/b/..", 1, 0), "/a/");
    assert_string_equal(norm("/a/.", 1, 0), "/a/");
    assert_string_equal(norm("/..", 1, 0), "/");
    assert_string_equal(norm("/", 1, 0), "/");
    assert_string_equal(norm("/a/", 1, 0), "/a/");
    assert_string_equal(norm("/a..b/.c/..d", 1, 0), "/a..b/.c/..d");
    /* escapes: unreserved decoded (so %2e is a dot), the rest upper-cased */
    assert_string_equal(norm("/%61%2Db/%2e%2E/c", 1, 0), "/c");
    assert_string_equal(norm("/a%2fb%3f/%7e", 1, 0), "/a%2Fb%3F/~");
    assert_string_equal(norm("/a\\..\\b", 1, 0), "/b");
    assert_string_equal(norm("/a%zz", 1, 0), "(invalid)");
    assert_string_equal(norm("/a%4", 1, 0), "(invalid)");
    assert_string_equal(norm("/a%", 1, 0), "(invalid)");
    /* the query and the fragment are left alone */
    assert_string_equal(norm("/a/../b?x=/../%zz#/..", 1, 0), "/b?x=/../%zz#/..");
    assert_string_equal(norm("/a%4?x", 1, 0), "(invalid)");
    /* merge_slashes, after normalization as in Envoy */
    assert_string_equal(norm("//a///b/", 0, 1), "/a/b/");
    assert_string_equal(norm("/a//../b", 1, 1), "/a/b");
    assert_string_equal(norm("/a//../b", 1, 0), "/a/b");
    assert_string_equal(norm("//a?x=//y", 0, 1), "/a?x=//y");
    /* neither, and the asterisk form */
    assert_string_equal(norm("/a/../b//c", 0, 0), "/a/../b//c");
    assert_string_equal(norm("*", 1, 1), "*");
}

static const char *unesc(const char *in, int *found)
{
    static char buf[256];
    size_t n = strlen(in);
    memcpy(buf, in, n);
    n = dp_http_unescape_slashes(buf, n, found);
    buf[n] = '\0';
    return buf;
}

static void unescapes_slashes(void **state)
{
    (void)state;
    int f;
    assert_string_equal(unesc("/a/..%2fblocked", &f), "/a/../blocked");
    assert_int_equal(f, 1);
    assert_string_equal(unesc("/%2Fblocked", &f), "//blocked");
    assert_int_equal(f, 1);
    assert_string_equal(unesc("/a%2F%2E%2E%2Fblocked", &f), "/a/%2E%2E/blocked");
    assert_string_equal(unesc("/a%5cb%5C", &f), "/a\\b\\");
    assert_int_equal(f, 1);
    /* only the path: the query keeps its escapes */
    assert_string_equal(unesc("/a?x=%2F", &f), "/a?x=%2F");
    assert_int_equal(f, 0);
    assert_string_equal(unesc("/a%2f?x=%2F#%2f", &f), "/a/?x=%2F#%2f");
    assert_int_equal(f, 1);
    /* not an escaped slash, or cut short */
    assert_string_equal(unesc("/a%2e%3F%2", &f), "/a%2e%3F%2");
    assert_int_equal(f, 0);
    /* then normalization sees the slashes: /a/../blocked is /blocked */
    char p[] = "/public/..%2fsecret";
    size_t n = dp_http_unescape_slashes(p, strlen(p), &f);
    char out[64];
    long m = dp_http_normalize_path(p, n, out, 1, 1);
    assert_true(m > 0);
    out[m] = '\0';
    assert_string_equal(out, "/secret");
}

static void grpc_helpers(void **state)
{
    (void)state;
    assert_int_equal(dp_grpc_status_of_http(404), 12);
    assert_int_equal(dp_grpc_status_of_http(503), 14);
    assert_int_equal(dp_grpc_status_of_http(504), 14);
    assert_int_equal(dp_grpc_status_of_http(502), 14);
    assert_int_equal(dp_grpc_status_of_http(429), 14);
    assert_int_equal(dp_grpc_status_of_http(401), 16);
    assert_int_equal(dp_grpc_status_of_http(403), 7);
    assert_int_equal(dp_grpc_status_of_http(400), 13);
    assert_int_equal(dp_grpc_status_of_http(500), 2);
    assert_true(dp_grpc_timeout_parse(DP_STR_LIT("5S")) == 5.0);
    assert_true(dp_grpc_timeout_parse(DP_STR_LIT("250m")) == 0.25);
    assert_true(dp_grpc_timeout_parse(DP_STR_LIT("2M")) == 120.0);
    assert_true(dp_grpc_timeout_parse(DP_STR_LIT("1H")) == 3600.0);
    assert_true(dp_grpc_timeout_parse(DP_STR_LIT("99999999n")) > 0.0999);
    assert_true(dp_grpc_timeout_parse(DP_STR_LIT("123456789S")) < 0); /* 9 digits */
    assert_true(dp_grpc_timeout_parse(DP_STR_LIT("5")) < 0);
    assert_true(dp_grpc_timeout_parse(DP_STR_LIT("5s")) < 0);
    assert_true(dp_grpc_timeout_parse(DP_STR_LIT("-5S")) < 0);
    assert_true(dp_grpc_timeout_parse(DP_STR_LIT("")) < 0);
    assert_true(dp_http_is_grpc_content_type(DP_STR_LIT("application/grpc")));
    assert_true(dp_http_is_grpc_content_type(DP_STR_LIT("application/grpc+proto")));
    assert_true(dp_http_is_grpc_content_type(DP_STR_LIT("Application/GRPC;charset=x")));
    assert_false(dp_http_is_grpc_content_type(DP_STR_LIT("application/grpc-web")));
    assert_false(dp_http_is_grpc_content_type(DP_STR_LIT("application/json")));
    assert_true(dp_http_list_has_token(DP_STR_LIT("trailers"), "trailers"));
    assert_true(dp_http_list_has_token(DP_STR_LIT("deflate, Trailers;q=1"), "trailers"));
    assert_false(dp_http_list_has_token(DP_STR_LIT("trailersx, gzip"), "trailers"));
    assert_false(dp_http_list_has_token(DP_STR_LIT(""), "trailers"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lowercases_names_and_keeps_values),
        cmocka_unit_test(removes_in_one_pass),
        cmocka_unit_test(classifies_hop_fields),
        cmocka_unit_test(token_characters),
        cmocka_unit_test(serialises_fields_numbers_and_status_lines),
        cmocka_unit_test(appends_across_blocks),
        cmocka_unit_test(normalizes_paths),
        cmocka_unit_test(unescapes_slashes),
        cmocka_unit_test(grpc_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
