/*
 * Deflate history windows: the size of the history a DEFLATE decoder needs
 * to resume inside a stream (RFC 1951's largest back-reference distance;
 * docs/FORMATS.md section 4, "DEFLATE streams and access points"),
 * and the codec that keeps such a window zlib-compressed in memory or in an
 * index file.
 *
 * A window is compressed once and inflated whenever a decoder starts from
 * it, as a zlib stream whose Adler-32 checks it on the way back: with
 * ISA-L when npyfs is built with it (about twice as fast both ways as
 * zlib's level 1, the stream slightly larger), else zlib's level 1. Either
 * build reads what the other wrote.
 *
 * No state: every function may be called from any thread.
 */
#ifndef NPYFS_FORMAT_WINDOW_H
#define NPYFS_FORMAT_WINDOW_H

#include <stdint.h>

/* Bytes of history a decoder may refer back to: 32 KiB. */
#define WINDOW_SIZE 32768

/* Compress len (1..WINDOW_SIZE) raw bytes. *z gets a new buffer (owned by
 * the caller: free()) of *zlen bytes. Returns 0, -EINVAL (len out of range,
 * or zlib refused), -ENOMEM. On error *z is NULL and *zlen 0. */
int window_deflate(const unsigned char *raw, uint32_t len, unsigned char **z, uint32_t *zlen);

/* Inflate zlen bytes at z into exactly len raw bytes at raw. Returns 0, or
 * -EIO when z is not a zlib stream of exactly len bytes (or its Adler-32
 * does not match), or -ENOMEM. */
int window_inflate(const unsigned char *z, uint32_t zlen, unsigned char *raw, uint32_t len);

#endif
