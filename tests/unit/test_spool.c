/*
 * tests/unit/test_spool.c: the spool's contract (queue/queue.h): a
 * committed message is on disk in committed/ with its envelope before done
 * reports 0; abort leaves nothing; recovery drops temp files and finds
 * committed ones; per-recipient state survives reopening; IDs are unique.
 * Uses a real libev loop and the real worker pool on a temporary directory.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/mem.h"
#include "core/worker.h"
#include "queue/queue.h"
#include "queue/queue_int.h"

static char dir[256];
static struct ev_loop *loop;

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
	snprintf(dir, sizeof dir, "/tmp/frugal-test-spool-XXXXXX");
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

static int count_files(const char *sub)
{
	char path[512];
	DIR *d;
	struct dirent *de;
	int n = 0;

	snprintf(path, sizeof path, "%s/%s", dir, sub);
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void wait_for(struct result *r, int n)
{
	while (r->called < n)
		ev_run(loop, EVRUN_ONCE);
}

static const char body[] = "Subject: test\n\nhello\nworld\n";

static struct spool_txn *make_txn(struct spool *s, const char *sender)
{
	struct spool_txn *t = spool_txn_new(s, sender, "client.example[192.0.2.1]");

	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(spool_txn_rcpt(t, "alice@example.com", "Alice@Example.COM"), 0);
	ck_assert_int_eq(spool_txn_rcpt(t, "bob@example.com", NULL), 0);
	ck_assert_int_eq(spool_txn_open(t), 0);
	ck_assert_int_eq(spool_txn_write(t, body, strlen(body)), 0);
	return t;
}

START_TEST(commit_round_trip)
{
	char err[256], msg[128];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct spool_txn *t;
	struct result r = { 0 };
	struct spool_env e;
	char id[QUEUE_ID_MAX];
	int fd;

	ck_assert_msg(s != NULL, "%s", err);
	spool_set_loop(s, loop);
	t = make_txn(s, "sender@example.org");
	snprintf(id, sizeof id, "%s", spool_txn_id(t));
	ck_assert(spool_id_valid(id));
	ck_assert_int_eq((int)spool_txn_size(t), (int)strlen(body));
	/* a small message stays in the buffer: the worker creates, writes and commits it */
	ck_assert_int_eq(count_files(SPOOL_INCOMING), 0);
	spool_txn_commit(t, done_cb, &r);
	ck_assert_int_eq(r.called, 0);   /* never synchronously: the sync is on a worker */
	wait_for(&r, 1);
	ck_assert_int_eq(r.err, 0);
	ck_assert_str_eq(r.id, id);
	ck_assert_int_eq(count_files(SPOOL_INCOMING), 0);
	ck_assert_int_eq(count_files(SPOOL_COMMITTED), 1);

	ck_assert_int_eq(spool_env_load(dir, id, &e, &fd), 0);
	ck_assert_str_eq(e.sender, "sender@example.org");
	ck_assert_str_eq(e.client, "client.example[192.0.2.1]");
	ck_assert_int_eq(e.nrcpt, 2);
	ck_assert_int_eq(e.ntodo, 2);
	ck_assert_str_eq(e.rcpt[0].addr, "alice@example.com");
	ck_assert_str_eq(e.rcpt[0].orig, "Alice@Example.COM");
	ck_assert_str_eq(e.rcpt[1].orig, "bob@example.com");
	ck_assert_int_eq((int)e.size, (int)strlen(body));
	ck_assert(e.arrival > 0);
	ck_assert_int_eq((int)pread(fd, msg, sizeof msg, e.msg_off), (int)strlen(body));
	ck_assert(memcmp(msg, body, strlen(body)) == 0);
	close(fd);
	spool_env_free(&e);
	spool_close(s);
}
END_TEST

START_TEST(null_sender_and_large_message)
{
	char err[256];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct spool_txn *t;
	struct result r = { 0 };
	struct spool_env e;
	static char big[200000];
	char *back;
	size_t i;
	int fd;

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	for (i = 0; i < sizeof big; i++)
		big[i] = (i % 64 == 63) ? '\n' : (char)('a' + i % 26);
	t = spool_txn_new(s, "", "localhost[127.0.0.1]");
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(spool_txn_rcpt(t, "x@y", NULL), 0);
	ck_assert_int_eq(spool_txn_open(t), 0);
	ck_assert_int_eq(spool_txn_rcpt(t, "late@y", NULL), -1);   /* envelope is fixed by now */
	for (i = 0; i < sizeof big; i += 1000)
		ck_assert_int_eq(spool_txn_write(t, big + i, 1000), 0);
	/* past the buffer the message streams to incoming/ (memory stays bounded) */
	ck_assert_int_eq(count_files(SPOOL_INCOMING), 1);
	spool_txn_commit(t, done_cb, &r);
	wait_for(&r, 1);
	ck_assert_int_eq(r.err, 0);
	/* the length stamp went in with pwrite: load checks it against the file */
	ck_assert_int_eq(spool_env_load(dir, r.id, &e, &fd), 0);
	ck_assert_str_eq(e.sender, "");
	ck_assert_int_eq((int)e.size, (int)sizeof big);
	back = malloc(sizeof big);
	ck_assert_ptr_nonnull(back);
	ck_assert_int_eq((int)pread(fd, back, sizeof big, e.msg_off), (int)sizeof big);
	ck_assert(memcmp(back, big, sizeof big) == 0);
	free(back);
	close(fd);
	spool_env_free(&e);
	spool_close(s);
}
END_TEST

