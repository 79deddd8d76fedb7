/*
 * Serving a member's uncompressed bytes: a deflate member chunk by chunk, a
 * stored member by checked reads. Opening archives and a member's state
 * are archive.c's.
 *
 * A deflate member's chunks come from the cache or, on a miss, from a
 * decoder: a parked one (left by a sequential reader just before the chunk)
 * or a fresh one from the nearest access point. Decodes in progress are
 * listed in m->busy so a reader of the next chunk waits for the decoder
 * ahead of it instead of starting a second one over the same bytes.
 *
 * Readahead workers (readahead.c) produce whole segments between access
 * points through member_produce(); their entries in m->busy are marked
 * ahead and cover exactly the chunks they will insert, so a reader that
 * needs one of those chunks waits for the worker rather than decoding it
 * twice.
 *
 * Past the index frontier there are no segments: only a decoder that goes on
 * from where the last one stopped can produce the next chunks. There a worker
 * continues the sequential reader's parked decoder a bounded distance ahead
 * of it (member_continue()), so the reader only copies cached chunks out.
 * Its busy entry is ahead and pipelined: its start moves up as each chunk is
 * inserted, and a reader just past its end waits for it too, then takes the
 * decoder it parks.
 *
 * Integrity: once a member has its chunk CRC table (m->crcs), every chunk a
 * decoder produces is checked against it before it goes into the cache, and
 * every stored read is served from whole chunks checked the same way, so
 * damage that appears after the table was built (bit rot, the archive
 * rewritten between mounts with its mtime restored) fails the read that
 * meets it instead of handing out wrong bytes. Every read checks the
 * archive unchanged after its reads (archive_check(), archive.c).
 */
#define _GNU_SOURCE

#include "member.h"

#include <errno.h>
#include <fuse_log.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bsrc.h"
#include "cache.h"
#include "dfx_crcs.h"
#include "fs.h"
#include "verify.h"

/* A waiting reader whose chunk lies this close after a decode in progress
 * waits for that decoder instead of starting its own. */
#define BUSY_REACH (4 * (uint64_t)FS_CHUNK_SIZE)
/* Chunks a reader about to wait for a decoder makes ready for it (memory
 * touched, so the decoder takes no page faults on them): enough to stay
 * ahead of a decoder that readers keep waiting for. With 8, a cold first
 * pass over 320 MB still left the decoding thread about 3000 faults of
 * chunk memory while the cache filled (minor faults of that thread: 3600
 * to 5500 with 8, about 2600 with 32, the rest its access points' windows). */
#define FS_PREPARE_CHUNKS 32

struct member_busy {
    uint64_t from, to;   /* output range being decoded */
    bool ahead;          /* a readahead worker: inserts every chunk of [from, to) */
    bool pipelined;      /* ahead, continuing a parked decoder: from moves up as
                          * chunks are inserted, and the decoder is parked at to */
    struct member_busy *next;
};

/* A reader waiting in member_chunk() for the chunk at target (on m's
 * waiters list, under m->lock). A pipelined decode wakes only the readers
 * whose chunk it has inserted, not all of them for every chunk: with the
 * kernel's readahead several reads of later chunks wait at once, and waking
 * each for every chunk cost the decoding thread ~6% of its time (futex
 * wake-ups), and the readers a context switch each. */
struct member_waiter {
    uint64_t target;
    pthread_cond_t cv;
    struct member_waiter *next;
};

/* Contract in member.h. */
int64_t member_peek(struct archive *a, struct archive_member *m, void *buf, size_t len)
{
    int64_t n;
    int ret = archive_locate(a, m);

    if (ret < 0)
        return ret;
    if (m->unsupported)
        return m->unsupported;
    if (atomic_load(&a->changed))
        return -EIO;
    if (len > m->size)
        len = (size_t)m->size;
    if (m->kind == ARCHIVE_STORED)
        n = src_pread(a->src, buf, len, m->data_offset);
    else
        n = dfx_extract(m->ix, 0, buf, len);
    ret = archive_check(a); /* after the reads */
    return ret < 0 ? ret : n;
}

