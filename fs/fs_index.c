/*
 * Persisted indexes for a mount, and `npyfs index` (contract in fs.h; the
 * file format is format/dfx_store.h's).
 *
 * A member is worth indexing if it is a deflate member bigger than one
 * spacing: anything smaller has no access point but the start. Each such
 * member moves through three states: NEW, LOADING (one thread is trying the
 * saved file; other openers wait), DONE. The index itself is never swapped:
 * a loaded file's points are imported into the member's live dfx index,
 * which readers may already be using (dfx_index_import() is safe for that).
 *
 * Building (background thread, `npyfs index`): a full pass over a twin index
 * of the member's stream, with windows kept compressed, so the member's live
 * index is not filled with raw windows meanwhile. The twin is saved, then
 * the saved file is loaded into the live index (mapped, not in RAM). Damage
 * the pass finds is copied into the live index, so reads fail with EIO.
 */
#define _GNU_SOURCE
#include "fs.h"

#include <errno.h>
#include <fuse_log.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "dfx_internal.h"
#include "dfx_store.h"

/* Output decoded per read of an indexing pass; the stop flag is checked
 * between reads, so this bounds how long unmount waits for the thread. */
#define PASS_READ (1u << 20)
/* The progress line is rewritten at most this often (seconds). */
#define PROGRESS_EVERY 0.25
/* ioprio_set(2): the calling thread, idle class. */
#define IOPRIO_WHO_PROCESS 1
#define IOPRIO_CLASS_IDLE 3
#define IOPRIO_CLASS_SHIFT 13

enum { ST_NEW, ST_LOADING, ST_DONE };

struct fs_indexer {
    struct fs_archive *a;     /* borrowed: outlives the indexer */
    char *dir;                /* owned: index directory, NULL without persistence */
    enum fs_index_mode mode;  /* immutable */
    pthread_mutex_t lock;     /* leaf lock, never held while loading or decoding */
    pthread_cond_t loaded;    /* broadcast when a member leaves ST_LOADING */
    unsigned char *state;     /* per member, protected by lock */
    bool *on_disk;            /* per member, protected by lock: saved or loaded */
    pthread_t thread;
    bool running;             /* the thread was started and not yet joined */
    atomic_bool stop;         /* set by fs_indexer_stop(): the thread ends */
};

/* Counts of output bytes for the progress line of `npyfs index`. */
struct progress {
    const char *label;
    uint64_t done, total;
    struct timespec start, last;
    bool tty;
};

static bool worth_indexing(const struct fs_archive *a, const struct fs_member *m)
{
    return m->kind == FS_DEFLATE && !m->unsupported && m->ix && m->size > a->spacing;
}

static void member_key(const struct fs_archive *a, const struct fs_member *m,
                       struct dfx_store_key *k)
{
    const struct dfx_stream *st = dfx_index_stream(m->ix);

    memset(k, 0, sizeof(*k));
    k->dev = (uint64_t)a->st.st_dev;
    k->ino = (uint64_t)a->st.st_ino;
    k->size = (uint64_t)a->st.st_size;
    k->mtime_sec = (int64_t)a->st.st_mtim.tv_sec;
    k->mtime_nsec = (uint32_t)a->st.st_mtim.tv_nsec;
    k->name = m->name;
    k->name_len = m->name_len;
    k->crc = st->framing == DFX_RAW ? st->crc : 0;
    k->stored_size = m->stored_size;
}

/* strerror() for code the FUSE threads and the indexer reach (GNU
 * strerror_r: no shared buffer). */
#define ERRSTR(err) strerror_r(-(err), (char[64]){0}, 64)

static const char *load_problem(int err)
{
    switch (err) {
    case -ESTALE:
        return "is stale (another archive, archive version or spacing)";
    case -EBADMSG:
        return "is damaged";
    default:
        return "cannot be read";
    }
}

