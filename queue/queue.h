/*
 * queue/queue.h: what other rooms may call in queue/: the spool (durable
 * acceptance), the queue manager (scheduling and delivery), address
 * resolution (which recipients are ours), and the `frugal queue` command.
 *
 * Data flows one way: smtpd -> spool -> qmgr -> delivery agents. Delivery
 * never calls back into smtpd.
 */
#ifndef FRUGAL_QUEUE_QUEUE_H
#define FRUGAL_QUEUE_QUEUE_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>
#include <ev.h>

struct conf;

/* ---- spool: on-disk queue ------------------------------------------------ */

struct spool;

/* Open (creating subdirectories as needed) queue_directory. NULL + err. */
struct spool *spool_open(const char *queue_dir, char *err, size_t errlen);
/*
 * Started as root (the master, before any process talks to the network):
 * lay out queue_directory for a daemon running as uid/gid. The top and pid/
 * are root's, the message directories and status/ the daemon's. Owners are
 * set through descriptors opened with O_NOFOLLOW; no file is ever chowned
 * (a hard link planted in the queue could name any file). 0 or -1 + err.
 */
int spool_prepare(const char *queue_dir, uid_t uid, gid_t gid, char *err, size_t errlen);
void          spool_close(struct spool *s);
const char   *spool_dir(const struct spool *s);

/*
 * One incoming message. The queue ID exists from spool_txn_new() on (smtpd
 * logs "ID: client=..." and writes it into the Received: header).
 * Recipients are added before spool_txn_open(); data is streamed after.
 * All calls return 0 or -1 with errno (ENOMEM, ENOSPC, EIO ...); on -1 the
 * caller answers 451 and calls spool_txn_abort().
 */
struct spool_txn;
struct spool_txn *spool_txn_new(struct spool *s, const char *sender, const char *client /* "HOST[ADDR]" */);
const char *spool_txn_id(const struct spool_txn *t);
int   spool_txn_rcpt(struct spool_txn *t, const char *rcpt, const char *orig_rcpt);
/*
 * DSN (RFC 3461), kept in the envelope. spool_txn_dsn() sets the message's
 * RET (0 or DSN_RET_*) and ENVID (NULL: none; xtext-decoded, printable);
 * spool_txn_rcpt_dsn() sets NOTIFY (0 or DSN_NOTIFY_* bits) and ORCPT
 * ("type;address", NULL: none) of the recipient added last. Before
 * spool_txn_open(); 0, or -1 with errno (EINVAL: no recipient yet, a value
 * with a line end; ENOMEM).
 */
#define DSN_RET_FULL       1
#define DSN_RET_HDRS       2
#define DSN_NOTIFY_NEVER   1
#define DSN_NOTIFY_SUCCESS 2
#define DSN_NOTIFY_FAILURE 4
#define DSN_NOTIFY_DELAY   8
int   spool_txn_dsn(struct spool_txn *t, int ret, const char *envid);
int   spool_txn_rcpt_dsn(struct spool_txn *t, int notify, const char *orcpt);
int   spool_txn_open(struct spool_txn *t);                       /* creates the file, writes the envelope */
int   spool_txn_write(struct spool_txn *t, const void *p, size_t n); /* message bytes, LF line ends */
off_t spool_txn_size(const struct spool_txn *t);                 /* message bytes written so far */
/*
 * Late headers: whole header lines ("Name: value", folded lines joined by
 * LF, no CR) known only after the message has streamed into the file
 * (DKIM-Signature, later Authentication-Results). They are appended after
 * the message at commit and every reader puts them BEFORE the message's
 * own headers, in the order added. Callable until the commit's filter
 * finish has run. 0, or -1 with errno (EINVAL: not a header or over
 * SPOOL_LATE_MAX in all; ENOMEM).
 */
#define SPOOL_LATE_MAX (64 * 1024)
int   spool_txn_late_header(struct spool_txn *t, const char *hdr);
/*
 * A filter over a transaction's message: data() sees every byte given to
 * spool_txn_write() (after it is buffered), finish() runs once at commit, on
 * the commit worker, before the lengths are stamped (it may add late
 * headers), free() when the transaction ends (commit or abort, always).
 * data and finish return 0, or -1 with errno: the transaction fails (451).
 * One filter per transaction; setting another frees the first.
 */
