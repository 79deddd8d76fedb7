/*
 * `npyfs ls [--json] SOURCE...`: one row per member of each archive with
 * what the .npy header says (dtype, shape, order) and what the archive says
 * (sizes, method). Only the first bytes of each member are decompressed, to
 * read its header. The table is tab-separated, or aligned when stdout is a
 * terminal (then every row is held until the widths are known); --json
 * prints the same as one JSON array; names are not always UTF-8, so
 * escape_json() escapes the bytes that are not (see escape.h).
 *
 * Every byte that comes from an archive (names, the descr text, anything)
 * is escaped before it is printed, so a hostile archive cannot send escape
 * sequences to a terminal nor break the columns: escape_text() in the
 * table, escape_json() in JSON.
 */
#define _GNU_SOURCE
#include "cmd_ls.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "archive.h"
#include "bsrc.h"
#include "cli.h"
#include "escape.h"
#include "fs.h"
#include "member.h"
#include "npy.h"
#include "options.h"
#include "usage.h"

static void print_json_string(const char *s, size_t len)
{
    size_t n = escape_json(NULL, 0, s, len);
    char *tmp = malloc(n + 1);

    if (!tmp) {
        fputs("\"\"", stdout); /* never reached in practice; keeps the JSON valid */
        return;
    }
    escape_json(tmp, n + 1, s, len);
    fwrite(tmp, 1, n, stdout);
    free(tmp);
}

/* Columns of the table; ARCHIVE only with archive_column. */
enum { COL_ARCHIVE, COL_NAME, COL_DTYPE, COL_SHAPE, COL_ORDER, COL_SIZE, COL_STORED, COL_METHOD,
       LS_COLS };

static const char *const col_title[LS_COLS] = {"ARCHIVE", "NAME", "DTYPE", "SHAPE", "ORDER",
                                               "SIZE",    "STORED", "METHOD"};

/* A listing of the members of one or more archives on stdout. */
struct ls {
    bool json, aligned, archive_column;
    bool started;         /* the titles (or the JSON array's '[') are out */
    size_t rows;          /* member rows so far */
    char **cells;         /* aligned: owned, LS_COLS per row, the titles' row first */
    size_t ncells, cap;
    size_t width[LS_COLS]; /* aligned: the widest cell of each column */
    unsigned char *buf;   /* owned: room for a member's whole .npy header */
};

/* Fill h from the member's first bytes; false if it is not a sizeable .npy. */
static bool peek_header(struct archive *a, struct archive_member *m, unsigned char *buf,
                        struct npy_header *h)
{
    size_t got;

    if (archive_locate(a, m) < 0 || m->is_dir || m->unsupported)
        return false;
    return npy_read_header(member_prefix_read, &(struct member_ref){a, m}, buf, &got,
                           h) == 1;
}

static int print_failed(void)
{
    fprintf(stderr, "npyfs: writing the listing: %s\n", strerror(errno));
    return -EIO;
}

/* One row of cells (owned by the caller): printed at once (tab-separated),
 * or kept for ls_flush() (aligned; then the cells are taken). */
static int put_row(struct ls *l, char **cell)
{
    bool first = true;

    if (l->aligned) {
        if (fs_grow(&l->cells, &l->cap, l->ncells + LS_COLS - 1, sizeof(*l->cells), 8 * LS_COLS) <
            0)
            return -ENOMEM;
        for (int c = 0; c < LS_COLS; c++) {
            size_t w = strlen(cell[c]);
            if (w > l->width[c])
                l->width[c] = w;
            l->cells[l->ncells++] = cell[c];
            cell[c] = NULL;
        }
        return 0;
    }
    for (int c = l->archive_column ? 0 : 1; c < LS_COLS; c++, first = false) {
        if (!first)
            putchar('\t');
        fputs(cell[c], stdout);
    }
    putchar('\n');
    return ferror(stdout) ? print_failed() : 0;
}

