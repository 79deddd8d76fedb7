/*
 * Archives and members: open a source, turn its zip directory or gzip
 * stream into a list of members with exact sizes, and serve a member's
 * uncompressed bytes chunk by chunk.
 *
 * A deflate member's chunks come from the cache or, on a miss, from a
 * decoder: a parked one (left by a sequential reader just before the chunk)
 * or a fresh one from the nearest access point. Decodes in progress are
 * listed in m->busy so a reader of the next chunk waits for the decoder
 * ahead of it instead of starting a second one over the same bytes.
 *
 * Readahead workers (fs_readahead.c) produce whole segments between access
 * points through fs_member_produce(); their entries in m->busy are marked
 * ahead and cover exactly the chunks they will insert, so a reader that
 * needs one of those chunks waits for the worker rather than decoding it
 * twice.
 *
 * Past the index frontier there are no segments: only a decoder that goes on
 * from where the last one stopped can produce the next chunks. There a worker
 * continues the sequential reader's parked decoder a bounded distance ahead
 * of it (fs_member_continue()), so the reader only copies cached chunks out.
 * Its busy entry is ahead and pipelined: its start moves up as each chunk is
 * inserted, and a reader just past its end waits for it too, then takes the
 * decoder it parks.
 *
 * Integrity: once a member has its chunk CRC table (m->crcs), every chunk a
 * decoder produces is checked against it before it goes into the cache, and
 * every stored read is served from whole chunks checked the same way, so
 * damage that appears after the table was built (bit rot, the archive
 * rewritten between mounts with its mtime restored) fails the read that
 * meets it instead of handing out wrong bytes.
 *
 * Change: every path that reads the archive (readers, readahead workers,
 * stored reads, the indexer's passes, the open) checks the archive's
 * identity after its reads and before it uses their bytes
 * (fs_archive_check()), chunk by chunk, so a chunk is cached or served only
 * if it was decoded from the content the archive had at open. Once a change
 * is found nothing more is served and the kernel drops the members' pages.
 */
#define _GNU_SOURCE
#include "fs.h"

#include <errno.h>
#include <fuse_log.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "dfx_internal.h"
#include "dfx_store.h"
#include "gz.h"
#include "npy.h"
#include "src_file.h"
#include "zip.h"

/* A waiting reader whose chunk lies this close after a decode in progress
 * waits for that decoder instead of starting its own. */
#define BUSY_REACH (4 * (uint64_t)FS_CHUNK_SIZE)
/* Chunks a reader about to wait for a decoder makes ready for it (memory
 * touched, so the decoder takes no page faults on them): enough to stay
 * ahead of a decoder that readers keep waiting for. */
#define FS_PREPARE_CHUNKS 8
/* Output read per call while sizing a gzip stream by a full pass. */
#define PASS_BUF (1u << 20)

struct fs_busy {
    uint64_t from, to;   /* output range being decoded */
    bool ahead;          /* a readahead worker: inserts every chunk of [from, to) */
    bool pipelined;      /* ahead, continuing a parked decoder: from moves up as
                          * chunks are inserted, and the decoder is parked at to */
    struct fs_busy *next;
};

/* A reader waiting in fs_member_chunk() for the chunk at target (on m's
 * waiters list, under m->lock). A pipelined decode wakes only the readers
 * whose chunk it has inserted, not all of them for every chunk: with the
 * kernel's readahead several reads of later chunks wait at once, and waking
 * each for every chunk cost the decoding thread ~6% of its time (futex
 * wake-ups), and the readers a context switch each. */
struct chunk_waiter {
    uint64_t target;
    pthread_cond_t cv;
    struct chunk_waiter *next;
};

static atomic_uint_fast64_t next_member_id = 1;

/*
 * Parked decoders of every member, bounded in all (FS_PARKED_TOTAL) besides
 * per member (FS_PARKED_MAX): a mount with thousands of open files would
 * otherwise hold about 100 KiB per parked decoder, up to four per file.
 * The used slots form one list, least recently parked first; parking one
 * more past the bound drops the oldest, whichever member holds it. The lock
 * is a leaf taken with a member's lock held (never a member's lock under
 * it), so dropping another member's decoder needs no other member lock.
 */
static pthread_mutex_t parked_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fs_parked *parked_oldest, *parked_newest; /* protected by parked_lock */
static atomic_uint parked_total; /* written under parked_lock: used slots */

/* Take the decoder out of used slot p. parked_lock held. */
static struct dfx_reader *slot_take(struct fs_parked *p)
{
    struct dfx_reader *r = p->r;

    if (p->older)
        p->older->newer = p->newer;
    else
        parked_oldest = p->newer;
    if (p->newer)
        p->newer->older = p->older;
    else
        parked_newest = p->older;
    p->older = p->newer = NULL;
    p->r = NULL;
    atomic_store_explicit(&parked_total, atomic_load_explicit(&parked_total,
                          memory_order_relaxed) - 1, memory_order_relaxed);
    return r;
}

/* Park r in free slot p, as the most recent. parked_lock held. */
static void slot_put(struct fs_parked *p, struct dfx_reader *r)
{
    p->r = r;
    p->older = parked_newest;
    p->newer = NULL;
    if (parked_newest)
        parked_newest->newer = p;
    else
        parked_oldest = p;
    parked_newest = p;
    atomic_store_explicit(&parked_total, atomic_load_explicit(&parked_total,
                          memory_order_relaxed) + 1, memory_order_relaxed);
}

/* Take every decoder m has parked into drop[FS_PARKED_MAX]; returns the
 * count. m->lock held, or m otherwise unreachable. */
static int take_all_parked(struct fs_member *m, struct dfx_reader **drop)
{
    int n = 0;

    pthread_mutex_lock(&parked_lock);
    for (int i = 0; i < FS_PARKED_MAX; i++)
        if (m->parked[i].r)
            drop[n++] = slot_take(&m->parked[i]);
    pthread_mutex_unlock(&parked_lock);
    return n;
}

