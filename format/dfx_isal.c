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
 *
 * Marking (dfx_isal_inflate_mark()) needs the decoder to stop on a block
 * boundary, which isal_inflate() does by itself only at the end of the
 * stream: after the end-of-block code of a block whose BFINAL bit is set it
 * decodes no further (block_state ISAL_BLOCK_INPUT_DONE, ISAL_BLOCK_FINISH
 * once all output is out), with the bits it took ahead in its bit buffer.
 * So while a search runs, ISA-L is told that the block it is in is the last
 * one: each call inside a block that is not (block_state ISAL_BLOCK_CODED or
 * ISAL_BLOCK_TYPE0, bfinal 0) runs with bfinal set, and bfinal is put back
 * after a call that did not reach the block's end. (In ISA-L 2.2x-2.31,
 * bfinal is set by read_header() from the block's header and read only at
 * the block's end, in decode_literal_block() and the Huffman decoders; in
 * raw deflate mode nothing else looks at it.) A call that did reach it
 * stands on the boundary after the block, having taken every input byte up
 * to our offset `in`, so the boundary's bit offset is
 *
 *     8 * in - read_in_length.
 *
 * Until its output is out the decoder stays as ISA-L left it (it only
 * hands out output then); after that it is started afresh there
 * (restart()), the way a reader starts at an access point: the window from
 * our ring, and the bits it took ahead left in its bit buffer. So a search
 * runs at full speed and stops at the first boundary at or past where it
 * starts, whatever the block types and header lengths.
 *
 * A header being read has no bfinal to set yet. Once a search has started,
 * the decoder reads one in pieces of `step` bytes, so that the block after
 * it can be decoded with bfinal set from early on; a piece that ends inside
 * the header stands on the boundary before it too. read_header_stateful()
 * in ISA-L's igzip_inflate.c (the same from 2.2x to 2.31), when the input
 * runs out inside a header, puts the bit buffer back as it was at the
 * header's start (read_in, read_in_length), keeps the header bytes it was
 * given in tmp_in_buffer (tmp_in_size), takes all the input and returns
 * with block_state ISAL_BLOCK_HDR; the boundary's bit offset is then
 *
 *     8 * in - 8 * tmp_in_size - read_in_length.
 *
 * The same holds with block_state ISAL_BLOCK_NEW_HDR (tmp_in_size 0). Either
 * way, output still waiting in tmp_out_buffer (tmp_out_valid >
 * tmp_out_processed) belongs before the boundary, so we only take one when
 * all output is out.
 *
 * The window is the output's last 32 KiB, which we keep ourselves (hist)
 * from 32 KiB before want on: the caller's buffers may be gone by then, and
 * ISA-L's own copy is an internal detail. The input's last bytes (tail) are
 * kept too, so that a boundary can be checked from the bytes alone: a second
 * ISA-L decoder (v) started at the mark with the window must agree with the
 * main one on the next DFX_ISAL_VERIFY_LEN bytes of output. Both decoders
 * read the same bytes, so only a wrong bit offset or window can make them
 * disagree.
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
#if defined(NPYFS_HAVE_ISAL) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_CLEAR_UPPER 1
#endif

/* Contract in dfx_isal.h. */
bool dfx_isal_built(void)
{
#ifdef NPYFS_HAVE_ISAL
    return true;
#else
    return false;
#endif
}

#ifdef NPYFS_HAVE_ISAL

#ifdef HAVE_CLEAR_UPPER
__attribute__((target("avx"))) static void vzeroupper(void)
{
    _mm256_zeroupper();
}
#endif

/* Call after ISA-L code that may have used 256/512-bit registers. ISA-L's
 * AVX-512 routines can return with the registers' upper halves dirty
 * (crc32_gzip_refl_by16_10 in 2.30 has no vzeroupper), and from then on
 * every SSE instruction the compiler put in our code (or zlib's) pays a
 * transition penalty: measured on marking, which alternates ISA-L calls
 * with our code ~700 times per access point, that cost 0.07 s for 320 MB
 * at 256 KiB spacing. Does nothing without AVX, where nothing can be dirty. */
static void clear_upper(void)
{
#ifdef HAVE_CLEAR_UPPER
    if (__builtin_cpu_supports("avx"))
        vzeroupper();
#endif
}

/* Input bytes kept for checking a boundary: more than ISA-L can hold when
 * it stops in a header (8 bytes read ahead + ISAL_DEF_MAX_HDR_SIZE) + 1. */
#define TAIL_SIZE 1024u
#define HIST_SIZE WINDOW_SIZE

