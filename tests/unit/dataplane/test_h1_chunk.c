/* The chunked-body framing guard: valid bodies pass however they are split
 * across reads, and each form RFC 9112 7.1 forbids (and a lenient
 * http-parser lets through) is refused at its first bad byte, with its
 * reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "dataplane/h1_chunk.h"

struct body {
    const char *s;
    size_t n;
};

#define B(lit) {(lit), sizeof(lit) - 1}

static const struct body valid[] = {
    B("0\r\n\r\n"),
    B("3\r\nabc\r\n0\r\n\r\n"),
    B("A\r\n0123456789\r\nf\r\n0123456789abcde\r\n000\r\n\r\n"),        /* either case, leading zeros */
    B("0000000000000000000001\r\nx\r\n0\r\n\r\n"),                      /* more zeros than 16 digits */
    B("5\r\n0\r\n\r\n\r\n0\r\n\r\n"),                                   /* framing look-alikes in data */
    B("3;a\r\nabc\r\n0;last\r\n\r\n"),                                  /* extensions, no value */
    B("3;a=b;c=\"q s\\\"x\"\r\nabc\r\n0\r\nx-trailer: 1\r\n\r\n"),      /* token and quoted values */
    B("3 ;a = b ;\tc\t=\t\"v\"\r\nabc\r\n0 ; z\r\n\r\n"),               /* BWS where RFC 9112 has it */
    B("3;a=\"caf\xc3\xa9 \t\\\xc3\\\t\"\r\nabc\r\n0\r\n\r\n"),          /* obs-text, SP, HTAB, quoted-pair */
    B("3;a=\"\"\r\nabc\r\n0\r\n\r\n"),                                  /* an empty quoted-string */
    B("3;!#$%&'*+-.^_`|~09Az=!#$%&'*+-.^_`|~\r\nabc\r\n0\r\n\r\n"),     /* every tchar */
    B("1\r\n\0\r\n0\r\n\r\nafter the body: trailers, a next request \n"), /* not looked at */
};

struct bad {
    struct body b;
    size_t at;         /* the first byte refused (its index) */
    const char *why;
};

static const struct bad invalid[] = {
    /* (a) junk in place of the CRLF after chunk data */
    {B("3\r\nabcXX0\r\n\r\n"), 6, "chunk data not followed by CRLF\n"},
    {B("3\r\nabc\rX0\r\n\r\n"), 7, "chunk data not followed by CRLF\n"},
    {B("3\r\nabc\n0\r\n\r\n"), 6, "chunk data not followed by CRLF\n"},
    {B("3\r\nabc0\r\n\r\n"), 6, "chunk data not followed by CRLF\n"},
    /* (b) whitespace at the end of a chunk line */
    {B("3 \r\nabc\r\n0\r\n\r\n"), 2, "whitespace at the end of a chunk line\n"},
    {B("3\t\r\nabc\r\n0\r\n\r\n"), 2, "whitespace at the end of a chunk line\n"},
    {B("3\r\nabc\r\n0 \r\n\r\n"), 10, "whitespace at the end of a chunk line\n"},
    {B("3;a \r\nabc\r\n0\r\n\r\n"), 4, "whitespace at the end of a chunk line\n"},
    {B("3;a=b \r\nabc\r\n0\r\n\r\n"), 6, "whitespace at the end of a chunk line\n"},
    /* (c) a bare LF in an extension; (d) a bare LF or a lone CR ending a line */
    {B("3;a\nb\r\nabc\r\n0\r\n\r\n"), 3, "chunk line not ended by CRLF\n"},
    {B("3;a=b\nabc\r\n0\r\n\r\n"), 5, "chunk line not ended by CRLF\n"},
    {B("3;a=\"b\"\nabc\r\n0\r\n\r\n"), 7, "chunk line not ended by CRLF\n"},
    {B("3\nabc\r\n0\r\n\r\n"), 1, "chunk line not ended by CRLF\n"},
    {B("3\r\nabc\r\n0\n\r\n"), 9, "chunk line not ended by CRLF\n"},
    {B("3\rabc\r\n0\r\n\r\n"), 2, "chunk line not ended by CRLF\n"},
    {B("3;a\rX\r\nabc\r\n0\r\n\r\n"), 4, "chunk line not ended by CRLF\n"},
    /* the size */
    {B("\r\n"), 0, "invalid chunk size\n"},
    {B(" 3\r\nabc\r\n0\r\n\r\n"), 0, "invalid chunk size\n"},
    {B("x\r\n"), 0, "invalid chunk size\n"},
    {B("-1\r\n"), 0, "invalid chunk size\n"},
    {B("0x3\r\nabc\r\n0\r\n\r\n"), 1, "invalid chunk size\n"},
    {B("3g\r\n"), 1, "invalid chunk size\n"},
    {B("3 3\r\n"), 2, "invalid chunk extension\n"},
    {B("10000000000000000\r\n"), 16, "chunk size too large\n"},
    /* extensions that are not the grammar's */
    {B("3;\r\nabc\r\n0\r\n\r\n"), 2, "invalid chunk extension\n"},
    {B("3;=b\r\n"), 2, "invalid chunk extension\n"},
    {B("3;a=\r\n"), 4, "invalid chunk extension\n"},
    {B("3;a b\r\n"), 4, "invalid chunk extension\n"},
    {B("3;a=b c\r\n"), 6, "invalid chunk extension\n"},
    {B("3;a@b\r\n"), 3, "invalid chunk extension\n"},
    {B("3;a=b\0\r\n"), 5, "invalid chunk extension\n"},
    {B("3;a=\"x\r\n\"\r\n"), 6, "invalid chunk extension\n"},
    {B("3;a=\"x\"y\r\n"), 7, "invalid chunk extension\n"},
    {B("3;a=\"\\\x01\"\r\n"), 6, "invalid chunk extension\n"},
    {B("3;a=\"\x7f\"\r\n"), 5, "invalid chunk extension\n"},
    {B("3 x\r\n"), 2, "invalid chunk extension\n"},
    /* the second chunk's framing, after a valid first one */
    {B("3\r\nabc\r\n2;x=\"a\nb\"\r\nzz\r\n0\r\n\r\n"), 14, "invalid chunk extension\n"},
};