struct spool_filter {
	int  (*data)(void *arg, const void *p, size_t n);
	int  (*finish)(void *arg, struct spool_txn *t);
	void (*free)(void *arg);
};
void  spool_txn_filter(struct spool_txn *t, const struct spool_filter *f, void *arg);

/*
 * DKIM signing (queue/dkim.c). The key table of a configuration generation:
 * dkim_signing_maps (domain -> "selector:/path/key.pem"), every key read and
 * checked at load; NULL with err when a table or key is wrong, NULL with
 * err "" (errno 0) when the parameter is empty. Reference-counted (a signer
 * in flight holds one).
 */
struct dkim_keys;
struct dkim_keys *dkim_keys_load(const struct conf *c, char *err, size_t errlen);
struct dkim_keys *dkim_keys_ref(struct dkim_keys *ks);
void  dkim_keys_unref(struct dkim_keys *ks);
int   dkim_keys_count(const struct dkim_keys *ks);
/*
 * Sign this transaction's message when its one From: address has a domain
 * with a key (call after spool_txn_open, before the first write; the caller
 * decides that the client may be signed for: AUTH, mynetworks, sendmail).
 * The signature becomes a late header at commit; a signing failure fails
 * the commit (451). ks NULL: nothing. 0, or -1 with errno.
 */
int   dkim_sign_txn(struct dkim_keys *ks, struct spool_txn *t);
/* Pure parsers, for the fuzz target: "sel:/path" (0/-1); the domain of a one-address From: value. */
int   dkim_key_spec_parse(const char *value, char *sel, size_t sellen, char *file, size_t filelen);
int   dkim_from_domain(const char *v, size_t n, char *out, size_t outlen);
/* `frugal dkim keygen DOMAIN [SELECTOR] [--type rsa|ed25519] [-c DIR]` */
int   dkim_cmd(int argc, char **argv);
/*
 * Write kdir/DOMAIN.SELECTOR.key (RSA 2048, or Ed25519 when ed), group gid
 * mode 0640 (gid -1: 0600, the caller's), never over an existing file; path
 * receives its name and txt the TXT record's zone strings ("v=DKIM1; ..."
 * "..."). 0 written; 1 it existed (kept, txt from it); -1 with err.
 */
int   dkim_keygen(const char *kdir, const char *domain, const char *sel, int ed, gid_t gid,
    char *path, size_t pathlen, char *txt, size_t txtlen, char *err, size_t errlen);
/*
 * Make the message durable. Takes ownership of t. `done` runs later on the
 * loop with err 0 once file and directory entries are on stable storage
 * (then, and only then, smtpd answers 250), or err = errno on failure
 * (nothing was acknowledged; the files are removed). Commits requested in
 * the same loop iteration share their directory syncs (group commit).
 */
void  spool_txn_commit(struct spool_txn *t, void (*done)(void *arg, int err, const char *queue_id), void *arg);
void  spool_txn_abort(struct spool_txn *t);                      /* takes ownership; removes files */
void  spool_set_loop(struct spool *s, struct ev_loop *loop);      /* commits need the loop */
/*
 * Who is told of every committed message (the scheduler): cb runs on the
 * loop once the message is durable, before the producer's own `done`, for
 * mail from sessions, bounces and (later) the sendmail drop alike.
 */
void  spool_set_announce(struct spool *s, void (*cb)(void *arg, const char *id), void *arg);

/* ---- address resolution (trivial-rewrite's job in Postfix) --------------- */

enum resolve_class {
	RESOLVE_LOCAL,        /* domain in mydestination: alias or system user */
	RESOLVE_VIRTUAL,      /* domain in virtual_mailbox_domains */
	RESOLVE_VIRTUAL_ALIAS,/* address rewritten by virtual_alias_maps (domain is virtual-alias only) */
	RESOLVE_RELAY,        /* domain in relay_domains */
	RESOLVE_REMOTE,       /* anything else: relaying, needs permit_mynetworks/sasl */
};
struct resolve_result {
	enum resolve_class cls;
	int known;            /* recipient exists (for reject_unlisted_recipient); 1 for RELAY/REMOTE */
};
struct resolver;
struct resolver *resolver_new(const struct conf *c, char *err, size_t errlen); /* opens the maps */
/* Other users' mailboxes go through the delivery helpers (set once, at start, when root). */
void resolver_use_helpers(int on);
void resolver_free(struct resolver *r);
/* 0, or -1 on a table error (the caller answers 451 4.3.0). addr is "user@domain" or "user". */
int  resolver_classify(struct resolver *r, const char *addr, struct resolve_result *res);