START_TEST(abort_leaves_nothing)
{
	char err[256];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct spool_txn *t;
	static char chunk[1024];
	int i;

	memset(chunk, 'x', sizeof chunk - 1);
	chunk[sizeof chunk - 1] = '\n';
	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	t = make_txn(s, "a@b");
	spool_txn_abort(t);
	t = spool_txn_new(s, "a@b", "c[1.2.3.4]");   /* aborted before open */
	ck_assert_ptr_nonnull(t);
	spool_txn_abort(t);
	t = make_txn(s, "a@b");                        /* aborted after streaming to disk */
	for (i = 0; i < 100; i++)
		ck_assert_int_eq(spool_txn_write(t, chunk, sizeof chunk), 0);
	ck_assert_int_eq(count_files(SPOOL_INCOMING), 1);
	spool_txn_abort(t);
	ck_assert_int_eq(count_files(SPOOL_INCOMING), 0);
	ck_assert_int_eq(count_files(SPOOL_COMMITTED), 0);
	spool_close(s);
}
END_TEST

/* A clock step back can draw the ID of a message still queued: never replace it. */
START_TEST(commit_never_replaces)
{
	char err[256], path[4096], buf[16];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct spool_txn *t;
	struct result r = { 0 };
	int fd;

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	t = make_txn(s, "a@b");
	/* the queued namesake appears after the ID was drawn */
	snprintf(path, sizeof path, "%s/%s/%s", dir, SPOOL_COMMITTED, spool_txn_id(t));
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq((int)write(fd, "keep", 4), 4);
	close(fd);
	spool_txn_commit(t, done_cb, &r);
	wait_for(&r, 1);
	ck_assert_int_eq(r.err, EEXIST);
	ck_assert_int_eq(count_files(SPOOL_INCOMING), 0);
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq((int)read(fd, buf, sizeof buf), 4);
	ck_assert(memcmp(buf, "keep", 4) == 0);
	close(fd);
	unlink(path);
	spool_close(s);
}
END_TEST

START_TEST(commit_without_open_fails)
{
	char err[256];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct spool_txn *t;
	struct result r = { 0 };

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	t = spool_txn_new(s, "a@b", "c[1.2.3.4]");
	ck_assert_ptr_nonnull(t);
	spool_txn_commit(t, done_cb, &r);
	wait_for(&r, 1);
	ck_assert_int_ne(r.err, 0);
	ck_assert_int_eq(count_files(SPOOL_INCOMING), 0);
	ck_assert_int_eq(count_files(SPOOL_COMMITTED), 0);
	spool_close(s);
}
END_TEST

START_TEST(group_commit_many)
{
	char err[256];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct result r[50];
	int i;

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	memset(r, 0, sizeof r);
	for (i = 0; i < 50; i++)
		spool_txn_commit(make_txn(s, "a@b"), done_cb, &r[i]);
	for (i = 0; i < 50; i++) {
		wait_for(&r[i], 1);
		ck_assert_int_eq(r[i].err, 0);
		ck_assert_int_eq(r[i].called, 1);
	}
	ck_assert_int_eq(count_files(SPOOL_COMMITTED), 50);
	ck_assert_int_eq(count_files(SPOOL_INCOMING), 0);
	spool_close(s);
}
END_TEST

static void collect(void *arg, const char *id)
{
	char (*ids)[QUEUE_ID_MAX] = arg;
	int i;

	for (i = 0; ids[i][0]; i++)
		;
	snprintf(ids[i], QUEUE_ID_MAX, "%s", id);
}

START_TEST(recovery_ignores_temp_files)
{
	char err[256], path[512], ids[8][QUEUE_ID_MAX];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct spool_txn *t, *pending;
	struct result r = { 0 };
	int fd;

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	t = make_txn(s, "a@b");
	spool_txn_commit(t, done_cb, &r);
	wait_for(&r, 1);
	ck_assert_int_eq(r.err, 0);
	/* a message being written at the "crash", and stray garbage */
	pending = make_txn(s, "c@d");
	snprintf(path, sizeof path, "%s/%s/ZZZ", dir, SPOOL_INCOMING);
	ck_assert_int_ge(fd = open(path, O_CREAT | O_WRONLY, 0600), 0);
	close(fd);
	snprintf(path, sizeof path, "%s/%s/not-an-id", dir, SPOOL_COMMITTED);
	ck_assert_int_ge(fd = open(path, O_CREAT | O_WRONLY, 0600), 0);
	close(fd);

	memset(ids, 0, sizeof ids);
	ck_assert_int_eq(spool_scan(dir, 1, collect, ids), 1);
	ck_assert_str_eq(ids[0], r.id);
	ck_assert_int_eq(count_files(SPOOL_INCOMING), 0);
	spool_txn_abort(pending);
	spool_close(s);
}
END_TEST

/*
 * A crash between the commit's rename and its sync can leave a committed
 * file whose tail never reached the disk: recovery must remove it (it was
 * never acknowledged) and keep the complete ones.
 */
