/*
 * The FUSE request loop. Contract and design in loop.h.
 *
 * The leader sleeps in poll() for at most POLL_MS at a time, so that a
 * session ended by a signal (fuse_session_exit() from libfuse's handler,
 * which wakes no one) is noticed. The first thread to see the end (a read
 * that returns 0 on unmount, or the exit flag) marks the loop done and
 * wakes the waiting ones; loop_run() returns once every thread is gone.
 */
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define POLL_MS 200
/* Idle workers kept waiting; more exit. */
#define MAX_IDLE 4

struct loop {
    struct fuse_session *se;
    int fd;
    unsigned max_threads;
    uint64_t spin_ns;
    pthread_mutex_t lock;
    pthread_cond_t follow; /* idle workers wait here for the leader's place */
    pthread_cond_t gone;   /* a worker exited */
    bool leader;           /* protected by lock: a thread reads the device */
    bool done;             /* protected by lock: the session ended */
    unsigned threads;      /* protected by lock: workers running */
    unsigned idle;         /* protected by lock: workers waiting on follow */
    int error;             /* protected by lock: first read error */
    /* The last request read was not a READ: after a READ, the next request
     * of a pass over a file comes once its reader has used the data, and
     * the core that spinning would take is one it or a decoder needs. */
    atomic_bool spin_ok;
};

static uint64_t now_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

enum kind {
    QUICK,   /* never waits for I/O or a decode: served by the leader */
    INLINE,  /* served by the leader until it calls loop_blocking() */
    HAND_ON, /* served after the leader's place is handed on */
};

static enum kind kind_of(const struct fuse_buf *fbuf)
{
    const struct fuse_in_header *h = fbuf->mem;

    if (fbuf->size < sizeof(*h) || (fbuf->flags & FUSE_BUF_IS_FD))
        return HAND_ON;
    switch (h->opcode) {
    case FUSE_FORGET:
    case FUSE_BATCH_FORGET:
    case FUSE_RELEASE:
    case FUSE_RELEASEDIR:
    case FUSE_FLUSH:
    case FUSE_IOCTL:
    case FUSE_INTERRUPT:
    case FUSE_STATFS:
    case FUSE_ACCESS:
        return QUICK;
    case FUSE_READ:
        return INLINE;
    default:
        return HAND_ON;
    }
}

/* The next request into fbuf: > 0, or 0 when the session ended, or a
 * negative errno. *last is when the leader last saw a request. */
static int next_request(struct loop *l, struct fuse_buf *fbuf, uint64_t *last)
{
    for (;;) {
        int r;

        if (fuse_session_exited(l->se))
            return 0;
        r = fuse_session_receive_buf(l->se, fbuf);
        if (r > 0) {
            *last = now_ns();
            atomic_store_explicit(&l->spin_ok, kind_of(fbuf) != INLINE, memory_order_relaxed);
            return r;
        }
        if (r == 0)
            return 0;
        if (r == -EINTR)
            continue;
        if (r != -EAGAIN)
            return r;
        if (atomic_load_explicit(&l->spin_ok, memory_order_relaxed) &&
            now_ns() - *last < l->spin_ns) {
            /* let anything else runnable on this core go first */
            cpu_relax();
            sched_yield();
            continue;
        }
        {
            struct pollfd p = {.fd = l->fd, .events = POLLIN};

            if (poll(&p, 1, POLL_MS) > 0)
                *last = now_ns(); /* woken: a burst may be starting */
        }
    }
}

/* The loop whose leader this thread is while it serves an INLINE request
 * (NULL otherwise, and once loop_blocking() handed the place on). */
static _Thread_local struct loop *serving_inline;

static void *worker(void *arg);

/* With lock held: another thread takes the leader's place: an idle worker,
 * or a new one if there is none and the cap allows. */
static void hand_on(struct loop *l)
{
    pthread_t t;
    pthread_attr_t attr;

    if (l->idle > 0) {
        pthread_cond_signal(&l->follow);
        return;
    }
    if (l->threads >= l->max_threads)
        return; /* the next thread to finish a request reads on */
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, worker, l) == 0)
        l->threads++;
    pthread_attr_destroy(&attr);
}

/* A worker's life; the calling thread's (first) stays until the end. */
static void work(struct loop *l, bool first)
{
    struct fuse_buf fbuf = {.mem = NULL};
    uint64_t last = now_ns();

    pthread_mutex_lock(&l->lock);
    for (;;) {
        enum kind k = HAND_ON;
        int r;

        while (l->leader && !l->done) {
            if (l->idle >= MAX_IDLE && !first)
                goto out;
            l->idle++;
            pthread_cond_wait(&l->follow, &l->lock);
            l->idle--;
        }
        if (l->done)
            break;
        l->leader = true;
        pthread_mutex_unlock(&l->lock);
        for (;;) {
            r = next_request(l, &fbuf, &last);
            if (r <= 0 || (k = kind_of(&fbuf)) == HAND_ON)
                break;
            serving_inline = k == INLINE ? l : NULL;
            fuse_session_process_buf(l->se, &fbuf);
            if (k == INLINE && !serving_inline)
                break; /* handed on by loop_blocking(): no longer the leader */
            serving_inline = NULL;
        }
        if (r > 0 && k == INLINE) {
            last = now_ns();
            pthread_mutex_lock(&l->lock);
            continue;
        }
        pthread_mutex_lock(&l->lock);
        l->leader = false;
        if (r <= 0) {
            if (r < 0 && !l->error)
                l->error = r;
            l->done = true;
            pthread_cond_broadcast(&l->follow);
            break;
        }
        hand_on(l);
        pthread_mutex_unlock(&l->lock);
        fuse_session_process_buf(l->se, &fbuf);
        last = now_ns();
        pthread_mutex_lock(&l->lock);
    }
out:
    l->threads--;
    pthread_cond_broadcast(&l->gone);
    pthread_mutex_unlock(&l->lock);
    free(fbuf.mem);
}

/* Contract in loop.h. */
void loop_blocking(void)
{
    struct loop *l = serving_inline;

    if (!l)
        return;
    serving_inline = NULL;
    pthread_mutex_lock(&l->lock);
    l->leader = false;
    hand_on(l);
    pthread_mutex_unlock(&l->lock);
}

static void *worker(void *arg)
{
    work(arg, false);
    return NULL;
}

/* Contract in loop.h. */
int loop_run(struct fuse_session *se, unsigned max_threads, unsigned spin_us)
{
    struct loop l = {.se = se, .fd = fuse_session_fd(se), .max_threads = max_threads ? max_threads : 1,
                     .spin_ns = (uint64_t)spin_us * 1000u, .threads = 1};
    int fl = fcntl(l.fd, F_GETFL), ret;

    if (fl < 0 || fcntl(l.fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    pthread_mutex_init(&l.lock, NULL);
    pthread_cond_init(&l.follow, NULL);
    pthread_cond_init(&l.gone, NULL);
    /* the calling thread is the first worker; it returns once every other
     * one has exited */
    work(&l, true);
    pthread_mutex_lock(&l.lock);
    while (l.threads > 0)
        pthread_cond_wait(&l.gone, &l.lock);
    ret = l.error;
    pthread_mutex_unlock(&l.lock);
    pthread_cond_destroy(&l.gone);
    pthread_cond_destroy(&l.follow);
    pthread_mutex_destroy(&l.lock);
    fcntl(l.fd, F_SETFL, fl);
    return ret;
}
