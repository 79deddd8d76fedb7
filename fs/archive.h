/*
 * An opened archive and its members: open a source (zip, gzip and its
 * sizing, plain, URL) with exact sizes, local headers read late, the change
 * check, damage, the chunk CRC table.
 *
 * Ownership: an archive owns its members, its byte source (bs), its path
 * and name; a member owns its name, index, chunk CRC table, parked decoders
 * (through parked.h) and meta; m->archive is borrowed. Lifetimes: an
 * archive and its tree are built before they are published
 * (at mount for a source named on the command line; on first use, in a
 * handler thread under its unit's lock, for one found in a directory
 * source, so builds of different archives run at the same time) and are
 * immutable afterwards, except what is marked otherwise (the per-member
 * decoder pool, the chunk cache and the access points inside each dfx
 * index). Shared state and threads: docs/ARCHITECTURE.md.
 * Locks: everything is immutable after open except what is marked: the
 * serving state under m->lock, which member.c owns (lock order: m->lock,
 * then the cache's shard locks, then the parked registry's lock; the
 * notifier's lock is a leaf; none is held while inflating or reading the
 * archive); located, crcs, meta, changed, verified, stored_damage,
 * bad_chunk, pass_*, ino and was_opened are atomics, as commented.
 * Errors: opens return -EINVAL (not zip or gzip, malformed), -EIO (damaged,
 * truncated), -E2BIG (sizing past max_ratio), -ECANCELED (stop raised),
 * -ENODEV (not a regular file), -EXDEV (beneath: the path leads out),
 * open()'s errors; a URL also the server's: -ENOENT, -EACCES, -EOPNOTSUPP,
 * -EPROTO, -EHOSTUNREACH, -EREMOTEIO, -ETIMEDOUT. archive_check(): -EIO
 * once the archive changed. archive_locate(): a transient error of the
 * byte source, -EIO, -ENOMEM. Each function below says which it returns.
 */
#ifndef NPYFS_FS_ARCHIVE_H
#define NPYFS_FS_ARCHIVE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "dfx.h"
#include "notify.h"
#include "parked.h"

struct bsrc;
struct src;
struct net;
struct dfx_index;

enum archive_member_kind {
    ARCHIVE_STORED, /* bytes at data_offset in the source, served with pread */
    ARCHIVE_DEFLATE, /* raw deflate (zip method 8) or gzip, served through dfx + cache */
};

struct member_busy; /* a decode in progress, private to member.c */
struct member_waiter; /* a reader waiting for one chunk, private to member.c */

struct dfx_crcs; /* a chunk CRC table, format/dfx_crcs.h */
/* A member's .npy header facts for xattrs: parsed by xattr.c on first
 * use, published once in m->meta, freed with the member (archive_meta_free()). */
struct archive_meta {
    bool is_npy;    /* false: no parseable .npy header, only user.npyfs.* */
    char *dtype;    /* owned, escaped: a type string as is (<f8), a struct as the
                     * header's descr ([('a', '<i4')]) */
    char *shape;    /* owned: like numpy's repr of the tuple, e.g. (1000, 3) */
    bool fortran_order;
};

struct archive_member {
    char *name;          /* owned: path inside the archive, as stored (NUL-terminated) */
    size_t name_len;     /* true length (a NUL inside makes the name unusable) */
    uint64_t id;         /* immutable: cache owner key, unique in the daemon */
    enum archive_member_kind kind;
    char method[24];     /* "stored", "deflate", "gzip", or zip's name for it */
    uint64_t size;       /* exact uncompressed size (st_size) */
    uint64_t stored_size; /* compressed bytes in the archive */
    uint64_t data_offset; /* ARCHIVE_STORED: first data byte in the source */
    int unsupported;     /* 0, or the negative errno an open gets (see why) */
    const char *why;     /* static reason text when unsupported */
    bool is_dir;         /* a zip directory entry */
    struct dfx_index *ix; /* owned, ARCHIVE_DEFLATE only */

