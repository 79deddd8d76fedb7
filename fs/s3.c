/*
 * S3: configuration, URLs, signing setup and ListObjectsV2. Contract in s3.h.
 *
 * The AWS files are INI as botocore reads them (Python's configparser):
 * "[section]", "key = value" (or "key: value"), keys case-insensitive,
 * whole-line comments only, and a key with an empty value followed by
 * indented "sub = value" lines is a nested block, kept here as "key.sub".
 * Both files are read once into a flat table of (section, key, value).
 *
 * ListObjectsV2 replies are parsed by searching for literal element tags:
 * S3 writes no attributes or CDATA inside them, and a '<' in text is always
 * escaped, so "<Key>" can only be an element. Text is entity-decoded
 * (the five named entities and numeric references, as UTF-8).
 */
#define _GNU_SOURCE
#include "s3.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Largest AWS config or credentials file read. */
#define INI_MAX (1u << 20)

struct ini_entry {
    char *section, *key, *value; /* owned; value may be secret */
};

struct ini {
    struct ini_entry *e; /* owned */
    size_t n, cap;
    bool exists;
};

static char *trim(char *s)
{
    char *end;

    while (*s == ' ' || *s == '\t')
        s++;
    end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
        *--end = '\0';
    return s;
}

static void ini_free(struct ini *ini)
{
    for (size_t i = 0; i < ini->n; i++) {
        free(ini->e[i].section);
        free(ini->e[i].key);
        explicit_bzero(ini->e[i].value, strlen(ini->e[i].value));
        free(ini->e[i].value);
    }
    free(ini->e);
    memset(ini, 0, sizeof(*ini));
}

