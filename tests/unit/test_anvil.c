/* tests/unit/test_anvil.c: smtpd/anvil.h, the per-client table: keys, windows, the bound. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "core/mem.h"
#include "smtpd/anvil.h"

static struct sockaddr_storage v4(const char *a)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	ss.ss_family = AF_INET;
	ck_assert_int_eq(inet_pton(AF_INET, a, &((struct sockaddr_in *)&ss)->sin_addr), 1);
	return ss;
}

static struct sockaddr_storage v6(const char *a)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	ss.ss_family = AF_INET6;
	ck_assert_int_eq(inet_pton(AF_INET6, a, &((struct sockaddr_in6 *)&ss)->sin6_addr), 1);
	return ss;
}

static int same(const char *a, const char *b, int prefix)
{
	unsigned char ka[ANVIL_KEYLEN], kb[ANVIL_KEYLEN];
	struct sockaddr_storage sa = strchr(a, ':') ? v6(a) : v4(a);
	struct sockaddr_storage sb = strchr(b, ':') ? v6(b) : v4(b);

	anvil_key(&sa, prefix, ka);
	anvil_key(&sb, prefix, kb);
	return memcmp(ka, kb, ANVIL_KEYLEN) == 0;
}

static int conn(struct anvil *a, const char *addr, double now, double unit, int *count, int *rate)
{
	unsigned char k[ANVIL_KEYLEN];
	struct sockaddr_storage ss = strchr(addr, ':') ? v6(addr) : v4(addr);

	anvil_key(&ss, 84, k);
	return anvil_connect(a, k, now, unit, count, rate);
}

START_TEST(keys)
{
	/* Postfix 3.8's default of 84 bits: one client per /84 */
	ck_assert(same("2001:db8:1:2:3:4:5:6", "2001:db8:1:2:3:fff:ffff:ffff", 84));
	ck_assert(!same("2001:db8:1:2:3:4:5:6", "2001:db8:1:2:3:1000::", 84));   /* bit 84 differs */
	ck_assert(!same("2001:db8:1:2:3:4:5:6", "2001:db8:1:2:3:4:5:7", 128));
	ck_assert(same("2001:db8::1", "2001:db8::2", 64));
	ck_assert(!same("2001:db8:0:1::1", "2001:db8::1", 64));
	ck_assert(same("::1", "::1", 84));
	/* a nonsense length is the whole address, not a crash */
	ck_assert(!same("2001:db8::1", "2001:db8::2", 500));
	/* IPv4: the address itself; IPv4-mapped IPv6 is the same client */
	ck_assert(!same("127.0.0.1", "127.0.0.2", 84));
	ck_assert(same("::ffff:192.0.2.7", "192.0.2.7", 84));
	ck_assert(!same("::ffff:192.0.2.7", "192.0.2.8", 84));
	/* an IPv4 address is never an IPv6 one with the same bytes */
	ck_assert(!same("::c000:207", "192.0.2.7", 128));
}
END_TEST

START_TEST(count_and_window)
{
	struct anvil *a = anvil_new(8);
	int c, r, s1, s2, s3;

	ck_assert_ptr_nonnull(a);
	s1 = conn(a, "192.0.2.1", 100, 60, &c, &r);
	ck_assert_int_ge(s1, 0);
	ck_assert_int_eq(c, 1); ck_assert_int_eq(r, 1);
	s2 = conn(a, "192.0.2.1", 101, 60, &c, &r);
	ck_assert_int_eq(s2, s1);
	ck_assert_int_eq(c, 2); ck_assert_int_eq(r, 2);
	s3 = conn(a, "192.0.2.2", 101, 60, &c, &r);   /* another client starts at 1 */
	ck_assert_int_ne(s3, s1);
	ck_assert_int_eq(c, 1); ck_assert_int_eq(r, 1);
	ck_assert_int_eq(anvil_event(a, s1, ANVIL_MAIL, 102, 60), 1);
	ck_assert_int_eq(anvil_event(a, s1, ANVIL_MAIL, 103, 60), 2);
	ck_assert_int_eq(anvil_event(a, s1, ANVIL_RCPT, 103, 60), 1);
	ck_assert_int_eq(anvil_event(a, s3, ANVIL_MAIL, 103, 60), 1);
	anvil_disconnect(a, s1, 104);
	s2 = conn(a, "192.0.2.1", 105, 60, &c, &r);
	ck_assert_int_eq(c, 2); ck_assert_int_eq(r, 3);   /* the count went down, the rate did not */
	/* the window (from 100) passes at 160: every rate starts again, the count stays */
	ck_assert_int_eq(anvil_event(a, s1, ANVIL_MAIL, 159.9, 60), 3);
	ck_assert_int_eq(anvil_event(a, s1, ANVIL_MAIL, 160, 60), 1);
	ck_assert_int_eq(anvil_event(a, s1, ANVIL_RCPT, 160, 60), 1);
	s2 = conn(a, "192.0.2.1", 161, 60, &c, &r);
	ck_assert_int_eq(c, 3); ck_assert_int_eq(r, 1);
	/* disconnects of nothing change nothing */
	anvil_disconnect(a, ANVIL_NONE, 1);
	anvil_disconnect(NULL, s1, 1);
	ck_assert_int_eq(anvil_event(a, ANVIL_NONE, ANVIL_MAIL, 1, 60), 0);
	ck_assert_uint_eq(anvil_used(a), 2);
	anvil_free(a);
}
END_TEST

