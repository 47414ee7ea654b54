/*
 * tests/unit/test_dnsbl.c: the pure half of the DNS list restrictions
 * (smtpd/dnsbl.h): list arguments and reply filters, the reversed query
 * names (IPv4 octets, IPv6 nibbles, v4-mapped as IPv4), Postfix's reply
 * template expansion and the reply that results.
 */
#include <arpa/inet.h>
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd/dnsbl.h"

static const unsigned char *ip4(const char *a)
{
	static unsigned char b[4];
	inet_pton(AF_INET, a, b);
	return b;
}

START_TEST(site_and_filters)
{
	struct dnsbl_site s;
	char err[200];

	ck_assert_int_eq(dnsbl_site_parse("zen.example", &s, err, sizeof err), 0);
	ck_assert_str_eq(s.zone, "zen.example");
	ck_assert_int_eq(s.filtered, 0);
	ck_assert_int_eq(dnsbl_site_match(&s, ip4("127.0.0.9")), 1);   /* no filter: any answer */
	ck_assert_int_eq(dnsbl_site_parse("zen.example.=127.0.0.4", &s, err, sizeof err), 0);
	ck_assert_str_eq(s.zone, "zen.example");
	ck_assert_str_eq(s.arg, "zen.example.=127.0.0.4");
	ck_assert_int_eq(dnsbl_site_match(&s, ip4("127.0.0.4")), 1);
	ck_assert_int_eq(dnsbl_site_match(&s, ip4("127.0.0.2")), 0);
	ck_assert_int_eq(dnsbl_site_parse("bl.example=127.0.0.[2;4..7]", &s, err, sizeof err), 0);
	ck_assert_int_eq(dnsbl_site_match(&s, ip4("127.0.0.2")), 1);
	ck_assert_int_eq(dnsbl_site_match(&s, ip4("127.0.0.3")), 0);
	ck_assert_int_eq(dnsbl_site_match(&s, ip4("127.0.0.4")), 1);
	ck_assert_int_eq(dnsbl_site_match(&s, ip4("127.0.0.7")), 1);
	ck_assert_int_eq(dnsbl_site_match(&s, ip4("127.0.0.8")), 0);
	ck_assert_int_eq(dnsbl_site_match(&s, ip4("127.0.1.2")), 0);
	ck_assert_int_eq(dnsbl_site_parse("list.dnswl.example=127.0.[0..255].[1..3]", &s, err, sizeof err), 0);
	ck_assert_int_eq(dnsbl_site_match(&s, ip4("127.0.15.3")), 1);
	ck_assert_int_eq(dnsbl_site_match(&s, ip4("127.0.15.0")), 0);
	ck_assert_int_eq(dnsbl_site_match(&s, ip4("127.0.255.1")), 1);
	ck_assert_int_eq(dnsbl_site_parse("x.example=127.0.0.[255]", &s, err, sizeof err), 0);
	ck_assert_int_eq(dnsbl_site_match(&s, ip4("127.0.0.255")), 1);
	/* refused: they would match nothing, or everything, silently */
	ck_assert_int_eq(dnsbl_site_parse("", &s, err, sizeof err), -1);
	ck_assert_int_eq(dnsbl_site_parse("=127.0.0.2", &s, err, sizeof err), -1);
	ck_assert_int_eq(dnsbl_site_parse(".", &s, err, sizeof err), -1);
	ck_assert_int_eq(dnsbl_site_parse("a..example", &s, err, sizeof err), -1);
	ck_assert_int_eq(dnsbl_site_parse("x.example=", &s, err, sizeof err), -1);
	ck_assert_int_eq(dnsbl_site_parse("x.example=127.0.0", &s, err, sizeof err), -1);
	ck_assert_int_eq(dnsbl_site_parse("x.example=127.0.0.2.1", &s, err, sizeof err), -1);
	ck_assert_int_eq(dnsbl_site_parse("x.example=127.0.0.256", &s, err, sizeof err), -1);
	ck_assert_int_eq(dnsbl_site_parse("x.example=127.0.0.[4..2]", &s, err, sizeof err), -1);
	ck_assert_int_eq(dnsbl_site_parse("x.example=127.0.0.[2;", &s, err, sizeof err), -1);
	ck_assert_int_eq(dnsbl_site_parse("x.example=127.0.0.[]", &s, err, sizeof err), -1);
	ck_assert_int_eq(dnsbl_site_parse("x.example=127.0.0.0002", &s, err, sizeof err), -1);
	ck_assert_ptr_nonnull(strstr(err, "0002"));
}
END_TEST

