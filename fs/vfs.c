/*
 * The mount's namespace: what the sources on the command line look like
 * under the mount point. Contract in vfs.h; the rules are in README.md
 * (Sources).
 *
 * Two levels. The outer tree is built at mount and never changes: real
 * directories (walked with lstat only: no file is opened, no archive
 * parsed), archive directories (X.npz), files (Y.npy from Y.npy.gz, and
 * passthrough files). Each archive directory and file is a unit: the file
 * behind it, opened on first use at most once. An opened zip unit has its
 * own immutable tree (tree.c), the archive's members by path.
 *
 * Inode numbers: outer node i is i + 1 (the root is 1); a node with local
 * inode L >= 2 in unit k's tree is (k + 1) << 32 | L; a tree's root (L = 1)
 * is the unit's node in the outer tree. A single archive source is the
 * root node itself, so the mount looks as it did before directory mounts.
 *
 * Opening: a handler that needs a unit not open yet does not open it (the
 * open may size a gzip file by a full pass, or wait on a slow file system):
 * it gets DEFER_WAIT and queues the request on the unit (vfs_await()). The
 * first waiter starts the unit's open job in the opener pool (defer.c);
 * the job opens the archive with no lock held, publishes the result, and
 * wakes the waiters, which ask again and now find the unit open (or failed:
 * -EIO). So no handler thread ever waits for an open.
 *
 * Locking: u->lock guards u's waiter list and whether its open job is
 * queued or running (at most one is); it is never held while opening. The
 * result is published with a release store to u->state (under u->lock, so
 * that no waiter is queued after the wake-up) and read with acquire loads,
 * so handlers that find a unit open take no lock. v->lock guards
 * started/stopped; the open job takes it (with no other lock) to start a
 * lazily opened archive's background indexer.
 */
#define _GNU_SOURCE

#include "archive.h"
#include "bsrc.h"
#include "fs.h"
#include "indexer.h"
#include "options.h"
#include "s3.h"
#include "tree.h"

#include "vfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_log.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define UNIT_SHIFT 32
#define LOCAL_MASK 0xffffffffull
/* Outer nodes and units are numbered below this (inode numbers above). */
#define VFS_MAX ((uint64_t)UINT32_MAX - 1)

enum vn_type {
    VN_DIR,     /* a real directory, or the root of several sources */
    VN_ARCHIVE, /* an .npz: a directory holding its members */
    VN_FILE,    /* a file: the member of an .npy.gz, or a passthrough file */
};

/* Immutable after vfs_new(). */
struct vfs_node {
    char *name;      /* owned: one path component ("" for the root) */
    uint64_t parent; /* inode of the parent directory (the root: 1) */
    enum vn_type type;
    uint32_t unit;      /* VN_ARCHIVE, VN_FILE: index in vfs.units */
    uint64_t *children; /* VN_DIR: owned, inodes sorted by name */
    size_t nchildren, cap;
    uint32_t nsubdirs;
    struct timespec mtime; /* VN_DIR: the real directory's */
    /* VN_DIR: the real directory's permission bits (perm_of()), owner and
     * group, from its stat at mount; the root of several sources (or of one
     * .npy.gz) is synthesized: 0555, the mounting user's. */
    mode_t perm;
    uid_t uid;
    gid_t gid;
};

enum unit_kind { UNIT_ZIP, UNIT_GZIP, UNIT_PLAIN };

/* Open states besides a negative errno. */
enum { UNIT_NEW = 0, UNIT_OPEN = 1 };

struct vfs_unit {
    char *path;            /* owned, immutable: the file to open (absolute), or the
                            * object's URL (remote) */
    bool remote;           /* immutable: path is a URL (opened through opts->net) */
    atomic_bool said_retry; /* a transient failure to open it was logged */
    int rootfd;            /* immutable: the walked directory source it was found
                            * in (opened beneath it), or -1: named on the command line */
    const char *rel;       /* immutable: path relative to that source (in path) */
    enum unit_kind kind;   /* immutable: what the file's name says it is */
    uint64_t node;         /* immutable: inode of its node in the outer tree */
    uint64_t size;         /* immutable: the file's size at mount (a passthrough
                            * file shows it until it is opened) */
    struct timespec mtime; /* immutable: the file's mtime at mount */
    mode_t perm;           /* immutable: the file's permission bits at mount (perm_of()) */
    uid_t uid;             /* immutable: the file's owner at mount */
    gid_t gid;             /* immutable: the file's group at mount */
    pthread_mutex_t lock;  /* guards waiters and opening */
    atomic_int state;      /* UNIT_NEW, UNIT_OPEN, or a negative errno (permanent) */
    struct defer_waiter *waiters; /* protected by lock: requests waiting for the open */
    bool opening;          /* protected by lock: its open job is queued or running */
    struct defer_job job;     /* the open job (one at a time), with its vfs: */
    struct vfs *vfs;
    /* Written by the open job before state becomes UNIT_OPEN, immutable after: */
    struct archive *a;       /* owned */
    struct tree tree;        /* UNIT_ZIP: the members by path */
    struct indexer *indexer; /* owned; NULL for passthrough files */
};

struct vfs {
    struct vfs_node *nodes; /* owned, immutable after vfs_new() */
    size_t count, cap;
    struct vfs_unit *units; /* owned, immutable after vfs_new() except as marked */
    size_t nunits, ucap;
    const struct options *opts; /* borrowed */
    struct cache *cache;        /* borrowed: the chunk cache, or NULL */
    struct defer *defer;     /* owned: the opener pool */
    atomic_bool stop;           /* raised by vfs_stop(): sizing passes end */
    pthread_mutex_t lock;       /* a leaf */
    bool started, stopped;      /* protected by lock: FUSE init and destroy have run */
    bool locks_ready;           /* the units' mutexes were initialized */
    int *roots;                 /* owned: fds of the walked directory sources, open
                                 * until unmount; their files are opened beneath them */
    size_t nroots;
};

/* ---------------------------------------------------------------- build --- */

static struct vfs_node *vnode(struct vfs *v, uint64_t ino)
{
    return ino >= 1 && ino <= v->count ? &v->nodes[ino - 1] : NULL;
}

/* The permission bits shown for a source whose mode is mode: its own, less
 * set-user-ID and set-group-ID (nothing in the mount runs). */
static mode_t perm_of(mode_t mode)
{
    return mode & 07777 & ~(mode_t)(S_ISUID | S_ISGID);
}

/*
 * perm (from st_mode) narrowed by the POSIX ACL of the source (the
 * system.posix_acl_access value, n bytes; n <= 0: none) so that the
 * kernel's checks on the bits alone (default_permissions) never give a
 * user more than the ACL does. The group bits serve, through the mount,
 * every member of the owning group, and the other bits everyone else; a
 * named user, or a member of a named group, may be either, so each class
 * gets at most the least of the entries (within the mask) that can meet it.
 * A minimal ACL (owner, group, other) leaves perm as it is; what only an ACL
 * grants is lost, its denials are kept.
 */
