/*
 * The inode tree: a flat array of nodes (inode = index + 1) built once per
 * archive when it is opened (at mount, or on first use in whichever handler
 * thread gets there first: trees of different archives are built at the
 * same time, so the build touches nothing but t) and never changed
 * afterwards, so lookups need no lock. Directories keep their children
 * sorted by name for bsearch.
 *
 * Naming rule (also in README.md): a zip name is split at '/'; empty and '.'
 * components are dropped (so a leading '/' is ignored); a name with a '..'
 * component or a NUL byte is skipped, so nothing can appear outside the
 * mount. When two members have the same path the later one wins, as in
 * np.load. A member whose path runs through an existing file, or a file
 * whose path is already a directory, is skipped. Skipped members still show
 * in `npyfs ls`.
 */
#define _GNU_SOURCE

#include "archive.h"
#include "escape.h"
#include "fs.h"

#include "tree.h"

#include <errno.h>
#include <fuse_log.h>
#include <stdlib.h>
#include <string.h>

/* Contract in tree.h. */
struct tree_node *tree_get(struct tree *t, uint64_t ino)
{
    if (ino == 0 || ino > t->count)
        return NULL;
    return &t->nodes[ino - 1];
}

static int new_node(struct tree *t, uint64_t parent, const char *name, size_t len,
                    bool is_dir, uint64_t *ino)
{
    struct tree_node *n;

    if (fs_grow(&t->nodes, &t->cap, t->count, sizeof(*t->nodes), 64) < 0)
        return -ENOMEM;
    n = &t->nodes[t->count];
    memset(n, 0, sizeof(*n));
    n->name = strndup(name, len);
    if (!n->name)
        return -ENOMEM;
    n->parent = parent;
    n->is_dir = is_dir;
    *ino = ++t->count;
    return 0;
}

/* Append child to dir's list (sorted later by sort_children). */
static int add_child(struct tree *t, uint64_t dir, uint64_t child)
{
    struct tree_node *d = tree_get(t, dir);

    if (fs_grow(&d->children, &d->cap, d->nchildren, sizeof(*d->children), 8) < 0)
        return -ENOMEM;
    d->children[d->nchildren++] = child;
    if (tree_get(t, child)->is_dir)
        d->nsubdirs++;
    return 0;
}

/* Name index used only while building: (parent, name) -> inode, chained.
 * The final tree looks names up by bsearch over sorted children. */
struct name_index {
    uint64_t *heads; /* bucket -> first inode, 0 ends a chain */
    uint64_t *next;  /* inode - 1 -> next inode in its chain */
    size_t nbuckets, cap;
};

static size_t name_hash(uint64_t dir, const char *name, size_t len, size_t nbuckets)
{
    uint64_t h = 1469598103934665603ull ^ dir;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)name[i]) * 1099511628211ull;
    return (size_t)(h & (nbuckets - 1));
}

static uint64_t find_child(struct tree *t, struct name_index *ni, uint64_t dir,
                           const char *name, size_t len)
{
    uint64_t ino = ni->heads[name_hash(dir, name, len, ni->nbuckets)];

    for (; ino; ino = ni->next[ino - 1]) {
        struct tree_node *c = tree_get(t, ino);
        if (c->parent == dir && strlen(c->name) == len && memcmp(c->name, name, len) == 0)
            return ino;
    }
    return 0;
}

static int index_node(struct tree *t, struct name_index *ni, uint64_t ino)
{
    struct tree_node *n = tree_get(t, ino);
    size_t b = name_hash(n->parent, n->name, strlen(n->name), ni->nbuckets);

    if (ino > ni->cap) {
        size_t cap = ni->cap * 2 > ino ? ni->cap * 2 : ino;
        uint64_t *next = realloc(ni->next, cap * sizeof(*next));
        if (!next)
            return -ENOMEM;
        ni->next = next;
        ni->cap = cap;
    }
    ni->next[ino - 1] = ni->heads[b];
    ni->heads[b] = ino;
    return 0;
}

/* May the name be placed at all? No NUL byte and no '..' component. */
static bool name_ok(const char *name, size_t len)
{
    const char *p = name, *end = name + len;

    if (memchr(name, '\0', len))
        return false;
    while (p <= end) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *stop = slash ? slash : end;
        if (stop - p == 2 && p[0] == '.' && p[1] == '.')
            return false;
        if (!slash)
            break;
        p = slash + 1;
    }
    return true;
}

