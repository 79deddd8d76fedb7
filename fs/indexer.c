/*
 * Persisted indexes for a mount, and `npyfs index` (contract in indexer.h; the
 * files are format/dfx_store.h's, kept in fs/indexdir.h's directory).
 *
 * A member is worth indexing if it has a CRC-32 to check: every deflate
 * member, and the stored members of a zip. Its first full pass checks that
 * CRC and builds the member's chunk CRC table (dfx_crcs.h), against which
 * every later decode or stored read is checked (member.c). A member
 * bigger than one chunk also gets a saved file: its access points (a stored
 * member has none) and its table. Each such member moves through three
 * states: NEW, LOADING (one thread is trying the saved file; other openers
 * wait), DONE. The index itself is never swapped: a loaded file's points are
 * imported into the member's live dfx index, which readers may already be
 * using (dfx_index_import() is safe for that), and its table is published
 * in the member.
 *
 * Building (background thread, `npyfs index`, the first open under
 * verify=strict): a full pass over a twin index of the member's stream; a
 * stored member's pass preads it. With an index directory, the twin sends
 * each window to the index file being written as its point is recorded
 * (indexdir_begin(), a sink), so it holds only point positions; the table
 * is published, the file finished, then loaded into the live index (whose
 * windows then stay in the file until a reader needs one, and whose own
 * windows recorded by reads are released). Without a directory, the twin
 * keeps its windows compressed in memory, within the mount's window budget
 * (fs_window_budget), and hands them to the live index at the end. Damage
 * the pass finds is copied into the live index, so reads fail with EIO. One
 * pass per member at a time (passing[]). The background pass stands still
 * while reads decode a member for the first time (yield_to_reads()).
 *
 * The key of a gzip member holds its last trailer, read when the indexer
 * is set up (as the archive is opened); a gzip member's file is saved and
 * loaded only with its chunk table (dfx_store.h says why). Every file
 * records the archive's absolute path (realpath() when the indexer is set
 * up), for `npyfs index --prune`. A saved file built with another spacing
 * is used as it is (its points are valid; the spacing only decides where
 * a pass puts new ones), said at debug level; `npyfs index -o spacing=`
 * rebuilds it with the spacing asked for.
 *
 * Progress of a pass, for `npyfs stats`: the pass publishes its start time
 * and the bytes it has checked in the member (pass_start_ns, pass_done:
 * atomics, no lock).
 *
 * An open that must wait for a pass (verify=strict, or verify=auto up to
 * verify_max) does not wait in its handler thread: it queues its request
 * on the member (waiting[], indexer_await()) and returns. The first one
 * starts the pass as a job of the opener pool unless one runs already (the
 * background thread's, say); the pass wakes every waiter of that member as
 * soon as the table is published (publish()), before the file is finished,
 * and its end wakes any left (pass_end()). A pass run for an open keeps its
 * twin's windows raw (compressing them would slow the pass the open waits
 * for; they are compressed as the file is finished) and feeds the chunk
 * cache when the member fits a quarter of it: nobody can read the member
 * before its pass ends (every open waits), a failing pass condemns all of
 * it (and drops what it inserted), so the reads that follow a good pass are
 * cache hits instead of a second decode.
 */
#define _GNU_SOURCE

#include "indexer.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_log.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "archive.h"
#include "bsrc.h"
#include "cache.h"
#include "dfx_internal.h"
#include "dfx_store.h"
#include "escape.h"
#include "fs.h"
#include "gz.h"
#include "indexdir.h"
#include "member.h"
#include "net.h"
#include "options.h"
#include "verify.h"

/* A mount may open many archives, each with its own indexer: their
 * background passes run one at a time, in the order they get pass_lock.
 * A waiting thread also wakes when its stop flag is raised (see
 * indexer_cancel()). */
static pthread_mutex_t pass_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pass_free = PTHREAD_COND_INITIALIZER; /* pass_busy cleared or a stop */
static bool pass_busy;                                        /* protected by pass_lock */

/* A pass an open waits for keeps its twin's windows raw (compressing one
 * costs about 0.1 ms, 0.25 ms without ISA-L) if they take this much memory
 * at most, for the length of the pass: members up to 1024 spacings. */
#define RAW_WINDOWS_MAX (32ull << 20)
/* A background pass waits while reads extend indexes, until they have
 * extended none for this long (yield_to_reads()). */
#define YIELD_QUIET_MS 20
/* The progress line is rewritten at most this often (seconds). */
#define PROGRESS_EVERY 0.25
/* ioprio_set(2): the calling thread, idle class. */
#define IOPRIO_WHO_PROCESS 1
#define IOPRIO_CLASS_IDLE 3
#define IOPRIO_CLASS_SHIFT 13

enum { ST_NEW, ST_LOADING, ST_DONE };

struct indexer {
    struct archive *a;     /* borrowed: outlives the indexer */
    struct indexdir *dir; /* owned: index directory, NULL without persistence */
    char *source_path;        /* owned, immutable: the archive's absolute path for
                               * the files' record, or NULL */
    uint32_t gz_crc, gz_isize; /* immutable: a gzip file's last trailer (key) */
    enum options_index mode;  /* immutable */
    pthread_mutex_t lock;     /* never held while loading or decoding; only a dfx
                               * index's own lock is taken under it */
    pthread_cond_t loaded;    /* broadcast when a member leaves ST_LOADING or a
                               * pass ends */
    unsigned char *state;     /* per member, protected by lock */
    bool *on_disk;            /* per member, protected by lock: saved or loaded */
    bool *passing;            /* per member, protected by lock: a full pass runs */
    struct defer_waiter **waiting; /* per member, protected by lock: opens waiting for
                                 * the pass (only while passing) */
    const struct options *opts; /* borrowed; NULL for `npyfs index` */
    uint64_t spacing;         /* immutable: of the indexes built here (spacing_for()) */
    struct defer *defer;   /* borrowed: the pool passes for opens run in, or NULL */
    struct cache *cache;      /* borrowed: fed by those passes, or NULL */
    pthread_t thread;
    bool running;             /* the thread was started and not yet joined */
    atomic_bool stop;         /* set by indexer_stop(): the thread ends */
    /* A published index (see fetch_published()): its members' files, in
     * memory, and where it came from (for log lines, no secret). An
     * entry's data is protected by lock (taken, NULL, by the load that
     * uses it); the rest is immutable after indexer_new(). */
    struct pub_file *pub;     /* owned, npub of them */
    size_t npub;
    char *pub_from;           /* owned */
};

/* One member's file of a published index, in memory. */
struct pub_file {
    char *name;          /* owned: the member's name (name_len bytes, then a NUL) */
    size_t name_len;
    unsigned char *data; /* owned: the file, len bytes; NULL once a load took it */
    size_t len;
};

/* Counts of output bytes for the progress line of `npyfs index`. */
struct progress {
    const char *label;
    uint64_t done, total;
    struct timespec start, last;
    bool tty;
};

/* Contract in indexer.h (indexer_indexable()). */
static bool worth_indexing(const struct archive *a, const struct archive_member *m)
{
    if (m->is_dir || m->size == 0)
        return false;
    if (!archive_located(m)) /* told once it is (archive_locate()) */
        return m->kind == ARCHIVE_DEFLATE || a->kind == ARCHIVE_ZIP;
    if (m->unsupported)
        return false;
    return m->kind == ARCHIVE_DEFLATE ? m->ix != NULL : a->kind == ARCHIVE_ZIP;
}

/* Contract in indexer.h. */
bool indexer_indexable(const struct archive *a, const struct archive_member *m)
{
    return worth_indexing(a, m);
}

/* Does m get a saved file? One chunk or less: its table is one CRC, and the
 * pass that builds it is quick. */
static bool worth_saving(const struct archive *a, const struct archive_member *m)
{
    return worth_indexing(a, m) && m->size > FS_CHUNK_SIZE;
}

static bool has_table(struct archive_member *m)
{
    return atomic_load(&m->crcs) != NULL;
}

static bool damaged(struct archive_member *m)
{
    uint64_t bad_from;

    return archive_damage(m, &bad_from) < 0;
}

