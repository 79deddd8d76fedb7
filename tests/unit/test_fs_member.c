/*
 * Unit tests for member decoding (member.c) without a mount: real zip and
 * gzip files written here, opened with archive_open(), read chunk by
 * chunk through member_chunk() and a real cache from many threads at
 * once, every byte checked against the data the archive was written from.
 *
 * The busy/park coordination is checked by its effects: the decoders it
 * starts and the bytes they decode, counted by wrapping dfx_reader_new(),
 * dfx_reader_read() and dfx_reader_skip() (the link wraps the calls fs/
 * makes into format/: -Wl,--wrap, see CMakeLists.txt). A decoder is started
 * only where no cached chunk, parked decoder or decode in progress serves the
 * read, and each chunk's bytes are decoded once.
 *
 * Damage, a chunk CRC table that disagrees, and an archive rewritten under
 * the readers must make reads fail with EIO and never hand out a wrong byte.
 */
#define _GNU_SOURCE
#include "archive.h"
#include "cache.h"
#include "check.h"
#include "dfx_store.h"
#include "fs.h"
#include "fstest.h"
#include "member.h"
#include "parked.h"
#include "verify.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CH ((uint64_t)FS_CHUNK_SIZE)
/* Access points every 256 KiB: two chunks apart, so random reads start near
 * their offset and a few MiB hold many segments. */
#define SPACING (256u << 10)
#define MiB (1u << 20)
#define BIG_CACHE (256ull << 20)

/* ---- decode counters (link wraps) --------------------------------------- */

static atomic_uint_least64_t dec_new, dec_read, dec_skip;

/* A gate for the decodes of marked threads: a gated thread's reads wait
 * while it is closed (with its decode in progress, listed as busy), and a
 * watched thread's decoder starts and reads are counted apart. */
static _Thread_local bool gated, watched;
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_closed;        /* protected by gate_lock */
static unsigned gate_waiting;   /* protected by gate_lock: gated threads held */
static uint64_t watched_new, watched_read; /* protected by gate_lock */

int __real_dfx_reader_new(struct dfx_index *ix, uint64_t off, struct dfx_reader **out);
int64_t __real_dfx_reader_read(struct dfx_reader *r, void *buf, size_t len);
int __real_dfx_reader_skip(struct dfx_reader *r, uint64_t n);

int __wrap_dfx_reader_new(struct dfx_index *ix, uint64_t off, struct dfx_reader **out)
{
    int ret = __real_dfx_reader_new(ix, off, out);

    if (ret == 0)
        atomic_fetch_add(&dec_new, 1);
    if (watched) {
        pthread_mutex_lock(&gate_lock);
        watched_new++;
        pthread_cond_broadcast(&gate_cond);
        pthread_mutex_unlock(&gate_lock);
    }
    return ret;
}

int64_t __wrap_dfx_reader_read(struct dfx_reader *r, void *buf, size_t len)
{
    int64_t n;

    if (gated || watched) {
        pthread_mutex_lock(&gate_lock);
        if (watched)
            watched_read += len;
        gate_waiting += gated;
        pthread_cond_broadcast(&gate_cond);
        while (gated && gate_closed)
            pthread_cond_wait(&gate_cond, &gate_lock);
        gate_waiting -= gated;
        pthread_mutex_unlock(&gate_lock);
    }
    n = __real_dfx_reader_read(r, buf, len);
    if (n > 0)
        atomic_fetch_add(&dec_read, (uint64_t)n);
    return n;
}

int __wrap_dfx_reader_skip(struct dfx_reader *r, uint64_t n)
{
    int ret = __real_dfx_reader_skip(r, n);

    if (ret == 0)
        atomic_fetch_add(&dec_skip, n);
    return ret;
}

struct counts {
    uint64_t new, read, skip;
};

static struct counts counts_now(void)
{
    struct counts c = {atomic_load(&dec_new), atomic_load(&dec_read), atomic_load(&dec_skip)};
    return c;
}

static struct counts counts_since(struct counts before)
{
    struct counts c = counts_now();

    c.new -= before.new;
    c.read -= before.read;
    c.skip -= before.skip;
    return c;
}

/* ---- the archive ---------------------------------------------------------- */

enum { M_TINY, M_ONE, M_MANY, M_BIG, M_RAND, M_STORED, M_EMPTY, M_COUNT };

static char *dir;                    /* temporary directory */
static char *zpath;                  /* dir/a.npz */
static struct ft_member zm[M_COUNT]; /* its members */
static unsigned char *zdata[M_COUNT];

static void make_archive(void)
{
    static const struct {
        const char *name;
        size_t len;
        bool compressible;
        int method, level;
        size_t flush;
    } spec[M_COUNT] = {
        [M_TINY] = {"tiny.npy", 100, true, 8, 6, 0},
        [M_ONE] = {"one.npy", FS_CHUNK_SIZE, true, 8, 6, 0},
        [M_MANY] = {"dir/many.npy", 3 * MiB + 1234, true, 8, 6, 512 << 10},
        [M_BIG] = {"big.npy", 24 * MiB, true, 8, 1, MiB},
        [M_RAND] = {"rand.npy", 8 * MiB + 5, false, 8, 1, 0},
        [M_STORED] = {"stored.npy", 3 * MiB + 77, false, 0, 0, 0},
        [M_EMPTY] = {"empty.npy", 0, true, 8, 6, 0},
    };

    for (int i = 0; i < M_COUNT; i++) {
        zdata[i] = ft_data(spec[i].len, spec[i].compressible, 100 + (uint64_t)i);
        zm[i] = (struct ft_member){.name = spec[i].name, .data = zdata[i], .len = spec[i].len,
                                   .method = spec[i].method, .level = spec[i].level,
                                   .flush_every = spec[i].flush};
    }
    zpath = ft_path(dir, "a.npz");
    if (ft_write_zip(zpath, zm, M_COUNT) < 0) {
        perror(zpath);
        exit(2);
    }
}

/* The calls that open an archive, in one place (their signatures will
 * change with the byte-source interface). */
static struct archive *open_archive(const char *path)
{
    struct archive *a = NULL;
    int ret = archive_open(path, SPACING, NULL, &a);

    CHECK_EQ(ret, 0);
    return ret == 0 ? a : NULL;
}

static struct cache *new_cache(uint64_t capacity)
{
    struct cache *c = NULL;

    if (cache_new(capacity, FS_CHUNK_SIZE, &c) < 0) {
        fprintf(stderr, "cache_new failed\n");
        exit(2);
    }
    return c;
}

static uint64_t nchunks(const struct archive_member *m)
{
    return (m->size + CH - 1) / CH;
}

/* Is chunk k of m in the cache (without decoding it)? */
static bool cached(struct cache *c, struct archive_member *m, uint64_t k)
{
    struct cache_chunk *ch = cache_get(c, m->id, k);

    cache_put(c, ch);
    return ch != NULL;
}

/* Read all of m sequentially in reads of random sizes (1 byte to three
 * chunks), checking every byte; returns the count of wrong or failed reads. */
static int read_all_sequential(struct archive *a, struct archive_member *m, struct cache *c,
                               const unsigned char *want, uint64_t seed)
{
    unsigned char *buf = malloc(3 * CH);
    uint64_t off = 0, s = seed;
    int bad = 0;

    while (off < m->size) {
        size_t len = 1 + (size_t)(ft_rand(&s) % (3 * CH));

        if (len > m->size - off)
            len = (size_t)(m->size - off);
        if (ft_read_deflate(a, m, c, off, len, buf) < 0 || memcmp(buf, want + off, len))
            bad++;
        off += len;
    }
    free(buf);
    return bad;
}

/* ---- tests ---------------------------------------------------------------- */

/* The members as the zip directory describes them. */
static void test_open(void)
{
    struct archive *a = open_archive(zpath);

    if (!a)
        return;
    CHECK_EQ(a->kind, ARCHIVE_ZIP);
    CHECK_EQ(a->count, M_COUNT);
    for (int i = 0; i < M_COUNT && (size_t)i < a->count; i++) {
        struct archive_member *m = &a->members[i];

        CHECK(strcmp(m->name, zm[i].name) == 0);
        CHECK_EQ(m->size, zm[i].len);
        CHECK_EQ(m->stored_size, zm[i].csize);
        CHECK_EQ(m->kind, zm[i].method == 8 ? ARCHIVE_DEFLATE : ARCHIVE_STORED);
        CHECK(strcmp(m->method, zm[i].method == 8 ? "deflate" : "stored") == 0);
        CHECK(m->archive == a);
        CHECK(atomic_load(&m->crcs) == NULL); /* nothing decoded at open */
        if (m->kind == ARCHIVE_STORED)
            CHECK_EQ(m->data_offset, zm[i].data_offset);
        else
            CHECK(m->ix != NULL && dfx_index_points(m->ix) == 1);
    }
    CHECK_EQ(archive_check(a), 0);
    archive_close(a);
}

