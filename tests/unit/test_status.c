/*
 * tests/unit/test_status.c: `frugal status`'s pure parts: the counters'
 * lines round-trip (core/stats.h), the bar, the terminal view fits 80
 * columns with every resource, the JSON keeps null for unknown, and the
 * Prometheus text puts HELP and TYPE before samples and omits unknowns.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd/status.h"

static char *render(void (*fn)(const struct status_view *, FILE *), const struct status_view *v)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	ck_assert_ptr_nonnull(f);
	fn(v, f);
	fclose(f);
	return out;
}

static void sample(struct status_view *v)
{
	int i;

	memset(v, 0, sizeof *v);
	v->running = 1;
	v->pid = 4242;
	v->now = 1000 + 3 * 3600 + 5;
	v->started = 1000;
	v->sessions = 12;
	v->sessions_limit = 180;
	v->deliveries_limit = 20;
	for (i = 0; i < STATS_COUNT; i++)
		v->stat[i] = i + 1;
	v->q_deferred = 7;
	snprintf(v->g[0].name, sizeof v->g[0].name, "numtcpsock");
	snprintf(v->g[0].key, sizeof v->g[0].key, "numtcpsock");
	v->g[0].used = 50; v->g[0].budget = 200; v->g[0].limit = 400;
	snprintf(v->g[1].name, sizeof v->g[1].name, "cgroup memory.max");
	snprintf(v->g[1].key, sizeof v->g[1].key, "memory.max");
	v->g[1].bytes = 1;
	v->g[1].used = 3LL << 20; v->g[1].budget = 123456789012LL; v->g[1].limit = -1;
	v->ngauge = 2;
}

START_TEST(stats_round_trip)
{
	long long v[STATS_COUNT], w[STATS_COUNT];
	char buf[1024];
	int i, n;

	for (i = 0; i < STATS_COUNT; i++)
		v[i] = 1000000000000LL + i;
	n = stats_format(v, buf, sizeof buf);
	ck_assert_int_gt(n, 0);
	stats_parse(buf, (size_t)n, w);
	for (i = 0; i < STATS_COUNT; i++)
		ck_assert(w[i] == v[i]);
	stats_parse("pid 3\nstat received 5\nstat bogus 9\n", 34, w);
	ck_assert(w[STATS_RECEIVED] == 5);
	ck_assert(w[STATS_DELIVERED] == -1);   /* absent: unknown */
	ck_assert_int_eq(stats_format(v, buf, 10), -1);   /* too small: refused, not cut */
}
END_TEST

START_TEST(bar_rounds_up_and_caps)
{
	char b[32];

	status_bar(b, 10, 0, 100);
	ck_assert_str_eq(b, "..........");
	status_bar(b, 10, 1, 1000);
	ck_assert_str_eq(b, "#.........");   /* one of a thousand still shows */
	status_bar(b, 10, 50, 100);
	ck_assert_str_eq(b, "#####.....");
	status_bar(b, 10, 500, 100);
	ck_assert_str_eq(b, "##########");
	status_bar(b, 10, 5, -1);
	ck_assert_str_eq(b, "          ");   /* no budget: no bar */
}
END_TEST

START_TEST(text_fits_80_columns)
{
	struct status_view v;
	char *out, *line, *save = NULL;

	sample(&v);
	out = render(status_print_text, &v);
	ck_assert_ptr_nonnull(strstr(out, "PID: 4242, up 3h00m05s"));
	ck_assert_ptr_nonnull(strstr(out, "12 now, 6 peak, limit 180"));
	ck_assert_ptr_nonnull(strstr(out, "[######"));
	ck_assert_ptr_nonnull(strstr(out, "3.0M / 115G"));
	ck_assert_ptr_nonnull(strstr(out, "unlimited"));
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		ck_assert_msg(strlen(line) <= 80, "%zu columns: %s", strlen(line), line);
	free(out);
	v.running = 0;
	out = render(status_print_text, &v);
	ck_assert_ptr_nonnull(strstr(out, "not running"));
	ck_assert_ptr_nonnull(strstr(out, "deferred 7"));
	ck_assert_ptr_null(strstr(out, "since start"));
	free(out);
}
END_TEST

START_TEST(json_nulls)
{
	struct status_view v;
	char *out;

	sample(&v);
	out = render(status_print_json, &v);
	ck_assert_ptr_nonnull(strstr(out, "\"running\":true,\"pid\":4242,\"uptime_seconds\":10805,"));
	ck_assert_ptr_nonnull(strstr(out, "\"unit\":\"bytes\",\"used\":3145728,\"budget\":123456789012,\"limit\":null"));
	free(out);
	v.running = 0;
	out = render(status_print_json, &v);
	ck_assert_ptr_nonnull(strstr(out, "\"running\":false,\"pid\":null,\"uptime_seconds\":null"));
	free(out);
}
END_TEST

START_TEST(prometheus_help_type_first)
{
	struct status_view v;
	char *out, *line, *save = NULL;
	char typed[64][64];
	int nt = 0, i;

	sample(&v);
	out = render(status_print_prometheus, &v);
	ck_assert_ptr_nonnull(strstr(out, "frugal_resource_used{resource=\"numtcpsock\"} 50\n"));
	ck_assert_ptr_nonnull(strstr(out, "frugal_resource_used_bytes{resource=\"memory.max\"} 3145728\n"));
	ck_assert_ptr_null(strstr(out, "frugal_resource_limit_bytes{"));   /* unlimited: no sample */
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char name[64];
		int found = 0;

		if (strncmp(line, "# TYPE ", 7) == 0) {
			ck_assert_int_eq(sscanf(line + 7, "%63s", typed[nt]), 1);
			nt++;
			continue;
		}
		if (line[0] == '#')
			continue;
		ck_assert_int_eq(sscanf(line, "%63[a-z_]", name), 1);
		for (i = 0; i < nt; i++)
			found |= strcmp(typed[i], name) == 0;
		ck_assert_msg(found, "sample before its TYPE: %s", line);
	}
	free(out);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("status");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int nf;

	tcase_add_test(tc, stats_round_trip);
	tcase_add_test(tc, bar_rounds_up_and_caps);
	tcase_add_test(tc, text_fits_80_columns);
	tcase_add_test(tc, json_nulls);
	tcase_add_test(tc, prometheus_help_type_first);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf == 0 ? 0 : 1;
}
