/*
 * .npy header parsing. Contract in npy.h; format in docs/FORMATS.md section 1
 * (".npy files").
 *
 * numpy reads the header text with ast.literal_eval, so the text is a Python
 * literal, not a fixed layout. We work in two steps:
 *
 *  1. A small recursive-descent parser turns the text into a tree of literal
 *     nodes (struct lit): dicts, lists, tuples, strings, ints, True/False/None.
 *     The nodes live in one growable array and point to each other by index.
 *  2. The checks numpy makes (exactly three keys, shape a tuple of ints,
 *     fortran_order a real bool) and the itemsize computation walk that tree.
 *
 * Parsing first keeps Python's quirks, such as "(x)" being x while "(x,)" is a
 * tuple, out of the sizing code. The text is hostile input: it is not
 * NUL-terminated, every read is checked against its length, and nesting is
 * capped so recursion stays shallow.
 *
 * Item sizes follow numpy on LP64 Linux (x86-64, aarch64): 'l', 'int' and
 * 'intp' are 8 bytes, 'g' (long double) is 16.
 */
#include "npy.h"
#include "source.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deepest bracket nesting accepted in header text. numpy's own headers nest a
 * few levels (a struct inside a struct); the cap bounds our recursion. */
#define LIT_MAX_DEPTH 64
#define LIT_NIL UINT32_MAX

/* Longest string we decode to compare with a key or a type string; anything
 * longer cannot be either. */
#define TYPESTR_MAX 64

enum lit_type { LIT_DICT, LIT_LIST, LIT_TUPLE, LIT_STR, LIT_INT, LIT_BOOL, LIT_NONE };

#define LIT_F_NEG 0x01 /* LIT_INT: written with a minus sign, and not zero */
#define LIT_F_BIG 0x02 /* LIT_INT: magnitude does not fit in 64 bits */
#define LIT_F_RAW 0x04 /* LIT_STR: r'' prefix, backslashes are literal */

struct lit {
    uint8_t type;         /* enum lit_type */
    uint8_t flags;        /* LIT_F_* */
    uint32_t beg, end;    /* the value's source text, enclosing parentheses included */
    uint32_t first, next; /* first child, next sibling; LIT_NIL ends a list */
    uint32_t count;       /* children; a dict holds key, value, key, value, ... */
    union {
        uint64_t num; /* LIT_INT magnitude, LIT_BOOL 0 or 1 */
        struct {
            uint32_t beg, end; /* LIT_STR: the text between the quotes */
        } str;
    } u;
};

struct lit_parser {
    const unsigned char *s; /* borrowed: header text, not NUL-terminated */
    uint32_t len, pos;
    /* owned, freed by npy_parse(). Every node takes at least one byte of
     * text, so a header of NPY_HEADER_MAX bytes costs at most ~32 MiB here,
     * and only for the length of one npy_parse() call. */
    struct lit *nodes;
    uint32_t n, cap;
};

/* What a descr (or part of one) amounts to. */
struct dsize {
    uint64_t size;    /* bytes per item, when known */
    bool known;       /* we could size it */
    bool object;      /* contains an 'O': the payload is a pickle */
    bool unsized;     /* 'S', 'U', 'V' without a length: ('S', 5) sets one */
    uint8_t charsize; /* unsized only: bytes per length unit, 4 for 'U' */
};

/* ---- Checked size arithmetic: results must fit in 63 bits (off_t). ---- */

static int size_add(uint64_t *acc, uint64_t v)
{
    if (__builtin_add_overflow(*acc, v, acc) || *acc > INT64_MAX)
        return -EOVERFLOW;
    return 0;
}

/*
 * Multiply *acc by one dimension. Like numpy (PyArray_NewFromDescr), zero
 * dimensions are skipped in the overflow check and only recorded in *zero,
 * so (0, 2**62, 4) is refused just as numpy refuses to create it.
 */
static int size_mul_dim(uint64_t *acc, bool *zero, uint64_t dim)
{
    if (dim == 0) {
        *zero = true;
        return 0;
    }
    if (__builtin_mul_overflow(*acc, dim, acc) || *acc > INT64_MAX)
        return -EOVERFLOW;
    return 0;
}

/* ---- Step 1: Python literal parser ---- */

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Letters, digits, '_' and non-ASCII bytes: what can continue a Python name. */
static bool is_ident(unsigned char c)
{
    return is_digit(c) || c == '_' || c >= 0x80 || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

static bool at(const struct lit_parser *p, unsigned char c)
{
    return p->pos < p->len && p->s[p->pos] == c;
}

/* Skip whitespace, newlines (the header is one bracketed expression, so
 * Python joins its lines) and '#' comments. */
static void skip_space(struct lit_parser *p)
{
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f') {
            p->pos++;
        } else if (c == '#') {
            while (p->pos < p->len && p->s[p->pos] != '\n' && p->s[p->pos] != '\r')
                p->pos++;
        } else {
            break;
        }
    }
}

static int new_node(struct lit_parser *p, uint8_t type, uint32_t beg, uint32_t *out)
{
    if (p->n == p->cap) {
        /* Each node consumes at least one byte of text, so n <= len + 1. */
        uint32_t cap = p->cap ? p->cap * 2 : 64;
        struct lit *nodes = realloc(p->nodes, (size_t)cap * sizeof(*nodes));
        if (!nodes)
            return -ENOMEM;
        p->nodes = nodes;
        p->cap = cap;
    }
    p->nodes[p->n] =
        (struct lit){.type = type, .beg = beg, .end = beg, .first = LIT_NIL, .next = LIT_NIL};
    *out = p->n++;
    return 0;
}

/* Append child kid to parent; *last is the parent's previous last child. */
static void add_child(struct lit_parser *p, uint32_t parent, uint32_t *last, uint32_t kid)
{
    if (*last == LIT_NIL)
        p->nodes[parent].first = kid;
    else
        p->nodes[*last].next = kid;
    *last = kid;
    p->nodes[parent].count++;
}

static int parse_value(struct lit_parser *p, int depth, uint32_t *out);

/* Python's string escapes. */
#define NO_CHAR UINT32_MAX /* an escape that produces nothing */

static int read_hex(const unsigned char *s, size_t n, size_t *i, int digits, uint32_t *cp)
{
    uint32_t v = 0;
    for (int k = 0; k < digits; k++, (*i)++) {
        unsigned char c = *i < n ? s[*i] : 0;
        unsigned char l = c | 0x20;
        if (is_digit(c))
            v = v * 16 + (c - '0');
        else if (l >= 'a' && l <= 'f')
            v = v * 16 + (l - 'a' + 10);
        else
            return -EINVAL; /* Python: "truncated \xXX escape" */
    }
    *cp = v;
    return 0;
}

