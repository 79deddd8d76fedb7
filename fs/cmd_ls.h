/*
 * `npyfs ls [--json] [-o OPT,...] SOURCE...`: one row per member of each
 * archive named, and of every archive below each directory or s3://
 * prefix, in one listing (README, Usage): tab-separated, aligned columns on
 * a terminal, or one JSON array of objects.
 *
 * Ownership: argv is borrowed. Locks: none (the CLI, one thread).
 * Errors: an exit status (a source that fails is one line on stderr and
 * exit 1; the others are still listed).
 */
#ifndef NPYFS_FS_CMD_LS_H
#define NPYFS_FS_CMD_LS_H

/* argv: what follows "ls". Returns an exit status. */
int cmd_ls(int argc, char **argv);

#endif
