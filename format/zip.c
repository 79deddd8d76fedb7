/*
 * Zip central directory reader. Contract in zip.h; layouts in
 * docs/FORMATS.md section 2 ("Zip archives").
 *
 * zip_archive_open() works from the end: find the end of central directory record
 * (EOCD), follow the ZIP64 locator if there is one, locate the central
 * directory (CD), then walk the CD entries into a flat array of struct
 * zip_member. The only thing taken from a local file header (LFH) is its
 * length, which gives the data offset. Every count, length and offset read
 * from the archive is checked against the source size before it is used.
 */
#include "zip.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EOCD_SIG 0x06054b50u /* PK\5\6 */
#define EOCD_LEN 22u
#define EOCD_MAX_COMMENT 0xFFFFu
#define EOCD_SEARCH (EOCD_LEN + EOCD_MAX_COMMENT) /* 65557: the record can only sit here */
#define EOCD_FIRST 4096u /* searched first: numpy's and most archives have no comment */

#define Z64_LOC_SIG 0x07064b50u /* PK\6\7 */
#define Z64_LOC_LEN 20u
#define Z64_EOCD_SIG 0x06064b50u /* PK\6\6 */
#define Z64_EOCD_LEN 56u         /* fixed part; an extensible data sector may follow */

#define CDH_SIG 0x02014b50u /* PK\1\2 */
#define CDH_LEN 46u
#define LFH_SIG 0x04034b50u /* PK\3\4 */
#define LFH_LEN 30u

#define Z64_EXTRA_ID 0x0001u
#define SAT32 0xFFFFFFFFu /* a saturated field: the real value is in the ZIP64 extra */

/*
 * The CD is read through a window rather than in one piece, so a directory
 * claiming gigabytes costs at most this much memory. One entry is at most
 * 46 + 3 * 65535 bytes, so it always fits in a window.
 */
#define CD_WINDOW (1u << 20)

/* Where the central directory really is, after EOCD/ZIP64/prepend fix-ups. */
struct cd_loc {
    uint64_t count;  /* entries, from the EOCD or the ZIP64 EOCD */
    uint64_t offset; /* actual source offset of the first entry */
    uint64_t size;   /* bytes of CD */
    uint64_t shift;  /* bytes of prepended data: add to every stated offset */
};

/* A sliding view of the CD bytes; see CD_WINDOW. */
struct cd_cursor {
    struct src *s;
    unsigned char *buf; /* owned: bufsize bytes, freed by zip_read_members() */
    size_t bufsize;     /* min(CD size + 1, CD_WINDOW) */
    uint64_t base;      /* source offset of buf[0] */
    size_t len;         /* valid bytes in buf */
    uint64_t end;       /* source offset one past the CD */
};

static int read_sig(struct src *s, uint64_t off, uint32_t sig)
{
    unsigned char b[4];
    int ret = src_read_exact(s, b, 4, off);

    if (ret < 0)
        return ret;
    return get_le32(b) == sig ? 0 : -EINVAL;
}

/*
 * Read the ZIP64 EOCD record pointed to by the locator at loc_pos, and
 * take count, CD size and CD offset from it. *rec_pos gets where the
 * record actually was: the CD ends there. With prepended data the
 * locator's offset is stale, so fall back to the spot right before the
 * locator, as zipfile does.
 */
static int zip_read_zip64_eocd(struct src *s, uint64_t loc_pos, struct cd_loc *cd,
                               uint64_t *rec_pos)
{
    unsigned char loc[Z64_LOC_LEN], rec[Z64_EOCD_LEN];
    uint64_t pos;
    int ret;

    ret = src_read_exact(s, loc, sizeof(loc), loc_pos);
    if (ret < 0)
        return ret;
    /* disk holding the ZIP64 EOCD, total disks (0 is written by some tools) */
    if (get_le32(loc + 4) != 0 || get_le32(loc + 16) > 1)
        return -EOPNOTSUPP;
    pos = get_le64(loc + 8);
    if (pos > loc_pos || loc_pos - pos < Z64_EOCD_LEN || read_sig(s, pos, Z64_EOCD_SIG) < 0) {
        if (loc_pos < Z64_EOCD_LEN)
            return -EINVAL;
        pos = loc_pos - Z64_EOCD_LEN;
    }
    ret = src_read_exact(s, rec, sizeof(rec), pos);
    if (ret < 0)
        return ret;
    if (get_le32(rec) != Z64_EOCD_SIG || get_le64(rec + 4) < Z64_EOCD_LEN - 12)
        return -EINVAL;
    if (get_le32(rec + 16) != 0 || get_le32(rec + 20) != 0)
        return -EOPNOTSUPP;
    if (get_le64(rec + 24) != get_le64(rec + 32))
        return -EINVAL; /* entries on this disk != total on a single disk */
    cd->count = get_le64(rec + 32);
    cd->size = get_le64(rec + 40);
    cd->offset = get_le64(rec + 48);
    *rec_pos = pos;
    return 0;
}

