/*
 * tests/unit/test_maildir.c: the local delivery agent (Maildir layout,
 * prepended headers, sync-then-rename, mbox quoting, loop detection) and,
 * end to end through spool and qmgr with a real loop and worker pool:
 * delivery removes the message, a loop bounces with a notification queued
 * from the null sender, a bounce is never bounced, and a deferred
 * recipient stays queued while the delivered one is recorded done.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/sync.h"
#include "core/worker.h"
#include "queue/queue.h"
#include "queue/queue_int.h"

static char dir[256];
static struct ev_loop *loop;

static void setup(void)
{
	snprintf(dir, sizeof dir, "/tmp/frugal-test-maildir-XXXXXX");
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

/* files in DIR/sub; the first name goes to first (if given) */
static int count_files(const char *sub, char *first, size_t n)
{
	char path[1024];
	DIR *d;
	struct dirent *de;
	int c = 0;

	snprintf(path, sizeof path, "%s/%s", dir, sub);
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.') {
			if (c++ == 0 && first)
				snprintf(first, n, "%s", de->d_name);
		}
	closedir(d);
	return c;
}

static char *slurp(const char *path)
{
	static char buf[65536];
	int fd = open(path, O_RDONLY);
	ssize_t r;

	ck_assert_int_ge(fd, 0);
	r = read(fd, buf, sizeof buf - 1);
	ck_assert_int_ge(r, 0);
	buf[r] = '\0';
	close(fd);
	return buf;
}

static struct msg_src source(const char *text)
{
	char path[512];
	struct msg_src m;

	snprintf(path, sizeof path, "%s/src", dir);
	m.fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(m.fd, 0);
	/* a few bytes before the message: delivery must honour the offset */
	ck_assert_int_eq((int)write(m.fd, "ENVELOPE\n", 9), 9);
	ck_assert_int_eq((int)write(m.fd, text, strlen(text)), (int)strlen(text));
	m.off = 9;
	m.size = (off_t)strlen(text);
	m.sender = "sender@example.org";
	return m;
}

START_TEST(maildir_layout_and_headers)
{
	const char *msg = "Subject: hi\n\nbody line\n";
	struct msg_src m = source(msg);
	char reason[256], path[1024], name[256], expect[512];

	ck_assert_msg(maildir_deliver_under(dir, "mail/alice/Maildir/", geteuid(), &m, "alice@example.com",
	    reason, sizeof reason) == 0, "%s", reason);
	ck_assert_int_eq(count_files("mail/alice/Maildir/tmp", NULL, 0), 0);
	ck_assert_int_eq(count_files("mail/alice/Maildir/cur", NULL, 0), 0);
	ck_assert_int_eq(count_files("mail/alice/Maildir/new", name, sizeof name), 1);
	ck_assert_ptr_nonnull(strstr(name, ".M"));   /* time.M<usec>P<pid>Q<n>.host */
	ck_assert_ptr_nonnull(strstr(name, "P"));
	ck_assert_ptr_nonnull(strstr(name, "Q"));
	snprintf(expect, sizeof expect, "Return-Path: <sender@example.org>\nDelivered-To: alice@example.com\n%s", msg);
	snprintf(path, sizeof path, "%s/mail/alice/Maildir/new/%s", dir, name);
	ck_assert_str_eq(slurp(path), expect);

	/* a second delivery gets a different name */
	ck_assert_int_eq(maildir_deliver_under(dir, "mail/alice/Maildir/", geteuid(), &m, "alice@example.com",
	    reason, sizeof reason), 0);
	ck_assert_int_eq(count_files("mail/alice/Maildir/new", NULL, 0), 2);
	close(m.fd);
}
END_TEST

START_TEST(maildir_failure_is_reported)
{
	struct msg_src m = source("Subject: x\n\ny\n");
	char reason[256], path[512];
	int fd;

	snprintf(path, sizeof path, "%s/afile", dir);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	close(fd);
	reason[0] = '\0';
	/* a file where a directory must be */
	ck_assert_int_eq(maildir_deliver_under(dir, "afile/Maildir/", geteuid(), &m, "bob@example.com",
	    reason, sizeof reason), -1);
	ck_assert(reason[0] != '\0');
	close(m.fd);
}
END_TEST