/* Contract in member.h. */
int64_t member_prefix_read(void *arg, unsigned char *buf, size_t len)
{
    const struct member_ref *ref = arg;

    return member_peek(ref->a, ref->m, buf, len);
}

/* What take_parked() accepts: a decoder at or before target and either
 * within one spacing or past the index frontier, and not behind floor. */
struct near_target {
    uint64_t target, spacing, frontier, floor;
};

static bool near_ok(uint64_t pos, void *arg)
{
    const struct near_target *n = arg;

    return pos <= n->target && !(n->target - pos > n->spacing && pos < n->frontier) &&
           pos >= n->floor;
}

/* Take the parked decoder best placed for target: at or before it and
 * either within one spacing or past the index frontier (where no access
 * point could do better). Called with m->lock held. */
static struct dfx_reader *take_parked(struct archive *a, struct archive_member *m, uint64_t target)
{
    struct near_target n = {.target = target, .spacing = a->spacing,
                            .frontier = dfx_index_frontier(m->ix)};

    /* A remote archive: a decoder behind the access point a fresh one would
     * start at would fetch the compressed bytes in between too. */
    if (bsrc_is_remote(a->bs)) {
        struct dfx_span sp;
        dfx_index_span(m->ix, target, target, &sp);
        n.floor = sp.out_lo;
    }
    return parked_take(m->parked, near_ok, &n);
}

/* Is a sequential decode in progress (a reader's, or a pipelined worker's)
 * about to produce target, or to stop just before it? m->lock held. */
static bool busy_near(struct archive_member *m, uint64_t target)
{
    for (struct member_busy *b = m->busy; b; b = b->next)
        if ((!b->ahead || b->pipelined) && b->from <= target && target < b->to + BUSY_REACH)
            return true;
    return false;
}

/* Is a readahead worker producing the chunk at target? m->lock held. */
static bool busy_ahead(struct archive_member *m, uint64_t target)
{
    for (struct member_busy *b = m->busy; b; b = b->next)
        if (b->ahead && b->from <= target && target < b->to)
            return true;
    return false;
}

/* Is a decode in progress about to produce the chunk at target (not
 * produced yet)? m->lock held. */
static bool busy_covers(struct archive_member *m, uint64_t target)
{
    for (struct member_busy *b = m->busy; b; b = b->next)
        if (b->from <= target && target < b->to)
            return true;
    return false;
}

/* Does any decode in progress touch [from, to)? m->lock held. */
static bool busy_overlaps(struct archive_member *m, uint64_t from, uint64_t to)
{
    for (struct member_busy *b = m->busy; b; b = b->next)
        if (b->from < to && from < b->to)
            return true;
    return false;
}

/* Wake the readers waiting for a chunk that starts below limit; UINT64_MAX:
 * all of them (a decode ended, so any may go on). m->lock held. */
static void wake(struct archive_member *m, uint64_t limit)
{
    for (struct member_waiter *w = m->waiters; w; w = w->next)
        if (w->target < limit)
            pthread_cond_signal(&w->cv);
    if (limit == UINT64_MAX)
        pthread_cond_broadcast(&m->idle);
}

static void busy_link(struct archive_member *m, struct member_busy *busy, uint64_t from,
                      uint64_t to, bool ahead)
{
    busy->from = from;
    busy->to = to;
    busy->ahead = ahead;
    busy->pipelined = false;
    busy->next = m->busy;
    m->busy = busy;
}

static void busy_unlink(struct archive_member *m, struct member_busy *busy)
{
    struct member_busy **pp = &m->busy;

    while (*pp != busy)
        pp = &(*pp)->next;
    *pp = busy->next;
}

/* Park r for a later sequential read (parked_put()). Returns the decoder
 * to free (outside the locks), or NULL. Called with m->lock held. */
