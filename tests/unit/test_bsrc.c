/*
 * Unit tests for fs/bsrc.c, the byte source under every read of archive
 * bytes, on local files (remote objects: test_remote.c and the integration
 * tests):
 *  - a file's identity is its fstat at open, and its check says whether the
 *    file is still what it was: unchanged, written to (even with the mtime
 *    put back), truncated, chmod'ed are changes; renamed over or deleted
 *    with its content untouched is not (the open descriptor keeps the old
 *    file);
 *  - reads go through the source format/ takes;
 *  - the index key of a file is its device, inode, size and mtime;
 *  - names for messages: a URL without its query, fragment or credentials;
 *    the base name of a path, of an http(s) URL (%XX decoded, no query)
 *    and of an s3:// key (as it is).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bsrc.h"
#include "check.h"
#include "dfx_store.h"

static char dir[] = "/tmp/npyfs-test-bsrc-XXXXXX";

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    if (!f) {
        CHECK(!"cannot write the test file");
        return;
    }
    fputs(text, f);
    fclose(f);
}

static struct bsrc *open_path(const char *path)
{
    struct bsrc *b = NULL;

    CHECK_EQ(bsrc_open_file(-1, NULL, path, &b), 0);
    return b;
}

static void test_file_identity_and_reads(void)
{
    char path[256], buf[16] = {0};
    struct dfx_store_key k = {0};
    struct bsrc *b;
    struct stat st;

    snprintf(path, sizeof(path), "%s/a.bin", dir);
    write_file(path, "hello, archive");
    b = open_path(path);
    if (!b)
        return;
    CHECK(!bsrc_is_remote(b));
    CHECK_EQ(bsrc_ident(b)->size, 14);
    CHECK(bsrc_ident(b)->url == NULL);
    CHECK_EQ(stat(path, &st), 0);
    CHECK_EQ(bsrc_ident(b)->st.st_ino, st.st_ino);
    CHECK_EQ(bsrc_read_exact(b, buf, 5, 7), 0);
    CHECK(memcmp(buf, "archi", 5) == 0);
    CHECK_EQ(bsrc_pread(b, buf, 16, 10), 4);
    CHECK_EQ(bsrc_read_exact(b, buf, 16, 10), -EIO);
    CHECK_EQ(src_pread(bsrc_src(b), buf, 2, 0), 2);
    bsrc_key(b, &k);
    CHECK_EQ(k.dev, (uint64_t)st.st_dev);
    CHECK_EQ(k.ino, (uint64_t)st.st_ino);
    CHECK_EQ(k.size, 14);
    CHECK_EQ(k.mtime_sec, (int64_t)st.st_mtim.tv_sec);
    CHECK_EQ(k.mtime_nsec, (uint32_t)st.st_mtim.tv_nsec);
    CHECK_EQ(bsrc_check(b), 0);
    bsrc_advise(b, 0, 14); /* a file ignores it */
    CHECK_EQ(bsrc_check(b), 0);
    bsrc_close(b);
    CHECK_EQ(bsrc_open_file(-1, NULL, dir, &b), -EISDIR);
    CHECK(b == NULL);
}

static void test_file_changes(void)
{
    char path[256], other[256];
    struct timespec times[2];
    struct stat st;
    struct bsrc *b;
    int fd;

    snprintf(path, sizeof(path), "%s/c.bin", dir);
    snprintf(other, sizeof(other), "%s/c.new", dir);

    /* written to, with its mtime put back: the ctime tells */
    write_file(path, "0123456789");
    CHECK_EQ(stat(path, &st), 0);
    b = open_path(path);
    fd = open(path, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, "X", 1, 3) == 1);
    close(fd);
    times[0] = st.st_atim;
    times[1] = st.st_mtim;
    CHECK_EQ(utimensat(AT_FDCWD, path, times, 0), 0);
    CHECK_EQ(bsrc_check(b), -EIO);
    bsrc_close(b);

    /* truncated */
    write_file(path, "0123456789");
    b = open_path(path);
    CHECK_EQ(truncate(path, 4), 0);
    CHECK_EQ(bsrc_check(b), -EIO);
    bsrc_close(b);

    /* chmod */
    write_file(path, "0123456789");
    b = open_path(path);
    CHECK_EQ(chmod(path, 0600), 0);
    CHECK_EQ(bsrc_check(b), -EIO);
    bsrc_close(b);

    /* renamed over: the old file goes on, unchanged (twice: the new ctime
     * is taken once) */
    write_file(path, "0123456789");
    b = open_path(path);
    write_file(other, "abcdefghij");
    CHECK_EQ(rename(other, path), 0);
    CHECK_EQ(bsrc_check(b), 0);
    CHECK_EQ(bsrc_check(b), 0);
    bsrc_close(b);

    /* deleted */
    b = open_path(path);
    CHECK_EQ(unlink(path), 0);
    CHECK_EQ(bsrc_check(b), 0);
    bsrc_close(b);
}

static void test_names(void)
{
    char buf[256], *s;

    CHECK(strcmp(bsrc_name_of("/data/a b.npz", buf, sizeof(buf)), "/data/a b.npz") == 0);
    CHECK(strcmp(bsrc_name_of("https://h:8443/p/r.npz?X-Amz-Signature=SECRET#frag", buf,
                              sizeof(buf)),
                 "https://h:8443/p/r.npz") == 0);
    CHECK(strcmp(bsrc_name_of("http://user:pw@h/r.npz", buf, sizeof(buf)), "http://h/r.npz") == 0);
    CHECK(strcmp(bsrc_name_of("s3://bucket/k.npz", buf, sizeof(buf)), "s3://bucket/k.npz") == 0);
    CHECK(bsrc_is_url("https://h/x") && bsrc_is_url("s3://b/k") && !bsrc_is_url("/x/y"));

    s = bsrc_base_name("/data/runs/r.npy.gz");
    CHECK(s && strcmp(s, "r.npy.gz") == 0);
    free(s);
    s = bsrc_base_name("https://h/dir/a%20b%2Bc.npz?sig=1%2F2#f");
    CHECK(s && strcmp(s, "a b+c.npz") == 0);
    free(s);
    s = bsrc_base_name("s3://bucket/runs/100%25 x.npz");
    CHECK(s && strcmp(s, "100%25 x.npz") == 0); /* s3:// keys are not encoded */
    free(s);
    s = bsrc_base_name("https://host");
    CHECK(s && strcmp(s, "") == 0);
    free(s);
    s = bsrc_base_name("s3://bucket");
    CHECK(s && strcmp(s, "") == 0);
    free(s);
    s = bsrc_base_name("https://h/p/");
    CHECK(s && strcmp(s, "") == 0);
    free(s);
    s = bsrc_base_name("https://h/a%2");
    CHECK(s && strcmp(s, "a%2") == 0); /* a cut escape stays as it is */
    free(s);
    CHECK(bsrc_transient(-EREMOTEIO) && bsrc_transient(-ETIMEDOUT) && !bsrc_transient(-EIO));
}

int main(void)
{
    char cmd[512];

    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_file_identity_and_reads();
    test_file_changes();
    test_names();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return check_exit("test_bsrc");
}
