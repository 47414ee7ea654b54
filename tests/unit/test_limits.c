/*
 * tests/unit/test_limits.c: the limits room (limits/limits.h, limits/detect.h):
 * the beancounters parser on real and malformed samples, cgroup v1/v2
 * sample directories, file-nr, the budget arithmetic (share, reserve, the
 * binding resource), socket buffer sizing, stress hysteresis, admission at
 * the limit, the ledger, and the status file.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/fd.h"
#include "core/mem.h"
#include "limits/detect.h"
#include "limits/limits.h"

/* an OpenVZ 6 container, copied in shape from a real one */
static const char ubc_sample[] =
"Version: 2.5\n"
"       uid  resource                     held              maxheld              barrier                limit              failcnt\n"
"      101:  kmemsize                  2147135              4308992             14372700             14790164                    0\n"
"            lockedpages                     0                    0                  256                  256                    0\n"
"            privvmpages                 21785                47932               262144               292912                    0\n"
"            shmpages                      640                  656                21504                21504                    0\n"
"            dummy                           0                    0                    0                    0                    0\n"
"            numproc                        25                   43                  240                  240                    0\n"
"            physpages                    9170                20180                    0  9223372036854775807                    0\n"
"            vmguarpages                     0                    0                33792  9223372036854775807                    0\n"
"            oomguarpages                 9170                20180                26112  9223372036854775807                    0\n"
"            numtcpsock                     12                   31                  360                  360                    0\n"
"            numflock                        4                   10                  188                  206                    0\n"
"            numpty                          1                    2                   16                   16                    0\n"
"            numsiginfo                      0                   12                  256                  256                    0\n"
"            tcpsndbuf                   215040               894464              1720320              2703360                    0\n"
"            tcprcvbuf                   196608               761288              1720320              2703360                    0\n"
"            othersockbuf                 13872                61456              1126080              2097152                    0\n"
"            dgramrcvbuf                      0                 8472               262144               262144                    0\n"
"            numothersock                   26                   40                  120                  120                   12\n"
"            dcachesize                 401202               479802              3409920              3624960                    0\n"
"            numfile                       581                  976                 9312                 9312                    0\n"
"            dummy                           0                    0                    0                    0                    0\n"
"            dummy                           0                    0                    0                    0                    0\n"
"            dummy                           0                    0                    0                    0                    0\n"
"            numiptent                      10                   10                  128                  128                    0\n";

/* a host node: uid 0 and two containers */
static const char ubc_host[] =
"Version: 2.5\n"
"       uid  resource                     held              maxheld              barrier                limit              failcnt\n"
"      101:  kmemsize                  2147135              4308992             14372700             14790164                    0\n"
"            numtcpsock                     12                   31                  360                  360                    0\n"
"        0:  kmemsize                 12345678             23456789  9223372036854775807  9223372036854775807                    0\n"
"            numtcpsock                     90                  120  9223372036854775807  9223372036854775807                    0\n"
"      102:  kmemsize                  2147135              4308992             14372700             14790164                    0\n"
"            numtcpsock                      7                    8                   80                   80                    0\n";

static struct limits_ubc U;
static char err[160];

static int parse(const char *s)
{
	return limits_ubc_parse(s, strlen(s), &U, err, sizeof err);
}

START_TEST(ubc_real_sample)
{
	const struct limits_ubc_row *r;

	ck_assert_int_eq(parse(ubc_sample), 0);
	ck_assert_int_eq((int)U.uid, 101);
	ck_assert_int_eq(U.blocks, 1);
	ck_assert_int_eq(U.nrows, 24);
	r = limits_ubc_find(&U, "numothersock");
	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq((int)r->held, 26);
	ck_assert_int_eq((int)r->maxheld, 40);
	ck_assert_int_eq((int)r->barrier, 120);
	ck_assert_int_eq((int)r->limit, 120);
	ck_assert_int_eq((int)r->failcnt, 12);
	r = limits_ubc_find(&U, "physpages");
	ck_assert(r->limit == LIMITS_UNLIMITED);
	ck_assert_int_eq((int)limits_ubc_find(&U, "kmemsize")->barrier, 14372700);
	ck_assert_int_eq((int)limits_ubc_find(&U, "numiptent")->held, 10);
	ck_assert_ptr_null(limits_ubc_find(&U, "nosuch"));
}
END_TEST

START_TEST(ubc_host_picks_uid0)
{
	ck_assert_int_eq(parse(ubc_host), 0);
	ck_assert_int_eq(U.blocks, 3);
	ck_assert_int_eq((int)U.uid, 0);
	ck_assert_int_eq((int)limits_ubc_find(&U, "numtcpsock")->held, 90);
}
END_TEST

START_TEST(ubc_malformed)
{
	static const char *const bad[] = {
		"",
		"garbage\n",
		"Version: 3.0\n      101:  numtcpsock 1 2 3 4 5\n",
		"Version: 2.5\n",                                           /* no block */
		"Version: 2.5\n       uid  resource held\n",
		"Version: 2.5\n      101:  numtcpsock 1 2 3 4\n",           /* a value short */
		"Version: 2.5\n      101:  numtcpsock 1 2 3 4 5 6\n",       /* one too many */
		"Version: 2.5\n      101:  numtcpsock 1 2 x 4 5\n",
		"Version: 2.5\n      101:  numtcpsock 1 2 -3 4 5\n",
		"Version: 2.5\n            numtcpsock 1 2 3 4 5\n",         /* row before any block */
		"Version: 2.5\n      abc:  numtcpsock 1 2 3 4 5\n",
		"Version: 2.5\n      101:\n",
		"Version: 2.5\n      101:  numtcpsock 1 2 3 4 5",           /* cut before the newline */
		"Version: 2.5\n      101:  averyveryveryverylongresourcename 1 2 3 4 5\n",
	};
	size_t i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ck_assert_msg(parse(bad[i]) == -1, "sample %zu accepted", i);
		ck_assert_msg(err[0] != '\0', "sample %zu: no reason", i);
	}
	/* the real sample cut at every length: never a crash, never a half file */
	for (i = 0; i < sizeof ubc_sample - 1; i++) {
		int rc = limits_ubc_parse(ubc_sample, i, &U, err, sizeof err);
		if (rc == 0)
			ck_assert_int_eq(ubc_sample[i - 1], '\n');
	}
	/* binary junk */
	{
		char junk[512];
		for (i = 0; i < sizeof junk; i++)
			junk[i] = (char)(i * 37 + 11);
		ck_assert_int_eq(limits_ubc_parse(junk, sizeof junk, &U, err, sizeof err), -1);
	}
}
END_TEST

