/*
 * Unit tests for dfx_isal.c's marking decoder (dfx_isal_inflate_mark()).
 *
 * For many raw deflate streams (zlib levels 0-9 and its strategies, stored,
 * fixed-Huffman and empty blocks, tiny and large outputs, random and
 * compressible data, streams written by gzip(1) and by Python's zlib), a
 * decoder records marks every `spacing` bytes while its caller feeds it
 * input and output in pieces of varying size. Each mark must be:
 * (a) a block boundary that zlib's inflate(Z_BLOCK) also reports, at or past
 *     the wanted offset, with the 32 KiB of output before it as its window;
 * (b) a place where a fresh zlib decoder (inflatePrime + dictionary) and a
 *     fresh ISA-L decoder (dfx_isal_start_at()) reproduce the output after it;
 * and (c) marking must not change the main decoder's output.
 * The check inside the decoder must reject boundaries reported a few bits
 * off (dfx_isal_test_skew()), and (b) must catch them when the check is off.
 * Where no block is shorter than a header step, each mark must also be the
 * first boundary at or past its want, whatever the block kinds: the decoder
 * stops at every block's end (bfinal forced, dfx_isal.c).
 *
 * Without ISA-L the API reports -EOPNOTSUPP, which is all there is to test.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "dfx_isal.h"

#ifdef NPYFS_HAVE_ISAL

/* ------------------------------------------------------------- inputs --- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

enum kind { RANDOM, TEXT, WALK, ZEROS };

/* len bytes of one kind of data: incompressible, word soup, float64 random
 * walk (what scripts/bench uses), or zeros. */
static unsigned char *make_data(enum kind k, size_t len)
{
    static const char *words[] = {"deflate ", "block ", "window ", "the ", "access ", "point ",
                                  "numpy ",   "array ", "of ",     "a ",   "zlib\n",  "ISA-L "};
    unsigned char *p = malloc(len ? len : 1);
    double x = 0;

    for (size_t i = 0; i < len;) {
        switch (k) {
        case RANDOM:
            p[i++] = (unsigned char)rnd();
            break;
        case TEXT: {
            const char *w = words[rnd() % 12];
            while (*w && i < len)
                p[i++] = (unsigned char)*w++;
            break;
        }
        case WALK: {
            unsigned char b[8];
            x += ((double)(rnd() % 2001) - 1000.0) * 1e-5;
            memcpy(b, &x, 8);
            for (int j = 0; j < 8 && i < len; j++)
                p[i++] = b[j];
            break;
        }
        case ZEROS:
            p[i++] = 0;
            break;
        }
    }
    return p;
}

/* Raw deflate of data with zlib; flush (Z_SYNC_FLUSH, Z_FULL_FLUSH,
 * Z_PARTIAL_FLUSH, Z_BLOCK) every `every` bytes if every > 0. */
static unsigned char *deflate_raw(const unsigned char *data, size_t len, int level, int strategy,
                                  int flush, size_t every, size_t *out_len)
{
    z_stream zs;
    size_t cap = len + len / 8 + 4096 + (every ? (len / every + 1) * 16 : 0);
    unsigned char *out = malloc(cap);
    size_t pos = 0;
    int ret;

    memset(&zs, 0, sizeof(zs));
    if (deflateInit2(&zs, level, Z_DEFLATED, -15, 8, strategy) != Z_OK)
        abort();
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    do {
        size_t n = every ? every : len;
        if (n > len - pos)
            n = len - pos;
        zs.next_in = (Bytef *)data + pos;
        zs.avail_in = (uInt)n;
        pos += n;
        ret = deflate(&zs, pos == len ? Z_FINISH : (every ? flush : Z_NO_FLUSH));
        if (ret != Z_OK && ret != Z_STREAM_END && ret != Z_BUF_ERROR)
            abort();
    } while (pos < len);
    while (ret != Z_STREAM_END)
        ret = deflate(&zs, Z_FINISH);
    *out_len = zs.total_out;
    deflateEnd(&zs);
    return out;
}

/* The whole output of a raw stream, by zlib; and every block boundary zlib
 * stops at with Z_BLOCK: bit offset and output offset. */
struct boundaries {
    uint64_t *bit, *out;
    size_t n;
};

