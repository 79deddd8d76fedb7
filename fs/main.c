/*
 * The npyfs executable: main() alone, with what it does before any command
 * runs: the secrets of URLs hidden from ps, --help, --version, and the
 * dispatch to a command (cmd_*.c). Everything else is the library (fs/).
 */
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "cmd_index.h"
#include "cmd_ls.h"
#include "cmd_mount.h"
#include "cmd_stats.h"
#include "cmd_unmount.h"
#include "dfx_store.h"
#include "usage.h"

#ifdef NPYFS_HAVE_ISAL
#include <isa-l.h>
#define STR_(x) #x
#define STR(x) STR_(x)
#define ISAL_TEXT                                                                                \
    "ISA-L " STR(ISAL_MAJOR_VERSION) "." STR(ISAL_MINOR_VERSION) "." STR(ISAL_PATCH_VERSION)
#else
#define ISAL_TEXT "without ISA-L"
#endif

/* Blank the secrets of the URLs in arg[0..len) in place: a query or
 * fragment (a signed URL's signature), and a user:password@. A URL ends
 * at the end of arg or at a ',' (an -o list). */
static void blank_urls(char *arg)
{
    static const char *const schemes[] = {"http://", "https://"};

    for (int k = 0; k < 2; k++) {
        char *p = arg;
        while ((p = strcasestr(p, schemes[k]))) {
            char *host = p + strlen(schemes[k]);
            char *end = host + strcspn(host, ",");
            char *path = host + strcspn(host, "/?#,");
            char *at = memchr(host, '@', (size_t)(path - host));
            char *q = path + strcspn(path, "?#,");

            if (at)
                memset(host, '*', (size_t)(at - host));
            if (q < end)
                memset(q + 1, '*', (size_t)(end - q - 1));
            p = end;
        }
    }
}

/* A signed URL's query, or a URL's user:password@, is a secret: every
 * argument that holds one is copied (the copy is what the program uses)
 * and blanked in place, in the memory that `ps` and /proc/PID/cmdline
 * show for this process and for the daemon it forks. */
static void hide_secrets(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        char *copy;

        if (!strcasestr(argv[i], "http://") && !strcasestr(argv[i], "https://"))
            continue;
        copy = strdup(argv[i]);
        if (!copy)
            continue; /* shown as typed rather than lost */
        blank_urls(argv[i]);
        if (strcmp(copy, argv[i]) == 0) {
            free(copy);
            continue;
        }
        argv[i] = copy; /* freed at exit */
    }
}

/* Is arg, not a command's name, the SOURCE of the call form? A path or URL
 * (a '.', '/' or ':' in it), or a name that is there (a directory "runs"),
 * so that a mistyped command still gets "unknown command". */
static bool looks_like_source(const char *arg)
{
    struct stat st;

    return strpbrk(arg, "./:") || lstat(arg, &st) == 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";

    hide_secrets(argc, argv);
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
        printf("npyfs %s (libfuse %s, zlib %s, %s; index files: format version %d)\n",
               NPYFS_VERSION, fuse_pkgversion(), zlibVersion(), ISAL_TEXT, DFX_STORE_VERSION);
        return 0;
    }
    if (usage_command_help(cmd, argc - 2, argv + 2))
        return fflush(stdout) == 0 ? 0 : 1;
    if (strcmp(cmd, "mount") == 0)
        return cmd_mount(argc - 2, argv + 2);
    if (strcmp(cmd, "unmount") == 0 || strcmp(cmd, "umount") == 0)
        return cmd_unmount(argc - 2, argv + 2);
    if (strcmp(cmd, "ls") == 0)
        return cmd_ls(argc - 2, argv + 2);
    if (strcmp(cmd, "index") == 0)
        return cmd_index(argc - 2, argv + 2);
    if (strcmp(cmd, "stats") == 0)
        return cmd_stats(argc - 2, argv + 2);
    if (argc >= 3 && cmd[0] != '-' && looks_like_source(cmd))
        return cmd_mount_fstab(argc - 1, argv + 1); /* npyfs SOURCE MOUNTPOINT -o OPTS */
    if (argc < 2)
        fputs(usage_text, stderr);
    else
        fprintf(stderr, "npyfs: unknown command '%s' (see npyfs --help)\n", cmd);
    return 1;
}
