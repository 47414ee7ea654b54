/*
 * queue/qmgr.c: the queue manager (Postfix's qmgr). Owns the in-memory
 * view of the queue and every delivery attempt:
 *
 *   stubs      one small struct per message it knows (ID, retry timing), in
 *              the active list (due) or the deferred list (waiting for
 *              next_try), at most qmgr_message_active_limit of them; the
 *              rest wait on disk and are found by the next scan, a deferred
 *              file's mtime being its next try (as Postfix).
 *   loaded     messages whose envelope is read and expanded (targets), at
 *              most loaded_limit; each is cut into jobs: one per next hop,
 *              up to *_destination_recipient_limit targets each.
 *   jobs       wait in their destination (sched.c: slow start, dead
 *              destinations, round-robin) for a slot and for room in the
 *              total, delivery_concurrency_limit, then go to their agent
 *              (agent.c) behind one interface.
 *
 * When a message's jobs are all done: a non-delivery report is queued first
 * (bounce.c) if anything bounced, then the recipients' states are written
 * and synced (or the file retired when none is left), then the message is
 * forgotten or deferred with backoff. A message that needs one job and
 * bounces nothing writes its states from the delivery worker itself.
 *
 * Must never remove a message before every recipient is delivered or its
 * bounce is durably queued, never bounce mail for a lack of resources (that
 * is a deferral), and never block the loop on a sync.
 */
#include "queue/queue_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/stats.h"
#include "core/sync.h"
#include "core/worker.h"
#include "limits/limits.h"

#define NBUCKETS        4096  /* ID hash: finds a message by ID in O(1) */
#define DLV_FILES       8     /* queue file (and a read-only one for a helper), the mailbox base, its path, tmp/new/cur, the file */
#define RETRY_RESOURCE  1.0   /* seconds before retrying after a refused resource */
#define DEFAULT_PARALLEL 4
#define LOADED_MAX      256   /* envelopes in memory at once (each holds its targets) */
#define FLUSH_DOMAINS   16    /* ETRN / `frugal queue flush DOMAIN` requests pending at once */

struct qmsg {
	char   id[QUEUE_ID_MAX];
	struct qmsg *next;      /* active or deferred list */
	struct qmsg *hnext;     /* hash chain */
	double seen_at;         /* when qmgr first learned of it (delays=a/b) */
	time_t next_try;        /* deferred: earliest retry */
	int    backoff;         /* seconds of the last deferral */
	unsigned busy:1;        /* loaded: jobs in flight */
	unsigned force:1;       /* a flush: defer_transports do not hold it */
	unsigned probe:1;       /* a flush for some domains: attempted only if one matches */
	unsigned swept:1;       /* tests: its first attempt had an allocation failure armed (sweep_arm) */
};

struct qmgr {
	struct ev_loop *loop;
	struct spool *s;
	struct conf *c;          /* our reference */
	struct resolver *r;      /* built from c */
	struct router *rt;       /* built from c */
	struct sched *sched;
	char  *qdir;             /* owned copy of the spool directory */
	struct qmsg *act_head, **act_tail;   /* ready to load, FIFO */
	struct qmsg *def_head;               /* waiting for next_try */
	struct qmsg **hash;                  /* NBUCKETS chains */
	int    nmsgs, loaded, inflight, limit;
	int    rescan;                       /* new messages may be on disk past the cursor, not in memory */
	int    full_rescan;                  /* deferred messages may be on disk only (evicted, or not due at start) */
	int    rescan_force;                 /* the next scan takes files not due yet (a flush) */
	int    skipped_later;                /* the running scan passed over files not due yet */
	char   cursor[QUEUE_ID_MAX];         /* catch-up scans look past this ID only */
	char   scan_commit[QUEUE_ID_MAX];    /* the running scan leaves this ID and later ones (commits in flight) */
	int    add_failed;                   /* the running scan could not keep one (memory) */
	char   flush_dom[FLUSH_DOMAINS][256];
	int    nflush_dom, nprobe;
	ev_prepare kick;                     /* load and dispatch between iterations */
	ev_timer run_timer;                  /* deferred scan, queue_run_delay */
	ev_timer retry_timer;                /* after a refused resource */
	ev_timer scan_timer;                 /* a scan soon: room freed below the stub cap */
	/* parameters, read at (re)configuration */
	long   run_delay, min_backoff, max_backoff, max_lifetime, bounce_lifetime, hop_limit;
	long   delay_warning;
	int    active_limit;
	int    stopping;                     /* qmgr_free: finish what is loaded, load nothing */
	struct qmgr_stats st;
	/*
	 * Tests only (FRUGAL_ALLOC_SWEEP_DELIVERY=DOMAIN, tests/integration/
	 * test_faults_out.py): the first attempt of each message with a recipient
	 * in DOMAIN fails its sweep_n-th allocation (1 + (n-1) x
	 * FRUGAL_ALLOC_SWEEP_STRIDE) from the dispatch of its job to the end of
	 * the attempt (notices queued, states written, file retired or deferred);
	 * one such attempt at a time; disarmed at its end.
	 */
	const char *sweep_domain;
	unsigned long sweep_n, sweep_stride;
	struct lmsg *sweeping;               /* the attempt armed now, or NULL */
};

enum rcpt_result { RR_NONE, RR_SENT, RR_DEFER, RR_BOUNCE };

/* A loaded message: its envelope, its targets, its jobs. */
struct lmsg {
	struct worker_job wj;        /* finish (marks, retire) and header reads */
	struct qmgr *q;
	struct qmsg *m;
	struct spool_env env;
	int    fd;
	struct target_list *tl;      /* per recipient; empty for recipients already done */
	enum rcpt_result *res;       /* per recipient */
	struct agent_job *jobs;      /* njobs, owned */
	int    njobs, pending;       /* jobs (and mark batches) not yet done */
	struct msg_headers hdr;
	int    hdr_ok;
	int    finished_in_job;      /* the fast path wrote the states from the worker */
	int    removed;              /* the queue file is gone */
	int    mark_err;             /* errno of a failed mark/sync */
	int    expired;              /* past its queue lifetime: deferrals become bounces */
	int    note, want_note;      /* notifications: the step now, the steps wanted (NOTE_* bits) */
	int    mark_warned;          /* a delay warning is queued: record it (W byte) with the marks */
	double t_load;
};

