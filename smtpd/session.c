/*
 * smtpd/session.c: one SMTP session as a state machine on the loop. A
 * session costs this struct while idle; input and output buffers exist
 * only while bytes wait in them. Callbacks read what is there, act on every
 * complete line, queue replies, and flush once (RFC 2920 pipelining).
 *
 * Owns: the socket (closed in session_free), the transaction and its spool
 * txn until commit. Never frees itself inside its own callback chain: it
 * marks itself S_CLOSING and the server's reaper frees it.
 */
#include "smtpd/smtpd_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"
#include "limits/limits.h"
#include "queue/queue.h"

#define IN_MAX   (32 * 1024)                 /* command line, or data chunk being parsed */
#define OUT_MAX  (16 * 1024)                 /* pipelined replies waiting for the client */
#define OUT_HIGH (OUT_MAX / 2)               /* stop parsing input above this; resume below */
#define LINE_LENGTH_LIMIT 2048               /* Postfix line_length_limit; RFC 5321 says 1000 */
#define READ_CHUNK (16 * 1024)
#define LINGER_TIME 2.0                      /* seconds to drain a client after the final reply */
#define LINGER_MAX  (64 * 1024)              /* bytes drained at most before a hard close */

static void session_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void session_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void session_process(struct session *s);

/* Warnings a client can trigger at will: a few a minute, the rest counted. */
static struct log_rate outbuf_rate = LOG_RATE_INIT(60, 5);
static struct log_rate nomem_rate = LOG_RATE_INIT(60, 5);
static struct log_rate queue_rate = LOG_RATE_INIT(60, 5);
static struct log_rate disk_rate[2] = { LOG_RATE_INIT(60, 5), LOG_RATE_INIT(60, 5) };  /* space, inodes */

/* a full file system (or quota) is "insufficient system storage", not a write error */
static int storage_err(int e) { return e == ENOSPC || e == EDQUOT; }

static const char *proto(const struct session *s) { return s->esmtp ? "ESMTP" : "SMTP"; }

static int session_port(const struct session *s)
{
	if (s->peer.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&s->peer)->sin_port);
	if (s->peer.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&s->peer)->sin6_port);
	return 0;
}

/*
 * Every state change goes through here. The closing states bound the
 * session's remaining life by themselves: S_CLOSING gets smtpd_timeout to
 * hand over its last reply (a client that never reads cannot keep its
 * slot), S_LINGER gets LINGER_TIME.
 */
static void enter_state(struct session *s, enum session_state st)
{
	if (s->state == st)
		return;
	s->state = st;
	if ((st == S_CLOSING || st == S_LINGER) && !s->reaping) {
		ev_timer_stop(s->srv->loop, &s->timer);
		ev_timer_set(&s->timer, st == S_LINGER ? LINGER_TIME : s->p->timeout, 0.);
		ev_timer_start(s->srv->loop, &s->timer);
		s->sleeping = 0;
	}
}

/* ---- replies ------------------------------------------------------------- */

static void reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct session *s, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof line - 3)
		n = sizeof line - 3;
	line[n++] = '\r';
	line[n++] = '\n';
	if (buf_append(&s->out, line, (size_t)n) < 0) {
		if (errno == ENOBUFS) {
			/* replies pile up although parsing stops at OUT_HIGH: a client that never reads */
			log_ratelimited(&outbuf_rate, "smtpd", "output buffer full for %s[%s]: disconnecting",
			    s->host, s->addr);
		} else {
			/* no memory for the reply: say 421 straight to the socket if nothing is queued before it */
			static const char bye[] = "421 4.3.2 Service temporarily unavailable\r\n";

			limits_note_failure("memory", ENOMEM);
			log_ratelimited(&nomem_rate, "smtpd", "memory budget exhausted: 421 to %s[%s]",
			    s->host, s->addr);
			if (buf_used(&s->out) == 0 && write(s->fd, bye, sizeof bye - 1) < 0) {
				/* the connection is being dropped anyway */
			}
			buf_release(&s->out);
		}
		s->peer_gone = 1;   /* nothing more will reach it in order: no lingering */
		enter_state(s, S_CLOSING);
	}
}

/* Is this session in a state that consumes input? */
static int parsing(const struct session *s)
{
	return s->state != S_CLOSING && s->state != S_LINGER && s->state != S_COMMIT &&
	    s->state != S_GREETING && !s->sleeping;
}

