/*
 * dfx internals shared with dfx_store.c (persisted indexes) and the unit
 * tests: moving the access points of an index in and out, the damage state,
 * and the codec for compressed 32 KiB windows. Not for fs/ code other than
 * the indexer; everything else goes through dfx.h.
 */
#ifndef NPYFS_FORMAT_DFX_INTERNAL_H
#define NPYFS_FORMAT_DFX_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dfx.h"

/* One access point as handed out by dfx_index_export() and taken by
 * dfx_index_import(). Exactly one of window and zwin is set when
 * window_len > 0; both are NULL when window_len == 0. */
struct dfx_xpoint {
    uint64_t out;                /* uncompressed offset */
    uint64_t in;                 /* compressed offset of the first whole byte */
    uint64_t member_out;         /* output offset where the point's gzip member starts */
    int bits;                    /* 0-7 bits taken from byte in-1 */
    uint32_t window_len;         /* raw history length, <= DFX_WINDOW_SIZE */
    const unsigned char *window; /* raw history (window_len bytes), or NULL */
    const unsigned char *zwin;   /* zlib-compressed history (zlen bytes), or NULL */
    uint32_t zlen;
};

enum dfx_import_mode {
    /* Copy every window (raw or compressed) into storage the index owns. */
    DFX_IMPORT_COPY,
    /* Keep pointers to the compressed windows (zwin only; raw windows are
     * refused): the bytes are borrowed, and release(arg) is called by
     * dfx_index_free() once nothing can read them any more. */
    DFX_IMPORT_BORROW,
};

/*
 * Snapshot of the points of a complete index: the total output size is
 * known (some reader reached the end) and no damage was found. *pts is an
 * owned array of *n points (free() it); the window bytes it points to are
 * borrowed from the index and valid while the index lives (points are
 * immutable once recorded). Returns 0, -EAGAIN (the end was never reached),
 * the index's damage errno, or -ENOMEM. Thread-safe.
 */
int dfx_index_export(struct dfx_index *ix, struct dfx_xpoint **pts, size_t *n, uint64_t *total);

/*
 * Replace the points of an index that holds only point 0 with pts[0..n):
 * pts[0] must be that same point 0; the rest must be strictly increasing in
 * out and in, inside the stream, with bits 0-7, member_out <= out (RAW: 0)
 * and window_len <= DFX_WINDOW_SIZE. total is the output size or UINT64_MAX
 * (it must equal the stream's usize when that is known). Safe while readers are alive:
 * they only ever see whole point arrays. Returns 0; -EBUSY the index already
 * has more points or a different total; -EINVAL the points break a rule
 * above (nothing is taken over, release is not called); -ENOMEM.
 */
int dfx_index_import(struct dfx_index *ix, const struct dfx_xpoint *pts, size_t n,
                     uint64_t total, enum dfx_import_mode mode, void (*release)(void *),
                     void *arg);

/* Keep the windows of points recorded from now on compressed (zlib level 1),
 * ~1/3 of the memory for typical data at the cost of compressing each
 * window once and inflating it whenever a reader starts there. Used by
 * index builders whose points are saved to disk anyway. Thread-safe. */
void dfx_index_compress_windows(struct dfx_index *ix, bool on);

/* The stream the index reads (a copy of what dfx_index_new() got) and its
 * spacing. Immutable: no lock needed. */
const struct dfx_stream *dfx_index_stream(const struct dfx_index *ix);
uint64_t dfx_index_spacing(const struct dfx_index *ix);

/* The first damage (0 if none) and the output offset from which reads fail. */
int dfx_index_damage(struct dfx_index *ix, uint64_t *bad_from);

/* Record damage found elsewhere (by a pass over a twin index of the same
 * stream): reads at or past from fail with err (negative). */
void dfx_index_set_damage(struct dfx_index *ix, int err, uint64_t from);

/* Window codec (dfx_store.c). dfx_window_deflate: *z is owned by the caller
 * (free()); 0 or -ENOMEM/-EINVAL. dfx_window_inflate: exactly len raw bytes
 * out of zlen zlib bytes, checked by zlib's Adler-32; 0 or -EIO. */
int dfx_window_deflate(const unsigned char *raw, uint32_t len, unsigned char **z,
                       uint32_t *zlen);
int dfx_window_inflate(const unsigned char *z, uint32_t zlen, unsigned char *raw, uint32_t len);

#endif