START_TEST(ubc_overflow_saturates)
{
	ck_assert_int_eq(parse("Version: 2.5\n 1: numfile 99999999999999999999999 0 18446744073709551615 9223372036854775807 0\n"), 0);
	ck_assert(U.rows[0].held == LLONG_MAX);
	ck_assert(U.rows[0].barrier == LIMITS_UNLIMITED);
}
END_TEST

static char tmpdir[64];

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

static void mktmp(void)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/test_limits.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void rmtmp(void)
{
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
	ck_assert_int_eq(system(cmd), 0);
}

static void snap_init(struct limits_snapshot *s)
{
	int k;

	memset(s, 0, sizeof *s);
	for (k = 0; k < LR_COUNT; k++) {
		s->r[k].limit = s->r[k].hardlimit = LIMITS_UNLIMITED;
		s->r[k].held = s->r[k].maxheld = s->r[k].failcnt = -1;
	}
	s->cg_oom_events = s->cg_max_events = -1;
}

START_TEST(ubc_detect_maps_resources)
{
	struct limits_snapshot s;
	long page = sysconf(_SC_PAGESIZE);

	mktmp();
	write_file(tmpdir, "ubc", ubc_sample);
	snap_init(&s);
	{
		char path[512];
		snprintf(path, sizeof path, "%s/ubc", tmpdir);
		limits_detect_beancounters(path, &s);
	}
	ck_assert_int_eq(s.nwarn, 0);
	ck_assert(s.found & LIMITS_SRC_BEANCOUNTERS);
	ck_assert_str_eq(s.r[LR_NUMTCPSOCK].source, "beancounters");
	ck_assert_int_eq((int)s.r[LR_NUMTCPSOCK].limit, 360);
	ck_assert_int_eq((int)s.r[LR_NUMOTHERSOCK].failcnt, 12);
	ck_assert_int_eq((int)s.r[LR_NUMFILE].limit, 9312);
	/* privvmpages: the barrier, in bytes */
	ck_assert(s.r[LR_MEMORY].limit == 262144LL * page);
	ck_assert(s.r[LR_MEMORY].hardlimit == 292912LL * page);
	ck_assert(s.r[LR_MEMORY].held == 21785LL * page);
	ck_assert_int_eq((int)s.r[LR_TCPSNDBUF].limit, 1720320);

	/* truncated: a warning, and no beancounters at all rather than half */
	write_file(tmpdir, "ubc", "Version: 2.5\n      101:  numtcpsock 1 2 3");
	snap_init(&s);
	{
		char path[512];
		snprintf(path, sizeof path, "%s/ubc", tmpdir);
		limits_detect_beancounters(path, &s);
	}
	ck_assert_int_eq(s.nwarn, 1);
	ck_assert_ptr_nonnull(strstr(s.warn[0], "ignored"));
	ck_assert_ptr_null(s.r[LR_NUMTCPSOCK].source);
	ck_assert(!(s.found & LIMITS_SRC_BEANCOUNTERS));
	/* absent: quiet */
	snap_init(&s);
	limits_detect_beancounters("/nonexistent/user_beancounters", &s);
	ck_assert_int_eq(s.nwarn, 0);
	rmtmp();
}
END_TEST

START_TEST(vswap_memory_is_physpages)
{
	struct limits_snapshot s;
	char path[512];
	long page = sysconf(_SC_PAGESIZE);

	mktmp();
	write_file(tmpdir, "ubc",
	    "Version: 2.5\n"
	    "       uid  resource   held maxheld barrier limit failcnt\n"
	    "      7:  privvmpages  100 200 9223372036854775807 9223372036854775807 0\n"
	    "          physpages    50 60 0 131072 3\n");
	snprintf(path, sizeof path, "%s/ubc", tmpdir);
	snap_init(&s);
	limits_detect_beancounters(path, &s);
	ck_assert_str_eq(s.r[LR_MEMORY].source, "beancounters physpages");
	ck_assert(s.r[LR_MEMORY].limit == 131072LL * page);
	ck_assert_int_eq((int)s.r[LR_MEMORY].failcnt, 3);
	rmtmp();
}
END_TEST

