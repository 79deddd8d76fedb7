/*
 * `npyfs stats [--json] MOUNTPOINT`: print the mount root's
 * user.npyfs.stats (or user.npyfs.stats.json).
 *
 * Ownership: argv is borrowed. Locks: none (the CLI, one thread).
 * Errors: an exit status (0, or 1 after one line on stderr: not an npyfs
 * mount, its daemon gone, another user's mount without allow_other).
 */
#ifndef NPYFS_FS_CMD_STATS_H
#define NPYFS_FS_CMD_STATS_H

/* argv: what follows "stats". Returns an exit status. */
int cmd_stats(int argc, char **argv);

#endif