/* Contract in fs.h. */
unsigned fs_parked_count(void)
{
    return atomic_load_explicit(&parked_total, memory_order_relaxed);
}

static int member_init(struct fs_member *m, const char *name, size_t name_len)
{
    memset(m, 0, sizeof(*m));
    m->name = malloc(name_len + 1);
    if (!m->name)
        return -ENOMEM;
    memcpy(m->name, name, name_len);
    m->name[name_len] = '\0';
    m->name_len = name_len;
    m->id = atomic_fetch_add(&next_member_id, 1);
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->idle, NULL);
    return 0;
}

static void member_destroy(struct fs_member *m)
{
    struct dfx_reader *drop[FS_PARKED_MAX];
    int n = take_all_parked(m, drop);

    for (int i = 0; i < n; i++)
        dfx_reader_free(drop[i]);
    dfx_index_free(m->ix);
    free(atomic_load(&m->crcs));
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->idle);
    fs_meta_free(atomic_load(&m->meta));
    free(m->name);
}

/* Once z's local header is read: m's data offset, verdict and (deflate)
 * index. */
static int zip_member_place(struct fs_archive *a, struct fs_member *m, const struct zip_member *z)
{
    struct dfx_stream st = {0};

    m->data_offset = z->data_offset;
    m->unsupported = z->unsupported;
    m->why = z->why;
    if (m->unsupported || m->kind == FS_STORED)
        return 0;
    st.src = a->src;
    st.start = z->data_offset;
    st.end = z->data_offset + z->csize; /* zip.c checked it lies inside the source */
    st.framing = DFX_RAW;
    st.usize = z->usize;
    st.crc = z->crc32;
    st.check_crc = true;
    st.budget = &fs_window_budget;
    return dfx_index_new(&st, a->spacing, &m->ix);
}

/* Fill in m, which member_init() has set up (so it owns its name and
 * locks, and is destroyed with the archive whatever this returns). */
static int zip_member_setup(struct fs_archive *a, struct fs_member *m, const struct zip_member *z)
{
    char buf[24];
    int ret = 0;

    snprintf(m->method, sizeof(m->method), "%s", zip_method_name(z->method, buf, sizeof(buf)));
    m->size = z->usize;
    m->crc32 = z->crc32;
    m->stored_size = z->csize;
    m->is_dir = z->is_dir;
    m->lho = z->lho;
    m->kind = z->unsupported || m->is_dir || z->method == ZIP_METHOD_STORED ? FS_STORED
                                                                           : FS_DEFLATE;
    if (z->located)
        ret = zip_member_place(a, m, z);
    atomic_store_explicit(&m->located, z->located, memory_order_release);
    return ret;
}

/* Contract in fs.h. Under m->lock, which only openers contend for before
 * the member is located (readers come after an open). */
int fs_member_locate(struct fs_archive *a, struct fs_member *m)
{
    struct zip_member z = {0};
    int ret = 0;

    if (fs_member_located(m))
        return 0;
    pthread_mutex_lock(&m->lock);
    if (!fs_member_located(m)) {
        z.method = m->kind == FS_STORED ? ZIP_METHOD_STORED : ZIP_METHOD_DEFLATE;
        z.csize = m->stored_size;
        z.usize = m->size;
        z.crc32 = m->crc32;
        z.lho = m->lho;
        ret = zip_member_locate(a->src, &z);
        if (ret == 0)
            ret = fs_archive_check(a); /* the header is the archive's as opened */
        if (ret == 0)
            ret = zip_member_place(a, m, &z);
        if (ret == 0)
            atomic_store_explicit(&m->located, true, memory_order_release);
    }
    pthread_mutex_unlock(&m->lock);
    return ret;
}

/* A member counts in a->count from the moment it owns anything, so that
 * fs_archive_free() destroys a partly set up one too. A remote archive's
 * local headers are read on first need (fs_member_locate()). */
static int open_zip(struct fs_archive *a)
{
    struct zip_archive *z;
    int ret = zip_archive_open_flags(a->src, bsrc_is_remote(a->bs) ? ZIP_DEFER_LOCAL : 0, &z);

    if (ret < 0)
        return ret;
    a->members = calloc(z->count ? z->count : 1, sizeof(*a->members));
    if (!a->members) {
        zip_free(z);
        return -ENOMEM;
    }
    for (size_t i = 0; ret == 0 && i < z->count; i++) {
        ret = member_init(&a->members[i], z->members[i].name, z->members[i].name_len);
        if (ret < 0)
            break;
        a->count++;
        ret = zip_member_setup(a, &a->members[i], &z->members[i]);
    }
    zip_free(z);
    return ret;
}

/* Chunk CRCs of output whose size is not known yet (the gzip sizing pass):
 * crc[i] for chunk i, grown as output comes. */
struct grow_crcs {
    uint32_t *crc;
    uint64_t n, cap, pos;
    bool failed; /* out of memory: no table */
};

static void grow_feed(struct grow_crcs *g, const unsigned char *p, size_t len)
{
    while (len && !g->failed) {
        uint64_t i = g->pos / FS_CHUNK_SIZE;
        size_t n = FS_CHUNK_SIZE - (size_t)(g->pos % FS_CHUNK_SIZE);

        if (i >= g->cap) {
            uint64_t cap = g->cap ? 2 * g->cap : 64;
            uint32_t *c = realloc(g->crc, (size_t)cap * sizeof(*c));
            if (!c) {
                g->failed = true;
                return;
            }
            g->crc = c;
            g->cap = cap;
        }
        if (i >= g->n)
            g->crc[g->n++] = 0;
        if (n > len)
            n = len;
        g->crc[i] = (uint32_t)crc32_combine(g->crc[i], dfx_crcs_of(p, n), (z_off_t)n);
        g->pos += n;
        p += n;
        len -= n;
    }
}

