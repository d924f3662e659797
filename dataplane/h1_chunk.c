/*
 * The chunked-body framing guard (h1_chunk.h). The grammar, RFC 9112 7.1
 * with BWS (RFC 9110 5.6.3: SP / HTAB, which a recipient parses and drops):
 *
 *   chunk     = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *   last-chunk = 1*"0" [ chunk-ext ] CRLF
 *   chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
 *   ext-name  = token;  ext-val = token / quoted-string
 *
 * so "3 ;a = b" passes and "3 " (whitespace with no extension after it)
 * does not; neither does a bare LF or a lone CR anywhere in the framing,
 * nor anything but CRLF after chunk data.
 */
#include "dataplane/h1_chunk.h"

#include "dataplane/http.h"

void dp_h1_chunk_start(struct dp_h1_chunk *g)
{
    g->left = 0;
    g->state = DP_H1_CHUNK_SIZE0;
}

/* quoted-string (RFC 9110 5.6.4): qdtext, and what may follow a backslash */
static int qdtext(unsigned c)
{
    return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e) ||
           c >= 0x80;
}

static int qpair(unsigned c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* The byte after a size or an extension element (a name, a value): the
 * next state, or BAD with *why (a bare LF's, else `other`). */
static enum dp_h1_chunk_state after_element(unsigned c, const char *other, const char **why)
{
    switch (c) {
    case '\r':
        return DP_H1_CHUNK_LINE_LF;
    case ';':
        return DP_H1_CHUNK_NAME0;
    case ' ':
    case '\t':
        return DP_H1_CHUNK_BWS;
    default:
        *why = c == '\n' ? "chunk line not ended by CRLF\n" : other;
        return DP_H1_CHUNK_BAD;
    }
}

int dp_h1_chunk_feed(struct dp_h1_chunk *g, const uint8_t *p, size_t n, const char **why)
{
    const char *bad_ext = "invalid chunk extension\n";
    enum dp_h1_chunk_state st = g->state;
    size_t i = 0;

    if (st == DP_H1_CHUNK_OFF || st == DP_H1_CHUNK_DONE)
        return 0;
    while (i < n) {
        if (st == DP_H1_CHUNK_DATA) {
            /* The data itself is the upstream's business: skip it by count. */
            uint64_t take = n - i < g->left ? n - i : g->left;
            i += (size_t)take;
            g->left -= take;
            if (g->left == 0)
                st = DP_H1_CHUNK_DATA_CR;
            continue;
        }
        unsigned c = p[i++];
        int hex;
        switch (st) {
        case DP_H1_CHUNK_SIZE0:
        case DP_H1_CHUNK_SIZE:
            hex = dp_hex_digit((int)c);
            if (hex >= 0) {
                /* http-parser's own limit, so both read the same size */
                if (g->left > (UINT64_MAX - 16) / 16) {
                    *why = "chunk size too large\n";
                    goto bad;
                }
                g->left = g->left * 16 + (uint64_t)hex;
                st = DP_H1_CHUNK_SIZE;
                break;
            }
            if (st == DP_H1_CHUNK_SIZE0) {
                *why = "invalid chunk size\n";
                goto bad;
            }
            st = after_element(c, "invalid chunk size\n", why);
            if (st == DP_H1_CHUNK_BAD)
                goto bad;
            break;
        case DP_H1_CHUNK_BWS: /* only ';' or more whitespace: "3 \r\n" is not a chunk line */
        case DP_H1_CHUNK_NAME_BWS: /* ... or '=' after a name */
            if (c == ';') {
                st = DP_H1_CHUNK_NAME0;
            } else if (c == '=' && st == DP_H1_CHUNK_NAME_BWS) {
                st = DP_H1_CHUNK_VAL0;
            } else if (c != ' ' && c != '\t') {
                *why = c == '\r' || c == '\n' ? "whitespace at the end of a chunk line\n" : bad_ext;
                goto bad;
            }
            break;
        case DP_H1_CHUNK_NAME0:
            if (dp_http_tchar[c]) {
                st = DP_H1_CHUNK_NAME;
            } else if (c != ' ' && c != '\t') {
                *why = bad_ext;
                goto bad;
            }
            break;
        case DP_H1_CHUNK_NAME:
            if (dp_http_tchar[c])
                break;
            if (c == '=') {
                st = DP_H1_CHUNK_VAL0;
                break;
            }
            st = after_element(c, bad_ext, why);
            if (st == DP_H1_CHUNK_BWS)
                st = DP_H1_CHUNK_NAME_BWS; /* '=' may still come */
            if (st == DP_H1_CHUNK_BAD)
                goto bad;
            break;
        case DP_H1_CHUNK_VAL0:
            if (dp_http_tchar[c]) {
                st = DP_H1_CHUNK_TOKEN;
            } else if (c == '"') {
                st = DP_H1_CHUNK_QUOTED;
            } else if (c != ' ' && c != '\t') {
                *why = bad_ext;
                goto bad;
            }
            break;
        case DP_H1_CHUNK_TOKEN:
        case DP_H1_CHUNK_QEND:
            if (st == DP_H1_CHUNK_TOKEN && dp_http_tchar[c])
                break;
            st = after_element(c, bad_ext, why);
            if (st == DP_H1_CHUNK_BAD)
                goto bad;
            break;
        case DP_H1_CHUNK_QUOTED:
            if (c == '"') {
                st = DP_H1_CHUNK_QEND;
            } else if (c == '\\') {
                st = DP_H1_CHUNK_QPAIR;
            } else if (!qdtext(c)) {
                *why = bad_ext; /* a CR or LF in a quoted value too */
                goto bad;
            }
            break;
        case DP_H1_CHUNK_QPAIR:
            if (!qpair(c)) {
                *why = bad_ext;
                goto bad;
            }
            st = DP_H1_CHUNK_QUOTED;
            break;
        case DP_H1_CHUNK_LINE_LF:
            if (c != '\n') {
                *why = "chunk line not ended by CRLF\n";
                goto bad;
            }
            if (g->left == 0) {
                /* The last chunk: the trailer section (and whatever a
                 * pipelining client sends next) is http-parser's. */
                g->state = DP_H1_CHUNK_DONE;
                return 0;
            }
            st = DP_H1_CHUNK_DATA;
            break;
        case DP_H1_CHUNK_DATA_CR:
        case DP_H1_CHUNK_DATA_LF:
            if (c != (st == DP_H1_CHUNK_DATA_CR ? '\r' : '\n')) {
                *why = "chunk data not followed by CRLF\n";
                goto bad;
            }
            st = st == DP_H1_CHUNK_DATA_CR ? DP_H1_CHUNK_DATA_LF : DP_H1_CHUNK_SIZE0;
            break;
        default: /* BAD; OFF, DONE and DATA are handled above */
            *why = "malformed chunked body\n";
            goto bad;
        }
    }
    g->state = st;
    return 0;
bad:
    g->state = DP_H1_CHUNK_BAD;
    return -1;
}
