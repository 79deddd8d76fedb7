/*
 * `npyfs mount`, and the form mount.fuse3 uses (an /etc/fstab line of type
 * fuse.npyfs). Contract in cmd_mount.h.
 *
 * A mount error is one line naming the file and the problem; nothing is
 * left mounted.
 *
 * Background mounts: the sources are checked in the calling process (archives
 * named on the command line opened and parsed, directories walked; archives
 * found by the walk are opened later, on first use), so errors print straight
 * to its terminal; then the process forks. The
 * child creates its own session, mounts, tells the parent through a pipe,
 * lets go of the caller's stdio and serves. The parent waits for that word,
 * then stats the mount point (which needs the child to answer) and exits.
 */
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE
#include "cmd_mount.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include "archive.h"
#include "bsrc.h"
#include "cache.h"
#include "cli.h"
#include "fs.h"
#include "http.h"
#include "loop.h"
#include "mount.h"
#include "mounts.h"
#include "net.h"
#include "notify.h"
#include "ops.h"
#include "options.h"
#include "s3.h"
#include "usage.h"
#include "vfs.h"

struct mount_args {
    const char *source;       /* owned: the first source's name for messages and the
                               * fsname (bsrc_name_of(): a URL without its query) */
    const char **sources;     /* owned array: every SOURCE as given */
    int nsources;
    const char *mountpoint;
    bool foreground;
    bool debug;
    struct options opts;
    char *fuse_opts; /* owned: options passed on to libfuse, comma-separated */
};

/* p as an absolute path for /proc/mounts and stats, symlinks not resolved
 * (the name the user gave): the current directory put before a relative
 * path, "." components and repeated slashes dropped ("" stays "", an
 * error later). Owned by the caller; NULL: out of memory. */
static char *absolute_source(const char *p)
{
    char *cwd = NULL, *joined, *out, *o;
    const char *q;

    if (!p[0])
        return strdup("");
    if (p[0] != '/') {
        cwd = getcwd(NULL, 0);
        if (!cwd) /* unreachable directory: keep p as given */
            return strdup(p);
    }
    if (asprintf(&joined, "%s/%s", cwd ? cwd : "", p) < 0) {
        free(cwd);
        return NULL;
    }
    free(cwd);
    out = o = joined; /* compacted in place: the output never outruns the input */
    for (q = joined; *q;) {
        size_t n;
        while (*q == '/')
            q++;
        n = strcspn(q, "/");
        if (n == 0 || (n == 1 && q[0] == '.')) {
            q += n;
            continue;
        }
        *o++ = '/';
        memmove(o, q, n);
        o += n;
        q += n;
    }
    if (o == out)
        *o++ = '/';
    *o = '\0';
    return out;
}

/* A source's name for messages, /proc/mounts and stats (bsrc_name_of():
 * a URL without query or credentials), owned; exits if out of memory. */
static char *shown_name(const char *source)
{
    char buf[PATH_MAX + 64], *copy;

    copy = strdup(bsrc_name_of(source, buf, sizeof(buf)));
    if (!copy) {
        fputs("npyfs: out of memory\n", stderr);
        exit(1);
    }
    return copy;
}