/* What marking needs, allocated by the first dfx_isal_inflate_mark(). */
struct mark_state {
    /* Output [hist_end - hist_len, hist_end), a ring: byte at offset o is at
     * hist[o % HIST_SIZE]. hist_from_origin: it starts at an origin without
     * history, so a shorter window is whole. */
    unsigned char hist[HIST_SIZE];
    uint64_t hist_end;
    uint32_t hist_len;
    bool hist_from_origin;
    /* Input [tail_end - tail_len, tail_end), linear in tail[0, tail_len). */
    unsigned char tail[2 * TAIL_SIZE];
    uint64_t tail_end;
    uint32_t tail_len;
    /* The search: for which want, input stepped so far, given up. */
    uint64_t want;
    uint64_t stepped;
    bool gave_up;
    /* The main decoder stopped at a block's end under a forced bfinal and
     * waits, as ISA-L left it, to hand out its output and be restarted. */
    bool stopped;
    /* The last boundary found (pm, its window win); pending while checked. */
    struct dfx_isal_mark pm;
    bool have_pm, pending;
    unsigned char win[HIST_SIZE];
    /* The check: v decodes from pm (input offset v_in next) into vbuf;
     * the main output after pm.out goes to mbuf. */
    struct inflate_state *v; /* owned while a boundary is pending, else NULL */
    uint64_t v_in;
    uint32_t vlen;
    bool vend, vfail;
    unsigned char vbuf[DFX_ISAL_VERIFY_LEN];
    unsigned char mbuf[DFX_ISAL_VERIFY_LEN];
};

struct dfx_isal {
    struct inflate_state st; /* first: ~87 KiB: two windows of output plus Huffman tables */
    /* Offsets from dfx_isal_start_at()'s origin: next output byte, next input
     * byte ISA-L has not taken. */
    uint64_t out, in;
    uint64_t origin_out, origin_in;
    uint32_t origin_wlen;
    int origin_bits;
    unsigned char origin_prev;
    /* Tuning, kept across starts. */
    unsigned int step;
    bool verify;
    int skew;            /* dfx_isal_test_skew() */
    uint64_t skew_from;
    bool broken; /* a check failed: never mark again */
    struct dfx_isal_stats stats;
    struct mark_state *m; /* owned, NULL until marking starts */
};

/* Contract in dfx_isal.h. */
int dfx_isal_new(struct dfx_isal **out)
{
    /* ISA-L's state is ~87 KiB, mostly buffers that need no zeroing (a
     * reader is made for every random read): only our own fields are
     * cleared, and isal_inflate_init() sets ISA-L's. */
    *out = malloc(sizeof(**out));
    if (!*out)
        return -ENOMEM;
    memset((char *)*out + sizeof((*out)->st), 0, sizeof(**out) - sizeof((*out)->st));
    isal_inflate_init(&(*out)->st);
    (*out)->step = DFX_ISAL_STEP;
    (*out)->verify = true;
    return 0;
}

/* Contract in dfx_isal.h. */
void dfx_isal_free(struct dfx_isal *d)
{
    if (d && d->m)
        free(d->m->v);
    if (d)
        free(d->m);
    free(d);
}

/* No boundary is being checked any more: the checker goes (~87 KiB, so a
 * reader between marks keeps only the rings). */
static void unpend(struct mark_state *m)
{
    m->pending = false;
    free(m->v);
    m->v = NULL;
}

/* Forget the rings and any boundary: they belong to the old position. */
static void mark_reset(struct dfx_isal *d)
{
    struct mark_state *m = d->m;

    if (!m)
        return;
    m->hist_end = d->out;
    m->hist_len = 0;
    m->hist_from_origin = d->out == d->origin_out && d->origin_wlen == 0;
    m->tail_end = d->in;
    m->tail_len = 0;
    if (d->in == d->origin_in && d->origin_bits) {
        m->tail[0] = d->origin_prev;
        m->tail_len = 1;
    }
    m->want = UINT64_MAX;
    m->stepped = 0;
    m->gave_up = false;
    m->stopped = false;
    m->have_pm = false;
    unpend(m);
}

/* Contract in dfx_isal.h. */
int dfx_isal_start(struct dfx_isal *d, int bits, unsigned char prev, const unsigned char *window,
                   uint32_t window_len)
{
    return dfx_isal_start_at(d, 0, 0, bits, prev, window, window_len);
}

