/*
 * dfx.c: random access into deflate streams, checked against the original
 * bytes. Inputs are built here with zlib: four data sets (incompressible,
 * smooth quantized float64, long zero runs, a mix) compressed as raw deflate
 * at several levels, with sync/full flush points, as one gzip member and as
 * several (including empty members and zero padding). Then: sequential and
 * random reads, backwards reads, reads far past the frontier, 8 threads on one
 * index, where readers start from, and damage (flipped bytes, truncation,
 * wrong sizes and CRCs) that must always surface as -EIO, also for a read
 * that stops exactly at a known size (gzip with usize set).
 *
 * With ISA-L built in, all of that runs once per decoder mode: zlib alone;
 * ISA-L recording its own points (marking); and ISA-L that does not mark
 * (as after marking failed on a stream), so zlib records the points and
 * ISA-L hands over to it at the last usable point. Plus: all modes
 * byte-identical on every form, an index extended across the ISA-L -> zlib
 * hand-over equal to a zlib-only one, every point ISA-L recorded usable by
 * zlib too, starts at points with every bit offset 0-7, a hundred gzip
 * member ends crossed by ISA-L, a point at a member start, the ISA-L
 * wrapper alone (exact stream end however input is fed, resuming,
 * truncation), marking on the stream kinds test_dfx_isal.c covers, marking
 * that gives up mid-stream and hands over to zlib (CRC and trailers still
 * checked), and threads growing one index from different points.
 *
 * Threads never use CHECK (its counters are plain ints): they count their own
 * failures and the main thread checks the totals.
 */
#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "dfx.h"
#include "dfx_internal.h"
#include "dfx_isal.h"
#include "source.h"

#define DATA_LEN ((4u << 20) + 4321) /* several MiB, not a round number */
#define SPACING DFX_MIN_SPACING
#define RAW_PRE 37  /* junk before a raw stream: start != 0 */
#define RAW_POST 29 /* junk after it: end != source size */
#define GZ_PAD 600  /* zero padding after the last gzip member */
#define MAX_PROBES (DATA_LEN / 4096 + 4)

static int verbose;

/* Every check that builds an index runs once per decoder mode (dfx.h,
 * Engines): zlib; ISA-L that records points itself (marking); ISA-L that
 * does not, so zlib records them past the last point. */
enum mode { M_ZLIB, M_ISAL, M_NOMARK };
#ifdef NPYFS_HAVE_ISAL
static const enum mode decoders[] = {M_ZLIB, M_ISAL, M_NOMARK};
#else
static const enum mode decoders[] = {M_ZLIB};
#endif
#define NDECODERS (sizeof(decoders) / sizeof(decoders[0]))
static enum mode decoder = M_ZLIB; /* the one under test */

static const char *decoder_name(enum mode d)
{
    return d == M_ISAL ? "isal" : d == M_NOMARK ? "isal-nomark" : "zlib";
}

/* Where points fall is the same for every reading order only when zlib
 * records them (each at the first boundary past the spacing). ISA-L stops
 * at the first boundary it can, which depends on the sizes of the reads. */
static bool greedy_points(void)
{
    return decoder != M_ISAL;
}

static int index_new(const struct dfx_stream *st, uint64_t spacing, struct dfx_index **ix)
{
    struct dfx_stream c = *st;
    int ret;

    c.decoder = decoder == M_ZLIB ? DFX_DECODER_ZLIB : DFX_DECODER_ISAL;
    ret = dfx_index_new(&c, spacing, ix);
    if (ret == 0 && decoder == M_NOMARK)
        dfx_index_set_marking(*ix, false);
    return ret;
}

/* xorshift64*: deterministic, thread-local when each thread owns its state. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

static uint64_t rnd_below(uint64_t *s, uint64_t n)
{
    return n ? rnd(s) % n : 0;
}

/* ---- data sets ---- */

struct dataset {
    const char *name;
    unsigned char *data;
    size_t len;
};

static void fill_random(unsigned char *p, size_t n, uint64_t *s)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(rnd(s) >> 56);
}

/* A slow signal (two triangle waves plus a little noise) quantized to 1/16:
 * the low mantissa bytes are zero, so it compresses ~4x. Integer-built, so
 * the test needs no libm. */
static void fill_smooth(unsigned char *p, size_t n, uint64_t *s)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t t = i / 8, a = (t * 3) % 40000, b = (t * 97) % 512;
        uint64_t slow = a < 20000 ? a : 40000 - a, fast = b < 256 ? b : 512 - b;
        double v = (double)(slow * 4 + fast + rnd_below(s, 8)) / 16 - 2500;
        memcpy(p + i, &v, 8);
    }
    memset(p + i, 0x5a, n - i);
}

/* Zero runs of 100 KiB to 1 MiB between short random bursts. */
static void fill_zero_runs(unsigned char *p, size_t n, uint64_t *s)
{
    size_t i = 0;
    while (i < n) {
        size_t z = 100000 + rnd_below(s, 900000), b = 1 + rnd_below(s, 2000);
        z = z < n - i ? z : n - i;
        memset(p + i, 0, z);
        i += z;
        b = b < n - i ? b : n - i;
        fill_random(p + i, b, s);
        i += b;
    }
}

static void fill_mixed(unsigned char *p, size_t n, uint64_t *s)
{
    size_t i = 0;
    while (i < n) {
        size_t k = 65536 + rnd_below(s, 450000);
        k = k < n - i ? k : n - i;
        switch (rnd_below(s, 3)) {
        case 0:
            fill_random(p + i, k, s);
            break;
        case 1:
            fill_smooth(p + i, k, s);
            break;
        default:
            fill_zero_runs(p + i, k, s);
        }
        i += k;
    }
}

/* ---- compressed forms ---- */

struct blob {
    unsigned char *buf;
    size_t len;
};

/* Deflate data with zlib. wbits -15 raw, 31 gzip. flush_every > 0 ends every
 * chunk of that size with alternately Z_SYNC_FLUSH and Z_FULL_FLUSH. At is
 * where in out (capacity cap) to write; returns the bytes written or 0. */
