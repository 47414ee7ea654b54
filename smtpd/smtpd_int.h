/*
 * smtpd/smtpd_int.h: private to the smtpd room (session.c, restrict.c,
 * server.c). Nothing outside smtpd/ includes this.
 */
#ifndef FRUGAL_SMTPD_INT_H
#define FRUGAL_SMTPD_INT_H

#include <netinet/in.h>
#include <sys/socket.h>
#include <ev.h>

#include "core/buf.h"
#include "core/transport.h"
#include "queue/queue.h"
#include "smtpd/command.h"
#include "smtpd/anvil.h"

struct conf;
struct map_list;
struct resolver;
struct dns;
struct dns_query;
struct spf_check;
struct authres;
struct dmarc_psl;
struct spool;
struct spool_txn;
struct qmgr;
struct tls_ctx;
struct greylist;
struct smtpd_server;
struct screen_conf;
struct screen_conn;
struct screen_cache;

/* ---- restrictions (restrict.c) ------------------------------------------- */

enum restr_word {
	R_PERMIT, R_REJECT, R_DEFER, R_DEFER_IF_PERMIT, R_DUNNO, R_PERMIT_MYNETWORKS,
	R_PERMIT_SASL_AUTHENTICATED, R_REJECT_UNAUTH_DESTINATION, R_DEFER_UNAUTH_DESTINATION,
	R_REJECT_UNLISTED_RECIPIENT,
	R_REJECT_INVALID_HELO_HOSTNAME, R_REJECT_NON_FQDN_HELO_HOSTNAME,
	R_REJECT_NON_FQDN_SENDER, R_REJECT_NON_FQDN_RECIPIENT,
	R_CHECK_CLIENT_ACCESS, R_CHECK_HELO_ACCESS, R_CHECK_SENDER_ACCESS,
	R_CHECK_RECIPIENT_ACCESS, R_REJECT_SENDER_LOGIN_MISMATCH,
	R_REJECT_UNKNOWN_SENDER_DOMAIN,               /* DNS: may suspend the session (S_DNS_WAIT) */
	R_REJECT_UNKNOWN_CLIENT_HOSTNAME, R_REJECT_UNKNOWN_REVERSE_CLIENT_HOSTNAME, /* the name found at connect */
	R_CHECK_SPF,                                  /* SPF (spf.c): DNS, may suspend the session (S_DNS_WAIT) */
	/* DNS lists (dnsbl.c): may suspend the session (S_DNS_WAIT) */
	R_REJECT_RBL_CLIENT, R_REJECT_RHSBL_CLIENT, R_REJECT_RHSBL_SENDER, R_REJECT_RHSBL_HELO,
	R_PERMIT_DNSWL_CLIENT, R_REJECT_UNKNOWN_HELO_HOSTNAME,
	R_CHECK_GREYLIST,                             /* greylisting (greylisting.c): a defer_if_permit */
};
struct dnsbl_site;
struct restr {
	enum restr_word word;
	struct map_list *table;  /* owned; check_*_access only */
	struct dnsbl_site *site; /* owned; the DNS list words only */
};
struct restr_list {
	struct restr *v;         /* owned */
	int n;
};

/* One network of mynetworks. */
struct cidr {
	int family;              /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	int prefix;
};
struct cidr_list {
	struct cidr *v;          /* owned */
	int n;
};
int  cidr_list_parse(const char *value, struct cidr_list *out, char *err, size_t errlen);
void cidr_list_free(struct cidr_list *l);
int  cidr_list_match(const struct cidr_list *l, const struct sockaddr_storage *sa);