/* The table row of member m of a. */
static int table_row(struct ls *l, struct archive *a, struct archive_member *m)
{
    struct npy_header h = {0};
    char *cell[LS_COLS] = {0}, shape[1024], num[24], *dtype = NULL, *method = NULL;
    size_t dlen = 0;
    int ret = -ENOMEM;

    cell[COL_ARCHIVE] = escape_text_new(a->name, strlen(a->name));
    cell[COL_NAME] = escape_text_new(m->name, m->name_len);
    if (peek_header(a, m, l->buf, &h)) {
        npy_format_shape(&h, shape, sizeof(shape));
        /* a type string as is (<f8), a struct as the header's descr */
        if (npy_dtype_string(&h, &dtype, &dlen) == 0)
            cell[COL_DTYPE] = escape_text_new(dtype, dlen);
        else
            cell[COL_DTYPE] = escape_text_new(h.descr, strlen(h.descr));
        cell[COL_SHAPE] = escape_text_new(shape, strlen(shape));
        cell[COL_ORDER] = strdup(h.fortran_order ? "F" : "C");
    } else {
        cell[COL_DTYPE] = strdup("-");
        cell[COL_SHAPE] = strdup("-");
        cell[COL_ORDER] = strdup("-");
    }
    snprintf(num, sizeof(num), "%" PRIu64, m->size);
    cell[COL_SIZE] = strdup(num);
    snprintf(num, sizeof(num), "%" PRIu64, m->stored_size);
    cell[COL_STORED] = strdup(num);
    if (m->unsupported) {
        if (asprintf(&method, "%s (unsupported: %s)", m->method, m->why ? m->why : "") < 0)
            method = NULL;
    } else {
        method = strdup(m->method);
    }
    cell[COL_METHOD] = method ? escape_text_new(method, strlen(method)) : NULL;
    for (int c = 0; c < LS_COLS; c++)
        if (!cell[c])
            goto out_free;
    ret = put_row(l, cell);
out_free:
    for (int c = 0; c < LS_COLS; c++)
        free(cell[c]);
    free(method);
    free(dtype);
    npy_header_destroy(&h);
    return ret;
}

/* Member m of a as a JSON object; fields in the man page (ls --json). */
static int json_row(struct ls *l, struct archive *a, struct archive_member *m)
{
    struct npy_header h = {0};
    char *dtype = NULL;
    int ret = 0;

    fputs(l->rows ? ",\n  {\"archive\": " : "\n  {\"archive\": ", stdout);
    print_json_string(a->name, strlen(a->name));
    fputs(", \"name\": ", stdout);
    print_json_string(m->name, m->name_len);
    if (peek_header(a, m, l->buf, &h)) {
        /* a value np.dtype() takes; null when JSON cannot say it (descr can) */
        int n = npy_dtype_json(&h, &dtype);
        if (n == -ENOMEM) {
            ret = -ENOMEM;
            goto out;
        }
        printf(", \"dtype\": %s, \"descr\": ", n >= 0 ? dtype : "null");
        print_json_string(h.descr, strlen(h.descr));
        fputs(", \"shape\": [", stdout);
        for (int i = 0; i < h.ndim; i++)
            printf("%s%" PRIu64, i ? ", " : "", h.shape[i]);
        printf("], \"fortran_order\": %s", h.fortran_order ? "true" : "false");
    } else {
        fputs(", \"dtype\": null, \"descr\": null, \"shape\": null, \"fortran_order\": null",
              stdout);
    }
    printf(", \"size\": %" PRIu64 ", \"stored_size\": %" PRIu64 ", \"method\": ", m->size,
           m->stored_size);
    print_json_string(m->method, strlen(m->method));
    fputs(", \"unsupported\": ", stdout);
    if (m->unsupported)
        print_json_string(m->why ? m->why : "", m->why ? strlen(m->why) : 0);
    else
        fputs("null", stdout);
    putchar('}');
    if (ferror(stdout))
        ret = print_failed();
out:
    free(dtype);
    npy_header_destroy(&h);
    return ret;
}

/* Accepts NULL. */
static void ls_free(struct ls *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->ncells; i++)
        free(l->cells[i]);
    free(l->cells);
    free(l->buf);
    free(l);
}

/* A listing: tab-separated, or aligned columns (aligned: for a terminal,
 * printed at ls_flush() once every width is known), or one JSON array of
 * objects (json). archive_column adds a leading ARCHIVE column to the
 * table; JSON rows always have their "archive". Returns 0 or -ENOMEM (*out
 * NULL). */
static int ls_new(bool json, bool aligned, bool archive_column, struct ls **out)
{
    struct ls *l = calloc(1, sizeof(*l));
    int ret = -ENOMEM;

    *out = NULL;
    if (!l)
        return -ENOMEM;
    l->json = json;
    l->aligned = aligned && !json;
    l->archive_column = archive_column;
    l->buf = malloc(NPY_HEADER_MAX + NPY_PREFIX_LEN);
    if (!l->buf)
        goto out_free;
    *out = l;
    return 0;
out_free:
    ls_free(l);
    return ret;
}

/* The start of the listing, printed with the first archive: for a table,
 * nothing at all if no archive could be opened (JSON: ls_flush() then
 * prints an empty array). */
static int ls_start(struct ls *l)
{
    char *title[LS_COLS] = {0};
    int ret = -ENOMEM;

    l->started = true;
    if (l->json) {
        putchar('[');
        return 0;
    }
    for (int c = 0; c < LS_COLS; c++)
        if (!(title[c] = strdup(col_title[c])))
            goto out_free;
    ret = put_row(l, title);
out_free:
    for (int c = 0; c < LS_COLS; c++)
        free(title[c]);
    return ret;
}

