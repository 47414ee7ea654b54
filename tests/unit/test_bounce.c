/*
 * tests/unit/test_bounce.c: the delivery status notifications of
 * queue/bounce.c (bounce_notify), through a real spool in a temporary
 * directory: each kind (failure, delay, success) with NOTIFY, RET, ENVID
 * and ORCPT combinations, the null and double-bounce senders, and
 * bounce_size_limit. Each report is read back from the queue and checked
 * here; with FRUGAL_DSN_OUT=DIR set it is also written to DIR/<name>.eml,
 * which tests/integration/test_dsn.py parses with Python's email package
 * (multipart/report, report-type=delivery-status, the fields).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/mem.h"
#include "core/worker.h"
#include "queue/queue.h"
#include "queue/queue_int.h"

static char dir[256];
static struct ev_loop *loop;
static struct spool *sp;
static struct conf *cf;

struct result {
	int called, err;
	char id[QUEUE_ID_MAX];
};

static void done_cb(void *arg, int err, const char *id)
{
	struct result *r = arg;

	r->called++;
	r->err = err;
	snprintf(r->id, sizeof r->id, "%s", id);
}

static void setup(void)
{
	char err[256];
	struct conf_diags d;

	snprintf(dir, sizeof dir, "/tmp/frugal-test-bounce-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	loop = EV_DEFAULT;
	ck_assert_int_eq(worker_init(loop, (const int[WORKER_CLASSES]){ 2, 2 }), 0);
	ck_assert_ptr_nonnull(sp = spool_open(dir, err, sizeof err));
	spool_set_loop(sp, loop);
	memset(&d, 0, sizeof d);
	cf = conf_load_text("myhostname = mx.example.net\nmydomain = example.net\n"
	    "maximal_queue_lifetime = 2d\ndelay_warning_time = 4h\nbounce_size_limit = 2000\n",
	    "test", &d);
	ck_assert_ptr_nonnull(cf);
	conf_diags_free(&d);
}

static void teardown(void)
{
	char cmd[512];

	spool_close(sp);
	conf_unref(cf);
	worker_shutdown();
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

static const char msg[] = "Subject: hello there\nFrom: <s@example.org>\nMessage-Id: <m1@example.org>\n\n"
    "the body line\n";

struct rdsn {
	const char *addr;
	int notify;
	const char *orcpt;
};

/* a committed message with DSN data; returns its envelope and open descriptor */
static int make_msg(const char *sender, int ret, const char *envid, const struct rdsn *r, int n,
    const char *body, struct spool_env *e)
{
	struct spool_txn *t = spool_txn_new(sp, sender, "c.example[127.0.0.1]");
	struct result res = { 0 };
	int i, fd;

	ck_assert_ptr_nonnull(t);
	for (i = 0; i < n; i++) {
		ck_assert_int_eq(spool_txn_rcpt(t, r[i].addr, NULL), 0);
		ck_assert_int_eq(spool_txn_rcpt_dsn(t, r[i].notify, r[i].orcpt), 0);
	}
	ck_assert_int_eq(spool_txn_dsn(t, ret, envid), 0);
	ck_assert_int_eq(spool_txn_open(t), 0);
	ck_assert_int_eq(spool_txn_write(t, body, strlen(body)), 0);
	spool_txn_commit(t, done_cb, &res);
	while (!res.called)
		ev_run(loop, EVRUN_ONCE);
	ck_assert_int_eq(res.err, 0);
	ck_assert_int_eq(spool_env_load(dir, res.id, e, &fd), 0);
	return fd;
}

/* the queued report's envelope and text (owned by the caller); written out when asked */
static char *report(const char *id, const char *name, struct spool_env *e)
{
	char path[600];
	char *text;
	int fd;

	ck_assert_int_eq(spool_env_load(dir, id, e, &fd), 0);
	ck_assert_ptr_nonnull(text = calloc(1, (size_t)e->size + 1));
	ck_assert_int_eq((int)pread(fd, text, (size_t)e->size, e->msg_off), (int)e->size);
	close(fd);
	if (getenv("FRUGAL_DSN_OUT")) {
		FILE *f;

		snprintf(path, sizeof path, "%s/%s.eml", getenv("FRUGAL_DSN_OUT"), name);
		ck_assert_ptr_nonnull(f = fopen(path, "w"));
		fwrite(text, 1, (size_t)e->size, f);
		fclose(f);
	}
	return text;
}

static int notify(enum bounce_kind k, const struct spool_env *env, int fd, const struct bounce_item *it,
    int n, struct result *res)
{
	int rc;

	memset(res, 0, sizeof *res);
	rc = bounce_notify(sp, cf, k, env, NULL, fd, it, n, done_cb, res);
	if (rc == 0) {
		while (!res->called)
			ev_run(loop, EVRUN_ONCE);
		ck_assert_int_eq(res->err, 0);
	}
	return rc;
}

