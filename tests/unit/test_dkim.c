/*
 * tests/unit/test_dkim.c: queue/dkim.c's pure parsers: the one From:
 * address's domain (what decides which key signs, so a wrong answer signs
 * mail for another domain or none) and a dkim_signing_maps value; and
 * allocation failure at every site of a signed transaction (SQLite's
 * habit): each ends committed and signed, or failed with nothing
 * committed, never committed unsigned; no leak (under ASan).
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/mem.h"
#include "core/worker.h"
#include "queue/queue.h"
#include "queue/queue_int.h"

static const char *dom(const char *v)
{
	static char out[256];

	return dkim_from_domain(v, strlen(v), out, sizeof out) == 0 ? out : NULL;
}

START_TEST(from_domain)
{
	ck_assert_str_eq(dom(" Alice <alice@Example.ORG>"), "example.org");
	ck_assert_str_eq(dom("alice@example.org"), "example.org");
	ck_assert_str_eq(dom(" alice@example.org (Alice)\n"), "example.org");
	ck_assert_str_eq(dom(" \"Doe, John <x@evil.test>\" <john@example.org>"), "example.org");
	ck_assert_str_eq(dom(" (a comment, with <x@evil.test>) Bob <bob@sub.example.org>"), "sub.example.org");
	ck_assert_str_eq(dom(" \"quoted@evil.test\"@example.org"), "example.org");
	ck_assert_str_eq(dom(" =?utf-8?q?J=C3=B6rg?=\n\t<j@example.org>"), "example.org");
	/* not one plain address: not signed */
	ck_assert_ptr_null(dom(" a@example.org, b@example.org"));
	ck_assert_ptr_null(dom(" undisclosed-recipients:;"));
	ck_assert_ptr_null(dom(" Group: a@example.org;"));
	ck_assert_ptr_null(dom(" <a@example.org> <b@example.org>"));
	ck_assert_ptr_null(dom(" no address"));
	ck_assert_ptr_null(dom(" <a@>"));
	ck_assert_ptr_null(dom(" <a@[192.0.2.1]>"));
	ck_assert_ptr_null(dom(" <a@exa mple.org>"));
	ck_assert_ptr_null(dom(" \"unterminated <a@example.org>"));
	ck_assert_ptr_null(dom(" (unterminated <a@example.org>"));
	ck_assert_ptr_null(dom(" <a@example.org"));
	ck_assert_ptr_null(dom(""));
}
END_TEST

START_TEST(key_spec)
{
	char sel[64], file[128];

	ck_assert_int_eq(dkim_key_spec_parse("202612:/etc/frugal/dkim/x.key", sel, sizeof sel, file, sizeof file), 0);
	ck_assert_str_eq(sel, "202612");
	ck_assert_str_eq(file, "/etc/frugal/dkim/x.key");
	ck_assert_int_eq(dkim_key_spec_parse("a.b_c-d:/k", sel, sizeof sel, file, sizeof file), 0);
	ck_assert_str_eq(sel, "a.b_c-d");
	ck_assert_int_eq(dkim_key_spec_parse("sel:relative/k", sel, sizeof sel, file, sizeof file), -1);
	ck_assert_int_eq(dkim_key_spec_parse(":/k", sel, sizeof sel, file, sizeof file), -1);
	ck_assert_int_eq(dkim_key_spec_parse("/k", sel, sizeof sel, file, sizeof file), -1);
	ck_assert_int_eq(dkim_key_spec_parse("s l:/k", sel, sizeof sel, file, sizeof file), -1);
	ck_assert_int_eq(dkim_key_spec_parse(".sel:/k", sel, sizeof sel, file, sizeof file), -1);
	ck_assert_int_eq(dkim_key_spec_parse("sel", sel, sizeof sel, file, sizeof file), -1);
	ck_assert_int_eq(dkim_key_spec_parse("s:/0123456789", sel, sizeof sel, file, 8), -1);   /* too long */
}
END_TEST

static int ndone, derr;
static void teardown(void);
static char dir[64];
static char ids[600][QUEUE_ID_MAX];
static int nids;

