/*
 * Deflate history windows. Contract in window.h.
 */
#include "window.h"

#include <errno.h>
#include <stdlib.h>
#include <zlib.h>

/* zlib level for windows: 1 is ~3x faster than 6 and only a little larger. */
#define WINDOW_ZLEVEL 1

/* Contract in window.h. */
int window_deflate(const unsigned char *raw, uint32_t len, unsigned char **z, uint32_t *zlen)
{
    uLongf cap = compressBound(len);
    unsigned char *buf, *shrunk;
    int ret;

    *z = NULL;
    *zlen = 0;
    if (len == 0 || len > WINDOW_SIZE)
        return -EINVAL;
    buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    ret = compress2(buf, &cap, raw, len, WINDOW_ZLEVEL);
    if (ret != Z_OK) {
        free(buf);
        return ret == Z_MEM_ERROR ? -ENOMEM : -EINVAL;
    }
    shrunk = realloc(buf, cap);
    *z = shrunk ? shrunk : buf;
    *zlen = (uint32_t)cap;
    return 0;
}

/* Contract in window.h. */
int window_inflate(const unsigned char *z, uint32_t zlen, unsigned char *raw, uint32_t len)
{
    uLongf got = len;

    if (uncompress(raw, &got, z, zlen) != Z_OK || got != len)
        return -EIO;
    return 0;
}
