/*
 * queue/queue_int.h: what the files of the queue room share and nobody else
 * may use: the parsed envelope of a committed message, the spool's helpers
 * for the scheduler and `frugal queue`, address expansion for delivery, the
 * Maildir writer and the bounce builder. Other rooms include queue.h only.
 */
#ifndef FRUGAL_QUEUE_QUEUE_INT_H
#define FRUGAL_QUEUE_QUEUE_INT_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "queue/queue.h"

/* Subdirectories of queue_directory (see the format comment in spool.c). */
#define SPOOL_INCOMING  "incoming"   /* being written; never acknowledged */
#define SPOOL_COMMITTED "committed"  /* synced and acknowledged */
#define SPOOL_FREE      "free"       /* emptied files of delivered messages, for reuse */
#define SPOOL_PID       "pid"        /* the daemon's pid file (frugal.pid); root's when started as root */
#define SPOOL_STATUS    "status"     /* what the daemon publishes for `frugal limits` (limits.status) */
#define SPOOL_HOLD      "hold"       /* frugal queue hold: kept, never scheduled, until released */
#define SPOOL_MAILDROP  "maildrop"   /* local submission (sendmail): mode 1730, group setgid_group */
#define SPOOL_CORRUPT   "corrupt"    /* committed files whose checksum failed at recovery, kept aside */

#define QUEUE_ID_MAX 24

/* Per-recipient state byte in the file (rewritten in place). */
#define RCPT_TODO      '-'
#define RCPT_DELIVERED 'D'
#define RCPT_BOUNCED   'B'

struct spool_rcpt {
	char  *addr;        /* owned */
	char  *orig;        /* owned; the address as the client gave it */
	char   status;      /* RCPT_* */
	off_t  status_off;  /* file offset of the status byte */
	int    notify;      /* RFC 3461 NOTIFY: 0 absent, DSN_NOTIFY_* bits (N record) */
	char  *orcpt;       /* owned; RFC 3461 ORCPT "type;address", NULL absent (P record) */
};

/* The message's delay-warning state byte (W record, rewritten in place). */
#define WARN_NONE  '-'
#define WARN_SENT  'W'

/* A committed message's envelope, parsed. Everything owned. */
struct spool_env {
	char   id[QUEUE_ID_MAX];
	time_t arrival;            /* seconds */
	long   arrival_usec;
	char  *sender;             /* "" for the null sender (bounces) */
	char  *client;
	struct spool_rcpt *rcpt;
	int    nrcpt;
	int    ntodo;              /* recipients still RCPT_TODO */
	off_t  msg_off;            /* first byte of the message */
	off_t  size;               /* message bytes (the L record), late headers not included */
	off_t  pre_off, pre_len;   /* the late headers (T record, Q4): after the message in the
	                              file, emitted before it (see struct msg_src); pre_len 0: none */
	int    version;            /* 1, 2 (FRUGAL-Q2: I and K records), 3 (Q3: DSN and W records),
	                              4 (Q4: T record) */
	int    dsn_ret;            /* RFC 3461 RET: 0 absent, DSN_RET_* (Y record) */
	char  *envid;              /* owned; RFC 3461 ENVID, decoded; NULL absent (V record) */
	char   warned;             /* WARN_*: a delay warning was sent (always WARN_NONE before Q3) */
	off_t  warned_off;         /* file offset of the W state byte; 0: no W record (Q1, Q2) */
	uint64_t sum;              /* K: the checksum stamped at commit (version 2) */
	off_t  len_off, sum_off;   /* where the L and K digits are, for spool_verify */
	off_t  late_off;           /* where the T digits are; 0: no T record (before Q4) */
};

/*
 * Parse an envelope from the first len bytes of a queue file of fsize bytes
 * (buf is modified; no NUL needed). 0; or -1 with errno EAGAIN (the envelope
 * continues past len), EBADMSG (torn: the L record disagrees with fsize),
 * EINVAL (not a queue file), ENOMEM. On failure e holds nothing to free.
 * spool_env_load() reads a file with it; exported for the fuzz target.
 */
