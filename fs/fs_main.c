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

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <syslog.h>
#include <unistd.h>
#include <zlib.h>

#include "bsrc.h"
#include "dfx_store.h"
#include "net.h"
#include "npy.h"
#include "source.h"
#include "src_file.h"
#include "zip.h"

#ifdef NPYFS_HAVE_ISAL
#include <isa-l.h>
#define STR_(x) #x
#define STR(x) STR_(x)
#define ISAL_TEXT                                                                                \
    "ISA-L " STR(ISAL_MAJOR_VERSION) "." STR(ISAL_MINOR_VERSION) "." STR(ISAL_PATCH_VERSION)
#else
#define ISAL_TEXT "without ISA-L"
#endif

struct mount_args {
    const char *source;       /* owned: the first source's name for messages and the
                               * fsname (bsrc_name_of(): a URL without its query) */
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
    "       npyfs unmount [-z|--lazy] MOUNTPOINT\n"
    "       npyfs ls [--json] [-o OPT[,OPT...]] SOURCE...\n"
    "       npyfs index [-o OPT[,OPT...]] SOURCE...\n"
    "       npyfs index --prune [-o OPT[,OPT...]] [SOURCE...]\n"
    "       npyfs stats [--json] MOUNTPOINT\n"
    "       npyfs --help | --version | COMMAND --help\n"
    "\n"
    "Mount NumPy .npz archives and gzipped .npy files (.npy.gz) read-only, showing\n"
    "every array as a plain .npy file that np.load(..., mmap_mode='r') can map.\n"
    "A SOURCE is an archive, or a directory whose archives appear as directories\n"
    "(opened on first use); several SOURCEs appear side by side at the root. An\n"
    "archive can be a URL: https://, http://, s3://BUCKET/KEY; and s3://BUCKET/PREFIX/\n"
    "stands for every archive under the prefix, like a directory.\n"
    "\n"
    "commands:\n"
    "  mount    mount in the background; returns once the mount answers\n"
    "  unmount  unmount an npyfs mount (nothing else); a busy one only with\n"
    "           -z (--lazy): detach now, the daemon exits once files are closed\n"
    "  ls       one row per member: name, dtype, shape, order, sizes, method;\n"
    "           a directory SOURCE: every .npz and .npy.gz below it; with more\n"
    "           than one archive an ARCHIVE column first; aligned on a terminal,\n"
    "           tab-separated otherwise; --json: one JSON array of objects\n"
    "  index    build and save the index and chunk checksums of every member\n"
    "           ahead of time, checking each CRC on the way; a directory SOURCE:\n"
    "           every .npz and .npy.gz below it (takes index_dir=, index_max=,\n"
    "           spacing= and max_ratio=); --prune: remove the index files of\n"
    "           archives that are gone or changed, and keep the directory within\n"
    "           index_max\n"
    "  stats    a mount's live counters: bytes served and decompressed, cache\n"
    "           hits and misses, index coverage per member, the indexing pass's\n"
    "           progress (--json: as JSON)\n"
    "\n"
    "mount flags:\n"
    "  -f                 stay in the foreground and log to stderr\n"
    "  -d                 foreground with FUSE debug output\n"
    "\n"
    "-o options (mount; the same in /etc/fstab):\n"
    "  cache_size=SIZE    decompressed data the daemon may hold (default 32M,\n"
    "                     at least 128K: one chunk)\n"
    "  spacing=SIZE       distance between index access points (default: 256K\n"
    "                     in saved indexes, 1M for those reads record; at least\n"
    "                     64K; smaller: faster random reads, larger index files\n"
    "                     and more memory)\n"
    "  threads=N          readahead workers decoding ahead of sequential\n"
    "                     readers (default: online cores; 0: none; at most 256)\n"
    "  readahead=SIZE     kernel readahead per file, set when root (default 256K;\n"
    "                     0: leave the kernel's; else from 4K to 1G)\n"
    "  index_dir=DIR      where saved indexes go (default $XDG_CACHE_HOME/npyfs,\n"
    "                     else ~/.cache/npyfs; without HOME, the password\n"
    "                     database's home, else /var/cache/npyfs for root)\n"
    "  index_max=SIZE     size cap of the index directory: a save removes the\n"
    "                     least recently used files beyond it (default 4G;\n"
    "                     0: no cap)\n"
    "  index=MODE         background (default): build missing indexes at idle\n"
    "                     priority after mounting; lazy: only as reads go\n"
    "  index_mem=SIZE     memory for the index windows that reads record, for\n"
    "                     the whole mount (default 64M; beyond it, fewer points\n"
    "                     keep a window: random reads decode further)\n"
    "  verify=MODE        auto (default): a member of at most verify_max bytes is\n"
    "                     checked in full before its first read is answered (its\n"
    "                     first open waits for that pass), a bigger one is served\n"
    "                     at once; strict: every member is checked first; lazy:\n"
    "                     every member is served at once. Once a member's chunk\n"
    "                     checksums exist (that pass, the background indexer, or\n"
    "                     a saved index), every chunk read is checked\n"
    "  verify_max=SIZE    the largest member verify=auto checks before serving\n"
    "                     it (default 128M)\n"
    "  max_ratio=N        a .npy.gz that must be sized by a full pass (several\n"
    "                     gzip members, ISIZE disagreeing with the .npy header,\n"
    "                     content that is not a sizeable .npy) is refused once it\n"
    "                     expands more than N times its size (default 100;\n"
    "                     0: no limit): it then reads as EIO (a SOURCE named on\n"
    "                     the command line: a mount error). Other files are not\n"
    "                     affected\n"
    "remote sources (http://, https://, s3:// URLs; see npyfs(1)):\n"
    "  endpoint=URL       the S3 endpoint (else AWS_ENDPOINT_URL_S3,\n"
    "                     AWS_ENDPOINT_URL, ~/.aws/config, then AWS's own)\n"
    "  region=R           the S3 region (else AWS_REGION, AWS_DEFAULT_REGION,\n"
    "                     ~/.aws/config, us-east-1)\n"
    "  s3_path_style      name the bucket in the path (most self-hosted S3\n"
    "                     servers need it)\n"
    "  s3_anonymous       send S3 requests unsigned (public buckets)\n"
    "  cacert=FILE        CA certificates (PEM) that HTTPS servers are checked\n"
    "                     against (default: AWS_CA_BUNDLE for s3:// URLs, else\n"
    "                     the system's store)\n"
    "  http_header=FILE   extra request headers, one 'Name: value' a line (a\n"
    "                     bearer token), read once at mount\n"
    "  connections=N      HTTP connections per mount (default 8, at most 64)\n"
    "  timeout=SECONDS    connect timeout, and the longest a transfer may make\n"
    "                     no progress (default 30)\n"
    "  retries=N          retries of a failed request, with backoff (default 4)\n"
    "  block=SIZE         compressed bytes a fetch reads at least (default 256K,\n"
    "                     from 4K to 16M)\n"
    "  remote_cache=SIZE  compressed blocks held in memory (default 64M, at\n"
    "                     least 1M)\n"
    "  index_url=URL      a published index file of the (one) remote archive\n"
    "                     (npyfs index -o index_out=), else URL.npyfsidx is tried\n"
    "  OPT                passed to libfuse: allow_other, allow_root, auto_unmount,\n"
    "                     ro, nodev, dev, nosuid, suid, noexec, exec, noatime,\n"
    "                     atime, sync, async, dirsync, max_read=SIZE, fsname=,\n"
    "                     user=, context=, fscontext=, defcontext=, rootcontext=,\n"
    "                     default_permissions, debug (always read-only); any\n"
    "                     other option is an error\n"
    "SIZE is bytes, or takes a K, M, G or T suffix (powers of 1024; KiB, MiB,\n"
    "GiB, TiB too; 1GB is refused as ambiguous).\n"
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
    fputs(" (see npyfs --help)\n", stderr);
    exit(1);
}

