/*
 * `npyfs index [--prune] [-o OPT,...] SOURCE...`: build and save the index
 * of every archive named or below a directory or s3:// prefix; --prune
 * first prunes the index directory.
 *
 * Ownership: argv is borrowed. Locks: none (the CLI, one thread).
 * Errors: an exit status (one line on stderr per failing source).
 */
#ifndef NPYFS_FS_CMD_INDEX_H
#define NPYFS_FS_CMD_INDEX_H

/* argv: what follows "index". Returns an exit status. */
int cmd_index(int argc, char **argv);

#endif