static double now_f(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

void queue_fmt_delay(char *out, size_t n, double d)
{
	if (d < 0)
		d = 0;
	if (d >= 10)
		snprintf(out, n, "%.0f", d);
	else if (d >= 1)
		snprintf(out, n, "%.1f", d);
	else if (d >= 0.01)
		snprintf(out, n, "%.2f", d);
	else
		snprintf(out, n, "%s", d > 0 ? "0.01" : "0");
}

static unsigned hash_id(const char *id)
{
	unsigned h = 2166136261u;

	for (; *id; id++)
		h = (h ^ (unsigned char)*id) * 16777619u;
	return h % NBUCKETS;
}

static struct qmsg *find_msg(struct qmgr *q, const char *id)
{
	struct qmsg *m;

	for (m = q->hash[hash_id(id)]; m; m = m->hnext)
		if (strcmp(m->id, id) == 0)
			return m;
	return NULL;
}

static void scan_soon(struct qmgr *q);
static void probe_release(struct qmgr *q);

static void forget_stub(struct qmgr *q, struct qmsg *m)
{
	struct qmsg **pp;

	for (pp = &q->hash[hash_id(m->id)]; *pp; pp = &(*pp)->hnext)
		if (*pp == m) {
			*pp = m->hnext;
			break;
		}
	if (m->probe) {
		q->nprobe--;
		probe_release(q);
	}
	q->nmsgs--;
	mem_free(m);
}

static void forget_msg(struct qmgr *q, struct qmsg *m)
{
	forget_stub(q, m);
	scan_soon(q);
}

static void kick(struct qmgr *q)
{
	if (!ev_is_active(&q->kick))
		ev_prepare_start(q->loop, &q->kick);
}

static void push_active(struct qmgr *q, struct qmsg *m)
{
	m->next = NULL;
	*q->act_tail = m;
	q->act_tail = &m->next;
	kick(q);
}

static void push_deferred(struct qmgr *q, struct qmsg *m, time_t when)
{
	m->next_try = when;
	m->next = q->def_head;
	q->def_head = m;
}

/*
 * Learn of a message. due: when it may be tried (its file's mtime; 0: now).
 * Past the stub cap it stays on disk only: the next scan finds it.
 */
static struct qmsg *add_msg(struct qmgr *q, const char *id, time_t due)
{
	struct qmsg *m;
	unsigned h;

	if (!spool_id_valid(id))
		return NULL;
	if ((m = find_msg(q, id)) != NULL)
		return m;
	if (q->nmsgs >= q->active_limit && q->def_head != NULL) {
		/*
		 * Full: a deferred message makes room for a new one. It loses nothing:
		 * its file's mtime holds its next try, and a full scan brings it back.
		 */
		struct qmsg *old = q->def_head;
		q->def_head = old->next;
		q->full_rescan = 1;
		forget_stub(q, old);
	}
	if (q->nmsgs >= q->active_limit) {
		q->rescan = 1;
		/* committed out of ID order, behind the cursor: the catch-up scan starts over */
		if (strcmp(id, q->cursor) <= 0)
			q->cursor[0] = '\0';
		return NULL;
	}
	if ((m = mem_calloc(1, sizeof *m)) == NULL) {
		/* it is safe on disk; the next deferred scan picks it up */
		q->rescan = 1;
		log_warning("qmgr", "%s: out of memory: delivery postponed to the next queue scan", id);
		return NULL;
	}
	snprintf(m->id, sizeof m->id, "%s", id);
	m->seen_at = now_f();
	h = hash_id(id);
	m->hnext = q->hash[h];
	q->hash[h] = m;
	q->nmsgs++;
	if (q->nmsgs > q->st.peak_msgs)
		q->st.peak_msgs = q->nmsgs;
	if (due > time(NULL))
		push_deferred(q, m, due);
	else
		push_active(q, m);
	return m;
}

/* ---- configuration ---------------------------------------------------------- */

static long conf_time_or(const struct conf *c, const char *name, long def)
{
	const char *v = conf_str(c, name, 0);
	return v && *v ? (long)conf_time(c, name, 0) : def;
}

static long conf_int_or(const struct conf *c, const char *name, long def)
{
	const char *v = conf_str(c, name, 0);
	return v && *v ? (long)conf_int(c, name, 0) : def;
}

static void read_params(struct qmgr *q)
{
	struct conf *c = q->c;

	q->run_delay = conf_time_or(c, "queue_run_delay", 300);
	q->min_backoff = conf_time_or(c, "minimal_backoff_time", 300);
	q->max_backoff = conf_time_or(c, "maximal_backoff_time", 4000);
	q->max_lifetime = conf_time_or(c, "maximal_queue_lifetime", 5 * 86400);
	q->bounce_lifetime = conf_time_or(c, "bounce_queue_lifetime", 5 * 86400);
	q->delay_warning = conf_time_or(c, "delay_warning_time", 0);
	q->hop_limit = conf_int_or(c, "hopcount_limit", 50);
	q->active_limit = (int)conf_int_or(c, "qmgr_message_active_limit", 20000);
	if (q->active_limit < 1)
		q->active_limit = 1;
	if (q->run_delay < 1)
		q->run_delay = 1;
	if (q->min_backoff < 1)
		q->min_backoff = 1;
	if (q->max_backoff < q->min_backoff)
		q->max_backoff = q->min_backoff;
	if (q->limit == 0) {
		if (conf_is_auto(c, "delivery_concurrency_limit", 0) ||
		    conf_int(c, "delivery_concurrency_limit", 0) <= 0)
			q->limit = DEFAULT_PARALLEL;
		else
			q->limit = (int)conf_int(c, "delivery_concurrency_limit", 0);
	}
}

/*
 * Per transport: TRANSPORT_destination_concurrency_limit and friends when
 * set (conf/params.c has rows for the transports frugal knows), else the
 * default_* values, as Postfix.
 */
static void transport_params(struct qmgr *q, const char *transport, struct sched_params *p)
{
	char name[96];
	const struct conf *c = q->c;

	p->initial = (int)conf_int_or(c, "initial_destination_concurrency", 5);
	p->limit = (int)conf_int_or(c, "default_destination_concurrency_limit", 20);
	p->rcpt_limit = (int)conf_int_or(c, "default_destination_recipient_limit", 50);
	p->cohort_limit = 1;
	p->dead_time = (double)q->min_backoff;
	snprintf(name, sizeof name, "%s_initial_destination_concurrency", transport);
	p->initial = (int)conf_int_or(c, name, p->initial);
	snprintf(name, sizeof name, "%s_destination_concurrency_limit", transport);
	p->limit = (int)conf_int_or(c, name, p->limit);
	snprintf(name, sizeof name, "%s_destination_recipient_limit", transport);
	p->rcpt_limit = (int)conf_int_or(c, name, p->rcpt_limit);
	if (p->rcpt_limit < 1)
		p->rcpt_limit = 1;
}

static void run_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void retry_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void scan_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void kick_cb(struct ev_loop *loop, ev_prepare *w, int revents);
static void announce_cb(void *arg, const char *id);

struct qmgr *qmgr_new(struct ev_loop *loop, struct spool *s, struct conf *c)
{
	struct qmgr *q;
	char err[512];

	if ((q = mem_calloc(1, sizeof *q)) == NULL)
		return NULL;
	if ((q->hash = mem_calloc(NBUCKETS, sizeof *q->hash)) == NULL ||
	    (q->qdir = mem_strdup(spool_dir(s))) == NULL ||
	    (q->sched = sched_new()) == NULL)
		goto fail;
	if ((q->r = resolver_new(c, err, sizeof err)) == NULL ||
	    (q->rt = router_new(c, err, sizeof err)) == NULL) {
		log_warning("qmgr", "cannot open routing tables: %s", err);
		goto fail;
	}
	q->loop = loop;
	q->s = s;
	q->c = conf_ref(c);
	q->act_tail = &q->act_head;
	read_params(q);
	spool_set_loop(s, loop);
	spool_set_announce(s, announce_cb, q);
	ev_prepare_init(&q->kick, kick_cb);
	ev_timer_init(&q->run_timer, run_timer_cb, (double)q->run_delay, (double)q->run_delay);
	ev_timer_start(loop, &q->run_timer);
	ev_unref(loop);   /* the periodic scan alone must not keep the loop alive */
	ev_timer_init(&q->retry_timer, retry_timer_cb, RETRY_RESOURCE, 0.);
	ev_timer_init(&q->scan_timer, scan_timer_cb, 0.2, 0.);
	q->sweep_domain = getenv("FRUGAL_ALLOC_SWEEP_DELIVERY");
	q->sweep_stride = getenv("FRUGAL_ALLOC_SWEEP_STRIDE") ? strtoul(getenv("FRUGAL_ALLOC_SWEEP_STRIDE"), NULL, 10) : 1;
	if (q->sweep_stride == 0)
		q->sweep_stride = 1;
	return q;
fail:
	resolver_free(q->r);
	sched_free(q->sched);
	mem_free(q->hash);
	mem_free(q->qdir);
	mem_free(q);
	return NULL;
}

void qmgr_set_conf(struct qmgr *q, struct conf *c)
{
	struct resolver *r;
	struct router *rt;
	char err[512];

	if ((r = resolver_new(c, err, sizeof err)) == NULL) {
		log_warning("qmgr", "reload: cannot open routing tables (%s): keeping the old configuration", err);
		return;
	}
	if ((rt = router_new(c, err, sizeof err)) == NULL) {
		resolver_free(r);
		log_warning("qmgr", "reload: cannot open transport_maps (%s): keeping the old configuration", err);
		return;
	}
	/* loaded messages hold targets, not the resolver: swapping is safe between events */
	resolver_free(q->r);
	q->r = r;
	router_free(q->rt);
	q->rt = rt;
	conf_ref(c);
	conf_unref(q->c);
	q->c = c;
	read_params(q);
	ev_ref(q->loop);
	ev_timer_stop(q->loop, &q->run_timer);
	ev_timer_set(&q->run_timer, (double)q->run_delay, (double)q->run_delay);
	ev_timer_start(q->loop, &q->run_timer);
	ev_unref(q->loop);
}

void qmgr_set_delivery_limit(struct qmgr *q, int max_parallel)
{
	q->limit = max_parallel > 0 ? max_parallel : 1;
	kick(q);
}

int qmgr_active(const struct qmgr *q) { return q->nmsgs; }
int qmgr_loaded(const struct qmgr *q) { return q->loaded; }
void qmgr_stats(const struct qmgr *q, struct qmgr_stats *st) { *st = q->st; }

int qmgr_busy(const struct qmgr *q)
{
	const struct qmsg *m;
	int n = q->loaded;

	for (m = q->act_head; m; m = m->next)
		n++;
	return n;
}

/* ---- public queue operations ------------------------------------------------ */

static void announce_cb(void *arg, const char *id)
{
	add_msg(arg, id, 0);
}

static void add_cb(void *arg, const char *id, time_t mtime)
{
	struct qmgr *q = arg;
	struct qmsg *m;
	int had = q->nmsgs;

	if ((m = add_msg(q, id, q->rescan_force ? 0 : mtime)) == NULL) {
		if (q->nmsgs == had)
			q->add_failed = 1;   /* behind the cursor now: a full scan must find it */
		return;
	}
	if (q->rescan_force) {
		m->force = 1;
		m->next_try = mtime;     /* a domain flush that does not match puts it back with its own time */
		if (q->nflush_dom > 0 && !m->probe) {
			m->probe = 1;
			q->nprobe++;
		}
	}
}

/* Not for this scan: known already, or deferred and not due (a full scan finds it when it is). */
static int skip_cb(void *arg, const char *id, time_t mtime)
{
	struct qmgr *q = arg;

	if (find_msg(q, id) != NULL)
		return 1;
	/* a commit in flight (renamed, not yet synced nor acknowledged) is the announcement's */
	if (*q->scan_commit && strcmp(id, q->scan_commit) >= 0)
		return 1;
	if (!q->rescan_force && mtime > time(NULL)) {
		q->skipped_later = 1;
		return 1;
	}
	return 0;
}

/*
 * Bring messages from disk into memory, at most as many as there is room
 * for (memory bounded whatever the queue's size). Catch-up scans look only
 * past the cursor (new mail that did not fit: cheap, no stat of old
 * files); full scans look at everything (deferred mail whose stub was
 * evicted, flushes). Returns the number of messages on disk, or -1.
 */
static int scan(struct qmgr *q, int full, int remove_incoming)
{
	struct spool_scan sc;
	int room = q->active_limit - q->nmsgs, n;

	if (room <= 0) {
		q->rescan = 1;
		return 0;
	}
	memset(&sc, 0, sizeof sc);
	sc.remove_incoming = remove_incoming;
	sc.max = room;
	sc.after = full ? NULL : q->cursor;
	sc.want_mtime = 1;
	sc.skip = skip_cb;
	sc.cb = add_cb;
	sc.arg = q;
	q->skipped_later = 0;
	q->add_failed = 0;
	spool_oldest_commit(q->s, q->scan_commit, sizeof q->scan_commit);
	if ((n = spool_scan_ex(q->qdir, &sc)) < 0) {
		q->rescan = 1;
		return -1;
	}
	if (!full || strcmp(sc.last, q->cursor) > 0)
		snprintf(q->cursor, sizeof q->cursor, "%s", sc.last);
	q->rescan = sc.truncated;
	if (full)
		q->full_rescan = sc.truncated || q->skipped_later;
	else if (q->skipped_later)
		q->full_rescan = 1;
	if (q->add_failed)
		q->full_rescan = 1;
	q->rescan_force = 0;
	probe_release(q);
	return n;
}

int qmgr_recover(struct qmgr *q)
{
	int n = scan(q, 1, 1);

	if (n < 0)
		log_warning("qmgr", "scan of %s/%s failed: %s", q->qdir, SPOOL_COMMITTED, strerror(errno));
	else if (n > 0)
		log_info("qmgr", "recovered %d queued message%s from %s%s", n, n == 1 ? "" : "s", q->qdir,
		    q->rescan ? " (the rest waits on disk: qmgr_message_active_limit)" : "");
	return n;
}

void qmgr_enqueue(struct qmgr *q, const char *queue_id)
{
	add_msg(q, queue_id, 0);
}

static void flush_all_deferred(struct qmgr *q, int probe)
{
	struct qmsg *m, *next;

	for (m = q->def_head, q->def_head = NULL; m; m = next) {
		next = m->next;
		m->force = 1;
		if (probe && !m->probe) {
			m->probe = 1;
			q->nprobe++;
		}
		push_active(q, m);
	}
	/* and what waits on disk only */
	q->full_rescan = 1;
	q->rescan_force = 1;
	scan_soon(q);
}

/* `frugal queue release`: a message came back into committed/; take it without flushing the rest */
void qmgr_rescan(struct qmgr *q)
{
	q->full_rescan = 1;
	scan(q, 1, 0);
}

void qmgr_flush(struct qmgr *q)
{
	struct qmsg *m;
	int i;

	log_info("qmgr", "flush: retrying deferred mail now");
	/* everything: no domain filter, also for stubs an earlier domain flush moved already */
	for (i = 0; i < NBUCKETS; i++)
		for (m = q->hash[i]; m; m = m->hnext) {
			m->probe = 0;
			if (!m->busy)
				m->force = 1;
		}
	q->nprobe = 0;
	q->nflush_dom = 0;
	flush_all_deferred(q, 0);
}

/* The domain list lives while a stub still carries a probe or a forced scan is to come. */
static void probe_release(struct qmgr *q)
{
	if (q->nprobe == 0 && !q->rescan_force)
		q->nflush_dom = 0;
}

int qmgr_flush_domain(struct qmgr *q, const char *domain)
{
	int i;

	if (*domain == '\0' || strlen(domain) >= sizeof q->flush_dom[0])
		return -1;
	for (i = 0; i < q->nflush_dom; i++)
		if (strcasecmp(q->flush_dom[i], domain) == 0)
			break;
	if (i == q->nflush_dom) {
		if (q->nflush_dom == FLUSH_DOMAINS)
			return -1;     /* the caller answers "try again later" */
		snprintf(q->flush_dom[q->nflush_dom++], sizeof q->flush_dom[0], "%s", domain);
	}
	log_info("qmgr", "flush: retrying deferred mail for %s now", domain);
	flush_all_deferred(q, 1);
	return 0;
}

/* Does a recipient still to do match a pending flush request? ".dom": subdomains too. */
static int probe_matches(struct qmgr *q, const struct spool_env *e)
{
	int i, k;

	for (i = 0; i < e->nrcpt; i++) {
		const char *at;
		if (e->rcpt[i].status != RCPT_TODO || (at = strrchr(e->rcpt[i].addr, '@')) == NULL)
			continue;
		at++;
		for (k = 0; k < q->nflush_dom; k++) {
			const char *f = q->flush_dom[k];
			size_t fl = strlen(f), al = strlen(at);
			if (*f == '.' ? (al > fl && strcasecmp(at + al - fl, f) == 0) || strcasecmp(at, f + 1) == 0
			    : strcasecmp(at, f) == 0)
				return 1;
		}
	}
	return 0;
}

/* ---- scans ------------------------------------------------------------------ */

static void do_rescan(struct qmgr *q)
{
	if (q->full_rescan)
		scan(q, 1, 0);
	else if (q->rescan)
		scan(q, 0, 0);
}

/* Room below the stub cap and messages left on disk: look for them soon, not at the next run. */
static void scan_soon(struct qmgr *q)
{
	if (((q->rescan && q->nmsgs <= q->active_limit / 2) || q->rescan_force) &&
	    !ev_is_active(&q->scan_timer))
		ev_timer_start(q->loop, &q->scan_timer);
}

static void scan_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct qmgr *q = (struct qmgr *)((char *)w - offsetof(struct qmgr, scan_timer));

	if (q->rescan_force)
		scan(q, 1, 0);
	else if (q->rescan)
		scan(q, 0, 0);   /* catch-up only: the full scan waits for the queue run */
}