/*
 * Confinement (PRODUCT.md 3.5): a symbolic link anywhere below the base, a
 * directory of another owner, ".." in the path and a hard-linked mbox are
 * refused, and nothing is written where they point.
 */
START_TEST(confinement)
{
	struct msg_src m = source("Subject: x\n\ny\n");
	char reason[256], path[512], target[512];
	struct stat st;
	int fd;

	/* a link planted where a user's Maildir would be created */
	snprintf(target, sizeof target, "%s/elsewhere", dir);
	ck_assert_int_eq(mkdir(target, 0700), 0);
	snprintf(path, sizeof path, "%s/mail", dir);
	ck_assert_int_eq(mkdir(path, 0700), 0);
	snprintf(path, sizeof path, "%s/mail/mallory", dir);
	ck_assert_int_eq(symlink(target, path), 0);
	ck_assert_int_eq(maildir_deliver_under(dir, "mail/mallory/Maildir/", geteuid(), &m, "m@example.com",
	    reason, sizeof reason), -1);
	ck_assert_ptr_nonnull(strstr(reason, "symbolic link"));
	ck_assert_int_eq(count_files("elsewhere", NULL, 0), 0);
	/* and one at the Maildir's new/ itself */
	ck_assert_int_eq(maildir_deliver_under(dir, "mail/eve/Maildir/", geteuid(), &m, "e@example.com",
	    reason, sizeof reason), 0);
	{
		char name[256], file[1024];

		ck_assert_int_eq(count_files("mail/eve/Maildir/new", name, sizeof name), 1);
		snprintf(file, sizeof file, "%s/mail/eve/Maildir/new/%s", dir, name);
		ck_assert_int_eq(unlink(file), 0);
		snprintf(path, sizeof path, "%s/mail/eve/Maildir/new", dir);
		ck_assert_int_eq(rmdir(path), 0);
		ck_assert_int_eq(symlink(target, path), 0);
	}
	ck_assert_int_eq(maildir_deliver_under(dir, "mail/eve/Maildir/", geteuid(), &m, "e@example.com",
	    reason, sizeof reason), -1);
	ck_assert_int_eq(count_files("elsewhere", NULL, 0), 0);
	/* ".." never climbs out */
	ck_assert_int_eq(maildir_deliver_under(dir, "mail/../elsewhere/x/", geteuid(), &m, "x@example.com",
	    reason, sizeof reason), -1);
	ck_assert_ptr_nonnull(strstr(reason, ".."));
	/* a directory that belongs to somebody else (as root only: chown) */
	if (geteuid() == 0) {
		snprintf(path, sizeof path, "%s/mail/other", dir);
		ck_assert_int_eq(mkdir(path, 0777), 0);
		ck_assert_int_eq(chown(path, 65534, 65534), 0);
		ck_assert_int_eq(maildir_deliver_under(dir, "mail/other/Maildir/", geteuid(), &m, "o@example.com",
		    reason, sizeof reason), -1);
		ck_assert_ptr_nonnull(strstr(reason, "belongs to uid 65534"));
	}
	/* an mbox hard-linked to a file elsewhere */
	snprintf(target, sizeof target, "%s/elsewhere/precious", dir);
	fd = open(target, O_CREAT | O_WRONLY, 0600);
	close(fd);
	snprintf(path, sizeof path, "%s/mail/dave.mbox", dir);
	ck_assert_int_eq(link(target, path), 0);
	ck_assert_int_eq(maildir_deliver_under(dir, "mail/dave.mbox", geteuid(), &m, "d@example.com",
	    reason, sizeof reason), -1);
	ck_assert_ptr_nonnull(strstr(reason, "one link"));
	ck_assert_int_eq(stat(target, &st), 0);
	ck_assert_int_eq((int)st.st_size, 0);
	close(m.fd);
}
END_TEST

/*
 * A batch (the virtual helper's): each request's outcome is its own, a bad
 * one fails alone, nothing is left in tmp/, and the Maildir files share two
 * syncs (files, then names) where each alone takes two: the calls to
 * sync_shared are counted (a batch that synced per request makes 8 + 1).
 */
