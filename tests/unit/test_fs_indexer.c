/*
 * Unit tests for index persistence (indexer.c) without a mount: real
 * archives written here, an index directory in a temporary directory, and
 * the calls the daemon makes: indexer_new() as an archive is opened,
 * indexer_use() at a member's first open, indexer_ready()/indexer_await() (the full
 * pass an open may wait for), indexer_stop() at unmount.
 *
 * A full pass builds the member's chunk CRC table and saves its index; a
 * later open of the same archive loads it, and a random read then starts at
 * an access point near its offset (counted in chunks decoded: the cache's
 * stats); a file for another version of the archive is not used, a damaged
 * one is refused and rebuilt; index=lazy saves at unmount only what reads
 * completed, and a gzip member's index only with its table.
 */
#define _GNU_SOURCE
#include "archive.h"
#include "check.h"
#include "defer.h"
#include "dfx_store.h"
#include "fs.h"
#include "fstest.h"
#include "indexer.h"
#include "member.h"
#include "options.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CH ((uint64_t)FS_CHUNK_SIZE)
#define SPACING (256u << 10)
#define MiB (1u << 20)

static char *top, *idx_dir;
static struct options opts;

enum { M_D, M_S, M_SMALL, M_EMPTY, M_COUNT };

static struct ft_member zm[M_COUNT];
static unsigned char *zdata[M_COUNT];

/* ---- the calls that set up and check a member ---------------------------
 * In one place, as the daemon makes them: an indexer per opened archive; an
 * open under verify=strict asks indexer_ready() and, told to wait, waits
 * for the full pass (indexer_await()) and asks again. Without a pool
 * the pass runs in the thread that starts it, to its end (its save
 * included); with the opener pool (pool, where a test sets it), waiting
 * opens are answered once the table exists, and the pass ends later, which
 * defer_stop() waits for. */

static struct defer *pool; /* NULL but in test_concurrent_opens() */

static struct indexer *new_indexer(struct archive *a)
{
    struct indexer *x = NULL;

    CHECK_EQ(indexer_new(a, &opts, pool, NULL, &x), 0);
    return x;
}

struct waiter {
    struct defer_waiter w; /* first: the pool hands this back */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool woken;
    int err;
};

