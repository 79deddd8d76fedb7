/*
 * Unit tests for fs/cache.c: single-threaded cases check refcounts, LRU
 * order, capacity and the stats counters exactly (small caches use one shard,
 * so their LRU is exact); the stress case runs threads doing random
 * get/insert/put/drop/done and checks every chunk it reads carries its own key.
 * Run under ASan (leaks, use after free) and TSan (races) in CI.
 */
#include "cache.h"
#include "check.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#define CS 64 /* chunk size for the single-threaded cases */

/* Fill ch with bytes derived from its key: the first 16 bytes are the key
 * itself, the rest a key-dependent pattern, so a mixed-up chunk shows. */
static void fill(struct cache_chunk *ch, size_t len, uint64_t owner, uint64_t index)
{
    size_t i;

    memcpy(ch->data, &owner, sizeof(owner));
    memcpy(ch->data + 8, &index, sizeof(index));
    for (i = 16; i < len; i++)
        ch->data[i] = (unsigned char)(owner * 31 + index * 7 + i);
    ch->len = len;
}

static bool intact(const struct cache_chunk *ch, size_t len, uint64_t owner, uint64_t index)
{
    uint64_t o, x;
    size_t i;

    if (ch->len != len)
        return false;
    memcpy(&o, ch->data, sizeof(o));
    memcpy(&x, ch->data + 8, sizeof(x));
    if (o != owner || x != index)
        return false;
    for (i = 16; i < len; i++)
        if (ch->data[i] != (unsigned char)(owner * 31 + index * 7 + i))
            return false;
    return true;
}

/* New chunk filled for (owner, index), inserted; the caller's ref is kept. */
static struct cache_chunk *add(struct cache *c, uint64_t owner, uint64_t index, size_t len)
{
    struct cache_chunk *ch = NULL;

    if (cache_chunk_new(c, &ch) < 0)
        return NULL;
    fill(ch, len, owner, index);
    cache_insert(c, owner, index, ch);
    return ch;
}

/* Insert and drop the caller's ref right away. */
static void add_put(struct cache *c, uint64_t owner, uint64_t index)
{
    cache_put(c, add(c, owner, index, CS));
}

/* 1 if (owner, index) is cached (and intact), 0 if not; counts as a get. */
static int present(struct cache *c, uint64_t owner, uint64_t index)
{
    struct cache_chunk *ch = cache_get(c, owner, index);

    if (!ch)
        return 0;
    CHECK(intact(ch, ch->len, owner, index));
    cache_put(c, ch);
    return 1;
}

static void test_new_errors(void)
{
    struct cache *c = (struct cache *)1;

    CHECK_EQ(cache_new(1024, 0, &c), -EINVAL);
    CHECK(c == NULL);
    cache_free(NULL);
    cache_put(NULL, NULL);
    CHECK_EQ(cache_new(1024, CS, &c), 0);
    CHECK(c != NULL);
    CHECK_EQ(cache_chunk_size(c), CS);
    cache_free(c);
}

static void test_basics(void)
{
    struct cache *c;
    struct cache_chunk *ch, *got;
    struct cache_stats st;

    CHECK_EQ(cache_new(4 * CS, CS, &c), 0);
    CHECK_EQ(cache_chunk_new(c, &ch), 0);
    CHECK(ch->data != NULL);
    CHECK_EQ(ch->len, 0);
    fill(ch, CS, 1, 0);
    CHECK(cache_get(c, 1, 0) == NULL);
    cache_insert(c, 1, 0, ch);
    got = cache_get(c, 1, 0);
    CHECK(got == ch);
    CHECK(got && intact(got, CS, 1, 0));
    CHECK(cache_get(c, 1, 1) == NULL);
    CHECK(cache_get(c, 0, 0) == NULL);
    cache_put(c, got);
    cache_put(c, ch);
    /* Both caller refs gone: the cache's own keeps it readable. */
    got = cache_get(c, 1, 0);
    CHECK(got && intact(got, CS, 1, 0));
    cache_put(c, got);

    cache_get_stats(c, &st);
    CHECK_EQ(st.hits, 2);
    CHECK_EQ(st.misses, 3);
    CHECK_EQ(st.inserted, 1);
    CHECK_EQ(st.evicted, 0);
    CHECK_EQ(st.chunks, 1);
    CHECK_EQ(st.bytes, CS);
    cache_free(c);
}

