/*
 * FUSE low-level handlers. Thin: decode the request, ask the namespace
 * (vfs.c: inodes, directories, which archive and member a file is) or the
 * member reader, reply exactly once. An open file's handle (fi->fh) is its
 * member, which lives until unmount and knows its archive.
 *
 * Everything is read-only and immutable after mount, so attributes and
 * entries get long timeouts and files are opened with keep_cache: the
 * kernel page cache is the first level of caching.
 *
 * Requests never wait in a handler thread for slow work. A request that
 * needs a unit opened (vfs.c) or a member checked by a full pass first
 * (verify=, indexer.c) is copied into a struct pending, queued on that work
 * as an defer_waiter, and the handler returns without replying; when the work
 * ends, the request runs again (in a pool thread) and replies. The same
 * run_op() serves the first attempt and every later one, so a retry behaves
 * exactly like a request that found the work done. A queued request can be
 * interrupted (the kernel's INTERRUPT, when the caller got a signal): it is
 * answered EINTR at once, so a killed `ls` does not hang on a file being
 * sized, and its pending record is freed when the work wakes it.
 *
 * Handlers run in the threads of the request loop (loop.c). The thread
 * reading the device serves a READ itself, so a READ handler calls
 * loop_blocking() before anything that waits (a chunk not in the cache, a
 * pread): another thread then takes over the device.
 *
 * Data replies: a deflate read goes out as an iovec pointing into the
 * cached chunks; a stored read is read into a buffer with pread, the
 * archive checked unchanged (archive_check()), then sent. Not spliced:
 * splice hands the archive's page-cache pages to the FUSE device, so a
 * write after the check could still change the bytes served. Sequential
 * deflate reads are reported to the readahead pool (readahead.c). The
 * init handler starts that pool and the notifier (which asks the kernel to
 * drop the cached pages of damaged members), the destroy handler joins
 * them: both run in the serving process, after any fork. The notifier is
 * notify.c's.
 */
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE

#include "ops.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#include "archive.h"
#include "bsrc.h"
#include "cache.h"
#include "defer.h"
#include "fs.h"
#include "indexer.h"
#include "loop.h"
#include "member.h"
#include "mount.h"
#include "mounts.h"
#include "notify.h"
#include "readahead.h"
#include "vfs.h"
#include "xattr.h"

/* The archive is not expected to change under the mount; see README. */
#define ATTR_TIMEOUT 3600.0

/* Up to READ_IOV_MAX references for one read of [off, off + len) of a
 * ARCHIVE_DEFLATE member: chunk refs in order. */
#define READ_IOV_MAX 64