mode_t vfs_acl_narrow(mode_t perm, const void *acl, ssize_t n)
{
    const unsigned char *p = acl;
    unsigned group = 7, other = 7, mask = 7, users = 7, groups = 7;
    unsigned named_users = 0, named_groups = 0; /* 7 if there are such entries */
    uint32_t version;

    if (n < 4 || (n - 4) % 8 != 0)
        return perm;
    memcpy(&version, p, 4);
    if (version != 2)
        return perm & ~(mode_t)077; /* a form this code does not know: nothing for others */
    for (ssize_t at = 4; at < n; at += 8) {
        uint16_t tag, bits;

        memcpy(&tag, p + at, 2);
        memcpy(&bits, p + at + 2, 2);
        bits &= 7;
        switch (tag) {
        case 0x02: users &= bits; named_users = 7; break;   /* ACL_USER */
        case 0x04: group &= bits; break;  /* ACL_GROUP_OBJ */
        case 0x08: groups &= bits; named_groups = 7; break; /* ACL_GROUP */
        case 0x10: mask &= bits; break;   /* ACL_MASK */
        case 0x20: other &= bits; break;  /* ACL_OTHER */
        default: break;                   /* ACL_USER_OBJ: the owner bits */
        }
    }
    /* a named user may be in the owning group, or not; a named group's
     * members may be outside it: each meets the class bits, within the mask */
    group &= mask & (users | ~named_users);
    other &= (users & mask) | ~named_users;
    other &= (groups & mask) | ~named_groups;
    return (perm & ~(mode_t)077) | (perm & ((mode_t)(group << 3) | (mode_t)other));
}

/* perm of the local file at path (or open at fd >= 0) after its ACL. Only
 * with allow_other: the mounting user's own access is the daemon's, which
 * the ACL already governs (and root's bypasses it), and the read costs a
 * call per entry (a round trip on NFS). */
static mode_t perm_after_acl(const struct vfs *v, mode_t perm, const char *path, int fd)
{
    unsigned char buf[1024];
    ssize_t n;

    if (!v->opts->allow_other)
        return perm;
    n = fd >= 0 ? fgetxattr(fd, "system.posix_acl_access", buf, sizeof(buf))
                : getxattr(path, "system.posix_acl_access", buf, sizeof(buf));
    if (n < 0 && errno == ERANGE)
        return perm & ~(mode_t)077; /* too many entries to read here: owner only */
    return vfs_acl_narrow(perm, buf, n);
}

/* A file's permission bits as a directory's (an archive shown as a
 * directory, the directories inside it): x wherever r is, so whoever may
 * read the archive may traverse it. */
static mode_t dir_perm(mode_t perm)
{
    return perm | ((perm & 0444) >> 2);
}

/* A directory node shows st's owner, group and permission bits. */
static void set_owner(struct vfs_node *n, const struct stat *st)
{
    n->perm = perm_of(st->st_mode);
    n->uid = st->st_uid;
    n->gid = st->st_gid;
}

static int new_node(struct vfs *v, uint64_t parent, const char *name, enum vn_type type,
                    uint64_t *ino)
{
    struct vfs_node *n;

    if (v->count >= VFS_MAX)
        return -EFBIG;
    if (fs_grow(&v->nodes, &v->cap, v->count, sizeof(*v->nodes), 64) < 0)
        return -ENOMEM;
    n = &v->nodes[v->count];
    memset(n, 0, sizeof(*n));
    n->name = strdup(name);
    if (!n->name)
        return -ENOMEM;
    n->parent = parent ? parent : 1;
    n->type = type;
    *ino = ++v->count;
    if (parent) {
        struct vfs_node *d = vnode(v, parent);

        if (fs_grow(&d->children, &d->cap, d->nchildren, sizeof(*d->children), 8) < 0)
            return -ENOMEM;
        d->children[d->nchildren++] = *ino;
        if (type != VN_FILE)
            d->nsubdirs++;
    }
    return 0;
}

/* Add a unit for the file at path, shown as node ino (already made); found
 * in the walked directory source rootfd, whose real path is root_len bytes
 * long, or rootfd -1. */
static int new_unit(struct vfs *v, uint64_t ino, const char *path, int rootfd,
                    size_t root_len, enum unit_kind kind, const struct stat *st,
                    struct archive *a)
{
    struct vfs_unit *u;

    if (v->nunits >= VFS_MAX)
        return -EFBIG;
    if (fs_grow(&v->units, &v->ucap, v->nunits, sizeof(*v->units), 64) < 0)
        return -ENOMEM;
    u = &v->units[v->nunits];
    memset(u, 0, sizeof(*u));
    u->path = strdup(path);
    if (!u->path)
        return -ENOMEM;
    u->rootfd = rootfd;
    /* path is root + "/" + rel, or "/" + rel for the root "/" */
    u->rel = rootfd < 0 ? NULL : u->path + (root_len == 1 ? 1 : root_len + 1);
    u->remote = bsrc_is_url(path);
    u->kind = kind;
    u->node = ino;
    u->size = (uint64_t)st->st_size;
    u->mtime = st->st_mtim;
    u->perm = perm_of(st->st_mode);
    if (!u->remote)
        u->perm = perm_after_acl(v, u->perm, path, -1);
    u->uid = st->st_uid;
    u->gid = st->st_gid;
    u->a = a;
    atomic_init(&u->state, a ? UNIT_OPEN : UNIT_NEW);
    vnode(v, ino)->unit = (uint32_t)v->nunits++;
    return 0;
}

static bool has_suffix(const char *name, const char *suffix)
{
    size_t n = strlen(name), s = strlen(suffix);

    return n > s && strcmp(name + n - s, suffix) == 0;
}

/* One entry of a directory being walked. */
struct walk_ent {
    char *name;     /* owned */
    char *target;   /* owned: a symlink's real path, else NULL */
    struct stat st; /* lstat, or the symlink target's stat */
    enum { WE_DIR, WE_NPZ, WE_GZ, WE_PLAIN } cat;
    char *shown; /* owned: the name in the mount */
};

/* The directories from the walked source's root down to the one being
 * walked, to refuse a directory that is its own ancestor (bind mounts). */
struct ancestor {
    dev_t dev;
    ino_t ino;
    const struct ancestor *up;
};

struct walk {
    struct vfs *v;
    const char *root; /* the directory source's real path */
    size_t root_len;
    int rootfd;       /* the directory source, open (owned by v->roots) */
};

static int cmp_ent(const void *a, const void *b)
{
    return strcmp(((const struct walk_ent *)a)->name, ((const struct walk_ent *)b)->name);
}

/* Follow a symlink found in the tree: only to a regular file inside the
 * source's root. Returns NULL with e->target and e->st set, or the reason
 * it is not followed. */
