/*
 * smtpd/session.c: one SMTP session as a state machine on the loop: its
 * connection (core/transport: plain or TLS), its buffers, timers and
 * closing. A session costs this struct while idle; input and output
 * buffers exist only while bytes wait in them. Callbacks read what is
 * there, hand every complete command line to the command table (verbs.c)
 * and message bytes to content.c, queue replies, and flush once (RFC 2920
 * pipelining).
 *
 * Owns: the connection (closed in session_free), the transaction and its
 * spool txn until commit. Never frees itself inside its own callback
 * chain: it marks itself S_CLOSING and the server's reaper frees it.
 *
 * TLS: STARTTLS (verbs.c) prepares the TLS state and answers 220; the
 * handshake starts once that reply is written, and whatever the client
 * pipelined after STARTTLS is discarded (CVE-2011-0411). The handshake is
 * the S_TLS state with its own deadline (smtpd_starttls_timeout); after it
 * the session starts over (S_INIT: the client must EHLO again, RFC 3207).
 * An smtps_listen connection is in S_TLS from the start and gets its banner
 * after the handshake.
 */
#include "smtpd/smtpd_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"
#include "limits/limits.h"
#include "smtpd/spf.h"

#define IN_MAX   (32 * 1024)                 /* command line, or data chunk being parsed */
#define OUT_MAX  (16 * 1024)                 /* pipelined replies waiting for the client */
#define OUT_HIGH (OUT_MAX / 2)               /* stop parsing input above this; resume below */
#define READ_CHUNK (16 * 1024)               /* one TLS record's worth */
#define LINGER_TIME 2.0                      /* seconds to drain a client after the final reply */
#define LINGER_MAX  (64 * 1024)              /* bytes drained at most before a hard close */

static void session_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void session_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void session_process(struct session *s);
static void send_greeting(struct session *s);
static void session_begin(struct session *s);

/* Warnings a client can trigger at will: a few a minute, the rest counted. */
static struct log_rate outbuf_rate = LOG_RATE_INIT(60, 5);
static struct log_rate nomem_rate = LOG_RATE_INIT(60, 5);
static struct log_rate tls_rate = LOG_RATE_INIT(60, 10);

const char *session_proto(const struct session *s) { return s->esmtp ? "ESMTP" : "SMTP"; }

int session_tls_missing(const struct session *s)
{
	/* submission (587 as 465) requires TLS as Postfix's stock entries do (smtpd_tls_security_level=encrypt) */
	return (s->implicit_tls || s->submission || (s->gen->tls && s->gen->tls_level >= 2)) &&
	    !transport_is_tls(&s->tp);
}

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
 * slot), S_LINGER gets LINGER_TIME, S_TLS smtpd_starttls_timeout.
 */
void session_enter(struct session *s, enum session_state st)
{
	if (s->state == st)
		return;
	s->state = st;
	if ((st == S_CLOSING || st == S_LINGER || st == S_TLS) && !s->reaping) {
		ev_timer_stop(s->srv->loop, &s->timer);
		ev_timer_set(&s->timer, st == S_LINGER ? LINGER_TIME : st == S_TLS ? s->p->starttls_timeout
		    : s->p->timeout, 0.);
		ev_timer_start(s->srv->loop, &s->timer);
		s->sleeping = 0;
	}
}

/* ---- replies ------------------------------------------------------------- */

void session_reply(struct session *s, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	if (s->muted)   /* a reply was lost: nothing after it may reach the client out of order */
		return;
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
			/* no memory for the reply: say 421 straight to the connection if nothing is queued before it */
			static const char bye[] = "421 4.3.2 Service temporarily unavailable\r\n";

			limits_note_failure("memory", ENOMEM);
			log_ratelimited(&nomem_rate, "smtpd", "memory budget exhausted: 421 to %s[%s]",
			    s->host, s->addr);
			if (buf_used(&s->out) == 0 && transport_write(&s->tp, bye, sizeof bye - 1) < 0) {
				/* the connection is being dropped anyway */
			}
			buf_release(&s->out);
		}
		s->muted = 1;       /* e.g. the rest of a multi-line EHLO reply after the 421 */
		s->peer_gone = 1;   /* nothing more will reach it in order: no lingering */
		session_enter(s, S_CLOSING);
	}
}

