/*
 * Test servers for the remote-source unit tests. Contract in testsrv.h.
 */
#define _GNU_SOURCE
#include "testsrv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PYTHON "/usr/bin/python3"
#define NGINX "/usr/sbin/nginx"
#define NODE "/usr/bin/node"
#define OPENSSL "/usr/bin/openssl"

const char *ts_source_dir(void)
{
    return NPYFS_SOURCE_DIR;
}

char *ts_tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    char *p;

    if (asprintf(&p, "%s/npyfs-remote-XXXXXX", t && *t ? t : "/tmp") < 0)
        return NULL;
    if (!mkdtemp(p)) {
        free(p);
        return NULL;
    }
    return p;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    remove(path);
    return 0;
}

void ts_rmtree(const char *dir)
{
    if (dir)
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int ts_write_file(const char *path, const void *buf, size_t len)
{
    char tmp[4096];
    int fd;
    size_t done = 0;

    /* Write a new file and rename it over: a server never sees half of it. */
    snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    while (done < len) {
        ssize_t n = write(fd, (const char *)buf + done, len - done);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)n;
    }
    close(fd);
    return rename(tmp, path);
}

void ts_fill(unsigned char *buf, size_t len, unsigned seed)
{
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < len; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        buf[i] = (unsigned char)(s >> 24);
    }
}

static bool alive(struct ts_proc *p)
{
    int st;
    if (p->pid <= 0)
        return false;
    if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
        p->pid = 0;
        return false;
    }
    return true;
}

void ts_stop(struct ts_proc *p)
{
    int st;

    if (p->in_fd >= 0 && p->pid > 0)
        close(p->in_fd);
    if (p->out_fd >= 0 && p->pid > 0)
        close(p->out_fd);
    p->in_fd = p->out_fd = -1;
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
        if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
            p->pid = 0;
            return;
        }
        usleep(10000);
    }
    kill(p->pid, SIGKILL);
    waitpid(p->pid, &st, 0);
    p->pid = 0;
}

/* Start argv; pipes: give it a stdin and a stdout pipe; log: stdout+stderr
 * to this file otherwise (NULL: /dev/null). */
static int spawn(const char *const *argv, bool pipes, const char *log, struct ts_proc *p)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    pid_t parent = getpid();

    p->pid = 0;
    p->in_fd = p->out_fd = -1;
    if (pipes && (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0))
        return -1;
    p->pid = fork();
    if (p->pid < 0)
        return -1;
    if (p->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        if (pipes) {
            dup2(in[0], 0);
            dup2(out[1], 1);
        } else {
            int fd = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
            int nul = open("/dev/null", O_RDONLY);
            dup2(nul, 0);
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (pipes) {
        close(in[0]);
        close(out[1]);
        p->in_fd = in[1];
        p->out_fd = out[0];
    }
    return 0;
}

/* Read one line from fd within timeout_ms (reply may be NULL). */
static int read_line(int fd, char *reply, size_t len, int timeout_ms)
{
    size_t n = 0;
    struct timespec t0, t;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        char ch;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left =
            timeout_ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
            return -1;
        if (read(fd, &ch, 1) != 1)
            return -1;
        if (ch == '\n')
            break;
        if (reply && n + 1 < len)
            reply[n++] = ch;
    }
    if (reply && len)
        reply[n] = '\0';
    return 0;
}

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Wait until 127.0.0.1:port accepts, while p lives (10 s). */
static int wait_port(struct ts_proc *p, int port)
{
    for (int i = 0; i < 1000; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(fd);
        if (ok)
            return 0;
        if (!alive(p))
            return -1;
        usleep(10000);
    }
    return -1;
}

static bool have(const char *prog, const char *what)
{
    if (access(prog, X_OK) == 0)
        return true;
    fprintf(stderr, "MISSING: %s is not installed (%s); scripts/install-deps installs it\n", prog,
            what);
    return false;
}

