/*
 * smtpd/content.c: a message's content on its way into the spool. DATA
 * (dot-unstuffing, the end-of-data line, the bare CR/LF rules) and BDAT
 * chunks (RFC 3030: counted octets, no stuffing) both end up here as lines
 * for body_piece(), which applies what holds for every message: the line
 * length limit, NULs, the hop count, the size limit; then the end of the
 * message: the one place where a transaction error becomes its reply, or
 * the commit and its 250.
 *
 * Stored form: LF line ends (CRLF and, in BDAT, a bare LF end a line; a
 * lone CR in BDAT is content), as smtpd has always written the spool.
 * Called by session.c (input) and verbs.c (DATA, BDAT); touches only the
 * session's transaction and input buffer. Address headers of a local
 * client's mail are held one at a time (HDR_HOLD_MAX) and rewritten by
 * queue/cleanup.c (canonical maps, masquerading) on their way through.
 */
#include "smtpd/smtpd_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "conf/conf.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/stats.h"
#include "limits/limits.h"
#include "queue/queue.h"
#include "smtpd/spf.h"
#include "smtpd/authres.h"

#define LINE_LENGTH_LIMIT 2048               /* Postfix line_length_limit; RFC 5321 says 1000 */
/*
 * An address header is held whole while it is rewritten (queue/cleanup.c);
 * a longer one passes as it is. The buffer holds the header and, after it,
 * the rewritten copy (addresses may grow).
 */
#define HDR_HOLD_MAX 4096
#define HDR_OUT_MAX (HDR_HOLD_MAX + 1024)
/*
 * An incoming Authentication-Results: header is held until its
 * authserv-id is known (it may follow a fold or a comment); one that is
 * still undecided at this size is decided on what was read.
 */
#define AR_HOLD_MAX 4096
enum { AR_NONE, AR_HOLD, AR_DROP, AR_PASS };

static struct log_rate queue_rate = LOG_RATE_INIT(60, 5);
static struct log_rate hdr_rate = LOG_RATE_INIT(60, 5);

static int client_is_local(struct session *s);

/* a full file system (or quota) is "insufficient system storage", not a write error */
static int storage_err(int e) { return e == ENOSPC || e == EDQUOT; }

/* The transaction errors, each to its reply: the one place. */
static const char *content_error_reply(struct session *s, enum tx_error e, char *buf, size_t len)
{
	struct smtp_tx *tx = s->tx;

	switch (e) {
	case TX_SIZE:
		return "552 5.3.4 Message size exceeds fixed limit";
	case TX_LINE:
		snprintf(buf, len, "552 5.3.4 Message line too long (limit %d octets)", LINE_LENGTH_LIMIT);
		return buf;
	case TX_NUL:
		return "554 5.6.0 Message contains NUL characters";
	case TX_LOOP:
		return "554 5.4.6 Too many hops";
	case TX_RESOURCES:
		limits_note_failure("memory", ENOMEM);
		return "451 4.3.0 Error: insufficient system resources";
	case TX_STORAGE:
		limits_note_failure("queue file system", tx ? tx->errnum : ENOSPC);
		return "452 4.3.1 Insufficient system storage";
	case TX_IO:
	default:
		limits_note_failure("queue file", tx && tx->errnum ? tx->errnum : EIO);
		return "451 4.3.0 Error: queue file write error";
	}
}

/* ---- the start: spool file and trace header ------------------------------ */

