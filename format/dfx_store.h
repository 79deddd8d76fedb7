/*
 * Persisted deflate indexes: one file per archive member in an index
 * directory, so a remount starts with every access point of a member it (or
 * `npyfs index`) has fully indexed before, without decompressing anything.
 *
 * A file is keyed by the archive's identity (device, inode, size, mtime with
 * nanoseconds) plus the member's name, CRC-32 and stored size (for a gzip
 * file: the CRC-32 and ISIZE of its last member's trailer). Its name is a
 * hash of that key, but the whole key is stored inside and compared on
 * load: the name alone is never trusted. The spacing the file was built
 * with is not part of the key: its points are valid whatever the spacing
 * (the spacing only decides where a builder puts new ones), so a file built
 * with another spacing is loaded as it is (dfx_store_load() says which).
 * The file also records the archive's path when it was written, which is
 * not part of the key either (the same archive reached by another path
 * still finds its file): dfx_store_prune() uses it to tell a file whose
 * archive is gone. The layout (little-endian, version DFX_STORE_VERSION):
 *
 *   header   144 bytes: magic "NPYFSIDX", version (u32), header length
 *            (u32), file length, spacing, total output size, point count,
 *            window, point table and chunk table offsets (u64 each), then
 *            the key: device, inode, archive size, mtime seconds (u64
 *            each), mtime nanoseconds, CRC-32 (u32 each), stored size
 *            (u64), ISIZE (u32), 4 zeros, name length (u64); then the path
 *            length (u64, 0: none recorded)
 *   name     name_len bytes, zero-padded to a multiple of 8
 *   path     path_len bytes (the archive's absolute path, no NUL),
 *            zero-padded to a multiple of 8
 *   windows  each point's history, zlib-compressed, back to back (in the
 *            order they were written, which need not be point order)
 *   points   48 bytes each: out, in, member_out, window offset (u64 each),
 *            compressed length, raw length (u32 each), bits (u8), 3 zeros,
 *            CRC-32 of the raw window (u32; 0 for a point without one)
 *   table    the member's chunk CRC table (struct dfx_crcs): chunk size
 *            (u32, 0: no table), 4 zeros, count (u64), count CRC-32s (u32)
 *   crc      CRC-32 of every byte before it
 *
 * The windows come before the point table so that a file can be written in
 * one pass while the points are recorded (struct dfx_store_writer): each
 * window is compressed and appended as its point is recorded, and the point
 * table, chunk table, header and checksum are written at the end.
 *
 * A stored member's file has no points (spacing 0) and always a table. A
 * gzip member's file always has a table too: the key holds only the last
 * member's trailer, which cannot tell a rewrite of an earlier member, so a
 * gzip file's points are only used together with the checksums that catch
 * one. (A zip member's key holds its CRC-32 from the central directory.)
 *
 * Loading reads the file with pread (never a mapping, so another program
 * truncating it cannot fault the caller) in bounded pieces, once: it checks
 * magic, version, lengths, key, the checksum of the whole file and every
 * point, and keeps in memory only the point positions and the chunk table.
 * The file stays open (one descriptor per loaded index, closed when the
 * index is freed) and a window is read and inflated only when a reader
 * starts at its point; one that no longer reads back (the file was
 * truncated or overwritten since) is dropped, and the reader starts from an
 * earlier point: the file is a cache, never trusted over the stream (a
 * window must inflate, zlib checking its Adler-32, and match the CRC-32 its
 * point recorded, so even a valid window of another point is refused). A file
 * that fails any check is reported, never used: the caller rebuilds it. A
 * load that succeeds sets the file's mtime to now: the mtime is when the
 * file was last saved or loaded, the order in which pruning removes files
 * (atime is not reliable: relatime, noatime).
 *
 * The directory is opened once (struct dfx_store_dir) and checked through
 * that descriptor: a directory owned by the user, not writable by group or
 * others, and writable by the user. Every later access (load, save, the
 * temporary file, renaming, the directory fsync, pruning) is relative to
 * the descriptor, so swapping the directory for a symlink afterwards
 * changes nothing. Files are written atomically: a temporary file created
 * O_EXCL|O_NOFOLLOW with mode 0600 in the directory, fsync, rename over the
 * final name, fsync of the directory.
 *
 * Pruning (dfx_store_prune(), and after every save when the directory has a
 * size cap) touches only files that look like ours: a regular file of the
 * user's (never through a symlink) whose name is an index file's ("<24 hex
 * digits>.dfx") and which starts with the magic, or a temporary file's
 * name ("<index name>.<pid>.<n>.tmp") over a day old. It never removes a
 * file that this process has loaded (and still holds open), or the file a
 * save has just written. Other processes may share the directory: a file
 * is removed with unlinkat, so a process that has it open keeps reading it;
 * the only race is with a process renaming a new file into place between
 * the check and the unlink, which can remove that new file (a lost cache
 * entry, rebuilt when next needed), never anything else.
 *
 * Errors: -ENOENT no index file; -ESTALE the file is for another archive,
 * member, version of the archive, or chunk size, of another format version,
 * for a member of the other kind (stored, deflate), or a gzip member's file
 * without a table; -EBADMSG it is damaged (truncated, bad checksum, bad
 * structure, not a regular file of the user's); -EBUSY the index knows
 * another output size; -EAGAIN (save) the index is not complete; -EINVAL
 * (save) a table that does not fit the output, or none for a gzip member;
 * -EPERM the directory is not the user's or is writable by group or others;
 * other negative errnos from the file system. All functions are
 * thread-safe, except that one writer is used by one thread at a time.
 */