static void wake(struct defer_waiter *fw, int err)
{
    struct waiter *w = (struct waiter *)fw;

    pthread_mutex_lock(&w->lock);
    w->woken = true;
    w->err = err;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

/* May m be served under verify=strict? Runs (or waits for) the full pass
 * that builds its table and saves its index: 0, or -EIO (damaged). */
static int verify(struct indexer *x, struct archive_member *m)
{
    int ret;

    while ((ret = indexer_ready(x, m)) == DEFER_WAIT) {
        struct waiter w = {.w.wake = wake, .lock = PTHREAD_MUTEX_INITIALIZER,
                           .cond = PTHREAD_COND_INITIALIZER};

        if (indexer_await(x, m, &w.w) == 0) {
            pthread_mutex_lock(&w.lock);
            while (!w.woken)
                pthread_cond_wait(&w.cond, &w.lock);
            pthread_mutex_unlock(&w.lock);
        }
        pthread_mutex_destroy(&w.lock);
        pthread_cond_destroy(&w.cond);
        if (w.err < 0)
            return w.err;
    }
    return ret;
}

static struct archive *open_archive(const char *path)
{
    struct archive *a = NULL;

    CHECK_EQ(archive_open(path, SPACING, NULL, &a), 0);
    return a;
}

/* ---- files ---------------------------------------------------------------- */

/* Write the test zip at top/name. */
static char *write_npz(const char *name)
{
    char *path = ft_path(top, name);

    if (ft_write_zip(path, zm, M_COUNT) < 0) {
        perror(path);
        exit(2);
    }
    ft_members_free(zm, M_COUNT);
    return path;
}

/* The index files in the index directory (temporary files left out). */
static int index_files(char names[][256], int max)
{
    DIR *d = opendir(idx_dir);
    struct dirent *de;
    int n = 0;

    if (!d)
        return 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || strstr(de->d_name, ".tmp"))
            continue;
        if (names && n < max)
            snprintf(names[n], 256, "%s", de->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static bool has_table(struct archive_member *m)
{
    return atomic_load(&m->crcs) != NULL;
}

static bool index_complete(struct archive_member *m)
{
    return dfx_index_total(m->ix) == m->size;
}

/* Chunks a fresh cache gets inserted when chunk k of m is read (the
 * decoder starts at the nearest access point at or before it and inserts
 * every whole chunk from there). The bytes are checked too: -1 if wrong. */
static long chunks_to_read(struct archive *a, struct archive_member *m, uint64_t k,
                           const unsigned char *want)
{
    struct cache *c;
    struct cache_chunk *ch;
    struct cache_stats st;
    long n = -1;

    cache_new(256ull << 20, FS_CHUNK_SIZE, &c);
    if (member_chunk(a, m, c, k, &ch) == 0) {
        if (memcmp(ch->data, want + k * CH, ch->len) == 0) {
            cache_get_stats(c, &st);
            n = (long)st.inserted;
        }
        cache_put(c, ch);
    }
    cache_free(c);
    return n;
}

/* Read all of m through a throwaway cache: the index grows to the end. */
static void read_through(struct archive *a, struct archive_member *m, uint64_t upto,
                         const unsigned char *want)
{
    struct cache *c;
    unsigned char *buf = malloc(upto ? upto : 1);

    cache_new(256ull << 20, FS_CHUNK_SIZE, &c);
    CHECK_EQ(ft_read_deflate(a, m, c, 0, (size_t)upto, buf), 0);
    CHECK(memcmp(buf, want, upto) == 0);
    cache_free(c);
    free(buf);
}

/* ---- tests ---------------------------------------------------------------- */

/* The full pass: table built, CRC checked, index saved (members over one
 * chunk); then a fresh open of the same archive loads it, and a random
 * read decodes from a point near its offset. */
static void test_build_and_load(void)
{
    char *path = write_npz("a.npz");
    struct archive *a = open_archive(path), *b = NULL;
    struct indexer *x = NULL, *y = NULL;
    struct archive_member *d;
    uint64_t last;
    long cold, warm;
    int files0 = index_files(NULL, 0);

    if (!a)
        goto out;
    x = new_indexer(a);
    d = &a->members[M_D];
    last = (d->size - 1) / CH;
    CHECK(!has_table(d));
    ft_log_clear();
    CHECK_EQ(verify(x, d), 0);
    CHECK(has_table(d));
    CHECK(index_complete(d));
    CHECK(dfx_index_points(d->ix) >= d->size / SPACING / 2);
    CHECK(ft_log_has("member 'd.npy': index saved to"));
    CHECK_EQ(index_files(NULL, 0), files0 + 1);
    CHECK_EQ(verify(x, &a->members[M_S]), 0); /* stored: a table, a file */
    CHECK(has_table(&a->members[M_S]));
    CHECK(atomic_load(&a->members[M_S].verified));
    CHECK_EQ(index_files(NULL, 0), files0 + 2);
    CHECK_EQ(verify(x, &a->members[M_SMALL]), 0); /* one chunk: a table, no file */
    CHECK(has_table(&a->members[M_SMALL]));
    CHECK_EQ(verify(x, &a->members[M_EMPTY]), 0); /* nothing to check */
    CHECK_EQ(index_files(NULL, 0), files0 + 2);
    CHECK_EQ(verify(x, d), 0); /* done: at once */
    indexer_free(x);
    x = NULL;

    /* without loading: a read of the last chunk decodes everything before it */
    b = open_archive(path);
    if (!b)
        goto out;
    cold = chunks_to_read(b, &b->members[M_D], last, zdata[M_D]);
    CHECK_EQ(cold, (long)last + 1);
    archive_close(b);

    /* loaded at first use: the points, the table */
    b = open_archive(path);
    if (!b)
        goto out;
    y = new_indexer(b);
    d = &b->members[M_D];
    CHECK(!has_table(d) && dfx_index_points(d->ix) == 1);
    ft_log_clear();
    indexer_use(y, d);
    CHECK(has_table(d));
    CHECK(index_complete(d));
    CHECK(dfx_index_points(d->ix) > 1);
    CHECK(ft_log_has("member 'd.npy': index loaded from"));
    warm = chunks_to_read(b, d, last, zdata[M_D]);
    CHECK(warm >= 1 && warm <= (long)(SPACING / CH) + 2);
    indexer_use(y, &b->members[M_S]);
    CHECK(has_table(&b->members[M_S]));
    CHECK(atomic_load(&b->members[M_S].verified));
    indexer_use(y, &b->members[M_SMALL]); /* no file: nothing */
    CHECK(!has_table(&b->members[M_SMALL]));
    CHECK_EQ(verify(y, d), 0); /* has its table: no pass */
out:
    indexer_free(x);
    indexer_free(y);
    archive_close(a);
    archive_close(b);
    unlink(path);
    free(path);
}

/* A saved index is for one version of the archive: once the archive is
 * rewritten (another mtime), its file is not used; the next pass builds one
 * for the new version, which later opens load. */
static void test_stale(void)
{
    char *path = write_npz("stale.npz");
    struct archive *a = open_archive(path);
    struct indexer *x = NULL;
    struct timespec ts[2];
    struct stat st;

    if (!a)
        goto out;
    x = new_indexer(a);
    CHECK_EQ(verify(x, &a->members[M_D]), 0);
    indexer_free(x);
    archive_close(a);
    /* the same bytes written again, an hour later */
    free(write_npz("stale.npz"));
    CHECK_EQ(stat(path, &st), 0);
    ts[0] = st.st_atim;
    ts[1] = st.st_mtim;
    ts[1].tv_sec += 3600;
    CHECK_EQ(utimensat(AT_FDCWD, path, ts, 0), 0);
    a = open_archive(path);
    if (!a)
        goto out;
    x = new_indexer(a);
    indexer_use(x, &a->members[M_D]);
    CHECK(!has_table(&a->members[M_D]));
    CHECK_EQ(dfx_index_points(a->members[M_D].ix), 1);
    CHECK_EQ(verify(x, &a->members[M_D]), 0); /* rebuilt */
    indexer_free(x);
    archive_close(a);
    a = open_archive(path);
    if (!a)
        goto out;
    x = new_indexer(a);
    indexer_use(x, &a->members[M_D]);
    CHECK(has_table(&a->members[M_D]));
    CHECK(index_complete(&a->members[M_D]));
    indexer_free(x);
    archive_close(a);
    a = NULL;
out:
    archive_close(a);
    unlink(path);
    free(path);
}

/* Every index file damaged (one byte): refused on load (logged), the
 * members rebuilt by their next pass, and the rebuilt files load. */
static void test_damaged_file(void)
{
    char *path = write_npz("damaged.npz");
    struct archive *a = open_archive(path);
    struct indexer *x = NULL;
    char names[16][256];
    int n;

    if (!a)
        goto out;
    x = new_indexer(a);
    CHECK_EQ(verify(x, &a->members[M_D]), 0);
    CHECK_EQ(verify(x, &a->members[M_S]), 0);
    indexer_free(x);
    archive_close(a);
    n = index_files(names, 16);
    CHECK(n >= 2);
    for (int i = 0; i < n && i < 16; i++) {
        char *f = ft_path(idx_dir, names[i]);
        size_t len;
        unsigned char *p = ft_read_file(f, &len);

        CHECK(p && len > 64);
        if (p && len > 64) {
            p[len / 2] ^= 0x01;
            CHECK_EQ(ft_write_file(f, p, len), 0);
            chmod(f, 0600);
        }
        free(p);
        free(f);
    }
    a = open_archive(path);
    if (!a)
        goto out;
    x = new_indexer(a);
    ft_log_clear();
    indexer_use(x, &a->members[M_D]);
    indexer_use(x, &a->members[M_S]);
    CHECK(!has_table(&a->members[M_D]));
    CHECK_EQ(dfx_index_points(a->members[M_D].ix), 1);
    CHECK(!has_table(&a->members[M_S]));
    CHECK(ft_log_has("member 'd.npy': index "));
    CHECK(ft_log_has("is damaged"));
    CHECK(ft_log_has("rebuilding"));
    /* reads are unaffected */
    CHECK_EQ(chunks_to_read(a, &a->members[M_D], 3, zdata[M_D]), 4);
    CHECK_EQ(verify(x, &a->members[M_D]), 0);
    CHECK_EQ(verify(x, &a->members[M_S]), 0);
    indexer_free(x);
    archive_close(a);
    a = open_archive(path);
    if (!a)
        goto out;
    x = new_indexer(a);
    indexer_use(x, &a->members[M_D]);
    indexer_use(x, &a->members[M_S]);
    CHECK(has_table(&a->members[M_D]));
    CHECK(has_table(&a->members[M_S]));
    indexer_free(x);
out:
    archive_close(a);
    unlink(path);
    free(path);
}

/* index=lazy: at unmount (indexer_stop()) an index that reads completed
 * is saved, without a table (no pass checked it); one read halfway is
 * not. A later open loads the saved points. */
static void test_lazy_unmount_save(void)
{
    char *full = write_npz("lazy-full.npz"), *half = write_npz("lazy-half.npz");
    struct archive *a = open_archive(full), *b = open_archive(half);
    struct indexer *x = NULL, *y = NULL;
    struct archive_member *d;
    int files0 = index_files(NULL, 0);

    if (!a || !b)
        goto out;
    x = new_indexer(a);
    y = new_indexer(b);
    indexer_use(x, &a->members[M_D]);
    indexer_use(y, &b->members[M_D]);
    read_through(a, &a->members[M_D], a->members[M_D].size, zdata[M_D]);
    read_through(b, &b->members[M_D], b->members[M_D].size / 2, zdata[M_D]);
    CHECK(index_complete(&a->members[M_D]));
    CHECK(!index_complete(&b->members[M_D]));
    indexer_stop(x);
    CHECK_EQ(index_files(NULL, 0), files0 + 1);
    indexer_stop(y);
    CHECK_EQ(index_files(NULL, 0), files0 + 1);
    indexer_free(x);
    indexer_free(y);
    x = y = NULL;
    archive_close(a);
    archive_close(b);
    b = NULL;

    a = open_archive(full);
    if (!a)
        goto out;
    x = new_indexer(a);
    d = &a->members[M_D];
    indexer_use(x, d);
    CHECK(dfx_index_points(d->ix) > 1);
    CHECK(index_complete(d));
    CHECK(!has_table(d)); /* no pass checked it */
    {
        long warm = chunks_to_read(a, d, (d->size - 1) / CH, zdata[M_D]);

        CHECK(warm >= 1 && warm <= (long)(SPACING / CH) + 2);
    }
    /* stopping again saves nothing more */
    indexer_stop(x);
    CHECK_EQ(index_files(NULL, 0), files0 + 1);
    indexer_free(x);
    x = NULL;
    archive_close(a);
    a = open_archive(half);
    if (!a)
        goto out;
    x = new_indexer(a);
    indexer_use(x, &a->members[M_D]);
    CHECK_EQ(dfx_index_points(a->members[M_D].ix), 1);
out:
    indexer_free(x);
    indexer_free(y);
    archive_close(a);
    archive_close(b);
    unlink(full);
    unlink(half);
    free(full);
    free(half);
}

/* gzip: a file's key holds only its last trailer, so its index is saved and
 * loaded only with the chunk table that catches a rewrite of an earlier
 * member. Read to the end (no table): not saved at unmount; after the full
 * pass: saved, and loaded with its table. A multi-member file sized by a
 * full pass at open has its table from the start: saved at unmount. */
static void test_gzip(void)
{
    size_t n1, n2 = 2 * MiB + 1;
    unsigned char *npy = ft_npy(3 * MiB, true, 21, &n1), *more = ft_data(n2, true, 22);
    unsigned char *all = malloc(n1 + n2);
    const unsigned char *one[1] = {npy}, *two[2] = {npy, more};
    size_t l_one[1] = {n1}, l_two[2] = {n1, n2};
    char *p1 = ft_path(top, "g.npy.gz"), *p2 = ft_path(top, "multi.npy.gz");
    struct archive *a = NULL;
    struct indexer *x = NULL;
    struct archive_member *m;
    int files0;

    memcpy(all, npy, n1);
    memcpy(all + n1, more, n2);
    if (ft_write_gzip(p1, one, l_one, 1) < 0 || ft_write_gzip(p2, two, l_two, 2) < 0)
        exit(2);
    files0 = index_files(NULL, 0);
    a = open_archive(p1);
    if (!a)
        goto out;
    x = new_indexer(a);
    m = &a->members[0];
    CHECK(!has_table(m));
    indexer_use(x, m);
    read_through(a, m, m->size, npy);
    CHECK(index_complete(m));
    indexer_stop(x);
    CHECK_EQ(index_files(NULL, 0), files0); /* no table: not saved */
    indexer_free(x);
    archive_close(a);

    a = open_archive(p1);
    if (!a)
        goto out;
    x = new_indexer(a);
    m = &a->members[0];
    indexer_use(x, m);
    CHECK_EQ(dfx_index_points(m->ix), 1);
    CHECK_EQ(verify(x, m), 0);
    CHECK(has_table(m));
    CHECK_EQ(index_files(NULL, 0), files0 + 1);
    indexer_free(x);
    archive_close(a);

    a = open_archive(p1);
    if (!a)
        goto out;
    x = new_indexer(a);
    m = &a->members[0];
    indexer_use(x, m);
    CHECK(has_table(m));
    CHECK(index_complete(m));
    CHECK(dfx_index_points(m->ix) > 1);
    CHECK(chunks_to_read(a, m, (m->size - 1) / CH, npy) <= (long)(SPACING / CH) + 2);
    indexer_free(x);
    archive_close(a);

    /* several members: sized, checked and given a table by the pass at open */
    a = open_archive(p2);
    if (!a)
        goto out;
    x = new_indexer(a);
    m = &a->members[0];
    CHECK(has_table(m));
    CHECK(index_complete(m));
    indexer_use(x, m);
    CHECK_EQ(verify(x, m), 0); /* has its table: nothing to do */
    indexer_stop(x);
    CHECK_EQ(index_files(NULL, 0), files0 + 2);
    indexer_free(x);
    archive_close(a);
    a = open_archive(p2);
    if (!a)
        goto out;
    x = new_indexer(a);
    m = &a->members[0];
    indexer_use(x, m);
    CHECK(ft_log_has("member 'multi.npy': index loaded"));
    CHECK(chunks_to_read(a, m, (m->size - 1) / CH, all) <= (long)(SPACING / CH) + 2);
out:
    indexer_free(x);
    archive_close(a);
    unlink(p1);
    unlink(p2);
    free(p1);
    free(p2);
    free(npy);
    free(more);
    free(all);
}

struct opener {
    pthread_t t;
    struct indexer *x;
    struct archive_member *m;
    struct ft_barrier *bar;
    int ret;
};

static void *opener(void *arg)
{
    struct opener *o = arg;

    ft_barrier_wait(o->bar);
    indexer_use(o->x, o->m);
    o->ret = verify(o->x, o->m);
    return NULL;
}

/* A mount's opener pool, running. */
static struct defer *pool_start(void)
{
    struct defer *d = NULL;

    if (defer_new(DEFER_THREADS, &d) < 0)
        exit(2);
    defer_start(d);
    return d;
}

/* Many first opens of one member at once (strict verification), the passes
 * in the opener pool: one load, one pass, every open answered when the
 * table exists; a damaged member fails all of them, and every later one. */
static void test_concurrent_opens(void)
{
    char *path = write_npz("conc.npz");
    struct archive *a = open_archive(path);
    struct indexer *x = NULL;
    struct opener o[6];
    struct ft_barrier bar;
    size_t len;
    unsigned char *p;
    char *bad = ft_path(top, "conc-bad.npz");
    int files0 = index_files(NULL, 0);

    ft_barrier_init(&bar, 6);
    if (!a)
        goto out;
    pool = pool_start();
    x = new_indexer(a);
    for (int i = 0; i < 6; i++) {
        o[i] = (struct opener){.x = x, .m = &a->members[i % 2 ? M_S : M_D], .bar = &bar};
        pthread_create(&o[i].t, NULL, opener, &o[i]);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(o[i].t, NULL);
        CHECK_EQ(o[i].ret, 0);
    }
    CHECK(has_table(&a->members[M_D]));
    CHECK(has_table(&a->members[M_S]));
    defer_free(pool); /* joins the passes, which saved the files */
    pool = NULL;
    CHECK_EQ(index_files(NULL, 0), files0 + 2);
    indexer_free(x);
    archive_close(a);
    x = NULL;

    /* the same with the deflate data damaged halfway */
    p = ft_read_file(path, &len);
    p[zm[M_D].data_offset + zm[M_D].csize / 2] ^= 0x40;
    CHECK_EQ(ft_write_file(bad, p, len), 0);
    free(p);
    a = open_archive(bad);
    if (!a)
        goto out;
    pool = pool_start();
    x = new_indexer(a);
    ft_log_clear();
    for (int i = 0; i < 6; i++) {
        o[i] = (struct opener){.x = x, .m = &a->members[M_D], .bar = &bar};
        pthread_create(&o[i].t, NULL, opener, &o[i]);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(o[i].t, NULL);
        CHECK_EQ(o[i].ret, -EIO);
    }
    CHECK_EQ(verify(x, &a->members[M_D]), -EIO);
    CHECK(!has_table(&a->members[M_D]));
    CHECK(ft_log_has("member 'd.npy'"));
    CHECK_EQ(verify(x, &a->members[M_S]), 0); /* the other member is fine */
    defer_free(pool);
    pool = NULL;
out:
    ft_barrier_destroy(&bar);
    indexer_free(x);
    archive_close(a);
    unlink(path);
    unlink(bad);
    free(bad);
    free(path);
}

/* A file built with another spacing is used as it is: its points are
 * valid whatever spacing the mount would build with. */
static void test_other_spacing(void)
{
    char *path = write_npz("spacing.npz");
    struct archive *a = open_archive(path), *b = NULL;
    struct indexer *x = NULL;
    struct archive_member *d;

    if (!a)
        goto out;
    x = new_indexer(a);
    CHECK_EQ(verify(x, &a->members[M_D]), 0);
    indexer_free(x);
    x = NULL;
    CHECK_EQ(archive_open(path, 4 * SPACING, NULL, &b), 0);
    if (!b)
        goto out;
    x = new_indexer(b);
    d = &b->members[M_D];
    indexer_use(x, d);
    CHECK(has_table(d));
    CHECK(dfx_index_points(d->ix) > d->size / (4 * SPACING) + 1); /* the file's points */
    CHECK(chunks_to_read(b, d, (d->size - 1) / CH, zdata[M_D]) <= (long)(SPACING / CH) + 2);
out:
    indexer_free(x);
    archive_close(a);
    archive_close(b);
    unlink(path);
    free(path);
}

/* bytes of the index files in dir */
static uint64_t dir_bytes(const char *dir, int *count)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    uint64_t bytes = 0;

    *count = 0;
    while (d && (de = readdir(d))) {
        struct stat st;
        char *f;

        if (de->d_name[0] == '.' || strstr(de->d_name, ".tmp"))
            continue;
        f = ft_path(dir, de->d_name);
        if (stat(f, &st) == 0) {
            bytes += (uint64_t)st.st_size;
            ++*count;
        }
        free(f);
    }
    if (d)
        closedir(d);
    return bytes;
}

/* -o index_max=: saves keep the index directory within its size cap by
 * removing the least recently used files, never the one just saved nor
 * one in use. With a cap of one and a half files, each save leaves only
 * itself (the archives before it are closed: their files not in use). */
static void test_index_max(void)
{
    struct options saved = opts;
    char *dir = ft_path(top, "capped"), *paths[4], name[32];
    struct archive *keep = NULL, *a;
    struct indexer *keeper = NULL, *x;
    uint64_t one = 0, bytes;
    int count;

    opts.index_dir = dir;
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof(name), "cap%d.npz", i);
        paths[i] = write_npz(name);
    }
    /* an indexer that keeps the directory open across the mounts below */
    keep = open_archive(paths[3]);
    if (keep)
        keeper = new_indexer(keep);
    ft_log_clear();
    for (int i = 0; i < 3; i++) {
        a = open_archive(paths[i]);
        if (!a)
            continue;
        x = new_indexer(a);
        CHECK_EQ(verify(x, &a->members[M_D]), 0);
        indexer_free(x);
        archive_close(a);
        bytes = dir_bytes(dir, &count);
        if (i == 0) {
            one = bytes;
            opts.index_max = one * 3 / 2; /* the next indexer sets it */
            CHECK_EQ(count, 1);
        } else {
            CHECK_EQ(count, 1);
            CHECK(bytes <= opts.index_max);
        }
    }
    CHECK(ft_log_has("least recently used index file"));
    /* the last one saved loads; the first one's file is gone */
    for (int i = 0; i < 3; i += 2) {
        a = open_archive(paths[i]);
        if (!a)
            continue;
        x = new_indexer(a);
        indexer_use(x, &a->members[M_D]);
        CHECK_EQ(has_table(&a->members[M_D]), i == 2);
        indexer_free(x);
        archive_close(a);
    }
    indexer_free(keeper);
    archive_close(keep);
    for (int i = 0; i < 4; i++) {
        unlink(paths[i]);
        free(paths[i]);
    }
    opts = saved;
    free(dir);
}

