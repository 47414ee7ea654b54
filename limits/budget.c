/*
 * limits/budget.c: frugal's ledger. Owns the counters of what frugal holds
 * (sockets by kind, descriptors, sessions), the budget derived from the
 * latest snapshot of the container's limits, the concurrency it implies,
 * stress mode, the periodic re-sample on the event loop and the status
 * file `frugal limits` reads. Must never open a socket or block the loop
 * for more than reading a few small /proc and /sys files, and never call
 * back into other rooms except through the stress callbacks it was handed.
 *
 * Threads: limits_tcp_admit and limits_note_failure may be called from
 * worker threads; the rest runs on the loop thread only. The counts it
 * decides on are core/fd.h's and core/mem.h's.
 */
#include "limits/limits.h"
#include "limits/detect.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/stats.h"

#define SAMPLE_INTERVAL 5.0   /* seconds between re-samples */
#define KICK_MIN_GAP    1.0   /* a failure re-samples at most this often */
#define MAX_STRESS_CBS  16

/* ---------------- the arithmetic (pure) ---------------- */

static long long min_ll(long long a, long long b) { return a < b ? a : b; }

/* limit * pct / 100 without overflowing for limits near LLONG_MAX */
static long long pct_of(long long limit, int pct)
{
	return limit / 100 * pct + limit % 100 * pct / 100;
}

/*
 * A resource's budget: at most share% of its limit, and no more than what
 * keeps reserve% of the limit free for the rest of the container, given
 * what the others hold now (the container's held minus frugal's own use).
 * The result may be below frugal's current use: then takes fail until
 * someone releases, and the next sample raises it again by itself.
 */
long long limits_res_budget(long long limit, long long held, long long own, int share, int reserve)
{
	long long b, others, room;

	if (limit == LIMITS_UNLIMITED)
		return LIMITS_UNLIMITED;
	if (limit <= 0)
		return 0;
	b = pct_of(limit, share);
	if (held >= 0) {
		others = held - (own > 0 ? own : 0);
		if (others < 0)
			others = 0;
		room = limit - pct_of(limit, reserve) - others;
		b = min_ll(b, room > 0 ? room : 0);
	}
	return b;
}

static void pool_min(struct limits_budget *b, enum limits_pool p, enum limits_res r)
{
	if (b->res_budget[r] >= 0 && b->res_budget[r] < b->pool[p]) {
		b->pool[p] = b->res_budget[r];
		b->pool_by[p] = r;
	}
}

/* a candidate bound on a concurrency: keeps the smallest and its name */
static void bound(long long *v, const char **by, long long cand, const char *name)
{
	if (cand < 0)
		cand = 0;
	if (cand < *v) {
		*v = cand;
		*by = name;
	}
}

static int clamp_buf(long long v)
{
	if (v < LIMITS_BUF_MIN)
		return LIMITS_BUF_MIN;
	if (v > LIMITS_BUF_MAX)
		return LIMITS_BUF_MAX;
	return (int)v;
}

static long long avail(long long pool, long long fixed)
{
	if (pool == LIMITS_UNLIMITED)
		return LIMITS_UNLIMITED;
	return pool > fixed ? pool - fixed : 0;
}

/*
 * The concurrency formula (also printed by `frugal limits`):
 *
 *   pools:  TCP = budget(numtcpsock)   FD = min(budget(numfile), RLIMIT_NOFILE - 16,
 *           budget(file-nr))           MEM = min(budget(memory), budget(memory.max),
 *           budget(RLIMIT_AS))         where budget() is limits_res_budget()
 *   deliveries D = min(20, (FD - 16) / 4 / 2, (TCP - listeners) / 4,
 *                      (MEM - 4 MiB) / 4 / 64 KiB), at least 1
 *                  (a quarter of each pool; each delivery holds ~2 descriptors,
 *                  one of them maybe a TCP socket, and ~64 KiB)
 *   sessions S = min(TCP - listeners - D,            one TCP socket each
 *                    FD - 16 - 2 D,                  one descriptor each
 *                    tcpsndbuf / (2 * 4 KiB),        the smallest buffers the
 *                    tcprcvbuf / (2 * 4 KiB),        kernel gives (it doubles)
 *                    (MEM - 4 MiB - D * 64 KiB) / (4 KiB + sndbuf + rcvbuf))
 *                at least 1 while the TCP and FD pools are not empty.
 *   buffers: SO_SNDBUF = tcpsndbuf budget / S / 2 clamped to [4 KiB, 64 KiB]
 *            (the same for SO_RCVBUF), 0 (the kernel's) when not limited.
 *
 * Non-TCP sockets do not appear: frugal's are few and constant (the log,
 * worker pipes, the resolver) and do not grow with sessions.
 */
