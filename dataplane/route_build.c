/* Route tables compiled from envoy.config.route.v3.RouteConfiguration (the
 * proto -> struct dp_route_table step), their upgrade configs, and their
 * reference counts; route.c matches requests against them. */
#include "route.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dataplane/filter.h"
#include "dataplane/listener.h"
#include "xds/datasource.h"
#include "xds/registry.h"
#include "xds/cfgerr.h"

#define DEFAULT_ROUTE_TIMEOUT 15.0
#define MAX_DIRECT_BODY 4096

/* ---- compiling ---------------------------------------------------------------- */

char *dp_upgrade_type_dup(const char *type)
{
    size_t n = strlen(type);
    if (n == 0)
        return NULL;
    char *t = malloc(n + 1);
    if (t == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)type[i];
        if (!dp_http_tchar[c]) {
            free(t);
            return NULL;
        }
        t[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    t[n] = '\0';
    return t;
}

static char *xstrdup(const char *s)
{
    return strdup(s ? s : "");
}

void dp_header_matcher_free(struct dp_header_matcher *hm)
{
    free((char *)hm->name.p);
    dp_string_matcher_free(&hm->m);
}

int dp_header_matcher_build(struct dp_header_matcher *hm, const Envoy__Config__Route__V3__HeaderMatcher *pm,
                            const char *path, struct xds_cfgerr *e)
{
    char sub[256], msg[256];
    if (pm->name[0] == '\0')
        return xds_cfg_fail(e, "%s.name: required field is missing", path);
    size_t n = strlen(pm->name);
    char *name = malloc(n + 1);
    if (name == NULL)
        return xds_cfg_fail(e, "out of memory");
    for (size_t i = 0; i <= n; i++)
        name[i] = (char)tolower((unsigned char)pm->name[i]);
    hm->missing_as_empty = pm->treat_missing_header_as_empty;
    hm->name = (struct dp_str){name, n};
    hm->invert = pm->invert_match;
    enum dp_match_kind kind;
    const char *value = NULL;
    switch (pm->header_match_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_EXACT_MATCH:
        kind = DP_MATCH_EXACT;
        value = pm->exact_match;
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PREFIX_MATCH:
        kind = DP_MATCH_PREFIX;
        value = pm->prefix_match;
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SUFFIX_MATCH:
        kind = DP_MATCH_SUFFIX;
        value = pm->suffix_match;
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_CONTAINS_MATCH:
        kind = DP_MATCH_CONTAINS;
        value = pm->contains_match;
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SAFE_REGEX_MATCH:
        kind = DP_MATCH_REGEX;
        value = pm->safe_regex_match ? pm->safe_regex_match->regex : "";
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH:
        kind = DP_MATCH_PRESENT;
        hm->present = pm->present_match;
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH:
        snprintf(sub, sizeof(sub), "%s.string_match", path);
        return dp_string_matcher_build(&hm->m, pm->string_match, sub, e->err, e->errlen);
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER__NOT_SET:
        /* Envoy: no specifier means "present". */
        kind = DP_MATCH_PRESENT;
        hm->present = 1;
        break;
    default:
        return xds_cfg_fail(e, "%s: this header match specifier is not supported", path);
    }
    if (dp_string_matcher_init(&hm->m, kind, value ? value : "", 0, msg, sizeof(msg)) < 0)
        return xds_cfg_fail(e, "%s: %s", path, msg);
    return 0;
}

int dp_header_mutations_build(struct dp_header_mutation **out, size_t *n_out,
                              Envoy__Config__Core__V3__HeaderValueOption **opts, size_t n, const char *path,
                              struct xds_cfgerr *e)
{
    *out = NULL;
    *n_out = 0;
    if (n == 0)
        return 0;
    struct dp_header_mutation *m = calloc(n, sizeof(*m));
    if (m == NULL)
        return xds_cfg_fail(e, "out of memory");
    *out = m;
    for (size_t i = 0; i < n; i++) {
        const Envoy__Config__Core__V3__HeaderValueOption *o = opts[i];
        if (o->header == NULL || o->header->key[0] == '\0')
            return xds_cfg_fail(e, "%s[%zu].header.key: required field is missing", path, i);
        size_t kl = strlen(o->header->key);
        char *k = malloc(kl + 1);
        char *v = xstrdup(o->header->value);
        if (k == NULL || v == NULL) {
            free(k);
            free(v);
            return xds_cfg_fail(e, "out of memory");
        }
        for (size_t j = 0; j <= kl; j++)
            k[j] = (char)tolower((unsigned char)o->header->key[j]);
        m[i].name = (struct dp_str){k, kl};
        m[i].value = (struct dp_str){v, strlen(v)};
        /* append (deprecated BoolValue, default true) / append_action */
        m[i].append = o->append ? o->append->value : 1;
        if (o->append_action ==
            ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__OVERWRITE_IF_EXISTS_OR_ADD)
            m[i].append = 0;
        else if (o->append_action !=
                 ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__APPEND_IF_EXISTS_OR_ADD)
            return xds_cfg_fail(e, "%s[%zu].append_action: only APPEND_IF_EXISTS_OR_ADD and "
                           "OVERWRITE_IF_EXISTS_OR_ADD are supported",
                        path, i);
        *n_out = i + 1;
    }
    return 0;
}

static int build_removals(char ***out, size_t *n_out, char **names, size_t n, struct xds_cfgerr *e)
{
    *out = NULL;
    *n_out = 0;
    if (n == 0)
        return 0;
    char **r = calloc(n, sizeof(*r));
    if (r == NULL)
        return xds_cfg_fail(e, "out of memory");
    *out = r;
    for (size_t i = 0; i < n; i++) {
        r[i] = xstrdup(names[i]);
        if (r[i] == NULL)
            return xds_cfg_fail(e, "out of memory");
        for (char *p = r[i]; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        *n_out = i + 1;
    }
    return 0;
}

static double duration_s(const Google__Protobuf__Duration *d, double dflt)
{
    if (d == NULL)
        return dflt;
    return (double)d->seconds + (double)d->nanos / 1e9;
}

static int build_per_filter(void ***out, size_t *n_out,
                            Envoy__Config__Route__V3__VirtualHost__TypedPerFilterConfigEntry **entries,
                            size_t n, const struct dp_http_filter *filters, size_t n_filters,
                            const char *path, struct xds_cfgerr *e);

static int build_route(struct dp_route *r, const Envoy__Config__Route__V3__Route *pr,
                       const struct dp_http_filter *filters, size_t n_filters, const char *path,
                       struct xds_cfgerr *e)
{
    char sub[256];
    r->name = xstrdup(pr->name);
    r->timeout = DEFAULT_ROUTE_TIMEOUT;
    const Envoy__Config__Route__V3__RouteMatch *m = pr->match;
    if (m == NULL)
        return xds_cfg_fail(e, "%s.match: required field is missing", path);
    r->case_insensitive = m->case_sensitive && !m->case_sensitive->value;
    switch (m->path_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX:
        r->path_kind = DP_MATCH_PREFIX;
        r->path = xstrdup(m->prefix);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH:
        r->path_kind = DP_MATCH_EXACT;
        r->path = xstrdup(m->path);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_SAFE_REGEX: {
        struct dp_string_matcher sm;
        char msg[256];
        r->path_kind = DP_MATCH_REGEX;
        if (dp_string_matcher_init(&sm, DP_MATCH_REGEX, m->safe_regex ? m->safe_regex->regex : "",
                                   r->case_insensitive, msg, sizeof(msg)) < 0)
            return xds_cfg_fail(e, "%s.match.safe_regex: %s", path, msg);
        r->path_re = sm.re;
        r->has_path_re = 1;
        break;
    }
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_CONNECT_MATCHER:
        r->connect_match = 1;
        r->path_kind = DP_MATCH_PREFIX;
        r->path = xstrdup("");
        break;
    default:
        return xds_cfg_fail(e, "%s.match: one of prefix, path, safe_regex or connect_matcher is required", path);
    }
    if (r->path_kind != DP_MATCH_REGEX && r->path == NULL)
        return xds_cfg_fail(e, "out of memory");
    r->path_len = r->path ? strlen(r->path) : 0;
    if (m->n_query_parameters)
        return xds_cfg_fail(e, "%s.match.query_parameters: not supported", path);
    r->grpc = m->grpc != NULL;
    if (m->n_headers) {
        r->headers = calloc(m->n_headers, sizeof(*r->headers));
        if (r->headers == NULL)
            return xds_cfg_fail(e, "out of memory");
        for (size_t i = 0; i < m->n_headers; i++) {
            snprintf(sub, sizeof(sub), "%s.match.headers[%zu]", path, i);
            r->n_headers = i + 1;
            if (dp_header_matcher_build(&r->headers[i], m->headers[i], sub, e) < 0)
                return -1;
        }
    }

    switch (pr->action_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE: {
        const Envoy__Config__Route__V3__RouteAction *ra = pr->route;
        r->action = DP_ROUTE_CLUSTER;
        if (ra->cluster_specifier_case != ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER)
            return xds_cfg_fail(e, "%s.route: only \"cluster\" is supported as the cluster specifier", path);
        if (ra->cluster[0] == '\0')
            return xds_cfg_fail(e, "%s.route.cluster: required field is missing", path);
        r->cluster = xstrdup(ra->cluster);
        switch (ra->cluster_not_found_response_code) {
        case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_NOT_FOUND_RESPONSE_CODE__NOT_FOUND:
            r->cluster_not_found = 404;
            break;
        case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_NOT_FOUND_RESPONSE_CODE__INTERNAL_SERVER_ERROR:
            r->cluster_not_found = 500;
            break;
        default:
            r->cluster_not_found = 503;
            break;
        }
        r->timeout = duration_s(ra->timeout, DEFAULT_ROUTE_TIMEOUT);
        r->idle_timeout = duration_s(ra->idle_timeout, 0);
        r->grpc_timeout_max = -1;
        if (ra->max_stream_duration) {
            const Envoy__Config__Route__V3__RouteAction__MaxStreamDuration *md = ra->max_stream_duration;
            r->has_max_stream_duration = md->max_stream_duration != NULL;
            r->max_stream_duration = duration_s(md->max_stream_duration, 0);
            r->grpc_timeout_max = md->grpc_timeout_header_max ? duration_s(md->grpc_timeout_header_max, 0) : -1;
            r->grpc_timeout_offset = duration_s(md->grpc_timeout_header_offset, 0);
        }
        if (ra->n_upgrade_configs) {
            r->upgrades = calloc(ra->n_upgrade_configs, sizeof(*r->upgrades));
            if (r->upgrades == NULL)
                return xds_cfg_fail(e, "out of memory");
            for (size_t i = 0; i < ra->n_upgrade_configs; i++) {
                const Envoy__Config__Route__V3__RouteAction__UpgradeConfig *uc = ra->upgrade_configs[i];
                struct dp_upgrade_cfg *u = &r->upgrades[i];
                r->n_upgrades = i + 1;
                u->type = dp_upgrade_type_dup(uc->upgrade_type);
                if (u->type == NULL)
                    return xds_cfg_fail(e, "%s.route.upgrade_configs[%zu].upgrade_type: %s", path, i,
                                uc->upgrade_type[0] ? "not a token" : "required field is missing");
                u->enabled = uc->enabled ? uc->enabled->value : 1;
                if (uc->connect_config) {
                    if (strcmp(u->type, "connect") != 0)
                        return xds_cfg_fail(e, "%s.route.upgrade_configs[%zu].connect_config: only for upgrade_type CONNECT",
                                    path, i);
                    if (uc->connect_config->allow_post)
                        return xds_cfg_fail(e, "%s.route.upgrade_configs[%zu].connect_config.allow_post: not supported",
                                    path, i);
                    u->terminate_connect = 1;
                }
            }
        }
        if (ra->prefix_rewrite[0])
            r->prefix_rewrite = xstrdup(ra->prefix_rewrite);
        if (ra->regex_rewrite)
            return xds_cfg_fail(e, "%s.route.regex_rewrite: not supported", path);
        if (ra->host_rewrite_specifier_case ==
            ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_HOST_REWRITE_LITERAL)
            r->host_rewrite = xstrdup(ra->host_rewrite_literal);
        else if (ra->host_rewrite_specifier_case !=
                 ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER__NOT_SET)
            return xds_cfg_fail(e, "%s.route: only host_rewrite_literal is supported for host rewriting", path);
        break;
    }
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_DIRECT_RESPONSE: {
        const Envoy__Config__Route__V3__DirectResponseAction *dr = pr->direct_response;
        r->action = DP_ROUTE_DIRECT_RESPONSE;
        if (dr->status < 200 || dr->status > 599)
            return xds_cfg_fail(e, "%s.direct_response.status: %u is not an HTTP status between 200 and 599",
                        path, dr->status);
        r->direct_status = (int)dr->status;
        if (dr->body) {
            char msg[256];
            if (xds_datasource_read(dr->body, &r->direct_body, &r->direct_body_len, msg,
                                    sizeof(msg)) < 0)
                return xds_cfg_fail(e, "%s.direct_response.body.%s", path, msg);
            if (r->direct_body_len > MAX_DIRECT_BODY)
                return xds_cfg_fail(e, "%s.direct_response.body: %zu bytes is more than the %d allowed",
                            path, r->direct_body_len, MAX_DIRECT_BODY);
        }
        break;
    }
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_REDIRECT: {
        const Envoy__Config__Route__V3__RedirectAction *ra = pr->redirect;
        static const int codes[] = {301, 302, 303, 307, 308};
        r->action = DP_ROUTE_REDIRECT;
        if ((unsigned)ra->response_code >= sizeof(codes) / sizeof(codes[0]))
            return xds_cfg_fail(e, "%s.redirect.response_code: unknown value", path);
        r->direct_status = codes[ra->response_code];
        if (ra->scheme_rewrite_specifier_case ==
            ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__SCHEME_REWRITE_SPECIFIER_HTTPS_REDIRECT) {
            if (ra->https_redirect)
                r->redirect_scheme = xstrdup("https");
        } else if (ra->scheme_rewrite_specifier_case ==
                   ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__SCHEME_REWRITE_SPECIFIER_SCHEME_REDIRECT) {
            r->redirect_scheme = xstrdup(ra->scheme_redirect);
        }
        if (ra->host_redirect[0])
            r->redirect_host = xstrdup(ra->host_redirect);
        if (ra->path_rewrite_specifier_case ==
            ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_PATH_REDIRECT)
            r->redirect_path = xstrdup(ra->path_redirect);
        else if (ra->path_rewrite_specifier_case ==
                 ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_PREFIX_REWRITE)
            r->prefix_rewrite = xstrdup(ra->prefix_rewrite);
        r->redirect_strip_query = ra->strip_query;
        break;
    }
    default:
        return xds_cfg_fail(e, "%s: one of route, redirect or direct_response is required", path);
    }

    snprintf(sub, sizeof(sub), "%s.request_headers_to_add", path);
    if (dp_header_mutations_build(&r->req_add, &r->n_req_add, pr->request_headers_to_add,
                        pr->n_request_headers_to_add, sub, e) < 0)
        return -1;
    snprintf(sub, sizeof(sub), "%s.response_headers_to_add", path);
    if (dp_header_mutations_build(&r->resp_add, &r->n_resp_add, pr->response_headers_to_add,
                        pr->n_response_headers_to_add, sub, e) < 0)
        return -1;
    if (build_removals(&r->req_remove, &r->n_req_remove, pr->request_headers_to_remove,
                       pr->n_request_headers_to_remove, e) < 0 ||
        build_removals(&r->resp_remove, &r->n_resp_remove, pr->response_headers_to_remove,
                       pr->n_response_headers_to_remove, e) < 0)
        return -1;
    snprintf(sub, sizeof(sub), "%s.typed_per_filter_config", path);
    return build_per_filter(&r->filter_cfg, &r->n_filter_cfg,
                            (Envoy__Config__Route__V3__VirtualHost__TypedPerFilterConfigEntry **)
                                pr->typed_per_filter_config,
                            pr->n_typed_per_filter_config, filters, n_filters, sub, e);
}

static int build_per_filter(void ***out, size_t *n_out,
                            Envoy__Config__Route__V3__VirtualHost__TypedPerFilterConfigEntry **entries,
                            size_t n, const struct dp_http_filter *filters, size_t n_filters,
                            const char *path, struct xds_cfgerr *e)
{
    if (n == 0)
        return 0;
    void **cfgs = *out;
    if (cfgs == NULL) {
        cfgs = calloc(n_filters ? n_filters : 1, sizeof(void *));
        if (cfgs == NULL)
            return xds_cfg_fail(e, "out of memory");
        *out = cfgs;
        *n_out = n_filters;
    }
    for (size_t i = 0; i < n; i++) {
        const char *key = entries[i]->key;
        const Google__Protobuf__Any *any = entries[i]->value;
        size_t fi = n_filters;
        for (size_t j = 0; j < n_filters; j++)
            if (strcmp(filters[j].name, key) == 0)
                fi = j;
        if (fi == n_filters)
            return xds_cfg_fail(e, "%s[\"%s\"]: no HTTP filter of that name in the connection manager",
                        path, key);
        if (cfgs[fi] != NULL)
            continue; /* the route's own override wins */
        const struct dp_filter_ops *ops = filters[fi].ops;
        if (ops->route_config_type == NULL || ops->route_config_new == NULL)
            return xds_cfg_fail(e, "%s[\"%s\"]: the filter %s takes no per-route configuration", path, key,
                        ops->name);
        if (any == NULL || strcmp(xds_type_url_name(any->type_url), ops->route_config_type->name) != 0)
            return xds_cfg_fail(e, "%s[\"%s\"]: expected a %s", path, key, ops->route_config_type->name);
        ProtobufCMessage *msg =
            protobuf_c_message_unpack(ops->route_config_type, NULL, any->value.len, any->value.data);
        if (msg == NULL)
            return xds_cfg_fail(e, "%s[\"%s\"]: cannot decode %s", path, key, ops->route_config_type->name);
        char msgerr[256];
        cfgs[fi] = ops->route_config_new(msg, msgerr, sizeof(msgerr));
        protobuf_c_message_free_unpacked(msg, NULL);
        if (cfgs[fi] == NULL)
            return xds_cfg_fail(e, "%s[\"%s\"]: %s", path, key, msgerr);
    }
    return 0;
}

void dp_header_mutations_free(struct dp_header_mutation *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((char *)m[i].name.p);
        free((char *)m[i].value.p);
    }
    free(m);
}

static void free_removals(char **r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(r[i]);
    free(r);
}

static void free_route(struct dp_route *r, const struct dp_http_filter *filters)
{
    free(r->name);
    free(r->path);
    if (r->has_path_re)
        regfree(&r->path_re);
    for (size_t i = 0; i < r->n_headers; i++) {
        dp_header_matcher_free(&r->headers[i]);
    }
    free(r->headers);
    for (size_t i = 0; i < r->n_upgrades; i++)
        free(r->upgrades[i].type);
    free(r->upgrades);
    free(r->cluster);
    free(r->prefix_rewrite);
    free(r->host_rewrite);
    free(r->direct_body);
    free(r->redirect_scheme);
    free(r->redirect_host);
    free(r->redirect_path);
    dp_header_mutations_free(r->req_add, r->n_req_add);
    dp_header_mutations_free(r->resp_add, r->n_resp_add);
    free_removals(r->req_remove, r->n_req_remove);
    free_removals(r->resp_remove, r->n_resp_remove);
    for (size_t i = 0; i < r->n_filter_cfg; i++) {
        if (r->filter_cfg[i] == NULL || filters == NULL)
            continue;
        void (*rfree)(void *) = filters[i].ops->route_config_free ? filters[i].ops->route_config_free
                                                                  : filters[i].ops->config_free;
        if (rfree)
            rfree(r->filter_cfg[i]);
    }
    free(r->filter_cfg);
}

/* Per-route filter configs are freed by the filter that built them; the
 * table remembers which filter list they belong to. */
struct table_priv {
    struct dp_route_table t;
    const struct dp_http_filter *filters;
};

static void table_free(struct dp_route_table *t)
{
    struct table_priv *tp = (struct table_priv *)t;
    for (size_t i = 0; i < t->n_vhosts; i++) {
        struct dp_virtual_host *vh = &t->vhosts[i];
        free(vh->name);
        for (size_t j = 0; j < vh->n_domains; j++)
            free(vh->domains[j]);
        free(vh->domains);
        for (size_t j = 0; j < vh->n_routes; j++)
            free_route(&vh->routes[j], tp->filters);
        free(vh->routes);
        dp_header_mutations_free(vh->req_add, vh->n_req_add);
        dp_header_mutations_free(vh->resp_add, vh->n_resp_add);
    }
    free(t->vhosts);
    free(t->name);
    dp_header_mutations_free(t->resp_add, t->n_resp_add);
    free_removals(t->resp_remove, t->n_resp_remove);
    free(tp);
}

void dp_route_table_ref(struct dp_route_table *t)
{
    __atomic_add_fetch(&t->refs, 1, __ATOMIC_RELAXED);
}

void dp_route_table_unref(struct dp_route_table *t)
{
    if (t && __atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) == 0)
        table_free(t);
}

