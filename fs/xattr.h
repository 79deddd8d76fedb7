/*
 * Extended attributes: user.npy.* from the .npy header, user.npyfs.*.
 *
 * Ownership: the caller's buffer; a member's parsed header facts
 * (struct archive_meta, archive.h) are published once in m->meta by
 * compare-exchange and freed with the member.
 * Locks: none taken here beyond what the stats text takes.
 * Errors: -ENODATA, -ERANGE, -EIO, -ENOMEM.
 */
#ifndef NPYFS_FS_XATTR_H
#define NPYFS_FS_XATTR_H

#include <stddef.h>

struct mount_ctx;
struct archive;
struct archive_member;

/* xattr.c: extended attributes. For an array file (m != NULL): user.npy.*
 * from its .npy header and user.npyfs.* from the archive; for the mount root
 * (a == NULL, m == NULL): user.npyfs.stats. Other directories have none.
 * Semantics of getxattr(2)/listxattr(2): size 0 asks for the length; returns
 * the length, or -ENODATA (no such attribute), -ERANGE (buf too small),
 * -EIO (the member's header cannot be read). */
long xattr_get(struct mount_ctx *ctx, struct archive *a, struct archive_member *m,
                  const char *name, char *buf, size_t size);
long xattr_list(struct mount_ctx *ctx, struct archive *a, struct archive_member *m, char *buf,
                   size_t size);

#endif