int content_begin(struct session *s)
{
	struct smtp_tx *tx = s->tx;
	char date[64], hdr[1280], tls[300] = "";
	time_t now = time(NULL);
	struct tm tm;
	int n, tlson = transport_is_tls(&s->tp);
	const char *with;

	if (spool_txn_open(tx->txn) < 0) {
		int err = errno;
		limits_note_failure(err == ENOMEM ? "memory" : err == EMFILE || err == ENFILE ? "descriptors"
		    : "queue file", err);
		return -1;
	}
	/*
	 * DKIM: mail we vouch for (an authenticated client, or one of
	 * mynetworks) is signed when its From: domain has a key; never mail
	 * relayed in from outside. The signer sees the bytes from here on.
	 */
	if ((s->sasl_user || cidr_list_match(&s->gen->mynetworks, &s->peer)) &&
	    dkim_sign_txn(s->gen->dkim, tx->txn) < 0) {
		limits_note_failure("memory", errno);
		return -1;
	}
	localtime_r(&now, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
	if (tlson)
		snprintf(tls, sizeof tls, "\t(using %s)\n\t(No client certificate requested)\n",
		    s->tls_info ? s->tls_info : "TLS");
	/*
	 * RFC 5321 4.4: the trace header, Postfix's layout (ESMTPS under TLS,
	 * ESMTPA/ESMTPSA after AUTH, RFC 3848). smtpd_hide_client_session
	 * leaves an authenticated client's name and address out (the user's
	 * home address is nobody else's business). A transaction that used
	 * SMTPUTF8 is "UTF8SMTP" with the same suffixes (RFC 6531 3.7.3).
	 */
	/*
	 * RFC 7208 9.1: Received-SPF goes above our Received: line. Known
	 * since RCPT (check_spf), so it is written here, not at the end.
	 */
	if (tx->spf && spf_check_done(tx->spf)) {
		char spfh[2400];
		if ((n = spf_received_header(tx->spf, s->helo, tx->sender, s->gen->myhostname, spfh, sizeof spfh)) < 0 ||
		    spool_txn_write(tx->txn, spfh, (size_t)n) < 0) {
			limits_note_failure("queue file", n < 0 ? EINVAL : errno);
			return -1;
		}
	}
	with = tx->smtputf8 ? "UTF8SMTP" : session_proto(s);
	if (s->sasl_user && s->p->hide_client_session)
		n = snprintf(hdr, sizeof hdr, "Received: by %s (%s) with %s%s%s id %s%s%s%s;\n\t%s\n",
		    s->gen->myhostname, conf_str(s->gen->conf, "mail_name", 0), with, tlson ? "S" : "", "A",
		    spool_txn_id(tx->txn), tx->nrcpt == 1 ? "\n\tfor <" : "", tx->nrcpt == 1 ? tx->first_rcpt : "",
		    tx->nrcpt == 1 ? ">" : "", date);
	else
		n = snprintf(hdr, sizeof hdr, "Received: from %s (%s [%s])\n%s\tby %s (%s) with %s%s%s id %s%s%s%s;\n\t%s\n",
		    s->helo ? s->helo : s->host, s->host, s->addr, tls, s->gen->myhostname,
		    conf_str(s->gen->conf, "mail_name", 0), with, tlson ? "S" : "", s->sasl_user ? "A" : "",
		    spool_txn_id(tx->txn), tx->nrcpt == 1 ? "\n\tfor <" : "", tx->nrcpt == 1 ? tx->first_rcpt : "",
		    tx->nrcpt == 1 ? ">" : "", date);
	if (n < 0 || (size_t)n >= sizeof hdr || spool_txn_write(tx->txn, hdr, (size_t)n) < 0) {
		limits_note_failure("queue file", errno);
		return -1;
	}
	/*
	 * Mail from outside (not AUTH, not mynetworks: what Postfix's
	 * OpenDKIM and OpenDMARC milters verify by default): DKIM, DMARC, and
	 * RFC 8601 5's removal of Authentication-Results: that claim our
	 * authserv-id. The check sees the client's bytes from here on, not
	 * our own trace headers.
	 */
	if (!s->sasl_user && !cidr_list_match(&s->gen->mynetworks, &s->peer)) {
		tx->ar_strip = 1;
		if (s->gen->dkim_verify || s->gen->dmarc) {
			struct authres_opts o = { s->gen->dkim_verify, s->gen->dmarc, s->gen->psl };

			if ((tx->auth = authres_start(tx->txn, s->srv->dns, &o, tx->spf, &s->peer, s->helo ? s->helo : "",
			    tx->sender, s->gen->myhostname)) == NULL) {
				limits_note_failure("memory", errno);
				return -1;
			}
		}
	}
	tx->at_bol = 1;
	tx->in_headers = 1;
	tx->opened = 1;
	tx->hdr_rewrite = cleanup_headers_wanted(s->gen->resolver) && client_is_local(s);
	return 0;
}

/*
 * Postfix rewrites header addresses only in mail from its own clients
 * (local_header_rewrite_clients = permit_inet_interfaces, with
 * remote_header_rewrite_domain empty): loopback, or a client on one of
 * this host's addresses (its address is the one it connected to).
 */
static int client_is_local(struct session *s)
{
	struct sockaddr_storage me;
	socklen_t len = sizeof me;
	const struct sockaddr_in *p4 = (const struct sockaddr_in *)&s->peer;
	const struct sockaddr_in6 *p6 = (const struct sockaddr_in6 *)&s->peer;

	if (s->peer.ss_family == AF_INET && (ntohl(p4->sin_addr.s_addr) >> 24) == 127)
		return 1;
	if (s->peer.ss_family == AF_INET6 && (IN6_IS_ADDR_LOOPBACK(&p6->sin6_addr) ||
	    (IN6_IS_ADDR_V4MAPPED(&p6->sin6_addr) && p6->sin6_addr.s6_addr[12] == 127)))
		return 1;
	if (getsockname(s->tp.fd, (struct sockaddr *)&me, &len) < 0 || me.ss_family != s->peer.ss_family)
		return 0;
	if (me.ss_family == AF_INET)
		return ((struct sockaddr_in *)&me)->sin_addr.s_addr == p4->sin_addr.s_addr;
	if (me.ss_family == AF_INET6)
		return memcmp(&((struct sockaddr_in6 *)&me)->sin6_addr, &p6->sin6_addr, 16) == 0;
	return 0;
}

/* ---- bytes in ------------------------------------------------------------ */

/* Content bytes to the spool (which buffers its writes). */
static void data_out(struct session *s, const char *p, size_t n)
{
	struct smtp_tx *tx = s->tx;

	if (tx->err != TX_OK || n == 0)
		return;
	tx->size += (long long)n;
	if (s->p->message_size_limit > 0 && tx->size > s->p->message_size_limit) {
		tx->err = TX_SIZE;
		return;
	}
	if (spool_txn_write(tx->txn, p, n) < 0) {
		tx->errnum = errno;
		tx->err = errno == ENOMEM ? TX_RESOURCES : storage_err(errno) ? TX_STORAGE : TX_IO;
	}
}

/* The held address header goes out: rewritten, or as it came when it cannot be. */
static void hdr_release(struct session *s)
{
	struct smtp_tx *tx = s->tx;
	char *out;
	int rc;

	if (!tx->hold_cls)
		return;
	out = tx->hold + HDR_HOLD_MAX;   /* only now: with nothing held, hold may be NULL */
	rc = cleanup_header(s->gen->resolver, (enum cleanup_hdr)tx->hold_cls, tx->hold, tx->hold_len, out,
	    HDR_OUT_MAX);
	if (rc < 0)   /* a table error, or a result past the bound: the header as it came */
		log_ratelimited(&hdr_rate, "smtpd", "%s: header address rewrite failed (table error or "
		    "header over %d bytes): header kept as received", spool_txn_id(tx->txn), HDR_OUT_MAX);
	if (rc == 1)
		data_out(s, out, strlen(out));
	else
		data_out(s, tx->hold, tx->hold_len);
	tx->hold_cls = 0;
	tx->hold_len = 0;
}

/*
 * Address headers are held while the client is local and tables are set
 * (client_is_local, cleanup_headers_wanted). 1: the piece went into the
 * held header; 0: it is written as it is.
 */
static int hdr_hold(struct session *s, const char *p, size_t n, int eol)
{
	struct smtp_tx *tx = s->tx;

	int cont = n && (p[0] == ' ' || p[0] == '\t');

	if (!tx->hdr_rewrite || tx->err != TX_OK)
		return 0;
	if (tx->at_bol && !cont) {
		enum cleanup_hdr cls;

		hdr_release(s);   /* a new header (or the end of them) ends the one held */
		if (!tx->in_headers) {
			mem_free(tx->hold);   /* the body is never held: the memory goes back now */
			tx->hold = NULL;
			tx->hdr_rewrite = 0;
			return 0;
		}
		if ((cls = cleanup_header_class(p, n)) == CLEANUP_HDR_NONE)
			return 0;
		if (tx->hold == NULL && (tx->hold = mem_alloc(HDR_HOLD_MAX + HDR_OUT_MAX)) == NULL) {
			tx->err = TX_RESOURCES;
			return 0;
		}
		tx->hold_cls = cls;
		tx->hold_len = 0;
	} else if (!tx->hold_cls) {
		return 0;
	}
	if (tx->hold_len + n + 1 > HDR_HOLD_MAX) {
		/* longer than the hold: it goes on as it came, continuation lines too */
		data_out(s, tx->hold, tx->hold_len);
		tx->hold_cls = 0;
		tx->hold_len = 0;
		return 0;
	}
	memcpy(tx->hold + tx->hold_len, p, n);
	tx->hold_len += n;
	if (eol)
		tx->hold[tx->hold_len++] = '\n';
	return 1;
}

/* The held Authentication-Results: header is decided: dropped when it claims our authserv-id. */
static void ar_decide(struct session *s)
{
	struct smtp_tx *tx = s->tx;
	if (tx->ar_state != AR_HOLD)
		return;
	/* a BDAT piece that only looked like the start of one (below) is not one: as it came */
	if (tx->ar_len >= 23 && strncasecmp(tx->ar_hold, "Authentication-Results:", 23) == 0 &&
	    authres_claims_id(tx->ar_hold + 23, tx->ar_len - 23, s->gen->authserv_id)) {
		tx->ar_state = AR_DROP;
		log_info("smtpd", "%s: removed an Authentication-Results: header claiming authserv-id %s from %s[%s]",
		    spool_txn_id(tx->txn), s->gen->authserv_id, s->host, s->addr);
	} else {
		tx->ar_state = AR_PASS;
		data_out(s, tx->ar_hold, tx->ar_len);
	}
	mem_free(tx->ar_hold);
	tx->ar_hold = NULL;
	tx->ar_len = 0;
}

/*
 * RFC 8601 5: an Authentication-Results: header from outside that claims
 * our authserv-id is removed (a downstream filter trusts ours). The header
 * is held, folds included, until its authserv-id is read. 1: the piece
 * was taken (held or dropped); 0: it goes on as usual.
 */
static int ar_filter(struct session *s, const char *p, size_t n, int eol)
{
	struct smtp_tx *tx = s->tx;
	int cont = n && (p[0] == ' ' || p[0] == '\t');
	char *nb;

	if (!tx->ar_strip || tx->err != TX_OK)
		return 0;
	if (tx->at_bol && !cont) {
		ar_decide(s);   /* a new header (or the end of them) ends the one held */
		tx->ar_state = AR_NONE;
		/*
		 * A BDAT chunk may end inside the name ("Authentic"): a line that
		 * starts like one is held too, and decided when it is whole.
		 */
		if (!tx->in_headers || (n >= 23 ? strncasecmp(p, "Authentication-Results:", 23) != 0 :
		    eol || n == 0 || strncasecmp(p, "Authentication-Results:", n) != 0))
			return 0;
		hdr_release(s);   /* an address header held before it goes out first */
		tx->ar_state = AR_HOLD;
	} else if (tx->ar_state == AR_NONE || tx->ar_state == AR_PASS) {
		return 0;
	}
	if (tx->ar_state == AR_DROP)
		return 1;
	if (tx->ar_len + n + 1 > AR_HOLD_MAX) {
		ar_decide(s);   /* on what was read: the authserv-id comes first */
		if (tx->ar_state == AR_DROP)
			return 1;
		return 0;
	}
	if (tx->ar_hold == NULL && (tx->ar_hold = mem_alloc(AR_HOLD_MAX)) == NULL) {
		tx->err = TX_RESOURCES;
		return 1;
	}
	nb = tx->ar_hold;
	memcpy(nb + tx->ar_len, p, n);
	tx->ar_len += n;
	if (eol)
		nb[tx->ar_len++] = '\n';
	return 1;
}

/*
 * One line of content without its line end (eol: the line ends here), or
 * a piece of one (eol 0: it goes on). What every message is held to.
 */
static void body_piece(struct session *s, const char *p, size_t n, int eol)
{
	struct smtp_tx *tx = s->tx;

	if (tx->at_bol && tx->in_headers) {
		if (n == 0 && eol)
			tx->in_headers = 0;
		else if (n >= 9 && strncasecmp(p, "Received:", 9) == 0 &&
		    ++tx->received_count > conf_int(s->gen->conf, "hopcount_limit", 0) && tx->err == TX_OK)
			tx->err = TX_LOOP;
	}
	if (n && memchr(p, '\0', n) && tx->err == TX_OK)
		tx->err = TX_NUL;
	if (tx->line_len + n > LINE_LENGTH_LIMIT && tx->err == TX_OK)
		tx->err = TX_LINE;
	if (!ar_filter(s, p, n, eol) && !hdr_hold(s, p, n, eol)) {
		data_out(s, p, n);
		if (eol)
			data_out(s, "\n", 1);
	}
	if (eol) {
		tx->line_len = 0;
		tx->at_bol = 1;
	} else if (n) {
		tx->line_len += n;
		tx->at_bol = 0;
	}
}

/*
 * DATA: consume content from s->in: dot-unstuffing (RFC 5321 4.5.2), CRLF
 * to LF, bare CR/LF refused (smtpd_forbid_bare_newline, the SMTP smuggling
 * defence). Returns 1 when the terminating "." line was seen, 0 when more
 * input is needed, -1 when the session was closed.
 */
int content_data(struct session *s)
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
			if (s->p->forbid_bare_newline && memchr(p, '\r', avail - 1))
				goto bare;
			/* keep a trailing CR: it may be half of the CRLF */
			len = p[avail - 1] == '\r' ? avail - 1 : avail;
			body_piece(s, p, len, 0);
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
		/* the limit counts the line as sent, before unstuffing (as it always has) */
		if (tx->line_len + content > LINE_LENGTH_LIMIT && tx->err == TX_OK)
			tx->err = TX_LINE;
		if (tx->at_bol && content && p[0] == '.') {
			p++;
			content--;
		}
		body_piece(s, p, content, 1);
		buf_consume(&s->in, len);
	}
