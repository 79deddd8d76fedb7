/*
 * gzip member headers and trailers (RFC 1952; docs/FORMATS.md section 3, "gzip
 * files").
 *
 * The deflate data itself is decoded by dfx; this module only walks the
 * framing: where a member's deflate data starts, and what its trailer says.
 *
 * Errors: -EINVAL not a gzip member (bad magic, method other than deflate,
 * reserved flag bits), -EBADMSG a gzip header whose header CRC (FHCRC) does
 * not match it, -EIO header cut short by the end of the source. Pure
 * functions over a source: safe concurrently.
 */
#ifndef NPYFS_FORMAT_GZ_H
#define NPYFS_FORMAT_GZ_H

#include <stdint.h>

#include "source.h"

#define GZ_TRAILER_LEN 8

#define GZ_FLG_FTEXT 0x01
#define GZ_FLG_FHCRC 0x02
#define GZ_FLG_FEXTRA 0x04
#define GZ_FLG_FNAME 0x08
#define GZ_FLG_FCOMMENT 0x10

/* Parse the gzip member header at off. On success set *data_off to the offset
 * of the first byte of deflate data and return 0. */
int gz_read_header(struct src *s, uint64_t off, uint64_t *data_off);

/* Read the 8-byte trailer at off (CRC-32 then ISIZE, little-endian). */
int gz_read_trailer(struct src *s, uint64_t off, uint32_t *crc, uint32_t *isize);

/* ISIZE of the last member: the last 4 bytes of the source. -EIO if the
 * source is shorter than a minimal gzip member (18 bytes). */
int gz_last_isize(struct src *s, uint32_t *isize);

/* The last member's trailer as it stands at the end of the source: CRC-32
 * and ISIZE, the last 8 bytes (zero padding after the last member is read
 * as is: these are the file's last bytes, not a checked trailer). -EIO as
 * for gz_last_isize(). */
int gz_last_trailer(struct src *s, uint32_t *crc, uint32_t *isize);

#endif
