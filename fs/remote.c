/*
 * Remote byte sources over the HTTP client. Contract in remote.h.
 *
 * Central structures: the context's block cache (fs/cache.c, chunk size =
 * block size, owner = the source's id), and per source a small hash table of
 * blocks in flight (struct pending), each belonging to one fetch (one ranged
 * GET of a run of consecutive blocks, struct fetch).
 *
 * A pending block lives in the table from its fetch's creation until the
 * fetch completes; readers that need it take a reference and wait on the
 * source's condition variable. On completion the fetch inserts its blocks
 * in the cache, hands each block's chunk reference to its pending entry and
 * takes the entries out of the table, so later readers find the blocks in
 * the cache, while the waiters copy from the chunk their entry holds (safe
 * even if the cache evicted it meanwhile). The last reference to an entry
 * puts the chunk.
 *
 * Lock order: source lock, then the HTTP client's lock (http_promote()) or a
 * cache shard lock. Fetch completions run on HTTP worker threads, which hold
 * no lock of theirs when they call back.
 */
#define _GNU_SOURCE
#include "remote.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache.h"

#define PENDING_BUCKETS 64
/* Reads needing at most this many blocks keep their slots on the stack. */
#define STACK_SLOTS 16

struct remote_ctx {
    struct http_client *http;         /* borrowed */
    const struct s3_config *s3;       /* borrowed, may be NULL */
    struct cache *cache;              /* owned: compressed blocks of every source */
    size_t block;                     /* immutable */
    uint64_t cache_limit;             /* immutable: the cache's capacity */
    uint64_t ahead_max;               /* immutable: largest fetch-ahead window */
    atomic_uint_least64_t next_owner; /* atomic: cache owner ids */
    struct counters *totals;          /* owned: every source's counters added up */
};

struct fetch;

/* Counters kept per source and per context (all atomic). */
struct counters {
    atomic_uint_least64_t requests, bytes, retries, failures, hits, misses, ahead;
};

struct pending {
    uint64_t index;         /* block index */
    struct pending *hnext;  /* protected by the source lock: table chain */
    struct fetch *f;        /* protected by the source lock: the fetch, until done */
    struct cache_chunk *ch; /* set at done: the block (a reference), or NULL on error */
    int err;                /* set at done */
    bool done;              /* protected by the source lock */
    unsigned refs;          /* protected by the source lock: waiters + 1 while in the table */
};

struct fetch {
    struct http_req req; /* first: the done() callback gets it */
    struct rsrc *s;      /* borrowed: the source outlives its fetches */
    bool ahead;
    unsigned n;              /* blocks */
    struct pending **p;      /* n entries, borrowed via their table reference */
    struct cache_chunk **ch; /* n chunks, one reference each (the fetch's) */
    struct iovec *iov;       /* n */
};

struct stream {
    bool used;
    uint64_t next;      /* where the last read of this stream ended */
    uint64_t ahead_end; /* fetch-ahead requested up to here (bytes) */
    uint64_t window;    /* current fetch-ahead window (bytes) */
    uint64_t stamp;     /* last use, for replacing the oldest */
    unsigned reads;     /* consecutive reads */
};

/* A span of the object a caller announced (remote_advise()). */
struct span {
    uint64_t from, to;
};

/* Advised spans remembered per source (a few per reader thread). */
#define ADVISED 16

struct rsrc {
    struct src base;              /* first: struct src * and struct rsrc * convert */
    struct remote_ctx *ctx;       /* borrowed */
    char *url;                    /* owned: as given */
    char *fetch_url;              /* owned: what requests go to */
    const struct http_auth *auth; /* borrowed from ctx->s3, or NULL */
    struct http_ident id;         /* immutable after open */
    uint64_t owner;               /* immutable: cache owner id */
    unsigned char *head, *tail;   /* owned, immutable: bytes [0, head_len), [tail_off, size) */
    size_t head_len, tail_len;
    uint64_t tail_off;
    atomic_bool changed; /* atomic: set once a fetch saw another object */

    /* Lock order: before the HTTP client's and the cache's locks. */
    pthread_mutex_t lock;
    pthread_cond_t cv;                      /* a fetch completed */
    struct pending *table[PENDING_BUCKETS]; /* protected by lock */
    unsigned inflight;                      /* protected by lock: fetches not completed */
    struct stream streams[REMOTE_STREAMS];  /* protected by lock */
    uint64_t clock;                         /* protected by lock: stream stamps */
    /* protected by lock: the last spans remote_advise() was told about; a
     * read inside one is that planned read, not a sequential stream */
    struct span advised[ADVISED];
    unsigned next_advised;

