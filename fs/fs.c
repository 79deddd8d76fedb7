/*
 * What every module of fs/ shares and the process holds once: the mount's
 * counters, the window budget of its indexes, and which threads are
 * readahead workers. Contract in fs.h.
 */
#include "fs.h"

struct fs_counters fs_counters;
atomic_uint_least64_t fs_frontier_moves;
struct dfx_budget fs_window_budget = {.limit = FS_DEFAULT_INDEX_MEM};
_Thread_local bool fs_is_readahead_worker;
