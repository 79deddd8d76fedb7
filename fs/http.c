/*
 * HTTP(S) client on libcurl. Contract in http.h.
 *
 * libcurl is not linked: the curl_* calls here go through the table
 * curlsym.h fills, loaded by the first http_client_new().
 *
 * The central structure is the client's two request queues (demand before
 * fetch-ahead) feeding up to `connections` worker threads. A worker owns one
 * easy handle for its whole life, so its keep-alive connection is reused by
 * every request it performs; curl_easy_reset() between requests keeps live
 * connections. All easy handles share one DNS cache and one TLS session
 * cache (a curl share handle, locked with one mutex per data kind).
 *
 * Why worker threads and not one multi handle: each request is a small,
 * blocking sequence (perform, check, maybe back off and resume) that reads
 * naturally as a loop, the number of connections is exactly the number of
 * busy workers (the multi interface needs its own queue anyway in 7.88, see
 * REMOTE.md), and a slow or stalled transfer never delays the bookkeeping of
 * the others. The cost is one thread stack per connection (8 by default).
 *
 * One attempt's state lives in struct xfer on the worker's stack: the reply
 * headers of the current response (reset at every status line, so a
 * redirect's or a 100 Continue's headers never leak into the checks), the
 * reply check done once before the first body byte is accepted, and where
 * the body goes.
 */
#define _GNU_SOURCE
#include "http.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "curlsym.h"

enum { ST_NEW, ST_QUEUED, ST_RUNNING, ST_DONE };

/* Error bodies are kept up to this size, for an S3 <Code>. */
#define ERRBODY_MAX 4096

struct worker {
    struct http_client *c; /* borrowed */
    pthread_t tid;
    CURL *easy;   /* owned; used only by this worker's thread */
    uint64_t rng; /* jitter state, this thread only */
    char errbuf[CURL_ERROR_SIZE];
};

struct http_client {
    /* Leaf lock for the queues and the worker set. A done() callback and
     * the transfers run without it; callers may hold their own locks when
     * they call http_submit()/http_promote() (taken after theirs). */
    pthread_mutex_t lock;
    pthread_cond_t work;                          /* a request was queued, or stop */
    struct http_req *head[2], *tail[2];           /* protected by lock: by enum http_prio */
    struct worker *workers[HTTP_MAX_CONNECTIONS]; /* protected by lock: owned */
    unsigned nworkers, idle;                      /* protected by lock */
    CURL *spare[HTTP_MAX_CONNECTIONS];            /* protected by lock: owned easy handles
                                                   * of parked workers, for new ones */
    unsigned nspare;                              /* protected by lock */
    bool parking;                                 /* protected by lock: workers exit */
    atomic_bool stopping;                         /* atomic: set once by http_client_free() */

    unsigned connections, timeout_ms, retry_base_ms, retry_max_ms; /* immutable */
    int retries;                                                   /* immutable */
    char *cacert;   /* owned, immutable: NULL for the system store */
    char **headers; /* owned, immutable: header-file lines (secret) */
    size_t nheaders;

    CURLSH *share;                                    /* owned: DNS and TLS session caches */
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST]; /* leaf locks for share */

    atomic_uint_least64_t requests, bytes, retried, failures, conns, opened; /* atomic */
};

/* One attempt at a request: what was asked, the current reply's headers,
 * what went wrong. */
struct xfer {
    struct http_client *c;
    struct http_req *r;
    uint64_t from, to; /* RANGE: inclusive bytes asked in this attempt */
    size_t total;      /* RANGE/SUFFIX: capacity of r->iov */
    size_t base;       /* RANGE: bytes already in iov from earlier attempts */
    size_t want;       /* body bytes this reply must carry (after the check) */
    size_t got;        /* body bytes taken in this attempt */
    bool want_known;   /* want is exact (else: at most `want`) */

    long status; /* of the current response */
    bool has_crange, has_clen;
    char crange[128];
    uint64_t clen;
    char etag[HTTP_ETAG_MAX], lm[HTTP_DATE_MAX], enc[64], region[32];
    long retry_after; /* seconds, or -1 */

    bool checked;      /* the reply was checked (once, before its body) */
    bool data;         /* the body is data (2xx), not an error text */
    enum http_why why; /* set by our checks: stops the transfer */
    int err;
    char detail[192];

    char errbody[ERRBODY_MAX];
    size_t errlen;
    char *body; /* BODY: owned until moved into r->body */
    size_t body_len, body_cap;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- small helpers ---- */

static void set_error(struct http_error *e, enum http_why why, int err)
{
    e->why = why;
    e->err = err;
}

static size_t iov_total(const struct iovec *iov, int n)
{
    size_t t = 0;
    for (int i = 0; i < n; i++)
        t += iov[i].iov_len;
    return t;
}

/* Copy n bytes from src into the iov array at byte position pos. */
static void iov_put(const struct iovec *iov, int cnt, size_t pos, const char *src, size_t n)
{
    for (int i = 0; i < cnt && n > 0; i++) {
        if (pos >= iov[i].iov_len) {
            pos -= iov[i].iov_len;
            continue;
        }
        size_t k = iov[i].iov_len - pos;
        if (k > n)
            k = n;
        memcpy((char *)iov[i].iov_base + pos, src, k);
        src += k;
        n -= k;
        pos = 0;
    }
}

static bool strong_etag(const char *etag)
{
    return etag[0] && strncmp(etag, "W/", 2) != 0;
}

/* Compare two ETags the weak way (W/ prefixes ignored). */
static bool etag_equal(const char *a, const char *b)
{
    if (!strncmp(a, "W/", 2))
        a += 2;
    if (!strncmp(b, "W/", 2))
        b += 2;
    return strcmp(a, b) == 0;
}

/* Copy a header value trimmed of surrounding blanks, cut to size. */
static void copy_value(char *dst, size_t size, const char *v, size_t n)
{
    while (n && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' || v[n - 1] == '\n'))
        n--;
    if (n >= size)
        n = size - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

/* Keep only characters that are safe to print in a message. */
static void sanitize(char *s)
{
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("-_.:/ ", *s))
            *s = '?';
}

static bool parse_u64(const char *s, const char **end, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = s;

    if (!isdigit((unsigned char)*p))
        return false;
    for (; isdigit((unsigned char)*p); p++) {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *p - '0', &v))
            return false;
    }
    *end = p;
    *out = v;
    return true;
}

/* "bytes A-B/T" exactly (T may not be '*' in a 206). */
static bool parse_crange(const char *s, uint64_t *a, uint64_t *b, uint64_t *t)
{
    if (strncasecmp(s, "bytes ", 6) != 0)
        return false;
    s += 6;
    if (!parse_u64(s, &s, a) || *s++ != '-' || !parse_u64(s, &s, b) || *s++ != '/' ||
        !parse_u64(s, &s, t) || *s != '\0')
        return false;
    return *a <= *b && *b < *t;
}

/* ---- header file ---- */

