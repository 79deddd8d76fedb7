/*
 * Persisted deflate indexes: one file per archive member in an index
 * directory, so a remount starts with every access point of a member it (or
 * `npyfs index`) has fully indexed before, without decompressing anything.
 *
 * A file is keyed by the archive's identity (device, inode, size, mtime with
 * nanoseconds) plus the member's name, CRC-32 and stored size, and by the
 * spacing it was built with. Its name is a hash of that key, but the whole
 * key is stored inside and compared on load: the name alone is never
 * trusted. The layout (little-endian, version DFX_STORE_VERSION):
 *
 *   header   128 bytes: magic "NPYFSIDX", version, header length, file
 *            length, spacing, total output size, point count, the key's
 *            numbers, name length, point table, window and
 *            chunk table offsets
 *   name     name_len bytes, zero-padded to a multiple of 8
 *   points   48 bytes each: out, in, member_out, window offset (u64 each),
 *            compressed length, raw length (u32 each), bits (u8), 7 zeros
 *   windows  each point's 32 KiB history, zlib-compressed, back to back
 *   table    the member's chunk CRC table (struct dfx_crcs): chunk size
 *            (u32, 0: no table), 4 zeros, count (u64), count CRC-32s (u32)
 *   crc      CRC-32 of every byte before it
 *
 * A stored member's file has no points (spacing 0) and always a table.
 *
 * Loading maps the file read-only (small files are read into memory) and
 * validates all of it (magic, version, lengths against the file size,
 * offsets, key, checksum, point order); the windows stay compressed in the
 * mapping and are inflated only when a reader starts at their point. A file
 * that fails any check is reported, never used: the caller rebuilds it.
 *
 * Files are written atomically: a temporary file created O_EXCL|O_NOFOLLOW
 * with mode 0600 in the same directory, fsync, rename over the final name,
 * fsync of the directory. The directory must be owned by the user and not
 * writable by others.
 *
 * Errors: -ENOENT no index file; -ESTALE the file is for another archive,
 * member, version of the archive, spacing or chunk size, or of another
 * format version; -EBADMSG it is damaged (truncated, bad checksum, bad
 * structure); -EBUSY the index already has points of its own; -EAGAIN
 * (save) the index is not complete; -EINVAL (save) a table that does not
 * fit the output; -EPERM the directory is not the user's or is writable
 * by others; other negative errnos from the file system. All functions are
 * thread-safe.
 */
#ifndef NPYFS_FORMAT_DFX_STORE_H
#define NPYFS_FORMAT_DFX_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "dfx.h"

/* 2: the chunk CRC table. Files of another version are stale (rebuilt). */
#define DFX_STORE_VERSION 2

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
    uint32_t crc;          /* member CRC-32 from the zip directory (gzip: 0) */
    uint64_t stored_size;  /* compressed bytes of the member */
};

/* The default index directory: $XDG_CACHE_HOME/npyfs if that is an absolute
 * path, else $HOME/.cache/npyfs. *out is owned (free()). 0, -ENOENT (neither
 * variable set) or -ENOMEM. Does not touch the file system. */
int dfx_store_default_dir(char **out);

/* Create dir (and missing parents) with mode 0700, then check it is a
 * directory owned by the user, not writable by others, and writable by us.
 * 0, -EPERM, -ENOTDIR, -EACCES, or another errno. */
int dfx_store_prepare_dir(const char *dir);

/* The index file path for key inside dir (owned, free()). 0 or -ENOMEM. */
int dfx_store_path(const char *dir, const struct dfx_store_key *key, char **out);

/* Save for key the points of a complete index (see dfx_index_export()) and,
 * if crcs is not NULL, the chunk CRC table of the same output (-EINVAL if
 * its size differs). ix NULL: a stored member's file, the table only (crcs
 * required, its size the member's). Raw windows are compressed on the way.
 * Returns 0 or a negative errno; nothing is left behind on failure. Readers
 * may run meanwhile. */
int dfx_store_save(const char *dir, const struct dfx_store_key *key, struct dfx_index *ix,
                   const struct dfx_crcs *crcs);

/* Load the saved file for key. ix not NULL: its points go into ix, which
 * must hold only point 0 and have the spacing the file was built with; on
 * success the index borrows the file's mapping (freed with the index). ix
 * NULL: a stored member's file (no points; its size must be
 * key->stored_size). crcs not NULL: *crcs gets the file's table (owned,
 * free()), or NULL if it has none (ix NULL: a file without one is -EBADMSG);
 * a table of another chunk size than chunk is -ESTALE. Nothing is taken
 * over on failure. Readers may run meanwhile. */
int dfx_store_load(const char *dir, const struct dfx_store_key *key, struct dfx_index *ix,
                   uint32_t chunk, struct dfx_crcs **crcs);

#endif
