#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dataplane/hcm.h"
#include "dataplane/tls.h"
#include "xds/log.h"

int dp_name_match(const char *pattern, const char *host, size_t host_len)
{
    size_t pl = strlen(pattern);
    if (pl == 1 && pattern[0] == '*')
        return 1;
    if (pl >= 2 && pattern[0] == '*' && pattern[1] == '.') {
        size_t sl = pl - 1; /* ".suffix" */
        return host_len > sl && strncasecmp(host + host_len - sl, pattern + 1, sl) == 0;
    }
    return pl == host_len && strncasecmp(pattern, host, host_len) == 0;
}

/* Specificity of a server_names entry for host: 0 no match, larger wins. */
static size_t name_score(const char *pattern, const char *host)
{
    size_t hl = strlen(host), pl = strlen(pattern);
    if (!dp_name_match(pattern, host, hl))
        return 0;
    if (pattern[0] != '*')
        return SIZE_MAX; /* exact */
    return pl;           /* longer wildcard suffix is more specific */
}

const struct dp_filter_chain *dp_listener_match(const struct dp_listener *l, uint16_t dst_port,
                                                const char *sni, const char *transport,
                                                const char *const *alpn, size_t n_alpn)
{
    size_t n = l->n_chains;
    if (n == 0)
        return l->default_chain;
    /* Candidates as a small bitmap over l->chains (listeners rarely have
     * more than a handful of chains; more than 64 fall back to a heap array). */
    uint8_t small[64];
    uint8_t *cand = n <= sizeof(small) ? small : calloc(n, 1);
    if (cand == NULL)
        return l->default_chain;
    for (size_t i = 0; i < n; i++)
        cand[i] = 1;
    const struct dp_filter_chain *res = NULL;

    /* 1. destination port */
    int explicit = 0;
    for (size_t i = 0; i < n; i++)
        if (l->chains[i].destination_port && l->chains[i].destination_port == dst_port)
            explicit = 1;
    for (size_t i = 0; i < n; i++) {
        uint32_t p = l->chains[i].destination_port;
        cand[i] = explicit ? (p == dst_port) : (p == 0);
    }

    /* 2. server names */
    size_t best = 0;
    if (sni && sni[0]) {
        for (size_t i = 0; i < n; i++) {
            if (!cand[i])
                continue;
            for (size_t j = 0; j < l->chains[i].n_server_names; j++) {
                size_t s = name_score(l->chains[i].server_names[j], sni);
                if (s > best)
                    best = s;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!cand[i])
            continue;
        if (best == 0) {
            cand[i] = l->chains[i].n_server_names == 0;
            continue;
        }
        int hit = 0;
        for (size_t j = 0; j < l->chains[i].n_server_names; j++)
            if (name_score(l->chains[i].server_names[j], sni) == best)
                hit = 1;
        cand[i] = hit;
    }

    /* 3. transport protocol */
    explicit = 0;
    for (size_t i = 0; i < n; i++)
        if (cand[i] && l->chains[i].transport_protocol &&
            strcmp(l->chains[i].transport_protocol, transport) == 0)
            explicit = 1;
    for (size_t i = 0; i < n; i++) {
        if (!cand[i])
            continue;
        const char *tp = l->chains[i].transport_protocol;
        cand[i] = explicit ? (tp && strcmp(tp, transport) == 0) : (tp == NULL);
    }

    /* 4. application protocols */
    explicit = 0;
    for (size_t i = 0; i < n && !explicit; i++) {
        if (!cand[i])
            continue;
        for (size_t j = 0; j < l->chains[i].n_application_protocols; j++)
            for (size_t k = 0; k < n_alpn; k++)
                if (strcmp(l->chains[i].application_protocols[j], alpn[k]) == 0)
                    explicit = 1;
    }
    for (size_t i = 0; i < n && res == NULL; i++) {
        if (!cand[i])
            continue;
        const struct dp_filter_chain *fc = &l->chains[i];
        int hit = 0;
        if (!explicit) {
            hit = fc->n_application_protocols == 0;
        } else {
            for (size_t j = 0; j < fc->n_application_protocols && !hit; j++)
                for (size_t k = 0; k < n_alpn; k++)
                    if (strcmp(fc->application_protocols[j], alpn[k]) == 0)
                        hit = 1;
        }
        if (hit)
            res = fc;
    }
    if (cand != small)
        free(cand);
    return res ? res : l->default_chain;
}

uint16_t dp_sock_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

static int any_tls(const struct dp_listener *l)
{
    for (size_t i = 0; i < l->n_chains; i++)
        if (l->chains[i].tls)
            return 1;
    return l->default_chain && l->default_chain->tls;
}

static int all_tls(const struct dp_listener *l)
{
    for (size_t i = 0; i < l->n_chains; i++)
        if (!l->chains[i].tls)
            return 0;
    return l->default_chain == NULL || l->default_chain->tls != NULL;
}

struct dp_tls_server *dp_listener_first_tls(const struct dp_listener *l)
{
    for (size_t i = 0; i < l->n_chains; i++)
        if (l->chains[i].tls)
            return l->chains[i].tls;
    return l->default_chain ? l->default_chain->tls : NULL;
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

static void start_plain(struct dp_worker *w, struct dp_worker_snap *ws, const struct dp_listener *l,
                        int fd, const struct dp_orig_dst *od)
{
    uint16_t port = od ? port_of(&od->addr) : dp_sock_local_port(fd);
    const struct dp_filter_chain *fc = dp_listener_match(l, port, NULL, "raw_buffer", NULL, 0);
    if (fc == NULL || fc->tls) {
        LG_D("listener", "%s: no filter chain for a plaintext connection; closing", l->name);
        close(fd);
        return;
    }
    dp_hcm_accept_redirected(w, ws, l, fc, fd, NULL, od);
}

/* The chain is chosen during the ClientHello (the connection manager's
 * select callback), so the connection starts without one. */
static void start_tls(struct dp_worker *w, struct dp_worker_snap *ws, const struct dp_listener *l,
                      int fd, const struct dp_orig_dst *od)
{
    dp_hcm_accept_redirected(w, ws, l, NULL, fd, NULL, od);
}

/* Waiting for the first byte to tell TLS from plaintext. */
struct pending {
    struct dp_worker *w;
    struct dp_worker_snap *ws;
    const struct dp_listener *l;
    int fd;
    int has_od;
    struct dp_orig_dst od;
    ev_io io;
    ev_timer timer;
};

static void pending_done(struct pending *p, int close_fd)
{
    ev_io_stop(p->w->loop, &p->io);
    ev_timer_stop(p->w->loop, &p->timer);
    if (close_fd)
        close(p->fd);
    dp_worker_snap_unpin(p->w, p->ws);
    free(p);
}

static void pending_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct pending *p = io->data;
    uint8_t b;
    ssize_t n = recv(p->fd, &b, 1, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        pending_done(p, 1);
        return;
    }
    struct dp_worker *w = p->w;
    struct dp_worker_snap *ws = p->ws;
    const struct dp_listener *l = p->l;
    int fd = p->fd;
    struct dp_orig_dst od = p->od;
    int has_od = p->has_od;
    dp_worker_snap_pin(ws);
    pending_done(p, 0);
    /* 0x16: a TLS handshake record, as Envoy's tls_inspector decides. */
    if (b == 0x16)
        start_tls(w, ws, l, fd, has_od ? &od : NULL);
    else
        start_plain(w, ws, l, fd, has_od ? &od : NULL);
    dp_worker_snap_unpin(w, ws);
}

static void pending_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct pending *p = t->data;
    LG_D("listener", "%s: no data within listener_filters_timeout; closing", p->l->name);
    pending_done(p, 1);
}

