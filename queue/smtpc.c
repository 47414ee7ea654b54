/*
 * queue/smtpc.c: the SMTP and LMTP clients (Postfix's smtp(8)/lmtp(8)), one
 * state machine per job on the loop, like a server session: the next hop is
 * resolved through core/dns (MX, then A and AAAA per host), each address is
 * tried in order until one holds a conversation, the envelope goes out
 * (pipelined when offered), the message is streamed from the queue file
 * (LF to CRLF, dot-stuffed, a bounded buffer refilled by pread), and every
 * target gets its outcome from the peer's replies. Owns its sessions and
 * their sockets (through core/fd: TCP as numtcpsock, LMTP's unix socket as
 * numothersock); never blocks the loop, never holds the whole message.
 *
 * A session outlives its job only to be reused (a connection not kept gets
 * QUIT and is closed at once, the 221 not waited for): a healthy
 * connection (the transaction went through the end of data, or every RCPT
 * was refused) is reset (RSET) and waits idle, for at most
 * smtp_connection_cache_time_limit, for the next job with the same key
 * (transport, next hop as written, configuration generation), which starts
 * at MAIL (Postfix's connection cache, kept in this process). done() runs
 * as soon as every target is settled and, for a connection being kept,
 * once the RSET is answered, so the job the scheduler dispatches next for
 * that destination finds it idle. Sessions are freed only at the top of a
 * callback (reap), never inside the chain that ended them.
 */
#include "queue/queue_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "conf/conf.h"
#include "core/dns.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/tls.h"
#include "core/transport.h"
#include "conf/map.h"
#include "limits/limits.h"
#include "queue/mta_sts.h"
#include "queue/smtp_sasl.h"
#include "queue/smtpc_body.h"
#include "queue/smtp_generic.h"
#include "queue/smtpc_addr.h"

#define SMTPC_HOSTS   16           /* MX hosts kept from one answer (Postfix keeps them all; 16 is plenty) */
#define SMTPC_ADDRS   16           /* addresses of one host */
#define SMTPC_IN      4096         /* reply bytes buffered: a line longer than this is malformed */
#define SMTPC_OUT     (32 * 1024)  /* commands, or message data being sent */
#define SMTPC_SCAN    (64 * 1024)  /* queue file bytes scanned per loop iteration (8BITMIME) */
#define SMTPC_IDLE_MAX 8           /* idle connections kept at most (qmgr trims to its free slots too) */

enum smtpc_state {
	C_STS,         /* the MTA-STS policy is being learnt (TXT, maybe a fetch) before the MX lookup */
	C_RESOLVE,     /* a DNS query is out */
	C_CONNECT,     /* non-blocking connect in progress */
	C_GREETING,
	C_EHLO,        /* EHLO or LHLO sent */
	C_HELO,
	C_STARTTLS,    /* STARTTLS sent, waiting for its 220 */
	C_TLS,         /* the TLS handshake, driven by transport_handshake on every event */
	C_AUTH,        /* AUTH sent (and LOGIN's steps) */
	C_SCAN,        /* ready for MAIL, waiting for the body scan (is it 8-bit) */
	C_MAIL,        /* MAIL sent (and the RCPTs, when pipelining) */
	C_RCPT,
	C_DATA,
	C_BODY,        /* streaming the message */
	C_DOT,         /* end of data sent: one reply (SMTP) or one per accepted recipient (LMTP) */
	C_RSET,        /* transaction over, connection to be kept: RSET sent; done() on its reply */
	C_IDLE,        /* no job: waiting in the cache for the next one with the same key */
	C_CLOSED,      /* to be reaped */
};

struct smtpc_host {
	char name[DNS_NAME_MAX + 1];
	int  pref;
};

struct smtpc {
	struct smtpc *next, *prev;   /* live sessions (smtpc_stop_all) */
	struct agent_job *j;         /* NULL once done() ran */
	struct ev_loop *loop;
	ev_io    io;
	ev_timer tmr;
	struct transport tr;         /* tr.fd -1 while not connected */
	enum smtpc_state st;
	int      lmtp;
	int      port;
	int      use_mx;
	char     domain[DNS_NAME_MAX + 1];   /* what MX/A is asked for */
	char     unix_path[sizeof ((struct sockaddr_un *)0)->sun_path];
	struct dns_query *q;
	int      qtype;
	int      a_status, aaaa_status;      /* the current host's lookups */
	struct smtpc_host hosts[SMTPC_HOSTS];
	int      nhosts, hi;
	struct smtpc_addr addrs[SMTPC_ADDRS];
	int      naddrs, ai;
	int      tried, addr_limit;
	/* the conversation */
	char     peer[400];                  /* "host[addr]" */
	char     relay[420];                 /* "host[addr]:port", the log's relay= */
	unsigned ext;
	unsigned gen;                        /* connections so far: a reply parsed for an old one stops */
	unsigned long long peer_size;
	struct smtp_reply rep;
	char     in[SMTPC_IN];
	size_t   inlen;
	char    *out;
	size_t   outlen, outoff;
	int      pipelined;
	int      rcpt_sent, rcpt_i, naccepted, dot_i;
	char    *settled;                    /* per target: 0 open, 1 outcome set */
	char    *accepted;                   /* per target: RCPT answered 2xx */
	struct smtpc_body body;              /* the scan (per job) and the stream (per transaction) */
	ev_timer scan_w;                     /* the scan's next slice, one per loop iteration */
	int      no_conv;                    /* disable_mime_output_conversion */
	int      body_qp;                    /* this transaction converts the body to quoted-printable */
	/* addresses: inet_protocols, smtp_address_preference, smtp_bind_address(6) */
	int      inet4, inet6;               /* families connected to */
	int      addr_pref;                  /* 0 any, AF_INET, AF_INET6 */
	struct smtpc_addr bind4, bind6;      /* len 0: not set */
	struct smtp_generic *generic;        /* smtp_generic_maps (a reference), NULL: none (and for LMTP) */
	char     gen_sender[1024];           /* the envelope sender as rewritten */
	int      reached;                    /* some address held a conversation */
	/* the last failure, for the targets if nothing better comes */
	char     err[256];
	char     err_dsn[8];
	int      err_perm;
	/* parameters, read once per job */
	double   t_connect, t_helo, t_mail, t_rcpt, t_data_init, t_xfer, t_done;
	char     helo_name[256];
	char     myhostname[256];
	int      tls_level;                  /* TLS_LEVEL_*: smtp_tls_security_level (never for LMTP) */
	struct tls_ctx *tls;                 /* a reference to the generation's client context, or NULL */
	int      tls_on;                     /* this connection is TLS (EHLO was said again inside it) */
	int      plain_hi, plain_ai;         /* the address retried without STARTTLS after it failed, or -1 */
	long long min_backoff;               /* minimal_backoff_time: the plain-text fallback's wait */
	int      sasl_on;                    /* smtp_sasl_auth_enable and the maps opened (sasl_cache) */
	unsigned sasl_opts, sasl_tls_opts;   /* smtp_sasl_security_options, smtp_sasl_tls_security_options */
	struct smtp_sasl sasl;               /* the password while AUTH runs; zeroed after */
	/*
	 * Reuse. The key: transport, next hop as the job wrote it, configuration generation. The TLS
	 * level, the SASL maps and options all come from that generation and the credentials from the
	 * next hop (and the host, which the connection fixes), so equal keys mean equal security.
	 */
	char     key_transport[32];
	char     key_hop[256];
	const struct conf *key_conf;         /* a reference (conf_ref) held while the session lives */
	int      cache_on;                   /* smtp_connection_cache_on_demand */
	double   t_rset, t_cache, t_reuse;   /* smtp_rset_timeout, ..._cache_time_limit, ..._reuse_time_limit */
	long long reuse_count;               /* smtp_connection_reuse_count_limit (0: none) */
	double   born;                       /* when this connection was made */
	double   idle_since;
	int      uses;                       /* transactions started on this connection */
	int      reused;                     /* this job took a cached connection: dead at MAIL, retry fresh */
	/* MTA-STS (RFC 8461): the policy of the next-hop domain, learnt before its MX lookup */
	int      sts_on;                     /* smtp_mta_sts and an MX next hop */
	struct mta_sts_wait *sts_w;          /* the lookup in flight */
	struct mta_sts_policy sts;           /* the policy in force for this job (mode NONE: none) */
	int      sts_conn;                   /* the mode this connection was made under (reuse) */
	int      sts_looked;                 /* this connection's route went through MTA-STS discovery */
	struct tls_ctx *sts_tls;             /* a reference: smtp_mta_sts_CAfile's context */
	double   t_sts;                      /* smtp_mta_sts_timeout */
	double   t_sts_fail;                 /* smtp_mta_sts_failure_cache_time (0: a failed fetch is not remembered) */
	char     queue_dir[512];
};

static struct dns *the_dns;
static struct smtpc *live;
/* The client TLS context of one configuration generation (and CA file), made when first needed. */
static struct tls_ctx *tls_cache;
static unsigned long long tls_cache_conf;    /* conf_serial() of its generation */
/*
 * smtp_sasl_password_maps of the newest generation that enabled AUTH, opened when first needed.
 * A session looks it up when it authenticates (not a pointer kept: a reload replaces the list).
 */
static struct map_list *sasl_cache;
static unsigned long long sasl_cache_conf;   /* conf_serial() of its generation */
/* smtp_generic_maps of the newest generation that has them; sessions hold references */
static struct smtp_generic *generic_cache;
static unsigned long long generic_cache_conf;
/* The MTA-STS trust anchors (smtp_mta_sts_CAfile, else the system's) of one generation */
static struct tls_ctx *sts_tls_cache;
static unsigned long long sts_tls_cache_conf;

void agent_set_dns(struct dns *d)
{
	the_dns = d;
}

