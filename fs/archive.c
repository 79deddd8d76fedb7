/*
 * Archives and members: open a source (a zip file, a gzip file, any other
 * file passed through, a URL), turn its zip directory or gzip stream into a
 * list of members with exact sizes, and keep each member's state: its
 * index, chunk CRC table and damage. Serving a member's bytes is member.c's.
 *
 * A gzip file's size comes from its .npy header when its last ISIZE agrees
 * (gzip_size()); otherwise one full pass (verify_pass()) counts the bytes,
 * within -o max_ratio, and its access points and chunk CRC table are kept.
 * A remote zip's local headers are read as each member is first needed
 * (archive_locate()).
 *
 * Change: every path that reads the archive (readers, readahead workers,
 * stored reads, the indexer's passes, the open) checks the archive's
 * identity after its reads and before it uses their bytes
 * (archive_check()), chunk by chunk, so a chunk is cached or served only
 * if it was decoded from the content the archive had at open. Once a change
 * is found nothing more is served and the kernel drops the members' pages.
 */
#define _GNU_SOURCE

#include "archive.h"

#include <errno.h>
#include <fuse_log.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bsrc.h"
#include "dfx_crcs.h"
#include "fs.h"
#include "gz.h"
#include "net.h"
#include "npy.h"
#include "verify.h"
#include "zip.h"

static atomic_uint_fast64_t next_member_id = 1;

/* Contract in archive.h. */
void archive_meta_free(struct archive_meta *meta)
{
    if (!meta)
        return;
    free(meta->dtype);
    free(meta->shape);
    free(meta);
}

/* Contract in archive.h. The inode is set once, before any open. */
void archive_drop_pages(struct archive_member *m)
{
    uint64_t ino = atomic_load(&m->ino);

    if (!atomic_load(&m->was_opened) || !ino)
        return; /* no pages in the kernel, or no inode to name them by */
    notify_drop(&m->inval, ino);
}

static int init_member(struct archive_member *m, const char *name, size_t name_len)
{
    memset(m, 0, sizeof(*m));
    m->name = malloc(name_len + 1);
    if (!m->name)
        return -ENOMEM;
    memcpy(m->name, name, name_len);
    m->name[name_len] = '\0';
    m->name_len = name_len;
    m->id = atomic_fetch_add(&next_member_id, 1);
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->idle, NULL);
    return 0;
}

static void destroy_member(struct archive_member *m)
{
    struct dfx_reader *drop[PARKED_PER_MEMBER];
    int n = parked_take_all(m->parked, drop);

    for (int i = 0; i < n; i++)
        dfx_reader_free(drop[i]);
    dfx_index_free(m->ix);
    free(atomic_load(&m->crcs));
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->idle);
    archive_meta_free(atomic_load(&m->meta));
    free(m->name);
}

/* Once z's local header is read: m's data offset, verdict and (deflate)
 * index. */
static int zip_member_place(struct archive *a, struct archive_member *m, const struct zip_member *z)
{
    struct dfx_stream st = {0};

    m->data_offset = z->data_offset;
    m->unsupported = z->unsupported;
    m->why = z->why;
    if (m->unsupported || m->kind == ARCHIVE_STORED)
        return 0;
    st.src = a->src;
    st.start = z->data_offset;
    st.end = z->data_offset + z->csize; /* zip.c checked it lies inside the source */
    st.framing = DFX_RAW;
    st.usize = z->usize;
    st.crc = z->crc32;
    st.check_crc = true;
    st.budget = &fs_window_budget;
    return dfx_index_new(&st, a->spacing, &m->ix);
}

/* Fill in m, which init_member() has set up (so it owns its name and
 * locks, and is destroyed with the archive whatever this returns). */
static int zip_member_setup(struct archive *a, struct archive_member *m, const struct zip_member *z)
{
    char buf[24];
    int ret = 0;

    snprintf(m->method, sizeof(m->method), "%s", zip_method_name(z->method, buf, sizeof(buf)));
    m->size = z->usize;
    m->crc32 = z->crc32;
    m->stored_size = z->csize;
    m->is_dir = z->is_dir;
    m->lho = z->lho;
    m->kind = z->unsupported || m->is_dir || z->method == ZIP_METHOD_STORED ? ARCHIVE_STORED
                                                                           : ARCHIVE_DEFLATE;
    if (z->located)
        ret = zip_member_place(a, m, z);
    atomic_store_explicit(&m->located, z->located, memory_order_release);
    return ret;
}