static bool token_char(int ch)
{
    return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Headers npyfs sets itself, whose change would defeat the reply checks. */
static const char *const reserved_headers[] = {
    "range",
    "if-match",
    "if-none-match",
    "if-range",
    "if-modified-since",
    "if-unmodified-since",
    "accept-encoding",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "expect",
    NULL,
};

/* Check one header-file line and return its name's length, or 0 with a
 * reason in why->detail (which never holds the value). */
static size_t check_header_line(const char *line, size_t lineno, struct http_error *why)
{
    size_t n = 0;

    while (token_char((unsigned char)line[n]))
        n++;
    if (n == 0 || line[n] != ':') {
        snprintf(why->detail, sizeof(why->detail), "line %zu: not 'Name: value'", lineno);
        return 0;
    }
    for (const char *p = line + n + 1; *p; p++) {
        if ((unsigned char)*p < 0x20 && *p != '\t') {
            snprintf(why->detail, sizeof(why->detail), "line %zu: control character in the value",
                     lineno);
            return 0;
        }
    }
    for (size_t i = 0; reserved_headers[i]; i++) {
        if (strlen(reserved_headers[i]) == n && !strncasecmp(line, reserved_headers[i], n)) {
            snprintf(why->detail, sizeof(why->detail),
                     "line %zu: header '%.*s' is set by npyfs itself", lineno, (int)n, line);
            return 0;
        }
    }
    return n;
}

static char *read_small_file(const char *path, int *err)
{
    struct stat st;
    char *buf = NULL;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        *err = -errno;
        return NULL;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > HTTP_HEADER_FILE_MAX) {
        *err = -EINVAL;
        goto out_close;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        *err = -ENOMEM;
        goto out_close;
    }
    while (len < (size_t)st.st_size) {
        ssize_t k = read(fd, buf + len, (size_t)st.st_size - len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        len += (size_t)k;
    }
    buf[len] = '\0';
    if (strlen(buf) != len) { /* a NUL inside */
        free(buf);
        buf = NULL;
        *err = -EINVAL;
    }
out_close:
    close(fd);
    return buf;
}

static int load_headers(struct http_client *c, const char *path, struct http_error *why)
{
    int err = 0;
    char *text = read_small_file(path, &err);
    char *line, *save = NULL;
    size_t lineno = 0, cap = 0;

    if (!text) {
        char ebuf[64];
        set_error(why, HTTP_ERR_HEADER_FILE, err);
        if (err == -EINVAL)
            snprintf(why->detail, sizeof(why->detail), "not a regular text file of at most 64 KiB");
        else
            snprintf(why->detail, sizeof(why->detail), "cannot be read (%s)",
                     strerror_r(-err, ebuf, sizeof(ebuf)));
        return err;
    }
    /* Lines are split on '\n' by hand: strtok would merge blank lines and
     * shift the line numbers in messages. */
    for (line = text; line; line = save) {
        save = strchr(line, '\n');
        if (save)
            *save++ = '\0';
        lineno++;
        size_t n = strlen(line);
        if (n && line[n - 1] == '\r')
            line[--n] = '\0';
        const char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#')
            continue;
        if (p != line || !check_header_line(line, lineno, why)) {
            if (p != line)
                snprintf(why->detail, sizeof(why->detail), "line %zu: not 'Name: value'", lineno);
            err = -EINVAL;
            break;
        }
        if (c->nheaders + 1 >= cap) {
            size_t ncap = cap ? cap * 2 : 8;
            char **g = realloc(c->headers, ncap * sizeof(*g));
            if (!g) {
                err = -ENOMEM;
                break;
            }
            c->headers = g;
            cap = ncap;
        }
        c->headers[c->nheaders] = strdup(line);
        if (!c->headers[c->nheaders]) {
            err = -ENOMEM;
            break;
        }
        c->nheaders++;
    }
    explicit_bzero(text, strlen(text));
    free(text);
    if (err)
        set_error(why, err == -ENOMEM ? HTTP_ERR_NOMEM : HTTP_ERR_HEADER_FILE, err);
    return err;
}

/* ---- libcurl callbacks ---- */

static void share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *p)
{
    struct http_client *c = p;
    (void)h;
    (void)a;
    pthread_mutex_lock(&c->share_locks[d]);
}

static void share_unlock(CURL *h, curl_lock_data d, void *p)
{
    struct http_client *c = p;
    (void)h;
    pthread_mutex_unlock(&c->share_locks[d]);
}

static curl_socket_t open_socket(void *p, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct http_client *c = p;
    int fd;

    (void)purpose;
    fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    atomic_fetch_add(&c->conns, 1);
    atomic_fetch_add(&c->opened, 1);
    return fd;
}

static int close_socket(void *p, curl_socket_t fd)
{
    struct http_client *c = p;
    atomic_fetch_sub(&c->conns, 1);
    return close(fd);
}

static int on_progress(void *p, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    struct xfer *x = p;
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    return atomic_load(&x->c->stopping) ? 1 : 0;
}

/* A new response starts (a status line): forget the previous one's headers. */
static void reset_reply(struct xfer *x, long status)
{
    x->status = status;
    x->has_crange = x->has_clen = false;
    x->crange[0] = x->etag[0] = x->lm[0] = x->enc[0] = x->region[0] = '\0';
    x->retry_after = -1;
    x->errlen = 0;
}

