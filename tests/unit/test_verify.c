/*
 * Unit tests for fs/verify.c: the one full pass (verify_pass()) over a
 * stored range of a source and over a decoder's output (size known or
 * not, with a head read before it, within a budget, feeding a cache), its
 * stop flag and after-read check, and verify_chunk().
 *
 * Each table a pass builds is compared with one built here from the same
 * bytes with dfx_crcs_new() and dfx_crcs_feed(); the gzip stream is
 * written here with zlib, in memory.
 */
#include "check.h"
#include "verify.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "cache.h"
#include "dfx.h"
#include "dfx_crcs.h"
#include "fs.h"
#include "source.h"

#define MIB (1u << 20)
#define DATA_LEN (3 * MIB + 12345) /* not a whole number of chunks */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* Bytes that deflate somewhat (runs and a ramp), different at every offset. */
static unsigned char *make_data(size_t len)
{
    unsigned char *p = xmalloc(len);
    uint64_t s = 0x9e3779b97f4a7c15ull;

    for (size_t i = 0; i < len; i++) {
        if (i % 64 == 0) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
        }
        p[i] = (unsigned char)((i % 64 < 32 ? s >> (i % 8) : i / 4096) & 0xff);
    }
    return p;
}

/* The table of data[0..len), built the plain way. */
static struct dfx_crcs *reference(const unsigned char *data, size_t len)
{
    struct dfx_crcs *t;

    if (dfx_crcs_new(len, FS_CHUNK_SIZE, &t) < 0)
        exit(2);
    dfx_crcs_feed(t, 0, data, len);
    return t;
}

static bool same_table(const struct dfx_crcs *a, const struct dfx_crcs *b)
{
    return a && b && a->size == b->size && a->count == b->count && a->chunk == b->chunk &&
           memcmp(a->crc, b->crc, (size_t)a->count * sizeof(a->crc[0])) == 0;
}

