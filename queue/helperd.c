/*
 * queue/helperd.c: a delivery helper process (PRODUCT.md 3.5). Forked by
 * the master before anything talks to the network; `virtual` has become
 * virtual_mailbox_owner for good, `local` stays root and takes each
 * system user's identity for one delivery on one thread (core/privs.h). Its
 * threads each read a request from the socketpair to the daemon, deliver
 * it with the group commit it shares with the daemon (core/sync.h), and
 * answer it. No fork per message, no event loop in the way.
 *
 * It trusts nothing the daemon sends: the request is decoded by the fuzzed
 * parser (helper_proto.c); the mailbox is named relative to what the helper
 * itself read from the configuration (virtual: a path under
 * virtual_mailbox_base; local: a user name, whose home and home_mailbox it
 * looks up itself, never root); every path component is walked with
 * O_NOFOLLOW and must belong to the mailbox owner (maildir.c); the message
 * descriptor must be a regular file holding the bytes it is said to hold.
 */
#include "queue/queue_int.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/privs.h"
#include "core/worker.h"

#define HELPER_THREADS 16  /* local: one delivery per thread (each becomes its user) */
/*
 * virtual: fewer threads, each taking every request waiting (HELPER_BATCH):
 * with 16, each request woke a thread of its own and nothing queued to
 * batch; with 4, 2,000 messages cost the helper 5,100 context switches and
 * 250-290 ms of CPU instead of 8,100 and 300 ms (and 11,000 and 360-450 ms
 * before batches), at the same throughput.
 */
#define VIRTUAL_THREADS 4
#define HELPER_BATCH   16   /* requests one virtual worker takes at once, when they are waiting */
#define MAX_GROUPS     64

struct hjob {
	struct helper_req rq;
	int msgfd;                 /* the message, received with the request; owned */
	char *base;                /* virtual: virtual_mailbox_base at the time of the request; owned */
	char *mailbox;             /* local: home_mailbox at the time of the request; owned */
	struct msg_src src;        /* the message in msgfd, once checked */
	int ready;                 /* virtual: checked, for the batch's Maildir delivery */
	char reason[256];
	struct helper_reply rep;
};

static struct {
	enum helper_which w;
	int sock;
	pthread_mutex_t mu;        /* guards c across a reload */
	struct conf *c;            /* one reference; replaced on SIGHUP */
	const char *conf_dir;
	pthread_t threads[HELPER_THREADS];
	int nthreads;
	uid_t euid;                /* virtual: virtual_mailbox_owner, for good (read once, not per delivery) */
} H = { .mu = PTHREAD_MUTEX_INITIALIZER };

static const char *svc(void) { return helper_name(H.w); }

static void reply(struct hjob *j)
{
	char buf[HELPER_MSG_MAX];
	int n;

	j->rep.id = j->rq.id;
	j->rep.fds = (int32_t)fd_total();
	j->rep.socks = (int32_t)fd_count(FD_SOCK);
	if ((n = helper_reply_encode(&j->rep, buf, sizeof buf)) < 0)
		return;
	/* a daemon that went away gets nothing; its mail is still queued */
	if (send(H.sock, buf, (size_t)n, MSG_NOSIGNAL) < 0 && errno != EPIPE && errno != ECONNRESET)
		log_warning(svc(), "reply to the daemon: %s", strerror(errno));
}

static void fail(struct hjob *j, int err, const char *fmt, const char *arg)
{
	char a[128];
	size_t n = strnlen(arg, sizeof a - 1);

	memcpy(a, arg, n);   /* a user name or a path: a long one is cut */
	a[n] = '\0';
	j->rep.status = err ? err : EINVAL;
	snprintf(j->rep.reason, sizeof j->rep.reason, fmt, a);
}