static size_t on_header(char *line, size_t size, size_t n, void *p)
{
    struct xfer *x = p;
    size_t len = size * n;
    const char *colon;
    size_t name_len;
    const char *v;
    size_t vlen;

    if (len >= 5 && !strncmp(line, "HTTP/", 5)) {
        const char *sp = memchr(line, ' ', len);
        long st = 0;
        if (sp && (size_t)(sp - line) + 4 <= len && isdigit((unsigned char)sp[1]) &&
            isdigit((unsigned char)sp[2]) && isdigit((unsigned char)sp[3]))
            st = (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0');
        reset_reply(x, st);
        return len;
    }
    colon = memchr(line, ':', len);
    if (!colon)
        return len;
    name_len = (size_t)(colon - line);
    v = colon + 1;
    vlen = len - name_len - 1;
#define IS(h) (name_len == sizeof(h) - 1 && !strncasecmp(line, h, name_len))
    if (IS("content-range")) {
        copy_value(x->crange, sizeof(x->crange), v, vlen);
        x->has_crange = true;
    } else if (IS("content-length")) {
        char tmp[32];
        const char *end;
        copy_value(tmp, sizeof(tmp), v, vlen);
        x->has_clen = parse_u64(tmp, &end, &x->clen) && *end == '\0';
    } else if (IS("etag")) {
        copy_value(x->etag, sizeof(x->etag), v, vlen);
    } else if (IS("last-modified")) {
        copy_value(x->lm, sizeof(x->lm), v, vlen);
    } else if (IS("content-encoding")) {
        copy_value(x->enc, sizeof(x->enc), v, vlen);
    } else if (IS("x-amz-bucket-region")) {
        copy_value(x->region, sizeof(x->region), v, vlen);
        sanitize(x->region);
    } else if (IS("retry-after")) {
        char tmp[32];
        const char *end;
        uint64_t s;
        copy_value(tmp, sizeof(tmp), v, vlen);
        if (parse_u64(tmp, &end, &s) && *end == '\0')
            x->retry_after = s > 3600 ? 3600 : (long)s;
    }
#undef IS
    return len;
}

static void fail(struct xfer *x, enum http_why why, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fail(struct xfer *x, enum http_why why, int err, const char *fmt, ...)
{
    va_list ap;

    if (x->why)
        return; /* keep the first reason */
    x->why = why;
    x->err = err;
    va_start(ap, fmt);
    vsnprintf(x->detail, sizeof(x->detail), fmt, ap);
    va_end(ap);
}

/* Does the reply's identity match what the request expects? */
static bool check_identity(struct xfer *x, uint64_t total)
{
    const struct http_ident *e = x->r->expect;

    if (!e)
        return true;
    if (total != e->size) {
        fail(x, HTTP_ERR_CHANGED, -ESTALE, "size %" PRIu64 ", was %" PRIu64, total, e->size);
        return false;
    }
    if (e->etag[0] && x->etag[0] && !etag_equal(e->etag, x->etag)) {
        fail(x, HTTP_ERR_CHANGED, -ESTALE, "ETag differs");
        return false;
    }
    if (e->last_modified[0] && x->lm[0] && strcmp(e->last_modified, x->lm) != 0) {
        fail(x, HTTP_ERR_CHANGED, -ESTALE, "Last-Modified differs");
        return false;
    }
    return true;
}

static void keep_identity(struct xfer *x, uint64_t total)
{
    struct http_ident *g = &x->r->got;

    g->size = total;
    snprintf(g->etag, sizeof(g->etag), "%s", x->etag);
    snprintf(g->last_modified, sizeof(g->last_modified), "%s", x->lm);
}

/* A 206 to a RANGE request: exactly the bytes asked, or for an identity-less
 * request (a probe's head) the bytes asked up to the object's end. */
static void check_range_206(struct xfer *x, uint64_t a, uint64_t b, uint64_t t)
{
    bool exact = a == x->from && b == x->to;
    bool at_end = a == x->from && b < x->to && b == t - 1 && !x->r->expect;

    if (!exact && !at_end) {
        fail(x, HTTP_ERR_BAD_RANGE, -EPROTO,
             "asked bytes %" PRIu64 "-%" PRIu64 ", got %" PRIu64 "-%" PRIu64, x->from, x->to, a, b);
        return;
    }
    if (!check_identity(x, t))
        return;
    keep_identity(x, t);
    x->want = (size_t)(b - a + 1);
    x->want_known = true;
}

/* A 206 to bytes=-N: the last min(N, T) bytes, else the server got it wrong
 * (s3rver sends bytes 0-N) and http_probe() falls back. */
static void check_suffix_206(struct xfer *x, uint64_t a, uint64_t b, uint64_t t)
{
    uint64_t n = x->total < t ? x->total : t;

    if (b != t - 1 || b - a + 1 != n) {
        /* The total is still right: http_probe() needs no HEAD for it. */
        keep_identity(x, t);
        fail(x, HTTP_ERR_BAD_RANGE, -EPROTO,
             "asked the last %zu bytes, got %" PRIu64 "-%" PRIu64 "/%" PRIu64, x->total, a, b, t);
        return;
    }
    keep_identity(x, t);
    x->r->got_off = a;
    x->want = (size_t)n;
    x->want_known = true;
}

/* A 200 to a ranged request: the whole object. Accepted only where it fits
 * what was asked (a probe of a small object), else no Range support. */
static void check_ranged_200(struct xfer *x)
{
    struct http_req *r = x->r;
    bool small = x->has_clen && x->clen <= x->total;

    if (r->expect || (r->kind == HTTP_RANGE && r->off != 0) || (x->has_clen && !small)) {
        fail(x, HTTP_ERR_NO_RANGE, -EOPNOTSUPP, "status 200 to a ranged request");
        return;
    }
    /* Length unknown (chunked): take at most total bytes; more is no Range. */
    r->whole = true;
    r->got_off = 0;
    x->want = x->has_clen ? (size_t)x->clen : x->total;
    x->want_known = x->has_clen;
    if (x->has_clen)
        keep_identity(x, x->clen);
}

/* Check the final reply once, before its body is taken. Sets x->data when
 * the body is the data asked for; otherwise it is an error text (kept) or
 * the check failed (x->why set: stop). */
static void check_reply(struct xfer *x)
{
    struct http_req *r = x->r;
    uint64_t a, b, t;

    x->checked = true;
    if (x->status < 200 || x->status > 299)
        return; /* classified after the transfer, with its body */
    if (x->enc[0] && strcasecmp(x->enc, "identity") != 0) {
        fail(x, HTTP_ERR_ENCODED, -EPROTO, "reply has Content-Encoding");
        return;
    }
    switch (r->kind) {
    case HTTP_HEAD:
    case HTTP_BODY:
        if (x->status != 200) {
            fail(x, HTTP_ERR_STATUS, -EIO, "status %ld", x->status);
            return;
        }
        if (r->kind == HTTP_HEAD && !x->has_clen) {
            fail(x, HTTP_ERR_NO_SIZE, -EPROTO, "no Content-Length");
            return;
        }
        if (r->kind == HTTP_BODY && x->has_clen && x->clen > r->body_max) {
            fail(x, HTTP_ERR_TOO_BIG, -EFBIG, "%" PRIu64 " bytes", x->clen);
            return;
        }
        if (r->kind == HTTP_HEAD && check_identity(x, x->clen))
            keep_identity(x, x->clen);
        x->data = true;
        return;
    case HTTP_RANGE:
    case HTTP_SUFFIX:
        if (x->status == 200) {
            check_ranged_200(x);
            x->data = !x->why;
            return;
        }
        if (x->status != 206) {
            fail(x, HTTP_ERR_STATUS, -EIO, "status %ld to a ranged request", x->status);
            return;
        }
        if (!x->has_crange || !parse_crange(x->crange, &a, &b, &t)) {
            fail(x, HTTP_ERR_BAD_RANGE, -EPROTO, "206 without a valid Content-Range");
            return;
        }
        if (r->kind == HTTP_RANGE)
            check_range_206(x, a, b, t);
        else
            check_suffix_206(x, a, b, t);
        if (!x->why && x->has_clen && x->clen != x->want)
            fail(x, HTTP_ERR_BAD_RANGE, -EPROTO,
                 "Content-Length %" PRIu64 " for %zu bytes of Content-Range", x->clen, x->want);
        x->data = !x->why;
        return;
    }
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct xfer *x = arg;
    struct http_req *r = x->r;
    size_t len = size * n;

    if (!x->checked)
        check_reply(x);
    if (x->why)
        return 0; /* abort */
    if (!x->data) {
        size_t k = sizeof(x->errbody) - 1 - x->errlen;
        if (k > len)
            k = len;
        memcpy(x->errbody + x->errlen, p, k);
        x->errlen += k;
        x->errbody[x->errlen] = '\0';
        return len;
    }
    if (r->kind == HTTP_BODY) {
        if (x->body_len + len > r->body_max) {
            fail(x, HTTP_ERR_TOO_BIG, -EFBIG, "more than %zu bytes", r->body_max);
            return 0;
        }
        if (x->body_len + len + 1 > x->body_cap) {
            size_t cap = x->body_cap ? x->body_cap : 16384;
            while (cap < x->body_len + len + 1)
                cap *= 2;
            char *g = realloc(x->body, cap);
            if (!g) {
                fail(x, HTTP_ERR_NOMEM, -ENOMEM, "out of memory");
                return 0;
            }
            x->body = g;
            x->body_cap = cap;
        }
        memcpy(x->body + x->body_len, p, len);
        x->body_len += len;
        x->body[x->body_len] = '\0';
        atomic_fetch_add(&x->c->bytes, len);
        r->bytes += len;
        return len;
    }
    if (x->got + len > x->want) {
        /* Take what was asked for and stop the rest. */
        size_t k = x->want - x->got;
        iov_put(r->iov, r->iovcnt, x->base + x->got, p, k);
        x->got += k;
        atomic_fetch_add(&x->c->bytes, k);
        r->bytes += k;
        fail(x, r->whole && !x->want_known ? HTTP_ERR_NO_RANGE : HTTP_ERR_TOO_LONG,
             r->whole && !x->want_known ? -EOPNOTSUPP : -EPROTO,
             "body longer than the %zu bytes asked for", x->want);
        return 0;
    }
    iov_put(r->iov, r->iovcnt, x->base + x->got, p, len);
    x->got += len;
    atomic_fetch_add(&x->c->bytes, len);
    r->bytes += len;
    return len;
}

/* ---- one attempt ---- */

static struct curl_slist *build_headers(struct http_client *c, struct http_req *r, bool *nomem)
{
    struct curl_slist *l = NULL, *t;
    char line[HTTP_ETAG_MAX + 16];

#define ADD(s)                                                                                     \
    do {                                                                                           \
        t = curl_slist_append(l, s);                                                               \
        if (!t)                                                                                    \
            goto out_nomem;                                                                        \
        l = t;                                                                                     \
    } while (0)
    for (size_t i = 0; i < c->nheaders && !(r->auth && r->auth->no_header_file); i++)
        ADD(c->headers[i]);
    if (r->auth && r->auth->headers)
        for (const char *const *h = r->auth->headers; *h; h++)
            ADD(*h);
    if (r->kind == HTTP_RANGE && r->expect && strong_etag(r->expect->etag)) {
        snprintf(line, sizeof(line), "If-Match: %s", r->expect->etag);
        ADD(line);
    }
#undef ADD
    *nomem = false;
    return l;

out_nomem:
    curl_slist_free_all(l);
    *nomem = true;
    return NULL;
}

static void setup_easy(struct worker *w, struct xfer *x, struct curl_slist *hdrs, char *range)
{
    struct http_client *c = w->c;
    struct http_req *r = x->r;
    CURL *e = w->easy;
    bool https = !strncasecmp(r->url, "https:", 6);
    long secs = (long)((c->timeout_ms + 999) / 1000);

    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, https ? "https" : "http,https");
    if (!(r->auth && r->auth->no_redirect)) {
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)HTTP_MAX_REDIRECTS);
    }
    if (r->auth && r->auth->raw_path)
        curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_MAXCONNECTS, 4L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->timeout_ms);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, secs ? secs : 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (c->cacert)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->cacert);
    else if (r->auth && r->auth->cacert)
        curl_easy_setopt(e, CURLOPT_CAINFO, r->auth->cacert);
    curl_easy_setopt(e, CURLOPT_SHARE, c->share);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, c);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, c);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    w->errbuf[0] = '\0';
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, w->errbuf);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    if (r->kind == HTTP_HEAD)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    if (range)
        curl_easy_setopt(e, CURLOPT_RANGE, range);
    if (r->auth && r->auth->sigv4) {
        curl_easy_setopt(e, CURLOPT_AWS_SIGV4, r->auth->sigv4);
        curl_easy_setopt(e, CURLOPT_USERNAME, r->auth->user ? r->auth->user : "");
        curl_easy_setopt(e, CURLOPT_PASSWORD, r->auth->secret ? r->auth->secret : "");
    }
}

