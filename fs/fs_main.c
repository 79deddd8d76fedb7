/*
 * The npyfs command: mount (foreground or as a daemon), unmount, ls.
 *
 * This is the only place that turns error codes into text. A mount error is
 * one line naming the file and the problem; nothing is left mounted.
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
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <syslog.h>
#include <unistd.h>
#include <zlib.h>

#include "npy.h"

struct mount_args {
    const char *source;       /* the first source (fsname, messages) */
    const char **sources;     /* owned array: every SOURCE as given */
    int nsources;
    const char *mountpoint;
    bool foreground;
    bool debug;
    struct fs_opts opts;
    char *fuse_opts; /* owned: options passed on to libfuse, comma-separated */
};

static const char usage_text[] =
    "usage: npyfs mount [-f] [-d] [-o OPT[,OPT...]] SOURCE... MOUNTPOINT\n"
    "       npyfs SOURCE MOUNTPOINT [-o OPT[,OPT...]]   (the form mount.fuse3 uses)\n"
    "       npyfs unmount MOUNTPOINT\n"
    "       npyfs ls [--json] SOURCE\n"
    "       npyfs index [-o OPT[,OPT...]] SOURCE...\n"
    "       npyfs stats [--json] MOUNTPOINT\n"
    "       npyfs --help | --version\n"
    "\n"
    "Mount NumPy .npz archives and gzipped .npy files (.npy.gz) read-only, showing\n"
    "every array as a plain .npy file that np.load(..., mmap_mode='r') can map.\n"
    "A SOURCE is an archive, or a directory whose archives appear as directories\n"
    "(opened on first use); several SOURCEs appear side by side at the root.\n"
    "\n"
    "commands:\n"
    "  mount    mount in the background; returns once the mount answers\n"
    "  unmount  unmount (fusermount3 -u, lazily if the mount is busy)\n"
    "  ls       one row per member: name, dtype, shape, order, sizes, method;\n"
    "           --json: one JSON array of objects instead\n"
    "  index    build and save the index and chunk checksums of every member\n"
    "           ahead of time, checking each CRC on the way; a directory SOURCE:\n"
    "           every .npz and .npy.gz below it (takes index_dir= and spacing=)\n"
    "  stats    a mount's live counters: bytes served and decompressed, cache\n"
    "           hits and misses, index coverage per member (--json: as JSON)\n"
    "\n"
    "mount flags:\n"
    "  -f                 stay in the foreground and log to stderr\n"
    "  -d                 foreground with FUSE debug output\n"
    "\n"
    "-o options (mount; the same in /etc/fstab):\n"
    "  cache_size=SIZE    decompressed data the daemon may hold (default 32M)\n"
    "  spacing=SIZE       distance between index access points (default 1M, at\n"
    "                     least 64K; smaller: faster random reads, more memory)\n"
    "  threads=N          readahead workers decoding ahead of sequential\n"
    "                     readers (default: online cores; 0: none; at most 256)\n"
    "  readahead=SIZE     kernel readahead per file, set when root (default 256K;\n"
    "                     0: leave the kernel's; at most 1G)\n"
    "  index_dir=DIR      where saved indexes go (default $XDG_CACHE_HOME/npyfs,\n"
    "                     else ~/.cache/npyfs)\n"
    "  index=MODE         background (default): build missing indexes at idle\n"
    "                     priority after mounting; lazy: only as reads go\n"
    "  verify=MODE        lazy (default): serve at once, checking each chunk once\n"
    "                     the member's checksums exist; strict: a member's first\n"
    "                     open waits for a full pass that checks all of it\n"
    "  OPT                any other option goes to libfuse: allow_other, ro,\n"
    "                     nodev, nosuid, noexec, noatime, ... (always read-only)\n"
    "SIZE takes a K, M, G or T suffix (powers of 1024).\n"
    "\n"
    "Metadata without Python: getfattr -d FILE shows user.npy.dtype, .shape and\n"
    ".fortran_order, user.npyfs.method and .stored_size.\n"
    "\n"
    "/etc/fstab (mount /mnt/a runs mount.fuse3, which runs npyfs; rw, which\n"
    "mount passes for defaults, is ignored):\n"
    "  /data/a.npz  /mnt/a  fuse.npyfs  ro,allow_other,cache_size=64M  0 0\n"
    "\n"
    "Exit status: 0 on success, 1 on any error (one line naming the file).\n"
    "See npyfs(1).\n";

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
        char *opt = strndup(p, len);

        if (!opt) {
            fputs("npyfs: out of memory\n", stderr);
            exit(1);
        }
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
        } else if (strncmp(opt, "verify=", 7) == 0) {
            if (strcmp(opt + 7, "lazy") == 0)
                ma->opts.verify = FS_VERIFY_LAZY;
            else if (strcmp(opt + 7, "strict") == 0)
                ma->opts.verify = FS_VERIFY_STRICT;
            else
                die_usage("bad value in -o %s: expected lazy or strict", opt);
        } else if (strncmp(opt, "spacing=", 8) == 0) {
            if (parse_size(opt + 8, &ma->opts.spacing) < 0 ||
                ma->opts.spacing < DFX_MIN_SPACING)
                die_usage("bad value in -o %s: expected a size of at least %uK", opt,
                          DFX_MIN_SPACING >> 10);
        } else if (strcmp(opt, "rw") == 0) {
            die_usage("npyfs mounts are read-only; -o rw is not supported");
        } else if (len) {
            /* libfuse takes max_read= too, but wants init to agree with it */
            if (strncmp(opt, "max_read=", 9) == 0 &&
                (parse_size(opt + 9, &ma->opts.max_read) < 0 || ma->opts.max_read < 4096 ||
                 ma->opts.max_read > UINT32_MAX))
                die_usage("bad value in -o %s: expected a size of at least 4K", opt);
            append_opt(&ma->fuse_opts, opt, len);
        }
        free(opt);
        p += len;
        if (*p == ',')
            p++;
    }
}