/* "cannot save" and "not usable" are said once per mount (process), however
 * many archives (indexers) it has. */
static atomic_bool said_unusable, said_cannot_save;

/* A gzip file's last trailer for its members' keys; read as the archive is
 * opened (the indexer is set up then), so the key describes the content the
 * mount reads. Zeros if it cannot be read (the archive would not open). */
static void read_trailer(struct indexer *x)
{
    if (x->a->kind == ARCHIVE_GZIP &&
        gz_last_trailer(x->a->src, &x->gz_crc, &x->gz_isize) < 0)
        x->gz_crc = x->gz_isize = 0;
}

static void member_key(const struct indexer *x, const struct archive_member *m,
                       struct dfx_store_key *k)
{
    const struct archive *a = x->a;
    const struct dfx_stream *st =
        archive_located(m) && m->ix ? dfx_index_stream(m->ix) : NULL;

    memset(k, 0, sizeof(*k));
    bsrc_key(a->bs, k); /* the archive's identity: a file's, or URL + ETag + size */
    k->name = m->name;
    k->name_len = m->name_len;
    if (st && st->framing == DFX_GZIP) {
        k->crc = x->gz_crc;
        k->isize = x->gz_isize;
    } else {
        k->crc = st ? st->crc : m->crc32;
    }
    k->stored_size = m->stored_size;
    k->path = x->source_path;
}

/* The archive's absolute path for the index files' record (owned), or
 * NULL: its real path, else the path as given if that is absolute. None
 * for a remote archive: a URL is no path pruning could check (its files
 * are pruned when unused), and it may carry a secret query. */
static char *source_path(const struct archive *a)
{
    char *p;

    if (bsrc_is_remote(a->bs))
        return NULL;
    p = realpath(a->path, NULL);

    if (!p && a->path[0] == '/')
        p = strdup(a->path);
    return p;
}

/* The key a published index (npyfs index -o index_out=) holds for m: the
 * member's own fields and the archive's size, but none of the identity of
 * the copy it was built from (device, inode, mtime; URL, ETag), so that an
 * index built from a local file serves the same archive uploaded anywhere.
 * The member's CRC-32 (a gzip file's last trailer) and sizes tell another
 * archive; every chunk read is then checked against the file's table. */
static void portable_key(const struct indexer *x, const struct archive_member *m,
                         struct dfx_store_key *k)
{
    member_key(x, m, k);
    k->path = NULL; /* nothing of the publisher's file system */
    k->dev = k->ino = 0;
    k->mtime_sec = 0;
    k->mtime_nsec = 0;
    k->size = bsrc_ident(x->a->bs)->size;
}

/* strerror() for code the FUSE threads and the indexer reach (GNU
 * strerror_r: no shared buffer). */
#define ERRSTR(err) strerror_r(-(err), (char[64]){0}, 64)

static const char *load_problem(int err)
{
    switch (err) {
    case -ESTALE:
        return "is stale (another archive, archive version or content, or format)";
    case -EBADMSG:
        return "is damaged";
    default:
        return "cannot be read";
    }
}

/* The spacing of the indexes built here (indexer.h, INDEXER_SPACING), set
 * once x->dir is: without an index directory their windows stay in memory,
 * as those reads record, at the mount's spacing. */
static uint64_t spacing_for(const struct indexer *x, const struct options *opts)
{
    return opts->spacing_given || !x->dir ? opts->spacing : INDEXER_SPACING;
}


static int save(struct indexer *x, struct archive_member *m, struct dfx_index *ix);

/* Take the published file of member m (its bytes: *len of them; owned by
 * the caller), or NULL. */
static unsigned char *take_published(struct indexer *x, const struct archive_member *m,
                                     size_t *len)
{
    unsigned char *data = NULL;

    pthread_mutex_lock(&x->lock);
    for (size_t i = 0; i < x->npub && !data; i++) {
        if (x->pub[i].data && x->pub[i].name_len == m->name_len &&
            memcmp(x->pub[i].name, m->name, m->name_len) == 0) {
            data = x->pub[i].data;
            *len = x->pub[i].len;
            x->pub[i].data = NULL;
        }
    }
    pthread_mutex_unlock(&x->lock);
    return data;
}

/* A published file as the source a loaded index reads windows from: the
 * bytes and the source over them, freed together. */
struct pub_src {
    struct src *src;
    unsigned char *data;
};

static void pub_release(void *arg)
{
    struct pub_src *p = arg;

    src_free(p->src);
    free(p->data);
    free(p);
}

/* Try m's file in the published index; true if its points are now in
 * m->ix (a stored member: its table in m). A good file is saved in the
 * index directory too, under the archive's own key, so that the next
 * mount finds it there without a request. */
static bool load_published(struct indexer *x, struct archive_member *m)
{
    struct dfx_store_key k;
    struct dfx_crcs *t = NULL;
    struct pub_src *p;
    size_t len = 0;
    unsigned char *data = take_published(x, m, &len);
    int ret;

    if (!data)
        return false;
    p = calloc(1, sizeof(*p));
    ret = p ? src_mem_new(data, len, &p->src) : -ENOMEM;
    if (ret < 0) {
        free(p);
        free(data);
        return false;
    }
    p->data = data;
    portable_key(x, m, &k);
    /* the index keeps the bytes (it reads windows from them) until it is
     * freed, and releases them then; a stored member's file is not kept */
    ret = dfx_store_load(p->src, &k, m->ix, FS_CHUNK_SIZE, atomic_load(&m->crcs), &t, NULL,
                         m->ix ? pub_release : NULL, p);
    if (ret < 0 || !m->ix)
        pub_release(p);
    if (ret == 0 && t)
        archive_set_crcs(m, t);
    if (ret < 0) {
        fuse_log(FUSE_LOG_WARNING, "npyfs: %s: member '%s': the published index %s %s (%s); "
                 "not used\n", x->a->name, m->name, x->pub_from, load_problem(ret),
                 ERRSTR(ret));
        return false;
    }
    fuse_log(FUSE_LOG_INFO, "npyfs: %s: member '%s': index loaded from the published index %s\n",
             x->a->name, m->name, x->pub_from);
    if (x->dir && atomic_load(&m->crcs))
        save(x, m, m->ix);
    return true;
}

/* Reading the windows of a member's loaded index file into memory, in the
 * opener pool (dfx_index_cache_windows()): a random read then starts
 * without reading the file (a disk read, or worse on a network home
 * directory). Windows loaded so take at most half of index_mem, so that
 * points recorded by reads keep room; under pressure the index frees the
 * copies, and the windows are read from the file again. One job at a time
 * for the whole process drains a queue of members, so that reading windows
 * never holds more than one of the pool's threads, which opens need. */
struct cache_entry {
    struct cache_entry *next;
    struct indexer *x;
    struct archive_member *m;
};

static pthread_mutex_t caching_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cache_entry *caching_queue; /* protected by caching_lock: oldest first */
static bool caching_job_queued;           /* protected by caching_lock */

/* Empty the queue (the pool is stopping, or did not take the job). */
static void caching_clear(void)
{
    struct cache_entry *e;

    pthread_mutex_lock(&caching_lock);
    e = caching_queue;
    caching_queue = NULL;
    caching_job_queued = false;
    pthread_mutex_unlock(&caching_lock);
    while (e) {
        struct cache_entry *next = e->next;
        free(e);
        e = next;
    }
}

static void caching_run(struct defer_job *j)
{
    for (;;) {
        struct cache_entry *e;
        uint64_t half = fs_window_budget.limit / 2, used;

        pthread_mutex_lock(&caching_lock);
        e = caching_queue;
        if (e)
            caching_queue = e->next;
        else
            caching_job_queued = false;
        pthread_mutex_unlock(&caching_lock);
        if (!e)
            break;
        used = atomic_load(&fs_window_budget.used);
        if (used < half && !atomic_load(&e->x->stop))
            dfx_index_cache_windows(e->m->ix, half - used, &e->x->stop);
        free(e);
    }
    free(j);
}

static void caching_cancel(struct defer_job *j)
{
    caching_clear();
    free(j);
}

/* Queue m's windows (nothing without a pool: `npyfs index` reads no member
 * at random). */