static const char *follow_link(const struct walk *w, const char *path, struct walk_ent *e)
{
    char *real = realpath(path, NULL);

    if (!real)
        return "its target is missing or unreadable";
    if (strncmp(real, w->root, w->root_len) != 0 ||
        (real[w->root_len] != '/' && !(w->root_len == 1 && w->root[0] == '/'))) {
        free(real);
        return "it leads out of the tree";
    }
    if (stat(real, &e->st) < 0 || !S_ISREG(e->st.st_mode)) {
        free(real);
        return "it does not lead to a regular file";
    }
    e->target = real;
    return NULL;
}

/* Read one entry: kept (true) with its category, or skipped (logged). */
static bool classify(const struct walk *w, int dfd, const char *dpath, struct walk_ent *e)
{
    const char *why = NULL;
    char *path = NULL, ebuf[64];

    if (fstatat(dfd, e->name, &e->st, AT_SYMLINK_NOFOLLOW) < 0)
        why = strerror_r(errno, ebuf, sizeof(ebuf));
    else if (S_ISLNK(e->st.st_mode)) {
        if (asprintf(&path, "%s/%s", dpath, e->name) < 0)
            return false;
        why = follow_link(w, path, e);
        free(path);
        if (why) {
            fuse_log(FUSE_LOG_INFO, "npyfs: %s/%s: skipping symlink: %s\n", dpath, e->name, why);
            return false;
        }
    } else if (!S_ISDIR(e->st.st_mode) && !S_ISREG(e->st.st_mode)) {
        why = "not a regular file or directory";
    }
    if (why) {
        fuse_log(FUSE_LOG_INFO, "npyfs: %s/%s: skipping: %s\n", dpath, e->name, why);
        return false;
    }
    if (S_ISDIR(e->st.st_mode))
        e->cat = WE_DIR;
    else if (has_suffix(e->name, ".npz"))
        e->cat = WE_NPZ;
    else if (has_suffix(e->name, ".npy.gz"))
        e->cat = WE_GZ;
    else
        e->cat = WE_PLAIN;
    return true;
}

/* Read dfd's entries, sorted by name, with the shown names: Y.npy.gz is
 * Y.npy unless an entry called Y.npy is there too, in which case it stays
 * Y.npy.gz, a passthrough file. Returns the count or a negative errno. */
static ssize_t read_entries(const struct walk *w, int dfd, const char *dpath, struct walk_ent **out)
{
    struct walk_ent *ents = NULL, key;
    size_t n = 0, cap = 0;
    struct dirent *de;
    DIR *d = fdopendir(dup(dfd));

    *out = NULL;
    if (!d)
        return -errno;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (fs_grow(&ents, &cap, n, sizeof(*ents), 32) < 0)
            goto out_nomem;
        memset(&ents[n], 0, sizeof(ents[n]));
        ents[n].name = strdup(de->d_name);
        if (!ents[n].name)
            goto out_nomem;
        if (classify(w, dfd, dpath, &ents[n]))
            n++;
        else
            free(ents[n].name);
    }
    closedir(d);
    if (n)
        qsort(ents, n, sizeof(*ents), cmp_ent);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(ents[i].name);

        if (ents[i].cat == WE_GZ) {
            key.name = strndup(ents[i].name, len - 3);
            if (!key.name)
                goto out_nomem_sorted;
            if (bsearch(&key, ents, n, sizeof(*ents), cmp_ent)) {
                fuse_log(FUSE_LOG_INFO, "npyfs: %s/%s: shown as is (raw bytes): %s is taken\n",
                         dpath, ents[i].name, key.name);
                ents[i].cat = WE_PLAIN;
                free(key.name);
            } else {
                ents[i].shown = key.name;
            }
        }
        if (!ents[i].shown && !(ents[i].shown = strdup(ents[i].name)))
            goto out_nomem_sorted;
    }
    *out = ents;
    return (ssize_t)n;

out_nomem:
    closedir(d);
out_nomem_sorted:
    for (size_t i = 0; i < n; i++) {
        free(ents[i].name);
        free(ents[i].target);
        free(ents[i].shown);
    }
    free(ents);
    return -ENOMEM;
}

static int walk_dir(struct walk *w, int dfd, const char *dpath, uint64_t dir,
                    const struct ancestor *up);

/* Add one walked entry under dir. Returns 0 (added or skipped) or an error. */
static int add_entry(struct walk *w, int dfd, const char *dpath, uint64_t dir, struct walk_ent *e,
                     const struct ancestor *up)
{
    static const enum unit_kind kinds[] = {
        [WE_NPZ] = UNIT_ZIP, [WE_GZ] = UNIT_GZIP, [WE_PLAIN] = UNIT_PLAIN};
    char *path = NULL;
    uint64_t ino;
    int ret;

    if (asprintf(&path, "%s/%s", dpath, e->name) < 0)
        return -ENOMEM;
    if (e->cat == WE_DIR) {
        struct ancestor me = {e->st.st_dev, e->st.st_ino, up};
        int sub;

        for (const struct ancestor *a = up; a; a = a->up) {
            if (a->dev == me.dev && a->ino == me.ino) {
                fuse_log(FUSE_LOG_INFO, "npyfs: %s: skipping: a directory that holds itself\n",
                         path);
                free(path);
                return 0;
            }
        }
        sub = openat(dfd, e->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0) {
            fuse_log(FUSE_LOG_WARNING, "npyfs: %s: skipping directory: %s\n", path,
                     strerror_r(errno, (char[64]){0}, 64));
            free(path);
            return 0;
        }
        ret = new_node(w->v, dir, e->shown, VN_DIR, &ino);
        if (ret == 0) {
            vnode(w->v, ino)->mtime = e->st.st_mtim;
            set_owner(vnode(w->v, ino), &e->st);
            vnode(w->v, ino)->perm = perm_after_acl(w->v, vnode(w->v, ino)->perm, NULL, sub);
            ret = walk_dir(w, sub, path, ino, &me);
        }
        close(sub);
    } else {
        ret = new_node(w->v, dir, e->shown, e->cat == WE_NPZ ? VN_ARCHIVE : VN_FILE, &ino);
        if (ret == 0)
            ret = new_unit(w->v, ino, e->target ? e->target : path, w->rootfd, w->root_len,
                           kinds[e->cat], &e->st, NULL);
    }
    free(path);
    return ret;
}

/* Walk the directory open at dfd (shown as dir), depth first. */
static int walk_dir(struct walk *w, int dfd, const char *dpath, uint64_t dir,
                    const struct ancestor *up)
{
    struct walk_ent *ents;
    ssize_t n = read_entries(w, dfd, dpath, &ents);
    int ret = 0;

    if (n < 0) {
        if (n == -ENOMEM)
            return -ENOMEM;
        fuse_log(FUSE_LOG_WARNING, "npyfs: %s: cannot list: %s; shown empty\n", dpath,
                 strerror_r((int)-n, (char[64]){0}, 64));
        return 0;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (ret == 0)
            ret = add_entry(w, dfd, dpath, dir, &ents[i], up);
        free(ents[i].name);
        free(ents[i].target);
        free(ents[i].shown);
    }
    free(ents);
    return ret;
}

