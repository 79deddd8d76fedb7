/*
 * Unit tests for format/zip.c. Archives are built here: numpy's own bytes
 * (embedded, generated once with np.savez / np.savez_compressed, numpy
 * 1.24.2, Python 3.11.2), a small writer for the layouts numpy and other
 * tools produce (ZIP64 extras, data descriptors, saturated sizes, ZIP64
 * EOCD, comments, prepended data), libzip as an independent writer, and
 * Info-ZIP's zip(1) when it is installed. Broken archives are derived by
 * patching bytes; every one must give a clean error or flagged members.
 */
#define _GNU_SOURCE
#include "archive.h"
#include "check.h"
#include "dfx.h"
#include "source.h"
#include "src_file.h"
#include "zip.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* format/zip.h shadows libzip's <zip.h> on the include path (-I is searched
 * for <> includes too), so libzip's header is named by its installed path. */
#ifndef LIBZIP_HEADER
#define LIBZIP_HEADER </usr/include/zip.h>
#endif
#include LIBZIP_HEADER

/* numpy reference archives: np.savez(b, np.arange(3, dtype='<i2'), named=np.arange(2.0))
 * and np.savez_compressed(b, np.zeros(100, dtype='<i4'), named=np.arange(2.0)). */
/* np_savez: 528 bytes */
static const unsigned char np_savez[] = {
    0x50, 0x4b, 0x03, 0x04, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00, 0xee, 0x55,
    0x68, 0x8a, 0x90, 0x00, 0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x09, 0x00, 0x14, 0x00, 0x6e, 0x61,
    0x6d, 0x65, 0x64, 0x2e, 0x6e, 0x70, 0x79, 0x01, 0x00, 0x10, 0x00, 0x90, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x93, 0x4e, 0x55, 0x4d, 0x50,
    0x59, 0x01, 0x00, 0x76, 0x00, 0x7b, 0x27, 0x64, 0x65, 0x73, 0x63, 0x72, 0x27, 0x3a, 0x20, 0x27,
    0x3c, 0x66, 0x38, 0x27, 0x2c, 0x20, 0x27, 0x66, 0x6f, 0x72, 0x74, 0x72, 0x61, 0x6e, 0x5f, 0x6f,
    0x72, 0x64, 0x65, 0x72, 0x27, 0x3a, 0x20, 0x46, 0x61, 0x6c, 0x73, 0x65, 0x2c, 0x20, 0x27, 0x73,
    0x68, 0x61, 0x70, 0x65, 0x27, 0x3a, 0x20, 0x28, 0x32, 0x2c, 0x29, 0x2c, 0x20, 0x7d, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, 0x3f, 0x50, 0x4b, 0x03, 0x04, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00, 0x6a, 0xcf, 0xf2, 0x51, 0x86, 0x00, 0x00,
    0x00, 0x86, 0x00, 0x00, 0x00, 0x09, 0x00, 0x14, 0x00, 0x61, 0x72, 0x72, 0x5f, 0x30, 0x2e, 0x6e,
    0x70, 0x79, 0x01, 0x00, 0x10, 0x00, 0x86, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x86, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 0x01, 0x00, 0x76, 0x00,
    0x7b, 0x27, 0x64, 0x65, 0x73, 0x63, 0x72, 0x27, 0x3a, 0x20, 0x27, 0x3c, 0x69, 0x32, 0x27, 0x2c,
    0x20, 0x27, 0x66, 0x6f, 0x72, 0x74, 0x72, 0x61, 0x6e, 0x5f, 0x6f, 0x72, 0x64, 0x65, 0x72, 0x27,
    0x3a, 0x20, 0x46, 0x61, 0x6c, 0x73, 0x65, 0x2c, 0x20, 0x27, 0x73, 0x68, 0x61, 0x70, 0x65, 0x27,
    0x3a, 0x20, 0x28, 0x33, 0x2c, 0x29, 0x2c, 0x20, 0x7d, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x0a, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x50, 0x4b, 0x01, 0x02,
    0x14, 0x03, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00, 0xee, 0x55, 0x68, 0x8a,
    0x90, 0x00, 0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x80, 0x01, 0x00, 0x00, 0x00, 0x00, 0x6e, 0x61, 0x6d, 0x65, 0x64, 0x2e,
    0x6e, 0x70, 0x79, 0x50, 0x4b, 0x01, 0x02, 0x14, 0x03, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x21, 0x00, 0x6a, 0xcf, 0xf2, 0x51, 0x86, 0x00, 0x00, 0x00, 0x86, 0x00, 0x00, 0x00, 0x09,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x01, 0xcb, 0x00, 0x00,
    0x00, 0x61, 0x72, 0x72, 0x5f, 0x30, 0x2e, 0x6e, 0x70, 0x79, 0x50, 0x4b, 0x05, 0x06, 0x00, 0x00,
    0x00, 0x00, 0x02, 0x00, 0x02, 0x00, 0x6e, 0x00, 0x00, 0x00, 0x8c, 0x01, 0x00, 0x00, 0x00, 0x00,
};
/* np_savez_compressed: 398 bytes */
static const unsigned char np_savez_compressed[] = {
    0x50, 0x4b, 0x03, 0x04, 0x14, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x21, 0x00, 0xee, 0x55,
    0x68, 0x8a, 0x49, 0x00, 0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x09, 0x00, 0x14, 0x00, 0x6e, 0x61,
    0x6d, 0x65, 0x64, 0x2e, 0x6e, 0x70, 0x79, 0x01, 0x00, 0x10, 0x00, 0x90, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x49, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x9b, 0xec, 0x17, 0xea, 0x1b,
    0x10, 0xc9, 0xc8, 0x50, 0xc6, 0x50, 0xad, 0x9e, 0x92, 0x5a, 0x9c, 0x5c, 0xa4, 0x6e, 0xa5, 0xa0,
    0x6e, 0x93, 0x66, 0xa1, 0xae, 0xa3, 0xa0, 0x9e, 0x96, 0x5f, 0x54, 0x52, 0x94, 0x98, 0x17, 0x9f,
    0x5f, 0x94, 0x92, 0x0a, 0x12, 0x77, 0x4b, 0xcc, 0x29, 0x4e, 0x05, 0x8a, 0x17, 0x67, 0x24, 0x16,
    0xa4, 0x02, 0xf9, 0x1a, 0x46, 0x3a, 0x9a, 0x3a, 0x0a, 0xb5, 0x0a, 0x14, 0x00, 0x2e, 0x06, 0x14,
    0xf0, 0xc1, 0x1e, 0x00, 0x50, 0x4b, 0x03, 0x04, 0x14, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00,
    0x21, 0x00, 0x6b, 0xbb, 0xf7, 0xc8, 0x4b, 0x00, 0x00, 0x00, 0x10, 0x02, 0x00, 0x00, 0x09, 0x00,
    0x14, 0x00, 0x61, 0x72, 0x72, 0x5f, 0x30, 0x2e, 0x6e, 0x70, 0x79, 0x01, 0x00, 0x10, 0x00, 0x10,
    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x4b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x9b,
    0xec, 0x17, 0xea, 0x1b, 0x10, 0xc9, 0xc8, 0x50, 0xc6, 0x50, 0xad, 0x9e, 0x92, 0x5a, 0x9c, 0x5c,
    0xa4, 0x6e, 0xa5, 0xa0, 0x6e, 0x93, 0x69, 0xa2, 0xae, 0xa3, 0xa0, 0x9e, 0x96, 0x5f, 0x54, 0x52,
    0x94, 0x98, 0x17, 0x9f, 0x5f, 0x94, 0x92, 0x0a, 0x12, 0x77, 0x4b, 0xcc, 0x29, 0x4e, 0x05, 0x8a,
    0x17, 0x67, 0x24, 0x16, 0xa4, 0x02, 0xf9, 0x1a, 0x86, 0x06, 0x06, 0x3a, 0x9a, 0x3a, 0x0a, 0xb5,
    0x0a, 0x64, 0x03, 0x2e, 0x86, 0x51, 0x30, 0xa8, 0x00, 0x00, 0x50, 0x4b, 0x01, 0x02, 0x14, 0x03,
    0x14, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x21, 0x00, 0xee, 0x55, 0x68, 0x8a, 0x49, 0x00,
    0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x80, 0x01, 0x00, 0x00, 0x00, 0x00, 0x6e, 0x61, 0x6d, 0x65, 0x64, 0x2e, 0x6e, 0x70,
    0x79, 0x50, 0x4b, 0x01, 0x02, 0x14, 0x03, 0x14, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x21,
    0x00, 0x6b, 0xbb, 0xf7, 0xc8, 0x4b, 0x00, 0x00, 0x00, 0x10, 0x02, 0x00, 0x00, 0x09, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x01, 0x84, 0x00, 0x00, 0x00, 0x61,
    0x72, 0x72, 0x5f, 0x30, 0x2e, 0x6e, 0x70, 0x79, 0x50, 0x4b, 0x05, 0x06, 0x00, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x02, 0x00, 0x6e, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x00, 0x00, 0x00, 0x00,
};