static struct dfx_reader *park(struct archive_member *m, struct dfx_reader *r)
{
    if (m->opens == 0 || dfx_reader_pos(r) >= m->size)
        return r;
    return parked_put(m->parked, r);
}

/* A decode is over: take it off the busy list, wake the readers waiting on
 * it, and park its decoder for the next sequential read (keep) or free it. */
static void end_decode(struct archive_member *m, struct member_busy *busy, struct dfx_reader *r,
                       bool keep)
{
    struct dfx_reader *drop;

    pthread_mutex_lock(&m->lock);
    busy_unlink(m, busy);
    drop = keep ? park(m, r) : r;
    wake(m, UINT64_MAX);
    pthread_mutex_unlock(&m->lock);
    dfx_reader_free(drop);
}

/* A chunk whose bytes do not match the member's chunk CRC table: the
 * archive was damaged or rewritten since the table was built. Reads from
 * the chunk on fail (ARCHIVE_DEFLATE; a stored member's reads of that
 * chunk). Records the first such chunk; the caller's failure is logged as
 * any damage is, once per member (archive_log_damage()). */
static void mark_mismatch(struct archive_member *m, uint64_t idx)
{
    uint64_t seen = atomic_load(&m->bad_chunk);

    while ((seen == 0 || idx + 1 < seen) &&
           !atomic_compare_exchange_weak(&m->bad_chunk, &seen, idx + 1))
        ;
}

/* A decode of m failed with err (found: how, for the log): log a failed
 * fetch once per archive, or damage once per member; not a change of the
 * archive (logged when found), nor a stop or a lack of memory. */
static void log_failure(struct archive *a, struct archive_member *m, int err, const char *found)
{
    if (bsrc_transient(err))
        archive_log_fetch_failure(a, err);
    else if (err < 0 && err != -ENOMEM && err != -ECANCELED && err != -EINVAL)
        archive_log_damage(a, m, found, err);
}

/*
 * Decode from r's position through the end of chunk idx, inserting every
 * whole chunk on the way (they are likely to be read next). A chunk goes into
 * the cache only once all its bytes decoded, the archive was found unchanged
 * after the reads they came from (so they are the content it had at open,
 * never a mix), and they matched the chunk CRC table if there is one. So
 * bytes decoded before an error in the same chunk are never served, and
 * neither are bytes that differ from those the full pass saw (a mismatch
 * marks the member damaged from that chunk on).
 */
static int decode_through(struct archive *a, struct archive_member *m, struct cache *c,
                          struct dfx_reader *r, uint64_t idx, struct cache_chunk **out)
{
    uint64_t pos = dfx_reader_pos(r), frontier = dfx_index_frontier(m->ix);
    uint64_t k = (pos + FS_CHUNK_SIZE - 1) / FS_CHUNK_SIZE;
    int ret = dfx_reader_skip(r, k * FS_CHUNK_SIZE - pos);

    for (; ret == 0 && k <= idx; k++) {
        uint64_t off = k * FS_CHUNK_SIZE;
        size_t want = m->size - off < FS_CHUNK_SIZE ? (size_t)(m->size - off) : FS_CHUNK_SIZE;
        struct cache_chunk *ch;
        int64_t n;

        ret = cache_chunk_new(c, &ch);
        if (ret < 0)
            break;
        n = dfx_reader_read(r, ch->data, want);
        /* Every read of input this chunk was decoded from is done: the
         * archive must still be as it was at open (archive_check()). A
         * change also explains a decode error or a mismatch, so it is
         * checked first. */
        ret = archive_check(a);
        if (ret == 0 && n != (int64_t)want)
            ret = n < 0 ? (int)n : -EIO; /* damage: the index recorded it */
        if (ret == 0 && !verify_chunk(atomic_load(&m->crcs), k, ch->data, want)) {
            archive_condemn(m, &(struct dfx_damage){.error = -EIO, .from = off, .chunk = k,
                                                      .kind = DFX_DAMAGE_CHUNK_CRC});
            mark_mismatch(m, k); /* logged by the caller's log_failure() */
            ret = -EIO;
        }
        if (ret < 0) {
            cache_put(c, ch);
            break;
        }
        ch->len = want;
        cache_insert(c, m->id, k, ch);
        if (off + want > frontier) /* past the last point: the member's first pass */
            atomic_fetch_add_explicit(&fs_frontier_moves, 1, memory_order_relaxed);
        if (fs_is_readahead_worker)
            atomic_fetch_add_explicit(&fs_counters.readahead_chunks, 1, memory_order_relaxed);
        if (k == idx)
            *out = ch;
        else
            cache_put(c, ch);
    }
    return ret;
}

