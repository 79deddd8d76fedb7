/*
 * The mount table. Contract in mounts.h.
 *
 * A mountinfo line (proc(5)): mount ID, parent ID, major:minor, root, mount
 * point, mount options, optional fields (none or more), "-", the type, the
 * source, the super options. Fields are separated by single spaces; a
 * space, tab, newline or backslash inside one is escaped as three octal
 * digits. A FUSE mount's user_id= and allow_other are super options.
 */
#define _GNU_SOURCE
#include "mounts.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Undo the octal escapes (\040 and the like) of a mountinfo field, in place. */
static void unescape(char *s)
{
    char *d = s;

    for (; *s; s++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
            s[3] >= '0' && s[3] <= '7') {
            *d++ = (char)(((s[1] - '0') << 6) | ((s[2] - '0') << 3) | (s[3] - '0'));
            s += 3;
        } else {
            *d++ = *s;
        }
    }
    *d = '\0';
}

/* The fields of a mountinfo line that matter here, pointing into the
 * line (cut up; mount point and source unescaped). */
struct fields {
    char *dev, *mountpoint, *type, *source, *super;
};

/* Split line: true if it has every field up to the type. */
static bool split_line(char *line, struct fields *f)
{
    char *field[6], *save = NULL, *tok;
    int n = 0;

    line[strcspn(line, "\n")] = '\0';
    for (tok = strtok_r(line, " ", &save); tok && n < 6; tok = strtok_r(NULL, " ", &save))
        field[n++] = tok;
    if (n < 6)
        return false;
    while (tok && strcmp(tok, "-") != 0) /* optional fields */
        tok = strtok_r(NULL, " ", &save);
    f->type = tok ? strtok_r(NULL, " ", &save) : NULL;
    if (!f->type)
        return false;
    f->source = strtok_r(NULL, " ", &save);
    f->super = f->source ? strtok_r(NULL, " ", &save) : NULL;
    f->dev = field[2];
    f->mountpoint = field[4];
    unescape(f->mountpoint);
    if (f->source)
        unescape(f->source);
    return true;
}

/* Fill e from line if its mount point is path: 1, else 0. line is cut up. */
static int parse_line(char *line, const char *path, struct mounts_entry *e)
{
    struct fields f;

    if (!split_line(line, &f) || strcmp(f.mountpoint, path) != 0)
        return 0;
    snprintf(e->dev, sizeof(e->dev), "%s", f.dev);
    snprintf(e->type, sizeof(e->type), "%s", f.type);
    e->uid = -1;
    e->allow_other = false;
    if (f.super) {
        const char *o = strstr(f.super, ",user_id=");
        e->uid = o ? strtol(o + 9, NULL, 10) : -1;
        e->allow_other = strstr(f.super, ",allow_other") != NULL;
    }
    return 1;
}

/* Contract in mounts.h. */
int mounts_each_in(const char *table,
                   void (*fn)(const char *mountpoint, const char *type, const char *source,
                              void *arg),
                   void *arg)
{
    FILE *f = fopen(table, "re");
    char *line = NULL;
    size_t cap = 0;

    if (!f)
        return -1;
    while (getline(&line, &cap, f) > 0) {
        struct fields fl;
        if (split_line(line, &fl))
            fn(fl.mountpoint, fl.type, fl.source ? fl.source : "", arg);
    }
    free(line);
    fclose(f);
    return 0;
}

/* Contract in mounts.h. */
int mounts_each(void (*fn)(const char *mountpoint, const char *type, const char *source,
                           void *arg),
                void *arg)
{
    return mounts_each_in("/proc/self/mountinfo", fn, arg);
}

/* Contract in mounts.h. */
int mounts_find_in(const char *table, const char *path, struct mounts_entry *e)
{
    FILE *f = fopen(table, "re");
    char *line = NULL;
    size_t cap = 0;
    int found = 0;

    if (!f)
        return -1;
    while (getline(&line, &cap, f) > 0) {
        struct mounts_entry cand;
        if (parse_line(line, path, &cand)) {
            *e = cand; /* keep going: the last mount on a path is the visible one */
            found = 1;
        }
    }
    free(line);
    fclose(f);
    return found;
}

/* Contract in mounts.h. */
int mounts_find(const char *path, struct mounts_entry *e)
{
    return mounts_find_in("/proc/self/mountinfo", path, e);
}
