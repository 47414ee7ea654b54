/*
 * queue/qmgr.c: the queue manager. Owns the in-memory view of the queue
 * (one small struct per message: ID and retry timing; envelopes are read
 * from disk per attempt so a big queue costs little memory), the active and
 * deferred lists, backoff (minimal_backoff_time doubling to
 * maximal_backoff_time), the deferred-queue scan every queue_run_delay,
 * expiry after maximal_queue_lifetime (bounce_queue_lifetime for bounces),
 * and the bound on deliveries in flight. Deliveries run as worker jobs.
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
#include <sys/time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/sync.h"
#include "core/worker.h"
#include "limits/limits.h"

#define NBUCKETS        4096  /* ID hash: finds a message by ID in O(1) */
#define DLV_FILES       8     /* queue file (and a read-only one for a helper), the mailbox base, its path, tmp/new/cur, the file */
#define RETRY_RESOURCE  1.0   /* seconds before retrying after a refused resource */
#define DEFAULT_PARALLEL 4

struct qmsg {
	char   id[QUEUE_ID_MAX];
	struct qmsg *next;      /* active or deferred list */
	struct qmsg *hnext;     /* hash chain */
	double seen_at;         /* when qmgr first learned of it (delays=a/b) */
	time_t next_try;        /* deferred: earliest retry */
	int    backoff;         /* seconds of the last deferral */
	int    busy;            /* a delivery is in flight */
};

struct qmgr {
	struct ev_loop *loop;
	struct spool *s;
	struct conf *c;          /* our reference */
	struct resolver *r;      /* built from c */
	char  *qdir;             /* owned copy of the spool directory */
	struct qmsg *act_head, **act_tail;   /* ready to deliver, FIFO */
	struct qmsg *def_head;               /* waiting for next_try */
	struct qmsg **hash;                  /* NBUCKETS chains */
	int    nmsgs, inflight, limit;
	int    rescan;                       /* a message may be on disk but not in memory */
	ev_prepare kick;                     /* start deliveries between iterations */
	ev_timer run_timer;                  /* deferred scan, queue_run_delay */
	ev_timer retry_timer;                /* after a refused resource */
	/* parameters, read at (re)configuration */
	long   run_delay, min_backoff, max_backoff, max_lifetime, bounce_lifetime, hop_limit;
};

enum rcpt_result { RR_NONE, RR_SENT, RR_DEFER, RR_BOUNCE };

