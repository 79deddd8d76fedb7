/*
 * The page notifier: one thread that has the kernel drop the cached pages
 * of a file (a member found damaged, or whose archive changed), so that
 * later reads come to the daemon and fail instead of being answered from
 * pages cached before.
 *
 * Why a thread: fuse_lowlevel_notify_inval_inode() called from a READ
 * handler of the same inode can deadlock (the kernel holds the pages of
 * that read locked until it is answered). So notify_drop() only queues an
 * item, and the thread, which serves no request, sends the notifications.
 *
 * Ownership: a queued item belongs to its container (struct archive_member embeds
 * one), which outlives the notifier; the session is borrowed from
 * notify_start() until notify_quiesce().
 * Locks: one process-wide lock, a leaf: notify_drop() may be called from any
 * thread with any lock held. Every field of struct notify_item is protected
 * by it.
 * Errors: none (a failed notification is logged at debug level).
 * Threads: one, started by notify_start() (FUSE init) and joined by
 * notify_stop() (FUSE destroy), in the serving process. One notifier per
 * process: a process serves one mount.
 */
#ifndef NPYFS_FS_NOTIFY_H
#define NPYFS_FS_NOTIFY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct fuse_session;

/* The queue link of something whose pages can be dropped, embedded in it
 * (a member: m->inval). Zeroed: not queued. */
struct notify_item {
    bool queued;              /* protected by the notifier's lock */
    uint64_t ino;             /* protected by the notifier's lock: set when queued */
    struct notify_item *next; /* protected by the notifier's lock */
    bool counted;             /* protected by the notifier's lock: in *dropped */
};

/* FUSE init: start the thread, which notifies through se (NULL: no thread;
 * drops are then ignored) and counts each file whose pages it dropped in
 * *dropped, once however often (may be NULL). source names the mount in the log line said if
 * the thread cannot start (damage is then still reported by reads that
 * reach the daemon). */
void notify_start(struct fuse_session *se, const char *source, atomic_uint_least64_t *dropped);

/* Have the kernel drop every page of inode ino it cached: queue it (it is
 * the item's, it) unless it is queued already or no notifier runs. Takes
 * only the queue's leaf lock: callable from any thread with any lock held. */
void notify_drop(struct notify_item *it, uint64_t ino);

/* Once the session loop has ended, before the session's fd is closed
 * (fuse_session_unmount()): no notification starts afterwards, and one
 * under way is waited for (a few seconds at most). FUSE destroy, later,
 * joins the thread. */
void notify_quiesce(void);

/* FUSE destroy: stop and join the thread; the queue is dropped (the mount
 * is going away). */
void notify_stop(void);

#endif
