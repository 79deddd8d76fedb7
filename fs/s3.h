/*
 * S3 on top of http.h: s3:// URLs, configuration read the way AWS tools read
 * it, object URLs and SigV4 signing (libcurl's CURLOPT_AWS_SIGV4), and
 * ListObjectsV2 for a prefix source.
 *
 * Configuration (s3_config_load()), each setting from the first place that
 * has it, as the AWS CLI does:
 *   credentials  s3_anonymous (none, requests unsigned); AWS_ACCESS_KEY_ID +
 *                AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN); the profile's
 *                aws_access_key_id/aws_secret_access_key/aws_session_token in
 *                the credentials file, then in the config file
 *   profile      AWS_PROFILE, AWS_DEFAULT_PROFILE, "default"; a profile named
 *                in the environment must exist in one of the files
 *   files        AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials ([NAME]);
 *                AWS_CONFIG_FILE or ~/.aws/config ([default], [profile NAME],
 *                [services NAME]); ~ is $HOME
 *   region       -o region=, AWS_REGION, AWS_DEFAULT_REGION, the profile's
 *                region, us-east-1
 *   endpoint     -o endpoint=, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the
 *                profile's services section "s3 = endpoint_url = ...", the
 *                profile's endpoint_url, https://s3.REGION.amazonaws.com
 *                (AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true skips the
 *                environment and files)
 *   addressing   -o s3_path_style, the profile's "s3 = addressing_style =";
 *                else virtual-hosted (bucket.host), except where it cannot
 *                work: an IP address or localhost endpoint, a bucket name
 *                that is not a DNS label, or dots in it over https
 *   CA bundle    AWS_CA_BUNDLE, the profile's ca_bundle (only read: the
 *                caller gives it to http_opts.cacert unless -o cacert= is set)
 * Profiles that need another program (role_arn, credential_process, sso_*,
 * web_identity_token_file) are refused with a message saying so.
 *
 * Keys are URI-encoded as S3 canonicalizes them (only A-Za-z0-9-_.~ and the
 * '/' separators raw, %XX uppercase) and sent with the path as given
 * (http_auth.raw_path), because the signature covers the path exactly.
 * Every request carries x-amz-content-sha256: UNSIGNED-PAYLOAD (which
 * libcurl 7.88 does not add, and some servers require even unsigned) and,
 * with a session token, x-amz-security-token; both are then signed.
 *
 * Secrets (secret key, session token) live only in struct s3_config, are
 * wiped by s3_config_destroy(), and never appear in messages; the access key
 * id is not a secret to AWS but is not shown either.
 *
 * Errors: -EINVAL (bad URL, option or configuration: msg says which),
 * -ENOENT (a profile or file named but missing), -ENOMEM, and from s3_list()
 * the http.h errors plus -EPROTO (a listing that is not valid XML as S3
 * writes it). s3_config_load() reads the environment (getenv): call it at
 * startup, not alongside setenv(). Everything else is thread-safe on
 * distinct objects; a loaded config is immutable and may be shared by any
 * number of threads.
 */
#ifndef NPYFS_FS_S3_H
#define NPYFS_FS_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

#define S3_DEFAULT_REGION "us-east-1"
/* Largest ListObjectsV2 reply accepted (S3 sends at most 1000 keys). */
#define S3_LIST_BODY_MAX (16u << 20)

/* What the mount options say; NULL/false: not given. Borrowed. */
struct s3_opts {
    const char *endpoint; /* -o endpoint=URL */
    const char *region;   /* -o region=R */
    bool path_style;      /* -o s3_path_style */
    bool anonymous;       /* -o s3_anonymous */
};

