/*
 * delayq: a network delay for the remote-source tests and benchmark, on a
 * kernel without netem. It takes the packets that an NFQUEUE rule queues,
 * holds each one for a fixed time and then accepts it, in arrival order.
 *
 *   delayq [-q QUEUE] [-d MS]
 *
 * Run it inside the test's network namespace (its queue belongs to that
 * namespace), with the rule added there too:
 *
 *   iptables -A INPUT -i lo -p tcp -j NFQUEUE --queue-num QUEUE --queue-bypass
 *
 * On INPUT, every packet on lo passes the rule once, so the round trip time
 * grows by 2 x MS. On OUTPUT the held packets would slow the sender (TCP
 * small queues). --queue-bypass lets packets through when no delayq runs.
 *
 * It prints "ready" on stdout once the queue is bound. Then it reads one
 * command a line on stdin and answers one line:
 *
 *   delay MS   hold packets queued from now on for MS milliseconds (a
 *              fraction is allowed); answers "ok"
 *   stats      "packets N held H max_held M overflow O lost L": packets seen,
 *              held now, most held at once, accepted at once because the
 *              buffer was full, and netlink messages the kernel could not
 *              deliver (those packets wait for the queue to close)
 *
 * End of stdin, SIGTERM or SIGINT make it accept every held packet and exit 0.
 * Needs CAP_NET_ADMIN (root). Exit 1 with a message when the queue cannot be
 * bound (another program holds it, no nfnetlink_queue in the kernel).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif
#ifndef NETLINK_NO_ENOBUFS
#define NETLINK_NO_ENOBUFS 5
#endif

#define RING_SIZE (1u << 16) /* packets held at once; the kernel queue's limit too */
#define RCVBUF (16u << 20)   /* netlink socket buffer */

struct held {
    uint32_t id;
    uint64_t due_ns;
};

struct state {
    struct nfq_q_handle *qh;
    struct held *ring;
    uint32_t head, count;
    uint64_t delay_ns;
    uint64_t last_due_ns; /* due times never go backwards: release in order */
    uint64_t packets, max_held, overflow, lost;
};

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa,
                     void *data)
{
    struct state *st = data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    (void)msg;

    if (!ph)
        return 0;
    uint32_t id = ntohl(ph->packet_id);
    st->packets++;
    if (st->count == RING_SIZE) {
        st->overflow++;
        return nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
    }
    uint64_t due = now_ns() + st->delay_ns;
    if (due < st->last_due_ns)
        due = st->last_due_ns;
    st->last_due_ns = due;
    st->ring[(st->head + st->count) % RING_SIZE] = (struct held){id, due};
    st->count++;
    if (st->count > st->max_held)
        st->max_held = st->count;
    return 0;
}

/* Accept every held packet due by now (all of them if all is set), with one
 * batch verdict: the ring is in id order. */
static void release(struct state *st, int all)
{
    uint64_t now = now_ns();
    uint32_t last = 0;
    int any = 0;

    while (st->count && (all || st->ring[st->head].due_ns <= now)) {
        last = st->ring[st->head].id;
        any = 1;
        st->head = (st->head + 1) % RING_SIZE;
        st->count--;
    }
    if (any && nfq_set_verdict_batch(st->qh, last, NF_ACCEPT) < 0)
        fprintf(stderr, "delayq: verdict failed: %s\n", strerror(errno));
}

