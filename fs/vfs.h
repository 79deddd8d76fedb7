/*
 * The mount's namespace: its sources, the outer tree, units opened lazily,
 * inode numbers.
 *
 * Ownership: the vfs owns every archive, tree, indexer and unit; a source's
 * archive from vfs_new() on, even when it fails. Options and cache are
 * borrowed (they outlive the vfs).
 * Locks: u->lock per unit (its waiters, whether its open job runs; never
 * held while opening); v->lock alone.
 * Errors: -ENOENT, -ENOTDIR, -EISDIR, -EIO (logged once), -ENOMEM / -EMFILE
 * (not remembered), -EFBIG; DEFER_WAIT (defer.h) with *need.
 */
#ifndef NPYFS_FS_VFS_H
#define NPYFS_FS_VFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "defer.h"

struct cache;
struct archive;
struct archive_member;
struct options;
struct s3_listing;

/*
 * The mount's namespace (vfs.c): an outer tree built at mount from the
 * sources (real directories walked with lstat only, archive directories,
 * .npy.gz files, passthrough files), immutable afterwards, plus one unit per
 * archive or file in it. A unit is opened at most once, on first use (an
 * archive named on the command line: at mount), and its result, the archive
 * with its own immutable tree or an errno, is published atomically.
 * Inode numbers: an outer node's is its index + 1 (< 2^32); a node inside
 * unit k's tree is (k + 1) << 32 | its local inode, except the tree's root,
 * which is the unit's node in the outer tree. Rules in README.md (Sources).
 */
struct vfs;
struct indexer;

/* One source named on the command line, checked by the caller. */
struct vfs_source {
    const char *path;           /* borrowed: as given (a URL for a remote source) */
    const char *name;           /* borrowed: its entry at the root (several sources) */
    struct archive *archive; /* an archive file or object, opened: owned by the
                                 * vfs from vfs_new() on, even when it fails; NULL
                                 * for a directory or an s3:// prefix */
    /* an s3:// prefix (path): its archive keys (net_list()), borrowed during
     * vfs_new(); NULL for anything else */
    const struct s3_listing *listing;
};

/* Build the namespace of n sources. One source: its content at the root;
 * several: each at the root under its name (names must differ). Walks the
 * directories, and turns an s3:// prefix's keys into a tree the same way
 * (split at '/'; a key that cannot be placed, such as one with an empty,
 * "." or ".." component, or a name taken twice, is logged and skipped;
 * its archives are opened on first use through opts->net), (errors below
 * the top are logged and the entry skipped) and
 * sets up the indexers of the opened archives. opts and cache (the chunk
 * cache, which full passes run for a waiting open may fill; NULL: none)
 * must outlive the vfs. Returns 0, or a negative errno with *out NULL and
 * *bad the index of the source at fault (-ENOMEM, a directory's opendir()
 * error, -EFBIG more entries than inode numbers). */
int vfs_new(struct vfs_source *srcs, size_t n, const struct options *opts, struct cache *cache,
               struct vfs **out, size_t *bad);
/* Accepts NULL; stops the indexers first if needed. */
void vfs_free(struct vfs *v);

/* FUSE init: start the opener pool (struct defer) and the background
 * indexers of the archives opened so far (archives opened later start theirs
 * at once). FUSE destroy: raise the stop flag that sizing and verification
 * passes check between reads (they end with -ECANCELED), answer every request
 * still waiting (defer_waiter woken with -ECANCELED), join the pool, then stop
 * and join every indexer; none starts afterwards. */
void vfs_start(struct vfs *v);
void vfs_stop(struct vfs *v);

/* Every handler below is thread-safe; they return 0 or a negative errno:
 * -ENOENT no such inode or name, -ENOTDIR, -EISDIR, -EIO an archive or
 * file that cannot be opened (logged once), -ENOMEM / -EMFILE (not
 * remembered: the next call tries again). Those that need a unit open
 * return DEFER_WAIT instead of opening it, with *need the unit to wait for
 * (vfs_await()); a unit already open costs nothing more (one atomic
 * load). */