/*
 * Decode one escape; *i indexes the byte after the backslash (the scanner
 * guarantees there is one). An escape Python does not know ("\q") keeps its
 * backslash: we return the backslash and leave *i on the 'q'. \N{name} is
 * refused: repr() never writes it, and we carry no Unicode name table.
 */
static int read_escape(const unsigned char *s, size_t n, size_t *i, uint32_t *cp)
{
    static const char simple_in[] = "\\'\"abfnrtv";
    static const char simple_out[] = "\\'\"\a\b\f\n\r\t\v";
    if (*i >= n)
        return -EINVAL;
    unsigned char c = s[*i];
    const char *hit = c ? memchr(simple_in, c, sizeof(simple_in) - 1) : NULL;

    if (hit) {
        *cp = (unsigned char)simple_out[hit - simple_in];
        (*i)++;
        return 0;
    }
    if (c == '\n' || c == '\r') { /* line continuation */
        (*i)++;
        if (c == '\r' && *i < n && s[*i] == '\n')
            (*i)++;
        *cp = NO_CHAR;
        return 0;
    }
    if (c >= '0' && c <= '7') {
        uint32_t v = 0;
        for (int k = 0; k < 3 && *i < n && s[*i] >= '0' && s[*i] <= '7'; k++, (*i)++)
            v = v * 8 + (s[*i] - '0');
        *cp = v;
        return 0;
    }
    if (c == 'x' || c == 'u' || c == 'U') {
        (*i)++;
        int ret = read_hex(s, n, i, c == 'x' ? 2 : c == 'u' ? 4 : 8, cp);
        if (ret == 0 && *cp > 0x10FFFF)
            ret = -EINVAL;
        return ret;
    }
    if (c == 'N')
        return -EINVAL;
    *cp = '\\';
    return 0;
}

static void put_byte(unsigned char *out, size_t cap, size_t *o, unsigned char c)
{
    if (*o < cap)
        out[*o] = c;
    (*o)++;
}

/* Code points from escapes come out as UTF-8 (lone surrogates included). */
static void put_utf8(unsigned char *out, size_t cap, size_t *o, uint32_t cp)
{
    if (cp < 0x80) {
        put_byte(out, cap, o, (unsigned char)cp);
    } else if (cp < 0x800) {
        put_byte(out, cap, o, (unsigned char)(0xC0 | cp >> 6));
        put_byte(out, cap, o, (unsigned char)(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        put_byte(out, cap, o, (unsigned char)(0xE0 | cp >> 12));
        put_byte(out, cap, o, (unsigned char)(0x80 | ((cp >> 6) & 0x3F)));
        put_byte(out, cap, o, (unsigned char)(0x80 | (cp & 0x3F)));
    } else {
        put_byte(out, cap, o, (unsigned char)(0xF0 | cp >> 18));
        put_byte(out, cap, o, (unsigned char)(0x80 | ((cp >> 12) & 0x3F)));
        put_byte(out, cap, o, (unsigned char)(0x80 | ((cp >> 6) & 0x3F)));
        put_byte(out, cap, o, (unsigned char)(0x80 | (cp & 0x3F)));
    }
}

/*
 * Decode the body of a string literal (the bytes between its quotes) the way
 * Python does, writing at most cap bytes to out. Raw bytes pass through as
 * they are (latin-1 in v1/v2, UTF-8 in v3: we only ever compare ASCII).
 * Returns the full decoded length, which may exceed cap, or -EINVAL for an
 * escape Python rejects (or \N{...}, see read_escape()).
 */
static int64_t str_decode(const unsigned char *s, size_t n, bool raw, unsigned char *out,
                          size_t cap)
{
    size_t i = 0, o = 0;

    while (i < n) {
        unsigned char c = s[i++];
        uint32_t cp;
        if (c != '\\' || raw) {
            put_byte(out, cap, &o, c);
            continue;
        }
        int ret = read_escape(s, n, &i, &cp);
        if (ret < 0)
            return ret;
        if (cp != NO_CHAR)
            put_utf8(out, cap, &o, cp);
    }
    return (int64_t)o;
}

/* A string literal; p->pos is on the opening quote, beg on any prefix. */
static int parse_str(struct lit_parser *p, uint32_t beg, uint8_t flags, uint32_t *out)
{
    unsigned char q = p->s[p->pos++];
    uint32_t body = p->pos;

    for (;;) {
        if (p->pos >= p->len)
            return -EINVAL; /* unterminated */
        unsigned char c = p->s[p->pos];
        if (c == q)
            break;
        if (c == '\n' || c == '\r')
            return -EINVAL; /* single-quoted strings end at the line */
        /* A backslash keeps the next byte (even a quote) in the string, in
         * raw strings too; "\<CR><LF>" is one line continuation. */
        if (c == '\\') {
            if (p->len - p->pos < 2)
                return -EINVAL;
            if (p->s[p->pos + 1] == '\r' && p->len - p->pos > 2 && p->s[p->pos + 2] == '\n')
                p->pos++;
            p->pos++;
        }
        p->pos++;
    }
    uint32_t body_end = p->pos++;
    if (str_decode(p->s + body, body_end - body, flags & LIT_F_RAW, NULL, 0) < 0)
        return -EINVAL;

    int ret = new_node(p, LIT_STR, beg, out);
    if (ret)
        return ret;
    struct lit *l = &p->nodes[*out];
    l->flags = flags;
    l->end = p->pos;
    l->u.str.beg = body;
    l->u.str.end = body_end;
    return 0;
}

static int digit_value(unsigned char c)
{
    unsigned char l = c | 0x20;
    if (is_digit(c))
        return c - '0';
    if (l >= 'a' && l <= 'z')
        return l - 'a' + 10;
    return 99;
}

/*
 * Scan the digits of an int literal: Python allows single underscores between
 * digits, and one right after a 0x/0o/0b prefix. Sets *big on overflow.
 */
static int scan_digits(struct lit_parser *p, int base, bool after_prefix, uint64_t *v, bool *big)
{
    uint32_t ndigits = 0;
    bool underscore_ok = after_prefix;

    *v = 0;
    *big = false;
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c == '_' && underscore_ok) {
            p->pos++;
            underscore_ok = false;
            if (p->pos >= p->len || digit_value(p->s[p->pos]) >= base)
                return -EINVAL;
            continue;
        }
        int d = digit_value(c);
        if (d >= base)
            break;
        if (__builtin_mul_overflow(*v, (uint64_t)base, v) ||
            __builtin_add_overflow(*v, (uint64_t)d, v))
            *big = true;
        ndigits++;
        underscore_ok = true;
        p->pos++;
    }
    return ndigits ? 0 : -EINVAL;
}