START_TEST(recovery_removes_torn_files)
{
	char err[256], path[512], ids[8][QUEUE_ID_MAX], torn[QUEUE_ID_MAX];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct result r1 = { 0 }, r2 = { 0 };
	struct spool_env e;
	struct stat st;

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	spool_txn_commit(make_txn(s, "a@b"), done_cb, &r1);
	spool_txn_commit(make_txn(s, "c@d"), done_cb, &r2);
	wait_for(&r1, 1);
	wait_for(&r2, 1);
	ck_assert_int_eq(r1.err, 0);
	ck_assert_int_eq(r2.err, 0);
	/* the complete file loads, with the stamped length */
	ck_assert_int_eq(spool_env_load(dir, r1.id, &e, NULL), 0);
	ck_assert_int_eq((int)e.size, (int)strlen(body));
	spool_env_free(&e);
	/* tear the second: drop its last bytes, as a crash before the sync may */
	snprintf(torn, sizeof torn, "%s", r2.id);
	snprintf(path, sizeof path, "%s/%s/%s", dir, SPOOL_COMMITTED, torn);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(truncate(path, st.st_size - 3), 0);
	ck_assert_int_eq(spool_env_load(dir, torn, &e, NULL), -1);
	ck_assert_int_eq(errno, EBADMSG);
	/* a runtime rescan leaves it alone; start-up recovery removes it */
	memset(ids, 0, sizeof ids);
	ck_assert_int_eq(spool_scan(dir, 0, collect, ids), 2);
	memset(ids, 0, sizeof ids);
	ck_assert_int_eq(spool_scan(dir, 1, collect, ids), 1);
	ck_assert_str_eq(ids[0], r1.id);
	ck_assert_int_eq(stat(path, &st), -1);
	spool_close(s);
}
END_TEST

START_TEST(rcpt_state_survives_reopen)
{
	char err[256];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct result r = { 0 };
	struct spool_env e;
	int fd;

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	spool_txn_commit(make_txn(s, "a@b"), done_cb, &r);
	wait_for(&r, 1);
	ck_assert_int_eq(r.err, 0);
	ck_assert_int_eq(spool_env_load(dir, r.id, &e, &fd), 0);
	ck_assert_int_eq(spool_env_mark(fd, &e.rcpt[1], RCPT_DELIVERED), 0);
	ck_assert_int_eq(fdatasync(fd), 0);
	close(fd);
	spool_env_free(&e);
	spool_close(s);

	ck_assert_ptr_nonnull(s = spool_open(dir, err, sizeof err));
	ck_assert_int_eq(spool_env_load(dir, r.id, &e, NULL), 0);
	ck_assert_int_eq(e.nrcpt, 2);
	ck_assert_int_eq(e.ntodo, 1);
	ck_assert_int_eq(e.rcpt[0].status, RCPT_TODO);
	ck_assert_int_eq(e.rcpt[1].status, RCPT_DELIVERED);
	ck_assert_str_eq(e.rcpt[1].addr, "bob@example.com");   /* the mark did not tear the line */
	spool_env_free(&e);
	ck_assert_int_eq(spool_remove(dir, r.id), 0);
	ck_assert_int_eq(count_files(SPOOL_COMMITTED), 0);
	spool_close(s);
}
END_TEST

static int cmp(const void *a, const void *b) { return strcmp(a, b); }

/* ---- recycling (queue/spool.c "Recycling") ---- */

static ino_t ino_of(const char *sub, const char *name)
{
	char path[512];
	struct stat st;

	snprintf(path, sizeof path, "%s/%s/%s", dir, sub, name);
	ck_assert_int_eq(stat(path, &st), 0);
	return st.st_ino;
}

/* the single name in dir/sub */
static void only_name(const char *sub, char *out, size_t len)
{
	char path[512];
	DIR *d;
	struct dirent *de;

	snprintf(path, sizeof path, "%s/%s", dir, sub);
	d = opendir(path);
	ck_assert_ptr_nonnull(d);
	out[0] = '\0';
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			snprintf(out, len, "%s", de->d_name);
	closedir(d);
	ck_assert(out[0] != '\0');
}

static void commit_one(struct spool *s, const char *sender, struct result *r)
{
	memset(r, 0, sizeof *r);
	spool_txn_commit(make_txn(s, sender), done_cb, r);
	wait_for(r, 1);
	ck_assert_int_eq(r->err, 0);
}

static void check_body(const char *id, const char *sender)
{
	struct spool_env e;
	char msg[128];
	int fd;

	ck_assert_int_eq(spool_env_load(dir, id, &e, &fd), 0);
	ck_assert_str_eq(e.sender, sender);
	ck_assert_int_eq((int)e.size, (int)strlen(body));
	ck_assert_int_eq((int)pread(fd, msg, sizeof msg, e.msg_off), (int)strlen(body));
	ck_assert(memcmp(msg, body, strlen(body)) == 0);
	close(fd);
	spool_env_free(&e);
}

START_TEST(retired_file_is_reused)
{
	char err[256], name[256], path[600];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct result r1, r2;
	struct spool_env e;
	struct stat st;
	ino_t ino;
	int fd;

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	commit_one(s, "first@example.org", &r1);
	ino = ino_of(SPOOL_COMMITTED, r1.id);
	ck_assert_int_eq(spool_env_load(dir, r1.id, &e, &fd), 0);
	spool_env_free(&e);
	ck_assert_int_eq(spool_retire(s, r1.id, fd), 0);
	close(fd);
	/* gone from the queue, kept empty in free/ */
	ck_assert_int_eq(count_files(SPOOL_COMMITTED), 0);
	ck_assert_int_eq(count_files(SPOOL_FREE), 1);
	only_name(SPOOL_FREE, name, sizeof name);
	snprintf(path, sizeof path, "%s/%s/%s", dir, SPOOL_FREE, name);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq((int)st.st_size, 0);
	ck_assert_int_eq(spool_scan(dir, 1, NULL, NULL), 0);   /* never seen as mail */
	/* the next message takes that very inode, under its own ID */
	commit_one(s, "second@example.org", &r2);
	ck_assert_str_ne(r2.id, r1.id);
	ck_assert_int_eq(count_files(SPOOL_FREE), 0);
	ck_assert(ino_of(SPOOL_COMMITTED, r2.id) == ino);
	check_body(r2.id, "second@example.org");
	/* a retire of what is not there says so */
	ck_assert_int_eq(spool_retire(s, r1.id, -1), -1);
	ck_assert_int_eq(errno, ENOENT);
	spool_close(s);
}
END_TEST