static size_t zdeflate(const unsigned char *data, size_t len, int level, int wbits,
                       size_t flush_every, gz_header *h, unsigned char *out, size_t cap)
{
    z_stream zs;
    size_t fed = 0;
    int ret, nflush = 0;

    memset(&zs, 0, sizeof(zs));
    if (deflateInit2(&zs, level, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return 0;
    /* Level 9's 4096-long match chains take ~10 s on the smooth data set;
     * shorter ones keep its lazy matching and block layout at a tenth. */
    if (level == 9)
        deflateTune(&zs, 32, 258, 258, 256);
    if (h)
        deflateSetHeader(&zs, h);
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    do {
        size_t chunk = flush_every && flush_every < len - fed ? flush_every : len - fed;
        int flush = fed + chunk == len ? Z_FINISH : (nflush++ & 1) ? Z_FULL_FLUSH : Z_SYNC_FLUSH;
        zs.next_in = (unsigned char *)data + fed;
        zs.avail_in = (uInt)chunk;
        fed += chunk;
        ret = deflate(&zs, flush);
        if (zs.avail_in != 0 || zs.avail_out == 0)
            ret = Z_BUF_ERROR; /* cap was meant to be enough for one call */
    } while (fed < len && ret == Z_OK);
    size_t n = zs.total_out;
    deflateEnd(&zs);
    return ret == Z_STREAM_END ? n : 0;
}

static size_t bound(size_t len)
{
    return len + len / 100 + (len / 1000 + 16) * 64 + 4096;
}

enum enc_kind { E_RAW0, E_RAW1, E_RAW6, E_RAW9, E_RAW_FLUSH, E_GZ6, E_GZ_MULTI, E_COUNT };

static const char *enc_name[E_COUNT] = {"raw-l0",    "raw-l1",  "raw-l6",    "raw-l9",
                                        "raw-flush", "gzip-l6", "gzip-multi"};

struct encoded {
    struct blob b;
    struct dfx_stream st; /* st.src over b */
    bool cached;          /* shared through encode()'s cache: not freed per use */
};

/* Several members: empty ones, different levels, one with FNAME/FHCRC,
 * then zero padding that must read as the end of the file. */
static size_t gzip_multi(const unsigned char *data, size_t len, unsigned char *out, size_t cap,
                         uint64_t *s)
{
    size_t cut1 = len / 5 + rnd_below(s, len / 5), cut2 = cut1 + 1 + rnd_below(s, len / 3);
    gz_header h;
    size_t n = 0, k;

    memset(&h, 0, sizeof(h));
    h.name = (Bytef *)"part.npy";
    h.hcrc = 1;
    n += (k = zdeflate(data, 0, 6, 31, 0, NULL, out + n, cap - n));
    if (!k)
        return 0;
    n += (k = zdeflate(data, cut1, 1, 31, 0, NULL, out + n, cap - n));
    if (!k)
        return 0;
    n += (k = zdeflate(data, 0, 9, 31, 0, &h, out + n, cap - n));
    if (!k)
        return 0;
    n += (k = zdeflate(data + cut1, cut2 - cut1, 9, 31, 100000, &h, out + n, cap - n));
    if (!k)
        return 0;
    n += (k = zdeflate(data + cut2, len - cut2, 6, 31, 0, NULL, out + n, cap - n));
    if (!k)
        return 0;
    memset(out + n, 0, GZ_PAD);
    return n + GZ_PAD;
}

static int encode_new(const struct dataset *ds, enum enc_kind kind, struct encoded *e, uint64_t *s)
{
    static const int raw_level[] = {0, 1, 6, 9, 6};
    size_t cap = bound(ds->len) + RAW_PRE + RAW_POST + GZ_PAD;
    size_t n;

    memset(e, 0, sizeof(*e));
    e->b.buf = malloc(cap);
    if (!e->b.buf)
        return -1;
    if (kind <= E_RAW_FLUSH) {
        memset(e->b.buf, 0xa5, RAW_PRE);
        n = zdeflate(ds->data, ds->len, raw_level[kind], -15, kind == E_RAW_FLUSH ? 300000 : 0,
                     NULL, e->b.buf + RAW_PRE, cap - RAW_PRE - RAW_POST);
        memset(e->b.buf + RAW_PRE + n, 0x5a, RAW_POST);
        e->b.len = RAW_PRE + n + RAW_POST;
        e->st.framing = DFX_RAW;
        e->st.start = RAW_PRE;
        e->st.end = RAW_PRE + n;
        e->st.usize = ds->len;
        e->st.crc = (uint32_t)crc32(0, ds->data, (uInt)ds->len);
        e->st.check_crc = true;
    } else {
        n = kind == E_GZ6 ? zdeflate(ds->data, ds->len, 6, 31, 0, NULL, e->b.buf, cap)
                          : gzip_multi(ds->data, ds->len, e->b.buf, cap, s);
        e->b.len = n;
        e->st.framing = DFX_GZIP;
        e->st.start = 0;
        e->st.end = n;
        /* The expected size (what the daemon learns from the npy header) on
         * one gzip form, so every check runs both with and without it. */
        e->st.usize = kind == E_GZ_MULTI ? ds->len : UINT64_MAX;
    }
    if (!n || src_mem_new(e->b.buf, e->b.len, &e->st.src) < 0) {
        free(e->b.buf);
        return -1;
    }
    return 0;
}

/* Compressing dominates the run time, and every decoder gets the same
 * input anyway: each (data set, kind) is compressed once. A check that
 * damages the bytes of a cached form puts them back. */
static struct {
    const unsigned char *data;
    size_t len;
    enum enc_kind kind;
    struct encoded e;
} enc_cache[5 * E_COUNT];
static size_t enc_cached;

static int encode(const struct dataset *ds, enum enc_kind kind, struct encoded *e, uint64_t *s)
{
    for (size_t i = 0; i < enc_cached; i++)
        if (enc_cache[i].data == ds->data && enc_cache[i].len == ds->len &&
            enc_cache[i].kind == kind) {
            *e = enc_cache[i].e;
            return 0;
        }
    if (encode_new(ds, kind, e, s) < 0)
        return -1;
    if (enc_cached < sizeof(enc_cache) / sizeof(enc_cache[0])) {
        e->cached = true;
        enc_cache[enc_cached].data = ds->data;
        enc_cache[enc_cached].len = ds->len;
        enc_cache[enc_cached].kind = kind;
        enc_cache[enc_cached++].e = *e;
    }
    return 0;
}

static void encoded_destroy(struct encoded *e)
{
    src_free(e->st.src);
    free(e->b.buf);
}

static void encoded_free(struct encoded *e)
{
    if (!e->cached)
        encoded_destroy(e);
}

static void enc_cache_free(void)
{
    for (size_t i = 0; i < enc_cached; i++)
        encoded_destroy(&enc_cache[i].e);
    enc_cached = 0;
}

/* ---- checks shared by every (data set, encoding) ---- */

/* Read everything from offset 0 in uneven chunks. Returns 0 if the bytes and
 * the end matched, else the first error or -1 for a mismatch. */
static int full_pass_buf(struct dfx_index *ix, const unsigned char *data, size_t len, uint64_t *s,
                         unsigned char *buf, size_t cap)
{
    struct dfx_reader *r;
    size_t at = 0;
    int ret = dfx_reader_new(ix, 0, &r);

    if (ret < 0)
        return ret;
    for (;;) {
        size_t want = 1 + rnd_below(s, cap);
        int64_t n = dfx_reader_read(r, buf, want);
        if (n < 0) {
            ret = (int)n;
            break;
        }
        if (n == 0) {
            ret = at == len ? 0 : -1;
            break;
        }
        if ((size_t)n > want || at + (size_t)n > len || memcmp(buf, data + at, (size_t)n)) {
            ret = -1;
            break;
        }
        if ((size_t)n < want && at + (size_t)n != len) {
            ret = -1; /* short read before the end */
            break;
        }
        at += (size_t)n;
    }
    if (ret == 0 && dfx_reader_read(r, buf, 10) != 0)
        ret = -1; /* stays at the end */
    dfx_reader_free(r);
    return ret;
}

static int full_pass(struct dfx_index *ix, const unsigned char *data, size_t len, uint64_t *s)
{
    static unsigned char buf[300000];
    return full_pass_buf(ix, data, len, s, buf, sizeof(buf));
}

/* One random extract against the original; 0 if it matched. */
static int extract_ok(struct dfx_index *ix, const unsigned char *data, size_t len, uint64_t off,
                      size_t want, unsigned char *buf)
{
    size_t expect = off >= len ? 0 : (want < len - off ? want : len - off);
    int64_t n = dfx_extract(ix, off, buf, want);

    if (n < 0 || (size_t)n != expect)
        return -1;
    return memcmp(buf, data + off, expect) ? -1 : 0;
}

/* An offset/length mix: anywhere, just before points, the very end, past it. */
static void pick(uint64_t *s, size_t len, const uint64_t *pts, size_t npts, uint64_t *off,
                 size_t *want)
{
    uint64_t k = rnd_below(s, 100);

    if (k < 50)
        *off = rnd_below(s, len);
    else if (k < 75 && npts > 1) {
        uint64_t p = pts[1 + rnd_below(s, npts - 1)];
        *off = p - rnd_below(s, 200 < p ? 200 : p);
    } else if (k < 90)
        *off = len - rnd_below(s, 5000 < len ? 5000 : len);
    else
        *off = len + rnd_below(s, 3000);
    k = rnd_below(s, 100);
    *want = k < 5 ? 0 : k < 40 ? 1 + rnd_below(s, 100) : 1 + rnd_below(s, 200000);
}

/* Ask for a reader at every 4 KiB; the distinct start positions are the
 * points (they are >= SPACING apart). Checks pos <= off and monotonicity. */
static size_t probe_points(struct dfx_index *ix, size_t len, uint64_t *pts)
{
    size_t n = 0;
    int bad = 0;

    for (uint64_t off = 0; off <= len + 4096 && n < MAX_PROBES; off += 4096) {
        struct dfx_reader *r;
        if (dfx_reader_new(ix, off, &r) < 0) {
            bad++;
            continue;
        }
        uint64_t pos = dfx_reader_pos(r);
        if (pos > off || (n && pos < pts[n - 1]))
            bad++;
        if (!n || pos != pts[n - 1])
            pts[n++] = pos;
        dfx_reader_free(r);
    }
    CHECK_EQ(bad, 0);
    return n;
}

/* A reader starts at the closest point at or before off, never further back. */
static void check_start_points(struct dfx_index *ix, const uint64_t *pts, size_t npts, uint64_t *s,
                               size_t len)
{
    int bad = 0;

    for (int i = 0; i < 300; i++) {
        uint64_t off = rnd_below(s, len + 1000);
        size_t j = npts - 1;
        struct dfx_reader *r;

        while (pts[j] > off)
            j--;
        if (dfx_reader_new(ix, off, &r) < 0) {
            bad++;
            continue;
        }
        bad += dfx_reader_pos(r) != pts[j];
        dfx_reader_free(r);
    }
    CHECK_EQ(bad, 0);
}

/* Returns the largest gap between points, for the report. */
static uint64_t check_point_layout(struct dfx_index *ix, size_t len, uint64_t *s, uint64_t *pts,
                                   size_t *npts_out)
{
    size_t npts = probe_points(ix, len, pts);
    uint64_t max_gap = 0;
    int close = 0;

    CHECK_EQ(npts, dfx_index_points(ix));
    CHECK_EQ(pts[0], 0);
    CHECK_EQ(pts[npts - 1], dfx_index_frontier(ix));
    for (size_t i = 1; i < npts; i++) {
        uint64_t gap = pts[i] - pts[i - 1];
        close += gap < SPACING; /* points are at least spacing apart */
        max_gap = gap > max_gap ? gap : max_gap;
    }
    CHECK_EQ(close, 0);
    check_start_points(ix, pts, npts, s, len);
    *npts_out = npts;
    return max_gap;
}

static void check_random_reads(struct dfx_index *ix, const struct dataset *ds, const uint64_t *pts,
                               size_t npts, int count, uint64_t *s)
{
    static unsigned char buf[200000];
    int bad = 0;

    for (int i = 0; i < count; i++) {
        uint64_t off;
        size_t want;
        pick(s, ds->len, pts, npts, &off, &want);
        if (extract_ok(ix, ds->data, ds->len, off, want, buf) < 0) {
            if (bad++ < 5)
                fprintf(stderr, "  extract(%llu, %zu) wrong\n", (unsigned long long)off, want);
        }
    }
    CHECK_EQ(bad, 0);
}

/* Read from the last chunk down to the first on a fresh index: the first
 * read builds points along the way, later ones use them. */
static void check_backwards(const struct encoded *e, const struct dataset *ds, size_t expect_pts)
{
    static unsigned char buf[100000];
    struct dfx_index *ix;
    int bad = 0;

    CHECK_EQ(index_new(&e->st, SPACING, &ix), 0);
    if (!ix)
        return;
    for (uint64_t off = ds->len; off > 0;) {
        uint64_t step = off < sizeof(buf) ? off : sizeof(buf);
        off -= step;
        bad += extract_ok(ix, ds->data, ds->len, off, sizeof(buf), buf) < 0;
    }
    CHECK_EQ(bad, 0);
    /* Single-threaded, zlib places points greedily, so any order of reads
     * that reaches the end yields the same set as one forward pass. */
    if (greedy_points())
        CHECK_EQ(dfx_index_points(ix), expect_pts);
    else
        CHECK(dfx_index_points(ix) > 1);
    CHECK_EQ(dfx_index_error(ix), 0);
    dfx_index_free(ix);
}

/* A read far past the frontier extends the index up to it; the next read
 * nearby starts from there instead of from 0. */
static void check_far_read(const struct encoded *e, const struct dataset *ds)
{
    static unsigned char buf[1000];
    struct dfx_index *ix;
    struct dfx_reader *r;
    uint64_t off = ds->len * 3 / 4;

    CHECK_EQ(index_new(&e->st, SPACING, &ix), 0);
    if (!ix)
        return;
    CHECK_EQ(dfx_index_points(ix), 1);
    CHECK_EQ(dfx_index_frontier(ix), 0);
    CHECK_EQ(extract_ok(ix, ds->data, ds->len, off, sizeof(buf), buf), 0);
    CHECK(dfx_index_points(ix) > 10);
    CHECK(dfx_index_frontier(ix) > off / 2);
    CHECK(dfx_index_frontier(ix) <= off + sizeof(buf));
    CHECK_EQ(dfx_index_total(ix), UINT64_MAX); /* the end was not reached */
    CHECK_EQ(dfx_reader_new(ix, off + 10, &r), 0);
    if (r) {
        CHECK_EQ(dfx_reader_pos(r), dfx_index_frontier(ix));
        dfx_reader_free(r);
    }
    dfx_index_free(ix);
}

/* Bits of every access point, counted over all indexes built by
 * check_combo(): starting at a point with bits = 1..7 (a block boundary
 * inside a byte) must be exercised, by each decoder. */
static unsigned long bits_seen[NDECODERS][8];

/* Start exactly at every point (a reader at p.out starts there) and compare
 * a few KiB; count the points' bits. The index must be complete. */
static void check_point_starts(struct dfx_index *ix, const struct dataset *ds, size_t dec)
{
    static unsigned char buf[5000];
    struct dfx_xpoint *xp;
    size_t n = 0;
    uint64_t total;
    int bad = 0;

    CHECK_EQ(dfx_index_export(ix, &xp, &n, &total), 0);
    for (size_t i = 0; i < n; i++) {
        /* none at the end (before an empty last block): a saved index
         * holding one would be refused at load */
        if (i)
            CHECK(xp[i].out < total);
        bits_seen[dec][xp[i].bits]++;
        bad += extract_ok(ix, ds->data, ds->len, xp[i].out, sizeof(buf), buf) < 0;
    }
    CHECK_EQ(bad, 0);
    free(xp);
}

static void check_combo(const struct encoded *ep, const struct dataset *ds, enum enc_kind kind,
                        size_t dec, uint64_t *s)
{
    static uint64_t pts[MAX_PROBES];
    struct encoded e = *ep;
    struct dfx_index *ix;
    size_t npts = 0;
    uint64_t max_gap;

    decoder = decoders[dec];
    CHECK_EQ(index_new(&e.st, SPACING, &ix), 0);
    if (!ix)
        return;
    CHECK_EQ(dfx_index_total(ix), UINT64_MAX);
    CHECK_EQ(full_pass(ix, ds->data, ds->len, s), 0);
    CHECK_EQ(dfx_index_total(ix), ds->len);
    CHECK_EQ(dfx_index_error(ix), 0);
    CHECK(dfx_index_points(ix) > 1);
    max_gap = check_point_layout(ix, ds->len, s, pts, &npts);
    check_random_reads(ix, ds, pts, npts, 400, s);
    CHECK_EQ(full_pass(ix, ds->data, ds->len, s), 0); /* an indexed pass changes nothing */
    if (greedy_points())
        CHECK_EQ(dfx_index_points(ix), npts);
    else /* ISA-L may stop at a boundary it passed over before */
        check_point_layout(ix, ds->len, s, pts, &npts);
    check_point_starts(ix, ds, dec);
    check_backwards(&e, ds, npts);
    if (verbose)
        printf("  %-6s %-10s %-4s %8zu -> %8zu bytes, %3zu points, max gap %7llu\n", ds->name,
               enc_name[kind], decoder_name(decoder), ds->len, e.b.len, npts,
               (unsigned long long)max_gap);
    dfx_index_free(ix);
}

/* ---- threads ---- */

struct worker {
    struct dfx_index *ix;
    const struct dataset *ds;
    uint64_t seed;
    int sequential; /* full passes instead of random extracts */
    int fails;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    unsigned char *buf = malloc(200000);
    uint64_t s = w->seed;

    if (!buf) {
        w->fails++;
        return NULL;
    }
    for (int i = 0; i < (w->sequential ? 2 : 150); i++) {
        uint64_t off;
        size_t want;
        if (w->sequential) {
            w->fails += full_pass_buf(w->ix, w->ds->data, w->ds->len, &s, buf, 200000) != 0;
            continue;
        }
        pick(&s, w->ds->len, NULL, 0, &off, &want);
        w->fails += extract_ok(w->ix, w->ds->data, w->ds->len, off, want, buf) != 0;
    }
    free(buf);
    return NULL;
}

/* 8 threads on one fresh index: two sequential readers race six random ones
 * to extend it. Afterwards the points must still be ordered and usable. */
static void check_threads(const struct dataset *ds, enum enc_kind kind, uint64_t *s)
{
    static uint64_t pts[MAX_PROBES];
    struct worker w[8];
    pthread_t th[8];
    struct encoded e;
    struct dfx_index *ix;
    size_t npts;
    int fails = 0;

    if (encode(ds, kind, &e, s) < 0 || index_new(&e.st, SPACING, &ix) < 0) {
        CHECK(!"setup");
        return;
    }
    if (verbose)
        printf("  threads %s %s %s\n", ds->name, enc_name[kind], decoder_name(decoder));
    for (int i = 0; i < 8; i++) {
        w[i] = (struct worker){ix, ds, rnd(s) | 1, i < 2, 0};
        CHECK_EQ(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        fails += w[i].fails;
    }
    CHECK_EQ(fails, 0);
    CHECK_EQ(dfx_index_error(ix), 0);
    CHECK_EQ(dfx_index_total(ix), ds->len);
    check_point_layout(ix, ds->len, s, pts, &npts);
    check_random_reads(ix, ds, pts, npts, 100, s);
    dfx_index_free(ix);
    encoded_free(&e);
}

/* ---- damage ---- */

/* Read st from 0 to the end without comparing: 0, or the first error. */
static int drain(struct dfx_index *ix)
{
    static unsigned char buf[1 << 16];
    struct dfx_reader *r;
    int64_t n;
    int ret = dfx_reader_new(ix, 0, &r);

    if (ret < 0)
        return ret;
    while ((n = dfx_reader_read(r, buf, sizeof(buf))) > 0)
        ;
    dfx_reader_free(r);
    return (int)n;
}

/* A full pass over st must fail with -EIO, and the index must remember it:
 * a whole-stream extract afterwards fails too. */
static bool damaged_with(const struct dfx_stream *st, const struct dataset *ds)
{
    static unsigned char big[DATA_LEN];
    struct dfx_index *ix;
    bool ok;
    int ret;

    if (index_new(st, SPACING, &ix) < 0)
        return true; /* a damaged first header is refused up front */
    ret = drain(ix);
    ok = ret == -EIO && dfx_index_error(ix) == -EIO && dfx_extract(ix, 0, big, ds->len) == -EIO;
    if (!ok)
        fprintf(stderr, "  damage not reported (%s): pass %d, error %d, extract %lld\n",
                decoder_name(decoder), ret, dfx_index_error(ix),
                (long long)dfx_extract(ix, 0, big, ds->len));
    dfx_index_free(ix);
    return ok;
}

/* The pass from 0 on a fresh index decodes with zlib or with marking
 * ISA-L; the later extract starts behind the frontier the pass left. */
static void expect_damaged(const struct dfx_stream *st, const struct dataset *ds, int *failed_ok)
{
    bool ok = true;

    for (size_t d = 0; d < NDECODERS; d++) {
        decoder = decoders[d];
        ok &= damaged_with(st, ds);
    }
    *failed_ok += ok;
}

/* Behind the frontier ISA-L decodes data that was good when the points were
 * recorded. So index the good stream, then flip a byte under it (a memory
 * source borrows the buffer): a pass from 0, by ISA-L up to the last point,
 * must fail. Returns 1 if it did. */
static int damaged_under_index(struct encoded *e, uint64_t at)
{
    struct dfx_index *ix;
    int ret, ok;

    if (index_new(&e->st, SPACING, &ix) < 0)
        return 0;
    ret = drain(ix);
    e->b.buf[at] ^= 0xff;
    ok = ret == 0 && drain(ix) == -EIO && dfx_index_error(ix) == -EIO;
    e->b.buf[at] ^= 0xff;
    dfx_index_free(ix);
    return ok;
}

/* XOR 0xff into bytes of the deflate data, one at a time. Whether the flip
 * breaks decoding or only changes the output, a full pass must fail. */
static void check_flips(const struct dataset *ds, enum enc_kind kind, uint64_t *s, int trials)
{
    struct encoded e;
    int ok = 0;

    if (encode(ds, kind, &e, s) < 0) {
        CHECK(!"encode");
        return;
    }
    /* Deflate data only: for gzip skip the 10-byte header and 8-byte trailer
     * (a flipped MTIME is not damage). */
    uint64_t lo = e.st.framing == DFX_RAW ? e.st.start : 10;
    uint64_t hi = e.st.framing == DFX_RAW ? e.st.end : e.st.end - 8;
    for (int i = 0; i < trials; i++) {
        uint64_t at = lo + rnd_below(s, hi - lo);
        e.b.buf[at] ^= 0xff;
        expect_damaged(&e.st, ds, &ok);
        e.b.buf[at] ^= 0xff;
    }
    CHECK_EQ(ok, trials);
    for (size_t d = 0; d < NDECODERS; d++) {
        decoder = decoders[d];
        ok = 0;
        for (int i = 0; i < trials; i++)
            ok += damaged_under_index(&e, lo + rnd_below(s, hi - lo));
        CHECK_EQ(ok, trials);
    }
    encoded_free(&e);
}

/* Cut the stream short in several places (and once the source itself). The
 * gzip cuts fall inside the last member: its deflate data, right after it,
 * inside its trailer, and inside the first header (refused up front). */
static void check_truncation(const struct dataset *ds, enum enc_kind kind, uint64_t *s)
{
    struct encoded e;
    struct dfx_stream st;
    struct src *short_src;
    int ok = 0, n = 0;

    if (encode(ds, kind, &e, s) < 0) {
        CHECK(!"encode");
        return;
    }
    uint64_t clen = e.st.end - e.st.start - (kind == E_GZ_MULTI ? GZ_PAD : 0);
    uint64_t cuts[] = {clen / 2, clen - 1, clen - 4, clen - 8, clen - 100, 5, 1, 0};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        st = e.st;
        st.end = st.start + cuts[i];
        n++;
        int before = ok;
        expect_damaged(&st, ds, &ok);
        if (ok == before)
            fprintf(stderr, "  %s cut %llu of %llu\n", enc_name[kind], (unsigned long long)cuts[i],
                    (unsigned long long)clen);
    }
    src_mem_new(e.b.buf, (size_t)(e.st.start + clen * 2 / 3), &short_src);
    st = e.st;
    st.src = short_src;
    n++;
    expect_damaged(&st, ds, &ok);
    src_free(short_src);
    CHECK_EQ(ok, n);
    encoded_free(&e);
}

static void check_raw_size_crc(const struct dataset *ds, uint64_t *s)
{
    static unsigned char buf[200000];
    struct encoded e;
    struct dfx_stream st;
    struct dfx_index *ix;
    struct dfx_reader *r;
    int ok = 0;

    if (encode(ds, E_RAW6, &e, s) < 0) {
        CHECK(!"encode");
        return;
    }
    uint64_t sizes[] = {ds->len - 1, ds->len + 1, 0, ds->len / 2};
    for (size_t i = 0; i < 4; i++) {
        st = e.st;
        st.usize = sizes[i];
        expect_damaged(&st, ds, &ok);
    }
    CHECK_EQ(ok, 4);

    /* usize one short: reading exactly usize bytes already fails, since the
     * read that reaches usize decodes on to the end of the stream. */
    st = e.st;
    st.usize = ds->len - 1;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(dfx_extract(ix, ds->len - 1000, buf, 999), -EIO);
    dfx_index_free(ix);

    /* Wrong CRC: caught by a pass from 0, then every read fails; ignored
     * without check_crc. */
    ok = 0;
    st = e.st;
    st.crc ^= 1;
    expect_damaged(&st, ds, &ok);
    CHECK_EQ(ok, 1);
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(full_pass(ix, ds->data, ds->len, s), -EIO);
    CHECK_EQ(dfx_extract(ix, ds->len / 2, buf, 100), -EIO);
    CHECK_EQ(dfx_reader_new(ix, ds->len / 2, &r), 0);
    CHECK(dfx_reader_pos(r) > 0);                 /* starts at a point: the CRC is not recomputed */
    CHECK_EQ(dfx_reader_read(r, buf, 100), -EIO); /* ... but the index remembers */
    CHECK_EQ(dfx_reader_read(r, buf, 100), -EIO); /* and the reader stays failed */
    dfx_reader_free(r);
    dfx_index_free(ix);
    st.check_crc = false;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(full_pass(ix, ds->data, ds->len, s), 0);
    dfx_index_free(ix);
    encoded_free(&e);
}

/* Trailer damage: CRC is checked by readers that decoded the whole member,
 * ISIZE by every reader reaching the member end. */
static void check_gzip_trailer(const struct dataset *ds, uint64_t *s)
{
    static unsigned char buf[200000];
    struct encoded e;
    struct dfx_index *ix;
    int ok = 0;

    if (encode(ds, E_GZ6, &e, s) < 0) {
        CHECK(!"encode");
        return;
    }
    unsigned char *crc = e.b.buf + e.b.len - 8, *isize = e.b.buf + e.b.len - 4;
    crc[1] ^= 0x10;
    expect_damaged(&e.st, ds, &ok);
    crc[1] ^= 0x10;
    isize[0] ^= 1;
    expect_damaged(&e.st, ds, &ok);
    isize[0] ^= 1;
    CHECK_EQ(ok, 2);

    /* Index the good file, then damage it under the index (a memory source
     * borrows the buffer) and read the tail from a point. */
    CHECK_EQ(index_new(&e.st, SPACING, &ix), 0);
    CHECK_EQ(full_pass(ix, ds->data, ds->len, s), 0);
    crc[0] ^= 1;
    CHECK_EQ(extract_ok(ix, ds->data, ds->len, ds->len - 5000, 10000, buf), 0);
    crc[0] ^= 1;
    isize[3] ^= 0x80;
    CHECK_EQ(dfx_extract(ix, ds->len - 5000, buf, 10000), -EIO);
    CHECK_EQ(dfx_index_error(ix), -EIO);
    isize[3] ^= 0x80;
    dfx_index_free(ix);
    encoded_free(&e);
}

/* After a member: a bad header with the gzip magic is damage; bytes without
 * the magic end the file (as for gzip(1)), so the output is just shorter. */
static void check_gzip_member_headers(const struct dataset *ds, uint64_t *s)
{
    size_t half = ds->len / 2, cap = bound(ds->len) + 64;
    unsigned char *buf = malloc(cap);
    struct dfx_stream st = {0};
    struct dfx_index *ix;
    size_t n1, n2;
    int ok = 0;

    n1 = zdeflate(ds->data, half, 6, 31, 0, NULL, buf, cap);
    n2 = zdeflate(ds->data + half, ds->len - half, 6, 31, 0, NULL, buf + n1, cap - n1);
    CHECK(n1 && n2);
    src_mem_new(buf, n1 + n2, &st.src);
    st.framing = DFX_GZIP;
    st.usize = UINT64_MAX;
    st.end = n1 + n2;
    buf[n1 + 2] = 7; /* method */
    expect_damaged(&st, ds, &ok);
    CHECK_EQ(ok, 1);
    buf[n1 + 2] = 8;
    buf[n1] = 0x1e; /* no magic: the end */
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(full_pass(ix, ds->data, half, s), 0);
    CHECK_EQ(dfx_index_total(ix), half);
    CHECK_EQ(dfx_index_error(ix), 0);
    dfx_index_free(ix);
    buf[n1] = 0x1f;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(full_pass(ix, ds->data, ds->len, s), 0);
    dfx_index_free(ix);
    src_free(st.src);
    free(buf);
}

/* A reader at the point at or before off skips to off, then reads the bytes
 * up to len (the end) in one call, never asking past them. Returns the
 * read's result, -1 if the bytes are wrong; *start gets the reader's start. */
static int64_t read_to_end(struct dfx_index *ix, const unsigned char *data, uint64_t off,
                           size_t len, unsigned char *buf, uint64_t *start)
{
    struct dfx_reader *r;
    int64_t n;
    int ret = dfx_reader_new(ix, off, &r);

    if (ret < 0)
        return ret;
    *start = dfx_reader_pos(r);
    ret = dfx_reader_skip(r, off - *start);
    n = ret < 0 ? ret : dfx_reader_read(r, buf, len - off);
    if (n == (int64_t)(len - off) && memcmp(buf, data + off, len - off))
        n = -1;
    dfx_reader_free(r);
    return n;
}

/* All but the last byte from a reader at 0, then the last byte on its own:
 * the result of that one-byte read. */
static int64_t read_last_byte(struct dfx_index *ix, size_t len)
{
    struct dfx_reader *r;
    unsigned char b;
    int64_t n;
    int ret = dfx_reader_new(ix, 0, &r);

    if (ret < 0)
        return ret;
    ret = dfx_reader_skip(r, len - 1);
    n = ret < 0 ? ret : dfx_reader_read(r, &b, 1);
    dfx_reader_free(r);
    return n;
}

/* gzip with the expected size known (usize), as the daemon reads a .npy.gz:
 * it never asks past the size, so the read that reaches it must decode on
 * through the trailers to the end of the stream and fail there on damage. */
static void check_gzip_usize(const struct dataset *ds, uint64_t *s)
{
    static unsigned char big[DATA_LEN];
    size_t len = ds->len, tail = 5000, cap = bound(len) + 64, n1, n2, n3;
    unsigned char *buf = malloc(cap);
    struct dfx_stream st;
    struct dfx_index *ix;
    struct encoded e;
    uint64_t start;

    if (!buf || encode(ds, E_GZ6, &e, s) < 0) {
        CHECK(!"setup");
        free(buf);
        return;
    }
    unsigned char *crc = e.b.buf + e.b.len - 8, *isize = e.b.buf + e.b.len - 4;
    st = e.st;
    st.usize = len;

    /* Good: exact reads to the end, from 0 and from a later point. */
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(read_to_end(ix, ds->data, 0, len, big, &start), (int64_t)len);
    CHECK_EQ(dfx_index_total(ix), len); /* the end was reached */
    CHECK_EQ(read_to_end(ix, ds->data, len - tail, len, big, &start), (int64_t)tail);
    CHECK(start > 0);
    CHECK_EQ(read_last_byte(ix, len), 1);
    CHECK_EQ(full_pass(ix, ds->data, len, s), 0);
    CHECK_EQ(dfx_index_error(ix), 0);
    /* CRC flipped under the index: a reader from a later point cannot check
     * it (it did not decode the member), so its exact read succeeds. */
    crc[0] ^= 1;
    CHECK_EQ(read_to_end(ix, ds->data, len - tail, len, big, &start), (int64_t)tail);
    crc[0] ^= 1;
    /* ISIZE flipped under the index: that reader checks ISIZE. */
    isize[1] ^= 0x04;
    CHECK_EQ(read_to_end(ix, ds->data, len - tail, len, big, &start), -EIO);
    CHECK(start > 0);
    CHECK_EQ(dfx_index_error(ix), -EIO);
    isize[1] ^= 0x04;
    dfx_index_free(ix);

    /* Flipped trailer CRC: the last byte from a reader at 0 fails, and the
     * whole member is poisoned. */
    crc[1] ^= 0x10;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(read_last_byte(ix, len), -EIO);
    CHECK_EQ(dfx_index_error(ix), -EIO);
    CHECK_EQ(dfx_extract(ix, 0, big, 100), -EIO);
    dfx_index_free(ix);
    crc[1] ^= 0x10;

    /* Wrong ISIZE: the exact read from 0 fails. */
    isize[0] ^= 1;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(read_to_end(ix, ds->data, 0, len, big, &start), -EIO);
    CHECK_EQ(dfx_index_error(ix), -EIO);
    dfx_index_free(ix);
    isize[0] ^= 1;

    /* The stream decodes to 3 bytes more than usize, or ends 1 short. */
    st.usize = len - 3;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(read_to_end(ix, ds->data, 0, len - 3, big, &start), -EIO);
    CHECK_EQ(dfx_index_error(ix), -EIO);
    CHECK_EQ(dfx_extract(ix, 0, big, 100), -EIO);
    dfx_index_free(ix);
    st.usize = len + 1;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(drain(ix), -EIO);
    CHECK_EQ(dfx_index_total(ix), UINT64_MAX);
    dfx_index_free(ix);
    encoded_free(&e);

    /* Members: all but 3 bytes, the 3 bytes, an empty one, zero padding.
     * With usize the whole output it reads fine; with usize 3 short the
     * exact read fails in the second member; damage in the empty member's
     * trailer (CRC: decoded from its start by every reader) fails it too. */
    memset(&st, 0, sizeof(st));
    n1 = zdeflate(ds->data, len - 3, 6, 31, 0, NULL, buf, cap);
    n2 = n1 + zdeflate(ds->data + len - 3, 3, 6, 31, 0, NULL, buf + n1, cap - n1);
    n3 = n2 + zdeflate(ds->data, 0, 6, 31, 0, NULL, buf + n2, cap - n2);
    CHECK(n1 && n2 > n1 && n3 > n2 && n3 + 100 <= cap);
    memset(buf + n3, 0, 100);
    src_mem_new(buf, n3 + 100, &st.src);
    st.framing = DFX_GZIP;
    st.end = n3 + 100;
    st.usize = len;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(read_to_end(ix, ds->data, 0, len, big, &start), (int64_t)len);
    CHECK_EQ(read_to_end(ix, ds->data, len - tail, len, big, &start), (int64_t)tail);
    CHECK_EQ(dfx_index_total(ix), len);
    CHECK_EQ(dfx_index_error(ix), 0);
    dfx_index_free(ix);
    size_t bad[] = {n3 - 8, n3 - 4, n2 - 8, n2 - 1};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        buf[bad[i]] ^= 0x01;
        CHECK_EQ(index_new(&st, SPACING, &ix), 0);
        CHECK_EQ(read_to_end(ix, ds->data, 0, len, big, &start), -EIO);
        dfx_index_free(ix);
        buf[bad[i]] ^= 0x01;
    }
    st.usize = len - 3;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(read_to_end(ix, ds->data, 0, len - 3, big, &start), -EIO);
    CHECK_EQ(dfx_index_error(ix), -EIO);
    dfx_index_free(ix);
    src_free(st.src);

    /* Stored blocks (level 0): a flipped data byte still decodes, to other
     * bytes; only the CRC catches it, which the exact read must check. */
    memset(&st, 0, sizeof(st));
    n1 = zdeflate(ds->data, len, 0, 31, 0, NULL, buf, cap);
    CHECK(n1 > len);
    src_mem_new(buf, n1, &st.src);
    st.framing = DFX_GZIP;
    st.end = n1;
    st.usize = len;
    buf[10 + 5 + 1000] ^= 0x20; /* header, stored block header, data[1000] */
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(dfx_extract(ix, 0, big, len), -EIO);
    CHECK_EQ(dfx_index_error(ix), -EIO);
    dfx_index_free(ix);
    buf[10 + 5 + 1000] ^= 0x20;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(dfx_extract(ix, 0, big, len), (int64_t)len);
    CHECK(memcmp(big, ds->data, len) == 0);
    dfx_index_free(ix);
    src_free(st.src);

    /* Empty file, usize 0: even a read of nothing checks the end. */
    memset(&st, 0, sizeof(st));
    n1 = zdeflate(ds->data, 0, 6, 31, 0, NULL, buf, cap);
    src_mem_new(buf, n1, &st.src);
    st.framing = DFX_GZIP;
    st.end = n1;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(read_to_end(ix, ds->data, 0, 0, big, &start), 0);
    CHECK_EQ(dfx_index_total(ix), 0);
    dfx_index_free(ix);
    buf[n1 - 1] ^= 0x80; /* ISIZE */
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(read_to_end(ix, ds->data, 0, 0, big, &start), -EIO);
    dfx_index_free(ix);
    src_free(st.src);
    free(buf);
}

/* ---- the two decoders ---- */

/* Points of two complete indexes: the same offsets, bits and windows. */
static bool same_points(struct dfx_index *a, struct dfx_index *b)
{
    struct dfx_xpoint *xa = NULL, *xb = NULL;
    size_t na = 0, nb = 0;
    uint64_t ta, tb;
    bool same = dfx_index_export(a, &xa, &na, &ta) == 0 &&
                dfx_index_export(b, &xb, &nb, &tb) == 0 && na == nb && ta == tb;

    static unsigned char wa[DFX_WINDOW_SIZE], wb[DFX_WINDOW_SIZE];

    for (size_t i = 0; same && i < na; i++) {
        const struct dfx_xpoint *p = &xa[i], *q = &xb[i];
        uint32_t la = 0, lb = 0;

        same = p->out == q->out && p->in == q->in && p->bits == q->bits &&
               p->member_out == q->member_out && p->window_len == q->window_len &&
               p->usable && q->usable &&
               dfx_index_window(a, p->out, wa, &la) == 0 &&
               dfx_index_window(b, q->out, wb, &lb) == 0 && la == p->window_len &&
               lb == la && !memcmp(wa, wb, la);
    }
    free(xa);
    free(xb);
    return same;
}

/* Decode the whole stream from 0 into a buffer with a guard zone after it:
 * neither engine may write past what was asked for. */
static unsigned char *extract_all(struct dfx_index *ix, const struct dataset *ds)
{
    enum { GUARD = 4096 };
    unsigned char *buf = malloc(ds->len + GUARD);
    bool ok;

    if (!buf)
        return NULL;
    memset(buf + ds->len, 0xa5, GUARD);
    ok = dfx_extract(ix, 0, buf, ds->len) == (int64_t)ds->len;
    for (size_t i = 0; ok && i < GUARD; i++)
        ok = buf[ds->len + i] == 0xa5;
    if (!ok) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Every point of a complete index ix (made in mode m) as a zlib reader
 * starts there: its points move into a fresh zlib index of the same stream
 * (dfx_index_adopt() frees ix), and a few KiB from each must be exact. */
static int zlib_starts_at_points(struct dfx_index *ix, const struct dfx_stream *st,
                                 const struct dataset *ds)
{
    static unsigned char buf[5000];
    enum mode was = decoder;
    struct dfx_xpoint *xp = NULL;
    struct dfx_index *z;
    size_t n = 0;
    uint64_t total;
    int bad = 0;

    decoder = M_ZLIB;
    bad += index_new(st, SPACING, &z) != 0;
    decoder = was;
    if (bad) {
        dfx_index_free(ix);
        return -1;
    }
    bad += dfx_index_adopt(z, ix) != 0;
    bad += dfx_index_export(z, &xp, &n, &total) != 0;
    for (size_t i = 0; i < n; i++)
        bad += extract_ok(z, ds->data, ds->len, xp[i].out, sizeof(buf), buf) < 0;
    free(xp);
    dfx_index_free(z);
    return bad ? -1 : (int)n;
}

/* The three modes on one form. zlib alone builds one index. The non-marking
 * ISA-L index is built in two goes: up to a third, then by a pass from 0
 * that decodes with ISA-L to the frontier and hands over to zlib there: both
 * must end with the same points. The marking index's points must all be
 * places where zlib can start too. Whole extracts (ISA-L up to the last
 * point, or all the way) must be byte-identical. */
static void check_decoders_agree(const struct encoded *e, const struct dataset *ds, uint64_t *s)
{
    static unsigned char small[1000];
    struct dfx_index *ix[3] = {NULL, NULL, NULL};
    unsigned char *out[3] = {NULL, NULL, NULL};
    const enum mode modes[3] = {M_ZLIB, M_NOMARK, M_ISAL};

    for (int d = 0; d < 3; d++) {
        decoder = modes[d];
        CHECK_EQ(index_new(&e->st, SPACING, &ix[d]), 0);
        if (!ix[d])
            goto out;
        if (modes[d] == M_NOMARK)
            CHECK_EQ(extract_ok(ix[d], ds->data, ds->len, ds->len / 3, sizeof(small), small), 0);
        CHECK_EQ(full_pass(ix[d], ds->data, ds->len, s), 0);
        out[d] = extract_all(ix[d], ds);
        CHECK(out[d] != NULL);
    }
    CHECK(same_points(ix[0], ix[1]));
    CHECK(out[0] && out[1] && memcmp(out[0], out[1], ds->len) == 0);
    CHECK(out[0] && out[2] && memcmp(out[0], out[2], ds->len) == 0);
    CHECK(zlib_starts_at_points(ix[2], &e->st, ds) > 1);
    ix[2] = NULL;
out:
    for (int d = 0; d < 3; d++) {
        free(out[d]);
        dfx_index_free(ix[d]);
    }
}

/* Many gzip members of every kind (empty, stored, a few bytes, tens of KiB),
 * so an ISA-L pass crosses a hundred member ends: at each, the trailer must
 * be found at the exact byte after the deflate data although ISA-L has read
 * ahead. Then a bad CRC in an early member, whose end ISA-L reaches, must
 * fail a pass from 0. */
static void check_gzip_many_members(const struct dataset *ds, uint64_t *s)
{
    size_t len = ds->len / 3, cap = bound(len) + 200 * 64, n = 0, used = 0, crc_at[8];
    unsigned char *buf = malloc(cap);
    struct dfx_stream st = {0};
    struct dfx_index *ix;
    int members = 0;

    while (buf && used < len) {
        size_t k = rnd_below(s, 4) == 0 ? rnd_below(s, 10) : rnd_below(s, 40000);
        k = k < len - used ? k : len - used;
        size_t m =
            zdeflate(ds->data + used, k, (int)rnd_below(s, 10), 31, 0, NULL, buf + n, cap - n);
        if (!m)
            break;
        n += m;
        used += k;
        if (members < 8)
            crc_at[members] = n - 8;
        members++;
    }
    CHECK(buf && used == len && members > 50);
    if (!buf || used != len || members <= 50) {
        free(buf);
        return;
    }
    src_mem_new(buf, n, &st.src);
    st.framing = DFX_GZIP;
    st.usize = UINT64_MAX;
    st.end = n;
    for (size_t d = 0; d < NDECODERS; d++) {
        decoder = decoders[d];
        CHECK_EQ(index_new(&st, SPACING, &ix), 0);
        CHECK_EQ(full_pass(ix, ds->data, len, s), 0); /* zlib: builds the index */
        CHECK_EQ(full_pass(ix, ds->data, len, s), 0); /* ISA-L up to the last point */
        CHECK_EQ(dfx_index_total(ix), len);
        CHECK_EQ(dfx_index_error(ix), 0);
        buf[crc_at[5]] ^= 0x40;
        CHECK_EQ(full_pass(ix, ds->data, len, s), -EIO);
        CHECK_EQ(dfx_index_error(ix), -EIO);
        buf[crc_at[5]] ^= 0x40;
        dfx_index_free(ix);
    }
    if (verbose)
        printf("  gzip %d members, %zu -> %zu bytes\n", members, len, n);
    src_free(st.src);
    free(buf);
}

/* One gzip member whose deflate data starts with an empty, non-final block
 * (a sync flush before any input), so a point can sit exactly at the
 * member's start, at the same output offset as the end of the one before. */
static size_t gzip_flush_first(const unsigned char *data, size_t len, unsigned char *out,
                               size_t cap)
{
    z_stream zs;
    size_t n = 0;

    memset(&zs, 0, sizeof(zs));
    if (deflateInit2(&zs, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return 0;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_SYNC_FLUSH) == Z_OK) {
        zs.next_in = (unsigned char *)data;
        zs.avail_in = (uInt)len;
        if (deflate(&zs, Z_FINISH) == Z_STREAM_END)
            n = zs.total_out;
    }
    deflateEnd(&zs);
    return n;
}

/* Members A (100 000 zeros: one final block), E (empty), B (flush-first),
 * C. Reading 1000 bytes at 100 000 on a fresh index records exactly one
 * point with zlib, at B's start. An ISA-L pass from 0 then reaches that
 * frontier at A's end: it must still check A's trailer (with its read-ahead
 * undone), then E's, and hand over to zlib at a member start. Marking, the
 * pass from 0 decodes every member with ISA-L and must check the same
 * trailers. */
static void check_point_at_member_start(const struct dataset *ds, uint64_t *s)
{
    enum { ALEN = 100000, BLEN = 300000, CLEN = 200000 };
    size_t len = ALEN + BLEN + CLEN, cap = bound(len) + 200, n = 0, a_end, e_end;
    unsigned char *buf = malloc(cap), *data = malloc(len), small[1000];
    struct dataset whole = {"members", data, len};
    struct dfx_stream st = {0};
    struct dfx_index *ix, *ref;
    int ok = 0;

    if (!buf || !data) {
        CHECK(!"malloc");
        goto out;
    }
    memset(data, 0, ALEN);
    memcpy(data + ALEN, ds->data, BLEN + CLEN);
    n += zdeflate(data, ALEN, 6, 31, 0, NULL, buf, cap);
    a_end = n;
    n += zdeflate(data, 0, 6, 31, 0, NULL, buf + n, cap - n);
    e_end = n;
    n += gzip_flush_first(data + ALEN, BLEN, buf + n, cap - n);
    n += zdeflate(data + ALEN + BLEN, CLEN, 6, 31, 0, NULL, buf + n, cap - n);
    src_mem_new(buf, n, &st.src);
    st.framing = DFX_GZIP;
    st.usize = UINT64_MAX;
    st.end = n;
    decoder = M_ZLIB;
    CHECK_EQ(index_new(&st, SPACING, &ref), 0);
    CHECK_EQ(full_pass(ref, data, len, s), 0);
    for (size_t d = 0; d < NDECODERS; d++) {
        decoder = decoders[d];
        CHECK_EQ(index_new(&st, SPACING, &ix), 0);
        CHECK_EQ(extract_ok(ix, data, len, ALEN, sizeof(small), small), 0);
        if (greedy_points()) {
            CHECK_EQ(dfx_index_points(ix), 2);
            CHECK_EQ(dfx_index_frontier(ix), ALEN);
        }
        CHECK_EQ(full_pass(ix, data, len, s), 0);
        CHECK_EQ(dfx_index_error(ix), 0);
        if (greedy_points()) {
            CHECK(same_points(ix, ref));
            dfx_index_free(ix);
        } else {
            CHECK(zlib_starts_at_points(ix, &st, &whole) > 1); /* frees ix */
        }
        /* The same pass over a damaged A or E trailer must fail. */
        size_t bad[] = {a_end - 8, a_end - 1, e_end - 8, e_end - 4};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            CHECK_EQ(index_new(&st, SPACING, &ix), 0);
            CHECK_EQ(extract_ok(ix, data, len, ALEN, sizeof(small), small), 0);
            buf[bad[i]] ^= 0x01;
            ok += full_pass(ix, data, len, s) == -EIO;
            buf[bad[i]] ^= 0x01;
            dfx_index_free(ix);
        }
    }
    CHECK_EQ(ok, 4 * NDECODERS);
    dfx_index_free(ref);
    src_free(st.src);
out:
    free(buf);
    free(data);
}

#ifdef NPYFS_HAVE_ISAL
/* Drive the ISA-L wrapper over in[0, inlen) fed chunk bytes at a time, with
 * random output room. 0 with the output size and the input the stream used;
 * -EAGAIN if it stalls (truncated); -EIO; -ENOSPC once out is full (ISA-L
 * may need a call with room to spare to see the final end-of-block code, so
 * give one byte more than the output when the end should be found). */
static int isal_run(struct dfx_isal *d, const unsigned char *in, size_t inlen, size_t chunk,
                    unsigned char *out, size_t cap, size_t *outlen, size_t *used, uint64_t *s)
{
    unsigned char *next_in = (unsigned char *)in, *next_out = out;
    unsigned int avail_in = 0;
    size_t fed = 0;

    for (;;) {
        unsigned int offered = 0, room;
        unsigned char *before = next_out;
        int ret;

        if (avail_in == 0 && fed < inlen) {
            offered = (unsigned int)(chunk < inlen - fed ? chunk : inlen - fed);
            next_in = (unsigned char *)in + fed;
            avail_in = offered;
            fed += offered;
        }
        if (out + cap == next_out)
            return -ENOSPC;
        room = (unsigned int)(1 + rnd_below(s, 100000));
        if (room > (size_t)(out + cap - next_out))
            room = (unsigned int)(out + cap - next_out);
        ret = dfx_isal_inflate(d, &next_in, &avail_in, &next_out, &room);
        if (ret < 0)
            return ret;
        if (ret == DFX_ISAL_END) {
            *outlen = (size_t)(next_out - out);
            *used = (size_t)(next_in - in) - dfx_isal_unused(d);
            return 0;
        }
        if (next_out == before && offered == 0)
            return -EAGAIN;
    }
}

/* Resume at every block boundary (found with zlib's Z_BLOCK) of a raw
 * stream, as an access point would: bits left in the byte before, window
 * of up to 32 KiB. Decode a stretch and compare. Counts the bits seen. */
static void check_isal_resume(struct dfx_isal *d, const unsigned char *z, size_t zlen,
                              const unsigned char *data, size_t len, unsigned long *bits,
                              uint64_t *s)
{
    static unsigned char out[40000];
    z_stream zs;
    int bad = 0, n = 0;

    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, -15) != Z_OK)
        return;
    unsigned char *dst = malloc(len + 1);
    zs.next_in = (unsigned char *)z;
    zs.avail_in = (uInt)zlen;
    zs.next_out = dst;
    zs.avail_out = (uInt)len + 1;
    while (dst && n < 300 && inflate(&zs, Z_BLOCK) == Z_OK) {
        size_t at = zs.total_out, in = zs.total_in, olen = 0, used = 0;
        int b = zs.data_type & 7;
        if (!(zs.data_type & 128) || (zs.data_type & 64) || at == 0)
            continue;
        n++;
        bits[b]++;
        size_t wlen = at < DFX_WINDOW_SIZE ? at : DFX_WINDOW_SIZE;
        size_t want = len - at < sizeof(out) ? len - at : sizeof(out);
        if (dfx_isal_start(d, b, b ? z[in - 1] : 0, data + at - wlen, (uint32_t)wlen) < 0) {
            bad++;
            continue;
        }
        int ret =
            isal_run(d, z + in, zlen - in, 1 + rnd_below(s, 9000), out, want, &olen, &used, s);
        /* Stops with output full (-ENOSPC) unless the stream ends first. */
        bad += !((ret == -ENOSPC || (ret == 0 && olen == want)) && !memcmp(out, data + at, want));
    }
    CHECK_EQ(bad, 0);
    inflateEnd(&zs);
    free(dst);
}

