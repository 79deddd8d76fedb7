/*
 * Persisted deflate indexes. Contract and file layout in dfx_store.h.
 *
 * Writing goes through one writer (struct dfx_store_writer) that appends
 * at a running offset with pwrite and keeps the CRC-32 of everything after
 * the header and name as it goes: windows (sunk by an index builder as
 * points are recorded, or copied out of a complete index at the end), then
 * the point table, the chunk CRC table; then the header and name are
 * written at offset 0 and their CRC-32 combined with the rest's
 * (crc32_combine) for the trailing checksum.
 *
 * Loading reads the header, checks it, then streams the whole file once in
 * bounded pieces (STORE_PIECE), checksumming it and copying out only the
 * name, the point table and the chunk table; the points are checked and
 * imported with a fetch source that preads windows from the file, which
 * stays open for as long as the index lives. Such files are listed in a
 * process-wide registry of open files (device, inode), which pruning
 * consults so that it never removes one.
 *
 * Pruning lists the directory (its own stream over a descriptor of the
 * opened directory), looks at our files with fstatat (never following a
 * link), and before removing one opens it O_NOFOLLOW and checks, through
 * that descriptor, that it is still the regular file of the user's it
 * listed, with the magic. The size cap's bookkeeping (bytes counted at the
 * last listing plus those saved since) lives in the directory, under its
 * lock, which also makes prunes of one directory run one at a time.
 */
#define _GNU_SOURCE
#include "dfx_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "dfx_internal.h"
#include "dfx_isal.h"
#include "source.h"

#define STORE_MAGIC "NPYFSIDX"
#define STORE_MAGIC_LEN 8
#define STORE_HEADER_LEN 144
#define STORE_POINT_LEN 48
#define STORE_CRC_LEN 4
#define STORE_TABLE_HEAD 16
/* Bytes read per pread while loading, and the buffer for writing tables. */
#define STORE_PIECE (64u << 10)
/* zlib level for windows: 1 is ~3x faster than 6 and only a little larger. */
#define STORE_ZLEVEL 1
/* "%016llx%08x.dfx" and a temporary name's suffix. */
#define STORE_NAME_MAX 64
/* An index file's name: 24 hex digits and ".dfx". */
#define STORE_NAME_LEN 28
/* A temporary file this old (seconds) belongs to a writer that died. */
#define STORE_TEMP_AGE (24 * 3600)
/* The size cap's listing is trusted this long (seconds); then, at the next
 * save, the directory is listed again (other processes save there too). */
#define STORE_RESCAN_SECS 60

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

/* The file's name in the directory (a hash of the whole key). */
static void store_name(const struct dfx_store_key *k, char name[STORE_NAME_MAX])
{
    unsigned char h[STORE_HEADER_LEN] = {0};
    uint64_t hash;
    uint32_t crc;

    key_fields(k, h);
    hash = fnv1a(0xcbf29ce484222325ull, h + H_KEY, H_KEY_END - H_KEY);
    hash = fnv1a(hash, (const unsigned char *)k->name, k->name_len);
    crc = (uint32_t)crc32(crc32(0, h + H_KEY, H_KEY_END - H_KEY),
                          (const unsigned char *)k->name, (uInt)k->name_len);
    snprintf(name, STORE_NAME_MAX, "%016llx%08x.dfx", (unsigned long long)hash, crc);
}

/* ----------------------------------------------------------- directory --- */

struct dfx_store_dir {
    int fd;              /* immutable: O_RDONLY|O_DIRECTORY, checked by check_dir_fd() */
    char *path;          /* owned, immutable: as given, for messages */
    atomic_uint_least64_t max; /* the size cap, 0: none (dfx_store_dir_set_max()) */
    /* Pruning: lock is held by a prune from start to end (one at a time),
     * and guards the size cap's bookkeeping. */
    pthread_mutex_t lock;
    bool counted;        /* protected by lock: a listing counted the bytes */
    uint64_t bytes;      /* protected by lock: bytes counted then, plus saves since */
    time_t counted_at;   /* protected by lock: when (CLOCK_MONOTONIC seconds) */
    atomic_uint_least64_t pruned_files, pruned_bytes; /* by saves, not yet taken */
};

static void prune_after_save(struct dfx_store_dir *d, const struct stat *saved);

