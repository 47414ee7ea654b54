/*
 * smtpd/greylisting.c: check_greylist in the daemon. Owns the one table
 * (greylist.c) for the daemon's life, its store on disk, the verdict for a
 * recipient with its reply and log line. The exemptions (mynetworks, AUTH,
 * greylist_allowlist_clients) are decided in restrict.c before it is asked.
 *
 * The store survives restarts without costing the loop a write: every
 * SNAPSHOT_EVERY seconds, when something changed, the loop copies the live
 * entries (a memcpy-sized walk) and a worker thread writes them as text to
 * STORE.tmp, syncs it and renames it over STORE. A crash loses at most the
 * last interval's changes (senders greylisted once more, never mail). At
 * stop the last snapshot is written by the loop itself. A store that does
 * not parse is logged and ignored: the daemon starts with what it could read.
 */
#include "smtpd/smtpd_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/worker.h"
#include "smtpd/greylist.h"

#define SNAPSHOT_EVERY 60.0              /* seconds between snapshots (when changed) */
#define STORE_MAX (64L * 1024 * 1024)    /* a bigger store is not a store frugal wrote */

static struct {
	char *path;                      /* greylist_store, as it was at open; owned */
	ev_timer timer;
	struct ev_loop *loop;
	struct worker_job job;
	int busy;                        /* a snapshot job in flight */
	struct greylist_record *snap;    /* its records, owned by the job while busy */
	size_t nsnap;
	uint64_t seed;
	int err;                         /* the job's errno, 0: written */
	const char *what;                /* the job's failing step */
} st;

static struct log_rate store_rate = LOG_RATE_INIT(600, 2);

/* Write n records to path (PATH.tmp, fsync, rename). 0, or -1 with errno and *what. */
static int store_write(const char *path, uint64_t seed, const struct greylist_record *v, size_t n,
    const char **what)
{
	char tmp[4200], buf[16384];
	size_t used = 0, i;
	int fd, e;

	if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
		errno = ENAMETOOLONG;
		*what = "open";
		return -1;
	}
	if ((fd = fd_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0) {
		*what = "open";
		return -1;
	}
	used = (size_t)greylist_format_header(buf, sizeof buf, seed);
	for (i = 0; i <= n; i++) {
		if (i == n || sizeof buf - used < 64) {
			const char *p = buf;
			while (used > 0) {
				ssize_t w = write(fd, p, used);
				if (w < 0 && errno == EINTR)
					continue;
				if (w <= 0) {
					*what = "write";
					goto fail;
				}
				p += w;
				used -= (size_t)w;
			}
		}
		if (i < n)
			used += (size_t)greylist_format_record(buf + used, sizeof buf - used, &v[i]);
	}
	if (fsync(fd) < 0) {
		*what = "fsync";
		goto fail;
	}
	if (fd_close(fd) < 0) {
		fd = -1;
		*what = "close";
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		*what = "rename";
		goto fail;
	}
	return 0;
fail:
	e = errno;
	if (fd >= 0)
		fd_close(fd);
	unlink(tmp);
	errno = e;
	return -1;
}

static void job_work(struct worker_job *j)
{
	(void)j;
	st.err = store_write(st.path, st.seed, st.snap, st.nsnap, &st.what) < 0 ? errno : 0;
}

static void job_done(struct worker_job *j)
{
	(void)j;
	if (st.err)
		log_ratelimited(&store_rate, "smtpd", "greylist: cannot save %s (%s): %s; triplets will be lost "
		    "at a restart", st.path, st.what, strerror(st.err));
	mem_free(st.snap);
	st.snap = NULL;
	st.busy = 0;
}