struct dp_route_table *dp_route_table_build(const Envoy__Config__Route__V3__RouteConfiguration *rc,
                                            const struct dp_http_filter *filters, size_t n_filters,
                                            char *err, size_t errlen)
{
    struct xds_cfgerr e = {err, errlen};
    char path[256];
    struct table_priv *tp = calloc(1, sizeof(*tp));
    if (tp == NULL) {
        xds_cfg_fail(&e, "out of memory");
        return NULL;
    }
    struct dp_route_table *t = &tp->t;
    tp->filters = filters;
    t->refs = 1;
    t->name = xstrdup(rc->name);
    if (rc->n_virtual_hosts) {
        t->vhosts = calloc(rc->n_virtual_hosts, sizeof(*t->vhosts));
        if (t->vhosts == NULL) {
            xds_cfg_fail(&e, "out of memory");
            goto fail;
        }
    }
    for (size_t i = 0; i < rc->n_virtual_hosts; i++) {
        const Envoy__Config__Route__V3__VirtualHost *pv = rc->virtual_hosts[i];
        struct dp_virtual_host *vh = &t->vhosts[i];
        t->n_vhosts = i + 1;
        vh->name = xstrdup(pv->name);
        if (pv->n_domains == 0) {
            xds_cfg_fail(&e, "virtual_hosts[%zu].domains: at least one domain is required", i);
            goto fail;
        }
        vh->domains = calloc(pv->n_domains, sizeof(char *));
        if (vh->domains == NULL) {
            xds_cfg_fail(&e, "out of memory");
            goto fail;
        }
        for (size_t j = 0; j < pv->n_domains; j++) {
            const char *d = pv->domains[j];
            size_t dl = strlen(d);
            if (dl == 0 || (strchr(d, '*') && !(d[0] == '*' || d[dl - 1] == '*')) ||
                (dl > 1 && d[0] == '*' && d[dl - 1] == '*')) {
                xds_cfg_fail(&e, "virtual_hosts[%zu].domains[%zu]: \"%s\" is not a valid domain (exact, "
                         "\"*.suffix\", \"prefix.*\" or \"*\")",
                     i, j, d);
                goto fail;
            }
            for (size_t k = 0; k < i; k++)
                for (size_t l = 0; l < t->vhosts[k].n_domains; l++)
                    if (strcasecmp(t->vhosts[k].domains[l], d) == 0) {
                        xds_cfg_fail(&e, "virtual_hosts[%zu].domains[%zu]: \"%s\" is already used by "
                                 "virtual host \"%s\"",
                             i, j, d, t->vhosts[k].name);
                        goto fail;
                    }
            vh->domains[j] = xstrdup(d);
            vh->n_domains = j + 1;
        }
        if (pv->require_tls) {
            xds_cfg_fail(&e, "virtual_hosts[%zu].require_tls: not supported", i);
            goto fail;
        }
        snprintf(path, sizeof(path), "virtual_hosts[%zu].request_headers_to_add", i);
        if (dp_header_mutations_build(&vh->req_add, &vh->n_req_add, pv->request_headers_to_add,
                            pv->n_request_headers_to_add, path, &e) < 0)
            goto fail;
        snprintf(path, sizeof(path), "virtual_hosts[%zu].response_headers_to_add", i);
        if (dp_header_mutations_build(&vh->resp_add, &vh->n_resp_add, pv->response_headers_to_add,
                            pv->n_response_headers_to_add, path, &e) < 0)
            goto fail;
        if (pv->n_routes) {
            vh->routes = calloc(pv->n_routes, sizeof(*vh->routes));
            if (vh->routes == NULL) {
                xds_cfg_fail(&e, "out of memory");
                goto fail;
            }
        }
        for (size_t j = 0; j < pv->n_routes; j++) {
            snprintf(path, sizeof(path), "virtual_hosts[%zu].routes[%zu]", i, j);
            vh->n_routes = j + 1;
            if (build_route(&vh->routes[j], pv->routes[j], filters, n_filters, path, &e) < 0)
                goto fail;
        }
        /* A virtual host's typed_per_filter_config applies to its routes
         * that do not override it: each route gets its own copy. */
        for (size_t j = 0; j < vh->n_routes; j++) {
            snprintf(path, sizeof(path), "virtual_hosts[%zu].typed_per_filter_config", i);
            if (build_per_filter(&vh->routes[j].filter_cfg, &vh->routes[j].n_filter_cfg,
                                 pv->typed_per_filter_config, pv->n_typed_per_filter_config,
                                 filters, n_filters, path, &e) < 0)
                goto fail;
        }
    }
    if (dp_header_mutations_build(&t->resp_add, &t->n_resp_add, rc->response_headers_to_add,
                        rc->n_response_headers_to_add, "response_headers_to_add", &e) < 0 ||
        build_removals(&t->resp_remove, &t->n_resp_remove, rc->response_headers_to_remove,
                       rc->n_response_headers_to_remove, &e) < 0)
        goto fail;
    return t;
fail:
    table_free(t);
    return NULL;
}