/* Keep a descriptor of the directory source open at dfd until unmount, so
 * that its files are opened beneath it. Returns 0 or a negative errno. */
static int keep_root(struct vfs *v, int dfd, int *out)
{
    int *roots = realloc(v->roots, (v->nroots + 1) * sizeof(*roots));
    int fd;

    if (!roots)
        return -ENOMEM;
    v->roots = roots;
    fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    v->roots[v->nroots++] = fd;
    *out = fd;
    return 0;
}

/* Walk the directory source at path into dir. */
static int walk_source(struct vfs *v, const char *path, uint64_t dir)
{
    struct walk w = {.v = v};
    struct ancestor top;
    struct stat st;
    char *root = realpath(path, NULL);
    int dfd, ret;

    if (!root)
        return -errno;
    dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fstat(dfd, &st) < 0) {
        ret = -errno;
        if (dfd >= 0)
            close(dfd);
        free(root);
        return ret;
    }
    ret = keep_root(v, dfd, &w.rootfd);
    if (ret < 0) {
        close(dfd);
        free(root);
        return ret;
    }
    w.root = root;
    w.root_len = strlen(root);
    top.dev = st.st_dev;
    top.ino = st.st_ino;
    top.up = NULL;
    vnode(v, dir)->mtime = st.st_mtim;
    set_owner(vnode(v, dir), &st);
    vnode(v, dir)->perm = perm_after_acl(v, vnode(v, dir)->perm, NULL, dfd);
    ret = walk_dir(&w, dfd, strcmp(root, "/") ? root : "", dir, &top);
    close(dfd);
    free(root);
    return ret;
}

static int cmp_child(const void *a, const void *b, void *arg)
{
    struct vfs *v = arg;

    return strcmp(vnode(v, *(const uint64_t *)a)->name, vnode(v, *(const uint64_t *)b)->name);
}

static int open_tree(struct vfs *v, struct vfs_unit *u);
static uint64_t global_ino(struct vfs *v, const struct vfs_unit *u, uint64_t local);
static void open_job_run(struct defer_job *j);
static void open_job_cancel(struct defer_job *j);

/* The root of several sources (or of one .npy.gz) carries the newest mtime
 * of what it holds. */
static void newest_mtime(struct vfs *v, struct timespec t)
{
    struct timespec *r = &vnode(v, 1)->mtime;

    if (t.tv_sec > r->tv_sec || (t.tv_sec == r->tv_sec && t.tv_nsec > r->tv_nsec))
        *r = t;
}

/* The seconds since the epoch of an S3 listing's LastModified
 * ("2024-05-01T12:34:56.000Z"), or 0 if it does not parse. */
static time_t iso8601(const char *s)
{
    struct tm tm = {0};
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);

    return end ? timegm(&tm) : 0;
}

/* Can one component of a key be a name in the mount? */
static bool placeable(const char *c, size_t n)
{
    return n > 0 && n <= NAME_MAX && !(n == 1 && c[0] == '.') &&
           !(n == 2 && c[0] == '.' && c[1] == '.');
}

/* The directory components of the key being placed that the one before
 * shared, with their nodes (keys come in byte order, so the keys under one
 * directory are consecutive: a directory is made once). */
struct dir_stack {
    const char *path; /* the previous key's directory part (borrowed) */
    size_t len;       /* its length, '/' included */
    uint64_t ino[PATH_MAX / 2 + 1];
    size_t depth;
};

/* The directory node for rel's directory part (rel[0..dlen), dlen 0: top),
 * made as needed under top. Returns 0 or a negative errno. */
static int listing_dir(struct vfs *v, struct dir_stack *ds, uint64_t top, const char *rel,
                       size_t dlen, const struct timespec *mtime, uint64_t *dir)
{
    size_t depth = 0, at = 0;
    int ret;

    /* the components shared with the previous key's directory */
    while (at < dlen) {
        size_t n = strcspn(rel + at, "/");
        if (at + n > ds->len || memcmp(rel + at, ds->path + at, n) != 0 ||
            (at + n < ds->len && ds->path[at + n] != '/'))
            break;
        at += n + 1;
        depth++;
    }
    ds->depth = depth;
    while (at < dlen) {
        size_t n = strcspn(rel + at, "/");
        char name[NAME_MAX + 1];
        uint64_t parent = ds->depth ? ds->ino[ds->depth - 1] : top, ino;

        memcpy(name, rel + at, n);
        name[n] = '\0';
        ret = new_node(v, parent, name, VN_DIR, &ino);
        if (ret < 0)
            return ret;
        vnode(v, ino)->perm = 0555;
        vnode(v, ino)->uid = getuid();
        vnode(v, ino)->gid = getgid();
        if (ds->depth >= sizeof(ds->ino) / sizeof(ds->ino[0]))
            return -ENAMETOOLONG;
        ds->ino[ds->depth++] = ino;
        at += n + 1;
    }
    ds->path = rel;
    ds->len = dlen;
    *dir = ds->depth ? ds->ino[ds->depth - 1] : top;
    /* every directory above carries the newest mtime below it */
    for (size_t i = 0; i < ds->depth; i++) {
        struct timespec *t = &vnode(v, ds->ino[i])->mtime;
        if (mtime->tv_sec > t->tv_sec)
            *t = *mtime;
    }
    return 0;
}

/* Place one archive key (rel: the key past the prefix) of the s3:// prefix
 * whose object URLs start with base ("s3://BUCKET/"). Returns 0 (placed,
 * or skipped and logged) or a negative errno. */
static int listing_key(struct vfs *v, struct dir_stack *ds, uint64_t top, const char *base,
                       const struct s3_object *o, const char *rel)
{
    size_t len = strlen(rel), dlen = 0, at = 0;
    struct stat st = {0};
    bool npz = len > 4 && strcmp(rel + len - 4, ".npz") == 0;
    char *url = NULL, *shown;
    uint64_t dir, ino;
    int ret;

    for (at = 0; at <= len;) {
        size_t n = strcspn(rel + at, "/");
        if (!placeable(rel + at, n)) {
            fuse_log(FUSE_LOG_INFO, "npyfs: %s%s: skipping: its key cannot be a path in the "
                     "mount (an empty, '.' or '..' component, or one longer than %d bytes)\n",
                     base, o->key, NAME_MAX);
            return 0;
        }
        if (rel[at + n] == '/')
            dlen = at + n + 1;
        at += n + 1;
    }
    st.st_mode = S_IFREG | 0444;
    st.st_size = (off_t)o->size;
    st.st_mtim.tv_sec = iso8601(o->last_modified);
    st.st_uid = getuid();
    st.st_gid = getgid();
    ret = listing_dir(v, ds, top, rel, dlen ? dlen - 1 : 0, &st.st_mtim, &dir);
    if (ret < 0)
        return ret;
    /* Y.npy.gz shows as Y.npy, as in a directory source */
    shown = strndup(rel + dlen, len - dlen - (npz ? 0 : 3));
    if (!shown || asprintf(&url, "%s%s", base, o->key) < 0) {
        free(shown);
        return -ENOMEM;
    }
    ret = new_node(v, dir, shown, npz ? VN_ARCHIVE : VN_FILE, &ino);
    if (ret == 0)
        ret = new_unit(v, ino, url, -1, 0, npz ? UNIT_ZIP : UNIT_GZIP, &st, NULL);
    if (ret == 0 && st.st_mtim.tv_sec > vnode(v, top)->mtime.tv_sec)
        vnode(v, top)->mtime = st.st_mtim;
    free(shown);
    free(url);
    return ret;
}