/* The most output a sizing pass over a file of size compressed bytes may
 * decode: lim->max_ratio x size, but never less than FS_SIZING_FLOOR (a tiny
 * file of repetitive text is no threat); 0 for no limit (none given, or the
 * product does not fit). */
static uint64_t pass_budget(const struct fs_open_limits *lim, uint64_t size)
{
    uint64_t budget;

    if (!lim || !lim->max_ratio || __builtin_mul_overflow(lim->max_ratio, size, &budget))
        return 0;
    return budget < FS_SIZING_FLOOR ? FS_SIZING_FLOOR : budget;
}

/* Decode to the end of the stream and return the total output size,
 * feeding every byte to g. Stops with -E2BIG once the output exceeds budget
 * (0: none), or -ECANCELED once *stop is raised (checked between reads of
 * PASS_BUF bytes). */
static int64_t full_pass(struct dfx_reader *r, struct grow_crcs *g, uint64_t budget,
                         const atomic_bool *stop)
{
    unsigned char *buf = malloc(PASS_BUF);
    int64_t n;

    if (!buf)
        return -ENOMEM;
    while ((n = dfx_reader_read(r, buf, PASS_BUF)) > 0) {
        grow_feed(g, buf, (size_t)n);
        if (budget && dfx_reader_pos(r) > budget) {
            n = -E2BIG;
            break;
        }
        if (stop && atomic_load(stop)) {
            n = -ECANCELED;
            break;
        }
    }
    free(buf);
    return n < 0 ? n : (int64_t)dfx_reader_pos(r);
}

/* The table of a finished sizing pass over size bytes, or NULL. */
static struct dfx_crcs *grow_table(struct grow_crcs *g, uint64_t size)
{
    struct dfx_crcs *t = NULL;

    if (!g->failed && g->pos == size && dfx_crcs_new(size, FS_CHUNK_SIZE, &t) == 0 &&
        t->count == g->n) {
        if (g->n) /* an empty output has no chunk, and g->crc may be NULL */
            memcpy(t->crc, g->crc, (size_t)g->n * sizeof(*g->crc));
    } else if (t) {
        free(t);
        t = NULL;
    }
    free(g->crc);
    g->crc = NULL;
    return t;
}

/*
 * The exact size of a gzip stream's output without decompressing its payload
 * when possible: the .npy header gives header + itemsize * prod(shape), which
 * must agree with ISIZE (size mod 2^32 of the last member). Otherwise (not a
 * sizeable .npy, or several members) one full pass counts the bytes, within
 * lim (see full_pass()); it also fills the index and builds the chunk CRC
 * table (*crcs) on the way, so the work is not lost: that pass checked every
 * member's trailer.
 *
 * Every length here comes from the file: the prefix read may be short (a
 * tiny stream), and a version-1 header's HEADER_LEN may be 0 or 1, so the
 * data offset can lie inside the NPY_PREFIX_LEN bytes already read.
 */
static int64_t gzip_size(struct src *s, struct dfx_index *ix, const struct fs_open_limits *lim,
                         bool *full, struct dfx_crcs **crcs)
{
    unsigned char *hdr = NULL;
    struct npy_header h = {0};
    struct grow_crcs g = {0};
    struct dfx_reader *r;
    uint64_t doff = 0;
    uint32_t isize;
    int64_t n, m = 0, ret;

    ret = dfx_reader_new(ix, 0, &r);
    if (ret < 0)
        return ret;
    hdr = malloc(NPY_HEADER_MAX + NPY_PREFIX_LEN);
    if (!hdr) {
        ret = -ENOMEM;
        goto out;
    }
    n = dfx_reader_read(r, hdr, NPY_PREFIX_LEN);
    if (n < 0) {
        ret = n;
        goto out;
    }
    if (npy_prefix(hdr, (size_t)n, &doff) == 0 && doff <= NPY_HEADER_MAX + NPY_PREFIX_LEN) {
        if (doff > (uint64_t)n)
            m = dfx_reader_read(r, hdr + n, (size_t)(doff - (uint64_t)n));
        if (m < 0) {
            ret = m;
            goto out;
        }
        if (npy_parse(hdr, (size_t)(n + m), &h) == 0 && h.size_known &&
            gz_last_isize(s, &isize) == 0 && (uint32_t)h.total_size == isize) {
            ret = (int64_t)h.total_size;
            goto out;
        }
    }
    grow_feed(&g, hdr, (size_t)(n + m));
    ret = full_pass(r, &g, pass_budget(lim, s->size), lim ? lim->stop : NULL);
    *full = true;
    if (ret >= 0)
        *crcs = grow_table(&g, (uint64_t)ret);
out:
    free(g.crc);
    npy_header_destroy(&h);
    free(hdr);
    dfx_reader_free(r);
    return ret;
}

static int open_gzip(struct fs_archive *a, const struct fs_open_limits *lim)
{
    struct dfx_stream st = {0};
    struct dfx_crcs *crcs = NULL;
    struct fs_member *m;
    char *base = bsrc_base_name(a->path);
    size_t len;
    int64_t size;
    bool full = false;
    int ret;

    if (!base)
        return -ENOMEM;
    len = strlen(base);
    if (len > 3 && strcmp(base + len - 3, ".gz") == 0)
        len -= 3;
    a->members = calloc(1, sizeof(*a->members));
    ret = a->members ? member_init(&a->members[0], base, len) : -ENOMEM;
    free(base);
    if (ret < 0)
        return ret;
    m = &a->members[0];
    a->count = 1;
    atomic_store(&m->located, true);
    strcpy(m->method, "gzip");
    m->kind = FS_DEFLATE;
    m->stored_size = a->src->size;
    st.src = a->src;
    st.start = 0;
    st.end = a->src->size;
    st.framing = DFX_GZIP;
    st.usize = UINT64_MAX;
    st.budget = &fs_window_budget;
    ret = dfx_index_new(&st, a->spacing, &m->ix);
    if (ret < 0)
        return ret;
    size = gzip_size(a->src, m->ix, lim, &full, &crcs);
    if (size < 0)
        return (int)size;
    m->size = (uint64_t)size;
    if (full) {
        /* the pass checked every trailer; its points and table are kept */
        if (crcs)
            fs_member_set_crcs(m, crcs);
        return 0;
    }
    /* Sized from the header: from now on a read that reaches the end goes
     * on through the trailers, so a bad CRC, ISIZE or extra output is EIO. */
    dfx_index_free(m->ix);
    m->ix = NULL;
    st.usize = m->size;
    return dfx_index_new(&st, a->spacing, &m->ix);
}

