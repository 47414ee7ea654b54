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
#include "queue/queue.h"
#include "smtpd/command.h"

struct conf;
struct map_list;
struct resolver;
struct spool;
struct spool_txn;
struct qmgr;

/* ---- restrictions (restrict.c) ------------------------------------------- */

enum restr_word {
	R_PERMIT, R_REJECT, R_DEFER, R_DEFER_IF_PERMIT, R_DUNNO, R_PERMIT_MYNETWORKS,
	R_PERMIT_SASL_AUTHENTICATED, R_REJECT_UNAUTH_DESTINATION, R_DEFER_UNAUTH_DESTINATION,
	R_REJECT_UNLISTED_RECIPIENT,
	R_REJECT_INVALID_HELO_HOSTNAME, R_REJECT_NON_FQDN_HELO_HOSTNAME,
	R_REJECT_NON_FQDN_SENDER, R_REJECT_NON_FQDN_RECIPIENT,
	R_CHECK_CLIENT_ACCESS, R_CHECK_HELO_ACCESS, R_CHECK_SENDER_ACCESS,
	R_CHECK_RECIPIENT_ACCESS,
};
struct restr {
	enum restr_word word;
	struct map_list *table;  /* owned; check_*_access only */
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
	struct restr_list client_r, helo_r, sender_r, relay_r, recipient_r;
	char *myhostname, *banner;       /* owned, expanded */
};

/*
 * Build a generation: the one code path that reads restrictions, mynetworks
 * and routing tables, for `serve`, `reload` and `check` alike. NULL with
 * err "FILE:LINE: parameter: reason".
 */
struct smtpd_gen *smtpd_gen_new(struct conf *c, char *err, size_t errlen);
void smtpd_gen_unref(struct smtpd_gen *g);

/* ---- sessions (session.c) ------------------------------------------------ */

enum session_state {
	S_GREETING,   /* connected, banner not yet sent (pregreet wait) */
	S_INIT,       /* banner sent, no HELO/EHLO */
	S_HELO,       /* HELO/EHLO done, no transaction */
	S_MAIL,       /* MAIL accepted */
	S_RCPT,       /* at least one RCPT accepted */
	S_DATA,       /* receiving message content */
	S_COMMIT,     /* end of data seen, waiting for the spool's sync */
	S_CLOSING,    /* final reply queued: flush it (within smtpd_timeout), then linger */
	S_LINGER,     /* write side shut down: discard what the client still sends, briefly */
};

/* One transaction: RSET or end of DATA frees it in one go. */
struct smtp_tx {
	char sender[SMTPD_ADDR_MAX + 1];
	int  nrcpt;                 /* accepted recipients */
	char first_rcpt[SMTPD_ADDR_MAX + 1];
	struct spool_txn *txn;      /* owned until commit */
	long long size;             /* content bytes written */
	int  err;                   /* TX_ERROR_* seen while receiving data */
	int  errnum;                /* the errno behind TX_ERROR_IO / TX_ERROR_STORAGE */
	int  at_bol;                /* data: at the beginning of a line */
	size_t line_len;            /* data: length of the current line so far */
	int  in_headers;            /* data: still in the header section */
	int  received_count;        /* Received: headers seen (hop count) */
};
enum tx_error { TX_OK, TX_ERROR_SIZE, TX_ERROR_IO, TX_ERROR_STORAGE, TX_ERROR_RESOURCES, TX_ERROR_LINE,
	TX_ERROR_NUL, TX_ERROR_LOOP };

struct session {
	ev_io io;                   /* read/write watcher; first member: callbacks cast back */
	ev_timer timer;             /* idle timeout and error-sleep delay */
	struct session *next, *prev;/* server's list of live sessions */
	struct smtpd_server *srv;
	struct smtpd_gen *gen;      /* one reference held */
	const struct smtpd_params *p; /* gen->params[stress] */
	int fd;
	int submission;             /* never under stress */
	enum session_state state;
	struct sockaddr_storage peer;
	char addr[64];              /* printable peer address */
	char host[8];               /* reverse name: "unknown" until DNS lookups exist */
	char *helo;                 /* owned */
	int esmtp;
	int errors, junk;
	int sleeping;               /* error sleep in progress */
	int reaping;                /* on the reap list */
	int committing;             /* a spool commit holds a pointer to us: not freed before its callback */
	int admitted;               /* counted in limits_session_admit(); lingering ends that */
	int peer_gone;              /* EOF or a broken connection: nothing to linger for */
	size_t lingered;            /* bytes discarded in S_LINGER */
	ev_tstamp connected;        /* ev_now() at accept (PREGREET delay) */
	struct buf in, out;
	struct smtp_tx *tx;         /* owned; NULL outside a transaction */
};

struct session *session_new(struct smtpd_server *srv, int fd, const struct sockaddr_storage *peer, int submission);
void session_start(struct session *s);
void session_free(struct session *s);
void session_set_stress(struct session *s, int stress);
/* Send a 421 and close (shutdown, resource shortfall). */
void session_shutdown(struct session *s, const char *reply);

/* Evaluate the RCPT-time restrictions (client, helo, sender, recipient). */
enum restr_result { RESTR_PERMIT, RESTR_REJECT, RESTR_DEFER };
enum restr_result restr_check_rcpt(struct session *s, const char *rcpt, char *reply, size_t replylen);
int restr_list_parse(const char *value, struct restr_list *out, char *err, size_t errlen);
void restr_list_free(struct restr_list *l);

/* ---- the server: live sessions and reaping (server.c) ---------------------- */

#define SMTPD_MAX_LISTENERS 8

struct listener {
	ev_io io;                   /* first member: accept_cb casts back */
	struct smtpd_server *srv;
	int fd;
	int submission;             /* submission_listen / smtps_listen (never under stress) */
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
};

void server_init(struct smtpd_server *srv, struct ev_loop *loop);
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

#endif
