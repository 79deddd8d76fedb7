/*
 * ISA-L inflate for dfx.c. Contract in dfx_isal.h.
 *
 * A thin wrapper over ISA-L's stateful isal_inflate() in raw deflate mode
 * (crc_flag ISAL_DEFLATE: no header, trailer or checksum; dfx.c walks the
 * gzip framing and computes the CRC itself, since a member's CRC spans both
 * engines). Two things the stock API has no call for:
 *
 * - Starting mid-stream at a bit position: ISA-L's bit buffer (read_in, with
 *   read_in_length valid bits, least significant first) is primed with the
 *   unread top bits of the byte before the point, as zlib's inflatePrime()
 *   does. This is only valid on a fresh state, before the first call.
 * - Where the stream ended: ISA-L loads input into its 64-bit bit buffer
 *   ahead of need, so after the final block next_in can be past the end of
 *   the deflate data. The bits still buffered then are the final byte's
 *   padding (< 8) plus whole read-ahead bytes: read_in_length / 8 of them
 *   belong to whatever follows (a gzip trailer).
 */
#include "dfx_isal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#ifdef NPYFS_HAVE_ISAL
#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>
#endif

/* Contract in dfx_isal.h. */
bool dfx_isal_enabled(enum dfx_decoder d)
{
#ifdef NPYFS_HAVE_ISAL
    const char *env;

    if (d != DFX_DECODER_AUTO)
        return d == DFX_DECODER_ISAL;
    env = getenv("NPYFS_DECODER");
    return !env || strcmp(env, "zlib") != 0;
#else
    (void)d;
    return false;
#endif
}

#ifdef NPYFS_HAVE_ISAL

struct dfx_isal {
    struct inflate_state st; /* ~87 KiB: two windows of output plus Huffman tables */
};

/* Contract in dfx_isal.h. */
int dfx_isal_new(struct dfx_isal **out)
{
    *out = malloc(sizeof(**out));
    if (!*out)
        return -ENOMEM;
    isal_inflate_init(&(*out)->st);
    return 0;
}

/* Contract in dfx_isal.h. */
void dfx_isal_free(struct dfx_isal *d)
{
    free(d);
}

/* Contract in dfx_isal.h. */
int dfx_isal_start(struct dfx_isal *d, int bits, unsigned char prev, const unsigned char *window,
                   uint32_t window_len)
{
    struct inflate_state *st = &d->st;

    if (bits < 0 || bits > 7 || window_len > DFX_WINDOW_SIZE || (window_len && !window))
        return -EINVAL;
    isal_inflate_init(st);
    st->crc_flag = ISAL_DEFLATE;
    /* set_dict only accepts a state at ISAL_BLOCK_NEW_HDR, as init leaves it;
     * it copies the bytes (the const is cast away for ISA-L's prototype). */
    if (window_len && isal_inflate_set_dict(st, (uint8_t *)window, window_len) != ISAL_DECOMP_OK)
        return -EINVAL;
    st->read_in = bits ? (uint64_t)(prev >> (8 - bits)) : 0;
    st->read_in_length = bits;
    return 0;
}

/* Contract in dfx_isal.h. */
int dfx_isal_inflate(struct dfx_isal *d, unsigned char **next_in, unsigned int *avail_in,
                     unsigned char **next_out, unsigned int *avail_out)
{
    struct inflate_state *st = &d->st;
    int ret;

    st->next_in = *next_in;
    st->avail_in = *avail_in;
    st->next_out = *next_out;
    st->avail_out = *avail_out;
    ret = isal_inflate(st);
    *next_in = st->next_in;
    *avail_in = st->avail_in;
    *next_out = st->next_out;
    *avail_out = st->avail_out;
    /* isal_inflate() folds ISAL_END_INPUT and ISAL_OUT_OVERFLOW into
     * ISAL_DECOMP_OK; what is left is damage: ISAL_INVALID_BLOCK, _SYMBOL,
     * _LOOKBACK (and, in modes we don't use, wrapper and checksum errors). */
    if (ret != ISAL_DECOMP_OK)
        return -EIO;
    return st->block_state == ISAL_BLOCK_FINISH ? DFX_ISAL_END : 0;
}

/* Contract in dfx_isal.h. */
unsigned int dfx_isal_unused(const struct dfx_isal *d)
{
    const struct inflate_state *st = &d->st;

    if (st->block_state != ISAL_BLOCK_FINISH || st->read_in_length <= 0)
        return 0;
    return (unsigned int)st->read_in_length / 8;
}

/* Contract in dfx_isal.h. Same convention as zlib: seed 0, pre- and
 * post-inverted inside, so results chain across calls. */
uint32_t dfx_isal_crc32(uint32_t crc, const unsigned char *buf, size_t len)
{
    return len ? crc32_gzip_refl(crc, buf, len) : crc;
}

#else /* !NPYFS_HAVE_ISAL */

int dfx_isal_new(struct dfx_isal **out)
{
    *out = NULL;
    return -EOPNOTSUPP;
}

void dfx_isal_free(struct dfx_isal *d)
{
    (void)d;
}

int dfx_isal_start(struct dfx_isal *d, int bits, unsigned char prev, const unsigned char *window,
                   uint32_t window_len)
{
    (void)d, (void)bits, (void)prev, (void)window, (void)window_len;
    return -EOPNOTSUPP;
}

int dfx_isal_inflate(struct dfx_isal *d, unsigned char **next_in, unsigned int *avail_in,
                     unsigned char **next_out, unsigned int *avail_out)
{
    (void)d, (void)next_in, (void)avail_in, (void)next_out, (void)avail_out;
    return -EOPNOTSUPP;
}

unsigned int dfx_isal_unused(const struct dfx_isal *d)
{
    (void)d;
    return 0;
}

uint32_t dfx_isal_crc32(uint32_t crc, const unsigned char *buf, size_t len)
{
    /* zlib's length is a uInt: feed it in pieces. */
    while (len) {
        uInt n = len > (1u << 30) ? (1u << 30) : (uInt)len;
        crc = (uint32_t)crc32(crc, buf, n);
        buf += n;
        len -= n;
    }
    return crc;
}

#endif
