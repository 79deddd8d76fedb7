/*
 * Unit tests for fs/http.c against real servers on 127.0.0.1:
 *  - nginx: what a correct static-file server does (Range, ETag, If-Match ->
 *    412, keep-alive, redirects, HTTPS with a self-signed certificate);
 *  - tests/servers/testserver.py: what nginx does not do, each case naming
 *    the real server behaviour it stands for (no Range support, a wrong
 *    Content-Range, 503 SlowDown / 429 then success, bodies cut short,
 *    resets, an object replaced mid-way, a server that goes away).
 * Every byte received is compared with the file served.
 */
#define _GNU_SOURCE
#include "check.h"
#include "http.h"
#include "testsrv.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define OBJ_SIZE (3u << 20)

static char *dir;
static unsigned char *obj; /* contents of www/obj (nginx) and py/obj */
static int nginx_port, tls_port, py_port;
static struct ts_proc nginx, py;

static struct http_client *client(unsigned conns, unsigned timeout_ms, int retries,
                                  const char *cacert, const char *header_file)
{
    struct http_opts o = {
        .connections = conns,
        .timeout_ms = timeout_ms,
        .retries = retries,
        .retry_base_ms = 5,
        .retry_max_ms = 50,
        .cacert = cacert,
        .header_file = header_file,
    };
    struct http_client *c = NULL;
    struct http_error e;
    CHECK_EQ(http_client_new(&o, &c, &e), 0);
    return c;
}

static void url_of(char *buf, size_t len, const char *scheme, int port, const char *path)
{
    snprintf(buf, len, "%s://127.0.0.1:%d/%s", scheme, port, path);
}

/* A ranged GET of [off, off + len) into buf. */
static int get(struct http_client *c, const char *url, uint64_t off, size_t len, void *buf,
               const struct http_ident *expect, struct http_req *r)
{
    struct iovec v = {.iov_base = buf, .iov_len = len};
    memset(r, 0, sizeof(*r));
    r->kind = HTTP_RANGE;
    r->url = url;
    r->off = off;
    r->iov = &v;
    r->iovcnt = 1;
    r->expect = expect;
    return http_run(c, r);
}

static int py_cmd(const char *cmd)
{
    char reply[64];
    int err = ts_py_cmd(&py, cmd, reply, sizeof(reply));
    CHECK(err == 0 && !strcmp(reply, "ok"));
    return err;
}

/* ---- nginx ---- */

