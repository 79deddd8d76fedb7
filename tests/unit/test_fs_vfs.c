/*
 * Unit tests for the mount's namespace (vfs.c, tree.c) without a
 * mount: directory trees built in a temporary directory (nested
 * directories, .npz and .npy.gz files, plain files, a name clash, symlinks
 * inside and outside the tree, a FIFO, an unreadable directory, broken
 * archives), turned into a namespace with vfs_new() and looked at
 * through the calls the FUSE handlers make: names and their order, inode
 * numbers, lazy opening, errors, modes and owners, and first lookups of many
 * archives from many threads at once.
 *
 * The rules checked are README.md's (What you see in the mount, Sources)
 * and vfs.h's (inode numbers: an outer node's is its index + 1, the root 1;
 * a node inside unit k's tree (k + 1) << 32 | its local inode >= 2; a tree's
 * root is the unit's outer node).
 */
#define _GNU_SOURCE
#include "archive.h"
#include "check.h"
#include "defer.h"
#include "fs.h"
#include "fstest.h"
#include "member.h"
#include "options.h"
#include "vfs.h"

#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SPACING (256u << 10)
#define UNIT(ino) ((ino) >> 32)
#define LOCAL(ino) ((ino) & 0xffffffffull)

static char *top;       /* temporary directory */
static struct options opts;

/* ---- the calls that need a unit open -------------------------------------
 * vfs_lookup(), vfs_opendir(), vfs_file() and, for an .npy.gz, the
 * final attributes (vfs_attr_ready()) need the unit they are about open:
 * they answer DEFER_WAIT, and the request waits for the open in the opener pool
 * (vfs_await()), as the FUSE handlers do. These helpers wait the same
 * way, in one place, so that every check below depends only on what is
 * open once a call that needs it has answered, not on which call opens. */

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

/* Wait until unit need has been opened (or failed): 0 to ask again, or the
 * errno to answer. */
static int wait_unit(struct vfs *v, uint32_t need)
{
    struct waiter w = {.w.wake = wake, .lock = PTHREAD_MUTEX_INITIALIZER,
                       .cond = PTHREAD_COND_INITIALIZER};
    int ret = vfs_await(v, need, &w.w);

    if (ret == 0) {
        pthread_mutex_lock(&w.lock);
        while (!w.woken)
            pthread_cond_wait(&w.cond, &w.lock);
        pthread_mutex_unlock(&w.lock);
        ret = w.err;
    } else {
        ret = 0; /* not waiting to be opened any more: ask again */
    }
    pthread_mutex_destroy(&w.lock);
    pthread_cond_destroy(&w.cond);
    return ret;
}

/* A namespace whose opener pool runs (FUSE init), and its end (destroy). */
static int v_new(struct vfs_source *srcs, size_t n, struct vfs **v)
{
    size_t bad;
    int ret = vfs_new(srcs, n, &opts, NULL, v, &bad);

    if (ret == 0)
        vfs_start(*v);
    return ret;
}

static void v_free(struct vfs *v)
{
    if (v)
        vfs_stop(v);
    vfs_free(v);
}

static int v_lookup(struct vfs *v, uint64_t dir, const char *name, uint64_t *ino)
{
    uint32_t need;
    int ret;

    while ((ret = vfs_lookup(v, dir, name, ino, &need)) == DEFER_WAIT)
        if ((ret = wait_unit(v, need)) < 0)
            return ret;
    return ret;
}

/* Attributes as a stat(2) after the lookup sees them: final sizes. */
static int v_getattr(struct vfs *v, uint64_t ino, struct stat *st)
{
    uint32_t need;
    int ret;

    while ((ret = vfs_attr_ready(v, ino, &need)) == DEFER_WAIT)
        if ((ret = wait_unit(v, need)) < 0)
            return ret;
    return ret < 0 ? ret : vfs_getattr(v, ino, st);
}

static int v_opendir(struct vfs *v, uint64_t ino, struct vfs_dir *d)
{
    uint32_t need;
    int ret;

    while ((ret = vfs_opendir(v, ino, d, &need)) == DEFER_WAIT)
        if ((ret = wait_unit(v, need)) < 0)
            return ret;
    return ret;
}

static int v_file(struct vfs *v, uint64_t ino, struct vfs_file *f)
{
    uint32_t need;
    int ret;

    while ((ret = vfs_file(v, ino, f, &need)) == DEFER_WAIT)
        if ((ret = wait_unit(v, need)) < 0)
            return ret;
    return ret;
}

static uint64_t opened(void)
{
    return atomic_load(&fs_counters.archives_opened);
}

/* ---- trees ------------------------------------------------------------- */

static void mkdir_or_die(const char *path, mode_t mode)
{
    if (mkdir(path, mode) < 0 || chmod(path, mode) < 0) {
        perror(path);
        exit(2);
    }
}

/* Write a zip of small deflate and stored members named names[0..n) (data
 * from seed), into dir/name with mode. */
static void write_npz(const char *dir, const char *name, const char *const *names, size_t n,
                      uint64_t seed, mode_t mode)
{
    struct ft_member m[16];
    unsigned char *data[16];
    char *path = ft_path(dir, name);

    for (size_t i = 0; i < n; i++) {
        data[i] = ft_data(1000 + 37 * i, true, seed * 100 + i);
        m[i] = (struct ft_member){.name = names[i], .data = data[i], .len = 1000 + 37 * i,
                                  .method = i % 2 ? 0 : 8};
    }
    if (ft_write_zip(path, m, n) < 0 || chmod(path, mode) < 0) {
        perror(path);
        exit(2);
    }
    ft_members_free(m, n);
    for (size_t i = 0; i < n; i++)
        free(data[i]);
    free(path);
}

/* The bytes write_npz() gave member i. */
static unsigned char *npz_data(size_t i, uint64_t seed, size_t *len)
{
    *len = 1000 + 37 * i;
    return ft_data(*len, true, seed * 100 + i);
}

static void write_npygz(const char *dir, const char *name, size_t n, uint64_t seed, mode_t mode)
{
    size_t len;
    unsigned char *npy = ft_npy(n, true, seed, &len);
    const unsigned char *parts[1] = {npy};
    char *path = ft_path(dir, name);

    if (ft_write_gzip(path, parts, &len, 1) < 0 || chmod(path, mode) < 0) {
        perror(path);
        exit(2);
    }
    free(npy);
    free(path);
}