static void update_watcher(struct session *s)
{
	int ev = 0;

	if (buf_used(&s->out))
		ev |= EV_WRITE;
	/*
	 * Read while we parse and replies do not pile up (backpressure: a client
	 * that does not read its replies stops being read), in the pregreet wait
	 * (to catch a talker), and while lingering (to drain).
	 */
	if ((parsing(s) && buf_used(&s->out) < OUT_HIGH) || s->state == S_GREETING || s->state == S_LINGER)
		ev |= EV_READ;
	if (ev == (s->io.events & (EV_READ | EV_WRITE)) && ev_is_active(&s->io))
		return;
	ev_io_stop(s->srv->loop, &s->io);
	ev_io_set(&s->io, s->fd, ev);
	if (ev)
		ev_io_start(s->srv->loop, &s->io);
}

/* Write what the socket takes; -1 when the connection is broken. */
static int write_out(struct session *s)
{
	while (buf_used(&s->out)) {
		ssize_t w = buf_write_fd(&s->out, s->fd);
		if (w < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			if (errno == ENOBUFS || errno == ENOMEM)
				limits_note_failure("socket buffer", errno);
			buf_release(&s->out);
			s->peer_gone = 1;
			enter_state(s, S_CLOSING);
			return -1;
		}
	}
	if (buf_used(&s->out) == 0)
		buf_release(&s->out);
	return 0;
}

/*
 * Hand replies to the socket, and parse more input whenever the replies
 * drain below OUT_HIGH (input left waiting by backpressure); then close,
 * linger or re-arm the watcher. Never frees the session: that is the
 * reaper's job (server_reap).
 */
static void flush(struct session *s)
{
	int progress = 1;

	while (write_out(s) == 0 && progress && buf_used(&s->out) < OUT_HIGH && parsing(s) &&
	    buf_used(&s->in)) {
		size_t before = buf_used(&s->in);

		session_process(s);
		progress = buf_used(&s->in) != before;   /* else a partial line: wait for more */
	}
	if (s->state == S_CLOSING && buf_used(&s->out) == 0) {
		if (s->peer_gone) {
			server_reap(s->srv, s);
			return;
		}
		/*
		 * The final reply is out. Shut down our side and drain the client
		 * briefly: closing with unread input makes the kernel send a reset,
		 * and a client that pipelined past our 421/221 would lose the reply.
		 */
		shutdown(s->fd, SHUT_WR);
		buf_release(&s->in);
		enter_state(s, S_LINGER);
		/* no longer an SMTP session for admission and stress: a socket, still charged, and a struct */
		if (s->admitted)
			limits_session_done();
		s->admitted = 0;
	}
	update_watcher(s);
}

/* Count an error; past the hard limit say goodbye (Postfix smtpd_hard_error_limit). */
static void count_error(struct session *s)
{
	s->errors++;
	if (s->errors >= s->p->hard_error_limit) {
		reply(s, "421 4.7.0 %s Error: too many errors", s->gen->myhostname);
		log_info("smtpd", "too many errors after %s from %s[%s]",
		    s->state == S_DATA ? "DATA" : "command", s->host, s->addr);
		enter_state(s, S_CLOSING);
	} else if (s->errors > s->p->soft_error_limit && s->p->error_sleep_time > 0) {
		/* tarpit: the next command waits smtpd_error_sleep_time */
		s->sleeping = 1;
	}
}

void session_shutdown(struct session *s, const char *text)
{
	if (s->state == S_CLOSING || s->state == S_LINGER)
		return;
	if (s->state == S_COMMIT)
		return; /* the commit's answer comes first; closed after it */
	reply(s, "%s", text);
	enter_state(s, S_CLOSING);
	flush(s);
}

/* ---- transactions -------------------------------------------------------- */

static void tx_free(struct session *s)
{
	if (s->tx == NULL)
		return;
	if (s->tx->txn)
		spool_txn_abort(s->tx->txn);
	mem_free(s->tx);
	s->tx = NULL;
}

static void tx_reset(struct session *s)
{
	tx_free(s);
	if (s->state != S_CLOSING && s->state != S_LINGER && s->state != S_INIT && s->state != S_GREETING)
		enter_state(s, S_HELO);
}

/* ---- commands ------------------------------------------------------------ */

