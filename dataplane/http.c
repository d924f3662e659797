#include "http.h"

#include <ctype.h>
#include <string.h>

#include "dataplane/buf.h"

#define T1(c) [c] = 1
const uint8_t dp_http_tchar[256] = {
    T1('!'), T1('#'), T1('$'), T1('%'), T1('&'), T1('\''), T1('*'), T1('+'), T1('-'), T1('.'),
    T1('^'), T1('_'), T1('`'), T1('|'), T1('~'),
    T1('0'), T1('1'), T1('2'), T1('3'), T1('4'), T1('5'), T1('6'), T1('7'), T1('8'), T1('9'),
    T1('a'), T1('b'), T1('c'), T1('d'), T1('e'), T1('f'), T1('g'), T1('h'), T1('i'), T1('j'),
    T1('k'), T1('l'), T1('m'), T1('n'), T1('o'), T1('p'), T1('q'), T1('r'), T1('s'), T1('t'),
    T1('u'), T1('v'), T1('w'), T1('x'), T1('y'), T1('z'),
    T1('A'), T1('B'), T1('C'), T1('D'), T1('E'), T1('F'), T1('G'), T1('H'), T1('I'), T1('J'),
    T1('K'), T1('L'), T1('M'), T1('N'), T1('O'), T1('P'), T1('Q'), T1('R'), T1('S'), T1('T'),
    T1('U'), T1('V'), T1('W'), T1('X'), T1('Y'), T1('Z'),
};
#undef T1

int dp_str_ieq_lit(struct dp_str a, const char *s)
{
    size_t n = strlen(s);
    if (a.n != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (tolower((unsigned char)a.p[i]) != s[i])
            return 0;
    return 1;
}

const struct dp_header *dp_headers_get(const struct dp_headers *h, struct dp_str name)
{
    for (size_t i = 0; i < h->n; i++)
        if (dp_str_eq(h->v[i].name, name))
            return &h->v[i];
    return NULL;
}

static int grow(struct dp_headers *h, struct dp_arena *a)
{
    if (h->n < h->cap)
        return 0;
    size_t ncap = h->cap ? h->cap * 2 : 16;
    struct dp_header *nv = dp_arena_alloc(a, ncap * sizeof(*nv));
    if (nv == NULL)
        return -1;
    if (h->n)
        memcpy(nv, h->v, h->n * sizeof(*nv));
    h->v = nv;
    h->cap = ncap;
    return 0;
}

int dp_headers_add_ref(struct dp_headers *h, struct dp_arena *a, struct dp_str name,
                       struct dp_str value)
{
    if (grow(h, a) < 0)
        return -1;
    h->v[h->n].name = name;
    h->v[h->n].value = value;
    h->n++;
    return 0;
}

/* Copies n bytes, ASCII upper case to lower, eight at a time: a byte gets
 * 0x20 when it is below 0x80, at least 'A' and not above 'Z'. */
static void lower_copy(char *dst, const char *src, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, src + i, 8);
        uint64_t low7 = x & (0x7f * ones);
        uint64_t ge_a = low7 + (0x80 - 'A') * ones;
        uint64_t gt_z = low7 + (0x7f - 'Z') * ones;
        uint64_t upper = ~x & (ge_a ^ gt_z) & (0x80 * ones);
        x |= upper >> 2;
        memcpy(dst + i, &x, 8);
    }
    for (; i < n; i++) {
        char c = src[i];
        dst[i] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
}

int dp_headers_add(struct dp_headers *h, struct dp_arena *a, struct dp_str name, struct dp_str value)
{
    /* One allocation: "name\0value\0", the name lowercased as it is copied. */
    char *n = dp_arena_alloc(a, name.n + value.n + 2);
    if (n == NULL)
        return -1;
    lower_copy(n, name.p, name.n);
    n[name.n] = '\0';
    char *v = n + name.n + 1;
    if (value.n)
        memcpy(v, value.p, value.n);
    v[value.n] = '\0';
    return dp_headers_add_ref(h, a, (struct dp_str){n, name.n}, (struct dp_str){v, value.n});
}

