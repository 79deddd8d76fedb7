/*
 * Index files: the codec. Contract in dfx_store.h; the layout in
 * docs/FORMATS.md section 6 ("npyfs index files"), and as offsets below.
 *
 * Writing goes through one writer (struct dfx_store_writer) that appends
 * at a running offset through its write callback and keeps the CRC-32 of
 * everything after the header, name and path as it goes: windows (sunk by
 * an index builder as points are recorded, or copied out of a complete
 * index at the end), then the point table, the chunk CRC table; then the
 * header, name and path are written at offset 0 and their CRC-32 combined
 * with the rest's (crc32_combine) for the trailing checksum.
 *
 * Loading reads the header, checks it, then streams the whole file once in
 * bounded pieces (STORE_PIECE), checksumming it and copying out only the
 * name, the point table and the chunk table; the points are checked and
 * imported with a fetch source that reads windows from the file's source,
 * which the index keeps for as long as it lives.
 */
#include "dfx_store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "dfx_internal.h"
#include "window.h"

#define STORE_MAGIC "NPYFSIDX"
#define STORE_MAGIC_LEN 8
#define STORE_HEADER_LEN 144
#define STORE_POINT_LEN 48
#define STORE_CRC_LEN 4
#define STORE_TABLE_HEAD 16
/* Bytes read per read while loading, and the buffer for writing tables. */
#define STORE_PIECE (64u << 10)

/* Header field offsets. */
#define H_VERSION 8
#define H_HEADER_LEN 12
#define H_FILE_LEN 16
#define H_SPACING 24
#define H_TOTAL 32
#define H_NPTS 40
#define H_WINDOWS_OFF 48
#define H_POINTS_OFF 56
#define H_TABLE_OFF 64
#define H_KEY 72 /* the key, to the end of the header */
#define H_DEV 72
#define H_INO 80
#define H_SIZE 88
#define H_MTIME_SEC 96
#define H_MTIME_NSEC 104
#define H_CRC 108
#define H_STORED 112
#define H_ISIZE 120
#define H_ZERO 124
#define H_NAME_LEN 128
#define H_KEY_END 136 /* the key ends here; the rest is not compared */
#define H_PATH_LEN 136

/* Chunk table field offsets (from H_TABLE_OFF). */
#define T_CHUNK 0
#define T_ZERO 4
#define T_COUNT 8

/* Point record field offsets. */
#define P_OUT 0
#define P_IN 8
#define P_MEMBER_OUT 16
#define P_ZOFF 24
#define P_ZLEN 32
#define P_WLEN 36
#define P_BITS 40
#define P_WCRC 44 /* bytes 41-43 are zero */

static void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t pad8(uint64_t n)
{
    return (n + 7) & ~(uint64_t)7;
}

/* ---------------------------------------------------------------- keys --- */

/* The key's fields in header order (H_KEY to the end of the header). */
static void key_fields(const struct dfx_store_key *k, unsigned char *h)
{
    put_le64(h + H_DEV, k->dev);
    put_le64(h + H_INO, k->ino);
    put_le64(h + H_SIZE, k->size);
    put_le64(h + H_MTIME_SEC, (uint64_t)k->mtime_sec);
    put_le32(h + H_MTIME_NSEC, k->mtime_nsec);
    put_le32(h + H_CRC, k->crc);
    put_le64(h + H_STORED, k->stored_size);
    put_le32(h + H_ISIZE, k->isize);
    put_le32(h + H_ZERO, 0);
    put_le64(h + H_NAME_LEN, k->name_len);
}

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* Contract in dfx_store.h. */
void dfx_store_name(const struct dfx_store_key *k, char name[DFX_STORE_NAME_MAX])
{
    unsigned char h[STORE_HEADER_LEN] = {0};
    uint64_t hash;
    uint32_t crc;

    key_fields(k, h);
    hash = fnv1a(0xcbf29ce484222325ull, h + H_KEY, H_KEY_END - H_KEY);
    hash = fnv1a(hash, (const unsigned char *)k->name, k->name_len);
    crc = (uint32_t)crc32(crc32(0, h + H_KEY, H_KEY_END - H_KEY),
                          (const unsigned char *)k->name, (uInt)k->name_len);
    snprintf(name, DFX_STORE_NAME_MAX, "%016llx%08x.dfx", (unsigned long long)hash, crc);
}