    struct counters n; /* atomic */
};

static const struct src_ops remote_ops;

/* Count v into the source's and the context's field. */
#define COUNT(s, field, v)                                                                         \
    do {                                                                                           \
        uint64_t v_ = (v);                                                                         \
        atomic_fetch_add(&(s)->n.field, v_);                                                       \
        atomic_fetch_add(&(s)->ctx->totals->field, v_);                                            \
    } while (0)

static struct rsrc *to_rsrc(struct src *s)
{
    return (struct rsrc *)s;
}

/* ---- context ---- */

/* Contract in remote.h. */
int remote_ctx_new(struct http_client *http, const struct s3_config *s3,
                   const struct remote_opts *o, struct remote_ctx **out)
{
    static const struct remote_opts none;
    struct remote_ctx *c;
    int err;

    *out = NULL;
    if (!o)
        o = &none;
    if (o->block && (o->block < REMOTE_MIN_BLOCK || o->block > REMOTE_MAX_BLOCK))
        return -EINVAL;
    c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->http = http;
    c->s3 = s3;
    c->block = o->block ? o->block : REMOTE_DEFAULT_BLOCK;
    c->totals = calloc(1, sizeof(*c->totals));
    if (!c->totals) {
        free(c);
        return -ENOMEM;
    }
    uint64_t cap = o->cache_bytes ? o->cache_bytes : REMOTE_DEFAULT_CACHE;
    if (cap < (uint64_t)REMOTE_MIN_CACHE_BLOCKS * c->block) {
        free(c->totals);
        free(c);
        return -EINVAL;
    }
    c->ahead_max = cap / 4 < REMOTE_AHEAD_MAX ? cap / 4 : REMOTE_AHEAD_MAX;
    if (c->ahead_max < c->block)
        c->ahead_max = c->block;
    c->cache_limit = cap;
    err = cache_new(cap, c->block, &c->cache);
    if (err) {
        free(c->totals);
        free(c);
        return err;
    }
    atomic_store(&c->next_owner, 1);
    *out = c;
    return 0;
}

/* Contract in remote.h. */
void remote_ctx_free(struct remote_ctx *c)
{
    if (!c)
        return;
    cache_free(c->cache);
    free(c->totals);
    free(c);
}

/* Contract in remote.h. */
bool remote_is_url(const char *s)
{
    return http_is_url(s) || s3_is_url(s);
}

/* ---- pending table (source lock held) ---- */

static struct pending **bucket(struct rsrc *s, uint64_t index)
{
    return &s->table[(index * 0x9e3779b97f4a7c15u) >> 58 & (PENDING_BUCKETS - 1)];
}

static struct pending *table_find(struct rsrc *s, uint64_t index)
{
    for (struct pending *p = *bucket(s, index); p; p = p->hnext)
        if (p->index == index)
            return p;
    return NULL;
}

static void table_remove(struct rsrc *s, struct pending *p)
{
    struct pending **pp = bucket(s, p->index);

    while (*pp != p)
        pp = &(*pp)->hnext;
    *pp = p->hnext;
    p->hnext = NULL;
}

/* Drop one reference (lock held). Returns the chunk to put once the lock
 * is released, if this was the last one. */
static struct cache_chunk *pending_unref(struct pending *p)
{
    struct cache_chunk *ch = NULL;

    if (--p->refs == 0) {
        ch = p->ch;
        free(p);
    }
    return ch;
}

/* ---- fetches ---- */

static size_t block_len(const struct rsrc *s, uint64_t index)
{
    uint64_t off = index * s->ctx->block;
    uint64_t left = s->base.size - off;
    return left < s->ctx->block ? (size_t)left : s->ctx->block;
}

static void fetch_free(struct fetch *f)
{
    free(f->p);
    free(f->ch);
    free(f->iov);
    free(f);
}

/* A failed fetch as its readers see it (remote.h): a change is -EIO, a
 * server that failed -EREMOTEIO, so that no reader mistakes an outage for
 * damage or a truncated archive. */
static int read_errno(int err)
{
    if (err == -ETIMEDOUT || err == -ENOMEM)
        return err;
    return err == -ESTALE ? -EIO : -EREMOTEIO;
}