/* Is this session in a state that consumes input? */
static int parsing(const struct session *s)
{
	return s->state != S_CLOSING && s->state != S_LINGER && s->state != S_COMMIT &&
	    s->state != S_GREETING && s->state != S_TLS && s->state != S_AUTH_WAIT && s->state != S_DNS_WAIT &&
	    !s->sleeping;
}

static void update_watcher(struct session *s)
{
	int ev = 0;

	if (s->state == S_TLS && s->tp.handshaking) {
		/* the handshake says what it waits for */
		ev = s->tp.want == TRANSPORT_WANT_WRITE ? EV_WRITE : EV_READ;
	} else {
		if (buf_used(&s->out))
			ev |= EV_WRITE;
		/*
		 * Read while we parse and replies do not pile up (backpressure: a
		 * client that does not read its replies stops being read), in the
		 * pregreet wait (to catch a talker), and while lingering (to drain).
		 */
		if ((parsing(s) && buf_used(&s->out) < OUT_HIGH) || (s->state == S_GREETING && s->pregreet) ||
		    s->state == S_LINGER)
			ev |= EV_READ;
		/* a TLS read that needs to write first (or the other way round) waits for that */
		if ((ev & EV_READ) && s->tp.want == TRANSPORT_WANT_WRITE && transport_is_tls(&s->tp))
			ev |= EV_WRITE;
	}
	if (ev == (s->io.events & (EV_READ | EV_WRITE)) && ev_is_active(&s->io))
		return;
	ev_io_stop(s->srv->loop, &s->io);
	ev_io_set(&s->io, s->tp.fd, ev);
	if (ev)
		ev_io_start(s->srv->loop, &s->io);
}

/* Write what the connection takes; -1 when it is broken. */
static int write_out(struct session *s)
{
	while (buf_used(&s->out)) {
		ssize_t w = transport_write_buf(&s->tp, &s->out);
		if (w < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			if (errno == ENOBUFS || errno == ENOMEM)
				limits_note_failure(errno == ENOMEM && transport_is_tls(&s->tp) ? "memory" : "socket buffer",
				    errno);
			buf_release(&s->out);
			s->peer_gone = 1;
			session_enter(s, S_CLOSING);
			return -1;
		}
	}
	if (buf_used(&s->out) == 0 && !s->committing)   /* content_end() reserved the commit's reply */
		buf_release(&s->out);
	return 0;
}

void session_push(struct session *s)
{
	write_out(s);
}

/* ---- TLS ----------------------------------------------------------------- */

/* One step of the handshake; on success the session starts over (or greets, for smtps). */
static void tls_step(struct session *s)
{
	char why[256], info[160];
	int r = transport_handshake(&s->tp, why, sizeof why);

	if (r == 0)
		return;
	if (r < 0) {
		/* nothing can be said in clear on a connection that was to be encrypted */
		log_ratelimited(&tls_rate, "smtpd", "SSL_accept error from %s[%s]: %s", s->host, s->addr, why);
		s->peer_gone = 1;
		session_enter(s, S_CLOSING);
		return;
	}
	transport_describe(&s->tp, info, sizeof info);
	log_info("smtpd", "Anonymous TLS connection established from %s[%s]: %s%s", s->host, s->addr, info,
	    transport_resumed(&s->tp) ? " (resumed)" : "");
	mem_free(s->tls_info);
	s->tls_info = mem_strdup(info);   /* for the Received header; without it that line says less */
	/* RFC 3207 4.2: forget what the client said before TLS */
	mem_free(s->helo);
	s->helo = NULL;
	s->esmtp = 0;
	session_tx_free(s);
	ev_timer_stop(s->srv->loop, &s->timer);
	ev_timer_set(&s->timer, s->p->timeout, s->p->timeout);
	ev_timer_again(s->srv->loop, &s->timer);
	if (s->implicit_tls)
		send_greeting(s);
	else
		s->state = S_INIT;
}

