/*
 * libcurl, loaded when a remote source first needs it. The executable does
 * not link libcurl: a local mount or command never maps it and its long
 * tail of libraries (TLS, HTTP/2, SSH, LDAP, Kerberos, IDN, ...), which
 * cost a cold start more than the rest of npyfs. curlsym_load() dlopen()s
 * libcurl.so.4 and resolves the functions npyfs calls into curlsym_table;
 * http.c and bsrc.c include this header and keep calling them by their
 * libcurl names, which the macros at the end turn into calls through the
 * table. <curl/curl.h> still gives the types and constants at build time.
 * A libcurl function called without a line here fails to link: nothing
 * links libcurl any more.
 *
 * Ownership: the library stays loaded until the process exits (never
 * dlclose()d: easy handles and libcurl's global state live as long).
 * Locks: curlsym_load() is thread-safe (pthread_once); curlsym_table is
 * written once inside it and read-only after, so calls through it need no
 * lock.
 * Errors: curlsym_load() returns -ELIBACC when libcurl.so.4 cannot be
 * loaded or lacks a function, with dlerror()'s text, or is older than
 * CURLSYM_MIN_VERSION.
 */
#ifndef NPYFS_FS_CURLSYM_H
#define NPYFS_FS_CURLSYM_H

#include <curl/curl.h>

/* The soname of every libcurl 7.x and 8.x (ABI 4, stable since 2006). */
#define CURLSYM_SONAME "libcurl.so.4"

/* The oldest libcurl npyfs takes (0xXXYYZZ for X.Y.Z), and why: before
 * 7.85.0 CURLOPT_PROTOCOLS_STR and CURLOPT_REDIR_PROTOCOLS_STR are unknown,
 * and before 7.75.0 CURLOPT_AWS_SIGV4: setopt fails on them, and a transfer
 * would follow a redirect to any protocol, or send S3 keys unsigned (as
 * Basic credentials). Such a libcurl is refused at load. */
#define CURLSYM_MIN_VERSION 0x075500
#define CURLSYM_MIN_VERSION_STR "7.85.0"

/* The functions npyfs calls, each with the type <curl/curl.h> declares it
 * with; member X holds curl_X. Valid once curlsym_load() returned 0. */
struct curlsym_table {
    __typeof__(curl_easy_cleanup) *easy_cleanup;
    __typeof__(curl_easy_getinfo) *easy_getinfo;
    __typeof__(curl_easy_init) *easy_init;
    __typeof__(curl_easy_perform) *easy_perform;
    __typeof__(curl_easy_reset) *easy_reset;
    __typeof__(curl_easy_setopt) *easy_setopt;
    __typeof__(curl_easy_strerror) *easy_strerror;
    __typeof__(curl_getdate) *getdate;
    __typeof__(curl_global_init) *global_init;
    __typeof__(curl_share_cleanup) *share_cleanup;
    __typeof__(curl_share_init) *share_init;
    __typeof__(curl_share_setopt) *share_setopt;
    __typeof__(curl_slist_append) *slist_append;
    __typeof__(curl_slist_free_all) *slist_free_all;
    __typeof__(curl_version_info) *version_info;
};

/* Written by curlsym_load() only. */
extern struct curlsym_table curlsym_table;

/* Load libcurl.so.4 and fill curlsym_table, once per process; later calls
 * return the first one's result. Returns 0, or -ELIBACC with *why (may be
 * NULL) set to dlerror()'s text ("libcurl.so.4: cannot open shared object
 * file: No such file or directory") or to the version refused ("version
 * 7.74.0; npyfs needs 7.85.0 or later"): a static string, valid for the
 * life of the process. Thread-safe. curl_global_init() is the caller's. */
int curlsym_load(const char **why);

/* The libcurl names at the call sites, through the table. The three
 * setopt/getinfo names are macros in <curl/curl.h> (GCC's type checks in
 * typecheck-gcc.h, or a plain three-argument wrapper): they go first. */
#undef curl_easy_getinfo
#undef curl_easy_setopt
#undef curl_share_setopt
#define curl_easy_cleanup curlsym_table.easy_cleanup
#define curl_easy_getinfo curlsym_table.easy_getinfo
#define curl_easy_init curlsym_table.easy_init
#define curl_easy_perform curlsym_table.easy_perform
#define curl_easy_reset curlsym_table.easy_reset
#define curl_easy_setopt curlsym_table.easy_setopt
#define curl_easy_strerror curlsym_table.easy_strerror
#define curl_getdate curlsym_table.getdate
#define curl_global_init curlsym_table.global_init
#define curl_share_cleanup curlsym_table.share_cleanup
#define curl_share_init curlsym_table.share_init
#define curl_share_setopt curlsym_table.share_setopt
#define curl_slist_append curlsym_table.slist_append
#define curl_slist_free_all curlsym_table.slist_free_all
#define curl_version_info curlsym_table.version_info

#endif
