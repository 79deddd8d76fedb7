/*
 * Parallel readahead: a fixed pool of worker threads that decode, ahead of a
 * sequential reader, the segments of a deflate member that lie between
 * consecutive access points. Contract in readahead.h.
 *
 * A segment runs from an access point p_k to a later one p_j, the first at
 * least `segment` bytes further on: what may be queued ahead of a reader
 * shared among the segments in flight (two per worker), but from
 * RA_SEGMENT_MIN to RA_SEGMENT_MAX, and at most half of it (a small cache),
 * so a segment always fits. (Fewer points are skipped when the spacing is
 * that large already.) In chunks it is ceil(p_k / CH) ..
 * ceil(p_j / CH) - 1: the worker that starts at p_k finishes the chunk that
 * straddles p_j, so every chunk belongs to exactly one segment and is
 * produced whole by one decoder. Each segment costs a decoder start and the
 * part of a chunk decoded twice around its start (half a chunk on average),
 * so a small spacing, which makes random reads cheap, does not make the
 * workers' segments short. The last segment (after the last point) is used
 * only once the index has seen the end of the stream; before that its end
 * is unknown and the sequential reader, which extends the index as it goes,
 * is the only one that can decode there.
 *
 * Sequential detection is per member: up to RA_STREAMS streams, each the
 * chunk just after the last read that continued it. A read that starts at
 * (or one chunk around) a stream's next chunk continues it; after RA_MIN_RUN
 * such reads the stream is sequential and the segments after the read are
 * queued, up to `ahead` bytes past it and at most max_jobs jobs in the whole
 * pool. `ahead` is at most a quarter of the cache, so what the workers
 * produce cannot push out what the reader is about to use.
 *
 * Past the last point of an incomplete index there are no segments, so on
 * a first pass nothing above applies. There the stream gets a pipelined job
 * instead: a worker continues the decoder the reader parked (or the one the
 * previous such job parked) through `ahead` bytes past the read, with
 * member_continue(). One core then decodes while the reader's threads only
 * copy cached chunks out, and the index still grows as the decoder goes.
 *
 * Jobs live in one FIFO list (nearest first, since each stream queues in
 * order); a worker marks the job it runs and removes it when done.
 * member_produce() does the decoding and the coordination with readers
 * (m->busy), so this file only decides what to decode and when.
 */
#define _GNU_SOURCE

#include "archive.h"
#include "fs.h"
#include "member.h"
#include "mount.h"

#include "bsrc.h"
#include "readahead.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Sequential streams tracked per member (concurrent readers of one file). */
#define RA_STREAMS 8
/* Reads that must continue a stream before it counts as sequential. */
#define RA_MIN_RUN 2
/* Segments in flight (queued + running) per worker thread. */
#define RA_JOBS_PER_THREAD 2
/* A remote member's compressed bytes are asked for this many decode windows
 * (ahead) past a sequential reader (4.5 MiB of output per window with two
 * workers at the default spacing: about 4 MiB of compressed bytes ahead). */
#define RA_FETCH_AHEAD 8
/* Points fetched per scheduling pass: bounds a stack array. */
#define RA_QUERY 64
/* Bounds on the output a segment spans, whatever the spacing (see the
 * top). With 2 workers and the default cache, segments of 2 MiB passed an
 * indexed 320 MB member about 5% faster than 1 MiB ones (less decoded
 * twice, fewer starts), 4 MiB no faster. */
#define RA_SEGMENT_MIN (1ull << 20)
#define RA_SEGMENT_MAX (2ull << 20)

/* Every field of a stream is protected by readahead.lock. */
struct ra_stream {
    uint64_t next;  /* chunk after the last read that continued the stream */
    uint64_t sched; /* chunks below this have been queued (or passed over) */
    uint64_t fetch; /* a remote member: chunks below this have had their
                     * compressed bytes asked for (member_advise()) */
    unsigned run;   /* reads that continued it; 0: slot unused */
    uint64_t used;  /* LRU stamp from readahead.clock */
};

/* The streams of one member that has been read, in a hash chained by member
 * (a mount may hold the members of many archives). Every field is protected
 * by readahead.lock; freed with the pool. */
