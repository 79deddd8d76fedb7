/*
 * ISA-L inflate for dfx.c: a raw deflate decoder that can start at an access
 * point (a block boundary at any bit, with up to 32 KiB of history) and that
 * says exactly where the deflate stream ended, so a gzip trailer can follow.
 * Internal to format/; dfx.c is the only user.
 *
 * ISA-L decodes about twice as fast as zlib but cannot stop at block
 * boundaries the way inflate(Z_BLOCK) does, so it cannot record access points:
 * dfx.c decodes with it only behind the index frontier.
 *
 * Built without ISA-L (NPYFS_HAVE_ISAL undefined), dfx_isal_enabled() is
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

#include "dfx.h"

/* dfx_isal_inflate(): the final block of the stream has been decoded and all
 * its output handed out. */
#define DFX_ISAL_END 1

struct dfx_isal;

/* Whether an index created with decoder d decodes with ISA-L: DFX_DECODER_AUTO
 * reads NPYFS_DECODER ("zlib" or "isal") from the environment, ISA-L if unset
 * or unknown. Always false without ISA-L. Reads the environment: don't race
 * it with setenv(). */
bool dfx_isal_enabled(enum dfx_decoder d);

/* A decoder (~90 KiB), not yet started. 0, -ENOMEM, or -EOPNOTSUPP without ISA-L. */
int dfx_isal_new(struct dfx_isal **out);

/* Accepts NULL. */
void dfx_isal_free(struct dfx_isal *d);

/* Start a raw deflate stream at a block boundary. bits (0-7) of the byte
 * before the first input byte are still unread: they are the top bits of
 * prev. window (window_len <= DFX_WINDOW_SIZE bytes, borrowed for this call
 * only: it is copied) is the output before the boundary. Any earlier state
 * is dropped. 0, or -EINVAL for bad arguments. */
int dfx_isal_start(struct dfx_isal *d, int bits, unsigned char prev, const unsigned char *window,
                   uint32_t window_len);

/* Decode from next_in/avail_in into next_out/avail_out (*avail_out > 0),
 * advancing all four. ISA-L keeps input it has read ahead in a bit buffer, so
 * *next_in may run up to 8 bytes past what the stream used; see
 * dfx_isal_unused(). Returns 0 (output full, or more input needed: a call
 * that got no new input and made no output will never make progress),
 * DFX_ISAL_END, or -EIO for invalid deflate data (bad block, symbol or
 * distance). Output made before an error has been written and counted. */
int dfx_isal_inflate(struct dfx_isal *d, unsigned char **next_in, unsigned int *avail_in,
                     unsigned char **next_out, unsigned int *avail_out);

/* After DFX_ISAL_END: how many whole bytes before *next_in the decoder took
 * but the stream did not use (the padding bits of its last byte excepted).
 * The stream's end is next_in minus this. 0 before the end. */
unsigned int dfx_isal_unused(const struct dfx_isal *d);

/* CRC-32 as zlib's crc32() computes it (same seed and result), with ISA-L's
 * faster routine when built in. */
uint32_t dfx_isal_crc32(uint32_t crc, const unsigned char *buf, size_t len);

#endif