/* cache_prepare() tops the spares up to n (bounded), cache_chunk_new()
 * takes them, and a prepared chunk works like any other. */
static void test_prepare(void)
{
    struct cache_chunk *ch[8];
    struct cache *c;

    CHECK_EQ(cache_new(16 * CS, CS, &c), 0);
    CHECK_EQ(cache_prepare(c, 5), 5);
    CHECK_EQ(cache_prepare(c, 5), 0); /* already there */
    CHECK_EQ(cache_prepare(c, 7), 2);
    for (int i = 0; i < 7; i++)
        CHECK_EQ(cache_chunk_new(c, &ch[i]), 0);
    CHECK_EQ(cache_prepare(c, 3), 3); /* the 7 were taken */
    for (int i = 0; i < 7; i++) {
        fill(ch[i], CS, 9, (uint64_t)i);
        cache_insert(c, 9, (uint64_t)i, ch[i]);
        cache_put(c, ch[i]);
    }
    for (int i = 0; i < 7; i++)
        CHECK_EQ(present(c, 9, (uint64_t)i), 1);
    CHECK(cache_prepare(c, 100000) <= 64); /* never more than the spares kept */
    cache_free(c);                         /* frees the spares (ASan: no leak) */
}

static void test_short_last_chunk(void)
{
    struct cache *c;
    struct cache_chunk *ch;
    struct cache_stats st;

    CHECK_EQ(cache_new(4 * CS, CS, &c), 0);
    cache_put(c, add(c, 7, 3, 21));
    ch = cache_get(c, 7, 3);
    CHECK(ch != NULL);
    CHECK(ch && ch->len == 21);
    CHECK(ch && intact(ch, 21, 7, 3));
    cache_put(c, ch);
    /* Accounted as a whole chunk: that is what it allocates. */
    cache_get_stats(c, &st);
    CHECK_EQ(st.bytes, CS);
    CHECK_EQ(st.chunks, 1);
    cache_free(c);
}

static void test_duplicate_insert(void)
{
    struct cache *c;
    struct cache_chunk *first, *second, *got;
    struct cache_stats st;

    CHECK_EQ(cache_new(4 * CS, CS, &c), 0);
    first = add(c, 1, 5, CS);
    CHECK_EQ(cache_chunk_new(c, &second), 0);
    fill(second, CS, 1, 5);
    second->data[20] ^= 0xff; /* tell them apart */
    cache_insert(c, 1, 5, second);
    got = cache_get(c, 1, 5);
    CHECK(got == first);
    cache_put(c, got);
    /* The same chunk again, under its key or another: ignored too. */
    cache_insert(c, 1, 5, first);
    cache_insert(c, 1, 6, first);
    CHECK(cache_get(c, 1, 6) == NULL);
    cache_get_stats(c, &st);
    CHECK_EQ(st.inserted, 1);
    CHECK_EQ(st.chunks, 1);
    cache_put(c, second); /* never cached: freed here (ASan checks) */
    cache_put(c, first);
    cache_free(c);
}

static void test_lru_order(void)
{
    struct cache *c;
    struct cache_stats st;

    CHECK_EQ(cache_new(3 * CS, CS, &c), 0);
    add_put(c, 1, 0);
    add_put(c, 1, 1);
    add_put(c, 1, 2);
    CHECK_EQ(present(c, 1, 0), 1); /* 0 becomes MRU; 1 is now the LRU */
    add_put(c, 1, 3);
    CHECK_EQ(present(c, 1, 1), 0);
    CHECK_EQ(present(c, 1, 2), 1); /* order now (MRU first): 2 3 0 */
    add_put(c, 1, 4);
    CHECK_EQ(present(c, 1, 3), 1);
    CHECK_EQ(present(c, 1, 0), 0);
    CHECK_EQ(present(c, 1, 2), 1);
    CHECK_EQ(present(c, 1, 4), 1);
    cache_get_stats(c, &st);
    CHECK_EQ(st.evicted, 2);
    CHECK_EQ(st.chunks, 3);
    CHECK_EQ(st.inserted, 5);
    cache_free(c);
}

