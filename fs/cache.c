/*
 * Decompressed chunk cache. Contract in cache.h.
 *
 * The cache is split into 1-16 shards by a hash of the key (owner, index).
 * Each shard has its own mutex, a chained hash table and an LRU list, and
 * holds at most max_chunks chunks; the shards' max_chunks add up to
 * capacity / chunk_size, so the global bound holds without a global lock.
 * Small caches (fewer than SHARD_MIN_CHUNKS chunks per shard) use a single
 * shard, which keeps their LRU order exact.
 *
 * Capacity is accounted in whole chunks of chunk_size bytes, not in ch->len:
 * a member's short last chunk still occupies a full chunk_size allocation.
 * stats.bytes is therefore chunks * chunk_size, and a capacity below one
 * chunk_size (per shard) keeps nothing.
 *
 * Refcounts are atomic. While a chunk is linked in a shard the cache owns one
 * reference, so cache_get() can take another under the shard lock without
 * racing a free. The shard lock covers only list and table updates: chunk
 * memory is allocated by cache_chunk_new() and freed after the lock is
 * released; callers decompress into their own chunk before cache_insert().
 */
#include "cache.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SHARDS 16
/* Shard only when every shard can still hold this many chunks; below that the
 * per-shard LRU would be too coarse an approximation of the global one. */
#define SHARD_MIN_CHUNKS 8
/* Hash buckets per shard: one per chunk it can hold, within these bounds.
 * Each bucket costs a pointer, allocated up front by cache_new(). */
#define MIN_BUCKETS 16
#define MAX_BUCKETS (1u << 20)

struct lru_link {
    struct lru_link *prev, *next;
};

struct chunk {
    struct cache_chunk pub; /* first member: cache_chunk * and chunk * convert */
    atomic_uint refs;       /* atomic: callers' references, +1 while in the cache */
    atomic_bool claimed;    /* atomic: set once by the cache_insert() that keys it */
    bool in_cache;          /* protected by the key's shard lock */
    uint64_t owner, index;  /* key; written once by cache_insert() under the shard lock */
    struct chunk *hnext;    /* protected by the shard lock: hash chain */
    struct lru_link lru;    /* protected by the shard lock: head.next is the MRU */
};

struct shard {
    _Alignas(64) pthread_mutex_t lock; /* leaf lock: nothing else is taken while held */
    struct chunk **buckets;            /* owned; protected by lock */
    size_t mask;                       /* immutable: bucket count - 1 */
    struct lru_link lru;               /* protected by lock: sentinel of the LRU list */
    uint64_t max_chunks;               /* immutable: this shard's share of the capacity */
    uint64_t chunks;                   /* protected by lock */
    uint64_t hits, misses;             /* protected by lock */
    uint64_t inserted, evicted;        /* protected by lock */
    uint64_t inserted_bytes;           /* protected by lock */
};

/* Released chunks kept for reuse, so a steady stream of decodes recycles the
 * same buffers instead of churning malloc: 128 KiB blocks freed by one
 * thread and allocated by another fragment glibc's per-thread arenas and
 * push the daemon's RSS well past cache_size. */
#define SPARE_MAX 64

struct cache {
    pthread_mutex_t spare_lock; /* leaf lock */
    struct chunk *spare;        /* protected by spare_lock: list through hnext */
    unsigned nspare;            /* protected by spare_lock */
    size_t chunk_size;    /* immutable */
    unsigned nshards;     /* immutable: power of two, 1..MAX_SHARDS */
    struct shard *shards; /* owned, immutable pointer; aligned_alloc'd */
};

static struct chunk *to_chunk(struct cache_chunk *ch)
{
    return (struct chunk *)ch;
}

static struct chunk *lru_entry(struct lru_link *l)
{
    return (struct chunk *)((char *)l - offsetof(struct chunk, lru));
}

static void lru_unlink(struct lru_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
}

static void lru_push_front(struct lru_link *head, struct lru_link *l)
{
    l->prev = head;
    l->next = head->next;
    head->next->prev = l;
    head->next = l;
}

/* splitmix64 finalizer over both halves of the key: the low bits pick the
 * bucket, the top bits the shard. */
