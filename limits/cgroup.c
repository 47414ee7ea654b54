/*
 * limits/cgroup.c: cgroup v2 (memory.max, memory.current, memory.events,
 * memory.stat, pids.max, pids.current) and v1 (memory.limit_in_bytes,
 * memory.usage_in_bytes, memory.failcnt, pids.max) limits of the cgroup
 * frugal runs in, under cgroup_root. Owns the value parsers and the choice
 * of directory. Must never write to the cgroup tree (frugal does not move
 * itself or set limits) and never fail: a missing file is "unknown".
 */
#include "limits/detect.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* v1 prints "no limit" as LONG_MAX rounded down to a page
 * (9223372036854771712); anything this large is no limit at all */
#define HUGE_LIMIT (1LL << 62)

static const char *trim(const char *s, const char *end, const char **tend)
{
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	while (end > s && (end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		end--;
	*tend = end;
	return s;
}

static int parse_digits(const char *s, const char *end, long long *v)
{
	unsigned long long x = 0;

	if (s == end)
		return -1;
	for (; s < end; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (x > (unsigned long long)LLONG_MAX / 10)
			x = (unsigned long long)LLONG_MAX + 1;
		else
			x = x * 10 + (unsigned)(*s - '0');
	}
	*v = x >= (unsigned long long)HUGE_LIMIT ? LIMITS_UNLIMITED : (long long)x;
	return 0;
}

int limits_cgroup_parse_value(const char *buf, size_t len, long long *v)
{
	const char *end, *s = trim(buf, buf + len, &end);

	if ((size_t)(end - s) == 3 && memcmp(s, "max", 3) == 0) {
		*v = LIMITS_UNLIMITED;
		return 0;
	}
	/* one line only: a value file holding more is not the file we think */
	if (memchr(s, '\n', (size_t)(end - s)) != NULL)
		return -1;
	return parse_digits(s, end, v);
}

int limits_cgroup_parse_keyed(const char *buf, size_t len, const char *key, long long *v)
{
	const char *p = buf, *end = buf + len;
	size_t klen = strlen(key);

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;

		if ((size_t)(le - p) > klen && memcmp(p, key, klen) == 0 && p[klen] == ' ') {
			const char *ve, *vs = trim(p + klen + 1, le, &ve);
			return parse_digits(vs, ve, v);
		}
		p = nl ? nl + 1 : end;
	}
	return -1;
}

int limits_cgroup_parse_self(const char *buf, size_t len, const char *v1,
    char *out, size_t outlen)
{
	const char *p = buf, *end = buf + len;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *ls = p, *le = nl ? nl : end;
		const char *c1 = memchr(ls, ':', (size_t)(le - ls));
		const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(le - c1 - 1)) : NULL;

		p = nl ? nl + 1 : end;
		if (c2 == NULL)
			continue;
		if (v1 == NULL) {
			/* "0::/path": hierarchy 0, empty controller list */
			if (c1 - ls != 1 || ls[0] != '0' || c2 != c1 + 1)
				continue;
		} else {
			/* "4:memory:/path" or "3:cpu,cpuacct:/path": controller in the list */
			const char *q = c1 + 1;
			size_t vl = strlen(v1);
			int hit = 0;

			while (q < c2) {
				const char *comma = memchr(q, ',', (size_t)(c2 - q));
				const char *ce = comma ? comma : c2;

				if ((size_t)(ce - q) == vl && memcmp(q, v1, vl) == 0)
					hit = 1;
				q = ce + 1;
			}
			if (!hit)
				continue;
		}
		{
			const char *ps = c2 + 1, *pe = le;
			size_t n;

			while (pe > ps && (pe[-1] == '\r' || pe[-1] == ' '))
				pe--;
			n = (size_t)(pe - ps);
			if (n == 0 || ps[0] != '/' || n >= outlen || memchr(ps, '\0', n))
				return -1;
			memcpy(out, ps, n);
			out[n] = '\0';
			return 0;
		}
	}
	return -1;
}

static int is_dir_with(const char *dir, const char *file)
{
	char path[512];
	struct stat st;

	if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, file) >= sizeof path)
		return 0;
	return stat(path, &st) == 0;
}

/*
 * Whose cgroup: this process's, or (frugal limits run by an admin in another
 * cgroup, a systemd unit's MemoryMax= while the shell sits in user.slice)
 * the running daemon's.
 */
static long view_pid;

void limits_cgroup_view(long pid)
{
	view_pid = pid;
}

/*
 * The directory of our own cgroup: root + the path in /proc/self/cgroup.
 * Inside a container with its own cgroup namespace the path is "/" and the
 * root is ours; without a namespace the path may name a directory that is
 * not mounted here, and then the root itself is the best guess.
 */
