/*
 * queue/helperd.c: a delivery helper process (PRODUCT.md 3.5). Forked by
 * the master before anything talks to the network; `virtual` has become
 * virtual_mailbox_owner for good, `local` stays root and takes each
 * system user's identity for one delivery on one thread (core/privs.h). It
 * reads requests from its socketpair to the daemon, delivers on its own
 * worker threads with the shared group commit (core/sync.h), and answers
 * each request. No fork per message.
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

#define HELPER_THREADS 8
#define MAX_GROUPS     64

struct hjob {
	struct worker_job job;     /* first member */
	struct helper_req rq;
	int msgfd;                 /* the message, received with the request; owned */
	char *base;                /* virtual: virtual_mailbox_base at the time of the request; owned */
	char *mailbox;             /* local: home_mailbox at the time of the request; owned */
	struct helper_reply rep;
};

static struct {
	enum helper_which w;
	int sock;
	struct conf *c;            /* one reference; replaced on SIGHUP */
	const char *conf_dir;
	struct ev_loop *loop;
	int inflight;              /* jobs on the workers */
	int closing;               /* the daemon went, or SIGTERM: exit when inflight drops to 0 */
	ev_io io;
	ev_signal sig_term, sig_hup;
} H;

static const char *svc(void) { return helper_name(H.w); }

static void maybe_exit(void)
{
	if (H.closing && H.inflight == 0)
		ev_break(H.loop, EVBREAK_ALL);
}

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

static void work(struct worker_job *jj)
{
	struct hjob *j = (struct hjob *)jj;
	struct msg_src src;
	struct stat st;
	char reason[256];

	if (fstat(j->msgfd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < j->rq.off + j->rq.size) {
		fail(j, EINVAL, "%s", "the message descriptor does not hold the message");
		return;
	}
	src.fd = j->msgfd;
	src.off = (off_t)j->rq.off;
	src.size = (off_t)j->rq.size;
	src.sender = j->rq.sender;
	if (H.w == HELPER_LOCAL) {
		local_deliver(j, &src);
		return;
	}
	if (maildir_deliver_under(j->base, j->rq.mailbox, geteuid(), &src, j->rq.rcpt, reason, sizeof reason) < 0) {
		j->rep.status = EIO;
		snprintf(j->rep.reason, sizeof j->rep.reason, "%s", reason);
	}
}

static void done(struct worker_job *jj)
{
	struct hjob *j = (struct hjob *)jj;

	reply(j);
	fd_close(j->msgfd);
	mem_free(j->base);
	mem_free(j->mailbox);
	mem_free(j);
	H.inflight--;
	maybe_exit();
}

/* one datagram and the descriptor that came with it (-1: none) */
static ssize_t recv_request(char *buf, size_t len, int *fd)
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
	if ((n = recvmsg(H.sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC)) < 0)
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

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	char buf[HELPER_MSG_MAX];

	(void)loop; (void)w; (void)revents;
	for (;;) {
		struct hjob *j;
		int fd;
		ssize_t n = recv_request(buf, sizeof buf, &fd);

		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n == 0 || (n == -1 && errno != EMSGSIZE)) {
			/* the daemon is gone (or restarting): finish what is in hand, then go */
			ev_io_stop(H.loop, &H.io);
			H.closing = 1;
			maybe_exit();
			return;
		}
		if ((j = mem_calloc(1, sizeof *j)) == NULL) {
			log_warning(svc(), "out of memory: request dropped (the daemon retries it)");
			fd_close(fd);
			continue;
		}
		j->msgfd = fd;
		if (n < 0 || helper_req_decode(buf, (size_t)n, &j->rq) < 0 || fd < 0) {
			/* a broken request is answered (when it has an id) and never acted on */
			log_warning(svc(), "malformed request from the daemon: refused");
			fail(j, EBADMSG, "%s", "malformed request");
			reply(j);
			fd_close(fd);
			mem_free(j);
			continue;
		}
		if ((j->base = mem_strdup(conf_str(H.c, "virtual_mailbox_base", 0))) == NULL ||
		    (j->mailbox = mem_strdup(conf_str(H.c, "home_mailbox", 0))) == NULL) {
			fail(j, ENOMEM, "%s", "out of memory");
			reply(j);
			fd_close(fd);
			mem_free(j->base);
			mem_free(j);
			continue;
		}
		j->job.work = work;
		j->job.done = done;
		H.inflight++;
		worker_submit(WORKER_DELIVERY, &j->job);
	}
}

static void term_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)loop; (void)w; (void)revents;
	ev_io_stop(H.loop, &H.io);
	H.closing = 1;
	maybe_exit();
}

static void hup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct conf_diags d;
	struct conf *c;

	(void)loop; (void)w; (void)revents;
	log_reopen();
	c = conf_load_for_command(H.conf_dir, &d);
	conf_diags_free(&d);
	if (c == NULL) {
		log_warning(svc(), "reload failed: keeping the running configuration");
		return;
	}
	conf_unref(H.c);
	H.c = c;
}

int helperd_run(enum helper_which w, int sock, struct conf *c, const char *conf_dir)
{
	H.w = w;
	H.sock = sock;
	H.c = conf_ref(c);
	H.conf_dir = conf_dir;
	signal(SIGPIPE, SIG_IGN);
	if ((H.loop = ev_default_loop(EVFLAG_AUTO)) == NULL) {
		log_warning(svc(), "cannot initialise the event loop");
		return 75;
	}
	if (worker_init(H.loop, (const int[WORKER_CLASSES]){ [WORKER_COMMIT] = 0,
	    [WORKER_DELIVERY] = HELPER_THREADS }) < 0) {
		log_warning(svc(), "cannot start worker threads: %s", strerror(errno));
		return 75;
	}
	ev_io_init(&H.io, read_cb, sock, EV_READ);
	ev_io_start(H.loop, &H.io);
	ev_signal_init(&H.sig_term, term_cb, SIGTERM);
	ev_signal_init(&H.sig_hup, hup_cb, SIGHUP);
	ev_signal_start(H.loop, &H.sig_term);
	ev_signal_start(H.loop, &H.sig_hup);
	fd_adopt_open();   /* the loop's, the log's: the descriptors it reports are all of them */
	log_info(svc(), "delivery helper started as uid %ld", (long)geteuid());
	ev_run(H.loop, 0);
	worker_shutdown();
	log_info(svc(), "delivery helper stopped");
	conf_unref(H.c);
	return 0;
}
