/*
 * The opener pool (defer.c): a few threads that do the slow work a FUSE
 * handler must not wait for (opening a unit, which may size a gzip file by a
 * full pass or touch a slow file system; a full verification pass an open
 * waits for). libfuse lets a handler return without replying and reply later
 * from another thread: a request that needs such work is queued as an
 * fs_waiter on it, and the work wakes its waiters when done. Started at FUSE
 * init and joined at destroy, in the serving process (threads do not survive
 * fork). No FUSE in here.
 *
 * Ownership: waiters and jobs belong to whoever queued them; each waiter is
 * woken, each job run() or cancel()ed, exactly once.
 * Locks: the pool's queue lock, a leaf; jobs run with no lock held.
 * Errors: -ENOMEM, -EAGAIN (no workers), -ECANCELED (stopping).
 * Threads: FS_DEFER_THREADS per mount, started at FUSE init, joined at
 * destroy.
 */
#ifndef NPYFS_FS_DEFER_H
#define NPYFS_FS_DEFER_H

struct fs_defer;

/* A request waiting for some work. Owned by whoever queued it; the work
 * calls wake() exactly once, after unlinking it (next is the list link of the
 * work it waits on). */
struct fs_waiter {
    struct fs_waiter *next;
    void (*wake)(struct fs_waiter *w, int err);
};

/* A job for the pool. Embedded in its owner's struct; run() or, if the pool
 * stops before it ran, cancel() is called exactly once, in a pool thread or
 * in fs_defer_stop()'s caller; either must wake the job's waiters. */
struct fs_job {
    struct fs_job *next; /* queue link, private to defer.c */
    void (*run)(struct fs_job *j);
    void (*cancel)(struct fs_job *j);
};

/* A pool of threads workers, not started. Returns 0 or -ENOMEM. */
int fs_defer_new(unsigned threads, struct fs_defer **out);
/* Start the workers (FUSE init). If none can start, submissions are refused
 * with -EAGAIN and callers do the work themselves. Accepts NULL. */
void fs_defer_start(struct fs_defer *d);
/* Refuse further jobs (-ECANCELED), cancel() the queued ones, join the
 * workers (running jobs must end promptly: they check their stop flags).
 * Accepts NULL; idempotent. */
void fs_defer_stop(struct fs_defer *d);
/* Accepts NULL; stops first. */
void fs_defer_free(struct fs_defer *d);
/* Queue j for a worker. Returns 0, -EAGAIN (no workers: not started, or
 * none could start) or -ECANCELED (stopping): then j is not queued. Accepts
 * NULL d (-EAGAIN). Thread-safe. */
int fs_defer_submit(struct fs_defer *d, struct fs_job *j);
/* Call wake(w, err) for each waiter of list: here if the caller is a pool
 * worker or the pool cannot take the job, else in a worker (so a thread at
 * idle priority, such as the background indexer, never answers requests).
 * Accepts NULL d and an empty list. Thread-safe. */
void fs_defer_wake(struct fs_defer *d, struct fs_waiter *list, int err);
/* Opener threads per mount. */
#define FS_DEFER_THREADS 4

/* Returned (positive) by a call that cannot answer yet: the request must
 * wait for something slow (a unit to be opened, a full pass over a member),
 * which the caller queues it on (fs_vfs_await(), fs_indexer_await()) so
 * that no handler thread waits. */
#define FS_WAIT 1

#endif