static void check_bound(uint64_t cap, uint64_t n)
{
    struct cache *c;
    struct cache_stats st;
    uint64_t i, over = 0;

    CHECK_EQ(cache_new(cap, CS, &c), 0);
    for (i = 0; i < n; i++) {
        add_put(c, i % 5, i);
        cache_get_stats(c, &st);
        if (st.bytes > cap || st.chunks * CS != st.bytes)
            over++;
    }
    CHECK_EQ(over, 0);
    cache_get_stats(c, &st);
    CHECK_EQ(st.inserted, n);
    CHECK_EQ(st.evicted + st.chunks, n);
    /* Whole chunks fit: every shard fills up after this many inserts. */
    CHECK(st.chunks * 10 >= (cap / CS) * 9);
    cache_free(c);
}

static void test_capacity_bound(void)
{
    check_bound(10 * CS + CS / 2, 1000); /* one shard, exact */
    check_bound(1000 * CS + 1, 20000);   /* sharded */
}

static void test_reader_survives_eviction(void)
{
    struct cache *c;
    struct cache_chunk *held, *other;
    struct cache_stats st;

    CHECK_EQ(cache_new(CS, CS, &c), 0);
    cache_put(c, add(c, 2, 0, CS));
    held = cache_get(c, 2, 0);
    CHECK(held != NULL);
    other = add(c, 2, 1, CS); /* evicts (2, 0) */
    CHECK(cache_get(c, 2, 0) == NULL);
    cache_get_stats(c, &st);
    CHECK_EQ(st.evicted, 1);
    CHECK_EQ(st.chunks, 1);
    CHECK_EQ(st.bytes, CS);
    /* Evicted but still ours; churn the cache and the allocator meanwhile. */
    cache_put(c, other);
    add_put(c, 2, 2);
    add_put(c, 2, 3);
    CHECK(held && intact(held, CS, 2, 0));
    cache_put(c, held);
    cache_free(c);
}

/* n keys per owner for two owners; cap must hold all 2n in every shard. */
static void test_drop_owner(uint64_t cap, uint64_t n)
{
    struct cache *c;
    struct cache_chunk *held;
    struct cache_stats st;
    uint64_t i;
    int left1 = 0, left2 = 0;

    CHECK_EQ(cache_new(cap, CS, &c), 0);
    for (i = 0; i < n; i++) {
        add_put(c, 1, i);
        add_put(c, 2, i);
    }
    held = cache_get(c, 1, n - 1);
    CHECK(held != NULL);
    cache_drop_owner(c, 1);
    cache_drop_owner(c, 99); /* no such owner */
    for (i = 0; i < n; i++) {
        left1 += present(c, 1, i);
        left2 += present(c, 2, i);
    }
    CHECK_EQ(left1, 0);
    CHECK_EQ(left2, n);
    cache_get_stats(c, &st);
    CHECK_EQ(st.chunks, n);
    CHECK_EQ(st.bytes, n * CS);
    CHECK_EQ(st.evicted, 0); /* drops are not evictions */
    CHECK(held && intact(held, CS, 1, n - 1));
    cache_put(c, held);
    /* A dropped key can be cached again. */
    add_put(c, 1, 0);
    CHECK_EQ(present(c, 1, 0), 1);
    cache_free(c);
}

/* cache_done(): the chunk leaves the cache at once but stays the holder's;
 * once put, its memory is the next chunk handed out. No-op for a chunk the
 * cache does not hold (never inserted, a duplicate, evicted, done twice). */