static double now_f(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void tmr_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void next_address(struct smtpc *c);
static void start_mail(struct smtpc *c);
static void do_write(struct smtpc *c);
static void start_route(struct smtpc *c);
static void sts_start(struct smtpc *c);
static void lookup(struct smtpc *c, const char *name, enum dns_type t);

/* ---- life --------------------------------------------------------------------- */

static void close_conn(struct smtpc *c)
{
	ev_io_stop(c->loop, &c->io);
	ev_timer_stop(c->loop, &c->tmr);
	if (c->tr.fd >= 0)
		transport_close(&c->tr);
	c->tr.fd = -1;
	c->inlen = c->outlen = c->outoff = 0;
	c->tls_on = 0;
	c->gen++;
}

static void reap(struct smtpc *c)
{
	if (c->st != C_CLOSED)
		return;
	close_conn(c);
	ev_timer_stop(c->loop, &c->scan_w);
	if (c->q)
		dns_cancel(c->q);
	mta_sts_cancel(c->sts_w);
	mta_sts_policy_free(&c->sts);
	tls_ctx_unref(c->sts_tls);
	if (c->prev)
		c->prev->next = c->next;
	else
		live = c->next;
	if (c->next)
		c->next->prev = c->prev;
	tls_ctx_unref(c->tls);
	conf_unref((struct conf *)c->key_conf);
	smtp_generic_unref(c->generic);
	smtp_sasl_clear(&c->sasl);
	mem_free(c->settled);
	mem_free(c->accepted);
	mem_free(c->out);
	mem_free(c);
}

static void arm(struct smtpc *c, double secs)
{
	ev_timer_stop(c->loop, &c->tmr);
	ev_timer_set(&c->tmr, secs > 0 ? secs : 1, 0);
	ev_timer_start(c->loop, &c->tmr);
}

/* ---- the connection cache ------------------------------------------------------- */

static int n_idle(void)
{
	const struct smtpc *c;
	int n = 0;

	for (c = live; c; c = c->next)
		n += c->st == C_IDLE;
	return n;
}

static struct smtpc *oldest_idle(void)
{
	struct smtpc *c, *o = NULL;

	for (c = live; c; c = c->next)
		if (c->st == C_IDLE && (o == NULL || c->idle_since < o->idle_since))
			o = c;
	return o;
}

/* Closed now: QUIT if the socket takes it, nothing waited for. Never c's own callback chain. */
static void drop_idle(struct smtpc *c)
{
	if (c->tr.fd >= 0)
		(void)transport_write(&c->tr, "QUIT\r\n", 6);
	c->st = C_CLOSED;
	reap(c);
}

void smtpc_idle_trim(int room)
{
	struct smtpc *o;

	if (room < 0)
		room = 0;
	while (n_idle() > room && (o = oldest_idle()) != NULL)
		drop_idle(o);
}

/* An idle connection for this job's key (the one idle the shortest: the others age out), or NULL. */
static struct smtpc *cache_find(const struct agent_job *j, int need_sts)
{
	struct smtpc *c, *best = NULL;
	double now = now_f();

	for (c = live; c; c = c->next)
		if (c->st == C_IDLE && c->key_conf == j->conf && now - c->born < c->t_reuse &&
		    strcmp(c->key_transport, j->route.transport) == 0 && strcmp(c->key_hop, j->route.nexthop) == 0 &&
		    (!need_sts || c->sts_conn == MTA_STS_ENFORCE) && (best == NULL || c->idle_since > best->idle_since))
			best = c;
	return best;
}

/*
 * The job found no idle connection it may take, so it will make one. Idle connections to the
 * same destination that cannot serve it (past smtp_connection_reuse_time_limit, of an older
 * configuration generation, made without the MTA-STS policy the job needs) are closed first: the
 * scheduler counts only the job against the destination's concurrency, and a stale connection
 * left beside the new one would hold a socket beyond that limit until its idle timer.
 */
static void drop_stale(const struct agent_job *j)
{
	struct smtpc *c, *next;

	for (c = live; c; c = next) {
		next = c->next;
		if (c->st == C_IDLE && strcmp(c->key_transport, j->route.transport) == 0 &&
		    strcmp(c->key_hop, j->route.nexthop) == 0)
			drop_idle(c);
	}
}

/* What the io watcher waits for: the connect, pending output, replies. */
static void watch(struct smtpc *c)
{
	int ev = 0;

	if (c->tr.fd < 0)
		return;
	if (c->st == C_CONNECT)
		ev = EV_WRITE;
	else if (c->st == C_TLS)
		ev = c->tr.want == TRANSPORT_WANT_READ ? EV_READ : EV_WRITE;
	else {
		if (c->outoff < c->outlen || c->st == C_BODY)
			ev |= EV_WRITE;
		if (c->st != C_BODY)
			ev |= EV_READ;
		if (c->tr.want == TRANSPORT_WANT_READ && (ev & EV_WRITE))
			ev |= EV_READ;
		if (c->tr.want == TRANSPORT_WANT_WRITE && (ev & EV_READ))
			ev |= EV_WRITE;   /* a TLS read that needs a write */
	}
	if (ev_is_active(&c->io) && c->io.fd == c->tr.fd && (c->io.events & (EV_READ | EV_WRITE)) == ev)
		return;
	ev_io_stop(c->loop, &c->io);
	ev_io_set(&c->io, c->tr.fd, ev);
	ev_io_start(c->loop, &c->io);
}

/* ---- outcomes ---------------------------------------------------------------- */

static void settle(struct smtpc *c, int i, char cls, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* cls '2' sent, '4' deferred, '5' bounced */
static void settle(struct smtpc *c, int i, char cls, const char *dsn, const char *fmt, ...)
{
	struct target *t = c->j->t[i];
	va_list ap;

	if (c->settled[i])
		return;
	c->settled[i] = 1;
	va_start(ap, fmt);
	vsnprintf(t->reason, sizeof t->reason, fmt, ap);
	va_end(ap);
	if (cls == '2') {
		t->sent = 1;
		snprintf(t->dsn, sizeof t->dsn, "2.0.0");
		return;
	}
	t->kind = cls == '5' ? TGT_BOUNCE : TGT_DEFER;
	snprintf(t->dsn, sizeof t->dsn, "%s", dsn);
	if (t->dsn[0] != cls)      /* a 4.x.x inside a 5xx reply (or the other way) follows the code */
		t->dsn[0] = cls;
}

static void settle_rest(struct smtpc *c, char cls, const char *dsn, const char *reason)
{
	int i;

	for (i = 0; i < c->j->n; i++)
		settle(c, i, cls, dsn, "%s", reason);
}

/* Every target settled: the job goes back to the scheduler; the session may still say QUIT. */
static void finish(struct smtpc *c)
{
	struct agent_job *j = c->j;

	if (j == NULL)
		return;
	settle_rest(c, c->err_perm ? '5' : '4', *c->err_dsn ? c->err_dsn : "4.4.1",
	    *c->err ? c->err : "delivery interrupted");
	j->t_done = now_f();
	j->relay = *c->relay ? c->relay : "none";
	c->j = NULL;
	j->done(j);
}

static void set_err(struct smtpc *c, int perm, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_err(struct smtpc *c, int perm, const char *dsn, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof c->err, fmt, ap);
	va_end(ap);
	snprintf(c->err_dsn, sizeof c->err_dsn, "%s", dsn);
	c->err_perm = perm;
}

/*
 * No address left: the job ends with the last failure. A destination failure (slow start, dead
 * destinations) only when some address was tried and none held a conversation: a resolver
 * failure (TEMPFAIL, no resolver, no memory for the query) is not the destination's fault.
 */
static void give_up(struct smtpc *c)
{
	if (c->j && c->tried > 0 && !c->reached && !c->err_perm) {
		c->j->dest_failed = 1;
		snprintf(c->j->dest_reason, sizeof c->j->dest_reason, "%s", c->err);
	}
	finish(c);
	c->st = C_CLOSED;
}

/* ---- output ------------------------------------------------------------------ */

/* What the peer has taken leaves the buffer: commands always append at the front's free room. */
static void out_compact(struct smtpc *c)
{
	if (c->outoff == 0)
		return;
	memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
	c->outlen -= c->outoff;
	c->outoff = 0;
}

static int out_printf(struct smtpc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int out_printf(struct smtpc *c, const char *fmt, ...)
{
	va_list ap;
	int n;

	out_compact(c);
	va_start(ap, fmt);
	n = vsnprintf(c->out + c->outlen, SMTPC_OUT - c->outlen, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= SMTPC_OUT - c->outlen)
		return -1;
	c->outlen += (size_t)n;
	return 0;
}

/* RFC 3461 4: xtext for ENVID and ORCPT */
static int out_xtext(struct smtpc *c, const char *s)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch < 33 || ch > 126 || ch == '+' || ch == '=') {
			if (out_printf(c, "+%02X", ch) < 0)
				return -1;
		} else if (out_printf(c, "%c", ch) < 0)
			return -1;
	}
	return 0;
}

/* The message into the output buffer's free room (queue/smtpc_body.c). */
static int fill_body(struct smtpc *c)
{
	if (c->outoff == c->outlen)
		c->outoff = c->outlen = 0;
	return smtpc_body_fill(&c->body, &c->j->src, c->out, &c->outlen, SMTPC_OUT);
}

/* smtp_generic_maps on the address headers, one whole header at a time (smtpc_body.c) */
static int generic_header(void *arg, const char *hdr, size_t len, char *out, size_t cap, size_t *outlen)
{
	struct smtpc *c = arg;

	return smtp_generic_header(c->generic, hdr, len, out, cap, outlen);
}

/* ---- failures of the conversation ---------------------------------------------- */

static const char *doing(const struct smtpc *c)
{
	switch (c->st) {
	case C_GREETING: return "receiving the initial server greeting";
	case C_EHLO:     return c->lmtp ? "performing the LHLO handshake" : "performing the EHLO handshake";
	case C_HELO:     return "performing the HELO handshake";
	case C_STARTTLS: return "sending STARTTLS";
	case C_TLS:      return "performing the TLS handshake";
	case C_AUTH:     return "authenticating";
	case C_SCAN:     return "reading the message";
	case C_MAIL:     return "sending MAIL FROM";
	case C_RCPT:     return "sending RCPT TO";
	case C_DATA:     return "sending DATA command";
	case C_BODY:     return "sending message body";
	case C_DOT:      return "sending end of data -- message may be sent more than once";
	case C_RSET:     return "sending RSET";
	default:         return "talking";
	}
}

