/*
 * The control loop's state shared by its triggers: the config as written
 * (store), what is served (ads), and the files watched. A SIGHUP, a watched
 * file that changed, and a management API write all end up here, on the
 * one thread that drives everything.
 */
#ifndef LEGATE_CONTROL_CTL_H
#define LEGATE_CONTROL_CTL_H

#include <stdint.h>

#include "ads.h"
#include "store.h"
#include "watch.h"

struct cp_ctl {
    const char *config_path;
    cp_cc_t *cc;          /* the last good config as written; owned */
    struct cp_ads *ads;   /* serves cc, packed */
    struct cp_watch watch;
};

/** Reads and builds config_path for the start. Returns 0 with c->cc set,
 *  the watch list made, and *cfg (version 1) to hand to cp_ads_start; or -1
 *  with a message in err. */
int cp_ctl_init(struct cp_ctl *c, const char *config_path, struct cp_config **cfg, char *err,
                size_t errlen);

/**
 * Re-reads the config file (why: "SIGHUP", or the file that changed). A
 * valid file whose resources differ becomes the next version, pushed to the
 * streams whose resources changed; an identical one changes nothing; an
 * invalid one is logged on one line naming the field and the current
 * version stays. Returns 0 or -1 (invalid).
 */
int cp_ctl_reload(struct cp_ctl *c, const char *why);

/** What cp_ctl_commit failed at. */
enum { CP_COMMIT_INVALID = -1, CP_COMMIT_IO = -2 };

/**
 * Makes next (owned from now on) the config: builds it, writes it to the
 * config file atomically, then serves it as the next version if anything
 * served changed. Returns 0 with the version served in *version, or
 * CP_COMMIT_INVALID / CP_COMMIT_IO with a message in err (nothing changed).
 */
int cp_ctl_commit(struct cp_ctl *c, cp_cc_t *next, uint64_t *version, char *err, size_t errlen);

/** The version served now. */
uint64_t cp_ctl_version(const struct cp_ctl *c);

void cp_ctl_free(struct cp_ctl *c);

#endif
