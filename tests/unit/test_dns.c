/*
 * tests/unit/test_dns.c: the resolver (core/dns.h) on a real libev loop
 * against tests/integration/dnsserver.py, started here as a subprocess on
 * loopback: A, AAAA, MX, PTR, TXT, NXDOMAIN, no data, SERVFAIL, a timeout,
 * a truncated UDP answer that forces TCP, the cache (the server counts
 * queries), its bounds, cancel, the descriptor funnel refusing a socket,
 * and the ledger counting the resolver's sockets; dns_lookup_sys answering
 * from a hosts file of the test's own before DNS, and re-reading it.
 */
#include <check.h>
#include <ev.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/unit/dns_test_server.h"
#include "core/dns.h"
#include "core/fd.h"
#include "core/mem.h"

static char servers[64];

static const char spec[] =
	"{\"records\": {"
	" \"a.test\": [[\"A\", \"127.0.0.10\"], [\"AAAA\", \"::1\"]],"
	" \"v4only.test\": [[\"A\", \"127.0.0.11\"]],"
	" \"mx.test\": [[\"MX\", [10, \"mx1.mx.test\"]], [\"MX\", [20, \"mx2.mx.test\"]]],"
	" \"10.0.0.127.in-addr.arpa\": [[\"PTR\", \"host.a.test\"]],"
	" \"txt.test\": [[\"TXT\", [\"v=spf1 \", \"-all\"]]],"
	" \"big.test\": [[\"A\", \"127.0.1.1\"], [\"A\", \"127.0.1.2\"], [\"A\", \"127.0.1.3\"]],"
	" \"slow.test\": [[\"A\", \"127.0.0.12\"]],"
	" \"late.test\": [[\"A\", \"127.0.0.13\"]]"
	"}, \"servfail\": [\"broken.test\"], \"delay\": {\"slow.test\": 3, \"late.test\": 0.3},"
	" \"truncate\": [\"big.test\"]}";

static void start_server(void)
{
	dts_start("test_dns", spec, servers, sizeof servers);
}

static void stop_server(void)
{
	dts_stop();
}

/* ---- helpers ---- */

struct res {
	int done, calls;
	enum dns_status st;
	int n, pref[8];
	char text[8][300];
	unsigned char addr[8][16];
};

static void got(void *arg, const struct dns_answer *a)
{
	struct res *r = arg;
	int i;

	r->done = 1;
	r->calls++;
	r->st = a->status;
	r->n = a->n;
	for (i = 0; i < a->n && i < 8; i++) {
		r->pref[i] = a->rr[i].pref;
		memcpy(r->addr[i], a->rr[i].addr, 16);
		snprintf(r->text[i], sizeof r->text[i], "%s", a->rr[i].text ? a->rr[i].text : "");
	}
}

static struct res lookup(struct dns *d, struct ev_loop *loop, const char *name, enum dns_type t)
{
	struct res r;

	memset(&r, 0, sizeof r);
	ck_assert_ptr_nonnull(dns_lookup(d, name, t, got, &r));
	ck_assert_int_eq(r.done, 0);   /* never from inside dns_lookup */
	while (!r.done)
		ev_run(loop, EVRUN_ONCE);
	return r;
}

static struct res lookup_sys(struct dns *d, struct ev_loop *loop, const char *name, enum dns_type t)
{
	struct res r;

	memset(&r, 0, sizeof r);
	ck_assert_ptr_nonnull(dns_lookup_sys(d, name, t, got, &r));
	ck_assert_int_eq(r.done, 0);   /* never from inside dns_lookup_sys, also from the hosts file */
	while (!r.done)
		ev_run(loop, EVRUN_ONCE);
	return r;
}

/* The server's counters ("TOTAL TCP"), asked under control. with a name never asked before. */
static void server_counts(struct dns *d, struct ev_loop *loop, int *total, int *tcp)
{
	static int seq;
	char name[64];
	struct res r;

	snprintf(name, sizeof name, "c%d.control", ++seq);
	r = lookup(d, loop, name, DNS_TXT);
	ck_assert_int_eq(r.st, DNS_FOUND);
	ck_assert_int_eq(sscanf(r.text[0], "%d %d", total, tcp), 2);
}

static struct dns *new_dns(struct ev_loop *loop, const struct dns_opts *o)
{
	char err[256];
	struct dns *d = dns_new(loop, o, servers, err, sizeof err);

