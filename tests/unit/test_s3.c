/*
 * Unit tests for fs/s3.c:
 *  - s3:// URLs, key encoding, object URLs (virtual-hosted and path style);
 *  - configuration precedence (environment, profiles, options) with temp
 *    HOME files, cross-checked against botocore (python3-botocore) where
 *    botocore 1.29 reads the same setting;
 *  - ListObjectsV2 pages parsed (entities, truncation, malformed replies);
 *  - s3rver (npm s3rver@3.7.1): listing with pagination, HEAD/GET of keys
 *    with spaces, '+', '%', '&' and non-ASCII characters, errors, and an
 *    object replaced under a reader (s3rver ignores If-Match: the ETag check
 *    catches it);
 *  - signatures: tests/servers/testserver.py --sigv4 recomputes each
 *    request's SigV4 with botocore (as S3 would: path and query decoded and
 *    canonically encoded again) and answers 403 SignatureDoesNotMatch when
 *    it differs, which stands for real S3's check (s3rver checks nothing).
 */
#define _GNU_SOURCE
#include "check.h"
#include "http.h"
#include "s3.h"
#include "testsrv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *dir;

static const char *const aws_vars[] = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_CA_BUNDLE",
    NULL,
};

static void clear_env(void)
{
    for (int i = 0; aws_vars[i]; i++)
        unsetenv(aws_vars[i]);
}

static void write_text(const char *path, const char *text)
{
    CHECK_EQ(ts_write_file(path, text, strlen(text)), 0);
}

/* ---- URLs and encoding ---- */

static void test_urls(void)
{
    struct s3_location l;
    char *s;

    CHECK_EQ(s3_parse_url("s3://bkt/dir/run.npz", &l), 0);
    CHECK(!strcmp(l.bucket, "bkt") && !strcmp(l.key, "dir/run.npz") && !l.prefix);
    s3_location_destroy(&l);
    CHECK_EQ(s3_parse_url("S3://my.bucket-1/pre/", &l), 0);
    CHECK(!strcmp(l.bucket, "my.bucket-1") && !strcmp(l.key, "pre/") && l.prefix);
    s3_location_destroy(&l);
    CHECK_EQ(s3_parse_url("s3://bkt", &l), 0);
    CHECK(!strcmp(l.key, "") && l.prefix);
    s3_location_destroy(&l);
    CHECK_EQ(s3_parse_url("s3://bkt/", &l), 0);
    CHECK(l.prefix);
    s3_location_destroy(&l);
    CHECK_EQ(s3_parse_url("s3:///key", &l), -EINVAL);
    CHECK_EQ(s3_parse_url("s3://b/key", &l), -EINVAL); /* too short a bucket */
    CHECK_EQ(s3_parse_url("s3://bad bucket/key", &l), -EINVAL);
    CHECK_EQ(s3_parse_url("http://bkt/key", &l), -EINVAL);
    CHECK(s3_is_url("s3://x") && !s3_is_url("s3:/x"));

    CHECK_EQ(s3_encode("a b+%c/\xc3\xa9~.-_Z9", true, &s), 0);
    CHECK(!strcmp(s, "a%20b%2B%25c/%C3%A9~.-_Z9"));
    free(s);
    CHECK_EQ(s3_encode("x/y=z&", false, &s), 0);
    CHECK(!strcmp(s, "x%2Fy%3Dz%26"));
    free(s);

    CHECK(s3_archive_key("a/b.npz") && s3_archive_key("c.npy.gz"));
    CHECK(!s3_archive_key(".npz") && s3_archive_key("dir/.npy.gz"));
    CHECK(!s3_archive_key("a.npy") && !s3_archive_key("a.gz") && !s3_archive_key("a.NPZ"));
}

