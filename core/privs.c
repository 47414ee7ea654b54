/*
 * core/privs.c: see privs.h. On Linux credentials belong to threads; glibc
 * makes setuid() and friends process-wide by signalling every thread. The
 * per-thread variants call the kernel directly, which is what we want for
 * a worker that writes one mailbox as its owner while its siblings write
 * others.
 */
#include "privs.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int privs_drop(uid_t uid, gid_t gid, char *err, size_t errlen)
{
	uid_t ru, eu, su;
	gid_t rg, eg, sg;

	if (setgroups(1, &gid) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) {
		snprintf(err, errlen, "cannot become uid %ld gid %ld: %s", (long)uid, (long)gid, strerror(errno));
		return -1;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		snprintf(err, errlen, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
		return -1;
	}
	if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0 ||
	    ru != uid || eu != uid || su != uid || rg != gid || eg != gid || sg != gid) {
		snprintf(err, errlen, "identity did not change as asked (uid %ld/%ld/%ld)", (long)ru, (long)eu, (long)su);
		return -1;
	}
	if (uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
		snprintf(err, errlen, "root could be regained after the drop");
		return -1;
	}
	return 0;
}

int privs_thread_become(uid_t uid, gid_t gid, const gid_t *groups, int ngroups)
{
	/* groups and gid first: once the uid is not root, they cannot change */
	if (syscall(SYS_setgroups, (size_t)ngroups, groups) < 0)
		return -1;
	if (syscall(SYS_setresgid, (gid_t)-1, gid, (gid_t)-1) < 0)
		goto undo_groups;
	if (syscall(SYS_setresuid, (uid_t)-1, uid, (uid_t)-1) < 0)
		goto undo_gid;
	return 0;
undo_gid:
	syscall(SYS_setresgid, (gid_t)-1, (gid_t)0, (gid_t)-1);
undo_groups:
	syscall(SYS_setgroups, (size_t)0, NULL);
	return -1;
}

int privs_thread_restore(void)
{
	/* the saved uid is still 0: the effective one may come back */
	if (syscall(SYS_setresuid, (uid_t)-1, (uid_t)0, (uid_t)-1) < 0 ||
	    syscall(SYS_setresgid, (gid_t)-1, (gid_t)0, (gid_t)-1) < 0 ||
	    syscall(SYS_setgroups, (size_t)0, NULL) < 0)
		return -1;
	return 0;
}