void limits_compute(const struct limits_params *p, const struct limits_snapshot *s,
    const struct limits_own *own, struct limits_budget *b)
{
	static const struct { enum limits_res r; int per_process; } shared[] = {
		{ LR_NUMOTHERSOCK, 0 }, { LR_NUMTCPSOCK, 0 }, { LR_NUMFILE, 0 }, { LR_MEMORY, 0 },
		{ LR_TCPSNDBUF, 0 }, { LR_TCPRCVBUF, 0 }, { LR_FILENR, 0 }, { LR_CG_MEMORY, 0 },
		{ LR_AS, 1 },
	};
	long long own_of[LR_COUNT] = { 0 };
	long long tcp, fd, mem, d, sess, snd_charge, rcv_charge, per, dmem;
	const char *by;
	size_t i;
	int k;

	memset(b, 0, sizeof *b);
	for (k = 0; k < LR_COUNT; k++)
		b->res_budget[k] = -1;
	/* container-wide limits: every process of frugal's; per-process ones: the daemon's */
	own_of[LR_NUMOTHERSOCK] = own->other + own->sib_other;
	own_of[LR_NUMTCPSOCK] = own->tcp;
	own_of[LR_NUMFILE] = own->fd + own->sib_fd;
	own_of[LR_FILENR] = own->fd + own->sib_fd;
	own_of[LR_MEMORY] = own->mem;
	own_of[LR_CG_MEMORY] = own->mem;
	for (i = 0; i < sizeof shared / sizeof shared[0]; i++) {
		const struct limits_res_state *st = &s->r[shared[i].r];

		if (st->source == NULL) {
			b->res_budget[shared[i].r] = LIMITS_UNLIMITED;
			continue;
		}
		/* RLIMIT_AS is the process's own, not shared with the container:
		 * held does not apply, but heap is only part of the address space */
		b->res_budget[shared[i].r] = limits_res_budget(st->limit,
		    shared[i].per_process ? -1 : st->held, own_of[shared[i].r], p->share, p->reserve);
	}
	/* RLIMIT_NOFILE is frugal's alone: all of it, less descriptors nobody charges */
	if (s->r[LR_NOFILE].source && s->r[LR_NOFILE].limit != LIMITS_UNLIMITED) {
		long long l = s->r[LR_NOFILE].limit;
		long long rsv = l / 4 < LIMITS_NOFILE_RESERVE ? l / 4 : LIMITS_NOFILE_RESERVE;
		b->res_budget[LR_NOFILE] = l - rsv;
	} else {
		b->res_budget[LR_NOFILE] = LIMITS_UNLIMITED;
	}

	for (k = 0; k < LP_COUNT; k++) {
		b->pool[k] = LIMITS_UNLIMITED;
		b->pool_by[k] = LR_COUNT;
	}
	pool_min(b, LP_TCP, LR_NUMTCPSOCK);
	pool_min(b, LP_OTHER, LR_NUMOTHERSOCK);
	pool_min(b, LP_FD, LR_NUMFILE);
	pool_min(b, LP_FD, LR_NOFILE);
	pool_min(b, LP_FD, LR_FILENR);
	pool_min(b, LP_MEM, LR_MEMORY);
	pool_min(b, LP_MEM, LR_CG_MEMORY);
	pool_min(b, LP_MEM, LR_AS);

	/*
	 * One TCP socket of the pool stays free (LIMITS_TCP_REFUSAL): a client
	 * over the budget is accepted to be told 421, and that socket must fit
	 * too (without it frugal held pool + 1 for the moment of the 421).
	 */
	tcp = avail(b->pool[LP_TCP], p->listeners + LIMITS_TCP_REFUSAL);
	fd = avail(b->pool[LP_FD], LIMITS_FIXED_FDS);
	mem = avail(b->pool[LP_MEM], own->mem_fixed > 0 ? own->mem_fixed : LIMITS_FIXED_MEM);

	dmem = p->delivery_mem > 0 ? p->delivery_mem : LIMITS_DELIVERY_MEM;
	/* deliveries: a quarter of each pool, never past LIMITS_DELIVERY_MAX */
	if (p->delivery_concurrency > 0) {
		d = p->delivery_concurrency;
		b->deliveries_by = "delivery_concurrency_limit";
	} else {
		d = LIMITS_DELIVERY_MAX;
		by = "the default maximum";
		if (fd != LIMITS_UNLIMITED)
			bound(&d, &by, fd / 4 / LIMITS_DELIVERY_FDS, limits_res_name[b->pool_by[LP_FD]]);
		if (tcp != LIMITS_UNLIMITED)
			bound(&d, &by, tcp / 4, limits_res_name[LR_NUMTCPSOCK]);
		if (mem != LIMITS_UNLIMITED)
			bound(&d, &by, mem / 4 / dmem, limits_res_name[b->pool_by[LP_MEM]]);
		if (d < 1)
			d = 1;
		b->deliveries_by = by;
	}
	b->deliveries = d;

	/* sessions, before memory: sockets, descriptors, socket buffer counters */
	sess = LIMITS_SESSIONS_MAX;
	by = "the default maximum (no limit found)";
	if (tcp != LIMITS_UNLIMITED)
		bound(&sess, &by, tcp - d, limits_res_name[LR_NUMTCPSOCK]);
	if (fd != LIMITS_UNLIMITED)
		bound(&sess, &by, fd - d * LIMITS_DELIVERY_FDS, limits_res_name[b->pool_by[LP_FD]]);
	if (b->res_budget[LR_TCPSNDBUF] != LIMITS_UNLIMITED)
		bound(&sess, &by, b->res_budget[LR_TCPSNDBUF] / (2 * LIMITS_BUF_MIN), limits_res_name[LR_TCPSNDBUF]);
	if (b->res_budget[LR_TCPRCVBUF] != LIMITS_UNLIMITED)
		bound(&sess, &by, b->res_budget[LR_TCPRCVBUF] / (2 * LIMITS_BUF_MIN), limits_res_name[LR_TCPRCVBUF]);
	if (p->smtpd_concurrency > 0) {
		sess = p->smtpd_concurrency;
		by = "smtpd_concurrency_limit";
	}

	/* buffers: split the socket buffer budgets over the sessions */
	per = sess > 0 ? sess : 1;
	b->sndbuf = b->res_budget[LR_TCPSNDBUF] == LIMITS_UNLIMITED ? 0
	    : clamp_buf(b->res_budget[LR_TCPSNDBUF] / per / 2);
	b->rcvbuf = b->res_budget[LR_TCPRCVBUF] == LIMITS_UNLIMITED ? 0
	    : clamp_buf(b->res_budget[LR_TCPRCVBUF] / per / 2);

	/* then memory, with the buffers just chosen */
	snd_charge = b->sndbuf ? 2LL * b->sndbuf : LIMITS_KERNEL_SNDBUF;
	rcv_charge = b->rcvbuf ? 2LL * b->rcvbuf : LIMITS_KERNEL_RCVBUF;
	if (mem != LIMITS_UNLIMITED && p->smtpd_concurrency <= 0) {
		long long m = mem - d * dmem;
		bound(&sess, &by, (m > 0 ? m : 0) / (p->session_mem + snd_charge + rcv_charge),
		    limits_res_name[b->pool_by[LP_MEM]]);
	}
	if (sess < 1 && b->pool[LP_TCP] > 0 && b->pool[LP_FD] > 0)
		sess = 1;
	b->sessions = sess;
	b->sessions_by = by;
}

