/*
 * limits/report.c: `frugal limits [-c DIR] [--json]` (PRODUCT.md section 4).
 * Owns the report: what each limit is and where it came from, the
 * container's use, frugal's live use (read from the status file the daemon
 * publishes, never by talking to the daemon), frugal's budget, headroom,
 * the derived concurrency and why, stress mode, and warnings in plain
 * words. Must never need privileges beyond reading the files (an
 * unprivileged admin runs it) and never change anything.
 */
#include "limits/limits.h"
#include "limits/detect.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"

#define MAX_WARNINGS 24

struct row {
	enum limits_res res;
	const char *name;         /* as shown */
	int bytes;                /* a memory amount */
	long long own;            /* frugal's live use; -1 unknown */
	long long budget;         /* -1: frugal takes no budget of it */
	long long headroom;       /* -1 unknown */
};

struct report {
	struct limits_params p;
	struct limits_snapshot s;
	struct limits_budget b;
	struct limits_own own;
	struct limits_status st;
	int running;              /* the status file is fresh and its pid lives */
	char view[700];           /* whose limits the report shows, in words */
	char status_path[600];
	const char *status_problem; /* why there is no live use */
	struct row rows[LR_COUNT];
	int nrows;
	char warn[MAX_WARNINGS][320];
	int nwarn;
};

