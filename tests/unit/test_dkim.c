/*
 * tests/unit/test_dkim.c: queue/dkim.c's pure parsers: the one From:
 * address's domain (what decides which key signs, so a wrong answer signs
 * mail for another domain or none) and a dkim_signing_maps value.
 */
#include <check.h>
#include <string.h>

#include "queue/queue.h"

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

int main(void)
{
	Suite *s = suite_create("dkim");
	TCase *tc = tcase_create("parsers");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, from_domain);
	tcase_add_test(tc, key_spec);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