/* A decode of m (a reader's or a readahead worker's) failed with err: if
 * that is damage (the index recorded it), and not a change of the archive
 * (which drops the pages of all its members), the kernel drops m's pages:
 * reads of m fail from the damage on, or all of them for a CRC mismatch. */
static void decode_failed(struct archive *a, struct archive_member *m, int err)
{
    if (err < 0 && err != -ENOMEM && err != -EINVAL && err != -ECANCELED &&
        !bsrc_transient(err) && archive_check(a) == 0)
        archive_drop_pages(m);
}

/* Does damage found so far cover chunk idx? Checked on every cache hit too,
 * so chunks cached before the damage was found (a CRC mismatch condemns
 * bytes decoded long before) are not served. */
static int chunk_damaged(struct archive_member *m, uint64_t idx)
{
    uint64_t bad_from;
    int err = archive_damage(m, &bad_from);

    return err < 0 && (idx + 1) * FS_CHUNK_SIZE > bad_from ? err : 0;
}

/*
 * A remote archive: start fetching the compressed bytes that a decoder
 * started for output [from, to) will read (bsrc_advise()), so the decode
 * costs one round trip instead of one per input buffer. The end is
 * interpolated between the access points around the span (output per input
 * byte varies within a segment: a sixteenth of the segment as a margin) and
 * rounded up to the decoder's input reads, which it makes whole from its
 * start point; never past the next point. A parked reader r (else NULL)
 * goes on from where it is. Past the last point of an index
 * that is not complete nothing is hinted: the span is unknown, and a
 * sequential reader gets fetch-ahead.
 */
static void advise_decode(struct archive *a, struct archive_member *m, struct dfx_reader *r,
                          uint64_t from, uint64_t to)
{
    struct dfx_span sp;
    uint64_t seg, need, total, unit, start;

    if (!bsrc_is_remote(a->bs))
        return;
    dfx_index_span(m->ix, from, to, &sp);
    if (!sp.bounded) {
        total = dfx_index_total(m->ix);
        if (total == UINT64_MAX)
            return;
        sp.out_hi = total;
    }
    seg = sp.in_hi - sp.in_lo;
    need = seg;
    if (to < sp.out_hi && sp.out_hi > sp.out_lo) {
        uint64_t est = (uint64_t)((double)seg * (double)(to - sp.out_lo) /
                                  (double)(sp.out_hi - sp.out_lo)) + seg / 16;
        if (est < need)
            need = est;
    }
    unit = a->src->read_size && a->src->read_size < DFX_INPUT_SIZE ? a->src->read_size
                                                                     : DFX_INPUT_SIZE;
    need = (need + unit - 1) / unit * unit;
    if (need > seg + unit)
        need = seg + unit;
    /* a parked reader goes on from where it is (which may lie before the
     * span's point) */
    start = r ? dfx_reader_input(r) : sp.in_lo;
    if (start > sp.in_lo + need)
        return;
    bsrc_advise(a->bs, start, sp.in_lo + need + 1 - start);
}