#ifndef NPYFS_FORMAT_DFX_STORE_H
#define NPYFS_FORMAT_DFX_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "dfx.h"

struct dfx_sink; /* dfx_internal.h */

/* 2: the chunk CRC table. 3: the gzip trailer in the key, windows before
 * the point table. 4: the archive's path; the spacing is no longer part of
 * the key. Files of another version are stale (rebuilt; pruned by
 * dfx_store_prune() if older). */
#define DFX_STORE_VERSION 4

/*
 * A member's chunk CRC table: crc[i] is the CRC-32 of uncompressed bytes
 * [i * chunk, min((i + 1) * chunk, size)), so every chunk a reader decodes
 * or reads can be checked against the bytes the first full pass saw. Built
 * by that pass (which also checked the member's own CRC-32), saved with the
 * index, and never changed once built. One allocation: free() it.
 */
struct dfx_crcs {
    uint64_t size;   /* uncompressed bytes covered */
    uint64_t count;  /* (size + chunk - 1) / chunk */
    uint32_t chunk;  /* bytes per chunk, > 0 */
    uint32_t crc[];  /* count of them */
};

/* A zeroed table for size bytes in chunks of chunk bytes, ready for
 * dfx_crcs_feed(). 0, -EINVAL (chunk 0, or too many chunks) or -ENOMEM. */
int dfx_crcs_new(uint64_t size, uint32_t chunk, struct dfx_crcs **out);

/* Add len output bytes at offset off to the table. Bytes must be fed in
 * order, each exactly once, from offset 0 (any piece sizes). */
void dfx_crcs_feed(struct dfx_crcs *t, uint64_t off, const void *buf, size_t len);

/* CRC-32 of buf (ISA-L's routine when built in: same result as zlib's). */
uint32_t dfx_crcs_of(const void *buf, size_t len);

/* CRC-32 of the whole output, combined from the chunks' CRCs. */
uint32_t dfx_crcs_whole(const struct dfx_crcs *t);

/* What an index file belongs to. */
struct dfx_store_key {
    uint64_t dev, ino, size; /* the archive file */
    int64_t mtime_sec;
    uint32_t mtime_nsec;
    const char *name; /* borrowed: member name (need not be NUL-terminated) */
    size_t name_len;
    /* zip: the member's CRC-32 from the central directory, isize 0; gzip:
     * the CRC-32 and ISIZE of the last member's trailer (the file's last 8
     * bytes), read when the archive was opened */
    uint32_t crc;
    uint32_t isize;
    uint64_t stored_size;  /* compressed bytes of the member */
    /* Not part of the key: the archive's absolute path, recorded in the
     * file when it is saved (borrowed, NUL-terminated; NULL or longer than
     * DFX_STORE_PATH_MAX: none recorded) for dfx_store_prune(). */
    const char *path;
};