/* A crash can leave a free/ file unemptied: reuse empties it; the pool outlives a restart. */
START_TEST(pool_survives_restart_and_stale_content)
{
	char err[256], path[512];
	struct spool *s;
	struct result r;
	ino_t ino;
	int fd;

	/* a stale file as a crash before the truncate leaves it, and a foreign name */
	snprintf(path, sizeof path, "%s/%s", dir, SPOOL_FREE);
	ck_assert_int_eq(mkdir(path, 0700), 0);
	snprintf(path, sizeof path, "%s/%s/%s", dir, SPOOL_FREE, "6B0000000000A");
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq((int)write(fd, "FRUGAL-Q1\nstale stale stale stale stale stale stale stale\n", 59), 59);
	close(fd);
	ino = ino_of(SPOOL_FREE, "6B0000000000A");
	snprintf(path, sizeof path, "%s/%s/%s", dir, SPOOL_FREE, "not-an-id");
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	s = spool_open(dir, err, sizeof err);
	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	ck_assert_int_eq(count_files(SPOOL_FREE), 1);   /* the foreign name is removed */
	commit_one(s, "a@b", &r);
	ck_assert(ino_of(SPOOL_COMMITTED, r.id) == ino);
	check_body(r.id, "a@b");
	spool_close(s);
}
END_TEST

/* The pool is bounded: past SPOOL_POOL files, a retired message is unlinked. */
START_TEST(pool_is_bounded)
{
	char err[256];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct spool_txn *t[200];
	struct result r[200];
	struct spool_env e;
	int i, fd;

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	memset(r, 0, sizeof r);
	for (i = 0; i < 200; i++)
		t[i] = make_txn(s, "a@b");
	for (i = 0; i < 200; i++)
		spool_txn_commit(t[i], done_cb, &r[i]);
	for (i = 0; i < 200; i++) {
		wait_for(&r[i], 1);
		ck_assert_int_eq(r[i].err, 0);
	}
	for (i = 0; i < 200; i++) {
		ck_assert_int_eq(spool_env_load(dir, r[i].id, &e, &fd), 0);
		spool_env_free(&e);
		ck_assert_int_eq(spool_retire(s, r[i].id, fd), 0);
		close(fd);
	}
	ck_assert_int_eq(count_files(SPOOL_COMMITTED), 0);
	ck_assert_int_gt(count_files(SPOOL_FREE), 0);
	ck_assert_int_lt(count_files(SPOOL_FREE), 200);
	spool_close(s);
}
END_TEST

/* Start-up removes an empty committed/ file (torn before any data, or an emptied retiree). */
START_TEST(recovery_removes_empty_files)
{
	char err[256], path[512], ids[8][QUEUE_ID_MAX];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct result r;

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	commit_one(s, "a@b", &r);
	snprintf(path, sizeof path, "%s/%s/%s", dir, SPOOL_COMMITTED, r.id);
	ck_assert_int_eq(truncate(path, 0), 0);
	memset(ids, 0, sizeof ids);
	ck_assert_int_eq(spool_scan(dir, 1, collect, ids), 0);
	ck_assert_int_eq(count_files(SPOOL_COMMITTED), 0);
	spool_close(s);
}
END_TEST

/*
 * A recycled file renamed under a new ID whose new bytes never reached the
 * disk still says the old ID (its I record): never read as the new message.
 */
START_TEST(recovery_rejects_foreign_id)
{
	char err[256], pa[512], pb[512], ids[8][QUEUE_ID_MAX], buf[4096];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct result ra, rb;
	struct spool_env e;
	ssize_t n;
	int fd;

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	commit_one(s, "a@b", &ra);
	commit_one(s, "c@d", &rb);
	snprintf(pa, sizeof pa, "%s/%s/%s", dir, SPOOL_COMMITTED, ra.id);
	snprintf(pb, sizeof pb, "%s/%s/%s", dir, SPOOL_COMMITTED, rb.id);
	ck_assert_int_ge(fd = open(pa, O_RDONLY), 0);
	ck_assert_int_gt(n = read(fd, buf, sizeof buf), 0);
	close(fd);
	/* B's name, A's whole and valid bytes */
	ck_assert_int_ge(fd = open(pb, O_WRONLY | O_TRUNC), 0);
	ck_assert_int_eq((int)write(fd, buf, (size_t)n), (int)n);
	close(fd);
	ck_assert_int_eq(spool_env_load(dir, rb.id, &e, NULL), -1);
	ck_assert_int_eq(errno, EBADMSG);
	memset(ids, 0, sizeof ids);
	ck_assert_int_eq(spool_scan(dir, 1, collect, ids), 1);
	ck_assert_str_eq(ids[0], ra.id);
	ck_assert_int_eq(access(pb, F_OK), -1);
	spool_close(s);
}
END_TEST

/*
 * The checksum covers everything but the state bytes: a mark keeps it
 * valid; a changed byte of a whole, right-named file is caught, and the
 * file is kept aside in corrupt/, neither delivered nor deleted.
 */