/* Parameters a session reads, typed once per configuration and stress level. */
struct smtpd_params {
	double timeout;          /* smtpd_timeout, seconds */
	int hard_error_limit, soft_error_limit, junk_command_limit, recipient_limit;
	double error_sleep_time;
	long long message_size_limit;
	int helo_required, forbid_bare_newline;
	int client_connection_count_limit;
	double starttls_timeout;     /* smtpd_starttls_timeout: the TLS handshake's deadline */
	int sasl_auth_enable;        /* smtpd_sasl_auth_enable: AUTH on smtpd_listen (submission: always) */
	int tls_auth_only;           /* smtpd_tls_auth_only: AUTH only under TLS */
	int client_auth_rate_limit;  /* AUTH commands per client per anvil_rate_time_unit (0: none) */
	int client_connection_rate_limit;  /* connections per client per anvil_rate_time_unit (0: none) */
	int client_message_rate_limit;     /* MAIL FROM per client per anvil_rate_time_unit (0: none) */
	int client_recipient_rate_limit;   /* RCPT TO per client per anvil_rate_time_unit (0: none) */
	int client_ipv6_prefix_length;     /* IPv6 clients are one client per prefix of this length */
	double anvil_rate_time_unit;
	int hide_client_session;     /* smtpd_hide_client_session: no client in an authenticated Received: */
	int unknown_address_reject_code; /* reject_unknown_sender_domain, domain not found (Postfix: 450) */
	int unknown_client_reject_code;  /* reject_unknown_(reverse_)client_hostname (Postfix: 450) */
	int spf_helo_check;              /* check_spf: a null sender is checked as its HELO name (RFC 7208 2.4) */
	int spf_permerror_reject;        /* check_spf: permerror is 550 5.5.2 (policyd-spf: accepted) */
	int spf_softfail_reject;         /* check_spf: softfail is 550 5.7.23 (policyd-spf: accepted) */
	int maps_rbl_reject_code;        /* $rbl_code of a DNS list's reply (Postfix: 554) */
	int unknown_hostname_reject_code;/* reject_unknown_helo_hostname, name not found (Postfix: 450) */
	unsigned greylist_delay, greylist_max_age, greylist_retry_window; /* check_greylist, seconds */
	int greylist_client_prefix, greylist_client_ipv6_prefix;         /* the triplet's client network */
};

/*
 * One configuration generation: everything derived from one `struct conf`.
 * Sessions hold a reference, so a reload never changes a session's rules
 * mid-transaction.
 */
struct smtpd_gen {
	int refs;
	struct conf *conf;               /* one reference held */
	struct smtpd_params params[2];   /* [0] normal, [1] stress */
	struct resolver *resolver;       /* owned */
	struct cidr_list mynetworks;
	struct cidr_list event_limit_exceptions; /* smtpd_client_event_limit_exceptions: no anvil limits */
	struct restr_list client_r, helo_r, sender_r, relay_r, recipient_r;
	char *myhostname, *banner;       /* owned, expanded */
	struct tls_ctx *tls;             /* one reference; NULL: no certificate, or TLS off */
	int tls_level;                   /* smtpd_tls_security_level: 0 none, 1 may, 2 encrypt */
	struct map_list *sasl_users;     /* smtpd_sasl_users: login to crypt(3) hash; owned (type frugal) */
	char *sasl_path;                 /* smtpd_sasl_path: Dovecot's auth socket; owned (type dovecot) */
	struct map_list *sender_logins;  /* smtpd_sender_login_maps: sender to its owners; owned */
	struct dkim_keys *dkim;          /* dkim_signing_maps with its keys read; one reference; NULL: none */
	struct map_list *rbl_reply_maps; /* DNS list zone to reply template; owned */
	char *default_rbl_reply;         /* the template otherwise; owned, unexpanded */
	int greylisting;                 /* check_greylist is in a restriction list */
	struct cidr_list greylist_allow_nets;    /* greylist_allowlist_clients: its networks */
	struct map_list *greylist_allow_maps;    /* ... and its tables (client lookups); owned, NULL: none */
	/* inbound authentication of mail from outside (authres.c) */
	int dkim_verify, dmarc, dmarc_enforce; /* smtpd_dkim_verify, smtpd_dmarc, smtpd_dmarc_enforce */
	char *authserv_id;               /* smtpd_authserv_id, expanded; owned */
	struct dmarc_psl *psl;           /* smtpd_dmarc_public_suffix_list, read; owned; NULL: DMARC off */
	struct screen_conf *screen;      /* the postscreen_* tests before the session (screen.h); owned */
};

/*
 * The certificate and key as descriptors the master opened as root (the
 * daemon is not root at a reload), or -1 each: then the paths are opened.
 * Only used when the paths are the ones the descriptors were opened for.
 */