static uint64_t hash_key(uint64_t owner, uint64_t index)
{
    uint64_t h = (owner * 0x9e3779b97f4a7c15u) ^ index;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9u;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebu;
    h ^= h >> 31;
    return h;
}

static struct shard *shard_of(struct cache *c, uint64_t h)
{
    return &c->shards[(h >> 56) & (c->nshards - 1)];
}

static void chunk_free(struct chunk *p)
{
    free(p->pub.data);
    free(p);
}

/* The last reference to p is gone: keep it as a spare or free it. */
static void chunk_release(struct cache *c, struct chunk *p)
{
    pthread_mutex_lock(&c->spare_lock);
    if (c->nspare < SPARE_MAX) {
        p->hnext = c->spare;
        c->spare = p;
        c->nspare++;
        p = NULL;
    }
    pthread_mutex_unlock(&c->spare_lock);
    if (p)
        chunk_free(p);
}

static struct chunk *take_spare(struct cache *c)
{
    struct chunk *p;

    pthread_mutex_lock(&c->spare_lock);
    p = c->spare;
    if (p) {
        c->spare = p->hnext;
        c->nspare--;
    }
    pthread_mutex_unlock(&c->spare_lock);
    if (p) {
        unsigned char *data = p->pub.data;
        memset(p, 0, sizeof(*p));
        p->pub.data = data;
    }
    return p;
}

/* Drop one reference. Returns true if it was the last and p must be freed.
 * acq_rel: every user's writes and reads happen before the free. */
static bool chunk_unref(struct chunk *p)
{
    unsigned old = atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel);
    assert(old > 0);
    return old == 1;
}

/* Take p out of its shard (lock held) and drop the cache's reference. If that
 * was the last one, p is pushed on *dead to be freed once the lock is gone. */
static void shard_remove(struct shard *s, struct chunk *p, struct chunk **dead)
{
    struct chunk **pp = &s->buckets[hash_key(p->owner, p->index) & s->mask];

    assert(p->in_cache);
    while (*pp != p)
        pp = &(*pp)->hnext;
    *pp = p->hnext;
    lru_unlink(&p->lru);
    p->in_cache = false;
    s->chunks--;
    if (chunk_unref(p)) {
        /* Nobody else can reach p now, so hnext is free to reuse. */
        p->hnext = *dead;
        *dead = p;
    }
}

static void free_dead(struct cache *c, struct chunk *dead)
{
    while (dead) {
        struct chunk *next = dead->hnext;
        chunk_release(c, dead);
        dead = next;
    }
}

static struct chunk *shard_find(struct shard *s, uint64_t h, uint64_t owner, uint64_t index)
{
    struct chunk *p = s->buckets[h & s->mask];

    while (p && (p->owner != owner || p->index != index))
        p = p->hnext;
    return p;
}

static size_t bucket_count(uint64_t max_chunks)
{
    size_t n = MIN_BUCKETS;

    while (n < max_chunks && n < MAX_BUCKETS)
        n <<= 1;
    return n;
}

static int shard_init(struct shard *s, uint64_t max_chunks)
{
    size_t n = bucket_count(max_chunks);
    int err;

    memset(s, 0, sizeof(*s));
    s->buckets = calloc(n, sizeof(*s->buckets));
    if (!s->buckets)
        return -ENOMEM;
    err = pthread_mutex_init(&s->lock, NULL);
    if (err) {
        free(s->buckets);
        return -err;
    }
    s->mask = n - 1;
    s->lru.prev = s->lru.next = &s->lru;
    s->max_chunks = max_chunks;
    return 0;
}

static void shard_destroy(struct cache *c, struct shard *s)
{
    struct chunk *dead = NULL;

    while (s->lru.next != &s->lru)
        shard_remove(s, lru_entry(s->lru.next), &dead);
    free_dead(c, dead);
    pthread_mutex_destroy(&s->lock);
    free(s->buckets);
}

static unsigned shard_count(uint64_t total_chunks)
{
    unsigned n = MAX_SHARDS;

    while (n > 1 && total_chunks / n < SHARD_MIN_CHUNKS)
        n >>= 1;
    return n;
}