/* An int literal; p->pos is on its first digit, beg on any sign. */
static int parse_int(struct lit_parser *p, uint32_t beg, bool neg, uint32_t *out)
{
    uint32_t start = p->pos;
    int base = 10;
    uint64_t v;
    bool big;

    if (p->s[p->pos] == '0' && p->len - p->pos >= 2) {
        unsigned char l = p->s[p->pos + 1] | 0x20;
        base = l == 'x' ? 16 : l == 'o' ? 8 : l == 'b' ? 2 : 10;
        if (base != 10)
            p->pos += 2;
    }
    int ret = scan_digits(p, base, base != 10, &v, &big);
    if (ret)
        return ret;
    /* Python 3 forbids leading zeros in decimals ("007"), but "00" is 0. */
    if (base == 10 && p->s[start] == '0' && (v != 0 || big))
        return -EINVAL;
    /* Python 2 long suffix, as in (3L,). numpy's _filter_header strips only
     * an uppercase L, the one repr() wrote. */
    if (at(p, 'L'))
        p->pos++;
    /* "1.5", "1e3", "3j", "12abc": not ints; floats are never valid here. */
    if (p->pos < p->len && (is_ident(p->s[p->pos]) || p->s[p->pos] == '.'))
        return -EINVAL;

    ret = new_node(p, LIT_INT, beg, out);
    if (ret)
        return ret;
    struct lit *l = &p->nodes[*out];
    l->end = p->pos;
    l->u.num = v;
    l->flags = (big ? LIT_F_BIG : 0) | (neg && (v || big) ? LIT_F_NEG : 0);
    return 0;
}

/* "-5", "+5", "- 5": literal_eval allows one unary sign on a number. */
static int parse_signed(struct lit_parser *p, uint32_t *out)
{
    uint32_t beg = p->pos;
    bool neg = p->s[p->pos++] == '-';

    skip_space(p);
    if (p->pos >= p->len || !is_digit(p->s[p->pos]))
        return -EINVAL;
    return parse_int(p, beg, neg, out);
}

static bool word_is(const struct lit_parser *p, uint32_t beg, uint32_t len, const char *w)
{
    return strlen(w) == len && memcmp(p->s + beg, w, len) == 0;
}

/* True, False, None, or a u''/r'' string prefix. Bytes (b'') are refused:
 * numpy would reject them as keys and as dtypes. */
static int parse_word(struct lit_parser *p, uint32_t *out)
{
    uint32_t beg = p->pos;

    while (p->pos < p->len && is_ident(p->s[p->pos]))
        p->pos++;
    uint32_t len = p->pos - beg;
    if (at(p, '\'') || at(p, '"')) {
        if (word_is(p, beg, len, "u") || word_is(p, beg, len, "U"))
            return parse_str(p, beg, 0, out);
        if (word_is(p, beg, len, "r") || word_is(p, beg, len, "R"))
            return parse_str(p, beg, LIT_F_RAW, out);
        return -EINVAL;
    }

    uint8_t type;
    uint64_t num = 0;
    if (word_is(p, beg, len, "True")) {
        type = LIT_BOOL;
        num = 1;
    } else if (word_is(p, beg, len, "False")) {
        type = LIT_BOOL;
    } else if (word_is(p, beg, len, "None")) {
        type = LIT_NONE;
    } else {
        return -EINVAL;
    }
    int ret = new_node(p, type, beg, out);
    if (ret)
        return ret;
    p->nodes[*out].end = p->pos;
    p->nodes[*out].u.num = num;
    return 0;
}

/* After an element: ',' continues, close ends. Returns 1 at the end. */
static int seq_sep(struct lit_parser *p, unsigned char close)
{
    skip_space(p);
    if (at(p, ',')) {
        p->pos++;
        skip_space(p);
        if (!at(p, close))
            return 0;
    }
    if (at(p, close)) {
        p->pos++;
        return 1;
    }
    return -EINVAL;
}

/* The rest of a list, dict or tuple up to close; node has its first
 * children already (last is the latest). */
static int parse_items(struct lit_parser *p, int depth, uint32_t node, uint32_t last,
                       unsigned char close)
{
    bool dict = p->nodes[node].type == LIT_DICT;

    for (;;) {
        uint32_t kid;
        skip_space(p);
        if (at(p, close)) { /* empty, or right after a trailing comma */
            p->pos++;
            break;
        }
        int ret = parse_value(p, depth + 1, &kid);
        if (ret)
            return ret;
        add_child(p, node, &last, kid);
        if (dict) {
            skip_space(p);
            if (!at(p, ':'))
                return -EINVAL; /* also a set literal {1, 2} */
            p->pos++;
            ret = parse_value(p, depth + 1, &kid);
            if (ret)
                return ret;
            add_child(p, node, &last, kid);
        }
        ret = seq_sep(p, close);
        if (ret < 0)
            return ret;
        if (ret)
            break;
    }
    p->nodes[node].end = p->pos;
    return 0;
}

/* '[' or '{': a list or dict. */
static int parse_bracket(struct lit_parser *p, int depth, uint8_t type, uint32_t *out)
{
    int ret = new_node(p, type, p->pos, out);
    if (ret)
        return ret;
    p->pos++;
    return parse_items(p, depth, *out, LIT_NIL, type == LIT_DICT ? '}' : ']');
}

/* '(': the empty tuple, a parenthesized value "(x)" (which is just x), or a
 * tuple "(x,)", "(x, y)". */
static int parse_paren(struct lit_parser *p, int depth, uint32_t *out)
{
    uint32_t beg = p->pos++;
    uint32_t first;

    skip_space(p);
    if (at(p, ')')) {
        int ret = new_node(p, LIT_TUPLE, beg, out);
        if (ret)
            return ret;
        p->nodes[*out].end = ++p->pos;
        return 0;
    }
    int ret = parse_value(p, depth + 1, &first);
    if (ret)
        return ret;
    skip_space(p);
    if (at(p, ')')) {
        /* Widen the span so a descr shows as written, parentheses included. */
        p->nodes[first].beg = beg;
        p->nodes[first].end = ++p->pos;
        *out = first;
        return 0;
    }
    if (!at(p, ','))
        return -EINVAL;
    p->pos++;
    ret = new_node(p, LIT_TUPLE, beg, out);
    if (ret)
        return ret;
    uint32_t last = LIT_NIL;
    add_child(p, *out, &last, first);
    return parse_items(p, depth, *out, last, ')');
}

static int parse_value(struct lit_parser *p, int depth, uint32_t *out)
{
    if (depth > LIT_MAX_DEPTH)
        return -EINVAL;
    skip_space(p);
    if (p->pos >= p->len)
        return -EINVAL;

    unsigned char c = p->s[p->pos];
    if (c == '{')
        return parse_bracket(p, depth, LIT_DICT, out);
    if (c == '[')
        return parse_bracket(p, depth, LIT_LIST, out);
    if (c == '(')
        return parse_paren(p, depth, out);
    if (c == '\'' || c == '"')
        return parse_str(p, p->pos, 0, out);
    if (c == '-' || c == '+')
        return parse_signed(p, out);
    if (is_digit(c))
        return parse_int(p, p->pos, false, out);
    if (is_ident(c))
        return parse_word(p, out);
    return -EINVAL;
}

