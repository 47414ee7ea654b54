/* tests/unit/test_smtp_sasl.c: the SMTP client's AUTH (queue/smtp_sasl.h): options, mechanism, lines, steps, credentials. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "conf/map.h"
#include "core/mem.h"
#include "queue/smtp_sasl.h"

static int choose(const char *mechs, unsigned opts)
{
	return smtp_sasl_choose(mechs, strlen(mechs), opts);
}

START_TEST(options)
{
	unsigned o;

	ck_assert_int_eq(smtp_sasl_options_parse("noplaintext, noanonymous", &o), 0);
	ck_assert_uint_eq(o, SMTP_SASL_NOPLAINTEXT | SMTP_SASL_NOANONYMOUS);
	ck_assert_int_eq(smtp_sasl_options_parse("  NoAnonymous ", &o), 0);
	ck_assert_uint_eq(o, SMTP_SASL_NOANONYMOUS);
	ck_assert_int_eq(smtp_sasl_options_parse("", &o), 0);
	ck_assert_uint_eq(o, 0);
	ck_assert_int_eq(smtp_sasl_options_parse("noactive,nodictionary mutual_auth", &o), 0);
	ck_assert_uint_eq(o, SMTP_SASL_NOACTIVE | SMTP_SASL_NODICTIONARY | SMTP_SASL_MUTUAL_AUTH);
	ck_assert_int_eq(smtp_sasl_options_parse("noplain", &o), -1);
	ck_assert_int_eq(smtp_sasl_options_parse("noplaintextx", &o), -1);
}
END_TEST

START_TEST(mechanism)
{
	ck_assert_int_eq(choose("LOGIN PLAIN CRAM-MD5", SMTP_SASL_NOANONYMOUS), SMTP_SASL_MECH_PLAIN);
	ck_assert_int_eq(choose("login cram-md5", 0), SMTP_SASL_MECH_LOGIN);
	ck_assert_int_eq(choose("=LOGIN", 0), SMTP_SASL_MECH_LOGIN);          /* AUTH=LOGIN, the old form */
	ck_assert_int_eq(choose("CRAM-MD5 DIGEST-MD5 XOAUTH2", 0), SMTP_SASL_MECH_NONE);
	ck_assert_int_eq(choose("PLAINX LOGINS", 0), SMTP_SASL_MECH_NONE);   /* whole words only */
	ck_assert_int_eq(choose("", 0), SMTP_SASL_MECH_NONE);
	/* Postfix's default options refuse both: what a relayhost set-up must change */
	ck_assert_int_eq(choose("PLAIN LOGIN", SMTP_SASL_NOPLAINTEXT | SMTP_SASL_NOANONYMOUS), SMTP_SASL_MECH_NONE);
	ck_assert_int_eq(choose("PLAIN LOGIN", SMTP_SASL_NODICTIONARY), SMTP_SASL_MECH_NONE);
}
END_TEST

START_TEST(plain)
{
	struct smtp_sasl s;
	char line[SMTP_SASL_LINE_MAX];

	ck_assert_int_eq(smtp_sasl_start(&s, SMTP_SASL_MECH_PLAIN, "user@example.com", "secret", line, sizeof line), 0);
	/* base64 of "\0user@example.com\0secret" */
	ck_assert_str_eq(line, "AUTH PLAIN AHVzZXJAZXhhbXBsZS5jb20Ac2VjcmV0\r\n");
	ck_assert_int_eq(smtp_sasl_reply(&s, 235, "2.7.0 Authentication successful", 31, line, sizeof line),
	    SMTP_SASL_OK);
	ck_assert_int_eq(s.pass[0], '\0');   /* forgotten once used */
	/* refused: defer */
	ck_assert_int_eq(smtp_sasl_start(&s, SMTP_SASL_MECH_PLAIN, "u", "p", line, sizeof line), 0);
	ck_assert_int_eq(smtp_sasl_reply(&s, 535, "5.7.8 Error: authentication failed", 34, line, sizeof line),
	    SMTP_SASL_REFUSED);
	ck_assert_int_eq(smtp_sasl_start(&s, SMTP_SASL_MECH_PLAIN, "u", "p", line, sizeof line), 0);
	ck_assert_int_eq(smtp_sasl_reply(&s, 454, "4.7.0 Temporary failure", 23, line, sizeof line), SMTP_SASL_REFUSED);
	/* PLAIN never needs a challenge: a 334 is a protocol error */
	ck_assert_int_eq(smtp_sasl_start(&s, SMTP_SASL_MECH_PLAIN, "u", "p", line, sizeof line), 0);
	ck_assert_int_eq(smtp_sasl_reply(&s, 334, "", 0, line, sizeof line), SMTP_SASL_PROTOCOL);
	/* and nothing after the end */
	ck_assert_int_eq(smtp_sasl_reply(&s, 235, "", 0, line, sizeof line), SMTP_SASL_PROTOCOL);
}
END_TEST

