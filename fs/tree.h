/*
 * One archive's tree of members by path.
 *
 * Ownership: a tree owns its nodes and their names; members are borrowed
 * from the archive, which outlives the tree.
 * Locks: none: built by one thread, immutable afterwards.
 * Errors: -ENOMEM.
 */
#ifndef NPYFS_FS_TREE_H
#define NPYFS_FS_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct archive;
struct archive_member;

/* Inode tree. Inode numbers are node index + 1; the root is 1 (FUSE_ROOT_ID). */
struct tree_node {
    char *name;            /* owned: one path component ("" for the root) */
    uint64_t parent;       /* inode of the parent directory */
    bool is_dir;
    struct archive_member *member; /* files: borrowed from the archive */
    uint64_t *children;    /* dirs: owned, inode numbers sorted by name */
    size_t nchildren, cap;
    uint32_t nsubdirs;
};

struct tree {
    struct tree_node *nodes; /* owned */
    size_t count, cap;
    size_t skipped;        /* members whose names could not be placed */
};

/* Build the tree for an archive: zip members by their path (directories made
 * from '/'), the gzip member at the root. Names are placed by the rule in
 * README.md (Names). Touches only t and reads a: builds of different
 * archives may run at the same time (lazily opened archives are built in
 * handler threads). Returns 0 or -ENOMEM. */
int tree_init(struct tree *t, struct archive *a);
void tree_destroy(struct tree *t);

/* The node for an inode, or NULL. */
struct tree_node *tree_get(struct tree *t, uint64_t ino);

/* The child of dir called name, or 0. */
uint64_t tree_lookup(struct tree *t, uint64_t dir, const char *name);

#endif