/*
 * Hand replies to the connection, and parse more input whenever the
 * replies drain below OUT_HIGH (input left waiting by backpressure); start
 * a handshake whose 220 is out; then close, linger or re-arm the watcher.
 * Never frees the session: that is the reaper's job (server_reap).
 */
void session_flush(struct session *s)
{
	int progress = 1;

	while (write_out(s) == 0 && progress && buf_used(&s->out) < OUT_HIGH && parsing(s) &&
	    buf_used(&s->in)) {
		size_t before = buf_used(&s->in);

		session_process(s);
		progress = buf_used(&s->in) != before;   /* else a partial line: wait for more */
	}
	if (s->state == S_TLS && s->tp.next && buf_used(&s->out) == 0) {
		/* "220 Ready to start TLS" is out in clear: from here on, TLS */
		transport_tls_begin(&s->tp);
		tls_step(s);
		if (s->state != S_TLS && s->state != S_CLOSING && buf_used(&s->out))
			write_out(s);   /* the smtps banner */
	}
	if (s->state == S_CLOSING && buf_used(&s->out) == 0) {
		if (s->peer_gone) {
			server_reap(s->srv, s);
			return;
		}
		/*
		 * The final reply is out. Shut down our side (with a TLS close_notify
		 * first) and drain the client briefly: closing with unread input
		 * makes the kernel send a reset, and a client that pipelined past our
		 * 421/221 would lose the reply.
		 */
		transport_shutdown(&s->tp);
		buf_release(&s->in);
		session_enter(s, S_LINGER);
		/* no longer an SMTP session for admission and stress: a socket, still charged, and a struct */
		if (s->admitted)
			limits_session_done();
		s->admitted = 0;
	}
	update_watcher(s);
}