START_TEST(batch_shares_syncs)
{
	struct msg_src m = source("Subject: b\n\nbatch\n");
	char reasons[6][256], path[512], target[512];
	const char *rel[6] = { "b/a/Maildir/", "b/b/Maildir/", "b/evil/Maildir/", "b/a/Maildir/", "b/c.mbox",
	    "b/c/Maildir/" };
	struct maildir_req r[6];
	unsigned long before;
	int i;

	snprintf(target, sizeof target, "%s/elsewhere", dir);
	ck_assert_int_eq(mkdir(target, 0700), 0);
	snprintf(path, sizeof path, "%s/b", dir);
	ck_assert_int_eq(mkdir(path, 0700), 0);
	snprintf(path, sizeof path, "%s/b/evil", dir);
	ck_assert_int_eq(symlink(target, path), 0);
	for (i = 0; i < 6; i++)
		r[i] = (struct maildir_req){ .base = dir, .rel = rel[i], .owner = geteuid(), .m = &m,
		    .rcpt = "x@example.com", .reason = reasons[i], .rlen = sizeof reasons[i] };
	before = sync_shared_calls();
	maildir_deliver_batch(r, 6);
	ck_assert_int_eq(r[0].rc, 0);
	ck_assert_int_eq(r[1].rc, 0);
	ck_assert_int_eq(r[2].rc, -1);
	ck_assert_ptr_nonnull(strstr(reasons[2], "symbolic link"));
	ck_assert_int_eq(r[3].rc, 0);
	ck_assert_int_eq(r[4].rc, 0);
	ck_assert_int_eq(r[5].rc, 0);
	/* one sync of the files and one of the names for the 4 Maildir files; the mbox's own */
	ck_assert_uint_eq(sync_shared_calls() - before, 3);
	ck_assert_int_eq(count_files("b/a/Maildir/new", NULL, 0), 2);
	ck_assert_int_eq(count_files("b/b/Maildir/new", NULL, 0), 1);
	ck_assert_int_eq(count_files("b/c/Maildir/new", NULL, 0), 1);
	ck_assert_int_eq(count_files("b/c/Maildir/cur", NULL, 0), 0);
	ck_assert_int_eq(count_files("b/a/Maildir/tmp", NULL, 0), 0);
	ck_assert_int_eq(count_files("elsewhere", NULL, 0), 0);
	snprintf(path, sizeof path, "%s/b/c.mbox", dir);
	ck_assert_ptr_nonnull(strstr(slurp(path), "batch"));
	close(m.fd);
}
END_TEST

/* a mailbox a reader holds locked: deferred within about a second, never waited on for good */
START_TEST(mbox_locked_defers)
{
	struct msg_src m = source("Subject: l\n\nlocked\n");
	char reason[256], path[512];
	int fd;

	snprintf(path, sizeof path, "%s/held.mbox", dir);
	ck_assert_int_ge(fd = open(path, O_CREAT | O_RDWR, 0600), 0);
	ck_assert_int_eq(flock(fd, LOCK_EX), 0);
	ck_assert_int_eq(maildir_deliver_under(dir, "held.mbox", geteuid(), &m, "h@example.com", reason,
	    sizeof reason), -1);
	ck_assert_msg(strstr(reason, "lock mailbox") != NULL, "%s", reason);
	ck_assert_int_eq(flock(fd, LOCK_UN), 0);
	ck_assert_int_eq(maildir_deliver_under(dir, "held.mbox", geteuid(), &m, "h@example.com", reason,
	    sizeof reason), 0);
	ck_assert_ptr_nonnull(strstr(slurp(path), "locked"));
	close(fd);
	close(m.fd);
}
END_TEST

START_TEST(mbox_quotes_from)
{
	struct msg_src m = source("Subject: x\n\nFrom me\nFro\nFrom");
	char reason[256], path[512];
	const char *s;

	ck_assert_msg(maildir_deliver_under(dir, "carol.mbox", geteuid(), &m, "carol@example.com",
	    reason, sizeof reason) == 0, "%s", reason);
	snprintf(path, sizeof path, "%s/carol.mbox", dir);
	s = slurp(path);
	ck_assert(strncmp(s, "From sender@example.org ", 24) == 0);
	ck_assert_ptr_nonnull(strstr(s, "\n>From me\nFro\nFrom\n"));
	close(m.fd);
}
END_TEST