struct smtpd_tls_files {
	int cert_fd, key_fd;
	char cert_path[512], key_path[512];
};

/*
 * Build a generation: the one code path that reads restrictions, mynetworks
 * and routing tables, for `serve`, `reload` and `check` alike. NULL with
 * err "FILE:LINE: parameter: reason".
 */
struct smtpd_gen *smtpd_gen_new(struct conf *c, const struct smtpd_tls_files *tf, char *err, size_t errlen);
/* Open the configured certificate and key (the master, as root); -1 each when unset or failing (logged). */
void smtpd_tls_files_open(const struct conf *c, struct smtpd_tls_files *tf);
void smtpd_tls_files_close(struct smtpd_tls_files *tf);
void smtpd_gen_unref(struct smtpd_gen *g);

/* ---- sessions (session.c, verbs.c, content.c) ----------------------------- */

enum session_state {
	S_GREETING,   /* connected, banner not yet sent (pregreet wait) */
	S_INIT,       /* banner sent, no HELO/EHLO (again after STARTTLS) */
	S_HELO,       /* HELO/EHLO done, no transaction */
	S_MAIL,       /* MAIL accepted */
	S_RCPT,       /* at least one RCPT accepted */
	S_DATA,       /* receiving message content after DATA */
	S_BDAT,       /* reading the octets of one BDAT chunk */
	S_COMMIT,     /* end of data seen, waiting for the spool's sync */
	S_TLS,        /* STARTTLS answered, or an implicit-TLS connection: the handshake */
	S_CLOSING,    /* final reply queued: flush it (within smtpd_timeout), then linger */
	S_LINGER,     /* write side shut down: discard what the client still sends, briefly */
	S_AUTH,       /* AUTH: the next line is a SASL response, not a command */
	S_AUTH_WAIT,  /* AUTH: the password is being checked on a worker; nothing is read */
	S_DNS_WAIT,   /* RCPT: a restriction waits for a DNS answer; nothing is read (restrict.c) */
};

/* What the client's name lookups found (Postfix's name_status and reverse_name_status). */
enum peer_code { PEER_OK, PEER_TEMP, PEER_PERM };

/* reject_unknown_sender_domain's verdict for the transaction's sender (struct smtp_tx). */
enum sdom_state { SDOM_UNASKED, SDOM_OK, SDOM_NOTFOUND, SDOM_TEMP };

/* One transaction: RSET or the end of the message frees it in one go. */
struct smtp_tx {
	char sender[SMTPD_ADDR_MAX + 1];
	int  dsn_ret;               /* MAIL RET= (RFC 3461): 0 or SMTPD_DSN_RET_* */
	int  smtputf8;              /* MAIL SMTPUTF8 (RFC 6531): the trace says UTF8SMTP */
	int  has_envid;             /* MAIL ENVID= given */
	char dsn_envid[SMTPD_ENVID_MAX + 1]; /* decoded */
	int  nrcpt;                 /* accepted recipients */
	char first_rcpt[SMTPD_ADDR_MAX + 1];
	struct spool_txn *txn;      /* owned until commit */
	long long size;             /* content bytes written */
	int  err;                   /* TX_* seen while receiving content: answered at its end */
	int  errnum;                /* the errno behind TX_IO / TX_STORAGE */
	int  at_bol;                /* content: at the beginning of a line */
	size_t line_len;            /* content: length of the current line so far */
	int  in_headers;            /* content: still in the header section */
	int  received_count;        /* Received: headers seen (hop count) */
	int  opened;                /* the spool file and the Received header are written */
	int  chunking;              /* BDAT carries this message: DATA, MAIL and RCPT are refused */
	int  cr_pending;            /* BDAT: the last piece ended in CR (half a CRLF, perhaps) */
	int  hdr_rewrite;           /* header addresses are rewritten (queue/cleanup.c; a local client) */
	int  hold_cls;              /* the address header being held (enum cleanup_hdr), 0: none */
	char *hold;                 /* that header, whole, up to HDR_HOLD_MAX; owned, freed with the tx */
	size_t hold_len;
	enum sdom_state sdom;       /* the sender domain's DNS verdict, once asked */
	int  sdom_step;             /* while asking: 0 MX, 1 A, 2 AAAA (Postfix's order) */
	struct smtpd_path pending_rcpt; /* S_DNS_WAIT: the RCPT being decided (address and DSN parameters) */
	struct spf_check *spf;      /* owned; check_spf's evaluation, once asked: its result serves every
	                               RCPT, the Received-SPF: header, and DMARC (smtpd/spf.h) */
	int  spf_logged;            /* its result is logged */
	int  rcpt_resumed;          /* the pending RCPT is being decided again after S_DNS_WAIT */
	int  grey_have;             /* check_greylist judged grey_key in this transaction ... */
	unsigned long long grey_key;
	int  grey_deferred;         /* ... and deferred it: 1 + the seconds left; 0: passed (reused on resume) */
	struct authres *auth;       /* DKIM/DMARC of mail from outside (authres.c); owned by txn (its filter):
	                               valid while txn is, NULL once the spool owns txn */
	int  ar_strip;              /* Authentication-Results: claiming our authserv-id are dropped (RFC 8601 5) */
	int  ar_state;              /* AR_*: the Authentication-Results: header being read */
	char *ar_hold;              /* owned; that header until it is decided (AR_HOLD_MAX) */
	size_t ar_len;
};
/* Why a message is refused at its end; content_error_reply() turns each into the one reply. */
enum tx_error { TX_OK, TX_SIZE, TX_IO, TX_STORAGE, TX_RESOURCES, TX_LINE, TX_NUL, TX_LOOP };

