/*
 * Deflate index: random access into a DEFLATE stream (the zran technique;
 * the facts it rests on: docs/FORMATS.md section 4, "DEFLATE streams and access
 * points").
 *
 * An index holds access points (uncompressed offset, compressed bit position,
 * the 32 KiB of output before it) roughly every `spacing` bytes of output.
 * Points are recorded as a reader decodes past the last one (the frontier),
 * so the index grows with use; a read at X starts from the nearest point at
 * or before X, never from the start of the stream when a closer point exists.
 *
 * A reader is one decoder (its own z_stream and input buffer) used by one
 * thread at a time; any number of readers may work on one index at once.
 * The index is internally locked; no lock is held while inflating.
 *
 * Engines: with ISA-L (enum dfx_decoder), a reader decodes with ISA-L
 * everywhere, and past the frontier it records points at block boundaries
 * that ISA-L is made to stop at (dfx_isal_inflate_mark(), each one checked
 * before it is kept). On a stream where that keeps failing (block headers
 * too short for ISA-L to stop in, as in Z_FIXED streams) the index
 * remembers it, and zlib's inflate(Z_BLOCK) records the points instead:
 * a reader then decodes with ISA-L up to the last point that has a window
 * and zlib takes over from that point's bit position and window (at a gzip
 * member start if the point is one). With NPYFS_DECODER=zlib (or without
 * ISA-L), zlib does all of it. Output and errors are the same either way;
 * where the points fall may differ (any block boundary will do).
 *
 * Memory: see struct dfx_budget. A reader holds about 200 KiB of its own
 * (input buffer, zlib or ISA-L state, one window), whatever the stream, and
 * about 110 KiB more once it records points with ISA-L (the marking state
 * and the window of the place zlib would restart from; 87 KiB more while it
 * checks a point).
 *
 * Framing: DFX_RAW is a single raw deflate stream (a zip member); DFX_GZIP is
 * a gzip file of one or more members, whose headers and trailers are walked
 * with gz.h; its output is the concatenation of all members' output.
 *
 * Errors (every function): -EIO the stream is damaged or truncated, or a
 * check failed (CRC-32, ISIZE, or the expected size dfx_stream.usize);
 * -ENOMEM; -EINVAL bad arguments; other negative errnos from the source.
 * Once a reader has seen damage, the index remembers it (dfx_index_error())
 * and every later read of the damaged region fails the same way.
 */
#ifndef NPYFS_FORMAT_DFX_H
#define NPYFS_FORMAT_DFX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "source.h"
#include "window.h"

/* The history an access point keeps (window.h). */
#define DFX_WINDOW_SIZE WINDOW_SIZE
/* Default distance between access points. A point recorded by a reader keeps
 * a 32 KiB window in memory (within the stream's budget, below), so 1 MiB
 * spacing costs ~3% of the uncompressed size until the budget is reached; a
 * random read decodes up to `spacing` bytes before reaching its offset. */
#define DFX_DEFAULT_SPACING (1u << 20)
#define DFX_MIN_SPACING (64u << 10)

enum dfx_framing {
    DFX_RAW = 0,  /* one raw deflate stream: [start, end) */
    DFX_GZIP = 1, /* gzip members from start until end */
};

/* Which inflate engine readers use, and which records access points (see
 * Engines above). Output and errors are the same either way. */
enum dfx_decoder {
    DFX_DECODER_AUTO = 0, /* NPYFS_DECODER=zlib|isal from the environment, else ISA-L */
    DFX_DECODER_ZLIB = 1,
    DFX_DECODER_ISAL = 2, /* ISA-L if npyfs was built with it (NPYFS_ISAL), else zlib */
};

/*
 * A bound on the memory of the windows that readers record, shared by any
 * number of indexes (typically every index of a mount). used counts the
 * bytes of windows held in memory by all of them; limit is set before the
 * first index uses the budget and never changes. When recording a window
 * would take used past limit, the recording index thins its own windows:
 * it drops the windows of every other point it keeps (its usable spacing
 * doubles, so random reads decode further), and if it has none left to drop
 * it keeps the new point without a window (readers start from an earlier
 * point). Windows of points loaded from an index file are not in memory
 * and not counted. Only atomics: no lock.
 */
struct dfx_budget {
    atomic_uint_least64_t used; /* bytes of windows held in memory */
    uint64_t limit;
};

struct dfx_stream {
    struct src *src;  /* borrowed: must outlive the index */
    uint64_t start;   /* RAW: first byte of deflate data; GZIP: first gzip header */
    uint64_t end;     /* one past the last compressed byte */
    enum dfx_framing framing;
    /* Expected total output size. RAW: required (from the zip directory).
     * GZIP: the output of all members together, or UINT64_MAX if unknown
     * (0 means an empty file, not unknown). Output longer or shorter than
     * usize is -EIO. A read that reaches usize decodes on to the end of the
     * stream before it returns, so the checks there run for it: RAW the
     * CRC; GZIP every remaining member's trailer (ISIZE always, CRC-32 if
     * this reader decoded the member from its start), and that those
     * members add no output: another byte is -EIO. */
    uint64_t usize;
    /* RAW only: CRC-32 from the zip directory. If check_crc, a reader that
     * decodes the whole stream from offset 0 compares it at the end. */
    uint32_t crc;
    bool check_crc;
    enum dfx_decoder decoder; /* read once, by dfx_index_new() */
    struct dfx_budget *budget; /* borrowed, outlives the index; NULL: no bound */
};

struct dfx_index;
struct dfx_reader;

