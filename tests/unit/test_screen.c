/*
 * tests/unit/test_screen.c: smtpd/screen.h's pure parts: the
 * postscreen_dnsbl_sites entry (site=filter*weight), the pass cache's
 * bound and eviction, and its file (round trip, corrupt files ignored).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "smtpd/screen.h"

static struct screen_rec rec(const char *a, long long g, long long d)
{
	struct screen_rec r;
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof ss);
	ss.ss_family = AF_INET;
	ck_assert_int_eq(inet_pton(AF_INET, a, &((struct sockaddr_in *)&ss)->sin_addr), 1);
	screen_cache_key(&ss, r.key);
	r.greet_until = g;
	r.dnsbl_until = d;
	return r;
}

START_TEST(sites)
{
	struct dnsbl_site s;
	int w;
	char err[200];
	unsigned char a2[4] = { 127, 0, 0, 2 }, a11[4] = { 127, 0, 0, 11 }, a12[4] = { 127, 0, 0, 12 };

	ck_assert_int_eq(screen_site_parse("zen.example=127.0.0.[2..11]*3", &s, &w, err, sizeof err), 0);
	ck_assert_str_eq(s.zone, "zen.example");
	ck_assert_int_eq(w, 3);
	ck_assert(dnsbl_site_match(&s, a2) && dnsbl_site_match(&s, a11) && !dnsbl_site_match(&s, a12));
	ck_assert_int_eq(screen_site_parse("list.example", &s, &w, err, sizeof err), 0);
	ck_assert_int_eq(w, 1);
	ck_assert(dnsbl_site_match(&s, a12));
	ck_assert_int_eq(screen_site_parse("allow.example=127.0.0.[2;9]*-5", &s, &w, err, sizeof err), 0);
	ck_assert_int_eq(w, -5);
	ck_assert(dnsbl_site_match(&s, a2) && !dnsbl_site_match(&s, a11));
	ck_assert_int_eq(screen_site_parse("x.example*", &s, &w, err, sizeof err), -1);
	ck_assert_int_eq(screen_site_parse("x.example*2x", &s, &w, err, sizeof err), -1);
	ck_assert_int_eq(screen_site_parse("*2", &s, &w, err, sizeof err), -1);
	ck_assert_int_eq(screen_site_parse("x.example=127.0.0.[3..2]", &s, &w, err, sizeof err), -1);
}
END_TEST

START_TEST(cache_bound)
{
	struct screen_cache *c = screen_cache_new(64);
	struct screen_rec r, got;
	char a[32];
	int i, found = 0;

	ck_assert_ptr_nonnull(c);
	r = rec("192.0.2.1", 1000, 0);
	screen_cache_put(c, &r, 10);
	ck_assert(screen_cache_get(c, r.key, &got));
	ck_assert_int_eq(got.greet_until, 1000);
	/* churn from 10,000 addresses: the table never grows */
	for (i = 0; i < 10000; i++) {
		snprintf(a, sizeof a, "10.%d.%d.1", i / 256, i % 256);
		r = rec(a, 2000 + i, 0);
		screen_cache_put(c, &r, 10);
	}
	ck_assert_uint_le(screen_cache_used(c), 64);
	/* the newest records are the ones kept (the one expiring first goes) */
	for (i = 9996; i < 10000; i++) {   /* 4: a set holds 4, so no seed can split them out */
		snprintf(a, sizeof a, "10.%d.%d.1", i / 256, i % 256);
		r = rec(a, 0, 0);
		found += screen_cache_get(c, r.key, &got);
	}
	ck_assert_int_eq(found, 4);
	screen_cache_free(c);
	ck_assert(screen_cache_bytes(16384) < 1024 * 1024);
}
END_TEST

START_TEST(cache_file)
{
	char path[] = "/tmp/frugal-test-screen-XXXXXX", err[300];
	struct screen_cache *c = screen_cache_new(64), *d = screen_cache_new(64);
	struct screen_rec r, got;
	FILE *f;
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	close(fd);
	r = rec("192.0.2.7", 5000, 3000);
	screen_cache_put(c, &r, 100);
	r = rec("192.0.2.8", 50, 0);   /* expired at save time: left out */
	screen_cache_put(c, &r, 10);
	ck_assert_int_eq(screen_cache_save(c, path, 100, err, sizeof err), 0);
	ck_assert_int_eq(screen_cache_load(d, path, 100, err, sizeof err), 1);
	r = rec("192.0.2.7", 0, 0);
	ck_assert(screen_cache_get(d, r.key, &got));
	ck_assert_int_eq(got.greet_until, 5000);
	ck_assert_int_eq(got.dnsbl_until, 3000);
	/* a corrupt file loads nothing */
	f = fopen(path, "w");
	fputs("frugal-postscreen-cache 1\n192.0.2.9 9999 0\n192.0.2.10 99x 0\n", f);
	fclose(f);
	screen_cache_free(d);
	d = screen_cache_new(64);
	ck_assert_int_eq(screen_cache_load(d, path, 100, err, sizeof err), -1);
	ck_assert(strstr(err, ":3: bad record") != NULL);
	r = rec("192.0.2.9", 0, 0);
	ck_assert(!screen_cache_get(d, r.key, &got));
	/* a truncated last line, and no magic line */
	f = fopen(path, "w");
	fputs("frugal-postscreen-cache 1\n192.0.2.9 9999", f);
	fclose(f);
	ck_assert_int_eq(screen_cache_load(d, path, 100, err, sizeof err), -1);
	f = fopen(path, "w");
	fputs("192.0.2.9 9999 0\n", f);
	fclose(f);
	ck_assert_int_eq(screen_cache_load(d, path, 100, err, sizeof err), -1);
	unlink(path);
	ck_assert_int_eq(screen_cache_load(d, path, 100, err, sizeof err), 0);   /* no file: nothing, no error */
	screen_cache_free(c);
	screen_cache_free(d);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("screen");
	TCase *t = tcase_create("core");
	SRunner *r;
	int failed;

	tcase_add_test(t, sites);
	tcase_add_test(t, cache_bound);
	tcase_add_test(t, cache_file);
	suite_add_tcase(s, t);
	r = srunner_create(s);
	srunner_run_all(r, CK_NORMAL);
	failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
