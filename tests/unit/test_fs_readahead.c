/*
 * Unit tests for the readahead scheduler (readahead.c) without a mount:
 * a real archive written here, a real cache and member, and the worker pool
 * (readahead_new(), readahead_note_read(), readahead_free()) fed the reads a FUSE
 * READ handler would note.
 *
 * What the workers are asked to do is recorded by wrapping the two calls
 * they make into member.c, member_produce() and member_continue()
 * (-Wl,--wrap, see CMakeLists.txt); the wrap can also hold the workers at a
 * gate, to stop the pool with work queued. Nothing waits for a time: a test
 * waits for an event (with a generous deadline that only a hang reaches).
 */
#define _GNU_SOURCE
#include "archive.h"
#include "check.h"
#include "fs.h"
#include "fstest.h"
#include "member.h"
#include "mount.h"
#include "readahead.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CH ((uint64_t)FS_CHUNK_SIZE)
#define SPACING (256u << 10)
#define MiB (1u << 20)
/* Documented in readahead.c: jobs in flight per worker thread; a
 * reader has at most ahead_bytes() queued ahead of it: two segments of at
 * most SEGMENT_MAX (plus one chunk each) per worker, at most a quarter of
 * the cache; a segment spans access points at least that shared among the
 * jobs apart, from 1 MiB to SEGMENT_MAX (so 2 MiB with the 2 workers and
 * the 64 MiB cache of test_sequential()), and at most half of it. */
#define JOBS_PER_THREAD 2
#define SEGMENT_MAX (2 * MiB)
#define SEGMENT SEGMENT_MAX

static uint64_t ahead_chunks(uint64_t cache_size, unsigned threads)
{
    uint64_t want = (uint64_t)threads * JOBS_PER_THREAD *
                    ((SPACING > SEGMENT_MAX ? SPACING : SEGMENT_MAX) + CH);
    uint64_t cap = cache_size / 4;

    return (want < cap ? want : cap) / CH;
}

/* ---- what the workers are asked (link wraps) -------------------------- */

struct call {
    const struct archive_member *m;
    uint64_t first, last; /* last: the furthest it was raised to (continue) */
    bool over;            /* it began, or was raised, further than bound_ahead chunks
                           * past the reader's last noted chunk at that moment */
    bool pipelined;
    int ret;
    bool done;
};

#define MAXCALLS 4096

static pthread_mutex_t rec_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t rec_cond = PTHREAD_COND_INITIALIZER; /* a call began or ended, the gate */
static struct call calls[MAXCALLS]; /* protected by rec_lock */
static size_t ncalls;               /* protected by rec_lock */
static bool gate_closed;            /* protected by rec_lock: workers wait at the gate */
static unsigned at_gate;            /* protected by rec_lock: workers that reached it */
/* the last chunk the test's single reader noted (set before it notes it) */
static atomic_uint_least64_t reader_last;
/* how far ahead of it work may go, in chunks (0: not checked) */
static atomic_uint_least64_t bound_ahead;

static bool too_far(uint64_t last)
{
    uint64_t b = atomic_load(&bound_ahead);

    return b && last > atomic_load(&reader_last) + b;
}

static size_t rec_begin(const struct archive_member *m, uint64_t first, uint64_t last,
                        bool pipelined)
{
    size_t i;

    pthread_mutex_lock(&rec_lock);
    at_gate++;
    pthread_cond_broadcast(&rec_cond);
    while (gate_closed)
        pthread_cond_wait(&rec_cond, &rec_lock);
    i = ncalls < MAXCALLS ? ncalls++ : MAXCALLS - 1;
    calls[i] = (struct call){.m = m, .first = first, .last = last, .pipelined = pipelined,
                             .over = too_far(last)};
    pthread_mutex_unlock(&rec_lock);
    return i;
}

static void rec_end(size_t i, int ret)
{
    pthread_mutex_lock(&rec_lock);
    calls[i].ret = ret;
    calls[i].done = true;
    pthread_cond_broadcast(&rec_cond);
    pthread_mutex_unlock(&rec_lock);
}

int __real_member_produce(struct archive *a, struct archive_member *m, struct cache *c,
                             uint64_t point, uint64_t first, uint64_t last);
int __real_member_continue(struct archive *a, struct archive_member *m, struct cache *c,
                              uint64_t first, uint64_t last,
                              bool (*more)(void *arg, uint64_t next, uint64_t *last), void *arg);

