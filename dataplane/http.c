#include "http.h"

#include <ctype.h>
#include <string.h>

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

int dp_headers_add(struct dp_headers *h, struct dp_arena *a, struct dp_str name, struct dp_str value)
{
    char *n = dp_arena_strndup(a, name.p, name.n);
    char *v = dp_arena_strndup(a, value.p, value.n);
    if (n == NULL || v == NULL)
        return -1;
    for (size_t i = 0; i < name.n; i++)
        n[i] = (char)tolower((unsigned char)n[i]);
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
