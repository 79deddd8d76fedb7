/*
 * `npyfs index`. Contract in cmd_index.h.
 */
#define _GNU_SOURCE
#include "cmd_index.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "archive.h"
#include "cli.h"
#include "indexer.h"
#include "options.h"
#include "usage.h"

/* The -o options npyfs index takes; a new one that applies to indexing
 * goes here too (and in INDEX_OPTS_TEXT, the index command's help, and
 * _npyfs_index_opts in completions/npyfs.bash). */
static const char *const index_opt_names[] = {"index_dir=", "index_max=", "spacing=",
                                              "max_ratio=", "index_out=", OPTIONS_NET_NAMES, NULL};
#define INDEX_OPTS_TEXT                                                                          \
    "-o index_dir=DIR, -o index_max=SIZE, -o spacing=SIZE, -o max_ratio=N, -o index_out=FILE " \
    "and the remote sources' options (endpoint=, region=, ...)"

/* Index one archive (path or URL) for npyfs index. Returns an exit
 * status. */
static int index_one(const char *path, const struct options *opts)
{
    struct archive_limits lim = {.max_ratio = opts->max_ratio};
    struct archive *a;
    int status;

    if (cli_open_archive(opts->net, path, opts->spacing, &lim, &a) < 0)
        return 1;
    status = indexer_index_archive(a, opts) != 0;
    archive_close(a);
    return status;
}

/* npyfs index DIR: every archive below dir (or an s3:// prefix), in path
 * order. Returns an exit status. */
static int index_tree(const char *dir, const struct options *opts)
{
    struct cli_archive_list found = {0};
    int status = cli_collect_tree(opts->net, dir, &found);

    for (size_t i = 0; i < found.count; i++)
        status |= index_one(found.paths[i], opts);
    cli_archive_list_destroy(&found);
    return status;
}

/* Contract in cmd_index.h. */
int cmd_index(int argc, char **argv)
{
    const char **src = calloc((size_t)argc + 1, sizeof(*src));
    struct options opts = {0};
    int nsrc = 0, status = 0;
    bool prune = false;

    if (!src) {
        fputs("npyfs: out of memory\n", stderr);
        return 1;
    }
    options_parse_cmd("index", index_opt_names, INDEX_OPTS_TEXT, argc, argv, &opts, src, &nsrc, NULL,
                   &prune);
    if (nsrc == 0 && !prune)
        usage_die("index needs at least one SOURCE (or --prune)");
    if (opts.index_out && (nsrc != 1 || cli_is_tree(src[0])))
        usage_die("-o index_out=FILE writes the index of one archive: give one .npz or "
                  ".npy.gz SOURCE");
    opts.net = cli_make_net(&opts, src, nsrc);
    if (prune && indexer_prune(&opts) != 0)
        status = 1;
    for (int i = 0; i < nsrc; i++)
        status |= cli_is_tree(src[i]) ? index_tree(src[i], &opts) : index_one(src[i], &opts);
    free(src);
    options_destroy(&opts);
    return status;
}
