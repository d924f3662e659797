/* The HTTP connection manager's local_reply_config (local_reply.h). */
#include "local_reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/accesslog.h"
#include "dataplane/arena.h"
#include "dataplane/buf.h"
#include "dataplane/route.h"
#include "dataplane/stream.h"
#include "dataplane/worker.h"
#include "xds/cfgerr.h"
#include "xds/datasource.h"

enum lf_kind { LF_STATUS, LF_DURATION, LF_NOT_HEALTH_CHECK, LF_AND, LF_OR, LF_HEADER, LF_FLAGS };

/* An access-log filter, compiled. */
struct log_filter {
    enum lf_kind kind;
    int op;                 /* ComparisonFilter.Op: EQ, GE, LE */
    uint32_t value;         /* default_value (legate's runtime has no such keys) */
    struct dp_header_matcher header;
    char **flags;           /* response_flag_filter; none: any flag */
    size_t n_flags;
    struct log_filter *sub; /* and/or */
    size_t n_sub;
};

struct mapper {
    struct log_filter filter;
    int status;             /* 0: keep */
    char *body;             /* NULL: keep */
    size_t body_len;
    struct dp_subst *format; /* body_format_override */
    struct dp_header_mutation *add;
    size_t n_add;
};

struct dp_local_reply {
    struct mapper *mappers;
    size_t n_mappers;
    struct dp_subst *format; /* body_format */
};

/* Envoy's response flags (ResponseFlagFilter's validation list). */
static const char *const known_flags[] = {"LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI",
                                          "FI", "RL", "UAEX", "RLSE", "DC", "URX", "SI", "IH", "DPE", "UMSDR",
                                          "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR", "UDO"};

static void filter_free(struct log_filter *f)
{
    if (f->kind == LF_HEADER)
        dp_header_matcher_free(&f->header);
    for (size_t i = 0; i < f->n_flags; i++)
        free(f->flags[i]);
    free(f->flags);
    for (size_t i = 0; i < f->n_sub; i++)
        filter_free(&f->sub[i]);
    free(f->sub);
    memset(f, 0, sizeof(*f));
}

static int comparison(struct log_filter *f, const Envoy__Config__Accesslog__V3__ComparisonFilter *c,
                      const char *path, struct xds_cfgerr *e)
{
    if (c == NULL || c->value == NULL)
        return xds_cfg_fail(e, "%s.comparison.value: required field is missing", path);
    f->op = c->op;
    f->value = c->value->default_value;
    return 0;
}