/* New index with one access point at offset 0 (the stream start). st is
 * copied. spacing is clamped to at least DFX_MIN_SPACING. */
int dfx_index_new(const struct dfx_stream *st, uint64_t spacing, struct dfx_index **out);

/* Accepts NULL. No reader of this index may be alive. */
void dfx_index_free(struct dfx_index *ix);

/* Number of access points so far (>= 1). */
size_t dfx_index_points(struct dfx_index *ix);

/* Uncompressed offset of the last access point: reads past it extend the index. */
uint64_t dfx_index_frontier(struct dfx_index *ix);

/* Total output size once some reader has reached the end of the stream,
 * else UINT64_MAX. */
uint64_t dfx_index_total(struct dfx_index *ix);

/* 0, or the negative errno of the first damage any reader found. */
int dfx_index_error(struct dfx_index *ix);

/* The first damage (0 if none) and the output offset from which reads fail. */
int dfx_index_damage(struct dfx_index *ix, uint64_t *bad_from);

/* What the first damage was, for people (stats): where the decoder
 * stopped and why. */
enum dfx_damage_kind {
    DFX_DAMAGE_NONE,      /* no damage */
    DFX_DAMAGE_DATA,      /* invalid deflate data (or gzip header) near input offset `in` */
    DFX_DAMAGE_TRUNCATED, /* the source ends (or fails) before the stream does, at `in` */
    DFX_DAMAGE_SIZE,      /* the output is `actual` bytes, the archive says `expected` */
    DFX_DAMAGE_CRC,       /* the stream's CRC-32 (zip directory, gzip trailer) differs */
    DFX_DAMAGE_CHUNK_CRC, /* chunk `chunk` differs from its CRC-32 in the index file */
    DFX_DAMAGE_OTHER,     /* recorded elsewhere without a kind */
};

struct dfx_damage {
    int error;                 /* 0: no damage; else negative errno */
    enum dfx_damage_kind kind;
    uint64_t from;             /* output offset from which reads fail */
    uint64_t in;               /* DATA, TRUNCATED: source offset where decoding stopped */
    uint64_t expected, actual; /* SIZE: sizes in bytes (actual: at least this many) */
    uint64_t chunk;            /* CHUNK_CRC: the chunk's number */
};

/* The first damage, described (d->error 0 if none). */
void dfx_index_damage_info(struct dfx_index *ix, struct dfx_damage *d);

/* Record damage described by d (d->error negative, d->from where reads
 * start failing) unless damage was recorded first; an earlier d->from
 * still moves the failing offset back. */
void dfx_index_set_damage_info(struct dfx_index *ix, const struct dfx_damage *d);

/* Record damage found elsewhere (by a pass over a twin index of the same
 * stream, a chunk that does not match its checksum): reads at or past from
 * fail with err (negative). */
void dfx_index_set_damage(struct dfx_index *ix, int err, uint64_t from);

/* A reader positioned at the nearest access point at or before off that has
 * a usable window (so dfx_reader_pos() <= off): a window that cannot be
 * fetched or no longer inflates makes it start from an earlier point, never
 * from wrong history. Readers are independent; each owns its decoder. */
int dfx_reader_new(struct dfx_index *ix, uint64_t off, struct dfx_reader **out);

/* Current output offset: the offset of the next byte dfx_reader_read() gives. */
uint64_t dfx_reader_pos(const struct dfx_reader *r);

/* Decode the next len bytes into buf. Returns len, fewer only at the end of
 * the stream (0 once there), or a negative errno; after an error the reader
 * is unusable (free it). Records access points when past the frontier. */
int64_t dfx_reader_read(struct dfx_reader *r, void *buf, size_t len);

/* Decode and discard n bytes: 0, -EIO if the stream ends first, or an errno. */
int dfx_reader_skip(struct dfx_reader *r, uint64_t n);

/* Accepts NULL. */
void dfx_reader_free(struct dfx_reader *r);

/* One-shot random read: len bytes at off into buf through a temporary reader.
 * Returns the count (short only at end of stream) or a negative errno. */
int64_t dfx_extract(struct dfx_index *ix, uint64_t off, void *buf, size_t len);

/* Output offsets of up to max access points at or after off that a reader
 * can start from (points whose window was dropped are left out), in
 * increasing order, into outs. Returns how many were written. Thread-safe:
 * a snapshot; points appended later are not seen. */
size_t dfx_index_points_from(struct dfx_index *ix, uint64_t off, uint64_t *outs, size_t max);

/* The compressed bytes behind output [from, to), as far as the points
 * tell: a reader started for from (dfx_reader_new()) begins at the point
 * (out_lo) whose first input byte (the byte before its bit position, if it
 * has bits) is in_lo; output to is reached before the first point at or
 * after to (out_hi, whose first whole byte is in_hi), or, past the last
 * point (bounded false), before the stream's end (in_hi; out_hi
 * UINT64_MAX). For read-ahead hints over slow sources: a snapshot,
 * thread-safe. */
/* Compressed bytes a reader reads from its source at a time (its input
 * buffer), from its start point on. */
#define DFX_INPUT_SIZE (64u << 10)

struct dfx_span {
    uint64_t out_lo, in_lo, out_hi, in_hi;
    bool bounded;
};
void dfx_index_span(struct dfx_index *ix, uint64_t from, uint64_t to, struct dfx_span *sp);

/* The source offset of the next compressed byte r will read (for hints:
 * what a parked reader goes on to read from). */
uint64_t dfx_reader_input(const struct dfx_reader *r);

#endif
