/*
 * tests/unit/test_qmgr.c: the scheduler with its agents on a real loop, a
 * real spool and the real worker pool (queue/qmgr.c): messages committed
 * through the spool reach the scheduler without anyone calling it (the
 * spool announces them), recipients are cut into batches per next hop and
 * recipient limit, transport_maps picks error: and discard:, an error:
 * bounce reaches the sender's mailbox, defer_transports hold mail until a
 * flush for its domain, and a queue of 100,000 messages is delivered with
 * a bounded number of messages in memory and bounded memory.
 *
 * The spool lives on /dev/shm when there is one (a syncfs per commit on a
 * busy disk would make the big-queue test take minutes, and prove nothing
 * more: durability has its own tests).
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/mem.h"
#include "core/worker.h"
#include "queue/queue.h"
#include "queue/queue_int.h"

static char dir[256];
static struct ev_loop *loop;

static void setup(void)
{
	struct stat st;

	snprintf(dir, sizeof dir, "%s/frugal-test-qmgr-XXXXXX",
	    stat("/dev/shm", &st) == 0 && access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	loop = EV_DEFAULT;
	ck_assert_int_eq(worker_init(loop, (const int[WORKER_CLASSES]){ 2, 2 }), 0);
}

static void teardown(void)
{
	char cmd[512];

	worker_shutdown();
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

static struct conf *make_conf(const char *extra)
{
	struct conf_diags d = { 0 };
	struct conf *c;
	char *text;
	int i;

	text = mem_printf(
	    "myhostname = test.example\n"
	    "mydestination = test.example\n"
	    "alias_maps =\n"
	    "queue_directory = %s\n"
	    "virtual_mailbox_domains = virt.example\n"
	    "virtual_mailbox_maps = inline:{ s@virt.example=s/ }\n"
	    "virtual_mailbox_base = %s/mail\n"
	    "transport_maps = inline:{ far.example=discard:gone, other.example=discard:, "
	    "{ err.example = error:5.1.1 no such domain here }, hold.example=smtp:[127.0.0.1]:9, "
	    "wait.example=smtp: }\n"
	    "delivery_concurrency_limit = 4\n"
	    "%s", dir, dir, extra);
	c = conf_load_text(text, "test.cf", &d);
	for (i = 0; i < d.n; i++)
		fprintf(stderr, "%s\n", d.v[i].text);
	conf_diags_free(&d);
	mem_free(text);
	ck_assert_ptr_nonnull(c);
	return c;
}

static int count_dir(const char *sub)
{
	char path[512];
	DIR *d;
	struct dirent *de;
	int n = 0;

	snprintf(path, sizeof path, "%s/%s", dir, sub);
	if ((d = opendir(path)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

struct commit_wait {
	int called, err;
};

static void commit_cb(void *arg, int err, const char *id)
{
	struct commit_wait *w = arg;

	(void)id;
	w->called++;
	if (err)
		w->err = err;
}

static const char body[] = "From: s@virt.example\nSubject: test\n\nhello\n";

/* Commit one message and return at once; w counts the commits done. */
static void commit(struct spool *s, const char *sender, const char **rcpt, int n, struct commit_wait *w)
{
	struct spool_txn *t = spool_txn_new(s, sender, "client.example[192.0.2.1]");
	int i;

	ck_assert_ptr_nonnull(t);
	for (i = 0; i < n; i++)
		ck_assert_int_eq(spool_txn_rcpt(t, rcpt[i], rcpt[i]), 0);
	ck_assert_int_eq(spool_txn_open(t), 0);
	ck_assert_int_eq(spool_txn_write(t, body, strlen(body)), 0);
	spool_txn_commit(t, commit_cb, w);
}

/* Run the loop until the queue holds `left` messages and nothing is loaded (bounded by a deadline). */
static void tick_cb(struct ev_loop *l, ev_timer *w, int revents) { (void)l; (void)w; (void)revents; }

