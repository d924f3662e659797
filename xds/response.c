#include "xds/response.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xds/deps.h"
#include "xds/log.h"
#include "xds/registry.h"
#include "xds/strmap.h"
#include "xds/unsupported.h"

/* The ignorable fields (xds/unknown.h) of the resource being checked,
 * announced only once the resource passes. */
struct ignored_list {
    size_t n;
    struct {
        char path[600];
        const char *msg, *field, *why;
    } v[32];
    size_t more; /* past v */
};

static void note_ignored(void *ud, const char *path, const char *msg, const char *field, const char *why)
{
    struct ignored_list *l = ud;
    if (l->n == sizeof(l->v) / sizeof(l->v[0])) {
        l->more++;
        return;
    }
    snprintf(l->v[l->n].path, sizeof(l->v[l->n].path), "%s", path);
    l->v[l->n].msg = msg;
    l->v[l->n].field = field;
    l->v[l->n].why = why;
    l->n++;
}

/* Warns about each ignored field of an accepted resource and keeps
 * "Message.field" in b->ignored (counted by the owner). */
static void announce_ignored(struct xds_batch *b, const char *name, const struct ignored_list *l)
{
    for (size_t k = 0; k < l->n; k++) {
        LG_W("xds", "%s \"%s\": %s: ignored: %s (it cannot change traffic)", xds_type_names[b->type], name,
             l->v[k].path, l->v[k].why);
        char key[300];
        const char *dot = strrchr(l->v[k].msg, '.');
        snprintf(key, sizeof(key), "%s.%s", dot ? dot + 1 : l->v[k].msg, l->v[k].field);
        char **v = realloc(b->ignored, (b->n_ignored + 1) * sizeof(*v));
        if (v == NULL || (v[b->n_ignored] = strdup(key)) == NULL)
            abort();
        b->ignored = v;
        b->n_ignored++;
    }
    if (l->more)
        LG_W("xds", "%s \"%s\": %zu more ignored field(s)", xds_type_names[b->type], name, l->more);
}

/* Decodes resp's resources into b. A state-of-the-world response (LDS,
 * CDS) sends every resource each time: one sent again byte for byte takes
 * over the decoded message it had (reused[i]) instead of decoding. This
 * thread alone changes the tables: it reads them without the lock. */
static void decode(struct xds_client *c, struct xds_batch *b,
                   const Envoy__Service__Discovery__V3__DiscoveryResponse *resp)
{
    int type = b->type;
    struct xds_type_state *t = &c->t[type];
    const ProtobufCMessageDescriptor *desc = xds_registry_lookup(xds_type_urls[type]);
    int sotw = xds_type_wildcard(type);
    struct strmap seen = {0};
    struct strmap prev = {0};
    b->n = resp->n_resources;
    b->msgs = calloc(b->n + 1, sizeof(*b->msgs));
    b->hashes = calloc(b->n + 1, sizeof(*b->hashes));
    b->reused = calloc(b->n + 1, sizeof(*b->reused));
    if (b->msgs == NULL || b->hashes == NULL || b->reused == NULL)
        abort();
    if (sotw)
        xds_table_by_hash(&t->res, &prev);
    for (size_t i = 0; i < b->n; i++) {
        const Google__Protobuf__Any *any = resp->resources[i];
        if (strcmp(any->type_url, xds_type_urls[type]) != 0) {
            xds_errs_add(&b->errs, "resources[%zu]: type %s in a response of type %s", i, any->type_url,
                    xds_type_urls[type]);
            continue;
        }
        b->hashes[i] = xds_any_hash(any);
        size_t at;
        if (sotw && xds_by_hash_take(&prev, b->hashes[i], &at)) {
            b->msgs[i] = t->res.v[at].msg; /* lent until the commit */
            b->reused[i] = at + 1;
        } else {
            b->msgs[i] = protobuf_c_message_unpack(desc, NULL, any->value.len, any->value.data);
        }
        if (b->msgs[i] == NULL) {
            xds_errs_add(&b->errs, "resources[%zu]: not a valid %s", i, xds_type_url_name(xds_type_urls[type]));
            continue;
        }
        const char *name = xds_resource_name(type, b->msgs[i]);
        if (name[0] == '\0') {
            xds_errs_add(&b->errs, "resources[%zu]: %s without a name", i, xds_type_names[type]);
            if (!b->reused[i])
                protobuf_c_message_free_unpacked(b->msgs[i], NULL);
            b->msgs[i] = NULL;
            continue;
        }
        if (strmap_get(&seen, name, NULL)) {
            xds_errs_add(&b->errs, "resources[%zu]: %s \"%s\" appears twice", i, xds_type_names[type], name);
            if (!b->reused[i])
                protobuf_c_message_free_unpacked(b->msgs[i], NULL);
            b->msgs[i] = NULL;
            continue;
        }
        char uerr[600];
        struct ignored_list ign;
        ign.n = ign.more = 0;
        if (!b->reused[i] && xds_check_resource(b->msgs[i], "", note_ignored, &ign, uerr, sizeof(uerr)) < 0) {
            /* refused whole: the last good version of it stays */
            xds_errs_add(&b->errs, "%s \"%s\": %s", xds_type_names[type], name, uerr);
            xds_names_add(&b->refused, name);
            protobuf_c_message_free_unpacked(b->msgs[i], NULL);
            b->msgs[i] = NULL;
            continue;
        }
        if (!b->reused[i])
            announce_ignored(b, name, &ign);
        strmap_put(&seen, name, i);
    }
    strmap_free(&seen);
    strmap_free(&prev);
}