/* Contract in member.h. */
void member_advise(struct archive_member *m, uint64_t from, uint64_t to)
{
    if (to > m->size)
        to = m->size;
    if (from < to && archive_located(m) && m->ix && !atomic_load(&m->archive->changed))
        advise_decode(m->archive, m, NULL, from, to);
}

/* May chunk idx of m be served at all? 0, -EINVAL past the end, or the
 * error every read of it gets. Once a change is known, nothing is served,
 * cached chunks included (they are old content, but the kernel was told to
 * drop its pages of the archive's members: reads fail alike, whatever was
 * cached where). */
static int chunk_servable(struct archive *a, struct archive_member *m, uint64_t idx)
{
    int err;

    if (idx * FS_CHUNK_SIZE >= m->size)
        return -EINVAL;
    if (atomic_load(&a->changed))
        return -EIO;
    err = chunk_damaged(m, idx);
    if (err < 0) /* found by a decode that may not have said it (readahead's) */
        archive_log_damage(a, m, "by a read", err);
    return err;
}

/* Contract in member.h. */
int member_chunk_cached(struct archive *a, struct archive_member *m, struct cache *c,
                        uint64_t idx, struct cache_chunk **out)
{
    int ret = chunk_servable(a, m, idx);

    *out = NULL;
    if (ret < 0)
        return ret;
    *out = cache_lookup(c, m->id, idx);
    return *out ? 0 : 1;
}

/* Wait for a wake(), listed as w (from the first call on: *waiting).
 * m->lock held. */
static void waiter_wait(struct archive_member *m, struct member_waiter *w, bool *waiting)
{
    if (!*waiting) {
        pthread_cond_init(&w->cv, NULL);
        w->next = m->waiters;
        m->waiters = w;
        *waiting = true;
    }
    pthread_cond_wait(&w->cv, &m->lock);
}

/* A reader that must wait for a decoder: the first time, make fresh chunks
 * ready for it instead (their page faults would otherwise be its work) and
 * return, so the caller looks again; then wait (waiter_wait()). m->lock
 * held; dropped while preparing. */
static void await_decoder(struct archive_member *m, struct cache *c, struct member_waiter *w,
                          bool *waiting, bool *prepared)
{
    if (*prepared) {
        waiter_wait(m, w, waiting);
        return;
    }
    *prepared = true;
    pthread_mutex_unlock(&m->lock);
    cache_prepare(c, FS_PREPARE_CHUNKS);
    pthread_mutex_lock(&m->lock);
}

/* Done waiting: unlist w if waiter_wait() listed it. m->lock held. */
static void waiter_done(struct archive_member *m, struct member_waiter *w, bool waiting)
{
    struct member_waiter **pp;

    if (!waiting)
        return;
    for (pp = &m->waiters; *pp != w; pp = &(*pp)->next)
        ;
    *pp = w->next;
    pthread_cond_destroy(&w->cv);
}

/* Contract in member.h. */
void member_wait_decoded(struct archive_member *m, struct cache *c, uint64_t idx)
{
    uint64_t target = idx * FS_CHUNK_SIZE;
    struct member_waiter w = {.target = target};
    bool waiting = false, prepared = false;

    pthread_mutex_lock(&m->lock);
    for (;;) {
        struct cache_chunk *ch = cache_lookup(c, m->id, idx);
        if (ch) {
            cache_put(c, ch);
            break;
        }
        if (!busy_covers(m, target))
            break;
        await_decoder(m, c, &w, &waiting, &prepared);
    }
    waiter_done(m, &w, waiting);
    pthread_mutex_unlock(&m->lock);
}

/* Contract in member.h. */
int member_chunk(struct archive *a, struct archive_member *m, struct cache *c, uint64_t idx,
                    struct cache_chunk **out)
{
    uint64_t target = idx * FS_CHUNK_SIZE;
    struct member_waiter w = {.target = target};
    struct dfx_reader *r = NULL;
    bool waiting = false, prepared = false;
    struct member_busy busy;
    int ret = 0;

