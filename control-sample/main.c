/*
 * legate-control: the sample xDS v3 control plane. It serves the resources
 * of one ControlConfig file (proto/legate/control/v1/control.proto) over
 * ADS, re-reads the file on SIGHUP and pushes what changed.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "ads.h"
#include "config.h"
#include "xds/log.h"

#define LEGATE_CONTROL_VERSION "0.1.0"

struct ctl {
    const char *config_path;
    struct cp_ads *ads;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: legate-control -c FILE [options]\n"
            "  -c, --config FILE          resources to serve (legate.control.v1.ControlConfig,\n"
            "                             YAML or JSON); re-read on SIGHUP\n"
            "      --listen HOST:PORT     ADS address (default 127.0.0.1:18000)\n"
            "      --log-requests FILE    append every DiscoveryRequest to FILE as JSON lines\n"
            "  -l, --log-level LEVEL      trace, debug, info, warning, error, critical, off\n"
            "      --version              print the version and exit\n"
            "  -h, --help                 this text\n");
}

/*
 * Re-reads the config file. A valid file becomes the next version and is
 * pushed to every stream; an invalid one is logged and the current version
 * stays. Any trigger (a signal now, a file watch later) ends up here.
 */
static int reload(struct ctl *c)
{
    char err[1024];
    struct cp_config *cfg;
    uint64_t cur = cp_ads_config(c->ads)->version;

    if (cp_config_load(c->config_path, &cfg, err, sizeof(err)) < 0) {
        LG_E("control", "reload failed, still serving version %" PRIu64 ": %s", cur, err);
        return -1;
    }
    cfg->version = cur + 1;
    LG_I("control", "reloaded %s: serving version %" PRIu64, c->config_path, cfg->version);
    cp_ads_update(c->ads, cfg);
    return 0;
}

int main(int argc, char **argv)
{
    struct ctl c = {0};
    const char *listen = "127.0.0.1:18000", *reqlog_path = NULL;
    int level = LG_INFO;
    enum { OPT_LISTEN = 256, OPT_LOG_REQUESTS, OPT_VERSION };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"log-requests", required_argument, NULL, OPT_LOG_REQUESTS},
        {"log-level", required_argument, NULL, 'l'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;

    while ((ch = getopt_long(argc, argv, "c:l:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            c.config_path = optarg;
            break;
        case OPT_LISTEN:
            listen = optarg;
            break;
        case OPT_LOG_REQUESTS:
            reqlog_path = optarg;
            break;
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
    if (c.config_path == NULL) {
        fprintf(stderr, "legate-control: -c/--config is required\n");
        return 1;
    }
    lg_set_level(level);

    char err[1024];
    struct cp_config *cfg;
    if (cp_config_load(c.config_path, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "legate-control: error: %s\n", err);
        return 1;
    }
    cfg->version = 1;

    FILE *reqlog = NULL;
    if (reqlog_path && (reqlog = fopen(reqlog_path, "a")) == NULL) {
        fprintf(stderr, "legate-control: --log-requests: %s: %s\n", reqlog_path, strerror(errno));
        cp_config_free(cfg);
        return 1;
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
    int sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) {
        fprintf(stderr, "legate-control: signalfd: %s\n", strerror(errno));
        cp_config_free(cfg);
        if (reqlog)
            fclose(reqlog);
        return 1;
    }

    if (cp_ads_start(listen, cfg, reqlog, &c.ads, err, sizeof(err)) < 0) {
        fprintf(stderr, "legate-control: error: %s\n", err);
        close(sfd);
        if (reqlog)
            fclose(reqlog);
        return 1;
    }

    int stop = 0;
    while (!stop) {
        cp_ads_poll(c.ads, 100);
        struct signalfd_siginfo si;
        while (!stop && read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
            if (si.ssi_signo == SIGHUP) {
                reload(&c);
            } else {
                LG_I("control", "%s: shutting down", strsignal((int)si.ssi_signo));
                stop = 1;
            }
        }
    }
    cp_ads_stop(c.ads);
    close(sfd);
    if (reqlog)
        fclose(reqlog);
    LG_I("control", "stopped");
    return 0;
}