int __wrap_member_produce(struct archive *a, struct archive_member *m, struct cache *c,
                             uint64_t point, uint64_t first, uint64_t last)
{
    size_t i = rec_begin(m, first, last, false);
    int ret = __real_member_produce(a, m, c, point, first, last);

    rec_end(i, ret);
    return ret;
}

struct more_shim {
    bool (*more)(void *arg, uint64_t next, uint64_t *last);
    void *arg;
    size_t i;
};

static bool more_shim(void *arg, uint64_t next, uint64_t *last)
{
    struct more_shim *s = arg;
    bool go = s->more(s->arg, next, last);

    pthread_mutex_lock(&rec_lock);
    if (go && *last > calls[s->i].last)
        calls[s->i].last = *last;
    if (go && too_far(*last))
        calls[s->i].over = true;
    pthread_mutex_unlock(&rec_lock);
    return go;
}

int __wrap_member_continue(struct archive *a, struct archive_member *m, struct cache *c,
                              uint64_t first, uint64_t last,
                              bool (*more)(void *arg, uint64_t next, uint64_t *last), void *arg)
{
    struct more_shim s = {more, arg, rec_begin(m, first, last, true)};
    int ret = __real_member_continue(a, m, c, first, last, more ? more_shim : NULL, &s);

    rec_end(s.i, ret);
    return ret;
}

static void rec_reset(void)
{
    pthread_mutex_lock(&rec_lock);
    ncalls = 0;
    at_gate = 0;
    pthread_mutex_unlock(&rec_lock);
}

static void gate(bool closed)
{
    pthread_mutex_lock(&rec_lock);
    gate_closed = closed;
    pthread_cond_broadcast(&rec_cond);
    pthread_mutex_unlock(&rec_lock);
}

/* Wait (at most a deadline only a hang reaches) until cond(arg) holds, with
 * rec_lock held while it is evaluated. Returns whether it held. */
static bool wait_for(bool (*cond)(void *arg), void *arg)
{
    struct timespec end;
    bool ok;

    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_sec += 60;
    pthread_mutex_lock(&rec_lock);
    while (!(ok = cond(arg)))
        if (pthread_cond_timedwait(&rec_cond, &rec_lock, &end) == ETIMEDOUT) {
            ok = cond(arg);
            break;
        }
    pthread_mutex_unlock(&rec_lock);
    return ok;
}

/* Conditions for wait_for(), rec_lock held. */
static bool some_call_done_for(void *m)
{
    for (size_t i = 0; i < ncalls; i++)
        if (calls[i].m == m && calls[i].done)
            return true;
    return false;
}

static bool all_calls_done(void *unused)
{
    (void)unused;
    for (size_t i = 0; i < ncalls; i++)
        if (!calls[i].done)
            return false;
    return true;
}

static bool one_at_gate(void *unused)
{
    (void)unused;
    return at_gate >= 1;
}

/* Calls for m so far (with rec_lock taken here). */
static size_t calls_for(const struct archive_member *m, bool pipelined)
{
    size_t n = 0;

    pthread_mutex_lock(&rec_lock);
    for (size_t i = 0; i < ncalls; i++)
        n += calls[i].m == m && calls[i].pipelined == pipelined;
    pthread_mutex_unlock(&rec_lock);
    return n;
}

/* Segments of m that span fewer chunks than points SEGMENT apart make
 * (SEGMENT / CH), other than the one that ends the member. */
static int short_segments(const struct archive_member *m)
{
    uint64_t end = (m->size + CH - 1) / CH - 1;
    int bad = 0;

    pthread_mutex_lock(&rec_lock);
    for (size_t i = 0; i < ncalls; i++) {
        if (calls[i].m == m && !calls[i].pipelined && calls[i].last != end &&
            calls[i].last - calls[i].first + 1 < SEGMENT / CH) {
            fprintf(stderr, "call %zu: chunks %llu-%llu: a short segment\n", i,
                    (unsigned long long)calls[i].first, (unsigned long long)calls[i].last);
            bad++;
        }
    }
    pthread_mutex_unlock(&rec_lock);
    return bad;
}

/* Wait until a call for m has ended, the produced chunks counted. */
static void settle_on(const struct archive_member *m)
{
    CHECK(wait_for(some_call_done_for, (void *)m));
}

/* ---- the archive, the cache, the pool --------------------------------- */

enum { M_A, M_B, M_STORED, M_COUNT };

