/*
 * smtpd/verbs.c: the command table. One row per verb says in which states
 * it is allowed (and the reply elsewhere), whether it may come before TLS
 * when TLS is required, whether it ends a pipelining group (RFC 2920: its
 * reply is written at once), whether it counts toward the junk limit, and
 * which handler runs it. verbs_run() checks the row, the handler does the
 * rest. The parser is smtpd/command.c; message content is content.c.
 *
 * Touches the session only through what smtpd_int.h gives verbs.c.
 */
#include "smtpd/smtpd_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/conf.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/stats.h"
#include "limits/limits.h"
#include "queue/queue.h"

enum {
	V_PRE_TLS = 1,     /* allowed while TLS is required and not up yet */
	V_ENDS_GROUP = 2,  /* RFC 2920: ends a pipelining group; its reply goes out at once */
	V_JUNK = 4,        /* counts toward smtpd_junk_command_limit */
	V_TX = 8,          /* MAIL, RCPT, DATA: refused once BDAT carries the message */
};

#define ST(x) (1u << (x))
#define ST_TALK (ST(S_INIT) | ST(S_HELO) | ST(S_MAIL) | ST(S_RCPT))   /* where commands are read */

/* the parser's RFC 3461 numbers are the spool's (command.h keeps free of queue.h) */
_Static_assert(SMTPD_DSN_RET_FULL == DSN_RET_FULL && SMTPD_DSN_RET_HDRS == DSN_RET_HDRS &&
    SMTPD_DSN_NOTIFY_NEVER == DSN_NOTIFY_NEVER && SMTPD_DSN_NOTIFY_SUCCESS == DSN_NOTIFY_SUCCESS &&
    SMTPD_DSN_NOTIFY_FAILURE == DSN_NOTIFY_FAILURE && SMTPD_DSN_NOTIFY_DELAY == DSN_NOTIFY_DELAY,
    "DSN values differ between smtpd/command.h and queue/queue.h");

struct verb {
	enum smtpd_verb verb;
	const char *name;
	unsigned states;           /* where it is allowed */
	const char *elsewhere;     /* the reply in the other states */
	unsigned flags;
	void (*run)(struct session *s, const struct smtpd_cmd *c);
};

static struct log_rate disk_rate[2] = { LOG_RATE_INIT(60, 5), LOG_RATE_INIT(60, 5) };  /* space, inodes */
static struct log_rate tls_rate = LOG_RATE_INIT(60, 5);

static void refuse(struct session *s, const char *text)
{
	session_reply(s, "%s", text);
	session_count_error(s);
}

/* ---- greeting verbs ------------------------------------------------------ */

static void helo(struct session *s, const struct smtpd_cmd *c, int ehlo)
{
	char *h;

	if (c->arglen == 0) {
		session_reply(s, "501 5.5.4 Syntax: %s hostname", ehlo ? "EHLO" : "HELO");
		session_count_error(s);
		return;
	}
	if ((h = mem_strndup(c->arg, c->arglen)) == NULL) {
		session_reply(s, "451 4.3.0 Error: insufficient system resources");
		limits_note_failure("memory", ENOMEM);
		return;
	}
	mem_free(s->helo);
	s->helo = h;
	s->esmtp = ehlo;
	session_tx_free(s);
	session_enter(s, S_HELO);
	if (!ehlo) {
		session_reply(s, "250 %s", s->gen->myhostname);
		return;
	}
	session_reply(s, "250-%s", s->gen->myhostname);
	session_reply(s, "250-PIPELINING");
	session_reply(s, "250-SIZE %lld", s->p->message_size_limit);
	session_reply(s, "250-VRFY");
	session_reply(s, "250-ETRN");
	if (s->gen->tls && (s->gen->tls_level >= 1 || s->submission) && !transport_is_tls(&s->tp))
		session_reply(s, "250-STARTTLS");
	if (auth_offered(s))
		session_reply(s, "250-AUTH PLAIN LOGIN");
	session_reply(s, "250-ENHANCEDSTATUSCODES");
	session_reply(s, "250-8BITMIME");
	session_reply(s, "250-DSN");
	session_reply(s, "250-CHUNKING");
	session_reply(s, "250 SMTPUTF8");
}