static void run_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct qmgr *q = (struct qmgr *)((char *)w - offsetof(struct qmgr, run_timer));
	struct qmsg *m, **pp;
	time_t now = time(NULL);

	for (pp = &q->def_head; (m = *pp) != NULL;) {
		if (m->next_try <= now) {
			*pp = m->next;
			push_active(q, m);
		} else {
			pp = &m->next;
		}
	}
	if (q->full_rescan || q->rescan)
		do_rescan(q);
	sched_reap(q->sched, now_f());
}

static void retry_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct qmgr *q = (struct qmgr *)((char *)w - offsetof(struct qmgr, retry_timer));

	kick(q);
}

/* ---- deferral ------------------------------------------------------------- */

/* Put a message aside: resources (short wait) or a real deferral (backoff). */
static void defer_msg(struct qmgr *q, struct qmsg *m, int backoff, int fd)
{
	m->busy = 0;
	if (backoff) {
		struct timespec ts[2];

		/*
		 * Only an attempt ends a flush. A postponement (below: no descriptors or memory to
		 * load it now) keeps force and probe, or the flushed message would come back held by
		 * defer_transports ("deferred transport") and wait for the next flush or queue run.
		 */
		m->force = 0;
		if (m->probe) {
			m->probe = 0;
			q->nprobe--;
		}
		m->backoff = (int)sched_backoff(m->backoff, q->min_backoff, q->max_backoff);
		push_deferred(q, m, time(NULL) + m->backoff);
		/* the file's mtime is its next try, for a scan that finds it on disk (as Postfix) */
		if (fd >= 0) {
			ts[0].tv_sec = 0;
			ts[0].tv_nsec = UTIME_OMIT;
			ts[1].tv_sec = m->next_try;
			ts[1].tv_nsec = 0;
			(void)futimens(fd, ts);
		}
	} else {
		/* no backoff: loading pauses until the retry timer, then resumes */
		if (!ev_is_active(&q->retry_timer)) {
			ev_timer_set(&q->retry_timer, RETRY_RESOURCE, 0.);
			ev_timer_start(q->loop, &q->retry_timer);
		}
		push_active(q, m);
	}
	probe_release(q);
}

