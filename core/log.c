/*
 * core/log.c: see log.h. The program name in every line is syslog_name
 * ("frugal" by default) and the service ("smtpd", "qmgr", "local"...), as
 * in Postfix's "postfix/smtpd[PID]".
 */
#include "log.h"
#include "daemon.h"

#include "fd.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

/*
 * One descriptor, written with one write()/send() per line: the syslog
 * socket (non-blocking datagrams: a stuck syslog drops lines, never the
 * loop), a file (O_APPEND), or stderr. A line that cannot be written is
 * counted; the next line that can be is preceded by a warning with the
 * count and the reason, so a loss is never silent.
 */
enum { OUT_STDERR, OUT_STD, OUT_FILE, OUT_SYSLOG };

static char prog[64] = "frugal";
static char dest_saved[512], fac_saved[32];   /* for log_reopen() */
static int out_fd = 2, out_kind = OUT_STDERR;
static int syslog_fac = LOG_MAIL;
static time_t syslog_retry;                   /* an absent syslog socket: connect again at most once a second */
static unsigned long lost;                    /* lines lost since the last report */
static int lost_errno;
static unsigned long long lost_total;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static const struct { const char *name; int value; } facilities[] = {
	{ "mail", LOG_MAIL }, { "daemon", LOG_DAEMON }, { "user", LOG_USER },
	{ "local0", LOG_LOCAL0 }, { "local1", LOG_LOCAL1 }, { "local2", LOG_LOCAL2 },
	{ "local3", LOG_LOCAL3 }, { "local4", LOG_LOCAL4 }, { "local5", LOG_LOCAL5 },
	{ "local6", LOG_LOCAL6 }, { "local7", LOG_LOCAL7 },
};

/* The syslog socket: /dev/log, or FRUGAL_SYSLOG_SOCKET (the tests bind their own). */
static const char *syslog_path(void)
{
	const char *p = getenv("FRUGAL_SYSLOG_SOCKET");

	return p && *p ? p : "/dev/log";
}

static int syslog_connect(int fd)
{
	struct sockaddr_un sa;

	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", syslog_path());
	return connect(fd, (struct sockaddr *)&sa, sizeof sa);
}

/* A new destination, or -1 with errno; *kind set. */
static int open_dest(const char *dest, int *kind)
{
	int fd;

	if (dest == NULL || *dest == '\0') {
		/* charged to the non-TCP budget through the funnel */
		fd = fd_socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -1;
		if (syslog_connect(fd) < 0)
			syslog_retry = time(NULL) + 1;   /* absent for now: lines are counted as lost */
		*kind = OUT_SYSLOG;
		return fd;
	}
	if (strcmp(dest, "/dev/stderr") == 0) {
		*kind = OUT_STD;
		return 2;
	}
	if (strcmp(dest, "/dev/stdout") == 0) {
		*kind = OUT_STD;
		return 1;
	}
	fd = fd_open(dest, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0666);
	if (fd < 0)
		return -1;
	*kind = OUT_FILE;
	return fd;
}

static void close_dest(int fd, int kind)
{
	if (kind == OUT_FILE || kind == OUT_SYSLOG)
		fd_close(fd);
}

static void set_names(const char *syslog_name, const char *dest, const char *facility)
{
	size_t i;

	if (syslog_name && *syslog_name && syslog_name != prog)
		snprintf(prog, sizeof prog, "%s", syslog_name);
	if (dest != dest_saved)
		snprintf(dest_saved, sizeof dest_saved, "%s", dest ? dest : "");
	if (facility != fac_saved)
		snprintf(fac_saved, sizeof fac_saved, "%s", facility ? facility : "");
	syslog_fac = LOG_MAIL;
	for (i = 0; facility && i < sizeof facilities / sizeof facilities[0]; i++)
		if (strcasecmp(facility, facilities[i].name) == 0)
			syslog_fac = facilities[i].value;
}

int log_open(const char *syslog_name, const char *dest, const char *facility)
{
	int fd, kind = OUT_STDERR, rc = 0;

	log_close();
	set_names(syslog_name, dest, facility);
	if ((fd = open_dest(dest_saved, &kind)) < 0) {
		fd = 2;
		kind = OUT_STDERR;
		rc = -1;
	}
	pthread_mutex_lock(&mu);
	out_fd = fd;
	out_kind = kind;
	pthread_mutex_unlock(&mu);
	return rc;
}

/*
 * Rotation: the new file (or socket) replaces the old one only once it is
 * open; one that cannot be opened is an error naming the path and the
 * reason, and the old descriptor stays (lines keep going somewhere).
 */