/* Count an error; past the hard limit say goodbye (Postfix smtpd_hard_error_limit). */
void session_count_error(struct session *s)
{
	s->errors++;
	if (s->errors >= s->p->hard_error_limit) {
		session_reply(s, "421 4.7.0 %s Error: too many errors", s->gen->myhostname);
		log_info("smtpd", "too many errors after %s from %s[%s]",
		    s->state == S_DATA || s->state == S_BDAT ? "DATA" : "command", s->host, s->addr);
		session_enter(s, S_CLOSING);
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
	if (s->state == S_TLS) {
		/* no clear-text reply in the middle of a handshake */
		s->peer_gone = 1;
		session_enter(s, S_CLOSING);
		session_flush(s);
		return;
	}
	session_reply(s, "%s", text);
	session_enter(s, S_CLOSING);
	session_flush(s);
}

/* ---- transactions -------------------------------------------------------- */

void session_tx_free(struct session *s)
{
	if (s->tx == NULL)
		return;
	if (s->tx->txn)
		spool_txn_abort(s->tx->txn);
	mem_free(s->tx->hold);
	mem_free(s->tx->ar_hold);
	spf_check_free(s->tx->spf);   /* and its lookup in flight */
	mem_free(s->tx);
	s->tx = NULL;
}

void session_tx_reset(struct session *s)
{
	session_tx_free(s);
	if (s->state == S_MAIL || s->state == S_RCPT || s->state == S_DATA || s->state == S_BDAT)
		session_enter(s, S_HELO);
}

/* ---- input --------------------------------------------------------------- */

/*
 * Act on what the input buffer holds (pipelining): command lines go to the
 * command table, message content to content.c, until the replies pile up
 * past OUT_HIGH (backpressure: flush() resumes once they drain) or the
 * state stops parsing.
 */
static void session_process(struct session *s)
{
	while (parsing(s) && buf_used(&s->out) < OUT_HIGH && buf_used(&s->in)) {
		char *p, *lf;
		size_t avail, len;

		if (s->state == S_DATA) {
			int r = content_data(s);
			if (r == 1)
				content_end(s);
			if (r != 1)
				break;
			continue;
		}
		if (s->state == S_BDAT) {
			if (content_chunk(s) != 1)
				break;
			content_chunk_done(s);
			continue;
		}
		p = buf_head(&s->in);
		avail = buf_used(&s->in);
		if ((lf = memchr(p, '\n', avail)) == NULL) {
			if (avail > SMTPD_PATH_LINE_MAX) {
				/* no line end within the limit: RFC 5321 4.5.3.1.4 */
				session_reply(s, "500 5.5.2 Error: line too long");
				log_info("smtpd", "line too long from %s[%s]: disconnecting", s->host, s->addr);
				session_enter(s, S_CLOSING);
			}
			break;
		}
		len = (size_t)(lf - p);
		if (len == 0 || p[len - 1] != '\r') {
			if (s->p->forbid_bare_newline) {
				session_reply(s, "521 5.5.2 %s Error: bare <LF> received", s->gen->myhostname);
				log_info("smtpd", "bare <LF> from %s[%s]: disconnecting", s->host, s->addr);
				session_enter(s, S_CLOSING);
				break;
			}
		} else {
			len--;
		}
		if (s->p->forbid_bare_newline && memchr(p, '\r', len)) {
			session_reply(s, "521 5.5.2 %s Error: bare <CR> received", s->gen->myhostname);
			session_enter(s, S_CLOSING);
			break;
		}
		if (len > SMTPD_PATH_LINE_MAX - 2) {
			session_reply(s, "500 5.5.2 Error: line too long");
			session_count_error(s);
		} else if (s->state == S_AUTH) {
			auth_response(s, p, len);   /* a SASL response, not a command */
			explicit_bzero(p, len);     /* base64 of a password: not left in the buffer */
		} else {
			int auth = len > 5 && strncasecmp(p, "AUTH ", 5) == 0;

			verbs_run(s, p, len);
			if (auth)
				explicit_bzero(p, len);   /* an initial response carries the password */
		}
		buf_consume(&s->in, (size_t)(lf - p) + 1);
		if (s->state == S_TLS) {
			/* CVE-2011-0411: nothing sent in clear after STARTTLS may count as sent under TLS */
			buf_release(&s->in);
			break;
		}
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
	ssize_t r = read(s->tp.fd, scratch, sizeof scratch);   /* raw bytes: TLS or not, they are dropped */

	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (r > 0 && (s->lingered += (size_t)r) <= LINGER_MAX)
		return;
	server_reap(s->srv, s);
}

/* Postfix's line for a client gone in a transaction, whether by EOF or by a reset */
static void log_lost(struct session *s)
{
	if (s->state == S_DATA || s->state == S_BDAT || s->state == S_MAIL || s->state == S_RCPT)
		log_info("smtpd", "lost connection after %s from %s[%s]",
		    s->state == S_DATA ? "DATA" : s->state == S_BDAT ? "BDAT" : s->state == S_RCPT ? "RCPT"
		    : "MAIL", s->host, s->addr);
}

static void session_read(struct session *s)
{
	ssize_t r = transport_read_buf(&s->tp, &s->in, READ_CHUNK);

	if (r == 0) {
		log_lost(s);
		session_tx_free(s);
		s->peer_gone = 1;   /* replies already queued still go out, if it reads them */
		session_enter(s, S_CLOSING);
		return;
	}
	if (r < 0) {
		if (r == -1 && (errno == EAGAIN || errno == EINTR))
			return;
		if (r == -1 && errno == ENOMEM) {
			/* our buffer budget: tell this client, keep everyone else */
			limits_note_failure("memory", ENOMEM);
			session_reply(s, "421 4.3.2 %s Service temporarily unavailable", s->gen->myhostname);
		} else if (r == -2) {
			session_reply(s, "500 5.5.2 Error: line too long");
		} else {
			log_lost(s);
			s->peer_gone = 1;   /* ECONNRESET, a TLS protocol error, and friends */
		}
		session_tx_free(s);
		session_enter(s, S_CLOSING);
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

		peer_lookup_gone(s);   /* a bot: its name no longer matters */
		session_log_connect(s);
		log_info("smtpd", "PREGREET %zd after %.2f from [%s]:%d: %s", r,
		    ev_now(s->srv->loop) - s->connected, s->addr, session_port(s),
		    log_escape(text, sizeof text, buf_head(&s->in), n));
		buf_release(&s->in);
		session_reply(s, "521 5.5.1 %s Error: protocol error: talked before the greeting", s->gen->myhostname);
		session_enter(s, S_CLOSING);
		return;
	}
	ev_timer_again(s->srv->loop, &s->timer);
	session_process(s);
}

static void session_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct session *s = (struct session *)w; /* io is the first member */

	if (s->reaping)
		return;
	if (s->state == S_TLS && s->tp.handshaking) {
		tls_step(s);
		session_flush(s);
		return;
	}
	if ((revents & EV_READ) || ((revents & EV_WRITE) && s->tp.want == TRANSPORT_WANT_WRITE &&
	    transport_is_tls(&s->tp))) {
		s->tp.want = 0;
		if (s->state == S_LINGER) {
			session_linger(s);
			return;
		}
		if (parsing(s) || s->state == S_GREETING)
			session_read(s);
	}
	session_flush(s);
	/* a TLS record decrypted but not yet read: the socket may never say so again */
	if (!s->reaping && parsing(s) && transport_pending(&s->tp) && buf_used(&s->in) < IN_MAX &&
	    buf_used(&s->out) < OUT_HIGH)
		ev_feed_event(loop, &s->io, EV_READ);
}

static void send_greeting(struct session *s)
{
	session_reply(s, "220 %s", s->gen->banner);
	session_enter(s, S_INIT);
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
		session_flush(s);
		return;
	}
	if (s->state == S_GREETING) {
		if (s->pregreet) {
			s->pregreet = 0;   /* the pregreet wait is over: the banner once the name is known too */
			if (s->name_pending) {
				ev_timer_stop(s->srv->loop, &s->timer);
				ev_timer_set(&s->timer, s->p->timeout, 0.);
				ev_timer_start(s->srv->loop, &s->timer);
				update_watcher(s);
				return;
			}
		} else if (s->name_pending) {
			/* the resolver ends its queries long before this: a guard, not a path */
			peer_lookup_gone(s);
			s->name_status = s->rev_status = PEER_TEMP;
			s->name_pending = 0;
			session_log_connect(s);
		}
		session_begin(s);
		return;
	}
	if (s->state == S_COMMIT || s->state == S_DNS_WAIT) {  /* our sync or lookup is slow, not the client: wait */
		ev_timer_again(s->srv->loop, &s->timer);
		return;
	}
	if (s->state == S_TLS) {
		/* a handshake that never finishes (or a 220 the client never reads) */
		log_info("smtpd", "timeout after %s from %s[%s]", s->implicit_tls ? "CONNECT (TLS handshake)"
		    : "STARTTLS", s->host, s->addr);
		server_reap(s->srv, s);
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
	    s->state == S_DATA || s->state == S_BDAT ? "DATA" : s->state == S_INIT ? "CONNECT" : "command",
	    s->host, s->addr);
	session_tx_free(s);
	session_reply(s, "421 4.4.2 %s Error: timeout exceeded", s->gen->myhostname);
	session_enter(s, S_CLOSING);
	session_flush(s);
}

