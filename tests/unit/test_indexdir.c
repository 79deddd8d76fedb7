/*
 * fs/indexdir.c: the index directory around the codec (test_dfx_store.c).
 * The directory is created 0700 and checked once, through its descriptor,
 * and used through it; the default directory follows XDG, HOME and the
 * password database; files are written atomically (nothing left behind on
 * failure), found by name but never trusted by it, never through a symlink
 * or a FIFO, kept open while loaded (a file truncated or overwritten on
 * disk while loaded never yields wrong bytes, and never faults); pruning
 * removes only what is ours and what it should, and never a file loaded
 * here or just saved. Index files go to a fresh directory under $TMPDIR.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "dfx.h"
#include "dfx_fixture.h"
#include "dfx_internal.h"
#include "indexdir.h"

#define STORE_TEST_NAME 64

static char tmpdir[256];
static struct indexdir *sdir; /* tmpdir/store, opened */

/* The fixture's index file path (free()), or NULL. The result comes
 * through a heap copy rather than straight from the local that
 * indexdir_file_path() fills: GCC 12 took the returned pointer for one to
 * that local (-Wdangling-pointer), wrongly. */
static char *index_path(const struct fixture *f)
{
    char *p = NULL, *copy;

    if (indexdir_file_path(sdir, &f->key, &p) < 0)
        return NULL;
    copy = strdup(p);
    free(p);
    return copy;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    unsigned char *p = NULL;

    if (fd >= 0 && fstat(fd, &st) == 0 && (p = malloc((size_t)st.st_size + 1)) &&
        pread(fd, p, (size_t)st.st_size, 0) == st.st_size)
        *len = (size_t)st.st_size;
    else if (p) {
        free(p);
        p = NULL;
    }
    if (fd >= 0)
        close(fd);
    return p;
}

static int spit(const char *path, const unsigned char *p, size_t len)
{
    /* a new file each time: ext4 flushes a file rewritten in place on close */
    int fd = (unlink(path), open(path, O_WRONLY | O_CREAT | O_EXCL, 0600));
    int ok = fd >= 0 && write(fd, p, len) == (ssize_t)len;

    if (fd >= 0)
        close(fd);
    return ok ? 0 : -1;
}