/* Contract in dfx_store.h. */
int dfx_store_default_dir_from(const char *xdg, const char *home, const char *pw_home,
                               uid_t euid, char **out)
{
    struct stat st;
    int n;

    *out = NULL;
    if (xdg && xdg[0] == '/')
        n = asprintf(out, "%s/npyfs", xdg);
    else if (home && home[0])
        n = asprintf(out, "%s/.cache/npyfs", home);
    else if (pw_home && pw_home[0] == '/' && pw_home[strspn(pw_home, "/")] &&
             stat(pw_home, &st) == 0 && S_ISDIR(st.st_mode))
        n = asprintf(out, "%s/.cache/npyfs", pw_home);
    else if (euid == 0)
        n = asprintf(out, "/var/cache/npyfs");
    else
        return -ENOENT;
    if (n < 0) {
        *out = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* Contract in dfx_store.h. */
int dfx_store_default_dir(char **out)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    struct passwd pw, *found = NULL;
    long size = sysconf(_SC_GETPW_R_SIZE_MAX);
    char *buf = NULL;
    int ret;

    *out = NULL;
    if ((xdg && xdg[0] == '/') || (home && home[0]))
        return dfx_store_default_dir_from(xdg, home, NULL, geteuid(), out);
    /* getpwuid_r: thread-safe (an archive opened by a handler thread gets
     * its indexer, and so its directory, there) */
    for (size_t len = size > 0 ? (size_t)size : 1024;; len *= 2) {
        char *grown = realloc(buf, len);

        if (!grown) {
            free(buf);
            return -ENOMEM;
        }
        buf = grown;
        ret = getpwuid_r(geteuid(), &pw, buf, len, &found);
        if (ret != ERANGE || len >= (1u << 20))
            break;
    }
    ret = dfx_store_default_dir_from(NULL, NULL, found ? pw.pw_dir : NULL, geteuid(), out);
    free(buf);
    return ret;
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

/* Is the open directory fd one the user may keep indexes in: a directory
 * of the user's that nobody else can write to? */
static int check_dir_fd(int fd)
{
    struct stat st;

    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    if (st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH)))
        return -EPERM;
    return 0;
}

/* Open path as a directory, following a symlink as its last component only
 * if the link is the user's or root's (dfx_store.h). The directory itself is
 * checked by the caller, through the descriptor. */
static int open_dir(const char *path)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

    if (fd >= 0 || (errno != ELOOP && errno != ENOTDIR))
        return fd >= 0 ? fd : -errno;
    if (lstat(path, &st) < 0)
        return -errno;
    if (!S_ISLNK(st.st_mode))
        return -ENOTDIR;
    if (st.st_uid != geteuid() && st.st_uid != 0)
        return -EPERM;
    fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

/* Contract in dfx_store.h. */
int dfx_store_dir_open(const char *path, struct dfx_store_dir **out)
{
    struct dfx_store_dir *d;
    int ret = mkdir_parents(path), fd;

    *out = NULL;
    if (ret < 0)
        return ret;
    fd = open_dir(path);
    if (fd < 0)
        return fd;
    ret = check_dir_fd(fd);
    if (ret == 0 && faccessat(fd, ".", W_OK | X_OK, AT_EACCESS) < 0)
        ret = -errno;
    d = ret == 0 ? calloc(1, sizeof(*d)) : NULL;
    if (ret == 0 && (!d || !(d->path = strdup(path)))) {
        free(d);
        ret = -ENOMEM;
    }
    if (ret < 0) {
        close(fd);
        return ret;
    }
    d->fd = fd;
    pthread_mutex_init(&d->lock, NULL);
    *out = d;
    return 0;
}

/* Contract in dfx_store.h. */
void dfx_store_dir_close(struct dfx_store_dir *d)
{
    if (!d)
        return;
    close(d->fd);
    pthread_mutex_destroy(&d->lock);
    free(d->path);
    free(d);
}

/* Contract in dfx_store.h. */
void dfx_store_dir_set_max(struct dfx_store_dir *d, uint64_t max)
{
    atomic_store(&d->max, max);
}

/* Contract in dfx_store.h. */
void dfx_store_dir_take_pruned(struct dfx_store_dir *d, uint64_t *files, uint64_t *bytes)
{
    *files = atomic_exchange(&d->pruned_files, 0);
    *bytes = atomic_exchange(&d->pruned_bytes, 0);
}

/* Contract in dfx_store.h. */
const char *dfx_store_dir_path(const struct dfx_store_dir *d)
{
    return d->path;
}

