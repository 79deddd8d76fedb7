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

struct defer {
    pthread_mutex_t lock;
    pthread_cond_t work;         /* a job was queued, or the pool is stopping */
    struct defer_job *head, *tail;  /* protected by lock: queued jobs, oldest first */
    bool accepting;              /* protected by lock: started and not stopping */
    bool stopping;               /* protected by lock */
    unsigned nthreads;           /* immutable */
    unsigned started;            /* workers running; written by start and stop only */
    pthread_t *threads;          /* owned, nthreads of them */
};

/* True in a pool worker: defer_wake() then wakes in place. */
static _Thread_local bool in_pool;

/* Waiters to wake in a worker (defer_wake()). */
struct wake_job {
    struct defer_job job; /* first */
    struct defer_waiter *list;
    int err;
};

static void wake_all(struct defer_waiter *list, int err)
{
    while (list) {
        struct defer_waiter *next = list->next; /* wake() may free or requeue it */

        list->wake(list, err);
        list = next;
    }
}

static void wake_run(struct defer_job *j)
{
    struct wake_job *w = (struct wake_job *)j;

    wake_all(w->list, w->err);
    free(w);
}

static void wake_cancel(struct defer_job *j)
{
    struct wake_job *w = (struct wake_job *)j;

    wake_all(w->list, w->err < 0 ? w->err : -ECANCELED);
    free(w);
}

static void *worker_main(void *arg)
{
    struct defer *d = arg;

    in_pool = true;
    for (;;) {
        struct defer_job *j;

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
int defer_new(unsigned threads, struct defer **out)
{
    struct defer *d = calloc(1, sizeof(*d));

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
void defer_start(struct defer *d)
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
void defer_stop(struct defer *d)
{
    struct defer_job *queued;

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
        struct defer_job *next = queued->next;

        queued->cancel(queued);
        queued = next;
    }
    for (unsigned i = 0; i < d->started; i++)
        pthread_join(d->threads[i], NULL);
    d->started = 0;
}

/* Contract in defer.h. */
void defer_free(struct defer *d)
{
    if (!d)
        return;
    defer_stop(d);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->work);
    free(d->threads);
    free(d);
}

/* Contract in defer.h. */
int defer_submit(struct defer *d, struct defer_job *j)
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
void defer_wake(struct defer *d, struct defer_waiter *list, int err)
{
    struct wake_job *w;

    if (!list)
        return;
    if (!in_pool && (w = malloc(sizeof(*w)))) {
        w->job.run = wake_run;
        w->job.cancel = wake_cancel;
        w->list = list;
        w->err = err;
        if (defer_submit(d, &w->job) == 0)
            return;
        free(w);
    }
    wake_all(list, err);
}