static bool all_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* Contract in dfx_store.h. */
bool dfx_store_is_name(const char *s)
{
    return strnlen(s, DFX_STORE_NAME_LEN) == DFX_STORE_NAME_LEN && all_hex(s, 24) &&
           memcmp(s + 24, ".dfx", 4) == 0;
}

/* -------------------------------------------------------------- writer --- */

struct dfx_store_writer {
    const struct dfx_store_key *key; /* borrowed */
    struct dfx_store_out out;
    uint64_t spacing;
    size_t path_len; /* key->path's length, 0: none recorded */
    uint64_t start; /* offset of the first window: header, padded name and path */
    uint64_t off;   /* where the next byte goes */
    uLong crc;      /* CRC-32 of the bytes [start, off) */
    int err;        /* first write error: the file is not finished */
};

/* Append len bytes at w->off. */
static int append(struct dfx_store_writer *w, const void *buf, size_t len)
{
    int ret;

    if (w->err)
        return w->err;
    if (len == 0)
        return 0;
    w->crc = crc32_z(w->crc, buf, len);
    ret = w->out.write(w->out.ctx, buf, len, w->off);
    if (ret < 0) {
        w->err = ret;
        return ret;
    }
    w->off += len;
    return 0;
}

/* Compress a window and append it: where it went in *woff and *zlen. The
 * point record also holds the raw window's CRC-32 (its caller's job). */
static int append_window(struct dfx_store_writer *w, const unsigned char *raw, uint32_t len,
                         uint64_t *woff, uint32_t *zlen)
{
    unsigned char *z;
    int ret = window_deflate(raw, len, &z, zlen);

    if (ret < 0)
        return ret;
    *woff = w->off;
    ret = append(w, z, *zlen);
    free(z);
    return ret;
}

static int sink_put(void *ctx, const unsigned char *raw, uint32_t len, uint64_t *woff,
                    uint32_t *zlen)
{
    return append_window(ctx, raw, len, woff, zlen);
}

/* Contract in dfx_store.h. */
void dfx_store_sink(struct dfx_store_writer *w, struct dfx_sink *out)
{
    out->put = sink_put;
    out->ctx = w;
}

/* Contract in dfx_store.h. */
int dfx_store_writer_new(const struct dfx_store_key *k, uint64_t spacing,
                         const struct dfx_store_out *out, struct dfx_store_writer **wp)
{
    struct dfx_store_writer *w = calloc(1, sizeof(*w));

    *wp = NULL;
    if (!w)
        return -ENOMEM;
    w->key = k;
    w->out = *out;
    w->spacing = spacing;
    w->path_len = k->path ? strnlen(k->path, DFX_STORE_PATH_MAX + 1) : 0;
    if (w->path_len > DFX_STORE_PATH_MAX)
        w->path_len = 0;
    w->start = w->off = STORE_HEADER_LEN + pad8(k->name_len) + pad8(w->path_len);
    w->crc = crc32(0, Z_NULL, 0);
    *wp = w;
    return 0;
}

/* Contract in dfx_store.h. */
void dfx_store_writer_free(struct dfx_store_writer *w)
{
    free(w);
}

/* Give every point of pts a window in the file (sunk here already, or
 * copied out of ix now), or leave it out: *kept gets the points to write. */
