/*
 * bench_mark: what recording access points costs, per decoder.
 *
 * Decodes one raw DEFLATE stream in memory, fed as dfx.c feeds it (64 KiB of
 * input, 128 KiB of output per call, into a reused buffer), five ways:
 *   isal        dfx_isal_inflate(): ISA-L, no points
 *   isal+mark   dfx_isal_inflate_mark(): a checked point every --spacing bytes
 *   isal+mark-  the same without the check (dfx_isal_set_verify(false))
 *   zlib+pts    inflate(Z_BLOCK) and a point at the first boundary past each
 *               --spacing, window by inflateGetDictionary(), as dfx.c does
 *   zlib        inflate(Z_NO_FLUSH), no points
 * Each point's window is copied into a fresh malloc'd 32 KiB buffer, as an
 * index keeps it. The variants run in turn, --rounds times (default 5), so
 * that a noisy machine slows them alike; medians are reported.
 *
 * usage: bench_mark [--rounds N] [--spacing BYTES] [--step N] FILE OFFSET LENGTH
 *   (a zip member's data: scripts/bench prints its offset and length)
 * MB = 10^6 bytes of output.
 */
#define _GNU_SOURCE
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

#include "dfx_isal.h"

#define IN_PIECE (64u << 10)
#define OUT_PIECE (128u << 10)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *msg)
{
    fprintf(stderr, "bench_mark: %s\n", msg);
    exit(1);
}

struct result {
    uint64_t out;    /* bytes of output */
    uint64_t points; /* points recorded */
    struct dfx_isal_stats st;
};

static void keep_window(unsigned char **w)
{
    *w = malloc(WINDOW_SIZE);
    if (!*w)
        die("out of memory");
}

/* ISA-L, with marks if spacing > 0. */
static struct result run_isal(const unsigned char *in, size_t len, unsigned char *out,
                              uint64_t spacing, bool verify, unsigned int step,
                              unsigned char **wins, size_t max_wins)
{
    struct result r = {0, 0, {0}};
    struct dfx_isal *d;
    size_t pos = 0;
    uint64_t want = spacing;

    if (dfx_isal_new(&d) < 0)
        die("ISA-L is not built in");
    dfx_isal_set_verify(d, verify);
    dfx_isal_set_step(d, step);
    dfx_isal_start_at(d, 0, 0, 0, 0, NULL, 0);
    for (;;) {
        unsigned char *ni = (unsigned char *)in + pos, *no = out;
        unsigned int ai = len - pos < IN_PIECE ? (unsigned int)(len - pos) : IN_PIECE;
        unsigned int ao = OUT_PIECE, ai0 = ai;
        struct dfx_isal_mark mk;
        int ret;

        if (spacing)
            ret = dfx_isal_inflate_mark(d, &ni, &ai, &no, &ao, want, &mk);
        else
            ret = dfx_isal_inflate(d, &ni, &ai, &no, &ao);
        if (ret < 0)
            die("ISA-L: bad deflate data");
        pos += ai0 - ai;
        r.out += OUT_PIECE - ao;
        if (ret & DFX_ISAL_MARK) {
            if (r.points < max_wins) {
                keep_window(&wins[r.points]);
                dfx_isal_mark_window(d, wins[r.points]);
            }
            r.points++;
            want = mk.out + spacing;
        }
        if (ret & DFX_ISAL_NOMARK)
            want = mk.out + spacing;
        if (ret & DFX_ISAL_END)
            break;
        if (ai0 == ai && ao == OUT_PIECE && pos == len)
            die("ISA-L: truncated stream");
    }
    dfx_isal_get_stats(d, &r.st);
    dfx_isal_free(d);
    return r;
}