static void warnf(struct report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warnf(struct report *r, const char *fmt, ...)
{
	va_list ap;

	if (r->nwarn >= MAX_WARNINGS)
		return;
	va_start(ap, fmt);
	vsnprintf(r->warn[r->nwarn++], sizeof r->warn[0], fmt, ap);
	va_end(ap);
}

static const char *display_name(enum limits_res k)
{
	switch (k) {
	case LR_CG_MEMORY: return "cgroup memory.max";
	case LR_CG_PIDS:   return "cgroup pids.max";
	default:           return limits_res_name[k];
	}
}

static int is_bytes(enum limits_res k)
{
	return k == LR_MEMORY || k == LR_TCPSNDBUF || k == LR_TCPRCVBUF || k == LR_OTHERSOCKBUF
	    || k == LR_AS || k == LR_CG_MEMORY;
}

static long long own_of(const struct report *r, enum limits_res k)
{
	if (!r->running)
		return -1;
	switch (k) {
	/* container-wide: every process of frugal's (master, helpers); RLIMIT_NOFILE: the daemon's */
	case LR_NUMOTHERSOCK: return r->own.other + r->own.sib_other;
	case LR_NUMTCPSOCK:   return r->own.tcp;
	case LR_NUMFILE: case LR_FILENR: return r->own.fd + r->own.sib_fd;
	case LR_NOFILE:       return r->own.fd;
	case LR_MEMORY: case LR_CG_MEMORY: case LR_AS: return r->own.mem;
	default:              return -1;
	}
}

static void read_status(struct report *r, const struct conf *c)
{
	const char *q = conf_str(c, "queue_directory", 0);
	char buf[4096];
	long n;

	r->status_problem = "daemon not running";
	if (q == NULL || *q == '\0')
		return;
	snprintf(r->status_path, sizeof r->status_path, "%s/%s", q, LIMITS_STATUS_NAME);
	if ((n = limits_read_file(r->status_path, buf, sizeof buf)) < 0) {
		if (errno == EACCES)
			r->status_problem = "daemon status unreadable (permission denied)";
		return;
	}
	if (limits_status_parse(buf, (size_t)n, &r->st) < 0)
		return;
	/* EPERM: alive, owned by mail_owner; the report runs unprivileged */
	if (kill((pid_t)r->st.pid, 0) < 0 && errno != EPERM)
		return;
	r->running = 1;
	r->status_problem = NULL;
	r->own = r->st.own;
}

/*
 * Rlimits are per process: the daemon's, not ours, bound its sessions and
 * its memory. /proc/PID/limits is world-readable, so an unprivileged admin
 * sees them too. Returns 0 and the soft limit of the row `what`, or -1.
 */
static int daemon_rlimit(long pid, const char *what, long long *soft)
{
	char path[64], buf[4096], *line;
	long n;

	snprintf(path, sizeof path, "/proc/%ld/limits", pid);
	if ((n = limits_read_file(path, buf, sizeof buf - 1)) < 0)
		return -1;
	buf[n] = '\0';
	if ((line = strstr(buf, what)) == NULL)
		return -1;
	line += strlen(what);
	while (*line == ' ')
		line++;
	if (strncmp(line, "unlimited", 9) == 0) {
		*soft = LIMITS_UNLIMITED;
		return 0;
	}
	if (*line < '0' || *line > '9')
		return -1;
	*soft = strtoll(line, NULL, 10);
	return 0;
}

static const char *shortage_words(enum limits_res k)
{
	switch (k) {
	case LR_NUMOTHERSOCK: return "non-TCP sockets";
	case LR_NUMTCPSOCK:   return "TCP sockets";
	case LR_NUMFILE:      return "open files";
	case LR_MEMORY: case LR_CG_MEMORY: return "memory";
	case LR_TCPSNDBUF:    return "TCP send buffer memory";
	case LR_TCPRCVBUF:    return "TCP receive buffer memory";
	case LR_OTHERSOCKBUF: return "non-TCP socket buffer memory";
	case LR_NUMPROC: case LR_CG_PIDS: return "processes";
	default:              return "this resource";
	}
}

static void build(struct report *r)
{
	int k, container;

	for (k = 0; k < LR_COUNT; k++) {
		const struct limits_res_state *st = &r->s.r[k];
		struct row *w;

		if (st->source == NULL)
			continue;
		w = &r->rows[r->nrows++];
		w->res = (enum limits_res)k;
		w->name = display_name((enum limits_res)k);
		w->bytes = is_bytes((enum limits_res)k);
		w->own = own_of(r, (enum limits_res)k);
		w->budget = r->b.res_budget[k];
		if (w->budget >= 0 && w->budget != LIMITS_UNLIMITED)
			w->headroom = w->budget - (w->own > 0 ? w->own : 0);
		else if (st->limit != LIMITS_UNLIMITED && st->held >= 0)
			w->headroom = st->limit - st->held;
		else
			w->headroom = -1;
	}

	for (k = 0; k < r->s.nwarn; k++)
		warnf(r, "%s", r->s.warn[k]);
	container = r->s.found & (LIMITS_SRC_BEANCOUNTERS | LIMITS_SRC_CGROUP | LIMITS_SRC_MANUAL);
	if (!container)
		warnf(r, "no container limits found: using RLIMIT_NOFILE only");
	if (r->b.sessions < LIMITS_USEFUL_SESSIONS)
		warnf(r, "budget for smtpd sessions is %lld, below a useful minimum of %d (bound by %s)",
		    r->b.sessions, LIMITS_USEFUL_SESSIONS, r->b.sessions_by);
	for (k = 0; k < LR_COUNT; k++) {
		const struct limits_res_state *st = &r->s.r[k];

		if (st->source == NULL || st->failcnt <= 0)
			continue;
		if (r->running && r->st.failcnt_start[k] >= 0) {
			if (st->failcnt > r->st.failcnt_start[k])
				warnf(r, "failcnt for %s rose by %lld since start: %s",
				    limits_res_name[k], st->failcnt - r->st.failcnt_start[k],
				    /*
				     * frugal below its own share of the limit did not exhaust it;
				     * (the budget itself may have shrunk to 0 under the hog)
				     */
				    own_of(r, (enum limits_res)k) >= 0 && st->limit != LIMITS_UNLIMITED
				    && own_of(r, (enum limits_res)k) < st->limit * r->p.share / 100
				    ? (k == LR_NUMOTHERSOCK ? "another process in this container is exhausting non-TCP sockets"
				       : k == LR_NUMTCPSOCK ? "another process in this container is exhausting TCP sockets"
				       : "another process in this container is exhausting it")
				    : "the container refused frugal or its neighbours");
		} else {
			warnf(r, "failcnt for %s is %lld: the container has refused %s %lld times since its counters were reset",
			    limits_res_name[k], st->failcnt, shortage_words((enum limits_res)k), st->failcnt);
		}
	}
	for (k = 0; k < LR_COUNT; k++) {
		const struct limits_res_state *st = &r->s.r[k];

		if (st->source == NULL || st->held < 0 || st->limit <= 0 || st->limit == LIMITS_UNLIMITED)
			continue;
		/* in double: byte counts times 100 can pass LLONG_MAX */
		if ((double)st->held * 100.0 >= (double)st->limit * r->p.stress_threshold)
			warnf(r, "%s: the container holds %lld of %lld (%.0f%%), past stress_threshold %d%%",
			    limits_res_name[k], st->held, st->limit, (double)st->held * 100.0 / (double)st->limit,
			    r->p.stress_threshold);
	}
	if (r->s.cg_oom_events > 0 && r->s.cgroup_version == 2)
		warnf(r, "the cgroup's OOM killer ran %lld times", r->s.cg_oom_events);
	if (r->b.pool[LP_OTHER] != LIMITS_UNLIMITED && r->b.pool[LP_OTHER] < 4)
		warnf(r, "budget for non-TCP sockets is %lld: the log, resolver and local delivery need a few",
		    r->b.pool[LP_OTHER]);
}

/* ---- text ---- */

static const char *num(char *buf, size_t n, long long v, int bytes)
{
	if (v == LIMITS_UNLIMITED)
		return "unlimited";
	if (v < 0)
		return "-";
	if (bytes && v >= 10LL << 20)
		snprintf(buf, n, "%lldM", v >> 20);
	else if (bytes && v >= 10LL << 10)
		snprintf(buf, n, "%lldK", v >> 10);
	else
		snprintf(buf, n, "%lld", v);
	return buf;
}

/* limits_source as it was configured: "auto", or the sources by name */
static const char *source_names(int bits, char *buf, size_t len)
{
	static const struct { int bit; const char *name; } n[] = {
		{ LIMITS_SRC_BEANCOUNTERS, "beancounters" }, { LIMITS_SRC_CGROUP, "cgroup" },
		{ LIMITS_SRC_RLIMIT, "rlimit" }, { LIMITS_SRC_MANUAL, "manual" },
	};
	size_t i, off = 0;

	if (bits == LIMITS_SRC_AUTO)
		return "auto";
	buf[0] = '\0';
	for (i = 0; i < sizeof n / sizeof n[0]; i++)
		if (bits & n[i].bit)
			off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "%s%s", off ? ", " : "", n[i].name);
	return buf;
}

