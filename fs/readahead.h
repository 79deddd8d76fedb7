/*
 * Parallel readahead (readahead.c): a fixed pool of worker threads that
 * decode the segments between access points ahead of sequential readers.
 * Created after the daemon has forked (threads do not survive fork) and
 * freed once the session loop has ended.
 *
 * Ownership: the pool borrows ctx, which outlives it.
 * Locks: ra->lock, taken before a dfx index's lock and the cache's shard
 * locks, never with a member's lock held, never held while decoding.
 * Errors: -ENOMEM, a pthread_create errno.
 * Threads: threads workers, from FUSE init to destroy.
 */
#ifndef NPYFS_FS_READAHEAD_H
#define NPYFS_FS_READAHEAD_H

#include <stdint.h>

struct mount_ctx;
struct archive_member;
struct readahead;

/* Start threads workers for ctx (which must outlive the pool). threads == 0
 * or a cache too small to hold anything ahead gives *out == NULL and 0: no
 * readahead. Returns 0, or -ENOMEM / a pthread_create errno. */
int readahead_new(struct mount_ctx *ctx, unsigned threads, struct readahead **out);

/* Stop and join the workers; queued work is dropped. Accepts NULL. */
void readahead_free(struct readahead *ra);

/* A read of chunks first..last of m is about to be served. Detects sequential
 * streams and queues segments ahead of them. Never blocks on decoding.
 * Thread-safe; ra may be NULL (no readahead). */
void readahead_note_read(struct readahead *ra, struct archive_member *m, uint64_t first,
                         uint64_t last);

#endif