	if (d == NULL)
		ck_abort_msg("dns_new: %s", err);
	return d;
}

/* ---- tests ---- */

START_TEST(a_aaaa_nodata)
{
	struct ev_loop *loop = ev_loop_new(0);
	struct dns *d = new_dns(loop, NULL);
	struct res r;
	char txt[64];

	r = lookup(d, loop, "a.test", DNS_A);
	ck_assert_int_eq(r.st, DNS_FOUND);
	ck_assert_int_eq(r.n, 1);
	ck_assert_str_eq(inet_ntop(AF_INET, r.addr[0], txt, sizeof txt), "127.0.0.10");
	r = lookup(d, loop, "A.Test.", DNS_AAAA);   /* case and the final dot do not matter */
	ck_assert_int_eq(r.st, DNS_FOUND);
	ck_assert_str_eq(inet_ntop(AF_INET6, r.addr[0], txt, sizeof txt), "::1");
	r = lookup(d, loop, "v4only.test", DNS_AAAA);
	ck_assert_int_eq(r.st, DNS_NODATA);
	ck_assert_int_eq(r.n, 0);
	dns_free(d);
	ev_loop_destroy(loop);
}
END_TEST

START_TEST(mx_ptr_txt)
{
	struct ev_loop *loop = ev_loop_new(0);
	struct dns *d = new_dns(loop, NULL);
	struct sockaddr_in sin;
	char name[128];
	struct res r;

	r = lookup(d, loop, "mx.test", DNS_MX);
	ck_assert_int_eq(r.st, DNS_FOUND);
	ck_assert_int_eq(r.n, 2);
	ck_assert_int_eq(r.pref[0], 10);
	ck_assert_str_eq(r.text[0], "mx1.mx.test");
	ck_assert_int_eq(r.pref[1], 20);
	ck_assert_str_eq(r.text[1], "mx2.mx.test");

	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	inet_pton(AF_INET, "127.0.0.10", &sin.sin_addr);
	ck_assert_int_eq(dns_ptr_name((struct sockaddr *)&sin, name, sizeof name), 0);
	ck_assert_str_eq(name, "10.0.0.127.in-addr.arpa");
	r = lookup(d, loop, name, DNS_PTR);
	ck_assert_int_eq(r.st, DNS_FOUND);
	ck_assert_str_eq(r.text[0], "host.a.test");

	r = lookup(d, loop, "txt.test", DNS_TXT);
	ck_assert_int_eq(r.st, DNS_FOUND);
	ck_assert_int_eq(r.n, 1);
	ck_assert_str_eq(r.text[0], "v=spf1 -all");   /* the strings of one record, joined */
	dns_free(d);
	ev_loop_destroy(loop);
}
END_TEST

START_TEST(ptr_name_v6)
{
	struct sockaddr_in6 s6;
	char name[128];

	memset(&s6, 0, sizeof s6);
	s6.sin6_family = AF_INET6;
	inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr);
	ck_assert_int_eq(dns_ptr_name((struct sockaddr *)&s6, name, sizeof name), 0);
	ck_assert_str_eq(name, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
	inet_pton(AF_INET6, "::ffff:192.0.2.7", &s6.sin6_addr);   /* a v4 client on a v6 socket */
	ck_assert_int_eq(dns_ptr_name((struct sockaddr *)&s6, name, sizeof name), 0);
	ck_assert_str_eq(name, "7.2.0.192.in-addr.arpa");
}
END_TEST

START_TEST(nxdomain_servfail)
{
	struct ev_loop *loop = ev_loop_new(0);
	struct dns *d = new_dns(loop, NULL);
	struct res r;

	r = lookup(d, loop, "nope.test", DNS_A);
	ck_assert_int_eq(r.st, DNS_NXDOMAIN);
	r = lookup(d, loop, "broken.test", DNS_MX);
	ck_assert_int_eq(r.st, DNS_TEMPFAIL);
	dns_free(d);
	ev_loop_destroy(loop);
}
END_TEST

START_TEST(timeout)
{
	struct ev_loop *loop = ev_loop_new(0);
	struct dns_opts o = { .timeout_ms = 300, .tries = 1 };
	struct dns *d = new_dns(loop, &o);
	ev_tstamp t0;
	struct res r;

	ev_now_update(loop);
	t0 = ev_now(loop);
	r = lookup(d, loop, "slow.test", DNS_A);   /* answered after 3 s */
	ev_now_update(loop);
	ck_assert_int_eq(r.st, DNS_TEMPFAIL);
	ck_assert(ev_now(loop) - t0 < 2.0);
	ck_assert(ev_now(loop) - t0 >= 0.25);
	dns_free(d);
	ev_loop_destroy(loop);
}
END_TEST