int limits_stress_eval(int was_on, int threshold, const struct limits_snapshot *s,
    long long sessions, long long session_limit, char *why, size_t whylen)
{
	static const enum limits_res watched[] = {
		LR_NUMTCPSOCK, LR_NUMOTHERSOCK, LR_NUMFILE, LR_MEMORY, LR_CG_MEMORY,
	};
	long long best = -1;   /* highest use, in percent x 100 */
	size_t i;
	int need = was_on ? threshold - LIMITS_STRESS_HYSTERESIS : threshold;

	if (whylen)
		why[0] = '\0';
	if (session_limit > 0 && sessions >= 0) {
		best = sessions * 10000 / session_limit;
		snprintf(why, whylen, "sessions %lld/%lld", sessions, session_limit);
	}
	for (i = 0; i < sizeof watched / sizeof watched[0]; i++) {
		const struct limits_res_state *st = &s->r[watched[i]];
		long long v;

		if (st->source == NULL || st->held < 0 || st->limit <= 0 || st->limit == LIMITS_UNLIMITED)
			continue;
		v = st->held > LLONG_MAX / 10000 ? st->held / (st->limit / 10000 + 1)
		    : st->held * 10000 / st->limit;
		if (v > best) {
			best = v;
			snprintf(why, whylen, "%s %lld/%lld", limits_res_name[watched[i]], st->held, st->limit);
		}
	}
	return best >= (long long)need * 100;
}