static int filter_build(struct log_filter *f, const Envoy__Config__Accesslog__V3__AccessLogFilter *pf,
                        const char *path, struct xds_cfgerr *e)
{
    char sub[256];
    if (pf == NULL)
        return xds_cfg_fail(e, "%s: required field is missing", path);
    switch (pf->filter_specifier_case) {
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_STATUS_CODE_FILTER:
        f->kind = LF_STATUS;
        snprintf(sub, sizeof(sub), "%s.status_code_filter", path);
        return comparison(f, pf->status_code_filter->comparison, sub, e);
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_DURATION_FILTER:
        f->kind = LF_DURATION;
        snprintf(sub, sizeof(sub), "%s.duration_filter", path);
        return comparison(f, pf->duration_filter->comparison, sub, e);
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_NOT_HEALTH_CHECK_FILTER:
        f->kind = LF_NOT_HEALTH_CHECK;
        return 0;
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_HEADER_FILTER:
        f->kind = LF_HEADER;
        snprintf(sub, sizeof(sub), "%s.header_filter.header", path);
        if (pf->header_filter->header == NULL)
            return xds_cfg_fail(e, "%s: required field is missing", sub);
        return dp_header_matcher_build(&f->header, pf->header_filter->header, sub, e);
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_RESPONSE_FLAG_FILTER: {
        const Envoy__Config__Accesslog__V3__ResponseFlagFilter *rf = pf->response_flag_filter;
        f->kind = LF_FLAGS;
        f->flags = calloc(rf->n_flags + 1, sizeof(*f->flags));
        if (f->flags == NULL)
            return xds_cfg_fail(e, "out of memory");
        for (size_t i = 0; i < rf->n_flags; i++) {
            size_t k = 0;
            while (k < sizeof(known_flags) / sizeof(known_flags[0]) && strcmp(known_flags[k], rf->flags[i]) != 0)
                k++;
            if (k == sizeof(known_flags) / sizeof(known_flags[0]))
                return xds_cfg_fail(e, "%s.response_flag_filter.flags[%zu]: unknown response flag \"%s\"", path, i,
                                    rf->flags[i]);
            f->flags[f->n_flags++] = strdup(rf->flags[i]);
        }
        return 0;
    }
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_AND_FILTER:
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_OR_FILTER: {
        int and = pf->filter_specifier_case == ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_AND_FILTER;
        size_t n = and ? pf->and_filter->n_filters : pf->or_filter->n_filters;
        Envoy__Config__Accesslog__V3__AccessLogFilter **v = and ? pf->and_filter->filters : pf->or_filter->filters;
        f->kind = and ? LF_AND : LF_OR;
        if (n < 2)
            return xds_cfg_fail(e, "%s.%s.filters: at least two filters are required", path,
                                and ? "and_filter" : "or_filter");
        f->sub = calloc(n, sizeof(*f->sub));
        if (f->sub == NULL)
            return xds_cfg_fail(e, "out of memory");
        for (size_t i = 0; i < n; i++) {
            f->n_sub = i + 1;
            snprintf(sub, sizeof(sub), "%s.%s.filters[%zu]", path, and ? "and_filter" : "or_filter", i);
            if (filter_build(&f->sub[i], v[i], sub, e) < 0)
                return -1;
        }
        return 0;
    }
    default:
        return xds_cfg_fail(e, "%s: one of status_code_filter, duration_filter, not_health_check_filter, "
                            "header_filter, response_flag_filter, and_filter, or_filter is required", path);
    }
}

static int compare(int op, uint64_t have, uint32_t want)
{
    switch (op) {
    case ENVOY__CONFIG__ACCESSLOG__V3__COMPARISON_FILTER__OP__GE:
        return have >= want;
    case ENVOY__CONFIG__ACCESSLOG__V3__COMPARISON_FILTER__OP__LE:
        return have <= want;
    default:
        return have == want;
    }
}

static int has_flag(const char *flags, const char *flag)
{
    size_t n = strlen(flag);
    for (const char *p = flags; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, flag, n) == 0)
            return 1;
        p += len + (end != NULL);
    }
    return 0;
}

static int filter_match(const struct log_filter *f, struct dp_stream *s, int status)
{
    switch (f->kind) {
    case LF_STATUS:
        return compare(f->op, (uint64_t)status, f->value);
    case LF_DURATION:
        return compare(f->op, (uint64_t)((ev_now(s->hcm->w->loop) - s->start) * 1000.0), f->value);
    case LF_NOT_HEALTH_CHECK:
        return 1; /* legate marks no request as a health check */
    case LF_HEADER:
        return dp_header_matcher_match(&f->header, &s->req);
    case LF_FLAGS:
        if (f->n_flags == 0)
            return s->response_flags[0] != '\0';
        for (size_t i = 0; i < f->n_flags; i++)
            if (has_flag(s->response_flags, f->flags[i]))
                return 1;
        return 0;
    case LF_AND:
        for (size_t i = 0; i < f->n_sub; i++)
            if (!filter_match(&f->sub[i], s, status))
                return 0;
        return 1;
    case LF_OR:
        for (size_t i = 0; i < f->n_sub; i++)
            if (filter_match(&f->sub[i], s, status))
                return 1;
        return 0;
    }
    return 0;
}

void dp_local_reply_free(struct dp_local_reply *lr)
{
    if (lr == NULL)
        return;
    for (size_t i = 0; i < lr->n_mappers; i++) {
        struct mapper *m = &lr->mappers[i];
        filter_free(&m->filter);
        free(m->body);
        dp_subst_free(m->format);
        dp_header_mutations_free(m->add, m->n_add);
    }
    free(lr->mappers);
    dp_subst_free(lr->format);
    free(lr);
}

