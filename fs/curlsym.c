/*
 * libcurl loaded at run time. Contract in curlsym.h.
 *
 * One pthread_once: dlopen() with RTLD_NOW (a libcurl with a symbol it
 * cannot bind fails here, not at a first request), then dlsym() for every
 * member of curlsym_table, then the version check. The result, and the
 * reason on failure, are kept for every later caller.
 */
#define _GNU_SOURCE
#include "curlsym.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

struct curlsym_table curlsym_table;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static int load_err;       /* written once in load(), read-only after */
static char load_why[256]; /* written once in load(), read-only after */

/* dlsym() of curl_NAME into curlsym_table.NAME; false if missing. */
#define RESOLVE(h, name)                                                                           \
    ((curlsym_table.name = (__typeof__(curlsym_table.name))dlsym((h), "curl_" #name)) != NULL)

static void load(void)
{
    void *h = dlopen(CURLSYM_SONAME, RTLD_NOW | RTLD_LOCAL);
    const char *e;

    if (h && RESOLVE(h, easy_cleanup) && RESOLVE(h, easy_getinfo) && RESOLVE(h, easy_init) &&
        RESOLVE(h, easy_perform) && RESOLVE(h, easy_reset) && RESOLVE(h, easy_setopt) &&
        RESOLVE(h, easy_strerror) && RESOLVE(h, getdate) && RESOLVE(h, global_init) &&
        RESOLVE(h, share_cleanup) && RESOLVE(h, share_init) && RESOLVE(h, share_setopt) &&
        RESOLVE(h, slist_append) && RESOLVE(h, slist_free_all) && RESOLVE(h, version_info)) {
        const curl_version_info_data *v = curlsym_table.version_info(CURLVERSION_NOW);

        if (v && v->version_num >= CURLSYM_MIN_VERSION)
            return;
        snprintf(load_why, sizeof(load_why),
                 "version %s; npyfs needs " CURLSYM_MIN_VERSION_STR " or later",
                 v && v->version ? v->version : "unknown");
        load_err = -ELIBACC;
        return;
    }
    e = dlerror();
    snprintf(load_why, sizeof(load_why), "%s", e ? e : CURLSYM_SONAME ": a function is missing");
    load_err = -ELIBACC;
    /* h stays open if it was: a table half filled is never used */
}

/* Contract in curlsym.h. */
int curlsym_load(const char **why)
{
    pthread_once(&load_once, load);
    if (why)
        *why = load_err ? load_why : NULL;
    return load_err;
}
