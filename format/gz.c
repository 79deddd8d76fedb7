/*
 * gzip framing (RFC 1952): member headers, trailers, the last ISIZE.
 * Contract in gz.h.
 *
 * A header is read through a small cursor that walks the source and keeps a
 * running CRC-32 of every byte it consumed, so FHCRC can be checked without
 * holding the whole header (FNAME/FCOMMENT may be as long as the file) in
 * memory. Every read is bounded by the source size: a header that runs off
 * the end is -EIO, never a read past it.
 */
#include "gz.h"

#include <errno.h>
#include <string.h>
#include <zlib.h>

#define GZ_ID1 0x1f
#define GZ_ID2 0x8b
#define GZ_CM_DEFLATE 8
/* FLG bits 5-7 are reserved and must be zero (RFC 1952 2.3.1.2). */
#define GZ_FLG_RESERVED 0xe0
/* ID1 ID2 CM FLG MTIME(4) XFL OS */
#define GZ_FIXED_LEN 10
/* Shortest source gz_last_isize() accepts: fixed header plus trailer. */
#define GZ_MIN_MEMBER 18
/* Chunk size for scanning FNAME/FCOMMENT and skipping FEXTRA. */
#define GZ_SCAN_CHUNK 256

struct hdr_cursor {
    struct src *s;
    uint64_t pos; /* next byte to consume */
    uLong crc;    /* CRC-32 of all bytes consumed so far */
};

/* Consume exactly len bytes into buf. */
static int cur_read(struct hdr_cursor *c, unsigned char *buf, size_t len)
{
    int ret;

    if (c->pos > c->s->size || c->s->size - c->pos < len)
        return -EIO;
    ret = src_read_exact(c->s, buf, len, c->pos);
    if (ret < 0)
        return ret;
    c->crc = crc32(c->crc, buf, (uInt)len);
    c->pos += len;
    return 0;
}

/* Consume n bytes without keeping them (FEXTRA payload). */
static int cur_skip(struct hdr_cursor *c, uint64_t n)
{
    unsigned char buf[GZ_SCAN_CHUNK];

    while (n > 0) {
        size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
        int ret = cur_read(c, buf, k);
        if (ret < 0)
            return ret;
        n -= k;
    }
    return 0;
}

/* Consume a NUL-terminated string (FNAME/FCOMMENT), the NUL included. */
static int cur_skip_string(struct hdr_cursor *c)
{
    unsigned char buf[GZ_SCAN_CHUNK];

    for (;;) {
        int64_t n = src_pread(c->s, buf, sizeof(buf), c->pos);
        unsigned char *nul;
        size_t take;

        if (n < 0)
            return (int)n;
        if (n == 0)
            return -EIO; /* source ended before the terminating NUL */
        nul = memchr(buf, 0, (size_t)n);
        take = nul ? (size_t)(nul - buf) + 1 : (size_t)n;
        c->crc = crc32(c->crc, buf, (uInt)take);
        c->pos += take;
        if (nul)
            return 0;
    }
}

static int check_fixed(const unsigned char *h)
{
    if (h[0] != GZ_ID1 || h[1] != GZ_ID2)
        return -EINVAL;
    if (h[2] != GZ_CM_DEFLATE)
        return -EINVAL;
    if (h[3] & GZ_FLG_RESERVED)
        return -EINVAL;
    return 0;
}

/* The optional fields, in the order RFC 1952 puts them. */
static int read_optional(struct hdr_cursor *c, unsigned flg)
{
    unsigned char b[2];
    int ret;

    if (flg & GZ_FLG_FEXTRA) {
        ret = cur_read(c, b, 2);
        if (ret < 0)
            return ret;
        ret = cur_skip(c, get_le16(b));
        if (ret < 0)
            return ret;
    }
    if (flg & GZ_FLG_FNAME) {
        ret = cur_skip_string(c);
        if (ret < 0)
            return ret;
    }
    if (flg & GZ_FLG_FCOMMENT) {
        ret = cur_skip_string(c);
        if (ret < 0)
            return ret;
    }
    if (flg & GZ_FLG_FHCRC) {
        /* CRC16 = low 16 bits of the CRC-32 of every header byte before it. */
        uint16_t want = (uint16_t)(c->crc & 0xffff);
        ret = cur_read(c, b, 2);
        if (ret < 0)
            return ret;
        if (get_le16(b) != want)
            return -EBADMSG;
    }
    return 0;
}

/* Contract in gz.h. */
int gz_read_header(struct src *s, uint64_t off, uint64_t *data_off)
{
    struct hdr_cursor c = {s, off, crc32(0, Z_NULL, 0)};
    unsigned char h[GZ_FIXED_LEN];
    int ret;

    ret = cur_read(&c, h, sizeof(h));
    if (ret < 0)
        return ret;
    ret = check_fixed(h);
    if (ret < 0)
        return ret;
    ret = read_optional(&c, h[3]);
    if (ret < 0)
        return ret;
    *data_off = c.pos;
    return 0;
}

/* Contract in gz.h. */
int gz_read_trailer(struct src *s, uint64_t off, uint32_t *crc, uint32_t *isize)
{
    unsigned char t[GZ_TRAILER_LEN];
    int ret;

    if (off > s->size || s->size - off < GZ_TRAILER_LEN)
        return -EIO;
    ret = src_read_exact(s, t, sizeof(t), off);
    if (ret < 0)
        return ret;
    *crc = get_le32(t);
    *isize = get_le32(t + 4);
    return 0;
}

/* Contract in gz.h. */
int gz_last_isize(struct src *s, uint32_t *isize)
{
    uint32_t crc;

    return gz_last_trailer(s, &crc, isize);
}

/* Contract in gz.h. */
int gz_last_trailer(struct src *s, uint32_t *crc, uint32_t *isize)
{
    if (s->size < GZ_MIN_MEMBER)
        return -EIO;
    return gz_read_trailer(s, s->size - GZ_TRAILER_LEN, crc, isize);
}
