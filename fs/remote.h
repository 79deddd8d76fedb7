/*
 * Remote byte sources: a struct src (format/source.h) over an object behind
 * an http://, https:// or s3:// URL, read through a bounded block cache with
 * fetch-ahead for sequential readers.
 *
 * A context (one per mount) ties together the HTTP client, the S3
 * configuration and one block cache shared by all its sources: blocks of
 * `block` compressed bytes, keyed by (source, block index), at most
 * `cache_bytes` of them in memory (LRU, fs/cache.c; refcounted, so a read
 * copying out of a block is safe while another thread evicts it). Nothing
 * is written to disk.
 *
 * Opening a source costs one round trip where the server allows it (the
 * last REMOTE_TAIL bytes with a suffix range, and the first head_len bytes
 * in parallel when asked: see http_probe()). Those bytes stay with the
 * source, so a zip's end records and directory, or a gzip header and
 * trailer, are read without another request. The object's identity (size,
 * ETag, Last-Modified) is taken then, and every later fetch is checked
 * against it (If-Match, and the reply's ETag/Last-Modified/size).
 *
 * Reads: the blocks a read needs come from the cache, or from a fetch
 * already in flight (concurrent readers of a missing block wait for one
 * fetch), or from one new ranged GET per run of consecutive missing blocks,
 * so a random read costs at most one round trip and fetches at most its
 * span rounded out to blocks. A reader whose reads continue one another
 * (three in a row, each starting within a block of where the last one ended;
 * REMOTE_STREAMS such streams per source) gets fetch-ahead: a
 * window starting at REMOTE_AHEAD_START bytes past its position, doubling
 * each time the reader catches up with half of it, up to REMOTE_AHEAD_MAX
 * or a quarter of the cache; the window is split into several ranged GETs
 * that run in parallel on the client's connections, at fetch-ahead
 * priority (a reader waiting for one promotes it).
 *
 * Errors from reads (src_pread): -EIO when the object changed since open
 * (412, or another ETag/Last-Modified/size: remembered, so every later read
 * that needs bytes not yet cached fails the same way without a request, and
 * never returns a mix of old and new bytes); -EREMOTEIO for any other HTTP
 * failure after the client's retries (a status, a reset, a refused
 * connection: not -EIO, which format/ code takes for a truncated archive);
 * -ETIMEDOUT when the server stopped answering; -ENOMEM. A failed fetch is forgotten, so reads work
 * again when the server is back. Nothing here logs: callers check remote_check() and log once.
 *
 * Thread-safety: all functions are thread-safe. Locks: a source's lock
 * guards its table of blocks in flight and its streams; it is taken before
 * the HTTP client's lock and the cache's shard locks, and is never held
 * during a transfer or a copy out of a block.
 */
#ifndef NPYFS_FS_REMOTE_H
#define NPYFS_FS_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "s3.h"
#include "source.h"

/* Default fetch block: the unit of the block cache and of every ranged
 * GET, so a random read fetches the compressed bytes it needs rounded out
 * to it. Small, because a random read with an index needs about half a
 * segment between access points (some 100 KiB at the default spacing),
 * and the decode is announced beforehand (remote_advise()), so it costs one
 * round trip whatever the block; streams fetch runs of many blocks per GET
 * (up to REMOTE_RUN_MAX). 16 KiB kept the median random 4 KiB read at
 * 1.3x the compressed span it needs (64 KiB: 2.1x). */
#define REMOTE_DEFAULT_BLOCK (16u << 10)
#define REMOTE_MIN_BLOCK (4u << 10)
#define REMOTE_MAX_BLOCK (16u << 20)
#define REMOTE_DEFAULT_CACHE (64ull << 20)
/* The cache holds at least this many blocks (else it could keep none of a
 * fetch, and every read would fetch again). */
#define REMOTE_MIN_CACHE_BLOCKS 4
/* Bytes read from the end of an object at open: a zip's end records and,
 * for most archives, its whole central directory (about 100 bytes a
 * member: 500 members), so opening a zip costs one request. No more: a
 * fresh connection's first round trip carries about 60 KiB (the receiver's
 * initial window); 64 KiB took a second round trip here. */
#define REMOTE_TAIL (56u << 10)
#define REMOTE_AHEAD_START (1u << 20)
#define REMOTE_AHEAD_MAX (64u << 20)
/* Largest single ranged GET; a larger need is split so the parts run on
 * several connections. */
