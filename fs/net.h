/*
 * The network side of a mount (or of `npyfs ls` / `npyfs index`) with
 * remote sources: one HTTP client (fs/http.h: its pool of connections), the
 * S3 configuration (fs/s3.h: read from the environment and ~/.aws the way
 * AWS tools read it) when an s3:// URL needs it, and one remote block cache
 * shared by every remote archive (fs/remote.h), made from the -o options.
 * Besides archive bytes (bsrc_open_url() over net_remote()), it lists an
 * s3:// prefix and fetches small whole objects (published index files).
 *
 * CA certificates: -o cacert=FILE for every request; without it,
 * AWS_CA_BUNDLE (or the profile's ca_bundle) for s3:// requests only, as
 * AWS tools do; otherwise the system's store.
 *
 * Messages (msg, len bytes, always NUL-terminated) are one line for a
 * person: no secret, no URL query, no credentials.
 *
 * Thread-safety: net_new(), net_park() and net_free() are for the thread
 * that owns the mount; the rest may be called from any thread.
 */
#ifndef NPYFS_FS_NET_H
#define NPYFS_FS_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "remote.h"
#include "s3.h"

/* The -o options of remote sources (borrowed strings; NULL/0: default). */
struct net_opts {
    const char *endpoint;    /* -o endpoint=URL (S3) */
    const char *region;      /* -o region=R (S3) */
    bool s3_path_style;      /* -o s3_path_style */
    bool s3_anonymous;       /* -o s3_anonymous */
    const char *cacert;      /* -o cacert=FILE */
    const char *http_header; /* -o http_header=FILE */
    unsigned connections;    /* -o connections=N (0: HTTP_DEFAULT_CONNECTIONS) */
    unsigned timeout_s;      /* -o timeout=SECONDS (0: the default) */
    int retries;             /* -o retries=N (< 0: HTTP_DEFAULT_RETRIES) */
    uint64_t block;          /* -o block=SIZE (0: REMOTE_DEFAULT_BLOCK) */
    uint64_t cache;          /* -o remote_cache=SIZE (0: REMOTE_DEFAULT_CACHE) */
    const char *s3_source;   /* an s3:// SOURCE, named in errors of the S3 settings */
};

struct net;

/* Make the client and the cache; with s3, load the S3 configuration too
 * (else s3:// URLs are refused). Reads the header file and checks the CA
 * files now. Returns 0, or a negative errno with msg saying why:
 * -EINVAL (a bad option or configuration), -ENOENT/-EACCES (a file),
 * -ELIBACC (libcurl cannot be loaded), -ENOMEM. */
int net_new(const struct net_opts *o, bool s3, struct net **out, char *msg, size_t len);

/* Every remote source must be closed first. Accepts NULL. */
void net_free(struct net *n);

/* The remote block cache, for bsrc_open_url(). Borrowed. */
struct remote_ctx *net_remote(struct net *n);

/* The HTTP client and S3 configuration (NULL without s3). Borrowed. */
struct http_client *net_http(struct net *n);
const struct s3_config *net_s3(struct net *n);

/* Every archive key under the s3:// prefix url (s3_list(), paginated, in
 * S3's byte order), into *out (destroy with s3_listing_destroy()). Returns
 * 0 or a negative errno (-EINVAL: not an s3:// prefix, no S3
 * configuration; s3_list()'s) with msg saying why. */
int net_list(struct net *n, const char *url, struct s3_listing *out, char *msg, size_t len);

/* The whole object at url (http(s):// or s3://), at most max bytes, into
 * *body (malloc'd, NUL-terminated; *blen bytes). Returns 0 or a negative
 * errno with msg saying why: -ENOENT (404: no such object), -EFBIG (larger
 * than max), http.h's. */
int net_fetch(struct net *n, const char *url, size_t max, char **body, size_t *blen, char *msg,
              size_t len);

/* Before fork(): let the requests in flight end and stop the client's
 * threads, keeping its connections for the child (http_client_park()).
 * Accepts NULL. */
void net_park(struct net *n);

/* The mount's totals: the client's counters (connections open now
 * included) and the block cache's bytes. */
void net_stats(struct net *n, struct http_stats *http, struct remote_stats *remote);

/* The limits net_opts accept (the CLI checks them). */
#define NET_MAX_TIMEOUT 3600
#define NET_MAX_RETRIES 20

#endif
