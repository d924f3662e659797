#include "hcm_driver.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "dataplane/config_build.h"
#include "dataplane/listener.h"
#include "dataplane/stream.h"
#include "dataplane/tls.h"
#include "dataplane/worker.h"
#include "xds/bootstrap.h"
#include "xds/convert.h"
#include "xds/log.h"

/* Two listeners. "main": AUTO codec, the mTLS filter (anonymous consumer),
 * XFCC sanitize-and-set, a JSON access log, generous limits. "small": the
 * codec under test, tiny limits and windows, XFCC append-forward, a text
 * access log, request ids kept from the client. Their routes cover every
 * action and matcher kind. */
static const char config_fmt[] =
    "static_resources:\n"
    "  listeners:\n"
    "  - name: main\n"
    "    address: { socket_address: { address: 127.0.0.1, port_value: 1 } }\n"
    "    per_connection_buffer_limit_bytes: 32768\n"
    "    filter_chains:\n"
    "    - filters:\n"
    "      - name: envoy.filters.network.http_connection_manager\n"
    "        typed_config:\n"
    "          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
    "          stat_prefix: main\n"
    "          codec_type: AUTO\n"
    "          forward_client_cert_details: SANITIZE_SET\n"
    "          set_current_client_cert_details: { subject: true, uri: true, dns: true, cert: true }\n"
    "          always_set_request_id_in_response: true\n"
    "          normalize_path: true\n"
    "          merge_slashes: true\n"
    "          path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT\n"
    "          access_log:\n"
    "          - name: envoy.access_loggers.file\n"
    "            typed_config:\n"
    "              '@type': type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
    "              path: /dev/null\n"
    "              log_format:\n"
    "                json_format:\n"
    "                  method: '%%REQ(:METHOD)%%'\n"
    "                  path: '%%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%%'\n"
    "                  authority: '%%REQ(:AUTHORITY)%%'\n"
    "                  ua: '%%REQ(USER-AGENT)%%'\n"
    "                  xfcc: '%%REQ(X-FORWARDED-CLIENT-CERT)%%'\n"
    "                  code: '%%RESPONSE_CODE%%'\n"
    "                  flags: '%%RESPONSE_FLAGS%%'\n"
    "                  proto: '%%PROTOCOL%%'\n"
    "                  ct: '%%RESP(CONTENT-TYPE)%%'\n"
    "                  route: '%%ROUTE_NAME%%'\n"
    "                  up: '%%UPSTREAM_HOST%% %%UPSTREAM_CLUSTER%%'\n"
    "                  peer: '%%DOWNSTREAM_REMOTE_ADDRESS%% %%DOWNSTREAM_PEER_URI_SAN%%'\n"
    "                  id: '%%STREAM_ID%%'\n"
    "                  t: '%%START_TIME(%%s.%%3f)%% %%DURATION%% %%BYTES_RECEIVED%% %%BYTES_SENT%%'\n"
    "          route_config:\n"
    "            name: main\n"
    "            response_headers_to_add: [{ header: { key: x-table, value: main } }]\n"
    "            virtual_hosts:\n"
    "            - name: example\n"
    "              domains: ['example.com', 'example.com:80', '*.example.org', 'api.*']\n"
    "              request_headers_to_add: [{ header: { key: x-vhost, value: example } }]\n"
    "              routes:\n"
    "              - name: exact\n"
    "                match: { path: /exact }\n"
    "                direct_response: { status: 200, body: { inline_string: \"exact\\n\" } }\n"
    "              - match: { prefix: /CI/, case_sensitive: false }\n"
    "                direct_response: { status: 204 }\n"
    "              - match: { safe_regex: { regex: '/re/[a-z]+/[0-9]{1,4}' } }\n"
    "                direct_response: { status: 418, body: { inline_string: regex } }\n"
    "              - match:\n"
    "                  prefix: /hdr\n"
    "                  headers:\n"
    "                  - { name: x-exact, exact_match: yes }\n"
    "                  - { name: x-present, present_match: true }\n"
    "                  - { name: x-re, safe_regex_match: { regex: '[0-9]+' } }\n"
    "                  - { name: x-not, exact_match: no, invert_match: true }\n"
    "                  - { name: ':method', string_match: { prefix: P } }\n"
    "                direct_response: { status: 200, body: { inline_string: headers } }\n"
    "              - match: { prefix: / }\n"
    "                route: { cluster: empty, prefix_rewrite: /rewritten/, host_rewrite_literal: up.internal }\n"
    "            - name: all\n"
    "              domains: ['*']\n"
    "              response_headers_to_add: [{ header: { key: x-vhost, value: all }, append: false }]\n"
    "              routes:\n"
    "              - match: { path: / }\n"
    "                direct_response: { status: 200, body: { inline_string: \"hello\\n\" } }\n"
    "                response_headers_to_add: [{ header: { key: cache-control, value: no-store } }]\n"
    "                response_headers_to_remove: [server]\n"
    "              - match: { prefix: /redirect/https }\n"
    "                redirect: { https_redirect: true, strip_query: true }\n"
    "              - match: { prefix: /redirect }\n"
    "                redirect: { host_redirect: example.net, path_redirect: /moved, response_code: PERMANENT_REDIRECT }\n"
    "              - match: { prefix: /private }\n"
    "                direct_response: { status: 200 }\n"
    "                typed_per_filter_config:\n"
    "                  legate.filters.http.mtls:\n"
    "                    '@type': type.googleapis.com/legate.filters.http.mtls.v1.MtlsPerRoute\n"
    "                    require_certificate: true\n"
    "              - match: { prefix: /off }\n"
    "                direct_response: { status: 200 }\n"
    "                typed_per_filter_config:\n"
    "                  legate.filters.http.mtls:\n"
    "                    '@type': type.googleapis.com/legate.filters.http.mtls.v1.MtlsPerRoute\n"
    "                    disabled: true\n"
    "              - match: { prefix: /od }\n"
    "                route: { cluster: od, timeout: 0s }\n"
    "              - match: { prefix: /missing }\n"
    "                route: { cluster: does-not-exist }\n"
    "              - match: { prefix: / }\n"
    "                route: { cluster: empty, timeout: 2s }\n"
    "                request_headers_to_remove: [x-remove-me]\n"
    "          http_filters:\n"
    "          - name: legate.filters.http.mtls\n"
    "            typed_config:\n"
    "              '@type': type.googleapis.com/legate.filters.http.mtls.v1.Mtls\n"
    "              require_certificate: false\n"
    "              allowed_sans: [{ san_type: URI, matcher: { prefix: 'spiffe://example.org/' } }]\n"
    "              consumers:\n"
    "              - { username: client, id: c-1, custom_id: billing,\n"
    "                  sans: [{ san_type: URI, matcher: { exact: 'spiffe://example.org/ns/default/sa/client' } }] }\n"
    "              anonymous: guest\n"
    "          - name: envoy.filters.http.router\n"
    "            typed_config: { '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }\n"
    "  - name: small\n"
    "    address: { socket_address: { address: 127.0.0.1, port_value: 2 } }\n"
    "    per_connection_buffer_limit_bytes: 1024\n"
    "    filter_chains:\n"
    "    - filters:\n"
    "      - name: envoy.filters.network.http_connection_manager\n"
    "        typed_config:\n"
    "          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
    "          stat_prefix: small\n"
    "          codec_type: %s\n"
    "          server_name: fuzz\n"
    "          forward_client_cert_details: APPEND_FORWARD\n"
    "          set_current_client_cert_details: { subject: true, chain: true }\n"
    "          use_remote_address: true\n"
    "          skip_xff_append: true\n"
    "          preserve_external_request_id: true\n"
    "          max_request_headers_kb: 1\n"
    "          common_http_protocol_options: { max_headers_count: 8, idle_timeout: 1s }\n"
    "          request_timeout: 1s\n"
    "          stream_idle_timeout: 1s\n"
    "          drain_timeout: 0.5s\n"
    "          http2_protocol_options:\n"
    "            max_concurrent_streams: 3\n"
    "            initial_stream_window_size: 65535\n"
    "            initial_connection_window_size: 65535\n"
    "          access_log:\n"
    "          - name: envoy.access_loggers.file\n"
    "            typed_config:\n"
    "              '@type': type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
    "              path: /dev/null\n"
    "              log_format:\n"
    "                text_format_source:\n"
    "                  inline_string: \"%%REQ(:METHOD)%% %%REQ(:PATH)%% %%PROTOCOL%% %%RESPONSE_CODE%% %%RESP(X-NONE)%%\\n\"\n"
    "          route_config:\n"
    "            virtual_hosts:\n"
    "            - name: all\n"
    "              domains: ['*']\n"
    "              routes:\n"
    "              - match: { prefix: /big }\n"
    "                direct_response: { status: 200, body: { inline_string: '%s' } }\n"
    "              - match: { prefix: /d }\n"
    "                direct_response: { status: 503, body: { inline_string: busy } }\n"
    "              - match: { prefix: / }\n"
    "                route: { cluster: empty }\n"
    "          http_filters:\n"
    "          - name: envoy.filters.http.router\n"
    "            typed_config: { '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }\n"
    "  clusters:\n"
    "  - name: empty\n"
    "    type: STATIC\n"
    "    connect_timeout: 1s\n"
    "    load_assignment: { cluster_name: empty }\n"
    "  - name: od\n"
    "    type: ORIGINAL_DST\n"
    "    lb_policy: CLUSTER_PROVIDED\n"
    "    connect_timeout: 1s\n";

