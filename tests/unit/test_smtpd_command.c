/* tests/unit/test_smtpd_command.c: the SMTP command and path parser (smtpd/command.h). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd/command.h"

static struct smtpd_cmd parse(const char *line)
{
	struct smtpd_cmd c;
	smtpd_cmd_parse(line, strlen(line), &c);
	return c;
}

START_TEST(verbs_case_insensitive)
{
	ck_assert_int_eq(parse("ehlo x").verb, CMD_EHLO);
	ck_assert_int_eq(parse("EHLO x").verb, CMD_EHLO);
	ck_assert_int_eq(parse("MaIl FROM:<a@b>").verb, CMD_MAIL);
	ck_assert_int_eq(parse("QUIT").verb, CMD_QUIT);
	ck_assert_int_eq(parse("DATAX").verb, CMD_UNKNOWN);
	ck_assert_int_eq(parse("").verb, CMD_UNKNOWN);
	ck_assert_int_eq(parse("STARTTLS").verb, CMD_STARTTLS);
}
END_TEST

START_TEST(argument_split)
{
	struct smtpd_cmd c = parse("HELO  client.example  ");
	ck_assert_int_eq(c.verb, CMD_HELO);
	ck_assert_int_eq((int)c.arglen, (int)strlen(" client.example"));
	c = parse("NOOP");
	ck_assert_int_eq((int)c.arglen, 0);
}
END_TEST

START_TEST(path_basic)
{
	struct smtpd_path p;
	const char *a = "FROM:<user@example.com> SIZE=1000 BODY=8BITMIME SMTPUTF8";
	ck_assert_int_eq(smtpd_parse_path(a, strlen(a), "FROM:", 1, &p), PATH_OK);
	ck_assert_str_eq(p.addr, "user@example.com");
	ck_assert_int_eq((int)p.size, 1000);
	ck_assert_int_eq(p.body_8bit, 1);
	ck_assert_int_eq(p.smtputf8, 1);
}
END_TEST

START_TEST(path_null_and_space)
{
	struct smtpd_path p;
	ck_assert_int_eq(smtpd_parse_path("FROM:<>", 7, "FROM:", 1, &p), PATH_OK);
	ck_assert_int_eq(p.null_path, 1);
	ck_assert_int_eq(smtpd_parse_path("TO:<>", 5, "TO:", 0, &p), PATH_SYNTAX);
	ck_assert_int_eq(smtpd_parse_path("FROM: <a@b.c>", 13, "FROM:", 1, &p), PATH_OK);
	ck_assert_str_eq(p.addr, "a@b.c");
	ck_assert_int_eq(smtpd_parse_path("TO:<postmaster>", 15, "TO:", 0, &p), PATH_OK);
	ck_assert_str_eq(p.addr, "postmaster");
}
END_TEST

START_TEST(path_errors)
{
	struct smtpd_path p;
	char big[600];
	ck_assert_int_eq(smtpd_parse_path("FROM:<a@b", 9, "FROM:", 1, &p), PATH_SYNTAX);
	ck_assert_int_eq(smtpd_parse_path("TO<a@b>", 7, "TO:", 0, &p), PATH_SYNTAX);
	ck_assert_int_eq(smtpd_parse_path("TO:<a@>", 7, "TO:", 0, &p), PATH_SYNTAX);
	ck_assert_int_eq(smtpd_parse_path("TO:<@b.c>", 9, "TO:", 0, &p), PATH_SYNTAX);
	ck_assert_int_eq(smtpd_parse_path("TO:<a b@c>", 10, "TO:", 0, &p), PATH_SYNTAX);
	ck_assert_int_eq(smtpd_parse_path("TO:<a@-bad.com>", 15, "TO:", 0, &p), PATH_SYNTAX);
	ck_assert_int_eq(smtpd_parse_path("FROM:<a@b.c> SIZE=x", 19, "FROM:", 1, &p), PATH_BAD_SIZE);
	ck_assert_int_eq(smtpd_parse_path("FROM:<a@b.c> BODY=9BIT", 22, "FROM:", 1, &p), PATH_BAD_BODY);
	ck_assert_int_eq(smtpd_parse_path("FROM:<a@b.c> FOO=1", 18, "FROM:", 1, &p), PATH_BAD_PARAM);
	ck_assert_int_eq(smtpd_parse_path("TO:<a@b.c> SIZE=1", 17, "TO:", 0, &p), PATH_BAD_PARAM);
	memset(big, 'a', sizeof big);
	memcpy(big, "TO:<", 4);
	big[sizeof big - 1] = '>';
	ck_assert_int_eq(smtpd_parse_path(big, sizeof big, "TO:", 0, &p), PATH_TOO_LONG);
}
END_TEST

START_TEST(source_route_ignored)
{
	struct smtpd_path p;
	const char *a = "TO:<@relay.example:user@example.com>";
	ck_assert_int_eq(smtpd_parse_path(a, strlen(a), "TO:", 0, &p), PATH_OK);
	ck_assert_str_eq(p.addr, "user@example.com");
}
END_TEST

START_TEST(hostnames)
{
	ck_assert_int_eq(smtpd_valid_hostname("mail.example.com"), 1);
	ck_assert_int_eq(smtpd_valid_hostname("localhost"), 1);
	ck_assert_int_eq(smtpd_valid_hostname("-bad"), 0);
	ck_assert_int_eq(smtpd_valid_hostname("a..b"), 0);
	ck_assert_int_eq(smtpd_valid_hostname("bad-.com"), 0);
	ck_assert_int_eq(smtpd_valid_hostname("sp ace"), 0);
	ck_assert_int_eq(smtpd_valid_addr_literal("[127.0.0.1]"), 1);
	ck_assert_int_eq(smtpd_valid_addr_literal("[IPv6:::1]"), 1);
	ck_assert_int_eq(smtpd_valid_addr_literal("[999.0.0.1]"), 0);
	ck_assert_int_eq(smtpd_fqdn("localhost"), 0);
	ck_assert_int_eq(smtpd_fqdn("mx.example.org"), 1);
	ck_assert_int_eq(smtpd_fqdn("[10.0.0.1]"), 1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("smtpd_command");
	TCase *tc = tcase_create("parser");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, verbs_case_insensitive);
	tcase_add_test(tc, argument_split);
	tcase_add_test(tc, path_basic);
	tcase_add_test(tc, path_null_and_space);
	tcase_add_test(tc, path_errors);
	tcase_add_test(tc, source_route_ignored);
	tcase_add_test(tc, hostnames);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
