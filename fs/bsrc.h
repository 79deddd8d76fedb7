/*
 * Archive byte sources: the one interface under every read of an archive's
 * bytes (zip directory and local headers, deflate input, stored members,
 * gzip header and trailer) and under the "changed under the mount" check.
 *
 * Two implementations:
 *   file    a local regular file (format/source.h's file source, pread on
 *           an fd). Its identity is its fstat at open: device, inode, size,
 *           mtime and ctime to the nanosecond, mode and owner. The check
 *           compares a fresh fstat with it (see bsrc_check()).
 *   remote  an object behind an http://, https:// or s3:// URL (fs/remote.h:
 *           ranged GETs through a block cache). Its identity is its URL,
 *           size, ETag and Last-Modified, taken by the request that opened
 *           it; every later fetch carries If-Match and is compared with it,
 *           and the check says whether one of them saw another object.
 *
 * format/ never sees this: it reads through the struct src that
 * bsrc_src() hands out (a callback interface, no file descriptor, no
 * HTTP). Nothing here logs: callers turn errors and changes into messages.
 *
 * Errors of reads through bsrc_src() (besides format/source.h's): a remote
 * source returns -EREMOTEIO when the server could not deliver the bytes
 * after the HTTP client's retries, and -ETIMEDOUT when it stopped
 * answering (bsrc_transient() is true for both: not damage, the next read
 * tries again), and -EIO once the object changed (bsrc_check() says so).
 *
 * Thread-safety: every function may be called concurrently on one source,
 * except bsrc_close().
 */
#ifndef NPYFS_FS_BSRC_H
#define NPYFS_FS_BSRC_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "source.h"

struct bsrc;
struct remote_ctx;
struct remote_stats;
struct dfx_store_key;

enum bsrc_kind { BSRC_FILE, BSRC_REMOTE };

/* What a source was at open: immutable, borrowed from the source. */
struct bsrc_ident {
    enum bsrc_kind kind;
    uint64_t size;
    /* The attributes a mount shows for it: a file's own (st, from its
     * fstat); for a remote object a regular file of mode 0444 owned by the
     * process's user, its mtime from Last-Modified (0 if none) */
    struct stat st;
    /* remote only (NULL for a file): the URL as given (it may carry a
     * signed query, a secret: show it only as bsrc_name() gives it), and
     * the ETag and Last-Modified as the server sent them ("" if none) */
    const char *url;
    const char *etag;
    const char *last_modified;
};

/* Open the local file path (dirfd < 0), or rel beneath the directory dirfd
 * (never outside it: see src_file_open_beneath()). Only a regular file is
 * opened. Returns 0 or a negative errno (those of src_file_open()). */
int bsrc_open_file(int dirfd, const char *rel, const char *path, struct bsrc **out);

/* Open the object at url through c (remote_open(): one round trip where
 * the server allows it, head_len bytes of its start fetched with its end).
 * Without head_len (a zip), a central directory that starts before the
 * bytes of the end fetched so is then asked for at once (bsrc_advise()),
 * so that reading it costs one more round trip, whatever its reads.
 * On error, why (len bytes, may be NULL) gets one line for a person that
 * names neither the URL nor any secret. Returns 0, or remote_open()'s
 * negative errno. */
int bsrc_open_url(struct remote_ctx *c, const char *url, size_t head_len, struct bsrc **out,
                  char *why, size_t len);

/* Accepts NULL. No read may be running. */
void bsrc_close(struct bsrc *b);

/* The reader format/ takes (borrowed, valid until bsrc_close()). */
struct src *bsrc_src(struct bsrc *b);

/* Read up to len bytes at off (src_pread()), or exactly len (-EIO if the
 * source ends first: src_read_exact()). */
int64_t bsrc_pread(struct bsrc *b, void *buf, size_t len, uint64_t off);
int bsrc_read_exact(struct bsrc *b, void *buf, size_t len, uint64_t off);

/* A hint that bytes [off, off + len) will be read soon: a remote source
 * starts fetching those it lacks (remote_advise()); a file ignores it (the
 * kernel reads ahead). Thread-safe, never blocks on I/O. */
void bsrc_advise(struct bsrc *b, uint64_t off, uint64_t len);

const struct bsrc_ident *bsrc_ident(const struct bsrc *b);

static inline bool bsrc_is_remote(const struct bsrc *b)
{
    return bsrc_ident(b)->kind == BSRC_REMOTE;
}

/* Is the source still what it was at open? Returns 0, or -EIO once it is
 * not (every later call too, for a remote source; a file is compared
 * afresh each time). Bytes read before a call that returns 0 are the
 * content the source had at open, so a reader checks after its reads and
 * before it uses their bytes.
 *   file: one fstat: device, inode, size, mtime and ctime unchanged. A
 *     write changes mtime and ctime before its data lands in the page
 *     cache, so a read that saw a new byte is followed by a check that sees
 *     new times. An unlinked file (renamed over, deleted) keeps its content
 *     and gets a new ctime from the unlink: the first check that finds it
 *     unlinked with size and mtime as at open takes that ctime as the one
 *     to compare with (once), so a replaced archive goes on serving the old
 *     file. Other changes of status (chmod, a link, a rename of the file
 *     itself) count as changes.
 *   remote: no request: whether a fetch got a 412 to its If-Match, or a
 *     reply whose ETag, Last-Modified or size differ. Bytes of another
 *     object are never handed out. */
int bsrc_check(struct bsrc *b);

/* Fill the archive-identity part of an index key (device, inode, size,
 * mtime): a file's own; for a remote object, 64-bit hashes of its URL
 * (without query or credentials) and of its ETag and Last-Modified in the
 * device and inode fields, its size, and mtime 0, so that a saved index
 * of a remote archive is keyed by URL + ETag + size. The member fields are
 * left as they are. */
void bsrc_key(const struct bsrc *b, struct dfx_store_key *k);

/* The source for messages, stats and /proc/mounts, into buf (len bytes,
 * always NUL-terminated): a file's path as given; a URL without its query,
 * fragment and user:password@ (http_redact_url()). Returns buf. */
const char *bsrc_name_of(const char *path_or_url, char *buf, size_t len);

/* The last component of a path, or of a URL's path (without its query or
 * fragment, %XX decoded; "" for a URL that ends in '/'), as a new string
 * (free()); NULL: out of memory. The name an archive shows under. */
char *bsrc_base_name(const char *path_or_url);

/* Is s a URL a remote source takes (http://, https://, s3://)? */
bool bsrc_is_url(const char *s);

/* A remote source's counters (remote_src_stats()); false for a file. */
bool bsrc_remote_stats(struct bsrc *b, struct remote_stats *out);

/* Is err a failure to fetch bytes that a later read may not meet (the
 * server failed or stopped answering), rather than damage or a change? */
static inline bool bsrc_transient(int err)
{
    return err == -EREMOTEIO || err == -ETIMEDOUT;
}

#endif
