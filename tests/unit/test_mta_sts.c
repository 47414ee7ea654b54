/*
 * tests/unit/test_mta_sts.c: MTA-STS's pure parsers (queue/mta_sts.h): the
 * TXT record, the policy file (RFC 8461 3.2, its examples and the edges the
 * grammar sets), the MX pattern match (a wildcard is one label), and the HTTP
 * response (200 only, text/plain, Content-Length, chunked or to the close,
 * 64 KiB at most, redirects refused).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/mta_sts.h"

static int txt(const char *s, char *id)
{
	return mta_sts_txt_parse(s, strlen(s), id);
}

START_TEST(txt_record)
{
	char id[MTA_STS_ID_MAX + 1];

	ck_assert_int_eq(txt("v=STSv1; id=20160831085700Z;", id), 0);
	ck_assert_str_eq(id, "20160831085700Z");
	ck_assert_int_eq(txt("v=STSv1;id=abc", id), 0);
	ck_assert_str_eq(id, "abc");
	ck_assert_int_eq(txt("v=STSv1; ext=1; id=X1 ;", id), 0);
	ck_assert_str_eq(id, "X1");
	ck_assert_int_eq(txt("v=spf1 -all", id), -2);               /* another record at that name */
	ck_assert_int_eq(txt("id=1; v=STSv1;", id), -2);             /* v must be first */
	ck_assert_int_eq(txt("v=STSv1;", id), -1);                   /* no id */
	ck_assert_int_eq(txt("v=STSv1; id=;", id), -1);
	ck_assert_int_eq(txt("v=STSv1; id=a-b;", id), -1);           /* alphanumerics only */
	ck_assert_int_eq(txt("v=STSv1; id=123456789012345678901234567890123;", id), -1);   /* 33 */
	ck_assert_int_eq(txt("v=STSv1; id=12345678901234567890123456789012;", id), 0);     /* 32 */
	ck_assert_int_eq(txt("v=STSv1; id=1; id=2;", id), -1);
	ck_assert_int_eq(txt("v=STSv10; id=1;", id), -1);
}
END_TEST

static int pol(const char *s, struct mta_sts_policy *p)
{
	char why[128];
	return mta_sts_policy_parse(s, strlen(s), p, why, sizeof why);
}

START_TEST(policy_file)
{
	struct mta_sts_policy p;

	/* RFC 8461 3.2's example, CRLF */
	ck_assert_int_eq(pol("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
	    "mx: backupmx.example.com\r\nmax_age: 604800\r\n", &p), 0);
	ck_assert_int_eq(p.mode, MTA_STS_ENFORCE);
	ck_assert_int_eq(p.max_age, 604800);
	ck_assert_int_eq(p.nmx, 3);
	ck_assert(mta_sts_mx_match(&p, "mail.example.com"));
	ck_assert(mta_sts_mx_match(&p, "MAIL.Example.COM."));
	ck_assert(mta_sts_mx_match(&p, "mx1.example.net"));
	ck_assert(!mta_sts_mx_match(&p, "a.b.example.net"));        /* the wildcard is one label */
	ck_assert(!mta_sts_mx_match(&p, "example.net"));
	ck_assert(!mta_sts_mx_match(&p, ".example.net"));
	ck_assert(!mta_sts_mx_match(&p, "xmail.example.com"));
	ck_assert(!mta_sts_mx_match(&p, "mail.example.com.evil"));
	mta_sts_policy_free(&p);
	/* LF, no final newline, spaces around the colon, an unknown key, none without mx */
	ck_assert_int_eq(pol("version : STSv1\nmode:none\nmax_age:  0 \nfuture_key: whatever it says", &p), 0);
	ck_assert_int_eq(p.mode, MTA_STS_NONE);
	ck_assert_int_eq(p.nmx, 0);
	mta_sts_policy_free(&p);
	/* max_age over a year is clamped; 10 digits at most */
	ck_assert_int_eq(pol("version: STSv1\nmode: testing\nmx: a.b\nmax_age: 9999999999\n", &p), 0);
	ck_assert_int_eq(p.max_age, MTA_STS_MAX_AGE);
	mta_sts_policy_free(&p);
	ck_assert_int_eq(pol("version: STSv1\nmode: testing\nmx: a.b\nmax_age: 12345678901\n", &p), -1);
	/* required fields and strictness */
	ck_assert_int_eq(pol("mode: enforce\nmx: a.b\nmax_age: 1\n", &p), -1);
	ck_assert_int_eq(pol("version: STSv1\nmx: a.b\nmax_age: 1\n", &p), -1);
	ck_assert_int_eq(pol("version: STSv1\nmode: enforce\nmx: a.b\n", &p), -1);
	ck_assert_int_eq(pol("version: STSv1\nmode: enforce\nmax_age: 1\n", &p), -1);   /* enforce needs mx */
	ck_assert_int_eq(pol("version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n", &p), -1);
	ck_assert_int_eq(pol("version: STSv1\nmode: Enforce\nmx: a.b\nmax_age: 1\n", &p), -1);
	ck_assert_int_eq(pol("version: STSv1\nmode: enforce\nmode: none\nmx: a.b\nmax_age: 1\n", &p), -1);
	ck_assert_int_eq(pol("version: STSv1\nmode: enforce\nmx: a..b\nmax_age: 1\n", &p), -1);
	ck_assert_int_eq(pol("version: STSv1\nmode: enforce\nmx: a.*.b\nmax_age: 1\n", &p), -1);
	ck_assert_int_eq(pol("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n", &p), -1);
	ck_assert_int_eq(pol("version: STSv1\nmode enforce\nmx: a.b\nmax_age: 1\n", &p), -1);
	ck_assert_int_eq(pol("version: STSv1\rmode: enforce\nmx: a.b\nmax_age: 1\n", &p), -1);    /* bare CR */
}
END_TEST