int  spool_env_parse(struct spool_env *e, char *buf, size_t len, off_t fsize);

/*
 * Read the envelope of committed message `id` under queue_dir. With fdp
 * non-NULL the file stays open (O_RDWR) for delivery and marking, and *fdp
 * receives it (the caller charged LIM_FILE for it). 0, or -1 with errno
 * (ENOENT: gone; EINVAL: not a frugal queue file; ENOMEM).
 */
int  spool_env_load(const char *queue_dir, const char *id, struct spool_env *e, int *fdp);
int  spool_env_load_held(const char *queue_dir, const char *id, struct spool_env *e);  /* hold/ID */
/* `frugal queue hold|release`: committed/ID -> hold/ID (hold 1) or back (0), synced. 0 or -1 + errno. */
int  spool_hold(const char *queue_dir, const char *id, int hold);
void spool_env_free(struct spool_env *e);
/* Rewrite one recipient's state byte (not synced: the caller fdatasyncs). */
int  spool_env_mark(int fd, const struct spool_rcpt *r, char status);
/*
 * Record that the message's one delay warning was sent (the W byte, in
 * place, outside the checksum like the recipient bytes; not synced: the
 * caller syncs). The scheduler sends at most one per message, across
 * restarts: it checks e->warned first. -1 with errno ENOTSUP for a file
 * written before FRUGAL-Q3 (no W record: send no warning for it, or the
 * "at most one" would not hold across a restart), or the pwrite's errno.
 */
int  spool_env_mark_warned(int fd, struct spool_env *e);
/*
 * Recompute a committed file's checksum (version 2; a version 1 file passes).
 * 0 when it matches; -1 with errno EBADMSG when it does not (a file torn or
 * changed after its commit), or another errno when it cannot be read.
 */
int  spool_verify(int fd, const struct spool_env *e, off_t fsize);
/* Remove committed message `id`. 0 or -1 with errno. */
int  spool_remove(const char *queue_dir, const char *id);
/* A message is done: keep its emptied file for reuse (fd: its open descriptor), else unlink. */
int  spool_retire(struct spool *s, const char *id, int fd);
int  spool_sync(struct spool *s, int fd);   /* sync_shared of a queue file, without the fstat */
/* Is `id` a well-formed queue ID (uppercase hex)? Guards path building. */
int  spool_id_valid(const char *id);
/*
 * Recovery: remove every file in incoming/ (never acknowledged), call cb
 * for every committed message. Returns the number of messages, or -1.
 */
int  spool_scan(const char *queue_dir, int remove_incoming,
    void (*cb)(void *arg, const char *id), void *arg);
/*
 * The scheduler's scan: like spool_scan, but the caller bounds the memory.
 * Candidates are IDs greater than `after` (when set) that `skip` does not
 * refuse; cb gets the oldest `max` of them (0: all) in ID order, with each
 * file's mtime when want_mtime (a deferred message's next try). On return
 * `last` is the cursor: every candidate up to it was passed to cb, and
 * `truncated` says whether some were left out. Returns the number of
 * messages on disk, or -1.
 */
struct spool_scan {
	int    remove_incoming;
	int    max;
	const char *after;
	int    want_mtime;
	int  (*skip)(void *arg, const char *id, time_t mtime);
	void (*cb)(void *arg, const char *id, time_t mtime);
	void  *arg;
	char   last[QUEUE_ID_MAX];    /* out */
	int    truncated;             /* out */
};
int  spool_scan_ex(const char *queue_dir, struct spool_scan *sc);
/*
 * The smallest ID among commits in flight (renamed into committed/ perhaps,
 * not yet synced nor acknowledged): a scan must leave that ID and later
 * ones to the announcement. Returns how many are in flight (0: id is "").
 */
int  spool_oldest_commit(const struct spool *s, char *id, size_t len);

/* ---- expansion for delivery (resolve.c) --------------------------------- */