static void test_done(void)
{
    struct cache *c;
    struct cache_chunk *held, *dup, *next, *kept;
    struct cache_stats st;
    unsigned char *mem;

    CHECK_EQ(cache_new(4 * CS, CS, &c), 0);
    kept = add(c, 3, 9, CS);
    held = add(c, 3, 0, CS);
    CHECK(held != NULL && kept != NULL);
    mem = held->data;
    cache_done(c, held);
    CHECK(cache_get(c, 3, 0) == NULL);
    cache_get_stats(c, &st);
    CHECK_EQ(st.chunks, 1);
    CHECK_EQ(st.bytes, CS);
    CHECK_EQ(st.evicted, 0);
    CHECK(intact(held, CS, 3, 0));
    cache_done(c, held); /* twice: nothing more happens */
    cache_get_stats(c, &st);
    CHECK_EQ(st.chunks, 1);
    CHECK(present(c, 3, 9) == 1);
    /* a done chunk is not keyed again */
    cache_insert(c, 3, 0, held);
    CHECK(cache_get(c, 3, 0) == NULL);
    cache_put(c, held);
    CHECK_EQ(cache_chunk_new(c, &next), 0);
    CHECK(next->data == mem); /* reused first */
    /* never inserted */
    cache_done(c, next);
    cache_put(c, next);
    /* a duplicate the cache ignored: the one it holds stays */
    dup = NULL;
    CHECK_EQ(cache_chunk_new(c, &dup), 0);
    fill(dup, CS, 3, 9);
    cache_insert(c, 3, 9, dup);
    cache_done(c, dup);
    CHECK(present(c, 3, 9) == 1);
    cache_put(c, dup);
    /* done by the holder after an eviction: the new chunk under the key stays */
    cache_put(c, kept);
    kept = cache_get(c, 3, 9);
    for (uint64_t i = 10; i < 14; i++)
        add_put(c, 3, i); /* evicts (3, 9) */
    CHECK(cache_get(c, 3, 9) == NULL);
    add_put(c, 3, 9);
    cache_done(c, kept);
    CHECK(present(c, 3, 9) == 1);
    CHECK(kept && intact(kept, CS, 3, 9));
    cache_put(c, kept);
    cache_free(c);
}

static void test_capacity_zero(void)
{
    struct cache *c;
    struct cache_chunk *ch;
    struct cache_stats st;
    uint64_t cap;

    for (cap = 0; cap < CS; cap += CS - 1) { /* 0, and less than one chunk */
        CHECK_EQ(cache_new(cap, CS, &c), 0);
        ch = add(c, 1, 0, CS);
        CHECK(ch != NULL);
        CHECK(cache_get(c, 1, 0) == NULL);
        CHECK(ch && intact(ch, CS, 1, 0));
        cache_put(c, ch);
        cache_drop_owner(c, 1);
        cache_get_stats(c, &st);
        CHECK_EQ(st.inserted, 0);
        CHECK_EQ(st.chunks, 0);
        CHECK_EQ(st.bytes, 0);
        CHECK_EQ(st.evicted, 0);
        CHECK_EQ(st.misses, 1);
        CHECK_EQ(st.hits, 0);
        cache_free(c);
    }
}

static void test_stats_exact(void)
{
    struct cache *c;
    struct cache_stats st;
    uint64_t i;

    CHECK_EQ(cache_new(8 * CS, CS, &c), 0);
    /* 12 inserts evict 0..3; then 4 misses and 8 hits; a duplicate insert
     * is not counted. */
    for (i = 0; i < 12; i++)
        add_put(c, 3, i);
    for (i = 0; i < 12; i++)
        present(c, 3, i);
    cache_put(c, add(c, 3, 11, CS));
    cache_get_stats(c, &st);
    CHECK_EQ(st.hits, 8);
    CHECK_EQ(st.misses, 4);
    CHECK_EQ(st.inserted, 12);
    CHECK_EQ(st.evicted, 4);
    CHECK_EQ(st.chunks, 8);
    CHECK_EQ(st.bytes, 8 * CS);
    cache_free(c);
}

/* ---- multi-threaded stress ---- */

#define THREADS 8
#define HELD 4
#define SCS 256
#define OWNERS 4
#define INDICES 200

struct stress {
    struct cache *c;
    uint64_t cap;
    unsigned seed;
    double seconds;
    /* results, written by the thread before it returns */
    uint64_t gets, bad, over;
    int err;
};