struct dp_local_reply *dp_local_reply_build(
    const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__LocalReplyConfig *c, const char *path,
    struct xds_cfgerr *e)
{
    char sub[256];
    struct dp_local_reply *lr = calloc(1, sizeof(*lr));
    if (lr == NULL || (c->n_mappers && (lr->mappers = calloc(c->n_mappers, sizeof(*lr->mappers))) == NULL)) {
        free(lr);
        xds_cfg_fail(e, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < c->n_mappers; i++) {
        const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__ResponseMapper *pm = c->mappers[i];
        struct mapper *m = &lr->mappers[i];
        lr->n_mappers = i + 1;
        snprintf(sub, sizeof(sub), "%s.mappers[%zu].filter", path, i);
        if (filter_build(&m->filter, pm->filter, sub, e) < 0)
            goto bad;
        if (pm->status_code) {
            if (pm->status_code->value < 200 || pm->status_code->value >= 600) {
                xds_cfg_fail(e, "%s.mappers[%zu].status_code: must be in [200, 600), got %u", path, i,
                             pm->status_code->value);
                goto bad;
            }
            m->status = (int)pm->status_code->value;
        }
        if (pm->body) {
            char msg[256];
            if (xds_datasource_read(pm->body, &m->body, &m->body_len, msg, sizeof(msg)) < 0) {
                xds_cfg_fail(e, "%s.mappers[%zu].body: %s", path, i, msg);
                goto bad;
            }
        }
        if (pm->body_format_override) {
            snprintf(sub, sizeof(sub), "%s.mappers[%zu].body_format_override", path, i);
            m->format = dp_subst_new(pm->body_format_override, "%LOCAL_REPLY_BODY%", 1, sub, e->err, e->errlen);
            if (m->format == NULL)
                goto bad;
        }
        snprintf(sub, sizeof(sub), "%s.mappers[%zu].headers_to_add", path, i);
        if (dp_header_mutations_build(&m->add, &m->n_add, pm->headers_to_add, pm->n_headers_to_add, sub, e) < 0)
            goto bad;
    }
    if (c->body_format) {
        snprintf(sub, sizeof(sub), "%s.body_format", path);
        lr->format = dp_subst_new(c->body_format, "%LOCAL_REPLY_BODY%", 1, sub, e->err, e->errlen);
        if (lr->format == NULL)
            goto bad;
    }
    return lr;
bad:
    dp_local_reply_free(lr);
    return NULL;
}

void dp_local_reply_apply(const struct dp_local_reply *lr, struct dp_stream *s, int *status,
                          const char **content_type, const char **body, size_t *len,
                          const struct dp_header_mutation **add, size_t *n_add)
{
    const struct mapper *m = NULL;
    *add = NULL;
    *n_add = 0;
    for (size_t i = 0; i < lr->n_mappers && m == NULL; i++)
        if (filter_match(&lr->mappers[i].filter, s, *status))
            m = &lr->mappers[i];
    if (m) {
        if (m->status)
            *status = m->status;
        if (m->body) {
            *body = m->body;
            *len = m->body_len;
        }
        *add = m->add;
        *n_add = m->n_add;
    }
    const struct dp_subst *fmt = m && m->format ? m->format : lr->format;
    if (fmt == NULL)
        return;
    /* %LOCAL_REPLY_BODY% and %RESPONSE_CODE% as the reply now stands */
    s->local_body = (struct dp_str){*body ? *body : "", *body ? *len : 0};
    s->resp.status = *status;
    struct dp_buf b = {0};
    dp_subst_render(fmt, s, &b);
    char *out = dp_arena_alloc(&s->arena, dp_buf_size(&b) + 1);
    if (out) {
        if (dp_buf_size(&b))
            memcpy(out, dp_buf_head(&b), dp_buf_size(&b));
        out[dp_buf_size(&b)] = '\0';
        *body = out;
        *len = dp_buf_size(&b);
        *content_type = dp_subst_content_type(fmt);
    }
    dp_buf_release(&b);
}
