/*
 * A mount's network side: the HTTP client, the S3 configuration and the
 * remote block cache made from the -o options. Contract in net.h.
 */
#define _GNU_SOURCE
#include "net.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct net {
    struct http_client *http; /* owned */
    struct s3_config s3;      /* owned when has_s3 */
    bool has_s3;
    struct remote_ctx *remote; /* owned */
};

static void say(char *msg, size_t len, const char *fmt, const char *arg)
{
    if (msg && len)
        snprintf(msg, len, fmt, arg);
}

/* Contract in net.h. */
int net_new(const struct net_opts *o, bool s3, struct net **out, char *msg, size_t len)
{
    struct http_opts ho = {.retries = o->retries};
    struct remote_opts ro = {.block = (size_t)o->block, .cache_bytes = o->cache};
    struct s3_opts so = {.endpoint = o->endpoint,
                         .region = o->region,
                         .path_style = o->s3_path_style,
                         .anonymous = o->s3_anonymous};
    struct http_error e;
    char why[256];
    struct net *n;
    int err;

    *out = NULL;
    if (msg && len)
        msg[0] = '\0';
    n = calloc(1, sizeof(*n));
    if (!n)
        return -ENOMEM;
    ho.connections = o->connections;
    ho.timeout_ms = o->timeout_s * 1000u;
    ho.cacert = o->cacert;
    ho.header_file = o->http_header;
    err = http_client_new(&ho, &n->http, &e);
    if (err) {
        /* The file's path names the option's value (never a secret: the
         * header file's values are not in why). */
        if (msg && len && e.why == HTTP_ERR_HEADER_FILE)
            snprintf(msg, len, "-o http_header=%s: %s", o->http_header, e.detail);
        else if (msg && len && e.why == HTTP_ERR_TLS && o->cacert)
            snprintf(msg, len, "-o cacert=%s: %s", o->cacert, e.detail);
        else
            say(msg, len, "%s", http_problem(&e, why, sizeof(why)));
        goto out_free;
    }
    if (s3) {
        err = s3_config_load(&so, &n->s3, why, sizeof(why));
        if (err) {
            if (msg && len && o->s3_source)
                snprintf(msg, len, "%s: %s", o->s3_source, why);
            else
                say(msg, len, "%s", why);
            goto out_free;
        }
        n->has_s3 = true;
        /* -o http_header= is for http(s) sources: an S3 request is signed */
        n->s3.auth.no_header_file = true;
        /* AWS_CA_BUNDLE and the profile's ca_bundle are for S3 requests
         * only; -o cacert= (the client's) wins over it */
        if (n->s3.ca_bundle && !o->cacert) {
            /* absolute: a daemon works from / (and connections open later) */
            char *abs = realpath(n->s3.ca_bundle, NULL);
            if (!abs || access(abs, R_OK) < 0) {
                err = -errno;
                free(abs);
                say(msg, len,
                    "the CA bundle that AWS_CA_BUNDLE (or the profile's ca_bundle) "
                    "names cannot be read: %s (give -o cacert=FILE, or unset it)",
                    strerror(-err));
                goto out_free;
            }
            free(n->s3.ca_bundle);
            n->s3.ca_bundle = abs;
            n->s3.auth.cacert = n->s3.ca_bundle;
        }
    }
    err = remote_ctx_new(n->http, n->has_s3 ? &n->s3 : NULL, &ro, &n->remote);
    if (err) {
        uint64_t block = o->block ? o->block : REMOTE_DEFAULT_BLOCK;
        if (msg && len && err == -EINVAL)
            snprintf(msg, len, "-o remote_cache= must hold at least %d blocks: give at least "
                     "%" PRIu64 "K for block=%" PRIu64 "K", REMOTE_MIN_CACHE_BLOCKS,
                     (REMOTE_MIN_CACHE_BLOCKS * block) >> 10, block >> 10);
        else
            say(msg, len, "%s", "out of memory");
        goto out_free;
    }
    *out = n;
    return 0;

out_free:
    net_free(n);
    return err;
}

/* Contract in net.h. */
void net_free(struct net *n)
{
    if (!n)
        return;
    remote_ctx_free(n->remote);
    http_client_free(n->http); /* before the config its requests borrow */
    if (n->has_s3)
        s3_config_destroy(&n->s3);
    free(n);
}

/* Contract in net.h. */
struct remote_ctx *net_remote(struct net *n)
{
    return n->remote;
}

/* Contract in net.h. */
struct http_client *net_http(struct net *n)
{
    return n->http;
}

/* Contract in net.h. */
const struct s3_config *net_s3(struct net *n)
{
    return n->has_s3 ? &n->s3 : NULL;
}

/* Contract in net.h. */
int net_list(struct net *n, const char *url, struct s3_listing *out, char *msg, size_t len)
{
    struct s3_location loc;
    struct http_error e;
    int err;

    memset(out, 0, sizeof(*out));
    if (!n->has_s3) {
        say(msg, len, "%s", "no S3 configuration");
        return -EINVAL;
    }
    err = s3_parse_url(url, &loc);
    if (err || !loc.prefix) {
        if (!err)
            s3_location_destroy(&loc);
        say(msg, len, "%s", "not an s3://BUCKET/PREFIX/ URL");
        return -EINVAL;
    }
    err = s3_list(n->http, &n->s3, loc.bucket, loc.key, 0, out, &e);
    s3_location_destroy(&loc);
    if (err && msg && len)
        s3_problem(&e, msg, len);
    return err;
}

/* Contract in net.h. */
int net_fetch(struct net *n, const char *url, size_t max, char **body, size_t *blen, char *msg,
              size_t len)
{
    struct http_req r = {.kind = HTTP_BODY, .body_max = max ? max : 1};
    struct s3_location loc;
    char *obj = NULL;
    int err;

    *body = NULL;
    *blen = 0;
    if (s3_is_url(url)) {
        if (!n->has_s3) {
            say(msg, len, "%s", "no S3 configuration");
            return -EINVAL;
        }
        err = s3_parse_url(url, &loc);
        if (err == 0) {
            err = loc.prefix ? -EISDIR : s3_object_url(&n->s3, loc.bucket, loc.key, &obj);
            s3_location_destroy(&loc);
        }
        if (err) {
            say(msg, len, "%s", err == -ENOMEM ? "out of memory" : "not an s3://BUCKET/KEY URL");
            return err;
        }
        r.auth = s3_auth(&n->s3);
    }
    r.url = obj ? obj : url;
    err = http_run(n->http, &r);
    free(obj);
    if (err) {
        if (msg && len)
            (s3_is_url(url) ? s3_problem : http_problem)(&r.error, msg, len);
        return err;
    }
    *body = r.body;
    *blen = r.body_len;
    return 0;
}

/* Contract in net.h. */
void net_park(struct net *n)
{
    if (n)
        http_client_park(n->http);
}

/* Contract in net.h. */
void net_stats(struct net *n, struct http_stats *http, struct remote_stats *remote)
{
    http_get_stats(n->http, http);
    remote_ctx_stats(n->remote, remote);
}