/* The connection broke (lost, timed out, garbage): before MAIL try the next address, after it defer. */
static void conv_failed(struct smtpc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conv_failed(struct smtpc *c, const char *fmt, ...)
{
	va_list ap;
	char why[256];

	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	if (c->j == NULL) {
		c->st = C_CLOSED;
		return;
	}
	if (c->st < C_MAIL) {
		log_info(c->j->route.transport, "%s: %s", c->j->queue_id, why);
		set_err(c, 0, "4.4.2", "%s", why);
		close_conn(c);
		c->relay[0] = '\0';
		c->ai++;
		next_address(c);
		return;
	}
	set_err(c, 0, "4.4.2", "%s", why);
	finish(c);
	c->st = C_CLOSED;
}

/* ---- replies ----------------------------------------------------------------- */

/*
 * The last job on a connection that is not kept: QUIT goes out with whatever is still queued,
 * and the socket is closed without waiting for the 221 or for replies still owed (Postfix's
 * smtp_skip_quit_response = yes, its default). A peer that is slow to answer QUIT held a socket
 * of the budget for nothing: a bench saw 35-39 connections held against a budget of 20. Best
 * effort: a write the socket does not take now is dropped with the connection.
 */
static void quit(struct smtpc *c)
{
	finish(c);
	if (c->tr.fd >= 0 && out_printf(c, "QUIT\r\n") == 0)
		(void)transport_write(&c->tr, c->out + c->outoff, c->outlen - c->outoff);
	c->st = C_CLOSED;
}

/*
 * The transaction is over and the connection is healthy: keep it for the next job (RSET, then
 * idle) unless caching is off, the connection is too old or used up (Postfix's
 * smtp_connection_reuse_time_limit and _count_limit: the count is of reuses), the peer said 421,
 * or it is a plain-text retry after a failed STARTTLS (that is allowed per message, by its age:
 * another message must not inherit it).
 */
static void txn_end(struct smtpc *c)
{
	if (!c->cache_on || c->j == NULL || c->tr.fd < 0 || c->plain_hi >= 0 || c->rep.code == 421 ||
	    now_f() - c->born >= c->t_reuse || (c->reuse_count > 0 && c->uses > c->reuse_count) ||
	    out_printf(c, "RSET\r\n") < 0) {
		quit(c);
		return;
	}
	c->st = C_RSET;
	arm(c, c->t_rset);
}

/* RSET answered 250: idle in the cache, then the job goes back (the next one may take this). */
static void go_idle(struct smtpc *c)
{
	struct smtpc *o;

	c->st = C_IDLE;
	c->idle_since = now_f();
	arm(c, c->t_cache);
	finish(c);
	while (n_idle() > SMTPC_IDLE_MAX && (o = oldest_idle()) != NULL && o != c)
		drop_idle(o);
}

/* The connection's facts and the job's progress, for a job on a new connection. */
static void conn_reset(struct smtpc *c)
{
	c->peer[0] = c->relay[0] = c->err[0] = c->err_dsn[0] = '\0';
	c->err_perm = 0;
	c->ext = 0;
	c->peer_size = 0;
	c->reached = c->tried = 0;
	c->hi = c->ai = c->nhosts = c->naddrs = 0;
	c->plain_hi = c->plain_ai = -1;
	c->unix_path[0] = c->domain[0] = '\0';
	c->uses = 0;
	c->reused = 0;
}

static void job_reset(struct smtpc *c)
{
	c->rcpt_sent = c->rcpt_i = c->naccepted = c->dot_i = 0;
	c->pipelined = 0;
	c->err[0] = c->err_dsn[0] = '\0';
	c->err_perm = 0;
}

/*
 * A cached connection that is dead when the job speaks (lost before any reply to MAIL, or 421):
 * the peer closed it while idle, which says nothing about the destination (Postfix does not count
 * it either). The job starts over on a new connection, once: that one is an ordinary attempt.
 */
static void retry_fresh(struct smtpc *c, const char *why)
{
	log_info(c->j->route.transport, "%s: cached connection to %s: %s: trying a new connection", c->j->queue_id,
	    c->peer, why);
	close_conn(c);
	conn_reset(c);
	job_reset(c);
	memset(c->settled, 0, (size_t)c->j->n);
	memset(c->accepted, 0, (size_t)c->j->n);
	start_route(c);
}

static void lost_conn(struct smtpc *c)
{
	if (c->reused && (c->st == C_MAIL || c->st == C_SCAN) && c->j) {
		retry_fresh(c, "lost connection");
		return;
	}
	conv_failed(c, "lost connection with %s while %s", c->peer, doing(c));
}

/*
 * RCPT for target i into the output buffer: 0 queued, 1 no room now (nothing queued: more
 * room comes as the peer takes what is queued), -1 it cannot fit even in an empty buffer
 * (the conversation failed).
 */
static int send_rcpt(struct smtpc *c, int i)
{
	struct agent_job *j = c->j;
	const struct spool_rcpt *r = j->env_rcpt ? &j->env_rcpt[j->rcpt[i]] : NULL;
	const char *addr = j->t[i]->addr;
	char gen[1024];
	size_t mark;
	int rc;

	if (c->generic && (rc = smtp_generic_addr(c->generic, addr, gen, sizeof gen)) != 0) {
		if (rc < 0) {
			conv_failed(c, "local problem: smtp_generic_maps lookup error for %s", addr);
			return -1;
		}
		addr = gen;
	}
	out_compact(c);
	mark = c->outlen;
	rc = out_printf(c, "RCPT TO:<%s>", addr);

	if (c->lmtp == 0 && (c->ext & SMTP_EXT_DSN) && r) {
		if (r->notify & DSN_NOTIFY_NEVER)
			rc |= out_printf(c, " NOTIFY=NEVER");
		else if (r->notify)
			rc |= out_printf(c, " NOTIFY=%s%s%s%s%s",
			    r->notify & DSN_NOTIFY_SUCCESS ? "SUCCESS" : "",
			    (r->notify & DSN_NOTIFY_SUCCESS) && (r->notify & (DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY)) ? "," : "",
			    r->notify & DSN_NOTIFY_FAILURE ? "FAILURE" : "",
			    (r->notify & DSN_NOTIFY_FAILURE) && (r->notify & DSN_NOTIFY_DELAY) ? "," : "",
			    r->notify & DSN_NOTIFY_DELAY ? "DELAY" : "");
		if (r->orcpt && strchr(r->orcpt, ';')) {
			const char *semi = strchr(r->orcpt, ';');
			rc |= out_printf(c, " ORCPT=%.*s;", (int)(semi - r->orcpt), r->orcpt);
			rc |= out_xtext(c, semi + 1);
		}
	}
	rc |= out_printf(c, "\r\n");
	if (rc < 0) {
		c->outlen = mark;
		if (mark > 0)
			return 1;
		conv_failed(c, "local problem: RCPT command longer than the command buffer");
		return -1;
	}
	c->rcpt_sent++;
	return 0;
}

/*
 * PIPELINING (RFC 2920): the RCPTs go out in windows, as many as the output buffer holds;
 * more as the peer takes them (do_write) and as replies come (handle_reply). A batch of any
 * size fits, one window after another; the replies are matched in order all the same.
 */
static void rcpt_more(struct smtpc *c)
{
	while (c->pipelined && c->j && (c->st == C_MAIL || c->st == C_RCPT) && c->rcpt_sent < c->j->n)
		if (send_rcpt(c, c->rcpt_sent) != 0)
			return;
}

static int needs_utf8(const struct agent_job *j)
{
	const unsigned char *p;
	int i;

	for (p = (const unsigned char *)j->src.sender; p && *p; p++)
		if (*p >= 0x80)
			return 1;
	for (i = 0; i < j->n; i++)
		for (p = (const unsigned char *)j->t[i]->addr; *p; p++)
			if (*p >= 0x80)
				return 1;
	return 0;
}

/*
 * The next slice of the body scan (is the message 8-bit; can it be converted), at most
 * SMTPC_SCAN bytes per loop iteration; it runs from the job's start, beside the DNS lookups
 * and the handshakes. Done: a session waiting at C_SCAN sends MAIL. A read error defers the job.
 */
static void scan_step(struct smtpc *c)
{
	int rc;

	if (c->j == NULL || c->body.scan_done)
		return;
	rc = smtpc_body_scan(&c->body, &c->j->src, SMTPC_SCAN);
	if (rc < 0) {
		set_err(c, 0, "4.3.0", "cannot read queue file: %s", strerror(errno));
		log_warning(c->j->route.transport, "%s: %s", c->j->queue_id, c->err);
		finish(c);
		if (c->st == C_SCAN)
			quit(c);
		else if (c->st < C_MAIL)
			c->st = C_CLOSED;   /* a connect or lookup in flight needs its job */
		return;
	}
	if (rc == 0) {
		ev_timer_set(&c->scan_w, 0., 0.);
		ev_timer_start(c->loop, &c->scan_w);
		return;
	}
	if (c->st == C_SCAN)
		start_mail(c);
}

static void scan_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct smtpc *c = (struct smtpc *)((char *)w - offsetof(struct smtpc, scan_w));

	(void)loop;
	(void)revents;
	scan_step(c);
	if (c->st != C_CLOSED && c->tr.fd >= 0) {
		do_write(c);
		if (c->st != C_CLOSED && c->tr.fd >= 0)
			watch(c);
	}
	reap(c);
}

/* A new job on this session: its scan starts (the first slice now). */
static void scan_start(struct smtpc *c)
{
	ev_timer_stop(c->loop, &c->scan_w);
	smtpc_body_scan_init(&c->body);
	scan_step(c);
}

/*
 * 8BITMIME (RFC 6152): BODY=8BITMIME only for 8-bit mail (a byte >= 0x80 anywhere) to a peer
 * that offers it. To a peer without it, an 8-bit body is converted to quoted-printable, as
 * Postfix does, unless disable_mime_output_conversion; 8-bit bytes in headers only, and bodies
 * this version cannot convert (multipart, message/..., encoded), go as they are.
 */
static void choose_body(struct smtpc *c)
{
	c->body_qp = 0;
	if (!c->body.any8 || (c->ext & SMTP_EXT_8BITMIME) || c->no_conv)
		return;
	if (c->body.verdict == MIME_DG_CONVERT)
		c->body_qp = 1;
	else if (c->body.verdict == MIME_DG_CANNOT)
		log_info(c->j->route.transport, "%s: host %s does not offer 8BITMIME and this version cannot "
		    "convert this MIME body (multipart or encoded): sent as is", c->j->queue_id, c->peer);
}

/*
 * smtp_generic_maps on the envelope: the sender rewritten into c's buffer, every recipient
 * looked up once now, so a table error defers the whole message before MAIL (send_rcpt
 * rewrites them again as they go out). 0, or -1 (deferred, QUIT said).
 */
static int generic_envelope(struct smtpc *c, const char **sender)
{
	char tmp[1024];
	int i, rc = smtp_generic_addr(c->generic, *sender, c->gen_sender, sizeof c->gen_sender);

	if (rc == 1)
		*sender = c->gen_sender;
	for (i = 0; rc >= 0 && i < c->j->n; i++)
		rc = smtp_generic_addr(c->generic, c->j->t[i]->addr, tmp, sizeof tmp);
	if (rc >= 0)
		return 0;
	set_err(c, 0, "4.3.0", "smtp_generic_maps: table lookup error");
	log_warning(c->j->route.transport, "%s: %s", c->j->queue_id, c->err);
	quit(c);
	return -1;
}

static void start_mail(struct smtpc *c)
{
	struct agent_job *j = c->j;
	const char *sender = j->src.sender ? j->src.sender : "";
	int rc, i, utf8 = needs_utf8(j);

	if (!c->body.scan_done) {
		c->st = C_SCAN;     /* scan_step sends MAIL once it knows the body */
		arm(c, c->t_mail);
		return;
	}
	j->conn_use = ++c->uses;
	if ((c->ext & SMTP_EXT_SIZE) && c->peer_size > 0 && (unsigned long long)msg_src_len(&j->src) > c->peer_size) {
		/* Postfix's words (smtp_proto.c); a permanent failure, before any envelope goes out */
		settle_rest(c, '5', "5.3.4", "");
		for (i = 0; i < j->n; i++)
			snprintf(j->t[i]->reason, sizeof j->t[i]->reason,
			    "message size %lld exceeds size limit %llu of server %.150s",
			    (long long)msg_src_len(&j->src), c->peer_size, c->peer);
		txn_end(c);
		return;
	}
	if (utf8 && !(c->ext & SMTP_EXT_SMTPUTF8)) {
		for (i = 0; i < j->n; i++)
			settle(c, i, '5', "5.6.7", "SMTPUTF8 is required, but was not offered by host %s", c->peer);
		txn_end(c);
		return;
	}
	if (c->generic && generic_envelope(c, &sender) < 0)
		return;
	choose_body(c);
	rc = out_printf(c, "MAIL FROM:<%s>", sender);
	if (c->ext & SMTP_EXT_SIZE)
		rc |= out_printf(c, " SIZE=%lld", (long long)msg_src_len(&j->src));   /* late headers too */
	if ((c->ext & SMTP_EXT_8BITMIME) && c->body.any8)
		rc |= out_printf(c, " BODY=8BITMIME");
	if (utf8)
		rc |= out_printf(c, " SMTPUTF8");
	if (!c->lmtp && (c->ext & SMTP_EXT_DSN)) {
		if (j->dsn_ret)
			rc |= out_printf(c, " RET=%s", j->dsn_ret == DSN_RET_FULL ? "FULL" : "HDRS");
		if (j->envid) {
			rc |= out_printf(c, " ENVID=");
			rc |= out_xtext(c, j->envid);
		}
	}
	rc |= out_printf(c, "\r\n");
	if (rc < 0) {
		conv_failed(c, "local problem: command buffer full");
		return;
	}
	c->st = C_MAIL;
	c->pipelined = (c->ext & SMTP_EXT_PIPELINING) != 0;
	arm(c, c->t_mail);
	rcpt_more(c);       /* RFC 2920: MAIL and the RCPTs that fit in one write; DATA once all are answered */
}

static void begin_data(struct smtpc *c)
{
	if (c->naccepted == 0) {
		txn_end(c);    /* every RCPT refused: the connection is as good as before */
		return;
	}
	(void)out_printf(c, "DATA\r\n");
	c->st = C_DATA;
	arm(c, c->t_data_init);
}

/* The reply the command hoped for (2xx to RCPT or the end of data): the target is sent. */
static void reply_sent(struct smtpc *c, int i)
{
	char dsn[8];

	smtp_reply_dsn(&c->rep, dsn, sizeof dsn);
	settle(c, i, '2', dsn, "%s", c->rep.text);
	/*
	 * RFC 3461 6.2/4.2: a next hop that offers DSN was given NOTIFY and reports
	 * success itself; one without it gets Postfix's "relayed" notice from us. An
	 * LMTP server is the final delivery ("delivered"), NOTIFY never passed on.
	 */
	if (!c->lmtp) {
		const struct agent_job *j = c->j;
		const struct spool_rcpt *r = j->env_rcpt ? &j->env_rcpt[j->rcpt[i]] : NULL;

		/* passed on only when NOTIFY went with the RCPT (rcpt_line: DSN offered, NOTIFY set) */
		j->t[i]->hop_dsn = (c->ext & SMTP_EXT_DSN) && r && r->notify ? TGT_HOP_PASSED : TGT_HOP_RELAYED;
	}
}