static int ini_add(struct ini *ini, const char *section, const char *parent, const char *key,
                   const char *value)
{
    struct ini_entry *e;

    if (ini->n == ini->cap) {
        size_t cap = ini->cap ? ini->cap * 2 : 16;
        struct ini_entry *g = realloc(ini->e, cap * sizeof(*g));
        if (!g)
            return -ENOMEM;
        ini->e = g;
        ini->cap = cap;
    }
    e = &ini->e[ini->n];
    e->section = strdup(section);
    e->key = NULL;
    if (!parent)
        e->key = strdup(key);
    else if (asprintf(&e->key, "%s.%s", parent, key) < 0)
        e->key = NULL;
    e->value = strdup(value);
    if (!e->section || !e->key || !e->value) {
        free(e->section);
        free(e->key);
        free(e->value);
        return -ENOMEM;
    }
    for (char *p = e->key; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    ini->n++;
    return 0;
}

/* "profile   x" -> "profile x"; surrounding blanks removed. */
static void normalize_section(char *s)
{
    char *r = s, *w = s;
    bool space = false;

    while (*r == ' ' || *r == '\t')
        r++;
    for (; *r; r++) {
        if (*r == ' ' || *r == '\t') {
            space = true;
            continue;
        }
        if (space && w != s)
            *w++ = ' ';
        space = false;
        *w++ = *r;
    }
    *w = '\0';
}

static int ini_parse(struct ini *ini, char *text)
{
    char section[256] = "";
    char parent[128] = "";
    bool in_section = false;
    char *line, *next;
    int err = 0;

    for (line = text; line && !err; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        bool indented = *line == ' ' || *line == '\t';
        char *t = trim(line);
        if (*t == '\0' || *t == '#' || *t == ';')
            continue;
        if (*t == '[') {
            char *end = strrchr(t, ']');
            if (!end)
                continue; /* botocore would refuse the file; skip the line */
            *end = '\0';
            snprintf(section, sizeof(section), "%s", t + 1);
            normalize_section(section);
            in_section = true;
            parent[0] = '\0';
            continue;
        }
        if (!in_section)
            continue;
        char *sep = t + strcspn(t, "=:");
        if (*sep == '\0')
            continue;
        *sep = '\0';
        char *key = trim(t), *value = trim(sep + 1);
        if (indented && parent[0]) {
            err = ini_add(ini, section, parent, key, value);
            continue;
        }
        if (*value == '\0') {
            snprintf(parent, sizeof(parent), "%s", key);
            continue;
        }
        parent[0] = '\0';
        err = ini_add(ini, section, NULL, key, value);
    }
    return err;
}

/* Read path into ini; a missing file is an empty ini. */
static int ini_load(const char *path, struct ini *ini)
{
    struct stat st;
    char *text;
    size_t len = 0;
    int fd, err;

    memset(ini, 0, sizeof(*ini));
    if (!path)
        return 0;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > INI_MAX) {
        close(fd);
        return -EINVAL;
    }
    text = malloc((size_t)st.st_size + 1);
    if (!text) {
        close(fd);
        return -ENOMEM;
    }
    while (len < (size_t)st.st_size) {
        ssize_t k = read(fd, text + len, (size_t)st.st_size - len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        len += (size_t)k;
    }
    close(fd);
    text[len] = '\0';
    ini->exists = true;
    err = ini_parse(ini, text);
    explicit_bzero(text, len);
    free(text);
    if (err)
        ini_free(ini);
    return err;
}

static const char *ini_get(const struct ini *ini, const char *section, const char *key)
{
    const char *v = NULL;

    for (size_t i = 0; i < ini->n; i++) /* the last one wins */
        if (!strcmp(ini->e[i].section, section) && !strcmp(ini->e[i].key, key))
            v = ini->e[i].value;
    return v;
}

/* The first key of section that starts with prefix, or NULL. */
static const char *ini_key_with_prefix(const struct ini *ini, const char *section,
                                       const char *prefix)
{
    for (size_t i = 0; i < ini->n; i++)
        if (!strcmp(ini->e[i].section, section) &&
            !strncmp(ini->e[i].key, prefix, strlen(prefix)))
            return ini->e[i].key;
    return NULL;
}

static bool ini_has_section(const struct ini *ini, const char *section)
{
    for (size_t i = 0; i < ini->n; i++)
        if (!strcmp(ini->e[i].section, section))
            return true;
    return false;
}

/* ---- configuration ---- */

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* The config file's section for profile: [default] or [profile NAME]. */
static const char *config_get(const struct ini *cfg, const char *profile, const char *key)
{
    char sec[300];
    const char *v;

    snprintf(sec, sizeof(sec), "profile %s", profile);
    v = ini_get(cfg, sec, key);
    if (!v && !strcmp(profile, "default"))
        v = ini_get(cfg, "default", key);
    return v;
}

/* A key of profile's config section that starts with prefix, or NULL. */
static const char *config_key_with_prefix(const struct ini *cfg, const char *profile,
                                          const char *prefix)
{
    char sec[300];
    const char *k;

    snprintf(sec, sizeof(sec), "profile %s", profile);
    k = ini_key_with_prefix(cfg, sec, prefix);
    if (!k && !strcmp(profile, "default"))
        k = ini_key_with_prefix(cfg, "default", prefix);
    return k;
}

static bool config_has(const struct ini *cfg, const char *profile)
{
    char sec[300];

    snprintf(sec, sizeof(sec), "profile %s", profile);
    return ini_has_section(cfg, sec) ||
           (!strcmp(profile, "default") && ini_has_section(cfg, "default"));
}

static int file_path(const char *var, const char *rel, char **out)
{
    const char *v = env(var), *home;

    *out = NULL;
    if (v) {
        if (v[0] == '~' && v[1] == '/' && (home = env("HOME")))
            return asprintf(out, "%s%s", home, v + 1) < 0 ? -ENOMEM : 0;
        *out = strdup(v);
        return *out ? 0 : -ENOMEM;
    }
    home = env("HOME");
    if (!home)
        return 0; /* no file */
    return asprintf(out, "%s/%s", home, rel) < 0 ? -ENOMEM : 0;
}

static int dup_secret(char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return src && !*dst ? -ENOMEM : 0;
}

struct files {
    struct ini creds, cfg;
    char *creds_path, *cfg_path;
    const char *profile;
    bool explicit_profile;
};

static int load_credentials(struct s3_config *c, const struct files *f, char *msg, size_t len)
{
    const char *ak = env("AWS_ACCESS_KEY_ID"), *sk = env("AWS_SECRET_ACCESS_KEY");
    const char *tok;
    /* Keys (or key prefixes: every sso_* setting) of profiles whose
     * credentials another program provides. */
    static const char *const unsupported[] = {
        "role_arn", "credential_process", "web_identity_token_file", "sso_", NULL,
    };
    int err;

    if (ak && sk) {
        tok = env("AWS_SESSION_TOKEN");
        if (!tok)
            tok = env("AWS_SECURITY_TOKEN");
        snprintf(c->creds_from, sizeof(c->creds_from), "the environment");
    } else if (ak || sk) {
        snprintf(msg, len, "%s is set but %s is not",
                 ak ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                 ak ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
        return -EINVAL;
    } else {
        ak = ini_get(&f->creds, f->profile, "aws_access_key_id");
        sk = ini_get(&f->creds, f->profile, "aws_secret_access_key");
        tok = ini_get(&f->creds, f->profile, "aws_session_token");
        if (ak && sk) {
            snprintf(c->creds_from, sizeof(c->creds_from), "profile '%.40s' in %.100s", f->profile,
                     f->creds_path);
        } else {
            ak = config_get(&f->cfg, f->profile, "aws_access_key_id");
            sk = config_get(&f->cfg, f->profile, "aws_secret_access_key");
            tok = config_get(&f->cfg, f->profile, "aws_session_token");
            snprintf(c->creds_from, sizeof(c->creds_from), "profile '%.40s' in %.100s", f->profile,
                     f->cfg_path);
        }
        if (!ak || !sk) {
            for (int i = 0; unsupported[i]; i++) {
                const char *k = config_key_with_prefix(&f->cfg, f->profile, unsupported[i]);
                if (!k)
                    k = ini_key_with_prefix(&f->creds, f->profile, unsupported[i]);
                if (k) {
                    snprintf(msg, len,
                             "profile '%s' gets its credentials through %s, which npyfs does "
                             "not run; export them instead (for example: eval \"$(aws configure "
                             "export-credentials --format env)\")",
                             f->profile, k);
                    return -EINVAL;
                }
            }
            snprintf(msg, len,
                     "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                     "or put them in profile '%s' of %s; for a public bucket use "
                     "-o s3_anonymous",
                     f->profile, env("AWS_SHARED_CREDENTIALS_FILE") && f->creds_path
                                     ? f->creds_path : "~/.aws/credentials");
            return -EINVAL;
        }
    }
    err = dup_secret(&c->access_key, ak);
    if (!err)
        err = dup_secret(&c->secret_key, sk);
    if (!err)
        err = dup_secret(&c->session_token, tok);
    return err;
}

static int check_endpoint(char *ep, char *msg, size_t len)
{
    size_t n;

    if (!http_is_url(ep) || strchr(ep, '?') || strchr(ep, '#') || strchr(ep, '@')) {
        char red[200];
        snprintf(msg, len, "endpoint '%s' is not an http:// or https:// URL of a server",
                 http_redact_url(ep, red, sizeof(red)));
        return -EINVAL;
    }
    n = strlen(ep);
    while (n > 0 && ep[n - 1] == '/')
        ep[--n] = '\0';
    return 0;
}

/* Region, endpoint and addressing style. */
static int load_place(struct s3_config *c, const struct s3_opts *o, const struct files *f,
                      char *msg, size_t len)
{
    const char *ignore = env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
    bool use_conf = !(ignore && !strcasecmp(ignore, "true"));
    const char *region = o->region, *ep = o->endpoint, *style;

    if (!region)
        region = env("AWS_REGION");
    if (!region)
        region = env("AWS_DEFAULT_REGION");
    if (!region)
        region = config_get(&f->cfg, f->profile, "region");
    if (!region)
        region = S3_DEFAULT_REGION;
    for (const char *p = region; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '-') {
            snprintf(msg, len, "region '%.64s' is not a region name", region);
            return -EINVAL;
        }
    }
    if (!ep && use_conf)
        ep = env("AWS_ENDPOINT_URL_S3");
    if (!ep && use_conf)
        ep = env("AWS_ENDPOINT_URL");
    if (!ep && use_conf) {
        const char *svc = config_get(&f->cfg, f->profile, "services");
        if (svc) {
            char sec[300];
            snprintf(sec, sizeof(sec), "services %s", svc);
            ep = ini_get(&f->cfg, sec, "s3.endpoint_url");
        }
    }
    if (!ep && use_conf) /* the profile's own "s3 =\n  endpoint_url = ..." */
        ep = config_get(&f->cfg, f->profile, "s3.endpoint_url");
    if (!ep && use_conf)
        ep = config_get(&f->cfg, f->profile, "endpoint_url");
    c->region = strdup(region);
    if (ep)
        c->endpoint = strdup(ep);
    else if (asprintf(&c->endpoint, "https://s3.%s.amazonaws.com", region) < 0)
        c->endpoint = NULL;
    if (!c->region || !c->endpoint)
        return -ENOMEM;
    if (check_endpoint(c->endpoint, msg, len) < 0)
        return -EINVAL;
    const char *ca = env("AWS_CA_BUNDLE");
    if (!ca)
        ca = config_get(&f->cfg, f->profile, "ca_bundle");
    if (ca && !(c->ca_bundle = strdup(ca)))
        return -ENOMEM;
    style = config_get(&f->cfg, f->profile, "s3.addressing_style");
    c->path_style = o->path_style || (style && !strcasecmp(style, "path"));
    c->virtual_forced = !o->path_style && style && !strcasecmp(style, "virtual");
    return 0;
}

static int build_auth(struct s3_config *c)
{
    int n = 0;

    c->headers[n++] = "x-amz-content-sha256: UNSIGNED-PAYLOAD";
    if (c->session_token) {
        if (asprintf(&c->token_header, "x-amz-security-token: %s", c->session_token) < 0) {
            c->token_header = NULL;
            return -ENOMEM;
        }
        c->headers[n++] = c->token_header;
    }
    c->headers[n] = NULL;
    memset(&c->auth, 0, sizeof(c->auth));
    if (!c->anonymous) {
        snprintf(c->sigv4, sizeof(c->sigv4), "aws:amz:%s:s3", c->region);
        c->auth.sigv4 = c->sigv4;
        c->auth.user = c->access_key;
        c->auth.secret = c->secret_key;
    }
    c->auth.headers = c->headers;
    c->auth.raw_path = true;
    c->auth.no_redirect = true;
    c->auth.s3_errors = true;
    return 0;
}

/* Contract in s3.h. */
int s3_config_load(const struct s3_opts *o, struct s3_config *c, char *msg, size_t len)
{
    static const struct s3_opts none;
    struct files f = {0};
    int err;

    memset(c, 0, sizeof(*c));
    if (len)
        msg[0] = '\0';
    if (!o)
        o = &none;
    f.profile = env("AWS_PROFILE");
    if (!f.profile)
        f.profile = env("AWS_DEFAULT_PROFILE");
    f.explicit_profile = f.profile != NULL;
    if (!f.profile)
        f.profile = "default";
    err = file_path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials", &f.creds_path);
    if (!err)
        err = file_path("AWS_CONFIG_FILE", ".aws/config", &f.cfg_path);
    if (err)
        goto out;
    err = ini_load(f.creds_path, &f.creds);
    if (err) {
        snprintf(msg, len, "cannot read %s", f.creds_path);
        goto out;
    }
    err = ini_load(f.cfg_path, &f.cfg);
    if (err) {
        snprintf(msg, len, "cannot read %s", f.cfg_path);
        goto out;
    }
    if (f.explicit_profile && !ini_has_section(&f.creds, f.profile) &&
        !config_has(&f.cfg, f.profile)) {
        snprintf(msg, len, "AWS profile '%s' is not in %s or %s", f.profile,
                 f.creds_path ? f.creds_path : "~/.aws/credentials",
                 f.cfg_path ? f.cfg_path : "~/.aws/config");
        err = -ENOENT;
        goto out;
    }
    c->anonymous = o->anonymous;
    if (c->anonymous)
        snprintf(c->creds_from, sizeof(c->creds_from), "none (anonymous)");
    else if ((err = load_credentials(c, &f, msg, len)))
        goto out;
    err = load_place(c, o, &f, msg, len);
    if (!err)
        err = build_auth(c);
out:
    if (err == -ENOMEM && len)
        snprintf(msg, len, "out of memory");
    ini_free(&f.creds);
    ini_free(&f.cfg);
    free(f.creds_path);
    free(f.cfg_path);
    if (err)
        s3_config_destroy(c);
    return err;
}

static void free_secret(char **s)
{
    if (*s) {
        explicit_bzero(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

/* Contract in s3.h. */
void s3_config_destroy(struct s3_config *c)
{
    if (!c)
        return;
    free(c->region);
    free(c->endpoint);
    free(c->ca_bundle);
    free_secret(&c->access_key);
    free_secret(&c->secret_key);
    free_secret(&c->session_token);
    free_secret(&c->token_header);
    memset(c, 0, sizeof(*c));
}

/* Contract in s3.h. */
const struct http_auth *s3_auth(const struct s3_config *c)
{
    return &c->auth;
}

/* ---- URLs ---- */

/* Contract in s3.h. */
bool s3_is_url(const char *s)
{
    return !strncasecmp(s, "s3://", 5);
}

/* S3 bucket names: 3-63 of a-z 0-9 . - (and, for old buckets, A-Z _),
 * starting and ending with a letter or digit. */
static bool bucket_valid(const char *b)
{
    size_t n = strlen(b);

    if (n < 3 || n > 63 || !isalnum((unsigned char)b[0]) || !isalnum((unsigned char)b[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)b[i]) && !strchr(".-_", b[i]))
            return false;
    return true;
}

/* Contract in s3.h. */
int s3_parse_url(const char *url, struct s3_location *out)
{
    const char *b, *slash;

    memset(out, 0, sizeof(*out));
    if (!s3_is_url(url))
        return -EINVAL;
    b = url + 5;
    slash = strchr(b, '/');
    out->bucket = slash ? strndup(b, (size_t)(slash - b)) : strdup(b);
    out->key = strdup(slash ? slash + 1 : "");
    if (!out->bucket || !out->key) {
        s3_location_destroy(out);
        return -ENOMEM;
    }
    if (!bucket_valid(out->bucket)) {
        s3_location_destroy(out);
        return -EINVAL;
    }
    size_t n = strlen(out->key);
    out->prefix = n == 0 || out->key[n - 1] == '/';
    return 0;
}

/* Contract in s3.h. */
void s3_location_destroy(struct s3_location *l)
{
    if (!l)
        return;
    free(l->bucket);
    free(l->key);
    memset(l, 0, sizeof(*l));
}

/* Contract in s3.h. */
int s3_encode(const char *s, bool keep_slash, char **out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *w;

    *out = malloc(3 * n + 1);
    if (!*out)
        return -ENOMEM;
    w = *out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~' ||
            (keep_slash && *p == '/')) {
            *w++ = (char)*p;
        } else {
            *w++ = '%';
            *w++ = hex[*p >> 4];
            *w++ = hex[*p & 15];
        }
    }
    *w = '\0';
    return 0;
}

static bool host_is_ip_or_local(const char *host, size_t n)
{
    size_t i;

    if (n && host[0] == '[')
        return true; /* IPv6 literal */
    if (n == 9 && !strncasecmp(host, "localhost", 9))
        return true;
    for (i = 0; i < n; i++)
        if (!isdigit((unsigned char)host[i]) && host[i] != '.')
            return false;
    return n > 0;
}

/* Can bucket be a host name label under this endpoint? */
static bool virtual_ok(const struct s3_config *c, const char *bucket, const char *host,
                       size_t hostlen)
{
    if (c->path_style || host_is_ip_or_local(host, hostlen))
        return false;
    for (const char *p = bucket; *p; p++)
        if (isupper((unsigned char)*p) || *p == '_')
            return false;
    /* bucket.with.dots.s3.amazonaws.com fails the wildcard certificate. */
    if (strchr(bucket, '.') && !strncasecmp(c->endpoint, "https:", 6) && !c->virtual_forced)
        return false;
    return true;
}

/* The base URL of bucket: "scheme://bucket.host[:port][/base]" or
 * "scheme://host[:port][/base]/bucket" (malloc'd). */
static int bucket_base(const struct s3_config *c, const char *bucket, char **out)
{
    const char *host = strstr(c->endpoint, "://") + 3;
    size_t hostlen = strcspn(host, ":/");
    int n;

    if (virtual_ok(c, bucket, host, hostlen))
        n = asprintf(out, "%.*s%s.%s", (int)(host - c->endpoint), c->endpoint, bucket, host);
    else
        n = asprintf(out, "%s/%s", c->endpoint, bucket);
    if (n < 0) {
        *out = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* Contract in s3.h. */
int s3_object_url(const struct s3_config *c, const char *bucket, const char *key, char **url)
{
    char *base = NULL, *enc = NULL;
    int err;

    *url = NULL;
    if (!*key)
        return -EINVAL;
    err = bucket_base(c, bucket, &base);
    if (!err)
        err = s3_encode(key, true, &enc);
    if (!err && asprintf(url, "%s/%s", base, enc) < 0) {
        *url = NULL;
        err = -ENOMEM;
    }
    free(base);
    free(enc);
    return err;
}

/* ---- ListObjectsV2 ---- */

/* Contract in s3.h. */
bool s3_archive_key(const char *key)
{
    size_t n = strlen(key);

    return (n > 4 && !strcmp(key + n - 4, ".npz")) || (n > 7 && !strcmp(key + n - 7, ".npy.gz"));
}

static void put_utf8(char **w, uint32_t cp)
{
    unsigned char *p = (unsigned char *)*w;

    if (cp < 0x80) {
        *p++ = (unsigned char)cp;
    } else if (cp < 0x800) {
        *p++ = (unsigned char)(0xC0 | (cp >> 6));
        *p++ = (unsigned char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *p++ = (unsigned char)(0xE0 | (cp >> 12));
        *p++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        *p++ = (unsigned char)(0x80 | (cp & 0x3F));
    } else {
        *p++ = (unsigned char)(0xF0 | (cp >> 18));
        *p++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        *p++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        *p++ = (unsigned char)(0x80 | (cp & 0x3F));
    }
    *w = (char *)p;
}

/* Decode XML text [s, s + n) into a new string. NULL with *err set on a bad
 * entity (-EPROTO) or no memory. Decoding never lengthens: a reference to a
 * code point needing k UTF-8 bytes is at least k + 3 characters long
 * ("&#128;" for 2, "&#2048;" for 3, "&#65536;" for 4). */
static char *xml_decode(const char *s, size_t n, int *err)
{
    char *out = malloc(n + 1), *w = out;
    const char *end = s + n;

    if (!out) {
        *err = -ENOMEM;
        return NULL;
    }
    while (s < end) {
        if (*s != '&') {
            *w++ = *s++;
            continue;
        }
        const char *semi = memchr(s, ';', (size_t)(end - s));
        size_t k = semi ? (size_t)(semi - s) + 1 : 0;
        static const struct {
            const char *name;
            char ch;
        } named[] = {
            {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
        bool done = false;
        for (size_t i = 0; semi && i < sizeof(named) / sizeof(named[0]); i++) {
            if (k == strlen(named[i].name) && !memcmp(s, named[i].name, k)) {
                *w++ = named[i].ch;
                done = true;
            }
        }
        if (!done && semi && k >= 4 && s[1] == '#') {
            bool hex = s[2] == 'x' || s[2] == 'X';
            const char *d = s + (hex ? 3 : 2);
            uint32_t cp = 0;
            bool ok = d < semi && semi - d <= 8;
            for (const char *q = d; ok && q < semi; q++) {
                int v = isdigit((unsigned char)*q) ? *q - '0'
                        : hex && isxdigit((unsigned char)*q)
                            ? (tolower((unsigned char)*q) - 'a' + 10)
                            : -1;
                ok = v >= 0;
                cp = cp * (hex ? 16 : 10) + (uint32_t)(v < 0 ? 0 : v);
            }
            if (ok && cp != 0 && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF)) {
                put_utf8(&w, cp);
                done = true;
            }
        }
        if (!done) {
            free(out);
            *err = -EPROTO;
            return NULL;
        }
        s += k;
    }
    *w = '\0';
    return out;
}

/* The text of the first <tag> element in [s, end), decoded; NULL if none
 * (*err 0) or on error (*err < 0). */
static char *xml_text(const char *s, const char *end, const char *tag, int *err)
{
    char open[64], close[64];
    const char *a, *b;

    *err = 0;
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    a = memmem(s, (size_t)(end - s), open, strlen(open));
    if (!a)
        return NULL;
    a += strlen(open);
    b = memmem(a, (size_t)(end - a), close, strlen(close));
    if (!b) {
        *err = -EPROTO;
        return NULL;
    }
    return xml_decode(a, (size_t)(b - a), err);
}

static int add_object(struct s3_listing *out, const char *c, const char *end)
{
    char *key, *size, *etag, *lm, *endp;
    int err, e2 = 0, e3 = 0, e4 = 0;
    struct s3_object *o;

    key = xml_text(c, end, "Key", &err);
    size = xml_text(c, end, "Size", &e2);
    etag = xml_text(c, end, "ETag", &e3);
    lm = xml_text(c, end, "LastModified", &e4);
    if (!err)
        err = e2 ? e2 : e3 ? e3 : e4;
    if (!err && (!key || !size || !*key))
        err = -EPROTO;
    if (err || !s3_archive_key(key))
        goto out;
    if (out->count == out->cap) {
        size_t ncap = out->cap ? out->cap * 2 : 64;
        struct s3_object *g = realloc(out->objs, ncap * sizeof(*g));
        if (!g) {
            err = -ENOMEM;
            goto out;
        }
        out->objs = g;
        out->cap = ncap;
    }
    o = &out->objs[out->count];
    memset(o, 0, sizeof(*o));
    errno = 0;
    o->size = strtoull(size, &endp, 10);
    if (errno || *endp || !isdigit((unsigned char)size[0])) {
        err = -EPROTO;
        goto out;
    }
    o->key = key;
    key = NULL;
    snprintf(o->etag, sizeof(o->etag), "%s", etag ? etag : "");
    snprintf(o->last_modified, sizeof(o->last_modified), "%s", lm ? lm : "");
    out->count++;
out:
    free(key);
    free(size);
    free(etag);
    free(lm);
    return err;
}

/* Contract in s3.h. */
int s3_parse_list_page(const char *xml, struct s3_listing *out, bool *truncated, char **token)
{
    const char *end = xml + strlen(xml), *p = xml;
    char *trunc;
    int err;

    *token = NULL;
    *truncated = false;
    if (!strstr(xml, "<ListBucketResult"))
        return -EPROTO;
    while ((p = strstr(p, "<Contents>"))) {
        const char *ce = strstr(p, "</Contents>");
        if (!ce)
            return -EPROTO;
        err = add_object(out, p, ce);
        if (err)
            return err;
        p = ce + 11;
    }
    trunc = xml_text(xml, end, "IsTruncated", &err);
    if (err)
        return err;
    *truncated = trunc && !strcmp(trunc, "true");
    free(trunc);
    if (*truncated) {
        *token = xml_text(xml, end, "NextContinuationToken", &err);
        if (err)
            return err;
        if (!*token || !**token) {
            free(*token);
            *token = NULL;
            return -EPROTO; /* truncated, but no way to go on */
        }
    }
    return 0;
}

/* "?continuation-token=..&list-type=2&max-keys=N&prefix=..": names sorted,
 * values encoded as S3 canonicalizes them, because the path and query are
 * signed exactly as sent. */
static int list_url(const struct s3_config *c, const char *bucket, const char *prefix,
                    unsigned max_keys, const char *token, char **url)
{
    char *base = NULL, *ep = NULL, *et = NULL, mk[32] = "";
    bool has_path;
    int err;

    *url = NULL;
    err = bucket_base(c, bucket, &base);
    if (!err)
        err = s3_encode(prefix, false, &ep);
    if (!err && token)
        err = s3_encode(token, false, &et);
    if (err)
        goto out;
    if (max_keys)
        snprintf(mk, sizeof(mk), "&max-keys=%u", max_keys);
    /* Virtual-hosted: the path is "/"; path style: "/bucket" (botocore's). */
    has_path = strchr(strstr(base, "://") + 3, '/') != NULL;
    if (asprintf(url, "%s%s?%s%s%slist-type=2%s&prefix=%s", base, has_path ? "" : "/",
                 et ? "continuation-token=" : "", et ? et : "", et ? "&" : "", mk, ep) < 0) {
        *url = NULL;
        err = -ENOMEM;
    }
out:
    free(base);
    free(ep);
    free(et);
    return err;
}

/* Contract in s3.h. */
int s3_list(struct http_client *h, const struct s3_config *c, const char *bucket,
            const char *prefix, unsigned max_keys, struct s3_listing *out, struct http_error *e)
{
    char *token = NULL, *url = NULL;
    bool more = true;
    int err = 0;

    memset(out, 0, sizeof(*out));
    memset(e, 0, sizeof(*e));
    while (more) {
        struct http_req r = {0};
        char *next = NULL;

        err = list_url(c, bucket, prefix, max_keys, token, &url);
        if (err)
            break;
        r.kind = HTTP_BODY;
        r.url = url;
        r.auth = s3_auth(c);
        r.body_max = S3_LIST_BODY_MAX;
        err = http_run(h, &r);
        out->pages++;
        free(url);
        url = NULL;
        if (err) {
            *e = r.error;
            break;
        }
        err = s3_parse_list_page(r.body, out, &more, &next);
        free(r.body);
        if (!err && more && token && !strcmp(token, next))
            err = -EPROTO; /* the same page again: never ends */
        free(token);
        token = next;
        if (err)
            break;
    }
    free(token);
    if (err && !e->err) {
        e->err = err;
        e->why = err == -ENOMEM ? HTTP_ERR_NOMEM : HTTP_ERR_OTHER;
        snprintf(e->detail, sizeof(e->detail), "%s",
                 err == -EPROTO ? "the bucket listing is not valid ListObjectsV2 XML"
                                : "out of memory");
    }
    if (err)
        s3_listing_destroy(out);
    return err;
}

/* Contract in s3.h. */
void s3_listing_destroy(struct s3_listing *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->count; i++)
        free(l->objs[i].key);
    free(l->objs);
    l->objs = NULL;
    l->count = l->cap = 0;
}

/* Contract in s3.h. */
const char *s3_problem(const struct http_error *e, char *buf, size_t len)
{
    const char *code = e->code;

    if (!strcmp(code, "NoSuchBucket"))
        snprintf(buf, len, "no such bucket (NoSuchBucket)");
    else if (!strcmp(code, "NoSuchKey") || (e->status == 404 && !code[0]))
        snprintf(buf, len, "no such key (%s)", code[0] ? code : "HTTP 404");
    else if (!strcmp(code, "AccessDenied"))
        snprintf(buf, len, "access denied (AccessDenied): these credentials may not read it");
    else if (!strcmp(code, "SignatureDoesNotMatch"))
        snprintf(buf, len,
                 "signature rejected (SignatureDoesNotMatch): the secret access key does not "
                 "match the access key id");
    else if (!strcmp(code, "InvalidAccessKeyId"))
        snprintf(buf, len, "the access key id is not known to the server (InvalidAccessKeyId)");
    else if (!strcmp(code, "ExpiredToken") || !strcmp(code, "InvalidToken") ||
             !strcmp(code, "TokenRefreshRequired"))
        snprintf(buf, len, "the session token is expired or invalid (%s)", code);
    else if (!strcmp(code, "PermanentRedirect") || !strcmp(code, "AuthorizationHeaderMalformed") ||
             (e->status == 301 && e->why == HTTP_ERR_STATUS)) {
        if (e->region[0])
            snprintf(buf, len, "the bucket is in region %s: use -o region=%s", e->region,
                     e->region);
        else
            snprintf(buf, len, "the bucket is in another region (%s): set -o region=",
                     code[0] ? code : "HTTP 301");
    } else if (e->status == 403 && !code[0] && e->why == HTTP_ERR_STATUS)
        snprintf(buf, len, "access denied (HTTP 403): wrong credentials, or no permission");
    else
        http_problem(e, buf, len);
    return buf;
}