/* ---------------- the ledger (daemon state) ---------------- */

struct stress_cb {
	void (*fn)(int on, void *arg);
	void *arg;
};

static struct {
	pthread_mutex_t mu;              /* guards the fail counters and the rate limiters */
	int ready;                       /* limits_init ran: budgets apply */
	long long sessions;              /* admitted and not done */
	struct limits_params p;
	struct limits_snapshot snap;
	struct limits_budget b;
	long long failcnt_start[LR_COUNT];
	long long failcnt_last[LR_COUNT];
	int stress;
	struct stress_cb cbs[MAX_STRESS_CBS];
	int ncbs;
	struct ev_loop *loop;
	pthread_t loop_thread;
	ev_timer sample;                 /* every SAMPLE_INTERVAL */
	ev_timer kick;                   /* one-shot re-sample after a failure */
	ev_tstamp last_sample;
	time_t started;
	char status_path[512];
	long long fixed_mem;             /* this process's private memory the allocator does not see */
	long long siblings_mem;          /* the helpers' and the master's private memory, last sample */
	long siblings[LIMITS_MAX_SIBLINGS];
	int nsiblings;
	long long sib_fd, sib_other;     /* their descriptors and non-TCP sockets, as reported */
	void (*on_sample)(void);         /* refreshes what siblings report, before each sample */
	void (*detect)(const struct limits_params *, struct limits_snapshot *);
	struct log_rate fail_rate, warn_rate, failcnt_rate;
} L = {
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.fail_rate = LOG_RATE_INIT(60, 5),
	.warn_rate = LOG_RATE_INIT(300, 3),
	.failcnt_rate = LOG_RATE_INIT(60, 3),
};

static void lock(void) { pthread_mutex_lock(&L.mu); }
static void unlock(void) { pthread_mutex_unlock(&L.mu); }

static long long tcp_cap(long long pool);

int limits_tcp_admit(const char **why)
{
	if (!fd_room(FD_TCP, 0)) {
		/* which cap: the TCP pool, or all descriptors */
		*why = L.ready && L.b.pool[LP_TCP] != LIMITS_UNLIMITED && fd_count(FD_TCP) > tcp_cap(L.b.pool[LP_TCP])
		    ? "numtcpsock" : "descriptor";
		return 0;
	}
	return 1;
}

static void own_use(struct limits_own *o)
{
	o->tcp = fd_count(FD_TCP);
	o->other = fd_count(FD_SOCK);
	o->fd = fd_total();
	o->mem_fixed = L.fixed_mem + L.siblings_mem;
	o->sib_fd = L.sib_fd;
	o->sib_other = L.sib_other;
	o->mem = (long long)mem_in_use() + o->mem_fixed;
	o->sessions = L.sessions;
}

static void set_stress(int on, const char *why)
{
	int i;

	if (on == L.stress)
		return;
	L.stress = on;
	log_info("limits", "stress mode %s: %s", on ? "on" : "off", why);
	for (i = 0; i < L.ncbs; i++)
		L.cbs[i].fn(on, L.cbs[i].arg);
}

/* free bytes/inodes of a disk row, -1 unknown */
static long long disk_free(enum limits_res k)
{
	const struct limits_res_state *st = &L.snap.r[k];

	return st->source && st->held >= 0 && st->limit != LIMITS_UNLIMITED ? st->limit - st->held : -1;
}

/*
 * A file system short of room is stress too: under twice what MAIL needs
 * (queue_minfree, 1.5 x message_size_limit), off again above 2.2 times.
 */
static int disk_stress(int was_on, char *why, size_t whylen)
{
	static const enum limits_res space[] = { LR_QUEUE_SPACE, LR_MBOX_SPACE };
	long long need = limits_disk_need_bytes(&L.p), f;
	size_t i;

	if (need <= 0)
		return 0;
	for (i = 0; i < sizeof space / sizeof space[0]; i++) {
		if ((f = disk_free(space[i])) < 0)
			continue;
		if (f < (was_on ? need * 22 / 10 : need * 2)) {
			snprintf(why, whylen, "%s %lld bytes free, %lld needed", limits_res_name[space[i]], f, need);
			return 1;
		}
	}
	return 0;
}