/* ---- the end of an attempt ------------------------------------------------- */

static void lmsg_free(struct lmsg *d)
{
	int i;

	if (d->tl) {
		for (i = 0; i < d->env.nrcpt; i++)
			target_list_free(&d->tl[i]);
		mem_free(d->tl);
	}
	for (i = 0; i < d->njobs; i++) {
		mem_free(d->jobs[i].t);
		mem_free(d->jobs[i].rcpt);
		maildir_headers_free(&d->jobs[i].hdr);
	}
	mem_free(d->jobs);
	mem_free(d->res);
	maildir_headers_free(&d->hdr);
	fd_close(d->fd);
	spool_env_free(&d->env);
	mem_free(d);
}

/*
 * Each recipient still to do: delivered, deferred or bounced, from its
 * targets; a deferral past the queue lifetime bounces (except mail that
 * waits for an agent that does not exist yet: kept, never lost). Returns
 * the number of bounces. Worker or loop, never both at once.
 */
static int compute_results(struct lmsg *d)
{
	int i, k, bounces = 0;

	for (i = 0; i < d->env.nrcpt; i++) {
		enum rcpt_result rr = RR_NONE;
		int keep = 0;

		if (d->env.rcpt[i].status != RCPT_TODO)
			continue;
		for (k = 0; k < d->tl[i].n; k++) {
			const struct target *t = &d->tl[i].v[k];

			if (t->sent)
				rr = rr == RR_NONE ? RR_SENT : rr;
			else if (t->kind == TGT_DEFER)
				rr = RR_DEFER, keep |= t->never_expire;
			else if (t->kind == TGT_BOUNCE && rr != RR_DEFER)
				rr = RR_BOUNCE;
			else if (rr == RR_NONE)
				rr = RR_SENT;
		}
		if (rr == RR_DEFER && d->expired && !keep)
			rr = RR_BOUNCE;
		d->res[i] = rr == RR_NONE ? RR_DEFER : rr;
		if (d->res[i] == RR_BOUNCE)
			bounces++;
	}
	return bounces;
}

/* Marks (and removal) after deliveries and bounces; on a worker thread. */
static void finish_work(struct lmsg *d)
{
	int i, marks = 0, todo = 0;

	for (i = 0; i < d->env.nrcpt; i++) {
		char st = 0;

		if (d->env.rcpt[i].status != RCPT_TODO)
			continue;
		if (d->res[i] == RR_SENT)
			st = RCPT_DELIVERED;
		else if (d->res[i] == RR_BOUNCE)
			st = RCPT_BOUNCED;
		if (st == 0) {
			todo++;
			continue;
		}
		d->env.rcpt[i].status = st;
		/* a message that is done needs no marks: it is about to go */
		marks++;
	}
	if (todo == 0) {
		if (spool_retire(d->q->s, d->env.id, d->fd) == 0 || errno == ENOENT)
			d->removed = 1;
		else
			d->mark_err = errno;
		if (d->removed) {
			/*
			 * The removal is durable before the delivery counts as done: a crash
			 * (a power cut) can then repeat only the deliveries in flight, not
			 * every one since the last sync (guarantee 1: at-least-once). One
			 * shared sync, like the Maildir's.
			 */
			if (spool_sync(d->q->s, d->fd) < 0)
				d->mark_err = errno;
			/*
			 * The last close of an unlinked file frees its blocks, which can
			 * wait for the disk (ext4 mounted with discard): here, not on the loop.
			 */
			fd_close(d->fd);
			d->fd = -1;
			return;
		}
	}
	if (d->mark_warned && spool_env_mark_warned(d->fd, &d->env) < 0)
		d->mark_err = errno;
	if (marks == 0) {
		if (d->mark_warned && spool_sync(d->q->s, d->fd) < 0)
			d->mark_err = errno;
		return;
	}
	for (i = 0; i < d->env.nrcpt; i++)
		if ((d->res[i] == RR_SENT || d->res[i] == RR_BOUNCE) &&
		    spool_env_mark(d->fd, &d->env.rcpt[i], d->env.rcpt[i].status) < 0) {
			d->mark_err = errno;
			return;
		}
	if (spool_sync(d->q->s, d->fd) < 0)
		d->mark_err = errno;
}

/* tests: arm the sweep for this job's message if it is the kind swept (see struct qmgr) */
static void sweep_arm(struct qmgr *q, struct agent_job *j)
{
	struct lmsg *d = j->owner;
	const char *at;
	int i;

	if (q->sweep_domain == NULL || q->sweeping || d->m->swept)
		return;
	for (i = 0; i < j->n; i++)
		if ((at = strrchr(j->t[i]->addr, '@')) != NULL && strcasecmp(at + 1, q->sweep_domain) == 0)
			break;
	if (i == j->n)
		return;
	d->m->swept = 1;
	q->sweeping = d;
	q->sweep_n++;
	log_info("qmgr", "%s: fault sweep: delivery %lu armed", d->env.id, q->sweep_n);
	mem_fail_at(1 + (q->sweep_n - 1) * q->sweep_stride);
}

