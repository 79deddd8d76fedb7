/*
 * Unit tests for fs/mounts.c, the one reader of the mount table: tables in
 * mountinfo form written here (escaped mount points, optional fields, a
 * path mounted twice, FUSE options, lines longer than a page), a missing
 * table, and the real /proc/self/mountinfo.
 */
#include "check.h"
#include "mounts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char table[] = "/tmp/test_mounts.XXXXXX";

static void write_table(const char *text)
{
    FILE *f = fopen(table, "w");

    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        perror(table);
        exit(2);
    }
}

static void test_table(void)
{
    struct mounts_entry e;
    char *longline;
    size_t n;

    write_table(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "30 22 0:40 / /mnt/a\\040b rw,nosuid shared:5 master:2 - fuse.npyfs /d/x\\054y.npz "
        "ro,user_id=1000,group_id=1000,default_permissions,allow_other\n"
        "31 22 0:41 / /mnt/c rw - tmpfs tmpfs rw,size=1024k\n"
        "32 22 0:42 / /mnt/c ro,nosuid - fuse.npyfs /data/c.npz ro,user_id=0,group_id=0\n"
        "33 22 0:43 / /mnt/back\\134slash rw - fuse.other src rw\n"
        "34 22 0:44 / /mnt/short rw -\n"
        "35 22 0:45 / /mnt/nosep rw shared:9\n");

    /* a space escaped as \040, optional fields before " - ", FUSE options */
    CHECK_EQ(mounts_find_in(table, "/mnt/a b", &e), 1);
    CHECK(strcmp(e.dev, "0:40") == 0);
    CHECK(strcmp(e.type, "fuse.npyfs") == 0);
    CHECK_EQ(e.uid, 1000);
    CHECK(e.allow_other);
    CHECK_EQ(mounts_find_in(table, "/mnt/a\\040b", &e), 0); /* the escaped form is not a path */

    /* the same point twice: the last (visible) one wins */
    CHECK_EQ(mounts_find_in(table, "/mnt/c", &e), 1);
    CHECK(strcmp(e.dev, "0:42") == 0);
    CHECK(strcmp(e.type, "fuse.npyfs") == 0);
    CHECK_EQ(e.uid, 0);
    CHECK(!e.allow_other);

    /* \134 is a backslash; no user_id: -1 */
    CHECK_EQ(mounts_find_in(table, "/mnt/back\\slash", &e), 1);
    CHECK(strcmp(e.type, "fuse.other") == 0);
    CHECK_EQ(e.uid, -1);
    CHECK_EQ(mounts_find_in(table, "/", &e), 1);
    CHECK(strcmp(e.type, "ext4") == 0 && strcmp(e.dev, "8:1") == 0);

    /* lines without a type are no mounts; paths not there */
    CHECK_EQ(mounts_find_in(table, "/mnt/short", &e), 0);
    CHECK_EQ(mounts_find_in(table, "/mnt/nosep", &e), 0);
    CHECK_EQ(mounts_find_in(table, "/mnt", &e), 0);
    CHECK_EQ(mounts_find_in(table, "/mnt/a", &e), 0);

    /* a line longer than any fixed buffer (a long mount point) */
    n = 20000;
    longline = malloc(n + 200);
    if (!longline)
        exit(2);
    strcpy(longline, "40 22 0:50 / /");
    memset(longline + strlen(longline), 'p', n);
    strcpy(longline + 14 + n, " rw - fuse.npyfs src ro,user_id=7\n");
    write_table(longline);
    longline[14 + n] = '\0';
    CHECK_EQ(mounts_find_in(table, longline + 13, &e), 1);
    CHECK_EQ(e.uid, 7);
    free(longline);

    unlink(table);
    CHECK_EQ(mounts_find_in(table, "/", &e), -1); /* no table */
}

/* mounts_each_in(): what it saw, one "mountpoint|type|source;" per mount */
static void collect(const char *mountpoint, const char *type, const char *source, void *arg)
{
    char *seen = arg;
    size_t n = strlen(seen);

    snprintf(seen + n, 1024 - n, "%s|%s|%s;", mountpoint, type, source);
}

static void test_each(void)
{
    char seen[1024] = "";

    write_table("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
                "30 22 0:40 / /mnt/a\\040b rw shared:5 master:2 - fuse.npyfs "
                "https://h/x\\040y.npz ro,user_id=0\n"
                "34 22 0:44 / /mnt/short rw -\n"
                "35 22 0:45 / /mnt/nosource rw - tmpfs\n");
    CHECK_EQ(mounts_each_in(table, collect, seen), 0);
    CHECK(strcmp(seen, "/|ext4|/dev/sda1;/mnt/a b|fuse.npyfs|https://h/x y.npz;"
                       "/mnt/nosource|tmpfs|;") == 0);
    unlink(table);
    CHECK_EQ(mounts_each_in(table, collect, seen), -1);
}

static void test_real(void)
{
    struct mounts_entry e;

    CHECK_EQ(mounts_find("/", &e), 1);
    CHECK(e.type[0] != '\0' && strchr(e.dev, ':') != NULL);
    CHECK_EQ(mounts_find("/no/such/mount/point", &e), 0);
}

int main(void)
{
    int fd = mkstemp(table);

    if (fd < 0) {
        perror("mkstemp");
        return 2;
    }
    close(fd);
    test_table();
    test_each();
    test_real();
    return check_exit("test_mounts");
}