static void parse_mount_args(int argc, char **argv, struct mount_args *ma)
{
    const char **pos = calloc((size_t)argc + 1, sizeof(*pos));
    int npos = 0;

    if (!pos) {
        fputs("npyfs: out of memory\n", stderr);
        exit(1);
    }
    ma->opts.cache_size = OPTIONS_DEFAULT_CACHE_SIZE;
    ma->opts.spacing = DFX_DEFAULT_SPACING;
    ma->opts.threads = options_default_threads();
    ma->opts.readahead = OPTIONS_DEFAULT_READAHEAD;
    ma->opts.index_mem = FS_DEFAULT_INDEX_MEM;
    ma->opts.index_max = OPTIONS_DEFAULT_INDEX_MAX;
    ma->opts.verify = OPTIONS_VERIFY_AUTO;
    ma->opts.verify_max = OPTIONS_DEFAULT_VERIFY_MAX;
    ma->opts.max_ratio = OPTIONS_DEFAULT_MAX_RATIO;
    ma->opts.spin_us = OPTIONS_DEFAULT_SPIN_US;
    ma->opts.net_opts.retries = -1;
    for (int i = 0, flags = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!flags || (a[0] != '-' || !a[1])) {
            pos[npos++] = a;
        } else if (strcmp(a, "--") == 0) {
            flags = 0; /* the rest are SOURCEs and the MOUNTPOINT ("-data.npz") */
        } else if (strcmp(a, "-f") == 0) {
            ma->foreground = true;
        } else if (strcmp(a, "-d") == 0) {
            ma->foreground = ma->debug = true;
        } else if (strcmp(a, "-o") == 0) {
            if (++i == argc)
                usage_die("-o needs an option list");
            options_parse(&ma->opts, &ma->fuse_opts, argv[i]);
        } else if (strncmp(a, "-o", 2) == 0) {
            options_parse(&ma->opts, &ma->fuse_opts, a + 2);
        } else {
            usage_die("unknown mount flag %s", a);
        }
    }
    if (npos < 2)
        usage_die("mount needs SOURCE and MOUNTPOINT");
    if (ma->opts.index_out)
        usage_die("-o index_out= applies to npyfs index, not to a mount");
    /* A trailing slash asks for a directory: "data.npz/" is refused as the
     * system refuses it (ENOTDIR), before absolute_source() drops it. */
    for (int i = 0; i < npos - 1; i++) {
        size_t n = strlen(pos[i]);
        struct stat st;
        if (!bsrc_is_url(pos[i]) && n && pos[i][n - 1] == '/' && stat(pos[i], &st) < 0) {
            cli_report_open_error(pos[i], -errno, 0, NULL);
            exit(1);
        }
    }
    /* absolute, as /proc/mounts (the fsname) and stats show them; a URL
     * as given */
    for (int i = 0; i < npos - 1; i++)
        if (!(pos[i] = bsrc_is_url(pos[i]) ? strdup(pos[i]) : absolute_source(pos[i]))) {
            fputs("npyfs: out of memory\n", stderr);
            exit(1);
        }
    ma->sources = pos;
    ma->nsources = npos - 1;
    ma->source = shown_name(pos[0]);
    ma->mountpoint = pos[npos - 1];
}

/* Open an archive named on the command line, within max_ratio (0: no
 * limit); exits with one line on failure. */
static struct archive *open_source(struct net *net, const char *path, uint64_t spacing,
                                      uint64_t max_ratio)
{
    struct archive_limits lim = {.max_ratio = max_ratio};
    struct archive *a;

    if (cli_open_archive(net, path, spacing, &lim, &a) < 0)
        exit(1);
    return a;
}

/* Fail early, with the fix, when FUSE cannot work here: libfuse alone says
 * "fuse: device not found" or fails to run fusermount3 after the source has
 * been opened. Root mounts with mount(2) itself; anyone else needs the
 * setuid fusermount3, which libfuse looks for in /usr/bin, then on PATH. */
static void check_fuse_available(void)
{
    struct stat st;
    const char *path = getenv("PATH");
    bool found = access("/usr/bin/fusermount3", X_OK) == 0 &&
                 stat("/usr/bin/fusermount3", &st) == 0 && S_ISREG(st.st_mode);

    if (stat("/dev/fuse", &st) < 0 || !S_ISCHR(st.st_mode)) {
        fprintf(stderr, "npyfs: /dev/fuse is %s (is the fuse module loaded? in a container, "
                "pass the device in)\n", errno == ENOENT ? "missing" : "not usable");
        exit(1);
    }
    if (geteuid() == 0)
        return;
    while (!found && path && *path) {
        size_t len = strcspn(path, ":");
        char *cand;

        if (len && asprintf(&cand, "%.*s/fusermount3", (int)len, path) >= 0) {
            found = access(cand, X_OK) == 0 && stat(cand, &st) == 0 && S_ISREG(st.st_mode);
            free(cand);
        }
        path += len + (path[len] == ':');
    }
    if (!found) {
        fputs("npyfs: fusermount3 not found in /usr/bin or on PATH; it is needed to mount "
              "as a user other than root (Debian package fuse3)\n", stderr);
        exit(1);
    }
}