static void on_fetch_done(struct http_req *r)
{
    struct fetch *f = (struct fetch *)r;
    struct rsrc *s = f->s;
    struct remote_ctx *c = s->ctx;
    int err = r->error.err;
    struct cache_chunk **put;
    unsigned nput = 0;

    if (err == -ESTALE)
        atomic_store(&s->changed, true);
    COUNT(s, requests, r->attempts);
    COUNT(s, bytes, r->bytes);
    COUNT(s, retries, r->attempts ? r->attempts - 1 : 0);
    if (err)
        COUNT(s, failures, 1);
    if (!err) {
        for (unsigned i = 0; i < f->n; i++) {
            f->ch[i]->len = f->iov[i].iov_len;
            cache_insert(c->cache, s->owner, f->p[i]->index, f->ch[i]);
        }
    }
    /* Chunks to put after the lock: a failed fetch's, and those of entries
     * nobody waits for any more. At most one per block (an entry holds a
     * chunk only after a success), so the list can reuse f->ch: entry
     * nput <= i is written only after f->ch[i] was read. */
    put = f->ch;
    pthread_mutex_lock(&s->lock);
    for (unsigned i = 0; i < f->n; i++) {
        struct pending *p = f->p[i];
        struct cache_chunk *last;
        p->done = true;
        p->f = NULL;
        p->err = err ? read_errno(err) : 0;
        p->ch = err ? NULL : f->ch[i];
        if (err)
            put[nput++] = f->ch[i];
        table_remove(s, p);
        last = pending_unref(p);
        if (last)
            put[nput++] = last;
    }
    pthread_mutex_unlock(&s->lock);
    for (unsigned i = 0; i < nput; i++)
        cache_put(c->cache, put[i]);
    /* Last touch of s and c: once inflight is 0, remote_free() may go on. */
    pthread_mutex_lock(&s->lock);
    s->inflight--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->lock);
    fetch_free(f);
}

/* A fetch of blocks [first, first + n), each with a new pending entry in
 * the table (refs: 1 for the table, plus `waiters`). Lock held. */
static struct fetch *fetch_new(struct rsrc *s, uint64_t first, unsigned n, bool ahead,
                               unsigned waiters)
{
    struct remote_ctx *c = s->ctx;
    struct fetch *f = calloc(1, sizeof(*f));
    unsigned i;

    if (!f)
        return NULL;
    f->s = s;
    f->ahead = ahead;
    f->p = calloc(n, sizeof(*f->p));
    f->ch = calloc(n, sizeof(*f->ch));
    f->iov = calloc(n, sizeof(*f->iov));
    if (!f->p || !f->ch || !f->iov)
        goto out_free;
    for (i = 0; i < n; i++) {
        if (cache_chunk_new(c->cache, &f->ch[i]) < 0)
            goto out_free;
        f->p[i] = calloc(1, sizeof(*f->p[i]));
        if (!f->p[i])
            goto out_free;
        f->iov[i].iov_base = f->ch[i]->data;
        f->iov[i].iov_len = block_len(s, first + i);
    }
    f->n = n;
    for (i = 0; i < n; i++) {
        struct pending *p = f->p[i];
        struct pending **b = bucket(s, first + i);
        p->index = first + i;
        p->f = f;
        p->refs = 1 + waiters;
        p->hnext = *b;
        *b = p;
    }
    f->req.kind = HTTP_RANGE;
    f->req.url = s->fetch_url;
    f->req.auth = s->auth;
    f->req.off = first * c->block;
    f->req.iov = f->iov;
    f->req.iovcnt = (int)n;
    f->req.expect = &s->id;
    f->req.prio = ahead ? HTTP_PRIO_AHEAD : HTTP_PRIO_DEMAND;
    f->req.done = on_fetch_done;
    s->inflight++;
    return f;

out_free:
    for (i = 0; i < n; i++) {
        if (f->ch && f->ch[i])
            cache_put(c->cache, f->ch[i]);
        if (f->p)
            free(f->p[i]);
    }
    fetch_free(f);
    return NULL;
}

/* Submit; a fetch that cannot be queued completes at once with the error. */
static void fetch_submit(struct fetch *f)
{
    int err = http_submit(f->s->ctx->http, &f->req);

    if (err) {
        memset(&f->req.error, 0, sizeof(f->req.error));
        f->req.error.err = err;
        f->req.error.why = HTTP_ERR_OTHER;
        on_fetch_done(&f->req);
    }
}