enum target_kind {
	TGT_MAILDIR,   /* path is a Maildir directory */
	TGT_MBOX,      /* path is an mbox file */
	TGT_DEFER,     /* reason says why (e.g. smtp not available, table error) */
	TGT_BOUNCE,    /* reason says why (e.g. user unknown) */
};

/* Who writes a mailbox (PRODUCT.md 3.5: no fork per message). */
enum target_via {
	VIA_SELF,      /* this process, under base (local_mailbox_base, or a mailbox it owns) */
	VIA_VIRTUAL,   /* the virtual helper, as virtual_mailbox_owner: rel under its virtual_mailbox_base */
	VIA_LOCAL,     /* the local helper, as the system user `rel` names, in that user's home */
};

struct target {
	enum target_kind kind;
	char  *addr;        /* final recipient (Delivered-To:); owned */
	enum target_via via;/* MAILDIR/MBOX: who writes it */
	char  *base;        /* owned; VIA_SELF: the directory the mailbox lies under */
	char  *rel;         /* owned; the mailbox under base ("dir/" = Maildir); VIA_LOCAL: the user */
	char  *path;        /* owned; the whole path, for the log and de-duplication; NULL for DEFER/BOUNCE */
	uid_t  uid;         /* the mailbox's owner */
	const char *service;/* "local", "virtual", "smtp" (for the log) */
	char   dsn[8];
	char   reason[256];
	int    never_expire;/* SMTP-bound: stays queued, never bounced by age */
	int    sent;        /* set by the delivery job: delivered and synced */
	int    hop_dsn;     /* the SMTP client, when sent: TGT_HOP_* (who owes a NOTIFY=SUCCESS notice) */
	int    finished;    /* qmgr, on the loop: its job is done (sent and kind may be read) */
};

/* RFC 3461 6.2: a next hop that offers DSN took NOTIFY over; one without gets "relayed" */
enum { TGT_HOP_FINAL = 0, TGT_HOP_RELAYED, TGT_HOP_PASSED };

struct target_list {
	struct target *v;
	int n, cap;
};

/*
 * Expand one envelope recipient into delivery targets (virtual aliases,
 * aliases, then the mailbox). 0, or -1 on allocation failure (the caller
 * defers the whole message). Table errors become TGT_DEFER targets.
 */
int  resolver_expand(struct resolver *r, const char *addr, struct target_list *out);
/* tests only: let resolver_new() open alias tables holding |command, /file, :include: */
void resolver_lax_tables(int on);
/* what queue/cleanup.c shares with the resolver */
int  resolver_local_domain(struct resolver *r, const char *domain); /* 1, 0, -1 table error */
struct cleanup *resolver_cleanup(struct resolver *r);
const char *resolver_delims(const struct resolver *r);
const char *resolver_myorigin(const struct resolver *r);
/* queue/cleanup.c: the tables, opened with the resolver's (which owns them) */
struct cleanup *cleanup_new(const struct conf *c, char *err, size_t errlen);
void cleanup_free(struct cleanup *cl);
/*
 * Is addr a key of recipient_canonical_maps? Postfix's smtpd skips the
 * unlisted-recipient check for such an address (smtpd_check.c,
 * check_rcpt_maps). 1, 0, -1 table error.
 */
int  cleanup_rcpt_listed(struct resolver *r, const char *addr);
/* masquerade_domains on one domain (pure): the masquerading domain, or NULL to keep it */
const char *cleanup_masquerade(char *const *masq, const char *domain);
void target_list_free(struct target_list *l);

/* ---- Maildir and mbox delivery (maildir.c); worker-thread safe ------------ */

/*
 * A message to deliver: the late headers (pre_off, pre_len: DKIM-Signature
 * and the like, appended to the queue file at commit) come FIRST, then the
 * message bytes (off, size). Readers go through msg_src_pread() and
 * msg_src_len(), which join the two, so no agent can forget the former.
 */