START_TEST(cgroup_values)
{
	long long v = 0;

	ck_assert_int_eq(limits_cgroup_parse_value("max\n", 4, &v), 0);
	ck_assert(v == LIMITS_UNLIMITED);
	ck_assert_int_eq(limits_cgroup_parse_value("268435456\n", 10, &v), 0);
	ck_assert(v == 268435456LL);
	ck_assert_int_eq(limits_cgroup_parse_value("9223372036854771712\n", 20, &v), 0);
	ck_assert(v == LIMITS_UNLIMITED);   /* v1's "no limit" */
	ck_assert_int_eq(limits_cgroup_parse_value("", 0, &v), -1);
	ck_assert_int_eq(limits_cgroup_parse_value("12 34\n", 6, &v), -1);
	ck_assert_int_eq(limits_cgroup_parse_value("-1\n", 3, &v), -1);
	ck_assert_int_eq(limits_cgroup_parse_value("maxx", 4, &v), -1);
	ck_assert_int_eq(limits_cgroup_parse_value("1\n2\n", 4, &v), -1);
	{
		const char ev[] = "low 0\nhigh 0\nmax 17\noom 2\noom_kill 1\n";
		ck_assert_int_eq(limits_cgroup_parse_keyed(ev, sizeof ev - 1, "oom", &v), 0);
		ck_assert_int_eq((int)v, 2);
		ck_assert_int_eq(limits_cgroup_parse_keyed(ev, sizeof ev - 1, "max", &v), 0);
		ck_assert_int_eq((int)v, 17);
		ck_assert_int_eq(limits_cgroup_parse_keyed(ev, sizeof ev - 1, "oom_group_kill", &v), -1);
		ck_assert_int_eq(limits_cgroup_parse_keyed("oom x\n", 6, "oom", &v), -1);
	}
}
END_TEST

START_TEST(cgroup_self)
{
	char out[256];
	const char v2[] = "0::/system.slice/frugal.service\n";
	const char v1[] = "12:pids:/a\n4:memory:/docker/abc\n3:cpu,cpuacct:/c\n1:name=systemd:/d\n0::/e\n";

	ck_assert_int_eq(limits_cgroup_parse_self(v2, sizeof v2 - 1, NULL, out, sizeof out), 0);
	ck_assert_str_eq(out, "/system.slice/frugal.service");
	ck_assert_int_eq(limits_cgroup_parse_self(v1, sizeof v1 - 1, "memory", out, sizeof out), 0);
	ck_assert_str_eq(out, "/docker/abc");
	ck_assert_int_eq(limits_cgroup_parse_self(v1, sizeof v1 - 1, "cpuacct", out, sizeof out), 0);
	ck_assert_str_eq(out, "/c");
	ck_assert_int_eq(limits_cgroup_parse_self(v1, sizeof v1 - 1, NULL, out, sizeof out), 0);
	ck_assert_str_eq(out, "/e");
	ck_assert_int_eq(limits_cgroup_parse_self(v1, sizeof v1 - 1, "blkio", out, sizeof out), -1);
	ck_assert_int_eq(limits_cgroup_parse_self("junk", 4, NULL, out, sizeof out), -1);
	ck_assert_int_eq(limits_cgroup_parse_self("0::", 3, NULL, out, sizeof out), -1);
	ck_assert_int_eq(limits_cgroup_parse_self("10::/x\n", 7, NULL, out, sizeof out), -1);
}
END_TEST

START_TEST(cgroup_v2_dir)
{
	struct limits_snapshot s;

	mktmp();
	write_file(tmpdir, "cgroup.controllers", "cpu io memory pids\n");
	write_file(tmpdir, "memory.max", "268435456\n");
	write_file(tmpdir, "memory.current", "100000000\n");
	write_file(tmpdir, "memory.stat", "anon 50000000\nfile 50000000\ninactive_file 40000000\n");
	write_file(tmpdir, "memory.events", "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n");
	write_file(tmpdir, "pids.max", "max\n");
	write_file(tmpdir, "pids.current", "7\n");
	snap_init(&s);
	limits_detect_cgroup(tmpdir, &s);
	ck_assert_int_eq(s.cgroup_version, 2);
	ck_assert(s.found & LIMITS_SRC_CGROUP);
	ck_assert_str_eq(s.r[LR_CG_MEMORY].source, "cgroup v2");
	ck_assert(s.r[LR_CG_MEMORY].limit == 268435456LL);
	ck_assert(s.r[LR_CG_MEMORY].held == 60000000LL);   /* page cache left out */
	ck_assert_int_eq((int)s.r[LR_CG_MEMORY].failcnt, 5);
	ck_assert_int_eq((int)s.cg_oom_events, 1);
	ck_assert(s.r[LR_CG_PIDS].limit == LIMITS_UNLIMITED);
	ck_assert_int_eq((int)s.r[LR_CG_PIDS].held, 7);

	/* garbage in memory.max: a warning, no limit, no crash */
	write_file(tmpdir, "memory.max", "\x01\x02zz\n");
	snap_init(&s);
	limits_detect_cgroup(tmpdir, &s);
	ck_assert_ptr_null(s.r[LR_CG_MEMORY].source);
	ck_assert_int_ge(s.nwarn, 1);
	rmtmp();
}
END_TEST

START_TEST(cgroup_v1_dir)
{
	struct limits_snapshot s;
	char dir[300];

	mktmp();
	snprintf(dir, sizeof dir, "%s/memory", tmpdir);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	write_file(dir, "memory.limit_in_bytes", "536870912\n");
	write_file(dir, "memory.usage_in_bytes", "300000000\n");
	write_file(dir, "memory.failcnt", "4\n");
	write_file(dir, "memory.stat", "cache 1\ntotal_inactive_file 100000000\n");
	snprintf(dir, sizeof dir, "%s/pids", tmpdir);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	write_file(dir, "pids.max", "64\n");
	write_file(dir, "pids.current", "3\n");
	snap_init(&s);
	limits_detect_cgroup(tmpdir, &s);
	ck_assert_int_eq(s.cgroup_version, 1);
	ck_assert_str_eq(s.r[LR_CG_MEMORY].source, "cgroup v1");
	ck_assert(s.r[LR_CG_MEMORY].limit == 536870912LL);
	ck_assert(s.r[LR_CG_MEMORY].held == 200000000LL);
	ck_assert_int_eq((int)s.r[LR_CG_MEMORY].failcnt, 4);
	ck_assert_int_eq((int)s.r[LR_CG_PIDS].limit, 64);

	/* v1 unlimited: known, but not a container limit */
	snprintf(dir, sizeof dir, "%s/memory", tmpdir);
	write_file(dir, "memory.limit_in_bytes", "9223372036854771712\n");
	snprintf(dir, sizeof dir, "%s/pids", tmpdir);
	write_file(dir, "pids.max", "max\n");
	snap_init(&s);
	limits_detect_cgroup(tmpdir, &s);
	ck_assert(s.r[LR_CG_MEMORY].limit == LIMITS_UNLIMITED);
	ck_assert(!(s.found & LIMITS_SRC_CGROUP));
	rmtmp();
}
END_TEST