/* ---- reads ---- */

struct slot {
    struct cache_chunk *ch; /* a cache reference, or NULL */
    struct pending *p;      /* a waiter's reference, or NULL */
};

/* Fetch-ahead plan for a read of [off, end): find or start its stream and,
 * for a sequential one, queue the blocks of the window not cached or in
 * flight. Lock held. Appends fetches to list (up to max). */
static size_t plan_ahead(struct rsrc *s, uint64_t off, uint64_t end, struct fetch **list,
                         size_t max)
{
    struct remote_ctx *c = s->ctx;
    uint64_t B = c->block;
    struct stream *st = NULL, *oldest = &s->streams[0];
    size_t nf = 0;

    /* The reads of an announced span (a decoder's input between two access
     * points) are fetched already: they are no stream to read ahead of. */
    for (int i = 0; i < ADVISED; i++)
        if (off >= s->advised[i].from && end <= s->advised[i].to)
            return 0;

    for (int i = 0; i < REMOTE_STREAMS; i++) {
        struct stream *t = &s->streams[i];
        if (t->used && off + B >= t->next && off <= t->next + B) {
            st = t;
            break;
        }
        if (!t->used || t->stamp < oldest->stamp)
            oldest = t;
    }
    if (!st) {
        /* A new stream: random until its next read continues it. */
        st = oldest;
        memset(st, 0, sizeof(*st));
        st->used = true;
        st->next = end;
        st->window = REMOTE_AHEAD_START < c->ahead_max ? REMOTE_AHEAD_START : c->ahead_max;
        st->stamp = ++s->clock;
        st->reads = 1;
        return 0;
    }
    st->stamp = ++s->clock;
    if (end <= st->next)
        return 0; /* a re-read behind the stream's end: no progress */
    st->reads++;
    st->next = end;
    /* Two continuations in a row before any fetch-ahead: one random read
     * landing near another's end is not a stream. */
    if (st->reads < 3)
        return 0;
    /* Refill when the reader is within half a window of the end of what
     * was asked for; each refill doubles the window. */
    if (st->ahead_end > end && st->ahead_end - end > st->window / 2)
        return 0;
    if (st->ahead_end > end) {
        st->window *= 2;
        if (st->window > c->ahead_max)
            st->window = c->ahead_max;
    }
    uint64_t from = (st->ahead_end > end ? st->ahead_end : end);
    uint64_t to = end + st->window;
    if (to > s->base.size)
        to = s->base.size;
    st->ahead_end = to;
    if (from >= to)
        return 0;
    /* Whole blocks from the one after `from`'s start... */
    uint64_t b = (from + B - 1) / B, last = (to + B - 1) / B; /* [b, last) */
    uint64_t run_max = st->window / 4;
    if (run_max > REMOTE_RUN_MAX)
        run_max = REMOTE_RUN_MAX;
    run_max = run_max < B ? 1 : run_max / B;
    while (b < last && nf < max) {
        /* skip blocks cached or in flight */
        struct cache_chunk *ch = cache_get(c->cache, s->owner, b);
        if (ch || table_find(s, b)) {
            cache_put(c->cache, ch);
            b++;
            continue;
        }
        uint64_t n = 1;
        while (b + n < last && n < run_max && !table_find(s, b + n)) {
            ch = cache_get(c->cache, s->owner, b + n);
            if (ch) {
                cache_put(c->cache, ch);
                break;
            }
            n++;
        }
        struct fetch *f = fetch_new(s, b, (unsigned)n, true, 0);
        if (!f)
            break; /* fetch-ahead is best effort */
        COUNT(s, ahead, n);
        list[nf++] = f;
        b += n;
    }
    if (b < last)
        st->ahead_end = b * B; /* stopped early: the rest next time */
    return nf;
}

/* Claim the missing blocks of slots (lock held): join fetches in flight,
 * start new ones (appended to list, *nf of them) for runs of the rest.
 * Returns 0, or -ENOMEM with the fetches started so far still in list (they
 * must be submitted: others may wait for them) and the blocks not claimed
 * left without a pending entry. */
static int claim_missing(struct rsrc *s, uint64_t first, struct slot *sl, size_t nb,
                         struct fetch **list, size_t *nf)
{
    struct remote_ctx *c = s->ctx;
    size_t i = 0;
    uint64_t run_max = REMOTE_RUN_MAX / c->block ? REMOTE_RUN_MAX / c->block : 1;