/* ---- cleanup: address rewriting on receipt (Postfix's cleanup(8)) ------- */
/*
 * Applied once, as smtpd hands the envelope to the spool, after its
 * restrictions judged the addresses as the client gave them.
 * cleanup_sender: sender_canonical_maps, then masquerade_domains.
 * cleanup_recipient: recipient_canonical_maps (the spool also keeps the
 * recipient as given, for orig_to=). Canonical lookups in Postfix's order
 * (user@domain, user for our domains, @domain; with recipient_delimiter,
 * user+ext forms first and an unmatched extension carried over), a result
 * "@other" keeps the user, repeated until the address stops changing (at
 * most 10 times). out gets the address to queue (the input when nothing
 * applies; "" stays ""). 1 rewritten, 0 unchanged, -1 table error (the
 * caller answers 451 4.3.0).
 */
int cleanup_sender(struct resolver *r, const char *addr, char *out, size_t outlen);
int cleanup_recipient(struct resolver *r, const char *addr, char *out, size_t outlen);
/*
 * Header addresses, in Postfix's classes (header_opts.c): sender headers
 * (From, Sender, Reply-To, Errors-To, Mail-Followup-To, Resent-From,
 * Resent-Sender, Return-Receipt-To) get sender_canonical_maps and
 * masquerading; recipient headers (To, Cc, Bcc, Apparently-To, Resent-To,
 * Resent-Cc, Resent-Bcc, Resent-Reply-To) recipient_canonical_maps and
 * masquerading. smtpd holds one such header at a time (bounded) and hands
 * it here whole.
 */
enum cleanup_hdr { CLEANUP_HDR_NONE, CLEANUP_HDR_SENDER, CLEANUP_HDR_RECIPIENT };
enum cleanup_hdr cleanup_header_class(const char *line, size_t n);  /* line starts "Name:" */
int  cleanup_headers_wanted(struct resolver *r);   /* any table or masquerade_domains set */
/*
 * One whole header (name, colon, value; folded lines end in LF) with its
 * addresses rewritten, into out (NUL-terminated). 1 rewritten, 0 nothing
 * to change, -1 table error or no room: the caller keeps the header.
 */
int  cleanup_header(struct resolver *r, enum cleanup_hdr cls, const char *hdr, size_t len,
    char *out, size_t outlen);
/*
 * The same splice for any per-address rewrite (smtp_generic_maps uses it):
 * fn returns 1 with the new address in res, 0 to keep it, -1 to give up;
 * *used (may be NULL) gets the length written.
 */
typedef int cleanup_rewrite_fn(void *arg, const char *addr, char *res, size_t cap);
int  cleanup_header_rewrite(const char *hdr, size_t len, cleanup_rewrite_fn *fn, void *arg,
    char *out, size_t outlen, size_t *used);
/* The address-list scanner (pure; fuzzed): fn(arg, start, end) for each address; fn's nonzero stops it. */
typedef int cleanup_addr_fn(void *arg, size_t start, size_t end);
int  cleanup_addr_scan(const char *v, size_t len, cleanup_addr_fn *fn, void *arg);

/*
 * `frugal check`: each system user's ~/.forward (never read: no process per
 * message) is reported as an error; none when local_mailbox_base is set.
 * passwd: a passwd-format file, or NULL for the system's users. Returns the count.
 */
int  resolver_check_forward(const struct conf *c, FILE *passwd, void (*report)(const char *text));

/* ---- queue manager ------------------------------------------------------- */

struct qmgr;
struct qmgr *qmgr_new(struct ev_loop *loop, struct spool *s, struct conf *c); /* takes a conf ref */
void qmgr_set_conf(struct qmgr *q, struct conf *c);  /* reload: takes a new ref, drops the old */
int  qmgr_recover(struct qmgr *q);     /* scan the spool at start-up; returns messages found */
void qmgr_enqueue(struct qmgr *q, const char *queue_id); /* a freshly committed message */
void qmgr_flush(struct qmgr *q);       /* retry deferred mail now (defer_transports too) */
void qmgr_rescan(struct qmgr *q);      /* look at committed/ now (a released message); no flush */
/*
 * Retry now the deferred mail with a recipient in DOMAIN (".example.com":
 * the domain and its subdomains): ETRN and `frugal queue flush DOMAIN`.
 * 0, or -1 when too many requests are pending (try again later).
 */
