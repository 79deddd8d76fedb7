/*
 * Byte sources: the interface, and the memory source. Contract in source.h.
 */
#include "source.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct mem_src {
    struct src base;
    const unsigned char *buf; /* borrowed */
};

static int64_t mem_pread(struct src *s, void *buf, size_t len, uint64_t off)
{
    struct mem_src *m = (struct mem_src *)s;
    if (off >= s->size)
        return 0;
    if (len > s->size - off)
        len = (size_t)(s->size - off);
    memcpy(buf, m->buf + off, len);
    return (int64_t)len;
}

static void mem_free(struct src *s)
{
    free(s);
}

static const struct src_ops mem_ops = {mem_pread, mem_free, NULL};

/* Contract in source.h. */
int src_mem_new(const void *buf, size_t len, struct src **out)
{
    struct mem_src *m;

    *out = NULL;
    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->base.ops = &mem_ops;
    m->base.size = len;
    m->buf = buf;
    *out = &m->base;
    return 0;
}

/* Contract in source.h. */
void src_free(struct src *s)
{
    if (s)
        s->ops->free(s);
}

/* Contract in source.h. */
int64_t src_pread(struct src *s, void *buf, size_t len, uint64_t off)
{
    return s->ops->pread(s, buf, len, off);
}

/* Contract in source.h. */
void src_prefetch(struct src *s, uint64_t off, uint64_t len)
{
    if (s->ops->prefetch && len)
        s->ops->prefetch(s, off, len);
}

/* Contract in source.h. */
int src_read_exact(struct src *s, void *buf, size_t len, uint64_t off)
{
    int64_t n = src_pread(s, buf, len, off);
    if (n < 0)
        return (int)n;
    return (uint64_t)n == len ? 0 : -EIO;
}
