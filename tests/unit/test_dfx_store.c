/*
 * dfx_store.c and the export/import half of dfx.c: saved indexes round-trip,
 * load without touching the archive, start readers near their offset, and
 * are refused (never trusted) when stale, truncated at any length, flipped
 * anywhere, of another version, or of another archive; the chunk CRC table
 * round-trips with them (and alone, for stored members) and is covered by
 * the same checks. Loaded indexes read their windows from the file on
 * demand: a file truncated or overwritten while loaded never yields wrong
 * bytes. The index directory is checked once, through its descriptor, and
 * used through it. Inputs are built with zlib here; index files go to a
 * fresh directory under $TMPDIR.
 *
 * Threads never use CHECK (its counters are plain ints): they count their own
 * failures and the main thread checks the totals.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "dfx.h"
#include "dfx_internal.h"
#include "dfx_store.h"
#include "source.h"

#define SPACING DFX_MIN_SPACING
#define CHUNK (128u << 10)
#define THREADS 8
#define STORE_TEST_NAME 64

static char tmpdir[256];
static struct dfx_store_dir *sdir; /* tmpdir, opened */

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

/* kind 0: incompressible; 1: text-like (a few words, compresses well);
 * 2: half and half, in 100 KiB stretches; 3: words each followed by a
 * random letter (short deflate blocks, windows that compress ~3x). */
static unsigned char *make_data(size_t len, int kind, uint64_t *s)
{
    static const char *words[] = {"index ", "point ", "window ", "deflate ", "npyfs ",
                                  "zran ", "array ", "mmap "};
    unsigned char *p = malloc(len);

    for (size_t i = 0; p && i < len;) {
        bool text = kind == 1 || kind == 3 || (kind == 2 && (i / 100000) % 2);
        if (text) {
            const char *w = words[rnd(s) % 8];
            for (size_t j = 0; w[j] && i < len; j++)
                p[i++] = (unsigned char)w[j];
            if (kind == 3 && i < len)
                p[i++] = (unsigned char)('a' + rnd(s) % 26);
        } else {
            p[i++] = (unsigned char)(rnd(s) >> 56);
        }
    }
    return p;
}

/* Raw deflate (wbits -15) or gzip (31) of data, into a new buffer. */
static unsigned char *zcompress(const unsigned char *data, size_t len, int wbits, size_t *out_len)
{
    z_stream zs = {0};
    size_t cap = compressBound(len) + 64;
    unsigned char *out = malloc(cap);

    if (!out || deflateInit2(&zs, 6, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(out);
        return NULL;
    }
    zs.next_in = (unsigned char *)data;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) {
        deflateEnd(&zs);
        free(out);
        return NULL;
    }
    *out_len = zs.total_out;
    deflateEnd(&zs);
    return out;
}

/* ---- a source that counts what is read through it ---- */

struct count_src {
    struct src base; /* first: the source API sees this */
    struct src *inner;
    pthread_mutex_t lock;
    uint64_t preads, lowest;
};

static int64_t count_pread(struct src *s, void *buf, size_t len, uint64_t off)
{
    struct count_src *c = (struct count_src *)s;

    pthread_mutex_lock(&c->lock);
    c->preads++;
    if (off < c->lowest)
        c->lowest = off;
    pthread_mutex_unlock(&c->lock);
    return src_pread(c->inner, buf, len, off);
}

