/*
 * The help texts: `npyfs --help`, `npyfs COMMAND --help`, and the one line
 * a usage error prints.
 *
 * Ownership: the texts are constants.
 * Locks: none (the CLI, one thread).
 * Errors: none; usage_die() exits with status 1.
 */
#ifndef NPYFS_FS_USAGE_H
#define NPYFS_FS_USAGE_H

#include <stdbool.h>

/* `npyfs --help`: every command, flag and -o option (the "  NAME=VALUE"
 * lines are also the list of our -o options that options.c suggests names
 * from, which test_system.py keeps in step with the man page and README). */
extern const char usage_text[];

/* "npyfs: <message> (see npyfs --help)" on stderr, then exit(1). */
__attribute__((format(printf, 1, 2), noreturn)) void usage_die(const char *fmt, ...);

/* `npyfs COMMAND ... --help` (or -h anywhere after COMMAND, argc/argv:
 * what follows COMMAND): print its usage to stdout and return true; false
 * if help was not asked for, or COMMAND has none. */
bool usage_command_help(const char *cmd, int argc, char **argv);

#endif