START_TEST(filenr)
{
	long long a, m;

	ck_assert_int_eq(limits_filenr_parse("450\t0\t2466167\n", 14, &a, &m), 0);
	ck_assert_int_eq((int)a, 450);
	ck_assert_int_eq((int)m, 2466167);
	ck_assert_int_eq(limits_filenr_parse("1 0 9223372036854775807\n", 24, &a, &m), 0);
	ck_assert(m == LIMITS_UNLIMITED);
	ck_assert_int_eq(limits_filenr_parse("1 0\n", 4, &a, &m), -1);
	ck_assert_int_eq(limits_filenr_parse("1 0 5 7\n", 8, &a, &m), -1);
	ck_assert_int_eq(limits_filenr_parse("a b c", 5, &a, &m), -1);
}
END_TEST

START_TEST(res_budget_share_and_reserve)
{
	/* half of an idle container's 360 */
	ck_assert_int_eq((int)limits_res_budget(360, 12, 0, 50, 5), 180);
	/* others hold 300: 360 - 18 (5%) - 300 = 42 left */
	ck_assert_int_eq((int)limits_res_budget(360, 300, 0, 50, 5), 42);
	/* frugal's own use is not "others" */
	ck_assert_int_eq((int)limits_res_budget(360, 300, 100, 50, 5), 142);
	/* a full container: nothing, never negative */
	ck_assert_int_eq((int)limits_res_budget(360, 400, 0, 50, 5), 0);
	/* held unknown: the share alone */
	ck_assert_int_eq((int)limits_res_budget(360, -1, 0, 50, 5), 180);
	ck_assert(limits_res_budget(LIMITS_UNLIMITED, 5, 0, 50, 5) == LIMITS_UNLIMITED);
	/* huge limits do not overflow */
	ck_assert(limits_res_budget(LLONG_MAX - 1, 0, 0, 50, 5) > LLONG_MAX / 3);
}
END_TEST

static struct limits_params P;

static void params(void)
{
	limits_params_default(&P);
	P.listeners = 1;
}

/* frugal wizard's words: the limit that binds and the concurrency derived from it */
START_TEST(describe_in_plain_words)
{
	struct conf_diags d;
	struct conf *c = conf_load_text("limits_source = manual\nlimit_numtcpsock = 360\n", "t.conf", &d);
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	conf_diags_free(&d);
	ck_assert_ptr_nonnull(c);
	f = open_memstream(&text, &len);
	ck_assert_ptr_nonnull(f);
	limits_describe(c, f);
	fclose(f);
	ck_assert_msg(strstr(text, "numtcpsock 360 (manual)") != NULL, "%s", text);
	ck_assert_msg(strstr(text, "up to 158 SMTP sessions at once (bound by numtcpsock)") != NULL, "%s", text);
	free(text);
	conf_unref(c);
}
END_TEST

START_TEST(compute_bound_by_numtcpsock)
{
	struct limits_snapshot s;
	struct limits_own own = { 0 };
	struct limits_budget b;

	params();
	snap_init(&s);
	s.r[LR_NUMTCPSOCK] = (struct limits_res_state){ "beancounters", 360, 360, 0, 0, 0 };
	s.r[LR_NOFILE] = (struct limits_res_state){ "rlimit", 4096, 4096, 5, -1, -1 };
	limits_compute(&P, &s, &own, &b);
	ck_assert_int_eq((int)b.pool[LP_TCP], 180);
	ck_assert_int_eq((int)b.pool_by[LP_TCP], LR_NUMTCPSOCK);
	ck_assert_int_eq((int)b.pool[LP_FD], 4096 - LIMITS_NOFILE_RESERVE);
	/* deliveries: a quarter of (180 - 1 listener) = 44, capped at 20 */
	ck_assert_int_eq((int)b.deliveries, LIMITS_DELIVERY_MAX);
	/* sessions: 180 - 1 listener - 1 kept for a 421 (LIMITS_TCP_REFUSAL) - 20 deliveries */
	ck_assert_int_eq((int)b.sessions, 158);
	ck_assert_str_eq(b.sessions_by, "numtcpsock");
	ck_assert_int_eq(b.sndbuf, 0);   /* no tcpsndbuf limit: the kernel's */

	/* descriptors bind when RLIMIT_NOFILE is small */
	s.r[LR_NOFILE].limit = 128;
	limits_compute(&P, &s, &own, &b);
	ck_assert_str_eq(b.sessions_by, "RLIMIT_NOFILE");
	/* 128 - 16 reserve = 112 fds; -16 fixed = 96; D = 96/4/2 = 12; S = 96 - 24 */
	ck_assert_int_eq((int)b.deliveries, 12);
	ck_assert_int_eq((int)b.sessions, 72);

	/* a configured value overrides */
	P.smtpd_concurrency = 7;
	P.delivery_concurrency = 3;
	limits_compute(&P, &s, &own, &b);
	ck_assert_int_eq((int)b.sessions, 7);
	ck_assert_str_eq(b.sessions_by, "smtpd_concurrency_limit");
	ck_assert_int_eq((int)b.deliveries, 3);
}
END_TEST

