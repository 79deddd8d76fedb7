/*
 * The stats text and JSON of a mount.
 *
 * Ownership: the caller's buffer.
 * Locks: none held while formatting but the vfs's and the members' own
 * short ones; counters are read lock-free.
 * Errors: none (a text that does not fit is cut at member boundaries).
 */
#ifndef NPYFS_FS_STATS_H
#define NPYFS_FS_STATS_H

#include <stdbool.h>
#include <stddef.h>

struct mount_ctx;

/* The stats text of a mount (user.npyfs.stats, printed by `npyfs stats`),
 * or with json the same as one JSON object: counters, then per member of
 * every opened archive its index coverage and damage. Writes at most size
 * bytes including the NUL (members that do not fit are counted, not
 * listed); returns the length written. Thread-safe. */
size_t stats_format(struct mount_ctx *ctx, bool json, char *buf, size_t size);

#endif