static char *dir, *zpath;
static struct ft_member zm[M_COUNT];
static unsigned char *zdata[M_COUNT];

static void make_archive(void)
{
    static const size_t len[M_COUNT] = {[M_A] = 12 * MiB, [M_B] = 6 * MiB + 999,
                                        [M_STORED] = 2 * MiB};

    for (int i = 0; i < M_COUNT; i++) {
        zdata[i] = ft_data(len[i], i != M_STORED, 10 + (uint64_t)i);
        zm[i] = (struct ft_member){.name = i == M_A ? "a.npy" : i == M_B ? "b.npy" : "s.npy",
                                   .data = zdata[i], .len = len[i],
                                   .method = i == M_STORED ? 0 : 8, .level = 1};
    }
    zpath = ft_path(dir, "ra.npz");
    if (ft_write_zip(zpath, zm, M_COUNT) < 0) {
        perror(zpath);
        exit(2);
    }
}

static struct archive *open_archive(void)
{
    struct archive *a = NULL;

    CHECK_EQ(archive_open(zpath, SPACING, NULL, &a), 0);
    return a;
}

/* A context with what the pool uses: the cache and the options. */
static void ctx_init(struct mount_ctx *ctx, uint64_t cache_size, unsigned threads)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->opts.cache_size = cache_size;
    ctx->opts.spacing = SPACING;
    ctx->opts.threads = threads;
    if (cache_new(cache_size, FS_CHUNK_SIZE, &ctx->cache) < 0)
        exit(2);
}

static uint64_t nchunks(const struct archive_member *m)
{
    return (m->size + CH - 1) / CH;
}

static bool cached(struct cache *c, const struct archive_member *m, uint64_t k)
{
    struct cache_chunk *ch = cache_get(c, m->id, k);

    cache_put(c, ch);
    return ch != NULL;
}

/* Read all of m once (through a cache of its own) so its index is
 * complete: every segment between access points is known. */
static void complete_index(struct archive *a, struct archive_member *m)
{
    struct cache *c;
    unsigned char *buf = malloc(m->size);

    cache_new(64ull << 20, FS_CHUNK_SIZE, &c);
    CHECK_EQ(ft_read_deflate(a, m, c, 0, (size_t)m->size, buf), 0);
    CHECK(dfx_index_total(m->ix) == m->size);
    cache_free(c);
    free(buf);
}

/* Read chunk k of m as the READ handler does: note it, then get it. */
static int read_chunk(struct readahead *ra, struct archive *a, struct archive_member *m,
                      struct cache *c, uint64_t k, const unsigned char *want)
{
    struct cache_chunk *ch;
    int ret;

    atomic_store(&reader_last, k);
    readahead_note_read(ra, m, k, k);
    ret = member_chunk(a, m, c, k, &ch);
    if (ret < 0)
        return ret;
    if (memcmp(ch->data, want + k * CH, ch->len))
        ret = -ERANGE;
    cache_put(c, ch);
    return ret;
}

/* Calls for m that went further ahead of the reader than bound_ahead. */
static int out_of_bounds(const struct archive_member *m)
{
    int bad = 0;

    pthread_mutex_lock(&rec_lock);
    for (size_t i = 0; i < ncalls; i++) {
        if (calls[i].m == m && calls[i].over) {
            fprintf(stderr, "call %zu: chunks %llu-%llu: too far ahead\n", i,
                    (unsigned long long)calls[i].first, (unsigned long long)calls[i].last);
            bad++;
        }
    }
    pthread_mutex_unlock(&rec_lock);
    return bad;
}

/* ---- tests --------------------------------------------------------------- */

/* No pool without threads, or with a cache too small to hold a chunk ahead. */
static void test_no_pool(void)
{
    struct mount_ctx ctx;
    struct readahead *ra = (struct readahead *)1;

    ctx_init(&ctx, 64ull << 20, 0);
    CHECK_EQ(readahead_new(&ctx, 0, &ra), 0);
    CHECK(ra == NULL);
    cache_free(ctx.cache);
    ctx_init(&ctx, 3 * CH, 4); /* a quarter of it is less than a chunk */
    ra = (struct readahead *)1;
    CHECK_EQ(readahead_new(&ctx, 4, &ra), 0);
    CHECK(ra == NULL);
    readahead_note_read(NULL, NULL, 0, 0); /* accepted: no readahead */
    readahead_free(NULL);
    cache_free(ctx.cache);
}

