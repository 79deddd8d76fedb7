/*
 * Index files: the codec of the files that persist a member's deflate
 * index (its access points and their windows) and its chunk CRC table, so
 * that a remount starts with every access point of a member it (or `npyfs
 * index`) has fully indexed before, without decompressing anything.
 *
 * This module only turns an index into bytes and bytes back into an index:
 * it writes through a write callback (struct dfx_store_out) and reads
 * through a byte source (struct src, source.h). It knows no paths, file
 * descriptors or directories: where the files live, how they are created,
 * made durable, found and pruned is the index directory's policy
 * (fs/indexdir.h).
 *
 * The layout (version DFX_STORE_VERSION) is docs/FORMATS.md section 6, "npyfs
 * index files". In short: a 144-byte header (magic "NPYFSIDX",
 * version, lengths, offsets, and the key), the member's name and the
 * archive's path (each zero-padded to a multiple of 8), the windows
 * (zlib-compressed, window.h), the point table (48 bytes a point), the
 * chunk CRC table, and a CRC-32 of every byte before it.
 *
 * The key: a file belongs to an archive's identity (device, inode, size,
 * mtime with nanoseconds) plus the member's name, CRC-32 and stored size
 * (for a gzip file: the CRC-32 and ISIZE of its last member's trailer).
 * The file's name is a hash of the key (dfx_store_name()), but the whole
 * key is stored inside and compared on load: the name alone is never
 * trusted. The spacing the file was built with is not part of the key: its
 * points are valid whatever the spacing (the spacing only decides where a
 * builder puts new ones), so a file built with another spacing is loaded as
 * it is (dfx_store_load() says which). The file also records the archive's
 * path when it was written, not part of the key either (the same archive
 * reached by another path still finds its file): pruning uses it to tell a
 * file whose archive is gone (dfx_store_peek()).
 *
 * A stored member's file has no points (spacing 0) and always a table. A
 * gzip member's file always has a table too: the key holds only the last
 * member's trailer, which cannot tell a rewrite of an earlier member, so a
 * gzip file's points are only used together with the checksums that catch
 * one. (A zip member's key holds its CRC-32 from the central directory.)
 *
 * Writing: the windows come before the point table so that a file can be
 * written in one pass while the points are recorded (a writer's sink): each
 * window is compressed and appended as its point is recorded, and the point
 * table, chunk table, header and checksum are written at the end.
 *
 * Loading reads the file (never a mapping) in bounded pieces, once: it
 * checks magic, version, lengths, key, the checksum of the whole file and
 * every point, and keeps in memory only the point positions and the chunk
 * table. A loaded index keeps the source and reads a window from it only
 * when a reader starts at its point; one that no longer reads back (the
 * file was truncated or overwritten since) is dropped, and the reader
 * starts from an earlier point: the file is a cache, never trusted over
 * the stream (a window must inflate, zlib checking its Adler-32, and match
 * the CRC-32 its point recorded, so even a valid window of another point is
 * refused). A file that fails any check is reported, never used: the
 * caller rebuilds it.
 *
 * Errors: -ESTALE the file is for another archive, member, version of the
 * archive, or chunk size, of another format version, for a member of the
 * other kind (stored, deflate), or a gzip member's file without a table;
 * -EBADMSG it is damaged (truncated, bad checksum, bad structure); -EBUSY
 * the index knows another output size; -EAGAIN (write) the index is not
 * complete; -EINVAL (write) a table that does not fit the output, or none
 * for a gzip member; -ENOMEM; other negative errnos from the callbacks.
 * All functions are thread-safe, except that one writer is used by one
 * thread at a time.
 */
#ifndef NPYFS_FORMAT_DFX_STORE_H
#define NPYFS_FORMAT_DFX_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dfx.h"
#include "dfx_crcs.h"
#include "source.h"

struct dfx_sink; /* dfx_internal.h */

/* 2: the chunk CRC table. 3: the gzip trailer in the key, windows before
 * the point table. 4: the archive's path; the spacing is no longer part of
 * the key. Files of another version are stale (rebuilt; pruned if older). */
#define DFX_STORE_VERSION 4

/* ------------------------------------------------------------- the key --- */

/* What an index file belongs to. The key's serialization (its header
 * fields) and its hash (the file name) are in dfx_store.c, next to each
 * other, under "keys". */
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
     * file when it is written (borrowed, NUL-terminated; NULL or longer than
     * DFX_STORE_PATH_MAX: none recorded), for pruning. */
    const char *path;
};

/* The longest archive path a file records. */
#define DFX_STORE_PATH_MAX 4096

/* An index file's name: 24 lowercase hex digits and ".dfx". */
#define DFX_STORE_NAME_LEN 28
/* Room for a name and its NUL, with space to spare for a suffix. */
#define DFX_STORE_NAME_MAX 64

/* The name of the file for key (a hash of the whole key but the path),
 * NUL-terminated into name. */
void dfx_store_name(const struct dfx_store_key *key, char name[DFX_STORE_NAME_MAX]);

/* Does s start with an index file's name (DFX_STORE_NAME_LEN characters;
 * what follows is not looked at)? */
bool dfx_store_is_name(const char *s);

/* ------------------------------------------------------------- writing --- */