/* Contract in dfx_isal.h. */
int dfx_isal_start_at(struct dfx_isal *d, uint64_t out, uint64_t in, int bits, unsigned char prev,
                      const unsigned char *window, uint32_t window_len)
{
    struct inflate_state *st = &d->st;

    if (bits < 0 || bits > 7 || window_len > WINDOW_SIZE || (window_len && !window))
        return -EINVAL;
    isal_inflate_init(st);
    st->crc_flag = ISAL_DEFLATE;
    /* set_dict only accepts a state at ISAL_BLOCK_NEW_HDR, as init leaves it;
     * it copies the bytes (the const is cast away for ISA-L's prototype). */
    if (window_len && isal_inflate_set_dict(st, (uint8_t *)window, window_len) != ISAL_DECOMP_OK)
        return -EINVAL;
    st->read_in = bits ? (uint64_t)(prev >> (8 - bits)) : 0;
    st->read_in_length = bits;
    d->out = d->origin_out = out;
    d->in = d->origin_in = in;
    d->origin_wlen = window_len;
    d->origin_bits = bits;
    d->origin_prev = prev;
    mark_reset(d);
    return 0;
}

/* One isal_inflate() call on st from *next_in/avail_in into
 * *next_out/avail_out (advanced), with d's offsets kept. Returns ISA-L's
 * code; *took and *made: input taken, output made. */
static int call(struct dfx_isal *d, struct inflate_state *st, unsigned char **next_in,
                unsigned int avail_in, unsigned char **next_out, unsigned int avail_out,
                size_t *took, size_t *made)
{
    int ret;

    st->next_in = *next_in;
    st->avail_in = avail_in;
    st->next_out = *next_out;
    st->avail_out = avail_out;
    ret = isal_inflate(st);
    clear_upper();
    *took = (size_t)(st->next_in - *next_in);
    *made = (size_t)(st->next_out - *next_out);
    *next_in = st->next_in;
    *next_out = st->next_out;
    if (st == &d->st) {
        d->in += *took;
        d->out += *made;
    }
    return ret;
}

static void plain_call(struct dfx_isal *d, const unsigned char *in, size_t took,
                       const unsigned char *out, size_t made);

/* Contract in dfx_isal.h. */
int dfx_isal_inflate(struct dfx_isal *d, unsigned char **next_in, unsigned int *avail_in,
                     unsigned char **next_out, unsigned int *avail_out)
{
    struct inflate_state *st = &d->st;
    unsigned char *in0 = *next_in, *out0 = *next_out;
    size_t took, made;
    int ret;

    ret = call(d, st, next_in, *avail_in, next_out, *avail_out, &took, &made);
    *avail_in -= (unsigned int)took;
    *avail_out -= (unsigned int)made;
    if (d->m)
        plain_call(d, in0, took, out0, made);
    /* isal_inflate() folds ISAL_END_INPUT and ISAL_OUT_OVERFLOW into
     * ISAL_DECOMP_OK; what is left is damage: ISAL_INVALID_BLOCK, _SYMBOL,
     * _LOOKBACK (and, in modes we don't use, wrapper and checksum errors). */
    if (ret != ISAL_DECOMP_OK)
        return -EIO;
    return st->block_state == ISAL_BLOCK_FINISH ? DFX_ISAL_END : 0;
}

/* The marking buffers, allocated once per decoder. */
static int mark_state(struct dfx_isal *d)
{
    if (d->m)
        return 0;
    d->m = malloc(sizeof(*d->m));
    if (!d->m)
        return -ENOMEM;
    d->m->v = NULL;
    mark_reset(d);
    return 0;
}

/* Keep the last TAIL_SIZE bytes of the n input bytes at p (offset at). */
static void tail_add(struct mark_state *m, uint64_t at, const unsigned char *p, size_t n)
{
    if (!n)
        return;
    if (at != m->tail_end)
        m->tail_len = 0;
    m->tail_end = at + n;
    if (n >= TAIL_SIZE) {
        memcpy(m->tail, p + n - TAIL_SIZE, TAIL_SIZE);
        m->tail_len = TAIL_SIZE;
        return;
    }
    if (m->tail_len + n > sizeof(m->tail)) {
        uint32_t drop = m->tail_len + (uint32_t)n - TAIL_SIZE;

        memmove(m->tail, m->tail + drop, m->tail_len - drop);
        m->tail_len -= drop;
    }
    memcpy(m->tail + m->tail_len, p, n);
    m->tail_len += (uint32_t)n;
}