static void test_probe_and_ranges(void)
{
    struct http_client *c = client(4, 5000, 2, NULL, NULL);
    struct http_probe p;
    struct http_error e;
    struct http_stats st;
    char url[256], access[4096];
    unsigned char *buf = malloc(OBJ_SIZE);

    url_of(url, sizeof(url), "http", nginx_port, "obj");
    /* nginx answers the suffix range right: one round trip. */
    CHECK_EQ(http_probe(c, url, NULL, 0, 65536, &p, &e), 0);
    CHECK_EQ(p.requests, 1);
    CHECK_EQ(p.id.size, OBJ_SIZE);
    CHECK(p.id.etag[0] == '"');
    CHECK(p.id.last_modified[0] != '\0');
    CHECK_EQ(p.tail_off, OBJ_SIZE - 65536);
    CHECK(p.tail_len == 65536 && !memcmp(p.tail, obj + OBJ_SIZE - 65536, 65536));

    /* Random ranges, byte for byte, each with If-Match. */
    for (int i = 0; i < 40; i++) {
        struct http_req r;
        uint64_t off = ((uint64_t)i * 7919 * 131) % OBJ_SIZE;
        size_t len = 1 + (size_t)(i * 104729) % 200000;
        if (off + len > OBJ_SIZE)
            len = OBJ_SIZE - off;
        memset(buf, 0, len);
        CHECK_EQ(get(c, url, off, len, buf, &p.id, &r), 0);
        CHECK_EQ(r.got_len, len);
        CHECK(!memcmp(buf, obj + off, len));
        CHECK_EQ(r.attempts, 1);
    }
    /* If-Match: ETag on each (nginx logs the quotes as \x22). */
    snprintf(access, sizeof(access), "%s/access.log", dir);
    char etag[HTTP_ETAG_MAX];
    snprintf(etag, sizeof(etag), "%.*s", (int)strlen(p.id.etag) - 2, p.id.etag + 1);
    CHECK_EQ(ts_count_lines(access, etag), 40);
    http_get_stats(c, &st);
    CHECK_EQ(st.requests, 41);
    CHECK_EQ(st.failures, 0);
    CHECK(st.connections >= 1 && st.connections <= 4);
    http_probe_destroy(&p);

    /* Head and tail of one object in parallel (a .npy.gz needs both). */
    CHECK_EQ(http_probe(c, url, NULL, 4096, 8192, &p, &e), 0);
    CHECK_EQ(p.requests, 2);
    CHECK(p.head_len == 4096 && !memcmp(p.head, obj, 4096));
    CHECK(p.tail_len == 8192 && !memcmp(p.tail, obj + OBJ_SIZE - 8192, 8192));
    http_probe_destroy(&p);

    /* An object smaller than the tail asked for, and an empty one. */
    url_of(url, sizeof(url), "http", nginx_port, "small");
    CHECK_EQ(http_probe(c, url, NULL, 4096, 65536, &p, &e), 0);
    CHECK_EQ(p.id.size, 1000);
    CHECK(p.tail_len == 1000 && p.tail_off == 0 && !memcmp(p.tail, obj, 1000));
    CHECK(p.head_len == 1000 && !memcmp(p.head, obj, 1000));
    http_probe_destroy(&p);
    url_of(url, sizeof(url), "http", nginx_port, "empty");
    CHECK_EQ(http_probe(c, url, NULL, 0, 65536, &p, &e), 0);
    CHECK_EQ(p.id.size, 0);
    CHECK_EQ(p.tail_len, 0);
    http_probe_destroy(&p);
    CHECK_EQ(http_probe(c, url, NULL, 4096, 65536, &p, &e), 0);
    CHECK_EQ(p.id.size, 0);
    http_probe_destroy(&p);
    /* testserver.py answers 416 to both ranges of an empty object (as S3
     * does): the probe falls back to a HEAD. */
    url_of(url, sizeof(url), "http", py_port, "empty");
    CHECK_EQ(http_probe(c, url, NULL, 4096, 65536, &p, &e), 0);
    CHECK_EQ(p.id.size, 0);
    CHECK(p.tail_len == 0 && p.head_len == 0);
    http_probe_destroy(&p);
    free(buf);
    http_client_free(c);
}

static void test_not_found_and_redirects(void)
{
    struct http_client *c = client(2, 5000, 3, NULL, NULL);
    struct http_probe p;
    struct http_error e;
    struct http_stats st;
    char url[256], msg[512];

    url_of(url, sizeof(url), "http", nginx_port, "nope");
    CHECK_EQ(http_probe(c, url, NULL, 0, 65536, &p, &e), -ENOENT);
    CHECK_EQ(e.why, HTTP_ERR_STATUS);
    CHECK_EQ(e.status, 404);
    CHECK(strstr(http_problem(&e, msg, sizeof(msg)), "404 Not Found: no such object") != NULL);
    http_get_stats(c, &st);
    CHECK_EQ(st.retries, 0); /* a 404 is not retried */

    url_of(url, sizeof(url), "http", nginx_port, "redir/obj");
    CHECK_EQ(http_probe(c, url, NULL, 0, 4096, &p, &e), 0);
    CHECK(p.tail_len == 4096 && !memcmp(p.tail, obj + OBJ_SIZE - 4096, 4096));
    http_probe_destroy(&p);

    url_of(url, sizeof(url), "http", nginx_port, "loop/x");
    CHECK_EQ(http_probe(c, url, NULL, 0, 4096, &p, &e), -ELOOP);
    CHECK_EQ(e.why, HTTP_ERR_REDIRECTS);
    http_client_free(c);
}

/* nginx stands for any server with strong ETags that honours If-Match. */
static void test_changed_nginx(void)
{
    struct http_client *c = client(2, 5000, 3, NULL, NULL);
    struct http_probe p;
    struct http_error e;
    struct http_req r;
    char url[256], path[4096], msg[512];
    unsigned char buf[1000];

    snprintf(path, sizeof(path), "%s/www/victim", dir);
    CHECK_EQ(ts_write_file(path, obj, 100000), 0);
    url_of(url, sizeof(url), "http", nginx_port, "victim");
    CHECK_EQ(http_probe(c, url, NULL, 0, 4096, &p, &e), 0);
    CHECK_EQ(get(c, url, 500, sizeof(buf), buf, &p.id, &r), 0);
    /* Same size, other bytes and mtime: only the ETag tells (nginx's is
     * mtime in seconds and size: move the mtime on). */
    CHECK_EQ(ts_write_file(path, obj + 1, 100000), 0);
    struct timespec later[2] = {{.tv_sec = time(NULL) + 100}, {.tv_sec = time(NULL) + 100}};
    CHECK_EQ(utimensat(AT_FDCWD, path, later, 0), 0);
    CHECK_EQ(get(c, url, 500, sizeof(buf), buf, &p.id, &r), -ESTALE);
    CHECK_EQ(r.error.why, HTTP_ERR_CHANGED);
    CHECK_EQ(r.error.status, 412);
    CHECK(strstr(http_problem(&r.error, msg, sizeof(msg)), "changed") != NULL);
    http_probe_destroy(&p);
    http_client_free(c);
}