int ts_run(const char *const *argv, int timeout_s)
{
    struct ts_proc p;
    int st;

    if (spawn(argv, false, NULL, &p) < 0)
        return -1;
    for (int i = 0; i < timeout_s * 100; i++) {
        if (waitpid(p.pid, &st, WNOHANG) == p.pid)
            return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
        usleep(10000);
    }
    ts_stop(&p);
    return -1;
}

static int make_cert(const char *dir)
{
    char key[4096], crt[4096];
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    snprintf(crt, sizeof(crt), "%s/cert.pem", dir);
    const char *argv[] = {OPENSSL,
                          "req",
                          "-x509",
                          "-newkey",
                          "ec",
                          "-pkeyopt",
                          "ec_paramgen_curve:prime256v1",
                          "-nodes",
                          "-subj",
                          "/CN=127.0.0.1",
                          "-addext",
                          "subjectAltName=IP:127.0.0.1,DNS:localhost",
                          "-days",
                          "2",
                          "-keyout",
                          key,
                          "-out",
                          crt,
                          NULL};
    return ts_run(argv, 30);
}

int ts_nginx_start(const char *dir, struct ts_proc *p, int *port, int *tls_port)
{
    char conf[4096], text[8192], tls[1024] = "", err[4096];
    p->pid = 0;
    p->in_fd = p->out_fd = -1;
    if (!have(NGINX, "Debian nginx-light"))
        return -1;
    if (tls_port && (!have(OPENSSL, "Debian openssl") || make_cert(dir) < 0)) {
        fprintf(stderr, "cannot make a test certificate with openssl\n");
        return -1;
    }
    snprintf(conf, sizeof(conf), "%s/www", dir);
    mkdir(conf, 0755);
    snprintf(conf, sizeof(conf), "%s/tmp", dir);
    mkdir(conf, 0755);
    /* Ports are picked free and then bound by nginx: retry on a lost race. */
    for (int tries = 0; tries < 5; tries++) {
        *port = free_port();
        if (tls_port) {
            *tls_port = free_port();
            snprintf(tls, sizeof(tls),
                     "listen 127.0.0.1:%d ssl; ssl_certificate %s/cert.pem; "
                     "ssl_certificate_key %s/key.pem;",
                     *tls_port, dir, dir);
        }
        snprintf(text, sizeof(text),
                 "daemon off; worker_processes 1; %s pid %s/nginx.pid; error_log %s/error.log;\n"
                 "events { worker_connections 512; }\n"
                 "http { default_type application/octet-stream; sendfile on;\n"
                 " keepalive_requests 100000; keepalive_timeout 60s;\n"
                 " client_body_temp_path %s/tmp/b; proxy_temp_path %s/tmp/p;\n"
                 " fastcgi_temp_path %s/tmp/f; uwsgi_temp_path %s/tmp/u; scgi_temp_path %s/tmp/s;\n"
                 " log_format t '$request|$http_range|$http_if_match|$status';\n"
                 " access_log %s/access.log t;\n"
                 " server { listen 127.0.0.1:%d; %s root %s/www;\n"
                 "  location /redir/ { rewrite ^/redir/(.*)$ /$1 redirect; }\n"
                 "  location /loop/ { return 302 /loop/; }\n"
                 " }\n}\n",
                 geteuid() == 0 ? "user root;" : "", dir, dir, dir, dir, dir, dir, dir, dir, *port,
                 tls, dir);
        snprintf(conf, sizeof(conf), "%s/nginx.conf", dir);
        if (ts_write_file(conf, text, strlen(text)) < 0)
            return -1;
        snprintf(err, sizeof(err), "%s/nginx.stderr", dir);
        const char *argv[] = {NGINX, "-c", conf, "-e", err, NULL};
        if (spawn(argv, false, err, p) < 0)
            return -1;
        if (wait_port(p, *port) == 0 && (!tls_port || wait_port(p, *tls_port) == 0))
            return 0;
        ts_stop(p);
    }
    fprintf(stderr, "nginx did not start: see %s/error.log\n", dir);
    return -1;
}

