/*
 * legate-control: the sample xDS v3 control plane. It serves the resources
 * of one ControlConfig file (proto/legate/control/v1/control.proto) over
 * ADS, plaintext, TLS or mTLS; re-reads the file on SIGHUP and whenever it
 * or a file its secrets name changes, and pushes what changed; and, with
 * --admin-listen, offers a management API that edits the file.
 *
 * One thread does everything: it waits on the gRPC completion queue in
 * short slices and, between them, on the signalfd and the management API's
 * sockets with poll(2), and stats the watched files every WATCH_INTERVAL.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "ads.h"
#include "config.h"
#include "ctl.h"
#include "mgmt.h"
#include "pem.h"
#include "xds/convert.h"
#include "xds/log.h"

#define LEGATE_CONTROL_VERSION "0.1.0"
#define WATCH_INTERVAL_MS 500
#define MAX_FDS 80

static void usage(FILE *out)
{
    fprintf(out,
            "usage: legate-control -c FILE [options]\n"
            "  -c, --config FILE          resources to serve (legate.control.v1.ControlConfig,\n"
            "                             YAML or JSON); re-read on SIGHUP and when it or a\n"
            "                             file its secrets name changes\n"
            "      --listen HOST:PORT     ADS address (default 127.0.0.1:18000)\n"
            "      --tls-cert FILE        serve ADS over TLS with this certificate chain (PEM)\n"
            "      --tls-key FILE         ... and its private key\n"
            "      --tls-client-ca FILE   require client certificates signed by these CAs (mTLS);\n"
            "                             the TLS files are re-read when they change\n"
            "      --admin-listen H:P     the management API (HTTP/JSON); off unless given\n"
            "      --admin-token TOKEN    require \"Authorization: Bearer TOKEN\" on it (required\n"
            "                             unless it listens on a loopback address)\n"
            "      --admin-token-file F   the token, from the first line of F\n"
            "      --no-watch             do not watch the files (SIGHUP still reloads)\n"
            "      --log-requests FILE    append every DiscoveryRequest to FILE as JSON lines\n"
            "  -l, --log-level LEVEL      trace, debug, info, warning, error, critical, off\n"
            "      --version              print the version and exit\n"
            "  -h, --help                 this text\n");
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The xDS port's own certificate, key and client CA, read and checked. */
struct tls_files {
    const char *cert, *key, *ca; /* paths from the command line */
    char *cert_pem, *key_pem, *ca_pem;
    size_t key_len;
};

static void tls_free(struct tls_files *t)
{
    free(t->cert_pem);
    if (t->key_pem)
        explicit_bzero(t->key_pem, t->key_len);
    free(t->key_pem);
    free(t->ca_pem);
    t->cert_pem = t->key_pem = t->ca_pem = NULL;
}

static int read_pem(const char *opt, const char *path, char **out, size_t *len, char *err,
                    size_t errlen)
{
    if ((*out = xds_read_file(path, len)) == NULL) {
        snprintf(err, errlen, "%s: %s: %s", opt, path, strerror(errno));
        return -1;
    }
    return 0;
}

static int tls_load(struct tls_files *t, char *err, size_t errlen)
{
    char msg[256];
    size_t clen, calen;

    if (t->cert == NULL) {
        if (t->key || t->ca) {
            snprintf(err, errlen, "%s needs --tls-cert", t->key ? "--tls-key" : "--tls-client-ca");
            return -1;
        }
        return 0;
    }
    if (t->key == NULL) {
        snprintf(err, errlen, "--tls-cert needs --tls-key");
        return -1;
    }
    if (read_pem("--tls-cert", t->cert, &t->cert_pem, &clen, err, errlen) < 0 ||
        read_pem("--tls-key", t->key, &t->key_pem, &t->key_len, err, errlen) < 0 ||
        (t->ca && read_pem("--tls-client-ca", t->ca, &t->ca_pem, &calen, err, errlen) < 0))
        return -1;
    if (cp_pem_check_certs(t->cert_pem, clen, msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "--tls-cert: %s: %s", t->cert, msg);
        return -1;
    }
    if (cp_pem_check_key(t->key_pem, t->key_len, t->cert_pem, clen, "--tls-cert", msg,
                         sizeof(msg)) < 0) {
        snprintf(err, errlen, "--tls-key: %s: %s", t->key, msg);
        return -1;
    }
    if (t->ca && cp_pem_check_certs(t->ca_pem, calen, msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "--tls-client-ca: %s: %s", t->ca, msg);
        return -1;
    }
    return 0;
}

