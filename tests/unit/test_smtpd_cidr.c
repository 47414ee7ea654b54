/* tests/unit/test_smtpd_cidr.c: mynetworks parsing and matching (smtpd/restrict.c). */
#include <arpa/inet.h>
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd/smtpd_int.h"

static struct sockaddr_storage v4(const char *a)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	ss.ss_family = AF_INET;
	inet_pton(AF_INET, a, &((struct sockaddr_in *)&ss)->sin_addr);
	return ss;
}

static struct sockaddr_storage v6(const char *a)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	ss.ss_family = AF_INET6;
	inet_pton(AF_INET6, a, &((struct sockaddr_in6 *)&ss)->sin6_addr);
	return ss;
}

START_TEST(default_mynetworks)
{
	struct cidr_list l;
	char err[128];
	struct sockaddr_storage a;

	ck_assert_int_eq(cidr_list_parse("127.0.0.0/8 [::1]/128", &l, err, sizeof err), 0);
	ck_assert_int_eq(l.n, 2);
	a = v4("127.1.2.3");
	ck_assert_int_eq(cidr_list_match(&l, &a), 1);
	a = v4("128.0.0.1");
	ck_assert_int_eq(cidr_list_match(&l, &a), 0);
	a = v6("::1");
	ck_assert_int_eq(cidr_list_match(&l, &a), 1);
	a = v6("::2");
	ck_assert_int_eq(cidr_list_match(&l, &a), 0);
	a = v6("::ffff:127.0.0.1");
	ck_assert_int_eq(cidr_list_match(&l, &a), 1);
	cidr_list_free(&l);
}
END_TEST

START_TEST(odd_prefixes_and_hosts)
{
	struct cidr_list l;
	char err[128];
	struct sockaddr_storage a;

	ck_assert_int_eq(cidr_list_parse("192.168.1.64/26, 10.0.0.7", &l, err, sizeof err), 0);
	a = v4("192.168.1.127");
	ck_assert_int_eq(cidr_list_match(&l, &a), 1);
	a = v4("192.168.1.128");
	ck_assert_int_eq(cidr_list_match(&l, &a), 0);
	a = v4("10.0.0.7");
	ck_assert_int_eq(cidr_list_match(&l, &a), 1);
	a = v4("10.0.0.8");
	ck_assert_int_eq(cidr_list_match(&l, &a), 0);
	cidr_list_free(&l);
	ck_assert_int_eq(cidr_list_parse("", &l, err, sizeof err), 0);
	ck_assert_int_eq(l.n, 0);
	a = v4("127.0.0.1");
	ck_assert_int_eq(cidr_list_match(&l, &a), 0);
	cidr_list_free(&l);
}
END_TEST

START_TEST(bad_networks)
{
	struct cidr_list l;
	char err[128];

	ck_assert_int_eq(cidr_list_parse("127.0.0.0/33", &l, err, sizeof err), -1);
	ck_assert_ptr_nonnull(strstr(err, "127.0.0.0/33"));
	ck_assert_int_eq(cidr_list_parse("not-an-address", &l, err, sizeof err), -1);
	ck_assert_int_eq(cidr_list_parse("[::1/128", &l, err, sizeof err), -1);
	ck_assert_int_eq(cidr_list_parse("10.0.0.0/", &l, err, sizeof err), -1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("smtpd_cidr");
	TCase *tc = tcase_create("cidr");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, default_mynetworks);
	tcase_add_test(tc, odd_prefixes_and_hosts);
	tcase_add_test(tc, bad_networks);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