static void write_text(const char *dir, const char *name, const char *text, mode_t mode)
{
    char *path = ft_path(dir, name);

    if (ft_write_file(path, text, strlen(text)) < 0 || chmod(path, mode) < 0) {
        perror(path);
        exit(2);
    }
    free(path);
}

static void symlink_or_die(const char *target, const char *dir, const char *name)
{
    char *path = ft_path(dir, name);

    if (symlink(target, path) < 0) {
        perror(path);
        exit(2);
    }
    free(path);
}

/* Owners given to the tree's files when we are root (so that the checks of
 * uid and gid see values that cannot come from anywhere else). */
#define OWNER_UID 1234
#define OWNER_GID 5678

static const char *const a_members[] = {"x.npy", "sub/y.npy", "sub/deeper/z.npy", "w.bin",
                                        "../evil.npy", "sub/./v.npy"};
#define A_N 6
#define A_SEED 1

/*
 * tree/
 *   .npz            a plain file named only the suffix
 *   Y.npy           plain
 *   Y.npy.gz        gzip, shown as is: Y.npy is taken
 *   a.npz           0640 (a 0750 directory), OWNER_UID:OWNER_GID when root
 *   b.npy.gz        0604, shown as b.npy
 *   bad.npy.gz      gzip magic, then garbage: shown as bad.npy, reads EIO
 *   broken.npz      not a zip: listed, EIO inside
 *   c.txt           04755: shown 0755
 *   d/              0751
 *     e/f.npz
 *     g.npy.gz
 *   fifo            not shown
 *   link_in.npz  -> a.npz (inside: shown, an archive)
 *   link_out.npz -> ../outside.npz (not shown)
 *   link_dir     -> d (not shown)
 *   dangling     -> nowhere (not shown)
 */
static char *tree;

static void make_tree(void)
{
    static const char *const f_members[] = {"q.npy"};
    char *d, *e, *path;

    tree = ft_path(top, "tree");
    mkdir_or_die(tree, 0755);
    write_text(tree, ".npz", "only a suffix\n", 0644);
    write_text(tree, "Y.npy", "plain Y\n", 0644);
    write_npygz(tree, "Y.npy.gz", 5000, 7, 0644);
    write_npz(tree, "a.npz", a_members, A_N, A_SEED, 0640);
    write_npygz(tree, "b.npy.gz", 300000, 8, 0604);
    write_text(tree, "bad.npy.gz", "\x1f\x8b\x08\x00 and then no deflate stream at all", 0644);
    write_text(tree, "broken.npz", "this is not a zip file", 0644);
    write_text(tree, "c.txt", "hello, world\n", 04755);
    d = ft_path(tree, "d");
    mkdir_or_die(d, 0751);
    e = ft_path(d, "e");
    mkdir_or_die(e, 0755);
    write_npz(e, "f.npz", f_members, 1, 2, 0644);
    write_npygz(d, "g.npy.gz", 1000, 9, 0644);
    path = ft_path(tree, "fifo");
    if (mkfifo(path, 0644) < 0) {
        perror(path);
        exit(2);
    }
    free(path);
    write_npz(top, "outside.npz", f_members, 1, 3, 0644);
    symlink_or_die("a.npz", tree, "link_in.npz");
    symlink_or_die("../outside.npz", tree, "link_out.npz");
    symlink_or_die("d", tree, "link_dir");
    symlink_or_die("nowhere", tree, "dangling");
    if (geteuid() == 0) {
        path = ft_path(tree, "a.npz");
        if (lchown(path, OWNER_UID, OWNER_GID) < 0 || chmod(path, 0640) < 0) {
            perror(path);
            exit(2);
        }
        free(path);
        if (chown(d, OWNER_UID + 1, OWNER_GID + 1) < 0 || chmod(d, 0751) < 0) {
            perror(d);
            exit(2);
        }
        path = ft_path(tree, "c.txt");
        if (chown(path, OWNER_UID + 2, OWNER_GID + 2) < 0 || chmod(path, 04755) < 0) {
            perror(path);
            exit(2);
        }
        free(path);
    }
    free(d);
    free(e);
}

static struct stat lstat_of(const char *dir, const char *name)
{
    struct stat st;
    char *path = ft_path(dir, name);

    if (lstat(path, &st) < 0) {
        perror(path);
        exit(2);
    }
    free(path);
    return st;
}

/* The names of directory ino's children, in the order given, into names
 * (one string, NUL-separated entries, '/' after directories). */
static int listing(struct vfs *v, uint64_t ino, char *names, size_t size, uint64_t *inos,
                   size_t max)
{
    struct vfs_dir d;
    size_t at = 0;
    int ret = v_opendir(v, ino, &d);

    names[0] = '\0';
    if (ret < 0)
        return ret;
    for (size_t i = 0; i < d.count; i++) {
        const char *name;
        uint64_t cino;
        bool is_dir;

        vfs_dirent(v, &d, i, &name, &cino, &is_dir);
        at += (size_t)snprintf(names + at, size - at, "%s%s%s", i ? " " : "", name,
                               is_dir ? "/" : "");
        if (i < max)
            inos[i] = cino;
    }
    return (int)d.count;
}

static bool mtime_is(const struct stat *st, const struct stat *src)
{
    return st->st_mtim.tv_sec == src->st_mtim.tv_sec &&
           st->st_mtim.tv_nsec == src->st_mtim.tv_nsec;
}

/* A member's first bytes, through the file a vfs gives for ino. */
static bool content_is(struct vfs *v, uint64_t ino, const unsigned char *want, size_t len)
{
    struct vfs_file f;
    unsigned char buf[2048];

    if (len > sizeof(buf))
        len = sizeof(buf);
    if (v_file(v, ino, &f) < 0 || !f.m)
        return false;
    return member_peek(f.a, f.m, buf, len) == (int64_t)len && memcmp(buf, want, len) == 0;
}

/* ---- tests ------------------------------------------------------------- */