bare:
	session_reply(s, "521 5.5.2 %s Error: bare <CR> or <LF> received", s->gen->myhostname);
	log_info("smtpd", "bare newline in DATA from %s[%s]: disconnecting", s->host, s->addr);
	session_tx_free(s);
	session_enter(s, S_CLOSING);
	return -1;
}

/* BDAT octets (no stuffing): CRLF or LF ends a line; a CR split from its LF across pieces is held. */
static void bdat_bytes(struct session *s, const char *p, size_t n)
{
	struct smtp_tx *tx = s->tx;

	while (n) {
		const char *lf;

		if (tx->cr_pending) {
			tx->cr_pending = 0;
			if (*p == '\n') {
				body_piece(s, p, 0, 1);
				p++;
				n--;
				continue;
			}
			body_piece(s, "\r", 1, 0);   /* a lone CR is content */
		}
		if ((lf = memchr(p, '\n', n)) != NULL) {
			size_t len = (size_t)(lf - p);
			int cr = len > 0 && lf[-1] == '\r';

			body_piece(s, p, len - (size_t)cr, 1);
			p = lf + 1;
			n -= len + 1;
		} else {
			size_t len = n;

			if (p[n - 1] == '\r') {
				tx->cr_pending = 1;
				len--;
			}
			body_piece(s, p, len, 0);
			n = 0;
		}
	}
}