/* The child of dir called name. Needs an archive looked into open, never a
 * directory's archives by themselves, nor an .npy.gz: the kernel sends the
 * lookups of one directory one at a time, so a lookup that waited for a file
 * to be sized would hold up its neighbours. -EIO for an .npy.gz known not to
 * open. */
int vfs_lookup(struct vfs *v, uint64_t dir, const char *name, uint64_t *ino,
                  uint32_t *need);

/* Are ino's attributes final? 0 yes; DEFER_WAIT: an .npy.gz not opened yet,
 * whose size is known only once it is (*need, for vfs_await()); -EIO: one
 * that cannot be opened. Thread-safe, cheap (one atomic load). */
int vfs_attr_ready(struct vfs *v, uint64_t ino, uint32_t *need);

/* Attributes. Owner, group and permission bits are the source's at mount
 * (its stat, set-user-ID and set-group-ID dropped): a walked directory's
 * own; a file's (Y.npy of Y.npy.gz, a passthrough file) its file's; an
 * archive shown as a directory, and the directories inside it, the
 * archive's with x added wherever r is; its members exactly the archive's.
 * The root of several sources, or of one .npy.gz, is 0555 and the mounting
 * user's. Opens nothing: an .npy.gz not opened yet shows its file's size
 * (see vfs_attr_ready()). */
int vfs_getattr(struct vfs *v, uint64_t ino, struct stat *st);

/* A directory being listed: opendir fills it (an archive directory needs its
 * unit open: DEFER_WAIT), vfs_dirent() gives its children 0..count-1 in name
 * order. */
struct vfs_dir {
    uint64_t ino, parent; /* the directory's inode and its parent's */
    size_t count;         /* children */
    const void *node;     /* private to vfs.c: the directory's node */
    const void *unit;     /* private: its unit, NULL in the outer tree */
};
int vfs_opendir(struct vfs *v, uint64_t ino, struct vfs_dir *d, uint32_t *need);
void vfs_dirent(struct vfs *v, const struct vfs_dir *d, size_t i, const char **name,
                   uint64_t *ino, bool *is_dir);

/* The archive, member and indexer behind a file (its unit must be open:
 * DEFER_WAIT). -EISDIR for a directory. */
struct vfs_file {
    struct archive *a;
    struct archive_member *m;
    struct indexer *indexer; /* may be NULL */
};
int vfs_file(struct vfs *v, uint64_t ino, struct vfs_file *f, uint32_t *need);

struct defer_waiter;
/* Queue w until unit need (from DEFER_WAIT above) has been opened or has
 * failed, starting its open in the opener pool if none is running (the first
 * waiter starts it; later ones only queue). Returns 0: queued, and w->wake()
 * is called once, maybe from another thread, maybe before this returns (do
 * not touch w after 0): with 0, ask again (the unit is open, or failed for
 * good and the call now gives -EIO), or with a negative errno to answer (a
 * transient error of the open, -ECANCELED at unmount). 1: not queued, the
 * unit no longer waits to be opened: ask again now. Thread-safe. */
int vfs_await(struct vfs *v, uint32_t need, struct defer_waiter *w);

/* statfs: bytes of every member of the opened archives, and inodes known. */
void vfs_totals(struct vfs *v, uint64_t *bytes, uint64_t *files);

/* vfs.c: every archive the mount has opened so far (sources are opened
 * lazily, on first lookup), in no particular order. fn runs with no lock
 * held that a FUSE handler could need; archives stay valid until unmount. */
void vfs_foreach(struct vfs *v, void (*fn)(struct archive *a, void *arg), void *arg);

/* vfs.c: the archives and .npy.gz files of the mount by state, for
 * stats (passthrough files are not counted): opened; not opened yet (a
 * directory source's, opened on first use), with their file sizes at
 * mount; or failed to open. Lock-free; a snapshot. */
struct vfs_units {
    uint64_t opened, unopened, unopened_bytes, failed;
};
void vfs_units(struct vfs *v, struct vfs_units *out);

/* perm narrowed by a POSIX ACL in its system.posix_acl_access form (acl, n
 * bytes; n <= 0: none), so that checks of the bits alone never grant more
 * than the ACL (vfs.c). */
mode_t vfs_acl_narrow(mode_t perm, const void *acl, ssize_t n);

#endif