/*
 * Any other reply: 5xx bounces; 4xx, and every class the command does not expect (a 2xx to
 * DATA, a 3xx to MAIL or RCPT or the end of data), defers -- never a delivery. Postfix's
 * smtp_check_code treats an unexpected code as a protocol error, a soft one.
 */
static void reply_failed(struct smtpc *c, int i, const char *cmd)
{
	char dsn[8];

	smtp_reply_dsn(&c->rep, dsn, sizeof dsn);
	settle(c, i, c->rep.code / 100 == 5 ? '5' : '4', dsn, "host %s said: %s (in reply to %s command)",
	    c->peer, c->rep.text, cmd);
}

/* This server will not do (no STARTTLS where TLS is required, TLS failed): next address, else defer. */
static void host_failed(struct smtpc *c, const char *dsn, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void host_failed(struct smtpc *c, const char *dsn, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof c->err, fmt, ap);
	va_end(ap);
	snprintf(c->err_dsn, sizeof c->err_dsn, "%s", dsn);
	c->err_perm = 0;
	log_info(c->j->route.transport, "%s: %s", c->j->queue_id, c->err);
	close_conn(c);
	c->relay[0] = '\0';
	c->ai++;
	next_address(c);
}

static void smtp_sasl_clear_line(char *line, size_t n)
{
	volatile char *p = line;

	while (n--)
		*p++ = 0;
}

/*
 * AUTH when smtp_sasl_auth_enable and the server offers it and credentials exist for it
 * (Postfix's rules, queue/smtp_sasl.h); else straight to MAIL. The options in force are the
 * TLS set inside TLS.
 */
static void start_auth(struct smtpc *c)
{
	char user[SMTP_SASL_FIELD_MAX + 1], pass[SMTP_SASL_FIELD_MAX + 1], line[SMTP_SASL_LINE_MAX];
	int rc, mech;

	if (!c->sasl_on || sasl_cache == NULL || !(c->ext & SMTP_EXT_AUTH)) {
		start_mail(c);
		return;
	}
	rc = smtp_sasl_lookup(sasl_cache, c->hosts[c->hi].name, c->j->route.nexthop, user, pass);
	if (rc == 0) {
		start_mail(c);
		return;
	}
	if (rc < 0) {
		set_err(c, 0, "4.3.0", "smtp_sasl_password_maps: lookup error for %s", c->hosts[c->hi].name);
		log_warning(c->j->route.transport, "%s: %s", c->j->queue_id, c->err);
		smtp_sasl_clear_line(pass, sizeof pass);
		quit(c);
		return;
	}
	mech = smtp_sasl_choose(c->rep.auth, strlen(c->rep.auth), c->tls_on ? c->sasl_tls_opts : c->sasl_opts);
	if (mech == SMTP_SASL_MECH_NONE || smtp_sasl_start(&c->sasl, mech, user, pass, line, sizeof line) < 0) {
		smtp_sasl_clear_line(pass, sizeof pass);
		smtp_sasl_clear(&c->sasl);
		host_failed(c, "4.7.0", "SASL authentication failed; cannot authenticate to server %s: no mechanism "
		    "available", c->peer);
		return;
	}
	smtp_sasl_clear_line(pass, sizeof pass);
	(void)out_printf(c, "%s", line);
	smtp_sasl_clear_line(line, sizeof line);
	c->st = C_AUTH;
	arm(c, c->t_helo);
}

/*
 * STARTTLS failed with this server (refused, or the handshake): Postfix's rule
 * (tls_plaintext_fallback_ok): at may, for a message that has waited minimal_backoff_time,
 * the same address again in plain text; else this server failed, 4.7.5.
 */
static void tls_failed(struct smtpc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tls_failed(struct smtpc *c, const char *fmt, ...)
{
	va_list ap;
	char why[300], user[SMTP_SASL_FIELD_MAX + 1], pass[SMTP_SASL_FIELD_MAX + 1];
	int creds = 0;

	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	if (c->sasl_on && sasl_cache) {
		/* never a password in clear: credentials for this server (or a lookup error) forbid the fallback */
		creds = smtp_sasl_lookup(sasl_cache, c->hosts[c->hi].name, c->j->route.nexthop, user, pass) != 0;
		smtp_sasl_clear_line(pass, sizeof pass);
	}
	if (tls_plaintext_fallback_ok(c->tls_level, (long long)(time(NULL) - c->j->arrival), c->min_backoff, creds)) {
		log_info(c->j->route.transport, "%s: %s: trying %s again without STARTTLS", c->j->queue_id, why, c->peer);
		set_err(c, 0, "4.7.5", "%s", why);
		close_conn(c);
		c->relay[0] = '\0';
		c->plain_hi = c->hi;
		c->plain_ai = c->ai;
		next_address(c);
		return;
	}
	host_failed(c, "4.7.5", "%s", why);
}

/*
 * After the 220 to STARTTLS: the client side of TLS on the same socket. SNI is the MX host
 * name (the transport sends none for an address literal); the certificate is checked only at
 * verify (that name) and secure (the next-hop domain), as the library defines the levels.
 */
static void start_tls(struct smtpc *c)
{
	const char *verify = NULL;

	if (c->tls_level == TLS_LEVEL_VERIFY)
		verify = c->hosts[c->hi].name;
	else if (c->tls_level == TLS_LEVEL_SECURE)
		verify = c->domain;
	if (c->tls == NULL || transport_tls_client(&c->tr, c->tls, c->hosts[c->hi].name, verify) < 0) {
		/* our shortage (no context, no memory): like a failed handshake, for this server */
		tls_failed(c, "Cannot start TLS: handshake failure (%s)",
		    c->tls == NULL ? "no client TLS context" : strerror(errno));
		return;
	}
	c->st = C_TLS;
	arm(c, c->t_helo);
}

/* One step of the handshake; done: Postfix's log line, then EHLO again inside TLS (RFC 3207 4.2). */
static void tls_step(struct smtpc *c)
{
	char why[256], line[600];
	int rc = transport_handshake(&c->tr, why, sizeof why);
	const struct smtpc_addr *a = &c->addrs[c->ai];

	if (rc == 0)
		return;
	if (rc < 0) {
		log_info(c->j->route.transport, "%s: TLS handshake with %s failed: %s", c->j->queue_id, c->peer, why);
		if (c->sts.mode == MTA_STS_ENFORCE)
			tls_failed(c, "MTA-STS policy enforce for %s: Cannot start TLS: %s", c->domain, why);
		else
			tls_failed(c, "Cannot start TLS: handshake failure");
		return;
	}
	if (c->sts.mode == MTA_STS_TESTING && c->tls_level <= TLS_LEVEL_ENCRYPT &&
	    (transport_peer_trust(&c->tr) < TRANSPORT_TRUSTED ||
	    !transport_peer_name_ok(&c->tr, c->hosts[c->hi].name)))
		/* RFC 8461 5: testing mode reports (here: logs) what enforce would have refused */
		log_info(c->j->route.transport, "%s: MTA-STS policy testing for %s: certificate verification failed "
		    "for %s (delivering anyway: testing mode)", c->j->queue_id, c->domain, c->hosts[c->hi].name);
	transport_describe_peer(&c->tr, c->hosts[c->hi].name, a->text, (unsigned)c->port, line, sizeof line);
	log_info(c->j->route.transport, "%s", line);
	c->tls_on = 1;
	c->ext = 0;
	(void)out_printf(c, "EHLO %s\r\n", c->helo_name);
	c->st = C_EHLO;
	smtp_reply_init(&c->rep, 1);
	arm(c, c->t_helo);
}

static void handle_reply(struct smtpc *c)
{
	struct agent_job *j = c->j;
	int cls = c->rep.code / 100, i;
	char dsn[8];

	smtp_reply_dsn(&c->rep, dsn, sizeof dsn);
	switch (c->st) {
	case C_GREETING:
		if (cls != 2) {
			/* Postfix: the next MX is tried after a 4xx or 5xx greeting */
			set_err(c, 0, dsn, "host %s refused to talk to me: %s", c->peer, c->rep.text);
			log_info(j->route.transport, "%s: %s", j->queue_id, c->err);
			close_conn(c);
			c->relay[0] = '\0';
			c->ai++;
			next_address(c);
			return;
		}
		(void)out_printf(c, "%s %s\r\n", c->lmtp ? "LHLO" : "EHLO", c->helo_name);
		c->st = C_EHLO;
		smtp_reply_init(&c->rep, 1);
		arm(c, c->t_helo);
		return;
	case C_EHLO:
		if (cls == 2) {
			c->ext = c->rep.ext;
			c->peer_size = c->rep.size;
			c->reached = 1;
			if (!c->tls_on && c->tls_level >= TLS_LEVEL_MAY && (c->ext & SMTP_EXT_STARTTLS) &&
			    !(c->hi == c->plain_hi && c->ai == c->plain_ai)) {
				(void)out_printf(c, "STARTTLS\r\n");
				c->st = C_STARTTLS;
				arm(c, c->t_helo);
				return;
			}
			if (!c->tls_on && tls_level_required(c->tls_level)) {
				/* Postfix's words; this server fails, the next one may offer it */
				if (c->sts.mode == MTA_STS_ENFORCE)
					host_failed(c, "4.7.4", "MTA-STS policy enforce for %s: TLS is required, but was not "
					    "offered by host %s", c->domain, c->peer);
				else
					host_failed(c, "4.7.4", "TLS is required, but was not offered by host %s", c->peer);
				return;
			}
			if (!c->tls_on && c->sts.mode == MTA_STS_TESTING)
				log_info(j->route.transport, "%s: MTA-STS policy testing for %s: TLS is required, but was not "
				    "offered by host %s (delivering anyway: testing mode)", j->queue_id, c->domain, c->peer);
			start_auth(c);
			return;
		}
		if (!c->lmtp) {
			(void)out_printf(c, "HELO %s\r\n", c->helo_name);
			c->st = C_HELO;
			arm(c, c->t_helo);
			return;
		}
		/* LMTP has no HELO */
		/* fall through */
	case C_HELO:
		if (cls == 2) {
			c->ext = 0;
			c->reached = 1;
			start_mail(c);
			return;
		}
		set_err(c, 0, dsn, "host %s refused to talk to me: %s (in reply to %s command)", c->peer, c->rep.text,
		    c->st == C_HELO ? "HELO" : c->lmtp ? "LHLO" : "EHLO");
		log_info(j->route.transport, "%s: %s", j->queue_id, c->err);
		close_conn(c);
		c->relay[0] = '\0';
		c->ai++;
		next_address(c);
		return;
	case C_STARTTLS:
		if (cls != 2) {
			tls_failed(c, "Cannot start TLS: handshake failure (host %s said: %s)", c->peer, c->rep.text);
			return;
		}
		/* nothing the server sent after its 220 may be read as said under TLS (CVE-2011-0411) */
		c->inlen = 0;
		c->gen++;
		start_tls(c);
		return;
	case C_AUTH: {
		char line[SMTP_SASL_LINE_MAX];
		const char *text = strlen(c->rep.text) >= 4 ? c->rep.text + 4 : "";
		int rc = smtp_sasl_reply(&c->sasl, c->rep.code, text, strlen(text), line, sizeof line);

		if (rc == SMTP_SASL_SEND) {
			(void)out_printf(c, "%s", line);
			smtp_sasl_clear_line(line, sizeof line);
			arm(c, c->t_helo);
			return;
		}
		smtp_sasl_clear(&c->sasl);
		if (rc == SMTP_SASL_OK) {
			start_mail(c);
			return;
		}
		if (rc == SMTP_SASL_REFUSED) {
			/* smtp_sasl_auth_soft_bounce = yes: the mail waits, whatever the code */
			set_err(c, 0, "4.7.0", "SASL authentication failed; server %s said: %s", c->peer, c->rep.text);
			quit(c);
			return;
		}
		host_failed(c, "4.7.0", "SASL authentication failed; unexpected reply from %s: %s", c->peer,
		    c->rep.text);
		return;
	}
	case C_MAIL:
		if (c->reused && c->rep.code == 421) {
			retry_fresh(c, c->rep.text);
			return;
		}
		if (cls != 2) {
			for (i = 0; i < j->n; i++)
				reply_failed(c, i, "MAIL FROM");
			quit(c);   /* the replies owed to pipelined RCPTs are not waited for */
			return;
		}
		c->st = C_RCPT;
		arm(c, c->t_rcpt);
		if (!c->pipelined)
			(void)send_rcpt(c, 0);
		else
			rcpt_more(c);
		return;
	case C_RCPT:
		i = c->rcpt_i++;
		if (cls == 2) {
			c->accepted[i] = 1;
			c->naccepted++;
		} else
			reply_failed(c, i, "RCPT TO");
		if (c->rcpt_i >= j->n) {
			begin_data(c);
			return;
		}
		arm(c, c->t_rcpt);
		if (!c->pipelined)
			(void)send_rcpt(c, c->rcpt_i);
		else
			rcpt_more(c);
		return;
	case C_DATA:
		if (cls != 3) {
			for (i = 0; i < j->n; i++)
				if (c->accepted[i])
					reply_failed(c, i, "DATA");
			quit(c);
			return;
		}
		c->st = C_BODY;
		smtpc_body_begin(&c->body, c->body_qp, c->generic ? generic_header : NULL, c);
		arm(c, c->t_xfer);
		return;
	case C_DOT:
		if (!c->lmtp) {
			for (i = 0; i < j->n; i++)
				if (c->accepted[i]) {
					if (cls == 2)
						reply_sent(c, i);
					else
						reply_failed(c, i, "end of DATA");
				}
			txn_end(c);
			return;
		}
		/* RFC 2033 4.2: one reply per accepted recipient, in RCPT order */
		while (c->dot_i < j->n && !c->accepted[c->dot_i])
			c->dot_i++;
		if (c->dot_i < j->n) {
			if (cls == 2)
				reply_sent(c, c->dot_i);
			else
				reply_failed(c, c->dot_i, "end of DATA");
			c->dot_i++;
		}
		while (c->dot_i < j->n && !c->accepted[c->dot_i])
			c->dot_i++;
		if (c->dot_i >= j->n)
			txn_end(c);
		return;
	case C_RSET:
		if (cls == 2)
			go_idle(c);
		else
			quit(c);   /* refused (or 421): this connection is not kept */
		return;
	default:
		conv_failed(c, "unexpected reply from %s: %s", c->peer, c->rep.text);
		return;
	}
}

/* Replies in the input buffer, line by line; several may wait (pipelining). */
static void parse_input(struct smtpc *c)
{
	size_t start = 0, k;
	unsigned gen = c->gen;

	while (c->st != C_CLOSED && c->gen == gen) {
		char *nl = memchr(c->in + start, '\n', c->inlen - start);
		int rc;

		if (nl == NULL)
			break;
		k = (size_t)(nl - (c->in + start));
		if (k > 0 && c->in[start + k - 1] == '\r')
			k--;
		rc = smtp_reply_line(&c->rep, c->in + start, k);
		start = (size_t)(nl - c->in) + 1;
		if (rc < 0) {
			conv_failed(c, "malformed reply from %s while %s", c->peer, doing(c));
			return;
		}
		if (rc == 1) {
			handle_reply(c);
			smtp_reply_init(&c->rep, c->st == C_EHLO);
		}
	}
	if (c->gen != gen || c->st == C_CLOSED)
		return;
	memmove(c->in, c->in + start, c->inlen - start);
	c->inlen -= start;
	if (c->inlen == sizeof c->in)
		conv_failed(c, "malformed reply from %s: line too long while %s", c->peer, doing(c));
}

/* ---- the socket ----------------------------------------------------------------- */

static void do_write(struct smtpc *c)
{
	while (c->tr.fd >= 0) {
		ssize_t n;

		if (c->st == C_BODY && c->outoff == c->outlen && c->body.dot_added) {
			c->st = C_DOT;
			c->dot_i = 0;
			arm(c, c->t_done);
			return;
		}
		if (c->st == C_BODY && fill_body(c) < 0) {
			/* never finish the message: the peer discards what it got without its dot */
			set_err(c, 0, "4.3.0", "cannot read queue file: %s", strerror(errno));
			log_warning(c->j->route.transport, "%s: %s", c->j->queue_id, c->err);
			finish(c);
			c->st = C_CLOSED;
			return;
		}
		if (c->outoff == c->outlen)
			return;
		if (c->st == C_BODY && c->body.dot_added && transport_reserve_write(&c->tr) < 0) {
			/*
			 * The dot is in this write. Its reply must not need memory: OpenSSL releases its
			 * record buffers while idle, and a read buffer it cannot get once the peer has the
			 * dot loses the 250, so the message would go twice (found by the cached-connection
			 * sweep, test_faults_out.py). Without the buffers the dot is never sent.
			 */
			set_err(c, 0, "4.3.0", "local resource shortage: out of memory before the end of data");
			log_warning(c->j->route.transport, "%s: %s", c->j->queue_id, c->err);
			finish(c);
			c->st = C_CLOSED;
			return;
		}
		n = transport_write(&c->tr, c->out + c->outoff, c->outlen - c->outoff);
		if (n < 0) {
			if (errno == EAGAIN)
				return;
			lost_conn(c);
			return;
		}
		c->outoff += (size_t)n;
		if (c->st == C_BODY)
			arm(c, c->t_xfer);   /* smtp_data_xfer_timeout: per write that progressed */
		else if (c->st == C_MAIL || c->st == C_RCPT) {
			rcpt_more(c);        /* the room the peer made takes the next window of RCPTs */
			if (c->st == C_CLOSED)
				return;
		}
	}
}

static void do_read(struct smtpc *c)
{
	unsigned gen = c->gen;

	do {
		ssize_t n = transport_read(&c->tr, c->in + c->inlen, sizeof c->in - c->inlen);

		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			lost_conn(c);
			return;
		}
		c->inlen += (size_t)n;
		parse_input(c);
		/* decrypted bytes TLS holds are not a readable socket: take them now */
	} while (c->st != C_CLOSED && c->st != C_TLS && c->gen == gen && c->tr.fd >= 0 &&
	    transport_pending(&c->tr) > 0);
}