static int windows_for(struct dfx_store_writer *w, struct dfx_index *ix, struct dfx_xpoint *pts,
                       size_t n, size_t *kept)
{
    unsigned char *raw = malloc(DFX_WINDOW_SIZE);
    bool ours = ix && dfx_index_sink_ctx(ix) == w; /* sunk windows are in this file */
    int ret = raw ? 0 : -ENOMEM;

    *kept = 0;
    for (size_t i = 0; ret == 0 && i < n; i++) {
        struct dfx_xpoint *x = &pts[i];
        uint32_t len;

        if (x->sunk && !ours)
            continue; /* in some other file */
        if (x->window_len && !x->sunk) {
            int got = x->usable ? dfx_index_window(ix, x->out, raw, &len) : -ENOENT;
            if (got == -ENOENT || got == -EIO || (got == 0 && len != x->window_len))
                continue; /* no window to save: the file has no such point */
            ret = got < 0 ? got : append_window(w, raw, len, &x->woff, &x->zlen);
            x->wcrc = dfx_crcs_of(raw, len);
        }
        if (ret == 0)
            pts[(*kept)++] = *x;
    }
    free(raw);
    return ret;
}

static int write_points(struct dfx_store_writer *w, const struct dfx_xpoint *pts, size_t n)
{
    unsigned char buf[STORE_PIECE];
    size_t used = 0;
    int ret = 0;

    for (size_t i = 0; ret == 0 && i < n; i++) {
        unsigned char *rec = buf + used;

        memset(rec, 0, STORE_POINT_LEN);
        put_le64(rec + P_OUT, pts[i].out);
        put_le64(rec + P_IN, pts[i].in);
        put_le64(rec + P_MEMBER_OUT, pts[i].member_out);
        put_le64(rec + P_ZOFF, pts[i].window_len ? pts[i].woff : 0);
        put_le32(rec + P_ZLEN, pts[i].window_len ? pts[i].zlen : 0);
        put_le32(rec + P_WLEN, pts[i].window_len);
        rec[P_BITS] = (unsigned char)pts[i].bits;
        put_le32(rec + P_WCRC, pts[i].window_len ? pts[i].wcrc : 0);
        used += STORE_POINT_LEN;
        if (used + STORE_POINT_LEN > sizeof(buf) || i + 1 == n) {
            ret = append(w, buf, used);
            used = 0;
        }
    }
    return ret;
}

/* The chunk table: its head, then the CRCs little-endian. */
static int write_table(struct dfx_store_writer *w, const struct dfx_crcs *t)
{
    unsigned char head[STORE_TABLE_HEAD] = {0}, buf[4096];
    uint64_t count = t ? t->count : 0;
    int ret;

    put_le32(head + T_CHUNK, t ? t->chunk : 0);
    put_le64(head + T_COUNT, count);
    ret = append(w, head, sizeof(head));
    for (uint64_t i = 0; ret == 0 && i < count;) {
        size_t n = 0;
        for (; n + 4 <= sizeof(buf) && i < count; n += 4, i++)
            put_le32(buf + n, t->crc[i]);
        ret = append(w, buf, n);
    }
    return ret;
}

/* Header, name and path at offset 0 (one write of w->start bytes), then
 * the trailing checksum: the CRC-32 of those combined with that of
 * everything after them. */