/* Place one member. Returns 0 (placed or skipped) or -ENOMEM. */
static int place(struct tree *t, struct name_index *ni, struct archive_member *m)
{
    const char *p = m->name, *end = m->name + m->name_len;
    const char *last = NULL; /* the last component kept: the member itself */
    uint64_t dir = 1, ino;
    char *shown;
    int ret;

    if (!name_ok(m->name, m->name_len))
        goto skip;
    for (const char *q = p; q < end;) {
        const char *slash = memchr(q, '/', (size_t)(end - q));
        size_t len = slash ? (size_t)(slash - q) : (size_t)(end - q);

        if (len && !(len == 1 && q[0] == '.'))
            last = q;
        q = slash ? slash + 1 : end;
    }
    if (!last && !m->is_dir)
        goto skip; /* "/", ".", "./": no name is left */
    while (p < end) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        size_t len = slash ? (size_t)(slash - p) : (size_t)(end - p);
        bool want_dir = p != last || m->is_dir; /* "a/./." is the file a */
        const char *next = slash ? slash + 1 : end;

        if (len == 0 || (len == 1 && p[0] == '.')) {
            p = next;
            continue;
        }
        ino = find_child(t, ni, dir, p, len);
        if (!ino) {
            ret = new_node(t, dir, p, len, want_dir, &ino);
            if (ret == 0)
                ret = add_child(t, dir, ino);
            if (ret == 0)
                ret = index_node(t, ni, ino);
            if (ret < 0)
                return ret;
        } else if (tree_get(t, ino)->is_dir != want_dir) {
            goto skip;
        }
        if (!want_dir)
            tree_get(t, ino)->member = m; /* a later duplicate wins */
        dir = ino;
        p = next;
    }
    return 0;

skip:
    t->skipped++;
    shown = escape_text_new(m->name, m->name_len); /* a NUL, a control byte */
    fuse_log(FUSE_LOG_WARNING, "npyfs: %s: skipping member '%s': its name cannot be placed\n",
             m->archive ? m->archive->name : "?", shown ? shown : m->name);
    free(shown);
    return 0;
}

/* qsort_r comparator: arg is the tree being built (no shared state: trees
 * of different archives are built at the same time in handler threads). */
static int cmp_child(const void *a, const void *b, void *arg)
{
    struct tree *t = arg;
    const struct tree_node *x = tree_get(t, *(const uint64_t *)a);
    const struct tree_node *y = tree_get(t, *(const uint64_t *)b);
    return strcmp(x->name, y->name);
}

/* Contract in tree.h. */
int tree_init(struct tree *t, struct archive *a)
{
    struct name_index ni = {0};
    uint64_t root;
    int ret;

    memset(t, 0, sizeof(*t));
    ni.nbuckets = 64;
    while (ni.nbuckets < 2 * a->count)
        ni.nbuckets *= 2;
    ni.heads = calloc(ni.nbuckets, sizeof(*ni.heads));
    ret = ni.heads ? new_node(t, 1, "", 0, true, &root) : -ENOMEM;
    for (size_t i = 0; ret == 0 && i < a->count; i++)
        ret = place(t, &ni, &a->members[i]);
    free(ni.heads);
    free(ni.next);
    if (ret < 0) {
        tree_destroy(t);
        return ret;
    }
    for (size_t i = 0; i < t->count; i++)
        if (t->nodes[i].is_dir && t->nodes[i].nchildren > 1)
            qsort_r(t->nodes[i].children, t->nodes[i].nchildren, sizeof(uint64_t), cmp_child, t);
    return 0;
}

void tree_destroy(struct tree *t)
{
    for (size_t i = 0; i < t->count; i++) {
        free(t->nodes[i].name);
        free(t->nodes[i].children);
    }
    free(t->nodes);
    memset(t, 0, sizeof(*t));
}

/* Contract in tree.h. */
uint64_t tree_lookup(struct tree *t, uint64_t dir, const char *name)
{
    struct tree_node *d = tree_get(t, dir);
    size_t lo = 0, hi;

    if (!d || !d->is_dir)
        return 0;
    hi = d->nchildren;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, tree_get(t, d->children[mid])->name);
        if (c == 0)
            return d->children[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return 0;
}