static void do_helo(struct session *s, const struct smtpd_cmd *c) { helo(s, c, 0); }
static void do_ehlo(struct session *s, const struct smtpd_cmd *c) { helo(s, c, 1); }

static void do_starttls(struct session *s, const struct smtpd_cmd *c)
{
	if (c->arglen) {
		refuse(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (transport_is_tls(&s->tp)) {
		refuse(s, "554 5.5.1 Error: TLS already active");
		return;
	}
	if (s->gen->tls == NULL || (s->gen->tls_level < 1 && !s->submission)) {
		refuse(s, "502 5.5.1 Error: command not implemented");
		return;
	}
	if (transport_tls_prepare(&s->tp, s->gen->tls) < 0) {
		/* a TLS connection's state is the session's biggest allocation: the budget may say no */
		limits_note_failure("memory", ENOMEM);
		log_ratelimited(&tls_rate, "smtpd", "memory budget exhausted: no TLS for %s[%s]", s->host, s->addr);
		session_reply(s, "454 4.7.0 TLS not available due to local problem");
		return;
	}
	session_reply(s, "220 2.0.0 Ready to start TLS");
	session_tx_free(s);
	session_enter(s, S_TLS);   /* the handshake starts once the 220 is out (session.c) */
}

/* ---- the transaction ----------------------------------------------------- */

static const char *path_err_text(enum smtpd_path_err e, int mail)
{
	switch (e) {
	case PATH_TOO_LONG: return mail ? "501 5.1.7 Bad sender address syntax" : "501 5.1.3 Bad recipient address syntax";
	case PATH_BAD_PARAM: return "555 5.5.4 Unsupported option";
	case PATH_BAD_SIZE: return "501 5.5.4 Bad message size syntax";
	case PATH_BAD_BODY: return "501 5.5.4 Unsupported BODY parameter";
	/* RFC 3461, Postfix's texts (its smtpd.c) */
	case PATH_BAD_RET: return "501 5.5.4 Bad RET parameter syntax";
	case PATH_BAD_ENVID: return "501 5.5.4 Bad ENVID parameter syntax";
	case PATH_BAD_NOTIFY: return "501 5.5.4 Error: Bad NOTIFY parameter syntax";
	case PATH_BAD_ORCPT: return "501 5.5.4 Error: Bad ORCPT parameter syntax";
	default: return mail ? "501 5.5.4 Syntax: MAIL FROM:<address>" : "501 5.5.4 Syntax: RCPT TO:<address>";
	}
}

static void do_mail(struct session *s, const struct smtpd_cmd *c)
{
	struct smtpd_path p;
	enum smtpd_path_err e;
	char why[700];

	if (s->state == S_INIT && s->p->helo_required) {
		refuse(s, "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	if (s->submission && s->sasl_user == NULL) {
		/* submission: AUTH before MAIL (PRODUCT.md 2; smtpd_client_restrictions = permit_sasl_authenticated, reject) */
		refuse(s, "530 5.7.0 Authentication required");
		return;
	}
	if ((e = smtpd_parse_path(c->arg, c->arglen, "FROM:", 1, &p)) != PATH_OK) {
		if (e == PATH_SYNTAX && c->arglen > 5 && strncasecmp(c->arg, "FROM:", 5) == 0)
			refuse(s, "501 5.1.7 Bad sender address syntax");
		else
			refuse(s, path_err_text(e, 1));
		return;
	}
	if (p.size >= 0 && s->p->message_size_limit > 0 && p.size > s->p->message_size_limit) {
		refuse(s, "552 5.3.4 Message size exceeds fixed limit");
		return;
	}
	/* Postfix smtpd_client_message_rate_limit: counted per MAIL that parses, like its anvil */
	if (smtpd_anvil_event(s, ANVIL_MAIL, s->p->client_message_rate_limit) > 0) {
		session_reply(s, "450 4.7.1 Error: too much mail from %s", s->addr);
		session_count_error(s);
		return;
	}
	if (s->submission && !auth_sender_owned(s, p.addr)) {
		/* submission always checks the sender against the login (reject_sender_login_mismatch) */
		session_reply(s, "553 5.7.1 <%s>: Sender address rejected: not owned by user %s", p.addr, s->sasl_user);
		stats_inc(STATS_REJECTED);
		log_info("smtpd", "NOQUEUE: reject: MAIL from %s[%s]: 553 5.7.1 <%s>: Sender address rejected: "
		    "not owned by user %s; proto=%s helo=<%s>", s->host, s->addr, p.addr, s->sasl_user,
		    session_proto(s), s->helo ? s->helo : "");
		session_count_error(s);
		return;
	}
	/* Postfix's smtpd_check_queue: refuse early, not halfway through DATA */
	if (!limits_disk_admit(p.size > 0 ? p.size : 0, why, sizeof why)) {
		session_reply(s, "452 4.3.1 Insufficient system storage");
		log_ratelimited(&disk_rate[strstr(why, "inodes") != NULL], "smtpd",
		    "not enough free space: %s: 452 to %s[%s]", why, s->host, s->addr);
		return;
	}
	if ((s->tx = mem_calloc(1, sizeof *s->tx)) == NULL) {
		session_reply(s, "451 4.3.0 Error: insufficient system resources");
		limits_note_failure("memory", ENOMEM);
		return;
	}
	snprintf(s->tx->sender, sizeof s->tx->sender, "%s", p.addr);
	s->tx->dsn_ret = p.dsn_ret;
	s->tx->smtputf8 = p.smtputf8;
	s->tx->has_envid = p.has_envid;
	memcpy(s->tx->dsn_envid, p.envid, sizeof p.envid);
	session_enter(s, S_MAIL);
	session_reply(s, "250 2.1.0 Ok");
}

/*
 * The restrictions' verdict on one recipient, and what follows from it.
 * A restriction that waits for DNS suspends the session here (S_DNS_WAIT:
 * nothing is read, the address is kept in the transaction) and
 * verbs_rcpt_resume() comes back with the answer.
 */
static void rcpt_decide(struct session *s, const struct smtpd_path *path)
{
	char rtext[600], snd[SMTPD_ADDR_MAX + 1], rcpt[SMTPD_ADDR_MAX + 1];
	enum restr_result res;

	res = restr_check_rcpt(s, path->addr, rtext, sizeof rtext);
	if (res == RESTR_WAIT) {
		if (path != &s->tx->pending_rcpt)
			s->tx->pending_rcpt = *path;
		s->dns_resume = s->state;
		session_enter(s, S_DNS_WAIT);
		return;
	}
	if (res != RESTR_PERMIT) {
		session_reply(s, "%s", rtext);
		stats_inc(STATS_REJECTED);
		log_info("smtpd", "%s: reject: RCPT from %s[%s]: %s; from=<%s> to=<%s> proto=%s helo=<%s>",
		    s->tx->txn ? spool_txn_id(s->tx->txn) : "NOQUEUE",
		    s->host, s->addr, rtext, s->tx->sender, path->addr, session_proto(s), s->helo ? s->helo : "");
		session_count_error(s);
		/* Postfix: a 421 or 521 reply (rbl_reply_maps, an access table) also hangs up */
		if ((rtext[0] == '4' || rtext[0] == '5') && rtext[1] == '2' && rtext[2] == '1' && rtext[3] == ' ')
			session_enter(s, S_CLOSING);
		return;
	}
	/* Postfix's cleanup: canonical maps and masquerading, after the restrictions saw the original */
	if ((s->tx->txn == NULL && cleanup_sender(s->gen->resolver, s->tx->sender, snd, sizeof snd) < 0) ||
	    cleanup_recipient(s->gen->resolver, path->addr, rcpt, sizeof rcpt) < 0) {
		session_reply(s, "451 4.3.0 <%s>: Temporary lookup failure", path->addr);
		return;
	}
	if (s->tx->txn == NULL) {
		char client[sizeof s->host + sizeof s->addr + 2];

		snprintf(client, sizeof client, "%s[%s]", s->host, s->addr);
		if ((s->tx->txn = spool_txn_new(s->srv->spool, snd, client)) == NULL) {
			int err = errno;
			session_reply(s, "451 4.3.0 Error: queue file write error");
			limits_note_failure(err == ENOMEM ? "memory" : "queue file", err);
			return;
		}
		if (s->sasl_user)   /* Postfix's fields: pflogsumm and fail2ban read them */
			log_info("smtpd", "%s: client=%s, sasl_method=%s, sasl_username=%s", spool_txn_id(s->tx->txn),
			    client, s->sasl_method, s->sasl_user);
		else
			log_info("smtpd", "%s: client=%s", spool_txn_id(s->tx->txn), client);
	}
	if (spool_txn_rcpt(s->tx->txn, rcpt, path->addr) < 0) {
		session_reply(s, "451 4.3.0 Error: insufficient system resources");
		limits_note_failure("memory", errno);
		return;
	}
	/* RFC 3461: the message's RET/ENVID (set again per RCPT: harmless) and this recipient's NOTIFY/ORCPT */
	if (spool_txn_dsn(s->tx->txn, s->tx->dsn_ret, s->tx->has_envid ? s->tx->dsn_envid : NULL) < 0 ||
	    spool_txn_rcpt_dsn(s->tx->txn, path->notify, path->orcpt[0] ? path->orcpt : NULL) < 0) {
		session_reply(s, "451 4.3.0 Error: insufficient system resources");
		limits_note_failure("memory", errno);
		return;
	}
	if (s->tx->nrcpt++ == 0)
		snprintf(s->tx->first_rcpt, sizeof s->tx->first_rcpt, "%s", path->addr);
	session_enter(s, S_RCPT);
	session_reply(s, "250 2.1.5 Ok");
}

void verbs_rcpt_resume(struct session *s)
{
	session_enter(s, s->dns_resume);
	s->tx->rcpt_resumed = 1;   /* check_greylist: the triplet was judged already (greylisting.c) */
	rcpt_decide(s, &s->tx->pending_rcpt);
	if (s->tx)
		s->tx->rcpt_resumed = 0;
	if (s->state != S_DNS_WAIT && s->tx)
		s->tx->pending_rcpt.addr[0] = '\0';
	session_flush(s);   /* the reply, and what the client pipelined meanwhile */
}

static void do_rcpt(struct session *s, const struct smtpd_cmd *c)
{
	struct smtpd_path p;
	enum smtpd_path_err e;

	if ((e = smtpd_parse_path(c->arg, c->arglen, "TO:", 0, &p)) != PATH_OK) {
		if (e == PATH_SYNTAX && c->arglen > 3 && strncasecmp(c->arg, "TO:", 3) == 0)
			refuse(s, "501 5.1.3 Bad recipient address syntax");
		else
			refuse(s, path_err_text(e, 0));
		return;
	}
	if (s->tx->nrcpt >= s->p->recipient_limit) {
		refuse(s, "452 4.5.3 Error: too many recipients");
		return;
	}
	if (smtpd_anvil_event(s, ANVIL_RCPT, s->p->client_recipient_rate_limit) > 0) {
		session_reply(s, "450 4.7.1 Error: too many recipients from %s", s->addr);
		session_count_error(s);
		return;
	}
	rcpt_decide(s, &p);
}

static void do_data(struct session *s, const struct smtpd_cmd *c)
{
	if (c->arglen) {
		refuse(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (s->tx == NULL) {
		refuse(s, "503 5.5.1 Error: need RCPT command");
		return;
	}
	if (s->tx->nrcpt == 0) {
		refuse(s, "554 5.5.1 Error: no valid recipients");
		return;
	}
	if (content_begin(s) < 0) {
		session_reply(s, "451 4.3.0 Error: queue file write error");
		session_tx_reset(s);
		return;
	}
	session_enter(s, S_DATA);
	session_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/*
 * BDAT count [LAST] (RFC 3030). A count that cannot be read leaves no way
 * to find the next command but to read on as commands (501, as Postfix).
 * Every other refusal still reads the chunk's octets and answers after them.
 */
static void do_bdat(struct session *s, const struct smtpd_cmd *c)
{
	const char *p = c->arg, *end = c->arg + c->arglen;
	long long n = 0;
	int digits = 0, last = 0;
	struct smtp_tx *tx = s->tx;

	while (p < end && *p >= '0' && *p <= '9' && digits < 18) {
		n = n * 10 + (*p++ - '0');
		digits++;
	}
	if (p < end && *p == ' ' && end - p == 5 && strncasecmp(p + 1, "LAST", 4) == 0) {
		last = 1;
		p = end;
	}
	if (digits == 0 || p != end) {
		refuse(s, "501 5.5.4 Syntax: BDAT count [LAST]");
		return;
	}
	s->chunk_left = s->chunk_size = n;
	s->chunk_last = last;
	s->chunk_refusal = NULL;
	if (session_tls_missing(s))
		s->chunk_refusal = "530 5.7.0 Must issue a STARTTLS command first";
	else if (tx == NULL)
		s->chunk_refusal = "503 5.5.1 Error: need RCPT command";
	else if (tx->nrcpt == 0)
		s->chunk_refusal = "554 5.5.1 Error: no valid recipients";
	else if (s->p->message_size_limit > 0 && tx->size + n > s->p->message_size_limit)
		s->chunk_refusal = "552 5.3.4 Chunk exceeds message size limit";
	else if (!tx->opened && content_begin(s) < 0)
		s->chunk_refusal = "451 4.3.0 Error: queue file write error";
	if (tx && s->chunk_refusal == NULL)
		tx->chunking = 1;
	session_enter(s, S_BDAT);
	if (n == 0)
		content_chunk_done(s);   /* no octets to wait for ("BDAT 0 LAST" ends a message) */
}

/* ---- the rest ------------------------------------------------------------ */

static void do_rset(struct session *s, const struct smtpd_cmd *c)
{
	if (c->arglen) {
		refuse(s, "501 5.5.4 Syntax: RSET");
		return;
	}
	session_tx_reset(s);
	session_reply(s, "250 2.0.0 Ok");
}

static void do_noop(struct session *s, const struct smtpd_cmd *c)
{
	(void)c;
	session_reply(s, "250 2.0.0 Ok");
}

static void do_vrfy(struct session *s, const struct smtpd_cmd *c)
{
	/* 252: no address harvesting (RFC 5321 3.5.3) */
	if (c->arglen == 0)
		refuse(s, "501 5.5.4 Syntax: VRFY address");
	else
		session_reply(s, "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery");
}

static void do_quit(struct session *s, const struct smtpd_cmd *c)
{
	(void)c;
	session_reply(s, "221 2.0.0 Bye");
	session_enter(s, S_CLOSING);
}

static void do_help(struct session *s, const struct smtpd_cmd *c)
{
	(void)c;
	session_reply(s, "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP ETRN STARTTLS AUTH");
}

static void do_auth(struct session *s, const struct smtpd_cmd *c)
{
	if (s->state == S_INIT) {
		refuse(s, "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	auth_command(s, c->arg, c->arglen);
}

/*
 * ETRN (RFC 1985) as Postfix answers it: a site online part of the day asks
 * for its deferred mail. Only for domains we relay for (Postfix's
 * fast_flush_domains = $relay_domains); "@domain" asks for subdomains too.
 */
static void do_etrn(struct session *s, const struct smtpd_cmd *c)
{
	char dom[264], probe[300], argbuf[260];
	const char *arg = argbuf;
	struct resolve_result rr;
	int sub = 0;

	if (s->state == S_INIT) {
		refuse(s, "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	if (s->tx) {
		refuse(s, "503 5.5.1 Error: MAIL transaction in progress");
		return;
	}
	if (c->arglen == 0) {
		refuse(s, "500 5.5.4 Syntax: ETRN domain");
		return;
	}
	if (c->arglen >= sizeof argbuf) {
		refuse(s, "501 5.1.2 Error: invalid parameter syntax");
		return;
	}
	/* the argument points into the line, which is not terminated after it */
	memcpy(argbuf, c->arg, c->arglen);
	argbuf[c->arglen] = '\0';
	argbuf[strcspn(argbuf, " \t\r\n")] = '\0';
	if (*arg == '@') {
		sub = 1;
		arg++;
	}
	if (*arg == '#' || !queue_flush_domain_valid(arg) || *arg == '.') {
		refuse(s, "501 5.1.2 Error: invalid parameter syntax");
		return;
	}
	snprintf(probe, sizeof probe, "postmaster@%s", arg);
	rr.cls = RESOLVE_REMOTE;
	if (resolver_classify(s->gen->resolver, probe, &rr) < 0) {
		refuse(s, "458 4.3.0 Unable to queue messages");
		return;
	}
	if (rr.cls != RESOLVE_RELAY) {
		session_reply(s, "459 4.1.1 <%s>: service unavailable", arg);
		session_count_error(s);
		return;
	}
	snprintf(dom, sizeof dom, "%s%s", sub ? "." : "", arg);
	if (s->srv->qmgr == NULL || qmgr_flush_domain(s->srv->qmgr, dom) < 0) {
		refuse(s, "458 4.3.0 Unable to queue messages");
		return;
	}
	session_reply(s, "250 Queuing started");
}

static void not_implemented(struct session *s, const struct smtpd_cmd *c)
{
	(void)c;
	refuse(s, "502 5.5.1 Error: command not implemented");
}

static const struct verb verbs[] = {
	{ CMD_HELO, "HELO", ST_TALK, NULL, V_PRE_TLS, do_helo },
	{ CMD_EHLO, "EHLO", ST_TALK, NULL, V_PRE_TLS | V_ENDS_GROUP, do_ehlo },
	{ CMD_STARTTLS, "STARTTLS", ST_TALK, NULL, V_PRE_TLS | V_ENDS_GROUP, do_starttls },
	{ CMD_MAIL, "MAIL", ST(S_INIT) | ST(S_HELO), "503 5.5.1 Error: nested MAIL command", V_TX, do_mail },
	{ CMD_RCPT, "RCPT", ST(S_MAIL) | ST(S_RCPT), "503 5.5.1 Error: need MAIL command", V_TX, do_rcpt },
	{ CMD_DATA, "DATA", ST_TALK, NULL, V_TX | V_ENDS_GROUP, do_data },   /* its checks in order, in do_data */
	{ CMD_BDAT, "BDAT", ST_TALK, NULL, 0, do_bdat },
	{ CMD_RSET, "RSET", ST_TALK, NULL, V_PRE_TLS | V_JUNK, do_rset },
	{ CMD_NOOP, "NOOP", ST_TALK, NULL, V_PRE_TLS | V_JUNK | V_ENDS_GROUP, do_noop },
	{ CMD_VRFY, "VRFY", ST_TALK, NULL, V_JUNK | V_ENDS_GROUP, do_vrfy },
	{ CMD_QUIT, "QUIT", ST_TALK, NULL, V_PRE_TLS | V_ENDS_GROUP, do_quit },
	{ CMD_HELP, "HELP", ST_TALK, NULL, V_PRE_TLS, do_help },
	{ CMD_EXPN, "EXPN", ST_TALK, NULL, V_ENDS_GROUP, not_implemented },
	{ CMD_ETRN, "ETRN", ST_TALK, NULL, V_ENDS_GROUP, do_etrn },
	{ CMD_AUTH, "AUTH", ST(S_INIT) | ST(S_HELO), "503 5.5.1 Error: MAIL transaction in progress", V_ENDS_GROUP, do_auth },
};

void verbs_run(struct session *s, const char *line, size_t len)
{
	const struct verb *v = NULL;
	struct smtpd_cmd c;
	size_t i;

	if (memchr(line, '\0', len)) {
		refuse(s, "500 5.5.2 Error: bad syntax");
		return;
	}
	smtpd_cmd_parse(line, len, &c);
	if (len > SMTPD_CMD_LINE_MAX - 2 && !(c.verb == CMD_MAIL || c.verb == CMD_RCPT)) {
		refuse(s, "500 5.5.2 Error: line too long");
		return;
	}
	for (i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
		if (verbs[i].verb == c.verb) {
			v = &verbs[i];
			break;
		}
	if (v == NULL) {
		refuse(s, "500 5.5.2 Error: command not recognized");
		return;
	}
	if (!(v->flags & V_PRE_TLS) && session_tls_missing(s) && v->verb != CMD_BDAT) {
		refuse(s, "530 5.7.0 Must issue a STARTTLS command first");
		return;
	}
	if ((v->flags & V_TX) && s->tx && s->tx->chunking) {
		session_reply(s, "503 5.5.1 Error: %s after BDAT", v->name);
		session_count_error(s);
		return;
	}
	if (!(ST(s->state) & v->states)) {
		refuse(s, v->elsewhere ? v->elsewhere : "503 5.5.1 Error: bad sequence of commands");
		return;
	}
	v->run(s, &c);
	/* Postfix smtpd_junk_command_limit: past it, each junk command is an error */
	if ((v->flags & V_JUNK) && ++s->junk > s->p->junk_command_limit)
		session_count_error(s);
	if ((v->flags & V_ENDS_GROUP) && s->state != S_TLS)
		session_push(s);
}