static struct mount_ctx *ctx_of(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

/* Attributes of ino, owner and permissions included (vfs_getattr()). */
static int fill_attr(struct mount_ctx *ctx, uint64_t ino, struct stat *st)
{
    return vfs_getattr(ctx->vfs, ino, st);
}

static void fs_op_init(void *userdata, struct fuse_conn_info *conn)
{
    struct mount_ctx *ctx = userdata;
    char err[128];
    int ret;

    /* Reads of one file may run in parallel: our handlers are thread-safe. */
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    /* So may lookups and listings in one directory. (libfuse 3.14 does not
     * pass this on to the kernel, which then sends them one at a time per
     * directory: that is why a lookup never waits for a unit to be opened,
     * and the getattr that follows does; see try_lookup().) */
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
        conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    /* Listings carry every entry's attributes (READDIRPLUS, try_readdir()),
     * always: they cost no I/O here, and save a LOOKUP per file opened or
     * stat'ed after the listing. The kernel's adaptive mode would send plain
     * READDIRs after the first buffer of a directory. */
    if (conn->capable & FUSE_CAP_READDIRPLUS)
        conn->want |= FUSE_CAP_READDIRPLUS;
    conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
    /* -o max_read= went to libfuse too, which wants init to say the same */
    if (ctx->opts.max_read)
        conn->max_read = (unsigned)ctx->opts.max_read;
    /* libfuse already negotiates 1 MiB requests (max_pages 256, max_write);
     * the kernel lowers its readahead to what we answer here and never
     * raises it, so keep the offer; tune_readahead() raises it later. */
    ret = readahead_new(ctx, ctx->opts.threads, &ctx->ra);
    if (ret < 0)
        fuse_log(FUSE_LOG_ERR, "npyfs: %s: cannot start readahead workers (%s); reading without\n",
                 ctx->source, strerror_r(-ret, err, sizeof(err)));
    notify_start(ctx->se, ctx->source, &fs_counters.pages_dropped);
    vfs_start(ctx->vfs); /* index=background: idle-priority indexing */
}

static void fs_op_destroy(void *userdata)
{
    struct mount_ctx *ctx = userdata;

    vfs_stop(ctx->vfs);
    readahead_free(ctx->ra);
    ctx->ra = NULL;
    notify_stop(); /* last: the indexers and workers above may queue */
}

/*
 * Raise the kernel's readahead for this mount to opts.readahead. The kernel
 * starts a FUSE mount at 128 KiB and caps it at what INIT answered, so only
 * the mount's bdi in sysfs can raise it, and only root may write there. Done
 * in the first request after INIT (dispatch()): the kernel sends none before
 * it has INIT's answer, and `npyfs mount` returns only once a stat of the
 * mount point has been answered. Best effort: if it fails, the kernel's
 * value stays.
 */
static void tune_readahead(struct mount_ctx *ctx)
{
    static atomic_bool done;
    struct mounts_entry me;
    char path[128];
    FILE *f;

    if (atomic_load_explicit(&done, memory_order_relaxed) || atomic_exchange(&done, true))
        return;
    if (!ctx->opts.readahead || !ctx->mountpoint || mounts_find(ctx->mountpoint, &me) <= 0)
        return;
    snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", me.dev);
    f = fopen(path, "we");
    if (!f)
        return;
    fprintf(f, "%llu\n", (unsigned long long)(ctx->opts.readahead >> 10));
    if (fclose(f) != 0)
        fuse_log(FUSE_LOG_DEBUG, "npyfs: cannot set %s\n", path);
}

/* ----------------------------------------------------- requests that wait --- */

/* The requests that may have to wait for a unit or a pass. */
enum op_kind {
    OP_LOOKUP, OP_GETATTR, OP_OPENDIR, OP_READDIR, OP_READDIRPLUS, OP_OPEN, OP_GETXATTR,
    OP_LISTXATTR
};

/* One request's arguments: the handler's, or a pending request's copy. */
struct op {
    enum op_kind kind;
    fuse_ino_t ino;            /* OP_LOOKUP: the parent */
    const char *name;          /* OP_LOOKUP, OP_GETXATTR */
    struct fuse_file_info *fi; /* OP_OPENDIR, OP_READDIR(PLUS), OP_OPEN */
    size_t size;               /* OP_READDIR(PLUS), OP_GETXATTR, OP_LISTXATTR */
    off_t off;                 /* OP_READDIR(PLUS) */
};

/* What an attempt that returned DEFER_WAIT waits for. */
struct wait_for {
    bool pass;              /* the full pass over m (x's), else unit's open */
    uint32_t unit;
    struct indexer *x;
    struct archive_member *m;
};

/* A lookup never waits for an .npy.gz to be opened (the kernel sends the
 * lookups of a directory one at a time: one waiting for a file to be sized
 * would hold up all its neighbours). Until it is open, the entry goes out
 * with attributes that expire at once, so the kernel asks getattr, which
 * waits, before it uses them (stat, read, lseek). */
static int try_lookup(fuse_req_t req, struct mount_ctx *ctx, const struct op *op,
                      struct wait_for *wf)
{
    struct fuse_entry_param e;
    uint32_t unsized;
    uint64_t ino;
    int ret = vfs_lookup(ctx->vfs, op->ino, op->name, &ino, &wf->unit), ready = 0;

    if (ret == DEFER_WAIT)
        return DEFER_WAIT;
    memset(&e, 0, sizeof(e));
    if (ret == 0)
        ret = ready = vfs_attr_ready(ctx->vfs, ino, &unsized);
    if (ret >= 0)
        ret = fill_attr(ctx, ino, &e.attr);
    if (ret < 0) {
        fuse_reply_err(req, -ret);
        return 0;
    }
    e.ino = ino;
    e.attr_timeout = ready == DEFER_WAIT ? 0.0 : ATTR_TIMEOUT;
    e.entry_timeout = ATTR_TIMEOUT;
    fuse_reply_entry(req, &e);
    return 0;
}

/* The attributes of an .npy.gz wait for it to be opened (sized). */
static int try_getattr(fuse_req_t req, struct mount_ctx *ctx, const struct op *op,
                       struct wait_for *wf)
{
    struct stat st;
    int ret = vfs_attr_ready(ctx->vfs, op->ino, &wf->unit);

    if (ret == DEFER_WAIT)
        return DEFER_WAIT;
    if (ret == 0)
        ret = fill_attr(ctx, op->ino, &st);
    if (ret < 0)
        fuse_reply_err(req, -ret);
    else
        fuse_reply_attr(req, &st, ATTR_TIMEOUT);
    return 0;
}

static int try_opendir(fuse_req_t req, struct mount_ctx *ctx, const struct op *op,
                       struct wait_for *wf)
{
    struct vfs_dir d;
    int ret = vfs_opendir(ctx->vfs, op->ino, &d, &wf->unit); /* an archive directory's unit */

    if (ret == DEFER_WAIT)
        return DEFER_WAIT;
    if (ret < 0)
        fuse_reply_err(req, -ret);
    else if ((op->fi->flags & O_ACCMODE) != O_RDONLY)
        fuse_reply_err(req, EROFS);
    else
        fuse_reply_open(req, op->fi);
    return 0;
}

/* One child's entry for READDIRPLUS, as try_lookup() would answer it (the
 * kernel then needs no LOOKUP for it): an .npy.gz not opened yet goes out
 * with attributes that expire at once, and opening nothing; a child whose
 * lookup would fail goes out as a name only (inode 0: the kernel links
 * nothing, and a later lookup gets the error). */
static void plus_entry(struct mount_ctx *ctx, uint64_t ino, struct fuse_entry_param *e)
{
    uint32_t unsized;
    int ready = vfs_attr_ready(ctx->vfs, ino, &unsized);

    if (ready != DEFER_WAIT && ready < 0)
        return;
    if (fill_attr(ctx, ino, &e->attr) < 0)
        return;
    e->ino = ino;
    e->attr_timeout = ready == DEFER_WAIT ? 0.0 : ATTR_TIMEOUT;
    e->entry_timeout = ATTR_TIMEOUT;
}

/* Entries are ".", "..", then the children in order; the offset of an entry
 * is its position + 1. READDIRPLUS adds each child's attributes and entry
 * (plus_entry()), so that `ls -l`, or opening every file of a listed
 * directory, costs no LOOKUP per file. */
static int try_readdir(fuse_req_t req, struct mount_ctx *ctx, const struct op *op,
                       struct wait_for *wf)
{
    bool plus = op->kind == OP_READDIRPLUS;
    struct vfs_dir d;
    char *buf;
    size_t used = 0, size = op->size;
    int ret = vfs_opendir(ctx->vfs, op->ino, &d, &wf->unit);

    if (ret == DEFER_WAIT)
        return DEFER_WAIT;
    if (ret < 0) {
        fuse_reply_err(req, -ret);
        return 0;
    }
    buf = malloc(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return 0;
    }
    for (size_t i = (size_t)op->off; i < d.count + 2; i++) {
        struct fuse_entry_param e;
        const char *name;
        size_t len;

        memset(&e, 0, sizeof(e));
        if (i < 2) {
            name = i == 0 ? "." : "..";
            e.attr.st_ino = i == 0 ? op->ino : d.parent;
            e.attr.st_mode = S_IFDIR;
        } else {
            uint64_t cino;
            bool is_dir;

            vfs_dirent(ctx->vfs, &d, i - 2, &name, &cino, &is_dir);
            if (plus)
                plus_entry(ctx, cino, &e);
            e.attr.st_ino = cino;
            e.attr.st_mode = (e.attr.st_mode & ~S_IFMT) | (is_dir ? S_IFDIR : S_IFREG);
        }
        if (plus)
            len = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)(i + 1));
        else
            len = fuse_add_direntry(req, buf + used, size - used, name, &e.attr, (off_t)(i + 1));
        if (len > size - used)
            break;
        used += len;
    }
    fuse_reply_buf(req, buf, used);
    free(buf);
    return 0;
}

