/*
 * Unit tests for fs/remote.c: remote byte sources read through the block
 * cache, compared byte for byte with the file served.
 *  - nginx: random and sequential reads from many threads, a small cache;
 *  - tests/servers/testserver.py, whose request log shows what was fetched:
 *    a random read costs one request of its block-rounded span, the bytes
 *    kept from open cost none, concurrent readers of one block share one
 *    fetch, a sequential reader keeps several requests in flight (the server
 *    sees them overlap) with few round trips, a random reader gets no
 *    fetch-ahead, the cache stays within its bound, an object replaced
 *    under the source fails reads with EIO (never mixed bytes, whether the
 *    server honours If-Match like S3 and nginx or ignores it like s3rver),
 *    and a server that goes away fails reads that work again when it is
 *    back;
 *  - s3:// sources through the signature-checking test server.
 */
#define _GNU_SOURCE
#include "check.h"
#include "remote.h"
#include "testsrv.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define OBJ_SIZE (8u << 20)
#define BLOCK (64u << 10)

static char *dir;
static unsigned char *obj;
static int nginx_port, py_port;
static struct ts_proc nginx, py;
static struct http_client *http;

static void py_cmd(const char *cmd)
{
    char reply[64];
    CHECK(ts_py_cmd(&py, cmd, reply, sizeof(reply)) == 0 && !strcmp(reply, "ok"));
}

/* The server's request count and largest number of requests at once. */
static void py_stats(long *requests, long *max_conc, char *log, size_t len)
{
    static char buf[1 << 20];
    const char *p;

    *requests = *max_conc = -1;
    if (ts_py_cmd(&py, "stats", buf, sizeof(buf)) < 0)
        return;
    if ((p = strstr(buf, "\"requests\": ")))
        *requests = atol(p + 12);
    if ((p = strstr(buf, "\"max_concurrent\": ")))
        *max_conc = atol(p + 18);
    if (log && len) {
        size_t n = strnlen(buf, len - 1);
        memcpy(log, buf, n);
        log[n] = '\0';
    }
}

static struct remote_ctx *ctx_new(size_t block, uint64_t cache)
{
    struct remote_opts o = {.block = block, .cache_bytes = cache};
    struct remote_ctx *c = NULL;
    CHECK_EQ(remote_ctx_new(http, NULL, &o, &c), 0);
    return c;
}

static struct src *open_url(struct remote_ctx *c, const char *scheme, int port, const char *name,
                            size_t head)
{
    char url[256], msg[512];
    struct http_error e;
    struct src *s = NULL;
    int err;

    snprintf(url, sizeof(url), "%s://127.0.0.1:%d/%s", scheme, port, name);
    err = remote_open(c, url, head, &s, &e);
    if (err)
        fprintf(stderr, "open %s: %s\n", url, http_problem(&e, msg, sizeof(msg)));
    CHECK_EQ(err, 0);
    return s;
}

