#include "watch.h"

#include <stdlib.h>
#include <string.h>

static int observe(struct cp_watch_file *f)
{
    struct stat st;
    struct cp_watch_file now = {.path = f->path};

    if (stat(f->path, &st) == 0) {
        now.exists = 1;
        now.dev = st.st_dev;
        now.ino = st.st_ino;
        now.size = st.st_size;
        now.mtime = st.st_mtim;
    }
    int changed = now.exists != f->exists ||
                  (now.exists && (now.dev != f->dev || now.ino != f->ino || now.size != f->size ||
                                  now.mtime.tv_sec != f->mtime.tv_sec ||
                                  now.mtime.tv_nsec != f->mtime.tv_nsec));
    *f = now;
    return changed;
}

static struct cp_watch_file *find(const struct cp_watch *w, const char *path)
{
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->files[i].path, path) == 0)
            return &w->files[i];
    return NULL;
}

/* A new set: the union of keep (those of w named in paths) and paths. */
static int build(struct cp_watch *w, char *const *paths, size_t n, int keep_all)
{
    size_t cap = n + (keep_all ? w->n : 0), m = 0;
    struct cp_watch_file *v = calloc(cap ? cap : 1, sizeof(*v));

    if (v == NULL)
        return -1;
    if (keep_all)
        for (size_t i = 0; i < w->n; i++) {
            v[m] = w->files[i];
            if ((v[m].path = strdup(w->files[i].path)) == NULL)
                goto oom;
            m++;
        }
    for (size_t i = 0; i < n; i++) {
        int dup = 0;
        for (size_t j = 0; j < m && !dup; j++)
            dup = strcmp(v[j].path, paths[i]) == 0;
        if (dup)
            continue;
        const struct cp_watch_file *old = find(w, paths[i]);
        if (old)
            v[m] = *old;
        if ((v[m].path = strdup(paths[i])) == NULL)
            goto oom;
        if (old == NULL)
            observe(&v[m]);
        m++;
    }
    cp_watch_free(w);
    w->files = v;
    w->n = m;
    return 0;
oom:
    for (size_t i = 0; i < m; i++)
        free(v[i].path);
    free(v);
    return -1;
}

int cp_watch_set(struct cp_watch *w, char *const *paths, size_t n)
{
    return build(w, paths, n, 0);
}

int cp_watch_add(struct cp_watch *w, char *const *paths, size_t n)
{
    return build(w, paths, n, 1);
}

const char *cp_watch_poll(struct cp_watch *w)
{
    const char *first = NULL;
    for (size_t i = 0; i < w->n; i++)
        if (observe(&w->files[i]) && first == NULL)
            first = w->files[i].path;
    return first;
}

void cp_watch_touch(struct cp_watch *w, const char *path)
{
    struct cp_watch_file *f = find(w, path);
    if (f)
        observe(f);
}

void cp_watch_free(struct cp_watch *w)
{
    for (size_t i = 0; i < w->n; i++)
        free(w->files[i].path);
    free(w->files);
    w->files = NULL;
    w->n = 0;
}