START_TEST(compute_memory_and_buffers)
{
	struct limits_snapshot s;
	struct limits_own own = { 0 };
	struct limits_budget b;

	params();
	snap_init(&s);
	s.r[LR_NUMTCPSOCK] = (struct limits_res_state){ "beancounters", 1000, 1000, 0, 0, 0 };
	/* 1720320 bytes of tcpsndbuf: half is frugal's; 860160 / (2 * 4096) = 105 sessions */
	s.r[LR_TCPSNDBUF] = (struct limits_res_state){ "beancounters", 1720320, 2703360, 0, 0, 0 };
	s.r[LR_TCPRCVBUF] = (struct limits_res_state){ "beancounters", 1720320, 2703360, 0, 0, 0 };
	limits_compute(&P, &s, &own, &b);
	ck_assert_int_eq((int)b.sessions, 105);
	ck_assert_str_eq(b.sessions_by, "tcpsndbuf");
	/* sessions x (2 x buffer) fit the share */
	ck_assert_int_ge(b.sndbuf, LIMITS_BUF_MIN);
	ck_assert(b.sessions * 2LL * b.sndbuf <= 860160);
	ck_assert(b.sessions * 2LL * b.rcvbuf <= 860160);

	/* a 64 MiB cgroup: memory binds */
	snap_init(&s);
	s.r[LR_NUMTCPSOCK] = (struct limits_res_state){ "beancounters", 1000, 1000, 0, 0, 0 };
	s.r[LR_CG_MEMORY] = (struct limits_res_state){ "cgroup v2", 64LL << 20, 64LL << 20, 0, -1, -1 };
	limits_compute(&P, &s, &own, &b);
	ck_assert_str_eq(b.sessions_by, "memory.max");
	ck_assert_int_eq((int)b.pool[LP_MEM], 32 << 20);
	/* (32M - 4M - D x 64K) / (4K + 16K + 128K) */
	ck_assert_int_eq((int)b.sessions,
	    (int)(((28LL << 20) - b.deliveries * LIMITS_DELIVERY_MEM) / (4096 + 16384 + 131072)));
	{
		long long plain = b.sessions;

		/* TLS offered: every session counted at its TLS cost (32K more) */
		P.session_mem = LIMITS_SESSION_MEM + LIMITS_TLS_SESSION_MEM;
		limits_compute(&P, &s, &own, &b);
		ck_assert_int_eq((int)b.sessions,
		    (int)(((28LL << 20) - b.deliveries * LIMITS_DELIVERY_MEM) / (4096 + 32768 + 16384 + 131072)));
		ck_assert_int_lt((int)b.sessions, (int)plain);
		P.session_mem = LIMITS_SESSION_MEM;
	}

	/* nothing left: still one session while the pools are not empty */
	snap_init(&s);
	s.r[LR_NUMTCPSOCK] = (struct limits_res_state){ "beancounters", 6, 6, 0, 0, 0 };
	limits_compute(&P, &s, &own, &b);
	ck_assert_int_eq((int)b.sessions, 1);
	/* a full container: none */
	s.r[LR_NUMTCPSOCK].held = 6;
	limits_compute(&P, &s, &own, &b);
	ck_assert_int_eq((int)b.pool[LP_TCP], 0);
	ck_assert_int_eq((int)b.sessions, 0);
}
END_TEST

START_TEST(stress_hysteresis)
{
	struct limits_snapshot s;
	char why[128];
	int on;

	snap_init(&s);
	on = limits_stress_eval(0, 80, &s, 159, 200, why, sizeof why);
	ck_assert_int_eq(on, 0);
	on = limits_stress_eval(0, 80, &s, 160, 200, why, sizeof why);
	ck_assert_int_eq(on, 1);
	ck_assert_str_eq(why, "sessions 160/200");
	/* stays on down to 70% */
	ck_assert_int_eq(limits_stress_eval(1, 80, &s, 150, 200, why, sizeof why), 1);
	ck_assert_int_eq(limits_stress_eval(1, 80, &s, 140, 200, why, sizeof why), 1);
	ck_assert_int_eq(limits_stress_eval(1, 80, &s, 139, 200, why, sizeof why), 0);
	/* container-wide: numothersock held by someone else */
	s.r[LR_NUMOTHERSOCK] = (struct limits_res_state){ "beancounters", 120, 120, 100, 100, 0 };
	ck_assert_int_eq(limits_stress_eval(0, 80, &s, 1, 200, why, sizeof why), 1);
	ck_assert_str_eq(why, "numothersock 100/120");
}
END_TEST

/* ---- the daemon's ledger, with a scripted container ---- */

static struct limits_snapshot scripted;

static void scripted_detect(const struct limits_params *p, struct limits_snapshot *s)
{
	*s = scripted;
}

static int stress_calls, stress_last;

static void on_stress(int on, void *arg)
{
	stress_calls++;
	stress_last = on;
	ck_assert_ptr_eq(arg, &stress_calls);
}

static void ledger_setup(long long tcp, long long nofile)
{
	snap_init(&scripted);
	scripted.r[LR_NUMTCPSOCK] = (struct limits_res_state){ "beancounters", tcp, tcp, 0, 0, 0 };
	scripted.r[LR_NUMOTHERSOCK] = (struct limits_res_state){ "beancounters", 40, 40, 0, 0, 0 };
	scripted.r[LR_NOFILE] = (struct limits_res_state){ "rlimit", nofile, nofile, 5, -1, -1 };
	scripted.found = LIMITS_SRC_BEANCOUNTERS;
	limits_set_detect_override(scripted_detect);
	params();
	P.delivery_concurrency = 2;
	limits_init_params(NULL, &P);
}

static void ledger_teardown(void)
{
	limits_shutdown();
	limits_set_detect_override(NULL);
	mem_set_limit(0);
}

