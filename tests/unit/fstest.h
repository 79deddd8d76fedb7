/*
 * Helpers for the unit tests of fs/ (test_fs_*.c), which drive the daemon's
 * code without a mount: temporary directories, test data, real archive
 * files written here (zip with stored and deflate members, gzip files of
 * one or more members, .npy headers), the daemon's log captured, and a
 * byte-for-byte reader of members through member_chunk().
 *
 * Single-threaded setup helpers (they exit(2) when the machine fails them:
 * out of memory, no temporary directory), except ft_log_*, which are
 * thread-safe.
 */
#ifndef NPYFS_TESTS_FSTEST_H
#define NPYFS_TESTS_FSTEST_H

#include "archive.h"
#include "cache.h"
#include "fs.h"
#include "member.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>


/* ---- data ---- */

/* len bytes that deflate well (runs of small values, words, a slow ramp),
 * different for each seed. */
void ft_fill_compressible(unsigned char *p, size_t len, uint64_t seed);
/* len bytes that do not compress (xorshift). */
void ft_fill_random(unsigned char *p, size_t len, uint64_t seed);
/* A new buffer of len bytes, filled by one of the above (caller frees). */
unsigned char *ft_data(size_t len, bool compressible, uint64_t seed);
/* A .npy file of uint8 (descr '|u1') with n payload bytes of the given kind:
 * a real header (so a gzip of it is sized from the header). Returns the
 * buffer (caller frees) with *len its total size. */
unsigned char *ft_npy(size_t n, bool compressible, uint64_t seed, size_t *len);

/* ---- archives ---- */

/* Points where a deflate stream starts a new block at a byte boundary after
 * a full flush: out is the uncompressed offset, in the compressed offset
 * (from the start of the deflate data) of the first byte of that block. */
struct ft_flush {
    uint64_t out, in;
};

/* ft_member.level: deflate with stored blocks only (zlib's level 0), whose
 * length depends on the data's length alone. */
#define FT_STORED_BLOCKS (-1)

struct ft_member {
    const char *name;
    const unsigned char *data; /* borrowed */
    size_t len;
    int method;         /* 0 stored, 8 deflate */
    int level;          /* deflate level 1-9, 0 the default, or FT_STORED_BLOCKS */
    size_t flush_every; /* deflate: a full flush every this many input bytes (0: none) */
    /* filled by ft_write_zip() */
    uint64_t data_offset; /* first byte of the member's data in the zip file */
    uint64_t csize;
    uint32_t crc;
    struct ft_flush *flush; /* owned (ft_members_free()): flush points, in order */
    size_t nflush;
};

/* Write a zip file of n members at path (no ZIP64: every size < 4 GiB).
 * Returns 0 or -1 (errno set). */
int ft_write_zip(const char *path, struct ft_member *m, size_t n);
void ft_members_free(struct ft_member *m, size_t n);

/* Write a gzip file at path of nparts members, part i holding lens[i] bytes
 * of parts[i] (the file's output is their concatenation). Returns 0 or -1. */
int ft_write_gzip(const char *path, const unsigned char *const *parts, const size_t *lens,
                  size_t nparts);

/* Write len bytes at path (created or truncated, mode 0644). 0 or -1. */
int ft_write_file(const char *path, const void *data, size_t len);
/* Read the whole file at path into a new buffer (caller frees), or NULL. */
unsigned char *ft_read_file(const char *path, size_t *len);

/* ---- temporary directories ---- */

/* A new directory /tmp/<tag>.XXXXXX (caller frees the string). */
char *ft_tempdir(const char *tag);
/* Remove path and everything below it (permissions restored on the way;
 * symlinks are removed, never followed). */
void ft_rmtree(const char *path);
/* dir + "/" + name in a new string (caller frees). */
char *ft_path(const char *dir, const char *name);

/* ---- the daemon's log ---- */

/* Capture fuse_log() lines (instead of printing them): call once, first. */
void ft_log_capture(void);
/* Forget what was captured. */
void ft_log_clear(void);
/* Was a line containing s logged since the last clear? */
bool ft_log_has(const char *s);
/* Lines logged since the last clear. */
unsigned ft_log_lines(void);

/* ---- reading members ---- */

/* Read [off, off + len) of a ARCHIVE_DEFLATE member through member_chunk()
 * with cache c, as the READ handler does, into buf. Returns 0 or the first
 * error (buf then holds what came before it). */
int ft_read_deflate(struct archive *a, struct archive_member *m, struct cache *c, uint64_t off,
                    size_t len, unsigned char *buf);
/* Same for a ARCHIVE_STORED member through member_read_stored(). */
int ft_read_stored(struct archive *a, struct archive_member *m, uint64_t off, size_t len,
                   unsigned char *buf);

/* A small, deterministic pseudo-random generator (xorshift64*), one per
 * thread. */
static inline uint64_t ft_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

/* Block until n threads have called it (a reusable barrier on a mutex and
 * a condition; pthread_barrier_t is fine too, but this one is TSan-quiet on
 * every libc). */
struct ft_barrier {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned n, waiting, round;
};
void ft_barrier_init(struct ft_barrier *b, unsigned n);
void ft_barrier_wait(struct ft_barrier *b);
void ft_barrier_destroy(struct ft_barrier *b);

#endif