static void parse_mount_args(int argc, char **argv, struct mount_args *ma)
{
    const char **pos = calloc((size_t)argc + 1, sizeof(*pos));
    int npos = 0;

    if (!pos) {
        fputs("npyfs: out of memory\n", stderr);
        exit(1);
    }
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
        } else {
            pos[npos++] = a;
        }
    }
    if (npos < 2)
        die_usage("mount needs SOURCE and MOUNTPOINT");
    ma->sources = pos;
    ma->nsources = npos - 1;
    ma->source = pos[0];
    ma->mountpoint = pos[npos - 1];
}

/* For messages on stderr, from this single thread. */
static const char *describe_open_error(int err)
{
    static char buf[128];

    return fs_open_problem(err, buf, sizeof(buf));
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
static void check_fuse_available(void);

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
    fs_notifier_quiesce(); /* nothing is sent once the fd may be closed */
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

/*
 * Check every source named on the command line before anything else: a
 * directory must be readable (it is walked later), a file is opened here as
 * an archive, so an error is one line naming it. With several sources,
 * their names at the root must differ. Exits on any error.
 */
static struct fs_source *prepare_sources(const struct mount_args *ma)
{
    struct fs_source *s = calloc((size_t)ma->nsources, sizeof(*s));
    char **names = calloc((size_t)ma->nsources, sizeof(*names));
    struct stat st;

    if (!s || !names) {
        fputs("npyfs: out of memory\n", stderr);
        exit(1);
    }
    for (int i = 0; i < ma->nsources; i++) {
        const char *p = ma->sources[i];

        s[i].path = p;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            if (has_suffix(p, ".npz") || has_suffix(p, ".npz/") || has_suffix(p, ".npy.gz") ||
                has_suffix(p, ".npy.gz/")) {
                fprintf(stderr, "npyfs: %s: %s\n", p, describe_open_error(-EISDIR));
                exit(1);
            }
            if (access(p, R_OK | X_OK) != 0) {
                fprintf(stderr, "npyfs: %s: cannot read the directory: %s\n", p,
                        strerror(errno));
                exit(1);
            }
            names[i] = dir_name(p);
        } else {
            s[i].archive = open_source(p, ma->opts.spacing);
            names[i] = s[i].archive->kind == FS_SRC_GZIP ? strdup(s[i].archive->members[0].name)
                                                          : dir_name(p);
        }
        s[i].name = names[i];
        if (ma->nsources > 1 && (!names[i] || !names[i][0])) {
            fprintf(stderr, "npyfs: %s: has no name to show at the mount root; mount it "
                    "alone\n", p);
            exit(1);
        }
        for (int j = 0; ma->nsources > 1 && j < i; j++) {
            if (strcmp(names[j], names[i]) == 0) {
                fprintf(stderr, "npyfs: %s and %s would both appear as '%s' at the mount "
                        "root; rename one, or mount them separately\n", s[j].path, p,
                        names[i]);
                exit(1);
            }
        }
    }
    free(names); /* the strings stay: s[i].name borrows them until exit */
    return s;
}

