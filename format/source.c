/*
 * Byte sources: file (pread on an fd) and memory. Contract in source.h.
 */
#define _GNU_SOURCE
#include "source.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

struct file_src {
    struct src base;
    int fd; /* owned, read-only */
};

struct mem_src {
    struct src base;
    const unsigned char *buf; /* borrowed */
};

static int64_t file_pread(struct src *s, void *buf, size_t len, uint64_t off)
{
    struct file_src *f = (struct file_src *)s;
    size_t done = 0;

    while (done < len) {
        ssize_t n = pread(f->fd, (char *)buf + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (int64_t)done;
}

static void file_free(struct src *s)
{
    struct file_src *f = (struct file_src *)s;
    close(f->fd);
    free(f);
}

static const struct src_ops file_ops = {file_pread, file_free};

static int64_t mem_pread(struct src *s, void *buf, size_t len, uint64_t off)
{
    struct mem_src *m = (struct mem_src *)s;
    if (off >= s->size)
        return 0;
    if (len > s->size - off)
        len = (size_t)(s->size - off);
    memcpy(buf, m->buf + off, len);
    return (int64_t)len;
}

static void mem_free(struct src *s)
{
    free(s);
}

static const struct src_ops mem_ops = {mem_pread, mem_free};

/* Contract in source.h. */
/* A file source over fd, which it owns from here on (closed on error). */
static int file_from_fd(int fd, struct src **out)
{
    struct file_src *f;
    struct stat st;
    int err;

    if (fstat(fd, &st) < 0) {
        err = -errno;
        goto out_close;
    }
    if (S_ISDIR(st.st_mode)) {
        err = -EISDIR;
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        err = -EINVAL;
        goto out_close;
    }
    f = calloc(1, sizeof(*f));
    if (!f) {
        err = -ENOMEM;
        goto out_close;
    }
    f->base.ops = &file_ops;
    f->base.size = (uint64_t)st.st_size;
    f->fd = fd;
    *out = &f->base;
    return 0;

out_close:
    close(fd);
    return err;
}

int src_file_open(const char *path, struct src **out)
{
    int fd;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    return file_from_fd(fd, out);
}

/* Contract in source.h. */
int src_file_open_beneath(int dirfd, const char *rel, struct src **out)
{
    struct open_how how = {
        .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    long fd;

    *out = NULL;
    fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
    /* Before Linux 5.6 (no openat2): only a symlink as the last component can
     * be refused, so directories swapped for links are not caught there. */
    if (fd < 0 && errno == ENOSYS)
        fd = openat(dirfd, rel, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    return file_from_fd((int)fd, out);
}

/* Contract in source.h. */
int src_file_fd(const struct src *s)
{
    if (s->ops != &file_ops)
        return -1;
    return ((const struct file_src *)s)->fd;
}

/* Contract in source.h. */
int src_mem_new(const void *buf, size_t len, struct src **out)
{
    struct mem_src *m;

    *out = NULL;
    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->base.ops = &mem_ops;
    m->base.size = len;
    m->buf = buf;
    *out = &m->base;
    return 0;
}

/* Contract in source.h. */
void src_free(struct src *s)
{
    if (s)
        s->ops->free(s);
}

/* Contract in source.h. */
int64_t src_pread(struct src *s, void *buf, size_t len, uint64_t off)
{
    return s->ops->pread(s, buf, len, off);
}

/* Contract in source.h. */
int src_read_exact(struct src *s, void *buf, size_t len, uint64_t off)
{
    int64_t n = src_pread(s, buf, len, off);
    if (n < 0)
        return (int)n;
    return (uint64_t)n == len ? 0 : -EIO;
}