/* A sequential reader on a complete index gets the segments after its read
 * decoded ahead of it: chunks appear in the cache before it asks (counted in
 * fs_counters.readahead_chunks), never further ahead than the documented
 * distance; every byte it reads is right. */
static void test_sequential(void)
{
    struct archive *a = open_archive();
    struct mount_ctx ctx;
    struct readahead *ra = NULL;
    struct archive_member *m;
    uint64_t before, ahead, k, prefetched = 0;
    int bad = 0;

    if (!a)
        return;
    m = &a->members[M_A];
    complete_index(a, m);
    ctx_init(&ctx, 64ull << 20, 2);
    ahead = ahead_chunks(ctx.opts.cache_size, 2);
    CHECK_EQ(ahead, 68); /* 2 threads x 2 segments x (2 MiB + 128 KiB): 8.5 MiB */
    CHECK_EQ(readahead_new(&ctx, 2, &ra), 0);
    CHECK(ra != NULL);
    if (!ra)
        goto out;
    rec_reset();
    atomic_store(&bound_ahead, ahead);
    member_opened(m);
    before = atomic_load(&fs_counters.readahead_chunks);
    /* two reads make a stream, the third is sequential: work is queued */
    for (k = 0; k < 2; k++)
        bad += read_chunk(ra, a, m, ctx.cache, k, zdata[M_A]) != 0;
    CHECK_EQ(calls_for(m, false) + calls_for(m, true), 0);
    bad += read_chunk(ra, a, m, ctx.cache, 2, zdata[M_A]) != 0;
    settle_on(m);
    CHECK(atomic_load(&fs_counters.readahead_chunks) > before);
    for (k = 3; k <= 2 + ahead; k++)
        prefetched += cached(ctx.cache, m, k);
    CHECK(prefetched > 0); /* in the cache before the reader asked */
    for (k = 3 + ahead; k < nchunks(m); k++)
        CHECK(!cached(ctx.cache, m, k)); /* nothing beyond the distance */
    /* the rest, sequentially */
    for (k = 3; k < nchunks(m); k++)
        bad += read_chunk(ra, a, m, ctx.cache, k, zdata[M_A]) != 0;
    CHECK_EQ(bad, 0);
    CHECK(wait_for(all_calls_done, NULL));
    readahead_free(ra);
    CHECK(calls_for(m, false) > 1);
    CHECK_EQ(calls_for(m, true), 0); /* a complete index has segments only */
    CHECK_EQ(out_of_bounds(m), 0);
    /* the spacing is an eighth of a segment: each spans eight points or so */
    CHECK_EQ(short_segments(m), 0);
    member_closed(m);
out:
    atomic_store(&bound_ahead, 0);
    cache_free(ctx.cache);
    archive_close(a);
}

/* Random reads, and reads of a stored member, queue nothing. With one
 * worker the queue is served in order: once a later sequential stream's
 * first job has run, anything queued before it would have run too. */
static void test_random_queues_nothing(void)
{
    struct archive *a = open_archive();
    struct mount_ctx ctx;
    struct readahead *ra = NULL;
    struct archive_member *m, *s, *sentinel;
    uint64_t seed = 99, recent[8];
    int bad = 0;

    if (!a)
        return;
    m = &a->members[M_A];
    s = &a->members[M_STORED];
    sentinel = &a->members[M_B];
    complete_index(a, m);
    complete_index(a, sentinel);
    ctx_init(&ctx, 64ull << 20, 1);
    CHECK_EQ(readahead_new(&ctx, 1, &ra), 0);
    if (!ra)
        goto out;
    rec_reset();
    /* chunks at random, none continuing any of the last 8 reads (the
     * streams a member tracks): each starts a stream of its own */
    for (int i = 0; i < 8; i++)
        recent[i] = UINT64_MAX - 8;
    for (int i = 0; i < 200; i++) {
        uint64_t k;
        bool near;

        do {
            k = ft_rand(&seed) % nchunks(m);
            near = false;
            for (int j = 0; j < 8; j++)
                near |= k >= recent[j] && k <= recent[j] + 2;
        } while (near);
        bad += read_chunk(ra, a, m, ctx.cache, k, zdata[M_A]) != 0;
        recent[i % 8] = k;
    }
    /* a stored member, sequentially: not for readahead */
    for (uint64_t k = 0; k < nchunks(s); k++)
        readahead_note_read(ra, s, k, k);
    /* the sentinel stream */
    for (uint64_t k = 0; k < 4; k++)
        bad += read_chunk(ra, a, sentinel, ctx.cache, k, zdata[M_B]) != 0;
    settle_on(sentinel);
    CHECK_EQ(bad, 0);
    CHECK_EQ(calls_for(m, false) + calls_for(m, true), 0);
    CHECK_EQ(calls_for(s, false) + calls_for(s, true), 0);
    /* (Not checked: whether the sentinel's job produced chunks itself. Its
     * reader may have decoded them first, which made this flaky under load.) */
    CHECK(calls_for(sentinel, false) > 0);
    readahead_free(ra);
out:
    cache_free(ctx.cache);
    archive_close(a);
}

