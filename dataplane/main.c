/*
 * legate: the data plane. Command-line flags follow Envoy's names where
 * Envoy has them.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataplane/server.h"
#include "xds/bootstrap.h"
#include "xds/log.h"

#include "xds/version.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: legate -c FILE [options]\n"
            "  -c, --config-path FILE     Envoy v3 bootstrap (YAML, JSON or .pb)\n"
            "      --mode serve|validate  validate: check the config, print the result, exit 0/1\n"
            "  -l, --log-level LEVEL      trace, debug, info, warning, error, critical, off\n"
            "      --concurrency N        worker threads (default: number of CPUs)\n"
            "      --drain-time-s N       graceful drain time on shutdown (default 600)\n"
            "      --cert-warn-days N     warn about certificates expiring within N days (default 14)\n"
            "      --allow-expired-certificates\n"
            "                             accept an expired certificate pushed over SDS (default: NACK)\n"
            "      --version              print the version and exit\n"
            "  -h, --help                 this text\n");
}

int main(int argc, char **argv)
{
    struct dp_options opt = {
        .log_level = LG_INFO,
        .concurrency = 0,
        .drain_time_s = 600,
        .cert_warn_days = 14,
        .argc = argc,
        .argv = argv,
    };
    int validate = 0;
    enum { OPT_MODE = 256, OPT_CONCURRENCY, OPT_VERSION, OPT_DRAIN_TIME, OPT_WARN_DAYS, OPT_ALLOW_EXPIRED };
    static const struct option longopts[] = {
        {"config-path", required_argument, NULL, 'c'},
        {"log-level", required_argument, NULL, 'l'},
        {"mode", required_argument, NULL, OPT_MODE},
        {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
        {"drain-time-s", required_argument, NULL, OPT_DRAIN_TIME},
        {"cert-warn-days", required_argument, NULL, OPT_WARN_DAYS},
        {"allow-expired-certificates", no_argument, NULL, OPT_ALLOW_EXPIRED},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    char *end;

    while ((ch = getopt_long(argc, argv, "c:l:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            opt.config_path = optarg;
            break;
        case 'l':
            if ((opt.log_level = lg_level_parse(optarg)) < 0) {
                fprintf(stderr, "legate: --log-level: unknown level \"%s\"\n", optarg);
                return 1;
            }
            break;
        case OPT_MODE:
            if (strcmp(optarg, "validate") == 0)
                validate = 1;
            else if (strcmp(optarg, "serve") != 0) {
                fprintf(stderr, "legate: --mode: expected serve or validate, got \"%s\"\n", optarg);
                return 1;
            }
            break;
        case OPT_CONCURRENCY:
            opt.concurrency = (int)strtol(optarg, &end, 10);
            if (*end != '\0' || opt.concurrency < 1 || opt.concurrency > 256) {
                fprintf(stderr, "legate: --concurrency: expected 1..256, got \"%s\"\n", optarg);
                return 1;
            }
            break;
        case OPT_DRAIN_TIME:
            opt.drain_time_s = strtod(optarg, &end);
            if (*end != '\0' || opt.drain_time_s < 0) {
                fprintf(stderr, "legate: --drain-time-s: expected seconds, got \"%s\"\n", optarg);
                return 1;
            }
            break;
        case OPT_WARN_DAYS:
            opt.cert_warn_days = (int)strtol(optarg, &end, 10);
            if (*end != '\0' || opt.cert_warn_days < 0 || opt.cert_warn_days > 3650) {
                fprintf(stderr, "legate: --cert-warn-days: expected 0..3650, got \"%s\"\n", optarg);
                return 1;
            }
            break;
        case OPT_ALLOW_EXPIRED:
            opt.allow_expired_certificates = 1;
            break;
        case OPT_VERSION:
            printf("legate version %s\n", LEGATE_VERSION);
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
        fprintf(stderr, "legate: unexpected argument \"%s\"\n", argv[optind]);
        return 1;
    }
    if (opt.config_path == NULL) {
        fprintf(stderr, "legate: -c/--config-path is required\n");
        return 1;
    }
    if (opt.concurrency == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        opt.concurrency = n > 0 ? (int)n : 1;
    }
    lg_set_level(opt.log_level);

    char err[1024];
    xds_bootstrap_t *bs;
    if (xds_bootstrap_load(opt.config_path, &bs, err, sizeof(err)) < 0) {
        fprintf(stderr, "legate: error: %s\n", err);
        return 1;
    }
    if (dp_server_check(bs, err, sizeof(err)) < 0) {
        fprintf(stderr, "legate: error: %s: %s\n", opt.config_path, err);
        xds_bootstrap_free(bs);
        return 1;
    }
    if (validate) {
        printf("configuration '%s' OK\n", opt.config_path);
        xds_bootstrap_free(bs);
        return 0;
    }
    int rc = dp_server_run(&opt, bs);
    xds_bootstrap_free(bs);
    return rc == 0 ? 0 : 1;
}