static char *in_dir(const char *dir, const char *name)
{
    char *p = NULL;

    return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

/* Files in dir whose name ends in ".tmp". */
static int temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    while (d && (de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        n += len > 4 && strcmp(de->d_name + len - 4, ".tmp") == 0;
    }
    if (d)
        closedir(d);
    return n;
}

/* Load f's saved file into a fresh index: the errno, and whether the fresh
 * index kept only its point 0 (and no table came back) on failure. */
static int try_load(struct fixture *f, bool *untouched)
{
    struct dfx_index *ix;
    struct dfx_crcs *t = (void *)1;
    int ret;

    if (dfx_index_new(&f->st, SPACING, &ix) < 0)
        return -999;
    ret = indexdir_load(sdir, &f->key, ix, CHUNK, NULL, &t, NULL);
    *untouched = dfx_index_points(ix) == 1 && dfx_index_total(ix) == UINT64_MAX && !t;
    free(t);
    dfx_index_free(ix);
    return ret;
}

static void set_age(const char *path, int64_t secs)
{
    struct timespec t[2];

    clock_gettime(CLOCK_REALTIME, &t[0]);
    t[0].tv_sec -= secs;
    t[1] = t[0];
    utimensat(AT_FDCWD, path, t, AT_SYMLINK_NOFOLLOW);
}

/* ---- cases ---- */

/* A save puts one file of the user's, mode 0600, at the key's name, and no
 * temporary file; a load finds it (and bumps its mtime), reads without
 * touching the archive; no file: -ENOENT. */
static void check_save_load(uint64_t *s)
{
    struct fixture f;
    struct dfx_index *built, *ix;
    struct dfx_crcs *table, *got = NULL;
    struct stat st;
    char *path;
    char dirpath[300];

    CHECK(fixture_init(&f, 2u << 20, 2, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    table = table_of(&f, s);
    path = index_path(&f);
    CHECK_EQ(try_load(&f, &(bool){false}), -ENOENT);
    CHECK(built && table && indexdir_save(sdir, &f.key, built, table) == 0);
    CHECK(path && stat(path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0600 &&
          st.st_uid == geteuid());
    snprintf(dirpath, sizeof(dirpath), "%s", indexdir_path(sdir));
    CHECK_EQ(temp_files(dirpath), 0);
    {
        char name[DFX_STORE_NAME_MAX];
        dfx_store_name(&f.key, name);
        CHECK(path && strcmp(strrchr(path, '/') + 1, name) == 0);
    }
    if (path)
        set_age(path, 1000);
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    count_reset(f.src);
    CHECK_EQ(indexdir_load(sdir, &f.key, ix, CHUNK, NULL, &got, NULL), 0);
    CHECK_EQ(f.src->preads, 0);
    CHECK(built && same_points(built, ix));
    CHECK(same_table(table, got));
    CHECK(path && stat(path, &st) == 0 && st.st_mtime >= time(NULL) - 60); /* used now */
    CHECK_EQ(random_extracts(ix, &f, s, 20), 0);
    dfx_index_free(ix);
    /* a stored member's file: the table alone */
    f.key.stored_size = f.len;
    CHECK(table && indexdir_save(sdir, &f.key, NULL, table) == 0);
    free(got);
    got = NULL;
    CHECK_EQ(indexdir_load(sdir, &f.key, NULL, CHUNK, NULL, &got, NULL), 0);
    CHECK(same_table(table, got));
    /* incomplete: refused before any file is made */
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    f.key.ino++;
    CHECK_EQ(indexdir_save(sdir, &f.key, ix, NULL), -EAGAIN);
    CHECK_EQ(try_load(&f, &(bool){false}), -ENOENT);
    CHECK_EQ(temp_files(dirpath), 0);
    dfx_index_free(ix);
    free(got);
    free(path);
    free(table);
    dfx_index_free(built);
    fixture_destroy(&f);
}

/* The name is never trusted: another key's file linked under this key's
 * name is stale. What sits at the name is opened without following a link
 * or blocking: a symlink or a FIFO is refused as damaged. */
static void check_what_is_at_the_name(uint64_t *s)
{
    struct fixture f;
    struct dfx_index *built;
    struct dfx_store_key k;
    char *p1, *p2;
    bool untouched;

    CHECK(fixture_init(&f, 1u << 20, 1, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    CHECK(built && indexdir_save(sdir, &f.key, built, NULL) == 0);
    k = f.key;
    p1 = index_path(&f);
    f.key.ino++;
    p2 = index_path(&f);
    CHECK(p1 && p2 && strcmp(p1, p2) != 0);
    CHECK(p1 && p2 && link(p1, p2) == 0);
    CHECK_EQ(try_load(&f, &untouched), -ESTALE);
    CHECK(untouched);
    if (p2)
        unlink(p2);
    /* a symlink at the name, even to a valid file: never followed */
    CHECK(p1 && p2 && symlink(p1, p2) == 0);
    f.key = k;
    CHECK_EQ(try_load(&f, &untouched), 0); /* through its own name: fine */
    f.key.ino++;
    CHECK_EQ(try_load(&f, &untouched), -EBADMSG);
    CHECK(untouched);
    if (p2)
        unlink(p2);
    /* a FIFO at the name: refused at once (a plain open would block) */
    CHECK(p2 && mkfifo(p2, 0600) == 0);
    CHECK_EQ(try_load(&f, &untouched), -EBADMSG);
    if (p2)
        unlink(p2);
    CHECK_EQ(try_load(&f, &untouched), -ENOENT);
    f.key = k;
    free(p1);
    free(p2);
    dfx_index_free(built);
    fixture_destroy(&f);
}

/* The directory is created 0700, checked once through its descriptor:
 * the user's, not writable by group or others, writable by us. */
static void check_dirs(void)
{
    struct indexdir *d = NULL;
    char *dp = NULL, *nested = NULL, *link = NULL;

    CHECK(asprintf(&nested, "%s/a/b/c", tmpdir) > 0);
    CHECK_EQ(indexdir_open(nested, &d), 0);
    CHECK(d && strcmp(indexdir_path(d), nested) == 0);
    indexdir_close(d);
    {
        struct stat st;
        char *mid = in_dir(tmpdir, "a/b");
        CHECK(mid && stat(mid, &st) == 0 && (st.st_mode & 0777) == 0700);
        free(mid);
    }
    CHECK_EQ(indexdir_open(nested, &d), 0);
    indexdir_close(d);
    if (geteuid() != 0) {
        chmod(nested, 0500);
        CHECK_EQ(indexdir_open(nested, &d), -EACCES);
    }
    chmod(nested, 0777);
    CHECK_EQ(indexdir_open(nested, &d), -EPERM);
    chmod(nested, 0770); /* group-writable: another user could plant files */
    d = (void *)1;
    CHECK_EQ(indexdir_open(nested, &d), -EPERM);
    CHECK(d == NULL);
    chmod(nested, 0720);
    CHECK_EQ(indexdir_open(nested, &d), -EPERM);
    chmod(nested, 0750); /* readable by the group is fine */
    CHECK_EQ(indexdir_open(nested, &d), 0);
    indexdir_close(d);
    /* a symlink of the user's own, given as the directory: followed */
    CHECK(asprintf(&link, "%s/link", tmpdir) > 0);
    CHECK(symlink(nested, link) == 0);
    CHECK_EQ(indexdir_open(link, &d), 0);
    indexdir_close(d);
    /* ... but the target is checked all the same */
    chmod(nested, 0770);
    CHECK_EQ(indexdir_open(link, &d), -EPERM);
    unlink(link);
    free(link);
    rmdir(nested);
    free(nested);
    CHECK(asprintf(&nested, "%s/file", tmpdir) > 0);
    spit(nested, (const unsigned char *)"x", 1);
    CHECK(indexdir_open(nested, &d) < 0);
    unlink(nested);
    free(nested);

    setenv("XDG_CACHE_HOME", "/x/cache", 1);
    CHECK(indexdir_default_dir(&dp) == 0 && strcmp(dp, "/x/cache/npyfs") == 0);
    free(dp);
    setenv("XDG_CACHE_HOME", "relative", 1);
    setenv("HOME", "/home/u", 1);
    CHECK(indexdir_default_dir(&dp) == 0 && strcmp(dp, "/home/u/.cache/npyfs") == 0);
    free(dp);
    unsetenv("XDG_CACHE_HOME");
    unsetenv("HOME");
    /* without HOME (a boot-time mount): the password database's home */
    {
        struct passwd *pw = getpwuid(geteuid()); /* single-threaded here */
        char *want = NULL;
        int r = indexdir_default_dir_from(NULL, NULL, pw ? pw->pw_dir : NULL, geteuid(),
                                          &want);
        CHECK_EQ(indexdir_default_dir(&dp), r);
        CHECK(r < 0 || (dp && want && strcmp(dp, want) == 0));
        free(want);
        free(dp);
    }
    CHECK(indexdir_default_dir_from(NULL, NULL, tmpdir, 1000, &dp) == 0 &&
          strncmp(dp, tmpdir, strlen(tmpdir)) == 0 &&
          strcmp(dp + strlen(tmpdir), "/.cache/npyfs") == 0);
    free(dp);
    /* then /var/cache/npyfs for root; nothing for another user */
    CHECK(indexdir_default_dir_from(NULL, NULL, "/", 0, &dp) == 0 &&
          strcmp(dp, "/var/cache/npyfs") == 0);
    free(dp);
    CHECK(indexdir_default_dir_from(NULL, NULL, NULL, 0, &dp) == 0 &&
          strcmp(dp, "/var/cache/npyfs") == 0);
    free(dp);
    CHECK(indexdir_default_dir_from(NULL, "", "/nonexistent/x", 0, &dp) == 0 &&
          strcmp(dp, "/var/cache/npyfs") == 0);
    free(dp);
    dp = (void *)1;
    CHECK_EQ(indexdir_default_dir_from(NULL, NULL, "/", 1000, &dp), -ENOENT);
    CHECK(dp == NULL);
    CHECK_EQ(indexdir_default_dir_from(NULL, NULL, "relative", 1000, &dp), -ENOENT);
    CHECK_EQ(indexdir_default_dir_from(NULL, NULL, "/nonexistent/x", 1000, &dp), -ENOENT);
    CHECK_EQ(indexdir_default_dir_from(NULL, NULL, NULL, 1000, &dp), -ENOENT);
    /* HOME and XDG_CACHE_HOME still come first */
    CHECK(indexdir_default_dir_from(NULL, "/home/u", tmpdir, 0, &dp) == 0 &&
          strcmp(dp, "/home/u/.cache/npyfs") == 0);
    free(dp);
}

static bool exists_in(const char *dir, const struct fixture *f)
{
    struct indexdir *d;
    char *p = NULL;
    bool there;

    if (indexdir_open(dir, &d) < 0)
        return false;
    indexdir_file_path(d, &f->key, &p);
    there = p && access(p, F_OK) == 0;
    free(p);
    indexdir_close(d);
    return there;
}

/* Once opened, the directory is used through its descriptor: swapping its
 * path for a symlink to another directory changes nothing (saves and loads
 * stay in the directory that was checked), and a mode that changes later
 * (group-writable) is refused at the next save or load. */
static void check_dir_swapped(uint64_t *s)
{
    struct fixture f;
    struct indexdir *d = NULL;
    struct dfx_index *built, *ix;
    char *dir = NULL, *moved = NULL, *other = NULL;
    struct dfx_crcs *t = NULL;

    CHECK(fixture_init(&f, 1u << 20, 1, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    CHECK(asprintf(&dir, "%s/swap", tmpdir) > 0 && asprintf(&moved, "%s/swap.moved", tmpdir) > 0 &&
          asprintf(&other, "%s/elsewhere", tmpdir) > 0);
    CHECK_EQ(indexdir_open(dir, &d), 0);
    CHECK(mkdir(other, 0700) == 0);
    CHECK(rename(dir, moved) == 0);
    CHECK(symlink(other, dir) == 0); /* the path now leads elsewhere */
    CHECK(built && d && indexdir_save(d, &f.key, built, NULL) == 0);
    CHECK(exists_in(moved, &f));
    CHECK(!exists_in(other, &f));
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK(d && indexdir_load(d, &f.key, ix, CHUNK, NULL, &t, NULL) == 0);
    CHECK_EQ(random_extracts(ix, &f, s, 5), 0);
    dfx_index_free(ix);
    /* a mode that changes after the check is caught at the next use */
    chmod(moved, 0770);
    CHECK(d && indexdir_save(d, &f.key, built, NULL) == -EPERM);
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK(d && indexdir_load(d, &f.key, ix, CHUNK, NULL, &t, NULL) == -EPERM);
    CHECK_EQ(dfx_index_points(ix), 1);
    dfx_index_free(ix);
    chmod(moved, 0700);
    indexdir_close(d);
    unlink(dir);
    free(dir);
    free(moved);
    free(other);
    dfx_index_free(built);
    fixture_destroy(&f);
}

/* Change the loaded file on disk in place (the inode the index holds open):
 * truncate it, or overwrite its windows with garbage or with another
 * point's valid window. Every read stays exact (or fails), windows that no
 * longer read back are dropped, and nothing faults (the loader used to map
 * the file: truncating it was SIGBUS). */
static void check_file_changed_while_loaded(uint64_t *s)
{
    struct fixture f;
    struct dfx_index *built, *ix;
    char *path;
    size_t len = 0, usable0, usable1;
    uint64_t wb;
    unsigned char *orig;

    CHECK(fixture_init(&f, 3u << 20, 2, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    CHECK(built && indexdir_save(sdir, &f.key, built, NULL) == 0);
    path = index_path(&f);
    orig = path ? slurp(path, &len) : NULL;
    for (int how = 0; orig && how < 3; how++) {
        int fd;

        spit(path, orig, len);
        CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
        CHECK_EQ(indexdir_load(sdir, &f.key, ix, CHUNK, NULL, NULL, NULL), 0);
        dfx_index_memory(ix, &usable0, &wb);
        CHECK(usable0 > 10);
        CHECK_EQ(wb, 0); /* windows stay in the file */
        fd = open(path, O_WRONLY);
        CHECK(fd >= 0);
        if (how == 0) {
            CHECK(ftruncate(fd, 200) == 0);
        } else {
            /* the windows lie between the padded name and the point table */
            size_t poff = (size_t)(orig[56] | orig[57] << 8 | orig[58] << 16 |
                                   (size_t)orig[59] << 24);
            unsigned char *g = malloc(len);
            memcpy(g, orig, len);
            if (how == 1) {
                for (size_t i = 144; i < poff; i++)
                    g[i] = (unsigned char)rnd(s);
            } else {
                size_t half = (poff - 144) / 2;
                memcpy(g + 144, orig + 144 + half, poff - 144 - half);
                memcpy(g + 144 + (poff - 144 - half), orig + 144, half);
            }
            CHECK(pwrite(fd, g, len, 0) == (ssize_t)len);
            free(g);
        }
        close(fd);
        CHECK_EQ(random_extracts(ix, &f, s, 40), 0);
        dfx_index_memory(ix, &usable1, &wb);
        CHECK(usable1 < usable0); /* bad windows were dropped */
        dfx_index_free(ix);
    }
    free(orig);
    free(path);
    dfx_index_free(built);
    fixture_destroy(&f);
}

/* The indexing pass writes windows to the temporary file as it records its
 * points (a sink); finishing renames it into place. A writer that is
 * refused (a gzip member without a table) or aborted leaves nothing. */
static void check_streaming_writer(uint64_t *s)
{
    struct fixture f;
    struct indexdir_writer *w = NULL;
    struct dfx_index *twin, *ix;
    struct dfx_reader *r;
    struct dfx_crcs *table, *got = NULL;
    struct dfx_sink sink;
    unsigned char *buf = malloc(1 << 20);
    char dirpath[300];
    int64_t n;

    snprintf(dirpath, sizeof(dirpath), "%s", indexdir_path(sdir));
    for (int framing = 0; framing < 3; framing++) {
        CHECK(fixture_init(&f, 3u << 20, 3, framing == 1 ? DFX_GZIP : DFX_RAW, s) == 0);
        f.key.ino += 1000 + (uint64_t)framing;
        table = table_of(&f, s);
        CHECK_EQ(indexdir_begin(sdir, &f.key, SPACING, &w), 0);
        CHECK_EQ(temp_files(dirpath), 1);
        CHECK_EQ(dfx_index_new(&f.st, SPACING, &twin), 0);
        indexdir_sink(w, &sink);
        dfx_index_set_sink(twin, &sink);
        CHECK_EQ(dfx_reader_new(twin, 0, &r), 0);
        while ((n = dfx_reader_read(r, buf, 1 << 20)) > 0)
            ;
        dfx_reader_free(r);
        CHECK_EQ(n, 0);
        if (framing == 2)
            indexdir_abort(w);
        else if (framing == 1) /* no table: refused, and nothing left behind */
            CHECK_EQ(indexdir_finish(w, twin, NULL), -EINVAL);
        else
            CHECK_EQ(indexdir_finish(w, twin, table), 0);
        CHECK_EQ(temp_files(dirpath), 0);
        CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
        CHECK_EQ(indexdir_load(sdir, &f.key, ix, CHUNK, NULL, &got, NULL), framing ? -ENOENT : 0);
        if (!framing) {
            CHECK(same_table(table, got));
            CHECK(same_points(twin, ix));
            CHECK_EQ(random_extracts(ix, &f, s, 30), 0);
        }
        free(got);
        got = NULL;
        dfx_index_free(ix);
        dfx_index_free(twin);
        free(table);
        fixture_destroy(&f);
    }
    free(buf);
}

/* ---- pruning ---- */

/* What a prune reported: names and reasons, in order. */
struct pruned {
    char names[32][STORE_TEST_NAME];
    int why[32];
    int n;
};

static void note_pruned(const struct indexdir_prune_file *f, void *arg)
{
    struct pruned *p = arg;

    if (p->n < 32) {
        snprintf(p->names[p->n], STORE_TEST_NAME, "%s", f->name);
        p->why[p->n++] = (int)f->why;
    }
}

/* The reason the prune gave for the file called name, or -1. */
static int pruned_why(const struct pruned *p, const char *name)
{
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->names[i], name) == 0)
            return p->why[i];
    return -1;
}

/* The name part of an index file's path. */
static const char *base_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash ? slash + 1 : path;
}

/* An archive file at dir/name with len bytes (its stat is the key's). */
static int make_archive(const char *dir, const char *name, size_t len, char **path,
                        struct stat *st)
{
    unsigned char buf[256] = {0};
    int fd;

    if (asprintf(path, "%s/%s", dir, name) < 0)
        return -1;
    fd = open(*path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -1;
    for (size_t done = 0; done < len; done += sizeof(buf))
        if (write(fd, buf, len - done < sizeof(buf) ? len - done : sizeof(buf)) < 0)
            break;
    close(fd);
    return stat(*path, st);
}

/* f's key for the archive at path (st), recording path (may be NULL). */
static struct dfx_store_key key_for(const struct fixture *f, const struct stat *st,
                                    const char *path)
{
    struct dfx_store_key k = f->key;

    k.dev = (uint64_t)st->st_dev;
    k.ino = (uint64_t)st->st_ino;
    k.size = (uint64_t)st->st_size;
    k.mtime_sec = st->st_mtim.tv_sec;
    k.mtime_nsec = (uint32_t)st->st_mtim.tv_nsec;
    k.path = path;
    return k;
}

/* npyfs index --prune: files whose archive is gone or changed, unused too
 * long when it cannot be checked, older formats, damaged headers, stale
 * temporary files go; everything else stays, and nothing that is not ours
 * (no magic, a symlink, another name) is touched. */
static void check_prune_sources(uint64_t *s)
{
    struct fixture f;
    struct dfx_index *built;
    struct indexdir *d = NULL;
    struct dfx_store_key k;
    struct indexdir_prune_result res;
    struct pruned got = {0};
    struct indexdir_prune_opts o = {.sources = true, .unused_secs = 30 * 86400};
    char *dir = in_dir(tmpdir, "prune"), *arch = in_dir(tmpdir, "archives"), *outside;
    char *a1, *a2, *a3, *pa1, *pa2, *pa3, *pnone_old, *pnone_new, *pold, *pbad, *pnew;
    char *tmp_old, *tmp_young, *foreign, *link, *other_name;
    struct stat st1, st2, st3, st4, st5;
    unsigned char *file;
    size_t len = 0;

    CHECK(fixture_init(&f, 300000, 1, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    CHECK(dir && arch && mkdir(arch, 0700) == 0);
    CHECK(built && indexdir_open(dir, &d) == 0);
    if (!built || !d)
        goto out;
    CHECK(make_archive(arch, "a1.npz", 1000, &a1, &st1) == 0);
    CHECK(make_archive(arch, "a2.npz", 1000, &a2, &st2) == 0);
    CHECK(make_archive(arch, "a3.npz", 1000, &a3, &st3) == 0);
    CHECK(make_archive(arch, "a4.npz", 1000, &outside, &st4) == 0); /* key only */
    CHECK(make_archive(arch, "a5.npz", 1000, &other_name, &st5) == 0);
    /* a1 stays; a2 goes; a3 changes */
    k = key_for(&f, &st1, a1);
    CHECK(indexdir_save(d, &k, built, NULL) == 0 && indexdir_file_path(d, &k, &pa1) == 0);
    k = key_for(&f, &st2, a2);
    CHECK(indexdir_save(d, &k, built, NULL) == 0 && indexdir_file_path(d, &k, &pa2) == 0);
    k = key_for(&f, &st3, a3);
    CHECK(indexdir_save(d, &k, built, NULL) == 0 && indexdir_file_path(d, &k, &pa3) == 0);
    unlink(a2);
    CHECK(truncate(a3, 999) == 0);
    /* no path recorded: by age */
    k = key_for(&f, &st4, NULL);
    CHECK(indexdir_save(d, &k, built, NULL) == 0 && indexdir_file_path(d, &k, &pnone_old) == 0);
    set_age(pnone_old, 31 * 86400);
    k = key_for(&f, &st5, NULL);
    CHECK(indexdir_save(d, &k, built, NULL) == 0 && indexdir_file_path(d, &k, &pnone_new) == 0);
    set_age(pnone_new, 29 * 86400);
    /* an older format, a damaged header, a newer format: copies of a1's */
    file = slurp(pa1, &len);
    CHECK(file && len > 200);
    pold = in_dir(dir, "000000000000000000000000.dfx");
    pbad = in_dir(dir, "000000000000000000000001.dfx");
    pnew = in_dir(dir, "000000000000000000000002.dfx");
    if (file && len > 200) {
        file[8] = 3;
        fix_crc(file, len);
        spit(pold, file, len);
        file[8] = DFX_STORE_VERSION;
        file[12] = 136; /* header length */
        spit(pbad, file, len);
        file[12] = 144;
        file[8] = DFX_STORE_VERSION + 1;
        spit(pnew, file, len);
    }
    /* temporary files: a dead writer's, a live one's */
    tmp_old = in_dir(dir, "000000000000000000000003.dfx.123.4.tmp");
    tmp_young = in_dir(dir, "000000000000000000000004.dfx.123.5.tmp");
    spit(tmp_old, (const unsigned char *)"partial", 7);
    spit(tmp_young, (const unsigned char *)"partial", 7);
    set_age(tmp_old, 2 * 86400);
    /* not ours: no magic; a symlink to an index file; another name */
    foreign = in_dir(dir, "111111111111111111111111.dfx");
    spit(foreign, (const unsigned char *)"not an index file", 17);
    set_age(foreign, 400 * 86400);
    link = in_dir(dir, "222222222222222222222222.dfx");
    free(outside);
    outside = in_dir(tmpdir, "outside.dfx");
    if (file) {
        file[8] = 3; /* an older format: would be removed if it were followed */
        spit(outside, file, len);
    }
    CHECK(symlink(outside, link) == 0);
    free(other_name);
    other_name = in_dir(dir, "notes.txt");
    spit(other_name, (const unsigned char *)"x", 1);
    set_age(other_name, 400 * 86400);

    CHECK_EQ(indexdir_prune(d, &o, note_pruned, &got, &res), 0);
    CHECK_EQ(pruned_why(&got, base_of(pa1)), -1);
    CHECK_EQ(pruned_why(&got, base_of(pa2)), INDEXDIR_PRUNE_GONE);
    CHECK_EQ(pruned_why(&got, base_of(pa3)), INDEXDIR_PRUNE_CHANGED);
    CHECK_EQ(pruned_why(&got, base_of(pnone_old)), INDEXDIR_PRUNE_UNUSED);
    CHECK_EQ(pruned_why(&got, base_of(pnone_new)), -1);
    CHECK_EQ(pruned_why(&got, base_of(pold)), INDEXDIR_PRUNE_FORMAT);
    CHECK_EQ(pruned_why(&got, base_of(pbad)), INDEXDIR_PRUNE_DAMAGED);
    CHECK_EQ(pruned_why(&got, base_of(pnew)), -1);
    CHECK_EQ(pruned_why(&got, base_of(tmp_old)), INDEXDIR_PRUNE_TEMP);
    CHECK_EQ(got.n, 6);
    CHECK_EQ(res.removed, 6);
    CHECK_EQ(res.kept, 3); /* a1's, the recent one without a path, the newer format's */
    CHECK_EQ(res.failed, 0);
    CHECK(access(pa1, F_OK) == 0 && access(pnone_new, F_OK) == 0 && access(pnew, F_OK) == 0);
    CHECK(access(pa2, F_OK) < 0 && access(pa3, F_OK) < 0 && access(pnone_old, F_OK) < 0 &&
          access(pold, F_OK) < 0 && access(pbad, F_OK) < 0 && access(tmp_old, F_OK) < 0);
    CHECK(access(tmp_young, F_OK) == 0 && access(foreign, F_OK) == 0 &&
          access(outside, F_OK) == 0 && access(other_name, F_OK) == 0);
    {
        struct stat lst;
        CHECK(lstat(link, &lst) == 0 && S_ISLNK(lst.st_mode));
    }
    /* a second run finds nothing more */
    got.n = 0;
    CHECK_EQ(indexdir_prune(d, &o, note_pruned, &got, &res), 0);
    CHECK_EQ(res.removed, 0);
    CHECK_EQ(res.kept, 3);
    /* without sources: the same files stay (the cap alone) */
    o.sources = false;
    set_age(pa1, 400 * 86400);
    CHECK_EQ(indexdir_prune(d, &o, NULL, NULL, &res), 0);
    CHECK_EQ(res.removed, 0);
    free(file);
    free(a1); free(a2); free(a3); free(pa1); free(pa2); free(pa3);
    free(pnone_old); free(pnone_new); free(pold); free(pbad); free(pnew);
    free(tmp_old); free(tmp_young); free(foreign); free(link); free(outside); free(other_name);
out:
    indexdir_close(d);
    free(dir);
    free(arch);
    dfx_index_free(built);
    fixture_destroy(&f);
}

/* The size cap: least recently used first (mtime: a load bumps it), never
 * a file loaded in this process, never the one a save has just written;
 * down to 90% of the cap. Saves prune on their own once a cap is set. */
static void check_prune_size(uint64_t *s)
{
    struct fixture f;
    struct dfx_index *built, *ix = NULL;
    struct indexdir *d = NULL;
    struct dfx_store_key k[5];
    struct indexdir_prune_result res;
    struct indexdir_prune_opts o = {0};
    struct pruned got = {0};
    char *dir = in_dir(tmpdir, "cap"), *p[5] = {0};
    struct stat st;
    uint64_t size = 0, files, bytes;

    CHECK(fixture_init(&f, 300000, 1, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    CHECK(built && dir && indexdir_open(dir, &d) == 0);
    if (!built || !d)
        goto out;
    for (int i = 0; i < 5; i++) {
        k[i] = f.key;
        k[i].ino += (uint64_t)i + 1;
        indexdir_file_path(d, &k[i], &p[i]);
    }
    for (int i = 0; i < 4; i++) {
        CHECK(indexdir_save(d, &k[i], built, NULL) == 0);
        set_age(p[i], 400 - 100 * i); /* 0 the oldest */
    }
    CHECK(stat(p[0], &st) == 0);
    size = (uint64_t)st.st_size;
    /* a load bumps the mtime, and the loaded file stays open here */
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK_EQ(indexdir_load(d, &k[0], ix, CHUNK, NULL, NULL, NULL), 0);
    CHECK(stat(p[0], &st) == 0 && st.st_mtime >= time(NULL) - 60);
    set_age(p[0], 1000); /* the oldest again, but open */
    o.max = size * 5 / 2; /* 4 files: over; 90%: 2.25 files */
    CHECK_EQ(indexdir_prune(d, &o, note_pruned, &got, &res), 0);
    CHECK_EQ(res.removed, 2);
    CHECK_EQ(pruned_why(&got, base_of(p[1])), INDEXDIR_PRUNE_SIZE);
    CHECK_EQ(pruned_why(&got, base_of(p[2])), INDEXDIR_PRUNE_SIZE);
    CHECK(access(p[0], F_OK) == 0 && access(p[3], F_OK) == 0);
    CHECK_EQ(res.kept, 2);
    CHECK_EQ(res.kept_bytes, 2 * size);
    /* under the cap: nothing goes */
    CHECK_EQ(indexdir_prune(d, &o, NULL, NULL, &res), 0);
    CHECK_EQ(res.removed, 0);

    /* saves keep to the cap by themselves: 3 files > 2.5 */
    indexdir_set_max(d, size * 5 / 2);
    indexdir_take_pruned(d, &files, &bytes);
    CHECK_EQ(files, 0);
    CHECK(indexdir_save(d, &k[4], built, NULL) == 0); /* the newest, just written */
    set_age(p[4], 2000); /* even when made to look the oldest afterwards ... */
    CHECK(access(p[0], F_OK) == 0); /* open here */
    CHECK(access(p[3], F_OK) < 0);  /* the least recently used that could go */
    CHECK(access(p[4], F_OK) == 0);
    indexdir_take_pruned(d, &files, &bytes);
    CHECK_EQ(files, 1);
    CHECK_EQ(bytes, size);
    indexdir_take_pruned(d, &files, &bytes);
    CHECK_EQ(files, 0);
    /* ... a later save may remove it like any other */
    CHECK(indexdir_save(d, &k[1], built, NULL) == 0);
    CHECK(access(p[4], F_OK) < 0 && access(p[1], F_OK) == 0 && access(p[0], F_OK) == 0);
    /* once the index lets go of its file, it can go too */
    dfx_index_free(ix);
    ix = NULL;
    set_age(p[0], 5000);
    CHECK_EQ(indexdir_prune(d, &o, NULL, NULL, &res), 0);
    CHECK_EQ(res.removed, 0); /* 2 files fit */
    o.max = size * 3 / 2;
    CHECK_EQ(indexdir_prune(d, &o, NULL, NULL, &res), 0);
    CHECK_EQ(res.removed, 1);
    CHECK(access(p[0], F_OK) < 0 && access(p[1], F_OK) == 0);
out:
    dfx_index_free(ix);
    for (int i = 0; i < 5; i++)
        free(p[i]);
    indexdir_close(d);
    free(dir);
    dfx_index_free(built);
    fixture_destroy(&f);
}

static void rm_rf_tmpdir(void)
{
    char cmd[300];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

int main(void)
{
    uint64_t s = 0x9e3779b97f4a7c15ull;
    const char *t = getenv("TMPDIR");
    char *store;

    snprintf(tmpdir, sizeof(tmpdir), "%s/test_indexdir.XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    store = in_dir(tmpdir, "store");
    if (!store || indexdir_open(store, &sdir) < 0) {
        perror("indexdir_open");
        return 1;
    }
    free(store);
    check_save_load(&s);
    check_what_is_at_the_name(&s);
    check_dirs();
    check_dir_swapped(&s);
    check_file_changed_while_loaded(&s);
    check_streaming_writer(&s);
    check_prune_sources(&s);
    check_prune_size(&s);
    indexdir_close(sdir);
    rm_rf_tmpdir();
    return check_exit("test_indexdir");
}
