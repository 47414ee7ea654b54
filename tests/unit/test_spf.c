/*
 * tests/unit/test_spf.c: smtpd/spf.h on a real libev loop against
 * tests/integration/dnsserver.py (a subprocess on loopback, as test_dns.c
 * starts it): the result comes by callback after one fetch per name and
 * one more run each time; a check freed while its lookup is in flight never
 * calls back and gives all its memory back; no resolver is a temperror at
 * once; a budget with no room for the answers is a temperror, not a crash;
 * the Received-SPF: header's exact layout and quoting.
 */
#include <check.h>
#include <ev.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/dns.h"
#include "core/mem.h"
#include "smtpd/spf.h"

static char servers[64];
static pid_t server_pid;
static int server_stdin = -1;

static const char spec[] =
	"{\"records\": {"
	" \"pass.test\": [[\"TXT\", \"v=spf1 include:inc.pass.test -all\"]],"
	" \"inc.pass.test\": [[\"TXT\", \"v=spf1 ip4:192.0.2.0/24 -all\"]],"
	" \"fail.test\": [[\"TXT\", \"v=spf1 mx -all\"], [\"MX\", [10, \"mx.fail.test\"]]],"
	" \"mx.fail.test\": [[\"A\", \"198.51.100.1\"]],"
	" \"slow.test\": [[\"TXT\", \"v=spf1 -all\"]]"
	"}, \"servfail\": [], \"delay\": {\"slow.test\": 0.4}, \"truncate\": []}";

static void start_server(void)
{
	char path[] = "/tmp/frugal-spfspec-XXXXXX", port[32];
	int in[2], out[2], fd = mkstemp(path);
	const char *src = getenv("FRUGAL_SRCDIR");
	char script[1024];
	ssize_t n;

	if (fd < 0 || write(fd, spec, strlen(spec)) != (ssize_t)strlen(spec) || close(fd) < 0) {
		perror("test_spf: spec file");
		exit(1);
	}
	snprintf(script, sizeof script, "%s/tests/integration/dnsserver.py", src ? src : ".");
	if (pipe(in) < 0 || pipe(out) < 0) {
		perror("test_spf: pipe");
		exit(1);
	}
	if ((server_pid = fork()) == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[1]);
		close(out[0]);
		execlp("python3", "python3", script, path, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	server_stdin = in[1];
	for (n = 0; n < (ssize_t)sizeof port - 1 && (n == 0 || port[n - 1] != '\n'); ) {
		ssize_t r = read(out[0], port + n, sizeof port - 1 - (size_t)n);
		if (r <= 0)
			break;
		n += r;
	}
	close(out[0]);
	unlink(path);
	if (n <= 0 || port[n - 1] != '\n') {
		fprintf(stderr, "test_spf: %s did not start\n", script);
		exit(1);
	}
	port[n] = '\0';
	port[strcspn(port, "\n")] = '\0';
	snprintf(servers, sizeof servers, "127.0.0.1:%s", port);
}

static void stop_server(void)
{
	close(server_stdin);
	waitpid(server_pid, NULL, 0);
}

static void client(struct sockaddr_storage *ss, const char *ip)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;

	memset(ss, 0, sizeof *ss);
	sin->sin_family = AF_INET;
	ck_assert_int_eq(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
}

static void done_cb(void *arg)
{
	(*(int *)arg)++;
}

static void stop_loop(struct ev_loop *loop, ev_timer *w, int revents)
{
	ev_break(loop, EVBREAK_ONE);
}

/* Run the loop until *calls is set or `secs` pass. */
static void run_until(struct ev_loop *loop, const int *calls, double secs)
{
	ev_timer t;
	ev_tstamp end = ev_now(loop) + secs;

	ev_timer_init(&t, stop_loop, 0.05, 0.05);
	ev_timer_start(loop, &t);
	while (*calls == 0 && ev_now(loop) < end)
		ev_run(loop, EVRUN_ONCE);
	ev_timer_stop(loop, &t);
}

static struct dns *resolver(struct ev_loop *loop)
{
	char err[256];
	struct dns_opts o = { .timeout_ms = 1000, .tries = 1, .cache_entries = -1 };
	struct dns *d = dns_new(loop, &o, servers, err, sizeof err);

	ck_assert_msg(d != NULL, "%s", err);
	return d;
}

START_TEST(pass_through_an_include)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct dns *d = resolver(loop);
	struct sockaddr_storage ss;
	size_t base = mem_in_use();
	struct spf_check *c;
	int calls = 0;

	client(&ss, "192.0.2.10");
	c = spf_check_new(d, &ss, "client.example", "a@pass.test", "mx.example", 1);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(spf_check_run(c, done_cb, &calls), 0);   /* never answered inside the call */
	ck_assert_int_eq(calls, 0);
	run_until(loop, &calls, 5);
	ck_assert_int_eq(calls, 1);
	ck_assert(spf_check_done(c));
	ck_assert_int_eq(spf_check_result(c), SPFR_PASS);
	ck_assert_int_eq(spf_check_fetches(c), 2);   /* pass.test, inc.pass.test */
	ck_assert_int_eq(spf_check_runs(c), 3);      /* one more run per answer */
	ck_assert_str_eq(spf_check_identity(c), "mailfrom");
	ck_assert_str_eq(spf_check_domain(c), "pass.test");
	spf_check_free(c);

	/* fail through mx: MX, then the exchange's A (the same term) */
	calls = 0;
	c = spf_check_new(d, &ss, "client.example", "b@fail.test", "mx.example", 1);
	ck_assert_int_eq(spf_check_run(c, done_cb, &calls), 0);
	run_until(loop, &calls, 5);
	ck_assert_int_eq(spf_check_result(c), SPFR_FAIL);
	ck_assert_int_eq(spf_check_fetches(c), 3);
	spf_check_free(c);
	ck_assert_uint_eq(mem_in_use(), base);   /* the cache's charge is returned with the check */
	dns_free(d);
	ev_loop_destroy(loop);
}
END_TEST