/* Contract in dfx_store.h. */
int dfx_store_path(const struct dfx_store_dir *d, const struct dfx_store_key *k, char **out)
{
    char name[STORE_NAME_MAX];

    store_name(k, name);
    if (asprintf(out, "%s/%s", d->path, name) < 0) {
        *out = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* -------------------------------------------------------------- writer --- */

struct dfx_store_writer {
    struct dfx_store_dir *dir;      /* borrowed */
    const struct dfx_store_key *key; /* borrowed */
    uint64_t spacing;
    char name[STORE_NAME_MAX];      /* final name in dir */
    char tmp[STORE_NAME_MAX + 32];  /* temporary name in dir */
    int fd;
    size_t path_len; /* key->path's length, 0: none recorded */
    uint64_t start; /* offset of the first window: header, padded name and path */
    uint64_t off;   /* where the next byte goes */
    uLong crc;      /* CRC-32 of the bytes [start, off) */
    int err;        /* first write error: the file is not finished */
};

/* Append len bytes at w->off. */
static int append(struct dfx_store_writer *w, const void *buf, size_t len)
{
    const unsigned char *p = buf;

    if (w->err)
        return w->err;
    w->crc = crc32_z(w->crc, p, len);
    while (len) {
        ssize_t n = pwrite(w->fd, p, len, (off_t)w->off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            w->err = n < 0 ? -errno : -EIO;
            return w->err;
        }
        p += n;
        len -= (size_t)n;
        w->off += (uint64_t)n;
    }
    return 0;
}

/* Compress a window and append it: where it went in *woff and *zlen. The
 * point record also holds the raw window's CRC-32 (its caller's job). */
static int append_window(struct dfx_store_writer *w, const unsigned char *raw, uint32_t len,
                         uint64_t *woff, uint32_t *zlen)
{
    unsigned char *z;
    int ret = dfx_window_deflate(raw, len, &z, zlen);

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

static atomic_uint tmp_counter;

/* Contract in dfx_store.h. */
int dfx_store_begin(struct dfx_store_dir *d, const struct dfx_store_key *k, uint64_t spacing,
                    struct dfx_store_writer **out)
{
    struct dfx_store_writer *w = calloc(1, sizeof(*w));
    int ret;

    *out = NULL;
    if (!w)
        return -ENOMEM;
    w->dir = d;
    w->key = k;
    w->spacing = spacing;
    w->fd = -1;
    w->path_len = k->path ? strnlen(k->path, DFX_STORE_PATH_MAX + 1) : 0;
    if (w->path_len > DFX_STORE_PATH_MAX)
        w->path_len = 0;
    w->start = w->off = STORE_HEADER_LEN + pad8(k->name_len) + pad8(w->path_len);
    w->crc = crc32(0, Z_NULL, 0);
    store_name(k, w->name);
    ret = check_dir_fd(d->fd); /* its mode may have changed since it was opened */
    for (int tries = 0; ret == 0 && w->fd < 0 && tries < 16; tries++) {
        snprintf(w->tmp, sizeof(w->tmp), "%s.%d.%u.tmp", w->name, (int)getpid(),
                 atomic_fetch_add(&tmp_counter, 1));
        w->fd = openat(d->fd, w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                       0600);
        if (w->fd < 0 && errno != EEXIST)
            ret = -errno;
    }
    if (ret == 0 && w->fd < 0)
        ret = -EEXIST;
    if (ret < 0) {
        free(w);
        return ret;
    }
    *out = w;
    return 0;
}

/* Contract in dfx_store.h. */
void dfx_store_abort(struct dfx_store_writer *w)
{
    if (!w)
        return;
    close(w->fd);
    unlinkat(w->dir->fd, w->tmp, 0);
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

/* Header, name and path at offset 0, then the trailing checksum: the
 * CRC-32 of those combined with that of everything after them. */
static int write_head(struct dfx_store_writer *w, uint64_t total, size_t n, uint64_t points_off,
                      uint64_t table_off)
{
    const struct dfx_store_key *k = w->key;
    unsigned char h[STORE_HEADER_LEN] = {0}, pad[8] = {0}, tail[STORE_CRC_LEN];
    uint64_t file_len = w->off + STORE_CRC_LEN;
    uLong crc = 0;
    struct iovec iov[5] = {{h, sizeof(h)},
                           {(void *)k->name, k->name_len},
                           {pad, (size_t)(pad8(k->name_len) - k->name_len)},
                           {(void *)k->path, w->path_len},
                           {pad, (size_t)(pad8(w->path_len) - w->path_len)}};
    ssize_t want = (ssize_t)(w->start), got;

    memcpy(h, STORE_MAGIC, STORE_MAGIC_LEN);
    put_le32(h + H_VERSION, DFX_STORE_VERSION);
    put_le32(h + H_HEADER_LEN, STORE_HEADER_LEN);
    put_le64(h + H_FILE_LEN, file_len);
    put_le64(h + H_SPACING, w->spacing);
    put_le64(h + H_TOTAL, total);
    put_le64(h + H_NPTS, n);
    put_le64(h + H_WINDOWS_OFF, w->start);
    put_le64(h + H_POINTS_OFF, points_off);
    put_le64(h + H_TABLE_OFF, table_off);
    key_fields(k, h);
    put_le64(h + H_PATH_LEN, w->path_len);
    for (int i = 0; i < 5; i++)
        if (iov[i].iov_len) /* crc32_z() of a NULL buffer would restart the CRC */
            crc = crc32_z(crc, iov[i].iov_base, iov[i].iov_len);
    crc = crc32_combine(crc, w->crc, (z_off_t)(w->off - w->start));
    got = pwritev(w->fd, iov, 5, 0);
    if (got != want)
        return got < 0 ? -errno : -EIO;
    put_le32(tail, (uint32_t)crc);
    return append(w, tail, sizeof(tail));
}

/* Contract in dfx_store.h. */
int dfx_store_finish(struct dfx_store_writer *w, struct dfx_index *ix,
                     const struct dfx_crcs *crcs)
{
    struct dfx_xpoint *pts = NULL;
    uint64_t total = 0, points_off, table_off;
    size_t n = 0, kept = 0;
    struct stat st;
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
    if (ret == 0 && fsync(w->fd) < 0)
        ret = -errno;
    if (ret == 0 && fstat(w->fd, &st) < 0)
        ret = -errno;
    free(pts);
    if (close(w->fd) < 0 && ret == 0)
        ret = -errno;
    w->fd = -1;
    if (ret == 0 && renameat(w->dir->fd, w->tmp, w->dir->fd, w->name) < 0)
        ret = -errno;
    if (ret == 0 && fsync(w->dir->fd) < 0) /* make the rename itself durable */
        ret = -errno;
    if (ret < 0)
        unlinkat(w->dir->fd, w->tmp, 0);
    else
        prune_after_save(w->dir, &st);
    free(w);
    return ret;
}

/* Contract in dfx_store.h. */
int dfx_store_save(struct dfx_store_dir *d, const struct dfx_store_key *k, struct dfx_index *ix,
                   const struct dfx_crcs *crcs)
{
    struct dfx_store_writer *w;
    int ret = ix ? dfx_index_error(ix) : 0;

    /* Refuse early what finish would refuse, before creating a file. */
    if (ret == 0 && ix && dfx_index_total(ix) == UINT64_MAX)
        ret = -EAGAIN;
    if (ret < 0)
        return ret;
    ret = dfx_store_begin(d, k, ix ? dfx_index_spacing(ix) : 0, &w);
    return ret < 0 ? ret : dfx_store_finish(w, ix, crcs);
}

/* ------------------------------------------------------- open registry --- */

/* The index files this process holds open (loaded into an index), by
 * device and inode: pruning never removes one. */
struct open_file {
    dev_t dev;
    ino_t ino;
    unsigned refs;
};
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static struct open_file *open_files; /* protected by open_lock; freed when empty */
static size_t open_count, open_cap;  /* protected by open_lock */

static struct open_file *open_find(dev_t dev, ino_t ino)
{
    for (size_t i = 0; i < open_count; i++)
        if (open_files[i].dev == dev && open_files[i].ino == ino)
            return &open_files[i];
    return NULL;
}

/* Count one more holder of the file. 0 or -ENOMEM. */
static int open_note(dev_t dev, ino_t ino)
{
    struct open_file *o;
    int ret = 0;

    pthread_mutex_lock(&open_lock);
    o = open_find(dev, ino);
    if (o) {
        o->refs++;
    } else if (open_count == open_cap &&
               !(o = realloc(open_files, (open_cap ? open_cap * 2 : 16) * sizeof(*o)))) {
        ret = -ENOMEM;
    } else {
        if (open_count == open_cap) {
            open_files = o;
            open_cap = open_cap ? open_cap * 2 : 16;
        }
        open_files[open_count++] = (struct open_file){dev, ino, 1};
    }
    pthread_mutex_unlock(&open_lock);
    return ret;
}

static void open_forget(dev_t dev, ino_t ino)
{
    struct open_file *o;

    pthread_mutex_lock(&open_lock);
    o = open_find(dev, ino);
    if (o && --o->refs == 0)
        *o = open_files[--open_count];
    if (open_count == 0) {
        free(open_files);
        open_files = NULL;
        open_cap = 0;
    }
    pthread_mutex_unlock(&open_lock);
}

static bool open_here(dev_t dev, ino_t ino)
{
    bool found;

    pthread_mutex_lock(&open_lock);
    found = open_find(dev, ino) != NULL;
    pthread_mutex_unlock(&open_lock);
    return found;
}

/* --------------------------------------------------------------- load --- */

/* The fetch source of a loaded index: its file, kept open (and noted in
 * the open registry). */
struct loaded {
    int fd;
    dev_t dev;
    ino_t ino;
};

static int loaded_read(void *ctx, unsigned char *buf, uint32_t len, uint64_t off)
{
    struct loaded *l = ctx;

    for (uint32_t done = 0; done < len;) {
        ssize_t n = pread(l->fd, buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -EIO; /* an error, or the file shrank since it was loaded */
        done += (uint32_t)n;
    }
    return 0;
}

static void loaded_release(void *ctx)
{
    struct loaded *l = ctx;

    open_forget(l->dev, l->ino);
    close(l->fd);
    free(l);
}

/* What the loader keeps of a file: its header, and the parts it copies out
 * while checksumming the whole file. */
struct file {
    int fd;
    uint64_t len;
    dev_t dev;
    ino_t ino;
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
static int read_at(int fd, void *buf, size_t len, uint64_t off)
{
    unsigned char *p = buf;

    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EBADMSG;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* Open the file for key (never following a link) and check it is one of
 * ours: a regular file of the user's, at least a header and a checksum
 * long. */
static int file_open(struct dfx_store_dir *d, const struct dfx_store_key *k, struct file *f)
{
    char name[STORE_NAME_MAX];
    struct stat st;
    int ret = check_dir_fd(d->fd);

    if (ret < 0)
        return ret;
    store_name(k, name);
    /* O_NONBLOCK: a FIFO planted in the directory opens at once (and is
     * refused below) instead of blocking the opener for good. */
    f->fd = openat(d->fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (f->fd < 0)
        return errno == ELOOP ? -EBADMSG : -errno; /* a planted symlink: never followed */
    if (fstat(f->fd, &st) < 0)
        ret = -errno;
    else if (!S_ISREG(st.st_mode) || st.st_uid != geteuid())
        ret = -EBADMSG;
    else if (st.st_size < STORE_HEADER_LEN + STORE_CRC_LEN)
        ret = -EBADMSG;
    f->len = (uint64_t)st.st_size;
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    if (ret < 0) {
        close(f->fd);
        f->fd = -1;
    }
    return ret;
}

/* Magic, version, lengths and key, and where the parts are; want_points:
 * a deflate member's file (a stored member's has none). */
static int check_header(struct file *f, const struct dfx_store_key *k, bool want_points)
{
    const unsigned char *h = f->h;
    unsigned char want[STORE_HEADER_LEN] = {0};
    uint64_t end = f->len - STORE_CRC_LEN;
    int ret = read_at(f->fd, f->h, STORE_HEADER_LEN, 0);

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

        ret = read_at(f->fd, piece, n, at);
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
        ret = read_at(f->fd, tail, sizeof(tail), end);
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

static int load_file(struct file *f0, const struct dfx_store_key *k, struct dfx_index *ix,
                     uint32_t chunk, const struct dfx_crcs *have, struct dfx_crcs **crcs,
                     uint64_t *spacing);

/* Contract in dfx_store.h. */
int dfx_store_load(struct dfx_store_dir *d, const struct dfx_store_key *k, struct dfx_index *ix,
                   uint32_t chunk, const struct dfx_crcs *have, struct dfx_crcs **crcs,
                   uint64_t *spacing)
{
    struct file f = {.fd = -1};
    int ret;

    if (crcs)
        *crcs = NULL;
    ret = file_open(d, k, &f);
    return ret < 0 ? ret : load_file(&f, k, ix, chunk, have, crcs, spacing);
}

/* Contract in dfx_store.h. */
int dfx_store_load_fd(int fd, const struct dfx_store_key *k, struct dfx_index *ix,
                      uint32_t chunk, const struct dfx_crcs *have, struct dfx_crcs **crcs)
{
    struct file f = {.fd = fd};
    struct stat st;

    if (crcs)
        *crcs = NULL;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
        st.st_size < STORE_HEADER_LEN + STORE_CRC_LEN) {
        close(fd);
        return -EBADMSG;
    }
    f.len = (uint64_t)st.st_size;
    f.dev = st.st_dev;
    f.ino = st.st_ino;
    return load_file(&f, k, ix, chunk, have, crcs, NULL);
}

/* Contract in dfx_store.h. */
int dfx_store_peek(const void *buf, size_t len, uint64_t *file_len, const char **name,
                   size_t *name_len)
{
    const unsigned char *h = buf;
    uint64_t n, flen;

    if (len < STORE_HEADER_LEN + STORE_CRC_LEN || memcmp(h, STORE_MAGIC, STORE_MAGIC_LEN) != 0 ||
        get_le32(h + H_HEADER_LEN) != STORE_HEADER_LEN)
        return -EBADMSG;
    flen = get_le64(h + H_FILE_LEN);
    n = get_le64(h + H_NAME_LEN);
    if (flen < STORE_HEADER_LEN + STORE_CRC_LEN || flen > len || n > flen - STORE_HEADER_LEN)
        return -EBADMSG;
    *file_len = flen;
    *name = (const char *)h + STORE_HEADER_LEN;
    *name_len = (size_t)n;
    return 0;
}

/* The rest of a load once f is open (f->fd, f->len, f->dev, f->ino): closes
 * f->fd unless the index took it. */
static int load_file(struct file *f0, const struct dfx_store_key *k, struct dfx_index *ix,
                     uint32_t chunk, const struct dfx_crcs *have, struct dfx_crcs **crcs,
                     uint64_t *spacing)
{
    struct file f = *f0;
    struct dfx_xpoint *pts = NULL;
    struct dfx_crcs *t = NULL;
    struct loaded *l = NULL;
    bool gzip = ix && dfx_index_stream(ix)->framing == DFX_GZIP;
    int ret;

    ret = check_header(&f, k, ix != NULL);
    if (ret == 0)
        ret = stream_file(&f, k);
    if (ret == 0)
        ret = parse_table(&f, chunk, &t);
    if (ret == 0 && !ix && (!t || get_le64(f.h + H_TOTAL) != k->stored_size))
        ret = -EBADMSG; /* a stored member's file is its table */
    if (ret == 0 && gzip && !t)
        ret = -ESTALE; /* not written by this version: dfx_store_finish() */
    if (ret == 0 && have &&
        (!t || t->size != have->size || t->chunk != have->chunk ||
         memcmp(t->crc, have->crc, (size_t)have->count * sizeof(have->crc[0])) != 0))
        ret = -ESTALE; /* built from other content than the caller reads */
    if (ret == 0 && ix)
        ret = parse_points(&f, &pts);
    if (ret == 0 && ix && !(l = malloc(sizeof(*l))))
        ret = -ENOMEM;
    if (ret == 0 && ix)
        ret = open_note(f.dev, f.ino);
    if (ret == 0 && ix) {
        struct dfx_fetch fetch = {loaded_read, loaded_release, l};

        *l = (struct loaded){f.fd, f.dev, f.ino};
        ret = dfx_index_import(ix, pts, (size_t)f.npts, get_le64(f.h + H_TOTAL), &fetch);
        if (ret < 0)
            open_forget(f.dev, f.ino);
        if (ret == -EINVAL)
            ret = -EBADMSG; /* points out of order or outside the stream */
    }
    if (ret == 0) {
        futimens(f.fd, NULL); /* used now: pruning removes the least recently used */
        if (spacing)
            *spacing = get_le64(f.h + H_SPACING);
        if (ix)
            f.fd = -1; /* the index owns it now */
    } else {
        free(l);
    }
    free(pts);
    if (f.fd >= 0)
        close(f.fd);
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

/* -------------------------------------------------------------- prune --- */

enum entry_kind { E_INDEX, E_TEMP };

/* A file of ours found by a listing. */
struct entry {
    char name[STORE_NAME_MAX + 32];
    enum entry_kind kind;
    dev_t dev;
    ino_t ino;
    uint64_t bytes;
    int64_t idle;        /* seconds since its mtime */
    int64_t mtime_ns;    /* the order of the size cap's removals */
    bool done;           /* removed, or left out of the rest of the prune */
    /* read from the file with o->sources (read_entry()) */
    uint32_t version;
    char *path;          /* owned: the archive path it recorded, or NULL */
    char *member;        /* owned: the member's name, or NULL */
    size_t member_len;
    uint64_t key_dev, key_ino, key_size; /* the archive the key names */
    int64_t key_mtime_sec;
    uint32_t key_mtime_nsec;
};

static bool all_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* An index file's name (store_name()), a temporary one's (dfx_store_begin():
 * "<name>.<pid>.<n>.tmp"), or neither (-1). */
static int name_kind(const char *name)
{
    const char *p = name + STORE_NAME_LEN;
    size_t n;

    if (strnlen(name, STORE_NAME_LEN) < STORE_NAME_LEN || !all_hex(name, 24) ||
        memcmp(name + 24, ".dfx", 4) != 0)
        return -1;
    if (*p == '\0')
        return E_INDEX;
    for (int field = 0; field < 2; field++) {
        if (*p++ != '.' || (n = strspn(p, "0123456789")) == 0)
            return -1;
        p += n;
    }
    return strcmp(p, ".tmp") == 0 ? E_TEMP : -1;
}

static void entries_free(struct entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(e[i].path);
        free(e[i].member);
    }
    free(e);
}

/* Our files in d: names of ours, regular files of the user's (fstatat,
 * never following a link). 0, or a negative errno. */
static int list_dir(struct dfx_store_dir *d, struct entry **out, size_t *count)
{
    struct entry *e = NULL;
    size_t n = 0, cap = 0;
    time_t now = time(NULL);
    struct dirent *de;
    DIR *dir;
    int fd = openat(d->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;

    *out = NULL;
    *count = 0;
    if (fd < 0)
        return -errno;
    dir = fdopendir(fd); /* its own stream: not d->fd's offset */
    if (!dir) {
        ret = -errno;
        close(fd);
        return ret;
    }
    while ((errno = 0, de = readdir(dir)) != NULL) {
        int kind = name_kind(de->d_name);
        struct stat st;

        if (kind < 0 || strlen(de->d_name) >= sizeof(e->name) ||
            fstatat(d->fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
            st.st_uid != geteuid())
            continue;
        if (n == cap) {
            struct entry *grown = realloc(e, (cap = cap ? cap * 2 : 64) * sizeof(*e));
            if (!grown) {
                ret = -ENOMEM;
                break;
            }
            e = grown;
        }
        memset(&e[n], 0, sizeof(e[n]));
        strcpy(e[n].name, de->d_name);
        e[n].kind = (enum entry_kind)kind;
        e[n].dev = st.st_dev;
        e[n].ino = st.st_ino;
        e[n].bytes = (uint64_t)st.st_size;
        e[n].idle = (int64_t)(now - st.st_mtim.tv_sec);
        e[n].mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        n++;
    }
    if (ret == 0 && errno)
        ret = -errno;
    closedir(dir);
    if (ret < 0) {
        entries_free(e, n);
        return ret;
    }
    *out = e;
    *count = n;
    return 0;
}

/* Open e for a look inside: the fd if the name still leads to the regular
 * file of the user's that was listed (never through a link), else -1. */
static int open_entry(struct dfx_store_dir *d, const struct entry *e)
{
    struct stat st;
    int fd = openat(d->fd, e->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);

    if (fd < 0)
        return -1;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
        st.st_dev != e->dev || st.st_ino != e->ino) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool has_magic(int fd)
{
    unsigned char m[STORE_MAGIC_LEN];

    return pread(fd, m, sizeof(m), 0) == (ssize_t)sizeof(m) &&
           memcmp(m, STORE_MAGIC, STORE_MAGIC_LEN) == 0;
}

/* Remove e if it is still the file of ours that was listed, not open in
 * this process and not keep. 0, -EBUSY (kept), -ESTALE (it is no longer
 * what was listed, or not ours: left alone), or unlinkat's error. */
static int remove_entry(struct dfx_store_dir *d, const struct entry *e, const struct stat *keep)
{
    struct stat st;
    bool ours;
    int fd;

    if ((keep && e->dev == keep->st_dev && e->ino == keep->st_ino) || open_here(e->dev, e->ino))
        return -EBUSY;
    fd = open_entry(d, e);
    if (fd < 0)
        return -ESTALE;
    ours = e->kind == E_TEMP || has_magic(fd); /* a temporary file's header comes last */
    close(fd);
    if (!ours)
        return -ESTALE;
    /* still the same file under that name (a new one renamed over it since
     * the open is the one race left: see dfx_store.h) */
    if (fstatat(d->fd, e->name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_dev != e->dev ||
        st.st_ino != e->ino)
        return -ESTALE;
    return unlinkat(d->fd, e->name, 0) < 0 ? -errno : 0;
}

/* Read what the file of e says about itself into e (version, member name,
 * path, the key's archive). Returns 0, -ENOENT not ours (no magic: never
 * touched), -EBADMSG a header of this version that does not hold together,
 * or -ENOMEM. Only the header, name and path are read (not checksummed: a
 * file damaged further on is found by the load that needs it). */
static int read_entry(struct dfx_store_dir *d, struct entry *e)
{
    unsigned char h[STORE_HEADER_LEN];
    uint64_t name_len, path_len, windows_off;
    int fd = open_entry(d, e), ret = 0;

    if (fd < 0)
        return -ENOENT;
    if (!has_magic(fd) || read_at(fd, h, STORE_MAGIC_LEN + 4, 0) < 0) {
        close(fd);
        return -ENOENT;
    }
    e->version = get_le32(h + H_VERSION);
    if (e->version != DFX_STORE_VERSION)
        goto out; /* the caller decides */
    if (e->bytes < STORE_HEADER_LEN + STORE_CRC_LEN || read_at(fd, h, sizeof(h), 0) < 0) {
        ret = -EBADMSG;
        goto out;
    }
    name_len = get_le64(h + H_NAME_LEN);
    path_len = get_le64(h + H_PATH_LEN);
    windows_off = get_le64(h + H_WINDOWS_OFF);
    if (get_le32(h + H_HEADER_LEN) != STORE_HEADER_LEN || get_le64(h + H_FILE_LEN) != e->bytes ||
        name_len > (1u << 16) || path_len > DFX_STORE_PATH_MAX ||
        windows_off != STORE_HEADER_LEN + pad8(name_len) + pad8(path_len) ||
        windows_off > e->bytes - STORE_CRC_LEN) {
        ret = -EBADMSG;
        goto out;
    }
    e->member = malloc(name_len + 1);
    e->path = path_len ? malloc(path_len + 1) : NULL;
    if (!e->member || (path_len && !e->path))
        ret = -ENOMEM;
    else if (read_at(fd, e->member, name_len, STORE_HEADER_LEN) < 0 ||
             (path_len && read_at(fd, e->path, path_len, STORE_HEADER_LEN + pad8(name_len)) < 0))
        ret = -EBADMSG;
    if (ret < 0) {
        free(e->member);
        free(e->path);
        e->member = e->path = NULL;
        goto out;
    }
    e->member[name_len] = '\0';
    e->member_len = name_len;
    if (e->path) {
        e->path[path_len] = '\0';
        if (strlen(e->path) != path_len) { /* a NUL inside: no path to check */
            free(e->path);
            e->path = NULL;
        }
    }
    /* the key's identity of the archive, for the check against its path */
    e->key_dev = get_le64(h + H_DEV);
    e->key_ino = get_le64(h + H_INO);
    e->key_size = get_le64(h + H_SIZE);
    e->key_mtime_sec = (int64_t)get_le64(h + H_MTIME_SEC);
    e->key_mtime_nsec = get_le32(h + H_MTIME_NSEC);
out:
    close(fd);
    return ret;
}

/* With o->sources: why e should go (a dfx_prune_why), or -1 to keep it;
 * -ENOMEM. Reads the file's header (read_entry()); a file that is not ours
 * gets done set and is left alone. */
static int source_verdict(struct dfx_store_dir *d, struct entry *e,
                          const struct dfx_prune_opts *o)
{
    struct stat st;
    int ret;

    if (e->kind == E_TEMP)
        return -1;
    ret = read_entry(d, e);
    if (ret == -ENOENT) {
        e->done = true; /* not ours */
        return -1;
    }
    if (ret == -ENOMEM)
        return ret;
    if (ret == -EBADMSG)
        return DFX_PRUNE_DAMAGED;
    if (e->version < DFX_STORE_VERSION)
        return DFX_PRUNE_FORMAT;
    if (e->version > DFX_STORE_VERSION)
        return -1; /* a newer npyfs's: not ours to judge */
    if (e->path && stat(e->path, &st) == 0)
        return (uint64_t)st.st_dev != e->key_dev || (uint64_t)st.st_ino != e->key_ino ||
                       (uint64_t)st.st_size != e->key_size ||
                       (int64_t)st.st_mtim.tv_sec != e->key_mtime_sec ||
                       (uint32_t)st.st_mtim.tv_nsec != e->key_mtime_nsec
                   ? DFX_PRUNE_CHANGED
                   : -1;
    if (e->path && (errno == ENOENT || errno == ENOTDIR))
        return DFX_PRUNE_GONE;
    /* no path, or one that cannot be looked at (permissions, I/O) */
    return e->idle >= o->unused_secs ? DFX_PRUNE_UNUSED : -1;
}

/* Remove e for why; report it and count it. */
static void prune_one(struct dfx_store_dir *d, struct entry *e, enum dfx_prune_why why,
                      const struct stat *keep,
                      void (*report)(const struct dfx_prune_file *f, void *arg), void *arg,
                      struct dfx_prune_result *res)
{
    int ret = remove_entry(d, e, keep);

    if (ret == -EBUSY)
        return; /* kept: open here, or just written */
    e->done = true;
    if (ret == -ESTALE)
        return; /* no longer what was listed: not counted either way */
    if (ret < 0) {
        res->failed++;
        if (!res->err)
            res->err = ret;
        return;
    }
    res->removed++;
    res->removed_bytes += e->bytes;
    if (report) {
        struct dfx_prune_file f = {.name = e->name, .why = why, .bytes = e->bytes,
                                   .idle_secs = e->idle, .version = e->version,
                                   .path = e->path, .member = e->member,
                                   .member_len = e->member_len};
        report(&f, arg);
    }
}

static int by_mtime(const void *a, const void *b)
{
    const struct entry *x = *(struct entry *const *)a, *y = *(struct entry *const *)b;

    return x->mtime_ns < y->mtime_ns ? -1 : x->mtime_ns > y->mtime_ns;
}

/* The size cap: remove the least recently used index files left until the
 * rest take at most 90% of max. 0 or -ENOMEM. */
static int prune_to_size(struct dfx_store_dir *d, struct entry *e, size_t n, uint64_t max,
                         const struct stat *keep,
                         void (*report)(const struct dfx_prune_file *f, void *arg), void *arg,
                         struct dfx_prune_result *res)
{
    struct entry **order = malloc((n ? n : 1) * sizeof(*order));
    uint64_t total = 0, target = max - max / 10;
    size_t m = 0;

    if (!order)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (!e[i].done && e[i].kind == E_INDEX) {
            order[m++] = &e[i];
            total += e[i].bytes;
        }
    if (total > max) {
        qsort(order, m, sizeof(*order), by_mtime);
        for (size_t i = 0; i < m && total > target; i++) {
            prune_one(d, order[i], DFX_PRUNE_SIZE, keep, report, arg, res);
            if (order[i]->done)
                total -= order[i]->bytes;
        }
    }
    free(order);
    return 0;
}

/* dfx_store_prune() with d->lock held; keep: the file a save has just
 * written, or NULL. Updates the size cap's count of the directory. */
static int prune_locked(struct dfx_store_dir *d, const struct dfx_prune_opts *o,
                        const struct stat *keep,
                        void (*report)(const struct dfx_prune_file *f, void *arg), void *arg,
                        struct dfx_prune_result *res)
{
    struct entry *e;
    size_t n;
    int ret = list_dir(d, &e, &n);

    memset(res, 0, sizeof(*res));
    if (ret < 0)
        return ret;
    for (size_t i = 0; i < n && ret == 0; i++) {
        int why = e[i].kind == E_TEMP && e[i].idle >= STORE_TEMP_AGE ? DFX_PRUNE_TEMP
                  : o->sources ? source_verdict(d, &e[i], o)
                               : -1;
        if (why == -ENOMEM)
            ret = why;
        else if (why >= 0)
            prune_one(d, &e[i], (enum dfx_prune_why)why, keep, report, arg, res);
        else if (e[i].kind == E_TEMP)
            e[i].done = true; /* a writer at work: neither counted nor removed */
    }
    if (ret == 0 && o->max)
        ret = prune_to_size(d, e, n, o->max, keep, report, arg, res);
    for (size_t i = 0; i < n; i++)
        if (!e[i].done && e[i].kind == E_INDEX) {
            res->kept++;
            res->kept_bytes += e[i].bytes;
        }
    if (ret == 0) {
        struct timespec now;

        clock_gettime(CLOCK_MONOTONIC, &now);
        d->counted = true;
        d->bytes = res->kept_bytes;
        d->counted_at = now.tv_sec;
    }
    entries_free(e, n);
    return ret;
}

/* Contract in dfx_store.h. */
int dfx_store_prune(struct dfx_store_dir *d, const struct dfx_prune_opts *o,
                    void (*report)(const struct dfx_prune_file *f, void *arg), void *arg,
                    struct dfx_prune_result *res)
{
    int ret;

    pthread_mutex_lock(&d->lock);
    ret = prune_locked(d, o, NULL, report, arg, res);
    pthread_mutex_unlock(&d->lock);
    return ret;
}

/* After a save of the file saved (its stat): keep to the size cap, listing
 * the directory only when the count says it may be over (dfx_store.h).
 * Best effort: a failure leaves the files as they are. */
static void prune_after_save(struct dfx_store_dir *d, const struct stat *saved)
{
    struct dfx_prune_opts o = {.max = atomic_load(&d->max)};
    struct dfx_prune_result res = {0};
    struct timespec now;

    if (o.max == 0)
        return;
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&d->lock);
    d->bytes += (uint64_t)saved->st_size;
    if (!d->counted || d->bytes > o.max || now.tv_sec - d->counted_at >= STORE_RESCAN_SECS)
        prune_locked(d, &o, saved, NULL, NULL, &res);
    pthread_mutex_unlock(&d->lock);
    if (res.removed) {
        atomic_fetch_add(&d->pruned_files, res.removed);
        atomic_fetch_add(&d->pruned_bytes, res.removed_bytes);
    }
}