/* A new archive over bs (owned from here on, closed on failure), named
 * path; members is nmembers zeroed slots (count 0). Returns 0 or a
 * negative errno (*out NULL). */
static int archive_new(struct bsrc *bs, const char *path, uint64_t spacing, size_t nmembers,
                       struct fs_archive **out)
{
    struct fs_archive *a = calloc(1, sizeof(*a));
    char name[4096];

    *out = NULL;
    if (!a) {
        bsrc_close(bs);
        return -ENOMEM;
    }
    a->bs = bs;
    a->src = bsrc_src(bs);
    a->spacing = spacing;
    a->path = strdup(path);
    a->name = strdup(bsrc_name_of(path, name, sizeof(name)));
    a->members = nmembers ? calloc(nmembers, sizeof(*a->members)) : NULL;
    if (!a->path || !a->name || (nmembers && !a->members)) {
        fs_archive_free(a);
        return -ENOMEM;
    }
    *out = a;
    return 0;
}

/* A new archive with its file open as its source (path, or rel beneath
 * dirfd if dirfd >= 0): archive_new() over bsrc_open_file(). */
static int archive_start(int dirfd, const char *rel, const char *path, uint64_t spacing,
                         size_t nmembers, struct fs_archive **out)
{
    struct bsrc *bs;
    int ret = bsrc_open_file(dirfd, rel, path, &bs);

    *out = NULL;
    return ret < 0 ? ret : archive_new(bs, path, spacing, nmembers, out);
}

/* Contract in fs.h. */
const char *fs_open_problem(int err, uint64_t max_ratio, char *buf, size_t len)
{
    switch (err) {
    case -E2BIG:
        snprintf(buf, len,
                 "refused: expands more than %llux its size when sized by a full pass "
                 "(-o max_ratio=%llu; raise it, or 0 for no limit)",
                 (unsigned long long)max_ratio, (unsigned long long)max_ratio);
        return buf;
    case -ECANCELED:
        return "not opened: the mount is stopping";
    case -EINVAL:
        return "not a zip (.npz) or gzip (.npy.gz) file, or its directory is malformed";
    case -EIO:
        return "damaged or truncated archive";
    case -EOPNOTSUPP:
        return "unsupported archive (multi-disk zip)";
    case -EFBIG:
        return "too many members";
    case -EISDIR:
        return "is a directory; give an .npz or .npy.gz file";
    case -ENODEV:
        return "not a regular file (a FIFO, socket or device)";
    case -EREMOTEIO:
        return "the server failed to send the archive's bytes (after retries)";
    case -ETIMEDOUT:
        return "the server stopped answering (-o timeout=)";
    default:
        return strerror_r(-err, buf, len);
    }
}

/* Contract in fs.h. */
int fs_archive_open(const char *path, uint64_t spacing, const struct fs_open_limits *lim,
                    struct fs_archive **out)
{
    return fs_archive_open_beneath(-1, NULL, path, spacing, lim, out);
}

static int archive_parse(struct fs_archive *a, const struct fs_open_limits *lim,
                         struct fs_archive **out);

/* Contract in fs.h. */
int fs_archive_open_beneath(int dirfd, const char *rel, const char *path, uint64_t spacing,
                            const struct fs_open_limits *lim, struct fs_archive **out)
{
    struct fs_archive *a;
    int ret = archive_start(dirfd, rel, path, spacing, 0, &a);

    *out = NULL;
    return ret < 0 ? ret : archive_parse(a, lim, out);
}

/* Bytes of a remote .npy.gz's start fetched with its end at open (in
 * parallel: one round trip, REMOTE_TAIL says why no more): its gzip header
 * and the deflate input its .npy header decodes from (a decoder reads a
 * fetch block of input at a time). A zip needs no head: its local headers
 * are read as each member is first opened. */
#define REMOTE_HEAD (56u << 10)

/* Does url name a .npy.gz (its path, without query)? */
static bool gzip_url(const char *url)
{
    size_t n = strcspn(url, "?#");

    return n > 7 && strncmp(url + n - 7, ".npy.gz", 7) == 0;
}

/* Undo a failed open_zip(): a's members go. */
static void zip_members_free(struct fs_archive *a)
{
    for (size_t i = 0; i < a->count; i++)
        member_destroy(&a->members[i]);
    free(a->members);
    a->members = NULL;
    a->count = 0;
}

/* Contract in fs.h. */
int fs_archive_open_url(struct net *net, const char *url, uint64_t spacing,
                        const struct fs_open_limits *lim, struct fs_archive **out, char *why,
                        size_t len)
{
    struct fs_archive *a;
    struct bsrc *bs;
    int ret;

    *out = NULL;
    if (why && len)
        why[0] = '\0';
    if (!net)
        return -EINVAL;
    ret = bsrc_open_url(net_remote(net), url, gzip_url(url) ? REMOTE_HEAD : 0, &bs, why, len);
    if (ret == 0)
        ret = archive_new(bs, url, spacing, 0, &a);
    if (ret == 0)
        ret = archive_parse(a, lim, out);
    return ret;
}