START_TEST(checksum_mismatch_set_aside)
{
	char err[256], path[512], ids[8][QUEUE_ID_MAX];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct result r1, r2;
	struct spool_env e;
	struct stat st;
	char c;
	int fd;

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	commit_one(s, "a@b", &r1);
	commit_one(s, "c@d", &r2);
	/* a delivered mark rewrites a state byte: still valid */
	ck_assert_int_eq(spool_env_load(dir, r1.id, &e, &fd), 0);
	ck_assert_int_eq(e.version, 4);
	ck_assert_int_eq(spool_env_mark(fd, &e.rcpt[0], RCPT_DELIVERED), 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_int_eq(spool_verify(fd, &e, st.st_size), 0);
	close(fd);
	spool_env_free(&e);
	/* one body byte of the second changed, its length the same */
	ck_assert_int_eq(spool_env_load(dir, r2.id, &e, &fd), 0);
	ck_assert_int_eq((int)pread(fd, &c, 1, e.msg_off + 2), 1);
	c ^= 0x20;
	close(fd);
	snprintf(path, sizeof path, "%s/%s/%s", dir, SPOOL_COMMITTED, r2.id);
	ck_assert_int_ge(fd = open(path, O_RDWR), 0);
	ck_assert_int_eq((int)pwrite(fd, &c, 1, e.msg_off + 2), 1);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_int_eq(spool_verify(fd, &e, st.st_size), -1);
	ck_assert_int_eq(errno, EBADMSG);
	close(fd);
	spool_env_free(&e);
	memset(ids, 0, sizeof ids);
	ck_assert_int_eq(spool_scan(dir, 1, collect, ids), 1);
	ck_assert_str_eq(ids[0], r1.id);
	ck_assert_int_eq(count_files(SPOOL_CORRUPT), 1);
	ck_assert_int_eq(count_files(SPOOL_COMMITTED), 1);
	spool_close(s);
}
END_TEST

/* A queue written by the previous format (FRUGAL-Q1: no I, no K) is still delivered. */
START_TEST(reads_q1_files)
{
	static const char q1[] = "FRUGAL-Q1\nA 1.000000\nS a@b\nC x\nR - x@y\nO x@y\nL 00000000000000000002\nE 1\nz\n";
	char err[256], path[512], ids[8][QUEUE_ID_MAX];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct result r;
	struct spool_env e;
	int fd;

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	commit_one(s, "a@b", &r);   /* for a valid ID */
	ck_assert_int_eq(spool_remove(dir, r.id), 0);
	snprintf(path, sizeof path, "%s/%s/%s", dir, SPOOL_COMMITTED, r.id);
	ck_assert_int_ge(fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600), 0);
	ck_assert_int_eq((int)write(fd, q1, strlen(q1)), (int)strlen(q1));
	close(fd);
	ck_assert_int_eq(spool_env_load(dir, r.id, &e, NULL), 0);
	ck_assert_int_eq(e.version, 1);
	ck_assert_int_eq((int)e.size, 2);
	spool_env_free(&e);
	memset(ids, 0, sizeof ids);
	ck_assert_int_eq(spool_scan(dir, 1, collect, ids), 1);
	ck_assert_str_eq(ids[0], r.id);
	spool_close(s);
}
END_TEST

/*
 * FRUGAL-Q3: RET, ENVID, NOTIFY and ORCPT come back as given, are covered
 * by the checksum, and the delay-warning byte is rewritten in place (once,
 * surviving a reload) without breaking it.
 */
