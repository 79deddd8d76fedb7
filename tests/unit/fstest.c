/* Helpers for the fs/ unit tests. Contract in fstest.h. */
#define _GNU_SOURCE
#include "fstest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_log.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p)
        die("malloc");
    return p;
}

/* ---- data ---------------------------------------------------------- */

/* The fills write tens of MiB: not instrumented by TSan (a byte loop, not
 * memcpy, which it intercepts), or generating the data would take longer
 * than the tests. Nothing else touches the buffer meanwhile. */
#define NOT_TSAN __attribute__((no_sanitize("thread")))

NOT_TSAN void ft_fill_compressible(unsigned char *p, size_t len, uint64_t seed)
{
#define W(s) {s, sizeof(s) - 1}
    static const struct {
        const char *s;
        size_t n;
    } words[16] = {
        W("alpha "), W("beta "),  W("gamma "),   W("delta "), W("0.125 "), W("3.14159 "),
        W("-1 "),    W("\n"),     W("npyfs "),   W("chunk "), W("42 "),    W("deflate "),
        W("x "),     W("1e-9 "),  W("zran, "),   W("7 "),
    };
#undef W
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    size_t i = 0;

    while (i < len) {
        uint64_t r = ft_rand(&s);

        /* four words per random number */
        for (int k = 0; k < 4 && i < len; k++, r >>= 4) {
            size_t n = words[r & 15].n;

            if (n > len - i)
                n = len - i;
            for (size_t j = 0; j < n; j++)
                p[i + j] = (unsigned char)words[r & 15].s[j];
            i += n;
        }
    }
}

NOT_TSAN void ft_fill_random(unsigned char *p, size_t len, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 7;
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t r = ft_rand(&s);
        memcpy(p + i, &r, 8);
    }
    for (; i < len; i++)
        p[i] = (unsigned char)ft_rand(&s);
}

unsigned char *ft_data(size_t len, bool compressible, uint64_t seed)
{
    unsigned char *p = xmalloc(len);

    if (compressible)
        ft_fill_compressible(p, len, seed);
    else
        ft_fill_random(p, len, seed);
    return p;
}

unsigned char *ft_npy(size_t n, bool compressible, uint64_t seed, size_t *len)
{
    char dict[128];
    int dl = snprintf(dict, sizeof(dict),
                      "{'descr': '|u1', 'fortran_order': False, 'shape': (%zu,), }", n);
    size_t hl = (size_t)dl + 1; /* + '\n' */
    unsigned char *p;

    while ((10 + hl) % 64)
        hl++;
    *len = 10 + hl + n;
    p = xmalloc(*len);
    memcpy(p, "\x93NUMPY\x01\x00", 8);
    p[8] = (unsigned char)hl;
    p[9] = (unsigned char)(hl >> 8);
    memset(p + 10, ' ', hl);
    memcpy(p + 10, dict, (size_t)dl);
    p[10 + hl - 1] = '\n';
    if (compressible)
        ft_fill_compressible(p + 10 + hl, n, seed);
    else
        ft_fill_random(p + 10 + hl, n, seed);
    return p;
}

/* ---- archives ------------------------------------------------------ */

struct buf {
    unsigned char *p;
    size_t len, cap;
};

static void reserve(struct buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return;
    while (b->cap < b->len + more)
        b->cap = b->cap ? b->cap * 2 : 4096;
    b->p = realloc(b->p, b->cap);
    if (!b->p)
        die("realloc");
}

