/*
 * .npy header parsing (docs/FORMATS.md section 1, ".npy files").
 *
 * npyfs never rewrites a header; it parses one to learn the exact size of the
 * file a gzip stream holds (data offset + itemsize * prod(shape)) and to show
 * dtype, shape and order in `npyfs ls`.
 *
 * Errors: -EINVAL for anything that is not a well-formed .npy header (bad
 * magic, unsupported version, malformed dict, bad shape), -EOVERFLOW when the
 * size does not fit in 63 bits, -ENOMEM. Pure functions: safe to call
 * concurrently.
 */
#ifndef NPYFS_FORMAT_NPY_H
#define NPYFS_FORMAT_NPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
/* Bytes needed to know the header length: magic, version, 4-byte HEADER_LEN. */
#define NPY_PREFIX_LEN 12
/* numpy supports 64 dimensions since 2.0 (32 before). */
#define NPY_MAX_DIMS 64
/* Largest header npyfs will read to size a gzip stream. numpy itself refuses
 * headers above 10000 characters unless told otherwise; 2.0 headers with
 * thousands of fields reach tens of KiB. */
#define NPY_HEADER_MAX (1u << 20)

struct npy_header {
    int major, minor;       /* version: (1,0), (2,0) or (3,0) */
    uint64_t header_len;    /* HEADER_LEN field: dict text incl. padding and '\n' */
    uint64_t data_offset;   /* 10 + header_len (v1) or 12 + header_len (v2/v3) */
    char *descr;            /* owned: the descr value's source text, e.g. "'<f8'" */
    bool fortran_order;
    int ndim;               /* 0 for a 0-d array */
    uint64_t shape[NPY_MAX_DIMS];
    bool size_known;        /* false for object dtypes and descrs we cannot size */
    bool has_object;        /* descr is or contains 'O' (payload is a pickle) */
    uint64_t itemsize;      /* valid when size_known */
    uint64_t data_size;     /* itemsize * prod(shape); valid when size_known */
    uint64_t total_size;    /* data_offset + data_size; valid when size_known */
};

/*
 * Look at the first len bytes of a file. If they start with the .npy magic and
 * a supported version and len >= NPY_PREFIX_LEN, set *data_offset to the
 * offset where the array data starts (the bytes that npy_parse() needs) and
 * return 0. -EINVAL: not .npy, or an unsupported version. -EAGAIN: len is too
 * short to tell (need NPY_PREFIX_LEN bytes).
 */
int npy_prefix(const unsigned char *buf, size_t len, uint64_t *data_offset);

/*
 * Parse a whole header: buf holds at least data_offset bytes of the file
 * (as found by npy_prefix()). Fills *h; on success h->descr is owned by h
 * (release with npy_header_destroy()). A descr that parses as Python but whose
 * itemsize npyfs cannot compute (object, or an exotic form) gives 0 with
 * size_known false. On error *h holds nothing to free.
 */
int npy_parse(const unsigned char *buf, size_t len, struct npy_header *h);

/* Accepts a zeroed or destroyed header. */
void npy_header_destroy(struct npy_header *h);

/*
 * Read and parse the .npy header at the start of a file through read, which
 * puts the first len bytes of the file into buf and returns how many it put
 * there (fewer at the file's end) or a negative errno; len only grows
 * between calls and buf is the same, so a reader may keep what it read and
 * read only the rest. It is called with NPY_PREFIX_LEN, then, if the header
 * is longer, with its data offset. buf holds NPY_HEADER_MAX + NPY_PREFIX_LEN
 * bytes; *got gets the bytes it holds afterwards. Returns 1 (h filled:
 * release with npy_header_destroy()), 0 (not a header npy_parse() accepts,
 * or longer than NPY_HEADER_MAX: h holds nothing to free), or read's
 * negative errno (*got: the bytes buf held before that call).
 */
int npy_read_header(int64_t (*read)(void *arg, unsigned char *buf, size_t len), void *arg,
                    unsigned char *buf, size_t *got, struct npy_header *h);

/*
 * The dtype of h's descr as JSON text that np.dtype() accepts after
 * json.loads() (`npyfs ls --json`): a type string as a JSON string, "<f8";
 * a structured descr as np.dtype's dict form, {"names": [...], "formats":
 * [...]}, because JSON has no tuples and np.dtype() refuses fields given as
 * lists. It adds "titles" when a field has a title, and "offsets" and
 * "itemsize" when the descr has padding fields ('', '|V4'), which it leaves
 * out as np.load does. A format is a type string, "(2, 3)<f8" for a subarray
 * field, or such an object for a nested struct. The text is ASCII (other
 * characters as \uXXXX; the header decoded as numpy decodes it: latin-1 for
 * versions 1 and 2, UTF-8 for 3). Returns its length with *out a new
 * NUL-terminated string (the caller frees it); -EINVAL for a descr with no
 * such form (a subarray of a struct) or one np.load refuses, -ENOMEM.
 * *out is NULL on error.
 */
int npy_dtype_json(const struct npy_header *h, char **out);

/*
 * When h's descr is a single string ('<f8'), its value ("<f8", escapes
 * decoded, other bytes as they are) as a new string *out of *len bytes plus
 * a NUL (the caller frees it). Returns 0, -EINVAL when the descr is not one
 * string (a struct, a tuple), -ENOMEM.
 */
int npy_dtype_string(const struct npy_header *h, char **out, size_t *len);

/*
 * Format the shape as Python prints it: "()", "(5,)", "(2, 3)". Writes at
 * most size bytes including the NUL; returns the length it needed (like
 * snprintf).
 */
int npy_format_shape(const struct npy_header *h, char *out, size_t size);

#endif