/* The wrapper on its own, raw streams of each data set at levels 0, 1, 6 and
 * 9 followed by junk: the exact end of the deflate data whatever the input
 * chunking (1 byte at a time on a short stream), resuming at block
 * boundaries with every bit offset, and truncation (never an end). */
static void check_isal_wrapper(const struct dataset *ds, int nds, uint64_t *s)
{
    static const int levels[] = {0, 1, 6, 9};
    static const unsigned char junk[] = "\x1f\x8b junk after the stream";
    size_t len = 600000, cap = bound(len) + sizeof(junk), olen = 0, used = 0;
    unsigned char *z = malloc(cap), *out = malloc(len + 1);
    unsigned long bits[8] = {0};
    struct dfx_isal *d;
    int bad = 0;

    CHECK_EQ(dfx_isal_new(&d), 0);
    CHECK_EQ(dfx_isal_crc32(0, ds[0].data, 1000), (uint32_t)crc32(0, ds[0].data, 1000));
    CHECK_EQ(dfx_isal_crc32(dfx_isal_crc32(0, ds[0].data, 7), ds[0].data + 7, 993),
             (uint32_t)crc32(0, ds[0].data, 1000));
    for (int i = 0; z && out && d && i < nds; i++) {
        for (size_t l = 0; l < sizeof(levels) / sizeof(levels[0]); l++) {
            size_t zlen = zdeflate(ds[i].data, len, levels[l], -15, 0, NULL, z, cap);
            size_t short_len = 30000, short_zlen;
            unsigned char *zs = z + zlen + sizeof(junk);
            CHECK(zlen > 0);
            memcpy(z + zlen, junk, sizeof(junk));
            size_t chunks[] = {zlen + sizeof(junk), 65536, 4093, 1 + rnd_below(s, 300)};
            for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
                dfx_isal_start(d, 0, 0, NULL, 0);
                int ret =
                    isal_run(d, z, zlen + sizeof(junk), chunks[c], out, len + 1, &olen, &used, s);
                bad += ret != 0 || olen != len || used != zlen || memcmp(out, ds[i].data, len);
            }
            /* Truncated in the last bytes or mid-way: never an end (room
             * for one byte more, so it stalls rather than fills up). */
            size_t cuts[] = {1, 2, 3, 8, zlen / 2};
            for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
                dfx_isal_start(d, 0, 0, NULL, 0);
                int ret = isal_run(d, z, zlen - cuts[c], 4096, out, len + 1, &olen, &used, s);
                bad += ret != -EAGAIN && ret != -EIO;
            }
            check_isal_resume(d, z, zlen, ds[i].data, len, bits, s);
            /* Byte-at-a-time input on a short stream (in the spare room). */
            short_zlen = zdeflate(ds[i].data, short_len, levels[l], -15, 0, NULL, zs,
                                  cap - zlen - sizeof(junk) - sizeof(junk));
            memcpy(zs + short_zlen, junk, sizeof(junk));
            for (size_t c = 1; c <= 3; c += 2) {
                dfx_isal_start(d, 0, 0, NULL, 0);
                int ret =
                    isal_run(d, zs, short_zlen + sizeof(junk), c, out, len + 1, &olen, &used, s);
                bad += ret != 0 || olen != short_len || used != short_zlen ||
                       memcmp(out, ds[i].data, short_len);
            }
        }
    }
    CHECK_EQ(bad, 0);
    for (int b = 1; b < 8; b++)
        CHECK(bits[b] > 0); /* boundaries inside a byte, every offset */
    if (verbose)
        printf("  isal wrapper: resumed at boundaries with bits 0-7: %lu %lu %lu %lu %lu %lu %lu "
               "%lu\n",
               bits[0], bits[1], bits[2], bits[3], bits[4], bits[5], bits[6], bits[7]);
    dfx_isal_free(d);
    free(z);
    free(out);
}
#endif

