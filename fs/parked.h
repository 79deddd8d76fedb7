/*
 * Parked decoders: the process-wide bounded set of decoders that readers
 * left where they stopped, for the next sequential read of the same member
 * to continue from instead of starting again at an access point.
 *
 * Each member has PARKED_PER_MEMBER slots (struct parked_slot, embedded in
 * it); the whole process holds at most PARKED_TOTAL parked decoders: a
 * mount with thousands of open files would otherwise hold about 200 KiB
 * per parked decoder, up to four per file. The used slots of every member
 * form one list, least recently parked first; parking one more past the
 * bound takes out the oldest, whichever member holds it.
 *
 * Ownership: a parked decoder is owned by its slot until taken out; one
 * taken out (parked_put()'s, parked_take()'s, parked_take_all()'s) is the
 * caller's, to use or free outside its locks.
 * Locks: one process-wide mutex, a leaf, taken with a member's lock held
 * (never a member's lock under it), so parking can drop another member's
 * decoder. Every field of struct parked_slot is protected by it.
 * Errors: none.
 */
#ifndef NPYFS_FS_PARKED_H
#define NPYFS_FS_PARKED_H

#include <stdbool.h>
#include <stdint.h>

struct dfx_reader;

/* Decoders parked per member for sequential readers to continue from. */
#define PARKED_PER_MEMBER 4
/* Decoders parked in the whole mount (about 200 KiB each: z_stream state,
 * 32 KiB window, 64 KiB input buffer, ISA-L state; 110 KiB more once one
 * has recorded points with ISA-L, dfx.h): parking one more drops the least
 * recently parked, whichever member holds it. */
#define PARKED_TOTAL 64

/* A slot for one parked decoder of a member. */
struct parked_slot {
    struct dfx_reader *r;              /* owned; NULL: the slot is free */
    struct parked_slot *older, *newer; /* the list of used slots of every member,
                                        * least recently parked first */
};

/* Decoders parked in the whole process now (at most PARKED_TOTAL). */
unsigned parked_count(void);

/* Park r in one of slots[PARKED_PER_MEMBER] as the most recently parked: a
 * free slot; if none, the slot whose decoder is furthest back (its decoder
 * is returned); else, if the process holds PARKED_TOTAL, the least
 * recently parked decoder of any member is taken out and returned. Returns
 * the decoder the caller must free (outside its locks), or NULL. */
struct dfx_reader *parked_put(struct parked_slot *slots, struct dfx_reader *r);

/* Take out the decoder furthest along among those of slots whose position
 * ok(pos, arg) accepts (ties: the first slot), or NULL. ok runs under the
 * registry lock and must take no lock. */
struct dfx_reader *parked_take(struct parked_slot *slots, bool (*ok)(uint64_t pos, void *arg),
                               void *arg);

/* Take out every decoder of slots into drop[PARKED_PER_MEMBER]; returns how
 * many. */
int parked_take_all(struct parked_slot *slots, struct dfx_reader **drop);

#endif