static void run_until(struct qmgr *q, int left, int seconds)
{
	time_t end = time(NULL) + seconds;
	ev_timer tick;

	/* the condition is checked after every iteration; the tick bounds an idle wait */
	ev_timer_init(&tick, tick_cb, 0.01, 0.01);
	ev_timer_start(loop, &tick);
	while (time(NULL) < end) {
		if (qmgr_busy(q) == 0 && worker_pending() == 0 && count_dir(SPOOL_COMMITTED) == left) {
			ev_timer_stop(loop, &tick);
			return;
		}
		ev_run(loop, EVRUN_ONCE);
	}
	ev_timer_stop(loop, &tick);
	ck_abort_msg("queue did not settle: %d messages left, %d busy", count_dir(SPOOL_COMMITTED), qmgr_busy(q));
}

START_TEST(batches_per_nexthop_and_limit)
{
	char err[256];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct conf *c = make_conf("default_destination_recipient_limit = 50\n");
	struct qmgr *q;
	struct qmgr_stats st;
	struct commit_wait w = { 0 };
	const char *rcpt[130];
	char buf[130][64];
	int i;

	ck_assert_msg(s != NULL, "%s", err);
	q = qmgr_new(loop, s, c);
	ck_assert_ptr_nonnull(q);
	/* 120 recipients at one next hop, limit 50: three jobs of 50, 50 and 20 */
	for (i = 0; i < 120; i++) {
		snprintf(buf[i], sizeof buf[i], "u%d@far.example", i);
		rcpt[i] = buf[i];
	}
	commit(s, "s@virt.example", rcpt, 120, &w);
	run_until(q, 0, 30);
	ck_assert_int_eq(w.called, 1);
	ck_assert_int_eq(w.err, 0);
	qmgr_stats(q, &st);
	ck_assert_int_eq((int)st.jobs, 3);
	ck_assert_int_eq((int)st.targets, 120);
	/* two next hops in one message: one job each */
	rcpt[0] = "a@far.example";
	rcpt[1] = "b@other.example";
	rcpt[2] = "c@far.example";
	commit(s, "s@virt.example", rcpt, 3, &w);
	run_until(q, 0, 30);
	qmgr_stats(q, &st);
	ck_assert_int_eq((int)st.jobs, 5);
	ck_assert_int_eq((int)st.targets, 123);
	qmgr_free(q);
	conf_unref(c);
	spool_close(s);
}
END_TEST

static int read_new_mail(const char *sub, char *out, size_t len)
{
	char path[1024];
	DIR *d;
	struct dirent *de;
	FILE *f;
	size_t n = 0;

	snprintf(path, sizeof path, "%s/%s", dir, sub);
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/%s/%s", dir, sub, de->d_name);
		if ((f = fopen(path, "r")) != NULL) {
			n = fread(out, 1, len - 1, f);
			fclose(f);
		}
		break;
	}
	closedir(d);
	out[n] = '\0';
	return (int)n;
}

START_TEST(error_transport_bounces_to_sender)
{
	char err[256], mail[8192];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct conf *c = make_conf("");
	struct qmgr *q;
	struct commit_wait w = { 0 };
	const char *rcpt[] = { "nobody@err.example", "fine@far.example" };

	ck_assert_msg(s != NULL, "%s", err);
	q = qmgr_new(loop, s, c);
	commit(s, "s@virt.example", rcpt, 2, &w);
	/* the original goes (one recipient discarded, one bounced), the bounce is delivered */
	run_until(q, 0, 30);
	ck_assert_int_gt(read_new_mail("mail/s/new", mail, sizeof mail), 0);
	ck_assert_ptr_nonnull(strstr(mail, "multipart/report"));
	ck_assert_ptr_nonnull(strstr(mail, "nobody@err.example"));
	ck_assert_ptr_nonnull(strstr(mail, "5.1.1"));
	ck_assert_ptr_nonnull(strstr(mail, "no such domain here"));
	ck_assert_ptr_null(strstr(mail, "fine@far.example"));   /* delivered: not in the report */
	qmgr_free(q);
	conf_unref(c);
	spool_close(s);
}
END_TEST

