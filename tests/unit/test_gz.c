/*
 * gz.c: member headers (every flag, FHCRC good and bad, reserved bits, bad
 * magic/method, truncation at every byte), trailers and the last ISIZE.
 * Headers are built by hand and by zlib (deflateSetHeader) as an independent
 * writer; zlib's inflate checks that data_off really is the deflate start.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "check.h"
#include "gz.h"
#include "source.h"

struct hdr_spec {
    unsigned flg;     /* FLG byte as written, reserved bits included */
    unsigned xlen;    /* FEXTRA payload length */
    const char *name; /* FNAME, if flg has it */
    const char *comment;
    int bad_hcrc; /* write a wrong CRC16 */
};

static void put_le16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

/* Write a header per spec into buf (big enough); return its length. */
static size_t build_header(unsigned char *buf, const struct hdr_spec *h)
{
    size_t n = 0;

    buf[n++] = 0x1f;
    buf[n++] = 0x8b;
    buf[n++] = 8;
    buf[n++] = (unsigned char)h->flg;
    memcpy(buf + n, "\x12\x34\x56\x78", 4); /* MTIME */
    n += 4;
    buf[n++] = 2;   /* XFL */
    buf[n++] = 255; /* OS */
    if (h->flg & GZ_FLG_FEXTRA) {
        put_le16(buf + n, h->xlen);
        n += 2;
        for (unsigned i = 0; i < h->xlen; i++)
            buf[n++] = (unsigned char)(i * 7 + 1); /* no NULs: must not end FNAME scans */
    }
    if (h->flg & GZ_FLG_FNAME) {
        memcpy(buf + n, h->name, strlen(h->name) + 1);
        n += strlen(h->name) + 1;
    }
    if (h->flg & GZ_FLG_FCOMMENT) {
        memcpy(buf + n, h->comment, strlen(h->comment) + 1);
        n += strlen(h->comment) + 1;
    }
    if (h->flg & GZ_FLG_FHCRC) {
        unsigned crc = (unsigned)crc32(0, buf, (uInt)n) & 0xffff;
        put_le16(buf + n, h->bad_hcrc ? crc ^ 0x0100 : crc);
        n += 2;
    }
    return n;
}

/* gz_read_header on the first len bytes of buf at off. */
static int parse(const unsigned char *buf, size_t len, uint64_t off, uint64_t *data_off)
{
    struct src *s;
    int ret = src_mem_new(buf, len, &s);

    if (ret < 0)
        return ret;
    ret = gz_read_header(s, off, data_off);
    src_free(s);
    return ret;
}

static unsigned char big[200000];

static void test_flags(void)
{
    static char long_name[1000];
    uint64_t d;
    size_t n;

    memset(long_name, 'n', sizeof(long_name) - 1);
    const struct hdr_spec good[] = {
        {0, 0, NULL, NULL, 0},
        {GZ_FLG_FTEXT, 0, NULL, NULL, 0},
        {GZ_FLG_FEXTRA, 0, NULL, NULL, 0},
        {GZ_FLG_FEXTRA, 6, NULL, NULL, 0},
        {GZ_FLG_FEXTRA, 300, NULL, NULL, 0},
        {GZ_FLG_FEXTRA, 65535, NULL, NULL, 0},
        {GZ_FLG_FNAME, 0, "w.npy", NULL, 0},
        {GZ_FLG_FNAME, 0, "", NULL, 0},
        {GZ_FLG_FNAME, 0, long_name, NULL, 0},
        {GZ_FLG_FCOMMENT, 0, NULL, "a comment", 0},
        {GZ_FLG_FHCRC, 0, NULL, NULL, 0},
        {GZ_FLG_FNAME | GZ_FLG_FCOMMENT, 0, "x", long_name, 0},
        {0x1f, 300, long_name, "c", 0}, /* every flag, FHCRC over all of it */
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        n = build_header(big, &good[i]);
        memcpy(big + n, "\x03\x00", 2); /* something after the header */
        d = 0;
        CHECK_EQ(parse(big, n + 2, 0, &d), 0);
        CHECK_EQ(d, n);
        /* The same header further into a file. */
        memmove(big + 77, big, n + 2);
        d = 0;
        CHECK_EQ(parse(big, n + 2 + 77, 77, &d), 0);
        CHECK_EQ(d, n + 77);
    }

    const struct hdr_spec bad_crc[] = {
        {GZ_FLG_FHCRC, 0, NULL, NULL, 1},
        {0x1f, 300, long_name, "c", 1},
        {GZ_FLG_FHCRC | GZ_FLG_FNAME, 0, "w.npy", NULL, 1},
    };
    for (size_t i = 0; i < sizeof(bad_crc) / sizeof(bad_crc[0]); i++) {
        n = build_header(big, &bad_crc[i]);
        CHECK_EQ(parse(big, n, 0, &d), -EBADMSG);
    }
}