/* ---- ISA-L marking ---- */

#ifdef NPYFS_HAVE_ISAL
/* Word soup: few distinct bytes, so zlib writes short dynamic headers (~38
 * bytes), which a step can pass over whole. */
static void fill_text(unsigned char *p, size_t n, uint64_t *s)
{
    static const char *words[] = {"index ", "point ", "window ", "deflate ",
                                  "npyfs ", "zran ",  "array ",  "mmap "};
    for (size_t i = 0; i < n;) {
        const char *w = words[rnd_below(s, 8)];
        for (size_t j = 0; w[j] && i < n; j++)
            p[i++] = (unsigned char)w[j];
        if (i < n)
            p[i++] = (unsigned char)('a' + rnd_below(s, 26));
    }
}

/* zlib with a strategy, and a flush of the given kind every `every` bytes. */
static size_t zdeflate_strategy(const unsigned char *data, size_t len, int level, int strategy,
                                int flush, size_t every, unsigned char *out, size_t cap)
{
    z_stream zs;
    size_t fed = 0, n;
    int ret = Z_OK;

    memset(&zs, 0, sizeof(zs));
    if (deflateInit2(&zs, level, Z_DEFLATED, -15, 8, strategy) != Z_OK)
        return 0;
    if (level == 9)
        deflateTune(&zs, 32, 258, 258, 256);
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    do {
        size_t chunk = every && every < len - fed ? every : len - fed;
        zs.next_in = (unsigned char *)data + fed;
        zs.avail_in = (uInt)chunk;
        fed += chunk;
        ret = deflate(&zs, fed == len ? Z_FINISH : every ? flush : Z_NO_FLUSH);
    } while (fed < len && (ret == Z_OK || ret == Z_BUF_ERROR));
    while (ret == Z_OK || ret == Z_BUF_ERROR)
        ret = deflate(&zs, Z_FINISH);
    n = zs.total_out;
    deflateEnd(&zs);
    return ret == Z_STREAM_END ? n : 0;
}

