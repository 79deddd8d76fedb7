/*
 * `npyfs stats`. Contract in cmd_stats.h.
 */
#define _GNU_SOURCE
#include "cmd_stats.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "bsrc.h"
#include "cli.h"
#include "mounts.h"
#include "usage.h"

/* The arguments of `npyfs CMD [--json|-j] OPERAND` (ls, stats): the one
 * operand (called what in messages); *json says if the flag was given. */
static const char *json_and_operand(const char *cmd, const char *what, int argc, char **argv,
                                    bool *json)
{
    const char *operand = NULL;

    *json = false;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0)
            *json = true;
        else if (argv[i][0] == '-' && argv[i][1])
            usage_die("unknown %s flag %s", cmd, argv[i]);
        else if (operand)
            usage_die("%s takes one %s", cmd, what);
        else
            operand = argv[i];
    }
    if (!operand)
        usage_die("%s needs %s", cmd, what);
    return operand;
}

/* The npyfs mounts whose source (first SOURCE, as /proc/mounts shows it)
 * is name: how many, and the last one's mount point. */
struct by_source {
    const char *name;
    int count;
    char *mountpoint; /* owned */
};

static void match_source(const char *mountpoint, const char *type, const char *source,
                         void *arg)
{
    struct by_source *b = arg;

    if (strcmp(type, "fuse.npyfs") != 0 || strcmp(source, b->name) != 0)
        return;
    if (b->count == 1)
        fprintf(stderr, "npyfs: %s: mounted on %s\n", b->name, b->mountpoint);
    if (b->count >= 1)
        fprintf(stderr, "npyfs: %s: mounted on %s\n", b->name, mountpoint);
    b->count++;
    free(b->mountpoint);
    b->mountpoint = strdup(mountpoint);
}

/* The mount point of the one npyfs mount of url (its first SOURCE), or
 * NULL after a message (none, several, or out of memory). Owned. */
static char *mount_of_url(const char *url)
{
    char name[4096];
    struct by_source b = {.name = bsrc_name_of(url, name, sizeof(name))};

    if (mounts_each(match_source, &b) < 0) {
        fprintf(stderr, "npyfs: cannot read the mount table (/proc/self/mountinfo)\n");
        free(b.mountpoint);
        return NULL;
    }
    if (b.count == 0) {
        fprintf(stderr, "npyfs: %s: no npyfs mount of this URL (stats takes a mount point, "
                "or the URL a mount was made from: its first SOURCE)\n", name);
        return NULL;
    }
    if (b.count > 1) {
        fprintf(stderr, "npyfs: %s: mounted %d times: give the mount point\n", name, b.count);
        free(b.mountpoint);
        return NULL;
    }
    if (!b.mountpoint)
        fputs("npyfs: out of memory\n", stderr);
    return b.mountpoint;
}

/* Print the stats of the mount on mnt. Returns an exit status. */
static int stats_of(const char *mnt, bool json)
{
    char *abs, *buf;
    struct mounts_entry me;
    ssize_t n;
    struct stat st;

    abs = cli_absolute_mountpoint(mnt);
    if (!abs || mounts_find(abs, &me) <= 0) {
        if (lstat(mnt, &st) < 0)
            fprintf(stderr, "npyfs: %s: %s\n", mnt,
                    errno == ENOENT ? "no such directory" : strerror(errno));
        else
            fprintf(stderr, "npyfs: %s: not a mount point (give the directory an npyfs "
                    "mount is on)\n", mnt);
        free(abs);
        return 1;
    }
    if (strcmp(me.type, "fuse.npyfs") != 0) {
        fprintf(stderr, "npyfs: %s: not an npyfs mount (it is %s)\n", mnt, me.type);
        free(abs);
        return 1;
    }
    buf = malloc(1 << 16);
    if (!buf) {
        fputs("npyfs: out of memory\n", stderr);
        free(abs);
        return 1;
    }
    n = getxattr(abs, json ? "user.npyfs.stats.json" : "user.npyfs.stats", buf, 1 << 16);
    if (n < 0) {
        int err = errno;
        if (err == ENOTCONN)
            fprintf(stderr, "npyfs: %s: the daemon of this mount is gone (npyfs unmount it)\n",
                    mnt);
        else if (err == ENODATA || err == ENOTSUP)
            fprintf(stderr, "npyfs: %s: this npyfs daemon does not report stats (mounted by an "
                    "older npyfs?)\n", mnt);
        else if (err == EACCES && me.uid >= 0 && me.uid != (long)getuid() && !me.allow_other)
            fprintf(stderr, "npyfs: %s: %s: mounted by another user (uid %ld) without -o "
                    "allow_other, so only that user can see into it\n", mnt, strerror(err),
                    me.uid);
        else
            fprintf(stderr, "npyfs: %s: %s\n", mnt, strerror(err));
        free(buf);
        free(abs);
        return 1;
    }
    fwrite(buf, 1, (size_t)n, stdout);
    free(buf);
    free(abs);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* Contract in cmd_stats.h. */
int cmd_stats(int argc, char **argv)
{
    bool json;
    const char *what = json_and_operand("stats", "MOUNTPOINT", argc, argv, &json);
    char *mnt;
    int status;

    if (!bsrc_is_url(what))
        return stats_of(what, json);
    mnt = mount_of_url(what);
    if (!mnt)
        return 1;
    status = stats_of(mnt, json);
    free(mnt);
    return status;
}