int  qmgr_flush_domain(struct qmgr *q, const char *domain);
int  qmgr_loaded(const struct qmgr *q); /* envelopes in memory (bounded) */
int  qmgr_active(const struct qmgr *q); /* messages in memory (active + deferred) */
void qmgr_set_delivery_limit(struct qmgr *q, int max_parallel); /* from limits/ */
void qmgr_free(struct qmgr *q);        /* waits for deliveries in flight */
/* The resolver the SMTP and LMTP clients use (MX, A, AAAA); NULL: none (their mail defers). */
struct dns;
void agent_set_dns(struct dns *d);
/*
 * The SMTP client's address parameters (inet_protocols, smtp_bind_address,
 * smtp_bind_address6): 0, or -1 with "file:line: reason" in err. serve,
 * reload and `frugal check` refuse what this refuses.
 */
struct conf;
int  smtpc_check_conf(const struct conf *c, char *err, size_t errlen);

/* ---- delivery helpers (PRODUCT.md 3.5) ----------------------------------- */
/*
 * Started as root, frugal writes mailboxes it does not own through small
 * long-lived helper processes: `virtual` runs as virtual_mailbox_owner,
 * `local` keeps root to become each system user per delivery (one thread
 * at a time, no fork). The daemon holds one socketpair to each; the master
 * restarts a helper that dies and hands the daemon the new socket.
 */
enum helper_which { HELPER_VIRTUAL, HELPER_LOCAL, HELPER_COUNT };
const char *helper_name(enum helper_which w);          /* "virtual", "local" */
void helper_init(struct ev_loop *loop);                 /* the daemon's side */
void helper_attach(enum helper_which w, int fd, long pid); /* a (new) helper's socket; loop thread */
int  helper_running(enum helper_which w);
long helper_pid(enum helper_which w);
long long helper_fds(void);                             /* the helpers' descriptors, last reported */
long long helper_socks(void);
void helper_shutdown(void);
void helper_pass_log(int logfd);                       /* after a reopen: the helpers write it too */
/* The helper process: serves requests on sock until the daemon goes; returns an exit code. */
int  helperd_run(enum helper_which w, int sock, struct conf *c, const char *conf_dir);

/* A domain as ETRN and `frugal queue flush DOMAIN` take it (".dom": subdomains too). */
int queue_flush_domain_valid(const char *domain);

/*
 * Local submission (queue/pickup.c): the daemon moves what frugal-postdrop
 * stored in $queue_directory/maildrop into the spool, within a second
 * (inotify, and a one-second scan as fallback). NULL when the maildrop
 * cannot be opened (logged; the daemon runs without it).
 */
struct pickup;
struct pickup *pickup_new(struct ev_loop *loop, struct spool *s, struct conf *c); /* takes a conf ref */
void pickup_set_conf(struct pickup *p, struct conf *c);   /* reload */
void pickup_set_dkim(struct pickup *p, struct dkim_keys *ks);   /* the generation's keys (a reference taken) */
void pickup_free(struct pickup *p);                       /* waits for its commit in flight */
/*
 * Started as root: the maildrop for a daemon running as uid, writable by
 * group drop_gid (frugal-postdrop is set-group-ID to it), mode 1730 as
 * Postfix's. 0 or -1 + err.
 */
int spool_prepare_maildrop(const char *queue_dir, uid_t uid, gid_t drop_gid, char *err, size_t errlen);

/* `frugal sendmail` and the binary invoked as sendmail, mailq, newaliases; an exit code (sysexits). */
int queue_cmd_sendmail(int argc, char **argv);

/* `frugal queue ...` and `mailq`; returns an exit code. */
int queue_cmd(int argc, char **argv);

/* Messages on disk by directory (`frugal status`); -1 where unreadable. */
struct queue_counts {
	long long committed, hold, maildrop, corrupt, incoming;
};
void queue_count(const char *queue_dir, struct queue_counts *n);

#endif