/* The exported points of a complete index obey the rules readers rely on:
 * strictly increasing in out and in, at least the spacing apart, inside
 * the stream. Returns the number of points, or 0 if a rule is broken. */
static size_t points_sorted(struct dfx_index *ix, const struct dfx_stream *st, uint64_t spacing)
{
    struct dfx_xpoint *xp = NULL;
    size_t n = 0;
    uint64_t total;
    bool ok = dfx_index_export(ix, &xp, &n, &total) == 0 && n >= 1 && xp[0].out == 0;

    for (size_t i = 1; ok && i < n; i++)
        ok = xp[i].out > xp[i - 1].out && xp[i].in > xp[i - 1].in &&
             xp[i].out - xp[i - 1].out >= spacing && xp[i].in <= st->end &&
             xp[i].member_out <= xp[i].out && xp[i].out < total && xp[i].bits >= 0 &&
             xp[i].bits <= 7;
    free(xp);
    return ok ? n : 0;
}

/* Marking ISA-L over one raw stream (data: the original, z: the stream
 * between junk): a first pass in uneven reads, then the points must be
 * sorted, every read from anywhere exact, and every point a place where
 * ISA-L and zlib both start exactly. Returns whether marking stayed on. */
static bool check_marked_stream(const char *name, const unsigned char *data, size_t len,
                                const unsigned char *z, size_t zlen, bool zip_windows, uint64_t *s)
{
    static unsigned char buf[200000];
    size_t cap = RAW_PRE + zlen + RAW_POST, npts, bad = 0;
    unsigned char *b = malloc(cap);
    struct dataset ds = {name, (unsigned char *)data, len};
    struct dfx_stream st = {0};
    struct dfx_index *ix;
    bool marking = false;

    if (!b) {
        CHECK(!"malloc");
        return false;
    }
    memset(b, 0xa5, RAW_PRE);
    memcpy(b + RAW_PRE, z, zlen);
    memset(b + RAW_PRE + zlen, 0x5a, RAW_POST);
    src_mem_new(b, cap, &st.src);
    st.framing = DFX_RAW;
    st.start = RAW_PRE;
    st.end = RAW_PRE + zlen;
    st.usize = len;
    st.crc = (uint32_t)crc32(0, data, (uInt)len);
    st.check_crc = true;
    decoder = M_ISAL;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    if (!ix)
        goto out;
    dfx_index_compress_windows(ix, zip_windows);
    CHECK_EQ(full_pass(ix, data, len, s), 0);
    CHECK_EQ(dfx_index_total(ix), len);
    CHECK_EQ(dfx_index_error(ix), 0);
    marking = dfx_index_marking(ix);
    npts = points_sorted(ix, &st, SPACING);
    CHECK(npts > 0);
    for (int i = 0; i < 60; i++) {
        uint64_t off = rnd_below(s, len + 10);
        size_t want = 1 + rnd_below(s, sizeof(buf));
        bad += extract_ok(ix, data, len, off, want, buf) < 0;
    }
    CHECK_EQ(bad, 0);
    if (len)
        check_point_starts(ix, &ds, 1);
    npts = dfx_index_points(ix); /* the reads since may have added some */
    CHECK_EQ(zlib_starts_at_points(ix, &st, &ds), (int)npts); /* frees ix */
    if (verbose)
        printf("  marked %-26s %9zu -> %8zu bytes, %4zu points, marking %s\n", name, len, zlen,
               npts, marking ? "on" : "off (zlib)");
out:
    src_free(st.src);
    free(b);
    return marking;
}

