/*
 * HTTP(S) client for remote sources: ranged GETs with exact reply checks,
 * an open probe, and a bounded pool of keep-alive connections (libcurl,
 * loaded by the first http_client_new(): fs/curlsym.h).
 *
 * A client (one per mount) owns up to `connections` worker threads, each with
 * its own libcurl easy handle and so its own keep-alive connection. Every
 * request goes through the client's queue: http_submit() queues it and
 * returns, and a worker performs it (with retries) and calls its done()
 * callback. A request never runs on more than one connection, and never more
 * than `connections` run at once: no multi handle, so none of libcurl 7.88's
 * MAX_HOST_CONNECTIONS stalls (../shared/REMOTE.md). Two priorities:
 * HTTP_PRIO_DEMAND requests (a reader waits for them) are taken before any
 * HTTP_PRIO_AHEAD request (fetch-ahead); http_promote() moves a queued
 * fetch-ahead request forward when a reader starts waiting for it.
 *
 * HTTP/1.1 is forced (libcurl 7.88's HTTP/2 is slow with many streams). TLS
 * is verified (peer and host) unless nothing else is possible: there is no
 * switch to turn it off; a private CA goes in opts.cacert. Redirects are
 * followed for HEAD and GET (at most HTTP_MAX_REDIRECTS, https never to
 * http), except for requests whose auth says no_redirect (signed S3
 * requests: a signature is only valid for its own host).
 *
 * Every ranged reply is checked exactly (status 206, Content-Range equal to
 * the range asked for and to the size expected, body length) and a body
 * longer than asked for is cut off; a 200 to a ranged request is
 * HTTP_ERR_NO_RANGE, never a silent full download. When the object's
 * identity is known (struct http_ident) every ranged GET carries If-Match
 * (strong ETags only) and the reply's ETag and Last-Modified are compared
 * too, for servers that ignore If-Match: a 412 or a mismatch is
 * HTTP_ERR_CHANGED (-ESTALE).
 *
 * libcurl's proxy variables (https_proxy, no_proxy, ...) apply as for curl.
 *
 * Secrets: header-file values, signing keys and session tokens are sent, and
 * never logged, copied into an error or a counter, or shown by
 * http_problem(). Error texts name the URL only through http_redact_url().
 *
 * Errors (struct http_error.err, negative errno; .why says more):
 *   -EHOSTUNREACH  DNS lookup failed, or no route            (HTTP_ERR_DNS, _CONNECT)
 *   -ECONNREFUSED  connection refused                        (HTTP_ERR_REFUSED)
 *   -ETIMEDOUT     connect timeout or no progress for timeout (HTTP_ERR_TIMEOUT)
 *   -ECONNRESET    connection reset or closed mid-reply      (HTTP_ERR_RESET)
 *   -EIO           body shorter than announced (HTTP_ERR_SHORT), or an
 *                  HTTP status not covered below             (HTTP_ERR_STATUS)
 *   -ENOENT        404 or 410                                 (HTTP_ERR_STATUS)
 *   -EACCES        401 or 403                                 (HTTP_ERR_STATUS)
 *   -ESTALE        412, or the ETag/Last-Modified/size differ (HTTP_ERR_CHANGED)
 *   -EOPNOTSUPP    a 200 (whole object) to a ranged request  (HTTP_ERR_NO_RANGE)
 *   -EPROTO        wrong Content-Range or Content-Length, body longer than
 *                  asked, encoded body, TLS failure           (_BAD_RANGE, _TOO_LONG,
 *                                                              _ENCODED, _TLS*)
 *   -ELOOP         too many redirects                         (HTTP_ERR_REDIRECTS)
 *   -EFBIG         a whole-body reply larger than its limit   (HTTP_ERR_TOO_BIG)
 *   -ECANCELED     the client is being freed                  (HTTP_ERR_CANCELED)
 *   -ELIBACC       libcurl.so.4 cannot be loaded              (HTTP_ERR_NO_LIBCURL)
 *   -ENOMEM, -EINVAL (bad request or option), -EAGAIN (no worker thread).
 * Retried (opts.retries times, exponential backoff with full jitter, or the
 * server's Retry-After up to the backoff cap): 5xx, 408, 429, refused and
 * failed connects, timeouts, resets, short bodies. A retry of a ranged GET
 * whose identity is known resumes after the bytes already received.
 *
 * No FUSE here: the unit tests drive it against real servers.
 */
