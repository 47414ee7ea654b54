/*
 * queue/bounce.c: delivery status notifications (RFC 3464), as Postfix's
 * bounce daemon writes them. One builder for three kinds: failure (Action:
 * failed, a non-delivery report), delay (Action: delayed, a warning) and
 * success (Action: delivered, or relayed/expanded as the caller says).
 * Each is a multipart/report: human text, the machine-readable
 * message/delivery-status, then the original message (message/rfc822) or
 * its headers (text/rfc822-headers). It honours RFC 3461 as kept in the
 * envelope: NOTIFY per recipient (which recipients get a report at all),
 * RET (what is returned), ENVID and ORCPT (echoed back).
 *
 * The report is queued through the spool as a new message, so it is as
 * durable as any accepted mail, and the caller learns it is durable from
 * `done` on the loop: only then may it mark the original's recipients
 * (PRODUCT.md 3.1). This file never marks anything and owns nothing after
 * returning.
 *
 * Never a report to the null sender. A failure of a message from <> (a
 * bounce that could not be delivered) goes once to 2bounce_notice_recipient
 * from double_bounce_sender@$myhostname; a failure of mail from that sender
 * is discarded with a warning, so a double bounce never bounces again.
 */
#include "queue/queue_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/mem.h"

#define REPORT_MAX   (2 * 1024 * 1024)  /* text + status + headers (headers are capped at 1 MB) */
#define HEADERS_READ (64 * 1024)        /* headers read back from the queue file when h has none */
#define ADDR_MAX     1024

/* what one notification looks like: chosen once, then written by build_report() */
struct report {
	enum bounce_kind kind;
	int postmaster;            /* a double bounce: to 2bounce_notice_recipient */
	const char *host;          /* myhostname */
	const char *to;            /* the notice's recipient */
	const struct spool_env *env;
	const char *new_id;
	const struct bounce_item *items;   /* only those NOTIFY allows */
	int nitems;
	const char *returned;      /* the message or its headers; may be NULL */
	size_t returned_len;
	int full;                  /* returned is the whole message (message/rfc822) */
	time_t retry_until;        /* delay: Will-Retry-Until */
	long long warn_after;      /* delay: delay_warning_time, seconds */
	long long lifetime;        /* delay: maximal_queue_lifetime, seconds */
};