/* The errno a failed request is answered with: a remote archive whose server
 * failed (-EREMOTEIO, bsrc.h) is EIO to the reader, as the README says;
 * ETIMEDOUT stays (the server stopped answering). */
static int read_errno(int err)
{
    return err == -EREMOTEIO ? EIO : -err;
}

/* A member no larger than this goes into the kernel page cache at its first
 * open (prefill()). */
#define PREFILL_MAX (256u << 10)

/* The bytes [off, off + size) of ARCHIVE_STORED member m, as every read of
 * them gets them (member_read_stored(): the caller frees *buf, where they
 * start at *at): none once damage is known, and the read that reaches the
 * member's last byte first checks the whole member's CRC-32. Returns the
 * count or a negative errno. */
static int64_t stored_bytes(struct archive_member *m, size_t size, uint64_t off,
                            unsigned char **buf, size_t *at)
{
    uint64_t bad_from;
    int64_t n = archive_damage(m, &bad_from);

    if (n == 0 && off + size == m->size)
        n = member_verify_stored(m->archive, m);
    if (n == 0)
        n = member_read_stored(m->archive, m, off, size, buf, at);
    return n;
}

/* Push ARCHIVE_STORED member m's bytes (stored_bytes(), as a read of all of
 * it gets them) into the page cache of ino. */
