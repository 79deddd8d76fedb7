/*
 * The FUSE request loop (in place of libfuse's fuse_session_loop_mt()): one
 * thread at a time, the leader, reads requests from the device; the others
 * wait on a condition variable, never on the device.
 *
 * Why: libfuse's loop keeps every idle thread asleep in read() on the
 * device, so each request wakes one, and each answer wakes its caller: two
 * wake-ups per round trip, each an interrupt between cores when the two run
 * on different ones. On this project's 2-core VM a round trip cost about
 * 80 us where the handlers took a few, and loading 1000 small members
 * (open, an ioctl for isatty, read, close each) was bound by them.
 *
 * How: after a request other than a READ, the leader keeps reading the
 * device without sleeping (a pause and sched_yield() between tries, so
 * anything else runnable on its core goes first) for up to spin_us, then
 * sleeps in poll(); a caller's next request (the read after an open, the
 * close after it) finds it awake. After a READ it sleeps at once: in a pass
 * over a file the next READ comes once the reader has used the data, and
 * the core is better left to the reader and the decoders. What the leader
 * does with a request:
 * - one that never waits for I/O or a decode (RELEASE, FORGET, FLUSH,
 *   IOCTL, INTERRUPT, STATFS, ACCESS): serves it and reads on;
 * - READ: serves it, and reads on unless the handler called
 *   loop_blocking() before it waited (a chunk not in the cache, a pread):
 *   that hands the device to another thread first;
 * - anything else: hands the device to another thread (an idle one, or a
 *   new one up to max_threads) and serves it.
 * So a handler that waits holds up no other request, as with libfuse's loop.
 *
 * Threads: the caller of loop_run() and up to max_threads - 1 more,
 * started as needed; idle ones beyond a few exit. Locks: one per loop, a
 * leaf, never held while a request is served.
 */
#ifndef NPYFS_FS_LOOP_H
#define NPYFS_FS_LOOP_H

struct fuse_session;

/* Serve se until it ends (unmount, or fuse_session_exit(): libfuse's
 * signal handlers). spin_us 0: the leader sleeps as soon as the device is
 * empty. The device is non-blocking while it runs. Returns 0, or the
 * negative errno of a failed device read. */
int loop_run(struct fuse_session *se, unsigned max_threads, unsigned spin_us);

/* A handler about to wait (for a decode, or I/O) calls this first: if its
 * thread is the leader serving the request itself (a READ), another thread
 * takes over reading the device. Elsewhere it does nothing. */
void loop_blocking(void);

#endif