/* The whole text: one value, then only whitespace, padding and comments. */
static int lit_parse(struct lit_parser *p, uint32_t *root)
{
    /* CPython refuses source text containing NUL bytes. */
    if (memchr(p->s, 0, p->len))
        return -EINVAL;
    int ret = parse_value(p, 0, root);
    if (ret)
        return ret;
    skip_space(p);
    return p->pos == p->len ? 0 : -EINVAL;
}

/* ---- Step 2: interpreting the tree ---- */

static const struct lit *lit_get(const struct lit_parser *p, uint32_t i)
{
    return i == LIT_NIL ? NULL : &p->nodes[i];
}

static const struct lit *lit_child(const struct lit_parser *p, const struct lit *l, uint32_t k)
{
    const struct lit *c = lit_get(p, l->first);
    while (c && k--)
        c = lit_get(p, c->next);
    return c;
}

/* Decode a string node into out (cap bytes). Returns its length, or -1 when
 * it is not a string or does not fit. */
static int64_t lit_str(const struct lit_parser *p, const struct lit *l, unsigned char *out,
                       size_t cap)
{
    if (!l || l->type != LIT_STR)
        return -1;
    int64_t n = str_decode(p->s + l->u.str.beg, l->u.str.end - l->u.str.beg, l->flags & LIT_F_RAW,
                           out, cap);
    return n >= 0 && (uint64_t)n <= cap ? n : -1;
}

static bool lit_is_count(const struct lit *l)
{
    return l && l->type == LIT_INT && !(l->flags & (LIT_F_NEG | LIT_F_BIG));
}

static void set_fixed(struct dsize *d, uint64_t size)
{
    d->known = true;
    d->size = size;
}

static void set_flexible(struct dsize *d, uint8_t charsize)
{
    d->known = true;
    d->unsized = true;
    d->charsize = charsize;
}

/* Type names np.dtype() accepts without a byte-order prefix. kind: 0 fixed
 * size, 'O' object, 'S' unsized bytes/void, 'U' unsized unicode. */
struct type_name {
    const char *name;
    uint8_t size;
    char kind;
};

static const struct type_name type_names[] = {
    {"bool", 1, 0},         {"bool_", 1, 0},         {"bool8", 1, 0},        {"int8", 1, 0},
    {"byte", 1, 0},         {"uint8", 1, 0},         {"ubyte", 1, 0},        {"int16", 2, 0},
    {"short", 2, 0},        {"uint16", 2, 0},        {"ushort", 2, 0},       {"int32", 4, 0},
    {"intc", 4, 0},         {"uint32", 4, 0},        {"uintc", 4, 0},        {"int64", 8, 0},
    {"int", 8, 0},          {"int_", 8, 0},          {"intp", 8, 0},         {"int0", 8, 0},
    {"long", 8, 0},         {"longlong", 8, 0},      {"uint64", 8, 0},       {"uint", 8, 0},
    {"uintp", 8, 0},        {"uint0", 8, 0},         {"ulong", 8, 0},        {"ulonglong", 8, 0},
    {"float16", 2, 0},      {"half", 2, 0},          {"float32", 4, 0},      {"single", 4, 0},
    {"float64", 8, 0},      {"double", 8, 0},        {"float", 8, 0},        {"float_", 8, 0},
    {"float128", 16, 0},    {"longdouble", 16, 0},   {"longfloat", 16, 0},   {"complex64", 8, 0},
    {"csingle", 8, 0},      {"singlecomplex", 8, 0}, {"complex128", 16, 0},  {"cdouble", 16, 0},
    {"complex", 16, 0},     {"complex_", 16, 0},     {"cfloat", 16, 0},      {"complex256", 32, 0},
    {"clongdouble", 32, 0}, {"clongfloat", 32, 0},   {"longcomplex", 32, 0}, {"object", 0, 'O'},
    {"object_", 0, 'O'},    {"object0", 0, 'O'},     {"str", 0, 'U'},        {"str_", 0, 'U'},
    {"str0", 0, 'U'},       {"unicode", 0, 'U'},     {"unicode_", 0, 'U'},   {"bytes", 0, 'S'},
    {"bytes_", 0, 'S'},     {"bytes0", 0, 'S'},      {"string_", 0, 'S'},    {"void", 0, 'S'},
    {"void0", 0, 'S'},
};

static bool name_size(const unsigned char *t, size_t n, struct dsize *d)
{
    for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++) {
        const struct type_name *tn = &type_names[i];
        if (strlen(tn->name) != n || memcmp(tn->name, t, n) != 0)
            continue;
        if (tn->kind == 'O')
            d->object = true;
        else if (tn->kind)
            set_flexible(d, tn->kind == 'U' ? 4 : 1);
        else
            set_fixed(d, tn->size);
        return true;
    }
    return false;
}

/* Empty, or a datetime unit such as "[ns]" or "[25s]" ending the string.
 * The unit does not change the size (always 8), so it is only shape-checked. */
static bool unit_ok(const unsigned char *u, size_t n)
{
    if (n == 0)
        return true;
    if (n < 3 || u[0] != '[' || u[n - 1] != ']')
        return false;
    return !memchr(u + 1, '[', n - 2) && !memchr(u + 1, ']', n - 2);
}

/* "datetime64[ns]", "timedelta64": numpy allows a byte order on these. */
static bool datetime_name_size(const unsigned char *t, size_t n, struct dsize *d)
{
    static const char *const names[] = {"datetime64", "timedelta64"};
    for (size_t i = 0; i < 2; i++) {
        size_t k = strlen(names[i]);
        if (n >= k && memcmp(t, names[i], k) == 0 && unit_ok(t + k, n - k)) {
            set_fixed(d, 8);
            return true;
        }
    }
    return false;
}

/* One-character type codes (a dtype's 'char') with a fixed size. 'c' is S1. */
static const struct {
    char code;
    uint8_t size;
} type_codes[] = {
    {'?', 1}, {'b', 1}, {'B', 1}, {'c', 1}, {'h', 2},  {'H', 2},  {'e', 2},  {'i', 4},
    {'I', 4}, {'f', 4}, {'l', 8}, {'L', 8}, {'q', 8},  {'Q', 8},  {'p', 8},  {'P', 8},
    {'d', 8}, {'F', 8}, {'M', 8}, {'m', 8}, {'g', 16}, {'D', 16}, {'G', 32},
};

static void code_size(unsigned char c, struct dsize *d)
{
    if (c == 'S' || c == 'a' || c == 'V') {
        set_flexible(d, 1);
    } else if (c == 'U') {
        set_flexible(d, 4);
    } else if (c == 'O') {
        d->object = true;
    } else {
        for (size_t i = 0; i < sizeof(type_codes) / sizeof(type_codes[0]); i++)
            if (type_codes[i].code == c)
                set_fixed(d, type_codes[i].size);
    }
}