/* The attempt is over: reschedule or forget, load the next one. */
static void lmsg_end(struct lmsg *d)
{
	struct qmgr *q = d->q;
	struct qmsg *m = d->m;
	int swept = q->sweeping == d;

	if (d->mark_err)
		log_warning("qmgr", "%s: cannot record delivery state in %s/%s: %s (some recipients "
		    "may get a duplicate)", d->env.id, q->qdir, SPOOL_COMMITTED, strerror(d->mark_err));
	q->loaded--;
	stats_set(STATS_ACTIVE, q->loaded);
	ev_unref(q->loop);
	if (d->removed) {
		log_info("qmgr", "%s: removed", d->env.id);
		lmsg_free(d);
		forget_msg(q, m);
	} else {
		defer_msg(q, m, 1, d->fd);
		lmsg_free(d);
	}
	if (swept) {
		/* the sweep in tests/integration/test_faults_out.py waits for this line */
		mem_fail_at(0);
		q->sweeping = NULL;
		log_info("qmgr", "fault sweep: delivery %lu ended", q->sweep_n);
	}
	kick(q);
}

static void finish_job_work(struct worker_job *j)
{
	finish_work((struct lmsg *)j);
}

static void finish_job_done(struct worker_job *j)
{
	lmsg_end((struct lmsg *)j);
}

static void start_finish(struct lmsg *d)
{
	int i, marks = 0;

	int todo = 0;

	for (i = 0; i < d->env.nrcpt; i++) {
		if (d->env.rcpt[i].status != RCPT_TODO)
			continue;
		if (d->res[i] != RR_DEFER)
			marks++;
		else
			todo++;
	}
	/* recipients left to do and nothing to write: no worker needed (none left: retire the file) */
	if (marks == 0 && todo > 0 && !d->mark_warned) {
		lmsg_end(d);
		return;
	}
	d->wj.work = finish_job_work;
	d->wj.done = finish_job_done;
	worker_submit(WORKER_DELIVERY, &d->wj);
}

/*
 * Notifications, in order, each durable before the next step (PRODUCT.md
 * 3.1: a report is queued before the recipients it reports are marked):
 * success notices (NOTIFY=SUCCESS), the non-delivery report, a delay
 * warning (delay_warning_time, once per message: the W byte). bounce.c
 * filters by each recipient's NOTIFY and knows the null and double-bounce
 * senders; "nothing to send" goes straight to the next step.
 */
enum { NOTE_SUCCESS, NOTE_FAILURE, NOTE_DELAY, NOTE_DONE };

static void notify_next(struct lmsg *d);

/*
 * A success notice that could not be queued: its recipients stay to do, so
 * the notice is not lost (the price: one more delivery to them later).
 */
static void success_owed(struct lmsg *d)
{
	int i;

	log_warning("qmgr", "%s: cannot queue delivery status notification: recipients who asked for "
	    "one stay queued", d->env.id);
	for (i = 0; i < d->env.nrcpt; i++)
		if (d->res[i] == RR_SENT && (d->env.rcpt[i].notify & DSN_NOTIFY_SUCCESS))
			d->res[i] = RR_DEFER;
}

static void notify_done(void *arg, int err, const char *id)
{
	struct lmsg *d = arg;
	int i;

	(void)id;
	if (err && d->note == NOTE_FAILURE) {
		/* the report is not durable: the recipients stay to do, retried later */
		log_warning("qmgr", "%s: cannot queue non-delivery notification: %s", d->env.id, strerror(err));
		for (i = 0; i < d->env.nrcpt; i++)
			if (d->res[i] == RR_BOUNCE)
				d->res[i] = RR_DEFER;
	} else if (err && d->note == NOTE_DELAY) {
		d->mark_warned = 0;   /* not sent: tried again at the next deferral */
	} else if (err && d->note == NOTE_SUCCESS) {
		success_owed(d);
	}
	d->note++;
	notify_next(d);
}

/* The items of one kind: every target that gives the recipient that outcome. */
static int note_items(struct lmsg *d, int kind, struct bounce_item *items)
{
	int i, k, n = 0;

	for (i = 0; i < d->env.nrcpt; i++) {
		if (d->env.rcpt[i].status != RCPT_TODO)
			continue;
		if ((kind == NOTE_SUCCESS && d->res[i] != RR_SENT) ||
		    (kind == NOTE_FAILURE && d->res[i] != RR_BOUNCE) ||
		    (kind == NOTE_DELAY && d->res[i] != RR_DEFER))
			continue;
		for (k = 0; k < d->tl[i].n; k++) {
			struct target *t = &d->tl[i].v[k];
			if (kind != NOTE_SUCCESS && t->sent)
				continue;
			if (kind == NOTE_SUCCESS && (!t->sent || t->hop_dsn == TGT_HOP_PASSED))
				continue;   /* the next hop took NOTIFY=SUCCESS over: it reports, not us */
			items[n].addr = t->addr;
			items[n].orig = d->env.rcpt[i].orig;
			items[n].rcpt = i;
			items[n].dsn = kind == NOTE_SUCCESS ? "2.0.0" :
			    kind == NOTE_FAILURE && t->kind == TGT_DEFER ? "4.4.7" : t->dsn;
			items[n].reason = kind == NOTE_SUCCESS ? (*t->reason ? t->reason : "delivered to mailbox") : t->reason;
			items[n].action = kind == NOTE_SUCCESS && t->hop_dsn == TGT_HOP_RELAYED ? "relayed" : NULL;
			n++;
		}
	}
	return n;
}

static void notify_next(struct lmsg *d)
{
	static const enum bounce_kind kinds[] = { BOUNCE_SUCCESS, BOUNCE_FAILURE, BOUNCE_DELAY };
	struct bounce_item *items;
	int i, n, max = 0, rc;

	for (i = 0; i < d->env.nrcpt; i++)
		max += d->tl[i].n;
	for (; d->note < NOTE_DONE; d->note++) {
		if (!(d->want_note & (1 << d->note)))
			continue;
		if ((items = mem_calloc((size_t)(max ? max : 1), sizeof *items)) == NULL) {
			rc = -1;
			errno = ENOMEM;
		} else if ((n = note_items(d, d->note, items)) == 0) {
			rc = 1;
		} else {
			rc = bounce_notify(d->q->s, d->q->c, kinds[d->note], &d->env, d->hdr_ok ? &d->hdr : NULL,
			    d->fd, items, n, notify_done, d);
		}
		mem_free(items);
		if (rc == 0)
			return;             /* notify_done goes on */
		if (rc < 0) {
			log_warning("qmgr", "%s: cannot create %s notification: %s", d->env.id,
			    d->note == NOTE_SUCCESS ? "delivery status" : d->note == NOTE_FAILURE ? "non-delivery" : "delay",
			    strerror(errno));
			if (d->note == NOTE_FAILURE)
				for (i = 0; i < d->env.nrcpt; i++)
					if (d->res[i] == RR_BOUNCE)
						d->res[i] = RR_DEFER;
			if (d->note == NOTE_DELAY)
				d->mark_warned = 0;
			if (d->note == NOTE_SUCCESS)
				success_owed(d);
		}
	}
	start_finish(d);
}

/* The reports quote the original headers: read them on a worker when no agent did. */
static void headers_work(struct worker_job *wj)
{
	struct lmsg *d = (struct lmsg *)wj;
	struct msg_src src;

	msg_src_from_env(&src, d->fd, &d->env);
	d->hdr_ok = maildir_scan_headers(&src, &d->hdr) == 0;
}

static void headers_done(struct worker_job *wj)
{
	notify_next((struct lmsg *)wj);
}