static void cache_windows_later(struct indexer *x, struct archive_member *m)
{
    struct cache_entry *e, **pp;
    struct defer_job *j = NULL;
    bool submit;

    if (!x->defer || !m->ix || atomic_load(&x->stop) || !(e = calloc(1, sizeof(*e))))
        return;
    e->x = x;
    e->m = m;
    pthread_mutex_lock(&caching_lock);
    for (pp = &caching_queue; *pp; pp = &(*pp)->next)
        ;
    *pp = e;
    submit = !caching_job_queued;
    caching_job_queued = true;
    pthread_mutex_unlock(&caching_lock);
    if (!submit)
        return;
    j = calloc(1, sizeof(*j));
    if (j) {
        j->run = caching_run;
        j->cancel = caching_cancel;
    }
    if (!j || defer_submit(x->defer, j) < 0) {
        free(j);
        caching_clear();
    }
}

/* Try the saved file for m, then its file in the published index; true
 * if its points are now in m->ix (a stored member: its table in m). A
 * table in the file is published in m. *spacing (may be NULL) gets the
 * spacing the saved file was built with (not set for a published one).
 * own: the file is the one this mount just saved (its "saved to" line
 * said where), so its load is not logged again. */
static bool load_file(struct indexer *x, struct archive_member *m, uint64_t *spacing, bool own)
{
    struct dfx_store_key k;
    struct dfx_crcs *t = NULL;
    char *path = NULL;
    uint64_t built = 0;
    int ret;

    if (!x->dir)
        return load_published(x, m);
    member_key(x, m, &k);
    /* A table m has already (a gzip file sized by a full pass at open) must
     * be the file's: otherwise the file describes other content. */
    ret = indexdir_load(x->dir, &k, m->ix, FS_CHUNK_SIZE, atomic_load(&m->crcs), &t, &built);
    if (ret == 0 && t)
        archive_set_crcs(m, t);
    if (ret == 0 && spacing)
        *spacing = built;
    if (ret == -ENOENT)
        return load_published(x, m);
    if (ret == -EBUSY)
        return false;
    indexdir_file_path(x->dir, &k, &path);
    if (ret == 0 && !own)
        fuse_log(FUSE_LOG_INFO, "npyfs: %s: member '%s': index loaded from %s\n", x->a->name,
                 m->name, path ? path : indexdir_path(x->dir));
    if (ret == 0)
        cache_windows_later(x, m);
    if (ret == 0 && m->ix && built != x->spacing)
        fuse_log(FUSE_LOG_DEBUG, "npyfs: %s: member '%s': the saved index was built with "
                 "spacing %" PRIu64 "K, this mount's is %" PRIu64 "K: used as it is\n",
                 x->a->name, m->name, built >> 10, x->spacing >> 10);
    else if (ret < 0)
        fuse_log(FUSE_LOG_INFO, "npyfs: %s: member '%s': index %s %s (%s); rebuilding\n",
                 x->a->name, m->name, path ? path : indexdir_path(x->dir),
                 load_problem(ret), ERRSTR(ret));
    free(path);
    return ret == 0 || load_published(x, m);
}

static bool load_saved(struct indexer *x, struct archive_member *m)
{
    return load_file(x, m, NULL, false);
}