#define REMOTE_RUN_MAX (4u << 20)
#define REMOTE_STREAMS 4
/* Largest ranged GET of an announced span (remote_advise()): a fresh
 * connection's window grows over round trips, so one long GET of a span is
 * slower than its pieces on several connections (a 1.8 MiB GET took 16
 * round trips at 20 ms here); too short a piece spends a round trip for
 * little (256 KiB pieces streamed a third slower than 512 KiB ones). */
#define REMOTE_ADVISE_RUN (512u << 10)

struct remote_ctx;

struct remote_opts {
    size_t block;         /* 0: REMOTE_DEFAULT_BLOCK; else REMOTE_MIN_BLOCK..MAX */
    uint64_t cache_bytes; /* 0: REMOTE_DEFAULT_CACHE */
};

struct remote_stats {
    uint64_t requests;     /* HTTP requests sent (retries included) */
    uint64_t bytes;        /* body bytes fetched */
    uint64_t retries;      /* requests sent again after a failure */
    uint64_t failures;     /* fetches that failed for good */
    uint64_t hits;         /* blocks a read found in the cache */
    uint64_t misses;       /* blocks a read waited for (fetched for it, or in flight) */
    uint64_t ahead_blocks; /* blocks fetched ahead of a sequential reader */
    uint64_t cache_bytes;  /* remote_ctx_stats() only: bytes held by the cache */
    uint64_t cache_limit;  /* remote_ctx_stats() only: its capacity */
    uint64_t in_flight;    /* remote_src_stats() only: fetches queued or running now */
    bool changed;          /* remote_src_stats() only: the object changed */
};

/* A context over http (borrowed; must outlive the context) and s3 (borrowed,
 * may be NULL: then s3:// URLs are refused). Returns 0, -EINVAL (block size
 * out of range), -ENOMEM. */
int remote_ctx_new(struct http_client *http, const struct s3_config *s3,
                   const struct remote_opts *o, struct remote_ctx **out);

/* Every source must have been freed first. Accepts NULL. */
void remote_ctx_free(struct remote_ctx *c);

/* Is s a URL remote_open() takes (http://, https://, s3://)? */
bool remote_is_url(const char *s);

/* Open url (an object: s3://bucket/prefix/ is -EISDIR, list it with
 * s3_list()). head_len: bytes of the start to fetch with the tail (a
 * .npy.gz's header; 0 for none). On success *out is a source for
 * src_pread()/src_free(), with (*out)->size the object's size. On error *why
 * says what went wrong (http_problem()/s3_problem()). Returns 0 or a
 * negative errno: -EINVAL (not a URL, no S3 configuration), -EISDIR, and
 * those of http.h (-ENOENT, -EACCES, -EOPNOTSUPP no Range support, ...). */
int remote_open(struct remote_ctx *c, const char *url, size_t head_len, struct src **out,
                struct http_error *why);

/* A hint: bytes [off, off + len) will be read soon. Starts the fetches of
 * the blocks among them not cached or in flight (demand priority, one
 * ranged GET per run), without waiting: the reads that follow find them in
 * flight, so a decode that needs a known span costs one round trip instead
 * of one per input buffer. The reads inside an advised span (the last
 * few are remembered) do not count as a sequential stream: they get no
 * fetch-ahead. Thread-safe. */
void remote_advise(struct src *s, uint64_t off, uint64_t len);

/* Is s a remote source? */
bool remote_is_src(const struct src *s);

/* The identity taken at open (immutable, borrowed from s). */
const struct http_ident *remote_ident(const struct src *s);

/* The URL s was opened with (borrowed; may carry a query: show it only
 * through http_redact_url()). */
const char *remote_url(const struct src *s);

/* The bytes of s's end kept from open (REMOTE_TAIL of them at most, fewer
 * for a smaller object; reads of them make no request): *bytes (borrowed,
 * immutable until src_free()) and *off, where they start. Returns their
 * length. */
size_t remote_tail(const struct src *s, const unsigned char **bytes, uint64_t *off);

/* 0, or -EIO once s's object was seen to change (no request made). */
int remote_check(struct src *s);

/* Counters of one source, or of the whole context. */
void remote_src_stats(struct src *s, struct remote_stats *out);
void remote_ctx_stats(struct remote_ctx *c, struct remote_stats *out);

#endif