/* Chunks at the edges: a member smaller than a chunk, exactly one chunk,
 * empty; chunk indexes past the end are refused. */
static void test_edges(void)
{
    struct archive *a = open_archive(zpath);
    struct cache *c = new_cache(BIG_CACHE);
    struct cache_chunk *ch = NULL;

    if (!a)
        return;
    CHECK_EQ(member_chunk(a, &a->members[M_TINY], c, 0, &ch), 0);
    CHECK(ch && ch->len == 100 && memcmp(ch->data, zdata[M_TINY], 100) == 0);
    cache_put(c, ch);
    CHECK_EQ(member_chunk(a, &a->members[M_TINY], c, 1, &ch), -EINVAL);
    CHECK(ch == NULL);
    CHECK_EQ(member_chunk(a, &a->members[M_ONE], c, 0, &ch), 0);
    CHECK(ch && ch->len == CH && memcmp(ch->data, zdata[M_ONE], CH) == 0);
    cache_put(c, ch);
    CHECK_EQ(member_chunk(a, &a->members[M_ONE], c, 1, &ch), -EINVAL);
    CHECK_EQ(a->members[M_EMPTY].size, 0);
    CHECK_EQ(member_chunk(a, &a->members[M_EMPTY], c, 0, &ch), -EINVAL);
    /* the last chunk of a member that does not end on a chunk boundary */
    {
        struct archive_member *m = &a->members[M_MANY];
        uint64_t last = nchunks(m) - 1;

        CHECK_EQ(member_chunk(a, m, c, last, &ch), 0);
        CHECK(ch && ch->len == m->size - last * CH &&
              memcmp(ch->data, zdata[M_MANY] + last * CH, ch->len) == 0);
        cache_put(c, ch);
    }
    cache_free(c);
    archive_close(a);
}

/* One sequential reader of an open file decodes the member once with one
 * decoder, parked between its reads; without an open handle nothing is
 * parked and every chunk starts a decoder of its own. */
static void test_sequential_parks(void)
{
    struct archive *a = open_archive(zpath);
    struct cache *c = new_cache(BIG_CACHE);
    unsigned parked0 = parked_count();
    struct archive_member *m;
    struct counts before, d;
    unsigned char *buf;

    if (!a)
        return;
    m = &a->members[M_MANY];
    member_opened(m);
    before = counts_now();
    buf = malloc(m->size);
    CHECK_EQ(ft_read_deflate(a, m, c, 0, (size_t)(m->size / 2), buf), 0);
    CHECK_EQ(parked_count(), parked0 + 1); /* parked between reads */
    CHECK_EQ(ft_read_deflate(a, m, c, m->size / 2, (size_t)(m->size - m->size / 2),
                             buf + m->size / 2), 0);
    CHECK(memcmp(buf, zdata[M_MANY], m->size) == 0);
    d = counts_since(before);
    CHECK_EQ(d.new, 1);
    CHECK_EQ(d.read, m->size);
    CHECK_EQ(d.skip, 0);
    CHECK_EQ(parked_count(), parked0); /* at the end: not parked */
    member_closed(m);

    /* The same over a closed file, on a fresh archive (no index yet). */
    archive_close(a);
    cache_free(c);
    a = open_archive(zpath);
    c = new_cache(BIG_CACHE);
    if (!a) {
        free(buf);
        cache_free(c);
        return;
    }
    m = &a->members[M_MANY];
    before = counts_now();
    memset(buf, 0, m->size);
    for (uint64_t k = 0; k < nchunks(m); k++) {
        CHECK_EQ(ft_read_deflate(a, m, c, k * CH, k == nchunks(m) - 1 ? m->size - k * CH : CH,
                                 buf + k * CH), 0);
        CHECK_EQ(parked_count(), parked0);
    }
    CHECK(memcmp(buf, zdata[M_MANY], m->size) == 0);
    d = counts_since(before);
    CHECK_EQ(d.new, nchunks(m));

    /* Opened, a read in the middle parks its decoder; the last close frees it. */
    member_opened(m);
    member_opened(m);
    cache_free(c);
    c = new_cache(BIG_CACHE);
    CHECK_EQ(ft_read_deflate(a, m, c, 5 * CH, 10, buf), 0);
    CHECK_EQ(parked_count(), parked0 + 1);
    member_closed(m);
    CHECK_EQ(parked_count(), parked0 + 1);
    member_closed(m);
    CHECK_EQ(parked_count(), parked0);
    free(buf);
    cache_free(c);
    archive_close(a);
}

struct reader {
    pthread_t t;
    struct archive *a;
    struct archive_member *m;
    struct cache *c;
    const unsigned char *want;
    struct ft_barrier *bar;
    struct ft_barrier *start; /* range readers: a barrier before the first read */
    uint64_t seed;
    uint64_t from, to;  /* chunks [from, to) for range readers */
    unsigned rounds;    /* random readers: reads */
    int bad;            /* wrong bytes or unexpected errors */
    int eio;            /* reads that failed with EIO */
};

static void *seq_reader(void *arg)
{
    struct reader *r = arg;

    if (r->bar)
        ft_barrier_wait(r->bar);
    r->bad += read_all_sequential(r->a, r->m, r->c, r->want, r->seed);
    return NULL;
}

static void *random_reader(void *arg)
{
    struct reader *r = arg;
    unsigned char *buf = malloc(4 * CH);
    uint64_t s = r->seed;

    if (r->bar)
        ft_barrier_wait(r->bar);
    for (unsigned i = 0; i < r->rounds; i++) {
        uint64_t off = ft_rand(&s) % r->m->size;
        size_t len = 1 + (size_t)(ft_rand(&s) % (4 * CH));

        if (len > r->m->size - off)
            len = (size_t)(r->m->size - off);
        if (ft_read_deflate(r->a, r->m, r->c, off, len, buf) < 0 ||
            memcmp(buf, r->want + off, len))
            r->bad++;
    }
    free(buf);
    return NULL;
}

/* Chunks [from, to), sequentially in reads of one chunk: after the start
 * barrier (if any), and with the barrier (if any) after the first one. */
static void *range_reader(void *arg)
{
    struct reader *r = arg;
    struct cache_chunk *ch;

    if (r->start)
        ft_barrier_wait(r->start);
    for (uint64_t k = r->from; k < r->to; k++) {
        if (member_chunk(r->a, r->m, r->c, k, &ch) < 0) {
            r->bad++;
        } else {
            uint64_t len = r->m->size - k * CH < CH ? r->m->size - k * CH : CH;
            if (ch->len != len || memcmp(ch->data, r->want + k * CH, len))
                r->bad++;
            cache_put(r->c, ch);
        }
        if (k == r->from && r->bar)
            ft_barrier_wait(r->bar);
    }
    return NULL;
}

static void run(struct reader *r, size_t n, void *(*fn)(void *))
{
    for (size_t i = 0; i < n; i++)
        if (pthread_create(&r[i].t, NULL, fn, &r[i]) != 0) {
            perror("pthread_create");
            exit(2);
        }
}

static void join(struct reader *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pthread_join(r[i].t, NULL);
}

#define NSEQ 6

/* Several sequential readers of one member on its first pass (no index yet,
 * every chunk past the frontier): one decoder in all, every byte decoded
 * once; the readers take turns with it (a parked decoder, or a decode in
 * progress they wait for) and get the rest from the cache. Then, on the
 * complete index, readers of disjoint ranges each start one decoder and
 * decode each chunk once, and readers of one chunk decode it once. */
