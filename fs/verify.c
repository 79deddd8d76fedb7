/*
 * The one full pass and the chunk check. Contract in verify.h.
 *
 * A pass reads VERIFY_READ bytes at a time (a feeding pass: one chunk at a
 * time, decoded straight into a cache buffer), so the stop flag checked
 * before each read bounds how long a stopping pass runs on. The table is
 * built as the bytes come: with a known size into a table of that size
 * (dfx_crcs_feed()); with an unknown one (gzip sizing) into a growing array
 * of chunk CRCs, turned into a table once the size is known.
 */
#define _GNU_SOURCE
#include "verify.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "cache.h"
#include "dfx.h"
#include "dfx_crcs.h"
#include "fs.h"
#include "source.h"

/* Output read per call of a pass (not a feeding one). */
#define VERIFY_READ (1u << 20)

/* Chunk CRCs of output whose size is not known yet (the gzip sizing pass):
 * crc[i] for chunk i, grown as output comes. */
struct grow_crcs {
    uint32_t *crc;
    uint64_t n, cap, pos;
    bool failed; /* out of memory: no table */
};

static void grow_feed(struct grow_crcs *g, const unsigned char *p, size_t len)
{
    while (len && !g->failed) {
        uint64_t i = g->pos / FS_CHUNK_SIZE;
        size_t n = FS_CHUNK_SIZE - (size_t)(g->pos % FS_CHUNK_SIZE);

        if (i >= g->cap) {
            uint64_t cap = g->cap ? 2 * g->cap : 64;
            uint32_t *c = realloc(g->crc, (size_t)cap * sizeof(*c));
            if (!c) {
                g->failed = true;
                return;
            }
            g->crc = c;
            g->cap = cap;
        }
        if (i >= g->n)
            g->crc[g->n++] = 0;
        if (n > len)
            n = len;
        g->crc[i] = (uint32_t)crc32_combine(g->crc[i], dfx_crcs_of(p, n), (z_off_t)n);
        g->pos += n;
        p += n;
        len -= n;
    }
}

/* The table of a finished sizing pass over size bytes, or NULL. */
static struct dfx_crcs *grow_table(struct grow_crcs *g, uint64_t size)
{
    struct dfx_crcs *t = NULL;

    if (!g->failed && g->pos == size && dfx_crcs_new(size, FS_CHUNK_SIZE, &t) == 0 &&
        t->count == g->n) {
        if (g->n) /* an empty output has no chunk, and g->crc may be NULL */
            memcpy(t->crc, g->crc, (size_t)g->n * sizeof(*g->crc));
    } else if (t) {
        free(t);
        t = NULL;
    }
    free(g->crc);
    g->crc = NULL;
    return t;
}

/* One read of a feeding pass: decode the chunk at done (a chunk boundary)
 * into a new chunk of in->feed, add it to t, and insert it under in->owner.
 * Returns the bytes decoded (0 at the end of the output), -EIO if the
 * stream ends inside the chunk, or another negative errno. */
static int64_t feed_chunk(const struct verify_input *in, struct dfx_crcs *t, uint64_t done)
{
    size_t want = in->size - done < FS_CHUNK_SIZE ? (size_t)(in->size - done) : FS_CHUNK_SIZE;
    struct cache_chunk *ch;
    int64_t n;
    int ret;

    if (want == 0)
        return 0;
    ret = cache_chunk_new(in->feed, &ch);
    if (ret < 0)
        return ret;
    n = dfx_reader_read(in->r, ch->data, want);
    if (n == (int64_t)want) {
        dfx_crcs_feed(t, done, ch->data, want);
        ch->len = want;
        cache_insert(in->feed, in->owner, done / FS_CHUNK_SIZE, ch);
    } else if (n >= 0) {
        n = -EIO;
    }
    cache_put(in->feed, ch);
    return n;
}

/* Contract in verify.h. */
int64_t verify_pass(const struct verify_input *in, const unsigned char *head, size_t head_len,
                    struct dfx_crcs **table)
{
    bool grow = in->size == VERIFY_SIZE_UNKNOWN;
    struct grow_crcs g = {0};
    struct dfx_crcs *t = NULL;
    unsigned char *buf = NULL;
    uint64_t done = 0;
    int64_t n, ret = 0;

    *table = NULL;
    if (!grow) {
        int err = dfx_crcs_new(in->size, FS_CHUNK_SIZE, &t);
        if (err < 0)
            return err == -EINVAL ? -EIO : err;
    }
    if (!in->feed && !(buf = malloc(VERIFY_READ))) {
        free(t);
        return -ENOMEM;
    }
    if (head_len) {
        if (grow)
            grow_feed(&g, head, head_len);
        else
            dfx_crcs_feed(t, 0, head, head_len);
        done = head_len;
    }
    for (;;) {
        if (!in->r && done == in->size)
            break; /* a stored range read whole */
        if (in->stop && atomic_load(in->stop)) {
            ret = -ECANCELED;
            break;
        }
        if (in->r && in->feed) {
            n = feed_chunk(in, t, done);
        } else if (in->r) {
            n = dfx_reader_read(in->r, buf, VERIFY_READ);
        } else {
            size_t len = in->size - done < VERIFY_READ ? (size_t)(in->size - done) : VERIFY_READ;
            int err = src_read_exact(in->src, buf, len, in->off + done);
            n = err < 0 ? err : (int64_t)len;
        }
        if (in->after_read) {
            int chk = in->after_read(in->arg);
            if (n >= 0 && chk < 0)
                n = chk;
        }
        if (n <= 0) {
            ret = n; /* 0: the end of the stream */
            break;
        }
        if (!in->feed) {
            if (grow)
                grow_feed(&g, buf, (size_t)n);
            else
                dfx_crcs_feed(t, done, buf, (size_t)n);
        }
        done += (uint64_t)n;
        if (in->r && in->budget && dfx_reader_pos(in->r) > in->budget) {
            ret = -E2BIG;
            break;
        }
        if (in->progress)
            in->progress(in->arg, done);
    }
    free(buf);
    if (ret < 0) {
        free(t);
        free(g.crc);
        return ret;
    }
    *table = grow ? grow_table(&g, done) : t;
    return (int64_t)done;
}

/* Contract in verify.h. */
bool verify_chunk(const struct dfx_crcs *t, uint64_t idx, const unsigned char *data, size_t len)
{
    return !t || (idx < t->count && dfx_crcs_of(data, len) == t->crc[idx]);
}
