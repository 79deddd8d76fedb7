/*
 * FUSE low-level handlers. Thin: decode the request, ask the tree or the
 * member reader, reply exactly once.
 *
 * Everything is read-only and immutable after mount, so attributes and
 * entries get long timeouts and files are opened with keep_cache: the
 * kernel page cache is the first level of caching.
 *
 * Data replies avoid copies: a deflate read goes out as an iovec pointing
 * into the cached chunks, a stored read is spliced from the archive's fd
 * into the FUSE device. Sequential deflate reads are reported to the
 * readahead pool (fs_readahead.c), which the init handler starts and the
 * destroy handler joins: both run in the serving process, after any fork.
 */
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

/* The archive is not expected to change under the mount; see README. */
#define ATTR_TIMEOUT 3600.0

static struct fs_ctx *ctx_of(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

static void fill_attr(struct fs_ctx *ctx, uint64_t ino, const struct fs_node *n,
                      struct stat *st)
{
    const struct stat *src = &ctx->archive->st;

    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    st->st_uid = ctx->uid;
    st->st_gid = ctx->gid;
    /* numpy writes 1980 dates and modes without a file type: never copy them */
    st->st_atim = src->st_mtim;
    st->st_mtim = src->st_mtim;
    st->st_ctim = src->st_mtim;
    st->st_blksize = 4096;
    if (n->is_dir) {
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2 + n->nsubdirs;
    } else {
        st->st_mode = S_IFREG | 0444;
        st->st_nlink = 1;
        st->st_size = (off_t)n->member->size;
        st->st_blocks = (blkcnt_t)((n->member->size + 511) / 512);
    }
}

static void fs_op_init(void *userdata, struct fuse_conn_info *conn)
{
    struct fs_ctx *ctx = userdata;
    char err[128];
    int ret;

    /* Reads of one file may run in parallel: our handlers are thread-safe. */
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    /* Stored members go from the archive's page cache to the device. */
    if (conn->capable & FUSE_CAP_SPLICE_WRITE)
        conn->want |= FUSE_CAP_SPLICE_WRITE;
    /* libfuse already negotiates 1 MiB requests (max_pages 256, max_write);
     * the kernel lowers its readahead to what we answer here and never
     * raises it, so keep the offer; tune_readahead() raises it later. */
    ret = fs_ra_new(ctx, ctx->opts.threads, &ctx->ra);
    if (ret < 0)
        fuse_log(FUSE_LOG_ERR, "npyfs: %s: cannot start readahead workers (%s); reading without\n",
                 ctx->archive->path, strerror_r(-ret, err, sizeof(err)));
    fs_indexer_start(ctx->indexer); /* index=background: idle-priority indexing */
}

static void fs_op_destroy(void *userdata)
{
    struct fs_ctx *ctx = userdata;

    fs_indexer_stop(ctx->indexer);
    fs_ra_free(ctx->ra);
    ctx->ra = NULL;
}

/* Undo the octal escapes (\040 and the like) of a mountinfo path, in place. */
static void unescape_mountinfo(char *s)
{
    char *d = s;

    for (; *s; s++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
            s[3] >= '0' && s[3] <= '7') {
            *d++ = (char)(((s[1] - '0') << 6) | ((s[2] - '0') << 3) | (s[3] - '0'));
            s += 3;
        } else {
            *d++ = *s;
        }
    }
    *d = '\0';
}

/* The "major:minor" of the topmost mount at path, from /proc/self/mountinfo.
 * Returns 0, or -ENOENT. */
static int mount_dev(const char *path, char *dev, size_t len)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char line[8192], mdev[64], point[4096];
    int ret = -ENOENT;

    if (!f)
        return -ENOENT;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%*s %*s %63s %*s %4095s", mdev, point) != 2)
            continue;
        unescape_mountinfo(point);
        if (strcmp(point, path) == 0) {
            snprintf(dev, len, "%s", mdev);
            ret = 0;
        }
    }
    fclose(f);
    return ret;
}

/*
 * Raise the kernel's readahead for this mount to opts.readahead. The kernel
 * starts a FUSE mount at 128 KiB and caps it at what INIT answered, so only
 * the mount's bdi in sysfs can raise it, and only root may write there. Done
 * at the first open, when INIT has surely been answered. Best effort: if it
 * fails, the kernel's value stays.
 */