/* A cache of 4 MiB: a quarter of it (1 MiB, 8 chunks) bounds how far ahead
 * of the reader work goes, however many threads would want more. */
static void test_bounded(void)
{
    struct archive *a = open_archive();
    struct mount_ctx ctx;
    struct readahead *ra = NULL;
    struct archive_member *m;
    uint64_t ahead;
    int bad = 0;

    if (!a)
        return;
    m = &a->members[M_A];
    complete_index(a, m);
    ctx_init(&ctx, 4 * MiB, 4);
    ahead = ahead_chunks(ctx.opts.cache_size, 4);
    CHECK_EQ(ahead, 8); /* 4 threads would want 3 MiB */
    CHECK_EQ(readahead_new(&ctx, 4, &ra), 0);
    if (!ra)
        goto out;
    rec_reset();
    atomic_store(&bound_ahead, ahead);
    for (uint64_t k = 0; k < nchunks(m); k++) {
        bad += read_chunk(ra, a, m, ctx.cache, k, zdata[M_A]) != 0;
        if (k == 2)
            settle_on(m);
    }
    CHECK_EQ(bad, 0);
    CHECK(wait_for(all_calls_done, NULL));
    readahead_free(ra);
    CHECK(calls_for(m, false) > 0);
    CHECK_EQ(out_of_bounds(m), 0);
out:
    atomic_store(&bound_ahead, 0);
    cache_free(ctx.cache);
    archive_close(a);
}

/* A call done for m whose first chunk lies in (after, before). */
struct region {
    const struct archive_member *m;
    uint64_t after, before;
};

static bool call_done_in(void *arg)
{
    const struct region *r = arg;

    for (size_t i = 0; i < ncalls; i++)
        if (calls[i].m == r->m && calls[i].done && calls[i].first > r->after &&
            calls[i].first < r->before)
            return true;
    return false;
}

/* Two sequential streams in one member, read in turns: both get work ahead
 * of them. The pool holds 8 jobs (4 threads) and the first stream queues at
 * most 2 (6 chunks ahead; a small cache makes segments span half of that at
 * least, so 2 points of the 256 KiB spacing: 4 chunks or so), so the second
 * finds room; it goes on reading until its segments ahead fit its
 * distance. */
static void test_two_streams(void)
{
    struct archive *a = open_archive();
    struct mount_ctx ctx;
    struct readahead *ra = NULL;
    struct archive_member *m;
    uint64_t s1 = 0, s2 = 48;
    struct region r1, r2;
    int bad = 0;

    if (!a)
        return;
    m = &a->members[M_A];
    complete_index(a, m);
    ctx_init(&ctx, 3 * MiB, 4);
    CHECK_EQ(ahead_chunks(ctx.opts.cache_size, 4), 6);
    CHECK_EQ(readahead_new(&ctx, 4, &ra), 0);
    if (!ra)
        goto out;
    rec_reset();
    for (uint64_t i = 0; i < 3; i++) {
        bad += read_chunk(ra, a, m, ctx.cache, s1 + i, zdata[M_A]) != 0;
        bad += read_chunk(ra, a, m, ctx.cache, s2 + i, zdata[M_A]) != 0;
    }
    for (uint64_t i = 3; i < 10; i++)
        bad += read_chunk(ra, a, m, ctx.cache, s2 + i, zdata[M_A]) != 0;
    CHECK_EQ(bad, 0);
    r1 = (struct region){m, s1 + 2, s2};
    r2 = (struct region){m, s2 + 2, nchunks(m)};
    CHECK(wait_for(call_done_in, &r1));
    CHECK(wait_for(call_done_in, &r2));
    CHECK(wait_for(all_calls_done, NULL));
    readahead_free(ra);
out:
    cache_free(ctx.cache);
    archive_close(a);
}