struct msg_src {
	int    fd;          /* the queue file */
	off_t  off;         /* message start */
	off_t  size;        /* message bytes */
	const char *sender;
	off_t  pre_off;     /* late headers in the file; pre_len 0: none */
	off_t  pre_len;
};
/* The bytes a reader emits: late headers and message. */
static inline off_t msg_src_len(const struct msg_src *m) { return m->pre_len + m->size; }
/*
 * Up to n bytes of that stream from position pos (0 = the first late
 * header), across the seam: the count read (short only at the end: 0 there),
 * or -1 with errno (EINTR retried).
 */
ssize_t msg_src_pread(const struct msg_src *m, void *buf, size_t n, off_t pos);
/* A msg_src for a parsed envelope. */
void msg_src_from_env(struct msg_src *m, int fd, const struct spool_env *e);

/* Header facts for loop detection, read once per delivery attempt. */
struct msg_headers {
	int    received;        /* count of Received: headers */
	char **delivered_to;    /* Delivered-To: values, lower-cased; owned */
	int    ndelivered_to;
	char  *header_text;     /* the header block (for bounces); owned */
	size_t header_len;
};
int  maildir_scan_headers(const struct msg_src *m, struct msg_headers *h);
void maildir_headers_free(struct msg_headers *h);
int  maildir_loop_check(const struct msg_headers *h, const char *rcpt, long hopcount_limit,
    char *reason, size_t rlen);   /* 1: bounce (reason set) */
/*
 * Deliver into the mailbox REL under the directory BASEFD: a Maildir when
 * REL ends with '/', else an mbox file. Every component below the base is
 * opened with O_NOFOLLOW (symbolic links refused), created 0700 when
 * missing, and must belong to OWNER; an mbox must be a regular file with
 * one link. Written as the calling thread's identity, synced before 0;
 * -1 with a reason: not delivered (temporary: defer).
 */
int  maildir_deliver_at(int basefd, const char *rel, uid_t owner, const struct msg_src *m,
    const char *rcpt, char *reason, size_t rlen);
/* The same with a base named by path (created when missing). */
int  maildir_deliver_under(const char *base, const char *rel, uid_t owner, const struct msg_src *m,
    const char *rcpt, char *reason, size_t rlen);
/*
 * Several deliveries by one thread, sharing their syncs: every Maildir file
 * is written into tmp/, then one sync per file system covers them all, then
 * all are renamed into new/ and one sync per file system covers the names
 * (an mbox is appended and synced on its own, in order). Each request's rc
 * and reason are its own, as if delivered alone: 0 delivered and durable,
 * -1 not delivered (defer). Requests of one batch share the calling
 * thread's identity, so the local helper, which changes it per user, sends
 * them one at a time.
 */
struct maildir_req {
	const char *base;              /* the base by path (created when missing), or NULL... */
	int basefd;                    /* ...and then this directory (the caller's) */
	const char *rel;
	uid_t owner;
	const struct msg_src *m;
	const char *rcpt;
	char *reason;                  /* the caller's buffer */
	size_t rlen;
	int rc;                        /* out */
	struct {                       /* maildir.c's, between the halves */
		int fds[2], fd;            /* tmp/ and new/, the staged file */
		int synced, err;           /* sync_staged's mark and result */
		dev_t dev[2];
		char name[700];
	} p;
};
void maildir_deliver_batch(struct maildir_req *r, int n);

/* ---- delivery helpers: the protocol (helper_proto.c) and the daemon's side (helper.c) ---- */

#define HELPER_FIELD_MAX 1024     /* sender, recipient, mailbox: each at most this */
#define HELPER_MSG_MAX   (64 + 3 * HELPER_FIELD_MAX)