static size_t len_of(const struct body *b)
{
    return b->n;
}

/* Feeds b in two pieces, cut at offset cut; returns 0 or -1 with *why. */
static int feed_cut(const struct body *b, size_t cut, const char **why, struct dp_h1_chunk *g)
{
    size_t n = len_of(b);
    dp_h1_chunk_start(g);
    if (dp_h1_chunk_feed(g, (const uint8_t *)b->s, cut, why) < 0)
        return -1;
    return dp_h1_chunk_feed(g, (const uint8_t *)b->s + cut, n - cut, why);
}

/* Byte by byte: the index of the first byte refused, or n. */
static size_t first_refused(const struct body *b, const char **why, struct dp_h1_chunk *g)
{
    size_t n = len_of(b);
    dp_h1_chunk_start(g);
    for (size_t i = 0; i < n; i++)
        if (dp_h1_chunk_feed(g, (const uint8_t *)b->s + i, 1, why) < 0)
            return i;
    return n;
}

static void valid_bodies_pass_split_anywhere(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof(valid) / sizeof(valid[0]); k++) {
        const struct body *b = &valid[k];
        size_t n = len_of(b);
        for (size_t cut = 0; cut <= n; cut++) {
            struct dp_h1_chunk g;
            const char *why = NULL;
            if (feed_cut(b, cut, &why, &g) != 0)
                fail_msg("body %zu cut at %zu: refused (%s)", k, cut, why);
            assert_int_equal(g.state, DP_H1_CHUNK_DONE);
        }
        struct dp_h1_chunk g;
        const char *why = NULL;
        assert_int_equal(first_refused(b, &why, &g), n);
        assert_int_equal(g.state, DP_H1_CHUNK_DONE);
    }
}

static void invalid_bodies_are_refused_at_their_first_bad_byte(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof(invalid) / sizeof(invalid[0]); k++) {
        const struct bad *t = &invalid[k];
        size_t n = len_of(&t->b);
        struct dp_h1_chunk g;
        const char *why = NULL;
        size_t at = first_refused(&t->b, &why, &g);
        if (at != t->at || why == NULL || strcmp(why, t->why) != 0)
            fail_msg("bad body %zu: refused at %zu (%s), want %zu (%s)", k, at, why ? why : "-", t->at, t->why);
        for (size_t cut = 0; cut <= n; cut++) {
            why = NULL;
            assert_int_equal(feed_cut(&t->b, cut, &why, &g), -1);
            assert_string_equal(why, t->why);
            assert_int_equal(g.state, DP_H1_CHUNK_BAD);
        }
        /* What comes after a refusal is refused too. */
        assert_int_equal(dp_h1_chunk_feed(&g, (const uint8_t *)"0\r\n\r\n", 5, &why), -1);
    }
}

static void a_prefix_waits_for_more(void **state)
{
    (void)state;
    /* Incomplete but well-formed so far: no verdict, not done. */
    const char *prefixes[] = {"", "3", "3;a", "3;a=\"x", "3;a=\"\\", "3\r", "3\r\nab", "3\r\nabc\r", "0\r"};
    for (size_t k = 0; k < sizeof(prefixes) / sizeof(prefixes[0]); k++) {
        struct dp_h1_chunk g;
        const char *why = NULL;
        dp_h1_chunk_start(&g);
        assert_int_equal(dp_h1_chunk_feed(&g, (const uint8_t *)prefixes[k], strlen(prefixes[k]), &why), 0);
        assert_int_not_equal(g.state, DP_H1_CHUNK_DONE);
    }
}

static void a_large_chunk_is_skipped_by_count(void **state)
{
    (void)state;
    /* 16 MiB of data announced; fed in 1 MiB pieces of anything at all. */
    static uint8_t piece[1 << 20];
    memset(piece, '\n', sizeof(piece));
    struct dp_h1_chunk g;
    const char *why = NULL;
    dp_h1_chunk_start(&g);
    assert_int_equal(dp_h1_chunk_feed(&g, (const uint8_t *)"1000000\r\n", 9, &why), 0);
    for (int i = 0; i < 16; i++)
        assert_int_equal(dp_h1_chunk_feed(&g, piece, sizeof(piece), &why), 0);
    assert_int_equal(g.state, DP_H1_CHUNK_DATA_CR);
    assert_int_equal(dp_h1_chunk_feed(&g, (const uint8_t *)"\r\n0\r\n", 5, &why), 0);
    assert_int_equal(g.state, DP_H1_CHUNK_DONE);
}

static void off_passes_everything(void **state)
{
    (void)state;
    struct dp_h1_chunk g = {0};
    const char *why = NULL;
    assert_int_equal(dp_h1_chunk_feed(&g, (const uint8_t *)"3 \r\nabcXX", 10, &why), 0);
    assert_null(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_bodies_pass_split_anywhere),
        cmocka_unit_test(invalid_bodies_are_refused_at_their_first_bad_byte),
        cmocka_unit_test(a_prefix_waits_for_more),
        cmocka_unit_test(a_large_chunk_is_skipped_by_count),
        cmocka_unit_test(off_passes_everything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
