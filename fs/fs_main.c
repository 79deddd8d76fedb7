/*
 * The npyfs command: mount (foreground or as a daemon), unmount, ls.
 *
 * This is the only place that turns error codes into text. A mount error is
 * one line naming the file and the problem; nothing is left mounted.
 *
 * Background mounts: the source is opened and parsed in the calling process
 * (so errors print straight to its terminal), then the process forks. The
 * child creates its own session, mounts, tells the parent through a pipe,
 * lets go of the caller's stdio and serves. The parent waits for that word,
 * then stats the mount point (which needs the child to answer) and exits.
 */
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>
#include <zlib.h>

#include "npy.h"

struct mount_args {
    const char *source;
    const char *mountpoint;
    bool foreground;
    bool debug;
    struct fs_opts opts;
    char *fuse_opts; /* owned: options passed on to libfuse, comma-separated */
};

static const char usage_text[] =
    "usage: npyfs mount [-f] [-d] [-o OPT[,OPT...]] SOURCE MOUNTPOINT\n"
    "       npyfs unmount MOUNTPOINT\n"
    "       npyfs ls SOURCE\n"
    "       npyfs index [-o OPT[,OPT...]] SOURCE...\n"
    "       npyfs --help | --version\n"
    "\n"
    "Mount a NumPy .npz archive or a gzipped .npy (.npy.gz) read-only, showing\n"
    "every array as a plain .npy file that np.load(..., mmap_mode='r') can map.\n"
    "\n"
    "mount options:\n"
    "  -f                 stay in the foreground (default: return once mounted)\n"
    "  -d                 foreground with FUSE debug output\n"
    "  -o cache_size=SIZE decompressed data the daemon may hold (default 256M)\n"
    "  -o spacing=SIZE    distance between index access points (default 1M;\n"
    "                     smaller: faster random reads, more memory)\n"
    "  -o threads=N       readahead workers decoding ahead of sequential\n"
    "                     readers (default: online cores; 0: none)\n"
    "  -o readahead=SIZE  kernel readahead per file, set when root (default 512K;\n"
    "                     0: leave the kernel's)\n"
    "  -o index_dir=DIR   where saved indexes go (default $XDG_CACHE_HOME/npyfs,\n"
    "                     else ~/.cache/npyfs)\n"
    "  -o index=MODE      background (default): build missing indexes at idle\n"
    "                     priority after mounting; lazy: only as reads go\n"
    "  -o OPT             any other option goes to libfuse (allow_other, ...)\n"
    "\n"
    "index: build and save the index of every member ahead of time, checking\n"
    "each CRC on the way; a later mount loads it instead of decompressing.\n"
    "Takes -o index_dir=DIR and -o spacing=SIZE.\n"
    "SIZE takes a K, M or G suffix (powers of 1024).\n";

static void die_usage(const char *fmt, ...)
{
    va_list ap;

    fputs("npyfs: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(see npyfs --help)\n", stderr);
    exit(1);
}

/* "512K", "256M", "1G", "4096" -> bytes. Returns 0 or -EINVAL. */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    unsigned shift = 0;

    if (*s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno)
        return -EINVAL;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    }
    if (*end == 'i' && shift)
        end++;
    if ((*end == 'b' || *end == 'B') && shift)
        end++;
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return -EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}

/* "0".."FS_THREADS_MAX" -> count. Returns 0 or -EINVAL. */
static int parse_threads(const char *s, unsigned *out)
{
    char *end;
    unsigned long v;

    if (*s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end || v > FS_THREADS_MAX)
        return -EINVAL;
    *out = (unsigned)v;
    return 0;
}

/* Online cores, the default number of readahead workers. */
static unsigned default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    return n < 1 ? 1 : n > FS_THREADS_MAX ? FS_THREADS_MAX : (unsigned)n;
}

static void append_opt(char **list, const char *opt, size_t len)
{
    size_t old = *list ? strlen(*list) : 0;
    char *s = realloc(*list, old + len + 2);

    if (!s) {
        fputs("npyfs: out of memory\n", stderr);
        exit(1);
    }
    if (old)
        s[old++] = ',';
    memcpy(s + old, opt, len);
    s[old + len] = '\0';
    *list = s;
}