static void connected(struct smtpc *c)
{
	int one = 1;
	const struct smtpc_addr *a = &c->addrs[c->ai];

	if (a->sa.ss_family != AF_UNIX)
		(void)setsockopt(c->tr.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (a->sa.ss_family == AF_UNIX)
		snprintf(c->relay, sizeof c->relay, "%s", c->peer);
	else
		snprintf(c->relay, sizeof c->relay, "%s:%d", c->peer, c->port);
	c->st = C_GREETING;
	c->born = now_f();
	c->uses = 0;
	smtp_reply_init(&c->rep, 0);
	arm(c, c->t_helo);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct smtpc *c = (struct smtpc *)((char *)w - offsetof(struct smtpc, io));

	if (c->st == C_CONNECT) {
		int err = 0;
		socklen_t len = sizeof err;

		if (getsockopt(c->tr.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err) {
			char why[600];
			snprintf(why, sizeof why, "connect to %s:%d: %s", c->peer, c->port, strerror(err));
			if (c->addrs[c->ai].sa.ss_family == AF_UNIX)
				snprintf(why, sizeof why, "connect to %s: %s", c->unix_path, strerror(err));
			log_info(c->j->route.transport, "%s: %s", c->j->queue_id, why);
			set_err(c, 0, "4.4.1", "%s", why);
			close_conn(c);
			c->ai++;
			next_address(c);
		} else
			connected(c);
	} else if (c->st == C_TLS) {
		tls_step(c);
	} else {
		if (revents & EV_READ)
			do_read(c);
		if (c->st != C_CLOSED && c->tr.fd >= 0 && (revents & EV_WRITE))
			do_write(c);
	}
	if (c->st != C_CLOSED && c->tr.fd >= 0) {
		do_write(c);
		if (c->st != C_CLOSED && c->tr.fd >= 0)
			watch(c);
	}
	reap(c);
}

static void tmr_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct smtpc *c = (struct smtpc *)((char *)w - offsetof(struct smtpc, tmr));

	if (c->st == C_CONNECT) {
		char why[600];
		snprintf(why, sizeof why, "connect to %s:%d: Connection timed out", c->peer, c->port);
		log_info(c->j->route.transport, "%s: %s", c->j->queue_id, why);
		set_err(c, 0, "4.4.1", "%s", why);
		close_conn(c);
		c->ai++;
		next_address(c);
	} else if (c->st == C_IDLE)
		quit(c);   /* smtp_connection_cache_time_limit without a job */
	else
		conv_failed(c, "conversation with %s timed out while %s", c->peer, doing(c));
	if (c->st != C_CLOSED && c->tr.fd >= 0) {
		do_write(c);
		if (c->st != C_CLOSED && c->tr.fd >= 0)
			watch(c);
	}
	reap(c);
}

/*
 * The resource a refused socket()/connect() ran out of, for the warning and the ledger's failure
 * count: EMFILE is the process's descriptor limit, ENFILE the file table (OpenVZ's numfile), and
 * ENOMEM/ENOBUFS the socket objects (OpenVZ refuses numtcpsock/numothersock with ENOMEM).
 */
static const char *shortage_of(int e, int is_unix)
{
	if (e == EMFILE)
		return "RLIMIT_NOFILE";
	if (e == ENFILE)
		return "numfile";
	if (e == EAGAIN)
		return "local ports";
	return is_unix ? "numothersock" : "numtcpsock";
}

/* Try addrs[ai]: 0 started (or failed over to the next), -1 local resource failure (job finished). */
static void try_connect(struct smtpc *c)
{
	const struct smtpc_addr *a = &c->addrs[c->ai], *b;
	struct smtpc *o;
	int fd, e;
	const char *res;

	c->tried++;
	/* a socket kept idle gives way to a delivery that needs one (the cap is the budget's) */
	if (!fd_room(a->sa.ss_family == AF_UNIX ? FD_SOCK : FD_TCP, 1) && (o = oldest_idle()) != NULL)
		drop_idle(o);
	if (a->sa.ss_family == AF_UNIX)
		snprintf(c->peer, sizeof c->peer, "%s[%s]", c->myhostname, c->unix_path);
	else
		snprintf(c->peer, sizeof c->peer, "%s[%s]", c->hosts[c->hi].name, a->text);
	fd = fd_socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		e = errno;
		/*
		 * EMFILE is also the funnel's cap, which a re-sample that saw the container's sockets
		 * taken has shrunk before any socket() failed: name the pool that set it, not RLIMIT_NOFILE
		 */
		if (e != EMFILE || (res = limits_socket_refusal(a->sa.ss_family == AF_UNIX)) == NULL)
			res = shortage_of(e, a->sa.ss_family == AF_UNIX);
		/* our shortage, not the destination's: the batch waits (no slow-start penalty) */
		log_warning(c->j->route.transport, "%s: %s exhausted: cannot make a %s socket for %s: %s: "
		    "delivery deferred", c->j->queue_id, res,
		    a->sa.ss_family == AF_UNIX ? "unix" : "TCP", c->peer, strerror(e));
		limits_note_failure(res, e);
		set_err(c, 0, "4.3.0", "local resource shortage: socket: %s", strerror(e));
		finish(c);
		c->st = C_CLOSED;
		return;
	}
	transport_init(&c->tr, fd);
	if ((b = a->sa.ss_family == AF_INET ? &c->bind4 : a->sa.ss_family == AF_INET6 ? &c->bind6 : NULL) != NULL &&
	    b->len > 0 && bind(fd, (const struct sockaddr *)&b->sa, b->len) < 0) {
		e = errno;
		/* ours, not the destination's: the batch waits for the parameter to be fixed */
		log_warning(c->j->route.transport, "%s: cannot bind to %s %s: %s: delivery deferred", c->j->queue_id,
		    a->sa.ss_family == AF_INET ? "smtp_bind_address" : "smtp_bind_address6", b->text, strerror(e));
		set_err(c, 0, "4.3.0", "local configuration error: cannot bind to %s: %s", b->text, strerror(e));
		close_conn(c);
		finish(c);
		c->st = C_CLOSED;
		return;
	}
	if (connect(fd, (const struct sockaddr *)&a->sa, a->len) < 0 && errno != EINPROGRESS) {
		e = errno;
		/*
		 * EAGAIN: for TCP no local port is free (ours); for a unix socket the listener's
		 * backlog is full (the destination's: a connection failure like a refusal).
		 */
		if (e == ENOMEM || e == ENOBUFS || e == EMFILE || e == ENFILE ||
		    (e == EAGAIN && a->sa.ss_family != AF_UNIX)) {
			log_warning(c->j->route.transport, "%s: %s exhausted: connect to %s: %s: delivery deferred",
			    c->j->queue_id, shortage_of(e, a->sa.ss_family == AF_UNIX), c->peer, strerror(e));
			limits_note_failure(shortage_of(e, a->sa.ss_family == AF_UNIX), e);
			set_err(c, 0, "4.3.0", "local resource shortage: connect: %s", strerror(e));
			close_conn(c);
			finish(c);
			c->st = C_CLOSED;
			return;
		}
		if (a->sa.ss_family == AF_UNIX)
			set_err(c, 0, "4.4.1", "connect to %s: %s", c->unix_path, strerror(e));
		else
			set_err(c, 0, "4.4.1", "connect to %s:%d: %s", c->peer, c->port, strerror(e));
		log_info(c->j->route.transport, "%s: %s", c->j->queue_id, c->err);
		close_conn(c);
		c->ai++;
		next_address(c);
		return;
	}
	c->st = C_CONNECT;
	arm(c, c->t_connect);
	watch(c);
}

