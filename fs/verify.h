/*
 * The one full pass: a member's whole output read in order into its chunk
 * CRC table (CRC-32 of each FS_CHUNK_SIZE chunk), and the check of one
 * chunk against such a table.
 *
 * The pass reads a decoder's output (a deflate member, a gzip file being
 * sized) or a range of stored bytes of a source; it knows no archive or
 * member: what a pass means (the member's CRC-32, its size, damage) is its
 * caller's to check. Its callers: gzip sizing (archive.c), the scan of a
 * stored member (member.c) and the indexing pass (indexer.c).
 *
 * Ownership: the table handed out is the caller's (free()); the reader,
 * source and cache are borrowed for the call.
 * Locks: none, and no state: any number of passes run at once.
 * Errors: verify_pass() returns the reader's or the source's errno (-EIO: a
 * stream that ends inside a chunk it feeds, a stored range cut short),
 * -E2BIG (past the budget), -ECANCELED (stop raised), after_read's errno,
 * -ENOMEM; -EIO also for a size whose table cannot exist.
 */
#ifndef NPYFS_FS_VERIFY_H
#define NPYFS_FS_VERIFY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cache;
struct dfx_crcs;
struct dfx_reader;
struct src;

/* What a full pass reads: a decoder's output from where it stands (r), or
 * else the stored bytes [off, off + size) of src, read exactly. */
struct verify_input {
    struct dfx_reader *r;
    struct src *src;
    uint64_t off;
    /* output expected: the table's size; VERIFY_SIZE_UNKNOWN (r only): to
     * the end of the stream, the table grown as output comes (gzip sizing) */
    uint64_t size;
    uint64_t budget;         /* r only: -E2BIG once r's position passes it; 0: none */
    const atomic_bool *stop; /* -ECANCELED once raised, checked before every read
                              * (a stored range: while bytes remain); NULL: none */
    /* after every read, whatever it returned (the read's own error wins): a
     * negative return ends the pass with it (a stored scan: the archive's
     * change check); NULL: none */
    int (*after_read)(void *arg);
    /* once each read's bytes are in the table: the output so far, head
     * included; NULL: none */
    void (*progress)(void *arg, uint64_t done);
    void *arg;
    /* r with a known size only: decode into chunks of this cache and insert
     * each under (owner, its index) once whole; NULL: none */
    struct cache *feed;
    uint64_t owner;
};

#define VERIFY_SIZE_UNKNOWN UINT64_MAX

/* Read everything in in, in order, building the chunk CRC table
 * (FS_CHUNK_SIZE chunks) of its output. head[0..head_len) is output already
 * read from r before the pass (gzip sizing's .npy header): it counts, and
 * goes first into the table. Returns the output size (r: its position at
 * the end of the stream; a stored range: size) with *table set (owned; NULL
 * only for VERIFY_SIZE_UNKNOWN when memory ran out while growing it), or a
 * negative errno with *table NULL (see the top). The caller checks what the
 * bytes mean (a CRC-32, the index's total). */
int64_t verify_pass(const struct verify_input *in, const unsigned char *head, size_t head_len,
                    struct dfx_crcs **table);

/* Does chunk idx (len bytes at data) match table t? True without a table
 * (t NULL); false for an idx past the table. */
bool verify_chunk(const struct dfx_crcs *t, uint64_t idx, const unsigned char *data, size_t len);

#endif