/* Does any recipient ask for a success notice (NOTIFY=SUCCESS)? Then the fast path is off. */
static int wants_success(const struct spool_env *e)
{
	int i;

	for (i = 0; i < e->nrcpt; i++)
		if (e->rcpt[i].status == RCPT_TODO && (e->rcpt[i].notify & DSN_NOTIFY_SUCCESS))
			return 1;
	return 0;
}

/* Every job of the message is done (on the loop). */
static void lmsg_finish(struct lmsg *d)
{
	struct qmgr *q = d->q;
	int i, bounces, defers = 0, sent = 0;

	if (d->finished_in_job) {
		lmsg_end(d);
		return;
	}
	bounces = compute_results(d);
	for (i = 0; i < d->env.nrcpt; i++) {
		if (d->env.rcpt[i].status != RCPT_TODO)
			continue;
		defers += d->res[i] == RR_DEFER;
		sent += d->res[i] == RR_SENT && (d->env.rcpt[i].notify & DSN_NOTIFY_SUCCESS);
	}
	d->note = NOTE_SUCCESS;
	d->want_note = (sent ? 1 << NOTE_SUCCESS : 0) | (bounces ? 1 << NOTE_FAILURE : 0);
	/* one delay warning per message, once it is delay_warning_time old (a Q3 file keeps that it was sent) */
	if (defers && q->delay_warning > 0 && d->env.warned == WARN_NONE && d->env.warned_off > 0 &&
	    time(NULL) - d->env.arrival >= q->delay_warning) {
		d->want_note |= 1 << NOTE_DELAY;
		d->mark_warned = 1;
	}
	if (d->want_note == 0) {
		start_finish(d);
		return;
	}
	if (!d->hdr_ok) {
		d->wj.work = headers_work;
		d->wj.done = headers_done;
		worker_submit(WORKER_DELIVERY, &d->wj);
		return;
	}
	notify_next(d);
}

/* ---- jobs ------------------------------------------------------------------- */

static void log_target(struct lmsg *d, int i, const struct target *t, const struct agent_job *j,
    const char *status)
{
	const struct spool_rcpt *r = &d->env.rcpt[i];
	char delay[32], a[16], b[16], dd[16], orig[1100], conn_use[24];
	double arrival = (double)d->env.arrival + (double)d->env.arrival_usec / 1e6;
	double seen = d->m->seen_at > arrival ? d->m->seen_at : arrival;
	double start = j ? j->t_start : d->t_load, done = j ? j->t_done : d->t_load;

	if (start < seen)
		start = seen;
	if (done < start)
		done = start;
	queue_fmt_delay(delay, sizeof delay, done - arrival);
	queue_fmt_delay(a, sizeof a, seen - arrival);
	queue_fmt_delay(b, sizeof b, start - seen);
	queue_fmt_delay(dd, sizeof dd, done - start);
	orig[0] = '\0';
	if (strcasecmp(t->addr, r->orig) != 0)
		snprintf(orig, sizeof orig, ", orig_to=<%s>", r->orig);
	/* Postfix's conn_use=N: the Nth transaction of a reused connection (smtpc's cache) */
	conn_use[0] = '\0';
	if (j && j->conn_use > 1)
		snprintf(conn_use, sizeof conn_use, ", conn_use=%d", j->conn_use);
	log_info(j ? j->route.transport : (t->service ? t->service : "local"),
	    "%s: to=<%s>%s, relay=%s%s, delay=%s, delays=%s/%s/0/%s, dsn=%s, status=%s",
	    d->env.id, t->addr, orig, j && j->relay ? j->relay : "none", conn_use,
	    delay, a, b, dd, t->sent ? "2.0.0" : t->dsn, status);
}

static void log_outcome(struct lmsg *d, int i, const struct target *t, const struct agent_job *j)
{
	char status[400];

	if (t->sent && *t->reason)
		snprintf(status, sizeof status, "sent (%s)", t->reason);
	else if (t->sent)
		snprintf(status, sizeof status, "sent (delivered to %s)", t->kind == TGT_MBOX ? "mailbox" : "maildir");
	else if (t->kind == TGT_DEFER && d->expired && !t->never_expire)
		snprintf(status, sizeof status, "expired, returned to sender (%s)", t->reason);
	else if (t->kind == TGT_DEFER)
		snprintf(status, sizeof status, "deferred (%s)", t->reason);
	else if (t->kind == TGT_BOUNCE)
		snprintf(status, sizeof status, "bounced (%s)", t->reason);
	else
		return;
	/* counted where it is logged, so `frugal status` agrees with the log */
	stats_inc(t->sent ? STATS_DELIVERED : t->kind == TGT_DEFER && !(d->expired && !t->never_expire)
	    ? STATS_DEFERRED : STATS_BOUNCED);
	log_target(d, i, t, j, status);
}

/* On the delivery worker, for a message whose only job this is: write the states right here. */
static void fast_finish(struct agent_job *j)
{
	struct lmsg *d = j->owner;
	int i;

	/* only when everything went: a bounce or a deferral (maybe a delay warning) is the loop's */
	if (compute_results(d) != 0)
		return;
	for (i = 0; i < d->env.nrcpt; i++)
		if (d->env.rcpt[i].status == RCPT_TODO && d->res[i] != RR_SENT)
			return;
	finish_work(d);
	d->finished_in_job = 1;
}

/*
 * Recipients whose every target a job delivered, while other jobs of the
 * message still run (a slow next hop): their state is written and synced
 * now, so a crash repeats only what was in flight, not what one slow job
 * held back. Recipients that asked for a success notice wait for the end
 * (the notice comes before the mark).
 */
struct mark_job {
	struct worker_job wj;
	struct lmsg *d;
	int    n;
	int    idx[];        /* envelope recipients to mark delivered */
};

static void mark_job_work(struct worker_job *wj)
{
	struct mark_job *mj = (struct mark_job *)wj;
	struct lmsg *d = mj->d;
	int i;

	for (i = 0; i < mj->n; i++)
		if (spool_env_mark(d->fd, &d->env.rcpt[mj->idx[i]], RCPT_DELIVERED) < 0) {
			d->mark_err = errno;
			return;
		}
	if (spool_sync(d->q->s, d->fd) < 0)
		d->mark_err = errno;
}

static void mark_job_done(struct worker_job *wj)
{
	struct mark_job *mj = (struct mark_job *)wj;
	struct lmsg *d = mj->d;

	mem_free(mj);
	if (--d->pending == 0)
		lmsg_finish(d);
}

static void mark_early(struct lmsg *d, const struct agent_job *j)
{
	struct mark_job *mj;
	int i, k, r;

	if ((mj = mem_alloc(sizeof *mj + (size_t)j->n * sizeof mj->idx[0])) == NULL)
		return;   /* marked at the end instead */
	mj->d = d;
	mj->n = 0;
	for (i = 0; i < j->n; i++) {
		r = j->rcpt[i];
		if (!j->t[i]->sent || d->env.rcpt[r].status != RCPT_TODO ||
		    (d->env.rcpt[r].notify & DSN_NOTIFY_SUCCESS))
			continue;
		/* finished first: a target of a job still running is the worker's to write */
		for (k = 0; k < d->tl[r].n && d->tl[r].v[k].finished && d->tl[r].v[k].sent; k++)
			;
		if (k < d->tl[r].n)
			continue;      /* another target of this recipient is not done */
		d->env.rcpt[r].status = RCPT_DELIVERED;
		mj->idx[mj->n++] = r;
	}
	if (mj->n == 0) {
		mem_free(mj);
		return;
	}
	d->pending++;
	mj->wj.work = mark_job_work;
	mj->wj.done = mark_job_done;
	worker_submit(WORKER_DELIVERY, &mj->wj);
}

