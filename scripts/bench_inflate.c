/*
 * bench_inflate: the decoder limit for scripts/bench.
 *
 * Times single-threaded, in-process inflate of one DEFLATE stream with zlib
 * and (when built with NPYFS_HAVE_ISAL) ISA-L, and CRC-32 with each library.
 * The compressed bytes are read into memory first, output goes to a reused
 * buffer and is thrown away, so the figures are pure decoder speed: what
 * npyfs could reach on one core if FUSE, the page cache and the disk cost
 * nothing.
 *
 * usage: bench_inflate [--repeat N] [--no-crc-bench] [--crc HEX] FILE OFFSET LENGTH
 *            a raw deflate stream of LENGTH bytes at OFFSET (a zip member's
 *            data; scripts/bench finds it). --crc checks the CRC-32 of the
 *            output (the zip central directory's value).
 *        bench_inflate [--repeat N] --gzip FILE
 *            a whole gzip file (all members): zlib windowBits 31, ISA-L with
 *            crc_flag ISAL_GZIP; the trailers' CRCs are checked by the
 *            libraries.
 *
 * Prints one JSON line. MB = 10^6 bytes; rates are of uncompressed output.
 * Each decoder runs --repeat times (default 3); the best run is reported,
 * along with the median. --no-crc-bench skips the CRC-32 timing (reported
 * as 0). Exit status 1 on any error or CRC mismatch.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#ifdef NPYFS_HAVE_ISAL
#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>
#endif

#define OUT_BUF (4u << 20)        /* reused output buffer */
#define CRC_KEEP (256u << 20)     /* output kept for the CRC timing */
#define CRC_MIN_BYTES (1ull << 30) /* CRC timing covers at least this much */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "bench_inflate: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct run {
    double best, median; /* seconds */
};

static struct run summarize(double *t, int n)
{
    struct run r;
    qsort(t, n, sizeof(*t), cmp_double);
    r.best = t[0];
    r.median = t[n / 2];
    return r;
}

/* ---------------------------------------------------------------- zlib --- */

/*
 * Inflate the whole input. raw: windowBits -15; else 31 (gzip, every member).
 * keep/keep_len: if non-NULL, the first keep_cap bytes of output are copied
 * there. *crc gets the CRC-32 of the output if crc != NULL (costs time; only
 * in the untimed check pass). Returns output size, or -1.
 */
static int64_t zlib_inflate_all(const unsigned char *in, size_t in_len, bool raw,
                                unsigned char *out, unsigned char *keep, size_t keep_cap,
                                size_t *keep_len, uint32_t *crc)
{
    z_stream zs;
    int64_t total = 0;
    uLong c = crc32(0, Z_NULL, 0);
    size_t pos = 0;

    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, raw ? -15 : 31) != Z_OK)
        return -1;
    if (keep_len)
        *keep_len = 0;
    for (;;) {
        if (zs.avail_in == 0 && pos < in_len) {
            size_t n = in_len - pos;
            if (n > (1u << 30))
                n = 1u << 30;
            zs.next_in = (Bytef *)(in + pos);
            zs.avail_in = (uInt)n;
            pos += n;
        }
        zs.next_out = out;
        zs.avail_out = OUT_BUF;
        int ret = inflate(&zs, Z_NO_FLUSH);
        size_t got = OUT_BUF - zs.avail_out;
        if (crc)
            c = crc32(c, out, (uInt)got);
        if (keep && *keep_len < keep_cap) {
            size_t k = got < keep_cap - *keep_len ? got : keep_cap - *keep_len;
            memcpy(keep + *keep_len, out, k);
            *keep_len += k;
        }
        total += got;
        if (ret == Z_STREAM_END) {
            /* gzip: another member may follow (skip zero padding like gzip -d). */
            if (!raw) {
                while (zs.avail_in == 0 && pos < in_len) {
                    size_t n = in_len - pos;
                    if (n > (1u << 30))
                        n = 1u << 30;
                    zs.next_in = (Bytef *)(in + pos);
                    zs.avail_in = (uInt)n;
                    pos += n;
                }
                if (zs.avail_in > 0 && zs.next_in[0] == 0x1f) {
                    inflateReset(&zs);
                    continue;
                }
            }
            break;
        }
        if (ret == Z_BUF_ERROR && zs.avail_in == 0 && pos >= in_len) {
            inflateEnd(&zs);
            return -1; /* truncated */
        }
        if (ret != Z_OK && ret != Z_BUF_ERROR) {
            inflateEnd(&zs);
            return -1;
        }
    }
    inflateEnd(&zs);
    if (crc)
        *crc = (uint32_t)c;
    return total;
}

