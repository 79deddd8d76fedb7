/*
 * The one reader of the mount table (/proc/self/mountinfo): what is mounted
 * on a path, for the CLI (is a mount point free, is it an npyfs mount, whose
 * is it) and for the daemon's kernel readahead tuning (the mount's device
 * number names its bdi in sysfs).
 *
 * Ownership: an entry is the caller's (filled in place); nothing is kept.
 * Locks: none, no state: any thread.
 * Errors: -1 when the table cannot be read (no errno values come back).
 */
#ifndef NPYFS_FS_MOUNTS_H
#define NPYFS_FS_MOUNTS_H

#include <stdbool.h>

/* One mount, as the table has it. */
struct mounts_entry {
    char dev[64];     /* "major:minor" */
    char type[64];    /* "fuse.npyfs", "ext4", ... */
    long uid;         /* a FUSE mount's owner (its user_id= option), -1: none */
    bool allow_other; /* a FUSE mount's allow_other option */
};

/* The last (visible) mount whose mount point is path (absolute; the
 * table's octal escapes, \040 for a space and the like, are undone) in the
 * mountinfo table at table: 1 and *e filled, 0 none, -1 the table cannot be
 * read. */
int mounts_find_in(const char *table, const char *path, struct mounts_entry *e);

/* mounts_find_in("/proc/self/mountinfo", path, e). */
int mounts_find(const char *path, struct mounts_entry *e);

/* Call fn for every mount in the table at table, in its order, with its
 * mount point, type and source (escapes undone; "" for no source). Returns
 * 0, or -1 when the table cannot be read. */
int mounts_each_in(const char *table,
                   void (*fn)(const char *mountpoint, const char *type, const char *source,
                              void *arg),
                   void *arg);

/* mounts_each_in("/proc/self/mountinfo", fn, arg). */
int mounts_each(void (*fn)(const char *mountpoint, const char *type, const char *source,
                           void *arg),
                void *arg);

#endif
