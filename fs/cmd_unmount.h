/*
 * `npyfs unmount [-z|--lazy] MOUNTPOINT`: only an npyfs mount; a busy one
 * only lazily, when asked, naming a process that holds it; one whose
 * daemon is gone is cleaned up.
 *
 * Ownership: argv is borrowed. Locks: none (the CLI, one thread).
 * Errors: an exit status (0, or 1 after one line on stderr).
 */
#ifndef NPYFS_FS_CMD_UNMOUNT_H
#define NPYFS_FS_CMD_UNMOUNT_H

/* argv: what follows "unmount". Returns an exit status. */
int cmd_unmount(int argc, char **argv);

#endif
