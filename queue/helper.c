/*
 * queue/helper.c: the daemon's side of the delivery helpers. The event loop
 * owns each helper's socket: an ev_io watcher reads the answers and hands
 * each to the callback of the request it answers, on the loop, so no thread
 * sits blocked waiting for a helper and no answer is passed from thread to
 * thread. Requests are written from the loop (without blocking: a full
 * socket queues them until it drains) or, for the rare job that also
 * writes mailboxes of its own, from a delivery worker, which then waits
 * (helper_deliver). Fails soft: a helper that dies fails every request in
 * flight (the mail stays queued and is retried) until the master hands
 * over the socket of its successor; a request unanswered for
 * REQUEST_TIMEOUT fails the same way.
 *
 * Owns the helpers' sockets (counted as non-TCP sockets in core/fd). The
 * mutex guards the links' fields and the lists of requests, which delivery
 * workers append to; the watchers and the queue of unsent requests are the
 * loop's alone. Whoever takes a request off its link's list (under the
 * mutex) calls its callback, exactly once.
 */
#include "queue/queue_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"

#define REQUEST_TIMEOUT 600   /* seconds: a helper stuck this long is as good as dead */
#define READS_PER_WAKE  64    /* answers read per wake-up before the loop serves others */

struct hreq {
	uint64_t id;
	double deadline;          /* monotonic seconds */
	helper_cb cb;
	void *arg;
	int idx;
	char *out;                /* loop: not sent yet (the socket was full): the datagram... */
	size_t outlen;
	int outfd;                /* ...and our duplicate of the message descriptor */
	struct hreq *next;        /* the link's requests in flight, oldest first */
	struct hreq *onext;       /* the link's unsent requests (loop only) */
};

