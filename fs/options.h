/*
 * The -o options: their parser, for a mount and for the commands that take
 * some of them (ls, index). The options themselves (struct fs_opts) and
 * their defaults are in fs.h.
 *
 * Ownership: the strings the parser puts in a struct fs_opts (index_dir,
 * index_url, index_out, the net_opts strings) are the struct's, freed by
 * options_destroy(), which also frees the network side (net) the CLI made.
 * Locks: none (the CLI, one thread; the daemon only reads a struct fs_opts
 * once it is built).
 * Errors: a bad option prints one line naming it (and the nearest known
 * name for an unknown one) and exits with status 1; out of memory too.
 */
#ifndef NPYFS_FS_OPTIONS_H
#define NPYFS_FS_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>

struct fs_opts;

/* The -o options of remote sources, which ls and index take too (entries of
 * an allowed list for options_parse_cmd()). */
#define OPTIONS_NET_NAMES                                                                          \
    "endpoint=", "region=", "s3_path_style", "s3_anonymous", "cacert=", "http_header=",           \
        "connections=", "timeout=", "retries=", "block=", "remote_cache="

/* Split one -o list into our options (into o) and libfuse's (appended to
 * *fuse_opts, comma-separated, owned by the caller). Exits on a bad one. */
void options_parse(struct fs_opts *o, char **fuse_opts, const char *list);

/* Parse the arguments of `npyfs CMD` (index, ls) into o, with the defaults
 * of those commands: each -o list is first checked against allowed (a
 * "name=" or a flag per entry, NULL-terminated; takes says what cmd takes,
 * for messages), then parsed; the operands are put in ops (*nops of them);
 * --json / -j sets *json (if json is not NULL), --prune sets *prune (if
 * prune is not NULL). Exits on a bad flag or option. */
void options_parse_cmd(const char *cmd, const char *const *allowed, const char *takes, int argc,
                       char **argv, struct fs_opts *o, const char **ops, int *nops, bool *json,
                       bool *prune);

/* Online cores, the default number of readahead workers (-o threads=). */
unsigned options_default_threads(void);

/* Append opt[0..len) to the comma-separated list *list (owned, grown;
 * NULL: empty). Exits if out of memory. */
void options_append(char **list, const char *opt, size_t len);

/* Free the strings of o and its network side (after every archive that
 * uses it is freed). */
void options_destroy(struct fs_opts *o);

#endif