START_TEST(policy_mx_bound)
{
	struct mta_sts_policy p;
	char buf[4096] = "version: STSv1\nmode: enforce\nmax_age: 60\n";
	int i;

	for (i = 0; i < MTA_STS_MX_MAX; i++)
		sprintf(buf + strlen(buf), "mx: mx%d.example.org\n", i);
	ck_assert_int_eq(pol(buf, &p), 0);
	ck_assert_int_eq(p.nmx, MTA_STS_MX_MAX);
	ck_assert(mta_sts_mx_match(&p, "mx31.example.org"));
	mta_sts_policy_free(&p);
	strcat(buf, "mx: one.too.many\n");
	ck_assert_int_eq(pol(buf, &p), -1);
}
END_TEST

static int http(const char *s, int eof, char *body, size_t *blen, char *why)
{
	return mta_sts_http_parse(s, strlen(s), eof, body, blen, why, 200);
}

START_TEST(http_response)
{
	static char body[MTA_STS_BODY_MAX];
	char why[200], *big;
	size_t blen;
	const char *ok = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello";

	ck_assert_int_eq(mta_sts_http_parse(ok, strlen(ok) - 1, 0, body, &blen, why, sizeof why), 0);
	ck_assert_int_eq(http(ok, 0, body, &blen, why), 1);
	ck_assert_int_eq(blen, 5);
	ck_assert(memcmp(body, "hello", 5) == 0);
	ck_assert_int_eq(mta_sts_http_parse(ok, strlen(ok) - 1, 1, body, &blen, why, sizeof why), -1);   /* cut */
	ck_assert_int_eq(http("HTTP/1.1 200 OK\r\ncontent-type: TEXT/PLAIN\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n", 0, body, &blen, why), 1);
	ck_assert_int_eq(blen, 5);
	ck_assert(memcmp(body, "abcde", 5) == 0);
	ck_assert_int_eq(http("HTTP/1.0 200 OK\nContent-Type: text/plain\n\nto the close", 0, body, &blen, why), 0);
	ck_assert_int_eq(http("HTTP/1.0 200 OK\nContent-Type: text/plain\n\nto the close", 1, body, &blen, why), 1);
	ck_assert_int_eq(blen, 12);
	ck_assert_int_eq(http("HTTP/1.1 301 Moved\r\nLocation: https://x/\r\nContent-Type: text/plain\r\n\r\n", 0, body,
	    &blen, why), -1);
	ck_assert_str_eq(why, "HTTP status 301 (redirects are not followed)");
	ck_assert_int_eq(http("HTTP/1.1 404 Not Found\r\n\r\n", 0, body, &blen, why), -1);
	ck_assert_int_eq(http("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n", 0, body, &blen, why), -1);
	ck_assert_str_eq(why, "Content-Type text/html is not text/plain");
	ck_assert_int_eq(http("HTTP/1.1 200 OK\r\n\r\n", 1, body, &blen, why), -1);
	ck_assert_int_eq(http("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 65537\r\n\r\n", 0, body,
	    &blen, why), -1);
	ck_assert_str_eq(why, "policy body too large");
	ck_assert_int_eq(http("SMTP/1.1 200 OK\r\n\r\n", 0, body, &blen, why), -1);
	/* a body to the close, one byte over 64 KiB */
	big = malloc(100 + MTA_STS_BODY_MAX + 2);
	strcpy(big, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n");
	memset(big + strlen(big), 'x', MTA_STS_BODY_MAX + 1);
	big[45 + MTA_STS_BODY_MAX + 1] = '\0';
	ck_assert_int_eq(http(big, 1, body, &blen, why), -1);
	free(big);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("mta_sts");
	TCase *tc = tcase_create("mta_sts");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, txt_record);
	tcase_add_test(tc, policy_file);
	tcase_add_test(tc, policy_mx_bound);
	tcase_add_test(tc, http_response);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