START_TEST(loop_detection)
{
	struct msg_src m = source("Received: from a\nReceived: from b\n\tcontinued\n"
	    "Delivered-To: Alice@Example.com\nSubject: x\n\nDelivered-To: bob@example.com\n");
	struct msg_headers h;
	char reason[256];

	ck_assert_int_eq(maildir_scan_headers(&m, &h), 0);
	ck_assert_int_eq(h.received, 2);
	ck_assert_int_eq(h.ndelivered_to, 1);
	ck_assert_int_eq(maildir_loop_check(&h, "alice@example.com", 50, reason, sizeof reason), 1);
	ck_assert_ptr_nonnull(strstr(reason, "mail forwarding loop"));
	/* the body is not a header */
	ck_assert_int_eq(maildir_loop_check(&h, "bob@example.com", 50, reason, sizeof reason), 0);
	ck_assert_int_eq(maildir_loop_check(&h, "bob@example.com", 1, reason, sizeof reason), 1);
	ck_assert_int_eq(maildir_loop_check(&h, "bob@example.com", 2, reason, sizeof reason), 0);
	maildir_headers_free(&h);
	close(m.fd);
}
END_TEST

/* ---- end to end through spool and qmgr ------------------------------------ */

struct env {
	struct conf *c;
	struct spool *s;
	struct qmgr *q;
};

static void open_env(struct env *e, const char *extra)
{
	char text[2048], err[256];
	struct conf_diags d = { 0 };
	int i;

	snprintf(text, sizeof text,
	    "myhostname = mx.example.com\n"
	    "queue_directory = %s/queue\n"
	    "alias_maps = inline:{ { both = alice, bob } }\n"
	    "local_recipient_maps =\n"
	    "local_mailbox_base = %s/mail\n"
	    "minimal_backoff_time = 100s\n"
	    "%s", dir, dir, extra);
	e->c = conf_load_text(text, "test.cf", &d);
	for (i = 0; i < d.n; i++)
		fprintf(stderr, "%s\n", d.v[i].text);
	conf_diags_free(&d);
	ck_assert_ptr_nonnull(e->c);
	snprintf(text, sizeof text, "%s/queue", dir);
	ck_assert_ptr_nonnull(e->s = spool_open(text, err, sizeof err));
	ck_assert_ptr_nonnull(e->q = qmgr_new(loop, e->s, e->c));
}

static void close_env(struct env *e)
{
	qmgr_free(e->q);
	spool_close(e->s);
	conf_unref(e->c);
}

static void committed(void *arg, int err, const char *id)
{
	char *out = arg;

	ck_assert_int_eq(err, 0);
	snprintf(out, QUEUE_ID_MAX, "%s", id);
}

static void submit(struct env *e, const char *sender, const char *const *rcpts, const char *msg, char *id)
{
	struct spool_txn *t = spool_txn_new(e->s, sender, "localhost[127.0.0.1]");
	int i;

	ck_assert_ptr_nonnull(t);
	for (i = 0; rcpts[i]; i++)
		ck_assert_int_eq(spool_txn_rcpt(t, rcpts[i], NULL), 0);
	ck_assert_int_eq(spool_txn_open(t), 0);
	ck_assert_int_eq(spool_txn_write(t, msg, strlen(msg)), 0);
	id[0] = '\0';
	spool_txn_commit(t, committed, id);
	while (id[0] == '\0')
		ev_run(loop, EVRUN_ONCE);
	qmgr_enqueue(e->q, id);
}

static void drain(struct env *e)
{
	int rounds = 0;

	/* prepare watchers start work; run until nothing is in flight or waiting */
	do
		ev_run(loop, EVRUN_ONCE);
	while (qmgr_busy(e->q) > 0 && ++rounds < 10000);
	ck_assert_int_eq(qmgr_busy(e->q), 0);
}

