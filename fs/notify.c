/*
 * The page notifier. Contract in notify.h.
 *
 * A queue of items (linked through the items themselves, so queuing never
 * allocates; an item is queued at most once at a time) under a leaf lock,
 * and the thread that empties it.
 */
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE
#include "notify.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

static struct {
    pthread_mutex_t lock;
    pthread_cond_t work;        /* signalled when the queue grows or stop is set */
    pthread_cond_t done;        /* broadcast when a notification returns */
    struct notify_item *head, *tail; /* protected by lock */
    bool running, stop;         /* protected by lock */
    bool sending;               /* protected by lock: a notification is in the kernel */
    struct fuse_session *se;    /* immutable while running */
    atomic_uint_least64_t *dropped; /* immutable while running; may be NULL */
    pthread_t thread;
} notifier = {.lock = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER,
              .done = PTHREAD_COND_INITIALIZER};

/* How long notify_quiesce() waits for a notification in the kernel. */
#define QUIESCE_SECONDS 5

/* Contract in notify.h. */
void notify_drop(struct notify_item *it, uint64_t ino)
{
    pthread_mutex_lock(&notifier.lock);
    if (notifier.running && !notifier.stop && !it->queued) {
        it->queued = true;
        it->ino = ino;
        it->next = NULL;
        if (notifier.tail)
            notifier.tail->next = it;
        else
            notifier.head = it;
        notifier.tail = it;
        pthread_cond_signal(&notifier.work);
    }
    pthread_mutex_unlock(&notifier.lock);
}

static void *notifier_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&notifier.lock);
    for (;;) {
        struct notify_item *it;
        uint64_t ino;
        int ret;

        while (!notifier.head && !notifier.stop)
            pthread_cond_wait(&notifier.work, &notifier.lock);
        if (notifier.stop)
            break;
        it = notifier.head;
        notifier.head = it->next;
        if (!notifier.head)
            notifier.tail = NULL;
        it->queued = false; /* damage found from here on queues it again */
        ino = it->ino;
        notifier.sending = true; /* stop was not set: the session's fd is open */
        pthread_mutex_unlock(&notifier.lock);

        /* Off 0, length 0: every page. The kernel drops them before the
         * call returns, waiting for reads of the file in flight: this
         * thread serves none. -ENOENT: the kernel forgot the inode, so it
         * has no pages of it. */
        ret = fuse_lowlevel_notify_inval_inode(notifier.se, ino, 0, 0);
        if (ret != 0 && ret != -ENOENT)
            fuse_log(FUSE_LOG_DEBUG, "npyfs: cannot drop the cached pages of inode %llu: %d\n",
                     (unsigned long long)ino, ret);
        pthread_mutex_lock(&notifier.lock);
        if (ret == 0 && notifier.dropped && !it->counted) { /* files, not drops */
            it->counted = true;
            atomic_fetch_add_explicit(notifier.dropped, 1, memory_order_relaxed);
        }
        notifier.sending = false;
        pthread_cond_broadcast(&notifier.done);
    }
    pthread_mutex_unlock(&notifier.lock);
    return NULL;
}

/* Contract in notify.h. */
void notify_start(struct fuse_session *se, const char *source, atomic_uint_least64_t *dropped)
{
    char err[128];
    int ret;

    if (!se)
        return;
    pthread_mutex_lock(&notifier.lock);
    notifier.se = se;
    notifier.dropped = dropped;
    notifier.stop = false;
    ret = pthread_create(&notifier.thread, NULL, notifier_main, NULL);
    notifier.running = ret == 0;
    pthread_mutex_unlock(&notifier.lock);
    if (ret)
        fuse_log(FUSE_LOG_ERR, "npyfs: %s: cannot start the page notifier (%s); damaged "
                 "members' pages already cached by the kernel stay readable\n",
                 source, strerror_r(ret, err, sizeof(err)));
}

/* Contract in notify.h. A notification in the kernel may wait for reads of
 * its file in flight, which, once the loop has ended, only the fd's close
 * aborts: so the wait is bounded. A write under way when the fd closes
 * still completes on the file it started on; none starts after stop. */
void notify_quiesce(void)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += QUIESCE_SECONDS;
    pthread_mutex_lock(&notifier.lock);
    notifier.stop = true;
    pthread_cond_signal(&notifier.work);
    while (notifier.sending &&
           pthread_cond_timedwait(&notifier.done, &notifier.lock, &until) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&notifier.lock);
}

/* Contract in notify.h. */
void notify_stop(void)
{
    bool join;

    pthread_mutex_lock(&notifier.lock);
    join = notifier.running;
    notifier.stop = true;
    pthread_cond_signal(&notifier.work);
    pthread_mutex_unlock(&notifier.lock);
    if (join)
        pthread_join(notifier.thread, NULL);
    pthread_mutex_lock(&notifier.lock);
    while (notifier.head) {
        notifier.head->queued = false;
        notifier.head = notifier.head->next;
    }
    notifier.tail = NULL;
    notifier.running = false;
    pthread_mutex_unlock(&notifier.lock);
}