/* Contract in indexer.h. */
void indexer_use(struct indexer *x, struct archive_member *m)
{
    size_t i;
    bool ok;

    if (!x || !worth_saving(x->a, m))
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

    ok = load_saved(x, m);

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

/* build_twin()'s progress: the member's pass progress, the progress line
 * of `npyfs index` (pr, may be NULL) by what each read added, and a
 * background pass's pause while reads extend an index (yield: the
 * indexer, else NULL; seen: fs_frontier_moves at the last read). */
struct twin_progress {
    struct archive_member *m;
    struct progress *pr;
    uint64_t last;
    struct indexer *yield;
    uint64_t seen;
};

/* Does an open wait for the pass over m? */
static bool awaited(struct indexer *x, const struct archive_member *m)
{
    size_t i = (size_t)(m - x->a->members);
    bool any;

    if (!x->waiting)
        return false;
    pthread_mutex_lock(&x->lock);
    any = x->waiting[i] != NULL;
    pthread_mutex_unlock(&x->lock);
    return any;
}

/*
 * A background pass stands still while reads extend the index of any
 * member of the mount (fs_frontier_moves moved since the pass's last
 * read): a reader decoding a stream for the first time does what this
 * pass does (for m itself, the very same work), and the two decoders
 * would share the machine: on 2 cores the reader's first pass took about
 * 12% longer with the pass running. It goes on once no read extended an
 * index for YIELD_QUIET_MS, for good when an open waits for it, or at a
 * stop. Reads extend each index at most to its member's end, so the waits
 * end. Passes an open waits for, and `npyfs index`, never wait.
 */
static void yield_to_reads(struct twin_progress *tp)
{
    struct indexer *x = tp->yield;
    uint64_t f = atomic_load_explicit(&fs_frontier_moves, memory_order_relaxed);

    if (f == tp->seen)
        return;
    archive_pass_wait(tp->m, true);
    while (f != tp->seen) {
        const struct timespec quiet = {.tv_nsec = YIELD_QUIET_MS * 1000000L};

        if (atomic_load(&x->stop) || awaited(x, tp->m)) {
            tp->yield = NULL;
            break;
        }
        tp->seen = f;
        nanosleep(&quiet, NULL);
        f = atomic_load_explicit(&fs_frontier_moves, memory_order_relaxed);
    }
    archive_pass_wait(tp->m, false);
}

static void twin_progress(void *arg, uint64_t done)
{
    struct twin_progress *tp = arg;

    archive_pass_progress(tp->m, done);
    if (tp->pr) {
        tp->pr->done += done - tp->last;
        tp->last = done;
        progress_show(tp->pr, false);
    }
    if (tp->yield)
        yield_to_reads(tp);
}

/*
 * One full pass over m's stream into a new twin index with points spacing
 * apart, building the chunk CRC table of its output on the way; with yield
 * (x, else NULL), a background pass, it waits while reads extend indexes.
 * The twin's windows go to w (an index file being written) if there is one and
 * raw_windows is false; otherwise they stay in the twin, raw (raw_windows:
 * faster; RAW_WINDOWS_MAX at most in RAM until the file is finished, which
 * compresses them) or compressed
 * within the mount's window budget. With feed, every chunk goes into that
 * cache as it decodes (see the top of the file: only for a member no reader
 * can have open yet); a pass that fails drops them. Returns 0 with the
 * complete twin in *out and the table in *crcs (owned), which the reader's
 * checks at the end (CRC-32, sizes) vouch for; -ECANCELED if stop was
 * raised; or the error (damage is also recorded in m->ix).
 */
static int build_twin(struct archive *a, struct archive_member *m, uint64_t spacing,
                      atomic_bool *stop, struct progress *pr, struct indexer *yield,
                      struct indexdir_writer *w, struct cache *feed, bool raw_windows,
                      struct dfx_index **out, struct dfx_crcs **crcs)
{
    struct twin_progress tp = {
        .m = m, .pr = pr, .yield = yield,
        .seen = atomic_load_explicit(&fs_frontier_moves, memory_order_relaxed)};
    struct dfx_index *ix;
    struct dfx_reader *r = NULL;
    struct dfx_crcs *t = NULL;
    struct dfx_damage dmg;
    int64_t n;
    int ret, err;

    *out = NULL;
    *crcs = NULL;
    ret = dfx_index_new(dfx_index_stream(m->ix), spacing, &ix);
    if (ret < 0)
        return ret;
    if (w && !raw_windows) {
        struct dfx_sink sink;

        indexdir_sink(w, &sink);
        dfx_index_set_sink(ix, &sink);
    } else {
        dfx_index_compress_windows(ix, !raw_windows);
    }
    archive_pass_begin(m);
    ret = dfx_reader_new(ix, 0, &r);
    if (ret == 0) {
        /* the stop flag is checked before every read: it bounds how long
         * unmount waits for the thread */
        n = verify_pass(&(struct verify_input){.r = r, .size = m->size, .stop = stop,
                                               .progress = twin_progress, .arg = &tp,
                                               .feed = feed, .owner = m->id},
                        NULL, 0, &t);
        ret = n < 0 ? (int)n : 0;
    }
    dfx_reader_free(r);
    archive_pass_end(m);
    /* If the archive changed during the pass (checked after its last read,
     * which vouches for every read before it: archive_check()), its
     * bytes may mix old and new content: nothing of it is published or
     * saved, and an error it met is the change, not damage. */
    if (ret != -ECANCELED && archive_check(a) < 0) {
        dfx_index_free(ix);
        ret = -EIO;
        goto out_free;
    }
    /* No byte of a member whose full pass fails can be vouched for: a
     * flipped bit may decode to wrong bytes well before the error, and there
     * is no table yet to tell. So the damage condemns all of it. */
    dfx_index_damage_info(ix, &dmg);
    err = dmg.error;
    if (err) {
        dmg.from = 0;
        archive_condemn(m, &dmg);
    }
    if (ret == 0 && dfx_index_total(ix) != m->size)
        ret = -EIO; /* cannot happen for a checked stream; never save it */
    if (ret < 0) {
        if (feed)
            cache_drop_owner(feed, m->id); /* unchecked: never to be served */
        dfx_index_free(ix);
        goto out_free;
    }
    *out = ix;
    *crcs = t;
    t = NULL;
out_free:
    free(t);
    return ret;
}

/* Why a save failed, in words: -EEXIST is indexdir_finish()'s refusal to
 * replace what npyfs did not write. */
static const char *save_problem(int err, char *buf, size_t len)
{
    return err == -EEXIST ? "something npyfs did not write is there (a symlink, a FIFO, or "
                            "another user's file)"
                          : strerror_r(-err, buf, len);
}

static void log_damage(struct archive *a, struct archive_member *m, int err)
{
    archive_log_damage(a, m, "by the indexing pass", err);
}

/* Log what the saves pruned to keep the index directory within its size
 * cap (-o index_max=), if anything. */
static void log_pruned(struct indexdir *d)
{
    uint64_t files, bytes;

    indexdir_take_pruned(d, &files, &bytes);
    if (files)
        fuse_log(FUSE_LOG_INFO, "npyfs: index directory %s: removed %" PRIu64 " least recently "
                 "used index file%s (%" PRIu64 " bytes) to stay within index_max\n",
                 indexdir_path(d), files, files == 1 ? "" : "s", bytes);
}

/* Log the outcome of saving m's file (a failure once per mount: a full or
 * broken directory fails every save the same way). Returns ret. */
static int log_save(struct indexer *x, struct archive_member *m, const struct dfx_store_key *k,
                    int ret)
{
    const char *dir = indexdir_path(x->dir);
    char *path = NULL;

    indexdir_file_path(x->dir, k, &path);
    if (ret == 0)
        fuse_log(FUSE_LOG_INFO, "npyfs: %s: member '%s': index saved to %s\n", x->a->name,
                 m->name, path ? path : dir);
    if (ret == 0)
        log_pruned(x->dir);
    else if (!atomic_exchange(&said_cannot_save, true))
        fuse_log(FUSE_LOG_ERR, "npyfs: %s: member '%s': cannot save index to %s: %s "
                 "(further save failures of this mount are not logged)\n",
                 x->a->name, m->name, path ? path : dir, save_problem(ret, (char[64]){0}, 64));
    free(path);
    return ret;
}

/* Save ix (NULL for a stored member; its windows are copied out of it) and
 * m's chunk CRC table, if it has one, into the indexer's directory. */
static int save(struct indexer *x, struct archive_member *m, struct dfx_index *ix)
{
    struct dfx_store_key k;

    member_key(x, m, &k);
    return log_save(x, m, &k, indexdir_save(x->dir, &k, ix, atomic_load(&m->crcs)));
}

static int saved_as(int save_ret)
{
    return save_ret == 0 ? 1 : save_ret;
}

/* How a pass runs: its stop flag (may be NULL), the progress of `npyfs
 * index` (may be NULL), the cache to feed (may be NULL), whether the
 * twin keeps raw windows (see build_twin()), and whether it yields to
 * reads (yield_to_reads(): the background pass). */
struct pass_how {
    atomic_bool *stop;
    struct progress *pr;
    struct cache *feed;
    bool raw_windows;
    bool yield;
};

static void publish(struct indexer *x, struct archive_member *m);

/*
 * The full pass over m (see the top of the file): builds and publishes its
 * chunk CRC table, checking its CRC-32 (and wakes the opens waiting for it
 * at once: they need only the table); saves its file if it is worth one
 * and there is a directory (*saved: 1 saved, 0 not tried, or the save's
 * negative errno); a deflate member's live index gets the twin's points
 * (from the saved file, or moved over with their windows). Damage is
 * recorded in m. The caller keeps other passes over m away. A deflate member's chunks go into how->feed as they decode
 * (build_twin()), if not NULL. Returns 0 (m has its table) or the error.
 */
static int run_pass(struct indexer *x, struct archive_member *m, const struct pass_how *how,
                    int *saved)
{
    struct indexdir_writer *w = NULL;
    struct dfx_store_key k;
    struct dfx_index *twin;
    struct dfx_crcs *t;
    bool worth = x->dir && worth_saving(x->a, m);
    int ret;

    *saved = 0;
    if (m->kind == ARCHIVE_STORED) {
        ret = member_scan_stored(x->a, m, how->stop);
        if (how->pr) {
            how->pr->done += m->size;
            progress_show(how->pr, false);
        }
        if (ret == 0)
            publish(x, m);
        if (ret == 0 && worth)
            *saved = saved_as(save(x, m, NULL));
        return ret;
    }
    if (worth) {
        member_key(x, m, &k);
        ret = indexdir_begin(x->dir, &k, x->spacing, &w);
        if (ret < 0)
            *saved = log_save(x, m, &k, ret); /* the pass goes on without a file */
    }
    ret = build_twin(x->a, m, x->spacing, how->stop, how->pr, how->yield ? x : NULL, w,
                     how->feed, how->raw_windows, &twin, &t);
    if (ret < 0) {
        indexdir_abort(w);
        return ret;
    }
    archive_set_crcs(m, t); /* from now on reads are checked */
    publish(x, m); /* the opens waiting need only the table */
    if (w) {
        *saved = saved_as(log_save(x, m, &k, indexdir_finish(w, twin, atomic_load(&m->crcs))));
        dfx_index_free(twin); /* its windows are in the file (or lost with it) */
        /* The live index takes the file's points, and drops the windows
         * reads recorded: from now on windows cost no memory. */
        if (*saved == 1)
            load_file(x, m, NULL, true);
        return 0;
    }
    dfx_index_adopt(m->ix, twin); /* frees twin */
    return 0;
}

/* Mark a pass over member i as running; false if one already is. */
static bool pass_begin(struct indexer *x, size_t i)
{
    bool ok;

    pthread_mutex_lock(&x->lock);
    ok = !x->passing[i];
    x->passing[i] = true;
    pthread_mutex_unlock(&x->lock);
    return ok;
}

/* The pass over m has published its table: wake the opens waiting for it
 * (they need no more), before the index is saved. Not for `npyfs index`. */
static void publish(struct indexer *x, struct archive_member *m)
{
    size_t i = (size_t)(m - x->a->members);
    struct defer_waiter *list;

    if (!x->waiting)
        return;
    pthread_mutex_lock(&x->lock);
    list = x->waiting[i];
    x->waiting[i] = NULL;
    pthread_mutex_unlock(&x->lock);
    defer_wake(x->defer, list, 0);
}

/* The pass over member i has ended with ret (logged by the caller): wake
 * the opens waiting for it, to ask again if m now has its table (or is
 * damaged, which they then get), or with the error, which a later open
 * retries: -ECANCELED, -ENOMEM, else -EIO. */
static void pass_end(struct indexer *x, size_t i, bool saved, int ret)
{
    struct archive_member *m = &x->a->members[i];
    struct defer_waiter *list;
    int err = ret == -ECANCELED || ret == -ENOMEM ? ret : -EIO;

    if (has_table(m) || damaged(m))
        err = 0;
    pthread_mutex_lock(&x->lock);
    x->passing[i] = false;
    if (saved)
        x->on_disk[i] = true; /* the file is there: nothing to save at unmount */
    list = x->waiting[i];
    x->waiting[i] = NULL;
    pthread_cond_broadcast(&x->loaded);
    pthread_mutex_unlock(&x->lock);
    defer_wake(x->defer, list, err);
}

/* Background work for member i: load, or build (checking it), save and
 * load. A member whose file has no table (saved at an unmount) gets a pass
 * too. A pass already running for it (an open's) is left alone. */
static void background_member(struct indexer *x, size_t i)
{
    struct archive_member *m = &x->a->members[i];
    int ret, saved;

    if (archive_locate(x->a, m) < 0 || !worth_indexing(x->a, m))
        return; /* a remote zip's local header: tried again at its open */
    indexer_use(x, m);
    if (has_table(m) || damaged(m) || !pass_begin(x, i))
        return;
    ret = run_pass(x, m, &(struct pass_how){.stop = &x->stop, .yield = true}, &saved);
    if (ret < 0 && ret != -ECANCELED && ret != -ENOMEM)
        log_damage(x->a, m, ret);
    pass_end(x, i, saved == 1, ret);
}

/* A pass run in the pool for the opens waiting on member i. */
struct pass_job {
    struct defer_job job; /* first */
    struct indexer *x;
    size_t i;
};

static void pass_job_run(struct defer_job *j)
{
    struct pass_job *p = (struct pass_job *)j;
    struct indexer *x = p->x;
    struct archive_member *m = &x->a->members[p->i];
    bool fits = x->cache && x->opts && m->size <= x->opts->cache_size / 4;
    struct pass_how how = {.stop = &x->stop, .feed = fits ? x->cache : NULL,
                           .raw_windows = m->size / x->spacing * DFX_WINDOW_SIZE <=
                                          RAW_WINDOWS_MAX};
    int ret, saved = 0;

    ret = atomic_load(&x->stop) ? -ECANCELED : run_pass(x, m, &how, &saved);
    if (ret < 0 && ret != -ECANCELED && ret != -ENOMEM)
        log_damage(x->a, m, ret);
    pass_end(x, p->i, saved == 1, ret);
    free(p);
}

static void pass_job_cancel(struct defer_job *j)
{
    struct pass_job *p = (struct pass_job *)j;

    pass_end(p->x, p->i, false, -ECANCELED);
    free(p);
}

/* Contract in indexer.h. */
int indexer_ready(struct indexer *x, struct archive_member *m)
{
    const struct options *o = x ? x->opts : NULL;

    if (!o || !worth_indexing(x->a, m) || has_table(m))
        return 0;
    if (o->verify == OPTIONS_VERIFY_LAZY)
        return 0;
    if (o->verify == OPTIONS_VERIFY_AUTO && m->size > o->verify_max) {
        if (!atomic_exchange(&m->said_unverified, true))
            fuse_log(FUSE_LOG_WARNING, "npyfs: %s: member '%s' (%llu bytes, above "
                     "verify_max=%llu) is served before its full check: until %s, a "
                     "damaged byte that still decodes would be read as data (npyfs stats "
                     "shows it as unverified)\n", x->a->name, m->name,
                     (unsigned long long)m->size, (unsigned long long)o->verify_max,
                     x->mode == OPTIONS_INDEX_BACKGROUND ? "the background pass has checked it"
                                                    : "a full pass has checked it");
        return 0;
    }
    return damaged(m) ? -EIO : DEFER_WAIT;
}

/* Contract in indexer.h. */
int indexer_await(struct indexer *x, struct archive_member *m, struct defer_waiter *w)
{
    size_t i = (size_t)(m - x->a->members);
    struct pass_job *p;
    bool start;
    int ret;

    pthread_mutex_lock(&x->lock);
    if (has_table(m) || damaged(m)) {
        pthread_mutex_unlock(&x->lock);
        return 1;
    }
    w->next = x->waiting[i];
    x->waiting[i] = w;
    start = !x->passing[i];
    x->passing[i] = true;
    pthread_mutex_unlock(&x->lock);
    if (!start)
        return 0;
    p = malloc(sizeof(*p));
    if (!p) {
        pass_end(x, i, false, -ENOMEM);
        return 0;
    }
    p->job.run = pass_job_run;
    p->job.cancel = pass_job_cancel;
    p->x = x;
    p->i = i;
    /* A member of one chunk: its pass is the very decode its first read
     * would do in a request thread anyway, and a hop to the pool would cost
     * more than the pass (a .npz of many small arrays). */
    ret = m->size <= FS_CHUNK_SIZE ? -EAGAIN : defer_submit(x->defer, &p->job);
    if (ret == -EAGAIN)
        pass_job_run(&p->job); /* here, as before the pool */
    else if (ret < 0)
        pass_job_cancel(&p->job);
    return 0;
}

/* Contract in indexer.h. */
void indexer_cancel(struct indexer *x)
{
    if (!x)
        return;
    atomic_store(&x->stop, true);
    pthread_mutex_lock(&pass_lock); /* wake the thread if it waits for its turn */
    pthread_cond_broadcast(&pass_free);
    pthread_mutex_unlock(&pass_lock);
}


static void *background_main(void *arg)
{
    struct indexer *x = arg;

    idle_priority();
    pthread_mutex_lock(&pass_lock);
    while (pass_busy && !atomic_load(&x->stop))
        pthread_cond_wait(&pass_free, &pass_lock);
    if (atomic_load(&x->stop)) {
        pthread_mutex_unlock(&pass_lock);
        return NULL;
    }
    pass_busy = true;
    pthread_mutex_unlock(&pass_lock);
    for (size_t i = 0; i < x->a->count && !atomic_load(&x->stop); i++)
        if (worth_indexing(x->a, &x->a->members[i]))
            background_member(x, i);
    pthread_mutex_lock(&pass_lock);
    pass_busy = false;
    pthread_cond_broadcast(&pass_free);
    pthread_mutex_unlock(&pass_lock);
    return NULL;
}

/* ------------------------------------------------------------- indexer --- */

/* The index directory is opened once per process and shared by the
 * indexers of every archive (a mount may open thousands): a directory of
 * another path (not in a daemon, whose indexers share its options) gets
 * its own. */
static pthread_mutex_t dir_lock = PTHREAD_MUTEX_INITIALIZER;
static struct indexdir *dir_shared; /* protected by dir_lock */
static size_t dir_users;                 /* protected by dir_lock */

/* The opened directory at path: 0, or indexdir_open()'s error. */
static int dir_get(const char *path, struct indexdir **out)
{
    int ret = 0;

    pthread_mutex_lock(&dir_lock);
    if (dir_shared && strcmp(indexdir_path(dir_shared), path) == 0) {
        dir_users++;
        *out = dir_shared;
    } else {
        ret = indexdir_open(path, out);
        if (ret == 0 && !dir_shared) {
            dir_shared = *out;
            dir_users = 1;
        }
    }
    pthread_mutex_unlock(&dir_lock);
    return ret;
}

static void dir_put(struct indexdir *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&dir_lock);
    if (d == dir_shared && --dir_users == 0)
        dir_shared = NULL;
    else if (d == dir_shared)
        d = NULL; /* still used */
    pthread_mutex_unlock(&dir_lock);
    indexdir_close(d);
}