static int prefill_stored(struct mount_ctx *ctx, fuse_ino_t ino, struct archive_member *m)
{
    struct fuse_bufvec bv = FUSE_BUFVEC_INIT(0);
    unsigned char *buf = NULL;
    size_t at = 0;
    int64_t n = stored_bytes(m, (size_t)m->size, 0, &buf, &at);

    if (n == (int64_t)m->size) {
        bv.buf[0].size = (size_t)n;
        bv.buf[0].mem = buf + at;
        n = fuse_lowlevel_notify_store(ctx->se, ino, 0, &bv, 0);
    } else if (n >= 0) {
        n = -EIO;
    }
    free(buf);
    return (int)n;
}

/* The same for an ARCHIVE_DEFLATE member, chunk by chunk, decoded as a read
 * would decode them (the decode that reaches the end checks the member's
 * CRC-32): all of them first, so that a damaged member stores nothing. */
static int prefill_deflate(struct mount_ctx *ctx, fuse_ino_t ino, struct archive_member *m)
{
    struct cache_chunk *ch[(PREFILL_MAX + FS_CHUNK_SIZE - 1) / FS_CHUNK_SIZE];
    size_t n = 0, want = (size_t)((m->size + FS_CHUNK_SIZE - 1) / FS_CHUNK_SIZE);
    int ret = 0;

    for (; n < want && ret == 0; n++)
        ret = member_chunk(m->archive, m, ctx->cache, n, &ch[n]);
    if (ret < 0)
        n--; /* the failed one holds no reference */
    for (size_t k = 0; k < n && ret == 0; k++) {
        struct fuse_bufvec bv = FUSE_BUFVEC_INIT(ch[k]->len);

        bv.buf[0].mem = ch[k]->data;
        ret = fuse_lowlevel_notify_store(ctx->se, ino, (off_t)k * FS_CHUNK_SIZE, &bv, 0);
    }
    /* Stored whole, they are in the page cache now (keep_cache), as a read
     * served whole: they leave the chunk cache, so that opening many small
     * members neither evicts the chunks of others nor takes a fresh chunk
     * buffer each (the next decode reuses this one). */
    for (size_t k = 0; k < n && ret == 0; k++)
        cache_done(ctx->cache, ch[k]);
    while (n-- > 0)
        cache_put(ctx->cache, ch[n]); /* the kernel has copied them */
    return ret;
}

/* At a small member's first open, before the open is answered, put its
 * bytes in the kernel page cache (FUSE's store notification): then reading
 * it costs no READ request, which for a directory of small arrays (an .npz
 * of many members, each np.load()ed in turn) is a third of the requests
 * and of the wait. keep_cache keeps the pages across the open. Only data
 * that a read would serve goes in, checked as a read checks it; on any
 * failure nothing does, and reads get the error as before. Local archives
 * only: a remote read at open would hold up the open and, failing, be
 * repeated by the read. */
static void prefill(struct mount_ctx *ctx, fuse_ino_t ino, struct archive_member *m)
{
    int ret;

    if (m->size == 0 || m->size > PREFILL_MAX || bsrc_is_remote(m->archive->bs) ||
        atomic_exchange(&m->prefilled, true))
        return;
    if (m->kind == ARCHIVE_STORED)
        ret = prefill_stored(ctx, ino, m);
    else
        ret = prefill_deflate(ctx, ino, m);
    if (ret == 0) {
        atomic_fetch_add_explicit(&fs_counters.prefilled, 1, memory_order_relaxed);
        return;
    }
    /* Reads decode what they need and get the error if it lasts. Damage or
     * a change of the archive is logged where it is found; anything else
     * (a lack of memory, the kernel refusing the store) is said here, once
     * per member. The next open tries again, unless the member is known to
     * be bad. */
    if (ret != -EIO && !atomic_exchange(&m->said_prefill, true))
        fuse_log(FUSE_LOG_INFO, "npyfs: %s: member '%s': not put in the page cache at open: %s\n",
                 m->archive->name, m->name, strerror(-ret));
    if (!atomic_load(&m->archive->changed) && archive_damage(m, &(uint64_t){0}) == 0)
        atomic_store(&m->prefilled, false);
}