/* ---- publishing ------------------------------------------------------------ */

/* Makes want the subscriptions (the lock held); the types whose names
 * changed (and are not empty) are flagged in resend: their requests go
 * out once the lock is released (send_resubscribed). */
static void resubscribe(struct xds_client *c, struct xds_names want[XDS_T_N], int resend[XDS_T_N])
{
    double now = xds_now();
    for (int type = 0; type < XDS_T_N; type++) {
        resend[type] = 0;
        if (type == XDS_LDS || type == XDS_CDS)
            continue;
        resend[type] = xds_state_subscribe(&c->t[type], &want[type], now) && c->t[type].subs.n > 0;
    }
}

static void send_resubscribed(struct xds_client *c, const int resend[XDS_T_N])
{
    for (int type = 0; type < XDS_T_N; type++)
        if (resend[type])
            xds_client_send(c, type, NULL);
}

/* What RDS, EDS and SDS must subscribe to once b is published: from the
 * listeners and clusters as they will be. */
static void wanted(struct xds_client *c, struct xds_batch *b, struct xds_names want[XDS_T_N])
{
    const struct xds_table *lds = b->type == XDS_LDS ? &b->nt : &c->t[XDS_LDS].res;
    const struct xds_table *cds = b->type == XDS_CDS ? &b->nt : &c->t[XDS_CDS].res;
    xds_deps_wanted(lds, cds, &want[XDS_RDS], &want[XDS_EDS], &want[XDS_SDS]);
}

/* One short critical section publishes the new set, the nonce, the accepted
 * version, the subscriptions (computed before) and readiness; then the ACK
 * or NACK, and the requests the new references need. */
static void commit(struct xds_client *c, pthread_mutex_t *lock, const struct xds_response_ops *ops, void *ud,
                   struct xds_batch *b, const char *nonce)
{
    int type = b->type;
    struct xds_type_state *t = &c->t[type];
    struct xds_names want[XDS_T_N] = {{0}};
    int resend[XDS_T_N];
    wanted(c, b, want);
    struct xds_table old;
    pthread_mutex_lock(lock);
    xds_table_replace(&t->res, &b->nt, &old);
    xds_set_str(&t->nonce, nonce);
    t->got_first = 1;
    /* ACK: the version is the response's; NACK: the last one accepted. */
    if (b->errs.n == 0)
        xds_set_str(&t->version, b->version);
    resubscribe(c, want, resend);
    ops->published(ud);
    pthread_mutex_unlock(lock);
    xds_table_free(&old);
    for (int k = 0; k < XDS_T_N; k++)
        xds_names_free(&want[k]);
    xds_client_send(c, type, b->errs.n ? b->errs.buf : NULL);
    send_resubscribed(c, resend);
}

static void batch_free(struct xds_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        if (b->msgs[i])
            protobuf_c_message_free_unpacked(b->msgs[i], NULL);
    free(b->msgs);
    free(b->hashes);
    free(b->reused);
    xds_names_free(&b->refused);
    for (size_t i = 0; i < b->n_ignored; i++)
        free(b->ignored[i]);
    free(b->ignored);
    xds_table_free(&b->nt);
}

void xds_client_handle_response(struct xds_client *c, pthread_mutex_t *lock, const struct xds_response_ops *ops,
                                void *ud, const Envoy__Service__Discovery__V3__DiscoveryResponse *resp)
{
    int type = xds_type_of(resp->type_url);
    if (type < 0) {
        LG_W("xds", "ignoring a response of type %s, which legate does not subscribe to", resp->type_url);
        return;
    }
    double began = xds_now();
    struct xds_batch b = {.type = type, .version = resp->version_info};
    decode(c, &b, resp);
    ops->apply(ud, &b);
    /* What is left in b.msgs was not taken: freed with the batch. */
    ops->applied(ud, &b, resp, began);
    commit(c, lock, ops, ud, &b, resp->nonce);
    batch_free(&b);
}