static void test_sequential_readers(void)
{
    struct archive *a = open_archive(zpath);
    struct cache *c = new_cache(BIG_CACHE);
    struct reader r[NSEQ];
    struct ft_barrier bar;
    struct archive_member *m;
    struct counts before, d, one;
    int bad = 0;

    if (!a)
        return;
    m = &a->members[M_BIG];
    member_opened(m);
    ft_barrier_init(&bar, NSEQ);
    memset(r, 0, sizeof(r));
    for (int i = 0; i < NSEQ; i++)
        r[i] = (struct reader){.a = a, .m = m, .c = c, .want = zdata[M_BIG], .bar = &bar,
                               .seed = 1000 + (uint64_t)i};
    before = counts_now();
    run(r, NSEQ, seq_reader);
    join(r, NSEQ);
    for (int i = 0; i < NSEQ; i++)
        bad += r[i].bad;
    CHECK_EQ(bad, 0);
    d = counts_since(before);
    CHECK_EQ(d.new, 1);
    CHECK_EQ(d.read, m->size);
    CHECK_EQ(d.skip, 0);
    CHECK(dfx_index_total(m->ix) == m->size); /* the index is complete now */
    CHECK(dfx_index_points(m->ix) > m->size / SPACING / 2);
    ft_barrier_destroy(&bar);

    /* Disjoint ranges on the complete index: each reader's first chunk
     * (all at once), then the rest. Each starts one decoder at the point
     * before its range and keeps it; no chunk is decoded twice. */
    cache_free(c);
    c = new_cache(BIG_CACHE);
    ft_barrier_init(&bar, 4);
    memset(r, 0, sizeof(r));
    for (int i = 0; i < 4; i++)
        r[i] = (struct reader){.a = a, .m = m, .c = c, .want = zdata[M_BIG], .bar = &bar,
                               .from = nchunks(m) * (uint64_t)i / 4,
                               .to = nchunks(m) * (uint64_t)(i + 1) / 4};
    before = counts_now();
    run(r, 4, range_reader);
    join(r, 4);
    bad = 0;
    for (int i = 0; i < 4; i++)
        bad += r[i].bad;
    CHECK_EQ(bad, 0);
    d = counts_since(before);
    CHECK_EQ(d.new, 4);
    CHECK_EQ(d.read, m->size);
    ft_barrier_destroy(&bar);
    member_closed(m); /* frees the parked decoders */

    /* Readers of one chunk: the decode one of them makes, once. */
    for (uint64_t k = 7; k < nchunks(m); k += 61) {
        struct cache *c1 = new_cache(BIG_CACHE);
        struct cache_chunk *ch;

        before = counts_now();
        CHECK_EQ(member_chunk(a, m, c1, k, &ch), 0);
        cache_put(c1, ch);
        one = counts_since(before);
        cache_free(c1);
        CHECK_EQ(one.new, 1);

        cache_free(c);
        c = new_cache(BIG_CACHE);
        ft_barrier_init(&bar, NSEQ);
        memset(r, 0, sizeof(r));
        for (int i = 0; i < NSEQ; i++)
            r[i] = (struct reader){.a = a, .m = m, .c = c, .want = zdata[M_BIG], .start = &bar,
                                   .from = k, .to = k + 1};
        before = counts_now();
        run(r, NSEQ, range_reader);
        join(r, NSEQ);
        bad = 0;
        for (int i = 0; i < NSEQ; i++)
            bad += r[i].bad;
        CHECK_EQ(bad, 0);
        d = counts_since(before);
        CHECK_EQ(d.new, one.new);
        CHECK_EQ(d.read, one.read);
        CHECK_EQ(d.skip, one.skip);
        ft_barrier_destroy(&bar);
    }
    cache_free(c);
    archive_close(a);
}

/* Random and sequential readers together on a first pass, through a cache
 * that holds a fraction of the member (chunks are evicted and decoded
 * again), on compressible and incompressible data. */
static void test_mixed_readers(void)
{
    static const int which[] = {M_BIG, M_RAND};

    for (size_t w = 0; w < sizeof(which) / sizeof(which[0]); w++) {
        struct archive *a = open_archive(zpath);
        struct cache *c = new_cache(6 * MiB);
        struct reader r[6];
        struct ft_barrier bar;
        int bad = 0;

        if (!a)
            return;
        member_opened(&a->members[which[w]]);
        ft_barrier_init(&bar, 6);
        for (int i = 0; i < 6; i++)
            r[i] = (struct reader){.a = a, .m = &a->members[which[w]], .c = c,
                                   .want = zdata[which[w]], .bar = &bar,
                                   .seed = 77 + (uint64_t)i * 13, .rounds = 60};
        run(r, 2, seq_reader);
        run(r + 2, 4, random_reader);
        join(r, 6);
        for (int i = 0; i < 6; i++)
            bad += r[i].bad;
        CHECK_EQ(bad, 0);
        member_closed(&a->members[which[w]]);
        ft_barrier_destroy(&bar);
        cache_free(c);
        archive_close(a);
    }
}

/* The segments between access points of a complete index: [first, last]
 * chunks each, starting at point pts[i]. Returns the count. */
static size_t segments(struct archive_member *m, uint64_t *pts, uint64_t *first, uint64_t *last,
                       size_t max)
{
    size_t n = dfx_index_points_from(m->ix, 0, pts, max), k = 0;

    for (size_t i = 0; i < n; i++) {
        uint64_t f = (pts[i] + CH - 1) / CH;
        uint64_t l = i + 1 < n ? (pts[i + 1] + CH - 1) / CH - 1 : nchunks(m) - 1;

        if (f > l)
            continue;
        pts[k] = pts[i];
        first[k] = f;
        last[k] = l;
        k++;
    }
    return k;
}

struct producer {
    pthread_t t;
    struct archive *a;
    struct archive_member *m;
    struct cache *c;
    const uint64_t *pts, *first, *last;
    size_t n, id, step;
    int errors;
};

static void *producer(void *arg)
{
    struct producer *p = arg;

    /* its share of the segments, from the end backwards */
    for (size_t i = p->n; i-- > 0;)
        if (i % p->step == p->id &&
            member_produce(p->a, p->m, p->c, p->pts[i], p->first[i], p->last[i]) != 0)
            p->errors++;
    return NULL;
}

#define MAXSEG 256

/* member_produce(): whole segments into the cache, alone and racing
 * with readers of the same chunks; bad arguments refused. */