/* data[0..len) as a gzip file in memory (*out_len bytes; caller frees). */
static unsigned char *gzip_of(const unsigned char *data, size_t len, size_t *out_len)
{
    z_stream z = {0};
    size_t cap = len + len / 100 + 1024;
    unsigned char *out = xmalloc(cap);

    if (deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        exit(2);
    z.next_in = (unsigned char *)data;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        exit(2);
    *out_len = z.total_out;
    deflateEnd(&z);
    return out;
}

/* What the callbacks saw. */
struct seen {
    int reads;          /* after_read calls */
    int fail_at;        /* after_read fails (-ESTALE) on this call (1-based); 0: never */
    int progresses;
    uint64_t last_done; /* the last progress */
    bool increasing;    /* every progress above the one before */
    atomic_bool *raise; /* raised by the first progress, if set */
};

static int after_read(void *arg)
{
    struct seen *s = arg;

    return ++s->reads == s->fail_at ? -ESTALE : 0;
}

static void progress(void *arg, uint64_t done)
{
    struct seen *s = arg;

    if (s->progresses++ && done <= s->last_done)
        s->increasing = false;
    s->last_done = done;
    if (s->raise)
        atomic_store(s->raise, true);
}

static void test_stored(void)
{
    unsigned char *data = make_data(DATA_LEN + 100);
    struct dfx_crcs *want = reference(data + 17, DATA_LEN), *t;
    struct src *src;
    atomic_bool stop = false;
    int64_t n;

    CHECK_EQ(src_mem_new(data, DATA_LEN + 100, &src), 0);

    /* the range [17, 17 + DATA_LEN): its table, progress up to its size */
    struct seen s = {.increasing = true};
    n = verify_pass(&(struct verify_input){.src = src, .off = 17, .size = DATA_LEN,
                                           .after_read = after_read, .progress = progress,
                                           .arg = &s},
                    NULL, 0, &t);
    CHECK_EQ(n, DATA_LEN);
    CHECK(same_table(t, want));
    CHECK_EQ(s.reads, 4); /* 1 MiB reads, the last short; none past the end */
    CHECK_EQ(s.progresses, 4);
    CHECK_EQ(s.last_done, DATA_LEN);
    CHECK(s.increasing);
    free(t);

    /* after_read failing on the second read: its errno, no table */
    s = (struct seen){.fail_at = 2};
    t = (struct dfx_crcs *)1;
    n = verify_pass(&(struct verify_input){.src = src, .off = 17, .size = DATA_LEN,
                                           .after_read = after_read, .progress = progress,
                                           .arg = &s},
                    NULL, 0, &t);
    CHECK_EQ(n, -ESTALE);
    CHECK(t == NULL);
    CHECK_EQ(s.reads, 2);
    CHECK_EQ(s.progresses, 1);

    /* stop raised before: -ECANCELED, nothing read, after_read not called */
    atomic_store(&stop, true);
    s = (struct seen){0};
    n = verify_pass(&(struct verify_input){.src = src, .off = 17, .size = DATA_LEN, .stop = &stop,
                                           .after_read = after_read, .arg = &s},
                    NULL, 0, &t);
    CHECK_EQ(n, -ECANCELED);
    CHECK(t == NULL);
    CHECK_EQ(s.reads, 0);

    /* stop raised during the pass (by the first progress): it ends before the next read */
    atomic_store(&stop, false);
    s = (struct seen){.raise = &stop};
    n = verify_pass(&(struct verify_input){.src = src, .off = 17, .size = DATA_LEN, .stop = &stop,
                                           .after_read = after_read, .progress = progress,
                                           .arg = &s},
                    NULL, 0, &t);
    CHECK_EQ(n, -ECANCELED);
    CHECK_EQ(s.reads, 1);

    /* a stop raised once every byte is read does not matter: none is left */
    s = (struct seen){0};
    n = verify_pass(&(struct verify_input){.src = src, .off = 0, .size = 0, .stop = &stop,
                                           .after_read = after_read, .arg = &s},
                    NULL, 0, &t);
    CHECK_EQ(n, 0);
    CHECK(t && t->count == 0);
    CHECK_EQ(s.reads, 0);
    free(t);

    /* a range cut short by the source's end: -EIO (the read's error wins
     * over after_read's) */
    s = (struct seen){.fail_at = 4};
    n = verify_pass(&(struct verify_input){.src = src, .off = 200, .size = DATA_LEN,
                                           .after_read = after_read, .arg = &s},
                    NULL, 0, &t);
    CHECK_EQ(n, -EIO);
    CHECK(t == NULL);
    CHECK_EQ(s.reads, 4);

    src_free(src);
    free(want);
    free(data);
}

/* A gzip index over gz[0..gzlen); usize UINT64_MAX: sized by a pass. */
static struct dfx_index *gzip_index(struct src *src, uint64_t usize)
{
    struct dfx_stream st = {.src = src, .start = 0, .end = src->size, .framing = DFX_GZIP,
                            .usize = usize};
    struct dfx_index *ix;

    if (dfx_index_new(&st, DFX_DEFAULT_SPACING, &ix) < 0)
        exit(2);
    return ix;
}

static void test_decoder(void)
{
    unsigned char *data = make_data(DATA_LEN), head[12];
    struct dfx_crcs *want = reference(data, DATA_LEN), *t;
    size_t gzlen;
    unsigned char *gz = gzip_of(data, DATA_LEN, &gzlen);
    struct dfx_reader *r;
    struct dfx_index *ix;
    struct src *src;
    int64_t n;

    CHECK_EQ(src_mem_new(gz, gzlen, &src), 0);

    /* size unknown: the whole stream, the table grown as it comes */
    ix = gzip_index(src, UINT64_MAX);
    CHECK_EQ(dfx_reader_new(ix, 0, &r), 0);
    struct seen s = {.increasing = true};
    n = verify_pass(&(struct verify_input){.r = r, .size = VERIFY_SIZE_UNKNOWN,
                                           .progress = progress, .arg = &s},
                    NULL, 0, &t);
    CHECK_EQ(n, DATA_LEN);
    CHECK(same_table(t, want));
    CHECK_EQ(s.last_done, DATA_LEN);
    CHECK(s.increasing);
    CHECK_EQ(dfx_index_total(ix), DATA_LEN);
    free(t);
    dfx_reader_free(r);
    dfx_index_free(ix);

    /* the first 12 bytes read before, passed as the head: the same table,
     * the progress counting them */
    ix = gzip_index(src, UINT64_MAX);
    CHECK_EQ(dfx_reader_new(ix, 0, &r), 0);
    CHECK_EQ(dfx_reader_read(r, head, sizeof(head)), (int64_t)sizeof(head));
    s = (struct seen){.increasing = true};
    n = verify_pass(&(struct verify_input){.r = r, .size = VERIFY_SIZE_UNKNOWN,
                                           .progress = progress, .arg = &s},
                    head, sizeof(head), &t);
    CHECK_EQ(n, DATA_LEN);
    CHECK(same_table(t, want));
    CHECK_EQ(s.last_done, DATA_LEN);
    free(t);
    dfx_reader_free(r);
    dfx_index_free(ix);

    /* a budget of 1 MiB of output: -E2BIG, no table */
    ix = gzip_index(src, UINT64_MAX);
    CHECK_EQ(dfx_reader_new(ix, 0, &r), 0);
    s = (struct seen){0};
    n = verify_pass(&(struct verify_input){.r = r, .size = VERIFY_SIZE_UNKNOWN, .budget = MIB,
                                           .progress = progress, .arg = &s},
                    NULL, 0, &t);
    CHECK_EQ(n, -E2BIG);
    CHECK(t == NULL);
    CHECK_EQ(s.progresses, 1); /* the read past the budget ends it */
    dfx_reader_free(r);
    dfx_index_free(ix);

    /* size known, a decoder: stop checked before every read, the last one
     * (which finds the end) included */
    atomic_bool stop = false;
    ix = gzip_index(src, DATA_LEN);
    CHECK_EQ(dfx_reader_new(ix, 0, &r), 0);
    s = (struct seen){.increasing = true};
    n = verify_pass(&(struct verify_input){.r = r, .size = DATA_LEN, .stop = &stop,
                                           .after_read = after_read, .progress = progress,
                                           .arg = &s},
                    NULL, 0, &t);
    CHECK_EQ(n, DATA_LEN);
    CHECK(same_table(t, want));
    CHECK_EQ(s.reads, 5); /* four with data, one at the end */
    free(t);
    dfx_reader_free(r);
    CHECK_EQ(dfx_reader_new(ix, 0, &r), 0);
    s = (struct seen){.raise = &stop};
    n = verify_pass(&(struct verify_input){.r = r, .size = DATA_LEN, .stop = &stop,
                                           .progress = progress, .arg = &s},
                    NULL, 0, &t);
    CHECK_EQ(n, -ECANCELED);
    CHECK(t == NULL);
    CHECK_EQ(s.progresses, 1);
    dfx_reader_free(r);
    dfx_index_free(ix);

    src_free(src);
    free(gz);
    free(want);
    free(data);
}

static void test_feed(void)
{
    unsigned char *data = make_data(DATA_LEN);
    struct dfx_crcs *want = reference(data, DATA_LEN), *t;
    uint64_t nchunks = (DATA_LEN + FS_CHUNK_SIZE - 1) / FS_CHUNK_SIZE;
    size_t gzlen;
    unsigned char *gz = gzip_of(data, DATA_LEN, &gzlen);
    struct dfx_reader *r;
    struct dfx_index *ix;
    struct cache *c;
    struct src *src;
    int64_t n;
    bool all = true;

    CHECK_EQ(src_mem_new(gz, gzlen, &src), 0);
    CHECK_EQ(cache_new(64ull << 20, FS_CHUNK_SIZE, &c), 0);

    /* every chunk goes into the cache under the owner, byte for byte */
    ix = gzip_index(src, DATA_LEN);
    CHECK_EQ(dfx_reader_new(ix, 0, &r), 0);
    struct seen s = {.increasing = true};
    n = verify_pass(&(struct verify_input){.r = r, .size = DATA_LEN, .progress = progress,
                                           .arg = &s, .feed = c, .owner = 42},
                    NULL, 0, &t);
    CHECK_EQ(n, DATA_LEN);
    CHECK(same_table(t, want));
    CHECK_EQ(s.progresses, (int)nchunks); /* one read per chunk */
    CHECK_EQ(s.last_done, DATA_LEN);
    for (uint64_t k = 0; k < nchunks; k++) {
        struct cache_chunk *ch = cache_get(c, 42, k);
        size_t len = k + 1 < nchunks ? FS_CHUNK_SIZE : DATA_LEN - k * FS_CHUNK_SIZE;

        all = all && ch && ch->len == len && memcmp(ch->data, data + k * FS_CHUNK_SIZE, len) == 0;
        cache_put(c, ch);
    }
    CHECK(all);
    CHECK(cache_get(c, 41, 0) == NULL);
    free(t);
    dfx_reader_free(r);
    dfx_index_free(ix);

    /* a stream that ends inside a chunk it feeds (more output expected
     * than it has): -EIO, and that chunk is not inserted */
    cache_drop_owner(c, 42);
    ix = gzip_index(src, UINT64_MAX);
    CHECK_EQ(dfx_reader_new(ix, 0, &r), 0);
    n = verify_pass(&(struct verify_input){.r = r, .size = DATA_LEN + 1000, .feed = c,
                                           .owner = 42},
                    NULL, 0, &t);
    CHECK_EQ(n, -EIO);
    CHECK(t == NULL);
    CHECK(cache_get(c, 42, DATA_LEN / FS_CHUNK_SIZE) == NULL);
    dfx_reader_free(r);
    dfx_index_free(ix);

    cache_free(c);
    src_free(src);
    free(gz);
    free(want);
    free(data);
}

static void test_chunk(void)
{
    unsigned char *data = make_data(3 * FS_CHUNK_SIZE);
    struct dfx_crcs *t = reference(data, 3 * FS_CHUNK_SIZE - 10);

    CHECK(verify_chunk(NULL, 99, data, 5)); /* no table: nothing to check */
    CHECK(verify_chunk(t, 0, data, FS_CHUNK_SIZE));
    CHECK(verify_chunk(t, 2, data + 2 * FS_CHUNK_SIZE, FS_CHUNK_SIZE - 10));
    CHECK(!verify_chunk(t, 1, data, FS_CHUNK_SIZE)); /* another chunk's bytes */
    CHECK(!verify_chunk(t, 2, data + 2 * FS_CHUNK_SIZE, FS_CHUNK_SIZE)); /* 10 bytes too many */
    CHECK(!verify_chunk(t, 3, data, 0)); /* past the table */
    data[5] ^= 1;
    CHECK(!verify_chunk(t, 0, data, FS_CHUNK_SIZE));
    free(t);
    free(data);
}

int main(void)
{
    test_stored();
    test_decoder();
    test_feed();
    test_chunk();
    return check_exit("test_verify");
}