/* ---------------------------------------------------------------- ISA-L -- */

#ifdef NPYFS_HAVE_ISAL
static int64_t isal_inflate_all(const unsigned char *in, size_t in_len, bool raw,
                                unsigned char *out)
{
    static struct inflate_state st; /* big: keep it off the stack */
    int64_t total = 0;
    size_t pos = 0;

    for (;;) { /* one gzip member (or the raw stream) per iteration */
        isal_inflate_init(&st);
        st.crc_flag = raw ? ISAL_DEFLATE : ISAL_GZIP;
        for (;;) {
            if (st.avail_in == 0 && pos < in_len) {
                size_t n = in_len - pos;
                if (n > (1u << 30))
                    n = 1u << 30;
                st.next_in = (uint8_t *)(in + pos);
                st.avail_in = (uint32_t)n;
                pos += n;
            }
            st.next_out = out;
            st.avail_out = OUT_BUF;
            int ret = isal_inflate(&st);
            total += OUT_BUF - st.avail_out;
            if (ret != ISAL_DECOMP_OK && ret != ISAL_END_INPUT)
                return -1;
            if (st.block_state == ISAL_BLOCK_FINISH)
                break;
            if (st.avail_in == 0 && pos >= in_len && st.avail_out != 0)
                return -1; /* truncated */
        }
        if (raw)
            break;
        /* unused input of this member: st.avail_in bytes at st.next_in */
        size_t rest = st.avail_in + (in_len - pos);
        if (rest == 0)
            break;
        const unsigned char *next = st.avail_in ? st.next_in : in + pos;
        if (next[0] != 0x1f)
            break; /* trailing garbage / padding: gzip -d ignores it too */
        pos = (size_t)(next - in);
        st.avail_in = 0;
    }
    return total;
}
#endif

/* ---------------------------------------------------------------- main --- */

static void usage(void)
{
    fputs("usage: bench_inflate [--repeat N] [--no-crc-bench] [--crc HEX] FILE OFFSET LENGTH\n"
          "       bench_inflate [--repeat N] [--no-crc-bench] --gzip FILE\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    int repeat = 3;
    bool gzip = false, have_crc = false, crc_bench = true;
    uint32_t want_crc = 0;
    const char *pos[3];
    int npos = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
            repeat = atoi(argv[++i]);
            if (repeat < 1 || repeat > 100)
                usage();
        } else if (strcmp(argv[i], "--crc") == 0 && i + 1 < argc) {
            want_crc = (uint32_t)strtoul(argv[++i], NULL, 16);
            have_crc = true;
        } else if (strcmp(argv[i], "--no-crc-bench") == 0) {
            crc_bench = false;
        } else if (strcmp(argv[i], "--gzip") == 0) {
            gzip = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            usage();
        } else if (npos < 3) {
            pos[npos++] = argv[i];
        } else {
            usage();
        }
    }
    if (gzip ? npos != 1 : npos != 3)
        usage();

    const char *path = pos[0];
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        die("cannot open %s", path);
    uint64_t off = 0, len;
    if (gzip) {
        off_t end = lseek(fd, 0, SEEK_END);
        if (end < 0)
            die("cannot size %s", path);
        len = (uint64_t)end;
    } else {
        off = strtoull(pos[1], NULL, 0);
        len = strtoull(pos[2], NULL, 0);
    }
    unsigned char *in = malloc(len ? len : 1);
    unsigned char *out = malloc(OUT_BUF);
    unsigned char *keep = malloc(CRC_KEEP);
    if (!in || !out || !keep)
        die("out of memory%s", "");
    for (uint64_t done = 0; done < len;) {
        ssize_t n = pread(fd, in + done, len - done, (off_t)(off + done));
        if (n <= 0)
            die("short read from %s", path);
        done += (uint64_t)n;
    }
    close(fd);

    /* Untimed check pass: output size, CRC, and output kept for CRC timing. */
    size_t keep_len = 0;
    uint32_t crc = 0;
    int64_t out_len = zlib_inflate_all(in, len, !gzip, out, keep, CRC_KEEP, &keep_len, &crc);
    if (out_len < 0)
        die("zlib: %s is not a valid deflate stream at that offset", path);
    bool crc_ok = !have_crc || crc == want_crc;

    double *t = calloc((size_t)repeat, sizeof(double));
    struct run zr, ir = {0, 0}, zc, ic = {0, 0};
    for (int r = 0; r < repeat; r++) {
        double t0 = now();
        int64_t n = zlib_inflate_all(in, len, !gzip, out, NULL, 0, NULL, NULL);
        t[r] = now() - t0;
        if (n != out_len)
            die("zlib: output size changed between runs%s", "");
    }
    zr = summarize(t, repeat);

    bool isal = false;