/*
 * The CD must lie before the record that follows it (ZIP64 EOCD or EOCD)
 * and start with an entry signature. If the stated offset does not hold
 * one, try cd_end - size: every stated offset being short by the same
 * amount means data was prepended (self-extractor style), and that shift
 * is applied to the local header offsets too. Anything else is rejected.
 */
static int zip_locate_cd(struct src *s, uint64_t cd_end, struct cd_loc *cd)
{
    uint64_t stated = cd->offset, end;

    if (cd->size > cd_end)
        return -EINVAL;
    if (!__builtin_add_overflow(stated, cd->size, &end) && end <= cd_end &&
        (cd->count == 0 || read_sig(s, stated, CDH_SIG) == 0)) {
        cd->shift = 0;
        return 0;
    }
    cd->offset = cd_end - cd->size;
    if (cd->offset <= stated || cd->count == 0 || read_sig(s, cd->offset, CDH_SIG) < 0)
        return -EINVAL;
    cd->shift = cd->offset - stated;
    return 0;
}

/*
 * Parse the EOCD candidate at pos (rec holds its 22 bytes) and everything
 * it points to. Any failure means "not this candidate".
 */
static int zip_read_eocd(struct src *s, const unsigned char *rec, uint64_t pos, struct cd_loc *cd)
{
    uint16_t disk = get_le16(rec + 4), cd_disk = get_le16(rec + 6);
    uint16_t n_disk = get_le16(rec + 8), n_total = get_le16(rec + 10);
    uint64_t cd_end = pos;
    int ret;

    cd->count = n_total;
    cd->size = get_le32(rec + 12);
    cd->offset = get_le32(rec + 16);

    /* A locator right before the EOCD means the ZIP64 record is
     * authoritative, whether or not the 32-bit fields are saturated. */
    if (pos >= Z64_LOC_LEN && read_sig(s, pos - Z64_LOC_LEN, Z64_LOC_SIG) == 0) {
        ret = zip_read_zip64_eocd(s, pos - Z64_LOC_LEN, cd, &cd_end);
        if (ret < 0)
            return ret;
    } else {
        if (disk != 0 || cd_disk != 0)
            return -EOPNOTSUPP;
        if (n_disk != n_total)
            return -EINVAL;
    }
    return zip_locate_cd(s, cd_end, cd);
}

/*
 * Find the EOCD: search the last EOCD_SEARCH bytes backwards. A candidate
 * whose comment ends exactly at the end of the source is preferred (a
 * 'PK\5\6' inside a comment rarely has a matching length field); only if
 * there is none, accept any complete record (trailing junk, cut comment).
 * The first candidate that parses wins; if none does, the most preferred
 * candidate's error is returned.
 */
static int zip_find_eocd_in(struct src *s, struct cd_loc *cd, size_t search, bool exact_only);

/* The record is looked for in the last EOCD_FIRST bytes first (where it is,
 * unless the archive has a comment longer than that), with the same first
 * choice as a search of all EOCD_SEARCH bytes would make, so a source that
 * holds an object's end in memory (a remote one) needs nothing more. */
static int zip_find_eocd(struct src *s, struct cd_loc *cd)
{
    if (s->size > EOCD_FIRST && zip_find_eocd_in(s, cd, EOCD_FIRST, true) == 0)
        return 0;
    return zip_find_eocd_in(s, cd, EOCD_SEARCH, false);
}

/* Search the last `search` bytes (see above); exact_only: only candidates
 * whose comment ends exactly at the end of the source (the first pass). */
