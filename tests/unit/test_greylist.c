/* tests/unit/test_greylist.c: the greylisting table and its store format (smtpd/greylist.c). */
#include <arpa/inet.h>
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "smtpd/greylist.h"

static const struct greylist_times T = { 300, 2 * 86400, 35 * 86400 };

static void net4(const char *a, int prefix, unsigned char net[GREYLIST_NETLEN])
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof ss);
	ss.ss_family = AF_INET;
	inet_pton(AF_INET, a, &((struct sockaddr_in *)&ss)->sin_addr);
	greylist_net(&ss, prefix, 64, net);
}

static void net6(const char *a, int prefix, unsigned char net[GREYLIST_NETLEN])
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof ss);
	ss.ss_family = AF_INET6;
	inet_pton(AF_INET6, a, &((struct sockaddr_in6 *)&ss)->sin6_addr);
	greylist_net(&ss, 24, prefix, net);
}

START_TEST(networks)
{
	unsigned char a[GREYLIST_NETLEN], b[GREYLIST_NETLEN];

	net4("192.0.2.1", 24, a);
	net4("192.0.2.200", 24, b);
	ck_assert_mem_eq(a, b, GREYLIST_NETLEN);
	net4("192.0.3.1", 24, b);
	ck_assert(memcmp(a, b, GREYLIST_NETLEN) != 0);
	net6("::ffff:192.0.2.9", 64, b);   /* IPv4-mapped is the IPv4 client */
	ck_assert_mem_eq(a, b, GREYLIST_NETLEN);
	net6("2001:db8:1:2:aaaa::1", 64, a);
	net6("2001:db8:1:2:bbbb::7", 64, b);
	ck_assert_mem_eq(a, b, GREYLIST_NETLEN);
	net6("2001:db8:1:3::1", 64, b);
	ck_assert(memcmp(a, b, GREYLIST_NETLEN) != 0);
	net4("192.0.2.1", 32, a);
	net4("192.0.2.2", 32, b);
	ck_assert(memcmp(a, b, GREYLIST_NETLEN) != 0);
}
END_TEST

START_TEST(triplet_normalisation)
{
	struct greylist *g = greylist_new(16);
	unsigned char n[GREYLIST_NETLEN];
	uint64_t k;

	net4("192.0.2.1", 24, n);
	k = greylist_triplet(g, n, "news@example.org", "alice@example.test");
	ck_assert(k == greylist_triplet(g, n, "News@Example.ORG", "ALICE@example.test"));
	ck_assert(k == greylist_triplet(g, n, "news+bounce-123@example.org", "alice@example.test"));
	ck_assert(greylist_triplet(g, n, "bounce-123@example.org", "a@x") ==
	    greylist_triplet(g, n, "bounce-98765@example.org", "a@x"));   /* VERP */
	ck_assert(greylist_triplet(g, n, "user42@example.org", "a@x") !=
	    greylist_triplet(g, n, "user43@example.org", "a@x"));         /* digits inside a word stay */
	ck_assert(k != greylist_triplet(g, n, "news@example.org", "bob@example.test"));
	ck_assert(k != greylist_triplet(g, n, "", "alice@example.test"));
	/* the fields cannot run into each other */
	ck_assert(greylist_triplet(g, n, "ab", "c") != greylist_triplet(g, n, "a", "bc"));
	net4("192.0.3.1", 24, n);
	ck_assert(k != greylist_triplet(g, n, "news@example.org", "alice@example.test"));
	greylist_free(g);
}
END_TEST