/* An s3:// prefix source (url) into dir: its archive keys as a tree. */
static int walk_listing(struct vfs *v, const char *url, const struct s3_listing *l,
                        uint64_t dir)
{
    struct dir_stack *ds = calloc(1, sizeof(*ds));
    struct s3_location loc;
    char *base = NULL;
    int ret;

    if (!ds)
        return -ENOMEM;
    ret = s3_parse_url(url, &loc);
    if (ret < 0) {
        free(ds);
        return ret;
    }
    if (asprintf(&base, "s3://%s/", loc.bucket) < 0)
        ret = -ENOMEM;
    vnode(v, dir)->perm = 0555;
    vnode(v, dir)->uid = getuid();
    vnode(v, dir)->gid = getgid();
    for (size_t i = 0; ret == 0 && i < l->count; i++) {
        const char *key = l->objs[i].key;
        if (strncmp(key, loc.key, strlen(loc.key)) != 0)
            continue; /* not under the prefix: S3 would not list it */
        ret = listing_key(v, ds, dir, base, &l->objs[i], key + strlen(loc.key));
    }
    free(base);
    s3_location_destroy(&loc);
    free(ds);
    return ret;
}

/* A source named on the command line, at dir (or as the root itself). */
static int add_source(struct vfs *v, struct vfs_source *s, uint64_t parent, bool single)
{
    struct archive *a = s->archive;
    struct stat st;
    uint64_t ino;
    int ret;

    if (!a && s->listing) {
        if (single)
            return walk_listing(v, s->path, s->listing, 1);
        ret = new_node(v, parent, s->name, VN_DIR, &ino);
        if (ret == 0)
            ret = walk_listing(v, s->path, s->listing, ino);
        if (ret == 0)
            newest_mtime(v, vnode(v, ino)->mtime);
        return ret;
    }
    if (!a) {
        if (single)
            return walk_source(v, s->path, 1);
        ret = new_node(v, parent, s->name, VN_DIR, &ino);
        if (ret == 0)
            ret = walk_source(v, s->path, ino);
        if (ret == 0)
            newest_mtime(v, vnode(v, ino)->mtime);
        return ret;
    }
    s->archive = NULL; /* the unit owns it from here, even on failure */
    st = bsrc_ident(a->bs)->st;
    if (a->kind == ARCHIVE_ZIP && single) {
        ino = 1;
        vnode(v, 1)->type = VN_ARCHIVE;
    } else if (single && !a->members[0].name[0]) {
        fuse_log(FUSE_LOG_WARNING, "npyfs: %s: no name to show its content under\n", a->name);
        archive_close(a);
        return 0;
    } else {
        ret = new_node(v, parent, single ? a->members[0].name : s->name,
                       a->kind == ARCHIVE_ZIP ? VN_ARCHIVE : VN_FILE, &ino);
        if (ret < 0) {
            archive_close(a);
            return ret;
        }
    }
    ret = new_unit(v, ino, a->path, -1, 0, a->kind == ARCHIVE_ZIP ? UNIT_ZIP : UNIT_GZIP, &st, a);
    if (ret < 0) {
        archive_close(a);
        return ret;
    }
    newest_mtime(v, st.st_mtim);
    atomic_fetch_add_explicit(&fs_counters.archives_opened, 1, memory_order_relaxed);
    return open_tree(v, &v->units[v->nunits - 1]);
}

/* A name taken twice in one directory (an s3:// prefix can hold "a.npz"
 * and "a.npz/b.npz"; a local directory cannot): the first in the sorted
 * order stays, the others are left out of the directory (logged). */
static void drop_twins(struct vfs *v, struct vfs_node *d)
{
    size_t kept = 1;

    for (size_t i = 1; i < d->nchildren; i++) {
        struct vfs_node *c = vnode(v, d->children[i]);

        if (strcmp(c->name, vnode(v, d->children[kept - 1])->name) != 0) {
            d->children[kept++] = d->children[i];
            continue;
        }
        fuse_log(FUSE_LOG_INFO, "npyfs: skipping a second entry called '%s' in one directory "
                 "of the mount\n", c->name);
        if (c->type != VN_FILE)
            d->nsubdirs--;
    }
    d->nchildren = kept;
}

/* Contract in vfs.h. */
int vfs_new(struct vfs_source *srcs, size_t n, const struct options *opts, struct cache *cache,
               struct vfs **out, size_t *bad)
{
    struct vfs *v;
    uint64_t root;
    int ret = 0;

    *out = NULL;
    *bad = 0;
    v = calloc(1, sizeof(*v));
    if (!v)
        ret = -ENOMEM;
    else {
        v->opts = opts;
        v->cache = cache;
        ret = defer_new(DEFER_THREADS, &v->defer);
    }
    if (ret == 0)
        ret = new_node(v, 0, "", VN_DIR, &root);
    if (ret == 0) { /* synthesized, unless a single source replaces it */
        vnode(v, root)->perm = 0555;
        vnode(v, root)->uid = getuid();
        vnode(v, root)->gid = getgid();
    }
    for (size_t i = 0; i < n; i++) {
        if (ret == 0) {
            *bad = i;
            ret = add_source(v, &srcs[i], 1, n == 1);
        } else {
            archive_close(srcs[i].archive); /* owned by the vfs, even on failure */
            srcs[i].archive = NULL;
        }
    }
    if (ret < 0) {
        vfs_free(v);
        return ret;
    }
    for (size_t i = 0; i < v->count; i++)
        if (v->nodes[i].nchildren > 1) {
            qsort_r(v->nodes[i].children, v->nodes[i].nchildren, sizeof(uint64_t), cmp_child, v);
            drop_twins(v, &v->nodes[i]);
        }
    pthread_mutex_init(&v->lock, NULL);
    for (size_t i = 0; i < v->nunits; i++) {
        pthread_mutex_init(&v->units[i].lock, NULL);
        v->units[i].vfs = v;
        v->units[i].job.run = open_job_run;
        v->units[i].job.cancel = open_job_cancel;
    }
    v->locks_ready = true;
    *out = v;
    return 0;
}