static void test_object_urls(void)
{
    struct s3_config c;
    char msg[512], *u;

    clear_env();
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent", 1);
    setenv("AWS_CONFIG_FILE", "/nonexistent", 1);
    struct s3_opts anon = {.anonymous = true, .region = "eu-west-1"};
    CHECK_EQ(s3_config_load(&anon, &c, msg, sizeof(msg)), 0);
    CHECK_EQ(s3_object_url(&c, "bkt", "a b/c+d.npz", &u), 0);
    CHECK(!strcmp(u, "https://bkt.s3.eu-west-1.amazonaws.com/a%20b/c%2Bd.npz"));
    free(u);
    /* dots over https: the wildcard certificate does not cover them */
    CHECK_EQ(s3_object_url(&c, "my.bkt", "k", &u), 0);
    CHECK(!strcmp(u, "https://s3.eu-west-1.amazonaws.com/my.bkt/k"));
    free(u);
    CHECK_EQ(s3_object_url(&c, "bkt", "", &u), -EINVAL);
    CHECK(c.auth.sigv4 == NULL); /* anonymous: unsigned */
    CHECK(c.auth.raw_path && c.auth.no_redirect);
    CHECK(!strcmp(c.auth.headers[0], "x-amz-content-sha256: UNSIGNED-PAYLOAD"));
    s3_config_destroy(&c);

    struct s3_opts ps = {
        .anonymous = true, .endpoint = "http://minio.local:9000/", .path_style = true};
    CHECK_EQ(s3_config_load(&ps, &c, msg, sizeof(msg)), 0);
    CHECK_EQ(s3_object_url(&c, "bkt", "k.npz", &u), 0);
    CHECK(!strcmp(u, "http://minio.local:9000/bkt/k.npz"));
    free(u);
    s3_config_destroy(&c);
    struct s3_opts ip = {.anonymous = true, .endpoint = "http://127.0.0.1:9000"};
    CHECK_EQ(s3_config_load(&ip, &c, msg, sizeof(msg)), 0);
    CHECK_EQ(s3_object_url(&c, "bkt", "k.npz", &u), 0);
    CHECK(!strcmp(u, "http://127.0.0.1:9000/bkt/k.npz")); /* an IP takes no bucket label */
    free(u);
    s3_config_destroy(&c);
    struct s3_opts vh = {.anonymous = true, .endpoint = "https://storage.example.com"};
    CHECK_EQ(s3_config_load(&vh, &c, msg, sizeof(msg)), 0);
    CHECK_EQ(s3_object_url(&c, "bkt", "k.npz", &u), 0);
    CHECK(!strcmp(u, "https://bkt.storage.example.com/k.npz"));
    free(u);
    s3_config_destroy(&c);
    struct s3_opts bad = {.anonymous = true, .endpoint = "ftp://x"};
    CHECK_EQ(s3_config_load(&bad, &c, msg, sizeof(msg)), -EINVAL);
    CHECK(strstr(msg, "endpoint") != NULL);
    struct s3_opts badr = {.anonymous = true, .region = "eu west"};
    CHECK_EQ(s3_config_load(&badr, &c, msg, sizeof(msg)), -EINVAL);
}

/* ---- configuration ---- */

static char home[2048], credf[4096], conff[4096];

/* What botocore resolves in the current environment, as JSON. */
static void botocore_config(char *out, size_t len)
{
    char script[4096], cmd[8192];
    FILE *f;

    snprintf(script, sizeof(script), "%s/tests/servers/awshelper.py", ts_source_dir());
    snprintf(cmd, sizeof(cmd), "timeout 60 /usr/bin/python3 %s config", script);
    out[0] = '\0';
    f = popen(cmd, "r");
    if (!f)
        return;
    if (!fgets(out, (int)len, f))
        out[0] = '\0';
    pclose(f);
}

/* Does botocore resolve the same access key, secret, token and region? */
static void check_like_botocore(const struct s3_config *c)
{
    char j[4096], want[512];

    botocore_config(j, sizeof(j));
    snprintf(want, sizeof(want), "\"access_key\": \"%s\"", c->access_key);
    CHECK(strstr(j, want) != NULL);
    snprintf(want, sizeof(want), "\"secret_key\": \"%s\"", c->secret_key);
    CHECK(strstr(j, want) != NULL);
    if (c->session_token)
        snprintf(want, sizeof(want), "\"token\": \"%s\"", c->session_token);
    else
        snprintf(want, sizeof(want), "\"token\": null");
    CHECK(strstr(j, want) != NULL);
    /* botocore has no default region; S3 requests then go to us-east-1 */
    if (!strcmp(c->region, S3_DEFAULT_REGION) && strstr(j, "\"region\": null"))
        snprintf(want, sizeof(want), "\"region\": null");
    else
        snprintf(want, sizeof(want), "\"region\": \"%s\"", c->region);
    if (!strstr(j, want))
        fprintf(stderr, "botocore: %s\n", j);
    CHECK(strstr(j, want) != NULL);
}