/* Try the saved file for m; true if its points are now in m->ix. */
static bool load_saved(struct fs_archive *a, const char *dir, struct fs_member *m)
{
    struct dfx_store_key k;
    char *path = NULL;
    int ret;

    if (!dir)
        return false;
    member_key(a, m, &k);
    ret = dfx_store_load(dir, &k, m->ix);
    if (ret == -ENOENT || ret == -EBUSY)
        return false;
    dfx_store_path(dir, &k, &path);
    if (ret == 0)
        fuse_log(FUSE_LOG_INFO, "npyfs: %s: member '%s': index loaded from %s\n", a->path,
                 m->name, path ? path : dir);
    else
        fuse_log(FUSE_LOG_INFO, "npyfs: %s: member '%s': index %s %s (%s); rebuilding\n",
                 a->path, m->name, path ? path : dir, load_problem(ret), ERRSTR(ret));
    free(path);
    return ret == 0;
}

/* Contract in fs.h. */
void fs_indexer_use(struct fs_indexer *x, struct fs_member *m)
{
    size_t i;
    bool ok;

    if (!x || !worth_indexing(x->a, m))
        return;
    i = (size_t)(m - x->a->members);
    pthread_mutex_lock(&x->lock);
    while (x->state[i] == ST_LOADING)
        pthread_cond_wait(&x->loaded, &x->lock);
    if (x->state[i] == ST_DONE) {
        pthread_mutex_unlock(&x->lock);
        return;
    }
    x->state[i] = ST_LOADING;
    pthread_mutex_unlock(&x->lock);

    ok = load_saved(x->a, x->dir, m);

    pthread_mutex_lock(&x->lock);
    x->state[i] = ST_DONE;
    x->on_disk[i] = ok;
    pthread_cond_broadcast(&x->loaded);
    pthread_mutex_unlock(&x->lock);
}

/* ------------------------------------------------------------ progress --- */

static double seconds_since(const struct timespec *t)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

static void human(char *buf, size_t len, double bytes)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;

    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        u++;
    }
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
}

/* Rewrite the progress line in place (terminals only). */
static void progress_show(struct progress *p, bool force)
{
    char done[32], total[32], rate[32], eta[32] = "?";
    double el, r;

    if (!p || !p->tty || (!force && seconds_since(&p->last) < PROGRESS_EVERY))
        return;
    clock_gettime(CLOCK_MONOTONIC, &p->last);
    el = seconds_since(&p->start);
    r = el > 0 ? (double)p->done / el : 0;
    human(done, sizeof(done), (double)p->done);
    human(total, sizeof(total), (double)p->total);
    human(rate, sizeof(rate), r);
    if (r > 0 && p->total >= p->done)
        snprintf(eta, sizeof(eta), "%.0f s", (double)(p->total - p->done) / r);
    fprintf(stderr, "\r\033[Knpyfs: %s: indexed %s of %s, %s/s, ETA %s", p->label, done, total,
            rate, eta);
    fflush(stderr);
}

/* ------------------------------------------------------------ building --- */

/* Set the calling thread's CPU and I/O priority to idle: indexing must
 * only use time nothing else wants. Best effort. */
static void idle_priority(void)
{
    struct sched_param sp = {0};

    pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
    syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT);
}

/*
 * One full pass over m's stream into a new twin index whose windows are
 * kept compressed. Returns 0 and the complete twin in *out; -ECANCELED if
 * stop was raised; or the error (damage is also recorded in m->ix).
 */
static int build_twin(struct fs_archive *a, struct fs_member *m, atomic_bool *stop,
                      struct progress *pr, struct dfx_index **out)
{
    struct dfx_index *ix;
    struct dfx_reader *r = NULL;
    unsigned char *buf;
    uint64_t bad_from;
    int64_t n;
    int ret, err;