START_TEST(query_names)
{
	struct sockaddr_in a4;
	struct sockaddr_in6 a6;
	char out[300];

	memset(&a4, 0, sizeof a4);
	a4.sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.99", &a4.sin_addr);
	ck_assert_int_eq(dnsbl_client_name((struct sockaddr *)&a4, "zen.example", out, sizeof out), 0);
	ck_assert_str_eq(out, "99.2.0.192.zen.example");
	memset(&a6, 0, sizeof a6);
	a6.sin6_family = AF_INET6;
	inet_pton(AF_INET6, "2001:db8:1:2::ab", &a6.sin6_addr);
	ck_assert_int_eq(dnsbl_client_name((struct sockaddr *)&a6, "bl.example", out, sizeof out), 0);
	ck_assert_str_eq(out, "b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.example");
	inet_pton(AF_INET6, "::ffff:192.0.2.7", &a6.sin6_addr);   /* a v4 client on a dual-stack socket */
	ck_assert_int_eq(dnsbl_client_name((struct sockaddr *)&a6, "bl.example", out, sizeof out), 0);
	ck_assert_str_eq(out, "7.2.0.192.bl.example");
	ck_assert_int_eq(dnsbl_client_name((struct sockaddr *)&a4, "zen.example", out, 10), -1);   /* no room */
	ck_assert_int_eq(dnsbl_domain_name("spam.example.", "rhs.example", out, sizeof out), 0);
	ck_assert_str_eq(out, "spam.example.rhs.example");
	ck_assert_int_eq(dnsbl_domain_name("", "rhs.example", out, sizeof out), -1);
	{
		char longname[250];
		memset(longname, 'a', sizeof longname - 1);
		longname[sizeof longname - 1] = '\0';
		ck_assert_int_eq(dnsbl_domain_name(longname, "rhs.example", out, sizeof out), -1);   /* over 255 */
	}
}
END_TEST

static const struct dnsbl_var vars[] = {
	{ "rbl_code", "554" }, { "rbl_class", "Client host" }, { "rbl_what", "192.0.2.1" },
	{ "rbl_domain", "zen.example" }, { "rbl_reason", "see https://zen.example/q?192.0.2.1" },
	{ "empty", "" }, { "null", NULL },
};
#define NV ((int)(sizeof vars / sizeof vars[0]))

static const char *x(const char *t)
{
	static char out[600];
	ck_assert_int_eq(dnsbl_expand(t, vars, NV, out, sizeof out), 0);
	return out;
}

