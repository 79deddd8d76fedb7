/*
 * The index directory. Contract in indexdir.h; what the files hold is
 * format/dfx_store.c's business, reached only through its API.
 *
 * A save creates a temporary file, writes it through a dfx_store writer
 * whose write callback is pwrite on that file, then fsyncs it, renames it
 * into place and fsyncs the directory.
 *
 * A load opens the file, checks it through its descriptor, and hands a
 * file source over it (fs/src_file.h) to dfx_store_load(); the index keeps
 * that source for its windows, and the file stays open for as long as the
 * index lives. Such files are listed in a process-wide registry of open
 * files (device, inode), which pruning consults so that it never removes
 * one.
 *
 * Pruning lists the directory (its own stream over a descriptor of the
 * opened directory), looks at our files with fstatat (never following a
 * link), and before removing one opens it O_NOFOLLOW and checks, through
 * that descriptor, that it is still the regular file of the user's it
 * listed, with the magic. The size cap's bookkeeping (bytes counted at the
 * last listing plus those saved since) lives in the directory, under its
 * lock, which also makes prunes of one directory run one at a time.
 */
#define _GNU_SOURCE
#include "indexdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dfx_internal.h" /* dfx_index_spacing() */
#include "src_file.h"

/* A temporary file's name: the index file's and ".<pid>.<n>.tmp". */
#define TEMP_NAME_MAX (DFX_STORE_NAME_MAX + 32)
/* A temporary file this old (seconds) belongs to a writer that died. */
#define TEMP_AGE (24 * 3600)
/* The size cap's listing is trusted this long (seconds); then, at the next
 * save, the directory is listed again (other processes save there too). */
#define RESCAN_SECS 60

static atomic_uint tmp_counter;

/* ----------------------------------------------------------- directory --- */

struct indexdir {
    int fd;              /* immutable: O_RDONLY|O_DIRECTORY, checked by check_dir_fd() */
    char *path;          /* owned, immutable: as given, for messages */
    atomic_uint_least64_t max; /* the size cap, 0: none (indexdir_set_max()) */
    /* Pruning: lock is held by a prune from start to end (one at a time),
     * and guards the size cap's bookkeeping. */
    pthread_mutex_t lock;
    bool counted;        /* protected by lock: a listing counted the bytes */
    uint64_t bytes;      /* protected by lock: bytes counted then, plus saves since */
    time_t counted_at;   /* protected by lock: when (CLOCK_MONOTONIC seconds) */
    atomic_uint_least64_t pruned_files, pruned_bytes; /* by saves, not yet taken */
};

static void prune_after_save(struct indexdir *d, const struct stat *saved);

/* Contract in indexdir.h. */
int indexdir_default_dir_from(const char *xdg, const char *home, const char *pw_home,
                               uid_t euid, char **out)
{
    struct stat st;
    int n;

    *out = NULL;
    if (xdg && xdg[0] == '/')
        n = asprintf(out, "%s/npyfs", xdg);
    else if (home && home[0])
        n = asprintf(out, "%s/.cache/npyfs", home);
    else if (pw_home && pw_home[0] == '/' && pw_home[strspn(pw_home, "/")] &&
             stat(pw_home, &st) == 0 && S_ISDIR(st.st_mode))
        n = asprintf(out, "%s/.cache/npyfs", pw_home);
    else if (euid == 0)
        n = asprintf(out, "/var/cache/npyfs");
    else
        return -ENOENT;
    if (n < 0) {
        *out = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* Contract in indexdir.h. */
int indexdir_default_dir(char **out)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    struct passwd pw, *found = NULL;
    long size = sysconf(_SC_GETPW_R_SIZE_MAX);
    char *buf = NULL;
    int ret;

    *out = NULL;
    if ((xdg && xdg[0] == '/') || (home && home[0]))
        return indexdir_default_dir_from(xdg, home, NULL, geteuid(), out);
    /* getpwuid_r: thread-safe (an archive opened by a handler thread gets
     * its indexer, and so its directory, there) */
    for (size_t len = size > 0 ? (size_t)size : 1024;; len *= 2) {
        char *grown = realloc(buf, len);

        if (!grown) {
            free(buf);
            return -ENOMEM;
        }
        buf = grown;
        ret = getpwuid_r(geteuid(), &pw, buf, len, &found);
        if (ret != ERANGE || len >= (1u << 20))
            break;
    }
    ret = indexdir_default_dir_from(NULL, NULL, found ? pw.pw_dir : NULL, geteuid(), out);
    free(buf);
    return ret;
}

/* mkdir -p with mode 0700 for every directory it creates, whatever the
 * umask (0222 would make it 0500: unusable to the user who made it). */
static int mkdir_parents(const char *dir)
{
    char *p = strdup(dir);
    int ret = 0;

    if (!p)
        return -ENOMEM;
    for (char *s = p + 1; ret == 0; s++) {
        bool last = *s == '\0';
        if (*s != '/' && !last)
            continue;
        *s = '\0';
        if (mkdir(p, 0700) == 0)
            ret = chmod(p, 0700) < 0 ? -errno : 0;
        else if (errno != EEXIST)
            ret = -errno;
        if (last)
            break;
        *s = '/';
    }
    free(p);
    return ret;
}

/* Is the open directory fd one the user may keep indexes in: a directory
 * of the user's that nobody else can write to? */
static int check_dir_fd(int fd)
{
    struct stat st;

    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    if (st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH)))
        return -EPERM;
    return 0;
}