static int write_head(struct dfx_store_writer *w, uint64_t total, size_t n, uint64_t points_off,
                      uint64_t table_off)
{
    const struct dfx_store_key *k = w->key;
    unsigned char *h = calloc(1, (size_t)w->start), tail[STORE_CRC_LEN];
    uLong crc;
    int ret;

    if (!h)
        return -ENOMEM;
    memcpy(h, STORE_MAGIC, STORE_MAGIC_LEN);
    put_le32(h + H_VERSION, DFX_STORE_VERSION);
    put_le32(h + H_HEADER_LEN, STORE_HEADER_LEN);
    put_le64(h + H_FILE_LEN, w->off + STORE_CRC_LEN);
    put_le64(h + H_SPACING, w->spacing);
    put_le64(h + H_TOTAL, total);
    put_le64(h + H_NPTS, n);
    put_le64(h + H_WINDOWS_OFF, w->start);
    put_le64(h + H_POINTS_OFF, points_off);
    put_le64(h + H_TABLE_OFF, table_off);
    key_fields(k, h);
    put_le64(h + H_PATH_LEN, w->path_len);
    if (k->name_len)
        memcpy(h + STORE_HEADER_LEN, k->name, k->name_len);
    if (w->path_len)
        memcpy(h + STORE_HEADER_LEN + pad8(k->name_len), k->path, w->path_len);
    crc = crc32_z(0, h, (size_t)w->start);
    crc = crc32_combine(crc, w->crc, (z_off_t)(w->off - w->start));
    ret = w->out.write(w->out.ctx, h, (size_t)w->start, 0);
    free(h);
    if (ret < 0)
        return ret;
    put_le32(tail, (uint32_t)crc);
    return append(w, tail, sizeof(tail));
}

/* Contract in dfx_store.h. */
int dfx_store_writer_end(struct dfx_store_writer *w, struct dfx_index *ix,
                         const struct dfx_crcs *crcs)
{
    struct dfx_xpoint *pts = NULL;
    uint64_t total = 0, points_off, table_off;
    size_t n = 0, kept = 0;
    int ret = w->err;

    if (ret == 0 && !ix && (!crcs || crcs->size != w->key->stored_size))
        ret = -EINVAL;
    if (ret == 0 && ix && !crcs && dfx_index_stream(ix)->framing == DFX_GZIP)
        ret = -EINVAL; /* a gzip member's file always has a table */
    if (ret == 0 && ix)
        ret = dfx_index_export(ix, &pts, &n, &total);
    if (ret == 0 && !ix)
        total = crcs->size;
    if (ret == 0 && crcs && crcs->size != total)
        ret = -EINVAL;
    if (ret == 0)
        ret = windows_for(w, ix, pts, n, &kept);
    points_off = w->off;
    if (ret == 0)
        ret = write_points(w, pts, kept);
    table_off = w->off;
    if (ret == 0)
        ret = write_table(w, crcs);
    if (ret == 0)
        ret = write_head(w, total, kept, points_off, table_off);
    free(pts);
    return ret;
}

/* Contract in dfx_store.h. */
int dfx_store_write(const struct dfx_store_key *k, struct dfx_index *ix,
                    const struct dfx_crcs *crcs, const struct dfx_store_out *out)
{
    struct dfx_store_writer *w;
    int ret = dfx_store_writer_new(k, ix ? dfx_index_spacing(ix) : 0, out, &w);

    if (ret == 0)
        ret = dfx_store_writer_end(w, ix, crcs);
    dfx_store_writer_free(w);
    return ret;
}

/* ---------------------------------------------------------------- load --- */

/* The fetch source of a loaded index: the file's source, kept until the
 * index releases it, then handed back through release. */
struct loaded {
    struct src *file;
    void (*release)(void *arg);
    void *arg;
};

static int loaded_read(void *ctx, unsigned char *buf, uint32_t len, uint64_t off)
{
    struct loaded *l = ctx;

    /* an error, or the file shrank since it was loaded */
    return src_read_exact(l->file, buf, len, off) < 0 ? -EIO : 0;
}

static void loaded_release(void *ctx)
{
    struct loaded *l = ctx;

    if (l->release)
        l->release(l->arg);
    free(l);
}

/* What the loader keeps of a file: its header, and the parts it copies out
 * while checksumming the whole file. */
struct file {
    struct src *src; /* borrowed */
    uint64_t len;
    unsigned char h[STORE_HEADER_LEN];
    unsigned char *name, *points, *table; /* owned copies */
    uint64_t npts, windows_off, points_off, table_off, path_len;
};

static void file_destroy(struct file *f)
{
    free(f->name);
    free(f->points);
    free(f->table);
}