/* Split one -o list into our options and libfuse's. */
static void parse_opts(struct mount_args *ma, const char *list)
{
    const char *p = list;

    while (*p) {
        size_t len = strcspn(p, ",");
        char opt[256];

        if (len >= sizeof(opt))
            die_usage("option too long: %.40s...", p);
        memcpy(opt, p, len);
        opt[len] = '\0';
        if (strncmp(opt, "cache_size=", 11) == 0) {
            if (parse_size(opt + 11, &ma->opts.cache_size) < 0)
                die_usage("bad value in -o %s: expected a size such as 512M", opt);
        } else if (strncmp(opt, "threads=", 8) == 0) {
            if (parse_threads(opt + 8, &ma->opts.threads) < 0)
                die_usage("bad value in -o %s: expected a number of threads from 0 to %u", opt,
                          FS_THREADS_MAX);
        } else if (strncmp(opt, "readahead=", 10) == 0) {
            if (parse_size(opt + 10, &ma->opts.readahead) < 0 ||
                ma->opts.readahead > (1ull << 30))
                die_usage("bad value in -o %s: expected a size of at most 1G", opt);
        } else if (strncmp(opt, "index_dir=", 10) == 0) {
            if (!opt[10])
                die_usage("bad value in -o %s: expected a directory", opt);
            free(ma->opts.index_dir);
            ma->opts.index_dir = strdup(opt + 10);
        } else if (strncmp(opt, "index=", 6) == 0) {
            if (strcmp(opt + 6, "background") == 0)
                ma->opts.index_mode = FS_INDEX_BACKGROUND;
            else if (strcmp(opt + 6, "lazy") == 0)
                ma->opts.index_mode = FS_INDEX_LAZY;
            else
                die_usage("bad value in -o %s: expected background or lazy", opt);
        } else if (strncmp(opt, "spacing=", 8) == 0) {
            if (parse_size(opt + 8, &ma->opts.spacing) < 0 ||
                ma->opts.spacing < DFX_MIN_SPACING)
                die_usage("bad value in -o %s: expected a size of at least %uK", opt,
                          DFX_MIN_SPACING >> 10);
        } else if (strcmp(opt, "rw") == 0) {
            die_usage("npyfs mounts are read-only; -o rw is not supported");
        } else if (len) {
            append_opt(&ma->fuse_opts, opt, len);
        }
        p += len;
        if (*p == ',')
            p++;
    }
}

static void parse_mount_args(int argc, char **argv, struct mount_args *ma)
{
    const char *pos[2];
    int npos = 0;

    ma->opts.cache_size = FS_DEFAULT_CACHE_SIZE;
    ma->opts.spacing = DFX_DEFAULT_SPACING;
    ma->opts.threads = default_threads();
    ma->opts.readahead = FS_DEFAULT_READAHEAD;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-f") == 0) {
            ma->foreground = true;
        } else if (strcmp(a, "-d") == 0) {
            ma->foreground = ma->debug = true;
        } else if (strcmp(a, "-o") == 0) {
            if (++i == argc)
                die_usage("-o needs an option list");
            parse_opts(ma, argv[i]);
        } else if (strncmp(a, "-o", 2) == 0) {
            parse_opts(ma, a + 2);
        } else if (a[0] == '-' && a[1]) {
            die_usage("unknown mount flag %s", a);
        } else if (npos < 2) {
            pos[npos++] = a;
        } else {
            die_usage("too many arguments: %s", a);
        }
    }
    if (npos != 2)
        die_usage("mount needs SOURCE and MOUNTPOINT");
    ma->source = pos[0];
    ma->mountpoint = pos[1];
}

static const char *describe_open_error(int err)
{
    switch (err) {
    case -EINVAL:
        return "not a zip (.npz) or gzip (.npy.gz) file, or its directory is malformed";
    case -EIO:
        return "damaged or truncated archive";
    case -EOPNOTSUPP:
        return "unsupported archive (multi-disk zip)";
    case -EISDIR:
        return "is a directory; give an .npz or .npy.gz file";
    default:
        return strerror(-err);
    }
}

static struct fs_archive *open_source(const char *path, uint64_t spacing)
{
    struct fs_archive *a;
    int ret = fs_archive_open(path, spacing, &a);

    if (ret < 0) {
        fprintf(stderr, "npyfs: %s: %s\n", path, describe_open_error(ret));
        exit(1);
    }
    return a;
}

static bool is_mounted(const char *path);
static char *absolute_mountpoint(const char *mnt);

static void check_mountpoint(const char *mnt)
{
    struct stat st;
    char *abs;

    if (stat(mnt, &st) < 0) {
        fprintf(stderr, "npyfs: %s: mount point %s\n", mnt,
                errno == ENOENT ? "does not exist" : strerror(errno));
        exit(1);
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "npyfs: %s: mount point is not a directory\n", mnt);
        exit(1);
    }
    abs = absolute_mountpoint(mnt);
    if (abs && is_mounted(abs)) {
        fprintf(stderr, "npyfs: %s: something is already mounted there\n", mnt);
        exit(1);
    }
    free(abs);
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