START_TEST(truncated_then_tcp)
{
	struct ev_loop *loop = ev_loop_new(0);
	struct dns *d = new_dns(loop, NULL);
	int total0, tcp0, total1, tcp1;
	struct res r;

	server_counts(d, loop, &total0, &tcp0);
	r = lookup(d, loop, "big.test", DNS_A);
	ck_assert_int_eq(r.st, DNS_FOUND);
	ck_assert_int_eq(r.n, 3);
	server_counts(d, loop, &total1, &tcp1);
	ck_assert_int_eq(tcp1 - tcp0, 1);     /* asked again over TCP */
	ck_assert_int_eq(total1 - total0, 2); /* once over UDP (TC), once over TCP */
	dns_free(d);
	ev_loop_destroy(loop);
}
END_TEST

START_TEST(cache)
{
	struct ev_loop *loop = ev_loop_new(0);
	struct dns *d = new_dns(loop, NULL);
	int t0, t1, tcp;
	struct dns_stats st;
	struct res r;

	server_counts(d, loop, &t0, &tcp);
	r = lookup(d, loop, "mx.test", DNS_MX);
	ck_assert_int_eq(r.st, DNS_FOUND);
	r = lookup(d, loop, "mx.test", DNS_MX);
	ck_assert_int_eq(r.st, DNS_FOUND);
	ck_assert_int_eq(r.n, 2);
	ck_assert_str_eq(r.text[1], "mx2.mx.test");
	r = lookup(d, loop, "gone.test", DNS_A);   /* negative answers are cached too (briefly) */
	ck_assert_int_eq(r.st, DNS_NXDOMAIN);
	r = lookup(d, loop, "gone.test", DNS_A);
	ck_assert_int_eq(r.st, DNS_NXDOMAIN);
	r = lookup(d, loop, "broken.test", DNS_A); /* a temporary failure is not */
	r = lookup(d, loop, "broken.test", DNS_A);
	ck_assert_int_eq(r.st, DNS_TEMPFAIL);
	server_counts(d, loop, &t1, &tcp);
	/* mx.test once, gone.test once, broken.test twice, each time asked twice (c-ares: tries = 2) */
	ck_assert_int_eq(t1 - t0, 6);
	dns_stats(d, &st);
	ck_assert_uint_eq(st.cache_hits, 2);
	dns_free(d);
	ev_loop_destroy(loop);
}
END_TEST

START_TEST(cache_bounds)
{
	struct ev_loop *loop = ev_loop_new(0);
	struct dns_opts o = { .cache_entries = 3 };
	struct dns *d = new_dns(loop, &o);
	int t0, t1, tcp, i;
	struct dns_stats st;
	char name[32];

	for (i = 1; i <= 5; i++) {
		snprintf(name, sizeof name, "n%d.test", i);
		lookup(d, loop, name, DNS_A);
		dns_stats(d, &st);
		ck_assert_int_le(st.cache_entries, 3);
	}
	server_counts(d, loop, &t0, &tcp);
	lookup(d, loop, "n5.test", DNS_A);   /* kept: the newest */
	lookup(d, loop, "n1.test", DNS_A);   /* evicted: the oldest */
	server_counts(d, loop, &t1, &tcp);
	ck_assert_int_eq(t1 - t0, 1);
	dns_free(d);

	/* the byte bound: an answer larger than the cache is never kept */
	o.cache_entries = 0;
	o.cache_bytes = 300;
	d = new_dns(loop, &o);
	lookup(d, loop, "mx.test", DNS_MX);
	lookup(d, loop, "a.test", DNS_A);
	dns_stats(d, &st);
	ck_assert_uint_le(st.cache_bytes, 300);
	dns_free(d);
	ev_loop_destroy(loop);
}
END_TEST