    *out = NULL;
    ret = chunk_servable(a, m, idx);
    if (ret < 0)
        return ret;
    pthread_mutex_lock(&m->lock);
    for (;;) {
        *out = cache_get(c, m->id, idx);
        if (*out)
            break;
        if (!busy_ahead(m, target)) {
            r = take_parked(a, m, target);
            if (r || !busy_near(m, target))
                break;
        }
        await_decoder(m, c, &w, &waiting, &prepared);
    }
    waiter_done(m, &w, waiting);
    if (*out) {
        pthread_mutex_unlock(&m->lock);
        return 0;
    }
    busy_link(m, &busy, r ? dfx_reader_pos(r) : target, target + FS_CHUNK_SIZE, false);
    pthread_mutex_unlock(&m->lock);

    advise_decode(a, m, r, target, target + FS_CHUNK_SIZE);
    if (!r)
        ret = dfx_reader_new(m->ix, target, &r);
    if (ret == 0)
        ret = decode_through(a, m, c, r, idx, out);

    end_decode(m, &busy, r, ret == 0);
    decode_failed(a, m, ret);
    log_failure(a, m, ret, "by a read");
    return ret;
}

/* Narrow chunks *first..*last to drop cached chunks at either end: only
 * whole chunks are ever inserted, so what is cached need not be decoded
 * again. m->lock held (it is taken before the cache's locks). */
static void trim_cached(struct archive_member *m, struct cache *c, uint64_t *first, uint64_t *last)
{
    struct cache_chunk *ch;

    while (*first <= *last && (ch = cache_get(c, m->id, *first))) {
        cache_put(c, ch);
        ++*first;
    }
    while (*first < *last && (ch = cache_get(c, m->id, *last))) {
        cache_put(c, ch);
        --*last;
    }
}

/* Contract in member.h. */
int member_produce(struct archive *a, struct archive_member *m, struct cache *c,
                      uint64_t point, uint64_t first, uint64_t last)
{
    struct cache_chunk *ch = NULL;
    struct dfx_reader *r = NULL;
    struct member_busy busy;
    int ret;

    if (last >= (m->size + FS_CHUNK_SIZE - 1) / FS_CHUNK_SIZE || point > first * FS_CHUNK_SIZE)
        return -EINVAL;
    pthread_mutex_lock(&m->lock);
    trim_cached(m, c, &first, &last);
    if (first > last ||
        busy_overlaps(m, first * FS_CHUNK_SIZE, (last + 1) * FS_CHUNK_SIZE)) {
        pthread_mutex_unlock(&m->lock);
        return 0;
    }
    busy_link(m, &busy, first * FS_CHUNK_SIZE, (last + 1) * FS_CHUNK_SIZE, true);
    pthread_mutex_unlock(&m->lock);

    /* each chunk is checked against a change as it is decoded */
    if (!atomic_load(&a->changed))
        advise_decode(a, m, NULL, point, (last + 1) * FS_CHUNK_SIZE);
    ret = atomic_load(&a->changed) ? -EIO : dfx_reader_new(m->ix, point, &r);
    if (ret == 0 && dfx_reader_pos(r) != point)
        ret = -EINVAL; /* not an access point: the caller's mistake */
    if (ret == 0)
        ret = dfx_reader_skip(r, first * FS_CHUNK_SIZE - point);
    if (ret == 0)
        ret = decode_through(a, m, c, r, last, &ch);
    cache_put(c, ch);
    decode_failed(a, m, ret);
    log_failure(a, m, ret, "by a read ahead");

    pthread_mutex_lock(&m->lock);
    busy_unlink(m, &busy);
    wake(m, UINT64_MAX);
    pthread_mutex_unlock(&m->lock);
    dfx_reader_free(r);
    return ret;
}

/* [lo, hi): what take_parked_in() accepts. */
struct pos_range {
    uint64_t lo, hi;
};