static void do_helo(struct session *s, const struct smtpd_cmd *c, int ehlo)
{
	char *h;

	if (c->arglen == 0) {
		reply(s, "501 5.5.4 Syntax: %s hostname", ehlo ? "EHLO" : "HELO");
		count_error(s);
		return;
	}
	if ((h = mem_strndup(c->arg, c->arglen)) == NULL) {
		reply(s, "451 4.3.0 Error: insufficient system resources");
		limits_note_failure("memory", ENOMEM);
		return;
	}
	mem_free(s->helo);
	s->helo = h;
	s->esmtp = ehlo;
	tx_free(s);
	enter_state(s, S_HELO);
	if (!ehlo) {
		reply(s, "250 %s", s->gen->myhostname);
		return;
	}
	reply(s, "250-%s", s->gen->myhostname);
	reply(s, "250-PIPELINING");
	reply(s, "250-SIZE %lld", s->p->message_size_limit);
	reply(s, "250-VRFY");
	reply(s, "250-ENHANCEDSTATUSCODES");
	reply(s, "250-8BITMIME");
	reply(s, "250 SMTPUTF8");
}

static const char *path_err_text(enum smtpd_path_err e, int mail)
{
	switch (e) {
	case PATH_TOO_LONG: return mail ? "501 5.1.7 Bad sender address syntax" : "501 5.1.3 Bad recipient address syntax";
	case PATH_BAD_PARAM: return "555 5.5.4 Unsupported option";
	case PATH_BAD_SIZE: return "501 5.5.4 Bad message size syntax";
	case PATH_BAD_BODY: return "501 5.5.4 Unsupported BODY parameter";
	default: return mail ? "501 5.5.4 Syntax: MAIL FROM:<address>" : "501 5.5.4 Syntax: RCPT TO:<address>";
	}
}

static void do_mail(struct session *s, const struct smtpd_cmd *c)
{
	struct smtpd_path p;
	enum smtpd_path_err e;

	if (s->state == S_INIT && s->p->helo_required) {
		reply(s, "503 5.5.1 Error: send HELO/EHLO first");
		count_error(s);
		return;
	}
	if (s->tx) {
		reply(s, "503 5.5.1 Error: nested MAIL command");
		count_error(s);
		return;
	}
	if ((e = smtpd_parse_path(c->arg, c->arglen, "FROM:", 1, &p)) != PATH_OK) {
		if (e == PATH_SYNTAX && c->arglen > 5 && strncasecmp(c->arg, "FROM:", 5) == 0)
			reply(s, "501 5.1.7 Bad sender address syntax");
		else
			reply(s, "%s", path_err_text(e, 1));
		count_error(s);
		return;
	}
	if (p.size >= 0 && s->p->message_size_limit > 0 && p.size > s->p->message_size_limit) {
		reply(s, "552 5.3.4 Message size exceeds fixed limit");
		count_error(s);
		return;
	}
	{
		char why[700];

		/* Postfix's smtpd_check_queue: refuse early, not halfway through DATA */
		if (!limits_disk_admit(p.size > 0 ? p.size : 0, why, sizeof why)) {
			reply(s, "452 4.3.1 Insufficient system storage");
			log_ratelimited(&disk_rate[strstr(why, "inodes") != NULL], "smtpd",
			    "not enough free space: %s: 452 to %s[%s]", why, s->host, s->addr);
			return;
		}
	}
	if ((s->tx = mem_calloc(1, sizeof *s->tx)) == NULL) {
		reply(s, "451 4.3.0 Error: insufficient system resources");
		limits_note_failure("memory", ENOMEM);
		return;
	}
	snprintf(s->tx->sender, sizeof s->tx->sender, "%s", p.addr);
	enter_state(s, S_MAIL);
	reply(s, "250 2.1.0 Ok");
}

static void do_rcpt(struct session *s, const struct smtpd_cmd *c)
{
	struct smtpd_path p;
	enum smtpd_path_err e;
	char rtext[600];
	enum restr_result res;

	if (s->tx == NULL) {
		reply(s, "503 5.5.1 Error: need MAIL command");
		count_error(s);
		return;
	}
	if ((e = smtpd_parse_path(c->arg, c->arglen, "TO:", 0, &p)) != PATH_OK) {
		if (e == PATH_SYNTAX && c->arglen > 3 && strncasecmp(c->arg, "TO:", 3) == 0)
			reply(s, "501 5.1.3 Bad recipient address syntax");
		else
			reply(s, "%s", path_err_text(e, 0));
		count_error(s);
		return;
	}
	if (s->tx->nrcpt >= s->p->recipient_limit) {
		reply(s, "452 4.5.3 Error: too many recipients");
		count_error(s);
		return;
	}
	res = restr_check_rcpt(s, p.addr, rtext, sizeof rtext);
	if (res != RESTR_PERMIT) {
		reply(s, "%s", rtext);
		log_info("smtpd", "%s: reject: RCPT from %s[%s]: %s; from=<%s> to=<%s> proto=%s helo=<%s>",
		    s->tx->txn ? spool_txn_id(s->tx->txn) : "NOQUEUE",
		    s->host, s->addr, rtext, s->tx->sender, p.addr, proto(s), s->helo ? s->helo : "");
		count_error(s);
		return;
	}
	if (s->tx->txn == NULL) {
		char client[128];

		snprintf(client, sizeof client, "%s[%s]", s->host, s->addr);
		if ((s->tx->txn = spool_txn_new(s->srv->spool, s->tx->sender, client)) == NULL) {
			int err = errno;
			reply(s, "451 4.3.0 Error: queue file write error");
			limits_note_failure(err == ENOMEM ? "memory" : "queue file", err);
			return;
		}
		log_info("smtpd", "%s: client=%s", spool_txn_id(s->tx->txn), client);
	}
	if (spool_txn_rcpt(s->tx->txn, p.addr, p.addr) < 0) {
		reply(s, "451 4.3.0 Error: insufficient system resources");
		limits_note_failure("memory", errno);
		return;
	}
	if (s->tx->nrcpt++ == 0)
		snprintf(s->tx->first_rcpt, sizeof s->tx->first_rcpt, "%s", p.addr);
	enter_state(s, S_RCPT);
	reply(s, "250 2.1.5 Ok");
}