struct session {
	ev_io io;                   /* read/write watcher; first member: callbacks cast back */
	ev_timer timer;             /* idle timeout, error-sleep delay, handshake deadline */
	struct session *next, *prev;/* server's list of live sessions */
	struct smtpd_server *srv;
	struct smtpd_gen *gen;      /* one reference held */
	const struct smtpd_params *p; /* gen->params[stress] */
	struct transport tp;        /* the connection, plain or TLS; owned */
	int submission;             /* never under stress; AUTH before MAIL */
	int implicit_tls;           /* smtps_listen: TLS from the first byte */
	enum session_state state;
	struct sockaddr_storage peer;
	char addr[64];              /* printable peer address */
	char host[256];             /* the client's verified name (PTR, then A/AAAA back to addr), or "unknown" */
	enum peer_code name_status; /* host: OK, TEMP (a lookup failed for now), PERM (no name, or not confirmed) */
	enum peer_code rev_status;  /* the PTR lookup alone (reject_unknown_reverse_client_hostname) */
	char *rev_name;             /* owned; the PTR name while it is being confirmed */
	struct dns_query *dns_q;    /* a lookup in flight for this session (connect, or S_DNS_WAIT); cancelled when it ends */
	int name_pending;           /* S_GREETING: the name lookups run; the banner waits (peer.c) */
	int pregreet;               /* S_GREETING: smtpd_pregreet_wait is running (read, to catch talkers) */
	int connect_logged;         /* "connect from" is logged once the name is known */
	int connected_started;      /* session_start() has run (the name may settle inside it) */
	int screened;               /* passed the screen (screen.c): no pregreet wait of its own */
	enum session_state dns_resume; /* S_DNS_WAIT: the state to go back to */
	char *helo;                 /* owned */
	char *tls_info;             /* owned; "TLSv1.3 with cipher ..." once TLS is up */
	int esmtp;
	int errors, junk;
	int anvil_slot;             /* the client's entry in srv->anvil, ANVIL_NONE: exempt or untracked */
	int sleeping;               /* error sleep in progress */
	int reaping;                /* on the reap list */
	int committing;             /* a spool commit holds a pointer to us: not freed before its callback */
	int admitted;               /* counted in limits_session_admit(); lingering ends that */
	int peer_gone;              /* EOF or a broken connection: nothing to linger for */
	int muted;                  /* a reply could not be queued: no later reply is sent */
	int fault_sweep;            /* tests: an allocation failure is armed for this session */
	size_t lingered;            /* bytes discarded in S_LINGER */
	ev_tstamp connected;        /* ev_now() at accept (PREGREET delay) */
	long long chunk_size;       /* S_BDAT: the chunk's octets, as BDAT said */
	long long chunk_left;       /* S_BDAT: octets of the chunk still to read */
	int chunk_last;             /* S_BDAT: the chunk is the LAST */
	const char *chunk_refusal;  /* S_BDAT: the chunk is read and dropped, then this reply (static) */
	char *sasl_user;            /* owned; the login once AUTH succeeded */
	const char *sasl_method;    /* "PLAIN" or "LOGIN" (static) */
	int auth_mech;              /* S_AUTH: the exchange under way (auth.c) */
	char *auth_login;           /* owned; S_AUTH with LOGIN: the user name given first */
	struct auth_check *auth;    /* a password check in flight (owned by the worker job until done) */
	unsigned dovecot_id;        /* a Dovecot request in flight (0: none) */
	const char *auth_method;    /* S_AUTH_WAIT with Dovecot: the mechanism being checked (static) */
	struct buf in, out;
	struct smtp_tx *tx;         /* owned; NULL outside a transaction */
	struct dnsxl_entry *dnsxl;  /* owned; DNS list and HELO name answers for the session (dnsbl.c) */
};