static bool same(struct src *s, uint64_t off, size_t len)
{
    unsigned char *buf = malloc(len);
    int64_t n = src_pread(s, buf, len, off);
    size_t want = off >= OBJ_SIZE ? 0 : (OBJ_SIZE - off < len ? OBJ_SIZE - off : len);
    bool ok = n == (int64_t)want && !memcmp(buf, obj + off, want);
    if (!ok)
        fprintf(stderr, "pread(%zu at %llu) = %lld\n", len, (unsigned long long)off, (long long)n);
    free(buf);
    return ok;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* ---- testserver.py: what is fetched ---- */

static void test_random_reads_fetch_spans(void)
{
    struct remote_ctx *c = ctx_new(BLOCK, 4u << 20);
    struct remote_stats st;
    long req, conc;
    char log[65536];
    struct src *s;

    py_cmd("clear");
    s = open_url(c, "http", py_port, "obj", 0);
    if (!s)
        return;
    CHECK_EQ(s->size, OBJ_SIZE);
    py_stats(&req, &conc, NULL, 0);
    CHECK_EQ(req, 1); /* open: one round trip */
    /* The tail kept from open: no request. */
    CHECK(same(s, OBJ_SIZE - 1000, 1000));
    CHECK(same(s, OBJ_SIZE - REMOTE_TAIL, REMOTE_TAIL));
    py_stats(&req, &conc, NULL, 0);
    CHECK_EQ(req, 1);
    /* A 4 KiB read inside one block: one request for that block. */
    py_cmd("clear");
    CHECK(same(s, 3 * BLOCK + 100, 4096));
    py_stats(&req, &conc, log, sizeof(log));
    CHECK_EQ(req, 1);
    CHECK(strstr(log, "bytes=196608-262143") != NULL);
    /* A read across a block boundary: one request of two blocks. */
    py_cmd("clear");
    CHECK(same(s, 10 * BLOCK - 2048, 4096));
    py_stats(&req, &conc, log, sizeof(log));
    CHECK_EQ(req, 1);
    CHECK(strstr(log, "bytes=589824-720895") != NULL);
    /* Again: cached, no request. */
    py_cmd("clear");
    CHECK(same(s, 10 * BLOCK - 1000, 2000));
    CHECK(same(s, 3 * BLOCK, BLOCK));
    py_stats(&req, &conc, NULL, 0);
    CHECK_EQ(req, 0);
    /* Random 4 KiB reads far apart: no fetch-ahead, at most the block span. */
    remote_src_stats(s, &st);
    uint64_t bytes0 = st.bytes, ahead0 = st.ahead_blocks, seed = 42;
    py_cmd("clear");
    for (int i = 0; i < 30; i++) {
        uint64_t off = rnd(&seed) % (OBJ_SIZE - 8192);
        CHECK(same(s, off, 4096));
    }
    remote_src_stats(s, &st);
    CHECK_EQ(st.ahead_blocks, ahead0);
    CHECK(st.bytes - bytes0 <= 30 * 2 * BLOCK);
    py_stats(&req, &conc, NULL, 0);
    CHECK(req <= 30);
    src_free(s);

    /* A .npy.gz needs its head too: fetched at open, in parallel. */
    py_cmd("clear");
    s = open_url(c, "http", py_port, "obj", 8192);
    CHECK(same(s, 0, 8192));
    CHECK(same(s, 100, 50));
    py_stats(&req, &conc, NULL, 0);
    CHECK_EQ(req, 2);
    src_free(s);
    remote_ctx_free(c);
}

struct same_args {
    struct src *s;
    uint64_t off;
    size_t len;
    bool ok;
};

static void *same_thread(void *arg)
{
    struct same_args *a = arg;
    a->ok = same(a->s, a->off, a->len);
    return NULL;
}

/* Eight readers of one missing block, the server slow: one fetch. */
static void test_shared_fetch(void)
{
    struct remote_ctx *c = ctx_new(BLOCK, 4u << 20);
    struct same_args a[8];
    pthread_t t[8];
    long req, conc;
    struct src *s = open_url(c, "http", py_port, "obj", 0);

    if (!s)
        return;
    py_cmd("clear");
    py_cmd("delay 200");
    for (int i = 0; i < 8; i++) {
        a[i] = (struct same_args){.s = s, .off = 5 * BLOCK + 100, .len = 3000};
        pthread_create(&t[i], NULL, same_thread, &a[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        CHECK(a[i].ok);
    }
    py_cmd("delay 0");
    py_stats(&req, &conc, NULL, 0);
    CHECK_EQ(req, 1);
    src_free(s);
    remote_ctx_free(c);
}

/* A sequential pass: several requests in flight (the server sees them
 * overlap), few round trips, every byte right, the cache within bounds. */
static void test_sequential(void)
{
    struct remote_ctx *c = ctx_new(BLOCK, 8u << 20);
    struct remote_stats st, cs;
    long req, conc;
    struct src *s = open_url(c, "http", py_port, "obj", 0);
    size_t blocks = OBJ_SIZE / BLOCK;

    if (!s)
        return;
    py_cmd("clear");
    py_cmd("delay 20");
    for (uint64_t off = 0; off < OBJ_SIZE; off += 128u << 10)
        CHECK(same(s, off, 128u << 10));
    py_cmd("delay 0");
    py_stats(&req, &conc, NULL, 0);
    remote_src_stats(s, &st);
    fprintf(stderr, "sequential: %ld requests for %zu blocks, %ld at once, %llu ahead\n", req,
            blocks, conc, (unsigned long long)st.ahead_blocks);
    CHECK(conc >= 2);                            /* fetch-ahead runs in parallel */
    CHECK(req > 0 && (size_t)req <= blocks / 2); /* runs of several blocks */
    CHECK(st.ahead_blocks >= blocks / 2);
    CHECK(st.bytes <= OBJ_SIZE + REMOTE_TAIL); /* nothing fetched twice */
    CHECK_EQ(st.failures, 0);
    remote_ctx_stats(c, &cs);
    CHECK(cs.cache_bytes <= 8u << 20);
    src_free(s);
    remote_ctx_free(c);
}

/* A small cache: the fetch-ahead window stays within a quarter of it, the
 * cache within its bound, and the bytes are still right. */
static void test_small_cache(void)
{
    struct remote_ctx *c = ctx_new(BLOCK, 1u << 20);
    struct remote_stats st, cs;
    struct src *s = open_url(c, "http", py_port, "obj", 0);

    if (!s)
        return;
    for (uint64_t off = 0; off < OBJ_SIZE; off += 100000)
        CHECK(same(s, off, 100000));
    remote_ctx_stats(c, &cs);
    CHECK(cs.cache_bytes <= 1u << 20);
    remote_src_stats(s, &st);
    CHECK(st.bytes <= OBJ_SIZE + REMOTE_TAIL);
    /* Read again from the start: evicted, fetched again, still right. */
    CHECK(same(s, 0, 300000));
    src_free(s);
    remote_ctx_free(c);
}

/* The object replaced under the source. */
static void test_changed(void)
{
    struct remote_ctx *c = ctx_new(BLOCK, 4u << 20);
    char path[4096];
    unsigned char buf[4096];
    long req, conc;
    struct remote_stats st;
    struct src *s;

    snprintf(path, sizeof(path), "%s/py/moving", dir);
    for (int honour = 1; honour >= 0; honour--) {
        CHECK_EQ(ts_write_file(path, obj, OBJ_SIZE), 0);
        s = open_url(c, "http", py_port, "moving", 0);
        if (!s)
            return;
        CHECK(same(s, 0, 4096)); /* block 0 now cached */
        CHECK_EQ(ts_write_file(path, obj + 1, OBJ_SIZE), 0);
        py_cmd(honour ? "mode ifmatch 1" : "mode ifmatch 0");
        memset(buf, 0, sizeof(buf));
        CHECK_EQ(src_pread(s, buf, sizeof(buf), 20 * BLOCK), -EIO);
        for (size_t i = 0; i < sizeof(buf); i++)
            if (buf[i]) {
                CHECK(!"no byte of the new object copied");
                break;
            }
        CHECK_EQ(remote_check(s), -EIO);
        remote_src_stats(s, &st);
        CHECK(st.changed);
        /* Remembered: no request for the next read of new bytes. */
        py_cmd("clear");
        CHECK_EQ(src_pread(s, buf, sizeof(buf), 40 * BLOCK), -EIO);
        py_stats(&req, &conc, NULL, 0);
        CHECK_EQ(req, 0);
        /* Bytes cached from the old object are still the old object's. */
        CHECK(same(s, 100, 1000));
        src_free(s);
    }
    py_cmd("mode ifmatch 1");
    remote_ctx_free(c);
}

/* The server goes away and comes back: EREMOTEIO, then the same source works. */
static void test_server_down(void)
{
    struct remote_ctx *c = ctx_new(BLOCK, 4u << 20);
    char root[4096];
    unsigned char buf[1000];
    struct src *s = open_url(c, "http", py_port, "obj", 0);
    int port;

    if (!s)
        return;
    CHECK(same(s, 0, 1000));
    ts_stop(&py);
    CHECK_EQ(src_pread(s, buf, sizeof(buf), 30 * BLOCK), -EREMOTEIO);
    CHECK_EQ(remote_check(s), 0); /* not a change */
    snprintf(root, sizeof(root), "%s/py", dir);
    CHECK_EQ(ts_py_start(root, py_port, NULL, &py, &port), 0);
    CHECK(same(s, 30 * BLOCK, 1000));
    /* A server that stops answering: ETIMEDOUT (timeout 1 s, 1 retry). */
    py_cmd("fault stall 3 2");
    CHECK_EQ(src_pread(s, buf, sizeof(buf), 50 * BLOCK), -ETIMEDOUT);
    py_cmd("clear");
    CHECK(same(s, 50 * BLOCK, 1000));
    src_free(s);
    remote_ctx_free(c);
}

/* ---- nginx: many threads ---- */

struct mix_args {
    struct src *s;
    unsigned seed;
    int bad;
};

static void *mix_thread(void *arg)
{
    struct mix_args *a = arg;
    uint64_t seed = a->seed * 2654435761u + 1;
    unsigned char *buf = malloc(300000);

    for (int i = 0; i < 60; i++) {
        uint64_t off;
        size_t len;
        if (a->seed % 2) { /* sequential stretches */
            off = (uint64_t)(a->seed * 997 + (unsigned)i * 65536) % OBJ_SIZE;
            len = 65536;
        } else {
            off = rnd(&seed) % OBJ_SIZE;
            len = 1 + rnd(&seed) % 300000;
        }
        int64_t n = src_pread(a->s, buf, len, off);
        size_t want = OBJ_SIZE - off < len ? OBJ_SIZE - off : len;
        if (n != (int64_t)want || memcmp(buf, obj + off, want))
            a->bad++;
    }
    free(buf);
    return NULL;
}

static void test_threads_nginx(void)
{
    struct remote_ctx *c = ctx_new(32u << 10, 2u << 20);
    struct mix_args a[8];
    pthread_t t[8];
    struct remote_stats cs;
    struct src *s = open_url(c, "http", nginx_port, "obj", 0);

    if (!s)
        return;
    for (int i = 0; i < 8; i++) {
        a[i] = (struct mix_args){.s = s, .seed = (unsigned)i + 1};
        pthread_create(&t[i], NULL, mix_thread, &a[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ(a[i].bad, 0);
    }
    remote_ctx_stats(c, &cs);
    CHECK(cs.cache_bytes <= 2u << 20);
    CHECK_EQ(cs.failures, 0);
    /* A whole pass in odd sizes. */
    for (uint64_t off = 0; off < OBJ_SIZE; off += 77777)
        CHECK(same(s, off, 77777));
    src_free(s);
    remote_ctx_free(c);
}

/* ---- s3:// ---- */

#define SIG_SPEC "AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY:eu-west-2"

static void test_s3_source(void)
{
    struct ts_proc sp = {0};
    struct s3_config cfg;
    struct remote_ctx *c = NULL;
    struct remote_opts o = {.block = BLOCK};
    struct http_error e;
    struct src *s = NULL;
    char root[4096], path[4096], ep[64], msg[512];
    const char *extra[] = {"--sigv4", SIG_SPEC, NULL};
    int port;

    snprintf(root, sizeof(root), "%s/s3", dir);
    mkdir(root, 0755);
    snprintf(path, sizeof(path), "%s/s3/bkt", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/s3/bkt/run 1+2%%.npz", dir);
    CHECK_EQ(ts_write_file(path, obj, 1u << 20), 0);
    if (ts_py_start(root, 0, extra, &sp, &port) < 0) {
        CHECK(!"signature-checking server started");
        return;
    }
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent", 1);
    setenv("AWS_CONFIG_FILE", "/nonexistent", 1);
    setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", 1);
    setenv("AWS_REGION", "eu-west-2", 1);
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", port);
    struct s3_opts so = {.endpoint = ep};
    CHECK_EQ(s3_config_load(&so, &cfg, msg, sizeof(msg)), 0);
    CHECK_EQ(remote_ctx_new(http, &cfg, &o, &c), 0);
    CHECK_EQ(remote_open(c, "s3://bkt/run 1+2%.npz", 0, &s, &e), 0);
    if (s) {
        CHECK_EQ(s->size, 1u << 20);
        CHECK(remote_is_src(s) && !strcmp(remote_url(s), "s3://bkt/run 1+2%.npz"));
        CHECK(remote_ident(s)->etag[0] == '"');
        unsigned char *buf = malloc(1u << 20);
        CHECK_EQ(src_pread(s, buf, 1u << 20, 0), 1u << 20);
        CHECK(!memcmp(buf, obj, 1u << 20));
        free(buf);
        src_free(s);
    }
    s = NULL;
    CHECK_EQ(remote_open(c, "s3://bkt/nokey.npz", 0, &s, &e), -ENOENT);
    CHECK(strstr(s3_problem(&e, msg, sizeof(msg)), "no such key") != NULL);
    CHECK_EQ(remote_open(c, "s3://bkt/dir/", 0, &s, &e), -EISDIR);
    CHECK_EQ(remote_open(c, "ftp://x/y", 0, &s, &e), -EINVAL);
    remote_ctx_free(c);
    /* Without an S3 configuration, s3:// is refused. */
    c = ctx_new(BLOCK, 1u << 20);
    CHECK_EQ(remote_open(c, "s3://bkt/run.npz", 0, &s, &e), -EINVAL);
    remote_ctx_free(c);
    s3_config_destroy(&cfg);
    ts_stop(&sp);
}

static void test_open_errors(void)
{
    struct remote_ctx *c = ctx_new(BLOCK, 1u << 20);
    struct http_error e;
    struct src *s = NULL;
    char url[256], msg[512];
    struct remote_opts bad = {.block = 100};
    struct remote_ctx *b = NULL;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/missing", nginx_port);
    CHECK_EQ(remote_open(c, url, 0, &s, &e), -ENOENT);
    CHECK(s == NULL);
    CHECK(strstr(http_problem(&e, msg, sizeof(msg)), "404") != NULL);
    py_cmd("mode norange 1");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/obj", py_port);
    CHECK_EQ(remote_open(c, url, 0, &s, &e), -EOPNOTSUPP);
    py_cmd("mode norange 0");
    CHECK(remote_is_url("https://x/y") && remote_is_url("s3://b/k") && !remote_is_url("/x"));
    CHECK_EQ(remote_ctx_new(http, NULL, &bad, &b), -EINVAL);
    remote_ctx_free(c);
}

int main(void)
{
    char path[4096];
    struct http_opts ho = {
        .connections = 8, .timeout_ms = 1000, .retries = 1, .retry_base_ms = 5, .retry_max_ms = 20};

    alarm(240);
    dir = ts_tmpdir();
    if (!dir)
        return 1;
    obj = malloc(OBJ_SIZE + 64); /* + room for obj + 1 as "the replaced object" */
    ts_fill(obj, OBJ_SIZE + 64, 3);
    if (ts_nginx_start(dir, &nginx, &nginx_port, NULL) < 0) {
        CHECK(!"nginx started");
        goto out;
    }
    snprintf(path, sizeof(path), "%s/py", dir);
    mkdir(path, 0755);
    if (ts_py_start(path, 0, NULL, &py, &py_port) < 0) {
        CHECK(!"testserver.py started");
        goto out;
    }
    snprintf(path, sizeof(path), "%s/www/obj", dir);
    ts_write_file(path, obj, OBJ_SIZE);
    snprintf(path, sizeof(path), "%s/py/obj", dir);
    ts_write_file(path, obj, OBJ_SIZE);
    CHECK_EQ(http_client_new(&ho, &http, NULL), 0);

    test_open_errors();
    test_random_reads_fetch_spans();
    test_shared_fetch();
    test_sequential();
    test_small_cache();
    test_changed();
    test_threads_nginx();
    test_s3_source();
    test_server_down();
    http_client_free(http);
out:
    ts_stop(&py);
    ts_stop(&nginx);
    ts_rmtree(dir);
    free(dir);
    free(obj);
    return check_exit("test_remote");
}
