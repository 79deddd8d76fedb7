/*
 * What every module of fs/ shares: the chunk unit, fs_grow(), the
 * process-wide counters, the window budget, the readahead-worker flag.
 *
 * Ownership: the counters and the budget are process-wide (one daemon = one
 * mount).
 * Locks: none; every counter is an atomic bumped relaxed; the budget's
 * limit is set before any archive is opened (cmd_mount.c), its used is the
 * budget's own atomic.
 * Errors: fs_grow(): -ENOMEM.
 * Threads: fs_is_readahead_worker is true only in readahead workers (set by
 * readahead.c, read by member.c to count readahead_chunks).
 */
#ifndef NPYFS_FS_FS_H
#define NPYFS_FS_FS_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dfx.h"

/* Bytes per chunk of the decompressed-data cache: the unit a decode produces
 * and the cache evicts. A random read decodes from an access point to the end
 * of the chunk holding its offset, so this adds to random-read latency. */
#define FS_CHUNK_SIZE (128u << 10)
/* Default -o index_mem=: the most memory the access-point windows that
 * reads record may take, mount-wide (fs_window_budget). */
#define FS_DEFAULT_INDEX_MEM (64ull << 20)

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

/* fs.c: live counters of a mount, read by `npyfs stats`. */
struct fs_counters {
    atomic_uint_least64_t reads;        /* READ requests answered with data */
    atomic_uint_least64_t read_errors;  /* READ requests answered with an error */
    atomic_uint_least64_t bytes_served; /* bytes in READ replies */
    atomic_uint_least64_t archives_opened;
    atomic_uint_least64_t readahead_chunks; /* chunks decoded into the cache by readahead workers */
    atomic_uint_least64_t pages_dropped; /* files whose cached pages the kernel was told to
                                          * drop (damage found, or the archive changed) */
    atomic_uint_least64_t prefilled; /* small files put in the kernel page cache at their
                                      * first open (ops.c) */
};
extern struct fs_counters fs_counters;
/* fs.c: the budget of every dfx index of the process (dfx.h, struct
 * dfx_budget; set as dfx_stream.budget by archive.c): the windows that
 * reads record, and the twin of an indexing pass without an index
 * directory, stay within limit bytes. limit is FS_DEFAULT_INDEX_MEM unless
 * the mount sets -o index_mem= (before any archive is opened). Shown by
 * `npyfs stats`. */
extern struct dfx_budget fs_window_budget;
/* fs.c: how many chunks read-driven decodes (member.c: a reader's or a
 * readahead worker's, not an indexing pass) made past their member's last
 * access point as they started, i.e. of the member's first pass; counted
 * as each chunk is made, so a long decode moves it all along. The
 * background indexer stands still while it moves (indexer.c). */
extern atomic_uint_least64_t fs_frontier_moves;
/* fs.c: true in readahead worker threads (which set it: readahead.c),
 * so the decode can count their chunks in fs_counters.readahead_chunks. */
extern _Thread_local bool fs_is_readahead_worker;

#endif
