/*
 * Terminal-safe text and JSON strings. Contract in escape.h.
 */
#include "escape.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Contract in escape.h. */
size_t escape_text(char *out, size_t size, const char *s, size_t len, bool keep_backslash)
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
 * (overlong forms, surrogates and code points above U+10FFFF are not);
 * its code point in *out if out is not NULL. */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *out)
{
    size_t len;
    uint32_t cp;

    if (s[0] < 0x80) {
        if (out)
            *out = s[0];
        return 1;
    }
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
    if (out)
        *out = cp;
    return len;
}

static void put_bytes(char *out, size_t size, size_t *pos, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++, (*pos)++)
        if (*pos + 1 < size)
            out[*pos] = s[i];
}

/* Contract in escape.h. */
size_t escape_descr_utf8(char *out, size_t size, const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t pos = 0;

    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = u[i] >= 0x80 ? utf8_seq(u + i, len - i, &cp) : 0;
        char esc[16];

        if (n > 1) {
            if (cp <= 0xffff)
                snprintf(esc, sizeof(esc), "\\u%04x", (unsigned)cp);
            else
                snprintf(esc, sizeof(esc), "\\U%08x", (unsigned)cp);
            put_bytes(out, size, &pos, esc, strlen(esc));
            i += n;
            continue;
        }
        n = escape_text(esc, sizeof(esc), s + i, 1, true);
        put_bytes(out, size, &pos, esc, n);
        i++;
    }
    if (size)
        out[pos < size ? pos : size - 1] = '\0';
    return pos;
}

/* Contract in escape.h. */
char *escape_text_new(const char *s, size_t len)
{
    size_t n = escape_text(NULL, 0, s, len, false);
    char *out = malloc(n + 1);

    if (out)
        escape_text(out, n + 1, s, len, false);
    return out;
}

/* Contract in escape.h. */
size_t escape_json(char *out, size_t size, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t pos = 0, i = 0;
    char esc[8];

    put_bytes(out, size, &pos, "\"", 1);
    while (i < len) {
        size_t n = utf8_seq(p + i, len - i, NULL);
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