/* A user other than root mounts through fusermount3, which opens /dev/fuse
 * as that user: say which permission is missing (then false), after the
 * sources were checked (their errors come first). */
static bool check_fuse_permission(void)
{
    struct stat st;
    bool r, w;

    if (geteuid() == 0 || access("/dev/fuse", R_OK | W_OK) == 0 || stat("/dev/fuse", &st) < 0)
        return true;
    r = access("/dev/fuse", R_OK) == 0;
    w = access("/dev/fuse", W_OK) == 0;
    fprintf(stderr, "npyfs: /dev/fuse: no %s permission for you (uid %u): it is mode %04o, "
            "owner uid %u, group gid %u; a user other than root needs read and write "
            "permission on it (usually mode 0666) or must mount as root\n",
            r ? "write" : w ? "read" : "read and write", (unsigned)getuid(),
            (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)st.st_gid);
    return false;
}

/* Refuse a mount point that cannot take the mount (exit 1, one line);
 * returns how many entries the mount will hide. */
static size_t check_mountpoint(const char *mnt)
{
    struct mounts_entry me;
    struct stat st;
    struct dirent *e;
    char *abs = cli_absolute_mountpoint(mnt);
    size_t entries = 0;
    int found;
    DIR *d;

    /* the mount table first: a dead FUSE mount may fail a stat, or answer
     * it from attributes the kernel still holds */
    found = abs ? mounts_find(abs, &me) : 0;
    if (found != 0) { /* -1, the table unreadable: leave no doubt either */
        if (found > 0 && strncmp(me.type, "fuse", 4) == 0 && cli_probe_mount(abs) == -ENOTCONN) {
            if (strcmp(me.type, "fuse.npyfs") == 0)
                fprintf(stderr, "npyfs: %s: the previous npyfs mount there is dead: run npyfs "
                        "unmount %s\n", mnt, mnt);
            else
                fprintf(stderr, "npyfs: %s: a dead FUSE mount (%s) is there: unmount it first "
                        "(fusermount3 -u %s)\n", mnt, me.type, mnt);
        } else {
            fprintf(stderr, "npyfs: %s: something is already mounted there\n", mnt);
        }
        exit(1);
    }
    free(abs);
    if (stat(mnt, &st) < 0) {
        fprintf(stderr, "npyfs: %s: mount point %s\n", mnt,
                errno == ENOENT ? "does not exist" : strerror(errno));
        exit(1);
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "npyfs: %s: mount point is not a directory\n", mnt);
        exit(1);
    }
    /* Like mount(8), and fusermount3 since fuse 3, allow a directory that is
     * not empty, but say what it means (warn_hidden()). */
    d = opendir(mnt);
    while (d && (e = readdir(d)))
        entries += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    if (d)
        closedir(d);
    return entries;
}

/* Said once the mount is up (a failed mount says only why it failed). */
static void warn_hidden(const char *mnt, size_t entries)
{
    if (entries)
        fprintf(stderr, "npyfs: warning: mount point %s is not empty: its %zu %s hidden "
                "while npyfs is mounted there\n", mnt, entries,
                entries == 1 ? "entry stays" : "entries stay");
}

static void syslog_log(enum fuse_log_level level, const char *fmt, va_list ap)
{
    vsyslog((int)level, fmt, ap);
}

/* fsname shows in /proc/mounts; libfuse splits options at commas, so
 * escape them (and backslashes) in the source path. */
static char *fsname_opt(const char *source)
{
    size_t n = strlen(source);
    char *s = malloc(2 * n + 32), *p;

    if (!s)
        return NULL;
    p = s + sprintf(s, "fsname=");
    for (const char *q = source; *q; q++) {
        if (*q == ',' || *q == '\\')
            *p++ = '\\';
        *p++ = *q;
    }
    strcpy(p, ",subtype=npyfs");
    return s;
}

/* libfuse reports bad options through its log; keep the first message so
 * the user gets one line that also names the source. */