/* Contract in archive.h. */
void archive_log_fetch_failure(struct archive *a, int err)
{
    char buf[64];

    if (atomic_exchange(&a->said_fetch, true))
        return;
    fuse_log(FUSE_LOG_ERR, "npyfs: %s: fetching archive bytes failed (%s); the reads that need "
             "them fail with EIO until the server answers again (npyfs stats counts the "
             "failures)\n", a->name, strerror_r(-err, buf, sizeof(buf)));
}

/* Contract in archive.h. Under m->lock, which only openers contend for before
 * the member is located (readers come after an open). */
int archive_locate(struct archive *a, struct archive_member *m)
{
    struct zip_member z = {0};
    int ret = 0;

    if (archive_located(m))
        return 0;
    pthread_mutex_lock(&m->lock);
    if (!archive_located(m)) {
        z.method = m->kind == ARCHIVE_STORED ? ZIP_METHOD_STORED : ZIP_METHOD_DEFLATE;
        z.csize = m->stored_size;
        z.usize = m->size;
        z.crc32 = m->crc32;
        z.lho = m->lho;
        ret = zip_member_locate(a->src, &z);
        if (ret == 0)
            ret = archive_check(a); /* the header is the archive's as opened */
        if (ret == 0)
            ret = zip_member_place(a, m, &z);
        if (ret == 0)
            atomic_store_explicit(&m->located, true, memory_order_release);
    }
    pthread_mutex_unlock(&m->lock);
    if (bsrc_transient(ret))
        archive_log_fetch_failure(a, ret);
    return ret;
}

/* A member counts in a->count from the moment it owns anything, so that
 * archive_close() destroys a partly set up one too. A remote archive's
 * local headers are read on first need (archive_locate()). */
static int open_zip(struct archive *a)
{
    struct zip_archive *z;
    int ret = zip_archive_open_flags(a->src, bsrc_is_remote(a->bs) ? ZIP_DEFER_LOCAL : 0, &z);

    if (ret < 0)
        return ret;
    a->members = calloc(z->count ? z->count : 1, sizeof(*a->members));
    if (!a->members) {
        zip_free(z);
        return -ENOMEM;
    }
    for (size_t i = 0; ret == 0 && i < z->count; i++) {
        ret = init_member(&a->members[i], z->members[i].name, z->members[i].name_len);
        if (ret < 0)
            break;
        a->count++;
        ret = zip_member_setup(a, &a->members[i], &z->members[i]);
    }
    zip_free(z);
    return ret;
}

/* The most output a sizing pass over a file of size compressed bytes may
 * decode: lim->max_ratio x size, but never less than ARCHIVE_SIZING_FLOOR (a tiny
 * file of repetitive text is no threat); 0 for no limit (none given, or the
 * product does not fit). */
static uint64_t pass_budget(const struct archive_limits *lim, uint64_t size)
{
    uint64_t budget;

    if (!lim || !lim->max_ratio || __builtin_mul_overflow(lim->max_ratio, size, &budget))
        return 0;
    return budget < ARCHIVE_SIZING_FLOOR ? ARCHIVE_SIZING_FLOOR : budget;
}

/* npy_read_header()'s read function over a decoder at the start of a
 * stream: the bytes asked for beyond those it gave already are decoded into
 * buf after them (have: the bytes decoded so far, all in buf). */
struct decoder_prefix {
    struct dfx_reader *r;
    size_t have;
};

static int64_t decoder_prefix(void *arg, unsigned char *buf, size_t len)
{
    struct decoder_prefix *p = arg;

    if (len > p->have) {
        int64_t n = dfx_reader_read(p->r, buf + p->have, len - p->have);
        if (n < 0)
            return n;
        p->have += (size_t)n;
    }
    return (int64_t)(p->have < len ? p->have : len);
}

/*
 * The exact size of a gzip stream's output without decompressing its payload
 * when possible: the .npy header gives header + itemsize * prod(shape), which
 * must agree with ISIZE (size mod 2^32 of the last member). Otherwise (not a
 * sizeable .npy, or several members) one full pass counts the bytes, within
 * lim (-E2BIG past pass_budget(), -ECANCELED once lim->stop is raised); it
 * also fills the index and builds the chunk CRC table (*crcs) on the way, so
 * the work is not lost: that pass checked every member's trailer.
 *
 * Every length here comes from the file: the prefix read may be short (a
 * tiny stream), and a version-1 header's HEADER_LEN may be 0 or 1, so the
 * data offset can lie inside the NPY_PREFIX_LEN bytes already read.
 */
