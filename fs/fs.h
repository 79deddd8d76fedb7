/*
 * The daemon's shared types: an opened archive (its members, ready to read),
 * the inode tree built over it, and the context the FUSE handlers share.
 *
 * Lifetimes: an archive and its tree are built before they are published
 * (at mount for a source named on the command line; on first use, in a
 * handler thread under its unit's lock, for one found in a directory
 * source, so builds of different archives run at the same time) and are
 * immutable afterwards, except what is marked otherwise (the per-member
 * decoder pool, the chunk cache and the access points inside each dfx
 * index). Shared state and threads: docs/ARCHITECTURE.md.
 */
#ifndef NPYFS_FS_FS_H
#define NPYFS_FS_FS_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "bsrc.h"
#include "cache.h"
#include "dfx.h"
#include "net.h"
#include "notify.h"
#include "parked.h"
#include "source.h"

/* Bytes per chunk of the decompressed-data cache: the unit a decode produces
 * and the cache evicts. A random read decodes from an access point to the end
 * of the chunk holding its offset, so this adds to random-read latency. */
#define FS_CHUNK_SIZE (128u << 10)
/* Default -o cache_size=. The kernel page cache keeps what was served, so
 * the chunk cache needs room for what readahead decodes ahead of readers (a
 * quarter of it, readahead.c: 8 MiB, two segments of 1 to 2 MiB for
 * each of up to 3 or 4 workers) and the chunks decoded on the way to a
 * random read. Small also means fast: once full, the cache recycles its
 * buffers, while a fresh buffer costs a page fault per 4 KiB (256M made the
 * cold passes over a 320 MB member 10 to 20% slower: 80% of their buffers
 * were fresh). */
#define FS_DEFAULT_CACHE_SIZE (32ull << 20)
/* Most readahead workers -o threads= accepts. */
#define FS_THREADS_MAX 256
/* Default kernel readahead per file (-o readahead=), in place of the
 * kernel's 128 KiB for FUSE. It is also the size of the read-around the
 * kernel asks for on an mmap page fault, all of which is decoded before the
 * faulting page is released: a random element read through mmap decodes
 * about spacing/2 + readahead + 64 KiB. 256K against 512K: a fifth less
 * decoding per mmap fault (835 against 1064 KiB at the default spacing),
 * no cost to deflate passes (the readahead workers decode ahead of
 * sequential readers whatever the size of the kernel's requests), a few
 * percent on stored ones. 128K decodes 710 KiB, but a stored member's cold
 * pass (one pread per READ) was about 20% slower. */
#define FS_DEFAULT_READAHEAD (256ull << 10)
/* The spacing of the indexes the indexer builds (the background indexer,
 * `npyfs index`, a pass an open waits for: indexer.c), unless -o spacing=
 * is given. Their windows go to the index file, not memory, so this costs
 * disk (12-15% of the compressed size, 3-11% of the uncompressed size,
 * against 3-4% and 1-3% at 1 MiB; and about 45% more CPU for the pass:
 * each point is found by a slower search and its window compressed) and
 * makes random reads cheap: a read decodes spacing/2 on average
 * before reaching its offset, so a cold 4 KiB read decodes about 225 KiB
 * against 620 KiB at 1 MiB. Points that reads record in memory past the
 * end of an index stay -o spacing= apart (default DFX_DEFAULT_SPACING,
 * 1 MiB): they cost memory (index_mem), and recording them costs the first
 * pass on the read path. So do the points of an indexer without an index
 * directory, which uses the mount's spacing. */
#define FS_INDEX_SPACING (256u << 10)
/* Default -o index_mem=: the most memory the access-point windows that
 * reads record may take, mount-wide (fs_window_budget). */
#define FS_DEFAULT_INDEX_MEM (64ull << 20)
/* Default -o index_max=: the size cap of the index directory. An index
 * file takes about 14% of its member's compressed size at the default
 * spacing of saved indexes, FS_INDEX_SPACING (measured: 12-15% for float64,
 * int32 and float32 arrays; 3-11% of the uncompressed size; 3-4% at 1 MiB),
 * so 4 GiB holds the indexes of some 30 GiB of archives. */
#define FS_DEFAULT_INDEX_MAX (4ull << 30)
/* `npyfs index --prune`: an index file whose archive cannot be checked is
 * removed once it was not used (saved or loaded) for this many days. */
#define FS_PRUNE_UNUSED_DAYS 30

/* Room for one more element in the array at *(T **)arrp, which holds count
 * of *cap elements of size bytes: doubles the capacity (from first) when
 * full. Returns 0, or -ENOMEM with the array unchanged. Used by the trees
 * built at mount. */
static inline int fs_grow(void *arrp, size_t *cap, size_t count, size_t size, size_t first)
{
    void *arr, *grown;
    size_t n;

    if (count < *cap)
        return 0;
    n = *cap ? *cap * 2 : first;
    memcpy(&arr, arrp, sizeof(arr));
    grown = realloc(arr, n * size);
    if (!grown)
        return -ENOMEM;
    memcpy(arrp, &grown, sizeof(grown));
    *cap = n;
    return 0;
}

enum fs_kind {
    FS_STORED, /* bytes at data_offset in the source, served with pread */
    FS_DEFLATE, /* raw deflate (zip method 8) or gzip, served through dfx + cache */
};

struct fs_busy; /* a decode in progress, private to member.c */
struct chunk_waiter; /* a reader waiting for one chunk, private to member.c */