struct session *session_new(struct smtpd_server *srv, int fd, const struct sockaddr_storage *peer,
    int submission, int implicit_tls);
void session_start(struct session *s);
void session_free(struct session *s);
void session_set_stress(struct session *s, int stress);
/* The name lookups are over (peer.c): log the connection, greet when the pregreet wait is over too. */
void session_name_known(struct session *s);
void session_log_connect(struct session *s);
/* Send a 421 and close (shutdown, resource shortfall). */
void session_shutdown(struct session *s, const char *reply);

/* What verbs.c and content.c use of the session (session.c). */
void session_reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void session_enter(struct session *s, enum session_state st);
void session_count_error(struct session *s);   /* Postfix's error limits and tarpit */
void session_tx_free(struct session *s);
void session_tx_reset(struct session *s);      /* and back to S_HELO where that applies */
void session_push(struct session *s);          /* write queued replies now: a pipelining group ended */
void session_flush(struct session *s);         /* write, parse what waits, close or re-arm (not in session_process) */
const char *session_proto(const struct session *s);   /* "SMTP" or "ESMTP", for the log */
int  session_tls_missing(const struct session *s);    /* TLS is required here and not up yet */

/*
 * Per-client limits (listen.c at connect, verbs.c at MAIL and RCPT, auth.c):
 * 0 within the limit, else the count that passed it (logged, replied).
 */
int smtpd_anvil_event(struct session *s, enum anvil_event ev, int limit);

#define AUTH_THREADS 2   /* password checks at once (WORKER_AUTH) */

/*
 * Dovecot's auth service (dovecot.c): one connection per daemon. The
 * callback gets 1 (the password is right), 0 (wrong) or -1 (try again
 * later: no connection, Dovecot's backend failed, no answer within
 * DOVECOT_TIMEOUT), the user name Dovecot gave (or NULL), on the loop.
 */
typedef void (*dovecot_cb)(void *arg, int result, const char *user, const char *reason);
struct dovecot;
struct dovecot *dovecot_new(struct ev_loop *loop);
void dovecot_free(struct dovecot *d);
/* 0 and *id (for dovecot_cancel), or -1 with errno (no connection: ECONNREFUSED, ENOENT, EAGAIN ...) */
int  dovecot_check(struct dovecot *d, const char *path, const char *user, const char *pass,
    const char *service, const char *rip, int secured, dovecot_cb cb, void *arg, unsigned *id);
void dovecot_cancel(struct dovecot *d, unsigned id);
int  dovecot_connected(const struct dovecot *d);

/* AUTH (auth.c): the verb, a response line in S_AUTH, a session going away, whether it is offered. */
void auth_command(struct session *s, const char *arg, size_t len);
void auth_response(struct session *s, const char *line, size_t len);
void auth_session_gone(struct session *s);
int  auth_offered(const struct session *s);
/* reject_sender_login_mismatch: may this session's login send as `sender`? */
int  auth_sender_owned(struct session *s, const char *sender);

/* The command table (verbs.c): one complete command line, CRLF removed. */
void verbs_run(struct session *s, const char *line, size_t len);

