/*
 * postdrop.c: frugal-postdrop, the set-group-ID helper of local submission
 * (Postfix's postdrop(1)); the one exception to the one-binary rule. It
 * runs with the caller's user ID and the group setgid_group, which alone
 * may write the queue's maildrop/ directory (mode 1730, like Postfix's).
 *
 * What it does, and nothing else: reads one maildrop stream
 * (queue/drop.h) on stdin, checks it as it copies it into a temporary
 * file in MAILDROP, and only once the stream ended with its end record:
 * fsync, rename to the final name, syncfs (the directory entry: the group
 * may not open the directory for reading, so it cannot fsync it; syncfs
 * through the file covers it). Exit 0 means the message is on stable
 * storage. Any failure removes the temporary file and exits 75
 * (EX_TEMPFAIL) or 65 (EX_DATAERR: the stream was malformed). A helper
 * killed midway leaves only a dot-file the daemon never reads (and removes
 * after an hour).
 *
 * `frugal-postdrop -q MAILDROP` instead leaves a mailq request (a fixed
 * body, no message, no stdin; queue/drop.h) for the daemon, which answers
 * with $queue_directory/status/mailq: how `mailq` works for users who may
 * not read the queue. Not synced: a request lost to a crash is only a
 * listing not shown.
 *
 * It trusts nothing from the caller: the environment is cleared, the only
 * argument is a directory that must look like a maildrop (a directory, sticky,
 * nothing for others, group the helper's own), and no configuration is read.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "queue/drop.h"

/* the power-loss test's negative control (build/nosync/frugal-postdrop): never installed */
#ifdef FRUGAL_TEST_NO_SYNC
#define fsync(fd)  ((void)(fd), 0)
#define syncfs(fd) ((void)(fd), 0)
#endif

#define EX_DATAERR  65
#define EX_USAGE    64
#define EX_TEMPFAIL 75

static int out_fd = -1;

static int write_all(int fd, const char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		if ((w = write(fd, p, n)) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static char buf[65536];
	char tmp[112], name[96];
	struct drop_parser dp;
	struct stat st;
	struct timeval tv;
	unsigned int rnd = 0;
	gid_t egid = getegid();
	ssize_t r;
	int dfd, rc = EX_TEMPFAIL, req = 0;
	const char *why = NULL, *dir;

	/* nothing of the caller's beyond its user ID and stdio */
	clearenv();
	umask(077);
	signal(SIGXFSZ, SIG_IGN);   /* a caller's RLIMIT_FSIZE is an error return, not a kill */
	signal(SIGPIPE, SIG_IGN);
	/* the group for good (real, effective, saved), no way to gain more */
	if (setresgid(egid, egid, egid) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		fprintf(stderr, "frugal-postdrop: cannot drop privileges: %s\n", strerror(errno));
		return EX_TEMPFAIL;
	}
	if (argc == 3 && strcmp(argv[1], "-q") == 0)
		req = 1;
	else if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: frugal-postdrop MAILDROP_DIRECTORY < drop-stream\n"
		    "       frugal-postdrop -q MAILDROP_DIRECTORY\n");
		return EX_USAGE;
	}
	dir = argv[argc - 1];
	dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fstat(dfd, &st) < 0) {
		fprintf(stderr, "frugal-postdrop: %s: %s%s\n", dir, strerror(errno),
		    errno == ENOENT ? " (the queue is laid out when frugal serve first starts)" : "");
		return EX_TEMPFAIL;
	}
	/* the only directories this group can write are maildrops; refuse anything else */
	if (!S_ISDIR(st.st_mode) || !(st.st_mode & S_ISVTX) || (st.st_mode & 07) != 0 ||
	    (st.st_gid != egid && st.st_uid != getuid() && getuid() != 0)) {
		fprintf(stderr, "frugal-postdrop: %s: not a maildrop directory (want mode 1730, group %u)\n",
		    dir, (unsigned)egid);
		return EX_TEMPFAIL;
	}
	gettimeofday(&tv, NULL);
	if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
		rnd ^= (unsigned)tv.tv_usec * 2654435761u;
	snprintf(name, sizeof name, "%s%lx.%05lx.%x.%08x", req ? DROP_REQ_PREFIX : "",
	    (unsigned long)tv.tv_sec, (unsigned long)tv.tv_usec, (unsigned)getpid(), rnd);
	snprintf(tmp, sizeof tmp, ".tmp.%s", name);
	if ((out_fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0) {
		fprintf(stderr, "frugal-postdrop: cannot create a file in %s: %s\n", dir, strerror(errno));
		return EX_TEMPFAIL;
	}
	if (req) {
		/* renamed in whole, so the daemon (inotify IN_MOVED_TO) never sees it half written */
		if (write_all(out_fd, DROP_REQ_BODY, sizeof DROP_REQ_BODY - 1) < 0 ||
		    fchmod(out_fd, 0444) < 0 || renameat(dfd, tmp, dfd, name) < 0) {
			fprintf(stderr, "frugal-postdrop: cannot leave a mailq request in %s: %s\n", dir,
			    strerror(errno));
			unlinkat(dfd, tmp, 0);
			return EX_TEMPFAIL;
		}
		close(out_fd);
		return 0;
	}
	drop_parser_init(&dp, NULL);
	for (;;) {
		if ((r = read(0, buf, sizeof buf)) < 0) {
			if (errno == EINTR)
				continue;
			why = strerror(errno);
			break;
		}
		if (r == 0) {
			if (drop_finish(&dp) < 0) {
				why = dp.err;
				rc = EX_DATAERR;
			}
			break;
		}
		if (drop_parse(&dp, buf, (size_t)r) < 0) {
			why = dp.err;
			rc = EX_DATAERR;
			break;
		}
		if (write_all(out_fd, buf, (size_t)r) < 0) {
			why = strerror(errno);
			break;
		}
	}
	/* durable before the name appears, the name durable before exit 0 */
	if (why == NULL && (fsync(out_fd) < 0 || fchmod(out_fd, 0444) < 0 ||
	    renameat(dfd, tmp, dfd, name) < 0))
		why = strerror(errno);
	if (why == NULL && syncfs(out_fd) < 0) {
		why = strerror(errno);
		unlinkat(dfd, name, 0);   /* not known durable: the caller must keep the mail */
	}
	if (why) {
		unlinkat(dfd, tmp, 0);
		fprintf(stderr, "frugal-postdrop: the message was not queued in %s: %s\n", dir, why);
		return rc;
	}
	close(out_fd);
	return 0;
}
