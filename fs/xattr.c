/*
 * Extended attributes: what `npyfs ls` shows, readable without Python
 * (`getfattr -d FILE`). Contract in xattr.h.
 *
 * An array file has user.npy.dtype, user.npy.shape and user.npy.fortran_order
 * from its .npy header, and user.npyfs.method and user.npyfs.stored_size from
 * the archive; a member that is not a parseable .npy has only the latter two.
 * The mount root has user.npyfs.stats (the text `npyfs stats` prints) and
 * user.npyfs.stats.json (`npyfs stats --json`), which is not listed so that
 * `getfattr -d` on the root shows the stats once. The names are in the user
 * namespace because `getfattr -d` dumps only that one.
 *
 * A member's header is parsed on the first request that needs it and kept in
 * m->meta: a struct archive_meta published once with compare-exchange (the loser
 * of a race frees its copy), immutable afterwards, freed with the member.
 * A read error is not cached, so a later request tries again.
 */
#define _GNU_SOURCE

#include "xattr.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "archive.h"
#include "escape.h"
#include "member.h"
#include "npy.h"
#include "stats.h"

static size_t escape_descr_latin1(char *out, size_t size, const char *s, size_t len)
{
    return escape_text(out, size, s, len, true);
}

/* Linux refuses xattr values above XATTR_SIZE_MAX (64 KiB). */
#define XATTR_VALUE_MAX 65536
/* The stats text changes between a size query and the read that follows it:
 * a size query gets this much room on top of the current length. */
#define STATS_SLACK 4096

enum attr {
    ATTR_DTYPE,
    ATTR_SHAPE,
    ATTR_FORTRAN,
    ATTR_METHOD,
    ATTR_STORED_SIZE,
    ATTR_STATS,
    ATTR_STATS_JSON,
    ATTR_COUNT
};

static const char *const attr_names[ATTR_COUNT] = {
    [ATTR_DTYPE] = "user.npy.dtype",
    [ATTR_SHAPE] = "user.npy.shape",
    [ATTR_FORTRAN] = "user.npy.fortran_order",
    [ATTR_METHOD] = "user.npyfs.method",
    [ATTR_STORED_SIZE] = "user.npyfs.stored_size",
    [ATTR_STATS] = "user.npyfs.stats",
    [ATTR_STATS_JSON] = "user.npyfs.stats.json",
};

/* Parse m's header into a new archive_meta. A member without a .npy header gives
 * is_npy false; only a failure to read its bytes is an error (-EIO). */
static int meta_build(struct archive *a, struct archive_member *m, struct archive_meta **out)
{
    struct archive_meta *meta;
    struct npy_header h = {0};
    unsigned char *buf = NULL;
    int ret = 0, len;
    size_t dlen, tlen = 0, got;
    char *type = NULL;

    *out = NULL;
    ret = archive_locate(a, m); /* a remote zip's local header, first time */
    if (ret < 0)
        return ret == -ENOMEM ? -ENOMEM : -EIO;
    meta = calloc(1, sizeof(*meta));
    if (!meta)
        return -ENOMEM;
    if (m->is_dir || m->unsupported)
        goto out_done; /* no bytes to read: not an array */
    buf = malloc(NPY_HEADER_MAX + NPY_PREFIX_LEN);
    if (!buf) {
        ret = -ENOMEM;
        goto out_free;
    }
    ret = npy_read_header(member_prefix_read, &(struct member_ref){a, m}, buf, &got, &h);
    if (ret < 0) {
        ret = ret == -ENOMEM ? -ENOMEM : -EIO;
        goto out_free;
    }
    if (ret == 0)
        goto out_done;
    len = npy_format_shape(&h, NULL, 0);
    ret = npy_dtype_string(&h, &type, &tlen);
    if (ret == 0) {
        /* a type string as is, <f8, escaped like `ls` (\\, \xHH) */
        dlen = escape_text(NULL, 0, type, tlen, false);
        meta->dtype = malloc(dlen + 1);
        if (meta->dtype)
            escape_text(meta->dtype, dlen + 1, type, tlen, false);
    } else if (ret == -EINVAL) {
        /* a struct as the header's descr, bytes outside printable ASCII as
         * \xHH (latin-1, versions 1 and 2) or UTF-8 as \uXXXX (version 3):
         * the value stays the same Python literal (a control byte can only
         * sit inside a string in it) */
        size_t (*esc)(char *, size_t, const char *, size_t) =
            h.major == 3 ? escape_descr_utf8 : escape_descr_latin1;
        dlen = esc(NULL, 0, h.descr, strlen(h.descr));
        meta->dtype = malloc(dlen + 1);
        if (meta->dtype)
            esc(meta->dtype, dlen + 1, h.descr, strlen(h.descr));
    }
    ret = 0;
    meta->shape = malloc((size_t)len + 1);
    if (!meta->dtype || !meta->shape) {
        ret = -ENOMEM;
        goto out_free;
    }
    npy_format_shape(&h, meta->shape, (size_t)len + 1);
    meta->fortran_order = h.fortran_order;
    meta->is_npy = true;
out_done:
    npy_header_destroy(&h);
    free(buf);
    free(type);
    *out = meta;
    return 0;
out_free:
    npy_header_destroy(&h);
    free(buf);
    free(type);
    archive_meta_free(meta);
    return ret;
}