static unsigned char *inflate_all(const unsigned char *raw, size_t len, size_t out_cap,
                                  size_t *out_len, struct boundaries *b)
{
    z_stream zs;
    unsigned char *out = malloc(out_cap ? out_cap : 1);
    int ret;

    memset(&zs, 0, sizeof(zs));
    b->n = 0;
    b->bit = malloc(sizeof(*b->bit) * (3 * len + 16));
    b->out = malloc(sizeof(*b->out) * (3 * len + 16));
    if (inflateInit2(&zs, -15) != Z_OK)
        abort();
    zs.next_in = (Bytef *)raw;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)out_cap;
    do {
        ret = inflate(&zs, Z_BLOCK);
        if (ret == Z_OK && (zs.data_type & 128) && !(zs.data_type & 64)) {
            b->bit[b->n] = 8 * (uint64_t)(zs.next_in - raw) - (uint64_t)(zs.data_type & 7);
            b->out[b->n++] = zs.total_out;
        }
    } while (ret == Z_OK);
    if (ret != Z_STREAM_END)
        abort();
    *out_len = zs.total_out;
    inflateEnd(&zs);
    return out;
}

static bool is_boundary(const struct boundaries *b, uint64_t bit, uint64_t out)
{
    for (size_t i = 0; i < b->n; i++)
        if (b->bit[i] == bit && b->out[i] == out)
            return true;
    return false;
}

static void boundaries_free(struct boundaries *b)
{
    free(b->bit);
    free(b->out);
}

/* ------------------------------------------------------------- marking --- */

struct mark_rec {
    struct dfx_isal_mark mk;
    uint64_t want;
    unsigned char *window;
};

struct run_opts {
    uint64_t spacing;     /* want = last mark (or start) + spacing */
    size_t in_max;        /* input pieces of 1..in_max bytes (random) */
    size_t out_max;       /* output room of 1..out_max bytes (random) */
    bool verify;
    unsigned int step;    /* 0: default */
    int skew;
    unsigned plain_every; /* every plain_every-th call by dfx_isal_inflate() (0: none) */
    size_t trailer;       /* bytes after the stream (a gzip trailer) */
};

struct run_result {
    struct mark_rec *marks;
    size_t nmarks;
    size_t nomarks;
    bool end_with_mark; /* some call returned MARK and END together */
    struct dfx_isal_stats stats;
    uint64_t end_in; /* input offset of the stream's end, by dfx_isal_unused() */
    int err;
};

static size_t piece(size_t max)
{
    return max <= 1 ? 1 : 1 + (size_t)(rnd() % max);
}

/* Decode raw (len bytes, then o->trailer bytes of anything) with marking;
 * the output must equal want_out (c). */
static struct run_result run_marks(const unsigned char *raw, size_t len, const unsigned char *full,
                                   size_t full_len, const struct run_opts *o)
{
    struct run_result r;
    struct dfx_isal *d;
    unsigned char *buf = malloc(full_len + 1), *in;
    size_t total_in = len + o->trailer, in_pos = 0, out_pos = 0, cap = 16;
    uint64_t want = o->spacing;
    int calls = 0, stalls = 0;

    memset(&r, 0, sizeof(r));
    r.marks = malloc(cap * sizeof(*r.marks));
    in = malloc(total_in + 1);
    memcpy(in, raw, len);
    memset(in + len, 0xa5, o->trailer);
    CHECK_EQ(dfx_isal_new(&d), 0);
    dfx_isal_set_verify(d, o->verify);
    dfx_isal_set_step(d, o->step);
    dfx_isal_test_skew(d, o->skew, 0);
    CHECK_EQ(dfx_isal_start_at(d, 0, 0, 0, 0, NULL, 0), 0);
    for (;;) {
        unsigned int ain = (unsigned int)(in_pos < total_in ? piece(o->in_max) : 0);
        unsigned int aout = (unsigned int)piece(o->out_max);
        unsigned char *ni = in + in_pos, *no = buf + out_pos;
        unsigned int ain0, aout0;
        struct dfx_isal_mark mk;
        int ret;

        if (ain > total_in - in_pos)
            ain = (unsigned int)(total_in - in_pos);
        if (aout > full_len + 1 - out_pos)
            aout = (unsigned int)(full_len + 1 - out_pos);
        ain0 = ain;
        aout0 = aout;
        if (o->plain_every && calls % o->plain_every == o->plain_every - 1)
            ret = dfx_isal_inflate(d, &ni, &ain, &no, &aout);
        else
            ret = dfx_isal_inflate_mark(d, &ni, &ain, &no, &aout, want, &mk);
        calls++;
        CHECK_EQ(ni - (in + in_pos), ain0 - ain);
        CHECK_EQ(no - (buf + out_pos), aout0 - aout);
        in_pos += ain0 - ain;
        out_pos += aout0 - aout;
        if (ret < 0) {
            r.err = ret;
            break;
        }
        if (ret & DFX_ISAL_MARK) {
            if (r.nmarks == cap)
                r.marks = realloc(r.marks, (cap *= 2) * sizeof(*r.marks));
            r.marks[r.nmarks].mk = mk;
            r.marks[r.nmarks].want = want;
            r.marks[r.nmarks].window = malloc(WINDOW_SIZE);
            CHECK_EQ(dfx_isal_mark_window(d, r.marks[r.nmarks].window), mk.window_len);
            r.nmarks++;
            CHECK(mk.out <= out_pos);
            want = mk.out + o->spacing;
            if (ret & DFX_ISAL_END)
                r.end_with_mark = true;
        }
        if (ret & DFX_ISAL_NOMARK) {
            r.nomarks++;
            CHECK(mk.out <= out_pos);
            want = mk.out + o->spacing;
        }
        if (ret & DFX_ISAL_END) {
            r.end_in = in_pos - dfx_isal_unused(d);
            break;
        }
        /* No progress, no news, three times over: stuck. */
        stalls = ain0 == ain && aout0 == aout && !ret ? stalls + 1 : 0;
        if (stalls > 2) {
            r.err = -EPIPE;
            break;
        }
        if (out_pos > full_len) {
            r.err = -EFBIG;
            break;
        }
    }
    dfx_isal_get_stats(d, &r.stats);
    CHECK_EQ(r.err, 0);
    CHECK_EQ(out_pos, full_len);
    CHECK(memcmp(buf, full, full_len) == 0); /* (c) */
    dfx_isal_free(d);
    free(in);
    free(buf);
    return r;
}

