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

static enum smtpd_path_err pp(const char *a, struct smtpd_path *p)
{
	int mail = strncmp(a, "FROM:", 5) == 0;
	return smtpd_parse_path(a, strlen(a), mail ? "FROM:" : "TO:", mail, p);
}

/* RFC 3461: RET, ENVID on MAIL; NOTIFY, ORCPT on RCPT; xtext; lengths; repeats */
START_TEST(dsn_params)
{
	struct smtpd_path p;
	char big[700];

	ck_assert_int_eq(pp("FROM:<a@b.c> RET=HDRS ENVID=QQ+2B1+3Dx", &p), PATH_OK);
	ck_assert_int_eq(p.dsn_ret, SMTPD_DSN_RET_HDRS);
	ck_assert_int_eq(p.has_envid, 1);
	ck_assert_str_eq(p.envid, "QQ+1=x");
	ck_assert_int_eq(pp("FROM:<> ret=full", &p), PATH_OK);
	ck_assert_int_eq(p.dsn_ret, SMTPD_DSN_RET_FULL);
	ck_assert_int_eq(p.has_envid, 0);
	ck_assert_int_eq(pp("FROM:<a@b.c> RET=SOME", &p), PATH_BAD_RET);
	ck_assert_int_eq(pp("FROM:<a@b.c> RET", &p), PATH_BAD_RET);
	ck_assert_int_eq(pp("FROM:<a@b.c> RET=FULL RET=FULL", &p), PATH_BAD_RET);
	ck_assert_int_eq(pp("FROM:<a@b.c> ENVID=a ENVID=b", &p), PATH_BAD_ENVID);
	ck_assert_int_eq(pp("FROM:<a@b.c> ENVID=", &p), PATH_BAD_ENVID);
	ck_assert_int_eq(pp("FROM:<a@b.c> ENVID=a+2", &p), PATH_BAD_ENVID);     /* short hexchar */
	ck_assert_int_eq(pp("FROM:<a@b.c> ENVID=a+2b", &p), PATH_BAD_ENVID);    /* lower-case hex */
	ck_assert_int_eq(pp("FROM:<a@b.c> ENVID=a+0A", &p), PATH_BAD_ENVID);    /* decodes to LF */
	ck_assert_int_eq(pp("FROM:<a@b.c> ENVID=a=b", &p), PATH_BAD_ENVID);
	memset(big, 'x', sizeof big);
	memcpy(big, "FROM:<a@b.c> ENVID=", 19);
	big[19 + 100] = '\0';
	ck_assert_int_eq(pp(big, &p), PATH_OK);                                /* 100: the limit */
	big[19 + 100] = 'x';
	big[19 + 101] = '\0';
	ck_assert_int_eq(pp(big, &p), PATH_BAD_ENVID);
	ck_assert_int_eq(pp("TO:<a@b.c> RET=FULL", &p), PATH_BAD_PARAM);       /* MAIL's, not RCPT's */
	ck_assert_int_eq(pp("FROM:<a@b.c> NOTIFY=NEVER", &p), PATH_BAD_PARAM);

	ck_assert_int_eq(pp("TO:<a@b.c> NOTIFY=success,Delay ORCPT=rfc822;A+2BB@b.c", &p), PATH_OK);
	ck_assert_int_eq(p.notify, SMTPD_DSN_NOTIFY_SUCCESS | SMTPD_DSN_NOTIFY_DELAY);
	ck_assert_str_eq(p.orcpt, "rfc822;A+B@b.c");
	ck_assert_int_eq(pp("TO:<a@b.c> NOTIFY=NEVER", &p), PATH_OK);
	ck_assert_int_eq(p.notify, SMTPD_DSN_NOTIFY_NEVER);
	ck_assert_str_eq(p.orcpt, "");
	ck_assert_int_eq(pp("TO:<a@b.c> NOTIFY=NEVER,FAILURE", &p), PATH_BAD_NOTIFY);
	ck_assert_int_eq(pp("TO:<a@b.c> NOTIFY=", &p), PATH_BAD_NOTIFY);
	ck_assert_int_eq(pp("TO:<a@b.c> NOTIFY=FAILURE,", &p), PATH_BAD_NOTIFY);
	ck_assert_int_eq(pp("TO:<a@b.c> NOTIFY=SOMETIMES", &p), PATH_BAD_NOTIFY);
	ck_assert_int_eq(pp("TO:<a@b.c> NOTIFY=FAILURE NOTIFY=DELAY", &p), PATH_BAD_NOTIFY);
	ck_assert_int_eq(pp("TO:<a@b.c> ORCPT=a@b.c", &p), PATH_BAD_ORCPT);     /* no type */
	ck_assert_int_eq(pp("TO:<a@b.c> ORCPT=;a@b.c", &p), PATH_BAD_ORCPT);
	ck_assert_int_eq(pp("TO:<a@b.c> ORCPT=rfc822;", &p), PATH_BAD_ORCPT);
	ck_assert_int_eq(pp("TO:<a@b.c> ORCPT=rfc822;a+ZZ", &p), PATH_BAD_ORCPT);
	ck_assert_int_eq(pp("TO:<a@b.c> ORCPT=rfc822;a@b ORCPT=rfc822;c@d", &p), PATH_BAD_ORCPT);
	memset(big, 'x', sizeof big);
	memcpy(big, "TO:<a@b.c> ORCPT=rfc822;", 24);
	big[17 + 500] = '\0';
	ck_assert_int_eq(pp(big, &p), PATH_OK);                                /* 500: the limit */
	big[17 + 500] = 'x';
	big[17 + 501] = '\0';
	ck_assert_int_eq(pp(big, &p), PATH_BAD_ORCPT);
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
	tcase_add_test(tc, dsn_params);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
