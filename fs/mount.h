/*
 * struct mount_ctx: what the FUSE handlers of a mount share. A header without a
 * .c.
 *
 * Ownership: as the fields say: vfs, cache, mountpoint and ra are owned;
 * se and source are borrowed.
 * Locks: none: immutable once the session runs, except ra (set at FUSE
 * init, cleared at destroy, both in libfuse's init/destroy thread).
 * Errors: none.
 */
#ifndef NPYFS_FS_MOUNT_H
#define NPYFS_FS_MOUNT_H

#include <sys/types.h>

#include <stdbool.h>

#include "options.h"

struct vfs;
struct cache;
struct readahead;
struct fuse_session;

struct mount_ctx {
    struct vfs *vfs;         /* owned: the namespace and every archive in it */
    struct fuse_session *se;    /* borrowed: the session, set before it runs (the
                                 * notifier sends through it) */
    struct cache *cache;        /* owned */
    struct options opts;
    const char *source;         /* borrowed: the first source as given, for log lines */
    char *mountpoint;           /* owned: absolute path (finds the mount's bdi), or NULL */
    struct readahead *ra;           /* owned: readahead workers, from FUSE init to destroy */
    bool background;            /* some archive may get a background pass: index= is not
                                 * lazy, and a source is local or index= was given (a
                                 * remote archive is indexed lazily by default) */
    uid_t uid;
    gid_t gid;
};

#endif