static int cmd_mount(int argc, char **argv)
{
    struct mount_args ma = {0};
    struct fs_ctx ctx = {0};
    struct fs_source *srcs;
    struct fuse_session *se;
    int pipefd[2], ret;
    size_t bad;
    pid_t pid;

    parse_mount_args(argc, argv, &ma);
    check_mountpoint(ma.mountpoint);
    check_fuse_available();
    raise_nofile();
    ctx.opts = ma.opts;
    ctx.source = ma.source;
    ctx.mountpoint = realpath(ma.mountpoint, NULL); /* NULL: readahead stays the kernel's */
    srcs = prepare_sources(&ma);
    ctx.uid = getuid();
    ctx.gid = getgid();
    ret = fs_vfs_new(srcs, (size_t)ma.nsources, &ctx.opts, &ctx.vfs, &bad);
    if (ret < 0) {
        fprintf(stderr, "npyfs: %s: %s\n", srcs[bad].path,
                ret == -EFBIG ? "too many files to mount" : strerror(-ret));
        return 1;
    }
    if (cache_new(ma.opts.cache_size, FS_CHUNK_SIZE, &ctx.cache) < 0) {
        fprintf(stderr, "npyfs: %s: out of memory\n", ma.source);
        return 1;
    }
    se = new_session(&ma, &ctx);
    ctx.se = se; /* the notifier sends through it (fs_ops.c) */
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
    fs_vfs_free(ctx.vfs); /* indexers stopped by the FUSE destroy handler */
    for (int i = 0; i < ma.nsources; i++)
        free((char *)srcs[i].name);
    free(srcs);
    free(ma.sources);
    free(ma.opts.index_dir);
    free(ctx.mountpoint);
    free(ma.fuse_opts);
    return ret;
}

/* The type of the last (visible) mount on path in /proc/self/mounts, into
 * type. Paths there escape space, tab, newline and backslash as octal.
 * Returns 1, 0 if path is not a mount point, -1 if the table is unreadable. */
static int mount_type(const char *path, char *type, size_t size)
{
    FILE *f = fopen("/proc/self/mounts", "re");
    char line[PATH_MAX * 2], dir[PATH_MAX * 2];
    int found = 0;

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        char *p = strchr(line, ' '), *d = dir, *t;
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
        if (strcmp(dir, path) != 0 || *p != ' ')
            continue;
        t = p + 1;
        snprintf(type, size, "%.*s", (int)strcspn(t, " "), t);
        found = 1; /* keep going: the last mount on a path is the visible one */
    }
    fclose(f);
    return found;
}

/* Is path a mount point? If the mount table cannot be read, say yes and
 * let fusermount3 decide. */
static bool is_mounted(const char *path)
{
    char type[64];

    return mount_type(path, type, sizeof(type)) != 0;
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
            die_usage("unknown %s flag %s", cmd, argv[i]);
        else if (operand)
            die_usage("%s takes one %s", cmd, what);
        else
            operand = argv[i];
    }
    if (!operand)
        die_usage("%s needs %s", cmd, what);
    return operand;
}

/* npyfs ls [--json] SOURCE */
static int cmd_ls(int argc, char **argv)
{
    struct fs_archive *a;
    bool json;
    const char *source = json_and_operand("ls", "SOURCE", argc, argv, &json);
    int ret;

    a = open_source(source, DFX_DEFAULT_SPACING);
    ret = fs_ls_main(a, json);
    fs_archive_free(a);
    return ret;
}