static int64_t gzip_size(struct src *s, struct dfx_index *ix, const struct archive_limits *lim,
                         bool *full, struct dfx_crcs **crcs)
{
    struct decoder_prefix p = {0};
    unsigned char *hdr = NULL;
    struct npy_header h = {0};
    uint32_t isize;
    size_t got = 0;
    int64_t ret;

    ret = dfx_reader_new(ix, 0, &p.r);
    if (ret < 0)
        return ret;
    hdr = malloc(NPY_HEADER_MAX + NPY_PREFIX_LEN);
    if (!hdr) {
        ret = -ENOMEM;
        goto out;
    }
    ret = npy_read_header(decoder_prefix, &p, hdr, &got, &h);
    if (ret < 0)
        goto out;
    if (ret == 1 && h.size_known && gz_last_isize(s, &isize) == 0 &&
        (uint32_t)h.total_size == isize) {
        ret = (int64_t)h.total_size;
        goto out;
    }
    ret = verify_pass(&(struct verify_input){.r = p.r, .size = VERIFY_SIZE_UNKNOWN,
                                             .budget = pass_budget(lim, s->size),
                                             .stop = lim ? lim->stop : NULL},
                      hdr, got, crcs);
    *full = true;
out:
    npy_header_destroy(&h);
    free(hdr);
    dfx_reader_free(p.r);
    return ret;
}

static int open_gzip(struct archive *a, const struct archive_limits *lim)
{
    struct dfx_stream st = {0};
    struct dfx_crcs *crcs = NULL;
    struct archive_member *m;
    char *base = bsrc_base_name(a->path);
    size_t len;
    int64_t size;
    bool full = false;
    int ret;

    if (!base)
        return -ENOMEM;
    len = strlen(base);
    if (len > 3 && strcmp(base + len - 3, ".gz") == 0)
        len -= 3;
    a->members = calloc(1, sizeof(*a->members));
    ret = a->members ? init_member(&a->members[0], base, len) : -ENOMEM;
    free(base);
    if (ret < 0)
        return ret;
    m = &a->members[0];
    a->count = 1;
    atomic_store(&m->located, true);
    strcpy(m->method, "gzip");
    m->kind = ARCHIVE_DEFLATE;
    m->stored_size = a->src->size;
    st.src = a->src;
    st.start = 0;
    st.end = a->src->size;
    st.framing = DFX_GZIP;
    st.usize = UINT64_MAX;
    st.budget = &fs_window_budget;
    ret = dfx_index_new(&st, a->spacing, &m->ix);
    if (ret < 0)
        return ret;
    size = gzip_size(a->src, m->ix, lim, &full, &crcs);
    if (size < 0)
        return (int)size;
    m->size = (uint64_t)size;
    if (full) {
        /* the pass checked every trailer; its points and table are kept */
        if (crcs)
            archive_set_crcs(m, crcs);
        return 0;
    }
    /* Sized from the header: from now on a read that reaches the end goes
     * on through the trailers, so a bad CRC, ISIZE or extra output is EIO. */
    dfx_index_free(m->ix);
    m->ix = NULL;
    st.usize = m->size;
    return dfx_index_new(&st, a->spacing, &m->ix);
}

/* A new archive over bs (owned from here on, closed on failure), named
 * path; members is nmembers zeroed slots (count 0). Returns 0 or a
 * negative errno (*out NULL). */
static int new_archive(struct bsrc *bs, const char *path, uint64_t spacing, size_t nmembers,
                       struct archive **out)
{
    struct archive *a = calloc(1, sizeof(*a));
    char name[4096];

    *out = NULL;
    if (!a) {
        bsrc_close(bs);
        return -ENOMEM;
    }
    a->bs = bs;
    a->src = bsrc_src(bs);
    a->spacing = spacing;
    a->path = strdup(path);
    a->name = strdup(bsrc_name_of(path, name, sizeof(name)));
    a->members = nmembers ? calloc(nmembers, sizeof(*a->members)) : NULL;
    if (!a->path || !a->name || (nmembers && !a->members)) {
        archive_close(a);
        return -ENOMEM;
    }
    *out = a;
    return 0;
}

/* A new archive with its file open as its source (path, or rel beneath
 * dirfd if dirfd >= 0): new_archive() over bsrc_open_file(). */
