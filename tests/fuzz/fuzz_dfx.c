/* libFuzzer target: the deflate index over arbitrary bytes taken as a raw
 * deflate stream (a zip member): the first 4 bytes give the claimed
 * uncompressed size. With each engine (zlib; ISA-L, which records its own
 * points past the frontier and falls back to zlib where that fails): full
 * pass, then random extracts that must agree with it. Where both engines
 * decode the whole stream without error, their output must be the same;
 * and the points a complete pass exports must be ones an import takes
 * (a saved index that its own load refuses is rebuilt on every mount). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dfx.h"
#include "dfx_internal.h"

/* Output decoded per input, and the largest size an input may declare: a
 * few KiB of input can inflate to megabytes, and decoding them made this
 * target ~1000x slower than the parsers. 256 KiB still spans several access
 * points (spacing 64 KiB), so extracts start from recorded points. */
#define OUT_MAX (256u << 10)

/* The exported points of a complete index as dfx_index_import() checks
 * them: point 0 at the start, then strictly increasing, all before the
 * total (no point at the boundary before an empty last block). */
static void check_export(struct dfx_index *ix, uint64_t n)
{
    struct dfx_xpoint *x;
    size_t k;
    uint64_t total;

    if (dfx_index_export(ix, &x, &k, &total) < 0)
        return;
    if (total != n || k == 0 || x[0].out != 0)
        __builtin_trap();
    for (size_t i = 1; i < k; i++)
        if (x[i].out <= x[i - 1].out || x[i].in <= x[i - 1].in || x[i].out >= total)
            __builtin_trap();
    free(x);
}

/* One engine: the first pass into all (returns its result), then extracts. */
static int64_t run(const uint8_t *data, size_t size, struct dfx_stream *st, unsigned char *all)
{
    unsigned char piece[4096];
    struct dfx_index *ix;
    struct dfx_reader *r;
    int64_t n = -1, got;

    if (dfx_index_new(st, DFX_MIN_SPACING, &ix) < 0)
        return -1;
    if (dfx_reader_new(ix, 0, &r) == 0) {
        n = dfx_reader_read(r, all, OUT_MAX);
        dfx_reader_free(r);
    }
    if (n > (int64_t)st->usize)
        __builtin_trap(); /* more output than the directory allows */
    if (n == (int64_t)st->usize && dfx_index_error(ix) == 0)
        check_export(ix, (uint64_t)n);
    for (int i = 0; n > 0 && i < 8; i++) {
        uint64_t off = (data[i % size] * 7919u + (uint64_t)i * 104729u) % (uint64_t)n;
        got = dfx_extract(ix, off, piece, sizeof(piece));
        if (got > 0 && memcmp(piece, all + off, (size_t)got) != 0)
            __builtin_trap(); /* an extract disagrees with the full pass */
    }
    dfx_index_free(ix);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum dfx_decoder engines[] = {DFX_DECODER_ZLIB, DFX_DECODER_ISAL};
    struct dfx_stream st = {0};
    unsigned char *all[2] = {NULL, NULL};
    int64_t n[2] = {-1, -1};
    struct src *s;

    if (size < 4 || src_mem_new(data, size, &s) < 0)
        return 0;
    st.src = s;
    st.start = 4;
    st.end = size;
    st.framing = DFX_RAW;
    st.usize = get_le32(data) % (OUT_MAX + 1);
    for (int e = 0; e < 2; e++) {
        all[e] = malloc(OUT_MAX);
        st.decoder = engines[e];
        if (all[e])
            n[e] = run(data, size, &st, all[e]);
    }
    if (n[0] >= 0 && n[1] >= 0 && (n[0] != n[1] || memcmp(all[0], all[1], (size_t)n[0]) != 0))
        __builtin_trap(); /* the engines both decoded it, differently */
    free(all[0]);
    free(all[1]);
    src_free(s);
    return 0;
}