static int zip_find_eocd_in(struct src *s, struct cd_loc *cd, size_t search, bool exact_only)
{
    uint64_t base = s->size > search ? s->size - search : 0;
    size_t len = (size_t)(s->size - base), i;
    unsigned char *tail;
    int ret, pass, tried = 0;

    if (len < EOCD_LEN)
        return -EINVAL;
    tail = malloc(len);
    if (!tail)
        return -ENOMEM;
    ret = src_read_exact(s, tail, len, base);
    if (ret < 0)
        goto out_free_tail;
    ret = -EINVAL;
    for (pass = 0; pass < (exact_only ? 1 : 2) && !tried; pass++) {
        for (i = len - EOCD_LEN + 1; i-- > 0;) {
            const unsigned char *p = tail + i;
            bool exact = get_le16(p + 20) == len - i - EOCD_LEN;
            int r;

            if (get_le32(p) != EOCD_SIG || exact != (pass == 0))
                continue;
            r = zip_read_eocd(s, p, base + i, cd);
            if (r == 0) {
                ret = 0;
                goto out_free_tail;
            }
            if (!tried++)
                ret = r;
        }
    }

out_free_tail:
    free(tail);
    return ret;
}

/* Point *p at n bytes of CD at off, refilling the window if needed. The
 * caller has checked off + n <= c->end. */
static int cd_view(struct cd_cursor *c, uint64_t off, size_t n, const unsigned char **p)
{
    uint64_t want;
    int ret;

    if (off < c->base || off - c->base + n > c->len) {
        want = c->end - off < c->bufsize ? c->end - off : c->bufsize;
        ret = src_read_exact(c->s, c->buf, (size_t)want, off);
        if (ret < 0)
            return ret;
        c->base = off;
        c->len = (size_t)want;
    }
    *p = c->buf + (off - c->base);
    return 0;
}

/*
 * Fill in the fields the ZIP64 extra (id 1) overrides. It holds only the
 * saturated ones, in the order usize, csize, lho, disk. Other extras are
 * skipped; a cut-off trailing extra is ignored (some tools pad), but a
 * ZIP64 extra too short for what it must hold is a broken directory.
 */
static int zip_read_zip64_extra(const unsigned char *x, size_t len, struct zip_member *m)
{
    while (len >= 4) {
        uint16_t id = get_le16(x), sz = get_le16(x + 2);
        const unsigned char *d = x + 4;
        size_t need = 0;

        if (sz > len - 4)
            break;
        if (id == Z64_EXTRA_ID) {
            need = 8 * ((m->usize == SAT32) + (m->csize == SAT32) + (m->lho == SAT32));
            if (sz < need)
                return -EINVAL;
            if (m->usize == SAT32) {
                m->usize = get_le64(d);
                d += 8;
            }
            if (m->csize == SAT32) {
                m->csize = get_le64(d);
                d += 8;
            }
            if (m->lho == SAT32)
                m->lho = get_le64(d);
            return 0;
        }
        x += 4 + sz;
        len -= 4 + sz;
    }
    if (m->usize == SAT32 || m->csize == SAT32 || m->lho == SAT32)
        return -EINVAL; /* saturated without a ZIP64 value: sizes unknown */
    return 0;
}

/*
 * Parse the CD entry at *off (within the CD) into m and advance *off.
 * m->name is allocated here; on failure nothing is left allocated.
 */
static int zip_read_cdir_entry(struct cd_cursor *c, uint64_t *off, struct zip_member *m)
{
    const unsigned char *h;
    uint16_t nlen, xlen, clen;
    size_t var;
    int ret;

    if (c->end - *off < CDH_LEN)
        return -EINVAL;
    ret = cd_view(c, *off, CDH_LEN, &h);
    if (ret < 0)
        return ret;
    if (get_le32(h) != CDH_SIG)
        return -EINVAL;
    nlen = get_le16(h + 28);
    xlen = get_le16(h + 30);
    clen = get_le16(h + 32);
    var = (size_t)nlen + xlen + clen;
    if (c->end - *off - CDH_LEN < var)
        return -EINVAL;
    ret = cd_view(c, *off, CDH_LEN + var, &h); /* may move the window */
    if (ret < 0)
        return ret;

    memset(m, 0, sizeof(*m));
    m->flags = get_le16(h + 8);
    m->method = get_le16(h + 10);
    m->crc32 = get_le32(h + 16);
    m->csize = get_le32(h + 20);
    m->usize = get_le32(h + 24);
    m->lho = get_le32(h + 42);
    ret = zip_read_zip64_extra(h + CDH_LEN + nlen, xlen, m);
    if (ret < 0)
        return ret;
    m->name = malloc((size_t)nlen + 1);
    if (!m->name)
        return -ENOMEM;
    memcpy(m->name, h + CDH_LEN, nlen);
    m->name[nlen] = '\0';
    m->name_len = nlen;
    m->is_dir = nlen > 0 && m->name[nlen - 1] == '/';
    *off += CDH_LEN + var;
    return 0;
}