static void test_produce(void)
{
    static uint64_t pts[MAXSEG], first[MAXSEG], last[MAXSEG];
    struct archive *a = open_archive(zpath);
    struct cache *c = new_cache(BIG_CACHE);
    struct producer p[3];
    struct reader r[3];
    struct archive_member *m;
    struct counts before, d;
    size_t n;
    int bad = 0, errors = 0;

    if (!a)
        return;
    m = &a->members[M_BIG];
    /* a complete index first */
    CHECK_EQ(read_all_sequential(a, m, c, zdata[M_BIG], 5), 0);
    cache_free(c);
    c = new_cache(BIG_CACHE);
    n = segments(m, pts, first, last, MAXSEG);
    CHECK(n > 8);
    if (n < 8) {
        cache_free(c);
        archive_close(a);
        return;
    }
    /* one segment: its chunks are then cached, and reading them decodes nothing */
    CHECK_EQ(member_produce(a, m, c, pts[3], first[3], last[3]), 0);
    for (uint64_t k = first[3]; k <= last[3]; k++)
        CHECK(cached(c, m, k));
    CHECK(!cached(c, m, first[3] - 1));
    CHECK(!cached(c, m, last[3] + 1));
    before = counts_now();
    {
        unsigned char *buf = malloc((last[3] - first[3] + 1) * CH);
        size_t len = (size_t)((last[3] - first[3] + 1) * CH);

        CHECK_EQ(ft_read_deflate(a, m, c, first[3] * CH, len, buf), 0);
        CHECK(memcmp(buf, zdata[M_BIG] + first[3] * CH, len) == 0);
        free(buf);
    }
    d = counts_since(before);
    CHECK_EQ(d.new + d.read + d.skip, 0);
    /* again: everything cached, nothing to do */
    before = counts_now();
    CHECK_EQ(member_produce(a, m, c, pts[3], first[3], last[3]), 0);
    d = counts_since(before);
    CHECK_EQ(d.new, 0);
    /* refused: a chunk past the end, a point after the first chunk, an
     * offset that is no access point */
    CHECK_EQ(member_produce(a, m, c, pts[n - 1], first[n - 1], nchunks(m)), -EINVAL);
    CHECK_EQ(member_produce(a, m, c, pts[5], first[4], last[4]), -EINVAL);
    if (pts[4] % CH) /* a point that is not a chunk start: one byte before it is no point */
        CHECK_EQ(member_produce(a, m, c, pts[4] - 1, first[4], last[4]), -EINVAL);

    /* producers of every segment racing with readers */
    cache_free(c);
    c = new_cache(BIG_CACHE);
    for (size_t i = 0; i < 3; i++)
        p[i] = (struct producer){.a = a, .m = m, .c = c, .pts = pts, .first = first,
                                 .last = last, .n = n, .id = i, .step = 3};
    for (int i = 0; i < 3; i++)
        r[i] = (struct reader){.a = a, .m = m, .c = c, .want = zdata[M_BIG],
                               .seed = 500 + (uint64_t)i, .rounds = 80};
    member_opened(m);
    for (int i = 0; i < 3; i++)
        pthread_create(&p[i].t, NULL, producer, &p[i]);
    run(r, 1, seq_reader);
    run(r + 1, 2, random_reader);
    for (int i = 0; i < 3; i++)
        pthread_join(p[i].t, NULL);
    join(r, 3);
    for (int i = 0; i < 3; i++) {
        bad += r[i].bad;
        errors += p[i].errors;
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(errors, 0);
    /* every chunk is in the cache now: a last pass decodes nothing */
    before = counts_now();
    CHECK_EQ(read_all_sequential(a, m, c, zdata[M_BIG], 9), 0);
    d = counts_since(before);
    CHECK_EQ(d.new + d.read + d.skip, 0);
    member_closed(m);
    cache_free(c);
    archive_close(a);
}

/* more() for member_continue(): go on through chunk *stop_at. */
static bool more_until(void *arg, uint64_t next, uint64_t *last)
{
    const uint64_t *stop_at = arg;

    if (next > *stop_at)
        return false;
    *last = *stop_at;
    return true;
}

struct continuer {
    pthread_t t;
    struct archive *a;
    struct archive_member *m;
    struct cache *c;
    atomic_uint_least64_t *reader_at; /* the reader's next chunk */
    atomic_bool *done;
    int errors;
    unsigned calls;
};

static void *continuer(void *arg)
{
    struct continuer *w = arg;
    uint64_t n = nchunks(w->m);

    while (!atomic_load(w->done)) {
        uint64_t k = atomic_load(w->reader_at);
        uint64_t l = k + 8 < n ? k + 8 : n - 1;

        if (k < n && member_continue(w->a, w->m, w->c, k, l, NULL, NULL) != 0)
            w->errors++;
        w->calls++;
        sched_yield();
    }
    return NULL;
}

/* member_continue(): the parked decoder of a sequential reader goes on
 * ahead of it, parks where it stops, and raced with the reader decodes every
 * chunk once with that one decoder. */
static void test_continue(void)
{
    struct archive *a = open_archive(zpath);
    struct cache *c = new_cache(BIG_CACHE);
    unsigned parked0 = parked_count();
    struct archive_member *m;
    struct counts before, d;
    unsigned char *buf;
    uint64_t stop_at = 14;

    if (!a)
        return;
    m = &a->members[M_MANY];
    buf = malloc(m->size);
    member_opened(m);
    CHECK_EQ(ft_read_deflate(a, m, c, 0, 5 * CH, buf), 0); /* parks at chunk 5 */
    CHECK_EQ(parked_count(), parked0 + 1);
    before = counts_now();
    CHECK_EQ(member_continue(a, m, c, 5, 9, NULL, NULL), 0);
    for (uint64_t k = 5; k <= 9; k++)
        CHECK(cached(c, m, k));
    CHECK(!cached(c, m, 10));
    CHECK_EQ(parked_count(), parked0 + 1); /* parked again, at chunk 10 */
    /* raised by more(): through chunk 14 */
    CHECK_EQ(member_continue(a, m, c, 10, 11, more_until, &stop_at), 0);
    for (uint64_t k = 10; k <= 14; k++)
        CHECK(cached(c, m, k));
    CHECK(!cached(c, m, 15));
    /* no decoder parked in the range: nothing done */
    CHECK_EQ(member_continue(a, m, c, 20, 22, NULL, NULL), 0);
    CHECK(!cached(c, m, 20));
    d = counts_since(before);
    CHECK_EQ(d.new, 0);
    CHECK_EQ(d.read, 10 * CH);
    /* the reader goes on from the decoder parked at chunk 15 */
    before = counts_now();
    CHECK_EQ(ft_read_deflate(a, m, c, 5 * CH, (size_t)(m->size - 5 * CH), buf + 5 * CH), 0);
    CHECK(memcmp(buf, zdata[M_MANY], m->size) == 0);
    d = counts_since(before);
    CHECK_EQ(d.new, 0);
    CHECK_EQ(d.read, m->size - 15 * CH);
    CHECK_EQ(member_continue(a, m, c, 3, 2, NULL, NULL), -EINVAL);
    CHECK_EQ(member_continue(a, m, c, 3, nchunks(m), NULL, NULL), -EINVAL);
    member_closed(m);
    free(buf);
    cache_free(c);
    archive_close(a);

    /* raced: a worker keeps continuing the reader's decoder ahead of it */
    a = open_archive(zpath);
    c = new_cache(BIG_CACHE);
    if (!a) {
        cache_free(c);
        return;
    }
    {
        atomic_uint_least64_t at = 0;
        atomic_bool done = false;
        struct continuer w = {.a = a, .m = &a->members[M_BIG], .c = c, .reader_at = &at,
                              .done = &done};
        struct cache_chunk *ch;
        int bad = 0;

        m = &a->members[M_BIG];
        member_opened(m);
        before = counts_now();
        pthread_create(&w.t, NULL, continuer, &w);
        for (uint64_t k = 0; k < nchunks(m); k++) {
            atomic_store(&at, k + 1);
            if (member_chunk(a, m, c, k, &ch) < 0) {
                bad++;
                continue;
            }
            if (memcmp(ch->data, zdata[M_BIG] + k * CH, ch->len))
                bad++;
            cache_put(c, ch);
        }
        atomic_store(&done, true);
        pthread_join(w.t, NULL);
        d = counts_since(before);
        CHECK_EQ(bad, 0);
        CHECK_EQ(w.errors, 0);
        CHECK_EQ(d.new, 1);
        CHECK_EQ(d.read, m->size);
        member_closed(m);
    }
    cache_free(c);
    archive_close(a);
}

enum op { OP_CHUNK, OP_PRODUCE, OP_CONTINUE, OP_WAIT };

/* One call of fs/ in a thread of its own, gated or watched. */
struct call {
    pthread_t t;
    bool gated, watched;
    enum op op;
    struct archive *a;
    struct archive_member *m;
    struct cache *c;
    uint64_t point, first, last; /* OP_CHUNK: chunk first */
    const unsigned char *want;
    int ret;
    bool right; /* OP_CHUNK: the bytes were the member's */
};

static void *call_main(void *arg)
{
    struct call *k = arg;
    struct cache_chunk *ch;

    gated = k->gated;
    watched = k->watched;
    switch (k->op) {
    case OP_CHUNK:
        k->ret = member_chunk(k->a, k->m, k->c, k->first, &ch);
        if (k->ret == 0) {
            k->right = memcmp(ch->data, k->want + k->first * CH, ch->len) == 0;
            cache_put(k->c, ch);
        }
        break;
    case OP_PRODUCE:
        k->ret = member_produce(k->a, k->m, k->c, k->point, k->first, k->last);
        break;
    case OP_CONTINUE:
        k->ret = member_continue(k->a, k->m, k->c, k->first, k->last, NULL, NULL);
        break;
    case OP_WAIT: /* ret: 1 if chunk first was cached on return */
        member_wait_decoded(k->m, k->c, k->first);
        ch = cache_lookup(k->c, k->m->id, k->first);
        k->ret = ch != NULL;
        cache_put(k->c, ch);
        break;
    }
    return NULL;
}

static void gate_close(void)
{
    pthread_mutex_lock(&gate_lock);
    gate_closed = true;
    watched_new = watched_read = 0;
    pthread_mutex_unlock(&gate_lock);
}

static void gate_open(void)
{
    pthread_mutex_lock(&gate_lock);
    gate_closed = false;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
}

/* Wait until a gated thread is held at the gate (deadline: a hang). */
static bool gate_holds_one(void)
{
    struct timespec end;
    bool ok;

    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_sec += 60;
    pthread_mutex_lock(&gate_lock);
    while (!(ok = gate_waiting > 0))
        if (pthread_cond_timedwait(&gate_cond, &gate_lock, &end) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&gate_lock);
    return ok;
}

/* Give the watched threads a moment to start decoding, which they must not
 * do while the gated decode runs: with correct code they wait for it and
 * the moment runs out (the time bounds only how soon a wrong decode would
 * show, never the outcome of a correct run). */
static void let_watched_run(void)
{
    struct timespec end;

    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_nsec += 200 * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&gate_lock);
    while (watched_new == 0 && watched_read == 0)
        if (pthread_cond_timedwait(&gate_cond, &gate_lock, &end) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&gate_lock);
}

static void start(struct call *k)
{
    if (pthread_create(&k->t, NULL, call_main, k) != 0)
        exit(2);
}

/* Readers that need a chunk being decoded wait for that decode instead of
 * starting their own: a readahead worker's segment (member_produce()),
 * a continued decoder (member_continue(): also the chunk just after its
 * range, whose decoder it then parks for the reader), and another reader's
 * decode of the chunk before (whose parked decoder the reader then takes).
 * The decode in progress is held at a gate while the readers arrive. */
