/*
 * dfx_store.c (the index file codec), window.c and the export/import half
 * of dfx.c, all in memory: saved indexes round-trip, load without touching
 * the archive, start readers near their offset, and are refused (never
 * trusted) when stale, truncated at any length, flipped anywhere, of
 * another version, or of another archive; the chunk CRC table round-trips
 * with them (and alone, for stored members) and is covered by the same
 * checks. Loaded indexes read their windows from the file's source on
 * demand: a file truncated or overwritten while loaded never yields wrong
 * bytes. Files are written through the codec's write callback into a
 * memory file (struct memfile) and read back through a byte source over it;
 * the directory around them is test_indexdir.c's.
 *
 * Threads never use CHECK (its counters are plain ints): they count their own
 * failures and the main thread checks the totals.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "check.h"
#include "dfx.h"
#include "dfx_fixture.h"
#include "dfx_internal.h"
#include "dfx_store.h"
#include "source.h"
#include "window.h"

#define THREADS 8

/* ---- a memory file: the write callback's target and a source over it ---- */

/* Bytes written through dfx_store_out (grown as needed), read back through
 * base: a load sees base.size (set by mf_src() before it), later reads see
 * the bytes as they are now (len may have shrunk: a truncated file). */
struct memfile {
    struct src base;
    unsigned char *p;
    size_t len;
    int fail_after; /* > 0: writes fail with -ENOSPC once this many bytes are in */
    int released;   /* release calls from loaded indexes */
};

static int64_t mf_pread(struct src *s, void *buf, size_t len, uint64_t off)
{
    struct memfile *m = (struct memfile *)s;

    if (off >= m->len)
        return 0;
    if (len > m->len - off)
        len = m->len - off;
    memcpy(buf, m->p + off, len);
    return (int64_t)len;
}

static void mf_free(struct src *s)
{
    (void)s; /* the memfile belongs to the test */
}

static const struct src_ops mf_ops = {mf_pread, mf_free, NULL};

static int mf_write(void *ctx, const void *buf, size_t len, uint64_t off)
{
    struct memfile *m = ctx;
    unsigned char *grown;

    if (m->fail_after > 0 && off + len > (uint64_t)m->fail_after)
        return -ENOSPC;
    if (off + len > m->len) {
        grown = realloc(m->p, (size_t)(off + len));
        if (!grown)
            return -ENOMEM;
        memset(grown + m->len, 0, (size_t)(off + len - m->len));
        m->p = grown;
        m->len = (size_t)(off + len);
    }
    memcpy(m->p + off, buf, len);
    return 0;
}

static void mf_release(void *arg)
{
    ((struct memfile *)arg)->released++;
}

/* Empty m, ready to be written. */
static struct dfx_store_out mf_out(struct memfile *m)
{
    free(m->p);
    m->p = NULL;
    m->len = 0;
    m->base.ops = &mf_ops;
    return (struct dfx_store_out){mf_write, m};
}

/* m as a source of its current length. */
static struct src *mf_src(struct memfile *m)
{
    m->base.ops = &mf_ops;
    m->base.size = m->len;
    return &m->base;
}

/* m's content replaced by len bytes of p. */
static void mf_set(struct memfile *m, const unsigned char *p, size_t len)
{
    struct dfx_store_out out = mf_out(m);

    if (len)
        mf_write(out.ctx, p, len, 0);
}

static unsigned char *mf_copy(const struct memfile *m)
{
    unsigned char *p = malloc(m->len ? m->len : 1);

    if (p && m->len)
        memcpy(p, m->p, m->len);
    return p;
}

/* ---- save and load through the codec ---- */

static int save(struct memfile *m, const struct fixture *f, struct dfx_index *ix,
                const struct dfx_crcs *crcs)
{
    struct dfx_store_out out = mf_out(m);

    return dfx_store_write(&f->key, ix, crcs, &out);
}

static int load(struct memfile *m, const struct fixture *f, struct dfx_index *ix, uint32_t chunk,
                const struct dfx_crcs *have, struct dfx_crcs **crcs, uint64_t *spacing)
{
    return dfx_store_load(mf_src(m), &f->key, ix, chunk, have, crcs, spacing,
                          ix ? mf_release : NULL, m);
}

/* Load m into a fresh index: the errno, and whether the fresh index kept
 * only its point 0 (no table came back, no release was called) on failure. */
static int try_load(struct memfile *m, struct fixture *f, bool *untouched)
{
    struct dfx_index *ix;
    struct dfx_crcs *t = (void *)1;
    int released = m->released, ret;

    if (dfx_index_new(&f->st, SPACING, &ix) < 0)
        return -999;
    ret = load(m, f, ix, CHUNK, NULL, &t, NULL);
    *untouched = dfx_index_points(ix) == 1 && dfx_index_total(ix) == UINT64_MAX && !t &&
                 m->released == released;
    free(t);
    dfx_index_free(ix);
    return ret;
}

/* ---- cases ---- */