/* Contract in vfs.h. */
void vfs_free(struct vfs *v)
{
    if (!v)
        return;
    defer_free(v->defer); /* no open job runs from here on */
    for (size_t i = 0; i < v->nunits; i++) {
        struct vfs_unit *u = &v->units[i];

        indexer_free(u->indexer); /* joins its thread if one still runs */
        tree_destroy(&u->tree);
        archive_close(u->a);
        free(u->path);
        if (v->locks_ready)
            pthread_mutex_destroy(&u->lock);
    }
    for (size_t i = 0; i < v->count; i++) {
        free(v->nodes[i].name);
        free(v->nodes[i].children);
    }
    if (v->locks_ready)
        pthread_mutex_destroy(&v->lock);
    for (size_t i = 0; i < v->nroots; i++)
        close(v->roots[i]);
    free(v->roots);
    free(v->units);
    free(v->nodes);
    free(v);
}

/* ----------------------------------------------------------------- open --- */

/* Build what an opened archive needs besides itself: its tree (zip) and its
 * indexer. u->a is set. Returns 0 or a negative errno. */
static int open_tree(struct vfs *v, struct vfs_unit *u)
{
    int ret = 0;

    if (u->kind == UNIT_ZIP) {
        ret = tree_init(&u->tree, u->a);
        if (ret == 0 && u->tree.count > LOCAL_MASK)
            ret = -EFBIG;
    }
    /* each member learns its inode (the notifier names its pages by it) */
    for (size_t i = 0; ret == 0 && i < u->tree.count; i++)
        if (u->tree.nodes[i].member)
            atomic_store(&u->tree.nodes[i].member->ino, global_ino(v, u, i + 1));
    if (ret == 0 && u->kind != UNIT_ZIP)
        atomic_store(&u->a->members[0].ino, u->node);
    if (ret == 0 && u->kind != UNIT_PLAIN)
        ret = indexer_new(u->a, v->opts, v->defer, v->cache, &u->indexer);
    return ret;
}

/* Worth trying again later rather than failing the unit for good (-ECANCELED:
 * the mount is stopping; -EREMOTEIO: the server of a remote unit failed). */
static bool transient(int err)
{
    return err == -ENOMEM || err == -EMFILE || err == -ENFILE || err == -EINTR || err == -EAGAIN ||
           err == -ECANCELED || err == -EREMOTEIO;
}

/* A remote unit's open failed because of the server or the network (why:
 * the server's problem, "" if the failure came from parsing what it sent),
 * not because of what the object is: a later request tries again. */
static bool server_down(int err, const char *why)
{
    if (bsrc_transient(err))
        return true;
    return why[0] && (err == -EIO || err == -ECONNREFUSED || err == -EHOSTUNREACH ||
                      err == -ECONNRESET || err == -ETIMEDOUT);
}

#define ERRTEXT(err) strerror_r(-(err), (char[64]){0}, 64)

/* Open unit u (its open job, the only one: no lock held). Returns UNIT_OPEN
 * or a negative errno. */
static int open_unit(struct vfs *v, struct vfs_unit *u)
{
    const char *name = vnode(v, u->node)->name;
    struct archive_limits lim = {.max_ratio = v->opts->max_ratio, .stop = &v->stop};
    char buf[192];
    int ret;

    char why[256] = "", shown[PATH_MAX + 64];

    bsrc_name_of(u->path, shown, sizeof(shown));
    if (u->kind == UNIT_PLAIN)
        ret = archive_open_plain(u->rootfd, u->rel, u->path, name, v->opts->spacing, &u->a);
    else if (u->remote)
        ret = archive_open_url(v->opts->net, u->path, v->opts->spacing, &lim, &u->a, why,
                                  sizeof(why));
    else
        ret = archive_open_beneath(u->rootfd, u->rel, u->path, v->opts->spacing, &lim, &u->a);
    if (u->remote && ret < 0 && server_down(ret, why)) {
        /* not the archive's fault: the next request tries again */
        if (!atomic_exchange(&u->said_retry, true))
            fuse_log(FUSE_LOG_ERR, "npyfs: %s: cannot open it now: %s; it reads as EIO until "
                     "the server answers\n", shown, why[0] ? why : ERRTEXT(ret));
        return -EREMOTEIO;
    }
    if (ret == 0 && u->a->kind != (u->kind == UNIT_ZIP    ? ARCHIVE_ZIP
                                   : u->kind == UNIT_GZIP ? ARCHIVE_GZIP
                                                          : ARCHIVE_PLAIN)) {
        ret = -EINVAL; /* a gzip file called .npz, or the other way round */
        snprintf(why, sizeof(why), "its content is %s, not what its name says (%s)",
                 u->a->kind == ARCHIVE_ZIP ? "a zip" : "a gzip file",
                 u->kind == UNIT_ZIP ? ".npz: a zip" : ".npy.gz: a gzip file");
    }
    if (ret == 0)
        ret = open_tree(v, u);
    if (ret < 0) {
        if (!transient(ret))
            fuse_log(FUSE_LOG_ERR, "npyfs: %s: cannot open: %s; it reads as EIO\n", shown,
                     why[0] ? why : archive_problem(ret, v->opts->max_ratio, buf, sizeof(buf)));
        indexer_free(u->indexer);
        u->indexer = NULL;
        tree_destroy(&u->tree);
        archive_close(u->a);
        u->a = NULL;
        return ret;
    }
    /* A passthrough file that changed since mount is a changed archive:
     * its size was shown already, so its reads fail rather than mislead. */
    if (u->kind == UNIT_PLAIN &&
        (bsrc_ident(u->a->bs)->size != u->size ||
         bsrc_ident(u->a->bs)->st.st_mtim.tv_sec != u->mtime.tv_sec ||
         bsrc_ident(u->a->bs)->st.st_mtim.tv_nsec != u->mtime.tv_nsec)) {
        atomic_store(&u->a->changed, true);
        fuse_log(FUSE_LOG_ERR,
                 "npyfs: %s: the file changed since mount; its reads fail with "
                 "EIO (remount to see the new content)\n",
                 shown);
    }
    if (u->kind != UNIT_PLAIN)
        atomic_fetch_add_explicit(&fs_counters.archives_opened, 1, memory_order_relaxed);
    pthread_mutex_lock(&v->lock);
    if (v->started && !v->stopped)
        indexer_start(u->indexer);
    pthread_mutex_unlock(&v->lock);
    return UNIT_OPEN;
}

/* Is unit u open? Returns 0, DEFER_WAIT (it has not been opened yet: *need is
 * its index, for vfs_await()), or -EIO (it cannot be opened; logged
 * once). The fast path: one acquire load. */