static bool range_ok(uint64_t pos, void *arg)
{
    const struct pos_range *rg = arg;

    return rg->lo <= pos && pos < rg->hi;
}

/* Take the parked decoder furthest along in [lo, hi). m->lock held. */
static struct dfx_reader *take_parked_in(struct archive_member *m, uint64_t lo, uint64_t hi)
{
    return parked_take(m->parked, range_ok, &(struct pos_range){lo, hi});
}

/* Contract in member.h. */
int member_continue(struct archive *a, struct archive_member *m, struct cache *c, uint64_t first,
                       uint64_t last, bool (*more)(void *arg, uint64_t next, uint64_t *last),
                       void *arg)
{
    uint64_t nchunks = (m->size + FS_CHUNK_SIZE - 1) / FS_CHUNK_SIZE;
    uint64_t end = (last + 1) * FS_CHUNK_SIZE, k;
    struct dfx_reader *r, *drop = NULL;
    struct member_busy busy;
    int ret;

    if (first > last || last >= nchunks)
        return -EINVAL;
    pthread_mutex_lock(&m->lock);
    r = take_parked_in(m, first * FS_CHUNK_SIZE, end);
    if (r && busy_overlaps(m, dfx_reader_pos(r), end)) {
        drop = park(m, r); /* someone decodes there already: leave it be */
        r = NULL;
    }
    if (r) {
        busy_link(m, &busy, dfx_reader_pos(r), end, true);
        busy.pipelined = true;
    }
    pthread_mutex_unlock(&m->lock);
    dfx_reader_free(drop);
    if (!r)
        return 0;

    k = (dfx_reader_pos(r) + FS_CHUNK_SIZE - 1) / FS_CHUNK_SIZE;
    ret = atomic_load(&a->changed) ? -EIO : 0; /* and each chunk is checked as it is decoded */
    while (ret == 0 && k <= last) {
        struct cache_chunk *ch = NULL;

        ret = decode_through(a, m, c, r, k, &ch);
        cache_put(c, ch);
        if (ret < 0)
            break;
        k++;
        if (more && !more(arg, k, &last))
            last = k - 1;
        if (last >= nchunks)
            last = nchunks - 1;
        /* Wake the readers waiting for chunk k - 1 as soon as it is in (only
         * them: readers of later chunks still wait for this decode), and
         * take on the chunks the reader now wants unless someone else
         * decodes there. */
        pthread_mutex_lock(&m->lock);
        busy.from = k * FS_CHUNK_SIZE;
        if ((last + 1) * FS_CHUNK_SIZE > busy.to) {
            if (busy_overlaps(m, busy.to, (last + 1) * FS_CHUNK_SIZE))
                last = busy.to / FS_CHUNK_SIZE - 1;
            else
                busy.to = (last + 1) * FS_CHUNK_SIZE;
        }
        wake(m, busy.from);
        pthread_mutex_unlock(&m->lock);
    }

    end_decode(m, &busy, r, ret == 0);
    decode_failed(a, m, ret);
    log_failure(a, m, ret, "by a read ahead");
    return ret;
}

void member_opened(struct archive_member *m)
{
    pthread_mutex_lock(&m->lock);
    m->opens++;
    pthread_mutex_unlock(&m->lock);
    atomic_store(&m->was_opened, true);
}

void member_closed(struct archive_member *m)
{
    struct dfx_reader *drop[PARKED_PER_MEMBER];
    int n = 0;

    pthread_mutex_lock(&m->lock);
    if (--m->opens == 0)
        n = parked_take_all(m->parked, drop);
    pthread_mutex_unlock(&m->lock);
    for (int i = 0; i < n; i++)
        dfx_reader_free(drop[i]);
}

/* Contract in member.h. Two first readers may both check: harmless. */
int member_verify_stored(struct archive *a, struct archive_member *m)
{
    if (atomic_load(&m->verified))
        return 0;
    return member_scan_stored(a, m, NULL);
}

