/*
 * The index directory: where saved deflate indexes live, one file per
 * archive member (what a file holds, and how it is checked when loaded:
 * format/dfx_store.h; its layout: docs/FORMATS.md section 6, "npyfs index files").
 * This module is the policy around those files: which directory, how it is
 * opened and checked, how a file is written durably, found, loaded, and
 * when files are removed.
 *
 * The directory is opened once (struct indexdir) and checked through that
 * descriptor: a directory owned by the user, not writable by group or
 * others, and writable by the user. Every later access (load, save, the
 * temporary file, renaming, the directory fsync, pruning) is relative to
 * the descriptor, so swapping the directory for a symlink afterwards
 * changes nothing; the checks are repeated through it before every save
 * and load (a mode changed later is caught). Files are written atomically:
 * a temporary file created O_EXCL|O_NOFOLLOW with mode 0600 in the
 * directory, fsync, rename over the final name (dfx_store_name()), fsync
 * of the directory.
 *
 * Loading opens the file never following a link and without blocking (a
 * FIFO planted at the name opens at once and is refused), checks that it is
 * a regular file of the user's, and reads it through the codec
 * (dfx_store_load()) with pread, never a mapping, so another program
 * truncating it cannot fault the caller. The file stays open (one
 * descriptor per loaded index, closed when the index is freed), for the
 * windows the index reads on demand. A load that succeeds sets the file's
 * mtime to now: the mtime is when the file was last saved or loaded, the
 * order in which pruning removes files (atime is not reliable: relatime,
 * noatime).
 *
 * Pruning (indexdir_prune(), and after every save when the directory has a
 * size cap) touches only files that look like ours: a regular file of the
 * user's (never through a symlink) whose name is an index file's ("<24 hex
 * digits>.dfx") and which starts with the magic, or a temporary file's
 * name ("<index name>.<pid>.<n>.tmp") over a day old. It never removes a
 * file that this process has loaded (and still holds open: a process-wide
 * registry of them), or the file a save has just written. Other processes
 * may share the directory: a file is removed with unlinkat, so a process
 * that has it open keeps reading it; the only race is with a process
 * renaming a new file into place between the check and the unlink, which
 * can remove that new file (a lost cache entry, rebuilt when next needed),
 * never anything else.
 *
 * Errors: those of dfx_store.h, and -ENOENT no index file; -EBADMSG also
 * a file that is not a regular file of the user's (or a symlink); -EAGAIN
 * (save) the index is not complete; -EPERM the directory is not the user's
 * or is writable by group or others; other negative errnos from the file
 * system. All functions are thread-safe, except that one writer is used by
 * one thread at a time.
 */
#ifndef NPYFS_FS_INDEXDIR_H
#define NPYFS_FS_INDEXDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "dfx.h"
#include "dfx_store.h"

struct dfx_sink; /* format/dfx_internal.h */

/* An opened, checked index directory. */
struct indexdir;

/* The default index directory: $XDG_CACHE_HOME/npyfs if that is an absolute
 * path, else $HOME/.cache/npyfs if HOME is set, else (boot-time mounts run
 * without HOME) <home>/.cache/npyfs with the effective user's home from the
 * password database (getpwuid_r()) if that is an absolute path other than
 * "/" naming a directory, else /var/cache/npyfs for root. *out is owned
 * (free()). 0, -ENOENT (none of these: a user other than root without a
 * usable home) or -ENOMEM. Creates nothing. */
int indexdir_default_dir(char **out);

/* indexdir_default_dir()'s choice from the given values (NULL: unset):
 * the environment's, the password database's home, and the effective user
 * id. Touches nothing but pw_home's stat. Same returns. */
int indexdir_default_dir_from(const char *xdg, const char *home, const char *pw_home,
                              uid_t euid, char **out);

/* Create path (and missing parents) with mode 0700, open it once and check
 * through the descriptor that it is a directory owned by the user, not
 * writable by group or others, and writable by us. A symlink as the last
 * component is followed only if the link itself belongs to the user (or
 * root): the user's own choice, never one planted by someone else. 0 and
 * *out (free with indexdir_close()), or -EPERM, -ENOTDIR, -EACCES,
 * -ENOMEM, or another errno. */
int indexdir_open(const char *path, struct indexdir **out);

/* Accepts NULL. No load or save may be running on it. */
void indexdir_close(struct indexdir *d);

/* The size cap of d's index files (0, the default: none). Once set, every
 * save checks it: if the files in the directory (of any process) may take
 * more than max bytes, it prunes (INDEXDIR_PRUNE_SIZE) the least recently
 * used ones (oldest mtime: last saved or loaded) until they take at most
 * 90% of max, so that the next saves need not prune again. To keep saves
 * cheap, the directory is listed only when the bytes counted at the last
 * listing plus those saved since go past max, or a minute after the last
 * listing. Thread-safe. */
void indexdir_set_max(struct indexdir *d, uint64_t max);

/* The files and bytes that saves pruned to keep to the size cap since the
 * last call (0 and 0 if none), for a log line. Thread-safe. */
void indexdir_take_pruned(struct indexdir *d, uint64_t *files, uint64_t *bytes);

/* The path the directory was opened as, for messages. */
const char *indexdir_path(const struct indexdir *d);

