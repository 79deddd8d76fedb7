/*
 * `npyfs ls [--json] SOURCE`: one row per member with what the .npy header
 * says (dtype, shape, order) and what the archive says (sizes, method). Only
 * the first bytes of each member are decompressed, to read its header.
 * --json prints the same as one JSON array; names are not always UTF-8, so
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

/* Print len bytes of s escaped by fs_text_string(). */
static void print_text(const char *s, size_t len)
{
    char chunk[4 * 256 + 1];

    for (size_t i = 0; i < len; i += 256) {
        size_t n = len - i < 256 ? len - i : 256;
        fwrite(chunk, 1, fs_text_string(chunk, sizeof(chunk), s + i, n, false), stdout);
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

    print_text(m->name, m->name_len);
    if (peek_header(a, m, buf, &h)) {
        npy_format_shape(&h, shape, sizeof(shape));
        putchar('\t');
        print_text(h.descr, strlen(h.descr));
        putchar('\t');
        print_text(shape, strlen(shape));
        printf("\t%s", h.fortran_order ? "F" : "C");
    } else {
        printf("\t-\t-\t-");
    }
    printf("\t%llu\t%llu\t", (unsigned long long)m->size, (unsigned long long)m->stored_size);
    print_text(m->method, strlen(m->method));
    if (m->unsupported) {
        fputs(" (unsupported: ", stdout);
        print_text(m->why, strlen(m->why));
        putchar(')');
    }
    putchar('\n');
    npy_header_destroy(&h);
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

/* One member as a JSON object; fields in the man page (ls --json). */
static void print_json_row(struct fs_archive *a, struct fs_member *m, unsigned char *buf,
                           bool first)
{
    struct npy_header h = {0};

    fputs(first ? "\n  {\"name\": " : ",\n  {\"name\": ", stdout);
    print_json_string(m->name, m->name_len);
    if (peek_header(a, m, buf, &h)) {
        fputs(", \"dtype\": ", stdout);
        print_json_string(h.descr, strlen(h.descr));
        fputs(", \"shape\": [", stdout);
        for (int i = 0; i < h.ndim; i++)
            printf("%s%" PRIu64, i ? ", " : "", h.shape[i]);
        printf("], \"fortran_order\": %s", h.fortran_order ? "true" : "false");
    } else {
        fputs(", \"dtype\": null, \"shape\": null, \"fortran_order\": null", stdout);
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
    npy_header_destroy(&h);
}

/* Contract in fs.h. */
int fs_ls_main(struct fs_archive *a, bool json)
{
    unsigned char *buf = malloc(NPY_HEADER_MAX + NPY_PREFIX_LEN);

    if (!buf) {
        fputs("npyfs: out of memory\n", stderr);
        return 1;
    }
    if (json) {
        putchar('[');
        for (size_t i = 0; i < a->count; i++)
            print_json_row(a, &a->members[i], buf, i == 0);
        fputs(a->count ? "\n]\n" : "]\n", stdout);
    } else {
        printf("NAME\tDTYPE\tSHAPE\tORDER\tSIZE\tSTORED\tMETHOD\n");
        for (size_t i = 0; i < a->count; i++)
            print_row(a, &a->members[i], buf);
    }
    free(buf);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "npyfs: writing the listing: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}
