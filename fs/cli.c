/*
 * What the commands share. Contract in cli.h.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "archive.h"
#include "bsrc.h"
#include "fs.h"
#include "net.h"
#include "npy.h"
#include "options.h"
#include "s3.h"
#include "source.h"
#include "zip.h"

/* Contract in cli.h. */
void cli_report_open_error(const char *path, int err, uint64_t max_ratio, const char *why)
{
    unsigned char magic[NPY_MAGIC_LEN] = {0}, sig[4];
    struct zip_end_info z;
    struct bsrc *b = NULL;
    struct src *s;
    char buf[128], name[PATH_MAX + 64];
    unsigned long long size;

    bsrc_name_of(path, name, sizeof(name));
    if (why && why[0]) {
        fprintf(stderr, "npyfs: %s: %s\n", name, why);
        return;
    }
    if ((err != -EINVAL && err != -EIO) || bsrc_is_url(path) ||
        bsrc_open_file(-1, NULL, path, &b) < 0)
        goto generic;
    s = bsrc_src(b);
    size = (unsigned long long)s->size;
    src_pread(s, magic, sizeof(magic), 0);
    if (memcmp(magic, NPY_MAGIC, NPY_MAGIC_LEN) == 0) {
        fprintf(stderr, "npyfs: %s: a plain .npy file, not an archive: it is already mappable "
                "with np.load(path, mmap_mode='r'); to show it in a mount, mount a directory "
                "holding it (passed through as is)\n", path);
        bsrc_close(b);
        return;
    }
    if ((magic[0] == 0x1f && magic[1] == 0x8b) || zip_end_info(s, &z) < 0) {
        bsrc_close(b);
        goto generic;
    }
    if (z.eocd && z.cd_end > s->size) {
        fprintf(stderr, "npyfs: %s: truncated or not a zip: its end record places the zip "
                "directory at bytes %llu to %llu, past the end of the file (%llu bytes)\n", path,
                (unsigned long long)z.cd_start, (unsigned long long)z.cd_end, size);
    } else if (!z.eocd && z.local_header) {
        fprintf(stderr, "npyfs: %s: truncated or not a zip: it starts like one, but its last "
                "%llu bytes hold no end of central directory record, which ends every zip "
                "(file of %llu bytes)\n", path, size < 65557 ? size : 65557ull, size);
    } else if (z.eocd && z.cd_end > z.cd_start &&
               (src_read_exact(s, sig, 4, z.cd_start) < 0 || memcmp(sig, "PK\1\2", 4) != 0)) {
        fprintf(stderr, "npyfs: %s: truncated or not a zip: no zip directory at byte %llu, "
                "where its end record places it (file of %llu bytes)\n", path,
                (unsigned long long)z.cd_start, size);
    } else {
        bsrc_close(b);
        goto generic;
    }
    bsrc_close(b);
    return;
generic:
    fprintf(stderr, "npyfs: %s: %s\n", name, archive_problem(err, max_ratio, buf, sizeof(buf)));
}

/* Contract in cli.h. */
int cli_open_archive(struct net *net, const char *path, uint64_t spacing,
                        const struct archive_limits *lim, struct archive **out)
{
    char why[256] = "";
    int ret = bsrc_is_url(path)
                  ? archive_open_url(net, path, spacing, lim, out, why, sizeof(why))
                  : archive_open(path, spacing, lim, out);

    if (ret < 0)
        cli_report_open_error(path, ret, lim ? lim->max_ratio : 0, why);
    return ret;
}

/* Contract in cli.h. */
bool cli_is_s3_prefix(const char *url)
{
    struct s3_location loc;
    bool prefix;

    if (!s3_is_url(url) || s3_parse_url(url, &loc) < 0)
        return false;
    prefix = loc.prefix;
    s3_location_destroy(&loc);
    return prefix;
}

/* Contract in cli.h. */
struct net *cli_make_net(const struct options *opts, const char *const *sources, int n)
{
    bool any = opts->index_url && bsrc_is_url(opts->index_url), s3 = false;
    struct net_opts no = opts->net_opts;
    struct net *net;
    char msg[512];
    int ret;

    for (int i = 0; i < n; i++) {
        any |= bsrc_is_url(sources[i]);
        s3 |= s3_is_url(sources[i]);
        if (!no.s3_source && s3_is_url(sources[i]))
            no.s3_source = sources[i];
    }
    s3 |= opts->index_url && s3_is_url(opts->index_url);
    if (!no.s3_source && s3)
        no.s3_source = opts->index_url;
    if (!any)
        return NULL;
    ret = net_new(&no, s3, &net, msg, sizeof(msg));
    if (ret < 0) {
        fprintf(stderr, "npyfs: %s\n", msg[0] ? msg : strerror(-ret));
        exit(1);
    }
    return net;
}

/* An archive by its file name, as a directory mount sees it (README,
 * Sources): NAME.npz or NAME.npy.gz, case-sensitive, NAME not empty. */
static bool archive_name(const char *name)
{
    size_t n = strlen(name);

    return (n > 4 && strcmp(name + n - 4, ".npz") == 0) ||
           (n > 7 && strcmp(name + n - 7, ".npy.gz") == 0);
}

/* The list being filled: nftw() passes no argument through (CLI only). */
static struct cli_archive_list *walk_list;

static int walk_visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    char *copy;

    if (type == FTW_DNR) {
        fprintf(stderr, "npyfs: %s: cannot read the directory\n", path);
        walk_list->status = 1;
        return 0;
    }
    if (type != FTW_F || !S_ISREG(st->st_mode) || !archive_name(path + ftw->base))
        return 0;
    if (fs_grow(&walk_list->paths, &walk_list->cap, walk_list->count,
                sizeof(*walk_list->paths), 64) < 0 || !(copy = strdup(path))) {
        errno = ENOMEM;
        return -1; /* stops the walk */
    }
    walk_list->paths[walk_list->count++] = copy;
    return 0;
}