size_t dp_headers_remove(struct dp_headers *h, struct dp_str name)
{
    size_t j = 0, removed = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (dp_str_eq(h->v[i].name, name)) {
            removed++;
            continue;
        }
        h->v[j++] = h->v[i];
    }
    h->n = j;
    return removed;
}

size_t dp_headers_remove_if(struct dp_headers *h, int (*drop)(const struct dp_header *, void *), void *arg)
{
    size_t j = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (drop(&h->v[i], arg))
            continue;
        if (j != i)
            h->v[j] = h->v[i];
        j++;
    }
    size_t removed = h->n - j;
    h->n = j;
    return removed;
}

int dp_headers_set(struct dp_headers *h, struct dp_arena *a, struct dp_str name, struct dp_str value)
{
    dp_headers_remove(h, name);
    return dp_headers_add(h, a, name, value);
}

const char *dp_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

int dp_http_append_field(struct dp_buf *out, struct dp_str name, struct dp_str value)
{
    size_t n = name.n + value.n + 4;
    uint8_t *p = dp_buf_reserve(out, n);
    if (p == NULL)
        return -1;
    memcpy(p, name.p, name.n);
    p += name.n;
    *p++ = ':';
    *p++ = ' ';
    if (value.n)
        memcpy(p, value.p, value.n);
    p += value.n;
    *p++ = '\r';
    *p = '\n';
    dp_buf_commit(out, n);
    return 0;
}

int dp_http_append_status_line(struct dp_buf *out, int status)
{
    const char *reason = dp_http_reason(status);
    size_t rn = strlen(reason);
    size_t n = 9 + 3 + 1 + rn + 2;
    uint8_t *p = dp_buf_reserve(out, n);
    if (p == NULL)
        return -1;
    if (status < 100 || status > 999)
        status = 500;
    memcpy(p, "HTTP/1.1 ", 9);
    p[9] = (uint8_t)('0' + status / 100);
    p[10] = (uint8_t)('0' + status / 10 % 10);
    p[11] = (uint8_t)('0' + status % 10);
    p[12] = ' ';
    memcpy(p + 13, reason, rn);
    p[13 + rn] = '\r';
    p[14 + rn] = '\n';
    dp_buf_commit(out, n);
    return 0;
}

/* ---- normalize_path, merge_slashes -------------------------------------- */

int dp_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* RFC 3986 5.2.4 on buf[0..len), which starts with '/': in place. */
static size_t remove_dot_segments(char *buf, size_t len)
{
    size_t w = 0, r = 0;
    while (r < len) {
        size_t s = r + 1, e = s; /* buf[r] is a '/', the segment is buf[s..e) */
        while (e < len && buf[e] != '/')
            e++;
        size_t sl = e - s;
        int last = e >= len;
        if (sl == 1 && buf[s] == '.') {
            if (last)
                buf[w++] = '/';
        } else if (sl == 2 && buf[s] == '.' && buf[s + 1] == '.') {
            while (w > 0 && buf[w - 1] != '/')
                w--;
            if (w > 0)
                w--; /* and the slash before the segment */
            if (last)
                buf[w++] = '/';
        } else {
            buf[w++] = '/';
            memmove(buf + w, buf + s, sl);
            w += sl;
        }
        r = e;
    }
    if (w == 0)
        buf[w++] = '/';
    return w;
}