START_TEST(admission_at_the_limit)
{
	int i, n;

	ledger_setup(24, 1024);
	/* 12 TCP - 1 listener - 1 kept for a 421 - 2 deliveries */
	n = limits_smtpd_concurrency();
	ck_assert_int_eq(n, 8);
	for (i = 0; i < n; i++)
		ck_assert_int_eq(limits_session_admit(), 1);
	ck_assert_int_eq(limits_sessions(), n);
	ck_assert_int_eq(limits_session_admit(), 0);
	ck_assert_int_eq(limits_sessions(), n);
	limits_session_done();
	ck_assert_int_eq(limits_session_admit(), 1);
	for (i = 0; i < n; i++)
		limits_session_done();
	ck_assert_int_eq(limits_sessions(), 0);
	ledger_teardown();
}
END_TEST

START_TEST(stress_callbacks_fire_on_change)
{
	int i;

	ledger_setup(24, 1024);   /* 8 sessions: on at 7 (>= 6.4), off below 5.6 */
	limits_on_stress(on_stress, &stress_calls);
	stress_calls = 0;
	for (i = 0; i < 6; i++)
		limits_session_admit();
	ck_assert_int_eq(limits_stress(), 0);
	limits_session_admit();   /* 7/8 = 88% */
	ck_assert_int_eq(limits_stress(), 1);
	ck_assert_int_eq(stress_calls, 1);
	ck_assert_int_eq(stress_last, 1);
	limits_session_done();    /* 7/9 = 77%: hysteresis keeps it on */
	ck_assert_int_eq(limits_stress(), 1);
	limits_session_done();    /* 6/9 = 66% */
	ck_assert_int_eq(limits_stress(), 0);
	ck_assert_int_eq(stress_calls, 2);
	ck_assert_int_eq(stress_last, 0);
	for (i = 0; i < 6; i++)
		limits_session_done();
	/* the container fills up: a resample turns it on without any session */
	scripted.r[LR_NUMOTHERSOCK].held = 39;
	limits_resample();
	ck_assert_int_eq(limits_stress(), 1);
	scripted.r[LR_NUMOTHERSOCK].held = 2;
	limits_resample();
	ck_assert_int_eq(limits_stress(), 0);
	ledger_teardown();
}
END_TEST

/*
 * The budget reaches the descriptor funnel (core/fd.h): opens past a pool
 * fail with EMFILE, kinds have their own pools, everything shares the
 * descriptor pool, and counts follow opens and closes exactly.
 */
START_TEST(funnel_caps)
{
	int tcp[13], sp[2][2], files[30], i;
	const char *why = NULL;

	ledger_setup(24, 1024);
	/* 12 TCP sockets in the budget, one of them kept for the 421 of a refused client */
	for (i = 0; i < 11; i++)
		ck_assert_int_ge(tcp[i] = fd_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), 0);
	errno = 0;
	ck_assert_int_eq(fd_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), -1);
	ck_assert_int_eq(errno, EMFILE);
	ck_assert_int_eq((int)fd_count(FD_TCP), 11);
	/* the warning names the pool that set the cap, not RLIMIT_NOFILE; unix sockets have room */
	ck_assert_str_eq(limits_socket_refusal(0), "numtcpsock");
	ck_assert_ptr_null(limits_socket_refusal(1));
	ck_assert_int_eq(limits_tcp_admit(&why), 1);
	/* an accepted socket over the budget: counted, and admission says why; the 12th, the refusal's */
	ck_assert_int_ge(tcp[11] = dup(tcp[0]), 0);
	fd_received(tcp[11], FD_TCP);
	ck_assert_int_eq(limits_tcp_admit(&why), 0);
	ck_assert_str_eq(why, "numtcpsock");
	ck_assert_int_eq((int)fd_count(FD_TCP), 12);
	tcp[12] = -1;
	/* other pools are separate: 20 non-TCP sockets */
	for (i = 0; i < 10; i++) {
		ck_assert_int_eq(fd_socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp[i & 1]), 0);
		if (i < 9) {
			fd_close(sp[i & 1][0]);
			fd_close(sp[i & 1][1]);
		}
	}
	ck_assert_int_eq((int)fd_count(FD_SOCK), 2);
	ck_assert_int_ge(files[0] = fd_open("/dev/null", O_RDONLY | O_CLOEXEC), 0);
	ck_assert_int_eq((int)fd_total(), 12 + 2 + 1);
	for (i = 0; i < 12; i++)
		fd_close(tcp[i]);
	fd_close(sp[1][0]);
	fd_close(sp[1][1]);
	fd_close(files[0]);
	ck_assert_int_eq((int)fd_total(), 0);

	/* descriptors: RLIMIT_NOFILE 40 - 10 reserve = 30 for every kind together */
	ledger_teardown();
	ledger_setup(1000, 40);
	for (i = 0; i < 25; i++)
		ck_assert_int_ge(files[i] = fd_open("/dev/null", O_RDONLY | O_CLOEXEC), 0);
	for (i = 0; i < 5; i++)
		ck_assert_int_ge(tcp[i] = fd_socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0), 0);
	errno = 0;
	ck_assert_int_eq(fd_socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp[0]), -1);
	ck_assert_int_eq(errno, EMFILE);
	ck_assert_str_eq(limits_socket_refusal(1), "RLIMIT_NOFILE");
	ck_assert_str_eq(limits_socket_refusal(0), "RLIMIT_NOFILE");
	ck_assert_int_eq(fd_open("/dev/null", O_RDONLY | O_CLOEXEC), -1);
	for (i = 0; i < 25; i++)
		fd_close(files[i]);
	for (i = 0; i < 5; i++)
		fd_close(tcp[i]);
	ledger_teardown();
	/* no budget, no cap: an EMFILE is the kernel's */
	ck_assert_ptr_null(limits_socket_refusal(0));
	ck_assert_int_ge(files[0] = fd_open("/dev/null", O_RDONLY | O_CLOEXEC), 0);
	fd_close(files[0]);
}
END_TEST

