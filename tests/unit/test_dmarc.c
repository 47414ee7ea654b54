/*
 * tests/unit/test_dmarc.c: smtpd/dmarc.c and the pure part of
 * smtpd/authres.c. The organizational domain from the Public Suffix List
 * (normal, wildcard and exception rules, private suffixes, a name that is
 * a suffix itself; the real list Debian ships where it is installed),
 * alignment (strict, relaxed, across a public suffix), DMARC records (the
 * v=DMARC1 rule, p/sp/adkim/aspf/pct, the rua fallback of 6.6.3), and
 * which Authentication-Results: values claim our authserv-id. All memory
 * returned.
 */
#include <check.h>
#include <string.h>
#include <unistd.h>

#include "core/mem.h"
#include "smtpd/authres.h"
#include "smtpd/dmarc.h"

static const char *LIST =
	"// comment\n"
	"com\n"
	"uk\n"
	"co.uk\n"
	"jp\n"
	"*.kawasaki.jp\n"
	"!city.kawasaki.jp\n"
	"*.ck\n"
	"!www.ck\n"
	"  github.io   trailing words\n"
	"example.\n"
	"\n";

static const char *org(const struct dmarc_psl *p, const char *name)
{
	static char out[256];

	return dmarc_org_domain(p, name, out, sizeof out) == 0 ? out : NULL;
}

START_TEST(org_domain)
{
	size_t before = mem_in_use();
	struct dmarc_psl *p = dmarc_psl_parse(LIST, strlen(LIST));

	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(dmarc_psl_rules(p), 10);
	ck_assert_str_eq(org(p, "mail.Example.COM."), "example.com");
	ck_assert_str_eq(org(p, "example.com"), "example.com");
	ck_assert_str_eq(org(p, "a.b.example.co.uk"), "example.co.uk");
	ck_assert_str_eq(org(p, "co.uk"), "co.uk");                 /* a suffix is its own */
	ck_assert_str_eq(org(p, "com"), "com");
	ck_assert_str_eq(org(p, "x.kawasaki.jp"), "x.kawasaki.jp");  /* *.kawasaki.jp: x.kawasaki.jp is a suffix */
	ck_assert_str_eq(org(p, "a.x.kawasaki.jp"), "a.x.kawasaki.jp");
	ck_assert_str_eq(org(p, "b.a.x.kawasaki.jp"), "a.x.kawasaki.jp");
	ck_assert_str_eq(org(p, "a.b.city.kawasaki.jp"), "city.kawasaki.jp");   /* the exception */
	ck_assert_str_eq(org(p, "foo.bar.ck"), "foo.bar.ck");
	ck_assert_str_eq(org(p, "a.www.ck"), "www.ck");
	ck_assert_str_eq(org(p, "evil.github.io"), "evil.github.io");
	ck_assert_str_eq(org(p, "x.evil.github.io"), "evil.github.io");
	ck_assert_str_eq(org(p, "a.b.unlisted"), "b.unlisted");     /* the implicit "*" */
	ck_assert_str_eq(org(p, "a.example"), "a.example");         /* "example." read as "example" */
	ck_assert_ptr_null(org(p, ""));
	ck_assert_ptr_null(org(p, "a..b.com"));
	ck_assert_ptr_null(org(p, "a.b.."));   /* found by fuzz_dmarc */
	ck_assert_ptr_null(org(p, "a b.com"));
	ck_assert_ptr_null(org(p, "user@example.com"));
	/* no list: the last two labels */
	ck_assert_str_eq(org(NULL, "a.b.example.co.uk"), "co.uk");
	/* alignment */
	ck_assert_int_eq(dmarc_aligned(p, "example.com", "EXAMPLE.com.", 1), 1);
	ck_assert_int_eq(dmarc_aligned(p, "mail.example.com", "example.com", 1), 0);
	ck_assert_int_eq(dmarc_aligned(p, "mail.example.com", "example.com", 0), 1);
	ck_assert_int_eq(dmarc_aligned(p, "a.example.com", "b.example.com", 0), 1);
	ck_assert_int_eq(dmarc_aligned(p, "a.co.uk", "co.uk", 0), 0);          /* across the suffix: never */
	ck_assert_int_eq(dmarc_aligned(p, "a.co.uk", "b.co.uk", 0), 0);
	ck_assert_int_eq(dmarc_aligned(p, "evil.github.io", "victim.github.io", 0), 0);
	ck_assert_int_eq(dmarc_aligned(p, "", "example.com", 0), 0);
	dmarc_psl_free(p);
	ck_assert_uint_eq(mem_in_use(), before);
}
END_TEST