static void eval_stress(void)
{
	char why[128];
	int on;

	if (!L.ready)
		return;
	/* on: what crossed the threshold; off: what is highest now, below it */
	on = limits_stress_eval(L.stress, L.p.stress_threshold, &L.snap, L.sessions, L.b.sessions,
	    why, sizeof why);
	if (!on)
		on = disk_stress(L.stress, why, sizeof why);
	set_stress(on, why);
}

int limits_disk_admit(long long size, char *why, size_t whylen)
{
	static time_t checked;
	long long need, f;
	time_t now = time(NULL);

	if (!L.ready)
		return 1;
	/* a flood of MAILs costs one statvfs a second, and space coming back is seen within one */
	if (now != checked) {
		checked = now;
		limits_detect_disk(&L.p, &L.snap);
		eval_stress();
	}
	need = limits_disk_need_bytes(&L.p);
	if ((f = disk_free(LR_QUEUE_SPACE)) >= 0 && f < need + (size > 0 ? size : 0)) {
		snprintf(why, whylen, "queue file system %s: %lld bytes free, %lld needed (queue_minfree, "
		    "1.5 x message_size_limit%s)", L.p.queue_dir, f, need + (size > 0 ? size : 0),
		    size > 0 ? ", SIZE" : "");
		return 0;
	}
	if ((f = disk_free(LR_QUEUE_INODES)) >= 0 &&
	    f < limits_disk_need_inodes(L.snap.r[LR_QUEUE_INODES].limit)) {
		snprintf(why, whylen, "queue file system %s: %lld inodes free, %lld needed", L.p.queue_dir, f,
		    limits_disk_need_inodes(L.snap.r[LR_QUEUE_INODES].limit));
		return 0;
	}
	return 1;
}

int limits_session_admit(void)
{
	if (L.ready && L.sessions >= L.b.sessions)
		return 0;
	L.sessions++;
	eval_stress();
	return 1;
}

void limits_session_done(void)
{
	if (L.sessions > 0)
		L.sessions--;
	eval_stress();
}

int limits_smtpd_concurrency(void) { return L.ready ? (int)L.b.sessions : LIMITS_SESSIONS_MAX; }
int limits_delivery_concurrency(void) { return L.ready ? (int)L.b.deliveries : LIMITS_DELIVERY_MAX; }
int limits_sessions(void) { return (int)L.sessions; }
int limits_session_sndbuf(void) { return L.ready ? L.b.sndbuf : 0; }
int limits_session_rcvbuf(void) { return L.ready ? L.b.rcvbuf : 0; }
int limits_stress(void) { return L.stress; }
const struct limits_snapshot *limits_current_snapshot(void) { return &L.snap; }
const struct limits_budget *limits_current_budget(void) { return &L.b; }

void limits_on_stress(void (*cb)(int on, void *arg), void *arg)
{
	if (L.ncbs >= MAX_STRESS_CBS) {
		log_warning("limits", "too many stress callbacks; one ignored");
		return;
	}
	L.cbs[L.ncbs].fn = cb;
	L.cbs[L.ncbs].arg = arg;
	L.ncbs++;
}

void limits_set_detect_override(void (*fn)(const struct limits_params *, struct limits_snapshot *))
{
	L.detect = fn;
}

void limits_set_status_path(const char *path)
{
	snprintf(L.status_path, sizeof L.status_path, "%s", path ? path : "");
}

/* Publish live use for `frugal limits`: tmp + rename, so a reader never
 * sees half a file; 0644 so an unprivileged admin may read it. */