/* One command line from stdin; answers on stdout. */
static void command(struct state *st, char *line)
{
    double ms;

    if (sscanf(line, "delay %lf", &ms) == 1 && ms >= 0 && ms < 1e7) {
        st->delay_ns = (uint64_t)(ms * 1e6);
        printf("ok\n");
    } else if (strncmp(line, "stats", 5) == 0) {
        printf("packets %llu held %u max_held %llu overflow %llu lost %llu\n",
               (unsigned long long)st->packets, st->count, (unsigned long long)st->max_held,
               (unsigned long long)st->overflow, (unsigned long long)st->lost);
    } else {
        printf("error\n");
    }
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr, "usage: delayq [-q QUEUE] [-d MS]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct state st = {0};
    unsigned queue = 0;
    double ms = 0;
    int opt, ret = 1;
    char buf[1 << 16] __attribute__((aligned));
    char line[256];
    size_t line_len = 0;
    int stdin_open = 1;

    while ((opt = getopt(argc, argv, "q:d:")) != -1) {
        char *end;
        switch (opt) {
        case 'q':
            queue = (unsigned)strtoul(optarg, &end, 10);
            if (*end || queue > 65535)
                usage();
            break;
        case 'd':
            ms = strtod(optarg, &end);
            if (*end || ms < 0 || ms >= 1e7)
                usage();
            break;
        default:
            usage();
        }
    }
    st.delay_ns = (uint64_t)(ms * 1e6);
    st.ring = calloc(RING_SIZE, sizeof(*st.ring));
    if (!st.ring)
        return 1;

    /* Signals stay blocked except inside ppoll, so none is lost between the
     * flag check and the wait. */
    sigset_t block, waitmask;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &waitmask);
    sigdelset(&waitmask, SIGTERM);
    sigdelset(&waitmask, SIGINT);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct nfq_handle *h = nfq_open();
    if (!h) {
        fprintf(stderr, "delayq: cannot open nfnetlink: %s (root? nfnetlink_queue?)\n",
                strerror(errno));
        goto out_free;
    }
    st.qh = nfq_create_queue(h, (uint16_t)queue, on_packet, &st);
    if (!st.qh) {
        fprintf(stderr, "delayq: cannot bind queue %u: %s (in use, or not root)\n", queue,
                strerror(errno));
        goto out_close;
    }
    if (nfq_set_mode(st.qh, NFQNL_COPY_META, 0) < 0) {
        fprintf(stderr, "delayq: cannot set copy mode: %s\n", strerror(errno));
        goto out_destroy;
    }
    nfq_set_queue_maxlen(st.qh, RING_SIZE);
    /* Whole GSO packets (loopback sends 64 KiB ones): no segmentation. */
    nfq_set_queue_flags(st.qh, NFQA_CFG_F_GSO, NFQA_CFG_F_GSO);
    nfnl_rcvbufsiz(nfq_nfnlh(h), RCVBUF);
    int fd = nfq_fd(h);
    int one = 1;
    setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof(one));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);

    printf("ready\n");
    fflush(stdout);

    while (!stop_flag) {
        struct pollfd pfd[2] = {{.fd = fd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
        struct timespec ts, *tsp = NULL;
        if (st.count) {
            uint64_t now = now_ns(), due = st.ring[st.head].due_ns;
            uint64_t wait = due > now ? due - now : 0;
            ts.tv_sec = (time_t)(wait / 1000000000u);
            ts.tv_nsec = (long)(wait % 1000000000u);
            tsp = &ts;
        }
        int n = ppoll(pfd, stdin_open ? 2 : 1, tsp, &waitmask);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "delayq: poll: %s\n", strerror(errno));
            break;
        }
        if (n > 0 && (pfd[0].revents & POLLIN)) {
            for (;;) {
                ssize_t r = recv(fd, buf, sizeof(buf), 0);
                if (r < 0) {
                    if (errno == ENOBUFS) {
                        st.lost++;
                        continue;
                    }
                    break; /* EAGAIN: drained */
                }
                nfq_handle_packet(h, buf, (int)r);
            }
        }
        if (n > 0 && stdin_open && (pfd[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            for (;;) {
                ssize_t r = read(0, line + line_len, 1);
                if (r == 0) {
                    stdin_open = 0;
                    stop_flag = 1;
                    break;
                }
                if (r < 0)
                    break;
                if (line[line_len] == '\n' || line_len + 2 >= sizeof(line)) {
                    line[line_len + (line[line_len] == '\n' ? 0 : 1)] = '\0';
                    command(&st, line);
                    line_len = 0;
                } else {
                    line_len++;
                }
            }
        }
        release(&st, 0);
    }
    release(&st, 1);
    ret = 0;
out_destroy:
    nfq_destroy_queue(st.qh);
out_close:
    nfq_close(h);
out_free:
    free(st.ring);
    return ret;
}