static void test_config(void)
{
    struct s3_config c;
    char msg[512], *u;

    snprintf(home, sizeof(home), "%.2000s/home", dir);
    mkdir(home, 0755);
    snprintf(credf, sizeof(credf), "%s/.aws", home);
    mkdir(credf, 0755);
    snprintf(credf, sizeof(credf), "%s/.aws/credentials", home);
    snprintf(conff, sizeof(conff), "%s/.aws/config", home);
    write_text(credf, "[default]\n"
                      "aws_access_key_id = AKDEFAULT\n"
                      "aws_secret_access_key = SKdefault/secret+1\n"
                      "\n"
                      "[dev]\n"
                      "aws_access_key_id=AKDEV\n"
                      "aws_secret_access_key=SKdev\n"
                      "aws_session_token = TOKdev\n"
                      "[role]\n"
                      "; nothing here\n");
    write_text(conff, "[default]\n"
                      "region = eu-central-1\n"
                      "\n"
                      "# a comment\n"
                      "[profile   dev]\n"
                      "region = ap-south-1\n"
                      "endpoint_url = http://dev.example:9000\n"
                      "s3 =\n"
                      "  addressing_style = path\n"
                      "[profile svc]\n"
                      "aws_access_key_id = AKSVC\n"
                      "aws_secret_access_key = SKsvc\n"
                      "services = mine\n"
                      "endpoint_url = http://global.example\n"
                      "[services mine]\n"
                      "s3 =\n"
                      "  endpoint_url = http://s3only.example:1234\n"
                      "[profile role]\n"
                      "role_arn = arn:aws:iam::1:role/x\n"
                      "source_profile = default\n"
                      "[profile nested]\n"
                      "aws_access_key_id = AKNEST\n"
                      "aws_secret_access_key = SKnest\n"
                      "endpoint_url = http://global.example\n"
                      "s3 =\n"
                      "  endpoint_url = http://nested.example:9000\n"
                      "[profile sso]\n"
                      "sso_account_id = 111122223333\n"
                      "sso_role_name = reader\n"
                      "sso_region = us-east-1\n");
    clear_env();
    setenv("HOME", home, 1);

    /* The default profile: credentials file keys, config file region. */
    CHECK_EQ(s3_config_load(NULL, &c, msg, sizeof(msg)), 0);
    CHECK(!strcmp(c.access_key, "AKDEFAULT") && !strcmp(c.secret_key, "SKdefault/secret+1"));
    CHECK(c.session_token == NULL);
    CHECK(!strcmp(c.region, "eu-central-1"));
    CHECK(!strcmp(c.endpoint, "https://s3.eu-central-1.amazonaws.com"));
    CHECK(!strcmp(c.sigv4, "aws:amz:eu-central-1:s3"));
    CHECK(c.headers[1] == NULL);
    CHECK(c.ca_bundle == NULL);
    check_like_botocore(&c);
    s3_config_destroy(&c);
    setenv("AWS_CA_BUNDLE", "/etc/ssl/private-ca.pem", 1);
    CHECK_EQ(s3_config_load(NULL, &c, msg, sizeof(msg)), 0);
    CHECK(c.ca_bundle && !strcmp(c.ca_bundle, "/etc/ssl/private-ca.pem"));
    s3_config_destroy(&c);
    unsetenv("AWS_CA_BUNDLE");

    /* Environment keys win over the profile's; AWS_DEFAULT_REGION over the
     * profile's region. */
    setenv("AWS_ACCESS_KEY_ID", "AKENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "SKenv", 1);
    setenv("AWS_SESSION_TOKEN", "TOKenv", 1);
    setenv("AWS_DEFAULT_REGION", "us-west-2", 1);
    CHECK_EQ(s3_config_load(NULL, &c, msg, sizeof(msg)), 0);
    CHECK(!strcmp(c.access_key, "AKENV") && !strcmp(c.session_token, "TOKenv"));
    CHECK(!strcmp(c.region, "us-west-2"));
    CHECK(!strcmp(c.headers[1], "x-amz-security-token: TOKenv"));
    check_like_botocore(&c);
    s3_config_destroy(&c);
    /* ... even with AWS_PROFILE set (only an explicit --profile would not). */
    setenv("AWS_PROFILE", "dev", 1);
    CHECK_EQ(s3_config_load(NULL, &c, msg, sizeof(msg)), 0);
    CHECK(!strcmp(c.access_key, "AKENV"));
    check_like_botocore(&c);
    s3_config_destroy(&c);
    /* AWS_REGION before AWS_DEFAULT_REGION (AWS CLI v2 and the SDKs; botocore
     * 1.29 does not read AWS_REGION, so no cross-check). */
    setenv("AWS_REGION", "sa-east-1", 1);
    CHECK_EQ(s3_config_load(NULL, &c, msg, sizeof(msg)), 0);
    CHECK(!strcmp(c.region, "sa-east-1"));
    s3_config_destroy(&c);
    /* An option before all. */
    struct s3_opts ro = {.region = "eu-north-1"};
    CHECK_EQ(s3_config_load(&ro, &c, msg, sizeof(msg)), 0);
    CHECK(!strcmp(c.region, "eu-north-1") && !strcmp(c.sigv4, "aws:amz:eu-north-1:s3"));
    s3_config_destroy(&c);
    unsetenv("AWS_REGION");
    unsetenv("AWS_DEFAULT_REGION");
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_SESSION_TOKEN");

    /* A named profile: its keys and token, its region, endpoint and path
     * style from the config file's [profile dev]. */
    CHECK_EQ(s3_config_load(NULL, &c, msg, sizeof(msg)), 0);
    CHECK(!strcmp(c.access_key, "AKDEV") && !strcmp(c.session_token, "TOKdev"));
    CHECK(!strcmp(c.region, "ap-south-1"));
    CHECK(!strcmp(c.endpoint, "http://dev.example:9000"));
    CHECK(c.path_style);
    CHECK_EQ(s3_object_url(&c, "bkt", "k.npz", &u), 0);
    CHECK(!strcmp(u, "http://dev.example:9000/bkt/k.npz"));
    free(u);
    check_like_botocore(&c);
    s3_config_destroy(&c);
    /* Endpoint precedence: option, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL,
     * the profile. */
    setenv("AWS_ENDPOINT_URL", "http://all.example", 1);
    CHECK_EQ(s3_config_load(NULL, &c, msg, sizeof(msg)), 0);
    CHECK(!strcmp(c.endpoint, "http://all.example"));
    s3_config_destroy(&c);
    setenv("AWS_ENDPOINT_URL_S3", "http://s3.example", 1);
    CHECK_EQ(s3_config_load(NULL, &c, msg, sizeof(msg)), 0);
    CHECK(!strcmp(c.endpoint, "http://s3.example"));
    s3_config_destroy(&c);
    struct s3_opts eo = {.endpoint = "https://opt.example/"};
    CHECK_EQ(s3_config_load(&eo, &c, msg, sizeof(msg)), 0);
    CHECK(!strcmp(c.endpoint, "https://opt.example"));
    s3_config_destroy(&c);
    setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true", 1);
    CHECK_EQ(s3_config_load(NULL, &c, msg, sizeof(msg)), 0);
    CHECK(!strcmp(c.endpoint, "https://s3.ap-south-1.amazonaws.com"));
    s3_config_destroy(&c);
    unsetenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
    unsetenv("AWS_ENDPOINT_URL");
    unsetenv("AWS_ENDPOINT_URL_S3");
    /* A services section's s3 endpoint before the profile's global one. */
    setenv("AWS_PROFILE", "svc", 1);
    CHECK_EQ(s3_config_load(NULL, &c, msg, sizeof(msg)), 0);
    CHECK(!strcmp(c.access_key, "AKSVC")); /* keys from the config file */
    CHECK(!strcmp(c.endpoint, "http://s3only.example:1234"));
    check_like_botocore(&c);
    s3_config_destroy(&c);

    /* The profile's own s3 section's endpoint before its global one (the
     * README's "s3 = endpoint_url ="; botocore 1.29 reads neither). */
    setenv("AWS_PROFILE", "nested", 1);
    CHECK_EQ(s3_config_load(NULL, &c, msg, sizeof(msg)), 0);
    CHECK(!strcmp(c.endpoint, "http://nested.example:9000"));
    s3_config_destroy(&c);

    /* Errors, each saying what to do, none showing a secret. */
    setenv("AWS_PROFILE", "nosuch", 1);
    CHECK_EQ(s3_config_load(NULL, &c, msg, sizeof(msg)), -ENOENT);
    CHECK(strstr(msg, "'nosuch'") != NULL);
    setenv("AWS_PROFILE", "role", 1);
    CHECK_EQ(s3_config_load(NULL, &c, msg, sizeof(msg)), -EINVAL);
    CHECK(strstr(msg, "role_arn") && strstr(msg, "export"));
    setenv("AWS_PROFILE", "sso", 1); /* any sso_* setting, not only sso_start_url */
    CHECK_EQ(s3_config_load(NULL, &c, msg, sizeof(msg)), -EINVAL);
    CHECK(strstr(msg, "sso_") && strstr(msg, "export"));
    struct s3_opts an = {.anonymous = true};
    CHECK_EQ(s3_config_load(&an, &c, msg, sizeof(msg)), 0); /* anonymous needs none */
    CHECK(c.access_key == NULL && c.auth.sigv4 == NULL);
    s3_config_destroy(&c);
    unsetenv("AWS_PROFILE");
    setenv("AWS_SECRET_ACCESS_KEY", "SKonly-secret", 1);
    CHECK_EQ(s3_config_load(NULL, &c, msg, sizeof(msg)), -EINVAL);
    CHECK(strstr(msg, "AWS_ACCESS_KEY_ID") && !strstr(msg, "SKonly-secret"));
    unsetenv("AWS_SECRET_ACCESS_KEY");
    /* Other files named by the environment. */
    char other[4096];
    snprintf(other, sizeof(other), "%s/other-creds", dir);
    write_text(other, "[default]\naws_access_key_id = AKOTHER\naws_secret_access_key = SKother\n");
    setenv("AWS_SHARED_CREDENTIALS_FILE", other, 1);
    setenv("AWS_CONFIG_FILE", "/nonexistent/config", 1);
    CHECK_EQ(s3_config_load(NULL, &c, msg, sizeof(msg)), 0);
    CHECK(!strcmp(c.access_key, "AKOTHER") && !strcmp(c.region, "us-east-1"));
    s3_config_destroy(&c);
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/creds", 1);
    CHECK_EQ(s3_config_load(NULL, &c, msg, sizeof(msg)), -EINVAL);
    CHECK(strstr(msg, "s3_anonymous") != NULL);
    clear_env();
}

/* ---- listing pages ---- */

static void test_list_parse(void)
{
    struct s3_listing l = {0};
    bool more;
    char *tok;
    const char *page1 =
        "<?xml version=\"1.0\"?><ListBucketResult><Name>b</Name><KeyCount>3</KeyCount>"
        "<IsTruncated>true</IsTruncated><NextContinuationToken>t&amp;1+/=</NextContinuationToken>"
        "<Contents><Key>a&amp;b&lt;c&gt;&quot;&apos;&#233;&#x4E2D;.npz</Key>"
        "<LastModified>2024-01-01T00:00:00.000Z</LastModified>"
        "<ETag>&quot;abc&quot;</ETag><Size>123</Size></Contents>"
        "<Contents><Key>skip.txt</Key><Size>1</Size></Contents>"
        "<Contents><Key>x.npy.gz</Key><Size>18446744073709551615</Size></Contents>"
        "</ListBucketResult>";

    CHECK_EQ(s3_parse_list_page(page1, &l, &more, &tok), 0);
    CHECK(more && tok && !strcmp(tok, "t&1+/="));
    free(tok);
    CHECK_EQ(l.count, 2);
    CHECK(!strcmp(l.objs[0].key, "a&b<c>\"'\xc3\xa9\xe4\xb8\xad.npz"));
    CHECK_EQ(l.objs[0].size, 123);
    CHECK(!strcmp(l.objs[0].etag, "\"abc\""));
    CHECK(!strcmp(l.objs[0].last_modified, "2024-01-01T00:00:00.000Z"));
    CHECK(l.objs[1].size == UINT64_MAX && !strcmp(l.objs[1].key, "x.npy.gz"));
    s3_listing_destroy(&l);

    static const char *const bad[] = {
        "<Error><Code>AccessDenied</Code></Error>",
        "<ListBucketResult><Contents><Key>a.npz</Key><Size>1</Size>",
        "<ListBucketResult><Contents><Key>a.npz</Key><Size>-1</Size></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a.npz</Key><Size>99999999999999999999</Size></Contents>"
        "</ListBucketResult>",
        "<ListBucketResult><Contents><Key>a&bogus;.npz</Key><Size>1</Size></Contents>"
        "</ListBucketResult>",
        "<ListBucketResult><Contents><Key>a&#0;.npz</Key><Size>1</Size></Contents>"
        "</ListBucketResult>",
        "<ListBucketResult><Contents><Key>a&#xD800;.npz</Key><Size>1</Size></Contents>"
        "</ListBucketResult>",
        "<ListBucketResult><Contents><Key>a.npz</Key></Contents></ListBucketResult>",
        "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a.npz<Size>1</Size></Contents></ListBucketResult>",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&l, 0, sizeof(l));
        int err = s3_parse_list_page(bad[i], &l, &more, &tok);
        if (err != -EPROTO)
            fprintf(stderr, "bad page %zu: %d\n", i, err);
        CHECK_EQ(err, -EPROTO);
        s3_listing_destroy(&l);
        free(tok);
    }
}