/* The stream kinds test_dfx_isal.c marks, through dfx.c: zlib levels and
 * strategies, stored, fixed-Huffman and empty blocks, tiny and large
 * outputs, gzip(1) and Python's zlib. Marking must stay on wherever there
 * are blocks (it stops at every block's end, whatever its kind). */
static void check_marking_streams(uint64_t *s)
{
    struct kind {
        const char *name;
        int fill; /* 0 random, 1 smooth, 2 zero runs, 3 text, 4 zeros */
        size_t len;
        int level, strategy, flush;
        size_t every;
        int expect; /* 1 marking stays on, -1 either */
    } kinds[] = {
        {"smooth level 1", 1, 3u << 20, 1, Z_DEFAULT_STRATEGY, 0, 0, 1},
        {"smooth level 6", 1, 3u << 20, 6, Z_DEFAULT_STRATEGY, 0, 0, 1},
        {"smooth level 9", 1, 2u << 20, 9, Z_DEFAULT_STRATEGY, 0, 0, 1},
        {"text level 1", 3, 2u << 20, 1, Z_DEFAULT_STRATEGY, 0, 0, -1},
        {"text level 6", 3, 2u << 20, 6, Z_DEFAULT_STRATEGY, 0, 0, 1},
        {"text filtered", 3, 1u << 20, 6, Z_FILTERED, 0, 0, 1},
        {"smooth huffman-only", 1, 1u << 20, 6, Z_HUFFMAN_ONLY, 0, 0, 1},
        {"text rle", 3, 1u << 20, 6, Z_RLE, 0, 0, -1},
        {"text fixed", 3, 1u << 20, 6, Z_FIXED, 0, 0, 1},
        {"smooth fixed", 1, 2u << 20, 6, Z_FIXED, 0, 0, 1},
        {"random level 6 (stored)", 0, 1u << 20, 6, Z_DEFAULT_STRATEGY, 0, 0, 1},
        {"random level 0", 0, 600000, 0, Z_DEFAULT_STRATEGY, 0, 0, 1},
        {"text sync every 100", 3, 300000, 6, Z_DEFAULT_STRATEGY, Z_SYNC_FLUSH, 100, -1},
        {"text sync every 5000", 3, 600000, 6, Z_DEFAULT_STRATEGY, Z_SYNC_FLUSH, 5000, -1},
        {"smooth full every 3000", 1, 600000, 6, Z_DEFAULT_STRATEGY, Z_FULL_FLUSH, 3000, -1},
        {"text partial every 7000", 3, 600000, 6, Z_DEFAULT_STRATEGY, Z_PARTIAL_FLUSH, 7000, -1},
        {"text block every 4000", 3, 600000, 1, Z_DEFAULT_STRATEGY, Z_BLOCK, 4000, -1},
        {"zeros sync every 64", 4, 100000, 6, Z_DEFAULT_STRATEGY, Z_SYNC_FLUSH, 64, -1},
        {"zero runs level 9", 2, 4u << 20, 9, Z_DEFAULT_STRATEGY, 0, 0, -1},
        {"zeros 10 MB level 9", 4, 10u << 20, 9, Z_DEFAULT_STRATEGY, 0, 0, -1},
        {"empty", 3, 0, 6, Z_DEFAULT_STRATEGY, 0, 0, -1},
        {"one byte", 3, 1, 6, Z_DEFAULT_STRATEGY, 0, 0, -1},
        {"100 bytes", 1, 100, 6, Z_DEFAULT_STRATEGY, 0, 0, -1},
    };
    size_t maxlen = 10u << 20;
    unsigned char *data = malloc(maxlen), *z = malloc(bound(maxlen));

    for (size_t k = 0; data && z && k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        const struct kind *c = &kinds[k];
        size_t zlen;
        bool on;

        switch (c->fill) {
        case 0: fill_random(data, c->len, s); break;
        case 1: fill_smooth(data, c->len, s); break;
        case 2: fill_zero_runs(data, c->len, s); break;
        case 3: fill_text(data, c->len, s); break;
        default: memset(data, 0, c->len);
        }
        zlen = zdeflate_strategy(data, c->len, c->level, c->strategy, c->flush, c->every, z,
                                 bound(maxlen));
        CHECK(zlen > 0);
        on = check_marked_stream(c->name, data, c->len, z, zlen, k % 3 == 2, s);
        if (c->expect >= 0 && on != (c->expect == 1))
            fprintf(stderr, "  %s: marking %s, expected %s\n", c->name, on ? "on" : "off",
                    c->expect ? "on" : "off");
        if (c->expect >= 0)
            CHECK_EQ(on, c->expect == 1);
    }
    /* other writers: gzip(1) (its deflate data) and Python's zlib */
    static const char *tools[] = {"gzip -6 -c -n", "gzip -1 -c -n",
                                  "/usr/bin/python3 -c \"import sys,zlib; c=zlib.compressobj(6, "
                                  "zlib.DEFLATED, -15); sys.stdout.buffer.write(c.compress(sys."
                                  "stdin.buffer.read()) + c.flush())\""};
    for (size_t t = 0; data && z && t < sizeof(tools) / sizeof(tools[0]); t++) {
        size_t len = 2u << 20, zlen = 0, off = 0;
        char path[] = "/tmp/test_dfx_XXXXXX", cmd[600];
        int fd = mkstemp(path);
        FILE *f;

        fill_smooth(data, len, s);
        if (fd < 0 || write(fd, data, len) != (ssize_t)len) {
            CHECK(!"temp file");
            if (fd >= 0)
                close(fd);
            continue;
        }
        close(fd);
        snprintf(cmd, sizeof(cmd), "%s < %s", tools[t], path);
        f = popen(cmd, "r");
        while (f && zlen < bound(maxlen) && (off = fread(z + zlen, 1, 65536, f)) > 0)
            zlen += off;
        if (f)
            pclose(f);
        unlink(path);
        if (t < 2) { /* gzip(1): a 10-byte header with no name (-n), 8-byte trailer */
            CHECK(zlen > 18 && z[0] == 0x1f && z[1] == 0x8b && z[3] == 0);
            if (zlen <= 18)
                continue;
            memmove(z, z + 10, zlen - 18);
            zlen -= 18;
        }
        CHECK(zlen > 0);
        CHECK(check_marked_stream(tools[t], data, len, z, zlen, t == 1, s));
    }
    free(data);
    free(z);
}

/* Sequential from off to the end in uneven reads, compared: 0 or -1. */
static int seq_from(struct dfx_index *ix, const unsigned char *data, size_t len, uint64_t off,
                    uint64_t *s, unsigned char *buf, size_t cap)
{
    struct dfx_reader *r;
    uint64_t at;
    int ret = dfx_reader_new(ix, off, &r) < 0 ? -1 : 0;

    if (ret == 0 && dfx_reader_skip(r, off - dfx_reader_pos(r)) < 0)
        ret = -1;
    for (at = off; ret == 0 && at < len;) {
        int64_t n = dfx_reader_read(r, buf, 1 + rnd_below(s, cap));
        if (n <= 0 || at + (uint64_t)n > len || memcmp(buf, data + at, (size_t)n))
            ret = -1;
        else
            at += (uint64_t)n;
    }
    if (ret == 0 && dfx_reader_read(r, buf, 1) != 0)
        ret = -1;
    dfx_reader_free(r);
    return ret;
}

/* A stream on which marking fails (made to by dfx_index_test_skew(): its
 * first check past an offset fails) hands over to zlib mid-stream: the
 * bytes, the zip CRC, and a gzip member's CRC and ISIZE must come out right
 * across the hand-over, whether zlib restarts at the reader's own start, at
 * its last mark or at a later point of the index. */