static void print_text(const struct report *r, FILE *f)
{
	char b[8][32], src[64];
	int i;

	fprintf(f, "limits_source = %s; share %d%%, reserve %d%%, stress_threshold %d%%\n",
	    source_names(r->p.sources, src, sizeof src), r->p.share, r->p.reserve, r->p.stress_threshold);
	fprintf(f, "view: %s\n", r->view);
	if (r->running)
		fprintf(f, "daemon running, pid %ld (live use as of %lld s ago)\n", r->st.pid,
		    (long long)time(NULL) - r->st.time);
	else
		fprintf(f, "%s: frugal's own use unknown\n", r->status_problem);
	fprintf(f, "\n%-18s %-24s %10s %10s %10s %8s %8s %10s %9s\n", "resource", "source", "limit",
	    "held", "maxheld", "failcnt", "frugal", "budget", "headroom");
	for (i = 0; i < r->nrows; i++) {
		const struct row *w = &r->rows[i];
		const struct limits_res_state *st = &r->s.r[w->res];

		fprintf(f, "%-18s %-24s %10s %10s %10s %8s %8s %10s %9s\n", w->name, st->source,
		    num(b[0], 32, st->limit, w->bytes), num(b[1], 32, st->held, w->bytes),
		    num(b[2], 32, st->maxheld, w->bytes), num(b[3], 32, st->failcnt, 0),
		    num(b[4], 32, w->own, w->bytes), num(b[5], 32, w->budget, w->bytes),
		    num(b[6], 32, w->headroom, w->bytes));
	}
	fprintf(f, "\nsmtpd sessions %lld: bound by %s", r->b.sessions, r->b.sessions_by);
	if (r->running)
		fprintf(f, " (now %lld, daemon's limit %lld)", r->st.own.sessions, r->st.sessions_limit);
	fprintf(f, "\ndeliveries %lld: bound by %s\n", r->b.deliveries, r->b.deliveries_by);
	if (r->b.sndbuf || r->b.rcvbuf)
		fprintf(f, "session socket buffers: SO_SNDBUF %d, SO_RCVBUF %d (sessions x buffers fit tcpsndbuf/tcprcvbuf)\n",
		    r->b.sndbuf, r->b.rcvbuf);
	else
		fprintf(f, "session socket buffers: kernel defaults (no socket buffer limit)\n");
	if (r->running)
		fprintf(f, "stress mode: %s\n", r->st.stress ? "on" : "off");
	else
		fprintf(f, "stress mode: off (daemon not running)\n");
	fprintf(f, "\nhow: sessions = min(numtcpsock budget - listeners - deliveries, descriptor budget - %d - 2 x deliveries,\n"
	    "      socket buffer budgets / (2 x %d), (memory budget - 4M - deliveries x %lldK) / (%lldK%s + buffers));\n"
	    "      budget = min(%d%% of the limit, limit - %d%% - what the rest of the container holds)\n",
	    LIMITS_FIXED_FDS, LIMITS_BUF_MIN, (r->p.delivery_mem > 0 ? r->p.delivery_mem : LIMITS_DELIVERY_MEM) >> 10,
	    r->p.session_mem >> 10,
	    r->p.session_mem > LIMITS_SESSION_MEM ? " with TLS" : "", r->p.share, r->p.reserve);
	if (r->nwarn) {
		fprintf(f, "\nwarnings:\n");
		for (i = 0; i < r->nwarn; i++)
			fprintf(f, "  %s\n", r->warn[i]);
	}
}