static void test_https(void)
{
    char url[256], ca[4096], msg[512];
    struct http_client *c;
    struct http_probe p;
    struct http_error e;

    snprintf(ca, sizeof(ca), "%s/cert.pem", dir);
    url_of(url, sizeof(url), "https", tls_port, "obj");
    /* Verified by default: a self-signed certificate is refused. */
    c = client(2, 5000, 2, NULL, NULL);
    CHECK_EQ(http_probe(c, url, NULL, 0, 4096, &p, &e), -EPROTO);
    CHECK_EQ(e.why, HTTP_ERR_TLS_VERIFY);
    http_problem(&e, msg, sizeof(msg));
    CHECK(strstr(msg, "certificate") && strstr(msg, "cacert"));
    http_client_free(c);
    /* ... and trusted with cacert. */
    c = client(2, 5000, 2, ca, NULL);
    CHECK_EQ(http_probe(c, url, NULL, 4096, 4096, &p, &e), 0);
    CHECK(p.tail_len == 4096 && !memcmp(p.tail, obj + OBJ_SIZE - 4096, 4096));
    CHECK(p.head_len == 4096 && !memcmp(p.head, obj, 4096));
    http_probe_destroy(&p);
    /* https never follows a redirect to plain http: /redir/ on the TLS
     * port redirects to https itself, so this one works. */
    url_of(url, sizeof(url), "https", tls_port, "redir/small");
    CHECK_EQ(http_probe(c, url, NULL, 0, 4096, &p, &e), 0);
    CHECK_EQ(p.id.size, 1000);
    http_probe_destroy(&p);
    http_client_free(c);
    /* A relative CA file is taken from where the client was made: a
     * daemon works from / once the mount is up. */
    {
        char *here = getcwd(NULL, 0);
        CHECK(here != NULL && chdir(dir) == 0);
        c = client(2, 5000, 2, "cert.pem", NULL);
        CHECK(chdir("/") == 0);
        url_of(url, sizeof(url), "https", tls_port, "obj");
        int rc = http_probe(c, url, NULL, 0, 4096, &p, &e);
        CHECK_EQ(rc, 0);
        if (rc == 0)
            http_probe_destroy(&p);
        http_client_free(c);
        CHECK(here && chdir(here) == 0);
        free(here);
    }
    /* A CA file that does not exist is an error at creation. */
    struct http_opts o = {.cacert = "/nonexistent/ca.pem", .retries = -1};
    c = NULL;
    CHECK_EQ(http_client_new(&o, &c, &e), -ENOENT);
    CHECK(c == NULL);
}

/* ---- testserver.py ---- */

/* Stands for static servers and proxies that ignore Range: the reply is
 * refused once its headers say 200, before the body is downloaded. */
static void test_no_range(void)
{
    struct http_client *c = client(2, 5000, 3, NULL, NULL);
    struct http_probe p;
    struct http_error e;
    struct http_stats st;
    char url[256], msg[512];

    url_of(url, sizeof(url), "http", py_port, "obj");
    py_cmd("mode norange 1");
    CHECK_EQ(http_probe(c, url, NULL, 0, 65536, &p, &e), -EOPNOTSUPP);
    CHECK_EQ(e.why, HTTP_ERR_NO_RANGE);
    CHECK(strstr(http_problem(&e, msg, sizeof(msg)), "ignores Range") != NULL);
    http_get_stats(c, &st);
    CHECK(st.bytes == 0); /* not a byte of the 3 MiB body taken */
    CHECK_EQ(st.retries, 0);
    /* A small object fits the tail asked for: the 200 carries all of it. */
    url_of(url, sizeof(url), "http", py_port, "small");
    CHECK_EQ(http_probe(c, url, NULL, 0, 65536, &p, &e), 0);
    CHECK(p.tail_len == 1000 && !memcmp(p.tail, obj, 1000));
    http_probe_destroy(&p);
    /* A ranged GET with a known identity never accepts a 200. */
    struct http_ident id = {.size = 1000};
    struct http_req r;
    unsigned char buf[100];
    CHECK_EQ(get(c, url, 0, 100, buf, &id, &r), -EOPNOTSUPP);
    py_cmd("mode norange 0");
    http_client_free(c);
}

