/*
 * The -o options: their defaults, struct options, and their parser, for a
 * mount and for the commands that take some of them (ls, index).
 *
 * Ownership: the strings the parser puts in a struct options (index_dir,
 * index_url, index_out, the net_opts strings) are the struct's, freed by
 * options_destroy(), which also frees the network side (net) the CLI made.
 * Locks: none (the CLI, one thread; the daemon only reads a struct options
 * once it is built).
 * Errors: a bad option prints one line naming it (and the nearest known
 * name for an unknown one) and exits with status 1; out of memory too.
 */
#ifndef NPYFS_FS_OPTIONS_H
#define NPYFS_FS_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net.h"

/* Default -o cache_size=. The kernel page cache keeps what was served, so
 * the chunk cache needs room for what readahead decodes ahead of readers (a
 * quarter of it, readahead.c: 8 MiB, two segments of 1 to 2 MiB for
 * each of up to 3 or 4 workers) and the chunks decoded on the way to a
 * random read. Small also means fast: once full, the cache recycles its
 * buffers, while a fresh buffer costs a page fault per 4 KiB (256M made the
 * cold passes over a 320 MB member 10 to 20% slower: 80% of their buffers
 * were fresh). */
#define OPTIONS_DEFAULT_CACHE_SIZE (32ull << 20)
/* Most readahead workers -o threads= accepts. */
#define OPTIONS_THREADS_MAX 256
/* Default kernel readahead per file (-o readahead=), in place of the
 * kernel's 128 KiB for FUSE. It is also the size of the read-around the
 * kernel asks for on an mmap page fault, all of which is decoded before the
 * faulting page is released: a random element read through mmap decodes
 * about spacing/2 + readahead + 64 KiB. 256K against 512K: a fifth less
 * decoding per mmap fault (835 against 1064 KiB at the default spacing),
 * no cost to deflate passes (the readahead workers decode ahead of
 * sequential readers whatever the size of the kernel's requests), a few
 * percent on stored ones. 128K decodes 710 KiB, but a stored member's cold
 * pass (one pread per READ) was about 20% slower. */
#define OPTIONS_DEFAULT_READAHEAD (256ull << 10)
/* -o spin=: default and most microseconds (fs/loop.h). */
#define OPTIONS_DEFAULT_SPIN_US 200
#define OPTIONS_SPIN_MAX 10000
/* Default -o index_max=: the size cap of the index directory. An index
 * file takes about 14% of its member's compressed size at the default
 * spacing of saved indexes, INDEXER_SPACING (measured: 12-15% for float64,
 * int32 and float32 arrays; 3-11% of the uncompressed size; 3-4% at 1 MiB),
 * so 4 GiB holds the indexes of some 30 GiB of archives. */
#define OPTIONS_DEFAULT_INDEX_MAX (4ull << 30)

/* -o index=: build missing indexes in a background thread at idle priority,
 * or only as reads go. */
enum options_index { OPTIONS_INDEX_BACKGROUND, OPTIONS_INDEX_LAZY };

/* -o verify=: auto serves a member of at most verify_max bytes only once it
 * has its chunk CRC table (its first open waits for a full pass over it) and
 * a bigger one at once; strict does the former for every member; lazy the
 * latter (chunks are checked once a member's table exists). */
enum options_verify { OPTIONS_VERIFY_AUTO, OPTIONS_VERIFY_LAZY, OPTIONS_VERIFY_STRICT };

/* Defaults of -o max_ratio= and -o verify_max=. A full pass decodes about
 * 300 MB/s on one core here, so checking a 128 MiB member before its first
 * read costs about 0.4 s. */
#define OPTIONS_DEFAULT_MAX_RATIO 100
#define OPTIONS_DEFAULT_VERIFY_MAX (128ull << 20)

/* Mount-wide options and state. */
struct options {
    uint64_t cache_size;
    uint64_t spacing;
    char *index_dir;               /* owned: -o index_dir=, or NULL for the default */
    enum options_index index_mode; /* -o index= */
    enum options_verify verify;    /* -o verify= */
    uint64_t verify_max;           /* -o verify_max=, bytes (verify=auto) */
    uint64_t max_ratio;            /* -o max_ratio= (struct archive_limits); 0: none */
    unsigned threads;   /* readahead workers (0: none); default online cores */
    uint64_t readahead; /* kernel readahead per file in bytes; 0: the kernel's */
    uint64_t max_read;  /* -o max_read= (also given to libfuse), or 0 */
    uint64_t index_mem; /* -o index_mem=: fs_window_budget's limit */
    unsigned spin_us;   /* -o spin=: how long a thread polls the FUSE device after a
                         * request (not a READ) before it sleeps (loop.h) */
    bool index_given;   /* -o index= was given: remote archives follow it (without
                         * it they are indexed lazily: a background pass would
                         * download every archive whole) */
    /* Remote sources: the -o options of the network side (its strings
     * owned by the CLI), -o index_url= (owned), and the network side itself
     * (borrowed: made by the CLI when a source is a URL, else NULL). */
    struct net_opts net_opts;
    char *index_url;
    struct net *net;
    char *index_out;    /* npyfs index -o index_out=FILE (owned), or NULL */
    uint64_t index_max; /* -o index_max=: the index directory's size cap, 0: none */
    bool allow_other;   /* -o allow_other: other users see the mount (sources' ACLs
                         * are read then, vfs.c) */
    bool spacing_given; /* -o spacing= was given: the indexer builds with it too
                         * (not INDEXER_SPACING), and npyfs index rebuilds
                         * files of another spacing */
};

/* The -o options of remote sources, which ls and index take too (entries of
 * an allowed list for options_parse_cmd()). */
#define OPTIONS_NET_NAMES                                                                          \
    "endpoint=", "region=", "s3_path_style", "s3_anonymous", "cacert=", "http_header=",           \
        "connections=", "timeout=", "retries=", "block=", "remote_cache="

/* Split one -o list into our options (into o) and libfuse's (appended to
 * *fuse_opts, comma-separated, owned by the caller). Exits on a bad one. */
void options_parse(struct options *o, char **fuse_opts, const char *list);

/* Parse the arguments of `npyfs CMD` (index, ls) into o, with the defaults
 * of those commands: each -o list is first checked against allowed (a
 * "name=" or a flag per entry, NULL-terminated; takes says what cmd takes,
 * for messages), then parsed; the operands are put in ops (*nops of them);
 * --json / -j sets *json (if json is not NULL), --prune sets *prune (if
 * prune is not NULL). Exits on a bad flag or option. */
void options_parse_cmd(const char *cmd, const char *const *allowed, const char *takes, int argc,
                       char **argv, struct options *o, const char **ops, int *nops, bool *json,
                       bool *prune);

/* Online cores, the default number of readahead workers (-o threads=). */
unsigned options_default_threads(void);

/* Append opt[0..len) to the comma-separated list *list (owned, grown;
 * NULL: empty). Exits if out of memory. */
void options_append(char **list, const char *opt, size_t len);

/* Free the strings of o and its network side (after every archive that
 * uses it is freed). */
void options_destroy(struct options *o);

#endif