static void tune_readahead(struct fs_ctx *ctx)
{
    static atomic_bool done;
    char dev[64], path[128];
    FILE *f;

    if (!ctx->opts.readahead || !ctx->mountpoint || atomic_exchange(&done, true))
        return;
    if (mount_dev(ctx->mountpoint, dev, sizeof(dev)) < 0)
        return;
    snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
    f = fopen(path, "we");
    if (!f)
        return;
    fprintf(f, "%llu\n", (unsigned long long)(ctx->opts.readahead >> 10));
    if (fclose(f) != 0)
        fuse_log(FUSE_LOG_DEBUG, "npyfs: cannot set %s\n", path);
}

static void fs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs_ctx *ctx = ctx_of(req);
    struct fuse_entry_param e;
    uint64_t ino = fs_tree_lookup(&ctx->tree, parent, name);

    if (!ino) {
        fuse_reply_err(req, fs_tree_node(&ctx->tree, parent) ? ENOENT : ENOTDIR);
        return;
    }
    memset(&e, 0, sizeof(e));
    e.ino = ino;
    e.attr_timeout = ATTR_TIMEOUT;
    e.entry_timeout = ATTR_TIMEOUT;
    fill_attr(ctx, ino, fs_tree_node(&ctx->tree, ino), &e.attr);
    fuse_reply_entry(req, &e);
}

static void fs_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs_ctx *ctx = ctx_of(req);
    struct fs_node *n = fs_tree_node(&ctx->tree, ino);
    struct stat st;

    (void)fi;
    if (!n) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    fill_attr(ctx, ino, n, &st);
    fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

static void fs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs_node *n = fs_tree_node(&ctx_of(req)->tree, ino);

    if (!n)
        fuse_reply_err(req, ENOENT);
    else if (!n->is_dir)
        fuse_reply_err(req, ENOTDIR);
    else if ((fi->flags & O_ACCMODE) != O_RDONLY)
        fuse_reply_err(req, EROFS);
    else
        fuse_reply_open(req, fi);
}

/* Entries are ".", "..", then the children in order; the offset of an entry
 * is its position + 1. */
static void fs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                          struct fuse_file_info *fi)
{
    struct fs_ctx *ctx = ctx_of(req);
    struct fs_node *d = fs_tree_node(&ctx->tree, ino);
    char *buf;
    size_t used = 0;

    (void)fi;
    if (!d || !d->is_dir) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    buf = malloc(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    for (size_t i = (size_t)off; i < d->nchildren + 2; i++) {
        struct stat st = {0};
        const char *name;
        size_t len;

        if (i < 2) {
            name = i == 0 ? "." : "..";
            st.st_ino = i == 0 ? ino : d->parent;
            st.st_mode = S_IFDIR;
        } else {
            struct fs_node *c = fs_tree_node(&ctx->tree, d->children[i - 2]);
            name = c->name;
            st.st_ino = d->children[i - 2];
            st.st_mode = c->is_dir ? S_IFDIR : S_IFREG;
        }
        len = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)(i + 1));
        if (len > size - used)
            break;
        used += len;
    }
    fuse_reply_buf(req, buf, used);
    free(buf);
}

static void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs_ctx *ctx = ctx_of(req);
    struct fs_node *n = fs_tree_node(&ctx->tree, ino);

    if (!n) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (n->is_dir) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (n->member->unsupported) {
        if (!atomic_exchange(&n->member->logged, true))
            fuse_log(FUSE_LOG_ERR, "npyfs: %s: member '%s' cannot be read: %s\n",
                     ctx->archive->path, n->member->name, n->member->why);
        fuse_reply_err(req, -n->member->unsupported);
        return;
    }
    tune_readahead(ctx);
    fs_indexer_use(ctx->indexer, n->member); /* first open: load a saved index */
    fi->keep_cache = 1;
    fi->fh = ino;
    fs_member_opened(n->member);
    fuse_reply_open(req, fi);
}

static void fs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs_node *n = fs_tree_node(&ctx_of(req)->tree, ino);

    (void)fi;
    if (n && n->member)
        fs_member_closed(n->member);
    fuse_reply_err(req, 0);
}

/* Stored bytes: spliced from the archive's fd (libfuse falls back to a copy
 * if splice is not available). Before that: the archive must be unchanged
 * since mount (so the splice cannot come back short or with new bytes), and
 * the read that reaches the member's last byte first checks the whole
 * member's CRC-32, so a full read of a damaged stored member ends in EIO.
 * An fstat-to-splice window remains in which the archive could change. */