START_TEST(debian_list)
{
	const char *path = "/usr/share/publicsuffix/public_suffix_list.dat";
	char err[256];
	struct dmarc_psl *p;

	if (access(path, R_OK) != 0)
		return;   /* Debian's publicsuffix is not installed here */
	p = dmarc_psl_load(path, err, sizeof err);
	ck_assert_msg(p != NULL, "%s", err);
	ck_assert_int_gt(dmarc_psl_rules(p), 5000);
	ck_assert_uint_lt(dmarc_psl_bytes(p), 512 * 1024);
	ck_assert_str_eq(org(p, "mail.example.co.uk"), "example.co.uk");
	ck_assert_str_eq(org(p, "x.y.city.kawasaki.jp"), "city.kawasaki.jp");
	ck_assert_str_eq(org(p, "a.b.x.kawasaki.jp"), "b.x.kawasaki.jp");
	ck_assert_str_eq(org(p, "www.bbc.co.uk"), "bbc.co.uk");
	dmarc_psl_free(p);
	ck_assert_ptr_null(dmarc_psl_load("/nonexistent/list", err, sizeof err));
}
END_TEST

static int rec(const char *t, struct dmarc_record *r)
{
	return dmarc_record_parse(t, strlen(t), r);
}

START_TEST(records)
{
	struct dmarc_record r;

	ck_assert_int_eq(rec("v=DMARC1; p=reject", &r), 0);
	ck_assert_int_eq(r.p, DMARC_P_REJECT);
	ck_assert_int_eq(r.sp, DMARC_P_REJECT);
	ck_assert_int_eq(r.has_sp, 0);
	ck_assert_int_eq(r.pct, 100);
	ck_assert_int_eq(r.adkim_strict, 0);
	ck_assert_int_eq(rec("v = DMARC1 ;p=Quarantine; sp=none; adkim=s; aspf=S; pct=20; fo=1; x=y;", &r), 0);
	ck_assert_int_eq(r.p, DMARC_P_QUARANTINE);
	ck_assert_int_eq(r.sp, DMARC_P_NONE);
	ck_assert_int_eq(r.has_sp, 1);
	ck_assert_int_eq(r.adkim_strict, 1);
	ck_assert_int_eq(r.aspf_strict, 1);
	ck_assert_int_eq(r.pct, 20);
	/* bad values fall back to the defaults */
	ck_assert_int_eq(rec("v=DMARC1; p=none; adkim=x; pct=101", &r), 0);
	ck_assert_int_eq(r.adkim_strict, 0);
	ck_assert_int_eq(r.pct, 100);
	/* not DMARC records: another TXT record at the name */
	ck_assert_int_eq(rec("v=spf1 -all", &r), -1);
	ck_assert_int_eq(rec("p=reject; v=DMARC1", &r), -1);
	ck_assert_int_eq(rec("v=DMARC2; p=reject", &r), -1);
	ck_assert_int_eq(rec("v=dmarc1; p=reject", &r), -1);
	ck_assert_int_eq(rec("", &r), -1);
	/* 6.6.3 step 6: no valid p: p=none with an rua, else no policy */
	ck_assert_int_eq(rec("v=DMARC1; p=bogus", &r), -2);
	ck_assert_int_eq(rec("v=DMARC1", &r), -2);
	ck_assert_int_eq(rec("v=DMARC1; rua=mailto:d@example.com", &r), 0);
	ck_assert_int_eq(r.p, DMARC_P_NONE);
	ck_assert_int_eq(rec("v=DMARC1; p=reject; sp=bogus", &r), -2);
	ck_assert_str_eq(dmarc_policy_name(DMARC_P_QUARANTINE), "quarantine");
}
END_TEST

static int claims(const char *v)
{
	return authres_claims_id(v, strlen(v), "mx.example.org");
}

START_TEST(claims_id)
{
	ck_assert_int_eq(claims(" mx.example.org; dkim=pass"), 1);
	ck_assert_int_eq(claims(" MX.Example.ORG; dkim=pass"), 1);
	ck_assert_int_eq(claims("mx.example.org;"), 1);
	ck_assert_int_eq(claims(" mx.example.org 1; spf=pass"), 1);          /* with a version */
	ck_assert_int_eq(claims("\n\t(a (nested) comment) mx.example.org.; x"), 1);
	ck_assert_int_eq(claims(" \"mx.example.org\"; x"), 1);
	ck_assert_int_eq(claims(" mx.example.org"), 1);
	ck_assert_int_eq(claims(" other.example.org; dkim=pass mx.example.org"), 0);
	ck_assert_int_eq(claims(" mx.example.org.evil; x"), 0);
	ck_assert_int_eq(claims(" xmx.example.org; x"), 0);
	ck_assert_int_eq(claims(""), 0);
	ck_assert_int_eq(claims(" (unterminated mx.example.org"), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dmarc");
	TCase *tc = tcase_create("pure");
	SRunner *r;
	int failed;

	tcase_add_test(tc, org_domain);
	tcase_add_test(tc, debian_list);
	tcase_add_test(tc, records);
	tcase_add_test(tc, claims_id);
	suite_add_tcase(s, tc);
	r = srunner_create(s);
	srunner_run_all(r, CK_NORMAL);
	failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? 1 : 0;
}