/* index=background: started and stopped at once (an unmount right after the
 * mount): the thread is joined, whatever it had done; nothing leaks. */
static void test_background_stop(void)
{
    char *path = write_npz("bg.npz");
    struct options bg = opts;
    struct archive *a = open_archive(path);
    struct indexer *x = NULL;

    bg.index_mode = OPTIONS_INDEX_BACKGROUND;
    if (a && indexer_new(a, &bg, pool, NULL, &x) == 0) {
        indexer_start(x);
        indexer_stop(x);
        indexer_stop(x); /* again: nothing */
        indexer_free(x);
    }
    archive_close(a);
    unlink(path);
    free(path);
}

int main(void)
{
    ft_log_capture();
    top = ft_tempdir("test_fs_indexer");
    idx_dir = ft_path(top, "index");
    opts.spacing = SPACING;
    opts.index_mode = OPTIONS_INDEX_LAZY;
    opts.verify = OPTIONS_VERIFY_STRICT;
    opts.cache_size = 64ull << 20;
    opts.index_dir = idx_dir;
    zdata[M_D] = ft_data(6 * MiB + 11, true, 1);
    zdata[M_S] = ft_data(MiB + 5, false, 2);
    zdata[M_SMALL] = ft_data(50000, true, 3);
    zdata[M_EMPTY] = ft_data(0, true, 4);
    zm[M_D] = (struct ft_member){.name = "d.npy", .data = zdata[M_D], .len = 6 * MiB + 11,
                                 .method = 8, .level = 1};
    zm[M_S] = (struct ft_member){.name = "s.npy", .data = zdata[M_S], .len = MiB + 5};
    zm[M_SMALL] = (struct ft_member){.name = "small.npy", .data = zdata[M_SMALL], .len = 50000,
                                     .method = 8};
    zm[M_EMPTY] = (struct ft_member){.name = "e.npy", .data = zdata[M_EMPTY], .method = 8};

    test_build_and_load();
    test_stale();
    test_damaged_file();
    test_lazy_unmount_save();
    test_gzip();
    test_concurrent_opens();
    test_other_spacing();
    test_index_max();
    test_background_stop();

    for (int i = 0; i < M_COUNT; i++)
        free(zdata[i]);
    ft_rmtree(top);
    free(top);
    free(idx_dir);
    return check_exit("test_fs_indexer");
}
