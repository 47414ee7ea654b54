/*
 * queue/spool.c: the on-disk queue. Owns queue_directory's incoming/ and
 * committed/ subdirectories, queue IDs, the write path of a message, group
 * commit, and reading envelopes back (recovery, the scheduler, `frugal
 * queue`). Must never acknowledge a message (done with err 0) before the
 * file data and the directory entry naming it are on stable storage, and
 * never block the loop on a sync.
 *
 * On-disk format. A message is one file, named by its queue ID:
 *   incoming/ID    while it is written; never acknowledged, so recovery
 *                  removes whatever it finds here.
 *   committed/ID   renamed here at commit, then one sync covers data and name.
 * The file is text records, one per LF-terminated line, then the message:
 *   FRUGAL-Q4                 magic and format version (Q1: no I and K records;
 *                             Q2: no W, Y, V, N, P records; Q3: no T record;
 *                             all still read)
 *   I <queue id>              the file's own name: a file renamed or recycled
 *                             under another name is never read as that message
 *   A <sec>.<usec>            arrival time (spool_txn_new)
 *   S <sender>                envelope sender; empty for the null sender
 *   C <client>                "HOST[ADDR]" the message came from
 *   W <st>                    delay warning state, one byte rewritten in place
 *                             like a recipient's: '-' none sent, 'W' sent
 *   Y <F|H>                   RFC 3461 RET=FULL or HDRS; absent: not given
 *   V <envid>                 RFC 3461 ENVID, xtext-decoded; absent: not given
 *   R <st> <recipient>        one per recipient; <st> is one byte:
 *   O <original recipient>      '-' to do, 'D' delivered, 'B' bounced;
 *                             each R line is followed by its O line, then
 *   N <mask>                  RFC 3461 NOTIFY as decimal DSN_NOTIFY_* bits
 *                             (1 NEVER, 2 SUCCESS, 4 FAILURE, 8 DELAY); absent: not given
 *   P <type;address>          RFC 3461 ORCPT, address decoded; absent: not given
 *   L <20 digits>             message length, zeros until commit stamps it
 *   T <20 digits>             late headers' length (Q4), zeros until commit stamps it
 *   K <16 hex digits>         checksum (FNV-1a 64) of the whole file as written,
 *                             with every state byte (R and W) '-' and the L, T and K
 *                             digits '0': what never changes after commit; zeros until
 *                             commit stamps it. Recovery checks it (spool_verify)
 *   E <nrcpt>                 end of envelope
 *   <message bytes>           LF line ends, as smtpd streamed them
 *   <late headers>            T bytes of header lines known only at the end of
 *                             data (DKIM-Signature:), LF line ends; every reader
 *                             of the message emits them FIRST (struct msg_src):
 *                             they were computed after the headers had streamed
 *                             into the file, and a file is never rewritten
 * The state byte is rewritten in place (pwrite + sync) after each
 * delivery, so a restart resumes where it stopped: SMTP addresses cannot
 * hold LF, so a line-based envelope needs no escaping, and a one-byte
 * in-place write cannot tear.
 *
 * Commit: the late headers are appended, the lengths and the checksum are
 * stamped into the L, T and K records, the file is renamed into committed/, and one sync_shared()
 * (core/sync.h: a syncfs shared by every commit and delivery in flight)
 * makes data and directory entry durable together; only then is the commit
 * acknowledged. A crash between rename and sync can leave a committed/ file
 * whose data did not all reach the disk: its length no longer matches the
 * L and T records (file size = envelope + L + T), or its I record still names the message the recycled file held
 * before, and recovery removes it (it was never acknowledged). A file whole
 * and rightly named whose checksum fails changed after its commit: recovery
 * moves it to corrupt/ (kept for the admin, never delivered as it is). One
 * sync per commit, not two.
 *
 * Where the work happens. The loop thread only fills a WBUF_SIZE buffer:
 * a message that fits (envelope and content, the common case) is created,
 * written, stamped, renamed and synced by one worker job, so the event loop
 * makes no file-system call for it. Creating an inode is not cheap on ext4
 * under churn (the allocator skips recently deleted inodes, reading inode
 * table blocks): measured at a quarter of the loop thread's CPU when it
 * created the file itself. A bigger message gets its file on the loop at
 * the first full buffer and streams from there (bounded memory).
 *
 * Recycling. A delivered message's file is not unlinked but renamed into
 * free/ and truncated to zero; a new message takes a file from there
 * (rename into incoming/ under its new ID, open with O_TRUNC) before it
 * creates one. Up to SPOOL_POOL files are kept, more are unlinked. Why:
 * without inode churn nothing is allocated or freed in the inode tables per
 * message; on ext4 without a journal the allocator otherwise scans the
 * inodes deleted in the last minutes at every creation (measured: 40% of
 * the daemon's CPU under load). free/ is never read as mail: a crash can
 * leave a file there untruncated (O_TRUNC at reuse empties it). The retiring
 * rename is synced (by qmgr, through the shared sync) before the delivery
 * counts as done, so only a delivery in flight at a crash is repeated
 * (at-least-once: the message is still in committed/). Since the rename
 * comes first, a committed/ file can only be emptied by a crash on a file
 * system that reorders metadata; recovery removes it like a torn one.
 *
 * Queue IDs are the arrival time in microseconds in uppercase hex, made
 * strictly increasing within the process and unique on disk: committed/ID
 * is checked when the ID is drawn, incoming/ID is created with O_EXCL, and
 * the rename into committed/ refuses to replace (RENAME_NOREPLACE), so a
 * clock stepping back cannot reuse the ID of a message still queued.
 */
#include "queue/queue_int.h"

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/fd.h"
#include "core/file.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/sync.h"
#include "core/worker.h"
#include "limits/limits.h"

#define SPOOL_MAGIC "FRUGAL-Q4\n"
#define SPOOL_MAGIC_Q3 "FRUGAL-Q3\n"   /* read: queues written before the late headers (T) */
#define SPOOL_MAGIC_Q2 "FRUGAL-Q2\n"   /* read: queues written before the DSN records */
#define SPOOL_MAGIC_Q1 "FRUGAL-Q1\n"   /* read for queues written by earlier versions */
#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME  0x100000001b3ULL
#define WBUF_SIZE   (32 * 1024)      /* one write() for a typical message */
#define ENV_MAX     (8 * 1024 * 1024) /* a bigger envelope is not ours */
#define SPOOL_POOL  128               /* emptied files kept in free/ for reuse */

struct spool {
	char  *dir;                 /* queue_directory; owned */
	int    fd_incoming;         /* directory fds (openat, rename) */
	int    fd_committed;        /* fsynced by the group commit */
	int    fd_free;             /* free/: emptied files for reuse */
	dev_t  dev;                 /* the queue's file system, for spool_sync */
	pthread_mutex_t pool_mu;    /* guards pool[] and npool: workers and the loop */
	char   pool[SPOOL_POOL][QUEUE_ID_MAX]; /* names in free/ */
	int    npool;
	struct ev_loop *loop;
	int    inflight;            /* commits not yet acknowledged */
	uint64_t last_id;
	void (*announce)(void *arg, const char *id);   /* the scheduler, told of every commit */
	struct spool_txn *committing;  /* commits in flight (loop thread only), for spool_oldest_commit */
	void  *announce_arg;
};