static void rfc2822_date(char *out, size_t n, time_t t)
{
	struct tm tm;

	localtime_r(&t, &tm);
	strftime(out, n, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

static const struct spool_rcpt *item_rcpt(const struct spool_env *env, const struct bounce_item *it)
{
	return it->rcpt >= 0 && it->rcpt < env->nrcpt ? &env->rcpt[it->rcpt] : NULL;
}

/* RFC 3461 4.1: absent NOTIFY means FAILURE,DELAY; NEVER means nothing; SUCCESS only when asked */
static int notify_wants(enum bounce_kind kind, int notify)
{
	int bit = kind == BOUNCE_FAILURE ? DSN_NOTIFY_FAILURE :
	    kind == BOUNCE_DELAY ? DSN_NOTIFY_DELAY : DSN_NOTIFY_SUCCESS;

	if (notify == 0)
		return kind != BOUNCE_SUCCESS;
	return (notify & bit) != 0;
}

static const char *default_action(enum bounce_kind k)
{
	return k == BOUNCE_FAILURE ? "failed" : k == BOUNCE_DELAY ? "delayed" : "delivered";
}

/* the Status: value. An expired deferral is reported as the permanent failure it became. */
static void status_of(enum bounce_kind k, const char *dsn, char *out, size_t n)
{
	const char *def = k == BOUNCE_FAILURE ? "5.0.0" : k == BOUNCE_DELAY ? "4.0.0" : "2.0.0";

	if (dsn == NULL || strlen(dsn) < 5 || dsn[1] != '.')
		dsn = def;
	if (k == BOUNCE_FAILURE && dsn[0] == '4')
		snprintf(out, n, "5%s", dsn + 1);
	else
		snprintf(out, n, "%s", dsn);
}

/*
 * Postfix: "smtp; 550 ..." for a remote server's reply, its own name for a
 * local reason. The SMTP/LMTP client words a peer's refusal "host H[A] said:
 * 550 ... (in reply to RCPT TO command)" (smtpc.c, Postfix's text for the
 * human part); the machine-readable part wants the reply alone, with
 * Remote-MTA naming H, as Postfix's bounce writes them.
 */
static int is_reply(const char *r)
{
	return r[0] >= '2' && r[0] <= '5' && r[1] >= '0' && r[1] <= '9' && r[2] >= '0' && r[2] <= '9' &&
	    (r[3] == ' ' || r[3] == '-' || r[3] == '\0');
}

/*
 * "host H[A] said: REPLY (in reply to ...)", or a relayed success "delivery via
 * H[A]:P: REPLY" (qmgr.c): H and REPLY's bounds, else 0
 */
static int remote_said(const char *reason, const char **host, size_t *hlen, const char **reply, size_t *rlen)
{
	const char *h, *e, *said, *end;

	if (strncmp(reason, "delivery via ", 13) == 0) {
		h = reason + 13;
		if ((e = strchr(h, '[')) == NULL || e == h || (said = strstr(e, "]:")) == NULL ||
		    (said = strstr(said, ": ")) == NULL || !is_reply(said + 2))
			return 0;
		*host = h;
		*hlen = (size_t)(e - h);
		*reply = said + 2;
		*rlen = strlen(*reply);
		return 1;
	}
	if (strncmp(reason, "host ", 5) != 0 || (said = strstr(reason, " said: ")) == NULL)
		return 0;
	h = reason + 5;
	for (e = h; e < said && *e != '[' && *e != ' '; e++)
		;
	if (e == h || !is_reply(said + 7))
		return 0;
	*host = h;
	*hlen = (size_t)(e - h);
	*reply = said + 7;
	end = strstr(*reply, " (in reply to ");
	*rlen = end ? (size_t)(end - *reply) : strlen(*reply);
	return 1;
}

static int diagnostic(struct buf *b, const char *reason)
{
	const char *host, *reply;
	size_t hlen, rlen;

	if (remote_said(reason, &host, &hlen, &reply, &rlen))
		return buf_printf(b, "Remote-MTA: dns; %.*s\nDiagnostic-Code: smtp; %.*s\n",
		    (int)hlen, host, (int)rlen, reply);
	return buf_printf(b, "Diagnostic-Code: %s; %s\n", is_reply(reason) ? "smtp" : "X-Frugal", reason);
}

static int human_text(struct buf *b, const struct report *r)
{
	int rc = 0, i;

	rc |= buf_printf(b, "This is the mail system at host %s.\n\n", r->host);
	switch (r->kind) {
	case BOUNCE_FAILURE:
		rc |= buf_printf(b,
		    "I'm sorry to have to inform you that your message could not\n"
		    "be delivered to one or more recipients. It's attached below.\n"
		    "\n"
		    "For further assistance, please send mail to postmaster.\n"
		    "\n"
		    "If you do so, please include this problem report. You can\n"
		    "delete your own text from the attached returned message.\n");
		break;
	case BOUNCE_DELAY: {
		long long hours = (r->warn_after + 3599) / 3600, days = (r->lifetime + 86399) / 86400;

		/* Postfix's delay template, word for word */
		rc |= buf_printf(b,
		    "####################################################################\n"
		    "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
		    "####################################################################\n"
		    "\n"
		    "Your message could not be delivered for more than %lld hour(s).\n"
		    "It will be retried until it is %lld day(s) old.\n"
		    "\n"
		    "For further assistance, please send mail to postmaster.\n"
		    "\n"
		    "If you do so, please include this problem report. You can\n"
		    "delete your own text from the attached returned message.\n",
		    hours > 0 ? hours : 1, days > 0 ? days : 1);
		break;
	}
	case BOUNCE_SUCCESS:
		rc |= buf_printf(b,
		    "Your message was successfully delivered to the destination(s)\n"
		    "listed below. If the message was delivered to mailbox you will\n"
		    "receive no further notifications. Otherwise you may still receive\n"
		    "notifications of mail delivery errors from other systems.\n");
		break;
	}
	rc |= buf_printf(b, "\n                   The mail system\n\n");
	for (i = 0; i < r->nitems; i++) {
		const struct bounce_item *it = &r->items[i];
		const struct spool_rcpt *er = item_rcpt(r->env, it);
		const char *orig = it->orig ? it->orig : er ? er->orig : NULL;

		if (orig && strcasecmp(orig, it->addr) != 0)
			rc |= buf_printf(b, "<%s> (expanded from <%s>): %s\n\n", it->addr, orig,
			    it->reason ? it->reason : default_action(r->kind));
		else
			rc |= buf_printf(b, "<%s>: %s\n\n", it->addr, it->reason ? it->reason : default_action(r->kind));
	}
	return rc;
}

/* the report, LF line ends (the spool stores messages that way) */
static int build_report(struct buf *b, const struct report *r)
{
	static const char *const subject[] = {
		[BOUNCE_FAILURE] = "Undelivered Mail Returned to Sender",
		[BOUNCE_DELAY] = "Delayed Mail (still being retried)",
		[BOUNCE_SUCCESS] = "Successful Mail Delivery Report",
	};
	static const char *const what[] = {
		[BOUNCE_FAILURE] = "Undelivered", [BOUNCE_DELAY] = "Delayed", [BOUNCE_SUCCESS] = "Delivered",
	};
	const struct spool_env *env = r->env;
	char date[64], arrival[64], until[64], bnd[QUEUE_ID_MAX + 300];
	time_t now = time(NULL);
	int i, rc = 0;

	rfc2822_date(date, sizeof date, now);
	rfc2822_date(arrival, sizeof arrival, env->arrival);
	snprintf(bnd, sizeof bnd, "%s.%lld/%s", env->id, (long long)now, r->host);
	rc |= buf_printf(b,
	    "From: MAILER-DAEMON@%s (Mail Delivery System)\n"
	    "To: %s\n"
	    "Subject: %s\n"
	    "Date: %s\n"
	    "Message-Id: <%s.%lld@%s>\n"
	    "Auto-Submitted: auto-replied\n"
	    "MIME-Version: 1.0\n"
	    "Content-Type: multipart/report; report-type=delivery-status;\n"
	    "\tboundary=\"%s\"\n"
	    "Content-Transfer-Encoding: 8bit\n"
	    "\n"
	    "This is a MIME-encapsulated message.\n"
	    "\n"
	    "--%s\n"
	    "Content-Description: %s\n"
	    "Content-Type: text/plain; charset=us-ascii\n"
	    "\n",
	    r->host, r->to, r->postmaster ? "Postmaster Copy: Undelivered Mail" : subject[r->kind],
	    date, r->new_id, (long long)now, r->host, bnd, bnd, "Notification");
	rc |= human_text(b, r);
	rc |= buf_printf(b,
	    "--%s\n"
	    "Content-Description: Delivery report\n"
	    "Content-Type: message/delivery-status\n"
	    "\n", bnd);
	/* RFC 3464 2.2: the per-message fields, Original-Envelope-Id first */
	if (env->envid)
		rc |= buf_printf(b, "Original-Envelope-Id: %s\n", env->envid);
	rc |= buf_printf(b,
	    "Reporting-MTA: dns; %s\n"
	    "X-Frugal-Queue-ID: %s\n"
	    "X-Frugal-Sender: rfc822; %s\n"
	    "Arrival-Date: %s\n",
	    r->host, env->id, env->sender, arrival);
	for (i = 0; i < r->nitems; i++) {
		const struct bounce_item *it = &r->items[i];
		const struct spool_rcpt *er = item_rcpt(env, it);
		const char *orig = it->orig ? it->orig : er ? er->orig : NULL;
		char status[16];

		status_of(r->kind, it->dsn, status, sizeof status);
		rc |= buf_printf(b, "\nFinal-Recipient: rfc822; %s\n", it->addr);
		/* RFC 3464 2.3.1: ORCPT as the client gave it, else the address it was sent to */
		if (er && er->orcpt)
			rc |= buf_printf(b, "Original-Recipient: %s\n", er->orcpt);
		else if (orig)
			rc |= buf_printf(b, "Original-Recipient: rfc822; %s\n", orig);
		rc |= buf_printf(b, "Action: %s\nStatus: %s\n", it->action ? it->action : default_action(r->kind),
		    status);
		if (it->reason && *it->reason)
			rc |= diagnostic(b, it->reason);
		if (r->kind == BOUNCE_DELAY) {
			rfc2822_date(until, sizeof until, r->retry_until);
			rc |= buf_printf(b, "Will-Retry-Until: %s\n", until);
		}
	}
	if (r->returned && r->returned_len) {
		rc |= buf_printf(b,
		    "\n--%s\n"
		    "Content-Description: %s Message%s\n"
		    "Content-Type: %s\n"
		    "\n", bnd, what[r->kind], r->full ? "" : " Headers",
		    r->full ? "message/rfc822" : "text/rfc822-headers");
		rc |= buf_append(b, r->returned, r->returned_len);
		if (r->returned[r->returned_len - 1] != '\n')
			rc |= buf_append(b, "\n", 1);
	}
	rc |= buf_printf(b, "\n--%s--\n", bnd);
	return rc ? -1 : 0;
}

/* up to max bytes of the message from the queue file; NULL on error (errno) */
static char *read_message(int fd, const struct spool_env *env, size_t max, size_t *lenp)
{
	struct msg_src m;
	size_t want, got = 0;
	char *p;
	ssize_t r;

	msg_src_from_env(&m, fd, env);   /* the late headers (DKIM-Signature) first, as delivered */
	want = msg_src_len(&m) < 0 ? 0 : (size_t)msg_src_len(&m) < max ? (size_t)msg_src_len(&m) : max;
	if ((p = mem_alloc(want + 1)) == NULL)
		return NULL;
	while (got < want) {
		r = msg_src_pread(&m, p + got, want - got, (off_t)got);
		if (r <= 0) {
			if (r == 0)
				errno = EIO;
			mem_free(p);
			return NULL;
		}
		got += (size_t)r;
	}
	*lenp = got;
	return p;
}

/* the header block: everything up to (and with) the empty line */
static size_t header_len(const char *p, size_t n)
{
	const char *e;

	if (n && p[0] == '\n')
		return 0;
	e = memmem(p, n, "\n\n", 2);
	return e ? (size_t)(e - p) + 1 : n;
}

struct ctx {
	void (*done)(void *arg, int err, const char *id);
	void *arg;
	char id[QUEUE_ID_MAX];      /* the original's */
	const char *what;           /* "sender non-delivery notification", ... */
};

/* the report is durable (or not): log in Postfix's shape, then tell the caller */
static void committed(void *arg, int err, const char *id)
{
	struct ctx *c = arg;

	if (err == 0)
		log_info("bounce", "%s: %s: %s", c->id, c->what, id);
	if (c->done)
		c->done(c->arg, err, id);
	mem_free(c);
}

/* "user" -> "user@domain", as Postfix's trivial-rewrite appends @$myorigin */
static void qualify(char *out, size_t n, const char *addr, const char *domain)
{
	if (strchr(addr, '@') || *domain == '\0')
		snprintf(out, n, "%s", addr);
	else
		snprintf(out, n, "%s@%s", addr, domain);
}

int bounce_notify(struct spool *s, const struct conf *c, enum bounce_kind kind,
    const struct spool_env *env, const struct msg_headers *h, int msgfd,
    const struct bounce_item *items, int nitems,
    void (*done)(void *arg, int err, const char *id), void *arg)
{
	struct report r;
	struct bounce_item *keep = NULL;
	struct spool_txn *t = NULL;
	struct ctx *cx = NULL;
	struct buf b;
	char dbl[ADDR_MAX], to[ADDR_MAX];
	const char *host = conf_str(c, "myhostname", 0), *origin = conf_str(c, "myorigin", 0);
	const char *dbs = conf_str(c, "double_bounce_sender", 0), *from = "";
	char *msg = NULL;
	size_t msglen = 0;
	long long limit = conf_int(c, "bounce_size_limit", 0);
	int i, ret, e;

	if (nitems <= 0 || (kind != BOUNCE_FAILURE && kind != BOUNCE_DELAY && kind != BOUNCE_SUCCESS)) {
		errno = EINVAL;
		return -1;
	}
	if (host == NULL || *host == '\0')
		host = "localhost";
	if (origin == NULL || *origin == '\0')
		origin = host;
	if (dbs == NULL || *dbs == '\0')
		dbs = "double-bounce";
	/* Postfix's mail_addr_double_bounce(): qualified with $myhostname */
	qualify(dbl, sizeof dbl, dbs, host);
	memset(&r, 0, sizeof r);
	r.kind = kind;
	r.host = host;
	r.env = env;
	if (*env->sender && (strcasecmp(env->sender, dbl) == 0 || strcasecmp(env->sender, dbs) == 0)) {
		/* a postmaster notice that failed: never a third one (Postfix: bounce_notify_service.c) */
		if (kind == BOUNCE_FAILURE)
			log_warning("bounce", "%s: undeliverable postmaster notification discarded", env->id);
		return 1;
	}
	if (*env->sender == '\0') {
		if (kind != BOUNCE_FAILURE)
			return 1;   /* no delay or success notice for a bounce */
		r.postmaster = 1;
		qualify(to, sizeof to, conf_str(c, "2bounce_notice_recipient", 0) ?
		    conf_str(c, "2bounce_notice_recipient", 0) : "postmaster", origin);
		from = dbl;
	} else {
		snprintf(to, sizeof to, "%s", env->sender);
	}
	r.to = to;
	/* NOTIFY decides per recipient */
	if ((keep = mem_calloc((size_t)nitems, sizeof *keep)) == NULL)
		return -1;
	for (i = 0; i < nitems; i++) {
		const struct spool_rcpt *er = item_rcpt(env, &items[i]);

		if (notify_wants(kind, er ? er->notify : 0))
			keep[r.nitems++] = items[i];
	}
	if (r.nitems == 0) {
		mem_free(keep);
		return 1;
	}
	r.items = keep;
	/*
	 * What goes back (Postfix's choices): a failure returns what RET asks,
	 * the whole message when it does not say; a double bounce the whole
	 * bounce; delay and success notices the headers. The whole message only
	 * up to bounce_size_limit: beyond it, the headers.
	 */
	ret = kind != BOUNCE_FAILURE ? DSN_RET_HDRS : r.postmaster ? DSN_RET_FULL :
	    env->dsn_ret ? env->dsn_ret : DSN_RET_FULL;
	if (limit <= 0)
		limit = 50000;
	if (ret == DSN_RET_FULL && msgfd >= 0 && env->size + env->pre_len <= limit) {
		if ((msg = read_message(msgfd, env, (size_t)limit, &msglen)) == NULL)
			goto fail_early;
		r.returned = msg;
		r.returned_len = msglen;
		r.full = 1;
	} else if (h && h->header_text && h->header_len) {
		r.returned = h->header_text;
		r.returned_len = h->header_len;
	} else if (msgfd >= 0) {
		if ((msg = read_message(msgfd, env, HEADERS_READ, &msglen)) == NULL)
			goto fail_early;
		r.returned = msg;
		r.returned_len = header_len(msg, msglen);
	}
	if (kind == BOUNCE_DELAY) {
		long long life = *env->sender ? conf_time(c, "maximal_queue_lifetime", 0) : 0;

		r.lifetime = life > 0 ? life : 5 * 86400;
		r.retry_until = env->arrival + (time_t)r.lifetime;
		r.warn_after = conf_time(c, "delay_warning_time", 0);
		if (r.warn_after <= 0)
			r.warn_after = (long long)(time(NULL) - env->arrival);
	}
	if ((cx = mem_calloc(1, sizeof *cx)) == NULL)
		goto fail_early;
	cx->done = done;
	cx->arg = arg;
	snprintf(cx->id, sizeof cx->id, "%s", env->id);
	cx->what = r.postmaster ? "postmaster non-delivery notification" :
	    kind == BOUNCE_FAILURE ? "sender non-delivery notification" :
	    kind == BOUNCE_DELAY ? "sender delay notification" : "sender delivery status notification";
	if ((t = spool_txn_new(s, from, "localhost[127.0.0.1]")) == NULL)
		goto fail_early;
	buf_init(&b, REPORT_MAX);
	r.new_id = spool_txn_id(t);
	if (spool_txn_rcpt(t, to, to) < 0 || spool_txn_open(t) < 0)
		goto fail;
	if (build_report(&b, &r) < 0) {
		errno = ENOMEM;
		goto fail;
	}
	if (spool_txn_write(t, buf_head(&b), buf_used(&b)) < 0)
		goto fail;
	buf_release(&b);
	mem_free(msg);
	mem_free(keep);
	spool_txn_commit(t, committed, cx);
	return 0;
fail:
	e = errno;
	buf_release(&b);
	spool_txn_abort(t);
	errno = e;
fail_early:
	e = errno;
	mem_free(cx);
	mem_free(msg);
	mem_free(keep);
	errno = e;
	return -1;
}

int bounce_queue(struct spool *s, const struct conf *c, const struct spool_env *env,
    const struct msg_headers *h, const struct bounce_item *items, int nitems,
    void (*done)(void *arg, int err, const char *id), void *arg)
{
	return bounce_notify(s, c, BOUNCE_FAILURE, env, h, -1, items, nitems, done, arg);
}
