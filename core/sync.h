/*
 * core/sync.h: group commit for worker threads. sync_shared(fd) returns
 * once everything written before the call, by any thread, to the file
 * system holding fd is on stable storage: one syncfs(2) serves every caller
 * that arrived while the previous one ran (leader/follower, as databases do
 * for their log). It replaces fsync/fdatasync of files and directories on
 * the hot paths (spool commit, Maildir delivery), where concurrent callers
 * are the norm and one journal commit for many messages is the speed-up.
 *
 * Call it from worker threads only: it blocks.
 */
#ifndef FRUGAL_CORE_SYNC_H
#define FRUGAL_CORE_SYNC_H

#include <sys/types.h>

int sync_shared(int fd);              /* 0, or -1 with errno */
/* the same, for a caller that knows fd's file system (st_dev): no fstat(2) */
int sync_shared_dev(int fd, dev_t dev);
/*
 * Before forking processes that should share the syncs (the master, for
 * the daemon and the delivery helpers): the state moves to a shared
 * mapping. 0, or -1 (then each process shares among its own threads).
 */
int sync_share_processes(void);
unsigned long sync_shared_calls(void);   /* callers served (for tests and the bench) */
unsigned long sync_shared_syncs(void);   /* syncfs(2) actually issued */
unsigned long sync_shared_idle_wakes(void); /* waiters woken for nothing (for tests: few) */

#endif
