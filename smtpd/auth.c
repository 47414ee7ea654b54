/*
 * smtpd/auth.c: AUTH (RFC 4954) with PLAIN and LOGIN, against
 * smtpd_sasl_users (login to crypt(3) hash, smtpd_sasl_type = frugal).
 *
 * The exchange is session states: S_AUTH reads the client's next line as a
 * SASL response (session.c hands it to auth_response()); S_AUTH_WAIT reads
 * nothing while the password is checked on a WORKER_AUTH thread (a few
 * threads of their own, at a lower priority, so a check never delays a
 * spool commit or the loop). The table lookup is done here on the loop;
 * the thread gets the hash and the password only. libcrypt's memory for a
 * check (yescrypt: 16 MiB at Debian's default cost) is charged to the
 * budget for as long as the check runs; without room the client gets 454.
 *
 * A check belongs to its worker job until its done callback: a session
 * that ends meanwhile only detaches (auth_session_gone).
 *
 * Failures are logged as Postfix logs them, every one (fail2ban's
 * postfix-sasl filter counts them): "warning: unknown[ADDR]: SASL LOGIN
 * authentication failed: ...". They count toward smtpd_hard_error_limit,
 * and every AUTH toward smtpd_client_auth_rate_limit.
 */
#include "smtpd/smtpd_int.h"

#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "conf/map.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/worker.h"
#include "limits/limits.h"
#include "smtpd/sasl.h"

enum { MECH_NONE, MECH_PLAIN, MECH_LOGIN_USER, MECH_LOGIN_PASS };

#define AUTH_QUEUE_MAX 64   /* checks queued or running at once, all sessions: past it, 454 */
/* Debian's default yescrypt cost (16 MiB), of a password nobody knows: unknown logins are checked against it */
#define DUMMY_HASH "$y$j9T$abcdefghijklmnop$xxI14acrF4kcY59GsyqJ1DqdhVdc9N0f1.omTKnq.61"

struct auth_check {
	struct worker_job job;      /* first member: the callbacks cast back */
	struct session *s;          /* NULL once the session is gone */
	struct smtpd_server *srv;
	int dummy;                  /* an unknown login: the same work against a fixed hash, never a match */
	char user[SASL_FIELD_MAX + 1];
	char pass[SASL_FIELD_MAX + 1];
	char *hash;                 /* owned; from the table */
	const char *method;
	size_t need;                /* libcrypt's own memory for this hash */
	size_t charged;             /* what check_work charged to the budget while it ran */
	int ok;                     /* 1 match, 0 not, -1 no memory for the check */
};

static struct log_rate nomem_rate = LOG_RATE_INIT(60, 5);
static struct log_rate table_rate = LOG_RATE_INIT(60, 5);

int auth_offered(const struct session *s)
{
	if (!s->submission && !s->p->sasl_auth_enable)
		return 0;
	if (s->gen->sasl_users == NULL && s->gen->sasl_path == NULL)
		return 0;
	return transport_is_tls(&s->tp) || !s->p->tls_auth_only;
}

static void auth_end(struct session *s)
{
	s->auth_mech = MECH_NONE;
	mem_free(s->auth_login);
	s->auth_login = NULL;
	session_enter(s, S_HELO);
}

static void failed(struct session *s, const char *method, const char *why)
{
	/* Postfix's wording: fail2ban's postfix-sasl filter matches it; every failure is logged */
	log_warning("smtpd", "%s[%s]: SASL %s authentication failed: %s", s->host, s->addr, method, why);
	session_reply(s, "535 5.7.8 Error: authentication failed: authentication failure");
	auth_end(s);
	session_count_error(s);
}

/* ---- the check, on a worker thread --------------------------------------- */

static void check_work(struct worker_job *job)
{
	struct auth_check *c = (struct auth_check *)job;
	struct crypt_data *cd = NULL;
	const char *out;

	/* charged when it runs, not while it waits: queued checks hold a small struct only */
	c->ok = 0;
	if (mem_charge(c->need) == 0)
		c->charged = c->need;
	if (c->charged == 0 || (cd = mem_calloc(1, sizeof *cd)) == NULL) {
		c->ok = -1;
	} else {
		out = crypt_rn(c->pass, c->hash, cd, (int)sizeof *cd);
		/* crypt_rn fails (NULL or a "*" string) for a hash it cannot use: never a match */
		if (out && out[0] != '*' && strlen(out) == strlen(c->hash) &&
		    CRYPTO_memcmp(out, c->hash, strlen(out)) == 0 && !c->dummy)
			c->ok = 1;
		OPENSSL_cleanse(cd, sizeof *cd);
		mem_free(cd);
	}
	OPENSSL_cleanse(c->pass, sizeof c->pass);
}

