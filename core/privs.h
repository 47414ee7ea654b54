/*
 * core/privs.h: changing who a process or a thread is. The network-facing
 * daemon and the virtual delivery helper give up root for good
 * (privs_drop); the local delivery helper stays root and borrows a user's
 * identity per delivery, one thread at a time (privs_thread_become), so it
 * needs no fork per message.
 */
#ifndef FRUGAL_CORE_PRIVS_H
#define FRUGAL_CORE_PRIVS_H

#include <stddef.h>
#include <sys/types.h>

/*
 * For good: supplementary groups set to just gid, real, effective and saved
 * IDs to uid/gid, PR_SET_NO_NEW_PRIVS; then checked (getresuid/getresgid,
 * and setuid(0) must fail). 0, or -1 with err set.
 */
int privs_drop(uid_t uid, gid_t gid, char *err, size_t errlen);

/*
 * This thread only (raw system calls: glibc's wrappers change every thread
 * of the process): become uid/gid with the given supplementary groups, and
 * back. The process must be root (real and saved uid 0). 0 or -1 (errno).
 */
int privs_thread_become(uid_t uid, gid_t gid, const gid_t *groups, int ngroups);
int privs_thread_restore(void);

#endif
