/*
 * Persisted deflate indexes. Contract and file layout in dfx_store.h.
 *
 * Saving exports the points of a complete index (dfx_internal.h), compresses
 * any raw window, and writes header, name, point table, windows, the chunk
 * CRC table and the trailing CRC-32 through one writer that checksums as it
 * goes. Loading
 * keeps the whole file in a blob (a read-only mapping, or a heap copy for
 * small files so that an archive of many members does not use a mapping
 * each), checks it from the outside in (lengths, key, checksum, then every
 * point), and hands the index pointers to the compressed windows inside the
 * blob; the index frees the blob when it is freed.
 */
#define _GNU_SOURCE
#include "dfx_store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "dfx_internal.h"
#include "dfx_isal.h"
#include "source.h"

#define STORE_MAGIC "NPYFSIDX"
#define STORE_MAGIC_LEN 8
#define STORE_HEADER_LEN 128
#define STORE_POINT_LEN 48
#define STORE_CRC_LEN 4
#define STORE_TABLE_HEAD 16
/* Files up to this size are read into the heap instead of mapped: a mapping
 * per member would run into vm.max_map_count for archives of many members. */
#define STORE_MMAP_MIN (1u << 20)
/* zlib level for windows: 1 is ~3x faster than 6 and only a little larger. */
#define STORE_ZLEVEL 1

/* Header field offsets. */
#define H_VERSION 8
#define H_HEADER_LEN 12
#define H_FILE_LEN 16
#define H_SPACING 24
#define H_TOTAL 32
#define H_NPTS 40
#define H_DEV 48
#define H_INO 56
#define H_SIZE 64
#define H_MTIME_SEC 72
#define H_MTIME_NSEC 80
#define H_CRC 84
#define H_STORED 88
#define H_NAME_LEN 96
#define H_POINTS_OFF 104
#define H_WINDOWS_OFF 112
#define H_TABLE_OFF 120

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

static atomic_uint tmp_counter;

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

/* Contract in dfx_internal.h. */
int dfx_window_deflate(const unsigned char *raw, uint32_t len, unsigned char **z, uint32_t *zlen)
{
    uLongf cap = compressBound(len);
    unsigned char *buf, *shrunk;
    int ret;

    *z = NULL;
    *zlen = 0;
    if (len == 0 || len > DFX_WINDOW_SIZE)
        return -EINVAL;
    buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    ret = compress2(buf, &cap, raw, len, STORE_ZLEVEL);
    if (ret != Z_OK) {
        free(buf);
        return ret == Z_MEM_ERROR ? -ENOMEM : -EINVAL;
    }
    shrunk = realloc(buf, cap);
    *z = shrunk ? shrunk : buf;
    *zlen = (uint32_t)cap;
    return 0;
}

/* Contract in dfx_internal.h. */
int dfx_window_inflate(const unsigned char *z, uint32_t zlen, unsigned char *raw, uint32_t len)
{
    uLongf got = len;

    if (uncompress(raw, &got, z, zlen) != Z_OK || got != len)
        return -EIO;
    return 0;
}

/* ---------------------------------------------------------- crc table --- */

/* Contract in dfx_store.h. */
int dfx_crcs_new(uint64_t size, uint32_t chunk, struct dfx_crcs **out)
{
    uint64_t count;
    struct dfx_crcs *t;

    *out = NULL;
    if (chunk == 0)
        return -EINVAL;
    count = size / chunk + (size % chunk != 0);
    if (count > (SIZE_MAX - sizeof(*t)) / sizeof(t->crc[0]))
        return -EINVAL;
    t = calloc(1, sizeof(*t) + (size_t)count * sizeof(t->crc[0]));
    if (!t)
        return -ENOMEM;
    t->size = size;
    t->count = count;
    t->chunk = chunk;
    *out = t;
    return 0;
}

/* Contract in dfx_store.h. A chunk's CRC starts at 0, the CRC of nothing,
 * so each piece just continues it. */
void dfx_crcs_feed(struct dfx_crcs *t, uint64_t off, const void *buf, size_t len)
{
    const unsigned char *p = buf;

    while (len && off < t->size) {
        uint64_t i = off / t->chunk;
        uint64_t room = (i + 1) * t->chunk - off;
        size_t n = len < room ? len : (size_t)room;

        t->crc[i] = dfx_isal_crc32(t->crc[i], p, n);
        p += n;
        off += n;
        len -= n;
    }
}