/* The directory that vfs_opendir() reports as ino's parent, or 0. */
static uint64_t opendir_parent(struct vfs *v, uint64_t ino)
{
    struct vfs_dir d;

    return v_opendir(v, ino, &d) < 0 ? 0 : d.parent;
}


/* A directory source: what is listed, in which order, with which inode
 * numbers, and what is opened when. */
static void test_directory(void)
{
    struct vfs_source src = {.path = tree};
    struct vfs *v = NULL;
    uint64_t before, inos[32], ino, a_ino, sub, deeper, x, y, b_ino, d_ino;
    char names[1024];
    struct stat st, src_st;
    int n;

    ft_log_clear();
    before = opened();
    CHECK_EQ(v_new(&src, 1, &v), 0);
    if (!v)
        return;
    CHECK_EQ(opened(), before); /* the walk opens nothing */

    /* skipped entries were logged */
    CHECK(ft_log_has("link_out.npz: skipping symlink: it leads out of the tree"));
    CHECK(ft_log_has("link_dir: skipping symlink: it does not lead to a regular file"));
    CHECK(ft_log_has("dangling: skipping symlink: its target is missing"));
    CHECK(ft_log_has("fifo: skipping: not a regular file or directory"));
    CHECK(ft_log_has("Y.npy.gz: shown as is (raw bytes): Y.npy is taken"));

    /* the root: the directory's own attributes */
    src_st = lstat_of(top, "tree");
    CHECK_EQ(v_getattr(v, 1, &st), 0);
    CHECK_EQ(st.st_ino, 1);
    CHECK_EQ(st.st_mode, S_IFDIR | 0755);
    CHECK_EQ(st.st_uid, src_st.st_uid);
    CHECK_EQ(st.st_gid, src_st.st_gid);
    CHECK(mtime_is(&st, &src_st));
    CHECK_EQ(st.st_nlink, 2 + 4); /* d/ and the archives a.npz, broken.npz, link_in.npz */

    /* names in strcmp order, directories marked; skipped entries absent */
    n = listing(v, 1, names, sizeof(names), inos, 32);
    CHECK_EQ(n, 10);
    CHECK(strcmp(names, ".npz Y.npy Y.npy.gz a.npz/ b.npy bad.npy broken.npz/ c.txt d/ "
                        "link_in.npz/") == 0);
    if (strcmp(names, ".npz Y.npy Y.npy.gz a.npz/ b.npy bad.npy broken.npz/ c.txt d/ "
                      "link_in.npz/"))
        fprintf(stderr, "root listing: %s\n", names);
    CHECK_EQ(opendir_parent(v, 1), 1);
    /* outer inodes: small, distinct; looking them up by name agrees */
    for (int i = 0; i < n && i < 10; i++) {
        CHECK(inos[i] >= 2 && UNIT(inos[i]) == 0);
        for (int j = 0; j < i; j++)
            CHECK(inos[i] != inos[j]);
    }
    CHECK_EQ(v_lookup(v, 1, "a.npz", &a_ino), 0);
    CHECK_EQ(a_ino, inos[3]);
    CHECK_EQ(opened(), before); /* looking up an archive does not open it */
    CHECK_EQ(v_getattr(v, a_ino, &st), 0);
    CHECK(S_ISDIR(st.st_mode));
    CHECK_EQ(opened(), before); /* nor do its attributes */
    CHECK_EQ(v_lookup(v, 1, "d", &d_ino), 0);
    CHECK_EQ(d_ino, inos[8]);

    /* looking into it opens it, once */
    CHECK_EQ(v_lookup(v, a_ino, "x.npy", &x), 0);
    CHECK_EQ(opened(), before + 1);
    CHECK(UNIT(x) >= 1 && LOCAL(x) >= 2);
    CHECK_EQ(v_lookup(v, a_ino, "sub", &sub), 0);
    CHECK_EQ(UNIT(sub), UNIT(x));
    CHECK(LOCAL(sub) >= 2 && sub != x);
    CHECK_EQ(v_lookup(v, sub, "y.npy", &y), 0);
    CHECK_EQ(UNIT(y), UNIT(x));
    CHECK_EQ(v_lookup(v, sub, "deeper", &deeper), 0);
    CHECK_EQ(opened(), before + 1);
    /* a tree's root is the unit's outer node: parents lead back to it */
    CHECK_EQ(opendir_parent(v, a_ino), 1);
    CHECK_EQ(opendir_parent(v, sub), a_ino);
    CHECK_EQ(opendir_parent(v, deeper), sub);
    CHECK_EQ(opendir_parent(v, d_ino), 1);
    n = listing(v, a_ino, names, sizeof(names), inos, 32);
    CHECK_EQ(n, 3);
    CHECK(strcmp(names, "sub/ w.bin x.npy") == 0); /* '..' skipped */
    n = listing(v, sub, names, sizeof(names), inos, 32);
    CHECK(strcmp(names, "deeper/ v.npy y.npy") == 0); /* '.' dropped */
    CHECK_EQ(v_lookup(v, a_ino, "..", &ino), -ENOENT);
    CHECK_EQ(v_lookup(v, a_ino, "evil.npy", &ino), -ENOENT);
    CHECK(ft_log_has("skipping member '../evil.npy'"));
    /* contents */
    {
        size_t len;
        unsigned char *want = npz_data(0, A_SEED, &len);

        CHECK(content_is(v, x, want, len));
        free(want);
        want = npz_data(1, A_SEED, &len);
        CHECK(content_is(v, y, want, len));
        free(want);
    }

    /* the same archive through a symlink: another unit, the same content */
    {
        uint64_t l_ino, lx;
        size_t len;
        unsigned char *want = npz_data(0, A_SEED, &len);

        CHECK_EQ(v_lookup(v, 1, "link_in.npz", &l_ino), 0);
        CHECK_EQ(v_lookup(v, l_ino, "x.npy", &lx), 0);
        CHECK_EQ(opened(), before + 2);
        CHECK(UNIT(lx) >= 1 && UNIT(lx) != UNIT(x));
        CHECK(content_is(v, lx, want, len));
        free(want);
    }

    /* an .npy.gz: its size is exact once looked up */
    {
        size_t len;
        unsigned char *npy = ft_npy(300000, true, 8, &len);

        CHECK_EQ(v_lookup(v, 1, "b.npy", &b_ino), 0);
        CHECK_EQ(v_getattr(v, b_ino, &st), 0);
        CHECK_EQ(opened(), before + 3);
        CHECK_EQ(st.st_size, len);
        CHECK(S_ISREG(st.st_mode));
        CHECK_EQ(UNIT(b_ino), 0); /* a file unit is its outer node */
        CHECK(content_is(v, b_ino, npy, len));
        CHECK_EQ(opened(), before + 3);
        free(npy);
    }

    /* nested: d/e/f.npz, d/g.npy */
    {
        uint64_t e_ino, f_ino, q, g;
        size_t len;
        unsigned char *want = npz_data(0, 2, &len);

        CHECK_EQ(v_lookup(v, d_ino, "e", &e_ino), 0);
        CHECK_EQ(opendir_parent(v, e_ino), d_ino);
        CHECK_EQ(v_lookup(v, e_ino, "f.npz", &f_ino), 0);
        CHECK_EQ(v_lookup(v, f_ino, "q.npy", &q), 0);
        CHECK(content_is(v, q, want, len));
        CHECK_EQ(v_lookup(v, d_ino, "g.npy", &g), 0);
        CHECK_EQ(v_lookup(v, d_ino, "g.npy.gz", &ino), -ENOENT);
        n = listing(v, d_ino, names, sizeof(names), inos, 32);
        CHECK(strcmp(names, "e/ g.npy") == 0);
        free(want);
    }

    /* plain files, passed through: the clash keeps Y.npy.gz's raw bytes */
    {
        uint64_t y_ino, ygz, dot;
        size_t len;
        char *path = ft_path(tree, "Y.npy.gz");
        unsigned char *raw = ft_read_file(path, &len);
        struct vfs_file f;

        CHECK_EQ(v_lookup(v, 1, "Y.npy", &y_ino), 0);
        CHECK(content_is(v, y_ino, (const unsigned char *)"plain Y\n", 8));
        CHECK_EQ(v_lookup(v, 1, "Y.npy.gz", &ygz), 0);
        CHECK_EQ(v_getattr(v, ygz, &st), 0);
        CHECK_EQ(st.st_size, len);
        CHECK(content_is(v, ygz, raw, len));
        CHECK_EQ(v_file(v, ygz, &f), 0);
        CHECK(f.m && f.m->kind == ARCHIVE_STORED && f.indexer == NULL);
        CHECK_EQ(v_lookup(v, 1, ".npz", &dot), 0);
        CHECK_EQ(v_getattr(v, dot, &st), 0);
        CHECK(S_ISREG(st.st_mode));
        CHECK(content_is(v, dot, (const unsigned char *)"only a suffix\n", 14));
        free(raw);
        free(path);
    }

    /* statfs: the bytes of what is opened */
    {
        uint64_t bytes, files;

        vfs_totals(v, &bytes, &files);
        CHECK(bytes > 300000 && files > 10);
    }
    v_free(v);
}