/* What the TLS layer would have found on a connection with a verified
 * client certificate (ctl & 0x40): the mTLS filter, XFCC and the access log
 * then have an identity to work with on these plaintext connections. */
static const char *const peer_uris[] = {"spiffe://example.org/ns/default/sa/client", "urn:a,b;c=\"d\""};
static const char *const peer_dns[] = {"client.internal", "*.example.com"};
static const struct dp_peer_identity peer = {
    .tls = 1,
    .presented = 1,
    .verified = 1,
    .subject = "CN=client,O=legate test\\, Inc.",
    .issuer = "CN=legate test client CA,O=legate test",
    .serial = "1A2B",
    .fingerprint = "4f1c5ab0e0e1f47c6a3ed1f1bb71d3a6f7f2c3b1c1d1e1f10111213141516171",
    .uri_sans = peer_uris,
    .n_uri_sans = 2,
    .dns_sans = peer_dns,
    .n_dns_sans = 2,
    .cert_pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n",
    .chain_pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n",
    .tls_version = "TLSv1.3",
};

static struct dp_worker worker;
static struct dp_listener *listeners[2];
static int client_fd = -1;

static void die(const char *what, const char *err)
{
    fprintf(stderr, "fuzz_hcm_init: %s: %s\n", what, err);
    abort();
}