static void put(struct buf *b, const void *d, size_t n)
{
    reserve(b, n);
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

/* Run deflate over its pending input with flush mode `flush`, appending to b. */
static void deflate_run(z_stream *zs, struct buf *b, int flush)
{
    int ret;

    do {
        reserve(b, 1 << 16);
        zs->next_out = b->p + b->len;
        zs->avail_out = (uInt)(b->cap - b->len);
        ret = deflate(zs, flush);
        if (ret != Z_OK && ret != Z_STREAM_END && ret != Z_BUF_ERROR)
            die("deflate");
        b->len = b->cap - zs->avail_out;
    } while (zs->avail_in > 0 || zs->avail_out == 0);
}

/* Compress m's data (raw deflate, or a gzip member if gzip) onto b,
 * recording full-flush points relative to where it starts on b. */
static void compress_onto(struct buf *b, const unsigned char *data, size_t len, int level,
                          size_t flush_every, bool gzip, struct ft_member *m)
{
    z_stream zs;
    size_t start = b->len, done = 0, cap = 0;

    memset(&zs, 0, sizeof(zs));
    if (level == FT_STORED_BLOCKS)
        level = Z_NO_COMPRESSION;
    else if (level == 0)
        level = Z_DEFAULT_COMPRESSION;
    if (deflateInit2(&zs, level, Z_DEFLATED, gzip ? 31 : -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        die("deflateInit2");
    while (flush_every && len - done > flush_every) {
        zs.next_in = (unsigned char *)data + done;
        zs.avail_in = (uInt)flush_every;
        deflate_run(&zs, b, Z_FULL_FLUSH);
        done += flush_every;
        if (m) {
            if (m->nflush == cap) {
                cap = cap ? 2 * cap : 16;
                m->flush = realloc(m->flush, cap * sizeof(*m->flush));
                if (!m->flush)
                    die("realloc");
            }
            m->flush[m->nflush].out = done;
            m->flush[m->nflush].in = b->len - start;
            m->nflush++;
        }
    }
    zs.next_in = (unsigned char *)data + done;
    zs.avail_in = (uInt)(len - done);
    deflate_run(&zs, b, Z_FINISH);
    deflateEnd(&zs);
}

int ft_write_zip(const char *path, struct ft_member *m, size_t n)
{
    struct buf b = {0};
    uint64_t cd, cd_size;
    int ret;

    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(m[i].name), crc_at;

        m[i].crc = (uint32_t)crc32(crc32(0, NULL, 0), m[i].data, (uInt)m[i].len);
        put32(&b, 0x04034b50);
        put16(&b, 20);
        put16(&b, 0);
        put16(&b, (uint32_t)m[i].method);
        put16(&b, 0);      /* time */
        put16(&b, 0x21);   /* date: 1980-01-01 */
        put32(&b, m[i].crc);
        crc_at = b.len;
        put32(&b, 0);      /* csize, patched */
        put32(&b, (uint32_t)m[i].len);
        put16(&b, (uint32_t)nl);
        put16(&b, 0);
        put(&b, m[i].name, nl);
        m[i].data_offset = b.len;
        if (m[i].method == 8)
            compress_onto(&b, m[i].data, m[i].len, m[i].level, m[i].flush_every, false, &m[i]);
        else
            put(&b, m[i].data, m[i].len);
        m[i].csize = b.len - m[i].data_offset;
        b.p[crc_at] = (unsigned char)m[i].csize;
        b.p[crc_at + 1] = (unsigned char)(m[i].csize >> 8);
        b.p[crc_at + 2] = (unsigned char)(m[i].csize >> 16);
        b.p[crc_at + 3] = (unsigned char)(m[i].csize >> 24);
    }
    cd = b.len;
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(m[i].name);
        uint64_t lho = m[i].data_offset - 30 - nl;

        put32(&b, 0x02014b50);
        put16(&b, 0x031e); /* made by: unix, 3.0 */
        put16(&b, 20);
        put16(&b, 0);
        put16(&b, (uint32_t)m[i].method);
        put16(&b, 0);
        put16(&b, 0x21);
        put32(&b, m[i].crc);
        put32(&b, (uint32_t)m[i].csize);
        put32(&b, (uint32_t)m[i].len);
        put16(&b, (uint32_t)nl);
        put16(&b, 0); /* extra */
        put16(&b, 0); /* comment */
        put16(&b, 0); /* disk */
        put16(&b, 0); /* internal attributes */
        put32(&b, 0100644u << 16);
        put32(&b, (uint32_t)lho);
        put(&b, m[i].name, nl);
    }
    cd_size = b.len - cd;
    put32(&b, 0x06054b50);
    put16(&b, 0);
    put16(&b, 0);
    put16(&b, (uint32_t)n);
    put16(&b, (uint32_t)n);
    put32(&b, (uint32_t)cd_size);
    put32(&b, (uint32_t)cd);
    put16(&b, 0);
    ret = ft_write_file(path, b.p, b.len);
    free(b.p);
    return ret;
}

void ft_members_free(struct ft_member *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(m[i].flush);
        m[i].flush = NULL;
        m[i].nflush = 0;
    }
}

int ft_write_gzip(const char *path, const unsigned char *const *parts, const size_t *lens,
                  size_t nparts)
{
    struct buf b = {0};
    int ret;

    for (size_t i = 0; i < nparts; i++)
        compress_onto(&b, parts[i], lens[i], 6, 0, true, NULL);
    ret = ft_write_file(path, b.p, b.len);
    free(b.p);
    return ret;
}

int ft_write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const unsigned char *p = data;

    if (fd < 0)
        return -1;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return close(fd);
}