int content_chunk(struct session *s)
{
	size_t n = buf_used(&s->in);

	if ((long long)n > s->chunk_left)
		n = (size_t)s->chunk_left;
	/* a refused chunk is still read to its end: only then is the client's next command found */
	if (n && s->chunk_refusal == NULL && s->tx)
		bdat_bytes(s, buf_head(&s->in), n);
	buf_consume(&s->in, n);
	s->chunk_left -= (long long)n;
	return s->chunk_left == 0;
}

void content_chunk_done(struct session *s)
{
	struct smtp_tx *tx = s->tx;

	if (s->chunk_refusal) {
		session_reply(s, "%s", s->chunk_refusal);
		s->chunk_refusal = NULL;
		/* a refused chunk ends its transaction (RFC 3030 4.2: the client sends no more of it) */
		if (tx) {
			session_tx_reset(s);
		} else {
			session_enter(s, s->helo ? S_HELO : S_INIT);
		}
		session_count_error(s);
		return;
	}
	if (!s->chunk_last) {
		session_enter(s, S_RCPT);
		session_reply(s, "250 2.0.0 Ok: %lld bytes", s->chunk_size);
		return;
	}
	/* the end of the message: a CR held back is content, and the last line gets its end */
	if (tx->cr_pending) {
		tx->cr_pending = 0;
		body_piece(s, "\r", 1, 0);
	}
	if (!tx->at_bol)
		body_piece(s, "", 0, 1);
	content_end(s);
}