static void own_dir(const char *root, const char *sub, const char *v1, const char *probe,
    char *out, size_t outlen)
{
	char self[4096], rel[256], base[512], procfile[64];
	long n;

	if (sub)
		snprintf(base, sizeof base, "%s/%s", root, sub);
	else
		snprintf(base, sizeof base, "%s", root);
	snprintf(out, outlen, "%s", base);
	if (view_pid > 0)
		snprintf(procfile, sizeof procfile, "/proc/%ld/cgroup", view_pid);
	else
		snprintf(procfile, sizeof procfile, "/proc/self/cgroup");
	if ((n = limits_read_file(procfile, self, sizeof self)) < 0)
		return;
	if (limits_cgroup_parse_self(self, (size_t)n, v1, rel, sizeof rel) < 0)
		return;
	if (strcmp(rel, "/") == 0)
		return;
	{
		char cand[512];

		if ((size_t)snprintf(cand, sizeof cand, "%s%s", base, rel) < sizeof cand
		    && is_dir_with(cand, probe))
			snprintf(out, outlen, "%s", cand);
	}
}

/* read DIR/NAME as one value; 0 ok, -1 absent, -2 garbage (warned) */
static int read_value(struct limits_snapshot *s, const char *dir, const char *name, long long *v)
{
	char path[600], buf[128];
	long n;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if ((n = limits_read_file(path, buf, sizeof buf)) < 0)
		return -1;
	if (limits_cgroup_parse_value(buf, (size_t)n, v) < 0) {
		limits_snapshot_warn(s, "%s: unreadable value; ignored", path);
		return -2;
	}
	return 0;
}

static long long read_keyed(const char *dir, const char *name, const char *key)
{
	char path[600], buf[8192];
	long long v;
	long n;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if ((n = limits_read_file(path, buf, sizeof buf)) < 0)
		return -1;
	if (limits_cgroup_parse_keyed(buf, (size_t)n, key, &v) < 0)
		return -1;
	return v;
}

/* a cgroup with "max" everywhere limits nothing: it is not a container limit */
static void found(struct limits_snapshot *s, long long limit)
{
	if (limit != LIMITS_UNLIMITED)
		s->found |= LIMITS_SRC_CGROUP;
}

/*
 * Page cache is charged to the cgroup but the kernel reclaims it before it
 * refuses anything; counting it as "use" would shrink frugal's budget every
 * time the spool is written. Subtract inactive file pages, as docker stats
 * and cAdvisor do.
 */
static long long working_set(long long usage, long long inactive)
{
	if (usage < 0)
		return -1;
	if (inactive > 0 && inactive < usage)
		return usage - inactive;
	return usage;
}

static void detect_v2(const char *root, struct limits_snapshot *s)
{
	char dir[512];
	long long max, cur = -1, v;
	int rc;

	own_dir(root, NULL, NULL, "memory.max", dir, sizeof dir);
	snprintf(s->cgroup_dir, sizeof s->cgroup_dir, "%s", dir);
	s->cgroup_version = 2;
	if ((rc = read_value(s, dir, "memory.max", &max)) == 0) {
		if (read_value(s, dir, "memory.current", &cur) < 0)
			cur = -1;
		limits_set_plain(s, LR_CG_MEMORY, max,
		    working_set(cur, read_keyed(dir, "memory.stat", "inactive_file")), "cgroup v2");
		s->cg_oom_events = read_keyed(dir, "memory.events", "oom");
		s->cg_max_events = read_keyed(dir, "memory.events", "max");
		/* "max" events are the closest thing v2 has to a failcnt */
		s->r[LR_CG_MEMORY].failcnt = s->cg_max_events;
		found(s, max);
	}
	if (read_value(s, dir, "pids.max", &max) == 0) {
		if (read_value(s, dir, "pids.current", &v) < 0)
			v = -1;
		limits_set_plain(s, LR_CG_PIDS, max, v, "cgroup v2");
		found(s, max);
	}
}

static void detect_v1(const char *root, struct limits_snapshot *s)
{
	char dir[512];
	long long max, cur, v;

	own_dir(root, "memory", "memory", "memory.limit_in_bytes", dir, sizeof dir);
	if (read_value(s, dir, "memory.limit_in_bytes", &max) == 0) {
		snprintf(s->cgroup_dir, sizeof s->cgroup_dir, "%s", dir);
		s->cgroup_version = 1;
		if (read_value(s, dir, "memory.usage_in_bytes", &cur) < 0)
			cur = -1;
		limits_set_plain(s, LR_CG_MEMORY, max,
		    working_set(cur, read_keyed(dir, "memory.stat", "total_inactive_file")), "cgroup v1");
		if (read_value(s, dir, "memory.failcnt", &v) == 0)
			s->r[LR_CG_MEMORY].failcnt = s->cg_oom_events = v;
		found(s, max);
	}
	own_dir(root, "pids", "pids", "pids.max", dir, sizeof dir);
	if (read_value(s, dir, "pids.max", &max) == 0) {
		if (read_value(s, dir, "pids.current", &v) < 0)
			v = -1;
		limits_set_plain(s, LR_CG_PIDS, max, v, "cgroup v1");
		s->cgroup_version = s->cgroup_version ? s->cgroup_version : 1;
		found(s, max);
	}
}

void limits_detect_cgroup(const char *root, struct limits_snapshot *s)
{
	if (root == NULL || *root == '\0')
		return;
	/* a unified (v2) mount has cgroup.controllers at its root; a hybrid
	 * host keeps v2 under "unified" without the memory controller, so v1's
	 * memory directory is the one that holds limits there */
	if (is_dir_with(root, "cgroup.controllers"))
		detect_v2(root, s);
	else if (is_dir_with(root, "memory") || is_dir_with(root, "pids"))
		detect_v1(root, s);
}