#define HAS(t, s) ck_assert_msg(strstr((t), (s)) != NULL, "missing \"%s\" in:\n%s", (s), (t))
#define HASNT(t, s) ck_assert_msg(strstr((t), (s)) == NULL, "unexpected \"%s\" in:\n%s", (s), (t))

/* No NOTIFY, no RET: a failure report with the whole message (Postfix's default) */
START_TEST(failure_default)
{
	struct rdsn r[] = { { "u1@example.org", 0, NULL } };
	struct bounce_item it[] = { { "u1@example.org", NULL, 0, "5.1.1", "unknown user: \"u1\"", NULL } };
	struct spool_env e, re;
	struct result res;
	char *t;
	int fd = make_msg("s@example.org", 0, NULL, r, 1, msg, &e);

	ck_assert_int_eq(notify(BOUNCE_FAILURE, &e, fd, it, 1, &res), 0);
	t = report(res.id, "failure_default", &re);
	ck_assert_str_eq(re.sender, "");
	ck_assert_int_eq(re.nrcpt, 1);
	ck_assert_str_eq(re.rcpt[0].addr, "s@example.org");
	HAS(t, "Subject: Undelivered Mail Returned to Sender\n");
	HAS(t, "Content-Type: multipart/report; report-type=delivery-status;");
	HAS(t, "Reporting-MTA: dns; mx.example.net\n");
	HAS(t, "Final-Recipient: rfc822; u1@example.org\n");
	HAS(t, "Original-Recipient: rfc822; u1@example.org\n");
	HAS(t, "Action: failed\nStatus: 5.1.1\n");
	HAS(t, "Diagnostic-Code: X-Frugal; unknown user");
	HAS(t, "Content-Type: message/rfc822\n");
	HAS(t, "the body line");
	HASNT(t, "Original-Envelope-Id");
	free(t);
	spool_env_free(&re);
	spool_env_free(&e);
	close(fd);
}
END_TEST

/* RET=HDRS, ENVID, ORCPT, and NOTIFY filtering (NEVER, SUCCESS-only, explicit FAILURE) */
START_TEST(failure_dsn)
{
	struct rdsn r[] = {
		{ "a@example.org", DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY, "rfc822;A+B@Example.ORG" },
		{ "b@example.org", DSN_NOTIFY_NEVER, NULL },
		{ "c@example.org", DSN_NOTIFY_SUCCESS, NULL },
	};
	struct bounce_item it[] = {
		{ "a@example.org", NULL, 0, "5.1.1", "host mx.example.org[192.0.2.1] said: 550 5.1.1 no such user "
		  "(in reply to RCPT TO command)", NULL },
		{ "b@example.org", NULL, 1, "5.1.1", "unknown user", NULL },
		{ "c@example.org", NULL, 2, "4.4.7", "expired", NULL },
	};
	struct spool_env e, re;
	struct result res;
	char *t;
	int fd = make_msg("s@example.org", DSN_RET_HDRS, "ENV-42 x", r, 3, msg, &e);

	ck_assert_int_eq(notify(BOUNCE_FAILURE, &e, fd, it, 3, &res), 0);
	t = report(res.id, "failure_hdrs", &re);
	HAS(t, "Original-Envelope-Id: ENV-42 x\nReporting-MTA: dns; mx.example.net\n");
	HAS(t, "Final-Recipient: rfc822; a@example.org\nOriginal-Recipient: rfc822;A+B@Example.ORG\n");
	/* the peer's reply alone, and who said it (Postfix's shape); the human part keeps the whole text */
	HAS(t, "Status: 5.1.1\nRemote-MTA: dns; mx.example.org\nDiagnostic-Code: smtp; 550 5.1.1 no such user\n");
	HAS(t, "host mx.example.org[192.0.2.1] said: 550 5.1.1 no such user (in reply to RCPT TO command)");
	HAS(t, "Content-Type: text/rfc822-headers\n");
	HAS(t, "Subject: hello there\n");
	HASNT(t, "the body line");
	HASNT(t, "b@example.org");   /* NEVER */
	HASNT(t, "c@example.org");   /* SUCCESS only */
	free(t);
	spool_env_free(&re);
	/* every recipient said no: nothing to send, no callback */
	ck_assert_int_eq(notify(BOUNCE_FAILURE, &e, fd, it + 1, 2, &res), 1);
	ck_assert_int_eq(res.called, 0);
	spool_env_free(&e);
	close(fd);
}
END_TEST

