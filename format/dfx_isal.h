/*
 * ISA-L inflate for dfx.c: a raw deflate decoder that can start at an access
 * point (a block boundary at any bit, with up to 32 KiB of history) and that
 * says exactly where the deflate stream ended, so a gzip trailer can follow.
 * Internal to format/: dfx.c decodes with it, dfx_crcs.c takes its CRC-32
 * (and the benchmarks in scripts/ measure it).
 *
 * ISA-L decodes about twice as fast as zlib but has no inflate(Z_BLOCK): it
 * never stops at a block boundary by itself. dfx_isal_inflate_mark() makes it
 * stop at one anyway (how: dfx_isal.c), so that a reader past the index
 * frontier can record access points at ISA-L speed.
 *
 * Built without ISA-L (NPYFS_HAVE_ISAL undefined), dfx_isal_built() is
 * false, dfx_isal_new() fails with -EOPNOTSUPP, and dfx_isal_crc32() is
 * zlib's crc32(): callers need no #ifdefs.
 *
 * A struct dfx_isal belongs to one reader; calls on different ones may run
 * concurrently.
 */
#ifndef NPYFS_FORMAT_DFX_ISAL_H
#define NPYFS_FORMAT_DFX_ISAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "window.h"

/* dfx_isal_inflate(): the final block of the stream has been decoded and all
 * its output handed out. */
#define DFX_ISAL_END 1
/* dfx_isal_inflate_mark() result bits, besides DFX_ISAL_END: */
#define DFX_ISAL_MARK 2   /* *mark holds a new, checked block boundary */
#define DFX_ISAL_NOMARK 4 /* gave up looking for one past this want (see there) */

/* A block boundary found by dfx_isal_inflate_mark(): the triple an access
 * point needs besides its window. Offsets count from the origin given to
 * dfx_isal_start_at(). A fresh decoder (zlib with inflatePrime(), or
 * dfx_isal_start_at()) given the top `bits` bits of input byte in-1, the
 * bytes from `in` on and the window_len bytes of output before `out`
 * (dfx_isal_mark_window()) produces exactly the output from `out` on. */
struct dfx_isal_mark {
    uint64_t out;        /* output offset of the boundary */
    uint64_t in;         /* input offset of the first whole byte after it */
    int bits;            /* 0-7 bits of the boundary taken from byte in-1 */
    uint32_t window_len; /* <= WINDOW_SIZE: shorter only near an origin without history */
};

/* Counters of one decoder's marking, for benchmarks and logs. */
struct dfx_isal_stats {
    uint64_t marks;      /* DFX_ISAL_MARK results */
    uint64_t gave_up;    /* DFX_ISAL_NOMARK results after a fruitless search (SEARCH_MAX) */
    uint64_t rejected;   /* boundaries whose check failed (each one stops marking) */
    uint64_t unchecked;  /* boundaries dropped because the stream ended before the check could */
    uint64_t stops;      /* block ends the decoder stopped at (bfinal forced, dfx_isal.c) */
    uint64_t step_calls; /* ISA-L calls made with the input cut short (reading headers) */
    uint64_t step_bytes; /* input bytes fed in those calls */
};

/* Input bytes per ISA-L call while a search reads a block header (in the
 * block after it, the decoder stops at the block's end by itself; see
 * dfx_isal.c). A block whose header and end both fall in one step (a
 * fixed-Huffman block of a few symbols, an empty stored block) is passed
 * over: its end is not found. Dynamic headers zlib writes are 35-120 bytes:
 * a few steps each, and a search reads at most a couple of headers. */
#define DFX_ISAL_STEP 32
/* After each fruitless search the step halves, down to this. */
#define DFX_ISAL_STEP_MIN 16
/* Input a search decodes past where it started without reaching a block's
 * end before giving up (DFX_ISAL_NOMARK): a zlib block (16383 symbols)
 * takes at most ~100 KiB, so this means blocks too long to index finely, or
 * an ISA-L that does not stop where dfx_isal.c expects. */
#define DFX_ISAL_SEARCH_MAX (1u << 20)
/* Output compared when checking a boundary. */
#define DFX_ISAL_VERIFY_LEN 4096u

struct dfx_isal;

/* Whether npyfs was built with ISA-L (NPYFS_HAVE_ISAL): without it every
 * decoder is zlib (which one an index uses: dfx.c). */
bool dfx_isal_built(void);

/* A decoder (~90 KiB), not yet started. 0, -ENOMEM, or -EOPNOTSUPP without ISA-L. */
int dfx_isal_new(struct dfx_isal **out);

/* Accepts NULL. */
void dfx_isal_free(struct dfx_isal *d);

/* Start a raw deflate stream at a block boundary. bits (0-7) of the byte
 * before the first input byte are still unread: they are the top bits of
 * prev. window (window_len <= WINDOW_SIZE bytes, borrowed for this call
 * only: it is copied) is the output before the boundary. Any earlier state
 * is dropped, except the tuning (dfx_isal_set_*()) and whether marking
 * broke. Same as dfx_isal_start_at(d, 0, 0, ...). 0, or -EINVAL for bad
 * arguments. */
int dfx_isal_start(struct dfx_isal *d, int bits, unsigned char prev, const unsigned char *window,
                   uint32_t window_len);