/* Copy the table now; 0 when there is nothing to write or no memory for the copy. */
static int take_snapshot(struct greylist *g)
{
	int dirty = greylist_dirty(g);

	if (!dirty)
		return 0;
	st.seed = greylist_seed(g);
	st.snap = greylist_snapshot(g, &st.nsnap);
	if (st.snap == NULL && greylist_used(g) > 0) {
		log_ratelimited(&store_rate, "smtpd", "greylist: memory budget exhausted: no snapshot of %u triplets "
		    "this time", greylist_used(g));
		return 0;
	}
	return 1;   /* also an empty table: the store must say so */
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct smtpd_server *srv = w->data;

	(void)loop; (void)revents;
	if (st.busy || srv->greylist == NULL || !take_snapshot(srv->greylist))
		return;
	st.busy = 1;
	st.job.work = job_work;
	st.job.done = job_done;
	worker_submit(WORKER_DELIVERY, &st.job);
}

static void load(struct smtpd_server *srv, const struct smtpd_params *p)
{
	const struct greylist_times t = { p->greylist_delay, p->greylist_retry_window, p->greylist_max_age };
	struct stat sb;
	char *buf = NULL;
	size_t got = 0;
	unsigned long bad = 0;
	long n;
	int fd;

	if ((fd = fd_open(st.path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY)) < 0) {
		if (errno != ENOENT)
			log_warning("smtpd", "greylist: cannot read %s: %s; starting with no triplets", st.path,
			    strerror(errno));
		return;
	}
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size > STORE_MAX) {
		int e = errno;
		log_warning("smtpd", "greylist: %s is not a greylist store (%s); ignored", st.path,
		    fstat(fd, &sb) < 0 ? strerror(e) : S_ISREG(sb.st_mode) ? "too large" : "not a regular file");
		fd_close(fd);
		return;
	}
	if ((buf = mem_alloc((size_t)sb.st_size + 1)) == NULL) {
		log_warning("smtpd", "greylist: memory budget exhausted: %s (%lld bytes) not read", st.path,
		    (long long)sb.st_size);
		fd_close(fd);
		return;
	}
	while (got < (size_t)sb.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)sb.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	fd_close(fd);
	n = greylist_load(srv->greylist, buf, got, (uint32_t)ev_now(srv->loop), &t, &bad);
	mem_free(buf);
	if (n < 0)
		log_warning("smtpd", "greylist: %s is not a greylist store (bad header); ignored, starting with no "
		    "triplets", st.path);
	else if (bad)
		log_warning("smtpd", "greylist: %s: %lu corrupt records ignored, %ld triplets loaded", st.path, bad, n);
	else
		log_info("smtpd", "greylist: %ld triplets loaded from %s", n, st.path);
}

void greylisting_open(struct smtpd_server *srv)
{
	static struct log_rate open_rate = LOG_RATE_INIT(60, 1);
	const struct conf *c = srv->gen->conf;
	long long n;

	if (srv->greylist || !srv->gen->greylisting)
		return;
	n = conf_int(c, "greylist_table_size", 0);
	if (n <= 0)
		n = 65536;
	if (n > 1 << 24)
		n = 1 << 24;
	if ((srv->greylist = greylist_new((unsigned)n)) == NULL) {
		log_ratelimited(&open_rate, "smtpd", "memory budget exhausted: no greylist table of %lld triplets "
		    "(%zu bytes): check_greylist lets mail through until there is room", n, greylist_bytes((unsigned)n));
		return;
	}
	mem_free(st.path);
	if ((st.path = mem_strdup(conf_str(c, "greylist_store", 0))) == NULL) {
		greylist_free(srv->greylist);
		srv->greylist = NULL;
		return;
	}
	log_info("smtpd", "greylist: table of %lld triplets (%zu bytes)", n, greylist_bytes((unsigned)n));
	load(srv, &srv->gen->params[0]);
	st.loop = srv->loop;
	{
		/* tests only: a shorter interval, so a crash test need not wait a minute */
		const char *e = getenv("FRUGAL_TEST_GREYLIST_SAVE");
		double every = e ? atof(e) : SNAPSHOT_EVERY;

		if (every <= 0)
			every = SNAPSHOT_EVERY;
		ev_timer_init(&st.timer, timer_cb, every, every);
	}
	st.timer.data = srv;
	ev_timer_start(srv->loop, &st.timer);
	ev_unref(srv->loop);   /* the snapshots alone must not keep the daemon running */
}

