/*
 * What the commands share: opening an archive named on the command line
 * (and the one line that says why it would not open), the network side of
 * the URLs named, the archives below a directory or an s3:// prefix, and
 * mount points (their absolute path as the mount table has it, whether the
 * mount answers).
 *
 * Ownership: what is handed out is the caller's (an archive: close it with
 * archive_close(); a list: cli_archive_list_destroy(); a path: free()).
 * Locks: none: the CLI, one thread (collecting a directory uses a static
 * for nftw()).
 * Errors: functions that fail say so on stderr in one line naming the
 * source, then return the error (negative errno) or status 1 as each says;
 * cli_make_net() exits.
 */
#ifndef NPYFS_FS_CLI_H
#define NPYFS_FS_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct archive;
struct archive_limits;
struct options;
struct net;

/* One line on stderr for a source that would not open (max_ratio: the
 * limit the open had, struct archive_limits; why: the server's problem for
 * a remote source, or NULL/""). A file refused as not a zip gets what it is
 * instead, when that can be told: a plain .npy (already mappable) or a zip
 * cut short (with the sizes that show it). */
void cli_report_open_error(const char *path, int err, uint64_t max_ratio, const char *why);

/* Open the archive at path or URL (through net for a URL), within lim.
 * Returns 0, or the error after one line on stderr. */
int cli_open_archive(struct net *net, const char *path, uint64_t spacing,
                     const struct archive_limits *lim, struct archive **out);

/* The network side for the URLs among sources[0..n) (and -o index_url=),
 * or NULL if there is none; exits with one line on failure. */
struct net *cli_make_net(const struct options *opts, const char *const *sources, int n);

/* Is url an s3:// prefix (s3://BUCKET/PREFIX/ or s3://BUCKET)? */
bool cli_is_s3_prefix(const char *url);

/* The archives below a directory SOURCE, for index and ls: every regular
 * file named as an archive, symlinks not followed (a link's target inside
 * the tree is found where it lies), sorted by path; or the archive objects
 * under an s3:// prefix, as s3:// URLs. */
struct cli_archive_list {
    char **paths; /* owned, each owned */
    size_t count, cap;
    int status;   /* 1 once a directory could not be read (said on stderr) */
};
void cli_archive_list_destroy(struct cli_archive_list *l);

/* Is SOURCE a tree of archives (a directory, an s3:// prefix)? */
bool cli_is_tree(const char *src);

/* The archives of a tree SOURCE into l (zeroed); says on stderr when there
 * is none. Returns 0, or 1 after a message: the walk failed (the directory
 * unreadable, out of memory), a directory in it could not be read, or the
 * prefix could not be listed. */
int cli_collect_tree(struct net *net, const char *src, struct cli_archive_list *l);

/* Does the FUSE mount on mnt answer? statfs always reaches the daemon.
 * Run in a child, so a daemon that hangs costs at most a few seconds.
 * Returns 0 (answers), -ENOTCONN (its daemon is gone), -ETIMEDOUT (no
 * answer in time), or another negative errno. */
int cli_probe_mount(const char *mnt);

/* The absolute path of mnt as the mount table has it, without touching mnt
 * itself, which may be a dead FUSE mount that fails every stat: trailing
 * slashes and "." components at its end dropped, its directory resolved
 * with realpath(), and a last component that is a symlink followed (as
 * mount, umount and fusermount3 do) with readlink(), which never looks at
 * the link's target. NULL with errno set on failure; else the caller frees
 * it. */
char *cli_absolute_mountpoint(const char *mnt);

#endif