static struct fuse_session *new_session(struct mount_args *ma, struct fs_ctx *ctx)
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
    se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), ctx);
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

static int serve(struct fuse_session *se)
{
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    int ret;

    if (fuse_set_signal_handlers(se) != 0)
        return 1;
    fuse_loop_cfg_set_clone_fd(cfg, 0);
    fuse_loop_cfg_set_max_threads(cfg, 16);
    ret = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
    fuse_remove_signal_handlers(se);
    fuse_session_unmount(se);
    /* libfuse ends the loop with the signal number after SIGINT/SIGTERM/
     * SIGHUP: that is a clean unmount, not a failure. */
    return ret == 0 || ret == SIGINT || ret == SIGTERM || ret == SIGHUP ? 0 : 1;
}

/* Child side of a background mount: mount, report through fd, serve. */
static int daemon_child(struct fuse_session *se, const char *mnt, int fd)
{
    int null;

    setsid();
    if (fuse_session_mount(se, mnt) != 0) {
        dprintf(fd, "cannot mount (see the message above)");
        return 1;
    }
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
    return serve(se);
}

/* Parent side: wait for the child's word, then for the mount to answer. */
static int daemon_parent(pid_t child, const char *source, const char *mnt, int fd)
{
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
    return 0;
}

static int cmd_mount(int argc, char **argv)
{
    struct mount_args ma = {0};
    struct fs_ctx ctx = {0};
    struct fuse_session *se;
    int pipefd[2], ret;
    pid_t pid;

    parse_mount_args(argc, argv, &ma);
    check_mountpoint(ma.mountpoint);
    ctx.opts = ma.opts;
    ctx.mountpoint = realpath(ma.mountpoint, NULL); /* NULL: readahead stays the kernel's */
    ctx.archive = open_source(ma.source, ma.opts.spacing);
    ctx.uid = getuid();
    ctx.gid = getgid();
    if (fs_indexer_new(ctx.archive, &ctx.opts, &ctx.indexer) < 0) {
        fprintf(stderr, "npyfs: %s: out of memory\n", ma.source);
        return 1;
    }
    if (fs_tree_build(&ctx.tree, ctx.archive) < 0 ||
        cache_new(ma.opts.cache_size, FS_CHUNK_SIZE, &ctx.cache) < 0) {
        fprintf(stderr, "npyfs: %s: out of memory\n", ma.source);
        return 1;
    }
    se = new_session(&ma, &ctx);
    if (ma.foreground) {
        if (fuse_session_mount(se, ma.mountpoint) != 0) {
            fprintf(stderr, "npyfs: %s: cannot mount on %s\n", ma.source, ma.mountpoint);
            return 1;
        }
        ret = serve(se);
    } else {
        if (pipe2(pipefd, O_CLOEXEC) < 0 || (pid = fork()) < 0) {
            fprintf(stderr, "npyfs: cannot start the daemon: %s\n", strerror(errno));
            return 1;
        }
        if (pid > 0) {
            close(pipefd[1]);
            _exit(daemon_parent(pid, ma.source, ma.mountpoint, pipefd[0]));
        }
        close(pipefd[0]);
        ret = daemon_child(se, ma.mountpoint, pipefd[1]);
    }
    fuse_session_destroy(se);
    cache_free(ctx.cache);
    fs_tree_destroy(&ctx.tree);
    fs_indexer_free(ctx.indexer); /* stopped by the FUSE destroy handler */
    fs_archive_free(ctx.archive);
    free(ma.opts.index_dir);
    free(ctx.mountpoint);
    free(ma.fuse_opts);
    return ret;
}

/* Is path a mount point in /proc/self/mounts? Paths there escape space,
 * tab, newline and backslash as octal. */
static bool is_mounted(const char *path)
{
    FILE *f = fopen("/proc/self/mounts", "re");
    char line[PATH_MAX * 2], dir[PATH_MAX * 2];
    bool found = false;

    if (!f)
        return true; /* cannot tell: let fusermount3 decide */
    while (!found && fgets(line, sizeof(line), f)) {
        char *p = strchr(line, ' '), *d = dir;
        if (!p)
            continue;
        for (p++; *p && *p != ' ' && d < dir + sizeof(dir) - 1; p++) {
            if (p[0] == '\\' && p[1] && p[2] && p[3]) {
                *d++ = (char)(((p[1] - '0') << 6) | ((p[2] - '0') << 3) | (p[3] - '0'));
                p += 3;
            } else {
                *d++ = *p;
            }
        }
        *d = '\0';
        found = strcmp(dir, path) == 0;
    }
    fclose(f);
    return found;
}