/* The longest archive path a file records. */
#define DFX_STORE_PATH_MAX 4096

/* An opened, checked index directory. */
struct dfx_store_dir;

/* The default index directory: $XDG_CACHE_HOME/npyfs if that is an absolute
 * path, else $HOME/.cache/npyfs if HOME is set, else (boot-time mounts run
 * without HOME) <home>/.cache/npyfs with the effective user's home from the
 * password database (getpwuid_r()) if that is an absolute path other than
 * "/" naming a directory, else /var/cache/npyfs for root. *out is owned
 * (free()). 0, -ENOENT (none of these: a user other than root without a
 * usable home) or -ENOMEM. Creates nothing. */
int dfx_store_default_dir(char **out);

/* dfx_store_default_dir()'s choice from the given values (NULL: unset):
 * the environment's, the password database's home, and the effective user
 * id. Touches nothing but pw_home's stat. Same returns. */
int dfx_store_default_dir_from(const char *xdg, const char *home, const char *pw_home,
                               uid_t euid, char **out);

/* Create path (and missing parents) with mode 0700, open it once and check
 * through the descriptor that it is a directory owned by the user, not
 * writable by group or others, and writable by us. A symlink as the last
 * component is followed only if the link itself belongs to the user (or
 * root): the user's own choice, never one planted by someone else. 0 and
 * *out (free with dfx_store_dir_close()), or -EPERM, -ENOTDIR, -EACCES,
 * -ENOMEM, or another errno. */
int dfx_store_dir_open(const char *path, struct dfx_store_dir **out);

/* Accepts NULL. No load or save may be running on it. */
void dfx_store_dir_close(struct dfx_store_dir *d);

/* The size cap of d's index files (0, the default: none). Once set, every
 * save checks it: if the files in the directory (of any process) may take
 * more than max bytes, it prunes (DFX_PRUNE_SIZE) the least recently used
 * ones (oldest mtime: last saved or loaded) until they take at most 90% of
 * max, so that the next saves need not prune again. To keep saves cheap,
 * the directory is listed only when the bytes counted at the last listing
 * plus those saved since go past max, or a minute after the last listing.
 * Thread-safe. */
void dfx_store_dir_set_max(struct dfx_store_dir *d, uint64_t max);

/* The files and bytes that saves pruned to keep to the size cap since the
 * last call (0 and 0 if none), for a log line. Thread-safe. */
void dfx_store_dir_take_pruned(struct dfx_store_dir *d, uint64_t *files, uint64_t *bytes);

/* The path the directory was opened as, for messages. */
const char *dfx_store_dir_path(const struct dfx_store_dir *d);

/* The index file's path for key inside d, for messages (owned, free()).
 * 0 or -ENOMEM. */
int dfx_store_path(const struct dfx_store_dir *d, const struct dfx_store_key *key, char **out);

/*
 * An index file being written (see the top of the file). dfx_store_begin()
 * creates the temporary file for key in d (d and key->name must outlive the
 * writer); dfx_store_sink() gives the struct dfx_sink that appends windows
 * to it, for dfx_index_set_sink() on the index whose points it will hold;
 * dfx_store_finish() writes the rest for the points of ix (complete; each
 * point's window was sunk into this writer, or ix gives it through
 * dfx_index_window(), else the point is left out) and the table crcs, and
 * renames the file into place; dfx_store_abort() removes it. Both free the
 * writer. ix NULL: a stored member's file (crcs required, its size the
 * member's). A gzip member's file requires crcs (-EINVAL). Returns 0 or a
 * negative errno; nothing is left behind on failure.
 */
struct dfx_store_writer;
int dfx_store_begin(struct dfx_store_dir *d, const struct dfx_store_key *key, uint64_t spacing,
                    struct dfx_store_writer **out);
void dfx_store_sink(struct dfx_store_writer *w, struct dfx_sink *out);
int dfx_store_finish(struct dfx_store_writer *w, struct dfx_index *ix,
                     const struct dfx_crcs *crcs);
void dfx_store_abort(struct dfx_store_writer *w);

/* Begin and finish in one: save for key the points of a complete index
 * (their windows copied out of it, compressed) and, if crcs is not NULL,
 * the chunk CRC table of the same output (-EINVAL if its size differs).
 * ix NULL: a stored member's file, the table only. Readers may run
 * meanwhile. */