/* The path of the index directory opts name (-o index_dir=, else the
 * default) into *path (owned; NULL on error). Returns 0 or the error. */
static int index_dir_path(const struct options *opts, char **path)
{
    *path = NULL;
    if (!opts->index_dir)
        return indexdir_default_dir(path);
    *path = strdup(opts->index_dir);
    return *path ? 0 : -ENOMEM;
}

/* The index directory for a, or NULL; *why gets the error and *path the
 * path tried (owned, NULL if none could be named). */
static struct indexdir *index_dir(const struct options *opts, int *why, char **path)
{
    struct indexdir *d = NULL;
    int ret = index_dir_path(opts, path);

    if (ret == 0)
        ret = dir_get(*path, &d);
    if (d)
        indexdir_set_max(d, opts->index_max);
    *why = ret;
    return d;
}

/* Why the index directory at path is refused (err from indexdir_open()),
 * into buf (len bytes) or a static text: for -EPERM, which of its checks
 * failed, as the directory is now. */
static const char *dir_problem(int err, const char *path, char *buf, size_t len)
{
    struct stat st;

    if (err != -EPERM)
        return strerror_r(-err, buf, len);
    if (!path || stat(path, &st) < 0)
        return "not owned by you, or writable by group or others";
    if (st.st_uid != geteuid())
        snprintf(buf, len, "owned by uid %u, not by you (uid %u)", (unsigned)st.st_uid,
                 (unsigned)geteuid());
    else if (st.st_mode & 022)
        snprintf(buf, len, "writable by group or others (mode %04o; chmod go-w it)",
                 (unsigned)(st.st_mode & 07777));
    else
        return "not owned by you, or writable by group or others";
    return buf;
}