static char fuse_complaint[256];

static void capture_log(enum fuse_log_level level, const char *fmt, va_list ap)
{
    size_t used = strlen(fuse_complaint);

    (void)level;
    /* one complaint may arrive in several pieces */
    vsnprintf(fuse_complaint + used, sizeof(fuse_complaint) - used, fmt, ap);
}

static struct fuse_session *new_session(struct mount_args *ma, struct mount_ctx *ctx)
{
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    struct fuse_session *se;
    char *fsname = fsname_opt(ma->source);

    if (!fsname || fuse_opt_add_arg(&args, "npyfs") ||
        fuse_opt_add_arg(&args, "-o") ||
        fuse_opt_add_arg(&args, "ro,default_permissions") ||
        fuse_opt_add_arg(&args, "-o") || fuse_opt_add_arg(&args, fsname) ||
        (ma->fuse_opts && (fuse_opt_add_arg(&args, "-o") ||
                           fuse_opt_add_arg(&args, ma->fuse_opts))) ||
        (ma->debug && fuse_opt_add_arg(&args, "-d"))) {
        fputs("npyfs: out of memory\n", stderr);
        exit(1);
    }
    if (!ma->debug)
        fuse_set_log_func(capture_log);
    se = fuse_session_new(&args, &ops_lowlevel, sizeof(ops_lowlevel), ctx);
    fuse_set_log_func(NULL);
    fuse_opt_free_args(&args);
    free(fsname);
    if (!se) {
        fuse_complaint[strcspn(fuse_complaint, "\n")] = '\0';
        fprintf(stderr, "npyfs: %s: bad mount options: %s\n", ma->source,
                fuse_complaint[0] ? fuse_complaint : "rejected by libfuse");
        exit(1);
    }
    return se;
}

/* fuse_session_mount() with what it says kept from the terminal: libfuse's
 * log lines and the stderr of the fusermount3 it may run (as a user) go
 * into why (len bytes: the first line, "" if none), so that a failure is
 * reported in one line of ours. fusermount3's stderr is a memory file, not
 * a pipe: one left running (auto_unmount) may write to it later, and must
 * not get SIGPIPE for it. Returns what fuse_session_mount() did. */
static int mount_quietly(struct fuse_session *se, const char *mnt, char *why, size_t len)
{
    int mem = memfd_create("npyfs-mount", MFD_CLOEXEC), saved = -1, ret;
    ssize_t n;

    why[0] = '\0';
    fflush(stderr);
    if (mem >= 0 && (saved = fcntl(2, F_DUPFD_CLOEXEC, 3)) >= 0 && dup2(mem, 2) < 0) {
        close(saved);
        saved = -1;
    }
    fuse_complaint[0] = '\0';
    fuse_set_log_func(capture_log);
    ret = fuse_session_mount(se, mnt);
    fuse_set_log_func(NULL);
    if (saved >= 0) {
        dup2(saved, 2);
        close(saved);
        n = pread(mem, why, len - 1, 0);
        why[n > 0 ? n : 0] = '\0';
    }
    if (mem >= 0)
        close(mem);
    if (!why[0])
        snprintf(why, len, "%s", fuse_complaint);
    why[strcspn(why, "\n")] = '\0';
    return ret;
}

/* "cannot mount", with what fusermount3 or libfuse said (why) and the fix
 * for the common case, into buf (len bytes): the end of a one-line error. */
static void cannot_mount_text(const char *why, char *buf, size_t len)
{
    snprintf(buf, len, "cannot mount%s%s%s", why[0] ? ": " : "", why,
             strstr(why, "user_allow_other") ? " (add the line user_allow_other to "
                                               "/etc/fuse.conf, or mount without allow_other)"
                                             : "");
}

/* Serve requests until unmount or a signal (loop.h: up to 16 threads, each
 * polling the device spin_us after a request before it sleeps). */