/* Every outer node of a directory source, walked without opening anything:
 * their inode numbers are exactly 1..N. */
static void test_outer_inodes(void)
{
    struct vfs_source src = {.path = tree};
    struct vfs *v = NULL;
    uint64_t seen[64], stack[16], before = opened();
    size_t nseen = 0, nstack = 0;
    char names[1024];

    CHECK_EQ(v_new(&src, 1, &v), 0);
    if (!v)
        return;
    seen[nseen++] = 1;
    stack[nstack++] = 1;
    while (nstack) {
        uint64_t dir = stack[--nstack], inos[32];
        struct vfs_dir d;
        int n = listing(v, dir, names, sizeof(names), inos, 32);

        CHECK(n > 0 || dir != 1);
        for (int i = 0; i < n && i < 32; i++) {
            const char *name;
            uint64_t ino;
            bool is_dir;

            CHECK_EQ(v_opendir(v, dir, &d), 0);
            vfs_dirent(v, &d, (size_t)i, &name, &ino, &is_dir);
            CHECK_EQ(UNIT(ino), 0);
            if (nseen < 64)
                seen[nseen++] = ino;
            /* real directories are walked; archives are not looked into */
            if (is_dir && !strstr(name, ".npz") && nstack < 16)
                stack[nstack++] = ino;
        }
    }
    CHECK_EQ(opened(), before);
    CHECK_EQ(nseen, 14); /* root, 10 at the root, d/e, d/g.npy, d/e/f.npz */
    for (uint64_t want = 1; want <= nseen; want++) {
        int found = 0;

        for (size_t i = 0; i < nseen; i++)
            found += seen[i] == want;
        CHECK_EQ(found, 1);
    }
    v_free(v);
}

/* lookup then attributes, as stat(2) does: the first error. */
static int v_stat(struct vfs *v, uint64_t dir, const char *name, uint64_t *ino,
                  struct stat *st)
{
    int ret = v_lookup(v, dir, name, ino);

    return ret < 0 ? ret : v_getattr(v, *ino, st);
}

/* ENOENT, ENOTDIR, EISDIR, and EIO for what cannot be opened (logged once,
 * remembered). */