/* The largest published index a mount fetches (its files stay in memory
 * until each member's first open loads its own). */
#define PUB_MAX (256u << 20)

/* Does a member worth a saved file have none in the index directory? */
static bool lacks_index(struct indexer *x)
{
    for (size_t i = 0; i < x->a->count; i++) {
        struct archive_member *m = &x->a->members[i];
        struct dfx_store_key k;
        char *path = NULL;
        bool have;

        if (!worth_saving(x->a, m))
            continue;
        if (!x->dir)
            return true;
        member_key(x, m, &k);
        if (indexdir_file_path(x->dir, &k, &path) < 0)
            return true;
        have = access(path, F_OK) == 0;
        free(path);
        if (!have)
            return true;
    }
    return false;
}

/* A whole local file of at most max bytes into *body (malloc'd). Returns 0
 * or a negative errno (-EFBIG: larger). */
static int read_local(const char *path, size_t max, char **body, size_t *len)
{
    struct bsrc *b;
    int ret = bsrc_open_file(-1, NULL, path, &b);

    *body = NULL;
    if (ret < 0)
        return ret;
    if (bsrc_ident(b)->size > max) {
        bsrc_close(b);
        return -EFBIG;
    }
    *len = (size_t)bsrc_ident(b)->size;
    *body = malloc(*len + 1);
    ret = !*body ? -ENOMEM : bsrc_read_exact(b, *body, *len, 0);
    bsrc_close(b);
    if (ret < 0) {
        free(*body);
        *body = NULL;
    }
    return ret;
}

/* Keep the files of a published index (body[0..len)) in memory, one per
 * member. A body that does not split into index files is refused whole. */
static void keep_published(struct indexer *x, const char *body, size_t len)
{
    struct src *all;
    uint64_t at, flen;
    size_t n = 0;

    if (src_mem_new(body, len, &all) < 0)
        return;
    for (at = 0; at < len; at += flen, n++)
        if (dfx_store_file_len(all, at, &flen) < 0) {
            fuse_log(FUSE_LOG_WARNING, "npyfs: %s: the published index %s is not an npyfs "
                     "index file; not used\n", x->a->name, x->pub_from);
            src_free(all);
            return;
        }
    x->pub = calloc(n ? n : 1, sizeof(*x->pub));
    for (at = 0; x->pub && at < len && x->npub < n; at += flen) {
        struct pub_file *p = &x->pub[x->npub];
        struct dfx_store_info info;
        struct src *one;

        dfx_store_file_len(all, at, &flen);
        p->data = malloc((size_t)flen);
        if (!p->data || src_mem_new(body + at, (size_t)flen, &one) < 0) {
            free(p->data);
            p->data = NULL;
            continue;
        }
        if (dfx_store_peek(one, &info) == 0 && info.member) {
            memcpy(p->data, body + at, (size_t)flen);
            p->len = (size_t)flen;
            p->name = info.member; /* taken */
            p->name_len = info.member_len;
            info.member = NULL;
            x->npub++;
        } else {
            free(p->data); /* another format version, or damaged: not used */
            p->data = NULL;
        }
        dfx_store_info_clear(&info);
        src_free(one);
    }
    src_free(all);
}

/*
 * A remote archive (or one mounted with -o index_url=) that lacks a saved
 * file for a member worth one: fetch its published index (npyfs index
 * -o index_out=), from index_url or else URL.npyfsidx beside the archive
 * (not for a URL with a query: a signed URL is valid for its own path
 * only). One request per archive and mount, made as the archive is opened;
 * its absence is remembered by not asking again. The members' files are
 * checked (key, checksums) as each member is first opened (load_file()).
 */
static void fetch_published(struct indexer *x, const struct options *opts)
{
    const char *path = x->a->path;
    char *url = NULL, *body = NULL, msg[256] = "", shown[1024];
    size_t len = 0;
    int ret;

    if (!opts || (!bsrc_is_remote(x->a->bs) && !opts->index_url) || !lacks_index(x))
        return;
    if (opts->index_url)
        url = strdup(opts->index_url);
    else if (!path[strcspn(path, "?#")] && asprintf(&url, "%s.npyfsidx", path) < 0)
        url = NULL;
    if (!url)
        return;
    x->pub_from = strdup(bsrc_name_of(url, shown, sizeof(shown)));
    if (bsrc_is_url(url))
        ret = opts->net ? net_fetch(opts->net, url, PUB_MAX, &body, &len, msg, sizeof(msg))
                        : -EINVAL;
    else
        ret = read_local(url, PUB_MAX, &body, &len);
    if (ret == 0 && x->pub_from)
        keep_published(x, body, len);
    else if (ret < 0 && (opts->index_url || ret != -ENOENT))
        fuse_log(opts->index_url ? FUSE_LOG_WARNING : FUSE_LOG_INFO,
                 "npyfs: %s: no published index from %s: %s\n", x->a->name, shown,
                 msg[0] ? msg : ERRSTR(ret));
    free(body);
    free(url);
}

/* Contract in indexer.h. */
int indexer_new(struct archive *a, const struct options *opts, struct defer *defer,
                   struct cache *cache, struct indexer **out)
{
    struct indexer *x;
    char *path;
    int ret;

    *out = NULL;
    x = calloc(1, sizeof(*x));
    if (!x)
        return -ENOMEM;
    x->a = a;
    /* A remote archive is indexed in the background only when asked for:
     * the pass would download all of it. */
    x->mode = bsrc_is_remote(a->bs) && !opts->index_given ? OPTIONS_INDEX_LAZY : opts->index_mode;
    x->opts = opts;
    x->defer = defer;
    x->cache = cache;
    x->state = calloc(a->count ? a->count : 1, sizeof(*x->state));
    x->on_disk = calloc(a->count ? a->count : 1, sizeof(*x->on_disk));
    x->passing = calloc(a->count ? a->count : 1, sizeof(*x->passing));
    x->waiting = calloc(a->count ? a->count : 1, sizeof(*x->waiting));
    if (!x->state || !x->on_disk || !x->passing || !x->waiting)
        goto out_nomem;
    x->dir = index_dir(opts, &ret, &path);
    if (ret == -ENOMEM) {
        free(path);
        goto out_nomem;
    }
    if (ret < 0 && !path && !atomic_exchange(&said_unusable, true))
        fuse_log(FUSE_LOG_WARNING, "npyfs: %s: no index directory (HOME is not set and uid %u "
                 "has no usable home); indexes will not be saved or loaded: give "
                 "-o index_dir=DIR\n", a->name, (unsigned)geteuid());
    else if (ret < 0 && !atomic_exchange(&said_unusable, true))
        fuse_log(FUSE_LOG_WARNING, "npyfs: %s: index directory %s is not usable (%s); "
                 "indexes will not be saved or loaded: give -o index_dir=DIR\n", a->name, path,
                 dir_problem(ret, path, (char[96]){0}, 96));
    free(path);
    x->spacing = spacing_for(x, opts);
    x->source_path = source_path(a);
    read_trailer(x);
    pthread_mutex_init(&x->lock, NULL);
    pthread_cond_init(&x->loaded, NULL);
    fetch_published(x, opts);
    *out = x;
    return 0;

out_nomem:
    free(x->state);
    free(x->on_disk);
    free(x->passing);
    free(x->waiting);
    free(x);
    return -ENOMEM;
}