static int serve(struct fuse_session *se, unsigned spin_us)
{
    int ret;

    if (fuse_set_signal_handlers(se) != 0)
        return 1;
    ret = loop_run(se, 16, spin_us);
    if (ret < 0)
        fuse_log(FUSE_LOG_ERR, "npyfs: reading the FUSE device: %s\n", strerror(-ret));
    notify_quiesce(); /* nothing is sent once the fd may be closed */
    fuse_remove_signal_handlers(se);
    fuse_session_unmount(se);
    /* a signal (SIGINT, SIGTERM, SIGHUP) ends the loop with 0: a clean
     * unmount, not a failure */
    return ret == 0 ? 0 : 1;
}

/* Child side of a background mount: mount, report through fd, serve. */
/* The descriptors this process was started with, past stdin, stdout and
 * stderr (a pipe the caller passed on, say): a daemon must not keep them,
 * or their other ends never see them close. Owned by the caller; NULL
 * (and *n 0) if there are none or they cannot be listed. */
static int *inherited_fds(size_t *n)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int *fds = NULL;
    size_t cap = 0;

    *n = 0;
    while (d && (e = readdir(d))) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);

        if (*end || end == e->d_name || fd < 3 || fd == dirfd(d))
            continue;
        if (fs_grow(&fds, &cap, *n, sizeof(*fds), 8) < 0)
            break;
        fds[(*n)++] = (int)fd;
    }
    if (d)
        closedir(d);
    return fds;
}

static int daemon_child(struct fuse_session *se, const char *mnt, int fd, unsigned spin_us,
                        const int *inherited, size_t ninherited)
{
    int null;

    char why[256], text[400];

    setsid();
    if (mount_quietly(se, mnt, why, sizeof(why)) != 0) {
        cannot_mount_text(why, text, sizeof(text));
        dprintf(fd, "%s", text);
        return 1;
    }
    for (size_t i = 0; i < ninherited; i++)
        close(inherited[i]);
    null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2)
            close(null);
    }
    openlog("npyfs", LOG_PID, LOG_DAEMON);
    fuse_set_log_func(syslog_log);
    if (chdir("/") != 0) {
        /* not fatal: the daemon uses absolute paths and fds from here on */
    }
    if (write(fd, "", 1) != 1)
        return 1;
    close(fd);
    return serve(se, spin_us);
}

/* The parent of the daemon: wait for its word on the mount and for the
 * mount to answer, then warn of what it hides. */
static int daemon_parent(pid_t child, const struct mount_args *ma, int fd, size_t hidden)
{
    const char *source = ma->source, *mnt = ma->mountpoint;
    char msg[512];
    ssize_t n = read(fd, msg, sizeof(msg) - 1);
    struct stat st;
    int status;

    close(fd);
    if (n != 1 || msg[0] != '\0') {
        msg[n > 0 ? n : 0] = '\0';
        fprintf(stderr, "npyfs: %s: %s: %s\n", source, mnt, n > 0 ? msg : "daemon died");
        waitpid(child, &status, 0);
        return 1;
    }
    if (stat(mnt, &st) < 0) {
        fprintf(stderr, "npyfs: %s: the mount does not answer: %s\n", mnt, strerror(errno));
        return 1;
    }
    warn_hidden(mnt, hidden);
    return 0;
}

/* A mount may hold many archives open, one fd each: raise the soft limit
 * on open files to the hard one. Best effort. */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);

    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* The name a directory source shows under at the root of several sources:
 * its last component (of its real path for "/", "." and the like), or NULL
 * for the root directory. Owned by the caller. */
static char *dir_name(const char *path)
{
    char *copy = strdup(path), *real = NULL, *slash, *out;

    if (!copy)
        return NULL;
    while (strlen(copy) > 1 && copy[strlen(copy) - 1] == '/')
        copy[strlen(copy) - 1] = '\0';
    slash = strrchr(copy, '/');
    out = slash ? slash + 1 : copy;
    if (!*out || strcmp(out, ".") == 0 || strcmp(out, "..") == 0) {
        real = realpath(path, NULL);
        slash = real ? strrchr(real, '/') : NULL;
        out = slash && slash[1] ? slash + 1 : NULL;
    }
    out = out ? strdup(out) : NULL;
    free(copy);
    free(real);
    return out;
}