struct session *session_new(struct smtpd_server *srv, int fd, const struct sockaddr_storage *peer,
    int submission, int implicit_tls)
{
	struct session *s = mem_calloc(1, sizeof *s);

	if (s == NULL)
		return NULL;
	s->srv = srv;
	s->anvil_slot = ANVIL_NONE;
	s->gen = srv->gen;
	s->gen->refs++;
	s->submission = submission;
	s->implicit_tls = implicit_tls;
	s->p = &s->gen->params[submission ? 0 : srv->stress];
	transport_init(&s->tp, fd);
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

void session_log_connect(struct session *s)
{
	if (!s->connect_logged)
		log_info("smtpd", "connect from %s[%s]", s->host, s->addr);
	s->connect_logged = 1;
}

/* The name is known and the pregreet wait over: the banner (or, for smtps, the handshake first). */
static void session_begin(struct session *s)
{
	if (s->implicit_tls) {
		/* smtps: the handshake first, the banner under TLS */
		if (s->gen->tls == NULL || transport_tls_prepare(&s->tp, s->gen->tls) < 0) {
			limits_note_failure("memory", ENOMEM);
			log_ratelimited(&tls_rate, "smtpd", "cannot start TLS for %s[%s]: %s: disconnecting",
			    s->host, s->addr, s->gen->tls ? "memory budget exhausted" : "no certificate");
			s->peer_gone = 1;
			session_enter(s, S_CLOSING);
			session_flush(s);
			return;
		}
		session_enter(s, S_TLS);
		session_flush(s);
		return;
	}
	send_greeting(s);
	ev_timer_stop(s->srv->loop, &s->timer);
	ev_timer_set(&s->timer, s->p->timeout, s->p->timeout);
	ev_timer_again(s->srv->loop, &s->timer);
	session_flush(s);
}

void session_name_known(struct session *s)
{
	s->name_pending = 0;
	session_log_connect(s);
	if (s->state == S_GREETING && !s->pregreet && !s->reaping && s->connected_started)
		session_begin(s);
}

/*
 * The banner waits for the client's name (Postfix logs and checks it from
 * the first line on); a configured pregreet wait runs meanwhile, and the
 * banner goes out when both are over. The lookups are bounded by the
 * resolver's timeout; the session's idle timer guards them as well.
 */
void session_start(struct session *s)
{
	double wait = (double)conf_time(s->gen->conf, "smtpd_pregreet_wait", 0);

	/* a client that passed the screen (screen.c) waited there already */
	s->pregreet = wait > 0 && !s->submission && !s->screened;
	peer_lookup_start(s);   /* may settle at once (no resolver): then only the pregreet wait is left */
	s->connected_started = 1;
	if (s->pregreet) {
		/* postscreen-style: a client that talks before the banner is a bot */
		ev_timer_set(&s->timer, wait, s->p->timeout);
		ev_timer_start(s->srv->loop, &s->timer);
		update_watcher(s);
		return;
	}
	if (s->name_pending) {
		ev_timer_set(&s->timer, s->p->timeout, 0.);
		ev_timer_start(s->srv->loop, &s->timer);
		return;
	}
	session_begin(s);
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
	if (s->fault_sweep)
		server_sweep_end(s->srv);
	auth_session_gone(s);
	peer_lookup_gone(s);   /* and a restriction's lookup: the same handle */
	dnsbl_session_free(s);
	session_log_connect(s);
	ev_io_stop(s->srv->loop, &s->io);
	ev_timer_stop(s->srv->loop, &s->timer);
	session_tx_free(s);
	transport_close(&s->tp);
	log_info("smtpd", "disconnect from %s[%s]", s->host, s->addr);
	buf_release(&s->in);
	buf_release(&s->out);
	mem_free(s->helo);
	mem_free(s->tls_info);
	smtpd_gen_unref(s->gen);
	mem_free(s);
}