    *out = NULL;
    buf = malloc(PASS_READ);
    if (!buf)
        return -ENOMEM;
    ret = dfx_index_new(dfx_index_stream(m->ix), a->spacing, &ix);
    if (ret < 0)
        goto out_free_buf;
    dfx_index_compress_windows(ix, true);
    ret = dfx_reader_new(ix, 0, &r);
    while (ret == 0) {
        if (stop && atomic_load(stop)) {
            ret = -ECANCELED;
            break;
        }
        n = dfx_reader_read(r, buf, PASS_READ);
        if (n <= 0) {
            ret = (int)n;
            break;
        }
        if (pr) {
            pr->done += (uint64_t)n;
            progress_show(pr, false);
        }
    }
    dfx_reader_free(r);
    err = dfx_index_damage(ix, &bad_from);
    if (err)
        dfx_index_set_damage(m->ix, err, bad_from);
    if (ret == 0 && dfx_index_total(ix) != m->size)
        ret = -EIO; /* cannot happen for a checked stream; never save it */
    if (ret < 0) {
        dfx_index_free(ix);
        goto out_free_buf;
    }
    *out = ix;
out_free_buf:
    free(buf);
    return ret;
}

/* Put the points of a complete twin into m's live index (copies). */
static void adopt_twin(struct fs_member *m, struct dfx_index *twin)
{
    struct dfx_xpoint *pts;
    uint64_t total;
    size_t n;

    if (dfx_index_export(twin, &pts, &n, &total) < 0)
        return;
    dfx_index_import(m->ix, pts, n, total, DFX_IMPORT_COPY, NULL, NULL);
    free(pts);
}

static void log_damage(struct fs_archive *a, struct fs_member *m, int err)
{
    if (atomic_exchange(&m->logged, true))
        return;
    fuse_log(FUSE_LOG_ERR, "npyfs: %s: member '%s' is damaged (%s, found by the indexing "
             "pass); its reads fail with EIO\n", a->path, m->name, ERRSTR(err));
}

/* Save ix for m into the indexer's directory; logs the outcome. */
static int save(struct fs_indexer *x, struct fs_member *m, struct dfx_index *ix)
{
    struct dfx_store_key k;
    char *path = NULL;
    int ret;

    member_key(x->a, m, &k);
    ret = dfx_store_save(x->dir, &k, ix);
    dfx_store_path(x->dir, &k, &path);
    if (ret == 0)
        fuse_log(FUSE_LOG_INFO, "npyfs: %s: member '%s': index saved to %s\n", x->a->path,
                 m->name, path ? path : x->dir);
    else
        fuse_log(FUSE_LOG_ERR, "npyfs: %s: member '%s': cannot save index to %s: %s\n",
                 x->a->path, m->name, path ? path : x->dir, ERRSTR(ret));
    free(path);
    return ret;
}

/* Background work for member i: load, or build, save and load. */
static void background_member(struct fs_indexer *x, size_t i)
{
    struct fs_member *m = &x->a->members[i];
    struct dfx_index *twin;
    bool on_disk;
    int ret;

    fs_indexer_use(x, m);
    pthread_mutex_lock(&x->lock);
    on_disk = x->on_disk[i];
    pthread_mutex_unlock(&x->lock);
    if (on_disk || dfx_index_error(m->ix) || dfx_index_total(m->ix) != UINT64_MAX)
        return; /* done, damaged, or complete already (saved at unmount) */
    ret = build_twin(x->a, m, &x->stop, NULL, &twin);
    if (ret == -ECANCELED || ret == -ENOMEM)
        return;
    if (ret < 0) {
        log_damage(x->a, m, ret);
        return;
    }
    if (x->dir && save(x, m, twin) == 0) {
        dfx_index_free(twin);
        /* Map the file rather than keep the twin's windows in RAM. If reads
         * grew m->ix meanwhile, the load is refused and m->ix stays as is. */
        load_saved(x->a, x->dir, m);
        pthread_mutex_lock(&x->lock);
        x->on_disk[i] = true; /* the file is there: nothing to save at unmount */
        pthread_mutex_unlock(&x->lock);
        return;
    }
    adopt_twin(m, twin);
    dfx_index_free(twin);
}

static void *background_main(void *arg)
{
    struct fs_indexer *x = arg;

    idle_priority();
    for (size_t i = 0; i < x->a->count && !atomic_load(&x->stop); i++)
        if (worth_indexing(x->a, &x->a->members[i]))
            background_member(x, i);
    return NULL;
}