START_TEST(life_of_a_triplet)
{
	struct greylist *g = greylist_new(16);
	uint32_t age, t0 = 1000000;

	ck_assert_int_eq(greylist_check(g, 42, t0, &T, &age), GREYLIST_NEW);
	ck_assert_int_eq(greylist_check(g, 42, t0 + 10, &T, &age), GREYLIST_EARLY);
	ck_assert_uint_eq(age, 10);
	ck_assert_int_eq(greylist_check(g, 42, t0 + 299, &T, &age), GREYLIST_EARLY);
	ck_assert_int_eq(greylist_check(g, 42, t0 + 300, &T, &age), GREYLIST_PASSED);
	ck_assert_uint_eq(age, 300);
	ck_assert_int_eq(greylist_check(g, 42, t0 + 400, &T, &age), GREYLIST_KNOWN);
	/* remembered max_age since last seen, then forgotten */
	ck_assert_int_eq(greylist_check(g, 42, t0 + 400 + T.max_age, &T, &age), GREYLIST_KNOWN);
	ck_assert_int_eq(greylist_check(g, 42, t0 + 401 + 2 * T.max_age, &T, &age), GREYLIST_NEW);
	/* a retry after the retry window starts again */
	ck_assert_int_eq(greylist_check(g, 7, t0, &T, &age), GREYLIST_NEW);
	ck_assert_int_eq(greylist_check(g, 7, t0 + T.retry_window + 1, &T, &age), GREYLIST_NEW);
	ck_assert_int_eq(greylist_check(g, 7, t0 + T.retry_window + 2, &T, &age), GREYLIST_EARLY);
	ck_assert_uint_eq(greylist_used(g), 2);
	greylist_free(g);
}
END_TEST

START_TEST(bound_and_eviction)
{
	struct greylist *g = greylist_new(64);
	uint32_t age, t = 5000;
	size_t before = mem_in_use();
	uint64_t k;

	/* 8 passed triplets, then a flood of 10,000 new ones */
	for (k = 1; k <= 8; k++) {
		ck_assert_int_eq(greylist_check(g, k, t, &T, &age), GREYLIST_NEW);
		ck_assert_int_eq(greylist_check(g, k, t + 300, &T, &age), GREYLIST_PASSED);
	}
	ck_assert_int_eq(greylist_check(g, 1000, t + 300, &T, &age), GREYLIST_NEW);   /* an old pending one */
	for (k = 0; k < 10000; k++)
		ck_assert_int_eq(greylist_check(g, 100000 + k, t + 301, &T, &age), GREYLIST_NEW);
	ck_assert_uint_eq(greylist_used(g), 64);
	ck_assert_uint_eq(mem_in_use(), before);
	ck_assert(greylist_evicted(g) >= 10000 - 64);
	for (k = 1; k <= 8; k++)   /* the passed ones stayed */
		ck_assert_int_eq(greylist_check(g, k, t + 302, &T, &age), GREYLIST_KNOWN);
	ck_assert_int_eq(greylist_check(g, 1000, t + 302, &T, &age), GREYLIST_NEW);   /* the pending went */
	greylist_free(g);

	/* the control: passed entries beyond half the table do go, oldest seen first */
	g = greylist_new(4);
	for (k = 1; k <= 4; k++) {
		greylist_check(g, k, t, &T, &age);
		greylist_check(g, k, t + 300 + (uint32_t)k, &T, &age);
	}
	ck_assert_int_eq(greylist_check(g, 99, t + 400, &T, &age), GREYLIST_NEW);
	ck_assert_int_eq(greylist_check(g, 2, t + 401, &T, &age), GREYLIST_KNOWN);
	ck_assert_int_eq(greylist_check(g, 1, t + 401, &T, &age), GREYLIST_NEW);   /* least recently seen went */
	greylist_free(g);
}
END_TEST

START_TEST(expired_go_first)
{
	struct greylist *g = greylist_new(2);
	uint32_t age, t = 5000, later = 5300 + T.max_age + 1;

	greylist_check(g, 1, t, &T, &age);
	greylist_check(g, 1, t + 300, &T, &age);                 /* passed */
	greylist_check(g, 2, later - 1000, &T, &age);            /* pending, young */
	/* the passed one has expired: it makes room, and it is not counted as an eviction */
	ck_assert_int_eq(greylist_check(g, 3, later, &T, &age), GREYLIST_NEW);
	ck_assert_uint_eq(greylist_evicted(g), 0);
	ck_assert_int_eq(greylist_check(g, 2, later + 1, &T, &age), GREYLIST_PASSED);
	/* the control: a full table of live entries evicts */
	ck_assert_int_eq(greylist_check(g, 4, later + 2, &T, &age), GREYLIST_NEW);
	ck_assert_uint_eq(greylist_evicted(g), 1);
	greylist_free(g);
}
END_TEST