/* ---- resolving ------------------------------------------------------------------- */

static void lookup(struct smtpc *c, const char *name, enum dns_type t);

static int add_literal(struct smtpc *c, const char *text)
{
	struct smtpc_addr *a = &c->addrs[0];
	struct sockaddr_in *s4 = (struct sockaddr_in *)&a->sa;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->sa;

	memset(a, 0, sizeof *a);
	if (strncasecmp(text, "ipv6:", 5) == 0)
		text += 5;
	if (inet_pton(AF_INET, text, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)c->port);
		a->len = sizeof *s4;
	} else if (inet_pton(AF_INET6, text, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)c->port);
		a->len = sizeof *s6;
	} else
		return -1;
	inet_ntop(a->sa.ss_family, a->sa.ss_family == AF_INET ? (void *)&s4->sin_addr : (void *)&s6->sin6_addr,
	    a->text, sizeof a->text);
	c->naddrs = 1;
	c->ai = 0;
	return 0;
}

/* The next host of the list: its addresses, A then AAAA. */
static void next_host(struct smtpc *c)
{
	c->naddrs = c->ai = 0;
	if (c->hi >= c->nhosts || c->tried >= c->addr_limit) {
		give_up(c);
		return;
	}
	if (add_literal(c, c->hosts[c->hi].name) == 0) {
		next_address(c);
		return;
	}
	c->a_status = c->aaaa_status = -1;
	/* inet_protocols: only the record types of the families in use are asked for */
	lookup(c, c->hosts[c->hi].name, c->inet4 ? DNS_A : DNS_AAAA);
}

static int family_ok(const struct smtpc *c, int family)
{
	return family == AF_UNIX || (family == AF_INET && c->inet4) || (family == AF_INET6 && c->inet6);
}

static void next_address(struct smtpc *c)
{
	if (c->j == NULL) {
		c->st = C_CLOSED;
		return;
	}
	while (c->ai < c->naddrs && !family_ok(c, c->addrs[c->ai].sa.ss_family)) {
		/* an address literal of a family inet_protocols leaves out */
		set_err(c, 0, "4.4.1", "connect to %s[%s]:%d: Address family not supported by inet_protocols",
		    c->hosts[c->hi].name, c->addrs[c->ai].text, c->port);
		c->ai++;
	}
	if (c->ai < c->naddrs && c->tried < c->addr_limit) {
		try_connect(c);
		return;
	}
	c->hi++;
	next_host(c);
}

static void add_addrs(struct smtpc *c, const struct dns_answer *a)
{
	int i;

	for (i = 0; i < a->n && c->naddrs < SMTPC_ADDRS; i++) {
		struct smtpc_addr *x = &c->addrs[c->naddrs];
		memset(x, 0, sizeof *x);
		if (a->rr[i].family == AF_INET) {
			struct sockaddr_in *s = (struct sockaddr_in *)&x->sa;
			s->sin_family = AF_INET;
			s->sin_port = htons((uint16_t)c->port);
			memcpy(&s->sin_addr, a->rr[i].addr, 4);
			x->len = sizeof *s;
		} else if (a->rr[i].family == AF_INET6) {
			struct sockaddr_in6 *s = (struct sockaddr_in6 *)&x->sa;
			s->sin6_family = AF_INET6;
			s->sin6_port = htons((uint16_t)c->port);
			memcpy(&s->sin6_addr, a->rr[i].addr, 16);
			x->len = sizeof *s;
		} else
			continue;
		inet_ntop(a->rr[i].family, a->rr[i].addr, x->text, sizeof x->text);
		c->naddrs++;
	}
}

/*
 * RFC 8461 4.1: only MX hosts the policy's mx patterns cover are candidates. enforce drops the
 * others (none left: the batch waits, 4.7.0); testing keeps them and logs. -1: the job ended.
 */
static int sts_filter(struct smtpc *c)
{
	int i, k = 0, enforce = c->sts.mode == MTA_STS_ENFORCE;
	char first[DNS_NAME_MAX + 1] = "";

	for (i = 0; i < c->nhosts; i++) {
		if (mta_sts_mx_match(&c->sts, c->hosts[i].name)) {
			c->hosts[k++] = c->hosts[i];
			continue;
		}
		log_info(c->j->route.transport, "%s: MTA-STS policy %s for %s: %s not covered%s", c->j->queue_id,
		    mta_sts_mode_name(c->sts.mode), c->domain, c->hosts[i].name,
		    enforce ? "" : " (delivering anyway: testing mode)");
		if (!*first)
			snprintf(first, sizeof first, "%s", c->hosts[i].name);
		if (!enforce)
			c->hosts[k++] = c->hosts[i];
	}
	c->nhosts = k;
	if (k == 0) {
		set_err(c, 0, "4.7.0", "MTA-STS policy enforce for %s: MX host %s not covered by the policy", c->domain,
		    first);
		give_up(c);
		return -1;
	}
	return 0;
}

static int mx_cmp(const void *x, const void *y)
{
	const struct smtpc_host *a = x, *b = y;
	return a->pref < b->pref ? -1 : a->pref > b->pref;
}

static void mx_answer(struct smtpc *c, const struct dns_answer *a)
{
	int i, k;

	if (a->status == DNS_NXDOMAIN) {
		set_err(c, 1, "5.4.4", "Host or domain name not found. Name service error for name=%s type=MX: "
		    "Host not found", c->domain);
		give_up(c);
		return;
	}
	if (a->status == DNS_TEMPFAIL) {
		set_err(c, 0, "4.4.3", "Host or domain name not found. Name service error for name=%s type=MX: "
		    "Host not found, try again", c->domain);
		give_up(c);
		return;
	}
	c->nhosts = c->hi = 0;
	if (a->status == DNS_FOUND) {
		/* RFC 7505: a single MX whose exchange is the root: the domain takes no mail */
		if (a->n == 1 && (a->rr[0].text[0] == '\0' || strcmp(a->rr[0].text, ".") == 0)) {
			set_err(c, 1, "5.1.10", "Domain %s does not accept mail (nullMX)", c->domain);
			give_up(c);
			return;
		}
		/*
		 * The SMTPC_HOSTS most preferred of the whole answer (not its first ones): a full list
		 * gives its least preferred slot to a better record, so the sort below sees the best.
		 */
		for (i = 0; i < a->n; i++) {
			int slot = c->nhosts;
			if (a->rr[i].text[0] == '\0' || strlen(a->rr[i].text) > DNS_NAME_MAX)
				continue;
			if (c->nhosts == SMTPC_HOSTS) {
				for (slot = 0, k = 1; k < c->nhosts; k++)
					if (c->hosts[k].pref > c->hosts[slot].pref)
						slot = k;
				if (a->rr[i].pref >= c->hosts[slot].pref)
					continue;
			} else
				c->nhosts++;
			snprintf(c->hosts[slot].name, sizeof c->hosts[0].name, "%s", a->rr[i].text);
			c->hosts[slot].pref = a->rr[i].pref;
		}
		qsort(c->hosts, (size_t)c->nhosts, sizeof c->hosts[0], mx_cmp);
		/* equal preferences in random order (RFC 5321 5.1), so load spreads */
		for (i = 0; i < c->nhosts; i = k) {
			int m;
			for (k = i + 1; k < c->nhosts && c->hosts[k].pref == c->hosts[i].pref; k++)
				;
			for (m = k - 1; m > i; m--) {
				int r = i + (int)(random() % (m - i + 1));
				struct smtpc_host tmp = c->hosts[m];
				c->hosts[m] = c->hosts[r];
				c->hosts[r] = tmp;
			}
		}
	}
	if (c->nhosts == 0) {
		/* no MX: the domain itself, RFC 5321 5.1 (implicit MX) */
		snprintf(c->hosts[0].name, sizeof c->hosts[0].name, "%s", c->domain);
		c->nhosts = 1;
	}
	if (c->sts.mode != MTA_STS_NONE && sts_filter(c) < 0)
		return;
	next_host(c);
}

static void dns_cb_fn(void *arg, const struct dns_answer *a)
{
	struct smtpc *c = arg;

	c->q = NULL;
	if (c->j == NULL) {
		c->st = C_CLOSED;
		reap(c);
		return;
	}
	if (c->qtype == DNS_MX)
		mx_answer(c, a);
	else if (c->qtype == DNS_A && c->inet6) {
		c->a_status = a->status;
		if (a->status == DNS_FOUND)
			add_addrs(c, a);
		lookup(c, c->hosts[c->hi].name, DNS_AAAA);
	} else {
		if (c->qtype == DNS_A)
			c->a_status = a->status;   /* no AAAA asked (ipv4 only): its status stays -1 */
		else
			c->aaaa_status = a->status;
		if (a->status == DNS_FOUND)
			add_addrs(c, a);
		smtpc_order_addrs(c->addrs, c->naddrs, c->addr_pref, (int)(random() & 1));
		if (c->naddrs == 0) {
			int temp = c->a_status == DNS_TEMPFAIL || c->aaaa_status == DNS_TEMPFAIL;
			/*
			 * A name without addresses is final only when it is the destination itself
			 * ([host], or the implicit MX); an MX host without one defers, and an earlier
			 * host's connection error stays the reason (it says more).
			 */
			int self = !c->use_mx || (c->nhosts == 1 && strcasecmp(c->hosts[0].name, c->domain) == 0);
			int perm = !temp && self && c->tried == 0;

			if (perm || !*c->err)
				set_err(c, perm, perm ? "5.4.4" : "4.4.3", "Host or domain name not found. "
				    "Name service error for name=%s type=%s: Host not found%s",
				    c->hosts[c->hi].name, c->inet4 ? "A" : "AAAA", temp ? ", try again" : "");
		}
		c->ai = 0;
		next_address(c);
	}
	reap(c);
}