/* local: the user a request names, looked up here; never root */
static int local_deliver(struct hjob *j, const struct msg_src *src)
{
	char pwbuf[4096], reason[256];
	struct passwd pw, *res = NULL;
	gid_t groups[MAX_GROUPS];
	int ngroups = MAX_GROUPS, basefd, rc;

	if (getpwnam_r(j->rq.mailbox, &pw, pwbuf, sizeof pwbuf, &res) != 0 || res == NULL) {
		fail(j, ENOENT, "no such user: %s", j->rq.mailbox);
		return -1;
	}
	if (pw.pw_uid == 0) {
		fail(j, EPERM, "%s: refusing to deliver as root", j->rq.mailbox);
		return -1;
	}
	if (pw.pw_dir[0] != '/') {
		fail(j, EINVAL, "%s: home directory is not an absolute path", j->rq.mailbox);
		return -1;
	}
	if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &ngroups) < 0) {
		ngroups = 1;
		groups[0] = pw.pw_gid;
	}
	if (privs_thread_become(pw.pw_uid, pw.pw_gid, groups, ngroups) < 0) {
		fail(j, errno, "cannot become %s", j->rq.mailbox);
		return -1;
	}
	/* as the user from here: the home is opened, never created */
	if ((basefd = fd_open(pw.pw_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		rc = -1;
		j->rep.status = errno;
		snprintf(j->rep.reason, sizeof j->rep.reason, "open home directory %s: %s", pw.pw_dir,
		    strerror(errno));
	} else {
		rc = maildir_deliver_at(basefd, j->mailbox, pw.pw_uid, src, j->rq.rcpt, reason, sizeof reason);
		fd_close(basefd);
		if (rc < 0) {
			j->rep.status = EIO;
			snprintf(j->rep.reason, sizeof j->rep.reason, "%s", reason);
		}
	}
	if (privs_thread_restore() < 0) {
		/* a worker that cannot become root again must not take another user's mail */
		log_warning(svc(), "cannot restore the worker's identity: %s: exiting", strerror(errno));
		_exit(75);
	}
	return rc;
}

/* check the request against its descriptor; local delivers now, virtual waits for the batch */
static void deliver(struct hjob *j)
{
	struct stat st;

	if (fstat(j->msgfd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < j->rq.off + j->rq.size ||
	    st.st_size < j->rq.pre_off + j->rq.pre_len) {
		fail(j, EINVAL, "%s", "the message descriptor does not hold the message");
		return;
	}
	j->src.fd = j->msgfd;
	j->src.off = (off_t)j->rq.off;
	j->src.size = (off_t)j->rq.size;
	j->src.sender = j->rq.sender;
	j->src.pre_off = (off_t)j->rq.pre_off;
	j->src.pre_len = (off_t)j->rq.pre_len;
	if (H.w == HELPER_LOCAL) {
		local_deliver(j, &j->src);
		return;
	}
	j->ready = 1;
}

/*
 * virtual: the batch's Maildir deliveries by this thread, with shared syncs
 * (maildir_deliver_batch): one wake-up and two syncs for all of them, where
 * each alone cost a wake-up and two sleeps on a sync.
 */
static void deliver_batch(struct hjob **b, int n)
{
	struct maildir_req r[HELPER_BATCH];
	int i, k = 0;

	for (i = 0; i < n; i++)
		if (b[i]->ready)
			r[k++] = (struct maildir_req){ .base = b[i]->base, .rel = b[i]->rq.mailbox, .owner = H.euid,
			    .m = &b[i]->src, .rcpt = b[i]->rq.rcpt, .reason = b[i]->reason,
			    .rlen = sizeof b[i]->reason };
	if (k == 0)
		return;
	maildir_deliver_batch(r, k);
	for (i = 0, k = 0; i < n; i++)
		if (b[i]->ready && r[k++].rc < 0) {
			b[i]->rep.status = EIO;
			snprintf(b[i]->rep.reason, sizeof b[i]->rep.reason, "%s", b[i]->reason);
		}
}

/* one datagram and the descriptor that came with it (-1: none) */
static ssize_t recv_request(char *buf, size_t len, int *fd, int flags)
{
	union {
		struct cmsghdr h;
		char space[CMSG_SPACE(sizeof(int) * 4)];
	} u;
	struct iovec iov = { buf, len };
	struct msghdr mh;
	struct cmsghdr *cm;
	ssize_t n;

	*fd = -1;
	memset(&mh, 0, sizeof mh);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = u.space;
	mh.msg_controllen = sizeof u.space;
	if ((n = recvmsg(H.sock, &mh, MSG_CMSG_CLOEXEC | flags)) < 0)
		return n;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			size_t k, nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			for (k = 0; k < nfd; k++) {
				int got;

				memcpy(&got, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
				fd_received(got, FD_FILE);
				if (*fd < 0)
					*fd = got;
				else
					fd_close(got);   /* one descriptor per request, no more */
			}
		}
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		fd_close(*fd);
		*fd = -1;
		errno = EMSGSIZE;
		return -2;
	}
	return n;
}

/*
 * One worker: read a request, deliver it, answer it, and again, until the
 * daemon's end is closed (or SIGTERM shuts ours for reading). No loop in
 * between: a request goes from the socket to the disk on one thread. A
 * virtual worker also takes the requests already waiting (up to
 * HELPER_BATCH, without blocking) and delivers them together; the local one
 * takes one at a time (it becomes each request's user).
 */
static void *worker(void *arg)
{
	static struct hjob zero;
	char buf[HELPER_MSG_MAX];
	struct hjob *b[HELPER_BATCH];
	int nb, i, stop = 0;

	(void)arg;
	while (!stop) {
		for (nb = 0; nb < HELPER_BATCH && !(nb > 0 && H.w == HELPER_LOCAL);) {
			struct hjob *j;
			int fd;
			ssize_t n = recv_request(buf, sizeof buf, &fd, nb > 0 ? MSG_DONTWAIT : 0);

			if (n == -1 && nb > 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;   /* nothing more waiting: deliver what we hold */
			if (n == -1 && errno == EINTR)
				continue;
			if (n == 0 || (n == -1 && errno != EMSGSIZE)) {
				stop = 1;   /* the daemon is gone (or restarting), or we stop */
				break;
			}
			if (n > 0 && helper_msg_is_log(buf, (size_t)n)) {
				/* the rotated maillog_file, reopened by the daemon: ours may be a user who cannot */
				if (fd >= 0)
					log_adopt_file(fd);
				continue;
			}
			if ((j = mem_alloc(sizeof *j)) == NULL) {
				log_warning(svc(), "out of memory: request dropped (the daemon retries it)");
				fd_close(fd);
				continue;
			}
			*j = zero;
			j->msgfd = fd;
			b[nb++] = j;
			if (n < 0 || helper_req_decode(buf, (size_t)n, &j->rq) < 0 || fd < 0) {
				/* a broken request is answered (when it has an id) and never acted on */
				log_warning(svc(), "malformed request from the daemon: refused");
				fail(j, EBADMSG, "%s", "malformed request");
				continue;
			}
			pthread_mutex_lock(&H.mu);
			j->base = mem_strdup(conf_str(H.c, "virtual_mailbox_base", 0));
			j->mailbox = mem_strdup(conf_str(H.c, "home_mailbox", 0));
			pthread_mutex_unlock(&H.mu);
			if (j->base == NULL || j->mailbox == NULL)
				fail(j, ENOMEM, "%s", "out of memory");
			else
				deliver(j);
		}
		deliver_batch(b, nb);
		for (i = 0; i < nb; i++) {
			reply(b[i]);
			fd_close(b[i]->msgfd);
			mem_free(b[i]->base);
			mem_free(b[i]->mailbox);
			mem_free(b[i]);
		}
	}
	return NULL;
}

static void reload(void)
{
	struct conf_diags d;
	struct conf *c;

	/* no log_reopen here: the daemon passes the reopened file (helper_pass_log) */
	c = conf_load_for_command(H.conf_dir, &d);
	conf_diags_free(&d);
	if (c == NULL) {
		log_warning(svc(), "reload failed: keeping the running configuration");
		return;
	}
	pthread_mutex_lock(&H.mu);
	conf_unref(H.c);
	H.c = c;
	pthread_mutex_unlock(&H.mu);
}

int helperd_run(enum helper_which w, int sock, struct conf *c, const char *conf_dir)
{
	pthread_attr_t attr;
	sigset_t set;
	int i, sig;

	H.w = w;
	H.sock = sock;
	H.c = conf_ref(c);
	H.conf_dir = conf_dir;
	H.euid = geteuid();
	signal(SIGPIPE, SIG_IGN);
	/* signals come to this thread only, through sigwait */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, WORKER_STACK);
	for (i = 0; i < (w == HELPER_VIRTUAL ? VIRTUAL_THREADS : HELPER_THREADS); i++)
		if (pthread_create(&H.threads[H.nthreads], &attr, worker, NULL) == 0)
			H.nthreads++;
	pthread_attr_destroy(&attr);
	if (H.nthreads == 0) {
		log_warning(svc(), "cannot start worker threads");
		return 75;
	}
	fd_adopt_open();   /* the log's, stdio: the descriptors it reports are all of them */
	log_info(svc(), "delivery helper started as uid %ld, %d threads", (long)geteuid(), H.nthreads);
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			reload();
			continue;
		}
		/* stop: no new request is read; the workers finish what they hold */
		shutdown(sock, SHUT_RD);
		break;
	}
	for (i = 0; i < H.nthreads; i++)
		pthread_join(H.threads[i], NULL);
	log_info(svc(), "delivery helper stopped");
	conf_unref(H.c);
	return 0;
}
