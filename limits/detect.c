/*
 * limits/detect.c: puts the sources together. Owns the parameters of the
 * limits room (read once from a struct conf into struct limits_params),
 * the order in which sources are read and overridden (beancounters,
 * cgroup, rlimit, then manual limit_* values on top), and the text format
 * of the status file the daemon publishes. Must never keep state between
 * calls: a snapshot is a value, the daemon's state lives in budget.c.
 */
#include "limits/detect.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/fd.h"
#include "core/log.h"

const char *const limits_res_name[LR_COUNT] = {
	[LR_NUMOTHERSOCK] = "numothersock",
	[LR_NUMTCPSOCK]   = "numtcpsock",
	[LR_NUMFILE]      = "numfile",
	[LR_NUMPROC]      = "numproc",
	[LR_MEMORY]       = "memory",
	[LR_TCPSNDBUF]    = "tcpsndbuf",
	[LR_TCPRCVBUF]    = "tcprcvbuf",
	[LR_OTHERSOCKBUF] = "othersockbuf",
	[LR_NOFILE]       = "RLIMIT_NOFILE",
	[LR_AS]           = "RLIMIT_AS",
	[LR_NPROC]        = "RLIMIT_NPROC",
	[LR_FILENR]       = "file-nr",
	[LR_CG_MEMORY]    = "memory.max",
	[LR_CG_PIDS]      = "pids.max",
	[LR_QUEUE_SPACE]  = "queue disk space",
	[LR_QUEUE_INODES] = "queue disk inodes",
	[LR_MBOX_SPACE]   = "mailbox disk space",
	[LR_MBOX_INODES]  = "mailbox disk inodes",
};