struct s3_config {
    char *region;         /* owned */
    char *endpoint;       /* owned: "scheme://host[:port][/base]", no trailing '/' */
    bool path_style;      /* requests name the bucket in the path */
    bool virtual_forced;  /* addressing_style = virtual in the profile */
    bool anonymous;       /* unsigned requests */
    char *ca_bundle;      /* owned: AWS_CA_BUNDLE or the profile's ca_bundle, or NULL */
    char *access_key;     /* owned, NULL if anonymous */
    char *secret_key;     /* owned secret, NULL if anonymous */
    char *session_token;  /* owned secret, or NULL */
    char creds_from[160]; /* where the credentials came from, for messages */
    /* The request shape every S3 request of this config points to
     * (borrowed by requests until the config is destroyed). */
    struct http_auth auth;
    char sigv4[96];
    char *token_header; /* owned secret: "x-amz-security-token: ..." */
    const char *headers[3];
};

/* Load the configuration (see above). On error, msg gets one line for a
 * person (no secrets). Returns 0 or a negative errno; on error *c holds
 * nothing to destroy. */
int s3_config_load(const struct s3_opts *o, struct s3_config *c, char *msg, size_t len);

/* Wipes the secrets. Accepts a zeroed or destroyed config. */
void s3_config_destroy(struct s3_config *c);

/* The request shape for c's requests: signing (unless anonymous), headers,
 * raw paths, no redirects, S3 error codes. Borrowed from c. */
const struct http_auth *s3_auth(const struct s3_config *c);

/* An s3:// URL: s3://BUCKET/KEY (an object), s3://BUCKET/PREFIX/ or
 * s3://BUCKET (a prefix: every archive under it). */
struct s3_location {
    char *bucket; /* owned */
    char *key;    /* owned: the key, or the prefix ("" or ending in '/') */
    bool prefix;
};

/* Is s an s3:// URL (case-insensitive scheme)? */
bool s3_is_url(const char *s);

/* Parse url. Returns 0 or -EINVAL (not s3://, empty or invalid bucket name,
 * a key with a NUL-free but empty component is fine). */
int s3_parse_url(const char *url, struct s3_location *out);
void s3_location_destroy(struct s3_location *l);

/* s URI-encoded as S3 canonicalizes it: A-Za-z0-9-_.~ raw (and '/' if
 * keep_slash), every other byte %XX with uppercase hex. *out is malloc'd.
 * Returns 0 or -ENOMEM. */
int s3_encode(const char *s, bool keep_slash, char **out);

/* The https?:// URL of an object, path- or virtual-hosted style as c says.
 * *url is malloc'd. Returns 0, -EINVAL (empty key), -ENOMEM. */
int s3_object_url(const struct s3_config *c, const char *bucket, const char *key, char **url);

struct s3_object {
    char *key; /* owned, decoded */
    uint64_t size;
    char etag[HTTP_ETAG_MAX];
    char last_modified[HTTP_DATE_MAX]; /* ISO 8601 as S3 lists it */
};

struct s3_listing {
    struct s3_object *objs; /* owned, count of them, in S3's (byte) order */
    size_t count;
    size_t cap;     /* private: objs allocated */
    unsigned pages; /* ListObjectsV2 requests it took */
};

/* Does key name an archive npyfs mounts (".npz" or ".npy.gz")? */
bool s3_archive_key(const char *key);

/* Every archive key (s3_archive_key()) under prefix in bucket, following
 * continuation tokens. max_keys: keys per page asked (0: the server's
 * default, 1000 on S3). Returns 0 or a negative errno with *e filled. */
int s3_list(struct http_client *h, const struct s3_config *c, const char *bucket,
            const char *prefix, unsigned max_keys, struct s3_listing *out, struct http_error *e);
void s3_listing_destroy(struct s3_listing *l);

/* Parse one ListObjectsV2 page (exposed for tests): appends the archive
 * keys to out, sets *truncated and *token (malloc'd, or NULL). Returns 0,
 * -EPROTO (malformed), -ENOMEM. */
int s3_parse_list_page(const char *xml, struct s3_listing *out, bool *truncated, char **token);

/* One line for a person, S3's error codes explained (NoSuchBucket,
 * NoSuchKey, AccessDenied, SignatureDoesNotMatch, InvalidAccessKeyId, a
 * bucket in another region, ...), else http_problem(). Returns buf. */
const char *s3_problem(const struct http_error *e, char *buf, size_t len);

#endif