static void run_free(struct run_result *r)
{
    for (size_t i = 0; i < r->nmarks; i++)
        free(r->marks[i].window);
    free(r->marks);
}

/* Output of a fresh zlib decoder started at mk: up to n bytes. */
static size_t zlib_from(const unsigned char *raw, size_t len, const struct dfx_isal_mark *mk,
                        const unsigned char *window, unsigned char *out, size_t n)
{
    z_stream zs;
    int ret;

    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, -15) != Z_OK)
        abort();
    if (mk->bits)
        CHECK_EQ(inflatePrime(&zs, mk->bits, raw[mk->in - 1] >> (8 - mk->bits)), Z_OK);
    if (mk->window_len)
        CHECK_EQ(inflateSetDictionary(&zs, window, mk->window_len), Z_OK);
    zs.next_in = (Bytef *)raw + mk->in;
    zs.avail_in = (uInt)(len - mk->in);
    zs.next_out = out;
    zs.avail_out = (uInt)n;
    ret = inflate(&zs, Z_FINISH);
    if (ret != Z_STREAM_END && !(ret == Z_BUF_ERROR && zs.avail_out == 0))
        n = (size_t)-1; /* bad data from here: no output to compare */
    else
        n = zs.total_out;
    inflateEnd(&zs);
    return n;
}

/* Output of a fresh ISA-L decoder started at mk, fed in random pieces. */
static size_t isal_from(const unsigned char *raw, size_t len, const struct dfx_isal_mark *mk,
                        const unsigned char *window, unsigned char *out, size_t n)
{
    struct dfx_isal *d;
    unsigned char *ni = (unsigned char *)raw + mk->in, *no = out;
    size_t done = 0;

    if (dfx_isal_new(&d) != 0)
        abort();
    CHECK_EQ(dfx_isal_start_at(d, mk->out, mk->in, mk->bits, mk->bits ? raw[mk->in - 1] : 0,
                               window, mk->window_len),
             0);
    while (done < n) {
        unsigned int ain = (unsigned int)piece(70000), aout = (unsigned int)piece(70000);
        size_t left_in = len - (size_t)(ni - raw);
        int ret;

        if (ain > left_in)
            ain = (unsigned int)left_in;
        if (aout > n - done)
            aout = (unsigned int)(n - done);
        unsigned int a0 = aout, i0 = ain;
        ret = dfx_isal_inflate(d, &ni, &ain, &no, &aout);
        done += a0 - aout;
        if (ret < 0) {
            done = (size_t)-1;
            break;
        }
        if (ret == DFX_ISAL_END)
            break;
        if (a0 == aout && i0 == ain && left_in == 0)
            break;
    }
    dfx_isal_free(d);
    return done;
}

/* Check every mark of r against the stream: (a) and (b). check_len: how
 * much output after each mark to compare (the rest of the stream if 0). */