static void write_status(void)
{
	struct limits_status st;
	char buf[4096], tmp[600];
	int fd, n, k;

	if (L.status_path[0] == '\0')
		return;
	memset(&st, 0, sizeof st);
	st.pid = (long)getpid();
	st.time = (long long)time(NULL);
	st.started = (long long)L.started;
	own_use(&st.own);
	st.fd_kernel = -1;
	st.log_lost = (long long)log_lost_total();
	if (L.loop) {
		/* the daemon: the ledger against /proc/self/fd, read at one instant (core/fd.h) */
		long long ledger;

		if (fd_audit(&st.fd_kernel, &ledger) == 0) {
			st.own.fd = ledger;
			if (st.fd_kernel != ledger) {
				lock();
				log_ratelimited(&L.warn_rate, "limits", "descriptor ledger %lld, kernel %lld: "
				    "a descriptor was opened or closed outside core/fd", ledger, st.fd_kernel);
				unlock();
			}
		}
	}
	st.sessions_limit = L.b.sessions;
	st.deliveries_limit = L.b.deliveries;
	st.stress = L.stress;
	for (k = 0; k < LR_COUNT; k++)
		st.failcnt_start[k] = L.failcnt_start[k];
	for (k = 0; k < LP_COUNT; k++)
		st.pool[k] = L.b.pool[k];
	if ((n = limits_status_format(&st, buf, sizeof buf)) < 0)
		return;
	{
		/* the daemon's counters ride along for `frugal status` (core/stats.h) */
		long long v[STATS_COUNT];
		int m;

		for (k = 0; k < STATS_COUNT; k++)
			v[k] = stats_get((enum stats_counter)k);
		if ((m = stats_format(v, buf + n, sizeof buf - (size_t)n)) < 0)
			return;
		n += m;
	}
	if ((size_t)snprintf(tmp, sizeof tmp, "%s.%ld.tmp", L.status_path, st.pid) >= sizeof tmp)
		return;
	/* the status file is a descriptor like any other: when the budget has
	 * none to spare, the report waits for the next sample */
	if ((fd = fd_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644)) < 0) {
		lock();
		log_ratelimited(&L.warn_rate, "limits", "%s: %s", tmp, strerror(errno));
		unlock();
		return;
	}
	(void)fchmod(fd, 0644);   /* whatever the umask */
	if (write(fd, buf, (size_t)n) != n || fd_close(fd) < 0 || rename(tmp, L.status_path) < 0) {
		int e = errno;
		unlink(tmp);
		lock();
		log_ratelimited(&L.warn_rate, "limits", "%s: %s", L.status_path, strerror(e));
		unlock();
	}
}

/* a source that read fine last time and not now keeps its last values:
 * a half-written file must not look like "no limit" */
static void keep_stale(struct limits_snapshot *now, const struct limits_snapshot *before)
{
	int k;

	for (k = 0; k < LR_COUNT; k++)
		if (now->r[k].source == NULL && before->r[k].source != NULL)
			now->r[k] = before->r[k];
}

static const char *failcnt_meaning(enum limits_res k)
{
	switch (k) {
	case LR_NUMOTHERSOCK: return "non-TCP sockets";
	case LR_NUMTCPSOCK:   return "TCP sockets";
	case LR_NUMFILE:      return "open files";
	case LR_MEMORY:       return "memory";
	case LR_TCPSNDBUF:    return "TCP send buffers";
	case LR_TCPRCVBUF:    return "TCP receive buffers";
	case LR_OTHERSOCKBUF: return "non-TCP socket buffers";
	case LR_NUMPROC:      return "processes";
	case LR_CG_MEMORY:    return "memory";
	default:              return "a resource";
	}
}

long long limits_proc_vmdata(long pid)
{
	char path[64], buf[4096], *p;
	long n;

	if (pid > 0)
		snprintf(path, sizeof path, "/proc/%ld/status", pid);
	else
		snprintf(path, sizeof path, "/proc/self/status");
	if ((n = limits_read_file(path, buf, sizeof buf)) < 0 || (p = strstr(buf, "\nVmData:")) == NULL)
		return -1;
	return strtoll(p + 9, NULL, 10) * 1024;
}

void limits_measure_fixed(void)
{
	long long vm = limits_proc_vmdata(0), heap = (long long)mem_in_use();

#if defined(__SANITIZE_ADDRESS__)
	/* ASan reserves terabytes of shadow: a sanitizer build budgets as if unmeasured */
	vm = 0;
#endif
	L.fixed_mem = vm > heap ? vm - heap : 0;
}

void limits_set_siblings(const long *pids, int n)
{
	int i;

	L.nsiblings = 0;
	for (i = 0; i < n && i < LIMITS_MAX_SIBLINGS; i++)
		if (pids[i] > 0)
			L.siblings[L.nsiblings++] = pids[i];
}

void limits_set_sibling_fds(long long fds, long long socks)
{
	L.sib_fd = fds;
	L.sib_other = socks;
}

void limits_on_sample(void (*fn)(void))
{
	L.on_sample = fn;
}