static void do_data(struct session *s, const struct smtpd_cmd *c)
{
	struct smtp_tx *tx = s->tx;
	char date[64], hdr[1024];
	time_t now = time(NULL);
	struct tm tm;
	int n;

	if (c->arglen) {
		reply(s, "501 5.5.4 Syntax: DATA");
		count_error(s);
		return;
	}
	if (tx == NULL) {
		reply(s, "503 5.5.1 Error: need RCPT command");
		count_error(s);
		return;
	}
	if (tx->nrcpt == 0) {
		reply(s, "554 5.5.1 Error: no valid recipients");
		count_error(s);
		return;
	}
	if (spool_txn_open(tx->txn) < 0) {
		int err = errno;
		reply(s, "451 4.3.0 Error: queue file write error");
		limits_note_failure(err == ENOMEM ? "memory" : err == EMFILE || err == ENFILE ? "descriptors" : "queue file", err);
		tx_reset(s);
		return;
	}
	localtime_r(&now, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
	/* RFC 5321 4.4: the trace header, Postfix's layout */
	n = snprintf(hdr, sizeof hdr, "Received: from %s (%s [%s])\n\tby %s (%s) with %s id %s%s%s%s;\n\t%s\n",
	    s->helo ? s->helo : s->host, s->host, s->addr, s->gen->myhostname,
	    conf_str(s->gen->conf, "mail_name", 0), proto(s), spool_txn_id(tx->txn),
	    tx->nrcpt == 1 ? "\n\tfor <" : "", tx->nrcpt == 1 ? tx->first_rcpt : "",
	    tx->nrcpt == 1 ? ">" : "", date);
	if (n < 0 || (size_t)n >= sizeof hdr || spool_txn_write(tx->txn, hdr, (size_t)n) < 0) {
		reply(s, "451 4.3.0 Error: queue file write error");
		limits_note_failure("queue file", errno);
		tx_reset(s);
		return;
	}
	tx->at_bol = 1;
	tx->in_headers = 1;
	enter_state(s, S_DATA);
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/*
 * The spool's answer. The session cannot have been freed meanwhile: the
 * reaper keeps a session whose commit is in flight (s->committing). When
 * the client is already gone, the message is still queued for delivery: it
 * is durable, and only the 250 was lost (the client may send it again).
 */
static void commit_done(void *arg, int err, const char *queue_id)
{
	struct session *s = arg;

	if (!s->committing)
		log_panic("smtpd", "commit callback for a session that is not committing");
	s->committing = 0;
	s->srv->commits--;
	if (err == 0) {
		if (s->srv->qmgr)
			qmgr_enqueue(s->srv->qmgr, queue_id);
	} else {
		log_ratelimited(&queue_rate, "smtpd", "%s: queue file write error: %s: %s to %s[%s]",
		    queue_id, strerror(err), storage_err(err) ? "452" : "451", s->host, s->addr);
		limits_note_failure(storage_err(err) ? "queue file system" : "queue file", err);
	}
	tx_free(s);
	if (s->reaping)
		return;        /* the reaper frees it now */
	if (err == 0)
		reply(s, "250 2.0.0 Ok: queued as %s", queue_id);
	else if (storage_err(err))
		reply(s, "452 4.3.1 Insufficient system storage");
	else
		reply(s, "451 4.3.0 Error: queue file write error");
	if (s->state == S_COMMIT)   /* reply() may have given up on the session */
		enter_state(s, s->srv->stopping ? S_CLOSING : S_HELO);
	flush(s);   /* and parse what was pipelined meanwhile */
}

static void data_end(struct session *s)
{
	struct smtp_tx *tx = s->tx;

	if (tx->err != TX_OK) {
		char text[128];

		switch (tx->err) {
		case TX_ERROR_SIZE:
			snprintf(text, sizeof text, "552 5.3.4 Message size exceeds fixed limit");
			break;
		case TX_ERROR_LINE:
			snprintf(text, sizeof text, "552 5.3.4 Message line too long (limit %d octets)", LINE_LENGTH_LIMIT);
			break;
		case TX_ERROR_NUL:
			snprintf(text, sizeof text, "554 5.6.0 Message contains NUL characters");
			break;
		case TX_ERROR_LOOP:
			snprintf(text, sizeof text, "554 5.4.6 Too many hops");
			break;
		case TX_ERROR_RESOURCES:
			snprintf(text, sizeof text, "451 4.3.0 Error: insufficient system resources");
			limits_note_failure("memory", ENOMEM);
			break;
		case TX_ERROR_STORAGE:
			snprintf(text, sizeof text, "452 4.3.1 Insufficient system storage");
			limits_note_failure("queue file system", tx->errnum);
			break;
		default:
			snprintf(text, sizeof text, "451 4.3.0 Error: queue file write error");
			limits_note_failure("queue file", tx->errnum ? tx->errnum : EIO);
			break;
		}
		reply(s, "%s", text);
		log_info("smtpd", "%s: reject: END-OF-MESSAGE from %s[%s]: %s; from=<%s> proto=%s helo=<%s>",
		    spool_txn_id(tx->txn), s->host, s->addr, text, tx->sender, proto(s), s->helo ? s->helo : "");
		tx_reset(s);
		return;
	}
	enter_state(s, S_COMMIT);
	{
		struct spool_txn *t = tx->txn;

		tx->txn = NULL;            /* the spool owns it now */
		s->committing = 1;         /* and holds s until commit_done */
		s->srv->commits++;
		spool_txn_commit(t, commit_done, s);
	}
}

/* Unstuffed message bytes to the spool (which buffers its writes). */
static void data_out(struct session *s, const char *p, size_t n)
{
	struct smtp_tx *tx = s->tx;

	if (tx->err != TX_OK)
		return;
	tx->size += (long long)n;
	if (s->p->message_size_limit > 0 && tx->size > s->p->message_size_limit) {
		tx->err = TX_ERROR_SIZE;
		return;
	}
	if (spool_txn_write(tx->txn, p, n) < 0) {
		tx->errnum = errno;
		tx->err = errno == ENOMEM ? TX_ERROR_RESOURCES : storage_err(errno) ? TX_ERROR_STORAGE : TX_ERROR_IO;
	}
}

/*
 * Consume message content from s->in: dot-unstuffing (RFC 5321 4.5.2),
 * CRLF to LF, bare CR/LF refused (smtpd_forbid_bare_newline, the SMTP
 * smuggling defence), NULs and over-long lines flagged. Returns 1 when the
 * terminating "." line was seen, 0 when more input is needed, -1 when the
 * session was closed.
 */
static int data_consume(struct session *s)
{
	struct smtp_tx *tx = s->tx;

	for (;;) {
		char *p = buf_head(&s->in);
		size_t avail = buf_used(&s->in), len, content;
		char *lf = memchr(p, '\n', avail);
		int crlf;

		if (lf == NULL) {
			/* a partial line: keep it, unless it is already too long to be anything but content */
			if (avail < LINE_LENGTH_LIMIT)
				return 0;
			if (tx->at_bol && p[0] == '.') {
				p++;
				avail--;
				buf_consume(&s->in, 1);
			}
			if (memchr(p, '\0', avail))
				tx->err = tx->err ? tx->err : TX_ERROR_NUL;
			if (s->p->forbid_bare_newline && memchr(p, '\r', avail - 1))
				goto bare;
			/* keep a trailing CR: it may be half of the CRLF */
			len = p[avail - 1] == '\r' ? avail - 1 : avail;
			data_out(s, p, len);
			tx->line_len += len;
			if (tx->line_len > LINE_LENGTH_LIMIT && tx->err == TX_OK)
				tx->err = TX_ERROR_LINE;
			tx->at_bol = 0;
			buf_consume(&s->in, len);
			return 0;
		}
		len = (size_t)(lf - p) + 1;
		crlf = len >= 2 && lf[-1] == '\r';
		if (!crlf && s->p->forbid_bare_newline)
			goto bare;
		content = len - (crlf ? 2 : 1);
		if (s->p->forbid_bare_newline && content && memchr(p, '\r', content))
			goto bare;
		if (tx->at_bol && content == 1 && p[0] == '.') {
			buf_consume(&s->in, len);
			return 1;
		}
		if (memchr(p, '\0', content) && tx->err == TX_OK)
			tx->err = TX_ERROR_NUL;
		if (tx->line_len + content > LINE_LENGTH_LIMIT && tx->err == TX_OK)
			tx->err = TX_ERROR_LINE;
		if (tx->at_bol && content && p[0] == '.') {
			p++;
			content--;
		}
		if (tx->at_bol && tx->in_headers) {
			if (content == 0)
				tx->in_headers = 0;
			else if (content >= 9 && strncasecmp(p, "Received:", 9) == 0 &&
			    ++tx->received_count > conf_int(s->gen->conf, "hopcount_limit", 0) &&
			    tx->err == TX_OK)
				tx->err = TX_ERROR_LOOP;
		}
		data_out(s, p, content);
		data_out(s, "\n", 1);
		tx->line_len = 0;
		tx->at_bol = 1;
		buf_consume(&s->in, len);
	}
bare:
	reply(s, "521 5.5.2 %s Error: bare <CR> or <LF> received", s->gen->myhostname);
	log_info("smtpd", "bare newline in DATA from %s[%s]: disconnecting", s->host, s->addr);
	tx_free(s);
	enter_state(s, S_CLOSING);
	return -1;
}

static void do_command(struct session *s, const char *line, size_t len)
{
	struct smtpd_cmd c;

	if (memchr(line, '\0', len)) {
		reply(s, "500 5.5.2 Error: bad syntax");
		count_error(s);
		return;
	}
	smtpd_cmd_parse(line, len, &c);
	if (len > SMTPD_CMD_LINE_MAX - 2 && !(c.verb == CMD_MAIL || c.verb == CMD_RCPT)) {
		reply(s, "500 5.5.2 Error: line too long");
		count_error(s);
		return;
	}
	switch (c.verb) {
	case CMD_HELO: do_helo(s, &c, 0); break;
	case CMD_EHLO: do_helo(s, &c, 1); break;
	case CMD_MAIL: do_mail(s, &c); break;
	case CMD_RCPT: do_rcpt(s, &c); break;
	case CMD_DATA: do_data(s, &c); break;
	case CMD_RSET:
		if (c.arglen) {
			reply(s, "501 5.5.4 Syntax: RSET");
			count_error(s);
			break;
		}
		tx_reset(s);
		reply(s, "250 2.0.0 Ok");
		goto junk;
	case CMD_NOOP:
		reply(s, "250 2.0.0 Ok");
		goto junk;
	case CMD_VRFY:
		/* 252: no address harvesting (RFC 5321 3.5.3) */
		if (c.arglen == 0) {
			reply(s, "501 5.5.4 Syntax: VRFY address");
			count_error(s);
		} else {
			reply(s, "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery");
		}
		goto junk;
	case CMD_QUIT:
		reply(s, "221 2.0.0 Bye");
		enter_state(s, S_CLOSING);
		break;
	case CMD_HELP:
		reply(s, "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP");
		break;
	case CMD_EXPN:
	case CMD_ETRN:
	case CMD_STARTTLS:
	case CMD_AUTH:
	case CMD_BDAT:
		reply(s, "502 5.5.1 Error: command not implemented");
		count_error(s);
		break;
	case CMD_UNKNOWN:
	default:
		reply(s, "500 5.5.2 Error: command not recognized");
		count_error(s);
		break;
	}
	return;
junk:
	/* Postfix smtpd_junk_command_limit: past it, each junk command is an error */
	if (++s->junk > s->p->junk_command_limit)
		count_error(s);
}

/*
 * Act on the complete lines in the input buffer (pipelining), until the
 * replies pile up past OUT_HIGH (backpressure: flush() resumes once they
 * drain) or the state stops parsing.
 */
static void session_process(struct session *s)
{
	while (parsing(s) && buf_used(&s->out) < OUT_HIGH && buf_used(&s->in)) {
		char *p, *lf;
		size_t avail, len;

		if (s->state == S_DATA) {
			int r = data_consume(s);
			if (r == 1)
				data_end(s);
			if (r != 1)
				break;
			continue;
		}
		p = buf_head(&s->in);
		avail = buf_used(&s->in);
		if ((lf = memchr(p, '\n', avail)) == NULL) {
			if (avail > SMTPD_PATH_LINE_MAX) {
				/* no line end within the limit: RFC 5321 4.5.3.1.4 */
				reply(s, "500 5.5.2 Error: line too long");
				log_info("smtpd", "line too long from %s[%s]: disconnecting", s->host, s->addr);
				enter_state(s, S_CLOSING);
			}
			break;
		}
		len = (size_t)(lf - p);
		if (len == 0 || p[len - 1] != '\r') {
			if (s->p->forbid_bare_newline) {
				reply(s, "521 5.5.2 %s Error: bare <LF> received", s->gen->myhostname);
				log_info("smtpd", "bare <LF> from %s[%s]: disconnecting", s->host, s->addr);
				enter_state(s, S_CLOSING);
				break;
			}
		} else {
			len--;
		}
		if (s->p->forbid_bare_newline && memchr(p, '\r', len)) {
			reply(s, "521 5.5.2 %s Error: bare <CR> received", s->gen->myhostname);
			enter_state(s, S_CLOSING);
			break;
		}
		if (len > SMTPD_PATH_LINE_MAX - 2) {
			reply(s, "500 5.5.2 Error: line too long");
			count_error(s);
		} else {
			do_command(s, p, len);
		}
		buf_consume(&s->in, (size_t)(lf - p) + 1);
	}
	if (buf_used(&s->in) == 0)
		buf_release(&s->in);
	if (s->sleeping) {
		ev_timer_stop(s->srv->loop, &s->timer);
		ev_timer_set(&s->timer, s->p->error_sleep_time, s->p->timeout);
		ev_timer_start(s->srv->loop, &s->timer);
	}
}

/* ---- events -------------------------------------------------------------- */

/* S_LINGER: read and discard until EOF, an error, LINGER_MAX bytes or the timer. */
static void session_linger(struct session *s)
{
	char scratch[4096];
	ssize_t r = read(s->fd, scratch, sizeof scratch);

	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (r > 0 && (s->lingered += (size_t)r) <= LINGER_MAX)
		return;
	server_reap(s->srv, s);
}

static void session_read(struct session *s)
{
	ssize_t r = buf_read_fd(&s->in, s->fd, READ_CHUNK);

	if (r == 0) {
		if (s->state == S_DATA || s->state == S_MAIL || s->state == S_RCPT)
			log_info("smtpd", "lost connection after %s from %s[%s]",
			    s->state == S_DATA ? "DATA" : s->state == S_RCPT ? "RCPT" : "MAIL", s->host, s->addr);
		tx_free(s);
		s->peer_gone = 1;   /* replies already queued still go out, if it reads them */
		enter_state(s, S_CLOSING);
		return;
	}
	if (r < 0) {
		if (r == -1 && (errno == EAGAIN || errno == EINTR))
			return;
		if (r == -1 && errno == ENOMEM) {
			/* our buffer budget: tell this client, keep everyone else */
			limits_note_failure("memory", ENOMEM);
			reply(s, "421 4.3.2 %s Service temporarily unavailable", s->gen->myhostname);
		} else if (r == -2) {
			reply(s, "500 5.5.2 Error: line too long");
		} else {
			s->peer_gone = 1;   /* ECONNRESET and friends */
		}
		tx_free(s);
		enter_state(s, S_CLOSING);
		return;
	}
	if (s->state == S_GREETING) {
		/*
		 * postscreen's PREGREET test: real clients wait for the banner. Log
		 * exactly the bytes received, escaped (never past them: the buffer
		 * holds no terminator), in postscreen's shape.
		 */
		char text[256];
		size_t n = (size_t)r < 100 ? (size_t)r : 100;

		log_info("smtpd", "PREGREET %zd after %.2f from [%s]:%d: %s", r,
		    ev_now(s->srv->loop) - s->connected, s->addr, session_port(s),
		    log_escape(text, sizeof text, buf_head(&s->in), n));
		buf_release(&s->in);
		reply(s, "521 5.5.1 %s Error: protocol error: talked before the greeting", s->gen->myhostname);
		enter_state(s, S_CLOSING);
		return;
	}
	ev_timer_again(s->srv->loop, &s->timer);
	session_process(s);
}

static void session_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct session *s = (struct session *)w; /* io is the first member */

	(void)loop;
	if (s->reaping)
		return;
	if (revents & EV_READ) {
		if (s->state == S_LINGER) {
			session_linger(s);
			return;
		}
		if (parsing(s) || s->state == S_GREETING)
			session_read(s);
	}
	flush(s);
}

static void send_greeting(struct session *s)
{
	reply(s, "220 %s", s->gen->banner);
	enter_state(s, S_INIT);
}

static void session_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct session *s = (struct session *)((char *)w - offsetof(struct session, timer));

	(void)loop; (void)revents;
	if (s->reaping)
		return;
	if (s->sleeping) {
		s->sleeping = 0;
		ev_timer_stop(s->srv->loop, &s->timer);
		ev_timer_set(&s->timer, s->p->timeout, s->p->timeout);
		ev_timer_again(s->srv->loop, &s->timer);
		session_process(s);
		flush(s);
		return;
	}
	if (s->state == S_GREETING) {
		send_greeting(s);
		ev_timer_stop(s->srv->loop, &s->timer);
		ev_timer_set(&s->timer, s->p->timeout, s->p->timeout);
		ev_timer_again(s->srv->loop, &s->timer);
		flush(s);
		return;
	}
	if (s->state == S_COMMIT) {  /* our sync is slow, not the client: wait */
		ev_timer_again(s->srv->loop, &s->timer);
		return;
	}
	if (s->state == S_CLOSING || s->state == S_LINGER) {
		/* the final reply did not go out in time (a client that does not read), or lingering is over */
		if (s->state == S_CLOSING)
			log_info("smtpd", "timeout sending the last reply to %s[%s]", s->host, s->addr);
		server_reap(s->srv, s);
		return;
	}
	log_info("smtpd", "timeout after %s from %s[%s]",
	    s->state == S_DATA ? "DATA" : s->state == S_INIT ? "CONNECT" : "command", s->host, s->addr);
	tx_free(s);
	reply(s, "421 4.4.2 %s Error: timeout exceeded", s->gen->myhostname);
	enter_state(s, S_CLOSING);
	flush(s);
}