#ifdef NPYFS_HAVE_ISAL
    isal = true;
    for (int r = 0; r < repeat; r++) {
        double t0 = now();
        int64_t n = isal_inflate_all(in, len, !gzip, out);
        t[r] = now() - t0;
        if (n != out_len) {
            fprintf(stderr, "bench_inflate: ISA-L output %" PRId64 " bytes, zlib %" PRId64 "\n",
                    n, out_len);
            return 1;
        }
    }
    ir = summarize(t, repeat);
#endif

    /* CRC-32 over the kept output, looped to at least CRC_MIN_BYTES. */
    uint64_t loops = keep_len && crc_bench ? (CRC_MIN_BYTES + keep_len - 1) / keep_len : 0;
    uint64_t crc_bytes = loops * keep_len;
    volatile uint32_t sink = 0;
    memset(&zc, 0, sizeof(zc));
    for (int r = 0; r < repeat && loops; r++) {
        double t0 = now();
        for (uint64_t l = 0; l < loops; l++)
            sink ^= (uint32_t)crc32(0, keep, (uInt)keep_len);
        t[r] = now() - t0;
    }
    if (loops)
        zc = summarize(t, repeat);
#ifdef NPYFS_HAVE_ISAL
    for (int r = 0; r < repeat && loops; r++) {
        double t0 = now();
        for (uint64_t l = 0; l < loops; l++)
            sink ^= crc32_gzip_refl(0, keep, keep_len);
        t[r] = now() - t0;
    }
    if (loops)
        ic = summarize(t, repeat);
    if (keep_len && crc32_gzip_refl(0, keep, keep_len) != (uint32_t)crc32(0, keep, (uInt)keep_len)) {
        fputs("bench_inflate: ISA-L and zlib CRC-32 disagree\n", stderr);
        return 1;
    }
#endif
    (void)sink;

#define MBPS(bytes, s) ((s) > 0 ? (double)(bytes) / (s) / 1e6 : 0.0)
    printf("{\"file\": \"%s\", \"mode\": \"%s\", \"offset\": %" PRIu64 ", \"in_bytes\": %" PRIu64
           ", \"out_bytes\": %" PRId64 ", \"ratio\": %.4f, \"repeat\": %d"
           ", \"zlib_version\": \"%s\", \"isal\": %s"
           ", \"crc32\": \"%08x\", \"crc_ok\": %s"
           ", \"zlib_inflate_s\": %.6f, \"zlib_inflate_mbps\": %.1f, \"zlib_inflate_median_mbps\": %.1f"
           ", \"isal_inflate_s\": %.6f, \"isal_inflate_mbps\": %.1f, \"isal_inflate_median_mbps\": %.1f"
           ", \"crc_bytes\": %" PRIu64
           ", \"zlib_crc32_mbps\": %.1f, \"isal_crc32_mbps\": %.1f}\n",
           path, gzip ? "gzip" : "raw", off, len, out_len, len ? (double)out_len / len : 0.0,
           repeat, zlibVersion(), isal ? "true" : "false", crc, crc_ok ? "true" : "false",
           zr.best, MBPS(out_len, zr.best), MBPS(out_len, zr.median),
           ir.best, isal ? MBPS(out_len, ir.best) : 0.0, isal ? MBPS(out_len, ir.median) : 0.0,
           crc_bytes, MBPS(crc_bytes, zc.best), isal ? MBPS(crc_bytes, ic.best) : 0.0);
    free(t);
    free(in);
    free(out);
    free(keep);
    if (!crc_ok) {
        fprintf(stderr, "bench_inflate: CRC-32 %08x, expected %08x\n", crc, want_crc);
        return 1;
    }
    return 0;
}