static void job_done(struct agent_job *j)
{
	struct lmsg *d = j->owner;
	struct qmgr *q = d->q;
	int i, dead = j->dest == NULL;

	if (!dead) {
		q->inflight--;
		stats_set(STATS_INFLIGHT, q->inflight);
		sched_done(q->sched, j->dest, j->dest_failed, j->dest_reason, now_f());
	}
	for (i = 0; i < j->n; i++) {
		struct target *t = j->t[i];
		char via[sizeof t->reason];

		t->finished = 1;
		log_outcome(d, j->rcpt[i], t, j);
		/*
		 * A success notice for a relay names it as Postfix's does ("delivery via
		 * host[addr]:port: 250 ..."; bounce.c takes Remote-MTA from it). The log
		 * line above keeps the bare reply; the relay string is the session's.
		 */
		if (t->sent && t->hop_dsn == TGT_HOP_RELAYED && j->relay &&
		    snprintf(via, sizeof via, "delivery via %s: %s", j->relay, t->reason) > 0)
			memcpy(t->reason, via, sizeof via);
	}
	if (!d->hdr_ok && j->hdr_ok) {
		/* the report, if any, quotes them: keep one copy */
		d->hdr = j->hdr;
		d->hdr_ok = 1;
		memset(&j->hdr, 0, sizeof j->hdr);
		j->hdr_ok = 0;
	}
	if (d->pending > 1)
		mark_early(d, j);
	if (--d->pending == 0)
		lmsg_finish(d);
	kick(q);
}

/* A dead destination: every target deferred without an attempt (Postfix's wording). */
static void job_dead(struct agent_job *j, const struct sched_dest *dest)
{
	int i;

	j->relay = "none";
	j->t_start = j->t_done = now_f();
	for (i = 0; i < j->n; i++) {
		j->t[i]->kind = TGT_DEFER;
		snprintf(j->t[i]->dsn, sizeof j->t[i]->dsn, "4.4.1");
		snprintf(j->t[i]->reason, sizeof j->t[i]->reason, "delivery temporarily suspended: %.200s",
		    dest->dead_reason);
	}
	j->dest = NULL;
	job_done(j);
}

static const char *domain_of(const char *addr)
{
	const char *at = strrchr(addr, '@');
	return at ? at + 1 : "";
}

/*
 * Where a target goes: its agent and next hop, transport_maps first. 1 when
 * it needs an agent (route set), 0 when its outcome is already known (the
 * resolver bounced or deferred it, or its transport is held).
 */
static int route_target(struct qmgr *q, struct qmsg *m, struct target *t, struct route *rt)
{
	const char *def_tr, *def_hop;
	char hop[256], tr_buf[32];
	int mailbox = t->kind == TGT_MAILDIR || t->kind == TGT_MBOX;
	int remote = t->kind == TGT_DEFER && t->never_expire;
	int rc;

	if (!mailbox && !remote)
		return 0;
	if (mailbox) {
		def_tr = t->service && strcmp(t->service, "virtual") == 0 ? "virtual" : "local";
		/* local: the destination is the recipient (Postfix); virtual: the domain */
		def_hop = strcmp(def_tr, "local") == 0 ? t->addr : domain_of(t->addr);
	} else {
		struct resolve_result rr;
		rr.cls = RESOLVE_REMOTE;
		(void)resolver_classify(q->r, t->addr, &rr);
		def_tr = rr.cls == RESOLVE_RELAY ? "relay" : "smtp";
		snprintf(hop, sizeof hop, "%s", *router_relayhost(q->rt) ? router_relayhost(q->rt) : domain_of(t->addr));
		def_hop = hop;
	}
	if (mailbox) {
		/* mailbox_transport / virtual_transport (Dovecot's LMTP, typically), then transport_maps */
		struct route mb;
		snprintf(mb.transport, sizeof mb.transport, "%s", def_tr);
		snprintf(mb.nexthop, sizeof mb.nexthop, "%s", def_hop);
		if (router_mailbox(q->rt, strcmp(def_tr, "virtual") == 0, &mb)) {
			snprintf(tr_buf, sizeof tr_buf, "%s", mb.transport);
			snprintf(hop, sizeof hop, "%s", mb.nexthop);
			def_tr = tr_buf;
			def_hop = hop;
		}
	}
	if ((rc = router_lookup(q->rt, t->addr, def_tr, def_hop, rt)) < 0) {
		t->kind = TGT_DEFER;
		t->never_expire = 0;
		snprintf(t->dsn, sizeof t->dsn, "4.3.0");
		snprintf(t->reason, sizeof t->reason, "transport_maps lookup failed");
		return 0;
	}
	if (!mailbox && (strcasecmp(rt->transport, "local") == 0 || strcasecmp(rt->transport, "virtual") == 0)) {
		/* a mailbox agent needs a mailbox the resolver found: an address it did not is not ours */
		snprintf(rt->transport, sizeof rt->transport, "%s", def_tr);
	}
	if (strcasecmp(rt->transport, "error") != 0 && strcasecmp(rt->transport, "discard") != 0) {
		if (router_deferred(q->rt, rt->transport) && !m->force) {
			t->kind = TGT_DEFER;
			snprintf(t->dsn, sizeof t->dsn, "4.3.2");
			snprintf(t->reason, sizeof t->reason, "deferred transport");
			return 0;
		}
	}
	t->never_expire = agent_find(rt->transport)->never_expire;
	return 1;
}

/* Cut the message into jobs: one per (transport, next hop), up to its recipient limit. 0 or -1 (ENOMEM). */
static int make_jobs(struct qmgr *q, struct lmsg *d)
{
	struct route rt;
	struct sched_params sp;
	int i, k, n, cap = 0;

	for (i = 0; i < d->env.nrcpt; i++)
		cap += d->tl[i].n;
	if (cap == 0)
		return 0;
	if ((d->jobs = mem_calloc((size_t)cap, sizeof *d->jobs)) == NULL)
		return -1;
	for (i = 0; i < d->env.nrcpt; i++) {
		for (k = 0; k < d->tl[i].n; k++) {
			struct target *t = &d->tl[i].v[k];
			struct agent_job *j = NULL;

			if (!route_target(q, d->m, t, &rt)) {
				log_outcome(d, i, t, NULL);
				continue;
			}
			transport_params(q, rt.transport, &sp);
			for (n = 0; n < d->njobs; n++)
				if (strcmp(d->jobs[n].route.transport, rt.transport) == 0 &&
				    strcmp(d->jobs[n].route.nexthop, rt.nexthop) == 0 &&
				    d->jobs[n].n < sp.rcpt_limit) {
					j = &d->jobs[n];
					break;
				}
			if (j == NULL) {
				j = &d->jobs[d->njobs++];
				j->route = rt;
				j->agent = agent_find(rt.transport);
				j->owner = d;
				j->done = job_done;
				j->queue_id = d->env.id;
				j->qdir = q->qdir;
				msg_src_from_env(&j->src, d->fd, &d->env);
				j->hop_limit = q->hop_limit;
				j->dsn_ret = d->env.dsn_ret;
				j->arrival = d->env.arrival;
				j->envid = d->env.envid;
				j->env_rcpt = d->env.rcpt;
				n = sp.rcpt_limit < cap ? sp.rcpt_limit : cap;
				if ((j->t = mem_calloc((size_t)n, sizeof *j->t)) == NULL ||
				    (j->rcpt = mem_calloc((size_t)n, sizeof *j->rcpt)) == NULL)
					return -1;
			}
			j->t[j->n] = t;
			j->rcpt[j->n] = i;
			j->n++;
		}
	}
	return 0;
}

/* ---- loading and dispatch --------------------------------------------------- */

