/*
 * Byte sources: a pread-style view of one archive (or of any run of bytes
 * a format/ parser reads, such as an index file).
 *
 * Format code never touches file descriptors, paths or connections: it asks
 * a source for bytes at an offset, through the read callback in struct
 * src_ops. Where the bytes come from is the caller's policy, outside
 * format/: a local file (fs/src_file.h), a remote object (fs/remote.h), or
 * memory (src_mem_new() here, for tests and small in-memory data).
 *
 * All functions are safe to call concurrently on one source: a source has no
 * file position.
 */
#ifndef NPYFS_FORMAT_SOURCE_H
#define NPYFS_FORMAT_SOURCE_H

#include <stddef.h>
#include <stdint.h>

struct src;

struct src_ops {
    /* Read up to len bytes at off. Returns the count (short only at end of
     * source), or a negative errno. */
    int64_t (*pread)(struct src *s, void *buf, size_t len, uint64_t off);
    void (*free)(struct src *s);
    /* Optional (NULL: nothing to do). A hint that [off, off + len) is about
     * to be read: start fetching it without waiting for it (a local file:
     * the kernel reads it into the page cache meanwhile), so that it comes
     * in while the caller does other work, such as reading another file. */
    void (*prefetch)(struct src *s, uint64_t off, uint64_t len);
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

/* A source over len bytes at buf. buf is borrowed: it must outlive the
 * source. For tests and small in-memory archives. */
int src_mem_new(const void *buf, size_t len, struct src **out);

/* Accepts NULL. */
void src_free(struct src *s);

/* Read up to len bytes at off; see src_ops.pread. */
int64_t src_pread(struct src *s, void *buf, size_t len, uint64_t off);

/* Hint that [off, off + len) is about to be read (src_ops.prefetch); does
 * nothing for a source without the hint. Never fails, never waits for data. */
void src_prefetch(struct src *s, uint64_t off, uint64_t len);

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