/* "512K", "256M", "1G", "1GiB", "4096" (bytes) -> bytes; K, M, G and T are
 * powers of 1024. Returns 0 or -EINVAL. "1GB" exits with a message: people
 * read GB as 10^9 and as 2^30, so it is refused rather than guessed. */
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
    if (shift && (end[0] == 'b' || end[0] == 'B') && !end[1]) {
        fprintf(stderr, "npyfs: ambiguous size %s: write %.*s or %.*siB (sizes are powers of "
                "1024)\n", s, (int)(end - s), s, (int)(end - s), s);
        exit(1);
    }
    if (shift && end[0] == 'i' && end[1] == 'B')
        end += 2;
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return -EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}

/* A decimal count, no suffix. Returns 0 or -EINVAL. */
static int parse_count(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (*s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end)
        return -EINVAL;
    *out = v;
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

/* The options passed on to libfuse and the kernel (README, Options: "passed
 * to libfuse"); a name ending in '=' takes a value. Any other option that is
 * not ours is refused, with the nearest known name suggested. Not here:
 * subtype= (npyfs sets it: `stats` and `unmount` find their mounts by it),
 * blkdev and blksize= (block-device FUSE), rw (refused: read-only). */
static const char *const fuse_opt_names[] = {
    "allow_other", "allow_root", "auto_unmount", "default_permissions", "debug", "ro",
    "nodev", "dev", "nosuid", "suid", "noexec", "exec", "noatime", "atime", "sync", "async",
    "dirsync", "max_read=", "fsname=", "user=", "context=", "fscontext=", "defcontext=",
    "rootcontext=", NULL};

/* Our options that take no value (the help text's "  NAME=VALUE" lines
 * name the others). */
static const char *const flag_opt_names[] = {"s3_path_style", "s3_anonymous", NULL};

static bool fuse_opt_known(const char *opt, size_t len)
{
    for (int i = 0; fuse_opt_names[i]; i++) {
        size_t n = strlen(fuse_opt_names[i]);
        if (fuse_opt_names[i][n - 1] == '=' ? len >= n && strncmp(opt, fuse_opt_names[i], n) == 0
                                             : len == n && strncmp(opt, fuse_opt_names[i], n) == 0)
            return true;
    }
    return false;
}

/* The edit distance between a[0..n) and b[0..m) (insertions, deletions,
 * substitutions and swaps of neighbours count 1 each), up to 31 bytes. */
static unsigned edit_distance(const char *a, size_t n, const char *b, size_t m)
{
    unsigned d[32][32];

    if (n > 31 || m > 31)
        return UINT_MAX;
    for (size_t i = 0; i <= n; i++)
        d[i][0] = (unsigned)i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = (unsigned)j;
    for (size_t i = 1; i <= n; i++) {
        for (size_t j = 1; j <= m; j++) {
            unsigned best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[n][m];
}

/* Consider the option name cand[0..m) for the unknown name[0..n). */
static void consider(const char *name, size_t n, const char *cand, size_t m, char *best,
                     size_t size, unsigned *best_d)
{
    unsigned d = edit_distance(name, n, cand, m);
    unsigned limit = m <= 4 ? 1 : m <= 8 ? 2 : 3;

    if (d <= limit && d < *best_d && m < size) {
        *best_d = d;
        memcpy(best, cand, m);
        best[m] = '\0';
    }
}

/* The known option name nearest to name[0..n) into best (empty if none is
 * near): ours, read from the help text's "  NAME=VALUE" lines (the list
 * test_system.py keeps in step with the man page and README), and
 * libfuse's. */
static void nearest_opt(const char *name, size_t n, char *best, size_t size)
{
    unsigned best_d = UINT_MAX;

    best[0] = '\0';
    for (const char *line = usage_text; line; line = strchr(line, '\n')) {
        size_t m;
        line += *line == '\n';
        if (line[0] != ' ' || line[1] != ' ' || line[2] < 'a' || line[2] > 'z')
            continue;
        m = strspn(line + 2, "abcdefghijklmnopqrstuvwxyz_");
        if (line[2 + m] == '=')
            consider(name, n, line + 2, m, best, size, &best_d);
    }
    for (int i = 0; fuse_opt_names[i]; i++)
        consider(name, n, fuse_opt_names[i], strcspn(fuse_opt_names[i], "="), best, size,
                 &best_d);
    for (int i = 0; flag_opt_names[i]; i++)
        consider(name, n, flag_opt_names[i], strlen(flag_opt_names[i]), best, size, &best_d);
}

/* An -o option that is neither ours nor libfuse's: say which, and the
 * nearest known name, then exit 1. */
static void die_unknown_opt(const char *opt)
{
    char near[64];

    nearest_opt(opt, strcspn(opt, "="), near, sizeof(near));
    if (strcmp(near, opt) == 0) /* a known name without its value */
        fprintf(stderr, "npyfs: -o %s needs a value (%s=...; npyfs mount --help)\n", opt, opt);
    else if (near[0])
        fprintf(stderr, "npyfs: unknown option -o %s (did you mean %s?)\n", opt, near);
    else
        fprintf(stderr, "npyfs: unknown option -o %s (npyfs mount --help lists the options)\n",
                opt);
    exit(1);
}

/* Replace the owned string *dst with a copy of v. */
static void set_str(const char **dst, const char *v)
{
    char *copy = strdup(v);

    if (!copy) {
        fputs("npyfs: out of memory\n", stderr);
        exit(1);
    }
    free((char *)*dst);
    *dst = copy;
}

/* A whole number from lo to hi. Returns 0 or -EINVAL. */
static int parse_range(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    return parse_count(s, out) < 0 || *out < lo || *out > hi ? -EINVAL : 0;
}

/* The options of remote sources (README, Remote sources). Returns whether
 * opt is one; exits on a bad value. */
static bool parse_net_opt(struct mount_args *ma, const char *opt)
{
    struct net_opts *n = &ma->opts.net_opts;
    uint64_t v;

    if (strncmp(opt, "endpoint=", 9) == 0) {
        if (!http_is_url(opt + 9))
            die_usage("bad value in -o %s: expected an http:// or https:// URL", opt);
        if (strchr(opt + 9, '@'))
            die_usage("-o endpoint= takes no credentials: give them in the environment "
                      "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or ~/.aws/credentials");
        set_str(&n->endpoint, opt + 9);
    } else if (strncmp(opt, "region=", 7) == 0) {
        if (!opt[7] || strspn(opt + 7, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(opt + 7))
            die_usage("bad value in -o %s: expected a region name such as us-east-1", opt);
        set_str(&n->region, opt + 7);
    } else if (strcmp(opt, "s3_path_style") == 0) {
        n->s3_path_style = true;
    } else if (strcmp(opt, "s3_anonymous") == 0) {
        n->s3_anonymous = true;
    } else if (strncmp(opt, "cacert=", 7) == 0 || strncmp(opt, "http_header=", 12) == 0) {
        const char *v0 = strchr(opt, '=') + 1;
        if (!*v0)
            die_usage("bad value in -o %s: expected a file", opt);
        set_str(opt[0] == 'c' ? &n->cacert : &n->http_header, v0);
    } else if (strncmp(opt, "connections=", 12) == 0) {
        if (parse_range(opt + 12, 1, HTTP_MAX_CONNECTIONS, &v) < 0)
            die_usage("bad value in -o %s: expected a number of connections from 1 to %d", opt,
                      HTTP_MAX_CONNECTIONS);
        n->connections = (unsigned)v;
    } else if (strncmp(opt, "timeout=", 8) == 0) {
        if (parse_range(opt + 8, 1, NET_MAX_TIMEOUT, &v) < 0)
            die_usage("bad value in -o %s: expected seconds from 1 to %d", opt, NET_MAX_TIMEOUT);
        n->timeout_s = (unsigned)v;
    } else if (strncmp(opt, "retries=", 8) == 0) {
        if (parse_range(opt + 8, 0, NET_MAX_RETRIES, &v) < 0)
            die_usage("bad value in -o %s: expected a number of retries from 0 to %d", opt,
                      NET_MAX_RETRIES);
        n->retries = (int)v;
    } else if (strncmp(opt, "block=", 6) == 0) {
        if (parse_size(opt + 6, &n->block) < 0 || n->block < REMOTE_MIN_BLOCK ||
            n->block > REMOTE_MAX_BLOCK)
            die_usage("bad value in -o %s: expected a size from %uK to %uM", opt,
                      REMOTE_MIN_BLOCK >> 10, REMOTE_MAX_BLOCK >> 20);
    } else if (strncmp(opt, "remote_cache=", 13) == 0) {
        if (parse_size(opt + 13, &n->cache) < 0 || n->cache < (1u << 20))
            die_usage("bad value in -o %s: expected a size of at least 1M", opt);
    } else if (strncmp(opt, "index_out=", 10) == 0) {
        if (!opt[10])
            die_usage("bad value in -o %s: expected a file", opt);
        free(ma->opts.index_out);
        ma->opts.index_out = strdup(opt + 10);
        if (!ma->opts.index_out) {
            fputs("npyfs: out of memory\n", stderr);
            exit(1);
        }
    } else if (strncmp(opt, "index_url=", 10) == 0) {
        if (!opt[10])
            die_usage("bad value in -o %s: expected a URL or a file", opt);
        free(ma->opts.index_url);
        ma->opts.index_url = strdup(opt + 10);
        if (!ma->opts.index_url) {
            fputs("npyfs: out of memory\n", stderr);
            exit(1);
        }
    } else {
        return false;
    }
    return true;
}

/* "-o cache_size=1GB" and the like: refused as ambiguous (see parse_size()),
 * with the option named, as every other bad value is. */
static void refuse_ambiguous_size(const char *opt)
{
    static const char *const sizes[] = {"cache_size=", "readahead=", "index_max=", "index_mem=",
                                        "verify_max=", "spacing=", "max_read=", "block=",
                                        "remote_cache=", NULL};
    const char *v = strchr(opt, '='), *end;
    bool size = false;

    for (int i = 0; v && sizes[i]; i++)
        size = size || strncmp(opt, sizes[i], (size_t)(v + 1 - opt)) == 0;
    if (!size || v[1] < '0' || v[1] > '9')
        return;
    end = v + 1 + strspn(v + 1, "0123456789");
    if (*end && strchr("kKmMgGtT", *end) && (end[1] == 'b' || end[1] == 'B') && !end[2]) {
        fprintf(stderr, "npyfs: bad value in -o %s: ambiguous size %s: write %.*s or %.*siB "
                "(sizes are powers of 1024)\n", opt, v + 1, (int)(end + 1 - (v + 1)), v + 1,
                (int)(end + 1 - (v + 1)), v + 1);
        exit(1);
    }
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
        refuse_ambiguous_size(opt);
        if (strncmp(opt, "cache_size=", 11) == 0) {
            if (parse_size(opt + 11, &ma->opts.cache_size) < 0)
                die_usage("bad value in -o %s: expected a size such as 512M", opt);
            if (ma->opts.cache_size < FS_CHUNK_SIZE)
                die_usage("bad value in -o %s: the cache holds at least one %uK chunk: "
                          "give at least cache_size=%uK", opt, FS_CHUNK_SIZE >> 10,
                          FS_CHUNK_SIZE >> 10);
        } else if (strncmp(opt, "threads=", 8) == 0) {
            if (parse_threads(opt + 8, &ma->opts.threads) < 0)
                die_usage("bad value in -o %s: expected a number of threads from 0 to %u", opt,
                          FS_THREADS_MAX);
        } else if (strncmp(opt, "readahead=", 10) == 0) {
            if (parse_size(opt + 10, &ma->opts.readahead) < 0 ||
                ma->opts.readahead > (1ull << 30) ||
                (ma->opts.readahead && ma->opts.readahead < 4096))
                die_usage("bad value in -o %s: expected 0 or a size from 4K to at most 1G", opt);
        } else if (strncmp(opt, "index_dir=", 10) == 0) {
            if (!opt[10])
                die_usage("bad value in -o %s: expected a directory", opt);
            free(ma->opts.index_dir);
            ma->opts.index_dir = strdup(opt + 10);
        } else if (strncmp(opt, "index_max=", 10) == 0) {
            if (parse_size(opt + 10, &ma->opts.index_max) < 0)
                die_usage("bad value in -o %s: expected a size such as 4G (0: no cap)", opt);
        } else if (strncmp(opt, "index_mem=", 10) == 0) {
            if (parse_size(opt + 10, &ma->opts.index_mem) < 0)
                die_usage("bad value in -o %s: expected a size such as 64M", opt);
        } else if (strncmp(opt, "index=", 6) == 0) {
            ma->opts.index_given = true;
            if (strcmp(opt + 6, "background") == 0)
                ma->opts.index_mode = FS_INDEX_BACKGROUND;
            else if (strcmp(opt + 6, "lazy") == 0)
                ma->opts.index_mode = FS_INDEX_LAZY;
            else
                die_usage("bad value in -o %s: expected background or lazy", opt);
        } else if (strncmp(opt, "verify=", 7) == 0) {
            if (strcmp(opt + 7, "auto") == 0)
                ma->opts.verify = FS_VERIFY_AUTO;
            else if (strcmp(opt + 7, "lazy") == 0)
                ma->opts.verify = FS_VERIFY_LAZY;
            else if (strcmp(opt + 7, "strict") == 0)
                ma->opts.verify = FS_VERIFY_STRICT;
            else
                die_usage("bad value in -o %s: expected auto, lazy or strict", opt);
        } else if (strncmp(opt, "verify_max=", 11) == 0) {
            if (parse_size(opt + 11, &ma->opts.verify_max) < 0)
                die_usage("bad value in -o %s: expected a size such as 128M", opt);
        } else if (strncmp(opt, "max_ratio=", 10) == 0) {
            if (parse_count(opt + 10, &ma->opts.max_ratio) < 0)
                die_usage("bad value in -o %s: expected a whole number (0: no limit)", opt);
        } else if (strncmp(opt, "spacing=", 8) == 0) {
            if (parse_size(opt + 8, &ma->opts.spacing) < 0 ||
                ma->opts.spacing < DFX_MIN_SPACING)
                die_usage("bad value in -o %s: expected a size of at least %uK", opt,
                          DFX_MIN_SPACING >> 10);
            ma->opts.spacing_given = true;
        } else if (parse_net_opt(ma, opt)) {
            /* one of the remote sources' options */
        } else if (strcmp(opt, "rw") == 0) {
            die_usage("npyfs mounts are read-only; -o rw is not supported");
        } else if (len && fuse_opt_known(opt, len)) {
            /* libfuse takes max_read= too, but wants init to agree with it */
            if (strncmp(opt, "max_read=", 9) == 0) {
                char bytes[32];
                if (parse_size(opt + 9, &ma->opts.max_read) < 0 || ma->opts.max_read < 4096 ||
                    ma->opts.max_read > UINT32_MAX)
                    die_usage("bad value in -o %s: expected a size of at least 4K", opt);
                /* the kernel takes bytes only: 64K goes on as max_read=65536 */
                snprintf(bytes, sizeof(bytes), "max_read=%" PRIu64, ma->opts.max_read);
                append_opt(&ma->fuse_opts, bytes, strlen(bytes));
            } else {
                append_opt(&ma->fuse_opts, opt, len);
            }
        } else if (len) {
            die_unknown_opt(opt);
        }
        free(opt);
        p += len;
        if (*p == ',')
            p++;
    }
}

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
    ma->opts.cache_size = FS_DEFAULT_CACHE_SIZE;
    ma->opts.spacing = DFX_DEFAULT_SPACING;
    ma->opts.threads = default_threads();
    ma->opts.readahead = FS_DEFAULT_READAHEAD;
    ma->opts.index_mem = FS_DEFAULT_INDEX_MEM;
    ma->opts.index_max = FS_DEFAULT_INDEX_MAX;
    ma->opts.verify = FS_VERIFY_AUTO;
    ma->opts.verify_max = FS_DEFAULT_VERIFY_MAX;
    ma->opts.max_ratio = FS_DEFAULT_MAX_RATIO;
    ma->opts.net_opts.retries = -1;
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
    if (ma->opts.index_out)
        die_usage("-o index_out= applies to npyfs index, not to a mount");
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

/* One line on stderr for a source that would not open (max_ratio: the limit
 * the open had, struct fs_open_limits; why: the server's problem for a
 * remote source, or NULL/""). A file refused as not a zip gets what it is
 * instead, when that can be told: a plain .npy (already mappable) or a zip
 * cut short (with the sizes that show it). */
static void report_open_error(const char *path, int err, uint64_t max_ratio, const char *why)
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
    fprintf(stderr, "npyfs: %s: %s\n", name, fs_open_problem(err, max_ratio, buf, sizeof(buf)));
}

/* Open the archive at path or URL (through net for a URL), within
 * lim. Returns 0, or the error after one line on stderr. */
static int open_archive(struct net *net, const char *path, uint64_t spacing,
                        const struct fs_open_limits *lim, struct fs_archive **out)
{
    char why[256] = "";
    int ret = bsrc_is_url(path)
                  ? fs_archive_open_url(net, path, spacing, lim, out, why, sizeof(why))
                  : fs_archive_open(path, spacing, lim, out);

    if (ret < 0)
        report_open_error(path, ret, lim ? lim->max_ratio : 0, why);
    return ret;
}

/* Open an archive named on the command line, within max_ratio (0: no
 * limit); exits with one line on failure. */
static struct fs_archive *open_source(struct net *net, const char *path, uint64_t spacing,
                                      uint64_t max_ratio)
{
    struct fs_open_limits lim = {.max_ratio = max_ratio};
    struct fs_archive *a;

    if (open_archive(net, path, spacing, &lim, &a) < 0)
        exit(1);
    return a;
}

static int mount_type(const char *path, char *type, size_t size);
static char *absolute_mountpoint(const char *mnt);
static void check_fuse_available(void);
static bool check_fuse_permission(void);

static int probe_mount(const char *mnt);

static void check_mountpoint(const char *mnt)
{
    struct stat st;
    struct dirent *e;
    char *abs = absolute_mountpoint(mnt), type[64];
    size_t entries = 0;
    int found;
    DIR *d;

    /* the mount table first: a dead FUSE mount may fail a stat, or answer
     * it from attributes the kernel still holds */
    found = abs ? mount_type(abs, type, sizeof(type)) : 0;
    if (found != 0) { /* -1, the table unreadable: leave no doubt either */
        if (found > 0 && strncmp(type, "fuse", 4) == 0 && probe_mount(abs) == -ENOTCONN) {
            if (strcmp(type, "fuse.npyfs") == 0)
                fprintf(stderr, "npyfs: %s: the previous npyfs mount there is dead: run npyfs "
                        "unmount %s\n", mnt, mnt);
            else
                fprintf(stderr, "npyfs: %s: a dead FUSE mount (%s) is there: unmount it first "
                        "(fusermount3 -u %s)\n", mnt, type, mnt);
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
     * not empty, but say what it means. */
    d = opendir(mnt);
    while (d && (e = readdir(d)))
        entries += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    if (d)
        closedir(d);
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

/* Is url an s3:// prefix (s3://BUCKET/PREFIX/ or s3://BUCKET)? */
static bool is_s3_prefix(const char *url)
{
    struct s3_location loc;
    bool prefix;

    if (!s3_is_url(url) || s3_parse_url(url, &loc) < 0)
        return false;
    prefix = loc.prefix;
    s3_location_destroy(&loc);
    return prefix;
}

/* The network side for the URLs among sources (and -o index_url=), or
 * NULL if there is none; exits with one line on failure. */
static struct net *make_net(const struct fs_opts *opts, const char *const *sources, int n)
{
    bool any = opts->index_url && bsrc_is_url(opts->index_url), s3 = false;
    struct net *net;
    char msg[512];
    int ret;

    for (int i = 0; i < n; i++) {
        any |= bsrc_is_url(sources[i]);
        s3 |= s3_is_url(sources[i]);
    }
    s3 |= opts->index_url && s3_is_url(opts->index_url);
    if (!any)
        return NULL;
    ret = net_new(&opts->net_opts, s3, &net, msg, sizeof(msg));
    if (ret < 0) {
        fprintf(stderr, "npyfs: %s\n", msg[0] ? msg : strerror(-ret));
        exit(1);
    }
    return net;
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
static struct fs_source *prepare_sources(const struct mount_args *ma)
{
    struct fs_source *s = calloc((size_t)ma->nsources, sizeof(*s));
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
        if (url && is_s3_prefix(p)) {
            s[i].listing = list_prefix(net, p);
            names[i] = prefix_name(p);
        } else if (url && http_is_url(p) && p[strcspn(p, "?#") - 1] == '/') {
            fprintf(stderr, "npyfs: %s: an http(s) SOURCE names one .npz or .npy.gz object "
                    "(a directory listing is not read; an s3:// prefix is)\n", shown);
            exit(1);
        } else if (!url && stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            if (has_suffix(p, ".npz") || has_suffix(p, ".npz/") || has_suffix(p, ".npy.gz") ||
                has_suffix(p, ".npy.gz/")) {
                report_open_error(p, -EISDIR, 0, NULL);
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
            names[i] = s[i].archive->kind == FS_SRC_GZIP ? strdup(s[i].archive->members[0].name)
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

/* The strings of -o options and the network side (after every archive
 * that uses it is freed). */
static void free_opts(struct fs_opts *o)
{
    net_free(o->net);
    o->net = NULL;
    free(o->index_dir);
    free(o->index_url);
    free(o->index_out);
    free((char *)o->net_opts.endpoint);
    free((char *)o->net_opts.region);
    free((char *)o->net_opts.cacert);
    free((char *)o->net_opts.http_header);
}

/* What cmd_mount() allocated for its sources and options (the archives
 * are the vfs's, or freed by the caller). */
static void free_sources(struct mount_args *ma, struct fs_source *srcs)
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
    free_opts(&ma->opts);
    free(ma->fuse_opts);
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
    fs_window_budget.limit = ma.opts.index_mem; /* before any archive opens */
    ma.opts.net = make_net(&ma.opts, ma.sources, ma.nsources);
    ctx.opts = ma.opts;
    ctx.source = ma.source;
    ctx.mountpoint = realpath(ma.mountpoint, NULL); /* NULL: readahead stays the kernel's */
    srcs = prepare_sources(&ma);
    if (!check_fuse_permission()) {
        for (int i = 0; i < ma.nsources; i++)
            fs_archive_free(srcs[i].archive);
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
    ret = fs_vfs_new(srcs, (size_t)ma.nsources, &ctx.opts, ctx.cache, &ctx.vfs, &bad);
    if (ret < 0) {
        char shown[PATH_MAX + 64];
        fprintf(stderr, "npyfs: %s: %s\n", bsrc_name_of(srcs[bad].path, shown, sizeof(shown)),
                ret == -EFBIG ? "too many files to mount" : strerror(-ret));
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
        net_park(ctx.opts.net); /* its threads would not survive the fork */
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
    fs_vfs_free(ctx.vfs); /* indexers and the pool stopped by the FUSE destroy handler */
    cache_free(ctx.cache); /* after the vfs: its passes may feed the cache */
    free_sources(&ma, srcs);
    free(ctx.mountpoint);
    return ret;
}

/* The type of the last (visible) mount on path in /proc/self/mounts, into
 * type, and if uid is not NULL its user_id= option in *uid (a FUSE mount's
 * owner; -1 without one) and whether it has allow_other in *others. Paths
 * there escape space, tab, newline and backslash as octal. Returns 1, 0 if
 * path is not a mount point, -1 if the table is unreadable. */
static int mount_entry(const char *path, char *type, size_t size, long *uid, bool *others)
{
    FILE *f = fopen("/proc/self/mounts", "re");
    char line[PATH_MAX * 2], dir[PATH_MAX * 2];
    int found = 0;

    if (uid) {
        *uid = -1;
        *others = false;
    }
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
        if (uid) {
            const char *o = strstr(t, ",user_id=");
            *uid = o ? strtol(o + 9, NULL, 10) : -1;
            *others = strstr(t, ",allow_other") != NULL;
        }
    }
    fclose(f);
    return found;
}

static int mount_type(const char *path, char *type, size_t size)
{
    return mount_entry(path, type, size, NULL, NULL);
}

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

/* Does the FUSE mount on mnt answer? statfs always reaches the daemon.
 * Run in a child, so a daemon that hangs costs at most a few seconds.
 * Returns 0 (answers), -ENOTCONN (its daemon is gone), -ETIMEDOUT (no
 * answer in time), or another negative errno. */
static int probe_mount(const char *mnt)
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

/* The absolute path of mnt as the mount table has it, without touching mnt
 * itself, which may be a dead FUSE mount that fails every stat: trailing
 * slashes and "." components at its end dropped, its directory resolved
 * with realpath(), and a last component that is a symlink followed (as
 * mount, umount and fusermount3 do) with readlink(), which never looks at
 * the link's target. NULL with errno set on failure. */
static char *absolute_mountpoint(const char *mnt)
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

/* npyfs unmount [-z|--lazy] MOUNTPOINT: only an npyfs mount; a busy one
 * only lazily, when asked; one whose daemon is gone is cleaned up. */
static int cmd_unmount(int argc, char **argv)
{
    const char *arg = NULL;
    char type[64], err[512], who[PATH_MAX + 160], *mnt;
    const char *fix = "close them";
    bool others;
    long owner;
    bool lazy = false, dead;
    int ret, probe;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-z") == 0 || strcmp(argv[i], "--lazy") == 0)
            lazy = true;
        else if (argv[i][0] == '-' && argv[i][1])
            die_usage("unknown unmount flag %s", argv[i]);
        else if (arg)
            die_usage("unmount takes one MOUNTPOINT");
        else
            arg = argv[i];
    }
    if (!arg)
        die_usage("unmount needs MOUNTPOINT");
    mnt = absolute_mountpoint(arg);
    if (!mnt) {
        fprintf(stderr, "npyfs: %s: %s\n", arg, strerror(errno));
        return 1;
    }
    ret = mount_type(mnt, type, sizeof(type));
    if (ret == 0) {
        fprintf(stderr, "npyfs: %s: not mounted\n", arg);
        free(mnt);
        return 1;
    }
    if (ret > 0 && strcmp(type, "fuse.npyfs") != 0) {
        fprintf(stderr, "npyfs: %s: not an npyfs mount (it is %s); npyfs unmount leaves it "
                "alone\n", arg, type);
        free(mnt);
        return 1;
    }
    /* fusermount3 would say "entry ... not found in /etc/mtab" */
    if (ret > 0 && getuid() != 0 && mount_entry(mnt, type, sizeof(type), &owner, &others) > 0 &&
        owner >= 0 && owner != (long)getuid()) {
        fprintf(stderr, "npyfs: %s: mounted by another user (uid %ld): only that user or "
                "root can unmount it\n", arg, owner);
        free(mnt);
        return 1;
    }
    probe = probe_mount(mnt);
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
        snprintf(who, sizeof(who), "a process has files open under it (fuser -vm %s shows "
                 "which)", mnt);
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

/* An archive by its file name, as a directory mount sees it (README,
 * Sources): NAME.npz or NAME.npy.gz, case-sensitive, NAME not empty. */
static bool archive_name(const char *name)
{
    size_t n = strlen(name);

    return (n > 4 && strcmp(name + n - 4, ".npz") == 0) ||
           (n > 7 && strcmp(name + n - 7, ".npy.gz") == 0);
}

/* The archives below a directory SOURCE, for index and ls: every regular
 * file named as an archive, symlinks not followed (a link's target inside
 * the tree is found where it lies), sorted by path. */
struct archive_list {
    char **paths; /* owned, each owned */
    size_t count, cap;
    int status;   /* 1 once a directory could not be read (said on stderr) */
};

/* The list being filled: nftw() passes no argument through (CLI only). */
static struct archive_list *walk_list;

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
static int collect_archives(const char *dir, struct archive_list *l)
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

static void archive_list_destroy(struct archive_list *l)
{
    for (size_t i = 0; i < l->count; i++)
        free(l->paths[i]);
    free(l->paths);
}

/* The archives under an s3:// prefix SOURCE, as s3:// URLs into l (zeroed),
 * as collect_archives() does for a directory. Returns 0, or 1 after a
 * message. */
static int collect_objects(struct net *net, const char *url, struct archive_list *l)
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

/* Is SOURCE a tree of archives (a directory, an s3:// prefix)? */
static bool is_tree(const char *src)
{
    struct stat st;

    if (bsrc_is_url(src))
        return is_s3_prefix(src);
    return stat(src, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The archives of a tree SOURCE into l (zeroed). Returns 0 or 1. */
static int collect_tree(struct net *net, const char *src, struct archive_list *l)
{
    return bsrc_is_url(src) ? collect_objects(net, src, l) : collect_archives(src, l);
}

/* List one archive into l. Returns 0, 1 after a message (it would not
 * open), -EIO (stdout failed: stop). */
static int ls_one(struct net *net, struct fs_ls *l, const char *path)
{
    char name[PATH_MAX + 64];
    struct fs_archive *a;
    int ret = open_archive(net, path, DFX_DEFAULT_SPACING, NULL, &a); /* asked for by name: no limit */

    if (ret < 0)
        return 1;
    ret = fs_ls_add(l, a);
    fs_archive_free(a);
    if (ret == -ENOMEM) {
        fprintf(stderr, "npyfs: %s: out of memory\n", bsrc_name_of(path, name, sizeof(name)));
        return 1;
    }
    return ret;
}

/* The -o options of remote sources, which ls and index take too. */
#define NET_OPT_NAMES                                                                              \
    "endpoint=", "region=", "s3_path_style", "s3_anonymous", "cacert=", "http_header=",           \
        "connections=", "timeout=", "retries=", "block=", "remote_cache="

/* The -o options npyfs index takes; a new one that applies to indexing
 * goes here too (and in INDEX_OPTS_TEXT, the index command's help, and
 * _npyfs_index_opts in completions/npyfs.bash). */
static const char *const index_opt_names[] = {"index_dir=", "index_max=", "spacing=",
                                              "max_ratio=", "index_out=", NET_OPT_NAMES, NULL};
#define INDEX_OPTS_TEXT                                                                          \
    "-o index_dir=DIR, -o index_max=SIZE, -o spacing=SIZE and -o max_ratio=N"
static const char *const ls_opt_names[] = {NET_OPT_NAMES, NULL};

/* Does the option opt[0..len) (name=value, or a flag) match the allowed
 * entry e ("name=" or "flag")? With prefix_only, opt is a name alone. */
static bool opt_matches(const char *e, const char *opt, size_t len)
{
    size_t n = strlen(e);

    if (e[n - 1] == '=')
        return len >= n - 1 && strncmp(opt, e, n - 1) == 0 && (len == n - 1 || opt[n - 1] == '=');
    return len == n && strncmp(opt, e, n) == 0;
}

/* Refuse, naming it, an option of list that cmd (index, ls) does not take:
 * a mount option (known to the mount, or passed to libfuse), or an unknown
 * one. */
static void check_cmd_opts(const char *cmd, const char *const *allowed, const char *takes,
                           const char *list)
{
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ","), name = strcspn(p, "=,");
        bool ok = len == 0, theirs = false;
        char near[64];

        for (int i = 0; !ok && allowed[i]; i++) /* "spacing" alone: parse_opts says */
            ok = name && opt_matches(allowed[i], p, name);
        if (!ok) {
            nearest_opt(p, name, near, sizeof(near));
            for (int i = 0; allowed[i]; i++)
                theirs |= near[0] && opt_matches(allowed[i], near, strlen(near));
            if (strlen(near) == name && strncmp(p, near, name) == 0)
                fprintf(stderr, "npyfs: -o %.*s applies to a mount, not to npyfs %s (which "
                        "takes %s)\n", (int)len, p, cmd, takes);
            else if (theirs)
                fprintf(stderr, "npyfs: unknown option -o %.*s (did you mean %s?)\n", (int)len,
                        p, near);
            else
                fprintf(stderr, "npyfs: unknown option -o %.*s (npyfs %s takes %s)\n", (int)len,
                        p, cmd, takes);
            exit(1);
        }
        p += len + (p[len] == ',');
    }
}

/* Parse the -o lists of `npyfs CMD` (index, ls) into ma; the operands are
 * put in ops (*nops of them), --json / -j sets *json (ls only), --prune
 * sets *prune (index only). */
static void parse_cmd_args(const char *cmd, const char *const *allowed, const char *takes,
                           int argc, char **argv, struct mount_args *ma, const char **ops,
                           int *nops, bool *json, bool *prune)
{
    *nops = 0;
    ma->opts.spacing = DFX_DEFAULT_SPACING;
    ma->opts.index_max = FS_DEFAULT_INDEX_MAX;
    ma->opts.max_ratio = FS_DEFAULT_MAX_RATIO;
    ma->opts.net_opts.retries = -1;
    for (int i = 0; i < argc; i++) {
        const char *list = NULL;

        if (strcmp(argv[i], "-o") == 0) {
            if (++i == argc)
                die_usage("-o needs an option list");
            list = argv[i];
        } else if (strncmp(argv[i], "-o", 2) == 0) {
            list = argv[i] + 2;
        } else if (json && (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0)) {
            *json = true;
        } else if (prune && strcmp(argv[i], "--prune") == 0) {
            *prune = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            die_usage("unknown %s flag %s", cmd, argv[i]);
        } else {
            ops[(*nops)++] = argv[i];
        }
        if (list) {
            check_cmd_opts(cmd, allowed, takes, list);
            parse_opts(ma, list);
        }
    }
}

/* npyfs ls [--json] [-o OPT,...] SOURCE...: every member of each archive
 * named, and of every archive below each directory or s3:// prefix, in one
 * listing; with more than one archive possible (several SOURCEs, a tree)
 * the table starts with an ARCHIVE column. A source that fails is one line
 * on stderr and exit 1; the others are still listed. */
static int cmd_ls(int argc, char **argv)
{
    const char **src = calloc((size_t)argc + 1, sizeof(*src));
    struct mount_args ma = {0};
    bool json = false, several;
    struct fs_ls *l = NULL;
    int nsrc = 0, status = 0, ret = 0;

    if (!src) {
        fputs("npyfs: out of memory\n", stderr);
        return 1;
    }
    parse_cmd_args("ls", ls_opt_names, "only the remote sources' options", argc, argv, &ma, src,
                   &nsrc, &json, NULL);
    if (nsrc == 0)
        die_usage("ls needs SOURCE");
    ma.opts.net = make_net(&ma.opts, src, nsrc);
    several = nsrc > 1;
    for (int i = 0; i < nsrc && !several; i++)
        several = is_tree(src[i]);
    if (fs_ls_new(json, !json && isatty(STDOUT_FILENO), several, &l) < 0) {
        fputs("npyfs: out of memory\n", stderr);
        free(src);
        free_opts(&ma.opts);
        return 1;
    }
    for (int i = 0; i < nsrc && ret >= 0; i++) {
        struct archive_list found = {0};

        if (is_tree(src[i])) {
            status |= collect_tree(ma.opts.net, src[i], &found);
            for (size_t k = 0; k < found.count && ret >= 0; k++)
                status |= ret = ls_one(ma.opts.net, l, found.paths[k]);
            archive_list_destroy(&found);
        } else {
            status |= ret = ls_one(ma.opts.net, l, src[i]);
        }
    }
    if (ret < 0 || fs_ls_flush(l) < 0)
        status = 1;
    fs_ls_free(l);
    free(src);
    free_opts(&ma.opts);
    return status ? 1 : 0;
}

/* Index one archive (path or URL) for npyfs index. Returns an exit
 * status. */
static int index_one(const char *path, const struct fs_opts *opts)
{
    struct fs_open_limits lim = {.max_ratio = opts->max_ratio};
    struct fs_archive *a;
    int status;

    if (open_archive(opts->net, path, opts->spacing, &lim, &a) < 0)
        return 1;
    status = fs_index_main(a, opts) != 0;
    fs_archive_free(a);
    return status;
}

/* npyfs index DIR: every archive below dir (or an s3:// prefix), in path
 * order. Returns an exit status. */
static int index_tree(const char *dir, const struct fs_opts *opts)
{
    struct archive_list found = {0};
    int status = collect_tree(opts->net, dir, &found);

    for (size_t i = 0; i < found.count; i++)
        status |= index_one(found.paths[i], opts);
    archive_list_destroy(&found);
    return status;
}

/* npyfs index [--prune] [-o OPT,...] SOURCE...: one line per failing
 * source; --prune first prunes the index directory (SOURCEs optional). */
static int cmd_index(int argc, char **argv)
{
    const char **src = calloc((size_t)argc + 1, sizeof(*src));
    struct mount_args ma = {0};
    int nsrc = 0, status = 0;
    bool prune = false;

    if (!src) {
        fputs("npyfs: out of memory\n", stderr);
        return 1;
    }
    parse_cmd_args("index", index_opt_names, INDEX_OPTS_TEXT, argc, argv, &ma, src, &nsrc, NULL,
                   &prune);
    if (nsrc == 0 && !prune)
        die_usage("index needs at least one SOURCE (or --prune)");
    if (ma.opts.index_out && (nsrc != 1 || is_tree(src[0])))
        die_usage("-o index_out=FILE writes the index of one archive: give one .npz or "
                  ".npy.gz SOURCE");
    ma.opts.net = make_net(&ma.opts, src, nsrc);
    if (prune && fs_index_prune(&ma.opts) != 0)
        status = 1;
    for (int i = 0; i < nsrc; i++)
        status |= is_tree(src[i]) ? index_tree(src[i], &ma.opts) : index_one(src[i], &ma.opts);
    free(src);
    free_opts(&ma.opts);
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
    bool others;
    long owner;
    ssize_t n;
    struct stat st;

    abs = absolute_mountpoint(mnt);
    if (!abs || mount_entry(abs, type, sizeof(type), &owner, &others) <= 0) {
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
        else if (err == EACCES && owner >= 0 && owner != (long)getuid() && !others)
            fprintf(stderr, "npyfs: %s: %s: mounted by another user (uid %ld) without -o "
                    "allow_other, so only that user can see into it\n", mnt, strerror(err),
                    owner);
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

/* What `npyfs COMMAND --help` prints before any section of usage_text. */
static const struct {
    const char *cmd, *text;
    const char *from, *to; /* then usage_text from "from" up to "to" (NULL: none) */
} command_helps[] = {
    {"mount",
     "usage: npyfs mount [-f] [-d] [-o OPT[,OPT...]] SOURCE... MOUNTPOINT\n"
     "       npyfs SOURCE MOUNTPOINT [-o OPT[,OPT...]]   (the form mount.fuse3 uses)\n"
     "\n"
     "Mount the SOURCEs read-only on MOUNTPOINT: an archive (.npz, .npy.gz) shows\n"
     "its arrays as .npy files; a directory shows its tree, each archive as a\n"
     "directory; several SOURCEs appear side by side. Runs in the background and\n"
     "returns once the mount answers. A MOUNTPOINT that is not empty works, with\n"
     "a warning: its files stay hidden while mounted.\n"
     "\n",
     "mount flags:", "Exit status:"},
    {"unmount",
     "usage: npyfs unmount [-z|--lazy] MOUNTPOINT\n"
     "\n"
     "Unmount the npyfs mount on MOUNTPOINT; anything else mounted there is left\n"
     "alone (exit 1). A busy mount (a process has files open or mapped under it)\n"
     "stays mounted (exit 1, naming a process that holds it), unless -z (--lazy):\n"
     "then it is detached at once, and the daemon exits when the last file is\n"
     "closed. A mount whose daemon is gone is cleaned up, and said so.\n",
     NULL, NULL},
    {"ls",
     "usage: npyfs ls [--json] [-o OPT[,OPT...]] SOURCE...\n"
     "\n"
     "One row per member of each archive: name, dtype (a type string such as\n"
     "<f8, or a structured dtype's descr), shape, order (C/F), size, stored size,\n"
     "method. A directory SOURCE lists every .npz and .npy.gz below it (symlinks\n"
     "not followed; other files are not listed). With several SOURCEs or a\n"
     "directory, the table starts with an ARCHIVE column. Aligned columns on a\n"
     "terminal, tab-separated otherwise.\n"
     "  --json, -j   one JSON array of objects, each with its \"archive\" and a\n"
     "               \"dtype\" that np.dtype() accepts (see npyfs(1))\n"
     "  -o OPT       a remote sources' option (endpoint=, region=, s3_path_style,\n"
     "               s3_anonymous, cacert=, http_header=, connections=, timeout=,\n"
     "               retries=, block=, remote_cache=; see npyfs mount --help)\n",
     NULL, NULL},
    {"index",
     "usage: npyfs index [-o OPT[,OPT...]] SOURCE...\n"
     "       npyfs index --prune [-o OPT[,OPT...]] [SOURCE...]\n"
     "\n"
     "Build and save the index and chunk checksums of every member ahead of time,\n"
     "checking each member's CRC-32 on the way. A directory SOURCE: every .npz\n"
     "and .npy.gz below it (symlinks not followed). On a terminal: a progress\n"
     "line, or \"already indexed\" when every member has a valid index file.\n"
     "  -o index_dir=DIR   where saved indexes go (as for mount)\n"
     "  -o index_max=SIZE  size cap of the index directory (as for mount)\n"
     "  -o spacing=SIZE    distance between access points (as for mount); an\n"
     "                     index file built with another spacing is rebuilt\n"
     "  -o max_ratio=N     the most a .npy.gz sized by a full pass may expand\n"
     "                     (as for mount)\n"
     "  --prune            first remove the index files of archives that no\n"
     "                     longer exist or changed, those unused for 30 days\n"
     "                     whose archive cannot be checked, those of older npyfs\n"
     "                     versions, then the least recently used beyond\n"
     "                     index_max; prints each file removed and the space freed\n"
     "  -o index_out=FILE  also write the index of the one archive SOURCE to FILE,\n"
     "                     to publish beside it as ARCHIVE.npyfsidx (its members'\n"
     "                     index files back to back)\n"
     "The remote sources' options (endpoint=, region=, s3_path_style, ...) are\n"
     "taken too. Mount-only options are refused.\n",
     NULL, NULL},
    {"stats",
     "usage: npyfs stats [--json] MOUNTPOINT\n"
     "\n"
     "The live counters of the npyfs mount on MOUNTPOINT: reads, bytes served and\n"
     "decompressed, cache hits, misses and evictions; how far indexing is (members\n"
     "indexed of those known, bytes to go, archives not opened yet); and per\n"
     "member its index coverage and state, and the indexing pass's progress.\n"
     "  --json, -j   the same as one JSON object\n",
     NULL, NULL},
};

/* `npyfs COMMAND ... --help` (or -h anywhere after COMMAND): print its
 * usage to stdout and return true. */
static bool command_help(const char *cmd, int argc, char **argv)
{
    bool asked = false;
    size_t i, n = sizeof(command_helps) / sizeof(command_helps[0]);

    for (int k = 0; k < argc && !asked; k++)
        asked = strcmp(argv[k], "--help") == 0 || strcmp(argv[k], "-h") == 0;
    if (!asked)
        return false;
    if (strcmp(cmd, "umount") == 0)
        cmd = "unmount";
    for (i = 0; i < n && strcmp(command_helps[i].cmd, cmd) != 0; i++) {
    }
    if (i == n)
        return false;
    fputs(command_helps[i].text, stdout);
    if (command_helps[i].from) {
        const char *from = strstr(usage_text, command_helps[i].from);
        const char *to = from ? strstr(from, command_helps[i].to) : NULL;
        if (from && to)
            fwrite(from, 1, (size_t)(to - from), stdout);
    }
    return true;
}

/* Blank the secrets of the URLs in arg[0..len) in place: a query or
 * fragment (a signed URL's signature), and a user:password@. A URL ends
 * at the end of arg or at a ',' (an -o list). */
static void blank_urls(char *arg)
{
    static const char *const schemes[] = {"http://", "https://"};

    for (int k = 0; k < 2; k++) {
        char *p = arg;
        while ((p = strcasestr(p, schemes[k]))) {
            char *host = p + strlen(schemes[k]);
            char *end = host + strcspn(host, ",");
            char *path = host + strcspn(host, "/?#,");
            char *at = memchr(host, '@', (size_t)(path - host));
            char *q = path + strcspn(path, "?#,");

            if (at)
                memset(host, '*', (size_t)(at - host));
            if (q < end)
                memset(q + 1, '*', (size_t)(end - q - 1));
            p = end;
        }
    }
}

/* A signed URL's query, or a URL's user:password@, is a secret: every
 * argument that holds one is copied (the copy is what the program uses)
 * and blanked in place, in the memory that `ps` and /proc/PID/cmdline
 * show for this process and for the daemon it forks. */
static void hide_secrets(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        char *copy;

        if (!strcasestr(argv[i], "http://") && !strcasestr(argv[i], "https://"))
            continue;
        copy = strdup(argv[i]);
        if (!copy)
            continue; /* shown as typed rather than lost */
        blank_urls(argv[i]);
        if (strcmp(copy, argv[i]) == 0) {
            free(copy);
            continue;
        }
        argv[i] = copy; /* freed at exit */
    }
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";

    hide_secrets(argc, argv);
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
        printf("npyfs %s (libfuse %s, zlib %s, %s; index files: format version %d)\n",
               NPYFS_VERSION, fuse_pkgversion(), zlibVersion(), ISAL_TEXT, DFX_STORE_VERSION);
        return 0;
    }
    if (command_help(cmd, argc - 2, argv + 2))
        return fflush(stdout) == 0 ? 0 : 1;
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
