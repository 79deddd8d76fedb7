/*
 * `npyfs ls [--json] SOURCE...`: one row per member of each archive with
 * what the .npy header says (dtype, shape, order) and what the archive says
 * (sizes, method). Only the first bytes of each member are decompressed, to
 * read its header. The table is tab-separated, or aligned when stdout is a
 * terminal (then every row is held until the widths are known); --json
 * prints the same as one JSON array; names are not always UTF-8, so
 * fs_json_string() escapes the bytes that are not (see fs.h).
 *
 * Every byte that comes from an archive (names, the descr text, anything)
 * is escaped before it is printed, so a hostile archive cannot send escape
 * sequences to a terminal nor break the columns: fs_text_string() in the
 * table, fs_json_string() in JSON.
 */
#define _GNU_SOURCE
#include "fs.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npy.h"

/* Contract in fs.h. */
size_t fs_text_string(char *out, size_t size, const char *s, size_t len, bool keep_backslash)
{
    static const char hex[] = "0123456789abcdef";
    size_t pos = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[4];
        size_t n;

        if (c >= 0x20 && c < 0x7f && (c != '\\' || keep_backslash)) {
            esc[0] = (char)c;
            n = 1;
        } else if (c == '\\') {
            esc[0] = esc[1] = '\\';
            n = 2;
        } else {
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[c >> 4];
            esc[3] = hex[c & 15];
            n = 4;
        }
        for (size_t k = 0; k < n; k++, pos++)
            if (pos + 1 < size)
                out[pos] = esc[k];
    }
    if (size)
        out[pos < size ? pos : size - 1] = '\0';
    return pos;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if it is not one
 * (overlong forms, surrogates and code points above U+10FFFF are not). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2, cp = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3, cp = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4, cp = s[0] & 0x07;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static void put_bytes(char *out, size_t size, size_t *pos, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++, (*pos)++)
        if (*pos + 1 < size)
            out[*pos] = s[i];
}

/* Contract in fs.h. */
size_t fs_json_string(char *out, size_t size, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t pos = 0, i = 0;
    char esc[8];

    put_bytes(out, size, &pos, "\"", 1);
    while (i < len) {
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0) { /* not UTF-8: the surrogateescape code of the byte */
            snprintf(esc, sizeof(esc), "\\udc%02x", p[i]);
            put_bytes(out, size, &pos, esc, 6);
            n = 1;
        } else if (p[i] == '"' || p[i] == '\\') {
            esc[0] = '\\';
            esc[1] = (char)p[i];
            put_bytes(out, size, &pos, esc, 2);
        } else if (p[i] < 0x20 || p[i] == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", p[i]);
            put_bytes(out, size, &pos, esc, 6);
        } else if (n == 2 && p[i] == 0xc2 && p[i + 1] <= 0x9f) { /* C1 controls */
            snprintf(esc, sizeof(esc), "\\u%04x", p[i + 1]);
            put_bytes(out, size, &pos, esc, 6);
        } else if (n == 3 && p[i] == 0xe2 && p[i + 1] == 0x80 &&
                   (p[i + 2] == 0xa8 || p[i + 2] == 0xa9)) { /* line, paragraph separator */
            put_bytes(out, size, &pos, p[i + 2] == 0xa8 ? "\\u2028" : "\\u2029", 6);
        } else {
            put_bytes(out, size, &pos, s + i, n);
        }
        i += n;
    }
    put_bytes(out, size, &pos, "\"", 1);
    if (size)
        out[pos < size ? pos : size - 1] = '\0';
    return pos;
}

static void print_json_string(const char *s, size_t len)
{
    size_t n = fs_json_string(NULL, 0, s, len);
    char *tmp = malloc(n + 1);

    if (!tmp) {
        fputs("\"\"", stdout); /* never reached in practice; keeps the JSON valid */
        return;
    }
    fs_json_string(tmp, n + 1, s, len);
    fwrite(tmp, 1, n, stdout);
    free(tmp);
}

/* Columns of the table; ARCHIVE only with archive_column. */
enum { COL_ARCHIVE, COL_NAME, COL_DTYPE, COL_SHAPE, COL_ORDER, COL_SIZE, COL_STORED, COL_METHOD,
       LS_COLS };