/* Where a writer's bytes go: write(ctx, buf, len, off) stores all len
 * bytes at offset off and returns 0 or a negative errno. The writer writes
 * at increasing offsets, except the header, written at offset 0 at the end;
 * it never writes one byte twice. Called from the thread using the writer
 * (or the index builder whose sink it is), never concurrently. */
struct dfx_store_out {
    int (*write)(void *ctx, const void *buf, size_t len, uint64_t off);
    void *ctx;
};

/*
 * A file being written. dfx_store_writer_new() starts one for key (key and
 * key->name, key->path must outlive the writer) and an index built with
 * spacing; nothing is written yet. dfx_store_sink() gives the struct
 * dfx_sink that appends windows to it, for dfx_index_set_sink() on the
 * index whose points it will hold. dfx_store_writer_end() writes the rest
 * for the points of ix (complete; each point's window was sunk into this
 * writer, or ix gives it through dfx_index_window(), else the point is left
 * out) and the table crcs: ix NULL is a stored member's file (crcs
 * required, its size key->stored_size); a gzip member's file requires crcs
 * (-EINVAL). After a failure the bytes written are no index file (the
 * caller removes them). dfx_store_writer_free() accepts NULL.
 */
struct dfx_store_writer;
int dfx_store_writer_new(const struct dfx_store_key *key, uint64_t spacing,
                         const struct dfx_store_out *out, struct dfx_store_writer **w);
void dfx_store_sink(struct dfx_store_writer *w, struct dfx_sink *out);
int dfx_store_writer_end(struct dfx_store_writer *w, struct dfx_index *ix,
                         const struct dfx_crcs *crcs);
void dfx_store_writer_free(struct dfx_store_writer *w);

/* All three in one: write for key the points of a complete index (their
 * windows copied out of it, compressed; the spacing ix was built with) and,
 * if crcs is not NULL, the chunk CRC table of the same output (-EINVAL if
 * its size differs). ix NULL: a stored member's file, the table only.
 * Readers of ix may run meanwhile. */
int dfx_store_write(const struct dfx_store_key *key, struct dfx_index *ix,
                    const struct dfx_crcs *crcs, const struct dfx_store_out *out);

/* ------------------------------------------------------------- reading --- */

/* Load the file in file (its size is file->size) for key. ix not NULL: its
 * points replace those of ix (dfx_index_import(): safe while readers run),
 * whatever spacing either was built with; on success ix reads windows from
 * file on demand from then on, so file must stay valid until ix calls
 * release(arg) (release may be NULL), once, when it no longer needs it (in
 * dfx_index_free()). ix NULL: a stored member's file (no points; its size
 * must be key->stored_size), and file is not kept. have not NULL: the
 * member's table as the caller built it from the content it reads; a file
 * whose table differs (or that has none) was built from other content:
 * -ESTALE. crcs not NULL: *crcs gets the file's table (owned, free()), or
 * NULL if it has none (ix NULL or a gzip stream: a file without one is
 * refused); a table of another chunk size than chunk is -ESTALE. spacing
 * not NULL: *spacing gets the spacing the file was built with (0 for a
 * stored member's), on success. On failure nothing is taken over: ix is
 * untouched and release is never called. Errors: see the top of the file;
 * a read error of file is passed on. */
int dfx_store_load(struct src *file, const struct dfx_store_key *key, struct dfx_index *ix,
                   uint32_t chunk, const struct dfx_crcs *have, struct dfx_crcs **crcs,
                   uint64_t *spacing, void (*release)(void *arg), void *arg);

/* Does file start with the magic of an index file (of any version)? */
bool dfx_store_has_magic(struct src *file);

/* What a file says about itself, for pruning (dfx_store_peek()). */
struct dfx_store_info {
    uint32_t version;   /* its format version */
    /* the rest only for version DFX_STORE_VERSION: */
    char *member;       /* owned: the member's name (member_len bytes, then a NUL) */
    size_t member_len;
    char *path;         /* owned: the archive path it recorded, or NULL (none, or
                         * one with a NUL inside) */
    uint64_t dev, ino, size; /* the archive the key names */
    int64_t mtime_sec;
    uint32_t mtime_nsec;
};

/* Read file's header, member name and recorded path into *info (zeroed
 * first; free its strings with dfx_store_info_clear()). Only those are
 * read, not checksummed: a file damaged further on is found by the load
 * that needs it (or dfx_store_verify()). Returns 0 (info->version set; the
 * rest too if it is DFX_STORE_VERSION), -ENOENT not an index file (no
 * magic), -EBADMSG too short to tell a version, or a header of this version
 * that does not hold together, or -ENOMEM. */
int dfx_store_peek(struct src *file, struct dfx_store_info *info);

/* Check a file of this version whole against its trailing CRC-32 (it reads
 * every byte: for a prune, not a load, which checks as it reads). Returns 0,
 * -EBADMSG (too short, or the checksum differs), a read error, -ENOMEM. */
int dfx_store_verify(struct src *file);

/* Free info's strings (accepts a zeroed info). */
void dfx_store_info_clear(struct dfx_store_info *info);

/* The length the index file at byte off of file has by its header, for
 * files stored back to back (a published index: npyfs index -o index_out=).
 * Nothing else is checked (dfx_store_load() does). Returns 0, -ENOENT no
 * index file there (too short, no magic), -EBADMSG a length that does not
 * fit in file. */
int dfx_store_file_len(struct src *file, uint64_t off, uint64_t *len);

#endif