/*
 * The bound: a full table gives up an idle entry only once it has been idle
 * a whole window, never one with live connections; a flood gets no entries
 * and the table never grows.
 */
START_TEST(bound_and_churn)
{
	struct anvil *a = anvil_new(4);
	size_t before;
	char addr[32];
	int c, r, live, idle, i, s;

	ck_assert_ptr_nonnull(a);
	before = mem_in_use();
	live = conn(a, "10.0.0.1", 0, 60, &c, &r);              /* a heavy client, connected */
	idle = conn(a, "10.0.0.2", 0, 60, &c, &r);
	for (i = 0; i < 5; i++)
		anvil_event(a, idle, ANVIL_MAIL, 1, 60);
	anvil_disconnect(a, idle, 10);                            /* idle from t=10 */
	ck_assert_int_ge(conn(a, "10.0.0.3", 11, 60, &c, &r), 0);
	ck_assert_int_ge(conn(a, "10.0.0.4", 11, 60, &c, &r), 0);
	/* full: 2000 new addresses within the window find no room and change nothing */
	for (i = 0; i < 2000; i++) {
		snprintf(addr, sizeof addr, "127.%d.%d.%d", 1 + i / 65536, (i / 256) % 256, i % 256);
		ck_assert_int_eq(conn(a, addr, 20 + i * 0.01, 60, &c, &r), ANVIL_NONE);
	}
	ck_assert_uint_eq(anvil_untracked(a), 2000);
	ck_assert_uint_eq(anvil_used(a), 4);
	ck_assert_uint_eq(mem_in_use(), before);
	s = conn(a, "10.0.0.2", 50, 60, &c, &r);                 /* the idle client is still known */
	ck_assert_int_eq(s, idle);
	ck_assert_int_eq(c, 1); ck_assert_int_eq(r, 2);
	ck_assert_int_eq(anvil_event(a, idle, ANVIL_MAIL, 50, 60), 6);
	anvil_disconnect(a, idle, 50);
	/* at 110 it has been idle 60 s: its place goes to a newcomer; the live one stays */
	ck_assert_int_eq(conn(a, "10.9.9.9", 109.9, 60, &c, &r), ANVIL_NONE);
	s = conn(a, "10.9.9.9", 110, 60, &c, &r);
	ck_assert_int_eq(s, idle);
	ck_assert_int_eq(c, 1); ck_assert_int_eq(r, 1);
	for (i = 0; i < 100; i++) {
		snprintf(addr, sizeof addr, "172.16.0.%d", i);
		ck_assert_int_eq(conn(a, addr, 1e6 + i, 60, &c, &r), ANVIL_NONE);   /* all four live now */
	}
	s = conn(a, "10.0.0.1", 1e6, 60, &c, &r);                /* live since 0, never given up */
	ck_assert_int_eq(s, live);
	ck_assert_int_eq(c, 2);
	ck_assert_int_eq(anvil_capacity(a), 4);
	anvil_free(a);
}
END_TEST

/* Entries given up and taken again keep the hash chains right (many rounds through 64 entries). */
START_TEST(reuse)
{
	struct anvil *a = anvil_new(64);
	int slot[64], c, r, round, i;
	char addr[32];

	ck_assert_ptr_nonnull(a);
	for (round = 0; round < 50; round++) {
		double t = round * 100.0;
		for (i = 0; i < 64; i++) {
			snprintf(addr, sizeof addr, "198.51.%d.%d", round % 7, i);
			slot[i] = conn(a, addr, t, 60, &c, &r);
			ck_assert_int_ge(slot[i], 0);
			ck_assert_int_eq(c, 1);
			ck_assert_int_eq(r, 1);
		}
		for (i = 0; i < 64; i++) {   /* each is found again, its own */
			snprintf(addr, sizeof addr, "198.51.%d.%d", round % 7, i);
			ck_assert_int_eq(conn(a, addr, t + 1, 60, &c, &r), slot[i]);
			ck_assert_int_eq(c, 2);
			anvil_disconnect(a, slot[i], t + 2);
			anvil_disconnect(a, slot[i], t + 2);
		}
		ck_assert_uint_eq(anvil_used(a), 64);
	}
	anvil_free(a);
}
END_TEST

START_TEST(no_memory)
{
	mem_fail_at(1);
	ck_assert_ptr_null(anvil_new(16));
	mem_fail_at(0);
	ck_assert_uint_eq(anvil_used(NULL), 0);
	ck_assert(anvil_bytes(1024) < 100 * 1024);   /* what DESIGN.md says a default table costs */
}
END_TEST

int main(void)
{
	Suite *s = suite_create("anvil");
	TCase *t = tcase_create("core");
	SRunner *r;
	int failed;

	tcase_add_test(t, keys);
	tcase_add_test(t, count_and_window);
	tcase_add_test(t, bound_and_churn);
	tcase_add_test(t, reuse);
	tcase_add_test(t, no_memory);
	suite_add_tcase(s, t);
	r = srunner_create(s);
	srunner_run_all(r, CK_NORMAL);
	failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