/* Exactly len bytes at off. A short read is a file that shrank: damaged. */
static int read_at(struct src *s, void *buf, size_t len, uint64_t off)
{
    int64_t n = src_pread(s, buf, len, off);

    if (n < 0)
        return (int)n;
    return (uint64_t)n == len ? 0 : -EBADMSG;
}

/* Magic, version, lengths and key, and where the parts are; want_points:
 * a deflate member's file (a stored member's has none). */
static int check_header(struct file *f, const struct dfx_store_key *k, bool want_points)
{
    const unsigned char *h = f->h;
    unsigned char want[STORE_HEADER_LEN] = {0};
    uint64_t end = f->len - STORE_CRC_LEN;
    int ret = read_at(f->src, f->h, STORE_HEADER_LEN, 0);

    if (ret < 0)
        return ret;
    if (memcmp(h, STORE_MAGIC, STORE_MAGIC_LEN) != 0)
        return -EBADMSG;
    if (get_le32(h + H_VERSION) != DFX_STORE_VERSION)
        return -ESTALE;
    if (get_le32(h + H_HEADER_LEN) != STORE_HEADER_LEN || get_le64(h + H_FILE_LEN) != f->len)
        return -EBADMSG;
    key_fields(k, want);
    if (memcmp(h + H_KEY, want + H_KEY, H_KEY_END - H_KEY) != 0)
        return -ESTALE;
    f->npts = get_le64(h + H_NPTS);
    f->windows_off = get_le64(h + H_WINDOWS_OFF);
    f->points_off = get_le64(h + H_POINTS_OFF);
    f->table_off = get_le64(h + H_TABLE_OFF);
    f->path_len = get_le64(h + H_PATH_LEN);
    if (k->name_len > end - STORE_HEADER_LEN || f->path_len > DFX_STORE_PATH_MAX ||
        f->windows_off != STORE_HEADER_LEN + pad8(k->name_len) + pad8(f->path_len) ||
        f->windows_off > f->points_off || f->points_off > end ||
        f->npts > (end - f->points_off) / STORE_POINT_LEN ||
        f->table_off != f->points_off + f->npts * STORE_POINT_LEN ||
        end - f->table_off < STORE_TABLE_HEAD)
        return -EBADMSG;
    if ((f->npts == 0) == want_points)
        return -ESTALE; /* a stored member's file for a deflate member, or the reverse */
    return 0;
}

/* Is byte i of the file in the zero padding after the name or the path? */
static bool in_padding(const struct file *f, size_t name_len, uint64_t i)
{
    uint64_t name_end = STORE_HEADER_LEN + name_len, path_at = STORE_HEADER_LEN + pad8(name_len);

    return (i >= name_end && i < path_at) || (i >= path_at + f->path_len && i < f->windows_off);
}

/* Copy the part of piece [at, at + n) that falls in [from, from + len)
 * into dst. */
static void copy_part(unsigned char *dst, uint64_t from, uint64_t len, const unsigned char *piece,
                      uint64_t at, size_t n)
{
    uint64_t lo = at > from ? at : from, hi = at + n < from + len ? at + n : from + len;

    if (lo < hi)
        memcpy(dst + (lo - from), piece + (lo - at), (size_t)(hi - lo));
}

/* Read the whole file once, in pieces: check its checksum and the name's
 * padding, and copy out the name, the point table and the chunk table. */