/* The name an s3:// prefix shows under at the root of several sources: its
 * last component ("runs" for s3://b/data/runs/), or the bucket's. Owned. */
static char *prefix_name(const char *url)
{
    struct s3_location loc;
    char *out = NULL;
    size_t n;

    if (s3_parse_url(url, &loc) < 0)
        return NULL;
    n = strlen(loc.key);
    while (n && loc.key[n - 1] == '/')
        n--;
    if (n) {
        const char *start = loc.key + n;
        while (start > loc.key && start[-1] != '/')
            start--;
        out = strndup(start, (size_t)(loc.key + n - start));
    } else {
        out = strdup(loc.bucket);
    }
    s3_location_destroy(&loc);
    return out;
}

/* An s3:// prefix SOURCE: its listing (owned), with at least one archive;
 * exits with one line on failure. */
static struct s3_listing *list_prefix(struct net *net, const char *url)
{
    struct s3_listing *l = calloc(1, sizeof(*l));
    char msg[512] = "", name[PATH_MAX + 64];
    int ret;

    bsrc_name_of(url, name, sizeof(name));
    if (!l) {
        fputs("npyfs: out of memory\n", stderr);
        exit(1);
    }
    ret = net_list(net, url, l, msg, sizeof(msg));
    if (ret < 0) {
        fprintf(stderr, "npyfs: %s: cannot list it: %s\n", name, msg[0] ? msg : strerror(-ret));
        exit(1);
    }
    if (l->count == 0) {
        fprintf(stderr, "npyfs: %s: no .npz or .npy.gz object under this prefix\n", name);
        exit(1);
    }
    return l;
}

/*
 * Check every source named on the command line before anything else: a
 * directory must be readable (it is walked later), a file or URL is opened
 * here as an archive, and an s3:// prefix listed, so an error is one line
 * naming it. With several sources, their names at the root must differ.
 * Exits on any error.
 */
static struct vfs_source *prepare_sources(const struct mount_args *ma)
{
    struct vfs_source *s = calloc((size_t)ma->nsources, sizeof(*s));
    char **names = calloc((size_t)ma->nsources, sizeof(*names));
    char shown[PATH_MAX + 64], other[PATH_MAX + 64];
    struct net *net = ma->opts.net;
    int narchives = 0;
    struct stat st;

    if (!s || !names) {
        fputs("npyfs: out of memory\n", stderr);
        exit(1);
    }
    for (int i = 0; i < ma->nsources; i++) {
        const char *p = ma->sources[i];
        bool url = bsrc_is_url(p);

        s[i].path = p;
        bsrc_name_of(p, shown, sizeof(shown));
        if (url && cli_is_s3_prefix(p)) {
            s[i].listing = list_prefix(net, p);
            names[i] = prefix_name(p);
        } else if (url && http_is_url(p) && p[strcspn(p, "?#") - 1] == '/') {
            fprintf(stderr, "npyfs: %s: an http(s) SOURCE names one .npz or .npy.gz object "
                    "(a directory listing is not read; an s3:// prefix is)\n", shown);
            exit(1);
        } else if (!url && stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            if (has_suffix(p, ".npz") || has_suffix(p, ".npz/") || has_suffix(p, ".npy.gz") ||
                has_suffix(p, ".npy.gz/")) {
                cli_report_open_error(p, -EISDIR, 0, NULL);
                exit(1);
            }
            if (access(p, R_OK | X_OK) != 0) {
                fprintf(stderr, "npyfs: %s: cannot read the directory: %s\n", p,
                        strerror(errno));
                exit(1);
            }
            names[i] = dir_name(p);
        } else {
            s[i].archive = open_source(net, p, ma->opts.spacing, ma->opts.max_ratio);
            names[i] = s[i].archive->kind == ARCHIVE_GZIP ? strdup(s[i].archive->members[0].name)
                       : url                             ? bsrc_base_name(p)
                                                         : dir_name(p);
            narchives++;
        }
        s[i].name = names[i];
        if (ma->nsources > 1 && (!names[i] || !names[i][0])) {
            fprintf(stderr, "npyfs: %s: has no name to show at the mount root; mount it "
                    "alone\n", shown);
            exit(1);
        }
        for (int j = 0; ma->nsources > 1 && j < i; j++) {
            if (strcmp(names[j], names[i]) == 0) {
                fprintf(stderr, "npyfs: %s and %s would both appear as '%s' at the mount "
                        "root; rename one, or mount them separately\n",
                        bsrc_name_of(s[j].path, other, sizeof(other)), shown, names[i]);
                exit(1);
            }
        }
    }
    if (ma->opts.index_url && (ma->nsources > 1 || narchives != 1)) {
        fputs("npyfs: -o index_url= names the index of one archive: mount that archive alone "
              "(several archives each look for URL.npyfsidx beside them)\n", stderr);
        exit(1);
    }
    free(names); /* the strings stay: s[i].name borrows them until exit */
    return s;
}

