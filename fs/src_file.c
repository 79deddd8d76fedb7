/*
 * Local file sources. Contract in src_file.h.
 */
#define _GNU_SOURCE
#include "src_file.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

struct file_src {
    struct src base;
    int fd; /* owned, read-only */
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

/* The kernel starts reading what is not cached yet and returns (an error
 * only means no hint was taken). */
static void file_prefetch(struct src *s, uint64_t off, uint64_t len)
{
    struct file_src *f = (struct file_src *)s;

    if (off <= INT64_MAX && len <= INT64_MAX)
        (void)posix_fadvise(f->fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
}

static const struct src_ops file_ops = {file_pread, file_free, file_prefetch};

/* -EISDIR for a directory, -ENODEV for anything else that is not a regular
 * file, else 0. */
static int check_regular(const struct stat *st)
{
    if (S_ISDIR(st->st_mode))
        return -EISDIR;
    return S_ISREG(st->st_mode) ? 0 : -ENODEV;
}

/*
 * Opening a source never blocks and never opens what is not a regular file.
 * A plain open(O_RDONLY) of a FIFO waits for a writer, forever (a handler
 * thread stuck in the kernel, the reader in D state, the mount freezing as
 * more of them pile up), and opening a device node can have side effects
 * (a tape rewinds, a modem line hangs up) even with O_NONBLOCK. So the name
 * is resolved once, with O_PATH (which opens nothing), the descriptor's
 * file type is checked, and only a regular file is opened for reading,
 * through /proc/self/fd/N: that reopens the very inode the O_PATH
 * descriptor holds, so the file cannot be swapped in between. Without /proc
 * (ENOENT), the name is opened again with O_NONBLOCK (a FIFO opens at once,
 * and its type is refused), checked to be the same regular file, and
 * O_NONBLOCK cleared. reopen() takes pathfd (closed in every case) and
 * reopen_again(arg) redoes the resolution with extra open flags.
 */
static int reopen(int pathfd, int (*reopen_again)(const void *arg, int flags), const void *arg,
                  int *out)
{
    char proc[40];
    struct stat st, st2;
    int fd, ret;

    *out = -1;
    if (fstat(pathfd, &st) < 0) {
        ret = -errno;
        goto out;
    }
    ret = check_regular(&st);
    if (ret < 0)
        goto out;
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pathfd);
    fd = open(proc, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    ret = fd < 0 ? -errno : 0;
    if (ret == -ENOENT) { /* no /proc */
        fd = reopen_again(arg, O_NONBLOCK);
        ret = fd < 0 ? -errno : 0;
        if (ret == 0 && (fstat(fd, &st2) < 0 || check_regular(&st2) < 0 ||
                         st2.st_dev != st.st_dev || st2.st_ino != st.st_ino))
            ret = -EAGAIN; /* swapped between the two opens: try again later */
        if (ret == 0 && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)
            ret = -errno;
        if (ret < 0 && fd >= 0) {
            close(fd);
            fd = -1;
        }
    }
    *out = fd;
out:
    close(pathfd);
    return ret;
}

/* Contract in src_file.h. */
int src_file_from_fd(int fd, struct src **out)
{
    struct file_src *f;
    struct stat st;
    int err;

    if (fstat(fd, &st) < 0) {
        err = -errno;
        goto out_close;
    }
    err = check_regular(&st);
    if (err < 0)
        goto out_close;
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

static int open_path(const void *arg, int flags)
{
    return open(arg, flags | O_RDONLY | O_CLOEXEC | O_NOCTTY);
}

/* Contract in src_file.h. */
int src_file_open(const char *path, struct src **out)
{
    int fd, ret;

    *out = NULL;
    fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ret = reopen(fd, open_path, path, &fd);
    return ret < 0 ? ret : src_file_from_fd(fd, out);
}

struct beneath {
    int dirfd;
    const char *rel;
};

/* rel beneath dirfd, opened with flags (O_PATH, or for reading). */
static int open_beneath(const void *arg, int flags)
{
    const struct beneath *b = arg;
    struct open_how how = {
        .flags = (uint64_t)flags | O_CLOEXEC,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    long fd;

    if (!(flags & O_PATH))
        how.flags |= O_RDONLY | O_NOCTTY;
    fd = syscall(SYS_openat2, b->dirfd, b->rel, &how, sizeof(how));
    /* Before Linux 5.6 (no openat2): only a symlink as the last component can
     * be refused, so directories swapped for links are not caught there. */
    if (fd < 0 && errno == ENOSYS)
        fd = openat(b->dirfd, b->rel, (int)how.flags | O_NOFOLLOW);
    return (int)fd;
}

/* Contract in src_file.h. */
int src_file_open_beneath(int dirfd, const char *rel, struct src **out)
{
    struct beneath b = {dirfd, rel};
    int fd, ret;

    *out = NULL;
    fd = open_beneath(&b, O_PATH);
    if (fd < 0)
        return -errno;
    ret = reopen(fd, open_beneath, &b, &fd);
    return ret < 0 ? ret : src_file_from_fd(fd, out);
}

/* Contract in src_file.h. */
int src_file_fd(const struct src *s)
{
    if (s->ops != &file_ops)
        return -1;
    return ((const struct file_src *)s)->fd;
}