START_TEST(store_round_trip)
{
	struct greylist *g = greylist_new(32), *h;
	struct greylist_record *v;
	uint32_t age, t = 1700000000;
	unsigned long bad;
	size_t n, i, len = 0;
	char buf[8192];
	uint64_t k;

	for (k = 1; k <= 10; k++)
		greylist_check(g, k * 0x1234567890ULL, t, &T, &age);
	for (k = 1; k <= 5; k++)
		greylist_check(g, k * 0x1234567890ULL, t + 300, &T, &age);
	ck_assert(greylist_dirty(g));
	v = greylist_snapshot(g, &n);
	ck_assert(!greylist_dirty(g));
	ck_assert_uint_eq(n, 10);
	len += (size_t)greylist_format_header(buf, sizeof buf, greylist_seed(g));
	for (i = 0; i < n; i++)
		len += (size_t)greylist_format_record(buf + len, sizeof buf - len, &v[i]);
	mem_free(v);
	h = greylist_new(32);
	ck_assert_int_eq(greylist_load(h, buf, len, t + 301, &T, &bad), 10);
	ck_assert_uint_eq(bad, 0);
	ck_assert(greylist_seed(h) == greylist_seed(g));
	for (k = 1; k <= 5; k++)
		ck_assert_int_eq(greylist_check(h, k * 0x1234567890ULL, t + 302, &T, &age), GREYLIST_KNOWN);
	ck_assert_int_eq(greylist_check(h, 6 * 0x1234567890ULL, t + 302, &T, &age), GREYLIST_PASSED);
	ck_assert_uint_eq(age, 302);
	greylist_free(h);
	/* expired records are not loaded */
	h = greylist_new(32);
	ck_assert_int_eq(greylist_load(h, buf, len, t + 3 * 86400, &T, &bad), 5);
	greylist_free(h);
	greylist_free(g);
}
END_TEST

START_TEST(store_parser)
{
	struct greylist_record r;
	struct greylist *g = greylist_new(8);
	unsigned long bad;
	static const char *const good = "00000000000000ff 100 200 1";
	static const char *const badv[] = {
		"", "00000000000000ff 100 200", "00000000000000ff 100 200 2", "0000000000000ff 100 200 1",
		"00000000000000fg 100 200 1", "00000000000000ff 200 100 1", "00000000000000ff 100 99999999999 1",
		"00000000000000ff  100 200 1", "00000000000000ff 100 200 1 ", "00000000000000ff -1 200 1",
	};
	const char *doc = "frugal-greylist 1 0000000000000001\nzz\n00000000000000ff 100 200 1\n0000000000000100 1";
	size_t i;

	ck_assert_int_eq(greylist_parse_record(good, strlen(good), &r), 0);
	ck_assert(r.key == 0xff && r.first == 100 && r.last == 200 && r.passed == 1);
	for (i = 0; i < sizeof badv / sizeof badv[0]; i++)
		ck_assert_msg(greylist_parse_record(badv[i], strlen(badv[i]), &r) < 0, "accepted \"%s\"", badv[i]);
	ck_assert_int_eq(greylist_load(g, "garbage\n", 8, 300, &T, &bad), -1);
	ck_assert_int_eq(greylist_load(g, "frugal-greylist 2 0000000000000001\n", 35, 300, &T, &bad), -1);
	ck_assert_int_eq(greylist_load(g, doc, strlen(doc), 300, &T, &bad), 1);
	ck_assert_uint_eq(bad, 2);   /* "zz" and the line cut short */
	greylist_free(g);
}
END_TEST

START_TEST(no_memory)
{
	mem_fail_at(1);
	ck_assert_ptr_null(greylist_new(16));
	mem_fail_at(0);
	ck_assert_uint_eq(greylist_used(NULL), 0);
	ck_assert(greylist_bytes(65536) < 3 * 1024 * 1024);   /* what DESIGN.md says the default costs */
}
END_TEST

int main(void)
{
	Suite *s = suite_create("greylist");
	TCase *t = tcase_create("core");
	SRunner *r;
	int failed;

	tcase_add_test(t, networks);
	tcase_add_test(t, triplet_normalisation);
	tcase_add_test(t, life_of_a_triplet);
	tcase_add_test(t, bound_and_eviction);
	tcase_add_test(t, expired_go_first);
	tcase_add_test(t, store_round_trip);
	tcase_add_test(t, store_parser);
	tcase_add_test(t, no_memory);
	suite_add_tcase(s, t);
	r = srunner_create(s);
	srunner_run_all(r, CK_NORMAL);
	failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