    /* Decoder pool for sequential readers: protected by lock. The lock is
     * taken before the cache's own lock and the parked lock, and never held
     * while inflating. */
    pthread_mutex_t lock;
    pthread_cond_t idle; /* broadcast when a decode in progress ends */
    /* readers waiting for a chunk in member_chunk(), each on its own
     * condition (member.c): woken with idle, and one by one as a
     * pipelined decode inserts the chunk each one waits for */
    struct member_waiter *waiters;
    /* parked decoders: the slots are protected by the parked registry's
     * lock (parked.h), which is taken with lock held (or by a parker of
     * another member, to drop one) */
    struct parked_slot parked[PARKED_PER_MEMBER];
    struct member_busy *busy; /* decodes in progress (list) */
    int opens;            /* open file handles */
    atomic_bool was_opened; /* opened at least once: the kernel may cache its pages */
    /* atomic: its inode number in the mount, set once when its unit is
     * opened (vfs.c); 0 for a member with no inode (not placed, or
     * outside a mount) */
    atomic_uint_least64_t ino;
    /* the page notifier's queue link (notify.h): protected by its lock */
    struct notify_item inval;
    atomic_bool logged;   /* one log line per damaged member */
    atomic_bool said_unverified; /* logged once: served before its full check */
    atomic_bool said_prefill;    /* logged once: a prefill failed (ops.c) */
    atomic_bool prefilled; /* an open put it (or is putting it) in the page cache;
                            * false again after a failure that may pass (ops.c) */
    uint32_t crc32;       /* immutable: CRC-32 from the zip directory (stored members) */
    atomic_bool verified; /* ARCHIVE_STORED: its CRC-32 was checked and matched */
    atomic_int stored_damage; /* ARCHIVE_STORED: 0, or the errno every read gets */
    /* 1 + the index of the first chunk found not to match its checksum, or
     * 0; for stats (a stored member fails only on those chunks' reads) */
    atomic_uint_least64_t bad_chunk;
    /* atomic: the chunk CRC table (CRC-32 of each FS_CHUNK_SIZE chunk of the
     * uncompressed output), published once by archive_set_crcs() from a
     * full pass that checked the member's CRC-32, or from its saved index;
     * NULL until then. Owned, freed with the member. */
    _Atomic(struct dfx_crcs *) crcs;
    /* The full pass over the member running now, for `npyfs stats`: its
     * start (CLOCK_MONOTONIC, ns; 0: none runs) and the bytes of the member
     * it has checked. Written by that pass alone (archive_pass_begin() and
     * friends), read by anyone: atomics, no lock. */
    atomic_int_least64_t pass_start_ns;
    atomic_uint_least64_t pass_done;
    atomic_bool pass_waiting; /* it waits while reads decode a member for the first time */
    /* atomic: its .npy header for xattrs, parsed on first use and published
     * once by compare-exchange (xattr.c); freed by archive_meta_free(). */
    _Atomic(struct archive_meta *) meta;
    struct archive *archive; /* borrowed: the archive holding the member (set by
                                 * archive_open*(), immutable) */
    /* atomic (release store, acquire loads): data_offset, ix, unsupported and
     * why are final. Set at open, except for the members of a remote zip,
     * whose local headers are read on first need (archive_locate()):
     * until then those fields must not be read. */
    atomic_bool located;
    uint64_t lho;        /* immutable: a zip member's local header offset */
};

/* Read m's local header if that was put off (a remote zip: see located),
 * setting its data offset (and creating its dfx index), or marking it
 * unsupported for a bad header. Every path that reads a member's data,
 * index or unsupported calls this first (opens, ls, xattrs). Returns 0
 * (located, supported or not), or the error of reading the archive
 * (bsrc_transient(), -EIO when it changed, -ENOMEM): try again later.
 * Thread-safe; cheap once located (one acquire load). */
int archive_locate(struct archive *a, struct archive_member *m);

/* A remote archive's bytes could not be fetched (err: bsrc_transient()):
 * not damage, and the next read tries again. Logged once per archive (the
 * daemon's log); stats count every failure. */
void archive_log_fetch_failure(struct archive *a, int err);

static inline bool archive_located(const struct archive_member *m)
{
    return atomic_load_explicit((atomic_bool *)&m->located, memory_order_acquire);
}

/* ARCHIVE_PLAIN: any other file, passed through as one ARCHIVE_STORED member. */
enum archive_kind { ARCHIVE_ZIP, ARCHIVE_GZIP, ARCHIVE_PLAIN };