static void collect(void *arg, const char *id)
{
	(void)arg;
	if (nids < 600)
		snprintf(ids[nids++], QUEUE_ID_MAX, "%s", id);
}

static void done_cb(void *arg, int err, const char *id)
{
	(void)arg;
	(void)id;
	ndone++;
	derr = err;
}

static const char msg[] = "Received: by test\n\tid X; now\nFrom: Alice <alice@example.org>\n"
    "To: bob@example.net\nSubject: a subject\n\tfolded\n\nhello\nworld\n";

/* one transaction, N-th allocation failing: 1 committed, 0 failed cleanly */
static int one(struct spool *s, struct dkim_keys *ks, struct ev_loop *loop)
{
	struct spool_txn *t;
	size_t i;

	if ((t = spool_txn_new(s, "alice@example.org", "x[192.0.2.1]")) == NULL)
		return 0;
	if (spool_txn_rcpt(t, "bob@example.net", NULL) < 0 || spool_txn_open(t) < 0 ||
	    dkim_sign_txn(ks, t) < 0) {
		spool_txn_abort(t);
		return 0;
	}
	/* a line at a time, as smtpd streams it */
	for (i = 0; i < sizeof msg - 1;) {
		const char *nl = memchr(msg + i, '\n', sizeof msg - 1 - i);
		size_t n = (size_t)(nl - (msg + i)) + 1;
		if (spool_txn_write(t, msg + i, n) < 0) {
			spool_txn_abort(t);
			return 0;
		}
		i += n;
	}
	ndone = 0;
	spool_txn_commit(t, done_cb, NULL);
	while (ndone == 0)
		ev_run(loop, EVRUN_ONCE);
	return derr == 0;
}

/* a key (Ed25519 or RSA) for example.org in a scratch directory, its table, n workers a class, a spool */
static struct dkim_keys *signer_setup(int ed, int n, struct conf **c, struct spool **s, struct ev_loop *loop)
{
	char kdir[128], path[256], txt[2048], err[1300], text[512];
	struct conf_diags d = { 0 };
	struct dkim_keys *ks;