/* One helper's socket. A new helper gets a new link; the old one lives until no worker uses it. */
struct link {
	enum helper_which w;
	int fd;
	long pid;
	int refs;                 /* workers inside sendmsg on it */
	int dead;
	int fds, socks;           /* the helper's last report */
	ev_io io;                 /* the loop's: answers (and room for unsent requests) */
	struct hreq *pending, **pending_tail;
	struct hreq *outq, **outq_tail;   /* loop only */
	double full_logged;       /* loop: when "is behind" was last said (once a minute at most) */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct link *cur[HELPER_COUNT];   /* the live link of each helper, or NULL */
static uint64_t next_id;
static struct ev_loop *hloop;
static pthread_t loop_thread;
static ev_timer sweep;                    /* times out requests of a helper that hangs */
static double request_timeout = REQUEST_TIMEOUT;

static void io_stop(struct link *l);

const char *helper_name(enum helper_which w)
{
	return w == HELPER_LOCAL ? "local" : "virtual";
}

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int on_loop(void)
{
	return hloop && pthread_equal(pthread_self(), loop_thread);
}

static void req_free(struct hreq *r)
{
	if (r->out) {
		mem_free(r->out);
		fd_close(r->outfd);
	}
	mem_free(r);
}

/* outside mu: the request is ours alone now (taken off its list); tell its owner */
static void complete(struct hreq *r, int status, const char *reason)
{
	r->cb(r->arg, r->idx, status, reason);
	req_free(r);
}

/* loop: take r off l's unsent queue, if it is there */
static void outq_remove(struct link *l, struct hreq *r)
{
	struct hreq **pp;

	for (pp = &l->outq; *pp; pp = &(*pp)->onext)
		if (*pp == r) {
			if ((*pp = r->onext) == NULL)
				l->outq_tail = pp;
			return;
		}
}

/* under mu: take r off l's list of requests in flight; 1 if it was there */
static int pending_remove(struct link *l, struct hreq *r)
{
	struct hreq **pp;

	for (pp = &l->pending; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			if ((*pp = r->next) == NULL)
				l->pending_tail = pp;
			return 1;
		}
	return 0;
}

/* under mu: a dead link nobody holds goes (its watcher was stopped when it died) */
static void maybe_free(struct link *l)
{
	if (!l->dead || l->refs > 0)
		return;
	if (cur[l->w] == l)
		cur[l->w] = NULL;
	fd_close(l->fd);
	mem_free(l);
}

/*
 * Loop: the helper is gone, or must not be used again. Every request in
 * flight fails (the mail stays queued); the callbacks run after the lists
 * are detached, so one that sends a new request finds a consistent state.
 */
static void link_lost(struct link *l, const char *why)
{
	struct hreq *list, *r;
	char text[200];

	pthread_mutex_lock(&mu);
	if (l->dead) {
		pthread_mutex_unlock(&mu);
		return;
	}
	snprintf(text, sizeof text, "delivery helper %s (pid %ld) %s", helper_name(l->w), l->pid, why);
	l->dead = 1;
	if (cur[l->w] == l)
		cur[l->w] = NULL;
	list = l->pending;
	l->pending = NULL;
	l->pending_tail = &l->pending;
	l->outq = NULL;
	l->outq_tail = &l->outq;
	io_stop(l);
	l->refs++;   /* kept while its requests' callbacks run */
	pthread_mutex_unlock(&mu);
	log_warning("qmgr", "%s: its deliveries are retried once it is restarted", text);
	while ((r = list) != NULL) {
		list = r->next;
		complete(r, EPIPE, text);
	}
	pthread_mutex_lock(&mu);
	l->refs--;
	maybe_free(l);
	pthread_mutex_unlock(&mu);
}

/* loop: one answer, to whoever waits for it */
static void dispatch(struct link *l, const struct helper_reply *rep)
{
	struct hreq *r;

	pthread_mutex_lock(&mu);
	l->fds = rep->fds;
	l->socks = rep->socks;
	for (r = l->pending; r; r = r->next)
		if (r->id == rep->id)
			break;
	if (r)
		pending_remove(l, r);
	pthread_mutex_unlock(&mu);
	/* no match: the answer to a request that timed out; dropped */
	if (r)
		complete(r, rep->status, rep->status ? rep->reason : "");
}

static int send_request(int fd, const char *buf, size_t len, int msgfd, int flags)
{
	union {
		struct cmsghdr h;
		char space[CMSG_SPACE(sizeof(int))];
	} u;
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh;
	struct cmsghdr *cm;
	ssize_t n;

	memset(&mh, 0, sizeof mh);
	memset(&u, 0, sizeof u);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = u.space;
	mh.msg_controllen = sizeof u.space;
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &msgfd, sizeof(int));
	do
		n = sendmsg(fd, &mh, MSG_NOSIGNAL | flags);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)len ? 0 : -1;
}

/* loop: a request that could not be sent fails alone (a dead helper shows as EOF on the read side) */
static void send_failed(struct link *l, struct hreq *r, int e)
{
	char reason[200];
	int mine;

	pthread_mutex_lock(&mu);
	mine = pending_remove(l, r);
	pthread_mutex_unlock(&mu);
	if (!mine)
		return;
	snprintf(reason, sizeof reason, "cannot reach delivery helper %s: %s", helper_name(l->w), strerror(e));
	complete(r, e, reason);
}

/* loop: the watcher is unreferenced (a helper alone must not keep the daemon up): ref before a stop */
static void io_stop(struct link *l)
{
	if (ev_is_active(&l->io)) {
		ev_ref(hloop);
		ev_io_stop(hloop, &l->io);
	}
}

static void io_start(struct link *l, int events)
{
	ev_io_set(&l->io, l->fd, events);
	ev_io_start(hloop, &l->io);
	ev_unref(hloop);
}

/* loop: answers always; room to write while requests wait for it */
static void watch(struct link *l)
{
	int ev = EV_READ | (l->outq ? EV_WRITE : 0);

	if (!ev_is_active(&l->io) || (l->io.events & (EV_READ | EV_WRITE)) != ev) {
		io_stop(l);
		io_start(l, ev);
	}
}