/* Stands for a broken proxy or cache that answers another range than asked
 * (an off-by-one Content-Range), and one that sends more than asked. */
static void test_bad_range_and_long_body(void)
{
    struct http_client *c = client(2, 5000, 3, NULL, NULL);
    struct http_ident id = {.size = OBJ_SIZE};
    struct http_req r;
    char url[256];
    unsigned char *buf = calloc(1, 8192 + 16);

    url_of(url, sizeof(url), "http", py_port, "obj");
    py_cmd("mode badrange 1");
    CHECK_EQ(get(c, url, 1000, 8192, buf, &id, &r), -EPROTO);
    CHECK_EQ(r.error.why, HTTP_ERR_BAD_RANGE);
    CHECK_EQ(r.attempts, 1);
    py_cmd("mode badrange 0");
    py_cmd("mode long 1");
    memset(buf, 0, 8192 + 16);
    CHECK_EQ(get(c, url, 1000, 8192, buf, &id, &r), -EPROTO);
    CHECK_EQ(r.error.why, HTTP_ERR_TOO_LONG);
    CHECK_EQ(buf[8192], 0); /* nothing written past the buffer */
    py_cmd("mode long 0");
    free(buf);
    http_client_free(c);
}

/* Stands for S3's 503 SlowDown and 500 InternalError, and any server's 429
 * Too Many Requests: retried with backoff, then the data is right. */
static void test_retries(void)
{
    struct http_client *c = client(2, 5000, 4, NULL, NULL);
    struct http_ident id = {.size = OBJ_SIZE};
    struct http_stats st;
    struct http_req r;
    char url[256], msg[512];
    unsigned char buf[70000];

    url_of(url, sizeof(url), "http", py_port, "obj");
    py_cmd("fault status 503 2");
    CHECK_EQ(get(c, url, 12345, sizeof(buf), buf, &id, &r), 0);
    CHECK(!memcmp(buf, obj + 12345, sizeof(buf)));
    CHECK_EQ(r.attempts, 3);
    py_cmd("fault retry-after 429 1");
    CHECK_EQ(get(c, url, 1, sizeof(buf), buf, &id, &r), 0);
    CHECK(!memcmp(buf, obj + 1, sizeof(buf)));
    CHECK_EQ(r.attempts, 2);
    http_get_stats(c, &st);
    CHECK_EQ(st.retries, 3);
    CHECK_EQ(st.failures, 0);
    /* More failures than retries: the last status is the error. */
    py_cmd("fault status 503 5");
    CHECK_EQ(get(c, url, 1, sizeof(buf), buf, &id, &r), -EIO);
    CHECK_EQ(r.attempts, 5);
    CHECK_EQ(r.error.status, 503);
    http_problem(&r.error, msg, sizeof(msg));
    CHECK(strstr(msg, "503") != NULL);
    http_get_stats(c, &st);
    CHECK_EQ(st.failures, 1);
    py_cmd("clear");
    http_client_free(c);
}

/* Stands for a connection dropped mid-body (a load balancer timing out, a
 * server restarting) and a connection reset: retried, and a ranged GET with
 * a known ETag resumes after the bytes it already has. */