/* Contract in indexer.h. */
void indexer_start(struct indexer *x)
{
    bool any = false;
    int ret;

    if (!x || x->running || x->mode != OPTIONS_INDEX_BACKGROUND)
        return;
    for (size_t i = 0; i < x->a->count && !any; i++)
        any = worth_indexing(x->a, &x->a->members[i]);
    if (!any)
        return; /* no thread for an archive with nothing to index */
    ret = pthread_create(&x->thread, NULL, background_main, x);
    if (ret) {
        fuse_log(FUSE_LOG_ERR, "npyfs: %s: cannot start the background indexer: %s\n",
                 x->a->name, ERRSTR(-ret));
        return;
    }
    x->running = true;
}

/* Contract in indexer.h. */
void indexer_stop(struct indexer *x)
{
    if (!x)
        return;
    if (x->running) {
        indexer_cancel(x);
        pthread_join(x->thread, NULL);
        x->running = false;
    }
    atomic_store(&x->stop, true);
    for (size_t i = 0; x->dir && i < x->a->count; i++) {
        struct archive_member *m = &x->a->members[i];
        bool on_disk;

        if (!worth_saving(x->a, m) || !archive_located(m) || !m->ix)
            continue;
        pthread_mutex_lock(&x->lock);
        on_disk = x->on_disk[i];
        x->on_disk[i] = true; /* once */
        pthread_mutex_unlock(&x->lock);
        /* grown by reads to the end (or sized by a full pass at open); with
         * the chunk CRC table if a pass built one, which a gzip member's
         * file needs (dfx_store.h); not from an archive that changed (its
         * points may hold new bytes) */
        if (!on_disk && dfx_index_total(m->ix) != UINT64_MAX && !dfx_index_error(m->ix) &&
            (dfx_index_points(m->ix) > 1 || has_table(m)) &&
            (has_table(m) || x->a->kind != ARCHIVE_GZIP) && archive_check(x->a) == 0)
            save(x, m, m->ix);
    }
}