static char *read_token_file(const char *path, char *err, size_t errlen)
{
    size_t len;
    char *s = xds_read_file(path, &len);
    if (s == NULL) {
        snprintf(err, errlen, "--admin-token-file: %s: %s", path, strerror(errno));
        return NULL;
    }
    s[strcspn(s, "\r\n")] = '\0';
    if (s[0] == '\0') {
        snprintf(err, errlen, "--admin-token-file: %s: the first line is empty", path);
        free(s);
        return NULL;
    }
    return s;
}

int main(int argc, char **argv)
{
    struct cp_ctl c = {0};
    struct tls_files tls = {0};
    struct cp_ads_listen al = {.address = "127.0.0.1:18000"};
    const char *config_path = NULL, *reqlog_path = NULL, *admin_listen = NULL;
    const char *admin_token = NULL, *admin_token_file = NULL;
    char *token_buf = NULL;
    int level = LG_INFO, watch = 1, rc = 1;
    enum {
        OPT_LISTEN = 256,
        OPT_LOG_REQUESTS,
        OPT_VERSION,
        OPT_TLS_CERT,
        OPT_TLS_KEY,
        OPT_TLS_CA,
        OPT_ADMIN_LISTEN,
        OPT_ADMIN_TOKEN,
        OPT_ADMIN_TOKEN_FILE,
        OPT_NO_WATCH,
    };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"tls-client-ca", required_argument, NULL, OPT_TLS_CA},
        {"admin-listen", required_argument, NULL, OPT_ADMIN_LISTEN},
        {"admin-token", required_argument, NULL, OPT_ADMIN_TOKEN},
        {"admin-token-file", required_argument, NULL, OPT_ADMIN_TOKEN_FILE},
        {"no-watch", no_argument, NULL, OPT_NO_WATCH},
        {"log-requests", required_argument, NULL, OPT_LOG_REQUESTS},
        {"log-level", required_argument, NULL, 'l'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;

    while ((ch = getopt_long(argc, argv, "c:l:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': config_path = optarg; break;
        case OPT_LISTEN: al.address = optarg; break;
        case OPT_TLS_CERT: tls.cert = optarg; break;
        case OPT_TLS_KEY: tls.key = optarg; break;
        case OPT_TLS_CA: tls.ca = optarg; break;
        case OPT_ADMIN_LISTEN: admin_listen = optarg; break;
        case OPT_ADMIN_TOKEN: admin_token = optarg; break;
        case OPT_ADMIN_TOKEN_FILE: admin_token_file = optarg; break;
        case OPT_NO_WATCH: watch = 0; break;
        case OPT_LOG_REQUESTS: reqlog_path = optarg; break;
        case 'l':
            if ((level = lg_level_parse(optarg)) < 0) {
                fprintf(stderr, "legate-control: --log-level: unknown level \"%s\"\n", optarg);
                return 1;
            }
            break;
        case OPT_VERSION:
            printf("legate-control version %s\n", LEGATE_CONTROL_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "legate-control: unexpected argument \"%s\"\n", argv[optind]);
        return 1;
    }
    if (config_path == NULL) {
        fprintf(stderr, "legate-control: -c/--config is required\n");
        return 1;
    }
    if ((admin_token || admin_token_file) && admin_listen == NULL) {
        fprintf(stderr, "legate-control: --admin-token needs --admin-listen\n");
        return 1;
    }
    lg_set_level(level);

    char err[1024];
    struct cp_config *cfg = NULL;
    FILE *reqlog = NULL;
    struct cp_mgmt *mgmt = NULL;
    int sfd = -1;

    if (admin_token_file && (admin_token = token_buf = read_token_file(admin_token_file, err,
                                                                         sizeof(err))) == NULL)
        goto fail;
    if (tls_load(&tls, err, sizeof(err)) < 0)
        goto fail;
    /* Checked here for a clear error at start; gRPC reads them again. */
    tls_free(&tls);
    al.cert_path = tls.cert;
    al.key_path = tls.key;
    al.client_ca_path = tls.ca;
    if (cp_ctl_init(&c, config_path, &cfg, err, sizeof(err)) < 0)
        goto fail;
    if (reqlog_path && (reqlog = fopen(reqlog_path, "a")) == NULL) {
        snprintf(err, sizeof(err), "--log-requests: %s: %s", reqlog_path, strerror(errno));
        goto fail;
    }

    /* Blocked before gRPC starts its threads, so they inherit the mask and
     * the signals arrive only through the signalfd. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if ((sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
        snprintf(err, sizeof(err), "signalfd: %s", strerror(errno));
        goto fail;
    }
    /* The management API binds first: a refusal to start must not leave
     * gRPC to tear down. */
    if (admin_listen && cp_mgmt_start(admin_listen, admin_token, &c, &mgmt, err, sizeof(err)) < 0)
        goto fail;
    int started = cp_ads_start(&al, cfg, reqlog, &c.ads, err, sizeof(err));
    cfg = NULL; /* the server's now, or freed */
    if (started < 0)
        goto fail;
    if (watch)
        LG_I("control", "watching %zu file%s for changes", c.watch.n, c.watch.n == 1 ? "" : "s");

    int stop = 0;
    int64_t next_watch = now_ms() + WATCH_INTERVAL_MS;
    while (!stop) {
        struct pollfd fds[MAX_FDS];
        size_t n = 0;
        fds[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        if (mgmt)
            n += cp_mgmt_fds(mgmt, fds + n, MAX_FDS - n);
        if (poll(fds, n, 0) > 0) {
            struct signalfd_siginfo si;
            while (!stop && read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                if (si.ssi_signo == SIGHUP) {
                    cp_ctl_reload(&c, "SIGHUP");
                } else {
                    LG_I("control", "%s: shutting down", strsignal((int)si.ssi_signo));
                    stop = 1;
                }
            }
            if (mgmt)
                cp_mgmt_run(mgmt, fds + 1, n - 1);
        }
        if (watch && now_ms() >= next_watch) {
            const char *changed = cp_watch_poll(&c.watch);
            if (changed) {
                char why[600];
                snprintf(why, sizeof(why), "%s changed", changed);
                LG_I("control", "%s: reloading", why);
                cp_ctl_reload(&c, why);
            }
            next_watch = now_ms() + WATCH_INTERVAL_MS;
        }
        /* Short slices while the API may be waiting on us. */
        cp_ads_poll(c.ads, mgmt ? 10 : 100);
    }
    rc = 0;
fail:
    if (rc != 0)
        fprintf(stderr, "legate-control: error: %s\n", err);
    cp_mgmt_stop(mgmt);
    if (c.ads)
        cp_ads_stop(c.ads);
    cp_config_free(cfg);
    cp_ctl_free(&c);
    tls_free(&tls);
    if (sfd >= 0)
        close(sfd);
    if (reqlog)
        fclose(reqlog);
    if (token_buf) {
        explicit_bzero(token_buf, strlen(token_buf));
        free(token_buf);
    }
    if (rc == 0)
        LG_I("control", "stopped");
    return rc;
}
