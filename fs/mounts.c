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

/* Fill e from line if its mount point is path: 1, else 0. line is cut up. */
static int parse_line(char *line, const char *path, struct mounts_entry *e)
{
    char *field[6], *save = NULL, *tok, *type, *super;
    int n = 0;

    line[strcspn(line, "\n")] = '\0';
    for (tok = strtok_r(line, " ", &save); tok && n < 6; tok = strtok_r(NULL, " ", &save))
        field[n++] = tok;
    if (n < 6)
        return 0;
    while (tok && strcmp(tok, "-") != 0) /* optional fields */
        tok = strtok_r(NULL, " ", &save);
    type = tok ? strtok_r(NULL, " ", &save) : NULL;
    if (!type)
        return 0;
    super = strtok_r(NULL, " ", &save) ? strtok_r(NULL, " ", &save) : NULL; /* after the source */
    unescape(field[4]);
    if (strcmp(field[4], path) != 0)
        return 0;
    snprintf(e->dev, sizeof(e->dev), "%s", field[2]);
    snprintf(e->type, sizeof(e->type), "%s", type);
    e->uid = -1;
    e->allow_other = false;
    if (super) {
        const char *o = strstr(super, ",user_id=");
        e->uid = o ? strtol(o + 9, NULL, 10) : -1;
        e->allow_other = strstr(super, ",allow_other") != NULL;
    }
    return 1;
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