/* ---- the end: refusal or commit ------------------------------------------ */

#define COMMIT_REPLY_ROOM 64   /* "250 2.0.0 Ok: queued as <id>\r\n" and a margin */

/*
 * The spool's answer. The session cannot have been freed meanwhile: the
 * reaper keeps a session whose commit is in flight (s->committing). When
 * the client is already gone, the message is still queued for delivery: it
 * is durable, and only the 250 was lost (the client may send it again).
 */
static void commit_done(void *arg, int err, const char *queue_id)
{
	struct session *s = arg;
	int gone;

	if (!s->committing)
		log_panic("smtpd", "commit callback for a session that is not committing");
	s->committing = 0;
	s->srv->commits--;
	if (err != 0) {
		log_ratelimited(&queue_rate, "smtpd", "%s: queue file write error: %s: %s to %s[%s]",
		    queue_id, strerror(err), storage_err(err) ? "452" : "451", s->host, s->addr);
		limits_note_failure(storage_err(err) ? "queue file system" : "queue file", err);
	}
	if (err == 0)
		stats_inc(STATS_RECEIVED);   /* durable now, whether or not the client hears the 250 */
	session_tx_free(s);
	if (s->reaping)
		return;        /* the reaper frees it now */
	if (err == 0)
		session_reply(s, "250 2.0.0 Ok: queued as %s", queue_id);
	else if (storage_err(err))
		session_reply(s, "452 4.3.1 Insufficient system storage");
	else
		session_reply(s, "451 4.3.0 Error: queue file write error");
	if (s->state == S_COMMIT && s->srv->stopping)   /* frugal stop waited for this transaction */
		session_reply(s, "421 4.3.2 %s Service shutting down, closing transmission channel",
		    s->srv->gen->myhostname);
	if (s->state == S_COMMIT)   /* the reply may have given up on the session */
		session_enter(s, s->srv->stopping ? S_CLOSING : S_HELO);
	gone = s->peer_gone;
	session_flush(s);   /* and parse what was pipelined meanwhile */
	/* Postfix's line when the reply cannot be written: the admin's hint that a duplicate may follow */
	if (!gone && s->peer_gone)
		log_info("smtpd", "lost connection after END-OF-MESSAGE from %s[%s]", s->host, s->addr);
}