/* ---- s3rver ---- */

static struct ts_proc s3rver;
static int s3_port;

static const char *const odd_keys[] = {
    "odd/a b.npz",       "odd/plus+sign.npz",
    "odd/100%.npz",      "odd/\xc3\xbcn\xc3\xaf\xc2\xa9\xc3\xb8.npz",
    "odd/x~y_z-.npy.gz", "odd/and&lt<gt>.npz",
    "odd/sub/deep.npz",  NULL,
};

static int upload(const char *bucket, const char *const *keys, const char *const *files)
{
    char script[4096], ep[64];
    const char *argv[80];
    int n = 0;

    snprintf(script, sizeof(script), "%s/tests/servers/awshelper.py", ts_source_dir());
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", s3_port);
    argv[n++] = "/usr/bin/python3";
    argv[n++] = script;
    argv[n++] = "put";
    argv[n++] = ep;
    argv[n++] = bucket;
    for (int i = 0; keys[i] && n < 76; i++) {
        argv[n++] = keys[i];
        argv[n++] = files[i];
    }
    argv[n] = NULL;
    return ts_run(argv, 60);
}

static void s3rver_config(struct s3_config *c)
{
    char ep[64], msg[512];
    clear_env();
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent", 1);
    setenv("AWS_CONFIG_FILE", "/nonexistent", 1);
    setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", s3_port);
    struct s3_opts o = {.endpoint = ep, .path_style = true};
    CHECK_EQ(s3_config_load(&o, c, msg, sizeof(msg)), 0);
}