static void lookup(struct smtpc *c, const char *name, enum dns_type t)
{
	c->st = C_RESOLVE;
	c->qtype = t;
	if (the_dns == NULL || (c->q = dns_lookup(the_dns, name, t, dns_cb_fn, c)) == NULL) {
		set_err(c, 0, "4.4.3", "Host or domain name not found. Name service error for name=%s type=%s: "
		    "Host not found, try again", name, t == DNS_MX ? "MX" : t == DNS_A ? "A" : "AAAA");
		give_up(c);
	}
}

/* ---- the agent ---------------------------------------------------------------------- */

static int parse_port(const char *s, int *port)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v <= 0 || v > 65535)
		return -1;
	*port = (int)v;
	return 0;
}

/*
 * The next hop, Postfix's forms: smtp/relay "domain", "domain:port" (MX
 * lookup), "[host]", "[host]:port" (no MX); lmtp "unix:/path",
 * "inet:host:port", "inet:[host]:port" (never MX). 0, or -1 (bad syntax).
 */
static int parse_nexthop(struct smtpc *c, const char *hop)
{
	const char *p = hop, *colon;
	size_t n;

	c->port = c->lmtp ? 24 : 25;
	c->use_mx = !c->lmtp;
	if (c->lmtp) {
		if (strncasecmp(p, "unix:", 5) == 0) {
			struct sockaddr_un *u = (struct sockaddr_un *)&c->addrs[0].sa;
			p += 5;
			if (*p == '\0' || strlen(p) >= sizeof u->sun_path)
				return -1;
			snprintf(c->unix_path, sizeof c->unix_path, "%s", p);
			u->sun_family = AF_UNIX;
			memcpy(u->sun_path, p, strlen(p) + 1);
			c->addrs[0].len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(p) + 1);
			snprintf(c->addrs[0].text, sizeof c->addrs[0].text, "unix");
			return 0;
		}
		if (strncasecmp(p, "inet:", 5) == 0)
			p += 5;
	}
	if (*p == '[') {
		const char *close = strchr(p, ']');
		if (close == NULL || close == p + 1 || (size_t)(close - p - 1) > DNS_NAME_MAX)
			return -1;
		n = (size_t)(close - p - 1);
		memcpy(c->domain, p + 1, n);
		c->domain[n] = '\0';
		c->use_mx = 0;
		p = close + 1;
		if (*p == ':' && parse_port(p + 1, &c->port) < 0)
			return -1;
		if (*p != ':' && *p != '\0')
			return -1;
		return 0;
	}
	colon = strrchr(p, ':');
	n = colon ? (size_t)(colon - p) : strlen(p);
	if (n == 0 || n > DNS_NAME_MAX)
		return -1;
	memcpy(c->domain, p, n);
	c->domain[n] = '\0';
	if (colon && parse_port(colon + 1, &c->port) < 0)
		return -1;
	return 0;
}

static double tparam(const struct conf *cf, const char *name, double def)
{
	long long v = cf ? conf_time(cf, name, 0) : -1;
	return v > 0 ? (double)v : def;
}

/* the address parameters of the job's generation (checked when it was loaded) */
static void read_addr_conf(struct smtpc *c, const struct conf *cf)
{
	const char *v;

	c->inet4 = c->inet6 = 1;
	c->addr_pref = 0;
	if (cf == NULL)
		return;
	if (smtpc_parse_inet_protocols(conf_str(cf, "inet_protocols", 0), &c->inet4, &c->inet6) < 0)
		c->inet4 = c->inet6 = 1;
	v = conf_str(cf, "smtp_address_preference", 0);
	c->addr_pref = v && strcasecmp(v, "ipv4") == 0 ? AF_INET : v && strcasecmp(v, "ipv6") == 0 ? AF_INET6 : 0;
	(void)smtpc_parse_bind(conf_str(cf, "smtp_bind_address", 0), AF_INET, &c->bind4);
	(void)smtpc_parse_bind(conf_str(cf, "smtp_bind_address6", 0), AF_INET6, &c->bind6);
}

/*
 * smtp_generic_maps for an SMTP session (LMTP has its own lmtp_generic_maps in Postfix; not
 * here): one set of tables per generation, opened when first needed, referenced by each
 * session. 0, or -1 when they cannot be opened: the mail waits rather than leave unrewritten.
 */
static int open_generic(struct smtpc *c, const struct conf *cf)
{
	const char *v = cf ? conf_str(cf, "smtp_generic_maps", 0) : NULL;

	if (c->lmtp || v == NULL || *v == '\0')
		return 0;
	if (generic_cache == NULL || generic_cache_conf != conf_serial(cf)) {
		char err[256];
		struct smtp_generic *g = smtp_generic_open(cf, err, sizeof err);

		if (g == NULL) {
			set_err(c, 0, "4.3.0", "smtp_generic_maps: %s", err);
			log_warning(c->j->route.transport, "%s: %s", c->j->queue_id, c->err);
			return -1;
		}
		smtp_generic_unref(generic_cache);
		generic_cache = g;
		generic_cache_conf = conf_serial(cf);
	}
	c->generic = smtp_generic_ref(generic_cache);
	return 0;
}

/* Every target of a job that gets no session deferred with reason (4.3.0). */
static void defer_job(struct agent_job *j, const char *reason)
{
	int i;

	for (i = 0; i < j->n; i++) {
		j->t[i]->kind = TGT_DEFER;
		snprintf(j->t[i]->dsn, sizeof j->t[i]->dsn, "4.3.0");
		snprintf(j->t[i]->reason, sizeof j->t[i]->reason, "%s", reason);
	}
	j->t_done = now_f();
	j->done(j);
}

/* smtp_mta_sts_CAfile (empty: the system's bundle) as one context per generation, or NULL. */
static struct tls_ctx *sts_tls(const struct conf *cf, const char *service)
{
	if (sts_tls_cache == NULL || sts_tls_cache_conf != conf_serial(cf)) {
		char err[256];
		const char *ca = cf ? conf_str(cf, "smtp_mta_sts_CAfile", 0) : NULL;
		struct tls_ctx *x = tls_client_new(ca && *ca ? ca : tls_default_ca_file(), err, sizeof err);

		if (x == NULL) {
			log_warning(service, "cannot make the MTA-STS TLS context: %s", err);
			return NULL;
		}
		tls_ctx_unref(sts_tls_cache);
		sts_tls_cache = x;
		sts_tls_cache_conf = conf_serial(cf);
	}
	return sts_tls_cache;
}

/*
 * The policy is known (p NULL: none). enforce: TLS required and the certificate verified for
 * the MX host name (verify, with the MTA-STS trust anchors), unless the level already verifies;
 * testing: STARTTLS as the level says, with those anchors so that the log can tell.
 */
static void sts_cb(void *arg, const struct mta_sts_policy *p, int shortage)
{
	struct smtpc *c = arg;

	c->sts_w = NULL;
	if (c->j == NULL) {
		c->st = C_CLOSED;
		reap(c);
		return;
	}
	mta_sts_policy_free(&c->sts);
	if (shortage) {
		/* our shortage must not send mail without the policy the domain may have: it waits */
		set_err(c, 0, "4.3.0", "local resource shortage: cannot learn the MTA-STS policy of %s", c->domain);
		log_warning(c->j->route.transport, "%s: %s", c->j->queue_id, c->err);
		give_up(c);
		reap(c);
		return;
	}
	if (p && p->mode != MTA_STS_NONE && mta_sts_policy_copy(&c->sts, p) < 0) {
		/* the policy cannot be kept: the mail waits rather than go out without it */
		set_err(c, 0, "4.3.0", "local resource shortage: out of memory for the MTA-STS policy");
		give_up(c);
		reap(c);
		return;
	}
	if (c->sts.mode == MTA_STS_ENFORCE && c->tls_level < TLS_LEVEL_VERIFY) {
		c->tls_level = TLS_LEVEL_VERIFY;
		tls_ctx_unref(c->tls);
		c->tls = c->sts_tls;      /* NULL when the anchors could not be loaded: the handshake fails */
		if (c->tls)
			tls_ctx_ref(c->tls);
	} else if (c->sts.mode == MTA_STS_TESTING && c->tls_level >= TLS_LEVEL_MAY && c->tls_level <= TLS_LEVEL_ENCRYPT &&
	    c->sts_tls) {
		tls_ctx_unref(c->tls);
		tls_ctx_ref(c->sts_tls);
		c->tls = c->sts_tls;
	}
	c->sts_conn = c->sts.mode;
	lookup(c, c->domain, DNS_MX);
	reap(c);
}

/* The MTA-STS policy of the next-hop domain, then its MX (RFC 8461 5: before connecting). */
static void sts_start(struct smtpc *c)
{
	struct mta_sts_conf sc;

	memset(&sc, 0, sizeof sc);
	if (c->sts_tls == NULL && (c->sts_tls = sts_tls(c->j->conf, c->j->route.transport)) != NULL)
		tls_ctx_ref(c->sts_tls);
	sc.dns = the_dns;
	sc.queue_dir = c->queue_dir;
	sc.tls = c->sts_tls;
	sc.timeout = c->t_sts;
	sc.failure_ttl = c->t_sts_fail;
	sc.service = c->j->route.transport;
	c->sts_looked = 1;
	c->st = C_STS;
	if ((c->sts_w = mta_sts_lookup(&sc, c->domain, sts_cb, c)) == NULL) {
		/*
		 * The lookup could not start. No memory: the mail waits, as for any shortage. No
		 * resolver: the MX lookup fails the same way next, unless an enforce policy is cached.
		 */
		if (errno == ENOMEM || mta_sts_peek(&sc, c->domain) == MTA_STS_ENFORCE) {
			set_err(c, 0, "4.7.0", "MTA-STS policy enforce for %s: cannot look the policy up now", c->domain);
			give_up(c);
			return;
		}
		lookup(c, c->domain, DNS_MX);
	}
}

/* The next hop as the job wrote it: an address, a lookup, or the unix socket. */
static void start_route(struct smtpc *c)
{
	struct agent_job *j = c->j;

	if (parse_nexthop(c, j->route.nexthop) < 0) {
		set_err(c, 0, "4.3.5", "bad next-hop destination \"%s\" for transport %s", j->route.nexthop,
		    j->route.transport);
		log_warning(j->route.transport, "%s: %s", j->queue_id, c->err);
		finish(c);
		c->st = C_CLOSED;
	} else if (c->unix_path[0]) {
		c->naddrs = 1;
		c->nhosts = 1;
		snprintf(c->hosts[0].name, sizeof c->hosts[0].name, "%s", c->myhostname);
		next_address(c);
	} else if (c->use_mx && add_literal(c, c->domain) < 0) {
		if (c->sts_on)
			sts_start(c);
		else
			lookup(c, c->domain, DNS_MX);
	} else {
		snprintf(c->hosts[0].name, sizeof c->hosts[0].name, "%s", c->domain);
		c->nhosts = 1;
		c->hi = 0;
		next_host(c);
	}
}

/*
 * A cached connection for the job: its per-target arrays, then MAIL at once. 0 taken (the
 * session runs), -1 no memory for the arrays (the connection stays idle; the caller goes on
 * as for a job that found none: a new connection, or a deferral when that has no memory either).
 */
static int take_cached(struct smtpc *c, struct agent_job *j)
{
	char *settled = mem_calloc((size_t)j->n, 1), *accepted = mem_calloc((size_t)j->n, 1);

	if (settled == NULL || accepted == NULL) {
		mem_free(settled);
		mem_free(accepted);
		return -1;
	}
	mem_free(c->settled);
	mem_free(c->accepted);
	c->settled = settled;
	c->accepted = accepted;
	job_reset(c);
	c->j = j;
	c->reused = 1;
	scan_start(c);
	if (c->j == NULL)
		return 0;      /* the queue file could not be read: deferred, the connection stays idle */
	start_mail(c);     /* arms smtp_mail_timeout in place of the idle timer */
	if (c->st != C_CLOSED && c->tr.fd >= 0) {
		do_write(c);
		if (c->st != C_CLOSED && c->tr.fd >= 0)
			watch(c);
	}
	reap(c);
	return 0;
}