/* Append the n output bytes at p (offset at) to the history ring. */
static void hist_add(struct dfx_isal *d, uint64_t at, const unsigned char *p, size_t n)
{
    struct mark_state *m = d->m;
    size_t idx, first;

    if (!n)
        return;
    if (at != m->hist_end) {
        m->hist_len = 0;
        m->hist_from_origin = at == d->origin_out && d->origin_wlen == 0;
    }
    if (n > HIST_SIZE) {
        p += n - HIST_SIZE;
        at += n - HIST_SIZE;
        n -= n - HIST_SIZE;
    }
    idx = (size_t)(at % HIST_SIZE);
    first = n < HIST_SIZE - idx ? n : HIST_SIZE - idx;
    memcpy(m->hist + idx, p, first);
    memcpy(m->hist, p + first, n - first);
    m->hist_end = at + n;
    m->hist_len = m->hist_len + n > HIST_SIZE ? HIST_SIZE : m->hist_len + (uint32_t)n;
}

/* The first output offset at which a boundary can be taken for want: the
 * history ring must hold the whole window by then. */
static uint64_t search_from(const struct dfx_isal *d, uint64_t want)
{
    const struct mark_state *m = d->m;
    uint64_t start = d->out; /* where the ring's contiguous run starts, or will */

    if (m->hist_end == d->out) {
        if (m->hist_from_origin)
            return want;
        start = m->hist_end - m->hist_len;
    }
    return want > start + HIST_SIZE ? want : start + HIST_SIZE;
}

/* Input to offer ISA-L for a call that needs only room more bytes of
 * output (to end short of where a search starts, or to fill a check).
 * Given all of it, ISA-L would decode up to ~32 KiB past the room into its
 * own buffer (it does when ours is short), passing over the boundaries
 * there: offer about the input that room takes at the stream's rate so
 * far, and a little more. Too little only costs another call. */
static unsigned int approach_input(const struct dfx_isal *d, unsigned int room, unsigned int avail)
{
    uint64_t in = d->in - d->origin_in, out = d->out - d->origin_out, n;

    if (out < HIST_SIZE)
        return avail; /* no rate to go by yet */
    n = (uint64_t)room * in / out;
    n += n / 8 + 64;
    return n < avail ? (unsigned int)n : avail;
}

/* Does the ring hold the whole window before the main decoder's output
 * (the 32 KiB before it, or all of it since an origin without history)? */
static bool window_whole(const struct dfx_isal *d)
{
    const struct mark_state *m = d->m;

    return m->hist_end == d->out &&
           (m->hist_len == HIST_SIZE ||
            (m->hist_from_origin && m->hist_len == d->out - d->origin_out));
}

/* Copy the window (the ring's hist_len bytes, in order) to buf. */
static void window_copy(const struct mark_state *m, unsigned char *buf)
{
    uint64_t start = (m->hist_end - m->hist_len) % HIST_SIZE;

    if (start + m->hist_len <= HIST_SIZE) {
        memcpy(buf, m->hist + start, m->hist_len);
    } else {
        memcpy(buf, m->hist + start, HIST_SIZE - start);
        memcpy(buf + (HIST_SIZE - start), m->hist, m->hist_len - (HIST_SIZE - start));
    }
}

/* May the next call run with bfinal forced (see the top of the file)? The
 * decoder is inside a block that is not the last, and the ring holds the
 * window, which it keeps doing call after call: a restart will find it. */
static bool can_force(const struct dfx_isal *d)
{
    const struct inflate_state *st = &d->st;

    return (st->block_state == ISAL_BLOCK_CODED || st->block_state == ISAL_BLOCK_TYPE0) &&
           !st->bfinal && window_whole(d);
}

/* The main decoder stopped at a block's end under a forced bfinal and has
 * handed out all its output: start it afresh on that boundary, as a reader
 * starts at an access point, with the window from the ring and the bits
 * ISA-L took ahead of the boundary still in its bit buffer. */
static void restart(struct dfx_isal *d)
{
    struct inflate_state *st = &d->st;
    struct mark_state *m = d->m;
    uint64_t read_in = st->read_in;
    int32_t read_in_length = st->read_in_length;

    m->stopped = false;
    window_copy(m, m->win);
    isal_inflate_init(st);
    st->crc_flag = ISAL_DEFLATE;
    /* A fresh state at ISAL_BLOCK_NEW_HDR: set_dict cannot fail. */
    if (m->hist_len)
        isal_inflate_set_dict(st, m->win, m->hist_len);
    st->read_in = read_in;
    st->read_in_length = read_in_length;
    d->stats.stops++;
}

