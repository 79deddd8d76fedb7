/*
 * The help texts. Contract in usage.h.
 */
#include "usage.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char usage_text[] =
    "usage: npyfs mount [-f] [-d] [-o OPT[,OPT...]] SOURCE... MOUNTPOINT\n"
    "       npyfs SOURCE MOUNTPOINT [-o OPT[,OPT...]]   (the form mount.fuse3 uses)\n"
    "       npyfs unmount [-z|--lazy] MOUNTPOINT\n"
    "       npyfs ls [--json] [-o OPT[,OPT...]] SOURCE...\n"
    "       npyfs index [-o OPT[,OPT...]] SOURCE...\n"
    "       npyfs index --prune [-o OPT[,OPT...]] [SOURCE...]\n"
    "       npyfs stats [--json] MOUNTPOINT|URL\n"
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
    "           spacing=, max_ratio=, index_out= and the remote options);\n"
    "           --prune: remove the index files of\n"
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
    "  spin=USEC          after answering a request other than a read, how long\n"
    "                     the daemon keeps polling for the next one before it\n"
    "                     sleeps (default 200; 0: at once; at most 10000): a\n"
    "                     caller's next request finds it awake\n"
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
    "                     no progress (default 30, from 1 to 3600)\n"
    "  retries=N          retries of a failed request, with backoff (default 4,\n"
    "                     at most 20)\n"
    "  block=SIZE         compressed bytes a fetch reads at least (default 16K,\n"
    "                     from 4K to 16M)\n"
    "  remote_cache=SIZE  compressed blocks held in memory (default 64M, at\n"
    "                     least 1M and 4 blocks)\n"
    "  index_url=URL      a published index file of the (one) archive mounted\n"
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

/* Contract in usage.h. */
void usage_die(const char *fmt, ...)
{
    va_list ap;

    fputs("npyfs: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see npyfs --help)\n", stderr);
    exit(1);
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
     "  -o max_ratio=N  the most a .npy.gz sized by a full pass may expand\n"
     "               (default 100, as for mount)\n"
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
     "usage: npyfs stats [--json] MOUNTPOINT|URL\n"
     "\n"
     "The live counters of the npyfs mount on MOUNTPOINT (or of the one npyfs\n"
     "mount made from URL, its first SOURCE): reads, bytes served and\n"
     "decompressed, cache hits, misses and evictions; how far indexing is (members\n"
     "indexed of those known, bytes to go, archives not opened yet); and per\n"
     "member its index coverage and state, and the indexing pass's progress.\n"
     "  --json, -j   the same as one JSON object\n",
     NULL, NULL},
};

/* Contract in usage.h. */
bool usage_command_help(const char *cmd, int argc, char **argv)
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