static void test_errors(void)
{
    struct vfs_source src = {.path = tree};
    struct vfs *v = NULL;
    uint64_t ino, a_ino, x, sub, b_ino, c_ino, d_ino, broken;
    struct stat st;
    struct vfs_dir d;
    struct vfs_file f;

    CHECK_EQ(v_new(&src, 1, &v), 0);
    if (!v)
        return;
    CHECK_EQ(v_lookup(v, 1, "nope", &ino), -ENOENT);
    CHECK_EQ(v_lookup(v, 1, "b.npy.gz", &ino), -ENOENT); /* shown as b.npy */
    CHECK_EQ(v_lookup(v, 1, "fifo", &ino), -ENOENT);
    CHECK_EQ(v_getattr(v, 0, &st), -ENOENT);
    CHECK_EQ(v_getattr(v, 16, &st), -ENOENT); /* 15 outer nodes */
    CHECK_EQ(v_opendir(v, 16, &d), -ENOENT);
    CHECK_EQ(v_file(v, 16, &f), -ENOENT);
    /* nothing is open yet: no inode of any unit exists */
    for (uint64_t k = 1; k <= 70; k++)
        CHECK_EQ(v_getattr(v, k << 32 | 2, &st), -ENOENT);
    CHECK_EQ(v_lookup(v, 1, "a.npz", &a_ino), 0);
    CHECK_EQ(v_lookup(v, a_ino, "x.npy", &x), 0);
    CHECK_EQ(v_lookup(v, a_ino, "sub", &sub), 0);
    CHECK_EQ(v_getattr(v, x, &st), 0);
    CHECK_EQ(v_getattr(v, UNIT(x) << 32 | 1, &st), -ENOENT); /* the root is the outer node */
    CHECK_EQ(v_getattr(v, UNIT(x) << 32 | 999, &st), -ENOENT);
    CHECK_EQ(v_getattr(v, 999ull << 32 | 2, &st), -ENOENT);
    CHECK_EQ(v_lookup(v, a_ino, "nope", &ino), -ENOENT);
    CHECK_EQ(v_lookup(v, sub, "nope", &ino), -ENOENT);

    /* ENOTDIR: a file as a directory */
    CHECK_EQ(v_lookup(v, x, "y", &ino), -ENOTDIR);
    CHECK_EQ(v_opendir(v, x, &d), -ENOTDIR);
    CHECK_EQ(v_lookup(v, 1, "c.txt", &c_ino), 0);
    CHECK_EQ(v_opendir(v, c_ino, &d), -ENOTDIR);
    CHECK_EQ(v_lookup(v, c_ino, "x", &ino), -ENOTDIR);
    CHECK_EQ(v_stat(v, 1, "b.npy", &b_ino, &st), 0);
    CHECK_EQ(v_lookup(v, b_ino, "x", &ino), -ENOTDIR);
    /* EISDIR: a directory as a file */
    CHECK_EQ(v_lookup(v, 1, "d", &d_ino), 0);
    CHECK_EQ(v_file(v, 1, &f), -EISDIR);
    CHECK_EQ(v_file(v, a_ino, &f), -EISDIR);
    CHECK_EQ(v_file(v, sub, &f), -EISDIR);
    CHECK_EQ(v_file(v, d_ino, &f), -EISDIR);

    /* EIO: a broken archive is listed, but cannot be looked into */
    ft_log_clear();
    CHECK_EQ(v_lookup(v, 1, "broken.npz", &broken), 0);
    CHECK_EQ(v_getattr(v, broken, &st), 0);
    CHECK(S_ISDIR(st.st_mode));
    CHECK_EQ(v_file(v, broken, &f), -EISDIR);
    CHECK_EQ(v_opendir(v, broken, &d), -EIO);
    CHECK_EQ(v_lookup(v, broken, "x.npy", &ino), -EIO);
    CHECK_EQ(v_opendir(v, broken, &d), -EIO);
    CHECK(ft_log_has("broken.npz: cannot open: not a zip"));
    CHECK_EQ(ft_log_lines(), 1); /* once */
    /* a damaged .npy.gz: looked up and stat'ed, EIO; opened, EIO */
    ft_log_clear();
    ino = 0;
    CHECK_EQ(v_stat(v, 1, "bad.npy", &ino, &st), -EIO);
    if (ino)
        CHECK_EQ(v_file(v, ino, &f), -EIO);
    CHECK_EQ(v_stat(v, 1, "bad.npy", &ino, &st), -EIO);
    CHECK(ft_log_has("bad.npy.gz: cannot open"));
    CHECK_EQ(ft_log_lines(), 1);
    v_free(v);
}

/* Owner, group, permission bits and mtime, from the sources (README, What
 * you see in the mount). As root, the tree's files have owners of their
 * own, so the values cannot come from anywhere else. */
static void test_modes(void)
{
    struct vfs_source src = {.path = tree};
    struct vfs *v = NULL;
    struct stat st, a_st = lstat_of(tree, "a.npz"), d_st = lstat_of(tree, "d");
    struct stat c_st = lstat_of(tree, "c.txt"), b_st = lstat_of(tree, "b.npy.gz");
    uint64_t ino, a_ino, sub;

    CHECK_EQ(v_new(&src, 1, &v), 0);
    if (!v)
        return;
    if (geteuid() == 0) {
        CHECK_EQ(a_st.st_uid, OWNER_UID);
        CHECK_EQ(d_st.st_uid, OWNER_UID + 1);
        CHECK_EQ(c_st.st_gid, OWNER_GID + 2);
    }
    /* an archive as a directory: its owner, x wherever r is */
    CHECK_EQ(v_stat(v, 1, "a.npz", &a_ino, &st), 0);
    CHECK_EQ(st.st_mode, S_IFDIR | 0750);
    CHECK_EQ(st.st_uid, a_st.st_uid);
    CHECK_EQ(st.st_gid, a_st.st_gid);
    CHECK(mtime_is(&st, &a_st));
    /* its members: the archive's bits exactly; its directories as itself */
    CHECK_EQ(v_stat(v, a_ino, "x.npy", &ino, &st), 0);
    CHECK_EQ(st.st_mode, S_IFREG | 0640);
    CHECK_EQ(st.st_uid, a_st.st_uid);
    CHECK_EQ(st.st_gid, a_st.st_gid);
    CHECK_EQ(st.st_size, 1000);
    CHECK_EQ(st.st_nlink, 1);
    CHECK(mtime_is(&st, &a_st)); /* not the zip's 1980 date */
    CHECK_EQ(v_stat(v, a_ino, "sub", &sub, &st), 0);
    CHECK_EQ(st.st_mode, S_IFDIR | 0750);
    CHECK_EQ(st.st_uid, a_st.st_uid);
    CHECK_EQ(st.st_nlink, 2 + 1); /* deeper/ */
    CHECK(mtime_is(&st, &a_st));
    CHECK_EQ(v_getattr(v, a_ino, &st), 0);
    CHECK_EQ(st.st_nlink, 2 + 1); /* sub/, once opened */
    /* a walked directory: its own */
    CHECK_EQ(v_stat(v, 1, "d", &ino, &st), 0);
    CHECK_EQ(st.st_mode, S_IFDIR | 0751);
    CHECK_EQ(st.st_uid, d_st.st_uid);
    CHECK_EQ(st.st_gid, d_st.st_gid);
    CHECK(mtime_is(&st, &d_st));
    /* files: their file's, set-user-ID dropped */
    CHECK_EQ(v_stat(v, 1, "c.txt", &ino, &st), 0);
    CHECK_EQ(st.st_mode, S_IFREG | 0755);
    CHECK_EQ(st.st_uid, c_st.st_uid);
    CHECK_EQ(st.st_gid, c_st.st_gid);
    CHECK_EQ(st.st_size, c_st.st_size);
    CHECK(mtime_is(&st, &c_st));
    CHECK_EQ(v_stat(v, 1, "b.npy", &ino, &st), 0);
    CHECK_EQ(st.st_mode, S_IFREG | 0604);
    CHECK_EQ(st.st_uid, b_st.st_uid);
    CHECK(mtime_is(&st, &b_st));
    CHECK_EQ(st.st_ino, ino);
    v_free(v);
}

