/*
 * Local file sources: a struct src (format/source.h) over a regular file,
 * read with pread on a descriptor the source owns.
 *
 * Opening never blocks and never opens what is not a regular file: a FIFO,
 * socket or device node swapped into a tree neither holds the opener (a
 * handler thread, a unit's lock) nor sees an open (how: src_file.c). The
 * size is taken at open (fstat) and never changes; reads past it return
 * short, as any source's.
 *
 * Thread-safety: every function is thread-safe; reads on one source may run
 * concurrently (pread: no file position).
 */
#ifndef NPYFS_FS_SRC_FILE_H
#define NPYFS_FS_SRC_FILE_H

#include "source.h"

/* Open path read-only. Only a regular file is opened: the name is resolved
 * with O_PATH and checked before anything is opened for reading, so a FIFO,
 * socket or device node never blocks the caller nor sees an open. On
 * success *out owns the fd; release with src_free(). Returns 0 or a
 * negative errno: -EISDIR a directory, -ENODEV anything else that is not a
 * regular file, -EAGAIN it was swapped while being opened (only without
 * /proc), others from open(). */
int src_file_open(const char *path, struct src **out);

/* Open rel, a path relative to the directory dirfd, read-only, never
 * leaving that directory: every component, symlinks included, must resolve
 * beneath it (openat2 RESOLVE_BENEATH), else -EXDEV. Otherwise as
 * src_file_open(). */
int src_file_open_beneath(int dirfd, const char *rel, struct src **out);

/* A source over fd, a descriptor open for reading, which the source owns
 * from here on (closed by src_free(), or right away on error). Returns 0,
 * -EISDIR, -ENODEV (not a regular file), -ENOMEM, or fstat()'s error. */
int src_file_from_fd(int fd, struct src **out);

/* The fd behind a file source, or -1 for other sources (borrowed). */
int src_file_fd(const struct src *s);

#endif