/* The DKIM/DMARC lookups are in: the end of the message again (S_DNS_WAIT is over). */
static void auth_resumed(void *arg)
{
	struct session *s = arg;

	if (s->state != S_DNS_WAIT || s->tx == NULL)
		return;
	session_enter(s, s->dns_resume);
	content_end(s);
	session_flush(s);   /* the reply, and what the client pipelined meanwhile */
}

/* The end of a message refused: the reply, the count, Postfix's reject line, a fresh transaction. */
static void reject_end_of_message(struct session *s, const char *text)
{
	struct smtp_tx *tx = s->tx;

	session_reply(s, "%s", text);
	stats_inc(STATS_REJECTED);
	log_info("smtpd", "%s: reject: END-OF-MESSAGE from %s[%s]: %s; from=<%s> proto=%s helo=<%s>",
	    spool_txn_id(tx->txn), s->host, s->addr, text, tx->sender, session_proto(s),
	    s->helo ? s->helo : "");
	session_tx_reset(s);
}

/*
 * The checks of a message from outside, at its end: wait for their
 * lookups (S_DNS_WAIT, nothing read), then the verdict: a DMARC reject
 * (smtpd_dmarc_enforce), or the Authentication-Results: header as a late
 * header and one log line. 1: go on to the commit; 0: waiting, or answered.
 */