struct archive {
    /* owned: the source as given: a path, or a URL (which may carry a
     * secret query: show it only through bsrc_name_of()) */
    char *path;
    /* owned: the shown name, for log lines, stats and ls (bsrc_name_of():
     * the path, or the URL without query or credentials) */
    char *name;
    struct bsrc *bs;     /* owned: every read of the archive's bytes, its identity
                          * and change check (bsrc.h) */
    struct src *src;     /* borrowed from bs: the reader format/ takes */
    enum archive_kind kind;
    struct archive_member *members; /* owned, count of them */
    size_t count;
    uint64_t spacing;
    /* the source changed since open (archive_check()): set once, never
     * cleared; from then on every read of its members fails */
    atomic_bool changed;
    /* a transient failure to fetch its bytes was logged (once per archive) */
    atomic_bool said_fetch;
};

/* Bounds on the work of opening an archive: only a gzip file sized by a
 * full pass (below) can cost more than reading its directory or header. */
struct archive_limits {
    uint64_t max_ratio;      /* -o max_ratio=: the full pass stops with -E2BIG once
                              * its output exceeds max_ratio x the file's size
                              * (and ARCHIVE_SIZING_FLOOR); 0: no limit */
    const atomic_bool *stop; /* checked between reads of the full pass (-ECANCELED
                              * once raised); NULL: none */
};

/* Open and parse a source (zip or gzip, told apart by magic). Nothing of the
 * payload is decompressed, except for a gzip file whose content is not a
 * parseable .npy or whose ISIZE disagrees with its header (multi-member):
 * then one full pass finds the exact size (and fills the index on the way),
 * within lim (NULL: no limit). Returns 0, or a negative errno with *out
 * NULL: -EINVAL not a zip or gzip file, -EIO damaged or truncated, -E2BIG
 * the full pass went past lim->max_ratio, -ECANCELED lim->stop was raised,
 * -ENODEV not a regular file (a FIFO, socket or device: checked before it is
 * opened, so it never blocks), others from open() (src_file_open()). */
int archive_open(const char *path, uint64_t spacing, const struct archive_limits *lim,
                    struct archive **out);

/* The same for a file found by walking a directory source: it is opened as
 * rel beneath the directory dirfd and never outside it (symlinks included:
 * -EXDEV if the path now leads out, for example a directory swapped for a
 * symlink since the walk). path, the same file's full path, names it in
 * messages. */
int archive_open_beneath(int dirfd, const char *rel, const char *path, uint64_t spacing,
                            const struct archive_limits *lim, struct archive **out);

/* Open the remote archive at url (http://, https://, s3:// object) through
 * net (net.h): one request where the server allows it (its end and its
 * first 64 KiB, bsrc_open_url()), then parsed as archive_open() does.
 * Returns 0, or a negative errno with *out NULL: those of
 * archive_open() (-EINVAL, -EIO, -E2BIG, -ECANCELED), and those of the
 * server (bsrc_open_url(): -ENOENT, -EACCES, -EOPNOTSUPP no Range
 * support, -EPROTO, -EHOSTUNREACH, ...), for which why (len bytes) gets the
 * server's problem (no secret, no URL); else why is "". */
int archive_open_url(struct net *net, const char *url, uint64_t spacing,
                        const struct archive_limits *lim, struct archive **out, char *why,
                        size_t len);

/* What an error of archive_open() means, for a person: a static text, or
 * a text made in buf (-E2BIG names max_ratio, the limit the open had), or
 * strerror_r() into buf. */
const char *archive_problem(int err, uint64_t max_ratio, char *buf, size_t len);
void archive_close(struct archive *a);

/* Open a regular file, rel beneath dirfd as in archive_open_beneath(),
 * as a one-member ARCHIVE_PLAIN archive whose member, called name, is the
 * file's bytes unchanged (ARCHIVE_STORED at offset 0, size from fstat, no CRC to
 * check: marked verified). Returns 0, or a negative errno with *out NULL:
 * -ENODEV not a regular file (never opened), -EXDEV the path leads out of
 * dirfd, others from open(). */
int archive_open_plain(int dirfd, const char *rel, const char *path, const char *name,
                          uint64_t spacing, struct archive **out);