START_TEST(dsn_records_round_trip)
{
	char err[256], path[512], ids[8][QUEUE_ID_MAX];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct spool_txn *t;
	struct result r = { 0 };
	struct spool_env e;
	struct stat st;
	off_t off;
	char c;
	int fd;

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	t = spool_txn_new(s, "a@b.c", "x[127.0.0.1]");
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(spool_txn_rcpt_dsn(t, DSN_NOTIFY_NEVER, NULL), -1);   /* no recipient yet */
	ck_assert_int_eq(spool_txn_rcpt(t, "one@b.c", NULL), 0);
	ck_assert_int_eq(spool_txn_rcpt_dsn(t, DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE, "rfc822;One@B.C"), 0);
	ck_assert_int_eq(spool_txn_rcpt(t, "two@b.c", NULL), 0);
	ck_assert_int_eq(spool_txn_dsn(t, DSN_RET_HDRS, "env id 1"), 0);
	ck_assert_int_eq(spool_txn_dsn(t, DSN_RET_HDRS, "bad\nid"), -1);
	ck_assert_int_eq(spool_txn_open(t), 0);
	ck_assert_int_eq(spool_txn_write(t, body, strlen(body)), 0);
	spool_txn_commit(t, done_cb, &r);
	wait_for(&r, 1);
	ck_assert_int_eq(r.err, 0);

	ck_assert_int_eq(spool_env_load(dir, r.id, &e, &fd), 0);
	ck_assert_int_eq(e.version, 4);
	ck_assert_int_eq(e.dsn_ret, DSN_RET_HDRS);
	ck_assert_str_eq(e.envid, "env id 1");
	ck_assert_int_eq(e.nrcpt, 2);
	ck_assert_int_eq(e.rcpt[0].notify, DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE);
	ck_assert_str_eq(e.rcpt[0].orcpt, "rfc822;One@B.C");
	ck_assert_int_eq(e.rcpt[1].notify, 0);
	ck_assert_ptr_null(e.rcpt[1].orcpt);
	ck_assert_int_eq(e.warned, WARN_NONE);
	ck_assert_int_eq(spool_env_mark_warned(fd, &e), 0);
	ck_assert_int_eq(spool_env_mark(fd, &e.rcpt[1], RCPT_DELIVERED), 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_int_eq(spool_verify(fd, &e, st.st_size), 0);
	off = e.warned_off;
	close(fd);
	spool_env_free(&e);
	ck_assert_int_eq(spool_env_load(dir, r.id, &e, NULL), 0);
	ck_assert_int_eq(e.warned, WARN_SENT);
	ck_assert_int_eq(e.rcpt[1].status, RCPT_DELIVERED);
	spool_env_free(&e);
	memset(ids, 0, sizeof ids);
	ck_assert_int_eq(spool_scan(dir, 1, collect, ids), 1);   /* the checksum holds */

	/* the checksum covers the DSN records: the ENVID changed is caught */
	snprintf(path, sizeof path, "%s/%s/%s", dir, SPOOL_COMMITTED, r.id);
	ck_assert_int_ge(fd = open(path, O_RDWR), 0);
	ck_assert_int_eq(spool_env_load(dir, r.id, &e, NULL), 0);
	(void)off;
	{
		char head[512];
		ssize_t n = pread(fd, head, sizeof head - 1, 0);
		char *v;

		ck_assert_int_gt(n, 0);
		head[n] = '\0';
		ck_assert_ptr_nonnull(v = strstr(head, "\nV env id 1\n"));
		c = 'E';
		ck_assert_int_eq((int)pwrite(fd, &c, 1, (off_t)(v - head) + 3), 1);
	}
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_int_eq(spool_verify(fd, &e, st.st_size), -1);
	ck_assert_int_eq(errno, EBADMSG);
	close(fd);
	spool_env_free(&e);
	spool_close(s);
}
END_TEST

static uint64_t fnv64(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	while (n--)
		h = (h ^ (unsigned char)*p++) * 0x100000001b3ULL;
	return h;
}

/*
 * A queue written by the previous version (FRUGAL-Q2, checksummed, no DSN
 * records) is still read, verified and delivered after the upgrade; it
 * has nowhere to keep the delay-warning byte (ENOTSUP: send none).
 */
START_TEST(reads_q2_files)
{
	char err[256], path[512], ids[8][QUEUE_ID_MAX], file[512], sum[24];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct result r;
	struct spool_env e;
	struct stat st;
	char *k;
	int fd, n;

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	commit_one(s, "a@b", &r);   /* for a valid ID */
	ck_assert_int_eq(spool_remove(dir, r.id), 0);
	/* as the previous version wrote it: hashed with L and K zeros, then stamped */
	n = snprintf(file, sizeof file, "FRUGAL-Q2\nI %s\nA 1.000000\nS a@b\nC x\nR - x@y\nO X@y\n"
	    "L 00000000000000000000\nK 0000000000000000\nE 1\nhello\n", r.id);
	snprintf(sum, sizeof sum, "%016llx", (unsigned long long)fnv64(file, (size_t)n));
	k = strstr(file, "\nK ") + 3;
	memcpy(k, sum, 16);
	memcpy(strstr(file, "\nL ") + 3 + 14, "000006", 6);
	snprintf(path, sizeof path, "%s/%s/%s", dir, SPOOL_COMMITTED, r.id);
	ck_assert_int_ge(fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600), 0);
	ck_assert_int_eq((int)write(fd, file, (size_t)n), n);
	ck_assert_int_eq(spool_env_load(dir, r.id, &e, NULL), 0);
	ck_assert_int_eq(e.version, 2);
	ck_assert_int_eq((int)e.size, 6);
	ck_assert_int_eq(e.dsn_ret, 0);
	ck_assert_ptr_null(e.envid);
	ck_assert_int_eq(e.rcpt[0].notify, 0);
	ck_assert_ptr_null(e.rcpt[0].orcpt);
	ck_assert_str_eq(e.rcpt[0].orig, "X@y");
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_int_eq(spool_verify(fd, &e, st.st_size), 0);
	ck_assert_int_eq(spool_env_mark_warned(fd, &e), -1);
	ck_assert_int_eq(errno, ENOTSUP);
	close(fd);
	spool_env_free(&e);
	memset(ids, 0, sizeof ids);
	ck_assert_int_eq(spool_scan(dir, 1, collect, ids), 1);
	ck_assert_str_eq(ids[0], r.id);
	spool_close(s);
}
END_TEST


/* A filter that sees the message and adds late headers at commit (as DKIM signing does). */
struct late_filter {
	size_t seen;
	int finished, freed, fail;
};

static int lf_data(void *arg, const void *p, size_t n)
{
	struct late_filter *f = arg;

	(void)p;
	f->seen += n;
	return 0;
}

static int lf_finish(void *arg, struct spool_txn *t)
{
	struct late_filter *f = arg;
	char h[128];

	f->finished++;
	if (f->fail)
		return errno = ENOMEM, -1;
	snprintf(h, sizeof h, "X-Seen: %zu\n\tbytes", f->seen);
	if (spool_txn_late_header(t, h) < 0 || spool_txn_late_header(t, "X-Second: 2\n") < 0)
		return -1;
	return 0;
}

static void lf_free(void *arg)
{
	((struct late_filter *)arg)->freed++;
}

static const struct spool_filter late_ops = { lf_data, lf_finish, lf_free };

/*
 * Late headers: appended after the message at commit, recorded in T, and
 * read FIRST by msg_src_pread (across the seam, at any offset); covered by
 * the checksum; a file shorter than envelope + L + T is torn.
 */