/* Add the rows of every member of a (borrowed, only during the call), the
 * archive named by a->path; the first call prints the titles (or opens the
 * JSON array): a table of no archive prints nothing, JSON an empty array
 * (at ls_flush()). Returns 0, or -ENOMEM, or -EIO: stdout failed. */
static int ls_add(struct ls *l, struct archive *a)
{
    if (!l->started) {
        int ret = ls_start(l);
        if (ret < 0)
            return ret;
    }
    for (size_t i = 0; i < a->count; i++) {
        int ret = l->json ? json_row(l, a, &a->members[i]) : table_row(l, a, &a->members[i]);
        if (ret < 0)
            return ret;
        l->rows++;
    }
    return 0;
}

/* Print what is held back and end the JSON array. Returns 0, or -EIO with
 * one line on stderr when stdout failed. */
static int ls_flush(struct ls *l)
{
    if (l->json) /* always one array, so that a program can parse it: [] for none */
        fputs(!l->started ? "[]\n" : l->rows ? "\n]\n" : "]\n", stdout);
    for (size_t r = 0; l->aligned && r < l->ncells / LS_COLS; r++) {
        char **row = l->cells + r * LS_COLS;
        int last = LS_COLS - 1;

        for (int c = l->archive_column ? 0 : 1; c <= last; c++) {
            int w = (int)l->width[c];
            if (c == last)
                fputs(row[c], stdout);
            else if (c == COL_SIZE || c == COL_STORED) /* numbers to the right */
                printf("%*s  ", w, row[c]);
            else
                printf("%-*s  ", w, row[c]);
        }
        putchar('\n');
    }
    if (fflush(stdout) != 0 || ferror(stdout))
        return print_failed();
    return 0;
}

/* The -o options npyfs ls takes (and _npyfs_ls_opts in
 * completions/npyfs.bash). max_ratio (default OPTIONS_DEFAULT_MAX_RATIO) bounds the sizing pass of a .npy.gz
 * whose size its trailer does not give, as for mount and index. */
static const char *const ls_opt_names[] = {"max_ratio=", OPTIONS_NET_NAMES, NULL};

/* List one archive into l. Returns 0, 1 after a message (it would not
 * open), -EIO (stdout failed: stop). */
static int ls_one(struct net *net, uint64_t max_ratio, struct ls *l, const char *path)
{
    struct archive_limits lim = {.max_ratio = max_ratio};
    char name[PATH_MAX + 64];
    struct archive *a;
    int ret = cli_open_archive(net, path, DFX_DEFAULT_SPACING, &lim, &a);

    if (ret < 0)
        return 1;
    ret = ls_add(l, a);
    archive_close(a);
    if (ret == -ENOMEM) {
        fprintf(stderr, "npyfs: %s: out of memory\n", bsrc_name_of(path, name, sizeof(name)));
        return 1;
    }
    return ret;
}

/* Contract in cmd_ls.h. */
int cmd_ls(int argc, char **argv)
{
    const char **src = calloc((size_t)argc + 1, sizeof(*src));
    struct options opts = {0};
    bool json = false, several;
    struct ls *l = NULL;
    int nsrc = 0, status = 0, ret = 0;

    if (!src) {
        fputs("npyfs: out of memory\n", stderr);
        return 1;
    }
    options_parse_cmd("ls", ls_opt_names, "only max_ratio= and the remote sources' options", argc,
                      argv, &opts, src, &nsrc, &json, NULL);
    if (nsrc == 0)
        usage_die("ls needs SOURCE");
    opts.net = cli_make_net(&opts, src, nsrc);
    several = nsrc > 1;
    for (int i = 0; i < nsrc && !several; i++)
        several = cli_is_tree(src[i]);
    if (ls_new(json, !json && isatty(STDOUT_FILENO), several, &l) < 0) {
        fputs("npyfs: out of memory\n", stderr);
        free(src);
        options_destroy(&opts);
        return 1;
    }
    for (int i = 0; i < nsrc && ret >= 0; i++) {
        struct cli_archive_list found = {0};

        if (cli_is_tree(src[i])) {
            status |= cli_collect_tree(opts.net, src[i], &found);
            for (size_t k = 0; k < found.count && ret >= 0; k++)
                status |= ret = ls_one(opts.net, opts.max_ratio, l, found.paths[k]);
            cli_archive_list_destroy(&found);
        } else {
            status |= ret = ls_one(opts.net, opts.max_ratio, l, src[i]);
        }
    }
    if (ret < 0 || ls_flush(l) < 0)
        status = 1;
    ls_free(l);
    free(src);
    options_destroy(&opts);
    return status ? 1 : 0;
}