/* Message content (content.c): DATA and BDAT into the spool, the end of a message. */
int  content_begin(struct session *s);        /* spool file and Received header: 0, or -1 (answered) */
int  content_data(struct session *s);         /* S_DATA: 1 at the final dot, 0 more, -1 closed */
int  content_chunk(struct session *s);        /* S_BDAT: 1 when the chunk is read, 0 more */
void content_chunk_done(struct session *s);   /* after a chunk: its reply, the commit after LAST */
void content_end(struct session *s);          /* the message is complete: refusal or commit */

/*
 * The client's name (peer.c): PTR, then the name's A/AAAA must hold the
 * address (Postfix's forward-confirmed name). Calls session_name_known()
 * when done, perhaps before returning; peer_lookup_gone() cancels.
 */
void peer_lookup_start(struct session *s);
void peer_lookup_gone(struct session *s);

/*
 * The session's cached DNS answers (dnsbl.c): a DNS list, the HELO name.
 * The answer, or NULL: the lookup started (s->dns_q) and the RCPT that
 * waits in S_DNS_WAIT is decided again when it is in. A lookup that
 * cannot start answers DNS_TEMPFAIL at once. Freed with the session.
 */
struct dnsxl_answer {
	int status;                 /* enum dns_status */
	int naddr;
	unsigned char addr[8][4];   /* A records, the first 8 */
	char *txt;                  /* owned; the TXT records joined by " / " (cut at 450 bytes), or NULL */
};
const struct dnsxl_answer *dnsbl_session_lookup(struct session *s, const char *name, int type);
void dnsbl_session_free(struct session *s);

/* RCPT resumed after S_DNS_WAIT (verbs.c): decide the pending recipient again, with the answer. */
void verbs_rcpt_resume(struct session *s);

/*
 * Evaluate the RCPT-time restrictions (client, helo, sender, recipient).
 * RESTR_WAIT: a lookup was started; the session enters S_DNS_WAIT and
 * verbs_rcpt_resume() runs the evaluation again when the answer is in.
 */
enum restr_result { RESTR_PERMIT, RESTR_REJECT, RESTR_DEFER, RESTR_WAIT };
enum restr_result restr_check_rcpt(struct session *s, const char *rcpt, char *reply, size_t replylen);
int restr_list_parse(const char *value, struct restr_list *out, char *err, size_t errlen);
void restr_list_free(struct restr_list *l);

/* ---- greylisting (greylisting.c; the table in greylist.c) ------------------- */

/* Make and load the table when srv's generation uses check_greylist (start, reload). */
void greylisting_open(struct smtpd_server *srv);
/* At stop: the last snapshot, written now (waits for one in flight), then the table freed. */
void greylisting_close(struct smtpd_server *srv);
/* check_greylist for one recipient: 0 pass (exempt or known), 1 deferred with reply (450). */
int  greylisting_check(struct session *s, const char *rcpt, char *reply, size_t replylen);

/* ---- the server: live sessions and reaping (server.c) ---------------------- */

#define SMTPD_MAX_LISTENERS 8

struct listener {
	ev_io io;                   /* first member: accept_cb casts back */
	struct smtpd_server *srv;
	int fd;
	int submission;             /* submission_listen / smtps_listen (never under stress) */
	int implicit_tls;           /* smtps_listen */
	char name[96];
};

