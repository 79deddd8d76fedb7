/*
 * Deflate index: random access into a DEFLATE stream (the zran technique).
 * Contract in dfx.h.
 *
 * The index is an append-only array of access points sorted by output offset.
 * A point is a deflate block boundary where a fresh decoder can start: the
 * compressed position (first whole byte, plus 0-7 bits left in the byte
 * before it) and up to 32 KiB of output before it, the only history a later
 * block can refer to. Point 0 is the start of the stream.
 *
 * Readers decode with their own decoder, without the index lock. When a
 * reader stands on a block boundary at least `spacing` bytes past the last
 * point, it appends a point. Decoding is deterministic, so every reader
 * passes through the same block boundaries (whichever of them it stops at):
 * appending only past the current last point (re-checked under the lock)
 * keeps the array sorted by out and by in, whichever point a reader started
 * from, whichever engine found the boundary, and however many readers race.
 * A reader that loses such a race just drops its candidate point.
 *
 * Engines (dfx.h). zlib stops at every block boundary by itself
 * (inflate(Z_BLOCK)). A marking ISA-L reader asks dfx_isal_inflate_mark()
 * for a boundary at or past next_point, runs plain dfx_isal_inflate() while
 * far from it (no marking state at all), and appends what it finds. When a
 * search finds nothing (DFX_ISAL_NOMARK) DFX_MARK_TRIES times in a row, or a
 * check fails, the index stops marking (mark_off) and the reader goes on
 * with zlib: it restarts zlib at the last place it knows in its member (its
 * restart point rp: where it started, its member's start, its last mark, or
 * a later point of the index in the same member) and decodes up to where
 * ISA-L stood, dropping that output but recording points on the way. Later readers of that index decode with ISA-L up to the
 * last usable point (isal_stop) and hand over to zlib there, as with every
 * point recorded by zlib.
 *
 * Windows (where they live: dfx_internal.h). A reader never keeps a pointer
 * to a window it does not own: it copies what it needs under the lock (the
 * raw bytes, the compressed bytes, or where the window is in the fetch
 * source) and inflates or fetches without it, into its own buffer. So a
 * window can be freed at any time: dropped by thinning (below), or replaced
 * by importing (which swaps the whole point array under the lock; readers
 * never see a half-imported index). A fetch source that importing replaces
 * is kept until dfx_index_free(), since a reader may still read from it.
 *
 * Budget: windows recorded into memory are charged to the stream's struct
 * dfx_budget. The index keeps memory windows only at points whose array
 * position is a multiple of 2^thin; when a charge does not fit, thin goes up
 * by one (dropping every other kept window, so the usable spacing doubles)
 * until it fits, or until the index has no memory window left, and then the
 * new point is kept without one. Positions stay; only windows go.
 *
 * GZIP framing is walked here, not by zlib: each member's deflate data is a
 * raw stream; at its end we check the trailer and reset for the next member.
 * A point remembers where its member's output starts, so ISIZE is checked by
 * every reader that reaches a member end, CRC-32 by those that decoded the
 * whole member.
 *
 * Expected size (usize; GZIP: if known): no reader may produce a byte past
 * it, and the stream must end exactly there. A read that reaches usize
 * decodes on to the end of the stream (finish_at_usize()), through every
 * remaining trailer and member, so that those checks run for the read that
 * returns the last byte: callers that know the size never ask past it.
 *
 * Damage: the index keeps the first damage errno (error) and the output
 * offset from which data cannot be trusted (bad_from). A decode error or
 * truncation poisons from where it was found; a failed CRC, ISIZE or usize
 * check poisons from the start of the member (RAW: of the stream; a GZIP
 * stream that ends short of usize: of its last member), since the bad bytes
 * could be anywhere in it. Every later read that returns a byte at or past
 * bad_from fails with that errno.
 */
#include "dfx.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "dfx_internal.h"
#include "dfx_isal.h"
#include "gz.h"

/* Compressed bytes fetched per src_pread(). Per reader. */
#define DFX_INBUF_SIZE DFX_INPUT_SIZE
/* A new reader hints the source at the input it will read first
 * (prefetch_range()): what decoding this much output past the offset asked
 * for takes (a chunk of fs/), at most DFX_PREFETCH_MAX bytes of input. */
#define DFX_PREFETCH_OUT (128u << 10)
#define DFX_PREFETCH_MAX (1u << 20)
/* Output decoded and dropped per read by dfx_reader_skip(). Per reader, lazily. */
#define DFX_SCRATCH_SIZE (64u << 10)
#define DFX_INITIAL_POINTS 16
/* Raw deflate, 32 KiB window: gzip framing is parsed by gz.c. */
#define DFX_WBITS_RAW (-15)
/* Fruitless searches for a boundary in a row (by any reader of an index)
 * after which ISA-L stops marking on that stream: 3 x DFX_ISAL_SEARCH_MAX
 * (1 MiB) of input without a block's end. */
#define DFX_MARK_TRIES 3
/* A marking reader calls plain dfx_isal_inflate() while its output is at
 * least this far before next_point: marking needs the output from 64 KiB
 * before it on, and one call makes up to a chunk (128 KiB) of it. */
#define DFX_MARK_REACH (256u << 10)
/* Shortest gzip member worth looking for after a trailer (header + trailer);
 * anything shorter after the last member is treated as padding. */
#define DFX_GZ_MIN_MEMBER 18
/* strm.data_type bits after inflate(Z_BLOCK) (zlib.h): */
#define DFX_DT_BITS 7       /* unused bits in the last input byte consumed */
#define DFX_DT_LAST 64      /* the current block is the final one */
#define DFX_DT_BOUNDARY 128 /* stopped right after an end-of-block code */

/* Where a point's window is (dfx_internal.h). */
enum wkind {
    W_NONE, /* window_len == 0: no history needed */
    W_RAW,  /* mem: window_len raw bytes, charged to the budget */
    W_ZIP,  /* mem: zlen zlib bytes, charged to the budget */
    W_FILE, /* zlen zlib bytes at woff in the index's fetch source */
    W_SUNK, /* written to the sink (woff, zlen): not readable here */
    W_LOST, /* dropped: no reader starts here */
};

struct dfx_point {
    uint64_t out;          /* uncompressed offset of this point */
    uint64_t in;           /* compressed offset of the first whole byte */
    uint64_t member_out;   /* output offset where this point's member starts (RAW: 0) */
    int bits;              /* 0-7 bits taken from byte in-1 */
    uint32_t window_len;   /* <= DFX_WINDOW_SIZE; shorter near a member start */
    enum wkind kind;
    unsigned char *mem;    /* W_RAW, W_ZIP: owned, freed when the window goes;
                            * W_FILE: NULL, or a copy of its zlen bytes
                            * (dfx_index_cache_windows()), charged alike */
    uint64_t woff;         /* W_FILE, W_SUNK */
    uint32_t zlen;         /* W_ZIP, W_FILE, W_SUNK */
    uint32_t wcrc;         /* W_FILE, W_SUNK: CRC-32 of the raw window */
};

/* A fetch source (dfx_internal.h) as the index keeps it: the current one,
 * or replaced ones (kept until dfx_index_free()). */
struct fetch_src {
    struct dfx_fetch f;
    struct fetch_src *next; /* in the retired list */
};

struct dfx_index {
    struct dfx_stream st; /* immutable after dfx_index_new() */
    uint64_t spacing;     /* immutable */
    bool isal;            /* immutable: readers decode with ISA-L */
    /* Leaf lock: nothing else is taken while it is held, and it is never held
     * while inflating or reading the source or a fetch source. */
    pthread_mutex_t lock;
    struct dfx_point *pts; /* protected by lock: npts used, sorted by out */
    size_t npts, cap;      /* protected by lock */
    uint64_t total;        /* protected by lock: UINT64_MAX until the end is seen */
    int error;             /* protected by lock: first damage, or 0 */
    struct dfx_damage why; /* protected by lock: the first damage described */
    uint64_t bad_from;     /* protected by lock: UINT64_MAX while undamaged */
    bool zip_windows;      /* protected by lock: compress windows of new points */
    bool has_sink;         /* protected by lock: new windows go to sink */
    struct dfx_sink sink;  /* protected by lock */
    unsigned thin;         /* protected by lock: memory windows only at i % 2^thin == 0 */
    uint64_t mem_bytes;    /* protected by lock: bytes of memory windows (mem_cost(), charged) */
    struct fetch_src *fetch;   /* protected by lock: where W_FILE windows are, or NULL */
    struct fetch_src *retired; /* protected by lock: replaced sources, released at free */
    unsigned mark_fails;   /* protected by lock: fruitless searches for a boundary in a row */
    unsigned mark_step;    /* protected by lock: smallest step a search came down to, or 0 */
    bool mark_off;         /* protected by lock: ISA-L no longer records points here */
    int test_skew;         /* protected by lock: dfx_index_test_skew() */
    uint64_t test_skew_from; /* protected by lock */
};

