/*
 * Where an index is built (full passes: background, for an open that
 * waits, `npyfs index`) and where it is loaded and saved (through
 * indexdir.h); published indexes; `npyfs index --prune`.
 *
 * Ownership: the indexer borrows its archive, options, pool and cache (all
 * outlive it); it owns its directory reference, its path record and the
 * index files it publishes.
 * Locks: x->lock (state, on_disk, passing, waiting, published fds; only a
 * dfx index's lock is taken under it; never held while loading, decoding or
 * saving); pass_lock (one background pass at a time in the process);
 * dir_lock alone.
 * Errors: -ENOMEM, -EIO, -ECANCELED, as each function says; DEFER_WAIT
 * (defer.h) from indexer_ready(). indexer_index_archive() and indexer_prune()
 * are CLI only: they report on stdout/stderr and return an exit status.
 * Threads: one background thread per indexer at idle priority
 * (index=background), started at FUSE init or at the archive's lazy open,
 * joined by indexer_stop().
 */
#ifndef NPYFS_FS_INDEXER_H
#define NPYFS_FS_INDEXER_H

#include <stdbool.h>

#include "defer.h"

struct cache;
struct archive;
struct archive_member;
struct options;

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
#define INDEXER_SPACING (256u << 10)
/* `npyfs index --prune`: an index file whose archive cannot be checked is
 * removed once it was not used (saved or loaded) for this many days. */
#define INDEXER_PRUNE_UNUSED_DAYS 30

/*
 * Persisted indexes (indexer.c, over fs/indexdir.h): the first full
 * pass over a member (a deflate member, or a zip's stored member) checks its
 * CRC-32 and builds its chunk CRC table; a member bigger than one chunk gets
 * its access points and table saved in the index directory, loaded on its
 * first open in a later mount. With -o index=background a thread at idle CPU
 * and I/O priority builds the missing ones after the mount answers.
 */
struct indexer;

/* Set up persistence for a mount (before any fork): prepares the index
 * directory; if it cannot be used, says so once in the log and goes on
 * without. Full passes an open waits for run in the pool defer (NULL: in the
 * caller's thread) and, for a member that fits a quarter of cache (may be
 * NULL), insert its chunks there as they decode. Returns 0 or -ENOMEM. a,
 * opts, defer and cache must outlive the indexer. */
int indexer_new(struct archive *a, const struct options *opts, struct defer *defer,
                   struct cache *cache, struct indexer **out);

/* Start the background thread (index=background), from the serving process
 * (FUSE init): threads do not survive fork. Accepts NULL. */
void indexer_start(struct indexer *x);

/* Stop and join the thread, then save the complete indexes not on disk yet
 * (those grown by reads). Call once no request can run (FUSE destroy).
 * Accepts NULL. */
void indexer_stop(struct indexer *x);

/* Accepts NULL; stops first if needed. */
void indexer_free(struct indexer *x);

/* Before the first read of m: load its saved index, once per mount; other
 * openers of m wait for that load. Thread-safe; accepts NULL x. */
void indexer_use(struct indexer *x, struct archive_member *m);

/* At every open of m (after indexer_use()): may it be served now? Under
 * verify=strict, and verify=auto for a member of at most verify_max bytes,
 * only once it has its chunk CRC table: returns 0 if it has one (or needs
 * none), -EIO if m is damaged (every later call too), or DEFER_WAIT: the open
 * must wait for a full pass over m (indexer_await()). Under verify=lazy,
 * and verify=auto above verify_max, returns 0; the latter logs once per
 * member that it is served before its full check. Thread-safe; accepts NULL
 * x (returns 0). */
int indexer_ready(struct indexer *x, struct archive_member *m);

/* Queue w until the full pass over m that builds its table has ended: the
 * pass already running (the background indexer's, or another open's), or
 * one started now in the pool, which builds the table (checking the member's
 * CRC-32, and saving the index when the index directory is usable). Returns
 * 0: queued, and w->wake() is called once, maybe from another thread, maybe
 * before this returns (do not touch w after 0): with 0, ask
 * indexer_ready() again, or a negative errno to answer (-ENOMEM,
 * -ECANCELED at unmount). 1: not queued, m has its table or is damaged now:
 * ask again now. Thread-safe. */
int indexer_await(struct indexer *x, struct archive_member *m, struct defer_waiter *w);

/* FUSE destroy, before the pool is joined: raise the stop flag of every pass
 * over x's members (background or pool), so they end promptly. Accepts NULL. */
void indexer_cancel(struct indexer *x);

/* `npyfs index` for one opened source: build and save the index of every
 * deflate member (checking each CRC on the way), with a progress line when
 * stderr is a terminal (at the end, on a terminal, "already indexed (N
 * members)" if every member had a valid file already). A saved file built
 * with another spacing than opts->spacing is rebuilt only if
 * opts->spacing_given. Prints one line per failing source. Returns an exit
 * status. */
int indexer_index_archive(struct archive *a, const struct options *opts);

/* `npyfs index --prune`: prune the index directory (indexdir_prune():
 * files whose archive is gone or changed, unused for INDEXER_PRUNE_UNUSED_DAYS
 * when it cannot be checked, of older formats, damaged, then the size cap
 * opts->index_max), printing a line on stdout per file removed and a
 * summary. Returns an exit status (1: no usable directory, or a file could
 * not be removed). CLI only. */
int indexer_prune(const struct options *opts);

/* Does m get a full pass (a CRC-32 to check, a chunk CRC table to build)?
 * Every deflate member, and a zip's stored members, that can be read and
 * are not empty. Its pass has run once m has its table (m->crcs). */
bool indexer_indexable(const struct archive *a, const struct archive_member *m);

#endif