/* The audit sees what the kernel sees, and sees a descriptor closed behind the funnel's back. */
START_TEST(funnel_audit)
{
	long long kernel, ledger;
	int a, b;

	fd_adopt_open();   /* what Check and libc hold */
	ck_assert_int_eq(fd_audit(&kernel, &ledger), 0);
	ck_assert_int_eq((int)kernel, (int)ledger);
	a = fd_open("/dev/null", O_RDONLY | O_CLOEXEC);
	b = fd_socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_eq(fd_audit(&kernel, &ledger), 0);
	ck_assert_int_eq((int)kernel, (int)ledger);
	close(a);   /* not through the funnel: drift */
	ck_assert_int_eq(fd_audit(&kernel, &ledger), 0);
	ck_assert_int_eq((int)kernel, (int)ledger - 1);
	fd_close(b);
}
END_TEST

START_TEST(resample_follows_the_container)
{
	int before;

	ledger_setup(400, 4096);
	before = limits_smtpd_concurrency();
	ck_assert_int_eq(before, 200 - 1 - 1 - 2);
	/* someone else takes 300 TCP sockets: 400 - 20 - 300 = 80 left */
	scripted.r[LR_NUMTCPSOCK].held = 300;
	limits_resample();
	ck_assert_int_eq(limits_smtpd_concurrency(), 80 - 1 - 1 - 2);
	/* a garbage read keeps the last good values instead of "unlimited" */
	scripted.r[LR_NUMTCPSOCK].source = NULL;
	scripted.r[LR_NUMTCPSOCK].limit = LIMITS_UNLIMITED;
	limits_resample();
	ck_assert_int_eq(limits_smtpd_concurrency(), 80 - 1 - 1 - 2);
	limits_note_failure("numtcpsock", ENOMEM);   /* no loop: logs, never crashes */
	ledger_teardown();
}
END_TEST

START_TEST(memory_budget_reaches_the_allocator)
{
	ledger_setup(400, 4096);
	ck_assert_int_eq((int)mem_limit(), 0);
	scripted.r[LR_MEMORY] = (struct limits_res_state){ "manual", 256LL << 20, 256LL << 20, -1, -1, -1 };
	limits_resample();
	ck_assert_int_eq((int)mem_limit(), 128 << 20);
	ledger_teardown();
	ck_assert_int_eq((int)mem_limit(), 0);
}
END_TEST

START_TEST(status_file)
{
	int sock[2];
	struct limits_status st, back;
	char buf[4096], path[512];
	struct stat sb;
	long n;
	int len;

	memset(&st, 0, sizeof st);
	st.pid = 4242;
	st.time = 1700000000;
	st.own.tcp = 3;
	st.own.mem = 123456;
	st.sessions_limit = 180;
	st.stress = 1;
	for (n = 0; n < LR_COUNT; n++)
		st.failcnt_start[n] = -1;
	st.failcnt_start[LR_NUMOTHERSOCK] = 12;
	len = limits_status_format(&st, buf, sizeof buf);
	ck_assert_int_gt(len, 0);
	ck_assert_int_eq(limits_status_parse(buf, (size_t)len, &back), 0);
	ck_assert_int_eq((int)back.pid, 4242);
	ck_assert_int_eq((int)back.own.tcp, 3);
	ck_assert_int_eq((int)back.own.mem, 123456);
	ck_assert_int_eq((int)back.sessions_limit, 180);
	ck_assert_int_eq(back.stress, 1);
	ck_assert_int_eq((int)back.failcnt_start[LR_NUMOTHERSOCK], 12);
	ck_assert_int_eq((int)back.failcnt_start[LR_NUMTCPSOCK], -1);
	ck_assert_int_eq(limits_status_parse("garbage", 7, &back), -1);
	ck_assert_int_eq(limits_status_format(&st, buf, 10), -1);

	/* the daemon writes it on every sample, readable by anyone */
	mktmp();
	snprintf(path, sizeof path, "%s/status", tmpdir);   /* the queue's status/, as spool_open makes it */
	ck_assert_int_eq(mkdir(path, 0755), 0);
	snprintf(path, sizeof path, "%s/%s", tmpdir, LIMITS_STATUS_NAME);
	limits_set_status_path(path);
	ledger_setup(400, 4096);
	ck_assert_int_ge(sock[0] = fd_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), 0);
	ck_assert_int_ge(sock[1] = fd_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), 0);
	limits_resample();
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq((int)(sb.st_mode & 0777), 0644);
	n = limits_read_file(path, buf, sizeof buf);
	ck_assert_int_gt((int)n, 0);
	ck_assert_int_eq(limits_status_parse(buf, (size_t)n, &back), 0);
	ck_assert_int_eq((int)back.pid, (int)getpid());
	ck_assert_int_eq((int)back.own.tcp, 2);
	ck_assert_int_eq((int)back.sessions_limit, limits_smtpd_concurrency());
	fd_close(sock[0]);
	fd_close(sock[1]);
	ledger_teardown();
	/* gone once the daemon stops: "daemon not running" */
	ck_assert_int_eq(stat(path, &sb), -1);
	limits_set_status_path(NULL);
	rmtmp();
}
END_TEST