/* 1: loaded (jobs queued or finished), 0: put back (resources), -1: forgotten */
static int load_msg(struct qmgr *q, struct qmsg *m)
{
	struct lmsg *d;
	struct sched_params sp;
	int i, immediate = 0;

	m->busy = 1;
	if (!fd_room(FD_FILE, DLV_FILES)) {
		log_warning("qmgr", "%s: descriptor budget exhausted: delivery postponed", m->id);
		defer_msg(q, m, 0, -1);
		return 0;
	}
	if ((d = mem_calloc(1, sizeof *d)) == NULL) {
		log_warning("qmgr", "%s: out of memory: delivery postponed", m->id);
		defer_msg(q, m, 0, -1);
		return 0;
	}
	d->q = q;
	d->m = m;
	d->fd = -1;
	d->t_load = now_f();
	if (spool_env_load(q->qdir, m->id, &d->env, &d->fd) < 0) {
		int e = errno;
		lmsg_free(d);
		if (e == ENOENT) {   /* deleted meanwhile (frugal queue delete) */
			forget_msg(q, m);
			return -1;
		}
		if (e == ENOMEM || e == EMFILE || e == ENFILE) {
			log_warning("qmgr", "%s: cannot read queue file: %s: delivery postponed", m->id, strerror(e));
			limits_note_failure(e == ENOMEM ? "memory" : "numfile", e);
			defer_msg(q, m, 0, -1);
			return 0;
		}
		log_warning("qmgr", "%s: cannot read queue file %s/%s/%s: %s", m->id, q->qdir,
		    SPOOL_COMMITTED, m->id, strerror(e));
		defer_msg(q, m, 1, -1);
		return 0;
	}
	if (m->probe && !probe_matches(q, &d->env)) {
		/* a flush for other domains: back where it was, untried */
		time_t when = m->next_try;
		lmsg_free(d);
		m->busy = 0;
		m->force = 0;
		m->probe = 0;
		q->nprobe--;
		probe_release(q);
		push_deferred(q, m, when);
		return -1;
	}
	log_info("qmgr", "%s: from=<%s>, size=%lld, nrcpt=%d (queue active)", m->id,
	    d->env.sender, (long long)d->env.size, d->env.nrcpt);
	d->expired = time(NULL) - d->env.arrival >=
	    (*d->env.sender ? q->max_lifetime : q->bounce_lifetime);
	if ((d->tl = mem_calloc((size_t)(d->env.nrcpt ? d->env.nrcpt : 1), sizeof *d->tl)) == NULL ||
	    (d->res = mem_calloc((size_t)(d->env.nrcpt ? d->env.nrcpt : 1), sizeof *d->res)) == NULL)
		goto nomem;
	for (i = 0; i < d->env.nrcpt; i++) {
		if (d->env.rcpt[i].status != RCPT_TODO)
			continue;
		if (resolver_expand(q->r, d->env.rcpt[i].addr, &d->tl[i]) < 0)
			goto nomem;
		if (d->tl[i].n == 0) {
			/* every alias led back to one already expanded */
			struct target *t;
			if ((t = mem_calloc(1, sizeof *t)) == NULL)
				goto nomem;
			d->tl[i].v = t;
			d->tl[i].n = d->tl[i].cap = 1;
			t->kind = TGT_BOUNCE;
			t->service = "local";
			if ((t->addr = mem_strdup(d->env.rcpt[i].addr)) == NULL)
				goto nomem;
			snprintf(t->dsn, sizeof t->dsn, "5.4.6");
			snprintf(t->reason, sizeof t->reason, "mail forwarding loop for %s", t->addr);
		}
	}
	if (make_jobs(q, d) < 0)
		goto nomem;
	q->loaded++;
	stats_set(STATS_ACTIVE, q->loaded);
	if (q->loaded > q->st.peak_loaded)
		q->st.peak_loaded = q->loaded;
	ev_ref(q->loop);   /* a message in flight keeps the loop alive */
	for (i = 0; i < d->env.nrcpt; i++)
		immediate += d->env.rcpt[i].status == RCPT_TODO ? d->tl[i].n : 0;
	for (i = 0; i < d->njobs; i++)
		immediate -= d->jobs[i].n;
	d->pending = d->njobs;
	if (d->njobs == 0) {
		lmsg_finish(d);
		return 1;
	}
	/* the common case, one job and nothing known already: the worker writes the states */
	if (d->njobs == 1 && immediate == 0 && !d->expired && !wants_success(&d->env))
		d->jobs[0].after_work = fast_finish;
	for (i = 0; i < d->njobs; i++) {
		struct agent_job *j = &d->jobs[i];
		transport_params(q, j->route.transport, &sp);
		if ((j->dest = sched_dest(q->sched, j->route.transport, j->route.nexthop, &sp)) == NULL)
			goto nomem_jobs;
	}
	for (i = 0; i < d->njobs; i++)
		sched_wait(q->sched, d->jobs[i].dest, &d->jobs[i].link);
	return 1;
nomem_jobs:
	q->loaded--;
	stats_set(STATS_ACTIVE, q->loaded);
	ev_unref(q->loop);
nomem:
	log_warning("qmgr", "%s: out of memory: delivery postponed", m->id);
	limits_note_failure("memory", ENOMEM);
	lmsg_free(d);
	defer_msg(q, m, 0, -1);
	return 0;
}

static void kick_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct qmgr *q = (struct qmgr *)((char *)w - offsetof(struct qmgr, kick));
	struct sched_link *lk;
	struct sched_dest *dest;
	struct qmsg *m;
	int dead, loaded_limit = LOADED_MAX;

	ev_prepare_stop(loop, w);
	/* enough loaded to keep every slot busy, bounded: the rest waits as stubs */
	if (loaded_limit > q->active_limit)
		loaded_limit = q->active_limit;
	while (!q->stopping && q->loaded < loaded_limit && q->act_head && !ev_is_active(&q->retry_timer)) {
		m = q->act_head;
		if ((q->act_head = m->next) == NULL)
			q->act_tail = &q->act_head;
		m->next = NULL;
		load_msg(q, m);
	}
	while ((lk = sched_next(q->sched, now_f(), q->limit - q->inflight, &dest, &dead)) != NULL) {
		struct agent_job *j = (struct agent_job *)((char *)lk - offsetof(struct agent_job, link));

		if (dead) {
			job_dead(j, dest);
			continue;
		}
		q->inflight++;
		stats_set(STATS_INFLIGHT, q->inflight);
		q->st.jobs++;
		q->st.targets += j->n;
		j->dest = dest;
		j->conf = q->c;
		j->stopping = q->stopping;
		/* this job included: an agent that connects anew closes idle connections past it first */
		j->idle_room = q->limit - q->inflight;
		sweep_arm(q, j);
		j->agent->deliver(j);
	}
	/*
	 * Idle SMTP/LMTP connections kept for reuse hold a socket and a session's memory that a
	 * delivery slot was sized for: at most the slots no job holds now.
	 */
	smtpc_idle_trim(q->limit - q->inflight);
}

void qmgr_free(struct qmgr *q)
{
	struct qmsg *m, *next;
	int i;

	if (q == NULL)
		return;
	spool_set_announce(q->s, NULL, NULL);
	q->stopping = 1;
	/* network sessions could wait minutes for a peer: they end now, their mail deferred */
	smtpc_stop_all();
	/* what is loaded finishes (its jobs are on workers or on the loop) */
	while (q->loaded > 0)
		ev_run(q->loop, EVRUN_ONCE);
	ev_prepare_stop(q->loop, &q->kick);
	ev_timer_stop(q->loop, &q->retry_timer);
	ev_timer_stop(q->loop, &q->scan_timer);
	ev_ref(q->loop);
	ev_timer_stop(q->loop, &q->run_timer);
	for (i = 0; i < NBUCKETS; i++)
		for (m = q->hash[i]; m; m = next) {
			next = m->hnext;
			mem_free(m);
		}
	mem_free(q->hash);
	sched_free(q->sched);
	resolver_free(q->r);
	router_free(q->rt);
	conf_unref(q->c);
	mem_free(q->qdir);
	mem_free(q);
}