/* After a call while stopped: keep its output (it belongs before the
 * boundary) in the ring, and restart once it is all out. */
static void stopped_call(struct dfx_isal *d, const unsigned char *out, size_t made)
{
    hist_add(d, d->out - made, out, made);
    if (d->st.block_state == ISAL_BLOCK_FINISH)
        restart(d);
}

static void main_add(struct mark_state *m, uint64_t at, const unsigned char *p, size_t n);

/* After a dfx_isal_inflate() call (took input bytes at in, made output at
 * out) while marking is in a state it must see through: a decoder stopped
 * at a block's end goes on (that is no end of the stream), and a check
 * keeps the input and output it compares. Otherwise marking just loses
 * track (the rings have holes), which costs it the boundaries near. */
static void plain_call(struct dfx_isal *d, const unsigned char *in, size_t took,
                       const unsigned char *out, size_t made)
{
    struct mark_state *m = d->m;

    if (m->stopped)
        stopped_call(d, out, made);
    if (m->pending) {
        tail_add(m, d->in - took, in, took);
        main_add(m, d->out - made, out, made);
    }
}

/* If the decoder stands on a block boundary, make it d->m->pm (and its
 * window m->win). See the comment at the top of the file. */
static bool take_boundary(struct dfx_isal *d)
{
    const struct inflate_state *st = &d->st;
    struct mark_state *m = d->m;
    uint64_t held, bitpos, need;

    if (st->block_state != ISAL_BLOCK_NEW_HDR && st->block_state != ISAL_BLOCK_HDR)
        return false;
    if (st->tmp_out_valid != st->tmp_out_processed || st->write_overflow_len ||
        st->copy_overflow_length || st->read_in_length < 0 || st->tmp_in_size < 0)
        return false;
    /* Bits taken from the input but not yet used. */
    held = 8 * (uint64_t)st->tmp_in_size + (uint64_t)st->read_in_length;
    if (held > 8 * (d->in - d->origin_in) + (uint64_t)d->origin_bits)
        return false;
    bitpos = 8 * d->in - held;
    if (d->out >= d->skew_from)
        bitpos += (uint64_t)(int64_t)d->skew;
    m->pm.out = d->out;
    m->pm.in = (bitpos + 7) / 8;
    m->pm.bits = (int)(8 * m->pm.in - bitpos);
    /* The check needs the input from the byte holding the boundary on. */
    need = d->in - m->pm.in + (m->pm.bits ? 1 : 0);
    if (d->verify && (m->pm.in > d->in || m->tail_end != d->in || need > m->tail_len))
        return false;
    /* The window: the ring must hold it whole. */
    if (!window_whole(d))
        return false;
    m->pm.window_len = m->hist_len;
    window_copy(m, m->win);
    return true;
}

/* Decode n input bytes at p with the checking decoder, up to
 * DFX_ISAL_VERIFY_LEN bytes of output. Each call is offered about the
 * input the output still missing takes (approach_input()): given all of
 * it, ISA-L would decode ~32 KiB into its own buffer for the 4 KiB the
 * check compares, which was most of what a check cost. */
static void v_decode(struct dfx_isal *d, const unsigned char *p, size_t n)
{
    struct mark_state *m = d->m;
    struct inflate_state *v = m->v;
    bool all = false; /* the estimate was too short for any progress */

    while (n && m->vlen < DFX_ISAL_VERIFY_LEN && !m->vend && !m->vfail) {
        unsigned int avail = n > UINT32_MAX ? UINT32_MAX : (unsigned int)n;
        unsigned int give = all ? avail : approach_input(d, DFX_ISAL_VERIFY_LEN - m->vlen, avail);
        size_t took, made;
        int ret;

        v->next_in = (uint8_t *)p;
        v->avail_in = give;
        v->next_out = m->vbuf + m->vlen;
        v->avail_out = DFX_ISAL_VERIFY_LEN - m->vlen;
        ret = isal_inflate(v);
        clear_upper();
        took = (size_t)(v->next_in - p);
        made = (size_t)(v->next_out - (m->vbuf + m->vlen));
        p += took;
        n -= took;
        m->v_in += took;
        m->vlen += (uint32_t)made;
        if (ret != ISAL_DECOMP_OK)
            m->vfail = true;
        else if (v->block_state == ISAL_BLOCK_FINISH)
            m->vend = true;
        else if (!took && !made && give == avail)
            break;
        else if (!took && !made)
            all = true;
    }
}

