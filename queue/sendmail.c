/*
 * queue/sendmail.c: `frugal sendmail` and the binary invoked as sendmail,
 * mailq or newaliases: Sendmail's command line as Postfix's sendmail(1)
 * takes it. A message is read from stdin (or from an SMTP dialogue with
 * -bs), its missing From:, Date: and Message-ID: are added as Postfix's
 * cleanup adds them for local submissions, Bcc: is removed, and it is
 * handed as a maildrop stream (queue/drop.h) to the set-group-ID helper
 * frugal-postdrop, which stores it durably in $queue_directory/maildrop.
 * No socket to the daemon: mail is accepted while the daemon is stopped.
 *
 * Exit codes (sysexits.h, as Postfix): 0 the message is on stable storage;
 * 64 a usage error; 65 bad input; 75 not queued, try again. Never 0
 * unless the helper said the file is durable, never 1 after taking the
 * message. A short-lived tool: it may exit on allocation failure (75).
 */
#include "queue/queue_int.h"
#include "queue/drop.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/daemon.h"
#include "core/mem.h"

#define EX_OK       0
#define EX_USAGE    64
#define EX_DATAERR  65
#define EX_TEMPFAIL 75
#define EX_UNAVAILABLE 69
#define MAILQ_WAIT  5                  /* seconds for the daemon's listing (it answers within ~1) */
#define HDR_MAX     (1024 * 1024)   /* the whole header section, buffered for -t */

struct sm {
	struct conf *c;
	const char *myhostname, *myorigin;
	char  *sender;            /* envelope sender; "" null sender */
	char  *fullname;          /* -F, or the GECOS name */
	char  *login;
	int    extract;           /* -t */
	int    dots;              /* a lone "." ends the message (no -i) */
	int    verbose;
	char **rcpt;
	int    nrcpt, rcpt_cap;
	long long size_limit, size;
	/* the helper */
	pid_t  pid;
	int    pipe;
	char   chunk[DROP_CHUNK_MAX];
	size_t chunkn;
	int    failed;            /* a write to the helper failed */
	/* -bs: input comes from the SMTP DATA dialogue */
	int    smtp;
};

static void oom(void)
{
	fprintf(stderr, "frugal sendmail: out of memory: the message was not queued\n");
	exit(EX_TEMPFAIL);
}

/* "user" -> "user@$myorigin", as Postfix's append_at_myorigin */
static char *qualify(struct sm *m, const char *a, size_t n)
{
	char *s;

	if (n >= 2 && a[0] == '<' && a[n - 1] == '>') {
		a++;
		n -= 2;
	}
	if (memchr(a, '@', n) || n == 0) {
		if ((s = mem_strndup(a, n)) == NULL)
			oom();
		return s;
	}
	if ((s = mem_alloc(n + strlen(m->myorigin) + 2)) == NULL)
		oom();
	snprintf(s, n + strlen(m->myorigin) + 2, "%.*s@%s", (int)n, a, m->myorigin);
	return s;
}

static void add_rcpt(struct sm *m, const char *a, size_t n)
{
	char *r = qualify(m, a, n);
	int i;

	for (i = 0; i < m->nrcpt; i++)
		if (strcasecmp(m->rcpt[i], r) == 0) {   /* Postfix's cleanup drops duplicates */
			mem_free(r);
			return;
		}
	if (*r == '\0' || strlen(r) > DROP_VALUE_MAX || strpbrk(r, "\r\n") || m->nrcpt >= DROP_RCPT_MAX) {
		fprintf(stderr, "frugal sendmail: bad recipient address '%s': ignored\n", r);
		mem_free(r);
		return;
	}
	if (m->nrcpt == m->rcpt_cap) {
		m->rcpt_cap = m->rcpt_cap ? m->rcpt_cap * 2 : 16;
		if ((m->rcpt = mem_realloc(m->rcpt, (size_t)m->rcpt_cap * sizeof *m->rcpt)) == NULL)
			oom();
	}
	m->rcpt[m->nrcpt++] = r;
}