/* zlib, recording points as dfx.c does if spacing > 0. */
static struct result run_zlib(const unsigned char *in, size_t len, unsigned char *out,
                              uint64_t spacing, unsigned char **wins, size_t max_wins)
{
    struct result r = {0, 0, {0}};
    z_stream zs;
    size_t pos = 0;
    uint64_t next_point = spacing;
    int ret;

    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, -15) != Z_OK)
        die("zlib init");
    do {
        if (zs.avail_in == 0) {
            size_t n = len - pos < IN_PIECE ? len - pos : IN_PIECE;
            zs.next_in = (Bytef *)in + pos;
            zs.avail_in = (uInt)n;
            pos += n;
        }
        zs.next_out = out;
        zs.avail_out = OUT_PIECE;
        ret = inflate(&zs, spacing ? Z_BLOCK : Z_NO_FLUSH);
        r.out += OUT_PIECE - zs.avail_out;
        if (ret == Z_OK && spacing && (zs.data_type & 128) && !(zs.data_type & 64) &&
            zs.total_out >= next_point) {
            unsigned char *w = NULL;
            uInt wl = 0;

            keep_window(&w);
            inflateGetDictionary(&zs, w, &wl);
            if (r.points < max_wins)
                wins[r.points] = w;
            else
                free(w);
            r.points++;
            next_point = zs.total_out + spacing;
        }
        if (ret != Z_OK && ret != Z_STREAM_END)
            die("zlib: bad deflate data");
    } while (ret != Z_STREAM_END);
    inflateEnd(&zs);
    return r;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int rounds = 5, npos = 0;
    uint64_t spacing = 1u << 20;
    unsigned int step = 0;
    const char *pos[3];

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--spacing") && i + 1 < argc)
            spacing = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--step") && i + 1 < argc)
            step = (unsigned int)atoi(argv[++i]);
        else if (npos < 3)
            pos[npos++] = argv[i];
        else
            npos = 4;
    }
    if (npos != 3 || rounds < 1 || rounds > 99 || !spacing) {
        fputs("usage: bench_mark [--rounds N] [--spacing BYTES] [--step N] FILE OFFSET LENGTH\n",
              stderr);
        return 2;
    }
    int fd = open(pos[0], O_RDONLY);
    uint64_t off = strtoull(pos[1], NULL, 0), len = strtoull(pos[2], NULL, 0);
    unsigned char *in = malloc(len ? len : 1), *out = malloc(OUT_PIECE);
    if (fd < 0 || !in || !out)
        die("cannot open the file or allocate");
    for (uint64_t done = 0; done < len;) {
        ssize_t n = pread(fd, in + done, len - done, (off_t)(off + done));
        if (n <= 0)
            die("short read");
        done += (uint64_t)n;
    }
    close(fd);

    enum { ISAL, MARK, MARK_NOCHECK, ZPTS, ZLIB, NV };
    static const char *names[NV] = {"isal", "isal+mark", "isal+mark-nocheck", "zlib+points",
                                    "zlib"};
    double *t[NV];
    struct result res[NV];
    size_t max_wins = 1u << 16;
    unsigned char **wins = calloc(max_wins, sizeof(*wins));

    for (int v = 0; v < NV; v++)
        t[v] = calloc((size_t)rounds, sizeof(double));
    for (int k = 0; k < rounds; k++) {
        for (int v = 0; v < NV; v++) {
            double t0 = now();
            switch (v) {
            case ISAL:
                res[v] = run_isal(in, len, out, 0, true, step, wins, max_wins);
                break;
            case MARK:
                res[v] = run_isal(in, len, out, spacing, true, step, wins, max_wins);
                break;
            case MARK_NOCHECK:
                res[v] = run_isal(in, len, out, spacing, false, step, wins, max_wins);
                break;
            case ZPTS:
                res[v] = run_zlib(in, len, out, spacing, wins, max_wins);
                break;
            case ZLIB:
                res[v] = run_zlib(in, len, out, 0, wins, max_wins);
                break;
            }
            t[v][k] = now() - t0;
            for (size_t i = 0; i < res[v].points && i < max_wins; i++) {
                free(wins[i]);
                wins[i] = NULL;
            }
            if (res[v].out != res[0].out)
                die("the decoders disagree on the output size");
        }
    }
    double med[NV];
    for (int v = 0; v < NV; v++) {
        qsort(t[v], (size_t)rounds, sizeof(double), cmp_double);
        med[v] = t[v][rounds / 2];
    }
    printf("%" PRIu64 " bytes in, %" PRIu64 " out, spacing %" PRIu64 ", %d rounds (medians)\n",
           len, res[0].out, spacing, rounds);
    printf("%-18s %9s %8s %8s %7s %10s %10s\n", "decoder", "MB/s", "x isal", "x zlib", "points",
           "step calls", "step KiB");
    for (int v = 0; v < NV; v++)
        printf("%-18s %9.1f %8.3f %8.3f %7" PRIu64 " %10" PRIu64 " %10.1f\n", names[v],
               res[v].out / med[v] / 1e6, med[ISAL] / med[v], med[ZLIB] / med[v], res[v].points,
               res[v].st.step_calls, res[v].st.step_bytes / 1024.0);
    printf("mark check rejected %" PRIu64 ", unchecked %" PRIu64 ", searches given up %" PRIu64
           "\n",
           res[MARK].st.rejected, res[MARK].st.unchecked, res[MARK].st.gave_up);
    return 0;
}