START_TEST(qmgr_delivers_and_removes)
{
	struct env e;
	char id[QUEUE_ID_MAX], name[256], path[1024];
	static const char *const rcpts[] = { "both@localhost", "carol@mx.example.com", NULL };

	snprintf(path, sizeof path, "%s/maillog", dir);
	ck_assert_int_eq(log_open("frugal", path, NULL), 0);
	open_env(&e, "");
	submit(&e, "s@remote.example", rcpts, "Subject: t\n\nhello\n", id);
	drain(&e);
	log_close();
	{
		const char *log = slurp(path);
		char want[256];
		snprintf(want, sizeof want, "frugal/local[%ld]: %s: to=<alice@mx.example.com>, orig_to=<both@localhost>, relay=local, delay=",
		    (long)getpid(), id);
		ck_assert_msg(strstr(log, want) != NULL, "no line %s", want);
		ck_assert_ptr_nonnull(strstr(log, "dsn=2.0.0, status=sent (delivered to maildir)"));
		snprintf(want, sizeof want, "frugal/qmgr[%ld]: %s: from=<s@remote.example>, size=18, nrcpt=2 (queue active)",
		    (long)getpid(), id);
		ck_assert_msg(strstr(log, want) != NULL, "no line %s", want);
		snprintf(want, sizeof want, "%s: to=<carol@mx.example.com>, relay=local", id);
		ck_assert_ptr_nonnull(strstr(log, want));
		snprintf(want, sizeof want, "%s: removed", id);
		ck_assert_ptr_nonnull(strstr(log, want));
	}
	ck_assert_int_eq(count_files("queue/committed", NULL, 0), 0);
	ck_assert_int_eq(qmgr_active(e.q), 0);
	ck_assert_int_eq(count_files("mail/alice/Maildir/new", NULL, 0), 1);
	ck_assert_int_eq(count_files("mail/bob/Maildir/new", NULL, 0), 1);
	ck_assert_int_eq(count_files("mail/carol/Maildir/new", name, sizeof name), 1);
	snprintf(path, sizeof path, "%s/mail/carol/Maildir/new/%s", dir, name);
	ck_assert_ptr_nonnull(strstr(slurp(path), "Delivered-To: carol@mx.example.com\nSubject: t\n"));
	close_env(&e);
}
END_TEST

START_TEST(qmgr_recover_delivers)
{
	struct env e;
	char id[QUEUE_ID_MAX];
	static const char *const rcpts[] = { "dave@localhost", NULL };
	struct spool_txn *t;

	open_env(&e, "");
	submit(&e, "s@remote.example", rcpts, "Subject: t\n\nhello\n", id);
	drain(&e);
	ck_assert_int_eq(count_files("mail/dave/Maildir/new", NULL, 0), 1);
	/* a committed message that qmgr never heard of, and a half-written one */
	{
		char cid[QUEUE_ID_MAX] = "";
		t = spool_txn_new(e.s, "s@remote.example", "x");
		ck_assert_int_eq(spool_txn_rcpt(t, "dave@localhost", NULL), 0);
		ck_assert_int_eq(spool_txn_open(t), 0);
		ck_assert_int_eq(spool_txn_write(t, "S: a\n\nb\n", 8), 0);
		spool_txn_commit(t, committed, cid);
		while (cid[0] == '\0')
			ev_run(loop, EVRUN_ONCE);
	}
	close_env(&e);
	open_env(&e, "");
	t = spool_txn_new(e.s, "s@remote.example", "x");   /* left in incoming/ */
	ck_assert_int_eq(qmgr_recover(e.q), 1);
	drain(&e);
	ck_assert_int_eq(count_files("mail/dave/Maildir/new", NULL, 0), 2);
	ck_assert_int_eq(count_files("queue/committed", NULL, 0), 0);
	ck_assert_int_eq(count_files("queue/incoming", NULL, 0), 0);
	spool_txn_abort(t);
	close_env(&e);
}
END_TEST