#ifndef NPYFS_FS_HTTP_H
#define NPYFS_FS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define HTTP_DEFAULT_CONNECTIONS 8
#define HTTP_MAX_CONNECTIONS 64
#define HTTP_DEFAULT_TIMEOUT_MS 30000
#define HTTP_DEFAULT_RETRIES 4
/* Backoff before retry n (from 0) is uniform in [0, min(max, base * 2^n)]. */
#define HTTP_DEFAULT_RETRY_BASE_MS 200
#define HTTP_DEFAULT_RETRY_MAX_MS 5000
#define HTTP_MAX_REDIRECTS 5
/* Longest header file accepted (bytes). */
#define HTTP_HEADER_FILE_MAX (64u << 10)
/* Room for an ETag or a Last-Modified value; longer ones are kept cut to
 * this size (compared the same way every time). */
#define HTTP_ETAG_MAX 256
#define HTTP_DATE_MAX 64

struct http_client;

struct http_opts {
    unsigned connections;    /* 0: HTTP_DEFAULT_CONNECTIONS; at most HTTP_MAX_CONNECTIONS */
    unsigned timeout_ms;     /* 0: default; connect timeout, and the longest time a
                              * transfer may make no progress (seconds granularity) */
    int retries;             /* < 0: HTTP_DEFAULT_RETRIES; 0: never retry */
    unsigned retry_base_ms;  /* 0: HTTP_DEFAULT_RETRY_BASE_MS */
    unsigned retry_max_ms;   /* 0: HTTP_DEFAULT_RETRY_MAX_MS */
    const char *cacert;      /* borrowed during http_client_new(): a PEM CA file, or NULL
                              * for the system's store */
    const char *header_file; /* borrowed during http_client_new(): extra request headers,
                              * one "Name: value" a line (blank lines and lines starting
                              * with '#' skipped), read once; values are secrets */
};

/* How the requests to one service are signed and shaped (S3: see s3.h). The
 * strings are borrowed by every request that points here, until it is done. */
struct http_auth {
    const char *sigv4;          /* CURLOPT_AWS_SIGV4 ("aws:amz:REGION:s3"), or NULL */
    const char *user, *secret;  /* access key id and secret key, with sigv4 (secret) */
    const char *const *headers; /* NULL-terminated extra header lines (may be secret) */
    const char *cacert;         /* a PEM CA file for these requests when the client has
                                 * none (http_opts.cacert wins), or NULL: the system's */
    bool raw_path;              /* send the path exactly as given (no dot segments removed) */
    bool no_header_file;        /* leave out the client's header-file lines (signed S3
                                 * requests carry their own Authorization) */
    bool no_redirect;           /* do not follow redirects */
    bool s3_errors;             /* take <Error><Code> out of error bodies */
};

/* An object's identity: what must not change while it is in use. Empty
 * strings when the server sent none. */
struct http_ident {
    uint64_t size;
    char etag[HTTP_ETAG_MAX];          /* as sent, quotes and W/ included */
    char last_modified[HTTP_DATE_MAX]; /* as sent */
};