/* An archive by its file name, as a directory mount sees it (README,
 * Sources): NAME.npz or NAME.npy.gz, case-sensitive, NAME not empty. */
static bool archive_name(const char *name)
{
    size_t n = strlen(name);

    return (n > 4 && strcmp(name + n - 4, ".npz") == 0) ||
           (n > 7 && strcmp(name + n - 7, ".npy.gz") == 0);
}

/* The state of index_tree()'s walk: nftw() passes no argument through. */
static struct {
    const struct fs_opts *opts;
    size_t found;
    int status;
} tree_walk;

static int index_visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    struct fs_archive *a;
    int ret;

    if (type == FTW_DNR) {
        fprintf(stderr, "npyfs: %s: cannot read the directory\n", path);
        tree_walk.status = 1;
        return 0;
    }
    if (type != FTW_F || !S_ISREG(st->st_mode) || !archive_name(path + ftw->base))
        return 0;
    tree_walk.found++;
    ret = fs_archive_open(path, tree_walk.opts->spacing, &a);
    if (ret < 0) {
        fprintf(stderr, "npyfs: %s: %s\n", path, describe_open_error(ret));
        tree_walk.status = 1;
        return 0;
    }
    if (fs_index_main(a, tree_walk.opts) != 0)
        tree_walk.status = 1;
    fs_archive_free(a);
    return 0;
}

/* npyfs index DIR: every .npz and .npy.gz below dir, symlinks not followed
 * (a link's target inside the tree is indexed where it lies, and saved
 * indexes are keyed by the file, not its name). Returns an exit status. */
static int index_tree(const char *dir, const struct fs_opts *opts)
{
    tree_walk.opts = opts;
    tree_walk.found = 0;
    tree_walk.status = 0;
    if (nftw(dir, index_visit, 32, FTW_PHYS) != 0) {
        fprintf(stderr, "npyfs: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    if (tree_walk.found == 0)
        fprintf(stderr, "npyfs: %s: no .npz or .npy.gz files in it\n", dir);
    return tree_walk.status;
}

/* npyfs index [-o OPT,...] SOURCE...: one line per failing source. */
static int cmd_index(int argc, char **argv)
{
    struct mount_args ma = {0};
    struct stat st;
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
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            if (index_tree(argv[i], &ma.opts) != 0)
                status = 1;
            continue;
        }
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

/* The call form of mount.fuse3 (an /etc/fstab line of type fuse.npyfs):
 * npyfs SOURCE MOUNTPOINT [-o OPTS]. Mount in the background as `mount`
 * does, after dropping the options only fstab knows. */
static int cmd_fstab(int argc, char **argv)
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
                append_opt(&kept, p, len);
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

/* npyfs stats [--json] MOUNTPOINT: print the mount root's user.npyfs.stats. */
static int cmd_stats(int argc, char **argv)
{
    char type[64], *abs, *buf;
    bool json;
    const char *mnt = json_and_operand("stats", "MOUNTPOINT", argc, argv, &json);
    ssize_t n;
    struct stat st;

    abs = absolute_mountpoint(mnt);
    if (!abs || mount_type(abs, type, sizeof(type)) <= 0) {
        if (lstat(mnt, &st) < 0)
            fprintf(stderr, "npyfs: %s: %s\n", mnt,
                    errno == ENOENT ? "no such directory" : strerror(errno));
        else
            fprintf(stderr, "npyfs: %s: not a mount point (give the directory an npyfs "
                    "mount is on)\n", mnt);
        free(abs);
        return 1;
    }
    if (strcmp(type, "fuse.npyfs") != 0) {
        fprintf(stderr, "npyfs: %s: not an npyfs mount (it is %s)\n", mnt, type);
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
    if (strcmp(cmd, "stats") == 0)
        return cmd_stats(argc - 2, argv + 2);
    if (argc >= 3 && cmd[0] != '-' && strpbrk(cmd, "./"))
        return cmd_fstab(argc - 1, argv + 1); /* npyfs SOURCE MOUNTPOINT -o OPTS */
    if (argc < 2)
        fputs(usage_text, stderr);
    else
        fprintf(stderr, "npyfs: unknown command '%s' (see npyfs --help)\n", cmd);
    return 1;
}
