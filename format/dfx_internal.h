/*
 * dfx internals shared with dfx_store.c (index files), the indexer
 * (fs/indexer.c), the index directory (fs/indexdir.c: the spacing) and the
 * unit tests: moving the access points of an index in and out, and where
 * their windows live. Everything else goes through dfx.h. (The codec for compressed 32 KiB
 * windows is window.h.)
 *
 * Where a point's window (its 32 KiB of history) lives:
 * - nowhere: the point needs none (point 0, a gzip member start);
 * - in memory, raw or zlib-compressed: recorded by a reader, or moved in
 *   from a twin index (dfx_index_adopt()); charged to the stream's budget
 *   (dfx.h) and dropped again when the recording index thins its windows;
 * - in an index file (imported by dfx_index_import()): fetched through the
 *   index's struct dfx_fetch when a reader starts there, costing no memory,
 *   unless dfx_index_cache_windows() read a copy of its compressed bytes
 *   into memory (charged to the budget; a thinning index frees the copy and
 *   the window is fetched again);
 * - written out (an index builder with a sink): in the file being written,
 *   not readable through this index;
 * - dropped: the point stays in the array (so positions and spacing stay
 *   the same) but no reader starts there.
 * A reader that wants a point without a usable window starts from the
 * nearest earlier point that has one (point 0 always has).
 */
#ifndef NPYFS_FORMAT_DFX_INTERNAL_H
#define NPYFS_FORMAT_DFX_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dfx.h"

/*
 * Where the compressed windows of imported points are read from (an index
 * file kept open: dfx_store.c). read(ctx, buf, len, off) fills buf with
 * exactly len bytes at offset off and returns 0, or a negative errno (-EIO
 * for a short read: the file changed). It is called with no lock held, from
 * any reader's thread, concurrently. release(ctx) is called once, by
 * dfx_index_free() (NULL: nothing to release).
 */
struct dfx_fetch {
    int (*read)(void *ctx, unsigned char *buf, uint32_t len, uint64_t off);
    void (*release)(void *ctx);
    void *ctx;
};

/*
 * Where an index builder's windows go instead of memory (dfx_store.c: the
 * index file being written). put(ctx, raw, len, &woff, &zlen) compresses
 * len bytes of history, appends them, and says where they went: 0, or a
 * negative errno (the window is then kept in memory like a reader's). Called
 * with no lock held, from the recording reader's thread.
 */
struct dfx_sink {
    int (*put)(void *ctx, const unsigned char *raw, uint32_t len, uint64_t *woff,
               uint32_t *zlen);
    void *ctx;
};

/* One access point as handed out by dfx_index_export() and taken by
 * dfx_index_import(): its position, and where its window is. */
struct dfx_xpoint {
    uint64_t out;        /* uncompressed offset */
    uint64_t in;         /* compressed offset of the first whole byte */
    uint64_t member_out; /* output offset where the point's gzip member starts */
    int bits;            /* 0-7 bits taken from byte in-1 */
    uint32_t window_len; /* raw history length, <= DFX_WINDOW_SIZE; 0: none needed */
    /* import: the compressed window is zlen bytes at woff in the fetch
     * source (both 0 iff window_len is 0). export: where the sink put it,
     * if sunk. */
    uint64_t woff;
    uint32_t zlen;
    /* CRC-32 of the raw window (0 when window_len is 0). import: a fetched
     * window must match it, so a window is used only at the point it was
     * saved for; export: set for sunk windows. */
    uint32_t wcrc;
    bool sunk;   /* export: the window went to the index's sink (woff, zlen, wcrc) */
    bool usable; /* export: a reader may start here (window in memory, in a
                  * file, or none needed); dfx_index_window() gives it */
};

/*
 * Snapshot of the points of a complete index: the total output size is
 * known (some reader reached the end) and no damage was found. *pts is an
 * owned array of *n points (free() it); no window bytes are handed out
 * (dfx_index_window() copies one). Returns 0, -EAGAIN (the end was never
 * reached), the index's damage errno, or -ENOMEM. Thread-safe.
 */
int dfx_index_export(struct dfx_index *ix, struct dfx_xpoint **pts, size_t *n, uint64_t *total);

/*
 * Copy the raw history of the point at output offset out into buf
 * (DFX_WINDOW_SIZE bytes) and its length into *len (0: none needed). A
 * window in memory is copied under the index lock, one in a file is
 * fetched and inflated without it. Returns 0; -ENOENT no point there, or
 * its window was dropped or written to a sink; -EIO a fetched window did
 * not inflate (the point is dropped); -ENOMEM. Thread-safe.
 */