/* On a first pass there are no segments ahead of the reader (the index ends
 * where it is): a worker continues the decoder the reader parked instead
 * (here the third read is noted once served, so that its decoder is parked
 * when the work is queued: the READ handler notes first, and the worker
 * then finds it parked or in use, either way correct). Raced with the
 * reader, every byte is right. */
static void test_first_pass(void)
{
    struct archive *a = open_archive();
    struct mount_ctx ctx;
    struct readahead *ra = NULL;
    struct cache_chunk *ch;
    struct archive_member *m;
    uint64_t before, ahead;
    int bad = 0;

    if (!a)
        return;
    m = &a->members[M_B];
    ctx_init(&ctx, 64ull << 20, 2);
    ahead = ahead_chunks(ctx.opts.cache_size, 2);
    CHECK_EQ(readahead_new(&ctx, 2, &ra), 0);
    if (!ra)
        goto out;
    rec_reset();
    atomic_store(&bound_ahead, ahead);
    member_opened(m); /* so that the reader parks its decoder */
    before = atomic_load(&fs_counters.readahead_chunks);
    for (uint64_t k = 0; k < 2; k++)
        bad += read_chunk(ra, a, m, ctx.cache, k, zdata[M_B]) != 0;
    atomic_store(&reader_last, 2);
    CHECK_EQ(member_chunk(a, m, ctx.cache, 2, &ch), 0);
    cache_put(ctx.cache, ch);
    readahead_note_read(ra, m, 2, 2);
    settle_on(m);
    CHECK(calls_for(m, true) > 0);
    CHECK(atomic_load(&fs_counters.readahead_chunks) > before);
    CHECK(cached(ctx.cache, m, 3)); /* ahead of the reader */
    for (uint64_t k = 3 + ahead; k < nchunks(m); k++)
        CHECK(!cached(ctx.cache, m, k));
    for (uint64_t k = 3; k < nchunks(m); k++)
        bad += read_chunk(ra, a, m, ctx.cache, k, zdata[M_B]) != 0;
    CHECK_EQ(bad, 0);
    CHECK(wait_for(all_calls_done, NULL));
    readahead_free(ra);
    CHECK_EQ(out_of_bounds(m), 0);
    CHECK(dfx_index_total(m->ix) == m->size);
    member_closed(m);
out:
    atomic_store(&bound_ahead, 0);
    cache_free(ctx.cache);
    archive_close(a);
}

struct freer {
    pthread_t t;
    struct readahead *ra;
};

static void *freer(void *arg)
{
    readahead_free(((struct freer *)arg)->ra);
    return NULL;
}

/* Stopped with a job running and another queued: the running one ends, the
 * queued one is dropped (freed: ASan would see a leak), nothing hangs. */
static void test_stop_with_queued_work(void)
{
    struct archive *a = open_archive();
    struct mount_ctx ctx;
    struct freer f = {0};
    struct archive_member *m;
    int bad = 0;

    if (!a)
        return;
    m = &a->members[M_A];
    complete_index(a, m);
    ctx_init(&ctx, 64ull << 20, 1);
    CHECK_EQ(readahead_new(&ctx, 1, &f.ra), 0);
    if (!f.ra)
        goto out;
    rec_reset();
    gate(true);
    for (uint64_t k = 0; k < 8; k++)
        bad += read_chunk(f.ra, a, m, ctx.cache, k, zdata[M_A]) != 0;
    CHECK_EQ(bad, 0);
    CHECK(wait_for(one_at_gate, NULL));
    pthread_create(&f.t, NULL, freer, &f);
    gate(false);
    pthread_join(f.t, NULL);
    /* the held job ran; the queued one may have started before the stop */
    CHECK(calls_for(m, false) >= 1 && calls_for(m, false) <= JOBS_PER_THREAD);
    CHECK(all_calls_done(NULL));
out:
    gate(false);
    cache_free(ctx.cache);
    archive_close(a);
}

int main(void)
{
    ft_log_capture();
    dir = ft_tempdir("test_fs_readahead");
    make_archive();

    test_no_pool();
    test_sequential();
    test_random_queues_nothing();
    test_bounded();
    test_two_streams();
    test_first_pass();
    test_stop_with_queued_work();

    ft_members_free(zm, M_COUNT);
    for (int i = 0; i < M_COUNT; i++)
        free(zdata[i]);
    free(zpath);
    ft_rmtree(dir);
    free(dir);
    return check_exit("test_fs_readahead");
}