/* A check's outcome, whichever back end made it: 1 right, 0 wrong, -1 try later (why: for the log). */
static void outcome(struct session *s, int ok, const char *user, const char *method, const char *why)
{
	if (s->state != S_AUTH_WAIT) {
		/* the session timed out or is being stopped meanwhile: its 421 was the last word */
		s->auth_mech = MECH_NONE;
		mem_free(s->auth_login);
		s->auth_login = NULL;
		return;
	}
	if (ok == 1 && (s->sasl_user = mem_strdup(user)) == NULL) {
		/* the password was right: a 454, and no "authentication failed" line for fail2ban */
		limits_note_failure("memory", ENOMEM);
		log_ratelimited(&nomem_rate, "smtpd", "memory budget exhausted: no login for %s[%s]", s->host, s->addr);
		ok = -1;
		why = NULL;
	}
	if (ok == 1) {
		s->sasl_method = method;
		session_reply(s, "235 2.7.0 Authentication successful");
		auth_end(s);
	} else if (ok < 0) {
		/* not the client's fault: no 535, no error counted (Postfix: 454 4.7.0) */
		if (why)   /* Dovecot's "Connection lost ...", which fail2ban's filter skips */
			log_warning("smtpd", "%s[%s]: SASL %s authentication failed: %s", s->host, s->addr, method, why);
		session_reply(s, "454 4.7.0 Temporary authentication failure");
		auth_end(s);
	} else {
		failed(s, method, why);
	}
	session_flush(s);   /* and read what was pipelined meanwhile */
}

static void check_done(struct worker_job *job)
{
	struct auth_check *c = (struct auth_check *)job;
	struct session *s = c->s;

	mem_uncharge(c->charged);
	c->srv->auth_pending--;
	if (s != NULL) {   /* else the session ended meanwhile */
		s->auth = NULL;
		if (c->ok < 0) {
			limits_note_failure("memory", ENOMEM);
			log_ratelimited(&nomem_rate, "smtpd", "memory budget exhausted: no password check for %s[%s] "
			    "(%zu KiB)", s->host, s->addr, c->need >> 10);
		}
		outcome(s, c->ok, c->user, c->method, c->ok < 0 ? NULL : "authentication failure");
	}
	mem_free(c->hash);
	mem_free(c);
}

/* Dovecot's answer (dovecot.c): the login is the name Dovecot says (user=), else the one given. */
static void dovecot_done(void *arg, int result, const char *dvuser, const char *reason)
{
	struct session *s = arg;
	char user[SASL_FIELD_MAX + 1];

	s->dovecot_id = 0;
	snprintf(user, sizeof user, "%s", dvuser && *dvuser ? dvuser : s->auth_login ? s->auth_login : "");
	outcome(s, result, user, s->auth_method, result < 0 ? reason : "authentication failure");
}

/* smtpd_sasl_type = dovecot: the check goes to Dovecot's auth service over its one connection. */
static void dovecot_start(struct session *s, const char *user, const char *pass, const char *method)
{
	char *login = mem_strdup(user);

	if (login == NULL || (s->srv->dovecot == NULL && (s->srv->dovecot = dovecot_new(s->srv->loop)) == NULL)) {
		mem_free(login);
		limits_note_failure("memory", ENOMEM);
		session_reply(s, "454 4.7.0 Temporary authentication failure");
		auth_end(s);
		return;
	}
	mem_free(s->auth_login);
	s->auth_login = login;
	if (dovecot_check(s->srv->dovecot, s->gen->sasl_path, user, pass, s->submission ? "submission" : "smtp",
	    s->addr, transport_is_tls(&s->tp), dovecot_done, s, &s->dovecot_id) < 0) {
		int e = errno;
		if (e == EMFILE || e == ENFILE)
			limits_note_failure("descriptors", e);
		log_ratelimited(&table_rate, "smtpd", "dovecot auth %s: %s", s->gen->sasl_path, strerror(e));
		log_warning("smtpd", "%s[%s]: SASL %s authentication failed: Connection lost to authentication server",
		    s->host, s->addr, method);
		session_reply(s, "454 4.7.0 Temporary authentication failure");
		auth_end(s);
		return;
	}
	s->auth_method = method;
	session_enter(s, S_AUTH_WAIT);
}