static int start_archive(int dirfd, const char *rel, const char *path, uint64_t spacing,
                         size_t nmembers, struct archive **out)
{
    struct bsrc *bs;
    int ret = bsrc_open_file(dirfd, rel, path, &bs);

    *out = NULL;
    return ret < 0 ? ret : new_archive(bs, path, spacing, nmembers, out);
}

/* Contract in archive.h. */
const char *archive_problem(int err, uint64_t max_ratio, char *buf, size_t len)
{
    switch (err) {
    case -E2BIG:
        snprintf(buf, len,
                 "refused: expands more than %llux its size when sized by a full pass "
                 "(-o max_ratio=%llu; raise it, or 0 for no limit)",
                 (unsigned long long)max_ratio, (unsigned long long)max_ratio);
        return buf;
    case -ECANCELED:
        return "not opened: the mount is stopping";
    case -EINVAL:
        return "not a zip (.npz) or gzip (.npy.gz) file, or its directory is malformed";
    case -EIO:
        return "damaged or truncated archive";
    case -EBADMSG:
        return "damaged gzip header: its header CRC (FHCRC) does not match it";
    case -EOPNOTSUPP:
        return "unsupported archive (multi-disk zip)";
    case -EFBIG:
        return "too many members";
    case -EISDIR:
        return "is a directory; give an .npz or .npy.gz file";
    case -ENODEV:
        return "not a regular file (a FIFO, socket or device)";
    case -EXDEV:
        return "it now leads out of the directory source (a symlink or a moved directory)";
    case -EREMOTEIO:
        return "the server failed to send the archive's bytes (after retries)";
    case -ETIMEDOUT:
        return "the server stopped answering (-o timeout=)";
    default:
        return strerror_r(-err, buf, len);
    }
}

/* Contract in archive.h. */
int archive_open(const char *path, uint64_t spacing, const struct archive_limits *lim,
                    struct archive **out)
{
    return archive_open_beneath(-1, NULL, path, spacing, lim, out);
}

static int parse_archive(struct archive *a, const struct archive_limits *lim,
                         struct archive **out);

/* Contract in archive.h. */
int archive_open_beneath(int dirfd, const char *rel, const char *path, uint64_t spacing,
                            const struct archive_limits *lim, struct archive **out)
{
    struct archive *a;
    int ret = start_archive(dirfd, rel, path, spacing, 0, &a);

    *out = NULL;
    return ret < 0 ? ret : parse_archive(a, lim, out);
}

/* Bytes of a remote .npy.gz's start fetched with its end at open (in
 * parallel: one round trip, REMOTE_TAIL says why no more): its gzip header
 * and the deflate input its .npy header decodes from (a decoder reads a
 * fetch block of input at a time). A zip needs no head: its local headers
 * are read as each member is first opened. */
#define REMOTE_HEAD (56u << 10)

/* Does url name a .npy.gz (its path, without query)? */
static bool gzip_url(const char *url)
{
    size_t n = strcspn(url, "?#");

    return n > 7 && strncmp(url + n - 7, ".npy.gz", 7) == 0;
}

/* Undo a failed open_zip(): a's members go. */
static void zip_members_free(struct archive *a)
{
    for (size_t i = 0; i < a->count; i++)
        destroy_member(&a->members[i]);
    free(a->members);
    a->members = NULL;
    a->count = 0;
}

/* Contract in archive.h. */
int archive_open_url(struct net *net, const char *url, uint64_t spacing,
                        const struct archive_limits *lim, struct archive **out, char *why,
                        size_t len)
{
    struct archive *a;
    struct bsrc *bs;
    int ret;

    *out = NULL;
    if (why && len)
        why[0] = '\0';
    if (!net)
        return -EINVAL;
    ret = bsrc_open_url(net_remote(net), url, gzip_url(url) ? REMOTE_HEAD : 0, &bs, why, len);
    if (ret == 0)
        ret = new_archive(bs, url, spacing, 0, &a);
    if (ret == 0)
        ret = parse_archive(a, lim, out);
    return ret;
}

/* Parse the archive a (zip or gzip, told apart by magic) into its members:
 * the rest of archive_open*(). Takes a: *out is a, or NULL with a freed. */
static int parse_archive(struct archive *a, const struct archive_limits *lim,
                         struct archive **out)
{
    unsigned char magic[2] = {0};
    int64_t n;
    int ret;