/* Feed the checking decoder what input it can get: kept bytes first, then
 * the caller's next_in/avail_in (which start at offset d->in). False if it
 * needs bytes that are gone. */
static bool v_feed(struct dfx_isal *d, const unsigned char *next_in, unsigned int avail_in)
{
    struct mark_state *m = d->m;

    if (m->vlen == DFX_ISAL_VERIFY_LEN || m->vend || m->vfail)
        return true; /* it has all it needs */
    if (m->v_in < d->in) {
        uint64_t back = d->in - m->v_in;

        if (m->tail_end != d->in || back > m->tail_len)
            return false;
        v_decode(d, m->tail + (m->tail_len - back), (size_t)back);
    }
    if (m->v_in >= d->in && m->v_in - d->in < avail_in)
        v_decode(d, next_in + (m->v_in - d->in), (size_t)(avail_in - (m->v_in - d->in)));
    return true;
}

/* Start the checking decoder at m->pm, as a reader would start there, and
 * make the boundary pending. False if there is no memory for it. */
static bool v_start(struct dfx_isal *d)
{
    struct mark_state *m = d->m;
    struct inflate_state *v = malloc(sizeof(*v));

    if (!v)
        return false;
    m->v = v;
    m->pending = true;
    isal_inflate_init(v);
    v->crc_flag = ISAL_DEFLATE;
    m->vlen = 0;
    m->vend = m->vfail = false;
    m->v_in = m->pm.in;
    if (m->pm.window_len &&
        isal_inflate_set_dict(v, m->win, m->pm.window_len) != ISAL_DECOMP_OK)
        m->vfail = true;
    if (m->pm.bits) {
        /* take_boundary() made sure the tail holds byte pm.in - 1. */
        unsigned char prev = m->tail[m->tail_len - (d->in - (m->pm.in - 1))];

        v->read_in = (uint64_t)(prev >> (8 - m->pm.bits));
        v->read_in_length = m->pm.bits;
    }
    return true;
}

/* Keep the main decoder's output past the pending boundary, up to
 * DFX_ISAL_VERIFY_LEN bytes: the n bytes at p start at offset at. */
static void main_add(struct mark_state *m, uint64_t at, const unsigned char *p, size_t n)
{
    uint64_t have = at - m->pm.out;

    if (have >= DFX_ISAL_VERIFY_LEN)
        return;
    if (n > DFX_ISAL_VERIFY_LEN - have)
        n = (size_t)(DFX_ISAL_VERIFY_LEN - have);
    memcpy(m->mbuf + have, p, n);
}

/* Has the pending boundary passed its check? 1 yes, -1 no (the two
 * decoders disagree), 0 not yet. end: the main decoder is at the end. */
static int verdict(const struct dfx_isal *d, bool end)
{
    const struct mark_state *m = d->m;
    uint64_t after = d->out - m->pm.out;
    uint32_t have = after < DFX_ISAL_VERIFY_LEN ? (uint32_t)after : DFX_ISAL_VERIFY_LEN;
    uint32_t common = have < m->vlen ? have : m->vlen;

    if (m->vfail || memcmp(m->mbuf, m->vbuf, common) != 0)
        return -1;
    if (m->vend) {
        if (after > m->vlen)
            return -1;
        return end ? (after == m->vlen ? 1 : -1) : 0;
    }
    if (end && m->vlen > after)
        return -1;
    return have == DFX_ISAL_VERIFY_LEN && m->vlen == DFX_ISAL_VERIFY_LEN ? 1 : 0;
}

/* After each call with a boundary pending: settle it if we can. Returns
 * the result bits to add. */
static int settle(struct dfx_isal *d, bool end, const unsigned char *next_in,
                  unsigned int avail_in, struct dfx_isal_mark *mark)
{
    struct mark_state *m = d->m;
    int v = 0;

    if (!v_feed(d, next_in, avail_in)) {
        unpend(m);
        d->stats.unchecked++;
        return 0;
    }
    v = verdict(d, end);
    if (v > 0) {
        unpend(m);
        m->have_pm = true;
        m->gave_up = true; /* found: no more for this want */
        *mark = m->pm;
        d->stats.marks++;
        return DFX_ISAL_MARK;
    }
    if (v < 0) {
        unpend(m);
        d->broken = true;
        d->stats.rejected++;
        memset(mark, 0, sizeof(*mark));
        mark->out = d->out;
        return DFX_ISAL_NOMARK;
    }
    if (end) {
        unpend(m);
        d->stats.unchecked++;
    }
    return 0;
}

