/*
 * queue/helper.c: the daemon's side of the delivery helpers. A delivery
 * worker that must write a mailbox it does not own sends the helper one
 * request (the message's descriptor rides along) and waits for the answer.
 * The waiting workers read the answers themselves, one at a time (leader
 * and followers: whoever reads hands each answer to the worker it is for),
 * so no event loop sits between the helper and the worker. Fails soft: a
 * helper that dies fails every request in flight (the mail stays queued
 * and is retried) until the master hands over the socket of its successor.
 *
 * Owns the helpers' sockets (counted as non-TCP sockets in core/fd). The
 * mutex guards the links and the requests in flight.
 */
#include "queue/queue_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"

#define REQUEST_TIMEOUT 600   /* seconds: a helper stuck this long is as good as dead */

struct pending {
	uint64_t id;
	int done;
	int status;
	char reason[256];
	pthread_cond_t cv;        /* this worker's own: an answer wakes one thread, not all */
	struct pending *next;
};

/* One helper's socket. A new helper gets a new link; the old one lives until no worker uses it. */
struct link {
	enum helper_which w;
	int fd;
	long pid;
	int refs;                 /* workers holding it (inside sendmsg, or waiting on it) */
	int dead;
	int reading;              /* a worker is in recv() for everybody */
	int fds, socks;           /* the helper's last report */
	struct pending *pending;  /* requests in flight */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct link *cur[HELPER_COUNT];   /* the live link of each helper, or NULL */
static uint64_t next_id;

const char *helper_name(enum helper_which w)
{
	return w == HELPER_LOCAL ? "local" : "virtual";
}

/* under mu: every request in flight fails */
static void fail_all(struct link *l, const char *why)
{
	struct pending *p;

	for (p = l->pending; p; p = p->next) {
		p->done = 1;
		p->status = EPIPE;
		snprintf(p->reason, sizeof p->reason, "%s", why);
		pthread_cond_signal(&p->cv);
	}
	l->pending = NULL;
}

/* under mu: a dead link nobody holds goes */
static void maybe_free(struct link *l)
{
	if (!l->dead || l->refs > 0)
		return;
	if (cur[l->w] == l)
		cur[l->w] = NULL;
	fd_close(l->fd);
	mem_free(l);
}

/* under mu: the helper is gone, or must not be used again */
static void link_lost(struct link *l, const char *why)
{
	char text[200];

	if (!l->dead) {
		snprintf(text, sizeof text, "delivery helper %s (pid %ld) %s", helper_name(l->w), l->pid, why);
		log_warning("qmgr", "%s: its deliveries are retried once it is restarted", text);
		l->dead = 1;
		fail_all(l, text);
	}
	if (cur[l->w] == l)
		cur[l->w] = NULL;
}

/* under mu: one answer, to whichever worker waits for it */
static void dispatch(struct link *l, const struct helper_reply *r)
{
	struct pending **pp;

	l->fds = r->fds;
	l->socks = r->socks;
	for (pp = &l->pending; *pp; pp = &(*pp)->next)
		if ((*pp)->id == r->id) {
			struct pending *p = *pp;

			*pp = p->next;
			p->done = 1;
			p->status = r->status;
			snprintf(p->reason, sizeof p->reason, "%s", r->reason);
			pthread_cond_signal(&p->cv);
			break;
		}
	/* no match: the answer to a request that timed out; dropped */
}

/* under mu: the reader is done; one waiter (any) takes over reading */
static void next_reader(struct link *l)
{
	if (l->pending)
		pthread_cond_signal(&l->pending->cv);
}

/* under mu, released while reading: the leader reads one answer for everybody */
static void read_one(struct link *l)
{
	struct helper_reply r;
	char buf[HELPER_MSG_MAX];
	ssize_t n;

	l->reading = 1;
	pthread_mutex_unlock(&mu);
	do
		n = recv(l->fd, buf, sizeof buf, 0);
	while (n < 0 && errno == EINTR);
	pthread_mutex_lock(&mu);
	l->reading = 0;
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;   /* the receive timeout: the reader looks at its deadline and reads again */
	if (n <= 0)
		link_lost(l, n == 0 ? "has gone" : "cannot be read");
	else if (helper_reply_decode(buf, (size_t)n, &r) < 0)
		link_lost(l, "sent a malformed reply");
	else
		dispatch(l, &r);
}

void helper_init(struct ev_loop *loop)
{
	(void)loop;
}

void helper_attach(enum helper_which w, int fd, long pid)
{
	struct timeval snd = { 30, 0 }, rcv = { 1, 0 };
	struct link *l;

	if ((l = mem_calloc(1, sizeof *l)) == NULL) {
		log_warning("qmgr", "delivery helper %s: out of memory: its deliveries wait", helper_name(w));
		fd_close(fd);
		return;
	}
	l->w = w;
	l->fd = fd;
	l->pid = pid;
	/* a helper that stops reading must not hold a worker forever; a reader wakes each second */
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &snd, sizeof snd);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &rcv, sizeof rcv);
	pthread_mutex_lock(&mu);
	if (cur[w]) {
		struct link *old = cur[w];

		link_lost(old, "was replaced");
		maybe_free(old);
	}
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