/* Contract in indexer.h. */
void indexer_free(struct indexer *x)
{
    if (!x)
        return;
    indexer_stop(x);
    pthread_mutex_destroy(&x->lock);
    pthread_cond_destroy(&x->loaded);
    free(x->state);
    free(x->on_disk);
    free(x->passing);
    free(x->source_path);
    free(x->waiting);
    for (size_t i = 0; i < x->npub; i++) {
        free(x->pub[i].data);
        free(x->pub[i].name);
    }
    free(x->pub);
    free(x->pub_from);
    dir_put(x->dir);
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

/* Index one member for `npyfs index`: reuse a valid file with its table
 * (unless -o spacing= asked for another spacing than it was built with),
 * save an index completed (and checked) at open, or build one. *already:
 * a valid file was there. Returns 0 or the error. */
static int index_member(struct indexer *x, struct archive_member *m, const struct options *opts,
                        struct progress *pr, bool *already)
{
    bool worth = worth_saving(x->a, m), loaded;
    uint64_t built = 0;
    int ret = archive_locate(x->a, m), saved;

    *already = false;
    if (ret < 0)
        return ret;
    if (!worth_indexing(x->a, m))
        return 0; /* its local header says it cannot be served */
    worth = worth_saving(x->a, m);
    loaded = worth && load_file(x, m, &built, false) && has_table(m);
    if (loaded && (!opts->spacing_given || m->kind != ARCHIVE_DEFLATE ||
                   built == x->spacing)) {
        pr->total -= m->size; /* no work: not in the rate */
        *already = true;
        return 0;
    }
    if (!loaded && has_table(m) && m->ix && dfx_index_total(m->ix) != UINT64_MAX &&
        !dfx_index_error(m->ix)) {
        pr->done += m->size;
        return worth ? save(x, m, m->ix) : 0;
    }
    ret = run_pass(x, m, &(struct pass_how){.pr = pr}, &saved); /* another spacing: replaced */
    return ret < 0 ? ret : saved < 0 ? saved : 0;
}

static void print_member_error(const struct archive *a, const struct archive_member *m, int err,
                               const char *dir, int more)
{
    const char *what = index_problem(err);
    char tail[48] = "";

    if (more)
        snprintf(tail, sizeof(tail), " (and %d more member%s)", more, more > 1 ? "s" : "");
    if (what)
        fprintf(stderr, "npyfs: %s: member '%s' %s%s\n", a->name, m->name, what, tail);
    else
        fprintf(stderr, "npyfs: %s: member '%s': cannot save its index in %s: %s%s\n", a->name,
                m->name, dir, save_problem(err, (char[64]){0}, 64), tail);
}

/* Say why there is no index directory (CLI: npyfs index), for label. */
static void print_dir_error(const char *label, const char *path, int err)
{
    if (err == -ENOENT && !path)
        fprintf(stderr, "npyfs: %sno index directory: HOME and XDG_CACHE_HOME are not set "
                "and uid %u has no usable home directory; give -o index_dir=DIR\n", label,
                (unsigned)geteuid());
    else if (err < 0)
        fprintf(stderr, "npyfs: %sindex directory %s: %s (give -o index_dir=DIR for another "
                "one)\n", label, path ? path : "", dir_problem(err, path, (char[96]){0}, 96));
}

/* The index directory for `npyfs index`; prints why when there is none. */
static struct indexdir *index_dir_for(const struct archive *a,
                                           const struct options *opts)
{
    char *path, *label = NULL;
    int ret;
    struct indexdir *d = index_dir(opts, &ret, &path);

    if (!d && asprintf(&label, "%s: ", a->name) < 0)
        label = NULL;
    if (!d)
        print_dir_error(label ? label : "", path, ret);
    free(label);
    free(path);
    return d;
}

/* Where dfx_store_write() puts one member's file of a published index: at
 * base in fd; end is how far it wrote. */
struct pub_out {
    int fd;
    uint64_t base, end;
};

static int pub_write(void *ctx, const void *buf, size_t len, uint64_t off)
{
    struct pub_out *o = ctx;

    if (off + len > o->end)
        o->end = off + len;
    return indexdir_pwrite_all(o->fd, buf, len, o->base + off);
}

/* Write the published index of a (every member worth a saved file, each
 * with portable_key(), back to back) to path, atomically: a temporary file
 * beside it, synced and renamed over it. x has every member indexed.
 * Returns 0 or a negative errno. */
static int write_published(struct indexer *x, const char *path)
{
    struct pub_out o = {.fd = -1};
    char *tmp = NULL;
    int ret = 0;

    if (asprintf(&tmp, "%s.%d.tmp", path, (int)getpid()) < 0)
        return -ENOMEM;
    o.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (o.fd < 0) {
        ret = -errno;
        free(tmp);
        return ret;
    }
    for (size_t i = 0; ret == 0 && i < x->a->count; i++) {
        struct archive_member *m = &x->a->members[i];
        struct dfx_store_out out = {pub_write, &o};
        struct dfx_store_key k;

        if (!worth_saving(x->a, m) || !has_table(m))
            continue;
        portable_key(x, m, &k);
        o.end = 0;
        ret = dfx_store_write(&k, m->kind == ARCHIVE_DEFLATE ? m->ix : NULL, atomic_load(&m->crcs),
                              &out);
        o.base += o.end;
    }
    if (ret == 0 && fsync(o.fd) < 0)
        ret = -errno;
    if (close(o.fd) < 0 && ret == 0)
        ret = -errno;
    if (ret == 0 && rename(tmp, path) < 0)
        ret = -errno;
    if (ret < 0)
        unlink(tmp);
    free(tmp);
    return ret;
}

/* `npyfs index` reports by itself; the daemon's log lines stay silent. */
static void quiet_log(enum fuse_log_level level, const char *fmt, va_list ap)
{
    (void)level;
    (void)fmt;
    (void)ap;
}

/* The last line on a terminal: what was done, or that nothing was needed.
 * Members within one chunk get no file (worth_saving()): they are checked
 * on every run, and do not stop an archive from being "already indexed". */
static void print_outcome(struct progress *pr, size_t members, size_t saving, size_t already)
{
    if (members == 0) {
        fprintf(stderr, "\r\033[Knpyfs: %s: nothing to index\n", pr->label);
    } else if (saving == 0) {
        fprintf(stderr, "\r\033[Knpyfs: %s: %zu member%s checked; none needs an index file "
                "(each fits in one %u KiB chunk)\n", pr->label, members, members == 1 ? "" : "s",
                FS_CHUNK_SIZE >> 10);
    } else if (already == saving) {
        fprintf(stderr, "\r\033[Knpyfs: %s: already indexed (%zu member%s)\n", pr->label,
                members, members == 1 ? "" : "s");
    } else {
        progress_show(pr, true);
        fprintf(stderr, " (%.1f s)", seconds_since(&pr->start));
        if (already)
            fprintf(stderr, "; %zu of %zu members were already indexed", already, saving);
        fputc('\n', stderr);
    }
}

/* Contract in indexer.h. */
int indexer_index_archive(struct archive *a, const struct options *opts)
{
    struct indexer x = {.a = a, .mode = OPTIONS_INDEX_LAZY};
    struct progress pr = {.label = a->name, .tty = isatty(2)};
    struct archive_member *first_bad = NULL;
    int first_err = 0, nbad = 0;
    size_t members = 0, saving = 0, already = 0;

    x.dir = index_dir_for(a, opts);
    if (!x.dir)
        return 1;
    x.spacing = spacing_for(&x, opts);
    x.source_path = source_path(a);
    read_trailer(&x);
    for (size_t i = 0; i < a->count; i++)
        if (worth_indexing(a, &a->members[i]))
            pr.total += a->members[i].size;
    clock_gettime(CLOCK_MONOTONIC, &pr.start);
    pr.last = pr.start;
    fuse_set_log_func(quiet_log);
    for (size_t i = 0; i < a->count; i++) {
        struct archive_member *m = &a->members[i];
        bool was;
        int ret;

        if (!worth_indexing(a, m))
            continue;
        members++;
        ret = index_member(&x, m, opts, &pr, &was);
        if (worth_saving(a, m)) {
            saving++;
            already += was;
        }
        if (ret < 0 && !first_bad) {
            first_bad = m;
            first_err = ret;
        } else if (ret < 0) {
            nbad++;
        }
    }
    fuse_set_log_func(NULL);
    if (pr.tty)
        print_outcome(&pr, members, saving, already);
    if (first_bad)
        print_member_error(a, first_bad, first_err, indexdir_path(x.dir), nbad);
    if (!first_bad && opts->index_out) {
        int ret = write_published(&x, opts->index_out);

        if (ret < 0) {
            fprintf(stderr, "npyfs: %s: -o index_out=%s: cannot write it: %s\n", a->name,
                    opts->index_out, strerror(-ret));
            first_bad = a->members; /* the exit status */
        } else if (saving == 0) {
            fprintf(stderr, "npyfs: %s: -o index_out=%s: no member needs an index file (each "
                    "fits in one %u KiB chunk): the published index written is empty\n",
                    a->name, opts->index_out, FS_CHUNK_SIZE >> 10);
        }
    }
    free(x.source_path);
    dir_put(x.dir);
    return first_bad ? 1 : 0;
}

/* ---------------------------------------------------- npyfs index --prune --- */

struct prune_report {
    const char *dir;
    uint64_t max;
};

/* bytes as "1.2 MiB" */
static void human_u64(char *buf, size_t len, uint64_t bytes)
{
    human(buf, len, (double)bytes);
}

/* secs as "5 minutes", "3 hours", "12 days" */
static void duration(char *buf, size_t len, int64_t secs)
{
    static const struct {
        int64_t secs;
        const char *unit;
    } units[] = {{86400, "day"}, {3600, "hour"}, {60, "minute"}, {1, "second"}};
    size_t i = 0;

    if (secs < 0)
        secs = 0;
    while (i + 1 < sizeof(units) / sizeof(units[0]) && secs < units[i].secs)
        i++;
    snprintf(buf, len, "%lld %s%s", (long long)(secs / units[i].secs), units[i].unit,
             secs / units[i].secs == 1 ? "" : "s");
}

static void print_pruned(const struct indexdir_prune_file *f, void *arg)
{
    const struct prune_report *r = arg;
    char size[32], cap[32], idle[48];
    char *path = f->path ? escape_text_new(f->path, strlen(f->path)) : NULL;
    char *member = f->member ? escape_text_new(f->member, f->member_len) : NULL;
    const char *p = path ? path : "?", *mb = member ? member : "?";

    human_u64(size, sizeof(size), f->bytes);
    duration(idle, sizeof(idle), f->idle_secs);
    printf("removed %s/%s (%s): ", r->dir, f->name, size);
    switch (f->why) {
    case INDEXDIR_PRUNE_GONE:
        printf("its archive %s no longer exists (member '%s')\n", p, mb);
        break;
    case INDEXDIR_PRUNE_CHANGED:
        printf("%s is no longer the archive it was built for: replaced or modified since "
               "(member '%s')\n", p, mb);
        break;
    case INDEXDIR_PRUNE_UNUSED:
        if (path)
            printf("not used for %s, and its archive %s cannot be checked (member '%s')\n",
                   idle, p, mb);
        else
            printf("not used for %s, and it does not record its archive (member '%s')\n",
                   idle, mb);
        break;
    case INDEXDIR_PRUNE_FORMAT:
        printf("index file format version %u, from an older npyfs (this one reads version "
               "%d)\n", f->version, DFX_STORE_VERSION);
        break;
    case INDEXDIR_PRUNE_DAMAGED:
        printf("damaged (cut short, a header that does not hold together, or a checksum "
               "that does not match)\n");
        break;
    case INDEXDIR_PRUNE_TEMP:
        printf("a temporary file left by a save that did not finish (%s old)\n", idle);
        break;
    case INDEXDIR_PRUNE_SIZE:
        human_u64(cap, sizeof(cap), r->max);
        printf("least recently used (last used %s ago), to keep the directory within "
               "index_max=%s (%s, member '%s')\n", idle, cap, p, mb);
        break;
    }
    free(path);
    free(member);
}

/* Contract in indexer.h. */
int indexer_prune(const struct options *opts)
{
    struct indexdir_prune_opts o = {.sources = true,
                                    .unused_secs = INDEXER_PRUNE_UNUSED_DAYS * 86400,
                                    .max = opts->index_max};
    struct indexdir_prune_result res;
    struct prune_report r = {.max = opts->index_max};
    char freed[32], kept[32];
    char *path = NULL;
    struct indexdir *d;
    struct stat st;
    int ret;

    /* nothing to prune where there is no directory: do not create one */
    ret = index_dir_path(opts, &path);
    if (ret == 0 && lstat(path, &st) < 0 && errno == ENOENT) {
        printf("npyfs: index directory %s does not exist: nothing to prune\n", path);
        free(path);
        return fflush(stdout) == 0 ? 0 : 1;
    }
    free(path);
    d = index_dir(opts, &ret, &path);
    if (!d) {
        print_dir_error("", path, ret);
        free(path);
        return 1;
    }
    free(path);
    r.dir = indexdir_path(d);
    ret = indexdir_prune(d, &o, print_pruned, &r, &res);
    if (ret < 0) {
        fprintf(stderr, "npyfs: index directory %s: cannot list it: %s\n", r.dir,
                strerror(-ret));
        dir_put(d);
        return 1;
    }
    human_u64(freed, sizeof(freed), res.removed_bytes);
    human_u64(kept, sizeof(kept), res.kept_bytes);
    printf("npyfs: index directory %s: removed %" PRIu64 " file%s, %s freed; %" PRIu64
           " index file%s kept (%s)\n", r.dir, res.removed, res.removed == 1 ? "" : "s", freed,
           res.kept, res.kept == 1 ? "" : "s", kept);
    if (res.failed)
        fprintf(stderr, "npyfs: index directory %s: %" PRIu64 " file%s could not be removed: "
                "%s\n", r.dir, res.failed, res.failed == 1 ? "" : "s", strerror(-res.err));
    dir_put(d);
    return fflush(stdout) == 0 && res.failed == 0 ? 0 : 1;
}
