/*
 * Archive bytes made safe to show: as text for a terminal or a
 * tab-separated column, or as a JSON string. Every byte that comes from an
 * archive (member names, a .npy header's descr, anything) goes through one
 * of these before `npyfs ls`, the stats, the index commands or an xattr
 * show it, so a hostile archive can neither send escape sequences to a
 * terminal nor break a column or a JSON document.
 *
 * Ownership: the caller's buffers; nothing is kept.
 * Locks: none: pure functions, any thread.
 * Errors: none (the length needed is returned, like snprintf).
 */
#ifndef NPYFS_FS_ESCAPE_H
#define NPYFS_FS_ESCAPE_H

#include <stdbool.h>
#include <stddef.h>

/* s[0..len) as text that is safe on a terminal and in a tab-separated
 * column, into out (at most size bytes, NUL-terminated if size > 0):
 * printable ASCII (0x20-0x7e) as is, a backslash doubled (\\; kept single
 * if keep_backslash: for a descr, which stays a Python literal), every
 * other byte (controls, tab, newline, DEL, all bytes from 0x80 on, UTF-8
 * included) as \xHH. Returns the length it needed, like snprintf (at most
 * 4 * len). Used for every archive byte printed by `ls`, the stats text and
 * the user.npy.dtype attribute. */
size_t escape_text(char *out, size_t size, const char *s, size_t len, bool keep_backslash);

/* A version 3 header's descr (UTF-8) as escape_text(.., true) writes it,
 * but each valid UTF-8 sequence as the Python escape of its code point
 * (\uXXXX, \UXXXXXXXX), so that the value, a Python literal, gives the same
 * field names back (\xHH in a str literal is U+00HH: right for the latin-1
 * of versions 1 and 2, wrong for UTF-8). Returns the length it needed. */
size_t escape_descr_utf8(char *out, size_t size, const char *s, size_t len);

/* escape_text(s, len, false) in a new string (the caller frees it), or
 * NULL: out of memory. */
char *escape_text_new(const char *s, size_t len);

/* s[0..len) as a JSON string with its quotes, into out (at most size
 * bytes, NUL-terminated if size > 0). Valid UTF-8 is kept, except the
 * control characters (U+0000-U+001F, DEL, the C1 controls U+0080-U+009F)
 * and U+2028/U+2029, which become \uXXXX; a byte that is not part of valid
 * UTF-8 becomes \udcXX (Python's surrogateescape, so json.loads() then
 * os.fsencode() give the exact bytes back). Returns the length it needed,
 * like snprintf. */
size_t escape_json(char *out, size_t size, const char *s, size_t len);

#endif