    while (i < nb) {
        if (sl[i].ch) {
            i++;
            continue;
        }
        struct pending *p = table_find(s, first + i);
        if (p) {
            p->refs++;
            sl[i].p = p;
            if (p->f && p->f->ahead)
                http_promote(c->http, &p->f->req);
            i++;
            continue;
        }
        /* A fetch may have completed between our cache lookup and now. */
        sl[i].ch = cache_get(c->cache, s->owner, first + i);
        if (sl[i].ch) {
            i++;
            continue;
        }
        size_t n = 1;
        while (i + n < nb && n < run_max && !sl[i + n].ch && !table_find(s, first + i + n))
            n++;
        struct fetch *f = fetch_new(s, first + i, (unsigned)n, false, 1);
        if (!f)
            return -ENOMEM;
        list[(*nf)++] = f;
        for (size_t k = 0; k < n; k++)
            sl[i + k].p = f->p[k];
        i += n;
    }
    return 0;
}

static int64_t remote_pread(struct src *src, void *buf, size_t len, uint64_t off)
{
    struct rsrc *s = to_rsrc(src);
    struct remote_ctx *c = s->ctx;
    uint64_t B = c->block, end, first;
    struct slot stack_slots[STACK_SLOTS], *sl = stack_slots;
    struct fetch *stack_list[STACK_SLOTS + 64], **list = stack_list;
    size_t nb, nlist = 0, cap_list;
    int err = 0;

    if (off >= src->size || len == 0)
        return 0;
    if (len > src->size - off)
        len = (size_t)(src->size - off);
    end = off + len;
    /* The bytes kept from open need no request. */
    if (off >= s->tail_off && s->tail_len && end <= s->tail_off + s->tail_len) {
        memcpy(buf, s->tail + (off - s->tail_off), len);
        return (int64_t)len;
    }
    if (end <= s->head_len) {
        memcpy(buf, s->head + off, len);
        return (int64_t)len;
    }
    /* A read that runs into the bytes kept from open fetches only the rest
     * (a zip directory read with the end record after it): they are not
     * asked for again. */
    if (off < s->head_len) {
        size_t n = (size_t)(s->head_len - off);
        int64_t r = remote_pread(src, (char *)buf + n, len - n, s->head_len);
        if (r < 0)
            return r;
        memcpy(buf, s->head + off, n);
        return (int64_t)len;
    }
    if (s->tail_len && off < s->tail_off && end > s->tail_off &&
        s->tail_off + s->tail_len == src->size) {
        size_t n = (size_t)(s->tail_off - off);
        int64_t r = remote_pread(src, buf, n, off);
        if (r < 0)
            return r;
        memcpy((char *)buf + n, s->tail, len - n);
        return (int64_t)len;
    }
    first = off / B;
    nb = (size_t)((end - 1) / B - first + 1);
    cap_list = nb + 64;
    if (nb > STACK_SLOTS) {
        sl = calloc(nb, sizeof(*sl));
        list = calloc(cap_list, sizeof(*list));
        if (!sl || !list) {
            free(sl);
            free(list);
            return -ENOMEM;
        }
    } else {
        memset(sl, 0, nb * sizeof(*sl));
    }
    bool missing = false;
    for (size_t i = 0; i < nb; i++) {
        sl[i].ch = cache_get(c->cache, s->owner, first + i);
        missing |= !sl[i].ch;
    }

    pthread_mutex_lock(&s->lock);
    if (missing && atomic_load(&s->changed)) {
        err = -EIO;
    } else {
        if (missing)
            err = claim_missing(s, first, sl, nb, list, &nlist);
        if (!err)
            nlist += plan_ahead(s, off, end, list + nlist, cap_list - nlist);
    }
    pthread_mutex_unlock(&s->lock);
    for (size_t i = 0; i < nb; i++) {
        if (sl[i].ch)
            COUNT(s, hits, 1);
        else if (sl[i].p)
            COUNT(s, misses, 1);
    }
    /* Demand fetches come first in list, then fetch-ahead. */
    for (size_t i = 0; i < nlist; i++)
        fetch_submit(list[i]);

    /* Wait for and copy every block, in order. */
    for (size_t i = 0; i < nb; i++) {
        uint64_t bstart = (first + i) * B;
        uint64_t a = off > bstart ? off : bstart;
        uint64_t z = end < bstart + B ? end : bstart + B;
        const struct cache_chunk *ch = sl[i].ch;
        if (!ch && sl[i].p) {
            pthread_mutex_lock(&s->lock);
            while (!sl[i].p->done)
                pthread_cond_wait(&s->cv, &s->lock);
            pthread_mutex_unlock(&s->lock);
            ch = sl[i].p->ch; /* immutable once done */
            if (!ch && !err)
                err = sl[i].p->err;
        }
        if (!err && ch)
            memcpy((char *)buf + (a - off), ch->data + (a - bstart), (size_t)(z - a));
    }
    /* Release: cache references, then waiter references. */
    for (size_t i = 0; i < nb; i++)
        cache_put(c->cache, sl[i].ch);
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < nb; i++) {
        if (sl[i].p)
            sl[i].ch = pending_unref(sl[i].p);
        else
            sl[i].ch = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    for (size_t i = 0; i < nb; i++)
        cache_put(c->cache, sl[i].ch);
    if (sl != stack_slots) {
        free(sl);
        free(list);
    }
    return err ? err : (int64_t)len;
}