/*
 * Is an enforce policy cached for this job's next-hop domain (a cached connection made without
 * one must not carry it)? Only the MX forms of the next hop: never [host], LMTP, or STS off.
 */
static int sts_enforced(const struct agent_job *j)
{
	const struct conf *cf = j->conf;
	struct mta_sts_conf sc;
	char d[DNS_NAME_MAX + 1];
	const char *colon;
	size_t n;

	if (cf == NULL || !conf_bool(cf, "smtp_mta_sts", 0) || strcasecmp(j->route.transport, "lmtp") == 0 ||
	    j->route.nexthop[0] == '[')
		return 0;
	colon = strrchr(j->route.nexthop, ':');
	n = colon ? (size_t)(colon - j->route.nexthop) : strlen(j->route.nexthop);
	if (n == 0 || n > DNS_NAME_MAX)
		return 0;
	memcpy(d, j->route.nexthop, n);
	d[n] = '\0';
	memset(&sc, 0, sizeof sc);
	sc.queue_dir = conf_str(cf, "queue_directory", 0);
	sc.service = j->route.transport;
	return mta_sts_peek(&sc, d) == MTA_STS_ENFORCE;
}

static void sts_refresh_cb(void *arg, const struct mta_sts_policy *p, int shortage)
{
	/* nothing to do: the lookup filled the cache, which the next cache_find consults */
}

/*
 * A cached connection made without an enforce policy is about to be reused: discovery runs
 * beside it (no session waits on it, the callback has no argument), so that a policy published
 * since the connection was made is learnt now and the next job refuses the connection
 * (cache_find's need_sts), instead of reuse going on without discovery until
 * smtp_connection_reuse_time_limit. Costs one TXT query (the resolver caches it); a fetch at
 * most once per id, and a failing one is remembered (smtp_mta_sts_failure_cache_time).
 */
static void sts_refresh(const struct smtpc *c)
{
	struct mta_sts_conf sc;

	if (!c->sts_looked || c->sts_conn == MTA_STS_ENFORCE || c->domain[0] == '\0' || c->sts_tls == NULL)
		return;
	memset(&sc, 0, sizeof sc);
	sc.dns = the_dns;
	sc.queue_dir = c->queue_dir;
	sc.tls = c->sts_tls;
	sc.timeout = c->t_sts;
	sc.failure_ttl = c->t_sts_fail;
	sc.service = c->key_transport;
	(void)mta_sts_lookup(&sc, c->domain, sts_refresh_cb, NULL);   /* NULL: nothing learnt now, as before */
}

/*
 * The text of inline:{...} tables out of an error about smtp_sasl_password_maps: it holds the
 * passwords, and the reason of a deferral reaches the log and the sender's delay notice.
 */
static void hide_inline(char *s)
{
	char *p = s, *end;

	while ((p = strstr(p, "inline:{")) != NULL) {
		p += 8;
		if ((end = strchr(p, '}')) == NULL)
			end = p + strlen(p);
		if (end - p > 3) {
			memcpy(p, "...", 3);
			memmove(p + 3, end, strlen(end) + 1);
			end = p + 3;
		}
		p = end;
	}
}

void smtpc_deliver(struct agent_job *j)
{
	struct smtpc *c;
	const struct conf *cf = j->conf;
	const char *v;
	int sasl_failed = 0;

	j->t_start = now_f();
	j->relay = "none";
	j->conn_use = 0;
	if (j->stopping) {
		/* dispatched while qmgr_free drains: no conversation is started (it could take minutes) */
		defer_job(j, "delivery interrupted by shutdown");
		return;
	}
	if ((c = cache_find(j, sts_enforced(j))) != NULL) {
		sts_refresh(c);
		if (take_cached(c, j) == 0)
			return;
	}
	drop_stale(j);
	/*
	 * A new connection: the idle ones of other destinations give way now, not at the trim after
	 * this dispatch round (kick_cb), so that the running jobs' sockets and the idle ones never
	 * pass delivery_concurrency_limit, not even for the rest of this callback.
	 */
	smtpc_idle_trim(j->idle_room);
	if ((c = mem_calloc(1, sizeof *c)) == NULL || (c->out = mem_alloc(SMTPC_OUT)) == NULL ||
	    (c->settled = mem_calloc((size_t)j->n, 1)) == NULL || (c->accepted = mem_calloc((size_t)j->n, 1)) == NULL) {
		if (c) {
			mem_free(c->out);
			mem_free(c->settled);
			mem_free(c);
		}
		log_warning(j->route.transport, "%s: out of memory: delivery deferred", j->queue_id);
		defer_job(j, "local resource shortage: out of memory");
		return;
	}
	c->j = j;
	c->loop = EV_DEFAULT;
	c->tr.fd = -1;
	c->lmtp = strcasecmp(j->route.transport, "lmtp") == 0;
	ev_init(&c->io, io_cb);
	ev_init(&c->tmr, tmr_cb);
	ev_init(&c->scan_w, scan_cb);
	if ((c->next = live) != NULL)
		live->prev = c;
	live = c;
	c->t_connect = tparam(cf, "smtp_connect_timeout", 30);
	c->t_helo = tparam(cf, "smtp_helo_timeout", 300);
	c->t_mail = tparam(cf, "smtp_mail_timeout", 300);
	c->t_rcpt = tparam(cf, "smtp_rcpt_timeout", 300);
	c->t_data_init = tparam(cf, "smtp_data_init_timeout", 120);
	c->t_xfer = tparam(cf, "smtp_data_xfer_timeout", 180);
	c->t_done = tparam(cf, "smtp_data_done_timeout", 600);
	/* reuse: the key, and Postfix's cache parameters (LMTP reads the smtp_ names, like the timeouts) */
	snprintf(c->key_transport, sizeof c->key_transport, "%s", j->route.transport);
	snprintf(c->key_hop, sizeof c->key_hop, "%s", j->route.nexthop);
	c->key_conf = conf_ref((struct conf *)cf);   /* the count is the object's, not its contents */
	c->cache_on = cf ? conf_bool(cf, "smtp_connection_cache_on_demand", 0) : 0;
	c->t_rset = tparam(cf, "smtp_rset_timeout", 20);
	c->t_cache = tparam(cf, "smtp_connection_cache_time_limit", 2);
	c->t_reuse = tparam(cf, "smtp_connection_reuse_time_limit", 300);
	c->reuse_count = cf ? conf_int(cf, "smtp_connection_reuse_count_limit", 0) : 0;
	c->no_conv = cf ? conf_bool(cf, "disable_mime_output_conversion", 0) : 0;
	read_addr_conf(c, cf);
	c->addr_limit = cf ? (int)conf_int(cf, "smtp_mx_address_limit", 0) : 5;
	if (c->addr_limit <= 0)
		c->addr_limit = 1 << 30;   /* Postfix: 0 is no limit */
	v = cf ? conf_str(cf, "myhostname", 0) : "localhost";
	snprintf(c->myhostname, sizeof c->myhostname, "%s", v && *v ? v : "localhost");
	v = cf ? conf_str(cf, "smtp_helo_name", 0) : NULL;
	snprintf(c->helo_name, sizeof c->helo_name, "%s", v && *v ? v : c->myhostname);
	c->plain_hi = c->plain_ai = -1;
	if (cf && conf_bool(cf, "smtp_sasl_auth_enable", 0) && !c->lmtp) {
		if (sasl_cache == NULL || sasl_cache_conf != conf_serial(cf)) {
			char err[256];
			struct map_list *m = map_list_open(conf_str(cf, "smtp_sasl_password_maps", 0), err, sizeof err);

			if (m == NULL) {
				/*
				 * Not on without AUTH: a relayhost that wants it refuses MAIL with 530, a
				 * bounce (found by test_faults_out's AUTH sweep: no memory to open the map).
				 * The job waits, as after a lookup error (start_auth).
				 */
				hide_inline(err);
				set_err(c, 0, "4.3.0", "smtp_sasl_password_maps: %s", err);
				log_warning(j->route.transport, "%s: %s", j->queue_id, c->err);
				sasl_failed = 1;
			} else {
				map_list_close(sasl_cache);
				sasl_cache = m;
				sasl_cache_conf = conf_serial(cf);
			}
		}
		if (sasl_cache && sasl_cache_conf == conf_serial(cf)) {
			c->sasl_on = 1;
			if (smtp_sasl_options_parse(conf_str(cf, "smtp_sasl_security_options", 0), &c->sasl_opts) < 0)
				c->sasl_opts = SMTP_SASL_NOPLAINTEXT | SMTP_SASL_NOANONYMOUS;
			if (smtp_sasl_options_parse(conf_str(cf, "smtp_sasl_tls_security_options", 0), &c->sasl_tls_opts) < 0)
				c->sasl_tls_opts = c->sasl_opts;
		}
	}
	c->min_backoff = cf ? conf_time(cf, "minimal_backoff_time", 0) : 300;
	v = cf ? conf_str(cf, "smtp_tls_security_level", 0) : NULL;
	c->tls_level = v && *v && !c->lmtp && tls_level_parse(v) > 0 ? tls_level_parse(v) : TLS_LEVEL_NONE;
	if (c->tls_level > TLS_LEVEL_NONE) {
		if (tls_cache == NULL || tls_cache_conf != conf_serial(cf)) {
			/* one context per configuration generation: the CA file is read once for it */
			char err[256];
			const char *ca = conf_str(cf, "smtp_tls_CAfile", 0);
			struct tls_ctx *x = tls_client_new(ca, err, sizeof err);

			if (x == NULL)
				log_warning(j->route.transport, "cannot make the client TLS context: %s", err);
			else {
				tls_ctx_unref(tls_cache);
				tls_cache = x;
				tls_cache_conf = conf_serial(cf);
			}
		}
		if (tls_cache && tls_cache_conf == conf_serial(cf)) {
			tls_ctx_ref(tls_cache);
			c->tls = tls_cache;
		}
	}

	/* MTA-STS: for MX next hops (start_route decides); off with smtp_mta_sts = no */
	c->sts_on = !c->lmtp && cf && conf_bool(cf, "smtp_mta_sts", 0);
	c->t_sts = tparam(cf, "smtp_mta_sts_timeout", 10);
	c->t_sts_fail = cf ? (double)conf_time(cf, "smtp_mta_sts_failure_cache_time", 0) : 300;
	v = cf ? conf_str(cf, "queue_directory", 0) : NULL;
	snprintf(c->queue_dir, sizeof c->queue_dir, "%s", v && *v ? v : ".");

	if (sasl_failed || open_generic(c, cf) < 0) {
		finish(c);
		c->st = C_CLOSED;
	} else
		scan_start(c);
	if (c->st != C_CLOSED)
		start_route(c);
	reap(c);
}

void smtpc_stop_all(void)
{
	struct smtpc *c;

	while ((c = live) != NULL) {
		if (c->j)
			set_err(c, 0, "4.3.0", "delivery interrupted by shutdown%s%s", *c->peer ? ": " : "", c->peer);
		else if (c->st == C_IDLE && c->tr.fd >= 0)
			(void)transport_write(&c->tr, "QUIT\r\n", 6);   /* best effort: never waited for */
		finish(c);
		c->st = C_CLOSED;
		reap(c);
	}
	tls_ctx_unref(tls_cache);
	tls_cache = NULL;
	tls_cache_conf = 0;
	map_list_close(sasl_cache);
	sasl_cache = NULL;
	sasl_cache_conf = 0;
	smtp_generic_unref(generic_cache);
	generic_cache = NULL;
	generic_cache_conf = 0;
	tls_ctx_unref(sts_tls_cache);
	sts_tls_cache = NULL;
	sts_tls_cache_conf = 0;
	mta_sts_stop_all();
}