static int run_fusermount(const char *flags, const char *mnt)
{
    pid_t pid = fork();
    int status;

    if (pid == 0) {
        execlp("fusermount3", "fusermount3", flags, "--", mnt, (char *)NULL);
        fprintf(stderr, "npyfs: cannot run fusermount3: %s\n", strerror(errno));
        _exit(127);
    }
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The absolute path of mnt without touching mnt itself, which may be a
 * dead FUSE mount that fails every stat. */
static char *absolute_mountpoint(const char *mnt)
{
    char *copy = strdup(mnt), *slash, *parent, *out = NULL;
    const char *base;

    if (!copy)
        return NULL;
    while (strlen(copy) > 1 && copy[strlen(copy) - 1] == '/')
        copy[strlen(copy) - 1] = '\0';
    slash = strrchr(copy, '/');
    if (slash) {
        *slash = '\0';
        base = slash + 1;
        parent = realpath(slash == copy ? "/" : copy, NULL);
    } else {
        base = copy;
        parent = realpath(".", NULL);
    }
    if (parent && asprintf(&out, "%s/%s", strcmp(parent, "/") ? parent : "", base) < 0)
        out = NULL;
    free(parent);
    free(copy);
    return out;
}

static int cmd_unmount(int argc, char **argv)
{
    char *mnt;
    int ret;

    if (argc != 1)
        die_usage("unmount needs MOUNTPOINT");
    mnt = absolute_mountpoint(argv[0]);
    if (!mnt) {
        fprintf(stderr, "npyfs: %s: %s\n", argv[0], strerror(errno));
        return 1;
    }
    if (!is_mounted(mnt)) {
        fprintf(stderr, "npyfs: %s: not mounted\n", argv[0]);
        free(mnt);
        return 1;
    }
    ret = run_fusermount("-u", mnt);
    if (ret != 0) /* busy, or the daemon is gone: detach lazily */
        ret = run_fusermount("-uz", mnt);
    free(mnt);
    if (ret != 0) {
        fprintf(stderr, "npyfs: %s: unmount failed\n", argv[0]);
        return 1;
    }
    return 0;
}

static int cmd_ls(int argc, char **argv)
{
    struct fs_archive *a;
    int ret;

    if (argc != 1)
        die_usage("ls needs SOURCE");
    a = open_source(argv[0], DFX_DEFAULT_SPACING);
    ret = fs_ls_main(a);
    fs_archive_free(a);
    return ret;
}

/* npyfs index [-o OPT,...] SOURCE...: one line per failing source. */
static int cmd_index(int argc, char **argv)
{
    struct mount_args ma = {0};
    int nsrc = 0, status = 0;

    ma.opts.spacing = DFX_DEFAULT_SPACING;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-o") == 0) {
            if (++i == argc)
                die_usage("-o needs an option list");
            parse_opts(&ma, argv[i]);
        } else if (strncmp(argv[i], "-o", 2) == 0) {
            parse_opts(&ma, argv[i] + 2);
        } else if (argv[i][0] == '-' && argv[i][1]) {
            die_usage("unknown index flag %s", argv[i]);
        }
    }
    if (ma.fuse_opts)
        die_usage("index takes only -o index_dir= and -o spacing=, not %s", ma.fuse_opts);
    for (int i = 0; i < argc; i++) {
        struct fs_archive *a;
        int ret;

        if (strcmp(argv[i], "-o") == 0) {
            i++;
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1])
            continue;
        nsrc++;
        ret = fs_archive_open(argv[i], ma.opts.spacing, &a);
        if (ret < 0) {
            fprintf(stderr, "npyfs: %s: %s\n", argv[i], describe_open_error(ret));
            status = 1;
            continue;
        }
        if (fs_index_main(a, &ma.opts) != 0)
            status = 1;
        fs_archive_free(a);
    }
    if (nsrc == 0)
        die_usage("index needs at least one SOURCE");
    free(ma.opts.index_dir);
    return status;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";

    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
        printf("npyfs %s (libfuse %s, zlib %s)\n", NPYFS_VERSION, fuse_pkgversion(),
               zlibVersion());
        return 0;
    }
    if (strcmp(cmd, "mount") == 0)
        return cmd_mount(argc - 2, argv + 2);
    if (strcmp(cmd, "unmount") == 0 || strcmp(cmd, "umount") == 0)
        return cmd_unmount(argc - 2, argv + 2);
    if (strcmp(cmd, "ls") == 0)
        return cmd_ls(argc - 2, argv + 2);
    if (strcmp(cmd, "index") == 0)
        return cmd_index(argc - 2, argv + 2);
    if (argc < 2)
        fputs(usage_text, stderr);
    else
        fprintf(stderr, "npyfs: unknown command '%s' (see npyfs --help)\n", cmd);
    return 1;
}