static const struct {
    uint16_t method;
    const char *name;
    const char *why; /* text for zip_member.why */
} method_names[] = {
    {0, "stored", NULL},
    {8, "deflate", NULL},
    {9, "deflate64", "unsupported method deflate64"},
    {12, "bzip2", "unsupported method bzip2"},
    {14, "lzma", "unsupported method lzma"},
    {93, "zstd", "unsupported method zstd"},
    {95, "xz", "unsupported method xz"},
    {98, "ppmd", "unsupported method ppmd"},
};

/* Contract in zip.h. */
const char *zip_method_name(uint16_t method, char *buf, size_t size)
{
    size_t i;

    for (i = 0; i < sizeof(method_names) / sizeof(method_names[0]); i++)
        if (method_names[i].method == method)
            return method_names[i].name;
    snprintf(buf, size, "method %u", (unsigned)method);
    return buf;
}

/* The first reason found is kept: CD reasons are checked before the LFH. */
static void set_unsupported(struct zip_member *m, int err, const char *why)
{
    if (m->unsupported)
        return;
    m->unsupported = err;
    m->why = why;
}

/* Reasons a member cannot be served that the CD alone reveals. */
static void zip_check_member(struct zip_member *m)
{
    size_t i;

    if (m->flags & ZIP_FLAG_ENCRYPTED) {
        set_unsupported(m, -EOPNOTSUPP, "encrypted");
        return;
    }
    if (m->method != ZIP_METHOD_STORED && m->method != ZIP_METHOD_DEFLATE) {
        const char *why = "unsupported method";

        for (i = 0; i < sizeof(method_names) / sizeof(method_names[0]); i++)
            if (method_names[i].method == m->method)
                why = method_names[i].why;
        set_unsupported(m, -EOPNOTSUPP, why);
        return;
    }
    /* A file's size is an off_t: a ZIP64 usize past INT64_MAX could be
     * listed but never served (st_size, read offsets). The other 64-bit
     * fields are bounded by the source, which is an off_t too: csize and
     * data_offset + csize by the data check in zip_read_local() (with
     * overflow checks), lho by its read, the directory's count, size and
     * offset by zip_locate_cd() and zip_archive_open(). */
    if (m->usize > INT64_MAX) {
        set_unsupported(m, -EOPNOTSUPP, "uncompressed size too large");
        return;
    }
    if (m->method == ZIP_METHOD_STORED && m->csize != m->usize)
        set_unsupported(m, -EIO, "stored sizes differ");
}

/*
 * Read the member's local header for its data offset. Its sizes and CRC
 * are ignored: they may be zero (data descriptor) or 0xFFFFFFFF (ZIP64).
 * A bad local header only marks this member.
 */
static int zip_read_local(struct src *s, uint64_t shift, struct zip_member *m, bool defer)
{
    uint64_t lho;

    if (__builtin_add_overflow(m->lho, shift, &lho)) {
        set_unsupported(m, -EIO, "local header past end of archive");
        m->located = true;
        return 0;
    }
    m->lho = lho;
    return defer ? 0 : zip_member_locate(s, m);
}

/* Contract in zip.h. */
int zip_member_locate(struct src *s, struct zip_member *m)
{
    unsigned char h[LFH_LEN];
    uint64_t data, end;
    int ret;

    if (m->located)
        return 0;
    m->located = true; /* from here on, every outcome is final but a read error */
    ret = src_read_exact(s, h, sizeof(h), m->lho);
    if (ret == -EIO) {
        set_unsupported(m, -EIO, "local header past end of archive");
        return 0;
    }
    if (ret < 0) {
        m->located = false;
        return ret; /* a real read error fails the whole open, or this call */
    }
    if (get_le32(h) != LFH_SIG) {
        set_unsupported(m, -EIO, "bad local header signature");
        return 0;
    }
    data = m->lho + LFH_LEN + get_le16(h + 26) + get_le16(h + 28); /* lho < size: no overflow */
    if (__builtin_add_overflow(data, m->csize, &end) || end > s->size) {
        set_unsupported(m, -EIO, "data runs past end of archive");
        return 0;
    }
    m->data_offset = data;
    return 0;
}