static void test_cut_and_reset(void)
{
    struct http_client *c = client(2, 5000, 3, NULL, NULL);
    struct http_probe p;
    struct http_error e;
    struct http_req r;
    char url[256], stats[65536];
    unsigned char *buf = malloc(300000);

    url_of(url, sizeof(url), "http", py_port, "obj");
    CHECK_EQ(http_probe(c, url, NULL, 0, 1024, &p, &e), 0);
    py_cmd("clear");
    py_cmd("fault cut 100000");
    CHECK_EQ(get(c, url, 50000, 300000, buf, &p.id, &r), 0);
    CHECK(!memcmp(buf, obj + 50000, 300000));
    CHECK_EQ(r.attempts, 2);
    CHECK_EQ(ts_py_cmd(&py, "stats", stats, sizeof(stats)), 0);
    /* The second request asked only for the rest. */
    CHECK(strstr(stats, "bytes=150000-349999") != NULL);
    py_cmd("fault reset -");
    CHECK_EQ(get(c, url, 7, 5000, buf, &p.id, &r), 0);
    CHECK(!memcmp(buf, obj + 7, 5000));
    CHECK_EQ(r.attempts, 2);
    /* Reset every time: the error says so. */
    py_cmd("fault reset - 10");
    CHECK_EQ(get(c, url, 7, 5000, buf, &p.id, &r), -ECONNRESET);
    CHECK_EQ(r.error.why, HTTP_ERR_RESET);
    CHECK_EQ(r.attempts, 4);
    py_cmd("clear");
    http_probe_destroy(&p);
    free(buf);
    http_client_free(c);
}

/* An object replaced mid-way: a server honouring If-Match answers 412 (like
 * S3 and nginx); one that ignores it but sends the new ETag (like s3rver and
 * some CDNs) is caught by comparing the ETag. */
static void test_replaced(void)
{
    struct http_client *c = client(2, 5000, 3, NULL, NULL);
    struct http_probe p;
    struct http_error e;
    struct http_req r;
    char url[256], path[4096], last[8192];
    unsigned char buf[4096];

    snprintf(path, sizeof(path), "%s/py/moving", dir);
    CHECK_EQ(ts_write_file(path, obj, 200000), 0);
    url_of(url, sizeof(url), "http", py_port, "moving");
    CHECK_EQ(http_probe(c, url, NULL, 0, 4096, &p, &e), 0);
    CHECK_EQ(ts_write_file(path, obj + 3, 200000), 0); /* new bytes: new ETag */
    CHECK_EQ(get(c, url, 0, sizeof(buf), buf, &p.id, &r), -ESTALE);
    CHECK_EQ(r.error.status, 412);
    CHECK_EQ(ts_py_cmd(&py, "last", last, sizeof(last)), 0);
    CHECK(strstr(last, "If-Match") != NULL);
    py_cmd("mode ifmatch 0");
    memset(buf, 0, sizeof(buf));
    CHECK_EQ(get(c, url, 0, sizeof(buf), buf, &p.id, &r), -ESTALE);
    CHECK_EQ(r.error.why, HTTP_ERR_CHANGED);
    CHECK_EQ(r.error.status, 206);
    CHECK_EQ(r.got_len, 0); /* not one byte of the new object taken */
    /* A server with no ETag at all: Last-Modified still tells. */
    struct timespec later[2] = {{.tv_sec = time(NULL) + 100}, {.tv_sec = time(NULL) + 100}};
    CHECK_EQ(utimensat(AT_FDCWD, path, later, 0), 0);
    py_cmd("mode noetag 1");
    struct http_ident id = p.id;
    id.etag[0] = '\0';
    CHECK_EQ(get(c, url, 0, sizeof(buf), buf, &id, &r), -ESTALE);
    py_cmd("mode noetag 0");
    py_cmd("mode ifmatch 1");
    http_probe_destroy(&p);
    http_client_free(c);
}

/* A server that goes away (refused), and one that stops answering
 * (timeout); both work again when back, with the same client. */
static void test_server_down_and_back(void)
{
    struct http_client *c = client(2, 1000, 2, NULL, NULL);
    struct http_ident id = {.size = OBJ_SIZE};
    struct http_req r;
    char url[256], root[4096], msg[512];
    unsigned char buf[10000];
    int port;

    snprintf(root, sizeof(root), "%s/py", dir);
    url_of(url, sizeof(url), "http", py_port, "obj");
    CHECK_EQ(get(c, url, 0, sizeof(buf), buf, &id, &r), 0);
    ts_stop(&py);
    CHECK_EQ(get(c, url, 0, sizeof(buf), buf, &id, &r), -ECONNREFUSED);
    CHECK_EQ(r.attempts, 3);
    CHECK(strstr(http_problem(&r.error, msg, sizeof(msg)), "refused") != NULL);
    CHECK_EQ(ts_py_start(root, py_port, NULL, &py, &port), 0);
    CHECK_EQ(port, py_port);
    memset(buf, 0, sizeof(buf));
    CHECK_EQ(get(c, url, 100, sizeof(buf), buf, &id, &r), 0);
    CHECK(!memcmp(buf, obj + 100, sizeof(buf)));

    /* No reply for longer than the timeout, every time. */
    py_cmd("fault stall 3 3");
    CHECK_EQ(get(c, url, 0, sizeof(buf), buf, &id, &r), -ETIMEDOUT);
    CHECK_EQ(r.error.why, HTTP_ERR_TIMEOUT);
    CHECK(strstr(http_problem(&r.error, msg, sizeof(msg)), "timeout") != NULL);
    py_cmd("clear");
    http_client_free(c);
}