struct ra_member {
    const struct archive_member *m; /* borrowed key: members outlive the pool */
    struct ra_member *next;    /* chain in readahead.buckets */
    struct ra_stream streams[RA_STREAMS];
};

/* point of a pipelined job: it continues a parked decoder, from no point. */
#define RA_PIPELINED UINT64_MAX

struct ra_job {
    struct archive_member *m;  /* borrowed from the archive; immutable once queued */
    uint64_t point;       /* immutable: output offset of the access point it starts
                           * at, or RA_PIPELINED */
    uint64_t first, last; /* chunks to produce: immutable for a segment; a
                           * pipelined one's grow (protected by readahead.lock) */
    bool running;         /* protected by readahead.lock: a worker has taken it */
    bool closed;          /* protected by readahead.lock: a pipelined job that has
                           * stopped, so its last no longer grows */
    struct ra_job *next;  /* protected by readahead.lock */
};

struct readahead {
    struct mount_ctx *ctx;   /* borrowed: outlives the pool */
    unsigned nthreads;    /* immutable */
    pthread_t *threads;   /* owned, immutable after readahead_new() */
    uint64_t ahead;       /* immutable: bytes queued ahead of a reader at most */
    uint64_t segment;     /* immutable: output a segment spans at least (see the top) */
    unsigned max_jobs;    /* immutable: jobs queued + running at most */
    /* Lock order: taken before a dfx index lock and the cache shard locks
     * (both leaves); never held together with a member lock, and never held
     * while decoding. */
    pthread_mutex_t lock;
    pthread_cond_t work;            /* signalled when a job is queued or stop set */
    struct ra_job *jobs, **tail;    /* protected by lock: FIFO list */
    unsigned njobs;                 /* protected by lock: length of jobs */
    bool stop;                      /* protected by lock */
    uint64_t clock;                 /* protected by lock: stream LRU stamps */
    struct ra_member **buckets;     /* protected by lock: members read so far */
    size_t nbuckets, nmembers;      /* protected by lock; nbuckets a power of 2 */
};

static size_t member_hash(const struct archive_member *m, size_t nbuckets)
{
    return (size_t)((m->id * 0x9e3779b97f4a7c15ull) >> 32) & (nbuckets - 1);
}

/* Double the buckets; on failure the chains just grow longer. ra->lock held. */
static void grow_buckets(struct readahead *ra)
{
    size_t n = ra->nbuckets * 2;
    struct ra_member **b = calloc(n, sizeof(*b));

    if (!b)
        return;
    for (size_t i = 0; i < ra->nbuckets; i++) {
        while (ra->buckets[i]) {
            struct ra_member *rm = ra->buckets[i];
            size_t h = member_hash(rm->m, n);

            ra->buckets[i] = rm->next;
            rm->next = b[h];
            b[h] = rm;
        }
    }
    free(ra->buckets);
    ra->buckets = b;
    ra->nbuckets = n;
}

/* m's streams, made on its first read; NULL if out of memory. ra->lock held. */
static struct ra_member *member_streams(struct readahead *ra, const struct archive_member *m)
{
    struct ra_member *rm;
    size_t h = member_hash(m, ra->nbuckets);

    for (rm = ra->buckets[h]; rm; rm = rm->next)
        if (rm->m == m)
            return rm;
    rm = calloc(1, sizeof(*rm));
    if (!rm)
        return NULL;
    rm->m = m;
    rm->next = ra->buckets[h];
    ra->buckets[h] = rm;
    if (++ra->nmembers > ra->nbuckets)
        grow_buckets(ra);
    return rm;
}

/* The stream a read of first..last continues, or a recycled slot (the least
 * recently used) started afresh. Called with ra->lock held. */
static struct ra_stream *stream_for(struct readahead *ra, struct ra_member *rm, uint64_t first,
                                    uint64_t last)
{
    struct ra_stream *s, *lru = &rm->streams[0];

    for (int i = 0; i < RA_STREAMS; i++) {
        s = &rm->streams[i];
        if (s->run && first + 1 >= s->next && first <= s->next + 1) {
            s->run++;
            if (last + 1 > s->next)
                s->next = last + 1;
            s->used = ++ra->clock;
            return s;
        }
        if (s->used < lru->used)
            lru = s;
    }
    memset(lru, 0, sizeof(*lru));
    lru->next = last + 1;
    lru->run = 1;
    lru->used = ++ra->clock;
    return lru;
}