/* ------------------------------------------------------------- indexer --- */

/* Contract in fs.h. */
int fs_indexer_new(struct fs_archive *a, const struct fs_opts *opts, struct fs_indexer **out)
{
    struct fs_indexer *x;
    int ret;

    *out = NULL;
    x = calloc(1, sizeof(*x));
    if (!x)
        return -ENOMEM;
    x->a = a;
    x->mode = opts->index_mode;
    x->state = calloc(a->count ? a->count : 1, sizeof(*x->state));
    x->on_disk = calloc(a->count ? a->count : 1, sizeof(*x->on_disk));
    if (!x->state || !x->on_disk)
        goto out_nomem;
    if (opts->index_dir) {
        x->dir = strdup(opts->index_dir);
        ret = x->dir ? 0 : -ENOMEM;
    } else {
        ret = dfx_store_default_dir(&x->dir);
    }
    if (ret == -ENOMEM)
        goto out_nomem;
    if (ret == 0)
        ret = dfx_store_prepare_dir(x->dir);
    if (ret < 0) {
        fuse_log(FUSE_LOG_WARNING, "npyfs: %s: index directory %s is not usable (%s); "
                 "indexes will not be saved or loaded\n", a->path, x->dir ? x->dir : "(none: "
                 "no HOME)", ret == -EPERM ? "not owned by you, or writable by others"
                                            : strerror(-ret));
        free(x->dir);
        x->dir = NULL;
    }
    pthread_mutex_init(&x->lock, NULL);
    pthread_cond_init(&x->loaded, NULL);
    *out = x;
    return 0;

out_nomem:
    free(x->state);
    free(x->on_disk);
    free(x);
    return -ENOMEM;
}

/* Contract in fs.h. */
void fs_indexer_start(struct fs_indexer *x)
{
    int ret;

    if (!x || x->running || x->mode != FS_INDEX_BACKGROUND)
        return;
    ret = pthread_create(&x->thread, NULL, background_main, x);
    if (ret) {
        fuse_log(FUSE_LOG_ERR, "npyfs: %s: cannot start the background indexer: %s\n",
                 x->a->path, strerror(ret));
        return;
    }
    x->running = true;
}

/* Contract in fs.h. */
void fs_indexer_stop(struct fs_indexer *x)
{
    if (!x)
        return;
    if (x->running) {
        atomic_store(&x->stop, true);
        pthread_join(x->thread, NULL);
        x->running = false;
    }
    atomic_store(&x->stop, true);
    for (size_t i = 0; x->dir && i < x->a->count; i++) {
        struct fs_member *m = &x->a->members[i];
        bool on_disk;

        if (!worth_indexing(x->a, m))
            continue;
        pthread_mutex_lock(&x->lock);
        on_disk = x->on_disk[i];
        x->on_disk[i] = true; /* once */
        pthread_mutex_unlock(&x->lock);
        /* grown by reads to the end (or sized by a full pass at open) */
        if (!on_disk && dfx_index_total(m->ix) != UINT64_MAX && !dfx_index_error(m->ix) &&
            dfx_index_points(m->ix) > 1)
            save(x, m, m->ix);
    }
}

/* Contract in fs.h. */
void fs_indexer_free(struct fs_indexer *x)
{
    if (!x)
        return;
    fs_indexer_stop(x);
    pthread_mutex_destroy(&x->lock);
    pthread_cond_destroy(&x->loaded);
    free(x->state);
    free(x->on_disk);
    free(x->dir);
    free(x);
}

/* ---------------------------------------------------------- npyfs index --- */

static const char *index_problem(int err)
{
    switch (err) {
    case -EIO:
        return "is damaged (corrupt deflate data, or a CRC-32 or size mismatch)";
    case -ENOMEM:
        return "cannot be indexed: out of memory";
    default:
        return NULL;
    }
}

/* Index one member for `npyfs index`: reuse a valid file, save an index
 * completed at open, or build one. Returns 0 or the error. */
