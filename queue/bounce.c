/*
 * queue/bounce.c: non-delivery reports. Builds an RFC 3464 multipart/report
 * (human text, machine-readable delivery status, the original headers) and
 * queues it through the spool as a new message from the null sender, so it
 * is as durable as any accepted mail. Owns nothing after returning. Must
 * never be used for a message whose sender is null (no bounce for a bounce;
 * the caller checks) and never mark the original done: qmgr does that only
 * after `done` reports the report durable.
 */
#include "queue/queue_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "conf/conf.h"
#include "core/buf.h"
#include "core/mem.h"

#define REPORT_MAX (2 * 1024 * 1024)   /* text + status + headers (headers are capped at 1 MB) */

static void rfc2822_date(char *out, size_t n, time_t t)
{
	struct tm tm;

	localtime_r(&t, &tm);
	strftime(out, n, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

/* the report, LF line ends (the spool stores messages that way) */
static int build_report(struct buf *b, const char *host, const struct spool_env *env,
    const char *new_id, const struct msg_headers *h, const struct bounce_item *items, int n)
{
	char date[64], arrival[64];
	int i, rc = 0;

	rfc2822_date(date, sizeof date, time(NULL));
	rfc2822_date(arrival, sizeof arrival, env->arrival);
	rc |= buf_printf(b,
	    "From: MAILER-DAEMON@%s (Mail Delivery System)\n"
	    "To: %s\n"
	    "Subject: Undelivered Mail Returned to Sender\n"
	    "Date: %s\n"
	    "Message-Id: <%s.%lld@%s>\n"
	    "Auto-Submitted: auto-replied\n"
	    "MIME-Version: 1.0\n"
	    "Content-Type: multipart/report; report-type=delivery-status;\n"
	    "\tboundary=\"%s/%s\"\n"
	    "Content-Transfer-Encoding: 8bit\n"
	    "\n"
	    "This is a MIME-encapsulated message.\n"
	    "\n"
	    "--%s/%s\n"
	    "Content-Description: Notification\n"
	    "Content-Type: text/plain; charset=us-ascii\n"
	    "\n"
	    "This is the mail system at host %s.\n"
	    "\n"
	    "I'm sorry to have to inform you that your message could not\n"
	    "be delivered to one or more recipients. It's attached below.\n"
	    "\n"
	    "For further assistance, please send mail to postmaster.\n"
	    "\n",
	    host, env->sender, date, new_id, (long long)time(NULL), host,
	    env->id, host, env->id, host, host);
	for (i = 0; i < n; i++)
		rc |= buf_printf(b, "<%s>: %s\n\n", items[i].addr, items[i].reason);
	rc |= buf_printf(b,
	    "--%s/%s\n"
	    "Content-Description: Delivery report\n"
	    "Content-Type: message/delivery-status\n"
	    "\n"
	    "Reporting-MTA: dns; %s\n"
	    "X-Frugal-Queue-ID: %s\n"
	    "X-Frugal-Sender: rfc822; %s\n"
	    "Arrival-Date: %s\n",
	    env->id, host, host, env->id, env->sender, arrival);
	for (i = 0; i < n; i++) {
		const char *dsn = items[i].dsn && *items[i].dsn ? items[i].dsn : "5.0.0";
		rc |= buf_printf(b,
		    "\n"
		    "Final-Recipient: rfc822; %s\n"
		    "Original-Recipient: rfc822;%s\n"
		    "Action: failed\n"
		    "Status: %s%s\n"
		    "Diagnostic-Code: X-Frugal; %s\n",
		    items[i].addr, items[i].orig ? items[i].orig : items[i].addr,
		    /* an expired deferral is reported as the permanent failure it became */
		    dsn[0] == '4' ? "5" : "", dsn[0] == '4' ? dsn + 1 : dsn, items[i].reason);
	}
	if (h && h->header_text && h->header_len) {
		rc |= buf_printf(b,
		    "\n--%s/%s\n"
		    "Content-Description: Undelivered Message Headers\n"
		    "Content-Type: text/rfc822-headers\n"
		    "\n", env->id, host);
		rc |= buf_append(b, h->header_text, h->header_len);
		if (h->header_text[h->header_len - 1] != '\n')
			rc |= buf_append(b, "\n", 1);
	}
	rc |= buf_printf(b, "\n--%s/%s--\n", env->id, host);
	return rc ? -1 : 0;
}

int bounce_queue(struct spool *s, const struct conf *c, const struct spool_env *env,
    const struct msg_headers *h, const struct bounce_item *items, int nitems,
    void (*done)(void *arg, int err, const char *id), void *arg)
{
	struct spool_txn *t;
	struct buf b;
	const char *host = conf_str(c, "myhostname", 0);
	int e;

	if (*env->sender == '\0' || nitems <= 0) {
		errno = EINVAL;   /* no bounce for a bounce; nothing to report */
		return -1;
	}
	if (host == NULL || *host == '\0')
		host = "localhost";
	if ((t = spool_txn_new(s, "", "localhost[127.0.0.1]")) == NULL)
		return -1;
	buf_init(&b, REPORT_MAX);
	if (spool_txn_rcpt(t, env->sender, env->sender) < 0 || spool_txn_open(t) < 0)
		goto fail;
	if (build_report(&b, host, env, spool_txn_id(t), h, items, nitems) < 0) {
		errno = ENOMEM;
		goto fail;
	}
	if (spool_txn_write(t, buf_head(&b), buf_used(&b)) < 0)
		goto fail;
	buf_release(&b);
	spool_txn_commit(t, done, arg);
	return 0;
fail:
	e = errno;
	buf_release(&b);
	spool_txn_abort(t);
	errno = e;
	return -1;
}