int dfx_store_save(struct dfx_store_dir *d, const struct dfx_store_key *key,
                   struct dfx_index *ix, const struct dfx_crcs *crcs);

/* Load the saved file for key. ix not NULL: its points replace those of ix
 * (dfx_index_import(): safe while readers run), whatever spacing either was
 * built with; the index keeps the file open and reads windows from it on
 * demand. ix NULL: a stored member's file (no points; its size must be
 * key->stored_size). have not NULL: the member's table as the caller built
 * it from the content it reads; a file whose table differs (or that has
 * none) was built from other content: -ESTALE. crcs not NULL: *crcs gets
 * the file's table (owned, free()), or NULL if it has none (ix NULL or a
 * gzip stream: a file without one is refused); a table of another chunk
 * size than chunk is -ESTALE. spacing not NULL: *spacing gets the spacing
 * the file was built with (0 for a stored member's), on success. Nothing is
 * taken over on failure. A success sets the file's mtime to now (see the
 * top of the file), and the file counts as open in this process (never
 * pruned) until the index releases it. */
int dfx_store_load(struct dfx_store_dir *d, const struct dfx_store_key *key,
                   struct dfx_index *ix, uint32_t chunk, const struct dfx_crcs *have,
                   struct dfx_crcs **crcs, uint64_t *spacing);

/* Why dfx_store_prune() removes a file. */
enum dfx_prune_why {
    DFX_PRUNE_GONE,    /* the archive path it recorded no longer exists */
    DFX_PRUNE_CHANGED, /* the file at that path is not the archive it was built for
                        * (another device, inode, size or mtime): the key can no
                        * longer match it */
    DFX_PRUNE_UNUSED,  /* its archive cannot be checked (no path recorded, or the
                        * path cannot be looked at), and it was not saved or loaded
                        * for unused_secs */
    DFX_PRUNE_FORMAT,  /* written in an older format version: never loaded again */
    DFX_PRUNE_DAMAGED, /* our magic, but a header that does not hold together */
    DFX_PRUNE_TEMP,    /* a temporary file over a day old: its writer died */
    DFX_PRUNE_SIZE,    /* among the least recently used, over the size cap */
};

/* A file dfx_store_prune() removed, for its report (everything borrowed,
 * valid during the call). */
struct dfx_prune_file {
    const char *name;    /* its name in the directory */
    enum dfx_prune_why why;
    uint64_t bytes;      /* its size */
    int64_t idle_secs;   /* seconds since its mtime (last save or load) */
    uint32_t version;    /* its format version (0 for a temporary file) */
    const char *path;    /* the archive path it recorded (NUL-terminated), or NULL */
    const char *member;  /* the member's name (member_len bytes), or NULL */
    size_t member_len;
};

struct dfx_prune_opts {
    /* check each file's archive (GONE, CHANGED, UNUSED), and remove older
     * formats and damaged files; false: only temporary files and the cap */
    bool sources;
    int64_t unused_secs; /* with sources: the age for UNUSED */
    uint64_t max;        /* then the size cap: 0, none */
};

struct dfx_prune_result {
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
int dfx_store_prune(struct dfx_store_dir *d, const struct dfx_prune_opts *o,
                    void (*report)(const struct dfx_prune_file *f, void *arg), void *arg,
                    struct dfx_prune_result *res);

/* dfx_store_load() from an index file already open as fd (taken: closed,
 * or kept by the index), instead of the one in a directory: a published
 * index received over the network (a memfd). The same checks, the key
 * included. */
int dfx_store_load_fd(int fd, const struct dfx_store_key *key, struct dfx_index *ix,
                      uint32_t chunk, const struct dfx_crcs *have, struct dfx_crcs **crcs);

/* The first index file in buf[0..len) (a published index holds the files
 * of an archive's members back to back): its length (from its header,
 * within len) and its member's name (borrowed from buf, name_len bytes).
 * Nothing else is checked (dfx_store_load_fd() does). Returns 0 or
 * -EBADMSG (not an index file, or cut short). */
int dfx_store_peek(const void *buf, size_t len, uint64_t *file_len, const char **name,
                   size_t *name_len);

#endif