START_TEST(defer_transports_until_domain_flush)
{
	char err[256];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct conf *c = make_conf("defer_transports = smtp\n");
	struct qmgr *q;
	struct qmgr_stats st;
	struct commit_wait w = { 0 };
	const char *r1[] = { "a@hold.example" }, *r2[] = { "b@wait.example" };

	ck_assert_msg(s != NULL, "%s", err);
	q = qmgr_new(loop, s, c);
	commit(s, "s@virt.example", r1, 1, &w);
	commit(s, "s@virt.example", r2, 1, &w);
	run_until(q, 2, 30);
	qmgr_stats(q, &st);
	ck_assert_int_eq((int)st.jobs, 0);          /* held: no attempt */
	ck_assert_int_eq(qmgr_active(q), 2);
	/* a flush for one domain: only that message is attempted (smtp is not there yet: deferred again) */
	ck_assert_int_eq(qmgr_flush_domain(q, "hold.example"), 0);
	run_until(q, 2, 30);
	qmgr_stats(q, &st);
	ck_assert_int_eq((int)st.jobs, 1);
	ck_assert_int_eq((int)st.targets, 1);
	/* a flush of everything attempts the other one too */
	qmgr_flush(q);
	run_until(q, 2, 30);
	qmgr_stats(q, &st);
	ck_assert_int_eq((int)st.jobs, 3);
	/* a domain flush overtaken by a flush of everything: everything is attempted, not filtered */
	ck_assert_int_eq(qmgr_flush_domain(q, "nomatch.example"), 0);
	qmgr_flush(q);
	run_until(q, 2, 30);
	qmgr_stats(q, &st);
	ck_assert_int_eq((int)st.jobs, 5);
	qmgr_free(q);
	conf_unref(c);
	spool_close(s);
}
END_TEST

/* transport(5) order: full address, address without extension, domain, .parent, *; empty parts keep defaults */
START_TEST(transport_maps_lookup_order)
{
	struct conf_diags d = { 0 };
	struct conf *c = conf_load_text(
	    "myhostname = test.example\nalias_maps =\nrecipient_delimiter = +\n"
	    "transport_maps = inline:{ u@a.example=error:user, a.example=discard:, .b.example=smtp:[gw.b], "
	    "c.example=:[hop.c], d.example=relay:, *=lmtp:inet:127.0.0.1:24 }\n"
	    "defer_transports = relay, lmtp\n", "t.cf", &d);
	char err[256];
	struct router *rt;
	struct route r;

	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_nonnull(rt = router_new(c, err, sizeof err));
	ck_assert_int_eq(router_lookup(rt, "u@a.example", "smtp", "a.example", &r), 1);
	ck_assert_str_eq(r.transport, "error");
	ck_assert_str_eq(r.nexthop, "user");
	ck_assert_int_eq(router_lookup(rt, "u+tag@a.example", "smtp", "a.example", &r), 1);
	ck_assert_str_eq(r.transport, "error");          /* without the extension */
	ck_assert_int_eq(router_lookup(rt, "v@a.example", "smtp", "a.example", &r), 1);
	ck_assert_str_eq(r.transport, "discard");
	ck_assert_str_eq(r.nexthop, "");
	ck_assert_int_eq(router_lookup(rt, "v@x.b.example", "smtp", "x.b.example", &r), 1);
	ck_assert_str_eq(r.transport, "smtp");
	ck_assert_str_eq(r.nexthop, "[gw.b]");
	ck_assert_int_eq(router_lookup(rt, "v@c.example", "smtp", "c.example", &r), 1);
	ck_assert_str_eq(r.transport, "smtp");           /* empty transport: the default */
	ck_assert_str_eq(r.nexthop, "[hop.c]");
	ck_assert_int_eq(router_lookup(rt, "v@d.example", "smtp", "d.example", &r), 1);
	ck_assert_str_eq(r.transport, "relay");
	ck_assert_str_eq(r.nexthop, "d.example");        /* empty next hop: the default */
	ck_assert_int_eq(router_lookup(rt, "v@elsewhere.example", "smtp", "elsewhere.example", &r), 1);
	ck_assert_str_eq(r.transport, "lmtp");
	ck_assert_str_eq(r.nexthop, "inet:127.0.0.1:24");
	ck_assert(router_deferred(rt, "relay") && router_deferred(rt, "LMTP") && !router_deferred(rt, "smtp"));
	router_free(rt);
	conf_unref(c);
	conf_diags_free(&d);
}
END_TEST

