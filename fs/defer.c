/*
 * The opener pool: a few threads for the slow work FUSE handlers hand over
 * instead of doing it themselves (contract in defer.h).
 *
 * A FIFO of jobs under one lock; workers pop and run them with no lock held.
 * Stopping refuses new jobs, cancels the queued ones in the stopper's thread
 * and joins the workers, which finish the job in hand first (each job checks
 * its own stop flag, raised before the pool is stopped).
 */
#define _GNU_SOURCE


#include "defer.h"

#include <errno.h>
#include <fuse_log.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct fs_defer {
    pthread_mutex_t lock;
    pthread_cond_t work;         /* a job was queued, or the pool is stopping */
    struct fs_job *head, *tail;  /* protected by lock: queued jobs, oldest first */
    bool accepting;              /* protected by lock: started and not stopping */
    bool stopping;               /* protected by lock */
    unsigned nthreads;           /* immutable */
    unsigned started;            /* workers running; written by start and stop only */
    pthread_t *threads;          /* owned, nthreads of them */
};

/* True in a pool worker: fs_defer_wake() then wakes in place. */
static _Thread_local bool in_pool;

/* Waiters to wake in a worker (fs_defer_wake()). */
struct wake_job {
    struct fs_job job; /* first */
    struct fs_waiter *list;
    int err;
};

static void wake_all(struct fs_waiter *list, int err)
{
    while (list) {
        struct fs_waiter *next = list->next; /* wake() may free or requeue it */

        list->wake(list, err);
        list = next;
    }
}

static void wake_run(struct fs_job *j)
{
    struct wake_job *w = (struct wake_job *)j;

    wake_all(w->list, w->err);
    free(w);
}

static void wake_cancel(struct fs_job *j)
{
    struct wake_job *w = (struct wake_job *)j;

    wake_all(w->list, w->err < 0 ? w->err : -ECANCELED);
    free(w);
}

static void *worker_main(void *arg)
{
    struct fs_defer *d = arg;

    in_pool = true;
    for (;;) {
        struct fs_job *j;

        pthread_mutex_lock(&d->lock);
        while (!d->head && !d->stopping)
            pthread_cond_wait(&d->work, &d->lock);
        j = d->head;
        if (j) {
            d->head = j->next;
            if (!d->head)
                d->tail = NULL;
        }
        pthread_mutex_unlock(&d->lock);
        if (!j)
            return NULL;
        j->run(j);
    }
}

/* Contract in defer.h. */
int fs_defer_new(unsigned threads, struct fs_defer **out)
{
    struct fs_defer *d = calloc(1, sizeof(*d));

    *out = NULL;
    if (!d)
        return -ENOMEM;
    d->threads = calloc(threads ? threads : 1, sizeof(*d->threads));
    if (!d->threads) {
        free(d);
        return -ENOMEM;
    }
    d->nthreads = threads;
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->work, NULL);
    *out = d;
    return 0;
}

/* Contract in defer.h. */
void fs_defer_start(struct fs_defer *d)
{
    int ret = 0;

    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    if (d->started || d->stopping) {
        pthread_mutex_unlock(&d->lock);
        return;
    }
    pthread_mutex_unlock(&d->lock);
    while (d->started < d->nthreads) {
        ret = pthread_create(&d->threads[d->started], NULL, worker_main, d);
        if (ret)
            break;
        d->started++;
    }
    if (ret) {
        char buf[64];

        fuse_log(FUSE_LOG_ERR, "npyfs: cannot start opener threads (%s); %s\n",
                 strerror_r(ret, buf, sizeof(buf)),
                 d->started ? "going on with fewer" : "slow opens will hold request threads");
    }
    pthread_mutex_lock(&d->lock);
    d->accepting = d->started > 0;
    pthread_mutex_unlock(&d->lock);
}

/* Contract in defer.h. */
void fs_defer_stop(struct fs_defer *d)
{
    struct fs_job *queued;

    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    d->accepting = false;
    d->stopping = true;
    queued = d->head;
    d->head = d->tail = NULL;
    pthread_cond_broadcast(&d->work);
    pthread_mutex_unlock(&d->lock);
    while (queued) {
        struct fs_job *next = queued->next;

        queued->cancel(queued);
        queued = next;
    }
    for (unsigned i = 0; i < d->started; i++)
        pthread_join(d->threads[i], NULL);
    d->started = 0;
}

/* Contract in defer.h. */
void fs_defer_free(struct fs_defer *d)
{
    if (!d)
        return;
    fs_defer_stop(d);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->work);
    free(d->threads);
    free(d);
}

/* Contract in defer.h. */
int fs_defer_submit(struct fs_defer *d, struct fs_job *j)
{
    int ret = 0;

    if (!d)
        return -EAGAIN;
    pthread_mutex_lock(&d->lock);
    if (!d->accepting) {
        ret = d->stopping ? -ECANCELED : -EAGAIN;
    } else {
        j->next = NULL;
        if (d->tail)
            d->tail->next = j;
        else
            d->head = j;
        d->tail = j;
        pthread_cond_signal(&d->work);
    }
    pthread_mutex_unlock(&d->lock);
    return ret;
}

/* Contract in defer.h. */
void fs_defer_wake(struct fs_defer *d, struct fs_waiter *list, int err)
{
    struct wake_job *w;

    if (!list)
        return;
    if (!in_pool && (w = malloc(sizeof(*w)))) {
        w->job.run = wake_run;
        w->job.cancel = wake_cancel;
        w->list = list;
        w->err = err;
        if (fs_defer_submit(d, &w->job) == 0)
            return;
        free(w);
    }
    wake_all(list, err);
}