/* Contract in dfx_store.h. */
uint32_t dfx_crcs_of(const void *buf, size_t len)
{
    return dfx_isal_crc32(0, buf, len);
}

/* Contract in dfx_store.h. */
uint32_t dfx_crcs_whole(const struct dfx_crcs *t)
{
    uLong crc = 0;

    for (uint64_t i = 0; i < t->count; i++) {
        uint64_t len = i + 1 < t->count ? t->chunk : t->size - i * t->chunk;
        crc = crc32_combine(crc, t->crc[i], (z_off_t)len);
    }
    return (uint32_t)crc;
}

/* ---------------------------------------------------------------- keys --- */

/* The key's numbers in header order (H_DEV .. H_NAME_LEN). */
static void key_fields(const struct dfx_store_key *k, unsigned char *h)
{
    put_le64(h + H_DEV, k->dev);
    put_le64(h + H_INO, k->ino);
    put_le64(h + H_SIZE, k->size);
    put_le64(h + H_MTIME_SEC, (uint64_t)k->mtime_sec);
    put_le32(h + H_MTIME_NSEC, k->mtime_nsec);
    put_le32(h + H_CRC, k->crc);
    put_le64(h + H_STORED, k->stored_size);
    put_le64(h + H_NAME_LEN, k->name_len);
}

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* Contract in dfx_store.h. */
int dfx_store_path(const char *dir, const struct dfx_store_key *k, char **out)
{
    unsigned char h[STORE_HEADER_LEN] = {0};
    uint64_t hash;
    uint32_t crc;

    key_fields(k, h);
    hash = fnv1a(0xcbf29ce484222325ull, h + H_DEV, H_NAME_LEN + 8 - H_DEV);
    hash = fnv1a(hash, (const unsigned char *)k->name, k->name_len);
    crc = (uint32_t)crc32(crc32(0, h + H_DEV, H_NAME_LEN + 8 - H_DEV),
                          (const unsigned char *)k->name, (uInt)k->name_len);
    if (asprintf(out, "%s/%016llx%08x.dfx", dir, (unsigned long long)hash, crc) < 0) {
        *out = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* ----------------------------------------------------------- directory --- */

/* Contract in dfx_store.h. */
int dfx_store_default_dir(char **out)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;

    *out = NULL;
    if (xdg && xdg[0] == '/')
        n = asprintf(out, "%s/npyfs", xdg);
    else if (home && home[0])
        n = asprintf(out, "%s/.cache/npyfs", home);
    else
        return -ENOENT;
    if (n < 0) {
        *out = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* mkdir -p with mode 0700 for every directory it creates. */
static int mkdir_parents(const char *dir)
{
    char *p = strdup(dir);
    int ret = 0;

    if (!p)
        return -ENOMEM;
    for (char *s = p + 1; ret == 0; s++) {
        bool last = *s == '\0';
        if (*s != '/' && !last)
            continue;
        *s = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST)
            ret = -errno;
        if (last)
            break;
        *s = '/';
    }
    free(p);
    return ret;
}

/* Is the open directory fd one the user may keep indexes in? */
static int check_dir_fd(int fd)
{
    struct stat st;

    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    if (st.st_uid != geteuid() || (st.st_mode & S_IWOTH))
        return -EPERM;
    return 0;
}

/* Contract in dfx_store.h. */
int dfx_store_prepare_dir(const char *dir)
{
    int ret = mkdir_parents(dir), fd;

    if (ret < 0)
        return ret;
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ret = check_dir_fd(fd);
    if (ret == 0 && faccessat(fd, ".", W_OK | X_OK, AT_EACCESS) < 0)
        ret = -errno;
    close(fd);
    return ret;
}

/* --------------------------------------------------------------- save --- */

/* Sequential writes that keep a running CRC-32 of everything written. */
struct writer {
    int fd;
    uLong crc;
};

static int write_all(struct writer *w, const void *buf, size_t len)
{
    const unsigned char *p = buf;

    w->crc = crc32(w->crc, p, (uInt)len);
    while (len) {
        ssize_t n = write(w->fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Every window of pts in compressed form: zw[i] points to pts[i].zwin or to
 * an owned copy (own[i] set) made here. */
struct zwindows {
    const unsigned char **zw;
    uint32_t *zlen;
    bool *own;
    size_t n;
};

static void zwindows_destroy(struct zwindows *z)
{
    for (size_t i = 0; z->own && i < z->n; i++)
        if (z->own[i])
            free((void *)z->zw[i]);
    free(z->zw);
    free(z->zlen);
    free(z->own);
}

static int zwindows_init(struct zwindows *z, const struct dfx_xpoint *pts, size_t n)
{
    z->n = n;
    z->zw = calloc(n, sizeof(*z->zw));
    z->zlen = calloc(n, sizeof(*z->zlen));
    z->own = calloc(n, sizeof(*z->own));
    if (!z->zw || !z->zlen || !z->own)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        unsigned char *c;
        int ret;

        if (!pts[i].window) {
            z->zw[i] = pts[i].zwin;
            z->zlen[i] = pts[i].zwin ? pts[i].zlen : 0;
            continue;
        }
        ret = dfx_window_deflate(pts[i].window, pts[i].window_len, &c, &z->zlen[i]);
        if (ret < 0)
            return ret;
        z->zw[i] = c;
        z->own[i] = true;
    }
    return 0;
}

static void fill_header(unsigned char *h, const struct dfx_store_key *k, uint64_t spacing,
                        uint64_t total, size_t n, uint64_t table_off, uint64_t file_len)
{
    uint64_t points_off = STORE_HEADER_LEN + pad8(k->name_len);

    memset(h, 0, STORE_HEADER_LEN);
    memcpy(h, STORE_MAGIC, STORE_MAGIC_LEN);
    put_le32(h + H_VERSION, DFX_STORE_VERSION);
    put_le32(h + H_HEADER_LEN, STORE_HEADER_LEN);
    put_le64(h + H_FILE_LEN, file_len);
    put_le64(h + H_SPACING, spacing);
    put_le64(h + H_TOTAL, total);
    put_le64(h + H_NPTS, n);
    key_fields(k, h);
    put_le64(h + H_POINTS_OFF, points_off);
    put_le64(h + H_WINDOWS_OFF, points_off + (uint64_t)n * STORE_POINT_LEN);
    put_le64(h + H_TABLE_OFF, table_off);
}

/* The chunk table: its head, then the CRCs little-endian. */
static int write_table(struct writer *w, const struct dfx_crcs *t)
{
    unsigned char head[STORE_TABLE_HEAD] = {0}, buf[4096];
    uint64_t count = t ? t->count : 0;
    int ret;

    put_le32(head + T_CHUNK, t ? t->chunk : 0);
    put_le64(head + T_COUNT, count);
    ret = write_all(w, head, sizeof(head));
    for (uint64_t i = 0; ret == 0 && i < count;) {
        size_t n = 0;
        for (; n + 4 <= sizeof(buf) && i < count; n += 4, i++)
            put_le32(buf + n, t->crc[i]);
        ret = write_all(w, buf, n);
    }
    return ret;
}

/* Write the whole file to fd. */
static int write_index(int fd, const struct dfx_store_key *k, uint64_t spacing,
                       uint64_t total, const struct dfx_xpoint *pts, const struct zwindows *z,
                       const struct dfx_crcs *t)
{
    struct writer w = {fd, crc32(0, Z_NULL, 0)};
    uint64_t wstart = STORE_HEADER_LEN + pad8(k->name_len) + (uint64_t)z->n * STORE_POINT_LEN;
    uint64_t woff = wstart, table_off, file_len;
    unsigned char h[STORE_HEADER_LEN], rec[STORE_POINT_LEN], pad[8] = {0}, tail[STORE_CRC_LEN];
    int ret;

    for (size_t i = 0; i < z->n; i++)
        woff += z->zlen[i];
    table_off = woff;
    file_len = table_off + STORE_TABLE_HEAD + (t ? t->count * 4 : 0) + STORE_CRC_LEN;
    fill_header(h, k, spacing, total, z->n, table_off, file_len);
    ret = write_all(&w, h, sizeof(h));
    if (ret == 0 && k->name_len)
        ret = write_all(&w, k->name, k->name_len);
    if (ret == 0)
        ret = write_all(&w, pad, (size_t)(pad8(k->name_len) - k->name_len));
    woff = wstart;
    for (size_t i = 0; ret == 0 && i < z->n; i++) {
        memset(rec, 0, sizeof(rec));
        put_le64(rec + P_OUT, pts[i].out);
        put_le64(rec + P_IN, pts[i].in);
        put_le64(rec + P_MEMBER_OUT, pts[i].member_out);
        put_le64(rec + P_ZOFF, z->zlen[i] ? woff : 0);
        put_le32(rec + P_ZLEN, z->zlen[i]);
        put_le32(rec + P_WLEN, pts[i].window_len);
        rec[P_BITS] = (unsigned char)pts[i].bits;
        woff += z->zlen[i];
        ret = write_all(&w, rec, sizeof(rec));
    }
    for (size_t i = 0; ret == 0 && i < z->n; i++)
        if (z->zlen[i])
            ret = write_all(&w, z->zw[i], z->zlen[i]);
    if (ret == 0)
        ret = write_table(&w, t);
    if (ret == 0) {
        put_le32(tail, (uint32_t)w.crc);
        ret = write_all(&w, tail, sizeof(tail));
    }
    if (ret == 0 && fsync(fd) < 0)
        ret = -errno;
    return ret;
}

/* Create a fresh temporary file next to final (never following a link or
 * reusing a name), write the index, and rename it over final. */
static int write_atomically(const char *final, const struct dfx_store_key *k,
                            uint64_t spacing, uint64_t total, const struct dfx_xpoint *pts,
                            const struct zwindows *z, const struct dfx_crcs *t)
{
    char *tmp = NULL;
    int fd = -1, ret;

    for (int tries = 0; fd < 0 && tries < 16; tries++) {
        free(tmp);
        if (asprintf(&tmp, "%s.%d.%u.tmp", final, (int)getpid(),
                     atomic_fetch_add(&tmp_counter, 1)) < 0)
            return -ENOMEM;
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST) {
            ret = -errno;
            free(tmp);
            return ret;
        }
    }
    if (fd < 0) {
        free(tmp);
        return -EEXIST;
    }
    ret = write_index(fd, k, spacing, total, pts, z, t);
    if (close(fd) < 0 && ret == 0)
        ret = -errno;
    if (ret == 0 && rename(tmp, final) < 0)
        ret = -errno;
    if (ret < 0)
        unlink(tmp);
    free(tmp);
    return ret;
}

/* Contract in dfx_store.h. */
int dfx_store_save(const char *dir, const struct dfx_store_key *k, struct dfx_index *ix,
                   const struct dfx_crcs *crcs)
{
    struct zwindows z = {0};
    struct dfx_xpoint *pts = NULL;
    char *final = NULL;
    uint64_t total;
    size_t n = 0;
    int dfd, ret;

    if (!ix && (!crcs || crcs->size != k->stored_size))
        return -EINVAL;
    ret = ix ? dfx_index_export(ix, &pts, &n, &total) : 0;
    if (ret < 0)
        return ret;
    if (!ix)
        total = crcs->size;
    if (crcs && crcs->size != total) {
        ret = -EINVAL;
        goto out_free_pts;
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        ret = -errno;
        goto out_free_pts;
    }
    ret = check_dir_fd(dfd);
    if (ret == 0)
        ret = dfx_store_path(dir, k, &final);
    if (ret == 0)
        ret = zwindows_init(&z, pts, n);
    if (ret == 0)
        ret = write_atomically(final, k, ix ? dfx_index_spacing(ix) : 0, total, pts, &z, crcs);
    if (ret == 0 && fsync(dfd) < 0) /* make the rename itself durable */
        ret = -errno;
    zwindows_destroy(&z);
    free(final);
    close(dfd);
out_free_pts:
    free(pts);
    return ret;
}

/* --------------------------------------------------------------- load --- */

/* The loaded file: mapped, or copied into the heap. Owned by the index it
 * was imported into (blob_release), else freed by the loader. */
struct blob {
    unsigned char *p;
    size_t len;
    bool mapped;
};

static void blob_release(void *arg)
{
    struct blob *b = arg;

    if (!b)
        return;
    if (b->mapped)
        munmap(b->p, b->len);
    else
        free(b->p);
    free(b);
}

static int blob_read(int fd, size_t len, struct blob *b)
{
    b->len = len;
    if (len >= STORE_MMAP_MIN) {
        void *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED)
            return -errno;
        b->p = p;
        b->mapped = true;
        return 0;
    }
    b->p = malloc(len);
    if (!b->p)
        return -ENOMEM;
    for (size_t done = 0; done < len;) {
        ssize_t n = pread(fd, b->p + done, len - done, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EBADMSG; /* shrank under us */
        done += (size_t)n;
    }
    return 0;
}

/* Open the file for key and read it into a new blob. */
static int blob_open(const char *dir, const struct dfx_store_key *k, struct blob **out)
{
    struct blob *b;
    struct stat st;
    char *path;
    int fd, ret;

    *out = NULL;
    ret = dfx_store_path(dir, k, &path);
    if (ret < 0)
        return ret;
    /* O_NONBLOCK: a FIFO planted in the directory opens at once (and is
     * refused below) instead of blocking the opener for good; the directory
     * is ours, so nothing else but a regular file is expected there. */
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    ret = fd < 0 ? -errno : 0;
    free(path);
    if (ret == -ELOOP)
        ret = -EBADMSG; /* a symlink planted in our directory: never follow */
    if (ret < 0)
        return ret;
    if (fstat(fd, &st) < 0)
        ret = -errno;
    else if (!S_ISREG(st.st_mode) || st.st_uid != geteuid())
        ret = -EBADMSG;
    else if (st.st_size < STORE_HEADER_LEN + STORE_CRC_LEN || (uint64_t)st.st_size > SIZE_MAX)
        ret = -EBADMSG;
    b = ret == 0 ? calloc(1, sizeof(*b)) : NULL;
    if (ret == 0 && !b)
        ret = -ENOMEM;
    if (ret == 0)
        ret = blob_read(fd, (size_t)st.st_size, b);
    close(fd);
    if (ret < 0) {
        blob_release(b);
        return ret;
    }
    *out = b;
    return 0;
}

/* Magic, version, lengths, key and spacing, then the checksum. */
static int check_header(const struct blob *b, const struct dfx_store_key *k, uint64_t spacing)
{
    const unsigned char *h = b->p;
    unsigned char want[STORE_HEADER_LEN] = {0};

    if (memcmp(h, STORE_MAGIC, STORE_MAGIC_LEN) != 0)
        return -EBADMSG;
    if (get_le32(h + H_VERSION) != DFX_STORE_VERSION)
        return -ESTALE;
    if (get_le32(h + H_HEADER_LEN) != STORE_HEADER_LEN || get_le64(h + H_FILE_LEN) != b->len)
        return -EBADMSG;
    key_fields(k, want);
    if (memcmp(h + H_DEV, want + H_DEV, H_NAME_LEN + 8 - H_DEV) != 0 ||
        get_le64(h + H_SPACING) != spacing)
        return -ESTALE;
    if (b->len - STORE_HEADER_LEN - STORE_CRC_LEN < k->name_len ||
        memcmp(h + STORE_HEADER_LEN, k->name, k->name_len) != 0)
        return -ESTALE;
    if (get_le32(b->p + b->len - STORE_CRC_LEN) !=
        (uint32_t)crc32_z(0, b->p, b->len - STORE_CRC_LEN))
        return -EBADMSG;
    return 0;
}

/* The point table as dfx_xpoints into the blob, each window range checked:
 * windows lie between the point table and the chunk table. want_points:
 * a deflate member's file (at least point 0), else a stored member's (none). */
static int parse_points(const struct blob *b, const struct dfx_store_key *k, bool want_points,
                        struct dfx_xpoint **out, size_t *n)
{
    const unsigned char *h = b->p;
    uint64_t npts = get_le64(h + H_NPTS), poff = get_le64(h + H_POINTS_OFF);
    uint64_t woff = get_le64(h + H_WINDOWS_OFF), wend = get_le64(h + H_TABLE_OFF);
    struct dfx_xpoint *x;

    *out = NULL;
    *n = 0;
    if (wend > b->len - STORE_CRC_LEN || poff != STORE_HEADER_LEN + pad8(k->name_len) ||
        poff > wend || (npts == 0) == want_points || npts > (wend - poff) / STORE_POINT_LEN ||
        woff != poff + npts * STORE_POINT_LEN)
        return -EBADMSG;
    for (uint64_t i = STORE_HEADER_LEN + k->name_len; i < poff; i++)
        if (b->p[i])
            return -EBADMSG;
    if (npts == 0)
        return 0;
    x = calloc((size_t)npts, sizeof(*x));
    if (!x)
        return -ENOMEM;
    for (size_t i = 0; i < npts; i++) {
        const unsigned char *r = b->p + poff + i * STORE_POINT_LEN;
        uint64_t zoff = get_le64(r + P_ZOFF);
        uint32_t zlen = get_le32(r + P_ZLEN), wlen = get_le32(r + P_WLEN);
        bool pad_ok = true;

        for (int j = P_BITS + 1; j < STORE_POINT_LEN; j++)
            pad_ok = pad_ok && r[j] == 0;
        if (!pad_ok || r[P_BITS] > 7 || wlen > DFX_WINDOW_SIZE || (zlen == 0) != (wlen == 0) ||
            (zlen && (zoff < woff || zoff > wend || wend - zoff < zlen)) || (!zlen && zoff)) {
            free(x);
            return -EBADMSG;
        }
        x[i].out = get_le64(r + P_OUT);
        x[i].in = get_le64(r + P_IN);
        x[i].member_out = get_le64(r + P_MEMBER_OUT);
        x[i].bits = r[P_BITS];
        x[i].window_len = wlen;
        x[i].zwin = zlen ? b->p + zoff : NULL;
        x[i].zlen = zlen;
    }
    *out = x;
    *n = (size_t)npts;
    return 0;
}

/* The chunk table (from H_TABLE_OFF to the trailing CRC) into *out, or
 * NULL if the file has none. want: the chunk size the caller uses. */
static int parse_table(const struct blob *b, uint32_t want, struct dfx_crcs **out)
{
    uint64_t toff = get_le64(b->p + H_TABLE_OFF), total = get_le64(b->p + H_TOTAL);
    uint64_t end = b->len - STORE_CRC_LEN, count;
    const unsigned char *t;
    uint32_t chunk;
    int ret;

    *out = NULL;
    if (toff > end || end - toff < STORE_TABLE_HEAD)
        return -EBADMSG;
    t = b->p + toff;
    chunk = get_le32(t + T_CHUNK);
    count = get_le64(t + T_COUNT);
    if (get_le32(t + T_ZERO) != 0)
        return -EBADMSG;
    if (chunk == 0)
        return count == 0 && end - toff == STORE_TABLE_HEAD ? 0 : -EBADMSG;
    if (total == UINT64_MAX || count != total / chunk + (total % chunk != 0) ||
        count > (end - toff - STORE_TABLE_HEAD) / 4 ||
        end - toff - STORE_TABLE_HEAD != count * 4)
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
int dfx_store_load(const char *dir, const struct dfx_store_key *k, struct dfx_index *ix,
                   uint32_t chunk, struct dfx_crcs **crcs)
{
    struct dfx_xpoint *pts = NULL;
    struct dfx_crcs *t = NULL;
    struct blob *b;
    size_t n = 0;
    int ret;

    if (crcs)
        *crcs = NULL;
    if (ix && dfx_index_points(ix) != 1)
        return -EBUSY; /* before touching the file: it would not be used */
    ret = blob_open(dir, k, &b);
    if (ret < 0)
        return ret;
    ret = check_header(b, k, ix ? dfx_index_spacing(ix) : 0);
    if (ret == 0)
        ret = parse_points(b, k, ix != NULL, &pts, &n);
    if (ret == 0 && (crcs || !ix))
        ret = parse_table(b, chunk, &t);
    if (ret == 0 && !ix && (!t || get_le64(b->p + H_TOTAL) != k->stored_size))
        ret = -EBADMSG; /* a stored member's file is its table */
    if (ret == 0 && ix)
        ret = dfx_index_import(ix, pts, n, get_le64(b->p + H_TOTAL), DFX_IMPORT_BORROW,
                               blob_release, b);
    else if (ret == 0)
        blob_release(b); /* the table was copied out */
    free(pts);
    if (ret == -EINVAL)
        ret = -EBADMSG; /* points out of order or outside the stream */
    if (ret < 0) {
        blob_release(b);
        free(t);
        return ret;
    }
    if (crcs)
        *crcs = t;
    else
        free(t);
    return 0;
}
