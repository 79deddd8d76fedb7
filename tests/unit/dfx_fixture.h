/*
 * Test cases for saved indexes, shared by test_dfx_store.c (the codec, in
 * memory) and test_indexdir.c (the directory, on disk): data of a few
 * kinds, compressed here with zlib (raw deflate, or two gzip members), a
 * byte source over it that counts what is read through it, a key, and
 * helpers to build a complete index and check reads through one.
 *
 * Nothing here uses CHECK (check.h's counters belong to each test file):
 * helpers return what the caller checks.
 */
#ifndef NPYFS_TESTS_DFX_FIXTURE_H
#define NPYFS_TESTS_DFX_FIXTURE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dfx.h"
#include "dfx_crcs.h"
#include "dfx_store.h"
#include "source.h"

#define SPACING DFX_MIN_SPACING
#define CHUNK (128u << 10)

uint64_t rnd(uint64_t *s);

/* kind 0: incompressible; 1: text-like (a few words, compresses well);
 * 2: half and half, in 100 KiB stretches; 3: words each followed by a
 * random letter (short deflate blocks, windows that compress ~3x). */
unsigned char *make_data(size_t len, int kind, uint64_t *s);

/* Raw deflate (wbits -15) or gzip (31) of data, into a new buffer. */
unsigned char *zcompress(const unsigned char *data, size_t len, int wbits, size_t *out_len);

/* A source over memory that counts the reads through it and the lowest
 * offset read (under its lock: readers may be threads). */
struct count_src {
    struct src base; /* first: the source API sees this */
    struct src *inner;
    pthread_mutex_t lock;
    uint64_t preads, lowest;
};

void count_reset(struct count_src *c);

/* A test case: data, its compressed form, a stream over it, a key. */
struct fixture {
    unsigned char *data, *comp;
    size_t len, clen;
    struct count_src *src;
    struct dfx_stream st;
    struct dfx_store_key key;
};

/* 0, or -1 (out of memory, zlib failure). DFX_GZIP: two members, so that
 * points carry member_out > 0. */
int fixture_init(struct fixture *f, size_t len, int kind, enum dfx_framing framing,
                 uint64_t *s);
void fixture_destroy(struct fixture *f);

/* A complete index over f (one full pass from 0), windows kept compressed
 * in memory if zip_windows. NULL on failure. */
struct dfx_index *built_index(struct fixture *f, bool zip_windows);

/* n random extracts through ix compared with f's data: the number that
 * gave wrong bytes or a wrong count. */
int random_extracts(struct dfx_index *ix, const struct fixture *f, uint64_t *s, int n);

/* The chunk CRC table of f's data, fed in uneven pieces (NULL: no memory). */
struct dfx_crcs *table_of(const struct fixture *f, uint64_t *s);

bool same_table(const struct dfx_crcs *a, const struct dfx_crcs *b);

/* The same access points (positions, bits, member starts, window lengths)
 * and the same total, both indexes complete. */
bool same_points(struct dfx_index *a, struct dfx_index *b);

/* Set the trailing CRC-32 of an index file of len bytes in p, so that only
 * the structural checks stand between a change and the index. */
void fix_crc(unsigned char *p, size_t len);

void put64(unsigned char *p, uint64_t v);

#endif