static void test_readers_wait_for_decodes(void)
{
    static uint64_t pts[MAXSEG], first[MAXSEG], last[MAXSEG];
    struct archive *a = open_archive(zpath);
    struct cache *c = new_cache(BIG_CACHE);
    struct call w, r1, r2;
    struct archive_member *m;
    size_t n;

    if (!a) {
        cache_free(c);
        return;
    }
    m = &a->members[M_MANY];
    member_opened(m);

    /* another reader's decode: chunk 0 held, chunk 1 wanted */
    gate_close();
    w = (struct call){.gated = true, .op = OP_CHUNK, .a = a, .m = m, .c = c, .first = 0,
                      .want = zdata[M_MANY]};
    r1 = (struct call){.watched = true, .op = OP_CHUNK, .a = a, .m = m, .c = c, .first = 1,
                       .want = zdata[M_MANY]};
    start(&w);
    CHECK(gate_holds_one());
    start(&r1);
    let_watched_run();
    CHECK_EQ(watched_new + watched_read, 0);
    gate_open();
    pthread_join(w.t, NULL);
    pthread_join(r1.t, NULL);
    CHECK(w.ret == 0 && w.right && r1.ret == 0 && r1.right);
    CHECK_EQ(watched_new, 0); /* it took the parked decoder */
    CHECK_EQ(watched_read, CH);

    /* a continued decoder: chunks 2-5 held at chunk 2; chunks 4 and 6 wanted */
    gate_close();
    w = (struct call){.gated = true, .op = OP_CONTINUE, .a = a, .m = m, .c = c, .first = 2,
                      .last = 5};
    r1 = (struct call){.watched = true, .op = OP_CHUNK, .a = a, .m = m, .c = c, .first = 4,
                       .want = zdata[M_MANY]};
    r2 = (struct call){.watched = true, .op = OP_CHUNK, .a = a, .m = m, .c = c, .first = 6,
                       .want = zdata[M_MANY]};
    start(&w);
    CHECK(gate_holds_one());
    start(&r1);
    start(&r2);
    let_watched_run();
    CHECK_EQ(watched_new + watched_read, 0);
    gate_open();
    pthread_join(w.t, NULL);
    pthread_join(r1.t, NULL);
    pthread_join(r2.t, NULL);
    CHECK_EQ(w.ret, 0);
    CHECK(r1.ret == 0 && r1.right && r2.ret == 0 && r2.right);
    CHECK_EQ(watched_new, 0);
    CHECK_EQ(watched_read, CH); /* chunk 6 only, with the decoder parked at its start */
    member_closed(m);

    /* a readahead segment: held at its first chunk; its last chunk wanted */
    CHECK_EQ(read_all_sequential(a, m, c, zdata[M_MANY], 3), 0); /* complete index */
    cache_free(c);
    c = new_cache(BIG_CACHE);
    n = segments(m, pts, first, last, MAXSEG);
    CHECK(n > 4 && last[3] > first[3]);
    if (n > 4) {
        gate_close();
        w = (struct call){.gated = true, .op = OP_PRODUCE, .a = a, .m = m, .c = c,
                          .point = pts[3], .first = first[3], .last = last[3]};
        r1 = (struct call){.watched = true, .op = OP_CHUNK, .a = a, .m = m, .c = c,
                           .first = last[3], .want = zdata[M_MANY]};
        start(&w);
        CHECK(gate_holds_one());
        start(&r1);
        let_watched_run();
        CHECK_EQ(watched_new + watched_read, 0);
        gate_open();
        pthread_join(w.t, NULL);
        pthread_join(r1.t, NULL);
        CHECK_EQ(w.ret, 0);
        CHECK(r1.ret == 0 && r1.right);
        CHECK_EQ(watched_new + watched_read, 0); /* served from the cache */
    }
    cache_free(c);
    archive_close(a);
}

/* member_wait_decoded(): a read of several chunks waits once, for the
 * last, when a decode in progress will make it, and finds the chunk cached
 * on return, without decoding anything itself; with no decode that will
 * make the chunk it returns at once (the caller then decodes). */
static void test_wait_decoded(void)
{
    struct archive *a = open_archive(zpath);
    struct cache *c = new_cache(BIG_CACHE);
    struct call w, r1;
    struct archive_member *m;
    struct cache_chunk *ch;

    if (!a) {
        cache_free(c);
        return;
    }
    m = &a->members[M_MANY];
    member_opened(m);

    /* nothing decodes: back at once, nothing cached */
    member_wait_decoded(m, c, 5);
    CHECK(cache_lookup(c, m->id, 5) == NULL);

    /* a continued decoder over chunks 0-5, held at chunk 0: chunk 5 wanted */
    CHECK_EQ(member_chunk(a, m, c, 0, &ch), 0); /* parks a decoder after chunk 0 */
    cache_put(c, ch);
    gate_close();
    w = (struct call){.gated = true, .op = OP_CONTINUE, .a = a, .m = m, .c = c, .first = 1,
                      .last = 5};
    r1 = (struct call){.watched = true, .op = OP_WAIT, .a = a, .m = m, .c = c, .first = 5};
    start(&w);
    CHECK(gate_holds_one());
    start(&r1);
    let_watched_run();
    CHECK_EQ(watched_new + watched_read, 0);
    CHECK(cache_lookup(c, m->id, 5) == NULL);
    gate_open();
    pthread_join(w.t, NULL);
    pthread_join(r1.t, NULL);
    CHECK_EQ(w.ret, 0);
    CHECK_EQ(r1.ret, 1); /* it returned with chunk 5 in */
    CHECK_EQ(watched_new + watched_read, 0);

    /* past the decode's range: back at once */
    member_wait_decoded(m, c, 9);
    CHECK(cache_lookup(c, m->id, 9) == NULL);
    member_closed(m);
    cache_free(c);
    archive_close(a);
}

/* A copy of the test archive, with byte `at` of member d's deflate data
 * changed by f, written as dir/name (returned, to free). */
static char *damaged_copy(const char *name, const struct ft_member *d, uint64_t at,
                          unsigned char (*f)(unsigned char))
{
    size_t len;
    unsigned char *p = ft_read_file(zpath, &len);
    char *out = ft_path(dir, name);

    if (!p || d->data_offset + at >= len) {
        fprintf(stderr, "damaged_copy: cannot\n");
        exit(2);
    }
    p[d->data_offset + at] = f(p[d->data_offset + at]);
    if (ft_write_file(out, p, len) < 0) {
        perror(out);
        exit(2);
    }
    free(p);
    return out;
}

static unsigned char invalid_block(unsigned char b)
{
    return b | 0x06; /* BTYPE 11: reserved, "invalid block type" */
}

static unsigned char flip(unsigned char b)
{
    return b ^ 0x10;
}

struct shuffler {
    pthread_t t;
    struct archive *a;
    struct archive_member *m;
    struct cache *c;
    const unsigned char *want;
    struct ft_barrier *bar;
    uint64_t seed;
    int wrong;      /* bytes served that are not the member's */
    int other;      /* failures other than EIO */
    int eio;
};

