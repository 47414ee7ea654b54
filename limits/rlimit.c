/*
 * limits/rlimit.c: the process's own limits (RLIMIT_NOFILE, RLIMIT_AS,
 * RLIMIT_NPROC) and the system-wide descriptor count (/proc/sys/fs/file-nr).
 * Owns the file-nr parser. Must never raise or lower a limit: frugal lives
 * within what it was given, and an admin's ulimit is a decision.
 */
#include "limits/detect.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/resource.h>

int limits_filenr_parse(const char *buf, size_t len, long long *allocated, long long *max)
{
	long long v[3];
	size_t i = 0;
	int k;

	for (k = 0; k < 3; k++) {
		unsigned long long x = 0;
		size_t start;

		while (i < len && (buf[i] == ' ' || buf[i] == '\t'))
			i++;
		start = i;
		while (i < len && buf[i] >= '0' && buf[i] <= '9') {
			x = x > (unsigned long long)LLONG_MAX / 10 ? (unsigned long long)LLONG_MAX + 1
			    : x * 10 + (unsigned)(buf[i] - '0');
			i++;
		}
		if (i == start)
			return -1;
		v[k] = x > (unsigned long long)LLONG_MAX ? LLONG_MAX : (long long)x;
	}
	while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r'))
		i++;
	if (i != len)
		return -1;
	/* the second field (free handles) is always 0 since Linux 2.6 but
	 * subtracting it keeps older kernels right */
	*allocated = v[1] <= v[0] ? v[0] - v[1] : v[0];
	*max = v[2];
	return 0;
}

static long long rl_value(rlim_t v)
{
	if (v == RLIM_INFINITY || v >= (rlim_t)LLONG_MAX)
		return LIMITS_UNLIMITED;
	return (long long)v;
}

/* descriptors open in this process: the "held" of RLIMIT_NOFILE */
static long long count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	long long n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;   /* the directory stream's own descriptor */
}

void limits_detect_rlimit(struct limits_snapshot *s)
{
	struct rlimit rl;
	char buf[128];
	long long alloc, max;
	long n;

	/* the soft limit is what open() fails at */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		limits_set_plain(s, LR_NOFILE, rl_value(rl.rlim_cur), count_fds(), "rlimit");
	if (getrlimit(RLIMIT_AS, &rl) == 0)
		limits_set_plain(s, LR_AS, rl_value(rl.rlim_cur), -1, "rlimit");
	if (getrlimit(RLIMIT_NPROC, &rl) == 0)
		limits_set_plain(s, LR_NPROC, rl_value(rl.rlim_cur), -1, "rlimit");
	s->found |= LIMITS_SRC_RLIMIT;
	if ((n = limits_read_file("/proc/sys/fs/file-nr", buf, sizeof buf)) >= 0) {
		if (limits_filenr_parse(buf, (size_t)n, &alloc, &max) == 0)
			limits_set_plain(s, LR_FILENR, max, alloc, "file-nr");
		else
			limits_snapshot_warn(s, "/proc/sys/fs/file-nr: unreadable; ignored");
	}
}