static const Envoy__Extensions__TransportSockets__Tls__V3__Secret *no_secret(void *ud, const char *name)
{
    return NULL;
}

static int cmp_cluster(const void *a, const void *b)
{
    const struct dp_cluster *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* A real listening socket that nothing ever connects to: the worker watches
 * it like any listener's. */
static struct dp_listen_set *listen_set(const char *key)
{
    struct dp_listen_set *ls = calloc(1, sizeof(*ls));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (ls == NULL || (ls->fds = malloc(sizeof(int))) == NULL || (ls->key = strdup(key)) == NULL)
        die("listen set", "out of memory");
    ls->refs = 1;
    ls->n = 1;
    ls->fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ls->fds[0] < 0 || bind(ls->fds[0], (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(ls->fds[0], 1) < 0)
        die("listen set", strerror(errno));
    return ls;
}

void fuzz_hcm_init(const char *codec)
{
    char err[1024];
    const char *lvl = getenv("LEGATE_FUZZ_LOG");
    lg_set_level(lvl ? lg_level_parse(lvl) : LG_OFF);
    if (dp_tls_init() < 0)
        die("dp_tls_init", "failed");

    /* A direct response larger than the small listener's buffer limit. */
    static char big[4000];
    memset(big, 'b', sizeof(big) - 1);
    size_t len = sizeof(config_fmt) + sizeof(big) + 16;
    char *yaml = malloc(len);
    if (yaml == NULL)
        die("config", "out of memory");
    snprintf(yaml, len, config_fmt, codec, big);
    ProtobufCMessage *m;
    if (xds_convert_text(yaml, strlen(yaml), &envoy__config__bootstrap__v3__bootstrap__descriptor, &m, err,
                         sizeof(err)) != 0)
        die("config", err);
    free(yaml);
    xds_bootstrap_t *bs = (xds_bootstrap_t *)m;
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = bs->static_resources;
    struct dp_build_ctx ctx = {.secrets = {.fn = no_secret}};

    struct dp_snapshot *snap = calloc(1, sizeof(*snap));
    if (snap == NULL)
        die("snapshot", "out of memory");
    snap->refs = 1;
    snap->version = 1;
    snap->listeners = calloc(sr->n_listeners, sizeof(*snap->listeners));
    snap->listen_sets = calloc(sr->n_listeners, sizeof(*snap->listen_sets));
    snap->clusters = calloc(sr->n_clusters, sizeof(*snap->clusters));
    if (snap->listeners == NULL || snap->listen_sets == NULL || snap->clusters == NULL)
        die("snapshot", "out of memory");
    for (size_t i = 0; i < sr->n_clusters; i++) {
        struct dp_cluster *c = dp_cluster_build(sr->clusters[i], NULL, &ctx, err, sizeof(err));
        if (c == NULL)
            die("cluster", err);
        snap->clusters[snap->n_clusters++] = c;
    }
    qsort(snap->clusters, snap->n_clusters, sizeof(*snap->clusters), cmp_cluster);
    for (size_t i = 0; i < sr->n_listeners && i < 2; i++) {
        struct dp_listener *l = dp_listener_build(sr->listeners[i], &ctx, err, sizeof(err));
        if (l == NULL)
            die("listener", err);
        listeners[i] = l;
        snap->listeners[snap->n_listeners] = l;
        snap->listen_sets[snap->n_listeners] = listen_set(l->addr_str);
        snap->n_listeners++;
    }
    xds_bootstrap_free(bs);

    if (dp_worker_init(&worker, 0) < 0)
        die("worker", "cannot create the loop");
    dp_stats_thread_attach(0);
    /* The listeners keep their own references; the snapshot goes to the
     * worker as the builder thread would post it. */
    for (size_t i = 0; i < snap->n_listeners; i++)
        dp_listener_ref(snap->listeners[i]);
    dp_worker_post_snapshot(&worker, snap);
    for (int i = 0; i < 100 && worker.cur == NULL; i++)
        ev_run(worker.loop, EVRUN_NOWAIT);
    if (worker.cur == NULL)
        die("worker", "the snapshot was not adopted");
}

/* Reads and drops what the server sent (LEGATE_FUZZ_ECHO=1: copies it to
 * stderr). Returns the bytes read; sets *eof. */
static size_t drain_client(int *eof)
{
    static int echo = -1;
    if (echo < 0)
        echo = getenv("LEGATE_FUZZ_ECHO") != NULL; /* the responses on stderr, for seed work */
    char buf[16384];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(client_fd, buf, sizeof(buf));
        if (n > 0) {
            got += (size_t)n;
            if (echo)
                fwrite(buf, 1, (size_t)n, stderr);
            continue;
        }
        if (n == 0 && eof)
            *eof = 1;
        break;
    }
    return got;
}

/* Runs the loop until nothing more happens. */
static void pump(void)
{
    for (int i = 0, quiet = 0; i < 64 && quiet < 2; i++) {
        ev_run(worker.loop, EVRUN_NOWAIT);
        int eof = 0;
        quiet = drain_client(&eof) == 0 ? quiet + 1 : 0;
    }
}

/* Writes everything, letting the server read when the socket is full; gives
 * up when the server stopped reading. */
static void send_all(const uint8_t *p, size_t n)
{
    int stuck = 0;
    while (n > 0 && stuck < 4) {
        ssize_t w = send(client_fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            stuck = 0;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return; /* the server closed */
        pump();
        stuck++;
    }
}

/* A timer whose time has come: stopped (a one-shot timer is inactive when
 * its callback runs) and its event queued. */
static void expire(ev_timer *t)
{
    if (!ev_is_active(t))
        return;
    ev_timer_stop(worker.loop, t);
    ev_feed_event(worker.loop, t, EV_TIMER);
}

static void expire_all(void)
{
    for (struct dp_hcm *h = worker.conns; h; h = h->next_in_worker) {
        expire(&h->conn.timer);
        expire(&h->drain_timer);
        for (struct dp_stream *s = h->streams; s; s = s->next) {
            expire(&s->timer);
            expire(&s->guard);
        }
    }
    pump();
}

void fuzz_hcm_run(const uint8_t *data, size_t size, const char *prefix, size_t prefix_len)
{
    if (size < 1)
        return;
    uint8_t ctl = data[0];
    size_t n_cuts = ctl & 3;
    if (size < 1 + n_cuts)
        return;
    const uint8_t *cuts = data + 1;
    const uint8_t *p = data + 1 + n_cuts;
    size_t left = size - 1 - n_cuts;

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    client_fd = sv[1];
    dp_listener_accept(&worker, worker.cur, listeners[(ctl & 0x04) ? 1 : 0], sv[0]);
    if ((ctl & 0x40) && worker.conns)
        worker.conns->peer = peer;
    pump();

    if (prefix_len)
        send_all((const uint8_t *)prefix, prefix_len);
    for (size_t i = 0; i <= n_cuts; i++) {
        size_t n = i < n_cuts ? left * cuts[i] / 256 : left;
        send_all(p, n);
        p += n;
        left -= n;
        pump();
        if (i == 0 && (ctl & 0x10))
            for (struct dp_hcm *h = worker.conns; h; h = h->next_in_worker)
                dp_hcm_drain(h);
        pump();
    }
    if (ctl & 0x20)
        expire_all();

    if (ctl & 0x08) {
        shutdown(client_fd, SHUT_WR);
        int eof = 0;
        for (int i = 0; i < 64 && !eof; i++) {
            ev_run(worker.loop, EVRUN_NOWAIT);
            drain_client(&eof);
        }
    }
    close(client_fd);
    client_fd = -1;
    for (int i = 0; i < 64 && worker.n_conns > 0; i++)
        ev_run(worker.loop, EVRUN_NOWAIT);
    /* What is still open waits for a timeout (a paused connection does not
     * see the EOF): close it as the worker does at shutdown. */
    while (worker.conns)
        dp_hcm_destroy(worker.conns);
    ev_run(worker.loop, EVRUN_NOWAIT); /* the deferred frees */
}
