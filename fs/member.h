/*
 * Where a READ of a member is served: a deflate member chunk by chunk (the
 * chunk cache, parked decoders, decodes in progress, readahead's produce and
 * continue), a stored member's checked reads and full scan.
 *
 * Ownership: member_chunk() hands out a chunk reference (put it with
 * cache_put()); member_read_stored()'s *out is the caller's (free()).
 * The archive, member and cache are borrowed.
 * Locks: takes m->lock (never while inflating or reading the archive), and
 * under it the cache's shard locks and the parked registry's lock; readers
 * waiting for a chunk wait on their own condition (struct member_waiter).
 * Errors: -EIO (damage found, a CRC mismatch, the archive changed), -ENOMEM,
 * -EINVAL (a caller's mistake: past the end, not an access point),
 * -EREMOTEIO / -ETIMEDOUT (a remote source failed: not damage, the next read
 * tries again), -ECANCELED (a scan stopped).
 * Threads: readahead workers call member_produce() and
 * member_continue().
 */
#ifndef NPYFS_FS_MEMBER_H
#define NPYFS_FS_MEMBER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "archive.h"

struct cache;
struct cache_chunk;

/* ARCHIVE_STORED: check the member's CRC-32 against the zip directory once (the
 * first read that reaches its last byte calls this). Returns 0, or -EIO on a
 * mismatch, which every later read of the member gets too. */
int member_verify_stored(struct archive *a, struct archive_member *m);

/* ARCHIVE_STORED (zip): the full pass over a stored member: pread every byte,
 * build its chunk CRC table and check the member's CRC-32 with it. A match
 * publishes the table (and marks the member verified); a mismatch is logged
 * and condemns the member (-EIO for every read). Returns 0, -EIO, -ECANCELED
 * (stop raised, checked between reads; stop may be NULL), -ENOMEM. */
int member_scan_stored(struct archive *a, struct archive_member *m, atomic_bool *stop);

/* ARCHIVE_STORED: read len bytes at off (clamped to the member's end) into a
 * new buffer *out (the caller frees it), where they start at *out + *at.
 * With a chunk CRC table, the whole chunks covering them are read and each
 * is checked against it: a mismatch is logged once and the read fails (only
 * reads that touch that chunk do). The archive is checked
 * (archive_check()) after the read, so the bytes are never a mix of old
 * and new content; the caller has checked archive_damage(). Returns the
 * count (0 past the end, *out NULL), or -EIO (a mismatch, a changed
 * archive), -ENOMEM. Thread-safe. */
int64_t member_read_stored(struct archive *a, struct archive_member *m, uint64_t off, size_t len,
                              unsigned char **out, size_t *at);

/* Read the first bytes (up to len) of a member's uncompressed data: used by
 * `ls` to parse .npy headers. Returns the count or a negative errno. */
int64_t member_peek(struct archive *a, struct archive_member *m, void *buf, size_t len);

/* npy_read_header()'s read function (format/npy.h) over the first bytes of
 * a member (member_peek()): arg is a struct member_ref. Used by ls
 * and xattrs to parse a member's .npy header. */
struct member_ref {
    struct archive *a;
    struct archive_member *m;
};
int64_t member_prefix_read(void *arg, unsigned char *buf, size_t len);

/* Get chunk idx of a ARCHIVE_DEFLATE member with a reference for the caller (put
 * it with cache_put()). Decodes it if the cache misses, reusing a parked
 * decoder when one is close before it. Thread-safe. Returns 0 or -EIO
 * (damaged), -ENOMEM. */
int member_chunk(struct archive *a, struct archive_member *m, struct cache *c, uint64_t idx,
                    struct cache_chunk **out);

/* If a decode in progress will produce chunk idx, wait until it has (or
 * has stopped); else return at once. For a read of several chunks: waiting
 * for its last chunk first wakes the reader once, not once per chunk, and
 * the member_chunk() calls that follow find the others in the cache. Never
 * decodes. Thread-safe. */
void member_wait_decoded(struct archive_member *m, struct cache *c, uint64_t idx);

/* member_chunk() when chunk idx is in the cache: 0 and *out (a reference),
 * or a negative errno as member_chunk() would give it without decoding;
 * 1 when it is not cached (*out NULL; nothing counted: the member_chunk()
 * call that follows counts the miss). Never waits for a decode. */
int member_chunk_cached(struct archive *a, struct archive_member *m, struct cache *c,
                        uint64_t idx, struct cache_chunk **out);

/* A remote member (else nothing): start fetching the compressed bytes that
 * decoding output [from, to) will need (bsrc_advise(), from the access
 * points around it). Never blocks on I/O; thread-safe. */
void member_advise(struct archive_member *m, uint64_t from, uint64_t to);

/* Bookkeeping for open handles: the last close frees parked decoders. */
void member_opened(struct archive_member *m);
void member_closed(struct archive_member *m);

/* Readahead: decode chunks first..last of a ARCHIVE_DEFLATE member into the cache
 * with a fresh decoder started at the access point at output offset point
 * (chunk first-1 or earlier must not be needed: the caller produces whole
 * segments). Chunks already cached at either end are skipped; if a reader is
 * decoding inside the range, nothing is done. Readers that need a chunk of
 * the range meanwhile wait for it. Errors are not logged: a reader that needs
 * the chunk decodes it itself and reports. Thread-safe. Returns 0, or a
 * negative errno (nothing after the failing chunk was inserted). */
int member_produce(struct archive *a, struct archive_member *m, struct cache *c,
                      uint64_t point, uint64_t first, uint64_t last);

/* Readahead past the index frontier, where there are no segments: take the
 * parked decoder furthest along at or after chunk first's start and before
 * chunk last's end (left there by a sequential reader or by an earlier call),
 * continue it through chunk last, inserting every whole chunk, and park it
 * again. After each chunk, more (if not NULL; called with no lock held) may
 * raise *last to keep going, given the next chunk; it returns false to stop
 * there. Readers that need one of those chunks, or one just after them, wait
 * for it. Does nothing if no such decoder is parked or another decode touches
 * the range, and never extends into another decode. Errors are not logged;
 * the decoder is dropped and nothing after the failing chunk is inserted.
 * Thread-safe. Returns 0 or a negative errno. */
int member_continue(struct archive *a, struct archive_member *m, struct cache *c, uint64_t first,
                       uint64_t last, bool (*more)(void *arg, uint64_t next, uint64_t *last),
                       void *arg);

#endif