static const char *const col_title[LS_COLS] = {"ARCHIVE", "NAME", "DTYPE", "SHAPE", "ORDER",
                                               "SIZE",    "STORED", "METHOD"};

struct fs_ls {
    bool json, aligned, archive_column;
    bool started;         /* the titles (or the JSON array's '[') are out */
    size_t rows;          /* member rows so far */
    char **cells;         /* aligned: owned, LS_COLS per row, the titles' row first */
    size_t ncells, cap;
    size_t width[LS_COLS]; /* aligned: the widest cell of each column */
    unsigned char *buf;   /* owned: room for a member's whole .npy header */
};

/* Fill h from the member's first bytes; false if it is not a sizeable .npy. */
static bool peek_header(struct fs_archive *a, struct fs_member *m, unsigned char *buf,
                        struct npy_header *h)
{
    uint64_t doff;
    int64_t n;

    if (fs_member_locate(a, m) < 0 || m->is_dir || m->unsupported)
        return false;
    n = fs_member_peek(a, m, buf, NPY_PREFIX_LEN);
    if (n < 0 || npy_prefix(buf, (size_t)n, &doff) < 0 || doff > NPY_HEADER_MAX + NPY_PREFIX_LEN)
        return false;
    n = fs_member_peek(a, m, buf, (size_t)doff);
    return n >= 0 && npy_parse(buf, (size_t)n, h) == 0;
}

/* s[0..len) escaped by fs_text_string() in a new string; NULL: no memory. */
static char *text_cell(const char *s, size_t len)
{
    size_t n = fs_text_string(NULL, 0, s, len, false);
    char *out = malloc(n + 1);

    if (out)
        fs_text_string(out, n + 1, s, len, false);
    return out;
}

static int print_failed(void)
{
    fprintf(stderr, "npyfs: writing the listing: %s\n", strerror(errno));
    return -EIO;
}

/* One row of cells (owned by the caller): printed at once (tab-separated),
 * or kept for fs_ls_flush() (aligned; then the cells are taken). */
static int put_row(struct fs_ls *l, char **cell)
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
static int table_row(struct fs_ls *l, struct fs_archive *a, struct fs_member *m)
{
    struct npy_header h = {0};
    char *cell[LS_COLS] = {0}, shape[1024], num[24], *dtype = NULL, *method = NULL;
    size_t dlen = 0;
    int ret = -ENOMEM;

    cell[COL_ARCHIVE] = text_cell(a->name, strlen(a->name));
    cell[COL_NAME] = text_cell(m->name, m->name_len);
    if (peek_header(a, m, l->buf, &h)) {
        npy_format_shape(&h, shape, sizeof(shape));
        /* a type string as is (<f8), a struct as the header's descr */
        if (npy_dtype_string(&h, &dtype, &dlen) == 0)
            cell[COL_DTYPE] = text_cell(dtype, dlen);
        else
            cell[COL_DTYPE] = text_cell(h.descr, strlen(h.descr));
        cell[COL_SHAPE] = text_cell(shape, strlen(shape));
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
    cell[COL_METHOD] = method ? text_cell(method, strlen(method)) : NULL;
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
static int json_row(struct fs_ls *l, struct fs_archive *a, struct fs_member *m)
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

/* Contract in fs.h. */
int fs_ls_new(bool json, bool aligned, bool archive_column, struct fs_ls **out)
{
    struct fs_ls *l = calloc(1, sizeof(*l));
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
    fs_ls_free(l);
    return ret;
}

/* The start of the listing, printed with the first archive: for a table,
 * nothing at all if no archive could be opened (JSON: fs_ls_flush() then
 * prints an empty array). */
static int ls_start(struct fs_ls *l)
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

/* Contract in fs.h. */
int fs_ls_add(struct fs_ls *l, struct fs_archive *a)
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

/* Contract in fs.h. */
int fs_ls_flush(struct fs_ls *l)
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

/* Contract in fs.h. */
void fs_ls_free(struct fs_ls *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->ncells; i++)
        free(l->cells[i]);
    free(l->cells);
    free(l->buf);
    free(l);
}