START_TEST(qmgr_loop_bounces_with_notification)
{
	struct env e;
	char id[QUEUE_ID_MAX], name[QUEUE_ID_MAX];
	static const char *const rcpts[] = { "alice@localhost", NULL };
	struct spool_env env;
	int fd;

	open_env(&e, "");
	submit(&e, "s@remote.example", rcpts,
	    "Delivered-To: alice@localhost\nSubject: looping\n\nbody\n", id);
	drain(&e);
	/* the original is gone, its bounce is queued (remote: kept, not lost) */
	ck_assert_int_eq(count_files("mail/alice/Maildir/new", NULL, 0), -1);
	ck_assert_int_eq(count_files("queue/committed", name, sizeof name), 1);
	ck_assert_str_ne(name, id);
	memcpy(id, name, sizeof id);
	{
		char qd[512];
		snprintf(qd, sizeof qd, "%s/queue", dir);
		ck_assert_int_eq(spool_env_load(qd, id, &env, &fd), 0);
	}
	ck_assert_str_eq(env.sender, "");
	ck_assert_int_eq(env.nrcpt, 1);
	ck_assert_str_eq(env.rcpt[0].addr, "s@remote.example");
	ck_assert_int_eq(env.rcpt[0].status, RCPT_TODO);
	{
		char buf[8192];
		ssize_t r = pread(fd, buf, sizeof buf - 1, env.msg_off);
		ck_assert_int_gt(r, 0);
		buf[r] = '\0';
		ck_assert_ptr_nonnull(strstr(buf, "From: MAILER-DAEMON@mx.example.com"));
		ck_assert_ptr_nonnull(strstr(buf, "mail forwarding loop for alice@localhost"));
		ck_assert_ptr_nonnull(strstr(buf, "Status: 5.4.6"));
		ck_assert_ptr_nonnull(strstr(buf, "Subject: looping"));
	}
	close(fd);
	spool_env_free(&env);
	ck_assert_int_eq(qmgr_active(e.q), 1);   /* the bounce, deferred for smtp */
	close_env(&e);
}
END_TEST

START_TEST(qmgr_no_bounce_for_bounce)
{
	struct env e;
	char id[QUEUE_ID_MAX];
	static const char *const rcpts[] = { "alice@localhost", NULL };

	open_env(&e, "hopcount_limit = 1\n");
	submit(&e, "", rcpts, "Received: a\nReceived: b\nSubject: x\n\nbody\n", id);
	drain(&e);
	ck_assert_int_eq(count_files("queue/committed", NULL, 0), 0);
	ck_assert_int_eq(count_files("mail/alice/Maildir/new", NULL, 0), -1);
	ck_assert_int_eq(qmgr_active(e.q), 0);
	close_env(&e);
}
END_TEST

START_TEST(qmgr_partial_delivery_is_recorded)
{
	struct env e;
	char id[QUEUE_ID_MAX], path[512], qd[512];
	static const char *const rcpts[] = { "alice@localhost", "broken@localhost", NULL };
	struct spool_env env;
	int fd;

	open_env(&e, "");
	/* broken's mailbox cannot be created: a file sits where its directory goes */
	snprintf(path, sizeof path, "%s/mail", dir);
	mkdir(path, 0700);
	snprintf(path, sizeof path, "%s/mail/broken", dir);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	close(fd);
	submit(&e, "s@remote.example", rcpts, "Subject: t\n\nhello\n", id);
	drain(&e);
	ck_assert_int_eq(count_files("mail/alice/Maildir/new", NULL, 0), 1);
	ck_assert_int_eq(count_files("queue/committed", NULL, 0), 1);
	snprintf(qd, sizeof qd, "%s/queue", dir);
	ck_assert_int_eq(spool_env_load(qd, id, &env, NULL), 0);
	ck_assert_int_eq(env.rcpt[0].status, RCPT_DELIVERED);
	ck_assert_int_eq(env.rcpt[1].status, RCPT_TODO);
	spool_env_free(&env);
	ck_assert_int_eq(qmgr_active(e.q), 1);   /* deferred, waiting for its backoff */

	/* fixed, flushed: only the missing recipient is delivered */
	unlink(path);
	qmgr_flush(e.q);
	drain(&e);
	ck_assert_int_eq(count_files("mail/broken/Maildir/new", NULL, 0), 1);
	ck_assert_int_eq(count_files("mail/alice/Maildir/new", NULL, 0), 1);
	ck_assert_int_eq(count_files("queue/committed", NULL, 0), 0);
	close_env(&e);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("maildir");
	TCase *tc = tcase_create("maildir");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, maildir_layout_and_headers);
	tcase_add_test(tc, maildir_failure_is_reported);
	tcase_add_test(tc, mbox_quotes_from);
	tcase_add_test(tc, confinement);
	tcase_add_test(tc, batch_shares_syncs);
	tcase_add_test(tc, mbox_locked_defers);
	tcase_add_test(tc, loop_detection);
	tcase_add_test(tc, qmgr_delivers_and_removes);
	tcase_add_test(tc, qmgr_recover_delivers);
	tcase_add_test(tc, qmgr_loop_bounces_with_notification);
	tcase_add_test(tc, qmgr_no_bounce_for_bounce);
	tcase_add_test(tc, qmgr_partial_delivery_is_recorded);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