static void test_bad_fixed(void)
{
    struct hdr_spec h = {GZ_FLG_FNAME, 0, "a", NULL, 0};
    unsigned char buf[64];
    uint64_t d;
    size_t n;

    for (unsigned bit = 0x20; bit <= 0x80; bit <<= 1) {
        struct hdr_spec r = {bit, 0, NULL, NULL, 0};
        n = build_header(buf, &r);
        CHECK_EQ(parse(buf, n, 0, &d), -EINVAL);
        r.flg = bit | GZ_FLG_FHCRC; /* a valid CRC does not excuse reserved bits */
        n = build_header(buf, &r);
        CHECK_EQ(parse(buf, n, 0, &d), -EINVAL);
    }
    n = build_header(buf, &h);
    for (int i = 0; i < 2; i++) {
        buf[i] ^= 0x40;
        CHECK_EQ(parse(buf, n, 0, &d), -EINVAL);
        buf[i] ^= 0x40;
    }
    for (int cm = 0; cm < 16; cm++) {
        buf[2] = (unsigned char)cm;
        CHECK_EQ(parse(buf, n, 0, &d), cm == 8 ? 0 : -EINVAL);
    }
    buf[2] = 8;
    CHECK_EQ(parse(buf, n, 0, &d), 0);
}

/* A header cut short at every byte is -EIO, never a read past the source. */
static void test_truncated(void)
{
    struct hdr_spec h = {0x1f, 40, "name.npy", "comment", 0};
    unsigned char buf[256];
    uint64_t d;
    size_t n = build_header(buf, &h);
    int all_eio = 1;

    for (size_t cut = 0; cut < n; cut++) {
        /* A private heap copy so ASan catches any read past cut. */
        unsigned char *copy = malloc(cut ? cut : 1);
        memcpy(copy, buf, cut);
        if (parse(copy, cut, 0, &d) != -EIO) {
            all_eio = 0;
            fprintf(stderr, "cut at %zu not -EIO\n", cut);
        }
        free(copy);
    }
    CHECK(all_eio);
    CHECK_EQ(parse(buf, n, 0, &d), 0);
    CHECK_EQ(d, n);

    /* Offsets at and past the end, and FEXTRA longer than the file. */
    CHECK_EQ(parse(buf, n, n, &d), -EIO);
    CHECK_EQ(parse(buf, n, n + 1, &d), -EIO);
    CHECK_EQ(parse(buf, n, UINT64_MAX, &d), -EIO);
    CHECK_EQ(parse(buf, n, UINT64_MAX - 5, &d), -EIO);
    struct hdr_spec x = {GZ_FLG_FEXTRA, 1000, NULL, NULL, 0};
    n = build_header(big, &x);
    CHECK_EQ(parse(big, n - 1, 0, &d), -EIO);
    CHECK_EQ(parse(big, n, 0, &d), 0);
}

/* FNAME whose NUL never comes: bounded by the source, -EIO. */
static void test_unterminated_name(void)
{
    size_t len = 5000;
    unsigned char *buf = malloc(len);
    uint64_t d;

    memset(buf, 'x', len);
    memcpy(buf, "\x1f\x8b\x08\x08\0\0\0\0\0\3", 10);
    CHECK_EQ(parse(buf, len, 0, &d), -EIO);
    buf[len - 1] = 0;
    CHECK_EQ(parse(buf, len, 0, &d), 0);
    CHECK_EQ(d, len);
    free(buf);
}

/* Compress data as one gzip member with zlib; hdr may be NULL. */
static size_t zlib_gzip(const unsigned char *data, size_t len, gz_header *hdr, int level,
                        unsigned char *out, size_t cap)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (deflateInit2(&zs, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return 0;
    if (hdr)
        deflateSetHeader(&zs, hdr);
    zs.next_in = (unsigned char *)data;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    int ret = deflate(&zs, Z_FINISH);
    size_t n = zs.total_out;
    deflateEnd(&zs);
    return ret == Z_STREAM_END ? n : 0;
}

/* Raw-inflate from data_off; return the deflate length or 0 on failure. */
static size_t raw_inflate(const unsigned char *in, size_t len, unsigned char *out, size_t cap,
                          size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, -15) != Z_OK)
        return 0;
    zs.next_in = (unsigned char *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    int ret = inflate(&zs, Z_FINISH);
    size_t used = zs.total_in;
    *out_len = zs.total_out;
    inflateEnd(&zs);
    return ret == Z_STREAM_END ? used : 0;
}

static void check_member(const unsigned char *gz, size_t gzlen, const unsigned char *data,
                         size_t len, uint64_t expect_data_off)
{
    static unsigned char back[100000];
    struct src *s;
    uint64_t d = 0;
    uint32_t crc = 0, isize = 0;
    size_t out_len = 0, used;

    src_mem_new(gz, gzlen, &s);
    CHECK_EQ(gz_read_header(s, 0, &d), 0);
    if (expect_data_off)
        CHECK_EQ(d, expect_data_off);
    used = raw_inflate(gz + d, gzlen - d, back, sizeof(back), &out_len);
    CHECK(used > 0);
    CHECK_EQ(out_len, len);
    CHECK(memcmp(back, data, len) == 0);
    CHECK_EQ(d + used + GZ_TRAILER_LEN, gzlen);
    CHECK_EQ(gz_read_trailer(s, d + used, &crc, &isize), 0);
    CHECK_EQ(crc, crc32(0, data, (uInt)len));
    CHECK_EQ(isize, len);
    CHECK_EQ(gz_last_isize(s, &isize), 0);
    CHECK_EQ(isize, len);
    src_free(s);
}