static void check_marking_fallback(uint64_t *s)
{
    static unsigned char buf[300000];
    size_t len = 3u << 20, a = len / 6, b = len * 5 / 6, cap = bound(len) + 64, n1, n2, n3, zlen;
    unsigned char *data = malloc(len), *z = malloc(cap);
    struct dfx_stream st = {0};
    struct dfx_index *ix, *ref;
    size_t before, zlib_pts = 0;

    if (!data || !z) {
        CHECK(!"malloc");
        goto out;
    }
    fill_text(data, len, s);
    decoder = M_ISAL;

    /* raw, marking failing from the start: a pass from 0 falls back and goes
     * on with zlib */
    zlen = zdeflate_strategy(data, len, 6, Z_DEFAULT_STRATEGY, 0, 0, z, cap);
    CHECK(zlen > 0);
    src_mem_new(z, zlen, &st.src);
    st.framing = DFX_RAW;
    st.end = zlen;
    st.usize = len;
    st.crc = (uint32_t)crc32(0, data, (uInt)len);
    st.check_crc = true;
    decoder = M_ZLIB;
    CHECK_EQ(index_new(&st, SPACING, &ref), 0);
    CHECK_EQ(drain(ref), 0);
    decoder = M_ISAL;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK(dfx_index_marking(ix));
    dfx_index_test_skew(ix, 3, 0);
    CHECK_EQ(full_pass(ix, data, len, s), 0); /* the CRC is checked at the end */
    CHECK(!dfx_index_marking(ix));
    /* zlib went back to 0 and recorded every point a zlib pass does */
    CHECK(points_sorted(ix, &st, SPACING) > 10);
    CHECK(same_points(ix, ref));
    CHECK_EQ(dfx_index_error(ix), 0);
    dfx_index_free(ix);
    dfx_index_free(ref);
    /* zlib records points to the middle; then a marking pass from 0 falls
     * back past them, restarting at the last one (not at 0) */
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    dfx_index_set_marking(ix, false);
    CHECK_EQ(extract_ok(ix, data, len, len / 3, 1000, buf), 0);
    before = dfx_index_points(ix);
    dfx_index_set_marking(ix, true);
    dfx_index_test_skew(ix, -2, 0);
    CHECK_EQ(full_pass(ix, data, len, s), 0);
    CHECK(!dfx_index_marking(ix));
    CHECK(dfx_index_points(ix) > before);
    CHECK(points_sorted(ix, &st, SPACING) > 0);
    CHECK_EQ(dfx_index_error(ix), 0);
    dfx_index_free(ix);
    src_free(st.src);
    /* dynamic blocks, then (deflateParams) fixed ones, marking failing in
     * the second half: the reader marks in the first half, so zlib restarts
     * at its last mark, with that mark's window (the reader's own copy) */
    {
        z_stream zs;
        memset(&zs, 0, sizeof(zs));
        deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
        zs.next_in = data;
        zs.avail_in = (uInt)(len / 2);
        zs.next_out = z;
        zs.avail_out = (uInt)cap;
        CHECK_EQ(deflate(&zs, Z_NO_FLUSH), Z_OK);
        CHECK_EQ(deflateParams(&zs, 6, Z_FIXED), Z_OK);
        zs.avail_in += (uInt)(len - len / 2);
        CHECK_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
        zlen = zs.total_out;
        deflateEnd(&zs);
    }
    src_mem_new(z, zlen, &st.src);
    st.end = zlen;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    dfx_index_test_skew(ix, 1, len / 2);
    CHECK_EQ(full_pass(ix, data, len, s), 0);
    CHECK(!dfx_index_marking(ix));
    CHECK(points_sorted(ix, &st, SPACING) > 20);
    CHECK_EQ(dfx_index_error(ix), 0);
    check_random_reads(ix, &(struct dataset){"mixed blocks", data, len}, NULL, 0, 50, s);
    /* and with a wrong zip CRC that pass must fail */
    dfx_index_free(ix);
    st.crc ^= 1;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    dfx_index_test_skew(ix, 1, len / 2);
    CHECK_EQ(full_pass(ix, data, len, s), -EIO);
    CHECK(!dfx_index_marking(ix));
    dfx_index_free(ix);
    src_free(st.src);

    /* gzip: dynamic, fixed, dynamic members; marking stops in the second
     * (its checks fail from its start on) */
    memset(&st, 0, sizeof(st));
    n1 = zdeflate(data, a, 6, 31, 0, NULL, z, cap);
    {
        z_stream zs;
        memset(&zs, 0, sizeof(zs));
        deflateInit2(&zs, 6, Z_DEFLATED, 31, 8, Z_FIXED);
        zs.next_in = data + a;
        zs.avail_in = (uInt)(b - a);
        zs.next_out = z + n1;
        zs.avail_out = (uInt)(cap - n1);
        CHECK_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
        n2 = n1 + zs.total_out;
        deflateEnd(&zs);
    }
    n3 = n2 + zdeflate(data + b, len - b, 6, 31, 0, NULL, z + n2, cap - n2);
    src_mem_new(z, n3, &st.src);
    st.framing = DFX_GZIP;
    st.end = n3;
    st.usize = UINT64_MAX;
    decoder = M_ZLIB;
    CHECK_EQ(index_new(&st, SPACING, &ref), 0);
    CHECK_EQ(drain(ref), 0);
    zlib_pts = dfx_index_points(ref);
    dfx_index_free(ref);
    decoder = M_ISAL;
    for (int known = 0; known < 2; known++) {
        st.usize = known ? len : UINT64_MAX;
        CHECK_EQ(index_new(&st, SPACING, &ix), 0);
        dfx_index_test_skew(ix, 5, a);
        CHECK_EQ(full_pass(ix, data, len, s), 0);
        CHECK(!dfx_index_marking(ix));
        CHECK(points_sorted(ix, &st, SPACING) > zlib_pts * 3 / 4);
        CHECK_EQ(dfx_index_total(ix), len);
        CHECK_EQ(seq_from(ix, data, len, a + (b - a) / 2, s, buf, sizeof(buf)), 0);
        dfx_index_free(ix);
        /* the second member's CRC, then its ISIZE, then a byte of its data
         * damaged: a pass from 0 (which falls back inside it) fails */
        size_t bad[] = {n2 - 8, n2 - 3, n1 + (n2 - n1) / 2};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            z[bad[i]] ^= 0x10;
            CHECK_EQ(index_new(&st, SPACING, &ix), 0);
            dfx_index_test_skew(ix, 5, a);
            CHECK_EQ(drain(ix), -EIO); /* bytes before the check may differ */
            CHECK_EQ(dfx_index_error(ix), -EIO);
            dfx_index_free(ix);
            z[bad[i]] ^= 0x10;
        }
    }
    src_free(st.src);
out:
    free(data);
    free(z);
}

struct grow_worker {
    struct dfx_index *ix;
    const unsigned char *data;
    size_t len;
    uint64_t from; /* sequential from here to the end; UINT64_MAX: random extracts */
    uint64_t seed;
    int fails;
};

static void *grow_worker_main(void *arg)
{
    struct grow_worker *w = arg;
    unsigned char *buf = malloc(200000);
    uint64_t s = w->seed;

    if (!buf) {
        w->fails++;
        return NULL;
    }
    if (w->from != UINT64_MAX)
        w->fails += seq_from(w->ix, w->data, w->len, w->from, &s, buf, 200000) != 0;
    else
        for (int i = 0; i < 40; i++)
            w->fails += extract_ok(w->ix, w->data, w->len, rnd_below(&s, w->len),
                                   1 + rnd_below(&s, 200000), buf) != 0;
    free(buf);
    return NULL;
}

/* Threads grow one index from different points at once: the index is built
 * up to a quarter, then six readers go sequentially to the end from six
 * places (behind the frontier and past it) while two read at random. With
 * toggle, marking is switched off half-way through, so points recorded by
 * ISA-L and by zlib interleave. The points must stay sorted and usable. */
static void check_grow_from_points(const struct dataset *ds, enum enc_kind kind, bool toggle,
                                   uint64_t *s)
{
    struct grow_worker w[8];
    pthread_t th[8];
    struct encoded e;
    struct dfx_index *ix;
    unsigned char small[100];
    int fails = 0;

    decoder = M_ISAL;
    if (encode(ds, kind, &e, s) < 0 || index_new(&e.st, SPACING, &ix) < 0) {
        CHECK(!"setup");
        return;
    }
    CHECK_EQ(extract_ok(ix, ds->data, ds->len, ds->len / 4, sizeof(small), small), 0);
    for (int i = 0; i < 8; i++) {
        uint64_t from = i < 6 ? (uint64_t)i * ds->len / 7 + rnd_below(s, 5000) : UINT64_MAX;
        w[i] = (struct grow_worker){ix, ds->data, ds->len, from, rnd(s) | 1, 0};
        CHECK_EQ(pthread_create(&th[i], NULL, grow_worker_main, &w[i]), 0);
        if (toggle && i == 3)
            dfx_index_set_marking(ix, false);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        fails += w[i].fails;
    }
    CHECK_EQ(fails, 0);
    CHECK_EQ(dfx_index_error(ix), 0);
    CHECK_EQ(dfx_index_total(ix), ds->len);
    CHECK(points_sorted(ix, &e.st, SPACING) > 1);
    check_random_reads(ix, ds, NULL, 0, 100, s);
    CHECK(zlib_starts_at_points(ix, &e.st, ds) > 1); /* frees ix */
    encoded_free(&e);
}
#endif

/* ---- small cases ---- */

static void check_api_edges(const struct dataset *ds, uint64_t *s)
{
    unsigned char buf[64], notgz[32] = "not a gzip file at all.........";
    struct dfx_stream st = {0};
    struct dfx_index *ix = (struct dfx_index *)1;
    struct dfx_reader *r;
    struct encoded e;

    CHECK_EQ(index_new(&st, 0, &ix), -EINVAL); /* no source */
    CHECK(ix == NULL);
    src_mem_new(notgz, sizeof(notgz), &st.src);
    st.framing = DFX_GZIP;
    st.usize = UINT64_MAX;
    st.end = sizeof(notgz);
    CHECK_EQ(index_new(&st, 0, &ix), -EINVAL);
    st.start = 10;
    st.end = 5;
    CHECK_EQ(index_new(&st, 0, &ix), -EINVAL);
    src_free(st.src);
    dfx_index_free(NULL);
    dfx_reader_free(NULL);

    /* Empty streams: raw and gzip. */
    struct dataset empty = {"empty", ds->data, 0};
    for (int kind = E_RAW6; kind <= E_GZ6; kind += E_GZ6 - E_RAW6) {
        CHECK_EQ(encode(&empty, kind, &e, s), 0);
        CHECK_EQ(index_new(&e.st, 0, &ix), 0);
        CHECK_EQ(dfx_extract(ix, 0, buf, sizeof(buf)), 0);
        CHECK_EQ(full_pass(ix, empty.data, 0, s), 0);
        CHECK_EQ(dfx_index_total(ix), 0);
        dfx_index_free(ix);
        encoded_free(&e);
    }

    /* Skip: exact, then past the end; reads at and past the end. */
    CHECK_EQ(encode(ds, E_RAW1, &e, s), 0);
    CHECK_EQ(index_new(&e.st, 0, &ix), 0);
    CHECK_EQ(dfx_reader_new(ix, 0, &r), 0);
    CHECK_EQ(dfx_reader_skip(r, ds->len - 10), 0);
    CHECK_EQ(dfx_reader_pos(r), ds->len - 10);
    CHECK_EQ(dfx_reader_read(r, buf, sizeof(buf)), 10);
    CHECK(memcmp(buf, ds->data + ds->len - 10, 10) == 0);
    CHECK_EQ(dfx_reader_read(r, buf, sizeof(buf)), 0);
    dfx_reader_free(r);
    CHECK_EQ(dfx_reader_new(ix, 0, &r), 0);
    CHECK_EQ(dfx_reader_skip(r, ds->len + 1), -EIO);
    dfx_reader_free(r);
    CHECK_EQ(dfx_extract(ix, ds->len, buf, 1), 0);
    CHECK_EQ(dfx_extract(ix, UINT64_MAX, buf, 1), 0);
    CHECK_EQ(dfx_extract(ix, 5, buf, 0), 0);
    CHECK_EQ(dfx_index_error(ix), 0);
    dfx_index_free(ix);
    encoded_free(&e);
}

/* A source that counts the reads through it and the prefetch hints, and
 * keeps the first of each (one thread at a time). */
struct counting_src {
    struct src base; /* first: the source API sees this */
    struct src *inner;
    uint64_t preads, prefetches;
    uint64_t read_off, read_len, pf_off, pf_len; /* the first of each */
};

static int64_t counting_pread(struct src *s, void *buf, size_t len, uint64_t off)
{
    struct counting_src *c = (struct counting_src *)s;

    if (c->preads++ == 0) {
        c->read_off = off;
        c->read_len = len;
    }
    return src_pread(c->inner, buf, len, off);
}

static void counting_prefetch(struct src *s, uint64_t off, uint64_t len)
{
    struct counting_src *c = (struct counting_src *)s;

    if (c->prefetches++ == 0) {
        c->pf_off = off;
        c->pf_len = len;
    }
}

static const struct src_ops counting_ops = {.pread = counting_pread, .free = NULL,
                                            .prefetch = counting_prefetch};