static void test_s3rver(void)
{
    struct http_opts ho = {.connections = 4, .timeout_ms = 10000, .retries = 2, .retry_base_ms = 5};
    struct http_client *h = NULL;
    struct s3_config c;
    struct s3_listing l;
    struct http_error e;
    struct http_probe p;
    char path[4096], msg[512], *url;
    const char *keys[40], *files[40];
    char names[40][32];
    unsigned char data[3][70000];
    int n = 0;

    /* 25 archives and 2 other objects under page/, and the odd keys. */
    for (int i = 0; i < 3; i++) {
        ts_fill(data[i], sizeof(data[i]), 100 + (unsigned)i);
        snprintf(path, sizeof(path), "%s/data%d", dir, i);
        ts_write_file(path, data[i], sizeof(data[i]) - (size_t)i * 1000);
    }
    char f0[4096], f1[4096], f2[4096];
    snprintf(f0, sizeof(f0), "%s/data0", dir);
    snprintf(f1, sizeof(f1), "%s/data1", dir);
    snprintf(f2, sizeof(f2), "%s/data2", dir);
    for (int i = 0; i < 25; i++) {
        snprintf(names[i], sizeof(names[i]), "page/k%02d.%s", i, i % 5 ? "npz" : "npy.gz");
        keys[n] = names[i];
        files[n++] = f2;
    }
    keys[n] = "page/readme.txt";
    files[n++] = f2;
    keys[n] = "page/k99.npy";
    files[n++] = f2;
    keys[n] = "other/z.npz";
    files[n++] = f2;
    for (int i = 0; odd_keys[i]; i++) {
        keys[n] = odd_keys[i];
        files[n++] = i % 2 ? f1 : f0;
    }
    keys[n] = NULL;
    if (upload("bkt", keys, files) < 0) {
        CHECK(!"botocore uploaded the test objects to s3rver");
        return;
    }
    s3rver_config(&c);
    CHECK_EQ(http_client_new(&ho, &h, NULL), 0);

    /* Listing: 28 keys under page/ at 4 a page is 7 pages; archives only. */
    CHECK_EQ(s3_list(h, &c, "bkt", "page/", 4, &l, &e), 0);
    CHECK_EQ(l.pages, 7);
    CHECK_EQ(l.count, 25);
    for (size_t i = 0; i < l.count && i < 25; i++) {
        CHECK(!strcmp(l.objs[i].key, names[i]));
        CHECK_EQ(l.objs[i].size, sizeof(data[2]) - 2000);
        CHECK(l.objs[i].etag[0] == '"');
    }
    s3_listing_destroy(&l);
    /* The whole bucket in one page; the odd keys come back decoded. */
    CHECK_EQ(s3_list(h, &c, "bkt", "", 0, &l, &e), 0);
    CHECK_EQ(l.pages, 1);
    CHECK_EQ(l.count, 25 + 1 + 7);
    s3_listing_destroy(&l);
    CHECK_EQ(s3_list(h, &c, "bkt", "odd/", 2, &l, &e), 0);
    CHECK_EQ(l.count, 7);
    int found = 0;
    for (size_t i = 0; i < l.count; i++)
        for (int k = 0; odd_keys[k]; k++)
            found += !strcmp(l.objs[i].key, odd_keys[k]);
    CHECK_EQ(found, 7);
    s3_listing_destroy(&l);

    /* GET of each odd key: s3rver answers the suffix range wrongly, so the
     * probe falls back to a ranged GET (its reply's total saves the HEAD). */
    for (int i = 0; odd_keys[i]; i++) {
        const unsigned char *want = data[i % 2];
        size_t size = sizeof(data[0]) - (size_t)(i % 2) * 1000;
        CHECK_EQ(s3_object_url(&c, "bkt", odd_keys[i], &url), 0);
        int err = http_probe(h, url, s3_auth(&c), 1000, 65536, &p, &e);
        if (err)
            fprintf(stderr, "%s: %s\n", odd_keys[i], s3_problem(&e, msg, sizeof(msg)));
        CHECK_EQ(err, 0);
        CHECK_EQ(p.id.size, size);
        CHECK_EQ(p.requests, 3);
        CHECK(p.tail_len == 65536 && !memcmp(p.tail, want + size - 65536, 65536));
        CHECK(p.head_len == 1000 && !memcmp(p.head, want, 1000));
        /* HEAD too */
        struct http_req r = {.kind = HTTP_HEAD, .url = url, .auth = s3_auth(&c)};
        CHECK_EQ(http_run(h, &r), 0);
        CHECK_EQ(r.got.size, size);
        CHECK(!strcmp(r.got.etag, p.id.etag));
        http_probe_destroy(&p);
        free(url);
    }

    /* Errors. */
    CHECK_EQ(s3_object_url(&c, "bkt", "odd/missing.npz", &url), 0);
    CHECK_EQ(http_probe(h, url, s3_auth(&c), 0, 65536, &p, &e), -ENOENT);
    CHECK(!strcmp(e.code, "NoSuchKey"));
    CHECK(strstr(s3_problem(&e, msg, sizeof(msg)), "no such key") != NULL);
    free(url);
    CHECK_EQ(s3_object_url(&c, "nobucket", "k.npz", &url), 0);
    CHECK_EQ(http_probe(h, url, s3_auth(&c), 0, 65536, &p, &e), -ENOENT);
    CHECK(strstr(s3_problem(&e, msg, sizeof(msg)), "NoSuchBucket") != NULL);
    free(url);
    CHECK_EQ(s3_list(h, &c, "nobucket", "", 0, &l, &e), -ENOENT);
    CHECK(!strcmp(e.code, "NoSuchBucket"));

    /* Replaced under a reader: s3rver ignores If-Match, the ETag differs. */
    CHECK_EQ(s3_object_url(&c, "bkt", "odd/a b.npz", &url), 0);
    CHECK_EQ(http_probe(h, url, s3_auth(&c), 0, 4096, &p, &e), 0);
    const char *k1[] = {"odd/a b.npz", NULL}, *fl1[] = {f2, NULL};
    CHECK_EQ(upload("bkt", k1, fl1), 0); /* another size and ETag */
    unsigned char buf[100];
    struct iovec v = {.iov_base = buf, .iov_len = sizeof(buf)};
    struct http_req r = {.kind = HTTP_RANGE,
                         .url = url,
                         .auth = s3_auth(&c),
                         .off = 10,
                         .iov = &v,
                         .iovcnt = 1,
                         .expect = &p.id};
    CHECK_EQ(http_run(h, &r), -ESTALE);
    CHECK_EQ(r.got_len, 0);
    http_probe_destroy(&p);
    free(url);

    s3_config_destroy(&c);
    http_client_free(h);
    clear_env();
}