static void count_free(struct src *s)
{
    struct count_src *c = (struct count_src *)s;

    src_free(c->inner);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static const struct src_ops count_ops = {count_pread, count_free};

static struct count_src *count_src_new(const unsigned char *buf, size_t len)
{
    struct count_src *c = calloc(1, sizeof(*c));

    if (!c || src_mem_new(buf, len, &c->inner) < 0) {
        free(c);
        return NULL;
    }
    c->base.ops = &count_ops;
    c->base.size = len;
    c->lowest = UINT64_MAX;
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

static void count_reset(struct count_src *c)
{
    c->preads = 0;
    c->lowest = UINT64_MAX;
}

/* ---- a test case: data, its compressed form, a key ---- */

struct fixture {
    unsigned char *data, *comp;
    size_t len, clen;
    struct count_src *src;
    struct dfx_stream st;
    struct dfx_store_key key;
};

static int fixture_init(struct fixture *f, size_t len, int kind, enum dfx_framing framing,
                        uint64_t *s)
{
    memset(f, 0, sizeof(*f));
    f->len = len;
    f->data = make_data(len, kind, s);
    if (!f->data)
        return -1;
    if (framing == DFX_RAW) {
        f->comp = zcompress(f->data, len, -15, &f->clen);
    } else { /* two gzip members, so that points carry member_out > 0 */
        size_t l1, l2;
        unsigned char *a = zcompress(f->data, len / 3, 31, &l1);
        unsigned char *b = zcompress(f->data + len / 3, len - len / 3, 31, &l2);
        f->comp = a && b ? malloc(l1 + l2) : NULL;
        if (f->comp) {
            memcpy(f->comp, a, l1);
            memcpy(f->comp + l1, b, l2);
            f->clen = l1 + l2;
        }
        free(a);
        free(b);
    }
    if (!f->comp)
        return -1;
    f->src = count_src_new(f->comp, f->clen);
    if (!f->src)
        return -1;
    f->st = (struct dfx_stream){.src = &f->src->base, .start = 0, .end = f->clen,
                                .framing = framing, .usize = framing == DFX_RAW ? len : UINT64_MAX,
                                .crc = (uint32_t)crc32(0, f->data, (uInt)len),
                                .check_crc = framing == DFX_RAW};
    f->key = (struct dfx_store_key){.dev = 2049, .ino = 1234567, .size = f->clen + 100,
                                    .mtime_sec = 1700000000, .mtime_nsec = 123456789,
                                    .name = "x.npy", .name_len = 5, .crc = f->st.crc,
                                    .stored_size = f->clen};
    return 0;
}

static void fixture_destroy(struct fixture *f)
{
    if (f->src)
        f->src->base.ops->free(&f->src->base);
    free(f->data);
    free(f->comp);
}

/* A complete index over f (one full pass from 0). */
static struct dfx_index *built_index(struct fixture *f, bool zip_windows)
{
    struct dfx_index *ix;
    struct dfx_reader *r;
    unsigned char *buf = malloc(1 << 20);

    if (!buf || dfx_index_new(&f->st, SPACING, &ix) < 0) {
        free(buf);
        return NULL;
    }
    dfx_index_compress_windows(ix, zip_windows);
    if (dfx_reader_new(ix, 0, &r) == 0) {
        while (dfx_reader_read(r, buf, 1 << 20) > 0)
            ;
        dfx_reader_free(r);
    }
    free(buf);
    return ix;
}

static int random_extracts(struct dfx_index *ix, const struct fixture *f, uint64_t *s, int n)
{
    unsigned char *buf = malloc(300000);
    int bad = 0;

    for (int i = 0; buf && i < n; i++) {
        uint64_t off = rnd(s) % (f->len + 10), len = 1 + rnd(s) % 300000;
        uint64_t want = off >= f->len ? 0 : (f->len - off < len ? f->len - off : len);
        int64_t got = dfx_extract(ix, off, buf, (size_t)len);
        if (got != (int64_t)want || (want && memcmp(buf, f->data + off, (size_t)want) != 0))
            bad++;
    }
    free(buf);
    return buf ? bad : n;
}

static char *index_path(const struct fixture *f)
{
    char *p = NULL;

    dfx_store_path(sdir, &f->key, &p);
    return p;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    unsigned char *p = NULL;

    if (fd >= 0 && fstat(fd, &st) == 0 && (p = malloc((size_t)st.st_size + 1)) &&
        pread(fd, p, (size_t)st.st_size, 0) == st.st_size)
        *len = (size_t)st.st_size;
    else if (p) {
        free(p);
        p = NULL;
    }
    if (fd >= 0)
        close(fd);
    return p;
}

static int spit(const char *path, const unsigned char *p, size_t len)
{
    /* a new file each time: ext4 flushes a file rewritten in place on close */
    int fd = (unlink(path), open(path, O_WRONLY | O_CREAT | O_EXCL, 0600));
    int ok = fd >= 0 && write(fd, p, len) == (ssize_t)len;

    if (fd >= 0)
        close(fd);
    return ok ? 0 : -1;
}

/* The chunk CRC table of f's data, fed in uneven pieces. */
static struct dfx_crcs *table_of(const struct fixture *f, uint64_t *s)
{
    struct dfx_crcs *t;

    if (dfx_crcs_new(f->len, CHUNK, &t) < 0)
        return NULL;
    for (size_t off = 0; off < f->len;) {
        size_t n = 1 + rnd(s) % 300000;
        if (n > f->len - off)
            n = f->len - off;
        dfx_crcs_feed(t, off, f->data + off, n);
        off += n;
    }
    return t;
}

static bool same_table(const struct dfx_crcs *a, const struct dfx_crcs *b)
{
    return a && b && a->size == b->size && a->count == b->count && a->chunk == b->chunk &&
           memcmp(a->crc, b->crc, (size_t)a->count * 4) == 0;
}

/* Load f's saved index into a fresh index: the errno, and whether the fresh
 * index kept only its point 0 (and no table came back) on failure. */
static int try_load(struct fixture *f, bool *untouched)
{
    struct dfx_index *ix;
    struct dfx_crcs *t = (void *)1;
    int ret;

    if (dfx_index_new(&f->st, SPACING, &ix) < 0)
        return -999;
    ret = dfx_store_load(sdir, &f->key, ix, CHUNK, NULL, &t, NULL);
    *untouched = dfx_index_points(ix) == 1 && dfx_index_total(ix) == UINT64_MAX && !t;
    free(t);
    dfx_index_free(ix);
    return ret;
}

/* ---- cases ---- */

static bool same_points(struct dfx_index *a, struct dfx_index *b)
{
    struct dfx_xpoint *pa, *pb;
    size_t na, nb;
    uint64_t ta, tb;
    bool same;

    if (dfx_index_export(a, &pa, &na, &ta) < 0)
        return false;
    if (dfx_index_export(b, &pb, &nb, &tb) < 0) {
        free(pa);
        return false;
    }
    same = na == nb && ta == tb;
    for (size_t i = 0; same && i < na; i++)
        same = pa[i].out == pb[i].out && pa[i].in == pb[i].in && pa[i].bits == pb[i].bits &&
               pa[i].member_out == pb[i].member_out && pa[i].window_len == pb[i].window_len;
    free(pa);
    free(pb);
    return same;
}

/* Save, reload without a single read of the archive, and read correctly;
 * a read near the end starts from a point near the end. */
static void check_round_trip(size_t len, int kind, enum dfx_framing framing, bool zip_windows,
                             uint64_t *s)
{
    struct fixture f;
    struct dfx_index *built, *ix;
    struct dfx_crcs *table = NULL, *got = NULL;
    unsigned char byte;

    CHECK(fixture_init(&f, len, kind, framing, s) == 0);
    built = built_index(&f, zip_windows);
    CHECK(built != NULL);
    if (!built)
        goto out;
    CHECK(dfx_index_total(built) == len);
    CHECK(dfx_index_points(built) > 2);
    table = table_of(&f, s);
    CHECK(table && table->count == (len + CHUNK - 1) / CHUNK);
    CHECK(table && dfx_crcs_whole(table) == (uint32_t)crc32(0, f.data, (uInt)len));
    CHECK(table && table->crc[0] == dfx_crcs_of(f.data, CHUNK));
    CHECK_EQ(dfx_store_save(sdir, &f.key, built, table), 0);

    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    count_reset(f.src);
    CHECK_EQ(dfx_store_load(sdir, &f.key, ix, CHUNK, NULL, &got, NULL), 0);
    CHECK_EQ(f.src->preads, 0); /* loading never touches the archive */
    CHECK(same_points(built, ix));
    CHECK(same_table(table, got));
    free(got);
    got = NULL;
    CHECK_EQ(dfx_index_total(ix), len);

    /* the last byte comes from the last point, not from the stream start */
    count_reset(f.src);
    CHECK_EQ(dfx_extract(ix, len - 1, &byte, 1), 1);
    CHECK_EQ(byte, f.data[len - 1]);
    {
        struct dfx_xpoint *pts;
        size_t n;
        uint64_t total;
        if (dfx_index_export(ix, &pts, &n, &total) == 0) {
            CHECK(f.src->lowest + 1 >= pts[n - 1].in);
            free(pts);
        }
    }
    CHECK_EQ(random_extracts(ix, &f, s, 60), 0);
    /* a second load replaces the points of the first (its file stays open
     * for readers that may still use it) */
    CHECK_EQ(dfx_store_load(sdir, &f.key, ix, CHUNK, NULL, &got, NULL), 0);
    CHECK(same_table(table, got));
    free(got);
    got = NULL;
    CHECK(same_points(built, ix));
    CHECK_EQ(random_extracts(ix, &f, s, 20), 0);
    dfx_index_free(ix);
    /* the table the caller built itself from what it reads must be the
     * file's, else the file is for other content */
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK_EQ(dfx_store_load(sdir, &f.key, ix, CHUNK, table, NULL, NULL), 0);
    dfx_index_free(ix);
    table->crc[table->count - 1] ^= 1;
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK_EQ(dfx_store_load(sdir, &f.key, ix, CHUNK, table, &got, NULL), -ESTALE);
    CHECK(got == NULL && dfx_index_points(ix) == 1);
    table->crc[table->count - 1] ^= 1;
    dfx_index_free(ix);
    /* a table of another chunk size is stale: the file is rebuilt */
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK_EQ(dfx_store_load(sdir, &f.key, ix, CHUNK / 2, NULL, &got, NULL), -ESTALE);
    CHECK(got == NULL && dfx_index_points(ix) == 1);
    dfx_index_free(ix);
    if (framing == DFX_RAW) {
        /* saved without a table: loads, with none (the zip CRC-32 in the
         * key tells a rewritten member) */
        CHECK_EQ(dfx_store_save(sdir, &f.key, built, NULL), 0);
        CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
        got = (void *)1;
        CHECK_EQ(dfx_store_load(sdir, &f.key, ix, CHUNK, NULL, &got, NULL), 0);
        CHECK(got == NULL);
        dfx_index_free(ix);
    } else {
        /* a gzip member's file is never saved without its table */
        CHECK_EQ(dfx_store_save(sdir, &f.key, built, NULL), -EINVAL);
    }
    dfx_index_free(built);
out:
    free(table);
    fixture_destroy(&f);
}

struct worker {
    struct dfx_index *ix;
    const struct fixture *f;
    uint64_t seed;
    int bad;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    w->bad = random_extracts(w->ix, w->f, &w->seed, 40);
    return NULL;
}

/* Readers racing each other right after a load, with the import itself
 * racing readers that started before it. */
static void check_concurrent(uint64_t *s)
{
    struct fixture f;
    struct dfx_index *built, *ix;
    struct worker w[THREADS];
    pthread_t t[THREADS];
    int bad = 0;

    CHECK(fixture_init(&f, 3u << 20, 2, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    CHECK(built && dfx_store_save(sdir, &f.key, built, NULL) == 0);
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){ix, &f, rnd(s) | 1, 0};
        pthread_create(&t[i], NULL, worker_main, &w[i]);
        if (i == THREADS / 2) /* replaces whatever the workers recorded so far */
            CHECK_EQ(dfx_store_load(sdir, &f.key, ix, CHUNK, NULL, NULL, NULL), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        bad += w[i].bad;
    }
    CHECK_EQ(bad, 0);
    dfx_index_free(ix);
    dfx_index_free(built);
    fixture_destroy(&f);
}

/* Any change of the key makes the file stale; another spacing does not
 * (its points are valid whatever the spacing): the file is loaded as it
 * is, under the same name, and says which spacing it was built with. */
static void check_stale(uint64_t *s)
{
    struct fixture f;
    struct dfx_index *built, *ix;
    struct dfx_store_key k;
    char *p1 = NULL, *p2 = NULL;
    bool untouched;

    CHECK(fixture_init(&f, 1u << 20, 1, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    CHECK(built && dfx_store_save(sdir, &f.key, built, NULL) == 0);
    k = f.key;
    p1 = index_path(&f);
    for (int field = 0; field < 9; field++) {
        f.key = k;
        switch (field) {
        case 8: f.key.isize++; break;
        case 0: f.key.mtime_nsec++; break;
        case 1: f.key.mtime_sec--; break;
        case 2: f.key.size++; break;
        case 3: f.key.crc ^= 1; break;
        case 4: f.key.stored_size--; break;
        case 5: f.key.ino++; break;
        case 6: f.key.dev++; break;
        default: f.key.name = "y.npy"; break;
        }
        /* the same file under the new key's name: only the content can tell */
        p2 = index_path(&f);
        CHECK(p1 && p2 && strcmp(p1, p2) != 0);
        CHECK(p1 && p2 && link(p1, p2) == 0);
        CHECK_EQ(try_load(&f, &untouched), -ESTALE);
        CHECK(untouched);
        if (p2)
            unlink(p2);
        free(p2);
    }
    f.key = k;
    CHECK_EQ(dfx_index_new(&f.st, SPACING * 2, &ix), 0);
    {
        uint64_t built_with = 0;
        CHECK_EQ(dfx_store_load(sdir, &f.key, ix, CHUNK, NULL, NULL, &built_with), 0);
        CHECK_EQ(built_with, SPACING);
        CHECK(built && same_points(built, ix));
        CHECK_EQ(random_extracts(ix, &f, s, 5), 0);
    }
    dfx_index_free(ix);
    CHECK_EQ(try_load(&f, &untouched), 0);
    free(p1);
    dfx_index_free(built);
    fixture_destroy(&f);
}

/* Rewrite the file with its trailing CRC fixed up, so that only the
 * structural checks stand between the change and the index. */
static void fix_crc(unsigned char *p, size_t len)
{
    uint32_t c = (uint32_t)crc32(0, p, (uInt)(len - 4));

    for (int i = 0; i < 4; i++)
        p[len - 4 + i] = (unsigned char)(c >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Truncated at every length, one flipped bit at every byte, other versions,
 * broken structure behind a valid checksum: always refused, index untouched. */
static void check_damaged_files(uint64_t *s)
{
    struct fixture f;
    struct dfx_index *built;
    unsigned char *orig, *p;
    size_t len = 0;
    struct dfx_crcs *table;
    char *path;
    int accepted = 0, touched = 0;
    bool untouched;

    CHECK(fixture_init(&f, 300000, 3, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    table = table_of(&f, s);
    CHECK(built && dfx_index_points(built) >= 3);
    CHECK(built && table && dfx_store_save(sdir, &f.key, built, table) == 0);
    path = index_path(&f);
    orig = path ? slurp(path, &len) : NULL;
    CHECK(orig && built && len > 144 + 3 * 48 + 4 && dfx_index_points(built) >= 3);
    if (!orig || !built || len <= 144 + 3 * 48 + 4 || dfx_index_points(built) < 3)
        goto out;
    if (getenv("DFX_STORE_VERBOSE"))
        fprintf(stderr, "index file: %zu bytes, %zu points\n", len, dfx_index_points(built));
    for (size_t cut = 0; cut < len; cut++) {
        spit(path, orig, cut);
        accepted += try_load(&f, &untouched) == 0;
        touched += !untouched;
    }
    CHECK_EQ(accepted, 0);
    CHECK_EQ(touched, 0);
    p = malloc(len);
    for (size_t at = 0; p && at < len; at++) {
        memcpy(p, orig, len);
        p[at] ^= (unsigned char)(1u << (rnd(s) % 8));
        spit(path, p, len);
        accepted += try_load(&f, &untouched) == 0;
        touched += !untouched;
    }
    CHECK_EQ(accepted, 0);
    CHECK_EQ(touched, 0);

    /* another version (3: before the path was recorded), with a valid
     * checksum: stale */
    for (unsigned v = 3; v <= 5; v += 2) {
        memcpy(p, orig, len);
        p[8] = (unsigned char)v;
        fix_crc(p, len);
        spit(path, p, len);
        CHECK_EQ(try_load(&f, &untouched), -ESTALE);
        CHECK(untouched);
    }
    /* a broken chunk table behind a valid checksum: its count, its padding,
     * its offset, its chunk size */
    {
        size_t toff = (size_t)(p[64] | p[65] << 8 | p[66] << 16 | (size_t)p[67] << 24);
        CHECK(toff + 16 + 4 * 3 + 4 == len); /* 300000 bytes: 3 chunks */
        for (int c = 0; c < 5; c++) {
            memcpy(p, orig, len);
            switch (c) {
            case 0: p[toff + 8] = 4; break;        /* count 4 */
            case 1: p[toff + 4] = 1; break;        /* non-zero padding */
            case 2: put64(p + 64, toff + 4); break; /* offset inside the table */
            case 3: put64(p + 64, len); break;    /* offset past the end */
            default: p[toff + 2] = 0; p[toff] = 0; p[toff + 1] = 0; p[toff + 3] = 0;
                break;                             /* chunk 0 with a count */
            }
            fix_crc(p, len);
            spit(path, p, len);
            CHECK_EQ(try_load(&f, &untouched), -EBADMSG);
            CHECK(untouched);
        }
        memcpy(p, orig, len);
        p[toff + 1] = 0; p[toff + 2] = 1; /* chunk 64 KiB: 5 chunks, not 3 */
        fix_crc(p, len);
        spit(path, p, len);
        CHECK_EQ(try_load(&f, &untouched), -EBADMSG);
    }
    /* bad magic */
    memcpy(p, orig, len);
    p[0] = 'X';
    fix_crc(p, len);
    spit(path, p, len);
    CHECK_EQ(try_load(&f, &untouched), -EBADMSG);
    /* points out of order (swap out of points 1 and 2) */
    memcpy(p, orig, len);
    {
        size_t poff = (size_t)(p[56] | p[57] << 8 | p[58] << 16 | (size_t)p[59] << 24);
        unsigned char tmp[8];
        memcpy(tmp, p + poff + 48, 8);
        memcpy(p + poff + 48, p + poff + 96, 8);
        memcpy(p + poff + 96, tmp, 8);
        fix_crc(p, len);
        spit(path, p, len);
        CHECK_EQ(try_load(&f, &untouched), -EBADMSG);
        CHECK(untouched);
        /* a window offset past the end, or into the point table */
        memcpy(p, orig, len);
        put64(p + poff + 48 + 24, len);
        fix_crc(p, len);
        spit(path, p, len);
        CHECK_EQ(try_load(&f, &untouched), -EBADMSG);
        memcpy(p, orig, len);
        put64(p + poff + 48 + 24, poff - 1);
        fix_crc(p, len);
        spit(path, p, len);
        CHECK_EQ(try_load(&f, &untouched), -EBADMSG);
        /* a window offset before the windows (in the name) */
        memcpy(p, orig, len);
        put64(p + poff + 48 + 24, 136);
        fix_crc(p, len);
        spit(path, p, len);
        CHECK_EQ(try_load(&f, &untouched), -EBADMSG);
        /* non-zero padding after the name */
        memcpy(p, orig, len);
        p[136 + 5] = 1;
        fix_crc(p, len);
        spit(path, p, len);
        CHECK_EQ(try_load(&f, &untouched), -EBADMSG);
        /* a point count that does not fit the file */
        memcpy(p, orig, len);
        put64(p + 40, (uint64_t)1 << 60);
        fix_crc(p, len);
        spit(path, p, len);
        CHECK_EQ(try_load(&f, &untouched), -EBADMSG);
        /* a point past the end of the stream */
        memcpy(p, orig, len);
        put64(p + poff + 48 + 8, f.clen + 1);
        fix_crc(p, len);
        spit(path, p, len);
        CHECK_EQ(try_load(&f, &untouched), -EBADMSG);
    }
    /* a symlink at the file's name is never followed */
    unlink(path);
    CHECK(symlink("/etc/passwd", path) == 0);
    CHECK(try_load(&f, &untouched) < 0);
    unlink(path);
    CHECK_EQ(try_load(&f, &untouched), -ENOENT);
    /* and the original is fine */
    spit(path, orig, len);
    CHECK_EQ(try_load(&f, &untouched), 0);
    free(p);
    free(orig);
out:
    free(path);
    free(table);
    dfx_index_free(built);
    fixture_destroy(&f);
}

/* A stored member's file: the table alone, and only for that member. */
static void check_stored(uint64_t *s)
{
    struct fixture f;
    struct dfx_crcs *table, *got = NULL, *other;
    struct dfx_index *ix;
    unsigned char *orig, *p;
    size_t len = 0;
    char *path;
    int accepted = 0;

    CHECK(fixture_init(&f, 1000000, 0, DFX_RAW, s) == 0);
    f.key.stored_size = f.len; /* stored: as many bytes as the data */
    table = table_of(&f, s);
    CHECK(table != NULL);
    if (!table)
        goto out;
    CHECK_EQ(dfx_store_save(sdir, &f.key, NULL, NULL), -EINVAL);
    CHECK_EQ(dfx_crcs_new(f.len - 1, CHUNK, &other), 0);
    CHECK_EQ(dfx_store_save(sdir, &f.key, NULL, other), -EINVAL); /* size != stored */
    free(other);
    CHECK_EQ(dfx_store_save(sdir, &f.key, NULL, table), 0);
    CHECK_EQ(dfx_store_load(sdir, &f.key, NULL, CHUNK, NULL, &got, NULL), 0);
    CHECK(same_table(table, got));
    free(got);
    got = NULL;
    CHECK_EQ(dfx_store_load(sdir, &f.key, NULL, CHUNK * 2, NULL, &got, NULL), -ESTALE);
    CHECK(got == NULL);
    /* not a deflate member's file: no points to load (spacing 0: stale) */
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK_EQ(dfx_store_load(sdir, &f.key, ix, CHUNK, NULL, &got, NULL), -ESTALE);
    CHECK(got == NULL && dfx_index_points(ix) == 1);
    dfx_index_free(ix);
    /* every flipped byte is refused */
    path = index_path(&f);
    orig = path ? slurp(path, &len) : NULL;
    p = orig ? malloc(len) : NULL;
    for (size_t at = 0; p && at < len; at++) {
        memcpy(p, orig, len);
        p[at] ^= (unsigned char)(1u << (rnd(s) % 8));
        spit(path, p, len);
        accepted += dfx_store_load(sdir, &f.key, NULL, CHUNK, NULL, &got, NULL) == 0;
        free(got);
        got = NULL;
    }
    CHECK(p != NULL);
    CHECK_EQ(accepted, 0);
    /* a deflate member's file under a stored member's key is refused too */
    if (p) {
        struct dfx_index *built = built_index(&f, false);
        f.key.stored_size = f.clen;
        CHECK(built && dfx_store_save(sdir, &f.key, built, NULL) == 0);
        CHECK_EQ(dfx_store_load(sdir, &f.key, NULL, CHUNK, NULL, &got, NULL), -ESTALE);
        dfx_index_free(built);
    }
    free(p);
    free(orig);
    free(path);
out:
    free(table);
    fixture_destroy(&f);
}

/* Another archive's index copied over this one's name: refused. */
static void check_foreign(uint64_t *s)
{
    struct fixture a, b;
    struct dfx_index *ia, *ib;
    char *pa, *pb;
    bool untouched;

    CHECK(fixture_init(&a, 1u << 20, 1, DFX_RAW, s) == 0);
    CHECK(fixture_init(&b, 1u << 20, 1, DFX_RAW, s) == 0);
    b.key.ino++;
    ia = built_index(&a, false);
    ib = built_index(&b, false);
    CHECK(ia && dfx_store_save(sdir, &a.key, ia, NULL) == 0);
    CHECK(ib && dfx_store_save(sdir, &b.key, ib, NULL) == 0);
    pa = index_path(&a);
    pb = index_path(&b);
    CHECK(pa && pb && rename(pa, pb) == 0);
    CHECK_EQ(try_load(&b, &untouched), -ESTALE);
    CHECK(untouched);
    free(pa);
    free(pb);
    dfx_index_free(ia);
    dfx_index_free(ib);
    fixture_destroy(&a);
    fixture_destroy(&b);
}

/* ---- a fetch source in memory, for dfx_index_import() ---- */

struct memfetch {
    unsigned char *p;
    size_t len;
    int released;
};

static int memfetch_read(void *ctx, unsigned char *buf, uint32_t len, uint64_t off)
{
    struct memfetch *m = ctx;

    if (off > m->len || m->len - off < len)
        return -EIO;
    memcpy(buf, m->p + off, len);
    return 0;
}

static void memfetch_release(void *ctx)
{
    ((struct memfetch *)ctx)->released++;
}

/* Every window of a complete index, compressed into m, with pts[i].woff and
 * .zlen set to where it went. */
static int windows_to_mem(struct dfx_index *ix, struct dfx_xpoint *pts, size_t n,
                          struct memfetch *m)
{
    unsigned char raw[DFX_WINDOW_SIZE], *z;
    uint32_t len, zlen;

    m->p = NULL;
    m->len = 8; /* offset 0 is never a window */
    for (size_t i = 0; i < n; i++) {
        if (!pts[i].window_len)
            continue;
        if (dfx_index_window(ix, pts[i].out, raw, &len) < 0 ||
            dfx_window_deflate(raw, len, &z, &zlen) < 0)
            return -1;
        m->p = realloc(m->p, m->len + zlen);
        memcpy(m->p + m->len, z, zlen);
        free(z);
        pts[i].woff = m->len;
        pts[i].zlen = zlen;
        pts[i].wcrc = (uint32_t)crc32(0, raw, len);
        m->len += zlen;
    }
    return 0;
}

/* Incomplete or damaged indexes are not saved; import checks its input,
 * replaces what the index had (reader-grown points included), and refuses
 * a total the index knows to be different. */
static void check_refusals(uint64_t *s)
{
    struct fixture f;
    struct dfx_index *ix, *built;
    struct dfx_xpoint *pts;
    struct memfetch mf = {0};
    struct dfx_fetch fetch = {memfetch_read, memfetch_release, &mf};
    unsigned char buf[16];
    size_t n;
    uint64_t total;

    CHECK(fixture_init(&f, 1u << 20, 2, DFX_RAW, s) == 0);
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK_EQ(dfx_extract(ix, 500000, buf, 16), 16);
    CHECK_EQ(dfx_index_export(ix, &pts, &n, &total), -EAGAIN);
    CHECK_EQ(dfx_store_save(sdir, &f.key, ix, NULL), -EAGAIN);
    dfx_index_free(ix);

    built = built_index(&f, false);
    CHECK(built && dfx_index_export(built, &pts, &n, &total) == 0 && n >= 3);
    if (built && n >= 3 && windows_to_mem(built, pts, n, &mf) == 0) {
        CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
        CHECK_EQ(dfx_extract(ix, 700000, buf, 16), 16); /* points of its own */
        CHECK(dfx_index_points(ix) > 1);
        CHECK_EQ(dfx_index_import(ix, pts, n, total + 1, &fetch), -EINVAL);
        CHECK_EQ(dfx_index_import(ix, pts + 1, n - 1, total, &fetch), -EINVAL);
        CHECK_EQ(dfx_index_import(ix, pts, n, total, NULL), -EINVAL); /* windows, no source */
        pts[1].zlen = 0;
        CHECK_EQ(dfx_index_import(ix, pts, n, total, &fetch), -EINVAL);
        pts[1].zlen = pts[2].zlen;
        CHECK_EQ(mf.released, 0); /* refused: the caller keeps its source */
        CHECK_EQ(dfx_index_import(ix, pts + 0, n, total, &fetch), 0);
        CHECK(same_points(built, ix));
        CHECK_EQ(random_extracts(ix, &f, s, 20), 0);
        /* a second import replaces the first; its source is kept until the
         * index goes, since a reader may still be fetching from it */
        CHECK_EQ(dfx_index_import(ix, pts, n, total, &fetch), 0);
        CHECK_EQ(mf.released, 0);
        CHECK_EQ(random_extracts(ix, &f, s, 10), 0);
        dfx_index_free(ix);
        CHECK_EQ(mf.released, 2);
    }
    free(pts);
    free(mf.p);
    dfx_index_free(built);

    /* a damaged stream (the zip CRC does not match): never saved */
    f.st.crc ^= 1;
    built = built_index(&f, false);
    CHECK(built && dfx_index_error(built) == -EIO);
    CHECK(built && dfx_store_save(sdir, &f.key, built, NULL) == -EIO);
    dfx_index_free(built);
    fixture_destroy(&f);

    /* gzip (no usize): an index that knows its total refuses another one */
    CHECK(fixture_init(&f, 1u << 20, 2, DFX_GZIP, s) == 0);
    built = built_index(&f, false);
    memset(&mf, 0, sizeof(mf));
    CHECK(built && dfx_index_export(built, &pts, &n, &total) == 0 && n >= 3);
    if (built && n >= 3 && windows_to_mem(built, pts, n, &mf) == 0) {
        CHECK_EQ(dfx_index_import(built, pts, n, total + 1, &fetch), -EBUSY);
        CHECK_EQ(dfx_index_import(built, pts, n, total, &fetch), 0);
        CHECK_EQ(random_extracts(built, &f, s, 10), 0);
    }
    free(pts);
    dfx_index_free(built);
    free(mf.p);
    fixture_destroy(&f);
}

/* The directory is created 0700, checked once through its descriptor:
 * the user's, not writable by group or others, writable by us. */
static void check_dirs(void)
{
    struct dfx_store_dir *d = NULL;
    char *dp = NULL, *nested = NULL, *link = NULL;

    CHECK(asprintf(&nested, "%s/a/b/c", tmpdir) > 0);
    CHECK_EQ(dfx_store_dir_open(nested, &d), 0);
    CHECK(d && strcmp(dfx_store_dir_path(d), nested) == 0);
    dfx_store_dir_close(d);
    CHECK_EQ(dfx_store_dir_open(nested, &d), 0);
    dfx_store_dir_close(d);
    if (geteuid() != 0) {
        chmod(nested, 0500);
        CHECK_EQ(dfx_store_dir_open(nested, &d), -EACCES);
    }
    chmod(nested, 0777);
    CHECK_EQ(dfx_store_dir_open(nested, &d), -EPERM);
    chmod(nested, 0770); /* group-writable: another user could plant files */
    d = (void *)1;
    CHECK_EQ(dfx_store_dir_open(nested, &d), -EPERM);
    CHECK(d == NULL);
    chmod(nested, 0720);
    CHECK_EQ(dfx_store_dir_open(nested, &d), -EPERM);
    chmod(nested, 0750); /* readable by the group is fine */
    CHECK_EQ(dfx_store_dir_open(nested, &d), 0);
    dfx_store_dir_close(d);
    /* a symlink of the user's own, given as the directory: followed */
    CHECK(asprintf(&link, "%s/link", tmpdir) > 0);
    CHECK(symlink(nested, link) == 0);
    CHECK_EQ(dfx_store_dir_open(link, &d), 0);
    dfx_store_dir_close(d);
    /* ... but the target is checked all the same */
    chmod(nested, 0770);
    CHECK_EQ(dfx_store_dir_open(link, &d), -EPERM);
    unlink(link);
    free(link);
    rmdir(nested);
    free(nested);
    CHECK(asprintf(&nested, "%s/file", tmpdir) > 0);
    spit(nested, (const unsigned char *)"x", 1);
    CHECK(dfx_store_dir_open(nested, &d) < 0);
    unlink(nested);
    free(nested);

    setenv("XDG_CACHE_HOME", "/x/cache", 1);
    CHECK(dfx_store_default_dir(&dp) == 0 && strcmp(dp, "/x/cache/npyfs") == 0);
    free(dp);
    setenv("XDG_CACHE_HOME", "relative", 1);
    setenv("HOME", "/home/u", 1);
    CHECK(dfx_store_default_dir(&dp) == 0 && strcmp(dp, "/home/u/.cache/npyfs") == 0);
    free(dp);
    unsetenv("XDG_CACHE_HOME");
    unsetenv("HOME");
    /* without HOME (a boot-time mount): the password database's home */
    {
        struct passwd *pw = getpwuid(geteuid()); /* single-threaded here */
        char *want = NULL;
        int r = dfx_store_default_dir_from(NULL, NULL, pw ? pw->pw_dir : NULL, geteuid(),
                                           &want);
        CHECK_EQ(dfx_store_default_dir(&dp), r);
        CHECK(r < 0 || (dp && want && strcmp(dp, want) == 0));
        free(want);
        free(dp);
    }
    CHECK(dfx_store_default_dir_from(NULL, NULL, tmpdir, 1000, &dp) == 0 &&
          strncmp(dp, tmpdir, strlen(tmpdir)) == 0 &&
          strcmp(dp + strlen(tmpdir), "/.cache/npyfs") == 0);
    free(dp);
    /* then /var/cache/npyfs for root; nothing for another user */
    CHECK(dfx_store_default_dir_from(NULL, NULL, "/", 0, &dp) == 0 &&
          strcmp(dp, "/var/cache/npyfs") == 0);
    free(dp);
    CHECK(dfx_store_default_dir_from(NULL, NULL, NULL, 0, &dp) == 0 &&
          strcmp(dp, "/var/cache/npyfs") == 0);
    free(dp);
    CHECK(dfx_store_default_dir_from(NULL, "", "/nonexistent/x", 0, &dp) == 0 &&
          strcmp(dp, "/var/cache/npyfs") == 0);
    free(dp);
    dp = (void *)1;
    CHECK_EQ(dfx_store_default_dir_from(NULL, NULL, "/", 1000, &dp), -ENOENT);
    CHECK(dp == NULL);
    CHECK_EQ(dfx_store_default_dir_from(NULL, NULL, "relative", 1000, &dp), -ENOENT);
    CHECK_EQ(dfx_store_default_dir_from(NULL, NULL, "/nonexistent/x", 1000, &dp), -ENOENT);
    CHECK_EQ(dfx_store_default_dir_from(NULL, NULL, NULL, 1000, &dp), -ENOENT);
    /* HOME and XDG_CACHE_HOME still come first */
    CHECK(dfx_store_default_dir_from(NULL, "/home/u", tmpdir, 0, &dp) == 0 &&
          strcmp(dp, "/home/u/.cache/npyfs") == 0);
    free(dp);
}

static bool exists_in(const char *dir, const struct fixture *f)
{
    struct dfx_store_dir *d;
    char *p = NULL;
    bool there;

    if (dfx_store_dir_open(dir, &d) < 0)
        return false;
    dfx_store_path(d, &f->key, &p);
    there = p && access(p, F_OK) == 0;
    free(p);
    dfx_store_dir_close(d);
    return there;
}

/* Once opened, the directory is used through its descriptor: swapping its
 * path for a symlink to another directory changes nothing (saves and loads
 * stay in the directory that was checked), and a mode that changes later
 * (group-writable) is refused at the next save or load. */
static void check_dir_swapped(uint64_t *s)
{
    struct fixture f;
    struct dfx_store_dir *d = NULL;
    struct dfx_index *built, *ix;
    char *dir = NULL, *moved = NULL, *other = NULL;
    struct dfx_crcs *t = NULL;

    CHECK(fixture_init(&f, 1u << 20, 1, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    CHECK(asprintf(&dir, "%s/swap", tmpdir) > 0 && asprintf(&moved, "%s/swap.moved", tmpdir) > 0 &&
          asprintf(&other, "%s/elsewhere", tmpdir) > 0);
    CHECK_EQ(dfx_store_dir_open(dir, &d), 0);
    CHECK(mkdir(other, 0700) == 0);
    CHECK(rename(dir, moved) == 0);
    CHECK(symlink(other, dir) == 0); /* the path now leads elsewhere */
    CHECK(built && d && dfx_store_save(d, &f.key, built, NULL) == 0);
    CHECK(exists_in(moved, &f));
    CHECK(!exists_in(other, &f));
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK(d && dfx_store_load(d, &f.key, ix, CHUNK, NULL, &t, NULL) == 0);
    CHECK_EQ(random_extracts(ix, &f, s, 5), 0);
    dfx_index_free(ix);
    /* a mode that changes after the check is caught at the next use */
    chmod(moved, 0770);
    CHECK(d && dfx_store_save(d, &f.key, built, NULL) == -EPERM);
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK(d && dfx_store_load(d, &f.key, ix, CHUNK, NULL, &t, NULL) == -EPERM);
    CHECK_EQ(dfx_index_points(ix), 1);
    dfx_index_free(ix);
    chmod(moved, 0700);
    dfx_store_dir_close(d);
    unlink(dir);
    free(dir);
    free(moved);
    free(other);
    dfx_index_free(built);
    fixture_destroy(&f);
}

/* Change the loaded file in place (the inode the index holds open):
 * truncate it, or overwrite its windows with garbage or with another
 * point's valid window. Every read stays exact (or fails), windows that no
 * longer read back are dropped, and nothing faults (the loader used to map
 * the file: truncating it was SIGBUS). */
static void check_file_changed_while_loaded(uint64_t *s)
{
    struct fixture f;
    struct dfx_index *built, *ix;
    char *path;
    size_t len = 0, usable0, usable1;
    uint64_t wb;
    unsigned char *orig;

    CHECK(fixture_init(&f, 3u << 20, 2, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    CHECK(built && dfx_store_save(sdir, &f.key, built, NULL) == 0);
    path = index_path(&f);
    orig = path ? slurp(path, &len) : NULL;
    for (int how = 0; orig && how < 3; how++) {
        int fd;

        spit(path, orig, len);
        CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
        CHECK_EQ(dfx_store_load(sdir, &f.key, ix, CHUNK, NULL, NULL, NULL), 0);
        dfx_index_memory(ix, &usable0, &wb);
        CHECK(usable0 > 10);
        CHECK_EQ(wb, 0); /* windows stay in the file */
        fd = open(path, O_WRONLY);
        CHECK(fd >= 0);
        if (how == 0) {
            CHECK(ftruncate(fd, 200) == 0);
        } else {
            /* the windows lie between the padded name and the point table */
            size_t poff = (size_t)(orig[56] | orig[57] << 8 | orig[58] << 16 |
                                   (size_t)orig[59] << 24);
            unsigned char *g = malloc(len);
            memcpy(g, orig, len);
            if (how == 1) {
                for (size_t i = 144; i < poff; i++)
                    g[i] = (unsigned char)rnd(s);
            } else {
                /* every window shifted to where another one was: each is a
                 * valid zlib stream, but not the right history */
                size_t half = (poff - 144) / 2;
                memcpy(g + 144, orig + 144 + half, poff - 144 - half);
                memcpy(g + 144 + (poff - 144 - half), orig + 144, half);
            }
            CHECK(pwrite(fd, g, len, 0) == (ssize_t)len);
            free(g);
        }
        close(fd);
        CHECK_EQ(random_extracts(ix, &f, s, 40), 0);
        dfx_index_memory(ix, &usable1, &wb);
        CHECK(usable1 < usable0); /* bad windows were dropped */
        dfx_index_free(ix);
    }
    free(orig);
    free(path);
    dfx_index_free(built);
    fixture_destroy(&f);
}

/* The indexing pass writes windows to the file as it records its points
 * (a sink): the twin holds none in memory, and the finished file loads and
 * reads like a saved one. A gzip member's file needs its table: one
 * without is refused when saved, and stale when found. */
static void check_streaming_writer(uint64_t *s)
{
    struct fixture f;
    struct dfx_store_writer *w = NULL;
    struct dfx_index *twin, *ix;
    struct dfx_reader *r;
    struct dfx_crcs *table, *got = NULL;
    struct dfx_sink sink;
    unsigned char *buf = malloc(1 << 20), *orig, *p;
    size_t usable, len = 0;
    uint64_t wb, most = 0;
    int64_t n;
    char *path;

    for (int framing = 0; framing < 2; framing++) {
        CHECK(fixture_init(&f, 3u << 20, 3, framing ? DFX_GZIP : DFX_RAW, s) == 0);
        table = table_of(&f, s);
        CHECK_EQ(dfx_store_begin(sdir, &f.key, SPACING, &w), 0);
        CHECK_EQ(dfx_index_new(&f.st, SPACING, &twin), 0);
        dfx_store_sink(w, &sink);
        dfx_index_set_sink(twin, &sink);
        CHECK_EQ(dfx_reader_new(twin, 0, &r), 0);
        while ((n = dfx_reader_read(r, buf, 1 << 20)) > 0) {
            dfx_index_memory(twin, &usable, &wb);
            most = wb > most ? wb : most;
        }
        dfx_reader_free(r);
        CHECK_EQ(n, 0);
        CHECK_EQ(most, 0);
        CHECK(dfx_index_points(twin) > 20);
        if (framing) /* no table: refused, and nothing left behind */
            CHECK_EQ(dfx_store_finish(w, twin, NULL), -EINVAL);
        else
            CHECK_EQ(dfx_store_finish(w, twin, table), 0);
        CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
        CHECK_EQ(dfx_store_load(sdir, &f.key, ix, CHUNK, NULL, &got, NULL), framing ? -ENOENT : 0);
        if (!framing) {
            CHECK(same_table(table, got));
            CHECK(same_points(twin, ix));
            CHECK_EQ(random_extracts(ix, &f, s, 30), 0);
        }
        free(got);
        got = NULL;
        dfx_index_free(ix);
        dfx_index_free(twin);
        free(table);
        fixture_destroy(&f);
    }

    /* a gzip member's file without a table (as an older npyfs wrote them
     * at unmount): stale, never used */
    CHECK(fixture_init(&f, 1u << 20, 1, DFX_GZIP, s) == 0);
    twin = built_index(&f, false);
    table = table_of(&f, s);
    CHECK(twin && dfx_store_save(sdir, &f.key, twin, table) == 0);
    path = index_path(&f);
    orig = path ? slurp(path, &len) : NULL;
    p = orig ? malloc(len) : NULL;
    if (p) {
        size_t toff = (size_t)(orig[64] | orig[65] << 8 | orig[66] << 16 |
                               (size_t)orig[67] << 24);
        size_t nlen = toff + 16 + 4;
        bool untouched;

        memcpy(p, orig, toff);
        memset(p + toff, 0, 16); /* chunk 0, count 0: no table */
        put64(p + 16, nlen);
        fix_crc(p, nlen);
        spit(path, p, nlen);
        CHECK_EQ(try_load(&f, &untouched), -ESTALE);
        CHECK(untouched);
        spit(path, orig, len);
        CHECK_EQ(try_load(&f, &untouched), 0);
    }
    free(p);
    free(orig);
    free(path);
    free(table);
    dfx_index_free(twin);
    fixture_destroy(&f);
    free(buf);
}

/* Loading a file into an index that reads grew replaces their points and
 * gives their windows' memory back to the budget. */
static void check_load_releases_windows(uint64_t *s)
{
    struct fixture f;
    struct dfx_budget budget = {.limit = 64u << 20};
    struct dfx_index *built, *ix;
    unsigned char buf[64];
    size_t usable;
    uint64_t wb;

    CHECK(fixture_init(&f, 3u << 20, 2, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    CHECK(built && dfx_store_save(sdir, &f.key, built, NULL) == 0);
    f.st.budget = &budget;
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK_EQ(dfx_extract(ix, f.len - 100, buf, 64), 64); /* records points */
    dfx_index_memory(ix, &usable, &wb);
    CHECK(wb > 0 && usable > 10);
    CHECK_EQ(atomic_load(&budget.used), wb);
    CHECK_EQ(dfx_store_load(sdir, &f.key, ix, CHUNK, NULL, NULL, NULL), 0);
    dfx_index_memory(ix, &usable, &wb);
    CHECK_EQ(wb, 0);
    CHECK_EQ(atomic_load(&budget.used), 0);
    CHECK(same_points(built, ix));
    CHECK_EQ(random_extracts(ix, &f, s, 20), 0);
    dfx_index_free(ix);
    CHECK_EQ(atomic_load(&budget.used), 0);
    dfx_index_free(built);
    fixture_destroy(&f);
}

static void check_window_codec(uint64_t *s)
{
    unsigned char *raw = make_data(DFX_WINDOW_SIZE, 2, s), back[DFX_WINDOW_SIZE], *z;
    uint32_t zlen;

    CHECK_EQ(dfx_window_deflate(raw, DFX_WINDOW_SIZE, &z, &zlen), 0);
    CHECK_EQ(dfx_window_inflate(z, zlen, back, DFX_WINDOW_SIZE), 0);
    CHECK(memcmp(raw, back, DFX_WINDOW_SIZE) == 0);
    CHECK_EQ(dfx_window_inflate(z, zlen, back, DFX_WINDOW_SIZE - 1), -EIO);
    z[zlen / 2] ^= 0x10;
    CHECK_EQ(dfx_window_inflate(z, zlen, back, DFX_WINDOW_SIZE), -EIO);
    free(z);
    CHECK_EQ(dfx_window_deflate(raw, 0, &z, &zlen), -EINVAL);
    CHECK(z == NULL);
    free(raw);
}

/* ---- pruning ---- */

/* What a prune reported: names and reasons, in order. */
struct pruned {
    char names[32][STORE_TEST_NAME];
    int why[32];
    int n;
};

static void note_pruned(const struct dfx_prune_file *f, void *arg)
{
    struct pruned *p = arg;

    if (p->n < 32) {
        snprintf(p->names[p->n], STORE_TEST_NAME, "%s", f->name);
        p->why[p->n++] = (int)f->why;
    }
}

/* The reason the prune gave for the file called name, or -1. */
static int pruned_why(const struct pruned *p, const char *name)
{
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->names[i], name) == 0)
            return p->why[i];
    return -1;
}

/* The name part of an index file's path. */
static const char *base_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash ? slash + 1 : path;
}

/* An archive file at dir/name with len bytes (its stat is the key's). */
static int make_archive(const char *dir, const char *name, size_t len, char **path,
                        struct stat *st)
{
    unsigned char buf[256] = {0};
    int fd;

    if (asprintf(path, "%s/%s", dir, name) < 0)
        return -1;
    fd = open(*path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -1;
    for (size_t done = 0; done < len; done += sizeof(buf))
        if (write(fd, buf, len - done < sizeof(buf) ? len - done : sizeof(buf)) < 0)
            break;
    close(fd);
    return stat(*path, st);
}

/* f's key for the archive at path (st), recording path (may be NULL). */
static struct dfx_store_key key_for(const struct fixture *f, const struct stat *st,
                                    const char *path)
{
    struct dfx_store_key k = f->key;

    k.dev = (uint64_t)st->st_dev;
    k.ino = (uint64_t)st->st_ino;
    k.size = (uint64_t)st->st_size;
    k.mtime_sec = st->st_mtim.tv_sec;
    k.mtime_nsec = (uint32_t)st->st_mtim.tv_nsec;
    k.path = path;
    return k;
}

static void set_age(const char *path, int64_t secs)
{
    struct timespec t[2];

    clock_gettime(CLOCK_REALTIME, &t[0]);
    t[0].tv_sec -= secs;
    t[1] = t[0];
    utimensat(AT_FDCWD, path, t, AT_SYMLINK_NOFOLLOW);
}

static char *in_dir(const char *dir, const char *name)
{
    char *p = NULL;

    return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

/* Saved files record the archive's path (not part of the key: another
 * path, or none, finds the same file); a path too long is not recorded. */
static void check_path_recorded(uint64_t *s)
{
    struct fixture f;
    struct dfx_index *built, *ix;
    unsigned char *file;
    size_t len = 0;
    char *p1, *p2, *longpath = malloc(DFX_STORE_PATH_MAX + 2);
    const char *path = "/data/runs/ab.npz"; /* 17 bytes: padded to 24 */

    CHECK(fixture_init(&f, 1u << 20, 1, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    f.key.path = path;
    p1 = index_path(&f);
    f.key.path = NULL;
    p2 = index_path(&f);
    CHECK(p1 && p2 && strcmp(p1, p2) == 0); /* the name does not depend on it */
    f.key.path = path;
    CHECK(built && dfx_store_save(sdir, &f.key, built, NULL) == 0);
    file = p1 ? slurp(p1, &len) : NULL;
    CHECK(file && len > 152 + 16);
    if (file && len > 152 + 16) {
        CHECK_EQ(file[8], DFX_STORE_VERSION);
        CHECK_EQ(file[12], 144); /* header length */
        CHECK_EQ(file[136], strlen(path)); /* path length */
        CHECK(memcmp(file + 144, "x.npy\0\0\0", 8) == 0); /* name, padded */
        CHECK(memcmp(file + 152, path, strlen(path)) == 0);
        CHECK(memcmp(file + 152 + strlen(path), "\0\0\0\0\0\0\0", 7) == 0);
    }
    free(file);
    /* loaded under a key without the path (or another one) all the same */
    f.key.path = "/elsewhere/b.npz";
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK_EQ(dfx_store_load(sdir, &f.key, ix, CHUNK, NULL, NULL, NULL), 0);
    dfx_index_free(ix);
    /* too long: not recorded, the file is still written */
    if (longpath) {
        memset(longpath, 'a', DFX_STORE_PATH_MAX + 1);
        longpath[0] = '/';
        longpath[DFX_STORE_PATH_MAX + 1] = '\0';
        f.key.path = longpath;
        CHECK(built && dfx_store_save(sdir, &f.key, built, NULL) == 0);
        file = p1 ? slurp(p1, &len) : NULL;
        CHECK(file && len > 144 && file[136] == 0 && file[137] == 0);
        free(file);
    }
    f.key.path = NULL;
    free(longpath);
    free(p1);
    free(p2);
    dfx_index_free(built);
    fixture_destroy(&f);
}

/* npyfs index --prune: files whose archive is gone or changed, unused too
 * long when it cannot be checked, older formats, damaged headers, stale
 * temporary files go; everything else stays, and nothing that is not ours
 * (no magic, a symlink, another name) is touched. */
static void check_prune_sources(uint64_t *s)
{
    struct fixture f;
    struct dfx_index *built;
    struct dfx_store_dir *d = NULL;
    struct dfx_store_key k;
    struct dfx_prune_result res;
    struct pruned got = {0};
    struct dfx_prune_opts o = {.sources = true, .unused_secs = 30 * 86400};
    char *dir = in_dir(tmpdir, "prune"), *arch = in_dir(tmpdir, "archives"), *outside;
    char *a1, *a2, *a3, *pa1, *pa2, *pa3, *pnone_old, *pnone_new, *pold, *pbad, *pnew;
    char *tmp_old, *tmp_young, *foreign, *link, *other_name;
    struct stat st1, st2, st3, st4, st5;
    unsigned char *file;
    size_t len = 0;

    CHECK(fixture_init(&f, 300000, 1, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    CHECK(dir && arch && mkdir(arch, 0700) == 0);
    CHECK(built && dfx_store_dir_open(dir, &d) == 0);
    if (!built || !d)
        goto out;
    CHECK(make_archive(arch, "a1.npz", 1000, &a1, &st1) == 0);
    CHECK(make_archive(arch, "a2.npz", 1000, &a2, &st2) == 0);
    CHECK(make_archive(arch, "a3.npz", 1000, &a3, &st3) == 0);
    CHECK(make_archive(arch, "a4.npz", 1000, &outside, &st4) == 0); /* key only */
    CHECK(make_archive(arch, "a5.npz", 1000, &other_name, &st5) == 0);
    /* a1 stays; a2 goes; a3 changes */
    k = key_for(&f, &st1, a1);
    CHECK(dfx_store_save(d, &k, built, NULL) == 0 && dfx_store_path(d, &k, &pa1) == 0);
    k = key_for(&f, &st2, a2);
    CHECK(dfx_store_save(d, &k, built, NULL) == 0 && dfx_store_path(d, &k, &pa2) == 0);
    k = key_for(&f, &st3, a3);
    CHECK(dfx_store_save(d, &k, built, NULL) == 0 && dfx_store_path(d, &k, &pa3) == 0);
    unlink(a2);
    truncate(a3, 999);
    /* no path recorded: by age */
    k = key_for(&f, &st4, NULL);
    CHECK(dfx_store_save(d, &k, built, NULL) == 0 && dfx_store_path(d, &k, &pnone_old) == 0);
    set_age(pnone_old, 31 * 86400);
    k = key_for(&f, &st5, NULL);
    CHECK(dfx_store_save(d, &k, built, NULL) == 0 && dfx_store_path(d, &k, &pnone_new) == 0);
    set_age(pnone_new, 29 * 86400);
    /* an older format, a damaged header, a newer format: copies of a1's */
    file = slurp(pa1, &len);
    CHECK(file && len > 200);
    pold = in_dir(dir, "000000000000000000000000.dfx");
    pbad = in_dir(dir, "000000000000000000000001.dfx");
    pnew = in_dir(dir, "000000000000000000000002.dfx");
    if (file && len > 200) {
        file[8] = 3;
        fix_crc(file, len);
        spit(pold, file, len);
        file[8] = DFX_STORE_VERSION;
        file[12] = 136; /* header length */
        spit(pbad, file, len);
        file[12] = 144;
        file[8] = DFX_STORE_VERSION + 1;
        spit(pnew, file, len);
    }
    /* temporary files: a dead writer's, a live one's */
    tmp_old = in_dir(dir, "000000000000000000000003.dfx.123.4.tmp");
    tmp_young = in_dir(dir, "000000000000000000000004.dfx.123.5.tmp");
    spit(tmp_old, (const unsigned char *)"partial", 7);
    spit(tmp_young, (const unsigned char *)"partial", 7);
    set_age(tmp_old, 2 * 86400);
    /* not ours: no magic; a symlink to an index file; another name */
    foreign = in_dir(dir, "111111111111111111111111.dfx");
    spit(foreign, (const unsigned char *)"not an index file", 17);
    set_age(foreign, 400 * 86400);
    link = in_dir(dir, "222222222222222222222222.dfx");
    free(outside);
    outside = in_dir(tmpdir, "outside.dfx");
    if (file) {
        file[8] = 3; /* an older format: would be removed if it were followed */
        spit(outside, file, len);
    }
    CHECK(symlink(outside, link) == 0);
    free(other_name);
    other_name = in_dir(dir, "notes.txt");
    spit(other_name, (const unsigned char *)"x", 1);
    set_age(other_name, 400 * 86400);

    CHECK_EQ(dfx_store_prune(d, &o, note_pruned, &got, &res), 0);
    CHECK_EQ(pruned_why(&got, base_of(pa1)), -1);
    CHECK_EQ(pruned_why(&got, base_of(pa2)), DFX_PRUNE_GONE);
    CHECK_EQ(pruned_why(&got, base_of(pa3)), DFX_PRUNE_CHANGED);
    CHECK_EQ(pruned_why(&got, base_of(pnone_old)), DFX_PRUNE_UNUSED);
    CHECK_EQ(pruned_why(&got, base_of(pnone_new)), -1);
    CHECK_EQ(pruned_why(&got, base_of(pold)), DFX_PRUNE_FORMAT);
    CHECK_EQ(pruned_why(&got, base_of(pbad)), DFX_PRUNE_DAMAGED);
    CHECK_EQ(pruned_why(&got, base_of(pnew)), -1);
    CHECK_EQ(pruned_why(&got, base_of(tmp_old)), DFX_PRUNE_TEMP);
    CHECK_EQ(got.n, 6);
    CHECK_EQ(res.removed, 6);
    CHECK_EQ(res.kept, 3); /* a1's, the recent one without a path, the newer format's */
    CHECK_EQ(res.failed, 0);
    CHECK(access(pa1, F_OK) == 0 && access(pnone_new, F_OK) == 0 && access(pnew, F_OK) == 0);
    CHECK(access(pa2, F_OK) < 0 && access(pa3, F_OK) < 0 && access(pnone_old, F_OK) < 0 &&
          access(pold, F_OK) < 0 && access(pbad, F_OK) < 0 && access(tmp_old, F_OK) < 0);
    CHECK(access(tmp_young, F_OK) == 0 && access(foreign, F_OK) == 0 &&
          access(outside, F_OK) == 0 && access(other_name, F_OK) == 0);
    {
        struct stat lst;
        CHECK(lstat(link, &lst) == 0 && S_ISLNK(lst.st_mode));
    }
    /* a second run finds nothing more */
    got.n = 0;
    CHECK_EQ(dfx_store_prune(d, &o, note_pruned, &got, &res), 0);
    CHECK_EQ(res.removed, 0);
    CHECK_EQ(res.kept, 3);
    /* without sources: the same files stay (the cap alone) */
    o.sources = false;
    set_age(pa1, 400 * 86400);
    CHECK_EQ(dfx_store_prune(d, &o, NULL, NULL, &res), 0);
    CHECK_EQ(res.removed, 0);
    free(file);
    free(a1); free(a2); free(a3); free(pa1); free(pa2); free(pa3);
    free(pnone_old); free(pnone_new); free(pold); free(pbad); free(pnew);
    free(tmp_old); free(tmp_young); free(foreign); free(link); free(outside); free(other_name);
out:
    dfx_store_dir_close(d);
    free(dir);
    free(arch);
    dfx_index_free(built);
    fixture_destroy(&f);
}

/* The size cap: least recently used first (mtime: a load bumps it), never
 * a file loaded in this process, never the one a save has just written;
 * down to 90% of the cap. Saves prune on their own once a cap is set. */
static void check_prune_size(uint64_t *s)
{
    struct fixture f;
    struct dfx_index *built, *ix = NULL;
    struct dfx_store_dir *d = NULL;
    struct dfx_store_key k[5];
    struct dfx_prune_result res;
    struct dfx_prune_opts o = {0};
    struct pruned got = {0};
    char *dir = in_dir(tmpdir, "cap"), *p[5] = {0};
    struct stat st;
    uint64_t size = 0, files, bytes;

    CHECK(fixture_init(&f, 300000, 1, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    CHECK(built && dir && dfx_store_dir_open(dir, &d) == 0);
    if (!built || !d)
        goto out;
    for (int i = 0; i < 5; i++) {
        k[i] = f.key;
        k[i].ino += (uint64_t)i + 1;
        dfx_store_path(d, &k[i], &p[i]);
    }
    for (int i = 0; i < 4; i++) {
        CHECK(dfx_store_save(d, &k[i], built, NULL) == 0);
        set_age(p[i], 400 - 100 * i); /* 0 the oldest */
    }
    CHECK(stat(p[0], &st) == 0);
    size = (uint64_t)st.st_size;
    /* a load bumps the mtime, and the loaded file stays open here */
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK_EQ(dfx_store_load(d, &k[0], ix, CHUNK, NULL, NULL, NULL), 0);
    CHECK(stat(p[0], &st) == 0 && st.st_mtime >= time(NULL) - 60);
    set_age(p[0], 1000); /* the oldest again, but open */
    o.max = size * 5 / 2; /* 4 files: over; 90%: 2.25 files */
    CHECK_EQ(dfx_store_prune(d, &o, note_pruned, &got, &res), 0);
    CHECK_EQ(res.removed, 2);
    CHECK_EQ(pruned_why(&got, base_of(p[1])), DFX_PRUNE_SIZE);
    CHECK_EQ(pruned_why(&got, base_of(p[2])), DFX_PRUNE_SIZE);
    CHECK(access(p[0], F_OK) == 0 && access(p[3], F_OK) == 0);
    CHECK_EQ(res.kept, 2);
    CHECK_EQ(res.kept_bytes, 2 * size);
    /* under the cap: nothing goes */
    CHECK_EQ(dfx_store_prune(d, &o, NULL, NULL, &res), 0);
    CHECK_EQ(res.removed, 0);

    /* saves keep to the cap by themselves: 3 files > 2.5 */
    dfx_store_dir_set_max(d, size * 5 / 2);
    dfx_store_dir_take_pruned(d, &files, &bytes);
    CHECK_EQ(files, 0);
    CHECK(dfx_store_save(d, &k[4], built, NULL) == 0); /* the newest, just written */
    set_age(p[4], 2000); /* even when made to look the oldest afterwards ... */
    CHECK(access(p[0], F_OK) == 0); /* open here */
    CHECK(access(p[3], F_OK) < 0);  /* the least recently used that could go */
    CHECK(access(p[4], F_OK) == 0);
    dfx_store_dir_take_pruned(d, &files, &bytes);
    CHECK_EQ(files, 1);
    CHECK_EQ(bytes, size);
    dfx_store_dir_take_pruned(d, &files, &bytes);
    CHECK_EQ(files, 0);
    /* ... a later save may remove it like any other */
    CHECK(dfx_store_save(d, &k[1], built, NULL) == 0);
    CHECK(access(p[4], F_OK) < 0 && access(p[1], F_OK) == 0 && access(p[0], F_OK) == 0);
    /* once the index lets go of its file, it can go too */
    dfx_index_free(ix);
    ix = NULL;
    set_age(p[0], 5000);
    CHECK_EQ(dfx_store_prune(d, &o, NULL, NULL, &res), 0);
    CHECK_EQ(res.removed, 0); /* 2 files fit */
    o.max = size * 3 / 2;
    CHECK_EQ(dfx_store_prune(d, &o, NULL, NULL, &res), 0);
    CHECK_EQ(res.removed, 1);
    CHECK(access(p[0], F_OK) < 0 && access(p[1], F_OK) == 0);
out:
    dfx_index_free(ix);
    for (int i = 0; i < 5; i++)
        free(p[i]);
    dfx_store_dir_close(d);
    free(dir);
    dfx_index_free(built);
    fixture_destroy(&f);
}

static void rm_rf_tmpdir(void)
{
    char cmd[300];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

int main(void)
{
    uint64_t s = 0x9e3779b97f4a7c15ull;
    const char *t = getenv("TMPDIR");

    snprintf(tmpdir, sizeof(tmpdir), "%s/test_dfx_store.XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    if (dfx_store_dir_open(tmpdir, &sdir) < 0) {
        perror("dfx_store_dir_open");
        return 1;
    }
    check_window_codec(&s);
    /* small and big files, raw and gzip, raw and compressed windows in
     * memory */
    check_round_trip(1u << 20, 1, DFX_RAW, false, &s);
    check_round_trip(3u << 20, 2, DFX_RAW, true, &s);
    check_round_trip(3u << 20, 0, DFX_RAW, false, &s); /* ~1.5 MiB file */
    check_round_trip(2u << 20, 2, DFX_GZIP, false, &s);
    check_concurrent(&s);
    check_stale(&s);
    check_foreign(&s);
    check_refusals(&s);
    check_damaged_files(&s);
    check_stored(&s);
    check_dirs();
    check_dir_swapped(&s);
    check_file_changed_while_loaded(&s);
    check_streaming_writer(&s);
    check_load_releases_windows(&s);
    check_path_recorded(&s);
    check_prune_sources(&s);
    check_prune_size(&s);
    dfx_store_dir_close(sdir);
    rm_rf_tmpdir();
    return check_exit("test_dfx_store");
}