static void read_stored(fuse_req_t req, struct fs_ctx *ctx, struct fs_member *m, size_t size,
                        uint64_t off)
{
    struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
    uint64_t bad_from;
    int ret = fs_archive_check(ctx->archive);

    if (ret == 0)
        ret = fs_member_damage(m, &bad_from);
    if (ret == 0 && off + size == m->size)
        ret = fs_member_verify_stored(ctx->archive, m);
    if (ret < 0) {
        fuse_reply_err(req, -ret);
        return;
    }
    bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
    bv.buf[0].fd = src_file_fd(ctx->archive->src);
    bv.buf[0].pos = (off_t)(m->data_offset + off);
    fuse_reply_data(req, &bv, 0);
}

/* Reply with the chunks covering [off, off + size) as an iovec straight
 * from the cache's buffers: no copy in the daemon. */
static void read_deflate(fuse_req_t req, struct fs_ctx *ctx, struct fs_member *m, size_t size,
                         uint64_t off)
{
    struct cache_chunk *ch[FS_READ_IOV_MAX];
    struct iovec iov[FS_READ_IOV_MAX];
    uint64_t first = off / FS_CHUNK_SIZE, last = (off + size - 1) / FS_CHUNK_SIZE;
    int n = 0, ret = 0;

    memset(iov, 0, sizeof(iov));
    if (last - first >= FS_READ_IOV_MAX)
        last = first + FS_READ_IOV_MAX - 1;
    fs_ra_note_read(ctx->ra, m, first, last);
    for (uint64_t k = first; k <= last; k++, n++) {
        uint64_t base = k * FS_CHUNK_SIZE;
        uint64_t lo = off > base ? off - base : 0;
        uint64_t hi = off + size - base < FS_CHUNK_SIZE ? off + size - base : FS_CHUNK_SIZE;

        ret = fs_member_chunk(ctx->archive, m, ctx->cache, k, &ch[n]);
        if (ret < 0)
            break;
        if (hi > ch[n]->len)
            hi = ch[n]->len;
        iov[n].iov_base = ch[n]->data + lo;
        iov[n].iov_len = (size_t)(hi - lo);
    }
    if (ret < 0)
        fuse_reply_err(req, -ret);
    else
        fuse_reply_iov(req, iov, n);
    while (n-- > 0)
        cache_put(ctx->cache, ch[n]); /* the reply has copied them into the kernel */
}

static void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    struct fs_ctx *ctx = ctx_of(req);
    struct fs_node *n = fs_tree_node(&ctx->tree, ino);
    struct fs_member *m;

    (void)fi;
    if (!n || n->is_dir) {
        fuse_reply_err(req, n ? EISDIR : ENOENT);
        return;
    }
    m = n->member;
    if (off < 0 || (uint64_t)off >= m->size || size == 0) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    if (size > m->size - (uint64_t)off)
        size = (size_t)(m->size - (uint64_t)off);
    if (m->kind == FS_STORED)
        read_stored(req, ctx, m, size, (uint64_t)off);
    else
        read_deflate(req, ctx, m, size, (uint64_t)off);
}

static void fs_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct fs_ctx *ctx = ctx_of(req);
    struct statvfs sv;
    uint64_t total = 0;

    (void)ino;
    for (size_t i = 0; i < ctx->archive->count; i++)
        total += ctx->archive->members[i].size;
    memset(&sv, 0, sizeof(sv));
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    sv.f_blocks = (fsblkcnt_t)((total + 4095) / 4096);
    sv.f_files = ctx->tree.count;
    sv.f_namemax = 255;
    sv.f_flag = ST_RDONLY;
    fuse_reply_statfs(req, &sv);
}

static void fs_op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
    (void)ino;
    fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

const struct fuse_lowlevel_ops fs_ops = {
    .init = fs_op_init,
    .destroy = fs_op_destroy,
    .lookup = fs_op_lookup,
    .getattr = fs_op_getattr,
    .opendir = fs_op_opendir,
    .readdir = fs_op_readdir,
    .open = fs_op_open,
    .release = fs_op_release,
    .read = fs_op_read,
    .statfs = fs_op_statfs,
    .access = fs_op_access,
};