static void test_zlib_written(void)
{
    static unsigned char data[60000], gz[80000];
    unsigned char extra[] = "BC\x02\x00xy";
    gz_header h;
    size_t n;

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (unsigned char)((i * i) >> 7);
    n = zlib_gzip(data, sizeof(data), NULL, 6, gz, sizeof(gz));
    CHECK(n > 0);
    check_member(gz, n, data, sizeof(data), 10);

    memset(&h, 0, sizeof(h));
    h.text = 1;
    h.time = 1700000000;
    h.os = 3;
    h.extra = extra;
    h.extra_len = 6;
    h.name = (Bytef *)"weights.npy";
    h.comment = (Bytef *)"written by zlib";
    h.hcrc = 1;
    n = zlib_gzip(data, sizeof(data), &h, 9, gz, sizeof(gz));
    CHECK(n > 0);
    CHECK_EQ(gz[3], 0x1f);
    check_member(gz, n, data, sizeof(data), 10 + 2 + 6 + 12 + 16 + 2);

    /* zlib's header CRC, flipped in the CRC field, and in the covered bytes. */
    uint64_t d;
    size_t hl = 10 + 2 + 6 + 12 + 16 + 2;
    gz[hl - 1] ^= 1;
    CHECK_EQ(parse(gz, n, 0, &d), -EBADMSG);
    gz[hl - 1] ^= 1;
    gz[4] ^= 1; /* MTIME */
    CHECK_EQ(parse(gz, n, 0, &d), -EBADMSG);
    gz[4] ^= 1;
    CHECK_EQ(parse(gz, n, 0, &d), 0);

    n = zlib_gzip(data, 0, &h, 6, gz, sizeof(gz)); /* an empty member */
    CHECK(n > 0);
    check_member(gz, n, data, 0, hl);
}

static void test_trailer_and_isize(void)
{
    static unsigned char data[3000], gz[8000];
    unsigned char buf[32];
    struct src *s;
    uint32_t crc, isize;
    size_t n1, n2;

    memset(data, 'a', sizeof(data));
    n1 = zlib_gzip(data, 1000, NULL, 6, gz, sizeof(gz));
    n2 = zlib_gzip(data, 3000, NULL, 1, gz + n1, sizeof(gz) - n1);
    CHECK(n1 > 0 && n2 > 0);
    src_mem_new(gz, n1 + n2, &s);
    CHECK_EQ(gz_last_isize(s, &isize), 0);
    CHECK_EQ(isize, 3000); /* the last member's size, not the sum */
    crc = isize = 0;
    CHECK_EQ(gz_last_trailer(s, &crc, &isize), 0); /* CRC-32 and ISIZE of the last member */
    CHECK_EQ(crc, crc32(0, data, 3000));
    CHECK_EQ(isize, 3000);
    CHECK_EQ(gz_read_trailer(s, n1 - 8, &crc, &isize), 0);
    CHECK_EQ(isize, 1000);
    CHECK_EQ(crc, crc32(0, data, 1000));
    CHECK_EQ(gz_read_trailer(s, n1 + n2 - 7, &crc, &isize), -EIO);
    CHECK_EQ(gz_read_trailer(s, n1 + n2, &crc, &isize), -EIO);
    CHECK_EQ(gz_read_trailer(s, UINT64_MAX - 3, &crc, &isize), -EIO);
    uint64_t d = 0;
    CHECK_EQ(gz_read_header(s, n1, &d), 0); /* the second member */
    CHECK_EQ(d, n1 + 10);
    src_free(s);

    /* ISIZE is the last 4 bytes, read as little-endian; < 18 bytes is -EIO. */
    memset(buf, 0, sizeof(buf));
    memcpy(buf + 14, "\xef\xbe\xad\xde", 4);
    memcpy(buf + 10, "\x78\x56\x34\x12", 4);
    for (size_t len = 0; len < 18; len++) {
        src_mem_new(buf, len, &s);
        CHECK_EQ(gz_last_isize(s, &isize), -EIO);
        CHECK_EQ(gz_last_trailer(s, &crc, &isize), -EIO);
        src_free(s);
    }
    src_mem_new(buf, 18, &s);
    CHECK_EQ(gz_last_isize(s, &isize), 0);
    CHECK_EQ(isize, 0xdeadbeefu);
    CHECK_EQ(gz_last_trailer(s, &crc, &isize), 0);
    CHECK_EQ(crc, 0x12345678u);
    CHECK_EQ(isize, 0xdeadbeefu);
    src_free(s);
}

int main(void)
{
    test_flags();
    test_bad_fixed();
    test_truncated();
    test_unterminated_name();
    test_zlib_written();
    test_trailer_and_isize();
    return check_exit("test_gz");
}