/* m's parsed header, built on first use. Returns 0 or a negative errno. */
static int meta_get(struct archive *a, struct archive_member *m, struct archive_meta **out)
{
    struct archive_meta *meta = atomic_load(&m->meta), *expected = NULL;
    int ret;

    if (meta) {
        *out = meta;
        return 0;
    }
    ret = archive_check(a);
    if (ret < 0)
        return ret;
    ret = meta_build(a, m, &meta);
    if (ret < 0)
        return ret;
    if (!atomic_compare_exchange_strong(&m->meta, &expected, meta)) {
        archive_meta_free(meta); /* another request published first */
        meta = expected;
    }
    *out = meta;
    return 0;
}

/* Copy value (len bytes, no NUL) out under getxattr(2) rules. */
static long reply_value(const char *value, size_t len, char *buf, size_t size)
{
    if (len > XATTR_VALUE_MAX)
        return -E2BIG;
    if (size == 0)
        return (long)len;
    if (len > size)
        return -ERANGE;
    memcpy(buf, value, len);
    return (long)len;
}

static long get_stats(struct mount_ctx *ctx, bool json, char *buf, size_t size)
{
    char *text = malloc(XATTR_VALUE_MAX);
    size_t len;
    long ret;

    if (!text)
        return -ENOMEM;
    len = stats_format(ctx, json, text, XATTR_VALUE_MAX);
    if (size == 0) /* room for counters that grow before the read */
        ret = (long)(len + STATS_SLACK < XATTR_VALUE_MAX ? len + STATS_SLACK : XATTR_VALUE_MAX);
    else
        ret = reply_value(text, len, buf, size);
    free(text);
    return ret;
}

static enum attr find_attr(const char *name)
{
    for (int i = 0; i < ATTR_COUNT; i++)
        if (strcmp(name, attr_names[i]) == 0)
            return (enum attr)i;
    return ATTR_COUNT;
}

static long get_member_attr(struct archive *a, struct archive_member *m, enum attr which,
                            char *buf, size_t size)
{
    struct archive_meta *meta;
    char num[24];
    const char *v;
    int ret;

    switch (which) {
    case ATTR_METHOD:
        return reply_value(m->method, strlen(m->method), buf, size);
    case ATTR_STORED_SIZE:
        ret = snprintf(num, sizeof(num), "%" PRIu64, m->stored_size);
        return reply_value(num, (size_t)ret, buf, size);
    case ATTR_DTYPE:
    case ATTR_SHAPE:
    case ATTR_FORTRAN:
        break;
    default:
        return -ENODATA;
    }
    ret = meta_get(a, m, &meta);
    if (ret < 0)
        return ret == -ENOMEM ? -ENOMEM : -EIO;
    if (!meta->is_npy)
        return -ENODATA;
    v = which == ATTR_DTYPE   ? meta->dtype
        : which == ATTR_SHAPE ? meta->shape
        : meta->fortran_order ? "True"
                              : "False";
    return reply_value(v, strlen(v), buf, size);
}

/* Contract in xattr.h. */
long xattr_get(struct mount_ctx *ctx, struct archive *a, struct archive_member *m,
                  const char *name, char *buf, size_t size)
{
    enum attr which = find_attr(name);

    if (which == ATTR_COUNT)
        return -ENODATA;
    if (m)
        return get_member_attr(a, m, which, buf, size);
    if (a) /* a directory other than the root */
        return -ENODATA;
    if (which == ATTR_STATS || which == ATTR_STATS_JSON)
        return get_stats(ctx, which == ATTR_STATS_JSON, buf, size);
    return -ENODATA;
}

/* Append names[first..last] as a listxattr(2) list. */
static long list_names(enum attr first, enum attr last, size_t have, char *buf, size_t size)
{
    size_t len = have;

    for (int i = first; i <= (int)last; i++) {
        size_t n = strlen(attr_names[i]) + 1;
        if (size && len + n > size)
            return -ERANGE;
        if (size)
            memcpy(buf + len, attr_names[i], n);
        len += n;
    }
    return (long)len;
}

/* Contract in xattr.h. A member whose header cannot be read lists only its
 * user.npyfs.* names: listing stays useful on a damaged member. */
long xattr_list(struct mount_ctx *ctx, struct archive *a, struct archive_member *m, char *buf,
                   size_t size)
{
    struct archive_meta *meta;
    long len = 0;

    (void)ctx;
    if (!m)
        return a ? 0 : list_names(ATTR_STATS, ATTR_STATS, 0, buf, size);
    if (meta_get(a, m, &meta) == 0 && meta->is_npy) {
        len = list_names(ATTR_DTYPE, ATTR_FORTRAN, 0, buf, size);
        if (len < 0)
            return len;
    }
    return list_names(ATTR_METHOD, ATTR_STORED_SIZE, (size_t)len, buf, size);
}