/* member_scan_stored()'s pass: the archive is checked after every read
 * (archive_check(): a read error of a changed archive is the change),
 * and the member's pass progress follows the bytes checked. */
struct scan {
    struct archive *a;
    struct archive_member *m;
};

static int scan_check(void *arg)
{
    return archive_check(((struct scan *)arg)->a);
}

static void scan_progress(void *arg, uint64_t done)
{
    archive_pass_progress(((struct scan *)arg)->m, done);
}

/* Contract in member.h. The member's CRC-32 is combined from the chunks' CRCs,
 * so the data is checksummed once. */
int member_scan_stored(struct archive *a, struct archive_member *m, atomic_bool *stop)
{
    struct scan s = {a, m};
    struct dfx_crcs *t;
    int64_t n;
    int ret = atomic_load(&m->stored_damage);

    if (ret < 0)
        return ret;
    archive_pass_begin(m);
    n = verify_pass(&(struct verify_input){.src = a->src, .off = m->data_offset, .size = m->size,
                                           .stop = stop, .after_read = scan_check,
                                           .progress = scan_progress, .arg = &s},
                    NULL, 0, &t);
    archive_pass_end(m);
    ret = n < 0 ? (int)n : 0;
    /* the last check came after every read: the table is of the content at open */
    if (ret == 0 && dfx_crcs_whole(t) != m->crc32) {
        ret = -EIO;
        archive_condemn(m, &(struct dfx_damage){.error = -EIO, .kind = DFX_DAMAGE_CRC});
        archive_log_damage(a, m, "by a pass over the whole member", -EIO);
    }
    if (ret == 0) {
        archive_set_crcs(m, t);
        atomic_store(&m->verified, true);
    } else {
        free(t);
    }
    return ret;
}

/* Contract in member.h. */
int64_t member_read_stored(struct archive *a, struct archive_member *m, uint64_t off, size_t len,
                              unsigned char **out, size_t *at)
{
    const struct dfx_crcs *t = atomic_load(&m->crcs); /* one table for the whole read */
    uint64_t first, last, from, to;
    unsigned char *buf;
    int ret, chk;

    *out = NULL;
    *at = 0;
    if (atomic_load(&a->changed))
        return -EIO;
    if (off >= m->size || len == 0)
        return 0;
    if (len > m->size - off)
        len = (size_t)(m->size - off);
    first = off / FS_CHUNK_SIZE;
    last = (off + len - 1) / FS_CHUNK_SIZE;
    from = t ? first * FS_CHUNK_SIZE : off; /* whole chunks only to check them */
    to = !t ? off + len : (last + 1) * FS_CHUNK_SIZE < m->size ? (last + 1) * FS_CHUNK_SIZE
                                                                : m->size;
    buf = malloc((size_t)(to - from));
    if (!buf)
        return -ENOMEM;
    ret = src_read_exact(a->src, buf, (size_t)(to - from), m->data_offset + from);
    /* After the read, whatever it gave (a truncation reads short): the
     * bytes are the content at open, or the read fails. */
    chk = archive_check(a);
    if (chk < 0)
        ret = chk;
    if (bsrc_transient(ret))
        archive_log_fetch_failure(a, ret);
    for (uint64_t k = first; ret == 0 && t && k <= last; k++) {
        uint64_t end = (k + 1) * FS_CHUNK_SIZE < to ? (k + 1) * FS_CHUNK_SIZE : to;
        if (!verify_chunk(t, k, buf + (k * FS_CHUNK_SIZE - from), (size_t)(end - k * FS_CHUNK_SIZE))) {
            mark_mismatch(m, k);
            archive_log_damage(a, m, "by a read", -EIO);
            archive_drop_pages(m);
            ret = -EIO;
        }
    }
    if (ret < 0) {
        free(buf);
        return ret;
    }
    *out = buf;
    *at = (size_t)(off - from);
    return (int64_t)len;
}