static int auth_end(struct session *s)
{
	struct smtp_tx *tx = s->tx;
	enum authres_verdict v;
	char hdr[4096], reply[400], line[4096];
	size_t i, o = 0;

	if (tx->auth == NULL)
		return 1;
	if (!authres_ready(tx->auth, auth_resumed, s)) {
		s->dns_resume = s->state;
		session_enter(s, S_DNS_WAIT);
		return 0;
	}
	if (authres_finish(tx->auth, s->gen->authserv_id, s->gen->dmarc_enforce, hdr, sizeof hdr, &v, reply,
	    sizeof reply) < 0) {
		tx->err = TX_RESOURCES;
		return 1;
	}
	/* the header on one line for the log */
	for (i = 0; hdr[i] && o < sizeof line - 1; i++)
		if (hdr[i] != '\n')
			line[o++] = hdr[i] == '\t' ? ' ' : hdr[i];
	line[o] = '\0';
	log_info("smtpd", "%s: %s", spool_txn_id(tx->txn), line);
	if (v == AUTHRES_REJECT) {
		reject_end_of_message(s, reply);
		return 0;
	}
	if (spool_txn_late_header(tx->txn, hdr) < 0)
		tx->err = errno == ENOMEM ? TX_RESOURCES : TX_IO;
	return 1;
}

void content_end(struct session *s)
{
	struct smtp_tx *tx = s->tx;

	hdr_release(s);   /* a message of headers only */
	if (tx->ar_state == AR_HOLD)
		ar_decide(s);
	if (tx->err == TX_OK && !auth_end(s))
		return;
	/*
	 * Room for the final reply before the commit: a 250 lost afterwards for
	 * want of memory would leave a queued message its client thinks refused,
	 * and sends again. Without the room nothing is committed.
	 */
	if (tx->err == TX_OK && (buf_reserve(&s->out, COMMIT_REPLY_ROOM) < 0 ||
	    transport_reserve_write(&s->tp) < 0))
		tx->err = TX_RESOURCES;
	if (tx->err != TX_OK) {
		char buf[128];
		const char *text = content_error_reply(s, (enum tx_error)tx->err, buf, sizeof buf);

		reject_end_of_message(s, text);
		return;
	}
	session_enter(s, S_COMMIT);
	{
		struct spool_txn *t = tx->txn;

		tx->txn = NULL;            /* the spool owns it now */
		tx->auth = NULL;           /* and the check, its filter */
		s->committing = 1;         /* and holds s until commit_done */
		s->srv->commits++;
		spool_txn_commit(t, commit_done, s);
	}
}
