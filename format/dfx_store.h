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
 *            numbers, name length, point table and window offsets
 *   name     name_len bytes, zero-padded to a multiple of 8
 *   points   48 bytes each: out, in, member_out, window offset (u64 each),
 *            compressed length, raw length (u32 each), bits (u8), 7 zeros
 *   windows  each point's 32 KiB history, zlib-compressed, back to back
 *   crc      CRC-32 of every byte before it
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
 * member, version of the archive or spacing; -EBADMSG it is damaged
 * (truncated, bad checksum, bad structure); -EBUSY the index already has
 * points of its own; -EAGAIN (save) the index is not complete; -EPERM the
 * directory is not the user's or is writable by others; other negative
 * errnos from the file system. All functions are thread-safe.
 */
#ifndef NPYFS_FORMAT_DFX_STORE_H
#define NPYFS_FORMAT_DFX_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "dfx.h"

#define DFX_STORE_VERSION 1

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

/* Save the points of a complete index (see dfx_index_export()) for key.
 * Raw windows are compressed on the way. Returns 0 or a negative errno;
 * nothing is left behind on failure. Readers may run meanwhile. */
int dfx_store_save(const char *dir, const struct dfx_store_key *key, struct dfx_index *ix);

/* Load the saved points for key into ix, which must hold only point 0 and
 * have the spacing the file was built with. On success the index borrows
 * the file's mapping (freed with the index). Readers may run meanwhile. */
int dfx_store_load(const char *dir, const struct dfx_store_key *key, struct dfx_index *ix);

#endif