static void check_marks(const char *name, const unsigned char *raw, size_t len,
                        const unsigned char *full, size_t full_len, const struct boundaries *b,
                        const struct run_result *r, size_t check_len)
{
    unsigned char *out = malloc(full_len + 1);
    int bad = 0;

    for (size_t i = 0; i < r->nmarks; i++) {
        const struct mark_rec *m = &r->marks[i];
        const struct dfx_isal_mark *mk = &m->mk;
        uint64_t bit = 8 * mk->in - (uint64_t)mk->bits;
        size_t n = full_len - mk->out, got;
        uint32_t wl = mk->out < WINDOW_SIZE ? (uint32_t)mk->out : WINDOW_SIZE;

        if (check_len && n > check_len && i + 1 < r->nmarks)
            n = check_len;
        CHECK(mk->bits >= 0 && mk->bits <= 7);
        CHECK(mk->in <= len);
        CHECK(mk->out >= m->want);
        if (i)
            CHECK(mk->out > r->marks[i - 1].mk.out);
        /* (a) */
        bad += !is_boundary(b, bit, mk->out);
        CHECK_EQ(mk->window_len, wl);
        CHECK(memcmp(m->window, full + mk->out - mk->window_len, mk->window_len) == 0);
        /* (b) */
        got = zlib_from(raw, len, mk, m->window, out, n);
        CHECK_EQ(got, n);
        bad += got != n || memcmp(out, full + mk->out, n) != 0;
        got = isal_from(raw, len, mk, m->window, out, n);
        CHECK_EQ(got, n);
        bad += got != n || memcmp(out, full + mk->out, n) != 0;
    }
    if (bad)
        fprintf(stderr, "%s: %d bad checks over %zu marks\n", name, bad, r->nmarks);
    CHECK_EQ(bad, 0);
    free(out);
}

/* One stream through several feeding patterns. min_marks: marks the default
 * run must find at least (so that the checks above are not vacuous). */
static void check_stream(const char *name, const unsigned char *raw, size_t len, size_t n,
                         uint64_t spacing, size_t min_marks)
{
    struct boundaries b;
    size_t full_len;
    unsigned char *full = inflate_all(raw, len, n, &full_len, &b);
    size_t check_len = full_len > (1u << 20) ? (256u << 10) : 0;
    struct run_opts opts[] = {
        /* big pieces, as dfx.c feeds it (64 KiB input) */
        {spacing, 65536, 262144, true, 0, 0, 0, 8},
        {spacing, 65536, 262144, false, 0, 0, 0, 0},
        /* small and odd pieces: boundaries with output still held back */
        {spacing, 300, 700, true, 0, 0, 0, 3},
        {spacing, 7, 50, true, 0, 0, 0, 0},
        /* other steps, and calls mixed with dfx_isal_inflate() */
        {spacing, 65536, 100000, true, 16, 0, 0, 0},
        {spacing, 65536, 100000, true, 200, 0, 0, 0},
        {spacing, 4096, 100000, true, 0, 0, 2, 0},
    };

    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        struct run_result r = run_marks(raw, len, full, full_len, &opts[i]);

        if (i == 0 && r.nmarks < min_marks)
            fprintf(stderr, "%s: %zu marks, expected at least %zu\n", name, r.nmarks, min_marks);
        if (i == 0)
            CHECK(r.nmarks >= min_marks);
        CHECK_EQ(r.stats.rejected, 0);
        CHECK_EQ(r.end_in, len); /* the stream's end, trailer or not */
        check_marks(name, raw, len, full, full_len, &b, &r, check_len);
        if (getenv("TEST_DFX_ISAL_VERBOSE"))
            printf("%-28s opts %zu: %zu marks, %zu nomarks, %llu steps, %llu unchecked\n", name, i,
                   r.nmarks, r.nomarks, (unsigned long long)r.stats.step_calls,
                   (unsigned long long)r.stats.unchecked);
        run_free(&r);
    }
    boundaries_free(&b);
    free(full);
}

static void check_zlib(const char *name, enum kind k, size_t n, int level, int strategy,
                       int flush, size_t every, uint64_t spacing, size_t min_marks)
{
    unsigned char *data = make_data(k, n);
    size_t len;
    unsigned char *raw = deflate_raw(data, n, level, strategy, flush, every, &len);

    check_stream(name, raw, len, n, spacing, min_marks);
    free(raw);
    free(data);
}

/* ------------------------------------------------------ external tools --- */

/* Raw deflate data of a gzip file (header and trailer stripped), or NULL. */
static unsigned char *gzip_to_raw(const unsigned char *gz, size_t n, size_t *len)
{
    size_t p = 10;
    unsigned char flg;
    unsigned char *raw;

    if (n < 18 || gz[0] != 0x1f || gz[1] != 0x8b || gz[2] != 8)
        return NULL;
    flg = gz[3];
    if (flg & 4)
        p += 2 + (size_t)(gz[p] | gz[p + 1] << 8);
    if (flg & 8)
        p += strnlen((const char *)gz + p, n - p) + 1;
    if (flg & 16)
        p += strnlen((const char *)gz + p, n - p) + 1;
    if (flg & 2)
        p += 2;
    if (p + 8 > n)
        return NULL;
    *len = n - p - 8;
    raw = malloc(*len);
    memcpy(raw, gz + p, *len);
    return raw;
}