/* Turn a libcurl failure into why/err. */
static void classify_curl(struct worker *w, struct xfer *x, CURLcode rc)
{
    long oserr = 0;

    curl_easy_getinfo(w->easy, CURLINFO_OS_ERRNO, &oserr);
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
        /* libcurl's text names the host (or proxy) only: no path, query
         * or user information. */
        fail(x, HTTP_ERR_DNS, -EHOSTUNREACH, "%s",
             w->errbuf[0] ? w->errbuf : curl_easy_strerror(rc));
        break;
    case CURLE_COULDNT_CONNECT:
        if (oserr == ECONNREFUSED)
            fail(x, HTTP_ERR_REFUSED, -ECONNREFUSED, "connection refused");
        else
            fail(x, HTTP_ERR_CONNECT, -EHOSTUNREACH, "%s", curl_easy_strerror(rc));
        break;
    case CURLE_OPERATION_TIMEDOUT:
        fail(x, HTTP_ERR_TIMEOUT, -ETIMEDOUT, "no progress for %u ms", x->c->timeout_ms);
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
        /* libcurl's text names the certificate problem and at most the
         * host: no URL path or query, no header. */
        fail(x, HTTP_ERR_TLS_VERIFY, -EPROTO, "%s",
             w->errbuf[0] ? w->errbuf : curl_easy_strerror(rc));
        break;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_USE_SSL_FAILED:
        fail(x, HTTP_ERR_TLS, -EPROTO, "%s", curl_easy_strerror(rc));
        break;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_WEIRD_SERVER_REPLY:
        fail(x, HTTP_ERR_RESET, -ECONNRESET, "%s", curl_easy_strerror(rc));
        break;
    case CURLE_PARTIAL_FILE:
        fail(x, HTTP_ERR_SHORT, -EIO, "body shorter than announced");
        break;
    case CURLE_TOO_MANY_REDIRECTS:
        fail(x, HTTP_ERR_REDIRECTS, -ELOOP, "more than %d redirects", HTTP_MAX_REDIRECTS);
        break;
    case CURLE_ABORTED_BY_CALLBACK:
        fail(x, HTTP_ERR_CANCELED, -ECANCELED, "canceled");
        break;
    case CURLE_OUT_OF_MEMORY:
        fail(x, HTTP_ERR_NOMEM, -ENOMEM, "out of memory");
        break;
    case CURLE_URL_MALFORMAT:
        fail(x, HTTP_ERR_OTHER, -EINVAL,
             "not a valid URL (a space, or another character a URL may not hold, must be "
             "%%-encoded: %%20 for a space)");
        break;
    case CURLE_UNSUPPORTED_PROTOCOL:
        fail(x, HTTP_ERR_OTHER, -EINVAL, "%s", curl_easy_strerror(rc));
        break;
    default:
        fail(x, HTTP_ERR_OTHER, -EIO, "%s", curl_easy_strerror(rc));
        break;
    }
}

/* The <Code> of an S3 error body, if it has one. */
static void error_code(const char *body, char *out, size_t size)
{
    const char *a = strstr(body, "<Code>"), *b;

    out[0] = '\0';
    if (!a || !strstr(body, "<Error>"))
        return;
    a += 6;
    b = strstr(a, "</Code>");
    if (!b)
        return;
    copy_value(out, size, a, (size_t)(b - a));
    sanitize(out);
}

static void classify_status(struct xfer *x)
{
    struct http_req *r = x->r;
    long s = x->status;

    if (r->auth && r->auth->s3_errors)
        error_code(x->errbody, r->error.code, sizeof(r->error.code));
    if (s == 412)
        fail(x, HTTP_ERR_CHANGED, -ESTALE, "412 Precondition Failed (If-Match)");
    else if (s == 416 && r->expect)
        fail(x, HTTP_ERR_CHANGED, -ESTALE, "416: the object is shorter than it was");
    else if (s == 404 || s == 410)
        fail(x, HTTP_ERR_STATUS, -ENOENT, "status %ld", s);
    else if (s == 401 || s == 403)
        fail(x, HTTP_ERR_STATUS, -EACCES, "status %ld", s);
    else
        fail(x, HTTP_ERR_STATUS, -EIO, "status %ld", s);
}