static int zip_read_members(struct src *s, const struct cd_loc *cd, struct zip_archive *z,
                            bool defer)
{
    struct cd_cursor c = {.s = s, .end = cd->offset + cd->size};
    uint64_t off = cd->offset;
    int ret = 0;

    /* A window never needs to be larger than the CD (at least 1 byte, so
     * that malloc cannot return NULL for an empty CD). */
    c.bufsize = cd->size < CD_WINDOW ? (size_t)cd->size + 1 : CD_WINDOW;
    c.buf = malloc(c.bufsize);
    if (!c.buf)
        return -ENOMEM;
    for (z->count = 0; z->count < cd->count; z->count++) {
        struct zip_member *m = &z->members[z->count];

        ret = zip_read_cdir_entry(&c, &off, m);
        if (ret < 0)
            goto out_free_buf;
        zip_check_member(m);
        ret = zip_read_local(s, cd->shift, m, defer);
        if (ret < 0) {
            z->count++; /* m->name is owned now; zip_free() releases it */
            goto out_free_buf;
        }
    }
    if (off != c.end)
        ret = -EINVAL; /* more CD bytes than the count accounts for */

out_free_buf:
    free(c.buf);
    return ret;
}

/* Contract in zip.h. */
int zip_archive_open(struct src *s, struct zip_archive **out)
{
    return zip_archive_open_flags(s, 0, out);
}

/* Contract in zip.h. */
int zip_archive_open_flags(struct src *s, unsigned flags, struct zip_archive **out)
{
    struct zip_archive *z;
    struct cd_loc cd;
    int ret;

    *out = NULL;
    ret = zip_find_eocd(s, &cd);
    if (ret < 0)
        return ret;
    /* Every entry takes at least CDH_LEN bytes of a CD that fits in the
     * source, which bounds the allocation below by the source size. */
    if (cd.count > cd.size / CDH_LEN)
        return -EINVAL;
    if (cd.count > SIZE_MAX / sizeof(struct zip_member))
        return -ENOMEM; /* only reachable with a 32-bit size_t */
    z = calloc(1, sizeof(*z));
    if (!z)
        return -ENOMEM;
    if (cd.count > 0) {
        z->members = calloc((size_t)cd.count, sizeof(*z->members));
        if (!z->members) {
            free(z);
            return -ENOMEM;
        }
    }
    ret = zip_read_members(s, &cd, z, flags & ZIP_DEFER_LOCAL);
    if (ret < 0) {
        zip_free(z);
        return ret;
    }
    *out = z;
    return 0;
}

/* Contract in zip.h. */
int zip_end_info(struct src *s, struct zip_end_info *out)
{
    uint64_t base = s->size > EOCD_SEARCH ? s->size - EOCD_SEARCH : 0;
    size_t len = (size_t)(s->size - base), i;
    unsigned char *tail;
    int ret = 0;

    memset(out, 0, sizeof(*out));
    out->local_header = read_sig(s, 0, LFH_SIG) == 0;
    if (len < EOCD_LEN)
        return 0;
    tail = malloc(len);
    if (!tail)
        return -ENOMEM;
    ret = src_read_exact(s, tail, len, base);
    for (i = len - EOCD_LEN + 1; ret == 0 && i-- > 0;) {
        struct cd_loc cd = {.size = get_le32(tail + i + 12), .offset = get_le32(tail + i + 16)};
        uint64_t rec;

        if (get_le32(tail + i) != EOCD_SIG)
            continue;
        if (base + i >= Z64_LOC_LEN && read_sig(s, base + i - Z64_LOC_LEN, Z64_LOC_SIG) == 0)
            zip_read_zip64_eocd(s, base + i - Z64_LOC_LEN, &cd, &rec); /* else: 32-bit values */
        out->eocd = true;
        out->cd_start = cd.offset;
        if (__builtin_add_overflow(cd.offset, cd.size, &out->cd_end))
            out->cd_end = UINT64_MAX;
        break;
    }
    free(tail);
    return ret;
}

/* Contract in zip.h. */
void zip_free(struct zip_archive *z)
{
    size_t i;

    if (!z)
        return;
    for (i = 0; i < z->count; i++)
        free(z->members[i].name);
    free(z->members);
    free(z);
}