/* Run cmd with data on its stdin (via a temp file); its stdout, or NULL. */
static unsigned char *run_filter(const char *cmd, const unsigned char *data, size_t n, size_t *len)
{
    char path[] = "/tmp/test_dfx_isal.XXXXXX", full[512];
    int fd = mkstemp(path);
    unsigned char *out = NULL;
    size_t cap = 0, got = 0, k;
    FILE *f;

    if (fd < 0)
        return NULL;
    if (write(fd, data, n) != (ssize_t)n) {
        close(fd);
        unlink(path);
        return NULL;
    }
    close(fd);
    snprintf(full, sizeof(full), "%s < %s", cmd, path);
    f = popen(full, "r");
    if (f) {
        do {
            if (got == cap)
                out = realloc(out, cap = cap ? 2 * cap : 65536);
            k = fread(out + got, 1, cap - got, f);
            got += k;
        } while (k);
        if (pclose(f) != 0) {
            free(out);
            out = NULL;
        }
    }
    unlink(path);
    *len = got;
    return out;
}

static void check_tool(const char *name, const char *cmd, enum kind k, size_t n, bool gzip_framed,
                       uint64_t spacing, size_t min_marks)
{
    unsigned char *data = make_data(k, n), *out, *raw;
    size_t out_len, len;

    out = run_filter(cmd, data, n, &out_len);
    if (!out) {
        printf("%s: skipped (%s not available)\n", name, cmd);
        free(data);
        return;
    }
    raw = gzip_framed ? gzip_to_raw(out, out_len, &len) : out;
    if (!gzip_framed)
        len = out_len;
    CHECK(raw != NULL);
    if (raw)
        check_stream(name, raw, len, n, spacing, min_marks);
    if (raw != out)
        free(raw);
    free(out);
    free(data);
}

/* --------------------------------------------------------- the checks --- */

/* A boundary reported a few bits off must fail the check: no mark, one
 * NOMARK, marking stops; with the check off, (b) sees the damage. */
static void test_skew(void)
{
    static const int skews[] = {-1, 1, -3, 5, -8, 8, -16};
    unsigned char *data = make_data(WALK, 3u << 20);
    size_t len, full_len;
    unsigned char *raw = deflate_raw(data, 3u << 20, 6, Z_DEFAULT_STRATEGY, 0, 0, &len);
    struct boundaries b;
    unsigned char *full = inflate_all(raw, len, 4u << 20, &full_len, &b);
    unsigned char *out = malloc(full_len);

    for (size_t i = 0; i < sizeof(skews) / sizeof(skews[0]); i++) {
        struct run_opts o = {256u << 10, 65536, 262144, true, 0, skews[i], 0, 0};
        struct run_result r = run_marks(raw, len, full, full_len, &o);
        size_t wrong = 0;

        CHECK_EQ(r.nmarks, 0);
        CHECK_EQ(r.nomarks, 1);
        CHECK_EQ(r.stats.rejected, 1);
        run_free(&r);

        o.verify = false;
        r = run_marks(raw, len, full, full_len, &o);
        CHECK(r.nmarks > 0);
        for (size_t j = 0; j < r.nmarks; j++) {
            const struct dfx_isal_mark *mk = &r.marks[j].mk;
            size_t n = 8192, got = zlib_from(raw, len, mk, r.marks[j].window, out, n);

            wrong += !is_boundary(&b, 8 * mk->in - (uint64_t)mk->bits, mk->out) &&
                     (got != n || memcmp(out, full + mk->out, n) != 0);
        }
        CHECK_EQ(wrong, r.nmarks);
        run_free(&r);
    }
    boundaries_free(&b);
    free(out);
    free(full);
    free(raw);
    free(data);
}

/* A boundary within DFX_ISAL_VERIFY_LEN of the end: its check completes at
 * the end, and the mark comes with DFX_ISAL_END. The stream ends with a
 * stored block (the decoder always stops right after one) and a short final
 * block: text, full flush | 1000 random bytes, stored | 1000 bytes of text
 * deflated on their own. */
