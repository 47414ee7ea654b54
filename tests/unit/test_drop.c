/* tests/unit/test_drop.c: the maildrop format's parser (queue/drop.h). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "queue/drop.h"

struct got {
	char sender[64], rcpt[256], data[256];
	int nrcpt;
	size_t ndata;
};

static int g_sender(void *arg, const char *a) { struct got *g = arg; strcpy(g->sender, a); return 0; }
static int g_rcpt(void *arg, const char *a)
{
	struct got *g = arg;

	strcat(g->rcpt, a);
	strcat(g->rcpt, ";");
	g->nrcpt++;
	return 0;
}
static int g_data(void *arg, const char *p, size_t n)
{
	struct got *g = arg;

	memcpy(g->data + g->ndata, p, n);
	g->ndata += n;
	return 0;
}

/* parse s fed in pieces of `step` bytes (0: whole); 0 or -1 */
static int feed(const char *s, size_t step, struct got *g, const char **err)
{
	struct drop_parser p;
	size_t n = strlen(s), i, k;

	memset(g, 0, sizeof *g);
	drop_parser_init(&p, g);
	p.on_sender = g_sender;
	p.on_rcpt = g_rcpt;
	p.on_data = g_data;
	for (i = 0; i < n; i += k) {
		k = step && n - i > step ? step : n - i;
		if (drop_parse(&p, s + i, k) < 0) {
			*err = p.err;
			return -1;
		}
	}
	if (drop_finish(&p) < 0) {
		*err = p.err;
		return -1;
	}
	return 0;
}

static const char *good = "FRUGAL-DROP1\nS a@b\nR c@d\nR e@f\nD 6\nhello\nD 4\nbye\nZ\n";

START_TEST(whole_and_in_pieces)
{
	struct got g;
	const char *err = NULL;
	size_t step;

	for (step = 0; step < 12; step++) {
		ck_assert_int_eq(feed(good, step, &g, &err), 0);
		ck_assert_str_eq(g.sender, "a@b");
		ck_assert_str_eq(g.rcpt, "c@d;e@f;");
		ck_assert_int_eq(g.ndata, 10);
		ck_assert_int_eq(memcmp(g.data, "hello\nbye\n", 10), 0);
	}
	/* the null sender, no data */
	ck_assert_int_eq(feed("FRUGAL-DROP1\nS \nR x@y\nZ\n", 0, &g, &err), 0);
	ck_assert_str_eq(g.sender, "");
}
END_TEST

START_TEST(incomplete_or_malformed)
{
	static const struct { const char *in, *why; } bad[] = {
		{ "FRUGAL-DROP1\nS a@b\nR c@d\nD 6\nhel", "incomplete" },       /* a writer killed midway */
		{ "FRUGAL-DROP1\nS a@b\nR c@d\nD 6\nhello\n", "incomplete" },   /* no Z */
		{ "FRUGAL-DROP2\nS a@b\nR c@d\nZ\n", "magic" },
		{ "FRUGAL-DROP1\nS a@b\nZ\n", "before the recipients" },
		{ "FRUGAL-DROP1\nR c@d\nZ\n", "out of place" },
		{ "FRUGAL-DROP1\nS a@b\nR c@d\nD 3\nab\nR e@f\nZ\n", "out of place" },
		{ "FRUGAL-DROP1\nS a@b\nR c\001d\nZ\n", "control" },
		{ "FRUGAL-DROP1\nS a@b\nR \nZ\n", "empty recipient" },
		{ "FRUGAL-DROP1\nS a@b\nR c@d\nD 0\nZ\n", "chunk length" },
		{ "FRUGAL-DROP1\nS a@b\nR c@d\nD 65537\n", "chunk length" },
		{ "FRUGAL-DROP1\nS a@b\nR c@d\nD x\n", "chunk length" },
		{ "FRUGAL-DROP1\nS a@b\nR c@d\nZ\nmore", "after the end" },
		{ "FRUGAL-DROP1\nS a@b\nRc@d\n", "malformed" },
		{ "FRUGAL-DROP1\nS a@b\nX c\n", "unknown record" },
	};
	struct got g;
	const char *err;
	size_t i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err = NULL;
		ck_assert_msg(feed(bad[i].in, 0, &g, &err) == -1, "accepted #%zu", i);
		ck_assert_msg(err && strstr(err, bad[i].why), "#%zu: %s", i, err ? err : "(none)");
	}
}
END_TEST

START_TEST(bounded_values)
{
	char line[DROP_VALUE_MAX + 64];
	struct got g;
	const char *err;

	memset(line, 'x', sizeof line);
	memcpy(line, "FRUGAL-DROP1\nS ", 15);
	line[sizeof line - 1] = '\0';
	ck_assert_int_eq(feed(line, 0, &g, &err), -1);
	ck_assert_ptr_nonnull(strstr(err, "too long"));
}
END_TEST

START_TEST(names)
{
	ck_assert(drop_name_valid("6b12a63b.65bc7.671a.ab9a4f65"));
	ck_assert(!drop_name_valid(".tmp.6b12a63b.65bc7.671a.ab9a4f65"));
	ck_assert(!drop_name_valid("../x"));
	ck_assert(!drop_name_valid("ABC"));
	ck_assert(!drop_name_valid(""));
	/* mailq requests: the prefix, then a drop name; never taken for mail */
	ck_assert(drop_req_name_valid("mailq.6b12a63b.65bc7.671a.ab9a4f65"));
	ck_assert(!drop_name_valid("mailq.6b12a63b.65bc7.671a.ab9a4f65"));
	ck_assert(!drop_req_name_valid("mailq."));
	ck_assert(!drop_req_name_valid("mailq../x"));
	ck_assert(!drop_req_name_valid("mailq..1"));
	ck_assert(!drop_req_name_valid("6b12a63b.65bc7"));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("drop");
	TCase *tc = tcase_create("drop");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, whole_and_in_pieces);
	tcase_add_test(tc, incomplete_or_malformed);
	tcase_add_test(tc, bounded_values);
	tcase_add_test(tc, names);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
