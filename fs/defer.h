/*
 * The opener pool (defer.c): a few threads that do the slow work a FUSE
 * handler must not wait for (opening a unit, which may size a gzip file by a
 * full pass or touch a slow file system; a full verification pass an open
 * waits for). libfuse lets a handler return without replying and reply later
 * from another thread: a request that needs such work is queued as an
 * defer_waiter on it, and the work wakes its waiters when done. Started at FUSE
 * init and joined at destroy, in the serving process (threads do not survive
 * fork). No FUSE in here.
 *
 * Ownership: waiters and jobs belong to whoever queued them; each waiter is
 * woken, each job run() or cancel()ed, exactly once.
 * Locks: the pool's queue lock, a leaf; jobs run with no lock held.
 * Errors: -ENOMEM, -EAGAIN (no workers), -ECANCELED (stopping).
 * Threads: DEFER_THREADS per mount, started at FUSE init, joined at
 * destroy.
 */
#ifndef NPYFS_FS_DEFER_H
#define NPYFS_FS_DEFER_H

struct defer;

/* A request waiting for some work. Owned by whoever queued it; the work
 * calls wake() exactly once, after unlinking it (next is the list link of the
 * work it waits on). */
struct defer_waiter {
    struct defer_waiter *next;
    void (*wake)(struct defer_waiter *w, int err);
};

/* A job for the pool. Embedded in its owner's struct; run() or, if the pool
 * stops before it ran, cancel() is called exactly once, in a pool thread or
 * in defer_stop()'s caller; either must wake the job's waiters. */
struct defer_job {
    struct defer_job *next; /* queue link, private to defer.c */
    void (*run)(struct defer_job *j);
    void (*cancel)(struct defer_job *j);
};

/* A pool of threads workers, not started. Returns 0 or -ENOMEM. */
int defer_new(unsigned threads, struct defer **out);
/* Start the workers (FUSE init). If none can start, submissions are refused
 * with -EAGAIN and callers do the work themselves. Accepts NULL. */
void defer_start(struct defer *d);
/* Refuse further jobs (-ECANCELED), cancel() the queued ones, join the
 * workers (running jobs must end promptly: they check their stop flags).
 * Accepts NULL; idempotent. */
void defer_stop(struct defer *d);
/* Accepts NULL; stops first. */
void defer_free(struct defer *d);
/* Queue j for a worker. Returns 0, -EAGAIN (no workers: not started, or
 * none could start) or -ECANCELED (stopping): then j is not queued. Accepts
 * NULL d (-EAGAIN). Thread-safe. */
int defer_submit(struct defer *d, struct defer_job *j);
/* Call wake(w, err) for each waiter of list: here if the caller is a pool
 * worker or the pool cannot take the job, else in a worker (so a thread at
 * idle priority, such as the background indexer, never answers requests).
 * Accepts NULL d and an empty list. Thread-safe. */
void defer_wake(struct defer *d, struct defer_waiter *list, int err);
/* Opener threads per mount. */
#define DEFER_THREADS 4

/* Returned (positive) by a call that cannot answer yet: the request must
 * wait for something slow (a unit to be opened, a full pass over a member),
 * which the caller queues it on (vfs_await(), indexer_await()) so
 * that no handler thread waits. */
#define DEFER_WAIT 1

#endif