/* What cmd_mount() allocated for its sources and options (the archives
 * are the vfs's, or freed by the caller). */
static void free_sources(struct mount_args *ma, struct vfs_source *srcs)
{
    for (int i = 0; i < ma->nsources; i++) {
        free((char *)srcs[i].name);
        if (srcs[i].listing) {
            s3_listing_destroy((struct s3_listing *)srcs[i].listing);
            free((struct s3_listing *)srcs[i].listing);
        }
        free((char *)ma->sources[i]);
    }
    free(srcs);
    free(ma->sources);
    free((char *)ma->source);
    options_destroy(&ma->opts);
    free(ma->fuse_opts);
}

/* Contract in cmd_mount.h. */
int cmd_mount(int argc, char **argv)
{
    struct mount_args ma = {0};
    struct mount_ctx ctx = {0};
    struct vfs_source *srcs;
    struct fuse_session *se;
    int pipefd[2], ret;
    size_t bad, hidden, ninherited = 0;
    int *inherited = NULL;
    pid_t pid;

    parse_mount_args(argc, argv, &ma);
    if (!ma.foreground) /* before anything is opened */
        inherited = inherited_fds(&ninherited);
    /* read at a first open, when a daemon works from / */
    if (ma.opts.index_url && !bsrc_is_url(ma.opts.index_url)) {
        char *abs = absolute_source(ma.opts.index_url);
        if (!abs) {
            fputs("npyfs: out of memory\n", stderr);
            return 1;
        }
        free(ma.opts.index_url);
        ma.opts.index_url = abs;
    }
    hidden = check_mountpoint(ma.mountpoint);
    check_fuse_available();
    raise_nofile();
    fs_window_budget.limit = ma.opts.index_mem; /* before any archive opens */
    ma.opts.net = cli_make_net(&ma.opts, ma.sources, ma.nsources);
    ctx.opts = ma.opts;
    ctx.source = ma.source;
    for (int i = 0; i < ma.nsources; i++)
        ctx.background |= ma.opts.index_mode != OPTIONS_INDEX_LAZY &&
                          (ma.opts.index_given || !bsrc_is_url(ma.sources[i]));
    ctx.mountpoint = realpath(ma.mountpoint, NULL); /* NULL: readahead stays the kernel's */
    srcs = prepare_sources(&ma);
    if (!check_fuse_permission()) {
        for (int i = 0; i < ma.nsources; i++)
            archive_close(srcs[i].archive);
        free_sources(&ma, srcs);
        free(ctx.mountpoint);
        return 1;
    }
    ctx.uid = getuid();
    ctx.gid = getgid();
    if (cache_new(ma.opts.cache_size, FS_CHUNK_SIZE, &ctx.cache) < 0) {
        fprintf(stderr, "npyfs: %s: out of memory\n", ma.source);
        return 1;
    }
    ret = vfs_new(srcs, (size_t)ma.nsources, &ctx.opts, ctx.cache, &ctx.vfs, &bad);
    if (ret < 0) {
        char shown[PATH_MAX + 64];
        fprintf(stderr, "npyfs: %s: %s\n", bsrc_name_of(srcs[bad].path, shown, sizeof(shown)),
                ret == -EFBIG ? "too many files to mount" : strerror(-ret));
        return 1;
    }
    se = new_session(&ma, &ctx);
    ctx.se = se; /* the notifier sends through it (ops.c) */
    if (ma.foreground) {
        char why[256], text[400];

        if (mount_quietly(se, ma.mountpoint, why, sizeof(why)) != 0) {
            cannot_mount_text(why, text, sizeof(text));
            fprintf(stderr, "npyfs: %s: %s: %s\n", ma.source, ma.mountpoint, text);
            ret = 1; /* and free what was set up, as after serving */
        } else {
            warn_hidden(ma.mountpoint, hidden);
            ret = serve(se, ma.opts.spin_us);
        }
    } else {
        net_park(ctx.opts.net); /* its threads would not survive the fork */
        if (pipe2(pipefd, O_CLOEXEC) < 0 || (pid = fork()) < 0) {
            fprintf(stderr, "npyfs: cannot start the daemon: %s\n", strerror(errno));
            return 1;
        }
        if (pid > 0) {
            close(pipefd[1]);
            _exit(daemon_parent(pid, &ma, pipefd[0], hidden));
        }
        close(pipefd[0]);
        ret = daemon_child(se, ma.mountpoint, pipefd[1], ma.opts.spin_us, inherited, ninherited);
    }
    fuse_session_destroy(se);
    vfs_free(ctx.vfs); /* indexers and the pool stopped by the FUSE destroy handler */
    cache_free(ctx.cache); /* after the vfs: its passes may feed the cache */
    free_sources(&ma, srcs);
    free(ctx.mountpoint);
    free(inherited);
    return ret;
}