static void check_window_codec(uint64_t *s)
{
    unsigned char *raw = make_data(WINDOW_SIZE, 2, s), back[WINDOW_SIZE], *z;
    uint32_t zlen;

    CHECK_EQ(window_deflate(raw, WINDOW_SIZE, &z, &zlen), 0);
    CHECK_EQ(window_inflate(z, zlen, back, WINDOW_SIZE), 0);
    CHECK(memcmp(raw, back, WINDOW_SIZE) == 0);
    CHECK_EQ(window_inflate(z, zlen, back, WINDOW_SIZE - 1), -EIO);
    z[zlen / 2] ^= 0x10;
    CHECK_EQ(window_inflate(z, zlen, back, WINDOW_SIZE), -EIO);
    free(z);
    CHECK_EQ(window_deflate(raw, 0, &z, &zlen), -EINVAL);
    CHECK(z == NULL);
    CHECK_EQ(window_deflate(raw, WINDOW_SIZE + 1, &z, &zlen), -EINVAL);

    /* Whichever library made them (ISA-L when built in), windows are zlib
     * streams: zlib reads ours back, ours reads zlib's, every kind of data
     * and lengths short of a whole window, and a stream that ends short or
     * whose Adler-32 is wrong is refused. */
    for (int kind = 0; kind < 4; kind++) {
        unsigned char *d = make_data(WINDOW_SIZE, kind, s), zb[WINDOW_SIZE + 1024];
        uint32_t len = kind == 3 ? WINDOW_SIZE - 1000 : WINDOW_SIZE;
        uLongf got = WINDOW_SIZE, zl = sizeof(zb);

        CHECK_EQ(window_deflate(d, len, &z, &zlen), 0);
        CHECK_EQ(uncompress(back, &got, z, zlen), Z_OK);
        CHECK(got == len && memcmp(back, d, len) == 0);
        CHECK_EQ(window_inflate(z, zlen - 1, back, len), -EIO); /* Adler-32 cut short */
        free(z);
        CHECK_EQ(compress2(zb, &zl, d, len, 1), Z_OK);
        memset(back, 0, sizeof(back));
        CHECK_EQ(window_inflate(zb, (uint32_t)zl, back, len), 0);
        CHECK(memcmp(back, d, len) == 0);
        CHECK_EQ(window_inflate(zb, (uint32_t)zl, back, len + 1), -EIO);
        zb[zl - 1] ^= 1; /* the Adler-32's last byte */
        CHECK_EQ(window_inflate(zb, (uint32_t)zl, back, len), -EIO);
        free(d);
    }
    free(raw);
}

/* Save, reload without a single read of the archive, and read correctly;
 * a read near the end starts from a point near the end. The file is
 * released once, when the index that loaded it goes. */