struct helper_req {
	uint64_t id;
	int64_t  off, size;             /* the message's bytes in the passed descriptor */
	int64_t  pre_off, pre_len;      /* its late headers there (struct msg_src), written first */
	char sender[HELPER_FIELD_MAX + 1];   /* Return-Path */
	char rcpt[HELPER_FIELD_MAX + 1];     /* Delivered-To */
	char mailbox[HELPER_FIELD_MAX + 1];  /* virtual: path under virtual_mailbox_base; local: the user */
};
struct helper_reply {
	uint64_t id;
	int32_t  status;                /* 0 delivered and synced, else an errno value */
	int32_t  fds, socks;            /* the helper's descriptors and sockets now (the ledger) */
	char reason[256];
};
int  helper_req_encode(const struct helper_req *r, char *buf, size_t len);     /* bytes, or -1 */
int  helper_req_decode(const char *buf, size_t len, struct helper_req *r);      /* 0, or -1 */
int  helper_reply_encode(const struct helper_reply *r, char *buf, size_t len);
int  helper_reply_decode(const char *buf, size_t len, struct helper_reply *r);
/* the log file after rotation, daemon to helper (the descriptor rides along) */
int  helper_log_encode(char *buf, size_t len);                                  /* 4, or -1 */
int  helper_msg_is_log(const char *buf, size_t len);

/*
 * Ask helper w to deliver, from the loop or a worker: 0 when the request is
 * on its way, and cb(arg, idx, status, reason) then runs once on the loop
 * (status 0: delivered and synced; else an errno value and the reason: the
 * helper failed, died or timed out, the mail stays queued); -1 when it
 * could not be sent (reason set, cb never runs). Never blocks the loop.
 */
typedef void (*helper_cb)(void *arg, int idx, int status, const char *reason);
int  helper_send(enum helper_which w, int msgfd, const struct msg_src *m, const char *rcpt,
    const char *mailbox, helper_cb cb, void *arg, int idx, char *reason, size_t rlen);
/*
 * The same from a delivery worker that waits for the answer (the loop reads
 * it): 0 delivered and synced; -1 not (reason set; the mail stays queued).
 */
int  helper_deliver(enum helper_which w, int msgfd, const struct msg_src *m, const char *rcpt,
    const char *mailbox, char *reason, size_t rlen);

/* ---- routing (route.c) ---------------------------------------------------- */

struct route {
	char transport[32];     /* agent name: local, virtual, error, discard, smtp, relay, lmtp ... */
	char nexthop[256];      /* destination; error:/discard: their text */
};
struct router;
struct router *router_new(const struct conf *c, char *err, size_t errlen);
void router_free(struct router *rt);
/* transport_maps for addr, else the defaults given: 1 found, 0 defaults, -1 table error */
int  router_lookup(struct router *rt, const char *addr, const char *def_transport,
    const char *def_nexthop, struct route *out);
int  router_deferred(const struct router *rt, const char *transport);   /* in defer_transports */
/*
 * A mailbox's transport when mailbox_transport (local) or virtual_transport
 * (virtual) names another one, e.g. lmtp:unix:/run/dovecot/lmtp: 1 and out
 * set (an empty next hop keeps out's), 0 when the mailbox is written here.
 */
int  router_mailbox(const struct router *rt, int is_virtual, struct route *out);
const char *router_relayhost(const struct router *rt);                   /* "" when unset */

/* ---- delivery agents (agent.c): the one interface --------------------------- */

#include "core/worker.h"
#include "queue/sched.h"

/*
 * A job: one message, one next hop, a batch of its targets. The scheduler
 * (qmgr.c) fills it and calls agent->deliver(); the agent sets each
 * target's outcome (t->sent, or kind TGT_DEFER / TGT_BOUNCE with dsn and
 * reason), sets dest_failed when the destination itself failed (slow-start
 * feedback), and calls j->done(j) on the loop exactly once. Agents never
 * see sessions, the queue file's envelope or other jobs.
 */