/* Contract in remote.h. */
void remote_advise(struct src *src, uint64_t off, uint64_t len)
{
    struct rsrc *s = to_rsrc(src);
    struct remote_ctx *c = s->ctx;
    uint64_t B = c->block, first, last, run_max;
    struct fetch *stack_list[STACK_SLOTS], **list = stack_list;
    size_t nlist = 0, cap = STACK_SLOTS;

    if (off >= src->size || len == 0 || atomic_load(&s->changed))
        return;
    if (len > src->size - off)
        len = src->size - off;
    first = off / B;
    last = (off + len - 1) / B;
    if (last - first + 1 > STACK_SLOTS) {
        cap = (size_t)(last - first + 1);
        list = calloc(cap, sizeof(*list));
        if (!list)
            return; /* a hint: nothing lost */
    }
    /* Runs of REMOTE_ADVISE_RUN at most, so that a long span comes in on
     * several connections at once, and the first of it arrives first. */
    run_max = REMOTE_ADVISE_RUN / B ? REMOTE_ADVISE_RUN / B : 1;
    pthread_mutex_lock(&s->lock);
    s->advised[s->next_advised].from = off;
    s->advised[s->next_advised].to = off + len;
    s->next_advised = (s->next_advised + 1) % ADVISED;
    for (uint64_t b = first; b <= last && nlist < cap;) {
        struct cache_chunk *ch = cache_get(c->cache, s->owner, b);
        uint64_t n = 0;

        if (ch || table_find(s, b)) {
            cache_put(c->cache, ch);
            b++;
            continue;
        }
        while (b + n <= last && n < run_max && !table_find(s, b + n)) {
            ch = cache_get(c->cache, s->owner, b + n);
            if (ch) {
                cache_put(c->cache, ch);
                break;
            }
            n++;
        }
        struct fetch *f = fetch_new(s, b, (unsigned)n, false, 0);
        if (!f)
            break;
        list[nlist++] = f;
        b += n;
    }
    pthread_mutex_unlock(&s->lock);
    for (size_t i = 0; i < nlist; i++)
        fetch_submit(list[i]);
    if (list != stack_list)
        free(list);
}

static void remote_free(struct src *src)
{
    struct rsrc *s = to_rsrc(src);
    struct remote_ctx *c = s->ctx;

    /* Fetches in flight point to s: wait for them (fetch-ahead included). */
    pthread_mutex_lock(&s->lock);
    while (s->inflight)
        pthread_cond_wait(&s->cv, &s->lock);
    pthread_mutex_unlock(&s->lock);
    cache_drop_owner(c->cache, s->owner);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->lock);
    free(s->head);
    free(s->tail);
    free(s->url);
    free(s->fetch_url);
    free(s);
}

static const struct src_ops remote_ops = {remote_pread, remote_free, NULL};

/* ---- open ---- */

/* The URL requests go to, and their auth. */
static int resolve_url(struct remote_ctx *c, const char *url, struct rsrc *s,
                       struct http_error *why)
{
    struct s3_location loc;
    int err;