static int compare_paths(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Fill l (zeroed) with the archives below dir; says on stderr when there
 * is none. Returns 0, or 1 after a message: the walk failed (dir
 * unreadable, out of memory) or some directory in it could not be read. */
static int collect_archives(const char *dir, struct cli_archive_list *l)
{
    walk_list = l;
    if (nftw(dir, walk_visit, 32, FTW_PHYS) != 0) {
        fprintf(stderr, "npyfs: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    walk_list = NULL;
    if (l->count == 0)
        fprintf(stderr, "npyfs: %s: no .npz or .npy.gz files in it\n", dir);
    if (l->count > 1)
        qsort(l->paths, l->count, sizeof(*l->paths), compare_paths);
    return l->status;
}

/* Contract in cli.h. */
void cli_archive_list_destroy(struct cli_archive_list *l)
{
    for (size_t i = 0; i < l->count; i++)
        free(l->paths[i]);
    free(l->paths);
}

/* The archives under an s3:// prefix SOURCE, as s3:// URLs into l (zeroed),
 * as collect_archives() does for a directory. Returns 0, or 1 after a
 * message. */
static int collect_objects(struct net *net, const char *url, struct cli_archive_list *l)
{
    struct s3_listing lst;
    struct s3_location loc;
    char msg[512] = "", name[PATH_MAX + 64];
    int ret;

    bsrc_name_of(url, name, sizeof(name));
    ret = net_list(net, url, &lst, msg, sizeof(msg));
    if (ret < 0) {
        fprintf(stderr, "npyfs: %s: cannot list it: %s\n", name, msg[0] ? msg : strerror(-ret));
        return 1;
    }
    ret = s3_parse_url(url, &loc);
    for (size_t i = 0; ret == 0 && i < lst.count; i++) {
        char *copy;
        if (fs_grow(&l->paths, &l->cap, l->count, sizeof(*l->paths), 64) < 0 ||
            asprintf(&copy, "s3://%s/%s", loc.bucket, lst.objs[i].key) < 0) {
            ret = -ENOMEM;
            break;
        }
        l->paths[l->count++] = copy;
    }
    if (ret == 0)
        s3_location_destroy(&loc);
    s3_listing_destroy(&lst);
    if (ret < 0) {
        fprintf(stderr, "npyfs: %s: out of memory\n", name);
        return 1;
    }
    if (l->count == 0)
        fprintf(stderr, "npyfs: %s: no .npz or .npy.gz object under this prefix\n", name);
    return 0;
}

/* Contract in cli.h. */
bool cli_is_tree(const char *src)
{
    struct stat st;

    if (bsrc_is_url(src))
        return cli_is_s3_prefix(src);
    return stat(src, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Contract in cli.h. */
int cli_collect_tree(struct net *net, const char *src, struct cli_archive_list *l)
{
    return bsrc_is_url(src) ? collect_objects(net, src, l) : collect_archives(src, l);
}

/* Contract in cli.h. */
int cli_probe_mount(const char *mnt)
{
    pid_t pid = fork();
    int status;

    if (pid == 0) {
        struct statfs sf;
        _exit(statfs(mnt, &sf) == 0 ? 0 : errno > 0 && errno < 255 ? errno : 254);
    }
    if (pid < 0)
        return -errno;
    for (int i = 0; i < 500; i++) { /* 5 s */
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? -WEXITSTATUS(status) : -EIO;
        if (r < 0)
            return -errno;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -ETIMEDOUT;
}

/* Contract in cli.h. */
char *cli_absolute_mountpoint(const char *mnt)
{
    char *path = mnt[0] ? strdup(mnt) : NULL, *out = NULL;

    if (!mnt[0])
        errno = ENOENT;
    for (int hops = 0; path && hops < 40; hops++) {
        char *slash, *parent, link[PATH_MAX];
        const char *base;
        size_t n;
        ssize_t k;

        for (;;) { /* "a/", "a/." and "a/./" are a */
            n = strlen(path);
            if (n > 1 && path[n - 1] == '/')
                path[n - 1] = '\0';
            else if (n > 2 && strcmp(path + n - 2, "/.") == 0)
                path[n - 2] = '\0';
            else
                break;
        }
        slash = strrchr(path, '/');
        base = slash ? slash + 1 : path;
        if (strcmp(base, ".") == 0 || strcmp(base, "..") == 0 || !base[0]) {
            out = realpath(path[0] ? path : "/", NULL); /* a directory above the mount */
            break;
        }
        if (slash) {
            *slash = '\0';
            parent = realpath(slash == path ? "/" : path, NULL);
        } else {
            parent = realpath(".", NULL);
        }
        if (!parent || asprintf(&out, "%s/%s", strcmp(parent, "/") ? parent : "", base) < 0) {
            free(parent);
            out = NULL;
            break;
        }
        k = readlink(out, link, sizeof(link) - 1);
        if (k <= 0) { /* not a symlink: that is the path */
            free(parent);
            break;
        }
        link[k] = '\0';
        free(path);
        if (link[0] == '/')
            path = strdup(link);
        else if (asprintf(&path, "%s/%s", strcmp(parent, "/") ? parent : "", link) < 0)
            path = NULL;
        free(parent);
        free(out);
        out = NULL;
        if (hops == 39)
            errno = ELOOP;
    }
    free(path);
    return out;
}
