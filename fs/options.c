/*
 * The -o options. Contract in options.h.
 */
#define _GNU_SOURCE
#include "options.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dfx.h"
#include "fs.h"
#include "http.h"
#include "net.h"
#include "remote.h"
#include "usage.h"

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

/* "0".."OPTIONS_THREADS_MAX" -> count. Returns 0 or -EINVAL. */
static int parse_threads(const char *s, unsigned *out)
{
    char *end;
    unsigned long v;

    if (*s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end || v > OPTIONS_THREADS_MAX)
        return -EINVAL;
    *out = (unsigned)v;
    return 0;
}

/* Contract in options.h. */
unsigned options_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    return n < 1 ? 1 : n > OPTIONS_THREADS_MAX ? OPTIONS_THREADS_MAX : (unsigned)n;
}

/* Contract in options.h. */
void options_append(char **list, const char *opt, size_t len)
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
static bool parse_net_opt(struct options *o, const char *opt)
{
    struct net_opts *n = &o->net_opts;
    uint64_t v;

    if (strncmp(opt, "endpoint=", 9) == 0) {
        if (!http_is_url(opt + 9))
            usage_die("bad value in -o %s: expected an http:// or https:// URL", opt);
        if (strchr(opt + 9, '@'))
            usage_die("-o endpoint= takes no credentials: give them in the environment "
                      "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or ~/.aws/credentials");
        set_str(&n->endpoint, opt + 9);
    } else if (strncmp(opt, "region=", 7) == 0) {
        if (!opt[7] || strspn(opt + 7, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(opt + 7))
            usage_die("bad value in -o %s: expected a region name such as us-east-1", opt);
        set_str(&n->region, opt + 7);
    } else if (strcmp(opt, "s3_path_style") == 0) {
        n->s3_path_style = true;
    } else if (strcmp(opt, "s3_anonymous") == 0) {
        n->s3_anonymous = true;
    } else if (strncmp(opt, "cacert=", 7) == 0 || strncmp(opt, "http_header=", 12) == 0) {
        const char *v0 = strchr(opt, '=') + 1;
        if (!*v0)
            usage_die("bad value in -o %s: expected a file", opt);
        set_str(opt[0] == 'c' ? &n->cacert : &n->http_header, v0);
    } else if (strncmp(opt, "connections=", 12) == 0) {
        if (parse_range(opt + 12, 1, HTTP_MAX_CONNECTIONS, &v) < 0)
            usage_die("bad value in -o %s: expected a number of connections from 1 to %d", opt,
                      HTTP_MAX_CONNECTIONS);
        n->connections = (unsigned)v;
    } else if (strncmp(opt, "timeout=", 8) == 0) {
        if (parse_range(opt + 8, 1, NET_MAX_TIMEOUT, &v) < 0)
            usage_die("bad value in -o %s: expected seconds from 1 to %d", opt, NET_MAX_TIMEOUT);
        n->timeout_s = (unsigned)v;
    } else if (strncmp(opt, "retries=", 8) == 0) {
        if (parse_range(opt + 8, 0, NET_MAX_RETRIES, &v) < 0)
            usage_die("bad value in -o %s: expected a number of retries from 0 to %d", opt,
                      NET_MAX_RETRIES);
        n->retries = (int)v;
    } else if (strncmp(opt, "block=", 6) == 0) {
        if (parse_size(opt + 6, &n->block) < 0 || n->block < REMOTE_MIN_BLOCK ||
            n->block > REMOTE_MAX_BLOCK)
            usage_die("bad value in -o %s: expected a size from %uK to %uM", opt,
                      REMOTE_MIN_BLOCK >> 10, REMOTE_MAX_BLOCK >> 20);
    } else if (strncmp(opt, "remote_cache=", 13) == 0) {
        if (parse_size(opt + 13, &n->cache) < 0 || n->cache < (1u << 20))
            usage_die("bad value in -o %s: expected a size of at least 1M", opt);
    } else if (strncmp(opt, "index_out=", 10) == 0) {
        if (!opt[10])
            usage_die("bad value in -o %s: expected a file", opt);
        free(o->index_out);
        o->index_out = strdup(opt + 10);
        if (!o->index_out) {
            fputs("npyfs: out of memory\n", stderr);
            exit(1);
        }
    } else if (strncmp(opt, "index_url=", 10) == 0) {
        if (!opt[10])
            usage_die("bad value in -o %s: expected a URL or a file", opt);
        free(o->index_url);
        o->index_url = strdup(opt + 10);
        if (!o->index_url) {
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

/* Contract in options.h. */
void options_parse(struct options *o, char **fuse_opts, const char *list)
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
            if (parse_size(opt + 11, &o->cache_size) < 0)
                usage_die("bad value in -o %s: expected a size such as 512M", opt);
            if (o->cache_size < FS_CHUNK_SIZE)
                usage_die("bad value in -o %s: the cache holds at least one %uK chunk: "
                          "give at least cache_size=%uK", opt, FS_CHUNK_SIZE >> 10,
                          FS_CHUNK_SIZE >> 10);
        } else if (strncmp(opt, "threads=", 8) == 0) {
            if (parse_threads(opt + 8, &o->threads) < 0)
                usage_die("bad value in -o %s: expected a number of threads from 0 to %u", opt,
                          OPTIONS_THREADS_MAX);
        } else if (strncmp(opt, "readahead=", 10) == 0) {
            if (parse_size(opt + 10, &o->readahead) < 0 ||
                o->readahead > (1ull << 30) ||
                (o->readahead && o->readahead < 4096))
                usage_die("bad value in -o %s: expected 0 or a size from 4K to at most 1G", opt);
        } else if (strncmp(opt, "index_dir=", 10) == 0) {
            if (!opt[10])
                usage_die("bad value in -o %s: expected a directory", opt);
            free(o->index_dir);
            o->index_dir = strdup(opt + 10);
        } else if (strncmp(opt, "index_max=", 10) == 0) {
            if (parse_size(opt + 10, &o->index_max) < 0)
                usage_die("bad value in -o %s: expected a size such as 4G (0: no cap)", opt);
        } else if (strncmp(opt, "index_mem=", 10) == 0) {
            if (parse_size(opt + 10, &o->index_mem) < 0)
                usage_die("bad value in -o %s: expected a size such as 64M", opt);
        } else if (strncmp(opt, "index=", 6) == 0) {
            o->index_given = true;
            if (strcmp(opt + 6, "background") == 0)
                o->index_mode = OPTIONS_INDEX_BACKGROUND;
            else if (strcmp(opt + 6, "lazy") == 0)
                o->index_mode = OPTIONS_INDEX_LAZY;
            else
                usage_die("bad value in -o %s: expected background or lazy", opt);
        } else if (strncmp(opt, "verify=", 7) == 0) {
            if (strcmp(opt + 7, "auto") == 0)
                o->verify = OPTIONS_VERIFY_AUTO;
            else if (strcmp(opt + 7, "lazy") == 0)
                o->verify = OPTIONS_VERIFY_LAZY;
            else if (strcmp(opt + 7, "strict") == 0)
                o->verify = OPTIONS_VERIFY_STRICT;
            else
                usage_die("bad value in -o %s: expected auto, lazy or strict", opt);
        } else if (strncmp(opt, "verify_max=", 11) == 0) {
            if (parse_size(opt + 11, &o->verify_max) < 0)
                usage_die("bad value in -o %s: expected a size such as 128M", opt);
        } else if (strncmp(opt, "max_ratio=", 10) == 0) {
            if (parse_count(opt + 10, &o->max_ratio) < 0)
                usage_die("bad value in -o %s: expected a whole number (0: no limit)", opt);
        } else if (strncmp(opt, "spin=", 5) == 0) {
            uint64_t v;

            if (parse_range(opt + 5, 0, OPTIONS_SPIN_MAX, &v) < 0)
                usage_die("bad value in -o %s: expected microseconds from 0 to %d", opt,
                          OPTIONS_SPIN_MAX);
            o->spin_us = (unsigned)v;
        } else if (strncmp(opt, "spacing=", 8) == 0) {
            if (parse_size(opt + 8, &o->spacing) < 0 ||
                o->spacing < DFX_MIN_SPACING)
                usage_die("bad value in -o %s: expected a size of at least %uK", opt,
                          DFX_MIN_SPACING >> 10);
            o->spacing_given = true;
        } else if (parse_net_opt(o, opt)) {
            /* one of the remote sources' options */
        } else if (strcmp(opt, "rw") == 0) {
            usage_die("npyfs mounts are read-only; -o rw is not supported");
        } else if (len && fuse_opt_known(opt, len)) {
            /* libfuse takes max_read= too, but wants init to agree with it */
            if (strncmp(opt, "max_read=", 9) == 0) {
                char bytes[32];
                if (parse_size(opt + 9, &o->max_read) < 0 || o->max_read < 4096 ||
                    o->max_read > UINT32_MAX)
                    usage_die("bad value in -o %s: expected a size of at least 4K", opt);
                /* the kernel takes bytes only: 64K goes on as max_read=65536 */
                snprintf(bytes, sizeof(bytes), "max_read=%" PRIu64, o->max_read);
                options_append(fuse_opts, bytes, strlen(bytes));
            } else {
                o->allow_other |= strcmp(opt, "allow_other") == 0;
                options_append(fuse_opts, opt, len);
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

        for (int i = 0; !ok && allowed[i]; i++) /* "spacing" alone: options_parse says */
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

/* Contract in options.h. */
void options_parse_cmd(const char *cmd, const char *const *allowed, const char *takes, int argc,
                       char **argv, struct options *o, const char **ops, int *nops, bool *json,
                       bool *prune)
{
    char *fuse = NULL; /* stays empty: check_cmd_opts() refuses libfuse's options */

    *nops = 0;
    o->spacing = DFX_DEFAULT_SPACING;
    o->index_max = OPTIONS_DEFAULT_INDEX_MAX;
    o->max_ratio = OPTIONS_DEFAULT_MAX_RATIO;
    o->net_opts.retries = -1;
    for (int i = 0, flags = 1; i < argc; i++) {
        const char *list = NULL;

        if (!flags || argv[i][0] != '-' || !argv[i][1]) {
            ops[(*nops)++] = argv[i];
        } else if (strcmp(argv[i], "--") == 0) {
            flags = 0; /* the rest are operands, "-x.npz" too */
        } else if (strcmp(argv[i], "-o") == 0) {
            if (++i == argc)
                usage_die("-o needs an option list");
            list = argv[i];
        } else if (strncmp(argv[i], "-o", 2) == 0) {
            list = argv[i] + 2;
        } else if (json && (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0)) {
            *json = true;
        } else if (prune && strcmp(argv[i], "--prune") == 0) {
            *prune = true;
        } else {
            usage_die("unknown %s flag %s", cmd, argv[i]);
        }
        if (list) {
            check_cmd_opts(cmd, allowed, takes, list);
            options_parse(o, &fuse, list);
        }
    }
    free(fuse);
}

/* Contract in options.h. */
void options_destroy(struct options *o)
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