static int try_open(fuse_req_t req, struct mount_ctx *ctx, const struct op *op, struct wait_for *wf)
{
    struct fuse_file_info *fi = op->fi;
    struct vfs_file f;
    int ret;

    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
        fuse_reply_err(req, EROFS);
        return 0;
    }
    ret = vfs_file(ctx->vfs, op->ino, &f, &wf->unit); /* a passthrough file's unit */
    if (ret == DEFER_WAIT)
        return DEFER_WAIT;
    if (ret == 0)
        ret = archive_locate(f.a, f.m); /* a remote zip's local header, first time */
    if (ret < 0) {
        fuse_reply_err(req, read_errno(ret));
        return 0;
    }
    if (f.m->unsupported) {
        if (!atomic_exchange(&f.m->logged, true))
            fuse_log(FUSE_LOG_ERR, "npyfs: %s: member '%s' cannot be read: %s\n",
                     f.a->name, f.m->name, f.m->why);
        fuse_reply_err(req, -f.m->unsupported);
        return 0;
    }
    indexer_use(f.indexer, f.m); /* first open: load a saved index */
    /* verify=strict, or auto up to verify_max: serve a member only once a
     * full pass has checked it */
    ret = indexer_ready(f.indexer, f.m);
    if (ret == DEFER_WAIT) {
        wf->pass = true;
        wf->x = f.indexer;
        wf->m = f.m;
        return DEFER_WAIT;
    }
    if (ret < 0) {
        fuse_reply_err(req, -ret);
        return 0;
    }
    fi->keep_cache = 1;
    fi->fh = (uintptr_t)f.m; /* members live until unmount: read and release use it */
    member_opened(f.m);
    prefill(ctx, op->ino, f.m);
    fuse_reply_open(req, fi);
    return 0;
}

/* The (archive, member) whose xattrs ino has: a file's, or (NULL, NULL) for
 * the mount root. Returns 0, -ENODATA (another directory: none), DEFER_WAIT
 * (*need, as vfs_file()), or the error opening the file. */
static int xattr_target(struct mount_ctx *ctx, fuse_ino_t ino, struct vfs_file *f, uint32_t *need)
{
    int ret;

    if (ino == FUSE_ROOT_ID) {
        memset(f, 0, sizeof(*f));
        return 0;
    }
    ret = vfs_file(ctx->vfs, ino, f, need);
    return ret == -EISDIR ? -ENODATA : ret;
}

/* Reply to getxattr/listxattr: size 0 asks for the length; ret is a length
 * or a negative errno from xattr_*(). */
static void reply_xattr(fuse_req_t req, size_t size, long ret, const char *buf)
{
    if (ret < 0)
        fuse_reply_err(req, read_errno((int)ret));
    else if (size == 0)
        fuse_reply_xattr(req, (size_t)ret);
    else
        fuse_reply_buf(req, buf, (size_t)ret);
}

static int try_getxattr(fuse_req_t req, struct mount_ctx *ctx, const struct op *op,
                        struct wait_for *wf)
{
    struct vfs_file f;
    char *buf = NULL;
    long ret;

    /* ls -l asks every file for security.* and system.* names: answer
     * without opening a passthrough file for it */
    if (strncmp(op->name, "user.", 5) != 0) {
        fuse_reply_err(req, ENODATA);
        return 0;
    }
    ret = xattr_target(ctx, op->ino, &f, &wf->unit);
    if (ret == DEFER_WAIT)
        return DEFER_WAIT;
    if (ret == 0 && op->size && !(buf = malloc(op->size)))
        ret = -ENOMEM;
    if (ret == 0)
        ret = xattr_get(ctx, f.a, f.m, op->name, buf, op->size);
    reply_xattr(req, op->size, ret, buf);
    free(buf);
    return 0;
}

static int try_listxattr(fuse_req_t req, struct mount_ctx *ctx, const struct op *op,
                         struct wait_for *wf)
{
    struct vfs_file f;
    char *buf = NULL;
    long ret = xattr_target(ctx, op->ino, &f, &wf->unit);

    if (ret == DEFER_WAIT)
        return DEFER_WAIT;
    if (ret == -ENODATA)
        ret = 0; /* a directory other than the root: an empty list */
    else if (ret == 0 && op->size && !(buf = malloc(op->size)))
        ret = -ENOMEM;
    else if (ret == 0)
        ret = xattr_list(ctx, f.a, f.m, buf, op->size);
    reply_xattr(req, op->size, ret, buf);
    free(buf);
    return 0;
}