static int unit_get(struct vfs *v, struct vfs_unit *u, uint32_t *need)
{
    int s = atomic_load_explicit(&u->state, memory_order_acquire);

    if (s == UNIT_OPEN)
        return 0;
    if (s == UNIT_NEW) {
        *need = (uint32_t)(u - v->units);
        return DEFER_WAIT;
    }
    return -EIO;
}

static bool unit_is_open(struct vfs_unit *u)
{
    return atomic_load_explicit(&u->state, memory_order_acquire) == UNIT_OPEN;
}

/* The end of u's open job, with its result s: publish it (a transient error
 * leaves u to be opened again by the next request) and wake the waiters,
 * with 0 to ask again, or the transient errno. */
static void open_done(struct vfs *v, struct vfs_unit *u, int s)
{
    struct defer_waiter *list;

    pthread_mutex_lock(&u->lock);
    if (s == UNIT_OPEN || !transient(s))
        atomic_store_explicit(&u->state, s, memory_order_release);
    list = u->waiters;
    u->waiters = NULL;
    u->opening = false;
    pthread_mutex_unlock(&u->lock);
    defer_wake(v->defer, list, s == UNIT_OPEN || !transient(s) ? 0 : s);
}

static void open_job_run(struct defer_job *j)
{
    struct vfs_unit *u = (struct vfs_unit *)((char *)j - offsetof(struct vfs_unit, job));

    open_done(u->vfs, u, atomic_load(&u->vfs->stop) ? -ECANCELED : open_unit(u->vfs, u));
}

static void open_job_cancel(struct defer_job *j)
{
    struct vfs_unit *u = (struct vfs_unit *)((char *)j - offsetof(struct vfs_unit, job));

    open_done(u->vfs, u, -ECANCELED);
}

/* Contract in vfs.h. */
int vfs_await(struct vfs *v, uint32_t need, struct defer_waiter *w)
{
    struct vfs_unit *u = &v->units[need];
    bool start;
    int ret;

    pthread_mutex_lock(&u->lock);
    if (atomic_load_explicit(&u->state, memory_order_relaxed) != UNIT_NEW) {
        pthread_mutex_unlock(&u->lock);
        return 1;
    }
    w->next = u->waiters;
    u->waiters = w;
    start = !u->opening;
    u->opening = true;
    pthread_mutex_unlock(&u->lock);
    if (!start)
        return 0;
    ret = defer_submit(v->defer, &u->job);
    if (ret == -EAGAIN)
        open_job_run(&u->job); /* no pool: open it here, as before the pool */
    else if (ret < 0)
        open_job_cancel(&u->job);
    return 0;
}

/* Contract in vfs.h. */
void vfs_start(struct vfs *v)
{
    defer_start(v->defer);
    pthread_mutex_lock(&v->lock);
    v->started = true;
    for (size_t i = 0; i < v->nunits; i++)
        if (unit_is_open(&v->units[i]))
            indexer_start(v->units[i].indexer);
    pthread_mutex_unlock(&v->lock);
}

/* Contract in vfs.h. */
void vfs_stop(struct vfs *v)
{
    pthread_mutex_lock(&v->lock);
    v->stopped = true;
    pthread_mutex_unlock(&v->lock);
    /* First every stop flag, so that the jobs in hand end promptly, then the
     * pool (answering the queued requests), then the indexers, whose saves
     * must not race a pass in the pool. A unit whose open job ends meanwhile
     * is published before the pool is joined, so the last loop sees it. */
    atomic_store(&v->stop, true);
    for (size_t i = 0; i < v->nunits; i++)
        if (unit_is_open(&v->units[i]))
            indexer_cancel(v->units[i].indexer);
    defer_stop(v->defer);
    for (size_t i = 0; i < v->nunits; i++)
        if (unit_is_open(&v->units[i]))
            indexer_stop(v->units[i].indexer);
}

/* ------------------------------------------------------------- requests --- */

/* An inode, decoded: an outer node (vn, with its unit u for VN_ARCHIVE and
 * VN_FILE), or node tn inside open unit u's tree. */
struct vref {
    struct vfs_node *vn;
    struct vfs_unit *u;
    struct tree_node *tn;
};

static int resolve(struct vfs *v, uint64_t ino, struct vref *r)
{
    uint64_t k = ino >> UNIT_SHIFT, local = ino & LOCAL_MASK;

    memset(r, 0, sizeof(*r));
    if (k == 0) {
        r->vn = vnode(v, ino);
        if (!r->vn)
            return -ENOENT;
        if (r->vn->type != VN_DIR)
            r->u = &v->units[r->vn->unit];
        return 0;
    }
    if (k > v->nunits || local < 2 || !unit_is_open(&v->units[k - 1]))
        return -ENOENT;
    r->u = &v->units[k - 1];
    r->tn = tree_get(&r->u->tree, local);
    return r->tn ? 0 : -ENOENT;
}

/* The global inode of local inode local of unit u. */
static uint64_t global_ino(struct vfs *v, const struct vfs_unit *u, uint64_t local)
{
    if (local == 1)
        return u->node;
    return ((uint64_t)(u - v->units) + 1) << UNIT_SHIFT | local;
}

/* Fill d for the directory r; needs an archive directory open (DEFER_WAIT). */
static int dir_of(struct vfs *v, uint64_t ino, struct vref *r, struct vfs_dir *d,
                  uint32_t *need)
{
    struct tree_node *tn = r->tn;
    int ret;

    memset(d, 0, sizeof(*d));
    d->ino = ino;
    if (r->vn && r->vn->type == VN_DIR) {
        d->parent = r->vn->parent;
        d->count = r->vn->nchildren;
        d->node = r->vn;
        return 0;
    }
    if (r->vn && r->vn->type == VN_FILE)
        return -ENOTDIR;
    if (r->vn) { /* VN_ARCHIVE: its tree's root */
        ret = unit_get(v, r->u, need);
        if (ret != 0)
            return ret;
        tn = tree_get(&r->u->tree, 1);
        d->parent = r->vn->parent;
    } else {
        if (!tn->is_dir)
            return -ENOTDIR;
        d->parent = global_ino(v, r->u, tn->parent);
    }
    d->count = tn->nchildren;
    d->node = tn;
    d->unit = r->u;
    return 0;
}

/* Contract in vfs.h. */
int vfs_opendir(struct vfs *v, uint64_t ino, struct vfs_dir *d, uint32_t *need)
{
    struct vref r;
    int ret = resolve(v, ino, &r);

    return ret < 0 ? ret : dir_of(v, ino, &r, d, need);
}

/* Contract in vfs.h. */
void vfs_dirent(struct vfs *v, const struct vfs_dir *d, size_t i, const char **name,
                   uint64_t *ino, bool *is_dir)
{
    if (!d->unit) {
        const struct vfs_node *dn = d->node;
        struct vfs_node *c = vnode(v, dn->children[i]);

        *name = c->name;
        *ino = dn->children[i];
        *is_dir = c->type != VN_FILE;
    } else {
        const struct tree_node *dn = d->node;
        struct vfs_unit *u = (struct vfs_unit *)d->unit;
        struct tree_node *c = tree_get(&u->tree, dn->children[i]);

        *name = c->name;
        *ino = global_ino(v, u, dn->children[i]);
        *is_dir = c->is_dir;
    }
}