/* ---- JSON ---- */

static void jstr(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

/* unknown is null; unlimited is the string "unlimited" */
static void jnum(FILE *f, long long v)
{
	if (v == LIMITS_UNLIMITED)
		fputs("\"unlimited\"", f);
	else if (v < 0)
		fputs("null", f);
	else
		fprintf(f, "%lld", v);
}

static void print_json(const struct report *r, FILE *f)
{
	int i;

	char src[64];

	fprintf(f, "{\"share_percent\":%d,\"reserve_percent\":%d,\"stress_threshold_percent\":%d,",
	    r->p.share, r->p.reserve, r->p.stress_threshold);
	fputs("\"limits_source\":", f);
	jstr(f, source_names(r->p.sources, src, sizeof src));
	fputs(",\"view\":", f);
	jstr(f, r->view);
	fputs(",", f);
	fprintf(f, "\"daemon\":{\"running\":%s", r->running ? "true" : "false");
	if (r->running) {
		fprintf(f, ",\"pid\":%ld,\"sample_time\":%lld,\"started\":%lld,\"sessions\":%lld,"
		    "\"sessions_limit\":%lld,\"stress\":%s,\"use\":{\"tcpsock\":%lld,\"othersock\":%lld,"
		    "\"descriptors\":%lld,\"memory\":%lld}",
		    r->st.pid, r->st.time, r->st.started, r->st.own.sessions, r->st.sessions_limit,
		    r->st.stress ? "true" : "false", r->own.tcp, r->own.other, r->own.fd, r->own.mem);
	} else {
		fputs(",\"reason\":", f);
		jstr(f, r->status_problem);
	}
	fputs("},\"resources\":[", f);
	for (i = 0; i < r->nrows; i++) {
		const struct row *w = &r->rows[i];
		const struct limits_res_state *st = &r->s.r[w->res];

		fprintf(f, "%s{\"name\":", i ? "," : "");
		jstr(f, w->name);
		fputs(",\"source\":", f);
		jstr(f, st->source);
		fprintf(f, ",\"unit\":\"%s\",\"limit\":", w->bytes ? "bytes" : "count");
		jnum(f, st->limit);
		fputs(",\"hardlimit\":", f);
		jnum(f, st->hardlimit);
		fputs(",\"held\":", f);
		jnum(f, st->held);
		fputs(",\"maxheld\":", f);
		jnum(f, st->maxheld);
		fputs(",\"failcnt\":", f);
		jnum(f, st->failcnt);
		fputs(",\"frugal\":", f);
		jnum(f, w->own);
		fputs(",\"budget\":", f);
		jnum(f, w->budget);
		fputs(",\"headroom\":", f);
		jnum(f, w->headroom);
		fputc('}', f);
	}
	fputs("],\"smtpd_sessions\":{\"limit\":", f);
	jnum(f, r->b.sessions);
	fputs(",\"bound_by\":", f);
	jstr(f, r->b.sessions_by);
	fprintf(f, ",\"memory_each\":%lld", r->p.session_mem);
	fputs("},\"deliveries\":{\"limit\":", f);
	jnum(f, r->b.deliveries);
	fputs(",\"bound_by\":", f);
	jstr(f, r->b.deliveries_by);
	fprintf(f, "},\"session_sndbuf\":%d,\"session_rcvbuf\":%d,\"stress\":%s,\"warnings\":[",
	    r->b.sndbuf, r->b.rcvbuf, r->running && r->st.stress ? "true" : "false");
	for (i = 0; i < r->nwarn; i++) {
		if (i)
			fputc(',', f);
		jstr(f, r->warn[i]);
	}
	fputs("]}\n", f);
}

/* Everything the report shows, detected now (also `frugal status`'s gauges). */
static void report_load(struct report *r, const struct conf *c)
{
	memset(r, 0, sizeof *r);
	limits_params_from_conf(c, &r->p);
	read_status(r, c);
	/* the daemon's view when it runs: its cgroup and rlimits, not this shell's */
	if (r->running)
		limits_cgroup_view(r->st.pid);
	limits_detect(&r->p, &r->s);
	if (r->running) {
		long long soft;

		if (daemon_rlimit(r->st.pid, "Max open files", &soft) == 0) {
			r->s.r[LR_NOFILE].limit = r->s.r[LR_NOFILE].hardlimit = soft;
			r->s.r[LR_NOFILE].held = r->st.own.fd;
		}
		if (daemon_rlimit(r->st.pid, "Max address space", &soft) == 0)
			r->s.r[LR_AS].limit = r->s.r[LR_AS].hardlimit = soft;
		snprintf(r->view, sizeof r->view, "the running daemon's (pid %ld%s%s)", r->st.pid,
		    r->s.cgroup_dir[0] ? ", cgroup " : "", r->s.cgroup_dir);
	} else {
		snprintf(r->view, sizeof r->view, "this process's (pid %ld%s%s): the daemon is not running",
		    (long)getpid(), r->s.cgroup_dir[0] ? ", cgroup " : "", r->s.cgroup_dir);
	}
	limits_compute(&r->p, &r->s, &r->own, &r->b);
	build(r);
}

int limits_daemon_status(const struct conf *c, struct limits_daemon *d)
{
	const char *q = conf_str(c, "queue_directory", 0);
	struct limits_status st;
	char path[600], buf[4096];
	const char *p;
	long n;

	memset(d, 0, sizeof *d);
	if (q == NULL || *q == '\0') {
		errno = ENOENT;
		return -1;
	}
	snprintf(path, sizeof path, "%s/%s", q, LIMITS_STATUS_NAME);
	if ((n = limits_read_file(path, buf, sizeof buf)) < 0)
		return -1;
	if (limits_status_parse(buf, (size_t)n, &st) < 0) {
		errno = EINVAL;
		return -1;
	}
	if (kill((pid_t)st.pid, 0) < 0 && errno != EPERM)
		return -1;   /* a stale file of a daemon that died */
	d->pid = st.pid;
	d->time = st.time;
	d->started = st.started;
	d->sessions = st.own.sessions;
	d->sessions_limit = st.sessions_limit;
	d->deliveries_limit = st.deliveries_limit;
	d->stress = st.stress;
	d->log_lost = st.log_lost;
	/* the counters' lines, for core/stats' parser: everything from the first "stat " */
	for (p = buf; p < buf + n; ) {
		const char *nl = memchr(p, '\n', (size_t)(buf + n - p));

		if ((size_t)(buf + n - p) > 5 && memcmp(p, "stat ", 5) == 0) {
			d->counters_len = (size_t)(buf + n - p) < sizeof d->counters ? (size_t)(buf + n - p) : sizeof d->counters - 1;
			memcpy(d->counters, p, d->counters_len);
			break;
		}
		p = nl ? nl + 1 : buf + n;
	}
	return 0;
}

int limits_gauges(const struct conf *c, struct limits_gauge *g, int max, int *running)
{
	static struct report r;   /* as in limits_cmd: off a small stack */
	int i, n = 0;

	report_load(&r, c);
	*running = r.running;
	for (i = 0; i < r.nrows && n < max; i++, n++) {
		const struct row *w = &r.rows[i];
		const struct limits_res_state *st = &r.s.r[w->res];

		snprintf(g[n].name, sizeof g[n].name, "%s", w->name);
		snprintf(g[n].key, sizeof g[n].key, "%s", limits_res_name[w->res]);
		for (char *k = g[n].key; *k; k++)
			if (*k == ' ')
				*k = '_';   /* a label value a query need not quote around */
		/* disk space is bytes too (the report shows it as a plain number) */
		g[n].bytes = w->bytes || w->res == LR_QUEUE_SPACE || w->res == LR_MBOX_SPACE;
		g[n].used = w->own;
		g[n].budget = w->budget == LIMITS_UNLIMITED ? -1 : w->budget;
		g[n].limit = st->limit == LIMITS_UNLIMITED ? -1 : st->limit;
	}
	return n;
}

int limits_cmd(int argc, char **argv)
{
	static struct report r;   /* ~15 KB: keep it off a small stack */
	struct conf *c;
	const char *dir = NULL;
	int json = 0, i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			dir = argv[++i];
		else if (strncmp(argv[i], "-c", 2) == 0 && argv[i][2])
			dir = argv[i] + 2;
		else {
			fprintf(stderr, "usage: frugal limits [-c DIR] [--json]\n");
			return 1;
		}
	}
	if ((c = conf_load_or_say(dir)) == NULL)
		return 1;
	report_load(&r, c);
	if (json)
		print_json(&r, stdout);
	else
		print_text(&r, stdout);
	conf_unref(c);
	return ferror(stdout) ? 75 : 0;
}

