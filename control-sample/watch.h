/*
 * Watching files by polling stat(2): a file changed when its device, inode,
 * size or modification time differ, or it appeared or vanished. That sees
 * in-place writes and atomic renames (mv, cert-manager, Kubernetes' ..data
 * symlink swap, since stat follows links) alike, on any filesystem.
 */
#ifndef LEGATE_CONTROL_WATCH_H
#define LEGATE_CONTROL_WATCH_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

struct cp_watch_file {
    char *path;
    int exists;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

struct cp_watch {
    struct cp_watch_file *files;
    size_t n;
};

/**
 * Makes paths the watched set. A path already watched keeps what was last
 * seen of it (so a change it went through meanwhile is still reported);
 * a new one is stat'ed now. Returns 0, or -1 when out of memory (the set
 * stays as it was).
 */
int cp_watch_set(struct cp_watch *w, char *const *paths, size_t n);

/** Adds paths to the watched set, as cp_watch_set does for new ones. */
int cp_watch_add(struct cp_watch *w, char *const *paths, size_t n);

/**
 * Stats every file. Returns the path of the first that changed since last
 * seen (every file's state is updated), or NULL if none did.
 */
const char *cp_watch_poll(struct cp_watch *w);

/** Records the current state of path (a file we just wrote ourselves). */
void cp_watch_touch(struct cp_watch *w, const char *path);

void cp_watch_free(struct cp_watch *w);

#endif