enum http_why {
    HTTP_OK = 0,
    HTTP_ERR_DNS,
    HTTP_ERR_REFUSED,
    HTTP_ERR_CONNECT,
    HTTP_ERR_TLS_VERIFY,
    HTTP_ERR_TLS,
    HTTP_ERR_TIMEOUT,
    HTTP_ERR_RESET,
    HTTP_ERR_SHORT,
    HTTP_ERR_STATUS,
    HTTP_ERR_NO_RANGE,
    HTTP_ERR_BAD_RANGE,
    HTTP_ERR_TOO_LONG,
    HTTP_ERR_CHANGED,
    HTTP_ERR_ENCODED,
    HTTP_ERR_REDIRECTS,
    HTTP_ERR_TOO_BIG,
    HTTP_ERR_NO_SIZE,
    HTTP_ERR_CANCELED,
    HTTP_ERR_NOMEM,
    HTTP_ERR_HEADER_FILE,
    HTTP_ERR_NO_LIBCURL, /* .detail: dlerror()'s text */
    HTTP_ERR_OTHER,
};

/* What went wrong, free of secrets (safe to print). */
struct http_error {
    int err; /* 0 or a negative errno (table above) */
    enum http_why why;
    long status;      /* the last HTTP status received, 0 if none */
    char code[64];    /* an S3 <Code> from the error body ("NoSuchKey"), or "" */
    char region[32];  /* x-amz-bucket-region of the reply, or "" */
    char detail[192]; /* libcurl's text for a transport error, or what did not match */
};

enum http_kind {
    HTTP_RANGE,  /* GET bytes [off, off + iov total) into iov */
    HTTP_HEAD,   /* HEAD: the identity only (Content-Length is the size) */
    HTTP_BODY,   /* GET the whole body into a malloc'd buffer (body, body_len) */
    HTTP_SUFFIX, /* GET the last iov-total bytes (bytes=-N), see http_probe() */
};

enum http_prio { HTTP_PRIO_DEMAND, HTTP_PRIO_AHEAD };

struct http_req {
    /* In: set by the caller before http_submit(), borrowed until done(). */
    enum http_kind kind;
    const char *url;
    const struct http_auth *auth; /* NULL: no signing, no extra headers */
    uint64_t off;                 /* HTTP_RANGE: first byte */
    const struct iovec *iov;      /* HTTP_RANGE/_SUFFIX: where the bytes go */
    int iovcnt;
    const struct http_ident *expect; /* NULL, or the identity the reply must match;
                                      * expect->size is checked against the reply's
                                      * total when expect is set */
    size_t body_max;                 /* HTTP_BODY: largest body accepted */
    enum http_prio prio;
    void (*done)(struct http_req *r); /* called once, on a worker thread, without
                                       * any client lock; r may be freed in it */
    void *arg;                        /* for done() */

    /* Out: valid in done(). */
    struct http_error error;
    struct http_ident got; /* identity sent with the (last) reply; got.size is
                            * the total from Content-Range or Content-Length */
    uint64_t got_off;      /* HTTP_SUFFIX: offset of the first byte received */
    size_t got_len;        /* HTTP_RANGE/_SUFFIX: bytes placed in iov */
    bool whole;            /* HTTP_SUFFIX: the server sent the whole object (200) */
    char *body;            /* HTTP_BODY: owned by the caller once done (free()),
                            * NUL-terminated; NULL on error */
    size_t body_len;
    unsigned attempts; /* requests sent for this one (1 + retries) */
    uint64_t bytes;    /* body bytes received over all attempts */

    /* Private to http.c. */
    struct http_req *qprev, *qnext; /* protected by the client lock: queue links */
    int state;                      /* protected by the client lock */
};

struct http_stats {
    uint64_t requests;    /* HTTP requests sent (retries included) */
    uint64_t bytes;       /* body bytes received */
    uint64_t retries;     /* requests sent again after a failure */
    uint64_t failures;    /* requests that failed for good (not counted: a 404 to an
                           * HTTP_BODY request, an optional file's absence) */
    uint64_t connections; /* connections open now */
    uint64_t opened;      /* connections opened in all */
};

