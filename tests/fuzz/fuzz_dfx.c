/* libFuzzer target: the deflate index over arbitrary bytes taken as a raw
 * deflate stream (a zip member): the first 4 bytes give the claimed
 * uncompressed size. Full pass, then random extracts that must agree. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dfx.h"

/* Output decoded per input, and the largest size an input may declare: a
 * few KiB of input can inflate to megabytes, and decoding them made this
 * target ~1000x slower than the parsers. 256 KiB still spans several access
 * points (spacing 64 KiB), so extracts start from recorded points. */
#define OUT_MAX (256u << 10)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dfx_stream st = {0};
    struct dfx_index *ix;
    struct dfx_reader *r;
    unsigned char *all, piece[4096];
    int64_t n = 0, got;
    struct src *s;

    if (size < 4 || src_mem_new(data, size, &s) < 0)
        return 0;
    st.src = s;
    st.start = 4;
    st.end = size;
    st.framing = DFX_RAW;
    st.usize = get_le32(data) % (OUT_MAX + 1);
    all = malloc(OUT_MAX);
    if (all && dfx_index_new(&st, DFX_MIN_SPACING, &ix) == 0) {
        if (dfx_reader_new(ix, 0, &r) == 0) {
            n = dfx_reader_read(r, all, OUT_MAX);
            dfx_reader_free(r);
        }
        if (n > (int64_t)st.usize)
            __builtin_trap(); /* more output than the directory allows */
        for (int i = 0; n > 0 && i < 8; i++) {
            uint64_t off = (data[i % size] * 7919u + (uint64_t)i * 104729u) % (uint64_t)n;
            got = dfx_extract(ix, off, piece, sizeof(piece));
            if (got > 0 && memcmp(piece, all + off, (size_t)got) != 0)
                __builtin_trap();
        }
        dfx_index_free(ix);
    }
    free(all);
    src_free(s);
    return 0;
}