/* Many requests in flight, never more than `connections` at the server. */
static void test_parallel_pool(void)
{
    enum { N = 24 };
    struct http_client *c = client(4, 5000, 2, NULL, NULL);
    struct http_ident id = {.size = OBJ_SIZE};
    struct http_req rs[N], *rp[N];
    struct iovec v[N];
    struct http_stats st;
    char url[256], stats[65536];
    unsigned char *buf = malloc((size_t)N * 65536);
    int maxc = -1;

    url_of(url, sizeof(url), "http", py_port, "obj");
    py_cmd("clear");
    py_cmd("delay 50");
    for (int i = 0; i < N; i++) {
        memset(&rs[i], 0, sizeof(rs[i]));
        v[i].iov_base = buf + (size_t)i * 65536;
        v[i].iov_len = 65536;
        rs[i].kind = HTTP_RANGE;
        rs[i].url = url;
        rs[i].off = (uint64_t)i * 100000;
        rs[i].iov = &v[i];
        rs[i].iovcnt = 1;
        rs[i].expect = &id;
        rs[i].prio = i % 2 ? HTTP_PRIO_AHEAD : HTTP_PRIO_DEMAND;
        rp[i] = &rs[i];
    }
    CHECK_EQ(http_run_all(c, rp, N), 0);
    for (int i = 0; i < N; i++)
        CHECK(!memcmp(v[i].iov_base, obj + (size_t)i * 100000, 65536));
    CHECK_EQ(ts_py_cmd(&py, "stats", stats, sizeof(stats)), 0);
    const char *m = strstr(stats, "\"max_concurrent\": ");
    if (m)
        maxc = atoi(m + 18);
    CHECK(maxc >= 2 && maxc <= 4);
    http_get_stats(c, &st);
    CHECK(st.connections <= 4);
    CHECK(st.opened <= 4); /* kept alive, not reopened */
    py_cmd("delay 0");
    free(buf);
    http_client_free(c);
}

static atomic_int done_count;

static void count_done(struct http_req *r)
{
    (void)r;
    atomic_fetch_add(&done_count, 1);
}

/* Demand requests go before queued fetch-ahead ones; a promoted one too.
 * One connection: A (demand) runs or is first in line, B-D (ahead) queue,
 * D is promoted, E (demand) comes last: the order is A D E B C whatever the
 * timing, as both queues are FIFO. */
static void test_priorities(void)
{
    struct http_client *c = client(1, 5000, 0, NULL, NULL);
    struct http_ident id = {.size = OBJ_SIZE};
    struct http_req rs[5];
    struct iovec v[5];
    char url[256], stats[65536], want[5][32];
    unsigned char buf[5][100];
    const char *pos[5];

    url_of(url, sizeof(url), "http", py_port, "obj");
    py_cmd("clear");
    py_cmd("delay 100");
    atomic_store(&done_count, 0);
    for (int i = 0; i < 5; i++) {
        memset(&rs[i], 0, sizeof(rs[i]));
        v[i].iov_base = buf[i];
        v[i].iov_len = 100;
        rs[i].kind = HTTP_RANGE;
        rs[i].url = url;
        rs[i].off = (uint64_t)i * 1000;
        rs[i].iov = &v[i];
        rs[i].iovcnt = 1;
        rs[i].expect = &id;
        rs[i].prio = i >= 1 && i <= 3 ? HTTP_PRIO_AHEAD : HTTP_PRIO_DEMAND;
        rs[i].done = count_done;
        snprintf(want[i], sizeof(want[i]), "bytes=%d-%d", i * 1000, i * 1000 + 99);
    }
    for (int i = 0; i < 4; i++)
        CHECK_EQ(http_submit(c, &rs[i]), 0);
    http_promote(c, &rs[3]);
    CHECK_EQ(http_submit(c, &rs[4]), 0);
    for (int i = 0; i < 3000 && atomic_load(&done_count) < 5; i++)
        usleep(10000);
    CHECK_EQ(atomic_load(&done_count), 5);
    for (int i = 0; i < 5; i++) {
        CHECK_EQ(rs[i].error.err, 0);
        CHECK(!memcmp(buf[i], obj + i * 1000, 100));
    }
    CHECK_EQ(ts_py_cmd(&py, "stats", stats, sizeof(stats)), 0);
    for (int i = 0; i < 5; i++)
        pos[i] = strstr(stats, want[i]);
    CHECK(pos[0] && pos[1] && pos[2] && pos[3] && pos[4]);
    CHECK(pos[0] < pos[3] && pos[3] < pos[4] && pos[4] < pos[1] && pos[1] < pos[2]);
    py_cmd("delay 0");
    http_client_free(c);
}