/* A client with options o (NULL: defaults). The first call in the process
 * loads libcurl (curlsym_load()). Reads and checks the header file; on
 * error *why (may be NULL) says what was wrong without its values
 * (HTTP_ERR_HEADER_FILE: "line 3: not 'Name: value'"). Worker threads start
 * when requests come. Returns 0, -EINVAL (bad option or header file),
 * -ENOENT/-EACCES (files), -ELIBACC (no libcurl), -ENOMEM. */
int http_client_new(const struct http_opts *o, struct http_client **out, struct http_error *why);

/* Cancels queued requests (done() with -ECANCELED), aborts running ones and
 * joins the workers. Accepts NULL. The caller must not submit concurrently. */
void http_client_free(struct http_client *c);

/* Let the workers perform every request queued or running (fetch-ahead
 * included), then stop and join them, keeping their easy handles and so
 * their live connections for the workers later requests start. For
 * fork(): threads do not survive it, so call this first, with nothing
 * submitting meanwhile; the child goes on with the connections, and the
 * parent must then not use the client (it may only exit). Returns 0, or
 * -EBUSY (requests queued and no worker: nothing done). */
int http_client_park(struct http_client *c);

/* Queue r. Returns 0 (done() will be called exactly once), or -EINVAL (bad
 * request), -ECANCELED (client being freed), -EAGAIN (no worker could be
 * started): then done() is not called. Thread-safe. */
int http_submit(struct http_client *c, struct http_req *r);

/* Perform r and wait for it: r->done and r->arg are overwritten. Returns
 * r->error.err. Thread-safe. */
int http_run(struct http_client *c, struct http_req *r);

/* Perform n requests in parallel and wait for all. Returns 0 if all
 * succeeded, else the first error in array order. */
int http_run_all(struct http_client *c, struct http_req **rs, size_t n);

/* The caller guarantees r is not done (its done() has not finished): if it
 * is still queued as HTTP_PRIO_AHEAD, or not submitted yet (its state zeroed
 * as by calloc), make it HTTP_PRIO_DEMAND (a reader now waits for it).
 * Thread-safe. */
void http_promote(struct http_client *c, struct http_req *r);

/* Open an object in one round trip where the server allows: GET the last
 * tail_len bytes (bytes=-N) and, if head_len > 0, in parallel the first
 * head_len bytes. A server that answers the suffix range wrongly (s3rver
 * sends bytes 0-N) or not at all (416, 501) costs a HEAD, or the head's
 * Content-Range, and a ranged GET. A 200 for an object no larger than
 * tail_len is accepted (it is all there); a larger 200 is HTTP_ERR_NO_RANGE.
 * Both answers must agree on size and ETag (else HTTP_ERR_CHANGED). */
struct http_probe {
    struct http_ident id;
    unsigned char *head; /* owned: the first head_len bytes (fewer if the object is smaller) */
    size_t head_len;
    unsigned char *tail; /* owned: bytes [tail_off, id.size) */
    size_t tail_len;
    uint64_t tail_off;
    unsigned requests; /* HTTP requests it took */
};
int http_probe(struct http_client *c, const char *url, const struct http_auth *auth,
               size_t head_len, size_t tail_len, struct http_probe *out, struct http_error *e);
void http_probe_destroy(struct http_probe *p);

/* A snapshot of the client's counters. Thread-safe. */
void http_get_stats(struct http_client *c, struct http_stats *out);

/* One line for a person: what went wrong, no secrets, no URL (callers add
 * http_redact_url()). Returns buf. Thread-safe. */
const char *http_problem(const struct http_error *e, char *buf, size_t len);

/* url without its userinfo, query and fragment ("https://host/path"), for
 * messages: a signed URL's query or a user:password@ never shows. Always
 * NUL-terminates (cut to len); returns buf. */
const char *http_redact_url(const char *url, char *buf, size_t len);

/* Is s an http:// or https:// URL (case-insensitive scheme)? */
bool http_is_url(const char *s);

#endif