/* Is an equal job already queued or running? ra->lock held. */
static bool job_listed(struct readahead *ra, struct archive_member *m, uint64_t point)
{
    for (struct ra_job *j = ra->jobs; j; j = j->next)
        if (j->m == m && j->point == point)
            return true;
    return false;
}

static int queue_job(struct readahead *ra, struct archive_member *m, uint64_t point, uint64_t first,
                     uint64_t last)
{
    struct ra_job *j;

    if (job_listed(ra, m, point))
        return 0;
    j = calloc(1, sizeof(*j));
    if (!j)
        return -ENOMEM;
    j->m = m;
    j->point = point;
    j->first = first;
    j->last = last;
    *ra->tail = j;
    ra->tail = &j->next;
    ra->njobs++;
    pthread_cond_signal(&ra->work);
    return 0;
}

/* Queue a pipelined job for chunks first..last of m, or widen one of m's that
 * meets it: a queued one, or a running one whose worker still asks for more
 * (pipe_more()). ra->lock held. */
static int queue_pipelined(struct readahead *ra, struct archive_member *m, uint64_t first,
                           uint64_t last)
{
    for (struct ra_job *j = ra->jobs; j; j = j->next) {
        if (j->m == m && j->point == RA_PIPELINED && !j->closed && first <= j->last + 1 &&
            j->first <= last + 1) {
            if (!j->running && first > j->first)
                j->first = first; /* decoders behind the reader are of no use to it */
            if (last > j->last)
                j->last = last;
            return 0;
        }
    }
    if (ra->njobs >= 2 * ra->max_jobs)
        return -EBUSY; /* bounds the jobs of many streams past the frontier */
    return queue_job(ra, m, RA_PIPELINED, first, last);
}

static uint64_t chunk_ceil(uint64_t off)
{
    return off / FS_CHUNK_SIZE + (off % FS_CHUNK_SIZE != 0);
}

/* Stream s reads chunks from first on, and the chunks it has not queued yet
 * lie in the open-ended segment: queue the continuation of its decoder (the
 * one it parks, or the one a pipelined job parked further on) up to chunk
 * limit - 1. ra->lock held. */
static void pipeline(struct readahead *ra, struct archive_member *m, struct ra_stream *s,
                     uint64_t first, uint64_t limit)
{
    uint64_t nchunks = chunk_ceil(m->size);

    if (limit > nchunks)
        limit = nchunks;
    if (first < limit && queue_pipelined(ra, m, first, limit - 1) == 0)
        s->sched = limit;
}

/*
 * Queue the segments that start after chunk last, the one a sequential
 * stream s has just asked for, up to ra->ahead bytes past it; past the last
 * point of an incomplete index, a pipelined job instead. s->sched keeps a
 * later read from queuing the same chunks again. ra->lock held.
 */
static void schedule(struct readahead *ra, struct archive_member *m, struct ra_stream *s,
                     uint64_t rfirst, uint64_t last)
{
    uint64_t pts[RA_QUERY];
    uint64_t from = s->sched > last + 1 ? s->sched : last + 1;
    uint64_t limit = last + 1 + ra->ahead / FS_CHUNK_SIZE; /* chunks >= limit: not yet */
    uint64_t nchunks = chunk_ceil(m->size);
    bool complete = dfx_index_total(m->ix) != UINT64_MAX;
    size_t n, i = 0;

    if (from >= limit || from >= nchunks)
        return;
    /* Points p with ceil(p / CH) >= from, i.e. p > (from - 1) * CH. */
    n = dfx_index_points_from(m->ix, (from - 1) * FS_CHUNK_SIZE + 1, pts, RA_QUERY);
    while (i < n && ra->njobs < ra->max_jobs) {
        uint64_t first = chunk_ceil(pts[i]), end;
        size_t j = i + 1;

        while (j + 1 < n && pts[j] - pts[i] < ra->segment)
            j++; /* the segment ends at the first point RA_SEGMENT on, or the last one known */
        if (j < n)
            end = chunk_ceil(pts[j]) - 1;
        else if (complete)
            end = nchunks - 1;
        else
            break; /* open-ended: only a decoder that goes on can go there */
        if (end >= limit)
            break;
        if (first <= end && first < nchunks && queue_job(ra, m, pts[i], first, end) < 0)
            break;
        s->sched = end + 1;
        i = j;
    }
    /* No segment ahead, only the open-ended one (the first pass). Not after
     * queuing segments: the continued decoder would run through them. */
    if (!complete && i == 0 && n <= 1)
        pipeline(ra, m, s, rfirst, limit);
}