/* Contract in dfx_isal.h. */
int dfx_isal_inflate_mark(struct dfx_isal *d, unsigned char **next_in, unsigned int *avail_in,
                          unsigned char **next_out, unsigned int *avail_out, uint64_t want,
                          struct dfx_isal_mark *mark)
{
    struct inflate_state *st = &d->st;
    struct mark_state *m;
    int flags = 0, ret;

    ret = mark_state(d);
    if (ret < 0)
        return ret;
    m = d->m;
    m->have_pm = false;
    /* dfx_isal_inflate() calls since the last time: the rings have holes. */
    if (m->tail_end != d->in && m->pending) {
        unpend(m);
        d->stats.unchecked++;
    }
    if (want != m->want) {
        m->want = want;
        m->stepped = 0;
        m->gave_up = false;
    }
    while (!flags) {
        unsigned char *in0 = *next_in, *out0 = *next_out;
        unsigned int give = *avail_in, room = *avail_out;
        bool search = !m->pending && !m->gave_up && !d->broken;
        bool force = false, slow = false, end;
        uint64_t from = 0, lo = 0;
        enum isal_block_state state0 = st->block_state;
        size_t took, made;

        if (st->block_state == ISAL_BLOCK_FINISH)
            return flags | DFX_ISAL_END;
        if (!room)
            break;
        /* The checker reads the caller's input before we take it. */
        if (m->pending && !v_feed(d, *next_in, *avail_in)) {
            unpend(m);
            d->stats.unchecked++;
        }
        /* While a boundary is checked, stop DFX_ISAL_VERIFY_LEN bytes past
         * it: the mark is returned there, and the next search may need the
         * output that follows. */
        if (m->pending && d->out - m->pm.out < DFX_ISAL_VERIFY_LEN &&
            DFX_ISAL_VERIFY_LEN - (d->out - m->pm.out) < room)
            room = (unsigned int)(DFX_ISAL_VERIFY_LEN - (d->out - m->pm.out));
        if (search) {
            /* From from on, a boundary can be taken. The tail of every call
             * that ends past lo goes to the ring, which makes it whole by
             * from, whatever the calls' sizes. */
            from = search_from(d, want);
            lo = from > 2 * HIST_SIZE ? from - 2 * HIST_SIZE : 0;
        }
        if (m->stopped) {
            give = 0; /* at a block's end: only hand out output */
        } else if (search) {
            if (can_force(d)) {
                force = true; /* stops at the block's end: no limits */
            } else if (st->block_state == ISAL_BLOCK_HDR || st->block_state == ISAL_BLOCK_NEW_HDR) {
                /* Stopped in a header with output still held back (ISA-L
                 * decodes ahead into its own buffer when ours is short): let
                 * it hand that out without new input, which would carry it
                 * past the boundary. Else, within 32 KiB of from, read the
                 * header in steps, so that bfinal can be forced right after
                 * it (further back, the approach below stops short of it). */
                if (st->tmp_out_valid != st->tmp_out_processed) {
                    give = 0;
                } else if (d->out + HIST_SIZE >= from) {
                    slow = true;
                    give = give < d->step ? give : d->step;
                }
            }
            /* Until bfinal can be forced, decoding stops 32 KiB short of
             * from, where the window is whole (or at from if that is
             * closer). Output we have no room for yet counts: ISA-L
             * decodes ahead into its own buffer when ours is short, and
             * would pass over the boundaries past from there. */
            if (!force && !slow && d->out < from) {
                uint64_t to = from - d->out > HIST_SIZE ? from - HIST_SIZE : from;
                uint64_t at = d->out + (uint64_t)(st->tmp_out_valid - st->tmp_out_processed);

                if (to - d->out < room)
                    room = (unsigned int)(to - d->out);
                if (at >= to)
                    give = 0;
                else if (to - at < UINT32_MAX)
                    give = approach_input(d, (unsigned int)(to - at), give);
            }
        }
        if (force)
            st->bfinal = 1;
        ret = call(d, st, next_in, give, next_out, room, &took, &made);
        *avail_in -= (unsigned int)took;
        *avail_out -= (unsigned int)made;
        tail_add(m, d->in - took, in0, took);
        if (force && st->block_state != ISAL_BLOCK_INPUT_DONE &&
            st->block_state != ISAL_BLOCK_FINISH)
            st->bfinal = 0; /* the block goes on */
        else if (force)
            m->stopped = true;
        if (m->stopped)
            stopped_call(d, out0, made);
        else if (search && d->out > lo)
            hist_add(d, d->out - made, out0, made);
        if (m->pending)
            main_add(m, d->out - made, out0, made);
        if (slow) {
            d->stats.step_calls++;
            d->stats.step_bytes += took;
        }
        if (slow || force)
            m->stepped += took;
        if (ret != ISAL_DECOMP_OK) {
            unpend(m);
            return -EIO;
        }
        end = st->block_state == ISAL_BLOCK_FINISH;
        if (m->pending) {
            flags |= settle(d, end, *next_in, *avail_in, mark);
        } else if (search && d->out >= from && !end && take_boundary(d)) {
            if (d->verify) {
                if (v_start(d))
                    flags |= settle(d, end, *next_in, *avail_in, mark);
                else
                    d->stats.unchecked++;
            } else {
                m->have_pm = true;
                m->gave_up = true;
                *mark = m->pm;
                d->stats.marks++;
                flags |= DFX_ISAL_MARK;
            }
        } else if ((slow || force) && !m->stopped && m->stepped >= DFX_ISAL_SEARCH_MAX) {
            /* No block's end for that long: try smaller steps next time, in
             * case the headers were passed over. */
            if (d->step > DFX_ISAL_STEP_MIN)
                d->step /= 2;
            m->gave_up = true;
            d->stats.gave_up++;
            memset(mark, 0, sizeof(*mark));
            mark->out = d->out;
            flags |= DFX_ISAL_NOMARK;
        }
        if (end)
            flags |= DFX_ISAL_END;
        if (!took && !made && st->block_state == state0)
            break; /* needs input (or, with input left, the data is bad) */
    }
    return flags;
}

