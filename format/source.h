/*
 * Byte sources: a pread-style view of one archive.
 *
 * Format code never touches file descriptors directly; it asks a source for
 * bytes at an offset. Today there is a file source (pread on an fd) and a
 * memory source (for tests); a remote range reader can be added later
 * without touching zip/gz/dfx.
 *
 * All functions are safe to call concurrently on one source: a source has no
 * file position.
 */
#ifndef NPYFS_FORMAT_SOURCE_H
#define NPYFS_FORMAT_SOURCE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct src;

struct src_ops {
    /* Read up to len bytes at off. Returns the count (short only at end of
     * source), or a negative errno. */
    int64_t (*pread)(struct src *s, void *buf, size_t len, uint64_t off);
    void (*free)(struct src *s);
};

struct src {
    const struct src_ops *ops;
    uint64_t size; /* immutable after open: bytes in the source */
    /* immutable after open: the most a reader that consumes bytes as it
     * goes (a decoder's input buffer) should read at a time, or 0 for no
     * limit. A source where reading bytes not needed yet costs fetching
     * them (a remote object) sets its fetch block. */
    uint32_t read_size;
};

/* Open path read-only. Only a regular file is opened: the name is resolved
 * with O_PATH and checked before anything is opened for reading, so a FIFO,
 * socket or device node never blocks the caller nor sees an open. On
 * success *out owns the fd; release with src_free(). Returns 0 or a
 * negative errno: -EISDIR a directory, -ENODEV anything else that is not a
 * regular file, -EAGAIN it was swapped while being opened (only without
 * /proc), others from open(). */
int src_file_open(const char *path, struct src **out);

/* Open rel, a path relative to the directory dirfd, read-only, never
 * leaving that directory: every component, symlinks included, must resolve
 * beneath it (openat2 RESOLVE_BENEATH), else -EXDEV. Otherwise as
 * src_file_open(). */
int src_file_open_beneath(int dirfd, const char *rel, struct src **out);

/* The fd behind a file source, or -1 for other sources (borrowed). */
int src_file_fd(const struct src *s);

/* A source over len bytes at buf. buf is borrowed: it must outlive the
 * source. For tests and small in-memory archives. */
int src_mem_new(const void *buf, size_t len, struct src **out);

/* Accepts NULL. */
void src_free(struct src *s);

/* Read up to len bytes at off; see src_ops.pread. */
int64_t src_pread(struct src *s, void *buf, size_t len, uint64_t off);

/* Read exactly len bytes at off. Returns 0, -EIO if the source ends first
 * (a truncated archive), or another negative errno. */
int src_read_exact(struct src *s, void *buf, size_t len, uint64_t off);

/* Little-endian readers for on-disk fields. */
static inline uint16_t get_le16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline uint64_t get_le64(const unsigned char *p)
{
    return (uint64_t)get_le32(p) | ((uint64_t)get_le32(p + 4) << 32);
}

#endif