    /* A remote zip is told by its end (the bytes its open fetched), so
     * that its first bytes need no request; its magic is read only if
     * that fails. */
    if (bsrc_is_remote(a->bs) && !gzip_url(a->path)) {
        a->kind = ARCHIVE_ZIP;
        ret = open_zip(a);
        if (ret != -EINVAL)
            goto parsed;
        zip_members_free(a);
    }
    n = bsrc_pread(a->bs, magic, sizeof(magic), 0);
    ret = n < 0 && bsrc_transient((int)n) ? (int)n : 0;
    if (ret < 0)
        goto out_free;
    if (magic[0] == 0x1f && magic[1] == 0x8b) {
        a->kind = ARCHIVE_GZIP;
        ret = open_gzip(a, lim);
    } else {
        a->kind = ARCHIVE_ZIP;
        ret = open_zip(a);
    }
parsed:
    /* The directory, and a gzip sizing pass's points and chunk CRC table,
     * came from what was read: it must be the file as it was stat'ed. */
    if (ret == 0)
        ret = archive_check(a);
    if (ret < 0)
        goto out_free;
    for (size_t i = 0; i < a->count; i++)
        a->members[i].archive = a;
    *out = a;
    return 0;

out_free:
    archive_close(a);
    return ret;
}

void archive_close(struct archive *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->count; i++)
        destroy_member(&a->members[i]);
    free(a->members);
    bsrc_close(a->bs);
    free(a->path);
    free(a->name);
    free(a);
}

/* Contract in archive.h. */
void archive_condemn(struct archive_member *m, const struct dfx_damage *d)
{
    if (archive_located(m) && m->ix)
        dfx_index_set_damage_info(m->ix, d);
    else
        atomic_store(&m->stored_damage, d->error);
    archive_drop_pages(m);
}

/* Contract in archive.h. */
void archive_member_damage(const struct archive *a, struct archive_member *m,
                           struct member_damage *out)
{
    struct dfx_damage *d = &out->d;
    uint64_t bad = atomic_load(&m->bad_chunk);
    int err;

    *out = (struct member_damage){.changed = atomic_load(&a->changed)};
    if (out->changed) {
        *d = (struct dfx_damage){.error = -EIO};
        return;
    }
    if (archive_located(m) && m->ix) {
        dfx_index_damage_info(m->ix, d);
    } else if ((err = atomic_load(&m->stored_damage)) != 0) {
        *d = (struct dfx_damage){.error = err, .kind = DFX_DAMAGE_CRC};
    }
    if (d->error == 0 && bad) {
        *d = (struct dfx_damage){.error = -EIO, .kind = DFX_DAMAGE_CHUNK_CRC,
                                 .from = (bad - 1) * FS_CHUNK_SIZE, .chunk = bad - 1};
        out->chunk_only = true;
    }
    /* reads fail by whole chunks: from the start of the one the damage is in */
    d->from -= d->from % FS_CHUNK_SIZE;
}

/* Contract in archive.h. */
void archive_damage_text(const struct member_damage *dm, char *buf, size_t size)
{
    const struct dfx_damage *d = &dm->d;
    char ebuf[96], from[64];

    if (dm->chunk_only)
        snprintf(from, sizeof(from), "reads of that chunk fail");
    else if (d->from)
        snprintf(from, sizeof(from), "reads from byte %" PRIu64 " fail", d->from);
    else
        snprintf(from, sizeof(from), "every read fails");
    if (dm->changed) {
        snprintf(buf, size, "archive changed since mount: every read fails (remount to see "
                 "the new content)");
        return;
    }
    switch (d->kind) {
    case DFX_DAMAGE_DATA:
        snprintf(buf, size, "damaged: bad deflate data at compressed offset %" PRIu64 "; %s",
                 d->in, from);
        break;
    case DFX_DAMAGE_TRUNCATED:
        snprintf(buf, size, "damaged: the compressed data ends early (truncated archive?) at "
                 "compressed offset %" PRIu64 "; %s", d->in, from);
        break;
    case DFX_DAMAGE_SIZE:
        if (d->actual > d->expected)
            snprintf(buf, size, "damaged: size mismatch: the data decodes to more than the "
                     "%" PRIu64 " bytes the archive gives; %s", d->expected, from);
        else
            snprintf(buf, size, "damaged: size mismatch: the data decodes to %" PRIu64
                     " bytes, the archive gives %" PRIu64 "; %s", d->actual, d->expected, from);
        break;
    case DFX_DAMAGE_CRC:
        snprintf(buf, size, "damaged: CRC-32 mismatch of the member (the archive's checksum); "
                 "%s", from);
        break;
    case DFX_DAMAGE_CHUNK_CRC:
        snprintf(buf, size, "damaged: CRC-32 mismatch of chunk %" PRIu64 " (bytes %" PRIu64
                 "-%" PRIu64 "); %s", d->chunk, d->chunk * FS_CHUNK_SIZE,
                 (d->chunk + 1) * FS_CHUNK_SIZE - 1, from);
        break;
    default:
        snprintf(buf, size, "damaged from byte %" PRIu64 ": %s", d->from,
                 strerror_r(-d->error, ebuf, sizeof(ebuf)));
        break;
    }
}