START_TEST(template_expansion)
{
	char out[600], small[8];

	ck_assert_str_eq(x("$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using "
	    "$rbl_domain${rbl_reason?; $rbl_reason}"), "554 Service unavailable; Client host [192.0.2.1] "
	    "blocked using zen.example; see https://zen.example/q?192.0.2.1");
	ck_assert_str_eq(x("a${empty?; $rbl_reason}b"), "ab");
	ck_assert_str_eq(x("a${null?x}${null:y}b"), "ayb");
	ck_assert_str_eq(x("${rbl_code}-$(rbl_code)-$$-$unknown-"), "554-554-$--");
	ck_assert_str_eq(x("${rbl_reason:none}"), "");
	ck_assert_str_eq(x("${rbl_reason?{yes}:{no}}${empty?{yes}:{no}}"), "yesno");
	ck_assert_str_eq(x("${rbl_reason?{ (${rbl_domain?{$rbl_domain}})}}"), " (zen.example)");
	ck_assert_str_eq(x("${empty:{a {nested} b}}"), "a {nested} b");
	/* bad templates: -1, never a read past the end */
	ck_assert_int_eq(dnsbl_expand("${rbl_code", vars, NV, out, sizeof out), -1);
	ck_assert_int_eq(dnsbl_expand("${rbl_code?x", vars, NV, out, sizeof out), -1);
	ck_assert_int_eq(dnsbl_expand("${}", vars, NV, out, sizeof out), -1);
	ck_assert_int_eq(dnsbl_expand("trailing $", vars, NV, out, sizeof out), -1);
	ck_assert_int_eq(dnsbl_expand("${rbl_code!x}", vars, NV, out, sizeof out), -1);
	ck_assert_int_eq(dnsbl_expand("${empty:{a}:{b}}", vars, NV, out, sizeof out), -1);
	ck_assert_int_eq(dnsbl_expand("${a?${a?${a?${a?${a?${a?${a?${a?${a?${a?x}}}}}}}}}}", vars, NV, out,
	    sizeof out), 0);   /* unknown $a: nothing is expanded deeper */
	ck_assert_int_eq(dnsbl_expand("${rbl_code?${rbl_code?${rbl_code?${rbl_code?${rbl_code?${rbl_code?"
	    "${rbl_code?${rbl_code?${rbl_code?${rbl_code?x}}}}}}}}}}", vars, NV, out, sizeof out), -1);   /* too deep */
	/* cut at the buffer, still terminated */
	ck_assert_int_eq(dnsbl_expand("$rbl_reason", vars, NV, small, sizeof small), 0);
	ck_assert_str_eq(small, "see htt");
}
END_TEST

START_TEST(replies)
{
	char out[600];

	ck_assert_int_eq(dnsbl_reply("554 Service unavailable; blocked", out, sizeof out), 554);
	ck_assert_str_eq(out, "554 5.7.1 Service unavailable; blocked");
	ck_assert_int_eq(dnsbl_reply("450 try later", out, sizeof out), 450);
	ck_assert_str_eq(out, "450 4.7.1 try later");
	ck_assert_int_eq(dnsbl_reply("521 5.7.0 Go away", out, sizeof out), 521);   /* its own enhanced code */
	ck_assert_str_eq(out, "521 5.7.0 Go away");
	ck_assert_int_eq(dnsbl_reply("550 4.7.0 class mismatch", out, sizeof out), 550);
	ck_assert_str_eq(out, "550 5.7.0 class mismatch");   /* Postfix's smtpd_dsn_fix: the reply's class */
	ck_assert_int_eq(dnsbl_reply("554 listed\r\n250 ok", out, sizeof out), 554);   /* a TXT with CR LF */
	ck_assert_str_eq(out, "554 5.7.1 listed  250 ok");
	ck_assert_int_eq(dnsbl_reply("554", out, sizeof out), 554);
	ck_assert_str_eq(out, "554 5.7.1 Service unavailable");   /* Postfix's text when none is left */
	ck_assert_int_eq(dnsbl_reply("421 4.7.0", out, sizeof out), 421);
	ck_assert_str_eq(out, "421 4.7.0 Service unavailable");
	ck_assert_int_eq(dnsbl_reply("554 5.7.1234 x", out, sizeof out), 554);   /* no enhanced code: text */
	ck_assert_str_eq(out, "554 5.7.1 5.7.1234 x");
	ck_assert_int_eq(dnsbl_reply("250 ok", out, sizeof out), -1);
	ck_assert_int_eq(dnsbl_reply("Service unavailable", out, sizeof out), -1);
	ck_assert_int_eq(dnsbl_reply("55 x", out, sizeof out), -1);
	ck_assert_int_eq(dnsbl_reply("5544 x", out, sizeof out), -1);
	ck_assert_int_eq(dnsbl_reply("", out, sizeof out), -1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dnsbl");
	TCase *tc = tcase_create("dnsbl");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, site_and_filters);
	tcase_add_test(tc, query_names);
	tcase_add_test(tc, template_expansion);
	tcase_add_test(tc, replies);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