/* Every chunk of the member once, in a random order. */
static void *shuffled_reader(void *arg)
{
    struct shuffler *s = arg;
    uint64_t n = nchunks(s->m), seed = s->seed;
    uint64_t *order = malloc(n * sizeof(*order));

    for (uint64_t i = 0; i < n; i++)
        order[i] = i;
    for (uint64_t i = n - 1; i > 0; i--) {
        uint64_t j = ft_rand(&seed) % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    ft_barrier_wait(s->bar);
    for (uint64_t i = 0; i < n; i++) {
        struct cache_chunk *ch;
        int ret = member_chunk(s->a, s->m, s->c, order[i], &ch);

        if (ret == -EIO) {
            s->eio++;
        } else if (ret < 0) {
            s->other++;
        } else {
            if (memcmp(ch->data, s->want + order[i] * CH, ch->len))
                s->wrong++;
            cache_put(s->c, ch);
        }
    }
    free(order);
    return NULL;
}

/* Read every chunk of m from 4 threads in random orders: *wrong gets the
 * chunks served with bytes that are not the member's, *other the failures
 * other than EIO (both must be 0), *eio the reads that failed with EIO. */
static void read_shuffled(struct archive *a, struct archive_member *m, struct cache *c,
                          const unsigned char *want, int *wrong, int *other, int *eio)
{
    struct shuffler s[4];
    struct ft_barrier bar;

    ft_barrier_init(&bar, 4);
    *wrong = *other = *eio = 0;
    for (int i = 0; i < 4; i++) {
        s[i] = (struct shuffler){.a = a, .m = m, .c = c, .want = want, .bar = &bar,
                                 .seed = 31 + (uint64_t)i};
        pthread_create(&s[i].t, NULL, shuffled_reader, &s[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(s[i].t, NULL);
        *wrong += s[i].wrong;
        *other += s[i].other;
        *eio += s[i].eio;
    }
    ft_barrier_destroy(&bar);
}

/* Damage that deflate detects: a block that starts at a known output offset
 * (after a full flush) given the reserved block type. Every read before it
 * is served, every read from its chunk on fails with EIO, in any order from
 * any thread, and the damage is logged once. */
static void test_damage(void)
{
    const struct ft_member *z = &zm[M_BIG];
    const struct ft_flush *fl = &z->flush[5]; /* output 6 MiB: chunk 48 */
    char *path = damaged_copy("damaged.npz", z, fl->in, invalid_block);
    struct archive *a = open_archive(path);
    struct cache *c = new_cache(BIG_CACHE);
    uint64_t bad_chunk = fl->out / CH, bad_from;
    int wrong, other, eio;
    struct archive_member *m;

    CHECK_EQ(fl->out, 6 * MiB);
    if (!a)
        goto out;
    m = &a->members[M_BIG];
    ft_log_clear();
    read_shuffled(a, m, c, zdata[M_BIG], &wrong, &other, &eio);
    CHECK_EQ(wrong, 0);
    CHECK_EQ(other, 0);
    CHECK_EQ(eio, 4 * (nchunks(m) - bad_chunk));
    CHECK_EQ(archive_damage(m, &bad_from), -EIO);
    CHECK(bad_from > (bad_chunk - 1) * CH && bad_from <= fl->out);
    CHECK(ft_log_has("damaged.npz: member 'big.npy' is damaged: bad deflate data"));
    CHECK_EQ(ft_log_lines(), 1);
    /* and again, single-threaded, through a fresh cache */
    cache_free(c);
    c = new_cache(BIG_CACHE);
    for (uint64_t k = 0; k < nchunks(m); k++) {
        struct cache_chunk *ch;
        int ret = member_chunk(a, m, c, k, &ch);

        CHECK_EQ(ret, k < bad_chunk ? 0 : -EIO);
        if (ret == 0) {
            CHECK(memcmp(ch->data, zdata[M_BIG] + k * CH, ch->len) == 0);
            cache_put(c, ch);
        }
    }
    /* the other members of the archive are not touched */
    CHECK_EQ(archive_damage(&a->members[M_MANY], &bad_from), 0);
    archive_close(a);
out:
    cache_free(c);
    unlink(path);
    free(path);
}

/* A chunk CRC table from the original data, and one byte flipped inside a
 * Huffman-coded block of the archive: the decoder may turn it into wrong
 * bytes without any deflate error, which the table catches. Every read is
 * the right bytes or EIO; everything before the damaged block is served;
 * once a chunk failed, every later one fails too. */
static void test_crc_table_mismatch(void)
{
    const struct ft_member *z = &zm[M_BIG];
    const struct ft_flush *fl = &z->flush[9]; /* block starting at 10 MiB */
    uint64_t at = fl->in + (z->flush[10].in - fl->in) / 2;
    char *path = damaged_copy("flipped.npz", z, at, flip);
    struct archive *a = open_archive(path);
    struct cache *c = new_cache(BIG_CACHE);
    struct dfx_crcs *t = NULL;
    int wrong, other, eio;
    struct archive_member *m;
    uint64_t first_bad = UINT64_MAX;

    if (!a)
        goto out;
    m = &a->members[M_BIG];
    CHECK_EQ(dfx_crcs_new(m->size, FS_CHUNK_SIZE, &t), 0);
    dfx_crcs_feed(t, 0, zdata[M_BIG], m->size);
    CHECK(archive_set_crcs(m, t));
    CHECK(atomic_load(&m->crcs) == t);
    /* a second table is refused (and freed) */
    {
        struct dfx_crcs *t2 = NULL;

        CHECK_EQ(dfx_crcs_new(m->size, FS_CHUNK_SIZE, &t2), 0);
        CHECK(!archive_set_crcs(m, t2));
        CHECK(atomic_load(&m->crcs) == t);
    }
    ft_log_clear();
    read_shuffled(a, m, c, zdata[M_BIG], &wrong, &other, &eio);
    CHECK_EQ(wrong, 0);
    CHECK_EQ(other, 0);
    CHECK(eio > 0);
    cache_free(c);
    c = new_cache(BIG_CACHE);
    for (uint64_t k = 0; k < nchunks(m); k++) {
        struct cache_chunk *ch;
        int ret = member_chunk(a, m, c, k, &ch);

        if (ret == 0) {
            CHECK(memcmp(ch->data, zdata[M_BIG] + k * CH, ch->len) == 0);
            CHECK(first_bad == UINT64_MAX); /* nothing served after a failure */
            cache_put(c, ch);
        } else {
            CHECK_EQ(ret, -EIO);
            if (first_bad == UINT64_MAX)
                first_bad = k;
        }
    }
    CHECK(first_bad >= fl->out / CH && first_bad < nchunks(m));
    CHECK(ft_log_has("flipped.npz: member 'big.npy' is damaged: "));
    CHECK_EQ(ft_log_lines(), 1);
    archive_close(a);
out:
    cache_free(c);
    unlink(path);
    free(path);
}

/* A table that disagrees with intact content (as if the archive had been
 * rewritten with its mtime restored after the table was built): the chunk
 * that differs fails when it is decoded, the ones before it are served, and
 * from then on chunks after it fail even where they are cached (here in a
 * second cache, filled before the table was published). */
static void test_crc_table_rewritten(void)
{
    struct archive *a = open_archive(zpath);
    struct cache *c = new_cache(BIG_CACHE), *old = new_cache(BIG_CACHE);
    struct dfx_crcs *t = NULL;
    struct archive_member *m;
    unsigned char *other;
    struct cache_chunk *ch;

    if (!a) {
        cache_free(c);
        cache_free(old);
        return;
    }
    m = &a->members[M_MANY];
    other = malloc(m->size);
    memcpy(other, zdata[M_MANY], m->size);
    other[12 * CH + 99] ^= 1;
    CHECK_EQ(dfx_crcs_new(m->size, FS_CHUNK_SIZE, &t), 0);
    dfx_crcs_feed(t, 0, other, m->size);
    /* chunks 0-16 cached before the table exists */
    CHECK_EQ(member_chunk(a, m, old, 16, &ch), 0);
    cache_put(old, ch);
    CHECK(cached(old, m, 15));
    CHECK(archive_set_crcs(m, t));
    ft_log_clear();
    for (uint64_t k = 0; k < 12; k++) {
        CHECK_EQ(member_chunk(a, m, c, k, &ch), 0);
        CHECK(ch && memcmp(ch->data, zdata[M_MANY] + k * CH, CH) == 0);
        cache_put(c, ch);
    }
    CHECK_EQ(member_chunk(a, m, c, 12, &ch), -EIO);
    CHECK_EQ(member_chunk(a, m, old, 16, &ch), -EIO); /* cached, but condemned */
    CHECK_EQ(member_chunk(a, m, old, 12, &ch), -EIO);
    CHECK_EQ(member_chunk(a, m, c, 20, &ch), -EIO);
    CHECK_EQ(member_chunk(a, m, old, 11, &ch), 0); /* before: still served */
    cache_put(old, ch);
    CHECK_EQ(atomic_load(&m->bad_chunk), 13);
    CHECK(ft_log_has("is damaged: CRC-32 mismatch of chunk"));
    /* a table that does not fit the member is refused */
    {
        struct archive_member *m2 = &a->members[M_BIG];
        struct dfx_crcs *t2 = NULL;

        CHECK_EQ(dfx_crcs_new(m2->size - 1, FS_CHUNK_SIZE, &t2), 0);
        CHECK(!archive_set_crcs(m2, t2));
        CHECK(atomic_load(&m2->crcs) == NULL);
    }
    free(other);
    cache_free(c);
    cache_free(old);
    archive_close(a);
}

struct changer {
    pthread_t t;
    struct archive *a;
    struct cache *c;
    const unsigned char *want_d, *want_s;
    atomic_bool *stop;
    unsigned long ok, eio;
    int wrong, other;
    uint64_t seed;
};

/* Random reads of the deflate member (0) and the stored one (1) until told
 * to stop; every success must be the content at open. */
static void *change_reader(void *arg)
{
    struct changer *w = arg;
    unsigned char *buf = malloc(2 * CH);
    uint64_t s = w->seed;

    while (!atomic_load(w->stop)) {
        int which = (int)(ft_rand(&s) & 1);
        struct archive_member *m = &w->a->members[which];
        uint64_t off = ft_rand(&s) % m->size;
        size_t len = 1 + (size_t)(ft_rand(&s) % (2 * CH));
        int ret;

        if (len > m->size - off)
            len = (size_t)(m->size - off);
        ret = which == 0 ? ft_read_deflate(w->a, m, w->c, off, len, buf)
                         : ft_read_stored(w->a, m, off, len, buf);
        if (ret == -EIO) {
            w->eio++;
        } else if (ret < 0) {
            w->other++;
        } else {
            w->ok++;
            if (memcmp(buf, (which == 0 ? w->want_d : w->want_s) + off, len))
                w->wrong++;
        }
    }
    free(buf);
    return NULL;
}

/* The archive rewritten in place (same size, same layout, other bytes) while
 * readers run: no read ever returns a byte of the new content; once the
 * change is seen every read fails with EIO, cached chunks included. The
 * deflate member is stored-block deflate (level 0), so that the new bytes
 * would decode cleanly: only the change check can stop them. A renamed-over
 * or deleted archive is no change: its old file goes on being served. */
static void test_changed(void)
{
    size_t n = 2 * MiB + 333;
    unsigned char *d_old = ft_data(n, false, 1), *d_new = ft_data(n, false, 2);
    unsigned char *s_old = ft_data(n, false, 3), *s_new = ft_data(n, false, 4);
    struct ft_member m_old[2] = {{.name = "d.npy", .data = d_old, .len = n, .method = 8},
                                 {.name = "s.npy", .data = s_old, .len = n, .method = 0}};
    struct ft_member m_new[2] = {{.name = "d.npy", .data = d_new, .len = n, .method = 8},
                                 {.name = "s.npy", .data = s_new, .len = n, .method = 0}};
    char *p_old = ft_path(dir, "chg.npz"), *p_new = ft_path(dir, "chg-new.npz");
    struct cache *c = new_cache(BIG_CACHE);
    struct archive *a;
    struct changer w[3];
    atomic_bool stop = false;
    unsigned char *newbytes, buf[64];
    size_t newlen;
    struct stat st;
    int fd;

    /* stored blocks: the same compressed length for any data */
    m_old[0].level = m_new[0].level = FT_STORED_BLOCKS;
    if (ft_write_zip(p_old, m_old, 2) < 0 || ft_write_zip(p_new, m_new, 2) < 0)
        exit(2);
    newbytes = ft_read_file(p_new, &newlen);
    CHECK_EQ(m_old[0].csize, m_new[0].csize);
    a = open_archive(p_old);
    if (!a || !newbytes || stat(p_old, &st) < 0 || (size_t)st.st_size != newlen)
        goto out;
    for (int i = 0; i < 3; i++) {
        w[i] = (struct changer){.a = a, .c = c, .want_d = d_old, .want_s = s_old, .stop = &stop,
                                .seed = 900 + (uint64_t)i};
        pthread_create(&w[i].t, NULL, change_reader, &w[i]);
    }
    /* let the readers cache some chunks, then rewrite the file in place */
    for (int i = 0; i < 5; i++) {
        CHECK_EQ(ft_read_deflate(a, &a->members[0], c, (uint64_t)i * CH, 10, buf), 0);
        CHECK(memcmp(buf, d_old + i * CH, 10) == 0);
    }
    ft_log_clear();
    fd = open(p_old, O_WRONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    if (fd >= 0) {
        struct timespec ts[2] = {st.st_atim, st.st_mtim};

        CHECK_EQ(pwrite(fd, newbytes, newlen, 0), (ssize_t)newlen);
        ts[1].tv_sec += 1; /* an mtime the check cannot miss, whatever the clock's grain */
        CHECK_EQ(futimens(fd, ts), 0);
        close(fd);
    }
    /* a stored read sees the change at once; then everything fails */
    CHECK_EQ(ft_read_stored(a, &a->members[1], 0, 10, buf), -EIO);
    CHECK(atomic_load(&a->changed));
    CHECK_EQ(archive_check(a), -EIO);
    CHECK_EQ(ft_read_deflate(a, &a->members[0], c, 0, 10, buf), -EIO); /* was cached */
    CHECK_EQ(ft_read_deflate(a, &a->members[0], c, n - 10, 10, buf), -EIO);
    CHECK_EQ(member_peek(a, &a->members[0], buf, sizeof(buf)), -EIO);
    CHECK_EQ(member_peek(a, &a->members[1], buf, sizeof(buf)), -EIO);
    atomic_store(&stop, true);
    for (int i = 0; i < 3; i++) {
        pthread_join(w[i].t, NULL);
        CHECK_EQ(w[i].wrong, 0);
        CHECK_EQ(w[i].other, 0);
    }
    CHECK(ft_log_has("the archive changed"));
    archive_close(a);

    /* Replaced by a rename, or deleted: the open file is still the old one,
     * served as it was. A chmod is a change of its status: a change. */
    for (int how = 0; how < 3; how++) {
        if (ft_write_zip(p_old, m_old, 2) < 0 || ft_write_zip(p_new, m_new, 2) < 0)
            exit(2);
        a = open_archive(p_old);
        if (!a)
            goto out;
        cache_free(c);
        c = new_cache(BIG_CACHE);
        if (how == 0)
            CHECK_EQ(rename(p_new, p_old), 0);
        else if (how == 1)
            CHECK_EQ(unlink(p_old), 0);
        else
            CHECK_EQ(chmod(p_old, 0600), 0);
        CHECK_EQ(archive_check(a), how == 2 ? -EIO : 0);
        CHECK_EQ(ft_read_deflate(a, &a->members[0], c, 3 * CH, 64, buf), how == 2 ? -EIO : 0);
        CHECK(how == 2 || memcmp(buf, d_old + 3 * CH, 64) == 0);
        CHECK_EQ(ft_read_stored(a, &a->members[1], 5 * CH, 64, buf), how == 2 ? -EIO : 0);
        CHECK(how == 2 || memcmp(buf, s_old + 5 * CH, 64) == 0);
        CHECK_EQ(archive_check(a), how == 2 ? -EIO : 0);
        CHECK_EQ(atomic_load(&a->changed), how == 2);
        archive_close(a);
    }
out:
    ft_members_free(m_old, 2);
    ft_members_free(m_new, 2);
    cache_free(c);
    free(newbytes);
    unlink(p_old);
    unlink(p_new);
    free(p_old);
    free(p_new);
    free(d_old);
    free(d_new);
    free(s_old);
    free(s_new);
}

struct stored_reader {
    pthread_t t;
    struct archive *a;
    struct archive_member *m;
    uint64_t seed;
    int bad;
};

static void *stored_reader(void *arg)
{
    struct stored_reader *s = arg;
    unsigned char *buf = malloc(3 * CH);
    uint64_t seed = s->seed;

    for (int i = 0; i < 200; i++) {
        uint64_t off = ft_rand(&seed) % s->m->size;
        size_t len = 1 + (size_t)(ft_rand(&seed) % (3 * CH));

        if (len > s->m->size - off)
            len = (size_t)(s->m->size - off);
        if (ft_read_stored(s->a, s->m, off, len, buf) < 0 ||
            memcmp(buf, zdata[M_STORED] + off, len))
            s->bad++;
    }
    free(buf);
    return NULL;
}

/* Stored members: reads at any offset and length (clamped at the end),
 * with and without a chunk CRC table, from several threads; the CRC-32
 * check; a damaged stored member; a table that disagrees fails only the
 * reads that touch its chunk. */
static void test_stored(void)
{
    struct archive *a = open_archive(zpath);
    struct stored_reader s[4];
    struct archive_member *m;
    unsigned char *out, buf[300];
    size_t at;
    int bad = 0;

    if (!a)
        return;
    m = &a->members[M_STORED];
    CHECK_EQ(member_read_stored(a, m, m->size, 10, &out, &at), 0);
    CHECK(out == NULL);
    CHECK_EQ(member_read_stored(a, m, m->size - 5, 10, &out, &at), 5);
    CHECK(out && memcmp(out + at, zdata[M_STORED] + m->size - 5, 5) == 0);
    free(out);
    CHECK_EQ(ft_read_stored(a, m, CH - 150, 300, buf), 0);
    CHECK(memcmp(buf, zdata[M_STORED] + CH - 150, 300) == 0);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 4; i++) {
            s[i] = (struct stored_reader){.a = a, .m = m, .seed = 40 + (uint64_t)(i + 4 * round)};
            pthread_create(&s[i].t, NULL, stored_reader, &s[i]);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(s[i].t, NULL);
            bad += s[i].bad;
        }
        CHECK_EQ(bad, 0);
        if (round == 0) {
            /* the full pass: checks the CRC-32, publishes the table */
            CHECK(!atomic_load(&m->verified));
            CHECK_EQ(member_scan_stored(a, m, NULL), 0);
            CHECK(atomic_load(&m->verified));
            CHECK(atomic_load(&m->crcs) != NULL);
            CHECK_EQ(member_verify_stored(a, m), 0);
            /* with a table, the whole chunks are read: the bytes start at *at */
            CHECK_EQ(member_read_stored(a, m, CH + 10, 20, &out, &at), 20);
            CHECK_EQ(at, 10);
            CHECK(out && memcmp(out + at, zdata[M_STORED] + CH + 10, 20) == 0);
            free(out);
        }
    }
    archive_close(a);

    /* a table that disagrees with chunk 5 only */
    a = open_archive(zpath);
    if (a) {
        struct dfx_crcs *t = NULL;
        unsigned char *other = malloc(a->members[M_STORED].size);

        m = &a->members[M_STORED];
        memcpy(other, zdata[M_STORED], m->size);
        other[5 * CH + 7] ^= 0x80;
        CHECK_EQ(dfx_crcs_new(m->size, FS_CHUNK_SIZE, &t), 0);
        dfx_crcs_feed(t, 0, other, m->size);
        CHECK(archive_set_crcs(m, t));
        CHECK(atomic_load(&m->verified)); /* a table vouches for the CRC-32 */
        ft_log_clear();
        CHECK_EQ(ft_read_stored(a, m, 5 * CH - 10, 20, buf), -EIO);
        CHECK_EQ(ft_read_stored(a, m, 5 * CH + 100, 20, buf), -EIO);
        CHECK_EQ(ft_read_stored(a, m, 5 * CH - 30, 20, buf), 0);
        CHECK(memcmp(buf, zdata[M_STORED] + 5 * CH - 30, 20) == 0);
        CHECK_EQ(ft_read_stored(a, m, 6 * CH, 20, buf), 0);
        CHECK(memcmp(buf, zdata[M_STORED] + 6 * CH, 20) == 0);
        CHECK(ft_log_has("is damaged: CRC-32 mismatch of chunk"));
        free(other);
        archive_close(a);
    }

    /* a byte of the stored data damaged in the file: its CRC-32 check fails */
    {
        size_t len;
        unsigned char *p = ft_read_file(zpath, &len);
        char *path = ft_path(dir, "stored-bad.npz");
        uint64_t bad_from;

        p[zm[M_STORED].data_offset + 2 * CH + 5] ^= 1;
        CHECK_EQ(ft_write_file(path, p, len), 0);
        free(p);
        a = open_archive(path);
        if (a) {
            m = &a->members[M_STORED];
            ft_log_clear();
            CHECK_EQ(archive_damage(m, &bad_from), 0);
            CHECK_EQ(member_verify_stored(a, m), -EIO);
            CHECK_EQ(archive_damage(m, &bad_from), -EIO);
            CHECK_EQ(member_verify_stored(a, m), -EIO);
            CHECK(atomic_load(&m->crcs) == NULL);
            CHECK(ft_log_has("CRC-32 mismatch"));
            archive_close(a);
        }
        unlink(path);
        free(path);
    }
}

/* member_peek(): the first bytes of stored and deflate members, clamped
 * to the member's size. */
static void test_peek(void)
{
    struct archive *a = open_archive(zpath);
    unsigned char buf[4096];

    if (!a)
        return;
    CHECK_EQ(member_peek(a, &a->members[M_BIG], buf, sizeof(buf)), (int64_t)sizeof(buf));
    CHECK(memcmp(buf, zdata[M_BIG], sizeof(buf)) == 0);
    CHECK_EQ(member_peek(a, &a->members[M_STORED], buf, 1000), 1000);
    CHECK(memcmp(buf, zdata[M_STORED], 1000) == 0);
    CHECK_EQ(member_peek(a, &a->members[M_TINY], buf, sizeof(buf)), 100);
    CHECK(memcmp(buf, zdata[M_TINY], 100) == 0);
    CHECK_EQ(member_peek(a, &a->members[M_EMPTY], buf, sizeof(buf)), 0);
    archive_close(a);
}

/* gzip files: one member holding a .npy (sized from its header: no pass at
 * open, the index grows as it is read), several members (sized by a full
 * pass at open, which builds the index and the chunk CRC table), and
 * content that is not a .npy. Read from several threads, byte for byte. */
static void test_gzip(void)
{
    size_t n1, n2, n3;
    unsigned char *npy = ft_npy(5 * MiB + 3, true, 11, &n1);
    unsigned char *part2 = ft_data(n2 = 2 * MiB + 17, false, 12);
    unsigned char *text = ft_data(n3 = 3 * MiB, true, 13);
    const unsigned char *one[1] = {npy}, *multi[3] = {npy, part2, text}, *plain[1] = {text};
    size_t l_one[1] = {n1}, l_multi[3] = {n1, n2, n3}, l_plain[1] = {n3};
    unsigned char *all = malloc(n1 + n2 + n3);
    char *p1 = ft_path(dir, "one.npy.gz"), *p2 = ft_path(dir, "multi.npy.gz");
    char *p3 = ft_path(dir, "plain.gz");
    struct {
        const char *path, *name;
        const unsigned char *want;
        size_t len;
        bool sized_by_pass;
    } cases[3] = {
        {p1, "one.npy", npy, n1, false},
        {p2, "multi.npy", all, n1 + n2 + n3, true},
        {p3, "plain", text, n3, true},
    };

    memcpy(all, npy, n1);
    memcpy(all + n1, part2, n2);
    memcpy(all + n1 + n2, text, n3);
    if (ft_write_gzip(p1, one, l_one, 1) < 0 || ft_write_gzip(p2, multi, l_multi, 3) < 0 ||
        ft_write_gzip(p3, plain, l_plain, 1) < 0)
        exit(2);
    for (int i = 0; i < 3; i++) {
        struct archive *a = open_archive(cases[i].path);
        struct cache *c = new_cache(BIG_CACHE);
        struct reader r[4];
        unsigned char head[200];
        struct archive_member *m;
        int bad = 0;

        if (!a) {
            cache_free(c);
            continue;
        }
        m = &a->members[0];
        CHECK_EQ(a->kind, ARCHIVE_GZIP);
        CHECK_EQ(a->count, 1);
        CHECK(strcmp(m->name, cases[i].name) == 0);
        CHECK(strcmp(m->method, "gzip") == 0);
        CHECK_EQ(m->kind, ARCHIVE_DEFLATE);
        CHECK_EQ(m->size, cases[i].len);
        CHECK_EQ(atomic_load(&m->crcs) != NULL, cases[i].sized_by_pass);
        CHECK_EQ(dfx_index_total(m->ix) == m->size, cases[i].sized_by_pass);
        CHECK_EQ(member_peek(a, m, head, sizeof(head)), (int64_t)sizeof(head));
        CHECK(memcmp(head, cases[i].want, sizeof(head)) == 0);
        member_opened(m);
        for (int k = 0; k < 4; k++)
            r[k] = (struct reader){.a = a, .m = m, .c = c, .want = cases[i].want,
                                   .seed = 60 + (uint64_t)k, .rounds = 40};
        run(r, 2, seq_reader);
        run(r + 2, 2, random_reader);
        join(r, 4);
        for (int k = 0; k < 4; k++)
            bad += r[k].bad;
        CHECK_EQ(bad, 0);
        member_closed(m);
        cache_free(c);
        archive_close(a);
    }
    unlink(p1);
    unlink(p2);
    unlink(p3);
    free(p1);
    free(p2);
    free(p3);
    free(npy);
    free(part2);
    free(text);
    free(all);
}

/* What an open costs is bounded: a gzip file sized by a full pass stops
 * with -E2BIG past max_ratio x its size (never below ARCHIVE_SIZING_FLOOR), or
 * -ECANCELED once the stop flag is raised; one sized from its .npy header
 * decodes nothing, whatever the limit. A FIFO is refused without being
 * opened (it would block). */
static void test_open_limits(void)
{
    size_t n1, n2 = 2 * MiB;
    unsigned char *npy = ft_npy(3 * MiB, true, 51, &n1), *more = ft_data(n2, true, 52);
    const unsigned char *two[2] = {npy, more}, *one[1] = {npy};
    size_t l_two[2] = {n1, n2}, l_one[1] = {n1};
    char *p2 = ft_path(dir, "limits2.npy.gz"), *p1 = ft_path(dir, "limits1.npy.gz");
    char *fifo = ft_path(dir, "fifo.npz");
    atomic_bool stop = false;
    struct archive_limits tight = {.max_ratio = 1}, roomy = {.max_ratio = 1000, .stop = &stop};
    struct archive *a = NULL;
    struct stat st;

    if (ft_write_gzip(p2, two, l_two, 2) < 0 || ft_write_gzip(p1, one, l_one, 1) < 0 ||
        mkfifo(fifo, 0644) < 0)
        exit(2);
    CHECK_EQ(stat(p2, &st), 0);
    CHECK(n1 + n2 > ARCHIVE_SIZING_FLOOR && n1 + n2 > (uint64_t)st.st_size);
    CHECK_EQ(archive_open(p2, SPACING, &tight, &a), -E2BIG);
    CHECK(a == NULL);
    CHECK_EQ(archive_open(p2, SPACING, &roomy, &a), 0);
    CHECK(a && a->members[0].size == n1 + n2);
    archive_close(a);
    atomic_store(&stop, true);
    CHECK_EQ(archive_open(p2, SPACING, &roomy, &a), -ECANCELED);
    CHECK(a == NULL);
    CHECK_EQ(archive_open(p1, SPACING, &tight, &a), 0); /* sized from the header */
    CHECK(a && a->members[0].size == n1);
    archive_close(a);
    CHECK_EQ(archive_open(fifo, SPACING, NULL, &a), -ENODEV);
    unlink(p1);
    unlink(p2);
    unlink(fifo);
    free(p1);
    free(p2);
    free(fifo);
    free(npy);
    free(more);
}

int main(void)
{
    ft_log_capture();
    dir = ft_tempdir("test_fs_member");
    make_archive();

    test_open();
    test_edges();
    test_sequential_parks();
    test_sequential_readers();
    test_mixed_readers();
    test_produce();
    test_continue();
    test_readers_wait_for_decodes();
    test_wait_decoded();
    test_damage();
    test_crc_table_mismatch();
    test_crc_table_rewritten();
    test_changed();
    test_stored();
    test_peek();
    test_gzip();
    test_open_limits();

    CHECK_EQ(parked_count(), 0); /* every member closed: nothing parked */
    ft_members_free(zm, M_COUNT);
    for (int i = 0; i < M_COUNT; i++)
        free(zdata[i]);
    unlink(zpath);
    free(zpath);
    ft_rmtree(dir);
    free(dir);
    return check_exit("test_fs_member");
}