/* Contract in dfx_isal.h. */
uint32_t dfx_isal_mark_window(const struct dfx_isal *d, unsigned char *buf)
{
    if (!d->m || !d->m->have_pm)
        return 0;
    memcpy(buf, d->m->win, d->m->pm.window_len);
    return d->m->pm.window_len;
}

/* Contract in dfx_isal.h. */
void dfx_isal_set_verify(struct dfx_isal *d, bool on)
{
    d->verify = on;
}

/* Contract in dfx_isal.h. */
void dfx_isal_set_step(struct dfx_isal *d, unsigned int step)
{
    d->step = step ? step : DFX_ISAL_STEP;
}

/* Contract in dfx_isal.h. */
unsigned int dfx_isal_get_step(const struct dfx_isal *d)
{
    return d->step;
}

/* Contract in dfx_isal.h. */
void dfx_isal_test_skew(struct dfx_isal *d, int skew, uint64_t from)
{
    d->skew = skew;
    d->skew_from = from;
}

/* Contract in dfx_isal.h. */
void dfx_isal_get_stats(const struct dfx_isal *d, struct dfx_isal_stats *out)
{
    *out = d->stats;
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
    if (!len)
        return crc;
    crc = crc32_gzip_refl(crc, buf, len);
    clear_upper();
    return crc;
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

int dfx_isal_start_at(struct dfx_isal *d, uint64_t out, uint64_t in, int bits, unsigned char prev,
                      const unsigned char *window, uint32_t window_len)
{
    (void)d, (void)out, (void)in, (void)bits, (void)prev, (void)window, (void)window_len;
    return -EOPNOTSUPP;
}

int dfx_isal_inflate_mark(struct dfx_isal *d, unsigned char **next_in, unsigned int *avail_in,
                          unsigned char **next_out, unsigned int *avail_out, uint64_t want,
                          struct dfx_isal_mark *mark)
{
    (void)d, (void)next_in, (void)avail_in, (void)next_out, (void)avail_out, (void)want,
        (void)mark;
    return -EOPNOTSUPP;
}

uint32_t dfx_isal_mark_window(const struct dfx_isal *d, unsigned char *buf)
{
    (void)d, (void)buf;
    return 0;
}

void dfx_isal_set_verify(struct dfx_isal *d, bool on)
{
    (void)d, (void)on;
}

void dfx_isal_set_step(struct dfx_isal *d, unsigned int step)
{
    (void)d, (void)step;
}

unsigned int dfx_isal_get_step(const struct dfx_isal *d)
{
    (void)d;
    return DFX_ISAL_STEP;
}

void dfx_isal_test_skew(struct dfx_isal *d, int skew, uint64_t from)
{
    (void)d, (void)skew, (void)from;
}

void dfx_isal_get_stats(const struct dfx_isal *d, struct dfx_isal_stats *out)
{
    (void)d;
    memset(out, 0, sizeof(*out));
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
