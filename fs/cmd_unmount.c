/*
 * `npyfs unmount`. Contract in cmd_unmount.h.
 */
#define _GNU_SOURCE
#include "cmd_unmount.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "mounts.h"
#include "usage.h"

/* Run fusermount3 FLAGS -- MNT; its stderr (in the C locale) goes into
 * err (NUL-terminated, cut at size). Returns its exit status, -1 if it could
 * not run. */
static int run_fusermount(const char *flags, const char *mnt, char *err, size_t size)
{
    int pipefd[2], status;
    size_t used = 0;
    ssize_t n;
    pid_t pid;

    err[0] = '\0';
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return -1;
    pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 2);
        setenv("LC_ALL", "C", 1);
        execlp("fusermount3", "fusermount3", flags, "--", mnt, (char *)NULL);
        fprintf(stderr, "cannot run fusermount3: %s", strerror(errno));
        _exit(127);
    }
    close(pipefd[1]);
    while (pid > 0 && (n = read(pipefd[0], err + used, size - 1 - used)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        used += (size_t)n;
        if (used == size - 1) { /* full: drain the rest */
            char sink[256];
            while (read(pipefd[0], sink, sizeof(sink)) > 0) {
            }
            break;
        }
    }
    close(pipefd[0]);
    err[used] = '\0';
    err[strcspn(err, "\n")] = '\0';
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Does link (a path read from /proc) lie at or under dir? */
static bool path_under(const char *link, const char *dir)
{
    size_t n = strlen(dir);

    return strncmp(link, dir, n) == 0 && (link[n] == '\0' || link[n] == '/' ||
                                          strcmp(dir, "/") == 0);
}

/* What a process holds under a mount (for the busy message). */
enum hold { HOLD_NONE, HOLD_DIR, HOLD_FILE, HOLD_MAP };

/* Does process pid hold something under dir: its working or root
 * directory, an open file, a mapping? Only what /proc lets us see. */
static enum hold holds(const char *pid, const char *dir)
{
    static const char *const links[] = {"cwd", "root"};
    char path[64], target[PATH_MAX], line[PATH_MAX + 128];
    enum hold found = HOLD_NONE;
    struct dirent *e;
    ssize_t n;
    DIR *d;
    FILE *f;

    for (int i = 0; i < 2 && !found; i++) {
        snprintf(path, sizeof(path), "/proc/%.20s/%s", pid, links[i]);
        n = readlink(path, target, sizeof(target) - 1);
        if (n > 0 && (target[n] = '\0', path_under(target, dir)))
            found = HOLD_DIR;
    }
    snprintf(path, sizeof(path), "/proc/%.20s/fd", pid);
    d = found ? NULL : opendir(path);
    while (d && !found && (e = readdir(d))) {
        char fd[PATH_MAX];
        if (e->d_name[0] == '.')
            continue;
        snprintf(fd, sizeof(fd), "%s/%s", path, e->d_name);
        n = readlink(fd, target, sizeof(target) - 1);
        if (n > 0 && (target[n] = '\0', path_under(target, dir)))
            found = HOLD_FILE;
    }
    if (d)
        closedir(d);
    snprintf(path, sizeof(path), "/proc/%.20s/maps", pid);
    f = found ? NULL : fopen(path, "re");
    while (f && !found && fgets(line, sizeof(line), f)) {
        char *file = strchr(line, '/');
        if (file) {
            file[strcspn(file, "\n")] = '\0';
            if (path_under(file, dir))
                found = HOLD_MAP;
        }
    }
    if (f)
        fclose(f);
    return found;
}

/* Who keeps dir busy, for the message: "process 1234 (python3) has files
 * open under it" (what the first one found holds), with how many others,
 * into buf, and in *fix what ends that use ("close them"); buf empty if
 * none can be seen (other users' processes are hidden from a user other
 * than root). */
static void find_holders(const char *dir, char *buf, size_t size, const char **fix)
{
    static const char *const what[] = {
        [HOLD_DIR] = "has its working directory under it",
        [HOLD_FILE] = "has files open under it",
        [HOLD_MAP] = "has a file under it mapped into memory",
    };
    static const char *const fixes[] = {
        [HOLD_NONE] = "close them",
        [HOLD_DIR] = "leave that directory",
        [HOLD_FILE] = "close them",
        [HOLD_MAP] = "unmap it (drop the array) or end the process",
    };
    DIR *proc = opendir("/proc");
    struct dirent *e;
    char first[64] = "", comm[32], path[64];
    enum hold kind = HOLD_NONE, h;
    int count = 0;
    FILE *f;

    buf[0] = '\0';
    while (proc && (e = readdir(proc))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9' || atoi(e->d_name) == getpid() ||
            !(h = holds(e->d_name, dir)))
            continue;
        if (count++ == 0) {
            kind = h;
            snprintf(path, sizeof(path), "/proc/%.20s/comm", e->d_name);
            f = fopen(path, "re");
            if (!f || !fgets(comm, sizeof(comm), f))
                strcpy(comm, "?");
            if (f)
                fclose(f);
            comm[strcspn(comm, "\n")] = '\0';
            snprintf(first, sizeof(first), "%.16s (%.20s)", e->d_name, comm);
        }
    }
    if (proc)
        closedir(proc);
    *fix = fixes[kind];
    if (count == 1)
        snprintf(buf, size, "process %s %s", first, what[kind]);
    else if (count > 1)
        snprintf(buf, size, "process %s (and %d more) %s", first, count - 1, what[kind]);
}