struct dfx_reader {
    struct dfx_index *ix; /* borrowed: outlives the reader */
    /* zlib raw inflate state, owned; live iff zs_live. Its next_in/avail_in
     * are the input cursor for either engine. */
    z_stream zs;
    bool zs_live;
    /* Owned ISA-L decoder, or NULL (zlib decodes). Marking, it records
     * points itself (step_mark()); else it outputs no byte at or past
     * isal_stop, the last usable point when last looked: there zlib takes
     * over (isal_at_stop()). */
    struct dfx_isal *isal;
    bool marking;
    uint64_t isal_stop;
    /* Marking: where zlib can restart in the current member (fall_back()),
     * with its window (rp.window_len bytes) in rwin. rp.kind is unused. */
    struct dfx_point rp;
    unsigned char *rwin; /* owned, DFX_WINDOW_SIZE, or NULL while not marking */
    unsigned char *inbuf;   /* owned, DFX_INBUF_SIZE bytes */
    uint64_t buf_off;       /* source offset of inbuf[0] */
    size_t buf_len;         /* bytes of inbuf filled from the source */
    uint64_t pos;           /* output offset of the next byte */
    uint64_t member_out;    /* output offset where the current member starts */
    bool crc_on;            /* decoded the current member (RAW: stream) from its start */
    uLong crc;              /* CRC-32 of the member's output so far, if crc_on */
    uint64_t next_point;    /* don't try to append a point before this offset */
    int skew;               /* dfx_index_test_skew(), for the ISA-L decoder */
    uint64_t skew_from;
    bool at_end;            /* the whole stream has been decoded */
    int err;                /* sticky errno that made the reader unusable */
    /* Damage ISA-L found after handing out output in the same call: that
     * output precedes the damage (bad_from is at its end), so the step
     * succeeds and the next one fails with this (see defer_damage()). */
    int deferred;
    unsigned char *scratch; /* owned, DFX_SCRATCH_SIZE, allocated by the first skip */
    unsigned char *hist;    /* owned, DFX_WINDOW_SIZE: a point's history while the
                             * engine takes it, or a window being recorded */
};

/* A point copied under the lock with what it takes to get its history
 * without the lock (grab_locked(), grab_history()). */
struct grab {
    struct dfx_point p;    /* copy: p.mem is not ours */
    unsigned char *z;      /* W_ZIP, W_FILE held in memory: owned copy of the compressed bytes */
    struct fetch_src *src; /* W_FILE: the source (lives until dfx_index_free()) */
};

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    uint64_t s;
    return __builtin_add_overflow(a, b, &s) ? UINT64_MAX : s;
}

/* The one translation of zlib codes into errnos. */
static int zlib_errno(int zret)
{
    switch (zret) {
    case Z_MEM_ERROR:
        return -ENOMEM;
    case Z_STREAM_ERROR:
    case Z_VERSION_ERROR:
        return -EINVAL;
    default: /* Z_DATA_ERROR, Z_NEED_DICT, Z_BUF_ERROR: bad or cut-short data */
        return -EIO;
    }
}

static bool usable(const struct dfx_point *p)
{
    return p->kind == W_NONE || p->kind == W_RAW || p->kind == W_ZIP || p->kind == W_FILE;
}

/* Bytes a memory window costs against the budget (0 for other kinds). */
static uint64_t mem_cost(const struct dfx_point *p)
{
    if (p->kind == W_RAW)
        return p->window_len;
    return p->kind == W_ZIP || (p->kind == W_FILE && p->mem) ? p->zlen : 0;
}

static bool budget_take(struct dfx_budget *b, uint64_t n)
{
    uint64_t cur;

    if (!b)
        return true;
    cur = atomic_load(&b->used);
    do {
        if (n > b->limit || cur > b->limit - n)
            return false;
    } while (!atomic_compare_exchange_weak(&b->used, &cur, cur + n));
    return true;
}

static void budget_give(struct dfx_budget *b, uint64_t n)
{
    if (b && n)
        atomic_fetch_sub(&b->used, n);
}

/* Drop p's memory window (freed, given back to the budget): the point stays,
 * without a usable window, or (W_FILE) with its window in the file only.
 * Caller holds the lock. */
static void drop_mem_locked(struct dfx_index *ix, struct dfx_point *p)
{
    uint64_t cost = mem_cost(p);

    ix->mem_bytes -= cost;
    budget_give(ix->st.budget, cost);
    free(p->mem);
    p->mem = NULL;
    if (p->kind != W_FILE)
        p->kind = W_LOST;
}

/* Free the memory windows of a point array that leaves the index (charges
 * given back by the caller, who knows their sum). */
static void points_free(struct dfx_point *pts, size_t n)
{
    for (size_t i = 0; pts && i < n; i++)
        free(pts[i].mem);
    free(pts);
}

