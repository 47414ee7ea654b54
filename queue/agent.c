/*
 * queue/agent.c: the delivery agents behind the one interface of
 * queue_int.h (struct agent_job). Owns nothing past a job: a job's targets
 * and message belong to the scheduler (qmgr.c).
 *
 *   local, virtual   Maildir and mbox, on a delivery worker thread, written
 *                    by this process, or through a delivery helper (PRODUCT.md
 *                    3.5: no fork per message) asked from the loop
 *   error            bounces each recipient with the next hop's text
 *   discard          reports each recipient delivered, writes nothing
 *   smtp, relay,     the network clients (smtpc.c), on the loop
 *   lmtp
 *   anything else    (a transport_maps typo) defers: "mail transport unavailable"
 */
#include "queue/queue_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "core/fd.h"
#include "core/worker.h"

static double now_f(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* ---- local and virtual: Maildir on a worker ------------------------------ */

/*
 * One mailbox, written by whoever may write it: this process for what it
 * owns, a delivery helper for the rest, handed a read-only descriptor of
 * the queue file (helpers never get ours, which can write the envelope).
 */
static int deliver_target(struct agent_job *j, int *rofd, const struct target *t, char *reason, size_t rlen)
{
	char path[4096];

	if (t->via == VIA_SELF)
		return maildir_deliver_under(t->base, t->rel, t->uid, &j->src, t->addr, reason, rlen);
	if (*rofd < 0) {
		snprintf(path, sizeof path, "%s/%s/%s", j->qdir, SPOOL_COMMITTED, j->queue_id);
		if ((*rofd = fd_open(path, O_RDONLY | O_CLOEXEC)) < 0) {
			snprintf(reason, rlen, "cannot open queue file for the delivery helper: %s", strerror(errno));
			return -1;
		}
	}
	return helper_deliver(t->via == VIA_LOCAL ? HELPER_LOCAL : HELPER_VIRTUAL, *rofd, &j->src, t->addr,
	    t->rel, reason, rlen);
}

/* What is decided before any delivery, on either path: an unreadable queue file
 * defers, a mail loop (too many Received:/Delivered-To:) bounces. 1: decided. */
static int target_decided(struct agent_job *j, struct target *t)
{
	char reason[256];

	if (!j->hdr_ok) {
		t->kind = TGT_DEFER;
		snprintf(t->dsn, sizeof t->dsn, "4.3.0");
		snprintf(t->reason, sizeof t->reason, "cannot read queue file: %s", strerror(errno ? errno : EIO));
		return 1;
	}
	if (maildir_loop_check(&j->hdr, t->addr, j->hop_limit, reason, sizeof reason)) {
		t->kind = TGT_BOUNCE;
		snprintf(t->dsn, sizeof t->dsn, "5.4.6");
		snprintf(t->reason, sizeof t->reason, "%s", reason);
		return 1;
	}
	return 0;
}

static void mailbox_work(struct worker_job *wj)
{
	struct agent_job *j = (struct agent_job *)wj;
	char reason[256];
	int i, rofd = -1;

	j->t_start = now_f();
	j->hdr_ok = maildir_scan_headers(&j->src, &j->hdr) == 0;
	for (i = 0; i < j->n; i++) {
		struct target *t = j->t[i];

		if (target_decided(j, t))
			continue;
		if (deliver_target(j, &rofd, t, reason, sizeof reason) == 0) {
			t->sent = 1;
		} else {
			t->kind = TGT_DEFER;
			snprintf(t->dsn, sizeof t->dsn, "4.2.0");
			snprintf(t->reason, sizeof t->reason, "%s", reason);
		}
	}
	j->t_done = now_f();
	fd_close(rofd);
	if (j->after_work)
		j->after_work(j);
}

static void mailbox_done(struct worker_job *wj)
{
	struct agent_job *j = (struct agent_job *)wj;

	j->done(j);
}

/* ---- local, virtual: through the helpers, from the loop ------------------ */

/*
 * The deployed set-up's common case: every mailbox of the job belongs to
 * another owner. The loop sends the requests and reads the answers itself
 * (helper.c), so no worker waits on a helper; a worker runs only what
 * needs the disk afterwards (the fast path's state write and sync). The
 * header block is read here for the loop check: a pread of at most
 * LOOP_HEADERS_MAX bytes of a file just written (page cache), as the
 * envelope is read on the loop when the message is loaded; bigger mail
 * takes the worker path.
 */
#define LOOP_HEADERS_MAX (64 * 1024)

static int helpers_only(const struct agent_job *j)
{
	int i;

	if (msg_src_len(&j->src) > LOOP_HEADERS_MAX)
		return 0;
	for (i = 0; i < j->n; i++)
		if (j->t[i]->via == VIA_SELF)
			return 0;
	return j->n > 0;
}

static void after_work(struct worker_job *wj)
{
	struct agent_job *j = (struct agent_job *)wj;

	j->after_work(j);
}

/* loop: every answer is in */
static void helpers_finish(struct agent_job *j)
{
	j->t_done = now_f();
	if (j->after_work) {
		j->wj.work = after_work;
		j->wj.done = mailbox_done;
		worker_submit(WORKER_DELIVERY, &j->wj);
	} else {
		j->done(j);
	}
}

static void defer_target(struct target *t, const char *reason)
{
	t->kind = TGT_DEFER;
	snprintf(t->dsn, sizeof t->dsn, "4.2.0");
	snprintf(t->reason, sizeof t->reason, "%s", reason);
}

static void helper_answer(void *arg, int idx, int status, const char *reason)
{
	struct agent_job *j = arg;

	if (status == 0)
		j->t[idx]->sent = 1;
	else
		defer_target(j->t[idx], reason && *reason ? reason : strerror(status));
	if (--j->helper_wait == 0)
		helpers_finish(j);
}

static void helpers_deliver(struct agent_job *j)
{
	char path[4096], reason[256];
	int i, rofd = -1;

	j->t_start = now_f();
	j->hdr_ok = maildir_scan_headers(&j->src, &j->hdr) == 0;
	j->helper_wait = 1;   /* this function's own: no answer finishes the job under it */
	for (i = 0; i < j->n; i++) {
		struct target *t = j->t[i];

		if (target_decided(j, t))
			continue;
		if (rofd < 0) {
			/* helpers get a read-only descriptor, never ours, which can write the envelope */
			snprintf(path, sizeof path, "%s/%s/%s", j->qdir, SPOOL_COMMITTED, j->queue_id);
			if ((rofd = fd_open(path, O_RDONLY | O_CLOEXEC)) < 0) {
				snprintf(reason, sizeof reason, "cannot open queue file for the delivery helper: %s",
				    strerror(errno));
				defer_target(t, reason);
				continue;
			}
		}
		if (helper_send(t->via == VIA_LOCAL ? HELPER_LOCAL : HELPER_VIRTUAL, rofd, &j->src, t->addr, t->rel,
		    helper_answer, j, i, reason, sizeof reason) == 0)
			j->helper_wait++;
		else
			defer_target(t, reason);
	}
	fd_close(rofd);   /* each request in flight holds its own reference */
	if (--j->helper_wait == 0)
		helpers_finish(j);
}

static void mailbox_deliver(struct agent_job *j)
{
	j->relay = j->agent->name;
	if (helpers_only(j)) {
		helpers_deliver(j);
		return;
	}
	j->wj.work = mailbox_work;
	j->wj.done = mailbox_done;
	worker_submit(WORKER_DELIVERY, &j->wj);
}

/* ---- error, discard, unavailable: answered on the loop --------------------- */

static void each(struct agent_job *j, enum target_kind kind, const char *dsn, const char *reason, int sent)
{
	int i;

	j->relay = "none";
	j->t_start = j->t_done = now_f();
	for (i = 0; i < j->n; i++) {
		struct target *t = j->t[i];

		t->kind = kind;
		t->sent = sent;
		snprintf(t->dsn, sizeof t->dsn, "%s", dsn);
		snprintf(t->reason, sizeof t->reason, "%s", reason);
	}
	j->done(j);
}

/* error:[D.D.D ]TEXT, as Postfix's error(8): the text may start with the status to report */
static void error_deliver(struct agent_job *j)
{
	const char *text = j->route.nexthop;
	char dsn[8] = "5.0.0";

	if ((text[0] == '4' || text[0] == '5') && text[1] == '.' && isdigit((unsigned char)text[2])) {
		size_t n = strcspn(text, " ");
		if (n < sizeof dsn) {
			memcpy(dsn, text, n);
			dsn[n] = '\0';
			text += n;
			while (*text == ' ')
				text++;
		}
	}
	if (dsn[0] == '4')
		each(j, TGT_DEFER, dsn, *text ? text : "deferred by the error transport", 0);
	else
		each(j, TGT_BOUNCE, dsn, *text ? text : "mail for this destination is refused", 0);
}

static void discard_deliver(struct agent_job *j)
{
	each(j, TGT_MAILDIR, "2.0.0", *j->route.nexthop ? j->route.nexthop : "discarded", 1);
}

static void unavailable_deliver(struct agent_job *j)
{
	each(j, TGT_DEFER, "4.3.0", "mail transport unavailable", 0);
}

static const struct agent agents[] = {
	{ "local", 0, mailbox_deliver },
	{ "virtual", 0, mailbox_deliver },
	{ "error", 0, error_deliver },
	{ "discard", 0, discard_deliver },
	{ "smtp", 0, smtpc_deliver },
	{ "relay", 0, smtpc_deliver },
	{ "lmtp", 0, smtpc_deliver },
};
/* a transport nobody implements (a typo in transport_maps): its mail waits, never returned by age */
static const struct agent unavailable = { "unavailable", 1, unavailable_deliver };

const struct agent *agent_find(const char *transport)
{
	size_t i;

	for (i = 0; i < sizeof agents / sizeof agents[0]; i++)
		if (strcasecmp(agents[i].name, transport) == 0)
			return &agents[i];
	return &unavailable;
}
