/* libFuzzer target: loading a saved deflate index through the index file
 * codec (dfx_store.h) and reading through it. The stream is fixed, built
 * once in LLVMFuzzerInitialize: ~300 KB of smooth quantized float32 data,
 * raw-deflated in memory with zlib level 6 (memLevel 4: smaller blocks, so
 * access points nearer the spacing). An input is a 4-byte little-endian
 * seed followed by the bytes of an index file for that stream and a fixed
 * key; those bytes are loaded, through a memory source over them, into a
 * fresh index, with its chunk CRC table (no file system: the directory
 * around the files is fs/indexdir.c's, tested by tests/unit/test_indexdir.c).
 * If the load succeeds, 8 extracts at offsets derived from the seed must
 * each give a negative errno or exactly the right bytes (windows are read
 * from the input on demand), and the table must cover the whole stream;
 * the loaded index must release the input exactly once, when it is freed.
 *
 * The file's CRC-32 covers all of it, so a crafted file that loads yet
 * carries wrong access points is practically out of a fuzzer's reach; a
 * mismatch is reported as a crash.
 *
 * NPYFS_FUZZ_WRITE_SEED=path: build the full index by a full pass, write
 * seed + its index file to path (the seed corpus) and exit. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "dfx.h"
#include "dfx_store.h"

#define DATA_LEN (300u << 10)
#define PIECE 8192
#define CHUNK (64u << 10)

static unsigned char *g_data;  /* uncompressed */
static unsigned char *g_z;     /* raw deflate of g_data */
static size_t g_zlen;
static struct src *g_src;
static struct dfx_stream g_st;
static struct dfx_store_key g_key;

/* An index file being built in memory (the codec's write callback). */
struct membuf {
    unsigned char *p;
    size_t len;
};

static void die(const char *what)
{
    fprintf(stderr, "fuzz_store: %s\n", what);
    exit(1);
}

static void make_data(void)
{
    uint32_t lcg = 12345;
    int32_t walk = 0;

    g_data = malloc(DATA_LEN);
    if (!g_data)
        die("out of memory");
    /* a random walk in steps of 1/64: smooth, quantized float32 */
    for (size_t i = 0; i < DATA_LEN / 4; i++) {
        lcg = lcg * 1664525u + 1013904223u;
        walk += (int32_t)(lcg >> 29) - 3;
        float f = (float)walk / 64.0f;
        memcpy(g_data + i * 4, &f, 4);
    }
}

static void make_stream(void)
{
    z_stream z = {0};
    uLong bound;

    if (deflateInit2(&z, 6, Z_DEFLATED, -15, 4, Z_DEFAULT_STRATEGY) != Z_OK)
        die("deflateInit2");
    bound = deflateBound(&z, DATA_LEN);
    g_z = malloc(bound);
    if (!g_z)
        die("out of memory");
    z.next_in = g_data;
    z.avail_in = DATA_LEN;
    z.next_out = g_z;
    z.avail_out = (uInt)bound;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        die("deflate");
    g_zlen = z.total_out;
    deflateEnd(&z);
    if (src_mem_new(g_z, g_zlen, &g_src) < 0)
        die("src_mem_new");
}

static int membuf_write(void *ctx, const void *buf, size_t len, uint64_t off)
{
    struct membuf *m = ctx;

    if (off + len > m->len) {
        unsigned char *grown = realloc(m->p, (size_t)(off + len));
        if (!grown)
            return -ENOMEM;
        memset(grown + m->len, 0, (size_t)(off + len - m->len));
        m->p = grown;
        m->len = (size_t)(off + len);
    }
    memcpy(m->p + off, buf, len);
    return 0;
}

static void count_release(void *arg)
{
    ++*(int *)arg;
}

static int write_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    const unsigned char *p = buf;

    if (fd < 0)
        return -errno;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return -EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return close(fd) < 0 ? -errno : 0;
}

