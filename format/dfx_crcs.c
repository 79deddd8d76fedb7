/*
 * Chunk CRC tables. Contract in dfx_crcs.h.
 */
#include "dfx_crcs.h"

#include <errno.h>
#include <stdlib.h>
#include <zlib.h>

#include "dfx_isal.h"

/* Contract in dfx_crcs.h. */
int dfx_crcs_new(uint64_t size, uint32_t chunk, struct dfx_crcs **out)
{
    uint64_t count;
    struct dfx_crcs *t;

    *out = NULL;
    if (chunk == 0)
        return -EINVAL;
    count = size / chunk + (size % chunk != 0);
    if (count > (SIZE_MAX - sizeof(*t)) / sizeof(t->crc[0]))
        return -EINVAL;
    t = calloc(1, sizeof(*t) + (size_t)count * sizeof(t->crc[0]));
    if (!t)
        return -ENOMEM;
    t->size = size;
    t->count = count;
    t->chunk = chunk;
    *out = t;
    return 0;
}

/* Contract in dfx_crcs.h. A chunk's CRC starts at 0, the CRC of nothing,
 * so each piece just continues it. */
void dfx_crcs_feed(struct dfx_crcs *t, uint64_t off, const void *buf, size_t len)
{
    const unsigned char *p = buf;

    while (len && off < t->size) {
        uint64_t i = off / t->chunk;
        uint64_t room = (i + 1) * t->chunk - off;
        size_t n = len < room ? len : (size_t)room;

        t->crc[i] = dfx_isal_crc32(t->crc[i], p, n);
        p += n;
        off += n;
        len -= n;
    }
}

/* Contract in dfx_crcs.h. */
uint32_t dfx_crcs_of(const void *buf, size_t len)
{
    return dfx_isal_crc32(0, buf, len);
}

/* Contract in dfx_crcs.h. */
uint32_t dfx_crcs_whole(const struct dfx_crcs *t)
{
    uLong crc = 0;

    for (uint64_t i = 0; i < t->count; i++) {
        uint64_t len = i + 1 < t->count ? t->chunk : t->size - i * t->chunk;
        crc = crc32_combine(crc, t->crc[i], (z_off_t)len);
    }
    return (uint32_t)crc;
}