static void check_round_trip(size_t len, int kind, enum dfx_framing framing, bool zip_windows,
                             uint64_t *s)
{
    struct fixture f;
    struct memfile m = {0};
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
    CHECK_EQ(save(&m, &f, built, table), 0);

    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    count_reset(f.src);
    CHECK_EQ(load(&m, &f, ix, CHUNK, NULL, &got, NULL), 0);
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
    /* a second load replaces the points of the first (whose file stays
     * with the index for readers that may still use it) */
    CHECK_EQ(load(&m, &f, ix, CHUNK, NULL, &got, NULL), 0);
    CHECK(same_table(table, got));
    free(got);
    got = NULL;
    CHECK(same_points(built, ix));
    CHECK_EQ(random_extracts(ix, &f, s, 20), 0);
    CHECK_EQ(m.released, 0);
    dfx_index_free(ix);
    CHECK_EQ(m.released, 2); /* both loads' files, once each */
    /* the table the caller built itself from what it reads must be the
     * file's, else the file is for other content */
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK_EQ(load(&m, &f, ix, CHUNK, table, NULL, NULL), 0);
    dfx_index_free(ix);
    table->crc[table->count - 1] ^= 1;
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK_EQ(load(&m, &f, ix, CHUNK, table, &got, NULL), -ESTALE);
    CHECK(got == NULL && dfx_index_points(ix) == 1);
    table->crc[table->count - 1] ^= 1;
    dfx_index_free(ix);
    /* a table of another chunk size is stale: the file is rebuilt */
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK_EQ(load(&m, &f, ix, CHUNK / 2, NULL, &got, NULL), -ESTALE);
    CHECK(got == NULL && dfx_index_points(ix) == 1);
    dfx_index_free(ix);
    CHECK_EQ(m.released, 3); /* the refused loads kept nothing */
    if (framing == DFX_RAW) {
        /* saved without a table: loads, with none (the zip CRC-32 in the
         * key tells a rewritten member) */
        CHECK_EQ(save(&m, &f, built, NULL), 0);
        CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
        got = (void *)1;
        CHECK_EQ(load(&m, &f, ix, CHUNK, NULL, &got, NULL), 0);
        CHECK(got == NULL);
        dfx_index_free(ix);
    } else {
        /* a gzip member's file is never written without its table */
        CHECK_EQ(save(&m, &f, built, NULL), -EINVAL);
    }
    dfx_index_free(built);
out:
    free(m.p);
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
    struct memfile m = {0};
    struct dfx_index *built, *ix;
    struct worker w[THREADS];
    pthread_t t[THREADS];
    int bad = 0;

    CHECK(fixture_init(&f, 3u << 20, 2, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    CHECK(built && save(&m, &f, built, NULL) == 0);
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){ix, &f, rnd(s) | 1, 0};
        pthread_create(&t[i], NULL, worker_main, &w[i]);
        if (i == THREADS / 2) /* replaces whatever the workers recorded so far */
            CHECK_EQ(load(&m, &f, ix, CHUNK, NULL, NULL, NULL), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        bad += w[i].bad;
    }
    CHECK_EQ(bad, 0);
    dfx_index_free(ix);
    dfx_index_free(built);
    free(m.p);
    fixture_destroy(&f);
}

/* Any change of the key makes the file stale (and gives it another name);
 * the recorded path does not change the name. Another spacing is not
 * stale (its points are valid whatever the spacing): the file is loaded as
 * it is, and says which spacing it was built with. */
static void check_stale(uint64_t *s)
{
    struct fixture f;
    struct memfile m = {0};
    struct dfx_index *built, *ix;
    struct dfx_store_key k;
    char n1[DFX_STORE_NAME_MAX], n2[DFX_STORE_NAME_MAX];
    bool untouched;

    CHECK(fixture_init(&f, 1u << 20, 1, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    CHECK(built && save(&m, &f, built, NULL) == 0);
    k = f.key;
    dfx_store_name(&k, n1);
    CHECK_EQ(strlen(n1), DFX_STORE_NAME_LEN);
    CHECK(dfx_store_is_name(n1));
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
        dfx_store_name(&f.key, n2);
        CHECK(strcmp(n1, n2) != 0);
        /* the same bytes under the new key: only the content can tell */
        CHECK_EQ(try_load(&m, &f, &untouched), -ESTALE);
        CHECK(untouched);
    }
    f.key = k;
    f.key.path = "/somewhere/else.npz";
    dfx_store_name(&f.key, n2);
    CHECK(strcmp(n1, n2) == 0); /* the path is not part of the key */
    f.key = k;
    CHECK_EQ(dfx_index_new(&f.st, SPACING * 2, &ix), 0);
    {
        uint64_t built_with = 0;
        CHECK_EQ(load(&m, &f, ix, CHUNK, NULL, NULL, &built_with), 0);
        CHECK_EQ(built_with, SPACING);
        CHECK(built && same_points(built, ix));
        CHECK_EQ(random_extracts(ix, &f, s, 5), 0);
    }
    dfx_index_free(ix);
    CHECK_EQ(try_load(&m, &f, &untouched), 0);
    dfx_index_free(built);
    free(m.p);
    fixture_destroy(&f);
}

/* Names: what dfx_store_is_name() takes (a prefix of 24 lowercase hex
 * digits and ".dfx"), and what it does not. */
static void check_names(void)
{
    CHECK(dfx_store_is_name("0123456789abcdef01234567.dfx"));
    CHECK(dfx_store_is_name("0123456789abcdef01234567.dfx.123.4.tmp")); /* a prefix */
    CHECK(!dfx_store_is_name("0123456789abcdef01234567.dfy"));
    CHECK(!dfx_store_is_name("0123456789ABCDEF01234567.dfx"));
    CHECK(!dfx_store_is_name("0123456789abcdef0123456.dfx"));
    CHECK(!dfx_store_is_name("0123456789abcdef0123456g.dfx"));
    CHECK(!dfx_store_is_name(""));
}

/* Truncated at every length, one flipped bit at every byte, other versions,
 * broken structure behind a valid checksum: always refused, index untouched. */
static void check_damaged_files(uint64_t *s)
{
    struct fixture f;
    struct memfile m = {0};
    struct dfx_index *built;
    unsigned char *orig = NULL, *p = NULL;
    size_t len = 0;
    struct dfx_crcs *table;
    int accepted = 0, touched = 0;
    bool untouched;

    CHECK(fixture_init(&f, 300000, 3, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    table = table_of(&f, s);
    CHECK(built && dfx_index_points(built) >= 3);
    CHECK(built && table && save(&m, &f, built, table) == 0);
    len = m.len;
    orig = mf_copy(&m);
    CHECK(orig && built && len > 144 + 3 * 48 + 4 && dfx_index_points(built) >= 3);
    if (!orig || !built || len <= 144 + 3 * 48 + 4 || dfx_index_points(built) < 3)
        goto out;
    if (getenv("DFX_STORE_VERBOSE"))
        fprintf(stderr, "index file: %zu bytes, %zu points\n", len, dfx_index_points(built));
    for (size_t cut = 0; cut < len; cut++) {
        mf_set(&m, orig, cut);
        accepted += try_load(&m, &f, &untouched) == 0;
        touched += !untouched;
    }
    CHECK_EQ(accepted, 0);
    CHECK_EQ(touched, 0);
    p = malloc(len);
    for (size_t at = 0; p && at < len; at++) {
        memcpy(p, orig, len);
        p[at] ^= (unsigned char)(1u << (rnd(s) % 8));
        mf_set(&m, p, len);
        accepted += try_load(&m, &f, &untouched) == 0;
        touched += !untouched;
    }
    CHECK_EQ(accepted, 0);
    CHECK_EQ(touched, 0);
    if (!p)
        goto out;

    /* another version (3: before the path was recorded), with a valid
     * checksum: stale */
    for (unsigned v = 3; v <= 5; v += 2) {
        memcpy(p, orig, len);
        p[8] = (unsigned char)v;
        fix_crc(p, len);
        mf_set(&m, p, len);
        CHECK_EQ(try_load(&m, &f, &untouched), -ESTALE);
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
            mf_set(&m, p, len);
            CHECK_EQ(try_load(&m, &f, &untouched), -EBADMSG);
            CHECK(untouched);
        }
        memcpy(p, orig, len);
        p[toff + 1] = 0; p[toff + 2] = 1; /* chunk 64 KiB: 5 chunks, not 3 */
        fix_crc(p, len);
        mf_set(&m, p, len);
        CHECK_EQ(try_load(&m, &f, &untouched), -EBADMSG);
    }
    /* bad magic */
    memcpy(p, orig, len);
    p[0] = 'X';
    fix_crc(p, len);
    mf_set(&m, p, len);
    CHECK_EQ(try_load(&m, &f, &untouched), -EBADMSG);
    /* points out of order (swap out of points 1 and 2) */
    memcpy(p, orig, len);
    {
        size_t poff = (size_t)(p[56] | p[57] << 8 | p[58] << 16 | (size_t)p[59] << 24);
        unsigned char tmp[8];
        memcpy(tmp, p + poff + 48, 8);
        memcpy(p + poff + 48, p + poff + 96, 8);
        memcpy(p + poff + 96, tmp, 8);
        fix_crc(p, len);
        mf_set(&m, p, len);
        CHECK_EQ(try_load(&m, &f, &untouched), -EBADMSG);
        CHECK(untouched);
        /* a window offset past the end, or into the point table */
        memcpy(p, orig, len);
        put64(p + poff + 48 + 24, len);
        fix_crc(p, len);
        mf_set(&m, p, len);
        CHECK_EQ(try_load(&m, &f, &untouched), -EBADMSG);
        memcpy(p, orig, len);
        put64(p + poff + 48 + 24, poff - 1);
        fix_crc(p, len);
        mf_set(&m, p, len);
        CHECK_EQ(try_load(&m, &f, &untouched), -EBADMSG);
        /* a window offset before the windows (in the name) */
        memcpy(p, orig, len);
        put64(p + poff + 48 + 24, 136);
        fix_crc(p, len);
        mf_set(&m, p, len);
        CHECK_EQ(try_load(&m, &f, &untouched), -EBADMSG);
        /* non-zero padding after the name */
        memcpy(p, orig, len);
        p[136 + 5] = 1;
        fix_crc(p, len);
        mf_set(&m, p, len);
        CHECK_EQ(try_load(&m, &f, &untouched), -EBADMSG);
        /* a point count that does not fit the file */
        memcpy(p, orig, len);
        put64(p + 40, (uint64_t)1 << 60);
        fix_crc(p, len);
        mf_set(&m, p, len);
        CHECK_EQ(try_load(&m, &f, &untouched), -EBADMSG);
        /* a point past the end of the stream */
        memcpy(p, orig, len);
        put64(p + poff + 48 + 8, f.clen + 1);
        fix_crc(p, len);
        mf_set(&m, p, len);
        CHECK_EQ(try_load(&m, &f, &untouched), -EBADMSG);
    }
    /* and the original is fine */
    mf_set(&m, orig, len);
    CHECK_EQ(try_load(&m, &f, &untouched), 0);
out:
    free(p);
    free(orig);
    free(m.p);
    free(table);
    dfx_index_free(built);
    fixture_destroy(&f);
}

/* A stored member's file: the table alone, and only for that member. */
static void check_stored(uint64_t *s)
{
    struct fixture f;
    struct memfile m = {0};
    struct dfx_crcs *table, *got = NULL, *other;
    struct dfx_index *ix;
    unsigned char *orig, *p;
    size_t len = 0;
    int accepted = 0;

    CHECK(fixture_init(&f, 1000000, 0, DFX_RAW, s) == 0);
    f.key.stored_size = f.len; /* stored: as many bytes as the data */
    table = table_of(&f, s);
    CHECK(table != NULL);
    if (!table)
        goto out;
    CHECK_EQ(save(&m, &f, NULL, NULL), -EINVAL);
    CHECK_EQ(dfx_crcs_new(f.len - 1, CHUNK, &other), 0);
    CHECK_EQ(save(&m, &f, NULL, other), -EINVAL); /* size != stored */
    free(other);
    CHECK_EQ(save(&m, &f, NULL, table), 0);
    CHECK_EQ(load(&m, &f, NULL, CHUNK, NULL, &got, NULL), 0);
    CHECK(same_table(table, got));
    free(got);
    got = NULL;
    CHECK_EQ(load(&m, &f, NULL, CHUNK * 2, NULL, &got, NULL), -ESTALE);
    CHECK(got == NULL);
    /* not a deflate member's file: no points to load (spacing 0: stale) */
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK_EQ(load(&m, &f, ix, CHUNK, NULL, &got, NULL), -ESTALE);
    CHECK(got == NULL && dfx_index_points(ix) == 1);
    dfx_index_free(ix);
    CHECK_EQ(m.released, 0);
    /* every flipped byte is refused */
    len = m.len;
    orig = mf_copy(&m);
    p = orig ? malloc(len) : NULL;
    for (size_t at = 0; p && at < len; at++) {
        memcpy(p, orig, len);
        p[at] ^= (unsigned char)(1u << (rnd(s) % 8));
        mf_set(&m, p, len);
        accepted += load(&m, &f, NULL, CHUNK, NULL, &got, NULL) == 0;
        free(got);
        got = NULL;
    }
    CHECK(p != NULL);
    CHECK_EQ(accepted, 0);
    /* a deflate member's file under a stored member's key is refused too */
    if (p) {
        struct dfx_index *built = built_index(&f, false);
        f.key.stored_size = f.clen;
        CHECK(built && save(&m, &f, built, NULL) == 0);
        CHECK_EQ(load(&m, &f, NULL, CHUNK, NULL, &got, NULL), -ESTALE);
        dfx_index_free(built);
    }
    free(p);
    free(orig);
out:
    free(m.p);
    free(table);
    fixture_destroy(&f);
}

/* Another archive's file: refused. */
static void check_foreign(uint64_t *s)
{
    struct fixture a, b;
    struct memfile m = {0};
    struct dfx_index *ia;
    bool untouched;

    CHECK(fixture_init(&a, 1u << 20, 1, DFX_RAW, s) == 0);
    CHECK(fixture_init(&b, 1u << 20, 1, DFX_RAW, s) == 0);
    b.key.ino++;
    ia = built_index(&a, false);
    CHECK(ia && save(&m, &a, ia, NULL) == 0);
    CHECK_EQ(try_load(&m, &b, &untouched), -ESTALE);
    CHECK(untouched);
    CHECK_EQ(try_load(&m, &a, &untouched), 0);
    free(m.p);
    dfx_index_free(ia);
    fixture_destroy(&a);
    fixture_destroy(&b);
}

/* ---- a fetch source in memory, for dfx_index_import() ---- */

struct memfetch {
    unsigned char *p;
    size_t len;
    int released;
    size_t reads;
};

static int memfetch_read(void *ctx, unsigned char *buf, uint32_t len, uint64_t off)
{
    struct memfetch *m = ctx;

    m->reads++;
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
            window_deflate(raw, len, &z, &zlen) < 0)
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

/* Incomplete or damaged indexes are not written; import checks its input,
 * replaces what the index had (reader-grown points included), and refuses
 * a total the index knows to be different. */
static void check_refusals(uint64_t *s)
{
    struct fixture f;
    struct memfile file = {0};
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
    CHECK_EQ(save(&file, &f, ix, NULL), -EAGAIN);
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

    /* a damaged stream (the zip CRC does not match): never written */
    f.st.crc ^= 1;
    built = built_index(&f, false);
    CHECK(built && dfx_index_error(built) == -EIO);
    CHECK(built && save(&file, &f, built, NULL) == -EIO);
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
    free(file.p);
    fixture_destroy(&f);
}

/* A write callback that fails: the writer says so, at any point of the
 * file (the windows, the tables, the header at the end). */
static void check_write_errors(uint64_t *s)
{
    struct fixture f;
    struct memfile m = {0};
    struct dfx_index *built;
    struct dfx_crcs *table;
    size_t full;
    int wrong = 0;

    CHECK(fixture_init(&f, 1u << 20, 2, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    table = table_of(&f, s);
    CHECK(built && table && save(&m, &f, built, table) == 0);
    full = m.len;
    for (size_t cut = 1; built && table && cut < full; cut += 1 + cut / 3) {
        m.fail_after = (int)cut;
        wrong += save(&m, &f, built, table) != -ENOSPC;
    }
    m.fail_after = 0;
    CHECK_EQ(wrong, 0);
    /* the header goes last: a file whose tables could not be written has none */
    m.fail_after = (int)full - 5;
    CHECK_EQ(save(&m, &f, built, table), -ENOSPC);
    CHECK(m.len < 8 || memcmp(m.p, "NPYFSIDX", 8) != 0);
    m.fail_after = 0;
    free(m.p);
    free(table);
    dfx_index_free(built);
    fixture_destroy(&f);
}

/* Change the loaded file in place (the bytes the index keeps reading):
 * truncate it, or overwrite its windows with garbage or with another
 * point's valid window. Every read stays exact (or fails), and windows
 * that no longer read back are dropped. */
static void check_file_changed_while_loaded(uint64_t *s)
{
    struct fixture f;
    struct memfile m = {0};
    struct dfx_index *built, *ix;
    size_t len = 0, usable0, usable1;
    uint64_t wb;
    unsigned char *orig;

    CHECK(fixture_init(&f, 3u << 20, 2, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    CHECK(built && save(&m, &f, built, NULL) == 0);
    len = m.len;
    orig = mf_copy(&m);
    for (int how = 0; orig && how < 3; how++) {
        mf_set(&m, orig, len);
        CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
        CHECK_EQ(load(&m, &f, ix, CHUNK, NULL, NULL, NULL), 0);
        dfx_index_memory(ix, &usable0, &wb);
        CHECK(usable0 > 10);
        CHECK_EQ(wb, 0); /* windows stay in the file */
        if (how == 0) {
            m.len = 200;
        } else {
            /* the windows lie between the padded name and the point table */
            size_t poff = (size_t)(orig[56] | orig[57] << 8 | orig[58] << 16 |
                                   (size_t)orig[59] << 24);
            if (how == 1) {
                for (size_t i = 144; i < poff; i++)
                    m.p[i] = (unsigned char)rnd(s);
            } else {
                /* every window shifted to where another one was: each is a
                 * valid zlib stream, but not the right history */
                size_t half = (poff - 144) / 2;
                memcpy(m.p + 144, orig + 144 + half, poff - 144 - half);
                memcpy(m.p + 144 + (poff - 144 - half), orig + 144, half);
            }
        }
        CHECK_EQ(random_extracts(ix, &f, s, 40), 0);
        dfx_index_memory(ix, &usable1, &wb);
        CHECK(usable1 < usable0); /* bad windows were dropped */
        dfx_index_free(ix);
    }
    free(orig);
    free(m.p);
    dfx_index_free(built);
    fixture_destroy(&f);
}

/* The indexing pass writes windows to the file as it records its points
 * (a sink): the twin holds none in memory, and the finished file loads and
 * reads like one written at the end. A gzip member's file needs its table:
 * one without is refused when written, and stale when found. */
static void check_streaming_writer(uint64_t *s)
{
    struct fixture f;
    struct memfile m = {0};
    struct dfx_store_writer *w = NULL;
    struct dfx_index *twin, *ix;
    struct dfx_reader *r;
    struct dfx_crcs *table, *got = NULL;
    struct dfx_sink sink;
    struct dfx_store_out out;
    unsigned char *buf = malloc(1 << 20), *orig, *p;
    size_t usable, len = 0;
    uint64_t wb, most = 0;
    int64_t n;

    for (int framing = 0; framing < 2; framing++) {
        CHECK(fixture_init(&f, 3u << 20, 3, framing ? DFX_GZIP : DFX_RAW, s) == 0);
        table = table_of(&f, s);
        out = mf_out(&m);
        CHECK_EQ(dfx_store_writer_new(&f.key, SPACING, &out, &w), 0);
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
        /* ~23 block boundaries: zlib records ~22 points, ISA-L (which
         * takes the first boundary it can stop at) a few fewer */
        CHECK(dfx_index_points(twin) > 15);
        if (framing) /* no table: refused */
            CHECK_EQ(dfx_store_writer_end(w, twin, NULL), -EINVAL);
        else
            CHECK_EQ(dfx_store_writer_end(w, twin, table), 0);
        dfx_store_writer_free(w);
        if (!framing) {
            CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
            CHECK_EQ(load(&m, &f, ix, CHUNK, NULL, &got, NULL), 0);
            CHECK(same_table(table, got));
            CHECK(same_points(twin, ix));
            CHECK_EQ(random_extracts(ix, &f, s, 30), 0);
            free(got);
            got = NULL;
            dfx_index_free(ix);
        }
        dfx_index_free(twin);
        free(table);
        fixture_destroy(&f);
    }

    /* a gzip member's file without a table (as an older npyfs wrote them
     * at unmount): stale, never used */
    CHECK(fixture_init(&f, 1u << 20, 1, DFX_GZIP, s) == 0);
    twin = built_index(&f, false);
    table = table_of(&f, s);
    CHECK(twin && save(&m, &f, twin, table) == 0);
    len = m.len;
    orig = mf_copy(&m);
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
        mf_set(&m, p, nlen);
        CHECK_EQ(try_load(&m, &f, &untouched), -ESTALE);
        CHECK(untouched);
        mf_set(&m, orig, len);
        CHECK_EQ(try_load(&m, &f, &untouched), 0);
    }
    free(p);
    free(orig);
    free(m.p);
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
    struct memfile m = {0};
    struct dfx_budget budget = {.limit = 64u << 20};
    struct dfx_index *built, *ix;
    unsigned char buf[64];
    size_t usable;
    uint64_t wb;

    CHECK(fixture_init(&f, 3u << 20, 2, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    CHECK(built && save(&m, &f, built, NULL) == 0);
    f.st.budget = &budget;
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK_EQ(dfx_extract(ix, f.len - 100, buf, 64), 64); /* records points */
    dfx_index_memory(ix, &usable, &wb);
    CHECK(wb > 0 && usable > 10);
    CHECK_EQ(atomic_load(&budget.used), wb);
    CHECK_EQ(load(&m, &f, ix, CHUNK, NULL, NULL, NULL), 0);
    dfx_index_memory(ix, &usable, &wb);
    CHECK_EQ(wb, 0);
    CHECK_EQ(atomic_load(&budget.used), 0);
    CHECK(same_points(built, ix));
    CHECK_EQ(random_extracts(ix, &f, s, 20), 0);
    dfx_index_free(ix);
    CHECK_EQ(atomic_load(&budget.used), 0);
    dfx_index_free(built);
    free(m.p);
    fixture_destroy(&f);
}

/* A fresh index of f's stream with the points pts imported (windows
 * through fetch). */
static struct dfx_index *imported(struct fixture *f, const struct dfx_xpoint *pts, size_t n,
                                  uint64_t total, const struct dfx_fetch *fetch)
{
    struct dfx_index *ix = NULL;

    CHECK_EQ(dfx_index_new(&f->st, SPACING, &ix), 0);
    CHECK(ix && dfx_index_import(ix, pts, n, total, fetch) == 0);
    return ix;
}

/* dfx_index_cache_windows(): the windows of an imported index are read
 * into memory within max and the budget (charged, and given back with the
 * index), then readers start from them without a fetch; a stop flag
 * stops it; a window that is bad in the file is as bad in memory: a
 * reader drops it at first use and reads stay exact. */
static void check_cache_windows(uint64_t *s)
{
    struct fixture f;
    struct dfx_budget budget = {.limit = 64u << 20};
    struct dfx_index *built, *ix;
    struct dfx_xpoint *pts = NULL;
    struct memfetch mf = {0};
    struct dfx_fetch fetch = {memfetch_read, NULL, &mf};
    unsigned char raw[DFX_WINDOW_SIZE];
    size_t n = 0, wins = 0, second = 0, usable;
    uint64_t total = 0, wb, first2 = 0;
    uint32_t len;
    atomic_bool stop = true;

    CHECK(fixture_init(&f, 3u << 20, 2, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    CHECK(built && dfx_index_export(built, &pts, &n, &total) == 0 && n >= 4);
    if (!built || n < 4 || windows_to_mem(built, pts, n, &mf) < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (!pts[i].window_len)
            continue;
        if (++wins <= 2)
            first2 += pts[i].zlen;
        if (wins == 2)
            second = i;
    }
    f.st.budget = &budget;

    ix = imported(&f, pts, n, total, &fetch);
    mf.reads = 0;
    CHECK_EQ(dfx_index_cache_windows(ix, UINT64_MAX, NULL), wins);
    CHECK_EQ(mf.reads, wins);
    dfx_index_memory(ix, &usable, &wb);
    CHECK(wb > 0 && usable == n);
    CHECK_EQ(atomic_load(&budget.used), wb);
    CHECK_EQ(dfx_index_cache_windows(ix, UINT64_MAX, NULL), 0); /* all in already */
    mf.reads = 0;
    CHECK_EQ(random_extracts(ix, &f, s, 20), 0);
    CHECK_EQ(mf.reads, 0); /* not one fetch */
    dfx_index_free(ix);
    CHECK_EQ(atomic_load(&budget.used), 0);

    ix = imported(&f, pts, n, total, &fetch); /* within max */
    CHECK_EQ(dfx_index_cache_windows(ix, first2, NULL), 2);
    CHECK_EQ(atomic_load(&budget.used), first2);
    CHECK_EQ(dfx_index_cache_windows(ix, 0, &stop), 0); /* stopped */
    mf.reads = 0;
    CHECK_EQ(random_extracts(ix, &f, s, 20), 0);
    CHECK(mf.reads > 0); /* the other windows are fetched */
    dfx_index_free(ix);

    budget.limit = first2; /* within the budget */
    ix = imported(&f, pts, n, total, &fetch);
    CHECK_EQ(dfx_index_cache_windows(ix, UINT64_MAX, NULL), 2);
    CHECK_EQ(atomic_load(&budget.used), first2);
    dfx_index_free(ix);
    budget.limit = 64u << 20;

    mf.p[pts[second].woff + pts[second].zlen / 2] ^= 0x55; /* bad in the file */
    ix = imported(&f, pts, n, total, &fetch);
    CHECK_EQ(dfx_index_cache_windows(ix, UINT64_MAX, NULL), wins);
    CHECK_EQ(dfx_index_window(ix, pts[second].out, raw, &len), -EIO);
    CHECK_EQ(dfx_index_window(ix, pts[second].out, raw, &len), -ENOENT); /* dropped */
    dfx_index_memory(ix, &usable, &wb);
    CHECK_EQ(usable, n - 1);
    CHECK_EQ(atomic_load(&budget.used), wb); /* its copy given back */
    CHECK_EQ(random_extracts(ix, &f, s, 20), 0);
    dfx_index_free(ix);
    CHECK_EQ(atomic_load(&budget.used), 0);
out:
    free(pts);
    free(mf.p);
    dfx_index_free(built);
    fixture_destroy(&f);
}

/* Files record the archive's path (not part of the key: another path, or
 * none, finds the same file); a path too long is not recorded. */
static void check_path_recorded(uint64_t *s)
{
    struct fixture f;
    struct memfile m = {0};
    struct dfx_index *built, *ix;
    char *longpath = malloc(DFX_STORE_PATH_MAX + 2);
    const char *path = "/data/runs/ab.npz"; /* 17 bytes: padded to 24 */

    CHECK(fixture_init(&f, 1u << 20, 1, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    f.key.path = path;
    CHECK(built && save(&m, &f, built, NULL) == 0);
    CHECK(m.len > 152 + 16);
    if (m.len > 152 + 16) {
        CHECK_EQ(m.p[8], DFX_STORE_VERSION);
        CHECK_EQ(m.p[12], 144); /* header length */
        CHECK_EQ(m.p[136], strlen(path)); /* path length */
        CHECK(memcmp(m.p + 144, "x.npy\0\0\0", 8) == 0); /* name, padded */
        CHECK(memcmp(m.p + 152, path, strlen(path)) == 0);
        CHECK(memcmp(m.p + 152 + strlen(path), "\0\0\0\0\0\0\0", 7) == 0);
    }
    /* loaded under a key with another path (or none) all the same */
    f.key.path = "/elsewhere/b.npz";
    CHECK_EQ(dfx_index_new(&f.st, SPACING, &ix), 0);
    CHECK_EQ(load(&m, &f, ix, CHUNK, NULL, NULL, NULL), 0);
    dfx_index_free(ix);
    /* too long: not recorded, the file is still written */
    if (longpath) {
        memset(longpath, 'a', DFX_STORE_PATH_MAX + 1);
        longpath[0] = '/';
        longpath[DFX_STORE_PATH_MAX + 1] = '\0';
        f.key.path = longpath;
        CHECK(built && save(&m, &f, built, NULL) == 0);
        CHECK(m.len > 144 && m.p[136] == 0 && m.p[137] == 0);
    }
    f.key.path = NULL;
    free(longpath);
    free(m.p);
    dfx_index_free(built);
    fixture_destroy(&f);
}

/* What a file says about itself (for pruning): version, member, recorded
 * path, the archive its key names; only the magic for another version; a
 * header that does not hold together, or no magic at all, said so. */
static void check_peek(uint64_t *s)
{
    struct fixture f;
    struct memfile m = {0};
    struct dfx_index *built;
    struct dfx_store_info info;
    unsigned char *orig;
    size_t len;

    CHECK(fixture_init(&f, 300000, 1, DFX_RAW, s) == 0);
    built = built_index(&f, false);
    f.key.path = "/data/a.npz";
    CHECK(built && save(&m, &f, built, NULL) == 0);
    len = m.len;
    orig = mf_copy(&m);
    CHECK(dfx_store_has_magic(mf_src(&m)));
    CHECK_EQ(dfx_store_peek(mf_src(&m), &info), 0);
    CHECK_EQ(info.version, DFX_STORE_VERSION);
    CHECK(info.member && info.member_len == 5 && strcmp(info.member, "x.npy") == 0);
    CHECK(info.path && strcmp(info.path, "/data/a.npz") == 0);
    CHECK(info.dev == f.key.dev && info.ino == f.key.ino && info.size == f.key.size &&
          info.mtime_sec == f.key.mtime_sec && info.mtime_nsec == f.key.mtime_nsec);
    dfx_store_info_clear(&info);
    CHECK(info.member == NULL && info.path == NULL);
    if (orig && len > 200) {
        /* a NUL inside the path: no path to check */
        m.p[152 + 3] = 0;
        CHECK_EQ(dfx_store_peek(mf_src(&m), &info), 0);
        CHECK(info.member != NULL && info.path == NULL);
        dfx_store_info_clear(&info);
        /* an older version: the version alone */
        mf_set(&m, orig, len);
        m.p[8] = 3;
        CHECK_EQ(dfx_store_peek(mf_src(&m), &info), 0);
        CHECK(info.version == 3 && info.member == NULL);
        /* a header of this version that does not hold together */
        mf_set(&m, orig, len);
        m.p[12] = 136;
        CHECK_EQ(dfx_store_peek(mf_src(&m), &info), -EBADMSG);
        CHECK(info.member == NULL && info.path == NULL);
        mf_set(&m, orig, len);
        m.len = 100; /* too short for a header */
        CHECK_EQ(dfx_store_peek(mf_src(&m), &info), -EBADMSG);
        /* not ours */
        mf_set(&m, orig, len);
        m.p[0] = 'X';
        CHECK(!dfx_store_has_magic(mf_src(&m)));
        CHECK_EQ(dfx_store_peek(mf_src(&m), &info), -ENOENT);
        m.len = 10;
        memcpy(m.p, "NPYFSIDX", 8); /* the magic, but no version: ours, cut short */
        CHECK(dfx_store_has_magic(mf_src(&m)));
        CHECK_EQ(dfx_store_peek(mf_src(&m), &info), -EBADMSG);
        /* the whole file against its checksum */
        mf_set(&m, orig, len);
        CHECK_EQ(dfx_store_verify(mf_src(&m)), 0);
        m.p[len / 2] ^= 0x40;
        CHECK_EQ(dfx_store_verify(mf_src(&m)), -EBADMSG);
        mf_set(&m, orig, len);
        m.p[len - 1] ^= 0x01; /* the checksum itself */
        CHECK_EQ(dfx_store_verify(mf_src(&m)), -EBADMSG);
        m.len = 40;
        CHECK_EQ(dfx_store_verify(mf_src(&m)), -EBADMSG);
    }
    f.key.path = NULL;
    free(orig);
    free(m.p);
    dfx_index_free(built);
    fixture_destroy(&f);
}

int main(void)
{
    uint64_t s = 0x9e3779b97f4a7c15ull;

    check_window_codec(&s);
    check_names();
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
    check_cache_windows(&s);
    check_write_errors(&s);
    check_damaged_files(&s);
    check_stored(&s);
    check_file_changed_while_loaded(&s);
    check_streaming_writer(&s);
    check_load_releases_windows(&s);
    check_path_recorded(&s);
    check_peek(&s);
    return check_exit("test_dfx_store");
}