/* Open path as a directory, following a symlink as its last component only
 * if the link is the user's or root's (indexdir.h). The directory itself is
 * checked by the caller, through the descriptor. */
static int open_dir(const char *path)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

    if (fd >= 0 || (errno != ELOOP && errno != ENOTDIR))
        return fd >= 0 ? fd : -errno;
    if (lstat(path, &st) < 0)
        return -errno;
    if (!S_ISLNK(st.st_mode))
        return -ENOTDIR;
    if (st.st_uid != geteuid() && st.st_uid != 0)
        return -EPERM;
    fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

/* Contract in indexdir.h. */
int indexdir_open(const char *path, struct indexdir **out)
{
    struct indexdir *d;
    int ret = mkdir_parents(path), fd;

    *out = NULL;
    if (ret < 0)
        return ret;
    fd = open_dir(path);
    if (fd < 0)
        return fd;
    ret = check_dir_fd(fd);
    if (ret == 0 && faccessat(fd, ".", W_OK | X_OK, AT_EACCESS) < 0)
        ret = -errno;
    d = ret == 0 ? calloc(1, sizeof(*d)) : NULL;
    if (ret == 0 && (!d || !(d->path = strdup(path)))) {
        free(d);
        ret = -ENOMEM;
    }
    if (ret < 0) {
        close(fd);
        return ret;
    }
    d->fd = fd;
    pthread_mutex_init(&d->lock, NULL);
    *out = d;
    return 0;
}

/* Contract in indexdir.h. */
void indexdir_close(struct indexdir *d)
{
    if (!d)
        return;
    close(d->fd);
    pthread_mutex_destroy(&d->lock);
    free(d->path);
    free(d);
}

/* Contract in indexdir.h. */
void indexdir_set_max(struct indexdir *d, uint64_t max)
{
    atomic_store(&d->max, max);
}

/* Contract in indexdir.h. */
void indexdir_take_pruned(struct indexdir *d, uint64_t *files, uint64_t *bytes)
{
    *files = atomic_exchange(&d->pruned_files, 0);
    *bytes = atomic_exchange(&d->pruned_bytes, 0);
}

/* Contract in indexdir.h. */
const char *indexdir_path(const struct indexdir *d)
{
    return d->path;
}

