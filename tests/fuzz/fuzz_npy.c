/* libFuzzer target: the .npy header parser on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>

#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct npy_header h;
    uint64_t doff;
    char shape[256];

    if (npy_prefix(data, size, &doff) == 0 && npy_parse(data, size, &h) == 0) {
        npy_format_shape(&h, shape, sizeof(shape));
        npy_header_destroy(&h);
    }
    return 0;
}
