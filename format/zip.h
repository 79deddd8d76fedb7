/*
 * Zip central directory reader (docs/FORMATS.md section 2, "Zip archives").
 *
 * Sizes, CRC and method come from the central directory (with its ZIP64
 * extra); the data offset comes from the local header (30 + its own name
 * length + its own extra length), because numpy writes a zip64 extra in the
 * local header only. Local-header sizes are never trusted.
 *
 * Errors: -EINVAL not a zip (no end of central directory record) or a
 * malformed directory, -EIO the archive is cut short (a record runs past the
 * end of the source), -EOPNOTSUPP multi-disk archives, -ENOMEM.
 * The parsed archive is immutable: safe to read from many threads.
 */
#ifndef NPYFS_FORMAT_ZIP_H
#define NPYFS_FORMAT_ZIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "source.h"

#define ZIP_METHOD_STORED 0
#define ZIP_METHOD_DEFLATE 8

#define ZIP_FLAG_ENCRYPTED 0x0001
#define ZIP_FLAG_DESCRIPTOR 0x0008
#define ZIP_FLAG_UTF8 0x0800

struct zip_member {
    char *name;           /* owned: raw name bytes + NUL (a NUL inside the name is
                             kept; name_len is the true length) */
    size_t name_len;
    uint16_t method;
    uint16_t flags;
    uint32_t crc32;
    uint64_t csize;       /* compressed (stored) size, from the central directory */
    uint64_t usize;       /* uncompressed size, from the central directory */
    uint64_t lho;         /* offset of the local file header */
    uint64_t data_offset; /* first byte of the member's data; valid when !unsupported */
    bool is_dir;          /* name ends in '/' */
    /* 0 when npyfs can serve the member; otherwise -EOPNOTSUPP (encrypted, a
     * method other than stored/deflate, or an uncompressed size past
     * INT64_MAX, which no file size can hold) or -EIO (local header missing,
     * damaged, or data running past the end of the archive). See why. So a
     * servable member has usize, csize, data_offset and data_offset + csize
     * all <= INT64_MAX. */
    int unsupported;
    const char *why;      /* static text for unsupported, e.g. "encrypted"; NULL if 0 */
    /* The local header was read (data_offset and the local header's verdict
     * in unsupported are final). False only for a member of an archive
     * opened with ZIP_DEFER_LOCAL whose zip_member_locate() has not
     * succeeded yet (lho is then already the header's absolute offset). */
    bool located;
};

struct zip_archive {
    struct zip_member *members; /* owned, in central directory order */
    size_t count;
};

/* Parse the archive behind s (borrowed: must outlive nothing; the result
 * keeps no reference to it). Returns 0 and *out, or a negative errno and
 * *out == NULL. Members that cannot be served are still listed, with
 * unsupported set; only damage to the directory itself fails the call. */
int zip_archive_open(struct src *s, struct zip_archive **out);

/* Read no local header: members are left with located false, for
 * zip_member_locate() when each is first needed. For a source where each
 * read costs a round trip (a remote object): the headers lie all over the
 * archive, while the directory is in one piece at its end. */
#define ZIP_DEFER_LOCAL 1u

/* zip_archive_open() with flags (ZIP_DEFER_LOCAL, or 0). */
int zip_archive_open_flags(struct src *s, unsigned flags, struct zip_archive **out);

/* Read m's local header (m from an archive of s opened with
 * ZIP_DEFER_LOCAL): sets data_offset, or unsupported (-EIO) for a missing
 * or damaged header or data past the end; located becomes true. Returns 0
 * (whatever the verdict), or a negative errno from reading s (m is left as
 * it was: try again later). Not thread-safe for one m. */
int zip_member_locate(struct src *s, struct zip_member *m);

/* Accepts NULL. */
void zip_free(struct zip_archive *z);

/* What the end of a source says about it as a zip, for the message when
 * zip_archive_open() refused it: a source cut short loses its end of
 * central directory record (EOCD), or keeps one that places the directory
 * past its end. */
struct zip_end_info {
    bool local_header; /* it starts with a local file header (PK\3\4) */
    bool eocd;         /* an EOCD record lies in its last 65557 bytes (the last one) */
    uint64_t cd_start; /* eocd: where that record (or its ZIP64 record) places */
    uint64_t cd_end;   /* the directory, as stated (cd_end saturates at UINT64_MAX) */
};

/* Fill *out for the source s. Returns 0 or a negative errno from reading. */
int zip_end_info(struct src *s, struct zip_end_info *out);

/* Static name of a method: "stored", "deflate", "bzip2", "lzma", "zstd",
 * "deflate64", ... or "method N" formatted into buf (size >= 16). */
const char *zip_method_name(uint16_t method, char *buf, size_t size);

#endif