/* Extra headers from a file reach the server; their values never show. */
static void test_header_file(void)
{
    char path[4096], url[256], last[8192], msg[512];
    struct http_client *c = NULL;
    struct http_probe p;
    struct http_error e;
    const char *good = "# a comment\n\nAuthorization: Bearer s3cr3t-t0ken\nX-Extra: 1\n";
    const char *bad = "X-Ok: 1\nthis is not a header s3cr3t\n";
    const char *reserved = "Range: bytes=0-1\n";

    snprintf(path, sizeof(path), "%s/headers", dir);
    CHECK_EQ(ts_write_file(path, good, strlen(good)), 0);
    c = client(2, 5000, 1, NULL, path);
    url_of(url, sizeof(url), "http", py_port, "small");
    CHECK_EQ(http_probe(c, url, NULL, 0, 100, &p, &e), 0);
    http_probe_destroy(&p);
    CHECK_EQ(ts_py_cmd(&py, "last", last, sizeof(last)), 0);
    CHECK(strstr(last, "Bearer s3cr3t-t0ken") != NULL);
    CHECK(strstr(last, "X-Extra") != NULL);
    /* A failing request: the value is nowhere in its error or message. */
    url_of(url, sizeof(url), "http", py_port, "missing");
    CHECK_EQ(http_probe(c, url, NULL, 0, 100, &p, &e), -ENOENT);
    CHECK(!memmem(&e, sizeof(e), "s3cr3t", 6));
    CHECK(!strstr(http_problem(&e, msg, sizeof(msg)), "s3cr3t"));
    http_client_free(c);

    struct http_opts o = {.header_file = path, .retries = -1};
    CHECK_EQ(ts_write_file(path, bad, strlen(bad)), 0);
    c = NULL;
    CHECK_EQ(http_client_new(&o, &c, &e), -EINVAL);
    CHECK(c == NULL);
    http_problem(&e, msg, sizeof(msg));
    CHECK(strstr(msg, "line 2") != NULL);
    CHECK(strstr(msg, "s3cr3t") == NULL);
    CHECK_EQ(ts_write_file(path, reserved, strlen(reserved)), 0);
    CHECK_EQ(http_client_new(&o, &c, &e), -EINVAL);
    CHECK(strstr(http_problem(&e, msg, sizeof(msg)), "set by npyfs") != NULL);
}

static void test_redact(void)
{
    char b[256];
    CHECK(!strcmp(
        http_redact_url("https://user:pw@host:8443/a/b.npz?X-Amz-Signature=abc#f", b, sizeof(b)),
        "https://host:8443/a/b.npz"));
    CHECK(!strcmp(http_redact_url("http://host/p?q", b, sizeof(b)), "http://host/p"));
    CHECK(!strcmp(http_redact_url("http://u:pa/ss@host/p", b, sizeof(b)), "http://host/p"));
    CHECK(!strcmp(http_redact_url("http://host:80/a@b", b, sizeof(b)), "http://host:80/a@b"));
    CHECK(!strcmp(http_redact_url("https://host", b, 9), "https://"));
    CHECK(http_is_url("HTTPS://x") && http_is_url("http://x") && !http_is_url("s3://b/k"));
}

/* Freeing a client with requests queued and running: each gets done()
 * once, queued ones canceled, the running one aborted, nothing hangs. */