/* Options mount(8) and mount.fuse3 pass that mean nothing to a read-only
 * FUSE mount and that libfuse would refuse (mount.fuse3 already drops some):
 * rw comes with "defaults" and is ignored, as an npyfs mount is always
 * read-only; the atime variants libfuse does not know change nothing when
 * nothing is written. */
static bool fstab_only_opt(const char *opt, size_t len)
{
    static const char *const names[] = {
        "rw", "defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group",
        "nofail", "_netdev", "relatime", "norelatime", "strictatime", "nostrictatime",
        "diratime", "nodiratime", "lazytime", "nolazytime", "iversion", "noiversion",
        "loud", "silent", NULL};

    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == len && strncmp(opt, names[i], len) == 0)
            return true;
    return (len >= 8 && strncmp(opt, "comment=", 8) == 0) || (len >= 2 && strncmp(opt, "x-", 2) == 0);
}

/* Contract in cmd_mount.h. */
int cmd_mount_fstab(int argc, char **argv)
{
    char **args = calloc((size_t)argc + 1, sizeof(*args));
    char **owned = calloc((size_t)argc + 1, sizeof(*owned)); /* the lists made here */
    int nowned = 0, ret;

    if (!args || !owned) {
        fputs("npyfs: out of memory\n", stderr);
        return 1;
    }
    for (int i = 0; i < argc; i++) {
        const char *list = NULL;
        char *kept = NULL;
        bool separate = strcmp(argv[i], "-o") == 0 && i + 1 < argc;

        if (separate) {
            args[i] = argv[i];
            list = argv[++i];
        } else if (strncmp(argv[i], "-o", 2) == 0 && argv[i][2]) {
            list = argv[i] + 2;
        } else {
            args[i] = argv[i];
            continue;
        }
        for (const char *p = list; *p;) {
            size_t len = strcspn(p, ",");
            if (len && !fstab_only_opt(p, len))
                options_append(&kept, p, len);
            p += len + (p[len] == ',');
        }
        if (!kept && asprintf(&kept, "%s", "ro") < 0) {
            fputs("npyfs: out of memory\n", stderr);
            return 1;
        }
        if (separate) {
            args[i] = kept;
        } else {
            if (asprintf(&args[i], "-o%s", kept) < 0) {
                fputs("npyfs: out of memory\n", stderr);
                return 1;
            }
            free(kept);
        }
        owned[nowned++] = args[i];
    }
    ret = cmd_mount(argc, args);
    while (nowned > 0)
        free(owned[--nowned]);
    free(owned);
    free(args);
    return ret;
}