START_TEST(late_headers_round_trip)
{
	static const char late[] = "X-Seen: 27\n\tbytes\nX-Second: 2\n";
	char err[256], path[512], want[256], got[256], c;
	struct spool *s = spool_open(dir, err, sizeof err);
	struct spool_txn *t;
	struct late_filter f = { 0 };
	struct result r = { 0 };
	struct spool_env e;
	struct msg_src m;
	struct stat st;
	int fd;
	off_t pos;

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	t = spool_txn_new(s, "a@b", "x[192.0.2.1]");
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(spool_txn_rcpt(t, "x@y", NULL), 0);
	ck_assert_int_eq(spool_txn_open(t), 0);
	spool_txn_filter(t, &late_ops, &f);
	ck_assert_int_eq(spool_txn_write(t, body, strlen(body)), 0);
	/* not a header: refused, nothing added */
	ck_assert_int_eq(spool_txn_late_header(t, " folded"), -1);
	ck_assert_int_eq(spool_txn_late_header(t, "A: b\r\n"), -1);
	ck_assert_int_eq(spool_txn_late_header(t, "A: b\n\nbody"), -1);
	spool_txn_commit(t, done_cb, &r);
	wait_for(&r, 1);
	ck_assert_int_eq(r.err, 0);
	ck_assert_int_eq((int)f.seen, (int)strlen(body));
	ck_assert_int_eq(f.finished, 1);
	ck_assert_int_eq(f.freed, 1);

	ck_assert_int_eq(spool_env_load(dir, r.id, &e, &fd), 0);
	ck_assert_int_eq(e.version, 4);
	ck_assert_int_eq((int)e.size, (int)strlen(body));
	ck_assert_int_eq((int)e.pre_len, (int)strlen(late));
	ck_assert_int_eq((int)e.pre_off, (int)(e.msg_off + e.size));
	msg_src_from_env(&m, fd, &e);
	snprintf(want, sizeof want, "%s%s", late, body);
	ck_assert_int_eq((int)msg_src_len(&m), (int)strlen(want));
	/* every start and length: the seam is invisible */
	for (pos = 0; pos < msg_src_len(&m); pos++) {
		size_t n;
		for (n = 1; n <= 7; n++) {
			ssize_t k = msg_src_pread(&m, got, n, pos);
			size_t exp = (size_t)(msg_src_len(&m) - pos) < n ? (size_t)(msg_src_len(&m) - pos) : n;
			ck_assert_int_eq((int)k, (int)exp);
			ck_assert(memcmp(got, want + pos, exp) == 0);
		}
	}
	ck_assert_int_eq((int)msg_src_pread(&m, got, sizeof got, msg_src_len(&m)), 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_int_eq(spool_verify(fd, &e, st.st_size), 0);
	close(fd);
	/* a changed late-header byte fails the checksum */
	snprintf(path, sizeof path, "%s/%s/%s", dir, SPOOL_COMMITTED, r.id);
	ck_assert_int_ge(fd = open(path, O_RDWR), 0);
	ck_assert_int_eq((int)pread(fd, &c, 1, e.pre_off + 3), 1);
	c ^= 0x20;
	ck_assert_int_eq((int)pwrite(fd, &c, 1, e.pre_off + 3), 1);
	ck_assert_int_eq(spool_verify(fd, &e, st.st_size), -1);
	ck_assert_int_eq(errno, EBADMSG);
	/* one byte short of envelope + L + T: torn */
	ck_assert_int_eq(ftruncate(fd, st.st_size - 1), 0);
	close(fd);
	spool_env_free(&e);
	ck_assert_int_eq(spool_env_load(dir, r.id, &e, NULL), -1);
	ck_assert_int_eq(errno, EBADMSG);
	spool_close(s);
}
END_TEST

/* A failing filter fails the commit (451 upstream); nothing stays in the queue; freed once. */
START_TEST(late_filter_failure_fails_commit)
{
	char err[256];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct spool_txn *t;
	struct late_filter f = { .fail = 1 }, g = { 0 };
	struct result r = { 0 };

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	t = make_txn(s, "a@b");
	spool_txn_filter(t, &late_ops, &f);
	spool_txn_commit(t, done_cb, &r);
	wait_for(&r, 1);
	ck_assert_int_eq(r.err, ENOMEM);
	ck_assert_int_eq(f.freed, 1);
	ck_assert_int_eq(count_files(SPOOL_COMMITTED), 0);
	ck_assert_int_eq(count_files(SPOOL_INCOMING), 0);
	/* aborted: freed too */
	t = make_txn(s, "a@b");
	spool_txn_filter(t, &late_ops, &g);
	spool_txn_abort(t);
	ck_assert_int_eq(g.freed, 1);
	ck_assert_int_eq(g.finished, 0);
	spool_close(s);
}
END_TEST

/* A queue written by FRUGAL-Q3 (no T record) is still read and verified. */
START_TEST(reads_q3_files)
{
	char err[256], path[512], file[512], sum[24];
	struct spool *s = spool_open(dir, err, sizeof err);
	struct result r;
	struct spool_env e;
	struct stat st;
	int fd, n;

	ck_assert_ptr_nonnull(s);
	spool_set_loop(s, loop);
	commit_one(s, "a@b", &r);
	ck_assert_int_eq(spool_remove(dir, r.id), 0);
	n = snprintf(file, sizeof file, "FRUGAL-Q3\nI %s\nA 1.000000\nS a@b\nC x\nW -\nR - x@y\nO X@y\n"
	    "L 00000000000000000000\nK 0000000000000000\nE 1\nhello\n", r.id);
	snprintf(sum, sizeof sum, "%016llx", (unsigned long long)fnv64(file, (size_t)n));
	memcpy(strstr(file, "\nK ") + 3, sum, 16);
	memcpy(strstr(file, "\nL ") + 3 + 14, "000006", 6);
	snprintf(path, sizeof path, "%s/%s/%s", dir, SPOOL_COMMITTED, r.id);
	ck_assert_int_ge(fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600), 0);
	ck_assert_int_eq((int)write(fd, file, (size_t)n), n);
	ck_assert_int_eq(spool_env_load(dir, r.id, &e, NULL), 0);
	ck_assert_int_eq(e.version, 3);
	ck_assert_int_eq((int)e.size, 6);
	ck_assert_int_eq((int)e.pre_len, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_int_eq(spool_verify(fd, &e, st.st_size), 0);
	close(fd);
	spool_env_free(&e);
	spool_close(s);
}
END_TEST

/* Found by fuzz_spool_env: a bare "A"/"L"/"E" read past the line, a second "S" leaked. */
START_TEST(env_parse_malformed)
{
	static const char *const bad[] = {
		"FRUGAL-Q1\nA",     /* the record is the last byte: nothing after it */
		"FRUGAL-Q1\nS a@b\nL",
		"FRUGAL-Q1\nS a@b\nL 1\nE",
		"FRUGAL-Q1\nS a@b\nS c@d\nL 1\nE 0\nx",
		"FRUGAL-Q1\nS a@b\nC x\nC y\nL 1\nE 0\nx",
	};
	struct spool_env e;
	char buf[128];
	size_t i, n;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		n = strlen(bad[i]);
		memcpy(buf, bad[i], n);
		buf[n] = '\n';   /* the line ends exactly at the buffer's end */
		ck_assert_int_eq(spool_env_parse(&e, buf, n + 1, (off_t)n + 1), -1);
		ck_assert_msg(errno == EINVAL, "case %zu: errno %d", i, errno);
	}
	n = strlen("FRUGAL-Q1\nS a@b\nR - x@y\nL 1\nE 1\nz");
	memcpy(buf, "FRUGAL-Q1\nS a@b\nR - x@y\nL 1\nE 1\nz", n);
	ck_assert_int_eq(spool_env_parse(&e, buf, n, (off_t)n), 0);
	ck_assert_str_eq(e.rcpt[0].orig, "x@y");
	ck_assert_int_eq((int)e.size, 1);
	spool_env_free(&e);
}
END_TEST

