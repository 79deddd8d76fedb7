/*
 * Test cases for saved indexes. Contract in dfx_fixture.h.
 */
#define _GNU_SOURCE
#include "dfx_fixture.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "dfx_internal.h"

uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

unsigned char *make_data(size_t len, int kind, uint64_t *s)
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

unsigned char *zcompress(const unsigned char *data, size_t len, int wbits, size_t *out_len)
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

static const struct src_ops count_ops = {count_pread, count_free, NULL};

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

void count_reset(struct count_src *c)
{
    c->preads = 0;
    c->lowest = UINT64_MAX;
}

int fixture_init(struct fixture *f, size_t len, int kind, enum dfx_framing framing,
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

void fixture_destroy(struct fixture *f)
{
    if (f->src)
        f->src->base.ops->free(&f->src->base);
    free(f->data);
    free(f->comp);
}

struct dfx_index *built_index(struct fixture *f, bool zip_windows)
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

int random_extracts(struct dfx_index *ix, const struct fixture *f, uint64_t *s, int n)
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

struct dfx_crcs *table_of(const struct fixture *f, uint64_t *s)
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

bool same_table(const struct dfx_crcs *a, const struct dfx_crcs *b)
{
    return a && b && a->size == b->size && a->count == b->count && a->chunk == b->chunk &&
           memcmp(a->crc, b->crc, (size_t)a->count * 4) == 0;
}

bool same_points(struct dfx_index *a, struct dfx_index *b)
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

void fix_crc(unsigned char *p, size_t len)
{
    uint32_t c = (uint32_t)crc32(0, p, (uInt)(len - 4));

    for (int i = 0; i < 4; i++)
        p[len - 4 + i] = (unsigned char)(c >> (8 * i));
}

void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