/* under mu: take p off l's list if it is still there */
static void unlink_pending(struct link *l, struct pending *p)
{
	struct pending **pp;

	for (pp = &l->pending; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			return;
		}
}

int helper_deliver(enum helper_which w, int msgfd, const struct msg_src *m, const char *rcpt,
    const char *mailbox, char *reason, size_t rlen)
{
	static struct helper_req rq;   /* under mu: big, and one encoder at a time */
	struct pending p;
	struct link *l;
	char buf[HELPER_MSG_MAX];
	struct timespec deadline;
	int len, rc, e;

	memset(&p, 0, sizeof p);
	pthread_cond_init(&p.cv, NULL);
	pthread_mutex_lock(&mu);
	if ((l = cur[w]) == NULL) {
		pthread_mutex_unlock(&mu);
		pthread_cond_destroy(&p.cv);
		snprintf(reason, rlen, "delivery helper %s is not running", helper_name(w));
		return -1;
	}
	memset(&rq, 0, sizeof rq);
	rq.id = p.id = ++next_id;
	rq.off = m->off;
	rq.size = m->size;
	rq.pre_off = m->pre_off;
	rq.pre_len = m->pre_len;
	snprintf(rq.sender, sizeof rq.sender, "%s", m->sender);
	snprintf(rq.rcpt, sizeof rq.rcpt, "%s", rcpt);
	snprintf(rq.mailbox, sizeof rq.mailbox, "%s", mailbox);
	if ((len = helper_req_encode(&rq, buf, sizeof buf)) < 0) {
		pthread_mutex_unlock(&mu);
		snprintf(reason, rlen, "delivery request too long for helper %s", helper_name(w));
		return -1;
	}
	p.next = l->pending;
	l->pending = &p;
	l->refs++;
	pthread_mutex_unlock(&mu);

	rc = send_request(l->fd, buf, (size_t)len, msgfd, 0);
	e = errno;

	pthread_mutex_lock(&mu);
	if (rc < 0 && !p.done) {
		unlink_pending(l, &p);
		p.done = 1;
		p.status = e ? e : EIO;
		snprintf(p.reason, sizeof p.reason, "cannot reach delivery helper %s: %s", helper_name(w),
		    strerror(p.status));
	}
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += REQUEST_TIMEOUT;
	while (!p.done) {
		struct timespec now;

		clock_gettime(CLOCK_REALTIME, &now);
		if (now.tv_sec >= deadline.tv_sec) {
			unlink_pending(l, &p);
			p.status = ETIMEDOUT;
			snprintf(p.reason, sizeof p.reason, "delivery helper %s did not answer in %d s",
			    helper_name(w), REQUEST_TIMEOUT);
			break;
		}
		if (!l->reading && !l->dead)
			read_one(l);   /* be the reader until this answer (or another's) comes */
		else if (!p.done)
			pthread_cond_wait(&p.cv, &mu);
	}
	unlink_pending(l, &p);   /* (gone already, unless it timed out) */
	next_reader(l);           /* whoever waits reads next */
	l->refs--;
	maybe_free(l);
	pthread_mutex_unlock(&mu);
	pthread_cond_destroy(&p.cv);
	if (p.status == 0)
		return 0;
	snprintf(reason, rlen, "%s", p.reason[0] ? p.reason : strerror(p.status));
	return -1;
}

void helper_shutdown(void)
{
	int i;

	pthread_mutex_lock(&mu);
	for (i = 0; i < HELPER_COUNT; i++)
		if (cur[i]) {
			struct link *l = cur[i];

			link_lost(l, "is left: frugal is stopping");
			maybe_free(l);
		}
	pthread_mutex_unlock(&mu);
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