struct agent_job {
	struct worker_job wj;        /* agents that block run on the delivery workers */
	struct sched_link link;      /* qmgr: the destination's wait list */
	const struct agent *agent;
	struct sched_dest *dest;     /* qmgr's */
	void  *owner;                /* qmgr's loaded message */
	void (*done)(struct agent_job *j);        /* qmgr's; on the loop */
	void (*after_work)(struct agent_job *j);  /* qmgr's; on the worker, after a worker agent's work */
	const char *queue_id;
	const char *qdir;            /* the queue directory (delivery helpers get a read-only fd) */
	struct msg_src src;          /* the message's bytes in the queue file */
	long   hop_limit;
	struct route route;
	struct target **t;           /* the batch: targets owned by the message */
	int   *rcpt;                 /* envelope recipient index of each target */
	int    n;
	struct msg_headers hdr;      /* read by an agent that needs them (loop detection) */
	int    hdr_ok;
	int    helper_wait;          /* the mailbox agent: helper answers still to come (loop only) */
	int    dest_failed;
	char   dest_reason[256];
	const char *relay;           /* the log's relay= ("local", "virtual", "none", a host) */
	double t_start, t_done;
	const struct conf *conf;     /* qmgr's current generation, valid during deliver() only */
	int    stopping;             /* dispatched while qmgr_free drains: network agents start nothing */
	int    idle_room;            /* set at dispatch: idle connections the delivery budget leaves beside the jobs */
	time_t arrival;              /* the message's arrival (the SMTP client's plain-text fallback) */
	int    conn_use;             /* the network agents: this job's transaction on its connection (1 new, 2.. reused) */
	/* the envelope's DSN facts, read-only (the network agents pass them on) */
	int    dsn_ret;              /* DSN_RET_*, 0 absent */
	const char *envid;           /* NULL absent */
	const struct spool_rcpt *env_rcpt;  /* env_rcpt[rcpt[i]]: NOTIFY and ORCPT of target i */
};

struct agent {
	const char *name;
	int    never_expire;         /* its mail is kept, never returned by age (no such agent yet) */
	void (*deliver)(struct agent_job *j);
};
const struct agent *agent_find(const char *transport);   /* an agent that does not exist: "unavailable" */

/* ---- the SMTP and LMTP clients (smtpc.c) ---------------------------------- */

/* smtp, relay and lmtp: sessions on the loop, no worker (DESIGN.md "The SMTP and LMTP clients") */
void smtpc_deliver(struct agent_job *j);
/* Shutdown: every session ends now, what it carried is deferred, done() runs for each job;
 * idle cached connections are closed (QUIT written if the socket takes it, never waited for). */
void smtpc_stop_all(void);
/* Close the oldest idle cached connections until at most `room` remain (qmgr: its free slots). */
void smtpc_idle_trim(int room);

/* The reply parser (smtp_reply.c): pure, bounded, fuzzed. */
#define SMTP_EXT_PIPELINING 0x01
#define SMTP_EXT_SIZE       0x02
#define SMTP_EXT_8BITMIME   0x04
#define SMTP_EXT_SMTPUTF8   0x08
#define SMTP_EXT_DSN        0x10
#define SMTP_EXT_STARTTLS   0x20
#define SMTP_EXT_AUTH       0x40
#define SMTP_EXT_CHUNKING   0x80
#define SMTP_REPLY_TEXT     512
struct smtp_reply {
	int      code;          /* 250; 0 before the first line */
	int      lines;
	int      ehlo;          /* in: collect EHLO keywords from the lines after the first */
	unsigned ext;           /* out: SMTP_EXT_* offered */
	unsigned long long size;/* out: the SIZE limit offered, 0 none */
	char     auth[256];     /* out: the AUTH mechanisms offered, space-separated (truncated) */
	size_t   len;
	char     text[SMTP_REPLY_TEXT]; /* the lines joined by a space, sanitized, truncated */
};
void smtp_reply_init(struct smtp_reply *r, int ehlo);
/* One line without its CRLF: 1 the reply is complete, 0 more lines follow, -1 malformed. */
int  smtp_reply_line(struct smtp_reply *r, const char *line, size_t n);
/* The reply's enhanced status code ("5.1.1"), else "X.0.0" from the code. */
void smtp_reply_dsn(const struct smtp_reply *r, char *dsn, size_t n);

/* ---- delivery status notifications (bounce.c) -------------------------- */

