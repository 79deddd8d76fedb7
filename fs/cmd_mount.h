/*
 * `npyfs mount` and the form mount.fuse3 uses: parse the arguments, check
 * the sources and the mount point, build the mount (the cache, the
 * namespace, the FUSE session), fork into the background unless asked
 * not to, and serve.
 *
 * Ownership: argv is borrowed.
 * Locks: none (the CLI, one thread, until the session runs).
 * Errors: an exit status (0, or 1 after one line on stderr naming the source
 * and the problem: nothing is left mounted).
 * Threads: the serving process runs libfuse's loop (up to 16 threads) and
 * the daemon's threads (ops.h).
 */
#ifndef NPYFS_FS_CMD_MOUNT_H
#define NPYFS_FS_CMD_MOUNT_H

/* npyfs mount [-f] [-d] [-o OPT,...] SOURCE... MOUNTPOINT (argv: what
 * follows "mount"). Returns an exit status. */
int cmd_mount(int argc, char **argv);

/* The call form of mount.fuse3 (an /etc/fstab line of type fuse.npyfs):
 * npyfs SOURCE MOUNTPOINT [-o OPTS] (argv: from SOURCE on). Mounts in the
 * background as cmd_mount() does, after dropping the options only fstab
 * knows. Returns an exit status. */
int cmd_mount_fstab(int argc, char **argv);

#endif