/* Parse the archive a (zip or gzip, told apart by magic) into its members:
 * the rest of fs_archive_open*(). Takes a: *out is a, or NULL with a freed. */
static int archive_parse(struct fs_archive *a, const struct fs_open_limits *lim,
                         struct fs_archive **out)
{
    unsigned char magic[2] = {0};
    int64_t n;
    int ret;

    /* A remote zip is told by its end (the bytes its open fetched), so
     * that its first bytes need no request; its magic is read only if
     * that fails. */
    if (bsrc_is_remote(a->bs) && !gzip_url(a->path)) {
        a->kind = FS_SRC_ZIP;
        ret = open_zip(a);
        if (ret != -EINVAL)
            goto parsed;
        zip_members_free(a);
    }
    n = bsrc_pread(a->bs, magic, sizeof(magic), 0);
    ret = n < 0 && bsrc_transient((int)n) ? (int)n : 0;
    if (ret < 0)
        goto out_free;
    if (magic[0] == 0x1f && magic[1] == 0x8b) {
        a->kind = FS_SRC_GZIP;
        ret = open_gzip(a, lim);
    } else {
        a->kind = FS_SRC_ZIP;
        ret = open_zip(a);
    }
parsed:
    /* The directory, and a gzip sizing pass's points and chunk CRC table,
     * came from what was read: it must be the file as it was stat'ed. */
    if (ret == 0)
        ret = fs_archive_check(a);
    if (ret < 0)
        goto out_free;
    for (size_t i = 0; i < a->count; i++)
        a->members[i].archive = a;
    *out = a;
    return 0;

out_free:
    fs_archive_free(a);
    return ret;
}

void fs_archive_free(struct fs_archive *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->count; i++)
        member_destroy(&a->members[i]);
    free(a->members);
    bsrc_close(a->bs);
    free(a->path);
    free(a->name);
    free(a);
}

/* Contract in fs.h. */
int64_t fs_member_peek(struct fs_archive *a, struct fs_member *m, void *buf, size_t len)
{
    int64_t n;
    int ret = fs_member_locate(a, m);

    if (ret < 0)
        return ret;
    if (m->unsupported)
        return m->unsupported;
    if (atomic_load(&a->changed))
        return -EIO;
    if (len > m->size)
        len = (size_t)m->size;
    if (m->kind == FS_STORED)
        n = src_pread(a->src, buf, len, m->data_offset);
    else
        n = dfx_extract(m->ix, 0, buf, len);
    ret = fs_archive_check(a); /* after the reads */
    return ret < 0 ? ret : n;
}

/* Take the parked decoder best placed for target: at or before it and
 * either within one spacing or past the index frontier (where no access
 * point could do better). Called with m->lock held. */
static struct dfx_reader *take_parked(struct fs_archive *a, struct fs_member *m, uint64_t target)
{
    uint64_t frontier = dfx_index_frontier(m->ix), floor = 0;
    struct dfx_reader *r = NULL;
    uint64_t best_pos = 0;
    int best = -1;

    /* A remote archive: a decoder behind the access point a fresh one would
     * start at would fetch the compressed bytes in between too. */
    if (bsrc_is_remote(a->bs)) {
        struct dfx_span sp;
        dfx_index_span(m->ix, target, target, &sp);
        floor = sp.out_lo;
    }

    pthread_mutex_lock(&parked_lock);
    for (int i = 0; i < FS_PARKED_MAX; i++) {
        uint64_t pos;

        if (!m->parked[i].r)
            continue;
        pos = dfx_reader_pos(m->parked[i].r);
        if (pos > target || (target - pos > a->spacing && pos < frontier) || pos < floor)
            continue;
        if (best < 0 || pos > best_pos) {
            best = i;
            best_pos = pos;
        }
    }
    if (best >= 0)
        r = slot_take(&m->parked[best]);
    pthread_mutex_unlock(&parked_lock);
    return r;
}

/* Is a sequential decode in progress (a reader's, or a pipelined worker's)
 * about to produce target, or to stop just before it? m->lock held. */
static bool busy_near(struct fs_member *m, uint64_t target)
{
    for (struct fs_busy *b = m->busy; b; b = b->next)
        if ((!b->ahead || b->pipelined) && b->from <= target && target < b->to + BUSY_REACH)
            return true;
    return false;
}

/* Is a readahead worker producing the chunk at target? m->lock held. */
static bool busy_ahead(struct fs_member *m, uint64_t target)
{
    for (struct fs_busy *b = m->busy; b; b = b->next)
        if (b->ahead && b->from <= target && target < b->to)
            return true;
    return false;
}

/* Does any decode in progress touch [from, to)? m->lock held. */
static bool busy_overlaps(struct fs_member *m, uint64_t from, uint64_t to)
{
    for (struct fs_busy *b = m->busy; b; b = b->next)
        if (b->from < to && from < b->to)
            return true;
    return false;
}

/* Wake the readers waiting for a chunk that starts below limit; UINT64_MAX:
 * all of them (a decode ended, so any may go on). m->lock held. */
static void wake(struct fs_member *m, uint64_t limit)
{
    for (struct chunk_waiter *w = m->waiters; w; w = w->next)
        if (w->target < limit)
            pthread_cond_signal(&w->cv);
    if (limit == UINT64_MAX)
        pthread_cond_broadcast(&m->idle);
}

static void busy_link(struct fs_member *m, struct fs_busy *busy, uint64_t from, uint64_t to,
                      bool ahead)
{
    busy->from = from;
    busy->to = to;
    busy->ahead = ahead;
    busy->pipelined = false;
    busy->next = m->busy;
    m->busy = busy;
}