/* The index file's path for key inside d, for messages (owned, free()).
 * 0 or -ENOMEM. */
int indexdir_file_path(const struct indexdir *d, const struct dfx_store_key *key, char **out);

/* Write all len bytes of buf at off in fd (pwrite again after a short
 * write or EINTR). 0, a negative errno, or -EIO if pwrite wrote nothing.
 * For the index codec's write callbacks here and in indexer.c. */
int indexdir_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);

/*
 * An index file being written: indexdir_begin() creates the temporary file
 * for key in d (d and key, with its strings, must outlive the writer) and
 * starts a dfx_store writer on it; indexdir_sink() gives the struct
 * dfx_sink that appends windows to it (dfx_store_sink()), for
 * dfx_index_set_sink() on the index whose points it will hold;
 * indexdir_finish() writes the rest (dfx_store_writer_end(): same rules
 * for ix and crcs), makes it durable and renames it into place, then keeps
 * to the size cap; indexdir_abort() removes it. Both free the writer.
 * Returns 0 or a negative errno; nothing is left behind on failure.
 */
struct indexdir_writer;
int indexdir_begin(struct indexdir *d, const struct dfx_store_key *key, uint64_t spacing,
                   struct indexdir_writer **out);
void indexdir_sink(struct indexdir_writer *w, struct dfx_sink *out);
int indexdir_finish(struct indexdir_writer *w, struct dfx_index *ix, const struct dfx_crcs *crcs);
void indexdir_abort(struct indexdir_writer *w);

/* Begin and finish in one (dfx_store_write(): the points of a complete
 * index, their windows copied out of it, and the table crcs if not NULL;
 * ix NULL: a stored member's file). Refuses an index with damage (its
 * errno) or that never reached its end (-EAGAIN) before creating a file.
 * Readers may run meanwhile. */
int indexdir_save(struct indexdir *d, const struct dfx_store_key *key, struct dfx_index *ix,
                  const struct dfx_crcs *crcs);

/* Load the saved file for key: dfx_store_load() (same arguments and
 * results), with the file kept open for ix's windows until the index
 * releases it. A success sets the file's mtime to now, and the file counts
 * as open in this process (never pruned) until the index releases it. */
int indexdir_load(struct indexdir *d, const struct dfx_store_key *key, struct dfx_index *ix,
                  uint32_t chunk, const struct dfx_crcs *have, struct dfx_crcs **crcs,
                  uint64_t *spacing);

/* Why indexdir_prune() removes a file. */
enum indexdir_prune_why {
    INDEXDIR_PRUNE_GONE,    /* the archive path it recorded no longer exists */
    INDEXDIR_PRUNE_CHANGED, /* the file at that path is not the archive it was built for
                             * (another device, inode, size or mtime): the key can no
                             * longer match it */
    INDEXDIR_PRUNE_UNUSED,  /* its archive cannot be checked (no path recorded, or the
                             * path cannot be looked at), and it was not saved or loaded
                             * for unused_secs */
    INDEXDIR_PRUNE_FORMAT,  /* written in an older format version: never loaded again */
    INDEXDIR_PRUNE_DAMAGED, /* our magic, but a header that does not hold together */
    INDEXDIR_PRUNE_TEMP,    /* a temporary file over a day old: its writer died */
    INDEXDIR_PRUNE_SIZE,    /* among the least recently used, over the size cap */
};

/* A file indexdir_prune() removed, for its report (everything borrowed,
 * valid during the call). */
struct indexdir_prune_file {
    const char *name;    /* its name in the directory */
    enum indexdir_prune_why why;
    uint64_t bytes;      /* its size */
    int64_t idle_secs;   /* seconds since its mtime (last save or load) */
    uint32_t version;    /* its format version (0 for a temporary file) */
    const char *path;    /* the archive path it recorded (NUL-terminated), or NULL */
    const char *member;  /* the member's name (member_len bytes), or NULL */
    size_t member_len;
};

struct indexdir_prune_opts {
    /* check each file's archive (GONE, CHANGED, UNUSED), and remove older
     * formats and damaged files; false: only temporary files and the cap */
    bool sources;
    int64_t unused_secs; /* with sources: the age for UNUSED */
    uint64_t max;        /* then the size cap: 0, none */
};

struct indexdir_prune_result {
    uint64_t removed, removed_bytes; /* files removed, and their bytes */
    uint64_t kept, kept_bytes;       /* our files left */
    uint64_t failed;                 /* files that could not be removed */
    int err;                         /* the first removal's error, or 0 */
};

/* Prune d's files (see the top of the file for which ones are ours and
 * which are never removed): first, with o->sources, the files whose archive
 * is gone or changed, or unused too long when it cannot be checked, and
 * those of older formats or damaged; always temporary files over a day
 * old; then, with o->max, the least recently used until the rest take at
 * most o->max bytes. report (may be NULL) is called for each file removed.
 * *res gets the counts. Returns 0, or a negative errno: the directory
 * cannot be listed (nothing removed), -ENOMEM. Thread-safe (one prune of a
 * directory runs at a time). */
int indexdir_prune(struct indexdir *d, const struct indexdir_prune_opts *o,
                   void (*report)(const struct indexdir_prune_file *f, void *arg), void *arg,
                   struct indexdir_prune_result *res);

#endif
