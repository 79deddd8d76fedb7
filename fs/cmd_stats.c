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

/* Contract in cmd_stats.h. */
int cmd_stats(int argc, char **argv)
{
    char *abs, *buf;
    bool json;
    const char *mnt = json_and_operand("stats", "MOUNTPOINT", argc, argv, &json);
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