struct held {
    struct cache_chunk *ch;
    uint64_t owner, index;
};

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static size_t stress_len(uint64_t index)
{
    return index % 7 == 0 ? SCS - 1 - index % 100 : SCS;
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void stress_check(struct stress *t, struct held *h)
{
    if (!intact(h->ch, stress_len(h->index), h->owner, h->index))
        t->bad++;
}

static void *stress_thread(void *arg)
{
    struct stress *t = arg;
    struct held held[HELD] = {{0}};
    uint64_t rng = 0x9e3779b97f4a7c15u * (t->seed + 1);
    double end = now() + t->seconds;
    unsigned iter;

    for (iter = 0;; iter++) {
        uint64_t r = xorshift(&rng);
        uint64_t owner = r % OWNERS, index = (r >> 8) % INDICES;
        struct held *slot = &held[(r >> 32) % HELD];
        struct cache_chunk *ch;

        if ((iter & 255) == 0 && now() > end)
            break;
        if ((r >> 40) % 2000 == 0) {
            cache_drop_owner(t->c, owner);
            continue;
        }
        if ((r >> 40) % 64 == 1) {
            struct cache_stats st;
            cache_get_stats(t->c, &st);
            if (st.bytes > t->cap)
                t->over++;
        }
        t->gets++;
        ch = cache_get(t->c, owner, index);
        if (!ch) {
            if (cache_chunk_new(t->c, &ch) < 0) {
                t->err++;
                continue;
            }
            fill(ch, stress_len(index), owner, index);
            cache_insert(t->c, owner, index, ch);
        }
        if ((r >> 40) % 16 == 2)
            cache_done(t->c, ch); /* served whole: it leaves the cache */
        /* Keep it for a while: it may be evicted meanwhile. */
        if (slot->ch) {
            stress_check(t, slot);
            cache_put(t->c, slot->ch);
        }
        *slot = (struct held){ch, owner, index};
        stress_check(t, slot);
    }
    for (iter = 0; iter < HELD; iter++) {
        if (held[iter].ch) {
            stress_check(t, &held[iter]);
            cache_put(t->c, held[iter].ch);
        }
    }
    return NULL;
}

static void run_stress(uint64_t cap, double seconds)
{
    struct cache *c;
    struct stress t[THREADS];
    pthread_t tid[THREADS];
    struct cache_stats st;
    uint64_t gets = 0, bad = 0, over = 0;
    int i, started = 0, err = 0;

    CHECK_EQ(cache_new(cap, SCS, &c), 0);
    for (i = 0; i < THREADS; i++) {
        t[i] = (struct stress){.c = c, .cap = cap, .seed = (unsigned)i, .seconds = seconds};
        if (pthread_create(&tid[i], NULL, stress_thread, &t[i]) == 0)
            started++;
        else
            break;
    }
    CHECK_EQ(started, THREADS);
    for (i = 0; i < started; i++) {
        pthread_join(tid[i], NULL);
        gets += t[i].gets;
        bad += t[i].bad;
        over += t[i].over;
        err += t[i].err;
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(over, 0);
    CHECK_EQ(err, 0);
    CHECK(gets > 1000);
    cache_get_stats(c, &st);
    CHECK_EQ(st.hits + st.misses, gets);
    CHECK(st.hits > 0);
    CHECK(st.evicted > 0);
    CHECK(st.bytes <= cap);
    CHECK_EQ(st.bytes, st.chunks * SCS);
    CHECK(st.chunks <= st.inserted - st.evicted); /* drops take the rest */
    cache_free(c);
}

static void test_stress(void)
{
    run_stress(12 * SCS, 0.7);  /* one shard: every thread on one lock, heavy eviction */
    run_stress(256 * SCS, 0.7); /* 16 shards */
}

int main(void)
{
    test_new_errors();
    test_basics();
    test_prepare();
    test_short_last_chunk();
    test_duplicate_insert();
    test_lru_order();
    test_capacity_bound();
    test_reader_survives_eviction();
    test_drop_owner(1000 * CS, 40); /* 16 shards */
    test_drop_owner(14 * CS, 7);    /* one shard, exactly full */
    test_done();
    test_capacity_zero();
    test_stats_exact();
    test_stress();
    return check_exit("test_cache");
}
