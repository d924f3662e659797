/* Route matching, per request: the virtual host by authority, then the
 * first route whose path and header matchers all match (route_build.c
 * compiles the tables). */
#include "route.h"

#include <string.h>
#include <strings.h>

/* Envoy's virtual host order: exact, then suffix wildcards (longest first),
 * then prefix wildcards (longest first), then "*". */
static long domain_score(const char *d, const char *host, size_t n)
{
    size_t dl = strlen(d);
    if (dl == 1 && d[0] == '*')
        return 1;
    if (d[0] == '*') {
        size_t sl = dl - 1;
        if (n > sl && strncasecmp(host + n - sl, d + 1, sl) == 0)
            return 2000000 + (long)sl;
        return 0;
    }
    if (dl > 0 && d[dl - 1] == '*') {
        size_t pl = dl - 1;
        if (n > pl && strncasecmp(host, d, pl) == 0)
            return 1000000 + (long)pl;
        return 0;
    }
    return (dl == n && strncasecmp(d, host, n) == 0) ? 3000000 : 0;
}

static const struct dp_virtual_host *find_vhost(const struct dp_route_table *t, const char *host,
                                                size_t n, long *score)
{
    const struct dp_virtual_host *best = NULL;
    long best_score = 0;
    for (size_t i = 0; i < t->n_vhosts; i++) {
        for (size_t j = 0; j < t->vhosts[i].n_domains; j++) {
            long sc = domain_score(t->vhosts[i].domains[j], host, n);
            if (sc > best_score) {
                best_score = sc;
                best = &t->vhosts[i];
            }
        }
    }
    *score = best_score;
    return best;
}

static struct dp_str pseudo_or_header(const struct dp_request_head *req, struct dp_str name, int *found)
{
    *found = 1;
    if (name.n && name.p[0] == ':') {
        if (dp_str_eq(name, DP_STR_LIT(":method")))
            return req->method;
        if (dp_str_eq(name, DP_STR_LIT(":path")))
            return req->path;
        if (dp_str_eq(name, DP_STR_LIT(":authority")) || dp_str_eq(name, DP_STR_LIT("host")))
            return req->authority;
        if (dp_str_eq(name, DP_STR_LIT(":scheme")))
            return req->scheme;
    } else if (dp_str_eq(name, DP_STR_LIT("host"))) {
        return req->authority;
    }
    const struct dp_header *h = dp_headers_get(&req->headers, name);
    if (h)
        return h->value;
    *found = 0;
    return (struct dp_str){NULL, 0};
}

int dp_header_matcher_match(const struct dp_header_matcher *hm, const struct dp_request_head *req)
{
    int found;
    struct dp_str v = pseudo_or_header(req, hm->name, &found);
    if (!found && hm->missing_as_empty) {
        found = 1;
        v = (struct dp_str){"", 0};
    }
    int ok;
    if (hm->m.kind == DP_MATCH_PRESENT)
        ok = found == hm->present;
    else
        ok = found && dp_string_match(&hm->m, v.p, v.n);
    return hm->invert ? !ok : ok;
}

static int headers_match(const struct dp_route *r, const struct dp_request_head *req)
{
    if (r->grpc) { /* as Envoy: a content-type that starts with application/grpc */
        const struct dp_header *ct = dp_headers_get(&req->headers, DP_STR_LIT("content-type"));
        if (ct == NULL || ct->value.n < 16 || strncasecmp(ct->value.p, "application/grpc", 16) != 0)
            return 0;
    }
    for (size_t i = 0; i < r->n_headers; i++)
        if (!dp_header_matcher_match(&r->headers[i], req))
            return 0;
    return 1;
}

/* The route's path pattern, seen as a string matcher (the one compare for
 * prefix, exact and regex): a prefix sees the query too, as in Envoy. */
static int path_match(const struct dp_route *r, struct dp_str path)
{
    const char *q = memchr(path.p, '?', path.n);
    size_t no_query = q ? (size_t)(q - path.p) : path.n;
    struct dp_string_matcher m = {.kind = r->path_kind, .ignore_case = r->case_insensitive,
                                  .value = r->path, .len = r->path_len};
    switch (r->path_kind) {
    case DP_MATCH_PREFIX:
        return dp_string_match(&m, path.p, path.n);
    case DP_MATCH_EXACT:
        return dp_string_match(&m, path.p, no_query);
    case DP_MATCH_REGEX:
        m.re = r->path_re;
        m.has_re = 1;
        return dp_string_match(&m, path.p, no_query);
    default:
        return 0;
    }
}

const struct dp_upgrade_cfg *dp_upgrade_find(const struct dp_route *r, const struct dp_hcm_cfg *h,
                                             struct dp_str type)
{
    for (size_t i = 0; r && i < r->n_upgrades; i++)
        if (dp_str_ieq_lit(type, r->upgrades[i].type))
            return &r->upgrades[i];
    for (size_t i = 0; h && i < h->n_upgrades; i++)
        if (dp_str_ieq_lit(type, h->upgrades[i].type))
            return &h->upgrades[i];
    return NULL;
}

const struct dp_route *dp_route_find(const struct dp_route_table *t,
                                     const struct dp_request_head *req,
                                     const struct dp_virtual_host **vh_out)
{
    const char *host = req->authority.p ? req->authority.p : "";
    size_t n = req->authority.n;
    long score, score2;
    const struct dp_virtual_host *vh = find_vhost(t, host, n, &score);
    /* Also try without the port, so "example.com:8443" finds example.com
     * rather than falling to "*"; an exact host:port domain still wins. */
    const char *colon = memrchr(host, ':', n);
    const char *bracket = memrchr(host, ']', n);
    if (colon && (!bracket || colon > bracket)) {
        const struct dp_virtual_host *vh2 = find_vhost(t, host, (size_t)(colon - host), &score2);
        if (score2 > score)
            vh = vh2;
    }
    *vh_out = vh;
    if (vh == NULL)
        return NULL;
    int is_connect = dp_str_eq(req->method, DP_STR_LIT("CONNECT"));
    for (size_t i = 0; i < vh->n_routes; i++) {
        const struct dp_route *r = &vh->routes[i];
        /* CONNECT requests (authority-form, no path) match connect_matcher
         * routes only, and those match nothing else, as in Envoy. */
        if (r->connect_match != is_connect)
            continue;
        if ((is_connect || path_match(r, req->path)) && headers_match(r, req))
            return r;
    }
    return NULL;
}