/* Contract in archive.h. */
void archive_log_damage(struct archive *a, struct archive_member *m, const char *found,
                        int err)
{
    struct member_damage dm;
    char text[320], ebuf[64];

    if (atomic_load(&a->changed) || atomic_load(&m->logged) ||
        atomic_exchange(&m->logged, true))
        return;
    archive_member_damage(a, m, &dm);
    if (dm.d.error)
        archive_damage_text(&dm, text, sizeof(text));
    else
        snprintf(text, sizeof(text), "damaged: %s", strerror_r(-err, ebuf, sizeof(ebuf)));
    fuse_log(FUSE_LOG_ERR, "npyfs: %s: member '%s' is %s (found %s)\n", a->name, m->name, text,
             found);
}

/*
 * Contract in archive.h.
 *
 * Why one check after a chunk's reads is enough: every read of the input a
 * chunk (or a stored read) was made from has returned before the check
 * here, and the source's check sees any change that a read could have
 * seen (bsrc_check(): a file's times move before new data lands; a remote
 * fetch is checked against the object's ETag as it arrives).
 */
int archive_check(struct archive *a)
{
    if (atomic_load(&a->changed))
        return -EIO;
    if (bsrc_check(a->bs) == 0)
        return 0;
    if (!atomic_exchange(&a->changed, true)) {
        if (bsrc_is_remote(a->bs))
            fuse_log(FUSE_LOG_ERR,
                     "npyfs: %s: the object changed on the server (another ETag, "
                     "Last-Modified or size); reads of its members now fail with EIO "
                     "(remount to see the new content)\n",
                     a->name);
        else
            fuse_log(FUSE_LOG_ERR,
                     "npyfs: %s: the archive changed (it was written to, truncated, or its "
                     "status changed); reads of its members now fail with EIO (remount to "
                     "see the new content)\n",
                     a->name);
        for (size_t i = 0; i < a->count; i++)
            archive_drop_pages(&a->members[i]);
    }
    return -EIO;
}

/* Contract in archive.h. */
int archive_damage(struct archive_member *m, uint64_t *bad_from)
{
    if (archive_located(m) && m->ix)
        return dfx_index_damage(m->ix, bad_from);
    *bad_from = 0;
    return atomic_load(&m->stored_damage);
}

/* Contract in archive.h. */
bool archive_set_crcs(struct archive_member *m, struct dfx_crcs *t)
{
    struct dfx_crcs *none = NULL;

    if (!t || t->size != m->size || t->chunk != FS_CHUNK_SIZE ||
        !atomic_compare_exchange_strong(&m->crcs, &none, t)) {
        free(t);
        return false;
    }
    if (m->kind == ARCHIVE_STORED)
        atomic_store(&m->verified, true); /* the pass that built t checked the CRC */
    return true;
}

/* Contract in archive.h. A passthrough file of a directory mount: the stored
 * read path (member_read_stored(): pread, then archive_check())
 * serves it as is. */
int archive_open_plain(int dirfd, const char *rel, const char *path, const char *name,
                          uint64_t spacing, struct archive **out)
{
    struct archive *a;
    struct archive_member *m;
    int ret = start_archive(dirfd, rel, path, spacing, 1, &a);

    *out = NULL;
    if (ret < 0)
        return ret;
    a->kind = ARCHIVE_PLAIN;
    if (!S_ISREG(bsrc_ident(a->bs)->st.st_mode)) {
        ret = -EINVAL;
        goto out_free;
    }
    m = &a->members[0];
    ret = init_member(m, name, strlen(name));
    if (ret < 0)
        goto out_free;
    a->count = 1;
    atomic_store(&m->located, true);
    strcpy(m->method, "plain");
    m->kind = ARCHIVE_STORED;
    m->size = a->src->size;
    m->stored_size = a->src->size;
    atomic_store(&m->verified, true); /* no CRC: the bytes are the file's */
    m->archive = a;
    *out = a;
    return 0;

out_free:
    archive_close(a);
    return ret;
}
