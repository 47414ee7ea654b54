/*
 * smtpd/status.c: `frugal status [-c DIR] [--json|--prometheus]`. Reads what
 * the daemon already publishes (status/limits.status, rewritten on every
 * limits sample, so at most SAMPLE_INTERVAL old): no socket to the daemon,
 * which could fail exactly when a descriptor shortage makes status useful.
 */
#include "smtpd/status.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "conf/conf.h"
#include "core/daemon.h"
#include "core/mem.h"
#include "queue/queue.h"
#include "smtpd/smtpd_int.h"

void status_bar(char *buf, int width, long long used, long long budget)
{
	int i, fill = 0;

	if (budget > 0 && used > 0) {
		/* round up: one socket of a budget of 1000 still shows */
		long long f = (used * width + budget - 1) / budget;

		fill = f > width ? width : (int)f;
	}
	for (i = 0; i < width; i++)
		buf[i] = i < fill ? '#' : (budget > 0 ? '.' : ' ');
	buf[width] = '\0';
}

/* 12, 3.4K, 512M: memory in binary units, counts as they are */
static const char *amount(char *b, size_t n, long long v, int bytes)
{
	static const char unit[] = "KMGT";
	double d = (double)v;
	int u = -1;

	if (v < 0)
		return "-";
	if (!bytes) {
		snprintf(b, n, "%lld", v);
		return b;
	}
	while (d >= 1024 && u < 3) {
		d /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(b, n, "%lld", v);
	else
		snprintf(b, n, d < 10 ? "%.1f%c" : "%.0f%c", d, unit[u]);
	return b;
}

static void duration(char *b, size_t n, long long s)
{
	if (s < 0)
		s = 0;
	if (s >= 86400)
		snprintf(b, n, "%lldd %02lldh%02lldm", s / 86400, s % 86400 / 3600, s % 3600 / 60);
	else if (s >= 3600)
		snprintf(b, n, "%lldh%02lldm%02llds", s / 3600, s % 3600 / 60, s % 60);
	else
		snprintf(b, n, "%lldm%02llds", s / 60, s % 60);
}

static const char *cnt(char *b, size_t n, long long v)
{
	return amount(b, n, v, 0);
}

void status_print_text(const struct status_view *v, FILE *f)
{
	char a[6][32];
	int i;

	if (v->running) {
		duration(a[0], sizeof a[0], v->now - v->started);
		/* "PID: N" as Postfix's status says it: the pid `frugal stop` signals */
		fprintf(f, "frugal is running: PID: %ld, up %s, stress mode %s\n", v->pid, a[0],
		    v->stress ? "ON" : "off");
		fprintf(f, "sessions      %s now, %s peak, limit %s\n", cnt(a[0], 32, v->sessions),
		    cnt(a[1], 32, v->stat[STATS_SESSIONS_PEAK]), cnt(a[2], 32, v->sessions_limit));
		fprintf(f, "deliveries    %s in flight, limit %s\n", cnt(a[0], 32, v->stat[STATS_INFLIGHT]),
		    cnt(a[1], 32, v->deliveries_limit));
	} else {
		fprintf(f, "frugal is not running (the queue as it is on disk)\n");
	}
	fprintf(f, "queue         active %s, deferred %s, hold %s, maildrop %s, corrupt %s\n",
	    cnt(a[0], 32, v->q_active), cnt(a[1], 32, v->q_deferred), cnt(a[2], 32, v->q_hold),
	    cnt(a[3], 32, v->q_maildrop), cnt(a[4], 32, v->q_corrupt));
	if (v->running) {
		fprintf(f, "since start   received %s, delivered %s, deferred %s, bounced %s, rejected %s\n",
		    cnt(a[0], 32, v->stat[STATS_RECEIVED]), cnt(a[1], 32, v->stat[STATS_DELIVERED]),
		    cnt(a[2], 32, v->stat[STATS_DEFERRED]), cnt(a[3], 32, v->stat[STATS_BOUNCED]),
		    cnt(a[4], 32, v->stat[STATS_REJECTED]));
		/* the log is where an admin looks for what went wrong: say when it has holes */
		if (v->log_lost > 0)
			fprintf(f, "log           %s lines lost since start (the log says why)\n", cnt(a[0], 32, v->log_lost));
		/* the screen (smtpd/screen.c): only where it ran, as postscreen's counts */
		if (v->stat[STATS_SCREEN_REFUSED] > 0 || v->stat[STATS_SCREEN_PASSED] > 0)
			fprintf(f, "screen        %s refused before a session, %s passed\n",
			    cnt(a[0], 32, v->stat[STATS_SCREEN_REFUSED]), cnt(a[1], 32, v->stat[STATS_SCREEN_PASSED]));
	}
	if (v->ngauge == 0)
		return;
	/* 18 + 1 + 15 + 2 + 26 + 1 + 4 + 2 + 10 = 79 columns */
	fprintf(f, "\n%-18s %15s  %-26s %4s  %s\n", "resource", "frugal / budget", "", "", "limit");
	for (i = 0; i < v->ngauge; i++) {
		const struct limits_gauge *g = &v->g[i];
		char bar[32], ub[80], pct[24];

		status_bar(bar, 24, g->used, g->budget);
		snprintf(ub, sizeof ub, "%s / %s", amount(a[0], 32, g->used, g->bytes),
		    g->budget < 0 ? "-" : amount(a[1], 32, g->budget, g->bytes));
		if (g->budget > 0 && g->used >= 0)
			snprintf(pct, sizeof pct, "%lld%%", g->used * 100 / g->budget);
		else
			snprintf(pct, sizeof pct, "-");
		fprintf(f, "%-18.18s %15.15s  [%s] %4s  %s\n", g->name, ub, bar, pct,
		    g->limit < 0 ? "unlimited" : amount(a[2], 32, g->limit, g->bytes));
	}
}

static void jnum(FILE *f, long long v)
{
	if (v < 0)
		fputs("null", f);
	else
		fprintf(f, "%lld", v);
}

static void jstr(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", (unsigned char)*s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

void status_print_json(const struct status_view *v, FILE *f)
{
	int i;

	fprintf(f, "{\"running\":%s,\"pid\":", v->running ? "true" : "false");
	jnum(f, v->running ? v->pid : -1);
	fputs(",\"uptime_seconds\":", f);
	jnum(f, v->running ? v->now - v->started : -1);
	fputs(",\"started\":", f);
	jnum(f, v->running ? v->started : -1);
	fputs(",\"updated\":", f);
	jnum(f, v->running ? v->updated : -1);
	fprintf(f, ",\"stress\":%s", v->running ? (v->stress ? "true" : "false") : "null");
	fputs(",\"sessions\":{\"current\":", f);
	jnum(f, v->running ? v->sessions : -1);
	fputs(",\"peak\":", f);
	jnum(f, v->stat[STATS_SESSIONS_PEAK]);
	fputs(",\"limit\":", f);
	jnum(f, v->running ? v->sessions_limit : -1);
	fputs("},\"deliveries\":{\"in_flight\":", f);
	jnum(f, v->stat[STATS_INFLIGHT]);
	fputs(",\"limit\":", f);
	jnum(f, v->running ? v->deliveries_limit : -1);
	fputs("},\"queue\":{\"active\":", f);
	jnum(f, v->q_active);
	fputs(",\"deferred\":", f);
	jnum(f, v->q_deferred);
	fputs(",\"hold\":", f);
	jnum(f, v->q_hold);
	fputs(",\"maildrop\":", f);
	jnum(f, v->q_maildrop);
	fputs(",\"corrupt\":", f);
	jnum(f, v->q_corrupt);
	fputs(",\"incoming\":", f);
	jnum(f, v->q_incoming);
	fputs("},\"counters\":{\"received\":", f);
	jnum(f, v->stat[STATS_RECEIVED]);
	fputs(",\"delivered\":", f);
	jnum(f, v->stat[STATS_DELIVERED]);
	fputs(",\"deferred\":", f);
	jnum(f, v->stat[STATS_DEFERRED]);
	fputs(",\"bounced\":", f);
	jnum(f, v->stat[STATS_BOUNCED]);
	fputs(",\"rejected\":", f);
	jnum(f, v->stat[STATS_REJECTED]);
	fputs(",\"log_lines_lost\":", f);
	jnum(f, v->running ? v->log_lost : -1);
	fputs(",\"screen_refused\":", f);
	jnum(f, v->stat[STATS_SCREEN_REFUSED]);
	fputs(",\"screen_passed\":", f);
	jnum(f, v->stat[STATS_SCREEN_PASSED]);
	fputs("},\"resources\":[", f);
	for (i = 0; i < v->ngauge; i++) {
		const struct limits_gauge *g = &v->g[i];

		fputs(i ? ",{\"name\":" : "{\"name\":", f);
		jstr(f, g->name);
		fputs(",\"key\":", f);
		jstr(f, g->key);
		fprintf(f, ",\"unit\":\"%s\",\"used\":", g->bytes ? "bytes" : "count");
		jnum(f, g->used);
		fputs(",\"budget\":", f);
		jnum(f, g->budget);
		fputs(",\"limit\":", f);
		jnum(f, g->limit);
		fputc('}', f);
	}
	fputs("]}\n", f);
}

/* one metric family: HELP and TYPE, then the sample (none when unknown) */
static void prom(FILE *f, const char *name, const char *type, const char *help, long long v)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
	if (v >= 0)
		fprintf(f, "%s %lld\n", name, v);
}

static void prom_label(FILE *f, const char *name, const char *label, const char *value, long long v)
{
	const char *p;

	if (v < 0)
		return;
	fprintf(f, "%s{%s=\"", name, label);
	for (p = value; *p; p++) {
		if (*p == '"' || *p == '\\')
			fputc('\\', f);
		fputc(*p, f);
	}
	fprintf(f, "\"} %lld\n", v);
}

static void prom_head(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* gauges of one unit: counts under NAME, memory under NAME_bytes (Prometheus: the unit in the name) */
static void prom_resources(FILE *f, const struct status_view *v, int bytes, const char *what,
    const char *help)
{
	char name[64];
	int i;

	snprintf(name, sizeof name, "frugal_resource_%s%s", what, bytes ? "_bytes" : "");
	prom_head(f, name, "gauge", help);
	for (i = 0; i < v->ngauge; i++) {
		const struct limits_gauge *g = &v->g[i];
		long long x = strcmp(what, "used") == 0 ? g->used : strcmp(what, "budget") == 0 ? g->budget : g->limit;

		if (g->bytes == bytes)
			prom_label(f, name, "resource", g->key, x);
	}
}

void status_print_prometheus(const struct status_view *v, FILE *f)
{
	static const char *const qname[] = { "active", "deferred", "hold", "maildrop", "corrupt", "incoming" };
	const long long qv[] = { v->q_active, v->q_deferred, v->q_hold, v->q_maildrop, v->q_corrupt, v->q_incoming };
	int i, b;

	prom(f, "frugal_up", "gauge", "1 when the frugal daemon runs.", v->running);
	if (v->running) {
		prom(f, "frugal_start_time_seconds", "gauge", "When the daemon started (Unix time).", v->started);
		prom(f, "frugal_uptime_seconds", "gauge", "Seconds since the daemon started.", v->now - v->started);
		prom(f, "frugal_stress_mode", "gauge", "1 while stress mode is on.", v->stress);
		prom(f, "frugal_smtpd_sessions", "gauge", "SMTP sessions open now.", v->sessions);
		prom(f, "frugal_smtpd_sessions_peak", "gauge", "Most SMTP sessions at one time since start.",
		    v->stat[STATS_SESSIONS_PEAK]);
		prom(f, "frugal_smtpd_sessions_limit", "gauge", "The SMTP session concurrency limit.", v->sessions_limit);
		prom(f, "frugal_deliveries_in_flight", "gauge", "Deliveries in progress now.", v->stat[STATS_INFLIGHT]);
		prom(f, "frugal_deliveries_limit", "gauge", "The delivery concurrency limit.", v->deliveries_limit);
		prom(f, "frugal_messages_received_total", "counter", "Messages accepted since start.", v->stat[STATS_RECEIVED]);
		prom(f, "frugal_rejects_total", "counter", "SMTP rejects logged since start.", v->stat[STATS_REJECTED]);
		prom(f, "frugal_log_lines_lost_total", "counter", "Log lines the daemon could not write since start.",
		    v->log_lost);
		prom(f, "frugal_screen_refused_total", "counter",
		    "Port 25 clients refused by the screen (pregreet, DNS lists) before a session, since start.",
		    v->stat[STATS_SCREEN_REFUSED]);
		prom(f, "frugal_screen_passed_total", "counter",
		    "Port 25 clients that passed the screen and became sessions, since start.", v->stat[STATS_SCREEN_PASSED]);
		prom_head(f, "frugal_recipients_total", "counter", "Delivery outcomes per recipient since start.");
		prom_label(f, "frugal_recipients_total", "status", "sent", v->stat[STATS_DELIVERED]);
		prom_label(f, "frugal_recipients_total", "status", "deferred", v->stat[STATS_DEFERRED]);
		prom_label(f, "frugal_recipients_total", "status", "bounced", v->stat[STATS_BOUNCED]);
	}
	prom_head(f, "frugal_queue_messages", "gauge", "Messages in the queue by state.");
	for (i = 0; i < 6; i++)
		prom_label(f, "frugal_queue_messages", "queue", qname[i], qv[i]);
	for (b = 0; b <= 1; b++) {
		prom_resources(f, v, b, "used", "frugal's own use of a resource.");
		prom_resources(f, v, b, "budget", "frugal's budget of a resource.");
		prom_resources(f, v, b, "limit", "The container's limit of a resource.");
	}
}

int smtpd_cmd_status(int argc, char **argv)
{
	static struct status_view v;   /* the gauges: off a small stack */
	struct limits_daemon ld;
	struct queue_counts qc;
	struct conf *c;
	const char *dir = NULL, *qdir;
	int i, mode = 0, gauges_running;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			mode = 1;
		else if (strcmp(argv[i], "--prometheus") == 0)
			mode = 2;
		else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			dir = argv[++i];
		else if (strncmp(argv[i], "-c", 2) == 0 && argv[i][2])
			dir = argv[i] + 2;
		else {
			fprintf(stderr, "usage: frugal status [-c DIR] [--json|--prometheus]\n");
			return 1;
		}
	}
	if ((c = conf_load_or_say(dir)) == NULL)
		return 1;
	memset(&v, 0, sizeof v);
	v.now = (long long)time(NULL);
	for (i = 0; i < STATS_COUNT; i++)
		v.stat[i] = -1;
	if (limits_daemon_status(c, &ld) == 0) {
		char *pidpath = smtpd_pid_path(c);
		long top = pidpath ? daemon_pidfile_read(pidpath) : -1;

		mem_free(pidpath);
		v.running = 1;
		/* the pid file's (the root master's, when started as root), else the daemon's own */
		v.pid = top > 0 ? top : ld.pid;
		v.started = ld.started;
		v.updated = ld.time;
		v.sessions = ld.sessions;
		v.sessions_limit = ld.sessions_limit;
		v.deliveries_limit = ld.deliveries_limit;
		v.stress = ld.stress;
		v.log_lost = ld.log_lost;
		stats_parse(ld.counters, ld.counters_len, v.stat);
	} else if (errno == EACCES) {
		fprintf(stderr, "frugal: the daemon's status file is unreadable (permission denied)\n");
	}
	qdir = conf_str(c, "queue_directory", 0);
	queue_count(qdir ? qdir : ".", &qc);
	/* the scheduler's memory is the active queue; the rest of the committed mail waits */
	v.q_active = v.running && v.stat[STATS_ACTIVE] >= 0 ? v.stat[STATS_ACTIVE] : 0;
	if (qc.committed >= 0 && v.q_active > qc.committed)
		v.q_active = qc.committed;
	v.q_deferred = qc.committed < 0 ? -1 : qc.committed - v.q_active;
	v.q_hold = qc.hold;
	v.q_maildrop = qc.maildrop;
	v.q_corrupt = qc.corrupt;
	v.q_incoming = qc.incoming;
	v.ngauge = limits_gauges(c, v.g, STATUS_MAX_GAUGES, &gauges_running);
	conf_unref(c);
	if (mode == 1)
		status_print_json(&v, stdout);
	else if (mode == 2)
		status_print_prometheus(&v, stdout);
	else
		status_print_text(&v, stdout);
	if (!v.running && mode != 2)
		fprintf(stderr, "frugal: the frugal daemon is not running\n");
	if (fflush(stdout) != 0 || ferror(stdout))
		return 75;
	return v.running ? 0 : 1;
}
