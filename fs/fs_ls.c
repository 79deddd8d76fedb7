/*
 * `npyfs ls SOURCE`: one row per member with what the .npy header says
 * (dtype, shape, order) and what the archive says (sizes, method). Only the
 * first bytes of each member are decompressed, to read its header.
 */
#define _GNU_SOURCE
#include "fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npy.h"

/* Print a member name with control bytes and NULs made visible. */
static void print_name(const struct fs_member *m)
{
    for (size_t i = 0; i < m->name_len; i++) {
        unsigned char c = (unsigned char)m->name[i];
        if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
}

/* Fill h from the member's first bytes; false if it is not a sizeable .npy. */
static bool peek_header(struct fs_archive *a, struct fs_member *m, unsigned char *buf,
                        struct npy_header *h)
{
    uint64_t doff;
    int64_t n;

    if (m->is_dir || m->unsupported)
        return false;
    n = fs_member_peek(a, m, buf, NPY_PREFIX_LEN);
    if (n < 0 || npy_prefix(buf, (size_t)n, &doff) < 0 || doff > NPY_HEADER_MAX + NPY_PREFIX_LEN)
        return false;
    n = fs_member_peek(a, m, buf, (size_t)doff);
    return n >= 0 && npy_parse(buf, (size_t)n, h) == 0;
}

static void print_row(struct fs_archive *a, struct fs_member *m, unsigned char *buf)
{
    struct npy_header h = {0};
    char shape[1024];

    print_name(m);
    if (peek_header(a, m, buf, &h)) {
        npy_format_shape(&h, shape, sizeof(shape));
        printf("\t%s\t%s\t%s", h.descr, shape, h.fortran_order ? "F" : "C");
    } else {
        printf("\t-\t-\t-");
    }
    printf("\t%llu\t%llu\t%s", (unsigned long long)m->size,
           (unsigned long long)m->stored_size, m->method);
    if (m->unsupported)
        printf(" (unsupported: %s)", m->why);
    putchar('\n');
    npy_header_destroy(&h);
}

/* Contract in fs.h. */
int fs_ls_main(struct fs_archive *a)
{
    unsigned char *buf = malloc(NPY_HEADER_MAX + NPY_PREFIX_LEN);

    if (!buf) {
        fputs("npyfs: out of memory\n", stderr);
        return 1;
    }
    printf("NAME\tDTYPE\tSHAPE\tORDER\tSIZE\tSTORED\tMETHOD\n");
    for (size_t i = 0; i < a->count; i++)
        print_row(a, &a->members[i], buf);
    free(buf);
    return 0;
}