static struct archive *open_archive(const char *dir, const char *name)
{
    struct archive *a = NULL;
    char *path = ft_path(dir, name);

    CHECK_EQ(archive_open(path, SPACING, NULL, &a), 0);
    free(path);
    return a;
}

/* One archive named on the command line: the root is the archive (opened at
 * mount); its members are unit 0's, (0 + 1) << 32 | local. One .npy.gz: a
 * synthesized root holding its file. */
static void test_single_sources(void)
{
    struct vfs_source src = {.path = "a.npz", .name = "a.npz"};
    struct stat st, a_st = lstat_of(tree, "a.npz");
    struct vfs *v = NULL;
    uint64_t before = opened(), x, sub, ino, inos[8];
    char names[256];

    src.archive = open_archive(tree, "a.npz");
    CHECK_EQ(v_new(&src, 1, &v), 0);
    CHECK_EQ(opened(), before + 1);
    if (v) {
        CHECK_EQ(v_getattr(v, 1, &st), 0);
        CHECK_EQ(st.st_mode, S_IFDIR | 0750);
        CHECK_EQ(st.st_uid, a_st.st_uid);
        CHECK_EQ(v_lookup(v, 1, "x.npy", &x), 0);
        CHECK_EQ(UNIT(x), 1);
        CHECK(LOCAL(x) >= 2);
        CHECK_EQ(v_lookup(v, 1, "sub", &sub), 0);
        CHECK_EQ(UNIT(sub), 1);
        CHECK_EQ(opendir_parent(v, sub), 1);
        CHECK_EQ(listing(v, 1, names, sizeof(names), inos, 8), 3);
        CHECK(strcmp(names, "sub/ w.bin x.npy") == 0);
        CHECK_EQ(v_stat(v, sub, "y.npy", &ino, &st), 0);
        CHECK_EQ(st.st_mode, S_IFREG | 0640);
        CHECK_EQ(opened(), before + 1);
        v_free(v);
    }

    src = (struct vfs_source){.path = "b.npy.gz", .name = "b.npy"};
    src.archive = open_archive(tree, "b.npy.gz");
    CHECK_EQ(v_new(&src, 1, &v), 0);
    if (v) {
        size_t len;
        unsigned char *npy = ft_npy(300000, true, 8, &len);

        CHECK_EQ(v_getattr(v, 1, &st), 0);
        CHECK_EQ(st.st_mode, S_IFDIR | 0555);
        CHECK_EQ(st.st_uid, getuid());
        CHECK_EQ(st.st_gid, getgid());
        CHECK_EQ(listing(v, 1, names, sizeof(names), inos, 8), 1);
        CHECK(strcmp(names, "b.npy") == 0);
        CHECK_EQ(v_stat(v, 1, "b.npy", &ino, &st), 0);
        CHECK_EQ(ino, 2);
        CHECK_EQ(st.st_size, len);
        CHECK_EQ(st.st_mode, S_IFREG | 0604);
        CHECK(content_is(v, ino, npy, len));
        free(npy);
        v_free(v);
    }
}

/* Several sources: each at the root under its name; the root is the
 * mounting user's, 0555, with the newest mtime of the sources. */