static void test_mark_at_end(void)
{
    size_t n = 200000, len, len3, full_len, a = n - 2000, plen, i;
    unsigned char *data = make_data(TEXT, n), *noise = make_data(RANDOM, 1000);
    unsigned char *raw = malloc(n * 2), *full, *part3;
    struct boundaries b;
    z_stream zs;

    memcpy(data + a, noise, 1000);
    free(noise);
    memset(&zs, 0, sizeof(zs));
    CHECK_EQ(deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_out = raw;
    zs.avail_out = (uInt)(n * 2);
    zs.next_in = data;
    zs.avail_in = (uInt)a;
    CHECK_EQ(deflate(&zs, Z_FULL_FLUSH), Z_OK); /* ends byte-aligned, not final */
    len = zs.total_out;
    deflateEnd(&zs);
    raw[len++] = 0; /* stored, not final */
    raw[len++] = 1000 & 0xff;
    raw[len++] = 1000 >> 8;
    raw[len++] = (unsigned char)~(1000 & 0xff);
    raw[len++] = (unsigned char)~(1000 >> 8);
    memcpy(raw + len, data + a, 1000);
    len += 1000;
    part3 = deflate_raw(data + a + 1000, 1000, 6, Z_DEFAULT_STRATEGY, 0, 0, &len3);
    memcpy(raw + len, part3, len3);
    len += len3;
    free(part3);
    full = inflate_all(raw, len, n, &full_len, &b);
    CHECK_EQ(full_len, n);
    for (plen = 1; plen <= 65536; plen *= 16) {
        /* want well before a: ISA-L decodes up to ~32 KiB ahead of us. */
        struct run_opts o = {a - 40000, plen, 300000, true, 0, 0, 0, 0};
        struct run_result r = run_marks(raw, len, full, full_len, &o);

        if (r.nmarks != 1)
            fprintf(stderr, "mark at end, pieces of %zu: %zu marks, %zu nomarks, %llu unchecked\n",
                    plen, r.nmarks, r.nomarks, (unsigned long long)r.stats.unchecked);
        CHECK_EQ(r.nmarks, 1);
        for (i = 0; i < r.nmarks; i++)
            CHECK(r.marks[i].mk.out >= a - 40000 && r.marks[i].mk.out <= a + 1000);
        CHECK(r.end_with_mark);
        check_marks("mark at end", raw, len, full, full_len, &b, &r, 0);
        run_free(&r);
    }
    boundaries_free(&b);
    free(full);
    free(raw);
    free(data);
}

/* Marks found by a decoder that itself started at a mark (an origin with
 * bits and a window, as a reader resuming from an access point). */
static void test_from_origin(void)
{
    unsigned char *data = make_data(WALK, 2u << 20);
    size_t len, full_len, k;
    unsigned char *raw = deflate_raw(data, 2u << 20, 9, Z_DEFAULT_STRATEGY, 0, 0, &len);
    struct boundaries b;
    unsigned char *full = inflate_all(raw, len, 2u << 20, &full_len, &b);
    struct run_opts o = {100000, 65536, 262144, true, 0, 0, 0, 0};
    struct run_result r = run_marks(raw, len, full, full_len, &o);
    size_t with_bits = 0, found = 0;

    CHECK(r.nmarks >= 5);
    for (k = 0; k < r.nmarks && k < 6; k++) {
        const struct dfx_isal_mark *o0 = &r.marks[k].mk;
        struct dfx_isal *d;
        unsigned char *ni = raw + o0->in, *buf = malloc(full_len), *no = buf + o0->out;
        unsigned int ain, aout;
        uint64_t want = o0->out + 70000;
        int ret;

        with_bits += o0->bits != 0;
        CHECK_EQ(dfx_isal_new(&d), 0);
        CHECK_EQ(dfx_isal_start_at(d, o0->out, o0->in, o0->bits,
                                   o0->bits ? raw[o0->in - 1] : 0, r.marks[k].window,
                                   o0->window_len),
                 0);
        do {
            struct dfx_isal_mark mk;

            ain = (unsigned int)(len - (size_t)(ni - raw));
            aout = (unsigned int)(full_len - (size_t)(no - buf));
            ret = dfx_isal_inflate_mark(d, &ni, &ain, &no, &aout, want, &mk);
            if (ret > 0 && (ret & DFX_ISAL_MARK)) {
                /* The same boundaries as the decoder that started at 0. */
                bool known = false;
                for (size_t j = 0; j < b.n; j++)
                    known |= b.out[j] == mk.out && b.bit[j] == 8 * mk.in - (uint64_t)mk.bits;
                CHECK(known);
                CHECK(mk.out >= want);
                want = mk.out + 70000;
                found++;
            }
        } while (ret >= 0 && !(ret & DFX_ISAL_END));
        CHECK(ret > 0);
        CHECK_EQ((size_t)(no - buf), full_len);
        CHECK(memcmp(buf + o0->out, full + o0->out, full_len - o0->out) == 0);
        dfx_isal_free(d);
        free(buf);
    }
    CHECK(with_bits > 0);
    CHECK(found >= 3);
    run_free(&r);
    boundaries_free(&b);
    free(full);
    free(raw);
    free(data);
}

/* The first output offset of a zlib boundary at or past want, or
 * UINT64_MAX. */
static uint64_t first_at(const struct boundaries *b, uint64_t want)
{
    uint64_t best = UINT64_MAX;

    for (size_t i = 0; i < b->n; i++)
        if (b->out[i] >= want && b->out[i] < best)
            best = b->out[i];
    return best;
}

/* Dynamic (with headers short or long, tables repeating or not), fixed and
 * stored blocks, none tiny: with wants far enough apart for the ring to be
 * whole by then, every mark is the first boundary at or past its want, in
 * any feeding pattern, and reading headers in steps takes a few calls. */
static void test_first_boundary(void)
{
    static const struct {
        const char *name;
        enum kind k;
        size_t n;
        int level, strategy;
    } streams[] = {
        {"walk level 6", WALK, 4u << 20, 6, Z_DEFAULT_STRATEGY},
        {"text level 1", TEXT, 4u << 20, 1, Z_DEFAULT_STRATEGY},
        {"text level 9", TEXT, 2u << 20, 9, Z_DEFAULT_STRATEGY},
        {"walk fixed", WALK, 2u << 20, 6, Z_FIXED},
        {"text fixed", TEXT, 2u << 20, 6, Z_FIXED},
        {"walk huffman-only", WALK, 2u << 20, 6, Z_HUFFMAN_ONLY},
        {"random level 6 (stored)", RANDOM, 1u << 20, 6, Z_DEFAULT_STRATEGY},
        {"random level 0", RANDOM, 1u << 20, 0, Z_DEFAULT_STRATEGY},
    };
    static const struct {
        size_t in_max, out_max;
    } feeds[] = {{65536, 262144}, {65536, 131072}, {5000, 3000}, {300, 70000}};

    for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++) {
        unsigned char *data = make_data(streams[i].k, streams[i].n);
        size_t len, full_len;
        unsigned char *raw =
            deflate_raw(data, streams[i].n, streams[i].level, streams[i].strategy, 0, 0, &len);
        struct boundaries b;
        unsigned char *full = inflate_all(raw, len, streams[i].n, &full_len, &b);

        for (size_t f = 0; f < sizeof(feeds) / sizeof(feeds[0]); f++) {
            struct run_opts o = {70000, feeds[f].in_max, feeds[f].out_max, f != 1, 0, 0, 0, 0};
            struct run_result r = run_marks(raw, len, full, full_len, &o);
            size_t late = 0;

            for (size_t j = 0; j < r.nmarks; j++)
                late += r.marks[j].mk.out != first_at(&b, r.marks[j].want);
            if (late)
                fprintf(stderr, "%s, feed %zu: %zu of %zu marks not the first boundary\n",
                        streams[i].name, f, late, r.nmarks);
            CHECK_EQ(late, 0);
            CHECK(r.nmarks > 0);
            CHECK_EQ(r.nomarks, 0);
            CHECK(r.stats.stops >= r.nmarks);
            CHECK(r.stats.step_calls <= 16 * (r.stats.stops + 1));
            check_marks(streams[i].name, raw, len, full, full_len, &b, &r, 65536);
            run_free(&r);
        }
        boundaries_free(&b);
        free(full);
        free(raw);
        free(data);
    }
}