/* Contract in indexdir.h. */
int indexdir_file_path(const struct indexdir *d, const struct dfx_store_key *k, char **out)
{
    char name[DFX_STORE_NAME_MAX];

    dfx_store_name(k, name);
    if (asprintf(out, "%s/%s", d->path, name) < 0) {
        *out = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* -------------------------------------------------------------- writer --- */

struct indexdir_writer {
    struct indexdir *dir;              /* borrowed */
    struct dfx_store_writer *w;        /* owned: the codec's writer on fd */
    char name[DFX_STORE_NAME_MAX];     /* final name in dir */
    char tmp[TEMP_NAME_MAX];           /* temporary name in dir */
    int fd;
};

/* Contract in indexdir.h. */
int indexdir_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
    const unsigned char *p = buf;

    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* The codec's write callback: pwrite all of buf at off. */
static int fd_write(void *ctx, const void *buf, size_t len, uint64_t off)
{
    const struct indexdir_writer *iw = ctx;

    return indexdir_pwrite_all(iw->fd, buf, len, off);
}

/* Contract in indexdir.h. */
int indexdir_begin(struct indexdir *d, const struct dfx_store_key *k, uint64_t spacing,
                   struct indexdir_writer **out)
{
    struct indexdir_writer *w = calloc(1, sizeof(*w));
    struct dfx_store_out out_cb;
    int ret;

    *out = NULL;
    if (!w)
        return -ENOMEM;
    w->dir = d;
    w->fd = -1;
    dfx_store_name(k, w->name);
    out_cb = (struct dfx_store_out){fd_write, w};
    ret = dfx_store_writer_new(k, spacing, &out_cb, &w->w);
    if (ret == 0)
        ret = check_dir_fd(d->fd); /* its mode may have changed since it was opened */
    for (int tries = 0; ret == 0 && w->fd < 0 && tries < 16; tries++) {
        snprintf(w->tmp, sizeof(w->tmp), "%s.%d.%u.tmp", w->name, (int)getpid(),
                 atomic_fetch_add(&tmp_counter, 1));
        w->fd = openat(d->fd, w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                       0600);
        if (w->fd < 0 && errno != EEXIST)
            ret = -errno;
    }
    if (ret == 0 && w->fd < 0)
        ret = -EEXIST;
    if (ret < 0) {
        dfx_store_writer_free(w->w);
        free(w);
        return ret;
    }
    *out = w;
    return 0;
}

/* Contract in indexdir.h. */
void indexdir_sink(struct indexdir_writer *w, struct dfx_sink *out)
{
    dfx_store_sink(w->w, out);
}

/* Contract in indexdir.h. */
void indexdir_abort(struct indexdir_writer *w)
{
    if (!w)
        return;
    close(w->fd);
    unlinkat(w->dir->fd, w->tmp, 0);
    dfx_store_writer_free(w->w);
    free(w);
}

/* May a save put its file at name? Only over nothing, or over a regular
 * file of this user's (a stale or damaged index file): never over a
 * symlink, a FIFO or another user's file, which npyfs did not write.
 * 0 or -EEXIST. */
static int replaceable(const struct indexdir *d, const char *name)
{
    struct stat st;

    if (fstatat(d->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return 0;
    return S_ISREG(st.st_mode) && st.st_uid == geteuid() ? 0 : -EEXIST;
}

/* Contract in indexdir.h. */
int indexdir_finish(struct indexdir_writer *w, struct dfx_index *ix, const struct dfx_crcs *crcs)
{
    struct stat st;
    int ret = dfx_store_writer_end(w->w, ix, crcs);

    if (ret == 0 && fsync(w->fd) < 0)
        ret = -errno;
    if (ret == 0 && fstat(w->fd, &st) < 0)
        ret = -errno;
    if (close(w->fd) < 0 && ret == 0)
        ret = -errno;
    w->fd = -1;
    if (ret == 0)
        ret = replaceable(w->dir, w->name);
    if (ret == 0 && renameat(w->dir->fd, w->tmp, w->dir->fd, w->name) < 0)
        ret = -errno;
    if (ret == 0 && fsync(w->dir->fd) < 0) /* make the rename itself durable */
        ret = -errno;
    if (ret < 0)
        unlinkat(w->dir->fd, w->tmp, 0);
    else
        prune_after_save(w->dir, &st);
    dfx_store_writer_free(w->w);
    free(w);
    return ret;
}

/* Contract in indexdir.h. */
int indexdir_save(struct indexdir *d, const struct dfx_store_key *k, struct dfx_index *ix,
                  const struct dfx_crcs *crcs)
{
    struct indexdir_writer *w;
    int ret = ix ? dfx_index_error(ix) : 0;

    /* Refuse early what finish would refuse, before creating a file. */
    if (ret == 0 && ix && dfx_index_total(ix) == UINT64_MAX)
        ret = -EAGAIN;
    if (ret < 0)
        return ret;
    ret = indexdir_begin(d, k, ix ? dfx_index_spacing(ix) : 0, &w);
    return ret < 0 ? ret : indexdir_finish(w, ix, crcs);
}

/* ------------------------------------------------------- open registry --- */

/* The index files this process holds open (loaded into an index), by
 * device and inode: pruning never removes one. */
struct open_file {
    dev_t dev;
    ino_t ino;
    unsigned refs;
};
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static struct open_file *open_files; /* protected by open_lock; freed when empty */
static size_t open_count, open_cap;  /* protected by open_lock */

static struct open_file *open_find(dev_t dev, ino_t ino)
{
    for (size_t i = 0; i < open_count; i++)
        if (open_files[i].dev == dev && open_files[i].ino == ino)
            return &open_files[i];
    return NULL;
}

/* Count one more holder of the file. 0 or -ENOMEM. */
static int open_note(dev_t dev, ino_t ino)
{
    struct open_file *o;
    int ret = 0;

    pthread_mutex_lock(&open_lock);
    o = open_find(dev, ino);
    if (o) {
        o->refs++;
    } else if (open_count == open_cap &&
               !(o = realloc(open_files, (open_cap ? open_cap * 2 : 16) * sizeof(*o)))) {
        ret = -ENOMEM;
    } else {
        if (open_count == open_cap) {
            open_files = o;
            open_cap = open_cap ? open_cap * 2 : 16;
        }
        open_files[open_count++] = (struct open_file){dev, ino, 1};
    }
    pthread_mutex_unlock(&open_lock);
    return ret;
}

static void open_forget(dev_t dev, ino_t ino)
{
    struct open_file *o;

    pthread_mutex_lock(&open_lock);
    o = open_find(dev, ino);
    if (o && --o->refs == 0)
        *o = open_files[--open_count];
    if (open_count == 0) {
        free(open_files);
        open_files = NULL;
        open_cap = 0;
    }
    pthread_mutex_unlock(&open_lock);
}

static bool open_here(dev_t dev, ino_t ino)
{
    bool found;

    pthread_mutex_lock(&open_lock);
    found = open_find(dev, ino) != NULL;
    pthread_mutex_unlock(&open_lock);
    return found;
}

/* --------------------------------------------------------------- load --- */

/* A loaded file held by its index: released when the index lets go. */
struct held {
    struct src *file; /* owned: the file source (its descriptor) */
    dev_t dev;
    ino_t ino;
};

static void held_release(void *arg)
{
    struct held *h = arg;

    open_forget(h->dev, h->ino);
    src_free(h->file);
    free(h);
}

/* Open the file for key (never following a link, never blocking) and check
 * it is one of ours: a regular file of the user's. *fd and *st on success. */
static int file_open(struct indexdir *d, const struct dfx_store_key *k, int *fd,
                     struct stat *st)
{
    char name[DFX_STORE_NAME_MAX];
    int ret = check_dir_fd(d->fd);

    if (ret < 0)
        return ret;
    dfx_store_name(k, name);
    /* O_NONBLOCK: a FIFO planted in the directory opens at once (and is
     * refused below) instead of blocking the opener for good. */
    *fd = openat(d->fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (*fd < 0)
        return errno == ELOOP ? -EBADMSG : -errno; /* a planted symlink: never followed */
    if (fstat(*fd, st) < 0)
        ret = -errno;
    else if (!S_ISREG(st->st_mode) || st->st_uid != geteuid())
        ret = -EBADMSG;
    if (ret < 0) {
        close(*fd);
        *fd = -1;
    }
    return ret;
}

/* Contract in indexdir.h. */
int indexdir_load(struct indexdir *d, const struct dfx_store_key *k, struct dfx_index *ix,
                  uint32_t chunk, const struct dfx_crcs *have, struct dfx_crcs **crcs,
                  uint64_t *spacing)
{
    struct held *h = NULL;
    struct src *file = NULL;
    struct stat st;
    int fd, ret;

    if (crcs)
        *crcs = NULL;
    ret = file_open(d, k, &fd, &st);
    if (ret < 0)
        return ret;
    ret = src_file_from_fd(fd, &file); /* owns fd from here on */
    if (ret == -EISDIR || ret == -ENODEV)
        ret = -EBADMSG;
    if (ret == 0 && ix && !(h = malloc(sizeof(*h))))
        ret = -ENOMEM;
    if (ret == 0 && ix) {
        *h = (struct held){file, st.st_dev, st.st_ino};
        ret = open_note(st.st_dev, st.st_ino);
    }
    if (ret == 0) {
        ret = dfx_store_load(file, k, ix, chunk, have, crcs, spacing, ix ? held_release : NULL,
                             h);
        if (ret < 0 && ix)
            open_forget(st.st_dev, st.st_ino);
    }
    if (ret == 0)
        futimens(src_file_fd(file), NULL); /* used now: pruning removes the least recently used */
    if (ret < 0 || !ix) {
        free(h);
        src_free(file); /* ix: the index holds it now, released by held_release() */
    }
    return ret;
}

/* -------------------------------------------------------------- prune --- */

enum entry_kind { E_INDEX, E_TEMP };

/* A file of ours found by a listing. */
struct entry {
    char name[TEMP_NAME_MAX];
    enum entry_kind kind;
    dev_t dev;
    ino_t ino;
    uint64_t bytes;
    int64_t idle;        /* seconds since its mtime */
    int64_t mtime_ns;    /* the order of the size cap's removals */
    bool done;           /* removed, or left out of the rest of the prune */
    /* read from the file with o->sources (read_entry(): dfx_store_peek()) */
    struct dfx_store_info info;
};

/* An index file's name (dfx_store_name()), a temporary one's
 * (indexdir_begin(): "<name>.<pid>.<n>.tmp"), or neither (-1). */
static int name_kind(const char *name)
{
    const char *p = name + DFX_STORE_NAME_LEN;
    size_t n;

    if (!dfx_store_is_name(name))
        return -1;
    if (*p == '\0')
        return E_INDEX;
    for (int field = 0; field < 2; field++) {
        if (*p++ != '.' || (n = strspn(p, "0123456789")) == 0)
            return -1;
        p += n;
    }
    return strcmp(p, ".tmp") == 0 ? E_TEMP : -1;
}

static void entries_free(struct entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dfx_store_info_clear(&e[i].info);
    free(e);
}

/* Our files in d: names of ours, regular files of the user's (fstatat,
 * never following a link). 0, or a negative errno. */
static int list_dir(struct indexdir *d, struct entry **out, size_t *count)
{
    struct entry *e = NULL;
    size_t n = 0, cap = 0;
    time_t now = time(NULL);
    struct dirent *de;
    DIR *dir;
    int fd = openat(d->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;

    *out = NULL;
    *count = 0;
    if (fd < 0)
        return -errno;
    dir = fdopendir(fd); /* its own stream: not d->fd's offset */
    if (!dir) {
        ret = -errno;
        close(fd);
        return ret;
    }
    while ((errno = 0, de = readdir(dir)) != NULL) {
        int kind = name_kind(de->d_name);
        struct stat st;

        if (kind < 0 || strlen(de->d_name) >= sizeof(e->name) ||
            fstatat(d->fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
            st.st_uid != geteuid())
            continue;
        if (n == cap) {
            struct entry *grown = realloc(e, (cap = cap ? cap * 2 : 64) * sizeof(*e));
            if (!grown) {
                ret = -ENOMEM;
                break;
            }
            e = grown;
        }
        memset(&e[n], 0, sizeof(e[n]));
        strcpy(e[n].name, de->d_name);
        e[n].kind = (enum entry_kind)kind;
        e[n].dev = st.st_dev;
        e[n].ino = st.st_ino;
        e[n].bytes = (uint64_t)st.st_size;
        e[n].idle = (int64_t)(now - st.st_mtim.tv_sec);
        e[n].mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        n++;
    }
    if (ret == 0 && errno)
        ret = -errno;
    closedir(dir);
    if (ret < 0) {
        entries_free(e, n);
        return ret;
    }
    *out = e;
    *count = n;
    return 0;
}

/* Open e for a look inside: a source over the file if the name still
 * leads to the regular file of the user's that was listed (never through a
 * link), else NULL. */
static struct src *open_entry(struct indexdir *d, const struct entry *e)
{
    struct stat st;
    struct src *file;
    int fd = openat(d->fd, e->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);

    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
        st.st_dev != e->dev || st.st_ino != e->ino) {
        close(fd);
        return NULL;
    }
    return src_file_from_fd(fd, &file) == 0 ? file : NULL;
}

/* Remove e if it is still the file of ours that was listed, not open in
 * this process and not keep. 0, -EBUSY (kept), -ESTALE (it is no longer
 * what was listed, or not ours: left alone), or unlinkat's error. */
static int remove_entry(struct indexdir *d, const struct entry *e, const struct stat *keep)
{
    struct stat st;
    struct src *file;
    bool ours;

    if ((keep && e->dev == keep->st_dev && e->ino == keep->st_ino) || open_here(e->dev, e->ino))
        return -EBUSY;
    file = open_entry(d, e);
    if (!file)
        return -ESTALE;
    /* a temporary file's header comes last */
    ours = e->kind == E_TEMP || dfx_store_has_magic(file);
    src_free(file);
    if (!ours)
        return -ESTALE;
    /* still the same file under that name (a new one renamed over it since
     * the open is the one race left: see indexdir.h) */
    if (fstatat(d->fd, e->name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_dev != e->dev ||
        st.st_ino != e->ino)
        return -ESTALE;
    return unlinkat(d->fd, e->name, 0) < 0 ? -errno : 0;
}

/* Read what the file of e says about itself into e->info (dfx_store_peek():
 * version, member name, path, the key's archive). Returns 0, -ENOENT not
 * ours (no magic: never touched), -EBADMSG a header of this version that
 * does not hold together, or -ENOMEM. */
static int read_entry(struct indexdir *d, struct entry *e)
{
    struct src *file = open_entry(d, e);
    int ret;

    if (!file)
        return -ENOENT;
    ret = dfx_store_peek(file, &e->info);
    src_free(file);
    return ret;
}

/* Check e's file whole (dfx_store_verify()): 0, -EBADMSG, -ENOMEM, or
 * another error (kept: a read that failed is not damage found). */
static int verify_entry(struct indexdir *d, struct entry *e)
{
    struct src *file = open_entry(d, e);
    int ret;

    if (!file)
        return -ENOENT;
    ret = dfx_store_verify(file);
    src_free(file);
    return ret;
}

/* With o->sources: why e should go (an indexdir_prune_why), or -1 to keep it;
 * -ENOMEM. Reads the file's header (read_entry()); a file that is not ours
 * gets done set and is left alone. */
static int source_verdict(struct indexdir *d, struct entry *e,
                          const struct indexdir_prune_opts *o)
{
    const struct dfx_store_info *i = &e->info;
    struct stat st;
    int ret;

    if (e->kind == E_TEMP)
        return -1;
    ret = read_entry(d, e);
    if (ret == -ENOENT) {
        e->done = true; /* not ours */
        return -1;
    }
    if (ret == -ENOMEM)
        return ret;
    if (ret == -EBADMSG)
        return INDEXDIR_PRUNE_DAMAGED;
    if (i->version < DFX_STORE_VERSION)
        return INDEXDIR_PRUNE_FORMAT;
    if (i->version > DFX_STORE_VERSION)
        return -1; /* a newer npyfs's: not ours to judge */
    ret = verify_entry(d, e); /* the whole file against its checksum */
    if (ret == -ENOMEM)
        return ret;
    if (ret == -EBADMSG)
        return INDEXDIR_PRUNE_DAMAGED;
    if (i->path && stat(i->path, &st) == 0)
        return (uint64_t)st.st_dev != i->dev || (uint64_t)st.st_ino != i->ino ||
                       (uint64_t)st.st_size != i->size ||
                       (int64_t)st.st_mtim.tv_sec != i->mtime_sec ||
                       (uint32_t)st.st_mtim.tv_nsec != i->mtime_nsec
                   ? INDEXDIR_PRUNE_CHANGED
                   : -1;
    if (i->path && (errno == ENOENT || errno == ENOTDIR))
        return INDEXDIR_PRUNE_GONE;
    /* no path, or one that cannot be looked at (permissions, I/O) */
    return e->idle >= o->unused_secs ? INDEXDIR_PRUNE_UNUSED : -1;
}

/* Remove e for why; report it and count it. */
static void prune_one(struct indexdir *d, struct entry *e, enum indexdir_prune_why why,
                      const struct stat *keep,
                      void (*report)(const struct indexdir_prune_file *f, void *arg), void *arg,
                      struct indexdir_prune_result *res)
{
    int ret = remove_entry(d, e, keep);

    if (ret == -EBUSY)
        return; /* kept: open here, or just written */
    e->done = true;
    if (ret == -ESTALE)
        return; /* no longer what was listed: not counted either way */
    if (ret < 0) {
        res->failed++;
        if (!res->err)
            res->err = ret;
        return;
    }
    res->removed++;
    res->removed_bytes += e->bytes;
    if (report) {
        struct indexdir_prune_file f = {.name = e->name, .why = why, .bytes = e->bytes,
                                   .idle_secs = e->idle, .version = e->info.version,
                                   .path = e->info.path, .member = e->info.member,
                                   .member_len = e->info.member_len};
        report(&f, arg);
    }
}

static int by_mtime(const void *a, const void *b)
{
    const struct entry *x = *(struct entry *const *)a, *y = *(struct entry *const *)b;

    return x->mtime_ns < y->mtime_ns ? -1 : x->mtime_ns > y->mtime_ns;
}

/* The size cap: remove the least recently used index files left until the
 * rest take at most 90% of max. 0 or -ENOMEM. */
static int prune_to_size(struct indexdir *d, struct entry *e, size_t n, uint64_t max,
                         const struct stat *keep,
                         void (*report)(const struct indexdir_prune_file *f, void *arg), void *arg,
                         struct indexdir_prune_result *res)
{
    struct entry **order = malloc((n ? n : 1) * sizeof(*order));
    uint64_t total = 0, target = max - max / 10;
    size_t m = 0;

    if (!order)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (!e[i].done && e[i].kind == E_INDEX) {
            order[m++] = &e[i];
            total += e[i].bytes;
        }
    if (total > max) {
        qsort(order, m, sizeof(*order), by_mtime);
        for (size_t i = 0; i < m && total > target; i++) {
            prune_one(d, order[i], INDEXDIR_PRUNE_SIZE, keep, report, arg, res);
            if (order[i]->done)
                total -= order[i]->bytes;
        }
    }
    free(order);
    return 0;
}

/* indexdir_prune() with d->lock held; keep: the file a save has just
 * written, or NULL. Updates the size cap's count of the directory. */
static int prune_locked(struct indexdir *d, const struct indexdir_prune_opts *o,
                        const struct stat *keep,
                        void (*report)(const struct indexdir_prune_file *f, void *arg), void *arg,
                        struct indexdir_prune_result *res)
{
    struct entry *e;
    size_t n;
    int ret = list_dir(d, &e, &n);

    memset(res, 0, sizeof(*res));
    if (ret < 0)
        return ret;
    for (size_t i = 0; i < n && ret == 0; i++) {
        int why = e[i].kind == E_TEMP && e[i].idle >= TEMP_AGE ? INDEXDIR_PRUNE_TEMP
                  : o->sources ? source_verdict(d, &e[i], o)
                               : -1;
        if (why == -ENOMEM)
            ret = why;
        else if (why >= 0)
            prune_one(d, &e[i], (enum indexdir_prune_why)why, keep, report, arg, res);
        else if (e[i].kind == E_TEMP)
            e[i].done = true; /* a writer at work: neither counted nor removed */
    }
    if (ret == 0 && o->max)
        ret = prune_to_size(d, e, n, o->max, keep, report, arg, res);
    for (size_t i = 0; i < n; i++)
        if (!e[i].done && e[i].kind == E_INDEX) {
            res->kept++;
            res->kept_bytes += e[i].bytes;
        }
    if (ret == 0) {
        struct timespec now;

        clock_gettime(CLOCK_MONOTONIC, &now);
        d->counted = true;
        d->bytes = res->kept_bytes;
        d->counted_at = now.tv_sec;
    }
    entries_free(e, n);
    return ret;
}

/* Contract in indexdir.h. */
int indexdir_prune(struct indexdir *d, const struct indexdir_prune_opts *o,
                    void (*report)(const struct indexdir_prune_file *f, void *arg), void *arg,
                    struct indexdir_prune_result *res)
{
    int ret;

    pthread_mutex_lock(&d->lock);
    ret = prune_locked(d, o, NULL, report, arg, res);
    pthread_mutex_unlock(&d->lock);
    return ret;
}

/* After a save of the file saved (its stat): keep to the size cap, listing
 * the directory only when the count says it may be over (indexdir.h).
 * Best effort: a failure leaves the files as they are. */
static void prune_after_save(struct indexdir *d, const struct stat *saved)
{
    struct indexdir_prune_opts o = {.max = atomic_load(&d->max)};
    struct indexdir_prune_result res = {0};
    struct timespec now;

    if (o.max == 0)
        return;
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&d->lock);
    d->bytes += (uint64_t)saved->st_size;
    if (!d->counted || d->bytes > o.max || now.tv_sec - d->counted_at >= RESCAN_SECS)
        prune_locked(d, &o, saved, NULL, NULL, &res);
    pthread_mutex_unlock(&d->lock);
    if (res.removed) {
        atomic_fetch_add(&d->pruned_files, res.removed);
        atomic_fetch_add(&d->pruned_bytes, res.removed_bytes);
    }
}