static void test_free_busy(void)
{
    struct http_client *c = client(1, 5000, 0, NULL, NULL);
    struct http_req rs[3];
    struct iovec v[3];
    unsigned char buf[3][100];
    char url[256];
    int canceled = 0;

    url_of(url, sizeof(url), "http", py_port, "obj");
    py_cmd("delay 1000");
    atomic_store(&done_count, 0);
    for (int i = 0; i < 3; i++) {
        memset(&rs[i], 0, sizeof(rs[i]));
        v[i].iov_base = buf[i];
        v[i].iov_len = 100;
        rs[i].kind = HTTP_RANGE;
        rs[i].url = url;
        rs[i].iov = &v[i];
        rs[i].iovcnt = 1;
        rs[i].done = count_done;
        CHECK_EQ(http_submit(c, &rs[i]), 0);
    }
    http_client_free(c);
    CHECK_EQ(atomic_load(&done_count), 3);
    for (int i = 0; i < 3; i++)
        canceled += rs[i].error.err == -ECANCELED;
    CHECK(canceled >= 2);
    py_cmd("delay 0");
}

/* A whole-body GET over its limit; the texts of the transport errors. */
static void test_body_and_texts(void)
{
    struct http_client *c = client(1, 5000, 0, NULL, NULL);
    struct http_req r = {.kind = HTTP_BODY, .body_max = 1000};
    struct http_error e = {.why = HTTP_ERR_DNS, .err = -EHOSTUNREACH};
    char url[256], msg[512];

    url_of(url, sizeof(url), "http", nginx_port, "obj");
    r.url = url;
    CHECK_EQ(http_run(c, &r), -EFBIG);
    CHECK(r.body == NULL);
    url_of(url, sizeof(url), "http", nginx_port, "small");
    memset(&r, 0, sizeof(r));
    r.kind = HTTP_BODY;
    r.url = url;
    r.body_max = 1000;
    CHECK_EQ(http_run(c, &r), 0);
    CHECK(r.body_len == 1000 && !memcmp(r.body, obj, 1000));
    free(r.body);
    CHECK(strstr(http_problem(&e, msg, sizeof(msg)), "DNS") != NULL);
    e.why = HTTP_ERR_TIMEOUT;
    CHECK(strstr(http_problem(&e, msg, sizeof(msg)), "timed out") != NULL);
    http_client_free(c);
}

static void test_bad_requests(void)
{
    struct http_client *c = client(1, 5000, 0, NULL, NULL);
    struct http_ident id = {.size = 100};
    struct http_req r;
    unsigned char buf[10];
    char url[256];

    url_of(url, sizeof(url), "http", py_port, "small");
    CHECK_EQ(get(c, url, 95, 10, buf, &id, &r), -EINVAL); /* past the known size */
    CHECK_EQ(get(c, "ftp://127.0.0.1/x", 0, 10, buf, NULL, &r), -EINVAL);
    CHECK_EQ(get(c, url, 0, 0, buf, NULL, &r), -EINVAL);
    http_client_free(c);
    struct http_opts o = {.connections = HTTP_MAX_CONNECTIONS + 1, .retries = -1};
    struct http_client *bad = NULL;
    CHECK_EQ(http_client_new(&o, &bad, NULL), -EINVAL);
}

int main(void)
{
    char path[4096];

    alarm(240);
    dir = ts_tmpdir();
    if (!dir)
        return 1;
    obj = malloc(OBJ_SIZE);
    ts_fill(obj, OBJ_SIZE, 1);
    if (ts_nginx_start(dir, &nginx, &nginx_port, &tls_port) < 0) {
        CHECK(!"nginx started");
        goto out;
    }
    snprintf(path, sizeof(path), "%s/py", dir);
    mkdir(path, 0755);
    if (ts_py_start(path, 0, NULL, &py, &py_port) < 0) {
        CHECK(!"testserver.py started");
        goto out;
    }
    const char *names[] = {"www", "py"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/%s/obj", dir, names[i]);
        ts_write_file(path, obj, OBJ_SIZE);
        snprintf(path, sizeof(path), "%s/%s/small", dir, names[i]);
        ts_write_file(path, obj, 1000);
        snprintf(path, sizeof(path), "%s/%s/empty", dir, names[i]);
        ts_write_file(path, obj, 0);
    }

    test_redact();
    test_bad_requests();
    test_probe_and_ranges();
    test_not_found_and_redirects();
    test_changed_nginx();
    test_https();
    test_no_range();
    test_bad_range_and_long_body();
    test_retries();
    test_cut_and_reset();
    test_replaced();
    test_parallel_pool();
    test_priorities();
    test_header_file();
    test_free_busy();
    test_body_and_texts();
    test_server_down_and_back();
out:
    ts_stop(&py);
    ts_stop(&nginx);
    ts_rmtree(dir);
    free(dir);
    free(obj);
    return check_exit("test_http");
}