void greylisting_close(struct smtpd_server *srv)
{
	const char *what = "";

	if (srv->greylist == NULL)
		return;
	ev_ref(st.loop);
	ev_timer_stop(st.loop, &st.timer);
	while (st.busy)
		ev_run(st.loop, EVRUN_ONCE);
	if (take_snapshot(srv->greylist)) {
		if (store_write(st.path, greylist_seed(srv->greylist), st.snap, st.nsnap, &what) < 0)
			log_warning("smtpd", "greylist: cannot save %s (%s): %s", st.path, what, strerror(errno));
		mem_free(st.snap);
		st.snap = NULL;
	}
	greylist_free(srv->greylist);
	srv->greylist = NULL;
	mem_free(st.path);
	st.path = NULL;
}

/* postgrey's "Greylisted, see URL", with what is left of the delay instead of a URL */
static void grey_reply(char *reply, size_t replylen, const char *rcpt, unsigned left)
{
	snprintf(reply, replylen, "450 4.2.0 <%s>: Recipient address rejected: Greylisted, try again in %u second%s",
	    rcpt, left, left == 1 ? "" : "s");
}

int greylisting_check(struct session *s, const char *rcpt, char *reply, size_t replylen)
{
	const struct smtpd_params *p = s->p;
	const struct greylist_times t = { p->greylist_delay, p->greylist_retry_window, p->greylist_max_age };
	unsigned char net[GREYLIST_NETLEN];
	const char *id = s->tx->txn ? spool_txn_id(s->tx->txn) : "NOQUEUE";
	enum greylist_verdict v;
	uint32_t age, now;
	uint64_t key;

	if (s->srv->greylist == NULL)
		greylisting_open(s->srv);
	if (s->srv->greylist == NULL)
		return 0;   /* no memory for the table: logged; mail is not held up for it */
	now = (uint32_t)ev_now(s->srv->loop);
	greylist_net(&s->peer, p->greylist_client_prefix, p->greylist_client_ipv6_prefix, net);
	key = greylist_triplet(s->srv->greylist, net, s->tx->sender, rcpt);
	/*
	 * The evaluation runs whole again after a DNS wait (restrict.c): the
	 * same RCPT resumed keeps the verdict it had, or its first sight would
	 * be counted twice (and logged as a retry).
	 */
	if (s->tx->rcpt_resumed && s->tx->grey_have && s->tx->grey_key == key) {
		if (s->tx->grey_deferred == 0)
			return 0;
		grey_reply(reply, replylen, rcpt, (unsigned)(s->tx->grey_deferred - 1));
		return 1;
	}
	v = greylist_check(s->srv->greylist, key, now, &t, &age);
	s->tx->grey_have = 1;
	s->tx->grey_key = key;
	s->tx->grey_deferred = v == GREYLIST_NEW ? (int)p->greylist_delay + 1
	    : v == GREYLIST_EARLY ? (int)(p->greylist_delay - age) + 1 : 0;
	switch (v) {
	case GREYLIST_NEW:
	case GREYLIST_EARLY:
		/* postgrey's line, in the session's line style */
		if (v == GREYLIST_NEW)
			log_info("smtpd", "%s: greylist: action=greylist, reason=new, client_name=%s, client_address=%s, "
			    "sender=%s, recipient=%s", id, s->host, s->addr, s->tx->sender, rcpt);
		else
			log_info("smtpd", "%s: greylist: action=greylist, reason=early-retry (%us missing), client_name=%s, "
			    "client_address=%s, sender=%s, recipient=%s", id, p->greylist_delay - age, s->host, s->addr,
			    s->tx->sender, rcpt);
		grey_reply(reply, replylen, rcpt, p->greylist_delay - (v == GREYLIST_EARLY ? age : 0));
		return 1;
	case GREYLIST_PASSED:
		log_info("smtpd", "%s: greylist: action=pass, reason=triplet found, delay=%u, client_name=%s, "
		    "client_address=%s, sender=%s, recipient=%s", id, age, s->host, s->addr, s->tx->sender, rcpt);
		return 0;
	case GREYLIST_KNOWN:
		return 0;
	}
	return 0;
}