long limits_read_file(const char *path, char *buf, size_t size)
{
	size_t got = 0;
	int fd;

	if (size == 0)
		return -1;
	if ((fd = fd_open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0)
		return -1;
	/* procfs hands a file out in pieces; read until EOF or the buffer is full */
	while (got < size - 1) {
		ssize_t n = read(fd, buf + got, size - 1 - got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			fd_close(fd);
			errno = e;
			return -1;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	fd_close(fd);
	buf[got] = '\0';
	return (long)got;
}

void limits_snapshot_warn(struct limits_snapshot *s, const char *fmt, ...)
{
	va_list ap;

	if (s->nwarn >= LIMITS_MAX_WARN)
		return;
	va_start(ap, fmt);
	vsnprintf(s->warn[s->nwarn++], sizeof s->warn[0], fmt, ap);
	va_end(ap);
}

void limits_params_default(struct limits_params *p)
{
	memset(p, 0, sizeof *p);
	p->sources = LIMITS_SRC_AUTO;
	snprintf(p->beancounters_file, sizeof p->beancounters_file, "/proc/user_beancounters");
	snprintf(p->cgroup_root, sizeof p->cgroup_root, "/sys/fs/cgroup");
	p->share = 50;
	p->reserve = 5;
	p->stress_threshold = 80;
	p->listeners = 1;
	p->session_mem = LIMITS_SESSION_MEM;
	p->delivery_mem = LIMITS_DELIVERY_MEM;
}

static int parse_sources(const char *v)
{
	static const struct { const char *name; int bit; } words[] = {
		{ "auto", LIMITS_SRC_AUTO }, { "beancounters", LIMITS_SRC_BEANCOUNTERS },
		{ "cgroup", LIMITS_SRC_CGROUP }, { "rlimit", LIMITS_SRC_RLIMIT },
		{ "manual", LIMITS_SRC_MANUAL },
	};
	int bits = 0;

	/* a list ("beancounters, manual") is accepted too */
	while (v && *v) {
		size_t n, i;
		int hit = 0;

		v += strspn(v, ", \t");
		n = strcspn(v, ", \t");
		if (n == 0)
			break;
		for (i = 0; i < sizeof words / sizeof words[0]; i++)
			if (strlen(words[i].name) == n && strncasecmp(v, words[i].name, n) == 0) {
				bits |= words[i].bit;
				hit = 1;
			}
		if (!hit)
			return -1;
		v += n;
	}
	return bits;
}

static int count_listeners(const struct conf *c, const char *name)
{
	char **v = conf_list(c, name, 0);
	int n = 0;

	if (v == NULL)
		return 0;
	while (v[n])
		n++;
	conf_list_free(v);
	return n;
}

static int percent(const struct conf *c, const char *name, int def)
{
	int v = conf_percent(c, name, 0);

	if (v <= 0 || v > 100) {
		log_warning("limits", "%s = %d%%: out of range; using %d%%", name, v, def);
		return def;
	}
	return v;
}

void limits_params_from_conf(const struct conf *c, struct limits_params *p)
{
	const char *v;
	int bits;

	limits_params_default(p);
	if (c == NULL)
		return;
	v = conf_str(c, "limits_source", 0);
	if ((bits = parse_sources(v)) <= 0) {
		log_warning("limits", "limits_source = %s: unknown; using auto", v ? v : "");
		bits = LIMITS_SRC_AUTO;
	}
	p->sources = bits;
	if ((v = conf_str(c, "beancounters_file", 0)) != NULL)
		snprintf(p->beancounters_file, sizeof p->beancounters_file, "%s", v);
	if ((v = conf_str(c, "cgroup_root", 0)) != NULL)
		snprintf(p->cgroup_root, sizeof p->cgroup_root, "%s", v);
	p->manual_numothersock = conf_int(c, "limit_numothersock", 0);
	p->manual_numtcpsock = conf_int(c, "limit_numtcpsock", 0);
	p->manual_numfile = conf_int(c, "limit_numfile", 0);
	p->manual_memory = conf_int(c, "limit_memory", 0);
	p->share = percent(c, "limits_share", 50);
	/* 0% reserve is a legitimate choice (a container frugal has alone) */
	p->reserve = conf_percent(c, "limits_reserve", 0);
	if (p->reserve < 0 || p->reserve >= 100) {
		log_warning("limits", "limits_reserve = %d%%: out of range; using 5%%", p->reserve);
		p->reserve = 5;
	}
	p->stress_threshold = percent(c, "stress_threshold", 80);
	p->smtpd_concurrency = conf_is_auto(c, "smtpd_concurrency_limit", 0) ? 0
	    : conf_int(c, "smtpd_concurrency_limit", 0);
	p->delivery_concurrency = conf_is_auto(c, "delivery_concurrency_limit", 0) ? 0
	    : conf_int(c, "delivery_concurrency_limit", 0);
	if (p->smtpd_concurrency < 0)
		p->smtpd_concurrency = 0;
	if (p->delivery_concurrency < 0)
		p->delivery_concurrency = 0;
	p->listeners = count_listeners(c, "smtpd_listen") + count_listeners(c, "submission_listen")
	    + count_listeners(c, "smtps_listen");
	snprintf(p->queue_dir, sizeof p->queue_dir, "%s", conf_str(c, "queue_directory", 0));
	/* where most mail is written: the virtual base, or the local one (homes are the system's) */
	if (*conf_str(c, "virtual_mailbox_domains", 0))
		snprintf(p->mailbox_dir, sizeof p->mailbox_dir, "%s", conf_str(c, "virtual_mailbox_base", 0));
	else
		snprintf(p->mailbox_dir, sizeof p->mailbox_dir, "%s", conf_str(c, "local_mailbox_base", 0));
	p->queue_minfree = conf_int(c, "queue_minfree", 0);
	p->message_size_limit = conf_int(c, "message_size_limit", 0);
	/* every session is counted at the TLS cost where any client may start TLS */
	if ((*conf_str(c, "smtpd_tls_cert_file", 0) && strcmp(conf_str(c, "smtpd_tls_security_level", 0), "none") != 0)
	    || *conf_str(c, "smtps_listen", 0))
		p->session_mem += LIMITS_TLS_SESSION_MEM;
	/* likewise every delivery where the SMTP client may start TLS (any of them may be an SMTP one) */
	p->delivery_mem = LIMITS_DELIVERY_MEM;
	if (strcmp(conf_str(c, "smtp_tls_security_level", 0), "none") != 0)
		p->delivery_mem += LIMITS_TLS_CLIENT_MEM;
}

long long limits_disk_need_bytes(const struct limits_params *p)
{
	long long need = p->message_size_limit > 0 ? p->message_size_limit / 2 * 3 : 0;

	return p->queue_minfree > need ? p->queue_minfree : need;
}

long long limits_disk_need_inodes(long long total)
{
	long long pct = total > 0 ? total / 100 : LIMITS_INODES_MIN;

	return pct < LIMITS_INODES_MIN ? pct : LIMITS_INODES_MIN;
}

/* one file system: -1 when it cannot be read (its rows stay unknown) */
static int disk(const char *path, enum limits_res space, enum limits_res inodes, struct limits_snapshot *s)
{
	struct statvfs v;
	long long bs, total, avail;

	if (path == NULL || *path == '\0' || statvfs(path, &v) < 0)
		return -1;
	bs = (long long)(v.f_frsize ? v.f_frsize : v.f_bsize);
	total = (long long)v.f_blocks * bs;
	avail = (long long)v.f_bavail * bs;   /* what an unprivileged writer may still use */
	limits_set_plain(s, space, total, total - avail, "statvfs");
	if (v.f_files > 0)
		limits_set_plain(s, inodes, (long long)v.f_files, (long long)(v.f_files - v.f_favail), "statvfs");
	return 0;
}

void limits_detect_disk(const struct limits_params *p, struct limits_snapshot *s)
{
	struct stat a, b;

	disk(p->queue_dir, LR_QUEUE_SPACE, LR_QUEUE_INODES, s);
	/* the mailboxes' file system only when it is another one */
	if (*p->mailbox_dir && !(stat(p->queue_dir, &a) == 0 && stat(p->mailbox_dir, &b) == 0 && a.st_dev == b.st_dev))
		disk(p->mailbox_dir, LR_MBOX_SPACE, LR_MBOX_INODES, s);
}

void limits_set_plain(struct limits_snapshot *s, enum limits_res k, long long limit,
    long long held, const char *source)
{
	s->r[k].source = source;
	s->r[k].limit = s->r[k].hardlimit = limit;
	s->r[k].held = held;
	s->r[k].maxheld = -1;
	s->r[k].failcnt = -1;
}

static void manual(struct limits_snapshot *s, enum limits_res k, long long v)
{
	if (v <= 0)
		return;
	/* held and failcnt stay what a source measured: only the cap is the admin's */
	s->r[k].source = "manual";
	s->r[k].limit = s->r[k].hardlimit = v;
	s->found |= LIMITS_SRC_MANUAL;
}

void limits_detect(const struct limits_params *p, struct limits_snapshot *s)
{
	int k;

	memset(s, 0, sizeof *s);
	for (k = 0; k < LR_COUNT; k++) {
		s->r[k].limit = s->r[k].hardlimit = LIMITS_UNLIMITED;
		s->r[k].held = s->r[k].maxheld = s->r[k].failcnt = -1;
	}
	s->cg_oom_events = s->cg_max_events = -1;
	if (p->sources & LIMITS_SRC_BEANCOUNTERS)
		limits_detect_beancounters(p->beancounters_file, s);
	if (p->sources & LIMITS_SRC_CGROUP)
		limits_detect_cgroup(p->cgroup_root, s);
	/* the kernel enforces RLIMIT_NOFILE whatever limits_source says, so it
	 * is always read; limits_source only decides whether it is a "source" */
	limits_detect_rlimit(s);
	if (!(p->sources & LIMITS_SRC_RLIMIT))
		s->found &= ~LIMITS_SRC_RLIMIT;
	limits_detect_disk(p, s);
	if (p->sources & LIMITS_SRC_MANUAL) {
		manual(s, LR_NUMOTHERSOCK, p->manual_numothersock);
		manual(s, LR_NUMTCPSOCK, p->manual_numtcpsock);
		manual(s, LR_NUMFILE, p->manual_numfile);
		manual(s, LR_MEMORY, p->manual_memory);
	}
}

/* ---- status file ---- */

static const char *const pool_key[LP_COUNT] = { "tcp", "other", "fd", "mem" };

int limits_status_format(const struct limits_status *st, char *buf, size_t len)
{
	size_t off = 0;
	int k, n;

#define PUT(...) do { \
	n = snprintf(buf + off, len - off, __VA_ARGS__); \
	if (n < 0 || (size_t)n >= len - off) return -1; \
	off += (size_t)n; \
} while (0)
	PUT("pid %ld\ntime %lld\nstarted %lld\nstress %d\n", st->pid, st->time, st->started, st->stress);
	PUT("sessions %lld\nsessions_limit %lld\ndeliveries_limit %lld\n",
	    st->own.sessions, st->sessions_limit, st->deliveries_limit);
	PUT("use_tcp %lld\nuse_other %lld\nuse_fd %lld\nuse_mem %lld\nfd_kernel %lld\n"
	    "siblings_fd %lld\nsiblings_other %lld\n",
	    st->own.tcp, st->own.other, st->own.fd, st->own.mem, st->fd_kernel, st->own.sib_fd, st->own.sib_other);
	PUT("log_lost %lld\n", st->log_lost);
	for (k = 0; k < LP_COUNT; k++)
		PUT("budget_%s %lld\n", pool_key[k], st->pool[k]);
	for (k = 0; k < LR_COUNT; k++)
		if (st->failcnt_start[k] >= 0)
			PUT("failcnt_start %s %lld\n", limits_res_name[k], st->failcnt_start[k]);
#undef PUT
	return (int)off;
}

static int keyeq(const char *p, size_t n, const char *k)
{
	return strlen(k) == n && memcmp(p, k, n) == 0;
}

static long long num(const char *p, const char *e)
{
	char tmp[32];
	size_t n = (size_t)(e - p);

	if (n == 0 || n >= sizeof tmp)
		return -1;
	memcpy(tmp, p, n);
	tmp[n] = '\0';
	return strtoll(tmp, NULL, 10);
}

int limits_status_parse(const char *buf, size_t len, struct limits_status *st)
{
	const char *p = buf, *end = buf + len;
	int k, seen_pid = 0;

	memset(st, 0, sizeof *st);
	st->fd_kernel = -1;
	for (k = 0; k < LR_COUNT; k++)
		st->failcnt_start[k] = -1;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		const char *sp = memchr(p, ' ', (size_t)(le - p));
		const char *key = p;

		p = nl ? nl + 1 : end;
		if (sp == NULL)
			continue;
		if (keyeq(key, (size_t)(sp - key), "failcnt_start")) {
			const char *nm = sp + 1, *sp2 = memchr(nm, ' ', (size_t)(le - nm));

			if (sp2 == NULL)
				continue;
			for (k = 0; k < LR_COUNT; k++)
				if (keyeq(nm, (size_t)(sp2 - nm), limits_res_name[k]))
					st->failcnt_start[k] = num(sp2 + 1, le);
			continue;
		}
		{
			size_t kl = (size_t)(sp - key);
			long long v = num(sp + 1, le);

			if (keyeq(key, kl, "pid")) { st->pid = (long)v; seen_pid = 1; }
			else if (keyeq(key, kl, "time")) st->time = v;
			else if (keyeq(key, kl, "started")) st->started = v;
			else if (keyeq(key, kl, "stress")) st->stress = (int)v;
			else if (keyeq(key, kl, "sessions")) st->own.sessions = v;
			else if (keyeq(key, kl, "sessions_limit")) st->sessions_limit = v;
			else if (keyeq(key, kl, "deliveries_limit")) st->deliveries_limit = v;
			else if (keyeq(key, kl, "use_tcp")) st->own.tcp = v;
			else if (keyeq(key, kl, "use_other")) st->own.other = v;
			else if (keyeq(key, kl, "use_fd")) st->own.fd = v;
			else if (keyeq(key, kl, "use_mem")) st->own.mem = v;
			else if (keyeq(key, kl, "fd_kernel")) st->fd_kernel = v;
			else if (keyeq(key, kl, "log_lost")) st->log_lost = v;
			else if (keyeq(key, kl, "siblings_fd")) st->own.sib_fd = v;
			else if (keyeq(key, kl, "siblings_other")) st->own.sib_other = v;
			else
				for (k = 0; k < LP_COUNT; k++)
					if (kl > 7 && memcmp(key, "budget_", 7) == 0 && keyeq(key + 7, kl - 7, pool_key[k]))
						st->pool[k] = v;
		}
	}
	return seen_pid && st->pid > 0 ? 0 : -1;
}