/* Look the login up and hand the check to a worker; the session waits in S_AUTH_WAIT. */
static void check_start(struct session *s, const char *user, const char *pass, const char *method)
{
	struct auth_check *c;
	char *hash = NULL;
	long long need;
	int r;

	if (s->gen->sasl_path) {
		dovecot_start(s, user, pass, method);
		return;
	}
	r = map_list_lookup(s->gen->sasl_users, user, &hash);
	if (r < 0) {
		log_ratelimited(&table_rate, "smtpd", "smtpd_sasl_users: lookup of %s failed", user);
		session_reply(s, "454 4.7.0 Temporary authentication failure");
		auth_end(s);
		return;
	}
	if (r == 1 && sasl_hash_memory(hash) < 0) {
		log_ratelimited(&table_rate, "smtpd", "smtpd_sasl_users: the hash of %s is of a kind frugal does "
		    "not accept (yescrypt, scrypt, SHA-crypt or bcrypt only; frugal passwd writes yescrypt)", user);
		mem_free(hash);
		r = 0;
	}
	/* an unknown login costs what a known one does: its answer must not come sooner */
	if (r == 0 && (hash = mem_strdup(DUMMY_HASH)) == NULL)
		goto nomem;
	need = sasl_hash_memory(hash);
	if ((c = s->srv->auth_pending < AUTH_QUEUE_MAX ? mem_calloc(1, sizeof *c) : NULL) == NULL) {
		mem_free(hash);
		goto nomem;
	}
	c->dummy = r == 0;
	c->need = (size_t)need;
	c->s = s;
	c->srv = s->srv;
	c->hash = hash;
	c->method = method;
	snprintf(c->user, sizeof c->user, "%s", user);
	snprintf(c->pass, sizeof c->pass, "%s", pass);
	c->job.work = check_work;
	c->job.done = check_done;
	s->auth = c;
	s->srv->auth_pending++;
	session_enter(s, S_AUTH_WAIT);
	worker_submit(WORKER_AUTH, &c->job);
	return;
nomem:
	limits_note_failure("memory", ENOMEM);
	log_ratelimited(&nomem_rate, "smtpd", "memory budget exhausted: no password check for %s[%s]", s->host, s->addr);
	session_reply(s, "454 4.7.0 Temporary authentication failure");
	auth_end(s);
}

void auth_session_gone(struct session *s)
{
	if (s->auth) {
		s->auth->s = NULL;   /* its done callback frees it */
		s->auth = NULL;
	}
	if (s->dovecot_id) {
		dovecot_cancel(s->srv->dovecot, s->dovecot_id);   /* Dovecot's answer will be dropped */
		s->dovecot_id = 0;
	}
	mem_free(s->sasl_user);
	s->sasl_user = NULL;
	mem_free(s->auth_login);
	s->auth_login = NULL;
}

/* ---- the exchange -------------------------------------------------------- */

/* A base64 response: decoded into out (room for a SASL message), or answered and -1. */
static int decode(struct session *s, const char *line, size_t len, unsigned char *out, size_t *outlen)
{
	if (len > 4 * ((2 * SASL_FIELD_MAX + 3 + 2) / 3 + 1) || sasl_b64_decode(line, len, out, outlen) < 0) {
		session_reply(s, "501 5.5.2 Cannot decode response");
		auth_end(s);
		session_count_error(s);
		return -1;
	}
	return 0;
}

static void step(struct session *s, const char *line, size_t len)
{
	unsigned char msg[3 * SASL_FIELD_MAX + 8];
	char user[SASL_FIELD_MAX + 1], pass[SASL_FIELD_MAX + 1];
	size_t n;

	if (decode(s, line, len, msg, &n) < 0)
		return;
	switch (s->auth_mech) {
	case MECH_PLAIN:
		if (sasl_plain_parse(msg, n, user, pass) < 0) {
			failed(s, "PLAIN", "malformed response");
			break;
		}
		check_start(s, user, pass, "PLAIN");
		break;
	case MECH_LOGIN_USER:
		if (sasl_field_copy(msg, n, user) < 0) {
			failed(s, "LOGIN", "VXNlcm5hbWU6");   /* Postfix logs the challenge that was answered */
			break;
		}
		if ((s->auth_login = mem_strdup(user)) == NULL) {
			/* not the client's fault: a 535 would be logged as fail2ban's filter reads it */
			limits_note_failure("memory", ENOMEM);
			log_ratelimited(&nomem_rate, "smtpd", "memory budget exhausted: no password check for %s[%s]",
			    s->host, s->addr);
			session_reply(s, "454 4.7.0 Temporary authentication failure");
			auth_end(s);
			break;
		}
		s->auth_mech = MECH_LOGIN_PASS;
		session_reply(s, "334 UGFzc3dvcmQ6");   /* "Password:" */
		break;
	case MECH_LOGIN_PASS:
		if (sasl_field_copy(msg, n, pass) < 0) {
			failed(s, "LOGIN", "UGFzc3dvcmQ6");
			break;
		}
		snprintf(user, sizeof user, "%s", s->auth_login);
		check_start(s, user, pass, "LOGIN");
		break;
	default:
		auth_end(s);
		break;
	}
	OPENSSL_cleanse(msg, sizeof msg);   /* every path: a parse that failed may have copied the password */
	OPENSSL_cleanse(pass, sizeof pass);
}

