/*
 * core/log.h: logging in Postfix's line shapes, so fail2ban's postfix
 * filter and pflogsumm read frugal's log unchanged:
 *     frugal/smtpd[PID]: connect from HOST[ADDR]
 * Goes to syslog (default; /dev/log, non-blocking: a full socket drops and
 * counts lines), to stderr, or appended to a file. Warnings that
 * an attacker can trigger at will go through log_ratelimited().
 */
#ifndef FRUGAL_CORE_LOG_H
#define FRUGAL_CORE_LOG_H

#include <stdarg.h>
#include <sys/types.h>
#include <time.h>

/* dest: NULL or "" = syslog, "/dev/stderr" = stderr, else a file appended to */
int  log_open(const char *syslog_name, const char *dest, const char *facility);
void log_close(void);
/* The destination log_open() was given, afresh (reload: after rotation). On failure a
 * warning names the path and the reason, the old descriptor stays, -1. */
int  log_reopen(const char *service);   /* service: who says it failed */
/* The descriptor the log holds through the funnel (file or syslog socket), or -1: a forked
 * child keeps it (fd_close_except). */
int  log_fd(void);
/* 1 when the log is a file (not syslog, not stderr): the daemon passes it to the helpers. */
int  log_is_file(void);
/* A descriptor of the same maillog_file, opened by the daemon after rotation and passed to a
 * delivery helper whose user cannot open the path: the log writes to it from now on (owned). */
void log_adopt_file(int fd);
/* The master, as root: the log file belongs to mail_owner, who reopens it after rotation. */
int  log_file_chown(uid_t uid, gid_t gid);
/* Lines that could not be written (syslog socket full or absent, ENOSPC...) since start. */
unsigned long long log_lost_total(void);

void log_info(const char *service, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_warning(const char *service, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_fatal(const char *service, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
void log_panic(const char *service, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
void log_vmsg(int prio, const char *service, const char *prefix, const char *fmt, va_list ap);

/*
 * A rate limiter for one kind of warning: at most `burst` lines per
 * `interval` seconds; lines dropped meanwhile are counted and reported
 * ("... (N similar warnings suppressed)") with the next one that passes.
 */
struct log_rate {
	int interval;        /* seconds */
	int burst;           /* lines per interval */
	time_t window_start;
	int in_window;
	unsigned long suppressed;
};
#define LOG_RATE_INIT(interval, burst) { (interval), (burst), 0, 0, 0 }

void log_ratelimited(struct log_rate *r, const char *service, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Bytes a client sent, made safe for a log line: printable ASCII as is,
 * C escapes (\r \n \t \\) and \ooo for the rest, as postscreen logs a
 * PREGREET. Reads exactly `len` bytes (no terminator needed), writes at most
 * outlen - 1 characters and a NUL, never a partial escape. Returns `out`.
 */
char *log_escape(char *out, size_t outlen, const void *in, size_t len);

#endif