START_TEST(cancel)
{
	struct ev_loop *loop = ev_loop_new(0);
	struct dns *d = new_dns(loop, NULL);
	struct dns_query *q;
	struct dns_stats st;
	struct res never, r;

	memset(&never, 0, sizeof never);
	q = dns_lookup(d, "late.test", DNS_A, got, &never);
	ck_assert_ptr_nonnull(q);
	dns_cancel(q);
	r = lookup(d, loop, "a.test", DNS_A);   /* others go on */
	ck_assert_int_eq(r.st, DNS_FOUND);
	do {   /* until c-ares has let go of the cancelled query (its answer comes after 0.3 s) */
		ev_run(loop, EVRUN_ONCE);
		dns_stats(d, &st);
	} while (st.pending > 0);
	ck_assert_int_eq(never.calls, 0);
	/* a cancelled cache hit is not delivered either */
	q = dns_lookup(d, "a.test", DNS_A, got, &never);
	dns_cancel(q);
	r = lookup(d, loop, "mx.test", DNS_MX);
	ck_assert_int_eq(never.calls, 0);
	dns_free(d);
	ev_loop_destroy(loop);
}
END_TEST

START_TEST(funnel)
{
	struct ev_loop *loop = ev_loop_new(0);
	long long socks0 = fd_count(FD_SOCK);
	size_t mem0 = mem_in_use();
	struct dns *d = new_dns(loop, NULL);
	int seen_tcp = 0;
	struct res r;

	ck_assert(mem_in_use() > mem0);   /* c-ares's channel, through frugal's allocator */
	memset(&r, 0, sizeof r);
	ck_assert_ptr_nonnull(dns_lookup(d, "late.test", DNS_A, got, &r));
	ck_assert_int_eq(fd_count(FD_SOCK), socks0 + 1);   /* its UDP socket: numothersock */
	ck_assert_int_eq(fd_count(FD_TCP), 0);
	while (!r.done)
		ev_run(loop, EVRUN_ONCE);
	ck_assert_int_eq(r.st, DNS_FOUND);
	ck_assert_int_eq(fd_count(FD_SOCK), socks0);       /* closed when no query is left */
	/* the TCP fallback counts as numtcpsock */
	memset(&r, 0, sizeof r);
	ck_assert_ptr_nonnull(dns_lookup(d, "big.test", DNS_A, got, &r));
	while (!r.done) {
		ev_run(loop, EVRUN_ONCE);
		seen_tcp |= fd_count(FD_TCP) == 1;
	}
	ck_assert(seen_tcp);
	ck_assert_int_eq(fd_count(FD_TCP), 0);
	dns_free(d);
	ck_assert_int_eq(fd_count(FD_SOCK), socks0);
	ck_assert_uint_eq(mem_in_use(), mem0);

	/* no socket allowed: a temporary failure, not a crash */
	d = new_dns(loop, NULL);
	fd_set_caps(0, 0, -1);
	r = lookup(d, loop, "v4only.test", DNS_A);
	ck_assert_int_eq(r.st, DNS_TEMPFAIL);
	fd_set_caps(0, 0, 0);
	r = lookup(d, loop, "v4only.test", DNS_A);   /* and it recovers */
	ck_assert_int_eq(r.st, DNS_FOUND);
	dns_free(d);
	ev_loop_destroy(loop);
}
END_TEST

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fputs(text, f) >= 0, 1);
	ck_assert_int_eq(fclose(f), 0);
}

