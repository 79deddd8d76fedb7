/*
 * Cache of decompressed chunks: the daemon's second cache level, below the
 * kernel page cache.
 *
 * A chunk is chunk_size bytes of one member's uncompressed data, keyed by
 * (owner, index) where owner identifies the member and index = offset /
 * chunk_size. Chunks are refcounted: take a reference (cache_get, or
 * cache_chunk_new), use the bytes without any lock, drop it with cache_put().
 * The cache holds one reference of its own to each inserted chunk; when the
 * bytes held by the cache exceed its capacity it drops its reference to the
 * least recently used chunks (a chunk still referenced by a reader stays
 * alive until that reader puts it, but no longer counts against the cache).
 *
 * No FUSE here: unit tests drive it directly. All functions are thread-safe.
 * Errors: -ENOMEM, -EINVAL.
 */
#ifndef NPYFS_FS_CACHE_H
#define NPYFS_FS_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct cache;

struct cache_chunk {
    unsigned char *data; /* owned: chunk_size bytes; written only before insertion */
    size_t len;          /* valid bytes: chunk_size except for a member's last chunk */
    /* The rest is private to cache.c (key, refcount, LRU and hash links). */
};

struct cache_stats {
    uint64_t hits, misses;  /* cache_get() results */
    uint64_t inserted;      /* chunks inserted */
    uint64_t inserted_bytes; /* valid bytes (ch->len) of the chunks inserted */
    uint64_t evicted;       /* chunks dropped for capacity */
    uint64_t bytes;         /* bytes currently held by the cache */
    uint64_t chunks;        /* chunks currently held by the cache */
};

/* capacity: bytes of chunk data the cache may hold (>= 0; 0 keeps nothing).
 * chunk_size: bytes per chunk, > 0. */
int cache_new(uint64_t capacity, size_t chunk_size, struct cache **out);

/* Accepts NULL. Every chunk reference must have been put first. */
void cache_free(struct cache *c);

size_t cache_chunk_size(const struct cache *c);

/* A new, unkeyed chunk of chunk_size bytes (len = 0) with one reference held
 * by the caller, to be filled and then inserted or put. */
int cache_chunk_new(struct cache *c, struct cache_chunk **out);

/* Make up to n chunks ready for cache_chunk_new() (at most as many as the
 * cache keeps spare), their memory allocated and touched, so the decoder
 * that takes them writes to pages that are already there: for a thread that
 * would otherwise wait idle for that decoder. Returns how many it added. */
unsigned cache_prepare(struct cache *c, unsigned n);

/* The chunk stored under (owner, index) with a new reference for the caller,
 * or NULL (a miss). Marks it most recently used. */
struct cache_chunk *cache_get(struct cache *c, uint64_t owner, uint64_t index);

/* cache_get() that counts no miss: a look before a call that will count it
 * (member_chunk_cached()). */
struct cache_chunk *cache_lookup(struct cache *c, uint64_t owner, uint64_t index);

/* Store ch (filled, ch->len set) under (owner, index). The caller keeps its
 * own reference and must still put it. If the key is already present, the
 * cache keeps the chunk it has and ignores ch. May evict others. */
void cache_insert(struct cache *c, uint64_t owner, uint64_t index, struct cache_chunk *ch);

/* Drop one reference; the chunk is freed with its last reference. Accepts NULL. */
void cache_put(struct cache *c, struct cache_chunk *ch);

/* The caller, holding a reference to ch, has handed its bytes on whole
 * (to the kernel's page cache): drop the cache's own reference, so that once
 * the caller puts it, its memory, still in the CPU's caches, is the next
 * taken by cache_chunk_new(). No-op for a chunk no longer (or never) held. */
void cache_done(struct cache *c, struct cache_chunk *ch);

/* Drop every chunk of owner from the cache (e.g. the member was found damaged). */
void cache_drop_owner(struct cache *c, uint64_t owner);

void cache_get_stats(struct cache *c, struct cache_stats *out);

#endif