/* ---- signatures, checked with botocore ---- */

#define SIG_AK "AKIDEXAMPLE"
#define SIG_SK "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SIG_REGION "eu-west-2"
#define SIG_TOKEN "FwoGZXIvYXdzEBYaDSeSsIoN+ToKeN/with=chars"

static int sig_config(struct s3_config *c, int port, const char *secret, const char *token)
{
    char ep[64], msg[512];

    clear_env();
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent", 1);
    setenv("AWS_CONFIG_FILE", "/nonexistent", 1);
    setenv("AWS_ACCESS_KEY_ID", SIG_AK, 1);
    setenv("AWS_SECRET_ACCESS_KEY", secret, 1);
    if (token)
        setenv("AWS_SESSION_TOKEN", token, 1);
    setenv("AWS_REGION", SIG_REGION, 1);
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", port);
    setenv("AWS_ENDPOINT_URL_S3", ep, 1);
    return s3_config_load(NULL, c, msg, sizeof(msg));
}

/* The Authorization sent and the one botocore computed, from "last". */
static void check_last_signed(struct ts_proc *p, bool token)
{
    char last[16384];
    const char *a, *x;

    CHECK_EQ(ts_py_cmd(p, "last", last, sizeof(last)), 0);
    a = strstr(last, "\"authorization\": \"");
    x = strstr(last, "\"expected\": \"");
    CHECK(a && x);
    if (!a || !x)
        return;
    a += 18;
    x += 13;
    size_t na = strcspn(a, "\""), nx = strcspn(x, "\"");
    CHECK(na == nx && !strncmp(a, x, na));
    if (!strstr(last, "SignedHeaders=host;"))
        fprintf(stderr, "%s\n", last);
    CHECK(strstr(last, "SignedHeaders=host;") != NULL);
    CHECK(strstr(last, "x-amz-content-sha256") != NULL);
    CHECK(!token || strstr(last, ";x-amz-security-token") != NULL);
    CHECK(strstr(last, "Credential=" SIG_AK "/") != NULL);
    CHECK(strstr(last, "/" SIG_REGION "/s3/aws4_request") != NULL);
}