/* Some calls by dfx_isal_inflate() among the marking ones, with little
 * output room: some come while the decoder is stopped at a block's end with
 * output still to hand out, or while a boundary is checked. The stream goes
 * on as if nothing stopped it (no early end), checks pass, and the marks
 * found are right. */
static void test_stopped_then_plain(void)
{
    unsigned char *data = make_data(WALK, 2u << 20);
    size_t len, full_len;
    unsigned char *raw = deflate_raw(data, 2u << 20, 6, Z_DEFAULT_STRATEGY, 0, 0, &len);
    struct boundaries b;
    unsigned char *full = inflate_all(raw, len, 2u << 20, &full_len, &b);

    /* room for the ring to fill between the plain calls */
    static const struct {
        size_t out_max;
        unsigned every;
    } mixes[] = {{1024, 211}, {4096, 37}, {16384, 11}};

    for (size_t i = 0; i < sizeof(mixes) / sizeof(mixes[0]); i++) {
        struct run_opts o = {40000, 65536, mixes[i].out_max, true, 0, 0, mixes[i].every, 0};
        struct run_result r = run_marks(raw, len, full, full_len, &o);

        CHECK(r.stats.stops > 0);
        CHECK(r.nmarks > 0);
        CHECK_EQ(r.stats.rejected, 0);
        check_marks("stopped then plain", raw, len, full, full_len, &b, &r, 65536);
        run_free(&r);
    }
    boundaries_free(&b);
    free(full);
    free(raw);
    free(data);
}