static bool retryable(const struct xfer *x)
{
    switch (x->why) {
    case HTTP_ERR_REFUSED:
    case HTTP_ERR_CONNECT:
    case HTTP_ERR_TIMEOUT:
    case HTTP_ERR_RESET:
    case HTTP_ERR_SHORT:
        return true;
    case HTTP_ERR_STATUS:
        return x->status == 408 || x->status == 429 ||
               (x->status >= 500 && x->status != 501 && x->status != 505);
    default:
        return false;
    }
}

/* One request on the wire. Leaves x->why set on failure. */
static void attempt(struct worker *w, struct xfer *x)
{
    struct http_req *r = x->r;
    struct curl_slist *hdrs;
    char range[64], *rp = NULL;
    bool nomem;
    CURLcode rc;

    hdrs = build_headers(w->c, r, &nomem);
    if (nomem) {
        fail(x, HTTP_ERR_NOMEM, -ENOMEM, "out of memory");
        return;
    }
    if (r->kind == HTTP_RANGE) {
        snprintf(range, sizeof(range), "%" PRIu64 "-%" PRIu64, x->from, x->to);
        rp = range;
    } else if (r->kind == HTTP_SUFFIX) {
        snprintf(range, sizeof(range), "-%zu", x->total);
        rp = range;
    }
    setup_easy(w, x, hdrs, rp);
    atomic_fetch_add(&w->c->requests, 1);
    r->attempts++;
    rc = curl_easy_perform(w->easy);
    curl_slist_free_all(hdrs);
    if (rc == CURLE_OK && !x->checked)
        check_reply(x); /* a reply without a body */
    if (x->why)
        return;
    if (rc != CURLE_OK) {
        classify_curl(w, x, rc);
        return;
    }
    if (x->status < 200 || x->status > 299) {
        classify_status(x);
        return;
    }
    if ((r->kind == HTTP_RANGE || r->kind == HTTP_SUFFIX) && x->want_known && x->got < x->want)
        fail(x, HTTP_ERR_SHORT, -EIO, "body ended after %zu of %zu bytes", x->got, x->want);
    else if (r->whole && !x->want_known)
        keep_identity(x, x->got); /* a 200 without Content-Length: its size is its body */
}

static uint64_t next_rand(uint64_t *s)
{
    /* xorshift64*: jitter only, not security. */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* Sleep before retry n, or until the client stops. */
static void backoff(struct worker *w, const struct xfer *x, unsigned n)
{
    struct http_client *c = w->c;
    uint64_t cap = c->retry_base_ms;
    struct timespec ts;

    for (unsigned i = 0; i < n && cap < c->retry_max_ms; i++)
        cap *= 2;
    if (cap > c->retry_max_ms)
        cap = c->retry_max_ms;
    uint64_t ms = next_rand(&w->rng) % (cap + 1);
    if (x->retry_after >= 0) {
        uint64_t ra = (uint64_t)x->retry_after * 1000;
        ms = ra < c->retry_max_ms ? ra : c->retry_max_ms;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->lock);
    while (!atomic_load(&c->stopping) &&
           pthread_cond_timedwait(&c->work, &c->lock, &ts) != ETIMEDOUT) {
        /* woken by a submit: keep sleeping */
    }
    pthread_mutex_unlock(&c->lock);
}

/* A suffix range answered with another range, or refused (416, 501):
 * http_probe() asks again with an explicit range. */
static bool suffix_retried(int kind, const struct xfer *x)
{
    return kind == HTTP_SUFFIX &&
           (x->why == HTTP_ERR_BAD_RANGE ||
            (x->why == HTTP_ERR_STATUS && (x->status == 416 || x->status == 501)));
}

/* Perform r with its retries and fill its results. */
static void perform(struct worker *w, struct http_req *r)
{
    struct http_client *c = w->c;
    size_t total =
        (r->kind == HTTP_RANGE || r->kind == HTTP_SUFFIX) ? iov_total(r->iov, r->iovcnt) : 0;
    /* Resume after the bytes already received only when the identity is
     * checked on every reply: else a retry could append another object. */
    bool resume =
        r->kind == HTTP_RANGE && r->expect && (r->expect->etag[0] || r->expect->last_modified[0]);
    struct xfer *x = malloc(sizeof(*x));

    if (!x) {
        set_error(&r->error, HTTP_ERR_NOMEM, -ENOMEM);
        return;
    }
    r->got_len = 0;
    for (unsigned n = 0;; n++) {
        memset(x, 0, sizeof(*x));
        x->c = c;
        x->r = r;
        x->total = total;
        x->retry_after = -1;
        x->base = resume ? r->got_len : 0;
        x->from = r->off + x->base;
        x->to = r->off + total - 1;
        r->whole = false;
        attempt(w, x);
        if (x->body) {
            free(r->body);
            r->body = x->body;
            r->body_len = x->body_len;
            x->body = NULL;
        }
        r->got_len = x->base + x->got;
        r->error.status = x->status;
        if (!x->why)
            break;
        if (!retryable(x) || (int)n >= c->retries || atomic_load(&c->stopping))
            break;
        atomic_fetch_add(&c->retried, 1);
        backoff(w, x, n);
    }
    if (x->why) {
        set_error(&r->error, x->why, x->err);
        snprintf(r->error.detail, sizeof(r->error.detail), "%s", x->detail);
        snprintf(r->error.region, sizeof(r->error.region), "%s", x->region);
        free(r->body);
        r->body = NULL;
        r->body_len = 0;
        /* a whole small file that is not there (an optional index) is an
         * answer, not a failure of the server; nor is a suffix range
         * answered wrongly or refused, which http_probe() asks again the
         * long way (that request counts if it fails) */
        if (!(r->kind == HTTP_BODY && x->err == -ENOENT) && !suffix_retried(r->kind, x))
            atomic_fetch_add(&c->failures, 1);
    } else if (x->region[0]) {
        snprintf(r->error.region, sizeof(r->error.region), "%s", x->region);
    }
    free(x);
}

/* ---- queue and workers ---- */

static void queue_push(struct http_client *c, struct http_req *r)
{
    int q = r->prio == HTTP_PRIO_AHEAD ? 1 : 0;

    r->qnext = NULL;
    r->qprev = c->tail[q];
    if (c->tail[q])
        c->tail[q]->qnext = r;
    else
        c->head[q] = r;
    c->tail[q] = r;
    r->state = ST_QUEUED;
}

static void queue_unlink(struct http_client *c, struct http_req *r)
{
    int q = r->prio == HTTP_PRIO_AHEAD ? 1 : 0;

    if (r->qprev)
        r->qprev->qnext = r->qnext;
    else
        c->head[q] = r->qnext;
    if (r->qnext)
        r->qnext->qprev = r->qprev;
    else
        c->tail[q] = r->qprev;
    r->qprev = r->qnext = NULL;
}

static struct http_req *queue_pop(struct http_client *c)
{
    for (int q = 0; q < 2; q++) {
        struct http_req *r = c->head[q];
        if (r) {
            queue_unlink(c, r);
            return r;
        }
    }
    return NULL;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct http_client *c = w->c;
    struct http_req *r;

    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (!atomic_load(&c->stopping) && !c->parking && !c->head[0] && !c->head[1]) {
            c->idle++;
            pthread_cond_wait(&c->work, &c->lock);
            c->idle--;
        }
        /* parking: the queue is served to its end first */
        if (atomic_load(&c->stopping) || (c->parking && !c->head[0] && !c->head[1]))
            break;
        r = queue_pop(c);
        r->state = ST_RUNNING;
        pthread_mutex_unlock(&c->lock);

        if (w->easy)
            perform(w, r);
        else
            set_error(&r->error, HTTP_ERR_NOMEM, -ENOMEM);
        pthread_mutex_lock(&c->lock);
        r->state = ST_DONE;
        pthread_mutex_unlock(&c->lock);
        r->done(r); /* r may be gone after this */

        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* Start one more worker (lock held). */
static int spawn_worker(struct http_client *c)
{
    struct worker *w = calloc(1, sizeof(*w));
    int err;

    if (!w)
        return -ENOMEM;
    w->c = c;
    /* a parked worker's handle keeps its connection; NULL: its requests
     * fail with -ENOMEM */
    w->easy = c->nspare ? c->spare[--c->nspare] : curl_easy_init();
    w->rng = (uint64_t)(uintptr_t)w ^ (uint64_t)time(NULL) * 0x9e3779b97f4a7c15u;
    if (!w->rng)
        w->rng = 1;
    err = pthread_create(&w->tid, NULL, worker_main, w);
    if (err) {
        curl_easy_cleanup(w->easy);
        free(w);
        return -err;
    }
    c->workers[c->nworkers++] = w;
    return 0;
}

/* Contract in http.h. */
int http_client_park(struct http_client *c)
{
    unsigned n;

    pthread_mutex_lock(&c->lock);
    if (c->nworkers == 0 && (c->head[0] || c->head[1])) {
        pthread_mutex_unlock(&c->lock);
        return -EBUSY; /* queued, and no worker to serve it */
    }
    c->parking = true;
    pthread_cond_broadcast(&c->work);
    n = c->nworkers;
    pthread_mutex_unlock(&c->lock);
    /* Only this thread changes the worker set now: no submission runs
     * alongside (the caller's promise), and the workers only leave. */
    for (unsigned i = 0; i < n; i++)
        pthread_join(c->workers[i]->tid, NULL);
    pthread_mutex_lock(&c->lock);
    for (unsigned i = 0; i < n; i++) {
        if (c->workers[i]->easy)
            c->spare[c->nspare++] = c->workers[i]->easy;
        free(c->workers[i]);
        c->workers[i] = NULL;
    }
    c->nworkers = 0;
    c->idle = 0;
    c->parking = false;
    pthread_mutex_unlock(&c->lock);
    return 0;
}

/* Contract in http.h. */
int http_client_new(const struct http_opts *o, struct http_client **out, struct http_error *why)
{
    static const struct http_opts defaults = {.retries = -1};
    struct http_error dummy;
    struct http_client *c;
    const char *loaderr;
    pthread_condattr_t ca;
    int err;

    *out = NULL;
    if (!why)
        why = &dummy;
    memset(why, 0, sizeof(*why));
    if (!o)
        o = &defaults;
    if (o->connections > HTTP_MAX_CONNECTIONS) {
        set_error(why, HTTP_ERR_OTHER, -EINVAL);
        snprintf(why->detail, sizeof(why->detail), "at most %d connections", HTTP_MAX_CONNECTIONS);
        return -EINVAL;
    }
    err = curlsym_load(&loaderr);
    if (err) {
        set_error(why, HTTP_ERR_NO_LIBCURL, err);
        snprintf(why->detail, sizeof(why->detail), "%s", loaderr);
        return err;
    }
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK) {
        set_error(why, HTTP_ERR_NOMEM, -ENOMEM);
        return -ENOMEM;
    }
    c = calloc(1, sizeof(*c));
    if (!c)
        goto out_nomem;
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->work, &ca);
    pthread_condattr_destroy(&ca);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&c->share_locks[i], NULL);
    c->connections = o->connections ? o->connections : HTTP_DEFAULT_CONNECTIONS;
    c->timeout_ms = o->timeout_ms ? o->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;
    c->retries = o->retries < 0 ? HTTP_DEFAULT_RETRIES : o->retries;
    c->retry_base_ms = o->retry_base_ms ? o->retry_base_ms : HTTP_DEFAULT_RETRY_BASE_MS;
    c->retry_max_ms = o->retry_max_ms ? o->retry_max_ms : HTTP_DEFAULT_RETRY_MAX_MS;
    if (c->retry_max_ms < c->retry_base_ms)
        c->retry_max_ms = c->retry_base_ms;
    if (o->cacert) {
        /* absolute: a daemon works from / (and connections open later) */
        c->cacert = realpath(o->cacert, NULL);
        if (!c->cacert || access(c->cacert, R_OK) < 0) {
            err = -errno;
            char ebuf[64];
            set_error(why, HTTP_ERR_TLS, err);
            snprintf(why->detail, sizeof(why->detail), "the CA file cannot be read (%s)",
                     strerror_r(-err, ebuf, sizeof(ebuf)));
            http_client_free(c);
            return err;
        }
    }
    if (o->header_file) {
        err = load_headers(c, o->header_file, why);
        if (err) {
            http_client_free(c);
            return err;
        }
    }
    c->share = curl_share_init();
    if (!c->share)
        goto out_nomem;
    curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    *out = c;
    return 0;