/* Contract in cmd_unmount.h. */
int cmd_unmount(int argc, char **argv)
{
    const char *arg = NULL;
    char err[512], who[PATH_MAX + 160], *mnt;
    const char *fix = "close them";
    struct mounts_entry me;
    bool lazy = false, dead;
    int ret, probe;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-z") == 0 || strcmp(argv[i], "--lazy") == 0)
            lazy = true;
        else if (argv[i][0] == '-' && argv[i][1])
            usage_die("unknown unmount flag %s", argv[i]);
        else if (arg)
            usage_die("unmount takes one MOUNTPOINT");
        else
            arg = argv[i];
    }
    if (!arg)
        usage_die("unmount needs MOUNTPOINT");
    mnt = cli_absolute_mountpoint(arg);
    if (!mnt) {
        fprintf(stderr, "npyfs: %s: %s\n", arg, strerror(errno));
        return 1;
    }
    ret = mounts_find(mnt, &me);
    if (ret == 0) {
        struct stat st;

        if (lstat(arg, &st) < 0 && errno == ENOENT)
            fprintf(stderr, "npyfs: %s: no such directory\n", arg);
        else
            fprintf(stderr, "npyfs: %s: not mounted\n", arg);
        free(mnt);
        return 1;
    }
    if (ret > 0 && strcmp(me.type, "fuse.npyfs") != 0) {
        fprintf(stderr, "npyfs: %s: not an npyfs mount (it is %s); npyfs unmount leaves it "
                "alone\n", arg, me.type);
        free(mnt);
        return 1;
    }
    /* fusermount3 would say "entry ... not found in /etc/mtab" */
    if (ret > 0 && getuid() != 0 && me.uid >= 0 && me.uid != (long)getuid()) {
        fprintf(stderr, "npyfs: %s: mounted by another user (uid %ld): only that user or "
                "root can unmount it\n", arg, me.uid);
        free(mnt);
        return 1;
    }
    probe = cli_probe_mount(mnt);
    dead = probe == -ENOTCONN;
    ret = run_fusermount("-u", mnt, err, sizeof(err));
    if (ret == 0) {
        if (dead)
            fprintf(stderr, "npyfs: %s: the daemon of this mount was gone; unmounted it\n", arg);
        free(mnt);
        return 0;
    }
    find_holders(mnt, who, sizeof(who), &fix);
    if (!who[0] && !strstr(err, "busy")) {
        fprintf(stderr, "npyfs: %s: unmount failed: %s\n", arg,
                err[0] ? err : "fusermount3 failed");
        free(mnt);
        return 1;
    }
    if (!who[0])
        snprintf(who, sizeof(who), "a process has files open or its working directory under "
                 "it (fuser -vm %s shows which)", mnt);
    if (!lazy && !dead) {
        fprintf(stderr, "npyfs: %s: target is busy: %s; %s and try again, or detach it "
                "lazily with npyfs unmount -z %s\n", arg, who, fix, arg);
        free(mnt);
        return 1;
    }
    ret = run_fusermount("-uz", mnt, err, sizeof(err));
    if (ret != 0) {
        fprintf(stderr, "npyfs: %s: lazy unmount failed: %s\n", arg,
                err[0] ? err : "fusermount3 failed");
        free(mnt);
        return 1;
    }
    if (dead)
        fprintf(stderr, "npyfs: %s: the daemon of this mount was gone and %s: detached it "
                "lazily\n", arg, who);
    else
        fprintf(stderr, "npyfs: %s: was busy (%s): detached it lazily; the daemon exits once "
                "the last of them is closed\n", arg, who);
    free(mnt);
    return 0;
}
