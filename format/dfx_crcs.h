/*
 * Chunk CRC tables: the CRC-32 of every fixed-size chunk of a member's
 * uncompressed bytes, so that any chunk a reader decodes or reads can be
 * checked against what the first full pass saw.
 *
 * crc[i] is the CRC-32 of uncompressed bytes [i * chunk, min((i + 1) *
 * chunk, size)). A table is built by one full pass (which also checks the
 * member's own CRC-32), saved with the member's index (dfx_store.h), and
 * never changed once built: after dfx_crcs_feed() has seen every byte, any
 * number of threads may read it. One allocation: free() it.
 */
#ifndef NPYFS_FORMAT_DFX_CRCS_H
#define NPYFS_FORMAT_DFX_CRCS_H

#include <stddef.h>
#include <stdint.h>

struct dfx_crcs {
    uint64_t size;   /* uncompressed bytes covered */
    uint64_t count;  /* (size + chunk - 1) / chunk */
    uint32_t chunk;  /* bytes per chunk, > 0 */
    uint32_t crc[];  /* count of them */
};

/* A zeroed table for size bytes in chunks of chunk bytes, ready for
 * dfx_crcs_feed(). 0, -EINVAL (chunk 0, or too many chunks) or -ENOMEM. */
int dfx_crcs_new(uint64_t size, uint32_t chunk, struct dfx_crcs **out);

/* Add len output bytes at offset off to the table. Bytes must be fed in
 * order, each exactly once, from offset 0 (any piece sizes). */
void dfx_crcs_feed(struct dfx_crcs *t, uint64_t off, const void *buf, size_t len);

/* CRC-32 of buf (ISA-L's routine when built in: same result as zlib's). */
uint32_t dfx_crcs_of(const void *buf, size_t len);

/* CRC-32 of the whole output, combined from the chunks' CRCs. */
uint32_t dfx_crcs_whole(const struct dfx_crcs *t);

#endif