/* loop: what waited for room in the socket, in order, until it is full again */
static void flush_outq(struct link *l)
{
	struct hreq *r;

	while ((r = l->outq) != NULL && !l->dead) {
		int e = 0;

		if (send_request(l->fd, r->out, r->outlen, r->outfd, MSG_DONTWAIT) < 0) {
			e = errno ? errno : EIO;
			if (e == EAGAIN || e == EWOULDBLOCK)
				break;
		}
		if ((l->outq = r->onext) == NULL)
			l->outq_tail = &l->outq;
		mem_free(r->out);
		r->out = NULL;
		fd_close(r->outfd);   /* sent: the datagram holds its own reference */
		r->outfd = -1;
		if (e)
			send_failed(l, r, e);
	}
	if (!l->dead)
		watch(l);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct link *l = (struct link *)((char *)w - offsetof(struct link, io));
	struct helper_reply rep;
	char buf[HELPER_MSG_MAX];
	ssize_t n;
	int k;

	(void)loop;
	pthread_mutex_lock(&mu);
	l->refs++;   /* held across the callbacks: link_lost frees only a link nobody holds */
	pthread_mutex_unlock(&mu);
	if (revents & EV_WRITE)
		flush_outq(l);
	if (!(revents & EV_READ))
		k = READS_PER_WAKE;
	else
		k = 0;
	for (; k < READS_PER_WAKE && !l->dead; k++) {
		n = recv(l->fd, buf, sizeof buf, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0)
			link_lost(l, n == 0 ? "has gone" : "cannot be read");
		else if (helper_reply_decode(buf, (size_t)n, &rep) < 0)
			link_lost(l, "sent a malformed reply");
		else
			dispatch(l, &rep);
	}
	pthread_mutex_lock(&mu);
	l->refs--;
	maybe_free(l);
	pthread_mutex_unlock(&mu);
}

/* loop: requests a hung helper never answered fail (their mail stays queued) */
static void sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	double now = mono();
	int i;

	(void)loop;
	(void)w;
	(void)revents;
	for (i = 0; i < HELPER_COUNT; i++) {
		struct link *l;
		struct hreq *r;
		char reason[200];

		for (;;) {
			pthread_mutex_lock(&mu);
			l = cur[i];
			r = l ? l->pending : NULL;
			if (r && r->deadline <= now)
				pending_remove(l, r);
			else
				r = NULL;
			pthread_mutex_unlock(&mu);
			if (r == NULL)
				break;
			if (r->out)
				outq_remove(l, r);
			snprintf(reason, sizeof reason, "delivery helper %s did not answer in %.0f s",
			    helper_name((enum helper_which)i), request_timeout);
			complete(r, ETIMEDOUT, reason);
		}
	}
}

void helper_init(struct ev_loop *loop)
{
	const char *t = getenv("FRUGAL_TEST_HELPER_TIMEOUT");   /* tests: a hang without waiting 10 minutes */
	double every;

	hloop = loop;
	loop_thread = pthread_self();
	if (t && atof(t) > 0)
		request_timeout = atof(t);
	/* a request times out between REQUEST_TIMEOUT and 1.1 times that: one cheap timer for all */
	every = request_timeout / 10;
	ev_timer_init(&sweep, sweep_cb, every, every);
	ev_timer_start(loop, &sweep);
	ev_unref(loop);   /* the sweep alone must not keep the daemon running */
}

void helper_attach(enum helper_which w, int fd, long pid)
{
	struct timeval snd = { 30, 0 };
	struct link *l, *old;

	if ((l = mem_calloc(1, sizeof *l)) == NULL) {
		log_warning("qmgr", "delivery helper %s: out of memory: its deliveries wait", helper_name(w));
		fd_close(fd);
		return;
	}
	l->w = w;
	l->fd = fd;
	l->pid = pid;
	l->pending_tail = &l->pending;
	l->outq_tail = &l->outq;
	/* a helper that stops reading must not hold a worker that writes to it forever */
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &snd, sizeof snd);
	pthread_mutex_lock(&mu);
	old = cur[w];
	pthread_mutex_unlock(&mu);
	if (old)
		link_lost(old, "was replaced");
	ev_io_init(&l->io, io_cb, fd, EV_READ);
	io_start(l, EV_READ);
	pthread_mutex_lock(&mu);
	cur[w] = l;
	pthread_mutex_unlock(&mu);
	log_info("qmgr", "delivery helper %s: pid %ld", helper_name(w), pid);
}