/* Largest i with pts[i].out <= off; pts[0].out == 0. Caller holds the lock. */
static size_t find_point_locked(const struct dfx_index *ix, uint64_t off)
{
    size_t lo = 0, hi = ix->npts;

    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (ix->pts[mid].out <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Raise thin until that drops at least one memory window (top of the
 * file). Returns false if the index has none left to drop. Caller holds the
 * lock. */
static bool thin_locked(struct dfx_index *ix)
{
    while (ix->mem_bytes > 0 && ix->thin < 62) {
        uint64_t step = (uint64_t)1 << ++ix->thin, freed = 0;

        for (size_t i = 1; i < ix->npts; i++) {
            struct dfx_point *q = &ix->pts[i];
            if (i % step != 0 && mem_cost(q)) {
                freed += mem_cost(q);
                drop_mem_locked(ix, q);
            }
        }
        if (freed)
            return true;
    }
    return false;
}

/* May point i keep a memory window of cost bytes? Charges the budget if
 * so, thinning the index's own windows to make room. Caller holds the
 * lock. */
static bool charge_locked(struct dfx_index *ix, size_t i, uint64_t cost)
{
    for (;;) {
        if (i % ((uint64_t)1 << ix->thin) != 0)
            return false;
        if (budget_take(ix->st.budget, cost)) {
            ix->mem_bytes += cost;
            return true;
        }
        if (!thin_locked(ix))
            return false;
    }
}

/* Append p if it lies at least spacing past the last point; this is the only
 * rule needed to keep points sorted (see the top of the file). A memory
 * window that the budget refuses is not kept: the point goes in as W_LOST.
 * Returns true if the index took ownership of p->mem. Caller holds the
 * lock. */
static bool append_point_locked(struct dfx_index *ix, struct dfx_point *p)
{
    const struct dfx_point *last = &ix->pts[ix->npts - 1];

    if (p->out < last->out || p->out - last->out < ix->spacing)
        return false;
    if (ix->npts == ix->cap) {
        size_t cap = ix->cap * 2;
        struct dfx_point *pts = realloc(ix->pts, cap * sizeof(*pts));
        if (!pts)
            return false; /* the index is a cache: skip the point */
        ix->pts = pts;
        ix->cap = cap;
    }
    if (mem_cost(p) && !charge_locked(ix, ix->npts, mem_cost(p))) {
        struct dfx_point lost = *p;
        lost.kind = W_LOST;
        lost.mem = NULL;
        ix->pts[ix->npts++] = lost;
        return false; /* the caller frees p->mem */
    }
    ix->pts[ix->npts++] = *p;
    return true;
}

/* Position of the last point a reader can start from (point 0 always
 * can). Caller holds the lock. */
static size_t last_usable_locked(const struct dfx_index *ix)
{
    size_t i = ix->npts - 1;

    while (i > 0 && !usable(&ix->pts[i]))
        i--;
    return i;
}

static uint64_t in_pos(const struct dfx_reader *r);

/* Record damage d (error and from set) unless some came first. Caller
 * holds the lock. */
static void set_damage_locked(struct dfx_index *ix, const struct dfx_damage *d)
{
    if (!ix->error) {
        ix->error = d->error;
        ix->why = *d;
    }
    if (d->from < ix->bad_from)
        ix->bad_from = d->from;
}

/* Record damage of this kind found by a reader at the input it stands at;
 * returns the errno to hand back (-EIO). */
static int damage_as(struct dfx_reader *r, uint64_t from, enum dfx_damage_kind kind)
{
    struct dfx_index *ix = r->ix;
    struct dfx_damage d = {.error = -EIO, .kind = kind, .from = from, .in = in_pos(r)};

    if (kind == DFX_DAMAGE_SIZE) {
        d.expected = ix->st.usize;
        d.actual = r->pos;
    }
    dfx_index_set_damage_info(ix, &d);
    return -EIO;
}

/* Invalid compressed data (the common case). */
static int damage(struct dfx_reader *r, uint64_t from)
{
    return damage_as(r, from, DFX_DAMAGE_DATA);
}

/* An ISA-L call made nothing: with all input up to the stream end offered
 * (offered 0: none was left), the stream is truncated; with input left and
 * room for output, ISA-L had no reason to stop: damage rather than spin. */
static int no_progress(struct dfx_reader *r, unsigned int offered)
{
    return damage_as(r, r->pos, offered == 0 ? DFX_DAMAGE_TRUNCATED : DFX_DAMAGE_DATA);
}

/* A source that ends before the stream does is a truncated archive. */
static int source_errno(struct dfx_reader *r, int ret)
{
    return ret == -EIO ? damage_as(r, r->pos, DFX_DAMAGE_TRUNCATED) : ret;
}

/* Whether an index created for decoder d decodes with ISA-L behind its
 * frontier: DFX_DECODER_AUTO reads NPYFS_DECODER ("zlib" or "isal") from
 * the environment, ISA-L if unset or unknown. Never without ISA-L built in.
 * getenv(): the daemon never changes its environment (ARCHITECTURE.md). */
static bool use_isal(enum dfx_decoder d)
{
    const char *env;

    if (!dfx_isal_built())
        return false;
    if (d != DFX_DECODER_AUTO)
        return d == DFX_DECODER_ISAL;
    env = getenv("NPYFS_DECODER");
    return !env || strcmp(env, "zlib") != 0;
}

/* Contract in dfx.h. */
int dfx_index_new(const struct dfx_stream *st, uint64_t spacing, struct dfx_index **out)
{
    struct dfx_index *ix;
    uint64_t in;
    int ret;

    *out = NULL;
    if (!st || !st->src || st->start > st->end ||
        (st->framing != DFX_RAW && st->framing != DFX_GZIP))
        return -EINVAL;
    in = st->start;
    if (st->framing == DFX_GZIP) {
        ret = gz_read_header(st->src, st->start, &in);
        if (ret < 0)
            return ret;
        if (in > st->end)
            return -EIO;
    }
    ix = calloc(1, sizeof(*ix));
    if (!ix)
        return -ENOMEM;
    ix->pts = calloc(DFX_INITIAL_POINTS, sizeof(*ix->pts));
    if (!ix->pts) {
        ret = -ENOMEM;
        goto out_free_ix;
    }
    ret = pthread_mutex_init(&ix->lock, NULL);
    if (ret) {
        ret = -ret;
        goto out_free_pts;
    }
    ix->st = *st;
    ix->spacing = spacing < DFX_MIN_SPACING ? DFX_MIN_SPACING : spacing;
    ix->isal = use_isal(st->decoder);
    ix->cap = DFX_INITIAL_POINTS;
    ix->npts = 1; /* point 0: out 0, no bits, no history (W_NONE) */
    ix->pts[0].in = in;
    ix->total = UINT64_MAX;
    ix->bad_from = UINT64_MAX;
    *out = ix;
    return 0;

out_free_pts:
    free(ix->pts);
out_free_ix:
    free(ix);
    return ret;
}

/* Contract in dfx.h. */
void dfx_index_free(struct dfx_index *ix)
{
    struct fetch_src *f;

    if (!ix)
        return;
    budget_give(ix->st.budget, ix->mem_bytes);
    points_free(ix->pts, ix->npts);
    if (ix->fetch) {
        ix->fetch->next = ix->retired;
        ix->retired = ix->fetch;
    }
    while ((f = ix->retired)) {
        ix->retired = f->next;
        if (f->f.release)
            f->f.release(f->f.ctx);
        free(f);
    }
    pthread_mutex_destroy(&ix->lock);
    free(ix);
}

/* Contract in dfx.h. */
size_t dfx_index_points(struct dfx_index *ix)
{
    size_t n;

    pthread_mutex_lock(&ix->lock);
    n = ix->npts;
    pthread_mutex_unlock(&ix->lock);
    return n;
}

/* Contract in dfx.h. */
uint64_t dfx_index_frontier(struct dfx_index *ix)
{
    uint64_t f;

    pthread_mutex_lock(&ix->lock);
    f = ix->pts[ix->npts - 1].out;
    pthread_mutex_unlock(&ix->lock);
    return f;
}

/* Contract in dfx.h. */
uint64_t dfx_index_total(struct dfx_index *ix)
{
    uint64_t t;

    pthread_mutex_lock(&ix->lock);
    t = ix->total;
    pthread_mutex_unlock(&ix->lock);
    return t;
}

/* Contract in dfx.h. */
int dfx_index_error(struct dfx_index *ix)
{
    int e;

    pthread_mutex_lock(&ix->lock);
    e = ix->error;
    pthread_mutex_unlock(&ix->lock);
    return e;
}

/* Source offset of the next compressed byte inflate will take. */
static uint64_t in_pos(const struct dfx_reader *r)
{
    /* At a stream end ISA-L has read ahead: those bytes are not used yet. */
    uint64_t ahead = r->isal ? dfx_isal_unused(r->isal) : 0;

    return r->buf_off + (uint64_t)(r->zs.next_in - r->inbuf) - ahead;
}

/* Make off the next compressed byte, reusing buffered input when it holds off. */
static void seek_input(struct dfx_reader *r, uint64_t off)
{
    if (off >= r->buf_off && off - r->buf_off <= r->buf_len) {
        size_t skip = (size_t)(off - r->buf_off);
        r->zs.next_in = r->inbuf + skip;
        r->zs.avail_in = (uInt)(r->buf_len - skip);
        return;
    }
    r->buf_off = off;
    r->buf_len = 0;
    r->zs.next_in = r->inbuf;
    r->zs.avail_in = 0;
}

/* Load the compressed bytes after the buffer (which inflate has used up),
 * never past the stream end. At the end nothing is loaded: inflate may still
 * finish without more input, and says Z_BUF_ERROR if it cannot. */
static int refill(struct dfx_reader *r)
{
    const struct dfx_stream *st = &r->ix->st;
    uint64_t at = r->buf_off + r->buf_len;
    size_t want;
    int64_t n;

    if (at >= st->end)
        return 0;
    want = st->end - at < DFX_INBUF_SIZE ? (size_t)(st->end - at) : DFX_INBUF_SIZE;
    if (st->src->read_size && want > st->src->read_size)
        want = st->src->read_size; /* no more than the source advises */
    n = src_pread(st->src, r->inbuf, want, at);
    if (n < 0)
        return (int)n;
    if (n == 0)
        return damage_as(r, r->pos, DFX_DAMAGE_TRUNCATED); /* the source is shorter */
    r->buf_off = at;
    r->buf_len = (size_t)n;
    r->zs.next_in = r->inbuf;
    r->zs.avail_in = (uInt)n;
    return 0;
}

/* Make p's first whole byte (p->in) the next input byte and, if the point
 * starts inside the byte before it (p->bits), put that byte in *prev: from
 * the buffer if it holds it, else by loading the buffer from there, so the
 * byte and the input after it come in one read. */
static int seek_point(struct dfx_reader *r, const struct dfx_point *p, unsigned char *prev)
{
    int ret;

    *prev = 0;
    if (!p->bits) {
        seek_input(r, p->in);
        return 0;
    }
    seek_input(r, p->in - 1);
    if (r->zs.avail_in == 0) {
        ret = refill(r);
        if (ret < 0)
            return ret;
        if (r->zs.avail_in == 0)
            return damage_as(r, r->pos, DFX_DAMAGE_TRUNCATED); /* in - 1 past the end */
    }
    *prev = *r->zs.next_in++;
    r->zs.avail_in--;
    return 0;
}

/* Put the reader's engine (ISA-L if r->isal, else a fresh or reset zlib)
 * on p's bit position and its history, which is in r->hist, and the input
 * on p's first whole byte. */
static int prime_engine(struct dfx_reader *r, const struct dfx_point *p)
{
    unsigned char byte;
    int ret = seek_point(r, p, &byte);

    if (ret < 0)
        return ret;
    if (r->isal)
        return dfx_isal_start_at(r->isal, p->out, p->in, p->bits, byte, r->hist, p->window_len);
    if (p->bits) {
        ret = inflatePrime(&r->zs, p->bits, byte >> (8 - p->bits));
        if (ret != Z_OK)
            return zlib_errno(ret);
    }
    if (p->window_len) {
        ret = inflateSetDictionary(&r->zs, r->hist, p->window_len);
        if (ret != Z_OK)
            return zlib_errno(ret);
    }
    return 0;
}

/* A marking reader's restart point becomes p, whose window is in r->hist:
 * the buffers change places, so nothing is copied. */
static void keep_restart(struct dfx_reader *r, const struct dfx_point *p)
{
    unsigned char *w = r->rwin;

    r->rp = *p;
    r->rp.mem = NULL;
    r->rwin = r->hist;
    r->hist = w;
}

/* Position a fresh decoder at point p (a copy taken under the lock), whose
 * history grab_history() put in r->hist. ISA-L decodes if the index uses it,
 * marking or (behind r->isal_stop) not. */
static int start_at_point(struct dfx_reader *r, const struct dfx_point *p, unsigned step)
{
    const struct dfx_stream *st = &r->ix->st;
    int ret;

    if (!r->ix->isal || (!r->marking && p->out >= r->isal_stop)) {
        r->marking = false;
    } else {
        ret = dfx_isal_new(&r->isal);
        if (ret < 0)
            return ret;
        dfx_isal_set_step(r->isal, step);
        dfx_isal_test_skew(r->isal, r->skew, r->skew_from);
    }
    if (r->marking && !(r->rwin = malloc(DFX_WINDOW_SIZE)))
        return -ENOMEM;
    r->pos = p->out;
    ret = prime_engine(r, p);
    if (ret < 0)
        return ret;
    if (r->marking)
        keep_restart(r, p);
    r->member_out = p->member_out;
    if (st->framing == DFX_GZIP)
        r->crc_on = p->out == p->member_out;
    else
        r->crc_on = st->check_crc && p->out == 0;
    r->crc = crc32(0, Z_NULL, 0);
    return 0;
}

/* Copy point i, and what it takes to get its history without the lock, into
 * g: a raw window goes into hist (DFX_WINDOW_SIZE bytes) right away. The
 * point must be usable. Caller holds the lock. 0 or -ENOMEM. */
static int grab_locked(struct dfx_index *ix, size_t i, struct grab *g, unsigned char *hist)
{
    const struct dfx_point *p = &ix->pts[i];

    g->p = *p;
    g->z = NULL;
    g->src = NULL;
    if (p->kind == W_RAW) {
        memcpy(hist, p->mem, p->window_len);
    } else if (p->kind == W_ZIP) {
        g->z = malloc(p->zlen);
        if (!g->z)
            return -ENOMEM;
        memcpy(g->z, p->mem, p->zlen);
    } else if (p->kind == W_FILE) {
        g->src = ix->fetch;
        if (p->mem) { /* held in memory: no fetch, the same check */
            g->z = malloc(p->zlen);
            if (!g->z)
                return -ENOMEM;
            memcpy(g->z, p->mem, p->zlen);
        }
    }
    return 0;
}

/* The history of a grabbed point into hist, without the lock: inflate a
 * compressed copy, or fetch the window and inflate it (zlib checks its
 * Adler-32 and length). 0, -EIO (the window is not what it should be: a
 * fetch source that changed), -ENOMEM. Frees what g owns. */
static int grab_history(struct grab *g, unsigned char *hist)
{
    unsigned char *z = g->z;
    int ret = 0;

    g->z = NULL;
    if (g->p.kind == W_FILE && !z) {
        z = malloc(g->p.zlen);
        if (!z)
            return -ENOMEM;
        ret = g->src->f.read(g->src->f.ctx, z, g->p.zlen, g->p.woff);
        if (ret < 0 && ret != -ENOMEM)
            ret = -EIO;
    }
    if (ret == 0 && z)
        ret = window_inflate(z, g->p.zlen, hist, g->p.window_len);
    /* A file's window must be the one saved for this point, not just any
     * window that inflates. */
    if (ret == 0 && g->p.kind == W_FILE &&
        dfx_isal_crc32(0, hist, g->p.window_len) != g->p.wcrc)
        ret = -EIO;
    free(z);
    return ret;
}

/* A grabbed point's window turned out bad: drop it from the index (if the
 * point is still there with that window), so no reader tries it again. */
static void drop_grabbed(struct dfx_index *ix, const struct grab *g)
{
    struct dfx_point *p;

    pthread_mutex_lock(&ix->lock);
    p = &ix->pts[find_point_locked(ix, g->p.out)];
    if (p->out == g->p.out && p->kind == g->p.kind &&
        (p->kind == W_FILE ? ix->fetch == g->src : p->mem == g->p.mem)) {
        drop_mem_locked(ix, p);
        p->kind = W_LOST;
    }
    pthread_mutex_unlock(&ix->lock);
}

/* The input a reader starting at point i for offset off reads first: from
 * the byte holding the point's first bits through the input of the output
 * up to DFX_PREFETCH_OUT past off, estimated at the ratio of the stretch up
 * to the next point (no next point: one input buffer). Caller holds the
 * lock. */
static void prefetch_range(const struct dfx_index *ix, size_t i, uint64_t off, uint64_t *from,
                           uint64_t *len)
{
    const struct dfx_point *p = &ix->pts[i], *q = i + 1 < ix->npts ? &ix->pts[i + 1] : NULL;
    uint64_t n = DFX_INBUF_SIZE;

    *from = p->in - (p->bits ? 1 : 0);
    if (q && q->out > p->out && off >= p->out) {
        double out = (double)(off - p->out) + DFX_PREFETCH_OUT;
        double est = out * (double)(q->in - p->in) / (double)(q->out - p->out) + 1;

        n = est > DFX_PREFETCH_MAX ? DFX_PREFETCH_MAX : est < n ? n : (uint64_t)est;
    }
    *len = *from < ix->st.end ? (ix->st.end - *from < n ? ix->st.end - *from : n) : 0;
}

/* Contract in dfx.h. */
int dfx_reader_new(struct dfx_index *ix, uint64_t off, struct dfx_reader **out)
{
    uint64_t pf_from = 0, pf_len = 0;
    struct dfx_reader *r;
    unsigned step = 0;
    struct grab g;
    int ret;

    *out = NULL;
    r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->ix = ix;
    r->inbuf = malloc(DFX_INBUF_SIZE);
    r->hist = malloc(DFX_WINDOW_SIZE);
    if (!r->inbuf || !r->hist) {
        ret = -ENOMEM;
        goto out_free;
    }
    ret = inflateInit2(&r->zs, DFX_WBITS_RAW);
    if (ret != Z_OK) {
        ret = zlib_errno(ret);
        goto out_free;
    }
    r->zs_live = true;

    /* The nearest usable point at or before off. A window that does not
     * come back right (a saved index file changed since it was loaded) is
     * dropped, and the point before it tried: the index is a cache. Point 0
     * needs no window, so this ends. The input is asked for first, so that
     * it comes in while the window is fetched and inflated. */
    for (;;) {
        size_t i;

        pthread_mutex_lock(&ix->lock);
        i = find_point_locked(ix, off);
        while (!usable(&ix->pts[i]))
            i--;
        ret = grab_locked(ix, i, &g, r->hist);
        r->next_point = sat_add(ix->pts[ix->npts - 1].out, ix->spacing);
        r->marking = ix->isal && !ix->mark_off;
        step = ix->mark_step;
        r->skew = ix->test_skew;
        r->skew_from = ix->test_skew_from;
        r->isal_stop = r->marking ? UINT64_MAX : ix->pts[last_usable_locked(ix)].out;
        prefetch_range(ix, i, off, &pf_from, &pf_len);
        pthread_mutex_unlock(&ix->lock);
        src_prefetch(ix->st.src, pf_from, pf_len);
        if (ret == 0)
            ret = grab_history(&g, r->hist);
        if (ret != -EIO)
            break;
        drop_grabbed(ix, &g);
        off = g.p.out - 1; /* > 0: point 0 never fails */
    }
    if (ret == 0)
        ret = start_at_point(r, &g.p, step);
    if (ret < 0)
        goto out_free;
    *out = r;
    return 0;

out_free:
    dfx_reader_free(r);
    return ret;
}

/* Contract in dfx.h. */
uint64_t dfx_reader_pos(const struct dfx_reader *r)
{
    return r->pos;
}

/* Contract in dfx.h. */
void dfx_reader_free(struct dfx_reader *r)
{
    if (!r)
        return;
    if (r->zs_live)
        inflateEnd(&r->zs);
    dfx_isal_free(r->isal);
    free(r->inbuf);
    free(r->scratch);
    free(r->hist);
    free(r->rwin);
    free(r);
}

/* Record the block boundary p (out, in, bits, member_out, window_len set),
 * whose window is in r->hist, as a point if it lies far enough past the
 * last one (append_point_locked()). A failure to record a point is not an
 * error: the index is a cache. The window is sent to the index's sink, or
 * kept in memory (compressed if the index asks for that) within the
 * budget. */
static void add_point(struct dfx_reader *r, struct dfx_point *p)
{
    struct dfx_index *ix = r->ix;
    uint32_t wlen = p->window_len;
    struct dfx_sink sink;
    bool zip, has_sink, kept, far;

    p->mem = NULL;
    pthread_mutex_lock(&ix->lock);
    ix->mark_fails = 0; /* a boundary was found: searches do not keep failing */
    far = p->out >= sat_add(ix->pts[ix->npts - 1].out, ix->spacing);
    if (!far)
        r->next_point = sat_add(ix->pts[ix->npts - 1].out, ix->spacing);
    zip = ix->zip_windows;
    has_sink = ix->has_sink;
    sink = ix->sink;
    pthread_mutex_unlock(&ix->lock);
    if (!far)
        return; /* another reader got there first: save the window's copy */
    if (wlen == 0) {
        p->kind = W_NONE; /* right at a member start: no history needed */
    } else if (has_sink && sink.put(sink.ctx, r->hist, wlen, &p->woff, &p->zlen) == 0) {
        p->kind = W_SUNK;
        p->wcrc = dfx_isal_crc32(0, r->hist, wlen);
    } else if (zip) {
        if (window_deflate(r->hist, wlen, &p->mem, &p->zlen) < 0)
            return;
        p->kind = W_ZIP;
    } else {
        p->mem = malloc(wlen);
        if (!p->mem)
            return;
        memcpy(p->mem, r->hist, wlen);
        p->kind = W_RAW;
    }

    pthread_mutex_lock(&ix->lock);
    kept = append_point_locked(ix, p);
    r->next_point = sat_add(ix->pts[ix->npts - 1].out, ix->spacing);
    pthread_mutex_unlock(&ix->lock);
    if (!kept)
        free(p->mem);
    p->mem = NULL;
}

/* Called after every inflate(Z_BLOCK) that returned Z_OK: a boundary at or
 * past next_point becomes a point, with the window zlib keeps. */
static void maybe_add_point(struct dfx_reader *r)
{
    int dt = r->zs.data_type;
    struct dfx_point p = {0};
    uInt wlen = 0;

    /* The boundary after the final block is no place to restart. */
    if (!(dt & DFX_DT_BOUNDARY) || (dt & DFX_DT_LAST) || r->pos < r->next_point)
        return;
    if (inflateGetDictionary(&r->zs, r->hist, &wlen) != Z_OK)
        return;
    p.out = r->pos;
    p.in = in_pos(r);
    p.bits = dt & DFX_DT_BITS;
    p.member_out = r->member_out;
    p.window_len = wlen;
    add_point(r, &p);
}

/* The stream is over: publish the total size. */
static int finish(struct dfx_reader *r)
{
    struct dfx_index *ix = r->ix;

    r->at_end = true;
    pthread_mutex_lock(&ix->lock);
    if (ix->total == UINT64_MAX)
        ix->total = r->pos;
    pthread_mutex_unlock(&ix->lock);
    return 0;
}

/* True if the stream has an expected size: always for RAW, for GZIP if set. */
static bool has_usize(const struct dfx_stream *st)
{
    return st->framing == DFX_RAW || st->usize != UINT64_MAX;
}

/* The output size disagrees with usize: poison the stream (RAW) or the
 * current member (GZIP), as for a failed CRC. */
static int size_damage(struct dfx_reader *r)
{
    return damage_as(r, r->ix->st.framing == DFX_RAW ? 0 : r->member_out, DFX_DAMAGE_SIZE);
}

/* Output just went past usize (GZIP without one: never). */
static bool past_usize(const struct dfx_reader *r)
{
    return has_usize(&r->ix->st) && r->pos > r->ix->st.usize;
}

/* RAW: the zip directory's size and CRC describe the whole stream. */
static int raw_end(struct dfx_reader *r)
{
    const struct dfx_stream *st = &r->ix->st;

    if (r->pos != st->usize)
        return size_damage(r);
    if (r->crc_on && r->crc != st->crc)
        return damage_as(r, 0, DFX_DAMAGE_CRC);
    return finish(r);
}

/* Ready the engine for a new raw stream (the next gzip member's deflate
 * data, from source offset data_off) that starts on a byte boundary with no
 * history. A marking reader marks on unless the index stopped marking; a
 * reader that does not mark and has reached the last usable point hands
 * over to zlib here, where that is exact. */
static int reset_engine(struct dfx_reader *r, uint64_t data_off)
{
    struct dfx_index *ix = r->ix;
    uint64_t stop, frontier;
    bool off;
    int ret;

    if (r->isal) {
        pthread_mutex_lock(&ix->lock);
        stop = ix->pts[last_usable_locked(ix)].out;
        frontier = ix->pts[ix->npts - 1].out;
        off = ix->mark_off;
        pthread_mutex_unlock(&ix->lock);
        if (r->marking && !off) {
            r->rp = (struct dfx_point){.out = r->pos, .in = data_off, .member_out = r->pos};
            return dfx_isal_start_at(r->isal, r->pos, data_off, 0, 0, NULL, 0);
        }
        r->marking = false;
        if (stop > r->pos) {
            r->isal_stop = stop;
            return dfx_isal_start_at(r->isal, r->pos, data_off, 0, 0, NULL, 0);
        }
        dfx_isal_free(r->isal);
        r->isal = NULL;
        r->next_point = sat_add(frontier, ix->spacing);
    }
    ret = inflateReset(&r->zs);
    return ret == Z_OK ? 0 : zlib_errno(ret);
}

/* GZIP: the file is over after the last member's trailer; with usize
 * known, the output must have been exactly that long. */
static int gzip_end(struct dfx_reader *r)
{
    if (has_usize(&r->ix->st) && r->pos != r->ix->st.usize)
        return size_damage(r);
    return finish(r);
}

/* GZIP: after a trailer at off, either another member follows (reset the
 * decoder onto its deflate data) or the file is over. Zero padding, a tail
 * too short to be a member, or bytes without the gzip magic end the stream,
 * as they do for gzip(1). */
static int next_member(struct dfx_reader *r, uint64_t off)
{
    const struct dfx_stream *st = &r->ix->st;
    unsigned char magic[2];
    uint64_t data_off;
    int ret;

    if (off > st->end || st->end - off < DFX_GZ_MIN_MEMBER)
        return gzip_end(r);
    ret = src_read_exact(st->src, magic, sizeof(magic), off);
    if (ret < 0)
        return source_errno(r, ret);
    if (magic[0] != 0x1f || magic[1] != 0x8b)
        return gzip_end(r);
    ret = gz_read_header(st->src, off, &data_off);
    if (ret == -EINVAL || ret == -EBADMSG || ret == -EIO || (ret == 0 && data_off > st->end))
        return damage(r, r->pos);
    if (ret < 0)
        return ret;
    ret = reset_engine(r, data_off);
    if (ret < 0)
        return ret;
    seek_input(r, data_off);
    r->member_out = r->pos;
    r->crc_on = true;
    r->crc = crc32(0, Z_NULL, 0);
    return 0;
}

/* GZIP: a member's ISIZE (its size mod 2^32) disagrees with its output. */
static int member_size_damage(struct dfx_reader *r, uint32_t isize)
{
    struct dfx_index *ix = r->ix;
    uint64_t made = r->pos - r->member_out;
    struct dfx_damage d = {.error = -EIO, .kind = DFX_DAMAGE_SIZE, .from = r->member_out,
                           .expected = (made & ~(uint64_t)UINT32_MAX) | isize, .actual = made};

    dfx_index_set_damage_info(ix, &d);
    return -EIO;
}

/* GZIP: a member's deflate data ended; its trailer follows immediately. */
static int member_end(struct dfx_reader *r)
{
    const struct dfx_stream *st = &r->ix->st;
    uint64_t off = in_pos(r);
    uint32_t crc, isize;
    int ret;

    /* A member whose trailer is cut off cannot be verified: poison all of it. */
    if (off > st->end || st->end - off < GZ_TRAILER_LEN)
        return damage_as(r, r->member_out, DFX_DAMAGE_TRUNCATED);
    ret = gz_read_trailer(st->src, off, &crc, &isize);
    if (ret == -EIO)
        return damage_as(r, r->member_out, DFX_DAMAGE_TRUNCATED);
    if (ret < 0)
        return ret;
    if (r->crc_on && crc != r->crc)
        return damage_as(r, r->member_out, DFX_DAMAGE_CRC);
    if (isize != (uint32_t)(r->pos - r->member_out))
        return member_size_damage(r, isize);
    return next_member(r, off + GZ_TRAILER_LEN);
}

/* Count output just decoded into buf, and fold it into the CRC. */
static void took_output(struct dfx_reader *r, const unsigned char *buf, size_t made)
{
    if (r->crc_on) /* the same CRC as zlib's crc32(), faster with ISA-L built in */
        r->crc = dfx_isal_crc32((uint32_t)r->crc, buf, made);
    r->pos += made;
}

/* Hand an ISA-L reader over to zlib at point p (history in r->hist), where its
 * output stands: p->out == r->pos, in the current member. zlib restarts
 * from p's own bit position and history; position, member and CRC go on. */
static int switch_to_zlib(struct dfx_reader *r, const struct dfx_point *p)
{
    int ret;

    dfx_isal_free(r->isal);
    r->isal = NULL;
    ret = inflateReset(&r->zs);
    if (ret != Z_OK)
        return zlib_errno(ret);
    ret = prime_engine(r, p);
    if (ret < 0)
        return ret;
    r->next_point = sat_add(p->out, r->ix->spacing);
    return 0;
}

/* An ISA-L reader's output reached isal_stop. Then either the index grew
 * meanwhile (decode on to its new last usable point), or zlib takes over at
 * the last usable point, which lies right here. Here r->pos > r->member_out
 * (an ISA-L reader standing at a member start has switched in
 * reset_engine() already), so a point here with our member_out is in our
 * member. One with a later member_out sits at that member's start, where
 * our member's output ends: ISA-L decodes our member's end (no more output)
 * and reset_engine() switches at that start. So does any other case (the
 * point's window was dropped meanwhile, or a saved window no longer
 * inflates): ISA-L decodes on, recording nothing, until a member start or
 * the end. */
static int isal_at_stop(struct dfx_reader *r)
{
    struct dfx_index *ix = r->ix;
    struct grab g;
    uint64_t next;
    int ret = -ENOENT;

    pthread_mutex_lock(&ix->lock);
    next = sat_add(ix->pts[ix->npts - 1].out, ix->spacing);
    g.p = ix->pts[last_usable_locked(ix)];
    if (g.p.out > r->pos) {
        r->isal_stop = g.p.out;
        pthread_mutex_unlock(&ix->lock);
        return 0;
    }
    if (g.p.out == r->pos && g.p.member_out == r->member_out)
        ret = grab_locked(ix, last_usable_locked(ix), &g, r->hist);
    pthread_mutex_unlock(&ix->lock);
    if (ret == 0) {
        ret = grab_history(&g, r->hist);
        if (ret == -EIO)
            drop_grabbed(ix, &g);
    }
    if (ret == 0) {
        ret = switch_to_zlib(r, &g.p);
        if (next > r->next_point)
            r->next_point = next; /* points without a window lie past p */
        return ret;
    }
    if (ret == -ENOMEM)
        return ret;
    r->isal_stop = UINT64_MAX;
    return 0;
}

/* ISA-L found invalid data after making `made` bytes in the same call (it
 * decodes ahead of the output it hands out, so a request that ends just
 * before a damaged block sees the error too). Those bytes come before the
 * damage, which is recorded from their end: hand them out, and fail the
 * next step, as zlib (which stops when the output is full) would. */
static int defer_damage(struct dfx_reader *r, size_t made)
{
    int err = damage(r, r->pos);

    if (!made)
        return err;
    r->deferred = err;
    return 0;
}

/* step() for an ISA-L reader: the same contract, but output stops at
 * isal_stop, and no points are recorded. */
static int step_isal(struct dfx_reader *r)
{
    const struct dfx_stream *st = &r->ix->st;
    unsigned char *before = r->zs.next_out;
    unsigned int room = r->zs.avail_out, offered;
    size_t made;
    int ret;

    if (r->pos >= r->isal_stop) {
        ret = isal_at_stop(r);
        if (ret < 0 || !r->isal)
            return ret; /* switched: the next step() is zlib's */
    }
    if (r->isal_stop - r->pos < room)
        room = (unsigned int)(r->isal_stop - r->pos);
    if (r->zs.avail_in == 0) {
        ret = refill(r);
        if (ret < 0)
            return ret;
    }
    offered = r->zs.avail_in;
    ret = dfx_isal_inflate(r->isal, &r->zs.next_in, &r->zs.avail_in, &r->zs.next_out, &room);
    made = (size_t)(r->zs.next_out - before);
    r->zs.avail_out -= (unsigned int)made;
    if (made)
        took_output(r, before, made);
    if (past_usize(r))
        return size_damage(r);
    if (ret == DFX_ISAL_END)
        return st->framing == DFX_GZIP ? member_end(r) : raw_end(r);
    /* Nothing made although all input up to the stream end was offered:
     * truncated. With input left and room for output, ISA-L has no reason
     * to stop: treat that as damage too rather than spin. */
    if (ret < 0)
        return defer_damage(r, made);
    if (!made && (offered == 0 || r->zs.avail_in > 0))
        return no_progress(r, offered);
    return 0;
}

/* Push next_point to one spacing past the index's last point, which other
 * readers may have moved since this one last looked; past the end of the
 * stream (once known) there is nothing to record. */
static void refresh_next_point(struct dfx_reader *r)
{
    struct dfx_index *ix = r->ix;
    uint64_t next;

    pthread_mutex_lock(&ix->lock);
    next = sat_add(ix->pts[ix->npts - 1].out, ix->spacing);
    if (ix->total != UINT64_MAX && next >= ix->total)
        next = UINT64_MAX;
    pthread_mutex_unlock(&ix->lock);
    if (next > r->next_point)
        r->next_point = next;
}

/* A marking reader found a checked boundary: record it, and make it the
 * reader's restart point (its window is in r->hist). */
static void took_mark(struct dfx_reader *r, const struct dfx_isal_mark *mk)
{
    struct dfx_point p = {.out = mk->out, .in = mk->in, .bits = mk->bits,
                          .member_out = r->member_out};

    p.window_len = dfx_isal_mark_window(r->isal, r->hist);
    add_point(r, &p);
    keep_restart(r, &p);
}

/* A search for a boundary failed (DFX_ISAL_NOMARK). Returns true if the
 * index stops marking: after DFX_MARK_TRIES fruitless searches in a row, or
 * at once if a boundary failed its check (ISA-L does not behave as
 * dfx_isal.c expects: never trust it again on this stream). */
static bool mark_failed(struct dfx_reader *r)
{
    struct dfx_index *ix = r->ix;
    struct dfx_isal_stats stats;
    bool off;

    dfx_isal_get_stats(r->isal, &stats);
    pthread_mutex_lock(&ix->lock);
    if (stats.rejected || ++ix->mark_fails >= DFX_MARK_TRIES)
        ix->mark_off = true;
    /* the next readers start searching with the smaller step */
    if (!ix->mark_step || dfx_isal_get_step(r->isal) < ix->mark_step)
        ix->mark_step = dfx_isal_get_step(r->isal);
    off = ix->mark_off;
    pthread_mutex_unlock(&ix->lock);
    return off;
}

/* zlib, primed at point q, decodes the output from q->out up to target once
 * more (it was handed out and folded into the CRC already: dropped here),
 * recording points at the block boundaries it passes, where ISA-L found
 * none. */
static int zlib_catch_up(struct dfx_reader *r, const struct dfx_point *q, uint64_t target)
{
    int ret = 0;

    if (!r->scratch && !(r->scratch = malloc(DFX_SCRATCH_SIZE)))
        return -ENOMEM;
    r->pos = q->out;
    while (ret == 0 && r->pos < target) {
        size_t want = target - r->pos < DFX_SCRATCH_SIZE ? (size_t)(target - r->pos)
                                                         : DFX_SCRATCH_SIZE;
        int zret;

        if (r->zs.avail_in == 0 && (ret = refill(r)) < 0)
            break;
        r->zs.next_out = r->scratch;
        r->zs.avail_out = (uInt)want;
        zret = inflate(&r->zs, Z_BLOCK);
        r->pos += want - r->zs.avail_out;
        if (zret == Z_OK)
            maybe_add_point(r);
        else if (zret == Z_STREAM_END && r->pos == target)
            break; /* at a stream end the next step() sees it again */
        else if (zret == Z_MEM_ERROR)
            ret = -ENOMEM;
        else /* zlib refuses what ISA-L took, or the stream ends before */
            ret = damage(r, target);
    }
    r->pos = target;
    return ret;
}

/* The index stopped marking: hand a marking reader over to zlib where its
 * output stands. zlib restarts at the reader's restart point, or at a later
 * usable point of the index in the same member (after rp, inside the
 * member's output, at or before pos: see the top of the file), and decodes
 * up to pos again (zlib_catch_up()). Position, member and CRC go on. */
static int fall_back(struct dfx_reader *r)
{
    struct dfx_index *ix = r->ix;
    struct dfx_point q = r->rp;
    const struct dfx_point *p;
    struct grab g;
    uint64_t next;
    int ret = -ENOENT;

    pthread_mutex_lock(&ix->lock);
    next = sat_add(ix->pts[ix->npts - 1].out, ix->spacing);
    p = &ix->pts[find_point_locked(ix, r->pos)];
    while (p > ix->pts && !usable(p))
        p--;
    if (p->out > q.out && p->out > r->member_out && p->member_out == r->member_out)
        ret = grab_locked(ix, (size_t)(p - ix->pts), &g, r->hist);
    pthread_mutex_unlock(&ix->lock);
    if (ret == 0) {
        ret = grab_history(&g, r->hist);
        if (ret == -EIO)
            drop_grabbed(ix, &g);
    }
    if (ret == -ENOMEM)
        return ret;
    if (ret == 0)
        q = g.p;
    else
        memcpy(r->hist, r->rwin, q.window_len);

    dfx_isal_free(r->isal);
    r->isal = NULL;
    r->marking = false;
    ret = inflateReset(&r->zs);
    if (ret != Z_OK)
        return zlib_errno(ret);
    ret = prime_engine(r, &q);
    if (ret < 0)
        return ret;
    r->next_point = next;
    return zlib_catch_up(r, &q, r->pos);
}

/* step() for a marking ISA-L reader: the same contract. Far from next_point
 * plain ISA-L runs; near it, dfx_isal_inflate_mark() looks for a boundary
 * at or past it. */
static int step_mark(struct dfx_reader *r)
{
    const struct dfx_stream *st = &r->ix->st;
    unsigned char *before = r->zs.next_out;
    unsigned int room = r->zs.avail_out, offered;
    struct dfx_isal_mark mk;
    bool off = false;
    size_t made;
    int ret;

    if (r->zs.avail_in == 0) {
        ret = refill(r);
        if (ret < 0)
            return ret;
    }
    offered = r->zs.avail_in;
    if (sat_add(r->pos, DFX_MARK_REACH) >= r->next_point)
        refresh_next_point(r);
    if (sat_add(r->pos, DFX_MARK_REACH) < r->next_point)
        ret = dfx_isal_inflate(r->isal, &r->zs.next_in, &r->zs.avail_in, &r->zs.next_out, &room);
    else
        ret = dfx_isal_inflate_mark(r->isal, &r->zs.next_in, &r->zs.avail_in, &r->zs.next_out,
                                    &room, r->next_point, &mk);
    made = (size_t)(r->zs.next_out - before);
    r->zs.avail_out -= (unsigned int)made;
    if (made)
        took_output(r, before, made);
    if (past_usize(r))
        return size_damage(r);
    if (ret == -ENOMEM)
        return ret;
    if (ret < 0)
        return defer_damage(r, made);
    if (ret & DFX_ISAL_MARK)
        took_mark(r, &mk);
    if (ret & DFX_ISAL_NOMARK) {
        off = mark_failed(r);
        r->next_point = r->pos; /* search again from here, in smaller steps */
    }
    if (ret & DFX_ISAL_END) /* a next member sees that marking stopped */
        return st->framing == DFX_GZIP ? member_end(r) : raw_end(r);
    if (off) {
        /* fill() counts the output by zs.next_out, which the catch-up uses */
        unsigned char *next_out = r->zs.next_out;
        unsigned int avail_out = r->zs.avail_out;

        ret = fall_back(r);
        r->zs.next_out = next_out;
        r->zs.avail_out = avail_out;
        return ret;
    }
    /* Nothing made although all input up to the stream end was offered:
     * truncated. With input left and room for output, ISA-L has no reason
     * to stop: treat that as damage too rather than spin. */
    if (ret == 0 && !made && (offered == 0 || r->zs.avail_in > 0))
        return no_progress(r, offered);
    return 0;
}

/* One inflate call into zs.next_out/avail_out (set by the caller, non-empty):
 * fetch input if needed, account for the output, record a point at a block
 * boundary, handle the end of a stream or member. */
static int step(struct dfx_reader *r)
{
    const struct dfx_stream *st = &r->ix->st;
    unsigned char *before = r->zs.next_out;
    size_t made;
    int ret;

    if (r->deferred)
        return r->deferred;
    if (r->isal)
        return r->marking ? step_mark(r) : step_isal(r);
    if (r->zs.avail_in == 0) {
        ret = refill(r);
        if (ret < 0)
            return ret;
    }
    ret = inflate(&r->zs, Z_BLOCK);
    made = (size_t)(r->zs.next_out - before);
    if (made)
        took_output(r, before, made);
    if (past_usize(r))
        return size_damage(r);
    switch (ret) {
    case Z_OK:
        maybe_add_point(r);
        return 0;
    case Z_STREAM_END:
        return st->framing == DFX_GZIP ? member_end(r) : raw_end(r);
    case Z_BUF_ERROR:
        /* No progress although all input up to the stream end was offered
         * (step refills whenever the buffer is empty): truncated. */
        return damage_as(r, r->pos, DFX_DAMAGE_TRUNCATED);
    case Z_DATA_ERROR:
    case Z_NEED_DICT:
        return damage(r, r->pos);
    default:
        return zlib_errno(ret);
    }
}

/* Decode up to len bytes into buf; *done counts them even on error. */
static int fill(struct dfx_reader *r, unsigned char *buf, size_t len, size_t *done)
{
    *done = 0;
    while (*done < len && !r->at_end) {
        size_t want = len - *done;
        int ret;

        r->zs.next_out = buf + *done;
        r->zs.avail_out = want > UINT_MAX ? UINT_MAX : (uInt)want;
        ret = step(r);
        *done += (size_t)(r->zs.next_out - (buf + *done));
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* Once the output reaches usize, decode on to the end of the stream so the
 * size, CRC and ISIZE checks (GZIP: of every member left, whose output must
 * be empty) run for the read that returns the last byte, not only for one
 * that asks past it. Any further byte is damage (step). */
static int finish_at_usize(struct dfx_reader *r)
{
    unsigned char extra;
    size_t done;

    if (!has_usize(&r->ix->st) || r->at_end || r->pos != r->ix->st.usize)
        return 0;
    return fill(r, &extra, 1, &done);
}

/* Fail a read whose output reaches data that an earlier check found bad. */
static int check_poison(struct dfx_reader *r)
{
    struct dfx_index *ix = r->ix;
    int ret = 0;

    pthread_mutex_lock(&ix->lock);
    if (r->pos > ix->bad_from)
        ret = ix->error;
    pthread_mutex_unlock(&ix->lock);
    return ret;
}

/* Contract in dfx.h. */
int64_t dfx_reader_read(struct dfx_reader *r, void *buf, size_t len)
{
    size_t done;
    int ret;

    if (r->err)
        return r->err;
    if (len > INT64_MAX)
        return -EINVAL;
    ret = fill(r, buf, len, &done);
    if (ret == 0)
        ret = finish_at_usize(r);
    if (ret == 0)
        ret = check_poison(r);
    if (ret < 0) {
        /* Bytes decoded before the error in this call are not handed out. */
        r->err = ret;
        return ret;
    }
    return (int64_t)done;
}

/* Decode and discard up to n bytes; *skipped is short only at end of stream. */
static int skip_upto(struct dfx_reader *r, uint64_t n, uint64_t *skipped)
{
    *skipped = 0;
    if (n && !r->scratch) {
        r->scratch = malloc(DFX_SCRATCH_SIZE);
        if (!r->scratch)
            return -ENOMEM;
    }
    while (*skipped < n) {
        uint64_t left = n - *skipped;
        size_t want = left < DFX_SCRATCH_SIZE ? (size_t)left : DFX_SCRATCH_SIZE;
        int64_t got = dfx_reader_read(r, r->scratch, want);
        if (got < 0)
            return (int)got;
        if (got == 0)
            break;
        *skipped += (uint64_t)got;
    }
    return 0;
}

/* Contract in dfx.h. */
int dfx_reader_skip(struct dfx_reader *r, uint64_t n)
{
    uint64_t skipped;
    int ret = skip_upto(r, n, &skipped);

    if (ret < 0)
        return ret;
    return skipped == n ? 0 : -EIO;
}

/* Contract in dfx.h. An offset at or past the end reads 0 bytes, like pread. */
int64_t dfx_extract(struct dfx_index *ix, uint64_t off, void *buf, size_t len)
{
    struct dfx_reader *r;
    uint64_t skipped;
    int64_t n;
    int ret;

    if (len == 0)
        return 0;
    ret = dfx_reader_new(ix, off, &r);
    if (ret < 0)
        return ret;
    ret = skip_upto(r, off - dfx_reader_pos(r), &skipped);
    if (ret < 0)
        n = ret;
    else if (dfx_reader_pos(r) < off)
        n = 0;
    else
        n = dfx_reader_read(r, buf, len);
    dfx_reader_free(r);
    return n;
}

/* Contract in dfx_internal.h. */
const struct dfx_stream *dfx_index_stream(const struct dfx_index *ix)
{
    return &ix->st;
}

/* Contract in dfx_internal.h. */
uint64_t dfx_index_spacing(const struct dfx_index *ix)
{
    return ix->spacing;
}

/* Contract in dfx_internal.h. */
void dfx_index_compress_windows(struct dfx_index *ix, bool on)
{
    pthread_mutex_lock(&ix->lock);
    ix->zip_windows = on;
    pthread_mutex_unlock(&ix->lock);
}

/* Contract in dfx_internal.h. */
bool dfx_index_marking(struct dfx_index *ix)
{
    bool on;

    pthread_mutex_lock(&ix->lock);
    on = ix->isal && !ix->mark_off;
    pthread_mutex_unlock(&ix->lock);
    return on;
}

/* Contract in dfx_internal.h. */
void dfx_index_set_marking(struct dfx_index *ix, bool on)
{
    pthread_mutex_lock(&ix->lock);
    ix->mark_off = !on;
    ix->mark_fails = 0;
    pthread_mutex_unlock(&ix->lock);
}

/* Contract in dfx_internal.h. */
void dfx_index_test_skew(struct dfx_index *ix, int skew, uint64_t from)
{
    pthread_mutex_lock(&ix->lock);
    ix->test_skew = skew;
    ix->test_skew_from = from;
    pthread_mutex_unlock(&ix->lock);
}

/* Contract in dfx_internal.h. */
int dfx_index_damage(struct dfx_index *ix, uint64_t *bad_from)
{
    int e;

    pthread_mutex_lock(&ix->lock);
    e = ix->error;
    *bad_from = ix->bad_from;
    pthread_mutex_unlock(&ix->lock);
    return e;
}

/* Contract in dfx.h. */
void dfx_index_set_damage(struct dfx_index *ix, int err, uint64_t from)
{
    struct dfx_damage d = {.error = err, .kind = DFX_DAMAGE_OTHER, .from = from};

    dfx_index_set_damage_info(ix, &d);
}

/* Contract in dfx.h. */
void dfx_index_set_damage_info(struct dfx_index *ix, const struct dfx_damage *d)
{
    pthread_mutex_lock(&ix->lock);
    set_damage_locked(ix, d);
    pthread_mutex_unlock(&ix->lock);
}

/* Contract in dfx.h. */
void dfx_index_damage_info(struct dfx_index *ix, struct dfx_damage *d)
{
    pthread_mutex_lock(&ix->lock);
    if (ix->error) {
        *d = ix->why;
        d->from = ix->bad_from;
    } else {
        *d = (struct dfx_damage){0};
    }
    pthread_mutex_unlock(&ix->lock);
}

/* Contract in dfx_internal.h. */
void dfx_index_set_sink(struct dfx_index *ix, const struct dfx_sink *sink)
{
    pthread_mutex_lock(&ix->lock);
    for (size_t i = 0; i < ix->npts; i++)
        if (ix->pts[i].kind == W_SUNK)
            ix->pts[i].kind = W_LOST;
    ix->has_sink = sink != NULL;
    if (sink)
        ix->sink = *sink;
    pthread_mutex_unlock(&ix->lock);
}

/* Contract in dfx_internal.h. */
void *dfx_index_sink_ctx(struct dfx_index *ix)
{
    void *ctx;

    pthread_mutex_lock(&ix->lock);
    ctx = ix->has_sink ? ix->sink.ctx : NULL;
    pthread_mutex_unlock(&ix->lock);
    return ctx;
}

/* Contract in dfx_internal.h. */
void dfx_index_memory(struct dfx_index *ix, size_t *nusable, uint64_t *window_bytes)
{
    size_t n = 0;

    pthread_mutex_lock(&ix->lock);
    for (size_t i = 0; i < ix->npts; i++)
        n += usable(&ix->pts[i]);
    *window_bytes = ix->mem_bytes;
    pthread_mutex_unlock(&ix->lock);
    *nusable = n;
}

/* Contract in dfx_internal.h. */
int dfx_index_export(struct dfx_index *ix, struct dfx_xpoint **pts, size_t *n, uint64_t *total)
{
    struct dfx_xpoint *x = NULL;
    int ret = 0;

    *pts = NULL;
    *n = 0;
    pthread_mutex_lock(&ix->lock);
    if (ix->error)
        ret = ix->error;
    else if (ix->total == UINT64_MAX)
        ret = -EAGAIN;
    else if (!(x = calloc(ix->npts, sizeof(*x))))
        ret = -ENOMEM;
    for (size_t i = 0; ret == 0 && i < ix->npts; i++) {
        const struct dfx_point *p = &ix->pts[i];
        bool sunk = p->kind == W_SUNK;

        /* A boundary before an empty last block is recorded (the total is
         * not known yet when it is met) but has no output after it: an
         * import refuses such a point, so it is never handed out. */
        if (i && p->out >= ix->total)
            break;
        x[*n] = (struct dfx_xpoint){.out = p->out, .in = p->in, .member_out = p->member_out,
                                   .bits = p->bits, .window_len = p->window_len,
                                   .woff = sunk ? p->woff : 0, .zlen = sunk ? p->zlen : 0,
                                   .wcrc = sunk ? p->wcrc : 0, .sunk = sunk,
                                   .usable = usable(p)};
        ++*n;
    }
    if (ret == 0)
        *total = ix->total;
    else
        *n = 0;
    pthread_mutex_unlock(&ix->lock);
    *pts = x;
    return ret;
}

/* Contract in dfx_internal.h. */
int dfx_index_window(struct dfx_index *ix, uint64_t out, unsigned char *buf, uint32_t *len)
{
    struct dfx_point *p;
    struct grab g;
    int ret = -ENOENT;

    *len = 0;
    pthread_mutex_lock(&ix->lock);
    p = &ix->pts[find_point_locked(ix, out)];
    if (p->out == out && usable(p))
        ret = grab_locked(ix, (size_t)(p - ix->pts), &g, buf);
    pthread_mutex_unlock(&ix->lock);
    if (ret < 0)
        return ret;
    ret = grab_history(&g, buf);
    if (ret == -EIO)
        drop_grabbed(ix, &g);
    if (ret == 0)
        *len = g.p.window_len;
    return ret;
}

/* One imported point against the one before it (NULL for point 0, which
 * must be the index's own point 0 at first_in). */
static bool import_point_ok(const struct dfx_index *ix, const struct dfx_xpoint *x,
                            const struct dfx_xpoint *prev, uint64_t first_in, uint64_t total)
{
    const struct dfx_stream *st = &ix->st;

    if (x->bits < 0 || x->bits > 7 || x->window_len > DFX_WINDOW_SIZE)
        return false;
    if ((x->window_len == 0) != (x->zlen == 0) ||
        (x->window_len == 0 && (x->woff || x->wcrc)))
        return false;
    if (!prev)
        return x->out == 0 && x->in == first_in && x->bits == 0 && x->window_len == 0 &&
               x->member_out == 0;
    if (x->out <= prev->out || x->in <= prev->in || x->in > st->end)
        return false;
    if (x->bits && x->in <= st->start)
        return false;
    if (x->member_out > x->out || x->member_out < prev->member_out)
        return false;
    if (st->framing == DFX_RAW && x->member_out != 0)
        return false;
    return total == UINT64_MAX || x->out < total;
}

static int import_check(struct dfx_index *ix, const struct dfx_xpoint *pts, size_t n,
                        uint64_t total, const struct dfx_fetch *fetch)
{
    uint64_t first_in;

    if (n == 0 || n > SIZE_MAX / sizeof(struct dfx_point))
        return -EINVAL;
    if (has_usize(&ix->st) && total != UINT64_MAX && total != ix->st.usize)
        return -EINVAL;
    pthread_mutex_lock(&ix->lock);
    first_in = ix->pts[0].in; /* point 0 never changes */
    pthread_mutex_unlock(&ix->lock);
    for (size_t i = 0; i < n; i++) {
        if (!import_point_ok(ix, &pts[i], i ? &pts[i - 1] : NULL, first_in, total))
            return -EINVAL;
        if (pts[i].window_len && (!fetch || !fetch->read))
            return -EINVAL;
    }
    return 0;
}

/*
 * Put the point array np (n points, their memory windows worth mem bytes
 * already charged, at thinning level thin) in place of the index's own,
 * with src as its fetch source (NULL: none), and total if known. Readers
 * hold copies, never pointers into the array, so this is safe while they
 * run. Returns 0, or -EBUSY (a different total: nothing changes, and the
 * caller keeps np and src).
 */
static int replace_points(struct dfx_index *ix, struct dfx_point *np, size_t n, uint64_t mem,
                          unsigned thin, uint64_t total, struct fetch_src *src)
{
    struct dfx_point *old;
    size_t oldn;

    pthread_mutex_lock(&ix->lock);
    if (ix->total != UINT64_MAX && total != UINT64_MAX && ix->total != total) {
        pthread_mutex_unlock(&ix->lock);
        return -EBUSY;
    }
    old = ix->pts;
    oldn = ix->npts;
    budget_give(ix->st.budget, ix->mem_bytes);
    ix->pts = np;
    ix->npts = ix->cap = n;
    ix->mem_bytes = mem;
    ix->thin = thin;
    if (total != UINT64_MAX)
        ix->total = total;
    if (ix->fetch) {
        ix->fetch->next = ix->retired; /* a reader may still read from it */
        ix->retired = ix->fetch;
    }
    ix->fetch = src;
    pthread_mutex_unlock(&ix->lock);
    points_free(old, oldn);
    return 0;
}

/* Contract in dfx_internal.h. */
int dfx_index_import(struct dfx_index *ix, const struct dfx_xpoint *pts, size_t n,
                     uint64_t total, const struct dfx_fetch *fetch)
{
    struct fetch_src *src = NULL;
    struct dfx_point *np;
    int ret = import_check(ix, pts, n, total, fetch);

    if (ret < 0)
        return ret;
    np = calloc(n, sizeof(*np));
    if (fetch && !(src = calloc(1, sizeof(*src)))) {
        free(np);
        return -ENOMEM;
    }
    if (!np) {
        free(src);
        return -ENOMEM;
    }
    if (src)
        src->f = *fetch;
    for (size_t i = 0; i < n; i++)
        np[i] = (struct dfx_point){.out = pts[i].out, .in = pts[i].in,
                                   .member_out = pts[i].member_out, .bits = pts[i].bits,
                                   .window_len = pts[i].window_len,
                                   .kind = pts[i].window_len ? W_FILE : W_NONE,
                                   .woff = pts[i].woff, .zlen = pts[i].zlen,
                                   .wcrc = pts[i].wcrc};
    ret = replace_points(ix, np, n, 0, 0, total, src);
    if (ret < 0) {
        free(np);
        free(src);
    }
    return ret;
}

/* Contract in dfx_internal.h. */
size_t dfx_index_cache_windows(struct dfx_index *ix, uint64_t max, const atomic_bool *stop)
{
    uint64_t held = 0, next = 0; /* next: output offset of the next point to look at */
    size_t done = 0;

    for (;;) {
        struct fetch_src *src;
        struct dfx_point p = {0}, *q;
        unsigned char *z;
        size_t i;
        bool found, kept = false, full = false;

        if (stop && atomic_load(stop))
            break;
        pthread_mutex_lock(&ix->lock);
        i = ix->npts ? find_point_locked(ix, next) : 0;
        if (i < ix->npts && ix->pts[i].out < next)
            i++;
        while (i < ix->npts && !(ix->pts[i].kind == W_FILE && !ix->pts[i].mem &&
                                 i % ((uint64_t)1 << ix->thin) == 0))
            i++;
        src = ix->fetch;
        found = i < ix->npts;
        if (found)
            p = ix->pts[i];
        pthread_mutex_unlock(&ix->lock);
        if (!found || !src || held + p.zlen > max)
            break;
        next = p.out + 1;
        z = malloc(p.zlen);
        if (!z || src->f.read(src->f.ctx, z, p.zlen, p.woff) < 0) {
            free(z);
            break;
        }
        /* still that point, with that window, from that file? */
        pthread_mutex_lock(&ix->lock);
        q = &ix->pts[find_point_locked(ix, p.out)];
        if (q->out == p.out && q->kind == W_FILE && !q->mem && ix->fetch == src &&
            q->woff == p.woff && q->zlen == p.zlen) {
            full = !budget_take(ix->st.budget, p.zlen);
            if (!full) {
                q->mem = z;
                ix->mem_bytes += p.zlen;
                kept = true;
            }
        }
        pthread_mutex_unlock(&ix->lock);
        if (!kept)
            free(z);
        if (full)
            break;
        if (kept) {
            held += p.zlen;
            done++;
        }
    }
    return done;
}

/* Contract in dfx_internal.h. */
int dfx_index_adopt(struct dfx_index *ix, struct dfx_index *from)
{
    const struct dfx_stream *a = &ix->st, *b = &from->st;
    struct dfx_point *np = NULL;
    uint64_t total = UINT64_MAX, mem = 0;
    unsigned thin = 0;
    size_t n = 0;
    int ret = 0;

    if (a->src != b->src || a->start != b->start || a->end != b->end ||
        a->framing != b->framing || a->budget != b->budget)
        ret = -EINVAL;
    pthread_mutex_lock(&from->lock);
    if (ret == 0 && (from->error || from->fetch))
        ret = -EINVAL;
    else if (ret == 0 && from->total == UINT64_MAX)
        ret = -EAGAIN;
    if (ret == 0) {
        np = from->pts;
        n = from->npts;
        mem = from->mem_bytes;
        thin = from->thin;
        total = from->total;
        from->pts = NULL; /* the charges go with the points */
        from->npts = 0;
        from->mem_bytes = 0;
    }
    pthread_mutex_unlock(&from->lock);
    for (size_t i = 0; i < n; i++)
        if (np[i].kind == W_SUNK)
            np[i].kind = W_LOST; /* its window is in no file ix can read */
    if (ret == 0)
        ret = replace_points(ix, np, n, mem, thin, total, NULL);
    if (ret < 0 && np) {
        budget_give(b->budget, mem);
        points_free(np, n);
    }
    dfx_index_free(from);
    return ret;
}

/* Contract in dfx.h. */
size_t dfx_index_points_from(struct dfx_index *ix, uint64_t off, uint64_t *outs, size_t max)
{
    size_t i, n = 0;

    pthread_mutex_lock(&ix->lock);
    i = find_point_locked(ix, off);
    if (ix->pts[i].out < off)
        i++;
    for (; i < ix->npts && n < max; i++)
        if (usable(&ix->pts[i]))
            outs[n++] = ix->pts[i].out;
    pthread_mutex_unlock(&ix->lock);
    return n;
}

/* Contract in dfx.h. */
void dfx_index_span(struct dfx_index *ix, uint64_t from, uint64_t to, struct dfx_span *sp)
{
    size_t i, j;

    pthread_mutex_lock(&ix->lock);
    i = find_point_locked(ix, from);
    while (i > 0 && !usable(&ix->pts[i]))
        i--;
    sp->out_lo = ix->pts[i].out;
    sp->in_lo = ix->pts[i].in - (ix->pts[i].bits ? 1 : 0);
    j = find_point_locked(ix, to);
    if (ix->pts[j].out < to)
        j++;
    sp->bounded = j < ix->npts;
    sp->out_hi = sp->bounded ? ix->pts[j].out : UINT64_MAX;
    sp->in_hi = sp->bounded ? ix->pts[j].in : ix->st.end;
    pthread_mutex_unlock(&ix->lock);
}

/* Contract in dfx.h. */
uint64_t dfx_reader_input(const struct dfx_reader *r)
{
    return r->buf_off + r->buf_len;
}