START_TEST(ids_unique)
{
	char err[256];
	struct spool *s = spool_open(dir, err, sizeof err);
	enum { N = 2000 };
	static char ids[N][QUEUE_ID_MAX];
	static struct spool_txn *t[N];
	int i;

	ck_assert_ptr_nonnull(s);
	for (i = 0; i < N; i++) {
		ck_assert_ptr_nonnull(t[i] = spool_txn_new(s, "a@b", "c"));
		snprintf(ids[i], QUEUE_ID_MAX, "%s", spool_txn_id(t[i]));
		ck_assert(spool_id_valid(ids[i]));
		if (i > 0)   /* arrival order is ID order */
			ck_assert(strcmp(ids[i - 1], ids[i]) < 0);
		if (i % 100 == 99) {   /* keep the descriptor count small */
			int k;
			for (k = i - 99; k <= i; k++)
				spool_txn_abort(t[k]);
		}
	}
	qsort(ids, N, QUEUE_ID_MAX, cmp);
	for (i = 1; i < N; i++)
		ck_assert_str_ne(ids[i - 1], ids[i]);
	spool_close(s);
}
END_TEST

START_TEST(bad_ids_rejected)
{
	struct spool_env e;

	ck_assert(!spool_id_valid("../etc"));
	ck_assert(!spool_id_valid(""));
	ck_assert(!spool_id_valid("abc"));
	ck_assert(spool_id_valid("5F3A2B1C0D"));
	ck_assert_int_eq(spool_env_load(dir, "../../x", &e, NULL), -1);
	ck_assert_int_eq(spool_remove(dir, "../x"), -1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("spool");
	TCase *tc = tcase_create("spool");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, commit_round_trip);
	tcase_add_test(tc, null_sender_and_large_message);
	tcase_add_test(tc, abort_leaves_nothing);
	tcase_add_test(tc, commit_without_open_fails);
	tcase_add_test(tc, commit_never_replaces);
	tcase_add_test(tc, group_commit_many);
	tcase_add_test(tc, recovery_ignores_temp_files);
	tcase_add_test(tc, recovery_removes_torn_files);
	tcase_add_test(tc, rcpt_state_survives_reopen);
	tcase_add_test(tc, retired_file_is_reused);
	tcase_add_test(tc, pool_survives_restart_and_stale_content);
	tcase_add_test(tc, pool_is_bounded);
	tcase_add_test(tc, recovery_removes_empty_files);
	tcase_add_test(tc, recovery_rejects_foreign_id);
	tcase_add_test(tc, checksum_mismatch_set_aside);
	tcase_add_test(tc, reads_q1_files);
	tcase_add_test(tc, reads_q2_files);
	tcase_add_test(tc, dsn_records_round_trip);
	tcase_add_test(tc, env_parse_malformed);
	tcase_add_test(tc, ids_unique);
	tcase_add_test(tc, bad_ids_rejected);
	tcase_add_test(tc, late_headers_round_trip);
	tcase_add_test(tc, late_filter_failure_fails_commit);
	tcase_add_test(tc, reads_q3_files);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