static int stream_file(struct file *f, const struct dfx_store_key *k)
{
    uint64_t end = f->len - STORE_CRC_LEN, tlen = end - f->table_off;
    unsigned char *piece = malloc(STORE_PIECE), tail[STORE_CRC_LEN];
    uLong crc = crc32(0, Z_NULL, 0);
    int ret = 0;

    f->name = malloc(k->name_len + 1);
    f->points = malloc((size_t)(f->npts * STORE_POINT_LEN) + 1);
    f->table = malloc((size_t)tlen);
    if (!piece || !f->name || !f->points || !f->table)
        ret = -ENOMEM;
    for (uint64_t at = 0; ret == 0 && at < end;) {
        size_t n = end - at < STORE_PIECE ? (size_t)(end - at) : STORE_PIECE;

        ret = read_at(f->src, piece, n, at);
        if (ret < 0)
            break;
        crc = crc32_z(crc, piece, n);
        copy_part(f->name, STORE_HEADER_LEN, k->name_len, piece, at, n);
        copy_part(f->points, f->points_off, f->npts * STORE_POINT_LEN, piece, at, n);
        copy_part(f->table, f->table_off, tlen, piece, at, n);
        for (uint64_t i = at; i < f->windows_off && i < at + n; i++)
            if (piece[i - at] && in_padding(f, k->name_len, i))
                ret = -EBADMSG;
        at += n;
    }
    if (ret == 0)
        ret = read_at(f->src, tail, sizeof(tail), end);
    if (ret == 0 && get_le32(tail) != (uint32_t)crc)
        ret = -EBADMSG;
    if (ret == 0 && memcmp(f->name, k->name, k->name_len) != 0)
        ret = -ESTALE;
    free(piece);
    return ret;
}

/* The point table as dfx_xpoints, each window range checked: windows lie
 * between the name and the point table. */
static int parse_points(const struct file *f, struct dfx_xpoint **out)
{
    struct dfx_xpoint *x = calloc((size_t)f->npts, sizeof(*x));

    *out = NULL;
    if (!x)
        return -ENOMEM;
    for (size_t i = 0; i < f->npts; i++) {
        const unsigned char *r = f->points + i * STORE_POINT_LEN;
        uint64_t zoff = get_le64(r + P_ZOFF);
        uint32_t zlen = get_le32(r + P_ZLEN), wlen = get_le32(r + P_WLEN);
        bool pad_ok = true;

        for (int j = P_BITS + 1; j < P_WCRC; j++)
            pad_ok = pad_ok && r[j] == 0;
        if (!pad_ok || r[P_BITS] > 7 || wlen > DFX_WINDOW_SIZE || (zlen == 0) != (wlen == 0) ||
            (zlen && (zoff < f->windows_off || zoff > f->points_off ||
                      f->points_off - zoff < zlen)) ||
            (!zlen && (zoff || get_le32(r + P_WCRC)))) {
            free(x);
            return -EBADMSG;
        }
        x[i].out = get_le64(r + P_OUT);
        x[i].in = get_le64(r + P_IN);
        x[i].member_out = get_le64(r + P_MEMBER_OUT);
        x[i].bits = r[P_BITS];
        x[i].window_len = wlen;
        x[i].woff = zoff;
        x[i].zlen = zlen;
        x[i].wcrc = get_le32(r + P_WCRC);
    }
    *out = x;
    return 0;
}

/* The chunk table into *out, or NULL if the file has none. want: the chunk
 * size the caller uses. */
static int parse_table(const struct file *f, uint32_t want, struct dfx_crcs **out)
{
    uint64_t total = get_le64(f->h + H_TOTAL), tlen = f->len - STORE_CRC_LEN - f->table_off;
    const unsigned char *t = f->table;
    uint32_t chunk = get_le32(t + T_CHUNK);
    uint64_t count = get_le64(t + T_COUNT);
    int ret;

    *out = NULL;
    if (get_le32(t + T_ZERO) != 0)
        return -EBADMSG;
    if (chunk == 0)
        return count == 0 && tlen == STORE_TABLE_HEAD ? 0 : -EBADMSG;
    if (total == UINT64_MAX || count != total / chunk + (total % chunk != 0) ||
        count > (tlen - STORE_TABLE_HEAD) / 4 || tlen - STORE_TABLE_HEAD != count * 4)
        return -EBADMSG;
    if (chunk != want)
        return -ESTALE; /* built by an npyfs with another chunk size */
    ret = dfx_crcs_new(total, chunk, out);
    if (ret < 0)
        return ret == -EINVAL ? -EBADMSG : ret;
    for (uint64_t i = 0; i < count; i++)
        (*out)->crc[i] = get_le32(t + STORE_TABLE_HEAD + 4 * i);
    return 0;
}