/* Where an iptables REDIRECT (or TPROXY) sent the connection: 0, or -1
 * when it was not redirected. */
static int original_dst(int fd, struct dp_orig_dst *od)
{
    struct sockaddr_storage local;
    socklen_t ll = sizeof(local);
    if (getsockname(fd, (struct sockaddr *)&local, &ll) < 0)
        return -1;
    od->len = sizeof(od->addr);
    if (local.ss_family == AF_INET6) {
        if (getsockopt(fd, SOL_IPV6, 80 /* IP6T_SO_ORIGINAL_DST */, &od->addr, &od->len) < 0)
            return -1;
    } else if (getsockopt(fd, SOL_IP, 80 /* SO_ORIGINAL_DST */, &od->addr, &od->len) < 0) {
        return -1;
    }
    /* Not redirected: the "original" destination is ourselves. */
    if (od->len == ll && memcmp(&od->addr, &local, ll) == 0)
        return -1;
    return 0;
}

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b, int any_ip)
{
    if (a->ss_family != b->ss_family || port_of(a) != port_of(b))
        return 0;
    if (a->ss_family == AF_INET) {
        const struct in_addr *x = &((const struct sockaddr_in *)a)->sin_addr;
        const struct in_addr *y = &((const struct sockaddr_in *)b)->sin_addr;
        return any_ip ? x->s_addr == htonl(INADDR_ANY) : x->s_addr == y->s_addr;
    }
    const struct in6_addr *x = &((const struct sockaddr_in6 *)a)->sin6_addr;
    const struct in6_addr *y = &((const struct sockaddr_in6 *)b)->sin6_addr;
    return any_ip ? IN6_IS_ADDR_UNSPECIFIED(x) : memcmp(x, y, sizeof(*x)) == 0;
}

/* use_original_dst: the listener bound to the original destination (exact
 * address first, then 0.0.0.0/:: with its port), if another one has it. */
static const struct dp_listener *listener_for(const struct dp_snapshot *snap, const struct dp_listener *self,
                                              const struct dp_orig_dst *od)
{
    for (int any = 0; any < 2; any++)
        for (size_t i = 0; i < snap->n_listeners; i++) {
            const struct dp_listener *c = snap->listeners[i];
            if (c != self && same_addr(&c->addr, &od->addr, any))
                return c;
        }
    return NULL;
}

void dp_listener_accept(struct dp_worker *w, struct dp_worker_snap *ws, const struct dp_listener *l,
                        int fd)
{
    struct dp_orig_dst odv, *od = NULL;
    if ((l->original_dst || l->use_original_dst) && original_dst(fd, &odv) == 0) {
        od = &odv;
        if (l->use_original_dst) {
            const struct dp_listener *t = listener_for(ws->snap, l, od);
            if (t) {
                LG_T("listener", "%s: handing the connection to listener %s (its original destination)",
                     l->name, t->name);
                l = t;
            }
        }
    }
    if (!any_tls(l) && !l->needs_inspection) {
        start_plain(w, ws, l, fd, od);
        return;
    }
    if (all_tls(l)) {
        start_tls(w, ws, l, fd, od);
        return;
    }
    struct pending *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        close(fd);
        return;
    }
    p->w = w;
    p->ws = ws;
    p->l = l;
    p->fd = fd;
    if (od) {
        p->od = *od;
        p->has_od = 1;
    }
    dp_worker_snap_pin(ws);
    ev_io_init(&p->io, pending_io_cb, fd, EV_READ);
    p->io.data = p;
    ev_io_start(w->loop, &p->io);
    ev_timer_init(&p->timer, pending_timer_cb, l->listener_filters_timeout, 0.);
    p->timer.data = p;
    ev_timer_start(w->loop, &p->timer);
}