/* Try to answer op: 0 once replied, or DEFER_WAIT (nothing replied) with *wf
 * what it must wait for. */
static int run_op(fuse_req_t req, struct mount_ctx *ctx, const struct op *op, struct wait_for *wf)
{
    memset(wf, 0, sizeof(*wf));
    switch (op->kind) {
    case OP_LOOKUP:
        return try_lookup(req, ctx, op, wf);
    case OP_GETATTR:
        return try_getattr(req, ctx, op, wf);
    case OP_OPENDIR:
        return try_opendir(req, ctx, op, wf);
    case OP_READDIR:
    case OP_READDIRPLUS:
        return try_readdir(req, ctx, op, wf);
    case OP_OPEN:
        return try_open(req, ctx, op, wf);
    case OP_GETXATTR:
        return try_getxattr(req, ctx, op, wf);
    case OP_LISTXATTR:
        return try_listxattr(req, ctx, op, wf);
    }
    fuse_reply_err(req, ENOSYS);
    return 0;
}

/*
 * A request waiting for a unit or a pass: its own copy of the arguments
 * (the handler's point into libfuse's buffer, reused once it returns).
 *
 * Interrupts: while it waits, libfuse may call pending_interrupted() from
 * another thread (holding the request's own lock, with a reference that
 * keeps it alive through a reply). Whoever moves state away from WAITING
 * under lock answers the request: the callback (EINTR), or the side that
 * claims it to run it again or answer it (pending_claim(), which then
 * unregisters the callback; libfuse makes that wait for a callback in
 * progress). A callback libfuse makes from inside fuse_req_interrupt_func()
 * itself (the request was interrupted already) must not reply: the reply
 * would free the request under that function's lock; it only sets early.
 */
enum pending_state { PENDING_WAITING, PENDING_CLAIMED, PENDING_ANSWERED };

struct pending {
    struct defer_waiter w; /* first: the waiter queued on the unit or pass */
    fuse_req_t req;
    struct mount_ctx *ctx;
    struct op op;               /* name and fi point into this record */
    struct fuse_file_info fi;
    pthread_mutex_t lock;
    enum pending_state state;   /* protected by lock */
    bool early;                 /* written by the registering thread only */
    char name[];
};

/* The pending request this thread is registering an interrupt callback for. */
static _Thread_local struct pending *registering;

static void pending_wake(struct defer_waiter *w, int err);

static struct pending *pending_new(fuse_req_t req, struct mount_ctx *ctx, const struct op *op)
{
    size_t len = op->name ? strlen(op->name) + 1 : 0;
    struct pending *p = malloc(sizeof(*p) + len);

    if (!p)
        return NULL;
    memset(p, 0, sizeof(*p));
    p->w.wake = pending_wake;
    p->req = req;
    p->ctx = ctx;
    p->op = *op;
    if (op->name) {
        memcpy(p->name, op->name, len);
        p->op.name = p->name;
    }
    if (op->fi) {
        p->fi = *op->fi;
        p->op.fi = &p->fi;
    }
    pthread_mutex_init(&p->lock, NULL);
    p->state = PENDING_CLAIMED;
    return p;
}

static void pending_free(struct pending *p)
{
    pthread_mutex_destroy(&p->lock);
    free(p);
}

static void pending_interrupted(fuse_req_t req, void *data)
{
    struct pending *p = data;
    bool answer;

    if (registering == p) {
        p->early = true;
        return;
    }
    pthread_mutex_lock(&p->lock);
    answer = p->state == PENDING_WAITING;
    if (answer)
        p->state = PENDING_ANSWERED;
    pthread_mutex_unlock(&p->lock);
    if (answer)
        fuse_reply_err(req, EINTR);
}

/* Take p to answer it or run it again: false if an interrupt answered it
 * already (then only free it). After true no interrupt callback runs for p. */
static bool pending_claim(struct pending *p)
{
    bool ok;

    pthread_mutex_lock(&p->lock);
    ok = p->state != PENDING_ANSWERED;
    if (ok)
        p->state = PENDING_CLAIMED;
    pthread_mutex_unlock(&p->lock);
    if (ok)
        fuse_req_interrupt_func(p->req, NULL, NULL);
    return ok;
}

/* The reply for a wait that ended in err: at unmount (-ECANCELED), EINTR. */
static int wait_errno(int err)
{
    return err == -ECANCELED ? EINTR : read_errno(err);
}

/* Queue p (claimed) on what wf says, or run it again at once if that is no
 * longer needed. Answers p, now or when it is woken, and frees it. */