out_nomem:
    set_error(why, HTTP_ERR_NOMEM, -ENOMEM);
    http_client_free(c);
    return -ENOMEM;
}

static void cancel_done(struct http_req *r)
{
    set_error(&r->error, HTTP_ERR_CANCELED, -ECANCELED);
    r->state = ST_DONE;
    r->done(r);
}

/* Contract in http.h. */
void http_client_free(struct http_client *c)
{
    struct http_req *r, *canceled = NULL;

    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    atomic_store(&c->stopping, true);
    while ((r = queue_pop(c))) {
        r->qnext = canceled;
        canceled = r;
    }
    pthread_cond_broadcast(&c->work);
    pthread_mutex_unlock(&c->lock);
    while ((r = canceled)) {
        canceled = r->qnext;
        r->qnext = NULL;
        cancel_done(r);
    }
    for (unsigned i = 0; i < c->nworkers; i++) {
        pthread_join(c->workers[i]->tid, NULL);
        curl_easy_cleanup(c->workers[i]->easy);
        free(c->workers[i]);
    }
    for (unsigned i = 0; i < c->nspare; i++)
        curl_easy_cleanup(c->spare[i]);
    if (c->share)
        curl_share_cleanup(c->share);
    for (size_t i = 0; i < c->nheaders; i++) {
        explicit_bzero(c->headers[i], strlen(c->headers[i]));
        free(c->headers[i]);
    }
    free(c->headers);
    free(c->cacert);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&c->share_locks[i]);
    pthread_cond_destroy(&c->work);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static bool request_valid(const struct http_req *r)
{
    if (!r->url || !r->done || !http_is_url(r->url))
        return false;
    if (r->kind == HTTP_RANGE || r->kind == HTTP_SUFFIX) {
        size_t t;
        if (!r->iov || r->iovcnt <= 0)
            return false;
        t = iov_total(r->iov, r->iovcnt);
        if (t == 0 || r->off + t < r->off)
            return false;
        if (r->kind == HTTP_RANGE && r->expect && r->off + t > r->expect->size)
            return false;
    }
    return r->kind != HTTP_BODY || r->body_max > 0;
}