void auth_response(struct session *s, const char *line, size_t len)
{
	if (len == 1 && line[0] == '*') {   /* RFC 4954 4: the client gives up */
		session_reply(s, "501 5.7.0 Authentication aborted");
		auth_end(s);
		session_count_error(s);
		return;
	}
	step(s, line, len);
}

void auth_command(struct session *s, const char *arg, size_t len)
{
	const char *sp = memchr(arg, ' ', len);
	size_t mlen = sp ? (size_t)(sp - arg) : len;
	const char *ir = sp ? sp + 1 : NULL;   /* the initial response */
	size_t irlen = sp ? len - mlen - 1 : 0;

	if (!auth_offered(s)) {
		if ((s->submission || s->p->sasl_auth_enable) && s->p->tls_auth_only && !transport_is_tls(&s->tp)
		    && (s->gen->sasl_users || s->gen->sasl_path))
			session_reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
		else
			session_reply(s, "503 5.5.1 Error: authentication not enabled");
		session_count_error(s);
		return;
	}
	if (s->sasl_user) {
		session_reply(s, "503 5.5.1 Error: already authenticated");
		session_count_error(s);
		return;
	}
	if (s->tx) {
		session_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
		session_count_error(s);
		return;
	}
	/* Postfix's reply (smtpd.c auth_cmd): a temporary refusal that counts as an error */
	if (smtpd_anvil_event(s, ANVIL_AUTH, s->p->client_auth_rate_limit) > 0) {
		session_reply(s, "450 4.7.1 Error: too many AUTH commands from %s", s->addr);
		session_count_error(s);
		return;
	}
	if (len == 0) {
		session_reply(s, "501 5.5.4 Syntax: AUTH mechanism");
		session_count_error(s);
		return;
	}
	if (mlen == 5 && strncasecmp(arg, "PLAIN", 5) == 0) {
		s->auth_mech = MECH_PLAIN;
	} else if (mlen == 5 && strncasecmp(arg, "LOGIN", 5) == 0) {
		s->auth_mech = MECH_LOGIN_USER;
	} else {
		session_reply(s, "535 5.7.8 Error: authentication failed: Invalid authentication mechanism");
		session_count_error(s);
		return;
	}
	session_enter(s, S_AUTH);
	if (ir == NULL) {
		/* PLAIN: an empty challenge; LOGIN: "Username:" */
		session_reply(s, s->auth_mech == MECH_PLAIN ? "334 " : "334 VXNlcm5hbWU6");
		return;
	}
	if (irlen == 1 && ir[0] == '=') {   /* RFC 4954: "=" is an empty initial response */
		if (s->auth_mech == MECH_PLAIN) {
			failed(s, "PLAIN", "malformed response");
			return;
		}
		ir = "";
		irlen = 0;
	}
	step(s, ir, irlen);
}

/*
 * reject_sender_login_mismatch (and every submission MAIL): the login may
 * send as itself, and as what smtpd_sender_login_maps lists it for
 * (sender, then @domain; the value a list of logins). The null sender is
 * allowed (bounces and receipts from a client), as Postfix allows it.
 */
int auth_sender_owned(struct session *s, const char *sender)
{
	char *owners = NULL, *p, *tok, *save = NULL;
	int r, owned = 0;

	if (*sender == '\0')
		return 1;
	if (s->sasl_user == NULL)
		return 0;
	if (strcasecmp(sender, s->sasl_user) == 0)
		return 1;
	if (s->gen->sender_logins == NULL || map_list_empty(s->gen->sender_logins))
		return 0;
	if ((r = map_list_lookup_addr(s->gen->sender_logins, sender, 1, &owners)) <= 0)
		return 0;
	for (p = owners; (tok = strtok_r(p, ", \t", &save)) != NULL; p = NULL)
		if (strcasecmp(tok, s->sasl_user) == 0) {
			owned = 1;
			break;
		}
	mem_free(owners);
	return owned;
}