static void busy_unlink(struct fs_member *m, struct fs_busy *busy)
{
    struct fs_busy **pp = &m->busy;

    while (*pp != busy)
        pp = &(*pp)->next;
    *pp = busy->next;
}

/* Park r for a later sequential read. If m's slots are full, its decoder
 * furthest back makes room; else if the whole process is at its bound, the
 * least recently parked decoder of any member does. Returns the decoder to
 * free (outside the locks), or NULL. Called with m->lock held. */
static struct dfx_reader *park(struct fs_member *m, struct dfx_reader *r)
{
    struct dfx_reader *old = NULL;
    int slot = -1;

    if (m->opens == 0 || dfx_reader_pos(r) >= m->size)
        return r;
    pthread_mutex_lock(&parked_lock);
    for (int i = 0; i < FS_PARKED_MAX && slot < 0; i++)
        if (!m->parked[i].r)
            slot = i;
    if (slot < 0) {
        slot = 0;
        for (int i = 1; i < FS_PARKED_MAX; i++)
            if (dfx_reader_pos(m->parked[i].r) < dfx_reader_pos(m->parked[slot].r))
                slot = i;
        old = slot_take(&m->parked[slot]);
    } else if (atomic_load_explicit(&parked_total, memory_order_relaxed) >= FS_PARKED_TOTAL) {
        old = slot_take(parked_oldest);
    }
    slot_put(&m->parked[slot], r);
    pthread_mutex_unlock(&parked_lock);
    return old;
}

/* A decode is over: take it off the busy list, wake the readers waiting on
 * it, and park its decoder for the next sequential read (keep) or free it. */