static int index_member(struct fs_indexer *x, struct fs_member *m, struct progress *pr)
{
    struct dfx_index *twin;
    bool worth = worth_indexing(x->a, m);
    int ret;

    if (worth && load_saved(x->a, x->dir, m)) {
        pr->done += m->size;
        return 0;
    }
    if (worth && dfx_index_total(m->ix) != UINT64_MAX && !dfx_index_error(m->ix)) {
        pr->done += m->size;
        return save(x, m, m->ix);
    }
    ret = build_twin(x->a, m, NULL, pr, &twin);
    if (ret < 0)
        return ret;
    if (worth)
        ret = save(x, m, twin);
    dfx_index_free(twin);
    return ret;
}

static void print_member_error(const struct fs_archive *a, const struct fs_member *m, int err,
                               const char *dir, int more)
{
    const char *what = index_problem(err);
    char tail[48] = "";

    if (more)
        snprintf(tail, sizeof(tail), " (and %d more member%s)", more, more > 1 ? "s" : "");
    if (what)
        fprintf(stderr, "npyfs: %s: member '%s' %s%s\n", a->path, m->name, what, tail);
    else
        fprintf(stderr, "npyfs: %s: member '%s': cannot save its index in %s: %s%s\n", a->path,
                m->name, dir, strerror(-err), tail);
}

/* The index directory for `npyfs index`; prints why when there is none. */
static char *index_dir_for(const struct fs_archive *a, const struct fs_opts *opts)
{
    char *dir = NULL;
    int ret = opts->index_dir ? 0 : dfx_store_default_dir(&dir);

    if (ret == 0 && opts->index_dir && !(dir = strdup(opts->index_dir)))
        ret = -ENOMEM;
    if (ret == 0)
        ret = dfx_store_prepare_dir(dir);
    if (ret == 0)
        return dir;
    if (ret == -ENOENT && !dir)
        fprintf(stderr, "npyfs: %s: no index directory: set HOME or XDG_CACHE_HOME, or give "
                "-o index_dir=DIR\n", a->path);
    else
        fprintf(stderr, "npyfs: %s: index directory %s: %s\n", a->path, dir ? dir : "",
                ret == -EPERM ? "not owned by you, or writable by others" : strerror(-ret));
    free(dir);
    return NULL;
}

/* `npyfs index` reports by itself; the daemon's log lines stay silent. */
static void quiet_log(enum fuse_log_level level, const char *fmt, va_list ap)
{
    (void)level;
    (void)fmt;
    (void)ap;
}

/* Contract in fs.h. */
int fs_index_main(struct fs_archive *a, const struct fs_opts *opts)
{
    struct fs_indexer x = {.a = a, .mode = FS_INDEX_LAZY};
    struct progress pr = {.label = a->path, .tty = isatty(2)};
    struct fs_member *first_bad = NULL;
    int first_err = 0, nbad = 0;

    x.dir = index_dir_for(a, opts);
    if (!x.dir)
        return 1;
    for (size_t i = 0; i < a->count; i++)
        if (a->members[i].kind == FS_DEFLATE && !a->members[i].unsupported)
            pr.total += a->members[i].size;
    clock_gettime(CLOCK_MONOTONIC, &pr.start);
    pr.last = pr.start;
    fuse_set_log_func(quiet_log);
    for (size_t i = 0; i < a->count; i++) {
        struct fs_member *m = &a->members[i];
        int ret;

        if (m->kind != FS_DEFLATE || m->unsupported)
            continue;
        ret = index_member(&x, m, &pr);
        if (ret < 0 && !first_bad) {
            first_bad = m;
            first_err = ret;
        } else if (ret < 0) {
            nbad++;
        }
    }
    fuse_set_log_func(NULL);
    if (pr.tty) {
        progress_show(&pr, true);
        fprintf(stderr, " (%.1f s)\n", seconds_since(&pr.start));
    }
    if (first_bad)
        print_member_error(a, first_bad, first_err, x.dir, nbad);
    free(x.dir);
    return first_bad ? 1 : 0;
}