int helper_running(enum helper_which w)
{
	int r;

	pthread_mutex_lock(&mu);
	r = cur[w] != NULL;
	pthread_mutex_unlock(&mu);
	return r;
}

long helper_pid(enum helper_which w)
{
	long pid;

	pthread_mutex_lock(&mu);
	pid = cur[w] ? cur[w]->pid : 0;
	pthread_mutex_unlock(&mu);
	return pid;
}

static long long sum(int socks)
{
	long long n = 0;
	int i;

	pthread_mutex_lock(&mu);
	for (i = 0; i < HELPER_COUNT; i++)
		if (cur[i])
			n += socks ? cur[i]->socks : cur[i]->fds;
	pthread_mutex_unlock(&mu);
	return n;
}

long long helper_fds(void) { return sum(0); }
long long helper_socks(void) { return sum(1); }

int helper_send(enum helper_which w, int msgfd, const struct msg_src *m, const char *rcpt,
    const char *mailbox, helper_cb cb, void *arg, int idx, char *reason, size_t rlen)
{
	static struct helper_req rq;   /* under mu: big, and one encoder at a time */
	char buf[HELPER_MSG_MAX];
	struct hreq *r;
	struct link *l;
	int len, loop = on_loop(), e;

	if ((r = mem_calloc(1, sizeof *r)) == NULL) {
		snprintf(reason, rlen, "out of memory for a request to delivery helper %s", helper_name(w));
		return -1;
	}
	r->cb = cb;
	r->arg = arg;
	r->idx = idx;
	r->outfd = -1;
	r->deadline = mono() + request_timeout;
	pthread_mutex_lock(&mu);
	if ((l = cur[w]) == NULL) {
		pthread_mutex_unlock(&mu);
		mem_free(r);
		snprintf(reason, rlen, "delivery helper %s is not running", helper_name(w));
		return -1;
	}
	memset(&rq, 0, sizeof rq);
	rq.id = r->id = ++next_id;
	rq.off = m->off;
	rq.size = m->size;
	rq.pre_off = m->pre_off;
	rq.pre_len = m->pre_len;
	snprintf(rq.sender, sizeof rq.sender, "%s", m->sender);
	snprintf(rq.rcpt, sizeof rq.rcpt, "%s", rcpt);
	snprintf(rq.mailbox, sizeof rq.mailbox, "%s", mailbox);
	if ((len = helper_req_encode(&rq, buf, sizeof buf)) < 0) {
		pthread_mutex_unlock(&mu);
		mem_free(r);
		snprintf(reason, rlen, "delivery request too long for helper %s", helper_name(w));
		return -1;
	}
	*l->pending_tail = r;
	l->pending_tail = &r->next;
	l->refs++;
	pthread_mutex_unlock(&mu);

	if (loop) {
		/* never blocks the loop: a full socket keeps the request until it drains */
		if (l->outq == NULL && send_request(l->fd, buf, (size_t)len, msgfd, MSG_DONTWAIT) == 0)
			e = 0;
		else if (l->outq == NULL && errno != EAGAIN && errno != EWOULDBLOCK)
			e = errno ? errno : EIO;
		else if ((r->out = mem_alloc((size_t)len)) != NULL && (r->outfd = fd_dup(msgfd)) >= 0) {
			memcpy(r->out, buf, (size_t)len);
			r->outlen = (size_t)len;
			if (l->outq == NULL && mono() - l->full_logged >= 60) {
				l->full_logged = mono();
				log_info("qmgr", "delivery helper %s (pid %ld) is behind: its socket is full, "
				    "requests wait in the daemon", helper_name(w), l->pid);
			}
			*l->outq_tail = r;
			l->outq_tail = &r->onext;
			r->onext = NULL;
			watch(l);
			e = 0;
		} else {
			e = errno ? errno : ENOMEM;
			mem_free(r->out);
			r->out = NULL;
		}
	} else {
		e = send_request(l->fd, buf, (size_t)len, msgfd, 0) == 0 ? 0 : (errno ? errno : EIO);
	}

	pthread_mutex_lock(&mu);
	l->refs--;
	if (e && pending_remove(l, r)) {
		maybe_free(l);
		pthread_mutex_unlock(&mu);
		snprintf(reason, rlen, "cannot reach delivery helper %s: %s", helper_name(w), strerror(e));
		mem_free(r);
		return -1;
	}
	maybe_free(l);
	pthread_mutex_unlock(&mu);
	/* e set but r gone: the link died meanwhile and its callback has run (or runs) */
	return 0;
}

