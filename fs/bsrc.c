/*
 * Archive byte sources: a local file or a remote object. Contract in
 * bsrc.h.
 *
 * A struct bsrc is the source's reader (struct src, what format/ reads
 * through), its identity taken at open, and the two operations that differ
 * between the kinds: the change check and closing. The file implementation
 * is the only code in the daemon that looks at an archive's descriptor
 * (src_file_fd(), fstat).
 */
#define _GNU_SOURCE
#include "bsrc.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "curlsym.h"
#include "dfx_store.h"
#include "http.h"
#include "remote.h"
#include "src_file.h"

struct bsrc_ops {
    int (*check)(struct bsrc *b);
};

struct bsrc {
    const struct bsrc_ops *ops;
    struct src *src;      /* owned */
    struct bsrc_ident id; /* immutable after open */
    /* file: the ctime (ns) a check compares with: st's, or once, when the
     * file is found unlinked with its content untouched, the ctime the
     * unlink gave it (see bsrc_check() in bsrc.h) */
    atomic_int_least64_t ctime_ns;
    /* remote: the URL as given, and the identity strings (owned) */
    char *url, *etag, *last_modified;
};

static int64_t ts_ns(struct timespec t)
{
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* ---------------------------------------------------------------- file --- */

static int file_check(struct bsrc *b)
{
    const struct stat *o = &b->id.st;
    struct stat st;
    int64_t base, c;

    if (fstat(src_file_fd(b->src), &st) < 0)
        return -EIO;
    if (st.st_dev != o->st_dev || st.st_ino != o->st_ino || st.st_size != o->st_size ||
        ts_ns(st.st_mtim) != ts_ns(o->st_mtim))
        return -EIO;
    c = ts_ns(st.st_ctim);
    base = atomic_load(&b->ctime_ns);
    if (c == base)
        return 0;
    if (st.st_nlink == 0 && o->st_nlink > 0 && base == ts_ns(o->st_ctim) &&
        (atomic_compare_exchange_strong(&b->ctime_ns, &base, c) || base == c))
        return 0;
    return -EIO;
}

static const struct bsrc_ops file_ops = {file_check};

/* Contract in bsrc.h. */
int bsrc_open_file(int dirfd, const char *rel, const char *path, struct bsrc **out)
{
    struct bsrc *b = calloc(1, sizeof(*b));
    int ret;

    *out = NULL;
    if (!b)
        return -ENOMEM;
    ret = dirfd >= 0 ? src_file_open_beneath(dirfd, rel, &b->src) : src_file_open(path, &b->src);
    if (ret == 0 && fstat(src_file_fd(b->src), &b->id.st) < 0)
        ret = -errno;
    if (ret < 0) {
        bsrc_close(b);
        return ret;
    }
    b->ops = &file_ops;
    b->id.kind = BSRC_FILE;
    b->id.size = b->src->size;
    atomic_init(&b->ctime_ns, ts_ns(b->id.st.st_ctim));
    *out = b;
    return 0;
}

/* -------------------------------------------------------------- remote --- */

static int remote_check_op(struct bsrc *b)
{
    return remote_check(b->src);
}

static const struct bsrc_ops remote_ops_b = {remote_check_op};

/* The largest zip central directory fetched ahead at open (some 150,000
 * members); a larger one is read as the zip reader goes. */
#define ZIP_DIR_AHEAD_MAX (16u << 20)

/*
 * A zip's central directory lies right before its end record (and the
 * ZIP64 record and locator, if any), which the bytes kept from open hold
 * (docs/FORMATS.md, zip). When the directory starts before those bytes,
 * start fetching it now, in parallel pieces, so the zip reader's first
 * look at it (a signature at its start, then the rest) costs one round
 * trip in all, not one per read. Only a hint: nothing is checked here (the
 * zip reader does that), and a record not found means no hint. The start
 * is taken as the end minus the directory's size, as the reader does for
 * an archive with data prepended.
 */
static void advise_zip_directory(struct src *src)
{
    const unsigned char *t, *e = NULL;
    uint64_t toff, size = src->size, cd_end, cd_size;
    size_t tlen = remote_tail(src, &t, &toff);

    if (tlen < 22 || toff + tlen != size)
        return;
    for (size_t i = tlen - 22 + 1; i-- > 0;) {
        if (get_le32(t + i) == 0x06054b50 && i + 22 + get_le16(t + i + 20) == tlen) {
            e = t + i;
            break;
        }
    }
    if (!e)
        return;
    cd_end = toff + (uint64_t)(e - t);
    cd_size = get_le32(e + 12);
    if (get_le32(e + 16) == 0xffffffffu || cd_size == 0xffffffffu) {
        /* ZIP64: the locator (20 bytes) right before the end record, the
         * ZIP64 record (12 bytes plus its size field) before that. */
        const unsigned char *loc = e - 20, *rec;
        uint64_t rec_len;
        if (e - t < 20 + 56 || get_le32(loc) != 0x07064b50)
            return;
        rec = loc - 56;
        rec_len = get_le64(rec + 4) + 12;
        if (get_le32(rec) != 0x06064b50 || rec_len != 56)
            return; /* an extensible data sector: let the reader find it */
        cd_end = toff + (uint64_t)(rec - t);
        cd_size = get_le64(rec + 40);
    }
    if (cd_size == 0 || cd_size > cd_end || cd_end - cd_size >= toff ||
        toff - (cd_end - cd_size) > ZIP_DIR_AHEAD_MAX)
        return;
    remote_advise(src, cd_end - cd_size, toff - (cd_end - cd_size));
}

/* Contract in bsrc.h. */
int bsrc_open_url(struct remote_ctx *c, const char *url, size_t head_len, struct bsrc **out,
                  char *why, size_t len)
{
    struct http_error e;
    const struct http_ident *hid;
    struct bsrc *b = calloc(1, sizeof(*b));
    int ret;

    *out = NULL;
    if (why && len)
        why[0] = '\0';
    if (!b)
        return -ENOMEM;
    ret = remote_open(c, url, head_len, &b->src, &e);
    if (ret < 0) {
        if (why && len) /* S3's error codes only for s3:// URLs */
            (s3_is_url(url) ? s3_problem : http_problem)(&e, why, len);
        free(b);
        return ret;
    }
    hid = remote_ident(b->src);
    b->url = strdup(url);
    b->etag = strdup(hid->etag);
    b->last_modified = strdup(hid->last_modified);
    if (!b->url || !b->etag || !b->last_modified) {
        bsrc_close(b);
        return -ENOMEM;
    }
    b->ops = &remote_ops_b;
    b->id.kind = BSRC_REMOTE;
    b->id.size = hid->size;
    b->id.url = b->url;
    b->id.etag = b->etag;
    b->id.last_modified = b->last_modified;
    b->id.st.st_mode = S_IFREG | 0444;
    b->id.st.st_nlink = 1;
    b->id.st.st_size = (off_t)hid->size;
    b->id.st.st_uid = getuid();
    b->id.st.st_gid = getgid();
    if (hid->last_modified[0]) {
        /* libcurl is loaded: c's client loaded it (http_client_new()) */
        time_t t = curl_getdate(hid->last_modified, NULL);
        if (t > 0)
            b->id.st.st_mtim.tv_sec = t;
    }
    if (head_len == 0) /* a zip, or so it may be */
        advise_zip_directory(b->src);
    *out = b;
    return 0;
}

/* --------------------------------------------------------------- common --- */

/* Contract in bsrc.h. */
void bsrc_close(struct bsrc *b)
{
    if (!b)
        return;
    src_free(b->src);
    free(b->url);
    free(b->etag);
    free(b->last_modified);
    free(b);
}

/* Contract in bsrc.h. */
struct src *bsrc_src(struct bsrc *b)
{
    return b->src;
}

/* Contract in bsrc.h. */
int64_t bsrc_pread(struct bsrc *b, void *buf, size_t len, uint64_t off)
{
    return src_pread(b->src, buf, len, off);
}

/* Contract in bsrc.h. */
int bsrc_read_exact(struct bsrc *b, void *buf, size_t len, uint64_t off)
{
    return src_read_exact(b->src, buf, len, off);
}

/* Contract in bsrc.h. */
void bsrc_advise(struct bsrc *b, uint64_t off, uint64_t len)
{
    if (b->id.kind == BSRC_REMOTE)
        remote_advise(b->src, off, len);
}

/* Contract in bsrc.h. */
const struct bsrc_ident *bsrc_ident(const struct bsrc *b)
{
    return &b->id;
}

/* Contract in bsrc.h. */
int bsrc_check(struct bsrc *b)
{
    return b->ops->check(b);
}

static uint64_t fnv1a(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* Contract in bsrc.h. */
void bsrc_key(const struct bsrc *b, struct dfx_store_key *k)
{
    const struct stat *st = &b->id.st;
    char name[2048];

    if (b->id.kind == BSRC_FILE) {
        k->dev = (uint64_t)st->st_dev;
        k->ino = (uint64_t)st->st_ino;
        k->size = (uint64_t)st->st_size;
        k->mtime_sec = (int64_t)st->st_mtim.tv_sec;
        k->mtime_nsec = (uint32_t)st->st_mtim.tv_nsec;
        return;
    }
    /* The separator cannot occur in a header value. */
    bsrc_name_of(b->url, name, sizeof(name));
    k->dev = fnv1a(0xcbf29ce484222325ull, name);
    k->ino = fnv1a(fnv1a(fnv1a(0xcbf29ce484222325ull, b->etag), "\n"), b->last_modified);
    k->size = b->id.size;
    k->mtime_sec = 0;
    k->mtime_nsec = 0;
}

/* Contract in bsrc.h. */
const char *bsrc_name_of(const char *path_or_url, char *buf, size_t len)
{
    if (http_is_url(path_or_url))
        return http_redact_url(path_or_url, buf, len);
    if (len) {
        snprintf(buf, len, "%s", path_or_url);
    }
    return buf;
}

/* Contract in bsrc.h. */
bool bsrc_remote_stats(struct bsrc *b, struct remote_stats *out)
{
    if (b->id.kind != BSRC_REMOTE)
        return false;
    remote_src_stats(b->src, out);
    return true;
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Contract in bsrc.h. An s3:// key is taken as it is (S3 keys are not
 * encoded in s3:// URLs); an http(s) path is %XX-decoded. */
char *bsrc_base_name(const char *path_or_url)
{
    bool url = bsrc_is_url(path_or_url), decode = http_is_url(path_or_url);
    const char *end, *base, *p;
    char *out, *o;

    end = path_or_url + (decode ? strcspn(path_or_url, "?#") : strlen(path_or_url));
    base = end;
    while (base > path_or_url && base[-1] != '/')
        base--;
    if (url && base - path_or_url <= (ptrdiff_t)strcspn(path_or_url, ":") + 3)
        base = end; /* "s3://bucket", "https://host": no path */
    out = o = malloc((size_t)(end - base) + 1);
    if (!out)
        return NULL;
    for (p = base; p < end; p++) {
        if (decode && p[0] == '%' && end - p > 2 && hex_value(p[1]) >= 0 && hex_value(p[2]) >= 0) {
            *o++ = (char)(hex_value(p[1]) << 4 | hex_value(p[2]));
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

/* Contract in bsrc.h. */
bool bsrc_is_url(const char *s)
{
    return remote_is_url(s);
}