unsigned char *ft_read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    unsigned char *p;
    size_t got = 0;

    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return NULL;
    }
    p = xmalloc((size_t)st.st_size);
    while (got < (size_t)st.st_size) {
        ssize_t n = pread(fd, p + got, (size_t)st.st_size - got, (off_t)got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    *len = got;
    return p;
}

/* ---- temporary directories ----------------------------------------- */

char *ft_tempdir(const char *tag)
{
    char *p;

    if (asprintf(&p, "/tmp/%s.XXXXXX", tag) < 0)
        die("asprintf");
    if (!mkdtemp(p))
        die("mkdtemp");
    return p;
}

char *ft_path(const char *dir, const char *name)
{
    char *p;

    if (asprintf(&p, "%s/%s", dir, name) < 0)
        die("asprintf");
    return p;
}

void ft_rmtree(const char *path)
{
    struct stat st;
    DIR *d;
    struct dirent *de;

    if (lstat(path, &st) < 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        unlink(path);
        return;
    }
    chmod(path, 0700);
    d = opendir(path);
    if (d) {
        while ((de = readdir(d))) {
            char *sub;

            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            sub = ft_path(path, de->d_name);
            ft_rmtree(sub);
            free(sub);
        }
        closedir(d);
    }
    rmdir(path);
}

/* ---- the daemon's log ---------------------------------------------- */

#define LOG_MAX (1u << 20)

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char *log_text;        /* protected by log_lock: LOG_MAX bytes */
static size_t log_len;        /* protected by log_lock */
static unsigned log_nlines;   /* protected by log_lock */

static void log_func(enum fuse_log_level level, const char *fmt, va_list ap)
{
    char line[1024];
    int n;

    (void)level;
    n = vsnprintf(line, sizeof(line), fmt, ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line))
        n = sizeof(line) - 1;
    pthread_mutex_lock(&log_lock);
    log_nlines++;
    if (log_text && log_len + (size_t)n + 1 < LOG_MAX) {
        memcpy(log_text + log_len, line, (size_t)n);
        log_len += (size_t)n;
        log_text[log_len] = '\0';
    }
    pthread_mutex_unlock(&log_lock);
    if (getenv("FT_LOG"))
        fputs(line, stderr);
}

void ft_log_capture(void)
{
    log_text = xmalloc(LOG_MAX);
    log_text[0] = '\0';
    fuse_set_log_func(log_func);
}

void ft_log_clear(void)
{
    pthread_mutex_lock(&log_lock);
    log_len = 0;
    log_nlines = 0;
    if (log_text)
        log_text[0] = '\0';
    pthread_mutex_unlock(&log_lock);
}

bool ft_log_has(const char *s)
{
    bool has;

    pthread_mutex_lock(&log_lock);
    has = log_text && strstr(log_text, s);
    pthread_mutex_unlock(&log_lock);
    return has;
}

unsigned ft_log_lines(void)
{
    unsigned n;

    pthread_mutex_lock(&log_lock);
    n = log_nlines;
    pthread_mutex_unlock(&log_lock);
    return n;
}

/* ---- reading members ----------------------------------------------- */

int ft_read_deflate(struct archive *a, struct archive_member *m, struct cache *c, uint64_t off,
                    size_t len, unsigned char *buf)
{
    while (len) {
        uint64_t k = off / FS_CHUNK_SIZE, in = off % FS_CHUNK_SIZE;
        struct cache_chunk *ch;
        size_t n;
        int ret = member_chunk(a, m, c, k, &ch);

        if (ret < 0)
            return ret;
        if (in >= ch->len) {
            cache_put(c, ch);
            return -ERANGE; /* a short chunk mid-member: never expected */
        }
        n = ch->len - in < len ? ch->len - in : len;
        memcpy(buf, ch->data + in, n);
        cache_put(c, ch);
        buf += n;
        off += n;
        len -= n;
    }
    return 0;
}

int ft_read_stored(struct archive *a, struct archive_member *m, uint64_t off, size_t len,
                   unsigned char *buf)
{
    unsigned char *out;
    size_t at;
    int64_t n = member_read_stored(a, m, off, len, &out, &at);

    if (n < 0)
        return (int)n;
    if ((size_t)n != len) {
        free(out);
        return -ERANGE;
    }
    if (n)
        memcpy(buf, out + at, len);
    free(out);
    return 0;
}

/* ---- barrier --------------------------------------------------------- */

void ft_barrier_init(struct ft_barrier *b, unsigned n)
{
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cond, NULL);
    b->n = n;
    b->waiting = 0;
    b->round = 0;
}

void ft_barrier_wait(struct ft_barrier *b)
{
    unsigned round;

    pthread_mutex_lock(&b->lock);
    round = b->round;
    if (++b->waiting == b->n) {
        b->waiting = 0;
        b->round++;
        pthread_cond_broadcast(&b->cond);
    } else {
        while (round == b->round)
            pthread_cond_wait(&b->cond, &b->lock);
    }
    pthread_mutex_unlock(&b->lock);
}

void ft_barrier_destroy(struct ft_barrier *b)
{
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->cond);
}