/*
 * 100,000 messages on disk when the scheduler starts: at most
 * qmgr_message_active_limit of them in memory at once, at most 256 loaded,
 * memory bounded, and every one delivered (discard) in the end.
 */
START_TEST(big_queue_bounded_memory)
{
	char err[256];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct conf *c = make_conf("qmgr_message_active_limit = 1000\n");
	struct qmgr *q;
	struct qmgr_stats st;
	struct commit_wait w = { 0 };
	const char *r[] = { "x@far.example" };
	const char *env = getenv("FRUGAL_TEST_BIG_QUEUE");
	int i, n = env ? atoi(env) : 100000, batch;
	size_t base, peak;

	ck_assert_msg(s != NULL, "%s", err);
	spool_set_loop(s, loop);
	/* fill the queue with no scheduler listening, in batches of commits */
	for (i = 0; i < n; i += batch) {
		int want = w.called;
		batch = n - i < 500 ? n - i : 500;
		for (int k = 0; k < batch; k++)
			commit(s, "s@virt.example", r, 1, &w);
		want += batch;
		while (w.called < want)
			ev_run(loop, EVRUN_ONCE);
	}
	ck_assert_int_eq(w.err, 0);
	ck_assert_int_eq(count_dir(SPOOL_COMMITTED), n);
	base = mem_in_use();
	mem_reset_peak();
	q = qmgr_new(loop, s, c);
	ck_assert_int_eq(qmgr_recover(q), n);
	ck_assert_int_le(qmgr_active(q), 1000);
	run_until(q, 0, 600);
	qmgr_stats(q, &st);
	peak = mem_peak();
	fprintf(stderr, "big queue: %d messages, peak in memory %lld, peak loaded %lld, "
	    "memory %zu KiB at start, peak %zu KiB\n", n, st.peak_msgs, st.peak_loaded,
	    base / 1024, peak / 1024);
	ck_assert_int_eq((int)st.jobs, n);
	ck_assert_int_le((int)st.peak_msgs, 1000);
	ck_assert_int_le((int)st.peak_loaded, 256);
	/* stubs (~100 B), loaded envelopes and scans are bounded: far below what n messages would take */
	ck_assert_msg(peak - base < 4u * 1024 * 1024, "peak %zu KiB over base", (peak - base) / 1024);
	qmgr_free(q);
	conf_unref(c);
	spool_close(s);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("qmgr");
	TCase *tc = tcase_create("core");
	TCase *big = tcase_create("big");
	SRunner *sr;
	int nf;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, batches_per_nexthop_and_limit);
	tcase_add_test(tc, error_transport_bounces_to_sender);
	tcase_add_test(tc, defer_transports_until_domain_flush);
	tcase_add_test(tc, transport_maps_lookup_order);
	suite_add_tcase(s, tc);
	tcase_add_checked_fixture(big, setup, teardown);
	tcase_set_timeout(big, 900);
	tcase_add_test(big, big_queue_bounded_memory);
	suite_add_tcase(s, big);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf == 0 ? 0 : 1;
}