/* Contract in readahead.h. */
void readahead_note_read(struct readahead *ra, struct archive_member *m, uint64_t first,
                         uint64_t last)
{
    struct ra_member *rm;
    struct ra_stream *s;
    uint64_t from = 0, to = 0;

    if (!ra || m->kind != ARCHIVE_DEFLATE)
        return;
    pthread_mutex_lock(&ra->lock);
    rm = member_streams(ra, m);
    if (rm) {
        s = stream_for(ra, rm, first, last);
        if (s->run > RA_MIN_RUN && !ra->stop) {
            schedule(ra, m, s, first, last);
            /* A remote member: the compressed bytes RA_FETCH_AHEAD windows
             * ahead are asked for now, in pieces on several connections,
             * so that they arrive before the workers need them: waiting
             * for them segment by segment would bound a pass to one
             * segment per worker and round trip. */
            if (bsrc_is_remote(m->archive->bs)) {
                from = s->fetch > last + 1 ? s->fetch : last + 1;
                to = last + 1 + RA_FETCH_AHEAD * (ra->ahead / FS_CHUNK_SIZE);
                if (to > from + ra->ahead / FS_CHUNK_SIZE / 2)
                    s->fetch = to; /* in steps of half a window at least */
                else
                    to = from;
            }
        }
    }
    pthread_mutex_unlock(&ra->lock);
    if (to > from)
        member_advise(m, from * FS_CHUNK_SIZE, to * FS_CHUNK_SIZE);
}

/* The oldest job no worker has taken, marked as taken; NULL once stopping.
 * Waits for one. ra->lock held. */
static struct ra_job *take_job(struct readahead *ra)
{
    for (;;) {
        if (ra->stop)
            return NULL;
        for (struct ra_job *j = ra->jobs; j; j = j->next) {
            if (!j->running) {
                j->running = true;
                return j;
            }
        }
        pthread_cond_wait(&ra->work, &ra->lock);
    }
}

static void remove_job(struct readahead *ra, struct ra_job *job)
{
    struct ra_job **pp = &ra->jobs;

    while (*pp != job)
        pp = &(*pp)->next;
    *pp = job->next;
    if (ra->tail == &job->next)
        ra->tail = pp;
    ra->njobs--;
    free(job);
}

struct ra_pipe {
    struct readahead *ra;
    struct ra_job *job; /* running pipelined job */
};

/* member_continue()'s callback: go on while readers keep raising the
 * job's last chunk; once it stops, the job is closed to them. */
static bool pipe_more(void *arg, uint64_t next, uint64_t *last)
{
    struct ra_pipe *p = arg;
    bool go;

    pthread_mutex_lock(&p->ra->lock);
    go = !p->ra->stop && p->job->last >= next;
    if (go)
        *last = p->job->last;
    else
        p->job->closed = true;
    pthread_mutex_unlock(&p->ra->lock);
    return go;
}


