/*
 * tests/unit/test_smtp_generic.c: smtp_generic_maps (queue/smtp_generic.h):
 * generic(5)'s lookup order and result forms on single addresses, and the
 * address headers rewritten while every other byte stays as it was.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "conf/conf.h"
#include "queue/smtp_generic.h"

static struct smtp_generic *open_with(const char *maps)
{
	char text[2048], err[256];
	struct conf_diags d = { 0 };
	struct conf *c;
	struct smtp_generic *g;

	snprintf(text, sizeof text, "myhostname = mx.example.com\nmydestination = $myhostname, example.com\n"
	    "recipient_delimiter = +\nsmtp_generic_maps = %s\n", maps);
	c = conf_load_text(text, "test.cf", &d);
	conf_diags_free(&d);
	ck_assert_ptr_nonnull(c);
	g = smtp_generic_open(c, err, sizeof err);
	ck_assert_msg(g != NULL, "%s", err);
	conf_unref(c);
	return g;
}

static const char *map1(struct smtp_generic *g, const char *addr)
{
	static char out[1024];
	int rc = smtp_generic_addr(g, addr, out, sizeof out);

	ck_assert_int_ge(rc, 0);
	return rc == 1 ? out : addr;
}

START_TEST(lookup_order_and_forms)
{
	struct smtp_generic *g = open_with("inline:{ joe@example.com=joe@isp.net, joe=joseph@isp.net, "
	    "@example.com=catchall@isp.net, @corp.example=@isp.net, bare@remote.example=plain, "
	    "{ lists@example.com = first@isp.net, second@isp.net } }");

	ck_assert_str_eq(map1(g, "joe@example.com"), "joe@isp.net");        /* user@domain first */
	ck_assert_str_eq(map1(g, "joe@mx.example.com"), "joseph@isp.net");  /* user: a local domain */
	ck_assert_str_eq(map1(g, "joe@remote.example"), "joe@remote.example"); /* user: not for others */
	ck_assert_str_eq(map1(g, "ann@example.com"), "catchall@isp.net");   /* @domain last */
	ck_assert_str_eq(map1(g, "ann@corp.example"), "ann@isp.net");       /* "@other" keeps the user */
	ck_assert_str_eq(map1(g, "bare@remote.example"), "plain@mx.example.com"); /* @$myorigin */
	ck_assert_str_eq(map1(g, "lists@example.com"), "first@isp.net");    /* one to one: the first */
	ck_assert_str_eq(map1(g, "JOE@EXAMPLE.COM"), "joe@isp.net");        /* keys without case */
	/* an extension: user+ext@domain, user@domain...; the unmatched extension is not kept */
	ck_assert_str_eq(map1(g, "joe+news@example.com"), "joe@isp.net");
	ck_assert_str_eq(map1(g, ""), "");                                  /* the null sender */
	ck_assert_str_eq(map1(g, "x@elsewhere.example"), "x@elsewhere.example");
	smtp_generic_unref(g);
}
END_TEST

START_TEST(result_too_long_is_an_error)
{
	struct smtp_generic *g = open_with("inline:{ a@example.com=very.long.name@isp.net }");
	char out[8];

	ck_assert_int_eq(smtp_generic_addr(g, "a@example.com", out, sizeof out), -1);
	smtp_generic_unref(g);
}
END_TEST

static int hdr(struct smtp_generic *g, const char *in, char *out, size_t cap)
{
	size_t n = 0;
	int rc = smtp_generic_header(g, in, strlen(in), out, cap - 1, &n);

	out[rc == 1 ? n : 0] = '\0';
	return rc;
}

START_TEST(headers)
{
	struct smtp_generic *g = open_with("inline:{ joe@example.com=joe@isp.net, @corp.example=@isp.net }");
	char out[1024];

	ck_assert_int_eq(hdr(g, "From: \"Joe, Sr.\" <joe@example.com> (home)\n", out, sizeof out), 1);
	ck_assert_str_eq(out, "From: \"Joe, Sr.\" <joe@isp.net> (home)\n");
	ck_assert_int_eq(hdr(g, "To: a@corp.example,\n\tJoe <joe@example.com>, b@other.example\n", out, sizeof out), 1);
	ck_assert_str_eq(out, "To: a@isp.net,\n\tJoe <joe@isp.net>, b@other.example\n");
	ck_assert_int_eq(hdr(g, "cc: team: joe@example.com, x@corp.example;\n", out, sizeof out), 1);
	ck_assert_str_eq(out, "cc: team: joe@isp.net, x@isp.net;\n");
	ck_assert_int_eq(hdr(g, "Reply-To: joe@example.com\n", out, sizeof out), 1);
	ck_assert_str_eq(out, "Reply-To: joe@isp.net\n");
	/* not address headers, or nothing to change */
	ck_assert_int_eq(hdr(g, "Subject: joe@example.com\n", out, sizeof out), 0);
	ck_assert_int_eq(hdr(g, "Message-ID: <1@corp.example>\n", out, sizeof out), 0);
	ck_assert_int_eq(hdr(g, "To: nobody@other.example\n", out, sizeof out), 0);
	/* no room for the result: an error, never a truncated header */
	ck_assert_int_eq(hdr(g, "From: joe@example.com\n", out, 12), -1);
	smtp_generic_unref(g);
}
END_TEST

START_TEST(empty_maps_rewrite_nothing)
{
	struct smtp_generic *g = open_with("");
	char out[256];

	ck_assert_str_eq(map1(g, "joe@example.com"), "joe@example.com");
	ck_assert_int_eq(hdr(g, "From: joe@example.com\n", out, sizeof out), 0);
	ck_assert_ptr_eq(smtp_generic_ref(g), g);
	smtp_generic_unref(g);
	smtp_generic_unref(g);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("smtp_generic");
	TCase *tc = tcase_create("smtp_generic");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, lookup_order_and_forms);
	tcase_add_test(tc, result_too_long_is_an_error);
	tcase_add_test(tc, headers);
	tcase_add_test(tc, empty_maps_rewrite_nothing);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