START_TEST(freed_while_waiting)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct dns *d = resolver(loop);
	struct sockaddr_storage ss;
	size_t base = mem_in_use();
	struct spf_check *c;
	struct dns_stats st;
	int calls = 0;

	client(&ss, "192.0.2.10");
	c = spf_check_new(d, &ss, "client.example", "a@slow.test", "mx.example", 1);
	ck_assert_int_eq(spf_check_run(c, done_cb, &calls), 0);
	spf_check_free(c);   /* the session went away: its lookup is cancelled */
	run_until(loop, &calls, 1.0);   /* the answer (0.4 s) comes and finds nobody */
	ck_assert_int_eq(calls, 0);
	dns_stats(d, &st);
	ck_assert_int_eq(st.pending, 0);
	ck_assert_uint_eq(mem_in_use(), base);
	dns_free(d);
	ev_loop_destroy(loop);
}
END_TEST

START_TEST(no_resolver_and_no_identity)
{
	struct sockaddr_storage ss;
	struct spf_check *c;
	int calls = 0;

	client(&ss, "192.0.2.10");
	c = spf_check_new(NULL, &ss, "client.example", "a@pass.test", "mx.example", 1);
	ck_assert_int_eq(spf_check_run(c, done_cb, &calls), 1);
	ck_assert_int_eq(spf_check_result(c), SPFR_TEMPERROR);
	ck_assert_int_eq(calls, 0);   /* known at once: no callback */
	spf_check_free(c);
	/* <> with an address literal for HELO, and with spf_helo_check off: none, no lookup */
	c = spf_check_new(NULL, &ss, "[192.0.2.10]", "", "mx.example", 1);
	ck_assert_int_eq(spf_check_run(c, done_cb, &calls), 1);
	ck_assert_int_eq(spf_check_result(c), SPFR_NONE);
	ck_assert_str_eq(spf_check_identity(c), "helo");
	spf_check_free(c);
	c = spf_check_new(NULL, &ss, "client.example", "", "mx.example", 0);
	ck_assert_int_eq(spf_check_run(c, done_cb, &calls), 1);
	ck_assert_int_eq(spf_check_result(c), SPFR_NONE);
	spf_check_free(c);
}
END_TEST

START_TEST(no_room_for_the_answers)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct dns *d = resolver(loop);
	struct sockaddr_storage ss;
	size_t base = mem_in_use();
	struct spf_check *c;
	int calls = 0;

	client(&ss, "192.0.2.10");
	c = spf_check_new(d, &ss, "client.example", "a@pass.test", "mx.example", 1);
	ck_assert_int_eq(spf_check_run(c, done_cb, &calls), 0);
	mem_set_limit(mem_in_use() + 16);   /* the answer cannot be kept (by c-ares or by the check) */
	run_until(loop, &calls, 5);
	mem_set_limit(0);
	ck_assert_int_eq(calls, 1);
	ck_assert_int_eq(spf_check_result(c), SPFR_TEMPERROR);
	ck_assert_msg(strcmp(spf_check_why(c), "out of memory") == 0 || strcmp(spf_check_why(c), "DNS lookup failure") == 0,
	    "%s", spf_check_why(c));
	spf_check_free(c);
	ck_assert_uint_eq(mem_in_use(), base);
	dns_free(d);
	ev_loop_destroy(loop);
}
END_TEST

START_TEST(received_spf_header)
{
	struct sockaddr_storage ss;
	struct spf_check *c;
	char buf[1024];
	int n;

	client(&ss, "192.0.2.10");
	c = spf_check_new(NULL, &ss, "client.example", "", "mx.example", 0);
	spf_check_run(c, done_cb, &n);
	n = spf_received_header(c, "client.example", "", "mx.example", buf, sizeof buf);
	ck_assert_int_gt(n, 0);
	ck_assert_str_eq(buf, "Received-SPF: None (helo) identity=helo; client-ip=192.0.2.10;\n\thelo=client.example;\n"
	    "\tenvelope-from=\"<>\";\n\treceiver=mx.example\n");
	ck_assert_int_eq(spf_received_header(c, "a\"b", "x y\\z@q", "mx.example", buf, 20), -1);   /* does not fit */
	n = spf_received_header(c, "a\"b", "x y\\z@q\r\n", "mx.example", buf, sizeof buf);
	ck_assert_msg(strstr(buf, "helo=\"a\\\"b\";") && strstr(buf, "envelope-from=\"x y\\\\z@q\";"), "%s", buf);
	spf_check_free(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("spf");
	TCase *tc = tcase_create("spf");
	SRunner *sr;
	int failed;

	start_server();
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, pass_through_an_include);
	tcase_add_test(tc, freed_while_waiting);
	tcase_add_test(tc, no_resolver_and_no_identity);
	tcase_add_test(tc, no_room_for_the_answers);
	tcase_add_test(tc, received_spf_header);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	stop_server();
	return failed ? 1 : 0;
}