/* ---- a worker that waits (a job that also writes mailboxes of its own) ---- */

struct waiter {
	pthread_cond_t cv;
	int done, status;
	char reason[256];
};

static void wake(void *arg, int idx, int status, const char *reason)
{
	struct waiter *wt = arg;

	(void)idx;
	pthread_mutex_lock(&mu);
	wt->status = status;
	snprintf(wt->reason, sizeof wt->reason, "%s", reason);
	wt->done = 1;
	pthread_cond_signal(&wt->cv);
	pthread_mutex_unlock(&mu);
}

int helper_deliver(enum helper_which w, int msgfd, const struct msg_src *m, const char *rcpt,
    const char *mailbox, char *reason, size_t rlen)
{
	struct waiter wt;

	memset(&wt, 0, sizeof wt);
	pthread_cond_init(&wt.cv, NULL);
	if (helper_send(w, msgfd, m, rcpt, mailbox, wake, &wt, 0, reason, rlen) < 0) {
		pthread_cond_destroy(&wt.cv);
		return -1;
	}
	/* the loop answers, fails or times the request out: wake() comes exactly once */
	pthread_mutex_lock(&mu);
	while (!wt.done)
		pthread_cond_wait(&wt.cv, &mu);
	pthread_mutex_unlock(&mu);
	pthread_cond_destroy(&wt.cv);
	if (wt.status == 0)
		return 0;
	snprintf(reason, rlen, "%s", wt.reason[0] ? wt.reason : strerror(wt.status));
	return -1;
}

void helper_shutdown(void)
{
	struct link *l;
	int i;

	for (i = 0; i < HELPER_COUNT; i++) {
		pthread_mutex_lock(&mu);
		l = cur[i];
		pthread_mutex_unlock(&mu);
		if (l)
			link_lost(l, "is left: frugal is stopping");
	}
	if (hloop && ev_is_active(&sweep)) {
		ev_ref(hloop);
		ev_timer_stop(hloop, &sweep);
	}
}

/*
 * After the daemon reopened a rotated maillog_file: each helper gets the new
 * descriptor (a helper running as virtual_mailbox_owner cannot open a file
 * of mail_owner's). Never blocks the loop: a helper whose socket is full
 * keeps writing the old file and says nothing is lost (its lines still go
 * somewhere); the next reload tries again.
 */
void helper_pass_log(int logfd)
{
	char buf[8];
	int i, n = helper_log_encode(buf, sizeof buf);

	pthread_mutex_lock(&mu);
	for (i = 0; i < HELPER_COUNT && n > 0; i++) {
		struct link *l = cur[i];

		if (l && !l->dead && send_request(l->fd, buf, (size_t)n, logfd, MSG_DONTWAIT) < 0)
			log_warning("qmgr", "cannot pass the reopened log file to delivery helper %s: %s; "
			    "it keeps writing the previous one", helper_name(l->w), strerror(errno));
	}
	pthread_mutex_unlock(&mu);
}