int cache_new(uint64_t capacity, size_t chunk_size, struct cache **out)
{
    struct cache *c;
    uint64_t total;
    unsigned i;
    int ret;

    *out = NULL;
    if (chunk_size == 0)
        return -EINVAL;
    c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    pthread_mutex_init(&c->spare_lock, NULL);
    total = capacity / chunk_size;
    c->chunk_size = chunk_size;
    c->nshards = shard_count(total);
    /* sizeof(struct shard) is a multiple of its 64-byte alignment. */
    c->shards = aligned_alloc(_Alignof(struct shard), c->nshards * sizeof(struct shard));
    if (!c->shards) {
        ret = -ENOMEM;
        goto out_free_cache;
    }
    for (i = 0; i < c->nshards; i++) {
        /* Spread the remainder so the shares add up to exactly total. */
        uint64_t share = total / c->nshards + (i < total % c->nshards ? 1 : 0);
        ret = shard_init(&c->shards[i], share);
        if (ret < 0)
            goto out_destroy_shards;
    }
    *out = c;
    return 0;

out_destroy_shards:
    while (i-- > 0)
        shard_destroy(c, &c->shards[i]);
    free(c->shards);
out_free_cache:
    free(c);
    return ret;
}

void cache_free(struct cache *c)
{
    unsigned i;

    if (!c)
        return;
    /* Only the cache's own references are dropped here, so a chunk someone
     * still (wrongly) holds is freed by that holder's cache_put(), not here. */
    for (i = 0; i < c->nshards; i++)
        shard_destroy(c, &c->shards[i]);
    while (c->spare) {
        struct chunk *next = c->spare->hnext;
        chunk_free(c->spare);
        c->spare = next;
    }
    pthread_mutex_destroy(&c->spare_lock);
    free(c->shards);
    free(c);
}

size_t cache_chunk_size(const struct cache *c)
{
    return c->chunk_size;
}

int cache_chunk_new(struct cache *c, struct cache_chunk **out)
{
    struct chunk *p;

    *out = NULL;
    p = take_spare(c);
    if (!p) {
        p = calloc(1, sizeof(*p));
        if (!p)
            return -ENOMEM;
        p->pub.data = malloc(c->chunk_size);
        if (!p->pub.data) {
            free(p);
            return -ENOMEM;
        }
    }
    atomic_init(&p->refs, 1); /* released in cache_put() */
    atomic_init(&p->claimed, false);
    *out = &p->pub;
    return 0;
}

/* Contract in cache.h. */
unsigned cache_prepare(struct cache *c, unsigned n)
{
    unsigned added = 0;

    while (added < n) {
        struct chunk *p;
        bool full;

        pthread_mutex_lock(&c->spare_lock);
        full = c->nspare >= n || c->nspare >= SPARE_MAX;
        pthread_mutex_unlock(&c->spare_lock);
        if (full)
            break;
        p = calloc(1, sizeof(*p));
        if (p)
            p->pub.data = malloc(c->chunk_size);
        if (!p || !p->pub.data) {
            free(p);
            break;
        }
        /* every page now, by this thread, rather than by the decoder (a
         * plain memset to 0 of fresh memory could be compiled into calloc,
         * which skips the pages) */
        for (size_t i = 0; i < c->chunk_size; i += 4096)
            ((volatile unsigned char *)p->pub.data)[i] = 0;
        chunk_release(c, p);
        added++;
    }
    return added;
}

static struct cache_chunk *get(struct cache *c, uint64_t owner, uint64_t index, bool count_miss)
{
    uint64_t h = hash_key(owner, index);
    struct shard *s = shard_of(c, h);
    struct chunk *p;

    pthread_mutex_lock(&s->lock);
    p = shard_find(s, h, owner, index);
    if (p) {
        /* The cache's own reference keeps p alive, so relaxed is enough;
         * the lock orders the data written before insertion. */
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
        lru_unlink(&p->lru);
        lru_push_front(&s->lru, &p->lru);
        s->hits++;
    } else if (count_miss) {
        s->misses++;
    }
    pthread_mutex_unlock(&s->lock);
    return p ? &p->pub : NULL;
}