int dfx_index_window(struct dfx_index *ix, uint64_t out, unsigned char *buf, uint32_t *len);

/*
 * Replace all the points of ix (reader-grown or imported before) with
 * pts[0..n), whose windows are read through fetch (a window that does not
 * read back, inflate, or match its wcrc is dropped when a reader wants it,
 * and the reader starts from an earlier point): pts[0] must be the
 * index's own point 0; the rest must be strictly increasing in out and in,
 * inside the stream, with bits 0-7, member_out <= out (RAW: 0),
 * window_len <= DFX_WINDOW_SIZE, and zlen > 0 exactly when window_len > 0.
 * total is the output size or UINT64_MAX (it must equal the stream's usize
 * when that is known). Safe while readers are alive: they copy what they
 * need under the lock, and a replaced fetch source is kept (not released)
 * until dfx_index_free(). Windows in memory that are replaced are freed and
 * given back to the budget. On success the index owns fetch (released by
 * dfx_index_free()); on failure the caller keeps it. Returns 0; -EBUSY the
 * index knows a different total; -EINVAL the points break a rule above;
 * -ENOMEM.
 */
int dfx_index_import(struct dfx_index *ix, const struct dfx_xpoint *pts, size_t n,
                     uint64_t total, const struct dfx_fetch *fetch);

/*
 * Read the compressed windows of points whose window is in the index file
 * into memory, in the order of the points, so that a reader starting there
 * needs no fetch: until max bytes are held this way, the budget refuses one,
 * stop (may be NULL) is raised, or a fetch fails. A copy is checked when a
 * reader uses it, as a fetched window is (its CRC-32). Only points the
 * index's thinning lets keep a memory window are read. Thread-safe, while
 * readers run; never holds the lock while it reads. Returns how many it
 * read.
 */
size_t dfx_index_cache_windows(struct dfx_index *ix, uint64_t max, const atomic_bool *stop);

/*
 * Move the points of a complete twin index (same stream, same budget, no
 * damage, no reader alive) into ix, replacing its own as dfx_index_import()
 * does; windows in memory change hands without being copied. from is freed
 * in every case. Returns 0, -EINVAL (not a twin, or damaged), -EAGAIN (from
 * is not complete), -EBUSY (ix knows a different total).
 */
int dfx_index_adopt(struct dfx_index *ix, struct dfx_index *from);

/* Keep the windows of points recorded from now on in memory compressed
 * (zlib level 1), ~1/3 of the memory for typical data at the cost of
 * compressing each window once and inflating it whenever a reader starts
 * there. Thread-safe. */
void dfx_index_compress_windows(struct dfx_index *ix, bool on);

/* Send the windows of points recorded from now on to sink instead of
 * memory (NULL: back to memory). *sink is copied. Points whose windows went
 * to an earlier sink lose them (W_LOST: they are in a file this index
 * cannot read). Thread-safe. */
void dfx_index_set_sink(struct dfx_index *ix, const struct dfx_sink *sink);

/* The ctx of the index's current sink, or NULL: whose file the windows of
 * exported points marked sunk are in. Thread-safe. */
void *dfx_index_sink_ctx(struct dfx_index *ix);

/* Points a reader may start from, and the bytes of windows the index holds
 * in memory (all charged to its budget). For tests and stats. Thread-safe. */
void dfx_index_memory(struct dfx_index *ix, size_t *usable, uint64_t *window_bytes);

/* Whether readers of ix record points with ISA-L (dfx.h, Engines): on for
 * an index that decodes with ISA-L until searches for block boundaries
 * keep failing on its stream; off for zlib. dfx_index_set_marking() turns
 * it off (or back on, if the index decodes with ISA-L) for readers created
 * from then on, for tests. Thread-safe. */
bool dfx_index_marking(struct dfx_index *ix);
void dfx_index_set_marking(struct dfx_index *ix, bool on);

/* Tests only: ISA-L readers of ix created from then on report every block
 * boundary at or past output offset from skew bits off
 * (dfx_isal_test_skew()), so that its check fails and the index stops
 * marking there, as on a stream this ISA-L could not mark. Thread-safe. */
void dfx_index_test_skew(struct dfx_index *ix, int skew, uint64_t from);

/* The stream the index reads (a copy of what dfx_index_new() got) and its
 * spacing. Immutable: no lock needed. */
const struct dfx_stream *dfx_index_stream(const struct dfx_index *ix);
uint64_t dfx_index_spacing(const struct dfx_index *ix);

#endif