static void test_streams(void)
{
    char name[64];

    /* zlib levels on compressible and random-walk data */
    for (int level = 0; level <= 9; level++) {
        snprintf(name, sizeof(name), "text level %d", level);
        check_zlib(name, TEXT, 1u << 20, level, Z_DEFAULT_STRATEGY, 0, 0, 65536, 1);
        snprintf(name, sizeof(name), "walk level %d", level);
        check_zlib(name, WALK, 1u << 20, level, Z_DEFAULT_STRATEGY, 0, 0, 65536,
                   level ? 2 : 4);
    }
    /* strategies */
    check_zlib("text filtered", TEXT, 1u << 20, 6, Z_FILTERED, 0, 0, 65536, 1);
    check_zlib("walk huffman-only", WALK, 1u << 20, 6, Z_HUFFMAN_ONLY, 0, 0, 65536, 2);
    check_zlib("text rle", TEXT, 1u << 20, 6, Z_RLE, 0, 0, 65536, 2);
    check_zlib("text fixed", TEXT, 1u << 20, 6, Z_FIXED, 0, 0, 65536, 0);
    check_zlib("walk fixed", WALK, 1u << 20, 6, Z_FIXED, 0, 0, 65536, 0);
    /* stored blocks: incompressible data (zlib stores it), level 0 */
    check_zlib("random level 6 (stored)", RANDOM, 1u << 20, 6, Z_DEFAULT_STRATEGY, 0, 0, 65536, 4);
    check_zlib("random level 0", RANDOM, 300000, 0, Z_DEFAULT_STRATEGY, 0, 0, 1000, 3);
    /* fixed-Huffman blocks between dynamic ones: tiny flushed segments */
    check_zlib("text sync every 100", TEXT, 200000, 6, Z_DEFAULT_STRATEGY, Z_SYNC_FLUSH, 100,
               5000, 1);
    /* empty blocks: every flush writes one (stored: sync/full; fixed: partial) */
    check_zlib("text sync every 5000", TEXT, 500000, 6, Z_DEFAULT_STRATEGY, Z_SYNC_FLUSH, 5000,
               20000, 4);
    check_zlib("walk full every 3000", WALK, 500000, 6, Z_DEFAULT_STRATEGY, Z_FULL_FLUSH, 3000,
               20000, 4);
    check_zlib("text partial every 7000", TEXT, 500000, 6, Z_DEFAULT_STRATEGY, Z_PARTIAL_FLUSH,
               7000, 20000, 2);
    check_zlib("text block every 4000", TEXT, 500000, 1, Z_DEFAULT_STRATEGY, Z_BLOCK, 4000,
               20000, 2);
    check_zlib("zeros sync every 64", ZEROS, 100000, 6, Z_DEFAULT_STRATEGY, Z_SYNC_FLUSH, 64, 1,
               1);
    /* tiny outputs */
    check_zlib("empty", TEXT, 0, 6, Z_DEFAULT_STRATEGY, 0, 0, 1, 0);
    check_zlib("one byte", TEXT, 1, 6, Z_DEFAULT_STRATEGY, 0, 0, 1, 0);
    check_zlib("100 bytes", WALK, 100, 6, Z_DEFAULT_STRATEGY, 0, 0, 1, 0);
    check_zlib("zeros 10 MB", ZEROS, 10u << 20, 9, Z_DEFAULT_STRATEGY, 0, 0, 1u << 20, 0);
    /* large, with the default spacing */
    check_zlib("walk 12 MB level 6", WALK, 12u << 20, 6, Z_DEFAULT_STRATEGY, 0, 0, 1u << 20, 8);
    /* other writers */
    check_tool("gzip -6 text", "gzip -6 -c -n", TEXT, 3u << 20, true, 200000, 2);
    check_tool("gzip -1 walk", "gzip -1 -c -n", WALK, 3u << 20, true, 200000, 4);
    check_tool("python zlib walk", "/usr/bin/python3 -c \"import sys,zlib; c=zlib.compressobj(6, "
               "zlib.DEFLATED, -15); sys.stdout.buffer.write(c.compress(sys.stdin.buffer.read())"
               " + c.flush())\"",
               WALK, 3u << 20, false, 200000, 4);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_streams();
    test_first_boundary();
    test_stopped_then_plain();
    test_skew();
    test_mark_at_end();
    test_from_origin();
    return check_exit("test_dfx_isal");
}

#else /* !NPYFS_HAVE_ISAL */

int main(void)
{
    struct dfx_isal *d = (struct dfx_isal *)1;

    CHECK_EQ(dfx_isal_new(&d), -EOPNOTSUPP);
    CHECK(d == NULL);
    return check_exit("test_dfx_isal");
}

#endif