static void sample_siblings(void)
{
	long long sum = 0, v;
	int i;

	if (L.on_sample)
		L.on_sample();
	for (i = 0; i < L.nsiblings; i++)
		if ((v = limits_proc_vmdata(L.siblings[i])) > 0)
			sum += v;
#if defined(__SANITIZE_ADDRESS__)
	sum = 0;   /* siblings of a sanitizer build reserve terabytes of shadow too */
#endif
	L.siblings_mem = sum;
}

/* the part of a pool this process may hold: siblings share container-wide limits, not rlimits */
static long long daemon_part(const struct limits_budget *b, enum limits_pool p, long long siblings)
{
	long long v = b->pool[p];

	if (v == LIMITS_UNLIMITED || b->pool_by[p] == LR_NOFILE || b->pool_by[p] == LR_AS)
		return v;
	return v > siblings ? v - siblings : 0;
}

/* a pool as a core/fd cap: 0 is "no cap"; an empty pool still refuses (1 below any count) */
static long long cap_of(long long pool)
{
	if (pool == LIMITS_UNLIMITED)
		return 0;
	return pool > 0 ? pool : -1;
}

/* the TCP pool as core/fd's cap: what is left when the refusal's socket is kept free */
static long long tcp_cap(long long pool)
{
	if (pool == LIMITS_UNLIMITED)
		return pool;
	return pool > LIMITS_TCP_REFUSAL ? pool - LIMITS_TCP_REFUSAL : pool;
}

void limits_resample(void)
{
	struct limits_snapshot snap;
	struct limits_budget b;
	struct limits_own own;
	long long old_sessions = L.b.sessions, old_deliveries = L.b.deliveries;
	int first = L.started == 0, k;

	if (L.detect)
		L.detect(&L.p, &snap);
	else
		limits_detect(&L.p, &snap);
	if (!first)
		keep_stale(&snap, &L.snap);
	for (k = 0; k < snap.nwarn; k++) {
		lock();
		log_ratelimited(&L.warn_rate, "limits", "%s", snap.warn[k]);
		unlock();
	}
	for (k = 0; k < LR_COUNT; k++) {
		long long f = snap.r[k].failcnt;

		if (first || L.failcnt_start[k] < 0)
			L.failcnt_start[k] = f;
		if (!first && f >= 0 && L.failcnt_last[k] >= 0 && f > L.failcnt_last[k]) {
			lock();
			log_ratelimited(&L.failcnt_rate, "limits",
			    "failcnt for %s rose by %lld (%lld since start): the container refused %s",
			    limits_res_name[k], f - L.failcnt_last[k],
			    L.failcnt_start[k] >= 0 ? f - L.failcnt_start[k] : f, failcnt_meaning((enum limits_res)k));
			unlock();
		}
		L.failcnt_last[k] = f;
	}
	sample_siblings();
	own_use(&own);
	limits_compute(&L.p, &snap, &own, &b);
	L.snap = snap;
	lock();
	L.b = b;
	L.ready = 1;
	unlock();
	/* the allocator gets the memory pool less what it cannot see (stacks, helpers) */
	mem_set_limit(b.pool[LP_MEM] == LIMITS_UNLIMITED ? 0
	    : b.pool[LP_MEM] > own.mem_fixed ? (size_t)(b.pool[LP_MEM] - own.mem_fixed) : 1);
	/* the daemon's caps: frugal's pools less what its siblings hold of container-wide limits */
	fd_set_caps(cap_of(daemon_part(&b, LP_FD, own.sib_fd)), cap_of(tcp_cap(b.pool[LP_TCP])),
	    cap_of(daemon_part(&b, LP_OTHER, own.sib_other)));
	if (first)
		L.started = time(NULL);
	if (!first && (b.sessions != old_sessions || b.deliveries != old_deliveries))
		log_info("limits", "smtpd sessions %lld: bound by %s (was %lld); deliveries %lld: bound by %s",
		    b.sessions, b.sessions_by, old_sessions, b.deliveries, b.deliveries_by);
	if (L.loop)
		L.last_sample = ev_now(L.loop);
	eval_stress();
	write_status();
}

static void sample_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	limits_resample();
}