/* Contract in dfx_store.h. */
int dfx_store_load(struct src *file, const struct dfx_store_key *k, struct dfx_index *ix,
                   uint32_t chunk, const struct dfx_crcs *have, struct dfx_crcs **crcs,
                   uint64_t *spacing, void (*release)(void *arg), void *arg)
{
    struct file f = {.src = file, .len = file->size};
    struct dfx_xpoint *pts = NULL;
    struct dfx_crcs *t = NULL;
    struct loaded *l = NULL;
    bool gzip = ix && dfx_index_stream(ix)->framing == DFX_GZIP;
    int ret = 0;

    if (crcs)
        *crcs = NULL;
    if (f.len < STORE_HEADER_LEN + STORE_CRC_LEN)
        ret = -EBADMSG;
    if (ret == 0)
        ret = check_header(&f, k, ix != NULL);
    if (ret == 0)
        ret = stream_file(&f, k);
    if (ret == 0)
        ret = parse_table(&f, chunk, &t);
    if (ret == 0 && !ix && (!t || get_le64(f.h + H_TOTAL) != k->stored_size))
        ret = -EBADMSG; /* a stored member's file is its table */
    if (ret == 0 && gzip && !t)
        ret = -ESTALE; /* not written by this version: dfx_store_writer_end() */
    if (ret == 0 && have &&
        (!t || t->size != have->size || t->chunk != have->chunk ||
         memcmp(t->crc, have->crc, (size_t)have->count * sizeof(have->crc[0])) != 0))
        ret = -ESTALE; /* built from other content than the caller reads */
    if (ret == 0 && ix)
        ret = parse_points(&f, &pts);
    if (ret == 0 && ix && !(l = malloc(sizeof(*l))))
        ret = -ENOMEM;
    if (ret == 0 && ix) {
        struct dfx_fetch fetch = {loaded_read, loaded_release, l};

        *l = (struct loaded){file, release, arg};
        ret = dfx_index_import(ix, pts, (size_t)f.npts, get_le64(f.h + H_TOTAL), &fetch);
        if (ret == -EINVAL)
            ret = -EBADMSG; /* points out of order or outside the stream */
    }
    if (ret == 0 && spacing)
        *spacing = get_le64(f.h + H_SPACING);
    if (ret < 0)
        free(l);
    free(pts);
    file_destroy(&f);
    if (ret < 0) {
        free(t);
        return ret;
    }
    if (crcs)
        *crcs = t;
    else
        free(t);
    return 0;
}

/* ---------------------------------------------------------------- peek --- */

/* Contract in dfx_store.h. */
bool dfx_store_has_magic(struct src *file)
{
    unsigned char m[STORE_MAGIC_LEN];

    return read_at(file, m, sizeof(m), 0) == 0 && memcmp(m, STORE_MAGIC, STORE_MAGIC_LEN) == 0;
}

/* Contract in dfx_store.h. */
void dfx_store_info_clear(struct dfx_store_info *info)
{
    free(info->member);
    free(info->path);
    info->member = info->path = NULL;
    info->member_len = 0;
}

