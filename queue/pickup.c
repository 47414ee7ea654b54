/*
 * queue/pickup.c: the daemon's side of local submission (Postfix's
 * pickup(8)). Owns the descriptors of $queue_directory/maildrop and of an
 * inotify watch on it, and moves each complete maildrop file (written by
 * frugal-postdrop, queue/drop.h) into the spool: parsed and checked on the
 * way, committed through the normal group commit (so the scheduler is told
 * by the spool's announcement), and only then removed from the maildrop.
 * A crash between commit and removal delivers the message twice, never
 * zero times (at-least-once, as everywhere in the queue).
 *
 * Must never trust a maildrop file (any local user writes one): a file
 * that is not a regular file with one link, or whose stream is malformed
 * or incomplete, is moved to corrupt/ with a warning, never delivered and
 * never allowed to stop the daemon. The user ID in the Received: header
 * is the file's owner (the helper is set-group-ID only, so that is the
 * submitting user), not anything the file says.
 *
 * mailq requests (`frugal-postdrop -q`, for users who may not read the
 * queue) are files too: checked, removed, and answered by rewriting
 * status/mailq (temp + rename, 0644) with the `mailq` listing, at most
 * once a second (requests in between share the next listing) and at most
 * MAILQ_MAX messages each (envelope reads on the loop stay bounded).
 *
 * Wake-ups: inotify (IN_MOVED_TO: the helper renames a finished file in)
 * and a one-second timer as the fallback (inotify may be unavailable or
 * its queue may overflow). One file at a time: its commit is in flight
 * while the next waits, which bounds memory and descriptors to one file.
 */
#include "queue/queue_int.h"
#include "queue/drop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/stats.h"

#define PICKUP_BATCH   64        /* names taken per directory scan */
#define PICKUP_NAME    80
#define TMP_MAX_AGE    3600      /* a helper's temporary file older than this was abandoned */

struct pickup {
	struct ev_loop *loop;
	struct spool *spool;
	struct conf *c;              /* a reference */
	struct dkim_keys *dkim;      /* a reference (the generation's); NULL: nothing signed */
	char  *dir;                  /* owned: $queue_directory/maildrop */
	char  *corrupt;              /* owned: $queue_directory/corrupt */
	int    dfd, ifd;             /* maildrop directory; inotify (-1: none) */
	ev_io  io;
	ev_timer tick;
	ev_timer regen;              /* the next mailq listing, when one was asked for too soon */
	ev_tstamp last_regen;        /* when the last listing was written (0: never) */
	int    want_listing;         /* a request is waiting for a listing */
	int    busy;                 /* a commit is in flight */
	char   names[PICKUP_BATCH][PICKUP_NAME];
	int    nnames, next;
	/* the file being read */
	char   cur[PICKUP_NAME];
	uid_t  uid;
	char  *sender;
	struct spool_txn *txn;
	int    opened, spool_err;
	long long limit;
	char   buf[65536];
};

static void scan(struct pickup *p);