/* Numeric kinds come in power-of-two sizes: i1..i8, f2..f16, c8..c32. */
static bool pow2_between(uint64_t v, uint64_t lo, uint64_t hi)
{
    return v >= lo && v <= hi && (v & (v - 1)) == 0;
}

/* Kind letter plus a byte count: "f8", "U10" (characters), "M8[D]". */
static void kind_size(unsigned char k, const unsigned char *r, size_t n, struct dsize *d)
{
    uint64_t v = 0;
    size_t nd = 0;

    for (; nd < n && is_digit(r[nd]); nd++) {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, r[nd] - '0', &v) ||
            v > INT64_MAX)
            return; /* numpy cannot make it either */
    }
    if (nd == 0)
        return;
    if (k == 'M' || k == 'm') {
        if (v == 8 && unit_ok(r + nd, n - nd))
            set_fixed(d, 8);
        return;
    }
    if (nd != n)
        return;
    switch (k) {
    case 'b':
        if (v == 1)
            set_fixed(d, 1);
        break;
    case 'i':
    case 'u':
        if (pow2_between(v, 1, 8))
            set_fixed(d, v);
        break;
    case 'f':
        if (pow2_between(v, 2, 16))
            set_fixed(d, v);
        break;
    case 'c':
        if (pow2_between(v, 8, 32))
            set_fixed(d, v);
        break;
    case 'O':
        if (v == 4 || v == 8)
            d->object = true;
        break;
    case 'S':
    case 'a':
    case 'V':
        if (v)
            set_fixed(d, v);
        else
            set_flexible(d, 1);
        break;
    case 'U':
        if (v == 0)
            set_flexible(d, 4);
        else if (v <= INT64_MAX / 4)
            set_fixed(d, v * 4);
        break;
    }
}

/* A type string as np.dtype() reads it. Leaves d unknown if we cannot tell. */
static void typestr_size(const unsigned char *t, size_t n, struct dsize *d)
{
    if (name_size(t, n, d))
        return;
    if (n >= 2 && memchr("<>|=", t[0], 4)) {
        t++;
        n--;
    }
    if (n == 0 || datetime_name_size(t, n, d))
        return;
    if (n == 1)
        code_size(t[0], d);
    else
        kind_size(t[0], t + 1, n - 1, d);
}

/*
 * np.dtype((base, shape)). An int shape on an unsized flexible type is its
 * length instead ('S', 5) -> S5, ('U', 5) -> 20 bytes. A shape of ints
 * multiplies the size; anything else leaves d unknown.
 */
static int apply_shape(const struct lit_parser *p, const struct lit *shape, struct dsize *d)
{
    if (!d->known)
        return 0;
    if (d->unsized && lit_is_count(shape)) {
        d->unsized = false;
        if (__builtin_mul_overflow(shape->u.num, d->charsize, &d->size) || d->size > INT64_MAX)
            return -EOVERFLOW;
        return 0;
    }
    bool zero = false;
    if (lit_is_count(shape)) {
        if (size_mul_dim(&d->size, &zero, shape->u.num))
            return -EOVERFLOW;
    } else if (!d->unsized && shape && (shape->type == LIT_TUPLE || shape->type == LIT_LIST)) {
        for (const struct lit *c = lit_get(p, shape->first); c; c = lit_get(p, c->next)) {
            if (!lit_is_count(c)) {
                d->known = false;
                return 0;
            }
            if (size_mul_dim(&d->size, &zero, c->u.num))
                return -EOVERFLOW;
        }
    } else {
        d->known = false;
    }
    if (zero)
        d->size = 0;
    return 0;
}

static int descr_size(const struct lit_parser *p, const struct lit *l, struct dsize *d);

/* (name, descr) or (name, descr, shape); name may be (title, name). */
static int field_size(const struct lit_parser *p, const struct lit *f, struct dsize *d)
{
    if ((f->type != LIT_TUPLE && f->type != LIT_LIST) || f->count < 2 || f->count > 3)
        return 0;
    const struct lit *name = lit_child(p, f, 0);
    bool titled = (name->type == LIT_TUPLE || name->type == LIT_LIST) && name->count == 2;
    if (name->type != LIT_STR && !(titled && lit_child(p, name, 1)->type == LIT_STR))
        return 0;
    int ret = descr_size(p, lit_child(p, f, 1), d);
    if (ret == 0 && f->count == 3)
        ret = apply_shape(p, lit_child(p, f, 2), d);
    return ret;
}

/* A struct: fields are laid out back to back, padding being explicit
 * ('', '|V7') fields, so the itemsize is the sum of the field sizes. */
static int fields_size(const struct lit_parser *p, const struct lit *l, struct dsize *d)
{
    set_fixed(d, 0);
    for (const struct lit *f = lit_get(p, l->first); f; f = lit_get(p, f->next)) {
        struct dsize fd = {0};
        int ret = field_size(p, f, &fd);
        if (ret)
            return ret;
        d->object |= fd.object;
        /* Keep walking when unknown: an 'O' further on still matters. */
        if (!fd.known || fd.unsized)
            d->known = false;
        else if (d->known && size_add(&d->size, fd.size))
            return -EOVERFLOW;
    }
    return 0;
}

/* Any descr: type string, struct list, or (descr, shape) tuple. The tree is
 * at most LIT_MAX_DEPTH deep, which bounds this recursion. */
static int descr_size(const struct lit_parser *p, const struct lit *l, struct dsize *d)
{
    unsigned char buf[TYPESTR_MAX];

    *d = (struct dsize){0};
    if (l->type == LIT_STR) {
        int64_t n = lit_str(p, l, buf, sizeof(buf));
        if (n >= 0)
            typestr_size(buf, (size_t)n, d);
        return 0;
    }
    if (l->type == LIT_LIST)
        return fields_size(p, l, d);
    if (l->type == LIT_TUPLE && l->count == 2) {
        int ret = descr_size(p, lit_child(p, l, 0), d);
        return ret ? ret : apply_shape(p, lit_child(p, l, 1), d);
    }
    return 0; /* dict descrs and other forms np.load does not take */
}

/* The three values of the header dict (node pointers into the tree). */
struct header_vals {
    const struct lit *descr, *fortran, *shape;
};

/* Exactly the keys descr, fortran_order, shape; a repeated key keeps its
 * last value, as in Python. */
static int read_keys(const struct lit_parser *p, const struct lit *root, struct header_vals *v)
{
    if (root->type != LIT_DICT)
        return -EINVAL;
    *v = (struct header_vals){0};
    const struct lit *k = lit_get(p, root->first);
    while (k) {
        const struct lit *val = lit_get(p, k->next); /* dicts hold pairs */
        unsigned char key[16];
        int64_t n = lit_str(p, k, key, sizeof(key));
        k = lit_get(p, val->next);
        if (n == 5 && memcmp(key, "descr", 5) == 0)
            v->descr = val;
        else if (n == 13 && memcmp(key, "fortran_order", 13) == 0)
            v->fortran = val;
        else if (n == 5 && memcmp(key, "shape", 5) == 0)
            v->shape = val;
        else
            return -EINVAL;
    }
    return v->descr && v->fortran && v->shape ? 0 : -EINVAL;
}

