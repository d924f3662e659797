/*
 * Strict framing of a chunked HTTP/1.1 request body (RFC 9112 7.1), checked
 * beside http-parser: distributions build http-parser lenient
 * (HTTP_PARSER_STRICT=0), and then it takes any two bytes for the CRLF after
 * chunk data, anything after a chunk size up to the CR, and any byte for the
 * LF after it. An upstream or a next hop that reads such framing another way
 * is how request smuggling starts, so legate refuses it as Envoy and nginx do
 * in their strict modes.
 *
 * A small state machine over the body's bytes, fed in pieces as they arrive
 * (any split): O(1) state, chunk data skipped by count. It ends at the line
 * of the last chunk: the trailer section after it is http-parser's.
 */
#ifndef LEGATE_DP_H1_CHUNK_H
#define LEGATE_DP_H1_CHUNK_H

#include <stddef.h>
#include <stdint.h>

enum dp_h1_chunk_state {
    DP_H1_CHUNK_OFF = 0,   /* not a chunked body: everything passes */
    DP_H1_CHUNK_SIZE0,     /* a chunk size's first hex digit */
    DP_H1_CHUNK_SIZE,      /* more hex digits */
    DP_H1_CHUNK_BWS,       /* whitespace after a size or an extension: ';' must follow */
    DP_H1_CHUNK_NAME0,     /* after ';': whitespace, then an extension name */
    DP_H1_CHUNK_NAME,      /* in an extension name */
    DP_H1_CHUNK_NAME_BWS,  /* whitespace after a name: '=' or ';' */
    DP_H1_CHUNK_VAL0,      /* after '=': whitespace, then a token or '"' */
    DP_H1_CHUNK_TOKEN,     /* in a token value */
    DP_H1_CHUNK_QUOTED,    /* in a quoted-string value */
    DP_H1_CHUNK_QPAIR,     /* after a backslash in it */
    DP_H1_CHUNK_QEND,      /* after the closing quote */
    DP_H1_CHUNK_LINE_LF,   /* the size line's CR seen: LF */
    DP_H1_CHUNK_DATA,      /* chunk data, `left` bytes to come */
    DP_H1_CHUNK_DATA_CR,   /* after the data: CR */
    DP_H1_CHUNK_DATA_LF,   /* ... LF */
    DP_H1_CHUNK_DONE,      /* the last chunk's line is over: the rest is not ours */
    DP_H1_CHUNK_BAD,       /* refused: refuses everything after */
};

/** A zeroed struct is OFF. */
struct dp_h1_chunk {
    uint64_t left;                /* the size being read, then data bytes to come */
    enum dp_h1_chunk_state state;
};

/** Starts checking a chunked body: the next byte fed is its first. */
void dp_h1_chunk_start(struct dp_h1_chunk *g);

/** Checks the next n bytes of the body. Returns 0 when they may belong to a
 *  well-framed body (always, once DONE or OFF: the bytes are not looked at),
 *  or -1 at the first byte that cannot, with a short reason (a static string
 *  ending in a newline, for a 400's body) in *why; the guard then stays BAD. */
int dp_h1_chunk_feed(struct dp_h1_chunk *g, const uint8_t *p, size_t n, const char **why);

#endif