long dp_http_normalize_path(const char *in, size_t n, char *out, int normalize, int merge)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t plen = 0, o = 0;
    while (plen < n && in[plen] != '?' && in[plen] != '#')
        plen++;
    if (plen == 0 || in[0] != '/') {
        memcpy(out, in, n);
        return (long)n;
    }
    if (normalize) {
        for (size_t i = 0; i < plen; i++) {
            char c = in[i];
            if (c == '%') {
                /* two hex digits, within the path */
                int hi = i + 2 < plen ? dp_hex_digit((unsigned char)in[i + 1]) : -1;
                int lo = hi >= 0 ? dp_hex_digit((unsigned char)in[i + 2]) : -1;
                if (hi < 0 || lo < 0)
                    return -1;
                unsigned char v = (unsigned char)(hi << 4 | lo);
                if (unreserved(v)) {
                    out[o++] = (char)v;
                } else {
                    out[o++] = '%';
                    out[o++] = hex[hi];
                    out[o++] = hex[lo];
                }
                i += 2;
            } else {
                out[o++] = c == '\\' ? '/' : c;
            }
        }
        o = remove_dot_segments(out, o);
    } else {
        memcpy(out, in, plen);
        o = plen;
    }
    if (merge) {
        size_t w = 0;
        for (size_t r = 0; r < o; r++)
            if (!(out[r] == '/' && w > 0 && out[w - 1] == '/'))
                out[w++] = out[r];
        o = w;
    }
    memcpy(out + o, in + plen, n - plen);
    return (long)(o + n - plen);
}

size_t dp_http_unescape_slashes(char *p, size_t n, int *found)
{
    size_t r = 0, w = 0;
    *found = 0;
    while (r < n && p[r] != '?' && p[r] != '#') {
        if (p[r] == '%' && r + 2 < n && p[r + 1] == '2' && (p[r + 2] | 0x20) == 'f') {
            p[w++] = '/';
            r += 3;
            *found = 1;
        } else if (p[r] == '%' && r + 2 < n && p[r + 1] == '5' && (p[r + 2] | 0x20) == 'c') {
            p[w++] = '\\';
            r += 3;
            *found = 1;
        } else {
            p[w++] = p[r++];
        }
    }
    if (w != r)
        memmove(p + w, p + r, n - r);
    return w + (n - r);
}

int dp_http_is_grpc_content_type(struct dp_str v)
{
    static const char g[] = "application/grpc";
    size_t n = sizeof(g) - 1;
    if (v.n < n || !dp_str_ieq_lit((struct dp_str){v.p, n}, g))
        return 0;
    return v.n == n || v.p[n] == '+' || v.p[n] == ';';
}

int dp_http_list_has_token(struct dp_str v, const char *t)
{
    size_t tn = strlen(t);
    const char *p = v.p, *end = v.p + v.n;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *b = p;
        while (p < end && *p != ',' && *p != ';' && *p != ' ' && *p != '\t')
            p++;
        if ((size_t)(p - b) == tn && dp_str_ieq_lit((struct dp_str){b, tn}, t))
            return 1;
        while (p < end && *p != ',')
            p++;
    }
    return 0;
}

int dp_grpc_status_of_http(int http_status)
{
    switch (http_status) {
    case 400:
        return 13; /* INTERNAL */
    case 401:
        return 16; /* UNAUTHENTICATED */
    case 403:
        return 7; /* PERMISSION_DENIED */
    case 404:
        return 12; /* UNIMPLEMENTED */
    case 429:
    case 502:
    case 503:
    case 504:
        return 14; /* UNAVAILABLE */
    default:
        return 2; /* UNKNOWN */
    }
}

double dp_grpc_timeout_parse(struct dp_str v)
{
    if (v.n < 2 || v.n > 9) /* gRPC: at most 8 digits */
        return -1;
    double x = 0;
    for (size_t i = 0; i + 1 < v.n; i++) {
        char c = v.p[i];
        if (c < '0' || c > '9')
            return -1;
        x = x * 10 + (c - '0');
    }
    switch (v.p[v.n - 1]) {
    case 'H':
        return x * 3600;
    case 'M':
        return x * 60;
    case 'S':
        return x;
    case 'm':
        return x / 1e3;
    case 'u':
        return x / 1e6;
    case 'n':
        return x / 1e9;
    default:
        return -1;
    }
}