static int read_shape(const struct lit_parser *p, const struct lit *l, struct npy_header *h)
{
    if (l->type != LIT_TUPLE || l->count > NPY_MAX_DIMS)
        return -EINVAL;
    h->ndim = 0;
    for (const struct lit *c = lit_get(p, l->first); c; c = lit_get(p, c->next)) {
        if (c->type != LIT_INT || (c->flags & LIT_F_NEG))
            return -EINVAL; /* True is an int in Python, but numpy refuses it */
        if (c->flags & LIT_F_BIG)
            return -EOVERFLOW;
        h->shape[h->ndim++] = c->u.num;
    }
    return 0;
}

/* data_size and total_size from itemsize and shape (docs/FORMATS.md section 1.6,
 * "Payload size"). */
static int compute_sizes(struct npy_header *h)
{
    bool zero = h->size_known && h->itemsize == 0;
    uint64_t acc = zero || !h->size_known ? 1 : h->itemsize;

    /* Also for unknown itemsizes: numpy cannot make an array whose element
     * count overflows, so neither can such a file be valid. */
    for (int i = 0; i < h->ndim; i++)
        if (size_mul_dim(&acc, &zero, h->shape[i]))
            return -EOVERFLOW;
    if (!h->size_known)
        return 0;
    h->data_size = zero ? 0 : acc;
    h->total_size = h->data_offset;
    return size_add(&h->total_size, h->data_size);
}

static int read_header(const struct lit_parser *p, const struct lit *root, struct npy_header *h)
{
    struct header_vals v;
    struct dsize d;

    int ret = read_keys(p, root, &v);
    if (ret)
        return ret;
    if (v.fortran->type != LIT_BOOL)
        return -EINVAL;
    h->fortran_order = v.fortran->u.num != 0;
    ret = read_shape(p, v.shape, h);
    if (ret)
        return ret;
    ret = descr_size(p, v.descr, &d);
    if (ret)
        return ret;
    h->has_object = d.object;
    h->size_known = d.known && !d.object;
    h->itemsize = h->size_known ? d.size : 0;

    size_t n = v.descr->end - v.descr->beg;
    h->descr = malloc(n + 1);
    if (!h->descr)
        return -ENOMEM;
    memcpy(h->descr, p->s + v.descr->beg, n);
    h->descr[n] = '\0';
    return compute_sizes(h);
}

/* ---- The dtype as JSON for np.dtype() (npy_dtype_json) ---- */

/* Growing output text, NUL-terminated; failed sticks once memory ran out. */
struct jbuf {
    char *p;
    size_t len, cap;
    bool failed;
};