/* dfx_isal_start(), and the boundary's own offsets: out (its output offset)
 * and in (the offset of the first whole input byte; prev is byte in-1), from
 * which dfx_isal_inflate_mark() counts. Input must then be fed contiguously
 * from in on. Same results. */
int dfx_isal_start_at(struct dfx_isal *d, uint64_t out, uint64_t in, int bits, unsigned char prev,
                      const unsigned char *window, uint32_t window_len);

/* Decode from next_in/avail_in into next_out/avail_out (*avail_out > 0),
 * advancing all four. ISA-L keeps input it has read ahead in a bit buffer, so
 * *next_in may run up to 8 bytes past what the stream used; see
 * dfx_isal_unused(). Returns 0 (output full, or more input needed: a call
 * that got no new input and made no output will never make progress),
 * DFX_ISAL_END, or -EIO for invalid deflate data (bad block, symbol or
 * distance). Output made before an error has been written and counted. */
int dfx_isal_inflate(struct dfx_isal *d, unsigned char **next_in, unsigned int *avail_in,
                     unsigned char **next_out, unsigned int *avail_out);

/* dfx_isal_inflate() that also finds a block boundary at or past output
 * offset want and reports it. It runs at ISA-L's full speed throughout:
 * from 32 KiB before want on (once it holds the window) the decoder stops
 * at the end of every block, and the boundary reported is the first at or
 * past want, unless the caller's last calls before want were made with
 * dfx_isal_inflate() (then it is the first at or past 32 KiB after the
 * switch) or it ends a block passed over while reading its header
 * (DFX_ISAL_STEP). Each boundary is checked before it is reported, unless
 * dfx_isal_set_verify() turned that off: a second decoder started there
 * from the input bytes and the window must produce the same
 * DFX_ISAL_VERIFY_LEN bytes (or the same rest of the stream) as this one;
 * so a call may return the mark a few KiB of output after mark->out.
 *
 * Returns a negative errno (-EIO as dfx_isal_inflate(), -ENOMEM for the
 * marking buffers, about 75 KiB taken on the first call; the checking
 * decoder's 87 KiB are taken only while a boundary is checked, and without
 * them the boundary is dropped as unchecked), or a mask:
 * - DFX_ISAL_MARK: *mark is a checked boundary, mark->out >= want, and
 *   dfx_isal_mark_window() gives its window. The next call needs a new want
 *   (past mark->out) to look for another one.
 * - DFX_ISAL_NOMARK: no block ended within DFX_ISAL_SEARCH_MAX input bytes
 *   of the search, or a check failed (then this decoder never marks again:
 *   dfx_isal_stats.rejected). mark->out is the output offset reached.
 *   Decoding goes on as dfx_isal_inflate() until a new want.
 * - DFX_ISAL_END: as dfx_isal_inflate(). Can come with DFX_ISAL_MARK.
 * - 0: output full or more input needed, as dfx_isal_inflate().
 * The call returns as soon as a mark or nomark is set; mark is written only
 * with those bits. Calls may mix with dfx_isal_inflate(), at the price of
 * missing a boundary within 32 KiB of the switch. */
int dfx_isal_inflate_mark(struct dfx_isal *d, unsigned char **next_in, unsigned int *avail_in,
                          unsigned char **next_out, unsigned int *avail_out, uint64_t want,
                          struct dfx_isal_mark *mark);

/* After DFX_ISAL_MARK, until the next dfx_isal_inflate_mark() or start:
 * copy the mark's window (mark.window_len bytes) into buf, which has room
 * for WINDOW_SIZE. Returns the length copied (0 if there is no mark). */
uint32_t dfx_isal_mark_window(const struct dfx_isal *d, unsigned char *buf);

/* Check every boundary before reporting it (default on). Off, a boundary is
 * reported as soon as the decoder stands on it; the bit arithmetic is then
 * trusted as tested (tests/unit/test_dfx_isal.c) for the ISA-L it was built
 * against. For benchmarks and tests. */
void dfx_isal_set_verify(struct dfx_isal *d, bool on);

/* Input bytes per ISA-L call while a search reads a header (default
 * DFX_ISAL_STEP; 0 means the default; it halves after each DFX_ISAL_NOMARK
 * for a fruitless search, down to DFX_ISAL_STEP_MIN). For benchmarks and
 * tests. */
void dfx_isal_set_step(struct dfx_isal *d, unsigned int step);

/* The step now in use: what dfx_isal_set_step() set, halved by each
 * fruitless search since (DFX_ISAL_STEP without ISA-L). */
unsigned int dfx_isal_get_step(const struct dfx_isal *d);

/* Tests only: report every boundary at or past output offset from skew bits
 * off, so tests can show that the check rejects a wrong one. skew 0 (the
 * default) turns it off. */
void dfx_isal_test_skew(struct dfx_isal *d, int skew, uint64_t from);

/* Copy d's counters (all zero without ISA-L). */
void dfx_isal_get_stats(const struct dfx_isal *d, struct dfx_isal_stats *out);

/* After DFX_ISAL_END: how many whole bytes before *next_in the decoder took
 * but the stream did not use (the padding bits of its last byte excepted).
 * The stream's end is next_in minus this. 0 before the end. */
unsigned int dfx_isal_unused(const struct dfx_isal *d);

/* CRC-32 as zlib's crc32() computes it (same seed and result), with ISA-L's
 * faster routine when built in. */
uint32_t dfx_isal_crc32(uint32_t crc, const unsigned char *buf, size_t len);

#endif
