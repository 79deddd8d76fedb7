/*
 * Test servers for the remote-source unit tests, on 127.0.0.1 only: nginx
 * (its own config, pid, temp and log files under a temp dir, `daemon off;`
 * as a child), tests/servers/testserver.py (faults, captures, SigV4 checks)
 * and s3rver (node). Every child is stopped by its pid (and gets SIGTERM if
 * the test process dies: PR_SET_PDEATHSIG). A missing server program is a
 * test failure with a message saying what to install, not a skip: CI
 * installs them (scripts/install-deps).
 */
#ifndef NPYFS_TESTS_TESTSRV_H
#define NPYFS_TESTS_TESTSRV_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct ts_proc {
    pid_t pid;  /* 0: not running */
    int in_fd;  /* to the child's stdin, or -1 */
    int out_fd; /* from the child's stdout, or -1 */
};

/* A fresh temp dir (owned string), removed by ts_rmtree(). */
char *ts_tmpdir(void);
void ts_rmtree(const char *dir);

/* Write len bytes to path (created or replaced). Returns 0 or -1. */
int ts_write_file(const char *path, const void *buf, size_t len);
/* Pseudo-random bytes from seed. */
void ts_fill(unsigned char *buf, size_t len, unsigned seed);

/* Stop a child: SIGTERM, wait up to 5 s, then SIGKILL. Accepts pid 0. */
void ts_stop(struct ts_proc *p);

/* nginx serving dir/www on *port (and *tls_port with a certificate made by
 * openssl at dir/cert.pem, when tls_port is not NULL). Its access log,
 * dir/access.log, has one line per request: "$request|$http_range|
 * $http_if_match|$status". Locations: /redir/X redirects (302) to /X, /loop/
 * redirects to itself. Returns 0, or -1 with a message. */
int ts_nginx_start(const char *dir, struct ts_proc *p, int *port, int *tls_port);

/* tests/servers/testserver.py over root; extra: NULL or more arguments
 * ("--sigv4", "AK:SK:R", NULL). port 0: any free port; *port_out gets it. */
int ts_py_start(const char *root, int port, const char *const *extra, struct ts_proc *p,
                int *port_out);
/* Send one command line, read one reply line into reply (if not NULL).
 * Returns 0, or -1 (timeout, dead server). */
int ts_py_cmd(struct ts_proc *p, const char *cmd, char *reply, size_t len);

/* s3rver on dir/s3 with bucket names (NULL-terminated) configured. */
int ts_s3rver_start(const char *dir, const char *const *buckets, struct ts_proc *p, int *port);

/* Run argv and wait (timeout_s); 0 if it exited 0. */
int ts_run(const char *const *argv, int timeout_s);

/* Count lines of file that contain needle, once the file has stopped
 * growing (up to 2 s): a server writes a request's log line just after its
 * reply, so the last line may still be on its way when the client has the
 * reply. */
int ts_count_lines(const char *file, const char *needle);

/* The source directory (for tests/servers), from NPYFS_SOURCE_DIR compiled in. */
const char *ts_source_dir(void);

#endif