    if (http_is_url(url)) {
        s->fetch_url = strdup(url);
        return s->fetch_url ? 0 : -ENOMEM;
    }
    if (!s3_is_url(url) || !c->s3) {
        why->why = HTTP_ERR_OTHER;
        snprintf(why->detail, sizeof(why->detail), "%s",
                 s3_is_url(url) ? "no S3 configuration" : "not an http://, https:// or s3:// URL");
        return -EINVAL;
    }
    err = s3_parse_url(url, &loc);
    if (err) {
        why->why = HTTP_ERR_OTHER;
        snprintf(why->detail, sizeof(why->detail), "not a valid s3://BUCKET/KEY URL");
        return err;
    }
    if (loc.prefix) {
        s3_location_destroy(&loc);
        why->why = HTTP_ERR_OTHER;
        snprintf(why->detail, sizeof(why->detail), "a prefix, not an object");
        return -EISDIR;
    }
    err = s3_object_url(c->s3, loc.bucket, loc.key, &s->fetch_url);
    s3_location_destroy(&loc);
    s->auth = s3_auth(c->s3);
    return err;
}

/* Contract in remote.h. */
int remote_open(struct remote_ctx *c, const char *url, size_t head_len, struct src **out,
                struct http_error *why)
{
    struct http_error dummy;
    struct http_probe p;
    struct rsrc *s;
    int err;

    *out = NULL;
    if (!why)
        why = &dummy;
    memset(why, 0, sizeof(*why));
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->ctx = c;
    s->url = strdup(url);
    if (!s->url) {
        err = -ENOMEM;
        goto out_free;
    }
    err = resolve_url(c, url, s, why);
    if (err)
        goto out_free;
    err = http_probe(c->http, s->fetch_url, s->auth, head_len, REMOTE_TAIL, &p, why);
    COUNT(s, requests, p.requests);
    if (err)
        goto out_free;
    COUNT(s, bytes, p.head_len + p.tail_len);
    s->base.ops = &remote_ops;
    s->base.size = p.id.size;
    s->base.read_size = (uint32_t)c->block;
    s->id = p.id;
    s->head = p.head;
    s->head_len = p.head_len;
    s->tail = p.tail;
    s->tail_len = p.tail_len;
    s->tail_off = p.tail_off;
    s->owner = atomic_fetch_add(&c->next_owner, 1);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cv, NULL);
    *out = &s->base;
    return 0;

out_free:
    if (err == -ENOMEM && !why->err) {
        why->err = -ENOMEM;
        why->why = HTTP_ERR_NOMEM;
    }
    if (!why->err)
        why->err = err;
    free(s->url);
    free(s->fetch_url);
    free(s);
    return err;
}

/* Contract in remote.h. */
bool remote_is_src(const struct src *s)
{
    return s && s->ops == &remote_ops;
}

/* Contract in remote.h. */
const struct http_ident *remote_ident(const struct src *s)
{
    return &((const struct rsrc *)s)->id;
}

/* Contract in remote.h. */
const char *remote_url(const struct src *s)
{
    return ((const struct rsrc *)s)->url;
}

/* Contract in remote.h. */
size_t remote_tail(const struct src *src, const unsigned char **bytes, uint64_t *off)
{
    const struct rsrc *s = (const struct rsrc *)src;

    *bytes = s->tail;
    *off = s->tail_off;
    return s->tail_len;
}

/* Contract in remote.h. */
int remote_check(struct src *s)
{
    return atomic_load(&to_rsrc(s)->changed) ? -EIO : 0;
}

static void load_counters(struct counters *n, struct remote_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->requests = atomic_load(&n->requests);
    out->bytes = atomic_load(&n->bytes);
    out->retries = atomic_load(&n->retries);
    out->failures = atomic_load(&n->failures);
    out->hits = atomic_load(&n->hits);
    out->misses = atomic_load(&n->misses);
    out->ahead_blocks = atomic_load(&n->ahead);
}

/* Contract in remote.h. */
void remote_src_stats(struct src *src, struct remote_stats *out)
{
    struct rsrc *s = to_rsrc(src);

    load_counters(&s->n, out);
    out->changed = atomic_load(&s->changed);
    pthread_mutex_lock(&s->lock);
    out->in_flight = s->inflight;
    pthread_mutex_unlock(&s->lock);
}

/* Contract in remote.h. */
void remote_ctx_stats(struct remote_ctx *c, struct remote_stats *out)
{
    struct cache_stats cs;

    load_counters(c->totals, out);
    cache_get_stats(c->cache, &cs);
    out->cache_bytes = cs.bytes;
    out->cache_limit = c->cache_limit;
}