int log_reopen(const char *service)
{
	int fd, kind = OUT_STDERR, oldfd, oldkind, e;

	if ((fd = open_dest(dest_saved, &kind)) < 0) {
		e = errno;
		log_warning(service, "cannot reopen maillog_file %s: %s; still logging to the previous descriptor",
		    dest_saved[0] ? dest_saved : syslog_path(), strerror(e));
		errno = e;
		return -1;
	}
	pthread_mutex_lock(&mu);
	oldfd = out_fd;
	oldkind = out_kind;
	out_fd = fd;
	out_kind = kind;
	pthread_mutex_unlock(&mu);
	if (oldfd != fd)
		close_dest(oldfd, oldkind);
	return 0;
}

void log_close(void)
{
	pthread_mutex_lock(&mu);
	close_dest(out_fd, out_kind);
	out_fd = 2;
	out_kind = OUT_STDERR;
	pthread_mutex_unlock(&mu);
}

int log_fd(void)
{
	int fd;

	pthread_mutex_lock(&mu);
	fd = out_kind == OUT_FILE || out_kind == OUT_SYSLOG ? out_fd : -1;
	pthread_mutex_unlock(&mu);
	return fd;
}

int log_is_file(void)
{
	int yes;

	pthread_mutex_lock(&mu);
	yes = out_kind == OUT_FILE;
	pthread_mutex_unlock(&mu);
	return yes;
}

void log_adopt_file(int fd)
{
	int oldfd, oldkind;

	pthread_mutex_lock(&mu);
	oldfd = out_fd;
	oldkind = out_kind;
	out_fd = fd;
	out_kind = OUT_FILE;
	pthread_mutex_unlock(&mu);
	if (oldfd != fd)
		close_dest(oldfd, oldkind);
}

int log_file_chown(uid_t uid, gid_t gid)
{
	int rc = 0;

	pthread_mutex_lock(&mu);
	if (out_kind == OUT_FILE)
		rc = fchown(out_fd, uid, gid);
	pthread_mutex_unlock(&mu);
	return rc;
}

unsigned long long log_lost_total(void)
{
	unsigned long long n;

	pthread_mutex_lock(&mu);
	n = lost_total;
	pthread_mutex_unlock(&mu);
	return n;
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

/* One line out, whole or not at all (mu held). 0, or -1 with errno. */
static int emit(int prio, const char *service, const char *text)
{
	char buf[2300], ts[32];
	time_t now = time(NULL);
	struct tm tm;
	ssize_t w;
	int n;

	localtime_r(&now, &tm);
	strftime(ts, sizeof ts, "%b %e %H:%M:%S", &tm);
	if (out_kind == OUT_SYSLOG) {
		/* what glibc's syslog() sends: the daemon adds the host; Postfix's tag "postfix/smtpd[pid]" */
		n = snprintf(buf, sizeof buf, "<%d>%s %s/%s[%ld]: %s", syslog_fac | prio, ts, prog, service,
		    daemon_self(), text);
		if (n >= (int)sizeof buf)
			n = sizeof buf - 1;
		w = send(out_fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w < 0 && (errno == ENOTCONN || errno == ECONNREFUSED || errno == ENOENT) && now >= syslog_retry) {
			/* syslog restarted (or came late): connect again, at most once a second */
			int e = errno;
			syslog_retry = now + 1;
			if (syslog_connect(out_fd) == 0)
				w = send(out_fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
			else
				errno = e;
		}
		return w == n ? 0 : -1;
	}
	/* syslog's layout, host included (as Postfix's maillog_file): pflogsumm and fail2ban read it */
	n = snprintf(buf, sizeof buf, "%s %s %s/%s[%ld]: %s\n", ts, log_host(), prog, service, daemon_self(), text);
	if (n >= (int)sizeof buf) {
		n = sizeof buf - 1;
		buf[n - 1] = '\n';
	}
	/* a file or stderr: one O_APPEND write, never buffered for later */
	w = write(out_fd, buf, (size_t)n);
	if (w >= 0 && w < n)
		errno = ENOSPC;
	return w == n ? 0 : -1;
}

void log_vmsg(int prio, const char *service, const char *prefix, const char *fmt, va_list ap)
{
	char line[2048];
	int n = 0;

	if (prefix)
		n = snprintf(line, sizeof line, "%s", prefix);
	vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
	pthread_mutex_lock(&mu);
	if (lost) {
		char note[256];

		snprintf(note, sizeof note, "warning: %lu log lines lost (%s); %llu since start",
		    lost, strerror(lost_errno), lost_total);
		if (emit(LOG_WARNING, service, note) == 0)
			lost = 0;
		else
			lost_errno = errno;
	}
	if (lost) {
		/* still failing: this line joins the count (the note comes first, once it can) */
		lost++;
		lost_total++;
	} else if (emit(prio, service, line) < 0) {
		lost_errno = errno;
		lost = 1;
		lost_total++;
	}
	pthread_mutex_unlock(&mu);
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