/* Contract in vfs.h. */
int vfs_lookup(struct vfs *v, uint64_t dir, const char *name, uint64_t *ino,
                  uint32_t *need)
{
    struct vfs_dir d;
    struct vref r;
    int ret = resolve(v, dir, &r);
    size_t lo = 0, hi;

    *ino = 0;
    if (ret == 0)
        ret = dir_of(v, dir, &r, &d, need);
    if (ret != 0)
        return ret;
    if (d.unit) {
        struct vfs_unit *u = (struct vfs_unit *)d.unit;
        uint64_t local = tree_lookup(
            &u->tree, (uint64_t)((const struct tree_node *)d.node - u->tree.nodes) + 1, name);
        if (!local)
            return -ENOENT;
        *ino = global_ino(v, u, local);
        return 0;
    }
    hi = d.count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t c = ((const struct vfs_node *)d.node)->children[mid];
        struct vfs_node *cn = vnode(v, c);
        int cmp = strcmp(name, cn->name);

        if (cmp == 0) {
            /* an .npy.gz that cannot be opened: as if it could not be sized
             * (its size is not needed here: see vfs_attr_ready()) */
            if (cn->type == VN_FILE && v->units[cn->unit].kind == UNIT_GZIP &&
                atomic_load_explicit(&v->units[cn->unit].state, memory_order_acquire) < 0)
                return -EIO;
            *ino = c;
            return 0;
        }
        if (cmp < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -ENOENT;
}

static void set_dir(struct stat *st, uint32_t nsubdirs, mode_t perm)
{
    st->st_mode = S_IFDIR | perm;
    st->st_nlink = 2 + nsubdirs;
}

static void set_file(struct stat *st, uint64_t size, mode_t perm)
{
    /* a ZIP64 size past INT64_MAX is no off_t (the kernel would refuse the
     * attributes: EIO at lookup); such a member is unsupported (its open
     * says so), listed with size 0 */
    if (size > INT64_MAX)
        size = 0;
    st->st_mode = S_IFREG | perm;
    st->st_nlink = 1;
    st->st_size = (off_t)size;
    st->st_blocks = (blkcnt_t)((size + 511) / 512);
}

/* Contract in vfs.h. */
int vfs_getattr(struct vfs *v, uint64_t ino, struct stat *st)
{
    struct timespec mtime;
    struct vref r;
    int ret = resolve(v, ino, &r);

    if (ret < 0)
        return ret;
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    st->st_blksize = 4096;
    /* Owner, group and permission bits are the source's at mount (a
     * directory's own; an archive's for everything it holds), so that
     * default_permissions checks what the source's modes say. numpy writes
     * 1980 dates and modes without a file type: never copy a member's. */
    if (r.vn && r.vn->type == VN_DIR) {
        set_dir(st, r.vn->nsubdirs, r.vn->perm);
        st->st_uid = r.vn->uid;
        st->st_gid = r.vn->gid;
        mtime = r.vn->mtime;
    } else if (r.vn) {
        bool open = unit_is_open(r.u);

        /* everything carries its file's mtime */
        mtime = r.u->mtime;
        if (r.vn->type == VN_FILE)
            set_file(st, open ? r.u->a->members[0].size : r.u->size, r.u->perm);
        else if (open)
            set_dir(st, tree_get(&r.u->tree, 1)->nsubdirs, dir_perm(r.u->perm));
        else {
            set_dir(st, 0, dir_perm(r.u->perm));
            st->st_nlink = 1; /* as on btrfs: subdirectories unknown (until opened) */
        }
    } else {
        mtime = bsrc_ident(r.u->a->bs)->st.st_mtim;
        if (r.tn->is_dir)
            set_dir(st, r.tn->nsubdirs, dir_perm(r.u->perm));
        else
            set_file(st, r.tn->member->size, r.u->perm);
    }
    if (r.u) {
        st->st_uid = r.u->uid;
        st->st_gid = r.u->gid;
    }
    st->st_atim = mtime;
    st->st_mtim = mtime;
    st->st_ctim = mtime;
    return 0;
}

/* Contract in vfs.h. */
int vfs_attr_ready(struct vfs *v, uint64_t ino, uint32_t *need)
{
    struct vfs_node *n = ino >> UNIT_SHIFT ? NULL : vnode(v, ino);

    if (!n || n->type != VN_FILE || v->units[n->unit].kind != UNIT_GZIP)
        return 0;
    return unit_get(v, &v->units[n->unit], need);
}

/* Contract in vfs.h. */
int vfs_file(struct vfs *v, uint64_t ino, struct vfs_file *f, uint32_t *need)
{
    struct vref r;
    int ret = resolve(v, ino, &r);

    memset(f, 0, sizeof(*f));
    if (ret < 0)
        return ret;
    if (r.vn && r.vn->type != VN_FILE)
        return -EISDIR;
    if (r.tn && r.tn->is_dir)
        return -EISDIR;
    ret = unit_get(v, r.u, need);
    if (ret != 0)
        return ret;
    f->a = r.u->a;
    f->m = r.tn ? r.tn->member : &r.u->a->members[0];
    f->indexer = r.u->indexer;
    return 0;
}

/* Contract in vfs.h. */
void vfs_totals(struct vfs *v, uint64_t *bytes, uint64_t *files)
{
    *bytes = 0;
    *files = v->count;
    for (size_t i = 0; i < v->nunits; i++) {
        struct vfs_unit *u = &v->units[i];

        if (!unit_is_open(u))
            continue;
        for (size_t j = 0; j < u->a->count; j++)
            *bytes += u->a->members[j].size;
        if (u->tree.count > 1)
            *files += u->tree.count - 1;
    }
}

/* Contract in vfs.h. */
void vfs_foreach(struct vfs *v, void (*fn)(struct archive *a, void *arg), void *arg)
{
    /* passthrough files are not archives: nothing to index or check */
    for (size_t i = 0; v && i < v->nunits; i++)
        if (unit_is_open(&v->units[i]) && v->units[i].kind != UNIT_PLAIN)
            fn(v->units[i].a, arg);
}

/* Contract in vfs.h. */
void vfs_units(struct vfs *v, struct vfs_units *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; v && i < v->nunits; i++) {
        struct vfs_unit *u = &v->units[i];
        int s = atomic_load_explicit(&u->state, memory_order_acquire);

        if (u->kind == UNIT_PLAIN)
            continue; /* passthrough files: nothing to index */
        if (s == UNIT_OPEN) {
            out->opened++;
        } else if (s < 0) {
            out->failed++;
        } else {
            out->unopened++;
            out->unopened_bytes += u->size;
        }
    }
}