long long limits_memory_budget(const struct conf *c)
{
	struct limits_params p;
	struct limits_snapshot s;
	struct limits_own own;
	struct limits_budget b;

	memset(&own, 0, sizeof own);
	limits_params_from_conf(c, &p);
	limits_detect(&p, &s);
	limits_compute(&p, &s, &own, &b);
	return b.pool[LP_MEM] == LIMITS_UNLIMITED ? -1 : b.pool[LP_MEM];
}

/*
 * The wizard's view of the limits: the same detection and arithmetic as the
 * report, said in a few plain sentences (which limits bind, and the
 * concurrency frugal would use under configuration c).
 */
void limits_describe(const struct conf *c, FILE *f)
{
	static struct report r;   /* as in limits_cmd: off a small stack */
	char b[2][32];
	int i, n = 0;

	memset(&r, 0, sizeof r);
	limits_params_from_conf(c, &r.p);
	limits_detect(&r.p, &r.s);
	limits_compute(&r.p, &r.s, &r.own, &r.b);
	build(&r);
	fprintf(f, "Container limits found:");
	for (i = 0; i < r.nrows; i++) {
		const struct row *w = &r.rows[i];
		const struct limits_res_state *st = &r.s.r[w->res];

		if (st->limit == LIMITS_UNLIMITED || st->limit < 0)
			continue;
		fprintf(f, "%s %s %s (%s)", n++ ? "," : "", w->name, num(b[0], 32, st->limit, w->bytes), st->source);
	}
	fprintf(f, "%s\n", n ? "" : " none (no beancounters, no cgroup limits: only the descriptor limit)");
	fprintf(f, "frugal would take at most %d%% of each and serve up to %lld SMTP sessions at once "
	    "(bound by %s) and make up to %lld deliveries at once (bound by %s).\n",
	    r.p.share, r.b.sessions, r.b.sessions_by, r.b.deliveries, r.b.deliveries_by);
	if (r.b.pool[LP_MEM] != LIMITS_UNLIMITED)
		fprintf(f, "Its memory budget is %s.\n", num(b[1], 32, r.b.pool[LP_MEM], 1));
	for (i = 0; i < r.nwarn; i++)
		fprintf(f, "Note: %s\n", r.warn[i]);
}
