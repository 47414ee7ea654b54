/*
 * tests/unit/test_smtpc_addr.c: the SMTP client's address parameters
 * (queue/smtpc_addr.h): inet_protocols words, bind addresses by family, the
 * order smtp_address_preference gives a host's addresses, and the check's
 * "file:line: reason".
 */
#include <check.h>
#include <string.h>

#include "conf/conf.h"
#include "queue/queue.h"
#include "queue/smtpc_addr.h"

START_TEST(inet_protocols)
{
	int v4, v6;

	ck_assert_int_eq(smtpc_parse_inet_protocols("all", &v4, &v6), 0);
	ck_assert(v4 && v6);
	ck_assert_int_eq(smtpc_parse_inet_protocols("ipv4", &v4, &v6), 0);
	ck_assert(v4 && !v6);
	ck_assert_int_eq(smtpc_parse_inet_protocols(" IPv6 ", &v4, &v6), 0);
	ck_assert(!v4 && v6);
	ck_assert_int_eq(smtpc_parse_inet_protocols("ipv4, ipv6", &v4, &v6), 0);
	ck_assert(v4 && v6);
	ck_assert_int_eq(smtpc_parse_inet_protocols("ipv5", &v4, &v6), -1);
	ck_assert_int_eq(smtpc_parse_inet_protocols("", &v4, &v6), -1);
}
END_TEST

START_TEST(bind_addresses)
{
	struct smtpc_addr a;

	ck_assert_int_eq(smtpc_parse_bind("", AF_INET, &a), 0);
	ck_assert_int_eq(a.len, 0);
	ck_assert_int_eq(smtpc_parse_bind("192.0.2.7", AF_INET, &a), 0);
	ck_assert_int_eq(a.sa.ss_family, AF_INET);
	ck_assert_str_eq(a.text, "192.0.2.7");
	ck_assert_int_eq(smtpc_parse_bind("2001:db8::7", AF_INET6, &a), 0);
	ck_assert_int_eq(a.sa.ss_family, AF_INET6);
	ck_assert_int_eq(smtpc_parse_bind("2001:db8::7", AF_INET, &a), -1);
	ck_assert_int_eq(smtpc_parse_bind("192.0.2.7", AF_INET6, &a), -1);
	ck_assert_int_eq(smtpc_parse_bind("mail.example.com", AF_INET, &a), -1);
}
END_TEST

static void fill(struct smtpc_addr *a, const char *fams)
{
	int i;

	for (i = 0; fams[i]; i++) {
		memset(&a[i], 0, sizeof a[i]);
		a[i].sa.ss_family = fams[i] == '4' ? AF_INET : AF_INET6;
		a[i].text[0] = (char)('a' + i);   /* DNS order */
	}
}

static void order(const char *fams, int pref, int v6_first, char *out)
{
	struct smtpc_addr a[8];
	int i, n = (int)strlen(fams);

	fill(a, fams);
	smtpc_order_addrs(a, n, pref, v6_first);
	for (i = 0; i < n; i++)
		out[i] = a[i].text[0];
	out[n] = '\0';
}

START_TEST(preference)
{
	char o[9];

	order("4466", AF_INET6, 0, o);
	ck_assert_str_eq(o, "cdab");
	order("6464", AF_INET, 1, o);
	ck_assert_str_eq(o, "bdac");
	order("4466", 0, 0, o);    /* any: alternated, from the coin's family */
	ck_assert_str_eq(o, "acbd");
	order("4466", 0, 1, o);
	ck_assert_str_eq(o, "cadb");
	order("44466", 0, 1, o);
	ck_assert_str_eq(o, "daebc");
	order("444", AF_INET6, 1, o);   /* one family: as it was */
	ck_assert_str_eq(o, "abc");
}
END_TEST

START_TEST(check_names_the_line)
{
	struct conf_diags d = { 0 };
	struct conf *c = conf_load_text("myhostname = mx.example.com\n\nsmtp_bind_address6 = 10.0.0.1\n",
	    "frugal.conf", &d);
	char err[512];

	conf_diags_free(&d);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(smtpc_check_conf(c, err, sizeof err), -1);
	ck_assert_str_eq(err, "frugal.conf:3: smtp_bind_address6: \"10.0.0.1\" is not a numeric IPv6 address");
	conf_unref(c);
	c = conf_load_text("smtp_bind_address = 127.0.0.2\nsmtp_bind_address6 = ::1\n", "frugal.conf", &d);
	conf_diags_free(&d);
	ck_assert_int_eq(smtpc_check_conf(c, err, sizeof err), 0);
	conf_unref(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("smtpc_addr");
	TCase *tc = tcase_create("smtpc_addr");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, inet_protocols);
	tcase_add_test(tc, bind_addresses);
	tcase_add_test(tc, preference);
	tcase_add_test(tc, check_names_the_line);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