/* A reader that starts at an access point reads its input in one read: the
 * byte holding the point's first bits comes with the input after it, not
 * by a read of its own. So a reader started at any point of a complete
 * index reads the source once up to its first byte of output, and gives
 * the right bytes after it. Before that, it hints the source at what it
 * will read (src_prefetch(): the input comes in while the window is
 * fetched): one hint, from the byte of the point's first bits, covering
 * the first read. */
static void check_start_reads(const struct dataset *ds, enum enc_kind kind, uint64_t *s)
{
    struct counting_src cs = {.base = {.ops = &counting_ops}};
    unsigned char buf[4096];
    struct dfx_xpoint *xp = NULL;
    size_t nx = 0, inside = 0;
    struct dfx_stream st;
    struct dfx_index *ix;
    struct encoded e;
    uint64_t total;

    if (encode(ds, kind, &e, s) < 0) {
        CHECK(!"encode");
        return;
    }
    cs.inner = e.st.src;
    cs.base.size = e.st.src->size;
    st = e.st;
    st.src = &cs.base;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(full_pass(ix, ds->data, ds->len, s), 0);
    CHECK_EQ(dfx_index_export(ix, &xp, &nx, &total), 0);
    CHECK(nx > 8);
    for (size_t i = 0; i < nx; i++) {
        uint64_t out = xp[i].out;
        size_t want = out + sizeof(buf) <= ds->len ? sizeof(buf) : (size_t)(ds->len - out);
        struct dfx_reader *r;

        if (!xp[i].usable)
            continue;
        cs.preads = cs.prefetches = 0;
        CHECK_EQ(dfx_reader_new(ix, out, &r), 0);
        CHECK_EQ(cs.prefetches, 1);
        CHECK_EQ(cs.pf_off, xp[i].in - (xp[i].bits ? 1 : 0));
        CHECK_EQ(dfx_reader_pos(r), out);
        CHECK_EQ(dfx_reader_read(r, buf, 1), 1);
        /* A point at a gzip member start may sit before empty members,
         * whose trailers and headers are read on the way: not counted. */
        if (xp[i].bits) {
            CHECK_EQ(cs.preads, 1);
            inside++;
        }
        if (cs.preads) {
            CHECK_EQ(cs.read_off, cs.pf_off);
            CHECK(cs.read_len <= cs.pf_len);
        }
        CHECK_EQ(dfx_reader_read(r, buf + 1, want - 1), (int64_t)(want - 1));
        CHECK(memcmp(buf, ds->data + out, want) == 0);
        dfx_reader_free(r);
    }
    /* most points start inside a byte: those used to take a read of their own */
    CHECK(inside > nx / 2);
    free(xp);
    dfx_index_free(ix);
    encoded_free(&e);
}

static void check_far_read_all(const struct dataset *ds, uint64_t *s)
{
    const enum enc_kind kinds[] = {E_RAW6, E_RAW_FLUSH, E_GZ_MULTI};
    struct encoded e;

    for (int i = 0; i < 4; i += 3) /* random and mixed */
        for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
            if (encode(&ds[i], kinds[k], &e, s) < 0) {
                CHECK(!"encode");
                continue;
            }
            check_far_read(&e, &ds[i]);
            encoded_free(&e);
        }
}

/* ---- the window budget ---- */

#define BUDGET_LEN ((32u << 20) + 777)
#define BUDGET_LIMIT (1u << 20) /* 32 raw windows */

struct budget_worker {
    struct dfx_index *ix;
    const unsigned char *data;
    struct dfx_budget *b;
    uint64_t seed;
    int bad;
    uint64_t most; /* most window bytes seen in use */
};

static void *budget_worker_main(void *arg)
{
    struct budget_worker *w = arg;
    static _Thread_local unsigned char buf[70000];

    for (int i = 0; i < 25; i++) {
        uint64_t off = rnd_below(&w->seed, BUDGET_LEN), used;
        w->bad += extract_ok(w->ix, w->data, BUDGET_LEN, off, 1 + rnd_below(&w->seed, 70000),
                             buf) < 0;
        used = atomic_load(&w->b->used);
        w->most = used > w->most ? used : w->most;
    }
    return NULL;
}

/* A long, very compressible stream read with a small budget: window memory
 * never goes past it (it would reach 16 MiB without one), the index thins
 * its windows evenly instead (usable points every few spacings), and every
 * read stays exact, also while threads read at random and the index grows
 * and thins under them. Two indexes share one budget. A budget of 0 keeps
 * no window at all, and reads are still exact. */
static void check_window_budget(uint64_t *s)
{
    static unsigned char buf[1 << 20];
    static const char *words[] = {"alpha ", "beta ", "gamma ", "delta ", "window ", "budget "};
    struct dfx_budget b = {.limit = BUDGET_LIMIT};
    unsigned char *data = malloc(BUDGET_LEN), *z = malloc(bound(BUDGET_LEN));
    struct dfx_stream st = {0};
    struct dfx_index *ix, *ix2;
    struct dfx_reader *r;
    uint64_t most = 0, pts[4096], gap = 0;
    size_t zlen, usable, n;
    uint64_t wb;
    int bad = 0;

    for (size_t i = 0; data && i < BUDGET_LEN;) {
        const char *w = words[rnd_below(s, 6)];
        for (size_t j = 0; w[j] && i < BUDGET_LEN; j++)
            data[i++] = (unsigned char)w[j];
        if (i < BUDGET_LEN && rnd_below(s, 8) == 0)
            data[i++] = (unsigned char)('0' + rnd_below(s, 10));
    }
    zlen = data && z ? zdeflate(data, BUDGET_LEN, 1, -15, 0, NULL, z, bound(BUDGET_LEN)) : 0;
    CHECK(zlen > 0);
    if (!zlen)
        goto out;
    CHECK(src_mem_new(z, zlen, &st.src) == 0);
    st.end = zlen;
    st.framing = DFX_RAW;
    st.usize = BUDGET_LEN;
    st.budget = &b;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    CHECK_EQ(index_new(&st, SPACING, &ix2), 0);
    /* one sequential pass, checked as it goes */
    CHECK_EQ(dfx_reader_new(ix, 0, &r), 0);
    for (size_t at = 0;;) {
        int64_t got = dfx_reader_read(r, buf, sizeof(buf));
        if (got <= 0) {
            CHECK_EQ(got, 0);
            CHECK_EQ(at, BUDGET_LEN);
            break;
        }
        bad += memcmp(buf, data + at, (size_t)got) != 0;
        at += (size_t)got;
        dfx_index_memory(ix, &usable, &wb);
        most = wb > most ? wb : most;
        CHECK(atomic_load(&b.used) <= BUDGET_LIMIT);
    }
    dfx_reader_free(r);
    CHECK_EQ(bad, 0);
    CHECK(most <= BUDGET_LIMIT);
    CHECK(most > BUDGET_LIMIT / 2); /* it used the budget */
    if (verbose)
        fprintf(stderr, "budget: %zu points, zlen %zu\n", dfx_index_points(ix), zlen);
    CHECK(dfx_index_points(ix) > 150); /* every point was recorded ... */
    dfx_index_memory(ix, &usable, &wb);
    CHECK(usable >= 8 && usable <= BUDGET_LIMIT / DFX_WINDOW_SIZE + 1); /* ... few kept */
    /* evenly: no gap between usable points much wider than the average */
    n = dfx_index_points_from(ix, 0, pts, 4096);
    for (size_t i = 1; i < n; i++)
        gap = pts[i] - pts[i - 1] > gap ? pts[i] - pts[i - 1] : gap;
    gap = BUDGET_LEN - pts[n - 1] > gap ? BUDGET_LEN - pts[n - 1] : gap;
    CHECK(gap <= 4 * (uint64_t)BUDGET_LEN / usable);
    for (int i = 0; i < 40; i++)
        bad += extract_ok(ix, data, BUDGET_LEN, rnd_below(s, BUDGET_LEN),
                          1 + rnd_below(s, 100000), buf) < 0;
    CHECK_EQ(bad, 0);
    CHECK(atomic_load(&b.used) <= BUDGET_LIMIT);

    /* threads on a second index sharing the budget: it grows and thins
     * while they read */
    {
        struct budget_worker w[4];
        pthread_t t[4];

        for (int i = 0; i < 4; i++) {
            w[i] = (struct budget_worker){ix2, data, &b, rnd(s) | 1, 0, 0};
            pthread_create(&t[i], NULL, budget_worker_main, &w[i]);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(t[i], NULL);
            bad += w[i].bad;
            CHECK(w[i].most <= BUDGET_LIMIT);
        }
        CHECK_EQ(bad, 0);
    }
    dfx_index_free(ix2);
    dfx_index_memory(ix, &usable, &wb);
    CHECK_EQ(atomic_load(&b.used), wb); /* ix2 gave its share back */
    dfx_index_free(ix);
    CHECK_EQ(atomic_load(&b.used), 0);

    /* no budget at all: no window kept, reads still exact */
    b.limit = 0;
    CHECK_EQ(index_new(&st, SPACING, &ix), 0);
    for (int i = 0; i < 4; i++)
        bad += extract_ok(ix, data, BUDGET_LEN, BUDGET_LEN - 1 - rnd_below(s, 1 << 20), 5000,
                          buf) < 0;
    CHECK_EQ(bad, 0);
    dfx_index_memory(ix, &usable, &wb);
    CHECK(usable == 1 && wb == 0 && dfx_index_points(ix) > 150);
    CHECK_EQ(atomic_load(&b.used), 0);
    dfx_index_free(ix);
    src_free(st.src);
out:
    free(data);
    free(z);
}

int main(int argc, char **argv)
{
    static struct dataset ds[4] = {{"random", NULL, DATA_LEN},
                                   {"smooth", NULL, DATA_LEN},
                                   {"zeros", NULL, DATA_LEN},
                                   {"mixed", NULL, DATA_LEN}};
    void (*fill[4])(unsigned char *, size_t, uint64_t *) = {fill_random, fill_smooth,
                                                            fill_zero_runs, fill_mixed};
    uint64_t s = 0x9e3779b97f4a7c15ull;
    struct encoded e;

    verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    for (int i = 0; i < 4; i++) {
        ds[i].data = malloc(ds[i].len);
        if (!ds[i].data)
            return 1;
        fill[i](ds[i].data, ds[i].len, &s);
    }
#ifdef NPYFS_HAVE_ISAL
    check_isal_wrapper(ds, 4, &s);
#endif
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < E_COUNT; k++) {
            if (encode(&ds[i], (enum enc_kind)k, &e, &s) < 0) {
                CHECK(!"encode");
                continue;
            }
            for (size_t d = 0; d < NDECODERS; d++)
                check_combo(&e, &ds[i], (enum enc_kind)k, d, &s);
            if (NDECODERS > 1)
                check_decoders_agree(&e, &ds[i], &s);
            encoded_free(&e);
        }
    /* Every decoder started at points with each bit offset 0-7. */
    for (size_t d = 0; d < NDECODERS; d++)
        for (int b = 0; b < 8; b++)
            CHECK(bits_seen[d][b] > 0);
    check_gzip_many_members(&ds[3], &s);
    check_point_at_member_start(&ds[3], &s);
#ifdef NPYFS_HAVE_ISAL
    check_marking_streams(&s);
    check_marking_fallback(&s);
    check_grow_from_points(&ds[1], E_RAW6, false, &s);
    check_grow_from_points(&ds[3], E_GZ_MULTI, false, &s);
    check_grow_from_points(&ds[1], E_RAW6, true, &s);
    check_grow_from_points(&ds[3], E_GZ_MULTI, true, &s);
#endif
    for (size_t d = 0; d < NDECODERS; d++) {
        decoder = decoders[d];
        check_far_read_all(ds, &s);
        check_threads(&ds[1], E_RAW6, &s);
        check_threads(&ds[3], E_GZ_MULTI, &s);
    }
    /* These loop over the decoders themselves. */
    check_flips(&ds[1], E_RAW6, &s, 20);
    check_flips(&ds[3], E_GZ6, &s, 20);
    check_flips(&ds[0], E_RAW1, &s, 10); /* stored blocks: mostly CRC-only damage */
    check_truncation(&ds[1], E_RAW6, &s);
    check_truncation(&ds[1], E_GZ6, &s);
    check_truncation(&ds[3], E_GZ_MULTI, &s);
    for (size_t d = 0; d < NDECODERS; d++) {
        decoder = decoders[d];
        check_raw_size_crc(&ds[1], &s);
        check_gzip_trailer(&ds[1], &s);
        check_gzip_member_headers(&ds[3], &s);
        check_gzip_usize(&ds[1], &s);
        check_api_edges(&ds[1], &s);
        check_window_budget(&s);
        check_start_reads(&ds[1], E_RAW6, &s);
        check_start_reads(&ds[3], E_GZ_MULTI, &s);
    }
    enc_cache_free();
    for (int i = 0; i < 4; i++)
        free(ds[i].data);
    return check_exit("test_dfx");
}