/* Contract in http.h. */
int http_submit(struct http_client *c, struct http_req *r)
{
    int err = 0;

    if (!request_valid(r))
        return -EINVAL;
    memset(&r->error, 0, sizeof(r->error));
    memset(&r->got, 0, sizeof(r->got));
    r->got_off = 0;
    r->got_len = 0;
    r->whole = false;
    r->body = NULL;
    r->body_len = 0;
    r->attempts = 0;
    r->bytes = 0;
    pthread_mutex_lock(&c->lock);
    if (atomic_load(&c->stopping)) {
        err = -ECANCELED;
        goto out_unlock;
    }
    /* A worker for every queued request, up to the connection limit. */
    if (c->idle == 0 && c->nworkers < c->connections) {
        err = spawn_worker(c);
        if (err && c->nworkers > 0)
            err = 0; /* the others will get to it */
        if (err)
            goto out_unlock;
    }
    queue_push(c, r);
    pthread_cond_signal(&c->work);
out_unlock:
    pthread_mutex_unlock(&c->lock);
    return err;
}

/* Contract in http.h. */
void http_promote(struct http_client *c, struct http_req *r)
{
    pthread_mutex_lock(&c->lock);
    if (r->state == ST_QUEUED && r->prio == HTTP_PRIO_AHEAD) {
        queue_unlink(c, r);
        r->prio = HTTP_PRIO_DEMAND;
        queue_push(c, r);
    } else if (r->state == ST_NEW) {
        r->prio = HTTP_PRIO_DEMAND; /* about to be submitted */
    }
    pthread_mutex_unlock(&c->lock);
}

struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    size_t left; /* protected by lock */
};

static void waiter_done(struct http_req *r)
{
    struct waiter *wt = r->arg;

    pthread_mutex_lock(&wt->lock);
    wt->left--;
    pthread_cond_broadcast(&wt->cv);
    pthread_mutex_unlock(&wt->lock);
}

/* Contract in http.h. */
int http_run_all(struct http_client *c, struct http_req **rs, size_t n)
{
    struct waiter wt = {.left = 0};
    int first = 0;

    pthread_mutex_init(&wt.lock, NULL);
    pthread_cond_init(&wt.cv, NULL);
    for (size_t i = 0; i < n; i++) {
        int err;
        rs[i]->done = waiter_done;
        rs[i]->arg = &wt;
        pthread_mutex_lock(&wt.lock);
        wt.left++;
        pthread_mutex_unlock(&wt.lock);
        err = http_submit(c, rs[i]);
        if (err) {
            memset(&rs[i]->error, 0, sizeof(rs[i]->error));
            rs[i]->error.err = err;
            rs[i]->error.why = err == -ENOMEM      ? HTTP_ERR_NOMEM
                               : err == -ECANCELED ? HTTP_ERR_CANCELED
                                                   : HTTP_ERR_OTHER;
            pthread_mutex_lock(&wt.lock);
            wt.left--;
            pthread_mutex_unlock(&wt.lock);
        }
    }
    pthread_mutex_lock(&wt.lock);
    while (wt.left > 0)
        pthread_cond_wait(&wt.cv, &wt.lock);
    pthread_mutex_unlock(&wt.lock);
    pthread_cond_destroy(&wt.cv);
    pthread_mutex_destroy(&wt.lock);
    for (size_t i = 0; i < n; i++)
        if (!first && rs[i]->error.err)
            first = rs[i]->error.err;
    return first;
}

/* Contract in http.h. */
int http_run(struct http_client *c, struct http_req *r)
{
    return http_run_all(c, &r, 1);
}

/* ---- the open probe ---- */

static int probe_fallback_tail(struct http_client *c, const char *url, const struct http_auth *auth,
                               size_t tail_len, struct http_probe *p, struct http_error *e)
{
    struct http_req r = {0};
    struct iovec v;
    size_t n;
    int err;

    if (p->id.size == UINT64_MAX) {
        /* No size yet: a HEAD. */
        r.kind = HTTP_HEAD;
        r.url = url;
        r.auth = auth;
        err = http_run(c, &r);
        p->requests += r.attempts;
        if (err) {
            *e = r.error;
            return err;
        }
        p->id = r.got;
    }
    n = p->id.size < tail_len ? (size_t)p->id.size : tail_len;
    p->tail_off = p->id.size - n;
    p->tail_len = n;
    if (n == 0)
        return 0;
    p->tail = malloc(n);
    if (!p->tail) {
        set_error(e, HTTP_ERR_NOMEM, -ENOMEM);
        return -ENOMEM;
    }
    memset(&r, 0, sizeof(r));
    v.iov_base = p->tail;
    v.iov_len = n;
    r.kind = HTTP_RANGE;
    r.url = url;
    r.auth = auth;
    r.off = p->tail_off;
    r.iov = &v;
    r.iovcnt = 1;
    r.expect = &p->id;
    err = http_run(c, &r);
    p->requests += r.attempts;
    if (err)
        *e = r.error;
    return err;
}

/* Contract in http.h. */
int http_probe(struct http_client *c, const char *url, const struct http_auth *auth,
               size_t head_len, size_t tail_len, struct http_probe *p, struct http_error *e)
{
    struct http_req tr = {0}, hr = {0}, *rs[2] = {&tr, &hr};
    struct iovec tv, hv;
    int err;

    memset(p, 0, sizeof(*p));
    memset(e, 0, sizeof(*e));
    p->id.size = UINT64_MAX;
    if (tail_len == 0)
        tail_len = 1;
    p->tail = malloc(tail_len);
    p->head = head_len ? malloc(head_len) : NULL;
    if (!p->tail || (head_len && !p->head)) {
        set_error(e, HTTP_ERR_NOMEM, -ENOMEM);
        err = -ENOMEM;
        goto out_err;
    }
    tv.iov_base = p->tail;
    tv.iov_len = tail_len;
    tr.kind = HTTP_SUFFIX;
    tr.url = url;
    tr.auth = auth;
    tr.iov = &tv;
    tr.iovcnt = 1;
    hv.iov_base = p->head;
    hv.iov_len = head_len;
    hr.kind = HTTP_RANGE;
    hr.url = url;
    hr.auth = auth;
    hr.iov = &hv;
    hr.iovcnt = 1;
    http_run_all(c, rs, head_len ? 2 : 1);
    p->requests = tr.attempts + hr.attempts;

    if (head_len && hr.error.why == HTTP_ERR_STATUS && hr.error.status == 416) {
        /* bytes=0-N of an empty object: no head; the tail's answer (or
         * the HEAD after it) tells the size. */
        head_len = 0;
    } else if (head_len) {
        if (hr.error.err) {
            *e = hr.error;
            err = hr.error.err;
            goto out_err;
        }
        p->head_len = hr.got_len;
        p->id = hr.got;
    }
    if (!tr.error.err) {
        if (head_len && (tr.got.size != p->id.size || !etag_equal(tr.got.etag, p->id.etag))) {
            set_error(e, HTTP_ERR_CHANGED, -ESTALE);
            snprintf(e->detail, sizeof(e->detail), "the object changed while it was opened");
            err = -ESTALE;
            goto out_err;
        }
        p->id = tr.got;
        p->tail_off = tr.got_off;
        p->tail_len = tr.got_len;
        return 0;
    }
    /* The suffix range was answered wrongly (s3rver) or refused (416 for
     * an empty object, 501): one more try the long way. Anything else, a
     * 200 larger than tail_len included, is the answer. */
    if (!(tr.error.why == HTTP_ERR_BAD_RANGE ||
          (tr.error.why == HTTP_ERR_STATUS &&
           (tr.error.status == 416 || tr.error.status == 501)))) {
        *e = tr.error;
        err = tr.error.err;
        goto out_err;
    }
    free(p->tail);
    p->tail = NULL;
    if (tr.error.why == HTTP_ERR_BAD_RANGE && tr.error.status == 206 && tr.got.size > 0) {
        if (head_len && tr.got.size != p->id.size) {
            set_error(e, HTTP_ERR_CHANGED, -ESTALE);
            snprintf(e->detail, sizeof(e->detail), "the object changed while it was opened");
            err = -ESTALE;
            goto out_err;
        }
        p->id = tr.got; /* a wrong range, but a right total */
    }
    err = probe_fallback_tail(c, url, auth, tail_len, p, e);
    if (err)
        goto out_err;
    return 0;

out_err:
    http_probe_destroy(p);
    return err;
}