/* Contract in dfx_store.h. */
int dfx_store_peek(struct src *file, struct dfx_store_info *info)
{
    unsigned char h[STORE_HEADER_LEN];
    uint64_t name_len, path_len, windows_off, len = file->size;
    int ret = 0;

    memset(info, 0, sizeof(*info));
    if (!dfx_store_has_magic(file))
        return -ENOENT;
    if (read_at(file, h, STORE_MAGIC_LEN + 4, 0) < 0)
        return -EBADMSG; /* ours by its magic, cut short */
    info->version = get_le32(h + H_VERSION);
    if (info->version != DFX_STORE_VERSION)
        return 0; /* the caller decides */
    if (len < STORE_HEADER_LEN + STORE_CRC_LEN || read_at(file, h, sizeof(h), 0) < 0)
        return -EBADMSG;
    name_len = get_le64(h + H_NAME_LEN);
    path_len = get_le64(h + H_PATH_LEN);
    windows_off = get_le64(h + H_WINDOWS_OFF);
    if (get_le32(h + H_HEADER_LEN) != STORE_HEADER_LEN || get_le64(h + H_FILE_LEN) != len ||
        name_len > (1u << 16) || path_len > DFX_STORE_PATH_MAX ||
        windows_off != STORE_HEADER_LEN + pad8(name_len) + pad8(path_len) ||
        windows_off > len - STORE_CRC_LEN)
        return -EBADMSG;
    info->member = malloc(name_len + 1);
    info->path = path_len ? malloc(path_len + 1) : NULL;
    if (!info->member || (path_len && !info->path))
        ret = -ENOMEM;
    else if (read_at(file, info->member, name_len, STORE_HEADER_LEN) < 0 ||
             (path_len &&
              read_at(file, info->path, path_len, STORE_HEADER_LEN + pad8(name_len)) < 0))
        ret = -EBADMSG;
    if (ret < 0) {
        dfx_store_info_clear(info);
        return ret;
    }
    info->member[name_len] = '\0';
    info->member_len = name_len;
    if (info->path) {
        info->path[path_len] = '\0';
        if (strlen(info->path) != path_len) { /* a NUL inside: no path to check */
            free(info->path);
            info->path = NULL;
        }
    }
    /* the key's identity of the archive, for a check against its path */
    info->dev = get_le64(h + H_DEV);
    info->ino = get_le64(h + H_INO);
    info->size = get_le64(h + H_SIZE);
    info->mtime_sec = (int64_t)get_le64(h + H_MTIME_SEC);
    info->mtime_nsec = get_le32(h + H_MTIME_NSEC);
    return 0;
}

/* Contract in dfx_store.h. */
int dfx_store_verify(struct src *file)
{
    unsigned char *piece, tail[STORE_CRC_LEN];
    uLong crc = crc32(0, Z_NULL, 0);
    uint64_t end;
    int ret = 0;

    if (file->size < STORE_HEADER_LEN + STORE_CRC_LEN)
        return -EBADMSG;
    end = file->size - STORE_CRC_LEN;
    piece = malloc(STORE_PIECE);
    if (!piece)
        return -ENOMEM;
    for (uint64_t at = 0; ret == 0 && at < end;) {
        size_t n = end - at < STORE_PIECE ? (size_t)(end - at) : STORE_PIECE;

        ret = read_at(file, piece, n, at);
        if (ret == 0)
            crc = crc32_z(crc, piece, n);
        at += n;
    }
    free(piece);
    if (ret == 0)
        ret = read_at(file, tail, sizeof(tail), end);
    if (ret == 0 && get_le32(tail) != (uint32_t)crc)
        ret = -EBADMSG;
    return ret;
}

/* Contract in dfx_store.h. */
int dfx_store_file_len(struct src *file, uint64_t off, uint64_t *len)
{
    unsigned char h[H_FILE_LEN + 8];
    uint64_t n;

    if (off > file->size || file->size - off < STORE_HEADER_LEN + STORE_CRC_LEN ||
        read_at(file, h, sizeof(h), off) < 0 || memcmp(h, STORE_MAGIC, STORE_MAGIC_LEN) != 0)
        return -ENOENT;
    n = get_le64(h + H_FILE_LEN);
    if (get_le32(h + H_HEADER_LEN) != STORE_HEADER_LEN || n < STORE_HEADER_LEN + STORE_CRC_LEN ||
        n > file->size - off)
        return -EBADMSG;
    *len = n;
    return 0;
}