START_TEST(hosts_file)
{
	char path[] = "/tmp/frugal-hosts-XXXXXX", txt[64];
	struct ev_loop *loop = ev_loop_new(0);
	struct dns_opts o = { 0 };
	struct dns_stats st;
	struct dns *d;
	struct res r;
	size_t mem0 = mem_in_use();
	int fd = mkstemp(path), t0, t1, tcp;

	ck_assert_int_ge(fd, 0);
	close(fd);
	write_file(path,
	    "# a comment line\n"
	    "127.0.0.10\tHosts.Example.  alias1   # the first line of an address names it\n"
	    "127.0.0.10 second.example\n"
	    "::1 v6.example\n"
	    "127.0.0.20 a.test\n"
	    "no-address-here name\n"
	    "10.0.0.1\n");
	o.hosts_file = path;
	d = new_dns(loop, &o);
	dns_stats(d, &st);
	ck_assert_int_eq(st.hosts_lines, 4);
	server_counts(d, loop, &t0, &tcp);
	/* DNS says host.a.test for 127.0.0.10: the hosts file answers first, as glibc's "files dns" */
	r = lookup_sys(d, loop, "10.0.0.127.in-addr.arpa", DNS_PTR);
	ck_assert_int_eq(r.st, DNS_FOUND);
	ck_assert_int_eq(r.n, 1);
	ck_assert_str_eq(r.text[0], "hosts.example");
	r = lookup_sys(d, loop, "ALIAS1.", DNS_A);
	ck_assert_int_eq(r.st, DNS_FOUND);
	ck_assert_int_eq(r.n, 1);
	ck_assert_str_eq(inet_ntop(AF_INET, r.addr[0], txt, sizeof txt), "127.0.0.10");
	r = lookup_sys(d, loop, "a.test", DNS_A);   /* DNS would say 127.0.0.10 */
	ck_assert_int_eq(r.n, 1);
	ck_assert_str_eq(inet_ntop(AF_INET, r.addr[0], txt, sizeof txt), "127.0.0.20");
	r = lookup_sys(d, loop, "v6.example", DNS_AAAA);
	ck_assert_int_eq(r.st, DNS_FOUND);
	ck_assert_str_eq(inet_ntop(AF_INET6, r.addr[0], txt, sizeof txt), "::1");
	r = lookup_sys(d, loop, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa", DNS_PTR);
	ck_assert_str_eq(r.text[0], "v6.example");
	server_counts(d, loop, &t1, &tcp);
	ck_assert_int_eq(t1 - t0, 0);   /* not one of them reached the DNS server */
	dns_stats(d, &st);
	ck_assert_uint_eq(st.hosts_hits, 5);

	/* not listed (or not for this family): DNS, as before */
	r = lookup_sys(d, loop, "hosts.example", DNS_AAAA);
	ck_assert_int_eq(r.st, DNS_NXDOMAIN);
	r = lookup_sys(d, loop, "11.0.0.127.in-addr.arpa", DNS_PTR);
	ck_assert_int_eq(r.st, DNS_NXDOMAIN);
	r = lookup_sys(d, loop, "a.test", DNS_MX);   /* only A, AAAA and PTR come from the file */
	ck_assert_int_eq(r.st, DNS_NODATA);
	r = lookup(d, loop, "10.0.0.127.in-addr.arpa", DNS_PTR);   /* and dns_lookup never reads it */
	ck_assert_str_eq(r.text[0], "host.a.test");
	server_counts(d, loop, &t1, &tcp);
	ck_assert_int_eq(t1 - t0, 4);

	/* a reload reads the file again; a file that is gone is an empty table */
	write_file(path, "127.0.0.10 renamed.example\n");
	ck_assert_int_eq(dns_set_servers(d, servers, txt, sizeof txt), 0);
	dns_stats(d, &st);
	ck_assert_int_eq(st.hosts_lines, 1);
	r = lookup_sys(d, loop, "10.0.0.127.in-addr.arpa", DNS_PTR);
	ck_assert_str_eq(r.text[0], "renamed.example");
	unlink(path);
	ck_assert_int_eq(dns_set_servers(d, servers, txt, sizeof txt), 0);
	dns_stats(d, &st);
	ck_assert_int_eq(st.hosts_lines, 0);
	r = lookup_sys(d, loop, "10.0.0.127.in-addr.arpa", DNS_PTR);
	ck_assert_str_eq(r.text[0], "host.a.test");
	dns_free(d);
	ck_assert_uint_eq(mem_in_use(), mem0);   /* the table and its answers all returned */
	ev_loop_destroy(loop);
}
END_TEST

START_TEST(parse_garbage)
{
	static const unsigned char junk[] = { 0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 3, 'a', 'b' };
	struct dns_answer *a = dns_parse_answer(DNS_MX, 0, junk, (int)sizeof junk, 60);

	ck_assert_ptr_nonnull(a);
	ck_assert_int_eq(a->status, DNS_TEMPFAIL);   /* a malformed answer is not "no such domain" */
	dns_answer_free(a);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dns");
	TCase *tc = tcase_create("dns");
	SRunner *sr;
	int failed;

	signal(SIGPIPE, SIG_IGN);
	start_server();
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, a_aaaa_nodata);
	tcase_add_test(tc, mx_ptr_txt);
	tcase_add_test(tc, ptr_name_v6);
	tcase_add_test(tc, nxdomain_servfail);
	tcase_add_test(tc, timeout);
	tcase_add_test(tc, truncated_then_tcp);
	tcase_add_test(tc, cache);
	tcase_add_test(tc, cache_bounds);
	tcase_add_test(tc, cancel);
	tcase_add_test(tc, funnel);
	tcase_add_test(tc, hosts_file);
	tcase_add_test(tc, parse_garbage);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	stop_server();
	return failed ? 1 : 0;
}