enum bounce_kind {
	BOUNCE_FAILURE,     /* Action: failed: a non-delivery report */
	BOUNCE_DELAY,       /* Action: delayed: a delay warning (Will-Retry-Until) */
	BOUNCE_SUCCESS,     /* Action: delivered (or the item's action): NOTIFY=SUCCESS asked for it */
};

struct bounce_item {
	const char *addr;   /* final recipient */
	const char *orig;   /* original recipient; NULL: env->rcpt[rcpt].orig */
	int rcpt;           /* index in env->rcpt of the envelope recipient it came from (its NOTIFY
	                       and ORCPT); out of range: none (NOTIFY absent, no ORCPT) */
	const char *dsn;    /* "5.1.1"; NULL: the kind's default (5.0.0, 4.0.0, 2.0.0). A 4.x.x in a
	                       failure is reported as 5.x.x (an expired deferral) */
	const char *reason; /* Diagnostic-Code text ("smtp;" when it is an SMTP reply) */
	const char *action; /* NULL: the kind's; else "relayed" (next hop without DSN), "expanded" */
};

/*
 * Queue one delivery status notification about message env (RFC 3464, as
 * Postfix writes them) to env->sender from the null sender; for a failure
 * of a message from <>, to 2bounce_notice_recipient from
 * double_bounce_sender. Items are filtered by their recipient's NOTIFY
 * (absent: failure and delay; NEVER: none; SUCCESS only when asked). h
 * gives the headers to return (may be NULL); msgfd is the queue file (for
 * RET=FULL, up to bounce_size_limit; -1: headers only). Nothing is kept:
 * items, h and env may go once this returns.
 *
 * Returns 0: queued; done(arg, err, new_id) runs later on the loop, err 0
 * once the notice is durable (then "ID: sender non-delivery notification:
 * NEWID" and its delay / delivery status / postmaster siblings are logged),
 * and only then may the caller mark the recipients. 1: nothing to send
 * (every item's NOTIFY said no, a delay or success notice for a bounce, a
 * failed double bounce: discarded with a warning); done will not run, the
 * caller marks at once. -1 with errno: done will not run; nothing queued.
 */
int  bounce_notify(struct spool *s, const struct conf *c, enum bounce_kind kind,
    const struct spool_env *env, const struct msg_headers *h, int msgfd,
    const struct bounce_item *items, int nitems,
    void (*done)(void *arg, int err, const char *id), void *arg);
/* The former entry point: bounce_notify(BOUNCE_FAILURE, ..., msgfd -1, ...). */
int  bounce_queue(struct spool *s, const struct conf *c, const struct spool_env *env,
    const struct msg_headers *h, const struct bounce_item *items, int nitems,
    void (*done)(void *arg, int err, const char *id), void *arg);

/* What the scheduler did (tests, the bench). */
struct qmgr_stats {
	long long jobs;          /* jobs handed to agents */
	long long targets;       /* targets in them */
	long long peak_msgs;     /* most messages known in memory at once (<= qmgr_message_active_limit) */
	long long peak_loaded;   /* most envelopes loaded at once */
};
void qmgr_stats(const struct qmgr *q, struct qmgr_stats *st);

/* Deliveries in flight plus messages waiting in the active list (tests, shutdown). */
int  qmgr_busy(const struct qmgr *q);

/* Postfix's delay formatting: 0.12, 1.2, 12, 3601. */
void queue_fmt_delay(char *out, size_t n, double d);

/* write(2) until done or a real error (EINTR retried); 0 or -1 with errno */
int queue_write_all(int fd, const void *p, size_t n);

/*
 * queue/cmd.c: the mailq listing (Postfix's layout) of qdir into out; max > 0
 * lists at most max queued and max held messages, then says how many more
 * (the daemon's snapshot for unprivileged users, queue/pickup.c). 0 or -1.
 */
int queue_list_write(FILE *out, const char *qdir, int max);
#define MAILQ_SNAPSHOT  "mailq"      /* in SPOOL_STATUS: the listing the daemon writes on request */
#define MAILQ_MAX       1000         /* messages in that listing */

#endif
