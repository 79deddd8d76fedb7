/*
 * The FUSE low-level handlers (thin), requests that wait, kernel readahead
 * tuning.
 *
 * Ownership, Locks, Errors: see the top of ops.c (handlers reply exactly
 * once; a request that must wait is answered later from another thread;
 * -EREMOTEIO is answered EIO).
 */
#ifndef NPYFS_FS_OPS_H
#define NPYFS_FS_OPS_H

/* The FUSE low-level operations (ops.c). */
struct fuse_lowlevel_ops;
extern const struct fuse_lowlevel_ops ops_lowlevel;

#endif
