/*
 * core/log.c: see log.h. The program name in every line is syslog_name
 * ("frugal" by default) and the service ("smtpd", "qmgr", "local"...), as
 * in Postfix's "postfix/smtpd[PID]".
 */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <unistd.h>

static char prog[64] = "frugal";
static char dest_saved[512], fac_saved[32];   /* for log_reopen() */
static FILE *out;          /* NULL: syslog */
static int out_is_file;    /* out was opened by us and is closed by log_close() */
static int use_syslog;
static int syslog_fac = LOG_MAIL;

static const struct { const char *name; int value; } facilities[] = {
	{ "mail", LOG_MAIL }, { "daemon", LOG_DAEMON }, { "user", LOG_USER },
	{ "local0", LOG_LOCAL0 }, { "local1", LOG_LOCAL1 }, { "local2", LOG_LOCAL2 },
	{ "local3", LOG_LOCAL3 }, { "local4", LOG_LOCAL4 }, { "local5", LOG_LOCAL5 },
	{ "local6", LOG_LOCAL6 }, { "local7", LOG_LOCAL7 },
};

int log_open(const char *syslog_name, const char *dest, const char *facility)
{
	int fac = LOG_MAIL;
	size_t i;

	log_close();
	if (syslog_name && *syslog_name && syslog_name != prog)
		snprintf(prog, sizeof prog, "%s", syslog_name);
	if (dest != dest_saved)
		snprintf(dest_saved, sizeof dest_saved, "%s", dest ? dest : "");
	if (facility != fac_saved)
		snprintf(fac_saved, sizeof fac_saved, "%s", facility ? facility : "");
	for (i = 0; facility && i < sizeof facilities / sizeof facilities[0]; i++)
		if (strcasecmp(facility, facilities[i].name) == 0)
			fac = facilities[i].value;
	if (dest == NULL || *dest == '\0') {
		syslog_fac = fac;
		openlog(prog, LOG_PID | LOG_NDELAY, fac);
		use_syslog = 1;
		return 0;
	}
	if (strcmp(dest, "/dev/stderr") == 0) {
		out = stderr;
		return 0;
	}
	if (strcmp(dest, "/dev/stdout") == 0) {
		out = stdout;
		return 0;
	}
	if ((out = fopen(dest, "a")) == NULL) {
		out = stderr;
		return -1;
	}
	setvbuf(out, NULL, _IOLBF, 0);
	out_is_file = 1;
	return 0;
}

int log_reopen(void)
{
	return log_open(prog, dest_saved, fac_saved);
}

void log_close(void)
{
	if (out_is_file && out)
		fclose(out);
	if (use_syslog)
		closelog();
	out = NULL;
	out_is_file = use_syslog = 0;
}
/* The short host name, as syslog writes it; read once (the file layout needs it on every line). */
static const char *log_host(void)
{
	static char host[64];
	static int done;

	if (!__atomic_load_n(&done, __ATOMIC_ACQUIRE)) {
		char h[256];
		if (gethostname(h, sizeof h) < 0 || h[0] == '\0')
			snprintf(h, sizeof h, "localhost");
		h[sizeof h - 1] = '\0';
		h[strcspn(h, ".")] = '\0';
		h[sizeof host - 1] = '\0';
		memcpy(host, h, strlen(h) + 1);
		__atomic_store_n(&done, 1, __ATOMIC_RELEASE);
	}
	return host;
}


void log_vmsg(int prio, const char *service, const char *prefix, const char *fmt, va_list ap)
{
	char line[2048];
	int n = 0;

	if (prefix)
		n = snprintf(line, sizeof line, "%s", prefix);
	vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
	if (use_syslog) {
		/* syslog adds "prog[pid]:"; Postfix logs "postfix/smtpd[pid]:" as the tag */
		char tag[128];
		snprintf(tag, sizeof tag, "%s/%s", prog, service);
		openlog(tag, LOG_PID | LOG_NDELAY, syslog_fac);
		syslog(prio, "%s", line);
		return;
	}
	{
		FILE *f = out ? out : stderr;
		char ts[32];
		time_t now = time(NULL);
		struct tm tm;

		localtime_r(&now, &tm);
		strftime(ts, sizeof ts, "%b %e %H:%M:%S", &tm);
		/* syslog's layout, host included (as Postfix's maillog_file): pflogsumm and fail2ban read it */
		fprintf(f, "%s %s %s/%s[%ld]: %s\n", ts, log_host(), prog, service, (long)getpid(), line);
		fflush(f);
	}
}

#define LOG_BODY(prio, prefix) do { \
	va_list ap; va_start(ap, fmt); log_vmsg(prio, service, prefix, fmt, ap); va_end(ap); \
} while (0)

void log_info(const char *service, const char *fmt, ...) { LOG_BODY(LOG_INFO, NULL); }
void log_warning(const char *service, const char *fmt, ...) { LOG_BODY(LOG_WARNING, "warning: "); }

void log_fatal(const char *service, const char *fmt, ...)
{
	LOG_BODY(LOG_CRIT, "fatal: ");
	exit(1);
}

void log_panic(const char *service, const char *fmt, ...)
{
	LOG_BODY(LOG_CRIT, "panic: ");
	abort();
}

void log_ratelimited(struct log_rate *r, const char *service, const char *fmt, ...)
{
	time_t now = time(NULL);
	char line[1024];
	va_list ap;

	if (now - r->window_start >= r->interval) {
		r->window_start = now;
		r->in_window = 0;
	}
	if (r->in_window >= r->burst) {
		r->suppressed++;
		return;
	}
	r->in_window++;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (r->suppressed) {
		log_warning(service, "%s (%lu similar warnings suppressed)", line, r->suppressed);
		r->suppressed = 0;
	} else {
		log_warning(service, "%s", line);
	}
}

char *log_escape(char *out, size_t outlen, const void *in, size_t len)
{
	const unsigned char *p = in;
	size_t i, o = 0;

	if (outlen == 0)
		return out;
	for (i = 0; i < len; i++) {
		char esc[5];
		size_t n;

		switch (p[i]) {
		case '\r': memcpy(esc, "\\r", 3); n = 2; break;
		case '\n': memcpy(esc, "\\n", 3); n = 2; break;
		case '\t': memcpy(esc, "\\t", 3); n = 2; break;
		case '\\': memcpy(esc, "\\\\", 3); n = 2; break;
		default:
			if (p[i] >= 0x20 && p[i] < 0x7f) {
				esc[0] = (char)p[i];
				n = 1;
			} else {
				snprintf(esc, sizeof esc, "\\%03o", p[i]);
				n = 4;
			}
		}
		if (o + n >= outlen)
			break;
		memcpy(out + o, esc, n);
		o += n;
	}
	out[o] = '\0';
	return out;
}
