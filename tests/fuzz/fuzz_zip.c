/* libFuzzer target: the zip directory reader on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>

#include "zip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct zip_archive *z;
    struct src *s;
    char buf[24];

    if (src_mem_new(data, size, &s) < 0)
        return 0;
    if (zip_archive_open(s, &z) == 0) {
        for (size_t i = 0; i < z->count; i++) {
            const struct zip_member *m = &z->members[i];
            zip_method_name(m->method, buf, sizeof(buf));
            /* a servable member must lie inside the archive */
            if (!m->unsupported && !m->is_dir && m->data_offset + m->csize > size)
                __builtin_trap();
        }
        zip_free(z);
    }
    src_free(s);
    return 0;
}