/* RET=FULL beyond bounce_size_limit returns the headers only */
START_TEST(failure_full_bounded)
{
	struct rdsn r[] = { { "u@example.org", 0, NULL } };
	struct bounce_item it[] = { { "u@example.org", NULL, 0, "5.1.1", "unknown user", NULL } };
	struct spool_env e, re;
	struct result res;
	char big[4000], *t;
	int fd;

	snprintf(big, sizeof big, "%s", msg);
	memset(big + strlen(msg), 'x', 3000);
	big[strlen(msg) + 3000] = '\0';
	fd = make_msg("s@example.org", DSN_RET_FULL, NULL, r, 1, big, &e);
	ck_assert_int_eq(notify(BOUNCE_FAILURE, &e, fd, it, 1, &res), 0);
	t = report(res.id, "failure_full_bounded", &re);
	HAS(t, "Content-Type: text/rfc822-headers\n");
	HASNT(t, "xxxxxxxx");
	free(t);
	spool_env_free(&re);
	spool_env_free(&e);
	close(fd);
	/* within the limit: the whole message */
	fd = make_msg("s@example.org", DSN_RET_FULL, "full", r, 1, msg, &e);
	ck_assert_int_eq(notify(BOUNCE_FAILURE, &e, fd, it, 1, &res), 0);
	t = report(res.id, "failure_full", &re);
	HAS(t, "Content-Type: message/rfc822\n");
	HAS(t, "the body line");
	free(t);
	spool_env_free(&re);
	spool_env_free(&e);
	close(fd);
}
END_TEST

START_TEST(delay_warning)
{
	struct rdsn r[] = {
		{ "d@example.org", 0, "rfc822;orig-d@example.org" },
		{ "f@example.org", DSN_NOTIFY_FAILURE, NULL },
	};
	struct bounce_item it[] = {
		{ "d@example.org", NULL, 0, "4.4.1", "connect to mx.example.org: Connection refused", NULL },
		{ "f@example.org", NULL, 1, "4.4.1", "connect to mx.example.org: Connection refused", NULL },
	};
	struct spool_env e, re;
	struct result res;
	char *t;
	int fd = make_msg("s@example.org", DSN_RET_FULL, "dly", r, 2, msg, &e);

	ck_assert_int_eq(notify(BOUNCE_DELAY, &e, fd, it, 2, &res), 0);
	t = report(res.id, "delay", &re);
	HAS(t, "Subject: Delayed Mail (still being retried)\n");
	HAS(t, "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #");
	HAS(t, "for more than 4 hour(s).\nIt will be retried until it is 2 day(s) old.\n");
	HAS(t, "Original-Envelope-Id: dly\n");
	HAS(t, "Original-Recipient: rfc822;orig-d@example.org\nAction: delayed\nStatus: 4.4.1\n");
	HAS(t, "Will-Retry-Until: ");
	HAS(t, "Content-Type: text/rfc822-headers\n");   /* a warning returns headers only */
	HASNT(t, "f@example.org");                       /* NOTIFY=FAILURE: no delay notice */
	free(t);
	spool_env_free(&re);
	ck_assert_int_eq(notify(BOUNCE_DELAY, &e, fd, it + 1, 1, &res), 1);
	spool_env_free(&e);
	close(fd);
}
END_TEST

START_TEST(success_notice)
{
	struct rdsn r[] = {
		{ "ok@example.org", DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE, NULL },
		{ "rel@example.com", DSN_NOTIFY_SUCCESS, "rfc822;rel@example.com" },
		{ "quiet@example.org", 0, NULL },
	};
	struct bounce_item it[] = {
		{ "ok@example.org", NULL, 0, NULL, "delivered to maildir", NULL },
		{ "rel@example.com", NULL, 1, "2.0.0", "delivery via mx.example.com[192.0.2.2]:25: 250 2.0.0 Ok: queued as X",
		  "relayed" },
		{ "quiet@example.org", NULL, 2, NULL, "delivered to maildir", NULL },
	};
	struct spool_env e, re;
	struct result res;
	char *t;
	int fd = make_msg("s@example.org", 0, "succ", r, 3, msg, &e);

	ck_assert_int_eq(notify(BOUNCE_SUCCESS, &e, fd, it, 3, &res), 0);
	t = report(res.id, "success", &re);
	HAS(t, "Subject: Successful Mail Delivery Report\n");
	HAS(t, "Final-Recipient: rfc822; ok@example.org\nOriginal-Recipient: rfc822; ok@example.org\n"
	    "Action: delivered\nStatus: 2.0.0\n");
	/* a relay's success as Postfix reports it (qmgr.c writes the "delivery via" text) */
	HAS(t, "Action: relayed\nStatus: 2.0.0\nRemote-MTA: dns; mx.example.com\n"
	    "Diagnostic-Code: smtp; 250 2.0.0 Ok: queued as X\n");
	HAS(t, "<rel@example.com>: delivery via mx.example.com[192.0.2.2]:25: 250 2.0.0 Ok: queued as X\n");
	HAS(t, "Content-Type: text/rfc822-headers\n");
	HASNT(t, "quiet@example.org");   /* success only when asked */
	free(t);
	spool_env_free(&re);
	ck_assert_int_eq(notify(BOUNCE_SUCCESS, &e, fd, it + 2, 1, &res), 1);
	spool_env_free(&e);
	close(fd);
}
END_TEST

