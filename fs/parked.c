/*
 * The parked decoders of every member. Contract in parked.h.
 */
#include "parked.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "dfx.h"

static pthread_mutex_t parked_lock = PTHREAD_MUTEX_INITIALIZER;
static struct parked_slot *parked_oldest, *parked_newest; /* protected by parked_lock */
static atomic_uint parked_total; /* written under parked_lock: used slots */

/* Take the decoder out of used slot p. parked_lock held. */
static struct dfx_reader *slot_take(struct parked_slot *p)
{
    struct dfx_reader *r = p->r;

    if (p->older)
        p->older->newer = p->newer;
    else
        parked_oldest = p->newer;
    if (p->newer)
        p->newer->older = p->older;
    else
        parked_newest = p->older;
    p->older = p->newer = NULL;
    p->r = NULL;
    atomic_store_explicit(&parked_total, atomic_load_explicit(&parked_total,
                          memory_order_relaxed) - 1, memory_order_relaxed);
    return r;
}

/* Park r in free slot p, as the most recent. parked_lock held. */
static void slot_put(struct parked_slot *p, struct dfx_reader *r)
{
    p->r = r;
    p->older = parked_newest;
    p->newer = NULL;
    if (parked_newest)
        parked_newest->newer = p;
    else
        parked_oldest = p;
    parked_newest = p;
    atomic_store_explicit(&parked_total, atomic_load_explicit(&parked_total,
                          memory_order_relaxed) + 1, memory_order_relaxed);
}

/* Contract in parked.h. */
unsigned parked_count(void)
{
    return atomic_load_explicit(&parked_total, memory_order_relaxed);
}

/* Contract in parked.h. */
struct dfx_reader *parked_put(struct parked_slot *slots, struct dfx_reader *r)
{
    struct dfx_reader *old = NULL;
    int slot = -1;

    pthread_mutex_lock(&parked_lock);
    for (int i = 0; i < PARKED_PER_MEMBER && slot < 0; i++)
        if (!slots[i].r)
            slot = i;
    if (slot < 0) {
        slot = 0;
        for (int i = 1; i < PARKED_PER_MEMBER; i++)
            if (dfx_reader_pos(slots[i].r) < dfx_reader_pos(slots[slot].r))
                slot = i;
        old = slot_take(&slots[slot]);
    } else if (atomic_load_explicit(&parked_total, memory_order_relaxed) >= PARKED_TOTAL) {
        old = slot_take(parked_oldest);
    }
    slot_put(&slots[slot], r);
    pthread_mutex_unlock(&parked_lock);
    return old;
}

/* Contract in parked.h. */
struct dfx_reader *parked_take(struct parked_slot *slots, bool (*ok)(uint64_t pos, void *arg),
                               void *arg)
{
    struct dfx_reader *r = NULL;
    uint64_t best_pos = 0;
    int best = -1;

    pthread_mutex_lock(&parked_lock);
    for (int i = 0; i < PARKED_PER_MEMBER; i++) {
        uint64_t pos;

        if (!slots[i].r)
            continue;
        pos = dfx_reader_pos(slots[i].r);
        if (!ok(pos, arg))
            continue;
        if (best < 0 || pos > best_pos) {
            best = i;
            best_pos = pos;
        }
    }
    if (best >= 0)
        r = slot_take(&slots[best]);
    pthread_mutex_unlock(&parked_lock);
    return r;
}

/* Contract in parked.h. */
int parked_take_all(struct parked_slot *slots, struct dfx_reader **drop)
{
    int n = 0;

    pthread_mutex_lock(&parked_lock);
    for (int i = 0; i < PARKED_PER_MEMBER; i++)
        if (slots[i].r)
            drop[n++] = slot_take(&slots[i]);
    pthread_mutex_unlock(&parked_lock);
    return n;
}