	snprintf(dir, sizeof dir, "/tmp/frugal-test-dkim-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(kdir, sizeof kdir, "%s/keys", dir);
	ck_assert_int_eq(dkim_keygen(kdir, "example.org", "s1", ed, (gid_t)-1, path, sizeof path, txt, sizeof txt,
	    err, sizeof err), 0);
	snprintf(text, sizeof text, "dkim_signing_maps = inline:{ example.org=s1:%s }\n", path);
	ck_assert_ptr_nonnull(*c = conf_load_text(text, "(test)", &d));
	conf_diags_free(&d);
	ck_assert_msg((ks = dkim_keys_load(*c, err, sizeof err)) != NULL, "%s", err);
	ck_assert_int_eq(worker_init(loop, (const int[WORKER_CLASSES]){ n, n }), 0);
	ck_assert_ptr_nonnull(*s = spool_open(dir, err, sizeof err));
	spool_set_loop(*s, loop);
	return ks;
}

START_TEST(allocation_failure_sweep)
{
	struct ev_loop *loop = EV_DEFAULT;
	struct spool *s;
	struct dkim_keys *ks;
	struct conf *c;
	unsigned long before;
	int n, i, committed = 0, failed = 0, ok;

	ks = signer_setup(0, 2, &c, &s, loop);
	ck_assert_int_eq(dkim_keys_count(ks), 1);
	for (n = 1; n < 5000; n++) {
		before = mem_failures();
		mem_fail_at((unsigned long)n);
		ok = one(s, ks, loop);
		mem_fail_at(0);
		if (ok)
			committed++;
		else
			failed++;
		if (mem_failures() == before)
			break;   /* no allocation failed: every site was met */
	}
	ck_assert_int_lt(n, 5000);
	ck_assert_int_gt(failed, 10);   /* the sweep met the signer's sites, not only the spool's */
	ck_assert_int_gt(committed, 0);
	/* every committed message carries its DKIM-Signature, first and whole */
	memset(ids, 0, sizeof ids);
	nids = 0;
	ck_assert_int_eq(spool_scan(dir, 0, collect, NULL), committed);
	ck_assert_int_eq(nids, committed);
	for (i = 0; i < nids; i++) {
		struct spool_env e;
		struct msg_src m;
		char buf[4096];
		ssize_t k;
		int fd;

		ck_assert_int_eq(spool_env_load(dir, ids[i], &e, &fd), 0);
		msg_src_from_env(&m, fd, &e);
		ck_assert_int_gt((int)e.pre_len, 100);
		k = msg_src_pread(&m, buf, sizeof buf - 1, 0);
		ck_assert_int_eq((int)k, (int)msg_src_len(&m));
		buf[k] = '\0';
		ck_assert_msg(strncmp(buf, "DKIM-Signature: v=1; a=rsa-sha256;", 34) == 0, "%s", buf);
		ck_assert_msg(strstr(buf, "d=example.org") != NULL, "%s", buf);
		ck_assert_str_eq(buf + e.pre_len, msg);
		close(fd);
		spool_env_free(&e);
	}
	fprintf(stderr, "dkim allocation sweep: %d allocation sites, %d failed cleanly, %d committed signed\n",
	    n - 1, failed, committed);
	spool_close(s);
	worker_shutdown();
	dkim_keys_unref(ks);
	conf_unref(c);
}
END_TEST

/*
 * Signing keeps no memory: core/mem's count after 20 more signed messages is
 * where it was after the first (which warms OpenSSL's caches). With an
 * Ed25519 key libopendkim 2.11 leaves the key behind at dkim_free()
 * (queue/dkim.c frees it): without that the count grows by 9,440 bytes (472
 * a message as core/mem counts). RSA is the control: the library frees it.
 */
static void sign_n_measure(int ed, size_t *grew, int *signed_ok)
{
	struct ev_loop *loop = EV_DEFAULT;
	struct spool *s;
	struct dkim_keys *ks;
	struct conf *c;
	size_t before;
	int i;

	/* one worker: the warm-up message warms the only thread that signs (OpenSSL's per-thread state) */
	ks = signer_setup(ed, 1, &c, &s, loop);
	*signed_ok = one(s, ks, loop);
	before = mem_in_use();
	for (i = 0; i < 20; i++)
		*signed_ok += one(s, ks, loop);
	*grew = mem_in_use() > before ? mem_in_use() - before : 0;
	spool_close(s);
	worker_shutdown();
	dkim_keys_unref(ks);
	conf_unref(c);
	teardown();
	dir[0] = '\0';
}

START_TEST(signing_keeps_no_memory)
{
	size_t grew_rsa, grew_ed;
	int ok_rsa, ok_ed;

	sign_n_measure(0, &grew_rsa, &ok_rsa);
	sign_n_measure(1, &grew_ed, &ok_ed);
	fprintf(stderr, "dkim: core/mem grew by %zu bytes over 20 RSA signatures, %zu over 20 Ed25519\n",
	    grew_rsa, grew_ed);
	ck_assert_int_eq(ok_rsa, 21);
	ck_assert_int_eq(ok_ed, 21);
	ck_assert_int_eq((int)grew_rsa, 0);
	ck_assert_int_eq((int)grew_ed, 0);
}
END_TEST

/* the sweep's directory goes whatever the outcome (a failed assertion ends the test early) */
static void teardown(void)
{
	char cmd[128];

	if (dir[0] && snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir) > 0 && system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

int main(void)
{
	Suite *s = suite_create("dkim");
	TCase *tc = tcase_create("parsers");
	SRunner *sr;
	int failed;

	mem_install_hooks();   /* as the daemon: OpenSSL's allocations are swept too */
	tcase_add_test(tc, from_domain);
	tcase_add_test(tc, key_spec);
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, allocation_failure_sweep);
	tcase_add_test(tc, signing_keeps_no_memory);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