/* maildrop/NAME -> corrupt/maildrop.NAME, logged */
static void set_aside(struct pickup *p, const char *name, const char *why)
{
	char to[PICKUP_NAME + 16];
	int cfd;

	snprintf(to, sizeof to, "maildrop.%s", name);
	if ((mkdir(p->corrupt, 0700) < 0 && errno != EEXIST) ||
	    (cfd = fd_open(p->corrupt, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		log_warning("pickup", "maildrop/%s: %s; cannot move it to %s (%s): removed", name, why,
		    p->corrupt, strerror(errno));
		unlinkat(p->dfd, name, 0);
		return;
	}
	if (renameat(p->dfd, name, cfd, to) < 0) {
		log_warning("pickup", "maildrop/%s: %s; cannot move it to %s (%s): removed", name, why,
		    p->corrupt, strerror(errno));
		unlinkat(p->dfd, name, 0);
	} else {
		log_warning("pickup", "maildrop/%s: %s: moved to %s/%s", name, why, p->corrupt, to);
	}
	fd_close(cfd);
}

static int on_sender(void *arg, const char *addr)
{
	struct pickup *p = arg;

	return (p->sender = mem_strdup(addr)) == NULL ? (p->spool_err = ENOMEM, -1) : 0;
}

static int on_rcpt(void *arg, const char *addr)
{
	struct pickup *p = arg;

	if (p->txn == NULL &&
	    (p->txn = spool_txn_new(p->spool, p->sender, "localhost[127.0.0.1]")) == NULL) {
		p->spool_err = errno ? errno : ENOMEM;
		return -1;
	}
	if (spool_txn_rcpt(p->txn, addr, addr) < 0) {
		p->spool_err = errno ? errno : ENOMEM;
		return -1;
	}
	return 0;
}

static int on_data(void *arg, const char *data, size_t n)
{
	struct pickup *p = arg;

	if (!p->opened) {
		char hdr[512], date[64];
		time_t now = time(NULL);
		struct tm tm;
		int k;

		if (spool_txn_open(p->txn) < 0) {
			p->spool_err = errno ? errno : EIO;
			return -1;
		}
		p->opened = 1;
		/* a local user's mail, as Postfix's sendmail with a signing milter: signed (DESIGN.md) */
		if (dkim_sign_txn(p->dkim, p->txn) < 0) {
			p->spool_err = errno ? errno : ENOMEM;
			return -1;
		}
		/* as Postfix's pickup traces a local submission */
		localtime_r(&now, &tm);
		strftime(date, sizeof date, "%a, %e %b %Y %H:%M:%S %z", &tm);
		k = snprintf(hdr, sizeof hdr, "Received: by %s (%s, from userid %u)\n\tid %s; %s\n",
		    conf_str(p->c, "myhostname", 0), conf_str(p->c, "mail_name", 0), (unsigned)p->uid,
		    spool_txn_id(p->txn), date);
		if (spool_txn_write(p->txn, hdr, (size_t)k) < 0) {
			p->spool_err = errno ? errno : EIO;
			return -1;
		}
	}
	if (p->limit > 0 && spool_txn_size(p->txn) + (off_t)n > p->limit) {
		p->spool_err = EFBIG;
		return -1;
	}
	if (spool_txn_write(p->txn, data, n) < 0) {
		p->spool_err = errno ? errno : EIO;
		return -1;
	}
	return 0;
}

static void reset_file(struct pickup *p)
{
	if (p->txn)
		spool_txn_abort(p->txn);
	p->txn = NULL;
	mem_free(p->sender);
	p->sender = NULL;
	p->opened = 0;
	p->spool_err = 0;
}

static void committed(void *arg, int err, const char *queue_id)
{
	struct pickup *p = arg;

	p->busy = 0;
	if (err) {
		/* the file stays: the next tick tries again */
		log_warning("pickup", "maildrop/%s: cannot queue it: %s; will retry", p->cur, strerror(err));
		p->nnames = p->next = 0;
	} else {
		log_info("pickup", "%s: uid=%u from=<%s>", queue_id, (unsigned)p->uid, p->sender);
		stats_inc(STATS_RECEIVED);
		/* durable in the spool: now the drop file may go */
		if (unlinkat(p->dfd, p->cur, 0) < 0 && errno != ENOENT)
			log_warning("pickup", "maildrop/%s: cannot remove it after queueing as %s: %s",
			    p->cur, queue_id, strerror(errno));
	}
	mem_free(p->sender);
	p->sender = NULL;
	scan(p);
}

/* 1: a commit is in flight; 0: done with this file (set aside, or left for later) */
static int pick(struct pickup *p, const char *name)
{
	struct drop_parser dp;
	struct stat st;
	ssize_t r;
	int fd;

	snprintf(p->cur, sizeof p->cur, "%s", name);
	if ((fd = fd_openat(p->dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)) < 0) {
		if (errno == ELOOP)
			set_aside(p, name, "a symbolic link");
		else if (errno != ENOENT)
			log_warning("pickup", "maildrop/%s: %s", name, strerror(errno));
		return 0;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
		fd_close(fd);
		set_aside(p, name, "not a regular file with one link");
		return 0;
	}
	p->uid = st.st_uid;
	p->limit = conf_int(p->c, "message_size_limit", 0);
	drop_parser_init(&dp, p);
	dp.on_sender = on_sender;
	dp.on_rcpt = on_rcpt;
	dp.on_data = on_data;
	while ((r = read(fd, p->buf, sizeof p->buf)) > 0)
		if (drop_parse(&dp, p->buf, (size_t)r) < 0)
			break;
	if (r < 0) {
		log_warning("pickup", "maildrop/%s: read: %s", name, strerror(errno));
		fd_close(fd);
		reset_file(p);
		return 0;
	}
	fd_close(fd);
	if (dp.state != DROP_ST_ERROR)
		drop_finish(&dp);
	if (dp.state == DROP_ST_ERROR) {
		int retry = p->spool_err && p->spool_err != EFBIG;

		if (p->spool_err == EFBIG) {
			log_warning("pickup", "maildrop/%s: uid=%u from=<%s>: message larger than "
			    "message_size_limit (%lld): removed", name, (unsigned)p->uid,
			    p->sender ? p->sender : "", p->limit);
			unlinkat(p->dfd, name, 0);
		} else if (p->spool_err) {
			log_warning("pickup", "maildrop/%s: cannot queue it: %s; will retry", name,
			    strerror(p->spool_err));
			p->nnames = p->next = 0;   /* the spool refuses for now: wait for the next tick */
		} else {
			set_aside(p, name, dp.err);
		}
		reset_file(p);
		return retry ? -1 : 0;
	}
	if (!p->opened && on_data(p, "", 0) < 0) {   /* an empty message still gets its trace */
		log_warning("pickup", "maildrop/%s: cannot queue it: %s; will retry", name, strerror(p->spool_err));
		reset_file(p);
		return -1;
	}
	p->busy = 1;
	p->opened = 0;
	spool_txn_commit(p->txn, committed, p);   /* takes the transaction */
	p->txn = NULL;
	return 1;
}

/* status/mailq from the listing `mailq` prints; temp + rename so a reader sees one whole */
static void write_listing(struct pickup *p)
{
	const char *q = spool_dir(p->spool);
	char tmp[4096], path[4096];
	char *text = NULL;
	size_t len = 0;
	FILE *f;
	int fd, ok;

	p->want_listing = 0;
	p->last_regen = ev_now(p->loop);
	snprintf(path, sizeof path, "%s/%s/%s", q, SPOOL_STATUS, MAILQ_SNAPSHOT);
	snprintf(tmp, sizeof tmp, "%s/%s/.%s.tmp", q, SPOOL_STATUS, MAILQ_SNAPSHOT);
	/* built in memory (stdio would bypass the descriptor ledger), then written */
	if ((f = open_memstream(&text, &len)) == NULL) {
		log_warning("pickup", "mailq listing: %s", strerror(errno));
		return;
	}
	ok = queue_list_write(f, q, MAILQ_MAX) == 0;
	ok = fclose(f) == 0 && ok;
	unlink(tmp);
	if (!ok || (fd = fd_open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644)) < 0) {
		log_warning("pickup", "mailq listing: %s: %s", tmp, strerror(errno));
		free(text);
		return;
	}
	fchmod(fd, 0644);   /* whatever the umask: any local user reads it */
	ok = queue_write_all(fd, text, len) == 0;
	free(text);
	ok = fd_close(fd) == 0 && ok;
	if (!ok || rename(tmp, path) < 0) {
		log_warning("pickup", "mailq listing: cannot write %s: %s", path, strerror(errno));
		unlink(tmp);
		return;
	}
	log_info("pickup", "mailq listing written to %s", path);
}

static void regen_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct pickup *p = (struct pickup *)((char *)w - offsetof(struct pickup, regen));

	if (p->want_listing)
		write_listing(p);
}

