#include "ctl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xds/log.h"

/* Watches the config file and every file its secrets name. add: keep what
 * is watched already (a config that failed may still name new files). */
static void watch_files(struct cp_ctl *c, const cp_cc_t *cc, int add)
{
    char **files;
    size_t n;

    if (cp_config_files(cc, &files, &n) < 0) {
        LG_E("control", "out of memory: the watched files are not updated");
        return;
    }
    char **all = calloc(n + 1, sizeof(*all));
    if (all) {
        all[0] = (char *)c->config_path;
        if (n)
            memcpy(all + 1, files, n * sizeof(*files));
        if ((add ? cp_watch_add : cp_watch_set)(&c->watch, all, n + 1) < 0)
            LG_E("control", "out of memory: the watched files are not updated");
    }
    free(all);
    cp_config_files_free(files, n);
}

int cp_ctl_init(struct cp_ctl *c, const char *config_path, struct cp_config **cfg, char *err,
                size_t errlen)
{
    char msg[1024];

    c->config_path = config_path;
    *cfg = NULL;
    if (cp_store_read(config_path, &c->cc, err, errlen) < 0)
        return -1;
    if (cp_config_build(c->cc, cfg, msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "%s: %s", config_path, msg);
        cp_store_free(c->cc);
        c->cc = NULL;
        return -1;
    }
    (*cfg)->version = 1;
    watch_files(c, c->cc, 0);
    return 0;
}

uint64_t cp_ctl_version(const struct cp_ctl *c)
{
    return cp_ads_config(c->ads)->version;
}

int cp_ctl_reload(struct cp_ctl *c, const char *why)
{
    char err[1024], msg[1024];
    cp_cc_t *cc;
    struct cp_config *cfg;
    uint64_t cur = cp_ctl_version(c);

    if (cp_store_read(c->config_path, &cc, err, sizeof(err)) < 0) {
        LG_E("control", "reload failed, still serving version %" PRIu64 ": %s", cur, err);
        return -1;
    }
    if (cp_config_build(cc, &cfg, msg, sizeof(msg)) < 0) {
        LG_E("control", "reload failed, still serving version %" PRIu64 ": %s: %s", cur,
             c->config_path, msg);
        /* A file this config names may be the one still to come. */
        watch_files(c, cc, 1);
        cp_store_free(cc);
        return -1;
    }
    cp_store_free(c->cc);
    c->cc = cc;
    watch_files(c, cc, 0);
    if (cp_config_equal(cfg, cp_ads_config(c->ads))) {
        LG_I("control", "reloaded %s (%s): nothing changed, still serving version %" PRIu64,
             c->config_path, why, cur);
        cp_config_free(cfg);
        return 0;
    }
    cfg->version = cur + 1;
    LG_I("control", "reloaded %s: serving version %" PRIu64 " (%s)", c->config_path, cfg->version,
         why);
    cp_ads_update(c->ads, cfg);
    return 0;
}

int cp_ctl_commit(struct cp_ctl *c, cp_cc_t *next, uint64_t *version, char *err, size_t errlen)
{
    struct cp_config *cfg;
    uint64_t cur = cp_ctl_version(c);

    *version = cur;
    if (cp_config_build(next, &cfg, err, errlen) < 0) {
        cp_store_free(next);
        return CP_COMMIT_INVALID;
    }
    /* On disk first: what is served never gets ahead of what a restart
     * would load. */
    if (cp_store_write(c->config_path, next, err, errlen) < 0) {
        LG_E("control", "cannot persist the change, nothing changed: %s", err);
        cp_config_free(cfg);
        cp_store_free(next);
        return CP_COMMIT_IO;
    }
    cp_store_free(c->cc);
    c->cc = next;
    watch_files(c, next, 0);
    cp_watch_touch(&c->watch, c->config_path);
    if (cp_config_equal(cfg, cp_ads_config(c->ads))) {
        cp_config_free(cfg);
        return 0;
    }
    cfg->version = cur + 1;
    *version = cfg->version;
    cp_ads_update(c->ads, cfg);
    return 0;
}

void cp_ctl_free(struct cp_ctl *c)
{
    cp_store_free(c->cc);
    c->cc = NULL;
    cp_watch_free(&c->watch);
}