static void end_decode(struct fs_member *m, struct fs_busy *busy, struct dfx_reader *r,
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
 * the chunk on fail (FS_DEFLATE; a stored member's reads of that chunk). */
static void log_mismatch(struct fs_archive *a, struct fs_member *m, uint64_t idx)
{
    uint64_t seen = atomic_load(&m->bad_chunk);

    while ((seen == 0 || idx + 1 < seen) &&
           !atomic_compare_exchange_weak(&m->bad_chunk, &seen, idx + 1))
        ;
    if (atomic_exchange(&m->logged, true))
        return;
    fuse_log(FUSE_LOG_ERR, "npyfs: %s: member '%s': bytes %llu-%llu do not match their "
             "checksum (the archive is damaged or was rewritten); reads %s fail with EIO\n",
             a->name, m->name, (unsigned long long)(idx * FS_CHUNK_SIZE),
             (unsigned long long)((idx + 1) * FS_CHUNK_SIZE),
             m->kind == FS_STORED ? "of them" : "from there on");
}

/* Does chunk idx (len bytes at data) match the chunk CRC table t? True
 * when there is no table (t NULL). */
static bool chunk_ok(const struct dfx_crcs *t, uint64_t idx, const unsigned char *data,
                     size_t len)
{
    return !t || (idx < t->count && dfx_crcs_of(data, len) == t->crc[idx]);
}

static void log_damage(struct fs_archive *a, struct fs_member *m, uint64_t idx, int err)
{
    char buf[64];

    if (atomic_exchange(&m->logged, true))
        return;
    fuse_log(FUSE_LOG_ERR, "npyfs: %s: member '%s': cannot decode bytes %llu-%llu: %s\n",
             a->name, m->name, (unsigned long long)(idx * FS_CHUNK_SIZE),
             (unsigned long long)((idx + 1) * FS_CHUNK_SIZE), strerror_r(-err, buf, sizeof(buf)));
}

/* Contract in fs.h. */
void fs_member_condemn(struct fs_member *m, int err, uint64_t from)
{
    if (fs_member_located(m) && m->ix)
        dfx_index_set_damage(m->ix, err, from);
    else
        atomic_store(&m->stored_damage, err);
    fs_pages_drop(m);
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
static int decode_through(struct fs_archive *a, struct fs_member *m, struct cache *c,
                          struct dfx_reader *r, uint64_t idx, struct cache_chunk **out)
{
    uint64_t pos = dfx_reader_pos(r);
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
         * archive must still be as it was at open (fs_archive_check()). A
         * change also explains a decode error or a mismatch, so it is
         * checked first. */
        ret = fs_archive_check(a);
        if (ret == 0 && n != (int64_t)want)
            ret = n < 0 ? (int)n : -EIO; /* damage: the index recorded it */
        if (ret == 0 && !chunk_ok(atomic_load(&m->crcs), k, ch->data, want)) {
            fs_member_condemn(m, -EIO, off);
            log_mismatch(a, m, k);
            ret = -EIO;
        }
        if (ret < 0) {
            cache_put(c, ch);
            break;
        }
        ch->len = want;
        cache_insert(c, m->id, k, ch);
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
static void decode_failed(struct fs_archive *a, struct fs_member *m, int err)
{
    if (err < 0 && err != -ENOMEM && err != -EINVAL && err != -ECANCELED &&
        !bsrc_transient(err) && fs_archive_check(a) == 0)
        fs_pages_drop(m);
}

/* A remote archive's bytes could not be fetched (bsrc_transient()): not
 * damage, and the next read tries again. Logged once per archive; stats
 * count every failure. */
static void log_fetch_failure(struct fs_archive *a, int err)
{
    char buf[64];

    if (atomic_exchange(&a->said_fetch, true))
        return;
    fuse_log(FUSE_LOG_ERR, "npyfs: %s: fetching archive bytes failed (%s); the reads that need "
             "them fail with EIO until the server answers again (npyfs stats counts the "
             "failures)\n", a->name, strerror_r(-err, buf, sizeof(buf)));
}

/* Does damage found so far cover chunk idx? Checked on every cache hit too,
 * so chunks cached before the damage was found (a CRC mismatch condemns
 * bytes decoded long before) are not served. */
static int chunk_damaged(struct fs_member *m, uint64_t idx)
{
    uint64_t bad_from;
    int err = fs_member_damage(m, &bad_from);

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
static void advise_decode(struct fs_archive *a, struct fs_member *m, struct dfx_reader *r,
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

/* Contract in fs.h. */
void fs_member_advise(struct fs_member *m, uint64_t from, uint64_t to)
{
    if (to > m->size)
        to = m->size;
    if (from < to && fs_member_located(m) && m->ix && !atomic_load(&m->archive->changed))
        advise_decode(m->archive, m, NULL, from, to);
}

/* Contract in fs.h. */
int fs_member_chunk(struct fs_archive *a, struct fs_member *m, struct cache *c, uint64_t idx,
                    struct cache_chunk **out)
{
    uint64_t target = idx * FS_CHUNK_SIZE;
    struct chunk_waiter w = {.target = target};
    struct dfx_reader *r = NULL;
    struct chunk_waiter **pp;
    bool waiting = false, prepared = false;
    struct fs_busy busy;
    int ret = 0;

    *out = NULL;
    if (target >= m->size)
        return -EINVAL;
    /* Once a change is known, nothing is served, cached chunks included
     * (they are old content, but the kernel was told to drop its pages of
     * the archive's members: reads fail alike, whatever was cached where). */
    if (atomic_load(&a->changed))
        return -EIO;
    ret = chunk_damaged(m, idx);
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
        if (!waiting && !prepared) {
            /* About to wait for a decoder: make fresh chunks ready for it
             * meanwhile (their page faults would otherwise be its work),
             * then look again. */
            prepared = true;
            pthread_mutex_unlock(&m->lock);
            cache_prepare(c, FS_PREPARE_CHUNKS);
            pthread_mutex_lock(&m->lock);
            continue;
        }
        if (!waiting) {
            pthread_cond_init(&w.cv, NULL);
            w.next = m->waiters;
            m->waiters = &w;
            waiting = true;
        }
        pthread_cond_wait(&w.cv, &m->lock);
    }
    if (waiting) {
        for (pp = &m->waiters; *pp != &w; pp = &(*pp)->next)
            ;
        *pp = w.next;
        pthread_cond_destroy(&w.cv);
    }
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
    /* a change is not damage of the member (fs_archive_check() said it),
     * nor is a server that failed */
    if (bsrc_transient(ret))
        log_fetch_failure(a, ret);
    else if (ret < 0 && ret != -ENOMEM && !atomic_load(&a->changed))
        log_damage(a, m, idx, ret);
    return ret;
}

/* Narrow chunks *first..*last to drop cached chunks at either end: only
 * whole chunks are ever inserted, so what is cached need not be decoded
 * again. m->lock held (it is taken before the cache's locks). */
static void trim_cached(struct fs_member *m, struct cache *c, uint64_t *first, uint64_t *last)
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

/* Contract in fs.h. */
int fs_member_produce(struct fs_archive *a, struct fs_member *m, struct cache *c,
                      uint64_t point, uint64_t first, uint64_t last)
{
    struct cache_chunk *ch = NULL;
    struct dfx_reader *r = NULL;
    struct fs_busy busy;
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

    pthread_mutex_lock(&m->lock);
    busy_unlink(m, &busy);
    wake(m, UINT64_MAX);
    pthread_mutex_unlock(&m->lock);
    dfx_reader_free(r);
    return ret;
}

/* Take the parked decoder furthest along in [lo, hi). m->lock held. */
static struct dfx_reader *take_parked_in(struct fs_member *m, uint64_t lo, uint64_t hi)
{
    struct dfx_reader *r = NULL;
    int best = -1;

    pthread_mutex_lock(&parked_lock);
    for (int i = 0; i < FS_PARKED_MAX; i++) {
        uint64_t pos;

        if (!m->parked[i].r)
            continue;
        pos = dfx_reader_pos(m->parked[i].r);
        if (pos >= lo && pos < hi && (best < 0 || pos > dfx_reader_pos(m->parked[best].r)))
            best = i;
    }
    if (best >= 0)
        r = slot_take(&m->parked[best]);
    pthread_mutex_unlock(&parked_lock);
    return r;
}

/* Contract in fs.h. */
int fs_member_continue(struct fs_archive *a, struct fs_member *m, struct cache *c, uint64_t first,
                       uint64_t last, bool (*more)(void *arg, uint64_t next, uint64_t *last),
                       void *arg)
{
    uint64_t nchunks = (m->size + FS_CHUNK_SIZE - 1) / FS_CHUNK_SIZE;
    uint64_t end = (last + 1) * FS_CHUNK_SIZE, k;
    struct dfx_reader *r, *drop = NULL;
    struct fs_busy busy;
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
    return ret;
}

void fs_member_opened(struct fs_member *m)
{
    pthread_mutex_lock(&m->lock);
    m->opens++;
    pthread_mutex_unlock(&m->lock);
    atomic_store(&m->was_opened, true);
}

void fs_member_closed(struct fs_member *m)
{
    struct dfx_reader *drop[FS_PARKED_MAX];
    int n = 0;

    pthread_mutex_lock(&m->lock);
    if (--m->opens == 0)
        n = take_all_parked(m, drop);
    pthread_mutex_unlock(&m->lock);
    for (int i = 0; i < n; i++)
        dfx_reader_free(drop[i]);
}

/*
 * Contract in fs.h.
 *
 * Why one check after a chunk's reads is enough: every read of the input a
 * chunk (or a stored read) was made from has returned before the check
 * here, and the source's check sees any change that a read could have
 * seen (bsrc_check(): a file's times move before new data lands; a remote
 * fetch is checked against the object's ETag as it arrives).
 */
int fs_archive_check(struct fs_archive *a)
{
    if (atomic_load(&a->changed))
        return -EIO;
    if (bsrc_check(a->bs) == 0)
        return 0;
    if (!atomic_exchange(&a->changed, true)) {
        if (bsrc_is_remote(a->bs))
            fuse_log(FUSE_LOG_ERR,
                     "npyfs: %s: the object changed on the server (another ETag, "
                     "Last-Modified or size); reads of its members that need bytes not "
                     "fetched before now fail with EIO (remount to see the new content)\n",
                     a->name);
        else
            fuse_log(FUSE_LOG_ERR,
                     "npyfs: %s: the archive changed (it was written to, truncated, or its "
                     "status changed); reads of its members now fail with EIO (remount to "
                     "see the new content)\n",
                     a->name);
        for (size_t i = 0; i < a->count; i++)
            fs_pages_drop(&a->members[i]);
    }
    return -EIO;
}

/* Contract in fs.h. */
int fs_member_damage(struct fs_member *m, uint64_t *bad_from)
{
    if (fs_member_located(m) && m->ix)
        return dfx_index_damage(m->ix, bad_from);
    *bad_from = 0;
    return atomic_load(&m->stored_damage);
}

/* Contract in fs.h. Two first readers may both check: harmless. */
int fs_member_verify_stored(struct fs_archive *a, struct fs_member *m)
{
    if (atomic_load(&m->verified))
        return 0;
    return fs_member_scan_stored(a, m, NULL);
}

/* Contract in fs.h. The member's CRC-32 is combined from the chunks' CRCs,
 * so the data is checksummed once. */
int fs_member_scan_stored(struct fs_archive *a, struct fs_member *m, atomic_bool *stop)
{
    struct dfx_crcs *t;
    unsigned char *buf;
    int ret = atomic_load(&m->stored_damage);

    if (ret < 0)
        return ret;
    ret = dfx_crcs_new(m->size, FS_CHUNK_SIZE, &t);
    if (ret < 0)
        return ret == -EINVAL ? -EIO : ret;
    buf = malloc(PASS_BUF);
    if (!buf) {
        free(t);
        return -ENOMEM;
    }
    fs_pass_begin(m);
    for (uint64_t off = 0; ret == 0 && off < m->size; off += PASS_BUF) {
        size_t n = m->size - off < PASS_BUF ? (size_t)(m->size - off) : PASS_BUF;
        int chk;

        if (stop && atomic_load(stop))
            ret = -ECANCELED;
        if (ret == 0)
            ret = src_read_exact(a->src, buf, n, m->data_offset + off);
        chk = ret == -ECANCELED ? 0 : fs_archive_check(a); /* after the read: stop early */
        if (ret == 0)
            ret = chk;
        if (ret == 0) {
            dfx_crcs_feed(t, off, buf, n);
            fs_pass_progress(m, off + n);
        }
    }
    fs_pass_end(m);
    free(buf);
    /* the last check came after every read: the table is of the content at open */
    if (ret == 0 && dfx_crcs_whole(t) != m->crc32) {
        ret = -EIO;
        fs_member_condemn(m, -EIO, 0);
        if (!atomic_exchange(&m->logged, true))
            fuse_log(FUSE_LOG_ERR, "npyfs: %s: member '%s': CRC-32 mismatch (stored data is "
                     "damaged); its reads fail with EIO\n", a->name, m->name);
    }
    if (ret == 0) {
        fs_member_set_crcs(m, t);
        atomic_store(&m->verified, true);
    } else {
        free(t);
    }
    return ret;
}

/* Contract in fs.h. */
bool fs_member_set_crcs(struct fs_member *m, struct dfx_crcs *t)
{
    struct dfx_crcs *none = NULL;

    if (!t || t->size != m->size || t->chunk != FS_CHUNK_SIZE ||
        !atomic_compare_exchange_strong(&m->crcs, &none, t)) {
        free(t);
        return false;
    }
    if (m->kind == FS_STORED)
        atomic_store(&m->verified, true); /* the pass that built t checked the CRC */
    return true;
}

/* Contract in fs.h. */
int64_t fs_member_read_stored(struct fs_archive *a, struct fs_member *m, uint64_t off, size_t len,
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
    chk = fs_archive_check(a);
    if (chk < 0)
        ret = chk;
    if (bsrc_transient(ret))
        log_fetch_failure(a, ret);
    for (uint64_t k = first; ret == 0 && t && k <= last; k++) {
        uint64_t end = (k + 1) * FS_CHUNK_SIZE < to ? (k + 1) * FS_CHUNK_SIZE : to;
        if (!chunk_ok(t, k, buf + (k * FS_CHUNK_SIZE - from), (size_t)(end - k * FS_CHUNK_SIZE))) {
            log_mismatch(a, m, k);
            fs_pages_drop(m);
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

/* Contract in fs.h. A passthrough file of a directory mount: the stored
 * read path (fs_member_read_stored(): pread, then fs_archive_check())
 * serves it as is. */
int fs_archive_open_plain(int dirfd, const char *rel, const char *path, const char *name,
                          uint64_t spacing, struct fs_archive **out)
{
    struct fs_archive *a;
    struct fs_member *m;
    int ret = archive_start(dirfd, rel, path, spacing, 1, &a);

    *out = NULL;
    if (ret < 0)
        return ret;
    a->kind = FS_SRC_PLAIN;
    if (!S_ISREG(bsrc_ident(a->bs)->st.st_mode)) {
        ret = -EINVAL;
        goto out_free;
    }
    m = &a->members[0];
    ret = member_init(m, name, strlen(name));
    if (ret < 0)
        goto out_free;
    a->count = 1;
    atomic_store(&m->located, true);
    strcpy(m->method, "plain");
    m->kind = FS_STORED;
    m->size = a->src->size;
    m->stored_size = a->src->size;
    atomic_store(&m->verified, true); /* no CRC: the bytes are the file's */
    m->archive = a;
    *out = a;
    return 0;

out_free:
    fs_archive_free(a);
    return ret;
}