START_TEST(params_from_conf)
{
	struct conf_diags d;
	struct conf *c;
	struct limits_params p;

	memset(&d, 0, sizeof d);
	c = conf_load_text("limits_source = beancounters\n"
	    "beancounters_file = /tmp/x.ubc\n"
	    "limits_share = 30%\n"
	    "limits_reserve = 10%\n"
	    "limit_numtcpsock = 100\n"
	    "smtpd_concurrency_limit = 7\n"
	    "smtpd_listen = 0.0.0.0:25 [::]:25\n"
	    "submission_listen = 0.0.0.0:587\n", "test.conf", &d);
	ck_assert_ptr_nonnull(c);
	limits_params_from_conf(c, &p);
	ck_assert_int_eq(p.sources, LIMITS_SRC_BEANCOUNTERS);
	ck_assert_str_eq(p.beancounters_file, "/tmp/x.ubc");
	ck_assert_int_eq(p.share, 30);
	ck_assert_int_eq(p.reserve, 10);
	ck_assert_int_eq((int)p.manual_numtcpsock, 100);
	ck_assert_int_eq((int)p.manual_numfile, 0);
	ck_assert_int_eq((int)p.smtpd_concurrency, 7);
	ck_assert_int_eq((int)p.delivery_concurrency, 0);
	ck_assert_int_eq(p.listeners, 3);
	ck_assert_int_eq((int)p.session_mem, LIMITS_SESSION_MEM);   /* no certificate: no TLS */
	conf_unref(c);
	conf_diags_free(&d);

	/* a certificate (and the default level may): sessions cost their TLS state */
	memset(&d, 0, sizeof d);
	c = conf_load_text("smtpd_tls_cert_file = /etc/ssl/x.pem\n", "test.conf", &d);
	ck_assert_ptr_nonnull(c);
	limits_params_from_conf(c, &p);
	ck_assert_int_eq((int)p.session_mem, LIMITS_SESSION_MEM + LIMITS_TLS_SESSION_MEM);
	conf_unref(c);
	conf_diags_free(&d);
	memset(&d, 0, sizeof d);
	c = conf_load_text("smtpd_tls_cert_file = /etc/ssl/x.pem\nsmtpd_tls_security_level = none\n", "test.conf", &d);
	ck_assert_ptr_nonnull(c);
	limits_params_from_conf(c, &p);
	ck_assert_int_eq((int)p.session_mem, LIMITS_SESSION_MEM);
	/* outbound TLS at the default level may: every delivery costs a TLS client connection */
	ck_assert_int_eq((int)p.delivery_mem, LIMITS_DELIVERY_MEM + LIMITS_TLS_CLIENT_MEM);
	conf_unref(c);
	conf_diags_free(&d);
	memset(&d, 0, sizeof d);
	c = conf_load_text("smtp_tls_security_level = none\n", "test.conf", &d);
	ck_assert_ptr_nonnull(c);
	limits_params_from_conf(c, &p);
	ck_assert_int_eq((int)p.delivery_mem, LIMITS_DELIVERY_MEM);
	conf_unref(c);
	conf_diags_free(&d);
}
END_TEST

START_TEST(manual_overrides_detection)
{
	struct limits_params p;
	struct limits_snapshot s;
	char path[128];

	mktmp();
	write_file(tmpdir, "ubc", ubc_sample);
	snprintf(path, sizeof path, "%s/ubc", tmpdir);
	limits_params_default(&p);
	snprintf(p.beancounters_file, sizeof p.beancounters_file, "%s", path);
	snprintf(p.cgroup_root, sizeof p.cgroup_root, "%s/none", tmpdir);
	p.manual_numtcpsock = 50;
	limits_detect(&p, &s);
	ck_assert_str_eq(s.r[LR_NUMTCPSOCK].source, "manual");
	ck_assert_int_eq((int)s.r[LR_NUMTCPSOCK].limit, 50);
	ck_assert_int_eq((int)s.r[LR_NUMTCPSOCK].held, 12);   /* still measured */
	ck_assert_str_eq(s.r[LR_NUMOTHERSOCK].source, "beancounters");
	ck_assert_ptr_nonnull(s.r[LR_NOFILE].source);
	/* limits_source = cgroup: no beancounters, RLIMIT_NOFILE still applies */
	p.sources = LIMITS_SRC_CGROUP;
	limits_detect(&p, &s);
	ck_assert_ptr_null(s.r[LR_NUMOTHERSOCK].source);
	ck_assert_ptr_null(s.r[LR_NUMTCPSOCK].source);
	ck_assert_ptr_nonnull(s.r[LR_NOFILE].source);
	rmtmp();
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("limits");
	TCase *t = tcase_create("parsers");

	tcase_add_test(t, ubc_real_sample);
	tcase_add_test(t, ubc_host_picks_uid0);
	tcase_add_test(t, ubc_malformed);
	tcase_add_test(t, ubc_overflow_saturates);
	tcase_add_test(t, ubc_detect_maps_resources);
	tcase_add_test(t, vswap_memory_is_physpages);
	tcase_add_test(t, cgroup_values);
	tcase_add_test(t, cgroup_self);
	tcase_add_test(t, cgroup_v2_dir);
	tcase_add_test(t, cgroup_v1_dir);
	tcase_add_test(t, filenr);
	suite_add_tcase(s, t);
	t = tcase_create("budget");
	tcase_add_test(t, res_budget_share_and_reserve);
	tcase_add_test(t, compute_bound_by_numtcpsock);
	tcase_add_test(t, describe_in_plain_words);
	tcase_add_test(t, compute_memory_and_buffers);
	tcase_add_test(t, stress_hysteresis);
	tcase_add_test(t, admission_at_the_limit);
	tcase_add_test(t, stress_callbacks_fire_on_change);
	tcase_add_test(t, funnel_caps);
	tcase_add_test(t, funnel_audit);
	tcase_add_test(t, resample_follows_the_container);
	tcase_add_test(t, memory_budget_reaches_the_allocator);
	tcase_add_test(t, status_file);
	tcase_add_test(t, params_from_conf);
	tcase_add_test(t, manual_overrides_detection);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *r = srunner_create(suite());
	int failed;

	srunner_run_all(r, CK_NORMAL);
	failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