struct spool_txn {
	struct spool *s;
	char   id[QUEUE_ID_MAX];
	struct timeval arrival;
	char  *sender, *client;     /* owned */
	int    dsn_ret;             /* RFC 3461 RET: 0 or DSN_RET_* */
	char  *envid;               /* owned; RFC 3461 ENVID or NULL */
	struct spool_rcpt *rcpt;    /* owned; status_off unused here */
	int    nrcpt, rcpt_cap;
	int    fd;                  /* incoming/ID; -1 until created, -1 once closed */
	int    created;             /* incoming/ID exists (created by us) */
	int    opened;              /* envelope written */
	int    err;                 /* sticky errno of a failed write */
	off_t  size;                /* message bytes accepted */
	off_t  len_off;             /* file offset of the L record's value */
	off_t  late_off;            /* file offset of the T record's value */
	char  *late;                /* owned; late headers (spool_txn_late_header), LF line ends */
	size_t late_len;
	const struct spool_filter *filt;  /* sees the message bytes, adds late headers at commit */
	void  *filt_arg;            /* owned through filt->free */
	off_t  sum_off;             /* file offset of the K record's value */
	uint64_t sum;               /* FNV-1a of every byte put so far */
	char  *wbuf;                /* owned; WBUF_SIZE */
	size_t wlen;
	off_t  flushed;             /* bytes already written to the file */
	struct worker_job job;      /* create/write + rename + sync */
	void (*done)(void *arg, int err, const char *queue_id);
	void  *done_arg;
	struct spool_txn *cnext, *cprev;   /* the spool's list of commits in flight */
};

/* ---- helpers --------------------------------------------------------------- */

int queue_write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	ssize_t w;

	while (n > 0) {
		if ((w = write(fd, c, n)) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

int spool_id_valid(const char *id)
{
	size_t i;

	for (i = 0; id[i]; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'A' && id[i] <= 'F')))
			return 0;
	return i > 0 && i < QUEUE_ID_MAX;
}

/* ---- open / close ---------------------------------------------------------- */

struct spool *spool_open(const char *queue_dir, char *err, size_t errlen)
{
	struct spool *s;
	struct stat st;
	char path[4096];
	/* "sts": the MTA-STS policy cache (queue/mta_sts.c), mail_owner's like the message directories */
	static const char *const sub[] = { SPOOL_INCOMING, SPOOL_COMMITTED, SPOOL_FREE, SPOOL_PID, SPOOL_STATUS, SPOOL_HOLD,
		"sts", "data" };
	DIR *d = NULL;
	struct dirent *de;
	size_t i;
	int dfd = -1;