static void jb_put(struct jbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->cap - b->len <= n) {
        size_t cap = b->cap ? b->cap : 64;
        char *q;
        while (cap - b->len <= n && cap <= SIZE_MAX / 2)
            cap *= 2;
        q = cap - b->len > n ? realloc(b->p, cap) : NULL;
        if (!q) {
            b->failed = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void jb_str(struct jbuf *b, const char *s)
{
    jb_put(b, s, strlen(s));
}

static void jb_u64(struct jbuf *b, uint64_t v)
{
    char t[24];
    jb_put(b, t, (size_t)snprintf(t, sizeof(t), "%" PRIu64, v));
}

/* Append src's text to b (a list's next items). */
static void jb_cat(struct jbuf *b, const struct jbuf *src)
{
    if (src->failed)
        b->failed = true;
    else if (src->len)
        jb_put(b, src->p, src->len);
}

/* One code point inside a JSON string: printable ASCII as is, the rest as
 * \uXXXX (a surrogate pair above U+FFFF), so the text stays ASCII. */
static void jb_cp(struct jbuf *b, uint32_t cp)
{
    char t[16];

    if (cp == '"' || cp == '\\') {
        t[0] = '\\';
        t[1] = (char)cp;
        jb_put(b, t, 2);
    } else if (cp >= 0x20 && cp < 0x7f) {
        t[0] = (char)cp;
        jb_put(b, t, 1);
    } else if (cp > 0xFFFF) {
        cp -= 0x10000;
        jb_put(b, t, (size_t)snprintf(t, sizeof(t), "\\u%04x\\u%04x", 0xD800 + (cp >> 10),
                                      0xDC00 + (cp & 0x3FF)));
    } else {
        jb_put(b, t, (size_t)snprintf(t, sizeof(t), "\\u%04x", cp));
    }
}

/* One UTF-8 sequence at s[*i] as Python's strict decoder reads it (no
 * overlong forms, no surrogates, at most U+10FFFF). Returns 0 or -EINVAL. */
static int utf8_next(const unsigned char *s, size_t n, size_t *i, uint32_t *cp)
{
    unsigned char c = s[*i];
    size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    uint32_t v = c & (0x7F >> len);
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};

    if (c < 0xC2 || c > 0xF4 || n - *i < len)
        return -EINVAL;
    for (size_t k = 1; k < len; k++) {
        if ((s[*i + k] & 0xC0) != 0x80)
            return -EINVAL;
        v = v << 6 | (s[*i + k] & 0x3F);
    }
    if (v < min[len] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return -EINVAL;
    *i += len;
    *cp = v;
    return 0;
}

struct jctx {
    const struct lit_parser *p;
    bool utf8; /* version 3: the header is UTF-8; versions 1 and 2: latin-1 */
};

/* A string node's value as JSON string content (no quotes), decoded as
 * numpy decodes the header, then as Python reads the literal. */
static int jb_lit_str(struct jbuf *b, const struct jctx *c, const struct lit *l)
{
    const unsigned char *s = c->p->s + l->u.str.beg;
    size_t n = l->u.str.end - l->u.str.beg, i = 0;

    while (i < n) {
        uint32_t cp;
        if (s[i] == '\\' && !(l->flags & LIT_F_RAW)) {
            i++;
            if (read_escape(s, n, &i, &cp) < 0)
                return -EINVAL;
            if (cp == NO_CHAR)
                continue;
        } else if (s[i] < 0x80 || !c->utf8) {
            cp = s[i++];
        } else if (utf8_next(s, n, &i, &cp) < 0) {
            return -EINVAL;
        }
        jb_cp(b, cp);
    }
    return 0;
}

/* A void type string ('|V4', 'V'), or a subarray of one: what numpy takes
 * for padding in a field named ''. */
static bool lit_is_void(const struct jctx *c, const struct lit *l)
{
    unsigned char t[TYPESTR_MAX];
    int64_t n;

    while (l && l->type == LIT_TUPLE && l->count == 2)
        l = lit_child(c->p, l, 0);
    n = lit_str(c->p, l, t, sizeof(t));
    size_t k = n > 1 && memchr("<>|=", t[0], 4) ? 1 : 0;

    return n > 0 && (size_t)n > k && t[k] == 'V';
}

/* A shape node's dimensions appended to dims[*nd]: an int n is (n,); 1 is
 * refused, numpy reading it as no shape today and as (1,) in the future. */
static int shape_dims(const struct jctx *c, const struct lit *s, uint64_t *dims, int *nd)
{
    if (lit_is_count(s)) {
        if (s->u.num == 1 || *nd >= NPY_MAX_DIMS)
            return -EINVAL;
        dims[(*nd)++] = s->u.num;
        return 0;
    }
    if (!s || (s->type != LIT_TUPLE && s->type != LIT_LIST))
        return -EINVAL;
    for (const struct lit *d = lit_get(c->p, s->first); d; d = lit_get(c->p, d->next)) {
        if (!lit_is_count(d) || *nd >= NPY_MAX_DIMS)
            return -EINVAL;
        dims[(*nd)++] = d->u.num;
    }
    return 0;
}

static int jb_struct(struct jbuf *out, const struct jctx *c, const struct lit *l, uint64_t *size,
                     bool *sized);

/*
 * The format of type l given the field's own shape outer (NULL: none) as
 * JSON: a type string, "(2, 3)<f8", or a struct's object. *size gets its
 * bytes per item when *sized (an object is 8 bytes on LP64).
 */
static int jb_format(struct jbuf *b, const struct jctx *c, const struct lit *l,
                     const struct lit *outer, uint64_t *size, bool *sized)
{
    const struct lit *shapes[LIT_MAX_DEPTH + 2];
    unsigned char t[TYPESTR_MAX];
    uint64_t dims[NPY_MAX_DIMS], length = 0;
    struct dsize d = {0};
    int ns = 0, nd = 0, ret;
    int64_t tn;
    bool zero = false;

    *sized = false;
    if (outer)
        shapes[ns++] = outer;
    while (l->type == LIT_TUPLE && l->count == 2 && ns < LIT_MAX_DEPTH + 2) { /* (base, shape) */
        shapes[ns++] = lit_child(c->p, l, 1);
        l = lit_child(c->p, l, 0);
    }
    if (l->type == LIT_LIST) {
        for (int k = 0; k < ns; k++) /* a struct subarray: JSON cannot say it */
            if ((shapes[k]->type != LIT_TUPLE && shapes[k]->type != LIT_LIST) ||
                shapes[k]->count != 0)
                return -EINVAL;
        return jb_struct(b, c, l, size, sized);
    }
    tn = lit_str(c->p, l, t, sizeof(t));
    if (tn <= 0)
        return -EINVAL;
    typestr_size(t, (size_t)tn, &d);
    for (int k = 0; k < ns; k++) {
        if (k == ns - 1 && d.known && d.unsized && lit_is_count(shapes[k])) {
            /* ('S', 5): a length, written into the type string: S5 */
            if (tn > 2 || shapes[k]->u.num == 0)
                return -EINVAL;
            length = shapes[k]->u.num;
            d.unsized = false;
            if (__builtin_mul_overflow(length, d.charsize, &d.size))
                return -EINVAL;
            continue;
        }
        ret = shape_dims(c, shapes[k], dims, &nd);
        if (ret)
            return ret;
    }
    jb_str(b, "\"");
    if (nd) {
        jb_str(b, "(");
        for (int k = 0; k < nd; k++) {
            jb_str(b, k ? ", " : "");
            jb_u64(b, dims[k]);
        }
        jb_str(b, nd == 1 ? ",)" : ")");
    }
    ret = jb_lit_str(b, c, l);
    if (length)
        jb_u64(b, length);
    jb_str(b, "\"");
    if (d.object)
        set_fixed(&d, 8);
    if (ret || !d.known || d.unsized)
        return ret;
    *size = d.size;
    for (int k = 0; k < nd; k++)
        if (size_mul_dim(size, &zero, dims[k]))
            return 0; /* too big to place: unsized */
    if (zero)
        *size = 0;
    *sized = true;
    return 0;
}

/*
 * A struct as np.dtype's dict: names, formats, titles if any, offsets and
 * itemsize if it has padding fields (np.load drops them and keeps the
 * others' offsets). *size: its itemsize, when *sized.
 */
static int jb_struct(struct jbuf *out, const struct jctx *c, const struct lit *l, uint64_t *size,
                     bool *sized)
{
    struct jbuf names = {0}, formats = {0}, titles = {0}, offsets = {0};
    bool known = true, padded = false, titled = false, first = true;
    uint64_t off = 0;
    int ret = 0;

    for (const struct lit *f = lit_get(c->p, l->first); f && !ret; f = lit_get(c->p, f->next)) {
        const struct lit *name, *title = NULL, *type;
        struct jbuf fmt = {0};
        uint64_t fsize = 0;
        bool fsized;
        unsigned char one[1];

        if ((f->type != LIT_TUPLE && f->type != LIT_LIST) || f->count < 2 || f->count > 3) {
            ret = -EINVAL;
            break;
        }
        name = lit_child(c->p, f, 0);
        type = lit_child(c->p, f, 1);
        if ((name->type == LIT_TUPLE || name->type == LIT_LIST) && name->count == 2) {
            title = lit_child(c->p, name, 0);
            name = lit_child(c->p, name, 1);
            if (title->type != LIT_STR) {
                ret = -EINVAL;
                break;
            }
        }
        if (name->type != LIT_STR) {
            ret = -EINVAL;
            break;
        }
        ret = jb_format(&fmt, c, type, f->count == 3 ? lit_child(c->p, f, 2) : NULL, &fsize,
                        &fsized);
        if (ret == 0 && !title && lit_str(c->p, name, one, 0) == 0 && lit_is_void(c, type)) {
            padded = true; /* ('', '|V4'): padding, left out */
        } else if (ret == 0) {
            jb_str(&names, first ? "\"" : ", \"");
            ret = jb_lit_str(&names, c, name);
            jb_str(&names, "\"");
            jb_str(&formats, first ? "" : ", ");
            jb_cat(&formats, &fmt);
            jb_str(&titles, first ? "" : ", ");
            if (title) {
                titled = true;
                jb_str(&titles, "\"");
                if (ret == 0)
                    ret = jb_lit_str(&titles, c, title);
                jb_str(&titles, "\"");
            } else {
                jb_str(&titles, "null");
            }
            jb_str(&offsets, first ? "" : ", ");
            jb_u64(&offsets, off);
            first = false;
        }
        free(fmt.p);
        if (!fsized || size_add(&off, fsize))
            known = false;
    }
    if (ret == 0 && padded && !known)
        ret = -EINVAL; /* offsets need the size of every field before them */
    if (ret == 0) {
        jb_str(out, "{\"names\": [");
        jb_cat(out, &names);
        jb_str(out, "], \"formats\": [");
        jb_cat(out, &formats);
        jb_str(out, "]");
        if (titled) {
            jb_str(out, ", \"titles\": [");
            jb_cat(out, &titles);
            jb_str(out, "]");
        }
        if (padded) {
            jb_str(out, ", \"offsets\": [");
            jb_cat(out, &offsets);
            jb_str(out, "], \"itemsize\": ");
            jb_u64(out, off);
        }
        jb_str(out, "}");
    }
    *size = off;
    *sized = known;
    free(names.p);
    free(formats.p);
    free(titles.p);
    free(offsets.p);
    return ret;
}

/* Parse h's descr text alone into p (the caller frees p->nodes). */
static int descr_parse(const struct npy_header *h, struct lit_parser *p, uint32_t *root)
{
    *p = (struct lit_parser){0};
    if (!h->descr)
        return -EINVAL;
    p->s = (const unsigned char *)h->descr;
    p->len = (uint32_t)strlen(h->descr); /* part of a header: <= NPY_HEADER_MAX */
    return lit_parse(p, root);
}

/* Contract in npy.h. */
int npy_dtype_json(const struct npy_header *h, char **out)
{
    struct lit_parser p;
    struct jbuf b = {0};
    struct jctx c = {.p = &p, .utf8 = h->major >= 3};
    uint32_t root;
    uint64_t size;
    bool sized;
    int ret = descr_parse(h, &p, &root);

    *out = NULL;
    if (ret == 0)
        ret = jb_format(&b, &c, &p.nodes[root], NULL, &size, &sized);
    free(p.nodes);
    if (ret == 0 && b.failed)
        ret = -ENOMEM;
    if (ret) {
        free(b.p);
        return ret == -ENOMEM ? ret : -EINVAL;
    }
    *out = b.p;
    return (int)b.len;
}

/* Contract in npy.h. */
int npy_dtype_string(const struct npy_header *h, char **out, size_t *len)
{
    struct lit_parser p;
    uint32_t root;
    int64_t n = -EINVAL;
    int ret = descr_parse(h, &p, &root);

    *out = NULL;
    if (ret == 0 && p.nodes[root].type == LIT_STR) {
        const struct lit *l = &p.nodes[root];
        n = str_decode(p.s + l->u.str.beg, l->u.str.end - l->u.str.beg, l->flags & LIT_F_RAW,
                       NULL, 0);
        *out = n >= 0 ? malloc((size_t)n + 1) : NULL;
        if (*out) {
            str_decode(p.s + l->u.str.beg, l->u.str.end - l->u.str.beg, l->flags & LIT_F_RAW,
                       (unsigned char *)*out, (size_t)n);
            (*out)[n] = '\0';
            *len = (size_t)n;
        } else if (n >= 0) {
            n = -ENOMEM;
        }
    }
    free(p.nodes);
    return n < 0 ? (int)n : 0;
}

/* ---- Public API ---- */

/* Contract in npy.h. */
int npy_prefix(const unsigned char *buf, size_t len, uint64_t *data_offset)
{
    if (len == 0)
        return -EAGAIN;
    if (memcmp(buf, NPY_MAGIC, len < NPY_MAGIC_LEN ? len : NPY_MAGIC_LEN) != 0)
        return -EINVAL;
    if (len < 8)
        return -EAGAIN;
    if (buf[6] < 1 || buf[6] > 3 || buf[7] != 0)
        return -EINVAL;
    /* v1 has a 2-byte HEADER_LEN, v2 and v3 a 4-byte one. */
    size_t fixed = buf[6] == 1 ? 10 : 12;
    if (len < fixed)
        return -EAGAIN;
    uint64_t hlen = buf[6] == 1 ? get_le16(buf + 8) : get_le32(buf + 8);
    if (hlen > NPY_HEADER_MAX)
        return -EINVAL;
    *data_offset = fixed + hlen;
    return 0;
}

/* Contract in npy.h. */
int npy_parse(const unsigned char *buf, size_t len, struct npy_header *h)
{
    struct lit_parser p = {0};
    uint64_t off;
    uint32_t root;

    memset(h, 0, sizeof(*h));
    int ret = npy_prefix(buf, len, &off);
    if (ret)
        return ret == -EAGAIN ? -EINVAL : ret; /* a buffer cut short */
    if (len < off)
        return -EINVAL;
    h->major = buf[6];
    h->minor = buf[7];
    h->data_offset = off;
    h->header_len = off - (h->major == 1 ? 10 : 12);

    p.s = buf + (h->major == 1 ? 10 : 12);
    p.len = (uint32_t)h->header_len; /* <= NPY_HEADER_MAX */
    ret = lit_parse(&p, &root);
    if (ret == 0)
        ret = read_header(&p, &p.nodes[root], h);
    free(p.nodes);
    if (ret)
        npy_header_destroy(h);
    return ret;
}

/* Contract in npy.h. */
void npy_header_destroy(struct npy_header *h)
{
    if (!h)
        return;
    free(h->descr);
    memset(h, 0, sizeof(*h));
}

/* Contract in npy.h. npy_parse() reads data_offset bytes only, so parsing
 * whatever buf holds gives what parsing exactly those bytes would. */
int npy_read_header(int64_t (*read)(void *arg, unsigned char *buf, size_t len), void *arg,
                    unsigned char *buf, size_t *got, struct npy_header *h)
{
    uint64_t doff;
    int64_t n;

    *got = 0;
    memset(h, 0, sizeof(*h));
    n = read(arg, buf, NPY_PREFIX_LEN);
    if (n < 0)
        return (int)n;
    *got = (size_t)n;
    if (npy_prefix(buf, *got, &doff) < 0 || doff > NPY_HEADER_MAX + NPY_PREFIX_LEN)
        return 0;
    if (doff > *got) {
        n = read(arg, buf, (size_t)doff);
        if (n < 0)
            return (int)n;
        *got = (size_t)n;
    }
    return npy_parse(buf, *got, h) == 0;
}

static void put_str(char *out, size_t size, size_t *pos, const char *s)
{
    for (; *s; s++, (*pos)++)
        if (*pos + 1 < size)
            out[*pos] = *s;
}

/* Contract in npy.h. */
int npy_format_shape(const struct npy_header *h, char *out, size_t size)
{
    char num[24];
    size_t pos = 0;

    put_str(out, size, &pos, "(");
    for (int i = 0; i < h->ndim; i++) {
        snprintf(num, sizeof(num), "%s%" PRIu64, i ? ", " : "", h->shape[i]);
        put_str(out, size, &pos, num);
    }
    put_str(out, size, &pos, h->ndim == 1 ? ",)" : ")");
    if (size)
        out[pos < size ? pos : size - 1] = '\0';
    return (int)pos;
}