struct smtpd_server {
	struct ev_loop *loop;
	struct smtpd_gen *gen;      /* current generation (one reference) */
	struct spool *spool;
	struct qmgr *qmgr;
	struct session *sessions;   /* live sessions */
	int nsessions;
	int stress;
	int stopping;
	int commits;                /* spool commits in flight (sessions live or reaped) */
	ev_prepare reaper;          /* frees closed sessions outside their callbacks */
	struct session *reap;       /* sessions waiting to be freed (linked by next) */
	void (*on_reaped)(struct smtpd_server *); /* after the reaper freed sessions (a stop waits) */
	/* listeners and admission (listen.c) */
	struct listener listeners[SMTPD_MAX_LISTENERS];
	int nlisteners;
	int paused;                 /* accepting paused for lack of descriptors or memory */
	int reserve_fd;             /* kept to answer one client 421 when descriptors run out */
	ev_timer resume_timer;
	/*
	 * Tests only (FRUGAL_ALLOC_SWEEP_CLIENT=ADDR, tests/integration/
	 * test_faults.py): each connection from ADDR fails its sweep_n-th
	 * allocation after accept, one more each time; disarmed when it ends.
	 * FRUGAL_ALLOC_SWEEP_STRIDE=k: connection n fails allocation 1 + (n-1)k
	 * instead (a quick sweep that samples every k-th site).
	 */
	const char *sweep_client;
	unsigned long sweep_n;      /* connections from sweep_client so far */
	unsigned long sweep_stride;
	struct anvil *anvil;        /* per-client counts and rates (anvil.c); owned, made at the first connection */
	struct greylist *greylist;  /* greylisting triplets (greylisting.c); owned, made when a generation uses it */
	struct dovecot *dovecot;    /* Dovecot's auth service (dovecot.c); owned, made on first use */
	struct dns *dns;            /* the resolver (core/dns.h); owned; NULL: every lookup fails for now */
	int auth_pending;           /* password checks queued or running */
	/* the screen (screen.c): port 25 clients before they are sessions */
	struct screen_conn *screening; /* clients in the screen now */
	unsigned nscreening;
	struct screen_cache *screen_cache; /* passes remembered; owned, NULL: none */
	ev_timer screen_save;       /* the cache's next save (armed when it changed) */
};

void server_init(struct smtpd_server *srv, struct ev_loop *loop);
char *smtpd_pid_path(const struct conf *c);   /* mem_alloc'd: queue_directory/pid/frugal.pid */
void server_sweep_end(struct smtpd_server *srv);
void server_session_add(struct smtpd_server *srv, struct session *s);    /* link + count */
void server_session_closed(struct smtpd_server *srv, struct session *s); /* unlink + count */
void server_reap(struct smtpd_server *srv, struct session *s);
int  server_client_count(struct smtpd_server *srv, const struct session *s);
void server_set_stress(struct smtpd_server *srv, int on);
void server_shutdown_sessions(struct smtpd_server *srv, const char *reply);
void server_free_sessions(struct smtpd_server *srv);   /* at exit: no commit may be in flight */

/* ---- the daemon's life (serve.c) and its supervisor when started as root (master.c) ---- */

/* What a daemon forked by the master starts with. */
struct serve_inherit {
	int  listen_fds[SMTPD_MAX_LISTENERS];  /* bound by the master, as root */
	int  nlisten;
	int  control_fd;                       /* SOCK_SEQPACKET to the master */
	int  helper_fd[HELPER_COUNT];          /* -1: that helper is not used */
	long helper_pid[HELPER_COUNT];
	long master_pid;
	struct smtpd_tls_files tls;            /* opened by the master as root; -1 when none */
};
/* The daemon. in: NULL when it runs alone (unprivileged). Takes the conf reference. */
int  serve_run(struct conf *c, const struct serve_inherit *in);
/* Started as root: supervise helpers and the daemon until stopped. An exit code. */
int  master_run(struct conf *c, const char *conf_dir);

/* ---- listeners and admission (listen.c) ------------------------------------ */

int  listen_open(struct smtpd_server *srv, const struct conf *c); /* bind and attach: 0, or -1 (logged) */
/* The two halves: bind smtpd_listen (as root, in the master), then serve them (in the daemon). */
int  listen_bind(const struct conf *c, int *fds, int max);   /* how many, or -1 (logged) */
int  listen_attach(struct smtpd_server *srv, const struct conf *c, const int *fds, int n);
void listen_close(struct smtpd_server *srv);
void listen_session_freed(struct smtpd_server *srv);   /* a descriptor came back: resume */
/* A client charged for its socket becomes a session (screened: it passed the screen), or gets 421. */
void listen_session(struct listener *l, int fd, const struct sockaddr_storage *ss, int screened);

/* ---- passwords (passwd.c) ----------------------------------------------- */

/* A crypt(3) hash of pass, as `frugal passwd` makes it (mem_alloc'd); NULL with err. */
char *smtpd_passwd_hash(const struct conf *c, const char *pass, char *err, size_t errlen);

#endif