struct dfx_crcs; /* a chunk CRC table, format/dfx_crcs.h */
/* A member's .npy header facts for xattrs: parsed by xattr.c on first
 * use, published once in m->meta, freed with the member (fs_meta_free()). */
struct fs_meta {
    bool is_npy;    /* false: no parseable .npy header, only user.npyfs.* */
    char *dtype;    /* owned, escaped: a type string as is (<f8), a struct as the
                     * header's descr ([('a', '<i4')]) */
    char *shape;    /* owned: like numpy's repr of the tuple, e.g. (1000, 3) */
    bool fortran_order;
};
struct fs_ra;
struct fs_defer; /* the opener pool, defer.c (below) */

struct fs_member {
    char *name;          /* owned: path inside the archive, as stored (NUL-terminated) */
    size_t name_len;     /* true length (a NUL inside makes the name unusable) */
    uint64_t id;         /* immutable: cache owner key, unique in the daemon */
    enum fs_kind kind;
    char method[24];     /* "stored", "deflate", "gzip", or zip's name for it */
    uint64_t size;       /* exact uncompressed size (st_size) */
    uint64_t stored_size; /* compressed bytes in the archive */
    uint64_t data_offset; /* FS_STORED: first data byte in the source */
    int unsupported;     /* 0, or the negative errno an open gets (see why) */
    const char *why;     /* static reason text when unsupported */
    bool is_dir;         /* a zip directory entry */
    struct dfx_index *ix; /* owned, FS_DEFLATE only */