static void clear_rcpt(struct sm *m)
{
	while (m->nrcpt > 0)
		mem_free(m->rcpt[--m->nrcpt]);
}

/* ---- the helper -------------------------------------------------------------- */

static int helper_path(struct sm *m, char *out, size_t outlen)
{
	const char *dir = conf_str(m->c, "command_directory", 0);
	char self[4096];
	ssize_t n;
	char *slash;

	if (dir && *dir) {
		snprintf(out, outlen, "%s/frugal-postdrop", dir);
		return 0;
	}
	/* beside the binary that runs (make install puts both in $(PREFIX)/sbin) */
	if ((n = readlink("/proc/self/exe", self, sizeof self - 1)) <= 0)
		return -1;
	self[n] = '\0';
	if ((slash = strrchr(self, '/')) == NULL)
		return -1;
	*slash = '\0';
	snprintf(out, outlen, "%s/frugal-postdrop", self);
	return 0;
}

static int start_helper(struct sm *m)
{
	char path[4200], drop[4200];
	int p[2];

	if (helper_path(m, path, sizeof path) < 0) {
		fprintf(stderr, "frugal sendmail: cannot find frugal-postdrop: set command_directory\n");
		return -1;
	}
	snprintf(drop, sizeof drop, "%s/%s", conf_str(m->c, "queue_directory", 0), SPOOL_MAILDROP);
	if (pipe2(p, O_CLOEXEC) < 0) {
		fprintf(stderr, "frugal sendmail: pipe: %s\n", strerror(errno));
		return -1;
	}
	fflush(stdout);
	if ((m->pid = fork()) < 0) {
		fprintf(stderr, "frugal sendmail: fork: %s\n", strerror(errno));
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (m->pid == 0) {
		char *const av[] = { "frugal-postdrop", drop, NULL };
		char *const ev[] = { NULL };

		if (dup2(p[0], 0) < 0)
			_exit(EX_TEMPFAIL);
		execve(path, av, ev);
		fprintf(stderr, "frugal sendmail: cannot run %s: %s\n", path, strerror(errno));
		_exit(EX_TEMPFAIL);
	}
	close(p[0]);
	m->pipe = p[1];
	return 0;
}

static void put_raw(struct sm *m, const char *p, size_t n)
{
	ssize_t w;

	while (n > 0 && !m->failed) {
		if ((w = write(m->pipe, p, n)) < 0) {
			if (errno == EINTR)
				continue;
			m->failed = 1;
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

static void flush_chunk(struct sm *m)
{
	char hdr[32];

	if (m->chunkn == 0)
		return;
	put_raw(m, hdr, (size_t)snprintf(hdr, sizeof hdr, "D %zu\n", m->chunkn));
	put_raw(m, m->chunk, m->chunkn);
	m->chunkn = 0;
}

static void put_data(struct sm *m, const char *p, size_t n)
{
	size_t k;

	m->size += (long long)n;
	while (n > 0) {
		k = sizeof m->chunk - m->chunkn < n ? sizeof m->chunk - m->chunkn : n;
		memcpy(m->chunk + m->chunkn, p, k);
		m->chunkn += k;
		p += k;
		n -= k;
		if (m->chunkn == sizeof m->chunk)
			flush_chunk(m);
	}
}

static void put_record(struct sm *m, char type, const char *v)
{
	char line[DROP_VALUE_MAX + 8];

	put_raw(m, line, (size_t)snprintf(line, sizeof line, "%c %s\n", type, v));
}

/* Z, close, wait: EX_OK only when the helper says the file is durable */
static int finish_helper(struct sm *m, int complete)
{
	int st;

	flush_chunk(m);
	if (complete)
		put_raw(m, "Z\n", 2);
	close(m->pipe);
	m->pipe = -1;
	while (waitpid(m->pid, &st, 0) < 0)
		if (errno != EINTR) {
			st = -1;
			break;
		}
	if (complete && !m->failed && st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return EX_OK;
	if (complete)
		fprintf(stderr, "frugal sendmail: the message was not queued (%s): try again later\n",
		    st != -1 && WIFSIGNALED(st) ? "the drop helper was killed" : "the drop helper failed");
	return EX_TEMPFAIL;
}

/* ---- the message ------------------------------------------------------------- */

struct input {
	FILE  *f;
	char  *line;
	size_t cap;
	int    smtp;      /* SMTP DATA: "." ends, ".." is unstuffed */
	int    dots;      /* sendmail without -i: a lone "." ends */
	int    eof;
	int    ended;     /* the terminating "." was read */
};

/* the next line without its line end (CRLF or LF); -1 at the end of the message */
static ssize_t next_line(struct input *in)
{
	ssize_t n;

	if (in->eof || (n = getline(&in->line, &in->cap, in->f)) < 0) {
		in->eof = 1;
		return -1;
	}
	if (n > 0 && in->line[n - 1] == '\n')
		n--;
	if (n > 0 && in->line[n - 1] == '\r')
		n--;
	in->line[n] = '\0';
	if ((in->smtp || in->dots) && n == 1 && in->line[0] == '.') {
		in->ended = 1;
		return -1;
	}
	if (in->smtp && n > 0 && in->line[0] == '.') {
		memmove(in->line, in->line + 1, (size_t)n);
		n--;
	}
	return n;
}

static int header_name_is(const char *h, const char *name)
{
	size_t n = strlen(name);

	return strncasecmp(h, name, n) == 0 && h[n] == ':';
}

/* "Name:" with printable characters other than ':' (RFC 5322 2.2) */
static int is_header_start(const char *l, size_t n)
{
	size_t i;

	for (i = 0; i < n && l[i] != ':'; i++)
		if (l[i] <= ' ' || l[i] > '~')
			return 0;
	return i > 0 && i < n;
}

struct scan_arg {
	struct sm *m;
	const char *v;
};

static int scan_one(void *arg, size_t a, size_t b)
{
	struct scan_arg *s = arg;

	add_rcpt(s->m, s->v + a, b - a);
	return 0;
}

static void extract(struct sm *m, const char *h, size_t n)
{
	static const char *const names[] = { "To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc", NULL };
	struct scan_arg s = { m, NULL };
	const char *colon;
	int i;

	for (i = 0; names[i]; i++)
		if (header_name_is(h, names[i]))
			break;
	if (names[i] == NULL || (colon = memchr(h, ':', n)) == NULL)
		return;
	s.v = colon + 1;
	cleanup_addr_scan(s.v, n - (size_t)(s.v - h), scan_one, &s);
}

/* Postfix's mail_date(): "Fri,  4 Dec 2026 11:30:00 +0000 (UTC)" */
static void mail_date(char *out, size_t outlen)
{
	time_t now = time(NULL);
	struct tm tm;
	char zone[16];
	long off;

	localtime_r(&now, &tm);
	off = tm.tm_gmtoff / 60;
	strftime(out, outlen, "%a, %e %b %Y %H:%M:%S ", &tm);
	strftime(zone, sizeof zone, "%Z", &tm);
	snprintf(out + strlen(out), outlen - strlen(out), "%c%02ld%02ld (%s)", off < 0 ? '-' : '+',
	    labs(off) / 60, labs(off) % 60, zone);
}

/*
 * One message from in: headers buffered (for -t and the missing ones),
 * then the helper is started and everything streamed. Returns an exit code.
 */
static int submit(struct sm *m, struct input *in)
{
	char *hdr = NULL;          /* the header section, LF line ends, Bcc removed */
	size_t hn = 0, hcap = 0, start = 0;
	int have_from = 0, have_date = 0, have_msgid = 0, in_bcc = 0, body_started = 0, i;
	ssize_t n;
	char extra[2048], date[64];
	unsigned int rnd = 0;
	time_t now = time(NULL);
	struct tm tm;
	int first = 1;

	/* the header section */
	while ((n = next_line(in)) >= 0) {
		const char *l = in->line;

		/* a leading mbox "From " line is not a header (Postfix drops it) */
		if (first && n >= 5 && strncmp(l, "From ", 5) == 0) {
			first = 0;
			continue;
		}
		first = 0;
		if (n > 0 && (l[0] == ' ' || l[0] == '\t') && (hn > 0 || in_bcc)) {
			if (in_bcc) {
				/* a folded Bcc: its addresses count, its text goes */
				if (m->extract) {
					struct scan_arg sa = { m, l };

					cleanup_addr_scan(l, (size_t)n, scan_one, &sa);
				}
				continue;
			}
		} else if (n > 0 && is_header_start(l, (size_t)n)) {
			/* the previous header is whole: look at it */
			if (hn > start && m->extract)
				extract(m, hdr + start, hn - start);
			start = hn;
			in_bcc = header_name_is(l, "Bcc");
			if (in_bcc) {
				if (m->extract)   /* its recipients still count */
					extract(m, l, (size_t)n);
				continue;
			}
			have_from |= header_name_is(l, "From");
			have_date |= header_name_is(l, "Date");
			have_msgid |= header_name_is(l, "Message-ID");
		} else {
			body_started = 1;   /* the empty line, or a line that is no header */
			break;
		}
		if (hn + (size_t)n + 2 > HDR_MAX) {
			fprintf(stderr, "frugal sendmail: header section longer than %d bytes\n", HDR_MAX);
			mem_free(hdr);
			return EX_DATAERR;
		}
		if (hn + (size_t)n + 2 > hcap) {
			hcap = hcap ? hcap * 2 : 8192;
			while (hcap < hn + (size_t)n + 2)
				hcap *= 2;
			if ((hdr = mem_realloc(hdr, hcap)) == NULL)
				oom();
		}
		memcpy(hdr + hn, l, (size_t)n);
		hn += (size_t)n;
		hdr[hn++] = '\n';
	}
	if (hn > start && m->extract && !in_bcc)
		extract(m, hdr + start, hn - start);
	if (m->nrcpt == 0) {
		fprintf(stderr, "frugal sendmail: no recipient addresses found%s\n",
		    m->extract ? " in the message header" : " (use -t or name them)");
		mem_free(hdr);
		return EX_USAGE;
	}
	/* what Postfix's cleanup adds to local submissions */
	extra[0] = '\0';
	if (!have_from) {
		const char *addr = *m->sender ? m->sender : "MAILER-DAEMON";

		if (m->fullname && *m->fullname)
			snprintf(extra, sizeof extra, "From: %s <%s>\n", m->fullname, addr);
		else
			snprintf(extra, sizeof extra, "From: %s\n", addr);
	}
	if (!have_date) {
		mail_date(date, sizeof date);
		snprintf(extra + strlen(extra), sizeof extra - strlen(extra), "Date: %s\n", date);
	}
	if (!have_msgid) {
		if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
			rnd = (unsigned)getpid();
		gmtime_r(&now, &tm);
		strftime(date, sizeof date, "%Y%m%d%H%M%S", &tm);
		snprintf(extra + strlen(extra), sizeof extra - strlen(extra), "Message-ID: <%s.%X%08X@%s>\n",
		    date, (unsigned)getpid(), rnd, m->myhostname);
	}
	if (start_helper(m) < 0) {
		mem_free(hdr);
		return EX_TEMPFAIL;
	}
	put_raw(m, DROP_MAGIC "\n", sizeof DROP_MAGIC);
	put_record(m, 'S', m->sender);
	for (i = 0; i < m->nrcpt; i++)
		put_record(m, 'R', m->rcpt[i]);
	put_data(m, hdr, hn);
	put_data(m, extra, strlen(extra));
	mem_free(hdr);
	put_data(m, "\n", 1);
	/* the line that ended the headers, when it was no empty line, is the body's first */
	if (body_started && n > 0) {
		put_data(m, in->line, (size_t)n);
		put_data(m, "\n", 1);
	}
	while (!m->failed && (n = next_line(in)) >= 0) {
		put_data(m, in->line, (size_t)n);
		put_data(m, "\n", 1);
		if (m->size_limit > 0 && m->size > m->size_limit) {
			fprintf(stderr, "frugal sendmail: message exceeds message_size_limit (%lld bytes): "
			    "not queued\n", m->size_limit);
			finish_helper(m, 0);
			return EX_DATAERR;
		}
	}
	if (ferror(in->f)) {
		fprintf(stderr, "frugal sendmail: reading the message: %s: not queued\n", strerror(errno));
		finish_helper(m, 0);
		return EX_TEMPFAIL;
	}
	i = finish_helper(m, 1);
	if (i == EX_OK && m->verbose) {
		int k;

		for (k = 0; k < m->nrcpt; k++)
			fprintf(stderr, "frugal sendmail: <%s>: queued for delivery\n", m->rcpt[k]);
	}
	return i;
}

/* ---- -bs: SMTP on stdin/stdout ------------------------------------------------ */

static void reply(const char *fmt, const char *arg)
{
	printf(fmt, arg);
	fputs("\r\n", stdout);
	fflush(stdout);
}

/* "FROM:<addr> params" -> addr (a new string), or NULL */
static char *smtp_path(struct sm *m, const char *arg, const char *kw)
{
	size_t k = strlen(kw);
	const char *p, *e;

	if (strncasecmp(arg, kw, k) != 0)
		return NULL;
	p = arg + k;
	while (*p == ' ')
		p++;
	if (*p == '<') {
		if ((e = strchr(p, '>')) == NULL)
			return NULL;
		p++;
	} else {
		e = p + strcspn(p, " ");
	}
	if (e - p > DROP_VALUE_MAX)
		return NULL;
	return qualify(m, p, (size_t)(e - p));
}

static int smtp_session(struct sm *m)
{
	struct input in = { .f = stdin };
	int have_mail = 0, rc, any_fail = 0;
	ssize_t n;
	char *a;

	reply("220 %s ESMTP frugal (sendmail -bs)", m->myhostname);
	while ((n = next_line(&in)) >= 0) {
		char *l = in.line, *arg = strchr(l, ' ');

		if (arg)
			*arg++ = '\0';
		else
			arg = l + n;
		if (strcasecmp(l, "HELO") == 0 || strcasecmp(l, "EHLO") == 0) {
			if (strcasecmp(l, "EHLO") == 0) {
				printf("250-%s\r\n250-PIPELINING\r\n", m->myhostname);
				reply("250 8BITMIME", "");
			} else {
				reply("250 %s", m->myhostname);
			}
		} else if (strcasecmp(l, "MAIL") == 0) {
			if (have_mail) {
				reply("503 5.5.1 Error: nested MAIL command%s", "");
			} else if ((a = smtp_path(m, arg, "FROM:")) == NULL) {
				reply("501 5.5.4 Syntax: MAIL FROM:<address>%s", "");
			} else {
				mem_free(m->sender);
				m->sender = a;
				have_mail = 1;
				reply("250 2.1.0 Ok%s", "");
			}
		} else if (strcasecmp(l, "RCPT") == 0) {
			if (!have_mail) {
				reply("503 5.5.1 Error: need MAIL command%s", "");
			} else if ((a = smtp_path(m, arg, "TO:")) == NULL || *a == '\0') {
				mem_free(a);
				reply("501 5.5.4 Syntax: RCPT TO:<address>%s", "");
			} else {
				add_rcpt(m, a, strlen(a));
				mem_free(a);
				reply("250 2.1.5 Ok%s", "");
			}
		} else if (strcasecmp(l, "DATA") == 0) {
			if (m->nrcpt == 0) {
				reply("554 5.5.1 Error: no valid recipients%s", "");
				continue;
			}
			reply("354 End data with <CR><LF>.<CR><LF>%s", "");
			in.smtp = 1;
			in.ended = 0;
			m->size = 0;
			m->failed = 0;
			m->extract = 0;
			rc = submit(m, &in);
			/* the rest of DATA when submit stopped early (size limit) */
			while (!in.ended && !in.eof && next_line(&in) >= 0)
				;
			in.smtp = 0;
			if (rc == EX_OK) {
				reply("250 2.0.0 Ok: queued%s", "");
			} else {
				any_fail = 1;
				reply(rc == EX_DATAERR ? "552 5.3.4 Message not queued%s" :
				    "451 4.3.0 Message not queued, try again later%s", "");
			}
			clear_rcpt(m);
			have_mail = 0;
		} else if (strcasecmp(l, "RSET") == 0) {
			clear_rcpt(m);
			have_mail = 0;
			reply("250 2.0.0 Ok%s", "");
		} else if (strcasecmp(l, "NOOP") == 0) {
			reply("250 2.0.0 Ok%s", "");
		} else if (strcasecmp(l, "VRFY") == 0) {
			reply("252 2.0.0 %s", *arg ? arg : "Send some mail, I'll try my best");
		} else if (strcasecmp(l, "QUIT") == 0) {
			reply("221 2.0.0 Bye%s", "");
			break;
		} else {
			reply("502 5.5.2 Error: command not recognized%s", "");
		}
	}
	free(in.line);
	return any_fail ? EX_TEMPFAIL : EX_OK;
}

/* ---- -bi: newaliases ------------------------------------------------------------ */

/* Rebuild every cdb: table of alias_maps whose text source exists; nothing else to do. */
static int newaliases(struct sm *m)
{
	char list[4096], *tok, *save = NULL;
	const char *v = conf_str(m->c, "alias_maps", 0);
	int rc = EX_OK;
	struct stat st;

	snprintf(list, sizeof list, "%s", v ? v : "");
	for (tok = strtok_r(list, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		char *av[3] = { "map", NULL, NULL };

		if (strncmp(tok, "cdb:", 4) != 0 || stat(tok + 4, &st) < 0)
			continue;
		av[1] = tok + 4;
		if (conf_cmd_map(2, av) != 0)
			rc = EX_TEMPFAIL;
	}
	return rc;
}

/* ---- the command line ---------------------------------------------------------- */

static int usage(const char *what)
{
	fprintf(stderr, "frugal sendmail: %s\n"
	    "usage: sendmail [-t] [-i] [-f SENDER] [-F NAME] [-bp|-bs|-bi|-bm] [-q] [-v] [-C DIR] [--] [RECIPIENT...]\n",
	    what);
	return EX_USAGE;
}

/*
 * mailq for a user who may not read the queue (Postfix lets anyone run
 * mailq): a request through frugal-postdrop -q, then the listing the
 * daemon writes to status/mailq once it is newer than the request. No
 * daemon (or no answer in MAILQ_WAIT seconds): Postfix's postqueue words
 * and EX_UNAVAILABLE, as when it cannot reach showq.
 */
static int down(void)
{
	fprintf(stderr, "mailq: fatal: Queue report unavailable - mail system is down\n");
	return EX_UNAVAILABLE;
}

static int mailq_via_daemon(struct sm *m)
{
	const char *q = conf_str(m->c, "queue_directory", 0);
	char path[4200], drop[4200], snap[4200], buf[65536];
	struct timespec t0, now;
	struct stat st;
	pid_t pid;
	ssize_t r;
	int status, fd;

	snprintf(path, sizeof path, "%s/%s/frugal.pid", q, SPOOL_PID);
	if (daemon_pidfile_read(path) < 0)
		return down();   /* no request left behind for a daemon that is not there */
	if (helper_path(m, path, sizeof path) < 0) {
		fprintf(stderr, "mailq: fatal: cannot find frugal-postdrop: set command_directory\n");
		return EX_TEMPFAIL;
	}
	snprintf(drop, sizeof drop, "%s/%s", q, SPOOL_MAILDROP);
	snprintf(snap, sizeof snap, "%s/%s/%s", q, SPOOL_STATUS, MAILQ_SNAPSHOT);
	/* the clock file times come from: a listing stamped at or after t0 was made after the request */
	clock_gettime(CLOCK_REALTIME_COARSE, &t0);
	fflush(stdout);
	if ((pid = fork()) < 0) {
		fprintf(stderr, "mailq: fatal: fork: %s\n", strerror(errno));
		return EX_TEMPFAIL;
	}
	if (pid == 0) {
		char *const av[] = { "frugal-postdrop", "-q", drop, NULL };
		char *const ev[] = { NULL };

		execve(path, av, ev);
		fprintf(stderr, "mailq: fatal: cannot run %s: %s\n", path, strerror(errno));
		_exit(EX_TEMPFAIL);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return EX_TEMPFAIL;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return down();   /* the helper said why */
	for (;;) {
		if (stat(snap, &st) == 0 && (st.st_mtim.tv_sec > t0.tv_sec ||
		    (st.st_mtim.tv_sec == t0.tv_sec && st.st_mtim.tv_nsec >= t0.tv_nsec)))
			break;
		clock_gettime(CLOCK_REALTIME_COARSE, &now);
		if (now.tv_sec - t0.tv_sec >= MAILQ_WAIT)
			return down();
		/* polling: the status directory may be on any file system; 20 ms costs nothing */
		nanosleep(&(struct timespec){ 0, 20 * 1000 * 1000 }, NULL);
	}
	if ((fd = open(snap, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
		fprintf(stderr, "mailq: fatal: %s: %s\n", snap, strerror(errno));
		return EX_TEMPFAIL;
	}
	while ((r = read(fd, buf, sizeof buf)) > 0)
		if (fwrite(buf, 1, (size_t)r, stdout) != (size_t)r)
			break;
	close(fd);
	return fflush(stdout) == 0 && r == 0 ? EX_OK : EX_TEMPFAIL;
}

/* 1 when this user may not list the queue directly (Postfix's mailq works for anyone) */
static int queue_unreadable(struct sm *m)
{
	char path[4200];
	int fd;

	snprintf(path, sizeof path, "%s/%s", conf_str(m->c, "queue_directory", 0), SPOOL_COMMITTED);
	if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		close(fd);
		return 0;
	}
	return errno == EACCES;
}

enum sm_mode { MODE_DELIVER, MODE_MAILQ, MODE_NEWALIASES, MODE_SMTP, MODE_FLUSH };

int queue_cmd_sendmail(int argc, char **argv)
{
	const char *self = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	const char *confdir = NULL;
	enum sm_mode mode = strcmp(self, "mailq") == 0 ? MODE_MAILQ :
	    strcmp(self, "newaliases") == 0 ? MODE_NEWALIASES : MODE_DELIVER;
	struct conf_diags d = { 0 };
	struct sm m = { .dots = 1, .pipe = -1 };
	struct passwd *pw;
	struct input in = { .f = stdin };
	char cdir[4096], why[128];
	int o, i, rc;

	signal(SIGPIPE, SIG_IGN);   /* a dead helper is an error return, not a lost message */
	opterr = 0;
	optind = 1;
	/* Postfix's sendmail option string; what it ignores, we ignore */
	while ((o = getopt(argc, argv, "+B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q::tvx")) != -1) {
		switch (o) {
		case 'b':
			switch (optarg[0]) {
			case 'm': mode = MODE_DELIVER; break;
			case 'p': mode = MODE_MAILQ; break;
			case 'i': mode = MODE_NEWALIASES; break;
			case 's': mode = MODE_SMTP; break;
			default:
				snprintf(why, sizeof why, "-b%s is not supported", optarg);
				return usage(why);
			}
			break;
		case 'C': {
			/* a directory, or (Sendmail's meaning) the configuration file in it */
			size_t n = strlen(optarg);

			snprintf(cdir, sizeof cdir, "%s", optarg);
			if (n > 11 && strcmp(optarg + n - 11, "frugal.conf") == 0)
				cdir[n - 11 > 1 ? n - 12 : n - 11] = '\0';
			confdir = cdir;
			break;
		}
		case 'F':
			mem_free(m.fullname);
			if ((m.fullname = mem_strdup(optarg)) == NULL)
				oom();
			break;
		case 'f': case 'r':
			mem_free(m.sender);
			if ((m.sender = mem_strdup(optarg)) == NULL)
				oom();
			break;
		case 'i':
			m.dots = 0;
			break;
		case 'o':
			if (optarg[0] == 'i')   /* -oi: as -i; every other -oX is Sendmail tuning */
				m.dots = 0;
			break;
		case 'q':
			mode = MODE_FLUSH;
			break;
		case 't':
			m.extract = 1;
			break;
		case 'v':
			m.verbose = 1;
			break;
		case '?':
			if (optopt && strchr("BCFLNORVXbefhopr", optopt))
				snprintf(why, sizeof why, "option -%c needs an argument", optopt);
			else
				snprintf(why, sizeof why, "unknown option -%c", optopt ? optopt : '?');
			return usage(why);
		default:   /* -B -G -I -L -N -O -R -U -V -X -c -e -h -m -n -p -x: accepted, ignored as Postfix */
			break;
		}
	}
	if ((m.c = conf_load_for_command(confdir, &d)) == NULL) {
		for (i = 0; i < d.n; i++)
			fprintf(stderr, "%s\n", d.v[i].text);
		conf_diags_free(&d);
		return EX_TEMPFAIL;   /* a broken configuration is the admin's to fix; the caller retries */
	}
	conf_diags_free(&d);
	if (mode == MODE_MAILQ && queue_unreadable(&m)) {
		rc = mailq_via_daemon(&m);
		conf_unref(m.c);
		return rc;
	}
	if (mode == MODE_MAILQ || mode == MODE_FLUSH) {
		char *qav[5] = { "queue", NULL, NULL, NULL, NULL };
		int qn = 1;

		if (conf_dir(m.c)[0]) {
			qav[qn++] = "-c";
			qav[qn++] = (char *)conf_dir(m.c);
		}
		qav[qn++] = mode == MODE_MAILQ ? "list" : "flush";
		rc = queue_cmd(qn, qav);
		conf_unref(m.c);
		return rc;
	}
	if (mode == MODE_NEWALIASES) {
		rc = newaliases(&m);
		conf_unref(m.c);
		return rc;
	}
	m.myhostname = conf_str(m.c, "myhostname", 0);
	m.myorigin = conf_str(m.c, "myorigin", 0);
	m.size_limit = conf_int(m.c, "message_size_limit", 0);
	if ((pw = getpwuid(getuid())) != NULL) {
		if ((m.login = mem_strdup(pw->pw_name)) == NULL)
			oom();
		if (m.fullname == NULL && pw->pw_gecos && *pw->pw_gecos) {
			if ((m.fullname = mem_strndup(pw->pw_gecos, strcspn(pw->pw_gecos, ","))) == NULL)
				oom();
		}
	} else {
		char uid[32];

		snprintf(uid, sizeof uid, "%u", (unsigned)getuid());
		if ((m.login = mem_strdup(uid)) == NULL)
			oom();
	}
	/* the envelope sender: -f, else the login @ $myorigin; "<>" the null sender */
	if (m.sender == NULL || strcmp(m.sender, "<>") == 0 || strcmp(m.sender, "") == 0) {
		char *s = m.sender ? mem_strdup("") : qualify(&m, m.login, strlen(m.login));

		mem_free(m.sender);
		if ((m.sender = s) == NULL)
			oom();
	} else {
		char *s = qualify(&m, m.sender, strlen(m.sender));

		mem_free(m.sender);
		m.sender = s;
	}
	if (strlen(m.sender) > DROP_VALUE_MAX || strpbrk(m.sender, "\r\n")) {
		conf_unref(m.c);
		return usage("bad sender address");
	}
	if (mode == MODE_SMTP) {
		rc = smtp_session(&m);
	} else {
		for (i = optind; i < argc; i++) {
			/* "a@b, c@d" as one argument: Sendmail splits at commas */
			char *save = NULL, *tok, *copy = mem_strdup(argv[i]);

			if (copy == NULL)
				oom();
			for (tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
				add_rcpt(&m, tok, strlen(tok));
			mem_free(copy);
		}
		in.dots = m.dots;
		rc = submit(&m, &in);
	}
	free(in.line);
	clear_rcpt(&m);
	mem_free(m.rcpt);
	mem_free(m.sender);
	mem_free(m.fullname);
	mem_free(m.login);
	conf_unref(m.c);
	return rc;
}