const char *limits_socket_refusal(int is_unix)
{
	enum fd_kind k = is_unix ? FD_SOCK : FD_TCP;
	enum limits_res r = LR_COUNT;

	if (fd_room(k, 1))
		return NULL;
	lock();
	if (L.ready)
		r = L.b.pool_by[fd_kind_room(k, 1) ? LP_FD : is_unix ? LP_OTHER : LP_TCP];
	unlock();
	return r < LR_COUNT ? limits_res_name[r] : NULL;
}

void limits_note_failure(const char *resource, int err)
{
	static unsigned long count;
	unsigned long n;

	lock();
	n = ++count;
	log_ratelimited(&L.fail_rate, "limits", "%s: %s (%lu refusals so far); re-sampling limits",
	    resource ? resource : "resource", strerror(err), n);
	unlock();
	/* libev watchers belong to the loop thread; a worker's failure waits
	 * for the periodic sample */
	if (L.loop == NULL || !pthread_equal(pthread_self(), L.loop_thread) || ev_is_active(&L.kick))
		return;
	{
		ev_tstamp gap = L.last_sample + KICK_MIN_GAP - ev_now(L.loop);

		ev_timer_set(&L.kick, gap > 0 ? gap : 0., 0.);
		ev_timer_start(L.loop, &L.kick);
		ev_unref(L.loop);
	}
}

static void kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	ev_ref(loop);   /* a stopped one-shot timer: balance the unref of its start */
	limits_resample();
}

static void log_summary(void)
{
	int k, container = L.snap.found & (LIMITS_SRC_BEANCOUNTERS | LIMITS_SRC_CGROUP | LIMITS_SRC_MANUAL);

	log_info("limits", "smtpd sessions %lld: bound by %s; deliveries %lld: bound by %s%s",
	    L.b.sessions, L.b.sessions_by, L.b.deliveries, L.b.deliveries_by,
	    container ? "" : "; no container limits found: using RLIMIT_NOFILE only");
	for (k = 0; k < L.snap.nwarn; k++)
		log_warning("limits", "%s", L.snap.warn[k]);
}

int limits_init_params(struct ev_loop *loop, const struct limits_params *p)
{
	int k;

	limits_shutdown();
	L.p = *p;
	L.started = 0;
	L.stress = 0;
	for (k = 0; k < LR_COUNT; k++)
		L.failcnt_start[k] = L.failcnt_last[k] = -1;
	/* the summary names this sample's warnings; don't say them twice */
	L.warn_rate.window_start = time(NULL);
	L.warn_rate.in_window = L.warn_rate.burst;
	limits_resample();
	L.warn_rate.in_window = 0;
	L.warn_rate.suppressed = 0;
	log_summary();
	L.loop = loop;
	if (loop) {
		L.loop_thread = pthread_self();
		L.last_sample = ev_now(loop);
		ev_timer_init(&L.sample, sample_cb, SAMPLE_INTERVAL, SAMPLE_INTERVAL);
		ev_timer_start(loop, &L.sample);
		/* sampling alone must not keep the loop running at shutdown */
		ev_unref(loop);
		ev_init(&L.kick, kick_cb);
	}
	return 0;
}

int limits_init(struct ev_loop *loop, const struct conf *c)
{
	struct limits_params p;

	limits_params_from_conf(c, &p);
	if (L.status_path[0] == '\0' && c) {
		const char *q = conf_str(c, "queue_directory", 0);

		if (q && *q)
			snprintf(L.status_path, sizeof L.status_path, "%s/%s", q, LIMITS_STATUS_NAME);
	}
	return limits_init_params(loop, &p);
}

void limits_reconfigure(const struct conf *c)
{
	struct limits_params p;

	limits_params_from_conf(c, &p);
	L.p = p;
	limits_resample();
	log_info("limits", "reconfigured: smtpd sessions %lld: bound by %s; deliveries %lld: bound by %s",
	    L.b.sessions, L.b.sessions_by, L.b.deliveries, L.b.deliveries_by);
}

void limits_shutdown(void)
{
	if (L.loop) {
		if (ev_is_active(&L.sample)) {
			ev_ref(L.loop);
			ev_timer_stop(L.loop, &L.sample);
		}
		if (ev_is_active(&L.kick)) {
			ev_ref(L.loop);
			ev_timer_stop(L.loop, &L.kick);
		}
		L.loop = NULL;
	}
	/* only the daemon that wrote it removes it: no status means "not running" */
	if (L.status_path[0] && L.started)
		unlink(L.status_path);
	L.ready = 0;
	fd_set_caps(0, 0, 0);
	L.started = 0;
}