/* ---- a small zip writer ------------------------------------------------ */

struct buf {
    unsigned char *p; /* owned */
    size_t len, cap;
};

static void put(struct buf *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p) {
            perror("realloc");
            exit(2);
        }
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void put16(struct buf *b, uint32_t v)
{
    unsigned char x[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
    put(b, x, 2);
}

static void put32(struct buf *b, uint32_t v)
{
    put16(b, v & 0xFFFF);
    put16(b, v >> 16);
}

static void put64(struct buf *b, uint64_t v)
{
    put32(b, (uint32_t)v);
    put32(b, (uint32_t)(v >> 32));
}

static void set32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void set16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

enum lfh_style {
    LFH_PLAIN,      /* real sizes, no extra (zip(1), old numpy) */
    LFH_NUMPY,      /* real sizes + 20-byte ZIP64 extra (numpy, Python < 3.11.4) */
    LFH_SATURATED,  /* needed 45, sizes 0xFFFFFFFF, real sizes in the extra (3.11.4+) */
    LFH_DESCRIPTOR, /* flag bit 3, zero CRC/sizes, zeroed extra, PK\7\8 after the data */
};

#define CD64_USIZE 1
#define CD64_CSIZE 2
#define CD64_LHO 4

struct tmem {
    const char *name;
    size_t name_len; /* 0: strlen(name) */
    const void *data;
    size_t len;
    uint16_t method; /* 8 deflates; anything else stores the bytes under that label */
    uint16_t flags;
    enum lfh_style lfh;
    int cd64;            /* CD64_* fields saturated in the CD, values in its ZIP64 extra */
    uint64_t fake_usize; /* nonzero: the CD claims this usize (deflate members only) */
    uint64_t fake_lho;   /* nonzero: the CD claims this local header offset */
    /* filled by build() */
    uint64_t lho; /* actual source offset of the local header */
    uint64_t data_offset;
    uint64_t csize;
    uint32_t crc;
    uint64_t cde; /* actual source offset of the CD entry */
};

struct tarc {
    size_t prepend; /* junk before the archive; stated offsets ignore it */
    const void *comment;
    size_t comment_len;
    int zip64; /* 1: ZIP64 EOCD + locator, EOCD saturated; 2: only count saturated */
    /* filled by build() */
    uint64_t cd_offset; /* actual */
    uint64_t cd_size;
    uint64_t eocd; /* actual */
};

static size_t deflate_raw(const void *in, size_t len, unsigned char **out)
{
    z_stream zs;
    size_t cap;

    memset(&zs, 0, sizeof(zs));
    if (deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        exit(2);
    cap = deflateBound(&zs, (uLong)len);
    *out = malloc(cap + 1);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = *out;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
        exit(2);
    deflateEnd(&zs);
    return zs.total_out;
}

static void build_local(struct buf *b, size_t base, struct tmem *m, uint64_t usize)
{
    bool dd = m->lfh == LFH_DESCRIPTOR, sat = m->lfh == LFH_SATURATED;
    unsigned char *comp = NULL;
    const void *payload = m->data;

    if (m->method == 8) {
        m->csize = deflate_raw(m->data, m->len, &comp);
        payload = comp;
    } else {
        m->csize = m->len;
    }
    m->crc = (uint32_t)crc32(0, m->data, (uInt)m->len);
    m->lho = b->len;
    put32(b, 0x04034b50);
    put16(b, sat ? 45 : 20);
    put16(b, m->flags | (dd ? 8 : 0));
    put16(b, m->method);
    put16(b, 0);    /* time */
    put16(b, 0x21); /* 1980-01-01 */
    put32(b, dd ? 0 : m->crc);
    put32(b, dd ? 0 : sat ? 0xFFFFFFFF : (uint32_t)m->csize);
    put32(b, dd ? 0 : sat ? 0xFFFFFFFF : (uint32_t)usize);
    put16(b, (uint32_t)m->name_len);
    put16(b, m->lfh == LFH_PLAIN ? 0 : 20);
    put(b, m->name, m->name_len);
    if (m->lfh != LFH_PLAIN) {
        put16(b, 1);
        put16(b, 16);
        put64(b, dd ? 0 : usize);
        put64(b, dd ? 0 : m->csize);
    }
    m->data_offset = b->len;
    put(b, payload, m->csize);
    if (dd) {
        put32(b, 0x08074b50);
        put32(b, m->crc);
        put64(b, m->csize);
        put64(b, usize);
    }
    free(comp);
    (void)base;
}

static void build_central(struct buf *b, size_t base, struct tmem *m, uint64_t usize)
{
    uint64_t lho = m->fake_lho ? m->fake_lho : m->lho - base;
    uint16_t xlen = (uint16_t)(8 * __builtin_popcount((unsigned)m->cd64));

    m->cde = b->len;
    put32(b, 0x02014b50);
    put16(b, 0x0314); /* made by: Unix, 2.0 */
    put16(b, m->cd64 ? 45 : 20);
    put16(b, m->flags | (m->lfh == LFH_DESCRIPTOR ? 8 : 0));
    put16(b, m->method);
    put16(b, 0);
    put16(b, 0x21);
    put32(b, m->crc);
    put32(b, m->cd64 & CD64_CSIZE ? 0xFFFFFFFF : (uint32_t)m->csize);
    put32(b, m->cd64 & CD64_USIZE ? 0xFFFFFFFF : (uint32_t)usize);
    put16(b, (uint32_t)m->name_len);
    put16(b, xlen ? xlen + 4u : 0);
    put16(b, 0);          /* comment */
    put16(b, 0);          /* disk */
    put16(b, 0);          /* internal attr */
    put32(b, 0x01800000); /* 0o600 << 16, no S_IFREG: as numpy writes it */
    put32(b, m->cd64 & CD64_LHO ? 0xFFFFFFFF : (uint32_t)lho);
    put(b, m->name, m->name_len);
    if (xlen) {
        put16(b, 1);
        put16(b, xlen);
        if (m->cd64 & CD64_USIZE)
            put64(b, usize);
        if (m->cd64 & CD64_CSIZE)
            put64(b, m->csize);
        if (m->cd64 & CD64_LHO)
            put64(b, lho);
    }
}

static void build_end(struct buf *b, size_t base, size_t n, struct tarc *a)
{
    uint64_t z64 = b->len;
    bool sat = a->zip64 == 1;

    a->cd_size = b->len - a->cd_offset;
    if (a->zip64) {
        put32(b, 0x06064b50);
        put64(b, 44);
        put16(b, 45);
        put16(b, 45);
        put32(b, 0);
        put32(b, 0);
        put64(b, n);
        put64(b, n);
        put64(b, a->cd_size);
        put64(b, a->cd_offset - base);
        put32(b, 0x07064b50);
        put32(b, 0);
        put64(b, z64 - base);
        put32(b, 1);
    }
    a->eocd = b->len;
    put32(b, 0x06054b50);
    put16(b, 0);
    put16(b, 0);
    put16(b, a->zip64 ? 0xFFFF : (uint32_t)n);
    put16(b, a->zip64 ? 0xFFFF : (uint32_t)n);
    put32(b, sat ? 0xFFFFFFFF : (uint32_t)a->cd_size);
    put32(b, sat ? 0xFFFFFFFF : (uint32_t)(a->cd_offset - base));
    put16(b, (uint32_t)a->comment_len);
    put(b, a->comment, a->comment_len);
}

/* Build an archive of n members; returns the owned bytes and *len. */
static unsigned char *build(struct tmem *m, size_t n, struct tarc *a, size_t *len)
{
    struct buf b = {0};
    struct tarc none = {0};
    size_t i;

    if (!a)
        a = &none;
    for (i = 0; i < a->prepend; i++)
        put(&b, &"#!/bin/sh junk\n"[i % 15], 1);
    for (i = 0; i < n; i++) {
        if (!m[i].name_len)
            m[i].name_len = strlen(m[i].name);
        build_local(&b, a->prepend, &m[i], m[i].fake_usize ? m[i].fake_usize : m[i].len);
    }
    a->cd_offset = b.len;
    for (i = 0; i < n; i++)
        build_central(&b, a->prepend, &m[i], m[i].fake_usize ? m[i].fake_usize : m[i].len);
    build_end(&b, a->prepend, n, a);
    *len = b.len;
    if (!b.p)
        b.p = malloc(1);
    return b.p;
}

/* ---- helpers ------------------------------------------------------------ */

static int open_mem(const void *p, size_t len, struct zip_archive **z)
{
    struct src *s;
    int ret = src_mem_new(p, len, &s);

    if (ret < 0)
        return ret;
    ret = zip_archive_open(s, z);
    src_free(s); /* the archive keeps no reference to the source */
    return ret;
}

/* The member's bytes, inflated (method 8) or copied (method 0), checked
 * against the CD's usize and CRC. Returns an owned buffer or NULL. */
static unsigned char *extract(const unsigned char *arc, size_t arc_len, const struct zip_member *m)
{
    unsigned char *out;
    bool ok = false;

    if (m->unsupported || m->usize > (64u << 20) || m->data_offset + m->csize > arc_len)
        return NULL;
    out = malloc((size_t)m->usize + 1);
    if (m->method == ZIP_METHOD_STORED) {
        ok = m->csize == m->usize;
        if (ok)
            memcpy(out, arc + m->data_offset, (size_t)m->usize);
    } else if (m->method == ZIP_METHOD_DEFLATE) {
        z_stream zs;
        memset(&zs, 0, sizeof(zs));
        if (inflateInit2(&zs, -15) == Z_OK) {
            zs.next_in = (Bytef *)(arc + m->data_offset);
            zs.avail_in = (uInt)m->csize;
            zs.next_out = out;
            zs.avail_out = (uInt)m->usize + 1;
            ok = inflate(&zs, Z_FINISH) == Z_STREAM_END && zs.total_out == m->usize &&
                 zs.avail_in == 0;
            inflateEnd(&zs);
        }
    }
    if (ok && m->crc32 != (uint32_t)crc32(0, out, (uInt)m->usize))
        ok = false;
    if (!ok) {
        free(out);
        return NULL;
    }
    return out;
}

static bool member_is(const unsigned char *arc, size_t arc_len, const struct zip_member *m,
                      const void *want, size_t want_len)
{
    unsigned char *out;
    bool ok;

    if (m->usize != want_len)
        return false;
    out = extract(arc, arc_len, m);
    ok = out && memcmp(out, want, want_len) == 0;
    free(out);
    return ok;
}

static bool name_is(const struct zip_member *m, const char *name)
{
    return m->name_len == strlen(name) && memcmp(m->name, name, m->name_len) == 0 &&
           m->name[m->name_len] == '\0';
}

/* Some payloads: an npy-ish header and compressible data. */
static unsigned char payload_a[1000];
static unsigned char payload_b[77];

static void init_payloads(void)
{
    size_t i;
    memcpy(payload_a, "\x93NUMPY\x01\x00", 8);
    for (i = 8; i < sizeof(payload_a); i++)
        payload_a[i] = (unsigned char)(i % 13);
    for (i = 0; i < sizeof(payload_b); i++)
        payload_b[i] = (unsigned char)(i * 37 + 11);
}

/* An archive must open and every member that claims to be servable must
 * lie inside it; used on damaged inputs where either outcome is fine. */
static bool opens_sanely(const unsigned char *p, size_t len)
{
    struct zip_archive *z = (struct zip_archive *)1;
    int ret = open_mem(p, len, &z);
    bool ok = true;
    size_t i;

    if (ret < 0)
        return z == NULL && (ret == -EINVAL || ret == -EIO || ret == -EOPNOTSUPP);
    for (i = 0; i < z->count; i++) {
        const struct zip_member *m = &z->members[i];
        if (m->unsupported) {
            ok = ok && m->why != NULL;
            continue;
        }
        ok = ok && m->why == NULL && m->data_offset + m->csize <= len &&
             m->data_offset >= m->lho + 30;
    }
    zip_free(z);
    return ok;
}

/* ---- tests -------------------------------------------------------------- */

static void test_method_name(void)
{
    char buf[16];

    CHECK(strcmp(zip_method_name(0, buf, sizeof(buf)), "stored") == 0);
    CHECK(strcmp(zip_method_name(8, buf, sizeof(buf)), "deflate") == 0);
    CHECK(strcmp(zip_method_name(9, buf, sizeof(buf)), "deflate64") == 0);
    CHECK(strcmp(zip_method_name(12, buf, sizeof(buf)), "bzip2") == 0);
    CHECK(strcmp(zip_method_name(14, buf, sizeof(buf)), "lzma") == 0);
    CHECK(strcmp(zip_method_name(93, buf, sizeof(buf)), "zstd") == 0);
    CHECK(strcmp(zip_method_name(95, buf, sizeof(buf)), "xz") == 0);
    CHECK(strcmp(zip_method_name(98, buf, sizeof(buf)), "ppmd") == 0);
    CHECK(zip_method_name(99, buf, sizeof(buf)) == buf);
    CHECK(strcmp(buf, "method 99") == 0);
    CHECK(strcmp(zip_method_name(65535, buf, sizeof(buf)), "method 65535") == 0);
}

/* numpy's own bytes: the LFH has a 20-byte ZIP64 extra, the CD has none. */
static void test_numpy_savez(void)
{
    struct zip_archive *z;
    const struct zip_member *m;

    CHECK_EQ(open_mem(np_savez, sizeof(np_savez), &z), 0);
    if (!z)
        return;
    CHECK_EQ(z->count, 2);
    m = &z->members[0];
    CHECK(name_is(m, "named.npy"));
    CHECK_EQ(m->method, ZIP_METHOD_STORED);
    CHECK_EQ(m->usize, 0x90);
    CHECK_EQ(m->csize, 0x90);
    CHECK_EQ(m->crc32, 0x8a6855ee);
    CHECK_EQ(m->lho, 0);
    CHECK_EQ(m->data_offset, 59); /* 30 + 9 + 20: the LFH's extra, not the CD's */
    CHECK_EQ(m->unsupported, 0);
    CHECK(m->why == NULL);
    CHECK(!m->is_dir);
    CHECK(memcmp(np_savez + m->data_offset, "\x93NUMPY", 6) == 0);
    CHECK(member_is(np_savez, sizeof(np_savez), m, np_savez + 59, 0x90));
    m = &z->members[1];
    CHECK(name_is(m, "arr_0.npy"));
    CHECK_EQ(m->lho, 59 + 0x90);
    CHECK_EQ(m->data_offset, 59 + 0x90 + 59);
    CHECK_EQ(m->usize, 0x86);
    CHECK(memcmp(np_savez + m->data_offset + 0x80, "\x00\x00\x01\x00\x02\x00", 6) == 0);
    zip_free(z);
}

static void test_numpy_savez_compressed(void)
{
    struct zip_archive *z;
    unsigned char *want;
    size_t i;

    CHECK_EQ(open_mem(np_savez_compressed, sizeof(np_savez_compressed), &z), 0);
    if (!z)
        return;
    CHECK_EQ(z->count, 2);
    CHECK(name_is(&z->members[0], "named.npy"));
    CHECK(name_is(&z->members[1], "arr_0.npy"));
    for (i = 0; i < z->count; i++) {
        CHECK_EQ(z->members[i].method, ZIP_METHOD_DEFLATE);
        CHECK_EQ(z->members[i].unsupported, 0);
        CHECK_EQ(z->members[i].data_offset, z->members[i].lho + 59);
    }
    /* arr_0 is np.zeros(100, '<i4'): inflates to its CRC, header then zeros. */
    want = extract(np_savez_compressed, sizeof(np_savez_compressed), &z->members[1]);
    CHECK(want != NULL);
    if (want) {
        CHECK_EQ(z->members[1].usize, 128 + 400);
        CHECK(memcmp(want, "\x93NUMPY\x01\x00\x76\x00{'descr': '<i4'", 25) == 0);
        CHECK(memmem(want, 128, "'shape': (100,)", 15) != NULL);
        for (i = 128; i < 528; i++)
            if (want[i])
                break;
        CHECK_EQ(i, 528);
    }
    free(want);
    CHECK(member_is(np_savez_compressed, sizeof(np_savez_compressed), &z->members[0], np_savez + 59,
                    0x90));
    zip_free(z);
}

/* Our writer in LFH_NUMPY mode reproduces numpy's bytes exactly, so the
 * variants below stand for what numpy would write. */
static void test_writer_matches_numpy(void)
{
    struct tmem m[2] = {
        {.name = "named.npy", .data = np_savez + 59, .len = 0x90, .lfh = LFH_NUMPY},
        {.name = "arr_0.npy", .data = np_savez + 59 + 0x90 + 59, .len = 0x86, .lfh = LFH_NUMPY},
    };
    size_t len;
    unsigned char *p = build(m, 2, NULL, &len);

    CHECK_EQ(len, sizeof(np_savez));
    CHECK(len == sizeof(np_savez) && memcmp(p, np_savez, len) == 0);
    free(p);
}

/* Each LFH style, stored and deflated, with the CD as the only truth. */
static void test_lfh_styles(void)
{
    static const enum lfh_style styles[] = {LFH_PLAIN, LFH_NUMPY, LFH_SATURATED, LFH_DESCRIPTOR};
    size_t si, i, len;

    for (si = 0; si < 4; si++) {
        struct tmem m[3] = {
            {.name = "a.npy", .data = payload_a, .len = sizeof(payload_a), .lfh = styles[si]},
            {.name = "b.npy",
             .data = payload_b,
             .len = sizeof(payload_b),
             .method = 8,
             .lfh = styles[si]},
            {.name = "c.npy",
             .data = payload_a,
             .len = sizeof(payload_a),
             .method = 8,
             .lfh = styles[si]},
        };
        struct zip_archive *z;
        unsigned char *p = build(m, 3, NULL, &len);

        CHECK_EQ(open_mem(p, len, &z), 0);
        if (z) {
            CHECK_EQ(z->count, 3);
            for (i = 0; i < 3 && i < z->count; i++) {
                CHECK_EQ(z->members[i].data_offset, m[i].data_offset);
                CHECK_EQ(z->members[i].lho, m[i].lho);
                CHECK_EQ(z->members[i].csize, m[i].csize);
                CHECK(member_is(p, len, &z->members[i], m[i].data, m[i].len));
                CHECK_EQ(!!(z->members[i].flags & ZIP_FLAG_DESCRIPTOR),
                         styles[si] == LFH_DESCRIPTOR);
            }
        }
        zip_free(z);
        free(p);
    }
}

/* ZIP64 EOCD + locator, CD extras with saturated fields (only those, in the
 * order usize, csize, lho), a faked 5 GiB member. */
static void test_zip64(void)
{
    int mode;

    for (mode = 1; mode <= 2; mode++) {
        struct tmem m[4] = {
            {.name = "a.npy",
             .data = payload_a,
             .len = sizeof(payload_a),
             .lfh = LFH_SATURATED,
             .cd64 = CD64_USIZE | CD64_CSIZE | CD64_LHO},
            {.name = "b.npy",
             .data = payload_b,
             .len = sizeof(payload_b),
             .method = 8,
             .lfh = LFH_NUMPY,
             .cd64 = CD64_USIZE,
             .fake_usize = 5ull << 30},
            {.name = "c.npy",
             .data = payload_b,
             .len = sizeof(payload_b),
             .lfh = LFH_NUMPY,
             .cd64 = CD64_LHO},
            {.name = "d.npy",
             .data = payload_a,
             .len = sizeof(payload_a),
             .method = 8,
             .lfh = LFH_DESCRIPTOR,
             .cd64 = CD64_CSIZE | CD64_LHO},
        };
        struct tarc a = {.zip64 = mode};
        struct zip_archive *z;
        size_t len, i;
        unsigned char *p = build(m, 4, &a, &len);

        CHECK_EQ(open_mem(p, len, &z), 0);
        if (z) {
            CHECK_EQ(z->count, 4);
            for (i = 0; i < z->count; i++) {
                CHECK_EQ(z->members[i].lho, m[i].lho);
                CHECK_EQ(z->members[i].data_offset, m[i].data_offset);
                CHECK_EQ(z->members[i].csize, m[i].csize);
                CHECK_EQ(z->members[i].unsupported, 0);
            }
            CHECK_EQ(z->members[1].usize, 5ull << 30);
            CHECK(member_is(p, len, &z->members[0], payload_a, sizeof(payload_a)));
            CHECK(member_is(p, len, &z->members[2], payload_b, sizeof(payload_b)));
            CHECK(member_is(p, len, &z->members[3], payload_a, sizeof(payload_a)));
        }
        zip_free(z);
        free(p);
    }
}

/* A local header claimed past 4 GiB (in the ZIP64 extra) in a small file:
 * that member is flagged, the archive still opens. */
static void test_zip64_lho_past_eof(void)
{
    struct tmem m[2] = {
        {.name = "far.npy",
         .data = payload_b,
         .len = sizeof(payload_b),
         .lfh = LFH_NUMPY,
         .cd64 = CD64_LHO,
         .fake_lho = 6ull << 30},
        {.name = "near.npy", .data = payload_b, .len = sizeof(payload_b), .lfh = LFH_NUMPY},
    };
    struct tarc a = {.zip64 = 1};
    struct zip_archive *z;
    size_t len;
    unsigned char *p = build(m, 2, &a, &len);

    CHECK_EQ(open_mem(p, len, &z), 0);
    if (z) {
        CHECK_EQ(z->count, 2);
        CHECK_EQ(z->members[0].lho, 6ull << 30);
        CHECK_EQ(z->members[0].unsupported, -EIO);
        CHECK(z->members[0].why != NULL);
        CHECK(member_is(p, len, &z->members[1], payload_b, sizeof(payload_b)));
    }
    zip_free(z);
    free(p);
}

/* ZIP64 sizes past INT64_MAX cannot be a file's size: such a member is
 * listed as unsupported at open (it used to open and fail every lookup),
 * the others still open; INT64_MAX itself is a size like any other. */
static void test_zip64_huge_usize(void)
{
    static const uint64_t sizes[] = {(1ull << 63), UINT64_MAX, (uint64_t)INT64_MAX};
    struct tmem m[4];
    struct tarc a = {.zip64 = 1};
    struct zip_archive *z;
    size_t len;
    unsigned char *p;

    for (int i = 0; i < 3; i++)
        m[i] = (struct tmem){.name = i == 0 ? "h0.npy" : i == 1 ? "h1.npy" : "h2.npy",
                             .data = payload_a,
                             .len = sizeof(payload_a),
                             .method = 8,
                             .lfh = LFH_NUMPY,
                             .cd64 = CD64_USIZE,
                             .fake_usize = sizes[i]};
    m[3] = (struct tmem){.name = "ok.npy", .data = payload_b, .len = sizeof(payload_b),
                         .lfh = LFH_NUMPY};
    p = build(m, 4, &a, &len);
    CHECK_EQ(open_mem(p, len, &z), 0);
    if (z) {
        CHECK_EQ(z->count, 4);
        CHECK_EQ(z->members[0].usize, 1ull << 63);
        CHECK_EQ(z->members[0].unsupported, -EOPNOTSUPP);
        CHECK(z->members[0].why && strstr(z->members[0].why, "too large"));
        CHECK_EQ(z->members[1].unsupported, -EOPNOTSUPP);
        CHECK_EQ(z->members[2].unsupported, 0);
        CHECK(z->members[2].usize == (uint64_t)INT64_MAX);
        CHECK_EQ(z->members[3].unsupported, 0);
        CHECK(member_is(p, len, &z->members[3], payload_b, sizeof(payload_b)));
        /* every servable member's numbers fit an off_t */
        for (size_t i = 0; i < z->count; i++)
            if (!z->members[i].unsupported)
                CHECK(z->members[i].usize <= INT64_MAX && z->members[i].csize <= INT64_MAX &&
                      z->members[i].data_offset + z->members[i].csize <= len);
    }
    zip_free(z);
    free(p);
}

/* A ZIP64 extra too short for its saturated fields breaks the directory. */
static void test_zip64_extra_short(void)
{
    struct tmem m[1] = {{.name = "a.npy",
                         .data = payload_b,
                         .len = sizeof(payload_b),
                         .cd64 = CD64_USIZE | CD64_CSIZE}};
    struct zip_archive *z = (struct zip_archive *)1;
    size_t len;
    unsigned char *p = build(m, 1, NULL, &len);

    /* Saturate lho too: the extra now lacks its third value. */
    set32(p + m[0].cde + 42, 0xFFFFFFFF);
    CHECK_EQ(open_mem(p, len, &z), -EINVAL);
    CHECK(z == NULL);
    /* Saturated without any ZIP64 extra. */
    free(p);
    m[0].cd64 = 0;
    m[0].name_len = 0;
    p = build(m, 1, NULL, &len);
    set32(p + m[0].cde + 20, 0xFFFFFFFF);
    CHECK_EQ(open_mem(p, len, &z), -EINVAL);
    free(p);
}

static void test_comment_with_eocd_signature(void)
{
    /* A fake EOCD inside the comment, followed by enough bytes to look like
     * a full record pointing at nonsense. */
    static const unsigned char comment[] = "see PK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x00"
                                           "\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00 tail";
    struct tmem m[1] = {
        {.name = "a.npy", .data = payload_a, .len = sizeof(payload_a), .lfh = LFH_NUMPY}};
    struct tarc a = {.comment = comment, .comment_len = sizeof(comment) - 1};
    struct zip_archive *z;
    size_t len;
    unsigned char *p = build(m, 1, &a, &len);

    CHECK_EQ(open_mem(p, len, &z), 0);
    if (z) {
        CHECK_EQ(z->count, 1);
        CHECK(member_is(p, len, &z->members[0], payload_a, sizeof(payload_a)));
    }
    zip_free(z);
    /* Trailing junk after the comment: no exact match, the record still found. */
    p = realloc(p, len + 5);
    memcpy(p + len, "junk!", 5);
    CHECK_EQ(open_mem(p, len + 5, &z), 0);
    if (z)
        CHECK_EQ(z->count, 1);
    zip_free(z);
    free(p);

    /* A complete, valid empty-archive EOCD inside the comment: only the
     * comment length tells the real record (exact fit) from it. */
    {
        static const unsigned char fake[] = "PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
                                            "\0\0 end";
        struct tarc a2 = {.comment = fake, .comment_len = sizeof(fake) - 1};

        m[0].name_len = 0;
        p = build(m, 1, &a2, &len);
        CHECK_EQ(open_mem(p, len, &z), 0);
        if (z)
            CHECK_EQ(z->count, 1);
        zip_free(z);
        free(p);
    }
}

/* Self-extractor style: bytes in front, every stated offset too small by
 * the same amount. Also with ZIP64 (the locator's offset is stale too). */
static void test_prepended(void)
{
    int zip64;

    for (zip64 = 0; zip64 <= 1; zip64++) {
        struct tmem m[2] = {
            {.name = "a.npy", .data = payload_a, .len = sizeof(payload_a), .lfh = LFH_NUMPY},
            {.name = "b.npy",
             .data = payload_b,
             .len = sizeof(payload_b),
             .method = 8,
             .cd64 = zip64 ? CD64_LHO : 0},
        };
        struct tarc a = {.prepend = 4321, .zip64 = zip64};
        struct zip_archive *z;
        size_t len;
        unsigned char *p = build(m, 2, &a, &len);

        CHECK_EQ(open_mem(p, len, &z), 0);
        if (z) {
            CHECK_EQ(z->count, 2);
            CHECK_EQ(z->members[0].lho, 4321);
            CHECK_EQ(z->members[1].lho, m[1].lho);
            CHECK(member_is(p, len, &z->members[0], payload_a, sizeof(payload_a)));
            CHECK(member_is(p, len, &z->members[1], payload_b, sizeof(payload_b)));
        }
        zip_free(z);
        free(p);
    }
}

static void test_empty(void)
{
    static const unsigned char empty[22] = {0x50, 0x4b, 0x05, 0x06};
    struct zip_archive *z;
    struct tarc a = {.comment = "hello", .comment_len = 5, .prepend = 100};
    size_t len;
    unsigned char *p;

    CHECK_EQ(open_mem(empty, sizeof(empty), &z), 0);
    if (z) {
        CHECK_EQ(z->count, 0);
        CHECK(z->members == NULL);
    }
    zip_free(z);
    p = build(NULL, 0, &a, &len);
    CHECK_EQ(len, 100 + 22 + 5);
    CHECK_EQ(open_mem(p, len, &z), 0);
    if (z)
        CHECK_EQ(z->count, 0);
    zip_free(z);
    free(p);
    a = (struct tarc){.zip64 = 1};
    p = build(NULL, 0, &a, &len);
    CHECK_EQ(open_mem(p, len, &z), 0);
    if (z)
        CHECK_EQ(z->count, 0);
    zip_free(z);
    free(p);
}

static void test_not_zip(void)
{
    static const unsigned char junk[100] = "PK\x03\x04 not really";
    struct zip_archive *z = (struct zip_archive *)1;

    CHECK_EQ(open_mem(junk, 0, &z), -EINVAL);
    CHECK(z == NULL);
    CHECK_EQ(open_mem(junk, 21, &z), -EINVAL);
    CHECK_EQ(open_mem(junk, sizeof(junk), &z), -EINVAL);
    CHECK_EQ(open_mem("PK\x05\x06", 4, &z), -EINVAL);
}

/* Members npyfs must list but cannot serve. */
static void test_unsupported_members(void)
{
    struct tmem m[6] = {
        {.name = "enc.npy", .data = payload_b, .len = sizeof(payload_b), .flags = 1},
        {.name = "bz.npy", .data = payload_b, .len = sizeof(payload_b), .method = 12},
        {.name = "odd.npy", .data = payload_b, .len = sizeof(payload_b), .method = 77},
        {.name = "lz.npy", .data = payload_b, .len = sizeof(payload_b), .method = 14},
        {.name = "sizes.npy", .data = payload_b, .len = sizeof(payload_b)},
        {.name = "ok.npy", .data = payload_b, .len = sizeof(payload_b)},
    };
    struct zip_archive *z;
    size_t len;
    unsigned char *p = build(m, 6, NULL, &len);

    set32(p + m[4].cde + 24, sizeof(payload_b) + 1); /* stored, CD usize != csize */
    CHECK_EQ(open_mem(p, len, &z), 0);
    if (z && z->count == 6) {
        CHECK_EQ(z->members[0].unsupported, -EOPNOTSUPP);
        CHECK(z->members[0].why && strcmp(z->members[0].why, "encrypted") == 0);
        CHECK_EQ(z->members[0].flags & ZIP_FLAG_ENCRYPTED, ZIP_FLAG_ENCRYPTED);
        CHECK_EQ(z->members[1].unsupported, -EOPNOTSUPP);
        CHECK(z->members[1].why && strcmp(z->members[1].why, "unsupported method bzip2") == 0);
        CHECK_EQ(z->members[1].method, 12);
        CHECK_EQ(z->members[2].unsupported, -EOPNOTSUPP);
        CHECK(z->members[2].why && strstr(z->members[2].why, "method") != NULL);
        CHECK(z->members[3].why && strcmp(z->members[3].why, "unsupported method lzma") == 0);
        CHECK_EQ(z->members[4].unsupported, -EIO);
        CHECK(z->members[4].why && strcmp(z->members[4].why, "stored sizes differ") == 0);
        CHECK_EQ(z->members[5].unsupported, 0);
        CHECK(z->members[5].why == NULL);
        CHECK(member_is(p, len, &z->members[5], payload_b, sizeof(payload_b)));
    } else {
        CHECK(!"unsupported members: archive did not open with 6 members");
    }
    zip_free(z);
    free(p);
}

/* Names: directories, a NUL byte kept with the true length, an empty name. */
static void test_names(void)
{
    struct tmem m[4] = {
        {.name = "dir/"},
        {.name = "dir/x.npy", .data = payload_b, .len = sizeof(payload_b)},
        {.name = "nul\0in.npy", .name_len = 10, .data = payload_b, .len = 3},
        {.name = "", .data = payload_b, .len = 0},
    };
    struct zip_archive *z;
    size_t len;
    unsigned char *p;

    p = build(m, 3, NULL, &len);
    CHECK_EQ(open_mem(p, len, &z), 0);
    if (z && z->count == 3) {
        CHECK(name_is(&z->members[0], "dir/"));
        CHECK(z->members[0].is_dir);
        CHECK(!z->members[1].is_dir);
        CHECK_EQ(z->members[2].name_len, 10);
        CHECK(memcmp(z->members[2].name, "nul\0in.npy", 11) == 0);
    } else {
        CHECK(!"names: archive did not open with 3 members");
    }
    zip_free(z);
    free(p);
    /* An empty name. */
    m[3].name_len = 0;
    p = build(&m[3], 1, NULL, &len);
    CHECK_EQ(open_mem(p, len, &z), 0);
    if (z && z->count == 1) {
        CHECK_EQ(z->members[0].name_len, 0);
        CHECK(z->members[0].name && z->members[0].name[0] == '\0');
        CHECK(!z->members[0].is_dir);
        CHECK_EQ(z->members[0].unsupported, 0);
    }
    zip_free(z);
    free(p);
}

/* Damage to the directory fails the open; damage to one member flags it. */
static void test_damaged(void)
{
    struct tmem m[2] = {
        {.name = "a.npy", .data = payload_a, .len = sizeof(payload_a), .lfh = LFH_NUMPY},
        {.name = "b.npy", .data = payload_b, .len = sizeof(payload_b), .method = 8},
    };
    struct tarc a = {0};
    struct zip_archive *z = (struct zip_archive *)1;
    size_t len;
    unsigned char *orig = build(m, 2, &a, &len), *p = malloc(len);

#define RESET() memcpy(p, orig, len)
    /* CD count mismatch, both ways. */
    RESET();
    set16(p + a.eocd + 8, 3);
    set16(p + a.eocd + 10, 3);
    CHECK_EQ(open_mem(p, len, &z), -EINVAL);
    CHECK(z == NULL);
    RESET();
    set16(p + a.eocd + 8, 1);
    set16(p + a.eocd + 10, 1);
    CHECK_EQ(open_mem(p, len, &z), -EINVAL);
    /* Count on this disk != total: a spanned archive. */
    RESET();
    set16(p + a.eocd + 8, 1);
    CHECK(open_mem(p, len, &z) < 0);
    /* Multi-disk. */
    RESET();
    set16(p + a.eocd + 4, 2);
    CHECK_EQ(open_mem(p, len, &z), -EOPNOTSUPP);
    RESET();
    set16(p + a.eocd + 6, 1);
    CHECK_EQ(open_mem(p, len, &z), -EOPNOTSUPP);
    /* Huge count: rejected before any allocation of that size. */
    RESET();
    set16(p + a.eocd + 8, 0xFFFF);
    set16(p + a.eocd + 10, 0xFFFF);
    CHECK_EQ(open_mem(p, len, &z), -EINVAL);
    /* CD offset past EOF, CD size past its start, CD offset 0 with a real size. */
    RESET();
    set32(p + a.eocd + 16, (uint32_t)len + 100);
    CHECK_EQ(open_mem(p, len, &z), -EINVAL);
    RESET();
    set32(p + a.eocd + 12, (uint32_t)len);
    CHECK_EQ(open_mem(p, len, &z), -EINVAL);
    RESET();
    set32(p + a.eocd + 16, 0xFFFFFFFF);
    set32(p + a.eocd + 12, 0xFFFFFFFF);
    CHECK_EQ(open_mem(p, len, &z), -EINVAL);
    /* CD entry signature wrong. */
    RESET();
    p[m[1].cde + 1] = 'X';
    CHECK_EQ(open_mem(p, len, &z), -EINVAL);
    /* CD entry name length runs past the CD. */
    RESET();
    set16(p + m[1].cde + 28, 0x4000);
    CHECK_EQ(open_mem(p, len, &z), -EINVAL);
    /* Extra length runs past the CD. */
    RESET();
    set16(p + m[0].cde + 30, 0x100);
    CHECK_EQ(open_mem(p, len, &z), -EINVAL);

    /* Local header offset past EOF: member flagged -EIO. */
    RESET();
    set32(p + m[0].cde + 42, (uint32_t)len + 1000);
    CHECK_EQ(open_mem(p, len, &z), 0);
    if (z && z->count == 2) {
        CHECK_EQ(z->members[0].unsupported, -EIO);
        CHECK(z->members[0].why != NULL);
        CHECK_EQ(z->members[1].unsupported, 0);
    }
    zip_free(z);
    /* Local header signature wrong: flagged -EINVAL. */
    RESET();
    p[m[1].lho + 2] = 9;
    CHECK_EQ(open_mem(p, len, &z), 0);
    if (z && z->count == 2) {
        CHECK_EQ(z->members[0].unsupported, 0);
        CHECK_EQ(z->members[1].unsupported, -EIO);
        CHECK(z->members[1].why != NULL);
    }
    zip_free(z);
    /* LFH extra length sends the data past EOF. */
    RESET();
    set16(p + m[1].lho + 28, 0xFFFF);
    CHECK_EQ(open_mem(p, len, &z), 0);
    if (z && z->count == 2)
        CHECK_EQ(z->members[1].unsupported, -EIO);
    zip_free(z);
    /* Compressed size past EOF. */
    RESET();
    set32(p + m[1].cde + 20, 0x7FFFFFFF);
    CHECK_EQ(open_mem(p, len, &z), 0);
    if (z && z->count == 2)
        CHECK_EQ(z->members[1].unsupported, -EIO);
    zip_free(z);
#undef RESET
    free(p);
    free(orig);
}

/* ZIP64 EOCD damage: a claimed 2^32 entries, a broken record, multi-disk. */
static void test_zip64_damaged(void)
{
    struct tmem m[1] = {{.name = "a.npy", .data = payload_b, .len = sizeof(payload_b)}};
    struct tarc a = {.zip64 = 1};
    struct zip_archive *z = (struct zip_archive *)1;
    size_t len;
    unsigned char *orig = build(m, 1, &a, &len), *p = malloc(len);
    uint64_t rec = a.eocd - 20 - 56, loc = a.eocd - 20;

    memcpy(p, orig, len);
    set32(p + rec + 24, 0);
    set32(p + rec + 28, 1); /* entries on disk: 2^32 */
    set32(p + rec + 32, 0);
    set32(p + rec + 36, 1); /* total: 2^32 */
    CHECK_EQ(open_mem(p, len, &z), -EINVAL);
    CHECK(z == NULL);
    memcpy(p, orig, len);
    p[rec + 3] = 0; /* record signature */
    CHECK_EQ(open_mem(p, len, &z), -EINVAL);
    memcpy(p, orig, len);
    set32(p + loc + 16, 3); /* locator: 3 disks */
    CHECK_EQ(open_mem(p, len, &z), -EOPNOTSUPP);
    memcpy(p, orig, len);
    set32(p + rec + 16, 1); /* this disk: 1 */
    CHECK_EQ(open_mem(p, len, &z), -EOPNOTSUPP);
    memcpy(p, orig, len);
    set32(p + rec + 40, 0xFFFFFFF0); /* CD size */
    CHECK_EQ(open_mem(p, len, &z), -EINVAL);
    memcpy(p, orig, len);
    set32(p + rec + 52, 7); /* CD offset past 2^34 */
    CHECK_EQ(open_mem(p, len, &z), -EINVAL);
    free(p);
    free(orig);
}

/* More than 65535 members (ZIP64 count, EOCD count saturated) and a CD of
 * several MiB, so entries straddle the reader's CD window. */
static void test_many_members(void)
{
    enum { N = 70000 };
    struct tmem *m = calloc(N, sizeof(*m));
    char *names = malloc((size_t)N * 64);
    struct tarc a = {.zip64 = 2};
    struct zip_archive *z;
    size_t len, i, bad = 0;
    unsigned char *p;

    for (i = 0; i < N; i++) {
        char *nm = names + i * 64;
        snprintf(nm, 64, "d%05zu/%.*s.npy", i % 997, (int)(i % 50),
                 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        m[i].name = nm;
        m[i].data = payload_b;
        m[i].len = i % 3;
        m[i].lfh = i % 2 ? LFH_NUMPY : LFH_PLAIN;
    }
    p = build(m, N, &a, &len);
    CHECK(a.cd_size > 3u << 20);
    CHECK_EQ(open_mem(p, len, &z), 0);
    if (z) {
        CHECK_EQ(z->count, N);
        for (i = 0; i < z->count && i < N; i++)
            if (!name_is(&z->members[i], m[i].name) ||
                z->members[i].data_offset != m[i].data_offset || z->members[i].usize != m[i].len ||
                z->members[i].unsupported)
                bad++;
        CHECK_EQ(bad, 0);
    }
    zip_free(z);
    free(p);
    free(names);
    free(m);
}

/* Cut every suffix, every prefix, and flip every byte of a small archive:
 * each must give a clean error or sane (possibly flagged) members. */
static void test_truncated_and_flipped(void)
{
    struct tmem m[3] = {
        {.name = "a.npy",
         .data = payload_b,
         .len = sizeof(payload_b),
         .lfh = LFH_SATURATED,
         .cd64 = CD64_USIZE | CD64_LHO},
        {.name = "b.npy",
         .data = payload_b,
         .len = sizeof(payload_b),
         .method = 8,
         .lfh = LFH_DESCRIPTOR},
        {.name = "c/", .data = NULL, .len = 0},
    };
    struct tarc a = {.zip64 = 1, .comment = "c", .comment_len = 1};
    size_t len, i, bad = 0;
    unsigned char *orig = build(m, 3, &a, &len), *p = malloc(len);
    static const unsigned char flips[] = {0x01, 0x80, 0xFF};

    for (i = 1; i <= len; i++) {
        memcpy(p, orig, len - i); /* a fresh copy: ASan sees reads past the cut */
        if (!opens_sanely(p, len - i))
            bad++;
        if (!opens_sanely(orig + i, len - i))
            bad++;
    }
    CHECK_EQ(bad, 0);
    bad = 0;
    for (i = 0; i < len; i++) {
        size_t f;
        for (f = 0; f < sizeof(flips); f++) {
            memcpy(p, orig, len);
            p[i] ^= flips[f];
            if (!opens_sanely(p, len))
                bad++;
        }
    }
    CHECK_EQ(bad, 0);
    free(p);
    free(orig);
}

/* The same reader over a real file. */
static void test_file_source(void)
{
    char path[] = "/tmp/npyfs-test-zip-XXXXXX";
    int fd = mkstemp(path);
    struct src *s;
    struct zip_archive *z = NULL;

    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK_EQ(write(fd, np_savez_compressed, sizeof(np_savez_compressed)),
             sizeof(np_savez_compressed));
    close(fd);
    CHECK_EQ(src_file_open(path, &s), 0);
    if (s) {
        CHECK_EQ(zip_archive_open(s, &z), 0);
        if (z)
            CHECK_EQ(z->count, 2);
        zip_free(z);
        src_free(s);
    }
    unlink(path);
}

/* ---- libzip as an independent writer ------------------------------------ */

/* A source of unknown size: libzip then cannot know the member fits in
 * 32 bits and writes ZIP64 extras, as for streamed input. */
struct stream_ctx {
    const unsigned char *data;
    size_t len, pos;
};

static zip_int64_t stream_cb(void *ud, void *data, zip_uint64_t len, zip_source_cmd_t cmd)
{
    struct stream_ctx *c = ud;
    size_t n;

    switch (cmd) {
    case ZIP_SOURCE_OPEN:
        c->pos = 0;
        return 0;
    case ZIP_SOURCE_READ:
        n = c->len - c->pos < len ? c->len - c->pos : (size_t)len;
        memcpy(data, c->data + c->pos, n);
        c->pos += n;
        return (zip_int64_t)n;
    case ZIP_SOURCE_CLOSE:
    case ZIP_SOURCE_FREE:
        return 0;
    case ZIP_SOURCE_STAT:
        zip_stat_init(data);
        return sizeof(zip_stat_t);
    case ZIP_SOURCE_ERROR:
        return zip_error_to_data(NULL, data, len);
    case ZIP_SOURCE_SUPPORTS:
        return zip_source_make_command_bitmap(ZIP_SOURCE_OPEN, ZIP_SOURCE_READ, ZIP_SOURCE_CLOSE,
                                              ZIP_SOURCE_STAT, ZIP_SOURCE_ERROR, ZIP_SOURCE_FREE,
                                              -1);
    default:
        return -1;
    }
}

static int libzip_add(zip_t *za, const char *name, const void *data, size_t len, zip_int32_t method)
{
    zip_source_t *fs = zip_source_buffer(za, data, len, 0);
    zip_int64_t idx;

    if (!fs)
        return -1;
    idx = zip_file_add(za, name, fs, ZIP_FL_ENC_UTF_8);
    if (idx < 0) {
        zip_source_free(fs);
        return -1;
    }
    return zip_set_file_compression(za, (zip_uint64_t)idx, method, 0) == 0 ? (int)idx : -1;
}

/* Write an archive with libzip into memory; returns owned bytes or NULL. */
static unsigned char *libzip_build(size_t *len, struct stream_ctx *stream, bool *have_bz,
                                   bool *have_aes)
{
    static const char comment[] = "libzip PK\x05\x06 comment";
    zip_error_t ze;
    zip_source_t *src, *ss;
    zip_t *za;
    zip_stat_t st;
    unsigned char *out = NULL;
    zip_int64_t idx;

    zip_error_init(&ze);
    src = zip_source_buffer_create(NULL, 0, 0, &ze);
    if (!src)
        return NULL;
    zip_source_keep(src);
    za = zip_open_from_source(src, ZIP_TRUNCATE, &ze);
    if (!za)
        goto out_free_src;
    libzip_add(za, "a.npy", payload_a, sizeof(payload_a), ZIP_CM_STORE);
    libzip_add(za, "sub/b.npy", payload_b, sizeof(payload_b), ZIP_CM_DEFLATE);
    libzip_add(za, "c.npy", payload_a, sizeof(payload_a), ZIP_CM_DEFLATE);
    zip_dir_add(za, "sub/", ZIP_FL_ENC_UTF_8);
    ss = zip_source_function(za, stream_cb, stream);
    if (ss && zip_file_add(za, "streamed.npy", ss, 0) < 0)
        zip_source_free(ss);
    *have_bz = zip_compression_method_supported(ZIP_CM_BZIP2, 1);
    if (*have_bz)
        libzip_add(za, "bz.npy", payload_a, sizeof(payload_a), ZIP_CM_BZIP2);
    *have_aes = zip_encryption_method_supported(ZIP_EM_AES_256, 1);
    if (*have_aes) {
        idx = libzip_add(za, "aes.npy", payload_a, sizeof(payload_a), ZIP_CM_DEFLATE);
        if (idx >= 0)
            zip_file_set_encryption(za, (zip_uint64_t)idx, ZIP_EM_AES_256, "secret");
    }
    zip_set_archive_comment(za, comment, sizeof(comment) - 1);
    if (zip_close(za) < 0) {
        fprintf(stderr, "libzip: %s\n", zip_strerror(za));
        zip_discard(za);
        goto out_free_src;
    }
    if (zip_source_stat(src, &st) < 0 || zip_source_open(src) < 0)
        goto out_free_src;
    out = malloc(st.size ? st.size : 1);
    if (zip_source_read(src, out, st.size) != (zip_int64_t)st.size) {
        free(out);
        out = NULL;
    }
    zip_source_close(src);
    *len = st.size;

out_free_src:
    zip_source_free(src);
    zip_error_fini(&ze);
    return out;
}

static const struct zip_member *find(const struct zip_archive *z, const char *name)
{
    size_t i;

    for (i = 0; i < z->count; i++)
        if (name_is(&z->members[i], name))
            return &z->members[i];
    return NULL;
}

static void test_libzip(void)
{
    struct stream_ctx stream = {payload_a, sizeof(payload_a), 0};
    struct zip_archive *z;
    const struct zip_member *m;
    bool have_bz = false, have_aes = false;
    size_t len = 0;
    unsigned char *p = libzip_build(&len, &stream, &have_bz, &have_aes);

    CHECK(p != NULL);
    if (!p)
        return;
    CHECK_EQ(open_mem(p, len, &z), 0);
    if (!z) {
        free(p);
        return;
    }
    CHECK_EQ(z->count, 5 + have_bz + have_aes);
    m = find(z, "a.npy");
    CHECK(m && m->method == ZIP_METHOD_STORED &&
          member_is(p, len, m, payload_a, sizeof(payload_a)));
    m = find(z, "sub/b.npy");
    CHECK(m && member_is(p, len, m, payload_b, sizeof(payload_b)));
    m = find(z, "c.npy");
    CHECK(m && m->method == ZIP_METHOD_DEFLATE &&
          member_is(p, len, m, payload_a, sizeof(payload_a)));
    m = find(z, "sub/");
    CHECK(m && m->is_dir && m->usize == 0 && !m->unsupported);
    m = find(z, "streamed.npy");
    CHECK(m && member_is(p, len, m, payload_a, sizeof(payload_a)));
    if (m) /* libzip streamed it with a ZIP64 extra in the local header */
        CHECK(get_le16(p + m->lho + 28) >= 20);
    m = find(z, "bz.npy");
    if (have_bz)
        CHECK(m && m->method == 12 && m->unsupported == -EOPNOTSUPP && m->why &&
              strcmp(m->why, "unsupported method bzip2") == 0);
    m = find(z, "aes.npy");
    if (have_aes)
        CHECK(m && m->unsupported == -EOPNOTSUPP && m->why && strcmp(m->why, "encrypted") == 0);
    zip_free(z);
    free(p);
}

/* ---- Info-ZIP zip(1), when installed ------------------------------------ */

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *p = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        p = malloc((size_t)n + 1);
        if (fread(p, 1, (size_t)n, f) != (size_t)n) {
            free(p);
            p = NULL;
        }
        *len = (size_t)n;
    }
    fclose(f);
    return p;
}

static bool write_file(const char *dir, const char *name, const void *d, size_t n)
{
    char path[512];
    FILE *f;
    bool ok;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f)
        return false;
    ok = fwrite(d, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

/* Run cmd in dir, then open dir/out. Returns the bytes (owned) or NULL. */
static unsigned char *infozip(const char *dir, const char *cmd, const char *out, size_t *len)
{
    char line[1024], path[512];

    snprintf(line, sizeof(line), "cd '%s' && %s", dir, cmd);
    if (system(line) != 0) {
        fprintf(stderr, "test_zip: '%s' failed\n", line);
        return NULL;
    }
    snprintf(path, sizeof(path), "%s/%s", dir, out);
    return slurp(path, len);
}

static void check_infozip(const char *dir, const char *cmd, const char *out, const char *name,
                          int want_unsupported)
{
    struct zip_archive *z;
    const struct zip_member *m;
    size_t len = 0;
    unsigned char *p = infozip(dir, cmd, out, &len);

    CHECK(p != NULL);
    if (!p)
        return;
    CHECK_EQ(open_mem(p, len, &z), 0);
    if (z) {
        m = find(z, name);
        CHECK(m != NULL);
        if (m && want_unsupported)
            CHECK_EQ(m->unsupported, want_unsupported);
        else if (m)
            CHECK(member_is(p, len, m, payload_a, sizeof(payload_a)));
        m = find(z, "b.npy");
        if (m && !want_unsupported)
            CHECK(member_is(p, len, m, payload_b, sizeof(payload_b)));
    }
    zip_free(z);
    free(p);
}

static void test_infozip(void)
{
    char dir[] = "/tmp/npyfs-test-zip-XXXXXX", cmd[600];

    if (system("command -v zip >/dev/null 2>&1") != 0) {
        printf("test_zip: zip(1) not installed, Info-ZIP cases skipped\n");
        return;
    }
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    CHECK(write_file(dir, "a.npy", payload_a, sizeof(payload_a)));
    CHECK(write_file(dir, "b.npy", payload_b, sizeof(payload_b)));
    CHECK(write_file(dir, "sfx", "#!/bin/sh\nexit 0\n", 17));
    check_infozip(dir, "zip -q -X d.zip a.npy b.npy", "d.zip", "a.npy", 0);
    check_infozip(dir, "zip -q -X -0 s.zip a.npy b.npy", "s.zip", "a.npy", 0);
    /* From a pipe: member "-", data descriptor, ZIP64 extra in the LFH. */
    check_infozip(dir, "zip -q -X - - < a.npy > p.zip", "p.zip", "-", 0);
    check_infozip(dir, "zip -q -X -e -P pw e.zip a.npy", "e.zip", "a.npy", -EOPNOTSUPP);
    if (system("zip -v 2>/dev/null | grep -q BZIP2_SUPPORT") == 0)
        check_infozip(dir, "zip -q -X -Z bzip2 z.zip a.npy", "z.zip", "a.npy", -EOPNOTSUPP);
    /* Self-extractor: stub in front with stale offsets, then fixed by -A. */
    check_infozip(dir, "cat sfx d.zip > x.zip", "x.zip", "a.npy", 0);
    check_infozip(dir, "zip -q -A x.zip 2>/dev/null", "x.zip", "a.npy", 0);
    /* Archive comment from stdin, with an EOCD signature inside. */
    check_infozip(dir, "printf 'zz PK\\005\\006 zz\\n' | zip -q -z d.zip", "d.zip", "a.npy", 0);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "test_zip: could not remove %s\n", dir);
}

/* ---- the daemon's archive opening under injected failures --------------
 *
 * test_zip is linked with -Wl,--wrap=dfx_index_new: every call the daemon's
 * code (fs/) makes goes through here, and fail_index_new_at = n makes the
 * n-th call from now on fail with -ENOMEM. */
int __real_dfx_index_new(const struct dfx_stream *st, uint64_t spacing, struct dfx_index **out);
int __wrap_dfx_index_new(const struct dfx_stream *st, uint64_t spacing, struct dfx_index **out);
static int fail_index_new_at;

int __wrap_dfx_index_new(const struct dfx_stream *st, uint64_t spacing, struct dfx_index **out)
{
    if (fail_index_new_at > 0 && --fail_index_new_at == 0) {
        *out = NULL;
        return -ENOMEM;
    }
    return __real_dfx_index_new(st, spacing, out);
}

/* An archive whose member setup fails part way (dfx_index_new() of its
 * second or third deflate member) fails to open and frees every member
 * set up so far, the failing one included (it used to keep that member's
 * name: a leak LeakSanitizer reports at exit in the ASan build). */
static void test_open_fails_midway(void)
{
    struct tmem m[4] = {
        {.name = "s.npy", .data = payload_b, .len = sizeof(payload_b), .lfh = LFH_PLAIN},
        {.name = "d1.npy", .data = payload_a, .len = sizeof(payload_a), .method = 8},
        {.name = "d2.npy", .data = payload_b, .len = sizeof(payload_b), .method = 8},
        {.name = "d3.npy", .data = payload_a, .len = sizeof(payload_a), .method = 8},
    };
    char dir[] = "/tmp/test_zip_open.XXXXXX", path[64];
    struct archive *a = NULL;
    size_t len;
    unsigned char *p = build(m, 4, NULL, &len);

    if (!mkdtemp(dir) || !write_file(dir, "a.npz", p, len)) {
        CHECK(!"temporary archive");
        free(p);
        return;
    }
    snprintf(path, sizeof(path), "%s/a.npz", dir);
    CHECK_EQ(archive_open(path, DFX_DEFAULT_SPACING, NULL, &a), 0);
    CHECK(a && a->count == 4 && a->members[1].ix && a->members[3].ix && !a->members[0].ix);
    archive_close(a);
    for (int at = 1; at <= 3; at++) {
        a = (struct archive *)1;
        fail_index_new_at = at;
        CHECK_EQ(archive_open(path, DFX_DEFAULT_SPACING, NULL, &a), -ENOMEM);
        CHECK(a == NULL);
        CHECK_EQ(fail_index_new_at, 0); /* the failure was reached */
    }
    fail_index_new_at = 0;
    unlink(path);
    rmdir(dir);
    free(p);
}

/* ZIP_DEFER_LOCAL (remote archives): no local header is read at open; each
 * member's is read by zip_member_locate(), which gives what an ordinary open
 * gives (data offset, or the verdict on a bad header), with bytes in front
 * of the archive, and a comment longer than the first 4 KiB the end record
 * is looked for in. */
static void test_deferred_local(void)
{
    static unsigned char comment[6000];
    struct tmem m[2] = {
        {.name = "a.npy", .data = payload_a, .len = sizeof(payload_a), .lfh = LFH_NUMPY},
        {.name = "b.npy", .data = payload_b, .len = sizeof(payload_b), .method = 8},
    };
    struct tarc a = {.prepend = 100, .comment = comment, .comment_len = sizeof(comment)};
    struct zip_archive *eager = NULL, *lazy = NULL;
    struct src *s;
    size_t len;
    unsigned char *p;

    memset(comment, 'c', sizeof(comment));
    p = build(m, 2, &a, &len);
    CHECK_EQ(open_mem(p, len, &eager), 0);
    CHECK_EQ(src_mem_new(p, len, &s), 0);
    CHECK_EQ(zip_archive_open_flags(s, ZIP_DEFER_LOCAL, &lazy), 0);
    if (eager && lazy) {
        CHECK_EQ(lazy->count, 2);
        for (size_t i = 0; i < 2; i++) {
            struct zip_member *z = &lazy->members[i];
            CHECK(eager->members[i].located);
            CHECK(!z->located);
            CHECK_EQ(z->lho, eager->members[i].lho);
            CHECK_EQ(zip_member_locate(s, z), 0);
            CHECK(z->located);
            CHECK_EQ(z->data_offset, eager->members[i].data_offset);
            CHECK_EQ(z->unsupported, 0);
            CHECK(member_is(p, len, z, i ? payload_b : payload_a,
                            i ? sizeof(payload_b) : sizeof(payload_a)));
            CHECK_EQ(zip_member_locate(s, z), 0); /* once located, nothing more */
        }
    }
    zip_free(lazy);
    lazy = NULL;
    /* A bad local header is the member's verdict, not an error of the call. */
    p[eager ? eager->members[1].lho : 0] ^= 0xff;
    CHECK_EQ(zip_archive_open_flags(s, ZIP_DEFER_LOCAL, &lazy), 0);
    if (lazy) {
        CHECK_EQ(zip_member_locate(s, &lazy->members[1]), 0);
        CHECK(lazy->members[1].located);
        CHECK_EQ(lazy->members[1].unsupported, -EIO);
        CHECK_EQ(zip_member_locate(s, &lazy->members[0]), 0);
        CHECK_EQ(lazy->members[0].unsupported, 0);
    }
    zip_free(lazy);
    zip_free(eager);
    src_free(s);
    free(p);
}

int main(void)
{
    init_payloads();
    test_method_name();
    test_numpy_savez();
    test_numpy_savez_compressed();
    test_writer_matches_numpy();
    test_lfh_styles();
    test_zip64();
    test_zip64_lho_past_eof();
    test_zip64_extra_short();
    test_zip64_huge_usize();
    test_comment_with_eocd_signature();
    test_prepended();
    test_empty();
    test_not_zip();
    test_unsupported_members();
    test_names();
    test_damaged();
    test_zip64_damaged();
    test_many_members();
    test_truncated_and_flipped();
    test_file_source();
    test_libzip();
    test_infozip();
    test_open_fails_midway();
    test_deferred_local();
    return check_exit("test_zip");
}