/* Is the archive's file the same as when it was opened: device, inode,
 * size, mtime and ctime to the nanosecond? Returns 0, or -EIO once it is
 * not (every later call too; logged once, and the kernel is asked to drop
 * the cached pages of every member opened so far). Bytes read from it
 * before a call that returns 0 are the content it had at open (see the
 * comment in archive.c), so every path that reads the archive calls this
 * after its reads and before it uses their bytes. Cheap (one fstat);
 * thread-safe. A replaced archive (renamed over, or deleted) is not a
 * change: the open fd still holds the old file. Other changes of its
 * status (chmod, a new link, a rename of it) count as changes. */
int archive_check(struct archive *a);

/* 0, or the negative errno that reads of a member from *bad_from on get:
 * damage found by any reader, the indexer, or a stored member's CRC check. */
int archive_damage(struct archive_member *m, uint64_t *bad_from);

/* The progress of a full pass over m (see pass_start_ns): called by the
 * pass's thread when it starts, as it goes (done: bytes of m checked so
 * far), and when it ends whatever the outcome. */
static inline void archive_pass_begin(struct archive_member *m)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    atomic_store(&m->pass_done, 0);
    atomic_store(&m->pass_waiting, false);
    atomic_store(&m->pass_start_ns, (int_least64_t)t.tv_sec * 1000000000 + t.tv_nsec + 1);
}
static inline void archive_pass_progress(struct archive_member *m, uint64_t done)
{
    atomic_store_explicit(&m->pass_done, done, memory_order_relaxed);
}
static inline void archive_pass_wait(struct archive_member *m, bool waiting)
{
    atomic_store_explicit(&m->pass_waiting, waiting, memory_order_relaxed);
}
static inline void archive_pass_end(struct archive_member *m)
{
    atomic_store(&m->pass_waiting, false);
    atomic_store(&m->pass_start_ns, 0);
}

/* Publish m's chunk CRC table: takes t (owned) in every case, and keeps it
 * only if m has none yet and t fits m (size, FS_CHUNK_SIZE chunks). From
 * then on every chunk decoded or read is checked against it. Returns
 * whether t was kept. Thread-safe. */
bool archive_set_crcs(struct archive_member *m, struct dfx_crcs *t);

/* Damage d was found in m (d->error < 0, reads from d->from on fail;
 * d->kind says what, for stats): record it in its index (ARCHIVE_DEFLATE)
 * so later reads fail, and have the kernel drop the pages of m it cached.
 * Thread-safe. */
void archive_condemn(struct archive_member *m, const struct dfx_damage *d);

/* A member's damage as stats and the log show it: its index's first
 * damage, a stored member's CRC-32 mismatch, or else the first chunk that
 * failed its checksum (a stored member's reads fail only on such chunks, so
 * it is not member damage, but it is damage to show); and a changed archive
 * before all of them (every read of it fails, whatever else was found). */
struct member_damage {
    struct dfx_damage d; /* d.error 0: none */
    bool changed;        /* the archive changed since the mount */
    bool chunk_only;     /* a stored member's bad chunk: only its reads fail */
};
void archive_member_damage(const struct archive *a, struct archive_member *m,
                           struct member_damage *out);

/* The damage in words: what was found, where, and which reads fail. */
void archive_damage_text(const struct member_damage *dm, char *buf, size_t size);

/* Log m's damage, once per member (m->logged), as stats describes it, and
 * how it was found ("by a read"); nothing for a changed archive (logged
 * when the change was found). fallback: what to say if no damage is on
 * record (the error of the decode that failed, err). */
void archive_log_damage(struct archive *a, struct archive_member *m, const char *found,
                        int err);

/* archive.c, through notify.c: have the kernel drop every page of m's
 * file it cached (damage was found in m, or its archive changed), so later
 * reads come to the daemon and fail. Queued for the notifier thread, which
 * FUSE init starts and destroy joins: fuse_lowlevel_notify_inval_inode()
 * called from a READ handler of the same inode can deadlock (the kernel
 * holds the pages of that read locked until it is answered). Does nothing
 * for a member never opened or without an inode, or with no notifier
 * running (outside a mount). Takes only the queue's leaf lock: callable
 * from any thread with any lock held. */
void archive_drop_pages(struct archive_member *m);

/* Output a sizing pass may always decode, whatever max_ratio (a few ms). */
#define ARCHIVE_SIZING_FLOOR (1ull << 20)

/* archive.c: free what xattr_get() cached in m->meta. Accepts NULL. */
void archive_meta_free(struct archive_meta *meta);

#endif