struct dlv {
	struct worker_job job;
	struct qmgr *q;
	struct qmsg *m;
	struct spool_env env;
	int    fd;
	int    rofd;                 /* read-only descriptor handed to delivery helpers; -1 */
	struct target_list *tl;      /* per recipient; empty for recipients already done */
	enum rcpt_result *res;       /* per recipient */
	struct msg_headers hdr;
	int    hdr_ok;
	int    finish_in_job;        /* no bounces: marks (or removal) done by the delivery job */
	int    removed;              /* the queue file is gone */
	int    mark_err;             /* errno of a failed mark/sync */
	int    expired;              /* past its queue lifetime: deferrals become bounces */
	double t_start, t_done;
	char   bounce_id[QUEUE_ID_MAX];
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

static void forget_msg(struct qmgr *q, struct qmsg *m)
{
	struct qmsg **pp;

	for (pp = &q->hash[hash_id(m->id)]; *pp; pp = &(*pp)->hnext)
		if (*pp == m) {
			*pp = m->hnext;
			break;
		}
	q->nmsgs--;
	mem_free(m);
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

static struct qmsg *add_msg(struct qmgr *q, const char *id)
{
	struct qmsg *m;
	unsigned h;

	if (!spool_id_valid(id))
		return NULL;
	if ((m = find_msg(q, id)) != NULL)
		return m;
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
	push_active(q, m);
	return m;
}

/* ---- configuration ---------------------------------------------------------- */

static long conf_time_or(const struct conf *c, const char *name, long def)
{
	const char *v = conf_str(c, name, 0);
	return v && *v ? (long)conf_time(c, name, 0) : def;
}

static void read_params(struct qmgr *q)
{
	struct conf *c = q->c;

	q->run_delay = conf_time_or(c, "queue_run_delay", 300);
	q->min_backoff = conf_time_or(c, "minimal_backoff_time", 300);
	q->max_backoff = conf_time_or(c, "maximal_backoff_time", 4000);
	q->max_lifetime = conf_time_or(c, "maximal_queue_lifetime", 5 * 86400);
	q->bounce_lifetime = conf_time_or(c, "bounce_queue_lifetime", 5 * 86400);
	q->hop_limit = conf_str(c, "hopcount_limit", 0) ? (long)conf_int(c, "hopcount_limit", 0) : 50;
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

static void run_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void retry_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void kick_cb(struct ev_loop *loop, ev_prepare *w, int revents);

struct qmgr *qmgr_new(struct ev_loop *loop, struct spool *s, struct conf *c)
{
	struct qmgr *q;
	char err[512];

	if ((q = mem_calloc(1, sizeof *q)) == NULL)
		return NULL;
	if ((q->hash = mem_calloc(NBUCKETS, sizeof *q->hash)) == NULL ||
	    (q->qdir = mem_strdup(spool_dir(s))) == NULL)
		goto fail;
	if ((q->r = resolver_new(c, err, sizeof err)) == NULL) {
		log_warning("qmgr", "cannot open routing tables: %s", err);
		goto fail;
	}
	q->loop = loop;
	q->s = s;
	q->c = conf_ref(c);
	q->act_tail = &q->act_head;
	read_params(q);
	spool_set_loop(s, loop);
	ev_prepare_init(&q->kick, kick_cb);
	ev_timer_init(&q->run_timer, run_timer_cb, (double)q->run_delay, (double)q->run_delay);
	ev_timer_start(loop, &q->run_timer);
	ev_unref(loop);   /* the periodic scan alone must not keep the loop alive */
	ev_timer_init(&q->retry_timer, retry_timer_cb, RETRY_RESOURCE, 0.);
	return q;
fail:
	mem_free(q->hash);
	mem_free(q->qdir);
	mem_free(q);
	return NULL;
}

void qmgr_set_conf(struct qmgr *q, struct conf *c)
{
	struct resolver *r;
	char err[512];

	if ((r = resolver_new(c, err, sizeof err)) == NULL) {
		log_warning("qmgr", "reload: cannot open routing tables (%s): keeping the old configuration", err);
		return;
	}
	resolver_free(q->r);
	q->r = r;
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

int qmgr_busy(const struct qmgr *q)
{
	const struct qmsg *m;
	int n = q->inflight;

	for (m = q->act_head; m; m = m->next)
		n++;
	return n;
}

/* ---- public queue operations ------------------------------------------------ */

static void recover_cb(void *arg, const char *id)
{
	add_msg(arg, id);
}

int qmgr_recover(struct qmgr *q)
{
	int n = spool_scan(q->qdir, 1, recover_cb, q);

	if (n < 0)
		log_warning("qmgr", "scan of %s/%s failed: %s", q->qdir, SPOOL_COMMITTED, strerror(errno));
	else if (n > 0)
		log_info("qmgr", "recovered %d queued message%s from %s", n, n == 1 ? "" : "s", q->qdir);
	return n;
}

void qmgr_enqueue(struct qmgr *q, const char *queue_id)
{
	add_msg(q, queue_id);
}

void qmgr_flush(struct qmgr *q)
{
	struct qmsg *m, *next;

	for (m = q->def_head, q->def_head = NULL; m; m = next) {
		next = m->next;
		push_active(q, m);
	}
	log_info("qmgr", "flush: retrying deferred mail now");
}

/* ---- scheduling ----------------------------------------------------------- */

static void start_delivery(struct qmgr *q, struct qmsg *m);

static void kick_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct qmgr *q = (struct qmgr *)((char *)w - offsetof(struct qmgr, kick));
	struct qmsg *m;

	while (q->inflight < q->limit && q->act_head && !ev_is_active(&q->retry_timer)) {
		m = q->act_head;
		if ((q->act_head = m->next) == NULL)
			q->act_tail = &q->act_head;
		m->next = NULL;
		start_delivery(q, m);
	}
	ev_prepare_stop(loop, w);
}

static void retry_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct qmgr *q = (struct qmgr *)((char *)w - offsetof(struct qmgr, retry_timer));

	kick(q);
}

static void rescan_cb(void *arg, const char *id)
{
	struct qmgr *q = arg;

	if (find_msg(q, id) == NULL)
		add_msg(q, id);
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
	if (q->rescan) {
		q->rescan = 0;
		if (spool_scan(q->qdir, 0, rescan_cb, q) < 0)
			q->rescan = 1;
	}
}

/* Put a message aside: resources (short wait) or a real deferral (backoff). */
static void defer_msg(struct qmgr *q, struct qmsg *m, int backoff)
{
	m->busy = 0;
	if (backoff) {
		m->backoff = m->backoff ? m->backoff * 2 : (int)q->min_backoff;
		if (m->backoff > q->max_backoff)
			m->backoff = (int)q->max_backoff;
		if (m->backoff < q->min_backoff)
			m->backoff = (int)q->min_backoff;
		push_deferred(q, m, time(NULL) + m->backoff);
	} else {
		/* no backoff: scheduling pauses until the retry timer, then resumes */
		if (!ev_is_active(&q->retry_timer)) {
			ev_timer_set(&q->retry_timer, RETRY_RESOURCE, 0.);
			ev_timer_start(q->loop, &q->retry_timer);
		}
		push_active(q, m);
	}
}

static void dlv_free(struct dlv *d)
{
	int i;

	if (d->tl) {
		for (i = 0; i < d->env.nrcpt; i++)
			target_list_free(&d->tl[i]);
		mem_free(d->tl);
	}
	mem_free(d->res);
	maildir_headers_free(&d->hdr);
	fd_close(d->fd);
	spool_env_free(&d->env);
	mem_free(d);
}

/* Marks (and removal) after deliveries and bounces; on a worker thread. */
static void finish_work(struct dlv *d)
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
			if (sync_shared(d->fd) < 0)
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
	if (marks == 0)
		return;
	for (i = 0; i < d->env.nrcpt; i++)
		if ((d->res[i] == RR_SENT || d->res[i] == RR_BOUNCE) &&
		    spool_env_mark(d->fd, &d->env.rcpt[i], d->env.rcpt[i].status) < 0) {
			d->mark_err = errno;
			return;
		}
	if (sync_shared(d->fd) < 0)
		d->mark_err = errno;
}

/*
 * One mailbox, written by whoever may write it (PRODUCT.md 3.5): this
 * process for what it owns, a delivery helper for the rest, handed a
 * read-only descriptor of the queue file (the helpers never get ours, which
 * can write the envelope). On a worker thread.
 */
static int deliver_target(struct dlv *d, const struct msg_src *src, const struct target *t,
    char *reason, size_t rlen)
{
	char path[4096];

	if (t->via == VIA_SELF)
		return maildir_deliver_under(t->base, t->rel, t->uid, src, t->addr, reason, rlen);
	if (d->rofd < 0) {
		snprintf(path, sizeof path, "%s/%s/%s", d->q->qdir, SPOOL_COMMITTED, d->env.id);
		if ((d->rofd = fd_open(path, O_RDONLY | O_CLOEXEC)) < 0) {
			snprintf(reason, rlen, "cannot open queue file for the delivery helper: %s", strerror(errno));
			return -1;
		}
	}
	return helper_deliver(t->via == VIA_LOCAL ? HELPER_LOCAL : HELPER_VIRTUAL, d->rofd, src, t->addr,
	    t->rel, reason, rlen);
}

static void deliver_work(struct worker_job *j)
{
	struct dlv *d = (struct dlv *)j;
	struct msg_src src;
	int i, k, bounces = 0;
	char reason[256];

	d->rofd = -1;
	src.fd = d->fd;
	src.off = d->env.msg_off;
	src.size = d->env.size;
	src.sender = d->env.sender;
	d->t_start = now_f();
	d->hdr_ok = maildir_scan_headers(&src, &d->hdr) == 0;
	for (i = 0; i < d->env.nrcpt; i++) {
		enum rcpt_result rr = RR_NONE;

		if (d->env.rcpt[i].status != RCPT_TODO)
			continue;
		for (k = 0; k < d->tl[i].n; k++) {
			struct target *t = &d->tl[i].v[k];

			if (t->kind == TGT_MAILDIR || t->kind == TGT_MBOX) {
				if (!d->hdr_ok) {
					t->kind = TGT_DEFER;
					snprintf(t->dsn, sizeof t->dsn, "4.3.0");
					snprintf(t->reason, sizeof t->reason, "cannot read queue file: %s",
					    strerror(errno ? errno : EIO));
				} else if (maildir_loop_check(&d->hdr, t->addr, d->q->hop_limit, reason,
				    sizeof reason)) {
					t->kind = TGT_BOUNCE;
					snprintf(t->dsn, sizeof t->dsn, "5.4.6");
					snprintf(t->reason, sizeof t->reason, "%s", reason);
				} else if (deliver_target(d, &src, t, reason, sizeof reason) == 0) {
					t->sent = 1;
				} else {
					t->kind = TGT_DEFER;
					snprintf(t->dsn, sizeof t->dsn, "4.2.0");
					snprintf(t->reason, sizeof t->reason, "%s", reason);
				}
			}
			if (t->kind == TGT_DEFER)
				rr = RR_DEFER;
			else if (t->kind == TGT_BOUNCE && rr != RR_DEFER)
				rr = RR_BOUNCE;
			else if (rr == RR_NONE)
				rr = RR_SENT;
		}
		if (rr == RR_DEFER && d->expired) {
			/* past its lifetime: returned, unless it waits for smtp (kept, never lost) */
			int smtp = 0;
			for (k = 0; k < d->tl[i].n; k++)
				smtp |= d->tl[i].v[k].kind == TGT_DEFER && d->tl[i].v[k].never_expire;
			if (!smtp)
				rr = RR_BOUNCE;
		}
		d->res[i] = rr == RR_NONE ? RR_DEFER : rr;
		if (d->res[i] == RR_BOUNCE)
			bounces++;
	}
	d->t_done = now_f();
	fd_close(d->rofd);
	d->rofd = -1;
	/* with no bounce to queue first, the marks are written right here */
	d->finish_in_job = bounces == 0;
	if (d->finish_in_job)
		finish_work(d);
}

static void log_target(struct dlv *d, int i, const struct target *t, const char *status)
{
	const struct spool_rcpt *r = &d->env.rcpt[i];
	char delay[32], a[16], b[16], dd[16], orig[1100];
	double arrival = (double)d->env.arrival + (double)d->env.arrival_usec / 1e6;
	double seen = d->m->seen_at > arrival ? d->m->seen_at : arrival;

	queue_fmt_delay(delay, sizeof delay, d->t_done - arrival);
	queue_fmt_delay(a, sizeof a, seen - arrival);
	queue_fmt_delay(b, sizeof b, d->t_start - seen);
	queue_fmt_delay(dd, sizeof dd, d->t_done - d->t_start);
	orig[0] = '\0';
	if (strcasecmp(t->addr, r->orig) != 0)
		snprintf(orig, sizeof orig, ", orig_to=<%s>", r->orig);
	log_info(t->service ? t->service : "local",
	    "%s: to=<%s>%s, relay=%s, delay=%s, delays=%s/%s/0/%s, dsn=%s, status=%s",
	    d->env.id, t->addr, orig, t->path ? "local" : "none",
	    delay, a, b, dd, t->sent ? "2.0.0" : t->dsn, status);
}

static void dlv_end(struct dlv *d);

static void finish_job_work(struct worker_job *j)
{
	finish_work((struct dlv *)j);
}

static void finish_job_done(struct worker_job *j)
{
	dlv_end((struct dlv *)j);
}

static void start_finish(struct dlv *d)
{
	d->job.work = finish_job_work;
	d->job.done = finish_job_done;
	worker_submit(WORKER_DELIVERY, &d->job);
}

static void bounce_done(void *arg, int err, const char *id)
{
	struct dlv *d = arg;
	int i;

	if (err) {
		/* the bounce is not durable: the recipients stay to do, retried later */
		log_warning("qmgr", "%s: cannot queue non-delivery notification: %s", d->env.id,
		    strerror(err));
		for (i = 0; i < d->env.nrcpt; i++)
			if (d->res[i] == RR_BOUNCE)
				d->res[i] = RR_DEFER;
	} else {
		snprintf(d->bounce_id, sizeof d->bounce_id, "%s", id);
		qmgr_enqueue(d->q, id);
	}
	start_finish(d);
}

static void deliver_done(struct worker_job *j)
{
	struct dlv *d = (struct dlv *)j;
	struct qmgr *q = d->q;
	struct bounce_item *items = NULL;
	int i, k, nitems = 0, maxitems = 0;
	char status[400];

	/* res[] says what was attempted: the job may already have marked status */
	for (i = 0; i < d->env.nrcpt; i++)
		maxitems += d->res[i] != RR_NONE ? d->tl[i].n : 0;
	for (i = 0; i < d->env.nrcpt; i++) {
		if (d->res[i] == RR_NONE)
			continue;
		for (k = 0; k < d->tl[i].n; k++) {
			struct target *t = &d->tl[i].v[k];

			if (t->sent) {
				snprintf(status, sizeof status, "sent (delivered to %s)",
				    t->kind == TGT_MBOX ? "mailbox" : "maildir");
			} else if (t->kind == TGT_DEFER && d->res[i] == RR_BOUNCE) {
				snprintf(status, sizeof status, "expired, returned to sender (%s)", t->reason);
			} else if (t->kind == TGT_DEFER) {
				snprintf(status, sizeof status, "deferred (%s)", t->reason);
			} else if (t->kind == TGT_BOUNCE) {
				snprintf(status, sizeof status, "bounced (%s)", t->reason);
			} else {
				continue;
			}
			log_target(d, i, t, status);
		}
	}
	if (d->finish_in_job) {
		dlv_end(d);
		return;
	}
	/* bounces: queue the notification first, then mark (PRODUCT.md 3.1) */
	if ((items = mem_calloc((size_t)(maxitems ? maxitems : 1), sizeof *items)) == NULL)
		goto nobounce;
	for (i = 0; i < d->env.nrcpt; i++) {
		if (d->res[i] != RR_BOUNCE)
			continue;
		for (k = 0; k < d->tl[i].n; k++) {
			struct target *t = &d->tl[i].v[k];
			if (t->sent)
				continue;
			items[nitems].addr = t->addr;
			items[nitems].orig = d->env.rcpt[i].orig;
			items[nitems].rcpt = i;
			items[nitems].dsn = t->kind == TGT_DEFER ? "4.4.7" : t->dsn;
			items[nitems].reason = t->reason;
			nitems++;
		}
	}
	/* bounce.c decides who gets what (NOTIFY, null and double-bounce senders); 1: nothing to send */
	if ((k = bounce_notify(q->s, q->c, BOUNCE_FAILURE, &d->env, d->hdr_ok ? &d->hdr : NULL, d->fd,
	    items, nitems, bounce_done, d)) >= 0) {
		mem_free(items);
		if (k == 1)
			start_finish(d);
		return;
	}
	mem_free(items);
nobounce:
	log_warning("qmgr", "%s: cannot create non-delivery notification: %s", d->env.id,
	    strerror(errno));
	for (i = 0; i < d->env.nrcpt; i++)
		if (d->res[i] == RR_BOUNCE)
			d->res[i] = RR_DEFER;
	start_finish(d);
}

/* The attempt is over: log, reschedule or forget, start the next one. */
static void dlv_end(struct dlv *d)
{
	struct qmgr *q = d->q;
	struct qmsg *m = d->m;

	if (d->mark_err)
		log_warning("qmgr", "%s: cannot record delivery state in %s/%s: %s (some recipients "
		    "may get a duplicate)", d->env.id, q->qdir, SPOOL_COMMITTED, strerror(d->mark_err));
	q->inflight--;
	ev_unref(q->loop);
	if (d->removed) {
		log_info("qmgr", "%s: removed", d->env.id);
		forget_msg(q, m);
	} else {
		defer_msg(q, m, 1);
	}
	dlv_free(d);
	kick(q);
}

static void start_delivery(struct qmgr *q, struct qmsg *m)
{
	struct dlv *d;
	int i;

	m->busy = 1;
	if (!fd_room(FD_FILE, DLV_FILES)) {
		log_warning("qmgr", "%s: descriptor budget exhausted: delivery postponed", m->id);
		defer_msg(q, m, 0);
		return;
	}
	if ((d = mem_calloc(1, sizeof *d)) == NULL) {
		log_warning("qmgr", "%s: out of memory: delivery postponed", m->id);
		defer_msg(q, m, 0);
		return;
	}
	d->q = q;
	d->m = m;
	d->fd = -1;
	if (spool_env_load(q->qdir, m->id, &d->env, &d->fd) < 0) {
		int e = errno;
		dlv_free(d);
		if (e == ENOENT) {   /* deleted meanwhile (frugal queue delete) */
			forget_msg(q, m);
			return;
		}
		if (e == ENOMEM || e == EMFILE || e == ENFILE) {
			log_warning("qmgr", "%s: cannot read queue file: %s: delivery postponed", m->id, strerror(e));
			limits_note_failure(e == ENOMEM ? "memory" : "numfile", e);
			defer_msg(q, m, 0);
		} else {
			log_warning("qmgr", "%s: cannot read queue file %s/%s/%s: %s", m->id, q->qdir,
			    SPOOL_COMMITTED, m->id, strerror(e));
			defer_msg(q, m, 1);
		}
		return;
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
	q->inflight++;
	ev_ref(q->loop);   /* a delivery in flight keeps the loop alive */
	d->job.work = deliver_work;
	d->job.done = deliver_done;
	worker_submit(WORKER_DELIVERY, &d->job);
	return;
nomem:
	log_warning("qmgr", "%s: out of memory: delivery postponed", m->id);
	limits_note_failure("memory", ENOMEM);
	dlv_free(d);
	defer_msg(q, m, 0);
}

void qmgr_free(struct qmgr *q)
{
	struct qmsg *m, *next;
	int i;

	if (q == NULL)
		return;
	while (q->inflight > 0)
		ev_run(q->loop, EVRUN_ONCE);
	ev_prepare_stop(q->loop, &q->kick);
	ev_timer_stop(q->loop, &q->retry_timer);
	ev_ref(q->loop);
	ev_timer_stop(q->loop, &q->run_timer);
	for (i = 0; i < NBUCKETS; i++)
		for (m = q->hash[i]; m; m = next) {
			next = m->hnext;
			mem_free(m);
		}
	mem_free(q->hash);
	resolver_free(q->r);
	conf_unref(q->c);
	mem_free(q->qdir);
	mem_free(q);
}
