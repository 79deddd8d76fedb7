/*
 * The daemon's shared types: an opened archive (its members, ready to read),
 * the inode tree built over it, and the context the FUSE handlers share.
 *
 * Lifetimes: everything here is built before the mount answers and is
 * immutable afterwards, except what is marked otherwise (the per-member
 * decoder pool, the chunk cache and the access points inside each dfx index).
 */
#ifndef NPYFS_FS_FS_H
#define NPYFS_FS_FS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "cache.h"
#include "dfx.h"
#include "source.h"

/* Bytes per chunk of the decompressed-data cache: the unit a decode produces
 * and the cache evicts. A random read decodes from an access point to the end
 * of the chunk holding its offset, so this adds to random-read latency. */
#define FS_CHUNK_SIZE (128u << 10)
#define FS_DEFAULT_CACHE_SIZE (256ull << 20)
/* Decoders parked per member for sequential readers to continue from. */
#define FS_PARKED_MAX 4

enum fs_kind {
    FS_STORED, /* bytes at data_offset in the source, served with pread */
    FS_DEFLATE, /* raw deflate (zip method 8) or gzip, served through dfx + cache */
};

struct fs_busy; /* a decode in progress, private to fs_member.c */

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
     * taken before the cache's own lock, and never held while inflating. */
    pthread_mutex_t lock;
    pthread_cond_t idle; /* broadcast when a decode in progress ends */
    struct dfx_reader *parked[FS_PARKED_MAX];
    int nparked;
    struct fs_busy *busy; /* decodes in progress (list) */
    int opens;            /* open file handles */
    atomic_bool logged;   /* one log line per damaged member */
};

enum fs_source_kind { FS_SRC_ZIP, FS_SRC_GZIP };

struct fs_archive {
    char *path;          /* owned: the source path as given */
    struct src *src;     /* owned */
    struct stat st;      /* the source's stat at open time */
    enum fs_source_kind kind;
    struct fs_member *members; /* owned, count of them */
    size_t count;
    uint64_t spacing;
};

/* Open and parse a source (zip or gzip, told apart by magic). Nothing of the
 * payload is decompressed, except for a gzip file whose content is not a
 * parseable .npy or whose ISIZE disagrees with its header (multi-member):
 * then one full pass finds the exact size (and fills the index on the way).
 * Returns 0, or a negative errno with *out NULL: -EINVAL not a zip or gzip
 * file, -EIO damaged or truncated, others from open(). */
int fs_archive_open(const char *path, uint64_t spacing, struct fs_archive **out);
void fs_archive_free(struct fs_archive *a);

/* Read the first bytes (up to len) of a member's uncompressed data: used by
 * `ls` to parse .npy headers. Returns the count or a negative errno. */
int64_t fs_member_peek(struct fs_archive *a, struct fs_member *m, void *buf, size_t len);

/* Up to FS_READ_IOV_MAX references for one read of [off, off + len) of a
 * FS_DEFLATE member: chunk refs in order. */
#define FS_READ_IOV_MAX 64

/* Get chunk idx of a FS_DEFLATE member with a reference for the caller (put
 * it with cache_put()). Decodes it if the cache misses, reusing a parked
 * decoder when one is close before it. Thread-safe. Returns 0 or -EIO
 * (damaged), -ENOMEM. */
int fs_member_chunk(struct fs_archive *a, struct fs_member *m, struct cache *c, uint64_t idx,
                    struct cache_chunk **out);

/* Bookkeeping for open handles: the last close frees parked decoders. */
void fs_member_opened(struct fs_member *m);
void fs_member_closed(struct fs_member *m);

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
 * README.md (Names). Returns 0 or -ENOMEM. */
int fs_tree_build(struct fs_tree *t, struct fs_archive *a);
void fs_tree_destroy(struct fs_tree *t);

/* The node for an inode, or NULL. */
struct fs_node *fs_tree_node(struct fs_tree *t, uint64_t ino);

/* The child of dir called name, or 0. */
uint64_t fs_tree_lookup(struct fs_tree *t, uint64_t dir, const char *name);

/* Mount-wide options and state. */
struct fs_opts {
    uint64_t cache_size;
    uint64_t spacing;
};

struct fs_ctx {
    struct fs_archive *archive; /* owned */
    struct fs_tree tree;
    struct cache *cache;        /* owned */
    struct fs_opts opts;
    uid_t uid;
    gid_t gid;
};

/* The FUSE low-level operations (fs_ops.c). */
struct fuse_lowlevel_ops;
extern const struct fuse_lowlevel_ops fs_ops;

/* `npyfs ls` (fs_ls.c): print one row per member. Returns an exit status. */
int fs_ls_main(struct fs_archive *a);

#endif