struct session *session_new(struct smtpd_server *srv, int fd, const struct sockaddr_storage *peer, int submission)
{
	struct session *s = mem_calloc(1, sizeof *s);

	if (s == NULL)
		return NULL;
	s->srv = srv;
	s->gen = srv->gen;
	s->gen->refs++;
	s->submission = submission;
	s->p = &s->gen->params[submission ? 0 : srv->stress];
	s->fd = fd;
	s->peer = *peer;
	if (peer->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, s->addr, sizeof s->addr);
	else if (peer->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, s->addr, sizeof s->addr);
	else
		snprintf(s->addr, sizeof s->addr, "unknown");
	snprintf(s->host, sizeof s->host, "unknown");
	buf_init(&s->in, IN_MAX);
	buf_init(&s->out, OUT_MAX);
	ev_io_init(&s->io, session_io_cb, fd, EV_READ);
	ev_init(&s->timer, session_timer_cb);
	s->timer.repeat = s->p->timeout;
	s->connected = ev_now(srv->loop);
	s->state = S_GREETING;
	return s;
}

void session_start(struct session *s)
{
	double wait = (double)conf_time(s->gen->conf, "smtpd_pregreet_wait", 0);

	log_info("smtpd", "connect from %s[%s]", s->host, s->addr);
	if (wait > 0 && !s->submission) {
		/* postscreen-style: a client that talks before the banner is a bot */
		ev_timer_set(&s->timer, wait, s->p->timeout);
		ev_timer_start(s->srv->loop, &s->timer);
		ev_io_start(s->srv->loop, &s->io);
		return;
	}
	send_greeting(s);
	ev_timer_again(s->srv->loop, &s->timer);
	flush(s);
}

void session_set_stress(struct session *s, int stress)
{
	if (s->submission)
		return;
	s->p = &s->gen->params[stress ? 1 : 0];
	if (parsing(s) && ev_is_active(&s->timer)) {
		/* shorter timeouts apply to live sessions too, from now on */
		s->timer.repeat = s->p->timeout;
		ev_timer_again(s->srv->loop, &s->timer);
	}
}

void session_free(struct session *s)
{
	if (s->committing)   /* the reaper keeps these: its callback would write into freed memory */
		log_panic("smtpd", "session freed while its commit is in flight");
	ev_io_stop(s->srv->loop, &s->io);
	ev_timer_stop(s->srv->loop, &s->timer);
	tx_free(s);
	if (s->fd >= 0) {
		fd_close(s->fd);
		s->fd = -1;
	}
	log_info("smtpd", "disconnect from %s[%s]", s->host, s->addr);
	buf_release(&s->in);
	buf_release(&s->out);
	mem_free(s->helo);
	smtpd_gen_unref(s->gen);
	mem_free(s);
}