/* a bounce that fails goes to the postmaster from double-bounce; that one failing is discarded */
START_TEST(null_and_double_bounce)
{
	struct rdsn r[] = { { "s@example.org", 0, NULL } };
	struct bounce_item it[] = { { "s@example.org", NULL, 0, "5.1.1", "unknown user", NULL } };
	struct spool_env e, re, e2;
	struct result res;
	char *t;
	int fd = make_msg("", 0, NULL, r, 1, msg, &e), fd2;

	ck_assert_int_eq(notify(BOUNCE_DELAY, &e, fd, it, 1, &res), 1);
	ck_assert_int_eq(notify(BOUNCE_SUCCESS, &e, fd, it, 1, &res), 1);
	ck_assert_int_eq(notify(BOUNCE_FAILURE, &e, fd, it, 1, &res), 0);
	t = report(res.id, "double_bounce", &re);
	ck_assert_str_eq(re.sender, "double-bounce@mx.example.net");
	ck_assert_str_eq(re.rcpt[0].addr, "postmaster@mx.example.net");
	HAS(t, "Subject: Postmaster Copy: Undelivered Mail\n");
	HAS(t, "Content-Type: message/rfc822\n");
	free(t);
	spool_env_free(&re);
	/* the postmaster notice itself fails: discarded, never a third notice */
	{
		struct rdsn r2[] = { { "postmaster@mx.example.net", 0, NULL } };
		struct bounce_item it2[] = { { "postmaster@mx.example.net", NULL, 0, "5.1.1", "unknown", NULL } };

		fd2 = make_msg("Double-Bounce@mx.example.net", 0, NULL, r2, 1, msg, &e2);
		ck_assert_int_eq(notify(BOUNCE_FAILURE, &e2, fd2, it2, 1, &res), 1);
		ck_assert_int_eq(res.called, 0);
		spool_env_free(&e2);
		close(fd2);
	}
	ck_assert_int_eq(bounce_notify(sp, cf, BOUNCE_FAILURE, &e, NULL, fd, it, 0, done_cb, &res), -1);
	ck_assert_int_eq(errno, EINVAL);
	spool_env_free(&e);
	close(fd);
}
END_TEST

/* the headers handed in (h) are what RET=HDRS returns; the old entry point still works */
START_TEST(headers_given_and_wrapper)
{
	struct rdsn r[] = { { "u@example.org", 0, NULL } };
	struct bounce_item it[] = { { "u@example.org", "U@example.org", 0, "4.2.0", "mailbox full", NULL } };
	struct msg_headers h;
	struct spool_env e, re;
	struct result res = { 0 };
	char hdr[] = "Subject: given headers\n";
	char *t;
	int fd = make_msg("s@example.org", 0, NULL, r, 1, msg, &e);

	memset(&h, 0, sizeof h);
	h.header_text = hdr;
	h.header_len = strlen(hdr);
	ck_assert_int_eq(bounce_queue(sp, cf, &e, &h, it, 1, done_cb, &res), 0);
	while (!res.called)
		ev_run(loop, EVRUN_ONCE);
	t = report(res.id, "wrapper", &re);
	HAS(t, "Content-Type: text/rfc822-headers\n\nSubject: given headers\n");
	HAS(t, "<u@example.org>: mailbox full\n");   /* case only: not "expanded from" */
	HAS(t, "Status: 5.2.0\n");   /* an expired deferral is reported as a failure */
	free(t);
	spool_env_free(&re);
	spool_env_free(&e);
	close(fd);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("bounce");
	TCase *tc = tcase_create("notify");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, failure_default);
	tcase_add_test(tc, failure_dsn);
	tcase_add_test(tc, failure_full_bounded);
	tcase_add_test(tc, delay_warning);
	tcase_add_test(tc, success_notice);
	tcase_add_test(tc, null_and_double_bounce);
	tcase_add_test(tc, headers_given_and_wrapper);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