static void pending_wait(struct pending *p, struct wait_for *wf)
{
    for (;;) {
        int ret;

        pthread_mutex_lock(&p->lock);
        p->state = PENDING_WAITING;
        pthread_mutex_unlock(&p->lock);
        p->early = false;
        registering = p;
        fuse_req_interrupt_func(p->req, pending_interrupted, p);
        registering = NULL;
        if (p->early) {
            if (pending_claim(p))
                fuse_reply_err(p->req, EINTR);
            pending_free(p);
            return;
        }
        ret = wf->pass ? indexer_await(wf->x, wf->m, &p->w)
                       : vfs_await(p->ctx->vfs, wf->unit, &p->w);
        if (ret == 0)
            return; /* queued: pending_wake() answers it (maybe already did) */
        if (!pending_claim(p)) {
            pending_free(p);
            return;
        }
        if (ret < 0) {
            fuse_reply_err(p->req, wait_errno(ret));
            pending_free(p);
            return;
        }
        if (run_op(p->req, p->ctx, &p->op, wf) != DEFER_WAIT) {
            pending_free(p);
            return;
        }
    }
}

/* The unit or pass p waited for is done (err 0: run it again), or failed. */
static void pending_wake(struct defer_waiter *w, int err)
{
    struct pending *p = (struct pending *)w;
    struct wait_for wf;

    if (!pending_claim(p)) {
        pending_free(p);
        return;
    }
    if (err == 0 && fuse_req_interrupted(p->req))
        err = -EINTR;
    if (err < 0) {
        fuse_reply_err(p->req, wait_errno(err));
        pending_free(p);
        return;
    }
    if (run_op(p->req, p->ctx, &p->op, &wf) == DEFER_WAIT)
        pending_wait(p, &wf);
    else
        pending_free(p);
}

/* Answer op now, or queue it on what it waits for. */
static void dispatch(fuse_req_t req, const struct op *op)
{
    struct mount_ctx *ctx = ctx_of(req);
    struct wait_for wf;
    struct pending *p;

    tune_readahead(ctx);
    if (run_op(req, ctx, op, &wf) != DEFER_WAIT)
        return;
    p = pending_new(req, ctx, op);
    if (!p) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    pending_wait(p, &wf);
}

static void fs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct op op = {.kind = OP_LOOKUP, .ino = parent, .name = name};

    dispatch(req, &op);
}

static void fs_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct op op = {.kind = OP_GETATTR, .ino = ino};

    (void)fi;
    dispatch(req, &op);
}

static void fs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct op op = {.kind = OP_OPENDIR, .ino = ino, .fi = fi};

    dispatch(req, &op);
}

static void fs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                          struct fuse_file_info *fi)
{
    struct op op = {.kind = OP_READDIR, .ino = ino, .fi = fi, .size = size, .off = off};

    dispatch(req, &op);
}

static void fs_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                              struct fuse_file_info *fi)
{
    struct op op = {.kind = OP_READDIRPLUS, .ino = ino, .fi = fi, .size = size, .off = off};

    dispatch(req, &op);
}

static void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct op op = {.kind = OP_OPEN, .ino = ino, .fi = fi};

    dispatch(req, &op);
}