/* a request seen: a listing now, or when a second has passed since the last (coalesced) */
static void want_listing(struct pickup *p)
{
	ev_tstamp wait;

	p->want_listing = 1;
	if (ev_is_active(&p->regen))
		return;
	ev_now_update(p->loop);
	wait = p->last_regen + 1. - ev_now(p->loop);
	if (p->last_regen == 0 || wait <= 0) {
		write_listing(p);
		return;
	}
	ev_timer_set(&p->regen, wait, 0.);
	ev_timer_start(p->loop, &p->regen);
}

/* maildrop/mailq.NAME: exactly the request body, else set aside like any foreign file */
static void take_request(struct pickup *p, const char *name)
{
	char buf[sizeof DROP_REQ_BODY + 1];
	struct stat st;
	ssize_t r;
	int fd;

	if ((fd = fd_openat(p->dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)) < 0) {
		if (errno == ELOOP)
			set_aside(p, name, "a symbolic link");
		else if (errno != ENOENT)
			log_warning("pickup", "maildrop/%s: %s", name, strerror(errno));
		return;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
		fd_close(fd);
		set_aside(p, name, "not a regular file with one link");
		return;
	}
	r = read(fd, buf, sizeof buf);
	fd_close(fd);
	if (r != (ssize_t)sizeof DROP_REQ_BODY - 1 || memcmp(buf, DROP_REQ_BODY, (size_t)r) != 0) {
		set_aside(p, name, "not a mailq request");
		return;
	}
	if (unlinkat(p->dfd, name, 0) < 0 && errno != ENOENT) {
		log_warning("pickup", "maildrop/%s: cannot remove the mailq request: %s", name, strerror(errno));
		return;   /* not answered: a request we cannot remove would ask again every tick */
	}
	want_listing(p);
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* take the next batch of names (oldest first), drop abandoned temporaries */
static void refill(struct pickup *p)
{
	struct dirent *de;
	struct stat st;
	DIR *d;
	int dfd;
	time_t now = time(NULL);

	p->nnames = p->next = 0;
	if ((dfd = fd_dup(p->dfd)) < 0)
		return;
	if ((d = fdopendir(dfd)) == NULL) {
		fd_close(dfd);
		return;
	}
	rewinddir(d);   /* a dup shares the offset the last scan left at the end */
	while ((de = readdir(d)) != NULL && p->nnames < PICKUP_BATCH) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (strncmp(de->d_name, ".tmp.", 5) == 0) {
			if (fstatat(p->dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			    st.st_mtime + TMP_MAX_AGE < now)
				unlinkat(p->dfd, de->d_name, 0);
			continue;
		}
		if (drop_req_name_valid(de->d_name)) {
			take_request(p, de->d_name);
			continue;
		}
		if (!drop_name_valid(de->d_name)) {
			set_aside(p, de->d_name, "not a name frugal-postdrop makes");
			continue;
		}
		memcpy(p->names[p->nnames++], de->d_name, strlen(de->d_name) + 1);   /* valid: < 64 */
	}
	fd_closedir(d);
	qsort(p->names, (size_t)p->nnames, PICKUP_NAME, cmp_name);
}

static void scan(struct pickup *p)
{
	int r;

	while (!p->busy) {
		if (p->next >= p->nnames) {
			refill(p);
			if (p->nnames == 0)
				return;
		}
		r = pick(p, p->names[p->next++]);
		if (r < 0)
			return;   /* the spool is refusing: the next tick */
	}
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct pickup *p = (struct pickup *)((char *)w - offsetof(struct pickup, io));
	char ev[4096];

	while (read(p->ifd, ev, sizeof ev) > 0)
		;
	if (!p->busy)
		p->nnames = p->next = 0;   /* new names: look again */
	scan(p);
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct pickup *p = (struct pickup *)((char *)w - offsetof(struct pickup, tick));

	if (!p->busy)
		p->nnames = p->next = 0;
	scan(p);
}

struct pickup *pickup_new(struct ev_loop *loop, struct spool *s, struct conf *c)
{
	struct pickup *p;
	const char *q = spool_dir(s);

	if ((p = mem_calloc(1, sizeof *p)) == NULL)
		return NULL;
	p->loop = loop;
	p->spool = s;
	p->c = conf_ref(c);
	p->ifd = -1;
	p->dir = mem_printf("%s/%s", q, SPOOL_MAILDROP);
	p->corrupt = mem_printf("%s/%s", q, SPOOL_CORRUPT);
	if (p->dir == NULL || p->corrupt == NULL ||
	    (p->dfd = fd_open(p->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		log_warning("pickup", "%s: %s: local submission (sendmail) is not picked up",
		    p->dir ? p->dir : "maildrop", strerror(errno ? errno : ENOMEM));
		p->dfd = -1;
		pickup_free(p);
		return NULL;
	}
	/* inotify's descriptor is a file in the ledger, like any other */
	if (fd_room(FD_FILE, 1) && (p->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) >= 0) {
		fd_received(p->ifd, FD_FILE);
		if (inotify_add_watch(p->ifd, p->dir, IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
			log_warning("pickup", "inotify on %s: %s: scanning it every second instead",
			    p->dir, strerror(errno));
			fd_close(p->ifd);
			p->ifd = -1;
		} else {
			ev_io_init(&p->io, io_cb, p->ifd, EV_READ);
			ev_io_start(loop, &p->io);
		}
	}
	ev_timer_init(&p->regen, regen_cb, 1., 0.);
	ev_timer_init(&p->tick, tick_cb, 1., 1.);
	ev_timer_start(loop, &p->tick);
	scan(p);   /* what was dropped while the daemon was down */
	return p;
}

void pickup_set_dkim(struct pickup *p, struct dkim_keys *ks)
{
	struct dkim_keys *old = p->dkim;

	p->dkim = dkim_keys_ref(ks);
	dkim_keys_unref(old);
}

void pickup_set_conf(struct pickup *p, struct conf *c)
{
	struct conf *old = p->c;

	p->c = conf_ref(c);
	conf_unref(old);
}

void pickup_free(struct pickup *p)
{
	if (p == NULL)
		return;
	while (p->busy)   /* the commit's callback points at us */
		ev_run(p->loop, EVRUN_ONCE);
	if (p->ifd >= 0) {
		ev_io_stop(p->loop, &p->io);
		fd_close(p->ifd);
	}
	if (p->dfd >= 0) {
		ev_timer_stop(p->loop, &p->tick);
		ev_timer_stop(p->loop, &p->regen);
		fd_close(p->dfd);
	}
	reset_file(p);
	conf_unref(p->c);
	dkim_keys_unref(p->dkim);
	mem_free(p->dir);
	mem_free(p->corrupt);
	mem_free(p);
}