static void test_several_sources(void)
{
    struct vfs_source src[3] = {
        {.path = tree, .name = "t"},
        {.path = "a.npz", .name = "a.npz"},
        {.path = "g.npy.gz", .name = "g.npy"},
    };
    struct stat st, t_st = lstat_of(top, "tree");
    struct vfs *v = NULL;
    uint64_t before = opened(), t_ino, ino, x, inos[8];
    char names[256], *d = ft_path(tree, "d");
    struct stat g_st = lstat_of(d, "g.npy.gz"), a_st = lstat_of(tree, "a.npz");
    const struct stat *newest = &t_st;

    src[1].archive = open_archive(tree, "a.npz");
    src[2].archive = open_archive(d, "g.npy.gz");
    CHECK_EQ(v_new(src, 3, &v), 0);
    CHECK_EQ(opened(), before + 2); /* the archives named, at mount */
    if (!v) {
        free(d);
        return;
    }
    CHECK_EQ(v_getattr(v, 1, &st), 0);
    CHECK_EQ(st.st_mode, S_IFDIR | 0555);
    CHECK_EQ(st.st_uid, getuid());
    CHECK_EQ(st.st_gid, getgid());
    if (a_st.st_mtim.tv_sec > newest->st_mtim.tv_sec ||
        (a_st.st_mtim.tv_sec == newest->st_mtim.tv_sec &&
         a_st.st_mtim.tv_nsec > newest->st_mtim.tv_nsec))
        newest = &a_st;
    if (g_st.st_mtim.tv_sec > newest->st_mtim.tv_sec ||
        (g_st.st_mtim.tv_sec == newest->st_mtim.tv_sec &&
         g_st.st_mtim.tv_nsec > newest->st_mtim.tv_nsec))
        newest = &g_st;
    CHECK(mtime_is(&st, newest));
    CHECK_EQ(listing(v, 1, names, sizeof(names), inos, 8), 3);
    CHECK(strcmp(names, "a.npz/ g.npy t/") == 0);
    CHECK_EQ(v_lookup(v, 1, "a.npz", &ino), 0);
    CHECK_EQ(v_lookup(v, ino, "x.npy", &x), 0);
    CHECK(UNIT(x) >= 1);
    CHECK_EQ(v_stat(v, 1, "g.npy", &ino, &st), 0);
    CHECK_EQ(UNIT(ino), 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK_EQ(v_stat(v, 1, "t", &t_ino, &st), 0);
    CHECK_EQ(st.st_mode, S_IFDIR | 0755);
    CHECK_EQ(opened(), before + 2);
    CHECK_EQ(listing(v, t_ino, names, sizeof(names), inos, 8), 10);
    CHECK_EQ(opendir_parent(v, t_ino), 1);
    CHECK_EQ(v_lookup(v, t_ino, "a.npz", &ino), 0);
    CHECK_EQ(v_lookup(v, ino, "w.bin", &ino), 0);
    CHECK_EQ(opened(), before + 3); /* the tree's a.npz: another unit */
    v_free(v);
    free(d);
}

/* ---- many first lookups at once ------------------------------------------ */

#define NARCH 40
#define NGZ 12
#define NTHREADS 8

static const char *const many_members[] = {"m0.npy", "s/m1.npy", "s/m2.npy", "t/u/m3.npy",
                                           "m4.npy", "s/m5.npy"};
#define MANY_N 6

static size_t gz_len[NGZ]; /* the sizes of the .npy files gzipped */

struct looker {
    pthread_t t;
    struct vfs *v;
    struct ft_barrier *bar;
    uint64_t seed;
    uint64_t inos[NARCH][MANY_N]; /* what it found */
    uint64_t gz[NGZ];
    int bad;
};

static bool member_ok(struct vfs *v, uint64_t ino, size_t j, uint64_t seed)
{
    size_t len;
    unsigned char *want = npz_data(j, seed, &len);
    bool ok = content_is(v, ino, want, len);

    free(want);
    return ok;
}

/* Look up every member of every archive (each thread in its own order),
 * list the archives, check contents. */
static void *looker(void *arg)
{
    struct looker *l = arg;
    size_t order[NARCH + NGZ];
    uint64_t s = l->seed;

    for (size_t i = 0; i < NARCH + NGZ; i++)
        order[i] = i;
    for (size_t i = NARCH + NGZ - 1; i > 0; i--) {
        size_t j = (size_t)(ft_rand(&s) % (i + 1)), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    ft_barrier_wait(l->bar);
    for (size_t k = 0; k < NARCH + NGZ; k++) {
        size_t i = order[k];
        char name[32];
        uint64_t a_ino;
        struct vfs_dir d;

        if (i >= NARCH) {
            struct stat st;

            snprintf(name, sizeof(name), "g%02zu.npy", i - NARCH);
            if (v_stat(l->v, 1, name, &l->gz[i - NARCH], &st) < 0 ||
                st.st_size != (off_t)gz_len[i - NARCH])
                l->bad++;
            continue;
        }
        snprintf(name, sizeof(name), "a%02zu.npz", i);
        if (v_lookup(l->v, 1, name, &a_ino) < 0) {
            l->bad++;
            continue;
        }
        for (size_t j = 0; j < MANY_N; j++) {
            const char *p = many_members[j], *slash;
            uint64_t dir = a_ino, ino = 0;
            char comp[16];

            while ((slash = strchr(p, '/'))) {
                snprintf(comp, sizeof(comp), "%.*s", (int)(slash - p), p);
                if (v_lookup(l->v, dir, comp, &dir) < 0)
                    l->bad++;
                p = slash + 1;
            }
            if (v_lookup(l->v, dir, p, &ino) < 0 || !member_ok(l->v, ino, j, 100 + i))
                l->bad++;
            l->inos[i][j] = ino;
        }
        if (v_opendir(l->v, a_ino, &d) < 0 || d.count != 4) /* m0.npy m4.npy s/ t/ */
            l->bad++;
    }
    return NULL;
}

/* First lookups of many archives from many threads at once: each unit is
 * opened once, every thread sees the same inode numbers and contents (trees
 * of different archives are built at the same time: a sort with shared
 * state crashed the daemon once). */
static void test_concurrent_first_lookups(void)
{
    char *dir = ft_path(top, "many");
    struct vfs_source src = {.path = dir};
    struct looker *l = calloc(NTHREADS, sizeof(*l));
    struct ft_barrier bar;
    struct vfs *v = NULL;
    uint64_t before;
    int bad = 0;

    mkdir_or_die(dir, 0755);
    for (size_t i = 0; i < NARCH; i++) {
        char name[32];

        snprintf(name, sizeof(name), "a%02zu.npz", i);
        write_npz(dir, name, many_members, MANY_N, 100 + i, 0644);
    }
    for (size_t i = 0; i < NGZ; i++) {
        char name[32];

        snprintf(name, sizeof(name), "g%02zu.npy.gz", i);
        write_npygz(dir, name, 1000 + NARCH + i, 200 + i, 0644);
        free(ft_npy(1000 + NARCH + i, true, 200 + i, &gz_len[i]));
    }
    before = opened();
    CHECK_EQ(v_new(&src, 1, &v), 0);
    if (!v)
        goto out;
    ft_barrier_init(&bar, NTHREADS);
    for (int t = 0; t < NTHREADS; t++) {
        l[t] = (struct looker){.v = v, .bar = &bar, .seed = 7 + (uint64_t)t * 1000};
        pthread_create(&l[t].t, NULL, looker, &l[t]);
    }
    for (int t = 0; t < NTHREADS; t++) {
        pthread_join(l[t].t, NULL);
        bad += l[t].bad;
    }
    ft_barrier_destroy(&bar);
    CHECK_EQ(bad, 0);
    CHECK_EQ(opened(), before + NARCH + NGZ); /* each once */
    for (int t = 1; t < NTHREADS; t++) {
        CHECK(memcmp(l[t].inos, l[0].inos, sizeof(l[0].inos)) == 0);
        CHECK(memcmp(l[t].gz, l[0].gz, sizeof(l[0].gz)) == 0);
    }
    /* one unit per archive, local inodes >= 2 */
    for (size_t i = 0; i < NARCH; i++) {
        for (size_t j = 0; j < MANY_N; j++) {
            CHECK(UNIT(l[0].inos[i][j]) >= 1 && LOCAL(l[0].inos[i][j]) >= 2);
            CHECK_EQ(UNIT(l[0].inos[i][j]), UNIT(l[0].inos[i][0]));
        }
        for (size_t k = 0; k < i; k++)
            CHECK(UNIT(l[0].inos[i][0]) != UNIT(l[0].inos[k][0]));
    }
    v_free(v);
out:
    free(l);
    ft_rmtree(dir);
    free(dir);
}

/* ---- an unreadable directory --------------------------------------------- */

/* Build the namespace of dir and check that only "ok/" is listed: returns
 * the failures (run in a child that dropped root, or as is). */
static int check_unreadable(const char *dir)
{
    struct vfs_source src = {.path = dir};
    struct vfs *v = NULL;
    char names[256];
    uint64_t inos[8];

    CHECK_EQ(v_new(&src, 1, &v), 0);
    if (!v)
        return check_failed;
    CHECK_EQ(listing(v, 1, names, sizeof(names), inos, 8), 1);
    CHECK(strcmp(names, "ok/") == 0);
    CHECK(ft_log_has("noperm: skipping directory"));
    v_free(v);
    return check_failed;
}

/* An unreadable subdirectory is skipped (logged). As root, every directory
 * is readable: the check runs in a child that has become nobody. */
static void test_unreadable_subdir(void)
{
    char *dir = ft_path(top, "unreadable"), *ok = ft_path(dir, "ok");
    char *no = ft_path(dir, "noperm");

    mkdir_or_die(dir, 0755);
    mkdir_or_die(ok, 0755);
    mkdir_or_die(no, 0755);
    write_text(no, "h.npy", "hidden\n", 0644);
    chmod(no, 0);
    chmod(top, 0755); /* mkdtemp made it 0700 */
    ft_log_clear();
    if (geteuid() != 0) {
        check_unreadable(dir);
    } else {
        pid_t pid = fork();
        int status = 0;

        if (pid == 0) {
            int before = check_failed;

            if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
                _exit(99);
            _exit(check_unreadable(dir) - before ? 1 : 0);
        }
        CHECK(pid > 0);
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    chmod(no, 0755);
    chmod(top, 0700);
    free(no);
    free(ok);
    free(dir);
}

/* An ACL in its system.posix_acl_access form: n entries (tag, perm). */
static size_t acl_of(unsigned char *buf, const unsigned (*e)[2], size_t n)
{
    uint32_t version = 2;

    memcpy(buf, &version, 4);
    for (size_t i = 0; i < n; i++) {
        uint16_t tag = (uint16_t)e[i][0], perm = (uint16_t)e[i][1];
        uint32_t id = e[i][0] == 0x02 || e[i][0] == 0x08 ? 1000 : 0xffffffffu;
        memcpy(buf + 4 + 8 * i, &tag, 2);
        memcpy(buf + 6 + 8 * i, &perm, 2);
        memcpy(buf + 8 + 8 * i, &id, 4);
    }
    return 4 + 8 * n;
}

static void test_acl_narrow(void)
{
    unsigned char b[256];
    /* minimal: the bits as they are */
    const unsigned minimal[][2] = {{0x01, 6}, {0x04, 4}, {0x20, 4}};
    /* a named user denied: nobody but the owner may rely on the bits */
    const unsigned deny_user[][2] = {{0x01, 6}, {0x02, 0}, {0x04, 4}, {0x10, 4}, {0x20, 4}};
    /* a named group denied: others lose r, the owning group keeps it */
    const unsigned deny_group[][2] = {{0x01, 6}, {0x04, 4}, {0x08, 0}, {0x10, 4}, {0x20, 4}};
    /* a named user granted rw: the mode's group bits are the mask (rw), but
     * the owning group has r only; the grant itself is lost */
    const unsigned grant[][2] = {{0x01, 6}, {0x02, 6}, {0x04, 4}, {0x10, 6}, {0x20, 4}};
    /* the mask takes r from the owning group; others are not masked */
    const unsigned masked[][2] = {{0x01, 7}, {0x04, 5}, {0x10, 1}, {0x20, 5}};

    CHECK_EQ(vfs_acl_narrow(0644, NULL, -1), 0644);
    CHECK_EQ(vfs_acl_narrow(0644, b, acl_of(b, minimal, 3)), 0644);
    CHECK_EQ(vfs_acl_narrow(0644, b, acl_of(b, deny_user, 5)), 0600);
    CHECK_EQ(vfs_acl_narrow(01755, b, acl_of(b, deny_user, 5)), 01700);
    CHECK_EQ(vfs_acl_narrow(0644, b, acl_of(b, deny_group, 5)), 0640);
    CHECK_EQ(vfs_acl_narrow(0664, b, acl_of(b, grant, 5)), 0644);
    CHECK_EQ(vfs_acl_narrow(0755, b, acl_of(b, masked, 4)), 0715);
    /* malformed lengths: left as they are (the kernel gave what it has) */
    CHECK_EQ(vfs_acl_narrow(0644, b, 7), 0644);
    /* another version: owner only */
    b[0] = 3;
    CHECK_EQ(vfs_acl_narrow(0644, b, 28), 0600);
}

int main(void)
{
    ft_log_capture();
    test_acl_narrow();
    top = ft_tempdir("test_fs_vfs");
    opts.spacing = SPACING;
    opts.index_mode = OPTIONS_INDEX_LAZY;
    opts.verify = OPTIONS_VERIFY_LAZY;
    opts.cache_size = 64ull << 20;
    opts.index_dir = ft_path(top, "index");
    make_tree();

    test_unreadable_subdir(); /* first: it forks, before any thread runs */
    test_directory();
    test_outer_inodes();
    test_errors();
    test_modes();
    test_single_sources();
    test_several_sources();
    test_concurrent_first_lookups();

    free(opts.index_dir);
    ft_rmtree(top);
    free(top);
    free(tree);
    return check_exit("test_fs_vfs");
}