struct cache_chunk *cache_get(struct cache *c, uint64_t owner, uint64_t index)
{
    return get(c, owner, index, true);
}

/* Contract in cache.h. */
struct cache_chunk *cache_lookup(struct cache *c, uint64_t owner, uint64_t index)
{
    return get(c, owner, index, false);
}

/*
 * A chunk is keyed at most once: if ch was inserted before (under any key,
 * even if it has since been evicted or dropped), it is ignored like a
 * duplicate. With whole-chunk accounting one insert evicts at most one
 * chunk, but the loop does not rely on that.
 */
void cache_insert(struct cache *c, uint64_t owner, uint64_t index, struct cache_chunk *ch)
{
    uint64_t h = hash_key(owner, index);
    struct shard *s = shard_of(c, h);
    struct chunk *p = to_chunk(ch);
    struct chunk *dead = NULL;
    bool unclaimed = false;

    assert(ch->len <= c->chunk_size);
    if (s->max_chunks == 0)
        return; /* this shard (or the whole cache) keeps nothing */
    pthread_mutex_lock(&s->lock);
    if (shard_find(s, h, owner, index))
        goto out_unlock;
    if (!atomic_compare_exchange_strong(&p->claimed, &unclaimed, true))
        goto out_unlock;
    p->owner = owner;
    p->index = index;
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed); /* cache's ref */
    p->hnext = s->buckets[h & s->mask];
    s->buckets[h & s->mask] = p;
    lru_push_front(&s->lru, &p->lru);
    p->in_cache = true;
    s->chunks++;
    s->inserted++;
    s->inserted_bytes += ch->len;
    while (s->chunks > s->max_chunks) {
        shard_remove(s, lru_entry(s->lru.prev), &dead);
        s->evicted++;
    }
out_unlock:
    pthread_mutex_unlock(&s->lock);
    free_dead(c, dead);
}

void cache_put(struct cache *c, struct cache_chunk *ch)
{
    if (ch && chunk_unref(to_chunk(ch)))
        chunk_release(c, to_chunk(ch));
}

/* Contract in cache.h. */
void cache_done(struct cache *c, struct cache_chunk *ch)
{
    struct chunk *p = to_chunk(ch);
    struct chunk *dead = NULL;
    struct shard *s;

    /* owner and index are written once, before the chunk is first listed */
    if (!atomic_load_explicit(&p->claimed, memory_order_acquire))
        return;
    s = shard_of(c, hash_key(p->owner, p->index));
    pthread_mutex_lock(&s->lock);
    if (p->in_cache)
        shard_remove(s, p, &dead);
    pthread_mutex_unlock(&s->lock);
    free_dead(c, dead);
}

/* Linear in the chunks held: drops are rare (damaged member, unmount of a
 * member), so no per-owner index is kept. */
void cache_drop_owner(struct cache *c, uint64_t owner)
{
    unsigned i;

    for (i = 0; i < c->nshards; i++) {
        struct shard *s = &c->shards[i];
        struct chunk *dead = NULL;
        struct lru_link *l, *next;

        pthread_mutex_lock(&s->lock);
        for (l = s->lru.next; l != &s->lru; l = next) {
            next = l->next;
            if (lru_entry(l)->owner == owner)
                shard_remove(s, lru_entry(l), &dead);
        }
        pthread_mutex_unlock(&s->lock);
        free_dead(c, dead);
    }
}

/* Sums the shards one lock at a time: each shard's numbers are consistent,
 * the total is not a single atomic snapshot. */
void cache_get_stats(struct cache *c, struct cache_stats *out)
{
    unsigned i;

    memset(out, 0, sizeof(*out));
    for (i = 0; i < c->nshards; i++) {
        struct shard *s = &c->shards[i];

        pthread_mutex_lock(&s->lock);
        out->hits += s->hits;
        out->misses += s->misses;
        out->inserted += s->inserted;
        out->inserted_bytes += s->inserted_bytes;
        out->evicted += s->evicted;
        out->chunks += s->chunks;
        pthread_mutex_unlock(&s->lock);
    }
    out->bytes = out->chunks * c->chunk_size;
}
