/* libFuzzer target: the .npy header parser on arbitrary bytes, and the
 * dtype as JSON and as a string that ls and the xattrs make of it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct npy_header h;
    uint64_t doff;
    char shape[256];

    if (npy_prefix(data, size, &doff) == 0 && npy_parse(data, size, &h) == 0) {
        char *json = NULL, *str = NULL;
        size_t len;

        npy_format_shape(&h, shape, sizeof(shape));
        if (npy_dtype_json(&h, &json) >= 0)
            free(json);
        if (npy_dtype_string(&h, &str, &len) == 0)
            free(str);
        npy_header_destroy(&h);
    }
    return 0;
}