static void test_signatures(void)
{
    struct http_opts ho = {.connections = 2, .timeout_ms = 10000, .retries = 1, .retry_base_ms = 5};
    struct http_client *h = NULL;
    struct ts_proc sp = {0}, tp = {0};
    struct s3_config c;
    struct s3_listing l;
    struct http_error e;
    struct http_probe p;
    char root[4096], path[4096], msg[512], *url;
    unsigned char data[5000];
    int port, tport;
    const char *sig[] = {"--sigv4", SIG_AK ":" SIG_SK ":" SIG_REGION, NULL};
    const char *tsig[] = {"--sigv4", SIG_AK ":" SIG_SK ":" SIG_REGION, "--token", SIG_TOKEN, NULL};

    snprintf(root, sizeof(root), "%s/sig", dir);
    mkdir(root, 0755);
    snprintf(path, sizeof(path), "%s/sig/bkt", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/sig/bkt/odd", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/sig/bkt/odd/sub", dir);
    mkdir(path, 0755);
    ts_fill(data, sizeof(data), 7);
    for (int i = 0; odd_keys[i]; i++) {
        snprintf(path, sizeof(path), "%s/sig/bkt/%s", dir, odd_keys[i]);
        CHECK_EQ(ts_write_file(path, data, sizeof(data)), 0);
    }
    if (ts_py_start(root, 0, sig, &sp, &port) < 0 || ts_py_start(root, 0, tsig, &tp, &tport) < 0) {
        CHECK(!"signature-checking test servers started");
        goto out;
    }
    CHECK_EQ(http_client_new(&ho, &h, NULL), 0);

    /* Every odd key: the server's botocore signature must match ours, on
     * the suffix probe and on a ranged GET with If-Match. */
    CHECK_EQ(sig_config(&c, port, SIG_SK, NULL), 0);
    for (int i = 0; odd_keys[i]; i++) {
        CHECK_EQ(s3_object_url(&c, "bkt", odd_keys[i], &url), 0);
        int err = http_probe(h, url, s3_auth(&c), 0, 1000, &p, &e);
        if (err)
            fprintf(stderr, "%s: %s\n", odd_keys[i], s3_problem(&e, msg, sizeof(msg)));
        CHECK_EQ(err, 0);
        CHECK(p.tail_len == 1000 && !memcmp(p.tail, data + sizeof(data) - 1000, 1000));
        check_last_signed(&sp, false);
        unsigned char buf[200];
        struct iovec v = {.iov_base = buf, .iov_len = sizeof(buf)};
        struct http_req r = {.kind = HTTP_RANGE,
                             .url = url,
                             .auth = s3_auth(&c),
                             .off = 3,
                             .iov = &v,
                             .iovcnt = 1,
                             .expect = &p.id};
        CHECK_EQ(http_run(h, &r), 0);
        CHECK(!memcmp(buf, data + 3, sizeof(buf)));
        check_last_signed(&sp, false);
        http_probe_destroy(&p);
        free(url);
    }
    /* A listing: its query (prefix with '/', tokens with '+', '/', '=' and
     * a space) is signed exactly as sent. */
    CHECK_EQ(s3_list(h, &c, "bkt", "odd/", 2, &l, &e), 0);
    CHECK_EQ(l.pages, 4);
    CHECK_EQ(l.count, 7);
    check_last_signed(&sp, false);
    s3_listing_destroy(&l);
    s3_config_destroy(&c);

    /* A wrong secret: 403 SignatureDoesNotMatch, said plainly, no secret. */
    CHECK_EQ(sig_config(&c, port, "wrong-secret-KEY", NULL), 0);
    CHECK_EQ(s3_object_url(&c, "bkt", odd_keys[0], &url), 0);
    CHECK_EQ(http_probe(h, url, s3_auth(&c), 0, 1000, &p, &e), -EACCES);
    CHECK(!strcmp(e.code, "SignatureDoesNotMatch"));
    s3_problem(&e, msg, sizeof(msg));
    CHECK(strstr(msg, "secret access key does not match") != NULL);
    CHECK(!strstr(msg, "wrong-secret") && !strstr(msg, SIG_AK));
    CHECK(!memmem(&e, sizeof(e), "wrong-secret", 12)); /* nowhere in the error */
    free(url);
    s3_config_destroy(&c);

    /* A session token: sent, signed, and required by this server. */
    CHECK_EQ(sig_config(&c, tport, SIG_SK, SIG_TOKEN), 0);
    CHECK_EQ(s3_object_url(&c, "bkt", odd_keys[3], &url), 0);
    CHECK_EQ(http_probe(h, url, s3_auth(&c), 0, 1000, &p, &e), 0);
    check_last_signed(&tp, true);
    http_probe_destroy(&p);
    free(url);
    CHECK_EQ(s3_list(h, &c, "bkt", "odd/", 3, &l, &e), 0);
    CHECK_EQ(l.count, 7);
    check_last_signed(&tp, true);
    s3_listing_destroy(&l);
    s3_config_destroy(&c);
    CHECK_EQ(sig_config(&c, tport, SIG_SK, NULL), 0);
    CHECK_EQ(s3_object_url(&c, "bkt", odd_keys[3], &url), 0);
    CHECK_EQ(http_probe(h, url, s3_auth(&c), 0, 1000, &p, &e), -EACCES);
    CHECK(strstr(s3_problem(&e, msg, sizeof(msg)), "session token") != NULL);
    CHECK(!memmem(&e, sizeof(e), SIG_SK, strlen(SIG_SK)));
    free(url);
    s3_config_destroy(&c);

    /* A raw '+' in the path (not encoded as S3 wants) is refused, like S3. */
    CHECK_EQ(sig_config(&c, port, SIG_SK, NULL), 0);
    char raw[256];
    snprintf(raw, sizeof(raw), "http://127.0.0.1:%d/bkt/odd/plus+sign.npz", port);
    CHECK_EQ(http_probe(h, raw, s3_auth(&c), 0, 100, &p, &e), -EACCES);
    s3_config_destroy(&c);
out:
    http_client_free(h);
    ts_stop(&sp);
    ts_stop(&tp);
    clear_env();
}

int main(void)
{
    alarm(240);
    dir = ts_tmpdir();
    if (!dir)
        return 1;
    test_urls();
    test_object_urls();
    test_config();
    test_list_parse();
    if (ts_s3rver_start(dir, (const char *const[]){"bkt", NULL}, &s3rver, &s3_port) < 0)
        CHECK(!"s3rver started");
    else
        test_s3rver();
    test_signatures();
    ts_stop(&s3rver);
    ts_rmtree(dir);
    free(dir);
    return check_exit("test_s3");
}