/* Contract in http.h. */
void http_probe_destroy(struct http_probe *p)
{
    if (!p)
        return;
    free(p->head);
    free(p->tail);
    p->head = p->tail = NULL;
    p->head_len = p->tail_len = 0;
}

/* Contract in http.h. */
void http_get_stats(struct http_client *c, struct http_stats *out)
{
    out->requests = atomic_load(&c->requests);
    out->bytes = atomic_load(&c->bytes);
    out->retries = atomic_load(&c->retried);
    out->failures = atomic_load(&c->failures);
    out->connections = atomic_load(&c->conns);
    out->opened = atomic_load(&c->opened);
}

static const char *status_text(long s)
{
    switch (s) {
    case 301:
        return "moved permanently";
    case 302:
    case 303:
    case 307:
    case 308:
        return "redirected";
    case 400:
        return "bad request";
    case 401:
        return "authentication required";
    case 403:
        return "access denied";
    case 404:
        return "not found";
    case 405:
        return "method not allowed";
    case 410:
        return "gone";
    case 412:
        return "precondition failed";
    case 416:
        return "range not satisfiable";
    case 429:
        return "too many requests";
    case 500:
        return "internal server error";
    case 501:
        return "not implemented";
    case 502:
        return "bad gateway";
    case 503:
        return "service unavailable";
    case 504:
        return "gateway timeout";
    default:
        return "unexpected status";
    }
}

/* Contract in http.h. */
const char *http_problem(const struct http_error *e, char *buf, size_t len)
{
    const char *d = e->detail;

    switch (e->why) {
    case HTTP_OK:
        snprintf(buf, len, "no error");
        break;
    case HTTP_ERR_DNS:
        snprintf(buf, len, "cannot resolve the host name (DNS lookup failed: %s)",
                 d[0] ? d : "no detail");
        break;
    case HTTP_ERR_REFUSED:
        snprintf(buf, len, "connection refused (is the server running?)");
        break;
    case HTTP_ERR_CONNECT:
        snprintf(buf, len, "cannot connect to the server (%s)", d);
        break;
    case HTTP_ERR_TLS_VERIFY:
        snprintf(buf, len,
                 "TLS certificate verification failed (%s); for a private CA give its "
                 "certificate with -o cacert=FILE",
                 d);
        break;
    case HTTP_ERR_TLS:
        snprintf(buf, len, "TLS failed (%s)", d);
        break;
    case HTTP_ERR_TIMEOUT:
        snprintf(buf, len, "timed out (%s; see -o timeout=)", d);
        break;
    case HTTP_ERR_RESET:
        snprintf(buf, len, "connection reset by the server (%s)", d);
        break;
    case HTTP_ERR_SHORT:
        snprintf(buf, len, "the reply ended early (%s)", d);
        break;
    case HTTP_ERR_STATUS:
        if (e->status == 404 && !e->code[0])
            snprintf(buf, len, "404 Not Found: no such object");
        else if (e->code[0])
            snprintf(buf, len, "HTTP %ld %s (%s)", e->status, status_text(e->status), e->code);
        else
            snprintf(buf, len, "HTTP %ld %s", e->status, status_text(e->status));
        break;
    case HTTP_ERR_NO_RANGE:
        snprintf(buf, len, "the server ignores Range requests (it sent the whole object)");
        break;
    case HTTP_ERR_BAD_RANGE:
        snprintf(buf, len, "the server answered another byte range than asked for (%s)", d);
        break;
    case HTTP_ERR_TOO_LONG:
        snprintf(buf, len, "the server sent more bytes than asked for");
        break;
    case HTTP_ERR_CHANGED:
        snprintf(buf, len, "the object changed since it was opened (%s)", d);
        break;
    case HTTP_ERR_ENCODED:
        snprintf(buf, len, "the server compressed its reply (Content-Encoding)");
        break;
    case HTTP_ERR_REDIRECTS:
        snprintf(buf, len, "too many redirects (more than %d)", HTTP_MAX_REDIRECTS);
        break;
    case HTTP_ERR_TOO_BIG:
        snprintf(buf, len, "the reply is too large (%s)", d);
        break;
    case HTTP_ERR_NO_SIZE:
        snprintf(buf, len, "the server does not tell the object's size (no Content-Length)");
        break;
    case HTTP_ERR_CANCELED:
        snprintf(buf, len, "canceled");
        break;
    case HTTP_ERR_NOMEM:
        snprintf(buf, len, "out of memory");
        break;
    case HTTP_ERR_HEADER_FILE:
        snprintf(buf, len, "header file: %s", d);
        break;
    case HTTP_ERR_NO_LIBCURL:
        snprintf(buf, len,
                 "cannot load libcurl (%s): needed for http://, https:// and s3:// sources", d);
        break;
    case HTTP_ERR_OTHER:
    default:
        snprintf(buf, len, "%s", d[0] ? d : "request failed");
        break;
    }
    return buf;
}

/* Contract in http.h. */
const char *http_redact_url(const char *url, char *buf, size_t len)
{
    const char *p = strstr(url, "://");
    const char *host, *end, *at;
    size_t n = 0;

    if (len == 0)
        return buf;
    host = p ? p + 3 : url;
    /* The authority ends at the first '/', '?' or '#', unless a password
     * holds a raw '/' ("user:pa/ss@host"): a ':' followed by anything but
     * port digits before that '/' means userinfo, which ends at an '@'. */
    end = host + strcspn(host, "/?#");
    at = memrchr(host, '@', (size_t)(end - host));
    if (!at) {
        const char *colon = memchr(host, ':', (size_t)(end - host));
        if (colon && colon[1 + strspn(colon + 1, "0123456789")] != *end)
            at = memchr(host, '@', strcspn(host, "?#"));
    }
#define APPEND(s, k)                                                                               \
    do {                                                                                           \
        size_t k_ = (k);                                                                           \
        if (k_ > len - 1 - n)                                                                      \
            k_ = len - 1 - n;                                                                      \
        memcpy(buf + n, (s), k_);                                                                  \
        n += k_;                                                                                   \
    } while (0)
    APPEND(url, (size_t)(host - url));
    if (at)
        host = at + 1;
    /* The path ends at '?' or '#'. */
    APPEND(host, strcspn(host, "?#"));
#undef APPEND
    buf[n] = '\0';
    return buf;
}

/* Contract in http.h. */
bool http_is_url(const char *s)
{
    return !strncasecmp(s, "http://", 7) || !strncasecmp(s, "https://", 8);
}