static void *worker(void *arg)
{
    struct readahead *ra = arg;
    struct mount_ctx *ctx = ra->ctx;
    struct ra_job *job;

    fs_is_readahead_worker = true;
    pthread_mutex_lock(&ra->lock);
    while ((job = take_job(ra))) {
        uint64_t first = job->first, last = job->last;
        struct ra_pipe pipe = {ra, job};

        pthread_mutex_unlock(&ra->lock);
        /* An error leaves the chunks out of the cache; the reader that
         * needs them decodes them itself and reports the damage. */
        if (job->point == RA_PIPELINED)
            (void)member_continue(job->m->archive, job->m, ctx->cache, first, last,
                                     pipe_more, &pipe);
        else
            (void)member_produce(job->m->archive, job->m, ctx->cache, job->point, first,
                                    last);
        pthread_mutex_lock(&ra->lock);
        remove_job(ra, job);
    }
    pthread_mutex_unlock(&ra->lock);
    return NULL;
}

/* Bytes a reader may have queued ahead of it: two segments per worker, but
 * never more than a quarter of the cache. 0 if not one chunk fits. */
static uint64_t ahead_bytes(const struct mount_ctx *ctx, unsigned threads)
{
    uint64_t seg = (ctx->opts.spacing > RA_SEGMENT_MAX ? ctx->opts.spacing : RA_SEGMENT_MAX) +
                   FS_CHUNK_SIZE;
    uint64_t want = (uint64_t)threads * RA_JOBS_PER_THREAD * seg;
    uint64_t cap = ctx->opts.cache_size / 4;

    return (want < cap ? want : cap) / FS_CHUNK_SIZE * FS_CHUNK_SIZE;
}

/* Contract in readahead.h. */
int readahead_new(struct mount_ctx *ctx, unsigned threads, struct readahead **out)
{
    struct readahead *ra;
    int ret = 0;

    *out = NULL;
    if (threads == 0 || ahead_bytes(ctx, threads) == 0)
        return 0;
    ra = calloc(1, sizeof(*ra));
    if (!ra)
        return -ENOMEM;
    ra->ctx = ctx;
    ra->ahead = ahead_bytes(ctx, threads);
    ra->max_jobs = threads * RA_JOBS_PER_THREAD;
    ra->segment = ra->ahead / ra->max_jobs;
    if (ra->segment < RA_SEGMENT_MIN)
        ra->segment = RA_SEGMENT_MIN;
    if (ra->segment > RA_SEGMENT_MAX)
        ra->segment = RA_SEGMENT_MAX;
    if (ra->segment > ra->ahead / 2)
        ra->segment = ra->ahead / 2;
    ra->tail = &ra->jobs;
    ra->threads = calloc(threads, sizeof(*ra->threads));
    ra->nbuckets = 64;
    ra->buckets = calloc(ra->nbuckets, sizeof(*ra->buckets));
    if (!ra->threads || !ra->buckets) {
        ret = -ENOMEM;
        goto out_free;
    }
    pthread_mutex_init(&ra->lock, NULL);
    pthread_cond_init(&ra->work, NULL);
    for (; ra->nthreads < threads; ra->nthreads++) {
        ret = -pthread_create(&ra->threads[ra->nthreads], NULL, worker, ra);
        if (ret < 0)
            break;
        /* named here, not in the thread, so the name is there once the pool
         * is (for ps, top and the tests) */
        pthread_setname_np(ra->threads[ra->nthreads], "npyfs-ra");
    }
    if (ret < 0) {
        readahead_free(ra); /* joins the workers started so far */
        return ret;
    }
    *out = ra;
    return 0;

out_free:
    free(ra->threads);
    free(ra->buckets);
    free(ra);
    return ret;
}

/* Contract in readahead.h. */
void readahead_free(struct readahead *ra)
{
    if (!ra)
        return;
    pthread_mutex_lock(&ra->lock);
    ra->stop = true;
    pthread_cond_broadcast(&ra->work);
    pthread_mutex_unlock(&ra->lock);
    for (unsigned i = 0; i < ra->nthreads; i++)
        pthread_join(ra->threads[i], NULL);
    while (ra->jobs)
        remove_job(ra, ra->jobs);
    pthread_cond_destroy(&ra->work);
    pthread_mutex_destroy(&ra->lock);
    free(ra->threads);
    for (size_t i = 0; i < ra->nbuckets; i++) {
        while (ra->buckets[i]) {
            struct ra_member *rm = ra->buckets[i];

            ra->buckets[i] = rm->next;
            free(rm);
        }
    }
    free(ra->buckets);
    free(ra);
}
