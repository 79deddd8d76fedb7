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

struct fs_archive;
struct fs_member;

/* Inode tree. Inode numbers are node index + 1; the root is 1 (FUSE_ROOT_ID). */
struct fs_node {
    char *name;            /* owned: one path component ("" for the root) */
    uint64_t parent;       /* inode of the parent directory */
    bool is_dir;
    struct fs_member *member; /* files: borrowed from the archive */
    uint64_t *children;    /* dirs: owned, inode numbers sorted by name */
    size_t nchildren, cap;
    uint32_t nsubdirs;
};

struct fs_tree {
    struct fs_node *nodes; /* owned */
    size_t count, cap;
    size_t skipped;        /* members whose names could not be placed */
};

/* Build the tree for an archive: zip members by their path (directories made
 * from '/'), the gzip member at the root. Names are placed by the rule in
 * README.md (Names). Touches only t and reads a: builds of different
 * archives may run at the same time (lazily opened archives are built in
 * handler threads). Returns 0 or -ENOMEM. */
int fs_tree_build(struct fs_tree *t, struct fs_archive *a);
void fs_tree_destroy(struct fs_tree *t);

/* The node for an inode, or NULL. */
struct fs_node *fs_tree_node(struct fs_tree *t, uint64_t ino);

/* The child of dir called name, or 0. */
uint64_t fs_tree_lookup(struct fs_tree *t, uint64_t dir, const char *name);

#endif