int ts_py_start(const char *root, int port, const char *const *extra, struct ts_proc *p,
                int *port_out)
{
    char script[4096], portbuf[16], line[64];
    const char *argv[16];
    int n = 0;

    if (!have(PYTHON, "Debian python3"))
        return -1;
    snprintf(script, sizeof(script), "%s/tests/servers/testserver.py", ts_source_dir());
    snprintf(portbuf, sizeof(portbuf), "%d", port);
    argv[n++] = PYTHON;
    argv[n++] = script;
    argv[n++] = "--root";
    argv[n++] = root;
    argv[n++] = "--port";
    argv[n++] = portbuf;
    for (; extra && *extra && n < 15; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    if (spawn(argv, true, NULL, p) < 0)
        return -1;
    if (read_line(p->out_fd, line, sizeof(line), 20000) < 0 ||
        sscanf(line, "PORT %d", port_out) != 1) {
        fprintf(stderr, "testserver.py did not start\n");
        ts_stop(p);
        return -1;
    }
    return 0;
}

int ts_py_cmd(struct ts_proc *p, const char *cmd, char *reply, size_t len)
{
    size_t n = strlen(cmd);

    if (p->in_fd < 0 || write(p->in_fd, cmd, n) != (ssize_t)n || write(p->in_fd, "\n", 1) != 1)
        return -1;
    return read_line(p->out_fd, reply, len, 20000);
}

int ts_s3rver_start(const char *dir, const char *const *buckets, struct ts_proc *p, int *port)
{
    char js[4096], data[4096], portbuf[16], log[4096];
    const char *argv[32];
    int n;

    p->pid = 0;
    p->in_fd = p->out_fd = -1;
    snprintf(js, sizeof(js), "%s/tests/servers/node_modules/s3rver/bin/s3rver.js", ts_source_dir());
    if (!have(NODE, "Debian nodejs"))
        return -1;
    if (access(js, R_OK) != 0) {
        fprintf(stderr,
                "MISSING: %s; install it with: npm ci --prefix %s/tests/servers "
                "(s3rver@3.7.1)\n",
                js, ts_source_dir());
        return -1;
    }
    snprintf(data, sizeof(data), "%s/s3", dir);
    mkdir(data, 0755);
    snprintf(log, sizeof(log), "%s/s3rver.log", dir);
    for (int tries = 0; tries < 5; tries++) {
        n = 0;
        *port = free_port();
        snprintf(portbuf, sizeof(portbuf), "%d", *port);
        argv[n++] = NODE;
        /* s3rver's continuation tokens use DES, which OpenSSL 3 only has
         * in its legacy provider: without it every truncated listing is a
         * 500 InternalError. */
        argv[n++] = "--openssl-legacy-provider";
        argv[n++] = js;
        argv[n++] = "-d";
        argv[n++] = data;
        argv[n++] = "-a";
        argv[n++] = "127.0.0.1";
        argv[n++] = "-p";
        argv[n++] = portbuf;
        argv[n++] = "--silent";
        argv[n++] = "--no-vhost-buckets";
        for (const char *const *b = buckets; b && *b && n < 28; b++) {
            argv[n++] = "--configure-bucket";
            argv[n++] = *b;
        }
        argv[n] = NULL;
        if (spawn(argv, false, log, p) < 0)
            return -1;
        if (wait_port(p, *port) == 0)
            return 0;
        ts_stop(p);
    }
    fprintf(stderr, "s3rver did not start: see %s\n", log);
    return -1;
}

/* Wait (up to 2 s) until file has not grown for 100 ms. */
static void settle(const char *file)
{
    struct timespec pause = {0, 25 * 1000 * 1000};
    off_t last = -1;
    int still = 0;

    for (int i = 0; i < 80 && still < 4; i++) {
        struct stat st;
        off_t size = stat(file, &st) == 0 ? st.st_size : -1;

        still = size == last ? still + 1 : 0;
        last = size;
        nanosleep(&pause, NULL);
    }
}

int ts_count_lines(const char *file, const char *needle)
{
    FILE *f;
    char line[8192];
    int n = 0;

    settle(file);
    f = fopen(file, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, needle))
            n++;
    fclose(f);
    return n;
}