START_TEST(login)
{
	struct smtp_sasl s;
	char line[SMTP_SASL_LINE_MAX];

	ck_assert_int_eq(smtp_sasl_start(&s, SMTP_SASL_MECH_LOGIN, "user", "pa:ss", line, sizeof line), 0);
	ck_assert_str_eq(line, "AUTH LOGIN\r\n");
	ck_assert_int_eq(smtp_sasl_reply(&s, 334, "VXNlcm5hbWU6", 12, line, sizeof line), SMTP_SASL_SEND);
	ck_assert_str_eq(line, "dXNlcg==\r\n");
	ck_assert_int_eq(smtp_sasl_reply(&s, 334, "UGFzc3dvcmQ6", 12, line, sizeof line), SMTP_SASL_SEND);
	ck_assert_str_eq(line, "cGE6c3M=\r\n");
	ck_assert_int_eq(smtp_sasl_reply(&s, 235, "ok", 2, line, sizeof line), SMTP_SASL_OK);
	/* a third challenge is not LOGIN */
	ck_assert_int_eq(smtp_sasl_start(&s, SMTP_SASL_MECH_LOGIN, "user", "pass", line, sizeof line), 0);
	ck_assert_int_eq(smtp_sasl_reply(&s, 334, "x", 1, line, sizeof line), SMTP_SASL_SEND);
	ck_assert_int_eq(smtp_sasl_reply(&s, 334, "x", 1, line, sizeof line), SMTP_SASL_SEND);
	ck_assert_int_eq(smtp_sasl_reply(&s, 334, "x", 1, line, sizeof line), SMTP_SASL_PROTOCOL);
	/* refused after the user name */
	ck_assert_int_eq(smtp_sasl_start(&s, SMTP_SASL_MECH_LOGIN, "user", "pass", line, sizeof line), 0);
	ck_assert_int_eq(smtp_sasl_reply(&s, 334, "x", 1, line, sizeof line), SMTP_SASL_SEND);
	ck_assert_int_eq(smtp_sasl_reply(&s, 535, "no", 2, line, sizeof line), SMTP_SASL_REFUSED);
	/* codes out of range, and a 250 where AUTH's reply is due */
	ck_assert_int_eq(smtp_sasl_start(&s, SMTP_SASL_MECH_LOGIN, "user", "pass", line, sizeof line), 0);
	ck_assert_int_eq(smtp_sasl_reply(&s, 250, "", 0, line, sizeof line), SMTP_SASL_PROTOCOL);
	ck_assert_int_eq(smtp_sasl_start(&s, SMTP_SASL_MECH_LOGIN, "user", "pass", line, sizeof line), 0);
	ck_assert_int_eq(smtp_sasl_reply(&s, 999, "", 0, line, sizeof line), SMTP_SASL_PROTOCOL);
}
END_TEST

START_TEST(fields)
{
	struct smtp_sasl s;
	char line[SMTP_SASL_LINE_MAX], big[SMTP_SASL_FIELD_MAX + 2];

	ck_assert_int_eq(smtp_sasl_start(&s, SMTP_SASL_MECH_PLAIN, "", "p", line, sizeof line), -1);
	ck_assert_int_eq(smtp_sasl_start(&s, SMTP_SASL_MECH_PLAIN, "u", "p\r\nQUIT", line, sizeof line), -1);
	ck_assert_int_eq(smtp_sasl_start(&s, SMTP_SASL_MECH_NONE, "u", "p", line, sizeof line), -1);
	memset(big, 'a', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	ck_assert_int_eq(smtp_sasl_start(&s, SMTP_SASL_MECH_PLAIN, big, "p", line, sizeof line), -1);
	big[SMTP_SASL_FIELD_MAX] = '\0';   /* the longest allowed: both fields at the cap fit the line */
	ck_assert_int_eq(smtp_sasl_start(&s, SMTP_SASL_MECH_PLAIN, big, big, line, sizeof line), 0);
	ck_assert_uint_eq(strlen(line), strlen("AUTH PLAIN ") + 4 * ((2 * SMTP_SASL_FIELD_MAX + 2 + 2) / 3) + 2);
	ck_assert_int_eq(smtp_sasl_start(&s, SMTP_SASL_MECH_PLAIN, "u", "p", line, 20), -1);   /* no room: refused */
}
END_TEST

START_TEST(credentials)
{
	char err[256], user[SMTP_SASL_FIELD_MAX + 1], pass[SMTP_SASL_FIELD_MAX + 1];
	struct map_list *l = map_list_open("inline:{ [mail.example.com]:587=relay:pw:with:colons, "
	    "smtp.example.net=hostuser:hostpw, example.net=domuser:dompw, bad.example=nocolon }", err, sizeof err);

	ck_assert_msg(l != NULL, "%s", err);
	/* the next hop as written in relayhost */
	ck_assert_int_eq(smtp_sasl_lookup(l, "mx1.example.com", "[mail.example.com]:587", user, pass), 1);
	ck_assert_str_eq(user, "relay");
	ck_assert_str_eq(pass, "pw:with:colons");   /* split at the first ':' */
	/* the server's host name before the next hop (Postfix's order) */
	ck_assert_int_eq(smtp_sasl_lookup(l, "smtp.example.net", "example.net", user, pass), 1);
	ck_assert_str_eq(user, "hostuser");
	ck_assert_int_eq(smtp_sasl_lookup(l, "mx.example.net", "example.net", user, pass), 1);
	ck_assert_str_eq(user, "domuser");
	/* the bracketless form is another key, as in Postfix */
	ck_assert_int_eq(smtp_sasl_lookup(l, "mail.example.com", "mail.example.com", user, pass), 0);
	ck_assert_int_eq(smtp_sasl_lookup(l, "bad.example", NULL, user, pass), -1);
	map_list_close(l);
	ck_assert_int_eq(smtp_sasl_split(":pw", user, pass), -1);
	ck_assert_int_eq(smtp_sasl_split("u:", user, pass), -1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("smtp_sasl");
	TCase *tc = tcase_create("smtp_sasl");
	SRunner *r;
	int failed;

	tcase_add_test(tc, options);
	tcase_add_test(tc, mechanism);
	tcase_add_test(tc, plain);
	tcase_add_test(tc, login);
	tcase_add_test(tc, fields);
	tcase_add_test(tc, credentials);
	suite_add_tcase(s, tc);
	r = srunner_create(s);
	srunner_run_all(r, CK_NORMAL);
	failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? 1 : 0;
}