static void fs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    member_closed((struct archive_member *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

/* Stored bytes (and passthrough files): read into a buffer, the archive
 * checked unchanged after the read, then copied to the device
 * (member_read_stored(); checked against the chunk CRC table once the
 * member has one). The copy is the price of that check: a splice from the
 * archive's fd would hand its page-cache pages to the device, and a write
 * after any check could still change the bytes served. The read that
 * reaches the member's last byte first checks the whole member's CRC-32,
 * so a full read of a damaged stored member ends in EIO. */
static int read_stored(fuse_req_t req, struct archive_member *m, size_t size, uint64_t off)
{
    unsigned char *buf = NULL;
    size_t at = 0;
    int64_t n = stored_bytes(m, size, off, &buf, &at);

    if (n < 0)
        fuse_reply_err(req, read_errno((int)n));
    else
        fuse_reply_buf(req, buf ? (const char *)buf + at : NULL, (size_t)n);
    free(buf);
    return n < 0 ? (int)n : 0;
}

/* Reply with the chunks covering [off, off + size) as an iovec straight
 * from the cache's buffers: no copy in the daemon. */
static int read_deflate(fuse_req_t req, struct mount_ctx *ctx, struct archive_member *m,
                        size_t size, uint64_t off, bool to_page_cache)
{
    struct cache_chunk *ch[READ_IOV_MAX];
    struct iovec iov[READ_IOV_MAX];
    uint64_t first = off / FS_CHUNK_SIZE, last = (off + size - 1) / FS_CHUNK_SIZE;
    int n = 0, ret = 0;

    memset(iov, 0, sizeof(iov));
    if (last - first >= READ_IOV_MAX)
        last = first + READ_IOV_MAX - 1;
    readahead_note_read(ctx->ra, m, first, last);
    for (uint64_t k = first; k <= last; k++, n++) {
        uint64_t base = k * FS_CHUNK_SIZE;
        uint64_t lo = off > base ? off - base : 0;
        uint64_t hi = off + size - base < FS_CHUNK_SIZE ? off + size - base : FS_CHUNK_SIZE;

        /* a chunk to wait for: another thread reads requests meanwhile */
        ret = member_chunk_cached(m->archive, m, ctx->cache, k, &ch[n]);
        if (ret > 0) {
            loop_blocking();
            /* the decode that makes chunk k may make them all: one wake-up */
            if (k < last)
                member_wait_decoded(m, ctx->cache, last);
            ret = member_chunk(m->archive, m, ctx->cache, k, &ch[n]);
        }
        if (ret < 0)
            break;
        if (hi > ch[n]->len)
            hi = ch[n]->len;
        iov[n].iov_base = ch[n]->data + lo;
        iov[n].iov_len = (size_t)(hi - lo);
    }
    if (ret < 0) {
        fuse_reply_err(req, read_errno(ret));
    } else if (fuse_reply_iov(req, iov, n) == 0 && to_page_cache) {
        /* a chunk served whole is in the page cache now (keep_cache) */
        for (int i = 0; i < n; i++)
            if (iov[i].iov_len == ch[i]->len)
                cache_done(ctx->cache, ch[i]);
    }
    while (n-- > 0)
        cache_put(ctx->cache, ch[n]); /* the reply has copied them into the kernel */
    return ret;
}

static void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    struct mount_ctx *ctx = ctx_of(req);
    struct archive_member *m = (struct archive_member *)(uintptr_t)fi->fh; /* set by fs_op_open() */
    int ret;

    (void)ino;
    if (off < 0 || (uint64_t)off >= m->size || size == 0) {
        fuse_reply_buf(req, NULL, 0);
        atomic_fetch_add_explicit(&fs_counters.reads, 1, memory_order_relaxed);
        return;
    }
    if (size > m->size - (uint64_t)off)
        size = (size_t)(m->size - (uint64_t)off);
    if (m->kind == ARCHIVE_STORED) {
        loop_blocking(); /* a pread: another thread reads requests meanwhile */
        ret = read_stored(req, m, size, (uint64_t)off);
    } else {
        ret = read_deflate(req, ctx, m, size, (uint64_t)off, !(fi->flags & O_DIRECT));
    }
    if (ret < 0) {
        atomic_fetch_add_explicit(&fs_counters.read_errors, 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&fs_counters.reads, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&fs_counters.bytes_served, size, memory_order_relaxed);
}

static void fs_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct mount_ctx *ctx = ctx_of(req);
    struct statvfs sv;
    uint64_t total, files;

    (void)ino;
    vfs_totals(ctx->vfs, &total, &files); /* the archives opened so far */
    memset(&sv, 0, sizeof(sv));
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    sv.f_blocks = (fsblkcnt_t)((total + 4095) / 4096);
    sv.f_files = files;
    sv.f_namemax = 255;
    sv.f_flag = ST_RDONLY;
    fuse_reply_statfs(req, &sv);
}

static void fs_op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
    (void)ino;
    fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

static void fs_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    struct op op = {.kind = OP_GETXATTR, .ino = ino, .name = name, .size = size};

    dispatch(req, &op);
}

static void fs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    struct op op = {.kind = OP_LISTXATTR, .ino = ino, .size = size};

    dispatch(req, &op);
}

const struct fuse_lowlevel_ops ops_lowlevel = {
    .init = fs_op_init,
    .destroy = fs_op_destroy,
    .lookup = fs_op_lookup,
    .getattr = fs_op_getattr,
    .opendir = fs_op_opendir,
    .readdir = fs_op_readdir,
    .readdirplus = fs_op_readdirplus,
    .open = fs_op_open,
    .release = fs_op_release,
    .read = fs_op_read,
    .statfs = fs_op_statfs,
    .access = fs_op_access,
    .getxattr = fs_op_getxattr,
    .listxattr = fs_op_listxattr,
};