    /* Decoder pool for sequential readers: protected by lock. The lock is
     * taken before the cache's own lock and the parked lock, and never held
     * while inflating. */
    pthread_mutex_t lock;
    pthread_cond_t idle; /* broadcast when a decode in progress ends */
    /* readers waiting for a chunk in fs_member_chunk(), each on its own
     * condition (member.c): woken with idle, and one by one as a
     * pipelined decode inserts the chunk each one waits for */
    struct chunk_waiter *waiters;
    /* parked decoders: the slots are protected by the parked registry's
     * lock (parked.h), which is taken with lock held (or by a parker of
     * another member, to drop one) */
    struct parked_slot parked[PARKED_PER_MEMBER];
    struct fs_busy *busy; /* decodes in progress (list) */
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
    uint32_t crc32;       /* immutable: CRC-32 from the zip directory (stored members) */
    atomic_bool verified; /* FS_STORED: its CRC-32 was checked and matched */
    atomic_int stored_damage; /* FS_STORED: 0, or the errno every read gets */
    /* 1 + the index of the first chunk found not to match its checksum, or
     * 0; for stats (a stored member fails only on those chunks' reads) */
    atomic_uint_least64_t bad_chunk;
    /* atomic: the chunk CRC table (CRC-32 of each FS_CHUNK_SIZE chunk of the
     * uncompressed output), published once by fs_member_set_crcs() from a
     * full pass that checked the member's CRC-32, or from its saved index;
     * NULL until then. Owned, freed with the member. */
    _Atomic(struct dfx_crcs *) crcs;
    /* The full pass over the member running now, for `npyfs stats`: its
     * start (CLOCK_MONOTONIC, ns; 0: none runs) and the bytes of the member
     * it has checked. Written by that pass alone (fs_pass_begin() and
     * friends), read by anyone: atomics, no lock. */
    atomic_int_least64_t pass_start_ns;
    atomic_uint_least64_t pass_done;
    /* atomic: its .npy header for xattrs, parsed on first use and published
     * once by compare-exchange (xattr.c); freed by fs_meta_free(). */
    _Atomic(struct fs_meta *) meta;
    struct fs_archive *archive; /* borrowed: the archive holding the member (set by
                                 * fs_archive_open*(), immutable) */
    /* atomic (release store, acquire loads): data_offset, ix, unsupported and
     * why are final. Set at open, except for the members of a remote zip,
     * whose local headers are read on first need (fs_member_locate()):
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
int fs_member_locate(struct fs_archive *a, struct fs_member *m);

static inline bool fs_member_located(const struct fs_member *m)
{
    return atomic_load_explicit((atomic_bool *)&m->located, memory_order_acquire);
}

/* FS_SRC_PLAIN: any other file, passed through as one FS_STORED member. */
enum fs_source_kind { FS_SRC_ZIP, FS_SRC_GZIP, FS_SRC_PLAIN };

struct fs_archive {
    /* owned: the source as given: a path, or a URL (which may carry a
     * secret query: show it only through bsrc_name_of()) */
    char *path;
    /* owned: the shown name, for log lines, stats and ls (bsrc_name_of():
     * the path, or the URL without query or credentials) */
    char *name;
    struct bsrc *bs;     /* owned: every read of the archive's bytes, its identity
                          * and change check (bsrc.h) */
    struct src *src;     /* borrowed from bs: the reader format/ takes */
    enum fs_source_kind kind;
    struct fs_member *members; /* owned, count of them */
    size_t count;
    uint64_t spacing;
    /* the source changed since open (fs_archive_check()): set once, never
     * cleared; from then on every read of its members fails */
    atomic_bool changed;
    /* a transient failure to fetch its bytes was logged (once per archive) */
    atomic_bool said_fetch;
};

/* Bounds on the work of opening an archive: only a gzip file sized by a
 * full pass (below) can cost more than reading its directory or header. */
struct fs_open_limits {
    uint64_t max_ratio;      /* -o max_ratio=: the full pass stops with -E2BIG once
                              * its output exceeds max_ratio x the file's size
                              * (and FS_SIZING_FLOOR); 0: no limit */
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
int fs_archive_open(const char *path, uint64_t spacing, const struct fs_open_limits *lim,
                    struct fs_archive **out);

/* The same for a file found by walking a directory source: it is opened as
 * rel beneath the directory dirfd and never outside it (symlinks included:
 * -EXDEV if the path now leads out, for example a directory swapped for a
 * symlink since the walk). path, the same file's full path, names it in
 * messages. */
int fs_archive_open_beneath(int dirfd, const char *rel, const char *path, uint64_t spacing,
                            const struct fs_open_limits *lim, struct fs_archive **out);

/* Open the remote archive at url (http://, https://, s3:// object) through
 * net (net.h): one request where the server allows it (its end and its
 * first 64 KiB, bsrc_open_url()), then parsed as fs_archive_open() does.
 * Returns 0, or a negative errno with *out NULL: those of
 * fs_archive_open() (-EINVAL, -EIO, -E2BIG, -ECANCELED), and those of the
 * server (bsrc_open_url(): -ENOENT, -EACCES, -EOPNOTSUPP no Range
 * support, -EPROTO, -EHOSTUNREACH, ...), for which why (len bytes) gets the
 * server's problem (no secret, no URL); else why is "". */
int fs_archive_open_url(struct net *net, const char *url, uint64_t spacing,
                        const struct fs_open_limits *lim, struct fs_archive **out, char *why,
                        size_t len);

/* What an error of fs_archive_open() means, for a person: a static text, or
 * a text made in buf (-E2BIG names max_ratio, the limit the open had), or
 * strerror_r() into buf. */
const char *fs_open_problem(int err, uint64_t max_ratio, char *buf, size_t len);
void fs_archive_free(struct fs_archive *a);

/* Open a regular file, rel beneath dirfd as in fs_archive_open_beneath(),
 * as a one-member FS_SRC_PLAIN archive whose member, called name, is the
 * file's bytes unchanged (FS_STORED at offset 0, size from fstat, no CRC to
 * check: marked verified). Returns 0, or a negative errno with *out NULL:
 * -ENODEV not a regular file (never opened), -EXDEV the path leads out of
 * dirfd, others from open(). */
int fs_archive_open_plain(int dirfd, const char *rel, const char *path, const char *name,
                          uint64_t spacing, struct fs_archive **out);

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
int fs_archive_check(struct fs_archive *a);

/* 0, or the negative errno that reads of a member from *bad_from on get:
 * damage found by any reader, the indexer, or a stored member's CRC check. */
int fs_member_damage(struct fs_member *m, uint64_t *bad_from);

/* FS_STORED: check the member's CRC-32 against the zip directory once (the
 * first read that reaches its last byte calls this). Returns 0, or -EIO on a
 * mismatch, which every later read of the member gets too. */
int fs_member_verify_stored(struct fs_archive *a, struct fs_member *m);

/* The progress of a full pass over m (see pass_start_ns): called by the
 * pass's thread when it starts, as it goes (done: bytes of m checked so
 * far), and when it ends whatever the outcome. */
static inline void fs_pass_begin(struct fs_member *m)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    atomic_store(&m->pass_done, 0);
    atomic_store(&m->pass_start_ns, (int_least64_t)t.tv_sec * 1000000000 + t.tv_nsec + 1);
}
static inline void fs_pass_progress(struct fs_member *m, uint64_t done)
{
    atomic_store_explicit(&m->pass_done, done, memory_order_relaxed);
}
static inline void fs_pass_end(struct fs_member *m)
{
    atomic_store(&m->pass_start_ns, 0);
}

/* FS_STORED (zip): the full pass over a stored member: pread every byte,
 * build its chunk CRC table and check the member's CRC-32 with it. A match
 * publishes the table (and marks the member verified); a mismatch is logged
 * and condemns the member (-EIO for every read). Returns 0, -EIO, -ECANCELED
 * (stop raised, checked between reads; stop may be NULL), -ENOMEM. */
int fs_member_scan_stored(struct fs_archive *a, struct fs_member *m, atomic_bool *stop);

/* Publish m's chunk CRC table: takes t (owned) in every case, and keeps it
 * only if m has none yet and t fits m (size, FS_CHUNK_SIZE chunks). From
 * then on every chunk decoded or read is checked against it. Returns
 * whether t was kept. Thread-safe. */
bool fs_member_set_crcs(struct fs_member *m, struct dfx_crcs *t);

/* FS_STORED: read len bytes at off (clamped to the member's end) into a
 * new buffer *out (the caller frees it), where they start at *out + *at.
 * With a chunk CRC table, the whole chunks covering them are read and each
 * is checked against it: a mismatch is logged once and the read fails (only
 * reads that touch that chunk do). The archive is checked
 * (fs_archive_check()) after the read, so the bytes are never a mix of old
 * and new content; the caller has checked fs_member_damage(). Returns the
 * count (0 past the end, *out NULL), or -EIO (a mismatch, a changed
 * archive), -ENOMEM. Thread-safe. */
int64_t fs_member_read_stored(struct fs_archive *a, struct fs_member *m, uint64_t off, size_t len,
                              unsigned char **out, size_t *at);

/* Read the first bytes (up to len) of a member's uncompressed data: used by
 * `ls` to parse .npy headers. Returns the count or a negative errno. */
int64_t fs_member_peek(struct fs_archive *a, struct fs_member *m, void *buf, size_t len);

/* npy_read_header()'s read function (format/npy.h) over the first bytes of
 * a member (fs_member_peek()): arg is a struct fs_member_ref. Used by ls
 * and xattrs to parse a member's .npy header. */
struct fs_member_ref {
    struct fs_archive *a;
    struct fs_member *m;
};
int64_t fs_member_prefix_read(void *arg, unsigned char *buf, size_t len);

/* Up to FS_READ_IOV_MAX references for one read of [off, off + len) of a
 * FS_DEFLATE member: chunk refs in order. */
#define FS_READ_IOV_MAX 64

/* Get chunk idx of a FS_DEFLATE member with a reference for the caller (put
 * it with cache_put()). Decodes it if the cache misses, reusing a parked
 * decoder when one is close before it. Thread-safe. Returns 0 or -EIO
 * (damaged), -ENOMEM. */
int fs_member_chunk(struct fs_archive *a, struct fs_member *m, struct cache *c, uint64_t idx,
                    struct cache_chunk **out);

/* A remote member (else nothing): start fetching the compressed bytes that
 * decoding output [from, to) will need (bsrc_advise(), from the access
 * points around it). Never blocks on I/O; thread-safe. */
void fs_member_advise(struct fs_member *m, uint64_t from, uint64_t to);

/* Bookkeeping for open handles: the last close frees parked decoders. */
void fs_member_opened(struct fs_member *m);
void fs_member_closed(struct fs_member *m);

/* Damage d was found in m (d->error < 0, reads from d->from on fail;
 * d->kind says what, for stats): record it in its index (FS_DEFLATE) so
 * later reads fail, and have the kernel drop the pages of m it cached.
 * Thread-safe. */
void fs_member_condemn(struct fs_member *m, const struct dfx_damage *d);

/* archive.c, through notify.c: have the kernel drop every page of m's
 * file it cached (damage was found in m, or its archive changed), so later
 * reads come to the daemon and fail. Queued for the notifier thread, which
 * FUSE init starts and destroy joins: fuse_lowlevel_notify_inval_inode()
 * called from a READ handler of the same inode can deadlock (the kernel
 * holds the pages of that read locked until it is answered). Does nothing
 * for a member never opened or without an inode, or with no notifier
 * running (outside a mount). Takes only the queue's leaf lock: callable
 * from any thread with any lock held. */
void fs_pages_drop(struct fs_member *m);

/* Readahead: decode chunks first..last of a FS_DEFLATE member into the cache
 * with a fresh decoder started at the access point at output offset point
 * (chunk first-1 or earlier must not be needed: the caller produces whole
 * segments). Chunks already cached at either end are skipped; if a reader is
 * decoding inside the range, nothing is done. Readers that need a chunk of
 * the range meanwhile wait for it. Errors are not logged: a reader that needs
 * the chunk decodes it itself and reports. Thread-safe. Returns 0, or a
 * negative errno (nothing after the failing chunk was inserted). */
int fs_member_produce(struct fs_archive *a, struct fs_member *m, struct cache *c,
                      uint64_t point, uint64_t first, uint64_t last);

/* Readahead past the index frontier, where there are no segments: take the
 * parked decoder furthest along at or after chunk first's start and before
 * chunk last's end (left there by a sequential reader or by an earlier call),
 * continue it through chunk last, inserting every whole chunk, and park it
 * again. After each chunk, more (if not NULL; called with no lock held) may
 * raise *last to keep going, given the next chunk; it returns false to stop
 * there. Readers that need one of those chunks, or one just after them, wait
 * for it. Does nothing if no such decoder is parked or another decode touches
 * the range, and never extends into another decode. Errors are not logged;
 * the decoder is dropped and nothing after the failing chunk is inserted.
 * Thread-safe. Returns 0 or a negative errno. */
int fs_member_continue(struct fs_archive *a, struct fs_member *m, struct cache *c, uint64_t first,
                       uint64_t last, bool (*more)(void *arg, uint64_t next, uint64_t *last),
                       void *arg);

/* Inode tree. Inode numbers are node index + 1; the root is 1 (FUSE_ROOT_ID). */
struct fs_node {
    char *name;            /* owned: one path component ("" for the root) */
    uint64_t parent;       /* inode of the parent directory */
    bool is_dir;
    struct fs_member *member; /* files: borrowed from the archive */
    uint64_t *children;    /* dirs: owned, inode numbers sorted by name */
    size_t nchildren, cap;
    uint32_t nsubdirs;
};

struct fs_tree {
    struct fs_node *nodes; /* owned */
    size_t count, cap;
    size_t skipped;        /* members whose names could not be placed */
};

/* Build the tree for an archive: zip members by their path (directories made
 * from '/'), the gzip member at the root. Names are placed by the rule in
 * README.md (Names). Touches only t and reads a: builds of different
 * archives may run at the same time (lazily opened archives are built in
 * handler threads). Returns 0 or -ENOMEM. */
int fs_tree_build(struct fs_tree *t, struct fs_archive *a);
void fs_tree_destroy(struct fs_tree *t);

/* The node for an inode, or NULL. */
struct fs_node *fs_tree_node(struct fs_tree *t, uint64_t ino);

/* The child of dir called name, or 0. */
uint64_t fs_tree_lookup(struct fs_tree *t, uint64_t dir, const char *name);

/* -o index=: build missing indexes in a background thread at idle priority,
 * or only as reads go. */
enum fs_index_mode { FS_INDEX_BACKGROUND, FS_INDEX_LAZY };

/* -o verify=: auto serves a member of at most verify_max bytes only once it
 * has its chunk CRC table (its first open waits for a full pass over it) and
 * a bigger one at once; strict does the former for every member; lazy the
 * latter (chunks are checked once a member's table exists). */
enum fs_verify_mode { FS_VERIFY_AUTO, FS_VERIFY_LAZY, FS_VERIFY_STRICT };

/* Defaults of -o max_ratio= and -o verify_max=. A full pass decodes about
 * 300 MB/s on one core here, so checking a 128 MiB member before its first
 * read costs about 0.4 s. */
#define FS_DEFAULT_MAX_RATIO 100
/* Output a sizing pass may always decode, whatever max_ratio (a few ms). */
#define FS_SIZING_FLOOR (1ull << 20)
#define FS_DEFAULT_VERIFY_MAX (128ull << 20)

/* Mount-wide options and state. */
struct fs_opts {
    uint64_t cache_size;
    uint64_t spacing;
    char *index_dir;               /* owned: -o index_dir=, or NULL for the default */
    enum fs_index_mode index_mode; /* -o index= */
    enum fs_verify_mode verify;    /* -o verify= */
    uint64_t verify_max;           /* -o verify_max=, bytes (verify=auto) */
    uint64_t max_ratio;            /* -o max_ratio= (struct fs_open_limits); 0: none */
    unsigned threads;   /* readahead workers (0: none); default online cores */
    uint64_t readahead; /* kernel readahead per file in bytes; 0: the kernel's */
    uint64_t max_read;  /* -o max_read= (also given to libfuse), or 0 */
    uint64_t index_mem; /* -o index_mem=: fs_window_budget's limit */
    bool index_given;   /* -o index= was given: remote archives follow it (without
                         * it they are indexed lazily: a background pass would
                         * download every archive whole) */
    /* Remote sources: the -o options of the network side (its strings
     * owned by the CLI), -o index_url= (owned), and the network side itself
     * (borrowed: made by the CLI when a source is a URL, else NULL). */
    struct net_opts net_opts;
    char *index_url;
    struct net *net;
    char *index_out;    /* npyfs index -o index_out=FILE (owned), or NULL */
    uint64_t index_max; /* -o index_max=: the index directory's size cap, 0: none */
    bool spacing_given; /* -o spacing= was given: the indexer builds with it too
                         * (not FS_INDEX_SPACING), and npyfs index rebuilds
                         * files of another spacing */
};

struct fuse_session;

struct fs_ctx {
    struct fs_vfs *vfs;         /* owned: the namespace and every archive in it */
    struct fuse_session *se;    /* borrowed: the session, set before it runs (the
                                 * notifier sends through it) */
    struct cache *cache;        /* owned */
    struct fs_opts opts;
    const char *source;         /* borrowed: the first source as given, for log lines */
    char *mountpoint;           /* owned: absolute path (finds the mount's bdi), or NULL */
    struct fs_ra *ra;           /* owned: readahead workers, from FUSE init to destroy */
    uid_t uid;
    gid_t gid;
};

/*
 * The mount's namespace (vfs.c): an outer tree built at mount from the
 * sources (real directories walked with lstat only, archive directories,
 * .npy.gz files, passthrough files), immutable afterwards, plus one unit per
 * archive or file in it. A unit is opened at most once, on first use (an
 * archive named on the command line: at mount), and its result, the archive
 * with its own immutable fs_tree or an errno, is published atomically.
 * Inode numbers: an outer node's is its index + 1 (< 2^32); a node inside
 * unit k's tree is (k + 1) << 32 | its local inode, except the tree's root,
 * which is the unit's node in the outer tree. Rules in README.md (Sources).
 */
struct fs_vfs;
struct fs_indexer;

/* One source named on the command line, checked by the caller. */
struct fs_source {
    const char *path;           /* borrowed: as given (a URL for a remote source) */
    const char *name;           /* borrowed: its entry at the root (several sources) */
    struct fs_archive *archive; /* an archive file or object, opened: owned by the
                                 * vfs from fs_vfs_new() on, even when it fails; NULL
                                 * for a directory or an s3:// prefix */
    /* an s3:// prefix (path): its archive keys (net_list()), borrowed during
     * fs_vfs_new(); NULL for anything else */
    const struct s3_listing *listing;
};

/* Build the namespace of n sources. One source: its content at the root;
 * several: each at the root under its name (names must differ). Walks the
 * directories, and turns an s3:// prefix's keys into a tree the same way
 * (split at '/'; a key that cannot be placed, such as one with an empty,
 * "." or ".." component, or a name taken twice, is logged and skipped;
 * its archives are opened on first use through opts->net), (errors below
 * the top are logged and the entry skipped) and
 * sets up the indexers of the opened archives. opts and cache (the chunk
 * cache, which full passes run for a waiting open may fill; NULL: none)
 * must outlive the vfs. Returns 0, or a negative errno with *out NULL and
 * *bad the index of the source at fault (-ENOMEM, a directory's opendir()
 * error, -EFBIG more entries than inode numbers). */
int fs_vfs_new(struct fs_source *srcs, size_t n, const struct fs_opts *opts, struct cache *cache,
               struct fs_vfs **out, size_t *bad);
/* Accepts NULL; stops the indexers first if needed. */
void fs_vfs_free(struct fs_vfs *v);

/* FUSE init: start the opener pool (struct fs_defer) and the background
 * indexers of the archives opened so far (archives opened later start theirs
 * at once). FUSE destroy: raise the stop flag that sizing and verification
 * passes check between reads (they end with -ECANCELED), answer every request
 * still waiting (fs_waiter woken with -ECANCELED), join the pool, then stop
 * and join every indexer; none starts afterwards. */
void fs_vfs_start(struct fs_vfs *v);
void fs_vfs_stop(struct fs_vfs *v);

/* Returned (positive) by a call that cannot answer yet: the request must
 * wait for something slow (a unit to be opened, a full pass over a member),
 * which the caller queues it on (fs_vfs_await(), fs_indexer_await()) so
 * that no handler thread waits. */
#define FS_WAIT 1

/* Every handler below is thread-safe; they return 0 or a negative errno:
 * -ENOENT no such inode or name, -ENOTDIR, -EISDIR, -EIO an archive or
 * file that cannot be opened (logged once), -ENOMEM / -EMFILE (not
 * remembered: the next call tries again). Those that need a unit open
 * return FS_WAIT instead of opening it, with *need the unit to wait for
 * (fs_vfs_await()); a unit already open costs nothing more (one atomic
 * load). */

/* The child of dir called name. Needs an archive looked into open, never a
 * directory's archives by themselves, nor an .npy.gz: the kernel sends the
 * lookups of one directory one at a time, so a lookup that waited for a file
 * to be sized would hold up its neighbours. -EIO for an .npy.gz known not to
 * open. */
int fs_vfs_lookup(struct fs_vfs *v, uint64_t dir, const char *name, uint64_t *ino,
                  uint32_t *need);

/* Are ino's attributes final? 0 yes; FS_WAIT: an .npy.gz not opened yet,
 * whose size is known only once it is (*need, for fs_vfs_await()); -EIO: one
 * that cannot be opened. Thread-safe, cheap (one atomic load). */
int fs_vfs_attr_ready(struct fs_vfs *v, uint64_t ino, uint32_t *need);

/* Attributes. Owner, group and permission bits are the source's at mount
 * (its stat, set-user-ID and set-group-ID dropped): a walked directory's
 * own; a file's (Y.npy of Y.npy.gz, a passthrough file) its file's; an
 * archive shown as a directory, and the directories inside it, the
 * archive's with x added wherever r is; its members exactly the archive's.
 * The root of several sources, or of one .npy.gz, is 0555 and the mounting
 * user's. Opens nothing: an .npy.gz not opened yet shows its file's size
 * (see fs_vfs_attr_ready()). */
int fs_vfs_getattr(struct fs_vfs *v, uint64_t ino, struct stat *st);

/* A directory being listed: opendir fills it (an archive directory needs its
 * unit open: FS_WAIT), fs_vfs_dirent() gives its children 0..count-1 in name
 * order. */
struct fs_dir {
    uint64_t ino, parent; /* the directory's inode and its parent's */
    size_t count;         /* children */
    const void *node;     /* private to vfs.c: the directory's node */
    const void *unit;     /* private: its unit, NULL in the outer tree */
};
int fs_vfs_opendir(struct fs_vfs *v, uint64_t ino, struct fs_dir *d, uint32_t *need);
void fs_vfs_dirent(struct fs_vfs *v, const struct fs_dir *d, size_t i, const char **name,
                   uint64_t *ino, bool *is_dir);

/* The archive, member and indexer behind a file (its unit must be open:
 * FS_WAIT). -EISDIR for a directory. */
struct fs_file {
    struct fs_archive *a;
    struct fs_member *m;
    struct fs_indexer *indexer; /* may be NULL */
};
int fs_vfs_file(struct fs_vfs *v, uint64_t ino, struct fs_file *f, uint32_t *need);

struct fs_waiter;
/* Queue w until unit need (from FS_WAIT above) has been opened or has
 * failed, starting its open in the opener pool if none is running (the first
 * waiter starts it; later ones only queue). Returns 0: queued, and w->wake()
 * is called once, maybe from another thread, maybe before this returns (do
 * not touch w after 0): with 0, ask again (the unit is open, or failed for
 * good and the call now gives -EIO), or with a negative errno to answer (a
 * transient error of the open, -ECANCELED at unmount). 1: not queued, the
 * unit no longer waits to be opened: ask again now. Thread-safe. */
int fs_vfs_await(struct fs_vfs *v, uint32_t need, struct fs_waiter *w);

/* statfs: bytes of every member of the opened archives, and inodes known. */
void fs_vfs_totals(struct fs_vfs *v, uint64_t *bytes, uint64_t *files);

/*
 * Persisted indexes (indexer.c, over fs/indexdir.h): the first full
 * pass over a member (a deflate member, or a zip's stored member) checks its
 * CRC-32 and builds its chunk CRC table; a member bigger than one chunk gets
 * its access points and table saved in the index directory, loaded on its
 * first open in a later mount. With -o index=background a thread at idle CPU
 * and I/O priority builds the missing ones after the mount answers.
 */
struct fs_indexer;

/* Set up persistence for a mount (before any fork): prepares the index
 * directory; if it cannot be used, says so once in the log and goes on
 * without. Full passes an open waits for run in the pool defer (NULL: in the
 * caller's thread) and, for a member that fits a quarter of cache (may be
 * NULL), insert its chunks there as they decode. Returns 0 or -ENOMEM. a,
 * opts, defer and cache must outlive the indexer. */
int fs_indexer_new(struct fs_archive *a, const struct fs_opts *opts, struct fs_defer *defer,
                   struct cache *cache, struct fs_indexer **out);

/* Start the background thread (index=background), from the serving process
 * (FUSE init): threads do not survive fork. Accepts NULL. */
void fs_indexer_start(struct fs_indexer *x);

/* Stop and join the thread, then save the complete indexes not on disk yet
 * (those grown by reads). Call once no request can run (FUSE destroy).
 * Accepts NULL. */
void fs_indexer_stop(struct fs_indexer *x);

/* Accepts NULL; stops first if needed. */
void fs_indexer_free(struct fs_indexer *x);

/* Before the first read of m: load its saved index, once per mount; other
 * openers of m wait for that load. Thread-safe; accepts NULL x. */
void fs_indexer_use(struct fs_indexer *x, struct fs_member *m);

/* At every open of m (after fs_indexer_use()): may it be served now? Under
 * verify=strict, and verify=auto for a member of at most verify_max bytes,
 * only once it has its chunk CRC table: returns 0 if it has one (or needs
 * none), -EIO if m is damaged (every later call too), or FS_WAIT: the open
 * must wait for a full pass over m (fs_indexer_await()). Under verify=lazy,
 * and verify=auto above verify_max, returns 0; the latter logs once per
 * member that it is served before its full check. Thread-safe; accepts NULL
 * x (returns 0). */
int fs_indexer_ready(struct fs_indexer *x, struct fs_member *m);

/* Queue w until the full pass over m that builds its table has ended: the
 * pass already running (the background indexer's, or another open's), or
 * one started now in the pool, which builds the table (checking the member's
 * CRC-32, and saving the index when the index directory is usable). Returns
 * 0: queued, and w->wake() is called once, maybe from another thread, maybe
 * before this returns (do not touch w after 0): with 0, ask
 * fs_indexer_ready() again, or a negative errno to answer (-ENOMEM,
 * -ECANCELED at unmount). 1: not queued, m has its table or is damaged now:
 * ask again now. Thread-safe. */
int fs_indexer_await(struct fs_indexer *x, struct fs_member *m, struct fs_waiter *w);

/* FUSE destroy, before the pool is joined: raise the stop flag of every pass
 * over x's members (background or pool), so they end promptly. Accepts NULL. */
void fs_indexer_cancel(struct fs_indexer *x);

/* `npyfs index` for one opened source: build and save the index of every
 * deflate member (checking each CRC on the way), with a progress line when
 * stderr is a terminal (at the end, on a terminal, "already indexed (N
 * members)" if every member had a valid file already). A saved file built
 * with another spacing than opts->spacing is rebuilt only if
 * opts->spacing_given. Prints one line per failing source. Returns an exit
 * status. */
int fs_index_main(struct fs_archive *a, const struct fs_opts *opts);

/* `npyfs index --prune`: prune the index directory (indexdir_prune():
 * files whose archive is gone or changed, unused for FS_PRUNE_UNUSED_DAYS
 * when it cannot be checked, of older formats, damaged, then the size cap
 * opts->index_max), printing a line on stdout per file removed and a
 * summary. Returns an exit status (1: no usable directory, or a file could
 * not be removed). CLI only. */
int fs_index_prune(const struct fs_opts *opts);

/* Does m get a full pass (a CRC-32 to check, a chunk CRC table to build)?
 * Every deflate member, and a zip's stored members, that can be read and
 * are not empty. Its pass has run once m has its table (m->crcs). */
bool fs_member_indexable(const struct fs_archive *a, const struct fs_member *m);
/*
 * The opener pool (defer.c): a few threads that do the slow work a FUSE
 * handler must not wait for (opening a unit, which may size a gzip file by a
 * full pass or touch a slow file system; a full verification pass an open
 * waits for). libfuse lets a handler return without replying and reply later
 * from another thread: a request that needs such work is queued as an
 * fs_waiter on it, and the work wakes its waiters when done. Started at FUSE
 * init and joined at destroy, in the serving process (threads do not survive
 * fork). No FUSE in here.
 */
struct fs_defer;

/* A request waiting for some work. Owned by whoever queued it; the work
 * calls wake() exactly once, after unlinking it (next is the list link of the
 * work it waits on). */
struct fs_waiter {
    struct fs_waiter *next;
    void (*wake)(struct fs_waiter *w, int err);
};

/* A job for the pool. Embedded in its owner's struct; run() or, if the pool
 * stops before it ran, cancel() is called exactly once, in a pool thread or
 * in fs_defer_stop()'s caller; either must wake the job's waiters. */
struct fs_job {
    struct fs_job *next; /* queue link, private to defer.c */
    void (*run)(struct fs_job *j);
    void (*cancel)(struct fs_job *j);
};

/* A pool of threads workers, not started. Returns 0 or -ENOMEM. */
int fs_defer_new(unsigned threads, struct fs_defer **out);
/* Start the workers (FUSE init). If none can start, submissions are refused
 * with -EAGAIN and callers do the work themselves. Accepts NULL. */
void fs_defer_start(struct fs_defer *d);
/* Refuse further jobs (-ECANCELED), cancel() the queued ones, join the
 * workers (running jobs must end promptly: they check their stop flags).
 * Accepts NULL; idempotent. */
void fs_defer_stop(struct fs_defer *d);
/* Accepts NULL; stops first. */
void fs_defer_free(struct fs_defer *d);
/* Queue j for a worker. Returns 0, -EAGAIN (no workers: not started, or
 * none could start) or -ECANCELED (stopping): then j is not queued. Accepts
 * NULL d (-EAGAIN). Thread-safe. */
int fs_defer_submit(struct fs_defer *d, struct fs_job *j);
/* Call wake(w, err) for each waiter of list: here if the caller is a pool
 * worker or the pool cannot take the job, else in a worker (so a thread at
 * idle priority, such as the background indexer, never answers requests).
 * Accepts NULL d and an empty list. Thread-safe. */
void fs_defer_wake(struct fs_defer *d, struct fs_waiter *list, int err);
/* Opener threads per mount. */
#define FS_DEFER_THREADS 4

/* The FUSE low-level operations (ops.c). */
struct fuse_lowlevel_ops;
extern const struct fuse_lowlevel_ops fs_ops;

/*
 * Parallel readahead (readahead.c): a fixed pool of worker threads that
 * decode the segments between access points ahead of sequential readers.
 * Created after the daemon has forked (threads do not survive fork) and
 * freed once the session loop has ended.
 */

/* Start threads workers for ctx (which must outlive the pool). threads == 0
 * or a cache too small to hold anything ahead gives *out == NULL and 0: no
 * readahead. Returns 0, or -ENOMEM / a pthread_create errno. */
int fs_ra_new(struct fs_ctx *ctx, unsigned threads, struct fs_ra **out);

/* Stop and join the workers; queued work is dropped. Accepts NULL. */
void fs_ra_free(struct fs_ra *ra);

/* A read of chunks first..last of m is about to be served. Detects sequential
 * streams and queues segments ahead of them. Never blocks on decoding.
 * Thread-safe; ra may be NULL (no readahead). */
void fs_ra_note_read(struct fs_ra *ra, struct fs_member *m, uint64_t first, uint64_t last);




/*
 * Cross-file contracts added for the "Datasets" and "Robustness" issues.
 * Each block names the file that implements it.
 */

/* vfs.c: every archive the mount has opened so far (sources are opened
 * lazily, on first lookup), in no particular order. fn runs with no lock
 * held that a FUSE handler could need; archives stay valid until unmount. */
void fs_vfs_foreach(struct fs_ctx *ctx, void (*fn)(struct fs_archive *a, void *arg), void *arg);

/* vfs.c: the archives and .npy.gz files of the mount by state, for
 * stats (passthrough files are not counted): opened; not opened yet (a
 * directory source's, opened on first use), with their file sizes at
 * mount; or failed to open. Lock-free; a snapshot. */
struct fs_vfs_units {
    uint64_t opened, unopened, unopened_bytes, failed;
};
void fs_vfs_units(struct fs_vfs *v, struct fs_vfs_units *out);

/* xattr.c: extended attributes. For an array file (m != NULL): user.npy.*
 * from its .npy header and user.npyfs.* from the archive; for the mount root
 * (a == NULL, m == NULL): user.npyfs.stats. Other directories have none.
 * Semantics of getxattr(2)/listxattr(2): size 0 asks for the length; returns
 * the length, or -ENODATA (no such attribute), -ERANGE (buf too small),
 * -EIO (the member's header cannot be read). */
long fs_xattr_get(struct fs_ctx *ctx, struct fs_archive *a, struct fs_member *m,
                  const char *name, char *buf, size_t size);
long fs_xattr_list(struct fs_ctx *ctx, struct fs_archive *a, struct fs_member *m, char *buf,
                   size_t size);
/* archive.c: free what fs_xattr_get() cached in m->meta. Accepts NULL. */
void fs_meta_free(struct fs_meta *meta);

/* fs.c: live counters of a mount, read by `npyfs stats`. */
struct fs_counters {
    atomic_uint_least64_t reads;        /* READ requests answered with data */
    atomic_uint_least64_t read_errors;  /* READ requests answered with an error */
    atomic_uint_least64_t bytes_served; /* bytes in READ replies */
    atomic_uint_least64_t archives_opened;
    atomic_uint_least64_t readahead_chunks; /* chunks decoded into the cache by readahead workers */
    atomic_uint_least64_t pages_dropped; /* files whose cached pages the kernel was told to
                                          * drop (damage found, or the archive changed) */
};
extern struct fs_counters fs_counters;
/* fs.c: the budget of every dfx index of the process (dfx.h, struct
 * dfx_budget; set as dfx_stream.budget by archive.c): the windows that
 * reads record, and the twin of an indexing pass without an index
 * directory, stay within limit bytes. limit is FS_DEFAULT_INDEX_MEM unless
 * the mount sets -o index_mem= (before any archive is opened). Shown by
 * `npyfs stats`. */
extern struct dfx_budget fs_window_budget;
/* fs.c: true in readahead worker threads (which set it: readahead.c),
 * so the decode can count their chunks in fs_counters.readahead_chunks. */
extern _Thread_local bool fs_is_readahead_worker;

/* The stats text of a mount (user.npyfs.stats, printed by `npyfs stats`),
 * or with json the same as one JSON object: counters, then per member of
 * every opened archive its index coverage and damage. Writes at most size
 * bytes including the NUL (members that do not fit are counted, not
 * listed); returns the length written. Thread-safe. */
size_t fs_stats_format(struct fs_ctx *ctx, bool json, char *buf, size_t size);

#endif