	/*
	 * As Postfix lays out its queue: the top and pid/ are readable by any
	 * admin account (`frugal limits`, `frugal status` read the status and pid
	 * files there), the message directories are mail_owner's alone.
	 */
	if (file_mkdir_p(queue_dir, 0755) < 0) {
		snprintf(err, errlen, "create %s: %s", queue_dir, strerror(errno));
		return NULL;
	}
	for (i = 0; i < sizeof sub / sizeof sub[0]; i++) {
		snprintf(path, sizeof path, "%s/%s", queue_dir, sub[i]);
		if (mkdir(path, strcmp(sub[i], SPOOL_PID) == 0 || strcmp(sub[i], SPOOL_STATUS) == 0 ? 0755 : 0700) < 0 &&
		    errno != EEXIST) {
			snprintf(err, errlen, "create %s: %s", path, strerror(errno));
			return NULL;
		}
	}
	/*
	 * The maildrop (queue/pickup.c). Unprivileged there is one user: its
	 * own group writes it. Started as root, spool_prepare_maildrop set it up.
	 */
	snprintf(path, sizeof path, "%s/%s", queue_dir, SPOOL_MAILDROP);
	if (mkdir(path, 0700) == 0)
		chmod(path, 01730);
	else if (errno != EEXIST) {
		snprintf(err, errlen, "create %s: %s", path, strerror(errno));
		return NULL;
	}
	if ((s = mem_calloc(1, sizeof *s)) == NULL || (s->dir = mem_strdup(queue_dir)) == NULL) {
		mem_free(s);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->fd_incoming = s->fd_committed = s->fd_free = -1;
	pthread_mutex_init(&s->pool_mu, NULL);
	snprintf(path, sizeof path, "%s/%s", queue_dir, SPOOL_INCOMING);
	if ((s->fd_incoming = fd_open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		goto fail;
	snprintf(path, sizeof path, "%s/%s", queue_dir, SPOOL_COMMITTED);
	if ((s->fd_committed = fd_open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		goto fail;
	if (fstat(s->fd_committed, &st) < 0)
		goto fail;
	s->dev = st.st_dev;
	snprintf(path, sizeof path, "%s/%s", queue_dir, SPOOL_FREE);
	if ((s->fd_free = fd_open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		goto fail;
	/* the pool left by the last run; what it cannot hold (or a foreign name) goes */
	if ((dfd = fd_dup(s->fd_free)) >= 0 && (d = fdopendir(dfd)) == NULL)
		fd_close(dfd);
	if (dfd >= 0 && d != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			if (s->npool < SPOOL_POOL && spool_id_valid(de->d_name))   /* < QUEUE_ID_MAX */
				memcpy(s->pool[s->npool++], de->d_name, strlen(de->d_name) + 1);
			else
				unlinkat(s->fd_free, de->d_name, 0);
		}
		fd_closedir(d);
	}
	return s;
fail:
	snprintf(err, errlen, "open %s: %s", path, strerror(errno));
	spool_close(s);
	return NULL;
}

/* one directory of the layout: created with its owner, or set right through a descriptor */
static int ensure_dir(int qfd, const char *name, mode_t mode, uid_t uid, gid_t gid, char *err, size_t errlen)
{
	struct stat st;
	int fd;

	if ((fd = fd_openat(qfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0 && errno == ENOENT) {
		if (mkdirat(qfd, name, mode) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "create %s: %s", name, strerror(errno));
			return -1;
		}
		fd = fd_openat(qfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", name, errno == ELOOP || errno == ENOTDIR
		    ? "a symbolic link or not a directory: refused" : strerror(errno));
		return -1;
	}
	/*
	 * fchown on a directory opened without following links changes that
	 * directory and nothing else (directories cannot be hard-linked).
	 */
	if (fstat(fd, &st) < 0 || ((st.st_uid != uid || st.st_gid != gid) && fchown(fd, uid, gid) < 0) ||
	    ((st.st_mode & 07777) != mode && fchmod(fd, mode) < 0)) {
		snprintf(err, errlen, "%s: %s", name, strerror(errno));
		fd_close(fd);
		return -1;
	}
	fd_close(fd);
	return 0;
}

int spool_prepare(const char *queue_dir, uid_t uid, gid_t gid, char *err, size_t errlen)
{
	static const struct { const char *name; mode_t mode; int daemons; } sub[] = {
		{ SPOOL_INCOMING, 0700, 1 }, { SPOOL_COMMITTED, 0700, 1 }, { SPOOL_FREE, 0700, 1 },
		{ SPOOL_STATUS, 0755, 1 }, { SPOOL_PID, 0755, 0 }, { SPOOL_HOLD, 0700, 1 },
		{ "sts", 0700, 1 },   /* the MTA-STS policy cache (queue/mta_sts.c) */
		{ "data", 0700, 1 },  /* the daemon's own state, as Postfix's data_directory (greylist store) */
	};
	struct stat st;
	size_t i;
	int qfd, rc = 0;

	if (file_mkdir_p(queue_dir, 0755) < 0 ||
	    (qfd = fd_open(queue_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		snprintf(err, errlen, "%s: %s", queue_dir, strerror(errno));
		return -1;
	}
	/* the top is root's: the daemon must not be able to swap the directories root uses */
	if (fstat(qfd, &st) < 0 || ((st.st_uid != 0 || st.st_gid != 0) && fchown(qfd, 0, 0) < 0) ||
	    ((st.st_mode & 07777) != 0755 && fchmod(qfd, 0755) < 0)) {
		snprintf(err, errlen, "%s: %s", queue_dir, strerror(errno));
		fd_close(qfd);
		return -1;
	}
	for (i = 0; i < sizeof sub / sizeof sub[0] && rc == 0; i++) {
		char e[300];

		if ((rc = ensure_dir(qfd, sub[i].name, sub[i].mode, sub[i].daemons ? uid : 0,
		    sub[i].daemons ? gid : 0, e, sizeof e)) < 0)
			snprintf(err, errlen, "%s/%s", queue_dir, e);
	}
	fd_close(qfd);
	return rc;
}

int spool_prepare_maildrop(const char *queue_dir, uid_t uid, gid_t drop_gid, char *err, size_t errlen)
{
	int qfd, rc;
	char e[300];

	if ((qfd = fd_open(queue_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		snprintf(err, errlen, "%s: %s", queue_dir, strerror(errno));
		return -1;
	}
	/* sticky: a user may remove only its own files; no read: nobody lists the others' */
	if ((rc = ensure_dir(qfd, SPOOL_MAILDROP, 01730, uid, drop_gid, e, sizeof e)) < 0)
		snprintf(err, errlen, "%s/%s", queue_dir, e);
	fd_close(qfd);
	return rc;
}

const char *spool_dir(const struct spool *s) { return s->dir; }

void spool_set_loop(struct spool *s, struct ev_loop *loop)
{
	s->loop = loop;
}

void spool_close(struct spool *s)
{
	if (s == NULL)
		return;
	/* a commit in flight still owns a worker job that points at us */
	while (s->loop && s->inflight > 0)
		ev_run(s->loop, EVRUN_ONCE);
	fd_close(s->fd_incoming);
	fd_close(s->fd_committed);
	fd_close(s->fd_free);
	pthread_mutex_destroy(&s->pool_mu);
	mem_free(s->dir);
	mem_free(s);
}

/* ---- transactions ---------------------------------------------------------- */

static uint64_t next_id_value(struct spool *s, struct timeval *tv)
{
	uint64_t v;

	gettimeofday(tv, NULL);
	v = ((uint64_t)tv->tv_sec << 20) | (uint64_t)tv->tv_usec;
	if (v <= s->last_id)
		v = s->last_id + 1;
	s->last_id = v;
	return v;
}

struct spool_txn *spool_txn_new(struct spool *s, const char *sender, const char *client)
{
	struct spool_txn *t;
	int tries, e = ENOMEM;

	if (!fd_room(FD_FILE, 1)) {   /* the file comes later (on a worker): refuse now, not at DATA */
		errno = EMFILE;
		return NULL;
	}
	if ((t = mem_calloc(1, sizeof *t)) == NULL)
		goto fail;
	t->s = s;
	t->fd = -1;
	if ((t->sender = mem_strdup(sender ? sender : "")) == NULL ||
	    (t->client = mem_strdup(client ? client : "")) == NULL)
		goto fail;
	for (tries = 0; tries < 100; tries++) {
		snprintf(t->id, sizeof t->id, "%llX",
		    (unsigned long long)next_id_value(s, &t->arrival));
		if (faccessat(s->fd_committed, t->id, F_OK, 0) < 0)
			return t;    /* else the clock went back: this ID is still queued */
	}
	log_warning("qmgr", "no free queue ID in %s/%s after 100 tries", s->dir, SPOOL_COMMITTED);
	e = EEXIST;
fail:
	if (t) {
		mem_free(t->sender);
		mem_free(t->client);
		mem_free(t);
	}
	errno = e;
	return NULL;
}

/* incoming/ID, exclusively; on the loop for a big message, else on a worker */
static int txn_create(struct spool_txn *t)
{
	struct spool *s = t->s;
	char name[QUEUE_ID_MAX];

	/* a recycled file first: no inode to allocate (see "Recycling" above) */
	for (;;) {
		pthread_mutex_lock(&s->pool_mu);
		if (s->npool == 0) {
			pthread_mutex_unlock(&s->pool_mu);
			break;
		}
		memcpy(name, s->pool[--s->npool], QUEUE_ID_MAX);
		pthread_mutex_unlock(&s->pool_mu);
		if (renameat2(s->fd_free, name, s->fd_incoming, t->id, RENAME_NOREPLACE) < 0)
			continue;   /* gone (an admin cleaned up) or no RENAME_NOREPLACE: try another */
		t->created = 1;     /* incoming/ID is ours now, whatever follows */
		t->fd = fd_openat(s->fd_incoming, t->id, O_WRONLY | O_TRUNC | O_CLOEXEC);
		if (t->fd >= 0)
			return 0;
		t->err = errno;
		return -1;
	}
	t->fd = fd_openat(s->fd_incoming, t->id, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (t->fd < 0) {
		t->err = errno;
		return -1;
	}
	t->created = 1;
	return 0;
}

const char *spool_txn_id(const struct spool_txn *t) { return t->id; }
off_t spool_txn_size(const struct spool_txn *t) { return t->size; }

int spool_txn_rcpt(struct spool_txn *t, const char *rcpt, const char *orig_rcpt)
{
	struct spool_rcpt *r;

	if (t->opened || strchr(rcpt, '\n') || (orig_rcpt && strchr(orig_rcpt, '\n'))) {
		errno = EINVAL;
		return -1;
	}
	if (t->nrcpt == t->rcpt_cap) {
		int cap = t->rcpt_cap ? t->rcpt_cap * 2 : 4;
		if ((r = mem_realloc(t->rcpt, (size_t)cap * sizeof *r)) == NULL)
			return -1;
		t->rcpt = r;
		t->rcpt_cap = cap;
	}
	r = &t->rcpt[t->nrcpt];
	memset(r, 0, sizeof *r);
	if ((r->addr = mem_strdup(rcpt)) == NULL)
		return -1;
	if ((r->orig = mem_strdup(orig_rcpt ? orig_rcpt : rcpt)) == NULL) {
		mem_free(r->addr);
		return -1;
	}
	r->status = RCPT_TODO;
	t->nrcpt++;
	return 0;
}

/* a value for one envelope line: no line end, and bounded like a command line */
static int dsn_value_ok(const char *v)
{
	return v == NULL || (strchr(v, '\n') == NULL && strlen(v) <= 1024);
}

int spool_txn_dsn(struct spool_txn *t, int ret, const char *envid)
{
	char *e = NULL;

	if (t->opened || ret < 0 || ret > DSN_RET_HDRS || !dsn_value_ok(envid))
		return errno = EINVAL, -1;
	if (envid && (e = mem_strdup(envid)) == NULL)
		return -1;
	mem_free(t->envid);
	t->envid = e;
	t->dsn_ret = ret;
	return 0;
}

int spool_txn_rcpt_dsn(struct spool_txn *t, int notify, const char *orcpt)
{
	struct spool_rcpt *r;
	char *o = NULL;

	if (t->opened || t->nrcpt == 0 || notify < 0 || notify > 15 || !dsn_value_ok(orcpt))
		return errno = EINVAL, -1;
	if (orcpt && (o = mem_strdup(orcpt)) == NULL)
		return -1;
	r = &t->rcpt[t->nrcpt - 1];
	mem_free(r->orcpt);
	r->orcpt = o;
	r->notify = notify;
	return 0;
}

static int txn_flush(struct spool_txn *t)
{
	if (t->wlen == 0)
		return 0;
	if (t->fd < 0 && txn_create(t) < 0)
		return -1;
	if (queue_write_all(t->fd, t->wbuf, t->wlen) < 0) {
		t->err = errno;
		return -1;
	}
	t->flushed += (off_t)t->wlen;
	t->wlen = 0;
	return 0;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *c = p;

	while (n--)
		h = (h ^ *c++) * FNV_PRIME;
	return h;
}

/* append to the write buffer; big pieces go straight to the file */
static int txn_put(struct spool_txn *t, const void *p, size_t n)
{
	if (t->err) {
		errno = t->err;
		return -1;
	}
	/* as written: state bytes '-', L and K zeros: what recovery recomputes */
	t->sum = fnv(t->sum, p, n);
	if (t->wlen + n > WBUF_SIZE && txn_flush(t) < 0)
		return -1;
	if (n >= WBUF_SIZE) {
		if ((t->fd < 0 && txn_create(t) < 0) || queue_write_all(t->fd, p, n) < 0) {
			t->err = errno;
			return -1;
		}
		t->flushed += (off_t)n;
		return 0;
	}
	memcpy(t->wbuf + t->wlen, p, n);
	t->wlen += n;
	return 0;
}

static int txn_putf(struct spool_txn *t, const char *a, const char *b, const char *c)
{
	if (txn_put(t, a, strlen(a)) < 0 || (b && txn_put(t, b, strlen(b)) < 0) ||
	    (c && txn_put(t, c, strlen(c)) < 0) || txn_put(t, "\n", 1) < 0)
		return -1;
	return 0;
}

int spool_txn_open(struct spool_txn *t)
{
	char line[64];
	int i;

	if (t->opened || t->err) {
		errno = t->err ? t->err : EINVAL;
		return -1;
	}
	if ((t->wbuf = mem_alloc(WBUF_SIZE)) == NULL)
		return -1;
	t->opened = 1;
	t->sum = FNV_OFFSET;
	snprintf(line, sizeof line, "A %lld.%06ld", (long long)t->arrival.tv_sec,
	    (long)t->arrival.tv_usec);
	if (txn_put(t, SPOOL_MAGIC, strlen(SPOOL_MAGIC)) < 0 || txn_putf(t, "I ", t->id, NULL) < 0 ||
	    txn_putf(t, line, NULL, NULL) < 0 ||
	    txn_putf(t, "S ", t->sender, NULL) < 0 || txn_putf(t, "C ", t->client, NULL) < 0 ||
	    txn_putf(t, "W -", NULL, NULL) < 0)
		return -1;
	if (t->dsn_ret && txn_putf(t, t->dsn_ret == DSN_RET_HDRS ? "Y H" : "Y F", NULL, NULL) < 0)
		return -1;
	if (t->envid && txn_putf(t, "V ", t->envid, NULL) < 0)
		return -1;
	for (i = 0; i < t->nrcpt; i++) {
		if (txn_putf(t, "R - ", t->rcpt[i].addr, NULL) < 0 ||
		    txn_putf(t, "O ", t->rcpt[i].orig, NULL) < 0)
			return -1;
		snprintf(line, sizeof line, "N %d", t->rcpt[i].notify);
		if ((t->rcpt[i].notify && txn_putf(t, line, NULL, NULL) < 0) ||
		    (t->rcpt[i].orcpt && txn_putf(t, "P ", t->rcpt[i].orcpt, NULL) < 0))
			return -1;
	}
	/* where the L value sits: the bytes so far (flushed + buffered), past "L " */
	t->len_off = t->flushed + (off_t)t->wlen + 2;
	if (txn_putf(t, "L 00000000000000000000", NULL, NULL) < 0)
		return -1;
	t->late_off = t->flushed + (off_t)t->wlen + 2;
	if (txn_putf(t, "T 00000000000000000000", NULL, NULL) < 0)
		return -1;
	t->sum_off = t->flushed + (off_t)t->wlen + 2;
	if (txn_putf(t, "K 0000000000000000", NULL, NULL) < 0)
		return -1;
	snprintf(line, sizeof line, "E %d", t->nrcpt);
	return txn_putf(t, line, NULL, NULL);
}

int spool_txn_write(struct spool_txn *t, const void *p, size_t n)
{
	if (!t->opened) {
		errno = EINVAL;
		return -1;
	}
	if (txn_put(t, p, n) < 0)
		return -1;
	t->size += (off_t)n;
	if (t->filt && t->filt->data(t->filt_arg, p, n) < 0) {
		t->err = errno ? errno : EIO;
		return -1;
	}
	return 0;
}

int spool_txn_late_header(struct spool_txn *t, const char *hdr)
{
	size_t n = strlen(hdr), add;
	char *nl;

	/* one or more whole lines; a header that does not end its line gets its LF */
	add = n + (n == 0 || hdr[n - 1] != '\n');
	if (n == 0 || hdr[0] == ' ' || hdr[0] == '\t' || memchr(hdr, '\r', n) || strstr(hdr, "\n\n") ||
	    t->late_len + add > SPOOL_LATE_MAX)
		return errno = EINVAL, -1;
	if ((nl = mem_realloc(t->late, t->late_len + add)) == NULL)
		return -1;
	t->late = nl;
	memcpy(t->late + t->late_len, hdr, n);
	if (add > n)
		t->late[t->late_len + n] = '\n';
	t->late_len += add;
	return 0;
}

void spool_txn_filter(struct spool_txn *t, const struct spool_filter *f, void *arg)
{
	if (t->filt && t->filt->free)
		t->filt->free(t->filt_arg);
	t->filt = f;
	t->filt_arg = arg;
}

static void txn_free(struct spool_txn *t)
{
	int i;

	if (t->fd >= 0) {
		fd_close(t->fd);
		t->fd = -1;
	}
	for (i = 0; i < t->nrcpt; i++) {
		mem_free(t->rcpt[i].addr);
		mem_free(t->rcpt[i].orig);
		mem_free(t->rcpt[i].orcpt);
	}
	mem_free(t->rcpt);
	mem_free(t->envid);
	mem_free(t->sender);
	mem_free(t->client);
	mem_free(t->wbuf);
	mem_free(t->late);
	if (t->filt && t->filt->free)
		t->filt->free(t->filt_arg);
	mem_free(t);
}

void spool_txn_abort(struct spool_txn *t)
{
	if (t == NULL)
		return;
	if (t->created)
		unlinkat(t->s->fd_incoming, t->id, 0);
	txn_free(t);
}

int spool_oldest_commit(const struct spool *s, char *id, size_t len)
{
	const struct spool_txn *t;
	int found = 0;

	*id = '\0';
	for (t = s->committing; t; t = t->cnext)
		if (!found++ || strcmp(t->id, id) < 0)
			snprintf(id, len, "%s", t->id);
	return found;
}

void spool_set_announce(struct spool *s, void (*cb)(void *arg, const char *id), void *arg)
{
	s->announce = cb;
	s->announce_arg = arg;
}

/* Tell the caller and forget the transaction (on the loop). */
static void txn_finish(struct spool_txn *t, int err)
{
	struct spool *s = t->s;

	if (err && t->created)
		unlinkat(s->fd_incoming, t->id, 0);   /* the worker already removed committed/ID */
	s->inflight--;
	if (t->cprev)
		t->cprev->cnext = t->cnext;
	else if (s->committing == t)
		s->committing = t->cnext;
	if (t->cnext)
		t->cnext->cprev = t->cprev;
	ev_unref(s->loop);
	/* the scheduler hears of it first, from the spool itself, whoever the producer was */
	if (err == 0 && s->announce)
		s->announce(s->announce_arg, t->id);
	if (t->done)
		t->done(t->done_arg, err, t->id);
	txn_free(t);
}

/* RENAME_NOREPLACE where the file system has it; else check, then rename */
static int rename_noreplace(int from_dir, const char *id, int to_dir)
{
	if (renameat2(from_dir, id, to_dir, id, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	if (faccessat(to_dir, id, F_OK, 0) == 0) {
		errno = EEXIST;
		return -1;
	}
	return renameat(from_dir, id, to_dir, id);
}

/* a fixed-width value at file offset `off`: in the buffer if it is still there, else in the file */
static int stamp(struct spool_txn *t, off_t off, const char *v, size_t n)
{
	if (off >= t->flushed && off + (off_t)n <= t->flushed + (off_t)t->wlen) {
		memcpy(t->wbuf + (off - t->flushed), v, n);
		return 0;
	}
	/*
	 * pwrite may write less than asked (a file system filling up, a signal):
	 * the rest is written, not the message refused with a stale errno
	 * (tests/integration/test_iofault.py: short writes).
	 */
	while (n > 0) {
		ssize_t w = pwrite(t->fd, v, n, off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			t->err = w < 0 && errno ? errno : EIO;
			return -1;
		}
		v += w;
		n -= (size_t)w;
		off += w;
	}
	return 0;
}

/* On a worker: the rest of the data, the length and checksum stamps, rename, one shared sync. */
static void data_job_work(struct worker_job *j)
{
	struct spool_txn *t = (struct spool_txn *)((char *)j - offsetof(struct spool_txn, job));
	struct spool *s = t->s;
	char len[24], late[24], sum[24];

	if (t->err)
		return;
	/* the filter's last word (a DKIM signature: the CPU-heavy step, here off the loop) */
	if (t->filt && t->filt->finish && t->filt->finish(t->filt_arg, t) < 0) {
		t->err = errno ? errno : EIO;
		return;
	}
	/* after the message, inside the checksum; readers put them first */
	if (t->late_len && txn_put(t, t->late, t->late_len) < 0)
		return;
	snprintf(len, sizeof len, "%020lld", (long long)t->size);
	snprintf(late, sizeof late, "%020lld", (long long)t->late_len);
	snprintf(sum, sizeof sum, "%016llx", (unsigned long long)t->sum);
	/* stamped before the one write when still buffered (the common case) */
	if (stamp(t, t->len_off, len, 20) < 0 || stamp(t, t->late_off, late, 20) < 0 ||
	    stamp(t, t->sum_off, sum, 16) < 0 || txn_flush(t) < 0)
		return;
	if (rename_noreplace(s->fd_incoming, t->id, s->fd_committed) < 0) {
		t->err = errno;
		return;
	}
	t->created = 0;   /* the name is committed/ID now */
	/* one syncfs for data and directory entry, shared with everything in flight */
	if (spool_sync(s, t->fd) < 0) {
		t->err = errno;
		unlinkat(s->fd_committed, t->id, 0);   /* not durable: not acknowledged */
	}
	if (fd_close(t->fd) < 0 && !t->err) {
		t->err = errno;   /* NFS reports write errors at close */
		unlinkat(s->fd_committed, t->id, 0);
	}
	t->fd = -1;
}

static void data_job_done(struct worker_job *j)
{
	struct spool_txn *t = (struct spool_txn *)((char *)j - offsetof(struct spool_txn, job));

	if (t->err)
		log_warning("qmgr", "%s: commit to %s/%s failed: %s", t->id, t->s->dir,
		    SPOOL_COMMITTED, strerror(t->err));
	txn_finish(t, t->err);
}

void spool_txn_commit(struct spool_txn *t, void (*done)(void *arg, int err, const char *queue_id), void *arg)
{
	struct spool *s = t->s;

	t->done = done;
	t->done_arg = arg;
	if (!t->opened && !t->err)
		t->err = EINVAL;
	if (s->loop == NULL) {
		/* a programming error, but never acknowledge what we cannot sync */
		log_warning("qmgr", "%s: spool commit without an event loop", t->id);
		if (done)
			done(arg, EINVAL, t->id);
		spool_txn_abort(t);
		return;
	}
	s->inflight++;
	t->cprev = NULL;
	if ((t->cnext = s->committing) != NULL)
		t->cnext->cprev = t;
	s->committing = t;
	ev_ref(s->loop);   /* the worker's wake-up is unref'd; a commit keeps the loop alive */
	t->job.work = data_job_work;
	t->job.done = data_job_done;
	worker_submit(WORKER_COMMIT, &t->job);
}

/* ---- reading committed messages -------------------------------------------- */

void msg_src_from_env(struct msg_src *m, int fd, const struct spool_env *e)
{
	m->fd = fd;
	m->off = e->msg_off;
	m->size = e->size;
	m->sender = e->sender;
	m->pre_off = e->pre_off;
	m->pre_len = e->pre_len;
}

ssize_t msg_src_pread(const struct msg_src *m, void *buf, size_t n, off_t pos)
{
	char *c = buf;
	size_t got = 0;

	while (got < n && pos < msg_src_len(m)) {
		/* the late headers first, then the message: two ranges of one file */
		off_t at = pos < m->pre_len ? m->pre_off + pos : m->off + (pos - m->pre_len);
		off_t room = pos < m->pre_len ? m->pre_len - pos : msg_src_len(m) - pos;
		size_t want = (off_t)(n - got) < room ? n - got : (size_t)room;
		ssize_t r = pread(m->fd, c + got, want, at);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return got ? (ssize_t)got : -1;
		if (r == 0)
			break;   /* the file shrank: the caller sees a short count */
		got += (size_t)r;
		pos += r;
	}
	return (ssize_t)got;
}

void spool_env_free(struct spool_env *e)
{
	int i;

	for (i = 0; i < e->nrcpt; i++) {
		mem_free(e->rcpt[i].addr);
		mem_free(e->rcpt[i].orig);
		mem_free(e->rcpt[i].orcpt);
	}
	mem_free(e->rcpt);
	mem_free(e->envid);
	mem_free(e->sender);
	mem_free(e->client);
	memset(e, 0, sizeof *e);
}

static int env_parse(struct spool_env *e, char *buf, size_t len, off_t fsize)
{
	char *p = buf, *end = buf + len, *nl;
	size_t ml = strlen(SPOOL_MAGIC);
	int cap = 0, seen_id = 0, seen_sum = 0;
	long long declared = -1;   /* the L record */
	long long late = 0;        /* the T record (Q4) */

	if (len < ml)
		return errno = EINVAL, -1;
	e->warned = WARN_NONE;
	if (memcmp(buf, SPOOL_MAGIC, ml) == 0)
		e->version = 4;
	else if (memcmp(buf, SPOOL_MAGIC_Q3, ml) == 0)
		e->version = 3;
	else if (memcmp(buf, SPOOL_MAGIC_Q2, ml) == 0)
		e->version = 2;
	else if (memcmp(buf, SPOOL_MAGIC_Q1, ml) == 0)
		e->version = 1;
	else
		return errno = EINVAL, -1;
	p += ml;
	while (p < end && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		*nl = '\0';
		if (nl - p < 1 || (p[1] != ' ' && p[1] != '\0'))
			return errno = EINVAL, -1;
		switch (p[0]) {
		case 'A': {
			char *dot;
			if (nl - p < 2)   /* "A" alone: no value to read past the line's end */
				return errno = EINVAL, -1;
			e->arrival = (time_t)strtoll(p + 2, &dot, 10);
			e->arrival_usec = *dot == '.' ? strtol(dot + 1, NULL, 10) : 0;
			break;
		}
		case 'S':   /* one each: a second is not a file we wrote (and would leak) */
			if (e->sender)
				return errno = EINVAL, -1;
			if ((e->sender = mem_strdup(nl - p >= 2 ? p + 2 : "")) == NULL)
				return -1;
			break;
		case 'C':
			if (e->client)
				return errno = EINVAL, -1;
			if ((e->client = mem_strdup(nl - p >= 2 ? p + 2 : "")) == NULL)
				return -1;
			break;
		case 'R': {
			struct spool_rcpt *r;
			if (nl - p < 5)
				return errno = EINVAL, -1;
			if (e->nrcpt == cap) {
				cap = cap ? cap * 2 : 4;
				if ((r = mem_realloc(e->rcpt, (size_t)cap * sizeof *r)) == NULL)
					return -1;
				e->rcpt = r;
			}
			r = &e->rcpt[e->nrcpt];
			memset(r, 0, sizeof *r);
			r->status = p[2];
			r->status_off = (off_t)(p + 2 - buf);
			if ((r->addr = mem_strdup(p + 4)) == NULL)
				return -1;
			e->nrcpt++;
			if (r->status == RCPT_TODO)
				e->ntodo++;
			break;
		}
		case 'O':
			if (e->nrcpt == 0 || e->rcpt[e->nrcpt - 1].orig)
				return errno = EINVAL, -1;
			if ((e->rcpt[e->nrcpt - 1].orig = mem_strdup(nl - p >= 2 ? p + 2 : "")) == NULL)
				return -1;
			break;
		case 'W':   /* Q3: the delay-warning byte, one per file */
			if (nl - p != 3 || e->warned_off)
				return errno = EINVAL, -1;
			e->warned = p[2];
			e->warned_off = (off_t)(p + 2 - buf);
			break;
		case 'Y':
			if (nl - p != 3 || e->dsn_ret || (p[2] != 'F' && p[2] != 'H'))
				return errno = EINVAL, -1;
			e->dsn_ret = p[2] == 'H' ? DSN_RET_HDRS : DSN_RET_FULL;
			break;
		case 'V':
			if (nl - p < 3 || e->envid)
				return errno = EINVAL, -1;
			if ((e->envid = mem_strdup(p + 2)) == NULL)
				return -1;
			break;
		case 'N': {   /* after its R (and O) line, once */
			char *q;
			long v;

			if (nl - p < 3 || e->nrcpt == 0 || e->rcpt[e->nrcpt - 1].notify)
				return errno = EINVAL, -1;
			v = strtol(p + 2, &q, 10);
			if (q != nl || v < 1 || v > 15)
				return errno = EINVAL, -1;
			e->rcpt[e->nrcpt - 1].notify = (int)v;
			break;
		}
		case 'P':
			if (nl - p < 3 || e->nrcpt == 0 || e->rcpt[e->nrcpt - 1].orcpt)
				return errno = EINVAL, -1;
			if ((e->rcpt[e->nrcpt - 1].orcpt = mem_strdup(p + 2)) == NULL)
				return -1;
			break;
		case 'L':
			if (nl - p < 2)
				return errno = EINVAL, -1;
			declared = strtoll(p + 2, NULL, 10);
			e->len_off = (off_t)(p + 2 - buf);
			break;
		case 'T': {   /* Q4: the late headers' length, once, fixed width like L */
			char *q;

			if (nl - p != 22 || e->late_off)
				return errno = EINVAL, -1;
			late = strtoll(p + 2, &q, 10);
			if (q != nl || late < 0 || late > SPOOL_LATE_MAX)
				return errno = EINVAL, -1;
			e->late_off = (off_t)(p + 2 - buf);
			break;
		}
		case 'I':
			/* another name than the file's: a file recycled or renamed, never this message */
			if (nl - p < 2 || seen_id++ || (e->id[0] && strcmp(p + 2, e->id) != 0))
				return errno = EBADMSG, -1;
			break;
		case 'K': {
			char *q;

			if (nl - p != 18 || seen_sum++)
				return errno = EINVAL, -1;
			e->sum = strtoull(p + 2, &q, 16);
			if (q != nl)
				return errno = EINVAL, -1;
			e->sum_off = (off_t)(p + 2 - buf);
			break;
		}
		case 'E':
			if (nl - p < 2 || e->sender == NULL || atoi(p + 2) != e->nrcpt)
				return errno = EINVAL, -1;
			if (e->version >= 2 && (!seen_id || !seen_sum))
				return errno = EINVAL, -1;
			/* the commit stamps L before the rename: a mismatch is a torn, unacknowledged file */
			if (e->version >= 4 && !e->late_off)
				return errno = EINVAL, -1;
			/* each bounded by the file first: a corrupt L or T must not overflow the sum */
			if (declared <= 0 || late < 0 || declared > (long long)fsize || late > (long long)fsize ||
			    fsize - (off_t)(nl + 1 - buf) != (off_t)declared + (off_t)late)
				return errno = EBADMSG, -1;
			if (e->client == NULL && (e->client = mem_strdup("")) == NULL)
				return -1;
			e->msg_off = (off_t)(nl + 1 - buf);
			e->size = (off_t)declared;
			e->pre_off = e->msg_off + e->size;
			e->pre_len = (off_t)late;
			for (cap = 0; cap < e->nrcpt; cap++)
				if (e->rcpt[cap].orig == NULL &&
				    (e->rcpt[cap].orig = mem_strdup(e->rcpt[cap].addr)) == NULL)
					return -1;
			return 0;
		default:
			break;   /* a record a later version added: skip it */
		}
		p = nl + 1;
	}
	errno = EAGAIN;   /* need more bytes */
	return -1;
}

int spool_env_parse(struct spool_env *e, char *buf, size_t len, off_t fsize)
{
	int rc, saved;

	memset(e, 0, sizeof *e);
	if ((rc = env_parse(e, buf, len, fsize)) < 0) {
		saved = errno;
		spool_env_free(e);
		errno = saved;
	}
	return rc;
}

static int env_load_in(const char *queue_dir, const char *sub, const char *id, struct spool_env *e, int *fdp)
{
	char path[4096];
	char *buf = NULL, *nb;
	size_t len = 0, cap = 0;
	ssize_t r;
	struct stat st;
	int fd, rc = -1, saved;

	memset(e, 0, sizeof *e);
	if (!spool_id_valid(id))
		return errno = EINVAL, -1;
	snprintf(e->id, sizeof e->id, "%s", id);
	snprintf(path, sizeof path, "%s/%s/%s", queue_dir, sub, id);
	if ((fd = fd_open(path, (fdp ? O_RDWR : O_RDONLY) | O_CLOEXEC)) < 0)
		return -1;
	if (fstat(fd, &st) < 0)
		goto out;
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 4096;
			if (cap > ENV_MAX) {
				errno = EINVAL;
				goto out;
			}
			if ((nb = mem_realloc(buf, cap + 1)) == NULL)
				goto out;
			buf = nb;
		}
		if ((r = pread(fd, buf + len, cap - len, (off_t)len)) < 0) {
			if (errno == EINTR)
				continue;
			goto out;
		}
		if (r == 0) {
			/*
			 * The envelope never ended (an empty file among them): the commit
			 * writes all of it before the rename, so this is a file torn by a
			 * crash before its sync, never acknowledged, like an L mismatch.
			 */
			errno = EBADMSG;
			goto out;
		}
		len += (size_t)r;
		/* re-parse from scratch: envelopes are small, and this keeps one parser */
		spool_env_free(e);
		snprintf(e->id, sizeof e->id, "%s", id);
		{
			char *copy = mem_alloc(len + 1);
			if (copy == NULL)
				goto out;
			memcpy(copy, buf, len);
			rc = env_parse(e, copy, len, st.st_size);
			saved = errno;
			mem_free(copy);
			errno = saved;
		}
		if (rc == 0)
			break;
		if (errno != EAGAIN)
			goto out;
		rc = -1;
	}
out:
	saved = errno;
	mem_free(buf);
	if (rc < 0) {
		spool_env_free(e);
		fd_close(fd);
		errno = saved;
		return -1;
	}
	if (fdp)
		*fdp = fd;
	else
		fd_close(fd);
	return 0;
}

int spool_env_load(const char *queue_dir, const char *id, struct spool_env *e, int *fdp)
{
	return env_load_in(queue_dir, SPOOL_COMMITTED, id, e, fdp);
}

int spool_env_load_held(const char *queue_dir, const char *id, struct spool_env *e)
{
	return env_load_in(queue_dir, SPOOL_HOLD, id, e, NULL);
}

/*
 * committed/ID <-> hold/ID, both directories synced: a hold survives a
 * restart (recovery and the scheduler look at committed/ only). A released
 * message gets its mtime set to now: the scheduler takes a file whose
 * mtime has come as due.
 */
int spool_hold(const char *queue_dir, const char *id, int hold)
{
	char path[4096];
	int cfd = -1, hfd = -1, rc = -1, from, to;

	if (!spool_id_valid(id))
		return errno = EINVAL, -1;
	snprintf(path, sizeof path, "%s/%s", queue_dir, SPOOL_COMMITTED);
	if ((cfd = fd_open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return -1;
	snprintf(path, sizeof path, "%s/%s", queue_dir, SPOOL_HOLD);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		goto out;
	if ((hfd = fd_open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		goto out;
	from = hold ? cfd : hfd;
	to = hold ? hfd : cfd;
	if (renameat2(from, id, to, id, RENAME_NOREPLACE) < 0)
		goto out;
	if (!hold)
		utimensat(to, id, NULL, 0);
	if (fsync(to) < 0 || fsync(from) < 0)
		goto out;
	rc = 0;
out:
	{
		int e = errno;

		if (cfd >= 0)
			fd_close(cfd);
		if (hfd >= 0)
			fd_close(hfd);
		errno = e;
	}
	return rc;
}

int spool_verify(int fd, const struct spool_env *e, off_t fsize)
{
	char *buf;
	uint64_t h = FNV_OFFSET;
	off_t off = 0;
	int i, rc = 0;

	if (e->version < 2)
		return 0;
	if ((buf = mem_alloc(WBUF_SIZE)) == NULL)
		return -1;
	while (off < fsize) {
		size_t want = fsize - off < WBUF_SIZE ? (size_t)(fsize - off) : WBUF_SIZE;
		ssize_t r = pread(fd, buf, want, off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			rc = -1;
			if (r == 0)
				errno = EBADMSG;
			break;
		}
		/* what commit hashed: state bytes '-', the L and K digits zeros */
		for (i = 0; i < e->nrcpt; i++)
			if (e->rcpt[i].status_off >= off && e->rcpt[i].status_off < off + r)
				buf[e->rcpt[i].status_off - off] = RCPT_TODO;
		if (e->warned_off && e->warned_off >= off && e->warned_off < off + r)
			buf[e->warned_off - off] = WARN_NONE;
		{
			off_t z[3] = { e->len_off, e->sum_off, e->late_off };
			int zn[3] = { 20, 16, e->late_off ? 20 : 0 }, k;
			off_t x;

			for (k = 0; k < 3; k++)
				for (x = z[k]; x < z[k] + zn[k]; x++)
					if (x >= off && x < off + r)
						buf[x - off] = '0';
		}
		h = fnv(h, buf, (size_t)r);
		off += r;
	}
	mem_free(buf);
	if (rc == 0 && h != e->sum) {
		errno = EBADMSG;
		rc = -1;
	}
	return rc;
}

int spool_env_mark(int fd, const struct spool_rcpt *r, char status)
{
	ssize_t w;

	do
		w = pwrite(fd, &status, 1, r->status_off);
	while (w < 0 && errno == EINTR);
	return w == 1 ? 0 : -1;
}

int spool_env_mark_warned(int fd, struct spool_env *e)
{
	char b = WARN_SENT;
	ssize_t w;

	if (e->warned_off == 0)
		return errno = ENOTSUP, -1;   /* before FRUGAL-Q3: nowhere to remember it */
	do
		w = pwrite(fd, &b, 1, e->warned_off);
	while (w < 0 && errno == EINTR);
	if (w != 1)
		return -1;
	e->warned = WARN_SENT;
	return 0;
}

int spool_remove(const char *queue_dir, const char *id)
{
	char path[4096];

	if (!spool_id_valid(id))
		return errno = EINVAL, -1;
	snprintf(path, sizeof path, "%s/%s/%s", queue_dir, SPOOL_COMMITTED, id);
	return unlink(path);
}

/* the queue's files and directories all live on one file system (renames join them): known once */
int spool_sync(struct spool *s, int fd)
{
	return sync_shared_dev(fd, s->dev);
}

int spool_retire(struct spool *s, const char *id, int fd)
{
	int kept = 0;

	if (!spool_id_valid(id))
		return errno = EINVAL, -1;
	/* rename first: an emptied file must never be left in committed/ */
	if (renameat2(s->fd_committed, id, s->fd_free, id, RENAME_NOREPLACE) < 0) {
		if (errno == ENOENT)
			return -1;
		return unlinkat(s->fd_committed, id, 0);   /* no RENAME_NOREPLACE here: no pool */
	}
	if (ftruncate(fd, 0) == 0) {
		pthread_mutex_lock(&s->pool_mu);
		if (s->npool < SPOOL_POOL) {
			memcpy(s->pool[s->npool++], id, strlen(id) + 1);   /* valid: < QUEUE_ID_MAX */
			kept = 1;
		}
		pthread_mutex_unlock(&s->pool_mu);
	}
	if (!kept)
		unlinkat(s->fd_free, id, 0);   /* pool full: the message is gone all the same */
	return 0;
}

/* committed/ID -> corrupt/ID, logged */
static int set_aside(const char *queue_dir, int dfd, const char *id)
{
	char path[4096];
	int cfd;

	snprintf(path, sizeof path, "%s/%s", queue_dir, SPOOL_CORRUPT);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -1;
	if ((cfd = fd_open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return -1;
	if (renameat(dfd, id, cfd, id) < 0) {
		fd_close(cfd);
		return -1;
	}
	fd_close(cfd);
	log_warning("qmgr", "%s: checksum mismatch: queue file changed after it was committed; "
	    "moved to %s/%s", id, path, id);
	return 0;
}

struct scan_ent {
	char   id[QUEUE_ID_MAX];
	time_t mtime;   /* a deferred message's next try (qmgr sets it); 0 unknown */
};

static int cmp_ent(const void *a, const void *b)
{
	return strcmp(((const struct scan_ent *)a)->id, ((const struct scan_ent *)b)->id);
}

/* A max-heap on the ID: with a cap, the newest kept entry is at the top, ready to be replaced. */
static void heap_swap(struct scan_ent *v, int a, int b)
{
	struct scan_ent t = v[a];
	v[a] = v[b];
	v[b] = t;
}

static void heap_up(struct scan_ent *v, int i)
{
	while (i > 0 && strcmp(v[(i - 1) / 2].id, v[i].id) < 0) {
		heap_swap(v, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void heap_down(struct scan_ent *v, int n)
{
	int i = 0, c;

	while ((c = 2 * i + 1) < n) {
		if (c + 1 < n && strcmp(v[c + 1].id, v[c].id) > 0)
			c++;
		if (strcmp(v[i].id, v[c].id) >= 0)
			break;
		heap_swap(v, i, c);
		i = c;
	}
}


int spool_scan_ex(const char *queue_dir, struct spool_scan *sc)
{
	char path[4096];
	DIR *d;
	struct dirent *de;
	struct scan_ent *ids = NULL, *nv;
	struct stat est;
	int n = 0, cap = 0, i, total = 0, truncated = 0, remove_incoming = sc->remove_incoming;
	int max = sc->max;
	time_t mt;
	size_t idlen;
	char last[QUEUE_ID_MAX] = "";

	if (remove_incoming) {
		snprintf(path, sizeof path, "%s/%s", queue_dir, SPOOL_INCOMING);
		if ((d = fd_opendir(path)) != NULL) {
			while ((de = readdir(d)) != NULL) {
				if (de->d_name[0] == '.')
					continue;
				/* never acknowledged: the client got no 250 and will retry */
				if (unlinkat(dirfd(d), de->d_name, 0) == 0)
					log_info("qmgr", "removed uncommitted queue file %s/%s",
					    path, de->d_name);
			}
			fd_closedir(d);
		}
	}
	snprintf(path, sizeof path, "%s/%s", queue_dir, SPOOL_COMMITTED);
	if ((d = fd_opendir(path)) == NULL)
		return errno == ENOENT ? 0 : -1;
	while ((de = readdir(d)) != NULL) {
		if (!spool_id_valid(de->d_name))
			continue;
		if (remove_incoming) {
			/*
			 * Start-up: a file renamed in but torn by a crash before its sync
			 * was never acknowledged (see the commit above): remove it.
			 */
			struct spool_env e;
			int efd = -1;

			if (spool_env_load(queue_dir, de->d_name, &e, &efd) < 0) {
				struct stat st;
				int empty = fstatat(dirfd(d), de->d_name, &st, 0) == 0 && st.st_size == 0;

				if (errno == EBADMSG && unlinkat(dirfd(d), de->d_name, 0) == 0) {
					/* empty: torn before any data, or a retired file (see Recycling) */
					log_info("qmgr", "removed %s queue file %s/%s%s",
					    empty ? "empty" : "incomplete", path, de->d_name,
					    empty ? "" : " (never acknowledged)");
					continue;
				}
			} else {
				struct stat st;

				/*
				 * Whole and named right, but its bytes changed after commit (the
				 * disk): kept aside for the admin, never delivered as it is.
				 */
				if (fstat(efd, &st) == 0 && spool_verify(efd, &e, st.st_size) < 0 && errno == EBADMSG &&
				    set_aside(queue_dir, dirfd(d), de->d_name) == 0) {
					fd_close(efd);
					spool_env_free(&e);
					continue;
				}
				fd_close(efd);
				spool_env_free(&e);
			}
		}
		total++;
		if ((idlen = strlen(de->d_name)) >= QUEUE_ID_MAX)
			continue;
		if (sc->after && *sc->after && strcmp(de->d_name, sc->after) <= 0)
			continue;
		if (strcmp(de->d_name, last) > 0)
			memcpy(last, de->d_name, idlen + 1);
		mt = 0;
		if (sc->want_mtime && fstatat(dirfd(d), de->d_name, &est, AT_SYMLINK_NOFOLLOW) == 0)
			mt = est.st_mtime;
		if (sc->skip && sc->skip(sc->arg, de->d_name, mt))
			continue;
		if (max > 0 && n == max) {
			/* the cap: keep the oldest `max` (memory bounded however big the queue) */
			truncated = 1;
			if (strcmp(de->d_name, ids[0].id) >= 0)
				continue;
			memcpy(ids[0].id, de->d_name, idlen + 1);
			ids[0].mtime = mt;
			heap_down(ids, n);
			continue;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			if (max > 0 && cap > max)
				cap = max;
			if ((nv = mem_realloc(ids, (size_t)cap * sizeof *nv)) == NULL)
				goto nomem;
			ids = nv;
		}
		memcpy(ids[n].id, de->d_name, idlen + 1);
		ids[n].mtime = mt;
		n++;
		if (max > 0)
			heap_up(ids, n - 1);
	}
	fd_closedir(d);
	/* IDs grow with time: sorted order is arrival order */
	if (n > 1)
		qsort(ids, (size_t)n, sizeof *ids, cmp_ent);
	/* how far this scan got: every candidate up to here was passed on */
	snprintf(sc->last, sizeof sc->last, "%s", truncated ? ids[n - 1].id : last);
	sc->truncated = truncated;
	for (i = 0; i < n; i++)
		if (sc->cb)
			sc->cb(sc->arg, ids[i].id, ids[i].mtime);
	mem_free(ids);
	return total;
nomem:
	fd_closedir(d);
	mem_free(ids);
	errno = ENOMEM;
	return -1;
}

struct scan_adapter {
	void (*cb)(void *arg, const char *id);
	void *arg;
};

static void scan_adapt(void *arg, const char *id, time_t mtime)
{
	struct scan_adapter *a = arg;

	(void)mtime;
	if (a->cb)
		a->cb(a->arg, id);
}

int spool_scan(const char *queue_dir, int remove_incoming,
    void (*cb)(void *arg, const char *id), void *arg)
{
	struct scan_adapter a = { cb, arg };
	struct spool_scan sc;

	memset(&sc, 0, sizeof sc);
	sc.remove_incoming = remove_incoming;
	sc.cb = scan_adapt;
	sc.arg = &a;
	return spool_scan_ex(queue_dir, &sc);
}