/* Build and save the full index, then write seed + index file to out. */
static void write_seed(const char *path)
{
    static unsigned char buf[65536];
    struct dfx_index *ix;
    struct dfx_reader *r = NULL;
    struct dfx_crcs *t;
    struct membuf file = {0};
    struct dfx_store_out out = {membuf_write, &file};
    unsigned char *seed;
    int64_t n, total = 0;
    size_t points;

    if (dfx_index_new(&g_st, DFX_MIN_SPACING, &ix) < 0 || dfx_reader_new(ix, 0, &r) < 0 ||
        dfx_crcs_new(DATA_LEN, CHUNK, &t) < 0)
        die("index");
    while ((n = dfx_reader_read(r, buf, sizeof(buf))) > 0) {
        if (memcmp(buf, g_data + total, (size_t)n) != 0)
            die("full pass mismatch");
        dfx_crcs_feed(t, (uint64_t)total, buf, (size_t)n);
        total += n;
    }
    dfx_reader_free(r);
    if (n < 0 || total != DATA_LEN)
        die("full pass");
    if (dfx_store_write(&g_key, ix, t, &out) < 0)
        die("dfx_store_write");
    free(t);
    points = dfx_index_points(ix);
    dfx_index_free(ix);
    seed = malloc(file.len + 4);
    if (!seed)
        die("out of memory");
    memcpy(seed, "\x2a\x00\x00\x00", 4); /* seed 42 */
    memcpy(seed + 4, file.p, file.len);
    if (write_file(path, seed, file.len + 4) < 0)
        die("writing the seed");
    fprintf(stderr, "fuzz_store: %zu points, index file %zu bytes, stream %zu -> %zu bytes\n",
            points, file.len, (size_t)DATA_LEN, g_zlen);
    free(seed);
    free(file.p);
    exit(0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *seed_out = getenv("NPYFS_FUZZ_WRITE_SEED");

    (void)argc;
    (void)argv;
    make_data();
    make_stream();
    g_st.src = g_src;
    g_st.start = 0;
    g_st.end = g_zlen;
    g_st.framing = DFX_RAW;
    g_st.usize = DATA_LEN;
    g_st.crc = (uint32_t)crc32(0, g_data, DATA_LEN);
    g_st.check_crc = true;
    g_st.decoder = DFX_DECODER_ZLIB;
    g_key.dev = 0x801;
    g_key.ino = 4242;
    g_key.size = g_zlen + 100;
    g_key.mtime_sec = 1700000000;
    g_key.mtime_nsec = 123456789;
    g_key.name = "data/x.npy";
    g_key.name_len = strlen(g_key.name);
    g_key.crc = g_st.crc;
    g_key.stored_size = g_zlen;
    g_key.path = "/data/run.npz"; /* recorded, not part of the key */
    if (seed_out)
        write_seed(seed_out);
    return 0;
}

static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned char piece[PIECE];
    struct dfx_index *ix;
    struct dfx_crcs *t = NULL;
    struct src *file;
    int released = 0, loaded;
    uint64_t s;

    if (size < 4)
        return 0;
    s = get_le32(data) * 0x9E3779B97F4A7C15ull + 1;
    if (src_mem_new(data + 4, size - 4, &file) < 0)
        return 0;
    if (dfx_index_new(&g_st, DFX_MIN_SPACING, &ix) < 0) {
        src_free(file);
        return 0;
    }
    loaded = dfx_store_load(file, &g_key, ix, CHUNK, NULL, &t, NULL, count_release,
                            &released) == 0;
    if (loaded) {
        if (t && (t->size != DATA_LEN || t->chunk != CHUNK ||
                  t->count != (DATA_LEN + CHUNK - 1) / CHUNK))
            __builtin_trap(); /* a loaded table that does not fit the stream */
        for (int i = 0; i < 8; i++) {
            uint64_t off = next(&s) % (DATA_LEN + 16);
            size_t len = 1 + next(&s) % PIECE;
            int64_t got = dfx_extract(ix, off, piece, len);
            size_t want = off >= DATA_LEN ? 0 : DATA_LEN - off < len ? DATA_LEN - off : len;

            if (got >= 0 && ((size_t)got != want || (want && memcmp(piece, g_data + off, want) != 0)))
                __builtin_trap(); /* a loaded index gave wrong bytes */
        }
    }
    free(t);
    dfx_index_free(ix);
    if (released != loaded)
        __builtin_trap(); /* the input released never, twice, or after a failed load */
    src_free(file);
    return 0;
}
